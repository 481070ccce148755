package testutil

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// StoreBatch makes a batch of kind over r as a worker would, in-process:
// it records the batch, plans its chunks of chunkSize cells, writes each
// chunk's series computed by m from the cells' reference parameters
// (leaving out the cells for which skip, when not nil, is true), and ends
// it with status (succeeded publishes it). It returns the ended batch.
func StoreBatch(t testing.TB, st *store.Store, id, kind string, m grid.Model, r grid.Region, chunkSize int, skip func(grid.Cell) bool, status string) store.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	now := time.Now()
	b, err := st.InsertBatch(ctx, store.NewBatch{ID: id, Kind: kind, Region: r, ChunkSize: chunkSize, StartedAt: now,
		DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour), Trigger: "cli",
		Layout: store.LayoutOf(model.BuiltinSpec(kind))})
	require.NoError(t, err)
	chunks, err := st.PlanChunks(ctx, b)
	require.NoError(t, err)
	for _, chunk := range chunks {
		var in []grid.Input
		for _, c := range r.ChunkCells(chunk, chunkSize) {
			if skip == nil || !skip(c) {
				in = append(in, grid.Input{GridID: c.GridID, Params: grid.ReferenceParams(c.Lat, c.Lon)})
			}
		}
		series, err := m.Compute(ctx, in)
		require.NoError(t, err)
		_, err = st.WriteChunk(ctx, kind, r.Lattice.Step, grid.FirstYear, series, store.ChunkOutcome{BatchID: id, Chunk: chunk, Attempts: 1}, false)
		require.NoError(t, err, "chunk %d", chunk)
	}
	b, _, _, err = st.FinishBatch(ctx, id, store.Final{Status: status, Rest: store.ChunkCancelled}, batch.Gate{}.Decide(batch.AtEnd))
	require.NoError(t, err)
	return b
}
