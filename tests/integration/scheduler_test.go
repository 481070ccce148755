//go:build integration

package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/alert"
	"github.com/gridbatch/gridbatch/internal/alert/alerttest"
	"github.com/gridbatch/gridbatch/internal/schedule"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// The scheduler tests run batches over a 400-cell corner of the Korea grid
// (4 chunks of 100), so a batch ends well within a 5 s tick.
const (
	schedBBox  = "126,35,127,36"
	every5s    = "*/5 * * * * *"
	schedTicks = 5 * time.Second
)

// schedCluster is a cluster seeded with the scheduler tests' grid, with
// every binary built, so processes start at once.
// shortGrace keeps a scheduler from catching up a tick more than 2 s old.
const shortGrace = "GRIDBATCH_MISFIRE_GRACE=2s"

func schedCluster(t *testing.T) *cluster {
	t.Helper()
	testutil.Binaries(t)
	c := newCluster(t)
	_, errOut, code := c.Enqueuer("seed", "--bbox", schedBBox, "--step", "0.05")
	require.Equal(t, 0, code, errOut)
	return c
}

// schedEnv is a scheduler's environment: spec for ph, a 2 s leader lease,
// the small grid, plus extra.
func schedEnv(spec string, extra ...string) []string {
	return append([]string{
		"GRIDBATCH_SCHEDULES=ph=" + spec,
		"GRIDBATCH_LEADER_TTL=2s",
		"GRIDBATCH_GRID_BBOX=" + schedBBox,
		"GRIDBATCH_CHUNK_SIZE=100",
	}, extra...)
}

func (c *cluster) scheduler(spec string, extra ...string) *testutil.Proc {
	c.T.Helper()
	return c.Start("scheduler", schedEnv(spec, extra...))
}

// logOf returns what the process has logged so far.
func logOf(t *testing.T, p *testutil.Proc) string {
	t.Helper()
	b, err := os.ReadFile(p.Log)
	require.NoError(t, err)
	return string(b)
}

func waitLog(t *testing.T, p *testutil.Proc, want string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%s to log %q", p.Name, want), func() bool { return strings.Contains(logOf(t, p), want) })
}

// scheduled returns the batches the scheduler started, by tick.
func (c *cluster) scheduled() []store.Batch {
	c.T.Helper()
	all, err := c.DB.Store.ListBatches(context.Background(), "", "", 1000)
	require.NoError(c.T, err)
	var out []store.Batch
	for _, b := range all {
		if b.Trigger == schedule.TriggerName {
			require.NotNil(c.T, b.ScheduledFor, "batch %s", b.ID)
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b store.Batch) int { return a.ScheduledFor.Compare(*b.ScheduledFor) })
	return out
}

func (c *cluster) waitScheduled(n int, timeout time.Duration) []store.Batch {
	c.T.Helper()
	var got []store.Batch
	waitFor(c.T, timeout, fmt.Sprintf("%d scheduled batches", n), func() bool {
		got = c.scheduled()
		return len(got) >= n
	})
	return got
}

// ranBefore records that a scheduler first ran for ph at at: the schedulers
// the test starts are restarts, which catch up a tick missed since.
func (c *cluster) ranBefore(at time.Time) {
	c.T.Helper()
	_, err := c.DB.Store.SchedulerFirstStart(context.Background(), "ph", at)
	require.NoError(c.T, err)
}

func (c *cluster) ticks() []store.Tick {
	c.T.Helper()
	ticks, err := c.DB.Store.ListTicks(context.Background(), "")
	require.NoError(c.T, err)
	return ticks
}

func mustSchedule(t *testing.T, spec string) schedule.Schedule {
	t.Helper()
	s, err := schedule.NewSchedule("ph", spec, time.UTC)
	require.NoError(t, err)
	return s
}

// requireOneBatchPerTick checks that every tick of s from the first batch to
// the last has exactly one batch, or none and a recorded skip or miss
// (skipped: the previous batch still ran): never two, never a silent gap.
func requireOneBatchPerTick(t *testing.T, s schedule.Schedule, batches []store.Batch, recorded []store.Tick) {
	t.Helper()
	if len(batches) == 0 {
		return
	}
	fired := map[time.Time]int{}
	for _, b := range batches {
		fired[b.ScheduledFor.UTC()]++
	}
	noted := map[time.Time]bool{}
	for _, tk := range recorded {
		noted[tk.ScheduledFor.UTC()] = true
	}
	last := batches[len(batches)-1].ScheduledFor.UTC()
	for tick := batches[0].ScheduledFor.UTC(); !tick.After(last); tick = s.Next(tick).UTC() {
		switch n := fired[tick]; {
		case n > 1:
			t.Fatalf("tick %s fired %d times", tick, n)
		case n == 1 && noted[tick]:
			t.Fatalf("tick %s both fired and recorded as skipped/missed", tick)
		case n == 0 && !noted[tick]:
			t.Fatalf("tick %s neither fired nor recorded as skipped or missed: a silent gap", tick)
		}
	}
}

func TestSchedulerTwoReplicasFireEachTickOnce(t *testing.T) {
	t.Parallel()
	c := schedCluster(t)
	c.Worker()
	// A short misfire grace: a tick caught up late (a first start catches up
	// none from before it) cannot still be running at the next tick (which
	// would then be skipped, correctly).
	a := c.scheduler(every5s, shortGrace)
	b := c.scheduler(every5s, shortGrace)
	c.waitScheduled(5, 5*schedTicks+20*time.Second)
	a.Signal(syscall.SIGTERM)
	b.Signal(syscall.SIGTERM)
	require.Equal(t, 0, a.Wait(t, 15*time.Second), "SIGTERM exits 0")
	require.Equal(t, 0, b.Wait(t, 15*time.Second), "SIGTERM exits 0")

	batches := c.scheduled()
	require.GreaterOrEqual(t, len(batches), 5)
	requireOneBatchPerTick(t, mustSchedule(t, every5s), batches, c.ticks())
	require.Empty(t, c.ticks(), "no tick skipped or missed")
	for _, bt := range batches {
		require.Equal(t, store.StatusSucceeded, c.WaitEnded(bt.ID, time.Minute).Status)
	}
	leaders := 0
	for _, p := range []*testutil.Proc{a, b} {
		if strings.Contains(logOf(t, p), "leading: this scheduler fires the ticks") {
			leaders++
		}
	}
	require.GreaterOrEqual(t, leaders, 1)
	n, err := c.Redis.Client.Exists(context.Background(), schedule.DefaultLeaderKey).Result()
	require.NoError(t, err)
	require.Zero(t, n, "the lease is released on SIGTERM")
}

func TestSchedulerLeaderKilledNextTickFiresOnce(t *testing.T) {
	t.Parallel()
	c := schedCluster(t)
	c.Worker()
	s := mustSchedule(t, every5s)
	a := c.scheduler(every5s, shortGrace)
	waitLog(t, a, "leading: this scheduler fires the ticks", 10*time.Second)
	b := c.scheduler(every5s, shortGrace)
	waitLog(t, b, "standing by: another scheduler leads", 10*time.Second)

	first := c.waitScheduled(1, 2*schedTicks)[0]
	// Kill the leader a second before the next tick: the standby must take
	// over and fire it, once.
	next := s.Next(*first.ScheduledFor)
	if time.Until(next) < 1500*time.Millisecond {
		next = s.Next(next)
	}
	time.Sleep(time.Until(next.Add(-time.Second)))
	a.Signal(syscall.SIGKILL)
	a.Wait(t, 5*time.Second)
	var batches []store.Batch
	waitFor(t, 3*schedTicks, "the batches of the two ticks after the kill", func() bool {
		batches = c.scheduled()
		return len(batches) > 0 && !batches[len(batches)-1].ScheduledFor.Before(s.Next(next))
	})
	requireOneBatchPerTick(t, s, batches, c.ticks())
	var firedNext int
	for _, bt := range batches {
		if bt.ScheduledFor.Equal(next) {
			firedNext++
		}
	}
	require.Equal(t, 1, firedNext, "the tick at the kill fired exactly once")
	require.Contains(t, logOf(t, b), "leading: this scheduler fires the ticks")
	require.Empty(t, c.ticks(), "no tick skipped or missed")
}

func TestSchedulerMissedTickOnStart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		grace string
		fires bool
	}{
		{"within the grace fires once", "1m", true},
		{"beyond the grace is logged missed", "10s", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := schedCluster(t)
			hook := alerttest.NewRecorder(t)
			// A spec that ticked once a minute, last 30 s ago: the scheduler, which
			// first ran a second before that tick, was "down" at it.
			tick := time.Now().Add(-30 * time.Second).Truncate(time.Second)
			c.ranBefore(tick.Add(-time.Second))
			spec := fmt.Sprintf("%d * * * * *", tick.Second())
			env := []string{"GRIDBATCH_MISFIRE_GRACE=" + tc.grace, "GRIDBATCH_ALERT_WEBHOOK_URL=" + hook.URL}
			a := c.scheduler(spec, env...)
			if tc.fires {
				got := c.waitScheduled(1, 10*time.Second)
				require.True(t, tick.Equal(*got[0].ScheduledFor), "fired the missed tick %s, not %s", tick, got[0].ScheduledFor)
				waitLog(t, a, "missed tick fired late, within the misfire grace", 5*time.Second)
				// A restarted scheduler finds the tick fired and fires nothing more.
				a.Signal(syscall.SIGTERM)
				require.Equal(t, 0, a.Wait(t, 10*time.Second))
				b := c.scheduler(spec, env...)
				waitLog(t, b, "leading: this scheduler fires the ticks", 10*time.Second)
				time.Sleep(time.Second)
				require.Len(t, c.scheduled(), 1)
				require.Empty(t, c.ticks())
				return
			}
			waitLog(t, a, "tick missed", 10*time.Second)
			line := ""
			for l := range strings.SplitSeq(logOf(t, a), "\n") {
				if strings.Contains(l, "tick missed") {
					line = l
				}
			}
			require.Contains(t, line, "kind=ph")
			require.Contains(t, line, "scheduled_for="+tick.UTC().Format("2006-01-02T15:04:05.000Z"))
			require.Contains(t, line, "late=3") // about 30 s
			waitFor(t, 10*time.Second, "the missed-tick alert", func() bool { return len(hook.Received(alert.EventTickMissed)) > 0 })
			m := hook.Received(alert.EventTickMissed)[0]
			require.Equal(t, "ph", m.Kind)
			require.Equal(t, store.TickMissed, m.Status)
			require.True(t, tick.Equal(*m.ScheduledFor))
			require.Contains(t, m.Text, "missed")
			ticks := c.ticks()
			require.Len(t, ticks, 1)
			require.Equal(t, store.TickMissed, ticks[0].Outcome)
			time.Sleep(time.Second)
			require.Empty(t, c.scheduled(), "a tick beyond the grace does not fire")
		})
	}
}

// TestSchedulerFirstStartCatchesUpNothing starts the very first scheduler of
// a database: a tick 5 s before it, well within the grace, neither fires nor
// is recorded missed, and a partial batch that ended before it is not alerted.
func TestSchedulerFirstStartCatchesUpNothing(t *testing.T) {
	t.Parallel()
	c := schedCluster(t)
	breakChunkZero(t, c)
	hook := alerttest.NewRecorder(t)
	w := c.Worker("GRIDBATCH_MAX_RETRY=0")
	out, errOut, _ := c.Enqueuer("run", "--kind", "ph", "--bbox", schedBBox, "--step", "0.05", "--chunk-size", "100", "--wait")
	w.Signal(syscall.SIGTERM)
	w.Wait(t, 30*time.Second)
	all, err := c.DB.Store.ListBatches(context.Background(), "", "", 10)
	require.NoError(t, err)
	require.Len(t, all, 1, "%s %s", out, errOut)
	require.Equal(t, store.StatusPartial, all[0].Status)

	tick := time.Now().Add(-5 * time.Second).Truncate(time.Second)
	spec := fmt.Sprintf("%d * * * * *", tick.Second())
	a := c.scheduler(spec, "GRIDBATCH_MISFIRE_GRACE=1m", "GRIDBATCH_ALERT_WEBHOOK_URL="+hook.URL)
	waitLog(t, a, "first start for this kind", 10*time.Second)
	time.Sleep(5 * time.Second) // two alert polls of the leader
	require.Empty(t, c.scheduled(), "a tick before the first start does not fire")
	require.Empty(t, c.ticks(), "nor is it recorded missed")
	require.Empty(t, hook.Received(), "a batch that ended before the first start is not alerted")
	require.NotContains(t, logOf(t, a), "tick missed")
}

func TestSchedulerSkipsATickWhileABatchRuns(t *testing.T) {
	t.Parallel()
	c := schedCluster(t)
	s := mustSchedule(t, every5s)
	// No worker yet: the first batch keeps running across the next tick.
	a := c.scheduler(every5s)
	first := c.waitScheduled(1, 2*schedTicks)[0]
	waitLog(t, a, "tick skipped: a ph batch is still running: "+first.ID+" (lock expires ", 2*schedTicks)
	ticks := c.ticks()
	require.NotEmpty(t, ticks)
	require.Equal(t, store.TickSkipped, ticks[0].Outcome)
	require.Equal(t, first.ID, ticks[0].RunningBatchID)
	require.True(t, s.Next(*first.ScheduledFor).Equal(ticks[0].ScheduledFor), "the very next tick is skipped")

	c.Worker()
	ended := c.WaitEnded(first.ID, time.Minute)
	require.Equal(t, store.StatusSucceeded, ended.Status)
	var second store.Batch
	waitFor(t, 3*schedTicks, "a batch after the first ended", func() bool {
		got := c.scheduled()
		if len(got) < 2 {
			return false
		}
		second = got[1]
		return true
	})
	// The first tick after the end fired; every tick in between was skipped, none silently.
	require.True(t, second.ScheduledFor.After(*ended.EndedAt), "fired for %s, the first batch ended at %s", second.ScheduledFor, ended.EndedAt)
	require.True(t, s.Latest(*ended.EndedAt).Before(*second.ScheduledFor))
	require.True(t, s.Next(*ended.EndedAt).Equal(*second.ScheduledFor), "the first tick after the end fires")
	skipped := c.ticks()
	for tk := s.Next(*first.ScheduledFor); tk.Before(*second.ScheduledFor); tk = s.Next(tk) {
		require.True(t, slices.ContainsFunc(skipped, func(x store.Tick) bool {
			return x.ScheduledFor.Equal(tk) && x.Outcome == store.TickSkipped
		}), "tick %s was neither fired nor recorded skipped", tk)
	}
	require.Equal(t, store.StatusSucceeded, c.WaitEnded(second.ID, time.Minute).Status)
}

// breakChunkZero deletes the inputs of 50 cells of the scheduler grid's
// first chunk, so that chunk is dead-lettered (missing input) and each
// batch ends partial.
func breakChunkZero(t *testing.T, c *cluster) {
	t.Helper()
	tag, err := c.DB.Pool.Exec(context.Background(), `DELETE FROM cell_params WHERE (step, grid_id) IN
		(SELECT step, grid_id FROM cell_params ORDER BY grid_id LIMIT 50)`)
	require.NoError(t, err)
	require.EqualValues(t, 50, tag.RowsAffected())
}

func TestSchedulerAlertsOnceForAPartialBatch(t *testing.T) {
	t.Parallel()
	c := schedCluster(t)
	breakChunkZero(t, c)
	hook := alerttest.NewRecorder(t)
	c.Worker("GRIDBATCH_MAX_RETRY=0")
	// Ticks once a minute, last 2 s ago: one batch, caught up at the restart
	// of a scheduler that first ran a second before that tick.
	tick := time.Now().Add(-2 * time.Second).Truncate(time.Second)
	c.ranBefore(tick.Add(-time.Second))
	spec := fmt.Sprintf("%d * * * * *", tick.Second())
	env := []string{"GRIDBATCH_ALERT_WEBHOOK_URL=" + hook.URL}
	a := c.scheduler(spec, env...)
	waitLog(t, a, "leading: this scheduler fires the ticks", 10*time.Second)
	b := c.scheduler(spec, env...)
	bt := c.waitScheduled(1, 10*time.Second)[0]
	require.Equal(t, store.StatusPartial, c.WaitEnded(bt.ID, time.Minute).Status)
	waitFor(t, 15*time.Second, "the alert of the partial batch", func() bool { return len(hook.Received(alert.EventBatchEnded)) > 0 })

	// The leader dies; the standby takes over the alert duty and sends nothing twice.
	a.Signal(syscall.SIGKILL)
	waitLog(t, b, "leading: this scheduler fires the ticks", 10*time.Second)
	time.Sleep(5 * time.Second) // two alert polls of the new leader
	got := hook.Received(alert.EventBatchEnded)
	require.Len(t, got, 1, "exactly one alert: %+v", got)
	m := got[0]
	require.Equal(t, bt.ID, m.BatchID)
	require.Equal(t, "ph", m.Kind)
	require.Equal(t, store.StatusPartial, m.Status)
	require.True(t, tick.Equal(*m.ScheduledFor))
	require.Positive(t, m.FailedChunks)
	require.Contains(t, m.Text, bt.ID)
	require.Contains(t, m.Text, "ended partial")
	require.Len(t, c.scheduled(), 1)
}

func TestSchedulerTicksOnTimeWhileTheWebhookHangs(t *testing.T) {
	t.Parallel()
	c := schedCluster(t)
	breakChunkZero(t, c)
	hang := alerttest.NewHanging(t)
	c.Worker("GRIDBATCH_MAX_RETRY=0")
	s := mustSchedule(t, every5s)
	c.scheduler(every5s, "GRIDBATCH_ALERT_WEBHOOK_URL="+hang.URL, "GRIDBATCH_ALERT_TIMEOUT=1m")

	// Every batch ends partial, so alerts pile up on the hanging webhook
	// while the ticks go on.
	first := c.waitScheduled(1, 2*schedTicks)[0]
	c.WaitEnded(first.ID, 30*time.Second)
	waitFor(t, 10*time.Second, "an alert to hang", func() bool { return hang.Calls() > 0 })
	hungAt := time.Now()
	waitFor(t, 4*schedTicks, "three more ticks", func() bool {
		got := c.scheduled()
		n := 0
		for _, b := range got {
			if b.ScheduledFor.After(hungAt) {
				n++
			}
		}
		tn := 0
		for _, tk := range c.ticks() {
			if tk.ScheduledFor.After(hungAt) {
				tn++
			}
		}
		return n+tn >= 3
	})
	batches, ticks := c.scheduled(), c.ticks()
	for _, b := range batches { // a first start catches up no tick from before it: every batch is on time
		late := b.StartedAt.Sub(*b.ScheduledFor)
		require.Less(t, late, 1500*time.Millisecond, "batch %s started %s after its tick", b.ID, late)
	}
	for _, tk := range ticks {
		require.Equal(t, store.TickSkipped, tk.Outcome, "no tick missed")
		late := tk.RecordedAt.Sub(tk.ScheduledFor)
		require.Less(t, late, 3*time.Second, "tick %s recorded %s late", tk.ScheduledFor, late)
	}
	// Every tick since the first fired once or was skipped (a batch outlived its tick).
	for tk := *batches[0].ScheduledFor; !tk.After(*batches[len(batches)-1].ScheduledFor); tk = s.Next(tk) {
		n := 0
		for _, b := range batches {
			if b.ScheduledFor.Equal(tk) {
				n++
			}
		}
		if n == 0 {
			require.True(t, slices.ContainsFunc(ticks, func(x store.Tick) bool { return x.ScheduledFor.Equal(tk) }),
				"tick %s neither fired nor recorded", tk)
		}
		require.LessOrEqual(t, n, 1, "tick %s fired twice", tk)
	}
}
