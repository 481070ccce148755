package testutil

import (
	"context"
	"math"
	"slices"
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
func CheckResults(t testing.TB, st *store.Store, kind string, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	ref := grid.PH
	if kind == grid.KindHazard {
		ref = grid.Hazard
	}
	return CheckResultsAgainst(t, st, kind, ref, 0, step, keep)
}

// CheckResultsAgainst checks every published series of kind at step
// against the Go kernel ref: its cell must satisfy keep (nil keeps every
// cell), its first year must be grid.FirstYear, its scenario one of the
// kernel's, and each value within rel (relative; 0: exactly equal) of the
// kernel's for the cell's reference parameters. It returns how many series
// (cell and scenario) it checked.
func CheckResultsAgainst(t testing.TB, st *store.Store, kind string, ref grid.Model, rel, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	return checkRows(t, st, store.ExportQuery{Kind: kind, Step: step}, ref, rel, keep)
}

// CheckBatchResults is CheckResultsAgainst for the own series of batch
// batchID, published or not.
func CheckBatchResults(t testing.TB, st *store.Store, batchID string, ref grid.Model, rel, step float64, keep func(grid.Cell) bool) int {
	t.Helper()
	return checkRows(t, st, store.ExportQuery{BatchID: batchID, Step: step}, ref, rel, keep)
}

// checkRows reads the series q selects as `enqueuer export` does
// (store.Export) and checks each against ref.
func checkRows(t testing.TB, st *store.Store, q store.ExportQuery, ref grid.Model, rel float64, keep func(grid.Cell) bool) int {
	t.Helper()
	ctx := context.Background()
	lat, err := grid.NewLattice(q.Step)
	require.NoError(t, err)
	checked := 0
	err = st.Export(ctx, q, func(r store.ExportRow) error {
		id, scen, first, got := r.GridID, r.Scenario, r.FirstYear, r.Values
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
		return nil
	})
	require.NoError(t, err)
	return checked
}

// PublishSeries stores rows as the published series of a batch batchID of
// kind, as publishing a batch would (a table of its own, a row per cell,
// attached to <kind>_results, recorded in published_batches with its
// layout), without running one: for tests that read results. The layout
// is the rows' scenarios in order of appearance, which every cell must
// have, and the length of their series; batchID needs no batch_runs row.
func PublishSeries(t testing.TB, pool *pgxpool.Pool, kind, batchID string, rows ...store.StoredSeries) {
	t.Helper()
	ctx := context.Background()
	require.NotEmpty(t, rows)
	l := store.SeriesLayout{FirstYear: rows[0].FirstYear, Years: len(rows[0].Values)}
	series := make([]grid.Series, len(rows))
	for i, r := range rows {
		if !slices.Contains(l.Names, r.Scenario) {
			l.Names = append(l.Names, r.Scenario)
		}
		series[i] = grid.Series{GridID: r.GridID, Scenario: r.Scenario, Values: r.Values}
	}
	ids, cells, err := l.EncodeCells(series)
	require.NoError(t, err)
	var table string
	require.NoError(t, pool.QueryRow(ctx, `SELECT gridbatch_batch_table($1)`, batchID).Scan(&table))
	parent := pgx.Identifier{kind + "_results"}.Sanitize()
	tbl := pgx.Identifier{table}.Sanitize()
	_, err = pool.Exec(ctx, `CREATE TABLE `+tbl+` (LIKE `+parent+` INCLUDING DEFAULTS)`)
	require.NoError(t, err)
	for i, id := range ids {
		r := rows[slices.IndexFunc(rows, func(r store.StoredSeries) bool { return r.GridID == id })]
		_, err := pool.Exec(ctx, `INSERT INTO `+tbl+` (step, grid_id, series, batch_id, computed_at) VALUES ($1, $2, $3, $4, $5)`,
			r.Step, id, cells[i], batchID, r.ComputedAt)
		require.NoError(t, err)
	}
	_, err = pool.Exec(ctx, `ALTER TABLE `+parent+` ATTACH PARTITION `+tbl+` FOR VALUES IN (`+"'"+strings.ReplaceAll(batchID, "'", "''")+"'"+`)`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO published_batches (kind, batch_id, series_names, first_year, years) VALUES ($1, $2, $3, $4, $5)`,
		kind, batchID, l.Names, l.FirstYear, l.Years)
	require.NoError(t, err)
}
