package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gridbatch/gridbatch/internal/model"
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

// ResultsTable returns the table holding the series of kind:
// <kind>_timeseries (ph_timeseries, hazard_timeseries, …). A kind that cannot
// name a table is an error.
func ResultsTable(kind string) (string, error) {
	if !model.KindPattern.MatchString(kind) {
		return "", fmt.Errorf("kind %q: must match %s", kind, model.KindPattern)
	}
	return kind + "_timeseries", nil
}

// TableExists reports whether the current schema has the table.
func (s *Store) TableExists(ctx context.Context, table string) (bool, error) {
	var exists bool
	err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists)
	return exists, err
}

// EnsureResultsTables gives every kind that has none the layout of its
// results (gridbatch_results_layout: the partitioned <kind>_results that
// batches are published into, and the view <kind>_timeseries), and returns
// the views it made. `enqueuer migrate` calls it for the kinds of the
// models file; concurrent callers are serialised by an advisory lock.
func (s *Store) EnsureResultsTables(ctx context.Context, kinds []string) (created []string, err error) {
	for _, kind := range kinds {
		table, err := ResultsTable(kind)
		if err != nil {
			return created, err
		}
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('gridbatch_results_layout'))`); err != nil {
				return err
			}
			var exists bool
			if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, kind+"_results").Scan(&exists); err != nil || exists {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT gridbatch_results_layout($1)`, kind); err != nil {
				return err
			}
			created = append(created, table)
			return nil
		})
		if err != nil {
			return created, fmt.Errorf("make the results of kind %s: %w", kind, err)
		}
	}
	return created, nil
}

// ReadSeries returns the published series of kind for the cell gridID of
// the lattice of step and the given scenario: that of the batch published
// last that computed it, as <kind>_timeseries shows it. It returns an error
// wrapping ErrNoSeries when there is none, and the error of ResultsTable
// for an unknown kind. It reads the cell's rows, not the view, and decodes
// them here: the view's decoding in SQL is for other readers.
func (s *Store) ReadSeries(ctx context.Context, kind string, step float64, gridID int64, scenario string) (StoredSeries, error) {
	if _, err := ResultsTable(kind); err != nil {
		return StoredSeries{}, err
	}
	return s.readSeries(ctx, kind+" series", `SELECT r.series, r.batch_id, r.computed_at, p.series_names, p.first_year, p.years
		FROM `+ident(kind+"_results")+` r JOIN published_batches p ON p.batch_id = r.batch_id
		WHERE r.step = $1 AND r.grid_id = $2 AND $3 = ANY(p.series_names)
		ORDER BY p.published_at DESC LIMIT 1`, step, gridID, scenario)
}

// readSeries runs query, which selects a cell's row (series, batch_id,
// computed_at) and its layout (series_names, first_year, years) given the
// step ($1), grid id ($2) and scenario ($3), and returns the scenario's
// series from it; what names the series in errors.
func (s *Store) readSeries(ctx context.Context, what, query string, step float64, gridID int64, scenario string) (StoredSeries, error) {
	cell := fmt.Sprintf("%s of cell %d at step %s scenario %s", what, gridID, strconv.FormatFloat(step, 'g', -1, 64), scenario)
	ss := StoredSeries{Step: step, GridID: gridID, Scenario: scenario}
	var row []byte
	var l SeriesLayout
	err := s.pool.QueryRow(ctx, query, step, gridID, scenario).
		Scan(append([]any{&row, &ss.BatchID, &ss.ComputedAt}, l.scan()...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return StoredSeries{}, fmt.Errorf("%s: %w", cell, ErrNoSeries)
	}
	if err != nil {
		return StoredSeries{}, fmt.Errorf("read %s: %w", cell, err)
	}
	i := l.index(scenario)
	if i < 0 {
		return StoredSeries{}, fmt.Errorf("%s: %w", cell, ErrNoSeries)
	}
	if err := l.checkRow(row); err != nil {
		return StoredSeries{}, fmt.Errorf("read %s: %w", cell, err)
	}
	ss.FirstYear, ss.Values = l.FirstYear, l.series(nil, row, i)
	return ss, nil
}

// viewSeriesQuery selects columns of one cell's row from the view
// <kind>_timeseries given the step ($1), grid id ($2) and scenario ($3).
func viewSeriesQuery(kind, columns string) string {
	return `SELECT ` + columns + ` FROM ` + ident(kind+"_timeseries") + ` WHERE step = $1 AND grid_id = $2 AND scenario = $3`
}

// ReadViewSeries returns the series of kind for the cell gridID of the
// lattice of step and the given scenario, and the batch it comes from, as
// a reader's own SQL gets them: from the view <kind>_timeseries, which
// decodes the series in SQL (ReadSeries decodes them here). The bench
// measures the one beside the other. It returns an error wrapping
// ErrNoSeries when there is none, and the error of ResultsTable for an
// unknown kind.
func (s *Store) ReadViewSeries(ctx context.Context, kind string, step float64, gridID int64, scenario string) (series []float64, batchID string, err error) {
	if _, err := ResultsTable(kind); err != nil {
		return nil, "", err
	}
	err = s.pool.QueryRow(ctx, viewSeriesQuery(kind, "series, batch_id"), step, gridID, scenario).Scan(&series, &batchID)
	if errors.Is(err, pgx.ErrNoRows) {
		err = ErrNoSeries
	}
	if err != nil {
		return nil, "", fmt.Errorf("read %s_timeseries of cell %d at step %s scenario %s: %w",
			kind, gridID, strconv.FormatFloat(step, 'g', -1, 64), scenario, err)
	}
	return series, batchID, nil
}

// ExplainViewSeries returns the lines of EXPLAIN (ANALYZE, COSTS OFF) of
// a read of one cell's whole row (first_year, series, batch_id,
// computed_at) from the view <kind>_timeseries: the plan PostgreSQL picks
// for a read of the view, and its execution time.
func (s *Store) ExplainViewSeries(ctx context.Context, kind string, step float64, gridID int64, scenario string) ([]string, error) {
	if _, err := ResultsTable(kind); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `EXPLAIN (ANALYZE, COSTS OFF) `+viewSeriesQuery(kind, "first_year, series, batch_id, computed_at"),
		step, gridID, scenario)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
