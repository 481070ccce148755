package dlq

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// The codec is checked against messages asynq itself writes and reads.
func TestTaskMsgRoundTripsThroughAsynq(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	ctx := context.Background()
	client := asynq.NewClient(r.ClientOpt())
	defer client.Close()
	insp := asynq.NewInspector(r.ClientOpt())
	defer insp.Close()

	payload := []byte(`{"batch_id":"ph-1","chunk":3}`)
	_, err := client.Enqueue(asynq.NewTask("grid:chunk", payload), asynq.Queue("grid"), asynq.TaskID("t-1"),
		asynq.MaxRetry(7), asynq.Timeout(time.Minute), asynq.Unique(time.Hour))
	require.NoError(t, err)
	raw, err := r.Client.HGet(ctx, taskKey("grid", "t-1"), "msg").Bytes()
	require.NoError(t, err)

	m, err := decodeTaskMsg(raw)
	require.NoError(t, err)
	require.Equal(t, taskMsg{Type: "grid:chunk", Payload: payload, ID: "t-1", Queue: "grid", Retry: 7}, m)

	failedAt := time.Now().Add(-time.Hour).Unix()
	updated, err := failTaskMsg(raw, 3, "boom: it broke", failedAt)
	require.NoError(t, err)
	m2, err := decodeTaskMsg(updated)
	require.NoError(t, err)
	require.Equal(t, taskMsg{Type: "grid:chunk", Payload: payload, ID: "t-1", Queue: "grid", Retry: 7,
		Retried: 3, ErrorMsg: "boom: it broke", LastFailedAt: failedAt}, m2)

	// asynq reads what we wrote, every other field intact.
	require.NoError(t, r.Client.HSet(ctx, taskKey("grid", "t-1"), "msg", updated).Err())
	info, err := insp.GetTaskInfo("grid", "t-1")
	require.NoError(t, err)
	require.Equal(t, 3, info.Retried)
	require.Equal(t, 7, info.MaxRetry)
	require.Equal(t, "boom: it broke", info.LastErr)
	require.Equal(t, failedAt, info.LastFailedAt.Unix())
	require.Equal(t, time.Minute, info.Timeout)
	require.Equal(t, payload, info.Payload)

	// A second failure replaces the fields rather than adding to them.
	again, err := failTaskMsg(updated, 4, "again", failedAt+1)
	require.NoError(t, err)
	m3, err := decodeTaskMsg(again)
	require.NoError(t, err)
	require.Equal(t, 4, m3.Retried)
	require.Equal(t, "again", m3.ErrorMsg)
	require.Less(t, len(again), len(updated)+8)

	_, err = decodeTaskMsg([]byte{0xff, 0xff})
	require.Error(t, err)
}
