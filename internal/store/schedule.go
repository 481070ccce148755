package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Outcomes of a tick that started no batch (schedule_ticks.outcome).
const (
	TickSkipped = "skipped"
	TickMissed  = "missed"
)

// Tick is a schedule_ticks row: a scheduler tick that started no batch.
type Tick struct {
	Kind         string
	ScheduledFor time.Time
	// Outcome is TickSkipped or TickMissed.
	Outcome string
	// Detail is the one-line reason, as logged.
	Detail string
	// RunningBatchID and LockExpiresAt name the batch holding the lock of a
	// skipped tick.
	RunningBatchID string
	LockExpiresAt  *time.Time
	// MissedTicks is how many ticks a missed row stands for, the oldest being
	// FirstMissed and the newest ScheduledFor.
	MissedTicks int
	FirstMissed *time.Time
	RecordedAt  time.Time
}

const tickColumns = `kind, scheduled_for, outcome, detail, coalesce(running_batch_id, ''), lock_expires_at,
	missed_ticks, first_missed, recorded_at`

func scanTick(row pgx.Row) (Tick, error) {
	var t Tick
	err := row.Scan(&t.Kind, &t.ScheduledFor, &t.Outcome, &t.Detail, &t.RunningBatchID, &t.LockExpiresAt,
		&t.MissedTicks, &t.FirstMissed, &t.RecordedAt)
	return t, err
}

// CheckSchedulerSchema fails with a one-line hint when the schema lacks
// the scheduler's migration.
func (s *Store) CheckSchedulerSchema(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, `SELECT alerted_at FROM batch_runs LIMIT 0`)
	if err == nil {
		_, err = s.pool.Exec(ctx, `SELECT 1 FROM schedule_ticks LIMIT 0`)
	}
	if err == nil {
		_, err = s.pool.Exec(ctx, `SELECT 1 FROM scheduler_starts LIMIT 0`)
	}
	return SchemaHint(err)
}

// SchedulerFirstStart returns when a scheduler first started for kind,
// recording at as that time when none did before.
func (s *Store) SchedulerFirstStart(ctx context.Context, kind string, at time.Time) (time.Time, error) {
	if _, err := s.pool.Exec(ctx, `INSERT INTO scheduler_starts (kind, first_started_at) VALUES ($1, $2)
		ON CONFLICT (kind) DO NOTHING`, kind, at); err != nil {
		return time.Time{}, err
	}
	var first time.Time
	err := s.pool.QueryRow(ctx, `SELECT first_started_at FROM scheduler_starts WHERE kind = $1`, kind).Scan(&first)
	return first, err
}

// LastTick returns the newest tick of kind the scheduler handled: fired (a
// batch with that scheduled_for), skipped or missed. The zero time when none.
func (s *Store) LastTick(ctx context.Context, kind string) (time.Time, error) {
	var t *time.Time
	err := s.pool.QueryRow(ctx, `SELECT greatest(
		(SELECT max(scheduled_for) FROM batch_runs WHERE kind = $1 AND scheduled_for IS NOT NULL),
		(SELECT max(scheduled_for) FROM schedule_ticks WHERE kind = $1))`, kind).Scan(&t)
	if err != nil || t == nil {
		return time.Time{}, err
	}
	return *t, nil
}

// BatchForTick returns the batch fired for kind's tick, ErrBatchNotFound when none.
func (s *Store) BatchForTick(ctx context.Context, kind string, tick time.Time) (Batch, error) {
	return scanBatch(s.pool.QueryRow(ctx, `SELECT `+liveBatchColumns+` FROM `+liveBatchFrom+`
		WHERE b.kind = $1 AND b.scheduled_for = $2`, kind, tick))
}

// IsDuplicateTick reports whether err is the unique violation of a second
// batch for a (kind, scheduled_for) that already has one.
func IsDuplicateTick(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "batch_runs_kind_scheduled_for"
}

// RecordTick records a skipped or missed tick. It returns false, and changes
// nothing, when the tick was already recorded.
func (s *Store) RecordTick(ctx context.Context, t Tick) (bool, error) {
	tag, err := s.pool.Exec(ctx, `
		INSERT INTO schedule_ticks (kind, scheduled_for, outcome, detail, running_batch_id, lock_expires_at,
			missed_ticks, first_missed)
		VALUES ($1, $2, $3, $4, nullif($5, ''), $6, $7, $8)
		ON CONFLICT (kind, scheduled_for) DO NOTHING`,
		t.Kind, t.ScheduledFor, t.Outcome, t.Detail, t.RunningBatchID, t.LockExpiresAt, t.MissedTicks, t.FirstMissed)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// ListTicks returns the recorded ticks of kind (all kinds when empty), oldest first.
func (s *Store) ListTicks(ctx context.Context, kind string) ([]Tick, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tickColumns+` FROM schedule_ticks
		WHERE $1 = '' OR kind = $1 ORDER BY scheduled_for, kind`, kind)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tick, error) { return scanTick(r) })
}

// ClaimBatchAlerts claims up to limit ended batches whose status is not
// succeeded and whose alert is not sent, oldest first; only batches that
// ended since a scheduler first started (SchedulerFirstStart), none before. A claim older than
// reclaimAfter (its claimer died) is claimed again. Mark each sent alert
// with MarkBatchAlerted, or give an unsent one back with UnclaimBatchAlert.
func (s *Store) ClaimBatchAlerts(ctx context.Context, limit int, reclaimAfter time.Duration) ([]Batch, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE batch_runs SET alert_claimed_at = now()
		WHERE id IN (
			SELECT id FROM batch_runs
			WHERE alerted_at IS NULL AND status NOT IN ('running', 'succeeded')
				AND coalesce(ended_at, started_at) >= (SELECT min(first_started_at) FROM scheduler_starts)
				AND (alert_claimed_at IS NULL OR alert_claimed_at < now() - make_interval(secs => $2))
			ORDER BY ended_at, id LIMIT $1
			FOR UPDATE SKIP LOCKED)
		RETURNING `+batchColumns, limit, reclaimAfter.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Batch, error) { return scanBatch(r) })
}

// MarkBatchAlerted records that the batch's alert was sent (or given up on).
func (s *Store) MarkBatchAlerted(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `UPDATE batch_runs SET alerted_at = now() WHERE id = $1`, id)
	return err
}

// UnclaimBatchAlert gives back a claimed, unsent alert, for the next leader.
func (s *Store) UnclaimBatchAlert(ctx context.Context, id string) error {
	_, err := s.pool.Exec(ctx, `UPDATE batch_runs SET alert_claimed_at = NULL WHERE id = $1 AND alerted_at IS NULL`, id)
	return err
}

// ClaimTickAlerts is ClaimBatchAlerts for schedule_ticks.
func (s *Store) ClaimTickAlerts(ctx context.Context, limit int, reclaimAfter time.Duration) ([]Tick, error) {
	rows, err := s.pool.Query(ctx, `
		UPDATE schedule_ticks SET alert_claimed_at = now()
		WHERE (kind, scheduled_for) IN (
			SELECT kind, scheduled_for FROM schedule_ticks
			WHERE alerted_at IS NULL
				AND (alert_claimed_at IS NULL OR alert_claimed_at < now() - make_interval(secs => $2))
			ORDER BY recorded_at, kind LIMIT $1
			FOR UPDATE SKIP LOCKED)
		RETURNING `+tickColumns, limit, reclaimAfter.Seconds())
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Tick, error) { return scanTick(r) })
}

// MarkTickAlerted records that the tick's alert was sent (or given up on).
func (s *Store) MarkTickAlerted(ctx context.Context, kind string, tick time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE schedule_ticks SET alerted_at = now() WHERE kind = $1 AND scheduled_for = $2`, kind, tick)
	return err
}

// UnclaimTickAlert gives back a claimed, unsent tick alert.
func (s *Store) UnclaimTickAlert(ctx context.Context, kind string, tick time.Time) error {
	_, err := s.pool.Exec(ctx, `UPDATE schedule_ticks SET alert_claimed_at = NULL
		WHERE kind = $1 AND scheduled_for = $2 AND alerted_at IS NULL`, kind, tick)
	return err
}
