package testutil

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// DebianPython is the interpreter whose Debian packages (python3-netcdf4,
// python3-xarray, installed by `make services-up`) read the NetCDF exports.
const DebianPython = "/usr/bin/python3"

// hyparquetVersion is the npm package that reads Parquet files in tests: a
// reader independent of parquet-go, which writes them.
const hyparquetVersion = "hyparquet@1.33.0"

// NetCDFFile is what xarray reads from a NetCDF export (ReadNetCDF).
type NetCDFFile struct {
	// DataModel is netCDF4's data model, such as NETCDF4.
	DataModel string `json:"data_model"`
	// Attrs are the global attributes.
	Attrs map[string]string `json:"attrs"`
	// Dims are the variable's dimensions, in order.
	Dims []string `json:"dims"`
	// DType is the variable's numpy type, such as float64.
	DType string `json:"dtype"`
	// VarAttrs are the variable's attributes, as xarray decodes them.
	VarAttrs map[string]string `json:"var_attrs"`
	// Fill is the variable's _FillValue as xarray found it in the file.
	Fill string `json:"fill"`
	// CoordAttrs are the attributes of lat, lon, time, year and scenario.
	CoordAttrs map[string]map[string]string `json:"coord_attrs"`
	Scenario   []string                     `json:"scenario"`
	Year       []int                        `json:"year"`
	Lat, Lon   []float64                    `json:"-"`
	// Values are the variable's values in C order (scenario, year, lat, lon).
	Values []float64 `json:"-"`
	// Map is Values of .sel(scenario=…, time="YEAR") in the ReadNetCDF
	// call, (lat, lon) in C order.
	Map []float64 `json:"-"`
	// Raw numbers: repr() strings, exact (shortest round-trip), "nan" for NaN.
	LatText    []string `json:"lat"`
	LonText    []string `json:"lon"`
	ValuesText []string `json:"values"`
	MapText    []string `json:"map"`
}

// netcdfReader is run by /usr/bin/python3 with argv: file, variable,
// scenario, year. It prints one JSON document; numbers as repr() strings.
// The map is selected as a user would, by the year as a CF time string.
const netcdfReader = `
import json, sys
import netCDF4, numpy as np, xarray as xr
path, name, scen, year = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with netCDF4.Dataset(path) as nc:
    model = nc.data_model
ds = xr.open_dataset(path)
v = ds[name]
r = lambda a: [repr(float(x)) for x in np.asarray(a).ravel()]
out = {
    "data_model": model,
    "attrs": {k: str(x) for k, x in ds.attrs.items()},
    "dims": list(v.dims),
    "dtype": str(v.dtype),
    "var_attrs": {k: str(x) for k, x in v.attrs.items()},
    "fill": repr(v.encoding.get("_FillValue")),
    "coord_attrs": {c: {k: str(x) for k, x in ds[c].attrs.items()} for c in ("lat", "lon", "time", "year", "scenario")},
    "scenario": [str(s) for s in ds["scenario"].values],
    "year": [int(y) for y in ds["year"].values],
    "lat": r(ds["lat"].values),
    "lon": r(ds["lon"].values),
    "values": r(v.values),
    "map": r(xr.open_dataset(path)[name].sel(scenario=scen, time=str(year)).squeeze("time", drop=True).values),
}
print(json.dumps(out))
`

// ReadNetCDF reads the NetCDF file at path with Debian's xarray
// (python3-xarray over python3-netcdf4), as a user would:
// xr.open_dataset(path)[variable], and .sel(scenario=scenario,
// time=str(year)) for Map. A missing package fails the test with the command that installs it.
func ReadNetCDF(t testing.TB, path, variable, scenario string, year int) NetCDFFile {
	t.Helper()
	requireDebianPython(t, "xarray", "netCDF4")
	cmd := exec.Command(DebianPython, "-c", netcdfReader, path, variable, scenario, strconv.Itoa(year))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "xarray could not read %s: %s", path, stderr.String())
	var f NetCDFFile
	require.NoError(t, json.Unmarshal(out, &f))
	f.Lat, f.Lon = parseFloats(t, f.LatText), parseFloats(t, f.LonText)
	f.Values, f.Map = parseFloats(t, f.ValuesText), parseFloats(t, f.MapText)
	return f
}

func requireDebianPython(t testing.TB, modules ...string) {
	t.Helper()
	for _, m := range modules {
		if err := exec.Command(DebianPython, "-c", "import "+m).Run(); err != nil {
			t.Fatalf("%s cannot import %s (%v): install Debian's python3-netcdf4 and python3-xarray with `make services-up` (or apt-get install python3-netcdf4 python3-xarray)", DebianPython, m, err)
		}
	}
}

// ParquetRecord is one row of a Parquet export as the independent reader
// (hyparquet, in Node.js) reads it.
type ParquetRecord struct {
	GridID   int64
	Lat, Lon float64
	Scenario string
	Year     int
	Value    float64
}

// parquetReader is run by node with argv: the file. It prints the schema's
// column names and types, then the rows, as JSON; numbers as strings
// (exact: JavaScript's shortest round-trip form), BigInts too.
const parquetReader = `
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet'
const num = v => typeof v === 'bigint' ? v.toString() : Number.isNaN(v) ? 'NaN' : Object.is(v, -0) ? '-0' : String(v)
const file = await asyncBufferFromFile(process.argv[2])
const meta = await parquetMetadataAsync(file)
const columns = parquetSchema(meta).children.map(c => [c.element.name, c.element.type])
const rows = await parquetReadObjects({ file })
const out = rows.map(r => [num(r.grid_id), num(r.lat), num(r.lon), r.scenario, num(r.year), num(r.value)])
const kv = Object.fromEntries((meta.key_value_metadata || []).map(e => [e.key, e.value]))
process.stdout.write(JSON.stringify({ columns, rows: out, row_groups: meta.row_groups.length, metadata: kv }))
`

var (
	hyparquetOnce sync.Once
	hyparquetDir  string
	hyparquetErr  error
	hyparquetOut  []byte
)

// ParquetFile is what ReadParquet reads.
type ParquetFile struct {
	// Columns are the schema's column names and physical types.
	Columns [][2]string
	// RowGroups is how many row groups the file has.
	RowGroups int
	// Metadata is the file's key-value metadata.
	Metadata map[string]string
	Rows     []ParquetRecord
}

// ReadParquet reads the Parquet file at path with hyparquet, a JavaScript
// reader independent of parquet-go, installed with npm into a temporary
// folder once per test process. Without node and npm the test fails with
// the command that installs them.
func ReadParquet(t testing.TB, path string) ParquetFile {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("reading Parquet with the independent reader needs %s (Node.js 20 and npm, for `npm install %s`): apt-get install nodejs npm", tool, hyparquetVersion)
		}
	}
	hyparquetOnce.Do(func() {
		hyparquetDir, hyparquetErr = os.MkdirTemp("", "gridbatch-hyparquet-")
		if hyparquetErr != nil {
			return
		}
		cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", hyparquetDir, hyparquetVersion)
		hyparquetOut, hyparquetErr = cmd.CombinedOutput()
		if hyparquetErr == nil {
			hyparquetErr = os.WriteFile(filepath.Join(hyparquetDir, "read.mjs"), []byte(parquetReader), 0o644)
		}
	})
	require.NoError(t, hyparquetErr, "npm install --prefix %s %s (needs the npm registry): %s", hyparquetDir, hyparquetVersion, hyparquetOut)
	cmd := exec.Command("node", filepath.Join(hyparquetDir, "read.mjs"), path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	require.NoError(t, err, "hyparquet could not read %s: %s", path, stderr.String())
	t.Logf("hyparquet read %s in %s", filepath.Base(path), time.Since(start).Round(time.Millisecond))
	var doc struct {
		Columns   [][2]string       `json:"columns"`
		Rows      [][6]string       `json:"rows"`
		RowGroups int               `json:"row_groups"`
		Metadata  map[string]string `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal(out, &doc))
	f := ParquetFile{Columns: doc.Columns, RowGroups: doc.RowGroups, Metadata: doc.Metadata, Rows: make([]ParquetRecord, len(doc.Rows))}
	for i, r := range doc.Rows {
		id, err := strconv.ParseInt(r[0], 10, 64)
		require.NoError(t, err)
		year, err := strconv.Atoi(r[4])
		require.NoError(t, err)
		f.Rows[i] = ParquetRecord{GridID: id, Lat: parseFloat(t, r[1]), Lon: parseFloat(t, r[2]), Scenario: r[3], Year: year, Value: parseFloat(t, r[5])}
	}
	return f
}

func parseFloats(t testing.TB, s []string) []float64 {
	t.Helper()
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = parseFloat(t, x)
	}
	return out
}

func parseFloat(t testing.TB, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	require.NoError(t, err)
	return f
}
