-- +goose Up
-- scheduler_starts records when a scheduler first started for each kind. It
-- catches up no tick from before that, and alerts no batch that ended
-- before the earliest of them: a first start reports only what happens from
-- then on, a restart still catches up what it missed while down.
CREATE TABLE scheduler_starts (
    kind             text        PRIMARY KEY,
    first_started_at timestamptz NOT NULL
);
-- A scheduler that ran before this migration ran since its oldest tick.
INSERT INTO scheduler_starts (kind, first_started_at)
SELECT kind, min(scheduled_for) FROM (
    SELECT kind, scheduled_for FROM batch_runs WHERE scheduled_for IS NOT NULL
    UNION ALL SELECT kind, coalesce(first_missed, scheduled_for) FROM schedule_ticks) h
GROUP BY kind;

-- +goose Down
DROP TABLE scheduler_starts;
