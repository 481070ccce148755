package process

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// shimArg is the first argument that makes a worker binary run as a model
// process's supervisor (see RunShimIfAsked).
const shimArg = "__gridbatch_model_supervisor"

// The supervisor's own variables, which its model does not inherit:
// parentEnv carries the worker's pid, userEnv the uid:gid the model runs
// as (empty: the supervisor's own).
const (
	supervisorPrefix = "GRIDBATCH_SUPERVISOR_"
	parentEnv        = supervisorPrefix + "PARENT"
	userEnv          = supervisorPrefix + "USER"
)

// shimEnabled is set by RunShimIfAsked: the running binary can supervise.
var shimEnabled bool

// RunShimIfAsked makes the running binary able to supervise model
// processes; call it first in main. When the binary was started as a
// supervisor it never returns: it runs the model (argv after shimArg) in its
// own process group, and when the worker that started it disappears (even
// by SIGKILL: the kernel sends the supervisor SIGTERM as its parent-death
// signal) it SIGKILLs that group and every process re-parented to it (it is
// a child subreaper), so no model process outlives its worker. When the
// model exits it writes the model's exit status to fd 5 and kills what the
// model left behind.
func RunShimIfAsked() {
	shimEnabled = true
	if len(os.Args) < 3 || os.Args[1] != shimArg {
		return
	}
	os.Exit(shim(os.Args[2:]))
}

func shim(argv []string) int {
	syscall.CloseOnExec(5) // the status pipe is the supervisor's alone
	status := os.NewFile(5, "status")
	report := func(s string) {
		if status != nil {
			_, _ = status.WriteString(s)
			_ = status.Close()
			status = nil
		}
	}
	const prSetChildSubreaper = 36
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	// The worker may have died before the parent-death signal was armed:
	// then this process has another parent already. (The worker itself may
	// be PID 1, in a container: compare with its pid, not with 1.)
	if parent, err := strconv.Atoi(os.Getenv(parentEnv)); err == nil && os.Getppid() != parent {
		killAll()
		return 1
	}
	u, err := shimUser(os.Getenv(userEnv))
	if err != nil {
		report("cannot start: " + err.Error())
		return 127
	}
	dir, err := os.Getwd()
	if err != nil {
		report("cannot start: " + err.Error())
		return 127
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "requests"), os.NewFile(4, "replies")}
	// The model's environment is the supervisor's, less the supervisor's
	// own variables; it changes to its working directory as its own user
	// (so one it may not enter fails here, named); it dies with this
	// process; it holds descriptors 0-4 and no other.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, supervisorPrefix) {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.credential(), Pdeathsig: syscall.SIGKILL}
	closeOnExecAbove(4)
	if err := cmd.Start(); err != nil {
		msg := "cannot start: " + err.Error()
		if u != nil {
			msg = fmt.Sprintf("cannot start as %s: %v (may that user enter %s, read the command and run it?)", u, err, dir)
		}
		report(msg)
		return 127
	}
	for _, f := range cmd.ExtraFiles {
		_ = f.Close() // the model holds them now: its death is their end of file
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case <-sigs:
		killAll()
		return 1
	case err := <-waited:
		st := "exit status 0"
		if err != nil {
			st = exitStatus(cmd.ProcessState, err)
		}
		report(st)
		killAll()
		return 0
	}
}

// shimUser decodes the supervisor's userEnv, uid:gid; empty is nil (the
// model runs as the supervisor).
func shimUser(s string) (*User, error) {
	if s == "" {
		return nil, nil
	}
	u, err := parseUIDGID(s)
	if err != nil {
		return nil, fmt.Errorf("%s=%w", userEnv, err)
	}
	return u, nil
}

// killAll SIGKILLs every process descended from this one (see killTree),
// then its whole process group, itself included.
func killAll() {
	killTree(os.Getpid())
	_ = syscall.Kill(-syscall.Getpgrp(), syscall.SIGKILL)
}

// killTree SIGKILLs every live process descended from root, root spared.
// Descent is by parent links, so a process that left the group with
// setsid() is found all the same; under a supervisor (a child subreaper)
// an orphan stays a descendant. It goes round after round, so a child
// forked during a round is found in the next, until a round finds no
// process it has not signalled.
func killTree(root int) {
	signalled := map[int]bool{}
	for range 100 {
		fresh := false
		for _, pid := range descendants(root) {
			if !signalled[pid] {
				signalled[pid], fresh = true, true
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if !fresh {
			return
		}
	}
}

// exitStatus describes how a process ended: "exit status 3",
// "signal: aborted (SIGABRT)".
func exitStatus(ps *os.ProcessState, err error) string {
	if ps == nil {
		return err.Error()
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return fmt.Sprintf("signal: %s (%s)", ws.Signal(), signalName(ws.Signal()))
	}
	return ps.String()
}

func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{syscall.SIGABRT: "SIGABRT", syscall.SIGKILL: "SIGKILL", syscall.SIGSEGV: "SIGSEGV",
		syscall.SIGTERM: "SIGTERM", syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE", syscall.SIGILL: "SIGILL", syscall.SIGINT: "SIGINT"}
	if n, ok := names[s]; ok {
		return n
	}
	return "signal " + strconv.Itoa(int(s))
}

// procStat is what gridbatch reads of /proc/PID/stat.
type procStat struct {
	state      byte
	ppid, pgrp int
	rssPages   int64
}

// forEachProc calls fn for every process in /proc it can read.
func forEachProc(fn func(pid int, s procStat)) {
	d, err := os.Open("/proc")
	if err != nil {
		return
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if s, ok := readStat(pid); ok {
			fn(pid, s)
		}
	}
}

// readStat parses /proc/PID/stat: after the command in parentheses come
// state, ppid, pgrp, …; rss (in pages) is field 24.
func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 22 || len(f[0]) == 0 {
		return procStat{}, false
	}
	// f[0] is field 3 (state): field k is f[k-3].
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp, rssPages: rss}, true
}

// tree is one reading of /proc: every live (not zombie) process, by pid.
type tree map[int]procStat

func readTree() tree {
	t := tree{}
	forEachProc(func(pid int, s procStat) {
		if s.state != 'Z' && s.state != 'X' {
			t[pid] = s
		}
	})
	return t
}

// under returns root and every process descended from it, by parent links.
func (t tree) under(root int) []int {
	children := map[int][]int{}
	for pid, s := range t {
		children[s.ppid] = append(children[s.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// descendants returns the live processes descended from root, root left
// out.
func descendants(root int) []int {
	return readTree().under(root)[1:]
}

// treeRSS is the resident memory, in bytes, of root, every process
// descended from it (a grandchild that called setsid() included) and every
// process in the process group root leads.
func treeRSS(root int) int64 {
	t := readTree()
	seen := map[int]bool{}
	var pages int64
	for _, pid := range t.under(root) {
		seen[pid] = true
		pages += t[pid].rssPages
	}
	for pid, s := range t {
		if s.pgrp == root && !seen[pid] {
			pages += s.rssPages
		}
	}
	return pages * int64(os.Getpagesize())
}
