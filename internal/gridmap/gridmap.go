// Package gridmap draws a map of one value per grid cell: a block of pixels
// per cell of a region, north up (plate carrée, so cells are square),
// coloured on the viridis scale between the smallest and the largest value,
// with lat/lon ticks on the axes and a legend (colour bar with its range,
// ticks and units). Differences (Layout.NewDifferences) are drawn on a
// diverging blue–white–red scale symmetric around zero instead. Cells
// without a value are hatched in grey and counted in the legend. It is pure: no SQL, no HTTP; the monitor feeds it the values
// it reads.
//
// Use it in three steps: NewLayout places a region on the image, Values
// collects the cells' values at the image's resolution, Render (or Encode)
// draws them.
package gridmap

import (
	"image"
	"math"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// The image's geometry, in pixels. Every image is ImageWidth wide; the plot
// (the cells) is at most maxPlotW × maxPlotH; the title and the subtitle
// (up to two lines) are above it, the lat labels left of it, the lon labels
// and the legend below it.
const (
	ImageWidth   = 800
	marginLeft   = 76
	marginRight  = 24
	marginTop    = 66
	marginBottom = 116
	maxPlotW     = ImageWidth - marginLeft - marginRight
	maxPlotH     = 540
)

// Layout places a region's cells on the image: each cell is a square block
// of Scale × Scale pixels inside Plot, the region's north-west cell at
// Plot.Min. When the region has more cells than the plot has pixels
// (Scale < 1), each pixel shows the cell under its centre.
type Layout struct {
	Region grid.Region
	// Plot is the cells' area in image coordinates.
	Plot image.Rectangle
	// Scale is the size of a cell in pixels: a whole number when at
	// least 1, so that every cell is a block of the same size.
	Scale float64
	// Width and Height are the image's size.
	Width, Height int
}

// NewLayout returns the layout of region r: the largest whole number of
// pixels per cell that fits the plot in 700 × 540 pixels (or a fraction
// of a pixel per cell when the region is larger), in an image ImageWidth
// pixels wide.
func NewLayout(r grid.Region) Layout {
	nc, nr := max(r.NumCols(), 1), max(r.NumRows(), 1)
	s := math.Min(float64(maxPlotW)/float64(nc), float64(maxPlotH)/float64(nr))
	if s >= 1 {
		s = math.Floor(s)
	}
	pw := max(int(math.Round(float64(nc)*s)), 1)
	ph := max(int(math.Round(float64(nr)*s)), 1)
	plot := image.Rect(marginLeft, marginTop, marginLeft+pw, marginTop+ph)
	return Layout{Region: r, Plot: plot, Scale: s,
		Width: ImageWidth, Height: plot.Max.Y + marginBottom}
}

// span returns the plot's pixels [a,b) of the i-th column (or row) of
// cells: those whose centre falls in the cell.
func (l Layout) span(i int) (a, b int) {
	a = int(math.Ceil(float64(i)*l.Scale - 0.5))
	b = int(math.Ceil(float64(i+1)*l.Scale - 0.5))
	return a, b
}

// inside reports whether the lattice cell row, col is in the region.
func (l Layout) inside(row, col int) bool {
	r := l.Region
	return row >= r.Row0 && row < r.Row1 && col >= r.Col0 && col < r.Col1
}

// CellRect returns the pixels of the lattice cell row, col in image
// coordinates. It is empty when the cell is outside the region, or is
// shown by no pixel (Scale < 1).
func (l Layout) CellRect(row, col int) image.Rectangle {
	if !l.inside(row, col) {
		return image.Rectangle{}
	}
	x0, x1 := l.span(col - l.Region.Col0)
	y0, y1 := l.span(l.Region.Row1 - 1 - row)
	return image.Rect(x0, y0, x1, y1).Add(l.Plot.Min).Intersect(l.Plot)
}

// Pixel returns the pixel at the middle of the cell that holds the point
// lat, lon (degrees). ok is false when the point is outside the region or
// its cell is shown by no pixel.
func (l Layout) Pixel(lat, lon float64) (p image.Point, ok bool) {
	c, err := l.Region.Lattice.CellAt(lat, lon)
	if err != nil {
		return image.Point{}, false
	}
	rect := l.CellRect(c.Row, c.Col)
	if rect.Empty() {
		return image.Point{}, false
	}
	return image.Pt((rect.Min.X+rect.Max.X-1)/2, (rect.Min.Y+rect.Max.Y-1)/2), true
}

// west and north are the longitude and latitude of the plot's west and
// north edges: the plot spans the region's cells edge to edge.
func (l Layout) west() float64  { return -180 + float64(l.Region.Col0)*l.Region.Lattice.Step }
func (l Layout) north() float64 { return -90 + float64(l.Region.Row1)*l.Region.Lattice.Step }

// xOf returns the image x of longitude lon.
func (l Layout) xOf(lon float64) float64 {
	return float64(l.Plot.Min.X) + (lon-l.west())/l.Region.Lattice.Step*l.Scale
}

// yOf returns the image y of latitude lat.
func (l Layout) yOf(lat float64) float64 {
	return float64(l.Plot.Min.Y) + (l.north()-lat)/l.Region.Lattice.Step*l.Scale
}

// Values are the values of a region's cells at the map's resolution: one
// per plot pixel, and the range and count of all the cells with a value.
// Build it with Layout.NewValues; it is not safe for concurrent use.
type Values struct {
	layout   Layout
	px       []float64 // plot pixels, row-major from the north-west; NaN: no value
	failed   []bool    // plot pixels of a failed cell (Fail); nil when none
	min, max float64
	n, nf    int
	// diverging: the values are differences (NewDifferences).
	diverging bool
}

// NewValues returns the values of l's region, every cell without a value.
func (l Layout) NewValues() *Values {
	px := make([]float64, l.Plot.Dx()*l.Plot.Dy())
	for i := range px {
		px[i] = math.NaN()
	}
	return &Values{layout: l, px: px, min: math.Inf(1), max: math.Inf(-1)}
}

// NewDifferences returns the values of l's region, every cell without a
// value, for values that are differences (for example a batch's values
// minus the published ones): their scale is the diverging one, symmetric
// around zero (see Values.Scale).
func (l Layout) NewDifferences() *Values {
	v := l.NewValues()
	v.diverging = true
	return v
}

// Set records the value of the cell gridID. NaN and ±Inf mean no value,
// and cells outside the region are ignored. Each cell is set at most once
// (the count of cells with a value counts calls).
func (v *Values) Set(gridID int64, value float64) {
	lat := v.layout.Region.Lattice
	if math.IsNaN(value) || math.IsInf(value, 0) || gridID < 0 || gridID >= lat.NumCells() {
		return
	}
	row, col := int(gridID/int64(lat.Cols)), int(gridID%int64(lat.Cols))
	if !v.layout.inside(row, col) {
		return
	}
	v.n++
	v.min, v.max = math.Min(v.min, value), math.Max(v.max, value)
	rect := v.layout.CellRect(row, col).Sub(v.layout.Plot.Min)
	w := v.layout.Plot.Dx()
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		for x := rect.Min.X; x < rect.Max.X; x++ {
			v.px[y*w+x] = value
		}
	}
}

// Fail marks the cell gridID failed (dead-lettered): it is drawn in
// FailedFill over any value, and counted in the legend. Cells outside the
// region are ignored; each cell is marked at most once.
func (v *Values) Fail(gridID int64) {
	lat := v.layout.Region.Lattice
	if gridID < 0 || gridID >= lat.NumCells() {
		return
	}
	row, col := int(gridID/int64(lat.Cols)), int(gridID%int64(lat.Cols))
	if !v.layout.inside(row, col) {
		return
	}
	if v.failed == nil {
		v.failed = make([]bool, len(v.px))
	}
	v.nf++
	rect := v.layout.CellRect(row, col).Sub(v.layout.Plot.Min)
	w := v.layout.Plot.Dx()
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		for x := rect.Min.X; x < rect.Max.X; x++ {
			v.failed[y*w+x] = true
		}
	}
}

// Failed returns how many cells are marked failed.
func (v *Values) Failed() int { return v.nf }

// Len returns how many cells have a value.
func (v *Values) Len() int { return v.n }

// Missing returns how many cells of the region have no value.
func (v *Values) Missing() int { return v.layout.Region.NumCells() - v.n }

// Scale returns the colour scale of the values: from the smallest to the
// largest; for differences (NewDifferences) the diverging scale from -m
// to m, m the largest absolute difference, so that zero is its middle
// colour. ok is false when no cell has a value.
func (v *Values) Scale() (s Scale, ok bool) {
	if v.n == 0 {
		return Scale{}, false
	}
	if v.diverging {
		m := math.Max(math.Abs(v.min), math.Abs(v.max))
		return Scale{Min: -m, Max: m, Diverging: true}, true
	}
	return Scale{Min: v.min, Max: v.max}, true
}

// Differences reports whether the values are differences (NewDifferences).
func (v *Values) Differences() bool { return v.diverging }

// Layout returns the layout the values were collected for.
func (v *Values) Layout() Layout { return v.layout }
