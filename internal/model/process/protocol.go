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

// maxMeta bounds the JSON meta of a frame from the model: READY, RESULT
// and ERROR metas are a few hundred bytes, an ERROR's traceback is cut by
// the SDK to fit. How much data a frame may carry is the reader's to say
// (readFrame): a RESULT exactly its chunk's values, anything else none.
const maxMeta = 16 << 10

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

// sizeError is a frame whose header claims more than its reader allows:
// nothing of it was read or allocated.
type sizeError struct {
	typ         uint32
	part        string // "meta" or "data"
	got, within uint64
}

func (e *sizeError) Error() string {
	return fmt.Sprintf("%s frame claims %d bytes of %s; at most %d allowed", frameName(e.typ), e.got, e.part, e.within)
}

// readFrame reads one frame whose data is at most maxData bytes and whose
// meta at most maxMeta, checking the header's lengths before anything is
// allocated (a *sizeError when over). buf is reused for the data when
// large enough.
func readFrame(r io.Reader, buf []byte, maxData uint64) (frame, error) {
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: binary.LittleEndian.Uint32(hdr[0:])}
	ml := binary.LittleEndian.Uint32(hdr[4:])
	dl := binary.LittleEndian.Uint64(hdr[8:])
	if ml > maxMeta {
		return frame{}, &sizeError{typ: f.typ, part: "meta", got: uint64(ml), within: maxMeta}
	}
	if dl > maxData {
		return frame{}, &sizeError{typ: f.typ, part: "data", got: dl, within: maxData}
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
