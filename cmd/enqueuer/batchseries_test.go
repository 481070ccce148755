package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestExportSelectionOfABatchUsesItsLayout: a batch is exported with the
// series it recorded when it was made, not those the models file declares
// for its kind since; the published values with the declared ones.
func TestExportSelectionOfABatchUsesItsLayout(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := testutil.NewDB(t)
	_, err := db.Store.EnsureResultsTables(ctx, []string{"heat"})
	require.NoError(t, err)
	r, err := grid.ParseRegion(0.05, "126,37,126.2,37.2", 0)
	require.NoError(t, err)
	b := testutil.StoreBatch(t, db.Store, "heat-1", "heat", grid.PH, r, 10, nil, store.StatusSucceeded)

	path := filepath.Join(t.TempDir(), "models.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`models:
  - kind: heat
    command: ["/bin/true"]
    series: [low, high]
    first_year: 2031
    years: 20
`), 0o644))
	models, err := model.Load(path)
	require.NoError(t, err)

	sel, err := exportSelection(ctx, db.Store, models, b.ID, "", 0, "", "")
	require.NoError(t, err)
	require.Equal(t, []string{"ssp126", "ssp245", "ssp585"}, sel.layout.Scenarios)
	require.Equal(t, [2]int{2021, 80}, [2]int{sel.layout.FirstYear, sel.layout.Years})
	_, err = exportSelection(ctx, db.Store, models, b.ID, "", 0, "", "low")
	require.ErrorContains(t, err, `--scenario: unknown scenario "low" of kind heat (known: ssp126, ssp245, ssp585)`)

	sel, err = exportSelection(ctx, db.Store, models, "", "heat", 0.05, "", "")
	require.NoError(t, err)
	require.Equal(t, []string{"low", "high"}, sel.layout.Scenarios)
	require.Equal(t, [2]int{2031, 20}, [2]int{sel.layout.FirstYear, sel.layout.Years})
}

// TestResultsCellOfABatchKnowsItsSeries: results --batch takes a scenario
// the batch computed, whatever the models file declares for its kind now.
func TestResultsCellOfABatchKnowsItsSeries(t *testing.T) {
	t.Parallel()
	spec := model.BuiltinSpec("heat")
	spec.Command, spec.Series = []string{"/bin/true"}, []string{"low", "high"}
	models := model.New()
	require.NoError(t, models.Add(spec, nil))
	b := &store.Batch{Kind: "heat", Layout: store.LayoutOf(model.BuiltinSpec("heat"))}
	_, _, err := resultsCell(models, b, 0.05, "heat", "ssp245", "37.53", "127.02")
	require.NoError(t, err)
	_, _, err = resultsCell(models, b, 0.05, "heat", "low", "37.53", "127.02")
	require.EqualError(t, err, `--scenario: unknown scenario "low" (known: ssp126, ssp245, ssp585)`)
	_, _, err = resultsCell(models, nil, 0.05, "heat", "low", "37.53", "127.02")
	require.NoError(t, err, "the published values: the declared series")
}
