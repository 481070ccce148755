//go:build integration

package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/tasks"
)

const koreaCells = 19_200

// requireExactRows checks that table holds exactly one row per (cell, scenario)
// of the Korea grid, each equal to the kernel's series.
func requireExactRows(t *testing.T, c *cluster, kind string) {
	t.Helper()
	ctx := context.Background()
	table, err := store.ResultsTable(kind)
	require.NoError(t, err)
	var n, distinct int
	require.NoError(t, c.DB.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT (grid_id, scenario)) FROM `+table+` WHERE step = 0.05`).Scan(&n, &distinct))
	require.Equal(t, koreaCells*len(grid.Scenarios), n, "rows in %s", table)
	require.Equal(t, n, distinct)

	require.Equal(t, n, testutil.CheckResults(t, c.DB.Store, kind, 0.05, nil))
}

func TestBatchSucceedsWithTwoWorkers(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Seed()
	c.Worker()
	c.Worker()
	out, errOut, code := c.Enqueuer("run", "--kind", "ph", "--wait", "--progress-interval", "1s")
	require.Equal(t, 0, code, errOut)
	id := strings.SplitN(out, "\n", 2)[0]
	require.True(t, strings.HasPrefix(id, "ph-"), "first stdout line is the batch ID: %q", out)
	require.Contains(t, errOut, "succeeded")
	b := c.Batch(id)
	require.Equal(t, store.StatusSucceeded, b.Status)
	require.Equal(t, b.TotalChunks, b.CompletedChunks)
	require.EqualValues(t, koreaCells, b.CompletedCells)
	require.NotNil(t, b.EndedAt)
	require.NotNil(t, b.DurationSeconds)
	require.NotNil(t, b.AvgTaskSeconds)
	require.NotNil(t, b.PeakWorkerRSSBytes)
	require.Equal(t, 1.0, *b.SuccessRate)
	requireExactRows(t, c, "ph")

	// status reads the same figures, as JSON with snake_case keys.
	js, _, code := c.Enqueuer("status", id, "--json")
	require.Equal(t, 0, code)
	require.Contains(t, js, `"completed_cells": 19200`)
	require.Contains(t, js, `"status": "succeeded"`)
}

func TestLockRefusesSameKindOnly(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Seed()
	// No worker yet: the first batch stays running while we trigger others.
	first := c.RunBatch("--kind", "ph")
	out, errOut, code := c.Enqueuer("run", "--kind", "ph")
	require.Equal(t, 5, code, "a second ph batch is refused: %s", errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, first, "the refusal names the running batch")
	require.Contains(t, errOut, "lock expires at")
	hazard := c.RunBatch("--kind", "hazard")

	c.Worker()
	require.Equal(t, store.StatusSucceeded, c.WaitEnded(first, 2*time.Minute).Status)
	require.Equal(t, store.StatusSucceeded, c.WaitEnded(hazard, 2*time.Minute).Status)
	next := c.RunBatch("--kind", "ph")
	require.Equal(t, store.StatusSucceeded, c.WaitEnded(next, 2*time.Minute).Status)
	requireExactRows(t, c, "ph")
	requireExactRows(t, c, "hazard")
}

func TestLockExpiresByTTLWithNoProcessAlive(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Seed()
	// Nobody ever processes this batch: its lock must still go away by itself.
	first := c.RunBatch("--kind", "ph", "--deadline", "2s", "--lock-ttl", "5s")
	_, errOut, code := c.Enqueuer("run", "--kind", "ph")
	require.Equal(t, 5, code, errOut)
	require.Contains(t, errOut, first)
	time.Sleep(5500 * time.Millisecond)
	second := c.RunBatch("--kind", "ph", "--deadline", "2m")
	require.NotEqual(t, first, second)
	// A worker started now ends the stale batch (lock expired) and runs the new one.
	c.Worker()
	require.Equal(t, store.StatusTimedOut, c.WaitEnded(first, time.Minute).Status)
	require.Equal(t, store.StatusSucceeded, c.WaitEnded(second, 2*time.Minute).Status)
}

func TestAllProcessesKilledThenWorkersRestarted(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Seed()
	w1 := c.Worker()
	w2 := c.Worker()
	id := c.RunBatch("--kind", "ph", "--chunk-size", "20")
	c.WaitDone(id, 60, time.Minute)
	w1.Signal(syscall.SIGKILL)
	w2.Signal(syscall.SIGKILL)
	w1.Wait(t, 10*time.Second)
	w2.Wait(t, 10*time.Second)
	require.Equal(t, store.StatusRunning, c.Batch(id).Status)

	c.Worker()
	b := c.WaitEnded(id, 4*time.Minute)
	require.Equal(t, store.StatusSucceeded, b.Status, "error: %v", b.Error)
	require.Equal(t, b.TotalChunks, b.CompletedChunks)
	requireExactRows(t, c, "ph")
	// The lock went with the batch: a new trigger is accepted at once.
	next := c.RunBatch("--kind", "ph")
	require.Equal(t, store.StatusSucceeded, c.WaitEnded(next, 2*time.Minute).Status)
}

func TestDeadlineEndsBatchTimedOut(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Seed()
	c.Worker("GRIDBATCH_CONCURRENCY=1")
	out, errOut, code := c.Enqueuer("run", "--kind", "ph", "--chunk-size", "4", "--deadline", "3s", "--lock-ttl", "1m", "--wait")
	require.Equal(t, 4, code, "timed out exits 4: %s", errOut)
	id := strings.SplitN(out, "\n", 2)[0]
	b := c.Batch(id)
	require.Equal(t, store.StatusTimedOut, b.Status)
	require.Positive(t, b.TimedOutChunks)
	require.Equal(t, b.TotalChunks, b.CompletedChunks+b.FailedChunks+b.TimedOutChunks+b.CancelledChunks)
	require.Contains(t, errOut, "timed_out")
	counts, err := c.DB.Store.ChunkCounts(context.Background(), id)
	require.NoError(t, err)
	require.Zero(t, counts[store.ChunkPending], "no chunk left pending")
	// Nothing of the batch is left in Redis (cancelled in-flight tasks are removed within seconds).
	var left int
	for range 50 {
		if left = c.queued(id); left == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Zero(t, left, "tasks of the timed-out batch still queued")
	// And the lock is free.
	next := c.RunBatch("--kind", "ph", "--deadline", "5m")
	require.NotEqual(t, id, next)
}

func TestUndecodablePayloadIsDeadLetteredWithoutRetry(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Worker()
	client := asynq.NewClient(c.Redis.ClientOpt())
	defer client.Close()
	_, err := client.Enqueue(asynq.NewTask(tasks.TypeChunk, []byte(`{"batch_id": 42`)),
		asynq.Queue(tasks.QueueGrid), asynq.TaskID("junk-1"), asynq.MaxRetry(5))
	require.NoError(t, err)
	var lastErr string
	var retries int
	waitFor(t, time.Minute, "the dead letter to be recorded", func() bool {
		err := c.DB.Pool.QueryRow(context.Background(), `SELECT last_error, retries FROM dead_letters WHERE task_id = 'junk-1'`).Scan(&lastErr, &retries)
		return err == nil
	})
	require.Contains(t, lastErr, "bad payload")
	require.Zero(t, retries)
	insp := asynq.NewInspector(c.Redis.ClientOpt())
	defer insp.Close()
	info, err := insp.GetTaskInfo(tasks.QueueGrid, "junk-1")
	require.NoError(t, err)
	require.Equal(t, asynq.TaskStateArchived, info.State)
	require.Zero(t, info.Retried, "never retried")
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
