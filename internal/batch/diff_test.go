package batch_test

import (
	"cmp"
	"context"
	"math"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// storeValues is testutil.StoreValues in chunks of chunkSize.
func storeValues(t *testing.T, st *store.Store, id string, r grid.Region, l store.SeriesLayout,
	skip func(gridID int64) bool, value func(gridID int64, series string, year int) float64, publish bool) {
	t.Helper()
	testutil.StoreValues(t, st, id, r, chunkSize, l, skip, value, publish)
}

// naiveDiff computes what Diff should say from two exports (store.Export,
// decoded values), every change kept and sorted: the exact p99.
func naiveDiff(t *testing.T, st *store.Store, qa, qb store.ExportQuery, o batch.DiffOptions) ([]batch.SeriesDiff, []float64) {
	t.Helper()
	type key struct {
		id     int64
		series string
	}
	type row struct {
		first  int
		values []float64
	}
	read := func(q store.ExportQuery) map[key]row {
		m := map[key]row{}
		require.NoError(t, st.Export(context.Background(), q, func(r store.ExportRow) error {
			m[key{r.GridID, r.Scenario}] = row{r.FirstYear, slices.Clone(r.Values)}
			return nil
		}))
		return m
	}
	a, b := read(qa), read(qb)
	diffs := map[string]*batch.SeriesDiff{}
	abs := map[string][]float64{}
	keys := make([]key, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(p, q key) int { return cmp.Or(cmp.Compare(p.id, q.id), cmp.Compare(p.series, q.series)) })
	perSeries := map[string][]batch.Change{}
	for _, k := range keys {
		x := a[k]
		y, ok := b[k]
		if !ok {
			continue
		}
		d := diffs[k.series]
		if d == nil {
			d = &batch.SeriesDiff{Series: k.series}
			diffs[k.series] = d
		}
		d.CellsCompared++
		first, last := max(x.first, y.first), min(x.first+len(x.values), y.first+len(y.values))-1
		if o.FromYear != 0 {
			first = max(first, o.FromYear)
		}
		if o.ToYear != 0 {
			last = min(last, o.ToYear)
		}
		changed := false
		for year := first; year <= last; year++ {
			va, vb := x.values[year-x.first], y.values[year-y.first]
			d.ValuesCompared++
			if math.Float64bits(va) == math.Float64bits(vb) || (math.IsNaN(va) && math.IsNaN(vb)) {
				abs[k.series] = append(abs[k.series], 0)
				continue
			}
			changed = true
			d.ValuesChanged++
			if math.IsNaN(va) || math.IsNaN(vb) {
				d.NaNChanges++
				continue
			}
			c := math.Abs(vb - va)
			abs[k.series] = append(abs[k.series], c)
			d.MaxAbsChange = max(d.MaxAbsChange, c)
			if c > 0 {
				perSeries[k.series] = append(perSeries[k.series], batch.Change{GridID: k.id, Year: year, A: va, B: vb, Abs: c})
			}
		}
		if changed {
			d.CellsChanged++
		}
	}
	var out []batch.SeriesDiff
	var p99 []float64
	for _, d := range diffs {
		l := perSeries[d.Series]
		slices.SortStableFunc(l, func(p, q batch.Change) int { return cmp.Compare(q.Abs, p.Abs) })
		d.Largest = append([]batch.Change{}, l[:min(cmp.Or(o.Top, 5), len(l))]...)
		out = append(out, *d)
	}
	slices.SortFunc(out, func(p, q batch.SeriesDiff) int { return cmp.Compare(p.Series, q.Series) })
	for _, d := range out {
		v := abs[d.Series]
		slices.Sort(v)
		if len(v) == 0 {
			p99 = append(p99, 0)
			continue
		}
		p99 = append(p99, v[int(math.Ceil(0.99*float64(len(v))))-1])
	}
	return out, p99
}

// diffOf runs batch.Diff on the cells two queries select, as enqueuer diff
// does.
func diffOf(t *testing.T, st *store.Store, qa, qb store.ExportQuery, o batch.DiffOptions) []batch.SeriesDiff {
	t.Helper()
	ctx := context.Background()
	for _, q := range []store.ExportQuery{qa, qb} {
		if q.BatchID != "" {
			require.NoError(t, st.IndexBatchRows(ctx, q.BatchID))
		}
	}
	ra, err := st.ReadCells(ctx, qa)
	require.NoError(t, err)
	defer ra.Close()
	rb, err := st.ReadCells(ctx, qb)
	require.NoError(t, err)
	defer rb.Close()
	d, err := batch.Diff(ctx, ra, rb, o)
	require.NoError(t, err)
	return d
}

// requireDiff checks Diff's figures against naiveDiff's: all exactly but
// the p99, which is within 0.1% (the histogram's bucket).
func requireDiff(t *testing.T, st *store.Store, qa, qb store.ExportQuery, o batch.DiffOptions) []batch.SeriesDiff {
	t.Helper()
	got := diffOf(t, st, qa, qb, o)
	want, p99 := naiveDiff(t, st, qa, qb, o)
	require.Len(t, got, len(want))
	for i := range want {
		g := got[i]
		require.InDelta(t, p99[i], g.P99AbsChange, p99[i]*1e-3, "p99 of %s", want[i].Series)
		g.P99AbsChange = 0
		require.Equal(t, want[i], g)
	}
	return got
}

// TestDiff: Diff's figures equal those computed from two exports, for two
// batches (cells only one of them has, NaN on either side, -0 and +0,
// years only one has) and for a batch against the published values of
// two batches of other layouts, the newer covering part of the cells.
func TestDiff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testutil.NewDB(t)
	r, err := grid.ParseRegion(0.5, seededBBox, 0)
	require.NoError(t, err)
	_, err = db.Store.SeedCells(ctx, r, nil)
	require.NoError(t, err)
	full := store.SeriesLayout{Names: []string{"ssp126", "ssp245", "ssp585"}, FirstYear: 2021, Years: 80}
	base := func(id int64, series string, year int) float64 {
		return float64(id%97)/100 + float64(year-2000)/1000 + float64(len(series))
	}
	storeValues(t, db.Store, "ph-a", r, full, func(id int64) bool { return id%11 == 0 }, func(id int64, series string, year int) float64 {
		if id%14 == 0 && year == 2050 {
			return math.Float64frombits(0x7ff8000000000002) // a NaN of other bits than ph-b's there: equal
		}
		return base(id, series, year)
	}, false)
	storeValues(t, db.Store, "ph-b", r, full, func(id int64) bool { return id%13 == 0 }, func(id int64, series string, year int) float64 {
		v := base(id, series, year)
		switch {
		case id%7 == 0 && year == 2050:
			return math.NaN() // NaN against a number
		case id%5 == 0:
			return v + float64(id%9)*0.01*float64(year-2020) // a change growing with the year
		case id%3 == 0 && series == "ssp245":
			return v * 2
		}
		return v
	}, false)
	qa := store.ExportQuery{BatchID: "ph-a", Kind: grid.KindPH, Step: 0.5, Region: r}
	qb := store.ExportQuery{BatchID: "ph-b", Kind: grid.KindPH, Step: 0.5, Region: r}
	t.Run("two batches", func(t *testing.T) {
		d := requireDiff(t, db.Store, qa, qb, batch.DiffOptions{})
		require.Len(t, d, 3)
		require.Positive(t, d[1].CellsChanged)
		require.Positive(t, d[1].NaNChanges)
		require.Len(t, d[1].Largest, 5)
	})
	t.Run("years 2040 to 2060", func(t *testing.T) {
		requireDiff(t, db.Store, qa, qb, batch.DiffOptions{FromYear: 2040, ToYear: 2060, Top: 3})
	})
	t.Run("a batch against itself", func(t *testing.T) {
		for _, d := range requireDiff(t, db.Store, qa, qa, batch.DiffOptions{}) {
			require.Zero(t, d.CellsChanged)
			require.Zero(t, d.P99AbsChange)
		}
	})

	// Published: ph-old (every series, 2021-2100, NaN and -0 here and
	// there), then ph-new (ssp245 alone, 2031-2060, half the cells).
	storeValues(t, db.Store, "ph-old", r, full, nil, func(id int64, series string, year int) float64 {
		switch {
		case id%17 == 0 && year == 2030:
			return math.NaN()
		case id%19 == 0:
			return math.Copysign(0, -1)
		}
		return base(id, series, year) + 0.25
	}, true)
	storeValues(t, db.Store, "ph-new", r, store.SeriesLayout{Names: []string{"ssp245"}, FirstYear: 2031, Years: 30},
		func(id int64) bool { return id%2 == 0 }, func(id int64, series string, year int) float64 { return base(id, series, year) - 0.5 }, true)
	published := store.ExportQuery{Kind: grid.KindPH, Step: 0.5, Region: r}
	t.Run("a batch against the published values", func(t *testing.T) {
		d := requireDiff(t, db.Store, qb, published, batch.DiffOptions{})
		require.Len(t, d, 3)
		requireDiff(t, db.Store, published, qa, batch.DiffOptions{FromYear: 2025, ToYear: 2035})
	})
}
