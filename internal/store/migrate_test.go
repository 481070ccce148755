package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

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
	require.Equal(t, total, int(v), "each migration applied exactly once across all migrators")

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
