package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gridbatch/gridbatch/internal/grid"
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

// KernelFigure is figure 1 for one model kind: the Go kernel and the numpy
// reference kernel on the same cells, each on one core, measured in
// alternation (Go, numpy, Go, numpy, …) so that both see the same load.
type KernelFigure struct {
	Kind string
	// NsPerCell and NumpyNsPerCell are the medians of GoRuns and NumpyRuns
	// (wall clock); CPUNsPerCell and NumpyCPUNsPerCell those of the CPU
	// time each process used, which a busy machine disturbs less.
	NsPerCell, NumpyNsPerCell       float64
	CPUNsPerCell, NumpyCPUNsPerCell float64
	GoRuns, NumpyRuns               []float64
	GoCPURuns, NumpyCPURuns         []float64
	Command, NumpyCommand           string
}

// kernelRounds is how many times figure 1 runs each side.
const kernelRounds = 3

func (h *harness) kernelBench(ctx context.Context) ([]KernelFigure, error) {
	inputs, err := kernelInputs()
	if err != nil {
		return nil, err
	}
	byKind := map[string]*KernelFigure{}
	var out []*KernelFigure
	for round := range kernelRounds {
		res, cmdline, err := h.goBench(ctx, "./internal/grid/", "BenchmarkCompute", h.cfg.KernelBenchtime)
		if err != nil {
			return nil, err
		}
		for _, r := range res {
			kind, ok := strings.CutPrefix(r.Name, "BenchmarkCompute/")
			v, has := r.Metrics["ns/cell"]
			if !ok || !has {
				continue
			}
			k := byKind[kind]
			if k == nil {
				k = &KernelFigure{Kind: kind, Command: cmdline}
				byKind[kind] = k
				out = append(out, k)
			}
			k.GoRuns = append(k.GoRuns, v)
			k.GoCPURuns = append(k.GoCPURuns, r.Metrics["cpu-ns/cell"])
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("%s reported no ns/cell", cmdline)
		}
		for _, k := range out {
			v, cpu, cmdline, err := h.numpyKernel(ctx, k.Kind, inputs)
			if err != nil {
				return nil, err
			}
			k.NumpyRuns, k.NumpyCPURuns = append(k.NumpyRuns, v), append(k.NumpyCPURuns, cpu)
			k.NumpyCommand = cmdline
			h.logf("kernel %s, round %d: Go %.0f ns/cell (CPU %.0f), numpy %.0f ns/cell (CPU %.0f)", k.Kind, round+1,
				k.GoRuns[len(k.GoRuns)-1], k.GoCPURuns[len(k.GoCPURuns)-1], v, cpu)
		}
	}
	figs := make([]KernelFigure, len(out))
	for i, k := range out {
		k.NsPerCell, k.NumpyNsPerCell = median(k.GoRuns), median(k.NumpyRuns)
		k.CPUNsPerCell, k.NumpyCPUNsPerCell = median(k.GoCPURuns), median(k.NumpyCPURuns)
		figs[i] = *k
	}
	return figs, nil
}

// kernelInputs returns BenchmarkCompute's cells (the first 500 of the Korea
// box at step 0.05, reference parameters) as the little-endian float64
// triples mu0, sigma, xi that numpy_kernel.py reads.
func kernelInputs() ([]byte, error) {
	l, err := grid.NewLattice(0.05)
	if err != nil {
		return nil, err
	}
	r, err := grid.NewRegion(l, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}, 0)
	if err != nil {
		return nil, err
	}
	var b []byte
	for _, c := range r.ChunkCells(0, 500) {
		p := grid.ReferenceParams(c.Lat, c.Lon)
		for _, v := range []float64{p.Mu0, p.Sigma, p.Xi} {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	}
	return b, nil
}

// numpyKernel times examples/python/reference_model.py's kind on inputs
// with tests/bench/numpy_kernel.py, on one core, for as long as the Go
// benchmark's benchtime when that is a duration (else 2s). It returns the
// wall-clock and the CPU ns per cell.
func (h *harness) numpyKernel(ctx context.Context, kind string, inputs []byte) (wall, cpu float64, _ string, _ error) {
	d, err := time.ParseDuration(h.cfg.KernelBenchtime)
	if err != nil {
		d = 2 * time.Second
	}
	args := []string{"tests/bench/numpy_kernel.py", kind, strconv.FormatFloat(d.Seconds(), 'g', -1, 64)}
	cmdline := "OMP_NUM_THREADS=1 /usr/bin/python3 " + strings.Join(args, " ")
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", args...)
	cmd.Env = append(slices.Clip(h.cfg.Env), "OMP_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=1", "MKL_NUM_THREADS=1")
	cmd.Dir = h.cfg.RepoRoot
	cmd.Stdin = bytes.NewReader(inputs)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, 0, cmdline, fmt.Errorf("%s: %w\n%s", cmdline, err, lastLines(stderr.String(), 30))
	}
	f := strings.Fields(string(out))
	if len(f) < 4 || f[0] != "ns/cell" || f[2] != "cpu-ns/cell" {
		return 0, 0, cmdline, fmt.Errorf("%s printed %q, want \"ns/cell N cpu-ns/cell N ...\"", cmdline, out)
	}
	if wall, err = strconv.ParseFloat(f[1], 64); err == nil {
		cpu, err = strconv.ParseFloat(f[3], 64)
	}
	if err != nil {
		return 0, 0, cmdline, fmt.Errorf("%s: %w", cmdline, err)
	}
	return wall, cpu, cmdline, nil
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
