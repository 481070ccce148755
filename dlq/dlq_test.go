package dlq_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/tasks"
)

// fixture is a dead-letter queue on a private Redis database and schema.
type fixture struct {
	r      *testutil.Redis
	db     *testutil.DB
	client *asynq.Client
	insp   *asynq.Inspector
	broker *tasks.Broker
	svc    *batch.Service
	dq     *dlq.Service
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	conn := connect.New(db.Store, r.Client, connect.Options{Chunk: tasks.ChunkOptions{MaxRetry: 3, Timeout: time.Minute}})
	dq, err := conn.DLQ(nil, dlq.Config{})
	require.NoError(t, err)
	return &fixture{r: r, db: db, client: conn.Client, insp: conn.Inspector, broker: conn.Broker, svc: conn.Batch, dq: dq}
}

// runningBatch records a running ph batch of 4 chunks of 100 cells, planned.
func (f *fixture) runningBatch(t *testing.T, id string) store.Batch {
	t.Helper()
	ctx := context.Background()
	l, err := grid.NewLattice(0.05)
	require.NoError(t, err)
	region, err := grid.NewRegion(l, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 125, LatMax: 34}, 0)
	require.NoError(t, err)
	now := time.Now()
	b, err := f.db.Store.InsertBatch(ctx, store.NewBatch{ID: id, Kind: "ph", Region: region, ChunkSize: 100,
		StartedAt: now, DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour), Trigger: "test", Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
	require.NoError(t, err)
	require.Equal(t, 4, b.TotalChunks)
	_, err = f.db.Store.PlanChunks(ctx, b)
	require.NoError(t, err)
	return b
}

func (f *fixture) enqueue(t *testing.T, typ, id string, payload []byte, opts ...asynq.Option) {
	t.Helper()
	_, err := f.client.Enqueue(asynq.NewTask(typ, payload), append([]asynq.Option{asynq.Queue(tasks.QueueGrid), asynq.TaskID(id)}, opts...)...)
	require.NoError(t, err)
}

func (f *fixture) deadLetters(t *testing.T) map[store.DeadLetterKey]store.DeadLetter {
	t.Helper()
	ds, _, err := f.db.Store.ListDeadLetters(context.Background(), store.DeadLetterFilter{}, 100000)
	require.NoError(t, err)
	out := map[store.DeadLetterKey]store.DeadLetter{}
	for _, d := range ds {
		out[d.Key()] = d
	}
	return out
}

func TestSweepRecordsWhatNoHandlerRecorded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	b := f.runningBatch(t, "ph-sweep")
	require.NoError(t, f.broker.EnqueueChunks(ctx, b, []int{0, 1, 2, 3}))
	f.enqueue(t, tasks.TypeChunk, "junk-1", []byte(`{"batch_id": 42`))
	// Archived by hand: no error handler ran for any of these.
	for _, id := range []string{batch.ChunkTaskID(b.ID, 1), batch.ChunkTaskID(b.ID, 2), "junk-1"} {
		require.NoError(t, f.insp.ArchiveTask(tasks.QueueGrid, id))
	}
	// The handler recorded chunk 2 already.
	chunk2 := 2
	_, err := f.db.Store.RecordDeadLetter(ctx, store.DeadLetter{TaskID: batch.ChunkTaskID(b.ID, 2), Type: tasks.TypeChunk,
		Queue: tasks.QueueGrid, BatchID: &b.ID, Chunk: &chunk2, LastError: "by the handler", FailedAt: time.Now()})
	require.NoError(t, err)

	st, err := f.dq.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, dlq.SweepStats{Scanned: 3, Recorded: 2, ChunksFailed: 2}, st)
	ds := f.deadLetters(t)
	require.Len(t, ds, 3)
	c1 := ds[store.DeadLetterKey{TaskID: batch.ChunkTaskID(b.ID, 1)}]
	require.Equal(t, b.ID, *c1.BatchID)
	require.Equal(t, 1, *c1.Chunk)
	require.Contains(t, c1.LastError, "archived with no error")
	require.Equal(t, "by the handler", ds[store.DeadLetterKey{TaskID: batch.ChunkTaskID(b.ID, 2)}].LastError)
	junk := ds[store.DeadLetterKey{TaskID: "junk-1"}]
	require.Nil(t, junk.BatchID)
	require.Equal(t, `{"batch_id": 42`, string(junk.Payload))
	// Both archived chunks are failed in the running batch, through the one path.
	counts, err := f.db.Store.ChunkCounts(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, map[string]int{store.ChunkFailed: 2, store.ChunkPending: 2}, counts)

	// Idempotent: a second sweep (incremental) and a full one record nothing.
	st, err = f.dq.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, dlq.SweepStats{Scanned: 3}, st)
	require.Len(t, f.deadLetters(t), 3)
}

func TestRecoverOrphans(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	rdb := f.r.Client
	key := func(s string) string { return "asynq:{grid}:" + s }
	// makeActive moves a pending task to active the way asynq's dequeue
	// does, but with no lease entry.
	makeActive := func(id string) {
		require.NoError(t, rdb.LRem(ctx, key("pending"), 0, id).Err())
		require.NoError(t, rdb.LPush(ctx, key("active"), id).Err())
		require.NoError(t, rdb.HSet(ctx, key("t:"+id), "state", "active").Err())
	}
	f.enqueue(t, "x", "orphan", []byte("a"), asynq.MaxRetry(3))
	f.enqueue(t, "x", "spent", []byte("b"), asynq.MaxRetry(0))
	f.enqueue(t, "x", "running", []byte("c"))
	makeActive("orphan")
	makeActive("spent")
	makeActive("running")
	require.NoError(t, rdb.ZAdd(ctx, key("lease"), redisZ(time.Now().Add(30*time.Second), "running")).Err())
	// A task whose hash is gone, with a lease that expired an hour ago.
	require.NoError(t, rdb.LPush(ctx, key("active"), "ghost").Err())
	require.NoError(t, rdb.ZAdd(ctx, key("lease"), redisZ(time.Now().Add(-time.Hour), "ghost")).Err())

	st, err := f.dq.RecoverOrphans(ctx)
	require.NoError(t, err)
	require.Equal(t, dlq.OrphanStats{Suspects: 3}, st, "first sighting: nothing moves")
	info, err := f.insp.GetTaskInfo("grid", "orphan")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateActive, info.State)

	st, err = f.dq.RecoverOrphans(ctx)
	require.NoError(t, err)
	require.Equal(t, dlq.OrphanStats{Suspects: 3, Retried: 1, Archived: 1, Cleaned: 1}, st)

	info, err = f.insp.GetTaskInfo("grid", "orphan")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateRetry, info.State)
	require.Equal(t, 1, info.Retried)
	require.Contains(t, info.LastErr, "no lease")
	require.Equal(t, []byte("a"), info.Payload)
	info, err = f.insp.GetTaskInfo("grid", "spent")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Zero(t, info.Retried)
	info, err = f.insp.GetTaskInfo("grid", "running")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateActive, info.State, "a task with a lease is never touched")
	active, err := rdb.LRange(ctx, key("active"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"running"}, active)
	leases, err := rdb.ZRange(ctx, key("lease"), 0, -1).Result()
	require.NoError(t, err)
	require.Equal(t, []string{"running"}, leases)
	q, err := f.insp.GetQueueInfo("grid")
	require.NoError(t, err)
	require.Equal(t, 2, q.ProcessedTotal, "asynq's counters moved as its own retry and archive scripts move them")
	require.Equal(t, 2, q.FailedTotal)

	// The archived one is a dead letter at the next sweep.
	sw, err := f.dq.Sweep(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, sw.Recorded)
	require.Contains(t, f.deadLetters(t)[store.DeadLetterKey{TaskID: "spent"}].LastError, "no lease")
}

func TestRequeueAndPurge(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	b := f.runningBatch(t, "ph-requeue")
	require.NoError(t, f.broker.EnqueueChunks(ctx, b, []int{0, 1, 2, 3}))
	id := batch.ChunkTaskID(b.ID, 1)
	require.NoError(t, f.insp.ArchiveTask(tasks.QueueGrid, id))
	_, err := f.dq.Sweep(ctx)
	require.NoError(t, err)

	t.Run("unknown IDs and no selector change nothing", func(t *testing.T) {
		_, err := f.dq.Requeue(ctx, dlq.Selector{TaskIDs: []string{id, "nope"}}, false)
		var unknown *dlq.UnknownError
		require.ErrorAs(t, err, &unknown)
		require.Equal(t, []string{"nope"}, unknown.TaskIDs)
		_, err = f.dq.Requeue(ctx, dlq.Selector{BatchID: "no-such-batch"}, false)
		require.ErrorAs(t, err, &unknown)
		_, err = f.dq.Requeue(ctx, dlq.Selector{}, false)
		require.ErrorIs(t, err, dlq.ErrNoSelector)
		_, _, err = f.dq.Purge(ctx, dlq.Selector{All: true})
		require.ErrorIs(t, err, dlq.ErrNoSelector, "purge has no --all")
		require.Nil(t, f.deadLetters(t)[store.DeadLetterKey{TaskID: id}].RequeuedAt)
	})

	t.Run("dry run changes nothing", func(t *testing.T) {
		rs, err := f.dq.Requeue(ctx, dlq.Selector{BatchID: b.ID}, true)
		require.NoError(t, err)
		require.Len(t, rs, 1)
		require.NoError(t, rs[0].Err)
		require.True(t, rs[0].Reopened)
		require.Nil(t, f.deadLetters(t)[store.DeadLetterKey{TaskID: id}].RequeuedAt)
		info, err := f.insp.GetTaskInfo(tasks.QueueGrid, id)
		require.NoError(t, err)
		require.Equal(t, asynq.TaskStateArchived, info.State)
	})

	t.Run("requeue reopens the chunk and enqueues generation 1 under the same ID", func(t *testing.T) {
		rs, err := f.dq.Requeue(ctx, dlq.Selector{TaskIDs: []string{id}}, false)
		require.NoError(t, err)
		require.Len(t, rs, 1)
		require.NoError(t, rs[0].Err)
		require.NotNil(t, f.deadLetters(t)[store.DeadLetterKey{TaskID: id}].RequeuedAt)
		info, err := f.insp.GetTaskInfo(tasks.QueueGrid, id)
		require.NoError(t, err)
		require.Equal(t, asynq.TaskStatePending, info.State)
		require.Zero(t, info.Retried)
		require.Equal(t, 3, info.MaxRetry)
		var p tasks.ChunkPayload
		require.NoError(t, json.Unmarshal(info.Payload, &p))
		require.Equal(t, 1, p.Requeue)
		require.Equal(t, 1, p.Chunk)
		counts, err := f.db.Store.ChunkCounts(ctx, b.ID)
		require.NoError(t, err)
		require.Equal(t, map[string]int{store.ChunkPending: 4}, counts)
		cur, err := f.db.Store.GetBatch(ctx, b.ID)
		require.NoError(t, err)
		require.Zero(t, cur.DoneChunks)
		require.Zero(t, cur.FailedChunks)

		again, err := f.dq.Requeue(ctx, dlq.Selector{TaskIDs: []string{id}}, false)
		require.NoError(t, err)
		require.Len(t, again, 1)
		require.ErrorContains(t, again[0].Err, "already requeued")
	})

	t.Run("a second failure is a second dead letter, generation 1", func(t *testing.T) {
		require.NoError(t, f.insp.ArchiveTask(tasks.QueueGrid, id))
		sw, err := f.dq.Sweep(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, sw.Recorded)
		require.Equal(t, 1, sw.ChunksFailed)
		ds := f.deadLetters(t)
		require.Len(t, ds, 2)
		require.Nil(t, ds[store.DeadLetterKey{TaskID: id, Generation: 1}].RequeuedAt)
	})

	t.Run("a dead letter whose task runs again already is left alone", func(t *testing.T) {
		require.NoError(t, f.insp.RunTask(tasks.QueueGrid, id)) // as from asynqmon
		rs, err := f.dq.Requeue(ctx, dlq.Selector{TaskIDs: []string{id}}, false)
		require.NoError(t, err)
		require.Len(t, rs, 1)
		require.ErrorContains(t, rs[0].Err, "is pending in queue grid already")
		require.Nil(t, f.deadLetters(t)[store.DeadLetterKey{TaskID: id, Generation: 1}].RequeuedAt, "rolled back")
		counts, err := f.db.Store.ChunkCounts(ctx, b.ID)
		require.NoError(t, err)
		require.Equal(t, 1, counts[store.ChunkFailed], "rolled back")
		require.NoError(t, f.insp.ArchiveTask(tasks.QueueGrid, id))
	})

	t.Run("purge deletes every generation and the archived copy", func(t *testing.T) {
		n, err := f.dq.Count(ctx, dlq.Selector{TaskIDs: []string{id}})
		require.NoError(t, err)
		require.Equal(t, 2, n)
		deleted, removed, err := f.dq.Purge(ctx, dlq.Selector{TaskIDs: []string{id}})
		require.NoError(t, err)
		require.Len(t, deleted, 2)
		require.Equal(t, 1, removed)
		require.Empty(t, f.deadLetters(t))
		_, err = f.insp.GetTaskInfo(tasks.QueueGrid, id)
		require.ErrorIs(t, err, asynq.ErrTaskNotFound)
		// The other chunks' pending tasks are untouched.
		info, err := f.insp.GetTaskInfo(tasks.QueueGrid, batch.ChunkTaskID(b.ID, 0))
		require.NoError(t, err)
		require.Equal(t, asynq.TaskStatePending, info.State)
	})
}

func redisZ(at time.Time, id string) redis.Z { return redis.Z{Score: float64(at.Unix()), Member: id} }

func TestRequeuedChunkHealsEndedBatch(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	b := f.runningBatch(t, "ph-heal")
	region, err := b.Region()
	require.NoError(t, err)
	_, err = f.db.Store.SeedCells(ctx, region, nil)
	require.NoError(t, err)
	require.NoError(t, f.broker.EnqueueChunks(ctx, b, []int{0, 1, 2, 3}))
	id := batch.ChunkTaskID(b.ID, 1)
	require.NoError(t, f.insp.ArchiveTask(tasks.QueueGrid, id))
	_, err = f.dq.Sweep(ctx)
	require.NoError(t, err)
	chunk := func(i, requeue int) batch.Chunk {
		return batch.Chunk{BatchID: b.ID, TaskID: batch.ChunkTaskID(b.ID, i), Kind: b.Kind, Index: i, Step: b.Step,
			BBox: b.BBox, ChunkSize: b.ChunkSize, Requeue: requeue}
	}
	for _, i := range []int{0, 2, 3} {
		require.NoError(t, f.svc.RunChunk(ctx, chunk(i, 0)))
	}
	partial, err := f.db.Store.GetBatch(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusPartial, partial.Status)
	require.Equal(t, 3.0/4, *partial.SuccessRate)

	rs, err := f.dq.Requeue(ctx, dlq.Selector{BatchID: b.ID}, false)
	require.NoError(t, err)
	require.Len(t, rs, 1)
	require.NoError(t, rs[0].Err)
	require.False(t, rs[0].Reopened, "an ended batch keeps the chunk failed until it succeeds")
	// A task without the requeue mark may not write into the ended batch.
	require.NoError(t, f.svc.RunChunk(ctx, chunk(1, 0)))
	cur, err := f.db.Store.GetBatch(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusPartial, cur.Status)

	time.Sleep(10 * time.Millisecond)
	require.NoError(t, f.svc.RunChunk(ctx, chunk(1, 1)))
	healed, err := f.db.Store.GetBatch(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, store.StatusSucceeded, healed.Status)
	require.Equal(t, 4, healed.CompletedChunks)
	require.Zero(t, healed.FailedChunks)
	require.Equal(t, b.TotalCells, healed.CompletedCells)
	require.Equal(t, 1.0, *healed.SuccessRate)
	require.True(t, healed.EndedAt.After(*partial.EndedAt))
	require.Greater(t, *healed.DurationSeconds, *partial.DurationSeconds)

	// A re-delivery changes nothing more.
	require.NoError(t, f.svc.RunChunk(ctx, chunk(1, 1)))
	again, err := f.db.Store.GetBatch(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, healed.EndedAt, again.EndedAt)
	require.Equal(t, healed.CompletedChunks, again.CompletedChunks)
}
