package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// CheckReport is what the declared checks of a kind found in a batch's own
// rows (batch.Gate runs them; the store keeps the report in
// batch_runs.checks).
type CheckReport struct {
	// Passed is true when every declared check passed.
	Passed bool `json:"passed"`
	// Declared is the checks as declared, e.g. "range: [0, 1]".
	Declared string `json:"declared"`
	// Status is the status the batch had when its checks ran: the one it
	// gets back when published despite them.
	Status string `json:"status"`
	// Checks are the outcomes, one per declared check.
	Checks    []CheckOutcome `json:"checks"`
	CheckedAt time.Time      `json:"checked_at"`
	Seconds   float64        `json:"seconds"`
}

// Failed returns the checks that failed.
func (r *CheckReport) Failed() []CheckOutcome {
	var out []CheckOutcome
	for _, c := range r.Checks {
		if !c.Passed {
			out = append(out, c)
		}
	}
	return out
}

// CheckOutcome is one declared check run on a batch's rows.
type CheckOutcome struct {
	// Check is range, max_nan, min_coverage or max_change.
	Check  string `json:"check"`
	Passed bool   `json:"passed"`
	// Text says what it found, for people, e.g. "412 values above 1, largest
	// 1.7 at cell 4553467 ssp585 2087".
	Text string `json:"text"`
	// Count of Of failed it: values (range, max_nan, max_change) or cells
	// (min_coverage, where Count is the cells computed).
	Count int64 `json:"count"`
	Of    int64 `json:"of"`
	// Examples are the worst values, worst first (at most five).
	Examples []CheckExample `json:"examples,omitempty"`
}

// CheckExample is one value a check found: its cell, series and year, the
// value and, for max_change, the published value it changed from.
type CheckExample struct {
	GridID    int64  `json:"grid_id"`
	Series    string `json:"series"`
	Year      int    `json:"year"`
	Value     Float  `json:"value"`
	Published *Float `json:"published,omitempty"`
}

// ChunkChecks is what the declared checks of a kind found in one chunk's
// values, as the worker computed them (batch.CheckChunk), kept with the
// chunk's success in chunk_runs.checks: the gate adds up those of a
// batch's chunks instead of reading its rows again.
type ChunkChecks struct {
	// Declared is the checks they were run for (model.Checks.String()):
	// the gate uses them only for the same.
	Declared string `json:"declared"`
	// Cells and Values are the chunk's cells and values (NaN included).
	Cells  int64 `json:"cells"`
	Values int64 `json:"values"`
	// NaN counts its NaN values; Above and Below its values outside the
	// declared range, when one is.
	NaN   CheckCount `json:"nan"`
	Above CheckCount `json:"above"`
	Below CheckCount `json:"below"`
}

// CheckCount is how many values a check found and the worst of them
// (CheckOutcome's examples, at most five).
type CheckCount struct {
	N        int64          `json:"n"`
	Examples []CheckExample `json:"examples,omitempty"`
}

// ChunkChecks returns what the checks declared (as model.Checks.String()
// has them) found in each of the batch's succeeded chunks, as their
// workers recorded it; ok is false when some chunk has no record for
// those checks (written without them, by a worker with other checks, or
// before they were recorded): the batch's rows must be read then.
func (e *Ending) ChunkChecks(ctx context.Context, declared string) (chunks []ChunkChecks, ok bool, err error) {
	rows, err := e.tx.Query(ctx, `SELECT checks FROM chunk_runs WHERE batch_id = $1 AND status = 'succeeded'`, e.Batch.ID)
	if err != nil {
		return nil, false, err
	}
	var raw []byte
	ok = true
	_, err = pgx.ForEachRow(rows, []any{&raw}, func() error {
		var c ChunkChecks
		if raw == nil {
			ok = false
			return nil
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			return err
		}
		if c.Declared != declared {
			ok = false
		}
		chunks = append(chunks, c)
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read the checks of the chunks of %s: %w", e.Batch.ID, err)
	}
	return chunks, ok, nil
}

// Float is a float64 whose JSON form is a number when finite and the
// string "NaN", "+Inf" or "-Inf" otherwise (JSON has no such numbers).
type Float float64

// MarshalJSON implements json.Marshaler.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte(`"` + strconv.FormatFloat(v, 'g', -1, 64) + `"`), nil
	}
	return []byte(strconv.FormatFloat(v, 'g', -1, 64)), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (f *Float) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %s", b)
	}
	*f = Float(v)
	return nil
}

// String is the value at full precision: 1.7, NaN, +Inf.
func (f Float) String() string { return strconv.FormatFloat(float64(f), 'g', -1, 64) }

// Provenance is what made a batch's values, recorded when it is planned
// (see batch.Provenance).
type Provenance struct {
	// Gridbatch is the module version and VCS revision of the binary that
	// planned the batch.
	Gridbatch BuildInfo `json:"gridbatch"`
	// Model is the model's declaration as parsed (JSON) and its digest.
	Model ModelProvenance `json:"model"`
	// Inputs is the digest of the batch's cells' declared inputs, in grid
	// order.
	Inputs InputsDigest `json:"inputs"`
	// PlannedBy names the process (host:pid) that recorded it.
	PlannedBy string    `json:"planned_by"`
	PlannedAt time.Time `json:"planned_at"`
	// Processes are the worker and model process of its chunks, read
	// from chunk_runs when shown (not stored with the rest).
	Processes []ChunkProcess `json:"processes,omitempty"`
}

// BuildInfo is a binary's version as Go's build info has it.
type BuildInfo struct {
	Version  string `json:"version"`
	Revision string `json:"revision"`
	Modified bool   `json:"modified"`
	Time     string `json:"vcs_time,omitempty"`
	Go       string `json:"go"`
}

// ModelProvenance is a model as a batch ran it.
type ModelProvenance struct {
	Kind string `json:"kind"`
	// Declaration is the model's declaration as parsed, as JSON.
	Declaration map[string]any `json:"declaration"`
	// Digest is the sha256 of Declaration's canonical JSON, lowercase hex.
	Digest string `json:"digest"`
	// Files are the sha256 of its program files (lowercase hex): the files
	// its command names that exist, and a Python model's SDK file. A
	// built-in model has none: its code is gridbatch's, at Revision.
	Files []FileDigest `json:"files"`
	// BuiltinRevision is, for a built-in model, the VCS revision of the
	// binary that holds it.
	BuiltinRevision string `json:"builtin_revision,omitempty"`
}

// FileDigest is one program file of a model.
type FileDigest struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Bytes  int64  `json:"bytes"`
}

// InputsDigest is the digest of a batch's inputs.
type InputsDigest struct {
	// SHA256 is over, for every cell of the batch in grid order, its grid
	// id (8 bytes, big-endian) and each declared input's float64 bits
	// (8 bytes, big-endian; a missing input as the bits of NaN 0x7ff8…1).
	SHA256  string   `json:"sha256"`
	Columns []string `json:"columns"`
	Cells   int64    `json:"cells"`
	// Missing counts the (cell, input) pairs without a value.
	Missing int64   `json:"missing"`
	Seconds float64 `json:"seconds"`
}

// Cells streams the batch's own rows to fn, in no order: each cell's grid
// id and values (the series of its layout back to back, Years each). With
// published, pub holds the values published for the same cell, series and
// year before this batch (NaN where there is none), or is nil for a cell
// never published; the batch's rows are then indexed by cell first, as
// publishing does. values and pub are reused for the next cell.
func (e *Ending) Cells(ctx context.Context, published bool, fn func(gridID int64, values, pub []float64) error) error {
	b := e.Batch
	table, l, err := batchRowsTable(ctx, e.tx, b.ID)
	if err != nil {
		return err
	}
	if !l.valid() {
		return fmt.Errorf("batch %s has no series layout", b.ID)
	}
	n := len(l.Names) * l.Years
	values := make([]float64, n)
	if !published {
		rows, err := e.tx.Query(ctx, `SELECT grid_id, series FROM `+ident(table))
		if err != nil {
			return fmt.Errorf("read the rows of %s: %w", b.ID, err)
		}
		defer rows.Close()
		var id int64
		var series pgtype.DriverBytes
		for rows.Next() {
			if err := rows.Scan(&id, &series); err != nil {
				return err
			}
			if err := l.checkRow(series); err != nil {
				return fmt.Errorf("cell %d of batch %s: %w", id, b.ID, err)
			}
			decode(values, series)
			if err := fn(id, values, nil); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	if err := indexRows(ctx, e.tx, b.ID, table); err != nil {
		return err
	}
	layouts := map[string]SeriesLayout{}
	lrows, err := e.tx.Query(ctx, `SELECT batch_id, series_names, first_year, years FROM published_batches
		WHERE kind = $1 AND series_names IS NOT NULL`, b.Kind)
	if err != nil {
		return err
	}
	var pid string
	var pl SeriesLayout
	if _, err := pgx.ForEachRow(lrows, append([]any{&pid}, pl.scan()...), func() error {
		layouts[pid] = pl
		return nil
	}); err != nil {
		return err
	}
	rows, err := e.tx.Query(ctx, `SELECT r.grid_id, r.series, p.batch_id, p.series FROM `+ident(table)+` r
		LEFT JOIN LATERAL (SELECT x.batch_id, x.series FROM `+ident(b.Kind+"_results")+` x
			JOIN published_batches q ON q.batch_id = x.batch_id
			WHERE x.step = r.step AND x.grid_id = r.grid_id AND x.batch_id <> $1
			ORDER BY q.published_at DESC LIMIT 1) p ON true`, b.ID)
	if err != nil {
		return fmt.Errorf("read the rows of %s against the published values: %w", b.ID, err)
	}
	defer rows.Close()
	pub := make([]float64, n)
	raw := make([]float64, 0, n)
	var id int64
	var series, pseries pgtype.DriverBytes
	var pbatch *string
	for rows.Next() {
		if err := rows.Scan(&id, &series, &pbatch, &pseries); err != nil {
			return err
		}
		if err := l.checkRow(series); err != nil {
			return fmt.Errorf("cell %d of batch %s: %w", id, b.ID, err)
		}
		decode(values, series)
		var p []float64
		if pbatch != nil {
			pl, ok := layouts[*pbatch]
			if !ok || pl.checkRow(pseries) != nil {
				return fmt.Errorf("cell %d: published batch %s has no recorded layout, or a row that does not fit it", id, *pbatch)
			}
			p = pub
			for i, name := range l.Names {
				dst := pub[i*l.Years : (i+1)*l.Years]
				j := pl.index(name)
				if j < 0 {
					fillNaN(dst)
					continue
				}
				raw = pl.series(raw[:0], pseries, j)
				for y := range dst {
					k := l.FirstYear + y - pl.FirstYear
					if k >= 0 && k < len(raw) {
						dst[y] = raw[k]
					} else {
						dst[y] = math.NaN()
					}
				}
			}
		}
		if err := fn(id, values, p); err != nil {
			return err
		}
	}
	return rows.Err()
}

// decode reads the big-endian float64s of b into dst (of len(b)/8).
func decode(dst []float64, b []byte) {
	for i := range dst {
		dst[i] = math.Float64frombits(binary.BigEndian.Uint64(b[8*i:]))
	}
}

func fillNaN(v []float64) {
	for i := range v {
		v[i] = math.NaN()
	}
}

// Hold ends the batch held: not published, r saying why.
func (e *Ending) Hold(ctx context.Context, r CheckReport) error {
	b, err := scanBatch(e.tx.QueryRow(ctx, `UPDATE batch_runs SET status = 'held', checks = $2 WHERE id = $1 RETURNING `+batchColumns, e.Batch.ID, r))
	if err != nil {
		return fmt.Errorf("hold batch %s: %w", e.Batch.ID, err)
	}
	e.Batch = b
	return nil
}

// Record keeps r, the report of checks that passed, with the batch.
func (e *Ending) Record(ctx context.Context, r CheckReport) error {
	b, err := scanBatch(e.tx.QueryRow(ctx, `UPDATE batch_runs SET checks = $2 WHERE id = $1 RETURNING `+batchColumns, e.Batch.ID, r))
	if err != nil {
		return err
	}
	e.Batch = b
	return nil
}

// PublishDespite publishes the batch although its checks failed (r),
// recording why and by whom; a held batch gets back the status it had
// when its checks ran.
func (e *Ending) PublishDespite(ctx context.Context, r CheckReport, reason, by string) error {
	status := e.Batch.Status
	if status == StatusHeld && r.Status != "" {
		status = r.Status
	}
	b, err := scanBatch(e.tx.QueryRow(ctx, `UPDATE batch_runs SET status = $2, checks = $3, publish_reason = $4, published_by = $5
		WHERE id = $1 RETURNING `+batchColumns, e.Batch.ID, status, r, reason, by))
	if err != nil {
		return err
	}
	e.Batch = b
	return e.Publish(ctx)
}

// SetProvenance records a batch's provenance, once: a re-plan keeps the
// first.
func (s *Store) SetProvenance(ctx context.Context, id string, p Provenance) error {
	_, err := s.pool.Exec(ctx, `UPDATE batch_runs SET provenance = $2 WHERE id = $1 AND provenance IS NULL`, id, p)
	return err
}

// ChunkProcess is a process that computed chunks of a batch: the worker
// (host:pid) and the model process's pid.
type ChunkProcess struct {
	Worker   string `json:"worker"`
	ModelPID int    `json:"model_pid"`
	Chunks   int    `json:"chunks"`
}

// ChunkProcesses returns the processes that computed the batch's
// succeeded chunks, most chunks first.
func (s *Store) ChunkProcesses(ctx context.Context, id string) ([]ChunkProcess, error) {
	rows, err := s.pool.Query(ctx, `SELECT coalesce(worker, ''), coalesce(model_pid, 0), count(*) FROM chunk_runs
		WHERE batch_id = $1 AND status = 'succeeded' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2`, id)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[ChunkProcess])
}

// IndexBatchRows indexes batch id's own rows by cell, as publishing does,
// so that reading them in grid order (Export) walks the index instead of
// sorting them: about 0.4 s for 480,000 cells here, against seconds of
// sorting for every read.
func (s *Store) IndexBatchRows(ctx context.Context, id string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		table, _, err := batchRowsTable(ctx, tx, id)
		if err != nil {
			return err
		}
		return indexRows(ctx, tx, id, table)
	})
}
