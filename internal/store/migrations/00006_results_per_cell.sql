-- +goose Up
-- A batch's own rows become one row per cell: the cell's series of every
-- scenario, back to back, as raw float64 in a bytea, instead of one row
-- per (cell, scenario) with a float8[]. PostgreSQL takes a float8[] in by
-- parsing each element (an fmgr call per value, 115 million per 480,000-
-- cell batch) and a bytea by copying it, and a third of the rows is a
-- third of the per-row work and of the index that publishing builds:
-- measured here, the COPY of a 480,000-cell batch fell from about 11.5 to
-- about 4.2 core-seconds of PostgreSQL, its index from 1.7 to 0.4 s.
--
-- <kind>_timeseries keeps its columns (series is still a float8[], one row
-- per cell and scenario): the view splits each row with the batch's
-- layout, recorded in batch_runs when the batch is made and copied to
-- published_batches when it is published.
--
-- The bytea: for each name of series_names in order, years values, each the
-- 8 bytes of an IEEE 754 double, big-endian (float8send's bytes).

ALTER TABLE batch_runs
    ADD COLUMN series_names text[],
    ADD COLUMN first_year   int,
    ADD COLUMN years        int;
ALTER TABLE published_batches
    ADD COLUMN series_names text[],
    ADD COLUMN first_year   int,
    ADD COLUMN years        int;

-- gridbatch_float8s(b) decodes the big-endian float64s of b into a float8[],
-- bit for bit (infinities, -0 and subnormals included; NaN as NaN): sign,
-- exponent and mantissa from each 8 bytes, the value rebuilt with exact
-- float8 arithmetic (a 53-bit integer times a power of two). About 0.6 µs a
-- value here: for reading cells, not for bulk reads (enqueuer export and
-- gridbatch's own readers decode the rows themselves). The OFFSET 0 keep
-- PostgreSQL from inlining each 8 bytes' decoding once per use.
-- +goose StatementBegin
CREATE FUNCTION gridbatch_float8s(b bytea) RETURNS double precision[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT ARRAY(
        SELECT CASE
            WHEN e = 2047 THEN (CASE WHEN m <> 0 THEN 'NaN' WHEN w < 0 THEN '-Infinity' ELSE 'Infinity' END)::float8
            WHEN e = 0 THEN (CASE WHEN w < 0 THEN -4.9406564584124654e-324::float8 ELSE 4.9406564584124654e-324::float8 END) * m
            ELSE (CASE WHEN w < 0 THEN -1::float8 ELSE 1::float8 END) * (m + 4503599627370496) * power(2::float8, e - 1075)
        END
        FROM (SELECT w, ((w >> 52) & 2047)::int AS e, w & 4503599627370495 AS m
              FROM (SELECT ('x' || encode(substring(b FROM 8 * i + 1 FOR 8), 'hex'))::bit(64)::bigint AS w
                    FROM generate_series(0, length(b) / 8 - 1) AS i OFFSET 0) x OFFSET 0) y)
$fn$;
-- +goose StatementEnd

-- gridbatch_float8send(a) is the inverse: a float8[]'s values as big-endian
-- bytes, a NULL element as NaN.
-- +goose StatementBegin
CREATE FUNCTION gridbatch_float8send(a double precision[]) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT coalesce(string_agg(float8send(coalesce(v, 'NaN')), ''::bytea ORDER BY o), ''::bytea)
    FROM unnest(a) WITH ORDINALITY AS u(v, o)
$fn$;
-- +goose StatementEnd

-- gridbatch_convert_batch rebuilds the rows of batch batch_id found in src
-- (one row per cell and scenario, with a float8[]: the layout before this
-- migration) as the table dst of one row per cell, with its CHECK and
-- batch_id default, and records the batch's layout (its scenarios in name
-- order, first year and length) in batch_runs. A cell missing a scenario,
-- or series of different years, stop the migration naming the batch:
-- gridbatch never wrote such rows.
-- +goose StatementBegin
CREATE FUNCTION gridbatch_convert_batch(src text, batch_id text, dst text, parent text)
RETURNS TABLE (series_names text[], first_year int, years int) LANGUAGE plpgsql AS $fn$
DECLARE
    names  text[];
    fy     int[];
    ny     int[];
    cells  bigint;
    wrote  bigint;
BEGIN
    EXECUTE format('SELECT array_agg(DISTINCT scenario ORDER BY scenario), array_agg(DISTINCT first_year::int),
            array_agg(DISTINCT cardinality(series)), count(DISTINCT (step, grid_id))
        FROM %I WHERE batch_id = $1', src) INTO names, fy, ny, cells USING batch_id;
    IF cardinality(fy) > 1 OR cardinality(ny) > 1 THEN
        RAISE EXCEPTION 'batch %: its series start in years % and have % values; cannot store them as one layout', batch_id, fy, ny;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING STORAGE, CHECK (batch_id = %L)) WITH (toast_tuple_target = 8160)',
        dst, parent, batch_id);
    EXECUTE format('ALTER TABLE %I ALTER COLUMN batch_id SET DEFAULT %L', dst, batch_id);
    EXECUTE format('INSERT INTO %I (step, grid_id, series, batch_id, computed_at)
        SELECT step, grid_id, string_agg(gridbatch_float8send(series), ''''::bytea ORDER BY array_position($1, scenario)), $2, max(computed_at)
        FROM %I WHERE batch_id = $2 GROUP BY step, grid_id HAVING count(*) = cardinality($1)', dst, src) USING names, batch_id;
    GET DIAGNOSTICS wrote = ROW_COUNT;
    IF wrote <> cells THEN
        RAISE EXCEPTION 'batch %: % of its % cells lack one of the scenarios %; cannot store them as one layout', batch_id, cells - wrote, cells, names;
    END IF;
    UPDATE batch_runs b SET series_names = names, first_year = fy[1], years = ny[1] WHERE b.id = batch_id;
    RETURN QUERY SELECT names, fy[1], ny[1];
END
$fn$;
-- +goose StatementEnd

-- gridbatch_results_layout(kind) gives a kind the layout of its results,
-- once (idempotent): the partitioned <kind>_results of one row per cell
-- and the view <kind>_timeseries. It converts the layout of migration
-- 00004 (one row per cell and scenario in <kind>_results and in the tables
-- of unpublished batches) when it finds it; 00004 itself converted the
-- plain <kind>_timeseries tables of the schema before it (ph, hazard),
-- the only ones there were. 'enqueuer migrate' calls it for every kind of
-- the models file.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION gridbatch_results_layout(kind text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    parent text := kind || '_results';
    old    text := kind || '_results_v1';
    ts     text := kind || '_timeseries';
    is_v1  boolean;
    b      record;
    l      record;
    part   text;
BEGIN
    IF to_regclass(parent) IS NOT NULL THEN
        SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(parent) AND attname = 'scenario' AND NOT attisdropped)
            INTO is_v1;
        IF NOT is_v1 THEN
            RETURN;
        END IF;
        EXECUTE format('DROP VIEW IF EXISTS %I', ts);
        EXECUTE format('ALTER TABLE %I RENAME TO %I', parent, old);
    END IF;
    EXECUTE format($$CREATE TABLE %I (
        step        double precision NOT NULL,
        grid_id     bigint           NOT NULL,
        series      bytea            NOT NULL,
        batch_id    text             NOT NULL,
        computed_at timestamptz      NOT NULL DEFAULT now()
    ) PARTITION BY LIST (batch_id)$$, parent);
    -- Stored as is: float64s do not compress, so TOAST need not try.
    EXECUTE format('ALTER TABLE %I ALTER COLUMN series SET STORAGE EXTERNAL', parent);
    EXECUTE format('COMMENT ON COLUMN %I.series IS %L', parent,
        'Every series of the cell: for each name of the batch''s series_names (batch_runs, published_batches), years float64 values, 8 big-endian bytes each.');

    IF to_regclass(old) IS NOT NULL THEN
        -- Published batches: the partitions of the old parent.
        FOR b IN EXECUTE format($$SELECT c.relname AS tbl,
                pg_get_expr(c.relpartbound, c.oid) AS bound
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(%L)$$, old) LOOP
            EXECUTE format('SELECT batch_id FROM %I LIMIT 1', b.tbl) INTO part;
            IF part IS NULL THEN
                part := substring(b.bound FROM $re$IN \('(.*)'\)$re$);
                part := replace(part, '''''', '''');
            END IF;
            EXECUTE format('ALTER TABLE %I RENAME TO %I', b.tbl, b.tbl || '_v1');
            SELECT * INTO l FROM gridbatch_convert_batch(b.tbl || '_v1', part, b.tbl, parent);
            EXECUTE format('CREATE INDEX ON %I (grid_id)', b.tbl);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES IN (%L)', parent, b.tbl, part);
            UPDATE published_batches p SET series_names = l.series_names, first_year = l.first_year, years = l.years
                WHERE p.batch_id = part;
            EXECUTE format('DROP TABLE %I', b.tbl || '_v1');
        END LOOP;
        -- Unpublished batches: their own tables, named in batch_runs.
        FOR b IN SELECT r.id, r.results_table AS tbl FROM batch_runs r
            WHERE r.kind = gridbatch_results_layout.kind AND r.results_table IS NOT NULL AND r.rows_dropped_at IS NULL
                AND to_regclass(r.results_table) IS NOT NULL
                AND NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(r.results_table)) LOOP
            EXECUTE format('ALTER TABLE %I RENAME TO %I', b.tbl, b.tbl || '_v1');
            PERFORM gridbatch_convert_batch(b.tbl || '_v1', b.id, b.tbl, parent);
            EXECUTE format('DROP TABLE %I', b.tbl || '_v1');
        END LOOP;
        EXECUTE format('DROP TABLE %I', old);
    END IF;

    -- For each (step, cell, scenario), the row of the batch published last
    -- that computed it, its series decoded once chosen (and only when read).
    -- A reader's conditions on step, grid_id and scenario (the DISTINCT ON
    -- columns) are applied below the DISTINCT ON, on each published batch's
    -- index by cell.
    EXECUTE format($$CREATE VIEW %I AS
        SELECT d.step, d.grid_id, d.scenario, d.first_year,
            gridbatch_float8s(substring(d.cell_series FROM d.start FOR d.len)) AS series, d.batch_id, d.computed_at
        FROM (SELECT DISTINCT ON (r.step, r.grid_id, s.scenario)
                r.step, r.grid_id, s.scenario, p.first_year::smallint AS first_year, r.series AS cell_series,
                (s.i - 1)::int * p.years * 8 + 1 AS start, p.years * 8 AS len, r.batch_id, r.computed_at
            FROM %I r JOIN published_batches p ON p.batch_id = r.batch_id
                CROSS JOIN LATERAL unnest(p.series_names) WITH ORDINALITY AS s(scenario, i)
            ORDER BY r.step, r.grid_id, s.scenario, p.published_at DESC) d$$, ts, parent);
    EXECUTE format('COMMENT ON VIEW %I IS %L', ts,
        'The published ' || kind || ' series: for each (step, grid_id, scenario), the series of the batch published last.');
END
$fn$;
-- +goose StatementEnd

-- Every kind laid out before this migration.
SELECT gridbatch_results_layout(substring(c.relname FROM '^(.*)_results$'))
FROM pg_class c
WHERE c.relkind = 'p' AND c.relnamespace = to_regnamespace(current_schema()) AND c.relname LIKE '%\_results';

-- +goose Down
SELECT 1;
