package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// The monitor's queries: the batch view, the batch page and the per-kind
// gauges of the monitor's /metrics.

// BatchOverview is a batch with what the batch view shows beside it.
type BatchOverview struct {
	Batch
	// DeadLetters counts the batch's dead letters not yet requeued.
	DeadLetters int
	// RecentCells counts the cells of chunks that succeeded in the last
	// RecentSeconds (running batches only; 0 otherwise).
	RecentCells int64
	// RecentSeconds is the rate window: the window asked for, or the
	// batch's age when it is younger.
	RecentSeconds float64
}

// extraRow scans a batch row followed by extra columns, so scanBatch stays
// the one place that knows batch_runs' columns.
type extraRow struct {
	pgx.Row
	extra []any
}

func (r extraRow) Scan(dest ...any) error { return r.Row.Scan(append(dest, r.extra...)...) }

// overviewSQL selects batch_runs rows with their open dead letters, the
// cells completed in the last $2 seconds (running batches only) and that
// window, shortened to the batch's age. The caller adds WHERE, ORDER BY and
// LIMIT.
var overviewSQL = `SELECT ` + liveBatchColumns + `,
		(SELECT count(*) FROM dead_letters d WHERE d.batch_id = b.id AND d.requeued_at IS NULL),
		CASE WHEN b.status = 'running' THEN
			(SELECT coalesce(sum(c.cells), 0) FROM chunk_runs c
			 WHERE c.batch_id = b.id AND c.status = 'succeeded'
			   AND c.finished_at > now() - make_interval(secs => $2::float8))
		ELSE 0 END,
		greatest(least($2::float8, extract(epoch FROM now() - b.started_at)::float8), 0)
	FROM ` + liveBatchFrom + ` `

func scanOverview(row pgx.Row) (BatchOverview, error) {
	var o BatchOverview
	b, err := scanBatch(extraRow{row, []any{&o.DeadLetters, &o.RecentCells, &o.RecentSeconds}})
	o.Batch = b
	return o, err
}

// BatchOverviews returns every running batch and then the most recent
// others, newest first, limit rows in all, each with its open dead letters
// and, when running, the cells it completed in the last window.
func (s *Store) BatchOverviews(ctx context.Context, limit int, window time.Duration) ([]BatchOverview, error) {
	rows, err := s.pool.Query(ctx, overviewSQL+`
		ORDER BY (b.status = 'running') DESC, b.started_at DESC, b.id DESC LIMIT $1`, limit, window.Seconds())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BatchOverview
	for rows.Next() {
		o, err := scanOverview(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// BatchOverview is BatchOverviews for one batch; ErrBatchNotFound when unknown.
func (s *Store) BatchOverview(ctx context.Context, id string, window time.Duration) (BatchOverview, error) {
	return scanOverview(s.pool.QueryRow(ctx, overviewSQL+`WHERE b.id = $1`, id, window.Seconds()))
}

// ChunkStats are a batch's chunk figures computed live from chunk_runs, for
// a running batch whose batch_runs figures are only written when it ends.
type ChunkStats struct {
	Pending, Succeeded, Failed, TimedOut, Cancelled int
	// AvgTaskSeconds averages the succeeded chunks' task time; nil before
	// the first one.
	AvgTaskSeconds *float64
	// PeakRSSBytes is the largest worker memory any chunk reported.
	PeakRSSBytes *int64
}

// BatchChunkStats returns the live chunk figures of a batch.
func (s *Store) BatchChunkStats(ctx context.Context, batchID string) (ChunkStats, error) {
	var c ChunkStats
	err := s.pool.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE status = 'pending'),
			count(*) FILTER (WHERE status = 'succeeded'),
			count(*) FILTER (WHERE status = 'failed'),
			count(*) FILTER (WHERE status = 'timed_out'),
			count(*) FILTER (WHERE status = 'cancelled'),
			avg(task_seconds) FILTER (WHERE status = 'succeeded'),
			max(worker_rss_bytes)
		FROM chunk_runs WHERE batch_id = $1`, batchID).
		Scan(&c.Pending, &c.Succeeded, &c.Failed, &c.TimedOut, &c.Cancelled, &c.AvgTaskSeconds, &c.PeakRSSBytes)
	return c, err
}

// ThroughputBucket is one bucket of a batch's throughput chart.
type ThroughputBucket struct {
	// Index counts buckets from the batch's start: bucket i covers
	// [i·size, (i+1)·size) after started_at.
	Index int
	// Cells counts the cells of chunks that succeeded in the bucket.
	Cells int64
	// Failed counts the chunks dead-lettered in the bucket.
	Failed int
}

// Throughput returns a batch's succeeded cells and dead-lettered chunks per
// bucket of its life, by chunk finish time; empty buckets are left out.
func (s *Store) Throughput(ctx context.Context, batchID string, bucket time.Duration) ([]ThroughputBucket, error) {
	rows, err := s.pool.Query(ctx, `SELECT
			greatest(floor(extract(epoch FROM c.finished_at - b.started_at) / $2), 0)::int AS i,
			coalesce(sum(c.cells) FILTER (WHERE c.status = 'succeeded'), 0),
			count(*) FILTER (WHERE c.status = 'failed')
		FROM chunk_runs c JOIN batch_runs b ON b.id = c.batch_id
		WHERE c.batch_id = $1 AND c.finished_at IS NOT NULL AND c.status IN ('succeeded', 'failed')
		GROUP BY i ORDER BY i`, batchID, bucket.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ThroughputBucket, error) {
		var t ThroughputBucket
		err := r.Scan(&t.Index, &t.Cells, &t.Failed)
		return t, err
	})
}

// BatchDeadLetters returns up to limit dead letters of a batch, by chunk,
// without their payloads, and how many it has in all.
func (s *Store) BatchDeadLetters(ctx context.Context, batchID string, limit int) ([]DeadLetter, int, error) {
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE batch_id = $1`, batchID).Scan(&total); err != nil {
		return nil, 0, err
	}
	rows, err := s.pool.Query(ctx, `SELECT task_id, task_type, queue, batch_id, chunk, last_error, retries,
			failed_at, requeued_at, recorded_at, lo, hi, grid_id
		FROM dead_letters WHERE batch_id = $1
		ORDER BY requeued_at IS NOT NULL, chunk NULLS LAST, lo, task_id LIMIT $2`, batchID, limit)
	if err != nil {
		return nil, 0, err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeadLetter, error) {
		var d DeadLetter
		err := r.Scan(&d.TaskID, &d.Type, &d.Queue, &d.BatchID, &d.Chunk, &d.LastError, &d.Retries,
			&d.FailedAt, &d.RequeuedAt, &d.RecordedAt, &d.Lo, &d.Hi, &d.GridID)
		return d, err
	})
	return out, total, err
}

// FailedPieces returns the dead-lettered pieces of a batch's chunks (whole
// chunks, or parts of split ones: store.Piece), by chunk.
func (s *Store) FailedPieces(ctx context.Context, batchID string) ([]Piece, error) {
	rows, err := s.pool.Query(ctx, `SELECT chunk, lo, hi FROM chunk_runs WHERE batch_id = $1 AND status = 'failed' ORDER BY chunk, lo`, batchID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Piece, error) {
		var p Piece
		err := r.Scan(&p.Chunk, &p.Lo, &p.Hi)
		return p, err
	})
}

// OpenDeadLetters counts the dead letters not yet requeued, of every batch.
func (s *Store) OpenDeadLetters(ctx context.Context) (int64, error) {
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE requeued_at IS NULL`).Scan(&n)
	return n, err
}

// KindEnd is when the last batch of a kind ended with a status.
type KindEnd struct {
	Kind, Status string
	EndedAt      time.Time
}

// LastEnds returns, for every kind and final status, when its most recent
// batch with that status ended.
func (s *Store) LastEnds(ctx context.Context) ([]KindEnd, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, status, max(ended_at) FROM batch_runs
		WHERE ended_at IS NOT NULL GROUP BY kind, status ORDER BY kind, status`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (KindEnd, error) {
		var k KindEnd
		err := r.Scan(&k.Kind, &k.Status, &k.EndedAt)
		return k, err
	})
}

// HeldBatches counts, per kind, the batches held now (status held: their
// declared checks failed and they are not published).
func (s *Store) HeldBatches(ctx context.Context) (map[string]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT kind, count(*) FROM batch_runs WHERE status = 'held' GROUP BY kind`)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	var kind string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&kind, &n}, func() error {
		out[kind] = n
		return nil
	})
	return out, err
}

// LastChunkFinishedAt returns when the last of a batch's chunks to finish
// finished (the latest finished_at in chunk_runs), or nil when none has.
func (s *Store) LastChunkFinishedAt(ctx context.Context, batchID string) (*time.Time, error) {
	var last *time.Time
	err := s.pool.QueryRow(ctx, `SELECT max(finished_at) FROM chunk_runs WHERE batch_id = $1`, batchID).Scan(&last)
	return last, err
}

// RetainedBatches returns how many batches of kind still hold their rows
// (a results table whose rows are not dropped), and the most cells any
// batch of kind covered (0 when there is none).
func (s *Store) RetainedBatches(ctx context.Context, kind string) (batches int, maxCells int64, err error) {
	var most *int64
	err = s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE rows_dropped_at IS NULL AND results_table IS NOT NULL), max(total_cells)
		FROM batch_runs WHERE kind = $1`, kind).Scan(&batches, &most)
	if most != nil {
		maxCells = *most
	}
	return batches, maxCells, err
}

// ChunkRun is what chunk_runs records of the attempt that last finished a
// chunk (or of none yet: pending, attempts 0, no worker).
type ChunkRun struct {
	Status   string
	Attempts int
	// Worker is the worker that recorded the chunk's outcome; empty while
	// none has.
	Worker string
}

// ChunkRuns returns the chunk rows of a batch by chunk number (a split
// chunk's halves are rows of their own; the last read of a chunk number
// wins, so read it only for batches with no split chunk).
func (s *Store) ChunkRuns(ctx context.Context, batchID string) (map[int]ChunkRun, error) {
	rows, err := s.pool.Query(ctx, `SELECT chunk, status, attempts, coalesce(worker, '') FROM chunk_runs WHERE batch_id = $1`, batchID)
	if err != nil {
		return nil, err
	}
	out := map[int]ChunkRun{}
	var c int
	var r ChunkRun
	_, err = pgx.ForEachRow(rows, []any{&c, &r.Status, &r.Attempts, &r.Worker}, func() error {
		out[c] = r
		return nil
	})
	return out, err
}
