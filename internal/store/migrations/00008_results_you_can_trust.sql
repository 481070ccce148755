-- +goose Up
-- Results you can trust. A batch whose declared checks fail ends held:
-- computed, not published. checks is the report of the checks run on its
-- rows when its publication was last decided; provenance what made it
-- (recorded at plan time); publish_reason and published_by who published
-- it despite failed checks, and why.
ALTER TABLE batch_runs DROP CONSTRAINT batch_runs_status_check;
ALTER TABLE batch_runs ADD CONSTRAINT batch_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'timed_out', 'cancelled', 'held'));
ALTER TABLE batch_runs
    ADD COLUMN checks         jsonb,
    ADD COLUMN provenance     jsonb,
    ADD COLUMN publish_reason text,
    ADD COLUMN published_by   text;
-- The model process that computed a chunk (its worker is in worker).
ALTER TABLE chunk_runs ADD COLUMN model_pid int;

-- +goose Down
-- Fails while a batch is held; publish or delete those first.
ALTER TABLE chunk_runs DROP COLUMN model_pid;
ALTER TABLE batch_runs
    DROP COLUMN checks,
    DROP COLUMN provenance,
    DROP COLUMN publish_reason,
    DROP COLUMN published_by;
ALTER TABLE batch_runs DROP CONSTRAINT batch_runs_status_check;
ALTER TABLE batch_runs ADD CONSTRAINT batch_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'timed_out', 'cancelled'));
