-- +goose Up
-- cell_params holds the model inputs of every seeded cell, one row per
-- (grid step, cell). grid_id is row·round(360/step) + col on the global lattice.
CREATE TABLE cell_params (
    step    double precision NOT NULL,
    grid_id bigint           NOT NULL,
    lat     double precision NOT NULL,
    lon     double precision NOT NULL,
    mu0     double precision NOT NULL,
    sigma   double precision NOT NULL,
    xi      double precision NOT NULL,
    PRIMARY KEY (step, grid_id)
);

-- batch_runs is one row per batch: its plan, its status and, once ended, its figures.
CREATE TABLE batch_runs (
    id                    text PRIMARY KEY,
    kind                  text             NOT NULL,
    status                text             NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'succeeded', 'partial', 'failed', 'timed_out', 'cancelled')),
    step                  double precision NOT NULL,
    lon_min               double precision NOT NULL,
    lat_min               double precision NOT NULL,
    lon_max               double precision NOT NULL,
    lat_max               double precision NOT NULL,
    chunk_size            integer          NOT NULL,
    total_chunks          integer          NOT NULL,
    total_cells           bigint           NOT NULL,
    -- planned_chunks counts chunk rows written by the plan; the plan is done when it equals total_chunks.
    planned_chunks        integer          NOT NULL DEFAULT 0,
    -- done_chunks counts chunks with a final outcome; each chunk adds 1 exactly once.
    done_chunks           integer          NOT NULL DEFAULT 0,
    completed_chunks      integer          NOT NULL DEFAULT 0,
    failed_chunks         integer          NOT NULL DEFAULT 0,
    timed_out_chunks      integer          NOT NULL DEFAULT 0,
    cancelled_chunks      integer          NOT NULL DEFAULT 0,
    completed_cells       bigint           NOT NULL DEFAULT 0,
    failed_cells          bigint           NOT NULL DEFAULT 0,
    timed_out_cells       bigint           NOT NULL DEFAULT 0,
    success_rate          double precision,
    avg_task_seconds      double precision,
    peak_worker_rss_bytes bigint,
    db_conn_errors        bigint           NOT NULL DEFAULT 0,
    trigger               text             NOT NULL DEFAULT 'cli',
    scheduled_for         timestamptz,
    error                 text,
    started_at            timestamptz      NOT NULL DEFAULT now(),
    deadline_at           timestamptz      NOT NULL,
    lock_expires_at       timestamptz      NOT NULL,
    ended_at              timestamptz,
    duration_seconds      double precision
);
CREATE INDEX batch_runs_kind_started ON batch_runs (kind, started_at DESC);
CREATE INDEX batch_runs_running ON batch_runs (status) WHERE status = 'running';

-- chunk_runs is one row per chunk of a batch, with its final outcome.
CREATE TABLE chunk_runs (
    batch_id         text        NOT NULL REFERENCES batch_runs (id) ON DELETE CASCADE,
    chunk            integer     NOT NULL,
    cells            integer     NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'succeeded', 'failed', 'timed_out', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    task_seconds     double precision,
    worker           text,
    worker_rss_bytes bigint,
    error            text,
    finished_at      timestamptz,
    PRIMARY KEY (batch_id, chunk)
);
CREATE INDEX chunk_runs_open ON chunk_runs (batch_id) WHERE status = 'pending';

-- ph_timeseries and hazard_timeseries hold one 80-value series per (cell, scenario);
-- series[1] is first_year. A re-run rewrites the same row.
CREATE TABLE ph_timeseries (
    step        double precision   NOT NULL,
    grid_id     bigint             NOT NULL,
    scenario    text               NOT NULL,
    first_year  smallint           NOT NULL,
    series      double precision[] NOT NULL,
    batch_id    text               NOT NULL,
    computed_at timestamptz        NOT NULL DEFAULT now(),
    PRIMARY KEY (step, grid_id, scenario)
);

CREATE TABLE hazard_timeseries (LIKE ph_timeseries INCLUDING ALL);

-- dead_letters records every task that reached asynq's archive, durably.
CREATE TABLE dead_letters (
    task_id     text        PRIMARY KEY,
    task_type   text        NOT NULL,
    queue       text        NOT NULL,
    batch_id    text,
    chunk       integer,
    payload     bytea       NOT NULL,
    last_error  text        NOT NULL,
    retries     integer     NOT NULL,
    failed_at   timestamptz NOT NULL,
    requeued_at timestamptz,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_batch ON dead_letters (batch_id, chunk);

-- +goose Down
DROP TABLE dead_letters, hazard_timeseries, ph_timeseries, chunk_runs, batch_runs, cell_params;
