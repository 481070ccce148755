-- +goose Up
-- A requeued chunk task keeps its task ID (derived from (batch, chunk)), so a
-- chunk that fails again after a requeue is a second dead letter of the same
-- task ID. generation tells them apart: 0 for the task as first enqueued, n
-- for the task of the n-th requeue (the chunk payload's "requeue" field).
-- Recording stays idempotent per (task_id, generation).
ALTER TABLE dead_letters ADD COLUMN generation integer NOT NULL DEFAULT 0;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey;
ALTER TABLE dead_letters ADD PRIMARY KEY (task_id, generation);
CREATE INDEX dead_letters_failed_at ON dead_letters (failed_at);

-- +goose Down
DROP INDEX dead_letters_failed_at;
DELETE FROM dead_letters WHERE generation > 0;
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey;
ALTER TABLE dead_letters ADD PRIMARY KEY (task_id);
ALTER TABLE dead_letters DROP COLUMN generation;
