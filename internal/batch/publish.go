package batch

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Occasion is when the publication of a batch is decided.
type Occasion int

// The occasions of Gate.Decide.
const (
	// AtEnd: the batch is ending (store.FinishBatch).
	AtEnd Occasion = iota
	// AtHeal: a requeued chunk changed an ended batch (store.HealEndedBatch).
	AtHeal
	// OnRequest: an operator asked for it ('enqueuer publish').
	OnRequest
)

// ErrRunning is returned (wrapped) by Publish for a batch still running.
var ErrRunning = errors.New("batch is running")

// HeldError is returned by Publish when the batch's declared checks fail
// and the request is not DespiteChecks. Nothing was published.
type HeldError struct {
	BatchID string
	Report  store.CheckReport
}

func (e *HeldError) Error() string {
	var failed []string
	for _, c := range e.Report.Failed() {
		failed = append(failed, c.Check+": "+c.Text)
	}
	return fmt.Sprintf("batch %s fails its declared checks (%s), so it was not published: %s; 'enqueuer publish %s --despite-checks --reason TEXT' publishes it anyway",
		e.BatchID, e.Report.Declared, strings.Join(failed, "; "), e.BatchID)
}

// PublishRequest is an operator's 'enqueuer publish'.
type PublishRequest struct {
	// DespiteChecks publishes the batch even when its declared checks fail;
	// Reason (required then) and By are recorded with it.
	DespiteChecks bool
	Reason, By    string
}

// Gate decides what makes a batch's results visible. Its decide is the one
// place that says whether a batch is published; the store runs the SQL in
// the transaction that ends, heals or publishes the batch.
type Gate struct {
	// Models declare each kind's checks. Defaults to the built-in models.
	Models *model.Set
}

// Decide returns the decision at the end or the healing of a batch, for
// the store to run inside its transaction.
func (g Gate) Decide(o Occasion) store.Decide {
	return func(ctx context.Context, e *store.Ending) error { return g.decide(ctx, e, o, PublishRequest{}) }
}

// decide is what makes a batch's results visible, and nothing else
// publishes a batch. Candidates are a batch that ends succeeded (with its
// end), one a requeue healed to succeeded (with the healing), a partial
// batch whose kind opts in to partial success (min_coverage below 1, with
// its end) and any ended batch an operator asks for (cells it did not
// compute keep their earlier values; a running batch is refused with an
// error wrapping ErrRunning). A candidate whose kind declares checks is
// published only when its rows pass every one: at its end or healing it
// ends held otherwise (status held, the report kept), and an operator's
// request fails with a *HeldError unless it is DespiteChecks, which
// publishes it and records the reason. Without declared checks, every
// candidate is published.
func (g Gate) decide(ctx context.Context, e *store.Ending, o Occasion, r PublishRequest) error {
	b := e.Batch
	checks := g.checks(b.Kind)
	switch o {
	case AtEnd:
		if b.Status != store.StatusSucceeded && (b.Status != store.StatusPartial || !checks.PartialSuccess()) {
			return nil
		}
	case AtHeal:
		if b.Status != store.StatusSucceeded || b.PublishedAt != nil {
			return nil
		}
	case OnRequest:
		if !b.Ended() {
			return fmt.Errorf("%w: %s is published when it succeeds; wait for it to end (or cancel it), then publish what it computed", ErrRunning, b.ID)
		}
	}
	if !checks.Declared() {
		return e.Publish(ctx)
	}
	report, err := RunChecks(ctx, e, checks)
	if err != nil {
		return err
	}
	switch {
	case report.Passed:
		if err := e.Record(ctx, report); err != nil {
			return err
		}
		return e.Publish(ctx)
	case o != OnRequest:
		return e.Hold(ctx, report)
	case r.DespiteChecks:
		return e.PublishDespite(ctx, report, r.Reason, r.By)
	}
	return &HeldError{BatchID: b.ID, Report: report}
}

// checks returns the checks kind declares; nil for none or an unknown kind.
func (g Gate) checks(kind string) *model.Checks {
	set := g.Models
	if set == nil {
		set = model.Builtins()
	}
	spec, err := set.Spec(kind)
	if err != nil {
		return nil
	}
	return spec.Checks
}

// Publish publishes what an ended batch computed, at an operator's request
// (see Gate.decide): cells it did not compute keep their earlier values.
// Publishing a published batch again makes its values the latest once
// more. It returns an error wrapping ErrRunning for a running batch, a
// *HeldError when its checks fail, and store.ErrBatchNotFound.
func Publish(ctx context.Context, st *store.Store, models *model.Set, id string, r PublishRequest) (store.Batch, error) {
	if r.DespiteChecks && strings.TrimSpace(r.Reason) == "" {
		return store.Batch{}, errors.New("--despite-checks needs --reason TEXT: why the values are published although their checks fail")
	}
	g := Gate{Models: models}
	return st.Publish(ctx, id, func(ctx context.Context, e *store.Ending) error { return g.decide(ctx, e, OnRequest, r) })
}
