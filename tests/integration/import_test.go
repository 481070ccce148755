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

	"github.com/parquet-go/parquet-go"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// importedValue is the value of input k of a cell in the files of these
// tests: doubles whose shortest decimal form is long, so that only an exact
// round trip gives them back bit for bit.
func importedValue(id int64, name string, version int) float64 {
	k := len(name) + int(name[0])
	return math.Sqrt(float64(id)+float64(version))/float64(k) - math.Pi*float64(k%2) + 1e-300*float64(version)
}

// importFiles writes the cells of r in a CSV and a Parquet file, keyed by
// grid_id or (byPoint) by a point near each centre, with the inputs named.
func importFiles(t *testing.T, r grid.Region, byPoint bool, names []string, version int) (csvPath, parquetPath string) {
	t.Helper()
	dir := t.TempDir()
	key := []string{"grid_id"}
	if byPoint {
		key = []string{"lat", "lon"}
	}
	var b strings.Builder
	b.WriteString(strings.Join(append(key, names...), ",") + "\n")
	schema := parquet.Group{}
	for _, k := range key {
		schema[k] = parquet.Leaf(parquet.DoubleType)
	}
	if !byPoint {
		schema["grid_id"] = parquet.Leaf(parquet.Int64Type)
	}
	for _, n := range names {
		schema[n] = parquet.Leaf(parquet.DoubleType)
	}
	s := parquet.NewSchema("inputs", schema)
	col := map[string]int{}
	for i, path := range s.Columns() {
		col[path[0]] = i
	}
	var rows []parquet.Row
	for k := range r.NumCells() {
		c := r.CellAt(k)
		row := make(parquet.Row, len(col))
		var fields []string
		if byPoint {
			// Off the centre, within half a step.
			lat, lon := c.Lat+r.Lattice.Step*0.3, c.Lon-r.Lattice.Step*0.45
			fields = append(fields, strconv.FormatFloat(lat, 'g', -1, 64), strconv.FormatFloat(lon, 'g', -1, 64))
			row[col["lat"]] = parquet.DoubleValue(lat).Level(0, 0, col["lat"])
			row[col["lon"]] = parquet.DoubleValue(lon).Level(0, 0, col["lon"])
		} else {
			fields = append(fields, strconv.FormatInt(c.GridID, 10))
			row[col["grid_id"]] = parquet.Int64Value(c.GridID).Level(0, 0, col["grid_id"])
		}
		for _, n := range names {
			v := importedValue(c.GridID, n, version)
			fields = append(fields, strconv.FormatFloat(v, 'g', -1, 64))
			row[col[n]] = parquet.DoubleValue(v).Level(0, 0, col[n])
		}
		b.WriteString(strings.Join(fields, ",") + "\n")
		rows = append(rows, row)
	}
	csvPath = filepath.Join(dir, "inputs.csv")
	require.NoError(t, os.WriteFile(csvPath, []byte(b.String()), 0o644))
	parquetPath = filepath.Join(dir, "inputs.parquet")
	f, err := os.Create(parquetPath)
	require.NoError(t, err)
	w := parquet.NewWriter(f, s, parquet.MaxRowsPerRowGroup(150))
	_, err = w.WriteRows(rows)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, f.Close())
	return csvPath, parquetPath
}

// requireImported checks that every cell of r has, bit for bit, the values
// of version for the inputs named, and the lat and lon of its centre.
func requireImported(t *testing.T, db *testutil.DB, r grid.Region, names []string, version int) {
	t.Helper()
	q := fmt.Sprintf(`SELECT lat, lon, %s FROM cell_params WHERE step = $1 AND grid_id = $2`, strings.Join(names, ", "))
	for k := range r.NumCells() {
		c := r.CellAt(k)
		var lat, lon float64
		vals := make([]float64, len(names))
		dest := []any{&lat, &lon}
		for i := range vals {
			dest = append(dest, &vals[i])
		}
		require.NoError(t, db.Pool.QueryRow(context.Background(), q, r.Lattice.Step, c.GridID).Scan(dest...), "cell %d", c.GridID)
		require.Equal(t, math.Float64bits(c.Lat), math.Float64bits(lat), "lat of cell %d", c.GridID)
		require.Equal(t, math.Float64bits(c.Lon), math.Float64bits(lon), "lon of cell %d", c.GridID)
		for i, n := range names {
			require.Equal(t, math.Float64bits(importedValue(c.GridID, n, version)), math.Float64bits(vals[i]), "%s of cell %d", n, c.GridID)
		}
	}
}

func TestImportCommand(t *testing.T) {
	t.Parallel()
	db := testutil.NewDB(t)
	env := testutil.Env(testutil.NewRedis(t), db)
	seeded := mustRegion(t, "126,36,127,37", 0.05) // 400 cells
	_, errOut, code := runBin(t, env, "enqueuer", "seed", "--bbox", "126,36,127,37", "--step", "0.05")
	require.Equal(t, 0, code, errOut)

	for _, tc := range []struct {
		name    string
		bbox    string
		byPoint bool
		parquet bool
		names   []string
		summary string
		args    []string
	}{
		{"CSV by grid_id: new inputs on seeded cells", "126,36,127,37", false, false, []string{"rain_p99", "soil"},
			"(2 inputs: rain_p99, soil; new: rain_p99, soil): 0 new cells, 400 updated", nil},
		{"CSV by lat,lon: new cells", "127,36,128,37", true, false, []string{"rain_p99", "mu0"},
			"(2 inputs: rain_p99, mu0): 400 new cells, 0 updated", nil},
		{"Parquet by grid_id: new cells", "128,36,129,37", false, true, []string{"rain_p99", "wind"},
			"(2 inputs: rain_p99, wind; new: wind): 400 new cells, 0 updated", []string{"--allow-new-cells"}},
		{"Parquet by lat,lon: seeded cells", "126,36,127,37", true, true, []string{"sigma", "wind"},
			"(2 inputs: sigma, wind): 0 new cells, 400 updated", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRegion(t, tc.bbox, 0.05)
			csvPath, parquetPath := importFiles(t, r, tc.byPoint, tc.names, 1)
			path := csvPath
			if tc.parquet {
				path = parquetPath
			}
			out, errOut, code := runBin(t, env, "enqueuer", append([]string{"import", "--step", "0.05", "--file", path}, tc.args...)...)
			require.Equal(t, 0, code, errOut)
			require.Empty(t, out)
			require.Equal(t, "imported 400 cells from "+path+" at step 0.05 "+tc.summary+"\n", errOut)
			requireImported(t, db, r, tc.names, 1)
		})
	}

	t.Run("grid_ids outside the cells at the step are refused without --allow-new-cells", func(t *testing.T) {
		far := mustRegion(t, "10,50,11,51", 0.05)
		csvPath, _ := importFiles(t, far, false, []string{"rain_p99"}, 3)
		_, errOut, code := runBin(t, env, "enqueuer", "import", "--step", "0.05", "--file", csvPath)
		require.Equal(t, 1, code, errOut)
		require.Contains(t, errOut, "lies outside the cells at step 0.05 in cell_params")
		require.Contains(t, errOut, "is --step right? --allow-new-cells adds it")
		var n int
		require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM cell_params WHERE step = 0.05 AND lat > 49`).Scan(&n))
		require.Zero(t, n, "nothing written")
		_, errOut, code = runBin(t, env, "enqueuer", "import", "--step", "0.025", "--file", csvPath)
		require.Equal(t, 1, code, errOut)
		require.Contains(t, errOut, "line 2: grid_id")
		require.Contains(t, errOut, "cell_params has no cell at step 0.025: is --step right?")
	})

	t.Run("re-importing updates the values and leaves other inputs alone", func(t *testing.T) {
		csvPath, _ := importFiles(t, seeded, false, []string{"rain_p99"}, 2)
		_, errOut, code := runBin(t, env, "enqueuer", "import", "--step", "0.05", "--file", csvPath)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, errOut, ": 0 new cells, 400 updated\n")
		requireImported(t, db, seeded, []string{"rain_p99"}, 2)
		requireImported(t, db, seeded, []string{"soil"}, 1)
		var mu0 float64
		c := seeded.CellAt(0)
		require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT mu0 FROM cell_params WHERE step = 0.05 AND grid_id = $1`, c.GridID).Scan(&mu0))
		require.Equal(t, grid.ReferenceParams(c.Lat, c.Lon).Mu0, mu0, "the seed's mu0, not in the files, is kept")
	})

	t.Run("--format overrides the extension", func(t *testing.T) {
		csvPath, _ := importFiles(t, seeded, false, []string{"soil"}, 3)
		txt := strings.TrimSuffix(csvPath, ".csv") + ".txt"
		require.NoError(t, os.Rename(csvPath, txt))
		_, errOut, code := runBin(t, env, "enqueuer", "import", "--step", "0.05", "--file", txt, "--format", "csv")
		require.Equal(t, 0, code, errOut)
		requireImported(t, db, seeded, []string{"soil"}, 3)
	})
}

func mustRegion(t *testing.T, bbox string, step float64) grid.Region {
	t.Helper()
	r, err := grid.ParseRegion(step, bbox, 0)
	require.NoError(t, err)
	return r
}

// cellParamsChecksum is a digest of cell_params: its columns and every row.
func cellParamsChecksum(t *testing.T, db *testutil.DB) string {
	t.Helper()
	var cols, rows string
	ctx := context.Background()
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT string_agg(column_name || ' ' || data_type || ' ' || is_nullable, ',' ORDER BY ordinal_position)
FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'cell_params'`).Scan(&cols))
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT coalesce(md5(string_agg(c::text, '|' ORDER BY step, grid_id)), '') FROM cell_params c`).Scan(&rows))
	return cols + " " + rows
}

// TestImportBadInputs runs every kind of bad file through the real binary:
// each exits 1 with one line naming the file, the line (or row) and the
// column, and cell_params is unchanged, though the bad row comes after
// 2,000 good ones that were copied already.
func TestImportBadInputs(t *testing.T) {
	t.Parallel()
	db := testutil.NewDB(t)
	env := testutil.Env(testutil.NewRedis(t), db)
	_, errOut, code := runBin(t, env, "enqueuer", "seed", "--bbox", "126,36,127,37", "--step", "0.05")
	require.Equal(t, 0, code, errOut)
	before := cellParamsChecksum(t, db)
	dir := t.TempDir()

	// good is 2,000 good lines (lines 2 to 2001) of cells 18000000 on, with
	// a seeded input and a new one.
	const first = 18_000_000
	var good strings.Builder
	good.WriteString("grid_id,mu0,fresh\n")
	for i := range 2000 {
		fmt.Fprintf(&good, "%d,%d.5,%g\n", first+i, i, float64(i)/3)
	}
	csv := func(name, content string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
		return path
	}
	bad := func(line string) string { return good.String() + line + "\n" }
	pq := func(name string, rows int, badRow func(i int) (int64, any)) string {
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		require.NoError(t, err)
		s := parquet.NewSchema("inputs", parquet.Group{"fresh": parquet.Optional(parquet.Leaf(parquet.DoubleType)), "grid_id": parquet.Leaf(parquet.Int64Type)})
		w := parquet.NewWriter(f, s, parquet.MaxRowsPerRowGroup(500))
		for i := range rows {
			id, v := badRow(i)
			fresh := parquet.NullValue().Level(0, 0, 0)
			if v != nil {
				fresh = parquet.ValueOf(v).Level(0, 1, 0)
			}
			_, err := w.WriteRows([]parquet.Row{{fresh, parquet.Int64Value(id).Level(0, 0, 1)}})
			require.NoError(t, err)
		}
		require.NoError(t, w.Close())
		require.NoError(t, f.Close())
		return path
	}
	goodRow := func(i int) (int64, any) { return int64(first + i), 1.5 }

	for _, tc := range []struct {
		name string
		path string
		args []string
		want string // after "enqueuer: <path>: "
	}{
		{"too few fields", csv("few.csv", bad("18002000,1")), nil, `line 2002, column "fresh": no value: the line has 2 fields, the header 3`},
		{"too many fields", csv("many.csv", bad("18002000,1,2,3")), nil, `line 2002: the line has 4 fields, the header 3: field 4 has no column`},
		{"not a number", csv("nan.csv", bad("18002000,1,n/a")), nil, `line 2002, column "fresh": "n/a" is not a number`},
		{"empty value", csv("empty-value.csv", bad("18002000,,2")), nil, `line 2002, column "mu0": empty: every row needs a value in every column`},
		{"NaN", csv("NaN.csv", bad("18002000,NaN,2")), nil, `line 2002, column "mu0": NaN is not a finite number; inputs must be finite`},
		{"Inf", csv("inf.csv", bad("18002000,1,+Inf")), nil, `line 2002, column "fresh": +Inf is not a finite number; inputs must be finite`},
		{"beyond float64", csv("range.csv", bad("18002000,1,1e400")), nil, `line 2002, column "fresh": "1e400" is out of the range of a float64`},
		{"grid_id not whole", csv("id.csv", bad("18002000.5,1,2")), nil, `line 2002, column "grid_id": "18002000.5" is not a grid id (a whole number)`},
		{"grid_id off the lattice", csv("off.csv", bad("25920000,1,2")), nil, `line 2002, column "grid_id": grid_id 25920000 is not a cell of the lattice of step 0.05 (ids 0 to 25919999)`},
		{"a cell given twice", csv("twice.csv", bad("18001234,1,2")), nil, `line 2002, column "grid_id": cell 18001234 is given twice (first on line 1236)`},
		{"a point off the globe", csv("globe.csv", "lat,lon,fresh\n37.5,127.5,1\n-90.01,127.5,2\n"), nil, `line 3, column "lat": lat -90.01 outside [-90,90]: the point is not on the globe`},
		{"two points in one cell", csv("points.csv", "lat,lon,fresh\n37.51,127.51,1\n37.53,127.54,2\n"), nil, `line 3, column "lat,lon": cell 18366150 is given twice (first on line 2)`},
		{"a bad header name", csv("name.csv", "grid_id,Rain\n18000000,1\n"), nil, `line 1, column "Rain": column 2: an input's name must match ^[a-z][a-z0-9_]{0,62}$ (lower case letters, digits and _, starting with a letter)`},
		{"a repeated header name", csv("repeat.csv", "grid_id,a,a\n18000000,1,2\n"), nil, `line 1, column "a": column 3 repeats column 2: every column needs its own name`},
		{"a reserved header name", csv("step.csv", "grid_id,step,a\n18000000,0.05,1\n"), nil, `line 1, column "step": step is not a column: --step gives the lattice of the whole file`},
		{"no key column", csv("nokey.csv", "a,b\n1,2\n"), nil, `line 1: no grid_id column and no lat,lon columns: each row must name its cell (header such as grid_id,mu0,sigma,xi)`},
		{"a broken quote", csv("quote.csv", bad(`18002000,1,"2`)), nil, `line 2002: extraneous or missing " in quoted-field`},
		{"an empty file", csv("empty.csv", ""), nil, "empty file: want a header line such as grid_id,mu0,sigma,xi, then a line per cell"},
		{"a header only", csv("header.csv", "grid_id,a\n"), nil, "no data rows after the header: nothing to import"},
		{"no such file", filepath.Join(dir, "missing.csv"), nil, "cannot open: no such file or directory"},
		{"a directory", dir, []string{"--format", "csv"}, "cannot read: is a directory"},
		{"not Parquet", csv("text.parquet", "grid_id,a\n1,2\n"), nil, "not a readable Parquet file: "},
		{"Parquet null", pq("null.parquet", 1200, func(i int) (int64, any) {
			if i == 1100 {
				return int64(first + i), nil
			}
			return goodRow(i)
		}), nil, `row 1101, column "fresh": null: every row needs a value in every column`},
		{"Parquet NaN", pq("nan.parquet", 1200, func(i int) (int64, any) {
			if i == 1199 {
				return int64(first + i), math.NaN()
			}
			return goodRow(i)
		}), nil, `row 1200, column "fresh": NaN is not a finite number; inputs must be finite`},
		{"Parquet cell given twice", pq("twice.parquet", 1200, func(i int) (int64, any) {
			if i == 1001 {
				return first + 3, 1.0
			}
			return goodRow(i)
		}), nil, `row 1002, column "grid_id": cell 18000003 is given twice (first on row 4)`},
		{"Parquet off the lattice", pq("off.parquet", 1200, func(i int) (int64, any) {
			if i == 700 {
				return -1, 1.0
			}
			return goodRow(i)
		}), nil, `row 701, column "grid_id": grid_id -1 is not a cell of the lattice of step 0.05`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// New cells, allowed: the rows' own faults are what is refused.
			out, errOut, code := runBin(t, env, "enqueuer", append([]string{"import", "--step", "0.05", "--file", tc.path, "--allow-new-cells"}, tc.args...)...)
			requireOneLineError(t, out, errOut, code, "enqueuer: "+tc.path+": "+tc.want)
			require.Equal(t, before, cellParamsChecksum(t, db), "cell_params changed")
		})
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no --step", []string{"import", "--file", "x.csv"}, "--step is required"},
		{"no --file", []string{"import", "--step", "0.05"}, "--file is required"},
		{"a bad step", []string{"import", "--step", "0.07", "--file", "x.csv"}, "step 0.07: 360/step must be a whole number"},
		{"an unknown format", []string{"import", "--step", "0.05", "--file", "x.xlsx"}, "x.xlsx: cannot tell the format from the extension"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runBin(t, env, "enqueuer", tc.args...)
			requireOneLineError(t, out, errOut, code, tc.want)
		})
	}
}

func TestImportWithoutSchemaSaysToMigrate(t *testing.T) {
	t.Parallel()
	env := testutil.Env(testutil.NewRedis(t), testutil.NewEmptyDB(t))
	path := filepath.Join(t.TempDir(), "in.csv")
	require.NoError(t, os.WriteFile(path, []byte("grid_id,a\n1,2\n"), 0o644))
	out, errOut, code := runBin(t, env, "enqueuer", "import", "--step", "0.05", "--file", path)
	requireOneLineError(t, out, errOut, code, "run: enqueuer migrate")
}
