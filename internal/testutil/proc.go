package testutil

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// runTimeout bounds RunBinary.
const runTimeout = 5 * time.Minute

// logTailLines is how much of a process's log Start prints when the test failed.
const logTailLines = 40

// RunBinary runs the binary at path to its end with exactly env and args and
// returns its stdout, stderr and exit code. It is killed after 5 minutes; a
// failure to run it at all fails the test.
func RunBinary(t testing.TB, path string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	require.NoError(t, err, "run %s %v", filepath.Base(path), args)
	return out.String(), errb.String(), 0
}

// Proc is a binary running in the background, its stdout and stderr going to
// a log file.
type Proc struct {
	// Name labels the process in messages, such as "worker-2".
	Name string
	// Log is the path of its log file.
	Log string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs the binary at path in the background with exactly env and args,
// logging to Name.log in a temporary folder of the test. The process is
// killed when the test ends, and if the test failed the last 40 lines of its
// log are logged.
func Start(t testing.TB, name, path string, env []string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	require.NoError(t, err)
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		require.NoError(t, err, "start %s", name)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("last lines of %s (%s):\n%s", p.Name, p.Log, tail(p.LogText(), logTailLines))
		}
	})
	return p
}

// Signal sends s to the process; it does nothing once the process has exited.
func (p *Proc) Signal(s os.Signal) { _ = p.cmd.Process.Signal(s) }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is what waiting for the process returned (nil for exit code 0); it is
// valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit and returns its exit code
// (-1 when a signal ended it); it fails the test when the process is still
// running after timeout.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.Name, timeout)
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// LogText returns what the process has logged so far ("" when the log cannot be read).
func (p *Proc) LogText() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// ModelDir returns a temporary folder for a model's files and working
// directory that a model process can use: a root worker runs its models as
// nobody (GRIDBATCH_MODEL_USER), who can neither enter nor write a folder
// of t.TempDir() (root's, 0700). The folder is nobody's then, and the
// folders above it can be entered.
func ModelDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		return dir
	}
	for d := filepath.Dir(dir); d != os.TempDir() && d != "/" && d != "."; d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	const nobody = 65534
	require.NoError(t, os.Chown(dir, nobody, nobody))
	return dir
}
