package metrics

import (
	"context"
	"sync/atomic"
)

// record is what Middleware puts in a task's context, so that code deep in
// the task (internal/batch) can report to the Worker without holding it.
type record struct {
	m       *Worker
	skipped atomic.Bool
	split   atomic.Bool
}

type recordKey struct{}

func fromContext(ctx context.Context) *record {
	r, _ := ctx.Value(recordKey{}).(*record)
	return r
}

// Skipped marks the task run of ctx as skipped: it did nothing because its
// batch had ended. When the handler then returns nil the run is counted with
// outcome skipped instead of succeeded. Outside a task run it does nothing.
func Skipped(ctx context.Context) {
	if r := fromContext(ctx); r != nil {
		r.skipped.Store(true)
	}
}

// Split marks the task run of ctx as split: it failed and its chunk was
// split in halves that run as tasks of their own. When the handler then
// returns nil the run is counted with outcome split. Outside a task run it
// does nothing.
func Split(ctx context.Context) {
	if r := fromContext(ctx); r != nil {
		r.split.Store(true)
	}
}

// CellsWritten adds n to gridbatch_cells_written_total when ctx is a task
// run's context. Outside a task run it does nothing.
func CellsWritten(ctx context.Context, n int) {
	if r := fromContext(ctx); r != nil && n > 0 {
		r.m.cells.Add(float64(n))
	}
}

// DBError adds one to gridbatch_db_errors_total when ctx is a task run's
// context. Call it for connection-class errors only (store.IsConnError).
// Outside a task run it does nothing.
func DBError(ctx context.Context) {
	if r := fromContext(ctx); r != nil {
		r.m.dbErrors.Inc()
	}
}
