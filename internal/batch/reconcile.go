package batch

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gridbatch/gridbatch/internal/breaker"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Reconcile repairs what crashes can leave behind, for every running batch:
// a plan task lost before it was enqueued, a last chunk whose finisher died,
// a lock task that is gone past the deadline, and a lock that has expired.
// Chunk tasks archived with no handler to record them (asynq's recoverer
// archives without calling the error handler) are the archive sweep's
// (package dlq), which runs right after it under the same lease and records
// them through ChunkDeadLettered: one path for every dead-lettered chunk.
// It is safe to run from several workers at once, but one at a time is
// enough (the worker takes a Redis lease for it). interval is how often it
// runs; grace periods are multiples of it.
func (s *Service) Reconcile(ctx context.Context, interval time.Duration) error {
	// Through the breaker: while the database is down the reconciler adds no
	// connection attempts of its own beyond the breaker's probes.
	var running []store.Batch
	err := s.guard(func() (err error) {
		running, err = s.store.RunningBatches(ctx)
		return err
	})
	if errors.Is(err, breaker.ErrOpen) {
		return nil // try next interval
	}
	if err != nil || len(running) == 0 {
		return err
	}
	now := time.Now()
	for _, b := range running {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.reconcileOne(ctx, b, now, interval); err != nil {
			s.log.Error("reconcile batch", "batch_id", b.ID, "error", err)
		}
	}
	return nil
}

func (s *Service) reconcileOne(ctx context.Context, b store.Batch, now time.Time, interval time.Duration) error {
	switch {
	case now.After(b.LockExpiresAt):
		_, _, err := s.end(ctx, b.ID, store.Final{Status: store.StatusTimedOut, PendingChunkStatus: store.ChunkTimedOut,
			Error: fmt.Sprintf("the batch lock expired at %s before the batch ended", b.LockExpiresAt.Format(time.RFC3339))})
		return err
	case now.After(b.DeadlineAt.Add(3 * interval)):
		if ok, err := s.broker.LockExists(ctx, b.ID); err == nil && !ok {
			return s.EndTimedOut(ctx, b.ID)
		}
	}
	if b.PlannedChunks < b.TotalChunks && now.Sub(b.StartedAt) > interval {
		if err := s.broker.EnqueuePlan(ctx, b.ID); err != nil {
			return fmt.Errorf("re-enqueue plan: %w", err)
		}
	}
	if b.TotalChunks > 0 && b.DoneChunks >= b.TotalChunks {
		s.Finish(ctx, b.ID)
	}
	return nil
}
