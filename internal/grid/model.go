package grid

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
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

// Model computes series for cells. The built-in models are "ph" and
// "hazard"; a user's own model implements Model and is registered with
// Register.
type Model interface {
	// Kind returns the model's registered name, such as "ph".
	Kind() string
	// Compute returns len(in)*len(Scenarios) series, cell-major: for each
	// input, one series per scenario in Scenarios order. It checks ctx
	// between cells and, once ctx is done, returns an error wrapping
	// ctx.Err() (so errors.Is(err, context.Canceled) works) and no series.
	Compute(ctx context.Context, in []Input) ([]Series, error)
}

// Tabled is implemented by a model that writes its series to a results table
// of its own choosing (one with the columns of ph_timeseries). The reference
// models write to ph_timeseries and hazard_timeseries.
type Tabled interface {
	ResultsTable() string
}

// ErrUnknownModel is returned (wrapped) by ModelFor for a kind that is not
// registered.
var ErrUnknownModel = errors.New("unknown model kind")

var (
	registryMu sync.RWMutex
	registry   = map[string]Model{}
)

// Register makes m available to ModelFor under m.Kind(). It panics when m is
// nil, its kind is empty, or a model of that kind is already registered.
func Register(m Model) {
	if m == nil {
		panic("grid: Register of nil model")
	}
	kind := m.Kind()
	if kind == "" {
		panic("grid: Register of model with empty kind")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[kind]; dup {
		panic(fmt.Sprintf("grid: Register called twice for model kind %q", kind))
	}
	registry[kind] = m
}

// ModelFor returns the model registered under kind. For an unknown kind it
// returns an error wrapping ErrUnknownModel that lists the known kinds, for
// example `unknown model kind "x" (known: hazard, ph)`.
func ModelFor(kind string) (Model, error) {
	registryMu.RLock()
	m, ok := registry[kind]
	registryMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %s)", ErrUnknownModel, kind, strings.Join(Kinds(), ", "))
	}
	return m, nil
}

// Kinds returns the registered model kinds, sorted.
func Kinds() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	kinds := make([]string, 0, len(registry))
	for k := range registry {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}
