package process_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/model/process"
)

// report is what the test model's "report" behaviour prints: what a model
// process can reach.
type report struct {
	UID, GID      int
	Groups        []int
	Env           map[string]string
	FDs           []int
	WorkerEnviron string `json:"worker_environ"`
	SecretFile    string `json:"secret_file"`
	HomeOwner     int    `json:"home_owner"`
	HomeWritable  bool   `json:"home_writable"`
}

// TestModelReachesOnlyWhatItNeeds: with the database and Redis URLs (with a
// password) in the worker's environment, a descriptor the worker holds
// without close-on-exec and a file only root may read, the model sees none
// of them, nor /proc/<worker>/environ; it runs as the model user (nobody
// when root) with a HOME of its own, removed after.
func TestModelReachesOnlyWhatItNeeds(t *testing.T) {
	const password = "s3cret-pw-9f2c"
	t.Setenv("GRIDBATCH_DATABASE_URL", "postgres://gridbatch:"+password+"@127.0.0.1:5432/gridbatch")
	t.Setenv("GRIDBATCH_REDIS_URL", "redis://:"+password+"@127.0.0.1:6379/0")
	t.Setenv("LC_ALL", "C.UTF-8")
	t.Setenv("PYTHONUNBUFFERED", "1")
	secret := filepath.Join(t.TempDir(), "secret")
	require.NoError(t, os.WriteFile(secret, []byte(password), 0o600))
	fd, err := syscall.Open(secret, syscall.O_RDONLY, 0) // no O_CLOEXEC: would pass to a child
	require.NoError(t, err)
	defer syscall.Close(fd)

	e := newEnv(t, "report", func(s *model.Spec) {
		s.Env["GRIDBATCH_TEST_WORKER_PID"] = strconv.Itoa(os.Getpid())
		s.Env["GRIDBATCH_TEST_SECRET_FILE"] = secret
	})
	c := cells(t, 0, 10)
	v, err := e.compute(context.Background(), c)
	require.NoError(t, err)
	check(t, c, v)
	var r report
	require.Eventually(t, func() bool {
		m := regexp.MustCompile(`line="report: (.*)"`).FindStringSubmatch(e.log.String())
		if m == nil {
			return false
		}
		line, err := strconv.Unquote(`"` + m[1] + `"`)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal([]byte(line), &r))
		return true
	}, 5*time.Second, 20*time.Millisecond, "the model ran and reported")

	for k, v := range r.Env {
		require.NotContains(t, v, password, "variable %s", k)
		allowed := strings.HasPrefix(k, "LC_") || strings.HasPrefix(k, "GRIDBATCH_MODEL_") || strings.HasPrefix(k, "GRIDBATCH_TEST_") ||
			map[string]bool{"PATH": true, "HOME": true, "LANG": true, "LANGUAGE": true, "TZ": true,
				"PYTHONPATH": true, "PYTHONDONTWRITEBYTECODE": true, "PYTHONUNBUFFERED": true}[k]
		// Python itself may add LC_CTYPE when it coerces the C locale.
		require.True(t, allowed, "variable %s=%s is not on the allow-list", k, v)
	}
	require.Equal(t, "C.UTF-8", r.Env["LC_ALL"])
	require.Equal(t, "1", r.Env["PYTHONUNBUFFERED"], "the worker-python image's Python settings")
	require.Equal(t, "3,4", r.Env["GRIDBATCH_MODEL_FDS"])
	require.Equal(t, e.spec.Kind, r.Env["GRIDBATCH_MODEL_KIND"])
	require.Equal(t, []int{0, 1, 2, 3, 4}, withoutListing(r.FDs), "descriptors")
	require.True(t, r.HomeWritable, "HOME %s is the model's", r.Env["HOME"])
	if os.Geteuid() == 0 {
		require.Equal(t, 65534, r.UID, "nobody")
		require.Equal(t, 65534, r.HomeOwner)
		require.Empty(t, r.Groups, "root's groups dropped")
		require.Equal(t, "PermissionError", r.WorkerEnviron, "/proc/<worker>/environ")
		require.Equal(t, "PermissionError", r.SecretFile, "a file only root may read")
	} else {
		require.Equal(t, "PermissionError", r.WorkerEnviron, "the worker is not dumpable")
	}
	e.rt.Close()
	e.waitGone(3 * time.Second)
	_, err = os.Stat(r.Env["HOME"])
	require.ErrorIs(t, err, os.ErrNotExist, "HOME removed once the process ended")
}

// withoutListing drops the descriptor Python opened to list /proc/self/fd.
func withoutListing(fds []int) []int {
	if len(fds) > 0 && fds[len(fds)-1] > 4 {
		return fds[:len(fds)-1]
	}
	return fds
}

// TestHugeReplyIsRefusedUnread: a model whose RESULT header claims 6 GiB
// is killed and its chunk fails without retry naming both sizes; the
// worker allocates nothing like the claim.
func TestHugeReplyIsRefusedUnread(t *testing.T) {
	e := newEnv(t, "claim", nil)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := e.compute(context.Background(), cells(t, 0, 10))
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, model.ErrInvalid, "not retried")
	require.ErrorContains(t, err, "RESULT frame claims 6442450944 bytes of data; at most 19200 allowed; the chunk's (10, 3, 80) float64 values are 19200 bytes")
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<20), "bytes allocated while the claim was read")
	require.Contains(t, e.log.String(), "protocol violation")
	e.waitGone(time.Second)
}

// TestMemoryLimitCountsASetsidGrandchild: a chunk that succeeds leaves a
// grandchild in a session of its own allocating past memory_limit; between
// chunks, the tree is still metered and killed, the grandchild with it.
func TestMemoryLimitCountsASetsidGrandchild(t *testing.T) {
	e := newEnv(t, "setsid", func(s *model.Spec) {
		s.MemoryLimit = 200 << 20
		s.Env["GRIDBATCH_TEST_ALLOC_MIB"] = "400"
	})
	c := cells(t, 0, 10)
	v, err := e.compute(context.Background(), c)
	require.NoError(t, err)
	check(t, c, v)
	var pid int
	require.Eventually(t, func() bool {
		m := regexp.MustCompile(`line="grandchild pid (\d+)"`).FindStringSubmatch(e.log.String())
		if m != nil {
			pid, _ = strconv.Atoi(m[1])
		}
		return m != nil
	}, 5*time.Second, 20*time.Millisecond)
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, uintptr(pid), 0, 0)
	require.Zero(t, errno, "the grandchild runs")
	require.EqualValues(t, pid, sid, "in a session of its own")
	require.Eventually(t, func() bool { return strings.Contains(e.log.String(), `reason="memory limit: RSS`) }, 15*time.Second, 50*time.Millisecond,
		"killed between chunks")
	require.Eventually(t, func() bool { return syscall.Kill(pid, 0) != nil || isZombie(pid) }, 2*time.Second, 20*time.Millisecond,
		"the grandchild is gone")
	v, err = e.compute(context.Background(), cells(t, 10, 10))
	require.NoError(t, err, "a fresh process serves")
	require.Len(t, v, 10*3*80)
	require.EqualValues(t, 2, e.rt.Starts(e.spec.Kind))
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func TestLookupUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("another user than the worker's needs root")
	}
	for _, tc := range []struct {
		in       string
		uid, gid uint32
		err      string
	}{
		{in: "nobody", uid: 65534, gid: 65534},
		{in: "65534", uid: 65534, gid: 65534},
		{in: "1234:5678", uid: 1234, gid: 5678},
		{in: "no-such-user-x", err: `model user "no-such-user-x": user: unknown user no-such-user-x`},
		{in: "a:1", err: "want a user name, a uid or uid:gid"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := process.LookupUser(tc.in)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.uid, u.UID)
			require.Equal(t, tc.gid, u.GID)
		})
	}
	u, err := process.LookupUser("")
	require.NoError(t, err)
	require.Nil(t, u, "empty: the worker's own user")
}

// TestAWorkdirTheModelUserCannotEnterFailsAtStart: named, with the user.
func TestAWorkdirTheModelUserCannotEnterFailsAtStart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the worker's own user can enter its own folders")
	}
	dir := t.TempDir() // root's, 0700
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.py"), nil, 0o644))
	e := newEnv(t, "ok", func(s *model.Spec) { s.Workdir = dir })
	_, err := e.compute(context.Background(), cells(t, 0, 10))
	require.ErrorIs(t, err, process.ErrCannotStart)
	require.ErrorContains(t, err, "cannot start as uid 65534, gid 65534: fork/exec /usr/bin/python3: permission denied (may that user enter "+dir)
}

// TestNoWritableTempFolderRunsWithoutHome: a read-only root without a
// writable temporary folder (deploy/k8s) does not stop the model.
func TestNoWritableTempFolderRunsWithoutHome(t *testing.T) {
	t.Setenv("TMPDIR", "/nonexistent/gridbatch-tmp")
	e := newEnv(t, "ok", nil)
	c := cells(t, 0, 10)
	v, err := e.compute(context.Background(), c)
	require.NoError(t, err)
	check(t, c, v)
	require.Contains(t, e.log.String(), "model process runs without HOME")
}
