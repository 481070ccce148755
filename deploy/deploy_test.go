// Package deploy_test checks the deployment files — Dockerfile,
// docker-compose.yml, .env.example and deploy/k8s — by parsing them, since
// the machines that run the tests have no container engine. Each setting a
// file passes to a binary is parsed and validated by that binary's own
// configuration code (internal/config), so a file and the code cannot drift
// apart unnoticed.
package deploy_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/config"
)

// graceMargin is how much longer than GRIDBATCH_SHUTDOWN_TIMEOUT a worker
// must be given before it is killed: after the timeout it still requeues its
// in-flight tasks and closes its pools.
const graceMargin = 5 * time.Second

// repoRoot is the module root, the parent of this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	require.NoError(t, err)
	require.FileExists(t, filepath.Join(root, "go.mod"), "the tests run from deploy/, below the module root")
	return root
}

// readRepoFile returns a file of the repository by its slash-separated path.
func readRepoFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), filepath.FromSlash(path)))
	require.NoError(t, err)
	return b
}

// commands are the binaries the image holds: one per directory of cmd/.
func commands(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(repoRoot(t), "cmd"))
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	require.NotEmpty(t, names)
	return names
}

// binaryConfig is what every per-binary configuration in internal/config has.
type binaryConfig interface {
	Bind(*config.Set)
	Validate() error
}

func newConfig(binary string) (binaryConfig, error) {
	switch binary {
	case "worker":
		return &config.Worker{}, nil
	case "scheduler":
		return &config.Scheduler{}, nil
	case "enqueuer":
		return &config.Enqueuer{}, nil
	case "monitor":
		return &config.Monitor{}, nil
	}
	return nil, fmt.Errorf("no configuration known for binary %q", binary)
}

// settings parses env the way the named binary does when it starts and
// validates the result. It returns a *config.Worker, *config.Scheduler,
// *config.Enqueuer or *config.Monitor.
func settings(binary string, env map[string]string) (binaryConfig, error) {
	cfg, err := newConfig(binary)
	if err != nil {
		return nil, err
	}
	set := config.NewSet(binary, "", "").WithLookup(func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
	cfg.Bind(set)
	if err := set.Parse(nil); err != nil {
		return nil, fmt.Errorf("%s: %w", binary, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", binary, err)
	}
	return cfg, nil
}

// knownVariables are the environment variables some gridbatch binary reads.
func knownVariables(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for _, binary := range []string{"worker", "scheduler", "enqueuer", "monitor"} {
		cfg, err := newConfig(binary)
		require.NoError(t, err)
		set := config.NewSet(binary, "", "").WithLookup(func(string) (string, bool) { return "", false })
		cfg.Bind(set)
		var out bytes.Buffer
		set.PrintConfig(&out)
		for line := range strings.Lines(out.String()) {
			key, _, _ := strings.Cut(line, "=")
			if strings.HasPrefix(key, "GRIDBATCH_") {
				known[key] = true
			}
		}
	}
	require.Contains(t, known, "GRIDBATCH_SHUTDOWN_TIMEOUT")
	return known
}

// requireKnownVariables fails for a GRIDBATCH_* name no binary reads: a typo
// there would silently leave the default in force.
func requireKnownVariables(t *testing.T, where string, names []string) {
	t.Helper()
	known := knownVariables(t)
	for _, name := range names {
		if strings.HasPrefix(name, "GRIDBATCH_") {
			require.True(t, known[name], "%s sets %s, which no gridbatch binary reads", where, name)
		}
	}
}

// port is the port of a listen address such as ":8081" or "127.0.0.1:8080".
func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	require.NoError(t, err, "listen address %q", addr)
	require.NotEmpty(t, p, "listen address %q has no port", addr)
	return p
}

// binaryOf is the gridbatch binary a container's command runs, given the
// directory the image installs them in. It fails for anything else.
func binaryOf(t *testing.T, binDir string, command []string) string {
	t.Helper()
	require.NotEmpty(t, command, "a gridbatch container must name its binary")
	name, ok := strings.CutPrefix(command[0], binDir)
	require.True(t, ok, "command %q does not run a binary from the image's %s", command, binDir)
	require.Contains(t, commands(t), name, "command %q runs no binary of cmd/", command)
	return name
}
