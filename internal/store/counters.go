package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// FinalStatus is the status of a batch all of whose cells have an outcome,
// from how many cells succeeded (completed) and how many were dead-lettered
// (failed): succeeded when none failed, failed when none succeeded, partial
// otherwise. Finishing a batch and healing one after a requeue both decide
// by it.
func FinalStatus(completed, failed int) string {
	switch {
	case failed == 0:
		return StatusSucceeded
	case completed == 0:
		return StatusFailed
	}
	return StatusPartial
}

// movedChunk is one piece moveChunks moved, and its status before.
type movedChunk struct {
	Piece
	Prev string
}

// moveChunks is the one way a chunk's status changes once planned. It sets
// the chunk_runs rows of batch $1 that match where (SQL over chunk_runs,
// alias c; its parameters follow $1 in args) with set (an UPDATE SET list
// that sets status), and returns the moved chunks in order with their
// status before. The batch's counters are not moved here: while it runs
// they are counted from chunk_runs (gridbatch_chunk_counts, read through
// liveBatchColumns), and they are stored from the same count when it ends
// or heals (setCounters). So concurrent chunks never contend for the
// batch row.
func moveChunks(ctx context.Context, tx pgx.Tx, set, where string, args ...any) ([]movedChunk, error) {
	return collectMoved(tx.Query(ctx, moveChunksSQL(set, where), args...))
}

// moveChunksSQL is moveChunks' statement, for a caller that sends it in a
// pipeline (WriteChunk); collectMoved reads its rows.
func moveChunksSQL(set, where string) string {
	return `
		WITH moved AS (
			UPDATE chunk_runs c SET ` + set + `
			FROM (SELECT c.chunk, c.lo, c.hi, c.status FROM chunk_runs c WHERE c.batch_id = $1 AND (` + where + `) FOR UPDATE) old
			WHERE c.batch_id = $1 AND c.chunk = old.chunk AND c.lo = old.lo AND c.hi = old.hi
			RETURNING c.chunk, c.lo, c.hi, old.status AS prev)
		SELECT chunk, lo, hi, prev FROM moved ORDER BY chunk, lo, hi`
}

func collectMoved(rows pgx.Rows, err error) ([]movedChunk, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (movedChunk, error) {
		var m movedChunk
		err := r.Scan(&m.Chunk, &m.Lo, &m.Hi, &m.Prev)
		return m, err
	})
}

// chunkFigures counts a batch's chunk_runs ($1) by outcome
// (gridbatch_chunk_counts) and sums up the rest of its figures, for
// setCounters: WITH c AS (chunkFigures) UPDATE batch_runs b SET … FROM c.
const chunkFigures = `
	SELECT n.*, s.* FROM gridbatch_chunk_counts($1) n, (
		SELECT
			avg(task_seconds) FILTER (WHERE status = 'succeeded') AS n_avg_task,
			max(worker_rss_bytes)                                 AS n_peak_rss,
			max(finished_at)                                      AS last_finished
		FROM chunk_runs WHERE batch_id = $1) s`

// setCounters stores a batch's counters and figures (alias b) from
// chunkFigures' columns (alias c), in the SET list of an UPDATE.
const setCounters = `
	done_chunks = c.done_chunks, completed_chunks = c.completed_chunks, failed_chunks = c.failed_chunks,
	timed_out_chunks = c.timed_out_chunks, cancelled_chunks = c.cancelled_chunks,
	completed_cells = c.completed_cells, failed_cells = c.failed_cells, timed_out_cells = c.timed_out_cells,
	success_rate = CASE WHEN b.total_cells > 0 THEN c.completed_cells::float8 / b.total_cells END,
	avg_task_seconds = c.n_avg_task, peak_worker_rss_bytes = c.n_peak_rss`
