-- +goose Up
-- Results per batch, published atomically.
--
-- Each batch writes its rows into a table of its own, results_<batch>, with
-- the columns of <kind>_timeseries and a CHECK (batch_id = '<batch>'):
-- binary COPY straight into it, no index, no upsert, invisible to readers.
-- Publishing a batch indexes its table and attaches it, in one transaction
-- with its published_batches row, as a partition of <kind>_results (LIST on
-- batch_id: the CHECK makes the attach a catalogue change, no scan).
-- <kind>_timeseries becomes a view of <kind>_results: for each (step, cell,
-- scenario), the row of the batch published last. Readers see all of a
-- batch or none of it. Dropping a batch's rows is DROP TABLE.

-- published_batches orders the publications of each kind.
CREATE TABLE published_batches (
    kind         text        NOT NULL,
    batch_id     text        PRIMARY KEY,
    published_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX published_batches_kind ON published_batches (kind, published_at DESC);

-- results_table and rows_dropped_at: where a batch's rows are, and when
-- retention dropped them.
ALTER TABLE batch_runs
    ADD COLUMN results_table   text,
    ADD COLUMN published_at    timestamptz,
    ADD COLUMN rows_dropped_at timestamptz;

-- gridbatch_results_layout(kind) gives a kind the layout above, once
-- (idempotent): the partitioned <kind>_results and the view
-- <kind>_timeseries. A <kind>_timeseries that is still a plain table (the
-- schema before this migration) has its rows moved, one published
-- partition per batch that wrote them, so the view shows what the table did.
-- 'enqueuer migrate' calls it for every kind of the models file.
-- +goose StatementBegin
CREATE FUNCTION gridbatch_results_layout(kind text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    parent text := kind || '_results';
    ts     text := kind || '_timeseries';
    legacy text := kind || '_timeseries_legacy';
    b      record;
    part   text;
BEGIN
    IF to_regclass(parent) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format($$CREATE TABLE %I (
        step        double precision   NOT NULL,
        grid_id     bigint             NOT NULL,
        scenario    text               NOT NULL,
        first_year  smallint           NOT NULL,
        series      double precision[] NOT NULL,
        batch_id    text               NOT NULL,
        computed_at timestamptz        NOT NULL DEFAULT now()
    ) PARTITION BY LIST (batch_id)$$, parent);
    IF to_regclass(ts) IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %I RENAME TO %I', ts, legacy);
        FOR b IN EXECUTE format('SELECT batch_id, max(computed_at) AS at FROM %I GROUP BY batch_id ORDER BY 2', legacy) LOOP
            part := gridbatch_batch_table(b.batch_id);
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS, CHECK (batch_id = %L))', part, parent, b.batch_id);
            EXECUTE format('INSERT INTO %I SELECT step, grid_id, scenario, first_year, series, batch_id, computed_at FROM %I WHERE batch_id = %L',
                part, legacy, b.batch_id);
            EXECUTE format('CREATE INDEX ON %I (step, grid_id, scenario)', part);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%L)', parent, part, b.batch_id);
            INSERT INTO published_batches (kind, batch_id, published_at) VALUES (kind, b.batch_id, b.at)
                ON CONFLICT (batch_id) DO NOTHING;
            UPDATE batch_runs SET results_table = part, published_at = coalesce(published_at, b.at) WHERE id = b.batch_id;
        END LOOP;
        EXECUTE format('DROP TABLE %I', legacy);
    END IF;
    EXECUTE format($$CREATE VIEW %I AS
        SELECT DISTINCT ON (r.step, r.grid_id, r.scenario)
            r.step, r.grid_id, r.scenario, r.first_year, r.series, r.batch_id, r.computed_at
        FROM %I r JOIN published_batches p ON p.batch_id = r.batch_id
        ORDER BY r.step, r.grid_id, r.scenario, p.published_at DESC$$, ts, parent);
    EXECUTE format('COMMENT ON VIEW %I IS %L', ts,
        'The published ' || kind || ' series: for each (step, grid_id, scenario), the row of the batch published last.');
END
$fn$;
-- +goose StatementEnd

-- gridbatch_batch_table(batch_id) names the table of a batch's rows:
-- results_ and the ID folded to [a-z0-9_], with an md5 suffix when it had to
-- be folded or cut, so two IDs never share a table.
-- +goose StatementBegin
CREATE FUNCTION gridbatch_batch_table(batch_id text) RETURNS text LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE WHEN batch_id ~ '^[a-z0-9-]{1,50}$' THEN 'results_' || replace(batch_id, '-', '_')
        ELSE 'results_' || left(regexp_replace(lower(batch_id), '[^a-z0-9_]', '_', 'g'), 40) || '_' || left(md5(batch_id), 10)
    END
$fn$;
-- +goose StatementEnd

-- gridbatch_chunk_counts(batch_id) is the one count of a batch's chunks by
-- outcome. While a batch runs its counters are read through it (chunks no
-- longer move counters on the batch row, which serialized their commits);
-- when it ends or heals they are stored from it.
-- +goose StatementBegin
CREATE FUNCTION gridbatch_chunk_counts(batch_id text) RETURNS TABLE (
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

SELECT gridbatch_results_layout('ph');
SELECT gridbatch_results_layout('hazard');

-- +goose Down
SELECT 1;
