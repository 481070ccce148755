//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// TestHostileChunkTasksAreDeadLettered: chunk tasks written straight into
// Redis with asynq's client, one claiming a 1 TiB chunk of a 1e-7° world
// grid for a batch that does not exist, one out of bounds of a real batch,
// are taken by the real worker and dead-lettered at their first run with a
// reason naming what is wrong; the worker stays up, small, and runs the
// real batch to its end.
func TestHostileChunkTasksAreDeadLettered(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := context.Background()
	c.Seed()
	id := c.RunBatch("--kind", "ph", "--chunk-size", "2000")

	client := asynq.NewClient(c.Redis.ClientOpt())
	defer client.Close()
	hostile := map[string]struct {
		payload string
		reason  string
	}{
		"hostile-unknown-batch": {`{"batch_id": "ph-19700101-000000-000000", "kind": "ph", "chunk": 0,
			"chunk_size": 1099511627776, "step": 1e-7, "bbox": [-180, -90, 180, 90]}`,
			"chunk_size 1099511627776 must be between 1 and 100000"},
		"hostile-unknown-batch-sane-size": {`{"batch_id": "ph-19700101-000000-000000", "kind": "ph", "chunk": 0,
			"chunk_size": 100000, "step": 1e-7, "bbox": [-180, -90, 180, 90]}`,
			`read its batch: batch "ph-19700101-000000-000000": batch not found`},
		"hostile-out-of-bounds": {`{"batch_id": "` + id + `", "kind": "ph", "chunk": 1000000,
			"chunk_size": 2000, "step": 0.05, "bbox": [124, 33, 132, 39]}`,
			"bad chunk: chunk 1000000 is not one of the batch's 10 chunks"},
		"hostile-chunk-size": {`{"batch_id": "` + id + `", "kind": "ph", "chunk": 0,
			"chunk_size": 1099511627776, "step": 0.05, "bbox": [124, 33, 132, 39]}`,
			"chunk_size 1099511627776 must be between 1 and 100000"},
		"hostile-other-chunk-size": {`{"batch_id": "` + id + `", "kind": "ph", "chunk": 0,
			"chunk_size": 100000, "step": 0.05, "bbox": [124, 33, 132, 39]}`,
			"bad chunk: chunk task of chunk size 100000 for a batch of chunk size 2000"},
	}
	for taskID, h := range hostile {
		require.True(t, json.Valid([]byte(h.payload)), taskID)
		_, err := client.Enqueue(asynq.NewTask(tasks.TypeChunk, []byte(h.payload)), asynq.Queue(tasks.QueueGrid),
			asynq.TaskID(taskID), asynq.MaxRetry(5))
		require.NoError(t, err)
	}
	w := c.Worker("GRIDBATCH_CONCURRENCY=2")
	b := c.WaitEnded(id, 2*time.Minute)
	require.Equal(t, store.StatusSucceeded, b.Status, "the real batch ran to its end")

	insp := asynq.NewInspector(c.Redis.ClientOpt())
	defer insp.Close()
	for taskID, h := range hostile {
		var info *asynq.TaskInfo
		waitFor(t, 30*time.Second, taskID+" archived", func() bool {
			var err error
			info, err = insp.GetTaskInfo(tasks.QueueGrid, taskID)
			return err == nil && info.State == asynq.TaskStateArchived
		})
		require.Zero(t, info.Retried, "%s dead-lettered at its first run", taskID)
		var reason string
		waitFor(t, 30*time.Second, taskID+" recorded", func() bool {
			return c.DB.Pool.QueryRow(ctx, `SELECT last_error FROM dead_letters WHERE task_id = $1`, taskID).Scan(&reason) == nil
		})
		require.Contains(t, reason, h.reason, taskID)
	}
	require.False(t, w.Exited(), "the worker is still up")
	peak := vmHWM("/proc/" + strconv.Itoa(w.Pid()))
	require.Less(t, peak, int64(256<<10), "worker peak RSS %d KiB", peak)
	t.Logf("worker peak RSS %d MiB after the hostile tasks and a 19,200-cell batch", peak>>10)
}
