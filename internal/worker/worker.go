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
	"net"
	"net/http"
	"os"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// Option adds to a worker; tests use it to register extra task types.
type Option func(*options)

type options struct {
	handlers map[string]asynq.Handler
}

// WithHandler registers an extra handler for a task type.
func WithHandler(typ string, h asynq.Handler) Option {
	return func(o *options) { o.handlers[typ] = h }
}

// Run runs the worker until ctx is cancelled (SIGTERM/SIGINT), then shuts
// down: no new tasks, in-flight ones get ShutdownTimeout, the rest are
// requeued without counting a retry. It returns nil after a clean shutdown.
func Run(ctx context.Context, cfg config.Worker, stderr io.Writer, opts ...Option) error {
	o := options{handlers: map[string]asynq.Handler{}}
	for _, opt := range opts {
		opt(&o)
	}
	log := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	rdb, err := cli.OpenRedis(ctx, cfg.RedisURL)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st, err := cli.OpenStore(ctx, cfg.Common, "gridbatch-worker")
	if err != nil {
		return err
	}
	defer st.Close()

	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	broker := tasks.NewBroker(client, insp, rdb, tasks.ChunkOptions{Timeout: cfg.TaskTimeout, MaxRetry: cfg.MaxRetry})
	host, _ := os.Hostname()
	workerName := fmt.Sprintf("%s:%d", host, os.Getpid())
	svc := batch.New(st, broker, log, batch.Config{Worker: workerName})
	h := tasks.NewHandlers(svc, log)

	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:       cfg.Concurrency,
		Queues:            tasks.Queues,
		RetryDelayFunc:    tasks.RetryDelay(cfg.RetryPolicy, cfg.RetryBase),
		ErrorHandler:      asynq.ErrorHandlerFunc(h.HandleError),
		Logger:            logging.Asynq(log),
		LogLevel:          logging.AsynqLevel(cfg.LogLevel),
		ShutdownTimeout:   cfg.ShutdownTimeout,
		TaskCheckInterval: cfg.TaskCheckInterval,
		HealthCheckFunc: func(err error) {
			if err != nil {
				log.Error("asynq cannot reach Redis", "error", err)
			}
		},
	})
	mux := asynq.NewServeMux()
	tasks.Register(mux, h)
	for typ, extra := range o.handlers {
		mux.Handle(typ, extra)
	}

	httpSrv := &http.Server{Addr: cfg.HTTPAddr, Handler: endpoints(rdb, st), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("GRIDBATCH_HTTP_ADDR=%s: %w", cfg.HTTPAddr, err)
	}
	go func() {
		if err := httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err)
		}
	}()

	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start the asynq server: %w", err)
	}
	log.Info("worker started", "worker", workerName, "concurrency", cfg.Concurrency, "queues", tasks.Queues,
		"http_addr", ln.Addr().String(), "task_timeout", cfg.TaskTimeout.String(), "max_retry", cfg.MaxRetry,
		"retry", cfg.RetryPolicy, "retry_base", cfg.RetryBase.String())

	rctx, stopReconciler := context.WithCancel(context.Background())
	reconciled := make(chan struct{})
	go func() {
		defer close(reconciled)
		reconcileLoop(rctx, rdb, svc, log, workerName, cfg.ReconcileInterval)
	}()

	<-ctx.Done()
	log.Info("shutting down: no new tasks; in-flight tasks get the shutdown timeout, then are requeued",
		"shutdown_timeout", cfg.ShutdownTimeout.String())
	stopReconciler()
	srv.Shutdown()
	<-reconciled
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	client.Close()
	log.Info("worker stopped")
	return nil
}

// reconcileLoop runs batch.Service.Reconcile every interval in the one
// worker holding a Redis lease, so only one does at a time; the lease has a
// TTL, so a dead holder is replaced.
func reconcileLoop(ctx context.Context, rdb redis.UniversalClient, svc *batch.Service, log *slog.Logger, me string, interval time.Duration) {
	const key = "gridbatch:reconciler:lease"
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, interval)
		ok, err := rdb.SetNX(lctx, key, me, 3*interval).Result()
		if err == nil && !ok {
			holder, _ := rdb.Get(lctx, key).Result()
			if ok = holder == me; ok {
				rdb.Expire(lctx, key, 3*interval)
			}
		}
		if err == nil && ok {
			if err := svc.Reconcile(lctx, interval); err != nil && ctx.Err() == nil {
				log.Warn("reconcile", "error", err)
			}
		}
		cancel()
	}
}

// endpoints serves /healthz, /readyz and /metrics.
func endpoints(rdb redis.UniversalClient, st *store.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		var problems []string
		if err := rdb.Ping(ctx).Err(); err != nil {
			problems = append(problems, "redis: "+err.Error())
		}
		if err := st.Ping(ctx); err != nil {
			problems = append(problems, "postgres: "+config.Mask(err.Error()))
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range problems {
				fmt.Fprintln(w, p)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.Handler())
	return mux
}
