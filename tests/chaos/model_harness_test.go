//go:build integration

package chaos

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// Helpers of the model-process scenarios (model_test.go): a model of
// tests/chaos/models run by Debian's python3 under the real worker.

// python is Debian's python3, which has numpy; a python3 earlier on PATH
// may not.
const python = "/usr/bin/python3"

// modelKind is one scenario's model-process kind.
type modelKind struct {
	kind  string
	dir   string // the models file's folder, the model's working directory
	token string // CHAOS_TOKEN in the environment of its processes and their children
}

// pyModel is the command running tests/chaos/models/<script>.
func pyModel(script string) []string {
	return []string{python, filepath.Join(testutil.RepoRoot(), "tests", "chaos", "models", script)}
}

// withModel declares kind, run by command, in a models file of its own in a
// temporary folder (the model's working directory), gives every binary
// started afterwards GRIDBATCH_MODELS_FILE and runs `enqueuer migrate` so
// <kind>_timeseries exists. modelEnv adds to the model's environment; fields
// are more lines of its entry (timeout, memory_limit, …).
func (e *env) withModel(kind string, command []string, modelEnv map[string]string, fields ...string) *modelKind {
	e.T.Helper()
	m := &modelKind{kind: kind, dir: testutil.ModelDir(e.T), token: kind + "-" + randomHex(6)}
	vars := map[string]string{"CHAOS_TOKEN": m.token, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
	for k, v := range modelEnv {
		vars[k] = v
	}
	yaml := fmt.Sprintf("models:\n  - kind: %s\n    command: %s\n    env: %s\n", kind, asJSON(command), asJSON(vars))
	for _, f := range fields {
		yaml += "    " + f + "\n"
	}
	path := filepath.Join(m.dir, "models.yaml")
	require.NoError(e.T, os.WriteFile(path, []byte(yaml), 0o644))
	e.AddEnv("GRIDBATCH_MODELS_FILE=" + path)
	_, errOut, code := e.Run("enqueuer", nil, "migrate")
	require.Equal(e.T, 0, code, errOut)
	return m
}

// startWorker starts a worker logging JSON (for logRecords) on a known
// HTTP address, which it returns.
func (e *env) startWorker(extra ...string) (*testutil.Proc, string) {
	e.T.Helper()
	addr := freePort(e.T)
	return e.Worker(append([]string{"GRIDBATCH_HTTP_ADDR=" + addr, "GRIDBATCH_LOG_FORMAT=json"}, extra...)...), addr
}

// procs lists the live (not zombie) processes holding the model's token in
// their environment, from /proc: the supervisors, the model processes and
// whatever they started.
func (m *modelKind) procs() []int {
	var out []int
	names, _ := os.ReadDir("/proc")
	needle := []byte("CHAOS_TOKEN=" + m.token + "\x00")
	for _, d := range names {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || !alive(pid) {
			continue
		}
		if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err == nil && strings.Contains(string(env), string(needle)) {
			out = append(out, pid)
		}
	}
	return out
}

// left stops the workers (SIGTERM), then returns how many of the model's
// processes are still alive, waiting up to 5 s for them to go.
func (m *modelKind) left(t *testing.T, workers ...*testutil.Proc) int {
	t.Helper()
	for _, w := range workers {
		w.Signal(syscall.SIGTERM)
	}
	for _, w := range workers {
		select {
		case <-w.Done():
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not exit within 30 s of SIGTERM", w.Name)
		}
	}
	return m.leftAfter(5 * time.Second)
}

// leftAfter waits up to d for the model's processes to be gone and returns
// how many are still there.
func (m *modelKind) leftAfter(d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		n := len(m.procs())
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// logRecord is one JSON line of a worker's log.
type logRecord map[string]any

func (r logRecord) str(k string) string {
	switch v := r[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func (r logRecord) time() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, r.str("time"))
	return t
}

// logRecords returns the records of the workers' logs whose msg is msg and
// whose fields have the values of match (k1, v1, k2, v2, …), in log order.
func logRecords(msg string, procs []*testutil.Proc, match ...string) []logRecord {
	var out []logRecord
	for _, p := range procs {
		f, err := os.Open(p.Log)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
	lines:
		for sc.Scan() {
			var r logRecord
			if json.Unmarshal(sc.Bytes(), &r) != nil || r.str("msg") != msg {
				continue
			}
			for i := 0; i+1 < len(match); i += 2 {
				if r.str(match[i]) != match[i+1] {
					continue lines
				}
			}
			out = append(out, r)
		}
		f.Close()
	}
	return out
}

// httpGet returns the status and body of GET http://addr+path (0 when it
// cannot connect).
func httpGet(addr, path string) (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// watchHealthz polls the worker's /healthz every 200 ms until the returned
// stop is called, which says how many polls were not 200 of how many.
func watchHealthz(addr string) (stop func() (bad, polls int)) {
	done := make(chan struct{})
	var bad, polls int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				code, _ := httpGet(addr, "/healthz")
				polls++
				if code != http.StatusOK {
					bad++
				}
			}
		}
	}()
	return func() (int, int) {
		close(done)
		wg.Wait()
		return bad, polls
	}
}

// chunkStats counts the batch's chunks run more than once and its dead
// letters.
func (e *env) chunkStats(id string) (retried, deadLetters int) {
	e.T.Helper()
	require.NoError(e.T, e.DB.Pool.QueryRow(context.Background(), `
		SELECT (SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND attempts > 1),
		       (SELECT count(*) FROM dead_letters WHERE batch_id = $1)`, id).Scan(&retried, &deadLetters))
	return retried, deadLetters
}

// chunkCells selects the cells of chunk i of size in the chaos region, and
// a grid ID in its middle.
func chunkCells(t *testing.T, i, size int) (in func(grid.Cell) bool, middle int64) {
	region, err := grid.ParseRegion(0.05, "124,33,132,39", 0)
	require.NoError(t, err)
	ids := region.ChunkIDs(i, size)
	set := make(map[int64]bool, len(ids))
	for _, id := range ids {
		set[id] = true
	}
	return func(c grid.Cell) bool { return set[c.GridID] }, ids[len(ids)/2]
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// memoryKills returns w's records of its kind's model processes killed at
// their memory limit.
func memoryKills(w *testutil.Proc, kind string) []logRecord {
	var kills []logRecord
	for _, r := range logRecords("model process killed", []*testutil.Proc{w}, "kind", kind) {
		if strings.HasPrefix(r.str("reason"), "memory limit") {
			kills = append(kills, r)
		}
	}
	return kills
}

// wholeChunksSplit counts the batch's whole chunks (not pieces of one) that
// were split in halves.
func (e *env) wholeChunksSplit(t *testing.T, id string) int {
	t.Helper()
	var n int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND status = 'split' AND hi = 0`, id).Scan(&n))
	return n
}
