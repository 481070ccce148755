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
