package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// copySignature starts PostgreSQL's binary COPY format: the signature,
// then a 32-bit flags field and the length of a header extension.
var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

// copyTuples is an io.Writer that parses what COPY … TO STDOUT (FORMAT
// binary) sends (pgconn's CopyTo writes it) and hands each tuple's fields
// to fn as they arrive: a NULL field is nil, any other a slice (empty for
// an empty value) of the data written, valid only during the call. A
// tuple split across writes is put together first; PostgreSQL sends one
// tuple per message, so that is rare.
type copyTuples struct {
	fn     func(fields [][]byte) error
	fields [][]byte
	carry  []byte
	header bool // the header has been read
	ended  bool // the trailer has been read
}

func newCopyTuples(fn func(fields [][]byte) error) *copyTuples { return &copyTuples{fn: fn} }

// errCopyIncomplete is what Done returns when the stream stopped within a
// tuple or before its trailer.
var errCopyIncomplete = errors.New("binary COPY stream ended early")

// Write implements io.Writer.
func (c *copyTuples) Write(p []byte) (int, error) {
	b := p
	if len(c.carry) > 0 {
		c.carry = append(c.carry, p...)
		b = c.carry
	}
	n, err := c.parse(b)
	if err != nil {
		return 0, err
	}
	rest := b[n:]
	if len(c.carry) > 0 {
		c.carry = append(c.carry[:0], rest...)
	} else {
		c.carry = append(c.carry, rest...)
	}
	return len(p), nil
}

// Done returns an error when the stream is incomplete.
func (c *copyTuples) Done() error {
	if !c.ended || len(c.carry) > 0 {
		return errCopyIncomplete
	}
	return nil
}

// parse hands the complete tuples of b to fn and returns how many bytes
// they took.
func (c *copyTuples) parse(b []byte) (int, error) {
	off := 0
	if !c.header {
		if len(b) < len(copySignature)+8 {
			return 0, nil
		}
		if !bytes.Equal(b[:len(copySignature)], copySignature) {
			return 0, errors.New("not a binary COPY stream")
		}
		ext := int(binary.BigEndian.Uint32(b[len(copySignature)+4:]))
		if len(b) < len(copySignature)+8+ext {
			return 0, nil
		}
		off = len(copySignature) + 8 + ext
		c.header = true
	}
	for off < len(b) {
		if c.ended {
			return 0, errors.New("data after the binary COPY trailer")
		}
		if len(b)-off < 2 {
			return off, nil
		}
		nf := int(int16(binary.BigEndian.Uint16(b[off:])))
		if nf == -1 {
			c.ended = true
			off += 2
			continue
		}
		if nf < 0 {
			return 0, fmt.Errorf("binary COPY: a tuple of %d fields", nf)
		}
		c.fields = c.fields[:0]
		p := off + 2
		for range nf {
			if len(b)-p < 4 {
				return off, nil
			}
			l := int(int32(binary.BigEndian.Uint32(b[p:])))
			p += 4
			switch {
			case l == -1:
				c.fields = append(c.fields, nil)
				continue
			case l < 0:
				return 0, fmt.Errorf("binary COPY: a field of %d bytes", l)
			case len(b)-p < l:
				return off, nil
			}
			c.fields = append(c.fields, b[p:p+l:p+l])
			p += l
		}
		if err := c.fn(c.fields); err != nil {
			return 0, err
		}
		off = p
	}
	return off, nil
}
