//go:build integration

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// The containment scenarios: what a user's model can reach of its worker
// (the real worker, its database URL carrying a password), what a reply's
// header can make the worker allocate, and whether a process that left the
// model's group escapes memory_limit.

// TestChaosModelCannotReachTheWorkersSecrets: a model looks for the
// database and Redis URLs in its environment, in its worker's
// /proc/<pid>/environ and in every process's it can read; it finds none.
func TestChaosModelCannotReachTheWorkersSecrets(t *testing.T) {
	e := newEnv(t)
	secrets := map[string]string{}
	for _, kv := range e.Env() {
		if k, v, _ := strings.Cut(kv, "="); k == "GRIDBATCH_DATABASE_URL" || k == "GRIDBATCH_REDIS_URL" {
			secrets[k] = v
		}
	}
	require.Contains(t, secrets["GRIDBATCH_DATABASE_URL"], ":gridbatch@", "the database URL carries a password")
	m := e.withModel("snoop_py", pyModel("snoop.py"), nil)
	w, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "2000")
	b := e.WaitEnded(id, 2*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	var snoop struct {
		PID, UID, Worker int
		Env              map[string]string
		WorkerEnviron    string `json:"worker_environ"`
		Leaks            []int
	}
	for _, r := range logRecords("model output", []*testutil.Proc{w}, "kind", m.kind) {
		if line, ok := strings.CutPrefix(r.str("line"), "chaos-snoop: "); ok {
			require.NoError(t, json.Unmarshal([]byte(line), &snoop))
		}
	}
	require.NotZero(t, snoop.PID, "the model ran and reported")
	leaked := []string{}
	for k, v := range snoop.Env {
		for name, secret := range secrets {
			if strings.Contains(v, secret) || strings.HasPrefix(k, "GRIDBATCH_") && !strings.HasPrefix(k, "GRIDBATCH_MODEL_") {
				leaked = append(leaked, k+" ("+name+")")
			}
		}
	}
	left := m.left(t, w)
	asRoot := os.Geteuid() == 0
	ok := b.Status == store.StatusSucceeded && exp == found && snoop.Worker == w.Pid() && len(leaked) == 0 &&
		snoop.WorkerEnviron == "PermissionError" && len(snoop.Leaks) == 0 && (!asRoot || snoop.UID == 65534) && left == 0
	report("model-snoops-secrets", pass(ok), b, exp, found, fmt.Sprintf(
		"model_uid=%d worker_pid=%d (found %d) worker_environ=%s env_vars=%d leaked=%v readable_environs_with_urls=%v procs_left=%d",
		snoop.UID, w.Pid(), snoop.Worker, snoop.WorkerEnviron, len(snoop.Env), leaked, snoop.Leaks, left))
	require.True(t, ok, "status %s, rows %d/%d, uid %d, worker %d/%d, worker environ %q, leaked %v, readable %v, left %d",
		b.Status, found, exp, snoop.UID, snoop.Worker, w.Pid(), snoop.WorkerEnviron, leaked, snoop.Leaks, left)
}

// TestChaosModelClaimsAHugeReply: a model's RESULT header claims 6 GiB;
// the worker reads none of it (its peak RSS stays far below), kills the
// process and dead-letters the chunk at once, naming both sizes; the other
// chunks succeed.
func TestChaosModelClaimsAHugeReply(t *testing.T) {
	const claim = 6 << 30
	e := newEnv(t)
	m := e.withModel("claim_py", pyModel("claim.py"), nil)
	w, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "2000")
	b := e.WaitEnded(id, 2*time.Minute)
	peak := peakRSS(w.Pid())
	claimed := 0
	for _, r := range logRecords("model output", []*testutil.Proc{w}, "kind", m.kind) {
		if strings.HasPrefix(r.str("line"), "chaos-claim:") {
			claimed++
		}
	}
	var reasons []string
	rows, err := e.DB.Pool.Query(context.Background(), `SELECT last_error FROM dead_letters WHERE batch_id = $1`, id)
	require.NoError(t, err)
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		reasons = append(reasons, s)
	}
	require.NoError(t, rows.Err())
	want := fmt.Sprintf("RESULT frame claims %d bytes of data; at most %d allowed", claim, 2000*3*80*8)
	named := len(reasons) == 1 && strings.Contains(reasons[0], want)
	left := m.left(t, w)
	ok := b.Status == store.StatusPartial && b.FailedChunks == 1 && claimed == 1 && named && peak > 0 && peak < 256<<20 && left == 0
	report("model-claims-huge-reply", pass(ok), b, 0, 0, fmt.Sprintf(
		"claims=%d worker_peak_rss=%dMiB (claim %dMiB) dead_letters=%d reason=%q procs_left=%d",
		claimed, peak>>20, claim>>20, len(reasons), strings.Join(reasons, "|"), left))
	require.True(t, ok, "status %s, failed chunks %d, claims %d, worker peak RSS %d MiB, dead letters %q (want %q), left %d",
		b.Status, b.FailedChunks, claimed, peak>>20, reasons, want, left)
}

// TestChaosModelGrandchildSetsidPastMemoryLimit: a model's child leaves
// the process group with setsid() and allocates past memory_limit; it is
// metered all the same, killed with the model, and the chunk is retried as
// two halves (a memory kill splits it).
func TestChaosModelGrandchildSetsidPastMemoryLimit(t *testing.T) {
	e := newEnv(t)
	m := e.withModel("setsid_py", pyModel("setsid.py"), map[string]string{"CHAOS_ALLOC_MIB": "400"},
		"memory_limit: 200MiB", "timeout: 50s")
	w, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "2000")
	var child int
	waitUntil(t, time.Minute, "the model to start its grandchild", func() bool {
		for _, r := range logRecords("model output", []*testutil.Proc{w}, "kind", m.kind) {
			var pid int
			if _, err := fmt.Sscanf(r.str("line"), "chaos-setsid: pid %d grandchild %d", &pid, &child); err == nil {
				return true
			}
		}
		return false
	})
	ownSession := sessionOf(child) == child
	b := e.WaitEnded(id, 2*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	split := e.wholeChunksSplit(t, id) // the killed chunk runs again as two halves
	kills := memoryKills(w, m.kind)
	childGone := !alive(child)
	left := m.left(t, w)
	ok := b.Status == store.StatusSucceeded && exp == found && ownSession && len(kills) == 1 && childGone && split == 1 && left == 0
	report("model-grandchild-setsid-memory", pass(ok), b, exp, found, fmt.Sprintf(
		"grandchild=%d own_session=%t memory_kills=%d grandchild_gone=%t chunks_split=%d procs_left=%d",
		child, ownSession, len(kills), childGone, split, left))
	require.True(t, ok, "status %s, rows %d/%d, own session %t, memory kills %d, grandchild gone %t, split %d, left %d",
		b.Status, found, exp, ownSession, len(kills), childGone, split, left)
}

// peakRSS is VmHWM of pid, in bytes (0 when unreadable).
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sessionOf is the session id of pid, from /proc (0 when unreadable).
func sessionOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 4 {
		return 0
	}
	sid, _ := strconv.Atoi(f[3])
	return sid
}
