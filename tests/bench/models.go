package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/gridbatch/gridbatch/internal/model"
)

// processModel reads the entry of Config.ProcessKind from the models file
// and creates the results tables of the file's kinds, as enqueuer migrate
// does.
func (h *harness) processModel(ctx context.Context) error {
	set, err := model.Load(h.cfg.ModelsFile)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	spec, err := set.Spec(h.cfg.ProcessKind)
	if err != nil {
		return fmt.Errorf("bench: models file %s: %w", h.cfg.ModelsFile, err)
	}
	if !spec.Process() {
		return fmt.Errorf("bench: models file %s: kind %s has no command: not a process model", h.cfg.ModelsFile, spec.Kind)
	}
	h.processSpec = spec
	created, err := h.st.EnsureResultsTables(ctx, set.Kinds())
	if err != nil {
		return fmt.Errorf("bench: results tables of %s: %w", h.cfg.ModelsFile, err)
	}
	h.logf("models file %s: %s runs %q; created %v", h.cfg.ModelsFile, spec.Kind, spec.Source(), created)
	return nil
}

// ModelStarts counts the model processes of the process kind the workers
// started, from their "model process started" log lines.
type ModelStarts struct {
	// During is the starts between the batch's enqueue and its end (the
	// workers start one process of each kind at their own start, so a
	// batch on warm workers starts none).
	During int
	// Total is the starts since the workers started, through the batch.
	Total int
	// Processes is how many processes the workers run of the kind: the
	// spec's processes, else the worker's concurrency, times the workers.
	Processes int
}

// ProcessFigure is a pipeline batch of a process model (figure 8).
type ProcessFigure struct {
	PipelineFigure
	Starts ModelStarts
}

// processPipeline runs a batch of Config.ProcessKind through the running
// workers, as pipeline does for Kind, and counts the model processes
// started for it.
func (h *harness) processPipeline(ctx context.Context, step float64) (ProcessFigure, error) {
	kind := h.cfg.ProcessKind
	before := h.modelStarts(kind)
	p, err := h.pipeline(ctx, kind, step, false)
	if err != nil {
		return ProcessFigure{}, err
	}
	// pipeline waited for the batch's chunk lines, which follow the start
	// lines of the processes that served them.
	after := h.modelStarts(kind)
	per := h.processSpec.Processes
	if per == 0 {
		per = h.workerConcurrency()
	}
	return ProcessFigure{PipelineFigure: p, Starts: ModelStarts{During: after - before, Total: after, Processes: per * len(h.workers)}}, nil
}

// modelStarts is how many model processes of kind the running workers
// have logged starting.
func (h *harness) modelStarts(kind string) int {
	n := 0
	for _, w := range h.workers {
		w.mu.Lock()
		n += w.starts[kind]
		w.mu.Unlock()
	}
	return n
}

// descendantsCPU is the CPU time of every live process below the given
// ones (the workers' model processes and their supervisors), by pid.
func descendantsCPU(roots []int) map[int]time.Duration {
	out := map[int]time.Duration{}
	if len(roots) == 0 {
		return out
	}
	entries, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	stats := map[int][]string{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		s, err := readStat(pid)
		if err != nil {
			continue
		}
		ppid, _ := strconv.Atoi(s[1])
		parent[pid], stats[pid] = ppid, s
	}
	isRoot := map[int]bool{}
	for _, r := range roots {
		isRoot[r] = true
	}
	for pid, s := range stats {
		for p, depth := parent[pid], 0; p > 1 && depth < 64; p, depth = parent[p], depth+1 {
			if isRoot[p] {
				out[pid] = statCPU(s, false)
				break
			}
		}
	}
	return out
}

// sinceCPU sums the CPU each process of now used since then (all of it
// for a process started since).
func sinceCPU(then, now map[int]time.Duration) float64 {
	var d time.Duration
	for pid, c := range now {
		d += c - then[pid]
	}
	return d.Seconds()
}
