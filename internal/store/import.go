package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// importTable is the staging table of ImportInputs.
const importTable = "gridbatch_import"

// ImportRows are the rows ImportInputs writes: one cell each, with a value
// per input. internal/inputs.Reader is one.
type ImportRows interface {
	// Inputs names the inputs, in the order of the values of Next. Each
	// is a valid column name (model.InputPattern) other than step,
	// grid_id, lat and lon.
	Inputs() []string
	// Next returns the next cell and its values (valid until the next
	// call), io.EOF after the last, or an error that stops the import.
	// Each cell comes at most once.
	Next() (grid.Cell, []float64, error)
}

// ImportResult is what ImportInputs wrote.
type ImportResult struct {
	// Cells is the number of rows imported.
	Cells int64
	// Inserted is how many of them had no row in cell_params: they were
	// added with the centre's lat and lon and no value (NULL) for the
	// inputs the rows do not give. The others were updated.
	Inserted int64
	// Added are the inputs that were new columns of cell_params.
	Added []string
}

// NewInputsError refuses an import that would add more new inputs (columns
// of cell_params, which stay) than it may.
type NewInputsError struct {
	// New are the inputs cell_params has no column for.
	New []string
	// Max is the most an import may add.
	Max int
}

func (e *NewInputsError) Error() string {
	return fmt.Sprintf("%d inputs new to cell_params (%s), over the limit of %d new inputs an import may add: each becomes a column of cell_params for good (--max-new-inputs raises the limit)",
		len(e.New), strings.Join(e.New, ", "), e.Max)
}

// ImportInputs writes the rows to cell_params at step, all or nothing, in
// one transaction. Before reading a row it refuses, with a
// *NewInputsError, rows that would add more than maxNew inputs new to
// cell_params. It streams them with the binary protocol (pgx CopyFrom)
// into a temporary table; an error of rows.Next stops it, is returned as it
// is, and nothing is written. Then it adds a double precision column to
// cell_params for each input it lacks (ALTER TABLE takes the table's
// exclusive lock until the commit: only after the copy, and only when a
// column is new), locks cell_params against other writers (SHARE ROW
// EXCLUSIVE: readers go on), and writes the rows with one statement: a
// plain INSERT when no cell of the rows' grid id range is in cell_params at
// step, else one INSERT … ON CONFLICT (step, grid_id) DO UPDATE of the
// rows' inputs. Other inputs, and the cells not in rows, are left alone.
// Each statement runs under the pool's statement_timeout. A missing schema
// gives an error for which IsSchemaError is true.
func (s *Store) ImportInputs(ctx context.Context, step float64, rows ImportRows, maxNew int) (ImportResult, error) {
	var res ImportResult
	inputs := rows.Inputs()
	if len(inputs) == 0 {
		return res, errors.New("import inputs: no inputs")
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return res, fmt.Errorf("import inputs: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	// Before reading any row: the columns cell_params has. This fails at
	// once (undefined_table) when the schema is missing, and takes no lock
	// on the table, so that adding columns below takes its first.
	have, err := tableColumns(ctx, tx, "cell_params")
	if err != nil {
		return res, fmt.Errorf("import inputs: %w", err)
	}
	var fresh []string
	for _, in := range inputs {
		if !slices.Contains(have, in) {
			fresh = append(fresh, in)
		}
	}
	if len(fresh) > maxNew {
		return res, &NewInputsError{New: fresh, Max: maxNew}
	}
	cols := []string{"grid_id", "lat", "lon"}
	ddl := []string{"grid_id bigint", "lat double precision", "lon double precision"}
	quoted := make([]string, len(inputs))
	for i, in := range inputs {
		quoted[i] = pgx.Identifier{in}.Sanitize()
		ddl = append(ddl, quoted[i]+" double precision")
		cols = append(cols, in)
	}
	if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE `+importTable+` (`+strings.Join(ddl, ", ")+`) ON COMMIT DROP`); err != nil {
		return res, fmt.Errorf("import inputs: create staging table: %w", err)
	}

	src := newImportSource(rows, len(inputs))
	n, err := tx.CopyFrom(ctx, pgx.Identifier{importTable}, cols, src)
	if src.err != nil {
		return res, src.err
	}
	if err != nil {
		return res, fmt.Errorf("import inputs: copy: %w", err)
	}

	var add []string
	for i, in := range inputs {
		if !slices.Contains(have, in) {
			add = append(add, "ADD COLUMN IF NOT EXISTS "+quoted[i]+" double precision")
			res.Added = append(res.Added, in)
		}
	}
	if len(add) > 0 {
		if _, err := tx.Exec(ctx, `ALTER TABLE cell_params `+strings.Join(add, ", ")); err != nil {
			return res, fmt.Errorf("import inputs: add columns %s to cell_params: %w", strings.Join(res.Added, ", "), err)
		}
	}

	// From here on no other session writes cell_params (readers go on):
	// the rows' cells cannot appear between the check and the insert.
	if _, err := tx.Exec(ctx, `LOCK TABLE cell_params IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return res, fmt.Errorf("import inputs: lock cell_params: %w", err)
	}
	var some bool
	if n > 0 {
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM cell_params WHERE step = $1 AND grid_id BETWEEN $2 AND $3)`,
			step, src.minID, src.maxID).Scan(&some)
		if err != nil {
			return res, fmt.Errorf("import inputs: look for existing cells: %w", err)
		}
	}
	list := strings.Join(quoted, ", ")
	insert := `INSERT INTO cell_params (step, grid_id, lat, lon, ` + list + `)
SELECT $1, grid_id, lat, lon, ` + list + ` FROM ` + importTable
	if !some {
		// No cell of the rows' id range exists: a plain insert, without
		// the per-row speculative insertion of ON CONFLICT (twice as fast).
		tag, err := tx.Exec(ctx, insert, step)
		if err != nil {
			return res, writeError(err)
		}
		res.Cells, res.Inserted = tag.RowsAffected(), tag.RowsAffected()
	} else {
		set := make([]string, len(quoted))
		for i, q := range quoted {
			set[i] = q + " = EXCLUDED." + q
		}
		// xmax = 0 tells a row this statement inserted from one it updated.
		q := `WITH up AS (` + insert + `
ON CONFLICT (step, grid_id) DO UPDATE SET ` + strings.Join(set, ", ") + `
RETURNING xmax = 0 AS inserted)
SELECT count(*), count(*) FILTER (WHERE inserted) FROM up`
		if err := tx.QueryRow(ctx, q, step).Scan(&res.Cells, &res.Inserted); err != nil {
			return res, writeError(err)
		}
	}
	if res.Cells != n {
		return res, fmt.Errorf("import inputs: copied %d rows but wrote %d", n, res.Cells)
	}
	if err := tx.Commit(ctx); err != nil {
		return res, fmt.Errorf("import inputs: commit: %w", err)
	}
	return res, nil
}

// writeError words an error of the statement that writes cell_params.
func writeError(err error) error {
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "23502" { // not_null_violation
		return fmt.Errorf("import inputs: cell_params requires a value of %s for new cells: the schema predates import; run: enqueuer migrate", pg.ColumnName)
	}
	return fmt.Errorf("import inputs: write cell_params: %w", err)
}

// tableColumns returns the column names of table (in the search path) from
// the catalogue, failing with undefined_table when there is no such table.
func tableColumns(ctx context.Context, tx pgx.Tx, table string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT attname::text FROM pg_attribute
WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, pgx.Identifier{table}.Sanitize())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// importSource is the pgx.CopyFromSource of ImportInputs. Its row holds
// pointers to fields it overwrites for each row, so copying allocates
// nothing per row.
type importSource struct {
	rows ImportRows
	id   int64
	// minID and maxID bound the ids of the rows copied.
	minID, maxID int64
	vals         []float64 // lat, lon, then the inputs
	values       []any
	err          error // of rows.Next
}

func newImportSource(rows ImportRows, inputs int) *importSource {
	s := &importSource{rows: rows, vals: make([]float64, 2+inputs), minID: 1, maxID: 0}
	s.values = append(s.values, &s.id)
	for i := range s.vals {
		s.values = append(s.values, &s.vals[i])
	}
	return s
}

func (s *importSource) Next() bool {
	c, vals, err := s.rows.Next()
	if err != nil {
		if !errors.Is(err, io.EOF) {
			s.err = err
		}
		return false
	}
	if len(vals) != len(s.vals)-2 {
		s.err = fmt.Errorf("import inputs: cell %d has %d values for %d inputs", c.GridID, len(vals), len(s.vals)-2)
		return false
	}
	if s.minID > s.maxID {
		s.minID, s.maxID = c.GridID, c.GridID
	}
	s.minID, s.maxID = min(s.minID, c.GridID), max(s.maxID, c.GridID)
	s.id, s.vals[0], s.vals[1] = c.GridID, c.Lat, c.Lon
	copy(s.vals[2:], vals)
	return true
}

func (s *importSource) Values() ([]any, error) { return s.values, nil }

func (s *importSource) Err() error { return s.err }

// CellExtent returns the box spanned by the centres of the cells in
// cell_params at step; ok is false when there are none.
func (s *Store) CellExtent(ctx context.Context, step float64) (b grid.BBox, ok bool, err error) {
	var latMin, latMax, lonMin, lonMax *float64
	err = s.pool.QueryRow(ctx, `SELECT min(lat), max(lat), min(lon), max(lon) FROM cell_params WHERE step = $1`, step).
		Scan(&latMin, &latMax, &lonMin, &lonMax)
	if err != nil || latMin == nil {
		return grid.BBox{}, false, err
	}
	return grid.BBox{LonMin: *lonMin, LatMin: *latMin, LonMax: *lonMax, LatMax: *latMax}, true, nil
}
