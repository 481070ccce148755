package testutil

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// failures records the failures of a check instead of failing the test.
type failures struct {
	testing.TB
	msgs []string
}

func (f *failures) Helper() {}

func (f *failures) Errorf(format string, args ...any) {
	f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
}

func (f *failures) Fatalf(format string, args ...any) { f.Errorf(format, args...); f.FailNow() }

func (f *failures) FailNow() { runtime.Goexit() }

// check runs fn against a failures in a goroutine of its own (FailNow ends
// it) and returns what it reported.
func check(t *testing.T, fn func(testing.TB)) []string {
	f := &failures{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msgs
}

func TestRequireHandedOver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := NewDB(t)
	r := NewRedis(t)
	insp := asynq.NewInspectorFromRedisClient(r.Client)
	// The queue exists (asynq answers "no such queue" otherwise), its chunk
	// tasks are gone: run to success.
	_, err := asynq.NewClientFromRedisClient(r.Client).Enqueue(asynq.NewTask("noop", nil), asynq.Queue("grid"), asynq.TaskID("noop"))
	require.NoError(t, err)
	require.NoError(t, insp.DeleteTask("grid", "noop"))
	region, err := grid.ParseRegion(0.5, "124,33,125,34", 0)
	require.NoError(t, err)
	bs := Batches{Store: db.Store}
	const stopped = "host:1"
	// run is how a chunk ended: by whom, on which attempt.
	type run struct {
		worker   string
		attempts int
	}
	for _, tc := range []struct {
		name      string
		runs      map[int]run // the chunks in flight on the stopped worker
		computing []int
		retried   bool
		fails     string
	}{
		{name: "every chunk committed before the stop hands nothing over",
			runs: map[int]run{0: {stopped, 1}, 1: {stopped, 1}}, retried: true, fails: "nothing was handed over"},
		{name: "a computing chunk finished by the stopped worker",
			runs: map[int]run{0: {"host:2", 2}, 1: {stopped, 1}}, computing: []int{1}, retried: true, fails: "was finished by it"},
		{name: "a computing chunk that was not in flight",
			runs: map[int]run{0: {"host:2", 2}}, computing: []int{3}, retried: true, fails: "is one of its tasks in flight"},
		{name: "a recovered chunk finished without a retry",
			runs: map[int]run{0: {"host:2", 1}}, computing: []int{0}, retried: true, fails: "retried"},
		{name: "handed over after a SIGKILL",
			runs: map[int]run{0: {stopped, 1}, 1: {"host:2", 2}}, computing: []int{1}, retried: true},
		{name: "handed over after a SIGTERM",
			runs: map[int]run{0: {"host:2", 1}, 1: {"host:2", 1}}, computing: []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			b, err := db.Store.InsertBatch(ctx, store.NewBatch{ID: "ph-" + randomHex(4), Kind: grid.KindPH, Region: region, ChunkSize: 1,
				StartedAt: now, DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(time.Hour), Trigger: "test",
				Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
			require.NoError(t, err)
			_, err = db.Store.PlanChunks(ctx, b)
			require.NoError(t, err)
			h := Handover{Batch: b.ID, Worker: stopped, Queue: "grid", Computing: tc.computing, Retried: tc.retried}
			for c, r := range tc.runs {
				h.Tasks = append(h.Tasks, batch.ChunkTaskID(b.ID, c))
				_, err := db.Pool.Exec(ctx, `UPDATE chunk_runs SET status = 'succeeded', worker = $3, attempts = $4
					WHERE batch_id = $1 AND chunk = $2`, b.ID, c, r.worker, r.attempts)
				require.NoError(t, err)
			}
			var summary string
			msgs := check(t, func(tb testing.TB) { summary = bs.RequireHandedOver(tb, insp, h) })
			if tc.fails == "" {
				require.Empty(t, msgs)
				require.Contains(t, summary, "finished_elsewhere=")
				return
			}
			require.Len(t, msgs, 1)
			require.Contains(t, msgs[0], tc.fails)
		})
	}
}
