package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/store"
)

// sweepPage is how many archived tasks a sweep reads and checks at once: one
// Redis round trip and two or three queries per page.
const sweepPage = 500

// logRecordedMax caps the per-task log lines of one sweep; the rest are counted.
const logRecordedMax = 20

// SweepStats is what a sweep did.
type SweepStats struct {
	// Scanned counts the archived tasks read.
	Scanned int
	// Recorded counts the dead letters the sweep wrote: archived tasks no
	// error handler had recorded.
	Recorded int
	// ChunksFailed counts chunks of running batches the sweep recorded as
	// dead-lettered.
	ChunksFailed int
}

// Sweep records every archived task of the configured queues that is not in
// dead_letters yet, and marks every archived chunk task whose chunk is still
// pending in a running batch as dead-lettered (batch.Service.ChunkDeadLettered,
// the path the error handler takes: the batch ends when that was its last
// open chunk). It reads the archive by score from the newest task the last
// sweep saw, minus SweepMargin, in pages; the first sweep of a Service, and
// every FullSweepEvery-th, reads it all. Recording is idempotent, so a task
// seen twice is recorded once.
func (s *Service) Sweep(ctx context.Context) (SweepStats, error) {
	var st SweepStats
	s.mu.Lock()
	full := s.sweeps%s.cfg.FullSweepEvery == 0
	s.mu.Unlock()
	var errs []error
	for _, q := range s.cfg.Queues {
		if err := s.sweepQueue(ctx, q, full, &st); err != nil {
			errs = append(errs, fmt.Errorf("queue %s: %w", q, err))
		}
	}
	err := errors.Join(errs...)
	s.mu.Lock()
	if err == nil {
		s.sweeps++
	}
	s.lastSweep = time.Now()
	s.mu.Unlock()
	if st.Recorded > 0 || st.ChunksFailed > 0 {
		s.log.Warn("archive sweep recorded dead letters no handler recorded", "recorded", st.Recorded,
			"chunks_failed", st.ChunksFailed, "scanned", st.Scanned, "full", full)
	} else {
		s.log.Debug("archive sweep", "scanned", st.Scanned, "full", full)
	}
	return st, err
}

func (s *Service) sweepQueue(ctx context.Context, q string, full bool, st *SweepStats) error {
	s.mu.Lock()
	hwm, seen := s.hwm[q]
	s.mu.Unlock()
	from := "-inf"
	if seen && !full {
		from = strconv.FormatFloat(hwm-s.cfg.SweepMargin.Seconds(), 'f', -1, 64)
	}
	zs, err := s.archivedSince(ctx, q, from)
	if err != nil {
		return fmt.Errorf("read the archive: %w", err)
	}
	for len(zs) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		page := zs[:min(sweepPage, len(zs))]
		zs = zs[len(page):]
		tasks, err := s.readArchived(ctx, q, page)
		if err != nil {
			return err
		}
		if err := s.recordPage(ctx, q, tasks, st); err != nil {
			return err
		}
		// Pages are in score order: what is below the last score is swept,
		// so an interrupted sweep resumes from here.
		s.mu.Lock()
		s.hwm[q] = max(s.hwm[q], page[len(page)-1].Score)
		s.mu.Unlock()
	}
	return nil
}

// recordPage records the page's unrecorded tasks and the failure of their
// chunks still pending in running batches.
func (s *Service) recordPage(ctx context.Context, q string, tasks []archivedTask, st *SweepStats) error {
	st.Scanned += len(tasks)
	if len(tasks) == 0 {
		return nil
	}
	ids := make([]string, len(tasks))
	letters := make([]store.DeadLetter, len(tasks))
	subjects := make([]Subject, len(tasks))
	var refs []store.ChunkRef
	for i, t := range tasks {
		ids[i] = t.msg.ID
		subjects[i] = s.tasks.DescribeTask(t.msg.Type, t.msg.ID, t.msg.Payload)
		letters[i] = deadLetterOf(q, t, subjects[i])
		if subjects[i].IsChunk {
			refs = append(refs, subjects[i].ref())
		}
	}
	recorded, err := s.st.RecordedDeadLetters(ctx, ids)
	if err != nil {
		return fmt.Errorf("check recorded dead letters: %w", err)
	}
	var fresh []store.DeadLetter
	for _, d := range letters {
		if !recorded[d.Key()] {
			fresh = append(fresh, d)
		}
	}
	n, err := s.st.RecordDeadLetters(ctx, fresh)
	if err != nil {
		return fmt.Errorf("record %d dead letters: %w", len(fresh), err)
	}
	for i, d := range fresh {
		if st.Recorded+i >= logRecordedMax {
			break
		}
		s.log.Warn("recorded an archived task no handler recorded", taskAttrs(d)...)
	}
	st.Recorded += n
	if len(refs) == 0 || s.svc == nil {
		return nil
	}
	open, err := s.st.PendingChunksOfRunning(ctx, refs)
	if err != nil {
		return fmt.Errorf("check chunks of running batches: %w", err)
	}
	for i, t := range tasks {
		sub := subjects[i]
		if !sub.IsChunk || !open[sub.ref()] {
			continue
		}
		c := batch.Chunk{BatchID: sub.BatchID, TaskID: t.msg.ID, Index: sub.Chunk, Lo: sub.Lo, Hi: sub.Hi,
			Retried: t.msg.Retried, Requeue: sub.Generation}
		if err := s.svc.ChunkDeadLettered(ctx, c, letters[i].LastError); err != nil && !errors.Is(err, store.ErrBatchNotFound) {
			return fmt.Errorf("record chunk %d of %s dead-lettered: %w", sub.Chunk, sub.BatchID, err)
		}
		// Not logged per chunk: the dead letter's line above says it.
		delete(open, sub.ref())
		st.ChunksFailed++
	}
	return nil
}

// deadLetterOf is the dead_letters row of an archived task.
func deadLetterOf(q string, t archivedTask, sub Subject) store.DeadLetter {
	errMsg := t.msg.ErrorMsg
	if errMsg == "" {
		errMsg = "archived with no error: moved to the archive by hand (asynqmon, the asynq CLI or the Inspector)"
	}
	d := store.DeadLetter{TaskID: t.msg.ID, Generation: sub.Generation, Type: t.msg.Type, Queue: q,
		Payload: t.msg.Payload, LastError: errMsg, Retries: t.msg.Retried, FailedAt: t.archivedAt}
	if sub.BatchID != "" {
		d.BatchID, d.Chunk, d.Lo, d.Hi, d.GridID = &sub.BatchID, &sub.Chunk, sub.Lo, sub.Hi, sub.GridID
	}
	return d
}

// ref names the piece of a chunk task's subject.
func (sub Subject) ref() store.ChunkRef {
	return store.ChunkRef{BatchID: sub.BatchID, Piece: store.Piece{Chunk: sub.Chunk, Lo: sub.Lo, Hi: sub.Hi}}
}

func taskAttrs(d store.DeadLetter) []any {
	a := []any{"task_id", d.TaskID, "type", d.Type, "queue", d.Queue, "generation", d.Generation,
		"retries", d.Retries, "error", d.LastError}
	if d.BatchID != nil {
		a = append(a, "batch_id", *d.BatchID, "chunk", *d.Chunk)
	}
	if d.Hi > 0 {
		a = append(a, "cells", fmt.Sprintf("%d-%d", d.Lo, d.Hi))
	}
	if d.GridID != nil {
		a = append(a, "grid_id", *d.GridID)
	}
	return a
}
