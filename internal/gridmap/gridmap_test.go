package gridmap

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
)

func region(t *testing.T, step float64, b grid.BBox) grid.Region {
	t.Helper()
	l, err := grid.NewLattice(step)
	require.NoError(t, err)
	r, err := grid.NewRegion(l, b, 0)
	require.NoError(t, err)
	return r
}

func luminance(c color.RGBA) float64 {
	return 0.2126*float64(c.R) + 0.7152*float64(c.G) + 0.0722*float64(c.B)
}

func TestViridis(t *testing.T) {
	t.Parallel()
	require.Equal(t, color.RGBA{0x44, 0x01, 0x54, 0xff}, Viridis(0), "dark purple at 0")
	require.Equal(t, color.RGBA{0xfd, 0xe7, 0x25, 0xff}, Viridis(1), "yellow at 1")
	require.Equal(t, Viridis(0), Viridis(-3), "clamped below")
	require.Equal(t, Viridis(1), Viridis(7), "clamped above")
	require.Equal(t, Viridis(0), Viridis(math.NaN()))
	require.Equal(t, viridis[3], Viridis(3.0/9), "a stop is its own colour")

	t.Run("lightness increases along the scale", func(t *testing.T) {
		prev := -1.0
		for i := 0; i <= 200; i++ {
			y := luminance(Viridis(float64(i) / 200))
			require.Greater(t, y, prev, "at %d/200", i)
			prev = y
		}
	})
	t.Run("no colour of the scale is a no-value colour", func(t *testing.T) {
		for i := 0; i <= 1000; i++ {
			require.False(t, IsNoValue(Viridis(float64(i)/1000)))
		}
	})
}

func TestScale(t *testing.T) {
	t.Parallel()
	s := Scale{Min: 36, Max: 40}
	require.Equal(t, Viridis(0), s.Color(36))
	require.Equal(t, Viridis(1), s.Color(40))
	require.Equal(t, Viridis(0.5), s.Color(38))
	require.Equal(t, Viridis(1), s.Color(41), "clamped")
	require.Equal(t, NoValueFill, s.Color(math.NaN()))
	require.Equal(t, NoValueFill, s.Color(math.Inf(1)))
	flat := Scale{Min: 2, Max: 2}
	require.True(t, flat.Flat())
	require.Equal(t, Viridis(0.5), flat.Color(2))
	ticks, _ := flat.Ticks(5)
	require.Empty(t, ticks)
}

func TestTicks(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		lo, hi float64
		n      int
		want   []string
	}{
		"return levels":    {36.41, 38.57, 5, []string{"36.5", "37.0", "37.5", "38.0", "38.5"}},
		"probabilities":    {0, 1, 5, []string{"0", "0.25", "0.50", "0.75", "1.00"}},
		"small":            {0.0123, 0.0456, 4, []string{"0.02", "0.03", "0.04"}},
		"negative to zero": {-7.2, 0.4, 5, []string{"-6", "-4", "-2", "0"}},
		"large":            {1200, 9800, 5, []string{"2000", "4000", "6000", "8000"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ticks, step := Scale{Min: c.lo, Max: c.hi}.Ticks(c.n)
			var got []string
			for _, v := range ticks {
				require.GreaterOrEqual(t, v, c.lo)
				require.LessOrEqual(t, v, c.hi)
				got = append(got, fmtTick(v, step))
			}
			require.Equal(t, c.want, got)
		})
	}
}

func TestDegreeTicks(t *testing.T) {
	t.Parallel()
	ticks, step := degreeTicks(-180, 180, 7)
	require.Equal(t, 60.0, step, "steps of 10° and more divide the globe")
	require.Equal(t, []float64{-180, -120, -60, 0, 60, 120, 180}, ticks)
	ticks, step = degreeTicks(33, 39, 8)
	require.Equal(t, 1.0, step)
	require.Equal(t, []float64{33, 34, 35, 36, 37, 38, 39}, ticks)
}

func TestDegrees(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		v, step  float64
		pos, neg string
		want     string
	}{
		{33, 1, "N", "S", "33°N"},
		{-12.5, 2.5, "N", "S", "12.5°S"},
		{124.5, 0.5, "E", "W", "124.5°E"},
		{-170, 10, "E", "W", "170°W"},
		{0, 0.5, "E", "W", "0°"},
		{1e-12, 0.5, "N", "S", "0°"},
	} {
		require.Equal(t, c.want, degrees(c.v, c.step, c.pos, c.neg))
	}
}

func TestLayout(t *testing.T) {
	t.Parallel()
	t.Run("a 160 x 120 grid gets 4-pixel cells, north up", func(t *testing.T) {
		l := NewLayout(region(t, 0.05, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}))
		require.Equal(t, 4.0, l.Scale)
		require.Equal(t, image.Rect(marginLeft, marginTop, marginLeft+640, marginTop+480), l.Plot)
		require.Equal(t, 800, l.Width, "every map is 800 pixels wide")
		nw, ok := l.Pixel(38.99, 124.01)
		require.True(t, ok)
		require.Equal(t, l.Plot.Min.Add(image.Pt(1, 1)), nw, "middle of the north-west block")
		se, ok := l.Pixel(33.01, 131.99)
		require.True(t, ok)
		require.Equal(t, l.Plot.Max.Sub(image.Pt(3, 3)), se)
		_, ok = l.Pixel(40, 124.01)
		require.False(t, ok, "outside the region")
	})
	t.Run("a global grid is sampled to fit", func(t *testing.T) {
		l := NewLayout(region(t, 0.05, grid.BBox{LonMin: -180, LatMin: -90, LonMax: 180, LatMax: 90}))
		require.Equal(t, 700, l.Plot.Dx())
		require.Equal(t, 350, l.Plot.Dy())
		require.Equal(t, 800, l.Width)
		v := l.NewValues()
		for id := range int64(10 * 7200) { // the ten southernmost rows, a pixel's worth
			v.Set(id, float64(id))
		}
		require.Equal(t, 72000, v.Len())
		img := Render(v, Labels{Title: "global"})
		require.Equal(t, image.Rect(0, 0, l.Width, l.Height), img.Rect)
		require.False(t, IsNoValue(img.At(l.Plot.Min.X, l.Plot.Max.Y-1)), "the bottom row shows values")
		require.True(t, IsNoValue(img.At(l.Plot.Min.X, l.Plot.Min.Y)), "the top row has none")
	})
	t.Run("one cell", func(t *testing.T) {
		l := NewLayout(region(t, 1, grid.BBox{LonMin: 10, LatMin: 10, LonMax: 11, LatMax: 11}))
		require.Equal(t, 540, l.Plot.Dx())
		require.Equal(t, 540, l.Plot.Dy())
		require.Equal(t, 800, l.Width)
	})
}

func TestWrapSubtitle(t *testing.T) {
	t.Parallel()
	width := 40 * charW
	require.Equal(t, []string{"short · fits"}, wrap("short · fits", width, 2))
	long := "batch hazard-20261203-071056-19749a (partial) · step 0.01° · bbox 124.5,33,131.875,38.625"
	got := wrap(long, width, 2)
	require.Equal(t, []string{"batch hazard-20261203-071056-19749a", "(partial) · step 0.01° · bbox 124.5,3..."}, got,
		"broken at a part or a word, the rest clipped")
	for _, l := range got {
		require.LessOrEqual(t, textWidth(l), width)
	}
	// The subtitles the monitor draws fit the 800-pixel image on two lines, uncut.
	sub := "the published values of hazard (hazard_timeseries) · step 0.0025° · bbox -179.5,-89.5,179.5,89.5"
	lines := wrap(sub, ImageWidth-24, 2)
	require.Equal(t, sub, strings.Join(lines, " · "))
}

// TestRenderSmallGrid draws a known 4 x 3 grid: a hot cell in the
// north-east, a cold one in the south-west, one cell without a value.
func TestRenderSmallGrid(t *testing.T) {
	t.Parallel()
	r := region(t, 1, grid.BBox{LonMin: 10, LatMin: 20, LonMax: 14, LatMax: 23})
	require.Equal(t, 4, r.NumCols())
	require.Equal(t, 3, r.NumRows())
	l := NewLayout(r)
	v := l.NewValues()
	hot, cold, missing := cellAt(t, r, 22.5, 13.5), cellAt(t, r, 20.5, 10.5), cellAt(t, r, 21.5, 12.5)
	nan := cellAt(t, r, 21.5, 11.5)
	for k := range r.NumCells() {
		c := r.CellAt(k)
		switch c.GridID {
		case hot.GridID:
			v.Set(c.GridID, 40)
		case cold.GridID:
			v.Set(c.GridID, 30)
		case missing.GridID:
		case nan.GridID:
			v.Set(c.GridID, math.NaN())
		default:
			v.Set(c.GridID, 35)
		}
	}
	v.Set(r.Lattice.GridID(0, 0), 1000) // outside the region: ignored
	require.Equal(t, 10, v.Len())
	require.Equal(t, 2, v.Missing())
	s, ok := v.Scale()
	require.True(t, ok)
	require.Equal(t, Scale{Min: 30, Max: 40}, s)

	var buf bytes.Buffer
	require.NoError(t, Encode(&buf, v, Labels{Title: "hazard · ssp245 · 2060", Subtitle: "test", Quantity: "return level", Units: "degC"}))
	decoded, err := png.Decode(&buf)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, l.Width, l.Height), decoded.Bounds())
	at := func(c grid.Cell) color.RGBA {
		p, ok := l.Pixel(c.Lat, c.Lon)
		require.True(t, ok)
		return color.RGBAModel.Convert(decoded.At(p.X, p.Y)).(color.RGBA)
	}
	require.Equal(t, Viridis(1), at(hot), "the hottest cell is yellow")
	require.Equal(t, Viridis(0), at(cold), "the coldest is dark purple")
	require.Equal(t, Viridis(0.5), at(cellAt(t, r, 20.5, 13.5)))
	require.NotEqual(t, at(hot), at(cold))

	hp, _ := l.Pixel(hot.Lat, hot.Lon)
	cp, _ := l.Pixel(cold.Lat, cold.Lon)
	require.Less(t, hp.Y, cp.Y, "north is up")
	require.Greater(t, hp.X, cp.X, "east is right")

	for _, c := range []grid.Cell{missing, nan} {
		rect := l.CellRect(c.Row, c.Col)
		require.False(t, rect.Empty())
		hatched := 0
		for y := rect.Min.Y; y < rect.Max.Y; y++ {
			for x := rect.Min.X; x < rect.Max.X; x++ {
				require.True(t, IsNoValue(decoded.At(x, y)), "cell %d pixel %d,%d", c.GridID, x, y)
				if color.RGBAModel.Convert(decoded.At(x, y)) == NoValueHatch {
					hatched++
				}
			}
		}
		require.Positive(t, hatched, "the no-value cell is hatched")
	}
}

func TestRenderWithoutValues(t *testing.T) {
	t.Parallel()
	l := NewLayout(region(t, 0.5, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}))
	v := l.NewValues()
	_, ok := v.Scale()
	require.False(t, ok)
	img := Render(v, Labels{})
	require.True(t, IsNoValue(img.At(l.Plot.Min.X+l.Plot.Dx()/2, l.Plot.Min.Y+l.Plot.Dy()/2)))
	require.Equal(t, l.Region.NumCells(), v.Missing())
}

func cellAt(t *testing.T, r grid.Region, lat, lon float64) grid.Cell {
	t.Helper()
	c, err := r.Lattice.CellAt(lat, lon)
	require.NoError(t, err)
	return c
}

// TestRenderFailedCells: a cell marked failed is drawn in FailedFill, over
// a value or none, and the legend keys it in the same red.
func TestRenderFailedCells(t *testing.T) {
	t.Parallel()
	r := region(t, 1, grid.BBox{LonMin: 10, LatMin: 20, LonMax: 14, LatMax: 23})
	l := NewLayout(r)
	v := l.NewValues()
	failed, valued := cellAt(t, r, 21.5, 12.5), cellAt(t, r, 22.5, 13.5)
	for k := range r.NumCells() {
		if c := r.CellAt(k); c.GridID != failed.GridID {
			v.Set(c.GridID, float64(k))
		}
	}
	v.Fail(failed.GridID)
	v.Fail(r.Lattice.GridID(0, 0)) // outside the region: ignored
	require.Equal(t, 1, v.Failed())
	img := Render(v, Labels{})
	at := func(c grid.Cell) color.RGBA {
		p, ok := l.Pixel(c.Lat, c.Lon)
		require.True(t, ok)
		return img.RGBAAt(p.X, p.Y)
	}
	require.Equal(t, FailedFill, at(failed))
	require.NotEqual(t, FailedFill, at(valued))
	legend := 0
	for y := l.Plot.Max.Y; y < l.Height; y++ {
		for x := range l.Width {
			if img.RGBAAt(x, y) == FailedFill {
				legend++
			}
		}
	}
	require.Positive(t, legend, "the legend keys the failed cells")
}

// TestDivergingScale: the scale of differences is symmetric around zero,
// whichever side is larger: zero is the palette's middle colour (near
// white), -m and +m, m the largest absolute difference, its ends (blue and
// red), and the map draws the cells in those colours.
func TestDivergingScale(t *testing.T) {
	t.Parallel()
	require.Equal(t, redBlue[0], Diverging(0), "dark blue at 0")
	require.Equal(t, redBlue[5], Diverging(0.5), "the middle stop at 0.5")
	require.Equal(t, color.RGBA{0xf7, 0xf7, 0xf7, 0xff}, Diverging(0.5))
	require.Equal(t, redBlue[10], Diverging(1), "dark red at 1")
	require.Equal(t, Diverging(0), Diverging(math.NaN()))
	require.Greater(t, Diverging(0).B, Diverging(0).R, "negative is blue")
	require.Greater(t, Diverging(1).R, Diverging(1).B, "positive is red")
	for i := 0; i <= 1000; i++ {
		require.False(t, IsNoValue(Diverging(float64(i)/1000)), "no colour of the scale is a no-value colour")
	}

	r := region(t, 1, grid.BBox{LonMin: 10, LatMin: 20, LonMax: 14, LatMax: 23})
	l := NewLayout(r)
	v := l.NewDifferences()
	neg, zero, pos, small, none := cellAt(t, r, 20.5, 10.5), cellAt(t, r, 21.5, 11.5),
		cellAt(t, r, 22.5, 13.5), cellAt(t, r, 22.5, 10.5), cellAt(t, r, 21.5, 13.5)
	v.Set(neg.GridID, -1.5)
	v.Set(zero.GridID, 0)
	v.Set(pos.GridID, 4)
	v.Set(small.GridID, 2)
	s, ok := v.Scale()
	require.True(t, ok)
	require.Equal(t, Scale{Min: -4, Max: 4, Diverging: true}, s, "±max|difference|")
	require.Equal(t, Diverging(0.5), s.Color(0))
	require.Equal(t, Diverging(0), s.Color(-4))
	require.Equal(t, Diverging(1), s.Color(4))
	require.Equal(t, Diverging(0.75), s.Color(2))
	require.Equal(t, r.NumCells()-4, v.Missing())

	img := Render(v, Labels{Quantity: "difference against published", Units: "K"})
	at := func(c grid.Cell) color.RGBA {
		p, ok := l.Pixel(c.Lat, c.Lon)
		require.True(t, ok)
		return img.RGBAAt(p.X, p.Y)
	}
	require.Equal(t, Diverging(0.5), at(zero))
	require.Equal(t, Diverging(1), at(pos))
	require.Equal(t, Diverging(0.75), at(small))
	require.Equal(t, Diverging(0.5-1.5/8), at(neg))
	require.True(t, IsNoValue(at(none)))

	t.Run("every difference zero", func(t *testing.T) {
		v := l.NewDifferences()
		v.Set(zero.GridID, 0)
		s, ok := v.Scale()
		require.True(t, ok)
		require.True(t, s.Flat())
		require.Equal(t, Diverging(0.5), s.Color(0))
	})
}
