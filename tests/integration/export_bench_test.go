//go:build integration

package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// BenchmarkExport exports a 480,000-cell ph batch (the 0.01° Korea grid, 3
// scenarios × 80 years: 1,440,000 series, 115,200,000 values) with the
// enqueuer binary in each format, and reports values (rows of the long
// form) per second, the enqueuer's peak RSS, the NetCDF writer process's
// peak RSS and the file's size. The NetCDF file must be at most 0.7× the
// size of its raw float64 values (issue 25). Its setup writes the batch
// (about a minute); run it alone:
//
//	go test -tags integration -run '^$' -bench BenchmarkExport -benchtime 1x ./tests/integration/
//
// With GRIDBATCH_BENCH_EXPORT_BASELINE (an enqueuer binary, or a git
// revision whose enqueuer it builds), netcdf-vs-baseline exports the same
// batch to NetCDF with that enqueuer and this tree's, alternately,
// GRIDBATCH_BENCH_EXPORT_PAIRS times (default 4; the baseline first in odd
// pairs, second in even ones), and logs each run's wall time, peak RSS and
// file size; it reports the medians and the median of this tree's time over
// the baseline's, pair by pair. make bench compares
// with d0ce846, whose NetCDF was uncompressed.
func BenchmarkExport(b *testing.B) {
	r, err := grid.ParseRegion(0.01, "124,33,132,39", 0)
	require.NoError(b, err)
	require.Equal(b, 480_000, r.NumCells())
	db := testutil.NewDB(b)
	env := testutil.Env(testutil.NewRedis(b), db)
	enqueuer := filepath.Join(testutil.Binaries(b), "enqueuer")
	baseline := exportBaseline(b)
	start := time.Now()
	bt := testutil.StoreBatch(b, db.Store, "bench-export", grid.KindPH, grid.PH, r, 5000, nil, store.StatusSucceeded)
	b.Logf("setup: batch %s of %d cells written in %s", bt.ID, bt.TotalCells, time.Since(start).Round(time.Second))
	values := float64(r.NumCells() * 3 * grid.NumYears)
	raw := values * 8 / (1 << 20) // MiB of the float64 values
	dir := b.TempDir()

	for _, format := range []string{"netcdf", "parquet", "csv"} {
		b.Run(format, func(b *testing.B) {
			out := filepath.Join(dir, "bench."+format)
			var secs, rss, writerRSS, size float64
			for range b.N {
				e := runExport(b, enqueuer, env, bt.ID, out)
				b.Log(e.summary)
				secs += e.secs
				rss, writerRSS, size = max(rss, e.rss), max(writerRSS, e.writerRSS), e.size
			}
			b.ReportMetric(values*float64(b.N)/secs, "values/s")
			b.ReportMetric(float64(r.NumCells())*float64(b.N)/secs, "cells/s")
			b.ReportMetric(rss, "enqueuer-peak-RSS-MiB")
			if format == "netcdf" {
				b.ReportMetric(writerRSS, "writer-peak-RSS-MiB")
				b.ReportMetric(size/raw, "file/raw")
				require.LessOrEqual(b, size, 0.7*raw, "the NetCDF file is over 0.7× its raw float64 values (%.0f MiB)", raw)
			}
			b.ReportMetric(size, "file-MiB")
		})
	}
	if baseline == "" {
		return
	}
	b.Run("netcdf-vs-baseline", func(b *testing.B) {
		pairs := 4
		if v := os.Getenv("GRIDBATCH_BENCH_EXPORT_PAIRS"); v != "" {
			pairs, err = strconv.Atoi(v)
			require.NoError(b, err, "GRIDBATCH_BENCH_EXPORT_PAIRS")
		}
		var base, this, ratios []float64
		for i := range pairs {
			var line []string
			sides := []struct{ name, bin string }{{"baseline", baseline}, {"this tree", enqueuer}}
			if i%2 == 1 {
				sides[0], sides[1] = sides[1], sides[0] // ABBA: neither goes first always
			}
			for _, side := range sides {
				e := runExport(b, side.bin, env, bt.ID, filepath.Join(dir, "pair.nc"))
				line = append(line, fmt.Sprintf("%s %.1f s, enqueuer %.0f MiB, writer %.0f MiB, %.1f MiB (%.2f× raw)",
					side.name, e.secs, e.rss, e.writerRSS, e.size, e.size/raw))
				if side.bin == baseline {
					base = append(base, e.secs)
				} else {
					this = append(this, e.secs)
					require.LessOrEqual(b, e.size, 0.7*raw)
				}
			}
			ratios = append(ratios, this[i]/base[i])
			b.Logf("pair %d: %s; this tree / baseline %.2f", i+1, strings.Join(line, "; "), ratios[i])
		}
		b.ReportMetric(median(base), "baseline-s")
		b.ReportMetric(median(this), "this-tree-s")
		b.ReportMetric(median(ratios), "this/baseline")
	})
}

// exportRun is what one export measured: its wall time (s), the
// enqueuer's and the NetCDF writer's peak RSS (MiB) and the file's size
// (MiB), and the enqueuer's summary line.
type exportRun struct {
	secs, rss, writerRSS, size float64
	summary                    string
}

// runExport exports batch id to out with the enqueuer bin, measures it
// and removes the file. (The pairs log one line each: a benchmark's log is
// cut after 10 lines.)
func runExport(b *testing.B, bin string, env []string, id, out string) exportRun {
	cmd := exec.Command(bin, "export", "--batch", id, "--out", out)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	require.NoError(b, cmd.Start())
	peak := make(chan [2]int64, 1)
	go func() { peak <- peakRSS(cmd.Process.Pid) }()
	err := cmd.Wait()
	e := exportRun{secs: time.Since(t0).Seconds()}
	require.NoError(b, err, stderr.String())
	p := <-peak
	e.rss, e.writerRSS = float64(p[0])/1024, float64(p[1])/1024
	fi, err := os.Stat(out)
	require.NoError(b, err)
	e.size = float64(fi.Size()) / (1 << 20)
	e.summary = strings.TrimSpace(stderr.String())
	require.NoError(b, os.Remove(out))
	return e
}

// exportBaseline returns the enqueuer GRIDBATCH_BENCH_EXPORT_BASELINE
// names: a binary, or a git revision of this repository whose
// ./cmd/enqueuer it builds (from git archive, in a temporary folder).
// Empty when the variable is not set.
func exportBaseline(b *testing.B) string {
	v := os.Getenv("GRIDBATCH_BENCH_EXPORT_BASELINE")
	if v == "" {
		return ""
	}
	if fi, err := os.Stat(v); err == nil && fi.Mode().IsRegular() {
		return v
	}
	src := b.TempDir()
	archive := exec.Command("git", "archive", "--format=tar", v)
	archive.Dir = testutil.RepoRoot()
	extract := exec.Command("tar", "-x", "-C", src)
	var err error
	extract.Stdin, err = archive.StdoutPipe()
	require.NoError(b, err)
	var stderr bytes.Buffer
	archive.Stderr, extract.Stderr = &stderr, &stderr
	require.NoError(b, extract.Start())
	require.NoError(b, archive.Run(), "git archive %s: %s", v, stderr.String())
	require.NoError(b, extract.Wait(), "extract %s: %s", v, stderr.String())
	bin := filepath.Join(b.TempDir(), "enqueuer")
	build := exec.Command("go", "build", "-o", bin, "./cmd/enqueuer")
	build.Dir = src
	out, err := build.CombinedOutput()
	require.NoError(b, err, "build the enqueuer of %s: %s", v, out)
	b.Logf("baseline: the enqueuer of %s", v)
	return bin
}

// median returns the median of v (the mean of the middle two for an even
// count).
func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// peakRSS polls the process pid and its children until it exits and
// returns the largest VmHWM (KiB) it reached, and that of any child. (The
// rusage of a process waited for counts its children's peaks as its own.)
func peakRSS(pid int) (peaks [2]int64) {
	proc := "/proc/" + strconv.Itoa(pid)
	for {
		threads, _ := filepath.Glob(proc + "/task/*/children")
		if len(threads) == 0 {
			return peaks
		}
		peaks[0] = max(peaks[0], vmHWM(proc))
		for _, th := range threads {
			kids, _ := os.ReadFile(th)
			for _, k := range strings.Fields(string(kids)) {
				peaks[1] = max(peaks[1], vmHWM("/proc/"+k))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// vmHWM returns the peak RSS (KiB) of the process at /proc/PID, 0 once it is gone.
func vmHWM(proc string) int64 {
	status, _ := os.ReadFile(proc + "/status")
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
