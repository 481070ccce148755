package batch

import (
	"context"
	"fmt"
	"time"

	"github.com/gridbatch/gridbatch/internal/store"
)

// Reconcile repairs what crashes can leave behind, for every running batch:
// a plan task lost before it was enqueued, a last chunk whose finisher died,
// chunk tasks archived by asynq's recoverer without a handler to record them,
// a lock task that is gone past the deadline, and a lock that has expired.
// It is safe to run from several workers at once, but one at a time is
// enough (the worker takes a Redis lease for it). interval is how often it
// runs; grace periods are multiples of it.
func (s *Service) Reconcile(ctx context.Context, interval time.Duration) error {
	running, err := s.store.RunningBatches(ctx)
	if err != nil || len(running) == 0 {
		return err
	}
	archived, err := s.broker.ArchivedChunks(ctx)
	if err != nil {
		s.log.Warn("list archived chunk tasks", "error", err)
	}
	byBatch := map[string][]ArchivedChunk{}
	for _, a := range archived {
		byBatch[a.BatchID] = append(byBatch[a.BatchID], a)
	}
	now := time.Now()
	for _, b := range running {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := s.reconcileOne(ctx, b, byBatch[b.ID], now, interval); err != nil {
			s.log.Error("reconcile batch", "batch_id", b.ID, "error", err)
		}
	}
	return nil
}

func (s *Service) reconcileOne(ctx context.Context, b store.Batch, archived []ArchivedChunk, now time.Time, interval time.Duration) error {
	switch {
	case now.After(b.LockExpiresAt):
		_, _, err := s.end(ctx, b.ID, store.Final{Status: store.StatusTimedOut, Rest: store.ChunkTimedOut,
			Error: fmt.Sprintf("the batch lock expired at %s before the batch ended", b.LockExpiresAt.Format(time.RFC3339))})
		return err
	case now.After(b.DeadlineAt.Add(3 * interval)):
		if ok, err := s.broker.LockExists(ctx, b.ID); err == nil && !ok {
			return s.Deadline(ctx, b.ID)
		}
	}
	if b.PlannedChunks < b.TotalChunks && now.Sub(b.StartedAt) > interval {
		if err := s.broker.EnqueuePlan(ctx, b.ID); err != nil {
			return fmt.Errorf("re-enqueue plan: %w", err)
		}
	}
	if len(archived) > 0 {
		pending, err := s.store.PendingChunks(ctx, b.ID)
		if err != nil {
			return err
		}
		open := make(map[int]bool, len(pending))
		for _, c := range pending {
			open[c] = true
		}
		for _, a := range archived {
			if !open[a.Chunk] {
				continue
			}
			s.log.Warn("recording an archived chunk no handler recorded", "batch_id", b.ID, "chunk", a.Chunk, "task_id", a.TaskID, "error", a.LastError)
			c := Chunk{BatchID: b.ID, TaskID: a.TaskID, Kind: b.Kind, Chunk: a.Chunk, Retried: a.Retried}
			if err := s.ChunkDeadLettered(ctx, c, a.LastError); err != nil {
				return err
			}
		}
	}
	if b.TotalChunks > 0 && b.DoneChunks >= b.TotalChunks {
		s.Finish(ctx, b.ID)
	}
	return nil
}
