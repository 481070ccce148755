package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/jackc/pgx/v5/pgtype"
)

// SeriesLayout is how a batch's own rows hold its series: one row per cell,
// whose series column is the cell's series of every name in Names, in that
// order, each Years float64 values from FirstYear, 8 big-endian bytes
// each (migration 00006). It is the model's declaration when the batch
// was made, recorded in batch_runs and, when the batch is published, in
// published_batches, which <kind>_timeseries reads it from.
type SeriesLayout struct {
	Names     []string `json:"series_names"`
	FirstYear int      `json:"first_year"`
	Years     int      `json:"years"`
}

// valid reports whether the layout can hold a series.
func (l SeriesLayout) valid() bool { return len(l.Names) > 0 && l.Years > 0 }

// rowBytes is the length of one cell's series column.
func (l SeriesLayout) rowBytes() int { return 8 * len(l.Names) * l.Years }

// index returns the position of the named series in a row, -1 if the
// layout has none of that name.
func (l SeriesLayout) index(name string) int { return slices.Index(l.Names, name) }

// series returns the values of the i-th series of row (a cell's series
// column), appended to dst.
func (l SeriesLayout) series(dst []float64, row []byte, i int) []float64 {
	b := row[i*8*l.Years : (i+1)*8*l.Years]
	dst = slices.Grow(dst, l.Years)
	for j := range l.Years {
		dst = append(dst, math.Float64frombits(binary.BigEndian.Uint64(b[8*j:])))
	}
	return dst
}

// scan returns the targets that read the columns series_names,
// first_year and years into l. NULLs (a batch made before layouts were
// recorded) leave it zero, which is not valid.
func (l *SeriesLayout) scan() []any {
	return []any{&l.Names, (*nullInt)(&l.FirstYear), (*nullInt)(&l.Years)}
}

// nullInt scans an integer column, NULL as 0.
type nullInt int

// ScanInt64 implements pgtype.Int64Scanner.
func (n *nullInt) ScanInt64(v pgtype.Int8) error {
	*n = nullInt(v.Int64)
	return nil
}

// checkRow checks that row, a series column read back, fits the layout.
func (l SeriesLayout) checkRow(row []byte) error {
	if len(row) != l.rowBytes() {
		return fmt.Errorf("a stored row of %d bytes, not the %d of %d series of %d years", len(row), l.rowBytes(), len(l.Names), l.Years)
	}
	return nil
}

// EncodeCells returns, for each cell of series (a chunk's series,
// those of one cell next to each other, as models return them), its grid id
// and series column. Every cell must have each series of the layout once,
// of Years values: anything else is an error naming the cell, and nothing
// is stored.
func (l SeriesLayout) EncodeCells(series []grid.Series) ([]int64, [][]byte, error) {
	ids, rows, _, err := l.encodeCells(nil, series)
	return ids, rows, err
}

// encodeCells is EncodeCells into buf's memory when it is large enough; it
// returns the buffer the rows are in, for the caller to reuse once they are
// written.
func (l SeriesLayout) encodeCells(buf []byte, series []grid.Series) ([]int64, [][]byte, []byte, error) {
	var ids []int64
	var rows [][]byte
	n := len(l.Names)
	if size := len(series) / max(n, 1) * l.rowBytes(); cap(buf) < size {
		buf = make([]byte, 0, size)
	}
	buf = buf[:0]
	seen := make([]bool, n)
	for start := 0; start < len(series); {
		id := series[start].GridID
		end := start
		for end < len(series) && series[end].GridID == id {
			end++
		}
		if end-start != n {
			return nil, nil, buf, fmt.Errorf("cell %d has %d series, not the %d of its layout (%s)", id, end-start, n, strings.Join(l.Names, ", "))
		}
		clear(seen)
		off := len(buf)
		buf = slices.Grow(buf, l.rowBytes())[:off+l.rowBytes()]
		for _, s := range series[start:end] {
			i := l.index(s.Scenario)
			if i < 0 || seen[i] {
				return nil, nil, buf, fmt.Errorf("cell %d: series %q is not one of %s, or comes twice", id, s.Scenario, strings.Join(l.Names, ", "))
			}
			if len(s.Values) != l.Years {
				return nil, nil, buf, fmt.Errorf("cell %d series %s has %d values, not %d", id, s.Scenario, len(s.Values), l.Years)
			}
			seen[i] = true
			b := buf[off+i*8*l.Years:]
			for j, v := range s.Values {
				binary.BigEndian.PutUint64(b[8*j:], math.Float64bits(v))
			}
		}
		ids = append(ids, id)
		rows = append(rows, buf[off:len(buf):len(buf)])
		start = end
	}
	return ids, rows, buf, nil
}

// LayoutOf is the layout of a model's batches: its declared series, first
// year and years.
func LayoutOf(s model.Spec) SeriesLayout {
	return SeriesLayout{Names: s.Series, FirstYear: s.FirstYear, Years: s.Years}
}

// SeriesOf returns the series batch b computed: those it recorded when it
// was made (the models file may declare others for its kind since), or,
// for a batch made before layouts were recorded, spec's.
func (b Batch) SeriesOf(spec model.Spec) SeriesLayout {
	if b.Layout.valid() {
		return b.Layout
	}
	return LayoutOf(spec)
}
