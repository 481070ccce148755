//go:build integration

package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// BenchmarkExport exports a 480,000-cell batch (the 0.01° Korea grid, 3
// scenarios × 80 years: 1,440,000 series, 115,200,000 values) with the
// enqueuer binary in each format, and reports values (rows of the long
// form) per second, the enqueuer's peak RSS, the NetCDF writer process's
// peak RSS and the file's size. Its setup writes the batch (about a
// minute); run it alone:
//
//	go test -tags integration -run '^$' -bench BenchmarkExport -benchtime 1x ./tests/integration/
func BenchmarkExport(b *testing.B) {
	r, err := grid.ParseRegion(0.01, "124,33,132,39", 0)
	require.NoError(b, err)
	require.Equal(b, 480_000, r.NumCells())
	db := testutil.NewDB(b)
	env := testutil.Env(testutil.NewRedis(b), db)
	enqueuer := filepath.Join(testutil.Binaries(b), "enqueuer")
	start := time.Now()
	bt := testutil.StoreBatch(b, db.Store, "bench-export", grid.KindHazard, grid.Hazard, r, 5000, nil, store.StatusSucceeded)
	b.Logf("setup: batch %s of %d cells written in %s", bt.ID, bt.TotalCells, time.Since(start).Round(time.Second))
	values := float64(r.NumCells() * 3 * grid.NumYears)
	dir := b.TempDir()

	for _, format := range []string{"netcdf", "parquet", "csv"} {
		b.Run(format, func(b *testing.B) {
			out := filepath.Join(dir, "bench."+format)
			var secs, rss, writerRSS, size float64
			for range b.N {
				cmd := exec.Command(enqueuer, "export", "--batch", bt.ID, "--out", out)
				cmd.Env = env
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				t0 := time.Now()
				require.NoError(b, cmd.Start())
				peak := make(chan [2]int64, 1)
				go func() { peak <- peakRSS(cmd.Process.Pid) }()
				err := cmd.Wait()
				secs += time.Since(t0).Seconds()
				require.NoError(b, err, stderr.String())
				p := <-peak
				rss = max(rss, float64(p[0])/1024)
				writerRSS = max(writerRSS, float64(p[1])/1024)
				fi, err := os.Stat(out)
				require.NoError(b, err)
				size = float64(fi.Size()) / (1 << 20)
				b.Log(strings.TrimSpace(stderr.String()))
				require.NoError(b, os.Remove(out))
			}
			b.ReportMetric(values*float64(b.N)/secs, "values/s")
			b.ReportMetric(float64(r.NumCells())*float64(b.N)/secs, "cells/s")
			b.ReportMetric(rss, "enqueuer-peak-RSS-MiB")
			if format == "netcdf" {
				b.ReportMetric(writerRSS, "writer-peak-RSS-MiB")
			}
			b.ReportMetric(size, "file-MiB")
		})
	}
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
