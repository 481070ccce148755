//go:build integration

package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// cluster is one test's private Redis database and PostgreSQL schema, with
// the real binaries run against them.
type cluster struct {
	t       *testing.T
	r       *testutil.Redis
	db      *testutil.DB
	batches testutil.Batches
	env     []string
	n       int
}

func newCluster(t *testing.T, extraEnv ...string) *cluster {
	t.Helper()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	env := testutil.Env(r, db, append([]string{
		"GRIDBATCH_RECONCILE_INTERVAL=1s",
		"GRIDBATCH_RETRY_BASE=200ms",
		"GRIDBATCH_HTTP_ADDR=127.0.0.1:0",
	}, extraEnv...)...)
	return &cluster{t: t, r: r, db: db, batches: testutil.Batches{Store: db.Store}, env: env}
}

// seed seeds the 0.05° Korea grid (19,200 cells).
func (c *cluster) seed() {
	c.t.Helper()
	_, errOut, code := runBin(c.t, c.env, "enqueuer", "seed", "--bbox", "124,33,132,39", "--step", "0.05")
	require.Equal(c.t, 0, code, errOut)
}

func (c *cluster) enqueuer(args ...string) (string, string, int) {
	c.t.Helper()
	return runBin(c.t, c.env, "enqueuer", args...)
}

// runBin runs one binary to completion with env and returns stdout, stderr and the exit code.
func runBin(t *testing.T, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	return testutil.RunBinary(t, filepath.Join(testutil.Binaries(t), name), env, args...)
}

// start runs a binary in the background; it is killed when the test ends.
func (c *cluster) start(name string, env []string, args ...string) *testutil.Proc {
	c.t.Helper()
	c.n++
	return testutil.Start(c.t, fmt.Sprintf("%s-%d", name, c.n), filepath.Join(testutil.Binaries(c.t), name),
		append(append([]string{}, c.env...), env...), args...)
}

func (c *cluster) worker(env ...string) *testutil.Proc { return c.start("worker", env) }

func (c *cluster) batch(id string) store.Batch {
	c.t.Helper()
	return c.batches.Get(c.t, id)
}

// waitEnded waits until the batch has a final status.
func (c *cluster) waitEnded(id string, timeout time.Duration) store.Batch {
	c.t.Helper()
	return c.batches.WaitEnded(c.t, id, timeout)
}

// waitDone waits until at least n chunks of the batch have an outcome.
func (c *cluster) waitDone(id string, n int, timeout time.Duration) {
	c.t.Helper()
	c.batches.WaitDone(c.t, id, n, timeout)
}

// runID starts a batch and returns its ID.
func (c *cluster) runID(args ...string) string {
	c.t.Helper()
	return testutil.RunBatch(c.t, filepath.Join(testutil.Binaries(c.t), "enqueuer"), c.env, args...)
}

// queued counts the tasks of a batch still in Redis (any state but completed).
func (c *cluster) queued(batchID string) int {
	c.t.Helper()
	insp := asynq.NewInspector(c.r.ClientOpt())
	defer insp.Close()
	n := 0
	for _, q := range []string{"grid", "batch"} {
		for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
			insp.ListPendingTasks, insp.ListActiveTasks, insp.ListScheduledTasks, insp.ListRetryTasks,
		} {
			for page := 1; ; page++ {
				infos, err := list(q, asynq.PageSize(1000), asynq.Page(page))
				if err != nil {
					break
				}
				for _, ti := range infos {
					if strings.HasPrefix(ti.ID, batchID) {
						n++
					}
				}
				if len(infos) < 1000 {
					break
				}
			}
		}
	}
	return n
}
