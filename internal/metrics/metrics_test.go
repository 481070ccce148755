package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/metrics"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/internal/worker/workertest"
	"github.com/gridbatch/gridbatch/tasks"
)

// value gathers the registry, checks it lints clean, and returns one series.
func value(t *testing.T, m *metrics.Worker, name string, labels map[string]string) float64 {
	t.Helper()
	problems, err := promtest.GatherAndLint(m.Registry())
	require.NoError(t, err)
	require.Empty(t, problems, "promlint")
	fams, err := m.Registry().Gather()
	require.NoError(t, err)
	got := workertest.Families{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	return got.Require(t, name, labels)
}

func TestMiddlewareCountsOutcomes(t *testing.T) {
	t.Parallel()
	m := metrics.NewWorker(tasks.TypeChunk, tasks.TypePlan)
	ok := asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		metrics.CellsWritten(ctx, 20)
		return nil
	})
	skip := asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		metrics.Skipped(ctx)
		return nil
	})
	fail := asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		metrics.DBError(ctx)
		return errors.New("db down")
	})
	chunk := asynq.NewTask(tasks.TypeChunk, nil)
	ctx := context.Background()
	require.NoError(t, m.Middleware(ok).ProcessTask(ctx, chunk))
	require.NoError(t, m.Middleware(ok).ProcessTask(ctx, chunk))
	require.NoError(t, m.Middleware(skip).ProcessTask(ctx, asynq.NewTask(tasks.TypePlan, nil)))
	require.Error(t, m.Middleware(fail).ProcessTask(ctx, chunk))
	require.NoError(t, m.Middleware(ok).ProcessTask(ctx, asynq.NewTask("stray:type", nil)))

	// A run that returns nil after its context ended was already reported
	// failed by asynq's ErrorHandler: it is not counted succeeded.
	late, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-late.Done()
	require.NoError(t, m.Middleware(ok).ProcessTask(late, chunk))

	m.TaskFailed(tasks.TypeChunk, metrics.OutcomeRetried)
	m.TaskFailed(tasks.TypeChunk, metrics.OutcomeFailed)
	m.TaskFailed(tasks.TypeChunk, metrics.OutcomeTimedOut)

	for _, c := range []struct {
		typ, outcome string
		want         float64
	}{
		{tasks.TypeChunk, metrics.OutcomeSucceeded, 2},
		{tasks.TypeChunk, metrics.OutcomeRetried, 1},
		{tasks.TypeChunk, metrics.OutcomeFailed, 1},
		{tasks.TypeChunk, metrics.OutcomeTimedOut, 1},
		{tasks.TypeChunk, metrics.OutcomeSkipped, 0},
		{tasks.TypePlan, metrics.OutcomeSkipped, 1},
		{tasks.TypePlan, metrics.OutcomeSucceeded, 0},
		{"other", metrics.OutcomeSucceeded, 1},
	} {
		require.Equal(t, c.want, value(t, m, metrics.NameTasks, map[string]string{"type": c.typ, "outcome": c.outcome}), "%s %s", c.typ, c.outcome)
	}
	require.Equal(t, 4.0, value(t, m, metrics.NameTaskDuration, map[string]string{"type": tasks.TypeChunk}), "every chunk run's duration is observed")
	require.Equal(t, 80.0, value(t, m, metrics.NameCellsWritten, nil), "four runs wrote 20 cells each, the late one too")
	require.Equal(t, 1.0, value(t, m, metrics.NameDBErrors, nil))
	require.Equal(t, 0.0, value(t, m, metrics.NameTasksInFlight, map[string]string{"type": tasks.TypeChunk}))
}

func TestBreakerAndOverdueGauges(t *testing.T) {
	t.Parallel()
	m := metrics.NewWorker()
	for state, want := range map[string]float64{metrics.BreakerOpen: 2, metrics.BreakerHalfOpen: 1, metrics.BreakerClosed: 0} {
		m.SetBreakerState(state)
		require.Equal(t, want, value(t, m, metrics.NameBreakerState, nil), state)
	}
	m.SetOverdueHandlers(3)
	require.Equal(t, 3.0, value(t, m, metrics.NameOverdueHandlers, nil))

	var nilWorker *metrics.Worker // a worker without metrics must not crash
	nilWorker.SetBreakerState(metrics.BreakerOpen)
	nilWorker.SetOverdueHandlers(1)
	nilWorker.TaskFailed(tasks.TypeChunk, metrics.OutcomeFailed)
	metrics.Skipped(context.Background())
	metrics.CellsWritten(context.Background(), 5)
	metrics.DBError(context.Background())
}

// TestWorkerMetricsAfterBatch runs a real worker and a batch with two
// chunks missing the inputs of one cell each, then checks the worker's
// /metrics: it parses with Prometheus' text parser and counts what the
// batch did. Each of the two chunks (20 cells) is split around its cell:
// 5 splits (20, 10, 5, 3, 2 cells) and one dead-lettered cell each.
func TestWorkerMetricsAfterBatch(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	spec := workertest.Batch{MissingInputs: []int{3, 7}}
	workertest.Seed(t, db, spec)
	w := workertest.StartWorker(t, r, db, map[string]string{"GRIDBATCH_CONCURRENCY": "2", "GRIDBATCH_MAX_RETRY": "0"})
	b := workertest.WaitEnded(t, db, workertest.Trigger(t, r, db, spec).ID, 2*time.Minute)
	require.Equal(t, store.StatusPartial, b.Status, "error: %v", b.Error)
	require.Equal(t, 8, b.CompletedChunks)
	require.Equal(t, 2, b.FailedChunks)

	f := workertest.Scrape(t, "http://"+w.Addr+"/metrics", "", "")
	chunk := func(outcome string) map[string]string {
		return map[string]string{"type": tasks.TypeChunk, "outcome": outcome}
	}
	require.Equal(t, int64(2), b.FailedCells)
	require.Equal(t, 8.0+2*5, f.Require(t, metrics.NameTasks, chunk(metrics.OutcomeSucceeded)), "8 chunks and the 5 halves beside each split")
	require.Equal(t, 2.0*5, f.Require(t, metrics.NameTasks, chunk(metrics.OutcomeSplit)), "missing input is split at once")
	require.Equal(t, 2.0, f.Require(t, metrics.NameTasks, chunk(metrics.OutcomeFailed)), "the lone cells are dead-lettered at once")
	require.Equal(t, 2.0, f.Require(t, metrics.NameCellsFailed, nil))
	require.Equal(t, 0.0, f.Require(t, metrics.NameTasks, chunk(metrics.OutcomeRetried)))
	require.Equal(t, 0.0, f.Require(t, metrics.NameTasks, chunk(metrics.OutcomeTimedOut)))
	require.Equal(t, 0.0, f.Require(t, metrics.NameTasks, chunk(metrics.OutcomeSkipped)))
	require.Equal(t, 1.0, f.Require(t, metrics.NameTasks, map[string]string{"type": tasks.TypePlan, "outcome": metrics.OutcomeSucceeded}))
	require.Equal(t, 10.0+2*10, f.Require(t, metrics.NameTaskDuration, map[string]string{"type": tasks.TypeChunk}))
	require.Equal(t, float64(b.CompletedCells), f.Require(t, metrics.NameCellsWritten, nil))
	require.Equal(t, 0.0, f.Require(t, metrics.NameDBErrors, nil))
	require.Equal(t, 0.0, f.Require(t, metrics.NameBreakerState, nil))
	require.Equal(t, 0.0, f.Require(t, metrics.NameOverdueHandlers, nil))
	require.Equal(t, 0.0, f.Require(t, metrics.NameTasksInFlight, map[string]string{"type": tasks.TypeChunk}))
	f.Require(t, "go_goroutines", nil)
	f.Require(t, "process_resident_memory_bytes", nil)

	// The dead-letter log lines are JSON and name their batch, chunk and task.
	dead := 0
	for _, line := range strings.Split(w.Log(), "\n") {
		if strings.Contains(line, `"task dead-lettered"`) {
			dead++
			for _, key := range []string{`"batch_id":"` + b.ID + `"`, `"chunk":`, `"task_id":"` + b.ID + `:c`} {
				require.Contains(t, line, key)
			}
		}
	}
	require.Equal(t, 2, dead)
}
