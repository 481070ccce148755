package batch_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/breaker"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/tasks"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// seededBBox is seeded by every fixture: 0.5° cells over Korea, 192 cells,
// 4 chunks of 50.
const (
	seededBBox = "124,33,132,39"
	chunkSize  = 50
	chunks     = 4
)

// fixture is a batch service on a test's own Redis database and schema,
// with the real asynq broker.
type fixture struct {
	t        *testing.T
	ctx      context.Context
	db       *testutil.DB
	insp     *asynq.Inspector
	broker   *tasks.Broker
	svc      *batch.Service
	mu       sync.Mutex
	finished []store.Batch
}

func newFixture(t *testing.T, cfg batch.Config) *fixture {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	f := &fixture{t: t, ctx: ctx, db: db}
	cfg.Worker = "test:1"
	cfg.OnFinished = func(b store.Batch) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.finished = append(f.finished, b)
	}
	conn := connect.New(db.Store, r.Client, connect.Options{Models: cfg.Models, Batch: cfg})
	f.insp, f.broker, f.svc = conn.Inspector, conn.Broker, conn.Batch
	_, err := db.Store.SeedCells(ctx, f.region(seededBBox), nil)
	require.NoError(t, err)
	return f
}

func (f *fixture) region(bbox string) grid.Region {
	f.t.Helper()
	r, err := grid.ParseRegion(0.5, bbox, 0)
	require.NoError(f.t, err)
	return r
}

func (f *fixture) request(kind string) batch.Request {
	return batch.Request{Kind: kind, Region: f.region(seededBBox), ChunkSize: chunkSize,
		Deadline: time.Hour, LockTTL: 2 * time.Hour, Trigger: "test"}
}

// trigger starts a batch of kind and plans it.
func (f *fixture) trigger(kind string) store.Batch {
	f.t.Helper()
	b, err := f.svc.Trigger(f.ctx, f.request(kind))
	require.NoError(f.t, err)
	require.NoError(f.t, f.svc.Plan(f.ctx, b.ID))
	return f.batch(b.ID)
}

func (f *fixture) batch(id string) store.Batch {
	f.t.Helper()
	b, err := f.db.Store.GetBatch(f.ctx, id)
	require.NoError(f.t, err)
	return b
}

func chunkOf(b store.Batch, i int) batch.Chunk {
	return batch.Chunk{BatchID: b.ID, TaskID: batch.ChunkTaskID(b.ID, i), Kind: b.Kind, Index: i, Step: b.Step,
		BBox: b.BBox, ChunkSize: b.ChunkSize}
}

// succeed runs chunk i as its task would, and takes the task out of the
// queue as asynq does when the handler returns.
func (f *fixture) succeed(b store.Batch, i int) {
	f.t.Helper()
	require.NoError(f.t, f.svc.RunChunk(f.ctx, chunkOf(b, i)))
	f.dequeue(b, i)
}

// deadLetter records chunk i dead-lettered as the error handler would, and
// takes the task out of the queue as asynq does when it archives it.
func (f *fixture) deadLetter(b store.Batch, i int) {
	f.t.Helper()
	require.NoError(f.t, f.svc.ChunkDeadLettered(f.ctx, chunkOf(b, i), "missing input for cell 42"))
	f.dequeue(b, i)
}

func (f *fixture) dequeue(b store.Batch, i int) {
	f.t.Helper()
	err := f.insp.DeleteTask(tasks.QueueGrid, batch.ChunkTaskID(b.ID, i))
	if !errors.Is(err, asynq.ErrTaskNotFound) {
		require.NoError(f.t, err)
	}
}

// succeeded runs a batch of kind whose chunks all succeed.
func (f *fixture) succeeded(kind string) store.Batch {
	f.t.Helper()
	b := f.trigger(kind)
	for c := range chunks {
		f.succeed(b, c)
	}
	return f.batch(b.ID)
}

func (f *fixture) lockHeld(id string) bool {
	f.t.Helper()
	ok, err := f.broker.LockExists(f.ctx, id)
	require.NoError(f.t, err)
	return ok
}

// queuedChunks counts the batch's chunk tasks in the grid queue.
func (f *fixture) queuedChunks(id string) int {
	f.t.Helper()
	n := 0
	for i := range chunks {
		if _, err := f.insp.GetTaskInfo(tasks.QueueGrid, batch.ChunkTaskID(id, i)); err == nil {
			n++
		}
	}
	return n
}

// finishedOnce requires that OnFinished was called exactly once for id, and returns what it was given.
func (f *fixture) finishedOnce(id string) store.Batch {
	f.t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var got []store.Batch
	for _, b := range f.finished {
		if b.ID == id {
			got = append(got, b)
		}
	}
	require.Len(f.t, got, 1, "OnFinished is called once per ended batch")
	return got[0]
}

func (f *fixture) chunkCounts(id string) map[string]int {
	f.t.Helper()
	counts, err := f.db.Store.ChunkCounts(f.ctx, id)
	require.NoError(f.t, err)
	return counts
}

func TestTrigger(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	b, err := f.svc.Trigger(f.ctx, f.request(grid.KindPH))
	require.NoError(t, err)
	require.Equal(t, store.StatusRunning, b.Status)
	require.Equal(t, chunks, b.TotalChunks)
	require.EqualValues(t, 192, b.TotalCells)
	require.WithinDuration(t, b.StartedAt.Add(time.Hour), b.DeadlineAt, time.Second)
	require.WithinDuration(t, b.StartedAt.Add(2*time.Hour), b.LockExpiresAt, time.Second)
	require.True(t, f.lockHeld(b.ID), "the batch holds its kind's lock")
	_, err = f.insp.GetTaskInfo(tasks.QueueBatch, tasks.PlanTaskID(b.ID))
	require.NoError(t, err, "the plan task is enqueued")

	t.Run("refused while a batch of the kind holds the lock", func(t *testing.T) {
		_, err := f.svc.Trigger(f.ctx, f.request(grid.KindPH))
		var refused *batch.RefusedError
		require.ErrorAs(t, err, &refused)
		require.Equal(t, b.ID, refused.RunningID)
		require.WithinDuration(t, b.LockExpiresAt, refused.ExpiresAt, 5*time.Second)
		require.Contains(t, err.Error(), "enqueuer cancel "+b.ID)
	})
	t.Run("another kind has its own lock", func(t *testing.T) {
		h, err := f.svc.Trigger(f.ctx, f.request(grid.KindHazard))
		require.NoError(t, err)
		require.True(t, f.lockHeld(h.ID))
	})
	for _, tc := range []struct {
		name   string
		mutate func(*batch.Request)
		want   string
	}{
		{"unknown kind", func(r *batch.Request) { r.Kind = "nope" }, "nope"},
		{"lock TTL not past the deadline", func(r *batch.Request) { r.LockTTL = r.Deadline }, "must be longer than the deadline"},
		{"no seeded inputs", func(r *batch.Request) { r.Region = f.region("0,0,1,1") }, "enqueuer seed"},
	} {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			r := f.request(grid.KindPH)
			tc.mutate(&r)
			_, err := f.svc.Trigger(f.ctx, r)
			require.ErrorContains(t, err, tc.want)
			var refused *batch.RefusedError
			require.False(t, errors.As(err, &refused), "not a lock refusal")
		})
	}
}

func TestPlan(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	b, err := f.svc.Trigger(f.ctx, f.request(grid.KindPH))
	require.NoError(t, err)
	require.NoError(t, f.svc.Plan(f.ctx, b.ID))
	b = f.batch(b.ID)
	require.Equal(t, chunks, b.PlannedChunks)
	require.Equal(t, map[string]int{store.ChunkPending: chunks}, f.chunkCounts(b.ID))
	require.Equal(t, chunks, f.queuedChunks(b.ID), "one task per chunk")

	t.Run("a re-plan doubles nothing", func(t *testing.T) {
		f.succeed(b, 0)
		require.NoError(t, f.svc.Plan(f.ctx, b.ID))
		require.Equal(t, map[string]int{store.ChunkPending: chunks - 1, store.ChunkSucceeded: 1}, f.chunkCounts(b.ID))
		n, err := f.insp.GetQueueInfo(tasks.QueueGrid)
		require.NoError(t, err)
		require.Equal(t, chunks-1, n.Size, "no chunk task enqueued twice")
	})
	t.Run("an unknown batch is never retried", func(t *testing.T) {
		err := f.svc.Plan(f.ctx, "ph-unknown")
		require.ErrorIs(t, err, store.ErrBatchNotFound)
		require.ErrorIs(t, err, batch.ErrPermanent)
	})
	t.Run("an ended batch is not planned", func(t *testing.T) {
		h, err := f.svc.Trigger(f.ctx, f.request(grid.KindHazard))
		require.NoError(t, err)
		_, err = f.svc.Cancel(f.ctx, h.ID)
		require.NoError(t, err)
		require.NoError(t, f.svc.Plan(f.ctx, h.ID))
		require.Empty(t, f.chunkCounts(h.ID))
		require.Zero(t, f.queuedChunks(h.ID))
	})
}

// TestPlanAfterTheDeadlineEndsTimedOut: a batch first planned after its
// deadline (no worker ran until then) ends timed_out instead of running late.
func TestPlanAfterTheDeadlineEndsTimedOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	r := f.request(grid.KindPH)
	r.Deadline, r.LockTTL = 300*time.Millisecond, time.Minute
	b, err := f.svc.Trigger(f.ctx, r)
	require.NoError(t, err)
	time.Sleep(400 * time.Millisecond)
	require.NoError(t, f.svc.Plan(f.ctx, b.ID))
	require.Equal(t, store.StatusTimedOut, f.batch(b.ID).Status)
	require.Empty(t, f.chunkCounts(b.ID), "no chunk planned")
	require.Zero(t, f.queuedChunks(b.ID))
}

// TestFinish ends batches through their chunks' outcomes, one end status each.
func TestFinish(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		failFastAfter int
		deadLettered  []int // the other chunks succeed, in order
		status        string
		counts        map[string]int
	}{
		{name: "every chunk succeeded", status: store.StatusSucceeded,
			counts: map[string]int{store.ChunkSucceeded: 4}},
		{name: "some chunks dead-lettered", deadLettered: []int{1, 3}, status: store.StatusPartial,
			counts: map[string]int{store.ChunkSucceeded: 2, store.ChunkFailed: 2}},
		{name: "every chunk dead-lettered", deadLettered: []int{0, 1, 2, 3}, status: store.StatusFailed,
			counts: map[string]int{store.ChunkFailed: 4}},
		{name: "the first chunks failed the same way", failFastAfter: 2, deadLettered: []int{0, 1}, status: store.StatusFailed,
			counts: map[string]int{store.ChunkFailed: 2, store.ChunkCancelled: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, batch.Config{FailFastAfter: tc.failFastAfter})
			b := f.trigger(grid.KindPH)
			dead := map[int]bool{}
			for _, c := range tc.deadLettered {
				dead[c] = true
			}
			for c := range chunks {
				if f.batch(b.ID).Ended() {
					break
				}
				if dead[c] {
					f.deadLetter(b, c)
				} else {
					f.succeed(b, c)
				}
			}
			ended := f.batch(b.ID)
			require.Equal(t, tc.status, ended.Status, "error: %v", ended.Error)
			require.Equal(t, tc.counts, f.chunkCounts(b.ID))
			require.Equal(t, tc.counts[store.ChunkSucceeded], ended.CompletedChunks)
			require.Equal(t, tc.counts[store.ChunkFailed], ended.FailedChunks)
			require.Equal(t, chunks, ended.DoneChunks)
			require.NotNil(t, ended.EndedAt)
			require.NotNil(t, ended.DurationSeconds)
			require.Equal(t, tc.status, f.finishedOnce(b.ID).Status)
			require.False(t, f.lockHeld(b.ID), "the lock goes with the batch")
			require.Zero(t, f.queuedChunks(b.ID), "no task of the batch is left, the cancelled chunks' removed")
			next, err := f.svc.Trigger(f.ctx, f.request(grid.KindPH))
			require.NoError(t, err, "a new batch of the kind is accepted at once")
			require.NotEqual(t, b.ID, next.ID)
		})
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	b := f.trigger(grid.KindPH)
	f.succeed(b, 0)
	got, err := f.svc.Cancel(f.ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusCancelled, got.Status)
	require.Equal(t, "cancelled by operator", *got.Error)
	require.Equal(t, map[string]int{store.ChunkSucceeded: 1, store.ChunkCancelled: 3}, f.chunkCounts(b.ID))
	require.Equal(t, 3, got.CancelledChunks)
	require.Zero(t, f.queuedChunks(b.ID), "the queued chunk tasks are removed")
	require.False(t, f.lockHeld(b.ID))
	f.finishedOnce(b.ID)

	t.Run("refused: cancelling an ended batch", func(t *testing.T) {
		_, err := f.svc.Cancel(f.ctx, b.ID)
		require.ErrorContains(t, err, "already ended cancelled")
		ok := f.succeeded(grid.KindHazard)
		_, err = f.svc.Cancel(f.ctx, ok.ID)
		require.ErrorContains(t, err, "already ended succeeded")
		require.Equal(t, store.StatusSucceeded, f.batch(ok.ID).Status)
		f.finishedOnce(b.ID)
		f.finishedOnce(ok.ID)
	})
	t.Run("refused: cancelling an unknown batch", func(t *testing.T) {
		_, err := f.svc.Cancel(f.ctx, "ph-unknown")
		require.ErrorIs(t, err, store.ErrBatchNotFound)
	})
	t.Run("an unrecorded batch's lock is released", func(t *testing.T) {
		require.NoError(t, f.broker.AcquireLock(f.ctx, grid.KindPH, "ph-unrecorded", time.Now().Add(time.Hour), time.Hour))
		_, err := f.svc.Cancel(f.ctx, "ph-unrecorded")
		require.NoError(t, err)
		require.False(t, f.lockHeld("ph-unrecorded"))
	})
}

func TestEndTimedOut(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	b := f.trigger(grid.KindPH)
	f.succeed(b, 0)
	f.deadLetter(b, 1)
	require.NoError(t, f.svc.EndTimedOut(f.ctx, b.ID))
	got := f.batch(b.ID)
	require.Equal(t, store.StatusTimedOut, got.Status)
	require.Contains(t, *got.Error, "reached with 2 of 4 chunks done")
	require.Equal(t, map[string]int{store.ChunkSucceeded: 1, store.ChunkFailed: 1, store.ChunkTimedOut: 2}, f.chunkCounts(b.ID))
	require.Equal(t, 2, got.TimedOutChunks)
	require.EqualValues(t, 50+42, got.TimedOutCells)
	require.Zero(t, f.queuedChunks(b.ID))
	require.False(t, f.lockHeld(b.ID))
	f.finishedOnce(b.ID)

	t.Run("an ended batch keeps its status", func(t *testing.T) {
		ok := f.succeeded(grid.KindHazard)
		require.NoError(t, f.svc.EndTimedOut(f.ctx, ok.ID))
		require.Equal(t, store.StatusSucceeded, f.batch(ok.ID).Status)
		f.finishedOnce(ok.ID)
	})
	t.Run("an unrecorded batch is nothing to end", func(t *testing.T) {
		require.NoError(t, f.svc.EndTimedOut(f.ctx, "ph-unknown"))
	})
}

// TestEndedBatchRefusesTransitions checks that nothing moves an ended batch:
// a late chunk result, a late dead letter, a plan, a finish or a deadline.
func TestEndedBatchRefusesTransitions(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	b := f.trigger(grid.KindPH)
	f.succeed(b, 0)
	_, err := f.svc.Cancel(f.ctx, b.ID)
	require.NoError(t, err)
	before := f.batch(b.ID)

	f.succeed(b, 1)
	f.deadLetter(b, 2)
	require.NoError(t, f.svc.Plan(f.ctx, b.ID))
	f.svc.Finish(f.ctx, b.ID)
	require.NoError(t, f.svc.EndTimedOut(f.ctx, b.ID))

	after := f.batch(b.ID)
	require.Equal(t, before, after)
	require.Equal(t, map[string]int{store.ChunkSucceeded: 1, store.ChunkCancelled: 3}, f.chunkCounts(b.ID))
	rows, err := f.db.Store.BatchRows(f.ctx, b.ID)
	require.NoError(t, err)
	require.EqualValues(t, chunkSize*len(grid.Scenarios), rows, "the late chunk's rows are discarded")
	require.Zero(t, f.queuedChunks(b.ID))
	f.finishedOnce(b.ID)
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	const interval = time.Second
	for _, tc := range []struct {
		name string
		// arrange puts a running, planned batch into the state a crash left.
		arrange func(f *fixture, b store.Batch)
		status  string
		check   func(f *fixture, b store.Batch)
	}{
		{name: "the lock expired", status: store.StatusTimedOut,
			arrange: func(f *fixture, b store.Batch) {
				f.exec(`UPDATE batch_runs SET lock_expires_at = now() - interval '1 second' WHERE id = $1`, b.ID)
			},
			check: func(f *fixture, b store.Batch) {
				require.Contains(f.t, *f.batch(b.ID).Error, "lock expired")
				require.Equal(f.t, map[string]int{store.ChunkTimedOut: chunks}, f.chunkCounts(b.ID))
			}},
		{name: "the deadline passed and the lock task is gone", status: store.StatusTimedOut,
			arrange: func(f *fixture, b store.Batch) {
				f.exec(`UPDATE batch_runs SET deadline_at = now() - interval '1 minute' WHERE id = $1`, b.ID)
				require.NoError(f.t, f.broker.ReleaseLock(f.ctx, b.ID))
			},
			check: func(f *fixture, b store.Batch) {
				require.Contains(f.t, *f.batch(b.ID).Error, "deadline")
			}},
		{name: "the deadline passed but the lock task will end it", status: store.StatusRunning,
			arrange: func(f *fixture, b store.Batch) {
				f.exec(`UPDATE batch_runs SET deadline_at = now() - interval '1 minute' WHERE id = $1`, b.ID)
			}},
		{name: "the plan task was lost", status: store.StatusRunning,
			arrange: func(f *fixture, b store.Batch) {
				f.exec(`DELETE FROM chunk_runs WHERE batch_id = $1`, b.ID)
				f.exec(`UPDATE batch_runs SET planned_chunks = 0, started_at = now() - interval '1 minute' WHERE id = $1`, b.ID)
				require.NoError(f.t, f.insp.DeleteTask(tasks.QueueBatch, tasks.PlanTaskID(b.ID)))
			},
			check: func(f *fixture, b store.Batch) {
				_, err := f.insp.GetTaskInfo(tasks.QueueBatch, tasks.PlanTaskID(b.ID))
				require.NoError(f.t, err, "the plan task is enqueued again")
			}},
		{name: "the last chunk's finisher died", status: store.StatusPartial,
			arrange: func(f *fixture, b store.Batch) {
				for c := range chunks {
					o := store.ChunkOutcome{BatchID: b.ID, Chunk: c, Attempts: 1, Error: "x"}
					if c == 0 {
						_, err := f.db.Store.MarkChunkFailed(f.ctx, o)
						require.NoError(f.t, err)
						continue
					}
					_, err := f.db.Store.WriteChunk(f.ctx, b.Kind, b.Step, grid.FirstYear, nil, o, false)
					require.NoError(f.t, err)
				}
				require.Equal(f.t, store.StatusRunning, f.batch(b.ID).Status)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, batch.Config{})
			b := f.trigger(grid.KindPH)
			ended := f.trigger(grid.KindHazard)
			_, err := f.svc.Cancel(f.ctx, ended.ID)
			require.NoError(t, err)
			tc.arrange(f, b)
			require.NoError(t, f.svc.Reconcile(f.ctx, interval))
			require.Equal(t, tc.status, f.batch(b.ID).Status)
			if tc.status != store.StatusRunning {
				f.finishedOnce(b.ID)
				require.False(t, f.lockHeld(b.ID))
			}
			if tc.check != nil {
				tc.check(f, b)
			}
			require.Equal(t, store.StatusCancelled, f.batch(ended.ID).Status, "an ended batch is left alone")
			require.NoError(t, f.svc.Reconcile(f.ctx, interval), "a second pass changes nothing")
			require.Equal(t, tc.status, f.batch(b.ID).Status)
		})
	}
}

func (f *fixture) exec(sql string, args ...any) {
	f.t.Helper()
	_, err := f.db.Pool.Exec(f.ctx, sql, args...)
	require.NoError(f.t, err, fmt.Sprintf("%s %v", sql, args))
}

// TestClassify covers every branch of the one decider: what no retry can
// fix and is not the cells' doing is dead-lettered whole at once; the open
// breaker retries uncounted; the cells' failures retry, split or
// dead-letter a lone cell by kind, retry count and whether the chunk is
// already a half; the rest is retried, then dead-lettered whole.
func TestClassify(t *testing.T) {
	t.Parallel()
	raised := fmt.Errorf("compute: %w", model.ErrRaised)
	permanent := fmt.Errorf("compute: %w", model.ErrPermanent)
	crash := fmt.Errorf("compute: %w", model.ErrCrashed)
	memory := fmt.Errorf("compute: %w", model.ErrMemoryLimit)
	timeout := fmt.Errorf("killed: %w", context.DeadlineExceeded)
	first := batch.Attempt{Retried: 0, MaxRetry: 5, Cells: 500}
	second := batch.Attempt{Retried: 1, MaxRetry: 5, Cells: 500}
	last := batch.Attempt{Retried: 5, MaxRetry: 5, Cells: 500}
	half := batch.Attempt{Retried: 0, MaxRetry: 5, Cells: 250, Part: true}
	cell := batch.Attempt{Retried: 0, MaxRetry: 5, Cells: 1, Part: true}
	wholeCell := batch.Attempt{Retried: 0, MaxRetry: 5, Cells: 1}
	for _, tc := range []struct {
		name string
		err  error
		a    batch.Attempt
		want batch.Outcome
	}{
		{"open breaker", fmt.Errorf("x: %w", breaker.ErrOpen), last, batch.RetryUncounted},
		{"bad payload", fmt.Errorf("bad payload: %w", asynq.SkipRetry), first, batch.DeadLetter},
		{"ErrPermanent", fmt.Errorf("x: %w", batch.ErrPermanent), first, batch.DeadLetter},
		{"bad chunk", fmt.Errorf("x: %w", batch.ErrBadChunk), first, batch.DeadLetter},
		{"reply of the wrong shape", fmt.Errorf("x: %w", model.ErrInvalid), first, batch.DeadLetter},
		{"batch gone", fmt.Errorf("x: %w", store.ErrBatchNotFound), first, batch.DeadLetter},
		{"layout", fmt.Errorf("write: %w", store.ErrLayout), half, batch.DeadLetter},
		{"input with no column", &store.UnknownInputError{}, first, batch.DeadLetter},
		{"permanent model error splits at once", permanent, first, batch.Split},
		{"missing input splits at once", &store.MissingInputError{Step: 0.05, Missing: 1}, first, batch.Split},
		{"permanent error of one cell", permanent, wholeCell, batch.DeadLetter},
		{"exception retried", raised, first, batch.Retry},
		{"exception retried while retries are left", raised, batch.Attempt{Retried: 4, MaxRetry: 5, Cells: 500}, batch.Retry},
		{"exception with its retries used up splits", raised, last, batch.Split},
		{"exception of one cell with its retries used up", raised, batch.Attempt{Retried: 5, MaxRetry: 5, Cells: 1}, batch.DeadLetter},
		{"exception in a half splits at once", raised, half, batch.Split},
		{"exception in a lone cell of a split", raised, cell, batch.DeadLetter},
		{"first crash retried", crash, first, batch.Retry},
		{"second crash splits", crash, second, batch.Split},
		{"crash in a half splits at once", crash, half, batch.Split},
		{"second crash of one cell", crash, batch.Attempt{Retried: 1, MaxRetry: 5, Cells: 1}, batch.DeadLetter},
		{"first timeout retried", timeout, first, batch.Retry},
		{"second timeout splits", timeout, second, batch.Split},
		{"timeout in a lone cell of a split", timeout, cell, batch.DeadLetter},
		{"memory limit splits at once", memory, first, batch.Split},
		{"memory limit of one cell retried", memory, wholeCell, batch.Retry},
		{"memory limit of one cell with its retries used up", memory, batch.Attempt{Retried: 5, MaxRetry: 5, Cells: 1}, batch.DeadLetter},
		{"database error retried", errors.New("connection reset"), first, batch.Retry},
		{"database error in a half retried", errors.New("connection reset"), half, batch.Retry},
		{"database error with its retries used up", errors.New("connection reset"), last, batch.DeadLetter},
		{"cancelled run retried", fmt.Errorf("x: %w", context.Canceled), half, batch.Retry},
		{"no cells known: not split", raised, batch.Attempt{Retried: 5, MaxRetry: 5}, batch.DeadLetter},
		{"no retries at all: an exception splits on the first run", raised, batch.Attempt{MaxRetry: 0, Cells: 500}, batch.Split},
	} {
		require.Equal(t, tc.want, batch.Classify(tc.err, tc.a), "%s: %v %+v", tc.name, tc.err, tc.a)
	}
	require.False(t, batch.Counted(fmt.Errorf("x: %w", breaker.ErrOpen)))
	require.True(t, batch.Counted(raised))
}

// TestSplitDeliveredTwiceWritesEachRowOnce: a chunk failing with a
// permanent error is split in halves, recorded and enqueued once however
// often the split is delivered; a half delivered twice at once, and once
// more after, writes each of its cells' rows once and counts its cells once.
func TestSplitDeliveredTwiceWritesEachRowOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	b := f.trigger(grid.KindPH)
	c := chunkOf(b, 0)
	ids, _, err := c.Cells()
	require.NoError(t, err)
	cause := fmt.Errorf("compute: %w", model.ErrPermanent)
	for range 2 {
		out, err := f.svc.ChunkFailed(f.ctx, c, 5, cause)
		require.Equal(t, batch.Split, out)
		require.NoError(t, err, "a split ends the task")
	}
	halves := c.Piece().Halves(len(ids))
	for _, h := range halves {
		info, err := f.insp.GetTaskInfo(tasks.QueueGrid, batch.PartTaskID(b.ID, h))
		require.NoError(t, err, "half %s is queued", h)
		require.Equal(t, asynq.TaskStatePending, info.State)
	}
	counts, err := f.db.Store.ChunkCounts(f.ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, 1, counts[store.ChunkSplit], "split once")

	half := c
	half.Lo, half.Hi, half.TaskID = halves[0].Lo, halves[0].Hi, batch.PartTaskID(b.ID, halves[0])
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = f.svc.RunChunk(f.ctx, half) }()
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.NoError(t, f.svc.RunChunk(f.ctx, half), "a third delivery")
	n, err := f.db.Store.BatchRows(f.ctx, b.ID)
	require.NoError(t, err)
	cells := halves[0].Hi - halves[0].Lo
	require.Equal(t, int64(cells*len(grid.Scenarios)), n, "one series per cell and scenario of the half")
	cur := f.batch(b.ID)
	require.EqualValues(t, cells, cur.CompletedCells)
	require.Equal(t, store.StatusRunning, cur.Status)

	// The split of an already split chunk enqueues only the halves not done.
	f.dequeue(b, 0)
	require.NoError(t, f.insp.DeleteTask(tasks.QueueGrid, batch.PartTaskID(b.ID, halves[0])))
	out, err := f.svc.ChunkFailed(f.ctx, c, 5, cause)
	require.Equal(t, batch.Split, out)
	require.NoError(t, err)
	_, err = f.insp.GetTaskInfo(tasks.QueueGrid, batch.PartTaskID(b.ID, halves[0]))
	require.ErrorIs(t, err, asynq.ErrTaskNotFound, "a half done is not enqueued again")
}

// TestFailFastCountsSplitChunks: a model failing on every cell ends the
// batch failed once FailFastAfter planned chunks were split the same way
// with no cell computed; chunks split for running out of memory do not
// count (their halves may fit).
func TestFailFastCountsSplitChunks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cause error
		want  string
	}{
		{"permanent errors on every cell", fmt.Errorf("compute: %w", model.ErrPermanent), store.StatusFailed},
		{"memory-limit kills", fmt.Errorf("compute: %w", model.ErrMemoryLimit), store.StatusRunning},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, batch.Config{FailFastAfter: 2})
			b := f.trigger(grid.KindPH)
			for i := range 2 {
				out, err := f.svc.ChunkFailed(f.ctx, chunkOf(b, i), 5, tc.cause)
				require.NoError(t, err)
				require.Equal(t, batch.Split, out)
			}
			require.Equal(t, tc.want, f.batch(b.ID).Status)
		})
	}
}

// TestChunkNotOfItsBatchIsDeadLettered: a chunk task is checked against
// its batch's own row before anything is allocated from it: one for an
// unknown batch (claiming a 1 TiB chunk of a 1e-7° world grid) or whose
// fields differ from its batch's is dead-lettered at once, naming why, and
// the batch's real chunks still run.
func TestChunkNotOfItsBatchIsDeadLettered(t *testing.T) {
	t.Parallel()
	f := newFixture(t, batch.Config{})
	b := f.trigger(grid.KindPH)
	world := grid.BBox{LonMin: -180, LatMin: -90, LonMax: 180, LatMax: 90}
	hostile := batch.Chunk{BatchID: "ph-20000101-000000-000000", Kind: grid.KindPH, Step: 1e-7, BBox: world, ChunkSize: 1 << 40}
	err := f.svc.RunChunk(f.ctx, hostile)
	require.ErrorIs(t, err, store.ErrBatchNotFound)
	require.ErrorContains(t, err, `batch "ph-20000101-000000-000000": batch not found`)
	require.Equal(t, batch.DeadLetter, batch.Classify(err, batch.Attempt{MaxRetry: 5, Cells: 50}))

	for _, tc := range []struct {
		name string
		edit func(*batch.Chunk)
		want string
	}{
		{"chunk past the end", func(c *batch.Chunk) { c.Index = chunks }, "chunk 4 is not one of the batch's 4 chunks"},
		{"negative chunk", func(c *batch.Chunk) { c.Index = -1 }, "chunk -1 is not one of the batch's 4 chunks"},
		{"huge chunk size", func(c *batch.Chunk) { c.ChunkSize = 1 << 40 }, "chunk task of chunk size 1099511627776 for a batch of chunk size 50"},
		{"finer step", func(c *batch.Chunk) { c.Step = 1e-7 }, "chunk task of step 1e-07 for a batch of step 0.5"},
		{"other bbox", func(c *batch.Chunk) { c.BBox = world }, "chunk task of bbox -180,-90,180,90 for a batch of bbox 124,33,132,39"},
		{"other kind", func(c *batch.Chunk) { c.Kind = grid.KindHazard }, `chunk task of kind "hazard" for a batch of kind "ph"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := chunkOf(b, 1)
			tc.edit(&c)
			err := f.svc.RunChunk(f.ctx, c)
			require.ErrorIs(t, err, batch.ErrBadChunk)
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, batch.DeadLetter, batch.Classify(err, batch.Attempt{MaxRetry: 5, Cells: 50}))
		})
	}
	require.Equal(t, store.StatusRunning, f.batch(b.ID).Status, "the batch runs on")
	for i := range chunks {
		f.succeed(b, i)
	}
	require.Equal(t, store.StatusSucceeded, f.batch(b.ID).Status)
}
