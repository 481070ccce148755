package process

import (
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/gridbatch/gridbatch/internal/model"
)

// What a model process can reach: its environment, its user, its
// descriptors and its home are decided here; its memory is metered by
// treeRSS (shim.go) and enforced in proc.go.

// User is the account model processes run as when the worker runs as root.
type User struct {
	Name     string
	UID, GID uint32
}

func (u *User) String() string {
	if u.Name == "" {
		return fmt.Sprintf("uid %d, gid %d", u.UID, u.GID)
	}
	return fmt.Sprintf("%s (uid %d, gid %d)", u.Name, u.UID, u.GID)
}

// LookupUser resolves the model user (GRIDBATCH_MODEL_USER): a user name, a
// numeric uid, or uid:gid. Empty means the worker's own user: it returns
// nil. A worker that is not root can only run models as itself: any other
// user is an error, as is a name or uid the system does not know.
func LookupUser(s string) (*User, error) {
	if s == "" {
		return nil, nil
	}
	u := &User{Name: s}
	if strings.Contains(s, ":") {
		var err error
		if u, err = parseUIDGID(s); err != nil {
			return nil, fmt.Errorf("model user %q: want a user name, a uid or uid:gid", s)
		}
	} else {
		look := user.Lookup
		if _, err := strconv.ParseUint(s, 10, 32); err == nil {
			look = user.LookupId
		}
		acct, err := look(s)
		if err != nil {
			return nil, fmt.Errorf("model user %q: %w (give uid:gid for an account without a passwd entry)", s, err)
		}
		uid, _ := strconv.ParseUint(acct.Uid, 10, 32)
		gid, _ := strconv.ParseUint(acct.Gid, 10, 32)
		u.Name, u.UID, u.GID = acct.Username, uint32(uid), uint32(gid)
	}
	if euid := os.Geteuid(); euid != 0 && int(u.UID) != euid {
		return nil, fmt.Errorf("model user %s: the worker runs as uid %d, not root, so it can only run models as itself: leave GRIDBATCH_MODEL_USER empty", u, euid)
	}
	return u, nil
}

// parseUIDGID parses uid:gid.
func parseUIDGID(s string) (*User, error) {
	a, b, _ := strings.Cut(s, ":")
	uid, err1 := strconv.ParseUint(a, 10, 32)
	gid, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%q: want uid:gid", s)
	}
	return &User{UID: uint32(uid), GID: uint32(gid)}, nil
}

// credential is what a process started as u runs with: u's uid and gid and
// no supplementary groups (root's are dropped). nil runs it as the worker.
func (u *User) credential() *syscall.Credential {
	if u == nil {
		return nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}}
}

// Variables of the worker's environment a model process inherits (besides
// LC_*): the locale, the zone, and the Python settings the worker-python
// image gives its models (the SDK on PYTHONPATH). Every other one (the
// database and Redis URLs, passwords, GRIDBATCH_*) stays with the worker.
var inherited = []string{"PATH", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}

// defaultPath is the model's PATH when the worker has none.
const defaultPath = "/usr/local/bin:/usr/bin:/bin"

// modelEnv is the environment of a model process, built from nothing: the
// allow-listed variables of the worker's environment (inherited, LC_*),
// HOME (none when home is empty), the protocol's own variables, then the entry's
// env, which may override any of them.
func modelEnv(spec model.Spec, home string, worker []string) []string {
	env := []string{"PATH=" + defaultPath}
	for _, kv := range worker {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "LC_") || slices.Contains(inherited, k) {
			env = append(env, kv)
		}
	}
	if home != "" {
		env = append(env, "HOME="+home)
	}
	env = append(env, "GRIDBATCH_MODEL_FDS=3,4", "GRIDBATCH_MODEL_KIND="+spec.Kind,
		"GRIDBATCH_MODEL_PROTOCOL="+strconv.Itoa(protocolVersion))
	for _, k := range sortedKeys(spec.Env) {
		env = append(env, k+"="+spec.Env[k])
	}
	return dedupEnv(env)
}

// dedupEnv keeps the last value of each variable, where it last appears.
func dedupEnv(env []string) []string {
	last := map[string]int{}
	for i, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		last[k] = i
	}
	out := env[:0:0]
	for i, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if last[k] == i {
			out = append(out, kv)
		}
	}
	return out
}

// makeHome makes the model process's HOME: a fresh folder under the
// worker's temporary folder, owned by u and private to it (0700). The
// worker removes it once the process has ended. When it cannot (a
// read-only root with no writable temporary folder) the model runs without
// HOME.
func makeHome(kind string, u *User) (string, error) {
	dir, err := os.MkdirTemp("", "gridbatch-model-"+kind+"-")
	if err != nil {
		return "", fmt.Errorf("make the model's HOME: %w", err)
	}
	if u != nil {
		if err := os.Chown(dir, int(u.UID), int(u.GID)); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("make the model's HOME: %w", err)
		}
	}
	return dir, nil
}

func removeHome(dir string) {
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
}

// closeOnExecAbove marks every descriptor of this process above fd
// close-on-exec, so a program it starts holds only 0..fd: Go opens its own
// descriptors close-on-exec, but one inherited without the flag would
// otherwise pass on to the model.
func closeOnExecAbove(fd int) {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return
	}
	names, _ := d.Readdirnames(-1)
	_ = d.Close()
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil && n > fd {
			syscall.CloseOnExec(n)
		}
	}
}

// undumpable makes this process non-dumpable: its /proc/<pid>/environ,
// mem and the like become root's, and ptrace needs CAP_SYS_PTRACE, so a
// model running as the worker's own user (a worker that is not root) cannot
// read the worker's environment.
func undumpable() {
	const prSetDumpable = 4
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0)
}
