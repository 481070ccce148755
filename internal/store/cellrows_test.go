package store_test

import (
	"context"
	"encoding/binary"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestReadCells: a CellReader gives, cell by cell in grid order, the rows
// Export reads, each series taken from the newest publication that has
// it, however its slabs cut the cells; a batch's own rows likewise, and
// nothing of a cell outside the region.
func TestReadCells(t *testing.T) {
	ctx := context.Background()
	db := testutil.NewDB(t)
	r, err := grid.ParseRegion(0.5, "124,33,132,39", 0)
	require.NoError(t, err)
	full := store.SeriesLayout{Names: []string{"ssp126", "ssp245", "ssp585"}, FirstYear: 2021, Years: 80}
	testutil.StoreValues(t, db.Store, "ph-1", r, 50, full, nil, func(id int64, series string, year int) float64 {
		return float64(id) + float64(year)/1e4 + float64(len(series))
	}, true)
	testutil.StoreValues(t, db.Store, "ph-2", r, 50, store.SeriesLayout{Names: []string{"ssp245"}, FirstYear: 2031, Years: 30},
		func(id int64) bool { return id%3 == 0 }, func(id int64, series string, year int) float64 { return -float64(id) }, true)
	testutil.StoreValues(t, db.Store, "ph-3", r, 50, store.SeriesLayout{Names: []string{"ssp585", "ssp126"}, FirstYear: 2021, Years: 80},
		func(id int64) bool { return id%5 != 0 }, func(id int64, series string, year int) float64 { return math.NaN() }, true)
	sub, err := grid.ParseRegion(0.5, "125,34,130,38", 0)
	require.NoError(t, err)

	for _, size := range []int{1, 5000, 1 << 20} {
		store.SetCellSlabBytes(t, size)
		for _, q := range []store.ExportQuery{
			{Kind: grid.KindPH, Step: 0.5, Region: r},
			{Kind: grid.KindPH, Step: 0.5, Region: sub},
			{BatchID: "ph-2", Kind: grid.KindPH, Step: 0.5, Region: r},
		} {
			type key struct {
				id     int64
				series string
			}
			want := map[key][]float64{}
			var order []int64
			require.NoError(t, db.Store.Export(ctx, q, func(row store.ExportRow) error {
				if len(order) == 0 || order[len(order)-1] != row.GridID {
					order = append(order, row.GridID)
				}
				want[key{row.GridID, row.Scenario}] = append(make([]float64, row.FirstYear-2021), row.Values...)
				return nil
			}))
			cr, err := db.Store.ReadCells(ctx, q)
			require.NoError(t, err)
			var got []int64
			for cr.Next() {
				c := cr.Cell()
				got = append(got, c.GridID)
				for _, name := range full.Names {
					raw, first, ok := c.Series(name)
					w, has := want[key{c.GridID, name}]
					require.Equal(t, has, ok, "cell %d %s", c.GridID, name)
					if !ok {
						continue
					}
					v := make([]float64, first-2021, first-2021+len(raw)/8)
					for i := 0; i < len(raw); i += 8 {
						v = append(v, math.Float64frombits(binary.BigEndian.Uint64(raw[i:])))
					}
					require.Equal(t, len(w), len(v), "cell %d %s", c.GridID, name)
					for i := range w {
						require.Equal(t, math.Float64bits(w[i]), math.Float64bits(v[i]), "cell %d %s [%d]", c.GridID, name, i)
					}
				}
			}
			require.NoError(t, cr.Err())
			cr.Close()
			require.Equal(t, order, got, "the cells, in grid order (slabs of %d bytes, %+v)", size, q)
		}
	}

	t.Run("closed early", func(t *testing.T) {
		store.SetCellSlabBytes(t, 1)
		cr, err := db.Store.ReadCells(ctx, store.ExportQuery{Kind: grid.KindPH, Step: 0.5, Region: r})
		require.NoError(t, err)
		require.True(t, cr.Next())
		cr.Close()
		_, err = db.Store.ReadCells(ctx, store.ExportQuery{BatchID: "no-such-batch", Kind: grid.KindPH, Step: 0.5, Region: r})
		require.ErrorIs(t, err, store.ErrBatchNotFound)
	})
}
