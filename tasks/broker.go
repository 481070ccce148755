package tasks

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Broker implements batch.Broker on asynq.
type Broker struct {
	client *asynq.Client
	insp   *asynq.Inspector
	rdb    redis.UniversalClient
	opts   ChunkOptions
}

// ChunkOptions are the asynq options of chunk tasks.
type ChunkOptions struct {
	// Timeout bounds one run of a chunk task. Defaults to 5m.
	Timeout time.Duration
	// MaxRetry is how many retries a chunk gets before it is archived
	// (MaxRetry+1 runs in all). Defaults to 5; the special value NoRetry
	// archives a chunk at its first failure. Retries(n) gives exactly n.
	MaxRetry int
	// KindTimeouts overrides Timeout for the chunks of a kind (a model's
	// own timeout): such a chunk gets the model's timeout plus a few
	// seconds, so the model's own bound, which kills its process, fires
	// first.
	KindTimeouts map[string]time.Duration
	// EnqueueWorkers enqueue chunk tasks in parallel. Defaults to 16: asynq
	// makes one Redis round trip (an EVALSHA) per task and has no batch
	// enqueue, so parallel round trips are what speeds a plan up. On a 2-core
	// machine with Redis on it, 16 enqueued ~33,000 tasks/s, 8 ~27,000 and
	// 32 or 64 ~28,000 (go-redis's pool is 10 connections per CPU); see
	// BENCHMARKS.md.
	EnqueueWorkers int
}

// NoRetry, as ChunkOptions.MaxRetry, archives a chunk task at its first failure.
const NoRetry = -1

// Retries returns the ChunkOptions.MaxRetry that gives exactly n retries, n
// counted as GRIDBATCH_MAX_RETRY counts them: n, or NoRetry when n is 0.
func Retries(n int) int {
	if n == 0 {
		return NoRetry
	}
	return n
}

// NewBroker returns a Broker. The caller owns and closes client, insp and rdb.
func NewBroker(client *asynq.Client, insp *asynq.Inspector, rdb redis.UniversalClient, o ChunkOptions) *Broker {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	switch {
	case o.MaxRetry == 0:
		o.MaxRetry = 5
	case o.MaxRetry < 0:
		o.MaxRetry = 0
	}
	if o.EnqueueWorkers <= 0 {
		o.EnqueueWorkers = 16
	}
	return &Broker{client: client, insp: insp, rdb: rdb, opts: o}
}

var _ batch.Broker = (*Broker)(nil)

// chunkTimeout is the asynq timeout of a chunk task of kind.
func (b *Broker) chunkTimeout(kind string) time.Duration {
	if t := b.opts.KindTimeouts[kind]; t > 0 {
		return t + 5*time.Second
	}
	return b.opts.Timeout
}

// KindTimeouts returns the model timeouts of a set, for ChunkOptions.
func KindTimeouts(set *model.Set) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, s := range set.Specs() {
		if s.Timeout > 0 {
			out[s.Kind] = s.Timeout
		}
	}
	return out
}

// EnqueueWorkers is how many goroutines EnqueueChunks enqueues with.
func (b *Broker) EnqueueWorkers() int { return b.opts.EnqueueWorkers }

// uniqueKey is asynq's unique-lock key of a task (asynq internal/base.UniqueKey);
// a test checks it against the key asynq really writes.
func uniqueKey(queue, typ string, payload []byte) string {
	sum := md5.Sum(payload)
	return "asynq:{" + queue + "}:unique:" + typ + ":" + hex.EncodeToString(sum[:])
}

func lockKey(kind string) string {
	t, _ := NewLockTask(kind)
	return uniqueKey(QueueBatch, TypeLock, t.Payload())
}

// AcquireLock implements batch.Broker.
func (b *Broker) AcquireLock(ctx context.Context, kind, batchID string, deadlineAt time.Time, ttlPastDeadline time.Duration) error {
	t, err := NewLockTask(kind)
	if err != nil {
		return err
	}
	_, err = b.client.EnqueueContext(ctx, t, asynq.Queue(QueueBatch), asynq.TaskID(batchID),
		asynq.ProcessAt(deadlineAt), asynq.Unique(ttlPastDeadline), asynq.MaxRetry(25), asynq.Timeout(10*time.Minute))
	if errors.Is(err, asynq.ErrDuplicateTask) {
		return batch.ErrLocked
	}
	return err
}

// LockHolder implements batch.Broker.
func (b *Broker) LockHolder(ctx context.Context, kind string) (string, time.Time, error) {
	key := lockKey(kind)
	id, err := b.rdb.Get(ctx, key).Result()
	if err != nil {
		return "", time.Time{}, err
	}
	ttl, err := b.rdb.PTTL(ctx, key).Result()
	if err != nil || ttl < 0 {
		return id, time.Time{}, err
	}
	return id, time.Now().Add(ttl).Truncate(time.Second), nil
}

// ReleaseLock implements batch.Broker.
func (b *Broker) ReleaseLock(ctx context.Context, batchID string) error {
	err := b.insp.DeleteTask(QueueBatch, batchID)
	if err == nil || errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return nil
	}
	if info, ierr := b.insp.GetTaskInfo(QueueBatch, batchID); ierr == nil && info.State == asynq.TaskStateActive {
		return nil // the lock task is running: it releases the lock when it returns
	}
	return err
}

// LockExists implements batch.Broker.
func (b *Broker) LockExists(ctx context.Context, batchID string) (bool, error) {
	_, err := b.insp.GetTaskInfo(QueueBatch, batchID)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return false, nil
	}
	return err == nil, err
}

// PlanTaskID is the ID of a batch's plan task.
func PlanTaskID(batchID string) string { return batchID + ":plan" }

// EnqueuePlan implements batch.Broker.
func (b *Broker) EnqueuePlan(ctx context.Context, batchID string) error {
	t, err := NewPlanTask(batchID)
	if err != nil {
		return err
	}
	_, err = b.client.EnqueueContext(ctx, t, asynq.Queue(QueueBatch), asynq.TaskID(PlanTaskID(batchID)),
		asynq.MaxRetry(25), asynq.Timeout(10*time.Minute))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// EnqueueChunks implements batch.Broker: parallel enqueues, a task ID
// conflict (the chunk is already queued or running) counts as done.
func (b *Broker) EnqueueChunks(ctx context.Context, bt store.Batch, chunks []int) error {
	next := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	base := ChunkPayload{BatchID: bt.ID, Kind: bt.Kind, Step: bt.Step, ChunkSize: bt.ChunkSize,
		BBox: [4]float64{bt.BBox.LonMin, bt.BBox.LatMin, bt.BBox.LonMax, bt.BBox.LatMax}}
	for range b.opts.EnqueueWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range next {
				p := base
				p.Chunk = c
				err := b.enqueueChunk(ctx, p, batch.ChunkTaskID(bt.ID, c))
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("chunk %d: %w", c, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, c := range chunks {
		if ctx.Err() != nil {
			break
		}
		next <- c
	}
	close(next)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

// EnqueueParts implements batch.Broker: the parts of a split chunk, each
// under its task ID (batch.PartTaskID); a task ID conflict (the part is
// already queued or running) counts as done.
func (b *Broker) EnqueueParts(ctx context.Context, bt store.Batch, parts []store.Piece) error {
	for _, pc := range parts {
		p := ChunkPayload{BatchID: bt.ID, Kind: bt.Kind, Step: bt.Step, ChunkSize: bt.ChunkSize, Chunk: pc.Chunk, Lo: pc.Lo, Hi: pc.Hi,
			BBox: [4]float64{bt.BBox.LonMin, bt.BBox.LatMin, bt.BBox.LonMax, bt.BBox.LatMax}}
		if err := b.enqueueChunk(ctx, p, batch.PartTaskID(bt.ID, pc)); err != nil {
			return fmt.Errorf("%s: %w", pc, err)
		}
	}
	return nil
}

func (b *Broker) enqueueChunk(ctx context.Context, p ChunkPayload, id string) error {
	p.EnqueuedAtUnixNano = time.Now().UnixNano()
	t, err := NewChunkTask(p)
	if err != nil {
		return err
	}
	_, err = b.client.EnqueueContext(ctx, t, asynq.Queue(QueueGrid), asynq.TaskID(id),
		asynq.MaxRetry(b.opts.MaxRetry), asynq.Timeout(b.chunkTimeout(p.Kind)))
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return nil
	}
	return err
}

// RemoveChunks implements batch.Broker: queued tasks are deleted; running
// ones are cancelled, and deleted once they are back in the retry set.
func (b *Broker) RemoveChunks(ctx context.Context, batchID string, pieces []store.Piece) error {
	var active []string
	var firstErr error
	for _, c := range pieces {
		id := batch.PartTaskID(batchID, c)
		err := b.insp.DeleteTask(QueueGrid, id)
		switch {
		case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		default:
			if info, ierr := b.insp.GetTaskInfo(QueueGrid, id); ierr == nil && info.State == asynq.TaskStateActive {
				active = append(active, id)
				_ = b.insp.CancelProcessing(id)
			} else if firstErr == nil {
				firstErr = err
			}
		}
	}
	// A cancelled handler stops within milliseconds and asynq moves its task
	// to retry; delete it there. Bounded: at most 10 s.
	for deadline := time.Now().Add(10 * time.Second); len(active) > 0 && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		left := active[:0]
		for _, id := range active {
			err := b.insp.DeleteTask(QueueGrid, id)
			if err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
				left = append(left, id)
			}
		}
		active = left
	}
	if len(active) > 0 && firstErr == nil {
		firstErr = fmt.Errorf("%d chunk tasks still active after cancel; they will find the batch ended and do nothing", len(active))
	}
	return firstErr
}

func dbErrorsKey(batchID string) string { return "gridbatch:batch:" + batchID + ":db_errors" }

// CountDBError implements batch.Broker.
func (b *Broker) CountDBError(ctx context.Context, batchID string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	key := dbErrorsKey(batchID)
	pipe := b.rdb.TxPipeline()
	pipe.Incr(ctx, key)
	pipe.Expire(ctx, key, 30*24*time.Hour)
	_, _ = pipe.Exec(ctx)
}

// DBErrors implements batch.Broker.
func (b *Broker) DBErrors(ctx context.Context, batchID string) int64 {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	n, _ := b.rdb.Get(ctx, dbErrorsKey(batchID)).Int64()
	return n
}

var _ dlq.Tasks = (*Broker)(nil)

// DescribeTask implements dlq.Tasks: a chunk task names its batch, chunk
// and requeue generation in its payload or, when that cannot be decoded, its
// batch and chunk in its ID. Other tasks name no chunk.
func (b *Broker) DescribeTask(typ, taskID string, payload []byte) dlq.Subject {
	if typ != TypeChunk {
		return dlq.Subject{}
	}
	if p, err := DecodeChunk(payload); err == nil {
		sub := dlq.Subject{BatchID: p.BatchID, Chunk: p.Chunk, Lo: p.Lo, Hi: p.Hi, IsChunk: true, Generation: max(p.Requeue, 0)}
		if ids := p.cells(); len(ids) == 1 {
			sub.GridID = &ids[0]
		}
		return sub
	}
	if bid, chunk, ok := batch.ParseChunkTaskID(taskID); ok {
		return dlq.Subject{BatchID: bid, Chunk: chunk, IsChunk: true}
	}
	return dlq.Subject{}
}

// ChunkTask implements dlq.Tasks: the task of a chunk, or of a part of a
// split one (a cell's dead letter recomputes that cell alone), with requeue
// generation gen, under its task ID, with this broker's max retry and
// timeout.
func (b *Broker) ChunkTask(bt store.Batch, pc store.Piece, gen int) (*asynq.Task, []asynq.Option, error) {
	t, err := NewChunkTask(ChunkPayload{BatchID: bt.ID, Kind: bt.Kind, Chunk: pc.Chunk, Lo: pc.Lo, Hi: pc.Hi, Step: bt.Step, ChunkSize: bt.ChunkSize,
		BBox: [4]float64{bt.BBox.LonMin, bt.BBox.LatMin, bt.BBox.LonMax, bt.BBox.LatMax}, Requeue: gen,
		EnqueuedAtUnixNano: time.Now().UnixNano()})
	if err != nil {
		return nil, nil, err
	}
	return t, []asynq.Option{asynq.Queue(QueueGrid), asynq.TaskID(batch.PartTaskID(bt.ID, pc)),
		asynq.MaxRetry(b.opts.MaxRetry), asynq.Timeout(b.opts.Timeout)}, nil
}
