package grid

import (
	"testing"

	"github.com/stretchr/testify/require"
)

var korea = BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}

func mustRegion(t testing.TB, step float64, b BBox) Region {
	t.Helper()
	r, err := NewRegion(mustLattice(t, step), b, 0)
	require.NoError(t, err)
	return r
}

func TestNewRegionCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		step       float64
		bbox       BBox
		rows, cols int
		cells      int
	}{
		{name: "korea 0.05", step: 0.05, bbox: korea, rows: 120, cols: 160, cells: 19_200},
		{name: "korea 0.02", step: 0.02, bbox: korea, rows: 300, cols: 400, cells: 120_000},
		{name: "korea 0.01", step: 0.01, bbox: korea, rows: 600, cols: 800, cells: 480_000},
		{name: "korea 0.1", step: 0.1, bbox: korea, rows: 60, cols: 80, cells: 4_800},
		{name: "korea 0.25", step: 0.25, bbox: korea, rows: 24, cols: 32, cells: 768},
		{name: "whole globe 0.05", step: 0.05, bbox: BBox{-180, -90, 180, 90}, rows: 3600, cols: 7200, cells: 25_920_000},
		// At step 1 the centres are at x.5, so these bounds sit exactly on centres: inclusive.
		{name: "bounds on centres are inclusive", step: 1, bbox: BBox{0.5, 10.5, 3.5, 12.5}, rows: 3, cols: 4, cells: 12},
		{name: "bounds just inside centres", step: 1, bbox: BBox{0.5000001, 10.5000001, 3.4999999, 12.4999999}, rows: 1, cols: 2, cells: 2},
		{name: "bounds on centres at 0.05", step: 0.05, bbox: BBox{124.025, 33.025, 124.125, 33.075}, rows: 2, cols: 3, cells: 6},
		{name: "single cell", step: 0.05, bbox: BBox{124.01, 33.01, 124.04, 33.04}, rows: 1, cols: 1, cells: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := mustRegion(t, tt.step, tt.bbox)
			require.Equal(t, tt.rows, r.NumRows())
			require.Equal(t, tt.cols, r.NumCols())
			require.Equal(t, tt.cells, r.NumCells())
			// Brute force over every row and column of the lattice.
			l := r.Lattice
			var rows, cols int
			for row := range l.Rows {
				if c := l.Cell(row, 0); c.Lat >= tt.bbox.LatMin && c.Lat <= tt.bbox.LatMax {
					rows++
				}
			}
			for col := range l.Cols {
				if c := l.Cell(0, col); c.Lon >= tt.bbox.LonMin && c.Lon <= tt.bbox.LonMax {
					cols++
				}
			}
			require.Equal(t, tt.rows, rows, "brute-force rows")
			require.Equal(t, tt.cols, cols, "brute-force cols")
			// Every centre inside; the neighbours just outside are outside.
			in := func(row, col int) bool {
				c := l.Cell(row, col)
				return c.Lat >= tt.bbox.LatMin && c.Lat <= tt.bbox.LatMax && c.Lon >= tt.bbox.LonMin && c.Lon <= tt.bbox.LonMax
			}
			require.True(t, in(r.Row0, r.Col0))
			require.True(t, in(r.Row1-1, r.Col1-1))
			if r.Row0 > 0 {
				require.False(t, in(r.Row0-1, r.Col0))
			}
			if r.Row1 < l.Rows {
				require.False(t, in(r.Row1, r.Col0))
			}
			if r.Col0 > 0 {
				require.False(t, in(r.Row0, r.Col0-1))
			}
			if r.Col1 < l.Cols {
				require.False(t, in(r.Row0, r.Col1))
			}
		})
	}
}

func TestNewRegionKoreaCorners(t *testing.T) {
	t.Parallel()
	r := mustRegion(t, 0.05, korea)
	first, last := r.CellAt(0), r.CellAt(r.NumCells()-1)
	require.Equal(t, Cell{GridID: 2460*7200 + 6080, Row: 2460, Col: 6080, Lat: first.Lat, Lon: first.Lon}, first)
	require.InDelta(t, 33.025, first.Lat, 1e-9)
	require.InDelta(t, 124.025, first.Lon, 1e-9)
	require.Equal(t, 2579, last.Row)
	require.Equal(t, 6239, last.Col)
	require.InDelta(t, 38.975, last.Lat, 1e-9)
	require.InDelta(t, 131.975, last.Lon, 1e-9)
}

func TestNewRegionErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lattice  Lattice
		bbox     BBox
		maxCells int
		wantErr  string
	}{
		{name: "too many cells", lattice: Lattice{Step: 0.05, Rows: 3600, Cols: 7200}, bbox: BBox{-180, -90, 180, 90}, maxCells: 10_000_000,
			wantErr: "bbox -180,-90,180,90 at step 0.05 has 25,920,000 cells, more than the limit of 10,000,000 (GRIDBATCH_MAX_CELLS); use a smaller bbox or a coarser step"},
		{name: "one over the limit", lattice: Lattice{Step: 0.05, Rows: 3600, Cols: 7200}, bbox: korea, maxCells: 19_199,
			wantErr: "bbox 124,33,132,39 at step 0.05 has 19,200 cells, more than the limit of 19,199 (GRIDBATCH_MAX_CELLS); use a smaller bbox or a coarser step"},
		{name: "no centre between rows", lattice: Lattice{Step: 1, Rows: 180, Cols: 360}, bbox: BBox{0, 10.6, 10, 11.4},
			wantErr: "bbox 0,10.6,10,11.4 at step 1 contains no cell centre"},
		{name: "no centre between cols", lattice: Lattice{Step: 0.05, Rows: 3600, Cols: 7200}, bbox: BBox{124.03, 33, 124.07, 34},
			wantErr: "bbox 124.03,33,124.07,34 at step 0.05 contains no cell centre"},
		{name: "invalid bbox", lattice: Lattice{Step: 0.05, Rows: 3600, Cols: 7200}, bbox: BBox{130, 33, 124, 39},
			wantErr: "bbox lon_min 130 must be less than lon_max 124"},
		{name: "bbox outside range", lattice: Lattice{Step: 0.05, Rows: 3600, Cols: 7200}, bbox: BBox{124, 33, 132, 91},
			wantErr: "bbox lat_max 91 outside [-90,90]"},
		{name: "zero lattice", lattice: Lattice{}, bbox: korea,
			wantErr: "step 0: must be positive, such as 0.05"},
		{name: "inconsistent lattice", lattice: Lattice{Step: 0.05, Rows: 10, Cols: 20}, bbox: korea,
			wantErr: "lattice step 0.05: rows 10, cols 20 do not match the step (want 3600, 7200)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewRegion(tt.lattice, tt.bbox, tt.maxCells)
			require.EqualError(t, err, tt.wantErr)
			require.NotContains(t, err.Error(), "\n")
		})
	}
}

func TestNewRegionLimit(t *testing.T) {
	t.Parallel()
	l := mustLattice(t, 0.05)
	for _, maxCells := range []int{-1, 0, 19_200, 1_000_000} {
		r, err := NewRegion(l, korea, maxCells)
		require.NoError(t, err, "maxCells %d", maxCells)
		require.Equal(t, 19_200, r.NumCells())
	}
}

func TestRegionChunks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		step       float64
		bbox       BBox
		size       int
		wantChunks int
		wantLast   int
	}{
		{name: "korea 0.05 by 500", step: 0.05, bbox: korea, size: 500, wantChunks: 39, wantLast: 200},
		{name: "korea 0.05 by 960 divides evenly", step: 0.05, bbox: korea, size: 960, wantChunks: 20, wantLast: 960},
		{name: "chunk wider than a row", step: 0.25, bbox: korea, size: 77, wantChunks: 10, wantLast: 75},
		{name: "chunk larger than region", step: 0.25, bbox: korea, size: 10_000, wantChunks: 1, wantLast: 768},
		{name: "one cell chunks", step: 1, bbox: BBox{0, 0, 5, 3}, size: 1, wantChunks: 15, wantLast: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := mustRegion(t, tt.step, tt.bbox)
			n := r.NumCells()
			require.Equal(t, tt.wantChunks, r.NumChunks(tt.size))

			// Expected order: row-major over the rectangle.
			var want []Cell
			for row := r.Row0; row < r.Row1; row++ {
				for col := r.Col0; col < r.Col1; col++ {
					want = append(want, r.Lattice.Cell(row, col))
				}
			}
			require.Len(t, want, n)

			var got []Cell
			var gotIDs []int64
			for i := range r.NumChunks(tt.size) {
				start, end := r.ChunkRange(i, tt.size)
				require.Equal(t, len(got), start, "chunk %d starts where the previous ended", i)
				cells, ids := r.ChunkCells(i, tt.size), r.ChunkIDs(i, tt.size)
				require.Len(t, cells, end-start)
				require.Len(t, ids, end-start)
				if i < r.NumChunks(tt.size)-1 {
					require.Len(t, cells, tt.size)
				} else {
					require.Len(t, cells, tt.wantLast)
				}
				for k, c := range cells {
					require.Equal(t, c, r.CellAt(start+k))
					require.Equal(t, c.GridID, ids[k])
				}
				got = append(got, cells...)
				gotIDs = append(gotIDs, ids...)
			}
			require.Equal(t, want, got)
			for k := 1; k < len(gotIDs); k++ {
				require.Less(t, gotIDs[k-1], gotIDs[k], "grid ids increase")
			}

			// Past the end: empty.
			start, end := r.ChunkRange(r.NumChunks(tt.size), tt.size)
			require.Equal(t, n, start)
			require.Equal(t, n, end)
			require.Empty(t, r.ChunkCells(r.NumChunks(tt.size)+5, tt.size))
			require.Empty(t, r.ChunkIDs(r.NumChunks(tt.size)+5, tt.size))
		})
	}
}

func TestRegionPanics(t *testing.T) {
	t.Parallel()
	r := mustRegion(t, 0.25, korea)
	tests := []struct {
		name string
		fn   func()
	}{
		{name: "CellAt negative", fn: func() { r.CellAt(-1) }},
		{name: "CellAt past end", fn: func() { r.CellAt(r.NumCells()) }},
		{name: "NumChunks zero size", fn: func() { r.NumChunks(0) }},
		{name: "ChunkRange negative size", fn: func() { r.ChunkRange(0, -5) }},
		{name: "ChunkRange negative index", fn: func() { r.ChunkRange(-1, 10) }},
		{name: "ChunkIDs zero size", fn: func() { r.ChunkIDs(0, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Panics(t, tt.fn)
		})
	}
}
