package store

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// HealEndedBatch recomputes an ended batch's figures from its chunks after a
// requeued dead letter changed one (failed → succeeded), and its status when
// that can change: a partial or failed batch none of whose chunks timed out
// or was cancelled becomes succeeded when no chunk is failed any more,
// partial when some succeeded, failed otherwise. ended_at becomes the latest
// of itself and its chunks' finish times (so duration_seconds runs to the
// last requeued chunk); a batch that becomes succeeded loses its error. It is
// idempotent, and does nothing to a running batch. It returns the batch and
// its status before.
func (s *Store) HealEndedBatch(ctx context.Context, id string) (b Batch, before string, err error) {
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT status FROM batch_runs WHERE id = $1 FOR UPDATE`, id).Scan(&before); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrBatchNotFound
			}
			return err
		}
		if before == StatusRunning {
			b, err = scanBatch(tx.QueryRow(ctx, `SELECT `+batchColumns+` FROM batch_runs WHERE id = $1`, id))
			return err
		}
		b, err = scanBatch(tx.QueryRow(ctx, `
			WITH c AS (`+chunkFigures+`),
			n AS (
				SELECT c.*, CASE
					WHEN b.status IN ('partial', 'failed') AND n_timed_out + n_cancelled + n_pending = 0 THEN
						CASE WHEN n_failed = 0 THEN 'succeeded' WHEN n_completed > 0 THEN 'partial' ELSE 'failed' END
					ELSE b.status END AS new_status,
					greatest(b.ended_at, c.last_finished) AS new_ended_at
				FROM c, batch_runs b WHERE b.id = $1)
			UPDATE batch_runs b SET
				status = n.new_status,
				error = CASE WHEN n.new_status = 'succeeded' THEN NULL ELSE b.error END,
				ended_at = n.new_ended_at,
				duration_seconds = extract(epoch FROM n.new_ended_at - b.started_at),
				`+setChunkFigures+`
			FROM n WHERE b.id = $1
			RETURNING `+batchColumns, id))
		return err
	})
	return b, before, err
}
