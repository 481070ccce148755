package batch

import (
	"cmp"
	"context"
	"slices"

	"github.com/gridbatch/gridbatch/internal/store"
)

// Retain decides which ended batches lose their own rows: it keeps every
// batch whose rows the published values still show, and of the others the
// keep newest per kind (by start, then by ID); it returns the rest, by kind
// then start (then ID). keep below 0 counts as 0.
func Retain(cands []store.RetentionCandidate, keep int) []store.Pruned {
	others := make(map[string][]store.Pruned)
	for _, c := range cands {
		if !c.Showing {
			others[c.Kind] = append(others[c.Kind], c.Pruned)
		}
	}
	keep = max(keep, 0)
	var drop []store.Pruned
	for _, ps := range others {
		slices.SortFunc(ps, newestFirst)
		if len(ps) > keep {
			drop = append(drop, ps[keep:]...)
		}
	}
	slices.SortFunc(drop, func(a, b store.Pruned) int {
		if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return -newestFirst(a, b)
	})
	return drop
}

// newestFirst orders batches by start, newest first, then by ID, greatest
// first.
func newestFirst(a, b store.Pruned) int {
	if c := b.StartedAt.Compare(a.StartedAt); c != 0 {
		return c
	}
	return cmp.Compare(b.ID, a.ID)
}

// Prune drops the own rows of the ended batches of kind (every kind when
// empty) that retention no longer keeps (Retain, with keep:
// GRIDBATCH_KEEP_BATCHES), and returns them. With dryRun it only returns
// what it would drop.
func Prune(ctx context.Context, st *store.Store, kind string, keep int, dryRun bool) ([]store.Pruned, error) {
	cands, err := st.RetentionCandidates(ctx, kind)
	if err != nil {
		return nil, err
	}
	drop := Retain(cands, keep)
	if dryRun {
		return drop, nil
	}
	for _, p := range drop {
		if err := st.DropBatchRows(ctx, p); err != nil {
			return nil, err
		}
	}
	return drop, nil
}
