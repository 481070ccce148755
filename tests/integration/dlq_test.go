//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// countDeadLetters returns the rows of dead_letters and their distinct task IDs.
func (c *cluster) countDeadLetters() (rows, distinct int) {
	c.T.Helper()
	require.NoError(c.T, c.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*), count(DISTINCT task_id) FROM dead_letters`).Scan(&rows, &distinct))
	return rows, distinct
}

// holdChunks starts a batch whose chunk tasks wait in the paused grid queue:
// a worker runs the plan task and is stopped. It returns the batch.
func (c *cluster) holdChunks(insp *asynq.Inspector) store.Batch {
	c.T.Helper()
	require.NoError(c.T, insp.PauseQueue(tasks.QueueGrid))
	w := c.Worker()
	id := c.RunBatch("--kind", "ph")
	var b store.Batch
	waitFor(c.T, time.Minute, "the chunk tasks to be enqueued", func() bool {
		b = c.Batch(id)
		q, err := insp.GetQueueInfo(tasks.QueueGrid)
		return err == nil && b.PlannedChunks == b.TotalChunks && q.Pending == b.TotalChunks
	})
	w.Signal(syscall.SIGTERM)
	require.Equal(c.T, 0, w.Wait(c.T, 30*time.Second))
	return b
}

func TestDLQRecordsMoreThanTheArchiveKeeps(t *testing.T) {
	t.Parallel()
	const n = 12_000
	c := newCluster(t)
	ctx := context.Background()
	client := asynq.NewClient(c.Redis.ClientOpt())
	defer client.Close()

	// Half cannot be decoded; half are chunks outside any grid, of a batch
	// that does not exist. Each fails permanently at its first run.
	start := time.Now()
	const fake = "ph-19700101-000000-000000"
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < n; i += 16 {
				var t *asynq.Task
				var id string
				if i%2 == 0 {
					id, t = fmt.Sprintf("junk-%05d", i), asynq.NewTask(tasks.TypeChunk, []byte(`{"batch_id": 42`))
				} else {
					chunk := 1_000_000 + i
					p, _ := json.Marshal(tasks.ChunkPayload{BatchID: fake, Kind: "ph", Chunk: chunk, Step: 0.05,
						BBox: [4]float64{124, 33, 132, 39}, ChunkSize: 500})
					id, t = batch.ChunkTaskID(fake, chunk), asynq.NewTask(tasks.TypeChunk, p)
				}
				if _, err := client.Enqueue(t, asynq.Queue(tasks.QueueGrid), asynq.TaskID(id), asynq.MaxRetry(5)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// Two workers, the error handlers and the sweep (every second) all
	// record at once: each dead letter must still be recorded once.
	c.Worker("GRIDBATCH_CONCURRENCY=40", "GRIDBATCH_DB_MAX_CONNS=12", "GRIDBATCH_DLQ_SWEEP_INTERVAL=1s", "GRIDBATCH_LOG_LEVEL=warn")
	c.Worker("GRIDBATCH_CONCURRENCY=40", "GRIDBATCH_DB_MAX_CONNS=12", "GRIDBATCH_DLQ_SWEEP_INTERVAL=1s", "GRIDBATCH_LOG_LEVEL=warn")
	wg.Wait()
	close(errs)
	require.NoError(t, <-errs)
	t.Logf("enqueued %d tasks in %s", n, time.Since(start).Round(time.Millisecond))

	waitFor(t, 3*time.Minute, fmt.Sprintf("%d dead letters", n), func() bool {
		rows, _ := c.countDeadLetters()
		return rows >= n
	})
	t.Logf("all %d dead-lettered and recorded %s after the first enqueue", n, time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // a sweep or two more: still once each
	rows, distinct := c.countDeadLetters()
	require.Equal(t, n, rows)
	require.Equal(t, n, distinct, "each task recorded once")
	archived, err := c.Redis.Client.ZCard(ctx, "asynq:{grid}:archived").Result()
	require.NoError(t, err)
	require.Less(t, archived, int64(n), "asynq's archive trimmed")
	require.EqualValues(t, 9_999, archived)
	var bad, chunks int
	require.NoError(t, c.DB.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE last_error LIKE '%bad payload%'),
		count(*) FILTER (WHERE batch_id = $1 AND chunk >= 1000000) FROM dead_letters`, fake).Scan(&bad, &chunks))
	require.Equal(t, n/2, bad)
	require.Equal(t, n/2, chunks)
	out, _, code := c.Enqueuer("dlq", "list", "--json", "--limit", "1")
	require.Equal(t, 0, code)
	require.Contains(t, out, fmt.Sprintf(`"total": %d`, n))
}

func TestDLQRequeueHealsPartialBatch(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := context.Background()
	c.Seed()
	// Break three chunks: one cell of each loses its inputs.
	l, err := grid.NewLattice(0.05)
	require.NoError(t, err)
	region, err := grid.NewRegion(l, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}, 0)
	require.NoError(t, err)
	broken := []int{5, 17, 30}
	for _, ch := range broken {
		ids := region.ChunkIDs(ch, 500)
		tag, err := c.DB.Pool.Exec(ctx, `DELETE FROM cell_params WHERE step = 0.05 AND grid_id = $1`, ids[len(ids)/2])
		require.NoError(t, err)
		require.EqualValues(t, 1, tag.RowsAffected())
	}
	c.Worker("GRIDBATCH_CONCURRENCY=4")
	id := c.RunBatch("--kind", "ph")
	b := c.WaitEnded(id, 3*time.Minute)
	require.Equal(t, store.StatusPartial, b.Status, "error: %v", b.Error)
	require.Equal(t, len(broken), b.FailedChunks)
	require.Equal(t, b.TotalChunks-len(broken), b.CompletedChunks)
	require.EqualValues(t, len(broken), b.FailedCells, "each chunk is split around its cell: one cell failed each")
	require.EqualValues(t, koreaCells-len(broken), b.CompletedCells)
	firstEnd := *b.EndedAt
	_, _, code := c.Enqueuer("status", id)
	require.Equal(t, 3, code, "partial exits 3")

	out, _, code := c.Enqueuer("dlq", "list", "--batch", id, "--json")
	require.Equal(t, 0, code)
	var listed struct {
		Total       int `json:"total"`
		DeadLetters []struct {
			TaskID    string `json:"task_id"`
			Chunk     int    `json:"chunk"`
			GridID    *int64 `json:"grid_id"`
			LastError string `json:"last_error"`
		} `json:"dead_letters"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &listed))
	require.Equal(t, len(broken), listed.Total)
	for _, d := range listed.DeadLetters {
		require.Contains(t, broken, d.Chunk)
		require.Contains(t, d.LastError, "no inputs in cell_params")
		require.NotNil(t, d.GridID, "a dead letter names its cell")
		require.Equal(t, region.ChunkIDs(d.Chunk, 500)[250], *d.GridID)
	}

	// The cause is fixed; the dead letters run again and heal the batch.
	c.Seed()
	out, errOut, code := c.Enqueuer("dlq", "requeue", "--batch", id, "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Equal(t, len(broken), strings.Count(out, "would requeue"))
	require.Equal(t, store.StatusPartial, c.Batch(id).Status)
	requeuedAt := time.Now()
	out, errOut, code = c.Enqueuer("dlq", "requeue", "--batch", id)
	require.Equal(t, 0, code, errOut)
	require.Equal(t, len(broken), strings.Count(out, "requeued "), out)
	waitFor(t, time.Minute, "the batch to heal", func() bool { return c.Batch(id).Status == store.StatusSucceeded })
	t.Logf("healed %s after the requeue", time.Since(requeuedAt).Round(time.Millisecond))

	b = c.Batch(id)
	require.Equal(t, b.TotalChunks, b.CompletedChunks)
	require.Zero(t, b.FailedChunks)
	require.Zero(t, b.FailedCells)
	require.EqualValues(t, koreaCells, b.CompletedCells)
	require.Equal(t, b.TotalChunks, b.DoneChunks)
	require.Equal(t, 1.0, *b.SuccessRate)
	require.Nil(t, b.Error)
	require.True(t, b.EndedAt.After(firstEnd), "ended_at moves to the last requeued chunk")
	require.InDelta(t, b.EndedAt.Sub(b.StartedAt).Seconds(), *b.DurationSeconds, 0.01)
	requireExactRows(t, c, "ph")
	_, _, code = c.Enqueuer("status", id)
	require.Equal(t, 0, code)

	var open int
	require.NoError(t, c.DB.Pool.QueryRow(ctx, `SELECT count(*) FROM dead_letters WHERE batch_id = $1 AND requeued_at IS NULL`, id).Scan(&open))
	require.Zero(t, open, "every dead letter is marked requeued")
	archived, err := c.Redis.Client.ZCard(ctx, "asynq:{grid}:archived").Result()
	require.NoError(t, err)
	require.Zero(t, archived, "the archived copies are gone")
	out, _, code = c.Enqueuer("dlq", "requeue", "--batch", id)
	require.Equal(t, 0, code)
	require.Empty(t, out, "nothing left to requeue")
}

func TestDLQSweepRecordsTaskArchivedWithoutHandler(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Seed()
	insp := asynq.NewInspector(c.Redis.ClientOpt())
	defer insp.Close()
	b := c.holdChunks(insp)
	// No worker runs: archiving the task now is a worker killed between
	// archiving it and recording it; no error handler ever sees it.
	taskID := batch.ChunkTaskID(b.ID, 7)
	require.NoError(t, insp.ArchiveTask(tasks.QueueGrid, taskID))
	require.NoError(t, insp.UnpauseQueue(tasks.QueueGrid))

	const sweep = 3 * time.Second
	start := time.Now()
	c.Worker("GRIDBATCH_DLQ_SWEEP_INTERVAL=" + sweep.String())
	var failedAt time.Time
	waitFor(t, time.Minute, "the sweep to record the archived task", func() bool {
		return c.DB.Pool.QueryRow(context.Background(), `SELECT failed_at FROM dead_letters WHERE task_id = $1`, taskID).Scan(&failedAt) == nil
	})
	took := time.Since(start)
	t.Logf("recorded %s after the worker started (sweep interval %s)", took.Round(time.Millisecond), sweep)
	// The stopped worker's reconciler lease (3 × 1 s) must lapse first, and
	// the new worker takes a moment to start.
	require.Less(t, took, sweep+3*time.Second+5*time.Second)

	// The chunk is failed through the same path as the error handler's, and
	// the batch ends partial with it.
	end := c.WaitEnded(b.ID, 2*time.Minute)
	require.Equal(t, store.StatusPartial, end.Status)
	require.Equal(t, 1, end.FailedChunks)
	require.Equal(t, b.TotalChunks-1, end.CompletedChunks)
	out, _, code := c.Enqueuer("dlq", "show", taskID)
	require.Equal(t, 0, code)
	require.Contains(t, out, "archived with no error")
	require.Contains(t, out, fmt.Sprintf("batch:       %s, chunk 7", b.ID))
}

func TestOrphanedActiveTaskIsRecovered(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := context.Background()
	c.Seed()
	insp := asynq.NewInspector(c.Redis.ClientOpt())
	defer insp.Close()
	b := c.holdChunks(insp)
	// Chunk 3 becomes active with no lease, as in hibiken/asynq#1144: no
	// worker runs it and asynq's recoverer never looks at it.
	taskID := batch.ChunkTaskID(b.ID, 3)
	rdb := c.Redis.Client
	require.EqualValues(t, 1, rdb.LRem(ctx, "asynq:{grid}:pending", 0, taskID).Val())
	require.NoError(t, rdb.LPush(ctx, "asynq:{grid}:active", taskID).Err())
	require.NoError(t, rdb.HSet(ctx, "asynq:{grid}:t:"+taskID, "state", "active").Err())
	require.NoError(t, rdb.HDel(ctx, "asynq:{grid}:t:"+taskID, "pending_since").Err())
	info, err := insp.GetTaskInfo(tasks.QueueGrid, taskID)
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateActive, info.State)
	require.NoError(t, insp.UnpauseQueue(tasks.QueueGrid))

	start := time.Now()
	w := c.Worker()
	end := c.WaitEnded(b.ID, 2*time.Minute)
	t.Logf("batch ended %s after the worker started", time.Since(start).Round(time.Millisecond))
	require.Equal(t, store.StatusSucceeded, end.Status, "error: %v", end.Error)
	require.Equal(t, end.TotalChunks, end.CompletedChunks)
	requireExactRows(t, c, "ph")
	logText, err := os.ReadFile(w.Log)
	require.NoError(t, err)
	require.Contains(t, string(logText), "recovered an orphaned active task")
	require.Contains(t, string(logText), taskID)
	active, err := rdb.LLen(ctx, "asynq:{grid}:active").Result()
	require.NoError(t, err)
	require.Zero(t, active)
}

func TestDLQCommandsRefuseAndChangeNothing(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := context.Background()
	_, err := c.DB.Store.RecordDeadLetter(ctx, store.DeadLetter{TaskID: "junk-1", Type: tasks.TypeChunk, Queue: tasks.QueueGrid,
		Payload: []byte(`{"batch_id": 42`), LastError: "bad payload", FailedAt: time.Now()})
	require.NoError(t, err)
	unchanged := func() {
		t.Helper()
		var n int
		var requeued *time.Time
		require.NoError(t, c.DB.Pool.QueryRow(ctx, `SELECT count(*), max(requeued_at) FROM dead_letters`).Scan(&n, &requeued))
		require.Equal(t, 1, n)
		require.Nil(t, requeued)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"requeue of an unknown ID", []string{"dlq", "requeue", "nope"}, `no dead letter with task ID "nope"`},
		{"requeue of a known and an unknown ID", []string{"dlq", "requeue", "junk-1", "nope"}, `no dead letter with task ID "nope"`},
		{"requeue without a selector", []string{"dlq", "requeue"}, "needs exactly one of"},
		{"requeue of a batch with no dead letters", []string{"dlq", "requeue", "--batch", "ph-nope"}, `batch "ph-nope" has no dead letters`},
		{"requeue of a task that is no chunk of a batch", []string{"dlq", "requeue", "junk-1"}, "not a chunk of a batch"},
		{"purge without a selector", []string{"dlq", "purge"}, "needs exactly one of"},
		{"purge without a selector, with --yes", []string{"dlq", "purge", "--yes"}, "needs exactly one of"},
		{"purge of an unknown ID", []string{"dlq", "purge", "nope", "--yes"}, `no dead letter with task ID "nope"`},
		{"purge with no terminal and no --yes", []string{"dlq", "purge", "junk-1"}, "pass --yes"},
		{"show of an unknown ID", []string{"dlq", "show", "nope"}, `no dead letter with task ID "nope"`},
		{"an unknown verb", []string{"dlq", "frobnicate"}, "unknown dlq verb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := c.Enqueuer(tc.args...)
			require.Equal(t, 1, code, errOut)
			require.Contains(t, out+errOut, tc.want)
			unchanged()
		})
	}

	out, _, code := c.Enqueuer("dlq", "--help")
	require.Equal(t, 0, code)
	for _, verb := range []string{"list", "show", "requeue", "purge"} {
		require.Contains(t, out, "  "+verb)
	}
	out, _, code = c.Enqueuer("dlq", "purge", "--help")
	require.Equal(t, 0, code)
	require.Contains(t, out, "--older-than")
	require.Contains(t, out, "--yes")
	out, _, code = c.Enqueuer("dlq", "show", "junk-1")
	require.Equal(t, 0, code)
	require.Contains(t, out, `payload:     "{\"batch_id\": 42"`)
	out, errOut, code := c.Enqueuer("dlq", "list")
	require.Equal(t, 0, code)
	require.Contains(t, out, "junk-1")
	require.Contains(t, errOut, "1 of 1 dead letters")

	_, errOut, code = c.Enqueuer("dlq", "purge", "--older-than", "1h", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "nothing to purge")
	unchanged()
	_, errOut, code = c.Enqueuer("dlq", "purge", "junk-1", "--yes")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "purged 1 dead letters")
	rows, _ := c.countDeadLetters()
	require.Zero(t, rows)
}
