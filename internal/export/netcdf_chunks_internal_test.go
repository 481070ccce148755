package export

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"fmt"
	"hash/adler32"
	"io"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestChunkEncoder checks the chunks the writer sends against HDF5's
// filters done the plain way: each frame's bytes inflate (with its
// Adler-32 checked) to the chunk's values shuffled byte by byte, padded
// with the fill value past the grid's last row; chunks without a value are
// not sent, and the end frame gives the grid's rows. Values with noisy low
// bytes make the encoder store some planes and deflate others; 19 columns
// take both the 8-value transpose and the one-by-one tail; planes over
// 65,535 bytes take several stored blocks.
func TestChunkEncoder(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rows, cols, chunks, gridRows, level int
	}{
		{rows: 3, cols: 19, chunks: 4, gridRows: 7, level: 1},
		{rows: 3, cols: 19, chunks: 4, gridRows: 7, level: 9},
		{rows: 2, cols: 1, chunks: 1, gridRows: 1, level: 4},
		{rows: 40, cols: 2000, chunks: 2, gridRows: 80, level: 1},
	} {
		t.Run(fmt.Sprintf("%+v", c), func(t *testing.T) {
			t.Parallel()
			rnd := rand.New(rand.NewPCG(1, uint64(c.cols)))
			slabs := make([][]float64, c.gridRows)
			for r := range slabs {
				slabs[r] = make([]float64, c.chunks*c.cols)
				for i := range slabs[r] {
					k := i / c.cols
					switch {
					case k == 1 && r < c.rows:
						slabs[r][i] = math.NaN() // chunk 1 of the first block has no value
					case i%7 == 3:
						slabs[r][i] = math.NaN()
					default:
						slabs[r][i] = 0.5 + 0.4*math.Sin(float64(r*c.cols+i)/50) + rnd.Float64()*1e-9
					}
				}
			}
			var out bytes.Buffer
			e := newChunkEncoder(&out, c.level, c.rows, c.cols, c.chunks)
			for _, s := range slabs {
				require.NoError(t, e.add(s))
			}
			require.NoError(t, e.close())

			want := map[[2]int][]byte{} // (k, first row): the chunk shuffled
			for r0 := 0; r0 < c.gridRows; r0 += c.rows {
				for k := range c.chunks {
					plain := make([]uint64, c.rows*c.cols)
					has := false
					for i := range plain {
						plain[i] = fillBits
						if r := r0 + i/c.cols; r < c.gridRows {
							v := slabs[r][k*c.cols+i%c.cols]
							has = has || !math.IsNaN(v)
							plain[i] = math.Float64bits(v)
						}
					}
					if has {
						sh := make([]byte, 8*len(plain))
						for i, u := range plain {
							for j := range 8 {
								sh[j*len(plain)+i] = byte(u >> (8 * j))
							}
						}
						want[[2]int{k, r0}] = sh
					}
				}
			}
			got := map[[2]int][]byte{}
			deflated := 0
			for {
				var head [frameHead]byte
				_, err := io.ReadFull(&out, head[:])
				require.NoError(t, err)
				k, r0, n := binary.LittleEndian.Uint32(head[:]), binary.LittleEndian.Uint32(head[4:]), binary.LittleEndian.Uint32(head[8:])
				if n == chunkEnd {
					require.Equal(t, c.gridRows, int(r0), "the end frame gives the grid's rows")
					break
				}
				z := make([]byte, n)
				_, err = io.ReadFull(&out, z)
				require.NoError(t, err)
				zr, err := zlib.NewReader(bytes.NewReader(z))
				require.NoError(t, err)
				b, err := io.ReadAll(zr) // checks the Adler-32
				require.NoError(t, err, "chunk %d at row %d", k, r0)
				got[[2]int{int(k), int(r0)}] = b
				if c.level == 1 {
					require.Zero(t, z[2], "plane 0, noise, is a stored block (not final)")
				}
				if len(z) < len(b) {
					deflated++
				}
			}
			require.Zero(t, out.Len(), "nothing after the end frame")
			require.Equal(t, len(want), len(got))
			for key, w := range want {
				require.Equal(t, w, got[key], "chunk %d at row %d", key[0], key[1])
			}
			if c.rows*c.cols >= 64 {
				require.Equal(t, len(got), deflated, "every chunk shrinks")
			}
		})
	}
}

// TestShuffleTranspose checks the 8×8 byte transpose against the bytes.
func TestShuffleTranspose(t *testing.T) {
	t.Parallel()
	v := make([]float64, 8)
	for i := range v {
		v[i] = math.Float64frombits(0x0706050403020100 + uint64(i)*0x1010101010101010)
	}
	e := newChunkEncoder(io.Discard, 1, 2, 8, 1)
	require.NoError(t, e.add(v))
	for j := range 8 {
		for i := range 8 {
			require.Equal(t, byte(j+16*i), e.block[j*16+i], "byte %d of value %d", j, i)
		}
	}
}

// TestAdler32 checks adler32Of against hash/adler32, on lengths around its
// 16 bytes at a time and its 64 KiB between reductions, and on the bytes
// that make the sums largest.
func TestAdler32(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(2, 3))
	for _, n := range []int{0, 1, 15, 16, 17, 5552, 65535, 65536, 65537, 1 << 20} {
		b := make([]byte, n)
		for i := range b {
			b[i] = 255
		}
		require.Equal(t, adler32.Checksum(b), adler32Of(b), "%d bytes of 255", n)
		for i := range b {
			b[i] = byte(rnd.UintN(256))
		}
		require.Equal(t, adler32.Checksum(b), adler32Of(b), "%d random bytes", n)
	}
}
