package store_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestResultsTable(t *testing.T) {
	t.Parallel()
	for kind, want := range map[string]string{"ph": "ph_timeseries", "hazard": "hazard_timeseries", "ph_py": "ph_py_timeseries"} {
		got, err := store.ResultsTable(kind)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	for _, kind := range []string{"", "PH", "ph-x", "9ph", "ph; DROP TABLE cell_params"} {
		_, err := store.ResultsTable(kind)
		require.ErrorContains(t, err, "must match", "kind %q", kind)
	}
}

func TestReadSeries(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	values := make([]float64, grid.NumYears)
	for i := range values {
		values[i] = math.Nextafter(0.1*float64(i), 1) // values that only survive at full precision
	}
	computed := time.Date(2025, 3, 4, 5, 6, 7, 123456000, time.UTC)
	testutil.PublishSeries(t, db.Pool, "ph", "b-1", store.StoredSeries{Step: 0.05, GridID: 4242, Scenario: "ssp245",
		FirstYear: 2021, Values: values, ComputedAt: computed})

	t.Run("round trip", func(t *testing.T) {
		got, err := db.Store.ReadSeries(ctx, "ph", 0.05, 4242, "ssp245")
		require.NoError(t, err)
		require.Equal(t, store.StoredSeries{
			Step: 0.05, GridID: 4242, Scenario: "ssp245", FirstYear: 2021,
			Values: values, BatchID: "b-1", ComputedAt: computed,
		}, store.StoredSeries{
			Step: got.Step, GridID: got.GridID, Scenario: got.Scenario, FirstYear: got.FirstYear,
			Values: got.Values, BatchID: got.BatchID, ComputedAt: got.ComputedAt.UTC(),
		})
	})

	t.Run("the view reads the same", func(t *testing.T) {
		series, batchID, err := db.Store.ReadViewSeries(ctx, "ph", 0.05, 4242, "ssp245")
		require.NoError(t, err)
		require.Equal(t, values, series)
		require.Equal(t, "b-1", batchID)
		plan, err := db.Store.ExplainViewSeries(ctx, "ph", 0.05, 4242, "ssp245")
		require.NoError(t, err)
		require.NotEmpty(t, plan)
		require.Contains(t, plan[len(plan)-1], "Execution Time")
	})

	for _, tc := range []struct {
		name, kind, scenario string
		step                 float64
		id                   int64
	}{
		{"other kind", "hazard", "ssp245", 0.05, 4242},
		{"other scenario", "ph", "ssp585", 0.05, 4242},
		{"other step", "ph", "ssp245", 0.1, 4242},
		{"other cell", "ph", "ssp245", 0.05, 4243},
	} {
		t.Run("no series: "+tc.name, func(t *testing.T) {
			_, err := db.Store.ReadSeries(ctx, tc.kind, tc.step, tc.id, tc.scenario)
			require.ErrorIs(t, err, store.ErrNoSeries)
			_, _, err = db.Store.ReadViewSeries(ctx, tc.kind, tc.step, tc.id, tc.scenario)
			require.ErrorIs(t, err, store.ErrNoSeries, "the view")
		})
	}

	t.Run("a kind without a table", func(t *testing.T) {
		_, err := db.Store.ReadSeries(ctx, "risk", 0.05, 4242, "ssp245")
		require.True(t, store.IsSchemaError(err), "%v", err)
		require.NotErrorIs(t, err, store.ErrNoSeries)
	})

	t.Run("EnsureResultsTables makes a kind's table once", func(t *testing.T) {
		created, err := db.Store.EnsureResultsTables(ctx, []string{"ph", "risk"})
		require.NoError(t, err)
		require.Equal(t, []string{"risk_timeseries"}, created)
		created, err = db.Store.EnsureResultsTables(ctx, []string{"risk"})
		require.NoError(t, err)
		require.Empty(t, created)
		_, err = db.Store.ReadSeries(ctx, "risk", 0.05, 4242, "ssp245")
		require.ErrorIs(t, err, store.ErrNoSeries)
	})
}
