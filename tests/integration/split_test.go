//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// One bad cell costs one cell: the real worker and enqueuer run a 19,200-cell
// batch of tests/integration/testdata/poison.py (the reference ph failing
// on chosen cells); chunks that keep failing are split around the failing
// cells. Each test checks that the model really failed on each poisoned
// cell, alone at the end (its poison.log), and that every other cell's rows
// are the Go kernel's.

// poisonModel is a poison.py kind declared in a models file of its own.
type poisonModel struct {
	kind, dir string
}

// poisonModel declares kind, run by poison.py with env, in a models file in
// a temporary folder (the model's working directory, where it writes
// poison.log), gives the cluster's binaries GRIDBATCH_MODELS_FILE, runs
// `enqueuer migrate` and seeds the Korea grid.
func (c *cluster) poisonModel(kind string, env map[string]string, fields ...string) *poisonModel {
	c.T.Helper()
	m := &poisonModel{kind: kind, dir: testutil.ModelDir(c.T)}
	vars := []string{`"OMP_NUM_THREADS": "1"`, `"PYTHONDONTWRITEBYTECODE": "1"`}
	for k, v := range env {
		vars = append(vars, strconv.Quote(k)+": "+strconv.Quote(v))
	}
	yaml := fmt.Sprintf("models:\n  - kind: %s\n    command: [\"/usr/bin/python3\", %q]\n    env: {%s}\n", kind,
		filepath.Join(testutil.RepoRoot(), "tests", "integration", "testdata", "poison.py"), strings.Join(vars, ", "))
	for _, f := range fields {
		yaml += "    " + f + "\n"
	}
	path := filepath.Join(m.dir, "models.yaml")
	require.NoError(c.T, os.WriteFile(path, []byte(yaml), 0o644))
	c.AddEnv("GRIDBATCH_MODELS_FILE=" + path)
	_, errOut, code := c.Enqueuer("migrate")
	require.Equal(c.T, 0, code, errOut)
	c.Seed()
	return m
}

// log returns poison.log's lines whose first word is verb, without it.
func (m *poisonModel) log(t *testing.T, verb string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(m.dir, "poison.log"))
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if rest, ok := strings.CutPrefix(l, verb+" "); ok {
			out = append(out, rest)
		}
	}
	return out
}

// korea is the seeded region's cell IDs of chunk i of size.
func koreaChunk(t *testing.T, i, size int) []int64 {
	region, err := grid.ParseRegion(0.05, "124,33,132,39", 0)
	require.NoError(t, err)
	return region.ChunkIDs(i, size)
}

func idList(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(s, ",")
}

// requireIsolated checks that batch b ended partial with exactly the
// poisoned cells failed, one dead letter naming each, every other cell
// computed (rows equal to the kernel's), and that the model failed on each
// poisoned cell alone (a "hit" line of one cell in poison.log).
func requireIsolated(t *testing.T, c *cluster, m *poisonModel, b store.Batch, poison []int64) {
	t.Helper()
	k := len(poison)
	require.Equal(t, store.StatusPartial, b.Status, "error: %v", b.Error)
	require.EqualValues(t, k, b.FailedCells)
	require.EqualValues(t, koreaCells-k, b.CompletedCells)
	require.InDelta(t, float64(koreaCells-k)/koreaCells, *b.SuccessRate, 1e-12, "the success rate counts cells")

	rows, err := c.DB.Pool.Query(context.Background(), `SELECT grid_id, hi - lo, last_error FROM dead_letters
		WHERE batch_id = $1 AND requeued_at IS NULL ORDER BY grid_id`, b.ID)
	require.NoError(t, err)
	var named []int64
	for rows.Next() {
		var id *int64
		var cells int
		var lastErr string
		require.NoError(t, rows.Scan(&id, &cells, &lastErr))
		require.NotNil(t, id, "a dead letter names its cell (%s)", lastErr)
		require.Equal(t, 1, cells)
		named = append(named, *id)
	}
	require.NoError(t, rows.Err())
	want := slices.Clone(poison)
	slices.Sort(want)
	require.Equal(t, want, named, "one dead letter per poisoned cell")

	keep := func(cell grid.Cell) bool { return !slices.Contains(poison, cell.GridID) }
	// Every other cell's rows are the kernel's; a poisoned cell has none.
	n := testutil.CheckBatchResults(t, c.DB.Store, b.ID, grid.PH, 1e-12, 0.05, keep)
	require.Equal(t, (koreaCells-k)*len(grid.Scenarios), n, "rows of every other cell")

	hits := m.log(t, "hit")
	for _, id := range poison {
		alone := fmt.Sprintf("%d 1 ", id)
		require.True(t, slices.ContainsFunc(hits, func(h string) bool { return strings.HasPrefix(h, alone) }),
			"the model failed on cell %d alone; its hits: %v", id, hits)
	}
}

// runSplit runs a batch of m with `enqueuer run --wait` on two workers and
// returns it, how long it took, and what run --wait printed on stderr.
func runSplit(t *testing.T, c *cluster, m *poisonModel, workerEnv ...string) (store.Batch, time.Duration, string) {
	t.Helper()
	c.Worker(append([]string{"GRIDBATCH_CONCURRENCY=1"}, workerEnv...)...)
	c.Worker(append([]string{"GRIDBATCH_CONCURRENCY=1"}, workerEnv...)...)
	start := time.Now()
	out, errOut, _ := c.Enqueuer("run", "--kind", m.kind, "--chunk-size", "500", "--wait", "--progress-interval", "5s")
	took := time.Since(start)
	id := strings.SplitN(out, "\n", 2)[0]
	require.NotEmpty(t, id, errOut)
	b := c.WaitEnded(id, 10*time.Second)
	t.Logf("batch %s: %s in %s (duration_seconds %.1f); run --wait said:\n%s", id, b.Status, took.Round(100*time.Millisecond), *b.DurationSeconds, errOut)
	return b, took, errOut
}

// Three scattered cells raise ValueError: each chunk holding one is retried
// (5 retries, 1 s base), then split at once at every level down to the cell.
func TestSplitIsolatesThreeRaisingCells(t *testing.T) {
	c := newCluster(t, "GRIDBATCH_RETRY_BASE=1s")
	poison := []int64{koreaChunk(t, 3, 500)[250], koreaChunk(t, 17, 500)[7], koreaChunk(t, 36, 500)[499]}
	m := c.poisonModel("poison_py", map[string]string{"POISON_IDS": idList(poison), "POISON_MODE": "raise"})
	b, _, said := runSplit(t, c, m)
	requireIsolated(t, c, m, b, poison)
	require.Contains(t, said, "retry 1/5 in 1s")
	require.Contains(t, said, "split into 2×250")
	for _, id := range poison {
		require.Contains(t, said, fmt.Sprintf("cell %d", id))
	}
	require.Contains(t, said, "ValueError: poisoned cells")
	require.Contains(t, said, "enqueuer dlq list --batch "+b.ID)
	var retried int
	require.NoError(t, c.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND status = 'split' AND hi = 0 AND attempts = 6`, b.ID).Scan(&retried))
	require.Equal(t, 3, retried, "each poisoned chunk ran its 6 runs once, at the top; its halves were split at once")
}

// The same cells crash the model process (os.abort(), SIGABRT): each
// chunk holding one is split on its second death, its halves at their first.
func TestSplitIsolatesThreeAbortingCells(t *testing.T) {
	c := newCluster(t, "GRIDBATCH_RETRY_BASE=1s")
	poison := []int64{koreaChunk(t, 3, 500)[250], koreaChunk(t, 17, 500)[7], koreaChunk(t, 36, 500)[499]}
	m := c.poisonModel("abort_py", map[string]string{"POISON_IDS": idList(poison), "POISON_MODE": "abort"})
	b, _, said := runSplit(t, c, m)
	requireIsolated(t, c, m, b, poison)
	require.Contains(t, said, "crash: compute: model abort_py: model process")
	require.Contains(t, said, "ended: signal: aborted (SIGABRT): split into 2×250")
	var deadLetters int
	require.NoError(t, c.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM dead_letters WHERE batch_id = $1 AND last_error LIKE '%SIGABRT%'`, b.ID).Scan(&deadLetters))
	require.Equal(t, 3, deadLetters)
}

// A model that needs 0.8 MiB a cell, killed at memory_limit 300 MiB on 500
// cells (400 MiB), fits on 250 (200 MiB): every full chunk is retried as two
// halves and the batch succeeds.
func TestSplitChunkOverMemoryLimit(t *testing.T) {
	c := newCluster(t)
	m := c.poisonModel("memory_py", map[string]string{"POISON_MIB_PER_CELL": "0.8"}, "memory_limit: 300MiB", "timeout: 60s")
	b, _, said := runSplit(t, c, m)
	require.Equal(t, store.StatusSucceeded, b.Status, "error: %v", b.Error)
	require.EqualValues(t, koreaCells, b.CompletedCells)
	require.Zero(t, b.FailedCells)
	n := testutil.CheckBatchResults(t, c.DB.Store, b.ID, grid.PH, 1e-12, 0.05, nil)
	require.Equal(t, koreaCells*len(grid.Scenarios), n)
	var split, deadLetters int
	require.NoError(t, c.DB.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND status = 'split' AND cells = 500 AND attempts = 1),
		(SELECT count(*) FROM dead_letters WHERE batch_id = $1)`, b.ID).Scan(&split, &deadLetters))
	require.Equal(t, 38, split, "every 500-cell chunk is split at its first memory kill")
	require.Zero(t, deadLetters)
	require.Contains(t, m.log(t, "alloc"), "500 400", "the model did allocate 400 MiB for 500 cells")
	require.Contains(t, said, "out of memory: compute: model memory_py: model process")
}

// Poisoned cells in the first cell of the first chunk and the last cell of
// the last chunk (a short one), permanent errors (gridbatch_model.Permanent):
// split at once, never retried.
func TestSplitPoisonInFirstAndLastChunk(t *testing.T) {
	c := newCluster(t)
	last := koreaChunk(t, 38, 500)
	require.Len(t, last, 200)
	poison := []int64{koreaChunk(t, 0, 500)[0], last[len(last)-1]}
	m := c.poisonModel("edges_py", map[string]string{"POISON_IDS": idList(poison), "POISON_MODE": "permanent"})
	b, _, said := runSplit(t, c, m)
	requireIsolated(t, c, m, b, poison)
	require.Contains(t, said, "split into 2×100")
	var retried int
	require.NoError(t, c.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND attempts > 1`, b.ID).Scan(&retried))
	require.Zero(t, retried, "a permanent error is never retried")
}

// Two poisoned cells in one chunk, side by side and far apart.
func TestSplitTwoPoisonCellsInOneChunk(t *testing.T) {
	c := newCluster(t)
	ids := koreaChunk(t, 10, 500)
	poison := []int64{ids[100], ids[101], ids[402]}
	m := c.poisonModel("pair_py", map[string]string{"POISON_IDS": idList(poison), "POISON_MODE": "permanent"})
	b, _, _ := runSplit(t, c, m)
	requireIsolated(t, c, m, b, poison)
	require.Equal(t, 1, b.FailedChunks, "one planned chunk has dead-lettered cells")
	require.Equal(t, b.TotalChunks-1, b.CompletedChunks)
}

// A model that fails once on a cell, then computes it: the chunk is retried
// and succeeds, never split.
func TestSplitTransientFailureIsRetriedNotSplit(t *testing.T) {
	c := newCluster(t, "GRIDBATCH_RETRY_BASE=1s")
	poison := []int64{koreaChunk(t, 4, 500)[10], koreaChunk(t, 20, 500)[300]}
	m := c.poisonModel("once_py", map[string]string{"POISON_IDS": idList(poison), "POISON_MODE": "once"})
	b, _, said := runSplit(t, c, m)
	require.Equal(t, store.StatusSucceeded, b.Status, "error: %v", b.Error)
	require.EqualValues(t, koreaCells, b.CompletedCells)
	require.Len(t, m.log(t, "hit"), 2, "the model failed once on each")
	require.Len(t, m.log(t, "recovered"), 2, "then computed each")
	var split, retried int
	require.NoError(t, c.DB.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND status = 'split'),
		(SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND attempts = 2 AND status = 'succeeded')`, b.ID).Scan(&split, &retried))
	require.Zero(t, split)
	require.Equal(t, 2, retried)
	require.Contains(t, said, "retry 1/5 in 1s")
	require.NotContains(t, said, "split into")
	n := testutil.CheckBatchResults(t, c.DB.Store, b.ID, grid.PH, 1e-12, 0.05, nil)
	require.Equal(t, koreaCells*len(grid.Scenarios), n)
}

// A cell's dead letter, requeued once its cause is fixed, recomputes that
// cell alone and heals the batch to succeeded (and publishes it).
func TestSplitRequeueOfACellHealsTheBatch(t *testing.T) {
	c := newCluster(t)
	heal := filepath.Join(testutil.ModelDir(t), "healed")
	poison := []int64{koreaChunk(t, 12, 500)[321]}
	m := c.poisonModel("heal_py", map[string]string{"POISON_IDS": idList(poison), "POISON_MODE": "permanent", "POISON_HEAL_FILE": heal})
	b, _, _ := runSplit(t, c, m)
	requireIsolated(t, c, m, b, poison)

	require.NoError(t, os.WriteFile(heal, nil, 0o644))
	out, errOut, code := c.Enqueuer("dlq", "requeue", "--batch", b.ID)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, 1, strings.Count(out, "requeued "), out)
	waitFor(t, time.Minute, "the batch to heal", func() bool { return c.Batch(b.ID).Status == store.StatusSucceeded })
	require.Equal(t, []string{fmt.Sprintf("%d 1", poison[0])}, m.log(t, "healed"), "the requeue recomputed that cell alone")
	b = c.Batch(b.ID)
	require.EqualValues(t, koreaCells, b.CompletedCells)
	require.Zero(t, b.FailedCells)
	require.Zero(t, b.FailedChunks)
	require.NotNil(t, b.PublishedAt)
	n := testutil.CheckBatchResults(t, c.DB.Store, b.ID, grid.PH, 1e-12, 0.05, nil)
	require.Equal(t, koreaCells*len(grid.Scenarios), n)
}
