package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
//
// Its round trips to PostgreSQL are three, whatever the network between
// them (tests/bench measures a batch with 1 ms added each way): one pipeline
// begins the transaction and takes both locks, the COPY takes one, and one
// pipeline records the outcome, commits, and then reads the counts. The
// first chunk of a batch a connection writes takes one more: pgx describes
// the table's columns once per connection and table, and caches them.
func (s *Store) WriteChunk(ctx context.Context, kind string, step float64, firstYear int, series []grid.Series, o ChunkOutcome, allowEnded bool) (Transition, error) {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return Transition{}, err
	}
	// A connection left inside the transaction (an error midway) is closed
	// by Release, not reused: that rolls the transaction back.
	defer pc.Release()
	conn := pc.Conn()
	t, table, layout, status, err := beginChunkWrite(ctx, conn, o)
	if err == nil {
		err = checkChunkWrite(t, table, layout, status, firstYear, o, allowEnded)
	}
	var ids []int64
	var rows [][]byte
	if err == nil && writable(t, status, allowEnded) {
		// The rows' memory (about 1 MB a 500-cell chunk) is reused from one
		// chunk to the next: COPY has read it all when CopyFrom returns.
		buf := rowBuffers.Get().(*[]byte)
		defer rowBuffers.Put(buf)
		ids, rows, *buf, err = layout.encodeCells(*buf, series)
		if err != nil {
			err = fmt.Errorf("%w: chunk %d of %s: %w (the models file changed while it ran?)", ErrLayout, o.Chunk, o.BatchID, err)
		}
	}
	if err != nil || !writable(t, status, allowEnded) {
		// Nothing to write: end the transaction (rolled back either way).
		if _, rerr := conn.Exec(ctx, "ROLLBACK"); err == nil {
			err = rerr
		}
		return t, err
	}
	_, err = conn.CopyFrom(ctx, pgx.Identifier{table}, []string{"step", "grid_id", "series"}, &chunkRows{step: step, ids: ids, rows: rows})
	if err != nil {
		return t, fmt.Errorf("copy %d cells' series into %s: %w", len(ids), table, err)
	}
	// The outcome, the commit and then the counts as committed, in one
	// pipeline: the count runs after the commit (see countChunks).
	b := &pgx.Batch{}
	b.Queue(moveChunksSQL(markChunkSet, markChunkWhere), markChunkArgs(o, ChunkSucceeded)...)
	b.Queue("COMMIT")
	b.Queue(countOpenChunksSQL, o.BatchID)
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	moved, err := collectMoved(br.Query())
	if err != nil {
		return t, fmt.Errorf("record %s of %s: %w", o.piece(), o.BatchID, err)
	}
	if _, err := br.Exec(); err != nil {
		return t, fmt.Errorf("commit %s of %s: %w", o.piece(), o.BatchID, err)
	}
	var done, total int
	if err := br.QueryRow().Scan(&done, &total); err != nil {
		return t, fmt.Errorf("count the chunks of %s: %w", o.BatchID, err)
	}
	if t.Changed = len(moved) > 0; t.Changed {
		t.Done, t.Total = done, total
	}
	return t, br.Close()
}

// rowBuffers holds WriteChunk's row buffers between chunks.
var rowBuffers = sync.Pool{New: func() any { return new([]byte) }}

// chunkRows is WriteChunk's COPY source: one row of values reused for every
// cell, the step boxed once and the grid id passed by pointer, so that a
// row costs no allocation beyond its series' slice header.
type chunkRows struct {
	step any
	ids  []int64
	rows [][]byte
	next int
	row  [3]any
}

func (c *chunkRows) Next() bool { c.next++; return c.next <= len(c.ids) }

func (c *chunkRows) Values() ([]any, error) {
	i := c.next - 1
	c.row = [3]any{c.step, &c.ids[i], c.rows[i]}
	return c.row[:], nil
}

func (c *chunkRows) Err() error { return nil }

// beginChunkWrite begins WriteChunk's transaction on conn and takes its
// locks in one round trip: the batch row's KEY SHARE (lockBatchForChunk)
// and the chunk row's FOR UPDATE. status is the chunk's ("" when the batch
// has no such chunk).
func beginChunkWrite(ctx context.Context, conn *pgx.Conn, o ChunkOutcome) (t Transition, table string, layout SeriesLayout, status string, err error) {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(lockBatchForChunkSQL, o.BatchID)
	b.Queue(`SELECT status FROM chunk_runs WHERE batch_id = $1 AND chunk = $2 AND lo = $3 AND hi = $4 FOR UPDATE`, o.BatchID, o.Chunk, o.Lo, o.Hi)
	br := conn.SendBatch(ctx, b)
	defer br.Close()
	if _, err = br.Exec(); err != nil {
		return t, "", layout, "", err
	}
	t, table, layout, err = scanBatchForChunk(br.QueryRow(), o.BatchID)
	if err != nil {
		return t, "", layout, "", err
	}
	err = br.QueryRow().Scan(&status)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		status, err = "", nil
	case err != nil:
		return t, "", layout, "", fmt.Errorf("lock %s of %s: %w", o.piece(), o.BatchID, err)
	}
	return t, table, layout, status, br.Close()
}

// checkChunkWrite returns WriteChunk's errors once the locks are held: a
// batch without a table for its rows, a chunk it does not have, series of
// another layout. It checks nothing of a batch that has ended (unless
// allowEnded): nothing is written then.
func checkChunkWrite(t Transition, table string, layout SeriesLayout, status string, firstYear int, o ChunkOutcome, allowEnded bool) error {
	switch {
	case !t.BatchRunning && !allowEnded:
		return nil
	case table == "" || !layout.valid():
		return fmt.Errorf("%w: %s has no table for its rows (retention dropped them, or it started before the schema had them): run it again",
			ErrBatchNotFound, o.BatchID)
	case firstYear != layout.FirstYear:
		return fmt.Errorf("%w: chunk %d of %s: series from %d, the batch's from %d (the models file changed while it ran)",
			ErrLayout, o.Chunk, o.BatchID, firstYear, layout.FirstYear)
	case status == "":
		return fmt.Errorf("%w: %s has no %s", ErrBatchNotFound, o.BatchID, o.piece())
	}
	return nil
}

// writable reports whether WriteChunk writes the chunk: its batch runs (or
// allowEnded) and the chunk is pending or failed, not done already (a
// duplicate delivery), timed out or cancelled.
func writable(t Transition, status string, allowEnded bool) bool {
	return (t.BatchRunning || allowEnded) && (status == ChunkPending || status == ChunkFailed)
}

// ErrLayout is returned (wrapped) by WriteChunk for series that do not fit
// the batch's layout.
var ErrLayout = errors.New("series do not fit the batch's layout")
