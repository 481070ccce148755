//go:build integration

package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestExportIsContained: the NetCDF writer runs isolated from the folder
// and the environment of the export, --out is never a FIFO, device or
// link replaced, and the file gets the umask's permissions.
func TestExportIsContained(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	r, err := grid.ParseRegion(0.05, "126,37,126.5,37.25", 0)
	require.NoError(t, err)
	b := testutil.StoreBatch(t, c.DB.Store, "contained", grid.KindPH, grid.PH, r, 50, nil, store.StatusSucceeded)
	enqueuer := filepath.Join(testutil.Binaries(t), "enqueuer")

	// run runs the enqueuer in dir under a shell with umask.
	run := func(t *testing.T, dir, umask string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command("/bin/sh", append([]string{"-c", `umask ` + umask + ` && exec "$0" "$@"`, enqueuer}, args...)...)
		cmd.Dir, cmd.Env = dir, c.Env()
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else {
			require.NoError(t, err)
		}
		return string(out), code
	}

	t.Run("a json.py in the export's folder does not run", func(t *testing.T) {
		dir := t.TempDir()
		marker := filepath.Join(dir, "pwned")
		require.NoError(t, os.WriteFile(filepath.Join(dir, "json.py"),
			[]byte("open("+pyQuote(marker)+", 'w').write('ran')\nfrom importlib import import_module\n"), 0o644))
		// The attack is real: python3 -c in that folder runs it.
		cmd := exec.Command("/usr/bin/python3", "-c", "import json")
		cmd.Dir = dir
		_ = cmd.Run()
		require.FileExists(t, marker, "python3 -c imports json.py from its folder")
		require.NoError(t, os.Remove(marker))

		out, code := run(t, dir, "022", "export", "--batch", b.ID, "--out", "ph.nc")
		require.Equal(t, 0, code, out)
		require.NoFileExists(t, marker, "the writer imported json.py from the export's folder")
		nc := testutil.ReadNetCDF(t, filepath.Join(dir, "ph.nc"), "ph", "ssp245", 2050)
		require.NotEmpty(t, nc.Lat)
	})

	t.Run("the writer's environment holds no database URL", func(t *testing.T) {
		dir := t.TempDir()
		dump := filepath.Join(dir, "env")
		python := filepath.Join(dir, "python3")
		require.NoError(t, os.WriteFile(python, []byte("#!/bin/sh\nenv > "+dump+"\npwd >> "+dump+"\nexec /usr/bin/python3 \"$@\"\n"), 0o755))
		out, code := run(t, dir, "022", "export", "--batch", b.ID, "--python", python, "--out", "ph.nc")
		require.Equal(t, 0, code, out)
		env, err := os.ReadFile(dump)
		require.NoError(t, err)
		require.NotContains(t, string(env), "GRIDBATCH_", "the writer ran (it dumped its environment)")
		require.NotContains(t, string(env), "postgres://")
		require.True(t, strings.HasSuffix(string(env), "\n/\n"), "in a fixed folder: %s", env)
	})

	t.Run("the file has the umask's permissions", func(t *testing.T) {
		dir := t.TempDir()
		for _, f := range []string{"ph.nc", "ph.csv", "ph.parquet"} {
			for umask, want := range map[string]os.FileMode{"077": 0o600, "022": 0o644, "002": 0o664} {
				out, code := run(t, dir, umask, "export", "--batch", b.ID, "--out", f)
				require.Equal(t, 0, code, out)
				fi, err := os.Stat(filepath.Join(dir, f))
				require.NoError(t, err)
				require.Equal(t, want, fi.Mode().Perm(), "%s under umask %s", f, umask)
			}
		}
	})

	t.Run("an --out that is not a regular file is refused", func(t *testing.T) {
		dir := t.TempDir()
		fifo := filepath.Join(dir, "fifo.csv")
		require.NoError(t, syscall.Mkfifo(fifo, 0o644))
		target := filepath.Join(dir, "target.csv")
		require.NoError(t, os.WriteFile(target, []byte("keep\n"), 0o644))
		link := filepath.Join(dir, "link.csv")
		require.NoError(t, os.Symlink(target, link))
		for _, tc := range []struct{ out, what string }{{fifo, "a FIFO"}, {link, "a symbolic link"}, {"/dev/null", "a device"}} {
			out, code := run(t, dir, "022", "export", "--batch", b.ID, "--format", "csv", "--out", tc.out)
			require.Equal(t, 1, code, out)
			require.Contains(t, out, tc.out+" exists and is "+tc.what+", not a regular file: not replaced")
			require.Equal(t, 1, strings.Count(out, "\n"), "one line: %s", out)
		}
		fi, err := os.Lstat(fifo)
		require.NoError(t, err)
		require.True(t, fi.Mode()&os.ModeNamedPipe != 0, "the FIFO is still one")
		fi, err = os.Lstat(link)
		require.NoError(t, err)
		require.True(t, fi.Mode()&os.ModeSymlink != 0, "the link is still one")
		data, err := os.ReadFile(target)
		require.NoError(t, err)
		require.Equal(t, "keep\n", string(data))
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.Len(t, entries, 3, "no temporary file left")
	})
}

// pyQuote quotes s as a Python string literal.
func pyQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `\'`) + "'" }
