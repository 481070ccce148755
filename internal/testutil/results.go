package testutil

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
)

// CheckResults checks every row of kind's results table at step against the
// built-in kernel of the same kind (ph or hazard), exactly. See
// CheckResultsAgainst.
func CheckResults(t testing.TB, pool *pgxpool.Pool, kind string, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	ref := grid.PH
	if kind == grid.KindHazard {
		ref = grid.Hazard
	}
	return CheckResultsAgainst(t, pool, kind, ref, 0, step, keep)
}

// CheckResultsAgainst checks every row of kind's results table at step
// against the Go kernel ref: its cell must satisfy keep (nil keeps every
// cell), its first year must be grid.FirstYear, its scenario one of the
// kernel's, and each value within rel (relative; 0: exactly equal) of the
// kernel's for the cell's reference parameters. It returns how many rows it
// checked.
func CheckResultsAgainst(t testing.TB, pool *pgxpool.Pool, kind string, ref grid.Model, rel, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	table, err := store.ResultsTable(kind)
	require.NoError(t, err)
	return checkRows(t, pool, table, ref, rel, step, keep)
}

// CheckBatchResults is CheckResultsAgainst for the own rows of batch
// batchID, published or not.
func CheckBatchResults(t testing.TB, pool *pgxpool.Pool, batchID string, ref grid.Model, rel, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	var table string
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT results_table FROM batch_runs WHERE id = $1`, batchID).Scan(&table))
	return checkRows(t, pool, table, ref, rel, step, keep)
}

func checkRows(t testing.TB, pool *pgxpool.Pool, table string, ref grid.Model, rel, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	ctx := context.Background()
	lat, err := grid.NewLattice(step)
	require.NoError(t, err)
	rows, err := pool.Query(ctx, `SELECT grid_id, scenario, first_year, series FROM `+pgx.Identifier{table}.Sanitize()+` WHERE step = $1`, step)
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
		want, err := ref.Compute(ctx, []grid.Input{{GridID: id, Params: grid.ReferenceParams(cell.Lat, cell.Lon)}})
		require.NoError(t, err)
		require.Equal(t, grid.FirstYear, first)
		found := false
		for _, s := range want {
			if s.Scenario != scen {
				continue
			}
			found = true
			if rel == 0 {
				require.Equal(t, s.Values, got, "cell %d %s", id, scen)
				continue
			}
			require.Len(t, got, len(s.Values), "cell %d %s", id, scen)
			for i, w := range s.Values {
				if d := math.Abs(got[i] - w); d > rel*math.Abs(w) && !(w == 0 && d == 0) {
					t.Fatalf("cell %d %s year %d: got %v, want %v (relative error %.3g > %g)", id, scen, first+i, got[i], w, d/math.Abs(w), rel)
				}
			}
		}
		require.True(t, found, "scenario %s", scen)
		checked++
	}
	require.NoError(t, rows.Err())
	return checked
}

// PublishSeries stores rows as the published rows of a batch batchID of
// kind, as publishing a batch would (a table of its own, attached to
// <kind>_results, recorded in published_batches), without running one:
// for tests that read results. batchID needs no batch_runs row.
func PublishSeries(t testing.TB, pool *pgxpool.Pool, kind, batchID string, rows ...store.StoredSeries) {
	t.Helper()
	ctx := context.Background()
	var table string
	require.NoError(t, pool.QueryRow(ctx, `SELECT gridbatch_batch_table($1)`, batchID).Scan(&table))
	parent := pgx.Identifier{kind + "_results"}.Sanitize()
	tbl := pgx.Identifier{table}.Sanitize()
	_, err := pool.Exec(ctx, `CREATE TABLE `+tbl+` (LIKE `+parent+` INCLUDING DEFAULTS)`)
	require.NoError(t, err)
	for _, r := range rows {
		_, err := pool.Exec(ctx, `INSERT INTO `+tbl+` (step, grid_id, scenario, first_year, series, batch_id, computed_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.Step, r.GridID, r.Scenario, r.FirstYear, r.Values, batchID, r.ComputedAt)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `ALTER TABLE `+parent+` ATTACH PARTITION `+tbl+` FOR VALUES IN (`+"'"+strings.ReplaceAll(batchID, "'", "''")+"'"+`)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO published_batches (kind, batch_id) VALUES ($1, $2)`, kind, batchID)
	require.NoError(t, err)
}
