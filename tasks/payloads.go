package tasks

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
)

// Task types.
const (
	// TypeChunk computes one chunk of a batch's cells. Queue grid.
	TypeChunk = "grid:chunk"
	// TypePlan writes a batch's chunk rows and enqueues its chunk tasks. Queue batch.
	TypePlan = "batch:plan"
	// TypeLock is a batch's lock: unique per kind, scheduled at the batch's
	// deadline. While it waits the kind is locked; it is deleted when the
	// batch ends, or runs at the deadline and ends the batch timed_out.
	TypeLock = "batch:lock"
)

// ErrBadPayload wraps every payload decoding error; it also wraps
// asynq.SkipRetry, so a task that cannot be decoded is never retried.
var ErrBadPayload = errors.New("bad payload")

// ChunkPayload is the payload of a TypeChunk task. Fields are only ever added.
type ChunkPayload struct {
	BatchID   string     `json:"batch_id"`
	Kind      string     `json:"kind"`
	Chunk     int        `json:"chunk"`
	Step      float64    `json:"step"`
	BBox      [4]float64 `json:"bbox"` // lon_min, lat_min, lon_max, lat_max
	ChunkSize int        `json:"chunk_size"`
	// Lo and Hi are the cells [Lo, Hi) of the chunk, in its row-major
	// order, that the task runs when it is a part of a split chunk; left
	// out (0 and 0) for the whole chunk (store.Piece). Its task ID is then
	// batch.PartTaskID(batch, piece).
	Lo int `json:"lo,omitempty"`
	Hi int `json:"hi,omitempty"`
	// Requeue is the requeue generation: 0 (left out) as first enqueued, n
	// for the task 'enqueuer dlq requeue' enqueued the n-th time. The task
	// ID stays batch.ChunkTaskID(batch, chunk); a requeued chunk may write
	// into an ended batch and heal it.
	Requeue int `json:"requeue,omitempty"`
	// EnqueuedAtUnixNano is when the task was handed to asynq (Unix
	// nanoseconds, the enqueuing process's clock); 0 (left out) when unknown,
	// as in tasks enqueued before the field existed. The worker logs each
	// chunk task's first start against it (start_latency_seconds, debug level).
	EnqueuedAtUnixNano int64 `json:"enqueued_at_unix_nano,omitempty"`
}

// NewChunkTask returns the chunk task; its ID must be set with
// asynq.TaskID(batch.ChunkTaskID(...)) by the caller.
func NewChunkTask(p ChunkPayload, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode chunk payload: %w", err)
	}
	return asynq.NewTask(TypeChunk, b, opts...), nil
}

// DecodeChunk decodes and validates a chunk payload.
func DecodeChunk(data []byte) (ChunkPayload, error) {
	var p ChunkPayload
	if err := json.Unmarshal(data, &p); err != nil {
		return p, badPayload(TypeChunk, "%v", err)
	}
	switch {
	case p.BatchID == "":
		return p, badPayload(TypeChunk, "batch_id is empty")
	case len(p.BatchID) > 100:
		return p, badPayload(TypeChunk, "batch_id of %d bytes is not a batch's", len(p.BatchID))
	case p.Kind == "":
		return p, badPayload(TypeChunk, "kind is empty")
	case p.Chunk < 0:
		return p, badPayload(TypeChunk, "chunk %d is negative", p.Chunk)
	case p.ChunkSize < 1 || p.ChunkSize > grid.MaxChunkSize:
		return p, badPayload(TypeChunk, "chunk_size %d must be between 1 and %d", p.ChunkSize, grid.MaxChunkSize)
	case (p.Lo != 0 || p.Hi != 0) && (p.Lo < 0 || p.Hi <= p.Lo || p.Hi > p.ChunkSize):
		return p, badPayload(TypeChunk, "cells %d-%d are not a part of a chunk of %d cells", p.Lo, p.Hi, p.ChunkSize)
	case math.IsNaN(p.Step) || p.Step <= 0:
		return p, badPayload(TypeChunk, "step %v must be positive", p.Step)
	}
	if err := p.bbox().Validate(); err != nil {
		return p, badPayload(TypeChunk, "%v", err)
	}
	return p, nil
}

func (p ChunkPayload) bbox() grid.BBox {
	return grid.BBox{LonMin: p.BBox[0], LatMin: p.BBox[1], LonMax: p.BBox[2], LatMax: p.BBox[3]}
}

// Chunk converts the payload to the orchestration's chunk.
func (p ChunkPayload) chunk(taskID string, retried int) batch.Chunk {
	return batch.Chunk{BatchID: p.BatchID, TaskID: taskID, Kind: p.Kind, Index: p.Chunk, Step: p.Step,
		BBox: p.bbox(), ChunkSize: p.ChunkSize, Lo: p.Lo, Hi: p.Hi, Retried: retried, Requeue: p.Requeue}
}

// cells returns the grid IDs of the cells the task runs; nil when the
// payload names none.
func (p ChunkPayload) cells() []int64 {
	ids, _, err := p.chunk("", 0).Cells()
	if err != nil {
		return nil
	}
	return ids
}

// PlanPayload is the payload of a TypePlan task.
type PlanPayload struct {
	BatchID string `json:"batch_id"`
}

// NewPlanTask returns the plan task of a batch.
func NewPlanTask(batchID string, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(PlanPayload{BatchID: batchID})
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypePlan, b, opts...), nil
}

// DecodePlan decodes and validates a plan payload.
func DecodePlan(data []byte) (PlanPayload, error) {
	var p PlanPayload
	if err := json.Unmarshal(data, &p); err != nil {
		return p, badPayload(TypePlan, "%v", err)
	}
	if p.BatchID == "" {
		return p, badPayload(TypePlan, "batch_id is empty")
	}
	return p, nil
}

// LockPayload is the payload of a TypeLock task. It holds only the kind, so
// that asynq's unique key (queue, type, payload checksum) is one per kind;
// the batch is the task's ID.
type LockPayload struct {
	Kind string `json:"kind"`
}

// NewLockTask returns the lock task of a kind.
func NewLockTask(kind string, opts ...asynq.Option) (*asynq.Task, error) {
	b, err := json.Marshal(LockPayload{Kind: kind})
	if err != nil {
		return nil, err
	}
	return asynq.NewTask(TypeLock, b, opts...), nil
}

// DecodeLock decodes and validates a lock payload.
func DecodeLock(data []byte) (LockPayload, error) {
	var p LockPayload
	if err := json.Unmarshal(data, &p); err != nil {
		return p, badPayload(TypeLock, "%v", err)
	}
	if p.Kind == "" {
		return p, badPayload(TypeLock, "kind is empty")
	}
	return p, nil
}

func badPayload(typ, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s: %w", ErrBadPayload, typ, fmt.Sprintf(format, args...), asynq.SkipRetry)
}
