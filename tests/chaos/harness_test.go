//go:build integration

// Package chaos runs the failure scenarios of DESIGN.md against the real
// binaries and private Redis and PostgreSQL instances of its own (ports 6391
// and 5441, data in .services/chaos), which it stops, kills and restarts.
// GRIDBATCH_CHAOS_REDIS_PORT and GRIDBATCH_CHAOS_PG_PORT move them to other
// ports (data in .services/chaos-<redis port>-<pg port>), so that two runs
// on one machine do not stop each other's services.
// Each scenario prints one line: SCENARIO name outcome duration rows.
package chaos

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/tests/chaos/chaosmodel"
)

// The chaos services' ports: 6391 and 5441 unless the environment says
// otherwise.
var (
	redisPort = cmp.Or(os.Getenv("GRIDBATCH_CHAOS_REDIS_PORT"), "6391")
	pgPort    = cmp.Or(os.Getenv("GRIDBATCH_CHAOS_PG_PORT"), "5441")
)

var (
	binDir      string
	servicesEnv []string
)

func TestMain(m *testing.M) {
	root := testutil.RepoRoot()
	dir := "chaos"
	if redisPort != "6391" || pgPort != "5441" {
		dir = "chaos-" + redisPort + "-" + pgPort
	}
	servicesEnv = append(os.Environ(),
		"GRIDBATCH_SERVICES_DIR="+filepath.Join(root, ".services", dir),
		"GRIDBATCH_REDIS_PORT="+redisPort, "GRIDBATCH_PG_PORT="+pgPort)
	if out, err := services("up"); err != nil {
		fmt.Fprintf(os.Stderr, "chaos: cannot start the private services (%v):\n%s\nrun: make services-up (it installs what is missing), then retry\n", err, out)
		os.Exit(1)
	}
	os.Setenv("GRIDBATCH_TEST_REDIS_URL", "redis://127.0.0.1:"+redisPort+"/0")
	os.Setenv("GRIDBATCH_TEST_DATABASE_URL", "postgres://gridbatch:gridbatch@127.0.0.1:"+pgPort+"/gridbatch?sslmode=disable")
	var err error
	binDir, err = os.MkdirTemp("", "gridbatch-chaos-bin-")
	if err == nil {
		cmd := exec.Command("go", "build", "-tags", "integration", "-o", binDir+"/",
			"./cmd/worker", "./cmd/enqueuer", "./tests/chaos/testworker")
		cmd.Dir = root
		var out []byte
		if out, err = cmd.CombinedOutput(); err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "chaos: build the binaries: %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	_, _ = services("down")
	os.RemoveAll(binDir)
	os.Exit(code)
}

func services(verb string) (string, error) {
	cmd := exec.Command(filepath.Join(testutil.RepoRoot(), "scripts", "services.sh"), verb)
	cmd.Env = servicesEnv
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// env is one scenario's testutil.Cluster on the chaos services: its own
// Redis DB and schema, the Korea grid seeded, the binaries of binDir, and
// batch reads that outlast a stopped or restarted PostgreSQL.
type env struct{ *testutil.Cluster }

func newEnv(t *testing.T) *env {
	c := testutil.NewCluster(t)
	c.Bin = binDir
	// The scenarios stop and restart PostgreSQL while they wait.
	c.Batches.RetryReads = true
	c.Seed()
	return &env{c}
}

// rows counts the rows of batch b (ph) of the Korea grid and checks each
// against the kernel; cellOK selects the cells expected to have rows.
func (e *env) rows(b store.Batch, cellOK func(grid.Cell) bool) (expected, found int) {
	return e.rowsOf(b, grid.PH, 0, cellOK)
}

// rowsOf counts batch b's own rows, checked against the kernel ref within
// rel, and the rows it should have (one per scenario of each cell cellOK
// keeps). A batch that succeeded is published: then the published values
// of its kind must be exactly its rows.
func (e *env) rowsOf(b store.Batch, ref grid.Model, rel float64, cellOK func(grid.Cell) bool) (expected, found int) {
	e.T.Helper()
	region, err := grid.ParseRegion(0.05, "124,33,132,39", 0)
	require.NoError(e.T, err)
	for k := range region.NumCells() {
		if cellOK(region.CellAt(k)) {
			expected += len(grid.Scenarios)
		}
	}
	found = testutil.CheckBatchResults(e.T, e.DB.Store, b.ID, ref, rel, 0.05, cellOK)
	if b.Status == store.StatusSucceeded {
		published := testutil.CheckResultsAgainst(e.T, e.DB.Store, b.Kind, ref, rel, 0.05, cellOK)
		require.Equal(e.T, found, published, "the published values are the batch's rows")
		var others int
		require.NoError(e.T, e.DB.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM `+pgx.Identifier{b.Kind + "_timeseries"}.Sanitize()+` WHERE batch_id <> $1`, b.ID).Scan(&others))
		require.Zero(e.T, others, "no published row of another batch")
	}
	return expected, found
}

func all(grid.Cell) bool { return true }

// report prints the scenario's line.
func report(name, outcome string, b store.Batch, expected, found int, extra string) {
	dur := "-"
	if b.DurationSeconds != nil {
		dur = fmt.Sprintf("%.1fs", *b.DurationSeconds)
	}
	line := fmt.Sprintf("SCENARIO %-28s %-4s batch=%s status=%s duration=%s rows=%d/%d", name, outcome, b.ID, b.Status, dur, found, expected)
	if extra != "" {
		line += " " + extra
	}
	fmt.Println(line)
}

// trigger starts a batch in-process (for model kinds only the test registers).
func (e *env) trigger(kind string, chunkSize int) store.Batch {
	e.T.Helper()
	models := chaosmodel.Models()
	_, err := e.DB.Store.EnsureResultsTables(context.Background(), models.Kinds())
	require.NoError(e.T, err)
	svc := connect.New(e.DB.Store, e.Redis.Client, connect.Options{Models: models}).Batch
	region, err := grid.ParseRegion(0.05, "124,33,132,39", 0)
	require.NoError(e.T, err)
	b, err := svc.Trigger(context.Background(), batch.Request{Kind: kind, Region: region, ChunkSize: chunkSize,
		Deadline: 10 * time.Minute, LockTTL: 20 * time.Minute, Trigger: "test"})
	require.NoError(e.T, err)
	return b
}

// proxy is a TCP proxy to PostgreSQL that counts connection attempts.
type proxy struct {
	ln       net.Listener
	attempts atomic.Int64
	mu       sync.Mutex
	conns    []net.Conn
}

func startProxy(t *testing.T, upstream string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.attempts.Add(1)
			go p.pipe(c, upstream)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *proxy) pipe(c net.Conn, upstream string) {
	u, err := net.DialTimeout("tcp", upstream, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, u)
	p.mu.Unlock()
	go func() { _, _ = io.Copy(u, c); u.Close() }()
	_, _ = io.Copy(c, u)
	c.Close()
}

// viaProxy returns the DB URL with its host replaced by the proxy's.
func viaProxy(raw string, p *proxy) string {
	u, _ := url.Parse(raw)
	u.Host = p.ln.Addr().String()
	return u.String()
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}
