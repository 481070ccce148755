package gridmap

import (
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strings"
	"unicode/utf8"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/gridbatch/gridbatch/internal/numfmt"
)

// Labels are the texts of a map. Text is drawn in a 7×13 bitmap font with
// ASCII glyphs, plus ° and ·; other characters show as a replacement glyph.
type Labels struct {
	// Title is the first line, for example "hazard · ssp245 · 2060".
	Title string
	// Subtitle is the second line, for example the batch and its grid.
	Subtitle string
	// Quantity is what the values are: the model's long name.
	Quantity string
	// Units are the values' units; "1" (CF for a dimensionless number)
	// is shown as "dimensionless", and empty shows none.
	Units string
}

// The colours of the text and the frame.
var (
	ink   = color.RGBA{0x1b, 0x24, 0x30, 0xff}
	muted = color.RGBA{0x5b, 0x66, 0x78, 0xff}
	frame = color.RGBA{0x4b, 0x55, 0x63, 0xff}
	paper = color.RGBA{0xff, 0xff, 0xff, 0xff}
)

// The bitmap font: every glyph advances charW pixels; a line is 13 tall
// with the baseline 11 below its top.
const (
	charW  = 7
	ascent = 11
)

// The legend's geometry below the plot, in pixels from the plot's bottom.
const (
	lonLabelBase = 18
	captionBase  = 42
	barTop       = 50
	barH         = 14
	barLabelBase = 80
	keyTop       = 90
	barW         = 320
)

// Encode renders the values with their labels (see Render) and writes the
// image as PNG.
func Encode(w io.Writer, v *Values, lb Labels) error {
	return (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(w, Render(v, lb))
}

// Render draws the map of v: the title lines, the cells (hatched grey
// where a cell has no value), the frame with lat/lon ticks and labels, and
// the legend: the quantity and its units, the colour bar from the smallest
// to the largest value with a few round ticks between, the key of the
// cells without a value with their count, and that of the failed cells
// (Fail) when there are any.
func Render(v *Values, lb Labels) *image.RGBA {
	l := v.layout
	img := image.NewRGBA(image.Rect(0, 0, l.Width, l.Height))
	fill(img, img.Rect, paper)
	textW := l.Width - 24
	title := clip(lb.Title, textW)
	drawText(img, 12, 20, title, ink)
	drawText(img, 13, 20, title, ink) // bold: the font has no bold face
	for i, line := range wrap(lb.Subtitle, textW, 2) {
		drawText(img, 12, 38+i*subtitleLeading, line, muted)
	}

	scale, ok := v.Scale()
	w := l.Plot.Dx()
	for y := range l.Plot.Dy() {
		for x := range w {
			px := v.px[y*w+x]
			ix, iy := l.Plot.Min.X+x, l.Plot.Min.Y+y
			if v.failed != nil && v.failed[y*w+x] {
				img.SetRGBA(ix, iy, FailedFill)
				continue
			}
			if math.IsNaN(px) {
				img.SetRGBA(ix, iy, noValueAt(ix, iy))
				continue
			}
			img.SetRGBA(ix, iy, scale.Color(px))
		}
	}
	border(img, l.Plot.Inset(-1), frame)
	drawAxes(img, l)

	base := l.Plot.Max.Y + 1
	caption := lb.Quantity
	if u := unitsText(lb.Units); u != "" {
		if caption == "" {
			caption = "values"
		}
		caption += " (" + u + ")"
	}
	x0 := l.Plot.Min.X
	drawText(img, x0, base+captionBase, clip(caption, l.Width-x0-12), ink)
	barY := base + barTop
	switch {
	case !ok:
		bar := image.Rect(x0, barY, x0+barW, barY+barH)
		fill(img, bar, NoValueFill)
		border(img, bar.Inset(-1), frame)
		drawText(img, x0, base+barLabelBase, "no cell has a value", muted)
	case scale.Flat():
		bar := image.Rect(x0, barY, x0+barW, barY+barH)
		fill(img, bar, scale.ColorAt(0.5))
		border(img, bar.Inset(-1), frame)
		drawText(img, x0, base+barLabelBase, "every cell: "+fmtValue(scale.Min), ink)
	default:
		drawBar(img, x0, barY, scale)
	}

	key := image.Rect(x0, base+keyTop, x0+barH, base+keyTop+barH)
	for y := key.Min.Y; y < key.Max.Y; y++ {
		for x := key.Min.X; x < key.Max.X; x++ {
			img.SetRGBA(x, y, noValueAt(x, y))
		}
	}
	border(img, key.Inset(-1), frame)
	what := "no value: "
	if v.diverging {
		what = "not on both sides: "
	}
	noValue := what + numfmt.Int(v.Missing()) + " of " + numfmt.Int(l.Region.NumCells()) + " cells"
	drawText(img, key.Max.X+8, key.Min.Y+ascent+1, noValue, ink)
	if v.nf > 0 {
		fk := key.Add(image.Pt(barH+8+textWidth(noValue)+24, 0))
		fill(img, fk, FailedFill)
		border(img, fk.Inset(-1), frame)
		drawText(img, fk.Max.X+8, fk.Min.Y+ascent+1, "failed (dead-lettered): "+numfmt.Int(v.nf)+" cells", ink)
	}
	return img
}

// drawBar draws the colour bar of scale from x, y: the smallest value, the
// bar, the largest value on one line (for a diverging scale its ends, -m
// and +m), and round ticks under the bar where their labels fit.
func drawBar(img *image.RGBA, x, y int, scale Scale) {
	lo, hi := "min "+fmtValue(scale.Min), "max "+fmtValue(scale.Max)
	if scale.Diverging {
		lo, hi = fmtValue(scale.Min), "+"+fmtValue(scale.Max)
	}
	drawText(img, x, y+ascent+1, lo, ink)
	r := image.Rect(x+textWidth(lo)+8, y, x+textWidth(lo)+8+barW, y+barH)
	n := r.Dx()
	for i := range n {
		c := scale.ColorAt(float64(i) / float64(n-1))
		for y := r.Min.Y; y < r.Max.Y; y++ {
			img.SetRGBA(r.Min.X+i, y, c)
		}
	}
	border(img, r.Inset(-1), frame)
	drawText(img, r.Max.X+8, y+ascent+1, hi, ink)
	base := y + barLabelBase - barTop
	var taken []span
	ticks, step := scale.Ticks(5)
	for _, t := range ticks {
		tx := r.Min.X + int(math.Round(scale.At(t)*float64(n-1)))
		vline(img, tx, r.Max.Y+1, r.Max.Y+4, frame)
		s := fmtTick(t, step)
		sp := span{tx - textWidth(s)/2, tx - textWidth(s)/2 + textWidth(s)}
		if sp.clear(taken, 8) {
			drawText(img, sp.a, base, s, muted)
			taken = append(taken, sp)
		}
	}
}

// drawAxes draws the lat ticks left of the plot and the lon ticks below
// it, with their labels, at round degrees.
func drawAxes(img *image.RGBA, l Layout) {
	step := l.Region.Lattice.Step
	south, east := l.north()-float64(l.Region.NumRows())*step, l.west()+float64(l.Region.NumCols())*step
	lats, latStep := degreeTicks(south, l.north(), min(max(l.Plot.Dy()/28, 2), 8))
	for _, lat := range lats {
		y := min(int(math.Round(l.yOf(lat))), l.Plot.Max.Y)
		hline(img, l.Plot.Min.X-5, l.Plot.Min.X-1, y, frame)
		s := degrees(lat, latStep, "N", "S")
		drawText(img, l.Plot.Min.X-8-textWidth(s), y+4, s, ink)
	}
	lons, lonStep := degreeTicks(l.west(), east, min(max(l.Plot.Dx()/72, 2), 8))
	var taken []span
	for _, lon := range lons {
		x := min(int(math.Round(l.xOf(lon))), l.Plot.Max.X)
		vline(img, x, l.Plot.Max.Y+1, l.Plot.Max.Y+5, frame)
		s := degrees(lon, lonStep, "E", "W")
		sp := span{x - textWidth(s)/2, x - textWidth(s)/2 + textWidth(s)}
		if sp.clear(taken, 6) {
			drawText(img, sp.a, l.Plot.Max.Y+1+lonLabelBase, s, ink)
			taken = append(taken, sp)
		}
	}
}

// degreeTicks is niceTicks for degrees: steps of 10° and more are 10, 15,
// 20, 30, 45, 60 or 90°, which divide the globe.
func degreeTicks(lo, hi float64, n int) (ticks []float64, step float64) {
	ticks, step = niceTicks(lo, hi, n)
	if step < 10 {
		return ticks, step
	}
	for _, step := range []float64{10, 15, 20, 30, 45, 60, 90} {
		k0, k1 := math.Ceil(lo/step-1e-9), math.Floor(hi/step+1e-9)
		if k1-k0+1 <= float64(n) {
			ticks = ticks[:0]
			for k := k0; k <= k1; k++ {
				ticks = append(ticks, k*step)
			}
			return ticks, step
		}
	}
	return ticks, step
}

// degrees formats a latitude or longitude tick: "33°N", "124.5°E", "0°".
func degrees(v, step float64, pos, neg string) string {
	s := fmtTick(math.Abs(v), step)
	switch {
	case s == "0" || strings.Trim(s, "0.") == "":
		return "0°"
	case v > 0:
		return s + "°" + pos
	}
	return s + "°" + neg
}

// unitsText is how units are shown.
func unitsText(u string) string {
	if u == "1" {
		return "dimensionless"
	}
	return u
}

// span is a horizontal extent [a,b) of text.
type span struct{ a, b int }

// clear reports whether s keeps gap pixels from every span of taken.
func (s span) clear(taken []span, gap int) bool {
	for _, t := range taken {
		if s.a < t.b+gap && t.a < s.b+gap {
			return false
		}
	}
	return true
}

var face = basicfont.Face7x13

func textWidth(s string) int { return utf8.RuneCountInString(s) * charW }

// subtitleLeading is the distance between the subtitle's lines.
const subtitleLeading = 14

// wrap breaks s into at most maxLines lines that fit width pixels, between
// its " · " parts (or its words, for a part too long); the last line is
// clipped when the rest does not fit.
func wrap(s string, width, maxLines int) []string {
	n := max(width/charW, 3)
	var lines []string
	for len(lines) < maxLines-1 && utf8.RuneCountInString(s) > n {
		r := []rune(s)
		head := string(r[:n+1])
		cut := strings.LastIndex(head, " · ")
		sep := len(" · ")
		if cut <= 0 {
			cut, sep = strings.LastIndex(head, " "), 1
		}
		if cut <= 0 {
			break
		}
		lines = append(lines, s[:cut])
		s = s[cut+sep:]
	}
	return append(lines, clip(s, width))
}

// clip cuts s to fit width pixels, ending it with "..." when cut.
func clip(s string, width int) string {
	n := max(width/charW, 3)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-3]) + "..."
}

// drawText draws s with its baseline at y, from x. The font has no ° or
// ·, which are drawn here: a small ring and a centred dot.
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: face}
	top := y - ascent
	for _, r := range s {
		switch r {
		case '°':
			for _, p := range [...]image.Point{{2, 1}, {3, 1}, {1, 2}, {4, 2}, {1, 3}, {4, 3}, {2, 4}, {3, 4}} {
				img.SetRGBA(x+p.X, top+p.Y, c)
			}
		case '·':
			fill(img, image.Rect(x+2, top+6, x+4, top+8), c)
		default:
			d.Dot = fixed.P(x, y)
			d.DrawString(string(r))
		}
		x += charW
	}
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	r = r.Intersect(img.Rect)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// border draws the 1-pixel outline of r (its outermost pixels).
func border(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	hline(img, r.Min.X, r.Max.X-1, r.Min.Y, c)
	hline(img, r.Min.X, r.Max.X-1, r.Max.Y-1, c)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y-1, c)
	vline(img, r.Max.X-1, r.Min.Y, r.Max.Y-1, c)
}

// hline draws the pixels x0..x1 (inclusive) of row y.
func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	fill(img, image.Rect(x0, y, x1+1, y+1), c)
}

// vline draws the pixels y0..y1 (inclusive) of column x.
func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	fill(img, image.Rect(x, y0, x+1, y1+1), c)
}
