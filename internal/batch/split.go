package batch

import (
	"context"
	"fmt"
	"time"

	"github.com/gridbatch/gridbatch/internal/store"
)

// Splitting a chunk around its failing cells.
//
// A chunk that keeps failing in a way its cells may cause (Classify) is not
// dead-lettered whole: it is split in two halves, cells [lo, mid) and
// [mid, hi) of its row-major order (store.Piece), that run as chunk tasks of
// their own, recursively, until the failing cells stand alone; only those
// are dead-lettered, one dead letter per cell, naming it.
//
//   - A half is identified by (batch, chunk, lo, hi): its task ID is
//     ChunkTaskID(batch, chunk) + ":lo-hi" (PartTaskID) and its chunk_runs
//     row is keyed by the same, so a duplicate delivery of the split, or of
//     the half, never doubles anything: the split is recorded once
//     (store.SplitChunk: the piece pending → split with its halves' rows,
//     in one transaction), an enqueue of a half already queued is a no-op,
//     and a half's rows are written once (WriteChunk locks its row).
//   - The split task itself ends without error: its halves carry its
//     cells. A half starts with a fresh asynq retry count; Attempt.Part
//     makes Classify split it (or dead-letter it, one cell) at its first
//     failure of the cells' kind, so the retry ladder runs once, at the top.
//   - The batch ends when no piece is pending, counted in cells
//     (store.Transition), whatever the splitting; its figures count cells
//     over the pieces that are not split (gridbatch_chunk_counts).
//   - Splitting ends with the batch: at its deadline the pieces still
//     pending are timed out and their tasks removed, like whole chunks. A
//     hanging cell costs two timeouts of the whole chunk, then one per
//     level (log2 of the chunk size: 9 for 500 cells), 11 timeouts in all.

// PartTaskID is the asynq task ID of a piece of a chunk: the chunk's own
// (ChunkTaskID) for the whole chunk, with ":lo-hi" for a part of a split
// one.
func PartTaskID(batchID string, p store.Piece) string {
	if p.Whole() {
		return ChunkTaskID(batchID, p.Chunk)
	}
	return fmt.Sprintf("%s:%d-%d", ChunkTaskID(batchID, p.Chunk), p.Lo, p.Hi)
}

// ChunkFailed decides what becomes of a chunk run that failed with err
// (Classify, with the run's retry counts and the chunk's cells) and carries
// out a split: the halves are recorded and enqueued. It returns the
// verdict, and the error to hand back to the queue: nil for a split (the
// task is done), err wrapping ErrPermanent for a dead letter, err for a
// retry. The returned error names the kind of failure first ("exception:
// ValueError: …", see Failure) when its cells may be its cause.
func (s *Service) ChunkFailed(ctx context.Context, c Chunk, maxRetry int, err error) (Outcome, error) {
	ids, _, cerr := c.Cells()
	a := Attempt{Retried: c.Retried, MaxRetry: maxRetry, Cells: len(ids), Part: !c.Piece().Whole()}
	if cerr != nil {
		a.Cells = 0
	}
	if kind := Failure(err); kind != "" {
		err = fmt.Errorf("%s: %w", kind, err)
	}
	out := Classify(err, a)
	switch out {
	case DeadLetter:
		return out, fmt.Errorf("%w: %w", err, ErrPermanent)
	case Split:
		ended, serr := s.split(context.WithoutCancel(ctx), c, len(ids), err)
		switch {
		case serr != nil: // not recorded: retried as it is (a split is idempotent)
			return Retry, fmt.Errorf("%w (and split it: %w)", err, serr)
		case ended && c.Requeue > 0: // a requeued dead letter of an ended batch fails again
			return DeadLetter, fmt.Errorf("%w: %w", err, ErrPermanent)
		}
		return out, nil
	}
	return out, err
}

// split records c split in halves and enqueues them. It does nothing and
// reports ended when the batch has ended: a requeued dead letter of an ended
// batch is not split but dead-lettered again.
func (s *Service) split(ctx context.Context, c Chunk, cells int, cause error) (ended bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	halves := c.Piece().Halves(cells)
	t, parts, err := s.store.SplitChunk(ctx, store.ChunkOutcome{
		BatchID: c.BatchID, Chunk: c.Index, Lo: c.Lo, Hi: c.Hi, Attempts: c.Retried + 1, Worker: s.cfg.Worker, Error: cause.Error(),
	}, halves)
	if err != nil {
		return false, err
	}
	if !t.BatchRunning {
		s.log.Info("batch already ended; failed chunk not split", "batch_id", c.BatchID, "chunk", c.Index, "task_id", c.TaskID)
		return true, nil
	}
	if len(parts) > 0 {
		b, err := s.store.GetBatch(ctx, c.BatchID)
		if err != nil {
			return false, err
		}
		if err := s.broker.EnqueueParts(ctx, b, parts); err != nil {
			return false, fmt.Errorf("enqueue the halves: %w", err)
		}
	}
	s.log.Warn("chunk failed; split in halves", "batch_id", c.BatchID, "chunk", c.Index, "task_id", c.TaskID,
		"cells", cells, "halves", fmt.Sprintf("%d-%d, %d-%d", halves[0].Lo, halves[0].Hi, halves[1].Lo, halves[1].Hi),
		"retried", c.Retried, "error", cause.Error())
	if t.Changed && c.Piece().Whole() {
		s.failFast(ctx, c.BatchID, cause.Error())
	}
	return false, nil
}
