// Package export writes computed results out of gridbatch as files other
// tools read: CSV and Parquet (a row per cell, scenario and year) and
// NetCDF (CF-1.8, a variable <kind>(scenario, year, lat, lon)). Each format
// is behind one small interface, RowWriter or SlabWriter, fed by a Source
// that streams series in grid_id order, so memory stays bounded however
// large the grid. File writes a temporary file beside the destination and
// renames it only once it is complete.
package export

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// Format is an export format.
type Format string

// The formats.
const (
	CSV     Format = "csv"
	Parquet Format = "parquet"
	NetCDF  Format = "netcdf"
)

// Formats are the formats, in the order help text lists them.
var Formats = []Format{NetCDF, Parquet, CSV}

// ParseFormat returns the format named s (netcdf, parquet or csv, any case).
func ParseFormat(s string) (Format, error) {
	f := Format(strings.ToLower(strings.TrimSpace(s)))
	switch f {
	case CSV, Parquet, NetCDF:
		return f, nil
	}
	return "", fmt.Errorf("format %q: want netcdf, parquet or csv", s)
}

// FormatOf guesses the format of path from its extension: .nc, .parquet or
// .csv. ok is false for any other.
func FormatOf(path string) (f Format, ok bool) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".nc", ".nc4", ".netcdf":
		return NetCDF, true
	case ".parquet", ".pq":
		return Parquet, true
	case ".csv":
		return CSV, true
	}
	return "", false
}

// Layout is what an export holds: the values of a model kind over the
// cells of a region, for some scenarios and years.
type Layout struct {
	// Kind names the NetCDF variable.
	Kind string
	// Units and LongName become the NetCDF variable's units and long_name
	// attributes; empty ones are left out.
	Units, LongName string
	// Region is the cells exported: the NetCDF grid, and the cells whose
	// progress is reported. Every series must be of a cell in it.
	Region grid.Region
	// Scenarios are the NetCDF scenario coordinate, in order; a series of
	// another scenario is an error there.
	Scenarios []string
	// FirstYear and Years are the NetCDF year coordinate: FirstYear,
	// FirstYear+1, … Every series must have those years there.
	FirstYear, Years int
	// Attributes are added to the file: NetCDF global attributes, Parquet
	// key-value metadata. CSV has nowhere to put them.
	Attributes map[string]string
}

// Series is the series of one cell and scenario, Values[0] being the value
// of FirstYear. A Source may reuse Values for the next series.
type Series struct {
	GridID    int64
	Scenario  string
	FirstYear int
	Values    []float64
}

// Source streams the series to export to fn, in increasing grid_id order
// (a cell's scenarios in any order), and returns fn's first error.
type Source func(ctx context.Context, fn func(Series) error) error

// RowWriter writes the long form, a row per cell, scenario and year: CSV
// and Parquet. Close writes what is buffered; the writer must not be used
// after it.
type RowWriter interface {
	WriteSeries(c grid.Cell, scenario string, firstYear int, values []float64) error
	Close() error
}

// SlabWriter writes the gridded form, one latitude row of the region at a
// time, south to north: NetCDF. A slab holds the row's values of every
// scenario and year, len(Scenarios)·Years·Region.NumCols() of them, at
// index (scenario·Years + year)·NumCols + column, NaN where a cell has no
// value. Close completes the file; the writer must not be used after it.
type SlabWriter interface {
	WriteSlab(values []float64) error
	Close() error
}

// Options are the settings of one export.
type Options struct {
	// Format is the output format. Required.
	Format Format
	// Python is the interpreter that runs the NetCDF writer, with Debian's
	// python3-netcdf4. Defaults to /usr/bin/python3.
	Python string
	// Compression is the deflate level (1–9) of the NetCDF variable,
	// compressed losslessly with HDF5's shuffle and zlib filters: level 1
	// deflates the byte planes that deflate halves (the exponents and the
	// top of the mantissas) and stores the others, which are noise; higher
	// levels deflate more planes, harder, for a few percent more and
	// several times the time (NetCDFWriter). Defaults to
	// DefaultCompression (1); NoCompression writes it uncompressed.
	Compression int
	// Progress, when set, is called as series are written with how many of
	// the region's cells have been passed (in row-major order).
	Progress func(cells int)
}

// DefaultCompression is the NetCDF deflate level unless Options say
// otherwise: the fastest, which makes the 480,000-cell ph batch 0.67× its
// float64 values in less time than writing them uncompressed.
// NoCompression is the Options.Compression that writes none.
const (
	DefaultCompression = 1
	NoCompression      = -1
)

// Stats say what an export wrote.
type Stats struct {
	// Series is how many series (cell, scenario) were read.
	Series int64
	// Values is how many values were written: rows of CSV and Parquet.
	Values int64
	// Cells is how many cells had at least one series.
	Cells int64
	// Bytes is the size of the file written.
	Bytes int64
}

// File exports src to the file path: it writes a temporary file beside path
// and renames it to path once complete (replacing any file there), so path
// is never a partial file. On an error, or once ctx is done, the temporary
// file is removed and path is left as it was.
func File(ctx context.Context, path string, src Source, l Layout, o Options) (st Stats, err error) {
	if err := l.validate(); err != nil {
		return Stats{}, err
	}
	if _, err := ParseFormat(string(o.Format)); err != nil {
		return Stats{}, err
	}
	if err := checkOut(path); err != nil {
		return Stats{}, err
	}
	if o.Compression < NoCompression || o.Compression > 9 {
		return Stats{}, fmt.Errorf("compression level %d: want 0 (none) to 9", o.Compression)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := createTemp(dir, "."+base+".tmp-")
	if err != nil {
		return Stats{}, fmt.Errorf("cannot write beside %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	switch o.Format {
	case CSV:
		st, err = WriteRows(ctx, src, l, NewCSVWriter(f), o.Progress)
	case Parquet:
		st, err = WriteRows(ctx, src, l, NewParquetWriter(f, l.Attributes), o.Progress)
	case NetCDF:
		// The writer process writes the file by its name: ours is only the
		// name's reservation, reopened once the process is done.
		if err = f.Close(); err != nil {
			return Stats{}, err
		}
		var w *NetCDFWriter
		if w, err = NewNetCDFWriter(ctx, o.Python, tmp, l, o.Compression); err != nil {
			return Stats{}, err
		}
		if st, err = WriteGrid(ctx, src, l, w, o.Progress); err == nil {
			f, err = os.OpenFile(tmp, os.O_RDWR, 0)
		}
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return st, err
	}
	if err = f.Sync(); err != nil {
		return st, fmt.Errorf("write %s: %w", tmp, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return st, err
	}
	st.Bytes = fi.Size()
	if err = f.Close(); err != nil {
		return st, fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = checkOut(path); err != nil { // again: it may have appeared since
		return st, err
	}
	if err = os.Rename(tmp, path); err != nil {
		return st, fmt.Errorf("rename %s to %s: %w", tmp, path, err)
	}
	return st, nil
}

// checkOut refuses an export to path when something other than a regular
// file is there: a FIFO, a device, a socket, a folder or a symbolic link
// would be replaced by the file.
func checkOut(path string) error {
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().IsRegular() {
		return nil // nothing there (or nothing that can be told): the rename says
	}
	what := "not a regular file"
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		what = "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		what = "a FIFO"
	case m&fs.ModeDevice != 0:
		what = "a device"
	case m&fs.ModeSocket != 0:
		what = "a socket"
	case m.IsDir():
		what = "a folder"
	}
	return fmt.Errorf("%s exists and is %s, not a regular file: not replaced; remove it or give another --out", path, what)
}

// createTemp creates a new file in dir whose name starts with prefix, with
// the permissions the umask leaves of 0666 (os.CreateTemp's are 0600).
func createTemp(dir, prefix string) (*os.File, error) {
	for {
		var b [6]byte
		_, _ = rand.Read(b[:])
		f, err := os.OpenFile(filepath.Join(dir, prefix+hex.EncodeToString(b[:])), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
		if !errors.Is(err, fs.ErrExist) {
			return f, err
		}
	}
}

// Stream exports src as CSV to w, for standard output. The other formats
// need a file.
func Stream(ctx context.Context, w io.Writer, src Source, l Layout, o Options) (Stats, error) {
	if o.Format != CSV {
		return Stats{}, fmt.Errorf("format %s needs a file; only csv streams to standard output", o.Format)
	}
	if err := l.validate(); err != nil {
		return Stats{}, err
	}
	cw := &countingWriter{w: w}
	st, err := WriteRows(ctx, src, l, NewCSVWriter(cw), o.Progress)
	st.Bytes = cw.n
	return st, err
}

// WriteRows writes every series of src to w, a row per year, and closes w.
func WriteRows(ctx context.Context, src Source, l Layout, w RowWriter, progress func(int)) (Stats, error) {
	var st Stats
	t := tracker{l: l, progress: progress}
	err := src(ctx, func(s Series) error {
		c, err := t.next(s)
		if err != nil {
			return err
		}
		if err := w.WriteSeries(c, s.Scenario, s.FirstYear, s.Values); err != nil {
			return err
		}
		st.Series++
		st.Values += int64(len(s.Values))
		return nil
	})
	st.Cells = t.cells
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return st, err
}

// WriteGrid places every series of src in the grid of l and writes it to w
// one latitude row at a time (NaN where a cell has no value), then closes
// w. It holds one row's slab in memory. A series of a scenario not in
// l.Scenarios, or of other years than l's, is an error.
func WriteGrid(ctx context.Context, src Source, l Layout, w SlabWriter, progress func(int)) (st Stats, err error) {
	defer func() {
		if cerr := w.Close(); err == nil {
			err = cerr
		}
	}()
	r := l.Region
	cols := r.NumCols()
	slab := make([]float64, len(l.Scenarios)*l.Years*cols)
	fillNaN(slab)
	scen := make(map[string]int, len(l.Scenarios))
	for i, s := range l.Scenarios {
		scen[s] = i
	}
	row := r.Row0 // the lattice row the slab holds
	flush := func(upTo int) error {
		for ; row < upTo; row++ {
			if err := w.WriteSlab(slab); err != nil {
				return err
			}
			fillNaN(slab)
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		return nil
	}
	t := tracker{l: l, progress: progress}
	err = src(ctx, func(s Series) error {
		c, err := t.next(s)
		if err != nil {
			return err
		}
		si, ok := scen[s.Scenario]
		if !ok {
			return fmt.Errorf("cell %d: scenario %q is not one of the model's (%s)", s.GridID, s.Scenario, strings.Join(l.Scenarios, ", "))
		}
		if s.FirstYear != l.FirstYear || len(s.Values) != l.Years {
			return fmt.Errorf("cell %d scenario %s: a series of %d–%d, but the model declares %d–%d (was the models file changed since the batch ran?)",
				s.GridID, s.Scenario, s.FirstYear, s.FirstYear+len(s.Values)-1, l.FirstYear, l.FirstYear+l.Years-1)
		}
		if err := flush(c.Row); err != nil {
			return err
		}
		col := c.Col - r.Col0
		for y, v := range s.Values {
			slab[(si*l.Years+y)*cols+col] = v
		}
		st.Series++
		st.Values += int64(len(s.Values))
		return nil
	})
	st.Cells = t.cells
	if err == nil {
		err = flush(r.Row1)
	}
	return st, err
}

// tracker checks that series come in grid_id order from cells of the
// region, counts the cells and reports progress.
type tracker struct {
	l        Layout
	progress func(int)
	last     int64
	cells    int64
	lat, lon []float64 // the region's decimal centres, by row and column
}

// next returns the cell of s, its centre the exact decimal one
// (Lattice.DecimalCentre) that every format writes.
func (t *tracker) next(s Series) (grid.Cell, error) {
	r := t.l.Region
	c, err := r.Lattice.CellByID(s.GridID)
	if err != nil {
		return grid.Cell{}, err
	}
	if c.Row < r.Row0 || c.Row >= r.Row1 || c.Col < r.Col0 || c.Col >= r.Col1 {
		return grid.Cell{}, fmt.Errorf("cell %d (lat %g, lon %g) is outside the exported region %s", s.GridID, c.Lat, c.Lon, r.BBox)
	}
	if t.lat == nil {
		t.lat, t.lon = centres(r)
	}
	c.Lat, c.Lon = t.lat[c.Row-r.Row0], t.lon[c.Col-r.Col0]
	switch {
	case t.cells > 0 && s.GridID < t.last:
		return grid.Cell{}, fmt.Errorf("cell %d after cell %d: series must come in grid_id order", s.GridID, t.last)
	case t.cells == 0 || s.GridID > t.last:
		t.cells++
		t.last = s.GridID
		if t.progress != nil {
			t.progress((c.Row-r.Row0)*r.NumCols() + c.Col - r.Col0 + 1)
		}
	}
	return c, nil
}

// centres returns the decimal centres (Lattice.DecimalCentre) of the rows
// and columns of r, south to north and west to east.
func centres(r grid.Region) (lat, lon []float64) {
	for row := r.Row0; row < r.Row1; row++ {
		y, _ := r.Lattice.DecimalCentre(row, r.Col0)
		lat = append(lat, y)
	}
	for col := r.Col0; col < r.Col1; col++ {
		_, x := r.Lattice.DecimalCentre(r.Row0, col)
		lon = append(lon, x)
	}
	return lat, lon
}

func (l Layout) validate() error {
	switch {
	case l.Region.Lattice.Cols == 0 || l.Region.NumCells() == 0:
		return errors.New("export: the layout has no region")
	case len(l.Scenarios) == 0:
		return errors.New("export: the layout has no scenario")
	case l.Years < 1:
		return errors.New("export: the layout has no year")
	}
	return nil
}

func fillNaN(s []float64) {
	nan := math.NaN()
	for i := range s {
		s[i] = nan
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
