// Package workertest is the worker's test harness, for tests that need a real
// worker and its metrics after a real batch: it runs the real worker
// (internal/worker.Run) in the test process against a test's Redis database
// and PostgreSQL schema, runs a small batch through it, and scrapes and
// parses /metrics with Prometheus' own text parser.
package workertest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/internal/worker"
)

// Worker is a worker running in the test process.
type Worker struct {
	// Addr is the host:port of its /healthz, /readyz and /metrics.
	Addr string
	logs *lines
}

// StartWorker runs a worker against r and db until the test ends. env sets
// GRIDBATCH_* variables over the test defaults (JSON logs, HTTP on a free
// loopback port, one reconcile a second, retry base 100ms).
func StartWorker(t testing.TB, r *testutil.Redis, db *testutil.DB, env map[string]string) *Worker {
	t.Helper()
	vars := map[string]string{
		"GRIDBATCH_REDIS_URL":          r.URL,
		"GRIDBATCH_DATABASE_URL":       db.URL,
		"GRIDBATCH_LOG_FORMAT":         "json",
		"GRIDBATCH_HTTP_ADDR":          "127.0.0.1:0",
		"GRIDBATCH_RECONCILE_INTERVAL": "1s",
		"GRIDBATCH_RETRY_BASE":         "100ms",
		"GRIDBATCH_SHUTDOWN_TIMEOUT":   "5s",
	}
	for k, v := range env {
		vars[k] = v
	}
	var cfg config.Worker
	set := config.NewSet("worker", "", "").WithLookup(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	cfg.Bind(set)
	require.NoError(t, set.Parse(nil))
	require.NoError(t, cfg.Validate())

	ctx, cancel := context.WithCancel(context.Background())
	logs := &lines{addr: make(chan string, 1)}
	done := make(chan error, 1)
	go func() { done <- worker.Run(ctx, cfg, logs) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("worker did not stop within 30s")
		}
		if t.Failed() {
			t.Logf("worker log (last lines):\n%s", logs.tail(40))
		}
	})
	select {
	case addr := <-logs.addr:
		return &Worker{Addr: addr, logs: logs}
	case err := <-done:
		t.Fatalf("worker stopped at start: %v\n%s", err, logs.tail(20))
	case <-time.After(30 * time.Second):
		t.Fatalf("worker did not start within 30s:\n%s", logs.tail(20))
	}
	return nil
}

// Log returns the worker's log so far.
func (w *Worker) Log() string { return w.logs.tail(1 << 30) }

// lines collects the worker's JSON log and reports the HTTP address from
// its "worker started" line.
type lines struct {
	mu   sync.Mutex
	buf  []string
	part string
	addr chan string
	sent bool
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.part + string(p)
	parts := strings.Split(s, "\n")
	l.part = parts[len(parts)-1]
	for _, line := range parts[:len(parts)-1] {
		l.buf = append(l.buf, line)
		if l.sent || !strings.Contains(line, `"worker started"`) {
			continue
		}
		var rec struct {
			HTTPAddr string `json:"http_addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.HTTPAddr != "" {
			l.sent = true
			l.addr <- rec.HTTPAddr
		}
	}
	return len(p), nil
}

func (l *lines) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	from := max(len(l.buf)-n, 0)
	return strings.Join(l.buf[from:], "\n")
}

// Batch describes the small batch RunBatch runs.
type Batch struct {
	// Kind is the model; defaults to "ph".
	Kind string
	// Step and BBox are the grid; default 0.5° over the Korea box (192 cells).
	Step float64
	BBox string
	// ChunkSize defaults to 20 cells (10 chunks on the default grid).
	ChunkSize int
	// MissingInputs lists chunks whose first cell's inputs are deleted
	// after seeding, so that those chunks are dead-lettered (missing input
	// is never retried).
	MissingInputs []int
}

func (b *Batch) defaults() {
	if b.Kind == "" {
		b.Kind = "ph"
	}
	if b.Step == 0 {
		b.Step = 0.5
	}
	if b.BBox == "" {
		b.BBox = "124,33,132,39"
	}
	if b.ChunkSize == 0 {
		b.ChunkSize = 20
	}
}

// Seed writes the inputs of the batch's grid and deletes those of the
// first cell of each chunk in MissingInputs. It returns the grid region.
func Seed(t testing.TB, db *testutil.DB, b Batch) grid.Region {
	t.Helper()
	b.defaults()
	ctx := context.Background()
	region, err := grid.ParseRegion(b.Step, b.BBox, 0)
	require.NoError(t, err)
	_, err = db.Store.SeedCells(ctx, region, nil)
	require.NoError(t, err)
	for _, c := range b.MissingInputs {
		ids := region.ChunkIDs(c, b.ChunkSize)
		_, err := db.Pool.Exec(ctx, `DELETE FROM cell_params WHERE step = $1 AND grid_id = $2`, b.Step, ids[0])
		require.NoError(t, err)
	}
	return region
}

// Trigger starts the batch on an already seeded grid and returns it.
func Trigger(t testing.TB, r *testutil.Redis, db *testutil.DB, b Batch) store.Batch {
	t.Helper()
	b.defaults()
	region, err := grid.ParseRegion(b.Step, b.BBox, 0)
	require.NoError(t, err)
	conn := connect.New(db.Store, r.Client, connect.Options{Log: logging.New(io.Discard, "text", "error")})
	bt, err := conn.Batch.Trigger(context.Background(), batch.Request{Kind: b.Kind, Region: region, ChunkSize: b.ChunkSize,
		Deadline: 10 * time.Minute, LockTTL: 20 * time.Minute, Trigger: "test"})
	require.NoError(t, err)
	return bt
}

// WaitEnded polls the batch until it has a final status.
func WaitEnded(t testing.TB, db *testutil.DB, id string, timeout time.Duration) store.Batch {
	t.Helper()
	var b store.Batch
	testutil.Eventually(t, timeout, "batch "+id+" to end", func() bool {
		var err error
		b, err = db.Store.GetBatch(context.Background(), id)
		require.NoError(t, err)
		return b.Ended()
	})
	return b
}

// Families is a parsed /metrics page.
type Families map[string]*dto.MetricFamily

// Scrape GETs url (with basic auth when user is not empty) and parses the
// answer with Prometheus' text parser; any parse error fails the test.
func Scrape(t testing.TB, url, user, password string) Families {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return Parse(t, resp.Body)
}

// Parse parses the Prometheus text format.
func Parse(t testing.TB, r io.Reader) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bufio.NewReader(r))
	require.NoError(t, err, "the /metrics page must parse with Prometheus' text parser")
	return fams
}

// Value returns the value of the series of family name whose labels
// include labels (a counter's, gauge's or untyped value, a histogram's
// sample count), and whether there is one.
func (f Families) Value(name string, labels map[string]string) (float64, bool) {
	fam, ok := f[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range fam.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// Require returns the series' value and fails the test when it is missing.
func (f Families) Require(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := f.Value(name, labels)
	if !ok {
		var names []string
		for n := range f {
			names = append(names, n)
		}
		t.Fatalf("no series %s%v in /metrics (families: %s)", name, labels, strings.Join(names, " "))
	}
	return v
}

// String is for failure messages.
func (f Families) String() string { return fmt.Sprintf("%d metric families", len(f)) }
