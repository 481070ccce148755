package batch

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// maxExamples is how many of the worst values a failed check names.
const maxExamples = 5

// RunChecks runs the declared checks c on the batch's own rows, streaming
// them from the transaction of e (one cell's values in memory at a time)
// and returns the report. max_change reads the published values of each
// cell alongside.
func RunChecks(ctx context.Context, e *store.Ending, c *model.Checks) (store.CheckReport, error) {
	start := time.Now()
	b := e.Batch
	k := newChecker(c, b.Layout)
	err := e.Cells(ctx, c.MaxChange != nil, func(id int64, values, pub []float64) error {
		k.cell(id, values, pub)
		return nil
	})
	if err != nil {
		return store.CheckReport{}, fmt.Errorf("check the rows of %s: %w", b.ID, err)
	}
	r := k.report(b.TotalCells)
	r.Status, r.CheckedAt, r.Seconds = b.Status, time.Now().UTC(), time.Since(start).Seconds()
	if b.Status == store.StatusHeld && b.Checks != nil {
		r.Status = b.Checks.Status // the status it was held from
	}
	return r, nil
}

// checker accumulates what the checks find, cell by cell.
type checker struct {
	c                     *model.Checks
	l                     store.SeriesLayout
	lo, hi, maxChange     float64
	cells, values         int64
	nans                  worst
	above, below, changed worst
	compared              int64
}

// worst counts values and keeps the maxExamples of highest score.
type worst struct {
	n  int64
	ex []example
}

// example is one value found: its cell, its index in the cell's values,
// the value, the published one (when changed says it was compared with
// one) and how bad it is.
type example struct {
	score   float64
	gridID  int64
	i       int
	v, pub  float64
	changed bool
}

func (w *worst) add(e example) {
	w.n++
	if len(w.ex) == maxExamples && e.score <= w.ex[maxExamples-1].score {
		return
	}
	at := len(w.ex)
	for at > 0 && w.ex[at-1].score < e.score {
		at--
	}
	if len(w.ex) < maxExamples {
		w.ex = append(w.ex, example{})
	}
	copy(w.ex[at+1:], w.ex[at:len(w.ex)-1])
	w.ex[at] = e
}

func newChecker(c *model.Checks, l store.SeriesLayout) *checker {
	k := &checker{c: c, l: l, lo: math.Inf(-1), hi: math.Inf(1), maxChange: math.Inf(1)}
	if c.Range != nil {
		k.lo, k.hi = c.Range[0], c.Range[1]
	}
	if c.MaxChange != nil {
		k.maxChange = *c.MaxChange
	}
	return k
}

// cell takes one cell's values (and the published ones, or nil).
func (k *checker) cell(id int64, values, pub []float64) {
	k.cells++
	k.values += int64(len(values))
	for i, v := range values {
		switch {
		case v != v:
			if len(k.nans.ex) < maxExamples {
				k.nans.ex = append(k.nans.ex, example{gridID: id, i: i, v: v})
			}
			k.nans.n++
			continue
		case v > k.hi:
			k.above.add(example{score: v - k.hi, gridID: id, i: i, v: v})
		case v < k.lo:
			k.below.add(example{score: k.lo - v, gridID: id, i: i, v: v})
		}
		if pub != nil {
			if p := pub[i]; p == p {
				k.compared++
				if d := math.Abs(v - p); d > k.maxChange {
					k.changed.add(example{score: d, gridID: id, i: i, v: v, pub: p, changed: true})
				}
			}
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
		o := store.CheckOutcome{Check: "range", Passed: k.above.n+k.below.n == 0, Count: k.above.n + k.below.n, Of: k.values - k.nans.n}
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
		if k.values > 0 {
			share = float64(k.nans.n) / float64(k.values)
		}
		o := store.CheckOutcome{Check: "max_nan", Passed: share <= *k.c.MaxNaN, Count: k.nans.n, Of: k.values}
		o.Text = fmt.Sprintf("%d of %d values NaN (share %s, allowed %s)", k.nans.n, k.values, num(share), num(*k.c.MaxNaN))
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
	return fmt.Sprintf("cell %d %s %d", e.gridID, k.l.Names[e.i/k.l.Years], k.l.FirstYear+e.i%k.l.Years)
}

func (k *checker) examples(ex []example) []store.CheckExample {
	out := make([]store.CheckExample, len(ex))
	for j, e := range ex {
		out[j] = store.CheckExample{GridID: e.gridID, Series: k.l.Names[e.i/k.l.Years], Year: k.l.FirstYear + e.i%k.l.Years, Value: store.Float(e.v)}
		if e.changed {
			p := store.Float(e.pub)
			out[j].Published = &p
		}
	}
	return out
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
