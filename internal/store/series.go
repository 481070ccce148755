package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// ErrNoSeries is returned (wrapped) by ReadSeries when no series is stored
// for the cell, kind, scenario and step.
var ErrNoSeries = errors.New("no series stored")

// StoredSeries is one row of ph_timeseries or hazard_timeseries: the series
// of one cell and scenario, Values[0] being the value of FirstYear, and the
// batch that wrote it.
type StoredSeries struct {
	Step       float64
	GridID     int64
	Scenario   string
	FirstYear  int
	Values     []float64
	BatchID    string
	ComputedAt time.Time
}

// ResultsTable returns the table holding the series of kind: ph_timeseries
// for "ph", hazard_timeseries for "hazard", and for a registered user model
// implementing grid.Tabled the table it names. Any other kind is an error
// naming the known ones.
func ResultsTable(kind string) (string, error) {
	switch kind {
	case grid.KindPH:
		return "ph_timeseries", nil
	case grid.KindHazard:
		return "hazard_timeseries", nil
	}
	if m, err := grid.ModelFor(kind); err == nil {
		if t, ok := m.(grid.Tabled); ok && tableName.MatchString(t.ResultsTable()) {
			return t.ResultsTable(), nil
		}
	}
	return "", fmt.Errorf("unknown kind %q (known: %s, %s)", kind, grid.KindHazard, grid.KindPH)
}

var tableName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// ReadSeries returns the stored series of kind ("ph" or "hazard") for the
// cell gridID of the lattice of step and the given scenario. It returns an
// error wrapping ErrNoSeries when there is none, and the error of
// ResultsTable for an unknown kind.
func (s *Store) ReadSeries(ctx context.Context, kind string, step float64, gridID int64, scenario string) (StoredSeries, error) {
	table, err := ResultsTable(kind)
	if err != nil {
		return StoredSeries{}, err
	}
	cell := fmt.Sprintf("%s series of cell %d at step %s scenario %s", kind, gridID, strconv.FormatFloat(step, 'g', -1, 64), scenario)
	ss := StoredSeries{Step: step, GridID: gridID, Scenario: scenario}
	err = s.Pool.QueryRow(ctx, `SELECT first_year, series, batch_id, computed_at FROM `+table+`
WHERE step = $1 AND grid_id = $2 AND scenario = $3`, step, gridID, scenario).
		Scan(&ss.FirstYear, &ss.Values, &ss.BatchID, &ss.ComputedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return StoredSeries{}, fmt.Errorf("%s: %w", cell, ErrNoSeries)
	}
	if err != nil {
		return StoredSeries{}, fmt.Errorf("read %s: %w", cell, err)
	}
	return ss, nil
}
