package store

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// ExportQuery selects the rows Export streams: one batch's own rows, or the
// published values of a kind at a step, optionally only the cells of a
// region and one scenario.
type ExportQuery struct {
	// BatchID selects that batch's own rows, published or not. Empty
	// selects the published values of Kind (<kind>_timeseries) at Step.
	BatchID string
	// Kind is the model kind; with BatchID it must be the batch's kind.
	Kind string
	// Step is the lattice step in degrees of the rows; with BatchID it must
	// be the batch's step.
	Step float64
	// Region, when its lattice is set, keeps only the cells in its rows and
	// columns.
	Region grid.Region
	// Scenario, when not empty, keeps only that scenario's rows.
	Scenario string
}

// ExportRow is one streamed row: the series of one cell and scenario,
// Values[0] being the value of FirstYear. Values is reused for the next row;
// copy it to keep it.
type ExportRow struct {
	GridID    int64
	Scenario  string
	FirstYear int
	Values    []float64
}

// exportFetch is how many rows (cells) one FETCH returns: about 4 MiB of
// 3 × 80-year series, so that memory stays bounded and round trips cheap.
const exportFetch = 2048

// exportBuffers is how many fetched batches of rows are in memory at once:
// one being read from PostgreSQL while the others are handed to fn.
const exportBuffers = 3

// exportSortMem is the work_mem of the export's transaction, and
// exportSortTimeout the statement_timeout of its first FETCH: the sort of
// a batch whose own rows are not indexed yet (an unpublished batch) takes
// seconds per 480,000 cells, longer than a statement's usual bound.
const (
	exportSortMem     = "64MB"
	exportSortTimeout = "30min"
)

// Export streams the series q selects to fn, in grid_id order, then
// scenario, reading the rows through a cursor in one read-only REPEATABLE
// READ transaction: fn sees one snapshot, and memory stays bounded (a few
// batches of exportFetch rows) however many rows there are. The next batch
// is fetched while fn works through the last, so PostgreSQL and fn run side
// by side. For the published values, each cell's rows come newest
// publication first, and each scenario's series is taken from the first
// that has it, as <kind>_timeseries does. Each FETCH is bounded by the
// connection's statement_timeout, but the first, which may sort the rows
// of an unpublished batch, by exportSortTimeout. An error of fn stops the
// stream and is returned as is. A batch that does not exist returns an
// error wrapping ErrBatchNotFound; one whose rows retention dropped, one
// wrapping ErrNoSeries.
func (s *Store) Export(ctx context.Context, q ExportQuery, fn func(ExportRow) error) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	// Rollback ends the transaction even once ctx is done.
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only: nothing to keep
	src, err := exportSource(ctx, tx, q)
	if err != nil || src.query == "" {
		return err
	}
	if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '`+exportSortMem+`'; SET LOCAL statement_timeout = '`+exportSortTimeout+`'`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DECLARE gridbatch_export NO SCROLL CURSOR FOR `+src.query, src.args...); err != nil {
		return fmt.Errorf("read %s: %w", src.what, err)
	}

	// The fetcher fills free batches and hands them over full; fn's side
	// gives them back. stop ends the fetcher between two FETCHes.
	free := make(chan *exportBatch, exportBuffers)
	for range exportBuffers {
		free <- &exportBatch{}
	}
	full := make(chan *exportBatch, exportBuffers)
	stop := make(chan struct{})
	fetched := make(chan error, 1)
	go func() {
		defer close(full)
		first := true
		for {
			var b *exportBatch
			select {
			case b = <-free:
			case <-stop:
				fetched <- nil
				return
			}
			err := b.fetch(ctx, tx)
			if err == nil && first {
				// The sort is done: the next FETCHes have the usual bound.
				first = false
				_, err = tx.Exec(ctx, `SET LOCAL statement_timeout TO DEFAULT`)
			}
			if err != nil {
				fetched <- fmt.Errorf("read %s: %w", src.what, err)
				return
			}
			if len(b.rows) > 0 {
				full <- b
			}
			if len(b.rows) < exportFetch {
				fetched <- nil
				return
			}
		}
	}()
	c := exportCells{src: src, fn: fn}
	for b := range full {
		err = c.take(b)
		free <- b
		if err != nil {
			break
		}
	}
	if err == nil {
		err = c.flush()
	}
	close(stop)
	for range full { // the fetcher's last batch, if any
	}
	if ferr := <-fetched; err == nil {
		err = ferr
	}
	return err
}

// exportSrc is what Export reads: its query (rows of grid_id, batch_id
// and series, in grid_id order and, for the published values, newest
// publication first), the layout of each batch it may return, and the
// scenario it keeps (all when empty).
type exportSrc struct {
	what, query string
	args        []any
	layouts     map[string]SeriesLayout
	scenario    string
}

// exportSource returns what q reads: the batch's own table, or the
// published rows of <kind>_results. An empty query selects nothing (a
// batch without q's scenario).
func exportSource(ctx context.Context, tx pgx.Tx, q ExportQuery) (exportSrc, error) {
	src := exportSrc{layouts: map[string]SeriesLayout{}, scenario: q.Scenario}
	if q.BatchID != "" {
		table, l, err := batchRowsTable(ctx, tx, q.BatchID)
		if err != nil {
			return src, err
		}
		if q.Scenario != "" && l.index(q.Scenario) < 0 {
			return src, nil
		}
		src.layouts[q.BatchID] = l
		where, args := exportWhere(q, "")
		src.what, src.args = "the rows of batch "+q.BatchID, args
		src.query = `SELECT grid_id, batch_id, series FROM ` + ident(table) + ` WHERE ` + where + ` ORDER BY grid_id`
		return src, nil
	}
	if _, err := ResultsTable(q.Kind); err != nil {
		return src, err
	}
	rows, err := tx.Query(ctx, `SELECT batch_id, series_names, first_year, years FROM published_batches
		WHERE kind = $1 AND series_names IS NOT NULL`, q.Kind)
	if err != nil {
		return src, err
	}
	var id string
	var l SeriesLayout
	if _, err := pgx.ForEachRow(rows, append([]any{&id}, l.scan()...), func() error {
		src.layouts[id] = l
		return nil
	}); err != nil {
		return src, err
	}
	where, args := exportWhere(q, "r.")
	if q.Scenario != "" {
		args = append(args, q.Scenario)
		where += ` AND $` + strconv.Itoa(len(args)) + ` = ANY(p.series_names)`
	}
	parent := q.Kind + "_results"
	src.what, src.args = "the published "+q.Kind+" values", args
	src.query = `SELECT r.grid_id, r.batch_id, r.series FROM ` + ident(parent) + ` r
		JOIN published_batches p ON p.batch_id = r.batch_id
		WHERE ` + where + ` ORDER BY r.grid_id, p.published_at DESC`
	return src, nil
}

// exportWhere returns the condition and arguments of q's rows, on columns
// prefixed by prefix. A region is a range of grid ids (its first to its
// last cell) and a range of columns (grid_id modulo the lattice's
// columns), so PostgreSQL reads it on each batch's index by grid_id.
func exportWhere(q ExportQuery, prefix string) (string, []any) {
	where := prefix + `step = $1`
	args := []any{q.Step}
	if r := q.Region; r.Lattice.Cols > 0 {
		l := r.Lattice
		args = append(args, l.GridID(r.Row0, r.Col0), l.GridID(r.Row1-1, r.Col1-1), int64(l.Cols), int64(r.Col0), int64(r.Col1-1))
		where += ` AND ` + prefix + `grid_id BETWEEN $2 AND $3 AND ` + prefix + `grid_id % $4 BETWEEN $5 AND $6`
	}
	return where, args
}

// exportBatch is the rows of one FETCH, their series in one buffer, both
// reused by the next FETCH into the batch.
type exportBatch struct {
	rows  []exportRaw
	bytes []byte
	names map[string]string // batch ids, so that each is one string
}

// exportRaw is one row as fetched: a cell's series of one batch.
type exportRaw struct {
	gridID  int64
	batchID string
	series  []byte
}

// fetch reads the next exportFetch rows of the cursor into b.
func (b *exportBatch) fetch(ctx context.Context, tx pgx.Tx) error {
	b.rows, b.bytes = b.rows[:0], b.bytes[:0]
	if b.names == nil {
		b.names = map[string]string{}
	}
	rows, err := tx.Query(ctx, `FETCH FORWARD `+strconv.Itoa(exportFetch)+` FROM gridbatch_export`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var spans [][2]int // each row's series in b.bytes, which may move as it grows
	var id int64
	var batch, series pgtype.DriverBytes
	for rows.Next() {
		if err := rows.Scan(&id, &batch, &series); err != nil {
			return err
		}
		name, ok := b.names[string(batch)]
		if !ok {
			name = string(batch)
			b.names[name] = name
		}
		start := len(b.bytes)
		b.bytes = append(b.bytes, series...)
		spans = append(spans, [2]int{start, len(b.bytes)})
		b.rows = append(b.rows, exportRaw{gridID: id, batchID: name})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, sp := range spans {
		b.rows[i].series = b.bytes[sp[0]:sp[1]:sp[1]]
	}
	return nil
}

// exportCells turns fetched rows into the series fn gets: a cell's rows
// (one per batch, newest first) are gathered, then each scenario's series
// is taken from the first row that has it, in scenario order.
type exportCells struct {
	src    exportSrc
	fn     func(ExportRow) error
	cell   []exportRaw // the rows of the cell being gathered
	pick   []exportPick
	values []float64
}

// exportPick is one series of a cell: which row holds it, and where.
type exportPick struct {
	name   string
	row    int
	layout SeriesLayout
	index  int
}

// take gathers the rows of b, handing each cell complete to fn; the last
// cell may go on in the next FETCH, so its rows are copied out of b.
func (c *exportCells) take(b *exportBatch) error {
	for _, r := range b.rows {
		if len(c.cell) > 0 && c.cell[0].gridID != r.gridID {
			if err := c.flush(); err != nil {
				return err
			}
		}
		c.cell = append(c.cell, r)
	}
	// The last cell may go on in the next FETCH: copy its rows out of b,
	// whose buffer the next FETCH reuses.
	n := 0
	for _, r := range c.cell {
		n += len(r.series)
	}
	carry := make([]byte, 0, n)
	for i, r := range c.cell {
		start := len(carry)
		carry = append(carry, r.series...)
		c.cell[i].series = carry[start:len(carry):len(carry)]
	}
	return nil
}

// flush hands the gathered cell's series to fn.
func (c *exportCells) flush() error {
	if len(c.cell) == 0 {
		return nil
	}
	c.pick = c.pick[:0]
	for ri, r := range c.cell {
		l, ok := c.src.layouts[r.batchID]
		if !ok {
			return fmt.Errorf("cell %d: batch %s has no recorded layout", r.gridID, r.batchID)
		}
		if err := l.checkRow(r.series); err != nil {
			return fmt.Errorf("cell %d of batch %s: %w", r.gridID, r.batchID, err)
		}
		for i, name := range l.Names {
			if c.src.scenario != "" && name != c.src.scenario {
				continue
			}
			if slices.ContainsFunc(c.pick, func(p exportPick) bool { return p.name == name }) {
				continue // a newer publication has it
			}
			c.pick = append(c.pick, exportPick{name: name, row: ri, layout: l, index: i})
		}
	}
	slices.SortFunc(c.pick, func(a, b exportPick) int { return strings.Compare(a.name, b.name) })
	id := c.cell[0].gridID
	for _, p := range c.pick {
		c.values = p.layout.series(c.values[:0], c.cell[p.row].series, p.index)
		if err := c.fn(ExportRow{GridID: id, Scenario: p.name, FirstYear: p.layout.FirstYear, Values: c.values}); err != nil {
			return err
		}
	}
	c.cell = c.cell[:0]
	return nil
}

// PublishedExtent returns the smallest bbox that holds the bboxes of the
// batches of kind at step whose rows are published (and not dropped): every
// published value of kind at step lies in it. ok is false when there are
// none.
func (s *Store) PublishedExtent(ctx context.Context, kind string, step float64) (b grid.BBox, ok bool, err error) {
	var lonMin, latMin, lonMax, latMax *float64
	err = s.pool.QueryRow(ctx, `SELECT min(b.lon_min), min(b.lat_min), max(b.lon_max), max(b.lat_max)
		FROM batch_runs b JOIN published_batches p ON p.batch_id = b.id
		WHERE p.kind = $1 AND b.step = $2 AND b.rows_dropped_at IS NULL`, kind, step).Scan(&lonMin, &latMin, &lonMax, &latMax)
	if err != nil || lonMin == nil {
		return grid.BBox{}, false, err
	}
	return grid.BBox{LonMin: *lonMin, LatMin: *latMin, LonMax: *lonMax, LatMax: *latMax}, true, nil
}

// PublishedSteps returns the grid steps at which kind has published values,
// ascending: what to suggest to a reader who asked at another step.
func (s *Store) PublishedSteps(ctx context.Context, kind string) ([]float64, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT b.step FROM batch_runs b JOIN published_batches p ON p.batch_id = b.id
		WHERE p.kind = $1 ORDER BY 1`, kind)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[float64])
}
