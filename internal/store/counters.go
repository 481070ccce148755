package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// FinalStatus is the status of a batch all of whose chunks have an outcome,
// from how many succeeded (completed) and how many were dead-lettered
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

// movedChunk is one chunk moveChunks moved, and its status before.
type movedChunk struct {
	Chunk int
	Prev  string
}

// moveChunks is the one way a chunk's status changes once planned. It sets
// the chunk_runs rows of batch $1 that match where (SQL over chunk_runs,
// alias c; its parameters follow $1 in args) with set (an UPDATE SET list
// that sets status), and in the same statement moves the batch's counters
// (done, completed, failed, timed-out and cancelled chunks, and their cells)
// by the change: each counter stays the count of its chunk_runs rows
// whatever the transition (pending → an outcome, failed → succeeded,
// failed → pending). The caller holds the batch row's lock. It returns the
// moved chunks in order.
func moveChunks(ctx context.Context, tx pgx.Tx, set, where string, args ...any) ([]movedChunk, error) {
	rows, err := tx.Query(ctx, `
		WITH moved AS (
			UPDATE chunk_runs c SET `+set+`
			FROM (SELECT c.chunk, c.status FROM chunk_runs c WHERE c.batch_id = $1 AND (`+where+`) FOR UPDATE) old
			WHERE c.batch_id = $1 AND c.chunk = old.chunk
			RETURNING c.chunk, old.status AS prev, c.status, c.cells::bigint AS cells),
		d AS (
			SELECT count(*) AS n,
				count(*) FILTER (WHERE status <> 'pending')  - count(*) FILTER (WHERE prev <> 'pending')  AS done,
				count(*) FILTER (WHERE status = 'succeeded') - count(*) FILTER (WHERE prev = 'succeeded') AS completed,
				count(*) FILTER (WHERE status = 'failed')    - count(*) FILTER (WHERE prev = 'failed')    AS failed,
				count(*) FILTER (WHERE status = 'timed_out') - count(*) FILTER (WHERE prev = 'timed_out') AS timed_out,
				count(*) FILTER (WHERE status = 'cancelled') - count(*) FILTER (WHERE prev = 'cancelled') AS cancelled,
				coalesce(sum(cells) FILTER (WHERE status = 'succeeded'), 0) - coalesce(sum(cells) FILTER (WHERE prev = 'succeeded'), 0) AS completed_cells,
				coalesce(sum(cells) FILTER (WHERE status = 'failed'), 0)    - coalesce(sum(cells) FILTER (WHERE prev = 'failed'), 0)    AS failed_cells,
				coalesce(sum(cells) FILTER (WHERE status = 'timed_out'), 0) - coalesce(sum(cells) FILTER (WHERE prev = 'timed_out'), 0) AS timed_out_cells
			FROM moved),
		counted AS (
			UPDATE batch_runs b SET
				done_chunks = b.done_chunks + d.done,
				completed_chunks = b.completed_chunks + d.completed, failed_chunks = b.failed_chunks + d.failed,
				timed_out_chunks = b.timed_out_chunks + d.timed_out, cancelled_chunks = b.cancelled_chunks + d.cancelled,
				completed_cells = b.completed_cells + d.completed_cells, failed_cells = b.failed_cells + d.failed_cells,
				timed_out_cells = b.timed_out_cells + d.timed_out_cells
			FROM d WHERE b.id = $1 AND d.n > 0)
		SELECT chunk, prev FROM moved ORDER BY chunk`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[movedChunk])
}

// chunkSummary aggregates a batch's chunk_runs ($1) into the figures that
// are not counters, written to batch_runs when it ends or heals.
const chunkSummary = `
	SELECT
		avg(task_seconds) FILTER (WHERE status = 'succeeded') AS n_avg_task,
		max(worker_rss_bytes)                                 AS n_peak_rss,
		max(finished_at)                                      AS last_finished
	FROM chunk_runs WHERE batch_id = $1`

// setChunkSummary sets a batch's summary figures (alias b) from its counters
// and chunkSummary's columns, in the SET list of an UPDATE batch_runs b …
// FROM the aggregate.
const setChunkSummary = `
	success_rate = CASE WHEN b.total_chunks > 0 THEN b.completed_chunks::float8 / b.total_chunks END,
	avg_task_seconds = n_avg_task, peak_worker_rss_bytes = n_peak_rss`
