package export_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/export"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// fixture is a small export: 5 latitude rows × 7 longitudes at step 0.5,
// two scenarios (one whose name needs quoting in CSV) and four years, with
// cells missing (one whole latitude row among them) and values that no
// decimal rounding survives: NaN, -0, the smallest subnormal, +Inf.
type fixture struct {
	layout export.Layout
	series []export.Series
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	r, err := grid.ParseRegion(0.5, "10,40,13.5,42.5", 0)
	require.NoError(t, err)
	require.Equal(t, 5, r.NumRows())
	require.Equal(t, 7, r.NumCols())
	f := fixture{layout: export.Layout{
		Kind: "ph", Units: "1", LongName: "probability, of \"heat\"", Region: r,
		Scenarios: []string{"ssp245", "a,b \"c\""}, FirstYear: 2021, Years: 4,
		Attributes: map[string]string{"gridbatch_kind": "ph", "source": "gridbatch"},
	}}
	for k := range r.NumCells() {
		c := r.CellAt(k)
		if c.Row == r.Row0+2 || (c.Row == r.Row0 && c.Col == r.Col0+3) || k == r.NumCells()-1 {
			continue // no value: a whole latitude row, one cell, the last cell
		}
		// A cell's scenarios in the reverse of the layout's order: any order goes.
		for si := len(f.layout.Scenarios) - 1; si >= 0; si-- {
			v := make([]float64, f.layout.Years)
			for y := range v {
				v[y] = float64(c.GridID) + float64(si)/3 + float64(y)*math.Pi*1e-7
			}
			f.series = append(f.series, export.Series{GridID: c.GridID, Scenario: f.layout.Scenarios[si], FirstYear: 2021, Values: v})
		}
	}
	f.series[0].Values[0] = math.NaN()
	f.series[1].Values[1] = math.Copysign(0, -1)
	f.series[2].Values[2] = math.SmallestNonzeroFloat64
	f.series[3].Values[3] = math.Inf(1)
	return f
}

// source streams the series, reusing one Values slice as the store does.
func (f fixture) source() export.Source {
	return func(ctx context.Context, fn func(export.Series) error) error {
		buf := make([]float64, f.layout.Years)
		for _, s := range f.series {
			if err := ctx.Err(); err != nil {
				return err
			}
			copy(buf, s.Values)
			s.Values = buf
			if err := fn(s); err != nil {
				return err
			}
		}
		return nil
	}
}

// row is one expected row of the long form.
type row struct {
	id       int64
	lat, lon float64
	scenario string
	year     int
	value    float64
}

func (f fixture) rows() []row {
	var out []row
	for _, s := range f.series {
		c, _ := f.layout.Region.Lattice.CellByID(s.GridID)
		lat, lon := f.layout.Region.Lattice.DecimalCentre(c.Row, c.Col)
		for y, v := range s.Values {
			out = append(out, row{s.GridID, lat, lon, s.Scenario, s.FirstYear + y, v})
		}
	}
	return out
}

// same reports whether a and b are the same float64, bit for bit but for
// NaN's payload.
func same(a, b float64) bool {
	return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
}

func requireRows(t *testing.T, want, got []row) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		w, g := want[i], got[i]
		if w.id != g.id || w.scenario != g.scenario || w.year != g.year || !same(w.lat, g.lat) || !same(w.lon, g.lon) || !same(w.value, g.value) {
			t.Fatalf("row %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestCSV(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "ph.csv")
	st, err := export.File(context.Background(), path, f.source(), f.layout, export.Options{Format: export.CSV})
	require.NoError(t, err)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, int64(len(data)), st.Bytes)
	require.Equal(t, int64(len(f.series)), st.Series)
	require.Equal(t, int64(f.layout.Region.NumCells()-f.layout.Region.NumCols()-2), st.Cells)

	rec, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"grid_id", "lat", "lon", "scenario", "year", "value"}, rec[0])
	got := make([]row, len(rec)-1)
	for i, r := range rec[1:] {
		id, err := strconv.ParseInt(r[0], 10, 64)
		require.NoError(t, err)
		year, err := strconv.Atoi(r[4])
		require.NoError(t, err)
		got[i] = row{id, parse(t, r[1]), parse(t, r[2]), r[3], year, parse(t, r[5])}
	}
	requireRows(t, f.rows(), got)

	t.Run("to standard output, the same bytes", func(t *testing.T) {
		var buf bytes.Buffer
		st, err := export.Stream(context.Background(), &buf, f.source(), f.layout, export.Options{Format: export.CSV})
		require.NoError(t, err)
		require.Equal(t, string(data), buf.String())
		require.Equal(t, int64(buf.Len()), st.Bytes)
		_, err = export.Stream(context.Background(), &buf, f.source(), f.layout, export.Options{Format: export.Parquet})
		require.ErrorContains(t, err, "only csv streams to standard output")
	})
}

func parse(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return v
}

// TestParquet reads the file with hyparquet (JavaScript), not parquet-go.
func TestParquet(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	path := filepath.Join(t.TempDir(), "ph.parquet")
	_, err := export.File(context.Background(), path, f.source(), f.layout, export.Options{Format: export.Parquet})
	require.NoError(t, err)
	pf := testutil.ReadParquet(t, path)
	require.Equal(t, [][2]string{{"grid_id", "INT64"}, {"lat", "DOUBLE"}, {"lon", "DOUBLE"}, {"scenario", "BYTE_ARRAY"}, {"year", "INT32"}, {"value", "DOUBLE"}}, pf.Columns)
	require.Equal(t, "ph", pf.Metadata["gridbatch_kind"])
	got := make([]row, len(pf.Rows))
	for i, r := range pf.Rows {
		got[i] = row{r.GridID, r.Lat, r.Lon, r.Scenario, r.Year, r.Value}
	}
	requireRows(t, f.rows(), got)
}

// grid returns the fixture's values in the NetCDF variable's layout:
// (scenario, year, lat, lon) in C order, NaN where a cell has none.
func (f fixture) grid() []float64 {
	l := f.layout
	r := l.Region
	out := make([]float64, len(l.Scenarios)*l.Years*r.NumCells())
	for i := range out {
		out[i] = math.NaN()
	}
	for _, s := range f.series {
		si := 0
		for i, name := range l.Scenarios {
			if name == s.Scenario {
				si = i
			}
		}
		c, _ := r.Lattice.CellByID(s.GridID)
		for y, v := range s.Values {
			out[((si*l.Years+y)*r.NumRows()+c.Row-r.Row0)*r.NumCols()+c.Col-r.Col0] = v
		}
	}
	return out
}

// TestNetCDF reads the file with Debian's xarray, and checks every value,
// coordinate and attribute the CF-1.8 layout promises.
// Not parallel: it sets the writer's block size, which the other tests
// read.
func TestNetCDF(t *testing.T) {
	const row = 8 * 2 * 4 * 7 // bytes of one latitude row's slab
	for _, c := range []struct {
		rows  int
		level int
		hdf5  bool // HDF5 compresses the chunks, not the writer
	}{{0, 0, false}, {1, 0, false}, {2, 0, false}, {2, 9, false}, {2, export.NoCompression, false}, {2, 0, true}} {
		name := fmt.Sprintf("blocks of %d latitude rows", c.rows)
		if c.rows == 0 {
			name = "blocks of the default size: every row at once"
		}
		switch {
		case c.hdf5:
			name += ", compressed by HDF5"
		case c.level == export.NoCompression:
			name += ", uncompressed"
		case c.level != 0:
			name += fmt.Sprintf(", compression level %d", c.level)
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			if c.rows > 0 {
				// With one row a block, the row without values is not written.
				defer export.SetNetCDFBlockBytes(export.SetNetCDFBlockBytes(c.rows * row))
			}
			if c.hdf5 {
				defer export.SetNetCDFChunks(export.SetNetCDFChunks(false))
			}
			path := filepath.Join(t.TempDir(), "ph.nc")
			st, err := export.File(context.Background(), path, f.source(), f.layout, export.Options{Format: export.NetCDF, Compression: c.level})
			require.NoError(t, err)
			require.Positive(t, st.Bytes)
			nc := testutil.ReadNetCDF(t, path, "ph", "ssp245", 2023)
			require.Equal(t, "NETCDF4", nc.DataModel, "NetCDF-4 (HDF5): files over 2 GiB")
			require.Equal(t, "CF-1.8", nc.Attrs["Conventions"])
			require.Equal(t, "ph", nc.Attrs["gridbatch_kind"])
			require.Equal(t, []string{"scenario", "time", "lat", "lon"}, nc.Dims)
			require.Equal(t, "float64", nc.DType)
			require.Equal(t, "nan", nc.Fill)
			require.Equal(t, map[string]string{"units": "1", "long_name": "probability, of \"heat\"", "grid_mapping": "crs"}, nc.VarAttrs)
			require.Equal(t, map[string]string{"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude of the cell centre", "axis": "Y", "bounds": "lat_bnds"}, nc.CoordAttrs["lat"])
			require.Equal(t, map[string]string{"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude of the cell centre", "axis": "X", "bounds": "lon_bnds"}, nc.CoordAttrs["lon"])
			require.Equal(t, f.layout.Scenarios, nc.Scenario)
			require.Equal(t, []int{2021, 2022, 2023, 2024}, nc.Year)
			r := f.layout.Region
			for i, lat := range nc.Lat {
				want, _ := r.Lattice.DecimalCentre(r.Row0+i, r.Col0)
				require.Equal(t, want, lat)
			}
			for i, lon := range nc.Lon {
				_, want := r.Lattice.DecimalCentre(r.Row0, r.Col0+i)
				require.Equal(t, want, lon)
			}
			want := f.grid()
			require.Len(t, nc.Values, len(want))
			for i := range want {
				require.True(t, same(want[i], nc.Values[i]), "value %d: got %v, want %v", i, nc.Values[i], want[i])
			}
			m := r.NumCells()
			year := 2023 - 2021
			for i := range m {
				require.True(t, same(want[year*m+i], nc.Map[i]), ".sel(scenario=ssp245, time=2023) value %d", i)
			}
		})
	}
}

// TestNetCDFLargeChunks writes chunks of 70,000 values whose low bytes are
// noise (so the writer stores those planes, in several stored blocks, and
// deflates the others), with cells missing, at the fastest and the
// smallest compression level, and as HDF5 compresses them itself; xarray
// reads every value back bit for bit. Not parallel: it sets the writer's
// mode, which the other tests read.
func TestNetCDFLargeChunks(t *testing.T) {
	r, err := grid.ParseRegion(0.01, "124,33,131,34", 0)
	require.NoError(t, err)
	require.Equal(t, 70_000, r.NumCells())
	l := export.Layout{Kind: "ph", Units: "1", Region: r, Scenarios: []string{"ssp245"}, FirstYear: 2030, Years: 1}
	value := func(k int) float64 {
		if k%11 == 5 {
			return math.NaN()
		}
		return 0.5 + 0.4*math.Sin(float64(k)/300) + float64(k%977)*1e-13
	}
	src := func(ctx context.Context, fn func(export.Series) error) error {
		for k := range r.NumCells() {
			if v := value(k); !math.IsNaN(v) {
				if err := fn(export.Series{GridID: r.CellAt(k).GridID, Scenario: "ssp245", FirstYear: 2030, Values: []float64{v}}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, c := range []struct {
		level int
		hdf5  bool
	}{{1, false}, {9, false}, {1, true}} {
		t.Run(fmt.Sprintf("level %d, compressed by HDF5 %t", c.level, c.hdf5), func(t *testing.T) {
			if c.hdf5 {
				defer export.SetNetCDFChunks(export.SetNetCDFChunks(false))
			}
			path := filepath.Join(t.TempDir(), "ph.nc")
			st, err := export.File(context.Background(), path, src, l, export.Options{Format: export.NetCDF, Compression: c.level})
			require.NoError(t, err)
			require.Less(t, st.Bytes, int64(8*r.NumCells()), "compressed")
			nc := testutil.ReadNetCDF(t, path, "ph", "ssp245", 2030)
			require.Len(t, nc.Values, r.NumCells())
			for k, got := range nc.Values {
				require.True(t, same(value(k), got), "value %d: got %v, want %v", k, got, value(k))
			}
		})
	}
}

// TestNetCDFWithoutNetCDF4 names the Debian package to install, and leaves
// no file.
func TestNetCDFWithoutNetCDF4(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	dir := t.TempDir()
	// Debian's python3 without its site packages cannot import netCDF4.
	noSite := filepath.Join(dir, "python3")
	require.NoError(t, os.WriteFile(noSite, []byte("#!/bin/sh\nexec "+testutil.DebianPython+" -S \"$@\"\n"), 0o755))
	out := filepath.Join(dir, "out", "ph.nc")
	require.NoError(t, os.Mkdir(filepath.Dir(out), 0o755))
	for _, python := range []string{noSite, filepath.Join(dir, "no-such-python3")} {
		_, err := export.File(context.Background(), out, f.source(), f.layout, export.Options{Format: export.NetCDF, Python: python})
		require.ErrorContains(t, err, "python3-netcdf4")
		require.ErrorContains(t, err, "apt-get install")
		requireEmptyDir(t, filepath.Dir(out))
	}
}

func requireEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.Empty(t, names, "files left in %s", dir)
}

// TestFailedExportLeavesNoFile: an export that fails half-way (the source
// fails, or is interrupted) leaves neither the file nor its temporary
// file, and a file already there as it was.
func TestFailedExportLeavesNoFile(t *testing.T) {
	t.Parallel()
	for _, format := range export.Formats {
		t.Run(string(format), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "out")
			broken := errors.New("connection lost")
			failing := func(ctx context.Context, fn func(export.Series) error) error {
				n := 0
				return f.source()(ctx, func(s export.Series) error {
					if n++; n == len(f.series)/2 {
						return broken
					}
					return fn(s)
				})
			}
			_, err := export.File(context.Background(), path, failing, f.layout, export.Options{Format: format})
			require.ErrorIs(t, err, broken)
			requireEmptyDir(t, dir)

			ctx, cancel := context.WithCancel(context.Background())
			interrupted := func(ctx context.Context, fn func(export.Series) error) error {
				n := 0
				return f.source()(ctx, func(s export.Series) error {
					if n++; n == len(f.series)/2 {
						cancel()
					}
					return fn(s)
				})
			}
			require.NoError(t, os.WriteFile(path, []byte("before"), 0o644))
			_, err = export.File(ctx, path, interrupted, f.layout, export.Options{Format: format})
			require.ErrorIs(t, err, context.Canceled)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.Equal(t, "before", string(data), "the file already there is left as it was")
			require.NoError(t, os.Remove(path))
			requireEmptyDir(t, dir)
		})
	}
}

func TestUnwritableDirectory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	_, err := export.File(context.Background(), filepath.Join(t.TempDir(), "no", "such", "dir", "ph.csv"), f.source(), f.layout, export.Options{Format: export.CSV})
	require.ErrorContains(t, err, "cannot write beside")
}

// TestGridRejects series the grid cannot place.
func TestGridRejects(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.layout.Region
	tests := []struct {
		name   string
		edit   func([]export.Series) []export.Series
		errMsg string
	}{
		{"cells out of order", func(s []export.Series) []export.Series {
			s[0], s[len(s)-1] = s[len(s)-1], s[0]
			return s
		}, "grid_id order"},
		{"a cell outside the region", func(s []export.Series) []export.Series {
			s[0].GridID = r.Lattice.GridID(r.Row1, r.Col0)
			return s
		}, "outside the exported region"},
		{"an unknown scenario", func(s []export.Series) []export.Series {
			s[3].Scenario = "ssp999"
			return s
		}, `scenario "ssp999" is not one of the model's`},
		{"other years", func(s []export.Series) []export.Series {
			s[3].FirstYear = 2020
			return s
		}, "a series of 2020–2023, but the model declares 2021–2024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.series = tt.edit(f.series)
			var slabs slabCounter
			_, err := export.WriteGrid(context.Background(), f.source(), f.layout, &slabs, nil)
			require.ErrorContains(t, err, tt.errMsg)
		})
	}
}

// slabCounter is a SlabWriter that counts slabs.
type slabCounter int

func (s *slabCounter) WriteSlab([]float64) error { *s++; return nil }
func (s *slabCounter) Close() error              { return nil }

func TestFormats(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]export.Format{"NetCDF": export.NetCDF, " csv": export.CSV, "parquet": export.Parquet} {
		got, err := export.ParseFormat(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
	}
	_, err := export.ParseFormat("xlsx")
	require.ErrorContains(t, err, "want netcdf, parquet or csv")
	for path, want := range map[string]export.Format{"a/b.nc": export.NetCDF, "x.PARQUET": export.Parquet, "x.csv": export.CSV} {
		got, ok := export.FormatOf(path)
		require.True(t, ok, path)
		require.Equal(t, want, got)
	}
	_, ok := export.FormatOf("x.txt")
	require.False(t, ok)
	require.True(t, strings.HasPrefix(export.CSVHeader, "grid_id,lat,lon,scenario,year,value"))
}
