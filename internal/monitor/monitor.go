// Package monitor is the monitor's web server: gridbatch's batch view (the
// running and recent batches, one page per batch with its figures, a
// throughput chart, a map of its values and its dead letters), the maps of
// the published values of each kind, asynqmon mounted under /asynqmon/,
// and /metrics with asynq's queue metrics and per-kind batch gauges. Every
// path but /healthz is behind HTTP basic auth, whose failures are logged
// and throttled per client (guard.go); without it (--insecure-no-auth) only
// loopback Host headers are answered. No response may be framed.
//
// The pages are rendered on the server from embedded templates; they need
// no JavaScript, and reload themselves every few seconds while a batch runs.
// State-changing requests (the dead-letter requeue, asynqmon's actions) are
// refused unless AllowWrites is set, and cross-origin ones always are
// (net/http.CrossOriginProtection), so a page elsewhere cannot make an
// authenticated operator's browser post to the monitor.
package monitor

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	asynqmetrics "github.com/hibiken/asynq/x/metrics"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// RequeueFunc requeues dead letters of a batch: the given task IDs, or all
// of the batch's open ones when taskIDs is empty. It returns how many it
// requeued.
type RequeueFunc func(ctx context.Context, batchID string, taskIDs []string) (int, error)

// Config configures the monitor. Store, Redis and RedisConnOpt are required.
type Config struct {
	// Store reads batches, chunks and dead letters.
	Store *store.Store
	// Kinds are the model kinds whose batch gauges are always exported
	// (a kind with no batch running reads 0). Defaults to ph and hazard.
	Kinds []string
	// Models are the kinds' specs: a map's scenarios, years, units and
	// long name come from them. Defaults to the built-in ph and hazard.
	Models *model.Set
	// Redis is the monitor's own connection, for the queue summary and the
	// queue metrics. The caller closes it.
	Redis redis.UniversalClient
	// RedisConnOpt is what asynqmon connects with; asynqmon opens and closes
	// its own clients.
	RedisConnOpt asynq.RedisConnOpt
	// User and Password are the basic-auth credentials. Both are required
	// unless InsecureNoAuth is set.
	User, Password string
	// InsecureNoAuth serves without authentication. Only allowed on a
	// loopback address (see CheckAuth).
	InsecureNoAuth bool
	// AllowWrites enables asynqmon's actions and the dead-letter requeue.
	// Defaults to false: read-only.
	AllowWrites bool
	// Requeue performs the dead-letter requeue. When nil, the requeue
	// action answers 501 Not Implemented.
	Requeue RequeueFunc
	// DBErrors returns the DB connection errors counted so far for a
	// running batch (tasks.Broker.DBErrors). Optional.
	DBErrors func(ctx context.Context, batchID string) int64
	// Refresh is how often the pages reload while a batch runs. Defaults to 5s.
	Refresh time.Duration
	// RecentBatches is how many batches the batch view lists. Defaults to 25.
	RecentBatches int
	// RateWindow is the window of the running batches' cells/s. Defaults to 60s.
	RateWindow time.Duration
	// MapRefresh is how often the map of a running batch is drawn again
	// at most: within it, requests get the last drawing, so that pages
	// reloading every few seconds do not read a large batch's rows each
	// time. Defaults to 15s.
	MapRefresh time.Duration
	// Log receives request errors. Defaults to slog.Default().
	Log *slog.Logger
}

// Server is the monitor's HTTP handler.
type Server struct {
	cfg      Config
	insp     *asynq.Inspector
	asynqmon *asynqmon.HTTPHandler
	reg      *prometheus.Registry
	handler  http.Handler
	maps     mapCache
}

// New builds the monitor. It returns an error when the configuration is
// incomplete; authentication settings are checked by CheckAuth, which the
// caller runs against the real listen address.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("monitor: Store is required")
	case cfg.Redis == nil || cfg.RedisConnOpt == nil:
		return nil, errors.New("monitor: Redis and RedisConnOpt are required")
	case !cfg.InsecureNoAuth && (cfg.User == "" || cfg.Password == ""):
		return nil, errors.New("monitor: User and Password are required unless InsecureNoAuth is set")
	}
	if cfg.Kinds == nil {
		cfg.Kinds = []string{"hazard", "ph"}
	}
	cfg.Refresh = cmp.Or(cfg.Refresh, 5*time.Second)
	cfg.RecentBatches = cmp.Or(cfg.RecentBatches, 25)
	cfg.RateWindow = cmp.Or(cfg.RateWindow, time.Minute)
	cfg.MapRefresh = cmp.Or(cfg.MapRefresh, 15*time.Second)
	if cfg.Models == nil {
		cfg.Models = model.Builtins()
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Server{cfg: cfg, insp: asynq.NewInspectorFromRedisClient(cfg.Redis)}
	s.asynqmon = asynqmon.New(asynqmon.Options{
		RootPath:     "/asynqmon",
		RedisConnOpt: cfg.RedisConnOpt,
		ReadOnly:     !cfg.AllowWrites,
	})
	s.reg = prometheus.NewRegistry()
	s.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		asynqmetrics.NewQueueMetricsCollector(s.insp),
		newBatchCollector(cfg.Store, cfg.Kinds),
	)
	s.handler = s.routes()
	return s, nil
}

// Registry is the monitor's metrics registry.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// ServeHTTP serves the monitor.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close releases asynqmon's and the inspector's connections (not Redis,
// which the caller owns).
func (s *Server) Close() error {
	return s.asynqmon.Close()
}

func (s *Server) routes() http.Handler {
	app := http.NewServeMux()
	app.HandleFunc("GET /{$}", s.overview)
	app.HandleFunc("GET /batches/{id}", s.batchPage)
	app.HandleFunc("GET /batches/{id}/map", s.batchMap)
	app.HandleFunc("GET /kinds/{kind}/map", s.kindMap)
	app.HandleFunc("POST /batches/{id}/requeue", s.requeue)
	app.Handle("GET /static/", http.StripPrefix("/static/", staticHandler()))
	app.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg, ErrorHandling: promhttp.ContinueOnError}))
	app.Handle(s.asynqmon.RootPath()+"/", s.asynqmon)
	app.Handle("GET "+s.asynqmon.RootPath(), http.RedirectHandler(s.asynqmon.RootPath()+"/", http.StatusMovedPermanently))

	protected := http.NewCrossOriginProtection().Handler(app)
	if s.cfg.InsecureNoAuth {
		protected = loopbackHostOnly(protected)
	} else {
		protected = throttled(newLoginThrottle(), s.cfg.Log, basicAuth(s.cfg.User, s.cfg.Password), protected)
	}
	root := http.NewServeMux()
	root.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	root.Handle("/", protected)
	return noFraming(root)
}

// basicAuth reports whether a request's basic-auth credentials match. It
// compares SHA-256 digests in constant time, so neither the content nor the
// length of the credentials leaks through timing.
func basicAuth(user, password string) func(r *http.Request) bool {
	wantUser := sha256.Sum256([]byte(user))
	wantPass := sha256.Sum256([]byte(password))
	return func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		gotUser := sha256.Sum256([]byte(u))
		gotPass := sha256.Sum256([]byte(p))
		userOK := subtle.ConstantTimeCompare(gotUser[:], wantUser[:])
		passOK := subtle.ConstantTimeCompare(gotPass[:], wantPass[:])
		return ok && userOK&passOK == 1
	}
}

// CheckAuth reports whether the monitor may start with these settings:
// with both credentials (a password of MinPasswordLength characters or
// more) it may, anywhere; with neither it may only when
// insecureNoAuth is set and addr is a loopback address (127.0.0.0/8, ::1 or
// localhost). The error names what to change.
func CheckAuth(addr, user, password string, insecureNoAuth bool) error {
	switch {
	case user != "" && len([]rune(password)) >= MinPasswordLength:
		return nil
	case user != "" && password != "":
		return fmt.Errorf("GRIDBATCH_MONITOR_PASSWORD has %d characters; use %d or more", len([]rune(password)), MinPasswordLength)
	case user != "" && password == "":
		return errors.New("GRIDBATCH_MONITOR_USER is set but GRIDBATCH_MONITOR_PASSWORD is empty; set both")
	case user == "" && password != "":
		return errors.New("GRIDBATCH_MONITOR_PASSWORD is set but GRIDBATCH_MONITOR_USER is empty; set both")
	case !insecureNoAuth:
		return errors.New("refusing to start without credentials: set GRIDBATCH_MONITOR_USER and GRIDBATCH_MONITOR_PASSWORD " +
			"(or, on this machine only, pass --insecure-no-auth with a loopback --addr such as 127.0.0.1:8080)")
	case !IsLoopback(addr):
		return fmt.Errorf("refusing --insecure-no-auth on GRIDBATCH_MONITOR_ADDR=%s: it is not a loopback address, "+
			"so anyone who can reach it could use the monitor; listen on 127.0.0.1 or [::1], or set GRIDBATCH_MONITOR_USER and GRIDBATCH_MONITOR_PASSWORD", addr)
	}
	return nil
}

// IsLoopback reports whether a listen address (host:port) binds loopback
// only. An empty host (":8080") binds every interface and is not loopback;
// host names other than localhost are not trusted to be.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	host, _, _ = strings.Cut(host, "%") // an IPv6 zone
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
