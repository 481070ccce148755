//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRunWaitWarnsWithoutWorker runs `enqueuer run --wait` with no worker:
// within 30 s it says that no worker serves the queue and how to start
// one; once a worker starts, the batch ends succeeded.
func TestRunWaitWarnsWithoutWorker(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	_, errOut, code := c.Enqueuer("migrate")
	require.Equal(t, 0, code, errOut)
	_, errOut, code = c.Enqueuer("seed", "--bbox", "126,37,126.5,37.5", "--step", "0.05")
	require.Equal(t, 0, code, errOut)
	run := c.Start("enqueuer", nil, "run", "--kind", "ph", "--bbox", "126,37,126.5,37.5", "--step", "0.05", "--wait", "--progress-interval", "2s")
	start := time.Now()
	require.Eventually(t, func() bool {
		return strings.Contains(run.LogText(), "warning: no worker serves the batch and grid queues")
	},
		30*time.Second, 200*time.Millisecond, "no warning within 30 s:\n%s", run.LogText())
	t.Logf("warned after %s", time.Since(start).Round(100*time.Millisecond))
	require.Contains(t, run.LogText(), "`worker &`", "it says how to start one")
	require.Contains(t, run.LogText(), "tasks pending")

	c.Worker()
	require.Equal(t, 0, run.Wait(t, 2*time.Minute), run.LogText())
	require.Contains(t, run.LogText(), "succeeded")
}
