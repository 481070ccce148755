// Package metrics holds the worker's Prometheus metrics: task runs by type
// and outcome, task durations, cells written, DB connection errors, the DB
// circuit breaker's state and the number of overdue handlers. Every series
// lives in the Worker's own registry (never the global one), together with
// the Go runtime and process collectors, and no label is unbounded: there is
// no batch ID or task ID on any series.
//
// Task outcomes come from two places. Middleware (mux.Use) sees every run
// that returns nil and counts it succeeded or skipped, and observes every
// run's duration. Failed runs are classified by tasks.Handlers.HandleError,
// which knows whether asynq retries or archives the task, and reported with
// TaskFailed. Code running inside a task reports skips, cells written and DB
// errors through its context with Skipped, CellsWritten and DBError.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Task outcomes, the values of the outcome label of gridbatch_tasks_total.
// Each run of a task ends in exactly one of them.
const (
	// OutcomeSucceeded is a run that returned nil.
	OutcomeSucceeded = "succeeded"
	// OutcomeRetried is a failed run that asynq schedules again.
	OutcomeRetried = "retried"
	// OutcomeFailed is a failed run that sends the task to the archive: a
	// dead letter (retries exhausted, or an error that is never retried). A
	// run that timed out on its last attempt counts here, not as timed_out.
	OutcomeFailed = "failed"
	// OutcomeTimedOut is a run that outlived its timeout and is retried.
	OutcomeTimedOut = "timed_out"
	// OutcomeSkipped is a run that did nothing because its batch had ended,
	// or that was revoked or cancelled (asynq.RevokeTask, a cancelled
	// context when its batch ended).
	OutcomeSkipped = "skipped"
	// OutcomeSplit is a failed chunk run split in two halves that run as
	// tasks of their own (batch.Classify); the run itself ends there.
	OutcomeSplit = "split"
)

// Outcomes lists every outcome, in the order above.
var Outcomes = []string{OutcomeSucceeded, OutcomeRetried, OutcomeFailed, OutcomeTimedOut, OutcomeSkipped, OutcomeSplit}

// Breaker states, the values SetBreakerState accepts. The gauge
// gridbatch_db_breaker_state holds 0 for closed, 1 for half-open, 2 for open.
const (
	BreakerClosed   = "closed"
	BreakerHalfOpen = "half-open"
	BreakerOpen     = "open"
)

// otherType is the type label of task types the Worker was not told about,
// so that a stray task type cannot create new series without bound.
const otherType = "other"

// Metric names, for dashboards and tests.
const (
	NameTasks           = "gridbatch_tasks_total"
	NameTaskDuration    = "gridbatch_task_duration_seconds"
	NameTasksInFlight   = "gridbatch_tasks_in_flight"
	NameCellsWritten    = "gridbatch_cells_written_total"
	NameCellsFailed     = "gridbatch_cells_dead_lettered_total"
	NameDBErrors        = "gridbatch_db_errors_total"
	NameBreakerState    = "gridbatch_db_breaker_state"
	NameOverdueHandlers = "gridbatch_overdue_handlers"
)

// Worker is the worker process's metrics. Its methods are safe for
// concurrent use; a nil *Worker does nothing.
type Worker struct {
	reg      *prometheus.Registry
	types    map[string]bool
	tasks    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	cells    prometheus.Counter
	failed   prometheus.Counter
	dbErrors prometheus.Counter
	breaker  prometheus.Gauge
	overdue  prometheus.Gauge
}

// NewWorker returns the worker's metrics in a fresh registry. taskTypes are
// the task types the worker serves (tasks.TypeChunk, …): their series exist
// from the start at zero, so rate() works from the first scrape; any other
// type is counted under type="other".
func NewWorker(taskTypes ...string) *Worker {
	m := &Worker{
		reg:   prometheus.NewRegistry(),
		types: map[string]bool{},
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameTasks,
			Help: "Task runs by task type and outcome: succeeded, retried, failed (dead-lettered), timed_out (retried after its timeout), skipped (batch ended, revoked or cancelled) or split (a failed chunk split in halves).",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameTaskDuration,
			Help:    "Wall time of task runs by task type, observed when the handler returns, whatever its outcome.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"type"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameTasksInFlight,
			Help: "Handlers running now, by task type (including any that outlive their timeout).",
		}, []string{"type"}),
		cells: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameCellsWritten,
			Help: "Grid cells whose series were written to PostgreSQL by chunk tasks (a re-run counts again).",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameCellsFailed,
			Help: "Grid cells of chunk tasks (or parts of split chunks) that were dead-lettered: one per failing cell once a chunk is split around it.",
		}),
		dbErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameDBErrors,
			Help: "PostgreSQL connection-class errors met by tasks (unreachable, connection dropped); data errors are not counted.",
		}),
		breaker: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameBreakerState,
			Help: "State of the DB circuit breaker: 0 closed, 1 half-open, 2 open.",
		}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameOverdueHandlers,
			Help: "Handlers still running past their task timeout plus the grace period (the worker reports unhealthy while this is above 0).",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.tasks, m.duration, m.inFlight, m.cells, m.failed, m.dbErrors, m.breaker, m.overdue,
	)
	for _, t := range append(taskTypes, otherType) {
		m.types[t] = true
		for _, o := range Outcomes {
			m.tasks.WithLabelValues(t, o)
		}
		m.duration.WithLabelValues(t)
		m.inFlight.WithLabelValues(t)
	}
	return m
}

// Registry is the Worker's registry, for tests and extra collectors.
func (m *Worker) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format (/metrics).
func (m *Worker) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg, ErrorHandling: promhttp.ContinueOnError})
}

func (m *Worker) typ(t string) string {
	if m.types[t] {
		return t
	}
	return otherType
}

// TaskFailed counts one failed run of a task of type taskType with its
// outcome: OutcomeRetried, OutcomeFailed, OutcomeTimedOut or OutcomeSkipped.
// tasks.Handlers calls it from the server's ErrorHandler.
func (m *Worker) TaskFailed(taskType, outcome string) {
	if m == nil {
		return
	}
	m.tasks.WithLabelValues(m.typ(taskType), outcome).Inc()
}

// CellsDeadLettered adds n to gridbatch_cells_dead_lettered_total: the
// cells of a chunk task (or part of a split chunk) that was dead-lettered.
func (m *Worker) CellsDeadLettered(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.failed.Add(float64(n))
}

// SetBreakerState records the DB circuit breaker's state: BreakerClosed,
// BreakerHalfOpen or BreakerOpen (gobreaker's State.String() values). Any
// other value is taken as open.
func (m *Worker) SetBreakerState(state string) {
	if m == nil {
		return
	}
	switch state {
	case BreakerClosed:
		m.breaker.Set(0)
	case BreakerHalfOpen:
		m.breaker.Set(1)
	default:
		m.breaker.Set(2)
	}
}

// SetOverdueHandlers records how many handlers are running past their
// timeout plus the grace period (the hung-handler watchdog calls it).
func (m *Worker) SetOverdueHandlers(n int) {
	if m == nil {
		return
	}
	m.overdue.Set(float64(n))
}

// Middleware is an asynq middleware (mux.Use(m.Middleware)): it counts the
// runs in flight, observes each run's duration, and counts the runs that
// return nil as succeeded, or skipped when the handler called Skipped. A
// run that returns nil after its context ended is not counted here: asynq
// has already handed it to the ErrorHandler as failed.
func (m *Worker) Middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		typ := m.typ(t.Type())
		rec := &record{m: m}
		ctx = context.WithValue(ctx, recordKey{}, rec)
		g := m.inFlight.WithLabelValues(typ)
		g.Inc()
		start := time.Now()
		err := next.ProcessTask(ctx, t)
		m.duration.WithLabelValues(typ).Observe(time.Since(start).Seconds())
		g.Dec()
		if err == nil && ctx.Err() == nil {
			outcome := OutcomeSucceeded
			switch {
			case rec.split.Load():
				outcome = OutcomeSplit
			case rec.skipped.Load():
				outcome = OutcomeSkipped
			}
			m.tasks.WithLabelValues(typ, outcome).Inc()
		}
		return err
	})
}
