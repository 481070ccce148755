// Package lease is leadership among replicas through a Redis key with a
// TTL: the scheduler's leader, and the one worker that runs the reconciler.
package lease

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// renewScript extends the lease only when this holder still has it.
var renewScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0`)

// releaseScript deletes the lease only when this holder still has it.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// Lease is leadership among replicas: a Redis key holding the leader's ID
// with a TTL. The holder renews it every TTL/3 (Run, or Step called that
// often); the others try to take it as often, so a dead leader is replaced
// within about 1⅓ TTL.
// A holder counts itself leader only until 90% of the TTL after its last
// successful renewal began, so two replicas never both believe they lead
// (barring clock-rate drift beyond 10%).
type Lease struct {
	rdb  redis.UniversalClient
	key  string
	id   string
	ttl  time.Duration
	log  *slog.Logger
	msgs Messages

	mu      sync.Mutex
	until   time.Time // leader until then; zero when not
	holder  string    // the last holder seen, for logs
	changed chan struct{}
	// stepped is when the last attempt ended (unix ns), for liveness.
	stepped atomic.Int64
	// gate, when set, may forbid leading (see SetGate); gated records that
	// it did at the last attempt.
	gate  func() error
	gated bool
}

// SetGate makes every attempt ask gate first: while it returns an error,
// this replica gives the lease up (when it holds it) and does not take it,
// so a standby leads. Call it before Run.
func (l *Lease) SetGate(gate func() error) { l.gate = gate }

// Messages are the lines a Lease logs when this replica starts leading and
// when it finds another one leading, e.g. "leading: this scheduler fires
// the ticks" and "standing by: another scheduler leads".
type Messages struct {
	Leading, StandingBy string
}

// New returns a lease on key for the replica id.
func New(rdb redis.UniversalClient, key, id string, ttl time.Duration, log *slog.Logger, msgs Messages) *Lease {
	msgs.Leading = cmp.Or(msgs.Leading, "leading")
	msgs.StandingBy = cmp.Or(msgs.StandingBy, "standing by: another replica leads")
	l := &Lease{rdb: rdb, key: key, id: id, ttl: ttl, log: log, msgs: msgs, changed: make(chan struct{}, 1)}
	l.stepped.Store(time.Now().UnixNano())
	return l
}

// SteppedAt is when the last attempt to take or renew the lease ended (or
// the lease was made, before the first).
func (l *Lease) SteppedAt() time.Time { return time.Unix(0, l.stepped.Load()) }

// Held reports whether this replica leads now.
func (l *Lease) Held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.until)
}

// Changed receives a value after leadership was gained or lost.
func (l *Lease) Changed() <-chan struct{} { return l.changed }

// Run keeps trying to take the lease, and renewing it once held, until ctx
// ends. It does not release the lease; call Release.
func (l *Lease) Run(ctx context.Context) {
	every := l.ttl / 3
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.Step(ctx)
		wait := every
		if l.Held() {
			// Leadership lapses at until; wake then at the latest.
			l.mu.Lock()
			wait = min(wait, max(time.Until(l.until), time.Millisecond))
			l.mu.Unlock()
		}
		t.Reset(wait)
	}
}

// Step makes one attempt: renew the lease when this replica holds it,
// otherwise take it when it is free.
func (l *Lease) Step(ctx context.Context) {
	defer func() { l.stepped.Store(time.Now().UnixNano()) }()
	wasHeld := l.Held()
	ctx, cancel := context.WithTimeout(ctx, l.ttl/3)
	defer cancel()
	if l.gate != nil {
		if err := l.gate(); err != nil {
			if !l.gated {
				l.log.Error("not fit to lead: giving the leader lease up so a standby leads", "instance", l.id, "reason", err.Error())
			}
			l.gated = true
			if err := l.Release(ctx); err != nil {
				l.log.Warn("release the leader lease; it expires by its TTL", "error", err)
			}
			l.settle(wasHeld)
			return
		}
		if l.gated {
			l.log.Info("fit to lead again", "instance", l.id)
		}
		l.gated = false
	}
	start := time.Now()
	renewed, err := renewScript.Run(ctx, l.rdb, []string{l.key}, l.id, l.ttl.Milliseconds()).Int()
	ok := err == nil && renewed == 1
	if err == nil && !ok {
		ok, err = l.rdb.SetNX(ctx, l.key, l.id, l.ttl).Result()
	}
	if err != nil {
		if ctx.Err() == nil || wasHeld {
			l.log.Warn("leader lease: Redis error; retrying", "key", l.key, "error", err, "leader", wasHeld)
		}
		l.settle(wasHeld)
		return
	}
	l.mu.Lock()
	if ok {
		l.until = start.Add(l.ttl * 9 / 10)
	} else {
		l.until = time.Time{}
	}
	l.mu.Unlock()
	if ok {
		l.setHolder(l.id)
	} else if holder, err := l.rdb.Get(ctx, l.key).Result(); err == nil {
		l.setHolder(holder)
	}
	l.settle(wasHeld)
}

// settle logs and signals a change of leadership.
func (l *Lease) settle(wasHeld bool) {
	held := l.Held()
	if held == wasHeld {
		return
	}
	if held {
		l.log.Info(l.msgs.Leading, "instance", l.id, "lease_ttl", l.ttl.String())
	} else {
		l.log.Warn("no longer leading: the lease was lost or could not be renewed", "instance", l.id)
	}
	select {
	case l.changed <- struct{}{}:
	default:
	}
}

func (l *Lease) setHolder(h string) {
	l.mu.Lock()
	prev := l.holder
	l.holder = h
	l.mu.Unlock()
	if h != prev && h != l.id {
		l.log.Info(l.msgs.StandingBy, "instance", l.id, "leader", h)
	}
}

// Release gives the lease up when this replica holds it, so a standby takes
// over at once rather than after the TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	wasHeld := time.Now().Before(l.until)
	l.until = time.Time{}
	l.mu.Unlock()
	err := releaseScript.Run(ctx, l.rdb, []string{l.key}, l.id).Err()
	if wasHeld && err == nil {
		l.log.Info("lease released", "instance", l.id)
	}
	return err
}
