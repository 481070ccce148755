//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/inputs"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// maxImportRSS is the most memory `enqueuer import` may take, whatever the file.
const maxImportRSS = 256 << 20

// hostileFile is an input file written to attack `enqueuer import`, and
// the refusal it must get.
type hostileFile struct {
	name string
	path string
	// refusal is a regular expression of the one line the import exits
	// 1 with, after the path.
	refusal string
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// gzipBomb is 256 MiB of zeros, gzipped (256 gzip members of 1 MiB each,
// which a gzip reader reads as one stream): about 260 KB.
func gzipBomb(t testing.TB) []byte {
	t.Helper()
	var z bytes.Buffer
	gw, err := gzip.NewWriterLevel(&z, gzip.BestCompression)
	require.NoError(t, err)
	_, err = io.CopyN(gw, zeros{}, 1<<20)
	require.NoError(t, err)
	require.NoError(t, gw.Close())
	return bytes.Repeat(z.Bytes(), 256)
}

// writeParquetByHand writes a Parquet file of the schema whose one row
// group's columns each hold the one page given (header, then data), so
// that the header and footer can claim what a writer never would.
func writeParquetByHand(t testing.TB, path string, schema []format.SchemaElement, rows int64, pages []format.PageHeader, data [][]byte) {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("PAR1")
	rg := format.RowGroup{NumRows: rows}
	for i, h := range pages {
		hb, err := thrift.Marshal(new(thrift.CompactProtocol), &h)
		require.NoError(t, err)
		off := int64(b.Len())
		b.Write(hb)
		b.Write(data[i])
		el := schema[i+1]
		rg.Columns = append(rg.Columns, format.ColumnChunk{FileOffset: off, MetaData: format.ColumnMetaData{
			Type: el.Type.V, Encoding: []format.Encoding{format.Plain}, PathInSchema: []string{el.Name},
			Codec: format.Gzip, NumValues: rows, TotalUncompressedSize: int64(h.UncompressedPageSize) + int64(len(hb)),
			TotalCompressedSize: int64(len(hb) + len(data[i])), DataPageOffset: off,
		}})
		rg.TotalByteSize += int64(h.UncompressedPageSize)
	}
	meta := format.FileMetaData{Version: 1, Schema: schema, NumRows: rows}
	if len(pages) > 0 {
		meta.RowGroups = []format.RowGroup{rg}
	}
	footer, err := thrift.Marshal(new(thrift.CompactProtocol), &meta)
	require.NoError(t, err)
	b.Write(footer)
	b.Write([]byte{byte(len(footer)), byte(len(footer) >> 8), byte(len(footer) >> 16), byte(len(footer) >> 24)})
	b.WriteString("PAR1")
	require.NoError(t, os.WriteFile(path, b.Bytes(), 0o644))
}

func leaf(name string, typ format.Type) format.SchemaElement {
	return format.SchemaElement{Name: name, Type: thrift.New(typ), RepetitionType: thrift.New(format.Required)}
}

// hostileImportFiles writes, in dir, the files of issue 21's attacks on
// `enqueuer import`: a small Parquet file whose gzip pages inflate to 256
// MiB (its headers honest, or lying), one whose schema nests 160,000
// levels deep, a CSV file with a 300 MiB unclosed quote, and one of 10
// million columns.
func hostileImportFiles(t testing.TB, dir string) []hostileFile {
	t.Helper()
	bomb := gzipBomb(t)
	zr, err := gzip.NewReader(bytes.NewReader(bomb))
	require.NoError(t, err)
	inflated, err := io.Copy(io.Discard, zr)
	require.NoError(t, err)
	require.EqualValues(t, 256<<20, inflated, "the bomb inflates to 256 MiB")
	schema := []format.SchemaElement{{Name: "schema", NumChildren: thrift.New[int32](2)}, leaf("grid_id", format.Int64), leaf("mu0", format.Double)}
	const rows = 1000
	page := func(uncompressed int32) format.PageHeader {
		return format.PageHeader{Type: format.DataPage, UncompressedPageSize: uncompressed, CompressedPageSize: int32(len(bomb)),
			DataPageHeader: thrift.New(format.DataPageHeader{NumValues: rows, Encoding: format.Plain})}
	}
	var files []hostileFile
	for _, v := range []struct {
		name    string
		claim   int32
		refusal string
	}{
		{"parquet-gzip-256MiB", 256 << 20, `row group 1, column "grid_id": a page at byte \d+ `},
		{"parquet-gzip-256MiB-header-lies", 8000, `row group 1, column "grid_id": a page at byte \d+ `},
	} {
		path := filepath.Join(dir, v.name+".parquet")
		writeParquetByHand(t, path, schema, rows, []format.PageHeader{page(v.claim), page(v.claim)}, [][]byte{bomb, bomb})
		refusal := v.refusal
		if v.claim > inputs.MaxParquetPage {
			refusal += `decompresses to 256 MiB \(1000 values\), over the limit of 16 MiB a page`
		} else {
			refusal += `inflates past the 8000 bytes its header says \(the limit a page may decompress to is 16 MiB\)`
		}
		files = append(files, hostileFile{v.name, path, refusal})
	}

	const depth = 160_000
	nested := []format.SchemaElement{{Name: "schema", NumChildren: thrift.New[int32](1)}}
	for range depth {
		nested = append(nested, format.SchemaElement{Name: "g", NumChildren: thrift.New[int32](1), RepetitionType: thrift.New(format.Required)})
	}
	nested = append(nested, leaf("grid_id", format.Int64))
	path := filepath.Join(dir, "parquet-nested.parquet")
	writeParquetByHand(t, path, nested, 0, nil, nil)
	files = append(files, hostileFile{"parquet-nested", path, "a footer that cannot be trusted: metadata holds too many list elements"})

	path = filepath.Join(dir, "csv-unclosed-quote.csv")
	f, err := os.Create(path)
	require.NoError(t, err)
	w := bufio.NewWriterSize(f, 1<<20)
	_, _ = w.WriteString("grid_id,mu0\n1,\"")
	line := strings.Repeat("a", 99) + "\n"
	for range (300 << 20) / len(line) {
		_, _ = w.WriteString(line)
	}
	require.NoError(t, w.Flush())
	require.NoError(t, f.Close())
	files = append(files, hostileFile{"csv-300MiB-unclosed-quote", path, `line 2: a record longer than 1 MiB, the limit of a CSV record`})

	path = filepath.Join(dir, "csv-10M-columns.csv")
	require.NoError(t, os.WriteFile(path, []byte("grid_id"+strings.Repeat(",c", 10_000_000)+"\n1"+strings.Repeat(",1", 10_000_000)+"\n"), 0o644))
	files = append(files, hostileFile{"csv-10M-columns", path, `line 1: a record longer than 1 MiB, the limit of a CSV record`})

	var header strings.Builder
	header.WriteString("grid_id")
	for i := range 1500 {
		header.WriteString(",c" + strconv.Itoa(i))
	}
	path = filepath.Join(dir, "csv-1500-columns.csv")
	require.NoError(t, os.WriteFile(path, []byte(header.String()+"\n"), 0o644))
	files = append(files, hostileFile{"csv-1500-columns", path, `line 1: 1501 columns, over the limit of 1000\n`})
	return files
}

// runImportRSS runs `enqueuer import` under GNU time and returns its
// stderr, exit code and peak RSS in bytes. (The rusage of a child that Go
// starts counts the memory it shared with the test before its exec; time's
// child is forked from time.)
func runImportRSS(t testing.TB, env []string, args ...string) (string, int, int64) {
	t.Helper()
	const gnuTime = "/usr/bin/time"
	_, err := os.Stat(gnuTime)
	require.NoError(t, err, "install GNU time: apt-get install time")
	ctx, cancel := context.WithTimeout(context.Background(), runImportTimeout)
	defer cancel()
	report := filepath.Join(t.TempDir(), "rss")
	cmd := exec.CommandContext(ctx, gnuTime, append([]string{"-o", report, "-f", "%M",
		filepath.Join(testutil.Binaries(t), "enqueuer"), "import"}, args...)...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		require.True(t, ok, "run enqueuer import: %v", err)
		code = ee.ExitCode()
	}
	out, err := os.ReadFile(report)
	require.NoError(t, err)
	fields := strings.Fields(string(out)) // "Command exited with non-zero status 1" comes first then
	kib, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
	require.NoError(t, err, "GNU time's report: %s", out)
	return stderr.String(), code, kib << 10
}

const runImportTimeout = 5 * time.Minute

func TestImportRefusesHostileFilesInBoundedMemory(t *testing.T) {
	db := testutil.NewDB(t)
	env := testutil.Env(testutil.NewRedis(t), db)
	dir := t.TempDir()
	for _, f := range hostileImportFiles(t, dir) {
		t.Run(f.name, func(t *testing.T) {
			fi, err := os.Stat(f.path)
			require.NoError(t, err)
			stderr, code, rss := runImportRSS(t, env, "--step", "0.05", "--file", f.path)
			t.Logf("%s: %d bytes, peak RSS %d MiB: %s", f.name, fi.Size(), rss>>20, strings.TrimSpace(stderr))
			require.Equal(t, 1, code, stderr)
			require.Regexp(t, "^enqueuer: "+regexp.QuoteMeta(f.path)+": "+f.refusal, stderr)
			require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %s", stderr)
			require.LessOrEqual(t, rss, int64(maxImportRSS))
			require.NoError(t, os.Remove(f.path))
		})
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM cell_params`).Scan(&n))
	require.Zero(t, n, "nothing written")
}

func TestImportCapsTheNewInputsOfOneFile(t *testing.T) {
	t.Parallel()
	db := testutil.NewDB(t)
	env := testutil.Env(testutil.NewRedis(t), db)
	names := make([]string, 33)
	for i := range names {
		names[i] = "new_" + strconv.Itoa(i)
	}
	path := filepath.Join(t.TempDir(), "wide.csv")
	require.NoError(t, os.WriteFile(path, []byte("grid_id,"+strings.Join(names, ",")+"\n1"+strings.Repeat(",1.5", len(names))+"\n"), 0o644))

	stderr, code, _ := runImportRSS(t, env, "--step", "0.05", "--file", path, "--allow-new-cells")
	require.Equal(t, 1, code, stderr)
	require.True(t, strings.HasPrefix(stderr, "enqueuer: "+path+": line 1: 33 inputs new to cell_params (new_0, "), stderr)
	require.Contains(t, stderr, "over the limit of 32 new inputs an import may add")
	cols, err := db.Store.InputColumns(context.Background())
	require.NoError(t, err)
	require.Equal(t, []string{"mu0", "sigma", "xi"}, cols, "no column added")

	stderr, code, _ = runImportRSS(t, env, "--step", "0.05", "--file", path, "--max-new-inputs", "33", "--allow-new-cells")
	require.Equal(t, 0, code, stderr)
	cols, err = db.Store.InputColumns(context.Background())
	require.NoError(t, err)
	require.Len(t, cols, 36)
}

// BenchmarkImportPeakRSS reports the peak RSS of `enqueuer import` on each
// hostile file of hostileImportFiles (each refused) and on a 480,000-row
// file of the 0.01° Korea grid in CSV and Parquet (grid_id and 3 inputs,
// imported). The target is 256 MiB on any input:
//
//	go test -tags integration -run '^$' -bench BenchmarkImportPeakRSS -benchtime 1x ./tests/integration/
func BenchmarkImportPeakRSS(b *testing.B) {
	db := testutil.NewDB(b)
	env := testutil.Env(testutil.NewRedis(b), db)
	dir := b.TempDir()
	files := hostileImportFiles(b, dir)
	csvPath, parquetPath := korea480k(b, dir)
	files = append(files, hostileFile{name: "480k-rows-csv", path: csvPath}, hostileFile{name: "480k-rows-parquet", path: parquetPath})
	for _, f := range files {
		b.Run(f.name, func(b *testing.B) {
			var rss int64
			for range b.N {
				args := []string{"--step", "0.01", "--file", f.path}
				if f.refusal == "" {
					// The 480,000 rows are cells this fresh schema lacks.
					args = append(args, "--allow-new-cells")
				}
				stderr, code, peak := runImportRSS(b, env, args...)
				require.Equal(b, f.refusal == "", code == 0, stderr)
				rss = max(rss, peak)
				b.Log(strings.TrimSpace(stderr))
			}
			b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		})
	}
}

// korea480k writes the 480,000 cells of the 0.01° Korea grid with the
// inputs mu0, sigma and xi as a CSV and a Parquet (snappy) file in dir.
func korea480k(b *testing.B, dir string) (csvPath, parquetPath string) {
	r, err := grid.ParseRegion(0.01, "124,33,132,39", 0)
	require.NoError(b, err)
	require.Equal(b, 480_000, r.NumCells())
	type cell struct {
		GridID int64   `parquet:"grid_id"`
		Mu0    float64 `parquet:"mu0"`
		Sigma  float64 `parquet:"sigma"`
		Xi     float64 `parquet:"xi"`
	}
	csvPath, parquetPath = filepath.Join(dir, "korea.csv"), filepath.Join(dir, "korea.parquet")
	cf, err := os.Create(csvPath)
	require.NoError(b, err)
	cw := bufio.NewWriter(cf)
	_, _ = cw.WriteString("grid_id,mu0,sigma,xi\n")
	pf, err := os.Create(parquetPath)
	require.NoError(b, err)
	pw := parquet.NewGenericWriter[cell](pf, parquet.Compression(&parquet.Snappy))
	rows := make([]cell, 0, 4096)
	for k := range r.NumCells() {
		c := r.CellAt(k)
		p := grid.ReferenceParams(c.Lat, c.Lon)
		row := cell{c.GridID, p.Mu0, p.Sigma, p.Xi}
		fmt.Fprintf(cw, "%d,%s,%s,%s\n", row.GridID, strconv.FormatFloat(row.Mu0, 'g', -1, 64),
			strconv.FormatFloat(row.Sigma, 'g', -1, 64), strconv.FormatFloat(row.Xi, 'g', -1, 64))
		if rows = append(rows, row); len(rows) == cap(rows) || k == r.NumCells()-1 {
			_, err := pw.Write(rows)
			require.NoError(b, err)
			rows = rows[:0]
		}
	}
	require.NoError(b, cw.Flush())
	require.NoError(b, cf.Close())
	require.NoError(b, pw.Close())
	require.NoError(b, pf.Close())
	return csvPath, parquetPath
}
