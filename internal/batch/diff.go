package batch

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/gridbatch/gridbatch/internal/store"
)

// DiffOptions choose what Diff compares.
type DiffOptions struct {
	// FromYear and ToYear bound the years compared (inclusive); zero means
	// no bound.
	FromYear, ToYear int
	// Top is how many of the largest changes to name per series. Defaults
	// to 5.
	Top int
}

// SeriesDiff is what changed in one series between two sets of values.
type SeriesDiff struct {
	Series string `json:"series"`
	// CellsCompared have the series in both; CellsChanged have at least one
	// value that differs (bit for bit, NaN equal to NaN).
	CellsCompared int64 `json:"cells_compared"`
	CellsChanged  int64 `json:"cells_changed"`
	// ValuesCompared and ValuesChanged count (cell, year) values;
	// NaNChanges are changes to or from NaN, which have no size.
	ValuesCompared int64 `json:"values_compared"`
	ValuesChanged  int64 `json:"values_changed"`
	NaNChanges     int64 `json:"nan_changes"`
	// MaxAbsChange is the largest |b − a|; P99AbsChange the 99th
	// percentile of |b − a| over the values compared (unchanged ones
	// counting as 0), to within 0.1% (the largest value seen in the
	// histogram bucket that holds it). Both 0 when nothing changed.
	MaxAbsChange float64 `json:"max_abs_change"`
	P99AbsChange float64 `json:"p99_abs_change"`
	// Largest are the largest changes, largest first.
	Largest []Change `json:"largest"`
}

// Change is one changed value.
type Change struct {
	GridID int64   `json:"grid_id"`
	Year   int     `json:"year"`
	A      float64 `json:"a"`
	B      float64 `json:"b"`
	Abs    float64 `json:"abs_change"`
}

// CellSource is what Diff reads: cells in grid order, as
// store.CellReader gives them.
type CellSource interface {
	Next() bool
	Cell() *store.StoredCell
	Err() error
}

// Diff compares the cells a and b give (both in grid order), one cell of
// each in memory at a time: per series the two have, the cells compared
// and changed, the largest and the 99th percentile absolute change, and
// the cells of the largest changes. A cell's series is taken from its
// first row that has it (store.StoredCell.Series). The values are
// compared as stored, without decoding a series that did not change.
func Diff(ctx context.Context, a, b CellSource, o DiffOptions) ([]SeriesDiff, error) {
	if o.Top <= 0 {
		o.Top = 5
	}
	acc := map[string]*seriesAcc{}
	var names []string
	okA, okB := a.Next(), b.Next()
	for n := 0; okA && okB; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		x, y := a.Cell(), b.Cell()
		switch {
		case x.GridID < y.GridID:
			okA = a.Next()
			continue
		case x.GridID > y.GridID:
			okB = b.Next()
			continue
		}
		names = seriesNames(names[:0], x)
		for _, name := range names {
			ra, fa, _ := x.Series(name)
			rb, fb, ok := y.Series(name)
			if !ok {
				continue
			}
			s := acc[name]
			if s == nil {
				s = &seriesAcc{d: SeriesDiff{Series: name}, top: o.Top}
				acc[name] = s
			}
			s.add(x.GridID, ra, fa, rb, fb, o)
		}
		okA, okB = a.Next(), b.Next()
	}
	if err := cmp.Or(a.Err(), b.Err()); err != nil {
		return nil, err
	}
	out := make([]SeriesDiff, 0, len(acc))
	for _, s := range acc {
		out = append(out, s.result())
	}
	slices.SortFunc(out, func(p, q SeriesDiff) int { return strings.Compare(p.Series, q.Series) })
	return out, nil
}

// seriesNames appends the names of the series of cell c to dst, each once.
func seriesNames(dst []string, c *store.StoredCell) []string {
	for _, r := range c.Rows {
		for _, name := range r.Layout.Names {
			if !slices.Contains(dst, name) {
				dst = append(dst, name)
			}
		}
	}
	return dst
}

// seriesAcc accumulates one series' diff. hist counts |change| by the
// top 22 bits of its float64 (sign, exponent and 10 bits of mantissa:
// buckets 0.1% wide), keeping each bucket's largest value: a table of
// 1,024 buckets per exponent seen, at most 2,048 of them (32 MiB) however
// many values are compared.
type seriesAcc struct {
	d     SeriesDiff
	hist  [2048]*histBuckets
	zeros int64
	top   int
}

// histBuckets are the 1,024 buckets of one exponent.
type histBuckets struct {
	n   [1024]int64
	max [1024]float64
}

// add compares cell id's series, a from year fa and b from year fb, raw
// (8 big-endian bytes a value), over the years both have within o's.
func (s *seriesAcc) add(id int64, a []byte, fa int, b []byte, fb int, o DiffOptions) {
	s.d.CellsCompared++
	first := max(fa, fb)
	last := min(fa+len(a)/8, fb+len(b)/8) - 1
	if o.FromYear != 0 {
		first = max(first, o.FromYear)
	}
	if o.ToYear != 0 {
		last = min(last, o.ToYear)
	}
	if first > last {
		return
	}
	n := int64(last - first + 1)
	s.d.ValuesCompared += n
	a, b = a[8*(first-fa):8*(last-fa+1)], b[8*(first-fb):8*(last-fb+1)]
	if bytes.Equal(a, b) {
		s.zeros += n
		return
	}
	changed := false
	for i := range int(n) {
		ba, bb := binary.BigEndian.Uint64(a[8*i:]), binary.BigEndian.Uint64(b[8*i:])
		x, y := math.Float64frombits(ba), math.Float64frombits(bb)
		if ba == bb || (x != x && y != y) {
			s.zeros++
			continue
		}
		changed = true
		s.d.ValuesChanged++
		if x != x || y != y {
			s.d.NaNChanges++
			continue
		}
		d := math.Abs(y - x)
		if d == 0 { // -0 and +0
			s.zeros++
			continue
		}
		k := math.Float64bits(d) >> 42
		h := s.hist[k>>10]
		if h == nil {
			h = &histBuckets{}
			s.hist[k>>10] = h
		}
		h.n[k&1023]++
		h.max[k&1023] = max(h.max[k&1023], d)
		s.d.MaxAbsChange = max(s.d.MaxAbsChange, d)
		if len(s.d.Largest) < s.top || d > s.d.Largest[len(s.d.Largest)-1].Abs {
			c := Change{GridID: id, Year: first + i, A: x, B: y, Abs: d}
			at := sort.Search(len(s.d.Largest), func(i int) bool { return s.d.Largest[i].Abs < d })
			s.d.Largest = slices.Insert(s.d.Largest, at, c)
			if len(s.d.Largest) > s.top {
				s.d.Largest = s.d.Largest[:s.top]
			}
		}
	}
	if changed {
		s.d.CellsChanged++
	}
}

// result returns the diff, its p99 from the histogram: the nearest-rank
// 99th percentile of |change| over the values with a size (NaN changes
// left out), unchanged values counting as 0.
func (s *seriesAcc) result() SeriesDiff {
	d := s.d
	if d.Largest == nil {
		d.Largest = []Change{}
	}
	n := s.zeros
	for _, h := range s.hist {
		if h != nil {
			for _, c := range h.n {
				n += c
			}
		}
	}
	if n == 0 {
		return d
	}
	rank := int64(math.Ceil(0.99 * float64(n))) // 1-based
	if rank <= s.zeros {
		return d
	}
	seen := s.zeros
	for _, h := range s.hist { // by exponent, then mantissa: ascending
		if h == nil {
			continue
		}
		for k, c := range h.n {
			if seen += c; c > 0 && seen >= rank {
				d.P99AbsChange = h.max[k]
				return d
			}
		}
	}
	return d
}
