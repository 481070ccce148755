package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

const dlqAbout = `Works the dead-letter queue. asynq's archive is the DLQ, but it keeps at most
9,999 tasks for 90 days and trims silently, so every task that reaches it is
also recorded in the PostgreSQL table dead_letters: by the worker's error
handler when it archives the task, and by the workers' periodic archive sweep
(GRIDBATCH_DLQ_SWEEP_INTERVAL) for any task no handler recorded. A dead letter
is named by its task ID; a chunk task's ID is BATCH_ID:cNNNNNN. A requeued chunk
keeps its task ID, so a chunk that fails again after a requeue is a second dead
letter of the same ID, one generation up.

Verbs (each answers --help):
  list     [--batch ID] [--kind K] [--open] [--limit N] [--json]   dead letters, most recent first
  show     TASK_ID [--json]                                       one dead letter, every generation
  requeue  (TASK_ID… | --batch ID | --all) [--dry-run]            run failed chunks again with fresh retries
  purge    (TASK_ID… | --batch ID | --older-than D) [--yes]       delete dead letters and their archived copies

An unknown task ID or batch, or a requeue or purge with no selector, exits 1
with nothing changed.`

const dlqExample = `  enqueuer dlq list --batch ph-20261122-041503-3fa9c1
  enqueuer dlq show ph-20261122-041503-3fa9c1:c000017
  enqueuer dlq requeue --batch ph-20261122-041503-3fa9c1 --dry-run
  enqueuer dlq purge --older-than 30d --yes`

func init() {
	register(command{
		name:    "dlq",
		usage:   "list|show|requeue|purge [flags] [args]",
		summary: "the dead-letter queue: list, show, requeue and purge dead letters",
		about:   dlqAbout,
		example: dlqExample,
		run:     runDLQ,
	})
}

// dlqVerbs are the sub-commands of dlq; init fills it (its entries refer to
// functions that read it).
var dlqVerbs []command

func init() {
	dlqVerbs = []command{
		{
			name:  "dlq list",
			usage: "[--batch ID] [--kind K] [--open] [--limit N] [--json]",
			about: `Lists dead letters, the most recent failure first: task ID, requeue
generation, batch and chunk, retries, when it failed, when it was requeued
(- if not), and the first line of its last error. --batch and --kind (ph,
hazard) keep the dead letters of one batch or of batches of one kind; --open
keeps those not requeued. At most --limit are listed; the total goes to
standard error. --json prints one JSON document instead (snake_case keys):
  {"total": N, "dead_letters": [{"task_id": …, "generation": 0, "type": …,
   "queue": …, "batch_id": …, "chunk": …, "payload": …, "last_error": …,
   "retries": …, "failed_at": …, "requeued_at": null, "recorded_at": …}, …]}`,
			example: "  enqueuer dlq list\n  enqueuer dlq list --batch ph-20261122-041503-3fa9c1 --open --json",
			run:     runDLQList,
		},
		{
			name:  "dlq show",
			usage: "TASK_ID [--json]",
			about: `Shows every dead letter of one task ID, newest generation first: its type
and queue, batch and chunk, retries, failure, requeue and record times, the
whole last error and the payload. An unknown task ID exits 1.`,
			example: "  enqueuer dlq show ph-20261122-041503-3fa9c1:c000017",
			run:     runDLQShow,
		},
		{
			name:  "dlq requeue",
			usage: "(TASK_ID… | --batch ID | --all) [--dry-run]",
			about: `Runs dead-lettered chunks again. For each selected dead letter not requeued
yet (for a task ID: its newest generation), in one transaction: the batch and
chunk are checked, the archived copy is deleted from asynq's archive, a fresh
chunk task is enqueued — same task ID, fresh retry count (--max-retry,
--task-timeout: the workers' settings), requeue generation one up — and the dead
letter is marked requeued. In a running batch the chunk goes back to pending and
the batch waits for it; in an ended batch the chunk stays failed until its task
succeeds, and then the batch's counts, figures and status follow: a partial
batch whose dead letters all succeed becomes succeeded.

Fix the cause first (missing inputs: 'enqueuer seed' or 'enqueuer import', as
the dead letter's error says): a chunk that fails again is a new dead letter,
one generation up. Only chunk tasks of a
recorded batch whose chunk is failed can be requeued; any other is reported
with the reason and left alone (purge it).

One line per dead letter goes to standard output. The exit code is 1 when an
ID is unknown (nothing is changed), or when any selected dead letter was not
requeued; 0 otherwise. --dry-run checks and reports, changing nothing.`,
			example: `  enqueuer dlq requeue --batch ph-20261122-041503-3fa9c1
  enqueuer dlq requeue ph-20261122-041503-3fa9c1:c000017 ph-20261122-041503-3fa9c1:c000018
  enqueuer dlq requeue --all --dry-run`,
			run: runDLQRequeue,
		},
		{
			name:  "dlq purge",
			usage: "(TASK_ID… | --batch ID | --older-than D) [--yes]",
			about: `Deletes dead letters: every generation of the given task IDs, those of one
batch, or those that failed more than --older-than ago (a duration such as 36h,
or days: 30d). A task ID left with no dead letter also loses its archived copy,
if asynq's archive still holds it; a requeued task in the queue is left alone.

It asks for confirmation on a terminal; without a terminal it refuses unless
--yes is given. With no selector, or an unknown task ID or batch, it exits 1
and deletes nothing.`,
			example: `  enqueuer dlq purge ph-20261122-041503-3fa9c1:c000017
  enqueuer dlq purge --batch ph-20261122-041503-3fa9c1 --yes
  enqueuer dlq purge --older-than 90d --yes`,
			run: runDLQPurge,
		},
	}
}

func runDLQ(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		dlqUsage(e.stdout)
		if len(args) == 0 {
			return cli.WithCode(cli.ExitError, nil)
		}
		return nil
	}
	for _, c := range dlqVerbs {
		if c.name == "dlq "+args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	return fmt.Errorf("unknown dlq verb %q: use list, show, requeue or purge (see 'enqueuer dlq --help')", args[0])
}

func dlqUsage(w io.Writer) {
	fmt.Fprintf(w, "Usage: enqueuer dlq VERB [flags] [args]\n\n%s\n\nExamples:\n%s\n", dlqAbout, dlqExample)
}

func dlqVerb(name string) command {
	for _, c := range dlqVerbs {
		if c.name == "dlq "+name {
			return c
		}
	}
	panic("no dlq verb " + name)
}

// deadLetterJSON is the --json form of a dead letter: the payload as JSON
// when it is JSON, as a string otherwise.
type deadLetterJSON struct {
	store.DeadLetter
	Payload json.RawMessage `json:"payload"`
}

func toDeadLetterJSON(d store.DeadLetter) deadLetterJSON {
	p := json.RawMessage(d.Payload)
	if !json.Valid(p) {
		p, _ = json.Marshal(string(d.Payload))
	}
	return deadLetterJSON{DeadLetter: d, Payload: p}
}

func runDLQList(ctx context.Context, e *env, args []string) error {
	var (
		batchID, kind string
		open, asJSON  bool
		limit         int
	)
	cfg, set, done, err := parse(dlqVerb("list"), e, args, false, func(s *config.Set) {
		s.String(&batchID, "batch", "", "", "only the dead letters of this batch `ID`")
		s.String(&kind, "kind", "", "", "only the dead letters of batches of this kind (see 'enqueuer models')")
		s.Bool(&open, "open", "", false, "only the dead letters not requeued")
		s.Int(&limit, "limit", "", 100, "list at most this many")
		s.Bool(&asJSON, "json", "", false, "print one JSON document")
	})
	if done {
		return err
	}
	if len(set.Args()) > 0 {
		return fmt.Errorf("dlq list takes no arguments (got %q); to see one dead letter: enqueuer dlq show TASK_ID", set.Args()[0])
	}
	if limit < 1 {
		return fmt.Errorf("--limit %d must be at least 1", limit)
	}
	if kind != "" {
		if !slices.Contains(e.models.Kinds(), kind) {
			return fmt.Errorf("--kind %q: use one of %s", kind, strings.Join(e.models.Kinds(), ", "))
		}
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	ds, total, err := st.ListDeadLetters(ctx, store.DeadLetterFilter{BatchID: batchID, Kind: kind, Open: open}, limit)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]deadLetterJSON, 0, len(ds))
		for _, d := range ds {
			out = append(out, toDeadLetterJSON(d))
		}
		return writeJSON(e.stdout, map[string]any{"total": total, "dead_letters": out})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK ID\tGEN\tBATCH\tCHUNK\tCELL\tRETRIES\tFAILED AT\tREQUEUED AT\tLAST ERROR")
	for _, d := range ds {
		b, c, cell := "-", "-", "-"
		if d.BatchID != nil {
			b, c = *d.BatchID, strconv.Itoa(*d.Chunk)
		}
		if d.GridID != nil {
			cell = strconv.FormatInt(*d.GridID, 10)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", cli.Visible(d.TaskID), d.Generation, cli.Visible(b), c, cell, d.Retries,
			d.FailedAt.UTC().Format(time.RFC3339), timeOrDash(d.RequeuedAt), oneLine(d.LastError, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "%d of %d dead letters\n", len(ds), total)
	return nil
}

func runDLQShow(ctx context.Context, e *env, args []string) error {
	var asJSON bool
	cfg, set, done, err := parse(dlqVerb("show"), e, args, false, func(s *config.Set) {
		s.Bool(&asJSON, "json", "", false, "print one JSON document")
	})
	if done {
		return err
	}
	if len(set.Args()) != 1 {
		return errors.New("dlq show takes one task ID (see 'enqueuer dlq list')")
	}
	id := set.Args()[0]
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	ds, err := st.DeadLettersOf(ctx, id)
	if err != nil {
		return err
	}
	if len(ds) == 0 {
		return fmt.Errorf("no dead letter with task ID %q; 'enqueuer dlq list' shows them", id)
	}
	if asJSON {
		out := make([]deadLetterJSON, 0, len(ds))
		for _, d := range ds {
			out = append(out, toDeadLetterJSON(d))
		}
		return writeJSON(e.stdout, map[string]any{"dead_letters": out})
	}
	for i, d := range ds {
		if i > 0 {
			fmt.Fprintln(e.stdout)
		}
		fmt.Fprintf(e.stdout, "dead letter %s, generation %d\n", cli.Visible(d.TaskID), d.Generation)
		fmt.Fprintf(e.stdout, "  type:        %s (queue %s)\n", cli.Visible(d.Type), cli.Visible(d.Queue))
		if d.BatchID != nil {
			fmt.Fprintf(e.stdout, "  batch:       %s, chunk %d\n", cli.Visible(*d.BatchID), *d.Chunk)
		}
		if d.Hi > 0 {
			fmt.Fprintf(e.stdout, "  cells:       %d-%d of the chunk (a part of it, split around failing cells)\n", d.Lo, d.Hi)
		}
		if d.GridID != nil {
			fmt.Fprintf(e.stdout, "  cell:        grid_id %d\n", *d.GridID)
		}
		fmt.Fprintf(e.stdout, "  retries:     %d\n", d.Retries)
		fmt.Fprintf(e.stdout, "  failed at:   %s\n", d.FailedAt.UTC().Format(time.RFC3339))
		fmt.Fprintf(e.stdout, "  requeued at: %s\n", timeOrDash(d.RequeuedAt))
		fmt.Fprintf(e.stdout, "  recorded at: %s\n", d.RecordedAt.UTC().Format(time.RFC3339))
		fmt.Fprintf(e.stdout, "  last error:  %s\n", cli.Visible(d.LastError))
		fmt.Fprintf(e.stdout, "  payload:     %s\n", cli.Visible(string(toDeadLetterJSON(d).Payload)))
	}
	return nil
}

func runDLQRequeue(ctx context.Context, e *env, args []string) error {
	var (
		batchID     string
		all, dryRun bool
		maxRetry    int
		timeout     time.Duration
	)
	cfg, set, done, err := parse(dlqVerb("requeue"), e, args, false, func(s *config.Set) {
		s.String(&batchID, "batch", "", "", "requeue the open dead letters of this batch `ID`")
		s.Bool(&all, "all", "", false, "requeue every open dead letter")
		s.Bool(&dryRun, "dry-run", "", false, "check and report what would be requeued; change nothing")
		s.Int(&maxRetry, "max-retry", "GRIDBATCH_MAX_RETRY", 5, "retries the requeued task gets before it is dead-lettered again")
		s.Duration(&timeout, "task-timeout", "GRIDBATCH_TASK_TIMEOUT", 5*time.Minute, "bound on one run of the requeued task")
	})
	if done {
		return err
	}
	sel := dlq.Selector{TaskIDs: set.Args(), BatchID: batchID, All: all}
	if n := btoi(len(sel.TaskIDs) > 0) + btoi(batchID != "") + btoi(all); n != 1 {
		return errors.New("dlq requeue needs exactly one of: TASK_ID…, --batch ID, --all (see 'enqueuer dlq requeue --help')")
	}
	if maxRetry < 0 || maxRetry > 100 {
		return fmt.Errorf("GRIDBATCH_MAX_RETRY=%d must be between 0 and 100", maxRetry)
	}
	if timeout <= 0 {
		return fmt.Errorf("GRIDBATCH_TASK_TIMEOUT=%s must be positive, e.g. 5m", timeout)
	}
	c, err := openConn(ctx, cfg.Common, e.stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	dq, err := c.DLQ(c.NewBroker(tasks.ChunkOptions{MaxRetry: tasks.Retries(maxRetry), Timeout: timeout}), dlq.Config{})
	if err != nil {
		return err
	}
	results, err := dq.Requeue(ctx, sel, dryRun)
	if err != nil {
		return dlqError(err)
	}
	verb := "requeued"
	if dryRun {
		verb = "would requeue"
	}
	failed := 0
	for _, r := range results {
		d := r.DeadLetter
		if r.Err != nil {
			failed++
			fmt.Fprintf(e.stdout, "not requeued %s (generation %d): %s\n", cli.Visible(d.TaskID), d.Generation, cli.Visible(r.Err.Error()))
			continue
		}
		note := "its batch is " + r.Batch.Status + "; the chunk stays failed until the task succeeds"
		if r.Reopened || r.Batch.Status == store.StatusRunning {
			note = "its batch is running; the chunk is pending again"
		}
		fmt.Fprintf(e.stdout, "%s %s: batch %s chunk %d, generation %d (%s)\n", verb, d.TaskID, *d.BatchID, *d.Chunk, d.Generation+1, note)
	}
	switch {
	case len(results) == 0:
		fmt.Fprintln(e.stderr, "nothing to requeue: no open dead letters selected")
	case failed > 0:
		return fmt.Errorf("%d of %d dead letters not requeued (reasons above)", failed, len(results))
	default:
		fmt.Fprintf(e.stderr, "%s %d dead letters\n", verb, len(results))
	}
	return nil
}

func runDLQPurge(ctx context.Context, e *env, args []string) error {
	var (
		batchID, older string
		yes            bool
	)
	cfg, set, done, err := parse(dlqVerb("purge"), e, args, false, func(s *config.Set) {
		s.String(&batchID, "batch", "", "", "purge the dead letters of this batch `ID`")
		s.String(&older, "older-than", "", "", "purge the dead letters that failed longer ago than this `D` (36h, 30d)")
		s.Bool(&yes, "yes", "", false, "do not ask for confirmation")
	})
	if done {
		return err
	}
	sel := dlq.Selector{TaskIDs: set.Args(), BatchID: batchID}
	if older != "" {
		if sel.OlderThan, err = parseAge(older); err != nil {
			return err
		}
	}
	if n := btoi(len(sel.TaskIDs) > 0) + btoi(batchID != "") + btoi(older != ""); n != 1 {
		return errors.New("dlq purge needs exactly one of: TASK_ID…, --batch ID, --older-than D; nothing was purged (see 'enqueuer dlq purge --help')")
	}
	c, err := openConn(ctx, cfg.Common, e.stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	dq, err := c.DLQ(c.NewBroker(tasks.ChunkOptions{}), dlq.Config{})
	if err != nil {
		return err
	}
	n, err := dq.Count(ctx, sel)
	if err != nil {
		return dlqError(err)
	}
	if n == 0 {
		fmt.Fprintln(e.stderr, "nothing to purge: no dead letters selected")
		return nil
	}
	if !yes {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return fmt.Errorf("refusing to purge %d dead letters without confirmation: standard input is not a terminal; pass --yes to purge", n)
		}
		fmt.Fprintf(e.stderr, "Purge %d dead letters (their records and archived copies)? [y/N] ", n)
		answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
			return errors.New("not purged; nothing was changed")
		}
	}
	deleted, removed, err := dq.Purge(ctx, sel)
	if err != nil {
		return dlqError(err)
	}
	fmt.Fprintf(e.stderr, "purged %d dead letters (%d archived copies removed from asynq's archive)\n", len(deleted), removed)
	return nil
}

// dlqError words the dead-letter queue's selection errors for the CLI.
func dlqError(err error) error {
	var unknown *dlq.UnknownError
	if errors.As(err, &unknown) {
		return fmt.Errorf("%v; nothing was changed ('enqueuer dlq list' shows the dead letters)", err)
	}
	return err
}

// parseAge reads a duration, also in whole days ("30d").
func parseAge(s string) (time.Duration, error) {
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("--older-than %q: use a positive duration such as 36h, or days such as 30d", s)
	}
	return d, nil
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// oneLine is the first line of s, at most n runes.
// oneLine is the first line of s, made visible (cli.Visible), cut to n runes.
func oneLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	s = cli.Visible(s)
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
