-- +goose Up
-- A scheduled batch is unique per (kind, tick), so a scheduler failover at a
-- tick can never fire it twice.
CREATE UNIQUE INDEX batch_runs_kind_scheduled_for ON batch_runs (kind, scheduled_for)
    WHERE scheduled_for IS NOT NULL;

-- Alerts of batches that ended other than succeeded. The scheduler's leader
-- claims a batch (alert_claimed_at), posts the alert, then sets alerted_at; a
-- claim left by a leader that died is taken over after a few minutes.
ALTER TABLE batch_runs
    ADD COLUMN alert_claimed_at timestamptz,
    ADD COLUMN alerted_at       timestamptz;
-- Batches that ended before the scheduler existed are not alerted.
UPDATE batch_runs SET alerted_at = now() WHERE status NOT IN ('running', 'succeeded');
CREATE INDEX batch_runs_unalerted ON batch_runs (ended_at)
    WHERE alerted_at IS NULL AND status NOT IN ('running', 'succeeded');

-- schedule_ticks records every scheduler tick that started no batch:
-- skipped (the previous batch of the kind still held the lock) or missed
-- (no scheduler ran at it, or it was beyond the misfire grace). A missed row
-- may stand for a gap of several ticks: missed_ticks from first_missed to
-- scheduled_for. Alerted like batch_runs.
CREATE TABLE schedule_ticks (
    kind             text        NOT NULL,
    scheduled_for    timestamptz NOT NULL,
    outcome          text        NOT NULL CHECK (outcome IN ('skipped', 'missed')),
    detail           text        NOT NULL,
    running_batch_id text,
    lock_expires_at  timestamptz,
    missed_ticks     integer     NOT NULL DEFAULT 0,
    first_missed     timestamptz,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    alert_claimed_at timestamptz,
    alerted_at       timestamptz,
    PRIMARY KEY (kind, scheduled_for)
);
CREATE INDEX schedule_ticks_unalerted ON schedule_ticks (recorded_at) WHERE alerted_at IS NULL;

-- +goose Down
DROP TABLE schedule_ticks;
DROP INDEX batch_runs_unalerted;
ALTER TABLE batch_runs DROP COLUMN alerted_at, DROP COLUMN alert_claimed_at;
DROP INDEX batch_runs_kind_scheduled_for;
