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

// parentEnv carries the worker's pid to the supervisor.
const parentEnv = "GRIDBATCH_SUPERVISOR_PARENT"

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
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "requests"), os.NewFile(4, "replies")}
	if err := cmd.Start(); err != nil {
		report("cannot start: " + err.Error())
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

// killAll SIGKILLs the processes re-parented to this one, then its whole
// process group, itself included.
func killAll() {
	me := os.Getpid()
	for _, pid := range childrenOf(me) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(-syscall.Getpgrp(), syscall.SIGKILL)
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

// childrenOf returns the pids whose parent is ppid, from /proc.
func childrenOf(ppid int) []int {
	var out []int
	forEachProc(func(pid int, stat procStat) {
		if stat.ppid == ppid {
			out = append(out, pid)
		}
	})
	return out
}

// procStat is what gridbatch reads of /proc/PID/stat.
type procStat struct {
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
	if len(f) < 22 {
		return procStat{}, false
	}
	// f[0] is field 3 (state): field k is f[k-3].
	ppid, _ := strconv.Atoi(f[1])
	pgrp, _ := strconv.Atoi(f[2])
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	return procStat{ppid: ppid, pgrp: pgrp, rssPages: rss}, true
}

// groupRSS is the resident memory of every process in the process group
// pgid, in bytes.
func groupRSS(pgid int) int64 {
	var pages int64
	forEachProc(func(_ int, s procStat) {
		if s.pgrp == pgid {
			pages += s.rssPages
		}
	})
	return pages * int64(os.Getpagesize())
}
