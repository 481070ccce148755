//go:build integration

package integration

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestDemoPrintedLines runs the lines `make demo` ends with
// (scripts/demo-next.sh, which scripts/demo.sh prints) in a fresh shell,
// env -i bash -c, with nothing of this process's environment: through
// them alone, the PATH and the two URLs reach the services, and the three
// commands they suggest (status, results, export) answer about a batch.
// The lines are printed for the tests' services rather than the demo's
// ports (GRIDBATCH_REDIS_PORT, GRIDBATCH_PG_PORT, as for services.sh) and
// the binaries of this test; they reach the public schema, as the demo's do.
func TestDemoPrintedLines(t *testing.T) {
	t.Parallel()
	redisURL, err := url.Parse(testutil.RedisURL())
	require.NoError(t, err)
	pgURL, err := url.Parse(testutil.DatabaseURL())
	require.NoError(t, err)
	bin := testutil.Binaries(t)
	script := filepath.Join(testutil.RepoRoot(), "scripts", "demo-next.sh")
	id := fmt.Sprintf("ph-demo-lines-%d", time.Now().UnixNano())
	cmd := exec.Command(script, id)
	cmd.Env = append(os.Environ(), "GRIDBATCH_REDIS_PORT="+redisURL.Port(), "GRIDBATCH_PG_PORT="+pgURL.Port(), "GRIDBATCH_BIN_DIR="+bin)
	lines, err := cmd.Output()
	require.NoError(t, err)
	t.Logf("printed:\n%s", lines)
	require.Contains(t, string(lines), "http://127.0.0.1:8080/", "the monitor's URL")

	dir := t.TempDir()
	fresh := func(script string) (string, error) {
		cmd := exec.Command("env", "-i", "bash", "-c", script)
		cmd.Dir = dir
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	// Before the batch exists, the lines alone reach the database: migrate.
	header := string(lines[:bytes.Index(lines, []byte("# The monitor"))])
	out, err := fresh("set -e\n" + header + "enqueuer migrate")
	require.NoError(t, err, out)

	st, err := store.Open(context.Background(), store.Options{URL: testutil.DatabaseURL()})
	require.NoError(t, err)
	defer st.Close()
	r, err := grid.ParseRegion(0.05, "126.9,37.5,127.05,37.6", 0)
	require.NoError(t, err)
	testutil.StoreBatch(t, st, id, grid.KindPH, grid.PH, r, 10, nil, store.StatusSucceeded)

	out, err = fresh("set -e -o pipefail\n" + string(lines))
	require.NoError(t, err, out)
	require.Contains(t, out, id, "enqueuer status shows the batch")
	require.Contains(t, out, "succeeded")
	require.Regexp(t, `(?m)^2021 0\.\d+`, out, "enqueuer results prints the series")
	require.Contains(t, out, "exported batch "+id)
	_, err = os.Stat(filepath.Join(dir, "ph.nc"))
	require.NoError(t, err)
}
