package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "results",
		usage:   "(--kind KIND | --batch ID) --scenario SCENARIO --lat LAT --lon LON [--step DEGREES] [--json]",
		summary: "print the published series of the cell containing a point, or a batch's own",
		about: `Finds the cell of the lattice of --step that contains the point --lat, --lon
(degrees) and prints the published series of --kind for it under --scenario (the
values of ph_timeseries, hazard_timeseries, …: for each cell, those of the batch
published last over it), or with --batch ID the series that batch computed,
published or not (until retention drops its rows, GRIDBATCH_KEEP_BATCHES):
one "YEAR VALUE" line per year of the kind (2021 to 2100 for the built-in
kinds), values at full precision (Go's shortest round-trip form, never
rounded). --json prints one JSON document instead:
  {"kind":"ph","scenario":"ssp245","step":0.05,"grid_id":…,"lat":…,"lon":…,
   "batch_id":"…","computed_at":"…","model_digest":"…","years":[2021,…],"values":[…]}
where lat and lon are the cell's centre.

Each kind has its own series (--scenario) and years: 'enqueuer models' lists
them. The built-in ph is P(H), the probability that the year's maximum daily
Tmax exceeds 35 °C, and hazard the 100-year return level in °C, both with the
series ssp126, ssp245 and ssp585. A cell no batch has computed yet exits 1
with a message naming the steps that hold values. Of the batch settings below
only --step matters here; use the step the batch ran at.`,
		example: `  enqueuer results --kind ph --scenario ssp245 --lat 37.53 --lon 127.02
  enqueuer results --kind hazard --scenario ssp585 --lat 35.1 --lon 129.04 --json
  enqueuer results --kind ph --scenario ssp126 --lat 37.53 --lon 127.02 --step 0.02`,
		run: runResults,
	})
}

// resultsReport is the --json output of results.
type resultsReport struct {
	Kind       string    `json:"kind"`
	Scenario   string    `json:"scenario"`
	Step       float64   `json:"step"`
	GridID     int64     `json:"grid_id"`
	Lat        float64   `json:"lat"`
	Lon        float64   `json:"lon"`
	BatchID    string    `json:"batch_id"`
	ComputedAt time.Time `json:"computed_at"`
	// ModelDigest is the sha256 of the declaration of the model that made
	// the batch (its provenance); empty for a batch without one.
	ModelDigest string    `json:"model_digest"`
	Years       []int     `json:"years"`
	Values      []float64 `json:"values"`
}

func runResults(ctx context.Context, e *env, args []string) error {
	c := commandNamed("results")
	var (
		kind, scenario, lat, lon, batchID string
		asJSON                            bool
	)
	cfg, _, done, err := parse(c, e, args, true, func(s *config.Set) {
		s.String(&kind, "kind", "", "", "model `KIND`: ph, hazard or one of 'enqueuer models' (required without --batch)")
		s.String(&batchID, "batch", "", "", "read this batch's own rows (published or not) instead of the published values")
		s.String(&scenario, "scenario", "", "", "`SCENARIO`: one of the kind's series, such as ssp245 ('enqueuer models' lists them) (required)")
		s.String(&lat, "lat", "", "", "`LAT`: latitude in degrees of a point in the cell (required)")
		s.String(&lon, "lon", "", "", "`LON`: longitude in degrees of a point in the cell (required)")
		s.Bool(&asJSON, "json", "", false, "print one JSON document instead of YEAR VALUE lines")
	})
	if done {
		return err
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	step := cfg.Batch.Step
	var batch *store.Batch
	if batchID != "" {
		b, err := st.GetBatch(ctx, batchID)
		switch {
		case errors.Is(err, store.ErrBatchNotFound):
			return fmt.Errorf("--batch: no batch %s (see 'enqueuer list')", batchID)
		case err != nil:
			return err
		case kind != "" && kind != b.Kind:
			return fmt.Errorf("--kind %s: batch %s is of kind %s", kind, batchID, b.Kind)
		}
		kind, step, batch = b.Kind, b.Step, &b
	}
	cell, l, err := resultsCell(e.models, batch, step, kind, scenario, lat, lon)
	if err != nil {
		return err
	}
	var ss store.StoredSeries
	if batchID != "" {
		ss, err = st.ReadBatchSeries(ctx, batchID, l.Step, cell.GridID, scenario)
	} else {
		ss, err = st.ReadSeries(ctx, kind, l.Step, cell.GridID, scenario)
	}
	switch {
	case errors.Is(err, store.ErrNoSeries) && batchID != "":
		return fmt.Errorf("batch %s has no %s series for cell %d (lat %s, lon %s) at step %s scenario %s (%v)",
			batchID, kind, cell.GridID, centreText(cell.Lat), centreText(cell.Lon), strconv.FormatFloat(l.Step, 'g', -1, 64), scenario, err)
	case errors.Is(err, store.ErrNoSeries):
		return fmt.Errorf("no published %s series for cell %d (lat %s, lon %s) at step %s scenario %s; %s; run a %s batch over it (a batch is published when it succeeds), or publish an ended one with 'enqueuer publish ID'",
			kind, cell.GridID, centreText(cell.Lat), centreText(cell.Lon), strconv.FormatFloat(l.Step, 'g', -1, 64), scenario, publishedSteps(ctx, st, kind), kind)
	case err != nil:
		return err
	}
	years := make([]int, len(ss.Values))
	for i := range years {
		years[i] = ss.FirstYear + i
	}
	if asJSON {
		digest := ""
		if from, err := st.GetBatch(ctx, ss.BatchID); err == nil && from.Provenance != nil {
			digest = from.Provenance.Model.Digest
		}
		return json.NewEncoder(e.stdout).Encode(resultsReport{
			ModelDigest: digest,
			Kind:        kind,
			Scenario:    scenario,
			Step:        l.Step,
			GridID:      cell.GridID,
			Lat:         cell.Lat,
			Lon:         cell.Lon,
			BatchID:     ss.BatchID,
			ComputedAt:  ss.ComputedAt.UTC(),
			Years:       years,
			Values:      ss.Values,
		})
	}
	w := bufio.NewWriter(e.stdout)
	var line []byte
	for i, v := range ss.Values {
		line = strconv.AppendInt(line[:0], int64(years[i]), 10)
		line = append(line, ' ')
		line = strconv.AppendFloat(line, v, 'g', -1, 64)
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return err
		}
	}
	return w.Flush()
}

// resultsCell checks the arguments of results and returns the cell of the
// lattice of step that contains the point lat, lon. With a batch, the
// scenario must be one the batch computed (Batch.SeriesOf).
func resultsCell(models *model.Set, batch *store.Batch, step float64, kind, scenario, lat, lon string) (grid.Cell, grid.Lattice, error) {
	if kind == "" {
		return grid.Cell{}, grid.Lattice{}, fmt.Errorf("--kind is required: one of %s (see --help)", strings.Join(models.Kinds(), ", "))
	}
	spec, err := models.Spec(kind)
	if err != nil {
		return grid.Cell{}, grid.Lattice{}, fmt.Errorf("--kind: %w", err)
	}
	known := spec.Series
	if batch != nil {
		known = batch.SeriesOf(spec).Names
	}
	switch {
	case scenario == "":
		return grid.Cell{}, grid.Lattice{}, fmt.Errorf("--scenario is required: one of %s (see --help)", strings.Join(known, ", "))
	case !slices.Contains(known, scenario):
		return grid.Cell{}, grid.Lattice{}, fmt.Errorf("--scenario: unknown scenario %q (known: %s)", scenario, strings.Join(known, ", "))
	}
	la, err := parseDegrees("lat", "latitude", lat, "37.53")
	if err != nil {
		return grid.Cell{}, grid.Lattice{}, err
	}
	lo, err := parseDegrees("lon", "longitude", lon, "127.02")
	if err != nil {
		return grid.Cell{}, grid.Lattice{}, err
	}
	l, err := grid.NewLattice(step)
	if err != nil {
		return grid.Cell{}, grid.Lattice{}, err
	}
	cell, err := l.CellAt(la, lo)
	if err != nil {
		return grid.Cell{}, grid.Lattice{}, err
	}
	return cell, l, nil
}

// parseDegrees parses v, the value of the flag --name (a what), as a finite
// number of degrees.
func parseDegrees(name, what, v, example string) (float64, error) {
	if strings.TrimSpace(v) == "" {
		return 0, fmt.Errorf("--%s is required: a %s in degrees such as %s (see --help)", name, what, example)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("--%s %q: want a %s in degrees such as %s", name, v, what, example)
	}
	return f, nil
}

// centreText formats a cell centre for prose: rounded to 1e-9 degrees so that
// 37.525000000000006 reads 37.525. Scripts get the exact value from --json.
func centreText(v float64) string {
	return strconv.FormatFloat(math.Round(v*1e9)/1e9, 'g', -1, 64)
}

// publishedSteps says at which steps kind has published values, for a
// reader who asked at another: "published at steps 0.05, 0.01 (--step)".
func publishedSteps(ctx context.Context, st *store.Store, kind string) string {
	steps, err := st.PublishedSteps(ctx, kind)
	switch {
	case err != nil:
		return "the steps with values could not be read (" + err.Error() + ")"
	case len(steps) == 0:
		return kind + " has no published values at any step"
	}
	text := make([]string, len(steps))
	for i, s := range steps {
		text[i] = strconv.FormatFloat(s, 'g', -1, 64)
	}
	return kind + " has published values at step " + strings.Join(text, ", ") + " (--step)"
}
