package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// failureWatch tells `run --wait` of each chunk failure of a batch as it
// happens: its kind and the first line of its error, and what happens
// next. Retries are read from asynq's retry set, splits and dead letters
// from PostgreSQL (store.ChunkFailures). Each is said once.
type failureWatch struct {
	st    *store.Store
	insp  *asynq.Inspector
	b     store.Batch
	lat   grid.Lattice
	since time.Time
	seen  map[string]bool
}

func newFailureWatch(st *store.Store, insp *asynq.Inspector, b store.Batch) *failureWatch {
	lat, _ := grid.NewLattice(b.Step)
	return &failureWatch{st: st, insp: insp, b: b, lat: lat, since: b.StartedAt.Add(-time.Second), seen: map[string]bool{}}
}

// maxWatchLines bounds what one poll prints of retries and splits, and of
// dead letters (a model failing on every cell must not flood the
// terminal); the rest is in the summary and 'enqueuer dlq list'.
const maxWatchLines = 30

// poll returns the lines of the failures that happened since the last poll.
func (fw *failureWatch) poll(ctx context.Context) []string {
	var lines, dead []string
	if fw.insp != nil {
		retries, _ := fw.insp.ListRetryTasks(tasks.QueueGrid, asynq.PageSize(200))
		for _, t := range retries {
			key := fmt.Sprintf("%s#%d", t.ID, t.Retried)
			if !strings.HasPrefix(t.ID, fw.b.ID+":c") || fw.seen[key] {
				continue
			}
			fw.seen[key] = true
			p, err := tasks.DecodeChunk(t.Payload)
			if err != nil {
				continue
			}
			in := t.NextProcessAt.Sub(t.LastFailedAt).Round(time.Second)
			lines = append(lines, fmt.Sprintf("%s: %s: retry %d/%d in %s", fw.pieceName(p.Chunk, p.Lo, p.Hi),
				firstLine(t.LastErr), t.Retried, t.MaxRetry, numfmt.Duration(in)))
		}
	}
	fs, err := fw.st.ChunkFailures(ctx, fw.b.ID, fw.since, 500)
	if err == nil {
		for _, f := range fs {
			if fw.seen[f.Key] {
				continue
			}
			fw.seen[f.Key] = true
			if f.At.After(fw.since) {
				fw.since = f.At
			}
			name := fw.pieceName(f.Piece.Chunk, f.Piece.Lo, f.Piece.Hi)
			switch {
			case f.Split:
				halves := fmt.Sprintf("2×%d", f.Cells/2)
				if f.Cells%2 == 1 {
					halves = fmt.Sprintf("%d+%d", (f.Cells+1)/2, f.Cells/2)
				}
				lines = append(lines, fmt.Sprintf("%s: %s: split into %s", name, firstLine(f.Error), halves))
			case f.GridID != nil:
				dead = append(dead, fmt.Sprintf("%s: %s: %s dead-lettered", name, firstLine(f.Error), fw.cellName(*f.GridID)))
			default:
				dead = append(dead, fmt.Sprintf("%s: %s: dead-lettered (%d cells)", name, firstLine(f.Error), f.Cells))
			}
		}
	}
	return append(capLines(lines, "retries and splits"), capLines(dead, "dead letters")...)
}

// capLines keeps the first maxWatchLines lines and says how many more there were.
func capLines(lines []string, what string) []string {
	if len(lines) <= maxWatchLines {
		return lines
	}
	return append(lines[:maxWatchLines], fmt.Sprintf("… and %d more %s", len(lines)-maxWatchLines, what))
}

func (fw *failureWatch) pieceName(chunk, lo, hi int) string {
	if hi == 0 {
		return fmt.Sprintf("chunk %d", chunk)
	}
	return fmt.Sprintf("chunk %d cells %d-%d", chunk, lo, hi)
}

// cellName names a cell by grid ID and centre.
func (fw *failureWatch) cellName(id int64) string {
	c, err := fw.lat.CellByID(id)
	if err != nil {
		return fmt.Sprintf("cell %d", id)
	}
	round := func(v float64) float64 { return math.Round(v*1e9) / 1e9 } // 37.025, not 37.025000000000006
	return fmt.Sprintf("cell %d (lat %g, lon %g)", id, round(c.Lat), round(c.Lon))
}

// maxSummaryCells is how many failed cells the summary names.
const maxSummaryCells = 5

// printFailedCells ends the summary of a batch with dead letters: the
// first few failed cells (or chunks) with their errors, and the command
// that lists them all.
func printFailedCells(ctx context.Context, w io.Writer, st *store.Store, b store.Batch) {
	ds, total, err := st.ListDeadLetters(ctx, store.DeadLetterFilter{BatchID: b.ID, Open: true}, maxSummaryCells)
	if err != nil || total == 0 {
		return
	}
	fw := newFailureWatch(st, nil, b)
	fmt.Fprintf(w, "  failed:          %s dead letters (%s cells)\n", numfmt.Int(total), numfmt.Int(b.FailedCells))
	for _, d := range ds {
		what := "task " + d.TaskID
		switch {
		case d.GridID != nil:
			what = fw.cellName(*d.GridID)
		case d.Chunk != nil:
			what = fw.pieceName(*d.Chunk, d.Lo, d.Hi)
		}
		fmt.Fprintf(w, "    %s: %s\n", what, firstLine(d.LastError))
	}
	if total > len(ds) {
		fmt.Fprintf(w, "    … and %s more\n", numfmt.Int(total-len(ds)))
	}
	fmt.Fprintf(w, "  list them all:   enqueuer dlq list --batch %s\n", b.ID)
}

// firstLine is an error's first line, without the queue's own suffixes,
// with control characters made visible (it comes from a user's model), at
// most 160 characters.
func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	s = strings.TrimSuffix(s, ": skip retry for the task")
	s = strings.TrimSuffix(s, ": permanent failure")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '�'
		}
		return r
	}, s)
	if r := []rune(s); len(r) > 160 {
		return string(r[:159]) + "…"
	}
	return s
}
