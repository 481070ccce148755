package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// checkedPH is the built-in ph model declaring checks c, whose values are
// the reference ones changed by tweak (given the chunk's cells and values,
// cell by cell, series by series, year by year).
func checkedPH(t *testing.T, c *model.Checks, tweak func(ids []int64, v []float64)) *model.Set {
	t.Helper()
	set := model.Builtins()
	ref, ok := set.Go(grid.KindPH)
	require.True(t, ok)
	spec := model.BuiltinSpec(grid.KindPH)
	spec.Checks = c
	require.NoError(t, set.Add(spec, model.ComputerFunc(func(ctx context.Context, s model.Spec, cells model.Cells) ([]float64, error) {
		v, err := ref.Compute(ctx, s, cells)
		if err == nil && tweak != nil {
			tweak(cells.GridID, v)
		}
		return v, err
	})))
	return set
}

// at returns the index of (cell i of the chunk, series, year) in a chunk's values.
func at(i, series, year int) int { return (i*3+series)*grid.NumYears + year - grid.FirstYear }

func share(v float64) *float64 { return &v }

// seeded is the region every fixture seeds.
func seeded(t *testing.T) grid.Region {
	r, err := grid.ParseRegion(0.5, seededBBox, 0)
	require.NoError(t, err)
	return r
}

func TestGateHoldsAValueOutOfRange(t *testing.T) {
	t.Parallel()
	var target int64
	set := checkedPH(t, &model.Checks{Range: &[2]float64{0, 1}}, func(ids []int64, v []float64) {
		if len(ids) > 7 && ids[7] == target {
			v[at(7, 2, 2087)] = 1.7
		}
	})
	f := newFixture(t, batch.Config{Models: set})
	target = f.region(seededBBox).ChunkIDs(1, chunkSize)[7]

	b := f.succeeded(grid.KindPH)
	require.Equal(t, store.StatusHeld, b.Status, "a batch failing its checks ends held")
	require.Nil(t, b.PublishedAt, "and is not published")
	require.Equal(t, store.StatusHeld, f.finishedOnce(b.ID).Status)
	_, err := f.db.Store.ReadSeries(f.ctx, grid.KindPH, 0.5, target, "ssp585")
	require.ErrorIs(t, err, store.ErrNoSeries, "nothing of it is published")

	require.NotNil(t, b.Checks)
	require.False(t, b.Checks.Passed)
	require.Equal(t, store.StatusSucceeded, b.Checks.Status)
	require.Len(t, b.Checks.Checks, 1)
	c := b.Checks.Checks[0]
	require.Equal(t, "range", c.Check)
	require.False(t, c.Passed)
	require.EqualValues(t, 1, c.Count)
	require.Equal(t, fmt.Sprintf("1 values above 1, largest 1.7 at cell %d ssp585 2087", target), c.Text)
	require.Equal(t, []store.CheckExample{{GridID: target, Series: "ssp585", Year: 2087, Value: 1.7}}, c.Examples)
	require.Contains(t, b.Publication(), "held")

	t.Run("publish refuses it without --despite-checks", func(t *testing.T) {
		_, err := batch.Publish(f.ctx, f.db.Store, set, b.ID, batch.PublishRequest{})
		var held *batch.HeldError
		require.ErrorAs(t, err, &held)
		require.Contains(t, err.Error(), fmt.Sprintf("largest 1.7 at cell %d ssp585 2087", target))
		_, err = batch.Publish(f.ctx, f.db.Store, set, b.ID, batch.PublishRequest{DespiteChecks: true})
		require.ErrorContains(t, err, "--reason")
		require.Nil(t, f.batch(b.ID).PublishedAt)
	})
	t.Run("published despite its checks, with the reason", func(t *testing.T) {
		p, err := batch.Publish(f.ctx, f.db.Store, set, b.ID, batch.PublishRequest{DespiteChecks: true, Reason: "1.7 is a known artefact", By: "ana@host"})
		require.NoError(t, err)
		require.NotNil(t, p.PublishedAt)
		require.Equal(t, store.StatusSucceeded, p.Status, "it gets back the status it had")
		require.Equal(t, "1.7 is a known artefact", *p.PublishReason)
		require.Equal(t, "ana@host", *p.PublishedBy)
		require.False(t, p.Checks.Passed, "its report stays")
		s, err := f.db.Store.ReadSeries(f.ctx, grid.KindPH, 0.5, target, "ssp585")
		require.NoError(t, err)
		require.Equal(t, 1.7, s.Values[2087-grid.FirstYear])
		require.Contains(t, p.Publication(), "despite its failed checks")
	})
}

func TestGateChecks(t *testing.T) {
	t.Parallel()
	// One NaN in the batch's 192 × 3 × 80 = 46,080 values: a share of
	// 1/46080.
	nanCell := seeded(t).ChunkIDs(2, chunkSize)[0]
	oneNaN := func(ids []int64, v []float64) {
		if ids[0] == nanCell {
			v[at(0, 1, 2050)] = math.NaN()
		}
	}
	for _, tc := range []struct {
		name      string
		checks    model.Checks
		tweak     func([]int64, []float64)
		deadChunk bool // chunk 3 (42 cells) dead-lettered
		status    string
		published bool
		text      string
	}{
		{"max_nan holds", model.Checks{MaxNaN: share(0)}, oneNaN, false, store.StatusHeld, false, "1 of 46080 values NaN (share 2.170138888888889e-05, allowed 0), the first at cell"},
		{"max_nan passes", model.Checks{MaxNaN: share(0.001)}, oneNaN, false, store.StatusSucceeded, true, "1 of 46080 values NaN"},
		{"min_coverage holds a partial batch", model.Checks{MinCoverage: share(0.9)}, nil, true, store.StatusHeld, false, "150 of 192 cells computed (share 0.78125, required 0.9)"},
		{"min_coverage publishes a partial batch", model.Checks{MinCoverage: share(0.75)}, nil, true, store.StatusPartial, true, "150 of 192 cells computed (share 0.78125, required 0.75)"},
		{"a partial batch without min_coverage below 1 is not published", model.Checks{MaxNaN: share(0)}, nil, true, store.StatusPartial, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, batch.Config{Models: checkedPH(t, &tc.checks, tc.tweak)})
			b := f.trigger(grid.KindPH)
			for c := range chunks {
				if tc.deadChunk && c == 3 {
					f.deadLetter(b, c)
				} else {
					f.succeed(b, c)
				}
			}
			b = f.batch(b.ID)
			require.Equal(t, tc.status, b.Status)
			require.Equal(t, tc.published, b.PublishedAt != nil)
			if tc.text == "" {
				require.Nil(t, b.Checks, "no checks run on a batch that is not to be published")
				return
			}
			require.Len(t, b.Checks.Checks, 1)
			require.Contains(t, b.Checks.Checks[0].Text, tc.text)
			require.Equal(t, tc.published, b.Checks.Passed)
		})
	}
}

func TestGateMaxChange(t *testing.T) {
	t.Parallel()
	target := seeded(t).ChunkIDs(0, chunkSize)[3]
	for _, tc := range []struct {
		name      string
		max       float64
		published bool
	}{{"max_change passes", 0.5, true}, {"max_change holds", 0.2, false}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var shift float64
			tweak := func(ids []int64, v []float64) {
				if ids[0] == seeded(t).ChunkIDs(0, chunkSize)[0] {
					v[at(3, 0, 2030)] += shift
				}
			}
			f := newFixture(t, batch.Config{Models: checkedPH(t, &model.Checks{MaxChange: &tc.max}, tweak)})
			first := f.succeeded(grid.KindPH)
			require.NotNil(t, first.PublishedAt, "nothing published yet: nothing to compare with")
			require.Contains(t, first.Checks.Checks[0].Text, "none of 0 values compared")
			before, err := f.db.Store.ReadSeries(f.ctx, grid.KindPH, 0.5, target, "ssp126")
			require.NoError(t, err)
			shift = 0.3
			second := f.succeeded(grid.KindPH)
			require.Equal(t, tc.published, second.PublishedAt != nil)
			c := second.Checks.Checks[0]
			require.EqualValues(t, 192*3*80, c.Of, "every value compared with its published one")
			if tc.published {
				require.True(t, c.Passed)
				return
			}
			require.Equal(t, store.StatusHeld, second.Status)
			old := before.Values[2030-grid.FirstYear]
			require.EqualValues(t, 1, c.Count)
			require.Contains(t, c.Text, fmt.Sprintf("1 of 46080 values changed by more than 0.2 against the published ones, largest %v (%v to %v) at cell %d ssp126 2030",
				(old+0.3)-old, old, old+0.3, target))
			require.Equal(t, old, float64(*c.Examples[0].Published))
		})
	}
}

// TestGateAddsUpItsChunks: the checks run on each chunk's values when the
// worker writes them, and the gate adds up what the chunks recorded,
// once per chunk however often its task was delivered; its report is the
// one reading the batch's rows gives. When the chunks were checked for
// other checks than the gate's, the gate reads the rows.
func TestGateAddsUpItsChunks(t *testing.T) {
	t.Parallel()
	ids := seeded(t).ChunkIDs(1, chunkSize)
	checks := model.Checks{Range: &[2]float64{0, 1}, MaxNaN: share(0), MinCoverage: share(1)}
	set := checkedPH(t, &checks, func(chunk []int64, v []float64) {
		if chunk[0] != ids[0] {
			return
		}
		v[at(3, 2, 2087)] = 1.7
		v[at(3, 2, 2088)] = 1.7 // a tie: the first in grid order is named
		v[at(2, 2, 2090)] = 1.7
		v[at(9, 0, 2021)] = 1.2
		v[at(4, 1, 2050)] = -0.25
		v[at(5, 1, 2050)] = math.NaN()
		v[at(6, 0, 2030)] = math.NaN()
	})
	f := newFixture(t, batch.Config{Models: set})
	b := f.trigger(grid.KindPH)
	for c := range chunks {
		f.succeed(b, c)
		if c == 1 {
			// A second delivery of the chunk's task writes nothing and
			// records nothing more.
			require.NoError(t, f.svc.RunChunk(f.ctx, chunkOf(b, c)))
		}
	}
	b = f.batch(b.ID)
	require.Equal(t, store.StatusHeld, b.Status)
	var recorded int
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND checks IS NOT NULL`, b.ID).Scan(&recorded))
	require.Equal(t, chunks, recorded, "each chunk recorded what its checks found")
	byCheck := func(r store.CheckReport) map[string]store.CheckOutcome {
		m := map[string]store.CheckOutcome{}
		for _, c := range r.Checks {
			m[c.Check] = c
		}
		return m
	}
	got := byCheck(*b.Checks)
	require.Equal(t, fmt.Sprintf("4 values above 1, largest 1.7 at cell %d ssp585 2090; 1 values below 0, smallest -0.25 at cell %d ssp245 2050", ids[2], ids[4]), got["range"].Text)
	require.Equal(t, []store.CheckExample{
		{GridID: ids[2], Series: "ssp585", Year: 2090, Value: 1.7},
		{GridID: ids[3], Series: "ssp585", Year: 2087, Value: 1.7},
		{GridID: ids[3], Series: "ssp585", Year: 2088, Value: 1.7},
		{GridID: ids[9], Series: "ssp126", Year: 2021, Value: 1.2},
		{GridID: ids[4], Series: "ssp245", Year: 2050, Value: -0.25},
	}, got["range"].Examples)
	require.Equal(t, fmt.Sprintf("2 of 46080 values NaN (share 4.340277777777778e-05, allowed 0), the first at cell %d ssp245 2050", ids[5]), got["max_nan"].Text)
	require.Equal(t, "192 of 192 cells computed (share 1, required 1)", got["min_coverage"].Text)

	t.Run("the same report as reading the rows", func(t *testing.T) {
		f.exec(`UPDATE chunk_runs SET checks = NULL WHERE batch_id = $1 AND chunk = 3`, b.ID)
		_, err := batch.Publish(f.ctx, f.db.Store, set, b.ID, batch.PublishRequest{})
		var held *batch.HeldError
		require.ErrorAs(t, err, &held)
		want, err := json.Marshal(b.Checks.Checks) // NaN examples: compared as JSON, "NaN"
		require.NoError(t, err)
		got, err := json.Marshal(held.Report.Checks)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(got))
	})
	t.Run("the chunks' records are what the gate adds up", func(t *testing.T) {
		f.exec(`UPDATE chunk_runs SET checks = jsonb_set(checks, '{below,n}', '1000') WHERE batch_id = $1 AND chunk = 1`, b.ID)
		f.exec(`UPDATE chunk_runs c SET checks = o.checks FROM chunk_runs o WHERE c.batch_id = $1 AND o.batch_id = $1 AND c.chunk = 3 AND o.chunk = 2`, b.ID)
		_, err := batch.Publish(f.ctx, f.db.Store, set, b.ID, batch.PublishRequest{})
		var held *batch.HeldError
		require.ErrorAs(t, err, &held)
		require.Contains(t, byCheck(held.Report)["range"].Text, "1000 values below 0")
	})
	t.Run("other checks than the chunks': the rows are read", func(t *testing.T) {
		other := checkedPH(t, &model.Checks{Range: &[2]float64{0, 0.5}}, nil)
		_, err := batch.Publish(f.ctx, f.db.Store, other, b.ID, batch.PublishRequest{})
		var held *batch.HeldError
		require.ErrorAs(t, err, &held)
		var above int64
		require.NoError(t, f.db.Store.Export(f.ctx, store.ExportQuery{BatchID: b.ID, Kind: grid.KindPH, Step: 0.5}, func(r store.ExportRow) error {
			for _, v := range r.Values {
				if v > 0.5 {
					above++
				}
			}
			return nil
		}))
		rng := byCheck(held.Report)["range"]
		require.Positive(t, above)
		require.Equal(t, above+1, rng.Count, "the values above 0.5 and the one below 0")
		require.Contains(t, rng.Text, fmt.Sprintf("%d values above 0.5", above))
	})
}
