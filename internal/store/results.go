package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// WriteChunk writes a chunk's series into its batch's own table and
// records the chunk succeeded, in one transaction: binary COPY straight
// into the table (no staging table, no upsert, no index to maintain), a
// row per cell holding its series of every name of the batch's layout as
// raw float64s (SeriesLayout), then the chunk's outcome. The chunk's row
// lock orders duplicate deliveries of the task (at-least-once): the second
// waits for the first, then finds the chunk succeeded and writes nothing,
// so each row is stored once. When the batch has already ended
// (cancelled, timed out) nothing is written and the returned Transition
// has BatchRunning false; allowEnded writes anyway (a requeued dead letter
// of an ended batch). Series that do not fit the batch's layout (the
// models file changed under a running batch) are an error wrapping
// ErrLayout, and nothing is written. The Transition's counts are read
// after the commit.
func (s *Store) WriteChunk(ctx context.Context, kind string, step float64, firstYear int, series []grid.Series, o ChunkOutcome, allowEnded bool) (Transition, error) {
	var t Transition
	err := pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var table string
		var layout SeriesLayout
		var err error
		t, table, layout, err = lockBatchForChunk(ctx, tx, o.BatchID)
		if err != nil || (!t.BatchRunning && !allowEnded) {
			return err
		}
		if table == "" || !layout.valid() {
			return fmt.Errorf("%w: %s has no table for its rows (retention dropped them, or it started before the schema had them): run it again",
				ErrBatchNotFound, o.BatchID)
		}
		if firstYear != layout.FirstYear {
			return fmt.Errorf("%w: chunk %d of %s: series from %d, the batch's from %d (the models file changed while it ran)",
				ErrLayout, o.Chunk, o.BatchID, firstYear, layout.FirstYear)
		}
		ids, rows, err := layout.EncodeCells(series)
		if err != nil {
			return fmt.Errorf("%w: chunk %d of %s: %w (the models file changed while it ran?)", ErrLayout, o.Chunk, o.BatchID, err)
		}
		var status string
		err = tx.QueryRow(ctx, `SELECT status FROM chunk_runs WHERE batch_id = $1 AND chunk = $2 AND lo = $3 AND hi = $4 FOR UPDATE`,
			o.BatchID, o.Chunk, o.Lo, o.Hi).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s has no %s", ErrBatchNotFound, o.BatchID, o.piece())
		}
		if err != nil {
			return fmt.Errorf("lock %s of %s: %w", o.piece(), o.BatchID, err)
		}
		if status != ChunkPending && status != ChunkFailed {
			return nil // done already (a duplicate delivery), or timed out or cancelled
		}
		_, err = tx.CopyFrom(ctx, pgx.Identifier{table}, []string{"step", "grid_id", "series"},
			pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) {
				return []any{step, ids[i], rows[i]}, nil
			}))
		if err != nil {
			return fmt.Errorf("copy %d cells' series into %s: %w", len(ids), table, err)
		}
		t, err = markChunk(ctx, tx, o, ChunkSucceeded, allowEnded)
		return err
	})
	if err == nil && t.Changed {
		err = s.countChunks(ctx, o.BatchID, &t, false)
	}
	return t, err
}

// ErrLayout is returned (wrapped) by WriteChunk for series that do not fit
// the batch's layout.
var ErrLayout = errors.New("series do not fit the batch's layout")
