package grid

import (
	"fmt"
	"math"

	"github.com/gridbatch/gridbatch/internal/numfmt"
)

// Region is the cells of a lattice whose centres lie inside a bbox (bounds
// inclusive), taken in row-major order: south to north, and west to east
// within a row. Grid ids therefore increase through the region. The cells
// are the half-open rectangle [Row0,Row1) x [Col0,Col1). Build one with
// NewRegion.
type Region struct {
	Lattice    Lattice
	BBox       BBox
	Row0, Row1 int
	Col0, Col1 int
}

// NewRegion returns the region of l whose cell centres lie in b. It validates
// b and l, and returns an error when no cell centre lies in b or when the
// region has more than maxCells cells. A maxCells of zero or less means no
// limit. Errors are a single line naming the bbox and step, for example
// "bbox -180,-90,180,90 at step 0.05 has 25,920,000 cells, more than the limit
// of 10,000,000 (GRIDBATCH_MAX_CELLS); use a smaller bbox or a coarser step".
func NewRegion(l Lattice, b BBox, maxCells int) (Region, error) {
	if err := b.Validate(); err != nil {
		return Region{}, err
	}
	if err := l.validate(); err != nil {
		return Region{}, err
	}
	r := Region{Lattice: l, BBox: b}
	r.Row0, r.Row1 = centreRange(b.LatMin, b.LatMax, -90, l.Step, l.Rows)
	r.Col0, r.Col1 = centreRange(b.LonMin, b.LonMax, -180, l.Step, l.Cols)
	if r.Row0 >= r.Row1 || r.Col0 >= r.Col1 {
		return Region{}, fmt.Errorf("bbox %s at step %s contains no cell centre", b, fmtFloat(l.Step))
	}
	if n := r.NumCells(); maxCells > 0 && n > maxCells {
		return Region{}, fmt.Errorf("bbox %s at step %s has %s cells, more than the limit of %s (GRIDBATCH_MAX_CELLS); use a smaller bbox or a coarser step",
			b, fmtFloat(l.Step), numfmt.Int(n), numfmt.Int(maxCells))
	}
	return r, nil
}

// centreRange returns the half-open index range [i0,i1) within [0,n) of the
// cells whose centres origin + (i+0.5)*step lie in [lo,hi]. It starts from
// the arithmetic estimate and then corrects it by comparing the centres
// themselves, so that rounding in the division cannot add or drop a cell.
func centreRange(lo, hi, origin, step float64, n int) (i0, i1 int) {
	centre := func(i int) float64 { return origin + (float64(i)+0.5)*step }
	i0 = clampIndex(math.Ceil((lo-origin)/step-0.5), n)
	for i0 > 0 && centre(i0-1) >= lo {
		i0--
	}
	for i0 < n && centre(i0) < lo {
		i0++
	}
	i1 = clampIndex(math.Floor((hi-origin)/step-0.5)+1, n)
	for i1 < n && centre(i1) <= hi {
		i1++
	}
	for i1 > 0 && centre(i1-1) > hi {
		i1--
	}
	return i0, i1
}

// clampIndex converts f to an int clamped to [0,n].
func clampIndex(f float64, n int) int {
	if !(f > 0) {
		return 0
	}
	if f >= float64(n) {
		return n
	}
	return int(f)
}

// NumRows returns the number of lattice rows in the region.
func (r Region) NumRows() int { return r.Row1 - r.Row0 }

// NumCols returns the number of lattice columns in the region.
func (r Region) NumCols() int { return r.Col1 - r.Col0 }

// NumCells returns the number of cells in the region.
func (r Region) NumCells() int { return r.NumRows() * r.NumCols() }

// CellAt returns the k-th cell of the region in row-major order. It panics
// when k is outside [0, NumCells()).
func (r Region) CellAt(k int) Cell {
	if k < 0 || k >= r.NumCells() {
		panic(fmt.Sprintf("grid: Region.CellAt(%d) outside [0,%d)", k, r.NumCells()))
	}
	w := r.NumCols()
	return r.Lattice.Cell(r.Row0+k/w, r.Col0+k%w)
}

// NumChunks returns the number of chunks of size cells that cover the
// region: ceil(NumCells()/size). It panics when size is not positive.
func (r Region) NumChunks(size int) int {
	checkChunkSize(size)
	n := r.NumCells()
	return n/size + min(n%size, 1)
}

// ChunkRange returns the half-open range [start,end) of the cell indexes in
// chunk i: [i*size, min((i+1)*size, NumCells())). Every chunk but the last
// holds exactly size cells. For i >= NumChunks(size) the range is empty,
// start == end == NumCells(). It panics when size is not positive or i is
// negative.
func (r Region) ChunkRange(i, size int) (start, end int) {
	checkChunkSize(size)
	if i < 0 {
		panic(fmt.Sprintf("grid: chunk index %d is negative", i))
	}
	n := r.NumCells()
	if i >= r.NumChunks(size) {
		return n, n
	}
	start = i * size
	return start, min(start+size, n)
}

// ChunkCells returns the cells of chunk i in row-major order (see
// ChunkRange). It returns an empty slice for i >= NumChunks(size) and panics
// when size is not positive or i is negative.
func (r Region) ChunkCells(i, size int) []Cell {
	start, end := r.ChunkRange(i, size)
	cells := make([]Cell, 0, end-start)
	r.walk(start, end, func(row, col int) { cells = append(cells, r.Lattice.Cell(row, col)) })
	return cells
}

// MaxChunkSize bounds what a chunk may hold: a chunk task naming more cells
// is refused before anything is allocated from it (GRIDBATCH_CHUNK_SIZE has
// the same bound).
const MaxChunkSize = 100_000

// ChunkIDs returns the grid ids of the cells of chunk i in row-major order,
// which is increasing order (see ChunkRange). It returns an empty slice for
// i >= NumChunks(size) and panics when size is not positive or i is
// negative.
func (r Region) ChunkIDs(i, size int) []int64 {
	start, end := r.ChunkRange(i, size)
	ids := make([]int64, 0, end-start)
	r.walk(start, end, func(row, col int) { ids = append(ids, r.Lattice.GridID(row, col)) })
	return ids
}

// walk calls fn with the row and column of each cell with index in
// [start,end), in row-major order.
func (r Region) walk(start, end int, fn func(row, col int)) {
	if start >= end {
		return
	}
	w := r.NumCols()
	row, col := r.Row0+start/w, r.Col0+start%w
	for range end - start {
		fn(row, col)
		col++
		if col == r.Col1 {
			col = r.Col0
			row++
		}
	}
}

// checkChunkSize panics when size is not positive.
func checkChunkSize(size int) {
	if size <= 0 {
		panic(fmt.Sprintf("grid: chunk size %d must be positive", size))
	}
}

// ParseRegion builds the region of a bbox string ("LON0,LAT0,LON1,LAT1") on
// the lattice of step, as NewRegion does, with the errors of ParseBBox,
// NewLattice and NewRegion.
func ParseRegion(step float64, bbox string, maxCells int) (Region, error) {
	l, err := NewLattice(step)
	if err != nil {
		return Region{}, err
	}
	b, err := ParseBBox(bbox)
	if err != nil {
		return Region{}, err
	}
	return NewRegion(l, b, maxCells)
}
