package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "diff",
		usage:   "BATCH_A [BATCH_B] [--from YEAR] [--to YEAR] [--top N] [--json]",
		summary: "what changed between two batches' values (B: the published ones)",
		about: `Compares the values of batch A with those of batch B, or, without B, with the
values published now for A's kind over A's cells. Per series and for the years
--from to --to (default: all the years both have): the cells compared (those
with the series in both), the cells changed (a value differs, bit for bit; NaN
equals NaN), the largest and the 99th percentile absolute change over the
values compared (unchanged ones count as 0; p99 to within 0.1%), and the
cells of the --top largest changes. It reads both in grid order at once, a
cell at a time, in bounded memory. --json prints one JSON document.`,
		example: "  enqueuer diff ph-20261203-041503-3fa9c1\n  enqueuer diff ph-20261203-041503-3fa9c1 ph-20261122-041503-aa0c11 --from 2050 --to 2060 --json",
		run:     runDiff,
	})
}

// diffReport is the --json output of diff.
type diffReport struct {
	A        string             `json:"a"`
	B        string             `json:"b"`
	Kind     string             `json:"kind"`
	FromYear int                `json:"from_year,omitempty"`
	ToYear   int                `json:"to_year,omitempty"`
	Series   []batch.SeriesDiff `json:"series"`
	Seconds  float64            `json:"seconds"`
}

func runDiff(ctx context.Context, e *env, args []string) error {
	var o batch.DiffOptions
	var asJSON bool
	cfg, set, done, err := parse(commandNamed("diff"), e, args, false, func(s *config.Set) {
		s.Int(&o.FromYear, "from", "", 0, "first year compared (default: the first both have)")
		s.Int(&o.ToYear, "to", "", 0, "last year compared (default: the last both have)")
		s.Int(&o.Top, "top", "", 5, "how many of the largest changes to name per series")
		s.Bool(&asJSON, "json", "", false, "print one JSON document")
	})
	if done {
		return err
	}
	ids := set.Args()
	if len(ids) < 1 || len(ids) > 2 {
		return errors.New("diff takes one or two batch IDs (see 'enqueuer list')")
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	a, err := st.GetBatch(ctx, ids[0])
	if errors.Is(err, store.ErrBatchNotFound) {
		return fmt.Errorf("no batch %s (see 'enqueuer list')", ids[0])
	}
	if err != nil {
		return err
	}
	r, err := a.Region()
	if err != nil {
		return err
	}
	qa := store.ExportQuery{BatchID: a.ID, Kind: a.Kind, Step: a.Step, Region: r}
	qb := store.ExportQuery{Kind: a.Kind, Step: a.Step, Region: r}
	bName := "the published " + a.Kind + " values"
	if len(ids) == 2 {
		b, err := st.GetBatch(ctx, ids[1])
		if errors.Is(err, store.ErrBatchNotFound) {
			return fmt.Errorf("no batch %s (see 'enqueuer list')", ids[1])
		}
		if err != nil {
			return err
		}
		if b.Kind != a.Kind || b.Step != a.Step {
			return fmt.Errorf("batch %s is %s at step %g, batch %s %s at step %g: diff compares batches of one kind and step", a.ID, a.Kind, a.Step, b.ID, b.Kind, b.Step)
		}
		qb = store.ExportQuery{BatchID: b.ID, Kind: b.Kind, Step: b.Step, Region: r}
		bName = b.ID
	}
	// Each batch's rows are read in grid order: indexed (as publishing
	// does, once), they are not sorted for it.
	for _, q := range []store.ExportQuery{qa, qb} {
		if q.BatchID != "" {
			if err := st.IndexBatchRows(ctx, q.BatchID); err != nil {
				return err
			}
		}
	}
	start := time.Now()
	var readers []*store.CellReader
	defer func() {
		for _, r := range readers {
			r.Close()
		}
	}()
	for _, q := range []store.ExportQuery{qa, qb} {
		r, err := st.ReadCells(ctx, q)
		if err != nil {
			return err
		}
		readers = append(readers, r)
	}
	diffs, err := batch.Diff(ctx, readers[0], readers[1], o)
	if err != nil {
		return fmt.Errorf("diff %s against %s: %w", a.ID, bName, err)
	}
	rep := diffReport{A: a.ID, B: bName, Kind: a.Kind, FromYear: o.FromYear, ToYear: o.ToYear, Series: diffs, Seconds: time.Since(start).Seconds()}
	if asJSON {
		return writeJSON(e.stdout, rep)
	}
	years := "all years"
	if o.FromYear != 0 || o.ToYear != 0 {
		years = fmt.Sprintf("years %s to %s", orAll(o.FromYear), orAll(o.ToYear))
	}
	fmt.Fprintf(e.stdout, "%s against %s (%s, %s)\n", a.ID, bName, a.Kind, years)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "series\tcells compared\tcells changed\tvalues changed\tlargest |change|\tp99 |change|")
	for _, d := range diffs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", printable(d.Series), numfmt.Int(d.CellsCompared), numfmt.Int(d.CellsChanged),
			numfmt.Int(d.ValuesChanged), g(d.MaxAbsChange), g(d.P99AbsChange))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, d := range diffs {
		for _, c := range d.Largest {
			fmt.Fprintf(e.stdout, "  %s cell %d %d: %s -> %s (|change| %s)\n", printable(d.Series), c.GridID, c.Year, g(c.A), g(c.B), g(c.Abs))
		}
	}
	fmt.Fprintf(e.stderr, "compared in %s\n", numfmt.Duration(time.Since(start)))
	return nil
}

func g(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func orAll(y int) string {
	if y == 0 {
		return "-"
	}
	return strconv.Itoa(y)
}
