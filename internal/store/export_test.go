package store_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// shifted is the built-in ph model with every value plus by: a second
// batch whose values differ from the first's.
type shifted struct {
	grid.Model
	by float64
}

func (s shifted) Compute(ctx context.Context, in []grid.Input) ([]grid.Series, error) {
	out, err := s.Model.Compute(ctx, in)
	for _, se := range out {
		for i := range se.Values {
			se.Values[i] += s.by
		}
	}
	return out, err
}

// exported is one row Export streamed, its values copied.
type exported struct {
	id       int64
	scenario string
	first    int
	values   []float64
}

func exportAll(t *testing.T, st *store.Store, q store.ExportQuery) []exported {
	t.Helper()
	var out []exported
	require.NoError(t, st.Export(testContext(t), q, func(r store.ExportRow) error {
		out = append(out, exported{r.GridID, r.Scenario, r.FirstYear, slices.Clone(r.Values)})
		return nil
	}))
	return out
}

func TestExport(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	st := db.Store
	all := region(t, "124,33,126,35", 0.05)      // 40 × 40 cells: 4,800 rows, more than a FETCH
	part := region(t, "124.5,33.5,125,34", 0.05) // its north-east quarter
	hole := func(c grid.Cell) bool { return c.Row == part.Row0 && c.Col == part.Col0 }
	first := testutil.StoreBatch(t, st, "first", grid.KindPH, grid.PH, all, 37, nil, store.StatusSucceeded)
	require.NotNil(t, first.PublishedAt)
	second := testutil.StoreBatch(t, st, "second", grid.KindPH, shifted{grid.PH, 1}, part, 7, hole, store.StatusPartial)
	require.Nil(t, second.PublishedAt)

	want := func(c grid.Cell, scenario string, by float64) []float64 {
		s, err := grid.PH.Compute(ctx, []grid.Input{{GridID: c.GridID, Params: grid.ReferenceParams(c.Lat, c.Lon)}})
		require.NoError(t, err)
		for _, se := range s {
			if se.Scenario == scenario {
				for i := range se.Values {
					se.Values[i] += by
				}
				return se.Values
			}
		}
		t.Fatalf("no scenario %s", scenario)
		return nil
	}
	check := func(t *testing.T, rows []exported, r grid.Region, scenarios []string, valueOf func(grid.Cell) (by float64, ok bool)) {
		t.Helper()
		i := 0
		for k := range r.NumCells() {
			c := r.CellAt(k)
			by, ok := valueOf(c)
			if !ok {
				continue
			}
			for _, s := range scenarios {
				require.Less(t, i, len(rows), "rows end before cell %d %s", c.GridID, s)
				got := rows[i]
				require.Equal(t, c.GridID, got.id, "row %d: grid_id order", i)
				require.Equal(t, s, got.scenario, "row %d", i)
				require.Equal(t, grid.FirstYear, got.first)
				require.Equal(t, want(c, s, by), got.values, "cell %d %s", c.GridID, s)
				i++
			}
		}
		require.Len(t, rows, i)
	}
	scenarios := []string{"ssp126", "ssp245", "ssp585"}
	in := func(r grid.Region, c grid.Cell) bool {
		return c.Row >= r.Row0 && c.Row < r.Row1 && c.Col >= r.Col0 && c.Col < r.Col1
	}

	t.Run("a batch's own rows, unpublished, in grid_id order", func(t *testing.T) {
		rows := exportAll(t, st, store.ExportQuery{BatchID: second.ID, Kind: grid.KindPH, Step: 0.05, Region: part})
		check(t, rows, part, scenarios, func(c grid.Cell) (float64, bool) { return 1, !hole(c) })
	})
	t.Run("the published values, then those of a batch published over part of them", func(t *testing.T) {
		rows := exportAll(t, st, store.ExportQuery{Kind: grid.KindPH, Step: 0.05, Region: all})
		check(t, rows, all, scenarios, func(grid.Cell) (float64, bool) { return 0, true })
		_, err := batch.Publish(ctx, st, testutil.NoChecks(), second.ID, batch.PublishRequest{})
		require.NoError(t, err)
		rows = exportAll(t, st, store.ExportQuery{Kind: grid.KindPH, Step: 0.05, Region: all})
		check(t, rows, all, scenarios, func(c grid.Cell) (float64, bool) {
			if in(part, c) && !hole(c) {
				return 1, true
			}
			return 0, true
		})
	})
	t.Run("a bbox and a scenario", func(t *testing.T) {
		box := region(t, "124.3,33.62,124.71,33.9", 0.05) // across both batches' cells
		rows := exportAll(t, st, store.ExportQuery{Kind: grid.KindPH, Step: 0.05, Region: box, Scenario: "ssp245"})
		check(t, rows, box, []string{"ssp245"}, func(c grid.Cell) (float64, bool) {
			if in(part, c) && !hole(c) {
				return 1, true
			}
			return 0, true
		})
		rows = exportAll(t, st, store.ExportQuery{BatchID: first.ID, Kind: grid.KindPH, Step: 0.05, Region: box})
		check(t, rows, box, scenarios, func(grid.Cell) (float64, bool) { return 0, true })
	})
	t.Run("the extent of the published batches", func(t *testing.T) {
		b, ok, err := st.PublishedExtent(ctx, grid.KindPH, 0.05)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, all.BBox, b)
		_, ok, err = st.PublishedExtent(ctx, grid.KindPH, 0.01)
		require.NoError(t, err)
		require.False(t, ok)
	})
	t.Run("more rows than one fetch, and a stop", func(t *testing.T) {
		n := 0
		stop := errors.New("stop")
		err := st.Export(ctx, store.ExportQuery{BatchID: first.ID, Kind: grid.KindPH, Step: 0.05, Region: all}, func(store.ExportRow) error {
			n++
			if n == 3000 {
				return stop
			}
			return nil
		})
		require.ErrorIs(t, err, stop)
		require.Equal(t, 3000, n)
	})
	t.Run("an unknown batch", func(t *testing.T) {
		err := st.Export(ctx, store.ExportQuery{BatchID: "nope", Kind: grid.KindPH, Step: 0.05}, func(store.ExportRow) error { return nil })
		require.ErrorIs(t, err, store.ErrBatchNotFound)
	})
}
