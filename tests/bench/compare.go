package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Comparison is figures 9 and 10: the pipeline of this tree against the one
// of Config.Baseline, built from git, batch for batch on fresh schemas; the
// time this tree's batches spend publishing; and reading one published
// cell with Config.Retain batches' rows in the schema.
type Comparison struct {
	// Baseline is the revision as given, BaselineDesc its short hash and
	// subject, BuildSeconds the time its binaries took to build.
	Baseline, BaselineDesc string
	BuildSeconds           float64
	// BaselineSettings and Settings are the comparison workers'
	// --print-config of the settings the table reports, of each side.
	BaselineSettings, Settings string
	// Runs are the measured batches in order: baseline, this tree,
	// baseline, … (Repeat pairs), each in a fresh schema of its own.
	Runs []CompareRun
	// Ratios are this tree's cells/s over the baseline's of each pair;
	// Ratio their median (the target's figure). RecordedRatio is the same
	// median on the recorded durations (started_at to ended_at, which end
	// when the finish transaction begins).
	Ratios        []float64
	Ratio         float64
	RecordedRatio float64
	// Retained are the further batches of this tree run into the schema of
	// its last pair, so that it holds Config.Retain batches' rows.
	Retained []CompareRun
	// Results is figure 10, read from that schema.
	Results *ResultsLatency
}

// CompareRun is one batch of the comparison.
type CompareRun struct {
	PipelineFigure
	Side        string // "baseline" or "this tree"
	Pair        int    // 1-based; 0 for a retained batch
	Schema      string
	SeedSeconds float64 // `enqueuer seed` of the side's binary, before the batch
	// Before is how many batches' rows the schema held when it started.
	Before int
}

// ResultsLatency is figure 10: store.ReadSeries (what `enqueuer results`
// runs for the published values) on a warm pool, and the enqueuer binary
// end to end, over random cells of the grid.
type ResultsLatency struct {
	Batches       int   // batches whose rows the schema holds, all published
	CellsPerBatch int64 // cells of each
	Query         Latency
	Binary        Latency
	// View is one cell's series read from the view ph_timeseries, as a
	// reader such as the users' site API does (decoded in SQL).
	View Latency
	// Latest is the batch published last: every read must return its row.
	Latest string
	// Plan is EXPLAIN ANALYZE's summary of one read (its plan's top node
	// and the execution time).
	Plan string
}

const (
	sideBaseline = "baseline"
	sideThisTree = "this tree"
)

// buildBaseline builds the binaries of Config.Baseline from git: a
// temporary worktree, `go build -o DIR/ ./cmd/...`, the worktree removed.
// It returns the folder of the binaries; the caller removes it.
func (h *harness) buildBaseline(ctx context.Context, c *Comparison) (string, error) {
	root := h.cfg.RepoRoot
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	desc, err := git("log", "-1", "--format=%h %s", h.cfg.Baseline)
	if err != nil {
		return "", err
	}
	c.BaselineDesc = desc
	tmp, err := os.MkdirTemp("", "gridbatch-baseline-")
	if err != nil {
		return "", err
	}
	src, bin := filepath.Join(tmp, "src"), filepath.Join(tmp, "bin")
	if _, err := git("worktree", "add", "--detach", src, h.cfg.Baseline); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	defer func() {
		_, _ = git("worktree", "remove", "--force", src)
		_, _ = git("worktree", "prune")
	}()
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator), "./cmd/...")
	cmd.Dir = src
	cmd.Env = h.cfg.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("build %s: %w\n%s", h.cfg.Baseline, err, out)
	}
	c.BuildSeconds = time.Since(start).Seconds()
	h.logf("baseline %s built in %.0fs", desc, c.BuildSeconds)
	return bin, nil
}

// schemaURL is the run's database URL with search_path set to schema.
func schemaURL(base, schema string) (string, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("bench: the comparison needs a postgres:// URL to set search_path in, not %q", base)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// abSide is one pipeline of the comparison.
type abSide struct {
	name string
	bin  string
}

// compareEnv is the environment of a comparison binary on schema url: no
// models file (the baseline has none), the run's worker settings.
func (h *harness) compareEnv(dbURL string, worker bool) []string {
	env := append([]string{}, h.cfg.Env...)
	env = append(env, "GRIDBATCH_REDIS_URL="+h.cfg.RedisURL, "GRIDBATCH_DATABASE_URL="+dbURL, "GRIDBATCH_LOG_FORMAT=json", "GRIDBATCH_MODELS_FILE=")
	if worker {
		env = append(env, "GRIDBATCH_HTTP_ADDR=127.0.0.1:0", "GRIDBATCH_LOG_LEVEL=debug")
		env = append(env, h.cfg.WorkerEnv...)
	}
	return env
}

// compare runs figures 9 and 10 with the baseline's binaries in bin. No
// other worker may be running.
func (h *harness) compare(ctx context.Context, c *Comparison, bin string) error {
	if h.cfg.Kind != grid.KindPH {
		return fmt.Errorf("bench: the comparison runs kind ph (the baseline's), not %s", h.cfg.Kind)
	}
	var base string
	if err := h.db.QueryRow(ctx, `SELECT current_schema()`).Scan(&base); err != nil {
		return err
	}
	keys := []string{"GRIDBATCH_CONCURRENCY", "GRIDBATCH_TASK_CHECK_INTERVAL", "GRIDBATCH_DB_MAX_CONNS", "GRIDBATCH_GC_PERCENT"}
	var treeOut string
	for _, side := range []struct {
		bin      string
		settings *string
	}{{bin, &c.BaselineSettings}, {h.cfg.BinDir, &c.Settings}} {
		out, err := h.output(ctx, filepath.Join(side.bin, "worker"), h.compareEnv(h.cfg.DatabaseURL, true), "--print-config")
		if err != nil {
			return fmt.Errorf("worker --print-config: %w", err)
		}
		*side.settings, treeOut = pickSettings(out, keys...), out
	}
	_, v, _ := strings.Cut(pickSettings(treeOut, "GRIDBATCH_CONCURRENCY"), "=")
	if h.compareConcurrency, _ = strconv.Atoi(v); h.compareConcurrency < 1 {
		return fmt.Errorf("bench: this tree's worker prints no GRIDBATCH_CONCURRENCY: %q", c.Settings)
	}
	sides := []abSide{{sideBaseline, bin}, {sideThisTree, h.cfg.BinDir}}
	var kept string
	defer func() {
		h.killWorkers()
		if kept != "" {
			_, _ = h.db.Exec(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+ident(kept)+` CASCADE`)
		}
	}()
	for i := range h.cfg.Repeat {
		var pair [2]CompareRun
		for j, side := range sides {
			keep := side.name == sideThisTree && i == h.cfg.Repeat-1 && h.cfg.Retain > 0
			schema := fmt.Sprintf("%s_%s%d", base, map[string]string{sideBaseline: "base", sideThisTree: "tree"}[side.name], i+1)
			if keep {
				kept = schema
			}
			r, err := h.compareRun(ctx, side, schema, i+1, keep)
			if err != nil {
				return err
			}
			h.logf("compare pair %d, %s: %s cells in %.2fs (recorded %.2fs, finish %s): %.0f cells/s; CPU busy %.0f%%, core-s: PostgreSQL %.1f (sessions %.1f), workers %.1f, machine %.1f; WAL %d MiB",
				i+1, side.name, count(float64(r.Cells)), r.Seconds, r.RecordedSeconds, finishText(r.FinishSeconds), r.CellsPerSecond,
				100*r.CPUBusy, r.CPU.Postgres, r.CPU.PostgresSessions, r.CPU.Workers, r.CPU.Machine, r.WALBytes>>20)
			pair[j] = r
			c.Runs = append(c.Runs, r)
		}
		c.Ratios = append(c.Ratios, pair[1].CellsPerSecond/pair[0].CellsPerSecond)
	}
	c.Ratio = median(c.Ratios)
	var rec []float64
	for i := 0; i+1 < len(c.Runs); i += 2 {
		rec = append(rec, c.Runs[i].RecordedSeconds/c.Runs[i+1].RecordedSeconds)
	}
	c.RecordedRatio = median(rec)
	if kept == "" {
		return nil
	}
	// The schema of the last pair keeps its batch; its workers still run.
	dbURL, err := schemaURL(h.cfg.DatabaseURL, kept)
	if err != nil {
		return err
	}
	for n := 1; n < h.cfg.Retain; n++ {
		if err := h.checkpoint(ctx); err != nil {
			return err
		}
		r, err := h.compareBatch(ctx, sides[1], kept, dbURL)
		if err != nil {
			return err
		}
		r.Before = n
		h.logf("retained: batch %d of %d in %s: %.2fs, finish %s", n+1, h.cfg.Retain, kept, r.Seconds, finishText(r.FinishSeconds))
		c.Retained = append(c.Retained, r)
	}
	if err := h.stopWorkers(); err != nil {
		return err
	}
	rl, err := h.resultsLatency(ctx, dbURL)
	if err != nil {
		return err
	}
	c.Results = &rl
	return nil
}

func finishText(s float64) string {
	if s < 0 {
		return "not logged"
	}
	return fmt.Sprintf("%.2fs", s)
}

// checkpoint gives a run a fresh start: a checkpoint (so that it pays for
// no earlier run's dirty pages) and no autovacuum running.
func (h *harness) checkpoint(ctx context.Context) error {
	_, _ = h.db.Exec(ctx, `CHECKPOINT`)
	return h.quiesce(ctx)
}

// compareRun makes a fresh schema with the side's own `enqueuer migrate`,
// seeds it with its `enqueuer seed`, starts the side's workers on it and
// measures one batch at Config.Step. Unless keep, it stops the workers and
// drops the schema afterwards.
func (h *harness) compareRun(ctx context.Context, side abSide, schema string, pair int, keep bool) (_ CompareRun, err error) {
	if _, err := h.db.Exec(ctx, `CREATE SCHEMA `+ident(schema)); err != nil {
		return CompareRun{}, err
	}
	defer func() {
		if err != nil {
			h.killWorkers()
		}
		if !keep {
			_, _ = h.db.Exec(context.WithoutCancel(ctx), `DROP SCHEMA IF EXISTS `+ident(schema)+` CASCADE`)
		}
	}()
	dbURL, err := schemaURL(h.cfg.DatabaseURL, schema)
	if err != nil {
		return CompareRun{}, err
	}
	enq := filepath.Join(side.bin, "enqueuer")
	env := h.compareEnv(dbURL, false)
	if _, err := h.output(ctx, enq, env, "migrate"); err != nil {
		return CompareRun{}, fmt.Errorf("%s: %w", side.name, err)
	}
	start := time.Now()
	if _, err := h.output(ctx, enq, env, "seed", "--bbox", h.cfg.BBox.String(), "--step", stepStr(h.cfg.Step)); err != nil {
		return CompareRun{}, fmt.Errorf("%s: %w", side.name, err)
	}
	seeded := time.Since(start).Seconds()
	if _, err := h.db.Exec(ctx, `VACUUM (ANALYZE) `+ident(schema)+`.cell_params`); err != nil {
		return CompareRun{}, fmt.Errorf("vacuum %s.cell_params: %w", schema, err)
	}
	if err := h.rdb.FlushDB(ctx).Err(); err != nil {
		return CompareRun{}, err
	}
	for w := range h.cfg.Workers {
		name := fmt.Sprintf("compare-%s-%d-worker-%d", strings.ReplaceAll(side.name, " ", "-"), pair, w+1)
		p, err := h.startWorkerWith(ctx, name, filepath.Join(side.bin, "worker"), h.compareEnv(dbURL, true))
		if err != nil {
			return CompareRun{}, fmt.Errorf("%s: %w", side.name, err)
		}
		h.workers = append(h.workers, p)
	}
	if err := h.checkpoint(ctx); err != nil {
		return CompareRun{}, err
	}
	r, err := h.compareBatch(ctx, side, schema, dbURL)
	if err != nil {
		return r, err
	}
	r.Pair, r.SeedSeconds = pair, seeded
	if !keep {
		if err := h.stopWorkers(); err != nil {
			return r, err
		}
	}
	return r, nil
}

// compareBatch runs one ph batch at Config.Step with the side's `enqueuer
// run --wait` through the running workers and measures it as pipeline
// does. Its time runs from the batch's started_at to the workers' "batch
// finished" line, logged after the finish transaction commits (for this
// tree, after the batch's publication); the recorded duration is kept
// beside it.
func (h *harness) compareBatch(ctx context.Context, side abSide, schema, dbURL string) (CompareRun, error) {
	r := CompareRun{Side: side.name, Schema: schema}
	if err := h.db.QueryRow(ctx, `SELECT count(*) FROM `+ident(schema)+`.batch_runs`).Scan(&r.Before); err != nil {
		return r, err
	}
	workers := h.workers
	cpu := readCPU()
	meter := h.startCPU(ctx)
	workerCPU := make([]time.Duration, len(workers))
	for i, w := range workers {
		workerCPU[i], _ = procCPU(w.pid())
	}
	wal := h.walBytes(ctx)
	before := h.commandStats(ctx)
	waits := h.sampleWaits(ctx, "gridbatch-worker")
	args := []string{"run", "--kind", grid.KindPH, "--bbox", h.cfg.BBox.String(), "--step", stepStr(h.cfg.Step),
		"--chunk-size", strconv.Itoa(h.cfg.ChunkSize), "--wait", "--progress-interval", "10s"}
	start := time.Now()
	out, enqCPU, err := h.outputCPU(ctx, filepath.Join(side.bin, "enqueuer"), h.compareEnv(dbURL, false), args...)
	r.WallSeconds = time.Since(start).Seconds()
	if err != nil {
		return r, fmt.Errorf("%s batch: %w", side.name, err)
	}
	used := meter.stop(ctx, h)
	r.Waits = waits.result(12)
	used.Enqueuer = enqCPU.Seconds()
	for i, w := range workers {
		c, _ := procCPU(w.pid())
		used.Workers += (c - workerCPU[i]).Seconds()
	}
	r.BatchID, _, _ = strings.Cut(out, "\n")
	calls, _ := h.commandStats(ctx).sub(before, "evalsha")
	var (
		status    string
		startedAt time.Time
		recorded  *float64
		lastChunk *time.Time
	)
	// Raw SQL on the bench's own pool, the same for both sides: the
	// baseline's schema is an older build's, which this build's store is
	// not meant to read.
	s := ident(schema)
	err = h.db.QueryRow(ctx, `SELECT b.status, b.total_cells, b.total_chunks, b.started_at, b.duration_seconds,
		(SELECT max(finished_at) FROM `+s+`.chunk_runs c WHERE c.batch_id = b.id)
		FROM `+s+`.batch_runs b WHERE b.id = $1`, r.BatchID).Scan(&status, &r.Cells, &r.Chunks, &startedAt, &recorded, &lastChunk)
	if err != nil {
		return r, fmt.Errorf("%s batch %q: %w", side.name, r.BatchID, err)
	}
	if status != store.StatusSucceeded || recorded == nil {
		return r, fmt.Errorf("%s batch %s ended %s", side.name, r.BatchID, status)
	}
	fl, ok := h.finishLine(r.BatchID)
	if !ok {
		return r, fmt.Errorf("%s batch %s: no worker logged \"batch finished\"", side.name, r.BatchID)
	}
	r.Step, r.Kind = h.cfg.Step, grid.KindPH
	r.RecordedSeconds, r.FinishSeconds = *recorded, fl.FinishSeconds
	r.Seconds = fl.At.Sub(startedAt).Seconds()
	if lastChunk != nil {
		r.TailSeconds = fl.At.Sub(*lastChunk).Seconds()
	}
	r.CellsPerSecond = float64(r.Cells) / r.Seconds
	r.CPUBusy, r.CPU = busySince(cpu), used
	r.WALBytes = h.walBytes(ctx) - wal
	r.Concurrency = h.cfg.Workers * h.compareConcurrency
	r.RedisCallsPerChunk = float64(calls) / float64(max(r.Chunks, 1))
	return r, nil
}

// finishLine waits up to 5 s for a worker's "batch finished" line of a
// batch (the logs are read asynchronously).
func (h *harness) finishLine(batchID string) (finishedLine, bool) {
	for wait := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, w := range h.workers {
			w.mu.Lock()
			fl, ok := w.finished[batchID]
			w.mu.Unlock()
			if ok {
				return fl, true
			}
		}
		if time.Now().After(wait) {
			return finishedLine{}, false
		}
	}
}

// resultsLatency is figure 10 on the kept schema (dbURL's search_path):
// Config.ResultsQueries reads of random cells and scenarios with
// store.ReadSeries on a warm pool, as many with store.ReadViewSeries (the
// view ph_timeseries), then Config.ResultsBinaryRuns of `enqueuer
// results`, each a process of its own (start, connect, query, print, exit).
func (h *harness) resultsLatency(ctx context.Context, dbURL string) (ResultsLatency, error) {
	var rl ResultsLatency
	st, err := store.Open(ctx, store.Options{URL: dbURL, AppName: "gridbatch-bench"})
	if err != nil {
		return rl, err
	}
	defer st.Close()
	if rl.Batches, rl.CellsPerBatch, err = st.RetainedBatches(ctx, grid.KindPH); err != nil {
		return rl, err
	}
	latest, err := st.LatestPublication(ctx, grid.KindPH, 0)
	if err != nil {
		return rl, fmt.Errorf("the batch published last: %w", err)
	}
	rl.Latest = latest.BatchID
	r, err := h.region(h.cfg.Step)
	if err != nil {
		return rl, err
	}
	pick := func() (grid.Cell, string) {
		return r.CellAt(rand.N(r.NumCells())), grid.Scenarios[rand.N(len(grid.Scenarios))].Name
	}
	// Warm the pool's connections and their prepared statement, as a
	// serving process's would be.
	for range 10 {
		c, sc := pick()
		if _, err := st.ReadSeries(ctx, grid.KindPH, h.cfg.Step, c.GridID, sc); err != nil {
			return rl, err
		}
	}
	var took []float64
	for range h.cfg.ResultsQueries {
		c, sc := pick()
		t0 := time.Now()
		ss, err := st.ReadSeries(ctx, grid.KindPH, h.cfg.Step, c.GridID, sc)
		took = append(took, time.Since(t0).Seconds())
		if err != nil {
			return rl, fmt.Errorf("read cell %d %s: %w", c.GridID, sc, err)
		}
		if ss.BatchID != rl.Latest {
			return rl, fmt.Errorf("cell %d %s reads batch %s, want %s, the batch published last", c.GridID, sc, ss.BatchID, rl.Latest)
		}
	}
	rl.Query = latencyOf(took)
	took = took[:0]
	for range h.cfg.ResultsQueries {
		c, sc := pick()
		t0 := time.Now()
		series, batchID, err := st.ReadViewSeries(ctx, grid.KindPH, h.cfg.Step, c.GridID, sc)
		took = append(took, time.Since(t0).Seconds())
		if err != nil {
			return rl, fmt.Errorf("read cell %d %s from ph_timeseries: %w", c.GridID, sc, err)
		}
		if batchID != rl.Latest || len(series) != grid.NumYears {
			return rl, fmt.Errorf("ph_timeseries: cell %d %s reads %d values of batch %s, want %d of %s, the batch published last", c.GridID, sc, len(series), batchID, grid.NumYears, rl.Latest)
		}
	}
	rl.View = latencyOf(took)
	c, sc := pick()
	plan, err := st.ExplainViewSeries(ctx, grid.KindPH, h.cfg.Step, c.GridID, sc)
	if err != nil {
		return rl, fmt.Errorf("explain the read: %w", err)
	}
	if len(plan) > 0 {
		rl.Plan = strings.TrimSpace(plan[0])
		if i := strings.Index(rl.Plan, " (actual"); i > 0 {
			rl.Plan = rl.Plan[:i]
		}
		for _, l := range plan {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Execution Time: "); ok {
				rl.Plan += ", execution " + v
			}
		}
	}
	took = took[:0]
	env := h.compareEnv(dbURL, false)
	enq := filepath.Join(h.cfg.BinDir, "enqueuer")
	for range h.cfg.ResultsBinaryRuns {
		c, sc := pick()
		t0 := time.Now()
		_, err := h.output(ctx, enq, env, "results", "--kind", grid.KindPH, "--scenario", sc,
			"--lat", strconv.FormatFloat(c.Lat, 'g', -1, 64), "--lon", strconv.FormatFloat(c.Lon, 'g', -1, 64), "--step", stepStr(h.cfg.Step))
		took = append(took, time.Since(t0).Seconds())
		if err != nil {
			return rl, err
		}
	}
	rl.Binary = latencyOf(took)
	h.logf("results with %d batches retained: ReadSeries p50 %s p99 %s; ph_timeseries p50 %s p99 %s; enqueuer results p50 %s p99 %s; %s",
		rl.Batches, ms(rl.Query.P50), ms(rl.Query.P99), ms(rl.View.P50), ms(rl.View.P99), ms(rl.Binary.P50), ms(rl.Binary.P99), rl.Plan)
	return rl, nil
}

// ident quotes an SQL identifier.
func ident(s string) string { return pgx.Identifier{s}.Sanitize() }
