package export_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/export"
	"github.com/gridbatch/gridbatch/internal/grid"
)

// BenchmarkWrite measures the writers alone, without PostgreSQL: the
// 480,000-cell grid (0.01°, Korea), 3 scenarios × 80 years, from a source
// that makes the values up. The export's own figures, with PostgreSQL, are
// tests/integration's BenchmarkExport.
func BenchmarkWrite(b *testing.B) {
	r, err := grid.ParseRegion(0.01, "124,33,132,39", 0)
	require.NoError(b, err)
	l := export.Layout{Kind: "ph", Region: r, Scenarios: []string{"ssp126", "ssp245", "ssp585"}, FirstYear: 2021, Years: 80}
	src := func(ctx context.Context, fn func(export.Series) error) error {
		v := make([]float64, l.Years)
		for k := range r.NumCells() {
			c := r.CellAt(k)
			for _, s := range l.Scenarios {
				for y := range v {
					v[y] = float64(c.GridID)*1e-7 + float64(y)/80
				}
				if err := fn(export.Series{GridID: c.GridID, Scenario: s, FirstYear: 2021, Values: v}); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, f := range export.Formats {
		b.Run(string(f), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "out")
			for b.Loop() {
				_, err := export.File(context.Background(), path, src, l, export.Options{Format: f})
				require.NoError(b, err)
			}
			b.ReportMetric(float64(r.NumCells()*len(l.Scenarios)*l.Years)*float64(b.N)/b.Elapsed().Seconds(), "values/s")
		})
	}
}
