//go:build integration

package integration

import (
	"context"
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// plusOne is the built-in ph model with every value plus one: a second
// batch whose values differ from the first's.
type plusOne struct{ grid.Model }

func (p plusOne) Compute(ctx context.Context, in []grid.Input) ([]grid.Series, error) {
	out, err := p.Model.Compute(ctx, in)
	for _, s := range out {
		for i := range s.Values {
			s.Values[i]++
		}
	}
	return out, err
}

// stored maps "grid_id scenario" to a series as PostgreSQL holds it.
type stored map[string][]float64

func key(id int64, scenario string) string { return strconv.FormatInt(id, 10) + " " + scenario }

// storedRows reads the series of a table or view at step 0.05.
func storedRows(t *testing.T, c *cluster, table string) stored {
	t.Helper()
	rows, err := c.DB.Pool.Query(context.Background(), `SELECT grid_id, scenario, series FROM `+pgx.Identifier{table}.Sanitize()+` WHERE step = 0.05`)
	require.NoError(t, err)
	out := stored{}
	for rows.Next() {
		var id int64
		var s string
		var v []float64
		require.NoError(t, rows.Scan(&id, &s, &v))
		out[key(id, s)] = v
	}
	require.NoError(t, rows.Err())
	return out
}

// batchSeries reads a batch's own series at step 0.05, as `enqueuer
// export --batch` does.
func batchSeries(t *testing.T, c *cluster, batchID string) stored {
	t.Helper()
	out := stored{}
	require.NoError(t, c.DB.Store.Export(context.Background(), store.ExportQuery{BatchID: batchID, Step: 0.05}, func(r store.ExportRow) error {
		out[key(r.GridID, r.Scenario)] = slices.Clone(r.Values)
		return nil
	}))
	return out
}

// within1e12 reports whether got is want within 1e-12 (relative, absolute
// near 0); NaN matches NaN.
func within1e12(got, want float64) bool {
	if math.IsNaN(want) {
		return math.IsNaN(got)
	}
	return math.Abs(got-want) <= 1e-12*math.Max(1, math.Abs(want))
}

// exportCase is one export and what it must hold.
type exportCase struct {
	args      []string
	region    grid.Region // the cells it covers
	scenarios []string
	want      stored // the series it holds; cells of region without one are NaN in NetCDF
}

// checkLong checks rows of the long form (CSV, Parquet): one per value of
// want, in grid_id order, at the exact decimal cell centres (37.025).
func checkLong(t *testing.T, ec exportCase, rows []testutil.ParquetRecord) {
	t.Helper()
	n := 0
	for _, v := range ec.want {
		n += len(v)
	}
	require.Len(t, rows, n)
	l := ec.region.Lattice
	for i, r := range rows {
		if i > 0 {
			require.GreaterOrEqual(t, r.GridID, rows[i-1].GridID, "row %d: grid_id order", i)
		}
		c, err := l.CellByID(r.GridID)
		require.NoError(t, err)
		lat, lon := l.DecimalCentre(c.Row, c.Col)
		require.Equal(t, lat, r.Lat, "row %d: the exact decimal centre", i)
		require.Equal(t, lon, r.Lon, "row %d: the exact decimal centre", i)
		v, ok := ec.want[key(r.GridID, r.Scenario)]
		require.True(t, ok, "row %d: cell %d %s is not in the export's selection", i, r.GridID, r.Scenario)
		y := r.Year - grid.FirstYear
		require.True(t, y >= 0 && y < len(v), "row %d: year %d", i, r.Year)
		require.True(t, within1e12(r.Value, v[y]), "row %d: cell %d %s %d: got %v, stored %v", i, r.GridID, r.Scenario, r.Year, r.Value, v[y])
	}
}

func readCSV(t *testing.T, data string) []testutil.ParquetRecord {
	t.Helper()
	rec, err := csv.NewReader(strings.NewReader(data)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"grid_id", "lat", "lon", "scenario", "year", "value"}, rec[0])
	out := make([]testutil.ParquetRecord, len(rec)-1)
	for i, r := range rec[1:] {
		var err error
		out[i].GridID, err = strconv.ParseInt(r[0], 10, 64)
		require.NoError(t, err)
		out[i].Lat, err = strconv.ParseFloat(r[1], 64)
		require.NoError(t, err)
		out[i].Lon, err = strconv.ParseFloat(r[2], 64)
		require.NoError(t, err)
		out[i].Scenario = r[3]
		out[i].Year, err = strconv.Atoi(r[4])
		require.NoError(t, err)
		out[i].Value, err = strconv.ParseFloat(r[5], 64)
		require.NoError(t, err)
	}
	return out
}

// checkNetCDF checks the whole variable read by xarray against want.
func checkNetCDF(t *testing.T, ec exportCase, kind string, nc testutil.NetCDFFile) {
	t.Helper()
	r := ec.region
	require.Equal(t, "CF-1.8", nc.Attrs["Conventions"])
	require.Equal(t, []string{"scenario", "time", "lat", "lon"}, nc.Dims)
	require.Equal(t, "float64", nc.DType)
	require.Equal(t, ec.scenarios, nc.Scenario)
	require.Len(t, nc.Year, grid.NumYears)
	require.Equal(t, grid.FirstYear, nc.Year[0])
	require.Len(t, nc.Lat, r.NumRows())
	require.Len(t, nc.Lon, r.NumCols())
	require.Len(t, nc.Values, len(ec.scenarios)*grid.NumYears*r.NumCells())
	values := 0
	for si, s := range ec.scenarios {
		for y := range grid.NumYears {
			for row := range r.NumRows() {
				for col := range r.NumCols() {
					c := r.Lattice.Cell(r.Row0+row, r.Col0+col)
					lat, lon := r.Lattice.DecimalCentre(c.Row, c.Col)
					require.Equal(t, lat, nc.Lat[row])
					require.Equal(t, lon, nc.Lon[col])
					got := nc.Values[((si*grid.NumYears+y)*r.NumRows()+row)*r.NumCols()+col]
					want := math.NaN()
					if v, ok := ec.want[key(c.GridID, s)]; ok {
						want = v[y]
						values++
					}
					require.True(t, within1e12(got, want), "%s[%s, %d, lat %v, lon %v] (cell %d): got %v, stored %v", kind, s, grid.FirstYear+y, c.Lat, c.Lon, c.GridID, got, want)
				}
			}
		}
	}
	require.Positive(t, values)
}

// TestExport exports a batch's own rows and the published values of a kind
// (with a bbox and a scenario) as NetCDF, Parquet and CSV with the enqueuer
// binary, and reads every file back with a reader that is not the writer:
// Debian's xarray, hyparquet (JavaScript), Go's encoding/csv. Every value
// equals PostgreSQL's within 1e-12; cells without a value are NaN in NetCDF.
// The model's units and long_name (from the models file) are the variable's
// attributes.
func TestExport(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	models := filepath.Join(dir, "models.yaml")
	require.NoError(t, os.WriteFile(models, []byte(`models:
  - kind: heat
    command: ["/usr/bin/python3", "-c", "pass"]
    units: "1"
    long_name: probability that the year's maximum exceeds 35 degC
`), 0o644))
	c := newCluster(t, "GRIDBATCH_MODELS_FILE="+models)
	_, errOut, code := c.Enqueuer("migrate")
	require.Equal(t, 0, code, errOut)

	all, err := grid.ParseRegion(0.05, "126,37,127,37.5", 0) // 20 × 10 cells
	require.NoError(t, err)
	part, err := grid.ParseRegion(0.05, "126.5,37.2,127,37.5", 0)
	require.NoError(t, err)
	hole := func(cell grid.Cell) bool { return cell.Row == part.Row0+1 && cell.Col == part.Col0+2 }
	first := testutil.StoreBatch(t, c.DB.Store, "heat-first", "heat", grid.PH, all, 50, nil, store.StatusSucceeded)
	require.NotNil(t, first.PublishedAt)
	second := testutil.StoreBatch(t, c.DB.Store, "heat-second", "heat", plusOne{grid.PH}, part, 13, hole, store.StatusPartial)
	require.Nil(t, second.PublishedAt)
	_, errOut, code = c.Enqueuer("publish", second.ID) // its values over part, but for the hole
	require.Equal(t, 0, code, errOut)

	scenarios := []string{"ssp126", "ssp245", "ssp585"}
	ownRows := batchSeries(t, c, second.ID)
	require.Len(t, ownRows, (part.NumCells()-1)*3)
	box, err := grid.ParseRegion(0.05, "126.31,37.12,126.74,37.43", 0) // across both batches' cells
	require.NoError(t, err)
	published := stored{}
	for k, v := range storedRows(t, c, "heat_timeseries") {
		var id int64
		var s string
		_, _ = fmtSscan(k, &id, &s)
		cell, _ := box.Lattice.CellByID(id)
		if s == "ssp245" && cell.Row >= box.Row0 && cell.Row < box.Row1 && cell.Col >= box.Col0 && cell.Col < box.Col1 {
			published[k] = v
		}
	}
	require.Len(t, published, box.NumCells())

	cases := map[string]exportCase{
		"batch": {args: []string{"--batch", second.ID}, region: part, scenarios: scenarios, want: ownRows},
		"kind":  {args: []string{"--kind", "heat", "--step", "0.05", "--bbox", "126.31,37.12,126.74,37.43", "--scenario", "ssp245"}, region: box, scenarios: []string{"ssp245"}, want: published},
	}
	for name, ec := range cases {
		t.Run(name, func(t *testing.T) {
			for _, format := range []string{"netcdf", "parquet", "csv"} {
				out := filepath.Join(dir, name+"."+format)
				_, errOut, code := c.Enqueuer(append([]string{"export", "--format", format, "--out", out}, ec.args...)...)
				require.Equal(t, 0, code, errOut)
				require.Contains(t, errOut, "exported ")
				switch format {
				case "netcdf":
					nc := testutil.ReadNetCDF(t, out, "heat", ec.scenarios[len(ec.scenarios)-1], 2050)
					require.Equal(t, map[string]string{"units": "1", "long_name": "probability that the year's maximum exceeds 35 degC", "grid_mapping": "crs"}, nc.VarAttrs)
					checkNetCDF(t, ec, "heat", nc)
				case "parquet":
					checkLong(t, ec, testutil.ReadParquet(t, out).Rows)
				case "csv":
					data, err := os.ReadFile(out)
					require.NoError(t, err)
					checkLong(t, ec, readCSV(t, string(data)))
					stdout, errOut, code := c.Enqueuer(append([]string{"export", "--out", "-"}, ec.args...)...)
					require.Equal(t, 0, code, errOut)
					require.Equal(t, string(data), stdout, "--out - writes the same CSV to standard output")
				}
			}
		})
	}

	t.Run("a failed export leaves no file", func(t *testing.T) {
		fails := filepath.Join(dir, "fails")
		require.NoError(t, os.Mkdir(fails, 0o755))
		for _, tc := range []struct {
			args []string
			msg  string
		}{
			{[]string{"--batch", "no-such-batch", "--out", filepath.Join(fails, "x.nc")}, "no batch no-such-batch"},
			{[]string{"--batch", second.ID, "--out", filepath.Join(fails, "missing", "x.nc")}, "cannot write beside"},
			{[]string{"--batch", second.ID, "--out", filepath.Join(fails, "x.parquet"), "--scenario", "ssp999"}, `unknown scenario "ssp999"`},
			{[]string{"--kind", "heat", "--step", "0.01", "--out", filepath.Join(fails, "x.csv")}, "no published heat values at step 0.01"},
			{[]string{"--batch", second.ID, "--format", "parquet", "--out", "-"}, "only csv goes to standard output"},
			{[]string{"--batch", second.ID, "--out", filepath.Join(fails, "x.txt")}, "--format is required"},
			{[]string{"--batch", second.ID, "--format", "netcdf", "--python", filepath.Join(fails, "python3"), "--out", filepath.Join(fails, "x.nc")}, "python3-netcdf4"},
		} {
			stdout, errOut, code := c.Enqueuer(append([]string{"export"}, tc.args...)...)
			require.Equal(t, 1, code, "%v: %s", tc.args, errOut)
			require.Contains(t, errOut, tc.msg, "%v", tc.args)
			require.Equal(t, 1, strings.Count(errOut, "\n"), "one line: %s", errOut)
			require.Empty(t, stdout)
			entries, err := os.ReadDir(fails)
			require.NoError(t, err)
			require.Empty(t, entries, "%v left files", tc.args)
		}
	})

	t.Run("an interrupted export leaves no file and no writer process", func(t *testing.T) {
		// The batch's table locked: the export waits on it, its file begun.
		ctx := context.Background()
		tx, err := c.DB.Pool.Begin(ctx)
		require.NoError(t, err)
		defer tx.Rollback(ctx) //nolint:errcheck // the lock's end
		_, err = tx.Exec(ctx, `LOCK TABLE `+pgx.Identifier{tableOf(t, c, second.ID)}.Sanitize()+` IN ACCESS EXCLUSIVE MODE`)
		require.NoError(t, err)
		out := filepath.Join(dir, "interrupted")
		require.NoError(t, os.Mkdir(out, 0o755))
		p := c.Start("enqueuer", nil, "export", "--batch", second.ID, "--out", filepath.Join(out, "x.nc"))
		var writer int
		testutil.Eventually(t, 30*time.Second, "the NetCDF writer process and the temporary file", func() bool {
			entries, _ := os.ReadDir(out)
			// Any thread of the Go process may have started the child.
			threads, _ := filepath.Glob("/proc/" + strconv.Itoa(p.Pid()) + "/task/*/children")
			var kids []string
			for _, th := range threads {
				b, _ := os.ReadFile(th)
				kids = append(kids, strings.Fields(string(b))...)
			}
			if len(kids) == 1 && len(entries) == 1 {
				writer, _ = strconv.Atoi(kids[0])
				return true
			}
			return false
		})
		p.Signal(syscall.SIGINT)
		require.Equal(t, 1, p.Wait(t, 10*time.Second), p.LogText())
		require.Contains(t, p.LogText(), "stopped")
		entries, err := os.ReadDir(out)
		require.NoError(t, err)
		require.Empty(t, entries)
		testutil.Eventually(t, 5*time.Second, "the writer process to be gone", func() bool {
			st, err := os.ReadFile("/proc/" + strconv.Itoa(writer) + "/stat")
			return err != nil || strings.Contains(string(st), ") Z ")
		})
	})
}

func tableOf(t *testing.T, c *cluster, batchID string) string {
	t.Helper()
	var table string
	require.NoError(t, c.DB.Pool.QueryRow(context.Background(), `SELECT results_table FROM batch_runs WHERE id = $1`, batchID).Scan(&table))
	return table
}

// fmtSscan splits a key of stored back into its cell and scenario.
func fmtSscan(k string, id *int64, s *string) (int, error) {
	i := strings.IndexByte(k, ' ')
	v, err := strconv.ParseInt(k[:i], 10, 64)
	*id, *s = v, k[i+1:]
	return 2, err
}
