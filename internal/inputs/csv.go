package inputs

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// csvDecoder reads a CSV file (RFC 4180, comma-separated, with a header
// line) one record at a time with encoding/csv. Spaces around names and
// values are ignored; a UTF-8 byte order mark before the header is skipped;
// empty lines are skipped.
type csvDecoder struct {
	f     *os.File
	count *countingReader
	r     *csv.Reader
	size  int64
	line  int64
	roles []int
	names int
}

func newCSVDecoder(f *os.File, size int64) *csvDecoder {
	count := &countingReader{r: f}
	br := bufio.NewReaderSize(count, 64<<10)
	if bom, err := br.Peek(3); err == nil && string(bom) == "\xef\xbb\xbf" {
		_, _ = br.Discard(3)
	}
	r := csv.NewReader(br)
	r.FieldsPerRecord = -1 // the column count is checked here, to name the line and column
	r.ReuseRecord = true
	return &csvDecoder{f: f, count: count, r: r, size: size}
}

func (d *csvDecoder) header() ([]string, error) {
	rec, err := d.r.Read()
	if err == io.EOF {
		return nil, errors.New("empty file: want a header line such as " + example + ", then a line per cell")
	}
	if err != nil {
		return nil, d.readError(err)
	}
	names := make([]string, len(rec))
	for i, s := range rec {
		names[i] = strings.TrimSpace(s)
	}
	d.names = len(names)
	return names, nil
}

func (d *csvDecoder) layout(roles []int) error {
	d.roles = roles
	return nil
}

func (d *csvDecoder) next(rec *record) error {
	fields, err := d.r.Read()
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return d.readError(err)
	}
	line, _ := d.r.FieldPos(0)
	d.line = int64(line)
	if len(fields) != d.names {
		if len(fields) < d.names {
			return &fieldError{col: len(fields), msg: fmt.Sprintf("no value: the line has %d fields, the header %d", len(fields), d.names)}
		}
		return &fieldError{col: -1, msg: fmt.Sprintf("the line has %d fields, the header %d: field %d has no column", len(fields), d.names, d.names+1)}
	}
	for i, s := range fields {
		s = strings.TrimSpace(s)
		role := d.roles[i]
		if role == roleGridID {
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return &fieldError{col: i, msg: fmt.Sprintf("%q is not a grid id (a whole number)", s)}
			}
			rec.id = id
			continue
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return &fieldError{col: i, msg: numberError(s, err)}
		}
		rec.set(role, v)
	}
	return nil
}

// numberError words a failed strconv.ParseFloat of s.
func numberError(s string, err error) string {
	switch {
	case s == "":
		return "empty: every row needs a value in every column"
	case errors.Is(err, strconv.ErrRange):
		return fmt.Sprintf("%q is out of the range of a float64", s)
	}
	return fmt.Sprintf("%q is not a number", s)
}

// readError words an error of encoding/csv: a syntax error names its line,
// others (I/O) the line after the last record read.
func (d *csvDecoder) readError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &fieldError{col: -1, line: int64(pe.Line), msg: fmt.Sprintf("%v (at character %d of the line)", pe.Err, pe.Column)}
	}
	return &fieldError{col: -1, line: d.line + 1, msg: "cannot read: " + pathReason(err)}
}

func (d *csvDecoder) pos() int64 { return d.line }

func (d *csvDecoder) unit() string { return "line" }

func (d *csvDecoder) progress() (done, total int64) { return d.count.n, d.size }

func (d *csvDecoder) Close() error { return d.f.Close() }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
