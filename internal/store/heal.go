package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// HealEndedBatch updates an ended batch after a requeued dead letter changed
// one of its chunks (failed → succeeded): its status when that can change,
// and its figures, stored anew from its chunks. A partial or failed batch
// all of whose chunks have an outcome and none of which timed out or was
// cancelled takes FinalStatus of its chunks (succeeded when no chunk is
// failed any more). ended_at becomes the latest of itself and its chunks'
// finish times (so duration_seconds runs to the last requeued chunk); a
// batch that becomes succeeded loses its error. Then decide, in the same
// transaction, publishes it or not (see Ending). It is idempotent, and does
// nothing to a running batch. It returns the batch and its status before.
func (s *Store) HealEndedBatch(ctx context.Context, id string, decide Decide) (b Batch, before string, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		cur, err := scanBatch(tx.QueryRow(ctx, `SELECT `+batchColumns+` FROM batch_runs WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		before, b = cur.Status, cur
		if !cur.Ended() {
			return nil
		}
		var t Transition
		var timedOut, cancelled, pending int
		if err := tx.QueryRow(ctx, `SELECT completed_cells, failed_cells, timed_out_chunks, cancelled_chunks,
				(SELECT count(*) FROM chunk_runs c WHERE c.batch_id = $1 AND c.status = 'pending')
			FROM gridbatch_chunk_counts($1)`, id).Scan(&t.Completed, &t.Failed, &timedOut, &cancelled, &pending); err != nil {
			return err
		}
		status := cur.Status
		if (status == StatusPartial || status == StatusFailed) && pending == 0 && timedOut+cancelled == 0 {
			status = FinalStatus(t.Completed, t.Failed)
		}
		b, err = scanBatch(tx.QueryRow(ctx, `
			WITH c AS (`+chunkFigures+`)
			UPDATE batch_runs b SET
				status = $2,
				error = CASE WHEN $2 = 'succeeded' THEN NULL ELSE b.error END,
				ended_at = greatest(b.ended_at, c.last_finished),
				duration_seconds = extract(epoch FROM greatest(b.ended_at, c.last_finished) - b.started_at),
				`+setCounters+`
			FROM c WHERE b.id = $1
			RETURNING `+qualifiedBatchColumns, id, status))
		if err != nil {
			return err
		}
		e := &Ending{tx: tx, Batch: b, Before: before}
		err = decide(ctx, e)
		b = e.Batch
		return err
	})
	return b, before, err
}
