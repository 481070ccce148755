package dlq

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// asynq's Redis keys (asynq/internal/base). A queue's keys share the hash
// tag {queue}, so the scripts below also work on Redis Cluster.
func queuePrefix(q string) string { return "asynq:{" + q + "}:" }
func taskKey(q, id string) string { return queuePrefix(q) + "t:" + id }
func archivedKey(q string) string { return queuePrefix(q) + "archived" }
func activeKey(q string) string   { return queuePrefix(q) + "active" }
func leaseKey(q string) string    { return queuePrefix(q) + "lease" }
func retryKey(q string) string    { return queuePrefix(q) + "retry" }
func processedKey(q string, t time.Time) string {
	return queuePrefix(q) + "processed:" + t.UTC().Format("2006-01-02")
}
func failedKey(q string, t time.Time) string {
	return queuePrefix(q) + "failed:" + t.UTC().Format("2006-01-02")
}

// archivedTask is a task read from a queue's archive.
type archivedTask struct {
	queue      string
	msg        taskMsg
	archivedAt time.Time // the archive's score: when it was archived
}

// archivedSince returns the IDs and scores of a queue's archive with score at
// least from ("-inf" for all), oldest first, in one atomic read.
func (s *Service) archivedSince(ctx context.Context, q, from string) ([]redis.Z, error) {
	return s.rdb.ZRangeByScoreWithScores(ctx, archivedKey(q), &redis.ZRangeBy{Min: from, Max: "+inf"}).Result()
}

// readArchived reads the messages of archived tasks in one pipelined round
// trip. A task no longer archived by the time it is read (requeued, deleted,
// trimmed, run again from asynqmon) is left out; so is one whose message
// cannot be decoded, which is logged.
func (s *Service) readArchived(ctx context.Context, q string, zs []redis.Z) ([]archivedTask, error) {
	cmds := make([]*redis.SliceCmd, len(zs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range zs {
			cmds[i] = p.HMGet(ctx, taskKey(q, z.Member.(string)), "msg", "state")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read archived tasks of queue %s: %w", q, err)
	}
	out := make([]archivedTask, 0, len(zs))
	for i, c := range cmds {
		v := c.Val()
		raw, _ := v[0].(string)
		state, _ := v[1].(string)
		if raw == "" || state != "archived" {
			continue
		}
		m, err := decodeTaskMsg([]byte(raw))
		if err != nil {
			s.log.Error("an archived task's message cannot be decoded; it is not recorded", "queue", q,
				"task_id", zs[i].Member, "error", err)
			continue
		}
		out = append(out, archivedTask{queue: q, msg: m, archivedAt: time.Unix(int64(zs[i].Score), 0)})
	}
	return out, nil
}

// deleteArchivedCmd deletes a task only if it is archived, as asynq's
// deleteTaskCmd does for that state (ZREM from the archive, the unique lock
// if the task holds it, the task's hash).
//
// KEYS[1] -> asynq:{<qname>}:t:<task_id>
// KEYS[2] -> asynq:{<qname>}:archived
// ARGV[1] -> task ID
// Returns 1 when deleted, 0 when there is no such task, -1 when the task is
// in another state (which it returns as a second value).
var deleteArchivedCmd = redis.NewScript(`
local state = redis.call("HGET", KEYS[1], "state")
if not state then
	return {0, ""}
end
if state ~= "archived" then
	return {-1, state}
end
redis.call("ZREM", KEYS[2], ARGV[1])
local unique_key = redis.call("HGET", KEYS[1], "unique_key")
if unique_key and unique_key ~= "" and redis.call("GET", unique_key) == ARGV[1] then
	redis.call("DEL", unique_key)
end
redis.call("DEL", KEYS[1])
return {1, "archived"}
`)

// deleteArchived deletes the archived copy of a task. It reports whether
// there was one; a task in another state (pending, active, retry: it runs
// again already) is left alone and its state returned.
func (s *Service) deleteArchived(ctx context.Context, q, id string) (deleted bool, otherState string, err error) {
	res, err := deleteArchivedCmd.Run(ctx, s.rdb, []string{taskKey(q, id), archivedKey(q)}, id).Slice()
	if err != nil {
		return false, "", fmt.Errorf("delete the archived copy of %s: %w", id, err)
	}
	n, _ := res[0].(int64)
	state, _ := res[1].(string)
	if n < 0 {
		return false, state, nil
	}
	return n == 1, "", nil
}
