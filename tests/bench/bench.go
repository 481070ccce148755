// Package bench is gridbatch's performance harness. Run measures, on one
// machine in one run, the figures of `make bench`: the kernel's cost
// per cell, seeding, fan-out (chunk tasks planned and enqueued per second),
// the in-process lower bound of a batch's work, the same batch through the
// real binaries (enqueuer run and worker processes), how that scales with the
// grid, and the workers' peak memory and task start latency. Table renders
// them with the machine they were taken on. TestBench (bench_test.go, build
// tag bench), which `make bench` runs, drives it and writes BENCHMARKS.md.
//
// It is a tool beside the product, not part of it (as river keeps its bench
// under cmd/river/riverbench): nothing in the product imports it. It reads
// this build's tables through store methods; its own raw SQL is the
// server's statistics and maintenance and the comparison's schemas, one of
// them an older build's.
//
// With a models file it also measures figure 8: a model run as processes
// (ph_py, the reference ph in numpy) against the Go kind, paired with the
// pipeline runs, on the same workers.
//
// Every figure comes from gridbatch's own code paths: the lower bound runs
// batch.Service.RunChunk (load inputs, compute, store.WriteChunk) in
// GOMAXPROCS goroutines with no queue, and the pipeline is the built worker
// and enqueuer binaries, so the ratio of the two is what the queue and the
// process boundary cost.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// Config says where and what to measure. Zero fields take the defaults
// documented on each.
type Config struct {
	// RedisURL selects a Redis database of this run's own: Run flushes it
	// between measurements. Required.
	RedisURL string
	// DatabaseURL points at a migrated PostgreSQL schema of this run's own:
	// Run truncates its results tables between measurements. Required.
	DatabaseURL string
	// BinDir holds the built worker and enqueuer binaries. Required.
	BinDir string
	// RepoRoot is the module root, where the go test benchmarks run. Required
	// unless SkipGoBench.
	RepoRoot string
	// Env is the environment of the binaries and of go test; the GRIDBATCH_*
	// settings Run needs are set on top. Defaults to os.Environ().
	Env []string
	// Kind is the model of the lower bound and pipeline runs. Defaults to "ph".
	Kind string
	// ModelsFile is the models file (GRIDBATCH_MODELS_FILE, an absolute
	// path) every binary of the run gets: the workers serve its process
	// models next to the built-in ones. Empty: the built-in models only, and
	// no figure 8.
	ModelsFile string
	// ProcessKind is the kind of ModelsFile run as model processes (figure
	// 8), measured after each pipeline run at Step, on the same workers with
	// the same settings, and compared with it. Defaults to Kind + "_py"
	// (ph_py, the reference ph in numpy in examples/models.yaml); "-" for
	// none. Its results table is created as enqueuer migrate does.
	ProcessKind string
	// BBox is the region. Defaults to the Korea box 124,33,132,39.
	BBox grid.BBox
	// Step is the grid step of the lower bound and of the pipeline it is
	// compared with. Defaults to 0.01 (480,000 cells over Korea).
	Step float64
	// ScalingSteps are the steps of the scaling figure, coarsest first; the
	// run at Step is the pipeline figure. Defaults to 0.05, 0.02, 0.01.
	ScalingSteps []float64
	// ChunkSize is the chunk size of every run. Defaults to the binaries'
	// default (GRIDBATCH_CHUNK_SIZE, else the config default).
	ChunkSize int
	// Workers is the number of worker processes of the pipeline. Defaults to 2.
	Workers int
	// WorkerEnv is added to the workers' environment (e.g.
	// GRIDBATCH_CONCURRENCY=4), to measure a setting against its default.
	// Unless it sets GRIDBATCH_CONCURRENCY, each worker runs
	// GOMAXPROCS/Workers chunks at once (at least 1), so the pipeline has as
	// many chunks in flight as the lower bound has goroutines, and Run also
	// measures one pipeline batch with the workers at their own default
	// concurrency.
	WorkerEnv []string
	// LowerBoundGoroutines is how many chunks the lower bound runs at once.
	// Defaults to GOMAXPROCS, the definition; other values are for
	// experiments.
	LowerBoundGoroutines int
	// Repeat is how many times the lower bound and the pipeline at Step are
	// measured, alternately; the median of each is reported. Defaults to 1.
	Repeat int
	// FanoutChunks is the size of the fan-out batch. Defaults to 10,000.
	FanoutChunks int
	// LatencyProbes is how many chunk tasks the start-latency probe enqueues,
	// one at a time, to idle workers. Defaults to 200.
	LatencyProbes int
	// KernelBenchtime and SeedBenchtime are go test's -benchtime for
	// BenchmarkCompute and BenchmarkSeedCells. Default 2s and 2x.
	KernelBenchtime, SeedBenchtime string
	// SkipGoBench leaves out the go test benchmarks (figures 1 and 2).
	SkipGoBench bool
	// ProfileDir, when set, receives CPU profiles: the lower bound's, and
	// each worker's during the pipeline at Step (the workers then serve
	// pprof, GRIDBATCH_PPROF=true).
	ProfileDir string
	// LogDir, when set, keeps the binaries' logs; otherwise they go to a
	// temporary folder that is removed.
	LogDir string
	// Log receives progress lines. Defaults to io.Discard.
	Log io.Writer
	// Baseline is a git revision of this repository (RepoRoot) whose
	// pipeline this tree's is compared with (figures 9 and 10): its binaries
	// are built in a temporary worktree, and Repeat pairs of ph batches at
	// Step (baseline, then this tree) run on fresh schemas, each migrated and
	// seeded by its own side's enqueuer. Empty: no comparison.
	Baseline string
	// Retain is how many batches' rows the schema holds when figure 10
	// reads the published values: the last pair's schema is kept and
	// Retain-1 more batches of this tree run into it. Defaults to 3.
	Retain int
	// CompareOnly measures figure 9 alone (the baseline and this tree, in
	// Repeat pairs), for trying a change to the write path quickly; the
	// table then holds no other figure and Retain is 1 (no figure 10).
	CompareOnly bool
	// KernelOnly measures figure 1 alone (the Go kernels beside numpy's).
	KernelOnly bool
	// Delay is the network delay figure 11 injects each way between every
	// binary and both services (whole milliseconds). Defaults to 1ms;
	// negative: no figure 11.
	Delay time.Duration
	// DelayOnly measures figure 11 alone.
	DelayOnly bool
	// DelayProxy is the proxy figure 11 delays through: "hop" (default),
	// this package's own, or "toxiproxy". Both run in this process, on the
	// pipeline's cores, so their CPU is taken from the batch, which a real
	// network hop does not do; hop takes less (1.2–1.5 core-s a delayed
	// batch against toxiproxy's 2.3–2.5 on a quiet 2-core machine, and a
	// median 5.6 against 7.7 on a loaded one).
	DelayProxy string
	// ResultsQueries is how many random cells figure 10 reads with
	// store.ReadSeries (default 200); ResultsBinaryRuns how many it reads
	// with the enqueuer results binary, a process each (default 20).
	ResultsQueries, ResultsBinaryRuns int

	// addedConcurrency is the GRIDBATCH_CONCURRENCY entry fill added to
	// WorkerEnv, if any.
	addedConcurrency string
}

func (c *Config) fill() error {
	switch {
	case c.RedisURL == "":
		return errors.New("bench: RedisURL is required")
	case c.DatabaseURL == "":
		return errors.New("bench: DatabaseURL is required")
	case c.BinDir == "":
		return errors.New("bench: BinDir is required")
	case c.RepoRoot == "" && !c.SkipGoBench:
		return errors.New("bench: RepoRoot is required for the go test benchmarks")
	}
	if c.Env == nil {
		c.Env = os.Environ()
	}
	c.Kind = cmp.Or(c.Kind, grid.KindPH)
	switch {
	case c.ModelsFile == "" || c.ProcessKind == "-":
		c.ProcessKind = ""
	case c.ProcessKind == "":
		c.ProcessKind = c.Kind + "_py"
	}
	if c.ModelsFile != "" {
		abs, err := filepath.Abs(c.ModelsFile)
		if err != nil {
			return fmt.Errorf("bench: models file: %w", err)
		}
		c.ModelsFile = abs
	}
	if c.BBox == (grid.BBox{}) {
		c.BBox = grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}
	}
	c.Step = cmp.Or(c.Step, 0.01)
	if len(c.ScalingSteps) == 0 {
		c.ScalingSteps = []float64{0.05, 0.02, 0.01}
	}
	if c.ChunkSize == 0 {
		var b config.Batch
		s := config.NewSet("bench", "", "")
		s.Batch(&b)
		if err := s.Parse(nil); err != nil {
			return fmt.Errorf("bench: the default chunk size: %w", err)
		}
		c.ChunkSize = b.ChunkSize
	}
	c.Workers = cmp.Or(c.Workers, 2)
	c.LowerBoundGoroutines = cmp.Or(c.LowerBoundGoroutines, runtime.GOMAXPROCS(0))
	if !slices.ContainsFunc(c.WorkerEnv, func(e string) bool { return strings.HasPrefix(e, "GRIDBATCH_CONCURRENCY=") }) {
		c.addedConcurrency = fmt.Sprintf("GRIDBATCH_CONCURRENCY=%d", max(1, c.LowerBoundGoroutines/c.Workers))
		c.WorkerEnv = append(slices.Clip(c.WorkerEnv), c.addedConcurrency)
	}
	c.Repeat = max(c.Repeat, 1)
	c.Retain = cmp.Or(c.Retain, 3)
	c.ResultsQueries = cmp.Or(c.ResultsQueries, 200)
	c.ResultsBinaryRuns = cmp.Or(c.ResultsBinaryRuns, 20)
	if c.Baseline != "" && c.RepoRoot == "" {
		return errors.New("bench: RepoRoot is required to build the baseline")
	}
	c.FanoutChunks = cmp.Or(c.FanoutChunks, 10_000)
	c.LatencyProbes = cmp.Or(c.LatencyProbes, 200)
	c.KernelBenchtime = cmp.Or(c.KernelBenchtime, "2s")
	c.Delay = cmp.Or(c.Delay, time.Millisecond)
	switch c.DelayProxy = cmp.Or(c.DelayProxy, proxyHop); c.DelayProxy {
	case proxyToxiproxy, proxyHop:
	default:
		return fmt.Errorf("bench: unknown delay proxy %q (hop or toxiproxy)", c.DelayProxy)
	}
	c.SeedBenchtime = cmp.Or(c.SeedBenchtime, "2x")
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

// harness is one Run's open connections.
type harness struct {
	cfg Config
	st  *store.Store
	// db is the bench's own pool on Config.DatabaseURL, for its own raw
	// SQL: the server's statistics and settings, CHECKPOINT and VACUUM, the
	// comparison's schemas (the baseline's are an older build's). This
	// build's tables it reads through st.
	db     *pgxpool.Pool
	rdb    redis.UniversalClient
	client *asynq.Client
	insp   *asynq.Inspector
	broker *tasks.Broker
	log    *slog.Logger
	logDir string
	// workers are the pipeline's worker processes while they run.
	workers []*workerProc
	// workerSettings is the worker's --print-config output.
	workerSettings string
	// ownConcurrency starts the workers at their own default concurrency
	// (without the GRIDBATCH_CONCURRENCY that Config.fill added).
	ownConcurrency bool
	// compareConcurrency is GRIDBATCH_CONCURRENCY of the comparison's workers.
	compareConcurrency int
	// processSpec is the models file's entry of Config.ProcessKind.
	processSpec model.Spec
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.cfg.Log, "bench: "+format+"\n", args...)
}

// Run takes every figure and returns the table. It stops at the first
// error; ctx bounds the whole run.
func Run(ctx context.Context, cfg Config) (Table, error) {
	if err := cfg.fill(); err != nil {
		return Table{}, err
	}
	var t Table
	h := &harness{cfg: cfg, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var err error
	// The worker's own broker settings: tasks.ChunkOptions' defaults. The
	// pool has store.Open's defaults, not the binaries' GRIDBATCH_DB_*.
	conn, err := connect.Open(ctx, config.Common{RedisURL: cfg.RedisURL, DatabaseURL: cfg.DatabaseURL},
		connect.Options{App: "gridbatch-bench", Log: h.log})
	if err != nil {
		return t, err
	}
	defer conn.Close()
	h.st, h.rdb, h.client, h.insp, h.broker = conn.Store, conn.Redis, conn.Client, conn.Inspector, conn.Broker
	h.logDir = cfg.LogDir
	if h.logDir == "" {
		if h.logDir, err = os.MkdirTemp("", "gridbatch-bench-"); err != nil {
			return t, err
		}
		defer os.RemoveAll(h.logDir)
	} else if err := os.MkdirAll(h.logDir, 0o755); err != nil {
		return t, err
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return t, err
		}
	}

	if h.db, err = openPool(ctx, cfg.DatabaseURL); err != nil {
		return t, err
	}
	defer h.db.Close()

	return h.run(ctx)
}

// run takes the figures the Config selects, in this order: the machine
// and settings (and the baseline's build) first, then either figure 9
// alone (CompareOnly), figure 11 alone (DelayOnly), or the go test
// benchmarks (alone with KernelOnly) and every other figure.
func (h *harness) run(ctx context.Context) (Table, error) {
	var t Table
	started := time.Now()
	baselineBin, err := h.prepare(ctx, &t)
	if err != nil {
		return t, err
	}
	if baselineBin != "" {
		defer os.RemoveAll(filepath.Dir(baselineBin))
	}
	defer h.killWorkers() // any a failed step left running
	switch {
	case h.cfg.CompareOnly:
		err = h.compareOnly(ctx, &t, baselineBin)
	case h.cfg.DelayOnly:
		err = h.delayOnly(ctx, &t)
	default:
		err = h.everyFigure(ctx, &t, baselineBin)
	}
	if err != nil {
		return t, err
	}
	t.Elapsed = time.Since(started)
	return t, nil
}

// prepare records the machine and the settings of the run (the process
// model's command, the workers' settings) and builds the baseline's
// binaries, before anything is measured. It returns the folder of the
// baseline's binaries, or "" without a Baseline.
func (h *harness) prepare(ctx context.Context, t *Table) (baselineBin string, err error) {
	cfg := h.cfg
	if t.Machine, err = h.machine(ctx); err != nil {
		return "", err
	}
	t.Config = Settings{Kind: cfg.Kind, BBox: cfg.BBox.String(), Step: cfg.Step, ChunkSize: cfg.ChunkSize,
		Workers: cfg.Workers, WorkerEnv: cfg.WorkerEnv, Repeat: cfg.Repeat, ModelsFile: cfg.ModelsFile, ProcessKind: cfg.ProcessKind}
	if cfg.ProcessKind != "" {
		if err := h.processModel(ctx); err != nil {
			return "", err
		}
		t.Config.ProcessCommand = h.processSpec.Source()
	}
	if h.workerSettings, err = h.output(ctx, filepath.Join(cfg.BinDir, "worker"), h.workerEnv(false), "--print-config"); err != nil {
		return "", fmt.Errorf("worker --print-config: %w", err)
	}
	t.Config.WorkerSettings = pickSettings(h.workerSettings, "GRIDBATCH_CONCURRENCY", "GRIDBATCH_TASK_CHECK_INTERVAL", "GRIDBATCH_DB_MAX_CONNS", "GRIDBATCH_GC_PERCENT")
	if cfg.Baseline == "" {
		return "", nil
	}
	t.Compare = &Comparison{Baseline: cfg.Baseline}
	return h.buildBaseline(ctx, t.Compare)
}

// compareOnly is CompareOnly: figure 9 alone, with no figure 10.
func (h *harness) compareOnly(ctx context.Context, t *Table, baselineBin string) error {
	if t.Compare == nil {
		return errors.New("bench: CompareOnly needs a Baseline")
	}
	h.cfg.Retain = 0 // no figure 10
	h.logf("compare only: %d pairs of ph batches at step %g, %s then this tree, each on a fresh schema", h.cfg.Repeat, h.cfg.Step, t.Compare.BaselineDesc)
	if err := h.compare(ctx, t.Compare, baselineBin); err != nil {
		return err
	}
	h.logf("compare only: this tree vs %s: %.3f (pairs: %s)", h.cfg.Baseline, t.Compare.Ratio, ratios(t.Compare.Ratios))
	return nil
}

// delayOnly is DelayOnly: the grid at Step seeded, then figure 11 alone.
func (h *harness) delayOnly(ctx context.Context, t *Table) error {
	cfg := h.cfg
	sr, err := h.seed(ctx, cfg.Step)
	if err != nil {
		return err
	}
	t.Seed = append(t.Seed, sr)
	if t.Delay, err = h.delay(ctx, cfg.Delay); err != nil {
		return err
	}
	if t.Machine.LoadAfter, err = loadAverage(); err != nil {
		return err
	}
	h.logf("delay only: %s each way vs loopback: %.3f (rounds: %s); vs the proxies with no delay: %.3f (rounds: %s); load average %s at the start, %s at the end",
		cfg.Delay, t.Delay.Ratio, ratios(t.Delay.Ratios), t.Delay.ProxiedRatio, ratios(t.Delay.ProxiedRatios), t.Machine.LoadBefore, t.Machine.LoadAfter)
	return nil
}

// everyFigure takes the go test benchmarks (figures 1 and 2; only figure 1
// with KernelOnly) and then every other figure the Config asks for, in the
// order of the table.
func (h *harness) everyFigure(ctx context.Context, t *Table, baselineBin string) error {
	cfg := h.cfg
	var err error
	if cfg.KernelOnly || !cfg.SkipGoBench {
		if err := h.kernel(ctx, t); err != nil || cfg.KernelOnly {
			return err
		}
		h.logf("seeding: go test -bench BenchmarkSeedCells -benchtime %s ./internal/store/", cfg.SeedBenchtime)
		if t.Seed, err = h.seedBench(ctx); err != nil {
			return err
		}
	}
	if err := h.seedSteps(ctx, t); err != nil {
		return err
	}
	h.logf("fan-out: plan and enqueue a %d-chunk batch", cfg.FanoutChunks)
	if t.Fanout, err = h.fanout(ctx); err != nil {
		return err
	}
	h.logf("fan-out: %.0f tasks/s (enqueue alone %.0f tasks/s)", t.Fanout.TasksPerSecond, t.Fanout.EnqueuePerSecond)
	if err := h.pipelines(ctx, t); err != nil {
		return err
	}
	if cfg.addedConcurrency != "" {
		if err := h.ownConcurrencyRun(ctx, t); err != nil {
			return err
		}
	}
	if cfg.Delay > 0 {
		h.logf("delay: %d rounds of batches at step %g: loopback, through the proxies with no delay, with %s injected each way; the workers at their default settings", cfg.Repeat, cfg.Step, cfg.Delay)
		if t.Delay, err = h.delay(ctx, cfg.Delay); err != nil {
			return err
		}
	}
	if t.Compare != nil {
		h.logf("compare: %d pairs of ph batches at step %g, %s then this tree, each on a fresh schema", cfg.Repeat, cfg.Step, t.Compare.BaselineDesc)
		if err := h.compare(ctx, t.Compare, baselineBin); err != nil {
			return err
		}
	}
	t.finish()
	t.Machine.LoadAfter, err = loadAverage()
	return err
}

// kernel is figure 1: the Go kernels beside numpy's; with KernelOnly it
// also reads the load average at the end.
func (h *harness) kernel(ctx context.Context, t *Table) error {
	cfg := h.cfg
	var err error
	h.logf("kernel: go test -bench BenchmarkCompute -benchtime %s ./internal/grid/, alternated with numpy's on the same cells", cfg.KernelBenchtime)
	if t.Kernel, err = h.kernelBench(ctx); err != nil {
		return err
	}
	for _, k := range t.Kernel {
		h.logf("kernel %s: Go %.0f ns/cell, numpy %.0f ns/cell (medians; Go runs %s, numpy runs %s); CPU time: Go %.0f, numpy %.0f ns/cell",
			k.Kind, k.NsPerCell, k.NumpyNsPerCell, nsRuns(k.GoRuns), nsRuns(k.NumpyRuns), k.CPUNsPerCell, k.NumpyCPUNsPerCell)
	}
	if !cfg.KernelOnly {
		return nil
	}
	if t.Machine.LoadAfter, err = loadAverage(); err != nil {
		return err
	}
	h.logf("kernel only: load average %s at the start, %s at the end", t.Machine.LoadBefore, t.Machine.LoadAfter)
	return nil
}

// seedSteps seeds the grid at every scaling step and at Step.
func (h *harness) seedSteps(ctx context.Context, t *Table) error {
	steps := append([]float64{}, h.cfg.ScalingSteps...)
	if !containsStep(steps, h.cfg.Step) {
		steps = append(steps, h.cfg.Step)
	}
	for _, s := range steps {
		sr, err := h.seed(ctx, s)
		if err != nil {
			return err
		}
		t.Seed = append(t.Seed, sr)
	}
	return nil
}

// pipelines starts the workers and, on them, takes the scaling runs, then
// Repeat times the lower bound, the pipeline at Step and (figure 8) the
// process model's pipeline, then the start latency and the workers'
// figures; it stops the workers.
func (h *harness) pipelines(ctx context.Context, t *Table) error {
	cfg := h.cfg
	// The workers serve every pipeline run, as long-lived workers do: the
	// coarser scaling runs go first and warm them up.
	if err := h.startWorkers(ctx, cfg.ProfileDir != ""); err != nil {
		return err
	}
	for _, s := range cfg.ScalingSteps {
		if s == cfg.Step {
			continue
		}
		pr, err := h.pipeline(ctx, cfg.Kind, s, false)
		if err != nil {
			return err
		}
		h.logf("pipeline at step %g: %d cells in %.2fs: %.0f cells/s", s, pr.Cells, pr.Seconds, pr.CellsPerSecond)
		t.Scaling = append(t.Scaling, pr)
	}
	for i := range cfg.Repeat {
		if err := h.repeat(ctx, t, i); err != nil {
			return err
		}
	}
	h.logf("start latency: %d chunk tasks enqueued one at a time to the idle workers", cfg.LatencyProbes)
	idle, err := h.latencyProbe(ctx)
	if err != nil {
		return err
	}
	t.Idle = &idle
	if t.Workers, err = h.workerFigures(); err != nil {
		return err
	}
	return h.stopWorkers()
}

// repeat is the i-th (from 0) of the Repeat measurements at Step: the
// lower bound, the pipeline, and right after it, on the same workers, the
// same batch of the process model it is compared with (figure 8).
func (h *harness) repeat(ctx context.Context, t *Table, i int) error {
	cfg := h.cfg
	lb, err := h.lowerBound(ctx, cfg.Step, i == 0 && cfg.ProfileDir != "")
	if err != nil {
		return err
	}
	h.logf("lower bound #%d: %d cells in %.2fs: %.0f cells/s", i+1, lb.Cells, lb.Seconds, lb.CellsPerSecond)
	t.LowerBoundRuns = append(t.LowerBoundRuns, lb)
	pr, err := h.pipeline(ctx, cfg.Kind, cfg.Step, i == 0 && cfg.ProfileDir != "")
	if err != nil {
		return err
	}
	h.logf("pipeline #%d at step %g: %d cells in %.2fs: %.0f cells/s", i+1, cfg.Step, pr.Cells, pr.Seconds, pr.CellsPerSecond)
	t.PipelineRuns = append(t.PipelineRuns, pr)
	if cfg.ProcessKind == "" {
		return nil
	}
	mr, err := h.processPipeline(ctx, cfg.Step)
	if err != nil {
		return err
	}
	h.logf("%s pipeline #%d at step %g: %d cells in %.2fs: %.0f cells/s (%.3f × %s); %d model processes started during it, %d since the workers started",
		cfg.ProcessKind, i+1, cfg.Step, mr.Cells, mr.Seconds, mr.CellsPerSecond, mr.CellsPerSecond/pr.CellsPerSecond, cfg.Kind,
		mr.Starts.During, mr.Starts.Total)
	t.ProcessRuns = append(t.ProcessRuns, mr)
	return nil
}

// ownConcurrencyRun measures the same batch with each worker at its own
// default concurrency (two chunks per CPU): what oversubscribing the cores
// costs. Only when Config.fill added GRIDBATCH_CONCURRENCY.
func (h *harness) ownConcurrencyRun(ctx context.Context, t *Table) error {
	cfg := h.cfg
	h.ownConcurrency = true
	var err error
	if h.workerSettings, err = h.output(ctx, filepath.Join(cfg.BinDir, "worker"), h.workerEnv(false), "--print-config"); err != nil {
		return fmt.Errorf("worker --print-config: %w", err)
	}
	if err := h.startWorkers(ctx, false); err != nil {
		return err
	}
	pr, err := h.pipeline(ctx, cfg.Kind, cfg.Step, false)
	if err != nil {
		return err
	}
	h.logf("pipeline at the workers' default concurrency (%d chunks in flight): %.0f cells/s", pr.Concurrency, pr.CellsPerSecond)
	t.OwnConcurrency = &pr
	return h.stopWorkers()
}

// openPool opens the bench's own pool on url, under the bounds of the
// store's pool (store.PoolConfig), which this SQL ran under when it went
// through the store's pool, and under the bench's application_name whatever
// url says (the CPU figures count it as the run's own sessions).
func openPool(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := store.PoolConfig(store.Options{URL: url})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	cfg.ConnConfig.RuntimeParams["application_name"] = "gridbatch-bench"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("bench: open PostgreSQL pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bench: PostgreSQL: %w", err)
	}
	return pool, nil
}

func containsStep(steps []float64, s float64) bool {
	for _, x := range steps {
		if x == s {
			return true
		}
	}
	return false
}
