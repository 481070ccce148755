package bench

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// benchResult is one line of go test -bench output: the benchmark's name
// (without the -GOMAXPROCS suffix), its iterations and its metrics by unit.
type benchResult struct {
	Name    string
	N       int64
	Metrics map[string]float64
}

// parseBench reads the result lines of go test -bench output.
func parseBench(out string) []benchResult {
	var res []benchResult
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		r := benchResult{Name: name, N: n, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			r.Metrics[f[i+1]] = v
		}
		res = append(res, r)
	}
	return res
}

// goBench runs go test -bench for one benchmark of one package.
func (h *harness) goBench(ctx context.Context, pkg, bench, benchtime string) ([]benchResult, string, error) {
	args := []string{"test", "-run", "^$", "-bench", "^" + bench + "$", "-benchtime", benchtime, "-count", "1", pkg}
	cmdline := "go " + strings.Join(args, " ")
	out, err := h.output(ctx, "go", h.cfg.Env, args...)
	if err != nil {
		return nil, cmdline, fmt.Errorf("%s: %w\n%s", cmdline, err, lastLines(out, 30))
	}
	res := parseBench(out)
	if len(res) == 0 {
		return nil, cmdline, fmt.Errorf("%s printed no benchmark result:\n%s", cmdline, lastLines(out, 30))
	}
	return res, cmdline, nil
}

// KernelFigure is figure 1 for one model kind.
type KernelFigure struct {
	Kind      string
	NsPerCell float64
	Command   string
}

func (h *harness) kernelBench(ctx context.Context) ([]KernelFigure, error) {
	res, cmdline, err := h.goBench(ctx, "./internal/grid/", "BenchmarkCompute", h.cfg.KernelBenchtime)
	if err != nil {
		return nil, err
	}
	var out []KernelFigure
	for _, r := range res {
		kind, ok := strings.CutPrefix(r.Name, "BenchmarkCompute/")
		v, has := r.Metrics["ns/cell"]
		if ok && has {
			out = append(out, KernelFigure{Kind: kind, NsPerCell: v, Command: cmdline})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s reported no ns/cell", cmdline)
	}
	return out, nil
}

// SeedFigure is figure 2 for one grid.
type SeedFigure struct {
	Step           float64
	Cells          int
	Seconds        float64
	CellsPerSecond float64
	// Source is the go test command, or "harness" for the seeding the
	// harness does for its own runs.
	Source string
}

func (h *harness) seedBench(ctx context.Context) ([]SeedFigure, error) {
	res, cmdline, err := h.goBench(ctx, "./internal/store/", "BenchmarkSeedCells", h.cfg.SeedBenchtime)
	if err != nil {
		return nil, err
	}
	var out []SeedFigure
	for _, r := range res {
		s, ok := strings.CutPrefix(r.Name, "BenchmarkSeedCells/step=")
		v, has := r.Metrics["cells/s"]
		if !ok || !has {
			continue
		}
		step, err := strconv.ParseFloat(s, 64)
		if err != nil {
			continue
		}
		out = append(out, SeedFigure{Step: step, CellsPerSecond: v, Source: cmdline})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s reported no cells/s", cmdline)
	}
	return out, nil
}
