package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/inputs"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// importValue is the value of input k of a cell in the files of these
// tests: awkward doubles, so that a round trip through text is exact only
// when formatting and parsing are.
func importValue(id int64, k int) float64 {
	return math.Sqrt(float64(id)+1)/float64(k+3) + float64(k)*1e-17 - math.Pi*float64(k%2)
}

// writeCSV writes the cells of r, keyed by grid_id, with the inputs named,
// and returns the file's path.
func writeCSV(t testing.TB, r grid.Region, names []string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "inputs.csv")
	f, err := os.Create(path)
	require.NoError(t, err)
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintf(w, "grid_id,%s\n", strings.Join(names, ","))
	buf := make([]byte, 0, 128)
	for k := range r.NumCells() {
		c := r.CellAt(k)
		buf = strconv.AppendInt(buf[:0], c.GridID, 10)
		for i := range names {
			buf = append(buf, ',')
			buf = strconv.AppendFloat(buf, importValue(c.GridID, i), 'g', -1, 64)
		}
		buf = append(buf, '\n')
		_, _ = w.Write(buf)
	}
	require.NoError(t, w.Flush())
	require.NoError(t, f.Close())
	return path
}

// importFile imports path with inputs.Reader at the step of l.
func importFile(t testing.TB, ctx context.Context, st *store.Store, path string, l grid.Lattice) (store.ImportResult, error) {
	t.Helper()
	format, err := inputs.FormatOf(path, "")
	require.NoError(t, err)
	r, err := inputs.Open(path, format, l)
	if err != nil {
		return store.ImportResult{}, err
	}
	defer r.Close()
	return st.ImportInputs(ctx, l.Step, r, 100)
}

func TestImportInputs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "126,36,127,37", 0.05) // 400 cells
	seeded := region(t, "126,36,126.5,37", 0.05)
	_, err := db.Store.SeedCells(ctx, seeded, nil)
	require.NoError(t, err)
	before := cellRows(t, ctx, db)

	names := []string{"mu0", "rain_p99", "soil"}
	res, err := importFile(t, ctx, db.Store, writeCSV(t, r, names), r.Lattice)
	require.NoError(t, err)
	require.Equal(t, store.ImportResult{Cells: 400, Inserted: int64(400 - seeded.NumCells()), Added: []string{"rain_p99", "soil"}}, res)

	t.Run("LoadCells reads the imported inputs bit for bit, lat and lon of the centre", func(t *testing.T) {
		ids := make([]int64, r.NumCells())
		for k := range ids {
			ids[k] = r.CellAt(k).GridID
		}
		cells, err := db.Store.LoadCells(ctx, 0.05, ids, names)
		require.NoError(t, err)
		for k, id := range ids {
			c := r.CellAt(k)
			require.Equal(t, c.Lat, cells.Lat[k])
			require.Equal(t, c.Lon, cells.Lon[k])
			for i := range names {
				require.Equal(t, math.Float64bits(importValue(id, i)), math.Float64bits(cells.Inputs[i][k]), "cell %d input %s", id, names[i])
			}
		}
		got, err := db.Store.InputColumns(ctx)
		require.NoError(t, err)
		require.Equal(t, []string{"mu0", "rain_p99", "sigma", "soil", "xi"}, got)
	})

	t.Run("seeded inputs the file does not name are kept; new cells lack them", func(t *testing.T) {
		for _, row := range before {
			var sigma, xi float64
			require.NoError(t, db.Pool.QueryRow(ctx, `SELECT sigma, xi FROM cell_params WHERE step = 0.05 AND grid_id = $1`, row.GridID).Scan(&sigma, &xi))
			require.Equal(t, row.Sigma, sigma)
			require.Equal(t, row.Xi, xi)
		}
		ids := []int64{r.CellAt(r.NumCells() - 1).GridID}
		_, err := db.Store.LoadCells(ctx, 0.05, ids, model.DefaultInputs)
		var missing *store.MissingInputError
		require.ErrorAs(t, err, &missing)
	})

	t.Run("re-importing updates the values", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "again.csv")
		c := r.CellAt(7)
		require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf("soil,grid_id\n0.125,%d\n", c.GridID)), 0o644))
		res, err := importFile(t, ctx, db.Store, path, r.Lattice)
		require.NoError(t, err)
		require.Equal(t, store.ImportResult{Cells: 1}, res)
		cells, err := db.Store.LoadCells(ctx, 0.05, []int64{c.GridID}, names)
		require.NoError(t, err)
		require.Equal(t, []float64{importValue(c.GridID, 0)}, cells.Inputs[0])
		require.Equal(t, []float64{importValue(c.GridID, 1)}, cells.Inputs[1])
		require.Equal(t, []float64{0.125}, cells.Inputs[2])
	})
}

func TestImportInputsBadRowWritesNothing(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "126,36,127,37", 0.05)
	_, err := db.Store.SeedCells(ctx, r, nil)
	require.NoError(t, err)
	before := cellRows(t, ctx, db)

	// A bad row far into the file: the rows before it were copied already.
	path := writeCSV(t, r, []string{"mu0", "fresh"})
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("5,1,x\n")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	_, err = importFile(t, ctx, db.Store, path, r.Lattice)
	var bad *inputs.Error
	require.ErrorAs(t, err, &bad)
	require.Equal(t, path+`: line 402, column "fresh": "x" is not a number`, err.Error())
	require.Equal(t, before, cellRows(t, ctx, db))
	cols, err := db.Store.InputColumns(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"mu0", "sigma", "xi"}, cols, "no column added")
}

func TestImportInputsWithoutSchema(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewEmptyDB(t)
	r := region(t, "126,36,126.2,36.2", 0.05)
	_, err := importFile(t, ctx, db.Store, writeCSV(t, r, []string{"a"}), r.Lattice)
	require.True(t, store.IsSchemaError(err), "%v", err)
	require.Contains(t, store.SchemaHint(err).Error(), "run: enqueuer migrate")
}

// countingRows counts the rows read through it, to check ImportInputs
// stops reading at a bad row.
type failingRows struct {
	n    int
	fail int
}

func (f *failingRows) Inputs() []string { return []string{"a"} }

func (f *failingRows) Next() (grid.Cell, []float64, error) {
	f.n++
	if f.n == f.fail {
		return grid.Cell{}, nil, errors.New("row source failed")
	}
	l, _ := grid.NewLattice(1)
	return l.Cell(f.n, 0), []float64{1}, nil
}

func TestImportInputsReturnsTheRowsErrorAsIs(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	_, err := db.Store.ImportInputs(ctx, 1, &failingRows{fail: 5000}, 100)
	require.EqualError(t, err, "row source failed")
	n := 0
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM cell_params`).Scan(&n))
	require.Zero(t, n)
}

// BenchmarkImportInputs imports the 480,000 cells of the 0.01° Korea grid
// from a CSV file of grid_id and 3 inputs, as `enqueuer import` does: into
// an empty cell_params, then over the seeded grid with 3 new inputs, and
// with the seed's 3 (an update of every row).
func BenchmarkImportInputs(b *testing.B) {
	r := region(b, "124,33,132,39", 0.01)
	for _, tc := range []struct {
		name string
		seed bool
		cols []string
	}{
		{"new_cells", false, []string{"a", "b", "c"}},
		{"new_inputs_on_seeded_cells", true, []string{"a", "b", "c"}},
		{"update_seeded_inputs", true, []string{"mu0", "sigma", "xi"}},
	} {
		path := writeCSV(b, r, tc.cols)
		b.Run(tc.name, func(b *testing.B) {
			ctx := testContext(b)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				db := testutil.NewDB(b)
				if tc.seed {
					if _, err := db.Store.SeedCells(ctx, r, nil); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				res, err := importFile(b, ctx, db.Store, path, r.Lattice)
				if err != nil {
					b.Fatal(err)
				}
				if res.Cells != int64(r.NumCells()) {
					b.Fatalf("imported %d cells, want %d", res.Cells, r.NumCells())
				}
			}
			b.ReportMetric(float64(r.NumCells())*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

func TestImportInputsRefusesMoreNewInputsThanItMayAdd(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	db := testutil.NewDB(t)
	r := region(t, "126,36,126.1,36.1", 0.05)
	path := writeCSV(t, r, []string{"mu0", "a1", "a2", "a3"})
	format, err := inputs.FormatOf(path, "")
	require.NoError(t, err)
	rd, err := inputs.Open(path, format, r.Lattice)
	require.NoError(t, err)
	defer rd.Close()
	_, err = db.Store.ImportInputs(ctx, r.Lattice.Step, rd, 2)
	var ne *store.NewInputsError
	require.ErrorAs(t, err, &ne)
	require.Equal(t, []string{"a1", "a2", "a3"}, ne.New) // mu0 is a column already
	require.Zero(t, rd.Rows(), "refused before reading a row")
	got, err := db.Store.InputColumns(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"mu0", "sigma", "xi"}, got)
}
