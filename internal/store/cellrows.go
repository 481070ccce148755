package store

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// StoredCell is one cell's rows as stored (SeriesLayout): for a batch, its
// row; for the published values of a kind, the row of each published batch
// that has the cell, newest publication first.
type StoredCell struct {
	GridID int64
	Rows   []StoredRow
}

// StoredRow is one batch's row of a cell: its series back to back, 8
// big-endian bytes a value, as Layout says.
type StoredRow struct {
	BatchID string
	Layout  SeriesLayout
	Series  []byte
}

// Series returns the raw values of the named series (8 big-endian bytes a
// year) and the year of the first, from the first row that has it: the
// newest publication's, as <kind>_timeseries shows. ok is false when no
// row has it.
func (c *StoredCell) Series(name string) (raw []byte, firstYear int, ok bool) {
	for _, r := range c.Rows {
		if i := r.Layout.index(name); i >= 0 {
			n := 8 * r.Layout.Years
			return r.Series[i*n : (i+1)*n : (i+1)*n], r.Layout.FirstYear, true
		}
	}
	return nil, 0, false
}

// CellReader reads the rows an ExportQuery selects cell by cell, in grid
// order, without decoding them: what enqueuer diff compares. Open it with
// Store.ReadCells; Close it. A goroutine reads the rows from PostgreSQL
// into slabs of cells while the caller works through the last ones, so
// that PostgreSQL and the caller run side by side.
type CellReader struct {
	what    string
	conn    *pgx.Conn
	tx      pgx.Tx
	rows    pgx.Rows
	sources map[string]cellSource
	cancel  context.CancelFunc
	// full hands filled slabs to Next, free gives them back; read ends
	// with the reader's error (nil at the end of the rows).
	full, free chan *cellSlab
	read       chan error
	slabBytes  int
	cur        *cellSlab
	i          int
	err        error
	closed     bool
}

// cellSlab is some cells read, their rows and their series' bytes.
type cellSlab struct {
	cells  []StoredCell
	counts []int // each cell's rows
	rows   []StoredRow
	spans  [][2]int // each row's series in bytes, which may move as it grows
	bytes  []byte
}

// cellSlabs is how many slabs a reader has: one being filled while the
// others are read.
const cellSlabs = 3

// cellSlabBytes is about how many bytes of series a slab holds: 4 MiB,
// some 2,000 cells of 3 × 80 years (a variable for the tests).
var cellSlabBytes = 4 << 20

// cellSource is a batch whose rows a CellReader reads: their layout and
// the rank of its publication (0 the newest).
type cellSource struct {
	id     string
	layout SeriesLayout
	rank   int
}

// ReadCells opens a reader of the rows q selects (its Scenario is not
// applied: a cell's rows hold every series), cell by cell in grid order,
// in one read-only REPEATABLE READ transaction: one snapshot, and memory
// bounded by cellSlabs slabs of about cellSlabBytes. A batch's rows are read
// on its index by cell (IndexBatchRows), the published ones on their
// partitions' (publishing makes them), merged: nothing is sorted. A batch
// that does not exist returns an error wrapping ErrBatchNotFound; one
// whose rows retention dropped, one wrapping ErrNoSeries.
func (s *Store) ReadCells(ctx context.Context, q ExportQuery) (*CellReader, error) {
	ctx, cancel := context.WithCancel(ctx)
	conn, err := s.readingConn(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		cancel()
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	r := &CellReader{conn: conn, tx: tx, sources: map[string]cellSource{}, cancel: cancel,
		slabBytes: cellSlabBytes, full: make(chan *cellSlab, cellSlabs), free: make(chan *cellSlab, cellSlabs), read: make(chan error, 1)}
	if err := r.open(ctx, q); err != nil {
		r.read <- nil
		close(r.full)
		r.Close()
		return nil, err
	}
	for range cellSlabs {
		r.free <- &cellSlab{}
	}
	go r.fill(ctx)
	return r, nil
}

func (r *CellReader) open(ctx context.Context, q ExportQuery) error {
	// The region's condition hides from the planner that a range of the
	// index holds the rows: it would sort them, a gigabyte for 480,000
	// cells, rather than walk it. In parallel, the rows would cross
	// processes once more. The query lasts as long as the caller reads,
	// bounded as an export's sort is.
	if _, err := r.tx.Exec(ctx, `SET LOCAL enable_sort = off; SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL statement_timeout = '`+exportSortTimeout+`'`); err != nil {
		return err
	}
	where, args := exportWhere(q, "")
	if q.BatchID != "" {
		table, l, err := batchRowsTable(ctx, r.tx, q.BatchID)
		if err != nil {
			return err
		}
		if !l.valid() {
			return fmt.Errorf("batch %s has no series layout", q.BatchID)
		}
		r.sources[q.BatchID] = cellSource{id: q.BatchID, layout: l}
		r.what = "the rows of batch " + q.BatchID
		r.rows, err = r.tx.Query(ctx, `SELECT grid_id, batch_id, series FROM `+ident(table)+` WHERE `+where+` ORDER BY grid_id`, args...)
		return err
	}
	if _, err := ResultsTable(q.Kind); err != nil {
		return err
	}
	rows, err := r.tx.Query(ctx, `SELECT batch_id, series_names, first_year, years FROM published_batches
		WHERE kind = $1 AND series_names IS NOT NULL ORDER BY published_at DESC, batch_id`, q.Kind)
	if err != nil {
		return err
	}
	var id string
	var l SeriesLayout
	var ids []string
	if _, err := pgx.ForEachRow(rows, append([]any{&id}, l.scan()...), func() error {
		r.sources[id] = cellSource{id: id, layout: l, rank: len(ids)}
		ids = append(ids, id)
		return nil
	}); err != nil {
		return err
	}
	r.what = "the published " + q.Kind + " values"
	args = append(args, ids)
	r.rows, err = r.tx.Query(ctx, `SELECT grid_id, batch_id, series FROM `+ident(q.Kind+"_results")+`
		WHERE `+where+` AND batch_id = ANY($`+strconv.Itoa(len(args))+`) ORDER BY grid_id`, args...)
	return err
}

// fill reads the rows into slabs, a cell's rows in one slab, and hands
// them to Next until the rows end, an error or Close.
func (r *CellReader) fill(ctx context.Context) {
	defer close(r.full)
	err := r.fillSlabs(ctx)
	r.rows.Close()
	if err == nil {
		err = r.rows.Err()
	}
	if err != nil && ctx.Err() == nil {
		err = fmt.Errorf("read %s: %w", r.what, err)
	}
	r.read <- err
}

func (r *CellReader) fillSlabs(ctx context.Context) error {
	var slab *cellSlab
	take := func() error {
		select {
		case slab = <-r.free:
		case <-ctx.Done():
			return ctx.Err()
		}
		slab.cells, slab.counts, slab.rows, slab.spans, slab.bytes = slab.cells[:0], slab.counts[:0], slab.rows[:0], slab.spans[:0], slab.bytes[:0]
		return nil
	}
	if err := take(); err != nil {
		return err
	}
	var id int64
	var batch, series pgtype.DriverBytes
	for r.rows.Next() {
		if err := r.rows.Scan(&id, &batch, &series); err != nil {
			return err
		}
		src, ok := r.sources[string(batch)]
		if !ok {
			return fmt.Errorf("cell %d: batch %s has no recorded layout", id, batch)
		}
		if err := src.layout.checkRow(series); err != nil {
			return fmt.Errorf("cell %d of batch %s: %w", id, batch, err)
		}
		if n := len(slab.cells); n == 0 || slab.cells[n-1].GridID != id {
			if len(slab.bytes) >= r.slabBytes {
				if err := r.send(ctx, slab); err != nil {
					return err
				}
				if err := take(); err != nil {
					return err
				}
			}
			slab.cells = append(slab.cells, StoredCell{GridID: id})
			slab.counts = append(slab.counts, 0)
		}
		slab.counts[len(slab.counts)-1]++
		start := len(slab.bytes)
		slab.bytes = append(slab.bytes, series...)
		slab.spans = append(slab.spans, [2]int{start, len(slab.bytes)})
		slab.rows = append(slab.rows, StoredRow{BatchID: src.id, Layout: src.layout})
	}
	if len(slab.cells) > 0 {
		return r.send(ctx, slab)
	}
	return nil
}

// send points the rows of a filled slab at their series, gives each cell
// its rows, newest publication first, and hands the slab to Next.
func (r *CellReader) send(ctx context.Context, slab *cellSlab) error {
	for i, sp := range slab.spans {
		slab.rows[i].Series = slab.bytes[sp[0]:sp[1]:sp[1]]
	}
	k := 0
	for i, n := range slab.counts {
		rows := slab.rows[k : k+n : k+n]
		for a := 1; a < n; a++ {
			for b := a; b > 0 && r.sources[rows[b-1].BatchID].rank > r.sources[rows[b].BatchID].rank; b-- {
				rows[b-1], rows[b] = rows[b], rows[b-1]
			}
		}
		slab.cells[i].Rows = rows
		k += n
	}
	select {
	case r.full <- slab:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Next reads the next cell; false at the end or on an error (Err).
func (r *CellReader) Next() bool {
	for r.cur == nil || r.i+1 >= len(r.cur.cells) {
		if r.cur != nil {
			r.free <- r.cur
			r.cur = nil
		}
		slab, ok := <-r.full
		if !ok {
			r.err = <-r.read
			r.read <- r.err // for Close
			return false
		}
		r.cur, r.i = slab, -1
	}
	r.i++
	return true
}

// Cell is the cell Next read: valid until the next call of Next.
func (r *CellReader) Cell() *StoredCell { return &r.cur.cells[r.i] }

// Err returns the error that stopped Next, if any.
func (r *CellReader) Err() error { return r.err }

// Close stops the reading and ends the reader's transaction.
func (r *CellReader) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.cancel()
	for range r.full { // the slabs filled already, and the end
	}
	<-r.read
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = r.tx.Rollback(ctx) // read-only: nothing to keep
	_ = r.conn.Close(ctx)
}

// readBuffer is how many bytes a CellReader's connection reads from its
// socket at once; pgx's own reads are 8 KiB, a system call each.
const readBuffer = 256 << 10

// readingConn opens a connection of its own, configured as the pool's,
// that reads its socket readBuffer bytes at a time: a gigabyte of rows
// takes 4,000 reads rather than 120,000.
func (s *Store) readingConn(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.pool.Config().ConnConfig.Copy()
	after := cfg.AfterNetConnect
	cfg.AfterNetConnect = func(ctx context.Context, c *pgconn.Config, conn net.Conn) (net.Conn, error) {
		if after != nil {
			var err error
			if conn, err = after(ctx, c, conn); err != nil {
				return nil, err
			}
		}
		return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readBuffer)}, nil
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// bufferedConn is a net.Conn whose reads go through a buffer.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
