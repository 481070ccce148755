package lease

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestLeaseOneLeaderAtATime(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	r := testutil.NewRedis(t)
	var logs bytes.Buffer // Step runs in this goroutine only
	log := slog.New(slog.NewTextHandler(&logs, nil))
	const ttl = time.Second
	a := New(r.Client, "lease", "a", ttl, log, Messages{})
	b := New(r.Client, "lease", "b", ttl, log, Messages{})

	a.Step(ctx)
	b.Step(ctx)
	require.True(t, a.Held(), "the first to try leads")
	require.False(t, b.Held(), "the second stands by")
	require.Contains(t, logs.String(), "leader=a")

	a.Step(ctx) // renew
	require.True(t, a.Held())
	pttl, err := r.Client.PTTL(ctx, "lease").Result()
	require.NoError(t, err)
	require.Greater(t, pttl, ttl/2, "renewal extends the TTL")

	require.NoError(t, a.Release(ctx))
	require.False(t, a.Held())
	b.Step(ctx)
	require.True(t, b.Held(), "a released lease is taken at once")
	a.Step(ctx)
	require.False(t, a.Held())
	require.NoError(t, a.Release(ctx), "releasing a lease held by another is a no-op")
	holder, err := r.Client.Get(ctx, "lease").Result()
	require.NoError(t, err)
	require.Equal(t, "b", holder)
}

func TestLeaseExpiresWhenTheLeaderStopsRenewing(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	r := testutil.NewRedis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	// a's view ends at 90% of the TTL: a 4 s TTL leaves a 400 ms window
	// between the two, wide enough to observe on a loaded machine.
	const ttl = 4 * time.Second
	a := New(r.Client, "lease", "a", ttl, log, Messages{})
	b := New(r.Client, "lease", "b", ttl, log, Messages{})
	a.Step(ctx)
	require.True(t, a.Held())

	// a stops renewing (as if SIGKILLed): it stops counting itself leader
	// before Redis lets b take over, so the two never overlap.
	for deadline := time.Now().Add(2 * ttl); a.Held(); time.Sleep(5 * time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "a still counts itself leader %s after its last renewal", 2*ttl)
	}
	pttl, err := r.Client.PTTL(ctx, "lease").Result()
	require.NoError(t, err)
	require.Greater(t, pttl, time.Duration(0), "the key outlives a's own view of its lease")
	b.Step(ctx)
	require.False(t, b.Held(), "the key outlives a's own view of its lease")
	testutil.Eventually(t, 2*ttl, "b to take the expired lease", func() bool {
		b.Step(ctx)
		return b.Held()
	})
	a.Step(ctx)
	require.False(t, a.Held(), "a comes back as a standby")
}

func TestLeaseRunRenewsAndSignals(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(testContext(t))
	r := testutil.NewRedis(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := New(r.Client, "lease", "a", 600*time.Millisecond, log, Messages{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Run(ctx)
	}()
	select {
	case <-a.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no change signalled on taking the lease")
	}
	time.Sleep(1500 * time.Millisecond) // 2.5 TTLs: only renewals keep it
	require.True(t, a.Held())
	cancel()
	<-done
	require.NoError(t, a.Release(context.Background()))
	n, err := r.Client.Exists(context.Background(), "lease").Result()
	require.NoError(t, err)
	require.Zero(t, n, "released on shutdown")
}
