package store_test

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestFloat8sInSQL decodes raw big-endian float64s in SQL, as
// <kind>_timeseries does, bit for bit: random bit patterns (every exponent,
// subnormals), ±0, ±Inf, the extremes; NaN stays NaN. gridbatch_float8send
// is its inverse.
func TestFloat8sInSQL(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := rand.New(rand.NewPCG(1, 2))
	vals := []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.MaxFloat64, -math.MaxFloat64,
		math.SmallestNonzeroFloat64, -math.SmallestNonzeroFloat64, 0x1p-1022, math.Nextafter(0x1p-1022, 0), 1, -1, 0.1, math.NaN()}
	for range 5000 {
		vals = append(vals, math.Float64frombits(r.Uint64()))
	}
	raw := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.BigEndian.PutUint64(raw[8*i:], math.Float64bits(v))
	}
	var got []float64
	var back []byte
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT gridbatch_float8s($1), gridbatch_float8send(gridbatch_float8s($1))`, raw).Scan(&got, &back))
	require.Len(t, got, len(vals))
	for i, want := range vals {
		if math.IsNaN(want) {
			require.True(t, math.IsNaN(got[i]), "value %d: %v, want NaN", i, got[i])
			continue
		}
		require.Equal(t, math.Float64bits(want), math.Float64bits(got[i]), "value %d: %v (%#x), want %v (%#x)", i, got[i], math.Float64bits(got[i]), want, math.Float64bits(want))
		require.Equal(t, raw[8*i:8*i+8], back[8*i:8*i+8], "value %d back to bytes", i)
	}
	var empty []float64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT gridbatch_float8s(''::bytea)`).Scan(&empty))
	require.Empty(t, empty)
}

// TestEncodeCells refuses series that do not fit the layout, naming the
// cell, and lays out those that do by the layout's order, whatever the
// model's.
func TestEncodeCells(t *testing.T) {
	t.Parallel()
	l := store.SeriesLayout{Names: []string{"a", "b"}, FirstYear: 2021, Years: 2}
	s := func(id int64, name string, v ...float64) grid.Series {
		return grid.Series{GridID: id, Scenario: name, Values: v}
	}
	ids, rows, err := l.EncodeCells([]grid.Series{s(7, "b", 3, 4), s(7, "a", 1, 2), s(9, "a", 5, 6), s(9, "b", 7, 8)})
	require.NoError(t, err)
	require.Equal(t, []int64{7, 9}, ids)
	dec := func(row []byte) []float64 {
		var out []float64
		for i := 0; i < len(row); i += 8 {
			out = append(out, math.Float64frombits(binary.BigEndian.Uint64(row[i:])))
		}
		return out
	}
	require.Equal(t, []float64{1, 2, 3, 4}, dec(rows[0]))
	require.Equal(t, []float64{5, 6, 7, 8}, dec(rows[1]))
	for name, tc := range map[string]struct {
		in   []grid.Series
		want string
	}{
		"a series missing":  {[]grid.Series{s(7, "a", 1, 2)}, "cell 7 has 1 series, not the 2 of its layout (a, b)"},
		"an unknown series": {[]grid.Series{s(7, "a", 1, 2), s(7, "c", 1, 2)}, `cell 7: series "c" is not one of a, b, or comes twice`},
		"a series twice":    {[]grid.Series{s(7, "a", 1, 2), s(7, "a", 1, 2)}, `cell 7: series "a" is not one of a, b, or comes twice`},
		"too few years":     {[]grid.Series{s(7, "a", 1), s(7, "b", 1, 2)}, "cell 7 series a has 1 values, not 2"},
	} {
		_, _, err := l.EncodeCells(tc.in)
		require.EqualError(t, err, tc.want, name)
	}
}
