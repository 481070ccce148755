package store_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestFinalStatus(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		completed, failed int
		want              string
	}{
		{10, 0, store.StatusSucceeded},
		{9, 1, store.StatusPartial},
		{1, 9, store.StatusPartial},
		{0, 10, store.StatusFailed},
		{0, 0, store.StatusSucceeded}, // nothing failed
	} {
		require.Equal(t, tc.want, store.FinalStatus(tc.completed, tc.failed), "%d succeeded, %d failed", tc.completed, tc.failed)
	}
}

// counters is a batch's chunk counters, as batch_runs holds them or as
// counted from its chunk_runs rows.
type counters struct {
	Done, Completed, Failed, TimedOut, Cancelled int
	CompletedCells, FailedCells, TimedOutCells   int64
}

// requireCounted checks that the batch's counters are the counts of its
// chunk_runs rows, and returns them.
func requireCounted(t *testing.T, db *testutil.DB, id string) counters {
	t.Helper()
	ctx := testContext(t)
	b, err := db.Store.GetBatch(ctx, id)
	require.NoError(t, err)
	held := counters{b.DoneChunks, b.CompletedChunks, b.FailedChunks, b.TimedOutChunks, b.CancelledChunks,
		b.CompletedCells, b.FailedCells, b.TimedOutCells}
	var counted counters
	require.NoError(t, db.Pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE status <> 'pending'), count(*) FILTER (WHERE status = 'succeeded'),
			count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'timed_out'),
			count(*) FILTER (WHERE status = 'cancelled'),
			coalesce(sum(cells) FILTER (WHERE status = 'succeeded'), 0), coalesce(sum(cells) FILTER (WHERE status = 'failed'), 0),
			coalesce(sum(cells) FILTER (WHERE status = 'timed_out'), 0)
		FROM chunk_runs WHERE batch_id = $1`, id).Scan(&counted.Done, &counted.Completed, &counted.Failed,
		&counted.TimedOut, &counted.Cancelled, &counted.CompletedCells, &counted.FailedCells, &counted.TimedOutCells))
	require.Equal(t, counted, held, "batch_runs' counters are the counts of its chunk_runs rows")
	return held
}

// TestCountersFollowEveryChunkTransition drives a batch's chunks through
// every transition (an outcome, a duplicate, a requeue that reopens a chunk,
// the end, a requeue that heals an ended batch) and after each checks that
// the counters are the chunk_runs counts, and the status the one
// store.FinalStatus gives.
func TestCountersFollowEveryChunkTransition(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	st := db.Store
	r := region(t, "124,33,124.25,33.1", 0.05) // 10 cells: chunks of 3, 3, 3 and 1
	now := time.Now()
	b, err := st.InsertBatch(ctx, store.NewBatch{ID: "ph-counters", Kind: grid.KindPH, Region: r, ChunkSize: 3,
		StartedAt: now, DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour), Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
	require.NoError(t, err)
	require.Equal(t, 4, b.TotalChunks)
	_, err = st.PlanChunks(ctx, b)
	require.NoError(t, err)
	outcome := func(chunk int) store.ChunkOutcome {
		return store.ChunkOutcome{BatchID: b.ID, Chunk: chunk, Attempts: 1, TaskSeconds: 0.5, Worker: "test:1", Error: "boom"}
	}
	succeed := func(chunk int, allowEnded bool) store.Transition {
		t.Helper()
		var series []grid.Series
		for _, id := range r.ChunkIDs(chunk, 3) {
			for _, s := range grid.Scenarios {
				series = append(series, grid.Series{GridID: id, Scenario: s.Name, Values: make([]float64, grid.NumYears)})
			}
		}
		tr, err := st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series, outcome(chunk), allowEnded)
		require.NoError(t, err)
		return tr
	}
	fail := func(chunk int) store.Transition {
		t.Helper()
		tr, err := st.MarkChunkFailed(ctx, outcome(chunk))
		require.NoError(t, err)
		return tr
	}
	taskID := func(chunk int) string { return fmt.Sprintf("%s:c%d", b.ID, chunk) }
	deadLetter := func(chunk, gen int) {
		t.Helper()
		_, err := st.RecordDeadLetter(ctx, store.DeadLetter{TaskID: taskID(chunk), Generation: gen,
			Type: "grid:chunk", Queue: "grid", BatchID: &b.ID, Chunk: &chunk, FailedAt: time.Now()})
		require.NoError(t, err)
	}
	requeue := func(chunk int) store.Requeue {
		t.Helper()
		ds, err := st.DeadLettersOf(ctx, taskID(chunk))
		require.NoError(t, err)
		rq, err := st.RequeueDeadLetter(ctx, ds[0].Key(), false, func(store.Batch, store.DeadLetter) error { return nil })
		require.NoError(t, err)
		return rq
	}

	last, err := st.LastChunkFinishedAt(ctx, b.ID)
	require.NoError(t, err)
	require.Nil(t, last, "no chunk finished yet")
	require.True(t, succeed(0, false).Changed)
	require.Equal(t, counters{Done: 1, Completed: 1, CompletedCells: 3}, requireCounted(t, db, b.ID))
	last, err = st.LastChunkFinishedAt(ctx, b.ID)
	require.NoError(t, err)
	require.NotNil(t, last, "chunk 0 finished")
	require.WithinDuration(t, time.Now(), *last, time.Minute)

	require.True(t, fail(1).Changed)
	require.True(t, fail(2).Changed)
	deadLetter(1, 0)
	deadLetter(2, 0)
	require.False(t, fail(1).Changed, "a duplicate outcome counts nothing")
	require.Equal(t, counters{Done: 3, Completed: 1, Failed: 2, CompletedCells: 3, FailedCells: 6}, requireCounted(t, db, b.ID))

	require.True(t, requeue(1).Reopened, "a requeue in a running batch reopens the chunk")
	require.Equal(t, counters{Done: 2, Completed: 1, Failed: 1, CompletedCells: 3, FailedCells: 3}, requireCounted(t, db, b.ID))
	require.True(t, succeed(1, false).Changed)
	tr := fail(3)
	deadLetter(3, 0)
	require.True(t, tr.AllDone())
	require.Equal(t, counters{Done: 4, Completed: 2, Failed: 2, CompletedCells: 6, FailedCells: 4}, requireCounted(t, db, b.ID))

	ended, rest, ok, err := st.FinishBatch(ctx, b.ID, store.Final{PendingChunkStatus: store.ChunkCancelled}, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtEnd))
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, rest)
	require.Equal(t, store.StatusPartial, ended.Status, "FinalStatus(6 cells succeeded, 4 failed)")
	require.InDelta(t, 0.6, *ended.SuccessRate, 1e-12, "a success rate in cells")

	require.False(t, requeue(2).Reopened, "in an ended batch the chunk stays failed until it succeeds")
	require.True(t, succeed(2, true).Changed, "a requeued chunk writes into its ended batch")
	healed, before, err := st.HealEndedBatch(ctx, b.ID, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtHeal))
	require.NoError(t, err)
	require.Equal(t, store.StatusPartial, before)
	require.Equal(t, store.StatusPartial, healed.Status, "chunk 3 is still failed")
	require.Equal(t, counters{Done: 4, Completed: 3, Failed: 1, CompletedCells: 9, FailedCells: 1}, requireCounted(t, db, b.ID))

	requeue(3)
	require.True(t, succeed(3, true).Changed)
	healed, _, err = st.HealEndedBatch(ctx, b.ID, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtHeal))
	require.NoError(t, err)
	require.Equal(t, store.StatusSucceeded, healed.Status, "no chunk failed any more")
	require.Nil(t, healed.Error)
	require.InDelta(t, 1.0, *healed.SuccessRate, 1e-12)
	require.Equal(t, counters{Done: 4, Completed: 4, CompletedCells: 10}, requireCounted(t, db, b.ID))

	retained, most, err := st.RetainedBatches(ctx, grid.KindPH)
	require.NoError(t, err)
	require.Equal(t, 1, retained, "the batch holds its rows")
	require.Equal(t, b.TotalCells, most)
	retained, most, err = st.RetainedBatches(ctx, grid.KindHazard)
	require.NoError(t, err)
	require.Zero(t, retained)
	require.Zero(t, most)
}

// TestFinishBatchCountsTheRest ends batches early and checks that the chunks
// still pending are counted in their end status.
func TestFinishBatchCountsTheRest(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "124,33,124.25,33.1", 0.05)
	for _, tc := range []struct {
		final store.Final
		want  counters
	}{
		{store.Final{Status: store.StatusTimedOut, PendingChunkStatus: store.ChunkTimedOut},
			counters{Done: 4, Failed: 1, TimedOut: 3, FailedCells: 3, TimedOutCells: 7}},
		{store.Final{Status: store.StatusCancelled, PendingChunkStatus: store.ChunkCancelled},
			counters{Done: 4, Failed: 1, Cancelled: 3, FailedCells: 3}},
		{store.Final{Status: store.StatusFailed, PendingChunkStatus: store.ChunkFailed},
			counters{Done: 4, Failed: 4, FailedCells: 10}},
	} {
		t.Run(tc.final.Status, func(t *testing.T) {
			now := time.Now()
			b, err := db.Store.InsertBatch(ctx, store.NewBatch{ID: "ph-" + tc.final.Status, Kind: grid.KindPH, Region: r,
				ChunkSize: 3, StartedAt: now, DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour), Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
			require.NoError(t, err)
			_, err = db.Store.PlanChunks(ctx, b)
			require.NoError(t, err)
			_, err = db.Store.MarkChunkFailed(ctx, store.ChunkOutcome{BatchID: b.ID, Chunk: 0, Attempts: 1})
			require.NoError(t, err)
			ended, rest, ok, err := db.Store.FinishBatch(ctx, b.ID, tc.final, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtEnd))
			require.NoError(t, err)
			require.True(t, ok)
			require.Equal(t, []store.Piece{{Chunk: 1}, {Chunk: 2}, {Chunk: 3}}, rest)
			require.Equal(t, tc.final.Status, ended.Status)
			require.Equal(t, tc.want, requireCounted(t, db, b.ID))
			_, _, ok, err = db.Store.FinishBatch(ctx, b.ID, store.Final{Status: store.StatusSucceeded}, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtEnd))
			require.NoError(t, err)
			require.False(t, ok, "an ended batch is not ended again")
		})
	}
}
