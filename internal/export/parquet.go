package export

import (
	"io"
	"maps"
	"slices"

	"github.com/parquet-go/parquet-go"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// ParquetRow is a row of a Parquet export: one cell, scenario and year.
type ParquetRow struct {
	GridID   int64   `parquet:"grid_id"`
	Lat      float64 `parquet:"lat"`
	Lon      float64 `parquet:"lon"`
	Scenario string  `parquet:"scenario,dict"`
	Year     int32   `parquet:"year"`
	Value    float64 `parquet:"value"`
}

// parquetRowGroup is how many rows a row group holds: the writer keeps one
// row group's encoded pages in memory, some 10 MiB at this size.
const parquetRowGroup = 1 << 20

// ParquetWriter writes the long form as Parquet (Snappy-compressed, row
// groups of parquetRowGroup rows): columns grid_id int64, lat and lon
// double (the cell centre), scenario string, year int32 and value double
// (NaN where the model gave no value).
type ParquetWriter struct {
	w    *parquet.GenericWriter[ParquetRow]
	rows []ParquetRow
}

// NewParquetWriter returns a ParquetWriter writing to w, with meta as the
// file's key-value metadata.
func NewParquetWriter(w io.Writer, meta map[string]string) *ParquetWriter {
	opts := []parquet.WriterOption{
		parquet.Compression(&parquet.Snappy),
		parquet.MaxRowsPerRowGroup(parquetRowGroup),
	}
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		opts = append(opts, parquet.KeyValueMetadata(k, meta[k]))
	}
	return &ParquetWriter{w: parquet.NewGenericWriter[ParquetRow](w, opts...)}
}

// WriteSeries writes a row per value.
func (p *ParquetWriter) WriteSeries(c grid.Cell, scenario string, firstYear int, values []float64) error {
	p.rows = slices.Grow(p.rows[:0], len(values))[:len(values)]
	for i, v := range values {
		p.rows[i] = ParquetRow{GridID: c.GridID, Lat: c.Lat, Lon: c.Lon, Scenario: scenario, Year: int32(firstYear + i), Value: v}
	}
	_, err := p.w.Write(p.rows)
	return err
}

// Close writes the last row group and the footer.
func (p *ParquetWriter) Close() error { return p.w.Close() }
