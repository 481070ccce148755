package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"time"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "publish",
		usage:   "BATCH_ID [--despite-checks --reason TEXT]",
		summary: "make what an ended batch computed the published values of its kind",
		about: `A batch writes its rows where no reader of the published results sees them
(ph_timeseries, hazard_timeseries, … show, for each cell, the values of the batch
published last over it). A batch that ends succeeded is published with its end,
in one transaction: readers see all old or all new values, never a mix. A batch
that ends otherwise (partial, failed, timed_out, cancelled) publishes nothing.
'enqueuer publish ID' publishes what such a batch computed: the cells it computed
take its values, the cells it missed keep their earlier ones. A running batch is
refused. Publishing a published batch again makes its values the latest again.
A partial batch healed to succeeded by 'enqueuer dlq requeue' is published then.
When the kind declares checks (models file 'checks:'; the built-in ph has
range [0, 1]), they run on the batch's rows first, for a partial batch too:
a batch that fails them is not published (exit 7) unless --despite-checks,
which publishes it and records --reason (required) and who asked.`,
		example: "  enqueuer publish ph-20261122-041503-3fa9c1\n  enqueuer status ph-20261122-041503-3fa9c1   # published: yes, at …\n" +
			"  enqueuer publish ph-20261122-041503-3fa9c1 --despite-checks --reason \"values above 1 are a known artefact of run 12\"",
		run: runPublish,
	})
	register(command{
		name:    "prune",
		usage:   "[--kind KIND] [--dry-run]",
		summary: "drop the own rows of old batches that retention no longer keeps",
		about: `Every batch keeps its own rows (read them with 'enqueuer results --batch ID')
until retention drops them: per kind, it keeps every batch whose rows the
published values still show, and the GRIDBATCH_KEEP_BATCHES (default 3) newest of
the other ended batches. Older ones are dropped whole (DROP TABLE, never row by
row); no published value changes. The workers' reconciler does this every
minute; prune does it now. --dry-run lists what would be dropped.`,
		example: "  enqueuer prune --dry-run\n  enqueuer prune --kind ph --keep-batches 1",
		run:     runPrune,
	})
}

func runPublish(ctx context.Context, e *env, args []string) error {
	var r batch.PublishRequest
	cfg, set, done, err := parse(commandNamed("publish"), e, args, false, func(s *config.Set) {
		s.Bool(&r.DespiteChecks, "despite-checks", "", false, "publish even when the kind's declared checks fail (needs --reason)")
		s.String(&r.Reason, "reason", "", "", "why it is published despite its checks; recorded with it")
	})
	if done {
		return err
	}
	if len(set.Args()) != 1 {
		return errors.New("publish takes one batch ID (see 'enqueuer list')")
	}
	id := set.Args()[0]
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	r.By = operator()
	start := time.Now()
	b, err := batch.Publish(ctx, st, e.models, id, r)
	var held *batch.HeldError
	switch {
	case errors.Is(err, store.ErrBatchNotFound):
		return fmt.Errorf("no batch %s (see 'enqueuer list')", id)
	case errors.As(err, &held):
		return cli.WithCode(cli.ExitHeld, err)
	case err != nil:
		return err
	}
	if b.PublishReason != nil && r.DespiteChecks {
		fmt.Fprintf(e.stderr, "its checks failed (%s); published despite them by %s: %s\n", b.Checks.Declared, r.By, r.Reason)
	}
	fmt.Fprintf(e.stderr, "published batch %s (%s, %s): %s cells of %s computed; the published values of %s_timeseries show them from now on (%.2f s)\n",
		b.ID, b.Kind, b.Status, fmt.Sprint(b.CompletedCells), fmt.Sprint(b.TotalCells), b.Kind, time.Since(start).Seconds())
	return nil
}

func runPrune(ctx context.Context, e *env, args []string) error {
	var kind string
	var dryRun bool
	cfg, set, done, err := parse(commandNamed("prune"), e, args, false, func(s *config.Set) {
		s.String(&kind, "kind", "", "", "only batches of this kind")
		s.Bool(&dryRun, "dry-run", "", false, "list what would be dropped; drop nothing")
	})
	if done {
		return err
	}
	if len(set.Args()) > 0 {
		return fmt.Errorf("prune takes no arguments (got %q)", set.Args()[0])
	}
	if kind != "" {
		if _, err := e.models.Spec(kind); err != nil {
			return fmt.Errorf("--kind: %w", err)
		}
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	dropped, err := batch.Prune(ctx, st, kind, cfg.KeepBatches, dryRun)
	if err != nil {
		return err
	}
	verb := "dropped"
	if dryRun {
		verb = "would drop"
	}
	for _, p := range dropped {
		what := p.Status
		if p.Published {
			what += ", published and superseded"
		}
		fmt.Fprintf(e.stdout, "%s\t%s\t%s\t%s\n", p.ID, p.Kind, what, p.StartedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(e.stderr, "%s the rows of %d batch(es); keeping %d per kind besides the published ones (GRIDBATCH_KEEP_BATCHES)\n",
		verb, len(dropped), cfg.KeepBatches)
	return nil
}

// operator names who runs this command, as user@host, for the record of
// a publication despite failed checks.
func operator() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, _ := os.Hostname()
	return name + "@" + host
}
