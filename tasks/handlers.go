package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/metrics"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Handlers run gridbatch's tasks.
type Handlers struct {
	svc *batch.Service
	log *slog.Logger
	obs Observer
}

// Observer is told the outcome of every failed task run; *metrics.Worker
// implements it. outcome is metrics.OutcomeRetried, OutcomeFailed (the task
// goes to the archive: a dead letter), OutcomeTimedOut or OutcomeSkipped
// (revoked, or cancelled because its batch ended).
type Observer interface {
	TaskFailed(taskType, outcome string)
	// CellsDeadLettered counts the cells of a dead-lettered chunk task.
	CellsDeadLettered(n int)
}

// HandlerOption configures Handlers.
type HandlerOption func(*Handlers)

// WithObserver reports failed task runs to o.
func WithObserver(o Observer) HandlerOption { return func(h *Handlers) { h.obs = o } }

// NewHandlers returns the handlers.
func NewHandlers(svc *batch.Service, log *slog.Logger, opts ...HandlerOption) *Handlers {
	h := &Handlers{svc: svc, log: log}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Register adds every task type's handler to mux.
func Register(mux *asynq.ServeMux, h *Handlers) {
	mux.HandleFunc(TypeChunk, h.ProcessChunk)
	mux.HandleFunc(TypePlan, h.ProcessPlan)
	mux.HandleFunc(TypeLock, h.ProcessLock)
}

func taskMeta(ctx context.Context) (id string, retried, maxRetry int) {
	id, _ = asynq.GetTaskID(ctx)
	retried, _ = asynq.GetRetryCount(ctx)
	maxRetry, _ = asynq.GetMaxRetry(ctx)
	return id, retried, maxRetry
}

// ProcessChunk runs one chunk task. A failure is decided by
// batch.Service.ChunkFailed (batch.Classify): retried, dead-lettered
// (asynq.SkipRetry), or split, which ends the task here (its halves carry
// its cells).
func (h *Handlers) ProcessChunk(ctx context.Context, t *asynq.Task) error {
	id, retried, maxRetry := taskMeta(ctx)
	p, err := DecodeChunk(t.Payload())
	if err != nil {
		return err
	}
	start := time.Now()
	c := p.chunk(id, retried)
	// The run ends a little before asynq's deadline, so that a timeout is
	// this handler's to decide (asynq retries a run past its deadline
	// whatever the handler returns).
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-min(deadlineMargin, time.Until(dl)/10)))
		defer cancel()
	}
	err = h.svc.RunChunk(ctx, c)
	if err == nil {
		h.log.Debug("chunk done", "batch_id", p.BatchID, "chunk", p.Chunk, "task_id", id, "seconds", time.Since(start).Seconds())
		return nil
	}
	out, err := h.svc.ChunkFailed(ctx, c, maxRetry, err)
	if out == batch.Split {
		metrics.Split(ctx)
	}
	return asynqError(err)
}

// deadlineMargin is how long before asynq's deadline a chunk run is
// stopped (at most a tenth of its timeout).
const deadlineMargin = 3 * time.Second

// asynqError translates batch's verdict for asynq: an error batch.Classify
// dead-letters wraps asynq.SkipRetry.
func asynqError(err error) error {
	err = batch.Permanent(err)
	if errors.Is(err, batch.ErrPermanent) && !errors.Is(err, asynq.SkipRetry) {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	return err
}

// ProcessPlan runs a batch's plan task.
func (h *Handlers) ProcessPlan(ctx context.Context, t *asynq.Task) error {
	p, err := DecodePlan(t.Payload())
	if err != nil {
		return err
	}
	return asynqError(h.svc.Plan(ctx, p.BatchID))
}

// ProcessLock runs when a batch's lock task reaches its deadline.
func (h *Handlers) ProcessLock(ctx context.Context, t *asynq.Task) error {
	if _, err := DecodeLock(t.Payload()); err != nil {
		return err
	}
	id, _, _ := taskMeta(ctx)
	return h.svc.EndTimedOut(ctx, id)
}

// HandleError is the server's asynq.ErrorHandler. It logs every failure
// and, when the failure sends the task to the archive (retries exhausted or
// SkipRetry), records the dead letter in PostgreSQL and the chunk's outcome.
func (h *Handlers) HandleError(ctx context.Context, t *asynq.Task, err error) {
	id, retried, maxRetry := taskMeta(ctx)
	final := (errors.Is(err, asynq.SkipRetry) || retried >= maxRetry) && !errors.Is(err, asynq.RevokeTask)
	attrs := []any{"task_id", id, "type", t.Type(), "retried", retried, "max_retry", maxRetry, "error", err.Error()}
	var p ChunkPayload
	var perr error = errors.New("not a chunk")
	if t.Type() == TypeChunk {
		p, perr = DecodeChunk(t.Payload())
	}
	batchID, chunk, isChunk := batch.ParseChunkTaskID(id)
	if perr == nil {
		batchID, chunk, isChunk = p.BatchID, p.Chunk, true
	}
	switch {
	case isChunk:
		attrs = append(attrs, "batch_id", batchID, "chunk", chunk)
	case t.Type() == TypeLock:
		attrs = append(attrs, "batch_id", id) // a lock task's ID is its batch's
	case t.Type() == TypePlan:
		if pp, err := DecodePlan(t.Payload()); err == nil {
			attrs = append(attrs, "batch_id", pp.BatchID)
		}
	}
	if h.obs != nil {
		h.obs.TaskFailed(t.Type(), failureOutcome(err, final))
	}
	if !final {
		h.log.Warn("task failed; will retry", attrs...)
		return
	}
	h.log.Error("task dead-lettered", attrs...)
	// The handler's ctx may be cancelled (a timeout): record on a fresh, bounded one.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	d := store.DeadLetter{TaskID: id, Type: t.Type(), Queue: queueOf(t.Type()), Payload: t.Payload(),
		LastError: err.Error(), Retries: retried, FailedAt: time.Now()}
	if batchID != "" {
		d.BatchID, d.Chunk = &batchID, &chunk
	}
	if perr == nil {
		d.Generation = p.Requeue // a requeued chunk that fails again is a new dead letter of the same task ID
		ids := p.cells()
		d.Lo, d.Hi = p.Lo, p.Hi
		if len(ids) == 1 {
			d.GridID = &ids[0]
		}
		if h.obs != nil {
			h.obs.CellsDeadLettered(len(ids))
		}
	}
	if _, rerr := dlq.Record(rctx, h.svc.Store(), d); rerr != nil {
		h.log.Error("record dead letter failed; the archive sweep will record it", append(attrs, "record_error", rerr.Error())...)
	}
	if t.Type() == TypeChunk && batchID != "" {
		c := batch.Chunk{BatchID: batchID, TaskID: id, Index: chunk, Retried: retried}
		if perr == nil {
			c = p.chunk(id, retried)
		}
		if rerr := h.svc.ChunkDeadLettered(rctx, c, err.Error()); rerr != nil && !errors.Is(rerr, store.ErrBatchNotFound) {
			h.log.Error("record dead-lettered chunk failed; the archive sweep will record it", append(attrs, "record_error", rerr.Error())...)
		}
	}
}

// failureOutcome classifies a failed run the way asynq's processor treats
// it: archived (final) is a dead letter whatever the cause; otherwise a
// revoked or cancelled run is skipped, one past its deadline timed out, and
// anything else retried.
func failureOutcome(err error, final bool) string {
	switch {
	case final:
		return metrics.OutcomeFailed
	case errors.Is(err, asynq.RevokeTask), errors.Is(err, context.Canceled):
		return metrics.OutcomeSkipped
	case errors.Is(err, context.DeadlineExceeded):
		return metrics.OutcomeTimedOut
	}
	return metrics.OutcomeRetried
}

func queueOf(typ string) string {
	if typ == TypeChunk {
		return QueueGrid
	}
	return QueueBatch
}

// RetryDelay returns asynq's RetryDelayFunc for a policy: "linear" waits
// base·(n+1) before retry n+1 (n = retries already done); "exponential" waits
// base·2^n with ±20% jitter, capped at 10 minutes.
func RetryDelay(policy string, base time.Duration) asynq.RetryDelayFunc {
	if policy == "exponential" {
		return func(n int, _ error, _ *asynq.Task) time.Duration {
			d := base << min(n, 20)
			d = min(d, 10*time.Minute)
			jitter := 0.8 + 0.4*rand.Float64()
			return time.Duration(float64(d) * jitter)
		}
	}
	return func(n int, _ error, _ *asynq.Task) time.Duration { return base * time.Duration(n+1) }
}
