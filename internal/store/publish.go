package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// createBatchTable makes the table of a new batch's rows, in the
// transaction that records the batch: the columns of <kind>_results (a row
// per cell, SeriesLayout), a CHECK on batch_id (so that publishing
// attaches it as a partition without scanning it) and batch_id's default.
// No index while chunks write into it. Rows of up to 8 KiB stay in the
// table's pages (toast_tuple_target), so that a layout a little over the
// default 2 KiB does not send every row's series to TOAST.
func createBatchTable(ctx context.Context, tx pgx.Tx, kind, batchID string) error {
	table, err := ResultsTable(kind)
	if err != nil {
		return err
	}
	parent := kind + "_results"
	var name string
	if err := tx.QueryRow(ctx, `SELECT gridbatch_batch_table($1)`, batchID).Scan(&name); err != nil {
		return err
	}
	lit := quoteLiteral(batchID)
	_, err = tx.Exec(ctx, `CREATE TABLE `+ident(name)+` (LIKE `+ident(parent)+` INCLUDING DEFAULTS INCLUDING STORAGE, CHECK (batch_id = `+lit+`))
			WITH (toast_tuple_target = 8160);
		ALTER TABLE `+ident(name)+` ALTER COLUMN batch_id SET DEFAULT `+lit)
	if err != nil && IsSchemaError(err) {
		return fmt.Errorf("the results of kind %s have no table (%s, %s: %w); run 'enqueuer migrate' with the models file that declares it", kind, parent, table, err)
	}
	return err
}

// Decide is the decision whether a batch's rows are published, made in the
// transaction that ends it (FinishBatch), heals it (HealEndedBatch) or
// publishes it at an operator's request (Publish), through e. The batch
// package makes it (batch.Gate); the store only runs the SQL.
type Decide func(ctx context.Context, e *Ending) error

// Ending is a batch whose publication is being decided, inside the
// transaction that holds its row lock (FOR UPDATE).
type Ending struct {
	tx pgx.Tx
	// Batch is the batch as the transaction has it so far.
	Batch Batch
	// Before is its status before HealEndedBatch's transaction; empty
	// otherwise.
	Before    string
	published bool
}

// Publish makes the batch's rows the published values of its kind (see
// publish) and updates e.Batch.
func (e *Ending) Publish(ctx context.Context) error {
	b, err := publish(ctx, e.tx, e.Batch)
	if err != nil {
		return err
	}
	e.Batch, e.published = b, true
	return nil
}

// publish makes batch b's rows the published values of <kind>_timeseries,
// inside tx (which holds b's row lock): it indexes the batch's table by
// cell, attaches it to <kind>_results and records the publication with the
// batch's layout, so that for every cell it computed, the view shows its
// series from the commit on.
// Readers see all of it or none of it. Only Ending.Publish calls it: what
// publishes a batch is decided in one place, batch.Gate.
func publish(ctx context.Context, tx pgx.Tx, b Batch) (Batch, error) {
	table, _, err := batchRowsTable(ctx, tx, b.ID)
	if errors.Is(err, ErrNoSeries) {
		return b, fmt.Errorf("batch %s has no rows to publish (they were dropped by retention, or it predates per-batch results)", b.ID)
	}
	if err != nil {
		return b, err
	}
	if !b.Layout.valid() {
		return b, fmt.Errorf("batch %s has no series layout to publish its rows with", b.ID)
	}
	t := ident(table)
	if err := indexRows(ctx, tx, b.ID, table); err != nil {
		return b, err
	}
	attached, err := isAttached(ctx, tx, table)
	if err != nil {
		return b, err
	}
	if !attached {
		if _, err := tx.Exec(ctx, `ALTER TABLE `+ident(b.Kind+"_results")+` ATTACH PARTITION `+t+` FOR VALUES IN (`+quoteLiteral(b.ID)+`)`); err != nil {
			return b, fmt.Errorf("attach the rows of %s: %w", b.ID, err)
		}
	}
	if _, err := tx.Exec(ctx, `INSERT INTO published_batches (kind, batch_id, series_names, first_year, years) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (batch_id) DO UPDATE SET published_at = clock_timestamp()`, b.Kind, b.ID, b.Layout.Names, b.Layout.FirstYear, b.Layout.Years); err != nil {
		return b, err
	}
	return scanBatch(tx.QueryRow(ctx, `UPDATE batch_runs SET published_at = clock_timestamp() WHERE id = $1 RETURNING `+batchColumns, b.ID))
}

// indexRows indexes the own rows of batch id (its table) by cell, once.
func indexRows(ctx context.Context, tx pgx.Tx, id, table string) error {
	// The index's sort fits in memory: a 480,000-cell batch's takes about
	// 20 MB.
	if _, err := tx.Exec(ctx, `SET LOCAL maintenance_work_mem = '256MB'`); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE INDEX IF NOT EXISTS `+ident(table+"_cell")+` ON `+ident(table)+` (grid_id)`); err != nil {
		return fmt.Errorf("index the rows of %s: %w", id, err)
	}
	return nil
}

// Publish runs decide on batch id, as it stands, in a transaction that
// holds its row lock: an operator's 'enqueuer publish'. It returns the
// batch as decide left it.
func (s *Store) Publish(ctx context.Context, id string, decide Decide) (Batch, error) {
	var b Batch
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		cur, err := scanBatch(tx.QueryRow(ctx, `SELECT `+batchColumns+` FROM batch_runs WHERE id = $1 FOR UPDATE`, id))
		if err != nil {
			return err
		}
		e := &Ending{tx: tx, Batch: cur}
		err = decide(ctx, e)
		b = e.Batch
		return err
	})
	return b, err
}

// ReadBatchSeries returns the series batch batchID computed for the cell,
// from the batch's own rows, published or not. It returns an error wrapping
// ErrNoSeries when the batch computed none, and ErrBatchNotFound.
func (s *Store) ReadBatchSeries(ctx context.Context, batchID string, step float64, gridID int64, scenario string) (StoredSeries, error) {
	table, _, err := batchRowsTable(ctx, s.pool, batchID)
	if err != nil {
		return StoredSeries{}, err
	}
	return s.readSeries(ctx, "series of batch "+batchID, `SELECT r.series, r.batch_id, r.computed_at, b.series_names, b.first_year, b.years
		FROM `+ident(table)+` r JOIN batch_runs b ON b.id = r.batch_id
		WHERE r.step = $1 AND r.grid_id = $2 AND $3 = ANY(b.series_names)`, step, gridID, scenario)
}

// Pruned is a batch whose own rows retention dropped, or would drop.
type Pruned struct {
	ID, Kind, Status string
	StartedAt        time.Time
	Published        bool
}

// RetentionCandidate is an ended batch whose own rows are still there, with
// the facts retention decides on (batch.Retain).
type RetentionCandidate struct {
	Pruned
	// Showing: the published values still show some of its rows. A
	// published batch stops showing once a batch published after it
	// succeeded over a bbox holding its own at the same step (every one of
	// its cells has a newer value): dropping it changes no published value.
	Showing bool
}

// RetentionCandidates returns the ended batches of kind (every kind when
// empty) whose own rows have not been dropped, in no particular order.
// Which of them lose their rows is batch.Retain's decision; DropBatchRows
// drops them.
func (s *Store) RetentionCandidates(ctx context.Context, kind string) ([]RetentionCandidate, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT b.id, b.kind, b.status, b.started_at, p.published_at IS NOT NULL AS published,
			p.published_at IS NOT NULL AND NOT EXISTS (
				SELECT 1 FROM published_batches q JOIN batch_runs n ON n.id = q.batch_id
				WHERE q.kind = b.kind AND q.published_at > p.published_at AND n.status = 'succeeded'
					AND n.step = b.step AND n.lon_min <= b.lon_min AND n.lat_min <= b.lat_min
					AND n.lon_max >= b.lon_max AND n.lat_max >= b.lat_max) AS showing
		FROM batch_runs b LEFT JOIN published_batches p ON p.batch_id = b.id
		WHERE ($1 = '' OR b.kind = $1) AND b.status <> 'running'
			AND b.results_table IS NOT NULL AND b.rows_dropped_at IS NULL`, kind)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[RetentionCandidate])
}

// DropBatchRows drops one ended batch's own rows, with DROP TABLE (never
// row by row), and records when: a published one is detached first,
// concurrently, so readers of the view are never blocked. Which batches
// lose their rows is decided by batch.Retain.
func (s *Store) DropBatchRows(ctx context.Context, p Pruned) error {
	table, _, err := batchRowsTable(ctx, s.pool, p.ID)
	if err != nil {
		return err
	}
	attached, err := isAttached(ctx, s.pool, table)
	if err != nil {
		return err
	}
	if attached {
		if _, err := s.pool.Exec(ctx, `ALTER TABLE `+ident(p.Kind+"_results")+` DETACH PARTITION `+ident(table)+` CONCURRENTLY`); err != nil {
			return fmt.Errorf("detach the rows of %s: %w", p.ID, err)
		}
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+ident(table)); err != nil {
			return fmt.Errorf("drop the rows of %s: %w", p.ID, err)
		}
		_, err := tx.Exec(ctx, `UPDATE batch_runs SET rows_dropped_at = now() WHERE id = $1`, p.ID)
		return err
	})
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

// quoteLiteral quotes s as an SQL string literal (for DDL, which takes no
// parameters).
func quoteLiteral(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// BatchRows counts the series (one per cell and scenario, as
// <kind>_timeseries has rows) that batch batchID stored, published or not
// (0 once retention dropped them).
func (s *Store) BatchRows(ctx context.Context, batchID string) (int64, error) {
	table, l, err := batchRowsTable(ctx, s.pool, batchID)
	if errors.Is(err, ErrNoSeries) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n int64
	err = s.pool.QueryRow(ctx, `SELECT count(*) FROM `+ident(table)).Scan(&n)
	return n * int64(len(l.Names)), err
}

// querier is what a pool and a transaction share for one-row reads.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// batchRowsTable returns the table of batch batchID's own rows and their
// layout. The error wraps ErrBatchNotFound for an unknown batch, and
// ErrNoSeries when it has none: retention dropped them, or the batch
// predates per-batch results.
func batchRowsTable(ctx context.Context, q querier, batchID string) (string, SeriesLayout, error) {
	var table *string
	var dropped *time.Time
	var l SeriesLayout
	err := q.QueryRow(ctx, `SELECT results_table, rows_dropped_at, series_names, first_year, years FROM batch_runs WHERE id = $1`, batchID).
		Scan(append([]any{&table, &dropped}, l.scan()...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", l, fmt.Errorf("%w: %s", ErrBatchNotFound, batchID)
	}
	if err != nil {
		return "", l, err
	}
	if table == nil || dropped != nil {
		return "", l, fmt.Errorf("batch %s's own rows are gone (dropped by retention, GRIDBATCH_KEEP_BATCHES): %w", batchID, ErrNoSeries)
	}
	return *table, l, nil
}

// isAttached reports whether table is a partition, that is a published
// batch's rows.
func isAttached(ctx context.Context, q querier, table string) (bool, error) {
	var attached bool
	err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass($1))`, table).Scan(&attached)
	return attached, err
}

// Publication says, for people, whether the batch's values are the
// published ones of its kind, with times in RFC 3339.
func (b Batch) Publication() string {
	return b.PublicationWith(func(t time.Time) string { return t.UTC().Format(time.RFC3339) })
}

// PublicationWith is Publication with times printed by at.
func (b Batch) PublicationWith(at func(time.Time) string) string {
	switch {
	case b.PublishedAt != nil:
		s := "yes, at " + at(*b.PublishedAt)
		if b.PublishReason != nil {
			s += ", despite its failed checks"
		}
		if b.RowsDroppedAt != nil {
			s += "; since superseded, its own rows dropped at " + at(*b.RowsDroppedAt)
		}
		return s
	case !b.Ended():
		return "not yet: published when it succeeds"
	case b.RowsDroppedAt != nil:
		return "no; its own rows were dropped by retention at " + at(*b.RowsDroppedAt)
	case b.Status == StatusHeld:
		return fmt.Sprintf("no: held, its declared checks failed; 'enqueuer publish %s --despite-checks --reason TEXT' publishes it", b.ID)
	}
	return fmt.Sprintf("no (it ended %s); 'enqueuer publish %s' publishes what it computed", b.Status, b.ID)
}

// DropAllResults drops the own rows of every ended batch and every
// publication, so the published values are empty: a clean start for each
// run of a benchmark. Running batches keep their rows.
func (s *Store) DropAllResults(ctx context.Context) error {
	rows, err := s.pool.Query(ctx, `SELECT id, kind, status, started_at, published_at IS NOT NULL FROM batch_runs
		WHERE status <> 'running' AND results_table IS NOT NULL AND rows_dropped_at IS NULL`)
	if err != nil {
		return err
	}
	drop, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Pruned])
	if err != nil {
		return err
	}
	for _, p := range drop {
		if err := s.DropBatchRows(ctx, p); err != nil {
			return err
		}
	}
	_, err = s.pool.Exec(ctx, `DELETE FROM published_batches`)
	return err
}
