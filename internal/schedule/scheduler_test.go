package schedule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/alert"
	"github.com/gridbatch/gridbatch/internal/alert/alerttest"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// env is one test's Redis database and schema, seeded with a 16-cell grid,
// and the batch service on them.
type env struct {
	r   *testutil.Redis
	db  *testutil.DB
	svc *batch.Service
	req batch.Request
}

func newEnv(t *testing.T, log *slog.Logger) *env {
	t.Helper()
	ctx := testContext(t)
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	region, err := grid.ParseRegion(0.05, "126,35,126.2,35.2", 0)
	require.NoError(t, err)
	_, err = db.Store.SeedCells(ctx, region, nil)
	require.NoError(t, err)
	svc := connect.New(db.Store, r.Client, connect.Options{Log: log}).Batch
	return &env{r: r, db: db, svc: svc,
		req: batch.Request{Region: region, ChunkSize: 4, Deadline: time.Hour, LockTTL: 2 * time.Hour}}
}

func (e *env) scheduler(t *testing.T, instance string, log *slog.Logger, sender *alert.Sender) *Scheduler {
	t.Helper()
	s, err := New(e.db.Store, e.r.Client, e.svc, log, Config{
		Schedules: []Schedule{mustSchedule(t, "*/5 * * * * *", time.UTC)},
		Request:   e.req, MisfireGrace: time.Minute, LeaderTTL: 2 * time.Second, Instance: instance, Alerts: sender,
	})
	require.NoError(t, err)
	return s
}

// ranBefore records that a scheduler first started for ph at at: the
// schedulers of the test are restarts, not a first start.
func (e *env) ranBefore(t *testing.T, at time.Time) {
	t.Helper()
	first, err := e.db.Store.SchedulerFirstStart(context.Background(), "ph", at)
	require.NoError(t, err)
	require.True(t, first.Equal(at.Truncate(time.Microsecond)), "first start %s, want %s", first, at)
}

func (e *env) batchesForTick(t *testing.T, tick time.Time) int {
	t.Helper()
	var n int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM batch_runs WHERE kind = 'ph' AND scheduled_for = $1`, tick).Scan(&n))
	return n
}

func TestFireIsIdempotentAcrossLeadersAndSkipsWhileRunning(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	log, logs := testLogger()
	e := newEnv(t, log)
	a := e.scheduler(t, "a", log, nil)
	b := e.scheduler(t, "b", log, nil)
	tick := time.Date(2026, 3, 10, 0, 0, 5, 0, time.UTC)
	now := tick.Add(time.Second)

	b.lease.Step(ctx)
	require.ErrorIs(t, a.fire(ctx, a.kinds[0], tick, now), errNotLeader, "only the leader fires")

	require.NoError(t, b.lease.Release(ctx))
	a.lease.Step(ctx)
	require.NoError(t, a.fire(ctx, a.kinds[0], tick, now))
	first, err := e.db.Store.BatchForTick(ctx, "ph", tick)
	require.NoError(t, err)
	require.Equal(t, TriggerName, first.Trigger)
	require.Contains(t, logs.String(), "tick fired")

	// Failover: b leads and sees the tick again. The recorded batch counts as fired.
	require.NoError(t, a.lease.Release(ctx))
	b.lease.Step(ctx)
	require.NoError(t, b.loadCursors(ctx))
	require.True(t, tick.Equal(b.kinds[0].last), "a new leader takes up at the last fired tick")
	require.NoError(t, b.fire(ctx, b.kinds[0], tick, now))
	require.Equal(t, 1, e.batchesForTick(t, tick))
	require.Contains(t, logs.String(), "tick already fired")

	// A racing leader that gets past the look-up is refused by the lock its
	// own tick's batch holds: that counts as fired, not as skipped.
	req := e.req
	req.Kind, req.Trigger, req.ScheduledFor = "ph", TriggerName, &tick
	_, err = e.svc.Trigger(ctx, req)
	var refused *batch.RefusedError
	require.ErrorAs(t, err, &refused)
	require.NoError(t, b.skip(ctx, b.kinds[0], tick, refused))
	ticks, err := e.db.Store.ListTicks(ctx, "ph")
	require.NoError(t, err)
	require.Empty(t, ticks)

	// The next tick while the first batch still runs is skipped, logged and recorded.
	next := tick.Add(5 * time.Second)
	require.NoError(t, b.fire(ctx, b.kinds[0], next, next))
	require.Zero(t, e.batchesForTick(t, next))
	require.Contains(t, logs.String(), "tick skipped: a ph batch is still running: "+first.ID+" (lock expires ")
	ticks, err = e.db.Store.ListTicks(ctx, "ph")
	require.NoError(t, err)
	require.Len(t, ticks, 1)
	require.Equal(t, store.TickSkipped, ticks[0].Outcome)
	require.Equal(t, first.ID, ticks[0].RunningBatchID)
	require.NotNil(t, ticks[0].LockExpiresAt)
	require.True(t, next.Equal(b.kinds[0].last))

	// Once the batch has ended, a second batch for a fired tick hits the
	// unique index, and the lock the losing attempt took is released.
	_, err = e.svc.Cancel(ctx, first.ID)
	require.NoError(t, err)
	_, err = e.svc.Trigger(ctx, req)
	require.True(t, store.IsDuplicateTick(err), "want the unique violation, got %v", err)
	later := next.Add(5 * time.Second)
	require.NoError(t, b.fire(ctx, b.kinds[0], later, later))
	require.Equal(t, 1, e.batchesForTick(t, later), "the lock of the losing attempt was released")
	require.Equal(t, 1, e.batchesForTick(t, tick))
}

func TestCatchUpOnLeadershipRecordsMissedTicks(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	log, logs := testLogger()
	e := newEnv(t, log)
	s := e.scheduler(t, "a", log, nil)
	s.cfg.MisfireGrace = 0
	// A restart: a scheduler first ran before the last fired tick.
	last := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	e.ranBefore(t, last.Add(-time.Hour))
	s.lease.Step(ctx)
	require.NoError(t, s.loadCursors(ctx))
	// Every minute; the last fired tick was 10½ minutes ago: the 10 ticks
	// since are missed, the latest too (30 s late, zero grace), recorded as one row.
	s.kinds[0].sched = mustSchedule(t, "0 * * * * *", time.UTC)
	s.kinds[0].last = last
	s.evaluate(ctx, s.kinds[0], last.Add(10*time.Minute+30*time.Second))
	ticks, err := e.db.Store.ListTicks(ctx, "ph")
	require.NoError(t, err)
	require.Len(t, ticks, 1)
	require.Equal(t, store.TickMissed, ticks[0].Outcome)
	require.Equal(t, 10, ticks[0].MissedTicks)
	require.True(t, last.Add(10*time.Minute).Equal(ticks[0].ScheduledFor))
	require.True(t, last.Add(time.Minute).Equal(*ticks[0].FirstMissed))
	require.Contains(t, logs.String(), "tick missed")
	var n int
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT count(*) FROM batch_runs`).Scan(&n))
	require.Zero(t, n)
	// A new leader reads the missed row as handled: nothing is re-reported.
	require.NoError(t, s.loadCursors(ctx))
	require.True(t, s.kinds[0].last.Equal(ticks[0].ScheduledFor))
}

func TestAlertsAreSentOnceAndGivenBackOnShutdown(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	log, _ := testLogger()
	e := newEnv(t, log)
	// A scheduler ran before these batches ended.
	e.ranBefore(t, time.Now().Add(-time.Hour))

	// A partial batch of a tick, a succeeded one, and a skipped tick.
	tick := time.Date(2026, 3, 10, 0, 0, 5, 0, time.UTC)
	req := e.req
	req.Kind, req.Trigger, req.ScheduledFor = "ph", TriggerName, &tick
	partial, err := e.svc.Trigger(ctx, req)
	require.NoError(t, err)
	_, _, _, err = e.db.Store.FinishBatch(ctx, partial.ID, store.Final{Status: store.StatusPartial, PendingChunkStatus: store.ChunkCancelled, Error: "2 chunks dead-lettered"}, batch.Gate{}.Decide(batch.AtEnd))
	require.NoError(t, err)
	req.Kind, req.ScheduledFor = "hazard", nil
	ok, err := e.svc.Trigger(ctx, req)
	require.NoError(t, err)
	_, _, _, err = e.db.Store.FinishBatch(ctx, ok.ID, store.Final{Status: store.StatusSucceeded, PendingChunkStatus: store.ChunkCancelled}, batch.Gate{}.Decide(batch.AtEnd))
	require.NoError(t, err)
	skippedAt := tick.Add(5 * time.Second)
	_, err = e.db.Store.RecordTick(ctx, store.Tick{Kind: "ph", ScheduledFor: skippedAt, Outcome: store.TickSkipped,
		Detail: "ph tick skipped: a ph batch is still running: x (lock expires unknown)", RunningBatchID: "x"})
	require.NoError(t, err)

	// A hanging webhook: shutdown gives the claimed alerts back.
	hang := alerttest.NewHanging(t)
	slow, err := alert.New(alert.Config{URL: hang.URL, Timeout: 10 * time.Second})
	require.NoError(t, err)
	s1 := e.scheduler(t, "a", log, slow)
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	s1.dispatch(dctx)
	cancel()
	require.Less(t, time.Since(start), 3*time.Second, "shutdown does not wait for the webhook")

	hook := alerttest.NewRecorder(t)
	sender, err := alert.New(alert.Config{URL: hook.URL})
	require.NoError(t, err)
	s2 := e.scheduler(t, "b", log, sender)
	s2.dispatch(ctx)
	s2.dispatch(ctx)
	got := hook.Received()
	require.Len(t, got, 2, "one alert each for the partial batch and the skipped tick: %+v", got)
	byEvent := map[string]alert.Message{}
	for _, m := range got {
		byEvent[m.Event] = m
	}
	b := byEvent[alert.EventBatchEnded]
	require.Equal(t, partial.ID, b.BatchID)
	require.Equal(t, store.StatusPartial, b.Status)
	require.NotNil(t, b.ScheduledFor)
	require.True(t, tick.Equal(*b.ScheduledFor))
	require.Contains(t, b.Text, partial.ID)
	require.Contains(t, b.Text, "ended partial")
	sk := byEvent[alert.EventTickSkipped]
	require.Equal(t, "skipped", sk.Status)
	require.Equal(t, "x", sk.BatchID)
	require.True(t, skippedAt.Equal(*sk.ScheduledFor))
	require.Contains(t, sk.Text, "tick skipped")
}

// TestFirstStartCatchesUpNothingFromBefore starts a scheduler on a database
// where none ran: a tick just before its start, within the grace, does not
// fire and is not recorded missed, and a batch that ended before its start
// is not alerted. A restart still catches up a tick missed after the first
// start, and alerts a batch that ended after it.
func TestFirstStartCatchesUpNothingFromBefore(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	log, logs := testLogger()
	e := newEnv(t, log)
	req := e.req
	req.Kind = "hazard"
	// A cancelled batch is alerted like a partial one; cancelling releases the kind's lock.
	endCancelled := func() store.Batch {
		b, err := e.svc.Trigger(ctx, req)
		require.NoError(t, err)
		_, err = e.svc.Cancel(ctx, b.ID)
		require.NoError(t, err)
		return b
	}
	before := endCancelled()
	time.Sleep(10 * time.Millisecond) // the database's clock and the scheduler's are the same host's

	s := e.scheduler(t, "a", log, nil)
	// Once a minute, 10 s before the start: 11 s late at the first look, well within the grace of 1m.
	tick := s.startedAt.Add(-10 * time.Second).Truncate(time.Second)
	s.kinds[0].sched = mustSchedule(t, fmt.Sprintf("%d * * * * *", tick.Second()), time.UTC)
	s.lease.Step(ctx)
	require.NoError(t, s.loadCursors(ctx))
	require.True(t, s.kinds[0].since.Equal(s.startedAt), "the first start is recorded")
	require.Contains(t, logs.String(), "first start for this kind")
	s.evaluate(ctx, s.kinds[0], s.startedAt.Add(time.Second))
	require.Zero(t, e.batchesForTick(t, tick), "a tick before the first start does not fire")
	ticks, err := e.db.Store.ListTicks(ctx, "ph")
	require.NoError(t, err)
	require.Empty(t, ticks, "nor is it recorded missed")

	after := endCancelled()
	hook := alerttest.NewRecorder(t)
	sender, err := alert.New(alert.Config{URL: hook.URL})
	require.NoError(t, err)
	s.cfg.Alerts = sender
	s.dispatch(ctx)
	got := hook.Received()
	require.Len(t, got, 1, "only the batch that ended after the first start is alerted: %+v", got)
	require.Equal(t, after.ID, got[0].BatchID)
	require.NotEqual(t, before.ID, got[0].BatchID)

	// A restart keeps the first start, and catches up the next tick, missed while down, within the grace.
	r := e.scheduler(t, "b", log, nil)
	r.kinds[0].sched = s.kinds[0].sched
	require.NoError(t, s.lease.Release(ctx))
	r.lease.Step(ctx)
	require.NoError(t, r.loadCursors(ctx))
	require.True(t, r.kinds[0].since.Equal(s.startedAt), "the restart keeps the first start")
	next := tick.Add(time.Minute)
	r.evaluate(ctx, r.kinds[0], next.Add(30*time.Second))
	require.Equal(t, 1, e.batchesForTick(t, next), "the restart catches up the tick it missed")
	require.Zero(t, e.batchesForTick(t, tick))
}

func TestNewRefusesAnEmptyConfig(t *testing.T) {
	t.Parallel()
	_, err := New(nil, nil, nil, slog.Default(), Config{Instance: "a"})
	require.True(t, err != nil && !errors.Is(err, context.Canceled))
	_, err = New(nil, nil, nil, slog.Default(), Config{Schedules: []Schedule{mustSchedule(t, "@daily", time.UTC)}})
	require.ErrorContains(t, err, "instance")
}

// TestHealthReportsStalledLoops runs a scheduler and checks its liveness:
// healthy while both loops turn, and each loop reported once its heartbeat
// is older than its bound.
func TestHealthReportsStalledLoops(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := newEnv(t, log)
	s := e.scheduler(t, "health-a", log, nil)
	ctx, cancel := context.WithCancel(testContext(t))
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	loop0, lease0 := s.loopAt.Load(), s.lease.SteppedAt()
	testutil.Eventually(t, 15*time.Second, "both loops to beat", func() bool {
		return s.loopAt.Load() > loop0 && s.lease.SteppedAt().After(lease0)
	})
	// Past the lease's bound (3 TTLs = 6 s) in real time: still healthy,
	// because the lease loop keeps beating.
	time.Sleep(7 * time.Second)
	require.Empty(t, s.Health(time.Now()))

	now := time.Now()
	// One kind, TriggerTimeout 30 s: the tick loop's bound is 30 s + 30 s + 1 m.
	problems := s.Health(now.Add(10 * time.Second))
	require.Len(t, problems, 1)
	require.Contains(t, problems[0], "leader lease loop stalled")
	problems = s.Health(now.Add(3 * time.Minute))
	require.Len(t, problems, 2)
	require.Contains(t, problems[0], "tick loop stalled")
	require.Contains(t, problems[0], "bound 2m0s")
}

// stuckTriggerer never returns from Trigger until released, whatever its
// context says: a wait without a bound inside the tick loop.
type stuckTriggerer struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *stuckTriggerer) Trigger(ctx context.Context, r batch.Request) (store.Batch, error) {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return store.Batch{}, errors.New("released")
}

// TestStalledLeaderHandsOver: the leader's tick loop hangs in a trigger that
// ignores its context. After StallAfter it gives the lease up, so the
// standby leads and fires the next ticks, and its /healthz check names the
// stalled loop, while the lease loop itself stays healthy.
func TestStalledLeaderHandsOver(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := newEnv(t, log)
	stuck := &stuckTriggerer{entered: make(chan struct{}), release: make(chan struct{})}
	aDone := make(chan struct{})
	// Registered first, so it runs last: a's tick loop stays stuck until
	// released, after ctx is cancelled below.
	t.Cleanup(func() { close(stuck.release); <-aDone })
	cfg := Config{
		Schedules: []Schedule{mustSchedule(t, "* * * * * *", time.UTC)},
		Request:   e.req, MisfireGrace: time.Minute, LeaderTTL: 2 * time.Second, Instance: "stuck",
		StallAfter: 3 * time.Second,
	}
	a, err := New(e.db.Store, e.r.Client, stuck, log, cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(testContext(t))
	go func() { defer close(aDone); _ = a.Run(ctx) }()
	select {
	case <-stuck.entered:
	case <-time.After(15 * time.Second):
		t.Fatal("the leader never triggered")
	}
	require.True(t, a.Lease().Held(), "the stuck replica led when it triggered")

	b := e.scheduler(t, "standby", log, nil)
	bDone := make(chan struct{})
	go func() { defer close(bDone); _ = b.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-bDone })

	stalledAt := time.Now()
	testutil.Eventually(t, 20*time.Second, "the standby to lead", func() bool { return b.Lease().Held() })
	took := time.Since(stalledAt)
	require.False(t, a.Lease().Held(), "one leader at a time")
	// StallAfter (3 s) from the stuck trigger's start, then one lease
	// attempt (every TTL/3) to give it up and one for the standby to take it.
	require.Less(t, took, 3*time.Second+2*time.Second, "handover took %s", took)

	var fired int
	testutil.Eventually(t, 15*time.Second, "the standby to fire a batch", func() bool {
		require.NoError(t, e.db.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM batch_runs WHERE kind = 'ph' AND trigger = $1`, TriggerName).Scan(&fired))
		return fired > 0
	})
	problems := a.Health(time.Now())
	require.Len(t, problems, 1, "%v", problems)
	require.Contains(t, problems[0], "tick loop stalled")
	require.Empty(t, b.Health(time.Now()))
}
