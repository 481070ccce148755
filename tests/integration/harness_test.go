//go:build integration

package integration

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// cluster is the suite's testutil.Cluster, with the integration suite's own
// helpers as its methods.
type cluster struct{ *testutil.Cluster }

func newCluster(t *testing.T, extraEnv ...string) *cluster {
	t.Helper()
	return &cluster{testutil.NewCluster(t, extraEnv...)}
}

// runBin runs one binary to completion with env and returns stdout, stderr and the exit code.
func runBin(t *testing.T, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	return testutil.RunBinary(t, filepath.Join(testutil.Binaries(t), name), env, args...)
}

// queued counts the tasks of a batch still in Redis (any state but completed).
func (c *cluster) queued(batchID string) int {
	c.T.Helper()
	insp := asynq.NewInspector(c.Redis.ClientOpt())
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
