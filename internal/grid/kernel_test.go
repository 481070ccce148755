package grid

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestModelsMatchHighPrecision checks both kernels against
// testdata/extremes.json: exact values, computed with Python's decimal module,
// over the range users' inputs can take (xi of both signs, tiny and 0; sigma
// from 1e-6 to 1e4; 35 °C deep in either tail; z at the end of the support).
func TestModelsMatchHighPrecision(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("testdata/extremes.json")
	require.NoError(t, err, "regenerate with: /usr/bin/python3 internal/grid/testdata/gen_extremes.py > internal/grid/testdata/extremes.json")
	var doc struct {
		Cases []fixtureCase `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &doc))
	var ph, hazard, zeros, ones, tiny int
	for _, c := range doc.Cases {
		m, err := modelFor(c.Kind)
		require.NoError(t, err)
		out, err := m.Compute(context.Background(), []Input{{GridID: 1, Params: Params{Mu0: c.Mu0, Sigma: c.Sigma, Xi: c.Xi}}})
		require.NoError(t, err)
		var got []float64
		for i, s := range Scenarios {
			if s.Name == c.Scenario {
				require.Equal(t, c.Rate, s.Rate, "rate of %s", s.Name)
				got = out[i].Values
			}
		}
		require.Len(t, got, NumYears, "%s: scenario %s", c.Label, c.Scenario)
		if c.Kind == KindPH {
			// The libm kernel agrees too: the reference is scipy's computation.
			libm := make([]float64, NumYears)
			phSeriesLibm(Params{Mu0: c.Mu0, Sigma: c.Sigma, Xi: c.Xi}, c.Rate, libm)
			got = append(got, libm...)
		}
		for i, want := range append(c.Values, c.Values...)[:len(got)] {
			if want < 1e-300 {
				// Below 1e-300 (subnormals included) only "about 0" is meaningful.
				require.LessOrEqualf(t, got[i], 1e-300, "%s %s: year %d (libm: %v)", c.Kind, c.Label, FirstYear+i%NumYears, i >= NumYears)
				zeros++
				continue
			}
			requireClose(t, want, got[i], "%s %s: year %d (libm: %v)", c.Kind, c.Label, FirstYear+i%NumYears, i >= NumYears)
			switch {
			case c.Kind == KindHazard:
			case want == 1:
				ones++
			case want < 1e-8:
				tiny++
			}
		}
		if c.Kind == KindPH {
			ph++
		} else {
			hazard++
		}
	}
	require.Greater(t, ph, 100, "ph cases")
	require.Greater(t, hazard, 30, "hazard cases")
	require.Positive(t, zeros, "values about 0")
	require.Positive(t, ones, "values exactly 1")
	require.Positive(t, tiny, "probabilities below 1e-8")
}

// phSeriesLibm is phSeries written with the math package's Log1p, Exp and
// Expm1, step by step as scipy's genextreme.sf: the kernel before its
// table-driven version, kept to check that version over random parameters.
func phSeriesLibm(p Params, rate float64, out []float64) {
	xi, sigma := p.Xi, p.Sigma
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
		var loglog float64
		if xi == 0 {
			loglog = -z
		} else {
			loglog = math.Log1p(xi*z) / -xi
		}
		out[i] = -math.Expm1(-math.Exp(loglog))
	}
}

// TestPHMatchesLibm checks the table-driven ph kernel against phSeriesLibm
// on random parameters over the range users' inputs can take: xi of both
// signs, tiny and 0, sigma from 1e-6 to 1e6, mu0 placing 35 °C anywhere
// from far below to far above the location.
func TestPHMatchesLibm(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(26, 1))
	logUniform := func(lo, hi float64) float64 {
		return math.Exp(math.Log(lo) + rng.Float64()*(math.Log(hi)-math.Log(lo)))
	}
	var got, want [NumYears]float64
	var compared, tiny int
	for n := range 5_000 {
		var xi float64
		switch n % 4 {
		case 0:
			xi = 0
		default:
			xi = logUniform(1e-12, 2)
			if rng.IntN(2) == 0 {
				xi = -xi
			}
		}
		sigma := logUniform(1e-6, 1e6)
		mu0 := Threshold + sigma*(rng.Float64()*60-30)
		p := Params{Mu0: mu0, Sigma: sigma, Xi: xi}
		rate := Scenarios[n%len(Scenarios)].Rate
		phSeries(p, rate, got[:])
		phSeriesLibm(p, rate, want[:])
		for i := range want {
			w, g := want[i], got[i]
			if w == 0 || w < 1e-300 {
				require.LessOrEqualf(t, g, 1e-300, "year %d of %+v: want %v got %v", FirstYear+i, p, w, g)
				continue
			}
			compared++
			if w < 1e-8 {
				tiny++
			}
			require.LessOrEqualf(t, math.Abs(g-w)/w, 1e-12, "year %d of %+v rate %v: want %v got %v", FirstYear+i, p, rate, w, g)
		}
	}
	require.Greater(t, tiny, 100, "probabilities below 1e-8 compared")
	t.Logf("%d values compared, %d below 1e-8", compared, tiny)
}

// BenchmarkPHLibm is BenchmarkCompute/ph's series through phSeriesLibm (no
// allocation), to compare the two kernels.
func BenchmarkPHLibm(b *testing.B) {
	r, err := NewRegion(mustLattice(b, 0.05), korea, 0)
	require.NoError(b, err)
	cells := r.ChunkCells(0, 500)
	out := make([]float64, NumYears)
	cpu := processCPU(b)
	for b.Loop() {
		for _, c := range cells {
			p := ReferenceParams(c.Lat, c.Lon)
			for _, s := range Scenarios {
				phSeriesLibm(p, s.Rate, out)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(cells)), "ns/cell")
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N*len(cells)), "cpu-ns/cell")
}
