package dlq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/store"
)

// Selector picks dead letters. Exactly one of its fields is set.
type Selector struct {
	// TaskIDs selects the dead letters of these task IDs.
	TaskIDs []string
	// BatchID selects the dead letters of one batch.
	BatchID string
	// All selects every dead letter (requeue only).
	All bool
	// OlderThan selects the dead letters that failed longer ago (purge only).
	OlderThan time.Duration
}

// ErrNoSelector is returned when a Selector selects nothing specific.
var ErrNoSelector = errors.New("no dead letters selected")

// UnknownError is returned when a Selector names task IDs or a batch that
// have no dead letter. Nothing was changed.
type UnknownError struct {
	TaskIDs []string
	BatchID string
}

func (e *UnknownError) Error() string {
	if e.BatchID != "" {
		return fmt.Sprintf("batch %q has no dead letters (and is not a recorded batch)", e.BatchID)
	}
	if len(e.TaskIDs) == 1 {
		return fmt.Sprintf("no dead letter with task ID %q", e.TaskIDs[0])
	}
	return fmt.Sprintf("no dead letters with task IDs %s", strings.Join(e.TaskIDs, ", "))
}

// check rejects an empty selector and unknown task IDs or batch.
func (s *Service) check(ctx context.Context, sel Selector, purge bool) (store.DeadLetterFilter, error) {
	var f store.DeadLetterFilter
	n := 0
	if len(sel.TaskIDs) > 0 {
		n++
		f.TaskIDs = sel.TaskIDs
	}
	if sel.BatchID != "" {
		n++
		f.BatchID = sel.BatchID
	}
	if sel.All && !purge {
		n++
	}
	if sel.OlderThan > 0 && purge {
		n++
		f.FailedBefore = time.Now().Add(-sel.OlderThan)
	}
	if n != 1 {
		return f, ErrNoSelector
	}
	if len(sel.TaskIDs) > 0 {
		unknown, err := s.st.UnknownTaskIDs(ctx, sel.TaskIDs)
		if err != nil {
			return f, err
		}
		if len(unknown) > 0 {
			return f, &UnknownError{TaskIDs: unknown}
		}
	}
	if sel.BatchID != "" {
		_, total, err := s.st.ListDeadLetters(ctx, store.DeadLetterFilter{BatchID: sel.BatchID}, 1)
		if err != nil {
			return f, err
		}
		if total == 0 {
			if _, err := s.st.GetBatch(ctx, sel.BatchID); errors.Is(err, store.ErrBatchNotFound) {
				return f, &UnknownError{BatchID: sel.BatchID}
			}
		}
	}
	return f, nil
}

// RequeueResult is the fate of one dead letter in Requeue.
type RequeueResult struct {
	DeadLetter store.DeadLetter
	// Batch is the dead letter's batch, as it was before the requeue.
	Batch store.Batch
	// Reopened is true when the chunk of a running batch went back from
	// failed to pending.
	Reopened bool
	// Err is nil when the dead letter was requeued (or, on a dry run, would
	// be); otherwise it says why not.
	Err error
}

// Requeue requeues the open dead letters sel selects (for task IDs, the
// newest generation of each): for each, in one PostgreSQL transaction, it
// checks the batch and chunk, reopens a failed chunk of a running batch,
// marks the dead letter requeued, deletes the archived copy and enqueues a
// fresh chunk task (fresh retry count) with the same task ID and the next
// requeue generation. When that task succeeds the batch's counts and status
// follow (a partial batch whose dead letters all succeed becomes
// succeeded). With dryRun nothing changes. It returns an *UnknownError, or
// ErrNoSelector, before changing anything; a dead letter that cannot be
// requeued (not a chunk, its batch gone, already requeued, its task queued
// again already) has its reason in its result's Err.
func (s *Service) Requeue(ctx context.Context, sel Selector, dryRun bool) ([]RequeueResult, error) {
	f, err := s.check(ctx, sel, false)
	if err != nil {
		return nil, err
	}
	candidates, err := s.st.RequeueCandidates(ctx, f)
	if err != nil {
		return nil, err
	}
	var out []RequeueResult
	found := map[string]bool{}
	for _, d := range candidates {
		found[d.TaskID] = true
	}
	for _, id := range sel.TaskIDs { // named, but nothing open: say why
		if found[id] {
			continue
		}
		ds, err := s.st.DeadLettersOf(ctx, id)
		if err != nil {
			return out, err
		}
		out = append(out, RequeueResult{DeadLetter: ds[0], Err: &store.NotRequeueableError{
			Reason: fmt.Sprintf("already requeued at %s", ds[0].RequeuedAt.UTC().Format(time.RFC3339))}})
	}
	for _, d := range candidates {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		r, err := s.st.RequeueDeadLetter(ctx, d.Key(), dryRun, func(b store.Batch, d store.DeadLetter) error {
			return s.enqueueRequeued(ctx, b, d)
		})
		res := RequeueResult{DeadLetter: d, Batch: r.Batch, Reopened: r.Reopened, Err: err}
		if err == nil && !dryRun {
			s.log.Info("dead letter requeued", append(taskAttrs(d), "batch_status", r.Batch.Status, "reopened", r.Reopened)...)
		}
		out = append(out, res)
	}
	return out, nil
}

// enqueueRequeued replaces the archived copy of a dead letter with a fresh
// task of its chunk, generation one up.
func (s *Service) enqueueRequeued(ctx context.Context, b store.Batch, d store.DeadLetter) error {
	t, opts, err := s.tasks.ChunkTask(b, store.Piece{Chunk: *d.Chunk, Lo: d.Lo, Hi: d.Hi}, d.Generation+1)
	if err != nil {
		return err
	}
	_, state, err := s.deleteArchived(ctx, d.Queue, d.TaskID)
	if err != nil {
		return err
	}
	if state != "" {
		return &store.NotRequeueableError{Reason: fmt.Sprintf("its task is %s in queue %s already (run again from asynqmon?); not requeued", state, d.Queue)}
	}
	if _, err := s.client.EnqueueContext(ctx, t, opts...); err != nil {
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			return &store.NotRequeueableError{Reason: "a task of this chunk is queued already; not requeued"}
		}
		return fmt.Errorf("enqueue the requeued chunk: %w", err)
	}
	return nil
}

// Count returns how many dead letters sel selects, after the same checks as
// Purge: what Purge would delete.
func (s *Service) Count(ctx context.Context, sel Selector) (int, error) {
	f, err := s.check(ctx, sel, true)
	if err != nil {
		return 0, err
	}
	_, n, err := s.st.ListDeadLetters(ctx, f, 0)
	return n, err
}

// Purge deletes the dead letters sel selects (every generation of a task
// ID) and, for each task ID with no dead letter left, its archived copy, if
// the archive still holds it. A requeued task in the queue is left alone.
// It returns the deleted dead letters and how many archived copies went.
// It returns an *UnknownError, or ErrNoSelector (purging everything needs a
// selector), before changing anything.
func (s *Service) Purge(ctx context.Context, sel Selector) ([]store.DeadLetter, int, error) {
	f, err := s.check(ctx, sel, true)
	if err != nil {
		return nil, 0, err
	}
	deleted, err := s.st.PurgeDeadLetters(ctx, f)
	if err != nil {
		return nil, 0, err
	}
	byID := map[string]string{}
	var ids []string
	for _, d := range deleted {
		if _, ok := byID[d.TaskID]; !ok {
			ids = append(ids, d.TaskID)
		}
		byID[d.TaskID] = d.Queue
	}
	left, err := s.st.RecordedDeadLetters(ctx, ids)
	if err != nil {
		return deleted, 0, err
	}
	still := map[string]bool{}
	for k := range left {
		still[k.TaskID] = true
	}
	removed := 0
	for _, id := range ids {
		if still[id] {
			continue
		}
		ok, _, err := s.deleteArchived(ctx, byID[id], id)
		if err != nil {
			return deleted, removed, err
		}
		if ok {
			removed++
		}
	}
	s.log.Info("dead letters purged", "dead_letters", len(deleted), "archived_removed", removed)
	return deleted, removed, nil
}
