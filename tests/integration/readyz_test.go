//go:build integration

package integration

import (
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestReadyzOnUnmigratedDatabase starts a worker on a database (a fresh
// schema) that was never migrated: /readyz answers 503 and says to run
// `enqueuer migrate`; once migrated, "ready".
func TestReadyzOnUnmigratedDatabase(t *testing.T) {
	t.Parallel()
	db := testutil.NewEmptyDB(t)
	env := testutil.Env(testutil.NewRedis(t), db, "GRIDBATCH_HTTP_ADDR=127.0.0.1:0")
	w := testutil.Start(t, "worker-1", filepath.Join(testutil.Binaries(t), "worker"), env)
	base := "http://" + logValue(t, w, regexp.MustCompile(`msg="worker started".* http_addr=(\S+)`), 30*time.Second)
	get := func() (int, string) {
		resp, err := http.Get(base + "/readyz")
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(body)
	}
	code, body := get()
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "not migrated")
	require.Contains(t, body, "enqueuer migrate")

	_, errOut, exit := runBin(t, env, "enqueuer", "migrate")
	require.Equal(t, 0, exit, errOut)
	code, body = get()
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ready", strings.TrimSpace(body))
}
