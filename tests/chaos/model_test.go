//go:build integration

package chaos

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// The model-process scenarios of DESIGN.md's supervision table: the real
// worker runs a misbehaving model of tests/chaos/models (the reference ph
// plus one fault) on Debian's python3. Each checks that its fault really
// hit, the batch's outcome and rows, and that no model process is left
// once the worker has stopped (procs_left).

const modelRel = 1e-12 // the Python ph against the Go kernel

func TestChaosModelIgnoresSigtermPastTimeout(t *testing.T) {
	const timeout = 3 * time.Second
	e := newEnv(t)
	m := e.withModel("hang_py", pyModel("hang.py"), nil, "timeout: 3s")
	w, addr := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	waitUntil(t, 30*time.Second, "worker healthy", func() bool { c, _ := httpGet(addr, "/healthz"); return c == http.StatusOK })
	stopWatch := watchHealthz(addr)
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "2000")

	// The hang: the model says so, with its pid and its child's.
	var hang logRecord
	waitUntil(t, time.Minute, "the model to hang", func() bool {
		for _, r := range logRecords("model output", []*testutil.Proc{w}, "kind", m.kind) {
			if strings.HasPrefix(r.str("line"), "chaos-hang:") {
				hang = r
				return true
			}
		}
		return false
	})
	var pid, child int
	_, err := fmt.Sscanf(hang.str("line"), "chaos-hang: pid %d hangs, child pid %d", &pid, &child)
	require.NoError(t, err, hang.str("line"))
	childWasAlive := alive(child)
	for alive(pid) || alive(child) {
		require.Less(t, time.Since(hang.time()), timeout+10*time.Second, "the hung model (pid %d, child %d) is still alive", pid, child)
		time.Sleep(20 * time.Millisecond)
	}
	goneAfter := time.Since(hang.time())

	b := e.WaitEnded(id, 2*time.Minute)
	bad, polls := stopWatch()
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	retried, _ := e.chunkStats(id)
	kills := logRecords("model process killed", []*testutil.Proc{w}, "kind", m.kind, "reason", "chunk timeout")
	killedAfter := math.NaN()
	if len(kills) > 0 {
		killedAfter = kills[0].time().Sub(hang.time()).Seconds()
	}
	left := m.left(t, w)
	// The chunk's timeout starts a few ms before the hang (more on a loaded
	// machine); the group must be gone within ~1 s of it (the test polls
	// every 20 ms).
	inTime := killedAfter >= timeout.Seconds()/2 && killedAfter <= timeout.Seconds()+1 && goneAfter <= timeout+1200*time.Millisecond
	ok := b.Status == store.StatusSucceeded && exp == found && childWasAlive && len(kills) == 1 && inTime &&
		retried >= 1 && bad == 0 && polls > 0 && left == 0
	report("model-ignores-sigterm", pass(ok), b, exp, found, fmt.Sprintf(
		"killed_after=%.2fs group_gone_after=%.2fs (timeout %s) child_was_alive=%t kills=%d chunks_retried=%d healthz_not_200=%d/%d procs_left=%d",
		killedAfter, goneAfter.Seconds(), timeout, childWasAlive, len(kills), retried, bad, polls, left))
	require.True(t, ok, "status %s, rows %d/%d, kills %d after %.2fs, gone after %s, retried %d, healthz bad %d/%d, left %d",
		b.Status, found, exp, len(kills), killedAfter, goneAfter, retried, bad, polls, left)
}

// The model aborts on every chunk holding one cell: the chunk is retried,
// split on its second death, its halves at their first, down to the cell,
// which alone is dead-lettered.
func TestChaosModelAbortsOnOneChunk(t *testing.T) {
	const chunk, size, maxRetry = 3, 2000, 2
	e := newEnv(t)
	_, gid := chunkCells(t, chunk, size)
	m := e.withModel("abort_py", pyModel("abort.py"), map[string]string{"CHAOS_ABORT_GRID_ID": strconv.FormatInt(gid, 10)})
	w, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2", "GRIDBATCH_MAX_RETRY="+strconv.Itoa(maxRetry))
	id := e.RunBatch("--kind", m.kind, "--chunk-size", strconv.Itoa(size))
	b := e.WaitEnded(id, 2*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, func(c grid.Cell) bool { return c.GridID != gid })
	var deadLetters, splits int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM dead_letters WHERE batch_id = $1 AND chunk = $2 AND grid_id = $3 AND last_error LIKE '%SIGABRT%'),
		(SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND chunk = $2 AND status = 'split')`, id, chunk, gid).Scan(&deadLetters, &splits))
	procs := []*testutil.Proc{w}
	var aborts []logRecord
	for _, r := range logRecords("model process ended mid-chunk", procs, "kind", m.kind) {
		if strings.Contains(r.str("status"), "SIGABRT") {
			aborts = append(aborts, r)
		}
	}
	starts, restarts := 0, 0
	for _, r := range logRecords("model process started", procs, "kind", m.kind) {
		starts++
		if len(aborts) > 0 && r.time().After(aborts[0].time()) {
			restarts++
		}
	}
	left := m.left(t, w)
	// Two deaths of the whole chunk, one per split half on the way down,
	// one of the lone cell.
	ok := b.Status == store.StatusPartial && b.FailedChunks == 1 && b.FailedCells == 1 && exp == found && deadLetters == 1 &&
		splits >= 10 && len(aborts) == splits+2 && restarts >= 1 && left == 0
	report("model-aborts-one-chunk", pass(ok), b, exp, found, fmt.Sprintf(
		"sigabrt_logged=%d (splits %d) dead_letters=%d failed_cells=%d process_starts=%d (after an abort %d) procs_left=%d",
		len(aborts), splits, deadLetters, b.FailedCells, starts, restarts, left))
	require.True(t, ok, "status %s, rows %d/%d, failed cells %d, dead letters %d, aborts %d, splits %d, restarts %d, left %d",
		b.Status, found, exp, b.FailedCells, deadLetters, len(aborts), splits, restarts, left)
}

func TestChaosModelExitsMidChunk(t *testing.T) {
	e := newEnv(t)
	m := e.withModel("exit0_py", pyModel("exit0.py"), nil)
	w, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "2000")
	b := e.WaitEnded(id, 2*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	retried, _ := e.chunkStats(id)
	exits := logRecords("model process ended mid-chunk", []*testutil.Proc{w}, "kind", m.kind, "status", "exit status 0")
	left := m.left(t, w)
	ok := b.Status == store.StatusSucceeded && exp == found && len(exits) == 1 && retried >= 1 && left == 0
	report("model-exits-0-mid-chunk", pass(ok), b, exp, found, fmt.Sprintf(
		"exit_0_logged=%d chunks_retried=%d procs_left=%d", len(exits), retried, left))
	require.True(t, ok, "status %s, rows %d/%d, exits logged %d, retried %d, left %d", b.Status, found, exp, len(exits), retried, left)
}

func TestChaosModelPastMemoryLimit(t *testing.T) {
	e := newEnv(t)
	m := e.withModel("memory_py", pyModel("memory.py"), map[string]string{"CHAOS_ALLOC_MIB": "400"},
		"memory_limit: 200MiB", "timeout: 30s")
	w, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "2000")
	b := e.WaitEnded(id, 2*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	split := e.wholeChunksSplit(t, id) // the killed chunk is retried as two halves
	kills := memoryKills(w, m.kind)
	reason := ""
	if len(kills) > 0 {
		reason = kills[0].str("reason")
	}
	left := m.left(t, w)
	ok := b.Status == store.StatusSucceeded && exp == found && len(kills) == 1 && split == 1 && left == 0
	report("model-past-memory-limit", pass(ok), b, exp, found, fmt.Sprintf(
		"memory_kills=%d (%q) chunks_split=%d procs_left=%d", len(kills), reason, split, left))
	require.True(t, ok, "status %s, rows %d/%d, memory kills %d, split %d, left %d", b.Status, found, exp, len(kills), split, left)
}

func TestChaosModelPrints(t *testing.T) {
	e := newEnv(t)
	m := e.withModel("chatty_py", pyModel("chatty.py"), nil)
	w, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "2000")
	b := e.WaitEnded(id, 2*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	procs := []*testutil.Proc{w}
	pids := map[string]bool{}
	for _, r := range logRecords("model process started", procs, "kind", m.kind) {
		pids[r.str("pid")] = true
	}
	lines := map[string]int{}
	for _, r := range logRecords("model output", procs, "kind", m.kind) {
		if pids[r.str("pid")] && strings.HasPrefix(r.str("line"), "chaos-chatty "+r.str("stream")+":") {
			lines[r.str("stream")]++
		}
	}
	left := m.left(t, w)
	ok := b.Status == store.StatusSucceeded && exp == found && lines["stdout"] >= b.TotalChunks && lines["stderr"] >= b.TotalChunks && left == 0
	report("model-prints", pass(ok), b, exp, found, fmt.Sprintf(
		"model_output_lines stdout=%d stderr=%d (chunks %d) procs_left=%d", lines["stdout"], lines["stderr"], b.TotalChunks, left))
	require.True(t, ok, "status %s, rows %d/%d, output lines %v for %d chunks, left %d", b.Status, found, exp, lines, b.TotalChunks, left)
}

func TestChaosModelCommandMissing(t *testing.T) {
	const maxRetry = 3
	e := newEnv(t)
	m := e.withModel("nocmd_py", []string{"/nonexistent/gridbatch-chaos-model"}, nil)
	w, addr := e.startWorker("GRIDBATCH_CONCURRENCY=2", "GRIDBATCH_MAX_RETRY="+strconv.Itoa(maxRetry))
	start := time.Now()
	var ready string
	waitUntil(t, 30*time.Second, "/readyz to name the kind that cannot start", func() bool {
		code, body := httpGet(addr, "/readyz")
		ready = strings.TrimSpace(body)
		return code == http.StatusServiceUnavailable && strings.Contains(body, m.kind)
	})
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "4800")
	phID := e.RunBatch("--kind", "ph", "--chunk-size", "2000")
	b := e.WaitEnded(id, 2*time.Minute)
	ph := e.WaitEnded(phID, 2*time.Minute)
	phExp, phFound := e.rows(ph, all)
	_, deadLetters := e.chunkStats(id)
	took := time.Since(start)
	attempts := logRecords("model process cannot start", []*testutil.Proc{w}, "kind", m.kind)
	// Backed off from 1 s, doubling: over the run, at most log2(seconds)+2
	// attempts, while the chunks asked for a process (maxRetry+1)·chunks times.
	bound := int(math.Log2(took.Seconds()+1)) + 2
	runs := (maxRetry + 1) * b.TotalChunks
	left := m.left(t, w)
	ok := (b.Status == store.StatusFailed || b.Status == store.StatusPartial) && b.CompletedChunks == 0 &&
		deadLetters == b.TotalChunks && len(attempts) >= 1 && len(attempts) <= bound &&
		ph.Status == store.StatusSucceeded && phExp == phFound && left == 0
	report("model-command-missing", pass(ok), b, 0, 0, fmt.Sprintf(
		"readyz=503 %q start_attempts=%d (bound %d, chunk runs %d, over %.1fs) dead_letters=%d/%d ph_batch=%s ph_rows=%d/%d procs_left=%d",
		ready, len(attempts), bound, runs, took.Seconds(), deadLetters, b.TotalChunks, ph.Status, phFound, phExp, left))
	require.True(t, ok, "status %s, dead letters %d/%d, start attempts %d (bound %d), ph %s rows %d/%d, left %d",
		b.Status, deadLetters, b.TotalChunks, len(attempts), bound, ph.Status, phFound, phExp, left)
}

func TestChaosModelWorkerSigkilled(t *testing.T) {
	e := newEnv(t)
	m := e.withModel("slow_py", pyModel("slow.py"), map[string]string{"CHAOS_SLEEP": "1"}, "timeout: 30s")
	w1, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", m.kind, "--chunk-size", "1000")
	e.WaitDone(id, 2, 2*time.Minute)
	var before []int
	waitUntil(t, 30*time.Second, "two model processes, their supervisors and children", func() bool {
		before = m.procs()
		return len(before) >= 6
	})
	w1.Signal(syscall.SIGKILL)
	<-w1.Done()
	killedAt := time.Now()
	leftAfterKill := m.leftAfter(5 * time.Second)
	goneIn := time.Since(killedAt)

	w2, _ := e.startWorker("GRIDBATCH_CONCURRENCY=2")
	b := e.WaitEnded(id, 4*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	retried, _ := e.chunkStats(id)
	left := m.left(t, w2)
	ok := b.Status == store.StatusSucceeded && exp == found && len(before) >= 6 && leftAfterKill == 0 && retried >= 1 && left == 0
	report("model-worker-sigkilled", pass(ok), b, exp, found, fmt.Sprintf(
		"procs_before_kill=%d left_after_kill=%d (gone in %.1fs) chunks_retried=%d procs_left=%d",
		len(before), leftAfterKill, goneIn.Seconds(), retried, left))
	require.True(t, ok, "status %s, rows %d/%d, processes before %d, left after the kill %d, retried %d, left %d",
		b.Status, found, exp, len(before), leftAfterKill, retried, left)
}
