package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "status",
		usage:   "[BATCH_ID] [--json]",
		summary: "show a batch (the latest when no ID): status, counts, figures",
		about: `Shows one batch: its status, chunk and cell counts, and once ended its
figures (duration, success rate, average task time, peak worker memory, DB
connection errors). Without an ID, the latest batch (of --kind when given).
The exit code is the batch's: 0 succeeded or running, 3 partial, 4 timed out
or failed, 6 cancelled, 7 held (its declared checks failed: the failed checks
are shown with their numbers and worst values). Its provenance (gridbatch's
version, the model's declaration and files, the inputs' digest) is shown
too, under "provenance" in --json, digests as lowercase hex. --json prints one JSON document (snake_case keys,
numbers at full precision).`,
		example: "  enqueuer status\n  enqueuer status ph-20261122-041503-3fa9c1 --json",
		run:     runStatus,
	})
	register(command{
		name:    "list",
		usage:   "[--kind K] [--status S] [--limit N] [--json]",
		summary: "list recent batches, newest first",
		about:   `Lists recent batches with their status and counts, newest first.`,
		example: "  enqueuer list\n  enqueuer list --kind ph --status partial --json",
		run:     runList,
	})
	register(command{
		name:    "cancel",
		usage:   "BATCH_ID",
		summary: "cancel a running batch and release its lock",
		about: `Cancels a running batch: its queued chunk tasks are removed, running ones are
cancelled, the remaining chunks are recorded cancelled, and the kind's lock is
released at once. Results already written stay.`,
		example: "  enqueuer cancel ph-20261122-041503-3fa9c1",
		run:     runCancel,
	})
}

// batchJSON is the --json form of a batch.
type batchJSON struct {
	store.Batch
	BBox        [4]float64     `json:"bbox"`
	ChunkCounts map[string]int `json:"chunk_counts,omitempty"`
}

func toJSON(b store.Batch) batchJSON {
	return batchJSON{Batch: b, BBox: [4]float64{b.BBox.LonMin, b.BBox.LatMin, b.BBox.LonMax, b.BBox.LatMax}}
}

func runStatus(ctx context.Context, e *env, args []string) error {
	var asJSON bool
	var kind string
	cfg, set, done, err := parse(commandNamed("status"), e, args, false, func(s *config.Set) {
		s.Bool(&asJSON, "json", "", false, "print one JSON document")
		s.String(&kind, "kind", "", "", "with no ID: the latest batch of this kind")
	})
	if done {
		return err
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	var b store.Batch
	switch rest := set.Args(); len(rest) {
	case 0:
		b, err = st.LatestBatch(ctx, kind)
		if errors.Is(err, store.ErrBatchNotFound) {
			return errors.New("no batch yet; start one with 'enqueuer run --kind ph'")
		}
	case 1:
		b, err = st.GetBatch(ctx, rest[0])
		if errors.Is(err, store.ErrBatchNotFound) {
			return fmt.Errorf("no batch %q; 'enqueuer list' shows the recent ones", rest[0])
		}
	default:
		return fmt.Errorf("status takes one batch ID, got %d arguments", len(rest))
	}
	if err != nil {
		return err
	}
	counts, err := st.ChunkCounts(ctx, b.ID)
	if err != nil {
		return err
	}
	if b.Provenance != nil {
		if b.Provenance.Processes, err = st.ChunkProcesses(ctx, b.ID); err != nil {
			return err
		}
	}
	if asJSON {
		j := toJSON(b)
		j.ChunkCounts = counts
		if err := writeJSON(e.stdout, j); err != nil {
			return err
		}
	} else {
		printSummary(e.stdout, b)
		fmt.Fprintf(e.stdout, "  chunks now:      %d pending, %d succeeded, %d failed, %d timed out, %d cancelled\n",
			counts[store.ChunkPending], counts[store.ChunkSucceeded], counts[store.ChunkFailed],
			counts[store.ChunkTimedOut], counts[store.ChunkCancelled])
	}
	return statusExit(b)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printSummary writes a batch's figures for people.
func printSummary(w io.Writer, b store.Batch) {
	orDash := func(v *float64, format func(float64) string) string {
		if v == nil {
			return "-"
		}
		return format(*v)
	}
	ended := "-"
	if b.EndedAt != nil {
		ended = b.EndedAt.Format(time.RFC3339)
	}
	rss := "-"
	if b.PeakWorkerRSSBytes != nil {
		rss = numfmt.Bytes(*b.PeakWorkerRSSBytes)
	}
	n := numfmt.Int[int64]
	fmt.Fprintf(w, "batch %s (%s): %s\n", b.ID, b.Kind, b.Status)
	fmt.Fprintf(w, "  grid:            bbox %s, step %g, %s cells in %s chunks of %s\n", b.BBox, b.Step, n(b.TotalCells), numfmt.Int(b.TotalChunks), numfmt.Int(b.ChunkSize))
	fmt.Fprintf(w, "  started / ended: %s / %s (duration %s)\n", b.StartedAt.Format(time.RFC3339), ended, orDash(b.DurationSeconds, numfmt.Seconds))
	fmt.Fprintf(w, "  chunks:          %s succeeded, %s failed (dead letters), %s timed out, %s cancelled of %s\n",
		numfmt.Int(b.CompletedChunks), numfmt.Int(b.FailedChunks), numfmt.Int(b.TimedOutChunks), numfmt.Int(b.CancelledChunks), numfmt.Int(b.TotalChunks))
	fmt.Fprintf(w, "  cells:           %s succeeded, %s failed, %s timed out of %s\n", n(b.CompletedCells), n(b.FailedCells), n(b.TimedOutCells), n(b.TotalCells))
	fmt.Fprintf(w, "  success rate:    %s; avg task %s; peak worker RSS %s; DB connection errors %s\n",
		orDash(b.SuccessRate, numfmt.Percent), orDash(b.AvgTaskSeconds, numfmt.Seconds), rss, numfmt.Int(b.DBConnErrors))
	if b.Error != nil {
		fmt.Fprintf(w, "  error:           %s\n", cli.Visible(*b.Error))
	}
	fmt.Fprintf(w, "  published:       %s\n", b.Publication())
	printChecks(w, b)
	printProvenance(w, b.Provenance)
	if !b.Ended() {
		fmt.Fprintf(w, "  deadline:        %s; lock expires %s\n", b.DeadlineAt.Format(time.RFC3339), b.LockExpiresAt.Format(time.RFC3339))
	}
}

func runList(ctx context.Context, e *env, args []string) error {
	var asJSON bool
	var kind, status string
	var limit int
	cfg, _, done, err := parse(commandNamed("list"), e, args, false, func(s *config.Set) {
		s.Bool(&asJSON, "json", "", false, "print one JSON document")
		s.String(&kind, "kind", "", "", "only this kind")
		s.String(&status, "status", "", "", "only this status (running, succeeded, partial, failed, timed_out, cancelled)")
		s.Int(&limit, "limit", "", 20, "at most this many")
	})
	if done {
		return err
	}
	if limit < 1 {
		return fmt.Errorf("--limit %d must be at least 1", limit)
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	bs, err := st.ListBatches(ctx, kind, status, limit)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]batchJSON, 0, len(bs))
		for _, b := range bs {
			out = append(out, toJSON(b))
		}
		return writeJSON(e.stdout, map[string]any{"batches": out})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATUS\tCHUNKS DONE/TOTAL\tFAILED\tCELLS\tSTARTED\tDURATION")
	for _, b := range bs {
		dur := "-"
		if b.DurationSeconds != nil {
			dur = (time.Duration(*b.DurationSeconds * float64(time.Second))).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\t%s\n", b.ID, b.Kind, b.Status, b.DoneChunks, b.TotalChunks,
			b.FailedChunks, b.TotalCells, b.StartedAt.Format(time.RFC3339), dur)
	}
	return tw.Flush()
}

func runCancel(ctx context.Context, e *env, args []string) error {
	cfg, set, done, err := parse(commandNamed("cancel"), e, args, false, nil)
	if done {
		return err
	}
	rest := set.Args()
	if len(rest) != 1 {
		return errors.New("cancel takes exactly one batch ID (see 'enqueuer list')")
	}
	c, err := openConn(ctx, cfg.Common, e.stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := c.Batch.Cancel(ctx, rest[0])
	if errors.Is(err, store.ErrBatchNotFound) {
		return fmt.Errorf("no batch %q; 'enqueuer list' shows the recent ones", rest[0])
	}
	if err != nil {
		return err
	}
	if b.ID == "" {
		fmt.Fprintf(e.stderr, "released the orphaned lock of unrecorded batch %s\n", rest[0])
		return nil
	}
	fmt.Fprintf(e.stderr, "cancelled %s: %d chunks done, %d cancelled; the %s lock is released\n", b.ID, b.CompletedChunks+b.FailedChunks, b.CancelledChunks, b.Kind)
	return nil
}

// printChecks writes the report of a batch's declared checks, the failed
// ones with their worst values.
func printChecks(w io.Writer, b store.Batch) {
	r := b.Checks
	if r == nil {
		return
	}
	verdict := "passed"
	if !r.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "  checks:          %s (%s), run %s in %s\n", verdict, printable(r.Declared), r.CheckedAt.Format(time.RFC3339), numfmt.Seconds(r.Seconds))
	for _, c := range r.Checks {
		mark := "ok    "
		if !c.Passed {
			mark = "FAILED"
		}
		fmt.Fprintf(w, "    %s %-12s %s\n", mark, c.Check, printable(c.Text))
		for _, e := range c.Examples {
			was := ""
			if e.Published != nil {
				was = " (published " + e.Published.String() + ")"
			}
			fmt.Fprintf(w, "           cell %d %s %d: %s%s\n", e.GridID, printable(e.Series), e.Year, e.Value, was)
		}
	}
	if b.PublishReason != nil {
		by := "-"
		if b.PublishedBy != nil {
			by = *b.PublishedBy
		}
		fmt.Fprintf(w, "  published despite its checks by %s: %s\n", printable(by), printable(*b.PublishReason))
	}
}

// printable makes the control characters of database text visible
// (\x1b, \n …), so that a value written by a model or a models file cannot
// drive the terminal.
func printable(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// printProvenance writes what made a batch's values.
func printProvenance(w io.Writer, p *store.Provenance) {
	if p == nil { // planned before gridbatch recorded it
		return
	}
	g := p.Gridbatch
	modified := ""
	if g.Modified {
		modified = " (modified)"
	}
	fmt.Fprintf(w, "  provenance:      gridbatch %s, revision %s%s, %s; planned by %s at %s\n",
		printable(g.Version), printable(g.Revision), modified, printable(g.Go), printable(p.PlannedBy), p.PlannedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "    model %s:     declaration sha256 %s\n", printable(p.Model.Kind), p.Model.Digest)
	if p.Model.BuiltinRevision != "" {
		fmt.Fprintf(w, "    built-in model of revision %s\n", printable(p.Model.BuiltinRevision))
	}
	for _, f := range p.Model.Files {
		fmt.Fprintf(w, "    file %s sha256 %s (%s bytes)\n", printable(f.Path), f.SHA256, numfmt.Int(f.Bytes))
	}
	fmt.Fprintf(w, "    inputs (%s) of %s cells: sha256 %s", printable(strings.Join(p.Inputs.Columns, ", ")), numfmt.Int(p.Inputs.Cells), p.Inputs.SHA256)
	if p.Inputs.Missing > 0 {
		fmt.Fprintf(w, ", %s values missing", numfmt.Int(p.Inputs.Missing))
	}
	fmt.Fprintln(w)
	for _, c := range p.Processes {
		fmt.Fprintf(w, "    chunks computed by worker %s, model process %d: %s\n", printable(c.Worker), c.ModelPID, numfmt.Int(c.Chunks))
	}
}
