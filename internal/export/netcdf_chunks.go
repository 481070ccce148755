package export

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"runtime"
	"sync"

	"github.com/klauspost/compress/flate"
)

// chunkEncoder turns latitude rows into the NetCDF variable's chunks as
// HDF5 stores them through its shuffle and deflate filters, and writes
// them as frames, so that the writer process only places them
// (H5Dwrite_chunk): a chunk is (1, 1, rows, cols), one scenario and year of
// a block of rows. Shuffled, a chunk is 8 byte planes, byte j of every value
// in plane j. The high planes (sign, exponent, the top of the mantissa)
// deflate well; the low ones are the mantissa's noise, which deflate spends
// most of its time on and cannot shrink: a plane that deflate does not
// shrink to deflateLimit(level) of its size is kept in stored blocks. Each
// chunk is one zlib stream that any zlib inflates, as HDF5's deflate filter
// expects. It holds one block of rows (the chunks of ns·ny scenarios and
// years) and, once it is full, encodes and writes its chunks on up to 4
// goroutines, in no set order. (A second block, filled while the first is
// encoded, was no faster on a loaded 2-core machine, for 16 MiB more.)
type chunkEncoder struct {
	w          io.Writer
	level      int
	limit      float64
	rows, cols int // of a chunk
	chunks     int // chunks a block: scenarios × years
	plane      int // bytes of a plane: rows × cols
	block      []byte
	has        []bool // whether chunk k of the block has a value
	n          int    // rows of the block filled
	r0         int    // the block's first row in the grid
	err        error  // of a write: the encoder is done
	workers    []*planeDeflater
	mu         sync.Mutex // w's
}

// The fill value the writer process declares (NaN), as the padding rows
// past the grid's end hold it, little-endian.
const fillBits = 0x7FF8000000000000

// A chunk goes to the writer process as a frame: its head, three
// little-endian uint32 (k = scenario·years + year, the chunk's first row,
// its size), then its bytes. The frame of size chunkEnd, its row the grid's
// rows, ends them.
const (
	frameHead = 12
	chunkEnd  = math.MaxUint32
)

// deflateLimit is how small deflate must make a byte plane for it to be
// deflated, not stored: half its size at level 1, 98% at level 9. A higher
// level deflates more planes, harder; the planes it adds shrink little for
// their time.
func deflateLimit(level int) float64 { return 0.5 + 0.06*float64(level-1) }

// newChunkEncoder returns the encoder of chunks of rows × cols, chunks a
// block, deflated at level (1–9), writing to w.
func newChunkEncoder(w io.Writer, level, rows, cols, chunks int) *chunkEncoder {
	e := &chunkEncoder{w: w, level: level, limit: deflateLimit(level), rows: rows, cols: cols, chunks: chunks, plane: rows * cols}
	e.block = make([]byte, chunks*8*e.plane)
	e.has = make([]bool, chunks)
	for range min(4, runtime.GOMAXPROCS(0), chunks) {
		e.workers = append(e.workers, newPlaneDeflater(level))
	}
	return e
}

// add places the next latitude row, a slab as SlabWriter takes it (chunk
// k's values at [k·cols, (k+1)·cols)), shuffled; a full block goes to be
// encoded. It returns the error of a write that failed.
func (e *chunkEncoder) add(values []float64) error {
	if e.err != nil {
		return e.err
	}
	at := e.n * e.cols
	for k := range e.chunks {
		v := values[k*e.cols : (k+1)*e.cols]
		e.has[k] = e.has[k] || hasValue(v)
		var p [8][]byte
		for j := range p {
			p[j] = e.block[(k*8+j)*e.plane+at:][:len(v)]
		}
		i := 0
		for ; i+8 <= len(v); i += 8 {
			// Eight values are an 8×8 matrix of bytes, a value a row:
			// transposed, row j is byte j of each, the next 8 bytes of
			// plane j.
			a0, a1, a2, a3 := math.Float64bits(v[i]), math.Float64bits(v[i+1]), math.Float64bits(v[i+2]), math.Float64bits(v[i+3])
			a4, a5, a6, a7 := math.Float64bits(v[i+4]), math.Float64bits(v[i+5]), math.Float64bits(v[i+6]), math.Float64bits(v[i+7])
			a0, a4 = swapBytes(a0, a4, 32, 0x00000000FFFFFFFF)
			a1, a5 = swapBytes(a1, a5, 32, 0x00000000FFFFFFFF)
			a2, a6 = swapBytes(a2, a6, 32, 0x00000000FFFFFFFF)
			a3, a7 = swapBytes(a3, a7, 32, 0x00000000FFFFFFFF)
			a0, a2 = swapBytes(a0, a2, 16, 0x0000FFFF0000FFFF)
			a1, a3 = swapBytes(a1, a3, 16, 0x0000FFFF0000FFFF)
			a4, a6 = swapBytes(a4, a6, 16, 0x0000FFFF0000FFFF)
			a5, a7 = swapBytes(a5, a7, 16, 0x0000FFFF0000FFFF)
			a0, a1 = swapBytes(a0, a1, 8, 0x00FF00FF00FF00FF)
			a2, a3 = swapBytes(a2, a3, 8, 0x00FF00FF00FF00FF)
			a4, a5 = swapBytes(a4, a5, 8, 0x00FF00FF00FF00FF)
			a6, a7 = swapBytes(a6, a7, 8, 0x00FF00FF00FF00FF)
			binary.LittleEndian.PutUint64(p[0][i:], a0)
			binary.LittleEndian.PutUint64(p[1][i:], a1)
			binary.LittleEndian.PutUint64(p[2][i:], a2)
			binary.LittleEndian.PutUint64(p[3][i:], a3)
			binary.LittleEndian.PutUint64(p[4][i:], a4)
			binary.LittleEndian.PutUint64(p[5][i:], a5)
			binary.LittleEndian.PutUint64(p[6][i:], a6)
			binary.LittleEndian.PutUint64(p[7][i:], a7)
		}
		for ; i < len(v); i++ {
			u := math.Float64bits(v[i])
			for j := range p {
				p[j][i] = byte(u >> (8 * j))
			}
		}
	}
	if e.n++; e.n < e.rows {
		return nil
	}
	return e.flush()
}

// close writes the last block (short, if the grid's rows are not a
// multiple of a chunk's), then the frame that ends the chunks: the rows
// added (the grid's) and the size chunkEnd.
func (e *chunkEncoder) close() error {
	if err := e.flush(); err != nil {
		return err
	}
	var f [frameHead]byte
	binary.LittleEndian.PutUint32(f[4:], uint32(e.r0))
	binary.LittleEndian.PutUint32(f[8:], chunkEnd)
	_, e.err = e.w.Write(f[:])
	return e.err
}

// flush encodes the block's chunks that have a value (the others read back
// as the fill value, NaN, unwritten), writes them as frames, and starts
// the next block after its rows. A short block (the grid's last) is padded
// with the fill value.
func (e *chunkEncoder) flush() error {
	if e.err != nil || e.n == 0 {
		return e.err
	}
	if e.n < e.rows {
		var pad [8]byte
		binary.LittleEndian.PutUint64(pad[:], fillBits)
		for k := range e.chunks {
			for j := range 8 {
				p := e.block[(k*8+j)*e.plane:][:e.plane]
				for i := e.n * e.cols; i < e.plane; i++ {
					p[i] = pad[j]
				}
			}
		}
	}
	// The block's first chunk with a value says which planes to deflate in
	// all of them.
	var deflate [8]bool
	for k, has := range e.has {
		if has {
			deflate = e.workers[0].choose(e.chunk(k), e.plane, e.limit)
			break
		}
	}
	errs := make([]error, len(e.workers))
	var wg sync.WaitGroup
	for i, d := range e.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := i; k < e.chunks && errs[i] == nil; k += len(e.workers) {
				if !e.has[k] {
					continue
				}
				// The frame's head, then the chunk.
				out := append(d.out[:0], make([]byte, frameHead)...)
				out = d.encode(out, e.chunk(k), e.plane, deflate, e.limit)
				binary.LittleEndian.PutUint32(out, uint32(k))
				binary.LittleEndian.PutUint32(out[4:], uint32(e.r0))
				binary.LittleEndian.PutUint32(out[8:], uint32(len(out)-frameHead))
				d.out = out
				e.mu.Lock()
				_, errs[i] = e.w.Write(out)
				e.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if e.err = errors.Join(errs...); e.err != nil {
		return e.err
	}
	e.r0 += e.n
	e.n = 0
	clear(e.has)
	return nil
}

// chunk returns chunk k of the block, its 8 planes.
func (e *chunkEncoder) chunk(k int) []byte { return e.block[k*8*e.plane : (k+1)*8*e.plane] }

// swapBytes swaps the bytes of a that mask<<shift selects with those of b
// that mask selects: a step of a transpose.
func swapBytes(a, b uint64, shift uint, mask uint64) (uint64, uint64) {
	t := (a>>shift ^ b) & mask
	return a ^ t<<shift, b ^ t
}

// hasValue reports whether v holds a value that is not NaN; most say so by
// their first.
func hasValue(v []float64) bool {
	for _, x := range v {
		if x == x {
			return true
		}
	}
	return false
}

// planeDeflater deflates byte planes, one goroutine's.
type planeDeflater struct {
	w   *flate.Writer
	buf bytes.Buffer
	out []byte // the frame being written
}

func newPlaneDeflater(level int) *planeDeflater {
	d := &planeDeflater{}
	d.w, _ = flate.NewWriter(&d.buf, level) // level is 1–9: no error
	return d
}

// plane returns p deflated as whole blocks that end on a byte boundary
// (a sync flush) and refer to no earlier data, so they fit anywhere in a
// stream between two blocks; the result is valid until the next call.
func (d *planeDeflater) plane(p []byte) []byte {
	d.buf.Reset()
	d.w.Reset(&d.buf)
	_, _ = d.w.Write(p) // a bytes.Buffer does not fail
	_ = d.w.Flush()
	return d.buf.Bytes()
}

// choose says which of the 8 planes of chunk (each size bytes) deflate
// shrinks to limit of their size, tried on up to 64 KiB of each.
func (d *planeDeflater) choose(chunk []byte, size int, limit float64) (deflate [8]bool) {
	n := min(size, 64<<10)
	for j := range 8 {
		deflate[j] = float64(len(d.plane(chunk[j*size:j*size+n]))) <= limit*float64(n)
	}
	return deflate
}

// encode appends to out the zlib stream of chunk (8 planes of size bytes):
// each run of planes deflate says deflated as one (unless deflate does not
// shrink the run to limit), the other planes in stored blocks, then an
// empty final block and the Adler-32 of the chunk.
func (d *planeDeflater) encode(out, chunk []byte, size int, deflate [8]bool, limit float64) []byte {
	out = append(out, 0x78, 0x01) // deflate, 32 KiB window, no dictionary
	for j := 0; j < 8; {
		end := j + 1
		for deflate[j] && end < 8 && deflate[end] {
			end++
		}
		p := chunk[j*size : end*size]
		j = end
		if deflate[end-1] {
			if z := d.plane(p); float64(len(z)) <= limit*float64(len(p)) {
				out = append(out, z...)
				continue
			}
		}
		for len(p) > 0 {
			n := min(len(p), math.MaxUint16)
			out = append(out, 0, byte(n), byte(n>>8), ^byte(n), ^byte(n>>8)) // a stored block, not final
			out = append(out, p[:n]...)
			p = p[n:]
		}
	}
	out = append(out, 0x03, 0x00) // an empty fixed-Huffman block, final
	return binary.BigEndian.AppendUint32(out, adler32Of(chunk))
}

// adler32Of returns the Adler-32 of p, as hash/adler32 does, 16 bytes at a
// time: s1 += Σ b[i], s2 += 16·s1 + Σ (16−i)·b[i], the bytes summed in
// 16-bit lanes of two uint64 (each lane's sum stays under 2^16, so no lane
// carries into the next), reduced modulo 65521 every 64 KiB (which uint64
// sums outlast). It is 2–3× hash/adler32, whose time was a fifth of the
// compression's.
func adler32Of(p []byte) uint32 {
	const (
		mod   = 65521
		lanes = 0x00FF00FF00FF00FF
		ones  = 0x0001000100010001
		// The weights of the even and odd bytes of the first and second
		// 8 bytes, the highest lane taking the product's top 16 bits.
		even1 = 10 | 12<<16 | 14<<32 | 16<<48
		odd1  = 9 | 11<<16 | 13<<32 | 15<<48
		even2 = 2 | 4<<16 | 6<<32 | 8<<48
		odd2  = 1 | 3<<16 | 5<<32 | 7<<48
	)
	s1, s2 := uint64(1), uint64(0)
	for len(p) > 0 {
		q := p[:min(len(p), 1<<16)]
		p = p[len(q):]
		for ; len(q) >= 16; q = q[16:] {
			x, y := binary.LittleEndian.Uint64(q), binary.LittleEndian.Uint64(q[8:])
			xe, xo, ye, yo := x&lanes, x>>8&lanes, y&lanes, y>>8&lanes
			s2 += 16*s1 + xe*even1>>48 + xo*odd1>>48 + ye*even2>>48 + yo*odd2>>48
			s1 += (xe + xo + ye + yo) * ones >> 48
		}
		for _, b := range q {
			s1 += uint64(b)
			s2 += s1
		}
		s1 %= mod
		s2 %= mod
	}
	return uint32(s2<<16 | s1)
}
