package process

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"unsafe"
)

// The frame types of protocol version 1 (docs/model-protocol.md).
const (
	frameHello  = 1
	frameReady  = 2
	frameChunk  = 3
	frameResult = 4
	frameError  = 5
)

// protocolVersion is the version this worker speaks.
const protocolVersion = 1

// maxMeta bounds a frame's JSON meta; maxData its data (a reply of more is
// a protocol violation, not an allocation).
const (
	maxMeta = 1 << 20
	maxData = 1 << 34
)

func frameName(t uint32) string {
	switch t {
	case frameHello:
		return "HELLO"
	case frameReady:
		return "READY"
	case frameChunk:
		return "CHUNK"
	case frameResult:
		return "RESULT"
	case frameError:
		return "ERROR"
	}
	return fmt.Sprintf("frame type %d", t)
}

type helloMeta struct {
	Protocol  int      `json:"protocol"`
	Kind      string   `json:"kind"`
	Inputs    []string `json:"inputs"`
	Series    []string `json:"series"`
	FirstYear int      `json:"first_year"`
	Years     int      `json:"years"`
}

type readyMeta struct {
	Protocol int `json:"protocol"`
	PID      int `json:"pid"`
}

type chunkMeta struct {
	Chunk   string   `json:"chunk"`
	N       int      `json:"n"`
	Columns []string `json:"columns"`
}

type resultMeta struct {
	Shape []int  `json:"shape"`
	DType string `json:"dtype"`
}

type errorMeta struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	Traceback string `json:"traceback"`
	// Permanent is true for an error no retry will fix (bad inputs).
	Permanent bool `json:"permanent,omitempty"`
}

// writeFrame writes one frame: type, meta length, data length, meta, then
// each data part in turn.
func writeFrame(w *bufio.Writer, typ uint32, meta any, data ...[]byte) error {
	m, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	var n uint64
	for _, d := range data {
		n += uint64(len(d))
	}
	var hdr [16]byte
	binary.LittleEndian.PutUint32(hdr[0:], typ)
	binary.LittleEndian.PutUint32(hdr[4:], uint32(len(m)))
	binary.LittleEndian.PutUint64(hdr[8:], n)
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(m); err != nil {
		return err
	}
	for _, d := range data {
		if _, err := w.Write(d); err != nil {
			return err
		}
	}
	return w.Flush()
}

// frame is a frame read back: its type, its meta undecoded and its data.
type frame struct {
	typ  uint32
	meta []byte
	data []byte
}

// readFrame reads one frame. buf is reused for the data when large enough.
func readFrame(r io.Reader, buf []byte) (frame, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: binary.LittleEndian.Uint32(hdr[0:])}
	ml := binary.LittleEndian.Uint32(hdr[4:])
	dl := binary.LittleEndian.Uint64(hdr[8:])
	if ml > maxMeta || dl > maxData {
		return frame{}, fmt.Errorf("%s frame of %d meta and %d data bytes: over the protocol's bounds (is the model writing something else to fd 4?)", frameName(f.typ), ml, dl)
	}
	f.meta = make([]byte, ml)
	if _, err := io.ReadFull(r, f.meta); err != nil {
		return frame{}, err
	}
	if uint64(cap(buf)) >= dl {
		f.data = buf[:dl]
	} else {
		f.data = make([]byte, dl)
	}
	if _, err := io.ReadFull(r, f.data); err != nil {
		return frame{}, err
	}
	return f, nil
}

// littleEndian reports whether this machine stores numbers little-endian, so
// a column is written as its own bytes.
var littleEndian = func() bool { x := uint16(1); return *(*byte)(unsafe.Pointer(&x)) == 1 }()

// columnBytes returns v's values as little-endian bytes: the slice's own
// memory on a little-endian machine (no copy). bits gives a value's bits.
func columnBytes[T int64 | float64](v []T, bits func(T) uint64) []byte {
	if len(v) == 0 {
		return nil
	}
	if littleEndian {
		return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*8)
	}
	b := make([]byte, len(v)*8)
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[i*8:], bits(x))
	}
	return b
}

func float64Bytes(v []float64) []byte { return columnBytes(v, math.Float64bits) }

func int64Bytes(v []int64) []byte { return columnBytes(v, func(x int64) uint64 { return uint64(x) }) }

// decodeFloat64s decodes little-endian float64 values into a new slice.
func decodeFloat64s(b []byte) []float64 {
	out := make([]float64, len(b)/8)
	if littleEndian && len(out) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&out[0])), len(b)), b)
		return out
	}
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[i*8:]))
	}
	return out
}
