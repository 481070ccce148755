package tasks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestDecodeChunk(t *testing.T) {
	t.Parallel()
	good := `{"batch_id":"ph-1","kind":"ph","chunk":3,"step":0.05,"bbox":[124,33,132,39],"chunk_size":500}`
	p, err := DecodeChunk([]byte(good))
	require.NoError(t, err)
	require.Equal(t, ChunkPayload{BatchID: "ph-1", Kind: "ph", Chunk: 3, Step: 0.05, BBox: [4]float64{124, 33, 132, 39}, ChunkSize: 500}, p)

	for name, bad := range map[string]string{
		"not json":       `{"batch_id": 42`,
		"wrong type":     `{"batch_id": 42}`,
		"no batch":       `{"kind":"ph","chunk":0,"step":0.05,"bbox":[124,33,132,39],"chunk_size":500}`,
		"no kind":        `{"batch_id":"b","chunk":0,"step":0.05,"bbox":[124,33,132,39],"chunk_size":500}`,
		"negative chunk": `{"batch_id":"b","kind":"ph","chunk":-1,"step":0.05,"bbox":[124,33,132,39],"chunk_size":500}`,
		"zero size":      `{"batch_id":"b","kind":"ph","chunk":0,"step":0.05,"bbox":[124,33,132,39],"chunk_size":0}`,
		"zero step":      `{"batch_id":"b","kind":"ph","chunk":0,"step":0,"bbox":[124,33,132,39],"chunk_size":5}`,
		"bad bbox":       `{"batch_id":"b","kind":"ph","chunk":0,"step":0.05,"bbox":[132,33,124,39],"chunk_size":5}`,
		"empty":          ``,
		"long batch id":  `{"batch_id":"` + strings.Repeat("b", 101) + `","kind":"ph","chunk":0,"step":0.05,"bbox":[124,33,132,39],"chunk_size":5}`,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := DecodeChunk([]byte(bad))
			require.Error(t, err)
			require.ErrorIs(t, err, ErrBadPayload)
			require.ErrorIs(t, err, asynq.SkipRetry, "a bad payload is never retried")
		})
	}
}

func TestDecodePlanAndLock(t *testing.T) {
	t.Parallel()
	_, err := DecodePlan([]byte(`{}`))
	require.ErrorIs(t, err, asynq.SkipRetry)
	_, err = DecodeLock([]byte(`[]`))
	require.ErrorIs(t, err, asynq.SkipRetry)
	p, err := DecodePlan([]byte(`{"batch_id":"x"}`))
	require.NoError(t, err)
	require.Equal(t, "x", p.BatchID)
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	lin := RetryDelay("linear", 10*time.Second)
	for n, want := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second, 40 * time.Second} {
		require.Equal(t, want, lin(n, errors.New("x"), nil), "countdown 10·(n+1) s for n=%d", n)
	}
	exp := RetryDelay("exponential", time.Second)
	for n := range 30 {
		d := exp(n, nil, nil)
		want := min(time.Second<<min(n, 20), 10*time.Minute)
		require.GreaterOrEqual(t, d, time.Duration(float64(want)*0.8))
		require.LessOrEqual(t, d, time.Duration(float64(want)*1.2))
	}
}

func TestChunkTaskIDRoundTrip(t *testing.T) {
	t.Parallel()
	id := batch.ChunkTaskID("ph-20261122-041503-3fa9c1", 42)
	b, c, ok := batch.ParseChunkTaskID(id)
	require.True(t, ok)
	require.Equal(t, "ph-20261122-041503-3fa9c1", b)
	require.Equal(t, 42, c)
	_, _, ok = batch.ParseChunkTaskID("junk")
	require.False(t, ok)
}

// TestLockKeyMatchesAsynq guards the copy of asynq's unique-key format that
// LockHolder reads: the key must be the one asynq writes.
func TestLockKeyMatchesAsynq(t *testing.T) {
	r := testutil.NewRedis(t)
	client := asynq.NewClientFromRedisClient(r.Client)
	insp := asynq.NewInspectorFromRedisClient(r.Client)
	b := NewBroker(client, insp, r.Client, ChunkOptions{})
	ctx := context.Background()
	deadline := time.Now().Add(time.Hour)
	require.NoError(t, b.AcquireLock(ctx, "ph", "ph-batch-1", deadline, 10*time.Minute))
	require.ErrorIs(t, b.AcquireLock(ctx, "ph", "ph-batch-2", deadline, 10*time.Minute), batch.ErrLocked)
	require.NoError(t, b.AcquireLock(ctx, "hazard", "hazard-batch-1", deadline, 10*time.Minute), "another kind has its own lock")
	holder, exp, err := b.LockHolder(ctx, "ph")
	require.NoError(t, err)
	require.Equal(t, "ph-batch-1", holder)
	require.WithinDuration(t, deadline.Add(10*time.Minute), exp, 5*time.Second)
	require.NoError(t, b.ReleaseLock(ctx, "ph-batch-1"))
	require.NoError(t, b.AcquireLock(ctx, "ph", "ph-batch-3", deadline, 10*time.Minute), "released on delete")
}

func FuzzDecodeChunk(f *testing.F) {
	f.Add([]byte(`{"batch_id":"ph-1","kind":"ph","chunk":3,"step":0.05,"bbox":[124,33,132,39],"chunk_size":500}`))
	f.Add([]byte(`{"bbox":[1e308,-1e308,"x"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := DecodeChunk(data)
		if err != nil {
			if !errors.Is(err, asynq.SkipRetry) || !errors.Is(err, ErrBadPayload) {
				t.Fatalf("error %v does not wrap SkipRetry and ErrBadPayload", err)
			}
			return
		}
		if p.BatchID == "" || p.ChunkSize < 1 || p.Step <= 0 || p.bbox().Validate() != nil {
			t.Fatalf("accepted an invalid payload %+v", p)
		}
	})
}

func FuzzDecodePlan(f *testing.F) {
	f.Add([]byte(`{"batch_id":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := DecodePlan(data); err == nil && p.BatchID == "" {
			t.Fatal("accepted an empty batch_id")
		}
	})
}

func FuzzDecodeLock(f *testing.F) {
	f.Add([]byte(`{"kind":"ph"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if p, err := DecodeLock(data); err == nil && p.Kind == "" {
			t.Fatal("accepted an empty kind")
		}
	})
}

// TestChunkOptionsMaxRetry pins what callers rely on: the zero value takes
// the documented default of 5 retries, and Retries(n) gives exactly n, none
// for 0 (GRIDBATCH_MAX_RETRY=0).
func TestChunkOptionsMaxRetry(t *testing.T) {
	r := testutil.NewRedis(t)
	client := asynq.NewClientFromRedisClient(r.Client)
	insp := asynq.NewInspectorFromRedisClient(r.Client)
	ctx := context.Background()
	for i, tc := range []struct {
		name string
		opts ChunkOptions
		want int
	}{
		{"zero value takes the default", ChunkOptions{}, 5},
		{"Retries(0) is no retry", ChunkOptions{MaxRetry: Retries(0)}, 0},
		{"NoRetry is no retry", ChunkOptions{MaxRetry: NoRetry}, 0},
		{"Retries(3) is three", ChunkOptions{MaxRetry: Retries(3)}, 3},
		{"an explicit count is kept", ChunkOptions{MaxRetry: 7}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := NewBroker(client, insp, r.Client, tc.opts)
			bt := store.Batch{ID: fmt.Sprintf("ph-retry-%d", i), Kind: "ph", Step: 0.5, ChunkSize: 10,
				BBox: grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}}
			require.NoError(t, b.EnqueueChunks(ctx, bt, []int{0}))
			info, err := insp.GetTaskInfo(QueueGrid, batch.ChunkTaskID(bt.ID, 0))
			require.NoError(t, err)
			require.Equal(t, tc.want, info.MaxRetry, "an enqueued chunk task")
			task, opts, err := b.ChunkTask(bt, store.Piece{Chunk: 1}, 1)
			require.NoError(t, err)
			info, err = client.EnqueueContext(ctx, task, opts...)
			require.NoError(t, err)
			require.Equal(t, tc.want, info.MaxRetry, "a requeued chunk task")
			require.Equal(t, 5*time.Minute, info.Timeout, "the default timeout")
		})
	}
}
