package batch

import (
	"context"
	"errors"
	"fmt"

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

// Gate decides what makes a batch's results visible. Its decide is the one
// place that says whether a batch is published; the store runs the SQL in
// the transaction that ends, heals or publishes the batch.
type Gate struct{}

// Decide returns the decision for occasion o, for the store to run inside
// its transaction.
func (g Gate) Decide(o Occasion) store.Decide {
	return func(ctx context.Context, e *store.Ending) error { return g.decide(ctx, e, o) }
}

// decide publishes a batch that ends succeeded, with its end; one that a
// requeue healed to succeeded, with the healing; and any ended batch an
// operator asks for (cells it did not compute keep their earlier values).
// A running batch is refused with an error wrapping ErrRunning: it is
// published when it succeeds. Nothing else publishes a batch.
func (g Gate) decide(ctx context.Context, e *store.Ending, o Occasion) error {
	b := e.Batch
	switch o {
	case AtEnd:
		if b.Status != store.StatusSucceeded {
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
	return e.Publish(ctx)
}

// Publish publishes what an ended batch computed, at an operator's
// request (see Gate): cells it did not compute keep their earlier values.
// Publishing a published batch again makes its values the latest once
// more. It returns an error wrapping ErrRunning for a running batch, and
// store.ErrBatchNotFound.
func Publish(ctx context.Context, st *store.Store, id string) (store.Batch, error) {
	return st.Publish(ctx, id, Gate{}.Decide(OnRequest))
}
