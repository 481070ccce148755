package worker

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/hibiken/asynq"
)

// Watchdog tracks running handlers. asynq's timeouts are cooperative: at the
// timeout it cancels the handler's context, retries the task and frees the
// slot, but a handler that ignores cancellation runs on. The watchdog notices
// handlers still running Grace past their deadline; /healthz then fails so
// the worker is restarted.
type Watchdog struct {
	grace time.Duration
	log   *slog.Logger

	mu        sync.Mutex
	seq       uint64
	running   map[uint64]*handlerRun
	lastStart time.Time
}

type handlerRun struct {
	taskID, typ string
	start       time.Time
	deadline    time.Time
	reported    bool
}

// NewWatchdog returns a watchdog with the given grace.
func NewWatchdog(grace time.Duration, log *slog.Logger) *Watchdog {
	return &Watchdog{grace: grace, log: log, running: map[uint64]*handlerRun{}, lastStart: time.Now()}
}

// Middleware registers each handler run for the time it runs.
func (w *Watchdog) Middleware(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		run := &handlerRun{taskID: id, typ: t.Type(), start: time.Now()}
		if d, ok := ctx.Deadline(); ok {
			run.deadline = d
		}
		w.mu.Lock()
		w.seq++
		key := w.seq
		w.running[key] = run
		w.lastStart = run.start
		w.mu.Unlock()
		defer func() {
			w.mu.Lock()
			delete(w.running, key)
			w.mu.Unlock()
		}()
		return next.ProcessTask(ctx, t)
	})
}

// Overdue returns the handlers running longer than Grace past their
// deadline, logging each once.
func (w *Watchdog) Overdue(now time.Time) []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, r := range w.running {
		if r.deadline.IsZero() || now.Before(r.deadline.Add(w.grace)) {
			continue
		}
		late := now.Sub(r.deadline).Round(time.Second)
		out = append(out, fmt.Sprintf("%s (%s) is %s past its deadline", r.taskID, r.typ, late))
		if !r.reported {
			r.reported = true
			w.log.Error("handler ignores cancellation: still running past its timeout; /healthz now fails so this worker is restarted",
				"task_id", r.taskID, "type", r.typ, "started_at", r.start, "deadline", r.deadline, "late_seconds", late.Seconds())
		}
	}
	sort.Strings(out)
	return out
}

// Busy is the number of handlers running now and when the last one started.
func (w *Watchdog) Busy() (int, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running), w.lastStart
}
