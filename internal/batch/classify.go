package batch

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/breaker"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Outcome is what becomes of a task run that failed.
type Outcome int

// The outcomes of Classify.
const (
	// Retry: retried after the countdown, counting against its retries.
	Retry Outcome = iota
	// RetryUncounted: retried later without counting a retry (the database
	// breaker was open: the task never reached the database).
	RetryUncounted
	// Split: the chunk (or part of one) is split in two halves that run as
	// chunk tasks of their own; the task itself ends (see Service.ChunkFailed).
	Split
	// DeadLetter: dead-lettered at once, no retry.
	DeadLetter
)

func (o Outcome) String() string {
	switch o {
	case Retry:
		return "retry"
	case RetryUncounted:
		return "retry uncounted"
	case Split:
		return "split"
	}
	return "dead letter"
}

// Attempt is what Classify weighs besides the error: the run of a task.
type Attempt struct {
	// Retried is asynq's retry count of the run (0 on the first run);
	// MaxRetry the task's (MaxRetry+1 runs in all).
	Retried, MaxRetry int
	// Cells is how many cells the chunk task ran; 0 when unknown (not a
	// chunk, or a payload that names no cells): it is never split.
	Cells int
	// Part is true for a half of a split chunk (store.Piece not Whole).
	Part bool
}

// The kinds of failure that are the cells' doing: running the same cells
// again is how they are told from the rest (Failure names them).
const (
	FailureException = "exception"     // the model raised (a process model's ERROR reply)
	FailurePermanent = "permanent"     // bad inputs: gridbatch_model.Permanent, missing or invalid inputs
	FailureCrash     = "crash"         // the model process died mid-chunk (signal, exit)
	FailureMemory    = "out of memory" // the model process was killed over its memory_limit
	FailureTimeout   = "timeout"       // the chunk outlived its timeout
)

// Failure names the kind of a chunk failure that may be its cells' doing
// (the Failure* constants), or "" for any other error: a database error,
// a model that cannot start, a bad payload, a cancelled chunk.
func Failure(err error) string {
	var missing *store.MissingInputError
	switch {
	case err == nil, errors.Is(err, breaker.ErrOpen), errors.Is(err, context.Canceled):
		return ""
	case errors.Is(err, model.ErrPermanent), errors.As(err, &missing):
		return FailurePermanent
	case errors.Is(err, model.ErrMemoryLimit):
		return FailureMemory
	case errors.Is(err, context.DeadlineExceeded):
		return FailureTimeout
	case errors.Is(err, model.ErrCrashed):
		return FailureCrash
	case errors.Is(err, model.ErrRaised):
		return FailureException
	}
	return ""
}

// Classify is the one place that decides what becomes of a failed task
// run: retried, retried uncounted, split, or dead-lettered. The task layer
// turns its verdict into asynq's terms (a dead letter wraps
// asynq.SkipRetry; a split ends the task, its halves carry its cells), the
// worker's IsFailure counts a retry unless it is RetryUncounted, and
// Service.ChunkFailed carries out a split. In order:
//
//   - the database breaker is open: RetryUncounted;
//   - errors no retry can fix that are not the cells' doing: a bad payload
//     (asynq.SkipRetry), a bad chunk, a batch that no longer exists, a
//     model's reply of the wrong shape (model.ErrInvalid), series that do
//     not fit the batch's layout (store.ErrLayout), an input cell_params has
//     no column for, ErrPermanent: DeadLetter, whole;
//   - the cells' doing (Failure): "a chunk that keeps failing" is split in
//     halves, and a piece of one cell that keeps failing is dead-lettered:
//     a permanent error (bad inputs) or a model process killed over its
//     memory_limit at once; a crash or a timeout on the second run that
//     fails; an exception once its retries are used up. A half of a split
//     chunk failing in any of these ways is split (or, one cell,
//     dead-lettered) at once: its parent already failed the same cells, so
//     the retry ladder is not run again at every level, and a transient
//     failure that then succeeds never splits;
//   - anything else (a database error, a model that cannot start, a
//     cancelled run): Retry while retries are left, then DeadLetter, whole.
func Classify(err error, a Attempt) Outcome {
	var unknown *store.UnknownInputError
	switch {
	case errors.Is(err, breaker.ErrOpen):
		return RetryUncounted
	case errors.Is(err, asynq.SkipRetry), errors.Is(err, ErrPermanent), errors.Is(err, ErrBadChunk),
		errors.Is(err, model.ErrInvalid), errors.Is(err, store.ErrBatchNotFound), errors.Is(err, store.ErrLayout),
		errors.As(err, &unknown):
		return DeadLetter
	}
	exhausted := a.Retried >= a.MaxRetry
	kind := Failure(err)
	if kind == "" || a.Cells < 1 {
		if exhausted {
			return DeadLetter
		}
		return Retry
	}
	split := DeadLetter
	if a.Cells > 1 {
		split = Split
	}
	switch {
	case a.Part, kind == FailurePermanent:
		return split
	case kind == FailureMemory && a.Cells > 1:
		return split
	case (kind == FailureCrash || kind == FailureTimeout) && a.Retried >= 1:
		return split
	case exhausted:
		return split
	}
	return Retry
}

// Counted reports whether a failed run counts against the task's retries
// (asynq's IsFailure): every failure but RetryUncounted.
func Counted(err error) bool { return Classify(err, Attempt{MaxRetry: 1}) != RetryUncounted }

// Permanent wraps err with ErrPermanent when Classify dead-letters it with
// no attempt known (a plan task, a payload that cannot be decoded), for the
// task layer to turn into asynq.SkipRetry.
func Permanent(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) || Classify(err, Attempt{MaxRetry: 1}) != DeadLetter {
		return err
	}
	return fmt.Errorf("%w: %w", err, ErrPermanent)
}
