package store

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// The monitor's maps: the value of one year of one scenario for every cell
// of a batch, or of the published values of a kind over a region, each
// read with one query.

// ErrNoPublication is returned by LatestPublication when nothing
// of the kind is published (at the step).
var ErrNoPublication = errors.New("nothing published")

// BatchMapValues calls fn with the grid id and the value of year of every
// row batch batchID wrote for scenario, published or not, in one query
// over the batch's own table (series[year - first_year + 1]). A row whose
// series has no value that year gives NaN. It returns an error wrapping
// ErrNoSeries when retention dropped the batch's rows, and
// ErrBatchNotFound.
func (s *Store) BatchMapValues(ctx context.Context, batchID, scenario string, year int, fn func(gridID int64, v float64)) error {
	table, err := batchRowsTable(ctx, s.Pool, batchID)
	if err != nil {
		return err
	}
	rows, err := s.Pool.Query(ctx, `SELECT grid_id, series[$2::int - first_year + 1] FROM `+ident(table)+` WHERE scenario = $1`,
		scenario, year)
	if err != nil {
		return fmt.Errorf("read the map of batch %s: %w", batchID, err)
	}
	return scanMap(rows, fn)
}

// PublishedMapValues calls fn with the grid id and the value of year of
// the published row (<kind>_timeseries) of every cell of region r at
// scenario, in one query. Cells with no published row are left out; a row
// whose series has no value that year gives NaN.
func (s *Store) PublishedMapValues(ctx context.Context, kind string, r grid.Region, scenario string, year int, fn func(gridID int64, v float64)) error {
	view, err := ResultsTable(kind)
	if err != nil {
		return err
	}
	// The bounds are on grid_id, a DISTINCT ON column of the view, so
	// PostgreSQL applies them under the DISTINCT ON, on each published
	// batch's (step, grid_id, scenario) index.
	l := r.Lattice
	rows, err := s.Pool.Query(ctx, `SELECT grid_id, series[$3::int - first_year + 1] FROM `+ident(view)+`
		WHERE step = $1 AND scenario = $2 AND grid_id BETWEEN $4 AND $5 AND grid_id % $6 BETWEEN $7 AND $8`,
		l.Step, scenario, year, l.GridID(r.Row0, r.Col0), l.GridID(r.Row1-1, r.Col1-1), int64(l.Cols), r.Col0, r.Col1-1)
	if err != nil {
		return fmt.Errorf("read the published map of %s: %w", kind, err)
	}
	return scanMap(rows, fn)
}

func scanMap(rows pgx.Rows, fn func(gridID int64, v float64)) error {
	defer rows.Close()
	var id int64
	var v pgtype.Float8
	for rows.Next() {
		if err := rows.Scan(&id, &v); err != nil {
			return err
		}
		if !v.Valid {
			v.Float64 = math.NaN()
		}
		fn(id, v.Float64)
	}
	return rows.Err()
}

// Publication is one publication of a batch: its kind, grid and when.
type Publication struct {
	BatchID     string
	Kind        string
	Step        float64
	BBox        grid.BBox
	PublishedAt time.Time
}

// LatestPublication returns the most recent publication of kind at step
// (at any step when step is 0). It returns an error wrapping
// ErrNoPublication when there is none.
func (s *Store) LatestPublication(ctx context.Context, kind string, step float64) (Publication, error) {
	p := Publication{Kind: kind}
	err := s.Pool.QueryRow(ctx, `SELECT b.id, b.step, b.lon_min, b.lat_min, b.lon_max, b.lat_max, p.published_at
		FROM published_batches p JOIN batch_runs b ON b.id = p.batch_id
		WHERE p.kind = $1 AND ($2::float8 = 0 OR b.step = $2::float8)
		ORDER BY p.published_at DESC LIMIT 1`, kind, step).
		Scan(&p.BatchID, &p.Step, &p.BBox.LonMin, &p.BBox.LatMin, &p.BBox.LonMax, &p.BBox.LatMax, &p.PublishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrNoPublication
	}
	return p, err
}
