package grid

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// wholeTol is the relative tolerance within which 360/step and 180/step must
// be whole numbers.
const wholeTol = 1e-9

// maxCols bounds the lattice width so that Rows*Cols fits in an int64. It
// corresponds to a step of 1e-7 degrees.
const maxCols = 3_600_000_000

// Lattice is the global grid of Step-degree cells. Row 0 starts at latitude
// -90 and column 0 at longitude -180; Rows = round(180/Step) and
// Cols = round(360/Step). Build one with NewLattice or ParseStep; the zero
// value is not usable.
type Lattice struct {
	Step       float64
	Rows, Cols int
}

// NewLattice returns the lattice of step-degree cells. The step must be
// positive and finite, and both 360/step and 180/step must be whole numbers
// (within a relative 1e-9, to absorb decimal rounding such as 360/0.05).
// Steps finer than 1e-7 degrees are rejected so that grid ids fit in an
// int64. Errors are a single line naming the step, for example
// "step 0.07: 360/step must be a whole number (got 5142.857…); try 0.05, 0.02 or 0.01".
func NewLattice(step float64) (Lattice, error) {
	if math.IsNaN(step) || math.IsInf(step, 0) {
		return Lattice{}, fmt.Errorf("step %s: must be a finite number of degrees such as 0.05", fmtFloat(step))
	}
	if step <= 0 {
		return Lattice{}, fmt.Errorf("step %s: must be positive, such as 0.05", fmtFloat(step))
	}
	if 360/step > maxCols*(1+wholeTol) {
		return Lattice{}, fmt.Errorf("step %s: too fine, the smallest supported step is 1e-07", fmtFloat(step))
	}
	cols, err := wholeDiv(step, 360)
	if err != nil {
		return Lattice{}, err
	}
	rows, err := wholeDiv(step, 180)
	if err != nil {
		return Lattice{}, err
	}
	return Lattice{Step: step, Rows: rows, Cols: cols}, nil
}

// wholeDiv returns round(span/step) when span/step is a whole number within
// wholeTol, and an error otherwise.
func wholeDiv(step, span float64) (int, error) {
	q := span / step
	n := math.Round(q)
	if n < 1 || math.Abs(q-n) > wholeTol*q {
		return 0, fmt.Errorf("step %s: %s/step must be a whole number (got %s); try 0.05, 0.02 or 0.01",
			fmtFloat(step), fmtFloat(span), approx(q))
	}
	return int(n), nil
}

// approx formats v with at most three decimals, marking truncation with "…".
func approx(v float64) string {
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if r, err := strconv.ParseFloat(s, 64); err != nil || r != v {
		s += "…"
	}
	return s
}

// ParseStep parses a step in degrees, such as "0.05", and returns its
// lattice as NewLattice does. Surrounding spaces are allowed.
func ParseStep(s string) (Lattice, error) {
	step, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		return Lattice{}, fmt.Errorf("step %q: want a positive number of degrees such as 0.05", s)
	}
	return NewLattice(step)
}

// validate reports whether l is a lattice NewLattice would return.
func (l Lattice) validate() error {
	nl, err := NewLattice(l.Step)
	if err != nil {
		return err
	}
	if nl != l {
		return fmt.Errorf("lattice step %s: rows %d, cols %d do not match the step (want %d, %d)",
			fmtFloat(l.Step), l.Rows, l.Cols, nl.Rows, nl.Cols)
	}
	return nil
}

// NumCells returns Rows*Cols, the number of cells on the globe.
func (l Lattice) NumCells() int64 { return int64(l.Rows) * int64(l.Cols) }

// GridID returns the id of the cell at row, col: row*Cols + col. It does not
// check that row and col are in range.
func (l Lattice) GridID(row, col int) int64 { return int64(row)*int64(l.Cols) + int64(col) }

// Cell returns the cell at row, col with its id and centre. It does not check
// that row and col are in range.
func (l Lattice) Cell(row, col int) Cell {
	return Cell{
		GridID: l.GridID(row, col),
		Row:    row,
		Col:    col,
		Lat:    l.centreLat(row),
		Lon:    l.centreLon(col),
	}
}

// centreLat is the latitude of the centre of row: -90 + (row+0.5)*Step.
func (l Lattice) centreLat(row int) float64 { return -90 + (float64(row)+0.5)*l.Step }

// centreLon is the longitude of the centre of col: -180 + (col+0.5)*Step.
func (l Lattice) centreLon(col int) float64 { return -180 + (float64(col)+0.5)*l.Step }

// DecimalCentre returns the centre of the cell at row, col as the float64
// nearest its exact decimal value: 37.025 where Cell's arithmetic gives
// 37.025000000000006, so that a reader selecting a cell by the number it
// writes (xarray's ds.sel(lat=37.025)) finds it. It is computed in integers
// over the step's decimal digits (a step of up to 9 of them, as every
// step written in decimal is); any other step gives Cell's centre.
func (l Lattice) DecimalCentre(row, col int) (lat, lon float64) {
	k, scale, ok := l.decimal()
	if !ok {
		c := l.Cell(row, col)
		return c.Lat, c.Lon
	}
	// centre = -90 + (row+0.5)·k/scale = (-180·scale + (2·row+1)·k) / (2·scale):
	// both integers are exact in a float64, and one division rounds once.
	return float64(-180*scale+(2*int64(row)+1)*k) / float64(2*scale),
		float64(-360*scale+(2*int64(col)+1)*k) / float64(2*scale)
}

// DecimalEdges returns the southern edge of row and the western edge of
// col, -90 + row·Step and -180 + col·Step, as DecimalCentre does the centre.
func (l Lattice) DecimalEdges(row, col int) (lat, lon float64) {
	k, scale, ok := l.decimal()
	if !ok {
		return -90 + float64(row)*l.Step, -180 + float64(col)*l.Step
	}
	return float64(-90*scale+int64(row)*k) / float64(scale), float64(-180*scale+int64(col)*k) / float64(scale)
}

// decimal returns Step as k/scale, scale = 10^d, with the fewest decimal
// digits d ≤ 9 that give it exactly (within the float64 rounding of the
// step as parsed). ok is false for a step with no such form.
func (l Lattice) decimal() (k, scale int64, ok bool) {
	scale = 1
	for range 10 {
		f := l.Step * float64(scale)
		if r := math.Round(f); r >= 1 && math.Abs(f-r) <= 1e-6 {
			return int64(r), scale, true
		}
		scale *= 10
	}
	return 0, 0, false
}

// CellByID returns the cell with the given grid id. It returns an error when
// id is outside [0, Rows*Cols).
func (l Lattice) CellByID(id int64) (Cell, error) {
	if id < 0 || id >= l.NumCells() {
		return Cell{}, fmt.Errorf("grid id %d outside [0,%d) at step %s", id, l.NumCells(), fmtFloat(l.Step))
	}
	return l.Cell(int(id/int64(l.Cols)), int(id%int64(l.Cols))), nil
}

// CellAt returns the cell containing the point lat, lon (degrees):
// row = floor((lat+90)/Step), col = floor((lon+180)/Step). A cell holds its
// lower edges and not its upper ones, except that lat 90 and lon 180 fall in
// the last row and column. Where the division rounds across a cell edge the
// result is corrected so that the edge -90 + row*Step (resp. -180 + col*Step)
// belongs to its upper cell. It returns an error when lat is outside [-90,90]
// or lon outside [-180,180] or either is NaN.
func (l Lattice) CellAt(lat, lon float64) (Cell, error) {
	if !(lat >= -90 && lat <= 90) {
		return Cell{}, fmt.Errorf("lat %s outside [-90,90]", fmtFloat(lat))
	}
	if !(lon >= -180 && lon <= 180) {
		return Cell{}, fmt.Errorf("lon %s outside [-180,180]", fmtFloat(lon))
	}
	row := cellIndex(lat, -90, l.Step, l.Rows)
	col := cellIndex(lon, -180, l.Step, l.Cols)
	return l.Cell(row, col), nil
}

// cellIndex returns the index i in [0,n) of the cell [origin+i*step,
// origin+(i+1)*step) that holds v, clamping v at the far end into the last
// cell.
func cellIndex(v, origin, step float64, n int) int {
	i := int(math.Floor((v - origin) / step))
	i = min(max(i, 0), n-1)
	if i > 0 && v < origin+float64(i)*step {
		i--
	}
	if i < n-1 && v >= origin+float64(i+1)*step {
		i++
	}
	return i
}

// Cell is one lattice cell: its grid id, row, column and centre in degrees
// (Lat = -90 + (Row+0.5)*step, Lon = -180 + (Col+0.5)*step).
type Cell struct {
	GridID   int64
	Row, Col int
	Lat, Lon float64
}
