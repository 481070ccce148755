package testutil

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
)

// CheckResults checks every row of kind's results table at step against the
// kernel: its cell must satisfy keep (nil keeps every cell), its first year
// must be grid.FirstYear, its scenario one of the kernel's, and its series
// equal to the kernel's series for the cell's reference parameters. It
// returns how many rows it checked.
func CheckResults(t testing.TB, pool *pgxpool.Pool, kind string, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	ctx := context.Background()
	table, err := store.ResultsTable(kind)
	require.NoError(t, err)
	lat, err := grid.NewLattice(step)
	require.NoError(t, err)
	model, err := grid.ModelFor(kind)
	require.NoError(t, err)
	rows, err := pool.Query(ctx, `SELECT grid_id, scenario, first_year, series FROM `+table+` WHERE step = $1`, step)
	require.NoError(t, err)
	defer rows.Close()
	checked := 0
	for rows.Next() {
		var id int64
		var scen string
		var first int
		var got []float64
		require.NoError(t, rows.Scan(&id, &scen, &first, &got))
		cell, err := lat.CellByID(id)
		require.NoError(t, err)
		require.True(t, keep == nil || keep(cell), "unexpected row for cell %d", id)
		want, err := model.Compute(ctx, []grid.Input{{GridID: id, Params: grid.ReferenceParams(cell.Lat, cell.Lon)}})
		require.NoError(t, err)
		require.Equal(t, grid.FirstYear, first)
		found := false
		for _, s := range want {
			if s.Scenario == scen {
				require.Equal(t, s.Values, got, "cell %d %s", id, scen)
				found = true
			}
		}
		require.True(t, found, "scenario %s", scen)
		checked++
	}
	require.NoError(t, rows.Err())
	return checked
}
