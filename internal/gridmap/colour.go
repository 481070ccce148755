package gridmap

import (
	"image/color"
	"math"
	"strconv"
)

// viridis is matplotlib's viridis colormap sampled at ten evenly spaced
// stops (0, 1/9, …, 1): perceptually uniform, readable in grey and by
// people with the common forms of colour blindness. Viridis interpolates
// between them.
var viridis = [...]color.RGBA{
	{0x44, 0x01, 0x54, 0xff},
	{0x48, 0x28, 0x78, 0xff},
	{0x3e, 0x49, 0x89, 0xff},
	{0x31, 0x68, 0x8e, 0xff},
	{0x26, 0x82, 0x8e, 0xff},
	{0x1f, 0x9e, 0x89, 0xff},
	{0x35, 0xb7, 0x79, 0xff},
	{0x6e, 0xce, 0x58, 0xff},
	{0xb5, 0xde, 0x2b, 0xff},
	{0xfd, 0xe7, 0x25, 0xff},
}

// redBlue is ColorBrewer's diverging RdBu scale in eleven stops, reversed:
// dark blue at 0, a near white in the middle stop (0.5), dark red at 1.
// Diverging interpolates between them; it draws differences, negative
// blue, positive red.
var redBlue = [...]color.RGBA{
	{0x05, 0x30, 0x61, 0xff},
	{0x21, 0x66, 0xac, 0xff},
	{0x43, 0x93, 0xc3, 0xff},
	{0x92, 0xc5, 0xde, 0xff},
	{0xd1, 0xe5, 0xf0, 0xff},
	{0xf7, 0xf7, 0xf7, 0xff},
	{0xfd, 0xdb, 0xc7, 0xff},
	{0xf4, 0xa5, 0x82, 0xff},
	{0xd6, 0x60, 0x4d, 0xff},
	{0xb2, 0x18, 0x2b, 0xff},
	{0x67, 0x00, 0x1f, 0xff},
}

// The colours of a cell without a value: a light grey hatched with
// diagonal lines of a darker grey. Neither is a colour of the scale.
var (
	NoValueFill  = color.RGBA{0xe4, 0xe4, 0xe4, 0xff}
	NoValueHatch = color.RGBA{0xa8, 0xa8, 0xa8, 0xff}
)

// FailedFill is the colour of a cell that was dead-lettered (Values.Fail):
// a red that is not a colour of the scale.
var FailedFill = color.RGBA{0xd6, 0x27, 0x28, 0xff}

// noValueAt returns the no-value colour of pixel x, y of the image: the
// hatching runs across cells, so a region of missing cells reads as one.
func noValueAt(x, y int) color.RGBA {
	if (x+y)%6 == 0 {
		return NoValueHatch
	}
	return NoValueFill
}

// IsNoValue reports whether c is one of the colours of a cell without a
// value.
func IsNoValue(c color.Color) bool {
	r := color.RGBAModel.Convert(c).(color.RGBA)
	return r == NoValueFill || r == NoValueHatch
}

// Viridis returns the colour of t on the viridis scale: dark purple at 0,
// yellow at 1, linear between the stops. t is clamped to [0,1]; NaN is 0.
func Viridis(t float64) color.RGBA { return ramp(viridis[:], t) }

// Diverging returns the colour of t on the blue–white–red scale: dark blue
// at 0, near white at 0.5, dark red at 1, linear between the stops. t is
// clamped to [0,1]; NaN is 0.
func Diverging(t float64) color.RGBA { return ramp(redBlue[:], t) }

// ramp returns the colour of t between evenly spaced stops, linear
// between them; t is clamped to [0,1] and NaN is 0.
func ramp(stops []color.RGBA, t float64) color.RGBA {
	if !(t > 0) {
		return stops[0]
	}
	if t >= 1 {
		return stops[len(stops)-1]
	}
	f := t * float64(len(stops)-1)
	i := int(f)
	f -= float64(i)
	a, b := stops[i], stops[i+1]
	mix := func(x, y uint8) uint8 { return uint8(math.Round(float64(x) + (float64(y)-float64(x))*f)) }
	return color.RGBA{mix(a.R, b.R), mix(a.G, b.G), mix(a.B, b.B), 0xff}
}

// Scale maps values from Min to Max onto the viridis scale, or onto the
// Diverging scale when Diverging is set (a scale of differences, from
// -m to m, so that zero is its middle).
type Scale struct {
	Min, Max  float64
	Diverging bool
}

// ColorAt returns the colour at t of the scale's palette (t as At returns).
func (s Scale) ColorAt(t float64) color.RGBA {
	if s.Diverging {
		return Diverging(t)
	}
	return Viridis(t)
}

// Flat reports whether every value is the same: the scale has no extent
// and every value gets the middle colour.
func (s Scale) Flat() bool { return !(s.Max > s.Min) }

// At returns where v lies on the scale, 0 at Min and 1 at Max (0.5 on a
// flat scale), clamped to [0,1].
func (s Scale) At(v float64) float64 {
	if s.Flat() {
		return 0.5
	}
	return math.Min(math.Max((v-s.Min)/(s.Max-s.Min), 0), 1)
}

// Color returns the colour of v: s.ColorAt(s.At(v)), or NoValueFill when v
// is NaN or infinite.
func (s Scale) Color(v float64) color.RGBA {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return NoValueFill
	}
	return s.ColorAt(s.At(v))
}

// Ticks returns round values inside [Min, Max] for the colour bar, about
// n of them (at least 2 when the scale is not flat), and their step. A
// flat scale has none.
func (s Scale) Ticks(n int) (ticks []float64, step float64) {
	if s.Flat() {
		return nil, 0
	}
	return niceTicks(s.Min, s.Max, n)
}

// niceTicks returns the multiples of a round step (1, 2, 2.5 or 5 times a
// power of ten) inside [lo, hi], the smallest step that gives at most n,
// and that step.
func niceTicks(lo, hi float64, n int) (ticks []float64, step float64) {
	n = max(n, 2)
	span := hi - lo
	p := math.Pow(10, math.Floor(math.Log10(span/float64(n))))
	for _, m := range []float64{1, 2, 2.5, 5, 10, 20} {
		step = m * p
		k0, k1 := math.Ceil(lo/step-1e-9), math.Floor(hi/step+1e-9)
		if k1-k0+1 <= float64(n) {
			for k := k0; k <= k1; k++ {
				ticks = append(ticks, k*step)
			}
			return ticks, step
		}
	}
	return []float64{lo, hi}, span
}

// decimals returns how many decimals show the multiples of step exactly
// (2.5 needs one more than 2).
func decimals(step float64) int {
	d := max(0, int(-math.Floor(math.Log10(step)+1e-9)))
	if r := step * math.Pow(10, float64(d)); math.Abs(r-math.Round(r)) > 1e-6 {
		d++
	}
	return d
}

// fmtTick formats a tick value, a multiple of step.
func fmtTick(v, step float64) string {
	if v == 0 {
		return "0"
	}
	if a := math.Abs(v); a >= 1e6 || step < 1e-4 {
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
	return strconv.FormatFloat(v, 'f', decimals(step), 64)
}

// fmtValue formats a value of the range (min, max) with four significant
// digits.
func fmtValue(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
