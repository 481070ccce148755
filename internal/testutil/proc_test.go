package testutil

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRunBinaryReturnsOutputAndExitCode(t *testing.T) {
	t.Parallel()
	out, errOut, code := RunBinary(t, "/bin/sh", []string{"GREETING=hello"}, "-c", `echo "$GREETING"; echo oops >&2; exit 3`)
	require.Equal(t, "hello\n", out)
	require.Equal(t, "oops\n", errOut)
	require.Equal(t, 3, code)
}

func TestStartLogsAndWaitsForExit(t *testing.T) {
	t.Parallel()
	p := Start(t, "sh-1", "/bin/sh", []string{"GREETING=hello"}, "-c", `echo "$GREETING"; exec sleep 60`)
	require.Equal(t, "sh-1", p.Name)
	Eventually(t, 10*time.Second, "sh-1 to log", func() bool { return strings.Contains(p.LogText(), "hello") })
	require.False(t, p.Exited())
	p.Signal(syscall.SIGKILL)
	require.Equal(t, -1, p.Wait(t, 10*time.Second), "a signal ended it")
	require.True(t, p.Exited())
	require.Error(t, p.Err())
}

func TestStartReportsExitCode(t *testing.T) {
	t.Parallel()
	p := Start(t, "sh-2", "/bin/sh", nil, "-c", "exit 0")
	require.Equal(t, 0, p.Wait(t, 10*time.Second))
	require.NoError(t, p.Err())
}
