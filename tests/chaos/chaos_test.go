//go:build integration

package chaos

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/tasks"
	"github.com/gridbatch/gridbatch/tests/chaos/chaosmodel"
)

// The scenarios share the chaos services (some stop or restart them), so
// they run one after another.

func TestChaos1SigkillOneOfTwoWorkers(t *testing.T) {
	e := newEnv(t)
	kind := e.pausingModel()
	w1 := e.Worker("GRIDBATCH_CONCURRENCY=2")
	e.Worker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", kind, "--chunk-size", "20")
	e.WaitDone(id, 40, 2*time.Minute)
	insp := asynq.NewInspectorFromRedisClient(e.Redis.Client)
	st := freezeComputing(t, w1, insp, e.DB, id)
	w1.Signal(syscall.SIGKILL)
	w1.Wait(t, 10*time.Second)
	st.release()
	b := e.WaitEnded(id, 4*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	ok := b.Status == store.StatusSucceeded && exp == found && b.CompletedChunks == b.TotalChunks
	handover := e.Batches.RequireHandedOver(t, insp, testutil.Handover{Batch: id, Worker: testutil.WorkerName(w1),
		Queue: tasks.QueueGrid, Tasks: st.tasks, Computing: st.computing, Retried: true})
	report("sigkill-one-of-two-workers", pass(ok), b, exp, found, handover)
	require.True(t, ok, "status %s, rows %d/%d, chunks %d/%d", b.Status, found, exp, b.CompletedChunks, b.TotalChunks)
}

func TestChaos2SigtermWorker(t *testing.T) {
	e := newEnv(t)
	// A very short shutdown timeout makes SIGTERM requeue whatever is in flight.
	kind := e.pausingModel()
	w1 := e.Worker("GRIDBATCH_CONCURRENCY=4", "GRIDBATCH_SHUTDOWN_TIMEOUT=1ms")
	e.Worker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", kind, "--chunk-size", "20")
	e.WaitDone(id, 40, 2*time.Minute)
	insp := asynq.NewInspectorFromRedisClient(e.Redis.Client)
	// SIGTERM while frozen mid-chunk: the shutdown finds that chunk's
	// task in flight (its write waits for the test's lock).
	st := freezeComputing(t, w1, insp, e.DB, id)
	w1.Signal(syscall.SIGTERM)
	w1.Signal(syscall.SIGCONT)
	select {
	case <-w1.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not exit within 30 s of SIGTERM")
	}
	st.release()
	require.NoError(t, w1.Err(), "SIGTERM exits 0")
	b := e.WaitEnded(id, 3*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, modelRel, all)
	var retried int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM chunk_runs WHERE batch_id = $1 AND attempts > 1`, id).Scan(&retried))
	ok := b.Status == store.StatusSucceeded && exp == found && retried == 0 && b.FailedChunks == 0
	handover := e.Batches.RequireHandedOver(t, insp, testutil.Handover{Batch: id, Worker: testutil.WorkerName(w1),
		Queue: tasks.QueueGrid, Tasks: testutil.RequeuedTasks(w1.LogText()), Computing: st.computing})
	report("sigterm-worker", pass(ok), b, exp, found, fmt.Sprintf("chunks_retried=%d %s", retried, handover))
	require.True(t, ok, "status %s, rows %d/%d, retried chunks %d", b.Status, found, exp, retried)
}

func TestChaos3PostgresDown30s(t *testing.T) {
	e := newEnv(t)
	px := startProxy(t, "127.0.0.1:"+pgPort)
	dbURL := "GRIDBATCH_DATABASE_URL=" + viaProxy(e.DB.URL, px)
	workerEnv := []string{dbURL, "GRIDBATCH_CONCURRENCY=2", "GRIDBATCH_BREAKER_FAILURES=3",
		"GRIDBATCH_BREAKER_OPEN_FOR=3s", "GRIDBATCH_MAX_RETRY=8", "GRIDBATCH_DB_CONNECT_TIMEOUT=2s"}
	w1 := e.Worker(workerEnv...)
	w2 := e.Worker(workerEnv...)
	id := e.RunBatch("--kind", "ph", "--chunk-size", "10")
	e.WaitDone(id, 60, 2*time.Minute)

	out, err := services("stop-postgres")
	require.NoError(t, err, out)
	before := px.attempts.Load()
	time.Sleep(30 * time.Second)
	during := px.attempts.Load() - before
	out, err = services("start-postgres")
	require.NoError(t, err, out)

	b := e.WaitEnded(id, 4*time.Minute)
	exp, found := e.rows(b, all)
	logs := w1.LogText() + w2.LogText()
	opened := strings.Contains(logs, "database circuit breaker open")
	closed := strings.Contains(logs, "database circuit breaker closed")
	// Unguarded, 4 handler slots retrying every 200 ms·(n+1) would dial
	// hundreds of times in 30 s; guarded, each worker probes once per 3 s.
	const maxAttempts = 60
	ok := b.Status == store.StatusSucceeded && exp == found && opened && closed && during <= maxAttempts
	report("postgres-stopped-30s", pass(ok), b, exp, found,
		fmt.Sprintf("connection_attempts_during_outage=%d (bound %d) breaker_opened=%t breaker_closed=%t db_conn_errors=%d",
			during, maxAttempts, opened, closed, b.DBConnErrors))
	require.True(t, ok, "status %s, rows %d/%d, attempts %d, opened %t, closed %t", b.Status, found, exp, during, opened, closed)
}

func TestChaos4TerminateAllBackends(t *testing.T) {
	e := newEnv(t)
	e.Worker("GRIDBATCH_CONCURRENCY=2")
	e.Worker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", "ph", "--chunk-size", "10")
	e.WaitDone(id, 60, 2*time.Minute)
	var killed int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(), `
		SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = 'gridbatch-worker' AND pid <> pg_backend_pid()`).Scan(&killed))
	b := e.WaitEnded(id, 3*time.Minute)
	exp, found := e.rows(b, all)
	ok := b.Status == store.StatusSucceeded && exp == found && killed > 0
	report("terminate-all-backends", pass(ok), b, exp, found, fmt.Sprintf("backends_terminated=%d", killed))
	require.True(t, ok, "status %s, rows %d/%d, terminated %d", b.Status, found, exp, killed)
}

func TestChaos5RedisRestart(t *testing.T) {
	e := newEnv(t)
	e.Worker("GRIDBATCH_CONCURRENCY=2")
	e.Worker("GRIDBATCH_CONCURRENCY=2")
	id := e.RunBatch("--kind", "ph", "--chunk-size", "10")
	e.WaitDone(id, 60, 2*time.Minute)
	out, err := services("restart-redis")
	require.NoError(t, err, out)
	b := e.WaitEnded(id, 4*time.Minute)
	exp, found := e.rows(b, all)
	ok := b.Status == store.StatusSucceeded && exp == found && b.CompletedChunks == b.TotalChunks
	report("redis-restart", pass(ok), b, exp, found, "")
	require.True(t, ok, "status %s, rows %d/%d", b.Status, found, exp)
}

func TestChaos6HandlerIgnoresCancellation(t *testing.T) {
	e := newEnv(t)
	addr := freePort(t)
	w := e.Start("testworker", []string{"GRIDBATCH_HTTP_ADDR=" + addr, "GRIDBATCH_HUNG_GRACE=2s", "GRIDBATCH_CONCURRENCY=2"})
	healthz := func() int {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitUntil(t, 20*time.Second, "worker healthy", func() bool { return healthz() == http.StatusOK })

	client := asynq.NewClientFromRedisClient(e.Redis.Client)
	start := time.Now()
	_, err := client.Enqueue(asynq.NewTask(chaosmodel.TypeHang, nil), asynq.Queue(tasks.QueueGrid),
		asynq.TaskID("hang-1"), asynq.Timeout(2*time.Second), asynq.MaxRetry(3))
	require.NoError(t, err)
	insp := asynq.NewInspectorFromRedisClient(e.Redis.Client)
	waitUntil(t, 30*time.Second, "the hung task to be retried", func() bool {
		info, err := insp.GetTaskInfo(tasks.QueueGrid, "hang-1")
		return err == nil && info.Retried >= 1
	})
	waitUntil(t, 30*time.Second, "/healthz to turn unhealthy", func() bool { return healthz() == http.StatusServiceUnavailable })
	took := time.Since(start)
	ok := strings.Contains(w.LogText(), "handler ignores cancellation")
	report("handler-ignores-cancellation", pass(ok), store.Batch{}, 0, 0,
		fmt.Sprintf("task_retried=true healthz=503 after=%.1fs", took.Seconds()))
	require.True(t, ok, "the watchdog logs the hung handler")
}

func TestChaos7ModelPanics(t *testing.T) {
	e := newEnv(t)
	addr := freePort(t)
	w := e.Start("testworker", []string{"GRIDBATCH_HTTP_ADDR=" + addr, "GRIDBATCH_MAX_RETRY=1", "GRIDBATCH_CONCURRENCY=2"})
	b := e.trigger(chaosmodel.Kind, 500)
	b = e.WaitEnded(b.ID, 3*time.Minute)
	exp, found := e.rowsOf(b, grid.PH, 0, func(c grid.Cell) bool { return c.Lat <= chaosmodel.PanicAbove })
	var deadLetters int
	require.NoError(t, e.DB.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM dead_letters WHERE batch_id = $1 AND last_error LIKE '%panic%'`, b.ID).Scan(&deadLetters))
	resp, err := http.Get("http://" + addr + "/healthz")
	serving := err == nil && resp.StatusCode == http.StatusOK && !w.Exited()
	if err == nil {
		resp.Body.Close()
	}
	ok := b.Status == store.StatusPartial && exp == found && deadLetters == b.FailedChunks && deadLetters > 0 && serving
	report("model-panics", pass(ok), b, exp, found, fmt.Sprintf("dead_letters=%d failed_chunks=%d worker_serving=%t", deadLetters, b.FailedChunks, serving))
	require.True(t, ok, "status %s, rows %d/%d, dead letters %d, failed chunks %d, serving %t", b.Status, found, exp, deadLetters, b.FailedChunks, serving)
}

func pass(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pausingModel declares a Python model that computes the ph kernel after a
// pause of 50 ms per chunk, and returns its kind. The reference model
// computes a chunk of 20 cells in well under a millisecond, so a worker
// stopped at a random moment is nearly always writing a chunk or
// acknowledging its task, and a fast batch can end before freezeComputing
// catches one mid-computation (a CI run's did, in 50 tries); with a pause,
// as users' models take seconds per chunk, most stops land in one.
func (e *env) pausingModel() string {
	return e.withModel("pause_py", pyModel("slow.py"), map[string]string{"CHAOS_SLEEP": "0.05"}, "timeout: 30s").kind
}

// stopped is a worker frozen while computing chunks, by freezeComputing.
type stopped struct {
	// tasks are the chunk tasks of the batch the worker holds.
	tasks []string
	// computing are the chunks of tasks it has not committed, whose rows
	// the test holds locked: it cannot commit them any more.
	computing []int
	// release ends the test's locks; call it once the worker has exited.
	release func()
}

// freezeComputing stops w (SIGSTOP) at a moment it is computing chunks of
// batch id, so that whatever w is sent next, they must be handed over. A
// chunk takes milliseconds, so a worker is often between two, or committing
// one: frozen, the tasks that stay active for a second are its own (the
// other workers' finish), and of their chunks the ones still pending are
// not committed. The test locks those rows (FOR UPDATE SKIP LOCKED: a row
// w's own write has locked is skipped, as its COMMIT may be on its way),
// so w cannot commit them even once it runs again: its write waits for the
// lock until w's shutdown cancels it, or w is killed. When w holds no such
// chunk, it is let go on (SIGCONT) and frozen again a moment later. The
// locks end with release, or with the test.
func freezeComputing(t *testing.T, w *testutil.Proc, insp *asynq.Inspector, db *testutil.DB, id string) stopped {
	t.Helper()
	ctx := context.Background()
	for try := 1; try <= 50; try++ {
		w.Signal(syscall.SIGSTOP)
		var held []string
		var chunks []int
		for _, tid := range testutil.OrphanedTasks(t, insp, tasks.QueueGrid, time.Second) {
			if b, c, ok := batch.ParseChunkTaskID(tid); ok && b == id {
				held = append(held, tid)
				chunks = append(chunks, c)
			}
		}
		if len(held) > 0 {
			tx, err := db.Pool.Begin(ctx)
			require.NoError(t, err)
			rows, err := tx.Query(ctx, `SELECT chunk FROM chunk_runs WHERE batch_id = $1 AND chunk = ANY($2)
				AND lo = 0 AND hi = 0 AND status = 'pending' FOR UPDATE SKIP LOCKED`, id, chunks)
			require.NoError(t, err)
			computing, err := pgx.CollectRows(rows, pgx.RowTo[int])
			require.NoError(t, err)
			if len(computing) > 0 {
				t.Logf("froze %s on try %d holding %v, computing %v", testutil.WorkerName(w), try, held, computing)
				release := sync.OnceFunc(func() { _ = tx.Rollback(ctx) })
				t.Cleanup(release)
				return stopped{tasks: held, computing: computing, release: release}
			}
			require.NoError(t, tx.Rollback(ctx))
		}
		w.Signal(syscall.SIGCONT)
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("worker %s was computing no chunk of batch %s in 50 tries", testutil.WorkerName(w), id)
	return stopped{}
}
