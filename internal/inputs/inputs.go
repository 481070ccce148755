// Package inputs reads the per-cell model inputs that `enqueuer import`
// writes to cell_params: a CSV file with a header line, or a Parquet file,
// with a row per cell of a lattice, keyed by a grid_id column or by lat and
// lon columns, and every other column a float64 input named by its header.
//
// A Reader streams the file (one CSV record, or one buffer of Parquet rows
// of one row group, at a time) and validates each row as it reads it, so a
// caller can copy rows to the database as they come and still refuse the
// whole file at its first bad row. Every error is an *Error: one line naming
// the file, the line (CSV) or row (Parquet) and the column.
//
// A file is untrusted: its memory is bounded whatever it claims. CSV
// records are cut at MaxCSVRecord (csv.go); a Parquet file's footer and
// every page header are checked, and every compressed page inflated once
// into nothing, before parquet-go reads it (parquetcheck.go, thriftwalk.go);
// no file has more than MaxColumns columns.
package inputs

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
)

// Format is a file format of Open.
type Format string

// The formats Open reads.
const (
	CSV     Format = "csv"
	Parquet Format = "parquet"
)

// Limits of a file, whatever it claims: past one, Open or Next refuses the
// file with an *Error naming the limit, before allocating for it.
const (
	// MaxColumns is the most columns a file may have (PostgreSQL's
	// tables hold 1,600).
	MaxColumns = 1000
	// MaxCSVRecord is the longest CSV record, in bytes: encoding/csv
	// holds a whole record (an unclosed quote runs to the end of the
	// file).
	MaxCSVRecord = 1 << 20
)

// Key columns: a row names its cell by GridID, or by Lat and Lon.
const (
	GridID = "grid_id"
	Lat    = "lat"
	Lon    = "lon"
)

// FormatOf returns the format named by name ("csv" or "parquet"), or, when
// name is empty, the one of the file's extension (.csv, .parquet or .pq,
// in any case). Its error says how to name the format.
func FormatOf(path, name string) (Format, error) {
	switch strings.ToLower(name) {
	case "csv":
		return CSV, nil
	case "parquet":
		return Parquet, nil
	case "":
	default:
		return "", fmt.Errorf("--format %q: want csv or parquet", name)
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return CSV, nil
	case ".parquet", ".pq":
		return Parquet, nil
	}
	return "", fmt.Errorf("%s: cannot tell the format from the extension (want .csv or .parquet); give --format csv or --format parquet", path)
}

// Error is a bad or unreadable input file. Its text is one line:
//
//	data.csv: line 7, column "sigma": "abc" is not a number
type Error struct {
	// File is the path as given to Open.
	File string
	// Unit is "line" for CSV (the header is line 1; a record's line is
	// where it starts), "row" for Parquet (data rows counted from 1
	// across row groups), "schema" for a Parquet column that cannot be
	// read, or "" when the error is about the whole file.
	Unit string
	// Line is the line or row number; 0 with the units "schema" and "".
	Line int64
	// Column is the header name of the column at fault, "" when the error
	// is not about one column.
	Column string
	// Msg says what is wrong.
	Msg string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	b.WriteString(": ")
	if e.Unit != "" {
		b.WriteString(e.Unit)
		if e.Line > 0 {
			b.WriteString(" " + strconv.FormatInt(e.Line, 10))
		}
		if e.Column != "" {
			b.WriteString(", ")
		}
	}
	if e.Column != "" {
		fmt.Fprintf(&b, "column %q", e.Column)
	}
	if e.Unit != "" || e.Column != "" {
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Column roles: what a column of the file holds. An input's role is its
// index in Reader.Inputs (0 or more).
const (
	roleGridID = -1 - iota
	roleLat
	roleLon
)

// record is one decoded row: its key and the values of its inputs.
type record struct {
	id       int64
	lat, lon float64
	vals     []float64
}

// set stores a value read for a column of role: lat, lon, or the input
// whose index the role is.
func (rec *record) set(role int, v float64) {
	switch role {
	case roleLat:
		rec.lat = v
	case roleLon:
		rec.lon = v
	default:
		rec.vals[role] = v
	}
}

// fieldError is a decoder's complaint about one field, or about a whole
// record when col is -1. line, when not 0, overrides the decoder's pos.
type fieldError struct {
	col  int
	line int64
	msg  string
}

func (e *fieldError) Error() string { return e.msg }

// decoder is one file format.
type decoder interface {
	// header returns the names of the file's columns, in file order; with
	// a *fieldError about one of them, the names as well.
	header() ([]string, error)
	// layout gives the role of each column; it fails, with a
	// *fieldError, when a column cannot hold its role (Parquet types).
	layout(roles []int) error
	// next decodes the next row into rec (whose vals has one element
	// per input). It returns io.EOF after the last row, a *fieldError
	// for a bad row.
	next(rec *record) error
	// pos is the line (CSV) or row (Parquet) number of the row last read.
	pos() int64
	// unit is "line" or "row".
	unit() string
	// progress says how far the reading is: bytes (CSV) or rows
	// (Parquet), of total.
	progress() (done, total int64)
	Close() error
}

// Reader reads and validates the rows of one inputs file. It is not safe
// for concurrent use.
type Reader struct {
	path    string
	format  Format
	lattice grid.Lattice
	dec     decoder
	names   []string // header names, in file order
	roles   []int
	inputs  []string
	byID    bool // the key is grid_id (lat,lon, when also present, are checked against it)
	byPoint bool // lat and lon are present
	rec     record
	seen    cellSet
	rows    int64
}

// Open opens the file at path in format f and reads and checks its header,
// for the cells of lattice l. The header must name a key (grid_id, or lat
// and lon) and at least one input; an input's name must match
// model.InputPattern and not be step, grid_id, lat or lon; no name may
// repeat. When both grid_id and lat,lon are present, grid_id is the key and
// each point must lie in its row's cell. An unreadable or empty file, or a
// bad header, is an *Error. Close the Reader when done.
func Open(path string, f Format, l grid.Lattice) (*Reader, error) {
	dec, err := openDecoder(path, f)
	if err != nil {
		return nil, err
	}
	r := &Reader{path: path, format: f, lattice: l, dec: dec}
	if err := r.readHeader(); err != nil {
		dec.Close()
		return nil, err
	}
	return r, nil
}

func openDecoder(path string, f Format) (decoder, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Msg: "cannot open: " + pathReason(err)}
	}
	st, err := file.Stat()
	if err == nil && st.IsDir() {
		err = errors.New("is a directory")
	}
	if err != nil {
		file.Close()
		return nil, &Error{File: path, Msg: "cannot read: " + pathReason(err)}
	}
	var dec decoder
	switch f {
	case CSV:
		dec = newCSVDecoder(file, st.Size())
	case Parquet:
		dec, err = newParquetDecoder(file, st.Size())
	default:
		err = fmt.Errorf("unknown format %q", f)
	}
	if err != nil {
		file.Close()
		var le *parquetLimitError
		if errors.As(err, &le) {
			e := &Error{File: path, Column: le.column, Msg: le.msg}
			if le.group > 0 {
				e.Unit, e.Line = "row group", int64(le.group)
			} else if le.column != "" {
				e.Unit = "schema"
			}
			return nil, e
		}
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return dec, nil
}

// pathReason is the reason of an os error without the path it repeats.
func pathReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func (r *Reader) readHeader() error {
	headerUnit, headerLine := "line", int64(1)
	if r.format == Parquet {
		headerUnit, headerLine = "schema", 0
	}
	names, err := r.dec.header()
	r.names = names
	if err != nil {
		return r.wrap(err, headerLine)
	}
	bad := func(col, format string, args ...any) error {
		return &Error{File: r.path, Unit: headerUnit, Line: headerLine, Column: col, Msg: fmt.Sprintf(format, args...)}
	}
	if len(names) > MaxColumns {
		return bad("", "%d columns, over the limit of %d", len(names), MaxColumns)
	}
	r.roles = make([]int, len(names))
	seen := make(map[string]int, len(names))
	for i, name := range names {
		if j, ok := seen[name]; ok {
			return bad(name, "column %d repeats column %d: every column needs its own name", i+1, j+1)
		}
		seen[name] = i
		switch name {
		case GridID:
			r.roles[i], r.byID = roleGridID, true
		case Lat:
			r.roles[i] = roleLat
		case Lon:
			r.roles[i] = roleLon
		case "step":
			return bad(name, "step is not a column: --step gives the lattice of the whole file")
		default:
			if !model.InputPattern.MatchString(name) {
				return bad(name, "column %d: an input's name must match %s (lower case letters, digits and _, starting with a letter)", i+1, model.InputPattern)
			}
			r.roles[i] = len(r.inputs)
			r.inputs = append(r.inputs, name)
		}
	}
	_, hasLat := seen[Lat]
	_, hasLon := seen[Lon]
	switch {
	case hasLat && !hasLon:
		return bad(Lat, "there is a lat column but no lon column; key the rows by grid_id, or by lat and lon")
	case hasLon && !hasLat:
		return bad(Lon, "there is a lon column but no lat column; key the rows by grid_id, or by lat and lon")
	}
	r.byPoint = hasLat && hasLon
	if !r.byID && !r.byPoint {
		return bad("", "no grid_id column and no lat,lon columns: each row must name its cell (header such as %s)", example)
	}
	if len(r.inputs) == 0 {
		return bad("", "no input columns: every column but grid_id, lat and lon is an input (header such as %s)", example)
	}
	r.rec.vals = make([]float64, len(r.inputs))
	if err := r.dec.layout(r.roles); err != nil {
		return r.wrap(err, headerLine)
	}
	return nil
}

// example is a header line quoted in errors.
const example = "grid_id,mu0,sigma,xi"

// wrap turns a decoder's error into an *Error: a *fieldError at line (or at
// its own), naming its column; any other error is about the whole file.
func (r *Reader) wrap(err error, line int64) error {
	var fe *fieldError
	if !errors.As(err, &fe) {
		var e *Error
		if errors.As(err, &e) {
			return e
		}
		return &Error{File: r.path, Msg: err.Error()}
	}
	if fe.line != 0 {
		line = fe.line
	}
	e := &Error{File: r.path, Unit: r.dec.unit(), Line: line, Msg: fe.msg}
	if line == 0 && r.format == Parquet {
		e.Unit = "schema"
	}
	if fe.col >= 0 && fe.col < len(r.names) {
		e.Column = r.names[fe.col]
	}
	return e
}

// Inputs returns the names of the inputs, in file order: the order of the
// values Next returns.
func (r *Reader) Inputs() []string { return r.inputs }

// Key returns the key column(s): "grid_id" or "lat,lon".
func (r *Reader) Key() string {
	if r.byID {
		return GridID
	}
	return Lat + "," + Lon
}

// Rows returns the number of rows read so far.
func (r *Reader) Rows() int64 { return r.rows }

// Progress returns how much of the file has been read, in bytes for CSV and
// in rows for Parquet, and the total in the same unit.
func (r *Reader) Progress() (done, total int64) { return r.dec.progress() }

// Close closes the file.
func (r *Reader) Close() error { return r.dec.Close() }

// Next returns the next row's cell and its input values, in the order of
// Inputs. The values are valid until the next call. It returns io.EOF after
// the last row, and an *Error for a bad row: a wrong number of fields, a
// value that is not a finite number (empty, NaN and ±Inf are refused), a
// grid_id outside the lattice, a point outside the globe (or, with
// grid_id, outside that cell), or a cell given on an earlier row. A file
// without a data row is an *Error too.
func (r *Reader) Next() (grid.Cell, []float64, error) {
	err := r.dec.next(&r.rec)
	if err == io.EOF {
		if r.rows == 0 {
			return grid.Cell{}, nil, &Error{File: r.path, Msg: "no data rows after the header: nothing to import"}
		}
		return grid.Cell{}, nil, io.EOF
	}
	line := r.dec.pos()
	if err != nil {
		return grid.Cell{}, nil, r.wrap(err, line)
	}
	r.rows++
	cell, err := r.cell(&r.rec)
	if err != nil {
		return grid.Cell{}, nil, r.wrap(err, line)
	}
	for k, v := range r.rec.vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return grid.Cell{}, nil, &Error{File: r.path, Unit: r.dec.unit(), Line: line, Column: r.inputs[k],
				Msg: strconv.FormatFloat(v, 'g', -1, 64) + " is not a finite number; inputs must be finite"}
		}
	}
	if !r.seen.add(cell.GridID) {
		msg := fmt.Sprintf("cell %d is given twice", cell.GridID)
		if first := r.firstLine(cell.GridID, line); first > 0 {
			msg += fmt.Sprintf(" (first on %s %d)", r.dec.unit(), first)
		}
		return grid.Cell{}, nil, &Error{File: r.path, Unit: r.dec.unit(), Line: line, Column: r.Key(), Msg: msg}
	}
	return cell, r.rec.vals, nil
}

// cell returns the cell of rec, checked against the lattice.
func (r *Reader) cell(rec *record) (grid.Cell, error) {
	l := r.lattice
	col := func(role int) int { return slices.Index(r.roles, role) }
	var pc grid.Cell
	if r.byPoint {
		if !finite(rec.lat) || !finite(rec.lon) {
			c := col(roleLat)
			if finite(rec.lat) {
				c = col(roleLon)
			}
			return grid.Cell{}, &fieldError{col: c, msg: "not a finite number"}
		}
		var err error
		if pc, err = l.CellAt(rec.lat, rec.lon); err != nil {
			c := col(roleLon)
			if !(rec.lat >= -90 && rec.lat <= 90) {
				c = col(roleLat)
			}
			return grid.Cell{}, &fieldError{col: c, msg: err.Error() + ": the point is not on the globe"}
		}
	}
	if !r.byID {
		return pc, nil
	}
	c, err := l.CellByID(rec.id)
	if err != nil {
		return grid.Cell{}, &fieldError{col: col(roleGridID), msg: fmt.Sprintf(
			"grid_id %d is not a cell of the lattice of step %s (ids 0 to %d)", rec.id, fmtFloat(l.Step), l.NumCells()-1)}
	}
	if r.byPoint && pc.GridID != c.GridID {
		return grid.Cell{}, &fieldError{col: col(roleLat), msg: fmt.Sprintf(
			"lat,lon %s,%s lie in cell %d, not in cell %d of grid_id (centre %s,%s at step %s)",
			fmtFloat(rec.lat), fmtFloat(rec.lon), pc.GridID, c.GridID, fmtFloat(c.Lat), fmtFloat(c.Lon), fmtFloat(l.Step))}
	}
	return c, nil
}

// firstLine returns the line (or row), before the line before, on which the
// file first gives cell id, reading the file again from the start; 0 when
// that fails. It runs only to word a duplicate's error.
func (r *Reader) firstLine(id, before int64) int64 {
	dec, err := openDecoder(r.path, r.format)
	if err != nil {
		return 0
	}
	defer dec.Close()
	if _, err := dec.header(); err != nil || dec.layout(r.roles) != nil {
		return 0
	}
	again := &Reader{path: r.path, format: r.format, lattice: r.lattice, dec: dec, names: r.names,
		roles: r.roles, inputs: r.inputs, byID: r.byID, byPoint: r.byPoint, rec: record{vals: make([]float64, len(r.inputs))}}
	for {
		if err := dec.next(&again.rec); err != nil || dec.pos() >= before {
			return 0
		}
		if c, err := again.cell(&again.rec); err == nil && c.GridID == id {
			return dec.pos()
		}
	}
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
