// Package batch orchestrates batches: trigger under the per-kind lock, plan
// chunks, run a chunk, record dead letters, finish at completion, deadline or
// cancel, and reconcile whatever a crash left behind.
package batch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/breaker"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/metrics"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Broker is what orchestration needs of the queue. tasks.Broker implements it
// on asynq; keeping it an interface keeps the task encoding in package tasks.
type Broker interface {
	// AcquireLock enqueues the batch's lock task: unique per kind, holding the
	// lock until it runs at deadlineAt (or is deleted), and for at most ttl
	// past deadlineAt. It returns ErrLocked when a batch of kind holds it.
	AcquireLock(ctx context.Context, kind, batchID string, deadlineAt time.Time, ttlPastDeadline time.Duration) error
	// LockHolder names the batch holding kind's lock and when the lock expires.
	LockHolder(ctx context.Context, kind string) (batchID string, expiresAt time.Time, err error)
	// ReleaseLock deletes the batch's lock task, releasing the lock. It is a
	// no-op when the task is gone or is the one running.
	ReleaseLock(ctx context.Context, batchID string) error
	// LockExists reports whether the batch's lock task is still queued.
	LockExists(ctx context.Context, batchID string) (bool, error)
	// EnqueuePlan enqueues the batch's plan task (idempotent).
	EnqueuePlan(ctx context.Context, batchID string) error
	// EnqueueChunks enqueues one chunk task per chunk, skipping those already
	// queued (idempotent).
	EnqueueChunks(ctx context.Context, b store.Batch, chunks []int) error
	// EnqueueParts enqueues one chunk task per part of a split chunk,
	// skipping those already queued (idempotent).
	EnqueueParts(ctx context.Context, b store.Batch, parts []store.Piece) error
	// RemoveChunks removes the batch's queued chunk tasks and cancels running ones.
	RemoveChunks(ctx context.Context, batchID string, pieces []store.Piece) error
	// CountDBError adds one to the batch's DB connection errors; DBErrors reads them.
	CountDBError(ctx context.Context, batchID string)
	DBErrors(ctx context.Context, batchID string) int64
}

// ErrLocked is returned by Broker.AcquireLock when the kind's lock is held.
var ErrLocked = errors.New("batch lock held")

// RefusedError is returned by Trigger when a batch of the kind is running.
type RefusedError struct {
	Kind      string
	RunningID string
	ExpiresAt time.Time
}

func (e *RefusedError) Error() string {
	exp := "unknown"
	if !e.ExpiresAt.IsZero() {
		exp = fmt.Sprintf("%s, in %s", e.ExpiresAt.UTC().Format(time.RFC3339), time.Until(e.ExpiresAt).Round(time.Second))
	}
	return fmt.Sprintf("refused: a %s batch is already running: %s (its lock expires at %s); wait for it to end, or stop it with 'enqueuer cancel %s'",
		e.Kind, e.RunningID, exp, e.RunningID)
}

// Config tunes the service. Zero fields take the documented defaults.
type Config struct {
	// Worker names this process in chunk outcomes. Defaults to
	// WorkerName(os.Getpid()).
	Worker string
	// FailFastAfter ends a batch failed when this many chunks have been
	// dead-lettered, none has succeeded and all failed the same way.
	// Defaults to 5.
	FailFastAfter int
	// OnFinished, when set, is called once for every batch this process ends.
	OnFinished func(store.Batch)
	// DB, when set, guards the chunk path's database work: while it is open
	// chunks fail fast with an error wrapping breaker.ErrOpen.
	DB *breaker.Breaker
	// Models are the kinds this service runs. Defaults to the built-in ph
	// and hazard.
	Models *model.Set
	// Compute computes a chunk of a model. Defaults to the Go models of
	// Models (a process model then fails its chunks); the worker passes its
	// process runtime.
	Compute Computer
}

// Computer computes a chunk of a model; *process.Runtime implements it.
type Computer interface {
	Compute(ctx context.Context, spec model.Spec, chunk string, c model.Cells) ([]float64, error)
}

// goModels computes the Go models of a set, and nothing else.
type goModels struct{ set *model.Set }

func (g goModels) Compute(ctx context.Context, spec model.Spec, _ string, c model.Cells) ([]float64, error) {
	m, ok := g.set.Go(spec.Kind)
	if !ok {
		return nil, fmt.Errorf("model %s runs as a process, which only a worker can start", spec.Kind)
	}
	return m.Compute(ctx, spec, c)
}

// Service runs the batch life cycle.
type Service struct {
	store  *store.Store
	broker Broker
	log    *slog.Logger
	cfg    Config

	gridsMu sync.Mutex
	grids   map[string]store.BatchGrid // batches' grids read so far (they never change)
	gate    Gate
}

// WorkerName is the name the process pid of this host records in
// chunk_runs.worker and logs as its worker: host:pid.
func WorkerName(pid int) string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, pid)
}

// New returns a Service.
func New(st *store.Store, b Broker, log *slog.Logger, cfg Config) *Service {
	if cfg.Worker == "" {
		cfg.Worker = WorkerName(os.Getpid())
	}
	if cfg.FailFastAfter <= 0 {
		cfg.FailFastAfter = 5
	}
	if cfg.Models == nil {
		cfg.Models = model.Builtins()
	}
	if cfg.Compute == nil {
		cfg.Compute = goModels{cfg.Models}
	}
	return &Service{store: st, broker: b, log: log, cfg: cfg, gate: Gate{Models: cfg.Models}}
}

// Store exposes the service's store.
func (s *Service) Store() *store.Store { return s.store }

// Models returns the kinds the service runs.
func (s *Service) Models() *model.Set { return s.cfg.Models }

// Worker returns the name this process records in chunk outcomes
// (Config.Worker).
func (s *Service) Worker() string { return s.cfg.Worker }

// Request asks for a batch.
type Request struct {
	Kind      string
	Region    grid.Region
	ChunkSize int
	// Deadline is how long the batch may run; LockTTL is the lock's total
	// TTL and must exceed Deadline.
	Deadline, LockTTL time.Duration
	Trigger           string
	ScheduledFor      *time.Time
}

// NewID returns a batch ID such as ph-20261122-041503-3fa9c1: the kind, the
// UTC start time and a random suffix.
func NewID(kind string, t time.Time) string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%s-%s", kind, t.UTC().Format("20060102-150405"), hex.EncodeToString(b))
}

// Trigger starts a batch: it takes the kind's lock, records the batch and
// enqueues its plan task. It returns a *RefusedError when a batch of the kind
// holds the lock.
func (s *Service) Trigger(ctx context.Context, r Request) (store.Batch, error) {
	spec, err := s.cfg.Models.Spec(r.Kind)
	if err != nil {
		return store.Batch{}, err
	}
	if r.LockTTL <= r.Deadline {
		return store.Batch{}, fmt.Errorf("lock TTL %s must be longer than the deadline %s", r.LockTTL, r.Deadline)
	}
	seeded, err := s.store.CountSeeded(ctx, r.Region)
	if err != nil {
		if store.IsSchemaError(err) {
			return store.Batch{}, store.SchemaHint(err)
		}
		return store.Batch{}, fmt.Errorf("count seeded cells: %w", err)
	}
	if err := s.checkModelTables(ctx, spec); err != nil {
		return store.Batch{}, err
	}
	if seeded == 0 {
		return store.Batch{}, fmt.Errorf("no cell of bbox %s at step %g has inputs; run 'enqueuer seed --bbox %s --step %g' first",
			r.Region.BBox, r.Region.Lattice.Step, r.Region.BBox, r.Region.Lattice.Step)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	id := NewID(r.Kind, now)
	deadlineAt := now.Add(r.Deadline)
	if err := s.broker.AcquireLock(ctx, r.Kind, id, deadlineAt, r.LockTTL-r.Deadline); err != nil {
		if errors.Is(err, ErrLocked) {
			holder, exp, herr := s.broker.LockHolder(ctx, r.Kind)
			if herr != nil {
				s.log.Warn("could not read the lock holder", "kind", r.Kind, "error", herr)
			}
			return store.Batch{}, &RefusedError{Kind: r.Kind, RunningID: holder, ExpiresAt: exp}
		}
		return store.Batch{}, fmt.Errorf("take the %s batch lock: %w", r.Kind, err)
	}
	b, err := s.store.InsertBatch(ctx, store.NewBatch{
		ID: id, Kind: r.Kind, Region: r.Region, ChunkSize: r.ChunkSize, StartedAt: now,
		DeadlineAt: deadlineAt, LockExpiresAt: now.Add(r.LockTTL), Trigger: r.Trigger, ScheduledFor: r.ScheduledFor,
		Layout: store.LayoutOf(spec),
	})
	if err != nil {
		if rerr := s.broker.ReleaseLock(context.WithoutCancel(ctx), id); rerr != nil {
			s.log.Error("release the lock of a batch that could not be recorded", "batch_id", id, "error", rerr)
		}
		return store.Batch{}, fmt.Errorf("record batch: %w", err)
	}
	if err := s.broker.EnqueuePlan(ctx, id); err != nil {
		// The reconciler enqueues the plan of any running batch left unplanned.
		s.log.Warn("enqueue the plan task failed; a worker's reconciler will retry it", "batch_id", id, "error", err)
	}
	s.log.Info("batch started", "batch_id", id, "kind", r.Kind, "cells", b.TotalCells, "chunks", b.TotalChunks,
		"seeded_cells", seeded, "deadline_at", deadlineAt, "lock_expires_at", b.LockExpiresAt)
	return b, nil
}

// Plan records the batch's provenance (once; see recordProvenance) and,
// meanwhile, writes the batch's chunk rows and enqueues a task for every
// chunk still pending. It is idempotent: a re-run never doubles a chunk.
func (s *Service) Plan(ctx context.Context, batchID string) error {
	b, err := s.store.GetBatch(ctx, batchID)
	if errors.Is(err, store.ErrBatchNotFound) {
		return fmt.Errorf("plan %s: %w: %w", batchID, err, ErrPermanent)
	}
	if err != nil {
		return fmt.Errorf("plan %s: %w", batchID, err)
	}
	if b.Ended() {
		metrics.Skipped(ctx)
		return nil
	}
	if time.Now().After(b.DeadlineAt) {
		// Planned only after its deadline (no worker ran until then): it
		// ends timed_out, as its lock task would, rather than run late.
		return s.EndTimedOut(ctx, batchID)
	}
	if _, err := s.cfg.Models.Spec(b.Kind); err != nil {
		s.failUnknownModel(ctx, b.ID, "plan", err)
		return nil
	}
	// The provenance (its inputs digest takes a few tenths of a second for
	// 480,000 cells) is recorded while the chunk rows are written and the
	// tasks enqueued; the plan ends when both have. When it fails the plan
	// is retried, which doubles no chunk, and records it then.
	recorded := make(chan error, 1)
	go func() { recorded <- s.recordProvenance(ctx, b) }()
	err = s.planChunks(ctx, b)
	if perr := <-recorded; err == nil && perr != nil {
		err = fmt.Errorf("record the provenance of %s: %w", batchID, perr)
	}
	return err
}

// planChunks writes the batch's chunk rows and enqueues a task for every
// chunk still pending.
func (s *Service) planChunks(ctx context.Context, b store.Batch) error {
	pending, err := s.store.PlanChunks(ctx, b)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.broker.EnqueueChunks(ctx, b, pending); err != nil {
		return fmt.Errorf("enqueue chunks of %s: %w", b.ID, err)
	}
	el := time.Since(start)
	taskID, _ := asynq.GetTaskID(ctx)
	s.log.Info("batch planned", "batch_id", b.ID, "task_id", taskID, "chunks", b.TotalChunks, "enqueued", len(pending),
		"enqueue_seconds", el.Seconds(), "tasks_per_second", float64(len(pending))/max(el.Seconds(), 1e-9))
	return nil
}

// Chunk is one chunk task's work.
type Chunk struct {
	BatchID string
	TaskID  string
	Kind    string
	// Index is the chunk's number in its batch, 0 to TotalChunks-1
	// (store.Piece.Chunk, the payload's "chunk").
	Index     int
	Step      float64
	BBox      grid.BBox
	ChunkSize int
	// Lo and Hi are the cells [Lo, Hi) of the chunk the task runs when it is
	// a part of a split chunk; 0 and 0 run the whole chunk (store.Piece).
	Lo, Hi  int
	Retried int
	// Requeue is the chunk task's requeue generation: 0 as first enqueued,
	// n after the n-th 'enqueuer dlq requeue'. A requeued chunk may write
	// into a batch that has ended, and heals its figures and status.
	Requeue int
}

// ErrBadChunk marks data errors in a chunk: no retry can fix them.
var ErrBadChunk = errors.New("bad chunk")

// ErrPermanent marks an error no retry can fix: the chunk goes to the
// dead-letter queue at once. The task layer translates it into
// asynq.SkipRetry.
var ErrPermanent = errors.New("permanent failure")

// Piece is the part of its chunk the task runs.
func (c Chunk) Piece() store.Piece { return store.Piece{Chunk: c.Index, Lo: c.Lo, Hi: c.Hi} }

// Cells returns the grid IDs of the cells the task runs, in order, and the
// lattice they are on; an error wrapping ErrBadChunk when the chunk or its
// part is not one of its region's.
func (c Chunk) Cells() ([]int64, grid.Lattice, error) {
	lat, err := grid.NewLattice(c.Step)
	if err != nil {
		return nil, lat, fmt.Errorf("%w: %w", ErrBadChunk, err)
	}
	if c.ChunkSize > grid.MaxChunkSize { // before anything is allocated from it
		return nil, lat, fmt.Errorf("%w: chunk size %d is over the %d cells a chunk may hold", ErrBadChunk, c.ChunkSize, grid.MaxChunkSize)
	}
	region, err := grid.NewRegion(lat, c.BBox, 0)
	if err != nil {
		return nil, lat, fmt.Errorf("%w: %w", ErrBadChunk, err)
	}
	if c.ChunkSize < 1 || c.Index < 0 || c.Index >= region.NumChunks(c.ChunkSize) {
		return nil, lat, fmt.Errorf("%w: chunk %d of size %d is outside the %d cells of the region",
			ErrBadChunk, c.Index, c.ChunkSize, region.NumCells())
	}
	ids := region.ChunkIDs(c.Index, c.ChunkSize)
	if c.Hi == 0 && c.Lo == 0 {
		return ids, lat, nil
	}
	if c.Lo < 0 || c.Hi <= c.Lo || c.Hi > len(ids) {
		return nil, lat, fmt.Errorf("%w: cells %d-%d are outside the %d cells of chunk %d", ErrBadChunk, c.Lo, c.Hi, len(ids), c.Index)
	}
	return ids[c.Lo:c.Hi], lat, nil
}

// RunChunk loads the chunk's cells and the model's inputs in one query,
// computes the series and writes them with the chunk's outcome in one
// transaction. A failure is returned as it is, for ChunkFailed to decide
// on; a system error (unknown model, missing schema) ends the batch failed
// at once and returns nil.
func (s *Service) RunChunk(ctx context.Context, c Chunk) error {
	start := time.Now()
	// A chunk task is untrusted: before anything is allocated from it, it
	// must be one of its batch's chunks as batch_runs recorded them.
	g, err := s.batchGrid(ctx, c.BatchID)
	if err != nil {
		return s.dbError(ctx, c, "read its batch", err)
	}
	if err := checkChunk(g, c); err != nil {
		return fmt.Errorf("%w: %w", ErrBadChunk, err)
	}
	spec, err := s.cfg.Models.Spec(c.Kind)
	if err != nil {
		s.failUnknownModel(ctx, c.BatchID, fmt.Sprintf("chunk %d", c.Index), err)
		return nil
	}
	ids, _, err := c.Cells()
	if err != nil {
		return err
	}
	var cells model.Cells
	err = s.guard(func() (err error) {
		cells, err = s.store.LoadCells(ctx, c.Step, ids, spec.Inputs)
		return err
	})
	if err != nil {
		return s.dbError(ctx, c, "load inputs", err)
	}
	pctx, proc := model.WithProcessNote(ctx)
	proc.PID = os.Getpid() // a Go model runs in this process
	values, err := s.cfg.Compute.Compute(pctx, spec, c.TaskID, cells)
	if err != nil {
		return fmt.Errorf("compute: %w", err)
	}
	if len(values) != spec.Values(len(ids)) {
		return fmt.Errorf("compute: %d values for %d cells, want %d (cells × %d series × %d years): %w",
			len(values), len(ids), spec.Values(len(ids)), len(spec.Series), spec.Years, model.ErrInvalid)
	}
	series := make([]grid.Series, 0, len(ids)*len(spec.Series))
	for i, id := range ids {
		for j, name := range spec.Series {
			k := (i*len(spec.Series) + j) * spec.Years
			series = append(series, grid.Series{GridID: id, Scenario: name, Values: values[k : k+spec.Years : k+spec.Years]})
		}
	}
	// The declared checks run on the values here, once, and are recorded
	// with the rows: the gate adds them up (RunChecks).
	checks := CheckChunk(spec.Checks, spec.FirstYear, series)
	var t store.Transition
	err = s.guard(func() (err error) {
		t, err = s.store.WriteChunk(ctx, c.Kind, c.Step, spec.FirstYear, series, store.ChunkOutcome{
			BatchID: c.BatchID, Chunk: c.Index, Lo: c.Lo, Hi: c.Hi, Attempts: c.Retried + 1, TaskSeconds: time.Since(start).Seconds(),
			Worker: s.cfg.Worker, RSSBytes: PeakRSS(), ModelPID: proc.PID, Checks: checks,
		}, c.Requeue > 0)
		return err
	})
	if err != nil {
		return s.dbError(ctx, c, "write results", err)
	}
	if !t.BatchRunning && c.Requeue > 0 {
		metrics.CellsWritten(ctx, len(ids))
		return s.healEnded(context.WithoutCancel(ctx), c)
	}
	if !t.BatchRunning {
		s.log.Info("batch already ended; chunk result discarded", "batch_id", c.BatchID, "chunk", c.Index, "task_id", c.TaskID)
		metrics.Skipped(ctx)
		return nil
	}
	metrics.CellsWritten(ctx, len(ids))
	if t.AllDone() {
		s.Finish(context.WithoutCancel(ctx), c.BatchID)
	}
	return nil
}

// batchGrid returns the grid batch_runs recorded for batch id, read once
// per batch and worker (an unknown batch is read each time: ErrBatchNotFound).
func (s *Service) batchGrid(ctx context.Context, id string) (store.BatchGrid, error) {
	s.gridsMu.Lock()
	g, ok := s.grids[id]
	s.gridsMu.Unlock()
	if ok {
		return g, nil
	}
	err := s.guard(func() (err error) {
		g, err = s.store.GetBatchGrid(ctx, id)
		return err
	})
	if err != nil {
		return g, err
	}
	s.gridsMu.Lock()
	defer s.gridsMu.Unlock()
	if s.grids == nil || len(s.grids) >= 1024 { // a long-lived worker sees many batches
		s.grids = map[string]store.BatchGrid{}
	}
	s.grids[id] = g
	return g, nil
}

// checkChunk reports how c is not one of the chunks of the batch whose grid
// is g: every field of its task must be the batch's own.
func checkChunk(g store.BatchGrid, c Chunk) error {
	switch {
	case c.Kind != g.Kind:
		return fmt.Errorf("chunk task of kind %q for a batch of kind %q", c.Kind, g.Kind)
	case c.Step != g.Step:
		return fmt.Errorf("chunk task of step %v for a batch of step %v", c.Step, g.Step)
	case c.BBox != g.BBox:
		return fmt.Errorf("chunk task of bbox %s for a batch of bbox %s", c.BBox, g.BBox)
	case c.ChunkSize != g.ChunkSize:
		return fmt.Errorf("chunk task of chunk size %d for a batch of chunk size %d", c.ChunkSize, g.ChunkSize)
	case c.Index < 0 || c.Index >= g.TotalChunks:
		return fmt.Errorf("chunk %d is not one of the batch's %d chunks", c.Index, g.TotalChunks)
	}
	return nil
}

// failUnknownModel ends a batch failed whose kind this worker does not know
// (err from Models.Spec), at what ("plan", "chunk 3"), saying how to make
// the workers load a changed models file.
func (s *Service) failUnknownModel(ctx context.Context, batchID, what string, err error) {
	s.fail(ctx, batchID, fmt.Sprintf("%s: %v in worker %s: is GRIDBATCH_MODELS_FILE the same for every binary? "+
		"A worker reads it at start: after adding a model, reload the workers (kill -HUP PID: they reload a changed models file) or restart them", what, err, s.cfg.Worker))
}

// checkModelTables refuses a batch of a model whose results table or
// inputs are missing, naming the command that makes them.
func (s *Service) checkModelTables(ctx context.Context, spec model.Spec) error {
	table, err := store.ResultsTable(spec.Kind)
	if err != nil {
		return err
	}
	ok, err := s.store.TableExists(ctx, spec.Kind+"_results")
	if err != nil {
		return fmt.Errorf("look for %s: %w", table, err)
	}
	if !ok {
		return fmt.Errorf("model %s has no results table %s; run 'enqueuer migrate' with this GRIDBATCH_MODELS_FILE", spec.Kind, table)
	}
	cols, err := s.store.InputColumns(ctx)
	if err != nil {
		return fmt.Errorf("read the input columns of cell_params: %w", err)
	}
	var missing []string
	for _, in := range spec.Inputs {
		if !slices.Contains(cols, in) {
			missing = append(missing, in)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("model %s reads inputs %s that cell_params has no column for (it has: %s); add and fill them, or fix the model's inputs",
			spec.Kind, strings.Join(missing, ", "), strings.Join(cols, ", "))
	}
	return nil
}

// guard runs database work through the breaker, when there is one.
func (s *Service) guard(fn func() error) error {
	if s.cfg.DB == nil {
		return fn()
	}
	return s.cfg.DB.Do(fn)
}

// DBOpen reports whether the database breaker is open.
func (s *Service) DBOpen() bool { return s.cfg.DB != nil && s.cfg.DB.State() == breaker.Open }

// dbError handles an error from the store during a chunk: a missing schema
// fails the batch; a connection error is counted. What is retried is
// decided by Classify.
func (s *Service) dbError(ctx context.Context, c Chunk, what string, err error) error {
	switch {
	case errors.Is(err, breaker.ErrOpen):
	case store.IsSchemaError(err) && !isInputError(err):
		s.fail(ctx, c.BatchID, fmt.Sprintf("chunk %d: %s: %v (run 'enqueuer migrate')", c.Index, what, err))
		return nil
	case store.IsConnError(err):
		metrics.DBError(ctx)
		s.broker.CountDBError(context.WithoutCancel(ctx), c.BatchID)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// isInputError reports an input cell_params has no column for.
func isInputError(err error) bool {
	var unknown *store.UnknownInputError
	return errors.As(err, &unknown)
}

// ChunkDeadLettered records that a chunk (or a part of one) reached the
// archive and ends the batch when that was its last open piece, or fails it
// early when every chunk so far has failed the same way.
func (s *Service) ChunkDeadLettered(ctx context.Context, c Chunk, reason string) error {
	t, err := s.store.MarkChunkFailed(ctx, store.ChunkOutcome{
		BatchID: c.BatchID, Chunk: c.Index, Lo: c.Lo, Hi: c.Hi, Attempts: c.Retried + 1, Worker: s.cfg.Worker, Error: reason,
	})
	if err != nil {
		return err
	}
	if !t.Changed || !t.BatchRunning {
		return nil
	}
	if t.AllDone() {
		s.Finish(ctx, c.BatchID)
		return nil
	}
	if t.Completed == 0 {
		s.failFast(ctx, c.BatchID, reason)
	}
	return nil
}

// failFast ends a batch failed when FailFastAfter of its planned chunks
// failed (were dead-lettered or split) the same way and none of its cells
// succeeded: a model that fails on every cell is not split down to each
// of them. A chunk split because it ran out of memory or time does not
// count: its halves may well fit.
func (s *Service) failFast(ctx context.Context, batchID string, reason string) {
	failed, classes, completed, err := s.store.FailedChunks(ctx, batchID, []string{FailureMemory + ":", FailureTimeout + ":"})
	if err == nil && completed == 0 && failed >= s.cfg.FailFastAfter && classes == 1 {
		s.fail(ctx, batchID, fmt.Sprintf("the first %d chunks all failed the same way and no cell succeeded: %s", failed, reason))
	}
}

// Finish ends a batch whose chunks all have an outcome with the status
// store.FinalStatus gives its chunks' outcomes.
func (s *Service) Finish(ctx context.Context, batchID string) {
	s.end(ctx, batchID, store.Final{PendingChunkStatus: store.ChunkCancelled})
}

func (s *Service) fail(ctx context.Context, batchID, reason string) {
	s.log.Error("batch failed", "batch_id", batchID, "error", reason)
	s.end(context.WithoutCancel(ctx), batchID, store.Final{Status: store.StatusFailed, PendingChunkStatus: store.ChunkCancelled, Error: reason})
}

// Cancel ends a running batch cancelled. Cancelling an unknown batch that
// still holds a lock releases the lock.
func (s *Service) Cancel(ctx context.Context, batchID string) (store.Batch, error) {
	b, ended, err := s.end(ctx, batchID, store.Final{Status: store.StatusCancelled, PendingChunkStatus: store.ChunkCancelled, Error: "cancelled by operator"})
	if errors.Is(err, store.ErrBatchNotFound) {
		if ok, _ := s.broker.LockExists(ctx, batchID); ok {
			return b, s.broker.ReleaseLock(ctx, batchID)
		}
	}
	if err == nil && !ended {
		b, err = s.store.GetBatch(ctx, batchID)
		if err == nil {
			return b, fmt.Errorf("batch %s already ended %s", batchID, b.Status)
		}
	}
	return b, err
}

// EndTimedOut ends a batch that reached its deadline timed_out; the lock task
// calls it.
func (s *Service) EndTimedOut(ctx context.Context, batchID string) error {
	b, err := s.store.GetBatch(ctx, batchID)
	if errors.Is(err, store.ErrBatchNotFound) {
		s.log.Warn("lock task of an unrecorded batch released", "batch_id", batchID)
		return nil
	}
	if err != nil || b.Ended() {
		return err
	}
	_, _, err = s.end(ctx, batchID, store.Final{Status: store.StatusTimedOut, PendingChunkStatus: store.ChunkTimedOut,
		Error: fmt.Sprintf("deadline %s reached with %d of %d chunks done", b.DeadlineAt.Format(time.RFC3339), b.DoneChunks, b.TotalChunks)})
	return err
}

// end finishes a batch with f and cleans the queue of its remaining tasks.
func (s *Service) end(ctx context.Context, batchID string, f store.Final) (store.Batch, bool, error) {
	f.DBConnErrors = s.broker.DBErrors(ctx, batchID)
	finishing := time.Now()
	b, rest, ended, err := s.store.FinishBatch(ctx, batchID, f, s.gate.Decide(AtEnd))
	finished := time.Since(finishing)
	if err != nil || !ended {
		if err != nil && !errors.Is(err, store.ErrBatchNotFound) {
			s.log.Error("finish batch", "batch_id", batchID, "status", f.Status, "error", err)
		}
		return b, ended, err
	}
	if len(rest) > 0 {
		if err := s.broker.RemoveChunks(ctx, batchID, rest); err != nil {
			s.log.Error("remove the remaining chunk tasks", "batch_id", batchID, "chunks", len(rest), "error", err)
		}
	}
	if err := s.broker.ReleaseLock(ctx, batchID); err != nil {
		s.log.Error("release the batch lock", "batch_id", batchID, "error", err)
	}
	// finish_seconds is the finish transaction, begin to commit: for a
	// batch that succeeded, mostly its publication (index and attach its
	// rows). duration_seconds includes it; this says how much of it it was.
	s.log.Info("batch finished", append(Attrs(b), "finish_seconds", finished.Seconds())...)
	if s.cfg.OnFinished != nil {
		s.cfg.OnFinished(b)
	}
	return b, true, nil
}

// Attrs are a finished batch's figures as log attributes.
func Attrs(b store.Batch) []any {
	a := []any{"batch_id", b.ID, "kind", b.Kind, "status", b.Status,
		"started_at", b.StartedAt, "total_chunks", b.TotalChunks, "completed_chunks", b.CompletedChunks,
		"failed_chunks", b.FailedChunks, "timed_out_chunks", b.TimedOutChunks, "cancelled_chunks", b.CancelledChunks,
		"total_cells", b.TotalCells, "completed_cells", b.CompletedCells, "failed_cells", b.FailedCells,
		"timed_out_cells", b.TimedOutCells, "db_conn_errors", b.DBConnErrors}
	if b.EndedAt != nil {
		a = append(a, "ended_at", *b.EndedAt)
	}
	if b.DurationSeconds != nil {
		a = append(a, "duration_seconds", *b.DurationSeconds)
	}
	if b.SuccessRate != nil {
		a = append(a, "success_rate", *b.SuccessRate)
	}
	if b.AvgTaskSeconds != nil {
		a = append(a, "avg_task_seconds", *b.AvgTaskSeconds)
	}
	if b.PeakWorkerRSSBytes != nil {
		a = append(a, "peak_worker_rss_bytes", *b.PeakWorkerRSSBytes)
	}
	if b.Error != nil {
		a = append(a, "error", *b.Error)
	}
	return a
}

// PeakRSS is this process's peak resident set size in bytes.
func PeakRSS() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024
}

// ChunkTaskID is the asynq task ID of a chunk: derived from (batch, chunk),
// so re-planning a batch can never enqueue a chunk twice.
func ChunkTaskID(batchID string, chunk int) string { return fmt.Sprintf("%s:c%06d", batchID, chunk) }

// ParseChunkTaskID splits a chunk task ID; ok is false for other IDs.
func ParseChunkTaskID(taskID string) (batchID string, chunk int, ok bool) {
	i := strings.LastIndex(taskID, ":c")
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(strings.SplitN(taskID[i+2:], ":", 2)[0])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return taskID[:i], n, true
}
