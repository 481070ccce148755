package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// The monitor's maps: the value of one year of one scenario for every cell
// of a batch, or of the published values of a kind over a region, each
// read with one query.

// ErrNoPublication is returned by LatestPublication when nothing
// of the kind is published (at the step).
var ErrNoPublication = errors.New("nothing published")

// BatchMapValues calls fn with the grid id and the value of year of every
// cell batch batchID wrote for scenario, published or not, in one query
// over the batch's own table (the year's 8 bytes of each row). A batch
// without that scenario calls fn for no cell; a year outside its series
// gives NaN. It returns an error wrapping ErrNoSeries when retention
// dropped the batch's rows, and ErrBatchNotFound.
func (s *Store) BatchMapValues(ctx context.Context, batchID, scenario string, year int, fn func(gridID int64, v float64)) error {
	table, l, err := batchRowsTable(ctx, s.pool, batchID)
	if err != nil {
		return err
	}
	i := l.index(scenario)
	if i < 0 {
		return nil
	}
	rows, err := s.pool.Query(ctx, `SELECT grid_id, CASE WHEN $1 THEN substring(series FROM $2 FOR 8) END FROM `+ident(table),
		year >= l.FirstYear && year < l.FirstYear+l.Years, (i*l.Years+year-l.FirstYear)*8+1)
	if err != nil {
		return fmt.Errorf("read the map of batch %s: %w", batchID, err)
	}
	return scanMap(rows, fn)
}

// PublishedMapValues calls fn with the grid id and the value of year of
// the published series (<kind>_timeseries) of every cell of region r at
// scenario, in one query. Cells with no published series are left out; a
// series with no value that year gives NaN.
func (s *Store) PublishedMapValues(ctx context.Context, kind string, r grid.Region, scenario string, year int, fn func(gridID int64, v float64)) error {
	if _, err := ResultsTable(kind); err != nil {
		return err
	}
	// For each cell, the row of the batch published last with the
	// scenario, found on each published batch's index by grid_id.
	l := r.Lattice
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (r.grid_id) r.grid_id,
			CASE WHEN $3::int - p.first_year BETWEEN 0 AND p.years - 1 THEN
				substring(r.series FROM ((array_position(p.series_names, $2) - 1) * p.years + $3::int - p.first_year) * 8 + 1 FOR 8) END
		FROM `+ident(kind+"_results")+` r JOIN published_batches p ON p.batch_id = r.batch_id
		WHERE r.step = $1 AND $2 = ANY(p.series_names) AND r.grid_id BETWEEN $4 AND $5 AND r.grid_id % $6 BETWEEN $7 AND $8
		ORDER BY r.grid_id, p.published_at DESC`,
		l.Step, scenario, year, l.GridID(r.Row0, r.Col0), l.GridID(r.Row1-1, r.Col1-1), int64(l.Cols), r.Col0, r.Col1-1)
	if err != nil {
		return fmt.Errorf("read the published map of %s: %w", kind, err)
	}
	return scanMap(rows, fn)
}

// scanMap calls fn for each row of a grid id and a value's 8 big-endian
// bytes, NULL giving NaN.
func scanMap(rows pgx.Rows, fn func(gridID int64, v float64)) error {
	defer rows.Close()
	var id int64
	var b []byte
	for rows.Next() {
		if err := rows.Scan(&id, &b); err != nil {
			return err
		}
		v := math.NaN()
		if len(b) == 8 {
			v = math.Float64frombits(binary.BigEndian.Uint64(b))
		}
		fn(id, v)
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
	err := s.pool.QueryRow(ctx, `SELECT b.id, b.step, b.lon_min, b.lat_min, b.lon_max, b.lat_max, p.published_at
		FROM published_batches p JOIN batch_runs b ON b.id = p.batch_id
		WHERE p.kind = $1 AND ($2::float8 = 0 OR b.step = $2::float8)
		ORDER BY p.published_at DESC LIMIT 1`, kind, step).
		Scan(&p.BatchID, &p.Step, &p.BBox.LonMin, &p.BBox.LatMin, &p.BBox.LonMax, &p.BBox.LatMax, &p.PublishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, ErrNoPublication
	}
	return p, err
}
