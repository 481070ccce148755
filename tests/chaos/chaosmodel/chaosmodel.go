//go:build integration

// Package chaosmodel is a test-only model that panics on some cells.
package chaosmodel

import (
	"context"
	"fmt"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// Kind is the panicking model's kind; it writes to ph_timeseries.
const Kind = "chaos-panic"

// TypeHang is the task type whose handler ignores cancellation.
const TypeHang = "test:hang"

// PanicAbove is the latitude north of which the model panics.
const PanicAbove = 38.0

type panicky struct{ lat grid.Lattice }

func (panicky) Kind() string         { return Kind }
func (panicky) ResultsTable() string { return "ph_timeseries" }

// Compute is the ph model, but it panics on any cell north of PanicAbove.
func (p panicky) Compute(ctx context.Context, in []grid.Input) ([]grid.Series, error) {
	for _, c := range in {
		cell, err := p.lat.CellByID(c.GridID)
		if err == nil && cell.Lat > PanicAbove {
			panic(fmt.Sprintf("chaos model: cell %d at lat %g", c.GridID, cell.Lat))
		}
	}
	ph, err := grid.ModelFor(grid.KindPH)
	if err != nil {
		return nil, err
	}
	return ph.Compute(ctx, in)
}

// Register registers the model for the 0.05° lattice (idempotent per process).
func Register() {
	if _, err := grid.ModelFor(Kind); err == nil {
		return
	}
	lat, err := grid.NewLattice(0.05)
	if err != nil {
		panic(err)
	}
	grid.Register(panicky{lat: lat})
}
