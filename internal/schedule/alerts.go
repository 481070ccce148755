package schedule

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/gridbatch/gridbatch/internal/alert"
	"github.com/gridbatch/gridbatch/internal/store"
)

// alertClaims is how many batch and how many tick alerts one round claims.
const alertClaims = 8

// alertLoop sends, while leading, the alerts the database holds: batches of
// any trigger that ended other than succeeded, and skipped or missed ticks.
// It runs apart from the ticks, so a slow or dead webhook never delays one;
// each alert is claimed, sent with bounded retries, then marked, so none is
// sent twice by a healthy leader and none is lost when a leader dies (its
// claims are taken over after reclaimAfter).
func (s *Scheduler) alertLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.AlertPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if s.lease.Held() {
			s.dispatch(ctx)
		}
	}
}

// reclaimAfter is how old a claim must be before another leader takes it:
// well past the longest a send can take.
func (s *Scheduler) reclaimAfter() time.Duration {
	d := 2 * time.Minute
	if s.cfg.Alerts != nil {
		d = max(d, 2*s.cfg.Alerts.MaxDuration())
	}
	return d
}

// alertJob is one claimed alert: its message, and how to mark it sent or
// give it back.
type alertJob struct {
	msg    alert.Message
	done   func(context.Context) error
	giveUp func(context.Context) error
}

// dispatch claims pending alerts and sends them in parallel; it returns when
// all are sent, given up on, or given back because ctx ended.
func (s *Scheduler) dispatch(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	batches, err := s.st.ClaimBatchAlerts(qctx, alertClaims, s.reclaimAfter())
	if err != nil && ctx.Err() == nil {
		s.log.Error("claim batch alerts", "error", err)
	}
	ticks, err := s.st.ClaimTickAlerts(qctx, alertClaims, s.reclaimAfter())
	if err != nil && ctx.Err() == nil {
		s.log.Error("claim tick alerts", "error", err)
	}
	cancel()
	var jobs []alertJob
	for _, b := range batches {
		jobs = append(jobs, alertJob{msg: BatchMessage(b),
			done:   func(ctx context.Context) error { return s.st.MarkBatchAlerted(ctx, b.ID) },
			giveUp: func(ctx context.Context) error { return s.st.UnclaimBatchAlert(ctx, b.ID) }})
	}
	for _, t := range ticks {
		jobs = append(jobs, alertJob{msg: TickMessage(t),
			done:   func(ctx context.Context) error { return s.st.MarkTickAlerted(ctx, t.Kind, t.ScheduledFor) },
			giveUp: func(ctx context.Context) error { return s.st.UnclaimTickAlert(ctx, t.Kind, t.ScheduledFor) }})
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { s.deliver(ctx, j) })
	}
	wg.Wait()
}

func (s *Scheduler) deliver(ctx context.Context, j alertJob) {
	attrs := []any{"event", j.msg.Event, "kind", j.msg.Kind, "batch_id", j.msg.BatchID, "status", j.msg.Status, "text", j.msg.Text}
	if j.msg.ScheduledFor != nil {
		attrs = append(attrs, "scheduled_for", *j.msg.ScheduledFor)
	}
	if s.cfg.Alerts == nil {
		s.log.Info("alert (no webhook configured: GRIDBATCH_ALERT_WEBHOOK_URL)", attrs...)
	} else {
		start := time.Now()
		err := s.cfg.Alerts.Send(ctx, j.msg)
		attrs = append(attrs, "seconds", time.Since(start).Seconds())
		switch {
		case err != nil && ctx.Err() != nil: // shutting down: the next leader sends it
			bctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := j.giveUp(bctx); err != nil {
				s.log.Warn("give back an unsent alert; the next leader takes it over later", append(attrs, "error", err)...)
			}
			return
		case err != nil:
			s.log.Error("alert not delivered; given up", append(attrs, "error", err)...)
		default:
			s.log.Info("alert sent", attrs...)
		}
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := j.done(mctx); err != nil {
		s.log.Error("mark the alert sent; it may be sent again", append(attrs, "error", err)...)
	}
}

// BatchMessage is the alert of a batch that ended other than succeeded.
func BatchMessage(b store.Batch) alert.Message {
	text := fmt.Sprintf(":warning: gridbatch: %s batch %s ended %s: %d of %d chunks succeeded, %d dead-lettered, %d timed out",
		b.Kind, b.ID, b.Status, b.CompletedChunks, b.TotalChunks, b.FailedChunks, b.TimedOutChunks)
	if b.ScheduledFor != nil {
		text += "; scheduled for " + b.ScheduledFor.UTC().Format(time.RFC3339)
	}
	m := alert.Message{Event: alert.EventBatchEnded, Kind: b.Kind, BatchID: b.ID, Status: b.Status,
		ScheduledFor: b.ScheduledFor, Trigger: b.Trigger, StartedAt: &b.StartedAt, EndedAt: b.EndedAt,
		TotalChunks: b.TotalChunks, CompletedChunks: b.CompletedChunks, FailedChunks: b.FailedChunks,
		TimedOutChunks: b.TimedOutChunks}
	if b.Status == store.StatusHeld && b.Checks != nil {
		// Held: computed, not published; the failed checks say why.
		var failed []string
		for _, c := range b.Checks.Failed() {
			failed = append(failed, c.Check+": "+c.Text)
		}
		m.Checks = failed
		text += fmt.Sprintf(". Not published: its declared checks failed (%s): %s; 'enqueuer publish %s --despite-checks --reason TEXT' publishes it",
			b.Checks.Declared, strings.Join(failed, "; "), b.ID)
	}
	if b.Error != nil {
		m.Error = *b.Error
		e := m.Error
		if r := []rune(e); len(r) > 300 {
			e = string(r[:300]) + "…"
		}
		text += ". Error: " + e
	}
	m.Text = text
	return m
}

// TickMessage is the alert of a skipped or missed tick.
func TickMessage(t store.Tick) alert.Message {
	m := alert.Message{Text: ":warning: gridbatch: " + t.Detail, Kind: t.Kind, Status: t.Outcome,
		ScheduledFor: &t.ScheduledFor, BatchID: t.RunningBatchID, LockExpiresAt: t.LockExpiresAt,
		MissedTicks: t.MissedTicks, FirstMissed: t.FirstMissed}
	m.Event = alert.EventTickMissed
	if t.Outcome == store.TickSkipped {
		m.Event = alert.EventTickSkipped
	}
	return m
}
