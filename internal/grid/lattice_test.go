package grid

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

func mustLattice(t testing.TB, step float64) Lattice {
	t.Helper()
	l, err := NewLattice(step)
	require.NoError(t, err)
	return l
}

func TestNewLattice(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		step       float64
		rows, cols int
		wantErr    string
	}{
		{name: "0.05", step: 0.05, rows: 3600, cols: 7200},
		{name: "0.02", step: 0.02, rows: 9000, cols: 18000},
		{name: "0.01", step: 0.01, rows: 18000, cols: 36000},
		{name: "0.1", step: 0.1, rows: 1800, cols: 3600},
		{name: "0.25", step: 0.25, rows: 720, cols: 1440},
		{name: "1", step: 1, rows: 180, cols: 360},
		{name: "180", step: 180, rows: 1, cols: 2},
		{name: "smallest", step: 1e-7, rows: 1_800_000_000, cols: 3_600_000_000},
		{name: "zero", step: 0, wantErr: "step 0: must be positive, such as 0.05"},
		{name: "negative", step: -0.05, wantErr: "step -0.05: must be positive, such as 0.05"},
		{name: "NaN", step: math.NaN(), wantErr: "step NaN: must be a finite number of degrees such as 0.05"},
		{name: "Inf", step: math.Inf(1), wantErr: "step +Inf: must be a finite number of degrees such as 0.05"},
		{name: "0.07 does not divide 360", step: 0.07,
			wantErr: "step 0.07: 360/step must be a whole number (got 5142.857…); try 0.05, 0.02 or 0.01"},
		{name: "larger than 360", step: 400,
			wantErr: "step 400: 360/step must be a whole number (got 0.9); try 0.05, 0.02 or 0.01"},
		{name: "divides 360 but not 180", step: 360.0 / 7,
			wantErr: "step 51.42857142857143: 180/step must be a whole number (got 3.5); try 0.05, 0.02 or 0.01"},
		{name: "360", step: 360,
			wantErr: "step 360: 180/step must be a whole number (got 0.5); try 0.05, 0.02 or 0.01"},
		{name: "too fine", step: 1e-8, wantErr: "step 1e-08: too fine, the smallest supported step is 1e-07"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := NewLattice(tt.step)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), "\n")
				return
			}
			require.NoError(t, err)
			require.Equal(t, Lattice{Step: tt.step, Rows: tt.rows, Cols: tt.cols}, l)
		})
	}
}

func TestParseStep(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    Lattice
		wantErr string
	}{
		{name: "plain", in: "0.05", want: Lattice{Step: 0.05, Rows: 3600, Cols: 7200}},
		{name: "spaces", in: " 0.01 ", want: Lattice{Step: 0.01, Rows: 18000, Cols: 36000}},
		{name: "not a number", in: "abc", wantErr: `step "abc": want a positive number of degrees such as 0.05`},
		{name: "empty", in: "", wantErr: `step "": want a positive number of degrees such as 0.05`},
		{name: "bad step", in: "0.07", wantErr: "step 0.07: 360/step must be a whole number (got 5142.857…); try 0.05, 0.02 or 0.01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseStep(tt.in)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestLatticeCell(t *testing.T) {
	t.Parallel()
	l := mustLattice(t, 0.05)
	tests := []struct {
		name     string
		row, col int
		id       int64
		lat, lon float64
	}{
		{name: "first", row: 0, col: 0, id: 0, lat: -89.975, lon: -179.975},
		{name: "end of first row", row: 0, col: 7199, id: 7199, lat: -89.975, lon: 179.975},
		{name: "start of second row", row: 1, col: 0, id: 7200, lat: -89.925, lon: -179.975},
		{name: "korea corner", row: 2460, col: 6080, id: 2460*7200 + 6080, lat: 33.025, lon: 124.025},
		{name: "last", row: 3599, col: 7199, id: 3600*7200 - 1, lat: 89.975, lon: 179.975},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := l.Cell(tt.row, tt.col)
			require.Equal(t, tt.id, c.GridID)
			require.Equal(t, tt.id, l.GridID(tt.row, tt.col))
			require.Equal(t, tt.row, c.Row)
			require.Equal(t, tt.col, c.Col)
			require.InDelta(t, tt.lat, c.Lat, 1e-9)
			require.InDelta(t, tt.lon, c.Lon, 1e-9)

			byID, err := l.CellByID(tt.id)
			require.NoError(t, err)
			require.Equal(t, c, byID)

			at, err := l.CellAt(c.Lat, c.Lon)
			require.NoError(t, err)
			require.Equal(t, c, at)
		})
	}
}

func TestLatticeCellByIDOutOfRange(t *testing.T) {
	t.Parallel()
	l := mustLattice(t, 0.05)
	tests := []struct {
		name    string
		id      int64
		wantErr string
	}{
		{name: "negative", id: -1, wantErr: "grid id -1 outside [0,25920000) at step 0.05"},
		{name: "one past the end", id: 25920000, wantErr: "grid id 25920000 outside [0,25920000) at step 0.05"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := l.CellByID(tt.id)
			require.EqualError(t, err, tt.wantErr)
		})
	}
}

func TestLatticeCellAt(t *testing.T) {
	t.Parallel()
	l := mustLattice(t, 0.05)
	tests := []struct {
		name     string
		lat, lon float64
		row, col int
		wantErr  string
	}{
		{name: "south-west corner", lat: -90, lon: -180, row: 0, col: 0},
		{name: "north pole and antimeridian clamp into the last cell", lat: 90, lon: 180, row: 3599, col: 7199},
		{name: "lower edge belongs to its cell", lat: -89.95, lon: -179.95, row: 1, col: 1},
		{name: "just below an edge", lat: math.Nextafter(-89.95, -90), lon: math.Nextafter(-179.95, -180), row: 0, col: 0},
		{name: "korea edge 33N 124E", lat: 33, lon: 124, row: 2460, col: 6080},
		{name: "seoul", lat: 37.5665, lon: 126.978, row: 2551, col: 6139},
		{name: "lat above 90", lat: 90.5, lon: 0, wantErr: "lat 90.5 outside [-90,90]"},
		{name: "lat NaN", lat: math.NaN(), lon: 0, wantErr: "lat NaN outside [-90,90]"},
		{name: "lon below -180", lat: 0, lon: -181, wantErr: "lon -181 outside [-180,180]"},
		{name: "lon Inf", lat: 0, lon: math.Inf(1), wantErr: "lon +Inf outside [-180,180]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := l.CellAt(tt.lat, tt.lon)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.row, c.Row)
			require.Equal(t, tt.col, c.Col)
		})
	}
}

// TestLatticeEdgesRoundTrip checks, at several steps, that every cell's
// centre maps back to the cell and that each lower edge -90 + row*step (as
// computed in float64) maps to that row, not the one below.
func TestLatticeEdgesRoundTrip(t *testing.T) {
	t.Parallel()
	for _, step := range []float64{0.01, 0.02, 0.05, 0.1, 0.25, 1, 7.5} {
		l := mustLattice(t, step)
		for row := range l.Rows {
			c, err := l.CellAt(l.Cell(row, 0).Lat, 0)
			require.NoError(t, err)
			require.Equal(t, row, c.Row, "step %g centre of row %d", step, row)
			c, err = l.CellAt(-90+float64(row)*step, 0)
			require.NoError(t, err)
			require.Equal(t, row, c.Row, "step %g lower edge of row %d", step, row)
		}
		for col := range l.Cols {
			c, err := l.CellAt(0, l.Cell(0, col).Lon)
			require.NoError(t, err)
			require.Equal(t, col, c.Col, "step %g centre of col %d", step, col)
			c, err = l.CellAt(0, -180+float64(col)*step)
			require.NoError(t, err)
			require.Equal(t, col, c.Col, "step %g lower edge of col %d", step, col)
		}
	}
}

func FuzzParseStep(f *testing.F) {
	for _, s := range []string{"0.05", "0.01", "0.07", "0", "-1", "NaN", "Inf", "1e-300", "180", "360", " 0.25 ", "0x1p-4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseStep(s)
		if err != nil {
			if strContainsNewline(err.Error()) {
				t.Fatalf("ParseStep(%q) error has a newline: %q", s, err)
			}
			return
		}
		if err := l.validate(); err != nil {
			t.Fatalf("ParseStep(%q) = %+v, which does not validate: %v", s, l, err)
		}
		if l.Rows < 1 || l.Cols != 2*l.Rows {
			t.Fatalf("ParseStep(%q) = %+v: want Cols == 2*Rows >= 2", s, l)
		}
		if _, err := l.CellByID(l.NumCells() - 1); err != nil {
			t.Fatalf("ParseStep(%q) = %+v: last cell: %v", s, l, err)
		}
	})
}
