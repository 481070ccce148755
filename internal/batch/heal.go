package batch

import (
	"context"
	"errors"

	"github.com/gridbatch/gridbatch/internal/store"
)

// healEnded recomputes an ended batch's figures and status after a requeued
// chunk wrote into it (a partial batch whose requeued dead letters all
// succeed becomes succeeded). It runs even when the chunk's outcome was
// already recorded (a re-delivery after a crash between the two), since it
// is idempotent.
func (s *Service) healEnded(ctx context.Context, c Chunk) error {
	b, before, err := s.store.HealEndedBatch(ctx, c.BatchID, s.gate.Decide(AtHeal))
	if errors.Is(err, store.ErrBatchNotFound) {
		return nil
	}
	if err != nil {
		// The chunk's rows and outcome are committed; a retry re-runs it and heals.
		return s.dbError(ctx, c, "heal the ended batch", err)
	}
	attrs := append(Attrs(b), "chunk", c.Index, "task_id", c.TaskID, "requeue", c.Requeue, "status_before", before)
	if b.Status != before {
		s.log.Info("requeued chunk succeeded; batch healed", attrs...)
	} else {
		s.log.Info("requeued chunk succeeded; batch figures updated", attrs...)
	}
	return nil
}
