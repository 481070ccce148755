package grid

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fixtureCase is one scipy reference series from testdata/fixtures.json.
type fixtureCase struct {
	Label     string    `json:"label"`
	Reference bool      `json:"reference"`
	Lat       float64   `json:"lat"`
	Lon       float64   `json:"lon"`
	Mu0       float64   `json:"mu0"`
	Sigma     float64   `json:"sigma"`
	Xi        float64   `json:"xi"`
	Scenario  string    `json:"scenario"`
	Rate      float64   `json:"rate"`
	Kind      string    `json:"kind"`
	Values    []float64 `json:"values"`
}

var fixtures = sync.OnceValues(func() ([]fixtureCase, error) {
	data, err := os.ReadFile("testdata/fixtures.json")
	if err != nil {
		return nil, err
	}
	var doc struct {
		Cases []fixtureCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	return doc.Cases, nil
})

func loadFixtures(t *testing.T) []fixtureCase {
	t.Helper()
	cases, err := fixtures()
	require.NoError(t, err, "regenerate with: /usr/bin/python3 internal/grid/testdata/gen_fixtures.py > internal/grid/testdata/fixtures.json")
	require.NotEmpty(t, cases)
	return cases
}

// requireClose checks got against scipy's want: relative error at most 1e-9,
// and exactly 0 (or below 1e-300) where scipy gives 0.
func requireClose(t *testing.T, want, got float64, msg string, args ...any) {
	t.Helper()
	if want == 0 {
		require.LessOrEqualf(t, math.Abs(got), 1e-300, "want 0: "+msg, args...)
		return
	}
	rel := math.Abs(got-want) / math.Abs(want)
	require.LessOrEqualf(t, rel, 1e-9, "want %v got %v: "+msg, append([]any{want, got}, args...)...)
}

func TestFixturesCoverage(t *testing.T) {
	t.Parallel()
	cases := loadFixtures(t)
	var zeros, ones, tiny, nearOne int
	for _, c := range cases {
		require.Len(t, c.Values, NumYears, c.Label)
		if c.Kind != KindPH {
			continue
		}
		for _, v := range c.Values {
			switch {
			case v == 0:
				zeros++
			case v == 1:
				ones++
			case v < 1e-8:
				tiny++
			case v > 1-1e-6:
				nearOne++
			}
		}
	}
	require.Positive(t, zeros, "fixtures with P exactly 0")
	require.Positive(t, ones, "fixtures with P exactly 1")
	require.Positive(t, tiny, "fixtures with P below 1e-8")
	require.Positive(t, nearOne, "fixtures with P within 1e-6 of 1")
}

func TestModelsMatchScipy(t *testing.T) {
	t.Parallel()
	for _, c := range loadFixtures(t) {
		t.Run(c.Kind+"/"+c.Scenario+"/"+c.Label, func(t *testing.T) {
			t.Parallel()
			m, err := modelFor(c.Kind)
			require.NoError(t, err)
			in := []Input{{GridID: 7, Params: Params{Mu0: c.Mu0, Sigma: c.Sigma, Xi: c.Xi}}}
			out, err := m.Compute(context.Background(), in)
			require.NoError(t, err)
			require.Len(t, out, len(Scenarios))
			var got *Series
			for i, s := range Scenarios {
				if s.Name == c.Scenario {
					require.Equal(t, c.Rate, s.Rate, "rate of %s", s.Name)
					got = &out[i]
				}
			}
			require.NotNil(t, got, "scenario %s", c.Scenario)
			require.Equal(t, int64(7), got.GridID)
			require.Len(t, got.Values, NumYears)
			for i, want := range c.Values {
				requireClose(t, want, got.Values[i], "year %d", FirstYear+i)
			}
		})
	}
}

func TestReferenceParamsMatchFixtures(t *testing.T) {
	t.Parallel()
	var n int
	for _, c := range loadFixtures(t) {
		if !c.Reference {
			continue
		}
		n++
		p := ReferenceParams(c.Lat, c.Lon)
		requireClose(t, c.Mu0, p.Mu0, "mu0 at %v,%v", c.Lat, c.Lon)
		requireClose(t, c.Sigma, p.Sigma, "sigma at %v,%v", c.Lat, c.Lon)
		require.Equal(t, c.Xi, p.Xi)
	}
	require.Positive(t, n)
}

func TestReferenceParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lat, lon float64
		want     Params
	}{
		{name: "lat 30 lon 0", lat: 30, lon: 0, want: Params{Mu0: 34.8, Sigma: 1.6, Xi: -0.12}},
		{name: "lat -30 lon 90", lat: -30, lon: 90, want: Params{Mu0: 34, Sigma: 1.6, Xi: -0.12}},
		{name: "equator lon 180", lat: 0, lon: 180, want: Params{Mu0: 34 + 10.5 - 0.8, Sigma: 2.2, Xi: -0.12}},
		{name: "lat 60 lon -180", lat: 60, lon: -180, want: Params{Mu0: 34 - 10.5 - 0.8, Sigma: 2.2, Xi: -0.12}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := ReferenceParams(tt.lat, tt.lon)
			require.InDelta(t, tt.want.Mu0, got.Mu0, 1e-12)
			require.InDelta(t, tt.want.Sigma, got.Sigma, 1e-12)
			require.Equal(t, tt.want.Xi, got.Xi)
		})
	}
}

func TestComputeLayout(t *testing.T) {
	t.Parallel()
	r := mustRegion(t, 0.05, korea)
	cells := r.ChunkCells(3, 17)
	in := make([]Input, len(cells))
	for i, c := range cells {
		in[i] = Input{GridID: c.GridID, Params: ReferenceParams(c.Lat, c.Lon)}
	}
	for _, kind := range []string{KindPH, KindHazard} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			m, err := modelFor(kind)
			require.NoError(t, err)
			require.Equal(t, kind, m.Kind())
			out, err := m.Compute(context.Background(), in)
			require.NoError(t, err)
			require.Len(t, out, len(in)*len(Scenarios))
			for i, c := range in {
				for j, s := range Scenarios {
					got := out[i*len(Scenarios)+j]
					require.Equal(t, c.GridID, got.GridID)
					require.Equal(t, s.Name, got.Scenario)
					require.Len(t, got.Values, NumYears)
					require.Equal(t, NumYears, cap(got.Values), "appending to one series must not clobber the next")
					for y, v := range got.Values {
						require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "year %d", FirstYear+y)
					}
					// Warming raises both the probability and the return level.
					require.GreaterOrEqual(t, got.Values[NumYears-1], got.Values[0])
				}
			}
		})
	}
}

func TestComputeEmpty(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{KindPH, KindHazard} {
		m, err := modelFor(kind)
		require.NoError(t, err)
		out, err := m.Compute(context.Background(), nil)
		require.NoError(t, err)
		require.Empty(t, out)
	}
}

func TestComputeInvalidParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		params  Params
		wantErr string
	}{
		{name: "zero sigma", params: Params{Mu0: 30, Sigma: 0, Xi: -0.12},
			wantErr: "cell 42: invalid params mu0=30 sigma=0 xi=-0.12: want finite values and sigma > 0"},
		{name: "negative sigma", params: Params{Mu0: 30, Sigma: -1, Xi: -0.12},
			wantErr: "cell 42: invalid params mu0=30 sigma=-1 xi=-0.12: want finite values and sigma > 0"},
		{name: "NaN mu0", params: Params{Mu0: math.NaN(), Sigma: 1, Xi: -0.12},
			wantErr: "cell 42: invalid params mu0=NaN sigma=1 xi=-0.12: want finite values and sigma > 0"},
		{name: "Inf xi", params: Params{Mu0: 30, Sigma: 1, Xi: math.Inf(-1)},
			wantErr: "cell 42: invalid params mu0=30 sigma=1 xi=-Inf: want finite values and sigma > 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, kind := range []string{KindPH, KindHazard} {
				m, err := modelFor(kind)
				require.NoError(t, err)
				in := []Input{{GridID: 1, Params: ReferenceParams(35, 127)}, {GridID: 42, Params: tt.params}}
				out, err := m.Compute(context.Background(), in)
				require.EqualError(t, err, "compute "+kind+": "+tt.wantErr)
				require.Nil(t, out)
			}
		})
	}
}

func TestComputeCancel(t *testing.T) {
	t.Parallel()
	in := make([]Input, 200_000)
	for i := range in {
		in[i] = Input{GridID: int64(i), Params: ReferenceParams(35, 127)}
	}
	for _, kind := range []string{KindPH, KindHazard} {
		t.Run(kind+"/cancelled mid-way", func(t *testing.T) {
			t.Parallel()
			m, err := modelFor(kind)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			timer := time.AfterFunc(time.Millisecond, cancel)
			defer timer.Stop()
			out, err := m.Compute(ctx, in)
			require.ErrorIs(t, err, context.Canceled)
			require.Nil(t, out)
		})
		t.Run(kind+"/already cancelled", func(t *testing.T) {
			t.Parallel()
			m, err := modelFor(kind)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			out, err := m.Compute(ctx, in[:1])
			require.ErrorIs(t, err, context.Canceled)
			require.EqualError(t, err, "compute "+kind+": stopped before cell 0 of 1: context canceled")
			require.Nil(t, out)
		})
		t.Run(kind+"/deadline", func(t *testing.T) {
			t.Parallel()
			m, err := modelFor(kind)
			require.NoError(t, err)
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			_, err = m.Compute(ctx, in[:10])
			require.ErrorIs(t, err, context.DeadlineExceeded)
		})
	}
}

// processCPU returns the CPU time (user and system) this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// modelFor returns the built-in model of kind.
func modelFor(kind string) (Model, error) {
	switch kind {
	case KindPH:
		return PH, nil
	case KindHazard:
		return Hazard, nil
	}
	return nil, fmt.Errorf("unknown model kind %q", kind)
}

func BenchmarkCompute(b *testing.B) {
	r, err := NewRegion(mustLattice(b, 0.05), korea, 0)
	require.NoError(b, err)
	cells := r.ChunkCells(0, 500)
	in := make([]Input, len(cells))
	for i, c := range cells {
		in[i] = Input{GridID: c.GridID, Params: ReferenceParams(c.Lat, c.Lon)}
	}
	for _, kind := range []string{KindPH, KindHazard} {
		b.Run(kind, func(b *testing.B) {
			m, err := modelFor(kind)
			require.NoError(b, err)
			ctx := context.Background()
			b.ReportAllocs()
			cpu := processCPU(b)
			for b.Loop() {
				if _, err := m.Compute(ctx, in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(in)), "ns/cell")
			// CPU time, unlike the wall clock, holds still on a busy machine.
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N*len(in)), "cpu-ns/cell")
		})
	}
}
