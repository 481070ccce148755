package inputs

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// thriftWalk checks Thrift compact-protocol bytes before a decoder that
// trusts them (parquet-go's allocates every list at the size it claims)
// sees them. It walks one struct from the start of b without allocating,
// and fails when the struct nests deeper than maxDepth, claims a list, map
// or string longer than the bytes left, or holds more than maxElems list
// and map elements in all. It returns the struct's length in bytes.
func thriftWalk(b []byte, maxDepth, maxElems int) (int, error) {
	w := thriftWalker{b: b, maxDepth: maxDepth, elems: maxElems}
	if err := w.value(tStruct, 0); err != nil {
		return 0, err
	}
	return w.pos, nil
}

// Thrift compact-protocol types.
const (
	tBoolTrue  = 1
	tBoolFalse = 2
	tByte      = 3
	tI16       = 4
	tI32       = 5
	tI64       = 6
	tDouble    = 7
	tBinary    = 8
	tList      = 9
	tSet       = 10
	tMap       = 11
	tStruct    = 12
)

var errThriftShort = errors.New("metadata ends early")

type thriftWalker struct {
	b        []byte
	pos      int
	maxDepth int
	elems    int
}

func (w *thriftWalker) byte() (byte, error) {
	if w.pos >= len(w.b) {
		return 0, errThriftShort
	}
	c := w.b[w.pos]
	w.pos++
	return c, nil
}

func (w *thriftWalker) uvarint() (uint64, error) {
	v, n := binary.Uvarint(w.b[w.pos:])
	if n <= 0 {
		return 0, errThriftShort
	}
	w.pos += n
	return v, nil
}

func (w *thriftWalker) skip(n uint64) error {
	if n > uint64(len(w.b)-w.pos) {
		return fmt.Errorf("metadata claims %d bytes where %d are left", n, len(w.b)-w.pos)
	}
	w.pos += int(n)
	return nil
}

// count takes n elements of a list or map from the budget: each needs at
// least one byte, and all of them together at most the budget.
func (w *thriftWalker) count(n uint64) error {
	if n > uint64(len(w.b)-w.pos) {
		return fmt.Errorf("metadata claims a list of %d elements in %d bytes", n, len(w.b)-w.pos)
	}
	if n > uint64(w.elems) {
		return errors.New("metadata holds too many list elements")
	}
	w.elems -= int(n)
	return nil
}

func (w *thriftWalker) value(typ byte, depth int) error {
	switch typ {
	case tBoolTrue, tBoolFalse:
		return nil
	case tByte:
		_, err := w.byte()
		return err
	case tI16, tI32, tI64:
		_, err := w.uvarint()
		return err
	case tDouble:
		return w.skip(8)
	case tBinary:
		n, err := w.uvarint()
		if err != nil {
			return err
		}
		return w.skip(n)
	}
	if depth >= w.maxDepth {
		return fmt.Errorf("metadata nests deeper than %d levels", w.maxDepth)
	}
	switch typ {
	case tList, tSet:
		h, err := w.byte()
		if err != nil {
			return err
		}
		n, elem := uint64(h>>4), h&0x0f
		if n == 15 {
			if n, err = w.uvarint(); err != nil {
				return err
			}
		}
		if err := w.count(n); err != nil {
			return err
		}
		for range n {
			if elem == tBoolTrue || elem == tBoolFalse {
				elem = tByte // a list's booleans take a byte each
			}
			if err := w.value(elem, depth+1); err != nil {
				return err
			}
		}
		return nil
	case tMap:
		n, err := w.uvarint()
		if err != nil || n == 0 {
			return err
		}
		kv, err := w.byte()
		if err != nil {
			return err
		}
		if err := w.count(n); err != nil {
			return err
		}
		for range n {
			if err := w.value(kv>>4, depth+1); err != nil {
				return err
			}
			if err := w.value(kv&0x0f, depth+1); err != nil {
				return err
			}
		}
		return nil
	case tStruct:
		for {
			h, err := w.byte()
			if err != nil {
				return err
			}
			if h == 0 { // stop
				return nil
			}
			if h>>4 == 0 { // the field id follows, as a zigzag varint
				if _, err := w.uvarint(); err != nil {
					return err
				}
			}
			if err := w.value(h&0x0f, depth+1); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("metadata holds an unknown Thrift type %d", typ)
}
