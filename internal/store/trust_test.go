package store_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
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
}
