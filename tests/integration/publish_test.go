//go:build integration

package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
)

// publishedFigures sums up what readers of ph_timeseries see: rows per
// batch and a checksum of the values, added in one order (cell, scenario;
// batch) so that the same values give the same bits whatever the plan.
func publishedFigures(t *testing.T, c *cluster) (perBatch map[string]int, sum float64) {
	t.Helper()
	rows, err := c.DB.Pool.Query(context.Background(), `SELECT batch_id, count(*), sum(series[1] + series[40] + series[80] ORDER BY grid_id, scenario)
		FROM ph_timeseries WHERE step = 0.05 GROUP BY batch_id ORDER BY batch_id`)
	require.NoError(t, err)
	defer rows.Close()
	perBatch = map[string]int{}
	for rows.Next() {
		var id string
		var n int
		var s float64
		require.NoError(t, rows.Scan(&id, &n, &s))
		perBatch[id] = n
		sum += s
	}
	require.NoError(t, rows.Err())
	return perBatch, sum
}

// TestResultsArePublishedAtomically: a second batch over changed inputs that
// ends partial never shows in ph_timeseries while it runs nor after; its own
// rows are readable; publishing it shows its values where it computed them
// and keeps the first batch's where it did not; retention drops superseded
// batches' rows without changing a published value.
func TestResultsArePublishedAtomically(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rows := koreaCells * len(grid.Scenarios)
	c := newCluster(t, "GRIDBATCH_MAX_RETRY=0", "GRIDBATCH_CONCURRENCY=1")
	c.Seed()
	c.Worker()
	c.Worker()

	first := c.RunBatch("run", "--kind", "ph", "--wait")
	require.Equal(t, store.StatusSucceeded, c.Batch(first).Status)
	require.NotNil(t, c.Batch(first).PublishedAt, "a succeeded batch is published with its end")
	perBatch, firstSum := publishedFigures(t, c)
	require.Equal(t, map[string]int{first: rows}, perBatch)

	// Changed inputs, and 20 cells of chunk 0 without any: the second batch ends partial.
	_, err := c.DB.Pool.Exec(ctx, `UPDATE cell_params SET mu0 = mu0 + 1 WHERE step = 0.05`)
	require.NoError(t, err)
	region, err := grid.ParseRegion(0.05, "124,33,132,39", 0)
	require.NoError(t, err)
	missing := region.ChunkIDs(0, 500)[:20]
	_, err = c.DB.Pool.Exec(ctx, `DELETE FROM cell_params WHERE step = 0.05 AND grid_id = ANY($1)`, missing)
	require.NoError(t, err)

	// Small chunks keep it running long enough to be sampled many times:
	// a 100-cell chunk batch ended within 3 samples in a CI run.
	second := c.RunBatch("run", "--kind", "ph", "--chunk-size", "20")
	var samples, seenWhileRunning atomic.Int64
	done := make(chan struct{})
	go func() { // sample what readers see while the second batch runs
		defer close(done)
		for c.Batch(second).Status == store.StatusRunning {
			var seen bool
			if err := c.DB.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ph_timeseries WHERE batch_id <> $1)`, first).Scan(&seen); err == nil {
				samples.Add(1)
				if seen {
					seenWhileRunning.Add(1)
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	b := c.WaitEnded(second, 3*time.Minute)
	<-done
	require.Equal(t, store.StatusPartial, b.Status)
	require.Greater(t, samples.Load(), int64(3), "sampled while it ran")
	require.Zero(t, seenWhileRunning.Load(), "no sample showed a row of the running batch")
	require.Nil(t, b.PublishedAt)
	perBatch, sum := publishedFigures(t, c)
	require.Equal(t, map[string]int{first: rows}, perBatch, "a partial batch publishes nothing")
	require.Equal(t, firstSum, sum, "the first batch's values, unchanged")

	// Its own rows are readable.
	seoul := []string{"--scenario", "ssp245", "--lat", "37.5665", "--lon", "126.978"}
	pub, errOut, code := c.Enqueuer(append([]string{"results", "--kind", "ph", "--json"}, seoul...)...)
	require.Equal(t, 0, code, errOut)
	own, errOut, code := c.Enqueuer(append([]string{"results", "--batch", second, "--json"}, seoul...)...)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, pub, `"batch_id":"`+first+`"`)
	require.Contains(t, own, `"batch_id":"`+second+`"`)
	out, _, code := c.Enqueuer("status", second)
	require.Equal(t, 3, code)
	require.Contains(t, out, "published:       no (it ended partial); 'enqueuer publish "+second+"' publishes what it computed")

	// Publishing it shows its values where it computed them.
	_, errOut, code = c.Enqueuer("publish", second)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "published batch "+second)
	perBatch, _ = publishedFigures(t, c)
	missed := len(missing) * len(grid.Scenarios) // chunk 0 was split around its 20 cells without inputs: only they were dead-lettered
	require.Equal(t, map[string]int{second: rows - missed, first: missed}, perBatch,
		"its values where it computed, the first batch's where it did not")
	pub2, _, code := c.Enqueuer(append([]string{"results", "--kind", "ph", "--json"}, seoul...)...)
	require.Equal(t, 0, code)
	require.Contains(t, pub2, `"batch_id":"`+second+`"`)
	require.Equal(t, own, pub2, "the published series is the batch's own")

	// A third, complete batch supersedes both; retention then drops them.
	_, err = c.DB.Pool.Exec(ctx, `DELETE FROM cell_params WHERE step = 0.05`)
	require.NoError(t, err)
	c.Seed()
	third := c.RunBatch("run", "--kind", "ph", "--wait")
	require.Equal(t, store.StatusSucceeded, c.Batch(third).Status)
	perBatch, thirdSum := publishedFigures(t, c)
	require.Equal(t, map[string]int{third: rows}, perBatch)
	require.Equal(t, firstSum, thirdSum, "the same inputs as the first: the same values")

	out, errOut, code = c.Enqueuer("prune", "--keep-batches", "0", "--dry-run")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, first)
	require.Contains(t, out, second)
	require.NotContains(t, out, third, "the batch the published values show is kept")
	require.Contains(t, errOut, "would drop the rows of 2 batch(es)")
	_, errOut, code = c.Enqueuer("prune", "--keep-batches", "0")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, errOut, "dropped the rows of 2 batch(es)")
	perBatch, sum = publishedFigures(t, c)
	require.Equal(t, map[string]int{third: rows}, perBatch)
	require.Equal(t, thirdSum, sum, "dropping never touches published values")
	n, err := c.DB.Store.BatchRows(ctx, first)
	require.NoError(t, err)
	require.Zero(t, n)
	_, errOut, code = c.Enqueuer(append([]string{"results", "--batch", first}, seoul...)...)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "dropped by retention")
	out, _, _ = c.Enqueuer("status", first)
	require.Contains(t, out, "published:       yes, at")
	require.Contains(t, out, "its own rows dropped at")
}

func TestPublishRefusesARunningBatch(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Seed()
	id := c.RunBatch("run", "--kind", "ph") // no worker: it stays running
	_, errOut, code := c.Enqueuer("publish", id)
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "batch is running: "+id+" is published when it succeeds")
	_, errOut, code = c.Enqueuer("publish", "ph-nope")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no batch ph-nope")
}
