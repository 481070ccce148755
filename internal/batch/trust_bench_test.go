package batch_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// errRollBack ends the benchmark's transaction without publishing.
var errRollBack = errors.New("roll back")

// BenchmarkTrust measures, on a batch of 480,000 cells (the 0.01° Korea
// grid of make bench, 124,33,132,39), the two additions of "Results you
// can trust" to a batch's duration: the inputs digest at plan time and
// the built-in ph's range check on the batch's rows before publication.
//
//	go test -run '^$' -bench BenchmarkTrust -benchtime 3x ./internal/batch/
func BenchmarkTrust(b *testing.B) {
	ctx := context.Background()
	db := testutil.NewDB(b)
	r, err := grid.ParseRegion(0.01, "124,33,132,39", 0)
	require.NoError(b, err)
	_, err = db.Store.SeedCells(ctx, r, nil)
	require.NoError(b, err)
	cells := float64(r.NumCells())
	b.Run("inputs_digest", func(b *testing.B) {
		for b.Loop() {
			d, err := db.Store.InputsDigest(ctx, r, model.DefaultInputs)
			require.NoError(b, err)
			require.EqualValues(b, r.NumCells(), d.Cells)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/cells, "ns/cell")
	})
	bt := testutil.StoreBatch(b, db.Store, "ph-bench-trust", grid.KindPH, grid.PH, r, 2000, nil, store.StatusPartial)
	checks := model.BuiltinSpec(grid.KindPH).Checks
	b.Run("checks_range", func(b *testing.B) {
		for b.Loop() {
			_, err := db.Store.Publish(ctx, bt.ID, func(ctx context.Context, e *store.Ending) error {
				rep, err := batch.RunChecks(ctx, e, checks)
				if err != nil {
					return err
				}
				if !rep.Passed {
					return fmt.Errorf("checks failed: %+v", rep)
				}
				return errRollBack
			})
			require.ErrorIs(b, err, errRollBack)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/cells, "ns/cell")
	})
	// enqueuer diff of two 480,000-cell batches, as a user runs it, under
	// /usr/bin/time -v: its wall time and maximum RSS.
	other := testutil.StoreBatch(b, db.Store, "ph-bench-trust-b", grid.KindPH, grid.Hazard, r, 2000, nil, store.StatusPartial)
	enqueuer := filepath.Join(testutil.Binaries(b), "enqueuer")
	b.Run("diff", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command("/usr/bin/time", "-v", enqueuer, "diff", bt.ID, other.ID, "--json")
			cmd.Env = append(os.Environ(), "GRIDBATCH_DATABASE_URL="+db.URL)
			out, err := cmd.CombinedOutput()
			require.NoError(b, err, "%s", out)
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "Maximum resident set size") || strings.Contains(line, "Elapsed (wall clock)") {
					b.Log(strings.TrimSpace(line))
				}
			}
		}
	})
}
