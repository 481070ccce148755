package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// HealEndedBatch updates an ended batch after a requeued dead letter changed
// one of its chunks (failed → succeeded; the counters moved with it): its
// status when that can change, and its figures. A partial or failed batch
// all of whose chunks have an outcome and none of which timed out or was
// cancelled takes FinalStatus of its chunks (succeeded when no chunk is
// failed any more). ended_at becomes the latest of itself and its chunks'
// finish times (so duration_seconds runs to the last requeued chunk); a
// batch that becomes succeeded loses its error. It is idempotent, and does
// nothing to a running batch. It returns the batch and its status before.
func (s *Store) HealEndedBatch(ctx context.Context, id string) (b Batch, before string, err error) {
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		cur, err := scanBatch(tx.QueryRow(ctx, `SELECT `+batchColumns+` FROM batch_runs WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		before, b = cur.Status, cur
		if !cur.Ended() {
			return nil
		}
		status := cur.Status
		if (status == StatusPartial || status == StatusFailed) && cur.DoneChunks == cur.TotalChunks &&
			cur.TimedOutChunks+cur.CancelledChunks == 0 {
			status = FinalStatus(cur.CompletedChunks, cur.FailedChunks)
		}
		b, err = scanBatch(tx.QueryRow(ctx, `
			WITH c AS (`+chunkSummary+`)
			UPDATE batch_runs b SET
				status = $2,
				error = CASE WHEN $2 = 'succeeded' THEN NULL ELSE b.error END,
				ended_at = greatest(b.ended_at, c.last_finished),
				duration_seconds = extract(epoch FROM greatest(b.ended_at, c.last_finished) - b.started_at),
				`+setChunkSummary+`
			FROM c WHERE b.id = $1
			RETURNING `+batchColumns, id, status))
		return err
	})
	return b, before, err
}
