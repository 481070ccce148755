// Package dlq is gridbatch's dead-letter queue. asynq's archive is the DLQ,
// but it is capped (9,999 tasks, 90 days) and trims silently, so every task
// that reaches it is also recorded durably in PostgreSQL (dead_letters):
// by the worker's error handler at the moment it is archived (Record), and
// again by a periodic sweep of the archive (Service.Sweep) for the tasks no
// handler recorded — a worker killed in between, or asynq's recoverer, which
// archives without calling the error handler. Recording is idempotent per
// (task ID, generation).
//
// Service also lists, requeues and purges dead letters (the 'enqueuer dlq'
// commands), and recovers tasks stranded in asynq's active list without a
// lease (hibiken/asynq#1144), which asynq itself never retries.
package dlq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Record stores a dead letter once per (task ID, generation) and reports
// whether it was new.
func Record(ctx context.Context, st *store.Store, d store.DeadLetter) (bool, error) {
	ok, err := st.RecordDeadLetter(ctx, d)
	if err != nil {
		return false, fmt.Errorf("record dead letter %s: %w", d.TaskID, err)
	}
	return ok, nil
}

// Subject is what a task is about, as far as the dead-letter queue cares.
type Subject struct {
	// BatchID and Chunk name the batch chunk of a chunk task; BatchID is
	// empty for any other task, or a chunk task naming no batch.
	BatchID string
	Chunk   int
	// Lo and Hi are the cells [Lo, Hi) of Chunk a part of a split chunk
	// runs; 0 and 0 for a whole chunk (store.Piece).
	Lo, Hi int
	// GridID is the cell of a task that runs one cell; nil otherwise.
	GridID *int64
	// IsChunk is true for a chunk task of a named batch.
	IsChunk bool
	// Generation is the chunk task's requeue generation (0 as first enqueued).
	Generation int
}

// Tasks is what the dead-letter queue needs of gridbatch's task contract.
// tasks.Broker implements it; the interface keeps the payload encoding in
// package tasks, whose error handler records dead letters through this
// package.
type Tasks interface {
	// DescribeTask says which batch chunk a task is, from its type, ID and payload.
	DescribeTask(typ, taskID string, payload []byte) Subject
	// ChunkTask returns a fresh task (fresh retry count) for piece p of b
	// with requeue generation gen, and the options to enqueue it with: its
	// queue, its task ID (derived from (batch, chunk, piece), the same as the
	// dead-lettered task's), its max retry and timeout.
	ChunkTask(b store.Batch, p store.Piece, gen int) (*asynq.Task, []asynq.Option, error)
}

// Config tunes a Service. Zero fields take the defaults documented on each.
type Config struct {
	// Queues are the asynq queues whose archives are swept and whose active
	// tasks are checked for orphans. Required.
	Queues []string
	// SweepInterval is how often Maintain sweeps the archives. Defaults to 30s.
	SweepInterval time.Duration
	// SweepMargin is how far before the newest archived task of the last
	// sweep the next sweep starts reading (asynq scores archived tasks by
	// the archiving process's clock, in whole seconds). Defaults to 2m.
	SweepMargin time.Duration
	// FullSweepEvery makes every n-th sweep read the whole archive, not
	// only what is newer than the last sweep; a Service's first sweep is
	// always full. Defaults to 20.
	FullSweepEvery int
	// SweepTimeout bounds one sweep. Defaults to 2m.
	SweepTimeout time.Duration
	// StaleLease is how long past its lease's expiry a task may stay active
	// before it counts as an orphan: asynq's recoverer retries expired
	// leases every minute, 30 s after expiry, so one still there this late
	// was missed (its message is gone, or no server serves its queue).
	// Defaults to 5m.
	StaleLease time.Duration
}

func (c *Config) defaults() {
	c.SweepInterval = cmp.Or(c.SweepInterval, 30*time.Second)
	c.SweepMargin = cmp.Or(c.SweepMargin, 2*time.Minute)
	c.FullSweepEvery = cmp.Or(c.FullSweepEvery, 20)
	c.SweepTimeout = cmp.Or(c.SweepTimeout, 2*time.Minute)
	c.StaleLease = cmp.Or(c.StaleLease, 5*time.Minute)
}

// Service is the dead-letter queue.
type Service struct {
	st     *store.Store
	rdb    redis.UniversalClient
	client *asynq.Client
	svc    *batch.Service
	tasks  Tasks
	log    *slog.Logger
	cfg    Config

	mu        sync.Mutex
	sweeps    int                // sweeps done, for FullSweepEvery
	lastSweep time.Time          // when the last sweep finished
	hwm       map[string]float64 // per queue: the newest archived score swept
	suspects  map[string]orphanKind
}

// New returns a Service. svc records swept chunks' outcomes; the caller owns
// and closes st, rdb and client.
func New(st *store.Store, rdb redis.UniversalClient, client *asynq.Client, svc *batch.Service, t Tasks, log *slog.Logger, cfg Config) (*Service, error) {
	cfg.defaults()
	if len(cfg.Queues) == 0 {
		return nil, errors.New("dlq: no queues to sweep")
	}
	if cfg.SweepInterval < 0 || cfg.SweepMargin < 0 || cfg.FullSweepEvery < 0 || cfg.StaleLease < 0 {
		return nil, errors.New("dlq: negative setting")
	}
	return &Service{st: st, rdb: rdb, client: client, svc: svc, tasks: t, log: log, cfg: cfg,
		hwm: map[string]float64{}, suspects: map[string]orphanKind{}}, nil
}

// Maintain is the dead-letter queue's periodic work, for the one worker
// holding the reconciler's lease: it recovers orphaned active tasks (every
// call; an orphan must be seen on two consecutive calls), and sweeps the
// archives when SweepInterval has passed since the last sweep or an orphan
// was archived. Errors are logged here.
func (s *Service) Maintain(ctx context.Context) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	o, err := s.RecoverOrphans(octx)
	cancel()
	if err != nil && ctx.Err() == nil {
		s.log.Warn("recover orphaned active tasks", "error", err)
	}
	s.mu.Lock()
	due := time.Since(s.lastSweep) >= s.cfg.SweepInterval
	s.mu.Unlock()
	if !due && o.Archived == 0 {
		return
	}
	if s.svc != nil && s.svc.DBOpen() {
		return // the database is down: sweep when it is back
	}
	sctx, cancel := context.WithTimeout(ctx, s.cfg.SweepTimeout)
	defer cancel()
	st, err := s.Sweep(sctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("sweep the archive", "error", err, "scanned", st.Scanned, "recorded", st.Recorded)
	}
}
