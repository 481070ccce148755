package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/grid"
)

func init() {
	register(command{
		name:    "seed",
		usage:   "[--bbox LON_MIN,LAT_MIN,LON_MAX,LAT_MAX] [--step DEGREES] [--json]",
		summary: "write the model inputs (cell_params) of every cell of a bbox; safe to re-run",
		about: `Writes the reference model's inputs (mu0, sigma, xi of the cell centre) to
cell_params for every cell of the lattice of --step whose centre lies in --bbox.
Batches read their inputs from there, so seed a grid before running a batch on it.

Seeding is idempotent: cells already present are left alone, so re-running the
same command writes 0 new cells, and an interrupted seed is finished by running
it again. Cells are written in transactions of 50,000 (binary COPY, then one
INSERT … ON CONFLICT DO NOTHING); a progress line per transaction goes to
standard error, then a summary line. Standard output stays empty unless --json
is given, which prints one JSON document:
  {"step":0.05,"bbox":"124,33,132,39","cells":19200,"inserted":19200,"already_present":0}

The schema must exist: run 'enqueuer migrate' first.`,
		example: `  enqueuer seed --bbox 124,33,132,39 --step 0.05      # the Korea box: 19,200 cells
  enqueuer seed --bbox 124,33,132,39 --step 0.02 --json
  GRIDBATCH_GRID_BBOX=-10,35,30,60 enqueuer seed --max-cells 2000000`,
		run: runSeed,
	})
}

// seedReport is the --json output of seed.
type seedReport struct {
	Step           float64 `json:"step"`
	BBox           string  `json:"bbox"`
	Cells          int     `json:"cells"`
	Inserted       int64   `json:"inserted"`
	AlreadyPresent int64   `json:"already_present"`
}

func runSeed(ctx context.Context, e *env, args []string) error {
	c := commandNamed("seed")
	var asJSON bool
	cfg, _, done, err := parse(c, e, args, true, func(s *config.Set) {
		s.Bool(&asJSON, "json", "", false, "print the outcome as one JSON document on standard output")
	})
	if done {
		return err
	}
	r, err := seedRegion(cfg.Batch)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()

	total := r.NumCells()
	step := strconv.FormatFloat(r.Lattice.Step, 'g', -1, 64)
	inserted, err := st.SeedCells(ctx, r, func(done int) {
		if done < total {
			fmt.Fprintf(e.stderr, "seeding: %d of %d cells done\n", done, total)
		}
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("seed stopped after writing %d new cells; run the same command again to finish: %w", inserted, err)
		}
		return err
	}
	fmt.Fprintf(e.stderr, "seeded %d new cells (%d in bbox %s at step %s; %d already present)\n",
		inserted, total, r.BBox, step, int64(total)-inserted)
	if !asJSON {
		return nil
	}
	return json.NewEncoder(e.stdout).Encode(seedReport{
		Step:           r.Lattice.Step,
		BBox:           r.BBox.String(),
		Cells:          total,
		Inserted:       inserted,
		AlreadyPresent: int64(total) - inserted,
	})
}

// seedRegion returns the region of the --bbox and --step settings, refusing
// more than --max-cells cells. Its errors are the grid package's one-line
// messages.
func seedRegion(b config.Batch) (grid.Region, error) {
	return grid.ParseRegion(b.Step, b.BBox, b.MaxCells)
}
