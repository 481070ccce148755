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
// empty lines are skipped. A record may be MaxCSVRecord bytes long at most:
// encoding/csv holds a whole record, so the reader under it stops giving
// bytes a little past that from the record's start.
type csvDecoder struct {
	f     *os.File
	count *countingReader
	r     *csv.Reader
	bom   int64
	size  int64
	line  int64
	roles []int
	names int
}

// csvBuffer is the size of the buffer between the file and encoding/csv.
const csvBuffer = 64 << 10

// errCSVRecord is a record longer than MaxCSVRecord.
var errCSVRecord = errors.New("record too long")

func newCSVDecoder(f *os.File, size int64) *csvDecoder {
	count := &countingReader{r: f, limit: MaxCSVRecord + csvBuffer}
	br := bufio.NewReaderSize(count, csvBuffer)
	d := &csvDecoder{f: f, count: count, size: size}
	if bom, err := br.Peek(3); err == nil && string(bom) == "\xef\xbb\xbf" {
		_, _ = br.Discard(3)
		d.bom = 3
	}
	d.r = csv.NewReader(br)
	d.r.FieldsPerRecord = -1 // the column count is checked here, to name the line and column
	d.r.ReuseRecord = true
	return d
}

// read reads the next record, letting the file give MaxCSVRecord bytes
// (and a buffer) past the record's start.
func (d *csvDecoder) read() ([]string, error) {
	d.count.limit = d.bom + d.r.InputOffset() + MaxCSVRecord + csvBuffer
	return d.r.Read()
}

func (d *csvDecoder) header() ([]string, error) {
	rec, err := d.read()
	if err == io.EOF {
		return nil, errors.New("empty file: want a header line such as " + example + ", then a line per cell")
	}
	if err != nil {
		return nil, d.readError(err)
	}
	if len(rec) > MaxColumns {
		return nil, &fieldError{col: -1, line: 1, msg: fmt.Sprintf("%d columns, over the limit of %d", len(rec), MaxColumns)}
	}
	d.line = 1
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
	fields, err := d.read()
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
	if errors.Is(err, errCSVRecord) {
		return &fieldError{col: -1, line: d.line + 1, msg: fmt.Sprintf(
			"a record longer than %d MiB, the limit of a CSV record (an unclosed quote?)", MaxCSVRecord>>20)}
	}
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

// countingReader counts the bytes read through it, and gives none past
// limit: errCSVRecord then.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.n >= c.limit {
		return 0, errCSVRecord
	}
	p = p[:min(int64(len(p)), c.limit-c.n)]
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
