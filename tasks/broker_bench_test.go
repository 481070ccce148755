package tasks

import (
	"context"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// BenchmarkEnqueueChunks is the plan task's enqueue of a 10,000-chunk
// batch against the real Redis: one asynq task per chunk.
func BenchmarkEnqueueChunks(b *testing.B) {
	const chunks = 10_000
	r := testutil.NewRedis(b)
	client := asynq.NewClientFromRedisClient(r.Client)
	insp := asynq.NewInspectorFromRedisClient(r.Client)
	br := NewBroker(client, insp, r.Client, ChunkOptions{})
	all := make([]int, chunks)
	for i := range all {
		all[i] = i
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		if err := r.Client.FlushDB(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		bt := store.Batch{ID: fmt.Sprintf("ph-bench-%d", i), Kind: grid.KindPH, Step: 0.01, ChunkSize: 48,
			BBox: grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}}
		b.StartTimer()
		if err := br.EnqueueChunks(ctx, bt, all); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(chunks*b.N)/b.Elapsed().Seconds(), "tasks/s")
}
