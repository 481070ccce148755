// Package process runs the models declared with a command as long-lived,
// supervised processes: started once and reused across chunks, spoken to
// over two pipes (docs/model-protocol.md), SIGKILLed with their whole process
// group at a chunk's timeout, at its batch's cancel or deadline, or over
// their memory limit, restarted when they die, and never outliving their
// worker. Every rule of how a model process is killed is in proc.go; what
// it can reach (its environment, user, HOME and descriptors) is decided in
// contain.go; how big a frame it may send, in protocol.go.
package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gridbatch/gridbatch/internal/model"
)

// Config tunes a Runtime. Zero fields take the documented defaults.
type Config struct {
	// Concurrency is the number of processes per kind whose spec says 0.
	// Defaults to 1.
	Concurrency int
	// StartTimeout bounds a new process's handshake. Defaults to 60s.
	StartTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between start attempts of a
	// kind whose processes cannot start: it doubles from MinBackoff (1s)
	// after each failure, up to MaxBackoff (1m).
	MinBackoff, MaxBackoff time.Duration
	// ExitGrace is how long an idle process has to exit once its requests
	// end (worker shutdown, max_chunks_per_process). Defaults to 2s.
	ExitGrace time.Duration
	// Supervisor is the executable that supervises each model process (see
	// RunShimIfAsked); it defaults to this program when its main called
	// RunShimIfAsked, else models run unsupervised (their children may then
	// outlive a SIGKILLed worker).
	Supervisor string
	// User is the account model processes run as (LookupUser); nil runs
	// them as the worker. Where the worker is root, set it to an
	// unprivileged user (the worker's GRIDBATCH_MODEL_USER, nobody by
	// default), so a model can read neither the worker's environment nor
	// its files.
	User *User
}

// Runtime computes chunks of every model in a set: Go models in the
// worker, command models in their processes.
type Runtime struct {
	set   *model.Set
	log   *slog.Logger
	cfg   Config
	pools map[string]*pool
}

// New returns a Runtime for set. It starts nothing until Warm or the first
// chunk.
func New(set *model.Set, log *slog.Logger, cfg Config) *Runtime {
	cfg.Concurrency = max(cfg.Concurrency, 1)
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = time.Minute
	}
	if cfg.ExitGrace <= 0 {
		cfg.ExitGrace = 2 * time.Second
	}
	if cfg.Supervisor == "" && shimEnabled {
		if exe, err := os.Executable(); err == nil {
			cfg.Supervisor = exe
		}
	}
	r := &Runtime{set: set, log: log, cfg: cfg, pools: map[string]*pool{}}
	if cfg.User == nil || int(cfg.User.UID) == os.Geteuid() {
		// Models run as the worker's own user: only this keeps them out of
		// /proc/<worker>/environ.
		undumpable()
	}
	for _, spec := range set.Specs() {
		if !spec.Process() {
			continue
		}
		n := spec.Processes
		if n == 0 {
			n = cfg.Concurrency
		}
		pl := &pool{rt: r, spec: spec, slots: make(chan *proc, n)}
		for range n {
			pl.slots <- nil
		}
		r.pools[spec.Kind] = pl
	}
	if len(r.pools) > 0 {
		as := "the worker's own user"
		if cfg.User != nil {
			as = cfg.User.String()
		}
		log.Info("model processes run as", "user", as)
	}
	return r
}

// Compute computes a chunk of kind: a Go model in this process, a command
// model in one of its processes. chunk names the chunk in the model's
// requests and the logs.
func (r *Runtime) Compute(ctx context.Context, spec model.Spec, chunk string, c model.Cells) ([]float64, error) {
	if g, ok := r.set.Go(spec.Kind); ok {
		return g.Compute(ctx, spec, c)
	}
	pl, ok := r.pools[spec.Kind]
	if !ok {
		return nil, fmt.Errorf("%w %q", model.ErrUnknown, spec.Kind)
	}
	return pl.compute(ctx, chunk, c)
}

// Warm starts one process of every command model in the background, so a
// command that cannot start shows on /readyz before any chunk needs it.
func (r *Runtime) Warm(ctx context.Context) {
	for _, pl := range r.pools {
		go func() {
			select {
			case p := <-pl.slots:
				if p == nil {
					p, _ = pl.start(ctx) // logged by start
				}
				pl.slots <- p
			case <-ctx.Done():
			}
		}()
	}
}

// NotReady names each kind whose last start attempt failed, with why.
func (r *Runtime) NotReady() []string {
	var out []string
	for _, kind := range r.set.Kinds() {
		if pl, ok := r.pools[kind]; ok {
			if msg := pl.startProblem(); msg != "" {
				out = append(out, msg)
			}
		}
	}
	return out
}

// Starts returns how many processes of kind were started since New.
func (r *Runtime) Starts(kind string) int64 {
	if pl, ok := r.pools[kind]; ok {
		return pl.starts.Load()
	}
	return 0
}

// Close ends every model process: idle ones get end of file on their
// requests and ExitGrace to exit, then everything left is killed. Chunks
// still computing are killed at once. Close waits at most ExitGrace + 1s.
func (r *Runtime) Close() {
	var wg sync.WaitGroup
	for _, pl := range r.pools {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pl.close()
		}()
	}
	wg.Wait()
}

// pool is the processes of one kind: size slots, each nil until its process
// is started, and nil again once it is gone.
type pool struct {
	rt     *Runtime
	spec   model.Spec
	slots  chan *proc
	starts atomic.Int64

	mu       sync.Mutex
	failures int
	lastErr  string
	next     time.Time
	busy     map[*proc]struct{}
}

// ErrCannotStart marks a chunk that found its kind's processes unable to
// start. It is retried like any failure.
var ErrCannotStart = errors.New("model process cannot start")

// compute computes a chunk in one of the kind's processes. The kind's
// timeout bounds the chunk's computation: waiting for a free
// process and starting one are bounded by the task's own deadline and by
// StartTimeout, so a process that starts slowly on a loaded machine does not
// eat the chunk's time.
func (pl *pool) compute(ctx context.Context, chunk string, c model.Cells) ([]float64, error) {
	var p *proc
	select {
	case p = <-pl.slots:
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for a free %s process: %w", pl.spec.Kind, ctx.Err())
	}
	defer func() { pl.slots <- p }()
	if p != nil && !p.alive() {
		p = nil
	}
	if p == nil {
		var err error
		if p, err = pl.start(ctx); err != nil {
			return nil, err
		}
	}
	if pl.spec.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, pl.spec.Timeout)
		defer cancel()
	}
	pl.track(p, true)
	model.NoteProcess(ctx, int(p.pid.Load()))
	v, err := p.compute(ctx, chunk, c)
	pl.track(p, false)
	var ce *ComputeError
	if errors.As(err, &ce) && ce.Traceback != "" {
		pl.rt.log.Warn("model raised", "kind", pl.spec.Kind, "pid", p.pid.Load(), "chunk", chunk, "error", ce.Text, "traceback", ce.Traceback)
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		pl.rt.log.Warn("model process ended mid-chunk", "kind", pl.spec.Kind, "pid", ee.PID, "chunk", chunk, "status", ee.Status)
	}
	if !p.alive() {
		p = nil
	} else if max := pl.spec.MaxChunksPerProcess; max > 0 && p.chunks >= max {
		pl.rt.log.Info("model process replaced after its chunks", "kind", pl.spec.Kind, "pid", p.pid.Load(), "chunks", p.chunks)
		go p.close(pl.rt.cfg.ExitGrace)
		p = nil
	}
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", pl.spec.Kind, err)
	}
	return v, nil
}

// start starts a process, unless the kind's last attempts failed and the
// backoff has not run out, in which case it fails at once.
func (pl *pool) start(ctx context.Context) (*proc, error) {
	pl.mu.Lock()
	if wait := time.Until(pl.next); pl.failures > 0 && wait > 0 {
		msg := pl.lastErr
		pl.mu.Unlock()
		return nil, fmt.Errorf("%w: %s (next attempt in %s)", ErrCannotStart, msg, wait.Round(100*time.Millisecond))
	}
	pl.mu.Unlock()
	p, err := startProc(ctx, pl.spec, pl.rt.cfg.Supervisor, pl.rt.cfg.User, pl.rt.cfg.StartTimeout, pl.rt.log)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("start a %s process: %w", pl.spec.Kind, ctx.Err())
		}
		pl.failures++
		backoff := min(pl.rt.cfg.MinBackoff<<min(pl.failures-1, 20), pl.rt.cfg.MaxBackoff)
		pl.next = time.Now().Add(backoff)
		pl.lastErr = err.Error()
		pl.rt.log.Error("model process cannot start", "kind", pl.spec.Kind, "command", pl.spec.Source(), "workdir", pl.spec.Workdir,
			"error", err.Error(), "attempts", pl.failures, "next_attempt_in", backoff.String())
		return nil, fmt.Errorf("%w: %s", ErrCannotStart, err)
	}
	if pl.failures > 0 {
		pl.rt.log.Info("model process started after failed attempts", "kind", pl.spec.Kind, "failed_attempts", pl.failures)
	}
	pl.failures, pl.lastErr = 0, ""
	pl.starts.Add(1)
	pl.rt.log.Info("model process started", "kind", pl.spec.Kind, "pid", p.pid.Load(), "process_group", p.pgid)
	return p, nil
}

func (pl *pool) startProblem() string {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.failures == 0 {
		return ""
	}
	return fmt.Sprintf("model %s cannot start: %s", pl.spec.Kind, pl.lastErr)
}

func (pl *pool) track(p *proc, busy bool) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if pl.busy == nil {
		pl.busy = map[*proc]struct{}{}
	}
	if busy {
		pl.busy[p] = struct{}{}
	} else {
		delete(pl.busy, p)
	}
}

// close kills busy processes and ends idle ones.
func (pl *pool) close() {
	pl.mu.Lock()
	busy := make([]*proc, 0, len(pl.busy))
	for p := range pl.busy {
		busy = append(busy, p)
	}
	pl.mu.Unlock()
	for _, p := range busy {
		p.kill("worker stopping")
	}
	var wg sync.WaitGroup
	for {
		select {
		case p := <-pl.slots:
			if p != nil {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p.close(pl.rt.cfg.ExitGrace)
				}()
			}
			continue
		default:
		}
		break
	}
	wg.Wait()
}
