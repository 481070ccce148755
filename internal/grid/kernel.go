package grid

import (
	"context"
	"fmt"
	"math"
)

// The built-in model kinds.
const (
	KindPH     = "ph"
	KindHazard = "hazard"
)

// Threshold is the temperature (°C) whose yearly exceedance probability the
// "ph" model computes.
const Threshold = 35.0

// ExceedanceProb is the yearly exceedance probability of the return level the
// "hazard" model computes: 0.01, the 100-year return level.
const ExceedanceProb = 0.01

// gumbelReturn is -ln(-ln(1-ExceedanceProb)), the standard Gumbel quantile
// with exceedance probability ExceedanceProb, computed as scipy does.
var gumbelReturn = -math.Log(-math.Log1p(-ExceedanceProb))

func init() {
	Register(phModel{})
	Register(hazardModel{})
}

// phModel is the "ph" model: P(H) = 1 − F(Threshold), the probability that a
// year's maximum exceeds 35 °C.
type phModel struct{}

// Kind returns "ph".
func (phModel) Kind() string { return KindPH }

// Compute returns the P(H) series of each input, per scenario.
func (phModel) Compute(ctx context.Context, in []Input) ([]Series, error) {
	return compute(ctx, KindPH, in, phSeries)
}

// hazardModel is the "hazard" model: the 100-year return level of the
// year's maximum.
type hazardModel struct{}

// Kind returns "hazard".
func (hazardModel) Kind() string { return KindHazard }

// Compute returns the 100-year return level series of each input, per
// scenario.
func (hazardModel) Compute(ctx context.Context, in []Input) ([]Series, error) {
	return compute(ctx, KindHazard, in, hazardSeries)
}

// compute runs kernel for each input and scenario, storing all values in one
// backing array. It checks ctx before each cell and validates each cell's
// parameters.
func compute(ctx context.Context, kind string, in []Input, kernel func(p Params, rate float64, out []float64)) ([]Series, error) {
	ns := len(Scenarios)
	backing := make([]float64, len(in)*ns*NumYears)
	out := make([]Series, len(in)*ns)
	done := ctx.Done()
	for i, c := range in {
		if done != nil {
			select {
			case <-done:
				return nil, fmt.Errorf("compute %s: stopped before cell %d of %d: %w", kind, i, len(in), ctx.Err())
			default:
			}
		}
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("compute %s: %w", kind, err)
		}
		for j, s := range Scenarios {
			k := i*ns + j
			v := backing[k*NumYears : (k+1)*NumYears : (k+1)*NumYears]
			kernel(c.Params, s.Rate, v)
			out[k] = Series{GridID: c.GridID, Scenario: s.Name, Values: v}
		}
	}
	return out, nil
}

// validate reports whether the parameters are finite with a positive scale.
func (c Input) validate() error {
	p := c.Params
	if !isFinite(p.Mu0) || !isFinite(p.Sigma) || !isFinite(p.Xi) || p.Sigma <= 0 {
		return fmt.Errorf("cell %d: invalid params mu0=%s sigma=%s xi=%s: want finite values and sigma > 0",
			c.GridID, fmtFloat(p.Mu0), fmtFloat(p.Sigma), fmtFloat(p.Xi))
	}
	return nil
}

// isFinite reports whether v is neither NaN nor infinite.
func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// location returns mu0 + rate·(year − 2020) for the i-th year of a series.
// The explicit conversion keeps the product rounded on its own (no fused
// multiply-add), matching the fixtures computed in Python.
func location(mu0, rate float64, i int) float64 {
	return mu0 + float64(rate*float64(FirstYear+i-baseYear))
}

// phSeries fills out with P(X > Threshold) for X ~ GEV(mu, sigma, xi) with
// mu = p.Mu0 + rate·(y − 2020). It follows scipy's genextreme.sf step by
// step: z = (35 − mu)/sigma, t = exp(−log1p(xi·z)/xi) (t = exp(−z) when
// xi == 0) and P = −expm1(−t), which stays accurate for probabilities near 0.
// Above the upper end of the support (xi < 0, z ≥ −1/xi) P is exactly 0;
// below the lower end (xi > 0, z ≤ −1/xi) it is exactly 1.
func phSeries(p Params, rate float64, out []float64) {
	xi, sigma := p.Xi, p.Sigma
	// bound is the standardized end of the support, as scipy computes it.
	bound := 1 / -xi
	for i := range out {
		mu := location(p.Mu0, rate, i)
		z := (Threshold - mu) / sigma
		switch {
		case xi < 0 && z >= bound:
			out[i] = 0
			continue
		case xi > 0 && z <= bound:
			out[i] = 1
			continue
		}
		var loglog float64 // log(−log F)
		if xi == 0 {
			loglog = -z
		} else {
			loglog = math.Log1p(xi*z) / -xi
		}
		out[i] = -math.Expm1(-math.Exp(loglog))
	}
}

// hazardSeries fills out with the return level exceeded with probability
// ExceedanceProb in a year: z = mu + sigma·expm1(xi·g)/xi with
// g = −ln(−ln(0.99)) (z = mu + sigma·g when xi == 0), which equals
// mu − (sigma/xi)·(1 − (−ln 0.99)^(−xi)) and is scipy's genextreme.isf.
func hazardSeries(p Params, rate float64, out []float64) {
	q := gumbelReturn
	if p.Xi != 0 {
		q = math.Expm1(p.Xi*gumbelReturn) / p.Xi
	}
	level := float64(q * p.Sigma)
	for i := range out {
		out[i] = level + location(p.Mu0, rate, i)
	}
}
