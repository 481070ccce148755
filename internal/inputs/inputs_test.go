package inputs_test

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/compress"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/inputs"
)

func lattice(t testing.TB, step float64) grid.Lattice {
	t.Helper()
	l, err := grid.NewLattice(step)
	require.NoError(t, err)
	return l
}

// row is one row read back.
type row struct {
	id   int64
	vals []float64
}

// readAll reads every row of path.
func readAll(t *testing.T, path string, f inputs.Format, l grid.Lattice) ([]string, []row, error) {
	t.Helper()
	r, err := inputs.Open(path, f, l)
	if err != nil {
		return nil, nil, err
	}
	defer r.Close()
	var rows []row
	for {
		c, v, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Inputs(), rows, nil
		}
		if err != nil {
			return r.Inputs(), rows, err
		}
		rows = append(rows, row{c.GridID, append([]float64(nil), v...)})
	}
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

// At step 0.05 (7,200 columns), cell 18366140 is row 2550, col 6140: centre
// 37.525,127.025.
const id0 = 18366140

func TestCSVReadsRows(t *testing.T) {
	t.Parallel()
	l := lattice(t, 0.05)
	for _, tc := range []struct {
		name, content string
		inputs        []string
		rows          []row
	}{
		{"keyed by grid_id, in any column", "mu0,grid_id,rain_p99\n1.5,18366140,-2e-300\n0.1,18366141,3\n",
			[]string{"mu0", "rain_p99"}, []row{{id0, []float64{1.5, -2e-300}}, {id0 + 1, []float64{0.1, 3}}}},
		{"keyed by lat,lon: the cell whose centre is within half a step", "lat,lon,a\n37.525,127.025,1\n37.5001,127.0501,2\n37.56,127.06,3\n",
			[]string{"a"}, []row{{id0, []float64{1}}, {id0 + 1, []float64{2}}, {id0 + 7200 + 1, []float64{3}}}},
		{"grid_id and lat,lon that agree", "grid_id,lat,lon,a\n18366140,37.51,127.04,1\n",
			[]string{"a"}, []row{{id0, []float64{1}}}},
		{"a byte order mark, spaces, CRLF, quotes and empty lines", "\xef\xbb\xbf grid_id , a\r\n\r\n\"18366140\", 0x1p-3 \r\n",
			[]string{"a"}, []row{{id0, []float64{0.125}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			names, rows, err := readAll(t, writeFile(t, "in.csv", tc.content), inputs.CSV, l)
			require.NoError(t, err)
			require.Equal(t, tc.inputs, names)
			require.Equal(t, tc.rows, rows)
		})
	}
}

func TestCSVRoundTripIsExact(t *testing.T) {
	t.Parallel()
	vals := []float64{math.Pi, -0.1, 1e-310, math.MaxFloat64, math.SmallestNonzeroFloat64, math.Copysign(0, -1), 1.0000000000000002}
	var b strings.Builder
	b.WriteString("grid_id,v\n")
	for i, v := range vals {
		b.WriteString(strconv.Itoa(i) + "," + strconv.FormatFloat(v, 'g', -1, 64) + "\n")
	}
	_, rows, err := readAll(t, writeFile(t, "in.csv", b.String()), inputs.CSV, lattice(t, 1))
	require.NoError(t, err)
	for i, v := range vals {
		require.Equal(t, math.Float64bits(v), math.Float64bits(rows[i].vals[0]), "value %d", i)
	}
}

// TestCSVErrors covers every bad file: one *Error naming the file, the
// line and the column.
func TestCSVErrors(t *testing.T) {
	t.Parallel()
	l := lattice(t, 0.05)
	for _, tc := range []struct {
		name, content string
		want          string // after "<path>: "
		line          int64
		column        string
	}{
		{"empty file", "", "empty file: want a header line such as grid_id,mu0,sigma,xi, then a line per cell", 0, ""},
		{"header only", "grid_id,a\n", "no data rows after the header: nothing to import", 0, ""},
		{"bad input name", "grid_id,Sigma\n1,2\n", `line 1, column "Sigma": column 2: an input's name must match ^[a-z][a-z0-9_]{0,62}$ (lower case letters, digits and _, starting with a letter)`, 1, "Sigma"},
		{"name with a space", "grid_id,rain p99\n1,2\n", `line 1, column "rain p99": column 2: an input's name must match`, 1, "rain p99"},
		{"empty name", "grid_id,,a\n1,2,3\n", `line 1: column 2: an input's name must match`, 1, ""},
		{"repeated name", "grid_id,a,b,a\n1,2,3,4\n", `line 1, column "a": column 4 repeats column 2: every column needs its own name`, 1, "a"},
		{"step column", "grid_id,step,a\n1,0.05,2\n", `line 1, column "step": step is not a column: --step gives the lattice of the whole file`, 1, "step"},
		{"no key", "a,b\n1,2\n", "line 1: no grid_id column and no lat,lon columns: each row must name its cell (header such as grid_id,mu0,sigma,xi)", 1, ""},
		{"lat without lon", "lat,a\n1,2\n", `line 1, column "lat": there is a lat column but no lon column`, 1, "lat"},
		{"no input", "grid_id,lat,lon\n1,2,3\n", "line 1: no input columns: every column but grid_id, lat and lon is an input", 1, ""},
		{"too few fields", "grid_id,a,b\n18366140,1,2\n18366141,1\n", `line 3, column "b": no value: the line has 2 fields, the header 3`, 3, "b"},
		{"too many fields", "grid_id,a\n18366140,1,2\n", "line 2: the line has 3 fields, the header 2: field 3 has no column", 2, ""},
		{"not a number", "grid_id,a,b\n18366140,1,2\n18366141,1,abc\n", `line 3, column "b": "abc" is not a number`, 3, "b"},
		{"a decimal comma", "grid_id,a\n18366140,\"1,5\"\n", `line 2, column "a": "1,5" is not a number`, 2, "a"},
		{"empty value", "grid_id,a\n18366140,\n", `line 2, column "a": empty: every row needs a value in every column`, 2, "a"},
		{"NaN", "grid_id,a\n18366140,NaN\n", `line 2, column "a": NaN is not a finite number; inputs must be finite`, 2, "a"},
		{"Inf", "grid_id,a\n18366140,-Inf\n", `line 2, column "a": -Inf is not a finite number; inputs must be finite`, 2, "a"},
		{"beyond float64", "grid_id,a\n18366140,1e999\n", `line 2, column "a": "1e999" is out of the range of a float64`, 2, "a"},
		{"grid_id not whole", "grid_id,a\n18366140.5,1\n", `line 2, column "grid_id": "18366140.5" is not a grid id (a whole number)`, 2, "grid_id"},
		{"grid_id off the lattice", "grid_id,a\n18366140,1\n25920000,1\n", `line 3, column "grid_id": grid_id 25920000 is not a cell of the lattice of step 0.05 (ids 0 to 25919999)`, 3, "grid_id"},
		{"negative grid_id", "grid_id,a\n-1,1\n", `line 2, column "grid_id": grid_id -1 is not a cell`, 2, "grid_id"},
		{"lat off the globe", "lat,lon,a\n90.5,127,1\n", `line 2, column "lat": lat 90.5 outside [-90,90]: the point is not on the globe`, 2, "lat"},
		{"lon off the globe", "lat,lon,a\n37,180.01,1\n", `line 2, column "lon": lon 180.01 outside [-180,180]: the point is not on the globe`, 2, "lon"},
		{"lat NaN", "lat,lon,a\nNaN,127,1\n", `line 2, column "lat": not a finite number`, 2, "lat"},
		{"grid_id given twice", "grid_id,a\n18366140,1\n18366141,1\n18366140,2\n", `line 4, column "grid_id": cell 18366140 is given twice (first on line 2)`, 4, "grid_id"},
		{"a cell given twice by its points", "lat,lon,a\n37.51,127.01,1\n37.54,127.04,2\n", `line 3, column "lat,lon": cell 18366140 is given twice (first on line 2)`, 3, "lat,lon"},
		{"grid_id and lat,lon that disagree", "grid_id,lat,lon,a\n18366140,37.51,127.06,1\n", `line 2, column "lat": lat,lon 37.51,127.06 lie in cell 18366141, not in cell 18366140 of grid_id (centre 37.525000000000006,127.02500000000003 at step 0.05)`, 2, "lat"},
		{"a bare quote", "grid_id,a\n18366140,1\n18366141,1\"2\n", "line 3: bare \" in non-quoted-field (at character 11 of the line)", 3, ""},
		{"a quoted line break counts lines", "grid_id,a\n18366140,\"1\n\"\n18366141,x\n", `line 4, column "a": "x" is not a number`, 4, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "in.csv", tc.content)
			_, _, err := readAll(t, path, inputs.CSV, l)
			var e *inputs.Error
			require.ErrorAs(t, err, &e)
			require.True(t, strings.HasPrefix(err.Error(), path+": "+tc.want), "got  %s\nwant %s: %s", err, path, tc.want)
			require.NotContains(t, err.Error(), "\n")
			require.Equal(t, tc.line, e.Line)
			require.Equal(t, tc.column, e.Column)
		})
	}
}

func TestUnreadableFiles(t *testing.T) {
	t.Parallel()
	l := lattice(t, 0.05)
	dir := t.TempDir()
	_, err := inputs.Open(filepath.Join(dir, "none.csv"), inputs.CSV, l)
	require.EqualError(t, err, filepath.Join(dir, "none.csv")+": cannot open: no such file or directory")
	_, err = inputs.Open(dir, inputs.CSV, l)
	require.EqualError(t, err, dir+": cannot read: is a directory")
	path := writeFile(t, "in.parquet", "grid_id,a\n1,2\n")
	_, err = inputs.Open(path, inputs.Parquet, l)
	require.ErrorContains(t, err, path+": not a readable Parquet file: ")
	path = writeFile(t, "empty.parquet", "")
	_, err = inputs.Open(path, inputs.Parquet, l)
	require.EqualError(t, err, path+": empty file: want a Parquet file with a column grid_id (or lat and lon) and a column per input")
}

func TestFormatOf(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		path, name string
		want       inputs.Format
		err        string
	}{
		{"a.csv", "", inputs.CSV, ""},
		{"a.CSV", "", inputs.CSV, ""},
		{"a.parquet", "", inputs.Parquet, ""},
		{"a.pq", "", inputs.Parquet, ""},
		{"a.txt", "csv", inputs.CSV, ""},
		{"a.csv", "parquet", inputs.Parquet, ""},
		{"a.txt", "", "", "a.txt: cannot tell the format from the extension (want .csv or .parquet); give --format csv or --format parquet"},
		{"a.csv", "xlsx", "", `--format "xlsx": want csv or parquet`},
	} {
		got, err := inputs.FormatOf(tc.path, tc.name)
		if tc.err != "" {
			require.EqualError(t, err, tc.err)
			continue
		}
		require.NoError(t, err)
		require.Equal(t, tc.want, got)
	}
}

// writeParquet writes rows (one value per column of schema, nil for null)
// with at most perGroup rows per row group.
func writeParquet(t *testing.T, schema parquet.Group, perGroup int64, rows ...[]any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.parquet")
	f, err := os.Create(path)
	require.NoError(t, err)
	s := parquet.NewSchema("inputs", schema)
	w := parquet.NewWriter(f, s, parquet.MaxRowsPerRowGroup(perGroup))
	cols := s.Columns()
	for _, vals := range rows {
		require.Len(t, vals, len(cols))
		pr := make(parquet.Row, len(cols))
		for i, v := range vals {
			leaf, _ := s.Lookup(cols[i]...)
			def := leaf.MaxDefinitionLevel
			if v == nil {
				pr[i] = parquet.NullValue().Level(0, 0, i)
				continue
			}
			pr[i] = parquet.ValueOf(v).Level(0, def, i)
		}
		_, err := w.WriteRows([]parquet.Row{pr})
		require.NoError(t, err)
	}
	require.NoError(t, w.Close())
	require.NoError(t, f.Close())
	return path
}

func double() parquet.Node { return parquet.Leaf(parquet.DoubleType) }

func TestParquetReadsRowsAcrossRowGroups(t *testing.T) {
	t.Parallel()
	l := lattice(t, 0.05)
	// Columns in name order: a, b, c, grid_id.
	schema := parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "a": double(), "b": parquet.Leaf(parquet.FloatType), "c": parquet.Leaf(parquet.Int32Type)}
	var rows [][]any
	var want []row
	for i := range 2500 {
		a := math.Sqrt(float64(i)) / 7
		rows = append(rows, []any{a, float32(i) / 4, int32(-i), int64(id0 + i)})
		want = append(want, row{int64(id0 + i), []float64{a, float64(float32(i) / 4), float64(-i)}})
	}
	path := writeParquet(t, schema, 1000, rows...)
	names, got, err := readAll(t, path, inputs.Parquet, l)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b", "c"}, names)
	require.Equal(t, want, got)

	t.Run("keyed by lat,lon, optional columns without nulls", func(t *testing.T) {
		t.Parallel()
		schema := parquet.Group{"lat": double(), "lon": parquet.Optional(double()), "x": parquet.Optional(double())}
		path := writeParquet(t, schema, 10, []any{37.525, 127.025, -1.5}, []any{37.52, 127.08, 2.5})
		names, got, err := readAll(t, path, inputs.Parquet, l)
		require.NoError(t, err)
		require.Equal(t, []string{"x"}, names)
		require.Equal(t, []row{{id0, []float64{-1.5}}, {id0 + 1, []float64{2.5}}}, got)
	})
}

func TestParquetErrors(t *testing.T) {
	t.Parallel()
	l := lattice(t, 0.05)
	many := func(bad []any) [][]any {
		var rows [][]any
		for i := range 1500 {
			rows = append(rows, []any{1.0, int64(id0 + i)})
		}
		return append(rows, bad)
	}
	ab := parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "a": double()}
	for _, tc := range []struct {
		name   string
		schema parquet.Group
		rows   [][]any
		want   string
		line   int64
		column string
	}{
		{"no rows", ab, nil, "no data rows after the header: nothing to import", 0, ""},
		{"a group column", parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "g": parquet.Group{"x": double()}}, [][]any{{int64(1), 1.0}},
			`schema, column "g": column 1 is a group of columns; want flat columns of numbers`, 0, "g"},
		{"a repeated column", parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "r": parquet.Repeated(double())}, nil,
			`schema, column "r": column 2 is repeated (a list); want one number per row`, 0, "r"},
		{"a string column", parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "s": parquet.String()}, [][]any{{int64(1), "x"}},
			`schema, column "s": column 2 holds STRING values; want numbers`, 0, "s"},
		{"a double grid_id", parquet.Group{"grid_id": double(), "a": double()}, [][]any{{1.0, 1.0}},
			`schema, column "grid_id": grid_id is of type DOUBLE; want INT32 or INT64`, 0, "grid_id"},
		{"a bad name", parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "A": double()}, [][]any{{1.0, int64(1)}},
			`schema, column "A": column 1: an input's name must match`, 0, "A"},
		{"a null, in the second row group", parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "a": parquet.Optional(double())}, many([]any{nil, int64(1)}),
			`row 1501, column "a": null: every row needs a value in every column`, 1501, "a"},
		{"NaN", ab, many([]any{math.NaN(), int64(1)}), `row 1501, column "a": NaN is not a finite number; inputs must be finite`, 1501, "a"},
		{"grid_id off the lattice", ab, many([]any{1.0, int64(-5)}), `row 1501, column "grid_id": grid_id -5 is not a cell`, 1501, "grid_id"},
		{"grid_id given twice", ab, many([]any{1.0, int64(id0 + 1200)}), `row 1501, column "grid_id": cell 18367340 is given twice (first on row 1201)`, 1501, "grid_id"},
		{"an int64 without an exact float64", parquet.Group{"grid_id": parquet.Leaf(parquet.Int64Type), "a": parquet.Leaf(parquet.Int64Type)}, [][]any{{int64(1<<53 + 1), int64(1)}},
			`row 1, column "a": 9007199254740993 has no exact float64 (beyond ±2^53)`, 1, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := writeParquet(t, tc.schema, 1000, tc.rows...)
			_, _, err := readAll(t, path, inputs.Parquet, l)
			var e *inputs.Error
			require.ErrorAs(t, err, &e)
			require.True(t, strings.HasPrefix(err.Error(), path+": "+tc.want), "got  %s\nwant %s: %s", err, path, tc.want)
			require.Equal(t, tc.line, e.Line)
			require.Equal(t, tc.column, e.Column)
		})
	}
}

// BenchmarkReadCSV reads a CSV file of the 480,000 cells of the 0.01° Korea
// grid with grid_id and 3 inputs: the Go side of `enqueuer import`.
func BenchmarkReadCSV(b *testing.B) {
	l := lattice(b, 0.01)
	r, err := grid.ParseRegion(0.01, "124,33,132,39", 0)
	require.NoError(b, err)
	var sb strings.Builder
	sb.WriteString("grid_id,a,b,c\n")
	for k := range r.NumCells() {
		id := r.CellAt(k).GridID
		v := math.Sqrt(float64(id))
		sb.WriteString(strconv.FormatInt(id, 10) + "," + strconv.FormatFloat(v, 'g', -1, 64) + "," +
			strconv.FormatFloat(v/3, 'g', -1, 64) + "," + strconv.FormatFloat(-v/7, 'g', -1, 64) + "\n")
	}
	path := filepath.Join(b.TempDir(), "in.csv")
	require.NoError(b, os.WriteFile(path, []byte(sb.String()), 0o644))
	b.ResetTimer()
	for range b.N {
		rd, err := inputs.Open(path, inputs.CSV, l)
		require.NoError(b, err)
		for {
			_, _, err := rd.Next()
			if err == io.EOF {
				break
			}
			require.NoError(b, err)
		}
		rd.Close()
	}
	b.ReportMetric(float64(r.NumCells())*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func TestParquetOfEveryCodecPassesTheChecks(t *testing.T) {
	t.Parallel()
	l := lattice(t, 0.05)
	type cell struct {
		GridID int64   `parquet:"grid_id"`
		Mu0    float64 `parquet:"mu0"`
		Sigma  float64 `parquet:"sigma,dict"`
	}
	// Not LZ4_RAW: parquet-go v0.32.0 reads back other values than it
	// wrote with it, with or without these checks.
	for _, codec := range []compress.Codec{&parquet.Uncompressed, &parquet.Snappy, &parquet.Gzip, &parquet.Zstd, &parquet.Brotli} {
		t.Run(codec.String(), func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "in.parquet")
			f, err := os.Create(path)
			require.NoError(t, err)
			// Pages of 4 KiB, row groups of 3,000 rows: many of each.
			w := parquet.NewGenericWriter[cell](f, parquet.Compression(codec), parquet.PageBufferSize(4<<10), parquet.MaxRowsPerRowGroup(3000))
			var want []row
			for id := range int64(10_000) {
				c := cell{id, math.Sqrt(float64(id)), float64(id % 7)}
				_, err := w.Write([]cell{c})
				require.NoError(t, err)
				want = append(want, row{id, []float64{c.Mu0, c.Sigma}})
			}
			require.NoError(t, w.Close())
			require.NoError(t, f.Close())
			_, got, err := readAll(t, path, inputs.Parquet, l)
			require.NoError(t, err)
			require.Equal(t, want, got)
		})
	}
}

func TestCSVLimits(t *testing.T) {
	t.Parallel()
	l := lattice(t, 0.05)
	wide := "grid_id" + strings.Repeat(",x", inputs.MaxColumns) + "\n"
	_, _, err := readAll(t, writeFile(t, "wide.csv", wide), inputs.CSV, l)
	require.ErrorContains(t, err, fmt.Sprintf("wide.csv: line 1: %d columns, over the limit of %d", inputs.MaxColumns+1, inputs.MaxColumns))

	long := "grid_id,mu0\n1,1\n2,\"" + strings.Repeat("x\n", inputs.MaxCSVRecord) + "\"\n"
	_, rows, err := readAll(t, writeFile(t, "long.csv", long), inputs.CSV, l)
	require.ErrorContains(t, err, "long.csv: line 3: a record longer than 1 MiB, the limit of a CSV record")
	require.Len(t, rows, 1, "the rows before it are read")

	// A record just under the limit is read.
	under := "grid_id,mu0\n1," + strings.Repeat(" ", inputs.MaxCSVRecord-100) + "2\n"
	_, rows, err = readAll(t, writeFile(t, "under.csv", under), inputs.CSV, l)
	require.NoError(t, err)
	require.Len(t, rows, 1)
}
