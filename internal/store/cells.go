package store

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
)

// SeedBatchSize is the number of cells SeedCells writes per transaction.
const SeedBatchSize = 50_000

// seedTable is the per-transaction staging table of SeedCells.
const seedTable = "gridbatch_seed_cells"

// cellParamsColumns are the columns of cell_params in the order SeedCells copies them.
var cellParamsColumns = []string{"step", "grid_id", "lat", "lon", "mu0", "sigma", "xi"}

// SeedCells writes cell_params for every cell of r with grid.ReferenceParams
// of its centre, idempotently: existing rows are left alone, so re-seeding
// the same region changes nothing. It walks the region in row-major order in
// batches of SeedBatchSize (50,000) cells; each batch is copied with the
// binary protocol (pgx CopyFrom) into a temporary table and then inserted
// with INSERT … SELECT … ON CONFLICT (step, grid_id) DO NOTHING, in its own
// transaction, so an interrupted seed keeps the batches it finished and a
// second run completes it. progress, when not nil, is called after each
// batch with the number of cells of r done so far. It returns the number of
// rows it inserted, including those of the batches committed before an
// error. A missing schema gives an error for which IsSchemaError is true.
func (s *Store) SeedCells(ctx context.Context, r grid.Region, progress func(done int)) (inserted int64, err error) {
	n := r.NumCells()
	for start := 0; start < n; start += SeedBatchSize {
		if err := ctx.Err(); err != nil {
			return inserted, fmt.Errorf("seed cells: stopped after %d of %d cells: %w", start, n, err)
		}
		end := min(start+SeedBatchSize, n)
		k, err := s.seedBatch(ctx, r, start, end)
		if err != nil {
			return inserted, fmt.Errorf("seed cells [%d,%d) of %d: %w", start, end, n, err)
		}
		inserted += k
		if progress != nil {
			progress(end)
		}
	}
	return inserted, nil
}

// seedBatch writes the cells of r with index in [start,end) in one transaction.
func (s *Store) seedBatch(ctx context.Context, r grid.Region, start, end int) (int64, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// LIKE copies the column types but no index or key, so the copy is cheap;
	// it also fails at once with undefined_table when the schema is missing.
	if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE `+seedTable+` (LIKE cell_params) ON COMMIT DROP`); err != nil {
		return 0, err
	}
	step := r.Lattice.Step
	k := start
	row := make([]any, len(cellParamsColumns))
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if k == end {
			return nil, nil
		}
		c := r.CellAt(k)
		k++
		p := grid.ReferenceParams(c.Lat, c.Lon)
		row[0], row[1], row[2], row[3], row[4], row[5], row[6] = step, c.GridID, c.Lat, c.Lon, p.Mu0, p.Sigma, p.Xi
		return row, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{seedTable}, cellParamsColumns, src); err != nil {
		return 0, fmt.Errorf("copy: %w", err)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO cell_params (step, grid_id, lat, lon, mu0, sigma, xi)
SELECT step, grid_id, lat, lon, mu0, sigma, xi FROM `+seedTable+`
ON CONFLICT (step, grid_id) DO NOTHING`)
	if err != nil {
		return 0, fmt.Errorf("insert: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return tag.RowsAffected(), nil
}

// MissingInputError is returned by LoadCells when some of the requested
// cells have no row in cell_params, or no value for an input: the grid was
// not seeded (or imported) there at that step. It is a bad-input error no
// retry can fix.
type MissingInputError struct {
	// Step is the lattice step of the request.
	Step float64
	// Missing is how many of the requested cells have no inputs.
	Missing int
	// Total is how many cells were requested.
	Total int
	// First is the first missing grid id, in request order.
	First int64
	// BBox covers the missing cells; it is the zero BBox when they are not
	// cells of a valid lattice of Step.
	BBox grid.BBox
	// Inputs are the inputs asked for.
	Inputs []string
	// Cells are the first missing grid ids (up to 5), in request order.
	Cells []int64
	// NoRow is how many of the missing cells have no row in cell_params at
	// all; the others have one with no value (NULL) for some input.
	NoRow int
	// Null are the inputs with no value in some missing cell that has a
	// row: the columns an import left empty.
	Null []string
}

// Error says which cells are missing and what writes them: the seed for
// cells with no row and the seed's own inputs, an import for the columns an
// import left empty or for the inputs only an import writes.
func (e *MissingInputError) Error() string {
	step := strconv.FormatFloat(e.Step, 'g', -1, 64)
	bbox := "LON_MIN,LAT_MIN,LON_MAX,LAT_MAX"
	if e.BBox != (grid.BBox{}) {
		bbox = e.BBox.String()
	}
	cells := make([]string, len(e.Cells))
	for i, id := range e.Cells {
		cells[i] = strconv.FormatInt(id, 10)
	}
	if len(e.Cells) < e.Missing {
		cells = append(cells, "…")
	}
	if len(e.Null) > 0 {
		return fmt.Sprintf("%d of %d cells have no value of the input(s) %s in cell_params (grid_id %s at step %s, within %s): import them (enqueuer import --step %s --file F, a file with the columns grid_id,%s for those cells)",
			e.Missing, e.Total, strings.Join(e.Null, ", "), strings.Join(cells, ", "), step, bbox, step, strings.Join(e.Null, ","))
	}
	if len(e.Inputs) > 0 && !slices.Equal(e.Inputs, model.DefaultInputs) && e.NoRow == e.Missing && len(e.Cells) > 0 {
		return fmt.Sprintf("%d of %d cells have no row in cell_params (grid_id %s at step %s, within %s): import the inputs %s for them (enqueuer import --step %s --file F, a file with the columns grid_id,%s; --allow-new-cells where no cell is yet)",
			e.Missing, e.Total, strings.Join(cells, ", "), step, bbox, strings.Join(e.Inputs, ", "), step, strings.Join(e.Inputs, ","))
	}
	if len(e.Inputs) > 0 && !slices.Equal(e.Inputs, model.DefaultInputs) {
		return fmt.Sprintf("%d of %d cells have no value for some of the inputs %s in cell_params (first grid_id %d at step %s); seed the cells (enqueuer seed --step %s --bbox %s), then fill those columns of cell_params",
			e.Missing, e.Total, strings.Join(e.Inputs, ", "), e.First, step, step, bbox)
	}
	return fmt.Sprintf("%d of %d cells have no inputs in cell_params (first grid_id %d at step %s); run: enqueuer seed --step %s --bbox %s",
		e.Missing, e.Total, e.First, step, step, bbox)
}

// LoadCells returns the cells ids of the lattice of step with the inputs
// named (columns of cell_params), in the order of ids, with one query
// (an index range scan per run of consecutive ids). When some cells have no row in cell_params, or a NULL
// in one of the inputs, it returns a *MissingInputError; when cell_params
// has no column for an input, an *UnknownInputError. An empty ids returns
// empty Cells without a query.
func (s *Store) LoadCells(ctx context.Context, step float64, ids []int64, inputs []string) (model.Cells, error) {
	c := model.Cells{GridID: ids, Lat: make([]float64, len(ids)), Lon: make([]float64, len(ids)), Inputs: make([][]float64, len(inputs))}
	for i := range inputs {
		c.Inputs[i] = make([]float64, len(ids))
	}
	if len(ids) == 0 {
		return c, nil
	}
	cols := make([]string, len(inputs))
	notNull := ""
	for i, in := range inputs {
		cols[i] = "c." + pgx.Identifier{in}.Sanitize()
		notNull += " AND " + cols[i] + " IS NOT NULL"
	}
	q := `SELECT c.grid_id, c.lat, c.lon`
	if len(cols) > 0 {
		q += ", " + strings.Join(cols, ", ")
	}
	// A chunk's cells are runs of consecutive grid ids (a part of a row of
	// the lattice, or two): one index range scan per run, not a descent of
	// the index per cell (grid_id = ANY). Measured on 500 cells of the 0.01
	// grid: 0.15-0.24 ms against 0.5 ms.
	q += ` FROM unnest($2::int8[], $3::int8[]) AS r(lo, hi)
		JOIN cell_params c ON c.step = $1 AND c.grid_id BETWEEN r.lo AND r.hi
		WHERE true` + notNull
	where := func(err error) error {
		return fmt.Errorf("load inputs of %d cells at step %s: %w", len(ids), strconv.FormatFloat(step, 'g', -1, 64), err)
	}
	lo, hi := idRuns(ids)
	rows, err := s.pool.Query(ctx, q, step, lo, hi)
	if err != nil {
		return c, where(inputError(err, inputs))
	}
	pos := make(map[int64]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	found := make([]bool, len(ids))
	var (
		id       int64
		lat, lon float64
	)
	vals := make([]float64, len(inputs))
	dest := []any{&id, &lat, &lon}
	for i := range vals {
		dest = append(dest, &vals[i])
	}
	_, err = pgx.ForEachRow(rows, dest, func() error {
		i, ok := pos[id]
		if !ok {
			return nil
		}
		found[i] = true
		c.Lat[i], c.Lon[i] = lat, lon
		for k, v := range vals {
			c.Inputs[k][i] = v
		}
		return nil
	})
	if err != nil {
		return c, where(inputError(err, inputs))
	}
	var missing []int64
	for i, ok := range found {
		if !ok {
			missing = append(missing, ids[i])
		}
	}
	if len(missing) > 0 {
		e := &MissingInputError{
			Step:    step,
			Missing: len(missing),
			Total:   len(ids),
			First:   missing[0],
			BBox:    coveringBBox(step, missing),
			Inputs:  inputs,
			Cells:   missing[:min(5, len(missing))],
		}
		if err := s.whyMissing(ctx, e, missing, cols); err != nil {
			return c, where(err)
		}
		return c, e
	}
	return c, nil
}

// whyMissing fills e.NoRow and e.Null: which of the missing cells have no
// row in cell_params, and which inputs are NULL in those that have one.
// cols are the inputs' quoted columns, prefixed "c.".
func (s *Store) whyMissing(ctx context.Context, e *MissingInputError, missing []int64, cols []string) error {
	nulls := make([]string, len(cols))
	for i, c := range cols {
		nulls[i] = "bool_or(" + c + " IS NULL)"
	}
	q := `SELECT count(*)`
	if len(nulls) > 0 {
		q += ", " + strings.Join(nulls, ", ")
	}
	q += ` FROM cell_params c WHERE c.step = $1 AND c.grid_id = ANY($2)`
	found := 0
	isNull := make([]*bool, len(cols))
	dest := []any{&found}
	for i := range isNull {
		dest = append(dest, &isNull[i])
	}
	if err := s.pool.QueryRow(ctx, q, e.Step, missing).Scan(dest...); err != nil {
		return fmt.Errorf("why %d cells lack inputs: %w", len(missing), err)
	}
	e.NoRow = len(missing) - found
	for i, n := range isNull {
		if n != nil && *n {
			e.Null = append(e.Null, e.Inputs[i])
		}
	}
	return nil
}

// UnknownInputError is a model input that cell_params has no column for:
// neither seeded nor imported.
type UnknownInputError struct {
	Inputs []string
	Cause  error
}

func (e *UnknownInputError) Error() string {
	return fmt.Sprintf("cell_params has no column for some of the inputs %s (%v): add them as double precision columns of cell_params and fill them, or fix the model's inputs in the models file",
		strings.Join(e.Inputs, ", "), e.Cause)
}

func (e *UnknownInputError) Unwrap() error { return e.Cause }

// inputError turns PostgreSQL's undefined_column into an *UnknownInputError.
func inputError(err error, inputs []string) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "42703" {
		return &UnknownInputError{Inputs: inputs, Cause: err}
	}
	return err
}

// InputColumns returns the float8 columns of cell_params that hold inputs
// (every column but step, grid_id, lat and lon).
func (s *Store) InputColumns(ctx context.Context) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT column_name FROM information_schema.columns
WHERE table_schema = current_schema() AND table_name = 'cell_params'
  AND column_name NOT IN ('step', 'grid_id', 'lat', 'lon') ORDER BY column_name`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// coveringBBox returns a bbox whose cell centres include the given cells of
// the lattice of step: their outer edges, rounded outward to 1e-6 degrees.
// It returns the zero BBox when step is not a valid lattice step or no id is
// a cell of it.
func coveringBBox(step float64, ids []int64) grid.BBox {
	l, err := grid.NewLattice(step)
	if err != nil {
		return grid.BBox{}
	}
	b := grid.BBox{LonMin: math.Inf(1), LatMin: math.Inf(1), LonMax: math.Inf(-1), LatMax: math.Inf(-1)}
	for _, id := range ids {
		c, err := l.CellByID(id)
		if err != nil {
			continue
		}
		b.LonMin, b.LonMax = min(b.LonMin, c.Lon), max(b.LonMax, c.Lon)
		b.LatMin, b.LatMax = min(b.LatMin, c.Lat), max(b.LatMax, c.Lat)
	}
	if math.IsInf(b.LonMin, 0) {
		return grid.BBox{}
	}
	const unit = 1e6
	half := step / 2
	b.LonMin = max(math.Floor((b.LonMin-half)*unit)/unit, -180)
	b.LatMin = max(math.Floor((b.LatMin-half)*unit)/unit, -90)
	b.LonMax = min(math.Ceil((b.LonMax+half)*unit)/unit, 180)
	b.LatMax = min(math.Ceil((b.LatMax+half)*unit)/unit, 90)
	return b
}

// CountSeeded returns how many cells of r have a row in cell_params, exactly,
// with one query: the region's grid ids lie in one id range, and within it
// in the columns [Col0,Col1) of each row.
func (s *Store) CountSeeded(ctx context.Context, r grid.Region) (int64, error) {
	if r.NumCells() == 0 {
		return 0, nil
	}
	l := r.Lattice
	first := l.GridID(r.Row0, r.Col0)
	last := l.GridID(r.Row1-1, r.Col1-1)
	var n int64
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM cell_params
WHERE step = $1 AND grid_id BETWEEN $2 AND $3 AND grid_id % $4 >= $5 AND grid_id % $4 < $6`,
		l.Step, first, last, int64(l.Cols), int64(r.Col0), int64(r.Col1)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count seeded cells of bbox %s at step %s: %w", r.BBox, strconv.FormatFloat(l.Step, 'g', -1, 64), err)
	}
	return n, nil
}

// idRuns returns the runs of consecutive ids in ids (in any order, repeats
// allowed): each run is lo[i]..hi[i], every id of it in ids.
func idRuns(ids []int64) (lo, hi []int64) {
	s := slices.Clone(ids)
	slices.Sort(s)
	s = slices.Compact(s)
	for i, id := range s {
		if i > 0 && id == hi[len(hi)-1]+1 {
			hi[len(hi)-1] = id
			continue
		}
		lo, hi = append(lo, id), append(hi, id)
	}
	return lo, hi
}

// missingInput is what InputsDigest hashes for a NULL input: a NaN no
// float8 arithmetic makes (payload 1).
var missingInput = []byte{0x7f, 0xf8, 0, 0, 0, 0, 0, 1}

// InputsDigest reads a region's rows in parts of about digestPartCells
// cells (whole rows of the lattice), digestReaders at once.
const (
	digestPartCells = 32 << 10
	digestReaders   = 2
)

// InputsDigest returns the sha256 of the inputs of region r's cells, in
// grid order: for every cell of r with a row in cell_params, its grid id
// and each of inputs, 8 big-endian bytes each (a float8's own bytes; a
// NULL as missingInput). The definition is the one InputsDigest
// documents, so that a batch's digest compares with one taken later.
//
// PostgreSQL sends the rows in binary COPY, read with one index range
// scan per row of the region (the cells of a row of the lattice are one
// range of grid ids; no sort, no parallel plan, no JIT, and no other
// cell of cell_params is read). The region is read in parts of whole
// rows, two at a time on two connections that share one snapshot
// (pg_export_snapshot; the second one of its own, not the pool's): what
// is digested is one state of cell_params.
// Each part's bytes are hashed in order once read, so memory holds a few
// parts (about 1 MiB each): about 0.2 s for 480,000 cells here. The rows
// must come in grid order: one that does not is an error, never another
// digest.
func (s *Store) InputsDigest(ctx context.Context, r grid.Region, inputs []string) (InputsDigest, error) {
	start := time.Now()
	d := InputsDigest{Columns: inputs}
	var parts [][2]int // rows [a, b) of the lattice
	step := max(1, digestPartCells/max(r.NumCols(), 1))
	for a := r.Row0; a < r.Row1; a += step {
		parts = append(parts, [2]int{a, min(a+step, r.Row1)})
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	txs, end, err := s.snapshotTxs(ctx, min(digestReaders, len(parts)))
	defer end()
	if err != nil {
		return d, fmt.Errorf("digest the inputs: %w", err)
	}
	// Reader w reads parts w, w+n, w+2n, … and hands each to the hasher
	// through its own channel: the hasher takes them in order.
	type part struct {
		buf            []byte
		cells, missing int64
		err            error
	}
	out := make([]chan part, len(txs))
	var wg sync.WaitGroup
	for w, tx := range txs {
		out[w] = make(chan part, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(out[w])
			for i := w; i < len(parts); i += len(txs) {
				var p part
				p.buf, p.cells, p.missing, p.err = digestPart(ctx, tx, r, parts[i], inputs)
				select {
				case out[w] <- p:
				case <-ctx.Done():
					return
				}
				if p.err != nil {
					return
				}
			}
		}()
	}
	h := sha256.New()
	for i := range parts {
		p, ok := <-out[i%len(txs)]
		if !ok {
			err = cmp.Or(ctx.Err(), errors.New("a reader of the inputs stopped early"))
			break
		}
		if p.err != nil {
			err = p.err
			break
		}
		h.Write(p.buf)
		d.Cells, d.Missing = d.Cells+p.cells, d.Missing+p.missing
	}
	cancel()
	wg.Wait()
	if err != nil {
		return d, fmt.Errorf("digest the inputs: %w", inputError(err, inputs))
	}
	d.SHA256 = hex.EncodeToString(h.Sum(nil))
	d.Seconds = time.Since(start).Seconds()
	return d, nil
}

// snapshotTxs begins up to n read-only REPEATABLE READ transactions that
// see one snapshot: the first, on a connection of the pool, exports it;
// the others, each on a connection of its own (so that digests running at
// once never wait on each other for the pool's last connections), import
// it. When such a connection cannot be had, fewer are returned. end
// rolls them back and closes the connections of their own.
func (s *Store) snapshotTxs(ctx context.Context, n int) (txs []pgx.Tx, end func(), err error) {
	var conns []*pgx.Conn
	end = func() {
		ctx := context.WithoutCancel(ctx)
		for _, tx := range txs {
			_ = tx.Rollback(ctx) // read-only: nothing to keep
		}
		for _, c := range conns {
			_ = c.Close(ctx)
		}
	}
	begin := func(tx pgx.Tx, err error) (pgx.Tx, error) {
		if err != nil {
			return nil, err
		}
		txs = append(txs, tx)
		// The nested loop's cost estimate would compile it (JIT, about
		// 0.1 s); a parallel plan could merge the rows out of order.
		_, err = tx.Exec(ctx, `SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0`)
		return tx, err
	}
	opts := pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}
	first, err := begin(s.pool.BeginTx(ctx, opts))
	if err != nil || n == 1 {
		return txs, end, err
	}
	var snapshot string
	if err := first.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snapshot); err != nil {
		return txs, end, err
	}
	for range n - 1 {
		c, err := s.readingConn(ctx)
		if err != nil {
			break // one reader fewer
		}
		conns = append(conns, c)
		tx, err := c.BeginTx(ctx, opts)
		if err != nil {
			return txs, end, err
		}
		// The first statement of the transaction: it sees the snapshot.
		if _, err := tx.Exec(ctx, `SET TRANSACTION SNAPSHOT `+quoteLiteral(snapshot)); err != nil {
			txs = append(txs, tx)
			return txs, end, err
		}
		if _, err := begin(tx, nil); err != nil {
			return txs, end, err
		}
	}
	return txs, end, nil
}

// digestPart reads the inputs of the cells of r in its lattice rows
// [rows[0], rows[1]) in grid order and returns what InputsDigest hashes of
// them, and how many cells and missing inputs they hold.
func digestPart(ctx context.Context, tx pgx.Tx, r grid.Region, rows [2]int, inputs []string) (buf []byte, cells, missing int64, err error) {
	l := r.Lattice
	cols := ""
	for _, in := range inputs {
		cols += ", c." + pgx.Identifier{in}.Sanitize()
	}
	// COPY takes no parameters: the values are numbers, written as
	// literals.
	q := `COPY (SELECT c.grid_id` + cols + `
		FROM generate_series(` + strconv.Itoa(rows[0]) + `::int8, ` + strconv.Itoa(rows[1]-1) + `::int8) AS lr(row_number)
		CROSS JOIN LATERAL (SELECT * FROM cell_params c
			WHERE c.step = ` + float8Literal(l.Step) + ` AND c.grid_id BETWEEN lr.row_number * ` + strconv.Itoa(l.Cols) + ` + ` + strconv.Itoa(r.Col0) + `
				AND lr.row_number * ` + strconv.Itoa(l.Cols) + ` + ` + strconv.Itoa(r.Col1-1) + `
			ORDER BY c.grid_id) c) TO STDOUT (FORMAT binary)`
	buf = make([]byte, 0, (rows[1]-rows[0])*r.NumCols()*8*(len(inputs)+1))
	last := int64(math.MinInt64)
	parse := newCopyTuples(func(f [][]byte) error {
		if len(f) != len(inputs)+1 || len(f[0]) != 8 {
			return fmt.Errorf("a row of %d values", len(f))
		}
		id := int64(binary.BigEndian.Uint64(f[0]))
		if id <= last {
			return fmt.Errorf("cell %d came after cell %d: the rows are not in grid order", id, last)
		}
		last = id
		buf = append(buf, f[0]...)
		for i, v := range f[1:] {
			switch {
			case v == nil:
				buf = append(buf, missingInput...)
				missing++
			case len(v) != 8:
				return fmt.Errorf("input %s of cell %d is not 8 bytes", inputs[i], id)
			default:
				buf = append(buf, v...)
			}
		}
		cells++
		return nil
	})
	if _, err := tx.Conn().PgConn().CopyTo(ctx, parse, q); err != nil {
		return nil, 0, 0, err
	}
	return buf, cells, missing, parse.Done()
}

// float8Literal writes v as an SQL float8 literal that reads back as v.
func float8Literal(v float64) string {
	return "'" + strconv.FormatFloat(v, 'g', -1, 64) + "'::float8"
}
