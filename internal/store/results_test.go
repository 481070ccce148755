package store_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
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
	newBatch := func(id string) store.Batch { return startBatch(t, st, id, r, time.Now()) }
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

	countRows := func(b store.Batch) int {
		var n int
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{tableOf(t, db, b.ID)}.Sanitize()).Scan(&n))
		return n
	}

	ended := newBatch("ended")
	_, _, _, err = st.FinishBatch(ctx, ended.ID, store.Final{Status: store.StatusCancelled, PendingChunkStatus: store.ChunkCancelled}, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtEnd))
	require.NoError(t, err)
	tr, err := st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series(0, 1), store.ChunkOutcome{BatchID: ended.ID, Chunk: 0, Attempts: 1}, false)
	require.NoError(t, err, "a chunk of an ended batch writes nothing")
	require.False(t, tr.BatchRunning)
	require.Zero(t, countRows(ended))

	b := newBatch("running")
	// Series that do not fit the batch's layout (a scenario short, another
	// first year) are refused and write nothing; the chunk stays pending.
	_, err = st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series(0, 2)[1:], store.ChunkOutcome{BatchID: b.ID, Chunk: 0, Attempts: 1}, false)
	require.ErrorIs(t, err, store.ErrLayout)
	require.ErrorContains(t, err, "has 2 series, not the 3 of its layout (ssp126, ssp245, ssp585)")
	_, err = st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear+1, series(0, 2), store.ChunkOutcome{BatchID: b.ID, Chunk: 0, Attempts: 1}, false)
	require.ErrorIs(t, err, store.ErrLayout)
	require.Zero(t, countRows(b))
	for chunk := range 2 {
		tr, err := st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series(chunk, 2), store.ChunkOutcome{BatchID: b.ID, Chunk: chunk, Attempts: 1}, false)
		require.NoError(t, err, "chunk %d", chunk)
		require.True(t, tr.Changed)
		require.Equal(t, 2*(chunk+1), tr.Done, "cells counted from the chunks after the commit")
	}
	// A duplicate delivery writes nothing: one copy of each row, the first.
	tr, err = st.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series(1, 3), store.ChunkOutcome{BatchID: b.ID, Chunk: 1, Attempts: 2}, false)
	require.NoError(t, err)
	require.False(t, tr.Changed)
	require.Equal(t, 4, countRows(b), "a row per cell")
	n, err := st.BatchRows(ctx, b.ID)
	require.NoError(t, err)
	require.Equal(t, int64(4*len(grid.Scenarios)), n, "a series per cell and scenario")
	// Running, the batch's rows are its own: readers of the published values see none.
	_, err = st.ReadSeries(ctx, grid.KindPH, 0.05, r.ChunkIDs(0, 2)[0], "ssp585")
	require.ErrorIs(t, err, store.ErrNoSeries)
	read := func(name string, get func(id int64) (store.StoredSeries, error)) {
		for chunk := range 2 {
			for _, id := range r.ChunkIDs(chunk, 2) {
				got, err := get(id)
				require.NoError(t, err, name)
				want := values(2 + float64(id))
				require.Len(t, got.Values, len(want))
				for i := range want {
					require.Equal(t, math.Float64bits(want[i]), math.Float64bits(got.Values[i]), "%s: cell %d year %d", name, id, i)
				}
				require.Equal(t, b.ID, got.BatchID)
			}
		}
	}
	read("the batch's own rows", func(id int64) (store.StoredSeries, error) {
		return st.ReadBatchSeries(ctx, b.ID, 0.05, id, "ssp585")
	})
	// Succeeded, it is published with its end.
	fin, _, ended2, err := st.FinishBatch(ctx, b.ID, store.Final{PendingChunkStatus: store.ChunkCancelled}, batch.Gate{Models: testutil.NoChecks()}.Decide(batch.AtEnd))
	require.NoError(t, err)
	require.True(t, ended2)
	require.Equal(t, store.StatusSucceeded, fin.Status)
	require.NotNil(t, fin.PublishedAt)
	read("the published rows", func(id int64) (store.StoredSeries, error) {
		return st.ReadSeries(ctx, grid.KindPH, 0.05, id, "ssp585")
	})
	// The view decodes the rows in SQL (gridbatch_float8s): the same bits,
	// -0, the smallest subnormal and +Inf included.
	read("ph_timeseries", func(id int64) (store.StoredSeries, error) {
		ss := store.StoredSeries{}
		err := db.Pool.QueryRow(ctx, `SELECT series, batch_id FROM ph_timeseries WHERE step = 0.05 AND grid_id = $1 AND scenario = 'ssp585'`, id).
			Scan(&ss.Values, &ss.BatchID)
		return ss, err
	})
}

// TestConcurrentDuplicateDeliveries runs the same chunk task's write many
// times at once: each row is stored once.
func TestConcurrentDuplicateDeliveries(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "124,33,124.5,33.5", 0.05) // 100 cells
	now := time.Now()
	b, err := db.Store.InsertBatch(ctx, store.NewBatch{ID: "dup", Kind: grid.KindPH, Region: r, ChunkSize: 100, StartedAt: now,
		DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour), Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
	require.NoError(t, err)
	_, err = db.Store.PlanChunks(ctx, b)
	require.NoError(t, err)
	var series []grid.Series
	for _, id := range r.ChunkIDs(0, 100) {
		for _, s := range grid.Scenarios {
			series = append(series, grid.Series{GridID: id, Scenario: s.Name, Values: make([]float64, grid.NumYears)})
		}
	}
	var wg sync.WaitGroup
	changed := make(chan bool, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr, err := db.Store.WriteChunk(ctx, grid.KindPH, 0.05, grid.FirstYear, series, store.ChunkOutcome{BatchID: b.ID, Chunk: 0, Attempts: 1}, false)
			assert.NoError(t, err)
			changed <- tr.Changed
		}()
	}
	wg.Wait()
	close(changed)
	n := 0
	for c := range changed {
		if c {
			n++
		}
	}
	require.Equal(t, 1, n, "one delivery recorded the chunk")
	var rows, distinct int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT grid_id) FROM `+
		pgx.Identifier{tableOf(t, db, b.ID)}.Sanitize()).Scan(&rows, &distinct))
	require.Equal(t, 100, rows, "a row per cell")
	require.Equal(t, rows, distinct)
}

// startBatch records a running ph batch over r, in chunks of 2 cells,
// started at started, and plans its chunks.
func startBatch(t *testing.T, st *store.Store, id string, r grid.Region, started time.Time) store.Batch {
	t.Helper()
	ctx := testContext(t)
	b, err := st.InsertBatch(ctx, store.NewBatch{ID: id, Kind: grid.KindPH, Region: r, ChunkSize: 2, StartedAt: started,
		DeadlineAt: started.Add(time.Hour), LockExpiresAt: started.Add(2 * time.Hour), Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
	require.NoError(t, err)
	_, err = st.PlanChunks(ctx, b)
	require.NoError(t, err)
	return b
}

// tableOf is the table of a batch's own rows.
func tableOf(t *testing.T, db *testutil.DB, batchID string) string {
	var table string
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT results_table FROM batch_runs WHERE id = $1`, batchID).Scan(&table))
	return table
}

// BenchmarkWriteChunk writes 500-cell chunks of ph series (3 × 80 float64s
// a cell) through WriteChunk, one at a time on one connection: the write
// path's cost per cell on the worker's side (encoding, COPY, round trips),
// with the database's on the same machine.
func BenchmarkWriteChunk(b *testing.B) {
	ctx := testContext(b)
	db := testutil.NewDB(b)
	st, err := store.Open(ctx, store.Options{URL: db.URL, MaxConns: 1})
	require.NoError(b, err)
	b.Cleanup(st.Close)
	const chunkSize = 500
	r := region(b, "124,33,126,35", 0.01) // 40,000 cells, 80 chunks
	spec := model.BuiltinSpec(grid.KindPH)
	var batch store.Batch
	chunk := r.NumChunks(chunkSize)
	series := func(chunk int) []grid.Series {
		var out []grid.Series
		for _, id := range r.ChunkIDs(chunk, chunkSize) {
			for _, s := range grid.Scenarios {
				v := make([]float64, grid.NumYears)
				for i := range v {
					v[i] = float64(id) + s.Rate*float64(i)
				}
				out = append(out, grid.Series{GridID: id, Scenario: s.Name, Values: v})
			}
		}
		return out
	}
	chunks := make([][]grid.Series, r.NumChunks(chunkSize))
	for i := range chunks {
		chunks[i] = series(i)
	}
	var batches, cells int
	b.ReportAllocs()
	for b.Loop() {
		if chunk == len(chunks) {
			b.StopTimer()
			batches++
			now := time.Now()
			batch, err = st.InsertBatch(ctx, store.NewBatch{ID: fmt.Sprintf("bench-%d", batches), Kind: grid.KindPH, Region: r, ChunkSize: chunkSize,
				StartedAt: now, DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour), Layout: store.LayoutOf(spec)})
			require.NoError(b, err)
			_, err = st.PlanChunks(ctx, batch)
			require.NoError(b, err)
			chunk = 0
			b.StartTimer()
		}
		_, err := st.WriteChunk(ctx, grid.KindPH, 0.01, grid.FirstYear, chunks[chunk], store.ChunkOutcome{BatchID: batch.ID, Chunk: chunk, Attempts: 1}, false)
		if err != nil {
			b.Fatal(err)
		}
		cells += len(chunks[chunk]) / len(grid.Scenarios)
		chunk++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(cells), "ns/cell")
}
