// Command monitor serves asynqmon and gridbatch's batch view behind
// authentication.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/monitor"
	"github.com/gridbatch/gridbatch/tasks"
)

func main() { cli.Main("monitor", run) }

const about = `Usage: monitor [flags]

Serves the batch view at /, asynqmon at /asynqmon/ and Prometheus metrics at
/metrics, all behind HTTP basic auth (GRIDBATCH_MONITOR_USER and
GRIDBATCH_MONITOR_PASSWORD); /healthz is open. Without credentials it refuses
to start, unless --insecure-no-auth is given and it listens on a loopback
address. It is read-only unless started with --allow-writes, which enables
asynqmon's actions and the dead-letter requeue of the batch page.`

const example = `  GRIDBATCH_MONITOR_USER=ops GRIDBATCH_MONITOR_PASSWORD=... monitor --addr :8080
  monitor --insecure-no-auth --addr 127.0.0.1:8080
  GRIDBATCH_MONITOR_USER=ops GRIDBATCH_MONITOR_PASSWORD=... monitor --allow-writes`

// requeueOptions are the settings of the chunk tasks the batch page's
// requeue enqueues; they mirror the worker's.
type requeueOptions struct {
	MaxRetry int
	Timeout  time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg config.Monitor
	var rq requeueOptions
	set := config.NewSet("monitor", about, example)
	cfg.Bind(set)
	set.Int(&rq.MaxRetry, "max-retry", "GRIDBATCH_MAX_RETRY", 5, "with --allow-writes: retries a requeued chunk task gets before it is dead-lettered again")
	set.Duration(&rq.Timeout, "task-timeout", "GRIDBATCH_TASK_TIMEOUT", 5*time.Minute, "with --allow-writes: bound on one run of a requeued chunk task")
	if err := set.Parse(args); err != nil {
		return err
	}
	if cfg.PrintConfig {
		set.PrintConfig(stdout)
		return nil
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := monitor.CheckAuth(cfg.Addr, cfg.User, cfg.Password, cfg.InsecureNoAuth); err != nil {
		return err
	}
	switch {
	case rq.MaxRetry < 0 || rq.MaxRetry > 100:
		return fmt.Errorf("GRIDBATCH_MAX_RETRY=%d must be between 0 and 100", rq.MaxRetry)
	case rq.Timeout <= 0:
		return fmt.Errorf("GRIDBATCH_TASK_TIMEOUT=%s must be positive, e.g. 5m", rq.Timeout)
	}
	return serve(ctx, cfg, rq, stderr)
}

// serve runs the monitor until ctx is cancelled.
func serve(ctx context.Context, cfg config.Monitor, rq requeueOptions, stderr io.Writer) error {
	log := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	noAuth := cfg.User == "" && cfg.Password == ""
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("GRIDBATCH_MONITOR_ADDR=%s: %w", cfg.Addr, err)
	}
	defer ln.Close()
	if tcp, ok := ln.Addr().(*net.TCPAddr); noAuth && (!ok || !tcp.IP.IsLoopback()) {
		return fmt.Errorf("refusing --insecure-no-auth: %s resolved to %s, which is not a loopback address", cfg.Addr, ln.Addr())
	}

	conn, err := connect.Open(ctx, cfg.Common, connect.Options{App: "gridbatch-monitor", Log: log,
		Chunk: tasks.ChunkOptions{MaxRetry: tasks.Retries(rq.MaxRetry), Timeout: rq.Timeout}})
	if err != nil {
		return err
	}
	defer conn.Close()
	var requeue monitor.RequeueFunc
	if cfg.AllowWrites {
		dq, err := conn.DLQ(nil, dlq.Config{})
		if err != nil {
			return err
		}
		requeue = requeueWith(dq)
	}

	srv, err := monitor.New(monitor.Config{
		Store:          conn.Store,
		Kinds:          conn.Models.Kinds(),
		Models:         conn.Models,
		Redis:          conn.Redis,
		RedisConnOpt:   conn.RedisOpt,
		User:           cfg.User,
		Password:       cfg.Password,
		InsecureNoAuth: noAuth,
		AllowWrites:    cfg.AllowWrites,
		Requeue:        requeue,
		DBErrors:       conn.Broker.DBErrors,
		Log:            log,
	})
	if err != nil {
		return err
	}
	defer srv.Close()

	httpSrv := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	useTLS := cfg.TLSCert != ""
	if useTLS {
		// Read now, so that a bad file stops the start with its reason.
		if _, err := tlsPair(cfg.TLSCert, cfg.TLSKey); err != nil {
			return err
		}
	}
	served := make(chan error, 1)
	go func() {
		if useTLS {
			served <- httpSrv.ServeTLS(ln, cfg.TLSCert, cfg.TLSKey)
			return
		}
		served <- httpSrv.Serve(ln)
	}()
	log.Info("monitor started", "addr", ln.Addr().String(), "tls", useTLS, "auth", !noAuth, "allow_writes", cfg.AllowWrites,
		"batch_view", "/", "asynqmon", "/asynqmon/", "metrics", "/metrics")
	if noAuth {
		log.Warn("serving without authentication (--insecure-no-auth, loopback addresses and Host headers only)")
	} else if tcp, ok := ln.Addr().(*net.TCPAddr); !useTLS && (!ok || !tcp.IP.IsLoopback()) {
		log.Warn("serving basic auth in clear text on a non-loopback address: the password crosses the network readable; give --tls-cert and --tls-key, or put a TLS proxy in front",
			"addr", ln.Addr().String())
	}
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve: %w", err)
		}
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	log.Info("monitor stopped")
	return nil
}

// requeueWith is the batch page's requeue on the dead-letter queue: the
// given dead letters of the batch, or all its open ones. Task IDs of
// another batch are refused.
func requeueWith(dq *dlq.Service) monitor.RequeueFunc {
	return func(ctx context.Context, batchID string, taskIDs []string) (int, error) {
		sel := dlq.Selector{BatchID: batchID}
		if len(taskIDs) > 0 {
			for _, id := range taskIDs {
				if !strings.HasPrefix(id, batchID+":") {
					return 0, fmt.Errorf("task %s is not a chunk of batch %s", id, batchID)
				}
			}
			sel = dlq.Selector{TaskIDs: taskIDs}
		}
		results, err := dq.Requeue(ctx, sel, false)
		if err != nil {
			return 0, err
		}
		n := 0
		var errs []error
		for _, r := range results {
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.DeadLetter.TaskID, r.Err))
				continue
			}
			n++
		}
		return n, errors.Join(errs...)
	}
}

// tlsPair loads the certificate and key files of --tls-cert and --tls-key.
func tlsPair(cert, key string) (tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return pair, fmt.Errorf("GRIDBATCH_MONITOR_TLS_CERT=%s, GRIDBATCH_MONITOR_TLS_KEY=%s: %w", cert, key, err)
	}
	return pair, nil
}
