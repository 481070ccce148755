package store

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/require"
)

// copyStream is a binary COPY stream of tuples (nil fields are NULL).
func copyStream(tuples [][][]byte) []byte {
	b := append([]byte(nil), copySignature...)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, 2) // a header extension of 2 bytes
	b = append(b, 'x', 'y')
	for _, t := range tuples {
		b = binary.BigEndian.AppendUint16(b, uint16(len(t)))
		for _, f := range t {
			if f == nil {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
			b = append(b, f...)
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xffff)
}

// TestCopyTuples: the parser gives each tuple's fields, NULL as nil and an
// empty value as empty, however the stream is cut into writes.
func TestCopyTuples(t *testing.T) {
	t.Parallel()
	want := [][][]byte{
		{[]byte("12345678"), nil, []byte{}},
		{[]byte("a"), []byte("bc"), []byte("def")},
		{},
		{nil},
	}
	stream := copyStream(want)
	for _, size := range []int{1, 2, 3, 7, 19, len(stream)} {
		var got [][][]byte
		c := newCopyTuples(func(f [][]byte) error {
			t := make([][]byte, len(f))
			for i, v := range f {
				if v != nil {
					t[i] = append([]byte{}, v...)
				}
			}
			got = append(got, t)
			return nil
		})
		for off := 0; off < len(stream); off += size {
			n, err := c.Write(stream[off:min(off+size, len(stream))])
			require.NoError(t, err)
			require.Equal(t, min(size, len(stream)-off), n)
		}
		require.NoError(t, c.Done(), "writes of %d bytes", size)
		require.Equal(t, want, got, "writes of %d bytes", size)
	}

	c := newCopyTuples(func([][]byte) error { return nil })
	_, err := c.Write(stream[:len(stream)-5])
	require.NoError(t, err)
	require.ErrorIs(t, c.Done(), errCopyIncomplete, "a stream cut short")
	_, err = newCopyTuples(nil).Write([]byte("PGCOPY\nnot quite the header"))
	require.ErrorContains(t, err, "not a binary COPY stream")
}
