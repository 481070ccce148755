// Package worker is the worker process: the asynq server for the grid and
// batch queues, its HTTP endpoints and the one-at-a-time reconciler.
// cmd/worker is a thin main around Run; tests build variants with extra
// handlers through Options.
package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/breaker"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/health"
	"github.com/gridbatch/gridbatch/internal/lease"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/metrics"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/model/process"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// Option adds to a worker; tests use it to register extra task types.
type Option func(*options)

type options struct {
	handlers map[string]asynq.Handler
	models   []goModel
}

type goModel struct {
	spec model.Spec
	c    model.Computer
}

// WithHandler registers an extra handler for a task type.
func WithHandler(typ string, h asynq.Handler) Option {
	return func(o *options) { o.handlers[typ] = h }
}

// WithModel adds a Go model to the models the worker runs (those of
// GRIDBATCH_MODELS_FILE and the built-ins).
func WithModel(spec model.Spec, c model.Computer) Option {
	return func(o *options) { o.models = append(o.models, goModel{spec, c}) }
}

// ErrReload is what Run returns when it stopped to load a models file that
// changed (on SIGHUP): the caller starts the worker again (cmd/worker execs
// itself), which reads the file anew.
var ErrReload = errors.New("the models file changed: restart to load it")

// Run runs the worker until ctx is cancelled (SIGTERM/SIGINT), then shuts
// down: no new tasks, in-flight ones get ShutdownTimeout, the rest are
// requeued without counting a retry. It returns nil after a clean shutdown.
// On SIGHUP it reads GRIDBATCH_MODELS_FILE again: when the models it
// declares changed, it shuts down the same way and returns ErrReload; an
// unchanged or invalid file is logged and the worker runs on.
func Run(ctx context.Context, cfg config.Worker, stderr io.Writer, opts ...Option) error {
	o := options{handlers: map[string]asynq.Handler{}}
	for _, opt := range opts {
		opt(&o)
	}
	log := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	if cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	models, err := connect.Models(cfg.Common)
	if err != nil {
		return err
	}
	loaded := models.Specs()
	for _, m := range o.models {
		if err := models.Add(m.spec, m.c); err != nil {
			return err
		}
	}
	modelUser, err := process.LookupUser(cfg.ModelUser)
	if err != nil {
		return fmt.Errorf("GRIDBATCH_MODEL_USER: %w", err)
	}
	m := metrics.NewWorker(tasks.TypeChunk, tasks.TypePlan, tasks.TypeLock)
	db := breaker.New(breaker.Config{Failures: cfg.BreakerFailures, OpenFor: cfg.BreakerOpenFor,
		IsConnError: store.IsConnError, Log: log, OnChange: func(_, to string) { m.SetBreakerState(to) }})
	// The model processes: started on demand, killed at their chunk's end
	// of life, and all ended when the worker stops (after the asynq server,
	// so in-flight chunks are killed through their contexts first).
	var procs *process.Runtime
	conn, err := connect.Open(ctx, cfg.Common, connect.Options{App: "gridbatch-worker", Log: log, Models: models,
		Chunk: tasks.ChunkOptions{Timeout: cfg.TaskTimeout, MaxRetry: tasks.Retries(cfg.MaxRetry)},
		Batch: batch.Config{DB: db},
		Compute: func(set *model.Set) batch.Computer {
			procs = process.New(set, log, process.Config{Concurrency: cfg.ModelProcessesPerKind(), User: modelUser})
			return procs
		}})
	if err != nil {
		return err
	}
	defer conn.Close()
	defer procs.Close()
	st, rdb, svc, workerName := conn.Store, conn.Redis, conn.Batch, conn.Batch.Worker()
	h := tasks.NewHandlers(svc, log, tasks.WithObserver(m))
	dq, err := conn.DLQ(nil, dlq.Config{SweepInterval: cfg.DLQSweepInterval})
	if err != nil {
		return err
	}

	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:    cfg.Concurrency,
		Queues:         tasks.Queues,
		RetryDelayFunc: retryDelay(tasks.RetryDelay(cfg.RetryPolicy, cfg.RetryBase), db),
		// A task refused by the open breaker never reached the database: it
		// is retried without counting against its retries.
		IsFailure:         batch.Counted,
		ErrorHandler:      asynq.ErrorHandlerFunc(h.HandleError),
		Logger:            logging.Asynq(log),
		LogLevel:          logging.AsynqLevel(cfg.LogLevel),
		ShutdownTimeout:   cfg.ShutdownTimeout,
		TaskCheckInterval: cfg.TaskCheckInterval,
		// Retries and scheduled tasks are moved to pending by a check every
		// DelayedTaskCheckInterval (asynq's default 5s), which would add up
		// to 5 s to every retry's countdown of RetryBase·(n+1).
		DelayedTaskCheckInterval: time.Second,
		HealthCheckFunc: func(err error) {
			if err != nil {
				log.Error("asynq cannot reach Redis", "error", err)
			}
		},
	})
	wd := NewWatchdog(cfg.HungGrace, log)
	mux := asynq.NewServeMux()
	mux.Use(logStartLatency(log))
	mux.Use(wd.Middleware)
	mux.Use(m.Middleware)
	tasks.Register(mux, h)
	for typ, extra := range o.handlers {
		mux.Handle(typ, extra)
	}

	httpSrv, err := health.Listen(cfg.HTTPAddr, endpoints(rdb, st, liveness(cfg, wd, conn.Inspector), procs.NotReady, m.Handler(), cfg.Pprof), log)
	if err != nil {
		return err
	}

	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start the asynq server: %w", err)
	}
	log.Info("worker started", "worker", workerName, "concurrency", cfg.Concurrency, "model_processes", cfg.ModelProcessesPerKind(), "queues", tasks.Queues,
		"http_addr", httpSrv.Addr(), "task_timeout", cfg.TaskTimeout.String(), "max_retry", cfg.MaxRetry,
		"retry", cfg.RetryPolicy, "retry_base", cfg.RetryBase.String(), "gc_percent", cfg.GCPercent)

	rctx, stopReconciler := context.WithCancel(context.Background())
	procs.Warm(rctx)
	go func() { // log overdue handlers even when nobody polls /healthz
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				m.SetOverdueHandlers(len(wd.Overdue(time.Now())))
			}
		}
	}()
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		reconcileLoop(rctx, rdb, svc, dq, log, workerName, cfg.ReconcileInterval, cfg.KeepBatches)
	}()

	reload := make(chan struct{})
	go watchModels(rctx, cfg.Common, loaded, log, reload)
	var stopped error
	select {
	case <-ctx.Done():
	case <-reload:
		stopped = ErrReload
	}
	log.Info("shutting down: no new tasks; in-flight tasks get the shutdown timeout, then are requeued",
		"shutdown_timeout", cfg.ShutdownTimeout.String(), "reload", stopped != nil)
	stopReconciler()
	srv.Shutdown()
	<-reconciled
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	log.Info("worker stopped")
	return stopped
}

// watchModels reads the models file again on each SIGHUP until ctx is
// done, and closes changed once the models it declares differ from loaded
// (their specs). A file that does not load is logged and changes nothing.
func watchModels(ctx context.Context, c config.Common, loaded []model.Spec, log *slog.Logger, changed chan<- struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		models, err := connect.Models(c)
		switch {
		case err != nil:
			log.Error("SIGHUP: the models file does not load; the worker keeps the models it has", "error", err)
		case reflect.DeepEqual(models.Specs(), loaded):
			log.Info("SIGHUP: the models file is unchanged", "kinds", models.Kinds())
		default:
			log.Info("SIGHUP: the models file changed; restarting to load it", "kinds", models.Kinds())
			close(changed)
			return
		}
	}
}

// reconcileLoop runs batch.Service.Reconcile, then the dead-letter queue's
// upkeep (orphaned active tasks; the archive sweep every
// GRIDBATCH_DLQ_SWEEP_INTERVAL), and at most once a minute the retention of
// batches' own rows (keep per kind besides the published ones), every
// interval in the one worker holding the reconciler's lease, so only one
// does at a time; the lease has a TTL of 3 intervals, so a dead holder is
// replaced.
func reconcileLoop(ctx context.Context, rdb redis.UniversalClient, svc *batch.Service, dq *dlq.Service, log *slog.Logger, me string, interval time.Duration, keep int) {
	l := lease.New(rdb, "gridbatch:reconciler:lease", me, 3*interval, log, lease.Messages{
		Leading:    "leading: this worker reconciles running batches and keeps the dead-letter queue",
		StandingBy: "standing by: another worker reconciles",
	})
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.Step(ctx) // bounded by TTL/3, one interval
		if !l.Held() {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, interval)
		if err := svc.Reconcile(lctx, interval); err != nil && ctx.Err() == nil {
			log.Warn("reconcile", "error", err)
		}
		cancel()
		dq.Maintain(ctx) // bounds itself; logs its own errors
		if time.Since(lastPrune) >= time.Minute {
			lastPrune = time.Now()
			pctx, cancel := context.WithTimeout(ctx, interval)
			dropped, err := batch.Prune(pctx, svc.Store(), "", keep, false)
			cancel()
			if err != nil && ctx.Err() == nil {
				log.Warn("retention of batches' rows", "error", err)
			}
			for _, p := range dropped {
				log.Info("batch rows dropped by retention", "batch_id", p.ID, "kind", p.Kind, "status", p.Status,
					"published", p.Published, "keep_batches", keep)
			}
		}
	}
}

// retryDelay waits out the open breaker (with jitter, so retries do not
// stampede the probe) and otherwise applies the policy.
func retryDelay(policy asynq.RetryDelayFunc, db *breaker.Breaker) asynq.RetryDelayFunc {
	return func(n int, err error, t *asynq.Task) time.Duration {
		if errors.Is(err, breaker.ErrOpen) {
			wait := max(db.NextProbe(), db.OpenFor()/2)
			return wait + time.Duration(rand.Int64N(int64(db.OpenFor())))
		}
		return policy(n, err, t)
	}
}

// liveness is the worker's liveness check: unhealthy when a handler outlives its
// timeout by the hung grace (it ignores cancellation), or when the processor
// is wedged: free slots and pending tasks, but no task started for WedgedAfter.
func liveness(cfg config.Worker, wd *Watchdog, insp *asynq.Inspector) func() []string {
	return func() []string {
		now := time.Now()
		problems := wd.Overdue(now)
		busy, last := wd.Busy()
		if busy < cfg.Concurrency && now.Sub(last) > cfg.WedgedAfter {
			pending := 0
			for q := range tasks.Queues {
				if qi, err := insp.GetQueueInfo(q); err == nil && !qi.Paused {
					pending += qi.Pending
				}
			}
			if pending > 0 {
				problems = append(problems, fmt.Sprintf("processor wedged: %d tasks pending, %d of %d slots free, no task started for %s",
					pending, cfg.Concurrency-busy, cfg.Concurrency, now.Sub(last).Round(time.Second)))
			}
		}
		return problems
	}
}

// logStartLatency logs, at debug level, how long each chunk task waited
// from its enqueue (the payload's enqueued_at_unix_nano) to the start of its
// first run: start_latency_seconds. That is queue wait plus asynq's dispatch
// (the idle poll of TaskCheckInterval). Retries are left out (their wait
// includes the retry countdown), and so are tasks without the field. Both
// clocks must agree: across hosts, skew adds to the figure.
func logStartLatency(log *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			if t.Type() == tasks.TypeChunk && log.Enabled(ctx, slog.LevelDebug) {
				start := time.Now()
				if retried, _ := asynq.GetRetryCount(ctx); retried == 0 {
					if p, err := tasks.DecodeChunk(t.Payload()); err == nil && p.EnqueuedAtUnixNano > 0 {
						id, _ := asynq.GetTaskID(ctx)
						log.Debug("chunk task started", "batch_id", p.BatchID, "chunk", p.Chunk, "task_id", id,
							"start_latency_seconds", start.Sub(time.Unix(0, p.EnqueuedAtUnixNano)).Seconds())
					}
				}
			}
			return next.ProcessTask(ctx, t)
		})
	}
}

// endpoints serves /healthz, /readyz and /metrics, and net/http/pprof under
// /debug/pprof/ when withPprof is set: its profiles, never cmdline (the
// process's arguments; Index answers 404 for it).
func endpoints(rdb redis.UniversalClient, st *store.Store, live, notReady func() []string, metricsHandler http.Handler, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	health.Register(mux, rdb, st, live, notReady)
	mux.Handle("GET /metrics", metricsHandler)
	return mux
}
