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
	n := store.NewBatch{ID: id, Kind: kind, Region: r, ChunkSize: chunkSize, Layout: store.LayoutOf(model.BuiltinSpec(kind))}
	return storeChunks(t, st, n, func(ctx context.Context, cells []grid.Cell) []grid.Series {
		var in []grid.Input
		for _, c := range cells {
			if skip == nil || !skip(c) {
				in = append(in, grid.Input{GridID: c.GridID, Params: grid.ReferenceParams(c.Lat, c.Lon)})
			}
		}
		series, err := m.Compute(ctx, in)
		require.NoError(t, err)
		return series
	}, status, batch.Gate{}.Decide(batch.AtEnd))
}

// StoreValues makes a batch id of kind ph over r with layout l, each value
// given by value: chunks of chunkSize cells, each written as a worker
// would, a cell for which skip (when not nil) is true left out; then it
// ends succeeded, and its rows are published when publish is true,
// whatever checks ph declares. It returns the ended batch.
func StoreValues(t testing.TB, st *store.Store, id string, r grid.Region, chunkSize int, l store.SeriesLayout,
	skip func(gridID int64) bool, value func(gridID int64, series string, year int) float64, publish bool) store.Batch {
	t.Helper()
	n := store.NewBatch{ID: id, Kind: grid.KindPH, Region: r, ChunkSize: chunkSize, Layout: l}
	return storeChunks(t, st, n, func(_ context.Context, cells []grid.Cell) []grid.Series {
		var series []grid.Series
		for _, cell := range cells {
			if skip != nil && skip(cell.GridID) {
				continue
			}
			for _, name := range l.Names {
				v := make([]float64, l.Years)
				for y := range v {
					v[y] = value(cell.GridID, name, l.FirstYear+y)
				}
				series = append(series, grid.Series{GridID: cell.GridID, Scenario: name, Values: v})
			}
		}
		return series
	}, store.StatusSucceeded, func(ctx context.Context, e *store.Ending) error {
		if publish {
			return e.Publish(ctx)
		}
		return nil
	})
}

// storeChunks records batch n, writes each of its chunks' series (given
// the chunk's cells) as a worker would, and ends it with status and
// decide.
func storeChunks(t testing.TB, st *store.Store, n store.NewBatch, series func(ctx context.Context, cells []grid.Cell) []grid.Series,
	status string, decide store.Decide) store.Batch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	now := time.Now()
	n.StartedAt, n.DeadlineAt, n.LockExpiresAt, n.Trigger = now, now.Add(time.Hour), now.Add(2*time.Hour), "cli"
	b, err := st.InsertBatch(ctx, n)
	require.NoError(t, err)
	chunks, err := st.PlanChunks(ctx, b)
	require.NoError(t, err)
	for _, chunk := range chunks {
		s := series(ctx, n.Region.ChunkCells(chunk, n.ChunkSize))
		_, err = st.WriteChunk(ctx, n.Kind, n.Region.Lattice.Step, n.Layout.FirstYear, s, store.ChunkOutcome{BatchID: n.ID, Chunk: chunk, Attempts: 1}, false)
		require.NoError(t, err, "chunk %d", chunk)
	}
	b, _, _, err = st.FinishBatch(ctx, n.ID, store.Final{Status: status, PendingChunkStatus: store.ChunkCancelled}, decide)
	require.NoError(t, err)
	return b
}
