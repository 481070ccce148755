package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

func init() {
	register(command{
		name:    "run",
		usage:   "--kind KIND [--bbox …] [--step S] [--chunk-size N] [--deadline D] [--wait]",
		summary: "start a batch (prints its ID); --wait follows it to the end",
		about: `Starts one batch of a kind over the seeded cells of a bbox: the batch is
recorded, its chunks are planned and enqueued for the workers. KIND is ph,
hazard or one of the models file's: 'enqueuer models' lists them. The batch ID is
the first line of standard output, alone, so scripts can capture it:

    id=$(enqueuer run --kind ph | head -1)

At most one batch of a kind runs at once. A second run of the same kind is
refused (exit 5) with the running batch's ID and when its lock expires.

With --wait it follows the batch to its end: a progress bar on a terminal,
otherwise a line every --progress-interval, and a warning when no worker has
served the queues for 10 s (with how to start one); then a summary, and the exit code
of the batch's status: 0 succeeded, 3 partial, 4 timed out or failed,
6 cancelled. Interrupting --wait leaves the batch running.`,
		example: `  enqueuer run --kind ph --wait
  enqueuer run --kind hazard --bbox 124,33,132,39 --step 0.01 --chunk-size 1000 --deadline 3h
  id=$(enqueuer run --kind ph | head -1); enqueuer status "$id"`,
		run: runRun,
	})
}

func runRun(ctx context.Context, e *env, args []string) error {
	var kind string
	var wait bool
	var every time.Duration
	cfg, _, done, err := parse(commandNamed("run"), e, args, true, func(s *config.Set) {
		s.String(&kind, "kind", "", "", "batch kind: ph, hazard or one of the models file's (see 'enqueuer models')")
		s.Bool(&wait, "wait", "", false, "follow the batch to its end and exit with its status")
		s.Duration(&every, "progress-interval", "", 5*time.Second, "with --wait and no terminal: print a progress line this often")
	})
	if done {
		return err
	}
	models := e.models
	if kind == "" {
		return fmt.Errorf("--kind is required: one of %v (see 'enqueuer run --help')", models.Kinds())
	}
	if _, err := models.Spec(kind); err != nil {
		return err
	}
	region, err := seedRegion(cfg.Batch)
	if err != nil {
		return err
	}
	c, err := openConn(ctx, cfg.Common, e.stderr)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := c.Batch.Trigger(ctx, batch.Request{Kind: kind, Region: region, ChunkSize: cfg.ChunkSize,
		Deadline: cfg.Deadline, LockTTL: cfg.EffectiveLockTTL(), Trigger: "cli"})
	var refused *batch.RefusedError
	if errors.As(err, &refused) {
		return cli.WithCode(cli.ExitRefused, err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, b.ID)
	fmt.Fprintf(e.stderr, "started %s batch %s: %s cells in %s chunks of %s; deadline %s; lock expires %s\n",
		b.Kind, b.ID, numfmt.Int(b.TotalCells), numfmt.Int(b.TotalChunks), numfmt.Int(b.ChunkSize),
		b.DeadlineAt.Format(time.RFC3339), b.LockExpiresAt.Format(time.RFC3339))
	if !wait {
		fmt.Fprintf(e.stderr, "follow it with: enqueuer status %s\n", b.ID)
		return nil
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { defer close(watched); watchWorkers(watchCtx, c.Inspector, e.stderr, b.ID, noWorkerAfter) }()
	final, err := follow(ctx, c.Store, b, e.stderr, every, newFailureWatch(c.Store, c.Inspector, b))
	stopWatch()
	<-watched
	if err != nil {
		return err
	}
	printSummary(e.stderr, final)
	printFailedCells(ctx, e.stderr, c.Store, final)
	return statusExit(final)
}

// follow polls the batch until it ends, drawing progress, and returns it.
// The wait is bounded: past the lock's expiry plus a margin a still-running
// batch means no worker is reconciling, and follow says so. Each chunk
// failure is said as it happens (fw).
func follow(ctx context.Context, st *store.Store, b store.Batch, w io.Writer, every time.Duration, fw *failureWatch) (store.Batch, error) {
	tty := false
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		tty = true
	}
	var bar *progressbar.ProgressBar
	if tty {
		bar = progressbar.NewOptions64(b.TotalCells, progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(b.ID), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("cells"), progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionFullWidth())
	}
	giveUp := b.LockExpiresAt.Add(2 * time.Minute)
	start := time.Now()
	lastLine := time.Time{}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		cur, err := st.GetBatch(ctx, b.ID)
		if lines := fw.poll(ctx); len(lines) > 0 {
			if bar != nil {
				_ = bar.Clear()
			}
			fmt.Fprintln(w, strings.Join(lines, "\n"))
		}
		switch {
		case err != nil && ctx.Err() != nil:
			return cur, fmt.Errorf("stopped waiting; batch %s keeps running (enqueuer status %s)", b.ID, b.ID)
		case err != nil:
			fmt.Fprintf(w, "status read failed (%v); retrying\n", err)
		case bar != nil:
			_ = bar.Set64(cur.CompletedCells + cur.FailedCells)
			bar.Describe(fmt.Sprintf("%s %d/%d chunks, %d failed", cur.ID, cur.DoneChunks, cur.TotalChunks, cur.FailedChunks))
		case time.Since(lastLine) >= every:
			lastLine = time.Now()
			fmt.Fprintln(w, progressLine(cur, time.Since(start)))
		}
		if err == nil && cur.Ended() {
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(w)
			}
			return cur, nil
		}
		if time.Now().After(giveUp) {
			return cur, fmt.Errorf("batch %s is still running after its lock expired at %s: no worker is reconciling it; start workers (they end it timed_out)", b.ID, b.LockExpiresAt.Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return cur, cli.WithCode(cli.ExitError, fmt.Errorf("stopped waiting; batch %s keeps running (enqueuer status %s)", b.ID, b.ID))
		case <-tick.C:
		}
	}
}

// noWorkerAfter is how long run --wait lets a batch wait with no worker
// serving its queue before it says so.
const noWorkerAfter = 10 * time.Second

// watchWorkers asks asynq every 2 s which servers (workers) are alive and
// which queues they serve, until ctx is done. Once no worker has served the
// batch's queues (batch: its planning task; grid: its chunks) for after, it
// writes to w that the batch waits for one and how to start one; once one
// serves them again, that it does. A failed look-up
// says nothing: the batch's own progress is what run --wait reports.
func watchWorkers(ctx context.Context, insp *asynq.Inspector, w io.Writer, batchID string, after time.Duration) {
	lastSeen := time.Now()
	warned := false
	tick := time.NewTicker(min(2*time.Second, after))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		servers, err := insp.Servers()
		if err != nil {
			continue
		}
		n := 0
		for _, s := range servers {
			if s.Queues[tasks.QueueGrid] > 0 && s.Queues[tasks.QueueBatch] > 0 {
				n++
			}
		}
		switch {
		case n > 0 && warned:
			warned = false
			lastSeen = time.Now()
			fmt.Fprintf(w, "%d worker(s) now serve the batch and grid queues: batch %s proceeds\n", n, batchID)
		case n > 0:
			lastSeen = time.Now()
		case !warned && time.Since(lastSeen) >= after:
			warned = true
			pending := 0
			for _, q := range []string{tasks.QueueBatch, tasks.QueueGrid} {
				if info, err := insp.GetQueueInfo(q); err == nil {
					pending += info.Pending
				}
			}
			fmt.Fprintf(w, "warning: no worker serves the batch and grid queues (%s tasks pending): batch %s waits until one starts; "+
				"start one with the same GRIDBATCH_REDIS_URL and GRIDBATCH_DATABASE_URL: `worker &` (or `docker compose up -d worker`)\n",
				numfmt.Int(int64(pending)), batchID)
		}
	}
}

func progressLine(b store.Batch, el time.Duration) string {
	done := b.CompletedCells + b.FailedCells
	rate := float64(b.CompletedCells) / max(el.Seconds(), 1e-3)
	eta := "?"
	if rate > 0 {
		eta = numfmt.Duration(time.Duration(float64(b.TotalCells-done) / rate * float64(time.Second)))
	}
	return fmt.Sprintf("%s %s: %s/%s chunks (%s failed), %s/%s cells, %s cells/s, eta %s",
		b.ID, b.Status, numfmt.Int(b.DoneChunks), numfmt.Int(b.TotalChunks), numfmt.Int(b.FailedChunks),
		numfmt.Int(done), numfmt.Int(b.TotalCells), numfmt.Int(int64(math.Round(rate))), eta)
}

// statusExit maps a batch status to the exit codes of DESIGN.md.
func statusExit(b store.Batch) error {
	switch b.Status {
	case store.StatusSucceeded, store.StatusRunning:
		return nil
	case store.StatusPartial:
		return cli.WithCode(cli.ExitPartial, nil)
	case store.StatusCancelled:
		return cli.WithCode(cli.ExitCancelled, nil)
	case store.StatusHeld:
		return cli.WithCode(cli.ExitHeld, nil)
	default:
		return cli.WithCode(cli.ExitFailed, nil)
	}
}
