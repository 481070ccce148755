package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/tasks"
)

// benchChunkSize is the chunk size of the batches BenchmarkTrust runs, the
// binaries' default.
const benchChunkSize = 500

// BenchmarkTrust measures, on batches of 480,000 cells (the 0.01° Korea
// grid of make bench, 124,33,132,39), what "Results you can trust" costs,
// against the figures of issue 24:
//
//   - inputs_digest: the digest of the batch's inputs, taken when it is
//     planned (want ≤ 1 s);
//   - check_chunk: the built-in ph's checks on a chunk's values, as a worker
//     runs them when it writes the chunk (batch.CheckChunk), a batch's
//     chunks' worth per operation;
//   - batch: a ph batch through batch.Service in this process, as workers
//     run it (the plan; its chunks in GOMAXPROCS goroutines, as many as
//     make bench's pipeline has chunks in flight, started when enqueued,
//     one of them once the plan has ended; the finish that publishes it),
//     with its checks and provenance and without them (ph declaring no
//     checks, planned without provenance), in pairs whose order alternates
//     (with first, then without first, …), on a fresh slate each (want:
//     with ≤ 1.05 × without, the median of the pairs' ratios), and what
//     they add part by part;
//   - diff: enqueuer diff of two batches whose every value differs (ph and
//     the hazard model's values), as a user runs it, under /usr/bin/time
//     (wall time, peak RSS), their rows indexed by cell beforehand (want
//     ≤ 10 s and ≤ 200 MiB).
//
// make bench runs it:
//
//	go test -run '^$' -bench BenchmarkTrust -benchtime 5x ./internal/batch/
func BenchmarkTrust(b *testing.B) {
	ctx := context.Background()
	db := testutil.NewDB(b)
	r, err := grid.ParseRegion(0.01, "124,33,132,39", 0)
	require.NoError(b, err)
	_, err = db.Store.SeedCells(ctx, r, nil)
	require.NoError(b, err)
	_, err = db.Pool.Exec(ctx, `VACUUM ANALYZE cell_params`)
	require.NoError(b, err)
	cells := float64(r.NumCells())
	checks := model.BuiltinSpec(grid.KindPH).Checks

	b.Run("inputs_digest", func(b *testing.B) {
		for b.Loop() {
			d, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
			require.NoError(b, err)
			require.EqualValues(b, r.NumCells(), d.Cells)
		}
		b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/digest")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/cells, "ns/cell")
	})

	var checkSeconds float64 // the checks of a whole batch's chunks
	b.Run("check_chunk", func(b *testing.B) {
		var in []grid.Input
		for _, c := range r.ChunkCells(0, benchChunkSize) {
			in = append(in, grid.Input{GridID: c.GridID, Params: grid.ReferenceParams(c.Lat, c.Lon)})
		}
		series, err := grid.PH.Compute(ctx, in)
		require.NoError(b, err)
		n := r.NumChunks(benchChunkSize)
		for b.Loop() { // a batch's worth of chunks
			for range n {
				c := batch.CheckChunk(checks, grid.FirstYear, series)
				require.EqualValues(b, benchChunkSize, c.Cells)
			}
		}
		checkSeconds = b.Elapsed().Seconds() / float64(b.N)
		b.ReportMetric(checkSeconds, "s/batch")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n*benchChunkSize), "ns/cell")
	})

	b.Run("batch", func(b *testing.B) {
		p := newTrustPairs(b, db, r)
		var with, without, ratios, digests, gates []float64
		for b.Loop() {
			var w, wo trustRun
			if len(ratios)%2 == 0 {
				w, wo = p.run(true), p.run(false)
			} else {
				wo, w = p.run(false), p.run(true)
			}
			with, without = append(with, w.seconds), append(without, wo.seconds)
			ratios = append(ratios, w.seconds/wo.seconds)
			digests, gates = append(digests, w.digest), append(gates, w.gate)
			b.Logf("pair %d (%s first): with checks and provenance %.2f s (inputs digest %.3f s, gate %.3f s; CPU of this process %.2f s), without %.2f s (CPU %.2f s): %.3f ×",
				len(ratios), map[bool]string{true: "with", false: "without"}[len(ratios)%2 == 1], w.seconds, w.digest, w.gate, w.cpu, wo.seconds, wo.cpu, w.seconds/wo.seconds)
		}
		b.ReportMetric(median(with), "s-with")
		b.ReportMetric(median(without), "s-without")
		b.ReportMetric(median(ratios), "with/without")
		added := median(digests) + median(gates) + checkSeconds
		b.Logf("what checks and provenance add, part by part: inputs digest %.3f s + gate %.3f s (medians) + the chunks' checks %.3f s of CPU (check_chunk) = %.3f s, %.1f%% of the median batch without them",
			median(digests), median(gates), checkSeconds, added, 100*added/median(without))
	})

	b.Run("diff", func(b *testing.B) {
		a := testutil.StoreBatch(b, db.Store, "ph-bench-trust-a", grid.KindPH, grid.PH, r, benchChunkSize, nil, store.StatusPartial)
		other := testutil.StoreBatch(b, db.Store, "ph-bench-trust-b", grid.KindPH, grid.Hazard, r, benchChunkSize, nil, store.StatusPartial)
		for _, id := range []string{a.ID, other.ID} {
			start := time.Now()
			require.NoError(b, db.Store.IndexBatchRows(ctx, id))
			b.Logf("indexed the rows of %s by cell (once, as publishing or the first diff does) in %.2f s", id, time.Since(start).Seconds())
		}
		enqueuer := filepath.Join(testutil.Binaries(b), "enqueuer")
		var wall, rss []float64
		for b.Loop() {
			cmd := exec.Command("/usr/bin/time", "-f", "wall %e s, max RSS %M KiB, user %U s, system %S s", enqueuer, "diff", a.ID, other.ID, "--json")
			cmd.Env = append(os.Environ(), "GRIDBATCH_DATABASE_URL="+db.URL)
			var out, errOut bytesBuffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			require.NoError(b, cmd.Run(), "%s", errOut.String())
			var rep struct {
				Series []batch.SeriesDiff `json:"series"`
			}
			require.NoError(b, json.Unmarshal(out.Bytes(), &rep))
			require.Len(b, rep.Series, 3)
			require.EqualValues(b, r.NumCells(), rep.Series[0].CellsCompared)
			m := regexp.MustCompile(`wall ([0-9.]+) s, max RSS ([0-9]+) KiB.*`).FindStringSubmatch(errOut.String())
			require.NotNil(b, m, errOut.String())
			w, _ := strconv.ParseFloat(m[1], 64)
			kib, _ := strconv.ParseFloat(m[2], 64)
			wall, rss = append(wall, w), append(rss, kib/1024)
			b.Log(m[0])
		}
		b.ReportMetric(median(wall), "s-wall")
		b.ReportMetric(slices.Max(rss), "MiB-peak-RSS")
	})
}

// bytesBuffer is a bytes.Buffer safe for a command's two outputs.
type bytesBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (w *bytesBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *bytesBuffer) Bytes() []byte  { return w.b }
func (w *bytesBuffer) String() string { return string(w.b) }

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// trustPairs runs BenchmarkTrust's batches.
type trustPairs struct {
	b      *testing.B
	db     *testutil.DB
	rdb    *testutil.Redis
	r      grid.Region
	broker *tasks.Broker
	// with is the built-in models; without, ph declaring no checks.
	with, without *model.Set
}

// enqueueSignal is a broker that says when the chunks are enqueued.
type enqueueSignal struct {
	*tasks.Broker
	enqueued chan struct{}
	once     sync.Once
}

func (e *enqueueSignal) EnqueueChunks(ctx context.Context, b store.Batch, chunks []int) error {
	err := e.Broker.EnqueueChunks(ctx, b, chunks)
	e.once.Do(func() { close(e.enqueued) })
	return err
}

// trustRun is one batch: its time, the CPU time of this process (the
// chunks' computing and checks, the digest's hashing, the gate), and,
// with checks and provenance, the inputs digest's time and the gate's as
// the batch recorded them.
type trustRun struct {
	seconds, cpu, digest, gate float64
}

// processCPU is the user and system time of this process so far, in
// seconds.
func processCPU(b *testing.B) float64 {
	var u syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &u))
	return time.Duration(u.Utime.Nano() + u.Stime.Nano()).Seconds()
}

func newTrustPairs(b *testing.B, db *testutil.DB, r grid.Region) *trustPairs {
	rdb := testutil.NewRedis(b)
	without := model.Builtins()
	spec := model.BuiltinSpec(grid.KindPH)
	spec.Checks = nil
	ph, ok := without.Go(grid.KindPH)
	require.True(b, ok)
	require.NoError(b, without.Add(spec, ph))
	return &trustPairs{b: b, db: db, rdb: rdb, r: r, with: model.Builtins(), without: without,
		broker: tasks.NewBroker(asynq.NewClientFromRedisClient(rdb.Client), asynq.NewInspectorFromRedisClient(rdb.Client), rdb.Client, tasks.ChunkOptions{})}
}

// run runs one ph batch of the region from its plan to its publication:
// with trust, the worker's plan (batch.Service.Plan: provenance, chunk
// rows, chunk tasks) and the built-in ph's checks; without, the chunk
// rows and tasks alone and ph without checks. Its chunks run here, in
// GOMAXPROCS goroutines, with the worker's chunk code (RunChunk, which
// finishes the batch after the last), from the moment they are enqueued,
// one goroutine only once the plan has ended (see the comment within).
// Each run starts from no batch, no task, a checkpoint.
func (p *trustPairs) run(trust bool) trustRun {
	b, ctx := p.b, context.Background()
	require.NoError(b, p.db.Store.DropAllResults(ctx))
	_, _ = p.db.Pool.Exec(ctx, `CHECKPOINT`) // needs superuser or pg_checkpoint; without it runs are a little noisier
	require.NoError(b, p.rdb.Client.FlushDB(ctx).Err())
	// No autovacuum of an earlier run's rows shares the machine (at most
	// two minutes' wait).
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var n int
		require.NoError(b, p.db.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'`).Scan(&n))
		if n == 0 {
			break
		}
	}
	models := p.without
	if trust {
		models = p.with
	}
	broker := &enqueueSignal{Broker: p.broker, enqueued: make(chan struct{})}
	svc := batch.New(p.db.Store, broker, slog.New(slog.NewTextHandler(io.Discard, nil)), batch.Config{Models: models, Worker: "bench-trust"})
	now := time.Now().UTC()
	bt, err := p.db.Store.InsertBatch(ctx, store.NewBatch{ID: batch.NewID(grid.KindPH, now), Kind: grid.KindPH, Region: p.r,
		ChunkSize: benchChunkSize, StartedAt: now, DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour),
		Trigger: "bench", Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
	require.NoError(b, err)
	start, cpu := time.Now(), processCPU(b)
	planned := make(chan error, 1)
	go func() {
		if trust {
			planned <- svc.Plan(ctx, bt.ID)
			return
		}
		pending, err := p.db.Store.PlanChunks(ctx, bt)
		if err == nil {
			err = broker.EnqueueChunks(ctx, bt, pending)
		}
		planned <- err
	}()
	var planErr error
	select {
	case <-broker.enqueued:
	case planErr = <-planned:
		require.NoError(b, planErr)
		require.Fail(b, "planned without enqueuing its chunks")
	}
	// The chunks start once enqueued, as workers start their tasks; the
	// first runner is the plan's, as the worker that runs the plan task
	// has one slot fewer until it ends (make bench's 2 workers run one
	// task at a time each).
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.GOMAXPROCS(0))
	for g := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g == 0 {
				if planErr = <-planned; planErr != nil {
					return
				}
			}
			for c := int(next.Add(1) - 1); c < bt.TotalChunks; c = int(next.Add(1) - 1) {
				if errs[g] = svc.RunChunk(ctx, batch.Chunk{BatchID: bt.ID, TaskID: batch.ChunkTaskID(bt.ID, c), Kind: bt.Kind,
					Index: c, Step: bt.Step, BBox: bt.BBox, ChunkSize: bt.ChunkSize}); errs[g] != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	require.NoError(b, planErr)
	el, cpu := time.Since(start).Seconds(), processCPU(b)-cpu
	require.NoError(b, errors.Join(errs...))
	done, err := p.db.Store.GetBatch(ctx, bt.ID)
	require.NoError(b, err)
	require.Equal(b, store.StatusSucceeded, done.Status)
	require.NotNil(b, done.PublishedAt, "published")
	out := trustRun{seconds: el, cpu: cpu}
	if trust {
		require.NotNil(b, done.Provenance, "provenance recorded")
		require.NotNil(b, done.Checks, "checks run")
		out.digest, out.gate = done.Provenance.Inputs.Seconds, done.Checks.Seconds
	} else {
		require.Nil(b, done.Provenance)
		require.Nil(b, done.Checks)
	}
	return out
}
