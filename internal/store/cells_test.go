package store_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// region returns the region of bbox at step, failing the test on bad input.
func region(t testing.TB, bbox string, step float64) grid.Region {
	t.Helper()
	r, err := grid.ParseRegion(step, bbox, 0)
	require.NoError(t, err)
	return r
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// cellRow is one row of cell_params.
type cellRow struct {
	Step                     float64
	GridID                   int64
	Lat, Lon, Mu0, Sigma, Xi float64
}

func cellRows(t testing.TB, ctx context.Context, db *testutil.DB) []cellRow {
	t.Helper()
	rows, err := db.Pool.Query(ctx, `SELECT step, grid_id, lat, lon, mu0, sigma, xi FROM cell_params ORDER BY step, grid_id`)
	require.NoError(t, err)
	defer rows.Close()
	var out []cellRow
	for rows.Next() {
		var c cellRow
		require.NoError(t, rows.Scan(&c.Step, &c.GridID, &c.Lat, &c.Lon, &c.Mu0, &c.Sigma, &c.Xi))
		out = append(out, c)
	}
	require.NoError(t, rows.Err())
	return out
}

func TestSeedCells(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "124,33,132,39", 0.05)
	require.Equal(t, 19200, r.NumCells())

	t.Run("first seed writes every cell with the reference params of its centre", func(t *testing.T) {
		var calls []int
		n, err := db.Store.SeedCells(ctx, r, func(done int) { calls = append(calls, done) })
		require.NoError(t, err)
		require.EqualValues(t, 19200, n)
		require.Equal(t, []int{19200}, calls)

		rows := cellRows(t, ctx, db)
		require.Len(t, rows, 19200)
		for k, got := range rows {
			c := r.CellAt(k)
			p := grid.ReferenceParams(c.Lat, c.Lon)
			want := cellRow{Step: 0.05, GridID: c.GridID, Lat: c.Lat, Lon: c.Lon, Mu0: p.Mu0, Sigma: p.Sigma, Xi: p.Xi}
			require.Equal(t, want, got, "cell %d", k)
		}
	})

	t.Run("second seed writes nothing and changes nothing", func(t *testing.T) {
		before := cellRows(t, ctx, db)
		// Scribble on one row: a re-seed must leave existing rows alone, not rewrite them.
		_, err := db.Pool.Exec(ctx, `UPDATE cell_params SET mu0 = 99 WHERE step = 0.05 AND grid_id = $1`, before[0].GridID)
		require.NoError(t, err)
		before[0].Mu0 = 99

		n, err := db.Store.SeedCells(ctx, r, nil)
		require.NoError(t, err)
		require.Zero(t, n)
		require.Equal(t, before, cellRows(t, ctx, db))
	})
}

func TestSeedCellsCompletesAPartialSeed(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	part := region(t, "124,33,128,36", 0.05)
	n, err := db.Store.SeedCells(ctx, part, nil)
	require.NoError(t, err)
	require.EqualValues(t, 4800, n)

	full := region(t, "124,33,132,39", 0.05)
	n, err = db.Store.SeedCells(ctx, full, nil)
	require.NoError(t, err)
	require.EqualValues(t, 19200-4800, n)

	// Another step is another lattice: its cells are new rows even where ids coincide.
	coarse := region(t, "124,33,132,39", 0.1)
	n, err = db.Store.SeedCells(ctx, coarse, nil)
	require.NoError(t, err)
	require.EqualValues(t, 4800, n)
	require.Len(t, cellRows(t, ctx, db), 19200+4800)
}

func TestSeedCellsInBatches(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "124,33,132,39", 0.02) // 400 x 300 cells
	var calls []int
	n, err := db.Store.SeedCells(ctx, r, func(done int) { calls = append(calls, done) })
	require.NoError(t, err)
	require.EqualValues(t, 120_000, n)
	require.Equal(t, []int{50_000, 100_000, 120_000}, calls)
	seeded, err := db.Store.CountSeeded(ctx, r)
	require.NoError(t, err)
	require.EqualValues(t, 120_000, seeded)
}

func TestSeedCellsStopsOnCancel(t *testing.T) {
	t.Parallel()
	db := testutil.NewDB(t)
	ctx, cancel := context.WithCancel(testContext(t))
	r := region(t, "124,33,132,39", 0.02)
	n, err := db.Store.SeedCells(ctx, r, func(int) { cancel() })
	require.ErrorIs(t, err, context.Canceled)
	require.EqualValues(t, 50_000, n, "the first batch is committed before the cancel is seen")

	n, err = db.Store.SeedCells(testContext(t), r, nil)
	require.NoError(t, err)
	require.EqualValues(t, 70_000, n, "a second run finishes the seed")
}

func TestSeedCellsWithoutSchema(t *testing.T) {
	t.Parallel()
	db := testutil.NewEmptyDB(t)
	_, err := db.Store.SeedCells(testContext(t), region(t, "124,33,125,34", 0.05), nil)
	require.Error(t, err)
	require.True(t, store.IsSchemaError(err), "IsSchemaError(%v)", err)
}

func TestLoadCells(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "124,33,126,35", 0.05)
	_, err := db.Store.SeedCells(ctx, r, nil)
	require.NoError(t, err)
	input := func(k int) grid.Input {
		c := r.CellAt(k)
		return grid.Input{GridID: c.GridID, Params: grid.ReferenceParams(c.Lat, c.Lon)}
	}
	// asInputs reads Cells loaded with the inputs mu0, sigma, xi back as
	// grid inputs, checking each cell's centre.
	asInputs := func(t *testing.T, c model.Cells) []grid.Input {
		out := make([]grid.Input, c.Len())
		for i, id := range c.GridID {
			cell, err := r.Lattice.CellByID(id)
			require.NoError(t, err)
			require.Equal(t, cell.Lat, c.Lat[i])
			require.Equal(t, cell.Lon, c.Lon[i])
			out[i] = grid.Input{GridID: id, Params: grid.Params{Mu0: c.Inputs[0][i], Sigma: c.Inputs[1][i], Xi: c.Inputs[2][i]}}
		}
		return out
	}

	t.Run("returns inputs in the order asked", func(t *testing.T) {
		want := []grid.Input{input(17), input(3), input(1599), input(0), input(800)}
		ids := make([]int64, len(want))
		for i, in := range want {
			ids[i] = in.GridID
		}
		got, err := db.Store.LoadCells(ctx, 0.05, ids, model.DefaultInputs)
		require.NoError(t, err)
		require.Equal(t, want, asInputs(t, got))
	})

	t.Run("inputs in the order declared", func(t *testing.T) {
		got, err := db.Store.LoadCells(ctx, 0.05, []int64{input(5).GridID}, []string{"xi", "mu0"})
		require.NoError(t, err)
		require.Equal(t, [][]float64{{input(5).Xi}, {input(5).Mu0}}, got.Inputs)
	})

	t.Run("no ids, no inputs", func(t *testing.T) {
		got, err := db.Store.LoadCells(ctx, 0.05, nil, model.DefaultInputs)
		require.NoError(t, err)
		require.Zero(t, got.Len())
	})

	t.Run("missing cells", func(t *testing.T) {
		l := r.Lattice
		// Cells just north of the seeded box, and one at another step.
		north := []int64{l.GridID(r.Row1, r.Col0+5), l.GridID(r.Row1+2, r.Col0+9)}
		ids := []int64{input(4).GridID, north[0], input(2).GridID, north[1]}
		_, err := db.Store.LoadCells(ctx, 0.05, ids, model.DefaultInputs)
		var missing *store.MissingInputError
		require.ErrorAs(t, err, &missing)
		require.Equal(t, 0.05, missing.Step)
		require.Equal(t, 2, missing.Missing)
		require.Equal(t, 4, missing.Total)
		require.Equal(t, north[0], missing.First)
		require.Regexp(t, `^2 of 4 cells have no inputs in cell_params \(first grid_id \d+ at step 0\.05\); run: enqueuer seed --step 0\.05 --bbox \S+$`, err.Error())

		// The suggested command seeds exactly what was missing.
		bbox := regexp.MustCompile(`--bbox (\S+)$`).FindStringSubmatch(err.Error())[1]
		fix := region(t, bbox, 0.05)
		n, err := db.Store.SeedCells(ctx, fix, nil)
		require.NoError(t, err)
		require.EqualValues(t, fix.NumCells(), n, "the suggested bbox holds no seeded cell")
		got, err := db.Store.LoadCells(ctx, 0.05, ids, model.DefaultInputs)
		require.NoError(t, err)
		require.Equal(t, 4, got.Len())

		_, err = db.Store.LoadCells(ctx, 0.1, ids[:1], model.DefaultInputs)
		require.ErrorAs(t, err, &missing, "the same id at another step is another cell")
	})

	t.Run("missing ids off the lattice", func(t *testing.T) {
		_, err := db.Store.LoadCells(ctx, 0.05, []int64{-1}, model.DefaultInputs)
		require.EqualError(t, err, "1 of 1 cells have no inputs in cell_params (first grid_id -1 at step 0.05); run: enqueuer seed --step 0.05 --bbox LON_MIN,LAT_MIN,LON_MAX,LAT_MAX")
	})

	t.Run("an input cell_params has no column for", func(t *testing.T) {
		_, err := db.Store.LoadCells(ctx, 0.05, []int64{input(1).GridID}, []string{"mu0", "rain"})
		var unknown *store.UnknownInputError
		require.ErrorAs(t, err, &unknown)
		require.Contains(t, err.Error(), "cell_params has no column for some of the inputs mu0, rain")
	})

	t.Run("a NULL input is a missing one", func(t *testing.T) {
		_, err := db.Pool.Exec(ctx, `ALTER TABLE cell_params ADD COLUMN rain double precision`)
		require.NoError(t, err)
		_, err = db.Pool.Exec(ctx, `UPDATE cell_params SET rain = 1.5 WHERE step = 0.05 AND grid_id = $1`, input(1).GridID)
		require.NoError(t, err)
		got, err := db.Store.LoadCells(ctx, 0.05, []int64{input(1).GridID}, []string{"rain"})
		require.NoError(t, err)
		require.Equal(t, [][]float64{{1.5}}, got.Inputs)
		_, err = db.Store.LoadCells(ctx, 0.05, []int64{input(1).GridID, input(2).GridID}, []string{"rain"})
		var missing *store.MissingInputError
		require.ErrorAs(t, err, &missing)
		require.Equal(t, 1, missing.Missing)
		require.Equal(t, []string{"rain"}, missing.Null, "the column an import left empty")
		require.Zero(t, missing.NoRow)
		require.Contains(t, err.Error(), fmt.Sprintf("have no value of the input(s) rain in cell_params (grid_id %d at step 0.05", input(2).GridID))
		require.Contains(t, err.Error(), "import them (enqueuer import --step 0.05 --file F, a file with the columns grid_id,rain for those cells)")
		require.NotContains(t, err.Error(), "enqueuer seed", "imported inputs are not the seed's")

		// Cells with no row, of a model reading only imported inputs: import them.
		far := region(t, "10,50,10.1,50.05", 0.05)
		_, err = db.Store.LoadCells(ctx, 0.05, []int64{far.CellAt(0).GridID, far.CellAt(1).GridID}, []string{"rain"})
		require.ErrorAs(t, err, &missing)
		require.Equal(t, 2, missing.NoRow)
		require.Contains(t, err.Error(), "2 of 2 cells have no row in cell_params")
		require.Contains(t, err.Error(), "import the inputs rain for them")
		require.NotContains(t, err.Error(), "enqueuer seed")
	})
}

func TestCountSeeded(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	seeded := region(t, "124,33,132,39", 0.05)
	_, err := db.Store.SeedCells(ctx, seeded, nil)
	require.NoError(t, err)
	ids := map[int64]bool{}
	for k := range seeded.NumCells() {
		ids[seeded.CellAt(k).GridID] = true
	}

	for _, tc := range []struct{ name, bbox string }{
		{"same region", "124,33,132,39"},
		{"inside", "125,34,126,35"},
		{"overlapping to the west and south", "120,30,126,35"},
		{"overlapping to the east and north", "130,37,140,45"},
		{"wider on both sides", "100,35,150,36"},
		{"disjoint", "0,0,10,10"},
		{"whole width of the globe", "-180,35,180,35.2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := region(t, tc.bbox, 0.05)
			var want int64
			for k := range r.NumCells() {
				if ids[r.CellAt(k).GridID] {
					want++
				}
			}
			got, err := db.Store.CountSeeded(ctx, r)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}

	t.Run("another step", func(t *testing.T) {
		got, err := db.Store.CountSeeded(ctx, region(t, "124,33,132,39", 0.1))
		require.NoError(t, err)
		require.Zero(t, got)
	})
}

// BenchmarkSeedCells seeds the Korea bbox into a fresh schema per iteration
// and reports cells/s. Run it with
//
//	go test -run '^$' -bench SeedCells -benchtime 3x ./internal/store/
func BenchmarkSeedCells(b *testing.B) {
	for _, step := range []float64{0.05, 0.02} {
		r := region(b, "124,33,132,39", step)
		b.Run("step="+strconv.FormatFloat(step, 'g', -1, 64), func(b *testing.B) {
			ctx := testContext(b)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				db := testutil.NewDB(b)
				b.StartTimer()
				n, err := db.Store.SeedCells(ctx, r, nil)
				if err != nil {
					b.Fatal(err)
				}
				if n != int64(r.NumCells()) {
					b.Fatalf("seeded %d cells, want %d", n, r.NumCells())
				}
			}
			b.ReportMetric(float64(r.NumCells())*float64(b.N)/b.Elapsed().Seconds(), "cells/s")
		})
	}
}

func TestIDRuns(t *testing.T) {
	t.Parallel()
	lo, hi := store.IDRuns([]int64{9, 3, 4, 5, 4, 12, 10, 1})
	require.Equal(t, []int64{1, 3, 9, 12}, lo)
	require.Equal(t, []int64{1, 5, 10, 12}, hi)
	lo, hi = store.IDRuns(nil)
	require.Empty(t, lo)
	require.Empty(t, hi)
}
