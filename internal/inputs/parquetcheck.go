package inputs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
	"github.com/pierrec/lz4/v4"
)

// Limits of a Parquet file, checked by checkParquet before parquet-go reads
// anything but the last 8 bytes: parquet-go allocates what the file claims
// (a list of the footer at its claimed length, a page at its header's size,
// and grows a page for as long as it inflates), so a small file can claim
// gigabytes.
const (
	// maxParquetFooter is the largest footer (file metadata) read: that of
	// a file of MaxColumns columns in a few hundred row groups.
	maxParquetFooter = 8 << 20
	// maxParquetElems is the most list elements a footer may hold in all
	// (schema elements, row groups, column chunks, their lists).
	maxParquetElems = 100_000
	// maxParquetDepth is how deep a footer's Thrift structures may nest.
	maxParquetDepth = 16
	// MaxParquetPage is the most a page may decompress to, or decode to
	// (8 bytes a value): writers cut pages at about 1 MiB.
	MaxParquetPage = 16 << 20
	// maxParquetRowGroupPages is the most the largest pages of a row
	// group's columns may take together: parquet-go holds one page of
	// each column at once.
	maxParquetRowGroupPages = 64 << 20
	// maxPageHeader is the longest page header read.
	maxPageHeader = 64 << 10
)

// parquetLimitError is a refusal of checkParquet at one row group and
// column (group from 1; 0 and "" when about the whole file).
type parquetLimitError struct {
	group  int
	column string
	msg    string
}

func (e *parquetLimitError) Error() string { return e.msg }

// checkParquet reads and checks the footer of the Parquet file f of size
// bytes, then the header of every page, and inflates each compressed page
// into nothing, counting: the file must be flat (a root and MaxColumns
// leaves at most), unencrypted, its column chunks within the file, each
// page at most MaxParquetPage decompressed or decoded and no larger than
// its header says, and the largest pages of a row group's columns at most
// maxParquetRowGroupPages together. It holds one page header at a time.
func checkParquet(f io.ReaderAt, size int64) (columns int, err error) {
	if size < 12 {
		return 0, errors.New("not a readable Parquet file: too short")
	}
	var tail [8]byte
	if _, err := f.ReadAt(tail[:], size-8); err != nil {
		return 0, fmt.Errorf("cannot read: %v", err)
	}
	if string(tail[4:]) != "PAR1" {
		if string(tail[4:]) == "PARE" {
			return 0, errors.New("an encrypted Parquet file: not supported")
		}
		return 0, errors.New("not a readable Parquet file: no PAR1 at its end")
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	if n > size-12 {
		return 0, fmt.Errorf("not a readable Parquet file: its footer claims %d bytes of a %d-byte file", n, size)
	}
	if n > maxParquetFooter {
		return 0, fmt.Errorf("its footer is %d bytes, over the limit of %d MiB", n, maxParquetFooter>>20)
	}
	footer := make([]byte, n)
	if _, err := f.ReadAt(footer, size-8-n); err != nil {
		return 0, fmt.Errorf("cannot read: %v", err)
	}
	if _, err := thriftWalk(footer, maxParquetDepth, maxParquetElems); err != nil {
		return 0, fmt.Errorf("a footer that cannot be trusted: %v", err)
	}
	var meta format.FileMetaData
	if err := thrift.Unmarshal(new(thrift.CompactProtocol), footer, &meta); err != nil {
		return 0, fmt.Errorf("not a readable Parquet file: %v", err)
	}
	footer = nil
	names, err := checkSchema(meta.Schema)
	if err != nil {
		return 0, err
	}
	for g, rg := range meta.RowGroups {
		if err := checkRowGroup(f, size, g+1, rg, names); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}

// checkSchema returns the column names of a flat schema: a root whose
// children are all leaves, MaxColumns at most.
func checkSchema(schema []format.SchemaElement) ([]string, error) {
	if len(schema) == 0 {
		return nil, errors.New("not a readable Parquet file: no schema")
	}
	if len(schema)-1 > MaxColumns {
		return nil, fmt.Errorf("%d columns, over the limit of %d", len(schema)-1, MaxColumns)
	}
	names := make([]string, len(schema)-1)
	for i, el := range schema[1:] {
		if el.NumChildren.Valid && el.NumChildren.V != 0 || !el.Type.Valid {
			return nil, &parquetLimitError{column: el.Name, msg: fmt.Sprintf("column %d is a group of columns; want flat columns of numbers", i+1)}
		}
		names[i] = el.Name
	}
	if int(schema[0].NumChildren.V) != len(names) {
		return nil, fmt.Errorf("not a readable Parquet file: its schema's root claims %d columns, it has %d", schema[0].NumChildren.V, len(names))
	}
	return names, nil
}

// checkRowGroup checks row group g (from 1) and every page of its columns.
func checkRowGroup(f io.ReaderAt, size int64, g int, rg format.RowGroup, names []string) error {
	if len(rg.Columns) != len(names) {
		return &parquetLimitError{group: g, msg: fmt.Sprintf("%d column chunks for %d columns", len(rg.Columns), len(names))}
	}
	if rg.NumRows < 0 || rg.TotalByteSize < 0 {
		return &parquetLimitError{group: g, msg: "negative sizes in the footer"}
	}
	var pages int64
	for c, cc := range rg.Columns {
		bad := func(format string, args ...any) error {
			return &parquetLimitError{group: g, column: names[c], msg: fmt.Sprintf(format, args...)}
		}
		if cc.FilePath != "" {
			return bad("its data is in another file (%q): not supported", cc.FilePath)
		}
		md := cc.MetaData
		start := md.DataPageOffset
		if md.DictionaryPageOffset > 0 && md.DictionaryPageOffset < start {
			start = md.DictionaryPageOffset
		}
		if start < 4 || md.TotalCompressedSize < 0 || md.TotalUncompressedSize < 0 || md.TotalCompressedSize > size-start {
			return bad("the footer places the column's data outside the file")
		}
		largest, err := checkPages(f, start, start+md.TotalCompressedSize, md.Codec, rg.NumRows)
		if err != nil {
			return bad("%v", err)
		}
		if pages += largest; pages > maxParquetRowGroupPages {
			return bad("the largest pages of the row group's columns take %d MiB together, over the limit of %d MiB: write smaller pages or fewer columns",
				pages>>20, maxParquetRowGroupPages>>20)
		}
	}
	return nil
}

// checkPages checks the pages of a column chunk in [start, end) and returns
// the cost of the largest: its decompressed size, or its values at 8 bytes
// each when more.
func checkPages(f io.ReaderAt, start, end int64, codec format.CompressionCodec, rows int64) (int64, error) {
	var largest int64
	buf := make([]byte, maxPageHeader)
	for pos := start; pos < end; {
		hb := buf[:min(int64(len(buf)), end-pos)]
		n, err := f.ReadAt(hb, pos)
		if err != nil && !(err == io.EOF && n == len(hb)) {
			return 0, fmt.Errorf("cannot read a page header at byte %d: %v", pos, err)
		}
		hlen, err := thriftWalk(hb, 8, 1024)
		if err != nil {
			return 0, fmt.Errorf("a page header at byte %d cannot be trusted: %v", pos, err)
		}
		var h format.PageHeader
		if err := thrift.Unmarshal(new(thrift.CompactProtocol), hb[:hlen], &h); err != nil {
			return 0, fmt.Errorf("a page header at byte %d is not readable: %v", pos, err)
		}
		pos += int64(hlen)
		comp, uncomp := int64(h.CompressedPageSize), int64(h.UncompressedPageSize)
		if comp < 0 || uncomp < 0 || comp > end-pos {
			return 0, fmt.Errorf("a page at byte %d claims sizes outside its column chunk", pos)
		}
		var values, levels int64
		compressed := codec != format.Uncompressed
		switch {
		case h.DataPageHeader.Valid:
			values = int64(h.DataPageHeader.V.NumValues)
		case h.DataPageHeaderV2.Valid:
			v2 := h.DataPageHeaderV2.V
			values = int64(v2.NumValues)
			levels = int64(v2.RepetitionLevelsByteLength) + int64(v2.DefinitionLevelsByteLength)
			compressed = compressed && (!v2.IsCompressed.Valid || v2.IsCompressed.V)
			if levels < 0 || levels > comp || levels > uncomp {
				return 0, fmt.Errorf("a page at byte %d claims levels outside it", pos)
			}
		case h.DictionaryPageHeader.Valid:
			values = int64(h.DictionaryPageHeader.V.NumValues)
		}
		if values < 0 || (!h.DictionaryPageHeader.Valid && values > rows) {
			return 0, fmt.Errorf("a page at byte %d claims %d values in a row group of %d rows", pos, values, rows)
		}
		cost := max(uncomp, values*8)
		if cost > MaxParquetPage {
			return 0, fmt.Errorf("a page at byte %d decompresses to %d MiB (%d values), over the limit of %d MiB a page: write smaller pages",
				pos, cost>>20, values, MaxParquetPage>>20)
		}
		if compressed {
			data := io.NewSectionReader(f, pos+levels, comp-levels)
			got, err := inflatedSize(data, codec, uncomp-levels)
			if err != nil {
				return 0, fmt.Errorf("a page at byte %d cannot be decompressed: %v", pos, err)
			}
			if got > uncomp-levels {
				return 0, fmt.Errorf("a page at byte %d inflates past the %d bytes its header says (the limit a page may decompress to is %d MiB)",
					pos, uncomp, MaxParquetPage>>20)
			}
		} else if comp != uncomp {
			return 0, fmt.Errorf("an uncompressed page at byte %d claims %d bytes compressed and %d uncompressed", pos, comp, uncomp)
		}
		largest = max(largest, cost)
		pos += comp
	}
	return largest, nil
}

// inflatedSize decompresses r with codec, keeping nothing, and returns the
// size it inflates to, or limit+1 once it inflates past limit.
func inflatedSize(r *io.SectionReader, codec format.CompressionCodec, limit int64) (int64, error) {
	var z io.Reader
	switch codec {
	case format.Gzip:
		gz, err := gzip.NewReader(r)
		if err != nil {
			return 0, err
		}
		z = gz
	case format.Zstd:
		zd, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(MaxParquetPage), zstd.WithDecoderMaxMemory(MaxParquetPage))
		if err != nil {
			return 0, err
		}
		defer zd.Close()
		z = zd
	case format.Brotli:
		z = brotli.NewReader(r)
	case format.Snappy:
		// A snappy block starts with its decoded length, which its
		// decoder allocates.
		var head [binary.MaxVarintLen64]byte
		n, _ := r.ReadAt(head[:min(int64(len(head)), r.Size())], 0)
		dlen, err := snappy.DecodedLen(head[:n])
		return int64(dlen), err
	case format.Lz4Raw:
		// A block without its length: decode it into a buffer of the
		// header's size, which fails when it needs more.
		if r.Size() > MaxParquetPage {
			return limit + 1, nil
		}
		src := make([]byte, r.Size())
		if _, err := r.ReadAt(src, 0); err != nil {
			return 0, err
		}
		dst := make([]byte, limit)
		n, err := lz4.UncompressBlock(src, dst)
		if err != nil {
			return limit + 1, nil
		}
		return int64(n), nil
	default:
		return 0, fmt.Errorf("compression %s is not supported (write it uncompressed, or with snappy, gzip, zstd, brotli or lz4_raw)", codec)
	}
	n, err := io.Copy(io.Discard, io.LimitReader(z, limit+1))
	return n, err
}
