package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// DeadLetter is a dead_letters row: a task that reached asynq's archive.
// A task ID can have several rows: a requeued chunk task keeps its ID, and
// Generation counts the requeues (0 for the task as first enqueued).
type DeadLetter struct {
	TaskID     string  `json:"task_id"`
	Generation int     `json:"generation"`
	Type       string  `json:"type"`
	Queue      string  `json:"queue"`
	BatchID    *string `json:"batch_id"`
	Chunk      *int    `json:"chunk"`
	// Lo and Hi are the cells [Lo, Hi) of Chunk the task ran when it was a
	// part of a split chunk (store.Piece); 0 and 0 for a whole chunk.
	Lo int `json:"lo"`
	Hi int `json:"hi"`
	// GridID is the cell when the task was one cell; nil otherwise.
	GridID     *int64     `json:"grid_id"`
	Payload    []byte     `json:"payload"`
	LastError  string     `json:"last_error"`
	Retries    int        `json:"retries"`
	FailedAt   time.Time  `json:"failed_at"`
	RequeuedAt *time.Time `json:"requeued_at"`
	RecordedAt time.Time  `json:"recorded_at"`
}

// DeadLetterKey identifies a dead letter.
type DeadLetterKey struct {
	TaskID     string
	Generation int
}

// Key returns the dead letter's key.
func (d DeadLetter) Key() DeadLetterKey { return DeadLetterKey{d.TaskID, d.Generation} }

const insertDeadLetter = `
	INSERT INTO dead_letters (task_id, generation, task_type, queue, batch_id, chunk, payload, last_error, retries, failed_at, lo, hi, grid_id)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
	ON CONFLICT (task_id, generation) DO NOTHING`

func deadLetterArgs(d DeadLetter) []any {
	p := d.Payload
	if p == nil {
		p = []byte{}
	}
	return []any{d.TaskID, d.Generation, d.Type, d.Queue, d.BatchID, d.Chunk, p, d.LastError, d.Retries, d.FailedAt, d.Lo, d.Hi, d.GridID}
}

// RecordDeadLetter stores d once per (task ID, generation); it reports
// whether d was new.
func (s *Store) RecordDeadLetter(ctx context.Context, d DeadLetter) (bool, error) {
	tag, err := s.pool.Exec(ctx, insertDeadLetter, deadLetterArgs(d)...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// RecordDeadLetters stores each of ds once per (task ID, generation), in one
// round trip, and returns how many were new.
func (s *Store) RecordDeadLetters(ctx context.Context, ds []DeadLetter) (int, error) {
	if len(ds) == 0 {
		return 0, nil
	}
	var b pgx.Batch
	for _, d := range ds {
		b.Queue(insertDeadLetter, deadLetterArgs(d)...)
	}
	res := s.pool.SendBatch(ctx, &b)
	n := 0
	for range ds {
		tag, err := res.Exec()
		if err != nil {
			_ = res.Close()
			return n, err
		}
		n += int(tag.RowsAffected())
	}
	return n, res.Close()
}

// RecordedDeadLetters returns which of the task IDs have dead letters, with
// the generations recorded for each: one query however many IDs.
func (s *Store) RecordedDeadLetters(ctx context.Context, taskIDs []string) (map[DeadLetterKey]bool, error) {
	rows, err := s.pool.Query(ctx, `SELECT task_id, generation FROM dead_letters WHERE task_id = ANY($1)`, taskIDs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[DeadLetterKey]bool, len(taskIDs))
	for rows.Next() {
		var k DeadLetterKey
		if err := rows.Scan(&k.TaskID, &k.Generation); err != nil {
			return nil, err
		}
		out[k] = true
	}
	return out, rows.Err()
}

const deadLetterColumns = `d.task_id, d.generation, d.task_type, d.queue, d.batch_id, d.chunk, d.payload,
	d.last_error, d.retries, d.failed_at, d.requeued_at, d.recorded_at, d.lo, d.hi, d.grid_id`

func scanDeadLetter(row pgx.Row) (DeadLetter, error) {
	var d DeadLetter
	err := row.Scan(&d.TaskID, &d.Generation, &d.Type, &d.Queue, &d.BatchID, &d.Chunk, &d.Payload,
		&d.LastError, &d.Retries, &d.FailedAt, &d.RequeuedAt, &d.RecordedAt, &d.Lo, &d.Hi, &d.GridID)
	return d, err
}

func collectDeadLetters(rows pgx.Rows, err error) ([]DeadLetter, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		d, err := scanDeadLetter(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeadLetterFilter selects dead letters. Zero fields select everything.
type DeadLetterFilter struct {
	// BatchID keeps the dead letters of one batch.
	BatchID string
	// Kind keeps the dead letters of batches of one kind (ph, hazard).
	Kind string
	// Open keeps the dead letters not requeued.
	Open bool
	// FailedBefore keeps the dead letters that failed before it.
	FailedBefore time.Time
	// TaskIDs keeps the dead letters of these task IDs (every generation).
	TaskIDs []string
}

func (f DeadLetterFilter) where() (string, []any) {
	var ids []string
	if f.TaskIDs != nil {
		ids = f.TaskIDs
	}
	var before *time.Time
	if !f.FailedBefore.IsZero() {
		before = &f.FailedBefore
	}
	return `($1 = '' OR d.batch_id = $1)
		AND ($2 = '' OR d.batch_id IN (SELECT id FROM batch_runs WHERE kind = $2))
		AND (NOT $3 OR d.requeued_at IS NULL)
		AND ($4::timestamptz IS NULL OR d.failed_at < $4)
		AND ($5::text[] IS NULL OR d.task_id = ANY($5))`,
		[]any{f.BatchID, f.Kind, f.Open, before, ids}
}

// ListDeadLetters returns up to limit dead letters matching f, most recent
// failure first, and how many match in all.
func (s *Store) ListDeadLetters(ctx context.Context, f DeadLetterFilter, limit int) ([]DeadLetter, int, error) {
	where, args := f.where()
	var total int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters d WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, err
	}
	ds, err := collectDeadLetters(s.pool.Query(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters d WHERE `+where+`
		ORDER BY d.failed_at DESC, d.task_id, d.generation DESC LIMIT $6`, append(args, limit)...))
	return ds, total, err
}

// DeadLettersOf returns every dead letter of a task ID, newest generation first.
func (s *Store) DeadLettersOf(ctx context.Context, taskID string) ([]DeadLetter, error) {
	return collectDeadLetters(s.pool.Query(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters d
		WHERE d.task_id = $1 ORDER BY d.generation DESC`, taskID))
}

// UnknownTaskIDs returns those of ids that have no dead letter, in order.
func (s *Store) UnknownTaskIDs(ctx context.Context, ids []string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n)
		WHERE NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.task_id = u.id) ORDER BY n`, ids)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// RequeueCandidates returns the dead letters matching f that are not requeued
// and are the newest generation of their task ID (an older open generation
// can only be left by a requeue that died half-way; requeueing the newest
// covers it), oldest failure first.
func (s *Store) RequeueCandidates(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	f.Open = true
	where, args := f.where()
	return collectDeadLetters(s.pool.Query(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters d WHERE `+where+`
		AND NOT EXISTS (SELECT 1 FROM dead_letters n WHERE n.task_id = d.task_id AND n.generation > d.generation)
		ORDER BY d.failed_at, d.task_id`, args...))
}

// PurgeDeadLetters deletes the dead letters matching f and returns them.
// A filter that selects nothing specific is refused: purging everything
// needs an explicit selector.
func (s *Store) PurgeDeadLetters(ctx context.Context, f DeadLetterFilter) ([]DeadLetter, error) {
	if f.BatchID == "" && f.TaskIDs == nil && f.FailedBefore.IsZero() {
		return nil, errors.New("purge needs a selector: task IDs, a batch or an age")
	}
	where, args := f.where()
	return collectDeadLetters(s.pool.Query(ctx, `DELETE FROM dead_letters d WHERE `+where+` RETURNING `+deadLetterColumns, args...))
}

// ChunkRef names one piece of a chunk of one batch.
type ChunkRef struct {
	BatchID string
	Piece
}

// PendingChunksOfRunning returns those of refs whose chunk is still pending
// in a running batch: one query however many refs.
func (s *Store) PendingChunksOfRunning(ctx context.Context, refs []ChunkRef) (map[ChunkRef]bool, error) {
	ids := make([]string, len(refs))
	chunks, los, his := make([]int32, len(refs)), make([]int32, len(refs)), make([]int32, len(refs))
	for i, r := range refs {
		ids[i], chunks[i], los[i], his[i] = r.BatchID, int32(r.Chunk), int32(r.Lo), int32(r.Hi)
	}
	rows, err := s.pool.Query(ctx, `
		SELECT c.batch_id, c.chunk, c.lo, c.hi FROM chunk_runs c
		JOIN unnest($1::text[], $2::int[], $3::int[], $4::int[]) AS r(batch_id, chunk, lo, hi)
			ON r.batch_id = c.batch_id AND r.chunk = c.chunk AND r.lo = c.lo AND r.hi = c.hi
		JOIN batch_runs b ON b.id = c.batch_id
		WHERE c.status = 'pending' AND b.status = 'running'`, ids, chunks, los, his)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[ChunkRef]bool{}
	for rows.Next() {
		var r ChunkRef
		if err := rows.Scan(&r.BatchID, &r.Chunk, &r.Lo, &r.Hi); err != nil {
			return nil, err
		}
		out[r] = true
	}
	return out, rows.Err()
}

// ErrDeadLetterNotFound is returned for an unknown dead letter.
var ErrDeadLetterNotFound = errors.New("dead letter not found")

// NotRequeueableError says why a dead letter cannot be requeued.
type NotRequeueableError struct{ Reason string }

func (e *NotRequeueableError) Error() string { return e.Reason }

// Requeue is what RequeueDeadLetter did or, on a dry run, would do.
type Requeue struct {
	DeadLetter DeadLetter
	Batch      Batch
	// Reopened is true when the chunk was failed in a running batch and is
	// pending again, so the batch waits for it; in an ended batch the chunk
	// stays failed until the requeued task succeeds and heals the batch.
	Reopened bool
}

// RequeueDeadLetter requeues one open chunk dead letter in one transaction:
// it checks that the batch exists and the chunk is failed (or still pending
// in a running batch), reopens a failed chunk of a running batch, marks the
// dead letter requeued and calls enqueue before committing, so the dead
// letter is marked exactly when the fresh task is in the queue. With dryRun
// it only checks and changes nothing. Errors: ErrDeadLetterNotFound, a
// *NotRequeueableError, or enqueue's error (nothing changed).
func (s *Store) RequeueDeadLetter(ctx context.Context, k DeadLetterKey, dryRun bool, enqueue func(Batch, DeadLetter) error) (Requeue, error) {
	var r Requeue
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		d, err := scanDeadLetter(tx.QueryRow(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters d
			WHERE d.task_id = $1 AND d.generation = $2 FOR UPDATE`, k.TaskID, k.Generation))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrDeadLetterNotFound, k.TaskID)
		}
		if err != nil {
			return err
		}
		r.DeadLetter = d
		if d.RequeuedAt != nil {
			return &NotRequeueableError{fmt.Sprintf("already requeued at %s", d.RequeuedAt.UTC().Format(time.RFC3339))}
		}
		if d.BatchID == nil || d.Chunk == nil {
			return &NotRequeueableError{fmt.Sprintf("a %s task that is not a chunk of a batch cannot be requeued; purge it", d.Type)}
		}
		b, err := scanBatch(tx.QueryRow(ctx, `SELECT `+batchColumns+` FROM batch_runs WHERE id = $1 FOR UPDATE`, *d.BatchID))
		if errors.Is(err, ErrBatchNotFound) {
			return &NotRequeueableError{fmt.Sprintf("its batch %s is not recorded; purge it", *d.BatchID)}
		}
		if err != nil {
			return err
		}
		r.Batch = b
		if b.RowsDroppedAt != nil {
			return &NotRequeueableError{fmt.Sprintf("batch %s's rows were dropped by retention at %s; run a new batch instead, and purge the dead letter",
				b.ID, b.RowsDroppedAt.UTC().Format(time.RFC3339))}
		}
		var status string
		piece := Piece{*d.Chunk, d.Lo, d.Hi}
		err = tx.QueryRow(ctx, `SELECT status FROM chunk_runs WHERE batch_id = $1 AND chunk = $2 AND lo = $3 AND hi = $4 FOR UPDATE`,
			b.ID, *d.Chunk, d.Lo, d.Hi).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) {
			return &NotRequeueableError{fmt.Sprintf("batch %s has no %s; purge it", b.ID, piece)}
		}
		if err != nil {
			return err
		}
		switch {
		case status == ChunkFailed:
			r.Reopened = !b.Ended()
		case status == ChunkPending && !b.Ended():
		case status == ChunkSucceeded:
			return &NotRequeueableError{fmt.Sprintf("%s of batch %s has succeeded since; purge the dead letter", piece, b.ID)}
		default:
			return &NotRequeueableError{fmt.Sprintf("%s of %s batch %s is %s, not failed: re-running it would not change the batch; purge the dead letter",
				piece, b.Status, b.ID, status)}
		}
		if dryRun {
			return nil
		}
		if r.Reopened {
			if _, err := moveChunks(ctx, tx, `status = 'pending', finished_at = NULL`,
				`c.chunk = $2 AND c.lo = $3 AND c.hi = $4 AND c.status = 'failed'`, b.ID, *d.Chunk, d.Lo, d.Hi); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE dead_letters SET requeued_at = now() WHERE task_id = $1 AND generation = $2`,
			d.TaskID, d.Generation); err != nil {
			return err
		}
		return enqueue(b, d)
	})
	return r, err
}

// ChunkFailure is a failure of a batch's chunk that has an outcome: a piece
// split in halves, or a dead letter.
type ChunkFailure struct {
	// At is when it happened: the split piece's finish, or when the dead
	// letter was recorded.
	At time.Time
	// Split is true for a split piece, false for a dead letter.
	Split bool
	// Key identifies the failure: the dead letter's task ID and generation,
	// or the split piece's "chunk:lo-hi".
	Key   string
	Piece Piece
	// Cells is how many cells the piece had.
	Cells int
	// GridID is the cell of a dead letter of one cell.
	GridID *int64
	Error  string
	// Attempts is how many runs the piece had.
	Attempts int
}

// ChunkFailures returns the splits and dead letters of a batch at or after
// since, oldest first, at most limit.
func (s *Store) ChunkFailures(ctx context.Context, batchID string, since time.Time, limit int) ([]ChunkFailure, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT finished_at, true, chunk || ':' || lo || '-' || hi, chunk, lo, hi, cells, NULL::bigint, coalesce(error, ''), attempts
		FROM chunk_runs WHERE batch_id = $1 AND status = 'split' AND finished_at >= $2
		UNION ALL
		SELECT d.recorded_at, false, d.task_id || '#' || d.generation, coalesce(d.chunk, -1), d.lo, d.hi,
			CASE WHEN d.hi > 0 THEN d.hi - d.lo ELSE coalesce(c.cells, 0) END, d.grid_id, d.last_error, d.retries + 1
		FROM dead_letters d LEFT JOIN chunk_runs c ON c.batch_id = d.batch_id AND c.chunk = d.chunk AND c.lo = d.lo AND c.hi = d.hi
		WHERE d.batch_id = $1 AND d.recorded_at >= $2
		ORDER BY 1 LIMIT $3`, batchID, since, limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ChunkFailure, error) {
		var f ChunkFailure
		err := r.Scan(&f.At, &f.Split, &f.Key, &f.Piece.Chunk, &f.Piece.Lo, &f.Piece.Hi, &f.Cells, &f.GridID, &f.Error, &f.Attempts)
		return f, err
	})
}
