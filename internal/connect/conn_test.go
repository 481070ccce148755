package connect_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// connections counts the PostgreSQL connections named app.
func connections(t *testing.T, db *testutil.DB, app string) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n))
	return n
}

func TestOpenBuildsOnWhatItOpenedAndCloseClosesIt(t *testing.T) {
	ctx := context.Background()
	r, db := testutil.NewRedis(t), testutil.NewDB(t)
	app := "gridbatch-connect-test-" + strconv.Itoa(os.Getpid()) // under 64 bytes, PostgreSQL's limit
	var computeGot *model.Set
	conn, err := connect.Open(ctx, config.Common{RedisURL: r.URL, DatabaseURL: db.URL}, connect.Options{App: app,
		Compute: func(set *model.Set) batch.Computer { computeGot = set; return nil }})
	require.NoError(t, err)
	require.Same(t, conn.Models, computeGot, "Compute is given the model set")
	require.Equal(t, batch.WorkerName(os.Getpid()), conn.Batch.Worker(), "the worker name defaults to host:pid")
	require.Equal(t, []string{"hazard", "ph"}, conn.Models.Kinds(), "no models file: the built-in models")
	require.Same(t, conn.Models, conn.Batch.Models())
	require.NotNil(t, conn.RedisOpt)
	require.NoError(t, conn.Redis.Ping(ctx).Err())
	require.Positive(t, connections(t, db, app), "the store's connections carry the App name")
	dq, err := conn.DLQ(nil, dlqConfig())
	require.NoError(t, err)
	require.NotNil(t, dq)

	conn.Close()
	require.Error(t, conn.Redis.Ping(ctx).Err(), "Close closes the Redis client")
	testutil.Eventually(t, 10*time.Second, "the store's connections to close", func() bool { return connections(t, db, app) == 0 })
}

func TestNewLeavesWhatItWasGivenOpen(t *testing.T) {
	ctx := context.Background()
	r, db := testutil.NewRedis(t), testutil.NewDB(t)
	conn := connect.New(db.Store, r.Client, connect.Options{Batch: batchConfig("test-worker")})
	require.Equal(t, "test-worker", conn.Batch.Worker())
	require.Nil(t, conn.RedisOpt)
	conn.Close()
	require.NoError(t, r.Client.Ping(ctx).Err())
	require.NoError(t, db.Store.Ping(ctx))
}

func TestOpenErrorsNameTheVariableAndCloseWhatWasOpened(t *testing.T) {
	ctx := context.Background()
	r, db := testutil.NewRedis(t), testutil.NewDB(t)
	for name, tc := range map[string]struct {
		c    config.Common
		want string
	}{
		"redis": {config.Common{RedisURL: "redis://127.0.0.1:1/0", DatabaseURL: db.URL},
			"GRIDBATCH_REDIS_URL: cannot reach Redis at redis://127.0.0.1:1/0: dial tcp 127.0.0.1:1: connect: connection refused (is it up and the URL right?)"},
		"database": {config.Common{RedisURL: r.URL, DatabaseURL: "postgres://gridbatch:hunter2@127.0.0.1:1/gridbatch?sslmode=disable"},
			"GRIDBATCH_DATABASE_URL: cannot connect to PostgreSQL at "},
		"models file": {config.Common{RedisURL: r.URL, DatabaseURL: db.URL, ModelsFile: "/nonexistent/models.yaml"},
			"GRIDBATCH_MODELS_FILE: models file /nonexistent/models.yaml: no such file or directory"},
	} {
		t.Run(name, func(t *testing.T) {
			computed := false
			conn, err := connect.Open(ctx, tc.c, connect.Options{
				Compute: func(*model.Set) batch.Computer { computed = true; return nil }})
			require.Nil(t, conn)
			require.False(t, computed, "nothing is started in a process that cannot connect")
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
	// What the failed Opens had opened is closed: TestMain's leak check
	// fails on a Redis client or a pool left behind.
}

func dlqConfig() dlq.Config { return dlq.Config{SweepInterval: time.Minute} }

func batchConfig(worker string) batch.Config { return batch.Config{Worker: worker} }
