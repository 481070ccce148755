package store_test

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestMigrateConcurrently(t *testing.T) {
	db := testutil.NewEmptyDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	applied := make([][]int64, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := store.Open(ctx, store.Options{URL: db.URL, MaxConns: 2})
			if err != nil {
				errs[i] = err
				return
			}
			defer s.Close()
			applied[i], errs[i] = s.Migrate(ctx)
		}()
	}
	wg.Wait()
	total := 0
	for i := range n {
		require.NoError(t, errs[i], "migrator %d", i)
		total += len(applied[i])
	}
	v, err := db.Store.SchemaVersion(ctx)
	require.NoError(t, err)
	files, err := filepath.Glob("migrations/*.sql")
	require.NoError(t, err)
	require.Equal(t, len(files), total, "each migration applied exactly once across all migrators")
	last, err := strconv.Atoi(strings.SplitN(filepath.Base(files[len(files)-1]), "_", 2)[0])
	require.NoError(t, err)
	require.Equal(t, last, int(v), "the schema is at the last migration")

	for _, table := range []string{"batch_runs", "chunk_runs", "cell_params", "ph_timeseries", "hazard_timeseries", "dead_letters"} {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx,
			`SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2`, db.Schema, table).Scan(&n))
		require.Equal(t, 1, n, "table %s exists once", table)
	}
}

func TestOpenBadURLHidesPassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := store.Open(ctx, store.Options{URL: "postgres://u:hunter2@127.0.0.1:1/x?sslmode=disable", ConnectTimeout: time.Second})
	require.Error(t, err)
	require.Contains(t, err.Error(), "GRIDBATCH_DATABASE_URL")
	require.NotContains(t, err.Error(), "hunter2")
}

// TestMigrateResultsPerCell migrates a schema as migration 00004 laid it
// out (one row per cell and scenario, a float8[] each; a published batch
// attached to ph_results, an unpublished one in its own table) to one row
// per cell: every series reads back bit for bit, published and own, through
// ReadSeries, ReadBatchSeries and the view.
func TestMigrateResultsPerCell(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	// v1 makes a schema at migration 5 holding batches pub (published),
	// own (not) and empty (no rows yet), each with cells of the scenarios
	// given.
	v1 := func(t *testing.T, cells map[string]map[int64][]string) *testutil.DB {
		db := testutil.NewEmptyDB(t)
		_, err := db.Store.MigrateTo(ctx, 5)
		require.NoError(t, err)
		for _, id := range []string{"pub", "own", "empty"} {
			_, err := db.Pool.Exec(ctx, `INSERT INTO batch_runs (id, kind, status, step, lon_min, lat_min, lon_max, lat_max, chunk_size,
				total_chunks, total_cells, deadline_at, lock_expires_at, results_table, ended_at)
				VALUES ($1, 'ph', 'partial', 0.05, 124, 33, 125, 34, 10, 1, 3, now(), now(), gridbatch_batch_table($1), now())`, id)
			require.NoError(t, err)
			_, err = db.Pool.Exec(ctx, `DO $$ BEGIN EXECUTE format('CREATE TABLE %I (LIKE ph_results INCLUDING DEFAULTS, CHECK (batch_id = %L))',
				gridbatch_batch_table('`+id+`'), '`+id+`'); END $$`)
			require.NoError(t, err)
			var table string
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT gridbatch_batch_table($1)`, id).Scan(&table))
			for cell, scenarios := range cells[id] {
				for _, sc := range scenarios {
					_, err := db.Pool.Exec(ctx, `INSERT INTO `+pgx.Identifier{table}.Sanitize()+` (step, grid_id, scenario, first_year, series, batch_id)
						VALUES (0.05, $1, $2, 2021, $3, $4)`, cell, sc, migratedValues(id, cell, sc), id)
					require.NoError(t, err)
				}
			}
			if id == "pub" {
				_, err = db.Pool.Exec(ctx, `ALTER TABLE ph_results ATTACH PARTITION `+pgx.Identifier{table}.Sanitize()+` FOR VALUES IN ('pub')`)
				require.NoError(t, err)
				_, err = db.Pool.Exec(ctx, `INSERT INTO published_batches (kind, batch_id) VALUES ('ph', 'pub');
					UPDATE batch_runs SET published_at = now() WHERE id = 'pub'`)
				require.NoError(t, err)
			}
		}
		return db
	}
	all := []string{"ssp585", "ssp126", "ssp245"} // not in name order: the rows' order must not matter
	db := v1(t, map[string]map[int64][]string{"pub": {1: all, 2: all, 3: all}, "own": {2: all, 3: all}})
	_, err := db.Store.Migrate(ctx)
	require.NoError(t, err)

	same := func(want, got []float64, what string) {
		t.Helper()
		require.Len(t, got, len(want), what)
		for i := range want {
			require.Equal(t, math.Float64bits(want[i]), math.Float64bits(got[i]), "%s year %d", what, i)
		}
	}
	for _, cell := range []int64{1, 2, 3} {
		for _, sc := range all {
			got, err := db.Store.ReadSeries(ctx, "ph", 0.05, cell, sc)
			require.NoError(t, err)
			require.Equal(t, "pub", got.BatchID)
			same(migratedValues("pub", cell, sc), got.Values, fmt.Sprintf("published cell %d %s", cell, sc))
			var view []float64
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT series FROM ph_timeseries WHERE step = 0.05 AND grid_id = $1 AND scenario = $2`, cell, sc).Scan(&view))
			same(migratedValues("pub", cell, sc), view, fmt.Sprintf("ph_timeseries cell %d %s", cell, sc))
			if cell == 1 {
				continue
			}
			own, err := db.Store.ReadBatchSeries(ctx, "own", 0.05, cell, sc)
			require.NoError(t, err)
			same(migratedValues("own", cell, sc), own.Values, fmt.Sprintf("own cell %d %s", cell, sc))
		}
	}
	b, err := db.Store.GetBatch(ctx, "own")
	require.NoError(t, err)
	require.Equal(t, store.SeriesLayout{Names: []string{"ssp126", "ssp245", "ssp585"}, FirstYear: 2021, Years: 80}, b.Layout)
	// A batch without rows has no layout to convert: it reads as none
	// (NULLs), and has no series.
	b, err = db.Store.GetBatch(ctx, "empty")
	require.NoError(t, err)
	require.Equal(t, store.SeriesLayout{}, b.Layout)
	_, err = db.Store.ReadBatchSeries(ctx, "empty", 0.05, 2, "ssp126")
	require.ErrorIs(t, err, store.ErrNoSeries)
	var left int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relnamespace = to_regnamespace(current_schema())
		AND (relname LIKE '%\_v1' OR relname LIKE '%\_legacy')`).Scan(&left))
	require.Zero(t, left, "no table of the old layout is left")

	// A cell missing a scenario cannot be laid out as one row: the
	// migration stops, naming the batch, and the schema stays as it was.
	db = v1(t, map[string]map[int64][]string{"pub": {1: all, 2: all[:2]}, "own": {}})
	_, err = db.Store.Migrate(ctx)
	require.ErrorContains(t, err, "batch pub: 1 of its 2 cells lack one of the scenarios")
	v, err := db.Store.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Equal(t, int64(5), v)
}

// migratedValues are the 80 values of a cell's series in a batch, each
// only surviving at full precision, -0 and a subnormal among them.
func migratedValues(batch string, cell int64, scenario string) []float64 {
	v := make([]float64, 80)
	for i := range v {
		v[i] = math.Nextafter(float64(len(batch))+float64(cell)+float64(len(scenario)+int(scenario[5]))/7+0.01*float64(i), 0)
	}
	v[0], v[1] = math.Copysign(0, -1), 5e-324
	return v
}
