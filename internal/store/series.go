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
	err := s.Pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, table).Scan(&exists)
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
		err = pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
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

// ReadSeries returns the stored series of kind for the
// cell gridID of the lattice of step and the given scenario. It returns an
// error wrapping ErrNoSeries when there is none, and the error of
// ResultsTable for an unknown kind.
func (s *Store) ReadSeries(ctx context.Context, kind string, step float64, gridID int64, scenario string) (StoredSeries, error) {
	table, err := ResultsTable(kind)
	if err != nil {
		return StoredSeries{}, err
	}
	return s.readSeries(ctx, table, kind+" series", step, gridID, scenario)
}

// readSeries reads one cell's series from table (the view of a kind's
// published values, or a batch's own table); what names it in errors.
func (s *Store) readSeries(ctx context.Context, table, what string, step float64, gridID int64, scenario string) (StoredSeries, error) {
	cell := fmt.Sprintf("%s of cell %d at step %s scenario %s", what, gridID, strconv.FormatFloat(step, 'g', -1, 64), scenario)
	ss := StoredSeries{Step: step, GridID: gridID, Scenario: scenario}
	err := s.Pool.QueryRow(ctx, `SELECT first_year, series, batch_id, computed_at FROM `+ident(table)+`
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
