-- +goose Up
-- A chunk that keeps failing is split in halves, recursively, until the
-- failing cells stand alone (batch.Classify decides when). Each part is a
-- chunk_runs row of its own: (chunk, lo, hi) is cells [lo, hi) of planned
-- chunk `chunk`, in its row-major order; lo = hi = 0 is the whole chunk, as
-- planned. A row that was split has status 'split' and counts for nothing:
-- its two halves carry its cells. A dead letter names the part it was
-- (lo, hi) and, when that is one cell, the cell (grid_id).
ALTER TABLE chunk_runs
    ADD COLUMN lo integer NOT NULL DEFAULT 0,
    ADD COLUMN hi integer NOT NULL DEFAULT 0,
    DROP CONSTRAINT chunk_runs_status_check,
    ADD CONSTRAINT chunk_runs_status_check
        CHECK (status IN ('pending', 'succeeded', 'failed', 'timed_out', 'cancelled', 'split')),
    DROP CONSTRAINT chunk_runs_pkey,
    ADD PRIMARY KEY (batch_id, chunk, lo, hi);

ALTER TABLE dead_letters
    ADD COLUMN lo integer NOT NULL DEFAULT 0,
    ADD COLUMN hi integer NOT NULL DEFAULT 0,
    ADD COLUMN grid_id bigint;

-- gridbatch_chunk_counts(batch_id) is the one count of a batch's chunks by
-- outcome. Cells are counted over its parts (split rows aside), so they are
-- exact whatever the splitting. A planned chunk counts once: pending while
-- a part of it is, else failed when a part of it was dead-lettered, else
-- timed out, cancelled, or succeeded when all its parts did.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION gridbatch_chunk_counts(batch_id text) RETURNS TABLE (
    done_chunks int, completed_chunks int, failed_chunks int, timed_out_chunks int, cancelled_chunks int,
    completed_cells bigint, failed_cells bigint, timed_out_cells bigint
) LANGUAGE sql STABLE AS $fn$
    WITH parts AS (
        SELECT c.chunk, c.status, c.cells FROM chunk_runs c
        WHERE c.batch_id = gridbatch_chunk_counts.batch_id AND c.status <> 'split'
    ), chunks AS (
        SELECT CASE
            WHEN bool_or(status = 'pending') THEN 'pending'
            WHEN bool_or(status = 'failed') THEN 'failed'
            WHEN bool_or(status = 'timed_out') THEN 'timed_out'
            WHEN bool_or(status = 'cancelled') THEN 'cancelled'
            ELSE 'succeeded' END AS status
        FROM parts GROUP BY chunk
    )
    SELECT
        (SELECT count(*) FILTER (WHERE status <> 'pending') FROM chunks)::int,
        (SELECT count(*) FILTER (WHERE status = 'succeeded') FROM chunks)::int,
        (SELECT count(*) FILTER (WHERE status = 'failed') FROM chunks)::int,
        (SELECT count(*) FILTER (WHERE status = 'timed_out') FROM chunks)::int,
        (SELECT count(*) FILTER (WHERE status = 'cancelled') FROM chunks)::int,
        (SELECT coalesce(sum(cells) FILTER (WHERE status = 'succeeded'), 0) FROM parts)::bigint,
        (SELECT coalesce(sum(cells) FILTER (WHERE status = 'failed'), 0) FROM parts)::bigint,
        (SELECT coalesce(sum(cells) FILTER (WHERE status = 'timed_out'), 0) FROM parts)::bigint
$fn$;
-- +goose StatementEnd

-- +goose Down
-- Fails while a batch has split chunks; delete those batches first.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION gridbatch_chunk_counts(batch_id text) RETURNS TABLE (
    done_chunks int, completed_chunks int, failed_chunks int, timed_out_chunks int, cancelled_chunks int,
    completed_cells bigint, failed_cells bigint, timed_out_cells bigint
) LANGUAGE sql STABLE AS $fn$
    SELECT
        (count(*) FILTER (WHERE status <> 'pending'))::int,
        (count(*) FILTER (WHERE status = 'succeeded'))::int,
        (count(*) FILTER (WHERE status = 'failed'))::int,
        (count(*) FILTER (WHERE status = 'timed_out'))::int,
        (count(*) FILTER (WHERE status = 'cancelled'))::int,
        coalesce(sum(cells) FILTER (WHERE status = 'succeeded'), 0)::bigint,
        coalesce(sum(cells) FILTER (WHERE status = 'failed'), 0)::bigint,
        coalesce(sum(cells) FILTER (WHERE status = 'timed_out'), 0)::bigint
    FROM chunk_runs c WHERE c.batch_id = gridbatch_chunk_counts.batch_id
$fn$;
-- +goose StatementEnd
ALTER TABLE dead_letters DROP COLUMN lo, DROP COLUMN hi, DROP COLUMN grid_id;
ALTER TABLE chunk_runs
    DROP CONSTRAINT chunk_runs_pkey,
    ADD PRIMARY KEY (batch_id, chunk),
    DROP CONSTRAINT chunk_runs_status_check,
    ADD CONSTRAINT chunk_runs_status_check
        CHECK (status IN ('pending', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    DROP COLUMN lo, DROP COLUMN hi;
