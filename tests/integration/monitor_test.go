//go:build integration

package integration

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/metrics"
	"github.com/gridbatch/gridbatch/internal/monitor"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/internal/worker/workertest"
)

// chromiumPath is Debian's chromium, or GRIDBATCH_CHROMIUM. Missing, the
// test fails with the command that installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GRIDBATCH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("headless Chromium is not installed; install it with: apt-get update && apt-get install -y chromium " +
		"(or point GRIDBATCH_CHROMIUM at a Chromium binary)")
	return ""
}

// artifacts is where the test's screenshots go: $GRIDBATCH_ARTIFACTS, or a
// temporary folder of the test.
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("GRIDBATCH_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	return dir
}

// logValue waits until the process's log has a line matching re and
// returns the first group.
func logValue(t *testing.T, p *testutil.Proc, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	var v string
	waitFor(t, timeout, fmt.Sprintf("%s to log %s", p.Name, re), func() bool {
		b, _ := os.ReadFile(p.Log)
		if m := re.FindSubmatch(b); m != nil {
			v = string(m[1])
			return true
		}
		return false
	})
	return v
}

// browser starts headless Chromium with a fresh profile; every request it
// makes carries the monitor's basic-auth header.
func browser(t *testing.T, user, password string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("force-device-scale-factor", "1"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 4*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
	require.NoError(t, err, "start Chromium")
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
	_, err = chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
	require.NoError(t, err)
	return ctx
}

func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, png, 0o644))
	t.Logf("screenshot: %s", path)
}

// progress reads the done-chunks value of the batch's progress bar on the
// batch view.
func progress(t *testing.T, ctx context.Context, batchID string) int {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](
		`document.querySelector('article.run[data-batch="`+batchID+`"] svg[role=progressbar]').getAttribute('aria-valuenow')`))
	require.NoError(t, err)
	n, err := strconv.Atoi(v)
	require.NoError(t, err)
	return n
}

// TestMonitorInBrowser drives headless Chromium against the monitor binary
// while a worker binary runs a batch: the batch view's progress bar
// advances by itself, the batch page lists the batch's dead letters, and
// asynqmon loads under /asynqmon/. The worker's and the monitor's /metrics
// then parse and hold the batch's series.
func TestMonitorInBrowser(t *testing.T) {
	t.Parallel()
	const user, password = "ops", "monitor-test-password"
	shots := artifacts(t)
	c := newCluster(t)
	c.Seed()
	ctx := browser(t, user, password)

	// A batch of 3,840 chunks of 5 cells on one worker slot: slow enough to
	// watch (about half a minute here). Chunks 7, 1300 and 2650 lose one
	// cell's inputs: they are dead-lettered at once (missing input is never
	// retried).
	const chunkSize = 5
	lat, err := grid.NewLattice(0.05)
	require.NoError(t, err)
	region, err := grid.NewRegion(lat, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}, 0)
	require.NoError(t, err)
	failing := []int{7, 1300, 2650}
	for _, chunk := range failing {
		_, err := c.DB.Pool.Exec(context.Background(), `DELETE FROM cell_params WHERE step = 0.05 AND grid_id = $1`, region.ChunkIDs(chunk, chunkSize)[0])
		require.NoError(t, err)
	}

	mon := c.Start("monitor", []string{"GRIDBATCH_MONITOR_USER=" + user, "GRIDBATCH_MONITOR_PASSWORD=" + password,
		"GRIDBATCH_MONITOR_ADDR=127.0.0.1:0", "GRIDBATCH_MONITOR_ALLOW_WRITES=true"})
	base := "http://" + logValue(t, mon, regexp.MustCompile(`msg="monitor started" addr=(\S+)`), 30*time.Second)

	id := c.RunBatch("--kind", "ph", "--chunk-size", strconv.Itoa(chunkSize))
	w := c.Worker("GRIDBATCH_CONCURRENCY=1", "GRIDBATCH_MAX_RETRY=0")
	workerAddr := logValue(t, w, regexp.MustCompile(`msg="worker started".* http_addr=(\S+)`), 30*time.Second)
	c.WaitDone(id, 20, time.Minute)

	// The batch view: the running batch's progress bar advances by itself
	// (the page reloads every few seconds while a batch runs).
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/")))
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`article.run[data-batch="`+id+`"] svg[role=progressbar]`))))
	first := progress(t, ctx, id)
	title, err := chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	require.Equal(t, "Batches · gridbatch monitor", title)
	screenshot(t, ctx, shots, "monitor-batches-running.png")
	var second int
	waitFor(t, 30*time.Second, "the progress bar to advance after a reload", func() bool {
		time.Sleep(time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[*string](
			`(e => e && e.getAttribute('aria-valuenow'))(document.querySelector('article.run[data-batch="`+id+`"] svg[role=progressbar]'))`))
		if err != nil || v == nil {
			return false // between two loads of the page
		}
		second, _ = strconv.Atoi(*v)
		return second > first
	})
	t.Logf("progress bar: %d then %d of %d chunks", first, second, c.Batch(id).TotalChunks)

	// The batch page while it runs, and once it has ended.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/batches/"+id)))
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`svg.chart`))))
	screenshot(t, ctx, shots, "monitor-batch-running.png")
	b := c.WaitEnded(id, 4*time.Minute)
	require.Equal(t, store.StatusPartial, b.Status, "error: %v", b.Error)
	require.Equal(t, len(failing), b.FailedChunks)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/batches/"+id)))
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#dead-letters table.dlq`))))
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		`[...document.querySelectorAll('#dead-letters table.dlq tbody tr')].map(r => r.innerText)`))
	require.NoError(t, err)
	require.Len(t, rows, len(failing))
	for i, chunk := range failing {
		require.Contains(t, rows[i], fmt.Sprintf("%s:c%06d", id, chunk))
		require.Contains(t, rows[i], "no inputs in cell_params")
	}
	status, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.title .status`)))
	require.NoError(t, err)
	require.Equal(t, "partial", status)
	screenshot(t, ctx, shots, "monitor-batch.png")

	// The requeue button: once the missing inputs are seeded again, the
	// requeued chunks succeed and the partial batch becomes succeeded.
	c.Seed()
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`form.requeue-all button`))))
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`.callout.good`))))
	flash, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.callout.good`)))
	require.NoError(t, err)
	require.Contains(t, flash, fmt.Sprintf("Requeued %d dead letters", len(failing)))
	waitFor(t, time.Minute, "the requeued chunks to heal the batch", func() bool { return c.Batch(id).Status == store.StatusSucceeded })
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/batches/"+id)))
	status, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`.title .status`)))
	require.NoError(t, err)
	require.Equal(t, "succeeded", status)
	screenshot(t, ctx, shots, "monitor-batch-healed.png")

	// asynqmon, mounted under /asynqmon/.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/asynqmon/")))
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#root *`))))
	waitFor(t, 30*time.Second, "asynqmon to list the grid queue", func() bool {
		text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		return err == nil && strings.Contains(text, "grid")
	})
	title, err = chromedp.Run(ctx, chromedp.Title())
	require.NoError(t, err)
	require.Contains(t, title, "Asynq")
	screenshot(t, ctx, shots, "monitor-asynqmon.png")

	// Both /metrics pages parse with Prometheus' text parser and hold the
	// batch's series.
	wm := workertest.Scrape(t, "http://"+workerAddr+"/metrics", "", "")
	chunk := func(outcome string) map[string]string {
		return map[string]string{"type": "grid:chunk", "outcome": outcome}
	}
	b = c.Batch(id)
	// Each failing chunk was split around its cell (a succeeded half beside
	// each split), the cell dead-lettered, then requeued and succeeded.
	var succeeded, split int
	require.NoError(t, c.DB.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE status = 'succeeded'),
		count(*) FILTER (WHERE status = 'split') FROM chunk_runs WHERE batch_id = $1`, id).Scan(&succeeded, &split))
	require.Equal(t, b.TotalChunks-len(failing)+split+len(failing), succeeded)
	require.Equal(t, float64(succeeded), wm.Require(t, metrics.NameTasks, chunk(metrics.OutcomeSucceeded)), "every chunk and half, the requeued cells too")
	require.Equal(t, float64(split), wm.Require(t, metrics.NameTasks, chunk(metrics.OutcomeSplit)))
	require.Equal(t, float64(len(failing)), wm.Require(t, metrics.NameTasks, chunk(metrics.OutcomeFailed)))
	require.Equal(t, float64(b.TotalCells), wm.Require(t, metrics.NameCellsWritten, nil))
	require.Equal(t, float64(succeeded+split+len(failing)), wm.Require(t, metrics.NameTaskDuration, map[string]string{"type": "grid:chunk"}))
	for _, name := range []string{metrics.NameDBErrors, metrics.NameBreakerState, metrics.NameOverdueHandlers} {
		wm.Require(t, name, nil)
	}
	mm := workertest.Scrape(t, base+"/metrics", user, password)
	require.Equal(t, 0.0, mm.Require(t, monitor.NameBatchRunning, map[string]string{"kind": "ph"}))
	require.Equal(t, 0.0, mm.Require(t, monitor.NameDeadLettersOpen, nil), "all requeued")
	mm.Require(t, monitor.NameBatchLastEnd, map[string]string{"kind": "ph", "status": "succeeded"})
	mm.Require(t, "asynq_tasks_enqueued_total", map[string]string{"queue": "grid", "state": "archived"})
	require.GreaterOrEqual(t, mm.Require(t, "asynq_tasks_processed_total", map[string]string{"queue": "grid"}), float64(b.TotalChunks))

	// Without credentials the monitor answers 401; /healthz stays open.
	resp, err := http.Get(base + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, err = http.Get(base + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
