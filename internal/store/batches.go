package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// Batch statuses. Every batch ends in one of the last six.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusPartial   = "partial"
	StatusFailed    = "failed"
	StatusTimedOut  = "timed_out"
	StatusCancelled = "cancelled"
	// StatusHeld: computed, but its declared checks failed, so it was not
	// published (batch.Gate).
	StatusHeld = "held"
)

// Chunk statuses. "failed" means dead-lettered.
const (
	ChunkPending   = "pending"
	ChunkSucceeded = "succeeded"
	ChunkFailed    = "failed"
	ChunkTimedOut  = "timed_out"
	ChunkCancelled = "cancelled"
	// ChunkSplit is a piece split in halves: its halves carry its cells.
	ChunkSplit = "split"
)

// ErrBatchNotFound is returned for an unknown batch ID.
var ErrBatchNotFound = errors.New("batch not found")

// Batch is a batch_runs row.
type Batch struct {
	ID                 string     `json:"id"`
	Kind               string     `json:"kind"`
	Status             string     `json:"status"`
	Step               float64    `json:"step"`
	BBox               grid.BBox  `json:"-"`
	ChunkSize          int        `json:"chunk_size"`
	TotalChunks        int        `json:"total_chunks"`
	TotalCells         int64      `json:"total_cells"`
	PlannedChunks      int        `json:"planned_chunks"`
	DoneChunks         int        `json:"done_chunks"`
	CompletedChunks    int        `json:"completed_chunks"`
	FailedChunks       int        `json:"failed_chunks"`
	TimedOutChunks     int        `json:"timed_out_chunks"`
	CancelledChunks    int        `json:"cancelled_chunks"`
	CompletedCells     int64      `json:"completed_cells"`
	FailedCells        int64      `json:"failed_cells"`
	TimedOutCells      int64      `json:"timed_out_cells"`
	SuccessRate        *float64   `json:"success_rate"`
	AvgTaskSeconds     *float64   `json:"avg_task_seconds"`
	PeakWorkerRSSBytes *int64     `json:"peak_worker_rss_bytes"`
	DBConnErrors       int64      `json:"db_conn_errors"`
	Trigger            string     `json:"trigger"`
	ScheduledFor       *time.Time `json:"scheduled_for"`
	Error              *string    `json:"error"`
	StartedAt          time.Time  `json:"started_at"`
	DeadlineAt         time.Time  `json:"deadline_at"`
	LockExpiresAt      time.Time  `json:"lock_expires_at"`
	EndedAt            *time.Time `json:"ended_at"`
	DurationSeconds    *float64   `json:"duration_seconds"`
	// PublishedAt is when the batch's rows became the published values of
	// <kind>_timeseries; nil while they are not.
	PublishedAt *time.Time `json:"published_at"`
	// RowsDroppedAt is when retention dropped the batch's own rows.
	RowsDroppedAt *time.Time `json:"rows_dropped_at"`
	// Layout is how its own rows hold its series; zero for a batch made
	// before layouts were recorded (migration 00006).
	Layout SeriesLayout `json:"layout"`
	// Checks is the report of the declared checks run on its rows when its
	// publication was last decided; nil when none ran.
	Checks *CheckReport `json:"checks"`
	// Provenance is what made its values, recorded when it was planned;
	// nil for a batch planned before provenance was recorded.
	Provenance *Provenance `json:"provenance"`
	// PublishReason and PublishedBy say why and by whom a batch whose
	// checks failed was published despite them.
	PublishReason *string `json:"publish_reason"`
	PublishedBy   *string `json:"published_by"`
}

// Ended reports whether the batch has a final status.
func (b Batch) Ended() bool { return b.Status != StatusRunning }

// Region rebuilds the batch's grid region.
func (b Batch) Region() (grid.Region, error) {
	l, err := grid.NewLattice(b.Step)
	if err != nil {
		return grid.Region{}, err
	}
	return grid.NewRegion(l, b.BBox, 0)
}

// batchColumnNames are the batch_runs columns scanBatch reads, in order.
var batchColumnNames = []string{"id", "kind", "status", "step", "lon_min", "lat_min", "lon_max", "lat_max", "chunk_size",
	"total_chunks", "total_cells", "planned_chunks", "done_chunks", "completed_chunks", "failed_chunks",
	"timed_out_chunks", "cancelled_chunks", "completed_cells", "failed_cells", "timed_out_cells",
	"success_rate", "avg_task_seconds", "peak_worker_rss_bytes", "db_conn_errors", "trigger",
	"scheduled_for", "error", "started_at", "deadline_at", "lock_expires_at", "ended_at", "duration_seconds",
	"published_at", "rows_dropped_at", "series_names", "first_year", "years",
	"checks", "provenance", "publish_reason", "published_by"}

// batchColumns are the columns scanBatch reads, as stored: for RETURNING
// and for reads inside a transaction that locks the row; qualifiedBatchColumns
// are the same qualified by the alias b, for an UPDATE batch_runs b … FROM.
var (
	batchColumns          = strings.Join(batchColumnNames, ", ")
	qualifiedBatchColumns = "b." + strings.Join(batchColumnNames, ", b.")
)

// liveBatchColumns and liveBatchFrom read a batch as it stands: a running
// batch's counters come from its chunks (gridbatch_chunk_counts), since
// chunks no longer move the counters on the batch row; an ended batch's are
// stored. Reads outside a transaction use them: SELECT liveBatchColumns
// FROM liveBatchFrom WHERE b.… .
var liveBatchColumns = func() string {
	cols := make([]string, len(batchColumnNames))
	for i, c := range batchColumnNames {
		switch c {
		case "done_chunks", "completed_chunks", "failed_chunks", "timed_out_chunks", "cancelled_chunks",
			"completed_cells", "failed_cells", "timed_out_cells":
			cols[i] = "coalesce(live." + c + ", b." + c + ")"
		default:
			cols[i] = "b." + c
		}
	}
	return strings.Join(cols, ", ")
}()

const liveBatchFrom = `batch_runs b LEFT JOIN LATERAL
	(SELECT * FROM gridbatch_chunk_counts(b.id) WHERE b.status = 'running') live ON true`

func scanBatch(row pgx.Row) (Batch, error) {
	var b Batch
	err := row.Scan(append([]any{&b.ID, &b.Kind, &b.Status, &b.Step, &b.BBox.LonMin, &b.BBox.LatMin, &b.BBox.LonMax,
		&b.BBox.LatMax, &b.ChunkSize, &b.TotalChunks, &b.TotalCells, &b.PlannedChunks, &b.DoneChunks,
		&b.CompletedChunks, &b.FailedChunks, &b.TimedOutChunks, &b.CancelledChunks, &b.CompletedCells,
		&b.FailedCells, &b.TimedOutCells, &b.SuccessRate, &b.AvgTaskSeconds, &b.PeakWorkerRSSBytes,
		&b.DBConnErrors, &b.Trigger, &b.ScheduledFor, &b.Error, &b.StartedAt, &b.DeadlineAt,
		&b.LockExpiresAt, &b.EndedAt, &b.DurationSeconds, &b.PublishedAt, &b.RowsDroppedAt}, append(b.Layout.scan(),
		&b.Checks, &b.Provenance, &b.PublishReason, &b.PublishedBy)...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return b, ErrBatchNotFound
	}
	return b, err
}

// NewBatch is what InsertBatch needs.
type NewBatch struct {
	ID            string
	Kind          string
	Region        grid.Region
	ChunkSize     int
	StartedAt     time.Time
	DeadlineAt    time.Time
	LockExpiresAt time.Time
	Trigger       string
	ScheduledFor  *time.Time
	// Layout is the model's series (its declaration's series, first_year
	// and years): how the batch's rows will hold them. Required.
	Layout SeriesLayout
}

// InsertBatch creates the batch_runs row, status running, and the table
// its rows go to (see createBatchTable), in one transaction.
func (s *Store) InsertBatch(ctx context.Context, n NewBatch) (Batch, error) {
	if !n.Layout.valid() {
		return Batch{}, fmt.Errorf("batch %s: no series layout (series %v of %d years)", n.ID, n.Layout.Names, n.Layout.Years)
	}
	var out Batch
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		b := n.Region.BBox
		var err error
		out, err = scanBatch(tx.QueryRow(ctx, `
			INSERT INTO batch_runs (id, kind, status, step, lon_min, lat_min, lon_max, lat_max, chunk_size,
				total_chunks, total_cells, trigger, scheduled_for, started_at, deadline_at, lock_expires_at, results_table,
				series_names, first_year, years)
			VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, gridbatch_batch_table($1), $16, $17, $18)
			RETURNING `+batchColumns,
			n.ID, n.Kind, n.Region.Lattice.Step, b.LonMin, b.LatMin, b.LonMax, b.LatMax, n.ChunkSize,
			n.Region.NumChunks(n.ChunkSize), n.Region.NumCells(), n.Trigger, n.ScheduledFor,
			n.StartedAt, n.DeadlineAt, n.LockExpiresAt, n.Layout.Names, n.Layout.FirstYear, n.Layout.Years))
		if err != nil {
			return err
		}
		return createBatchTable(ctx, tx, n.Kind, n.ID)
	})
	return out, err
}

// GetBatch returns one batch, ErrBatchNotFound when unknown.
func (s *Store) GetBatch(ctx context.Context, id string) (Batch, error) {
	return scanBatch(s.pool.QueryRow(ctx, `SELECT `+liveBatchColumns+` FROM `+liveBatchFrom+` WHERE b.id = $1`, id))
}

// BatchGrid is what a batch's chunks are cut from, as batch_runs recorded
// it when the batch started; it never changes.
type BatchGrid struct {
	Kind        string
	Step        float64
	BBox        grid.BBox
	ChunkSize   int
	TotalChunks int
}

// GetBatchGrid returns the grid of batch id, ErrBatchNotFound when unknown:
// one primary-key read, for checking a chunk task against its batch.
func (s *Store) GetBatchGrid(ctx context.Context, id string) (BatchGrid, error) {
	var g BatchGrid
	err := s.pool.QueryRow(ctx, `SELECT kind, step, lon_min, lat_min, lon_max, lat_max, chunk_size, total_chunks
		FROM batch_runs WHERE id = $1`, id).Scan(&g.Kind, &g.Step, &g.BBox.LonMin, &g.BBox.LatMin, &g.BBox.LonMax, &g.BBox.LatMax,
		&g.ChunkSize, &g.TotalChunks)
	if errors.Is(err, pgx.ErrNoRows) {
		return g, fmt.Errorf("batch %q: %w", id, ErrBatchNotFound)
	}
	return g, err
}

// LatestBatch returns the most recently started batch, of kind when kind is not empty.
func (s *Store) LatestBatch(ctx context.Context, kind string) (Batch, error) {
	return scanBatch(s.pool.QueryRow(ctx, `SELECT `+liveBatchColumns+` FROM `+liveBatchFrom+`
		WHERE $1 = '' OR b.kind = $1 ORDER BY b.started_at DESC, b.id DESC LIMIT 1`, kind))
}

// ListBatches returns up to limit batches, newest first, filtered by kind and
// status when those are not empty.
func (s *Store) ListBatches(ctx context.Context, kind, status string, limit int) ([]Batch, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+liveBatchColumns+` FROM `+liveBatchFrom+`
		WHERE ($1 = '' OR b.kind = $1) AND ($2 = '' OR b.status = $2)
		ORDER BY b.started_at DESC, b.id DESC LIMIT $3`, kind, status, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Batch
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// RunningBatches returns every batch with status running.
func (s *Store) RunningBatches(ctx context.Context) ([]Batch, error) {
	return s.ListBatches(ctx, "", StatusRunning, 1000)
}

// PlanChunks writes one pending chunk_runs row per chunk of the batch
// (idempotent) and returns the whole chunks still pending, in order (the
// parts of a split chunk are enqueued by the split, see SplitChunk).
func (s *Store) PlanChunks(ctx context.Context, b Batch) ([]int, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	_, err = tx.Exec(ctx, `
		INSERT INTO chunk_runs (batch_id, chunk, cells)
		SELECT $1, i, least($3::bigint, $4::bigint - i::bigint * $3::bigint)
		FROM generate_series(0, $2 - 1) AS i
		ON CONFLICT (batch_id, chunk, lo, hi) DO NOTHING`, b.ID, b.TotalChunks, b.ChunkSize, b.TotalCells)
	if err != nil {
		return nil, fmt.Errorf("plan chunks of %s: %w", b.ID, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE batch_runs SET planned_chunks = total_chunks WHERE id = $1`, b.ID); err != nil {
		return nil, err
	}
	pending, err := pendingChunks(ctx, tx, b.ID)
	if err != nil {
		return nil, err
	}
	return pending, tx.Commit(ctx)
}

func pendingChunks(ctx context.Context, tx pgx.Tx, batchID string) ([]int, error) {
	rows, err := tx.Query(ctx, `SELECT chunk FROM chunk_runs WHERE batch_id = $1 AND status = 'pending' AND hi = 0 ORDER BY chunk`, batchID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// Piece is part of a planned chunk: cells [Lo, Hi) of chunk Chunk, in its
// row-major order. Lo = Hi = 0 is the whole chunk as planned. A chunk that
// keeps failing is split in halves (batch.Classify decides when), each a
// piece with a chunk_runs row of its own, recursively, until the failing
// cells stand alone (see SplitChunk).
type Piece struct {
	Chunk, Lo, Hi int
}

// Whole reports whether p is a whole planned chunk.
func (p Piece) Whole() bool { return p.Hi == 0 }

// Halves splits cells [0, n) of a piece (n its cells) in two: the first
// half is the larger by one when n is odd.
func (p Piece) Halves(n int) [2]Piece {
	lo := p.Lo
	mid := lo + (n+1)/2
	return [2]Piece{{p.Chunk, lo, mid}, {p.Chunk, mid, lo + n}}
}

func (p Piece) String() string {
	if p.Whole() {
		return fmt.Sprintf("chunk %d", p.Chunk)
	}
	return fmt.Sprintf("chunk %d cells %d-%d", p.Chunk, p.Lo, p.Hi)
}

// ChunkOutcome is the end of one chunk task attempt.
type ChunkOutcome struct {
	BatchID string
	// Chunk, Lo and Hi are the piece the task ran (Piece).
	Chunk, Lo, Hi int
	Attempts      int
	TaskSeconds   float64
	Worker        string
	RSSBytes      int64
	// ModelPID is the model process that computed it (the worker's own pid
	// for a Go model); 0 when unknown.
	ModelPID int
	Error    string // for failed chunks
	// Checks are what its kind's declared checks found in its values, for
	// a succeeded chunk (WriteChunk records them with its rows); nil for
	// none.
	Checks *ChunkChecks
}

func (o ChunkOutcome) piece() Piece { return Piece{o.Chunk, o.Lo, o.Hi} }

// Transition is what recording an outcome changed.
type Transition struct {
	// Changed is false when the chunk already had this outcome (a duplicate
	// delivery) or the batch had ended: nothing was counted.
	Changed bool
	// BatchRunning is false when the batch had already ended.
	BatchRunning bool
	// Done and Total are the batch's cells with a final outcome and in all:
	// cells, not chunks, so that splitting a chunk changes neither.
	Done, Total int
	// Completed and Failed are the batch's succeeded and dead-lettered
	// cells; WriteChunk leaves them zero (see countChunks).
	Completed, Failed int
}

// AllDone reports whether every cell of the batch has a final outcome.
func (t Transition) AllDone() bool { return t.BatchRunning && t.Total > 0 && t.Done >= t.Total }

// markChunk records a chunk's outcome inside tx, through moveChunks, once
// per transition: pending → status, or failed → succeeded (a requeued dead
// letter). Nothing changes when the batch has ended, except that a requeued
// chunk may still heal an ended batch (see dlq.Requeue); allowEnded says so.
func markChunk(ctx context.Context, tx pgx.Tx, o ChunkOutcome, status string, allowEnded bool) (Transition, error) {
	t, _, _, err := lockBatchForChunk(ctx, tx, o.BatchID)
	if err != nil || (!t.BatchRunning && !allowEnded) {
		return t, err
	}
	moved, err := moveChunks(ctx, tx, markChunkSet, markChunkWhere, markChunkArgs(o, status)...)
	if err != nil {
		return t, fmt.Errorf("record %s of %s: %w", o.piece(), o.BatchID, err)
	}
	t.Changed = len(moved) > 0
	return t, nil
}

// markChunkSet and markChunkWhere are markChunk's moveChunks arguments,
// with markChunkArgs their parameters.
const (
	markChunkSet   = `status = $3, attempts = $4, task_seconds = $5, worker = $6, worker_rss_bytes = $7, error = nullif($8, ''), finished_at = now(), model_pid = nullif($11, 0), checks = $12`
	markChunkWhere = `c.chunk = $2 AND c.lo = $9 AND c.hi = $10 AND (c.status = 'pending' OR (c.status = 'failed' AND $3 = 'succeeded'))`
)

func markChunkArgs(o ChunkOutcome, status string) []any {
	var checks *ChunkChecks
	if status == ChunkSucceeded {
		checks = o.Checks
	}
	return []any{o.BatchID, o.Chunk, status, o.Attempts, o.TaskSeconds, o.Worker, o.RSSBytes, o.Error, o.Lo, o.Hi, o.ModelPID, checks}
}

// lockBatchForChunk takes the batch row's KEY SHARE lock for a chunk's
// transaction: chunks do not block each other, and FinishBatch (FOR UPDATE)
// waits for the chunks in flight, so a chunk either lands before the batch
// ends or sees it ended. It returns whether the batch runs, the table of
// its rows (empty when it has none, or retention dropped it) and their
// layout.
func lockBatchForChunk(ctx context.Context, tx pgx.Tx, batchID string) (Transition, string, SeriesLayout, error) {
	return scanBatchForChunk(tx.QueryRow(ctx, lockBatchForChunkSQL, batchID), batchID)
}

// lockBatchForChunkSQL is lockBatchForChunk's query ($1 the batch), for a
// caller that sends it in a pipeline; scanBatchForChunk reads its row.
const lockBatchForChunkSQL = `SELECT status, CASE WHEN rows_dropped_at IS NULL THEN results_table END, series_names, first_year, years
	FROM batch_runs WHERE id = $1 FOR KEY SHARE`

func scanBatchForChunk(row pgx.Row, batchID string) (Transition, string, SeriesLayout, error) {
	var t Transition
	var status string
	var table *string
	var l SeriesLayout
	err := row.Scan(append([]any{&status, &table}, l.scan()...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, "", l, fmt.Errorf("%w: %s", ErrBatchNotFound, batchID)
	}
	if err != nil {
		return t, "", l, err
	}
	t.BatchRunning = status == StatusRunning
	if table == nil {
		return t, "", l, nil
	}
	return t, *table, l, nil
}

// countChunks fills t's counts from the batch's chunks, as committed: read
// after a chunk's transaction commits, so of two chunks finishing at once
// the one that commits last sees every cell done and ends the batch. The
// end condition counts cells, not planned chunks: a batch is done when no
// piece is pending, however its chunks were split (a split commits its
// halves pending with the split). With full false it counts only the
// pieces still pending (Done and Total), from the partial index of open
// chunks: what every chunk needs, at the cost of the few pieces left rather
// than of the whole batch.
func (s *Store) countChunks(ctx context.Context, id string, t *Transition, full bool) error {
	if !full {
		return s.pool.QueryRow(ctx, countOpenChunksSQL, id).Scan(&t.Done, &t.Total)
	}
	return s.pool.QueryRow(ctx, `SELECT `+pendingCellsDone+`, b.total_cells, c.completed_cells, c.failed_cells
		FROM batch_runs b, gridbatch_chunk_counts(b.id) c WHERE b.id = $1`, id).
		Scan(&t.Done, &t.Total, &t.Completed, &t.Failed)
}

// countOpenChunksSQL is countChunks' query with full false: Done and Total
// of batch $1.
const countOpenChunksSQL = `SELECT ` + pendingCellsDone + `, b.total_cells FROM batch_runs b WHERE b.id = $1`

// pendingCellsDone counts the cells of batch b that are done: every cell
// but those of its pieces still pending (a split commits its halves
// pending with the split).
const pendingCellsDone = `b.total_cells - (SELECT coalesce(sum(c.cells), 0) FROM chunk_runs c WHERE c.batch_id = b.id AND c.status = 'pending')`

// MarkChunkFailed records a dead-lettered chunk.
func (s *Store) MarkChunkFailed(ctx context.Context, o ChunkOutcome) (Transition, error) {
	var t Transition
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		t, err = markChunk(ctx, tx, o, ChunkFailed, false)
		return err
	})
	if err == nil && t.Changed {
		err = s.countChunks(ctx, o.BatchID, &t, true)
	}
	return t, err
}

// FailedChunks returns how many whole planned chunks of a batch failed
// (were dead-lettered, or split with an error that starts with none of
// splitExcept), how many distinct errors (digits ignored) they failed
// with, and how many of the batch's cells succeeded.
func (s *Store) FailedChunks(ctx context.Context, batchID string, splitExcept []string) (failed, classes int, completedCells int64, err error) {
	err = s.pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT regexp_replace(coalesce(error, ''), '[0-9]+', 'N', 'g')),
			(SELECT completed_cells FROM gridbatch_chunk_counts($1))
		FROM chunk_runs WHERE batch_id = $1 AND hi = 0 AND (status = 'failed'
			OR (status = 'split' AND NOT coalesce(error, '') LIKE ANY (SELECT p || '%' FROM unnest($2::text[]) p)))`,
		batchID, splitExcept).Scan(&failed, &classes, &completedCells)
	return failed, classes, completedCells, err
}

// SplitChunk records that a failed piece is split in halves, in one
// transaction: the piece pending → split (with its error and attempts), its
// halves' rows inserted pending. It returns the halves still pending, whose
// tasks are to be enqueued: both on the first split; on a duplicate
// delivery of the split piece, those not done yet. Nothing changes when the
// batch has ended (Transition.BatchRunning false).
func (s *Store) SplitChunk(ctx context.Context, o ChunkOutcome, halves [2]Piece) (Transition, []Piece, error) {
	var t Transition
	var pending []Piece
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		t, _, _, err = lockBatchForChunk(ctx, tx, o.BatchID)
		if err != nil || !t.BatchRunning {
			return err
		}
		moved, err := moveChunks(ctx, tx,
			`status = 'split', attempts = $3, task_seconds = $4, worker = $5, error = nullif($6, ''), finished_at = now()`,
			`c.chunk = $2 AND c.lo = $7 AND c.hi = $8 AND c.status = 'pending'`,
			o.BatchID, o.Chunk, o.Attempts, o.TaskSeconds, o.Worker, o.Error, o.Lo, o.Hi)
		if err != nil {
			return fmt.Errorf("split %s of %s: %w", o.piece(), o.BatchID, err)
		}
		t.Changed = len(moved) > 0
		var status string
		if err := tx.QueryRow(ctx, `SELECT status FROM chunk_runs WHERE batch_id = $1 AND chunk = $2 AND lo = $3 AND hi = $4`,
			o.BatchID, o.Chunk, o.Lo, o.Hi).Scan(&status); err != nil {
			return fmt.Errorf("split %s of %s: %w", o.piece(), o.BatchID, err)
		}
		if status != ChunkSplit {
			return nil // it succeeded, failed or ended meanwhile
		}
		rows, err := tx.Query(ctx, `
			INSERT INTO chunk_runs (batch_id, chunk, lo, hi, cells)
			SELECT $1, $2, h.lo, h.hi, h.hi - h.lo FROM unnest($3::int[], $4::int[]) AS h(lo, hi)
			ON CONFLICT (batch_id, chunk, lo, hi) DO UPDATE SET status = chunk_runs.status
			RETURNING chunk, lo, hi, status`,
			o.BatchID, o.Chunk, []int32{int32(halves[0].Lo), int32(halves[1].Lo)}, []int32{int32(halves[0].Hi), int32(halves[1].Hi)})
		if err != nil {
			return fmt.Errorf("plan the halves of %s of %s: %w", o.piece(), o.BatchID, err)
		}
		type half struct {
			Piece
			Status string
		}
		hs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (half, error) {
			var h half
			err := r.Scan(&h.Chunk, &h.Lo, &h.Hi, &h.Status)
			return h, err
		})
		for _, h := range hs {
			if h.Status == ChunkPending {
				pending = append(pending, h.Piece)
			}
		}
		return err
	})
	return t, pending, err
}

// Final is how a batch ends.
type Final struct {
	// Status is the batch's end status; empty means FinalStatus of its
	// chunks' outcomes, decided in the transaction that ends it.
	Status string
	// PendingChunkStatus is the status the batch's chunks still pending
	// get: ChunkTimedOut, ChunkCancelled or ChunkFailed.
	PendingChunkStatus string
	Error              string
	DBConnErrors       int64
}

// FinishBatch ends a running batch: remaining pending chunks get
// f.PendingChunkStatus, and the row gets its status and figures; then
// decide, in the same transaction, publishes it or not (see Ending). It returns the ended batch,
// the chunks that were still pending (their tasks are to be removed from
// the queue), and ended=false when the batch had already ended (someone
// else finished it).
func (s *Store) FinishBatch(ctx context.Context, id string, f Final, decide Decide) (b Batch, rest []Piece, ended bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		cur, err := scanBatch(tx.QueryRow(ctx, `SELECT `+batchColumns+` FROM batch_runs WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		if cur.Ended() {
			return nil
		}
		ended = true
		moved, err := moveChunks(ctx, tx, `status = $2, finished_at = now()`, `c.status = 'pending'`, id, f.PendingChunkStatus)
		if err != nil {
			return err
		}
		for _, m := range moved {
			rest = append(rest, m.Piece)
		}
		status := f.Status
		if status == "" {
			var completed, failed int
			if err := tx.QueryRow(ctx, `SELECT completed_cells, failed_cells FROM gridbatch_chunk_counts($1)`, id).
				Scan(&completed, &failed); err != nil {
				return err
			}
			status = FinalStatus(completed, failed)
		}
		b, err = scanBatch(tx.QueryRow(ctx, `
			WITH c AS (`+chunkFigures+`)
			UPDATE batch_runs b SET
				status = $2, error = nullif($3, ''), ended_at = now(),
				duration_seconds = extract(epoch FROM now() - b.started_at),
				`+setCounters+`,
				db_conn_errors = b.db_conn_errors + $4
			FROM c WHERE b.id = $1
			RETURNING `+qualifiedBatchColumns, id, status, f.Error, f.DBConnErrors))
		if err != nil {
			return err
		}
		// A batch published with its end is published in this
		// transaction: readers see it end and its values appear at once.
		// Its end and duration then include the publication.
		e := &Ending{tx: tx, Batch: b}
		if err := decide(ctx, e); err != nil || !e.published {
			b = e.Batch
			return err
		}
		b, err = scanBatch(tx.QueryRow(ctx, `UPDATE batch_runs SET ended_at = clock_timestamp(),
			duration_seconds = extract(epoch FROM clock_timestamp() - started_at)
			WHERE id = $1 RETURNING `+batchColumns, id))
		return err
	})
	return b, rest, ended, err
}

// ChunkCounts returns the number of chunks per status.
func (s *Store) ChunkCounts(ctx context.Context, batchID string) (map[string]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT status, count(*) FROM chunk_runs WHERE batch_id = $1 GROUP BY status`, batchID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}
