package dlq

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// asynq's archive limits (asynq/internal/rdb: maxArchiveSize,
// archivedExpirationInDays), which an orphan archived here obeys too.
const (
	archiveMaxSize = 10000
	archiveMaxAge  = 90 * 24 * time.Hour
	statsTTL       = 90 * 24 * time.Hour
)

// orphanKind is why a task in a queue's active list is suspect.
type orphanKind string

const (
	// leaseless: in the active list with no entry in the lease set. asynq's
	// dequeue script writes both at once and every script that takes a task
	// out of active removes both, so no running task is ever seen like this;
	// only lost or evicted lease entries and half-applied scripts leave it
	// (hibiken/asynq#1144), and asynq's recoverer, which reads only the lease
	// set, never retries it.
	leaseless orphanKind = "leaseless"
	// stale: a lease expired more than StaleLease ago, which asynq's
	// recoverer (every minute, 30 s after expiry) has not retried.
	stale orphanKind = "stale"
)

// OrphanStats is what RecoverOrphans did.
type OrphanStats struct {
	// Suspects counts the orphans seen this pass.
	Suspects int
	// Retried and Archived count the orphans moved back to be retried, or
	// to the archive when they had no retry left.
	Retried, Archived int
	// Cleaned counts stray entries removed: an active or lease entry of a
	// task that is gone or in another state.
	Cleaned int
}

// recoverOrphanCmd moves an orphaned active task to the retry set (or the
// archive when it has no retry left), mirroring asynq's retryCmd and
// archiveCmd (asynq/internal/rdb/rdb.go): the task's message is replaced by
// the caller's (Retried+1 for a retry, the error and failure time), the daily
// and total processed/failed counters move, and the archive is trimmed as
// asynq trims it. It first checks, atomically, that the task is still the
// orphan the caller saw: active, with the message the caller read, and still
// leaseless (or its lease still expired before the cutoff).
//
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:active
// KEYS[3] -> asynq:{<qname>}:lease
// KEYS[4] -> asynq:{<qname>}:retry
// KEYS[5] -> asynq:{<qname>}:archived
// KEYS[6] -> asynq:{<qname>}:processed:<yyyy-mm-dd>
// KEYS[7] -> asynq:{<qname>}:failed:<yyyy-mm-dd>
// KEYS[8] -> asynq:{<qname>}:processed
// KEYS[9] -> asynq:{<qname>}:failed
// ARGV[1] -> task ID
// ARGV[2] -> the task message the caller read
// ARGV[3] -> the updated task message
// ARGV[4] -> "leaseless" or "stale"
// ARGV[5] -> for "stale": the lease cutoff, Unix seconds
// ARGV[6] -> "retry" or "archive"
// ARGV[7] -> retry_at or died_at, Unix seconds
// ARGV[8] -> archive cutoff (90 days ago), Unix seconds
// ARGV[9] -> max number of tasks in the archive
// ARGV[10] -> stats expiration, Unix seconds
// ARGV[11] -> max int64 value
// ARGV[12] -> task key prefix, asynq:{<qname>}:t:
// Returns 1 when moved, 0 when the task is no longer that orphan.
var recoverOrphanCmd = redis.NewScript(`
if redis.call("HGET", KEYS[1], "state") ~= "active" then
	return 0
end
if redis.call("HGET", KEYS[1], "msg") ~= ARGV[2] then
	return 0
end
local score = redis.call("ZSCORE", KEYS[3], ARGV[1])
if ARGV[4] == "leaseless" then
	if score then
		return 0
	end
	if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
		return 0
	end
else
	if not score or tonumber(score) > tonumber(ARGV[5]) then
		return 0
	end
	redis.call("LREM", KEYS[2], 0, ARGV[1])
	redis.call("ZREM", KEYS[3], ARGV[1])
end
if ARGV[6] == "retry" then
	redis.call("ZADD", KEYS[4], ARGV[7], ARGV[1])
	redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "retry")
else
	redis.call("ZADD", KEYS[5], ARGV[7], ARGV[1])
	local old = redis.call("ZRANGE", KEYS[5], "-inf", ARGV[8], "BYSCORE")
	if #old > 0 then
		for _, id in ipairs(old) do
			redis.call("DEL", ARGV[12] .. id)
		end
		redis.call("ZREM", KEYS[5], unpack(old))
	end
	local extra = redis.call("ZRANGE", KEYS[5], 0, -ARGV[9])
	if #extra > 0 then
		for _, id in ipairs(extra) do
			redis.call("DEL", ARGV[12] .. id)
		end
		redis.call("ZREM", KEYS[5], unpack(extra))
	end
	redis.call("HSET", KEYS[1], "msg", ARGV[3], "state", "archived")
end
local n = redis.call("INCR", KEYS[6])
if tonumber(n) == 1 then
	redis.call("EXPIREAT", KEYS[6], ARGV[10])
end
local m = redis.call("INCR", KEYS[7])
if tonumber(m) == 1 then
	redis.call("EXPIREAT", KEYS[7], ARGV[10])
end
local total = redis.call("GET", KEYS[8])
if tonumber(total) == tonumber(ARGV[11]) then
	redis.call("SET", KEYS[8], 1)
	redis.call("SET", KEYS[9], 1)
else
	redis.call("INCR", KEYS[8])
	redis.call("INCR", KEYS[9])
end
return 1
`)

// cleanStrayCmd removes the active or lease entry of a task that is not
// active any more (its hash is gone, or says another state): a leaseless
// active entry, or a lease expired before the cutoff (with the active entry
// too when the task is gone).
//
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:active
// KEYS[3] -> asynq:{<qname>}:lease
// ARGV[1] -> task ID
// ARGV[2] -> "leaseless" or "stale"
// ARGV[3] -> for "stale": the lease cutoff, Unix seconds
// Returns how many entries it removed.
var cleanStrayCmd = redis.NewScript(`
local state = redis.call("HGET", KEYS[1], "state")
if state == "active" then
	return 0
end
local score = redis.call("ZSCORE", KEYS[3], ARGV[1])
if ARGV[2] == "leaseless" then
	if score then
		return 0
	end
	return redis.call("LREM", KEYS[2], 0, ARGV[1])
end
if not score or tonumber(score) > tonumber(ARGV[3]) then
	return 0
end
local n = 0
if not state then
	n = redis.call("LREM", KEYS[2], 0, ARGV[1])
end
return n + redis.call("ZREM", KEYS[3], ARGV[1])
`)

// RecoverOrphans finds tasks stuck in the active lists of the configured
// queues — with no lease (hibiken/asynq#1144), or with a lease expired more
// than StaleLease ago — and moves those seen so on this pass and the last
// back to be retried (Retried+1, as asynq's recoverer does for an expired
// lease), or to the archive when they have no retry left (the next sweep
// records them). Requiring two consecutive passes keeps it off any task in a
// transient state; each move re-checks atomically that the task is still
// that orphan. Stray entries of tasks that are gone are removed.
func (s *Service) RecoverOrphans(ctx context.Context) (OrphanStats, error) {
	var st OrphanStats
	now := time.Now()
	found := map[string]orphanKind{}
	var errs []error
	for _, q := range s.cfg.Queues {
		var active *redis.StringSliceCmd
		var leases *redis.ZSliceCmd
		_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			active = p.LRange(ctx, activeKey(q), 0, -1)
			leases = p.ZRangeWithScores(ctx, leaseKey(q), 0, -1)
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("read the active tasks of queue %s: %w", q, err))
			continue
		}
		leased := make(map[string]float64, len(leases.Val()))
		cutoff := float64(now.Add(-s.cfg.StaleLease).Unix())
		for _, z := range leases.Val() {
			id := z.Member.(string)
			leased[id] = z.Score
			if z.Score <= cutoff {
				found[q+"\x00"+id] = stale
			}
		}
		for _, id := range active.Val() {
			if _, ok := leased[id]; !ok {
				found[q+"\x00"+id] = leaseless
			}
		}
	}
	s.mu.Lock()
	prev := s.suspects
	s.suspects = found
	s.mu.Unlock()
	st.Suspects = len(found)
	for key, kind := range found {
		if prev[key] != kind {
			continue // first seen: wait for the next pass
		}
		if err := ctx.Err(); err != nil {
			return st, err
		}
		q, id, _ := strings.Cut(key, "\x00")
		if err := s.recoverOrphan(ctx, q, id, kind, now, &st); err != nil {
			errs = append(errs, err)
		}
	}
	return st, errors.Join(errs...)
}

func (s *Service) recoverOrphan(ctx context.Context, q, id string, kind orphanKind, now time.Time, st *OrphanStats) error {
	cutoff := now.Add(-s.cfg.StaleLease).Unix()
	vals, err := s.rdb.HMGet(ctx, taskKey(q, id), "msg", "state").Result()
	if err != nil {
		return fmt.Errorf("read orphan %s of queue %s: %w", id, q, err)
	}
	raw, _ := vals[0].(string)
	state, _ := vals[1].(string)
	if state != "active" || raw == "" {
		n, err := cleanStrayCmd.Run(ctx, s.rdb, []string{taskKey(q, id), activeKey(q), leaseKey(q)}, id, string(kind), cutoff).Int()
		if err != nil {
			return fmt.Errorf("remove the stray entries of %s in queue %s: %w", id, q, err)
		}
		if n > 0 {
			st.Cleaned++
			s.log.Warn("removed stray active/lease entries of a task that is no longer active", "queue", q, "task_id", id,
				"kind", string(kind), "state", state)
		}
		return nil
	}
	m, err := decodeTaskMsg([]byte(raw))
	if err != nil {
		return fmt.Errorf("orphan %s of queue %s: %w", id, q, err)
	}
	reason := "gridbatch: task was active with no lease (orphaned, hibiken/asynq#1144); recovered by the reconciler"
	if kind == stale {
		reason = "asynq: task lease expired (recovered by gridbatch's reconciler: asynq's recoverer had not)"
	}
	target, retried := "retry", m.Retried+1
	if m.Retried >= m.Retry {
		target, retried = "archive", m.Retried // asynq's Archive does not count a retry
	}
	updated, err := failTaskMsg([]byte(raw), retried, reason, now.Unix())
	if err != nil {
		return fmt.Errorf("orphan %s of queue %s: %w", id, q, err)
	}
	keys := []string{taskKey(q, id), activeKey(q), leaseKey(q), retryKey(q), archivedKey(q),
		processedKey(q, now), failedKey(q, now), queuePrefix(q) + "processed", queuePrefix(q) + "failed"}
	args := []any{id, raw, updated, string(kind), cutoff, target, now.Unix(), now.Add(-archiveMaxAge).Unix(),
		archiveMaxSize, now.Add(statsTTL).Unix(), int64(math.MaxInt64), queuePrefix(q) + "t:"}
	n, err := recoverOrphanCmd.Run(ctx, s.rdb, keys, args...).Int()
	if err != nil {
		return fmt.Errorf("recover orphan %s of queue %s: %w", id, q, err)
	}
	if n == 0 {
		return nil // it moved on by itself between the read and the script
	}
	attrs := []any{"queue", q, "task_id", id, "type", m.Type, "kind", string(kind), "retried", retried, "max_retry", m.Retry}
	if sub := s.tasks.DescribeTask(m.Type, id, m.Payload); sub.BatchID != "" {
		attrs = append(attrs, "batch_id", sub.BatchID, "chunk", sub.Chunk)
	}
	if target == "retry" {
		st.Retried++
		s.log.Warn("recovered an orphaned active task: moved back to be retried", attrs...)
	} else {
		st.Archived++
		s.log.Warn("recovered an orphaned active task with no retry left: archived (the sweep records it)", attrs...)
	}
	return nil
}
