package testutil

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// RunBatch runs `enqueuer run args…` (enqueuer is the binary's path) with
// exactly env, requires it to exit 0 and returns the batch ID, the first line
// of its stdout.
func RunBatch(t testing.TB, enqueuer string, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := RunBinary(t, enqueuer, env, append([]string{"run"}, args...)...)
	require.Equal(t, 0, code, errOut)
	id := strings.SplitN(out, "\n", 2)[0]
	require.NotEmpty(t, id)
	return id
}

// Batches reads a store's batches for a test.
type Batches struct {
	// Store holds the batches.
	Store *store.Store
	// RetryReads makes WaitEnded and WaitDone take a failed read for "not
	// yet" and poll again, for tests that stop or restart PostgreSQL. By
	// default a failed read fails the test at once.
	RetryReads bool
}

// Get returns the batch; a failed read fails the test.
func (bs Batches) Get(t testing.TB, id string) store.Batch {
	t.Helper()
	b, err := bs.Store.GetBatch(context.Background(), id)
	require.NoError(t, err)
	return b
}

// WaitEnded waits up to timeout until the batch has a final status and returns it.
func (bs Batches) WaitEnded(t testing.TB, id string, timeout time.Duration) store.Batch {
	t.Helper()
	return bs.poll(t, timeout, "batch "+id+" to end", id, store.Batch.Ended)
}

// WaitDone waits up to timeout until at least n chunks of the batch have an outcome.
func (bs Batches) WaitDone(t testing.TB, id string, n int, timeout time.Duration) {
	t.Helper()
	bs.poll(t, timeout, fmt.Sprintf("batch %s to have %d chunks done", id, n), id,
		func(b store.Batch) bool { return b.DoneChunks >= n })
}

// poll reads the batch with Eventually until cond holds and returns it.
func (bs Batches) poll(t testing.TB, timeout time.Duration, msg, id string, cond func(store.Batch) bool) store.Batch {
	t.Helper()
	var b store.Batch
	Eventually(t, timeout, msg, func() bool {
		if !bs.RetryReads {
			b = bs.Get(t, id)
			return cond(b)
		}
		var err error
		b, err = bs.Store.GetBatch(context.Background(), id)
		return err == nil && cond(b)
	})
	return b
}

// NoChecks returns the built-in models without their declared checks, for
// tests of what publication does with values the checks would hold (ph
// values outside [0, 1]).
func NoChecks() *model.Set {
	set := model.Builtins()
	for _, spec := range set.Specs() {
		c, _ := set.Go(spec.Kind)
		spec.Checks = nil
		if err := set.Add(spec, c); err != nil {
			panic(err)
		}
	}
	return set
}
