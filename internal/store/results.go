package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// stageTable is a per-connection temporary table the chunk rows are copied
// into with the binary COPY protocol before one upsert moves them.
const stageTable = "gridbatch_stage"

// WriteChunk writes a chunk's series and records the chunk succeeded, in one
// transaction: COPY into a temporary table, one INSERT … ON CONFLICT DO
// UPDATE into the kind's table, then the chunk's outcome and the batch
// counters. A re-run rewrites the same rows and counts nothing twice. When the
// batch has already ended (cancelled, timed out) nothing is written and the
// returned Transition has BatchRunning false; allowEnded writes anyway (a
// requeued dead letter of an ended batch).
func (s *Store) WriteChunk(ctx context.Context, kind string, step float64, series []grid.Series, o ChunkOutcome, allowEnded bool) (Transition, error) {
	table, err := ResultsTable(kind)
	if err != nil {
		return Transition{}, err
	}
	var t Transition
	err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS `+stageTable+
			` (grid_id bigint, scenario text, series float8[]) ON COMMIT DELETE ROWS`); err != nil {
			return fmt.Errorf("create staging table: %w", err)
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{stageTable}, []string{"grid_id", "scenario", "series"},
			pgx.CopyFromSlice(len(series), func(i int) ([]any, error) {
				return []any{series[i].GridID, series[i].Scenario, series[i].Values}, nil
			}))
		if err != nil {
			return fmt.Errorf("copy %d series: %w", len(series), err)
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO `+table+` (step, grid_id, scenario, first_year, series, batch_id, computed_at)
			SELECT $1, grid_id, scenario, $2, series, $3, now() FROM `+stageTable+`
			ORDER BY grid_id, scenario -- one lock order, so duplicate deliveries never deadlock
			ON CONFLICT (step, grid_id, scenario) DO UPDATE SET
				first_year = EXCLUDED.first_year, series = EXCLUDED.series,
				batch_id = EXCLUDED.batch_id, computed_at = EXCLUDED.computed_at`,
			step, grid.FirstYear, o.BatchID)
		if err != nil {
			return fmt.Errorf("upsert into %s: %w", table, err)
		}
		t, err = markChunk(ctx, tx, o, ChunkSucceeded, allowEnded)
		if err != nil {
			return err
		}
		if !t.BatchRunning && !allowEnded {
			return errBatchEnded
		}
		return nil
	})
	if err == errBatchEnded {
		return t, nil
	}
	return t, err
}

var errBatchEnded = fmt.Errorf("batch ended")
