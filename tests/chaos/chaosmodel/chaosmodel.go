//go:build integration

// Package chaosmodel is a test-only Go model that panics on some cells.
package chaosmodel

import (
	"context"
	"fmt"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
)

// Kind is the panicking model's kind; it writes to chaos_panic_timeseries.
const Kind = "chaos_panic"

// TypeHang is the task type whose handler ignores cancellation.
const TypeHang = "test:hang"

// PanicAbove is the latitude north of which the model panics.
const PanicAbove = 38.0

// Spec is the model's declaration: the reference ph model's.
func Spec() model.Spec {
	s := model.BuiltinSpec(grid.KindPH)
	s.Kind = Kind
	return s
}

// Compute is the ph model, but it panics on any cell north of PanicAbove.
var Compute = model.ComputerFunc(func(ctx context.Context, spec model.Spec, c model.Cells) ([]float64, error) {
	in := make([]grid.Input, c.Len())
	for i, id := range c.GridID {
		if c.Lat[i] > PanicAbove {
			panic(fmt.Sprintf("chaos model: cell %d at lat %g", id, c.Lat[i]))
		}
		in[i] = grid.Input{GridID: id, Params: grid.Params{Mu0: c.Inputs[0][i], Sigma: c.Inputs[1][i], Xi: c.Inputs[2][i]}}
	}
	return grid.PH.Values(ctx, in)
})

// Models returns the built-in models and this one.
func Models() *model.Set {
	set := model.Builtins()
	if err := set.Add(Spec(), Compute); err != nil {
		panic(err)
	}
	return set
}
