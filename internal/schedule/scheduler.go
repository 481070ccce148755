package schedule

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/alert"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/lease"
	"github.com/gridbatch/gridbatch/internal/store"
)

// TriggerName is batch_runs.trigger of the batches the scheduler starts.
const TriggerName = "scheduler"

// DefaultLeaderKey is the Redis key of the leader lease.
const DefaultLeaderKey = "gridbatch:scheduler:leader"

// Triggerer starts a batch; *batch.Service implements it. It returns a
// *batch.RefusedError when a batch of the kind holds the kind's lock.
type Triggerer interface {
	Trigger(ctx context.Context, r batch.Request) (store.Batch, error)
}

// Config configures a Scheduler. Zero fields take the documented defaults.
type Config struct {
	// Schedules are the cron triggers, one per kind. Required.
	Schedules []Schedule
	// Request is the batch every tick starts (region, chunk size, deadline,
	// lock TTL); Kind, Trigger and ScheduledFor are set per tick.
	Request batch.Request
	// MisfireGrace is how late a tick may still fire, e.g. after the
	// scheduler was down at it. Zero fires only ticks noticed on time
	// (within OnTime).
	MisfireGrace time.Duration
	// LeaderTTL is the TTL of the leader lease. Defaults to 10s.
	LeaderTTL time.Duration
	// LeaderKey is the Redis key of the lease. Defaults to DefaultLeaderKey.
	LeaderKey string
	// Instance names this replica in the lease and the logs. Required.
	Instance string
	// TriggerTimeout bounds one trigger. Defaults to 30s.
	TriggerTimeout time.Duration
	// RetryBackoff is the wait before retrying a tick whose trigger failed;
	// it doubles up to 1m, for as long as the tick is within the grace.
	// Defaults to 2s.
	RetryBackoff time.Duration
	// AlertPoll is how often the leader looks for alerts to send. Defaults to 2s.
	AlertPoll time.Duration
	// StallAfter is how long the tick loop may go without beginning an
	// iteration before the scheduler counts as stalled: it gives its lease
	// up and /healthz fails. Defaults to the loop's longest sleep (30s) plus
	// TriggerTimeout per kind plus 1m.
	StallAfter time.Duration
	// Alerts posts the alerts; nil only logs them.
	Alerts *alert.Sender
}

// Scheduler fires the ticks of its schedules while it holds the lease.
type Scheduler struct {
	cfg   Config
	st    *store.Store
	trig  Triggerer
	lease *lease.Lease
	log   *slog.Logger
	kinds []*kindState
	// startedAt is when this scheduler started (to the microsecond, as
	// stored): its kinds' first start when no scheduler ever ran for them.
	startedAt time.Time
	// loopAt is when the tick loop last began an iteration (unix ns).
	loopAt atomic.Int64
}

// kindState is the leader's view of one schedule.
type kindState struct {
	sched Schedule
	// last is the newest tick handled: fired, skipped or missed.
	last time.Time
	// since is when a scheduler first started for the kind: ticks up to
	// then are never caught up.
	since time.Time
	// retryAt is when a tick whose trigger failed is tried again.
	retryAt  time.Time
	failures int
}

// New returns a Scheduler over the store and Redis.
func New(st *store.Store, rdb redis.UniversalClient, trig Triggerer, log *slog.Logger, cfg Config) (*Scheduler, error) {
	if len(cfg.Schedules) == 0 {
		return nil, errors.New("schedule: no schedules")
	}
	if cfg.Instance == "" {
		return nil, errors.New("schedule: empty instance name")
	}
	cfg.LeaderTTL = cmp.Or(cfg.LeaderTTL, 10*time.Second)
	cfg.LeaderKey = cmp.Or(cfg.LeaderKey, DefaultLeaderKey)
	cfg.TriggerTimeout = cmp.Or(cfg.TriggerTimeout, 30*time.Second)
	cfg.RetryBackoff = cmp.Or(cfg.RetryBackoff, 2*time.Second)
	cfg.AlertPoll = cmp.Or(cfg.AlertPoll, 2*time.Second)
	s := &Scheduler{cfg: cfg, st: st, trig: trig, log: log, startedAt: time.Now().Truncate(time.Microsecond),
		lease: lease.New(rdb, cfg.LeaderKey, cfg.Instance, cfg.LeaderTTL, log, lease.Messages{
			Leading:    "leading: this scheduler fires the ticks",
			StandingBy: "standing by: another scheduler leads",
		})}
	for _, sc := range cfg.Schedules {
		s.kinds = append(s.kinds, &kindState{sched: sc})
	}
	if s.cfg.StallAfter <= 0 {
		s.cfg.StallAfter = tickLoopWake + time.Duration(len(s.kinds))*cfg.TriggerTimeout + time.Minute
	}
	s.loopAt.Store(time.Now().UnixNano())
	s.lease.SetGate(func() error { return s.tickLoopStalled(time.Now()) })
	return s, nil
}

// tickLoopStalled reports the tick loop stalled when it has not begun an
// iteration for StallAfter: a wait without a bound somewhere.
func (s *Scheduler) tickLoopStalled(now time.Time) error {
	if since := now.Sub(time.Unix(0, s.loopAt.Load())); since > s.cfg.StallAfter {
		return fmt.Errorf("tick loop stalled: no iteration for %s (bound %s)", since.Round(time.Second), s.cfg.StallAfter)
	}
	return nil
}

// tickLoopWake is the longest the tick loop sleeps: it re-reads the clock at
// least this often (clock changes).
const tickLoopWake = 30 * time.Second

// Health is the scheduler's liveness check: a problem when the tick loop
// has stalled (see StallAfter; the lease is already given up then), or when
// the lease loop has not made an attempt for 3 TTLs (it tries every TTL/3,
// each attempt bounded by TTL/3). Either means a wait without a bound
// somewhere: the process needs a restart.
func (s *Scheduler) Health(now time.Time) []string {
	var problems []string
	if err := s.tickLoopStalled(now); err != nil {
		problems = append(problems, err.Error())
	}
	leaseBound := 3 * s.cfg.LeaderTTL
	if since := now.Sub(s.lease.SteppedAt()); since > leaseBound {
		problems = append(problems, fmt.Sprintf("leader lease loop stalled: no attempt for %s (bound %s)", since.Round(time.Second), leaseBound))
	}
	return problems
}

// Lease exposes the scheduler's lease.
func (s *Scheduler) Lease() *lease.Lease { return s.lease }

// Run schedules until ctx ends, then finishes the trigger in progress, gives
// unsent alerts back, releases the lease and returns nil.
func (s *Scheduler) Run(ctx context.Context) error {
	for _, k := range s.kinds {
		s.log.Info("schedule", "kind", k.sched.Kind, "spec", k.sched.Spec, "timezone", k.sched.Location.String(),
			"next", k.sched.Next(time.Now()), "misfire_grace", s.cfg.MisfireGrace.String())
	}
	var wg sync.WaitGroup
	wg.Go(func() { s.lease.Run(ctx) })
	wg.Go(func() { s.alertLoop(ctx) })
	s.tickLoop(ctx)
	wg.Wait()
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.lease.Release(rctx); err != nil {
		s.log.Warn("release the leader lease; it expires by its TTL", "error", err)
	}
	return nil
}

// tickLoop fires due ticks while leading and sleeps until the next one.
func (s *Scheduler) tickLoop(ctx context.Context) {
	leading := false
	for {
		now := time.Now()
		s.loopAt.Store(now.UnixNano())
		wake := now.Add(tickLoopWake)
		held := s.lease.Held()
		switch {
		case held && !leading:
			if err := s.loadCursors(ctx); err != nil {
				if ctx.Err() == nil {
					s.log.Error("read the last ticks; retrying", "error", err)
				}
				wake = now.Add(3 * time.Second)
			} else {
				leading = true
			}
		case !held && leading:
			leading = false
		}
		if leading {
			for _, k := range s.kinds {
				if w := s.evaluate(ctx, k, now); w.Before(wake) {
					wake = w
				}
			}
		}
		t := time.NewTimer(max(time.Until(wake), 10*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.lease.Changed():
		case <-t.C:
		}
		t.Stop()
	}
}

// loadCursors reads each kind's last handled tick: a new leader takes up
// where the database says the previous one stopped. It also reads when a
// scheduler first started for the kind, recording this one's start when
// none did: a first start catches up no earlier tick.
func (s *Scheduler) loadCursors(ctx context.Context) error {
	for _, k := range s.kinds {
		qctx, cancel := context.WithTimeout(ctx, s.cfg.TriggerTimeout)
		since, err := s.st.SchedulerFirstStart(qctx, k.sched.Kind, s.startedAt)
		var last time.Time
		if err == nil {
			last, err = s.st.LastTick(qctx, k.sched.Kind)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("last tick of %s: %w", k.sched.Kind, err)
		}
		if since.Equal(s.startedAt) {
			s.log.Info("first start for this kind: no earlier tick is caught up, no batch that ended before is alerted",
				"kind", k.sched.Kind, "first_started_at", since)
		}
		k.last, k.since, k.retryAt, k.failures = last, since, time.Time{}, 0
	}
	return nil
}

// evaluate handles kind's ticks due at now and returns when to look again.
func (s *Scheduler) evaluate(ctx context.Context, k *kindState, now time.Time) time.Time {
	if now.Before(k.retryAt) {
		return k.retryAt
	}
	d := CatchUp(k.sched, maxTime(k.last, k.since), now, s.cfg.MisfireGrace)
	if len(d.Missed) > 0 {
		if err := s.recordMissed(ctx, k, d, now); err != nil {
			return s.failed(k, now, time.Time{}, fmt.Errorf("record missed ticks: %w", err))
		}
	}
	if !d.Fire.IsZero() {
		if err := s.fire(ctx, k, d.Fire, now); err != nil {
			return s.failed(k, now, d.Fire, err)
		}
	}
	k.failures = 0
	if next := k.sched.Next(maxTime(now, k.last)); !next.IsZero() {
		return next
	}
	return now.Add(time.Hour)
}

// failed logs a tick that could not be handled and schedules the retry.
func (s *Scheduler) failed(k *kindState, now, tick time.Time, err error) time.Time {
	if errors.Is(err, errNotLeader) {
		return now.Add(time.Second)
	}
	wait := min(s.cfg.RetryBackoff<<min(k.failures, 10), time.Minute)
	k.failures++
	k.retryAt = now.Add(wait)
	attrs := []any{"kind", k.sched.Kind, "error", err, "retry_in", wait.String(), "attempt", k.failures}
	if !tick.IsZero() {
		attrs = append(attrs, "scheduled_for", tick, "fires_until", tick.Add(max(s.cfg.MisfireGrace, OnTime)))
	}
	s.log.Error("tick not fired; retrying", attrs...)
	return k.retryAt
}

var errNotLeader = errors.New("no longer leading")

// recordMissed logs and records the ticks of d that will never fire.
func (s *Scheduler) recordMissed(ctx context.Context, k *kindState, d Decision, now time.Time) error {
	newest := d.Missed[0]
	grace := max(s.cfg.MisfireGrace, OnTime)
	count := fmt.Sprint(d.MissedCount)
	if d.MissedCapped {
		count = "more than " + count
	}
	detail := fmt.Sprintf("%s tick %s missed, %s late, beyond the misfire grace of %s",
		k.sched.Kind, newest.UTC().Format(time.RFC3339), now.Sub(newest).Round(time.Second), grace)
	if !d.Fire.IsZero() {
		detail = fmt.Sprintf("%s ticks from %s to %s missed (%s in all); they coalesce into the tick of %s, which fires",
			k.sched.Kind, d.FirstMissed.UTC().Format(time.RFC3339), newest.UTC().Format(time.RFC3339), count,
			d.Fire.UTC().Format(time.RFC3339))
	} else if d.MissedCount > 1 {
		detail += fmt.Sprintf("; %s ticks missed since %s", count, d.FirstMissed.UTC().Format(time.RFC3339))
	}
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.TriggerTimeout)
	defer cancel()
	first := d.FirstMissed
	if _, err := s.st.RecordTick(qctx, store.Tick{Kind: k.sched.Kind, ScheduledFor: newest, Outcome: store.TickMissed,
		Detail: detail, MissedTicks: d.MissedCount, FirstMissed: &first}); err != nil {
		return err
	}
	for _, t := range d.Missed {
		attrs := []any{"kind", k.sched.Kind, "scheduled_for", t, "late", now.Sub(t).Round(time.Millisecond).String(),
			"misfire_grace", s.cfg.MisfireGrace.String()}
		if !d.Fire.IsZero() {
			attrs = append(attrs, "coalesced_into", d.Fire)
		}
		s.log.Warn("tick missed", attrs...)
	}
	if d.MissedCount > len(d.Missed) {
		s.log.Warn("tick missed: older ticks in the gap", "kind", k.sched.Kind, "count", count,
			"first", d.FirstMissed, "listed", len(d.Missed))
	}
	k.last = maxTime(k.last, newest)
	return nil
}

// fire starts the batch of kind's tick, exactly once across replicas: a
// batch already recorded for the tick, or a unique violation from a racing
// leader, counts as fired; a refusal by the kind's lock skips the tick.
func (s *Scheduler) fire(ctx context.Context, k *kindState, tick, now time.Time) error {
	if !s.lease.Held() {
		return errNotLeader
	}
	kind := k.sched.Kind
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.TriggerTimeout)
	defer cancel()
	b, err := s.st.BatchForTick(ctx, kind, tick)
	if err == nil {
		s.log.Info("tick already fired", "kind", kind, "scheduled_for", tick, "batch_id", b.ID)
		k.last = tick
		return nil
	}
	if !errors.Is(err, store.ErrBatchNotFound) {
		return fmt.Errorf("look up the batch of the tick: %w", err)
	}
	req := s.cfg.Request
	req.Kind, req.Trigger, req.ScheduledFor = kind, TriggerName, &tick
	b, err = s.trig.Trigger(ctx, req)
	var refused *batch.RefusedError
	switch {
	case err == nil:
		late := time.Since(tick)
		msg := "tick fired"
		if late > OnTime {
			msg = "missed tick fired late, within the misfire grace"
		}
		s.log.Info(msg, "kind", kind, "scheduled_for", tick, "batch_id", b.ID, "late", late.Round(time.Millisecond).String(),
			"total_chunks", b.TotalChunks, "lock_expires_at", b.LockExpiresAt)
		k.last = tick
		return nil
	case store.IsDuplicateTick(err):
		s.log.Info("tick already fired by another scheduler", "kind", kind, "scheduled_for", tick)
		k.last = tick
		return nil
	case errors.As(err, &refused):
		return s.skip(ctx, k, tick, refused)
	default:
		return err
	}
}

// skip records a tick refused because a batch of its kind holds the lock.
// When the holder is the batch of this very tick (a racing leader fired it
// an instant ago), the tick counts as fired.
func (s *Scheduler) skip(ctx context.Context, k *kindState, tick time.Time, r *batch.RefusedError) error {
	kind := k.sched.Kind
	if r.RunningID != "" {
		// A holder not yet in batch_runs is a trigger between lock and insert: look again shortly.
		for i := range 5 {
			b, err := s.st.GetBatch(ctx, r.RunningID)
			if err == nil {
				if b.ScheduledFor != nil && b.ScheduledFor.Equal(tick) {
					s.log.Info("tick already fired by another scheduler", "kind", kind, "scheduled_for", tick, "batch_id", b.ID)
					k.last = tick
					return nil
				}
				break
			}
			if !errors.Is(err, store.ErrBatchNotFound) || i == 4 {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	holder := cmp.Or(r.RunningID, "unknown")
	exp := "unknown"
	var expAt *time.Time
	if !r.ExpiresAt.IsZero() {
		e := r.ExpiresAt.UTC()
		expAt = &e
		exp = fmt.Sprintf("%s, in %s", e.Format(time.RFC3339), time.Until(e).Round(time.Second))
	}
	msg := fmt.Sprintf("tick skipped: a %s batch is still running: %s (lock expires %s)", kind, holder, exp)
	k.last = tick
	detail := fmt.Sprintf("%s tick %s skipped: a %s batch is still running: %s (lock expires %s)",
		kind, tick.UTC().Format(time.RFC3339), kind, holder, exp)
	// Recorded first, then logged: whoever reads the log line finds the row.
	if _, err := s.st.RecordTick(ctx, store.Tick{Kind: kind, ScheduledFor: tick, Outcome: store.TickSkipped,
		Detail: detail, RunningBatchID: r.RunningID, LockExpiresAt: expAt}); err != nil {
		s.log.Error("record the skipped tick; its alert is lost", "kind", kind, "scheduled_for", tick, "error", err)
	}
	s.log.Warn(msg, "kind", kind, "scheduled_for", tick, "running_batch_id", r.RunningID, "lock_expires_at", expAt)
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
