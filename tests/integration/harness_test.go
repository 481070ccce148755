//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	t   *testing.T
	r   *testutil.Redis
	db  *testutil.DB
	env []string
	n   int
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
	return &cluster{t: t, r: r, db: db, env: env}
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

// proc is a running binary whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs a binary in the background; it is killed when the test ends.
func (c *cluster) start(name string, env []string, args ...string) *proc {
	c.t.Helper()
	c.n++
	logPath := filepath.Join(c.t.TempDir(), fmt.Sprintf("%s-%d.log", name, c.n))
	f, err := os.Create(logPath)
	require.NoError(c.t, err)
	cmd := exec.Command(filepath.Join(testutil.Binaries(c.t), name), args...)
	cmd.Env = append(append([]string{}, c.env...), env...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(c.t, cmd.Start())
	p := &proc{name: fmt.Sprintf("%s-%d", name, c.n), cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	c.t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if c.t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			c.t.Logf("last lines of %s:\n%s", p.name, strings.Join(lines, "\n"))
		}
	})
	return p
}

func (c *cluster) worker(env ...string) *proc { return c.start("worker", env) }

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

func (c *cluster) batch(id string) store.Batch {
	c.t.Helper()
	b, err := c.db.Store.GetBatch(context.Background(), id)
	require.NoError(c.t, err)
	return b
}

// waitEnded waits until the batch has a final status.
func (c *cluster) waitEnded(id string, timeout time.Duration) store.Batch {
	c.t.Helper()
	var b store.Batch
	testutil.Eventually(c.t, timeout, "batch "+id+" to end", func() bool {
		b = c.batch(id)
		return b.Ended()
	})
	return b
}

// waitDone waits until at least n chunks of the batch have an outcome.
func (c *cluster) waitDone(id string, n int, timeout time.Duration) {
	c.t.Helper()
	testutil.Eventually(c.t, timeout, fmt.Sprintf("batch %s to have %d chunks done", id, n), func() bool {
		return c.batch(id).DoneChunks >= n
	})
}

// runID starts a batch and returns its ID.
func (c *cluster) runID(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.enqueuer(append([]string{"run"}, args...)...)
	require.Equal(c.t, 0, code, errOut)
	id := strings.SplitN(out, "\n", 2)[0]
	require.NotEmpty(c.t, id)
	return id
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
