package batch

import (
	"context"
	"errors"
	"math"
	"slices"
	"sort"

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

// Diff compares the series a and b stream (each in grid_id, then series
// order, as store.Export gives them), holding one cell's series of each
// in memory at a time: per series, the cells compared and changed, the
// largest and the 99th percentile absolute change, and the cells of the
// largest changes.
func Diff(ctx context.Context, a, b func(ctx context.Context, fn func(store.ExportRow) error) error, o DiffOptions) ([]SeriesDiff, error) {
	if o.Top <= 0 {
		o.Top = 5
	}
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ra, ea := stream(ctx, a)
	rb, eb := stream(ctx, b)
	acc := map[string]*seriesAcc{}
	x, okx := <-ra
	y, oky := <-rb
	for okx && oky {
		switch c := compareKey(x, y); {
		case c < 0:
			x, okx = <-ra
		case c > 0:
			y, oky = <-rb
		default:
			s := acc[x.Scenario]
			if s == nil {
				s = &seriesAcc{d: SeriesDiff{Series: x.Scenario}, hist: map[uint64]*bucket{}, top: o.Top}
				acc[x.Scenario] = s
			}
			s.add(x, y, o)
			x, okx = <-ra
			y, oky = <-rb
		}
	}
	cancel()
	for range ra {
	}
	for range rb {
	}
	if err := parent.Err(); err != nil {
		return nil, err
	}
	if err := <-ea; err != nil && !isCancel(err) {
		return nil, err
	}
	if err := <-eb; err != nil && !isCancel(err) {
		return nil, err
	}
	out := make([]SeriesDiff, 0, len(acc))
	for _, s := range acc {
		out = append(out, s.result())
	}
	slices.SortFunc(out, func(p, q SeriesDiff) int {
		if p.Series < q.Series {
			return -1
		}
		if p.Series > q.Series {
			return 1
		}
		return 0
	})
	return out, nil
}

func isCancel(err error) bool { return errors.Is(err, context.Canceled) }

// stream runs src in a goroutine, copying each row out to the channel.
func stream(ctx context.Context, src func(ctx context.Context, fn func(store.ExportRow) error) error) (<-chan store.ExportRow, <-chan error) {
	rows := make(chan store.ExportRow, 256)
	errc := make(chan error, 1)
	go func() {
		defer close(rows)
		errc <- src(ctx, func(r store.ExportRow) error {
			r.Values = slices.Clone(r.Values)
			select {
			case rows <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	return rows, errc
}

func compareKey(x, y store.ExportRow) int {
	switch {
	case x.GridID != y.GridID:
		if x.GridID < y.GridID {
			return -1
		}
		return 1
	case x.Scenario < y.Scenario:
		return -1
	case x.Scenario > y.Scenario:
		return 1
	}
	return 0
}

// seriesAcc accumulates one series' diff. hist counts |change| by the
// top 22 bits of its float64 (exponent and 10 bits of mantissa: buckets
// 0.1% wide), keeping each bucket's largest value.
type seriesAcc struct {
	d     SeriesDiff
	hist  map[uint64]*bucket
	zeros int64
	top   int
}

type bucket struct {
	n   int64
	max float64
}

func (s *seriesAcc) add(x, y store.ExportRow, o DiffOptions) {
	s.d.CellsCompared++
	changed := false
	first := max(x.FirstYear, y.FirstYear)
	last := min(x.FirstYear+len(x.Values), y.FirstYear+len(y.Values)) - 1
	if o.FromYear != 0 {
		first = max(first, o.FromYear)
	}
	if o.ToYear != 0 {
		last = min(last, o.ToYear)
	}
	for year := first; year <= last; year++ {
		a, b := x.Values[year-x.FirstYear], y.Values[year-y.FirstYear]
		s.d.ValuesCompared++
		if math.Float64bits(a) == math.Float64bits(b) || (a != a && b != b) {
			s.zeros++
			continue
		}
		changed = true
		s.d.ValuesChanged++
		if a != a || b != b {
			s.d.NaNChanges++
			continue
		}
		d := math.Abs(b - a)
		if d == 0 { // -0 and +0
			s.zeros++
			continue
		}
		k := math.Float64bits(d) >> 42
		bk := s.hist[k]
		if bk == nil {
			bk = &bucket{}
			s.hist[k] = bk
		}
		bk.n++
		bk.max = max(bk.max, d)
		s.d.MaxAbsChange = max(s.d.MaxAbsChange, d)
		if len(s.d.Largest) < s.top || d > s.d.Largest[len(s.d.Largest)-1].Abs {
			c := Change{GridID: x.GridID, Year: year, A: a, B: b, Abs: d}
			i := sort.Search(len(s.d.Largest), func(i int) bool { return s.d.Largest[i].Abs < d })
			s.d.Largest = slices.Insert(s.d.Largest, i, c)
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
	keys := make([]uint64, 0, len(s.hist))
	for k, b := range s.hist {
		keys = append(keys, k)
		n += b.n
	}
	if n == 0 {
		return d
	}
	rank := int64(math.Ceil(0.99 * float64(n))) // 1-based
	if rank <= s.zeros {
		return d
	}
	slices.Sort(keys)
	seen := s.zeros
	for _, k := range keys {
		seen += s.hist[k].n
		if seen >= rank {
			d.P99AbsChange = s.hist[k].max
			break
		}
	}
	return d
}
