package batch

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// maxExamples is how many of the worst values a failed check names.
const maxExamples = 5

// RunChecks runs the declared checks c on the batch's own rows and
// returns the report. What the range and max_nan checks find and the
// cells computed come from the batch's chunks, as their workers recorded
// them when they wrote the rows (CheckChunk, kept once per chunk with its
// success): nothing is read again. When some chunk has no such record (a
// worker declaring other checks, or none), the rows are read instead,
// streaming from the transaction of e, one cell's values in memory at a
// time. max_change reads each cell's rows alongside the published values.
func RunChecks(ctx context.Context, e *store.Ending, c *model.Checks) (store.CheckReport, error) {
	start := time.Now()
	b := e.Batch
	k := newChecker(c)
	chunks, ok, err := e.ChunkChecks(ctx, c.String())
	if err != nil {
		return store.CheckReport{}, err
	}
	if ok {
		for _, cc := range chunks {
			k.addChunk(cc)
		}
	}
	k.values = !ok
	if !ok || c.MaxChange != nil {
		l := b.Layout
		err := e.Cells(ctx, c.MaxChange != nil, func(id int64, values, pub []float64) error {
			if k.values {
				k.cells++
			}
			for i, name := range l.Names {
				v := values[i*l.Years : (i+1)*l.Years]
				var p []float64
				if pub != nil {
					p = pub[i*l.Years : (i+1)*l.Years]
				}
				k.series(id, name, l.FirstYear, v, p)
			}
			return nil
		})
		if err != nil {
			return store.CheckReport{}, fmt.Errorf("check the rows of %s: %w", b.ID, err)
		}
	}
	r := k.report(b.TotalCells)
	r.Status, r.CheckedAt, r.Seconds = b.Status, time.Now().UTC(), time.Since(start).Seconds()
	if b.Status == store.StatusHeld && b.Checks != nil {
		r.Status = b.Checks.Status // the status it was held from
	}
	return r, nil
}

// CheckChunk runs the checks c on a chunk's series as a worker computed
// them (those of a cell next to each other, each from firstYear): what
// RunChecks adds up for the batch. nil when c declares no check.
func CheckChunk(c *model.Checks, firstYear int, series []grid.Series) *store.ChunkChecks {
	if !c.Declared() {
		return nil
	}
	k := newChecker(c)
	k.values = true
	for i, s := range series {
		if i == 0 || s.GridID != series[i-1].GridID {
			k.cells++
		}
		k.series(s.GridID, s.Scenario, firstYear, s.Values, nil)
	}
	return &store.ChunkChecks{Declared: c.String(), Cells: k.cells, Values: k.nvalues,
		NaN: k.nans.count(), Above: k.above.count(), Below: k.below.count()}
}

// checker accumulates what the checks find, series by series.
type checker struct {
	c                 *model.Checks
	lo, hi, maxChange float64
	// values says whether it checks the values (range, max_nan) and
	// counts cells and values; false when those come from the chunks.
	values                bool
	cells, nvalues        int64
	nans                  worst
	above, below, changed worst
	compared              int64
}

// worst counts values and keeps the maxExamples of highest score, those
// of equal score first in grid order (cell, series, year): which ones
// does not depend on the order they come in.
type worst struct {
	n  int64
	ex []example
}

// example is one value found: its cell, series and year, the value, the
// published one (when changed says it was compared with one) and how bad
// it is.
type example struct {
	score   float64
	gridID  int64
	series  string
	year    int
	v, pub  float64
	changed bool
}

// before reports whether e ranks before f: a higher score, or the same
// and first in grid order.
func (e example) before(f example) bool {
	if e.score != f.score {
		return e.score > f.score
	}
	if e.gridID != f.gridID {
		return e.gridID < f.gridID
	}
	if e.series != f.series {
		return e.series < f.series
	}
	return e.year < f.year
}

func (w *worst) add(e example) {
	w.n++
	w.keep(e)
}

// keep takes e among the examples if it ranks high enough.
func (w *worst) keep(e example) {
	if len(w.ex) == maxExamples && !e.before(w.ex[maxExamples-1]) {
		return
	}
	at := len(w.ex)
	for at > 0 && e.before(w.ex[at-1]) {
		at--
	}
	if len(w.ex) < maxExamples {
		w.ex = append(w.ex, example{})
	}
	copy(w.ex[at+1:], w.ex[at:len(w.ex)-1])
	w.ex[at] = e
}

// count is w as a chunk records it.
func (w *worst) count() store.CheckCount {
	c := store.CheckCount{N: w.n}
	for _, e := range w.ex {
		c.Examples = append(c.Examples, store.CheckExample{GridID: e.gridID, Series: e.series, Year: e.year, Value: store.Float(e.v)})
	}
	return c
}

// merge adds a chunk's count, its examples scored by score.
func (w *worst) merge(c store.CheckCount, score func(v float64) float64) {
	w.n += c.N
	for _, x := range c.Examples {
		v := float64(x.Value)
		w.keep(example{score: score(v), gridID: x.GridID, series: x.Series, year: x.Year, v: v})
	}
}

func newChecker(c *model.Checks) *checker {
	k := &checker{c: c, lo: math.Inf(-1), hi: math.Inf(1), maxChange: math.Inf(1)}
	if c.Range != nil {
		k.lo, k.hi = c.Range[0], c.Range[1]
	}
	if c.MaxChange != nil {
		k.maxChange = *c.MaxChange
	}
	return k
}

// addChunk adds what a chunk's values were found to hold.
func (k *checker) addChunk(c store.ChunkChecks) {
	k.cells += c.Cells
	k.nvalues += c.Values
	k.nans.merge(c.NaN, func(float64) float64 { return 0 })
	k.above.merge(c.Above, func(v float64) float64 { return v - k.hi })
	k.below.merge(c.Below, func(v float64) float64 { return k.lo - v })
}

// series takes the values of one series of a cell, from year first, and
// the published ones of the same years (NaN where none), or nil.
func (k *checker) series(id int64, name string, first int, values, pub []float64) {
	if k.values {
		k.nvalues += int64(len(values))
		lo, hi := k.lo, k.hi
		for i, v := range values {
			if v >= lo && v <= hi { // the common case, one branch
				continue
			}
			switch {
			case v != v:
				k.nans.add(example{gridID: id, series: name, year: first + i, v: v})
			case v > k.hi:
				k.above.add(example{score: v - k.hi, gridID: id, series: name, year: first + i, v: v})
			case v < k.lo:
				k.below.add(example{score: k.lo - v, gridID: id, series: name, year: first + i, v: v})
			}
		}
	}
	for i, p := range pub {
		v := values[i]
		if p != p || v != v {
			continue
		}
		k.compared++
		if d := math.Abs(v - p); d > k.maxChange {
			k.changed.add(example{score: d, gridID: id, series: name, year: first + i, v: v, pub: p, changed: true})
		}
	}
}

// report turns what was found into one outcome per declared check.
func (k *checker) report(totalCells int64) store.CheckReport {
	r := store.CheckReport{Passed: true, Declared: k.c.String()}
	add := func(o store.CheckOutcome) {
		r.Checks = append(r.Checks, o)
		r.Passed = r.Passed && o.Passed
	}
	if k.c.Range != nil {
		o := store.CheckOutcome{Check: "range", Passed: k.above.n+k.below.n == 0, Count: k.above.n + k.below.n, Of: k.nvalues - k.nans.n}
		if o.Passed {
			o.Text = fmt.Sprintf("all %d values within [%s, %s]", o.Of, num(k.lo), num(k.hi))
		} else {
			o.Text = ""
			if k.above.n > 0 {
				o.Text = fmt.Sprintf("%d values above %s, largest %s at %s", k.above.n, num(k.hi), num(k.above.ex[0].v), k.where(k.above.ex[0]))
			}
			if k.below.n > 0 {
				if o.Text != "" {
					o.Text += "; "
				}
				o.Text += fmt.Sprintf("%d values below %s, smallest %s at %s", k.below.n, num(k.lo), num(k.below.ex[0].v), k.where(k.below.ex[0]))
			}
			ex := append(append([]example(nil), k.above.ex...), k.below.ex...)
			o.Examples = k.examples(ex[:min(len(ex), maxExamples)])
		}
		add(o)
	}
	if k.c.MaxNaN != nil {
		share := 0.0
		if k.nvalues > 0 {
			share = float64(k.nans.n) / float64(k.nvalues)
		}
		o := store.CheckOutcome{Check: "max_nan", Passed: share <= *k.c.MaxNaN, Count: k.nans.n, Of: k.nvalues}
		o.Text = fmt.Sprintf("%d of %d values NaN (share %s, allowed %s)", k.nans.n, k.nvalues, num(share), num(*k.c.MaxNaN))
		if k.nans.n > 0 {
			o.Text += ", the first at " + k.where(k.nans.ex[0])
			if !o.Passed {
				o.Examples = k.examples(k.nans.ex)
			}
		}
		add(o)
	}
	if k.c.MinCoverage != nil {
		share := 0.0
		if totalCells > 0 {
			share = float64(k.cells) / float64(totalCells)
		}
		o := store.CheckOutcome{Check: "min_coverage", Passed: share >= *k.c.MinCoverage, Count: k.cells, Of: totalCells}
		o.Text = fmt.Sprintf("%d of %d cells computed (share %s, required %s)", k.cells, totalCells, num(share), num(*k.c.MinCoverage))
		add(o)
	}
	if k.c.MaxChange != nil {
		o := store.CheckOutcome{Check: "max_change", Passed: k.changed.n == 0, Count: k.changed.n, Of: k.compared}
		if o.Passed {
			o.Text = fmt.Sprintf("none of %d values compared with the published ones changed by more than %s", k.compared, num(k.maxChange))
		} else {
			e := k.changed.ex[0]
			o.Text = fmt.Sprintf("%d of %d values changed by more than %s against the published ones, largest %s (%s to %s) at %s",
				k.changed.n, k.compared, num(k.maxChange), num(e.score), num(e.pub), num(e.v), k.where(e))
			o.Examples = k.examples(k.changed.ex)
		}
		add(o)
	}
	return r
}

// where names an example's cell, series and year: "cell 4553467 ssp585 2087".
func (k *checker) where(e example) string {
	return fmt.Sprintf("cell %d %s %d", e.gridID, e.series, e.year)
}

func (k *checker) examples(ex []example) []store.CheckExample {
	out := make([]store.CheckExample, len(ex))
	for j, e := range ex {
		out[j] = store.CheckExample{GridID: e.gridID, Series: e.series, Year: e.year, Value: store.Float(e.v)}
		if e.changed {
			p := store.Float(e.pub)
			out[j].Published = &p
		}
	}
	return out
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
