package store

import (
	"math"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stretchr/testify/require"
)

// TestFloat8ArrayEncoding checks the fast float8[] encoder byte for byte
// against pgx's own.
func TestFloat8ArrayEncoding(t *testing.T) {
	t.Parallel()
	eighty := make([]float64, 80)
	for i := range eighty {
		eighty[i] = math.Nextafter(0.1*float64(i), 1)
	}
	special := []float64{0, math.Copysign(0, -1), math.Inf(1), math.Inf(-1), math.NaN(), math.SmallestNonzeroFloat64, math.MaxFloat64, -1.5}
	plain := pgtype.NewMap()
	fast := pgtype.NewMap()
	registerCodecs(fast)
	for name, v := range map[string][]float64{"nil": nil, "empty": {}, "one": {1.5}, "80 values": eighty, "special values": special} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			want, err := plain.Encode(pgtype.Float8ArrayOID, pgtype.BinaryFormatCode, v, nil)
			require.NoError(t, err)
			got, err := fast.Encode(pgtype.Float8ArrayOID, pgtype.BinaryFormatCode, float8Array(v), nil)
			require.NoError(t, err)
			require.Equal(t, want, got)
			// Other values still take pgx's path.
			other, err := fast.Encode(pgtype.Float8ArrayOID, pgtype.BinaryFormatCode, v, nil)
			require.NoError(t, err)
			require.Equal(t, want, other)
		})
	}
}
