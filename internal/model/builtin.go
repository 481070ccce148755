package model

import (
	"context"
	"fmt"
	"slices"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// Builtins returns a set holding the built-in Go models ph and hazard.
func Builtins() *Set {
	s := New()
	for _, m := range []grid.Model{grid.PH, grid.Hazard} {
		if err := s.Add(BuiltinSpec(m.Kind()), reference{m}); err != nil {
			panic(err) // the built-in specs are valid
		}
	}
	return s
}

// BuiltinSpec returns the spec of a built-in kind (ph or hazard): inputs
// mu0, sigma, xi; the three scenarios; 2021 to 2100.
func BuiltinSpec(kind string) Spec {
	series := make([]string, len(grid.Scenarios))
	for i, sc := range grid.Scenarios {
		series[i] = sc.Name
	}
	spec := Spec{Kind: kind, Inputs: slices.Clone(DefaultInputs), Series: series, FirstYear: grid.FirstYear, Years: grid.NumYears}
	switch kind {
	case grid.KindPH:
		spec.Units, spec.LongName = "1", fmt.Sprintf("probability that the year's maximum daily Tmax exceeds %g degC", grid.Threshold)
		spec.Checks = &Checks{Range: &[2]float64{0, 1}}
	case grid.KindHazard:
		spec.Units, spec.LongName = "degC", "100-year return level of the year's maximum daily Tmax"
	}
	return spec
}

// reference runs a built-in kernel over a chunk's cells.
type reference struct{ m grid.Model }

// Compute reads the inputs mu0, sigma and xi and runs the kernel. A cell
// with invalid parameters fails the chunk with ErrPermanent: the chunk is
// split around it.
func (r reference) Compute(ctx context.Context, spec Spec, c Cells) ([]float64, error) {
	if len(c.Inputs) != 3 {
		return nil, fmt.Errorf("model %s: %d input columns, want mu0, sigma, xi: %w", spec.Kind, len(c.Inputs), ErrInvalid)
	}
	in := make([]grid.Input, c.Len())
	for i, id := range c.GridID {
		in[i] = grid.Input{GridID: id, Params: grid.Params{Mu0: c.Inputs[0][i], Sigma: c.Inputs[1][i], Xi: c.Inputs[2][i]}}
	}
	v, err := r.m.Values(ctx, in)
	if err != nil && ctx.Err() == nil {
		return nil, fmt.Errorf("%w: %w", err, ErrPermanent)
	}
	return v, err
}
