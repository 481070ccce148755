package batch_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/store"
)

func TestRetain(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// cand is a batch of kind started min minutes after t0; showing: the
	// published values still show its rows.
	cand := func(id, kind string, min int, published, showing bool) store.RetentionCandidate {
		return store.RetentionCandidate{
			Pruned:  store.Pruned{ID: id, Kind: kind, Status: store.StatusSucceeded, StartedAt: t0.Add(time.Duration(min) * time.Minute), Published: published},
			Showing: showing,
		}
	}
	for _, tc := range []struct {
		name  string
		cands []store.RetentionCandidate
		keep  int
		drop  []string
	}{
		{name: "none", keep: 2, drop: nil},
		{name: "fewer than keep", keep: 2,
			cands: []store.RetentionCandidate{cand("a", "ph", 1, false, false), cand("b", "ph", 2, false, false)},
			drop:  nil},
		{name: "keeps the newest, drops oldest first", keep: 1,
			cands: []store.RetentionCandidate{cand("b", "ph", 2, false, false), cand("c", "ph", 3, false, false), cand("a", "ph", 1, false, false)},
			drop:  []string{"a", "b"}},
		{name: "showing batches always kept, outside keep", keep: 1,
			cands: []store.RetentionCandidate{
				cand("old-shown", "ph", 1, true, true), cand("b", "ph", 2, false, false),
				cand("c", "ph", 3, true, false), cand("new-shown", "ph", 4, true, true)},
			drop: []string{"b"}},
		{name: "keep 0 drops every batch not showing", keep: 0,
			cands: []store.RetentionCandidate{cand("a", "ph", 1, true, true), cand("b", "ph", 2, true, false), cand("c", "ph", 3, false, false)},
			drop:  []string{"b", "c"}},
		{name: "negative keep counts as 0", keep: -1,
			cands: []store.RetentionCandidate{cand("a", "ph", 1, false, false)},
			drop:  []string{"a"}},
		{name: "ties on start broken by ID, greatest kept", keep: 1,
			cands: []store.RetentionCandidate{cand("x2", "ph", 5, false, false), cand("x3", "ph", 5, false, false), cand("x1", "ph", 5, false, false)},
			drop:  []string{"x1", "x2"}},
		{name: "keep counts per kind, drops ordered by kind then start", keep: 1,
			cands: []store.RetentionCandidate{
				cand("ph1", "ph", 1, false, false), cand("heat3", "heat", 3, false, false), cand("ph2", "ph", 2, false, false),
				cand("heat1", "heat", 1, false, false), cand("heat2", "heat", 2, true, true), cand("ph3", "ph", 3, false, false),
				cand("solo", "wind", 0, false, false)},
			drop: []string{"heat1", "ph1", "ph2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range batch.Retain(tc.cands, tc.keep) {
				got = append(got, p.ID)
			}
			require.Equal(t, tc.drop, got)
		})
	}
}

func TestRetainReturnsTheBatchAsFound(t *testing.T) {
	p := store.Pruned{ID: "a", Kind: "ph", Status: store.StatusHeld, StartedAt: time.Unix(10, 0).UTC(), Published: true}
	require.Equal(t, []store.Pruned{p}, batch.Retain([]store.RetentionCandidate{{Pruned: p}}, 0))
}
