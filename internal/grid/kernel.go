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

// PH is the built-in "ph" model: P(H) = 1 − F(Threshold), the probability
// that a year's maximum exceeds 35 °C.
var PH Model = kernelModel{kind: KindPH, kernel: phSeries}

// Hazard is the built-in "hazard" model: the 100-year return level of the
// year's maximum.
var Hazard Model = kernelModel{kind: KindHazard, kernel: hazardSeries}

// kernelModel is a reference model: one kernel run per cell and scenario.
type kernelModel struct {
	kind   string
	kernel func(p Params, rate float64, out []float64)
}

// Kind returns the model's kind.
func (m kernelModel) Kind() string { return m.kind }

// Compute returns the series of each input, per scenario.
func (m kernelModel) Compute(ctx context.Context, in []Input) ([]Series, error) {
	backing, err := m.Values(ctx, in)
	if err != nil {
		return nil, err
	}
	ns := len(Scenarios)
	out := make([]Series, len(in)*ns)
	for i, c := range in {
		for j, s := range Scenarios {
			k := i*ns + j
			out[k] = Series{GridID: c.GridID, Scenario: s.Name, Values: backing[k*NumYears : (k+1)*NumYears : (k+1)*NumYears]}
		}
	}
	return out, nil
}

// Values runs the kernel for each input and scenario and returns all values
// in one array, cell-major, then scenario, then year. It checks ctx before
// each cell and validates each cell's parameters.
func (m kernelModel) Values(ctx context.Context, in []Input) ([]float64, error) {
	ns := len(Scenarios)
	backing := make([]float64, len(in)*ns*NumYears)
	done := ctx.Done()
	for i, c := range in {
		if done != nil {
			select {
			case <-done:
				return nil, fmt.Errorf("compute %s: stopped before cell %d of %d: %w", m.kind, i, len(in), ctx.Err())
			default:
			}
		}
		if err := c.validate(); err != nil {
			return nil, fmt.Errorf("compute %s: %w", m.kind, err)
		}
		for j, s := range Scenarios {
			k := i*ns + j
			m.kernel(c.Params, s.Rate, backing[k*NumYears:(k+1)*NumYears])
		}
	}
	return backing, nil
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
// mu = p.Mu0 + rate·(y − 2020); len(out) is at most NumYears. It follows
// scipy's genextreme.sf: z = (35 − mu)/sigma and w = xi·z, rounded as scipy
// rounds them (near the end of the support P depends on their last bits),
// then L = log1p(w)/−xi (L = −z when xi == 0), t = e^L and P = −expm1(−t),
// which stays accurate for probabilities near 0. Above the upper end of the
// support (xi < 0, z ≥ −1/xi) P is exactly 0; below the lower end (xi > 0,
// z ≤ −1/xi) it is exactly 1.
//
// It works in passes over the series, each a loop of plain arithmetic (see
// fastmath.go): w, L, t, e^−t, P.
func phSeries(p Params, rate float64, out []float64) {
	xi, sigma := p.Xi, p.Sigma
	// bound is the standardized end of the support, as scipy computes it.
	bound := 1 / -xi
	for i := range out {
		mu := location(p.Mu0, rate, i)
		z := (Threshold - mu) / sigma
		switch {
		case xi == 0:
			out[i] = -z // L
		case xi < 0 && z >= bound, xi > 0 && z <= bound:
			// Outside the support: w = −1 makes L = −∞ (P = 0) when
			// xi < 0 and L = +∞ (P = 1) when xi > 0.
			out[i] = -1
		default:
			// Rounding can leave xi·z a hair below −1 just inside the
			// support, where log1p is undefined; the limit there is L = ∓∞.
			out[i] = max(xi*z, -1)
		}
	}
	if xi != 0 {
		log1pInPlace(out)
		// Dividing by −xi is multiplying by its inverse, to an ulp of L,
		// unless xi is so small that the inverse overflows.
		if inv := -1 / xi; !math.IsInf(inv, 0) {
			for i := range out {
				out[i] *= inv
			}
		} else {
			for i := range out {
				out[i] /= -xi
			}
		}
	}
	var tBuf [NumYears]float64
	t := tBuf[:len(out)]
	expTo(t, out)
	// −expm1(−t) is 1 − e^−t once t ≥ 1e-3, where the rounding error of the
	// difference stays below 1e-12 of the result; e^−38 is below half an ulp
	// of 1, so clamping keeps 1 exact for larger t (and +Inf).
	for i, ti := range t {
		out[i] = -min(ti, 38)
	}
	expTo(out, out)
	for i, ti := range t {
		if ti < 1e-3 {
			// The series of 1 − e^−t: its next term is below 2^-59 relative.
			out[i] = ti * (1 - ti*0.5*(1-ti*(1.0/3)*(1-ti*0.25*(1-ti*0.2))))
		} else {
			out[i] = 1 - out[i]
		}
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
