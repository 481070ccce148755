package inputs

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"
)

// parquetBatch is how many rows parquetDecoder reads at once.
const parquetBatch = 1024

// parquetDecoder reads a Parquet file one row group at a time, parquetBatch
// rows at a time: only the footer and the pages in use are in memory. The
// columns must be flat (no groups, no repeated fields); grid_id an INT32 or
// INT64, every other column a DOUBLE, FLOAT, INT32 or INT64 (integer values
// beyond ±2^53 are refused: they have no exact float64). Null values are
// refused.
type parquetDecoder struct {
	f      *os.File
	pf     *parquet.File
	groups []parquet.RowGroup
	group  int
	rows   parquet.Rows // of groups[group-1]; nil between groups
	buf    []parquet.Row
	n, i   int   // rows in buf, and the next to decode
	row    int64 // number of the row last decoded, from 1
	roles  []int
	kinds  []parquet.Kind
}

func newParquetDecoder(f *os.File, size int64) (*parquetDecoder, error) {
	if size == 0 {
		return nil, errors.New("empty file: want a Parquet file with a column grid_id (or lat and lon) and a column per input")
	}
	columns, err := checkParquet(f, size)
	if err != nil {
		return nil, err
	}
	// parquet-go buffers each column's reads: 16 MiB in all at most.
	buffer := max(4<<10, min(256<<10, (16<<20)/max(columns, 1)))
	pf, err := parquet.OpenFile(f, size, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true),
		parquet.ReadBufferSize(buffer))
	if err != nil {
		return nil, fmt.Errorf("not a readable Parquet file: %v", err)
	}
	return &parquetDecoder{f: f, pf: pf, groups: pf.RowGroups()}, nil
}

func (d *parquetDecoder) header() ([]string, error) {
	cols := d.pf.Root().Columns()
	names := make([]string, len(cols))
	d.kinds = make([]parquet.Kind, len(cols))
	for i, c := range cols {
		names[i] = c.Name()
	}
	for i, c := range cols {
		if !c.Leaf() {
			return names, &fieldError{col: i, msg: fmt.Sprintf("column %d is a group of columns; want flat columns of numbers", i+1)}
		}
		if c.Repeated() {
			return names, &fieldError{col: i, msg: fmt.Sprintf("column %d is repeated (a list); want one number per row", i+1)}
		}
		d.kinds[i] = c.Type().Kind()
		if lt := c.Type().LogicalType(); lt != nil && lt.Value != nil {
			if _, ok := lt.Value.(*format.IntType); !ok {
				return names, &fieldError{col: i, msg: fmt.Sprintf("column %d holds %s values; want numbers", i+1, lt)}
			}
		}
	}
	return names, nil
}

func (d *parquetDecoder) layout(roles []int) error {
	d.roles = roles
	for i, role := range roles {
		k := d.kinds[i]
		switch {
		case role == roleGridID && k != parquet.Int32 && k != parquet.Int64:
			return &fieldError{col: i, msg: fmt.Sprintf("grid_id is of type %s; want INT32 or INT64", k)}
		case k != parquet.Double && k != parquet.Float && k != parquet.Int32 && k != parquet.Int64:
			return &fieldError{col: i, msg: fmt.Sprintf("column %d is of type %s; want DOUBLE, FLOAT, INT32 or INT64", i+1, k)}
		}
	}
	return nil
}

func (d *parquetDecoder) next(rec *record) error {
	for d.i == d.n {
		if err := d.fill(); err != nil {
			return err
		}
	}
	row := d.buf[d.i]
	d.i++
	d.row++
	if len(row) != len(d.roles) {
		return &fieldError{col: -1, msg: fmt.Sprintf("the row has %d values, the schema %d columns", len(row), len(d.roles))}
	}
	for _, v := range row {
		c := v.Column()
		if c < 0 || c >= len(d.roles) {
			return &fieldError{col: -1, msg: fmt.Sprintf("a value of column %d, past the schema's %d columns", c+1, len(d.roles))}
		}
		if v.IsNull() {
			return &fieldError{col: c, msg: "null: every row needs a value in every column"}
		}
		role := d.roles[c]
		if role == roleGridID {
			rec.id = v.Int64()
			if v.Kind() == parquet.Int32 {
				rec.id = int64(v.Int32())
			}
			continue
		}
		var f float64
		switch v.Kind() {
		case parquet.Double:
			f = v.Double()
		case parquet.Float:
			f = float64(v.Float())
		case parquet.Int32:
			f = float64(v.Int32())
		case parquet.Int64:
			n := v.Int64()
			if n > 1<<53 || n < -(1<<53) {
				return &fieldError{col: c, msg: fmt.Sprintf("%d has no exact float64 (beyond ±2^53)", n)}
			}
			f = float64(n)
		default:
			return &fieldError{col: c, msg: fmt.Sprintf("a %s value; want a number", v.Kind())}
		}
		rec.set(role, f)
	}
	return nil
}

// fill reads the next buffer of rows, moving to the next row group at the
// end of one; io.EOF after the last.
func (d *parquetDecoder) fill() error {
	if d.rows == nil {
		if d.group == len(d.groups) {
			return io.EOF
		}
		d.rows = d.groups[d.group].Rows()
		d.group++
	}
	if d.buf == nil {
		d.buf = make([]parquet.Row, parquetBatch)
	}
	n, err := d.rows.ReadRows(d.buf)
	d.n, d.i = n, 0
	if err == io.EOF {
		cerr := d.rows.Close()
		d.rows = nil
		err = cerr
	}
	if err != nil {
		return &fieldError{col: -1, line: d.row + 1, msg: "cannot read: " + err.Error()}
	}
	return nil
}

func (d *parquetDecoder) pos() int64 { return d.row }

func (d *parquetDecoder) unit() string { return "row" }

func (d *parquetDecoder) progress() (done, total int64) { return d.row, d.pf.NumRows() }

func (d *parquetDecoder) Close() error {
	if d.rows != nil {
		d.rows.Close()
	}
	return d.f.Close()
}
