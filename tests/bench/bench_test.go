//go:build bench

package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestBench takes every figure on a fresh Redis database and PostgreSQL
// schema of its own. Environment (all optional):
//
//	GRIDBATCH_BENCH_BIN_DIR     the built binaries (make bench: bin/); default: built afresh
//	GRIDBATCH_BENCH_OUT         the report's path; default BENCHMARKS.md at the repository root, "-" for none
//	GRIDBATCH_BENCH_REPEAT      measurements of the lower bound and the pipeline at 0.01 (the median is reported); default 3
//	GRIDBATCH_BENCH_STEPS       scaling steps, comma-separated; default 0.05,0.02,0.01
//	GRIDBATCH_BENCH_STEP        step of the lower bound and pipeline figures; default 0.01
//	GRIDBATCH_BENCH_KIND        model kind; default ph
//	GRIDBATCH_BENCH_MODELS_FILE the models file every binary gets; default examples/models.yaml, "-" for none
//	GRIDBATCH_BENCH_PROCESS_KIND the models file's kind run as model processes and compared with the
//	                            kind (figure 8); default the kind + "_py" (ph_py), "-" for none
//	GRIDBATCH_BENCH_CHUNK_SIZE  chunk size; default the binaries' default
//	GRIDBATCH_BENCH_WORKERS     worker processes of the pipeline; default 2
//	GRIDBATCH_BENCH_LB_GOROUTINES chunks the lower bound runs at once; default GOMAXPROCS
//	GRIDBATCH_BENCH_WORKER_ENV  extra worker settings, space-separated (e.g. GRIDBATCH_CONCURRENCY=4);
//	                            without GRIDBATCH_CONCURRENCY each worker runs GOMAXPROCS/workers chunks
//	GRIDBATCH_BENCH_PROFILE_DIR write CPU profiles of the lower bound and the workers here
//	GRIDBATCH_BENCH_LOG_DIR     keep the binaries' logs here
//	GRIDBATCH_BENCH_SKIP_GOBENCH=1 leave out the go test benchmarks (figures 1 and 2)
//	GRIDBATCH_BENCH_ONLY=compare figure 9 alone (quick A/B of the write path; prints its runs, writes no report)
//	GRIDBATCH_BENCH_ONLY=kernel  figure 1 alone (the Go kernels beside numpy's; prints its runs, writes no report)
//	GRIDBATCH_BENCH_ONLY=delay   figure 11 alone (the pipeline with 1 ms injected each way to Redis and
//	                            PostgreSQL vs loopback and vs the same proxies with no delay; prints its runs,
//	                            writes no report)
//	GRIDBATCH_BENCH_PROXY       figure 11's proxy: hop (default: the bench's own, less CPU) or toxiproxy
//	GRIDBATCH_BENCH_BASELINE    git revision whose pipeline this tree's is compared with (figures 9
//	                            and 10); default fae24c9 (the upsert per chunk), "-" for none
func TestBench(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	bin := os.Getenv("GRIDBATCH_BENCH_BIN_DIR")
	if bin == "" {
		bin = testutil.Binaries(t)
	}
	models := os.Getenv("GRIDBATCH_BENCH_MODELS_FILE")
	switch models {
	case "":
		models = filepath.Join(testutil.RepoRoot(), "examples", "models.yaml")
	case "-":
		models = ""
	}
	baseline := os.Getenv("GRIDBATCH_BENCH_BASELINE")
	switch {
	case os.Getenv("GRIDBATCH_BENCH_ONLY") == "kernel", os.Getenv("GRIDBATCH_BENCH_ONLY") == "delay":
		baseline = ""
	case baseline == "":
		baseline = "fae24c9"
	case baseline == "-":
		baseline = ""
	}
	cfg := Config{
		RedisURL:    r.URL,
		DatabaseURL: db.URL,
		BinDir:      bin,
		RepoRoot:    testutil.RepoRoot(),
		Kind:        os.Getenv("GRIDBATCH_BENCH_KIND"),
		ModelsFile:  models,
		ProcessKind: os.Getenv("GRIDBATCH_BENCH_PROCESS_KIND"),
		Repeat:      3,
		ProfileDir:  os.Getenv("GRIDBATCH_BENCH_PROFILE_DIR"),
		LogDir:      os.Getenv("GRIDBATCH_BENCH_LOG_DIR"),
		SkipGoBench: os.Getenv("GRIDBATCH_BENCH_SKIP_GOBENCH") == "1",
		WorkerEnv:   strings.Fields(os.Getenv("GRIDBATCH_BENCH_WORKER_ENV")),
		Log:         testWriter{t},
		Baseline:    baseline,
		CompareOnly: os.Getenv("GRIDBATCH_BENCH_ONLY") == "compare",
		KernelOnly:  os.Getenv("GRIDBATCH_BENCH_ONLY") == "kernel",
		DelayOnly:   os.Getenv("GRIDBATCH_BENCH_ONLY") == "delay",
		DelayProxy:  os.Getenv("GRIDBATCH_BENCH_PROXY"),
	}
	envInt(t, "GRIDBATCH_BENCH_REPEAT", &cfg.Repeat)
	envInt(t, "GRIDBATCH_BENCH_LB_GOROUTINES", &cfg.LowerBoundGoroutines)
	envInt(t, "GRIDBATCH_BENCH_WORKERS", &cfg.Workers)
	envInt(t, "GRIDBATCH_BENCH_CHUNK_SIZE", &cfg.ChunkSize)
	if v := os.Getenv("GRIDBATCH_BENCH_STEP"); v != "" {
		s, err := strconv.ParseFloat(v, 64)
		require.NoError(t, err, "GRIDBATCH_BENCH_STEP")
		cfg.Step = s
	}
	if v := os.Getenv("GRIDBATCH_BENCH_STEPS"); v != "" {
		for _, f := range strings.Split(v, ",") {
			s, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			require.NoError(t, err, "GRIDBATCH_BENCH_STEPS")
			cfg.ScalingSteps = append(cfg.ScalingSteps, s)
		}
	}
	table, err := Run(ctx, cfg)
	require.NoError(t, err)
	if cfg.CompareOnly || cfg.KernelOnly || cfg.DelayOnly {
		return // its runs are in the log lines
	}
	md := table.Markdown()
	os.Stdout.WriteString("\n" + md + "\n")
	out := os.Getenv("GRIDBATCH_BENCH_OUT")
	if out == "" {
		out = filepath.Join(testutil.RepoRoot(), "BENCHMARKS.md")
	}
	if out != "-" {
		require.NoError(t, os.WriteFile(out, []byte(md), 0o644))
		t.Logf("wrote %s", out)
	}
}

// envInt sets *v from the integer environment variable name, when set.
func envInt(t *testing.T, name string, v *int) {
	if s := os.Getenv(name); s != "" {
		n, err := strconv.Atoi(s)
		require.NoError(t, err, name)
		*v = n
	}
}

// testWriter sends progress lines to the test log as they come.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
