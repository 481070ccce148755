package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/model/process"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "verify",
		usage:   "BATCH_ID [--cells N|all]",
		summary: "recompute a sample of a batch's cells and compare them bit for bit",
		about: `Says first whether the model (its declaration and program files) and the
inputs changed since the batch was planned, by the digests of its provenance,
so that a difference is known to be expected or not. Then recomputes --cells
cells of the batch (default 100, spread evenly over its cells; all with
--cells all) with the model and inputs as they are now, in this process (a
model process is started for a command model), and compares each value with
the batch's own, bit for bit. Exit 0 when every value is the same, 1 otherwise.`,
		example: "  enqueuer verify ph-20261203-041503-3fa9c1\n  enqueuer verify ph-20261203-041503-3fa9c1 --cells all",
		run:     runVerify,
	})
}

func runVerify(ctx context.Context, e *env, args []string) error {
	var cells string
	cfg, set, done, err := parse(commandNamed("verify"), e, args, false, func(s *config.Set) {
		s.String(&cells, "cells", "", "100", "how many cells to recompute, or all")
	})
	if done {
		return err
	}
	if len(set.Args()) != 1 {
		return errors.New("verify takes one batch ID (see 'enqueuer list')")
	}
	n := math.MaxInt
	if cells != "all" {
		if n, err = strconv.Atoi(cells); err != nil || n < 1 {
			return fmt.Errorf("--cells %q: want a number of cells, or all", cells)
		}
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	b, err := st.GetBatch(ctx, set.Args()[0])
	if errors.Is(err, store.ErrBatchNotFound) {
		return fmt.Errorf("no batch %s (see 'enqueuer list')", set.Args()[0])
	}
	if err != nil {
		return err
	}
	spec, err := e.models.Spec(b.Kind)
	if err != nil {
		return err
	}
	r, err := b.Region()
	if err != nil {
		return err
	}
	if p := b.Provenance; p == nil {
		fmt.Fprintf(e.stdout, "batch %s has no provenance (planned before gridbatch recorded it): whether its model or inputs changed is unknown\n", b.ID)
	} else {
		now, err := batch.ModelProvenance(spec)
		if err != nil {
			return err
		}
		for _, line := range batch.ModelChanges(p.Model, now) {
			fmt.Fprintf(e.stdout, "%s\n", printable(line))
		}
		in, err := st.InputsDigest(ctx, r, p.Inputs.Columns)
		if err != nil {
			return err
		}
		if in.SHA256 == p.Inputs.SHA256 {
			fmt.Fprintf(e.stdout, "inputs: unchanged (sha256 %s)\n", in.SHA256)
		} else {
			fmt.Fprintf(e.stdout, "inputs: CHANGED since the batch (sha256 %s, now %s)\n", p.Inputs.SHA256, in.SHA256)
		}
	}
	rt := process.New(e.models, slog.New(slog.NewTextHandler(io.Discard, nil)), process.Config{Concurrency: 1})
	defer rt.Close()
	res, err := batch.Verify(ctx, st, rt, spec, b, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "recomputed %d cells: %d values of %d the same bit for bit, %d differ\n", res.Cells, res.Same, res.Values, res.Values-res.Same)
	for _, d := range res.First {
		fmt.Fprintf(e.stdout, "  cell %d %s %d: batch %s, now %s\n", d.GridID, printable(d.Series), d.Year, g(d.Was), g(d.Now))
	}
	if res.Same != res.Values {
		return cli.WithCode(cli.ExitError, nil)
	}
	return nil
}
