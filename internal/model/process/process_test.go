package process_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/model/process"
)

// TestMain lets the test binary supervise its model processes, as the
// worker binary does.
func TestMain(m *testing.M) {
	process.RunShimIfAsked()
	goleak.VerifyTestMain(m)
}

const python = "/usr/bin/python3"

// env is one test's runtime over the test model (testdata/model.py) with
// a behaviour, and a marker in the model's environment that finds its
// processes (and their children) in /proc.
type env struct {
	t      *testing.T
	rt     *process.Runtime
	spec   model.Spec
	marker string
	log    *syncBuffer
}

func newEnv(t *testing.T, behaviour string, tweak func(*model.Spec), args ...string) *env {
	t.Helper()
	if _, err := os.Stat(python); err != nil {
		t.Fatalf("%s is missing: run 'make services-up' (it installs Debian's python3-numpy)", python)
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	marker := hex.EncodeToString(b)
	dir, err := filepath.Abs("testdata")
	require.NoError(t, err)
	spec := model.BuiltinSpec(grid.KindPH)
	spec.Kind = "ph_test"
	spec.Command = append([]string{python, "model.py", behaviour}, args...)
	spec.Workdir = dir
	spec.Env = map[string]string{"GRIDBATCH_TEST_MARKER": marker}
	if tweak != nil {
		tweak(&spec)
	}
	set := model.New()
	require.NoError(t, set.Add(spec, nil))
	spec, err = set.Spec(spec.Kind)
	require.NoError(t, err)
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, nil))
	// As the worker: under the model user (nobody, when the tests run as root).
	u, err := process.LookupUser(modelUser())
	require.NoError(t, err)
	rt := process.New(set, log, process.Config{Concurrency: 1, MinBackoff: 300 * time.Millisecond, MaxBackoff: time.Second,
		StartTimeout: 20 * time.Second, User: u})
	e := &env{t: t, rt: rt, spec: spec, marker: marker, log: buf}
	t.Cleanup(func() {
		rt.Close()
		e.waitGone(3 * time.Second)
	})
	return e
}

// cells returns n cells of the Korea grid from the k-th on, with their
// reference inputs.
func cells(t *testing.T, k, n int) model.Cells {
	t.Helper()
	r, err := grid.ParseRegion(0.05, "124,33,132,39", 0)
	require.NoError(t, err)
	c := model.Cells{Inputs: make([][]float64, 3)}
	for i := k; i < k+n; i++ {
		cell := r.CellAt(i)
		p := grid.ReferenceParams(cell.Lat, cell.Lon)
		c.GridID = append(c.GridID, cell.GridID)
		c.Lat, c.Lon = append(c.Lat, cell.Lat), append(c.Lon, cell.Lon)
		c.Inputs[0], c.Inputs[1], c.Inputs[2] = append(c.Inputs[0], p.Mu0), append(c.Inputs[1], p.Sigma), append(c.Inputs[2], p.Xi)
	}
	return c
}

// kernelPH returns the Go kernel's values for c: per cell, ssp126, ssp245
// and ssp585, each 2021..2100.
func kernelPH(t *testing.T, c model.Cells) []float64 {
	t.Helper()
	in := make([]grid.Input, c.Len())
	for i, id := range c.GridID {
		in[i] = grid.Input{GridID: id, Params: grid.Params{Mu0: c.Inputs[0][i], Sigma: c.Inputs[1][i], Xi: c.Inputs[2][i]}}
	}
	v, err := grid.PH.Values(context.Background(), in)
	require.NoError(t, err)
	return v
}

// check compares values with the Go kernel's for c, within 1e-12 relative.
func check(t *testing.T, c model.Cells, got []float64) {
	t.Helper()
	want := kernelPH(t, c)
	require.Len(t, got, len(want))
	for i, w := range want {
		if math.Abs(got[i]-w) > 1e-12*math.Abs(w) {
			t.Fatalf("value %d: got %v, want %v", i, got[i], w)
		}
	}
}

func (e *env) compute(ctx context.Context, c model.Cells) ([]float64, error) {
	return e.rt.Compute(ctx, e.spec, "test:c000000", c)
}

// alive returns the pids of the processes carrying the test's marker: the
// supervisor, the model and any child the model started.
func (e *env) alive() []int {
	var pids []int
	ds, _ := os.ReadDir("/proc")
	for _, d := range ds {
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "environ"))
		if err == nil && bytes.Contains(b, []byte("GRIDBATCH_TEST_MARKER="+e.marker)) {
			pid, _ := strconv.Atoi(d.Name())
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitGone fails the test unless every marked process is gone within d.
func (e *env) waitGone(d time.Duration) time.Duration {
	e.t.Helper()
	start := time.Now()
	for len(e.alive()) > 0 {
		if time.Since(start) > d {
			e.t.Fatalf("model processes still alive %s after the kill: %v", d, e.alive())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func TestReusesOneProcessAcrossChunks(t *testing.T) {
	e := newEnv(t, "ok", nil)
	for k := 0; k < 3; k++ {
		c := cells(t, k*100, 100)
		v, err := e.compute(context.Background(), c)
		require.NoError(t, err)
		check(t, c, v)
	}
	require.EqualValues(t, 1, e.rt.Starts(e.spec.Kind), "one process served every chunk")
	require.Empty(t, e.rt.NotReady())
}

func TestTimeoutKillsTheWholeGroup(t *testing.T) {
	c := cells(t, 0, 10)
	e := newEnv(t, "hang", func(s *model.Spec) { s.Timeout = 2 * time.Second }, itoa(c.GridID[0]))
	warm := cells(t, 100, 10)
	_, err := e.compute(context.Background(), warm) // the process is up before the clock starts
	require.NoError(t, err)
	done := make(chan struct{})
	seen := make(chan []int, 1)
	go func() { // the fault must hit: supervisor, model and its child alive before the kill
		var before []int
		for {
			select {
			case <-done:
				seen <- before
				return
			case <-time.After(50 * time.Millisecond):
			}
			if pids := e.alive(); len(pids) > len(before) {
				before = pids
			}
		}
	}()
	start := time.Now()
	_, err = e.compute(context.Background(), c)
	took := time.Since(start)
	close(done)
	require.Len(t, <-seen, 3, "supervisor, model and its sleep child before the timeout")
	require.ErrorContains(t, err, "killed: chunk timeout")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, model.ErrInvalid, "a timeout is retried")
	require.Less(t, took, 3*time.Second+500*time.Millisecond, "killed within a second of the timeout")
	// The model ignored SIGTERM and left a child: the group is gone all the same.
	e.waitGone(time.Second)
	require.Contains(t, e.log.String(), "reason=\"chunk timeout\"")
}

func TestCancelKillsWithinASecond(t *testing.T) {
	e := newEnv(t, "hang", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.compute(ctx, cells(t, 0, 10))
		done <- err
	}()
	require.Eventually(t, func() bool { return len(e.alive()) >= 3 }, 20*time.Second, 20*time.Millisecond,
		"supervisor, model and its sleep child running")
	time.Sleep(300 * time.Millisecond)
	cancel()
	start := time.Now()
	err := <-done
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "chunk cancelled")
	e.waitGone(time.Second)
	require.Less(t, time.Since(start), time.Second+200*time.Millisecond)
}

func TestAFreshProcessServesAfterAKill(t *testing.T) {
	c0 := cells(t, 0, 10)
	e := newEnv(t, "hang", func(s *model.Spec) { s.Timeout = time.Second }, itoa(c0.GridID[0]))
	_, err := e.compute(context.Background(), c0)
	require.ErrorContains(t, err, "chunk timeout")
	c := cells(t, 100, 10)
	v, err := e.compute(context.Background(), c)
	require.NoError(t, err)
	check(t, c, v)
	require.EqualValues(t, 2, e.rt.Starts(e.spec.Kind))
}

func TestDeathMidChunkIsRetriedWithItsSignal(t *testing.T) {
	c0 := cells(t, 0, 10)
	e := newEnv(t, "abort", nil, itoa(c0.GridID[0]))
	_, err := e.compute(context.Background(), c0)
	var ee *process.ExitError
	require.ErrorAs(t, err, &ee)
	require.Contains(t, ee.Status, "SIGABRT")
	require.NotErrorIs(t, err, model.ErrInvalid)
	require.Contains(t, e.log.String(), "model process ended mid-chunk")
	c := cells(t, 50, 10)
	v, err := e.compute(context.Background(), c)
	require.NoError(t, err, "restarted")
	check(t, c, v)
	require.EqualValues(t, 2, e.rt.Starts(e.spec.Kind))
}

func TestExitZeroMidChunk(t *testing.T) {
	e := newEnv(t, "exit", nil)
	_, err := e.compute(context.Background(), cells(t, 0, 10))
	var ee *process.ExitError
	require.ErrorAs(t, err, &ee)
	require.Equal(t, "exit status 0", ee.Status)
}

func TestWrongShapeOrTypeIsNotRetried(t *testing.T) {
	for _, tc := range []struct{ behaviour, want string }{
		{"shape", "model replied a float64 array of shape (10, 2, 80); want float64 of shape (10, 3, 80) (cells, series, years)"},
		{"int", "model replied a int64 array of shape (10, 3, 80); want float64 of shape (10, 3, 80) (cells, series, years)"},
	} {
		t.Run(tc.behaviour, func(t *testing.T) {
			e := newEnv(t, tc.behaviour, nil)
			_, err := e.compute(context.Background(), cells(t, 0, 10))
			require.ErrorIs(t, err, model.ErrInvalid)
			require.ErrorContains(t, err, tc.want)
			require.Len(t, e.alive(), 2, "the process is still fine: supervisor and model")
		})
	}
}

func TestExceptionFailsTheChunkWithItsTypeAndMessage(t *testing.T) {
	e := newEnv(t, "raise", nil)
	c := cells(t, 0, 10)
	_, err := e.compute(context.Background(), c)
	var ce *process.ComputeError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "ValueError: boom in cell "+itoa(c.GridID[0]), ce.Text)
	require.NotErrorIs(t, err, model.ErrInvalid, "an exception is retried")
	require.Contains(t, e.log.String(), "Traceback")
	require.EqualValues(t, 1, e.rt.Starts(e.spec.Kind), "the process serves on")
}

func TestMemoryLimitKills(t *testing.T) {
	e := newEnv(t, "memory", func(s *model.Spec) { s.MemoryLimit = 200 << 20 })
	start := time.Now()
	_, err := e.compute(context.Background(), cells(t, 0, 10))
	require.ErrorContains(t, err, "memory limit")
	require.Less(t, time.Since(start), 4*time.Second, "killed before its 5 s sleep ended")
	e.waitGone(time.Second)
}

func TestModelOutputIsLoggedLineByLine(t *testing.T) {
	e := newEnv(t, "print", nil)
	c := cells(t, 0, 10)
	v, err := e.compute(context.Background(), c)
	require.NoError(t, err)
	check(t, c, v)
	require.Eventually(t, func() bool {
		out := e.log.String()
		return strings.Contains(out, `msg="model output" kind=ph_test`) && strings.Contains(out, `stream=stdout line="computing 10 cells"`) &&
			strings.Contains(out, `stream=stderr line="a warning on stderr"`)
	}, 5*time.Second, 20*time.Millisecond, e.log.String())
}

func TestACommandThatCannotStartBacksOff(t *testing.T) {
	e := newEnv(t, "ok", func(s *model.Spec) { s.Command = []string{"/nonexistent/model", "x"} })
	_, err := e.compute(context.Background(), cells(t, 0, 10))
	require.ErrorIs(t, err, process.ErrCannotStart)
	require.ErrorContains(t, err, "no such file or directory")
	require.Len(t, e.rt.NotReady(), 1)
	require.Contains(t, e.rt.NotReady()[0], "model ph_test cannot start")
	// Within the backoff no attempt is made: it fails at once.
	_, err = e.compute(context.Background(), cells(t, 0, 10))
	require.ErrorContains(t, err, "next attempt in")
	require.Equal(t, 1, strings.Count(e.log.String(), "model process cannot start"))
}

// TestTheModelComputesTheLayoutTheHandshakeSends: the worker's HELLO carries
// the models file's layout, which a model stating none (the reference ph
// with setup and context, as in examples/) computes; one it cannot compute
// is refused at start, with the model's message.
func TestTheModelComputesTheLayoutTheHandshakeSends(t *testing.T) {
	e := newEnv(t, "layout", func(s *model.Spec) {
		s.Series, s.FirstYear, s.Years = []string{"ssp585", "ssp126"}, 2051, 7
	})
	c := cells(t, 0, 5)
	got, err := e.compute(context.Background(), c)
	require.NoError(t, err, e.log.String())
	// The Go kernel's values at those series and years.
	all := kernelPH(t, c)
	require.Len(t, got, 5*2*7)
	for i := range c.GridID {
		for j, series := range []int{2, 0} {
			for k := 0; k < 7; k++ {
				w, g := all[(i*3+series)*80+30+k], got[(i*2+j)*7+k]
				require.InDelta(t, w, g, 1e-12*math.Abs(w), "cell %d, series %d, year %d", i, j, 2051+k)
			}
		}
	}

	e = newEnv(t, "layout", func(s *model.Spec) { s.Series = []string{"ssp126", "ssp370"} })
	_, err = e.compute(context.Background(), cells(t, 0, 10))
	require.ErrorIs(t, err, process.ErrCannotStart)
	require.ErrorContains(t, err, "handshake refused: HandshakeError: setup refused kind ph_test's layout: ValueError: "+
		"the reference model reads inputs mu0, sigma, xi and knows scenarios ssp126, ssp245, ssp585; the models file "+
		"declares inputs mu0, sigma, xi and series ssp126, ssp370")
}

func TestHandshakeRefusal(t *testing.T) {
	e := newEnv(t, "refuse", nil)
	_, err := e.compute(context.Background(), cells(t, 0, 10))
	require.ErrorIs(t, err, process.ErrCannotStart)
	require.ErrorContains(t, err, "handshake refused: HandshakeError")
	require.ErrorContains(t, err, "inputs")
}

func TestMaxChunksPerProcessReplaces(t *testing.T) {
	e := newEnv(t, "ok", func(s *model.Spec) { s.MaxChunksPerProcess = 2 })
	for k := 0; k < 4; k++ {
		_, err := e.compute(context.Background(), cells(t, k*10, 10))
		require.NoError(t, err)
	}
	require.EqualValues(t, 2, e.rt.Starts(e.spec.Kind))
}

func TestCloseEndsEveryProcess(t *testing.T) {
	e := newEnv(t, "ok", func(s *model.Spec) { s.Processes = 2 })
	var wg sync.WaitGroup
	for k := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.compute(context.Background(), cells(t, k*10, 10))
			require.NoError(t, err)
		}()
	}
	wg.Wait()
	require.NotEmpty(t, e.alive())
	e.rt.Close()
	e.waitGone(3 * time.Second)
}

// modelUser is the worker's default GRIDBATCH_MODEL_USER.
func modelUser() string {
	if os.Geteuid() == 0 {
		return "nobody"
	}
	return ""
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// syncBuffer is a bytes.Buffer safe for the log's concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
