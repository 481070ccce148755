//go:build integration

package integration

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestEveryBinaryAnswersHelpAndPrintConfig(t *testing.T) {
	env := append(testutil.Env(testutil.NewRedis(t), testutil.NewEmptyDB(t)),
		"GRIDBATCH_DATABASE_URL=postgres://gridbatch:hunter2@127.0.0.1:5440/gridbatch",
		"GRIDBATCH_MONITOR_PASSWORD=alsosecret")
	for _, bin := range []string{"worker", "scheduler", "monitor", "enqueuer"} {
		t.Run(bin, func(t *testing.T) {
			out, _, code := runBin(t, env, bin, "--help")
			require.Equal(t, 0, code)
			require.Contains(t, out, "Usage:")
			if bin == "enqueuer" {
				out, _, code = runBin(t, env, bin, "migrate", "--print-config")
			} else {
				out, _, code = runBin(t, env, bin, "--print-config")
			}
			require.Equal(t, 0, code)
			require.Contains(t, out, "GRIDBATCH_DATABASE_URL=postgres://gridbatch:xxxxx@127.0.0.1:5440/gridbatch")
			require.NotContains(t, out, "hunter2")
			require.NotContains(t, out, "alsosecret")
		})
	}
}

func TestBadDatabaseURLIsOneLineWithoutPassword(t *testing.T) {
	r := testutil.NewRedis(t)
	for name, url := range map[string]string{
		"unreachable": "postgres://gridbatch:hunter2@127.0.0.1:1/gridbatch?sslmode=disable",
		"bad scheme":  "mysql://gridbatch:hunter2@127.0.0.1/gridbatch",
		"unparsable":  "postgres://gridbatch:hunter2@127.0.0.1:notaport/gridbatch",
	} {
		t.Run(name, func(t *testing.T) {
			env := append(testutil.Env(r, &testutil.DB{URL: ""}), "GRIDBATCH_DATABASE_URL="+url)
			out, errOut, code := runBin(t, env, "enqueuer", "migrate")
			require.Equal(t, 1, code)
			require.Empty(t, out)
			require.Equal(t, 1, strings.Count(errOut, "\n"), "one line: %q", errOut)
			require.Contains(t, errOut, "GRIDBATCH_DATABASE_URL")
			require.NotContains(t, errOut, "hunter2")
		})
	}
}

func TestConcurrentMigrateProcesses(t *testing.T) {
	db := testutil.NewEmptyDB(t)
	env := testutil.Env(testutil.NewRedis(t), db)
	var wg sync.WaitGroup
	codes := make([]int, 2)
	errs := make([]string, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i], codes[i] = runBin(t, env, "enqueuer", "migrate")
		}()
	}
	wg.Wait()
	require.Equal(t, []int{0, 0}, codes, "stderr: %v", errs)
	ctx := context.Background()
	var tables int
	require.NoError(t, db.Pool.QueryRow(ctx,
		`SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'batch_runs'`, db.Schema).Scan(&tables))
	require.Equal(t, 1, tables)
	v, err := db.Store.SchemaVersion(ctx)
	require.NoError(t, err)
	require.Positive(t, v)
}

// TestEveryCommandOnAnUnmigratedDatabaseSaysToMigrate runs each enqueuer
// command that reads the database on an empty schema: each fails with one
// line telling the operator to migrate, not PostgreSQL's raw error.
func TestEveryCommandOnAnUnmigratedDatabaseSaysToMigrate(t *testing.T) {
	env := testutil.Env(testutil.NewRedis(t), testutil.NewEmptyDB(t))
	for _, args := range [][]string{
		{"seed", "--bbox", "124,33,125,34", "--step", "0.5"},
		{"run", "--kind", "ph"},
		{"status"},
		{"status", "ph-20261122-041503-3fa9c1"},
		{"list"},
		{"cancel", "ph-20261122-041503-3fa9c1"},
		{"results", "--kind", "ph", "--scenario", "ssp245", "--lat", "37.5", "--lon", "127", "--step", "0.05"},
		{"dlq", "list"},
		{"dlq", "show", "ph-20261122-041503-3fa9c1:c000001"},
		{"dlq", "requeue", "--all"},
		{"dlq", "purge", "--batch", "ph-20261122-041503-3fa9c1", "--yes"},
		{"export", "--batch", "ph-20261122-041503-3fa9c1", "--out", "-"},
		{"export", "--kind", "ph", "--out", "-"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, errOut, code := runBin(t, env, "enqueuer", args...)
			requireOneLineError(t, out, errOut, code, "run: enqueuer migrate")
			require.NotContains(t, errOut, "SQLSTATE")
		})
	}
}

// TestUnreachableRedisIsOneLine starts every binary with nothing listening
// at GRIDBATCH_REDIS_URL: each prints gridbatch's own line and exits 1,
// without go-redis's log lines before it.
func TestUnreachableRedisIsOneLine(t *testing.T) {
	env := append(testutil.Env(testutil.NewRedis(t), testutil.NewDB(t)),
		"GRIDBATCH_REDIS_URL=redis://127.0.0.1:1/0", "GRIDBATCH_HTTP_ADDR=127.0.0.1:0",
		"GRIDBATCH_MONITOR_ADDR=127.0.0.1:0", "GRIDBATCH_MONITOR_USER=ops", "GRIDBATCH_MONITOR_PASSWORD=secret-of-length")
	for _, cmd := range [][]string{{"enqueuer", "run", "--kind", "ph"}, {"worker"}, {"scheduler"}, {"monitor"}} {
		t.Run(cmd[0], func(t *testing.T) {
			out, errOut, code := runBin(t, env, cmd[0], cmd[1:]...)
			require.Equal(t, 1, code, "stderr: %s", errOut)
			require.Empty(t, out)
			require.Equal(t, cmd[0]+": GRIDBATCH_REDIS_URL: cannot reach Redis at redis://127.0.0.1:1/0: "+
				"dial tcp 127.0.0.1:1: connect: connection refused (is it up and the URL right?)\n", errOut)
		})
	}
}
