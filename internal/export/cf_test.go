package export_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/export"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// cfRules is run by /usr/bin/python3 with argv: the file, the variable,
// the zlib level it was written with. Each assert is a CF-1.8 rule (or a
// promise of the export's help) the NetCDF export keeps, checked with
// netCDF4 (the file as written) and xarray (the file as users open it).
const cfRules = `
import datetime, re, sys
import netCDF4, numpy as np, xarray as xr
path, name, level = sys.argv[1], sys.argv[2], int(sys.argv[3])

nc = netCDF4.Dataset(path)
# 2.6.1: the conventions the file follows.
assert nc.Conventions == "CF-1.8", nc.Conventions
assert nc.title and nc.source and nc.history
v = nc[name]
assert v.dimensions == ("scenario", "time", "lat", "lon"), v.dimensions
assert v.dtype == np.float64 and np.isnan(v._FillValue)
# 3.1: units on every data and coordinate variable (ph's "1" is dimensionless).
assert v.units == "1" and v.long_name
# 4.1, 4.2: latitude and longitude, their units, standard names and axes.
for c, units, axis in (("lat", "degrees_north", "Y"), ("lon", "degrees_east", "X")):
    cv = nc[c]
    assert cv.dimensions == (c,) and cv.units == units and cv.axis == axis, c
    assert cv.standard_name == {"lat": "latitude", "lon": "longitude"}[c]
    x = cv[:].data
    assert np.all(np.diff(x) > 0), c + " increases monotonically (5: coordinate variables)"
    # 7.1: cell boundaries, contiguous, each holding its centre halfway.
    b = nc[cv.bounds][:].data
    assert b.shape == (len(x), 2), (c, b.shape)
    assert np.all(b[:-1, 1] == b[1:, 0]), c + " bounds are contiguous"
    assert np.allclose((b[:, 0] + b[:, 1]) / 2, x, rtol=0, atol=1e-9)
    # The exact decimal centres and edges: repr is the shortest decimal.
    for y in list(x) + list(b.ravel()):
        assert len(repr(float(y)).split(".")[-1]) <= 6, (c, repr(float(y)))
# 4.4: a time coordinate with units "days since", a calendar and, 7.1, bounds.
t = nc["time"]
assert t.dimensions == ("time",) and t.axis == "T" and t.standard_name == "time"
assert re.fullmatch(r"days since \d{4}-01-01 00:00:00", t.units), t.units
assert t.calendar in ("standard", "gregorian", "proleptic_gregorian"), t.calendar
tb = nc[t.bounds][:].data
assert tb.shape == (len(t), 2)
assert np.all(tb[:-1, 1] == tb[1:, 0]), "year bounds are contiguous"
assert np.all((tb[:, 0] < t[:].data) & (t[:].data < tb[:, 1])), "each time lies within its bounds"
years = nc["year"][:].data
assert nc["year"].dimensions == ("time",) and years.dtype.kind == "i"
starts = netCDF4.num2date(tb[:, 0], t.units, t.calendar)
ends = netCDF4.num2date(tb[:, 1], t.units, t.calendar)
for y, s, e in zip(years, starts, ends):
    assert (s.year, s.month, s.day, e.year, e.month, e.day) == (y, 1, 1, y + 1, 1, 1), (y, s, e)
# 5.6: the grid mapping the variable names, WGS 84 latitude_longitude.
assert v.grid_mapping == "crs"
crs = nc["crs"]
assert crs.grid_mapping_name == "latitude_longitude"
assert crs.semi_major_axis == 6378137.0 and crs.inverse_flattening == 298.257223563
# 5: year is an auxiliary coordinate of the variable.
assert v.coordinates == "year"
# Compressed losslessly, chunked to the grid: no chunk is mostly padding.
f = v.filters()
if level:
    assert f["zlib"] and f["shuffle"] and f["complevel"] == level, f
else:
    assert not f["zlib"], f
ch = v.chunking()
assert ch[0] == 1 and ch[1] == 1 and ch[3] == len(nc["lon"]), ch
nchunks = -(-len(nc["lat"]) // ch[2])
assert nchunks * ch[2] - len(nc["lat"]) < nchunks, ("padding rows", ch)
nc.close()

# As users open it: select a cell by its decimal centre, a year by its time.
ds = xr.open_dataset(path)
assert "year" in ds[name].coords
one = ds[name].sel(lat=37.025, lon=126.525)
m = ds[name].sel(scenario="ssp245", time="2050")
assert m.shape == (1, len(ds.lat), len(ds.lon)), m.shape
assert int(m["year"].values[0]) == 2050
assert m["time"].dt.year.values[0] == 2050
assert float(one.sel(scenario="ssp245", time="2050").values[0]) == float(m.sel(lat=37.025, lon=126.525).values[0])
print(float(one.sel(scenario="ssp245", time="2050").values[0]))
`

// TestNetCDFFollowsCF writes a 0.05° grid whose centres float arithmetic
// gets wrong in the 15th digit, and checks with /usr/bin/python3 the CF-1.8
// rules the NetCDF export keeps (cfRules), at the default compression and
// uncompressed. xarray finds the cell at (37.025, 126.525) and the year 2050
// by its CF time.
func TestNetCDFFollowsCF(t *testing.T) {
	t.Parallel()
	r, err := grid.ParseRegion(0.05, "126.4,36.9,126.7,37.2", 0)
	require.NoError(t, err)
	cell, err := r.Lattice.CellAt(37.025, 126.525)
	require.NoError(t, err)
	require.NotEqual(t, 37.025, cell.Lat, "float arithmetic puts the centre off its decimal value")
	l := export.Layout{Kind: "ph", Units: "1", LongName: "probability", Region: r, Scenarios: []string{"ssp126", "ssp245"},
		FirstYear: grid.FirstYear, Years: grid.NumYears, Attributes: map[string]string{"source": "gridbatch", "history": "now"}}
	src := func(ctx context.Context, fn func(export.Series) error) error {
		for k := range r.NumCells() {
			c := r.CellAt(k)
			for si, s := range l.Scenarios {
				v := make([]float64, l.Years)
				for y := range v {
					v[y] = float64(c.GridID)*1000 + float64(si*100+y)
				}
				if err := fn(export.Series{GridID: c.GridID, Scenario: s, FirstYear: l.FirstYear, Values: v}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, level := range []int{0, export.NoCompression} {
		path := filepath.Join(t.TempDir(), "ph.nc")
		_, err := export.File(context.Background(), path, src, l, export.Options{Format: export.NetCDF, Compression: level})
		require.NoError(t, err)
		want := strconv.Itoa(export.DefaultCompression)
		if level == export.NoCompression {
			want = "0"
		}
		cmd := exec.Command(testutil.DebianPython, "-c", cfRules, path, "ph", want)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		require.NoError(t, err, "a CF rule fails:\n%s", stderr.String())
		// ssp245 (100) in 2050 (year 29) of the cell at (37.025, 126.525).
		require.Equal(t, float64(cell.GridID)*1000+129, parse(t, string(bytes.TrimSpace(out))))
	}
}
