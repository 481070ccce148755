package grid

import (
	"context"
	"math"
)

// Params are the GEV parameters of a cell's annual maximum daily Tmax in the
// base year 2020: location Mu0 (°C), scale Sigma (°C, positive) and shape Xi
// in Coles' sign convention (Xi < 0 bounds the distribution above at
// Mu - Sigma/Xi). Scipy's genextreme shape c is -Xi.
type Params struct{ Mu0, Sigma, Xi float64 }

// ReferenceParams returns the reference model's parameters for a cell
// centred at lat, lon (degrees):
//
//	mu0   = 34.0 − 0.35·(|lat| − 30) + 0.8·cos(lon·π/180)
//	sigma = 1.6 + 0.02·| |lat| − 30 |
//	xi    = −0.12
func ReferenceParams(lat, lon float64) Params {
	a := math.Abs(lat) - 30
	return Params{
		Mu0:   34.0 - 0.35*a + 0.8*math.Cos(lon*math.Pi/180),
		Sigma: 1.6 + 0.02*math.Abs(a),
		Xi:    -0.12,
	}
}

// Scenario is a warming scenario: the location of the GEV moves by Rate °C
// per year after 2020.
type Scenario struct {
	Name string
	Rate float64
}

// Scenarios are the scenarios every model computes, in output order.
var Scenarios = []Scenario{{"ssp126", 0.012}, {"ssp245", 0.028}, {"ssp585", 0.055}}

// FirstYear, LastYear and NumYears describe the years of a Series: index 0 is
// FirstYear and index NumYears-1 is LastYear.
const (
	FirstYear = 2021
	LastYear  = 2100
	NumYears  = LastYear - FirstYear + 1
)

// baseYear is the year in which the location equals Mu0.
const baseYear = 2020

// Input is one cell handed to a Model: its grid id and GEV parameters.
type Input struct {
	GridID int64
	Params
}

// Series is one (cell, scenario) result: NumYears values, index 0 being
// FirstYear.
type Series struct {
	GridID   int64
	Scenario string
	Values   []float64
}

// Model computes series for cells: the built-in PH and Hazard.
type Model interface {
	// Kind returns the model's name, such as "ph".
	Kind() string
	// Compute returns len(in)*len(Scenarios) series, cell-major: for each
	// input, one series per scenario in Scenarios order. It checks ctx
	// between cells and, once ctx is done, returns an error wrapping
	// ctx.Err() (so errors.Is(err, context.Canceled) works) and no series.
	Compute(ctx context.Context, in []Input) ([]Series, error)
	// Values is Compute's values in one array: cell-major, then scenario,
	// then year.
	Values(ctx context.Context, in []Input) ([]float64, error)
}
