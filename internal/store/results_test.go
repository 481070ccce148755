package store_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestWriteChunk writes chunks through one connection, so the staging table
// is created once and reused, also after a transaction that rolled back, and
// reads the values back bit for bit.
func TestWriteChunk(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	st, err := store.Open(ctx, store.Options{URL: db.URL, MaxConns: 1})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	r := region(t, "124,33,124.1,33.1", 0.05) // 4 cells
	newBatch := func(id string) store.Batch {
		now := time.Now()
		b, err := st.InsertBatch(ctx, store.NewBatch{ID: id, Kind: grid.KindPH, Region: r, ChunkSize: 2, StartedAt: now,
			DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour)})
		require.NoError(t, err)
		_, err = st.PlanChunks(ctx, b)
		require.NoError(t, err)
		return b
	}
	values := func(seed float64) []float64 {
		v := make([]float64, grid.NumYears)
		for i := range v {
			v[i] = math.Nextafter(seed+0.1*float64(i), 1)
		}
		v[0], v[1], v[2] = math.Copysign(0, -1), math.SmallestNonzeroFloat64, math.Inf(1)
		return v
	}
	series := func(chunk int, seed float64) []grid.Series {
		var out []grid.Series
		for _, id := range r.ChunkIDs(chunk, 2) {
			for _, s := range grid.Scenarios {
				out = append(out, grid.Series{GridID: id, Scenario: s.Name, Values: values(seed + float64(id))})
			}
		}
		return out
	}

	ended := newBatch("ended")
	_, _, _, err = st.FinishBatch(ctx, ended.ID, store.Final{Status: store.StatusCancelled, Rest: store.ChunkCancelled})
	require.NoError(t, err)
	tr, err := st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series(0, 1), store.ChunkOutcome{BatchID: ended.ID, Chunk: 0, Attempts: 1}, false)
	require.NoError(t, err, "a chunk of an ended batch rolls back, staging table and all")
	require.False(t, tr.BatchRunning)
	_, err = st.ReadSeries(ctx, grid.KindPH, 0.05, r.ChunkIDs(0, 2)[0], "ssp126")
	require.ErrorIs(t, err, store.ErrNoSeries)

	b := newBatch("running")
	for chunk := range 2 {
		tr, err := st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series(chunk, 2), store.ChunkOutcome{BatchID: b.ID, Chunk: chunk, Attempts: 1}, false)
		require.NoError(t, err, "chunk %d", chunk)
		require.True(t, tr.Changed)
	}
	// A re-run rewrites the same rows.
	_, err = st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series(1, 3), store.ChunkOutcome{BatchID: b.ID, Chunk: 1, Attempts: 2}, false)
	require.NoError(t, err)
	for chunk, seed := range []float64{2, 3} {
		for _, id := range r.ChunkIDs(chunk, 2) {
			got, err := st.ReadSeries(ctx, grid.KindPH, 0.05, id, "ssp585")
			require.NoError(t, err)
			want := values(seed + float64(id))
			require.Len(t, got.Values, len(want))
			for i := range want {
				require.Equal(t, math.Float64bits(want[i]), math.Float64bits(got.Values[i]), "cell %d year %d", id, i)
			}
		}
	}
}
