//go:build integration

package integration

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// userModel is a user's Python model that reads imported columns (loc,
// scale, shape) instead of the seeded mu0, sigma, xi, and computes P(H)
// with the reference model's numpy code.
const userModel = `import os, sys
root = sys.argv[1]
sys.path.insert(0, os.path.join(root, "sdk", "python"))
sys.path.insert(0, os.path.join(root, "examples", "python"))
import gridbatch_model, reference_model

def compute(cells):
    return reference_model.ph({"grid_id": cells["grid_id"], "mu0": cells["loc"], "sigma": cells["scale"], "xi": cells["shape"]})

gridbatch_model.serve(compute, inputs=["loc", "scale", "shape"])
`

// TestImportRunExportRoundTrip: a user's own inputs imported from CSV, a
// user's Python model that reads them run as a batch, the results exported
// as NetCDF (read back with xarray) and Parquet (read back with hyparquet):
// every value equals the Go kernel's for the imported parameters within
// 1e-12.
func TestImportRunExportRoundTrip(t *testing.T) {
	t.Parallel()
	dir := testutil.ModelDir(t)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model.py"), []byte(userModel), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "models.yaml"), []byte(fmt.Sprintf(`models:
  - kind: user_ph
    command: ["/usr/bin/python3", "model.py", %q]
    env: {OMP_NUM_THREADS: "1"}
    inputs: [loc, scale, shape]
    timeout: 1m
    units: "1"
    long_name: "probability that the year's maximum exceeds 35 degC, from imported parameters"
`, testutil.RepoRoot())), 0o644))
	c := newCluster(t, "GRIDBATCH_MODELS_FILE="+filepath.Join(dir, "models.yaml"))
	_, errOut, code := c.Enqueuer("migrate")
	require.Equal(t, 0, code, errOut)

	// The user's inputs: the reference parameters, warmer by 0.5 degC, by lat,lon.
	const bbox, step = "126,36,127,37", 0.05
	region, err := grid.ParseRegion(step, bbox, 0)
	require.NoError(t, err)
	params := map[int64]grid.Params{}
	var csv strings.Builder
	csv.WriteString("lat,lon,loc,scale,shape\n")
	for k := range region.NumCells() {
		cell := region.CellAt(k)
		p := grid.ReferenceParams(cell.Lat, cell.Lon)
		p.Mu0 += 0.5
		params[cell.GridID] = p
		fmt.Fprintf(&csv, "%s,%s,%s,%s,%s\n", ftoa(cell.Lat), ftoa(cell.Lon), ftoa(p.Mu0), ftoa(p.Sigma), ftoa(p.Xi))
	}
	inputs := filepath.Join(dir, "inputs.csv")
	require.NoError(t, os.WriteFile(inputs, []byte(csv.String()), 0o644))
	_, errOut, code = c.Enqueuer("import", "--step", "0.05", "--file", inputs)
	require.Equal(t, 0, code, errOut)

	c.Worker()
	out, errOut, code := c.Enqueuer("run", "--kind", "user_ph", "--bbox", bbox, "--step", "0.05", "--chunk-size", "100", "--wait")
	require.Equal(t, 0, code, errOut)
	id := strings.SplitN(out, "\n", 2)[0]
	require.Equal(t, store.StatusSucceeded, c.Batch(id).Status)

	want := func(id int64, scenario string, year int) float64 {
		t.Helper()
		series, err := grid.PH.Compute(context.Background(), []grid.Input{{GridID: id, Params: params[id]}})
		require.NoError(t, err)
		for _, s := range series {
			if s.Scenario == scenario {
				return s.Values[year-grid.FirstYear]
			}
		}
		t.Fatalf("no scenario %s", scenario)
		return 0
	}
	near := func(got, want float64) bool {
		return got == want || math.Abs(got-want) <= 1e-12*math.Abs(want)
	}

	// NetCDF of the batch's own rows, read with xarray.
	nc := filepath.Join(dir, "user_ph.nc")
	_, errOut, code = c.Enqueuer("export", "--batch", id, "--format", "netcdf", "--out", nc)
	require.Equal(t, 0, code, errOut)
	f := testutil.ReadNetCDF(t, nc, "user_ph", "ssp245", 2050)
	require.Equal(t, []string{"scenario", "time", "lat", "lon"}, f.Dims)
	require.Equal(t, "1", f.VarAttrs["units"])
	require.Contains(t, f.VarAttrs["long_name"], "imported parameters")
	nlat, nlon, ny := len(f.Lat), len(f.Lon), len(f.Year)
	require.Equal(t, region.NumCells(), nlat*nlon)
	checked := 0
	for si, scen := range f.Scenario {
		for yi, year := range f.Year {
			for i, la := range f.Lat {
				for j, lo := range f.Lon {
					cell, err := region.Lattice.CellAt(la, lo)
					require.NoError(t, err)
					got := f.Values[((si*ny+yi)*nlat+i)*nlon+j]
					require.True(t, near(got, want(cell.GridID, scen, year)), "netcdf %s %d cell %d: %v", scen, year, cell.GridID, got)
					checked++
				}
			}
		}
	}
	require.Equal(t, region.NumCells()*3*80, checked)

	// Parquet of the published values, read with hyparquet.
	pq := filepath.Join(dir, "user_ph.parquet")
	_, errOut, code = c.Enqueuer("export", "--kind", "user_ph", "--step", "0.05", "--bbox", bbox, "--format", "parquet", "--out", pq)
	require.Equal(t, 0, code, errOut)
	p := testutil.ReadParquet(t, pq)
	require.Len(t, p.Rows, region.NumCells()*3*80)
	for _, r := range p.Rows {
		require.True(t, near(r.Value, want(r.GridID, r.Scenario, r.Year)), "parquet %s %d cell %d: %v", r.Scenario, r.Year, r.GridID, r.Value)
	}
}

func ftoa(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
