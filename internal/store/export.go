package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// exportFetch is how many rows one FETCH returns: about 1.4 MiB of 80-year
// series, so that memory stays bounded and round trips cheap.
const exportFetch = 2048

// exportBuffers is how many fetched batches of rows are in memory at once:
// one being read from PostgreSQL while the others are handed to fn.
const exportBuffers = 3

// exportSortMem is the work_mem of the export's transaction, and
// exportSortTimeout the statement_timeout of its first FETCH: the sort of
// a batch whose own rows are not indexed yet (an unpublished batch) takes
// about 10 s per 480,000 cells, longer than a statement's usual bound.
const (
	exportSortMem     = "64MB"
	exportSortTimeout = "30min"
)

// Export streams the rows q selects to fn, in grid_id order, then scenario,
// reading them through a cursor in one read-only REPEATABLE READ
// transaction: fn sees one snapshot, and memory stays bounded (a few
// batches of exportFetch rows) however many rows there are. The next batch
// is fetched while fn works through the last, so PostgreSQL and fn run side
// by side. Each FETCH is bounded by the connection's statement_timeout, but
// the first, which may sort the rows of an unpublished batch, by
// exportSortTimeout. An error of fn
// stops the stream and is returned as is. A batch that does not exist
// returns an error wrapping ErrBatchNotFound; one whose rows retention
// dropped, one wrapping ErrNoSeries.
func (s *Store) Export(ctx context.Context, q ExportQuery, fn func(ExportRow) error) error {
	tx, err := s.Pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	// Rollback ends the transaction even once ctx is done.
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only: nothing to keep
	table, err := exportTable(ctx, tx, q)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SET LOCAL work_mem = '`+exportSortMem+`'; SET LOCAL statement_timeout = '`+exportSortTimeout+`'`); err != nil {
		return err
	}
	where, args := exportWhere(q)
	if _, err := tx.Exec(ctx, `DECLARE gridbatch_export NO SCROLL CURSOR FOR
		SELECT grid_id, scenario, first_year, series FROM `+ident(table)+`
		WHERE `+where+` ORDER BY grid_id, scenario`, args...); err != nil {
		return fmt.Errorf("read %s: %w", table, err)
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
				fetched <- fmt.Errorf("read %s: %w", table, err)
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
	for b := range full {
		for _, r := range b.rows {
			if err = fn(r); err != nil {
				break
			}
		}
		free <- b
		if err != nil {
			break
		}
	}
	close(stop)
	for range full { // the fetcher's last batch, if any
	}
	if ferr := <-fetched; err == nil {
		err = ferr
	}
	return err
}

// exportBatch is the rows of one FETCH; the rows' Values are slices of
// values, both reused by the next FETCH into the batch.
type exportBatch struct {
	rows   []ExportRow
	values []float64
	names  map[string]string // scenario names, so that each is one string
}

// fetch reads the next exportFetch rows of the cursor into b, decoding
// the binary format directly (pgx's generic array decoder costs as much as
// PostgreSQL's side of the read).
func (b *exportBatch) fetch(ctx context.Context, tx pgx.Tx) error {
	b.rows, b.values = b.rows[:0], b.values[:0]
	if b.names == nil {
		b.names = map[string]string{}
	}
	rows, err := tx.Query(ctx, `FETCH FORWARD `+strconv.Itoa(exportFetch)+` FROM gridbatch_export`)
	if err != nil {
		return err
	}
	defer rows.Close()
	raw := rawExportable(rows.FieldDescriptions())
	var spans [][2]int // each row's values in b.values, which may move as it grows
	for rows.Next() {
		var r ExportRow
		start := len(b.values)
		if raw {
			v := rows.RawValues()
			if len(v[0]) != 8 || len(v[2]) != 2 {
				return fmt.Errorf("export: unexpected binary grid_id or first_year (%d, %d bytes)", len(v[0]), len(v[2]))
			}
			r.GridID = int64(binary.BigEndian.Uint64(v[0]))
			r.FirstYear = int(int16(binary.BigEndian.Uint16(v[2])))
			name, ok := b.names[string(v[1])]
			if !ok {
				name = string(v[1])
				b.names[name] = name
			}
			r.Scenario = name
			if b.values, err = appendFloat8Array(b.values, v[3]); err != nil {
				return fmt.Errorf("cell %d %s: %w", r.GridID, r.Scenario, err)
			}
		} else {
			var first int16
			var vals []float64
			if err := rows.Scan(&r.GridID, &r.Scenario, &first, &vals); err != nil {
				return err
			}
			r.FirstYear = int(first)
			b.values = append(b.values, vals...)
		}
		spans = append(spans, [2]int{start, len(b.values)})
		b.rows = append(b.rows, r)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for i, sp := range spans {
		b.rows[i].Values = b.values[sp[0]:sp[1]:sp[1]]
	}
	return nil
}

// rawExportable reports whether the columns of an export's FETCH come in
// the formats fetch decodes: int8, text (either format: the same bytes),
// int2 and float8[], the numbers in binary.
func rawExportable(fds []pgconn.FieldDescription) bool {
	want := []uint32{pgtype.Int8OID, pgtype.TextOID, pgtype.Int2OID, pgtype.Float8ArrayOID}
	if len(fds) != len(want) {
		return false
	}
	for i, fd := range fds {
		if fd.DataTypeOID != want[i] || (fd.Format != pgtype.BinaryFormatCode && fd.DataTypeOID != pgtype.TextOID) {
			return false
		}
	}
	return true
}

// appendFloat8Array appends the elements of a one-dimensional float8[] in
// the binary format of array_send (see encodeFloat8Array) to dst; a NULL
// element is NaN, and NULL or an empty array appends nothing.
func appendFloat8Array(dst []float64, b []byte) ([]float64, error) {
	if b == nil {
		return dst, nil
	}
	if len(b) < 12 {
		return dst, fmt.Errorf("float8[] of %d bytes", len(b))
	}
	ndim := binary.BigEndian.Uint32(b)
	if ndim == 0 {
		return dst, nil
	}
	if ndim != 1 || len(b) < 20 || binary.BigEndian.Uint32(b[8:]) != pgtype.Float8OID {
		return dst, fmt.Errorf("not a one-dimensional float8[] (%d dimensions)", ndim)
	}
	n := int(binary.BigEndian.Uint32(b[12:]))
	b = b[20:]
	dst = slices.Grow(dst, n)
	for range n {
		if len(b) < 4 {
			return dst, errors.New("float8[] ends early")
		}
		size := int32(binary.BigEndian.Uint32(b))
		b = b[4:]
		if size == -1 {
			dst = append(dst, math.NaN())
			continue
		}
		if size != 8 || len(b) < 8 {
			return dst, fmt.Errorf("float8[] element of %d bytes", size)
		}
		dst = append(dst, math.Float64frombits(binary.BigEndian.Uint64(b)))
		b = b[8:]
	}
	return dst, nil
}

// exportTable returns the table or view q reads: the batch's own table, or
// <kind>_timeseries.
func exportTable(ctx context.Context, tx pgx.Tx, q ExportQuery) (string, error) {
	if q.BatchID == "" {
		return ResultsTable(q.Kind)
	}
	return batchRowsTable(ctx, tx, q.BatchID)
}

// exportWhere returns the condition and arguments of q's rows. A region
// is a range of grid ids (its first to its last cell) and a range of
// columns (grid_id modulo the lattice's columns); both are conditions on
// the view's DISTINCT ON columns, so PostgreSQL applies them below it.
func exportWhere(q ExportQuery) (string, []any) {
	where := `step = $1`
	args := []any{q.Step}
	if r := q.Region; r.Lattice.Cols > 0 {
		l := r.Lattice
		args = append(args, l.GridID(r.Row0, r.Col0), l.GridID(r.Row1-1, r.Col1-1), int64(l.Cols), int64(r.Col0), int64(r.Col1-1))
		where += ` AND grid_id BETWEEN $2 AND $3 AND grid_id % $4 BETWEEN $5 AND $6`
	}
	if q.Scenario != "" {
		args = append(args, q.Scenario)
		where += ` AND scenario = $` + strconv.Itoa(len(args))
	}
	return where, args
}

// PublishedExtent returns the smallest bbox that holds the bboxes of the
// batches of kind at step whose rows are published (and not dropped): every
// published value of kind at step lies in it. ok is false when there are
// none.
func (s *Store) PublishedExtent(ctx context.Context, kind string, step float64) (b grid.BBox, ok bool, err error) {
	var lonMin, latMin, lonMax, latMax *float64
	err = s.Pool.QueryRow(ctx, `SELECT min(b.lon_min), min(b.lat_min), max(b.lon_max), max(b.lat_max)
		FROM batch_runs b JOIN published_batches p ON p.batch_id = b.id
		WHERE p.kind = $1 AND b.step = $2 AND b.rows_dropped_at IS NULL`, kind, step).Scan(&lonMin, &latMin, &lonMax, &latMax)
	if err != nil || lonMin == nil {
		return grid.BBox{}, false, err
	}
	return grid.BBox{LonMin: *lonMin, LatMin: *latMin, LonMax: *lonMax, LatMax: *latMax}, true, nil
}
