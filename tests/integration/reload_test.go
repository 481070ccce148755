//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestWorkerReloadsModelsOnSIGHUP starts a worker whose models file lacks
// the kind a batch runs: the batch fails saying to reload (SIGHUP) or
// restart the workers. Once the file declares the kind, SIGHUP makes the
// same worker process (same PID) load it, and the next batch succeeds.
func TestWorkerReloadsModelsOnSIGHUP(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	examples := filepath.Join(testutil.RepoRoot(), "examples")
	entry := func(kind, which string) string {
		return fmt.Sprintf("  - kind: %s\n    command: [\"/usr/bin/python3\", \"python/reference_model.py\", %q]\n    workdir: %s\n", kind, which, examples)
	}
	before := "models:\n" + entry("hazard_py", "hazard")
	after := before + entry("ph_py", "ph")
	workerModels, allModels := filepath.Join(dir, "worker.yaml"), filepath.Join(dir, "all.yaml")
	require.NoError(t, os.WriteFile(workerModels, []byte(before), 0o644))
	require.NoError(t, os.WriteFile(allModels, []byte(after), 0o644))

	c := newCluster(t, "GRIDBATCH_MODELS_FILE="+allModels)
	_, errOut, code := c.Enqueuer("migrate")
	require.Equal(t, 0, code, errOut)
	_, errOut, code = c.Enqueuer("seed", "--bbox", "126,37,126.5,37.5", "--step", "0.05")
	require.Equal(t, 0, code, errOut)
	w := c.Worker("GRIDBATCH_MODELS_FILE=" + workerModels)
	logValue(t, w, regexp.MustCompile(`msg="worker (started)"`), 30*time.Second)

	run := func() (store.Batch, string) {
		out, errOut, _ := c.Enqueuer("run", "--kind", "ph_py", "--bbox", "126,37,126.5,37.5", "--step", "0.05", "--wait", "--progress-interval", "1s")
		return c.Batch(strings.SplitN(out, "\n", 2)[0]), errOut
	}
	b, errOut := run()
	require.Equal(t, store.StatusFailed, b.Status, errOut)
	status, _, _ := c.Enqueuer("status", b.ID)
	require.Contains(t, status+errOut, `unknown model kind "ph_py"`)
	require.Contains(t, status+errOut, "kill -HUP", "it says the workers must be reloaded")

	pid := w.Pid()
	require.NoError(t, os.WriteFile(workerModels, []byte(after), 0o644))
	w.Signal(syscall.SIGHUP)
	testutil.Eventually(t, 60*time.Second, "the worker restarts with the new models", func() bool {
		return strings.Count(w.LogText(), `msg="worker started"`) == 2
	})
	require.Contains(t, w.LogText(), "SIGHUP: the models file changed; restarting to load it")
	require.Equal(t, pid, w.Pid(), "the same process")
	require.False(t, w.Exited())

	b, errOut = run()
	require.Equal(t, store.StatusSucceeded, b.Status, errOut)
}
