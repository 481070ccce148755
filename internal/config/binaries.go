package config

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"
)

// Worker configures the worker binary.
type Worker struct {
	Common
	// HTTPAddr serves /healthz, /readyz and /metrics. Defaults to
	// 127.0.0.1:8081, or :8081 in a container (InContainer).
	HTTPAddr string
	// Concurrency is the number of chunk tasks run at once. Defaults to
	// four per GOMAXPROCS (DefaultConcurrency), which since Go 1.25 follows
	// a container's CPU limit where the number of CPUs would count the whole
	// node. A chunk waits on about seven round trips to Redis and PostgreSQL
	// (its task, its inputs, its write, its ack); four chunks per CPU keep
	// the CPUs busy across a network hop of 1 ms each way.
	Concurrency int
	// ModelProcesses is the number of model processes per kind a worker
	// starts (a models file's processes: 0), at most Concurrency; a chunk
	// of a command model waits for a free one. Defaults to two per
	// GOMAXPROCS (DefaultModelProcesses): a model computes on a CPU, so more
	// processes than that share the CPUs and add their memory. A command
	// model's memory is up to ModelProcesses × its memory_limit.
	ModelProcesses int
	// TaskTimeout bounds one chunk task; at the timeout its context is
	// cancelled and it is retried. Defaults to 5m.
	TaskTimeout time.Duration
	// MaxRetry is how many times a failing task is retried before it is
	// dead-lettered (MaxRetry+1 runs in all). Defaults to 5.
	MaxRetry int
	// RetryBase is the linear retry countdown unit: retry n+1 waits
	// RetryBase·(n+1). Defaults to 10s.
	RetryBase time.Duration
	// RetryPolicy is "linear" (default, RetryBase·(n+1)) or "exponential"
	// (RetryBase·2^n with ±20% jitter, capped at 10m).
	RetryPolicy string
	// ShutdownTimeout is how long SIGTERM waits for in-flight tasks before
	// requeueing them. Defaults to 25s.
	ShutdownTimeout time.Duration
	// TaskCheckInterval is how often an idle worker polls an empty queue.
	// Defaults to 50ms (asynq's own default, 1s, adds ~0.5s start latency).
	TaskCheckInterval time.Duration
	// HungGrace is how long a handler may outlive its timeout before
	// /healthz reports the worker unhealthy. Defaults to 30s.
	HungGrace time.Duration
	// ReconcileInterval is how often one worker checks running batches for
	// completion, deadlines and unrecorded dead letters. Defaults to 10s.
	ReconcileInterval time.Duration
	// BreakerFailures is how many consecutive DB connection errors open the
	// circuit breaker. Defaults to 5.
	BreakerFailures int
	// BreakerOpenFor is how long the breaker stays open before a probe. Defaults to 10s.
	BreakerOpenFor time.Duration
	// WedgedAfter is how long a worker with free slots may start no task
	// while tasks are pending before /healthz reports it wedged. Defaults to 2m.
	WedgedAfter time.Duration
	// DLQSweepInterval is how often the worker holding the reconciler's
	// lease sweeps asynq's archives for dead letters no handler recorded.
	// Defaults to 30s.
	DLQSweepInterval time.Duration
	// Pprof serves net/http/pprof under /debug/pprof/ on HTTPAddr. It is off
	// by default: profiles expose internals and cost CPU while taken.
	Pprof bool
	// GCPercent is the worker's Go GC target percentage, set at start in
	// place of GOGC's. A chunk task allocates a few MiB against a live heap
	// of a few MiB, so at Go's default of 100 the worker collects every few
	// chunks; 400 cut its CPU by about an eighth and raised a 2-worker batch's
	// cells/s by 5–8% for ~12 MiB more peak RSS (BENCHMARKS.md). The special
	// value -1 leaves GOGC in charge. Defaults to 400.
	GCPercent int
	// ModelUser is the account the model processes run as: a user name, a
	// uid, or uid:gid. Defaults to nobody when the worker runs as root;
	// otherwise to empty, the worker's own user (a worker that is not root
	// can run models only as itself).
	ModelUser string
}

// Bind registers the worker's flags on s.
func (c *Worker) Bind(s *Set) {
	s.Common(&c.Common)
	s.String(&c.HTTPAddr, "http-addr", "GRIDBATCH_HTTP_ADDR", s.localAddr("8081"), "`address` of /healthz, /readyz and /metrics (default loopback, outside a container)")
	s.Int(&c.Concurrency, "concurrency", "GRIDBATCH_CONCURRENCY", DefaultConcurrency(), "chunk tasks run at once (default: 4 per CPU this process may use)")
	s.Int(&c.ModelProcesses, "model-processes", "GRIDBATCH_MODEL_PROCESSES", DefaultModelProcesses(), "model processes per kind of the models file, at most the concurrency; each may hold the kind's memory_limit (default: 2 per CPU this process may use)")
	s.Duration(&c.TaskTimeout, "task-timeout", "GRIDBATCH_TASK_TIMEOUT", 5*time.Minute, "bound on one chunk task; then it is cancelled and retried")
	s.Int(&c.MaxRetry, "max-retry", "GRIDBATCH_MAX_RETRY", 5, "retries before a task is dead-lettered")
	s.Duration(&c.RetryBase, "retry-base", "GRIDBATCH_RETRY_BASE", 10*time.Second, "retry countdown unit: retry n+1 waits base·(n+1)")
	s.String(&c.RetryPolicy, "retry-policy", "GRIDBATCH_RETRY_POLICY", "linear", "linear (base·(n+1)) or exponential (base·2^n, jittered)")
	s.Duration(&c.ShutdownTimeout, "shutdown-timeout", "GRIDBATCH_SHUTDOWN_TIMEOUT", 25*time.Second, "on SIGTERM, wait this long for in-flight tasks, then requeue them")
	s.Duration(&c.TaskCheckInterval, "task-check-interval", "GRIDBATCH_TASK_CHECK_INTERVAL", 50*time.Millisecond, "poll interval of an idle worker")
	s.Duration(&c.HungGrace, "hung-grace", "GRIDBATCH_HUNG_GRACE", 30*time.Second, "a handler running this long past its timeout makes /healthz fail")
	s.Duration(&c.ReconcileInterval, "reconcile-interval", "GRIDBATCH_RECONCILE_INTERVAL", 10*time.Second, "how often batches are checked for completion and deadlines")
	s.Int(&c.BreakerFailures, "breaker-failures", "GRIDBATCH_BREAKER_FAILURES", 5, "consecutive DB connection errors that open the circuit breaker")
	s.Duration(&c.BreakerOpenFor, "breaker-open-for", "GRIDBATCH_BREAKER_OPEN_FOR", 10*time.Second, "how long the open breaker waits before a probe")
	s.Duration(&c.WedgedAfter, "wedged-after", "GRIDBATCH_WEDGED_AFTER", 2*time.Minute, "free slots and pending tasks but no task started for this long: /healthz fails")
	s.Duration(&c.DLQSweepInterval, "dlq-sweep-interval", "GRIDBATCH_DLQ_SWEEP_INTERVAL", 30*time.Second, "how often the archives are swept for dead letters no handler recorded")
	s.Bool(&c.Pprof, "pprof", "GRIDBATCH_PPROF", false, "serve net/http/pprof under /debug/pprof/ on the HTTP address")
	s.Int(&c.GCPercent, "gc-percent", "GRIDBATCH_GC_PERCENT", 400, "Go GC target percentage, in place of GOGC's (-1: leave GOGC in charge)")
	s.String(&c.ModelUser, "model-user", "GRIDBATCH_MODEL_USER", defaultModelUser(), "`user` (name, uid or uid:gid) the model processes run as; empty: the worker's own (default nobody when the worker is root)")
}

// DefaultConcurrency is the worker's default GRIDBATCH_CONCURRENCY: four
// chunk tasks per CPU the process may use (GOMAXPROCS), so that chunks
// compute while others wait on Redis or PostgreSQL. With 1 ms added each
// way to both, four per CPU ran a batch at 0.857 × its loopback rate, two
// per CPU at 0.721 × (make bench, figure 11, GRIDBATCH_BENCH_PROXY=hop, a
// quiet 2-core machine), and as fast on loopback.
func DefaultConcurrency() int { return 4 * runtime.GOMAXPROCS(0) }

// DefaultModelProcesses is the worker's default GRIDBATCH_MODEL_PROCESSES:
// two model processes per kind and CPU the process may use, so that one
// computes while the other's chunk is read or written.
func DefaultModelProcesses() int { return 2 * runtime.GOMAXPROCS(0) }

// ModelProcessesPerKind is the number of processes a command model of a
// kind whose processes is 0 gets: ModelProcesses, at most Concurrency
// (more could never be busy).
func (c *Worker) ModelProcessesPerKind() int { return min(c.ModelProcesses, c.Concurrency) }

// defaultModelUser is nobody when the worker runs as root, else empty.
func defaultModelUser() string {
	if os.Geteuid() == 0 {
		return "nobody"
	}
	return ""
}

// Validate reports the first bad setting, naming its variable.
func (c *Worker) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	switch {
	case c.Concurrency < 1 || c.Concurrency > 1000:
		return badValue("GRIDBATCH_CONCURRENCY", c.Concurrency, "must be between 1 and 1000")
	case c.ModelProcesses < 1 || c.ModelProcesses > 1000:
		return badValue("GRIDBATCH_MODEL_PROCESSES", c.ModelProcesses, "must be between 1 and 1000")
	case c.TaskTimeout <= 0:
		return badValue("GRIDBATCH_TASK_TIMEOUT", c.TaskTimeout, "must be positive, e.g. 5m")
	case c.MaxRetry < 0 || c.MaxRetry > 100:
		return badValue("GRIDBATCH_MAX_RETRY", c.MaxRetry, "must be between 0 and 100")
	case c.RetryBase <= 0:
		return badValue("GRIDBATCH_RETRY_BASE", c.RetryBase, "must be positive, e.g. 10s")
	case c.RetryPolicy != "linear" && c.RetryPolicy != "exponential":
		return badValue("GRIDBATCH_RETRY_POLICY", c.RetryPolicy, "must be linear or exponential")
	case c.ShutdownTimeout <= 0:
		return badValue("GRIDBATCH_SHUTDOWN_TIMEOUT", c.ShutdownTimeout, "must be positive, e.g. 25s")
	case c.TaskCheckInterval <= 0:
		return badValue("GRIDBATCH_TASK_CHECK_INTERVAL", c.TaskCheckInterval, "must be positive, e.g. 50ms")
	case c.HungGrace <= 0:
		return badValue("GRIDBATCH_HUNG_GRACE", c.HungGrace, "must be positive, e.g. 30s")
	case c.ReconcileInterval <= 0:
		return badValue("GRIDBATCH_RECONCILE_INTERVAL", c.ReconcileInterval, "must be positive, e.g. 10s")
	case c.BreakerFailures < 1:
		return badValue("GRIDBATCH_BREAKER_FAILURES", c.BreakerFailures, "must be at least 1")
	case c.BreakerOpenFor <= 0:
		return badValue("GRIDBATCH_BREAKER_OPEN_FOR", c.BreakerOpenFor, "must be positive, e.g. 10s")
	case c.WedgedAfter <= 0:
		return badValue("GRIDBATCH_WEDGED_AFTER", c.WedgedAfter, "must be positive, e.g. 2m")
	case c.DLQSweepInterval <= 0:
		return badValue("GRIDBATCH_DLQ_SWEEP_INTERVAL", c.DLQSweepInterval, "must be positive, e.g. 30s")
	case c.GCPercent != -1 && (c.GCPercent < 25 || c.GCPercent > 10_000):
		return badValue("GRIDBATCH_GC_PERCENT", c.GCPercent, "must be between 25 and 10000, or -1 to leave GOGC in charge")
	}
	return nil
}

// Enqueuer configures the operator's CLI.
type Enqueuer struct {
	Common
	Batch
}

// Bind registers the enqueuer's shared flags on s.
func (c *Enqueuer) Bind(s *Set) {
	s.Common(&c.Common)
	s.Batch(&c.Batch)
}

// Validate reports the first bad setting, naming its variable.
func (c *Enqueuer) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	return c.Batch.Validate()
}

// Scheduler configures the scheduler binary.
type Scheduler struct {
	Common
	Batch
	// Schedules are cron triggers, one per kind: "ph=0 2 1 1 *;hazard=0 3 1 1 *".
	Schedules string
	// TimeZone is the IANA zone the cron specs are read in. Defaults to UTC.
	TimeZone string
	// MisfireGrace is how late a missed tick may still fire. Defaults to 1h.
	MisfireGrace time.Duration
	// AlertWebhookURL receives a JSON alert when a batch ends badly or a tick
	// is skipped or missed. Empty disables alerts.
	AlertWebhookURL string
	// AlertTimeout bounds one POST to the webhook; each alert is tried 3
	// times with backoff. Defaults to 5s.
	AlertTimeout time.Duration
	// LeaderTTL is the TTL of the leader lease in Redis: a dead leader is
	// replaced within about 1⅓ of it. Defaults to 10s.
	LeaderTTL time.Duration
	// HTTPAddr serves /healthz and /readyz. Defaults to 127.0.0.1:8082, or
	// :8082 in a container (InContainer), so that it does not clash with a
	// worker's 8081 on one host.
	HTTPAddr string
}

// localAddr is the default address of an HTTP endpoint on port: loopback
// only, unless the process runs in a container, whose network namespace is
// its own (Kubernetes' probes and compose's healthchecks come from outside
// it; compose and the K8s manifests set GRIDBATCH_HTTP_ADDR anyway).
func (s *Set) localAddr(port string) string {
	if s.InContainer() {
		return ":" + port
	}
	return "127.0.0.1:" + port
}

// InContainer reports whether the process runs in a container: a
// Kubernetes pod (KUBERNETES_SERVICE_HOST), Docker (/.dockerenv) or Podman
// (/run/.containerenv).
func (s *Set) InContainer() bool {
	if _, ok := s.lookup("KUBERNETES_SERVICE_HOST"); ok {
		return true
	}
	for _, f := range []string{"/.dockerenv", "/run/.containerenv"} {
		if _, err := os.Stat(f); err == nil {
			return true
		}
	}
	return false
}

// Bind registers the scheduler's flags on s.
func (c *Scheduler) Bind(s *Set) {
	s.Common(&c.Common)
	s.Batch(&c.Batch)
	s.String(&c.Schedules, "schedules", "GRIDBATCH_SCHEDULES", "ph=0 2 1 1 *;hazard=0 3 1 1 *", "cron trigger per kind, `KIND=SPEC;KIND=SPEC`")
	s.String(&c.TimeZone, "timezone", "GRIDBATCH_TIMEZONE", "UTC", "IANA time zone of the cron specs, e.g. Asia/Seoul")
	s.Duration(&c.MisfireGrace, "misfire-grace", "GRIDBATCH_MISFIRE_GRACE", time.Hour, "a tick missed by at most this much still fires once")
	s.Secret(&c.AlertWebhookURL, "alert-webhook-url", "GRIDBATCH_ALERT_WEBHOOK_URL", "", "POST a JSON alert here on bad batch ends and skipped ticks")
	s.Duration(&c.AlertTimeout, "alert-timeout", "GRIDBATCH_ALERT_TIMEOUT", 5*time.Second, "bound on one webhook POST (3 attempts per alert)")
	s.Duration(&c.LeaderTTL, "leader-ttl", "GRIDBATCH_LEADER_TTL", 10*time.Second, "TTL of the leader lease; a dead leader is replaced within about 1.3x this")
	s.String(&c.HTTPAddr, "http-addr", "GRIDBATCH_HTTP_ADDR", s.localAddr("8082"), "`address` of /healthz and /readyz (default loopback, outside a container)")
}

// Validate reports the first bad setting, naming its variable.
func (c *Scheduler) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if err := c.Batch.Validate(); err != nil {
		return err
	}
	if _, err := time.LoadLocation(c.TimeZone); err != nil {
		return badValue("GRIDBATCH_TIMEZONE", c.TimeZone, "is not a known IANA time zone, e.g. UTC or Asia/Seoul")
	}
	switch {
	case c.MisfireGrace < 0:
		return badValue("GRIDBATCH_MISFIRE_GRACE", c.MisfireGrace, "must not be negative")
	case strings.TrimSpace(c.Schedules) == "":
		return errors.New("GRIDBATCH_SCHEDULES is empty; expected KIND=SPEC;KIND=SPEC, e.g. 'ph=0 2 1 1 *;hazard=0 3 1 1 *'")
	case c.AlertTimeout <= 0:
		return badValue("GRIDBATCH_ALERT_TIMEOUT", c.AlertTimeout, "must be positive, e.g. 5s")
	case c.LeaderTTL < time.Second:
		return badValue("GRIDBATCH_LEADER_TTL", c.LeaderTTL, "must be at least 1s, e.g. 10s")
	}
	if c.AlertWebhookURL != "" {
		u, err := url.Parse(c.AlertWebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("GRIDBATCH_ALERT_WEBHOOK_URL is not an http(s) URL (value not shown: it is a secret); expected e.g. https://hooks.slack.com/services/…")
		}
	}
	return nil
}

// Monitor configures the monitor binary.
type Monitor struct {
	Common
	// Addr is where the UI listens. Defaults to 127.0.0.1:8080.
	Addr string
	// User and Password are the HTTP basic-auth credentials.
	User, Password string
	// AllowWrites enables asynqmon's write actions and DLQ requeue.
	AllowWrites bool
	// InsecureNoAuth serves without authentication; only on loopback.
	InsecureNoAuth bool
	// TLSCert and TLSKey are the PEM files of the monitor's certificate
	// and key: with both, it serves HTTPS. Default: none, plain HTTP.
	TLSCert, TLSKey string
}

// Bind registers the monitor's flags on s.
func (c *Monitor) Bind(s *Set) {
	s.Common(&c.Common)
	s.String(&c.Addr, "addr", "GRIDBATCH_MONITOR_ADDR", "127.0.0.1:8080", "listen `address`")
	s.String(&c.User, "user", "GRIDBATCH_MONITOR_USER", "", "basic-auth user")
	s.Secret(&c.Password, "password", "GRIDBATCH_MONITOR_PASSWORD", "", "basic-auth password")
	s.Bool(&c.AllowWrites, "allow-writes", "GRIDBATCH_MONITOR_ALLOW_WRITES", false, "allow asynqmon actions and DLQ requeue")
	s.Bool(&c.InsecureNoAuth, "insecure-no-auth", "", false, "serve without authentication (loopback addresses and Host headers only)")
	s.String(&c.TLSCert, "tls-cert", "GRIDBATCH_MONITOR_TLS_CERT", "", "serve HTTPS with this certificate `file` (PEM; with --tls-key)")
	s.String(&c.TLSKey, "tls-key", "GRIDBATCH_MONITOR_TLS_KEY", "", "the private key `file` (PEM) of --tls-cert")
}

// Validate reports the first bad setting, naming its variable.
func (c *Monitor) Validate() error {
	if err := c.Common.Validate(); err != nil {
		return err
	}
	if c.Addr == "" {
		return fmt.Errorf("GRIDBATCH_MONITOR_ADDR is empty; expected e.g. 127.0.0.1:8080")
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("GRIDBATCH_MONITOR_TLS_CERT and GRIDBATCH_MONITOR_TLS_KEY go together: set both, or neither")
	}
	return nil
}
