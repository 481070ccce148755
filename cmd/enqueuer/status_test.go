package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
)

// TestPrintSummary pins the human summary `enqueuer status` and `run --wait`
// print: counts grouped, durations and rates in units people read.
func TestPrintSummary(t *testing.T) {
	t.Parallel()
	started := time.Date(2026, 11, 22, 7, 40, 2, 0, time.UTC)
	ended := started.Add(1572587 * time.Microsecond)
	dur, rate, avg := 1.572587, 0.996875, 0.024850413769230768
	rss := int64(40_789_606)
	errText := "3 chunks failed"
	b := store.Batch{ID: "ph-1", Kind: "ph", Status: store.StatusPartial, Step: 0.01,
		BBox: grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}, ChunkSize: 500, TotalChunks: 960, TotalCells: 480_000,
		CompletedChunks: 957, FailedChunks: 3, CompletedCells: 478_500, FailedCells: 1_500,
		SuccessRate: &rate, AvgTaskSeconds: &avg, PeakWorkerRSSBytes: &rss, DBConnErrors: 1234,
		Error: &errText, StartedAt: started, EndedAt: &ended, DurationSeconds: &dur}
	var out bytes.Buffer
	printSummary(&out, b)
	require.Equal(t, `batch ph-1 (ph): partial
  grid:            bbox 124,33,132,39, step 0.01, 480,000 cells in 960 chunks of 500
  started / ended: 2026-11-22T07:40:02Z / 2026-11-22T07:40:03Z (duration 1.573 s)
  chunks:          957 succeeded, 3 failed (dead letters), 0 timed out, 0 cancelled of 960
  cells:           478,500 succeeded, 1,500 failed, 0 timed out of 480,000
  success rate:    99.7%; avg task 24.9 ms; peak worker RSS 38.9 MiB; DB connection errors 1,234
  error:           3 chunks failed
  published:       no (it ended partial); 'enqueuer publish ph-1' publishes what it computed
`, out.String())

	out.Reset()
	printSummary(&out, store.Batch{ID: "ph-2", Kind: "ph", Status: store.StatusRunning, Step: 0.05, ChunkSize: 500,
		StartedAt: started, DeadlineAt: started.Add(2 * time.Hour), LockExpiresAt: started.Add(130 * time.Minute)})
	require.Contains(t, out.String(), "(duration -)")
	require.Contains(t, out.String(), "success rate:    -; avg task -; peak worker RSS -; DB connection errors 0\n")
	require.Contains(t, out.String(), "  deadline:        2026-11-22T09:40:02Z; lock expires 2026-11-22T09:50:02Z\n")
}

func TestProgressLine(t *testing.T) {
	t.Parallel()
	b := store.Batch{ID: "ph-1", Status: store.StatusRunning, TotalChunks: 960, DoneChunks: 480, FailedChunks: 2,
		TotalCells: 480_000, CompletedCells: 239_000, FailedCells: 1_000}
	require.Equal(t, "ph-1 running: 480/960 chunks (2 failed), 240,000/480,000 cells, 23,900 cells/s, eta 10s",
		progressLine(b, 10*time.Second))
	require.Equal(t, "ph-1 running: 0/960 chunks (0 failed), 0/480,000 cells, 0 cells/s, eta ?",
		progressLine(store.Batch{ID: "ph-1", Status: store.StatusRunning, TotalChunks: 960, TotalCells: 480_000}, time.Second))
}
