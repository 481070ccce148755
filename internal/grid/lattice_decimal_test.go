package grid

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestDecimalCentre checks that centres and edges are the float64 nearest
// their decimal values, the number a user types to select a cell.
func TestDecimalCentre(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		step     float64
		row, col int
		lat, lon string
		s, w     string
	}{
		{0.05, 2540, 6130, "37.025", "126.525", "37", "126.5"},
		{0.01, 12312, 30652, "33.125", "126.525", "33.12", "126.52"},
		{0.1, 0, 3599, "-89.95", "179.95", "-90", "179.9"},
		{0.25, 400, 800, "10.125", "20.125", "10", "20"},
		{1, 90, 180, "0.5", "0.5", "0", "0"},
		{0.0005, 254050, 613050, "37.02525", "126.52525", "37.025", "126.525"},
	} {
		t.Run(strconv.FormatFloat(tc.step, 'g', -1, 64), func(t *testing.T) {
			t.Parallel()
			l, err := NewLattice(tc.step)
			require.NoError(t, err)
			lat, lon := l.DecimalCentre(tc.row, tc.col)
			require.Equal(t, tc.lat, strconv.FormatFloat(lat, 'g', -1, 64))
			require.Equal(t, tc.lon, strconv.FormatFloat(lon, 'g', -1, 64))
			s, w := l.DecimalEdges(tc.row, tc.col)
			require.Equal(t, tc.s, strconv.FormatFloat(s, 'g', -1, 64))
			require.Equal(t, tc.w, strconv.FormatFloat(w, 'g', -1, 64))
			c := l.Cell(tc.row, tc.col)
			require.InDelta(t, c.Lat, lat, 1e-9, "the same cell as Cell's centre")
			require.InDelta(t, c.Lon, lon, 1e-9)
		})
	}
	t.Run("a step with no decimal form keeps Cell's centre", func(t *testing.T) {
		l := Lattice{Step: 1.0 / 3, Rows: 540, Cols: 1080}
		lat, lon := l.DecimalCentre(10, 20)
		c := l.Cell(10, 20)
		require.Equal(t, c.Lat, lat)
		require.Equal(t, c.Lon, lon)
	})
}
