package testutil

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/store"
)

// Cluster is one test's private Redis database and PostgreSQL schema, with
// the real binaries run against them: one-shot runs (Run, RunBatch, Seed),
// processes in the background (Start, Worker), and the batches they leave
// (Batch, WaitDone, WaitEnded). The integration and chaos suites both run
// on it.
type Cluster struct {
	T     *testing.T
	Redis *Redis
	DB    *DB
	// Batches reads the batches; set its RetryReads for tests that stop or
	// restart PostgreSQL.
	Batches Batches
	// Bin is the folder holding the binaries; empty means Binaries' (built
	// on first use).
	Bin string

	env []string
	n   int
}

// NewCluster returns a cluster on a fresh Redis database and migrated
// schema. Its binaries run with Env: the current environment, the two
// URLs, text logs, a 1 s reconcile interval, a 200 ms retry base, an HTTP
// server on a free port, then extraEnv.
func NewCluster(t *testing.T, extraEnv ...string) *Cluster {
	t.Helper()
	r := NewRedis(t)
	db := NewDB(t)
	env := Env(r, db, append([]string{
		"GRIDBATCH_RECONCILE_INTERVAL=1s",
		"GRIDBATCH_RETRY_BASE=200ms",
		"GRIDBATCH_HTTP_ADDR=127.0.0.1:0",
	}, extraEnv...)...)
	return &Cluster{T: t, Redis: r, DB: db, Batches: Batches{Store: db.Store}, env: env}
}

// Env returns a copy of the cluster's environment with extra appended.
func (c *Cluster) Env(extra ...string) []string {
	return append(append([]string{}, c.env...), extra...)
}

// AddEnv appends extra to the environment of every binary the cluster
// runs from now on.
func (c *Cluster) AddEnv(extra ...string) { c.env = append(c.env, extra...) }

// Path is the path of the binary name.
func (c *Cluster) Path(name string) string {
	c.T.Helper()
	bin := c.Bin
	if bin == "" {
		bin = Binaries(c.T)
	}
	return filepath.Join(bin, name)
}

// Run runs the binary name to completion with Env(extra...) and args and
// returns its stdout, stderr and exit code (RunBinary).
func (c *Cluster) Run(name string, extra []string, args ...string) (string, string, int) {
	c.T.Helper()
	return RunBinary(c.T, c.Path(name), c.Env(extra...), args...)
}

// Enqueuer runs the enqueuer with args (Run).
func (c *Cluster) Enqueuer(args ...string) (string, string, int) {
	c.T.Helper()
	return c.Run("enqueuer", nil, args...)
}

// Seed seeds the 0.05° Korea grid (19,200 cells); the enqueuer must exit 0.
func (c *Cluster) Seed() {
	c.T.Helper()
	_, errOut, code := c.Enqueuer("seed", "--bbox", "124,33,132,39", "--step", "0.05")
	require.Equal(c.T, 0, code, errOut)
}

// RunBatch runs `enqueuer run args…`, requires it to exit 0 and returns the
// batch ID it printed (RunBatch).
func (c *Cluster) RunBatch(args ...string) string {
	c.T.Helper()
	return RunBatch(c.T, c.Path("enqueuer"), c.env, args...)
}

// Start runs the binary name in the background with Env(extra...) and
// args, as name-N (the Nth process the cluster started); it is killed when
// the test ends (Start).
func (c *Cluster) Start(name string, extra []string, args ...string) *Proc {
	c.T.Helper()
	c.n++
	return Start(c.T, fmt.Sprintf("%s-%d", name, c.n), c.Path(name), c.Env(extra...), args...)
}

// Worker starts a worker with Env(extra...).
func (c *Cluster) Worker(extra ...string) *Proc {
	c.T.Helper()
	return c.Start("worker", extra)
}

// Batch returns the batch; a failed read fails the test.
func (c *Cluster) Batch(id string) store.Batch {
	c.T.Helper()
	return c.Batches.Get(c.T, id)
}

// WaitEnded waits up to timeout until the batch has a final status and
// returns it.
func (c *Cluster) WaitEnded(id string, timeout time.Duration) store.Batch {
	c.T.Helper()
	return c.Batches.WaitEnded(c.T, id, timeout)
}

// WaitDone waits up to timeout until at least n chunks of the batch have
// an outcome.
func (c *Cluster) WaitDone(id string, n int, timeout time.Duration) {
	c.T.Helper()
	c.Batches.WaitDone(c.T, id, n, timeout)
}
