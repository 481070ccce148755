package export

import (
	"bufio"
	"io"
	"strconv"
	"strings"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// CSVHeader is the first line of a CSV export.
const CSVHeader = "grid_id,lat,lon,scenario,year,value\n"

// CSVWriter writes the long form as CSV (RFC 4180): the header line
// CSVHeader, then a line per cell, scenario and year. Numbers are written
// at full precision (Go's shortest form that reads back to the same
// float64); a missing value is NaN.
type CSVWriter struct {
	w      *bufio.Writer
	header bool
	line   []byte
	quoted map[string]string
}

// NewCSVWriter returns a CSVWriter writing to w through a buffer.
func NewCSVWriter(w io.Writer) *CSVWriter {
	return &CSVWriter{w: bufio.NewWriterSize(w, 256<<10), quoted: map[string]string{}}
}

// WriteSeries writes a line per value.
func (c *CSVWriter) WriteSeries(cell grid.Cell, scenario string, firstYear int, values []float64) error {
	if !c.header {
		c.header = true
		if _, err := c.w.WriteString(CSVHeader); err != nil {
			return err
		}
	}
	// Every line of the series starts the same: grid_id,lat,lon,scenario,
	b := c.line[:0]
	b = strconv.AppendInt(b, cell.GridID, 10)
	b = append(b, ',')
	b = strconv.AppendFloat(b, cell.Lat, 'g', -1, 64)
	b = append(b, ',')
	b = strconv.AppendFloat(b, cell.Lon, 'g', -1, 64)
	b = append(b, ',')
	b = append(b, c.field(scenario)...)
	b = append(b, ',')
	prefix := len(b)
	for i, v := range values {
		b = strconv.AppendInt(b[:prefix], int64(firstYear+i), 10)
		b = append(b, ',')
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
		b = append(b, '\n')
		if _, err := c.w.Write(b); err != nil {
			return err
		}
	}
	c.line = b
	return nil
}

// field returns s as a CSV field, quoted when it must be.
func (c *CSVWriter) field(s string) string {
	if q, ok := c.quoted[s]; ok {
		return q
	}
	q := s
	if s == "" || strings.ContainsAny(s, ",\"\r\n") || strings.TrimSpace(s) != s {
		q = `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
	}
	c.quoted[s] = q
	return q
}

// Close writes the header if nothing else was, and flushes the buffer.
func (c *CSVWriter) Close() error {
	if !c.header {
		c.header = true
		if _, err := c.w.WriteString(CSVHeader); err != nil {
			return err
		}
	}
	return c.w.Flush()
}
