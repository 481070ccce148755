package monitor

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/store"
)

func TestFormats(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]string{0: "0", 0.5: "0.50", 15.25: "15.2", 642.4: "642", 1151.2: "1,151"} {
		require.Equal(t, want, fmtRate(in))
	}
	require.Equal(t, "ab…", truncate("abcdef", 3))
	require.Equal(t, "abc", truncate("abc", 3))
}

func TestChartScale(t *testing.T) {
	t.Parallel()
	for in, want := range map[time.Duration]time.Duration{
		time.Second: time.Second, 2 * time.Minute: time.Second, 3 * time.Minute: 2 * time.Second,
		20 * time.Minute: 10 * time.Second, 2 * time.Hour: time.Minute, 100 * time.Hour: time.Hour, 1000 * time.Hour: 9 * time.Hour,
	} {
		require.Equal(t, want, chartBucket(in), "%v", in)
	}
	for in, want := range map[float64]float64{0: 1, 1: 1, 1.2: 2, 15.2: 20, 1605: 2000, 2400: 2500, 4100: 5000, 9001: 10000} {
		require.Equal(t, want, niceCeil(in), "%v", in)
	}
	started := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	c := buildChart([]store.ThroughputBucket{{Index: 0, Cells: 100}, {Index: 3, Cells: 50, Failed: 2}}, 10*time.Second, 35*time.Second, started)
	require.Len(t, c.Bars, 2)
	require.Len(t, c.Failed, 1)
	require.Equal(t, "10.0", c.Peak, "100 cells in 10 s")
	require.Equal(t, "4.29", c.Average, "150 cells in 35 s")
	require.Contains(t, c.Bars[1].Title, "04:00:30–04:00:40 UTC: 50 cells, 10.0 cells/s", "the last bucket's 5 s so far")
	require.True(t, buildChart(nil, time.Second, 0, started).Empty)
}

// TestRateAgreesWithTheChart: a batch's cells/s figure and its chart's
// average are one definition (cellsPerSecond), so they agree, also for a
// batch shorter than a second (once shown as 665 cells/s beside a chart
// peaking at 100).
func TestRateAgreesWithTheChart(t *testing.T) {
	t.Parallel()
	started := time.Date(2026, 11, 22, 4, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name    string
		took    time.Duration
		buckets []store.ThroughputBucket
		want    string
	}{
		{"100 cells in 0.15 s", 150 * time.Millisecond, []store.ThroughputBucket{{Index: 0, Cells: 100}}, "100"},
		{"4,000 cells in 40 s", 40 * time.Second, []store.ThroughputBucket{{Index: 3, Cells: 1000}, {Index: 20, Cells: 2500}, {Index: 39, Cells: 500}}, "100"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var cells int64
			for _, b := range c.buckets {
				cells += b.Cells
			}
			ended := started.Add(c.took)
			took := c.took.Seconds()
			b := store.Batch{Status: store.StatusSucceeded, StartedAt: started, EndedAt: &ended, DurationSeconds: &took,
				TotalChunks: 1, DoneChunks: 1, CompletedChunks: 1, TotalCells: cells, CompletedCells: cells}
			row := newRow(store.BatchOverview{Batch: b}, ended.Add(time.Minute))
			chart := buildChart(c.buckets, chartBucket(c.took), c.took, started)
			require.Equal(t, c.want, row.Rate)
			require.Equal(t, row.Rate, chart.Average, "the figure is the chart's average")
			if len(c.buckets) == 1 {
				require.Equal(t, row.Rate, chart.Peak, "one bucket: its bar is the figure")
			}
		})
	}
	// A running batch's figure over its rate window follows the same rule.
	b := store.Batch{Status: store.StatusRunning, StartedAt: started, DeadlineAt: started.Add(time.Hour), TotalChunks: 2, TotalCells: 200}
	row := newRow(store.BatchOverview{Batch: b, RecentCells: 100, RecentSeconds: 0.15}, started.Add(150*time.Millisecond))
	require.Equal(t, "100", row.Rate)
}

func TestBarKeepsFailuresVisible(t *testing.T) {
	t.Parallel()
	b := newBar(store.Batch{TotalChunks: 4000, DoneChunks: 4000, CompletedChunks: 3997, FailedChunks: 3})
	require.Len(t, b.Segs, 2)
	require.Equal(t, "fail", b.Segs[1].Class)
	require.Equal(t, minSeg, b.Segs[1].W)
	require.InDelta(t, 100, b.Segs[0].W+b.Segs[1].W, 1e-9, "the bar stays full")
	require.Empty(t, newBar(store.Batch{}).Segs)

	b = newBar(store.Batch{TotalChunks: 3840, DoneChunks: 54, CompletedChunks: 53, FailedChunks: 1})
	require.InDelta(t, 100*53/3840.0, b.Segs[0].W, 1e-9, "a running bar widens failures into its open part")
	require.Equal(t, minSeg, b.Segs[1].W)
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"127.0.0.1:8080": true, "127.9.9.9:1": true, "[::1]:80": true, "localhost:80": true, "LOCALHOST:80": true,
		":8080": false, "0.0.0.0:80": false, "[::]:80": false, "10.0.0.1:80": false, "example.com:80": false, "127.0.0.1": false,
	} {
		require.Equal(t, want, IsLoopback(addr), addr)
	}
}
