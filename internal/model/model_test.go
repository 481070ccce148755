package model_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "models.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

func TestBuiltins(t *testing.T) {
	t.Parallel()
	set := model.Builtins()
	require.Equal(t, []string{"hazard", "ph"}, set.Kinds())
	spec, err := set.Spec("ph")
	require.NoError(t, err)
	require.Equal(t, "built-in", spec.Source())
	require.Equal(t, "ph_timeseries", spec.Table())
	require.Equal(t, []string{"mu0", "sigma", "xi"}, spec.Inputs)
	require.Equal(t, []string{"ssp126", "ssp245", "ssp585"}, spec.Series)
	require.Equal(t, 2021, spec.FirstYear)
	require.Equal(t, 80, spec.Years)
	require.Equal(t, "range: [0, 1]", spec.Checks.String(), "the built-in ph declares its range")
	hz, err := set.Spec("hazard")
	require.NoError(t, err)
	require.False(t, hz.Checks.Declared())

	_, err = set.Spec("x")
	require.ErrorIs(t, err, model.ErrUnknown)
	require.EqualError(t, err, `unknown model kind "x" (known: hazard, ph)`)

	// The built-in computer is the Go kernel.
	c, ok := set.Go("ph")
	require.True(t, ok)
	p := grid.ReferenceParams(37.5, 127)
	v, err := c.Compute(context.Background(), spec, model.Cells{GridID: []int64{1}, Lat: []float64{37.5}, Lon: []float64{127},
		Inputs: [][]float64{{p.Mu0}, {p.Sigma}, {p.Xi}}})
	require.NoError(t, err)
	want, err := grid.PH.Values(context.Background(), []grid.Input{{GridID: 1, Params: p}})
	require.NoError(t, err)
	require.Equal(t, want, v)

	_, err = c.Compute(context.Background(), spec, model.Cells{GridID: []int64{1}, Lat: []float64{0}, Lon: []float64{0},
		Inputs: [][]float64{{30}, {-1}, {0.1}}})
	require.ErrorIs(t, err, model.ErrPermanent, "invalid parameters are not retried: the chunk is split around them")
}

func TestLoadFile(t *testing.T) {
	t.Parallel()
	p := writeFile(t, `
models:
  - kind: ph_py
    command: ["/usr/bin/python3", "model.py", "ph"]
    env: {OMP_NUM_THREADS: "1"}
    timeout: 90s
    memory_limit: 1.5GiB
    processes: 2
  - kind: ph
    command: [/opt/ph]
    inputs: [rain, mu0]
    series: [low, high]
    first_year: 2030
    years: 10
    memory_limit: 1000000
    max_chunks_per_process: 50
    units: "1"
    long_name: probability
    checks:
      range: [0, 1]
      max_nan: 0.01
      min_coverage: 0.95
      max_change: 0.2
`)
	set, err := model.Load(p)
	require.NoError(t, err)
	require.Equal(t, []string{"hazard", "ph", "ph_py"}, set.Kinds())
	py, err := set.Spec("ph_py")
	require.NoError(t, err)
	require.Equal(t, "/usr/bin/python3 model.py ph", py.Source())
	require.Equal(t, filepath.Dir(p), py.Workdir, "workdir defaults to the file's folder")
	require.Equal(t, 90*time.Second, py.Timeout)
	require.EqualValues(t, 3<<29, py.MemoryLimit)
	require.Equal(t, 2, py.Processes)
	require.Equal(t, model.DefaultInputs, py.Inputs)
	require.Equal(t, 2021, py.FirstYear)
	_, isGo := set.Go("ph_py")
	require.False(t, isGo)

	ph, err := set.Spec("ph")
	require.NoError(t, err)
	require.True(t, ph.Process(), "an entry named ph replaces the built-in")
	_, isGo = set.Go("ph")
	require.False(t, isGo)
	require.Equal(t, []string{"rain", "mu0"}, ph.Inputs)
	require.Equal(t, 1000000, int(ph.MemoryLimit))
	require.Equal(t, 20, ph.Values(1))
	require.Equal(t, "probability", ph.LongName)
	require.Equal(t, "range: [0, 1], max_nan: 0.01, min_coverage: 0.95, max_change: 0.2", ph.Checks.String())
	require.True(t, ph.Checks.PartialSuccess(), "min_coverage below 1 opts in to partial success")
	require.False(t, py.Checks.Declared(), "no checks unless declared")
	require.Equal(t, []string{"mu0", "rain", "sigma", "xi"}, set.Inputs())

	empty, err := model.Load("")
	require.NoError(t, err)
	require.Equal(t, []string{"hazard", "ph"}, empty.Kinds())
}

func TestLoadRefusesABadFileInOneLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body, want string }{
		{"not yaml", "models: [", "not valid YAML"},
		{"no models list", "kinds: []", "want a top-level 'models:' list"},
		{"unknown field", "models:\n  - kind: a\n    command: [x]\n    comand: [y]\n", `entry 1 (kind "a"): comand: unknown field`},
		{"bad kind", "models:\n  - kind: Ph-1\n    command: [x]\n", `entry 1 (kind "Ph-1"): kind: "Ph-1" must match`},
		{"missing kind", "models:\n  - command: [x]\n", `entry 1 (kind ""): kind: missing`},
		{"missing command", "models:\n  - kind: a\n", `entry 1 (kind "a"): command: missing`},
		{"second entry", "models:\n  - kind: a\n    command: [x]\n  - kind: b\n    command: [x]\n    timeout: soon\n", `entry 2 (kind "b"): timeout: "soon" is not a positive duration`},
		{"timeout a number", "models:\n  - kind: a\n    command: [x]\n    timeout: 5\n", `entry 1 (kind "a"): timeout: want string, got number`},
		{"memory", "models:\n  - kind: a\n    command: [x]\n    memory_limit: lots\n", `entry 1 (kind "a"): memory_limit: "lots" is not a size`},
		{"duplicate", "models:\n  - kind: a\n    command: [x]\n  - kind: a\n    command: [z]\n", `entry 2 (kind "a"): kind: declared twice (also entry 1)`},
		{"reserved input", "models:\n  - kind: a\n    command: [x]\n    inputs: [lat]\n", `entry 1 (kind "a"): inputs: "lat" must match`},
		{"input twice", "models:\n  - kind: a\n    command: [x]\n    inputs: [mu0, mu0]\n", `inputs: "mu0" is listed twice`},
		{"empty series", "models:\n  - kind: a\n    command: [x]\n    series: []\n", `series: an empty list`},
		{"years", "models:\n  - kind: a\n    command: [x]\n    years: -1\n", `years: -1 must be between 1 and 10000`},
		{"processes", "models:\n  - kind: a\n    command: [x]\n    processes: 1000\n", `processes: 1000 must be between 0`},
		{"workdir", "models:\n  - kind: a\n    command: [x]\n    workdir: /nonexistent/dir\n", `workdir: /nonexistent/dir is not a directory`},
		{"unknown check", "models:\n  - kind: a\n    command: [x]\n    checks: {ranges: [0, 1]}\n", `entry 1 (kind "a"): checks.ranges: unknown check`},
		{"range reversed", "models:\n  - kind: a\n    command: [x]\n    checks: {range: [1, 0]}\n", `entry 1 (kind "a"): checks.range: [1, 0] must be two numbers, the lower first`},
		{"range of three", "models:\n  - kind: a\n    command: [x]\n    checks: {range: [0, 1, 2]}\n", `entry 1 (kind "a"): checks.range`},
		{"range not numbers", "models:\n  - kind: a\n    command: [x]\n    checks: {range: low}\n", `entry 1 (kind "a"): checks.range: want`},
		{"max_nan share", "models:\n  - kind: a\n    command: [x]\n    checks: {max_nan: 2}\n", `entry 1 (kind "a"): checks.max_nan: 2 must be a share between 0 and 1`},
		{"min_coverage zero", "models:\n  - kind: a\n    command: [x]\n    checks: {min_coverage: 0}\n", `entry 1 (kind "a"): checks.min_coverage: 0 must be a share above 0`},
		{"max_change negative", "models:\n  - kind: a\n    command: [x]\n    checks: {max_change: -0.1}\n", `entry 1 (kind "a"): checks.max_change: -0.1 must be a finite number`},
		{"checks a list", "models:\n  - kind: a\n    command: [x]\n    checks: [range]\n", `entry 1 (kind "a"): checks`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := writeFile(t, tc.body)
			_, err := model.Load(p)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.True(t, strings.HasPrefix(err.Error(), "models file "+p) || strings.HasPrefix(err.Error(), p+": "), err.Error())
			require.NotContains(t, err.Error(), "\n", "one line")
		})
	}
	_, err := model.Load(filepath.Join(t.TempDir(), "missing.yaml"))
	require.ErrorContains(t, err, "no such file or directory")
}
