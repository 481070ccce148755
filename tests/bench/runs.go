package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

func (h *harness) region(step float64) (grid.Region, error) {
	l, err := grid.NewLattice(step)
	if err != nil {
		return grid.Region{}, err
	}
	return grid.NewRegion(l, h.cfg.BBox, 0)
}

// seed writes the inputs of a grid with store.SeedCells, as enqueuer seed
// does, and times it.
func (h *harness) seed(ctx context.Context, step float64) (SeedFigure, error) {
	r, err := h.region(step)
	if err != nil {
		return SeedFigure{}, err
	}
	start := time.Now()
	if _, err := h.st.SeedCells(ctx, r, nil); err != nil {
		return SeedFigure{}, fmt.Errorf("seed step %g: %w", step, err)
	}
	el := time.Since(start).Seconds()
	// Vacuum now what autovacuum would otherwise take up a minute later, in
	// the middle of some measured run (its naptime is 1 min).
	if _, err := h.db.Exec(ctx, `VACUUM (ANALYZE) cell_params`); err != nil {
		return SeedFigure{}, fmt.Errorf("vacuum cell_params: %w", err)
	}
	h.logf("seeded %d cells at step %g in %.2fs", r.NumCells(), step, el)
	return SeedFigure{Step: step, Cells: r.NumCells(), Seconds: el, CellsPerSecond: float64(r.NumCells()) / el, Source: "harness"}, nil
}

// reset gives every measured run the same start: no results (every batch's
// own rows dropped, nothing published) and a fresh checkpoint (so no run
// pays for another's dirty pages); with flush, also an empty Redis database
// (only while no worker runs).
func (h *harness) reset(ctx context.Context, flush bool) error {
	if err := h.st.DropAllResults(ctx); err != nil {
		return fmt.Errorf("drop the results: %w", err)
	}
	// CHECKPOINT needs superuser or pg_checkpoint; without it runs are a little noisier.
	_, _ = h.db.Exec(ctx, `CHECKPOINT`)
	if err := h.quiesce(ctx); err != nil {
		return err
	}
	if !flush {
		return nil
	}
	if err := h.rdb.FlushDB(ctx).Err(); err != nil {
		return fmt.Errorf("flush the Redis database: %w", err)
	}
	return nil
}

// quiesce waits, up to two minutes, until no autovacuum worker runs, so no
// run shares the machine with the vacuum of an earlier run's rows (after a
// 480,000-cell batch that takes the better part of a minute).
func (h *harness) quiesce(ctx context.Context) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var n int
		if err := h.db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'`).Scan(&n); err != nil {
			return fmt.Errorf("count autovacuum workers: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			h.logf("autovacuum still running after 2m; measuring anyway")
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// walBytes is the server's WAL position, to count the bytes a run wrote.
func (h *harness) walBytes(ctx context.Context) int64 {
	var n int64
	_ = h.db.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint`).Scan(&n)
	return n
}

// newBatch records a batch directly (no lock, no plan task) for the runs
// that drive the orchestration themselves.
func (h *harness) newBatch(ctx context.Context, prefix, kind string, r grid.Region, chunkSize int) (store.Batch, error) {
	now := time.Now().UTC().Truncate(time.Millisecond)
	return h.st.InsertBatch(ctx, store.NewBatch{ID: batch.NewID(prefix, now), Kind: kind, Region: r,
		ChunkSize: chunkSize, StartedAt: now, DeadlineAt: now.Add(time.Hour),
		LockExpiresAt: now.Add(time.Hour + 10*time.Minute), Trigger: "bench",
		Layout: store.LayoutOf(model.BuiltinSpec(kind))})
}

// FanoutFigure is figure 3.
type FanoutFigure struct {
	Chunks           int
	PlanSeconds      float64 // store.PlanChunks: the chunk_runs rows
	EnqueueSeconds   float64 // Broker.EnqueueChunks: the asynq tasks
	TasksPerSecond   float64 // Chunks / (PlanSeconds + EnqueueSeconds)
	EnqueuePerSecond float64
	EnqueueWorkers   int
	RedisCalls       int64 // Redis commands during the enqueue (INFO commandstats; server-wide)
	RedisEvalsha     int64
}

// fanout plans and enqueues a batch of FanoutChunks chunks with the code of
// the plan task (store.PlanChunks, then tasks.Broker.EnqueueChunks with the
// worker's settings), in this process, with no worker running.
func (h *harness) fanout(ctx context.Context) (FanoutFigure, error) {
	f := FanoutFigure{Chunks: h.cfg.FanoutChunks, EnqueueWorkers: h.broker.EnqueueWorkers()}
	if err := h.reset(ctx, true); err != nil {
		return f, err
	}
	r, err := h.region(h.cfg.Step)
	if err != nil {
		return f, err
	}
	size := max(1, r.NumCells()/f.Chunks)
	if r.NumChunks(size) < f.Chunks {
		return f, fmt.Errorf("the grid at step %g has %d cells, too few for %d chunks", h.cfg.Step, r.NumCells(), f.Chunks)
	}
	b, err := h.newBatch(ctx, "fanout", h.cfg.Kind, r, size)
	if err != nil {
		return f, err
	}
	start := time.Now()
	pending, err := h.st.PlanChunks(ctx, b)
	if err != nil {
		return f, err
	}
	f.PlanSeconds = time.Since(start).Seconds()
	pending = pending[:f.Chunks]
	before := h.commandStats(ctx)
	start = time.Now()
	if err := h.broker.EnqueueChunks(ctx, b, pending); err != nil {
		return f, err
	}
	f.EnqueueSeconds = time.Since(start).Seconds()
	f.RedisCalls, f.RedisEvalsha = h.commandStats(ctx).sub(before, "evalsha")
	f.TasksPerSecond = float64(f.Chunks) / (f.PlanSeconds + f.EnqueueSeconds)
	f.EnqueuePerSecond = float64(f.Chunks) / f.EnqueueSeconds
	n, err := h.insp.GetQueueInfo("grid")
	if err != nil {
		return f, err
	}
	if n.Pending != f.Chunks {
		return f, fmt.Errorf("fan-out: %d tasks pending, want %d", n.Pending, f.Chunks)
	}
	if _, _, _, err := h.st.FinishBatch(ctx, b.ID, store.Final{Status: store.StatusCancelled, PendingChunkStatus: store.ChunkCancelled, Error: "bench fan-out"}, batch.Gate{}.Decide(batch.AtEnd)); err != nil {
		return f, err
	}
	return f, h.reset(ctx, true)
}

// RunFigure is one batch run over a grid: the lower bound or the pipeline.
type RunFigure struct {
	Step           float64
	Cells          int64
	Chunks         int
	Seconds        float64
	CellsPerSecond float64
	CPUBusy        float64 // share of the machine's CPU time busy during the run
	CPU            CPU     // where that CPU time went
	Waits          string  // PostgreSQL sessions by state and wait event, averaged over the run
	WALBytes       int64   // PostgreSQL WAL written during the run (server-wide)
	Concurrency    int     // chunks in flight at once
}

// lowerBound runs a batch's chunks in this process with the worker's own
// chunk code (batch.Service.RunChunk: load inputs in one query, compute,
// store.WriteChunk in one transaction), GOMAXPROCS goroutines, no queue. The
// time covers the plan (chunk rows) through the last chunk's commit and the
// batch's finish, as a pipeline batch's duration does.
func (h *harness) lowerBound(ctx context.Context, step float64, profile bool) (RunFigure, error) {
	if err := h.reset(ctx, false); err != nil {
		return RunFigure{}, err
	}
	r, err := h.region(step)
	if err != nil {
		return RunFigure{}, err
	}
	b, err := h.newBatch(ctx, "lowerbound", h.cfg.Kind, r, h.cfg.ChunkSize)
	if err != nil {
		return RunFigure{}, err
	}
	svc := batch.New(h.st, h.broker, h.log, batch.Config{Worker: "bench-lowerbound"})
	procs := h.cfg.LowerBoundGoroutines
	// The worker's GC setting, so that the two differ by the queue and the
	// processes only.
	if gc := h.workerInt("GRIDBATCH_GC_PERCENT"); gc > 0 {
		defer debug.SetGCPercent(debug.SetGCPercent(gc))
	}
	if profile {
		f, err := os.Create(filepath.Join(h.cfg.ProfileDir, "lowerbound.cpu.pprof"))
		if err != nil {
			return RunFigure{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return RunFigure{}, err
		}
		defer pprof.StopCPUProfile()
	}
	cpu := readCPU()
	meter := h.startCPU(ctx)
	waits := h.sampleWaits(ctx, "gridbatch-bench")
	wal := h.walBytes(ctx)
	start := time.Now()
	pending, err := h.st.PlanChunks(ctx, b)
	if err != nil {
		return RunFigure{}, err
	}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(pending) || ctx.Err() != nil {
					return
				}
				c := pending[i]
				err := svc.RunChunk(ctx, batch.Chunk{BatchID: b.ID, TaskID: batch.ChunkTaskID(b.ID, c), Kind: b.Kind,
					Index: c, Step: b.Step, BBox: b.BBox, ChunkSize: b.ChunkSize})
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, fmt.Errorf("lower bound chunk %d: %w", c, err))
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	used := meter.stop(ctx, h)
	waitsSeen := waits.result(12)
	if firstErr != nil {
		return RunFigure{}, firstErr
	}
	done, err := h.st.GetBatch(ctx, b.ID)
	if err != nil {
		return RunFigure{}, err
	}
	if done.Status != store.StatusSucceeded || done.CompletedCells != done.TotalCells {
		return RunFigure{}, fmt.Errorf("lower bound batch %s ended %s with %d of %d cells", b.ID, done.Status, done.CompletedCells, done.TotalCells)
	}
	return RunFigure{Step: step, Cells: done.TotalCells, Chunks: done.TotalChunks, Seconds: el,
		CellsPerSecond: float64(done.TotalCells) / el, CPUBusy: busySince(cpu), CPU: used, WALBytes: h.walBytes(ctx) - wal,
		Concurrency: procs, Waits: waitsSeen}, nil
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// WorkerFigure is one worker process over all the pipeline runs.
type WorkerFigure struct {
	PeakRSSBytes int64   // VmHWM from /proc after the last run
	CPUSeconds   float64 // user+system over the whole process life
}

// PipelineFigure is a batch through the real binaries.
type PipelineFigure struct {
	RunFigure
	// WallSeconds is the enqueuer run --wait process from start to exit.
	// Seconds is the batch's own time: from its started_at to the workers'
	// "batch finished" line, logged once the finish transaction (for a
	// batch that succeeded, its publication) has committed.
	// RecordedSeconds is its recorded duration_seconds (which, since
	// ac80ead, also runs to the end of the publication; at fae24c9 it ends
	// at the finish transaction's start, then a few ms short of it).
	// FinishSeconds is that transaction, as the worker logged it (-1 when
	// the binary does not log it), TailSeconds the time from the last
	// chunk's finished_at to the "batch finished" line.
	WallSeconds                                 float64
	RecordedSeconds, FinishSeconds, TailSeconds float64
	BatchID                                     string
	Kind                                        string
	// BatchPeakRSSBytes is the batch's own peak_worker_rss_bytes: the
	// largest RSS the workers recorded with a chunk outcome.
	BatchPeakRSSBytes int64
	AvgTaskSeconds    float64
	// RedisCallsPerChunk is Redis commands per chunk task during the run
	// (INFO commandstats, server-wide), EvalshaPerChunk the Lua scripts.
	RedisCallsPerChunk, EvalshaPerChunk float64
	// Backlog is the enqueue-to-start latency of the batch's own chunk
	// tasks: mostly the wait behind earlier chunks.
	Backlog Latency
}

// startWorkers starts the pipeline's worker processes. They serve every
// pipeline run, as long-lived workers do in production; stopWorkers ends them.
func (h *harness) startWorkers(ctx context.Context, pprof bool) error {
	for i := range h.cfg.Workers {
		name := fmt.Sprintf("worker-%d", i+1)
		if h.ownConcurrency {
			name = fmt.Sprintf("worker-default-concurrency-%d", i+1)
		}
		w, err := h.startWorker(ctx, name, pprof)
		if err != nil {
			return err
		}
		h.workers = append(h.workers, w)
	}
	return nil
}

// workerFigures reads each worker's peak RSS and CPU time.
func (h *harness) workerFigures() ([]WorkerFigure, error) {
	var out []WorkerFigure
	for _, w := range h.workers {
		rss, err := procStatus(w.pid(), "VmHWM")
		if err != nil {
			return nil, fmt.Errorf("peak RSS of worker %d: %w", w.pid(), err)
		}
		cpu, _ := procCPU(w.pid())
		out = append(out, WorkerFigure{PeakRSSBytes: rss, CPUSeconds: cpu.Seconds()})
	}
	return out, nil
}

// stopWorkers stops the workers with SIGTERM and reports an unclean exit;
// killWorkers kills whatever still runs (after an error).
func (h *harness) stopWorkers() error {
	var errs []error
	for _, w := range h.workers {
		errs = append(errs, w.stop())
	}
	h.workers = nil
	return errors.Join(errs...)
}

func (h *harness) killWorkers() {
	for _, w := range h.workers {
		select {
		case <-w.done:
		default:
			w.kill()
		}
	}
	h.workers = nil
}

// pipeline runs a batch of kind through enqueuer run --wait and the running workers.
func (h *harness) pipeline(ctx context.Context, kind string, step float64, profile bool) (PipelineFigure, error) {
	var p PipelineFigure
	if err := h.reset(ctx, false); err != nil {
		return p, err
	}
	workers := h.workers
	var profiles sync.WaitGroup
	profErrs := make([]error, len(workers))
	if profile {
		for i, w := range workers {
			profiles.Add(1)
			go func() {
				defer profiles.Done()
				path := filepath.Join(h.cfg.ProfileDir, fmt.Sprintf("worker-%d.cpu.pprof", i+1))
				profErrs[i] = fetchProfile(ctx, w.addr(), path, 20*time.Second)
			}()
		}
	}
	region, err := h.region(step)
	if err != nil {
		return p, err
	}
	cpu := readCPU()
	meter := h.startCPU(ctx)
	workerCPU := make([]time.Duration, len(workers))
	pids := make([]int, len(workers))
	for i, w := range workers {
		workerCPU[i], _ = procCPU(w.pid())
		pids[i] = w.pid()
	}
	modelCPU := descendantsCPU(pids)
	wal := h.walBytes(ctx)
	before := h.commandStats(ctx)
	waits := h.sampleWaits(ctx, "gridbatch-worker")
	args := []string{"run", "--kind", kind, "--bbox", h.cfg.BBox.String(), "--step", strconv.FormatFloat(step, 'g', -1, 64),
		"--chunk-size", strconv.Itoa(h.cfg.ChunkSize), "--wait", "--progress-interval", "10s"}
	start := time.Now()
	out, enqCPU, err := h.outputCPU(ctx, filepath.Join(h.cfg.BinDir, "enqueuer"), h.env(), args...)
	p.WallSeconds = time.Since(start).Seconds()
	if err != nil {
		return p, fmt.Errorf("pipeline at step %g: %w", step, err)
	}
	used := meter.stop(ctx, h)
	waitsSeen := waits.result(12)
	used.Enqueuer = enqCPU.Seconds()
	used.Models = sinceCPU(modelCPU, descendantsCPU(pids))
	for i, w := range workers {
		c, _ := procCPU(w.pid())
		used.Workers += (c - workerCPU[i]).Seconds()
	}
	p.BatchID, _, _ = strings.Cut(out, "\n")
	calls, evalsha := h.commandStats(ctx).sub(before, "evalsha")
	b, err := h.st.GetBatch(ctx, p.BatchID)
	if err != nil {
		return p, err
	}
	if b.Status != store.StatusSucceeded || b.DurationSeconds == nil {
		return p, fmt.Errorf("pipeline batch %s ended %s", b.ID, b.Status)
	}
	p.Kind = kind
	fl, ok := h.finishLine(b.ID)
	if !ok {
		return p, fmt.Errorf("pipeline batch %s: no worker logged \"batch finished\"", b.ID)
	}
	secs := fl.At.Sub(b.StartedAt).Seconds()
	p.RecordedSeconds, p.FinishSeconds = *b.DurationSeconds, fl.FinishSeconds
	lastChunk, err := h.st.LastChunkFinishedAt(ctx, b.ID)
	if err != nil {
		return p, err
	}
	if lastChunk != nil {
		p.TailSeconds = fl.At.Sub(*lastChunk).Seconds()
	}
	p.RunFigure = RunFigure{Step: step, Cells: b.TotalCells, Chunks: b.TotalChunks, Seconds: secs,
		CellsPerSecond: float64(b.TotalCells) / secs, CPUBusy: busySince(cpu), CPU: used,
		WALBytes: h.walBytes(ctx) - wal, Waits: waitsSeen, Concurrency: h.cfg.Workers * h.workerConcurrency()}
	if int64(region.NumCells()) != b.TotalCells {
		return p, fmt.Errorf("pipeline batch has %d cells, want %d", b.TotalCells, region.NumCells())
	}
	if b.AvgTaskSeconds != nil {
		p.AvgTaskSeconds = *b.AvgTaskSeconds
	}
	if b.PeakWorkerRSSBytes != nil {
		p.BatchPeakRSSBytes = *b.PeakWorkerRSSBytes
	}
	p.RedisCallsPerChunk = float64(calls) / float64(b.TotalChunks)
	p.EvalshaPerChunk = float64(evalsha) / float64(b.TotalChunks)
	p.Backlog = latencyOf(h.latencies(p.BatchID, b.TotalChunks))
	profiles.Wait()
	return p, errors.Join(profErrs...)
}

// latencies returns the start latencies the workers logged for a batch,
// waiting a moment for the last log lines (they are read asynchronously).
func (h *harness) latencies(batchID string, want int) []float64 {
	var all []float64
	for wait := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		all = all[:0]
		for _, w := range h.workers {
			all = append(all, w.latencies(batchID)...)
		}
		if len(all) >= want || time.Now().After(wait) {
			return all
		}
	}
}

// workerInt is an integer setting of the workers, as they print it; 0 when
// they do not.
func (h *harness) workerInt(key string) int {
	_, v, _ := strings.Cut(pickSettings(h.workerSettings, key), "=")
	n, _ := strconv.Atoi(v)
	return n
}

// workerConcurrency is the workers' GRIDBATCH_CONCURRENCY.
func (h *harness) workerConcurrency() int { return h.workerInt("GRIDBATCH_CONCURRENCY") }

// fetchProfile saves a worker's CPU profile of the next d.
func fetchProfile(ctx context.Context, addr, path string, d time.Duration) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: d + 30*time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile %s: %s", addr, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadFrom(resp.Body)
	return err
}

// probeStep is the grid of the start-latency probe: 19,200 cells over
// Korea, so that its LatencyProbes chunks are small (96 cells at 200) and
// the figure is the queue's latency, not the work's.
const probeStep = 0.05

// latencyProbe measures the start latency of chunk tasks that reach idle
// workers: it records a hazard batch over the probeStep grid with
// LatencyProbes chunks and enqueues them one at a time with the broker's
// EnqueueChunks, 10–90 ms apart (random, so the enqueues fall at every phase
// of the workers' polling), and reads the latency each worker logged.
func (h *harness) latencyProbe(ctx context.Context) (Latency, error) {
	if err := h.reset(ctx, false); err != nil {
		return Latency{}, err
	}
	r, err := h.region(probeStep)
	if err != nil {
		return Latency{}, err
	}
	if _, err := h.st.SeedCells(ctx, r, nil); err != nil { // a no-op when a scaling run seeded it
		return Latency{}, fmt.Errorf("seed the probe's grid: %w", err)
	}
	size := max(1, r.NumCells()/h.cfg.LatencyProbes)
	b, err := h.newBatch(ctx, "probe", grid.KindHazard, r, size)
	if err != nil {
		return Latency{}, err
	}
	pending, err := h.st.PlanChunks(ctx, b)
	if err != nil {
		return Latency{}, err
	}
	for _, c := range pending {
		if err := h.broker.EnqueueChunks(ctx, b, []int{c}); err != nil {
			return Latency{}, err
		}
		select {
		case <-ctx.Done():
			return Latency{}, ctx.Err()
		case <-time.After(10*time.Millisecond + rand.N(80*time.Millisecond)):
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		cur, err := h.st.GetBatch(ctx, b.ID)
		if err != nil {
			return Latency{}, err
		}
		if cur.Ended() {
			if cur.Status != store.StatusSucceeded {
				return Latency{}, fmt.Errorf("latency probe batch %s ended %s", b.ID, cur.Status)
			}
			break
		}
		if time.Now().After(deadline) {
			return Latency{}, errors.New("latency probe batch did not end within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	all := h.latencies(b.ID, len(pending))
	if len(all) != len(pending) {
		return Latency{}, fmt.Errorf("latency probe: %d start latencies logged for %d chunk tasks", len(all), len(pending))
	}
	return latencyOf(all), nil
}
