//go:build integration

package integration

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestWrongStepNamesTheSteps asks results and export for published values
// at a step that has none: both exit 1 naming the steps that have some.
func TestWrongStepNamesTheSteps(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	r, err := grid.ParseRegion(0.05, "126.9,37.5,127.05,37.6", 0)
	require.NoError(t, err)
	testutil.StoreBatch(t, c.DB.Store, "ph-steps", grid.KindPH, grid.PH, r, 10, nil, store.StatusSucceeded)

	_, errOut, code := c.Enqueuer("results", "--kind", "ph", "--scenario", "ssp245", "--lat", "37.55", "--lon", "126.95", "--step", "0.01")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "ph has published values at step 0.05 (--step)")

	_, errOut, code = c.Enqueuer("export", "--kind", "ph", "--step", "0.1", "--out", filepath.Join(t.TempDir(), "ph.csv"))
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "ph has published values at step 0.05 (--step)")

	_, errOut, code = c.Enqueuer("results", "--kind", "hazard", "--scenario", "ssp245", "--lat", "37.55", "--lon", "126.95", "--step", "0.05")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, errOut, "hazard has no published values at any step")
}
