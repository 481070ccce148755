//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// examplesModels is the GRIDBATCH_MODELS_FILE setting of examples/models.yaml.
func examplesModels(t *testing.T) string {
	return "GRIDBATCH_MODELS_FILE=" + filepath.Join(testutil.RepoRoot(), "examples", "models.yaml")
}

// TestPythonModelsMatchTheGoKernel runs whole 19,200-cell batches of the
// reference model in numpy (examples/python/reference_model.py, as ph_py
// and hazard_py) through 2 workers and checks every row against the Go
// kernel within 1e-12 relative.
func TestPythonModelsMatchTheGoKernel(t *testing.T) {
	t.Parallel()
	c := newCluster(t, examplesModels(t), "GRIDBATCH_CONCURRENCY=2")
	_, errOut, code := c.Enqueuer("migrate")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "created results table ph_py_timeseries")
	c.Seed()

	out, errOut, code := c.Enqueuer("models")
	require.Equal(t, 0, code, errOut)
	require.Regexp(t, `(?m)^ph_py\s+/usr/bin/python3 python/reference_model.py ph\s+mu0,sigma,xi\s+ssp126,ssp245,ssp585\s+2021-2100\s+2m0s$`, out)
	require.Regexp(t, `(?m)^ph\s+built-in\s`, out)

	w1, w2 := c.Worker(), c.Worker()
	for _, tc := range []struct {
		kind string
		ref  grid.Model
	}{{"ph_py", grid.PH}, {"hazard_py", grid.Hazard}} {
		out, errOut, code := c.Enqueuer("run", "--kind", tc.kind, "--chunk-size", "250", "--wait", "--progress-interval", "1s")
		require.Equal(t, 0, code, errOut)
		b := c.Batch(strings.SplitN(out, "\n", 2)[0])
		require.Equal(t, store.StatusSucceeded, b.Status)
		require.EqualValues(t, koreaCells, b.CompletedCells)
		n := testutil.CheckResultsAgainst(t, c.DB.Store, tc.kind, tc.ref, 1e-12, 0.05, nil)
		require.Equal(t, koreaCells*len(grid.Scenarios), n, "rows of %s", tc.kind)
	}
	// Long-lived processes: each worker started at most its concurrency
	// of each kind (77 chunks each), never one per chunk.
	for _, w := range []*testutil.Proc{w1, w2} {
		log := w.LogText()
		for _, kind := range []string{"ph_py", "hazard_py"} {
			starts := strings.Count(log, `"msg":"model process started","kind":"`+kind+`"`)
			require.LessOrEqual(t, starts, 2, "%s processes started by one worker", kind)
		}
	}
}

func TestModelsFileErrorsAreOneLine(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "models.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("models:\n  - kind: ph_py\n    command: [/usr/bin/python3]\n    timeout: soon\n"), 0o600))
	env := append(newCluster(t).Env(), "GRIDBATCH_MODELS_FILE="+bad)
	want := bad + `: entry 1 (kind "ph_py"): timeout: "soon" is not a positive duration such as 5m or 90s`
	for _, bin := range [][]string{{"enqueuer", "models"}, {"enqueuer", "migrate"}, {"enqueuer", "run", "--kind", "ph"}, {"worker"}, {"scheduler"}} {
		_, errOut, code := runBin(t, env, bin[0], bin[1:]...)
		require.Equal(t, 1, code, "%v: %s", bin, errOut)
		require.Equal(t, 1, strings.Count(errOut, "\n"), "%v prints one line: %s", bin, errOut)
		require.Contains(t, errOut, want, bin)
	}
}

func TestRunRefusesAnUndeclaredKind(t *testing.T) {
	t.Parallel()
	c := newCluster(t, examplesModels(t))
	_, errOut, code := c.Enqueuer("run", "--kind", "rain")
	require.Equal(t, 1, code)
	require.Equal(t, "enqueuer: unknown model kind \"rain\" (known: hazard, hazard_py, ph, ph_py)\n", errOut)
}

// TestABatchOfAModelWithoutItsTableIsRefused: migrate makes the tables of
// the models file; without it, run says so.
func TestABatchOfAModelWithoutItsTableIsRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t, examplesModels(t))
	c.Seed()
	_, errOut, code := c.Enqueuer("run", "--kind", "ph_py")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "model ph_py has no results table ph_py_timeseries; run 'enqueuer migrate' with this GRIDBATCH_MODELS_FILE")
}
