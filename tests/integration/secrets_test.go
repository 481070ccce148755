//go:build integration

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestSecretsStayHidden: a password holding @ is masked whole in
// --print-config, a password in a flag is refused, and *_FILE variables
// give secrets without the environment or the command line.
func TestSecretsStayHidden(t *testing.T) {
	t.Parallel()
	base := testutil.Env(testutil.NewRedis(t), testutil.NewEmptyDB(t))
	env := append(base,
		"GRIDBATCH_REDIS_URL=redis://:xx@sPw@127.0.0.1:6379/0",
		"GRIDBATCH_DATABASE_URL=postgres://gridbatch:hunter2@a@127.0.0.1:5440/gridbatch?sslmode=verify-full",
		"GRIDBATCH_MONITOR_PASSWORD=alsosecret-long")
	for _, bin := range []string{"worker", "scheduler", "monitor", "enqueuer"} {
		t.Run(bin+" masks a password holding @", func(t *testing.T) {
			args := []string{"--print-config"}
			if bin == "enqueuer" {
				args = []string{"migrate", "--print-config"}
			}
			out, errOut, code := runBin(t, env, bin, args...)
			require.Equal(t, 0, code, errOut)
			require.Contains(t, out, "GRIDBATCH_REDIS_URL=redis://:xxxxx@127.0.0.1:6379/0\n")
			require.Contains(t, out, "GRIDBATCH_DATABASE_URL=postgres://gridbatch:xxxxx@127.0.0.1:5440/gridbatch?sslmode=verify-full\n")
			for _, secret := range []string{"sPw", "hunter2", "a@127", "alsosecret"} {
				require.NotContains(t, out, secret)
			}
		})
		t.Run(bin+" refuses a password in a flag", func(t *testing.T) {
			args := []string{"--database-url", "postgres://gridbatch:hunter2@127.0.0.1/x", "--print-config"}
			if bin == "enqueuer" {
				args = append([]string{"migrate"}, args...)
			}
			out, errOut, code := runBin(t, base, bin, args...)
			require.Equal(t, 1, code, out)
			require.Contains(t, errOut, "--database-url would show its secret to every user of the machine (ps, /proc/PID/cmdline): set GRIDBATCH_DATABASE_URL, or GRIDBATCH_DATABASE_URL_FILE")
			require.NotContains(t, errOut+out, "hunter2")
		})
	}

	t.Run("a secret from a _FILE variable", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "redis-url")
		require.NoError(t, os.WriteFile(file, []byte("redis://:fromfile@127.0.0.1:6379/3\n"), 0o600))
		var env []string
		for _, kv := range base {
			if !strings.HasPrefix(kv, "GRIDBATCH_REDIS_URL=") {
				env = append(env, kv)
			}
		}
		out, errOut, code := runBin(t, append(env, "GRIDBATCH_REDIS_URL_FILE="+file), "worker", "--print-config")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "GRIDBATCH_REDIS_URL=redis://:xxxxx@127.0.0.1:6379/3\n")
	})
}
