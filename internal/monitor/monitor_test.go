package monitor_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/monitor"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/internal/worker/workertest"
)

const (
	user     = "ops"
	password = "correct horse battery staple"
)

type env struct {
	r   *testutil.Redis
	db  *testutil.DB
	url string
}

// start serves a monitor on a test's own Redis database and schema.
func start(t *testing.T, mutate func(*monitor.Config)) *env {
	t.Helper()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	return startOn(t, r, db, mutate)
}

func startOn(t *testing.T, r *testutil.Redis, db *testutil.DB, mutate func(*monitor.Config)) *env {
	t.Helper()
	cfg := monitor.Config{Store: db.Store, Redis: r.Client, RedisConnOpt: r.ClientOpt(), User: user, Password: password}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := monitor.New(cfg)
	require.NoError(t, err)
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		ts.Close()
		require.NoError(t, srv.Close())
	})
	return &env{r: r, db: db, url: ts.URL}
}

// insertBatch records a running batch with no chunk done.
func insertBatch(t *testing.T, db *testutil.DB, id string) store.Batch {
	t.Helper()
	lat, err := grid.NewLattice(0.5)
	require.NoError(t, err)
	region, err := grid.NewRegion(lat, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}, 0)
	require.NoError(t, err)
	now := time.Now().UTC()
	b, err := db.Store.InsertBatch(context.Background(), store.NewBatch{ID: id, Kind: "ph", Region: region, ChunkSize: 20,
		StartedAt: now, DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(70 * time.Minute), Trigger: "test", Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
	require.NoError(t, err)
	return b
}

// shownTime is the one format of times the monitor's pages show.
const shownTime = `\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC`

// requireOneTimeFormat checks that a page shows every time as shownTime:
// RFC 3339 only in the datetime attributes, for machines.
func requireOneTimeFormat(t *testing.T, page string) {
	t.Helper()
	require.NotRegexp(t, `[^"]\d{4}-\d\d-\d\dT\d\d:\d\d`, page, "a time shown in another format")
	require.Regexp(t, shownTime, page)
}

func get(t *testing.T, rawURL, u, p string, header ...string) (*http.Response, string) {
	t.Helper()
	return do(t, http.MethodGet, rawURL, u, p, nil, header...)
}

func do(t *testing.T, method, rawURL, u, p string, form url.Values, header ...string) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, rawURL, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if u != "" || p != "" {
		req.SetBasicAuth(u, p)
	}
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func TestAuthenticationGuardsEveryPageButHealthz(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	insertBatch(t, e.db, "ph-20261122-000000-abcdef")
	pages := []string{"/", "/batches/ph-20261122-000000-abcdef", "/metrics", "/asynqmon/", "/asynqmon/api/queues",
		"/static/monitor.css", "/static/favicon.svg"}
	for _, page := range pages {
		t.Run("page "+page, func(t *testing.T) {
			resp, _ := get(t, e.url+page, "", "")
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "no credentials")
			require.Contains(t, resp.Header.Get("WWW-Authenticate"), `Basic realm="gridbatch monitor"`)
			resp, _ = get(t, e.url+page, "ops", "wrong")
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "wrong password")
			resp, _ = get(t, e.url+page, "admin", password)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "wrong user")
			resp, _ = get(t, e.url+page, user+"x", password)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "user with a suffix")
			resp, _ = get(t, e.url+page, "", password)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "empty user")
			resp, body := get(t, e.url+page, user, password)
			require.Equal(t, http.StatusOK, resp.StatusCode, "right credentials: %s", body)
		})
	}
	t.Run("healthz is open", func(t *testing.T) {
		resp, body := get(t, e.url+"/healthz", "", "")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "ok\n", body)
	})
	t.Run("a POST without credentials is refused before anything else", func(t *testing.T) {
		resp, _ := do(t, http.MethodPost, e.url+"/batches/x/requeue", "", "", url.Values{})
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	})
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	_, err := monitor.New(monitor.Config{Store: db.Store, Redis: r.Client, RedisConnOpt: r.ClientOpt(), User: user})
	require.ErrorContains(t, err, "Password")
	_, err = monitor.New(monitor.Config{Redis: r.Client, RedisConnOpt: r.ClientOpt(), InsecureNoAuth: true})
	require.ErrorContains(t, err, "Store")
}

func TestCheckAuth(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		addr, user, password string
		insecure             bool
		wantErr              string
	}{
		"credentials, any address":            {addr: ":8080", user: "u", password: "twelve chars"},
		"credentials and the insecure flag":   {addr: "0.0.0.0:8080", user: "u", password: "twelve chars", insecure: true},
		"a password under 12 characters":      {addr: "127.0.0.1:8080", user: "u", password: "elevenchars", wantErr: "GRIDBATCH_MONITOR_PASSWORD has 11 characters; use 12 or more"},
		"no credentials":                      {addr: "127.0.0.1:8080", wantErr: "set GRIDBATCH_MONITOR_USER and GRIDBATCH_MONITOR_PASSWORD"},
		"user only":                           {addr: "127.0.0.1:8080", user: "u", wantErr: "GRIDBATCH_MONITOR_PASSWORD is empty"},
		"password only":                       {addr: "127.0.0.1:8080", password: "p", insecure: true, wantErr: "GRIDBATCH_MONITOR_USER is empty"},
		"insecure on 127.0.0.1":               {addr: "127.0.0.1:8080", insecure: true},
		"insecure on 127.1.2.3":               {addr: "127.1.2.3:0", insecure: true},
		"insecure on [::1]":                   {addr: "[::1]:8080", insecure: true},
		"insecure on localhost":               {addr: "localhost:8080", insecure: true},
		"insecure on every interface":         {addr: ":8080", insecure: true, wantErr: "is not a loopback address"},
		"insecure on 0.0.0.0":                 {addr: "0.0.0.0:8080", insecure: true, wantErr: "GRIDBATCH_MONITOR_ADDR=0.0.0.0:8080: it is not a loopback address"},
		"insecure on a private address":       {addr: "10.1.2.3:8080", insecure: true, wantErr: "not a loopback"},
		"insecure on a host name":             {addr: "monitor.internal:8080", insecure: true, wantErr: "not a loopback"},
		"insecure on [::]":                    {addr: "[::]:8080", insecure: true, wantErr: "not a loopback"},
		"insecure on an address with no port": {addr: "127.0.0.1", insecure: true, wantErr: "not a loopback"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := monitor.CheckAuth(c.addr, c.user, c.password, c.insecure)
			if c.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, c.wantErr)
		})
	}
}

func TestRequeueNeedsWritesAndSameOrigin(t *testing.T) {
	t.Parallel()
	id := "ph-20261122-000000-abcdef"
	t.Run("read-only", func(t *testing.T) {
		t.Parallel()
		e := start(t, nil)
		resp, body := do(t, http.MethodPost, e.url+"/batches/"+id+"/requeue", user, password, url.Values{})
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		require.Contains(t, body, "--allow-writes")
		// asynqmon's actions are refused too.
		resp, _ = do(t, http.MethodPost, e.url+"/asynqmon/api/queues/grid:pause", user, password, url.Values{})
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, "asynqmon is read-only")
		// and the page offers no requeue button.
		insertBatch(t, e.db, id)
		_, page := get(t, e.url+"/batches/"+id, user, password)
		require.NotContains(t, page, `action="/batches/`+id+`/requeue"`)
		require.Contains(t, page, "read-only")
	})
	t.Run("writes allowed, requeue not available", func(t *testing.T) {
		t.Parallel()
		e := start(t, func(c *monitor.Config) { c.AllowWrites = true })
		resp, body := do(t, http.MethodPost, e.url+"/batches/"+id+"/requeue", user, password, url.Values{})
		require.Equal(t, http.StatusNotImplemented, resp.StatusCode)
		require.Contains(t, body, "enqueuer dlq requeue --batch "+id)
	})
	t.Run("writes allowed", func(t *testing.T) {
		t.Parallel()
		var mu sync.Mutex
		var calls [][]string
		e := start(t, func(c *monitor.Config) {
			c.AllowWrites = true
			c.Requeue = func(_ context.Context, batchID string, taskIDs []string) (int, error) {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, append([]string{batchID}, taskIDs...))
				if len(taskIDs) > 0 {
					return len(taskIDs), nil
				}
				return 3, nil
			}
		})
		resp, _ := do(t, http.MethodPost, e.url+"/batches/"+id+"/requeue", user, password, url.Values{"task_id": {id + ":c000003"}},
			"Origin", e.url, "Sec-Fetch-Site", "same-origin")
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/batches/"+id+"?requeued=1#dead-letters", resp.Header.Get("Location"))
		resp, _ = do(t, http.MethodPost, e.url+"/batches/"+id+"/requeue", user, password, url.Values{})
		require.Equal(t, http.StatusSeeOther, resp.StatusCode, "a client that sends no Origin (curl) is not a browser: allowed")

		// A page on another site cannot make the operator's browser post here.
		resp, _ = do(t, http.MethodPost, e.url+"/batches/"+id+"/requeue", user, password, url.Values{},
			"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site")
		require.Equal(t, http.StatusForbidden, resp.StatusCode)
		resp, _ = do(t, http.MethodPost, e.url+"/batches/"+id+"/requeue", user, password, url.Values{},
			"Origin", "https://evil.example")
		require.Equal(t, http.StatusForbidden, resp.StatusCode, "an old browser sends Origin only")

		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, [][]string{{id, id + ":c000003"}, {id}}, calls)

		insertBatch(t, e.db, id)
		_, page := get(t, e.url+"/batches/"+id+"?requeued=3", user, password)
		require.Contains(t, page, "Requeued 3 dead letters")
	})
}

// TestPagesAndMetricsOfARealBatch runs a real worker and a batch with two
// chunks missing inputs, and reads the monitor while it runs and after.
func TestPagesAndMetricsOfARealBatch(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	e := startOn(t, r, db, nil)
	spec := workertest.Batch{MissingInputs: []int{2, 5}}
	workertest.Seed(t, db, spec)
	b := workertest.Trigger(t, r, db, spec)

	// No worker yet: the batch is running with nothing done.
	m := workertest.Scrape(t, e.url+"/metrics", user, password)
	ph := map[string]string{"kind": "ph"}
	require.Equal(t, 1.0, m.Require(t, monitor.NameBatchRunning, ph))
	require.Equal(t, 192.0, m.Require(t, monitor.NameBatchCellsTotal, ph))
	require.Equal(t, 0.0, m.Require(t, monitor.NameBatchCellsDone, ph))
	require.Equal(t, 10.0, m.Require(t, monitor.NameBatchChunksTotal, ph))
	require.InDelta(t, float64(b.StartedAt.UnixMilli())/1000, m.Require(t, monitor.NameBatchStarted, ph), 0.001)
	require.Equal(t, 0.0, m.Require(t, monitor.NameBatchRunning, map[string]string{"kind": "hazard"}))
	require.Equal(t, 1.0, m.Require(t, monitor.NameMonitorDBUp, nil))
	_, page := get(t, e.url+"/", user, password)
	require.Contains(t, page, `data-batch="`+b.ID+`"`, "listed under Running")
	require.Contains(t, page, `aria-valuenow="0"`)
	require.Contains(t, page, `<meta http-equiv="refresh" content="5">`, "reloads while a batch runs")
	_, page = get(t, e.url+"/batches/"+b.ID, user, password)
	require.Contains(t, page, "Lock expires", "a running batch holds its kind's lock")

	workertest.StartWorker(t, r, db, map[string]string{"GRIDBATCH_CONCURRENCY": "2", "GRIDBATCH_MAX_RETRY": "0"})
	b = workertest.WaitEnded(t, db, b.ID, 2*time.Minute)
	require.Equal(t, store.StatusPartial, b.Status)

	m = workertest.Scrape(t, e.url+"/metrics", user, password)
	require.Equal(t, 0.0, m.Require(t, monitor.NameBatchRunning, ph))
	require.Equal(t, 0.0, m.Require(t, monitor.NameBatchCellsTotal, ph))
	require.InDelta(t, float64(b.EndedAt.UnixMilli())/1000, m.Require(t, monitor.NameBatchLastEnd, map[string]string{"kind": "ph", "status": "partial"}), 0.001)
	require.Equal(t, 2.0, m.Require(t, monitor.NameDeadLettersOpen, nil))
	// asynq's queue metrics (github.com/hibiken/asynq/x/metrics). The
	// batch ends when its last dead letter is recorded, which the handler
	// does before asynq archives the task: the archive may come a moment
	// later (a CI run scraped 1 of 2).
	gridArchived := map[string]string{"queue": "grid", "state": "archived"}
	testutil.Eventually(t, 10*time.Second, "asynq to archive both dead-lettered tasks", func() bool {
		m = workertest.Scrape(t, e.url+"/metrics", user, password)
		return m.Require(t, "asynq_tasks_enqueued_total", gridArchived) >= 2
	})
	require.Equal(t, 2.0, m.Require(t, "asynq_tasks_enqueued_total", gridArchived))
	m.Require(t, "asynq_queue_size", map[string]string{"queue": "grid"})
	m.Require(t, "asynq_queue_latency_seconds", map[string]string{"queue": "batch"})
	require.GreaterOrEqual(t, m.Require(t, "asynq_tasks_processed_total", map[string]string{"queue": "grid"}), 10.0)
	m.Require(t, "go_goroutines", nil)
	m.Require(t, "process_resident_memory_bytes", nil)

	resp, page := get(t, e.url+"/", user, password)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "default-src 'none'")
	require.Contains(t, page, `href="/batches/`+b.ID+`"`)
	require.Contains(t, page, "No batch is running")
	require.Contains(t, page, `aria-valuenow="10"`)
	require.NotContains(t, page, `http-equiv="refresh"`, "nothing runs: no reload")

	resp, page = get(t, e.url+"/batches/"+b.ID, user, password)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, want := range []string{"partial", "Dead letters", b.ID + ":c000002", b.ID + ":c000005", "no inputs in cell_params",
		"Success rate", "99.0%", "Peak worker memory", "DB connection errors", "Average task", `class="bar-ok"`, `class="bar-fail"`} {
		require.Contains(t, page, want)
	}
	require.NotContains(t, page, "Lock expires", "an ended batch holds no lock")
	require.Regexp(t, `<title>`+shownTime[:len(shownTime)-len(` UTC`)]+`–\d\d:\d\d:\d\d UTC: `, page, "the chart's bars give their time span")
	requireOneTimeFormat(t, page)
	resp, _ = get(t, e.url+"/batches/no-such-batch", user, password)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)

	// asynqmon answers under /asynqmon/ and sees the same queues.
	resp, page = get(t, e.url+"/asynqmon/", user, password)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, "<title>Asynq")
	resp, page = get(t, e.url+"/asynqmon/api/queues", user, password)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, page, `"queue":"grid"`)
	resp, _ = get(t, e.url+"/asynqmon", user, password)
	require.Equal(t, http.StatusMovedPermanently, resp.StatusCode)

	insp := asynq.NewInspectorFromRedisClient(r.Client)
	archived, err := insp.ListArchivedTasks("grid")
	require.NoError(t, err)
	require.Len(t, archived, 2)
}
