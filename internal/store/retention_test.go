package store_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestRetentionCandidates checks the facts retention decides on: only ended
// batches with their own rows are candidates, and a published batch stops
// showing once a batch published after it succeeded over a bbox holding its
// own, not over a smaller one. DropBatchRows then drops a published batch's
// rows without touching the published values of the batch that superseded it.
func TestRetentionCandidates(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	st := db.Store
	t0 := time.Now()
	start := func(id, bbox string, n int) (store.Batch, grid.Region) {
		r := region(t, bbox, 0.05)
		return startBatch(t, st, id, r, t0.Add(time.Duration(n)*time.Second)), r
	}
	finish := func(id string, final store.Final) store.Batch {
		b, _, _, err := st.FinishBatch(ctx, id, final, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtEnd))
		require.NoError(t, err)
		return b
	}
	// succeed computes every cell of the batch (values seed) and ends it,
	// published.
	succeed := func(id, bbox string, n int, seed float64) {
		b, r := start(id, bbox, n)
		for chunk := range r.NumChunks(2) {
			var out []grid.Series
			for _, cell := range r.ChunkIDs(chunk, 2) {
				for _, s := range grid.Scenarios {
					v := make([]float64, grid.NumYears)
					for i := range v {
						v[i] = seed
					}
					out = append(out, grid.Series{GridID: cell, Scenario: s.Name, Values: v})
				}
			}
			_, err := st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, out, store.ChunkOutcome{BatchID: b.ID, Chunk: chunk, Attempts: 1}, false)
			require.NoError(t, err)
		}
		require.Equal(t, store.StatusSucceeded, finish(id, store.Final{PendingChunkStatus: store.ChunkCancelled}).Status)
	}
	type fact struct {
		Status             string
		Published, Showing bool
	}
	facts := func(kind string) map[string]fact {
		cands, err := st.RetentionCandidates(ctx, kind)
		require.NoError(t, err)
		got := map[string]fact{}
		for _, c := range cands {
			require.Equal(t, grid.KindPH, c.Kind)
			got[c.ID] = fact{c.Status, c.Published, c.Showing}
		}
		return got
	}

	const whole, part = "124,33,124.1,33.1", "124,33,124.05,33.1"
	succeed("first", whole, 1, 1)
	start("running", whole, 2)
	start("cancelled", whole, 3)
	finish("cancelled", store.Final{Status: store.StatusCancelled, PendingChunkStatus: store.ChunkCancelled})
	succeed("smaller", part, 4, 2)
	require.Equal(t, map[string]fact{
		"first":     {store.StatusSucceeded, true, true},
		"cancelled": {store.StatusCancelled, false, false},
		"smaller":   {store.StatusSucceeded, true, true},
	}, facts(""), "a smaller bbox published later leaves cells showing the first batch")

	succeed("whole", whole, 5, 3)
	require.Equal(t, map[string]fact{
		"first":     {store.StatusSucceeded, true, false},
		"cancelled": {store.StatusCancelled, false, false},
		"smaller":   {store.StatusSucceeded, true, false},
		"whole":     {store.StatusSucceeded, true, true},
	}, facts(grid.KindPH), "a batch published later over the whole bbox supersedes both")
	require.Empty(t, facts(grid.KindHazard), "only the kind asked for")

	cands, err := st.RetentionCandidates(ctx, grid.KindPH)
	require.NoError(t, err)
	for _, c := range cands {
		if c.ID == "first" {
			require.NoError(t, st.DropBatchRows(ctx, c.Pruned))
		}
	}
	require.NotContains(t, facts(""), "first", "its rows are gone")
	n, err := st.BatchRows(ctx, "first")
	require.NoError(t, err)
	require.Zero(t, n)
	b, err := st.GetBatch(ctx, "first")
	require.NoError(t, err)
	require.NotNil(t, b.RowsDroppedAt)
	r := region(t, whole, 0.05)
	for _, cell := range r.ChunkIDs(0, r.NumCells()) {
		got, err := st.ReadSeries(ctx, grid.KindPH, 0.05, cell, "ssp585")
		require.NoError(t, err)
		require.Equal(t, "whole", got.BatchID, "cell %d", cell)
		require.Equal(t, 3.0, got.Values[0])
	}
}
