package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/inputs"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "import",
		usage:   "--step DEGREES --file FILE [--format csv|parquet] [--allow-new-cells]",
		summary: "write your own per-cell model inputs to cell_params from a CSV or Parquet file",
		about: `Writes per-cell model inputs from a file to cell_params, where batches read
them: a row per cell of the lattice of --step, keyed by a grid_id column or by
lat and lon columns (the cell whose centre is within half a step of the point).
Every other column is an input, a float64 named by its header: lower case
letters, digits and _, starting with a letter, and not step, grid_id, lat or
lon. A model reads the inputs its models-file entry lists under inputs.

A CSV file has a header line, then a line per cell:

    grid_id,mu0,sigma,xi,rain_p99
    18366140,12.5,3.1,0.12,88.0
    18366141,12.7,3.0,0.11,91.5

or, keyed by the points (at step 0.05, 37.525,127.025 is cell 18366140):

    lat,lon,rain_p99
    37.525,127.025,88.0

A Parquet file has the same flat columns: grid_id INT32 or INT64; lat, lon
and the inputs DOUBLE, FLOAT, INT32 or INT64; no nulls. It is read one row
group at a time. The format follows the extension (.csv, .parquet) unless
--format says.

An input new to cell_params becomes a column of it; an existing one (the
seed's mu0, sigma and xi, or one imported before) is overwritten for the
cells of the file. Cells not in cell_params yet are added, with the lat and
lon of their centre and no value for the inputs the file does not give.
Cells not in the file, and inputs not in it, are left alone. Importing a
file again updates the values. One import adds at most 32 new inputs
(--max-new-inputs raises it): each new input is a column of cell_params for
good.

Whatever a file claims, it is read in bounded memory: a file of more than
1,000 columns, a CSV record longer than 1 MiB, and a Parquet file that is
not flat, whose footer does not add up, or with a page that decompresses
past 16 MiB (or past what its header says) are refused before their rows
are read, with one line naming the file, the line or row group, and the
limit.

A grid_id means a different place at every step: a file keyed by grid_id
whose cell lies outside the region of the cells already in cell_params at
--step (the box of their centres) is refused, naming the cell and that
region, since a wrong --step would add cells elsewhere on Earth.
--allow-new-cells adds them (and is needed for a file keyed by grid_id at a
step with no cells yet). A file keyed by lat and lon adds cells anywhere.

All or nothing: the file is streamed into PostgreSQL and written in one
transaction. The first bad row stops the import and nothing is written; it
exits 1 with one line naming the file, the line (Parquet: the row, counted
from 1) and the column:
    enqueuer: rain.csv: line 7, column "rain_p99": "n/a" is not a number
A row is bad when it has the wrong number of fields; a value is empty, not
a number, NaN or infinite; its grid_id is not a cell of the lattice or its
point is off the globe; or its cell was given on an earlier row. A bad or
repeated header name, a header without a key or without an input, and an
unreadable or empty file, or one without a data row, are refused the same
way.

A progress bar goes to standard error on a terminal, then one summary line:
    imported 480,000 cells from rain.csv at step 0.01 (4 inputs: mu0, sigma, xi, rain_p99; new: rain_p99): 0 new cells, 480,000 updated

Each statement is bounded by GRIDBATCH_DB_STATEMENT_TIMEOUT: raise it for files
of tens of millions of rows. The schema must exist: run 'enqueuer migrate' first.`,
		example: `  enqueuer import --step 0.05 --file params.csv
  enqueuer import --step 0.01 --file fitted.parquet
  enqueuer import --step 0.01 --file export.txt --format csv`,
		run: runImport,
	})
}

// defaultMaxNewInputs is how many inputs new to cell_params one import may
// add unless --max-new-inputs says.
const defaultMaxNewInputs = 32

func runImport(ctx context.Context, e *env, args []string) error {
	var step float64
	var file, formatName string
	maxNew := defaultMaxNewInputs
	var allowNew bool
	cfg, set, done, err := parse(commandNamed("import"), e, args, false, func(s *config.Set) {
		s.Bool(&allowNew, "allow-new-cells", "", false, "with a file keyed by grid_id: add cells outside the region of those already at --step")
		s.Float(&step, "step", "GRIDBATCH_GRID_STEP", 0, "grid step in `degrees` of the file's cells, such as 0.05; required")
		s.String(&file, "file", "", "", "the CSV or Parquet `file` to import; required")
		s.String(&formatName, "format", "", "", "`csv|parquet`; defaults to the file's extension (.csv, .parquet)")
		s.Int(&maxNew, "max-new-inputs", "", defaultMaxNewInputs, "the most `inputs` new to cell_params the file may add (each becomes a column of cell_params for good)")
	})
	if done {
		return err
	}
	if len(set.Args()) > 0 {
		return fmt.Errorf("import takes no arguments (got %q); give the file with --file", set.Args()[0])
	}
	if step == 0 {
		return errors.New("--step is required: the grid step in degrees of the file's cells, such as 0.05 (see 'enqueuer import --help')")
	}
	if file == "" {
		return errors.New("--file is required: the CSV or Parquet file to import (see 'enqueuer import --help')")
	}
	lattice, err := grid.NewLattice(step)
	if err != nil {
		return err
	}
	format, err := inputs.FormatOf(file, formatName)
	if err != nil {
		return err
	}
	r, err := inputs.Open(file, format, lattice)
	if err != nil {
		return err
	}
	defer r.Close()
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()

	rows := newImportProgress(r, format, e.stderr)
	var src store.ImportRows = rows
	if r.Key() == inputs.GridID && !allowNew {
		ext, ok, err := st.CellExtent(ctx, lattice.Step)
		if err != nil {
			return err
		}
		src = &knownRegion{importProgress: rows, file: file, csv: format == inputs.CSV, lattice: lattice, extent: ext, any: ok}
	}
	res, err := st.ImportInputs(ctx, lattice.Step, src, maxNew)
	rows.finish(err == nil)
	var ne *store.NewInputsError
	if errors.As(err, &ne) {
		unit, line := "line", int64(1)
		if format == inputs.Parquet {
			unit, line = "schema", 0
		}
		return &inputs.Error{File: file, Unit: unit, Line: line, Msg: ne.Error()}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return fmt.Errorf("import of %s stopped; nothing was written", file)
		}
		return err
	}
	var added string
	if len(res.Added) > 0 {
		added = "; new: " + strings.Join(res.Added, ", ")
	}
	fmt.Fprintf(e.stderr, "imported %s cells from %s at step %s (%d inputs: %s%s): %s new cells, %s updated\n",
		numfmt.Int(res.Cells), file, strconv.FormatFloat(lattice.Step, 'g', -1, 64), len(r.Inputs()),
		strings.Join(r.Inputs(), ", "), added, numfmt.Int(res.Inserted), numfmt.Int(res.Cells-res.Inserted))
	return nil
}

// importProgress passes the rows of an inputs.Reader to the store, drawing
// a progress bar of the file read on a terminal: bytes for CSV, rows for
// Parquet.
type importProgress struct {
	*inputs.Reader
	w   io.Writer
	bar *progressbar.ProgressBar
	n   int
}

func newImportProgress(r *inputs.Reader, f inputs.Format, w io.Writer) *importProgress {
	p := &importProgress{Reader: r, w: w}
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		return p
	}
	_, total := r.Progress()
	opts := []progressbar.Option{progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("importing"),
		progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200 * time.Millisecond),
		progressbar.OptionFullWidth(), progressbar.OptionShowCount()}
	if f == inputs.CSV {
		opts = append(opts, progressbar.OptionShowBytes(true))
	} else {
		opts = append(opts, progressbar.OptionShowIts(), progressbar.OptionSetItsString("rows"))
	}
	p.bar = progressbar.NewOptions64(total, opts...)
	return p
}

// Next is the Reader's, updating the bar every 4,096 rows; after the last
// row the bar says the rows are being written.
func (p *importProgress) Next() (grid.Cell, []float64, error) {
	c, v, err := p.Reader.Next()
	if p.bar == nil {
		return c, v, err
	}
	if p.n++; p.n%4096 == 0 {
		done, _ := p.Reader.Progress()
		_ = p.bar.Set64(done)
	}
	if err == io.EOF {
		p.bar.Describe("writing cell_params")
		_ = p.bar.Finish()
	}
	return c, v, err
}

// finish ends the bar: on its own line after a success, erased after an
// error so that the error's line stands alone.
func (p *importProgress) finish(ok bool) {
	if p.bar == nil {
		return
	}
	if ok {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
		return
	}
	_ = p.bar.Clear()
}

// knownRegion refuses the cells of a file keyed by grid_id that lie outside
// extent, the box of the centres of the cells at the step (none when !any):
// a grid_id of another step names a cell elsewhere on Earth.
type knownRegion struct {
	*importProgress
	file    string
	csv     bool // lines are counted, with the header; else rows
	lattice grid.Lattice
	extent  grid.BBox
	any     bool
}

// Next is importProgress's, with the check.
func (k *knownRegion) Next() (grid.Cell, []float64, error) {
	c, v, err := k.importProgress.Next()
	if err != nil {
		return c, v, err
	}
	step := strconv.FormatFloat(k.lattice.Step, 'g', -1, 64)
	half := k.lattice.Step / 2
	where := "row " + strconv.FormatInt(k.Reader.Rows(), 10)
	if k.csv {
		where = "line " + strconv.FormatInt(k.Reader.Rows()+1, 10)
	}
	lat, lon := k.lattice.DecimalCentre(c.Row, c.Col)
	switch {
	case !k.any:
		return c, v, fmt.Errorf("%s: %s: grid_id %d (lat %s, lon %s at step %s) is a new cell, and cell_params has no cell at step %s: is --step right? --allow-new-cells adds it; nothing was written",
			k.file, where, c.GridID, centreText(lat), centreText(lon), step, step)
	case c.Lat < k.extent.LatMin-half || c.Lat > k.extent.LatMax+half || c.Lon < k.extent.LonMin-half || c.Lon > k.extent.LonMax+half:
		return c, v, fmt.Errorf("%s: %s: grid_id %d (lat %s, lon %s at step %s) lies outside the cells at step %s in cell_params (lat %s to %s, lon %s to %s): is --step right? --allow-new-cells adds it; nothing was written",
			k.file, where, c.GridID, centreText(lat), centreText(lon), step, step,
			centreText(k.extent.LatMin), centreText(k.extent.LatMax), centreText(k.extent.LonMin), centreText(k.extent.LonMax))
	}
	return c, v, nil
}
