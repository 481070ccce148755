package grid

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// bboxWant is the shape ParseBBox expects, quoted in its errors.
const bboxWant = "want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX"

// BBox is a bounding box in degrees of longitude and latitude. Bounds are
// inclusive: a point on the edge is inside.
type BBox struct{ LonMin, LatMin, LonMax, LatMax float64 }

// ParseBBox parses "LON_MIN,LAT_MIN,LON_MAX,LAT_MAX", for example
// "124,33,132,39". Spaces around the numbers are allowed. The result is
// checked with Validate. Every error is a single line that names the bad
// value and says what is expected.
func ParseBBox(s string) (BBox, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 4 {
		return BBox{}, fmt.Errorf("bbox %q: %s", s, bboxWant)
	}
	names := [4]string{"lon_min", "lat_min", "lon_max", "lat_max"}
	var v [4]float64
	for i, p := range parts {
		p = strings.TrimSpace(p)
		f, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return BBox{}, fmt.Errorf("bbox %q: %s %q is not a finite number; %s", s, names[i], p, bboxWant)
		}
		v[i] = f
	}
	b := BBox{LonMin: v[0], LatMin: v[1], LonMax: v[2], LatMax: v[3]}
	if err := b.Validate(); err != nil {
		return BBox{}, err
	}
	return b, nil
}

// Validate reports whether b is a usable bounding box: all four bounds
// finite, longitudes within [-180,180], latitudes within [-90,90], and
// LonMin < LonMax, LatMin < LatMax. Boxes crossing the antimeridian are not
// supported. The error is a single line naming the bad bound and its value.
func (b BBox) Validate() error {
	bounds := [4]struct {
		name  string
		v     float64
		limit float64
	}{
		{"lon_min", b.LonMin, 180},
		{"lat_min", b.LatMin, 90},
		{"lon_max", b.LonMax, 180},
		{"lat_max", b.LatMax, 90},
	}
	for _, x := range bounds {
		if math.IsNaN(x.v) || math.IsInf(x.v, 0) {
			return fmt.Errorf("bbox %s %s must be a finite number", x.name, fmtFloat(x.v))
		}
		if x.v < -x.limit || x.v > x.limit {
			return fmt.Errorf("bbox %s %s outside [%s,%s]", x.name, fmtFloat(x.v), fmtFloat(-x.limit), fmtFloat(x.limit))
		}
	}
	if b.LonMin >= b.LonMax {
		return fmt.Errorf("bbox lon_min %s must be less than lon_max %s", fmtFloat(b.LonMin), fmtFloat(b.LonMax))
	}
	if b.LatMin >= b.LatMax {
		return fmt.Errorf("bbox lat_min %s must be less than lat_max %s", fmtFloat(b.LatMin), fmtFloat(b.LatMax))
	}
	return nil
}

// String formats b as "LON_MIN,LAT_MIN,LON_MAX,LAT_MAX" with the shortest
// decimal that round-trips, for example "124,33,132,39". ParseBBox reads it
// back to the same value.
func (b BBox) String() string {
	return fmtFloat(b.LonMin) + "," + fmtFloat(b.LatMin) + "," + fmtFloat(b.LonMax) + "," + fmtFloat(b.LatMax)
}

// fmtFloat formats v as the shortest decimal that round-trips.
func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
