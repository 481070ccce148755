package export

import (
	"bufio"
	"cmp"
	"context"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DefaultPython is the interpreter of the NetCDF writer: Debian's, whose
// python3-netcdf4 package provides netCDF4-python.
const DefaultPython = "/usr/bin/python3"

// NetCDFPackages is what to install for NetCDF exports, on Debian.
const NetCDFPackages = "apt-get install python3 python3-netcdf4"

// netcdfScript is the writer process's program (netcdf_writer.py), run
// with python3 -I -c: the binary carries it, so it needs no file of its own.
//
//go:embed netcdf_writer.py
var netcdfScript string

// netcdfEnv is the whole environment of the writer process.
var netcdfEnv = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "HOME=/nonexistent"}

// netcdfReadyTimeout bounds the writer process's start: python3, its
// imports and the file's creation.
const netcdfReadyTimeout = 60 * time.Second

// NetCDFWriter writes the gridded form as a NetCDF-4 (HDF5) file following
// CF-1.8, through a python3 process running netCDF4-python (libnetcdf):
// gridbatch writes no NetCDF or HDF5 structure itself (only the bytes of
// the variable's chunks, filtered as HDF5's filters would), and a
// statically built binary stays static. The file has a variable
// <kind>(scenario, time, lat, lon) of float64 with _FillValue NaN,
// compressed (zlib with shuffle, lossless), and the coordinates scenario
// (strings), time (CF: days since the first year's 1 January,
// proleptic_gregorian, the middle of each year, with time_bnds covering
// it), year (int32, along time), lat and lon (the exact decimal cell
// centres in degrees_north and degrees_east, with bounds), and the grid
// mapping crs, so that xarray.open_dataset(f)[kind].sel(scenario="ssp245",
// time="2050", lat=37.025, lon=126.525) finds a value.
// NetCDF-4 files may be larger than 2 GiB. The variable is chunked (1, 1,
// rows, lon), the rows of up to 16 MiB of slabs, dividing the grid's evenly.
// The writer compresses the chunks itself (chunkEncoder), on up to 4
// goroutines, and sends them to the process, which places them with HDF5's
// H5Dwrite_chunk; uncompressed, or with an HDF5 before 1.10.3, it sends the
// slabs as binary float64 and netCDF4 writes them.
type NetCDFWriter struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer
	python string
	want   int
	buf    []byte
	chunks *chunkEncoder // nil: the slabs go as they are
	done   bool
	err    error
}

// netcdfHeader is the first line the writer process reads.
type netcdfHeader struct {
	Path       string            `json:"path"`
	Kind       string            `json:"kind"`
	Units      string            `json:"units"`
	LongName   string            `json:"long_name"`
	Scenarios  []string          `json:"scenarios"`
	FirstYear  int               `json:"first_year"`
	Years      int               `json:"years"`
	Lat        []float64         `json:"lat"`
	Lon        []float64         `json:"lon"`
	LatBounds  [][2]float64      `json:"lat_bounds"`
	LonBounds  [][2]float64      `json:"lon_bounds"`
	Attributes map[string]string `json:"attributes"`
	// ChunkRows is the latitude rows of a chunk.
	ChunkRows int `json:"chunk_rows"`
	// Compression is the deflate level, 0 for none.
	Compression int `json:"compression"`
	// Chunks asks the process to take compressed chunks, if its HDF5 can
	// write them as they are.
	Chunks bool `json:"chunks"`
}

// netcdfBlockBytes is how many bytes of slabs a block of chunks holds at
// most: the variable's chunks are that many latitude rows (or fewer, to
// divide the grid's rows evenly).
var netcdfBlockBytes = 16 << 20

// netcdfChunks is whether a compressed variable's chunks are compressed
// here, when the process can write them; tests turn it off to have HDF5
// compress them.
var netcdfChunks = true

// chunkRows returns the latitude rows of a chunk of a grid of rows rows of
// rowBytes each: as many as netcdfBlockBytes holds (at least one), divided
// as evenly as they can be, so that the last chunk is not mostly padding.
func chunkRows(rows, rowBytes int) int {
	most := max(1, min(rows, netcdfBlockBytes/rowBytes))
	chunks := (rows + most - 1) / most
	return (rows + chunks - 1) / chunks
}

// NewNetCDFWriter starts the writer process (python, default
// DefaultPython) on path, which it creates or truncates, and waits until
// the file is created. compression is the deflate level as in
// Options.Compression (0: DefaultCompression, NoCompression: none). Once
// ctx is done the process is killed. A python without netCDF4 is an error
// naming the Debian package.
func NewNetCDFWriter(ctx context.Context, python, path string, l Layout, compression int) (_ *NetCDFWriter, err error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	python = cmp.Or(python, DefaultPython)
	r := l.Region
	h := netcdfHeader{Path: path, Kind: l.Kind, Units: l.Units, LongName: l.LongName, Scenarios: l.Scenarios,
		FirstYear: l.FirstYear, Years: l.Years, Attributes: l.Attributes,
		ChunkRows:   chunkRows(r.NumRows(), 8*len(l.Scenarios)*l.Years*r.NumCols()),
		Compression: max(0, cmp.Or(compression, DefaultCompression))}
	h.Chunks = h.Compression > 0 && netcdfChunks
	if h.Path, err = filepath.Abs(path); err != nil { // the process runs in /
		return nil, err
	}
	if h.Attributes == nil {
		h.Attributes = map[string]string{}
	}
	h.Lat, h.Lon = centres(r)
	for row := r.Row0; row < r.Row1; row++ {
		s, _ := r.Lattice.DecimalEdges(row, r.Col0)
		n, _ := r.Lattice.DecimalEdges(row+1, r.Col0)
		h.LatBounds = append(h.LatBounds, [2]float64{s, n})
	}
	for col := r.Col0; col < r.Col1; col++ {
		_, w := r.Lattice.DecimalEdges(r.Row0, col)
		_, e := r.Lattice.DecimalEdges(r.Row0, col+1)
		h.LonBounds = append(h.LonBounds, [2]float64{w, e})
	}
	line, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	w := &NetCDFWriter{python: python, stderr: &tailBuffer{max: 16 << 10}, want: len(l.Scenarios) * l.Years * r.NumCols()}
	// Isolated: -I puts neither the working directory nor PYTHON*
	// variables nor the user's site-packages on its path (a json.py in
	// the folder of the export would run), in a fixed folder, with an
	// environment of its own (no database URL).
	w.cmd = exec.CommandContext(ctx, python, "-I", "-c", netcdfScript)
	w.cmd.Dir = "/"
	w.cmd.Env = netcdfEnv
	w.cmd.Stderr = w.stderr
	w.cmd.WaitDelay = 5 * time.Second
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("NetCDF export needs %s with Debian's python3-netcdf4 (%s): %w", python, NetCDFPackages, err)
		}
		return nil, fmt.Errorf("start the NetCDF writer %s: %w", python, err)
	}
	// The header goes in, then the process says it is ready; a process
	// that is gone (or fails the header's write) says nothing.
	line = append(line, '\n')
	ready := make(chan string, 1)
	go func() {
		if _, err := w.stdin.Write(line); err != nil {
			ready <- ""
			return
		}
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- s
	}()
	timer := time.NewTimer(netcdfReadyTimeout)
	defer timer.Stop()
	select {
	case s := <-ready:
		switch strings.TrimSpace(s) {
		case "ready chunks":
			w.chunks = newChunkEncoder(w.stdin, h.Compression, h.ChunkRows, r.NumCols(), len(l.Scenarios)*l.Years)
			return w, nil
		case "ready rows":
			return w, nil
		}
	case <-timer.C:
		w.stderr.WriteString(fmt.Sprintf("not ready after %s\n", netcdfReadyTimeout))
	}
	_ = w.cmd.Process.Kill()
	return nil, w.exitError(w.wait())
}

// WriteSlab sends one latitude row's slab to the writer process.
func (w *NetCDFWriter) WriteSlab(values []float64) error {
	if w.err != nil {
		return w.err
	}
	if len(values) != w.want {
		return fmt.Errorf("netcdf: a slab of %d values, want %d", len(values), w.want)
	}
	if w.chunks != nil {
		return w.failed(w.chunks.add(values))
	}
	w.buf = w.buf[:0]
	for _, v := range values {
		w.buf = binary.LittleEndian.AppendUint64(w.buf, math.Float64bits(v))
	}
	_, err := w.stdin.Write(w.buf)
	return w.failed(err)
}

// failed stops the process after err, an error writing to it, and returns
// the error to report: the process's own message, if it has one.
func (w *NetCDFWriter) failed(err error) error {
	if err == nil {
		return nil
	}
	// The process is gone, or goes: its own message says why.
	_ = w.cmd.Process.Kill()
	w.err = w.exitError(w.wait())
	if w.err == nil {
		w.err = fmt.Errorf("netcdf writer: %w", err)
	}
	return w.err
}

// Close sends what is left (the last block of chunks and the frame that
// ends them), ends the input and waits for the writer process to complete
// and close the file. After a failed WriteSlab it only reaps the process.
func (w *NetCDFWriter) Close() error {
	if w.done {
		return w.err
	}
	if w.chunks != nil {
		if err := w.chunks.close(); err != nil {
			return w.failed(err)
		}
	}
	_ = w.stdin.Close()
	err := w.exitError(w.wait())
	if w.err == nil {
		w.err = err
	}
	return w.err
}

func (w *NetCDFWriter) wait() error {
	if w.done {
		return nil
	}
	w.done = true
	return w.cmd.Wait()
}

// exitError turns the writer process's exit into an error with its
// message; nil for a clean exit.
func (w *NetCDFWriter) exitError(err error) error {
	if err == nil {
		return nil
	}
	msg := strings.TrimSpace(w.stderr.String())
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 3 && strings.HasPrefix(msg, "missing module") {
		return fmt.Errorf("NetCDF export needs Debian's python3-netcdf4 for %s (%s): %s", w.python, NetCDFPackages, msg)
	}
	if msg != "" {
		// A Python traceback's last line says what went wrong.
		lines := strings.Split(msg, "\n")
		return fmt.Errorf("netcdf writer (%s): %s (%v)", w.python, strings.TrimSpace(lines[len(lines)-1]), err)
	}
	return fmt.Errorf("netcdf writer (%s): %w", w.python, err)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) WriteString(s string) { _, _ = t.Write([]byte(s)) }

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
