package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestInputsDigest: the digest of a region's inputs is the same read twice,
// and changing one input value of one cell changes it.
func TestInputsDigest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testutil.NewDB(t)
	r, err := grid.ParseRegion(0.5, "124,33,132,39", 0)
	require.NoError(t, err)
	_, err = db.Store.SeedCells(ctx, r, nil)
	require.NoError(t, err)
	first, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
	require.NoError(t, err)
	require.Regexp(t, "^[0-9a-f]{64}$", first.SHA256)
	require.EqualValues(t, r.NumCells(), first.Cells)
	require.Equal(t, sqlInputsDigest(t, db, r), first.SHA256, "the digest as store.InputsDigest defines it")
	again, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
	require.NoError(t, err)
	require.Equal(t, first.SHA256, again.SHA256)

	cell := r.CellAt(100).GridID
	_, err = db.Pool.Exec(ctx, `UPDATE cell_params SET sigma = sigma + 1e-9 WHERE step = 0.5 AND grid_id = $1`, cell)
	require.NoError(t, err)
	changed, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
	require.NoError(t, err)
	require.NotEqual(t, first.SHA256, changed.SHA256, "one input value changed")

	_, err = db.Pool.Exec(ctx, `UPDATE cell_params SET sigma = NULL WHERE step = 0.5 AND grid_id = $1`, cell)
	require.NoError(t, err)
	missing, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
	require.NoError(t, err)
	require.EqualValues(t, 1, missing.Missing)
	require.NotEqual(t, changed.SHA256, missing.SHA256)
	require.Equal(t, sqlInputsDigest(t, db, r), missing.SHA256)
}

// TestInputsDigestOfARegionWithinMore: the digest of a region covers its
// own cells only, whatever else cell_params holds around it (other
// columns of its rows, other rows, other steps), and one input alone is
// digested as the definition says.
func TestInputsDigestOfARegionWithinMore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testutil.NewDB(t)
	wide, err := grid.ParseRegion(0.5, "120,30,136,42", 0)
	require.NoError(t, err)
	_, err = db.Store.SeedCells(ctx, wide, nil)
	require.NoError(t, err)
	other, err := grid.ParseRegion(0.25, "124,33,132,39", 0)
	require.NoError(t, err)
	_, err = db.Store.SeedCells(ctx, other, nil)
	require.NoError(t, err)
	r, err := grid.ParseRegion(0.5, "124,33,132,39", 0)
	require.NoError(t, err)
	d, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
	require.NoError(t, err)
	require.EqualValues(t, r.NumCells(), d.Cells)
	require.Equal(t, sqlInputsDigest(t, db, r), d.SHA256)

	one, err := db.Store.InputsDigest(ctx, r, []string{"xi"})
	require.NoError(t, err)
	h := sha256.New()
	for k := range r.NumCells() {
		c := r.CellAt(k)
		var xi float64
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT xi FROM cell_params WHERE step = 0.5 AND grid_id = $1`, c.GridID).Scan(&xi))
		h.Write(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(c.GridID)), math.Float64bits(xi)))
	}
	require.Equal(t, hex.EncodeToString(h.Sum(nil)), one.SHA256, "grid id then xi, 8 big-endian bytes each, cell by cell in grid order")

	_, err = db.Store.InputsDigest(ctx, r, []string{"mu0", "no_such_input"})
	var unknown *store.UnknownInputError
	require.ErrorAs(t, err, &unknown)
}

// TestInputsDigestInParts: a region of several parts, read two at a time,
// digests as one read in grid order does.
func TestInputsDigestInParts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testutil.NewDB(t)
	r, err := grid.ParseRegion(0.02, "124,33,132,39", 0) // 120,000 cells: 4 parts
	require.NoError(t, err)
	_, err = db.Store.SeedCells(ctx, r, nil)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `UPDATE cell_params SET xi = NULL WHERE step = 0.02 AND grid_id % 997 = 0`)
	require.NoError(t, err)
	d, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
	require.NoError(t, err)
	require.EqualValues(t, r.NumCells(), d.Cells)
	require.Positive(t, d.Missing)
	require.Equal(t, sqlInputsDigest(t, db, r), d.SHA256)
}

// sqlInputsDigest computes the digest of r's default inputs in SQL, apart
// from store.InputsDigest: grid id and each input's float8 bytes, a NULL
// as the NaN of payload 1, in grid order.
func sqlInputsDigest(t *testing.T, db *testutil.DB, r grid.Region) string {
	t.Helper()
	l := r.Lattice
	var sum []byte
	require.NoError(t, db.Pool.QueryRow(context.Background(), `
		SELECT sha256(string_agg(int8send(grid_id)
			|| coalesce(float8send(mu0), '\x7ff8000000000001'::bytea)
			|| coalesce(float8send(sigma), '\x7ff8000000000001'::bytea)
			|| coalesce(float8send(xi), '\x7ff8000000000001'::bytea), ''::bytea ORDER BY grid_id))
		FROM cell_params WHERE step = $1 AND grid_id BETWEEN $2 AND $3 AND grid_id % $4 >= $5 AND grid_id % $4 < $6`,
		l.Step, l.GridID(r.Row0, r.Col0), l.GridID(r.Row1-1, r.Col1-1), int64(l.Cols), int64(r.Col0), int64(r.Col1)).Scan(&sum))
	return hex.EncodeToString(sum)
}
