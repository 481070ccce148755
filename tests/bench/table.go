package bench

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/numfmt"
)

// Settings are the run's parameters, as the table reports them.
type Settings struct {
	Kind           string
	BBox           string
	Step           float64
	ChunkSize      int
	Workers        int
	WorkerEnv      []string
	WorkerSettings string
	Repeat         int
	// ModelsFile is the workers' GRIDBATCH_MODELS_FILE; ProcessKind the
	// kind of figure 8 and ProcessCommand what it runs.
	ModelsFile, ProcessKind, ProcessCommand string
}

// Latency summarises start latencies in seconds.
type Latency struct {
	N             int
	P50, P99, Max float64
}

// latencyOf returns the nearest-rank percentiles of xs.
func latencyOf(xs []float64) Latency {
	if len(xs) == 0 {
		return Latency{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Latency{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

// Target is one of the targets and whether the run met it.
type Target struct {
	Name, Want, Got string
	Met             bool
}

// Table is every figure of a run.
type Table struct {
	Machine Machine
	Config  Settings
	// Kernel is figure 1, Seed figure 2 (the go test benchmark's grids, then
	// the harness's own seeding).
	Kernel []KernelFigure
	Seed   []SeedFigure
	// Fanout is figure 3.
	Fanout FanoutFigure
	// LowerBoundRuns and PipelineRuns are every measurement at Config.Step;
	// LowerBound and Pipeline (figures 4 and 5) are the median of each (by
	// cells/s; the upper median of an even count).
	LowerBoundRuns []RunFigure
	PipelineRuns   []PipelineFigure
	LowerBound     RunFigure
	Pipeline       PipelineFigure
	// Ratios are pipeline / lower bound cells/s of each pair of runs (run i
	// of each, measured back to back, so drift in the machine between pairs
	// cancels out); Ratio is their median, the target's figure. RatioOfMedians
	// and RatioBest compare the medians and the fastest runs.
	Ratios                           []float64
	Ratio, RatioOfMedians, RatioBest float64
	// Scaling is figure 6: the pipeline at every scaling step, coarsest first.
	Scaling []PipelineFigure
	// Workers (figure 7) are the worker processes, which served every
	// pipeline run; Idle is the start latency of chunk tasks reaching them
	// idle (figure 7).
	Workers []WorkerFigure
	Idle    *Latency
	// OwnConcurrency is the pipeline at Step once more, with each worker at
	// its own default concurrency instead of the harness's one chunk per
	// core; nil when Config.WorkerEnv set the concurrency.
	OwnConcurrency *PipelineFigure
	// ProcessRuns are figure 8: the process model's batch at Config.Step,
	// each measured right after the pipeline run of the same index; Process
	// is their median (by cells/s). ProcessRatios are each one's cells/s
	// over its pipeline run's, ProcessRatio their median, the target's
	// figure.
	ProcessRuns   []ProcessFigure
	Process       ProcessFigure
	ProcessRatios []float64
	ProcessRatio  float64
	Targets       []Target
	// Compare is figures 9 and 10, nil without Config.Baseline.
	Compare *Comparison
	// Delay is figure 11, nil when not measured.
	Delay *DelayFigure
	// Generated is when the run ended; Elapsed how long it took.
	Generated time.Time
	Elapsed   time.Duration
}

const mib = 1 << 20

// finish picks the median runs and checks the targets.
func (t *Table) finish() {
	t.Generated = time.Now().UTC()
	byRate := func(a, b float64) int { return cmpFloat(a, b) }
	if n := len(t.LowerBoundRuns); n > 0 {
		runs := slices.Clone(t.LowerBoundRuns)
		slices.SortFunc(runs, func(a, b RunFigure) int { return byRate(a.CellsPerSecond, b.CellsPerSecond) })
		t.LowerBound = runs[n/2]
		bestLB := runs[n-1].CellsPerSecond
		if m := len(t.PipelineRuns); m > 0 {
			pipes := slices.Clone(t.PipelineRuns)
			slices.SortFunc(pipes, func(a, b PipelineFigure) int { return byRate(a.CellsPerSecond, b.CellsPerSecond) })
			t.Pipeline = pipes[m/2]
			t.RatioBest = pipes[m-1].CellsPerSecond / bestLB
		}
	}
	if t.LowerBound.CellsPerSecond > 0 {
		t.RatioOfMedians = t.Pipeline.CellsPerSecond / t.LowerBound.CellsPerSecond
	}
	for i := range min(len(t.LowerBoundRuns), len(t.PipelineRuns)) {
		t.Ratios = append(t.Ratios, t.PipelineRuns[i].CellsPerSecond/t.LowerBoundRuns[i].CellsPerSecond)
	}
	t.Ratio = median(t.Ratios)
	t.Scaling = append(t.Scaling, t.Pipeline)
	slices.SortFunc(t.Scaling, func(a, b PipelineFigure) int { return -cmpFloat(a.Step, b.Step) })

	t.Targets = append(t.Targets, Target{Name: "pipeline vs lower bound (median of the paired runs' ratios)", Want: "≥ 0.90",
		Got: fmt.Sprintf("%.3f (pairs: %s; medians: %.3f; fastest runs: %.3f)", t.Ratio, ratios(t.Ratios), t.RatioOfMedians, t.RatioBest),
		Met: t.Ratio >= 0.90})
	if n := len(t.ProcessRuns); n > 0 {
		runs := slices.Clone(t.ProcessRuns)
		slices.SortFunc(runs, func(a, b ProcessFigure) int { return byRate(a.CellsPerSecond, b.CellsPerSecond) })
		t.Process = runs[n/2]
		for i := range min(n, len(t.PipelineRuns)) {
			t.ProcessRatios = append(t.ProcessRatios, t.ProcessRuns[i].CellsPerSecond/t.PipelineRuns[i].CellsPerSecond)
		}
		t.ProcessRatio = median(t.ProcessRatios)
		c := t.Config
		t.Targets = append(t.Targets, Target{Name: fmt.Sprintf("%s (model processes) vs %s (Go) pipeline cells/s (median of the paired runs' ratios)", c.ProcessKind, c.Kind),
			Want: "≥ 0.70", Got: fmt.Sprintf("%.3f (pairs: %s; medians: %s vs %s cells/s)", t.ProcessRatio, ratios(t.ProcessRatios),
				count(t.Process.CellsPerSecond), count(t.Pipeline.CellsPerSecond)), Met: t.ProcessRatio >= 0.70})
		last := t.ProcessRuns[n-1].Starts
		t.Targets = append(t.Targets, Target{Name: c.ProcessKind + " model process starts",
			Want: fmt.Sprintf("the workers' processes (%d), not one per chunk (%s a batch)", last.Processes, count(float64(t.ProcessRuns[n-1].Chunks))),
			Got:  fmt.Sprintf("%s during the %d batches; %d since the workers started", startsDuring(t.ProcessRuns), n, last.Total),
			Met:  last.Total > 0 && last.Total <= last.Processes})
	}
	if len(t.Scaling) > 1 {
		coarse, fine := t.Scaling[0], t.Scaling[len(t.Scaling)-1]
		r := fine.CellsPerSecond / coarse.CellsPerSecond
		t.Targets = append(t.Targets, Target{Name: fmt.Sprintf("cells/s at step %g vs %g", fine.Step, coarse.Step),
			Want: "≥ 0.85 (within 15%)", Got: fmt.Sprintf("%.3f", r), Met: r >= 0.85})
	}
	for _, k := range t.Kernel {
		if k.Kind != grid.KindPH {
			continue
		}
		t.Targets = append(t.Targets, Target{Name: "Go ph kernel vs numpy's, ns/cell on one core (medians of alternated runs)", Want: "≤ 1.0",
			Got: fmt.Sprintf("%.3f (%s vs %s ns/cell; CPU time: %.3f)", k.NsPerCell/k.NumpyNsPerCell, count(k.NsPerCell), count(k.NumpyNsPerCell), k.CPUNsPerCell/k.NumpyCPUNsPerCell),
			Met: k.NsPerCell <= k.NumpyNsPerCell})
	}
	if d := t.Delay; d != nil {
		t.Targets = append(t.Targets, Target{Name: fmt.Sprintf("pipeline cells/s with %s injected each way to Redis and PostgreSQL vs loopback, default settings (median of the rounds' ratios)", d.Delay),
			Want: "≥ 0.80", Got: fmt.Sprintf("%.3f (rounds: %s; against the same proxies with no delay: %.3f)", d.Ratio, ratios(d.Ratios), d.ProxiedRatio), Met: d.Ratio >= 0.80})
	}
	t.Targets = append(t.Targets, Target{Name: "fan-out", Want: "≥ 20,000 tasks/s",
		Got: count(t.Fanout.TasksPerSecond) + " tasks/s", Met: t.Fanout.TasksPerSecond >= 20_000})
	if c := t.Compare; c != nil {
		base, tree := c.sideRuns()
		t.Targets = append(t.Targets, Target{Name: fmt.Sprintf("pipeline cells/s at step %s, this tree vs %s (median of the paired runs' ratios; time through the publication)", stepStr(t.Config.Step), c.Baseline),
			Want: "≥ 1.6", Got: fmt.Sprintf("%.3f (pairs: %s; medians: %s vs %s cells/s; on the recorded durations: %.3f)", c.Ratio, ratios(c.Ratios),
				count(medianRate(tree)), count(medianRate(base)), c.RecordedRatio), Met: c.Ratio >= 1.6})
		if r := c.Results; r != nil {
			t.Targets = append(t.Targets, Target{Name: fmt.Sprintf("`enqueuer results` for one cell, p50, with %d retained batches of %s cells (store.ReadSeries, the command's query)", r.Batches, count(float64(r.CellsPerBatch))),
				Want: "≤ 5 ms", Got: fmt.Sprintf("%s (p99 %s; the view ph_timeseries: p50 %s, p99 %s; the binary end to end: p50 %s)", ms(r.Query.P50), ms(r.Query.P99), ms(r.View.P50), ms(r.View.P99), ms(r.Binary.P50)),
				Met: r.Query.N > 0 && r.Query.P50 <= 0.005})
		}
	}
	var peak int64
	for _, w := range t.Workers {
		peak = max(peak, w.PeakRSSBytes)
	}
	t.Targets = append(t.Targets, Target{Name: "worker peak RSS", Want: "≤ 150 MiB",
		Got: fmt.Sprintf("%.0f MiB (largest)", float64(peak)/mib), Met: peak > 0 && peak <= 150*mib})
	if t.Idle != nil {
		t.Targets = append(t.Targets, Target{Name: "chunk-task start latency p50", Want: "≤ 50 ms",
			Got: ms(t.Idle.P50), Met: t.Idle.N > 0 && t.Idle.P50 <= 0.050})
	}
}

// median is the middle value of xs, the mean of the middle two for an even
// count, 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// startsDuring lists the model process starts during each batch.
func startsDuring(runs []ProcessFigure) string {
	var out []string
	for _, r := range runs {
		out = append(out, strconv.Itoa(r.Starts.During))
	}
	return strings.Join(out, ", ")
}

func ratios(xs []float64) string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprintf("%.3f", x))
	}
	return strings.Join(out, ", ")
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// count formats a number with thousands separators and no decimals.
func count(v float64) string { return numfmt.Int(int64(math.Round(v))) }

func ms(sec float64) string {
	v := sec * 1000
	if v < 10 {
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.0f ms", v)
}

func secs(sec float64) string {
	if sec < 10 {
		return fmt.Sprintf("%.2f s", sec)
	}
	return fmt.Sprintf("%.1f s", sec)
}

// nsRuns lists ns/cell figures.
func nsRuns(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = count(x)
	}
	return strings.Join(s, ", ")
}

func pct(v float64) string { return fmt.Sprintf("%.0f%%", v*100) }

func gib(b int64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }

func stepStr(s float64) string { return strconv.FormatFloat(s, 'g', -1, 64) }

// Figures renders the figures as a Markdown table.
func (t Table) Figures() string {
	var b strings.Builder
	row := func(cells ...string) { b.WriteString("| " + strings.Join(cells, " | ") + " |\n") }
	row("#", "figure", "value", "how")
	row("---", "---", "---:", "---")
	for _, k := range t.Kernel {
		row("1", "kernel, "+k.Kind, fmt.Sprintf("%s ns/cell (numpy: %s ns/cell)", count(k.NsPerCell), count(k.NumpyNsPerCell)),
			fmt.Sprintf("3 scenarios × 80 years per cell, chunks of 500 cells, one core; medians of %d runs each, alternated (Go: %s; numpy: %s); CPU time: Go %s, numpy %s ns/cell; `%s`, `%s`",
				len(k.GoRuns), nsRuns(k.GoRuns), nsRuns(k.NumpyRuns), count(k.CPUNsPerCell), count(k.NumpyCPUNsPerCell), k.Command, k.NumpyCommand))
	}
	for _, s := range t.Seed {
		how := fmt.Sprintf("step %s", stepStr(s.Step))
		if s.Source == "harness" {
			how = fmt.Sprintf("step %s, %s cells in %s (store.SeedCells, as `enqueuer seed`)", stepStr(s.Step), count(float64(s.Cells)), secs(s.Seconds))
		} else {
			how += "; `" + s.Source + "`"
		}
		row("2", "seeding", count(s.CellsPerSecond)+" cells/s", how)
	}
	f := t.Fanout
	row("3", "fan-out", count(f.TasksPerSecond)+" tasks/s",
		fmt.Sprintf("a %s-chunk batch: plan (chunk rows) %s + enqueue %s (%s tasks/s, %d goroutines, %.2f EVALSHA and %.2f Redis commands per task)",
			count(float64(f.Chunks)), secs(f.PlanSeconds), secs(f.EnqueueSeconds), count(f.EnqueuePerSecond), f.EnqueueWorkers,
			float64(f.RedisEvalsha)/float64(max(f.Chunks, 1)), float64(f.RedisCalls)/float64(max(f.Chunks, 1))))
	lb := t.LowerBound
	row("4", "lower bound", count(lb.CellsPerSecond)+" cells/s",
		fmt.Sprintf("step %s, %s cells, %s chunks of %d; one process (the workers' GC setting), %d goroutines, no queue: %s; CPU %s busy",
			stepStr(lb.Step), count(float64(lb.Cells)), count(float64(lb.Chunks)), t.Config.ChunkSize, lb.Concurrency, secs(lb.Seconds), pct(lb.CPUBusy)))
	p := t.Pipeline
	row("5", "pipeline", fmt.Sprintf("%s cells/s (%.3f × lower bound)", count(p.CellsPerSecond), t.Ratio),
		fmt.Sprintf("`enqueuer run --wait` + %d running worker processes (%d chunks in flight): batch %s (wall %s; recorded duration %s; of it the finish transaction, which publishes, %s); CPU %s busy; %.1f Redis commands per chunk",
			len(t.Workers), p.Concurrency, secs(p.Seconds), secs(p.WallSeconds), secs(p.RecordedSeconds), finishSecs(p.FinishSeconds), pct(p.CPUBusy), p.RedisCallsPerChunk))
	if o := t.OwnConcurrency; o != nil {
		row("5", "pipeline, workers at their default concurrency", fmt.Sprintf("%s cells/s (%.3f × lower bound)", count(o.CellsPerSecond), o.CellsPerSecond/lb.CellsPerSecond),
			fmt.Sprintf("as above but %d chunks in flight (GRIDBATCH_CONCURRENCY unset: its default per worker, 4 × GOMAXPROCS): batch %s; CPU %s busy; one run, compared with the median lower bound",
				o.Concurrency, secs(o.Seconds), pct(o.CPUBusy)))
	}
	var sc []string
	for _, s := range t.Scaling {
		sc = append(sc, fmt.Sprintf("%s: %s", stepStr(s.Step), count(s.CellsPerSecond)))
	}
	var scHow []string
	for _, s := range t.Scaling {
		scHow = append(scHow, fmt.Sprintf("%s: %s cells in %s", stepStr(s.Step), count(float64(s.Cells)), secs(s.Seconds)))
	}
	row("6", "scaling (cells/s by step)", strings.Join(sc, "; "), "pipeline as in 5; "+strings.Join(scHow, "; "))
	var rss []string
	for _, w := range t.Workers {
		rss = append(rss, fmt.Sprintf("%.0f MiB", float64(w.PeakRSSBytes)/mib))
	}
	row("7", "worker peak RSS", strings.Join(rss, ", "), fmt.Sprintf("VmHWM of each worker process after all %d pipeline batches and the latency probe (the step-%s batch's peak_worker_rss_bytes: %.0f MiB)",
		len(t.PipelineRuns)+len(t.Scaling)-1, stepStr(p.Step), float64(p.BatchPeakRSSBytes)/mib))
	if t.Idle != nil {
		row("7", "chunk-task start latency", fmt.Sprintf("p50 %s, p99 %s", ms(t.Idle.P50), ms(t.Idle.P99)),
			fmt.Sprintf("enqueue to first start, %d small chunk tasks (hazard, step 0.05, 96 cells each at 200) enqueued one at a time (10–90 ms apart) to the idle workers; max %s", t.Idle.N, ms(t.Idle.Max)))
	}
	row("7", "chunk-task queue wait in the batch", fmt.Sprintf("p50 %s, p99 %s", secs(p.Backlog.P50), secs(p.Backlog.P99)),
		fmt.Sprintf("enqueue to first start of the %s chunk tasks of the step-%s batch, all enqueued at once: the wait behind earlier chunks", count(float64(p.Backlog.N)), stepStr(p.Step)))
	if n := len(t.ProcessRuns); n > 0 {
		c, m := t.Config, t.Process
		row("8", fmt.Sprintf("model processes: %s", c.ProcessKind), fmt.Sprintf("%s cells/s (%.3f × %s pipeline)", count(m.CellsPerSecond), t.ProcessRatio, c.Kind),
			fmt.Sprintf("`%s` (GRIDBATCH_MODELS_FILE=%s), step %s, %s cells, %s chunks, through the same %d workers and settings as 5 (%d model processes, %d chunks in flight), each batch right after a pipeline run of 5: batch %s (wall %s); CPU %s busy; CPU core-s: PostgreSQL %.1f, workers %.1f, model processes %.1f (the median %s pipeline of 5: %.1f, %.1f, %.1f); ratio: median of the %d pairs' ratios",
				c.ProcessCommand, c.ModelsFile, stepStr(m.Step), count(float64(m.Cells)), count(float64(m.Chunks)), len(t.Workers), m.Starts.Processes, m.Concurrency,
				secs(m.Seconds), secs(m.WallSeconds), pct(m.CPUBusy), m.CPU.Postgres, m.CPU.Workers, m.CPU.Models,
				c.Kind, p.CPU.Postgres, p.CPU.Workers, p.CPU.Models, n))
		last := t.ProcessRuns[n-1].Starts
		row("8", fmt.Sprintf("model process starts, %s", c.ProcessKind), fmt.Sprintf("%s per batch; %d in all", startsDuring(t.ProcessRuns), last.Total),
			fmt.Sprintf("\"model process started\" lines of kind %s in the workers' logs: during each of the %d batches of %s chunks, and since the workers started (a worker starts one process of each model kind when it starts; %d workers × %d process(es) each = %d)",
				c.ProcessKind, n, count(float64(m.Chunks)), len(t.Workers), last.Processes/max(len(t.Workers), 1), last.Processes))
	}
	if c := t.Compare; c != nil {
		t.compareRows(row)
	}
	if d := t.Delay; d != nil && len(d.Delayed) > 0 {
		lo, px, de := pipelineRates(d.Loopback), pipelineRates(d.Proxied), pipelineRates(d.Delayed)
		var proxyCPU []float64
		for _, r := range d.Delayed {
			proxyCPU = append(proxyCPU, r.CPU.Harness)
		}
		row("11", fmt.Sprintf("pipeline with %s injected each way", d.Delay), fmt.Sprintf("%s vs %s cells/s on loopback (%.3f ×); %.3f × the same proxies with no delay", count(median(de)), count(median(lo)), d.Ratio, d.ProxiedRatio),
			fmt.Sprintf("step %s, %d rounds (loopback, through the proxies with no delay, delayed): %s, %s and %s cells/s; every binary reaches Redis and PostgreSQL through %s (round trips through it: Redis %s, PostgreSQL %s), whose copying took %.1f core-s of a delayed batch (median); the workers at their default settings (%d chunks in flight); %.1f Redis commands per chunk",
				stepStr(t.Config.Step), len(d.Ratios), nsRuns(lo), nsRuns(px), nsRuns(de), d.Proxy, ms(d.RedisRTT.Seconds()), ms(d.PostgresRTT.Seconds()), median(proxyCPU), d.Delayed[0].Concurrency, d.Delayed[0].RedisCallsPerChunk))
	}
	return b.String()
}

// pipelineRates returns the cells/s of runs.
func pipelineRates(runs []PipelineFigure) []float64 {
	out := make([]float64, len(runs))
	for i, r := range runs {
		out[i] = r.CellsPerSecond
	}
	return out
}

// sideRuns splits the comparison's pairs by side.
func (c *Comparison) sideRuns() (base, tree []CompareRun) {
	for _, r := range c.Runs {
		if r.Side == sideBaseline {
			base = append(base, r)
		} else {
			tree = append(tree, r)
		}
	}
	return base, tree
}

// medianRate is the median cells/s of runs.
func medianRate(runs []CompareRun) float64 {
	var xs []float64
	for _, r := range runs {
		xs = append(xs, r.CellsPerSecond)
	}
	return median(xs)
}

func finishSecs(s float64) string {
	if s < 0 {
		return "not logged"
	}
	return secs(s)
}

// compareRows renders figures 9 and 10.
func (t Table) compareRows(row func(...string)) {
	c := t.Compare
	base, tree := c.sideRuns()
	if len(base) == 0 || len(tree) == 0 {
		return
	}
	var recB, recT []float64
	for _, r := range base {
		recB = append(recB, r.RecordedSeconds)
	}
	for _, r := range tree {
		recT = append(recT, r.RecordedSeconds)
	}
	row("9", fmt.Sprintf("pipeline, this tree vs %s", c.Baseline), fmt.Sprintf("%s vs %s cells/s (%.3f × %s)", count(medianRate(tree)), count(medianRate(base)), c.Ratio, c.Baseline),
		fmt.Sprintf("ph, step %s, %s cells, %s chunks, %d worker processes (%s; no models file) started for each batch; %d pairs, %s (`%s`, built from git in a temporary worktree with `go build ./cmd/...` in %.0f s; its workers: %s) then this tree, each batch on a fresh schema made by its own side's `enqueuer migrate` and seeded by its `enqueuer seed` (then VACUUM ANALYZE, a checkpoint); "+
			"time: the batch's started_at to the workers' \"batch finished\" line, after the finish transaction commits (this tree: after the publication); medians %s vs %s (recorded durations: %s vs %s, ratio %.3f); ratio: median of the pairs' ratios (%s)",
			stepStr(t.Config.Step), count(float64(tree[0].Cells)), count(float64(tree[0].Chunks)), t.Config.Workers, c.Settings, len(c.Ratios), c.Baseline, c.BaselineDesc, c.BuildSeconds, c.BaselineSettings,
			secs(median(secondsOf(tree))), secs(median(secondsOf(base))), secs(median(recT)), secs(median(recB)), c.RecordedRatio, ratios(c.Ratios))+
			fmt.Sprintf("; CPU core-s per batch of its own processes (PostgreSQL sessions and background, workers, Redis, enqueuer), medians: %.1f vs %.1f (%.2f×), of which PostgreSQL sessions %.1f vs %.1f; of everything else on the machine: %.1f vs %.1f",
				median(cpuOf(tree, ownCPU)), median(cpuOf(base, ownCPU)), median(cpuOf(base, ownCPU))/median(cpuOf(tree, ownCPU)),
				median(cpuOf(tree, func(c CPU) float64 { return c.PostgresSessions })), median(cpuOf(base, func(c CPU) float64 { return c.PostgresSessions })),
				median(cpuOf(tree, elseCPU)), median(cpuOf(base, elseCPU))))
	var fin, tail []string
	var finT, shares []float64
	all := append(append([]CompareRun{}, tree...), c.Retained...)
	for _, r := range all {
		fin = append(fin, fmt.Sprintf("%.2f", r.FinishSeconds))
		tail = append(tail, fmt.Sprintf("%.2f", r.TailSeconds))
		finT = append(finT, r.FinishSeconds)
		shares = append(shares, r.FinishSeconds/r.Seconds)
	}
	var baseTail []string
	for _, r := range base {
		baseTail = append(baseTail, fmt.Sprintf("%.2f", r.TailSeconds))
	}
	row("9", "publication of a batch (this tree)", fmt.Sprintf("%s (%s of the batch)", secs(median(finT)), pct(median(shares))),
		fmt.Sprintf("the finish transaction of this tree's %s-cell batches, begin to commit, as the worker logs it (finish_seconds of \"batch finished\"): final counts and status, CREATE INDEX (grid_id) on the batch's table (a row per cell), ATTACH PARTITION, published_batches; "+
			"each batch of 9, then %d more into the last one's schema (with 1, 2, … published batches already there): %s s; median; figures 5, 6, 8 and 9 time a batch to the \"batch finished\" line, so they include it (as this tree's recorded duration_seconds does). Last chunk's finished_at to \"batch finished\": %s s (%s: %s s)",
			count(float64(tree[0].Cells)), len(c.Retained), strings.Join(fin, ", "), strings.Join(tail, ", "), c.Baseline, strings.Join(baseTail, ", ")))
	if r := c.Results; r != nil {
		row("10", "`enqueuer results`, one cell", fmt.Sprintf("p50 %s, p99 %s (query); p50 %s, p99 %s (view); p50 %s, p99 %s (binary)", ms(r.Query.P50), ms(r.Query.P99), ms(r.View.P50), ms(r.View.P99), ms(r.Binary.P50), ms(r.Binary.P99)),
			fmt.Sprintf("the schema of 9's last pair holding %d batches of %s cells, all published (ph_results, a row per cell); query: store.ReadSeries, what `enqueuer results --kind ph` runs (the cell's rows, decoded in Go), on this process's warm pool, %d random cells and scenarios, every one returning the batch published last (%s). View: one cell and scenario from ph_timeseries, as a site API reads it (decoded in SQL by gridbatch_float8s), %d random reads; plan: %s. Binary: `enqueuer results --kind ph --step %s` of this tree, %d random cells, process start to exit (start, connect, query, print)",
				r.Batches, count(float64(r.CellsPerBatch)), r.Query.N, r.Latest, r.View.N, r.Plan, stepStr(t.Config.Step), r.Binary.N))
	}
}

// ownCPU is the CPU of a run's own processes: its PostgreSQL sessions and
// the server's background processes, the workers, Redis and the enqueuer.
func ownCPU(c CPU) float64 {
	return c.PostgresSessions + c.PostgresBackground + c.Workers + c.Harness + c.Models + c.Redis + c.Enqueuer
}

// elseCPU is the machine's busy time outside a run's own processes
// (other PostgreSQL sessions, other processes, the kernel).
func elseCPU(c CPU) float64 { return c.Machine - ownCPU(c) }

func cpuOf(runs []CompareRun, f func(CPU) float64) []float64 {
	var xs []float64
	for _, r := range runs {
		xs = append(xs, f(r.CPU))
	}
	return xs
}

func secondsOf(runs []CompareRun) []float64 {
	var xs []float64
	for _, r := range runs {
		xs = append(xs, r.Seconds)
	}
	return xs
}

// TargetsTable renders the targets as a Markdown table.
func (t Table) TargetsTable() string {
	var b strings.Builder
	b.WriteString("| target | want | got | met |\n|---|---|---|---|\n")
	for _, x := range t.Targets {
		met := "no"
		if x.Met {
			met = "yes"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", x.Name, x.Want, x.Got, met)
	}
	return b.String()
}

// MachineTable renders the machine as a Markdown table.
func (t Table) MachineTable() string {
	m := t.Machine
	var b strings.Builder
	b.WriteString("| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPU | %d cores, %s |\n", m.Cores, m.CPUModel)
	fmt.Fprintf(&b, "| memory | %s |\n", gib(m.MemoryBytes))
	fmt.Fprintf(&b, "| OS | %s |\n", m.Kernel)
	fmt.Fprintf(&b, "| Go | %s |\n", m.Go)
	fmt.Fprintf(&b, "| Redis | %s, on the same machine |\n", m.Redis)
	fmt.Fprintf(&b, "| PostgreSQL | %s, on the same machine (%s) |\n", m.Postgres, m.PostgresNotes)
	fmt.Fprintf(&b, "| load average (1, 5, 15 min) | %s at the start, %s at the end |\n", m.LoadBefore, m.LoadAfter)
	return b.String()
}

// RunsTable lists every measured run.
func (t Table) RunsTable() string {
	var b strings.Builder
	b.WriteString("| run | step | cells | seconds | cells/s | chunks in flight | CPU busy | CPU core-s: PostgreSQL (its run's sessions, background) / Go (workers or harness) / model processes / Redis / enqueuer / other | WAL written |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---|---:|\n")
	line := func(name string, r RunFigure) {
		c := r.CPU
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %s | %d | %s | %.1f (%.1f, %.1f) / %.1f / %.1f / %.1f / %.1f / %.1f | %s |\n", name, stepStr(r.Step), count(float64(r.Cells)),
			r.Seconds, count(r.CellsPerSecond), r.Concurrency, pct(r.CPUBusy), c.Postgres, c.PostgresSessions, c.PostgresBackground, c.Workers+c.Harness, c.Models, c.Redis, c.Enqueuer, c.Other(),
			fmt.Sprintf("%.0f MiB", float64(r.WALBytes)/mib))
	}
	for i, r := range t.LowerBoundRuns {
		line(fmt.Sprintf("lower bound #%d", i+1), r)
	}
	for i, r := range t.PipelineRuns {
		name := fmt.Sprintf("pipeline #%d", i+1)
		if i < len(t.Ratios) {
			name += fmt.Sprintf(" (%.3f × lower bound #%d)", t.Ratios[i], i+1)
		}
		line(name, r.RunFigure)
	}
	for i, r := range t.ProcessRuns {
		name := fmt.Sprintf("%s pipeline #%d", t.Config.ProcessKind, i+1)
		if i < len(t.ProcessRatios) {
			name += fmt.Sprintf(" (%.3f × pipeline #%d)", t.ProcessRatios[i], i+1)
		}
		line(name, r.RunFigure)
	}
	for _, r := range t.Scaling {
		if r.Step != t.Config.Step {
			line("pipeline", r.RunFigure)
		}
	}
	if o := t.OwnConcurrency; o != nil {
		line("pipeline, workers at their default concurrency", o.RunFigure)
	}
	if c := t.Compare; c != nil {
		for _, r := range c.Runs {
			line(compareName(c, r), r.RunFigure)
		}
		for _, r := range c.Retained {
			line(compareName(c, r), r.RunFigure)
		}
	}
	b.WriteString("\nPostgreSQL sessions of each run by state and wait event (pg_stat_activity sampled every 50 ms; average sessions):\n\n")
	for i, r := range t.LowerBoundRuns {
		fmt.Fprintf(&b, "- lower bound #%d: %s\n", i+1, r.Waits)
	}
	for i, r := range t.PipelineRuns {
		fmt.Fprintf(&b, "- pipeline #%d: %s\n", i+1, r.Waits)
	}
	for i, r := range t.ProcessRuns {
		fmt.Fprintf(&b, "- %s pipeline #%d: %s\n", t.Config.ProcessKind, i+1, r.Waits)
	}
	if o := t.OwnConcurrency; o != nil {
		fmt.Fprintf(&b, "- pipeline, workers at their default concurrency: %s\n", o.Waits)
	}
	if c := t.Compare; c != nil {
		for _, r := range append(append([]CompareRun{}, c.Runs...), c.Retained...) {
			fmt.Fprintf(&b, "- %s: %s\n", compareName(c, r), r.Waits)
		}
	}
	return b.String()
}

// compareName names a run of the comparison in the runs table.
func compareName(c *Comparison, r CompareRun) string {
	side := r.Side
	if side == sideBaseline {
		side = c.Baseline
	}
	fin := ""
	if r.FinishSeconds >= 0 {
		fin = fmt.Sprintf(", finish %.2f s", r.FinishSeconds)
	}
	if r.Pair == 0 {
		return fmt.Sprintf("retained: %s, %d batch(es) already in its schema (recorded %.2f s%s)", side, r.Before, r.RecordedSeconds, fin)
	}
	name := fmt.Sprintf("compare pair %d: %s (recorded %.2f s%s)", r.Pair, side, r.RecordedSeconds, fin)
	if r.Side == sideThisTree && r.Pair <= len(c.Ratios) {
		name += fmt.Sprintf(" (%.3f × %s)", c.Ratios[r.Pair-1], c.Baseline)
	}
	return name
}

// Markdown renders the whole report: BENCHMARKS.md.
func (t Table) Markdown() string {
	var b strings.Builder
	b.WriteString("# gridbatch benchmarks\n\n")
	fmt.Fprintf(&b, "Measured by `make bench` on %s in %s, on the machine below. `make bench` rewrites\nthis file; run it on an otherwise idle machine.\n\n",
		t.Generated.Format("2006-01-02 15:04 MST"), t.Elapsed.Round(time.Second))
	b.WriteString("## Machine\n\n" + t.MachineTable() + "\n")
	c := t.Config
	fmt.Fprintf(&b, "## Figures\n\nKind %s, bbox %s, chunk size %d, %d worker processes (%s", c.Kind, c.BBox, c.ChunkSize, c.Workers, c.WorkerSettings)
	if len(c.WorkerEnv) > 0 {
		fmt.Fprintf(&b, "; with %s", strings.Join(c.WorkerEnv, " "))
	}
	if c.ModelsFile != "" {
		fmt.Fprintf(&b, "; every binary with GRIDBATCH_MODELS_FILE=%s", c.ModelsFile)
	}
	fmt.Fprintf(&b, "). Figures 4 and 5 are the median of %d measurements each, taken in pairs (lower bound, then pipeline); the ratio in 5 is the median of the pairs' ratios.", c.Repeat)
	if c.ProcessKind != "" {
		fmt.Fprintf(&b, " Figure 8 is the median of %d batches of %s, each right after a pipeline run of 5 (lower bound, pipeline, %s, in turn); its ratio is the median of those pairs' ratios.", c.Repeat, c.ProcessKind, c.ProcessKind)
	}
	if t.Compare != nil {
		fmt.Fprintf(&b, " Figure 9 compares this tree's pipeline with %s's, built from git, in %d interleaved pairs of batches on fresh schemas; figure 10 reads the published values with %d batches retained.", t.Compare.Baseline, c.Repeat, len(t.Compare.Retained)+1)
	}
	b.WriteString(" Every run is listed under \"Every run\".\n\n")
	b.WriteString(t.Figures() + "\n")
	b.WriteString("## Targets\n\n" + t.TargetsTable() + "\n")
	b.WriteString("## Every run\n\n" + t.RunsTable() + "\n")
	b.WriteString(howProduced)
	return b.String()
}

const howProduced = `## How these figures are produced

` + "`make bench`" + ` (services up, binaries built) runs ` + "`go test -tags bench -run TestBench ./tests/bench/`" + `,
which calls ` + "`Run` of package tests/bench" + ` on a fresh Redis database and PostgreSQL schema of its own:

1. **Kernel**: ` + "`go test -bench BenchmarkCompute ./internal/grid/`" + `, ns per cell (3 scenarios × 80 years), beside
   the numpy reference kernel (examples/python/reference_model.py, one core) timed on the same 500 cells by
   ` + "`tests/bench/numpy_kernel.py`" + `, the two alternated three times and the medians compared.
2. **Seeding**: ` + "`go test -bench BenchmarkSeedCells ./internal/store/`" + `, and the harness timing
   ` + "`store.SeedCells`" + ` (what ` + "`enqueuer seed`" + ` runs) for the grids it needs.
3. **Fan-out**: the plan task's code in-process, no worker running: ` + "`store.PlanChunks`" + ` (the chunk rows)
   then ` + "`tasks.Broker.EnqueueChunks`" + ` (one asynq task per chunk, the worker's settings).
4. **Lower bound**: the worker's chunk code, ` + "`batch.Service.RunChunk`" + ` (load the inputs in one query, compute,
   ` + "`store.WriteChunk`" + `: binary COPY into the batch's own table, a row per cell with its series as raw float64s, and the chunk's outcome in one
   transaction), over every chunk in GOMAXPROCS goroutines of one process, no queue; timed from
   the plan to the commit of the batch's finish (which publishes it).
5. **Pipeline**: the built binaries: ` + "`enqueuer run --wait`" + ` and worker processes started once and kept
   for every pipeline batch, as long-lived workers are (the coarser scaling steps run first and
   warm them up); cells/s is the batch's cells over its time from started_at to the workers'
   "batch finished" line, logged once the finish transaction (the publication) has committed; the
   recorded duration (started_at to ended_at, which includes the publication) agrees within ms.
   The lower bound and the pipeline are measured in pairs, back to back, so the ratio of each pair
   is little affected by drift in the machine; the lower bound runs with the workers' GC setting.
6. **Scaling**: the pipeline at each step.
7. **Memory and latency**: VmHWM of each worker from /proc after all its batches. Start latency:
   chunk payloads carry ` + "`enqueued_at_unix_nano`" + `; the worker logs each chunk task's first start against
   it (debug level; the workers run with GRIDBATCH_LOG_LEVEL=debug). The figure is taken with idle
   workers, chunk tasks enqueued one at a time; inside a batch a task's wait is mostly the queue
   ahead of it, reported separately.
8. **Model processes**: with a models file (` + "`make bench`" + `: examples/models.yaml, given to every binary,
   its results tables created as ` + "`enqueuer migrate`" + ` does), the same batch of a kind run as model
   processes (ph_py: the reference ph in numpy through sdk/python/gridbatch_model.py), on the same
   workers with the same settings, right after each pipeline run of 5, which it is compared with.
   Model process starts are the workers' "model process started" log lines of the kind. CPU of
   "model processes" is that of every live process below the workers (the model processes and
   their supervisors), from /proc.
9. **Against a baseline** (` + "`make bench`" + `: fae24c9, the upsert per chunk): its binaries built from git in a
   temporary worktree (` + "`go build ./cmd/...`" + `, the worktree removed). Pairs of ph batches at the step of 5,
   the baseline's then this tree's, each on a fresh schema made by its own ` + "`enqueuer migrate`" + `, seeded by
   its own ` + "`enqueuer seed`" + `, with its own freshly started workers (the settings of 5, no models file),
   after a checkpoint; timed as 5. The publication is the finish transaction as the worker logs it
   (finish_seconds).
10. **Reading the results**: the schema of the last pair is kept and more batches of this tree run into
   it; then random cells are read with ` + "`store.ReadSeries`" + ` (the query of ` + "`enqueuer results`" + `) on a warm pool,
   and with the ` + "`enqueuer results`" + ` binary, a process each.
11. **A network hop**: the pipeline at the step again, the workers at their own default settings, in rounds:
   on loopback, then with every binary (workers and enqueuer) reaching Redis and PostgreSQL through an
   in-process toxiproxy (v2.5.0) with no delay, then through one that adds 1 ms each way; the figure is
   the median of the rounds' delayed / loopback ratios. The proxies copy every byte (a batch's rows are
   about 1 GB) on the same cores as the pipeline: the run with no delay shows what that costs, and the
   delayed / no-delay ratio is the delay's own cost.

Before every measured run every batch's own rows are dropped (nothing published) and PostgreSQL
checkpoints. CPU time
comes from /proc (PostgreSQL: the postmaster and its children, split into the run's own sessions
and background processes) and Redis's INFO cpu; WAL bytes, Redis command counts and PostgreSQL
CPU are server-wide: anything else using the servers at the same time adds to them, and to
"other". The database's sessions are sampled from pg_stat_activity every 50 ms.
`
