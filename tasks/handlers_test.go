package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestHandleError runs a batch's two chunk tasks through a real asynq
// server whose handler fails them, with HandleError as its error handler,
// and checks what a failure records: nothing while the task will be retried;
// on its final failure (retries exhausted, or SkipRetry) the dead letter and
// the chunk's failed outcome, which here end the batch failed.
func TestHandleError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		maxRetry int
		err      error
		final    bool
	}{
		{"a failure with retries left records nothing", 3, errors.New("connection reset"), false},
		{"a failure with no retry left is dead-lettered", 0, errors.New("connection reset"), true},
		{"SkipRetry is dead-lettered at once", 3, fmt.Errorf("missing input: %w", asynq.SkipRetry), true},
		{"a revoked task is not dead-lettered", 0, fmt.Errorf("batch ended: %w", asynq.RevokeTask), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r := testutil.NewRedis(t)
			db := testutil.NewDB(t)
			region, err := grid.ParseRegion(0.5, "124,33,125,34", 0) // 4 cells
			require.NoError(t, err)
			_, err = db.Store.SeedCells(ctx, region, nil)
			require.NoError(t, err)
			client := asynq.NewClientFromRedisClient(r.Client)
			insp := asynq.NewInspectorFromRedisClient(r.Client)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			svc := batch.New(db.Store, NewBroker(client, insp, r.Client, ChunkOptions{MaxRetry: Retries(tc.maxRetry)}), log, batch.Config{})
			b, err := svc.Trigger(ctx, batch.Request{Kind: grid.KindPH, Region: region, ChunkSize: 2,
				Deadline: time.Hour, LockTTL: 2 * time.Hour, Trigger: "test"})
			require.NoError(t, err)
			require.NoError(t, svc.Plan(ctx, b.ID))

			h := NewHandlers(svc, log)
			var handled atomic.Int32
			srv := asynq.NewServerFromRedisClient(r.Client, asynq.Config{
				Concurrency: 2, Queues: map[string]int{QueueGrid: 1}, TaskCheckInterval: 50 * time.Millisecond,
				RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
				ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
					h.HandleError(ctx, t, err)
					handled.Add(1)
				}),
				Logger: logging.Asynq(log), LogLevel: asynq.ErrorLevel,
			})
			mux := asynq.NewServeMux()
			mux.HandleFunc(TypeChunk, func(context.Context, *asynq.Task) error { return tc.err })
			require.NoError(t, srv.Start(mux))
			testutil.Eventually(t, 30*time.Second, "both chunk tasks to fail", func() bool { return handled.Load() == 2 })
			srv.Shutdown()

			ds, total, err := db.Store.ListDeadLetters(ctx, store.DeadLetterFilter{BatchID: b.ID}, 10)
			require.NoError(t, err)
			counts, err := db.Store.ChunkCounts(ctx, b.ID)
			require.NoError(t, err)
			got, err := db.Store.GetBatch(ctx, b.ID)
			require.NoError(t, err)
			if !tc.final {
				require.Zero(t, total, "no dead letter")
				require.Equal(t, map[string]int{store.ChunkPending: 2}, counts, "no chunk outcome")
				require.Equal(t, store.StatusRunning, got.Status)
				return
			}
			require.Equal(t, 2, total)
			for _, d := range ds {
				require.Equal(t, tc.err.Error(), d.LastError)
				require.Equal(t, TypeChunk, d.Type)
				require.Equal(t, QueueGrid, d.Queue)
				require.Equal(t, b.ID, *d.BatchID)
				require.Equal(t, batch.ChunkTaskID(b.ID, *d.Chunk), d.TaskID)
				require.Zero(t, d.Retries)
			}
			require.Equal(t, map[string]int{store.ChunkFailed: 2}, counts, "each chunk recorded failed")
			require.Equal(t, store.StatusFailed, got.Status, "no chunk succeeded")
		})
	}
}
