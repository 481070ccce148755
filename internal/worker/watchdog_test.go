package worker

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"
)

func TestWatchdogFlagsHandlersPastDeadline(t *testing.T) {
	t.Parallel()
	w := NewWatchdog(50*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	release := make(chan struct{})
	started := make(chan struct{})
	h := w.Middleware(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		close(started)
		<-release // ignores ctx on purpose
		return nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	done := make(chan error)
	go func() { done <- h.ProcessTask(ctx, asynq.NewTask("test:hang", nil)) }()
	<-started
	require.Empty(t, w.Overdue(time.Now()), "within its timeout")
	n, _ := w.Busy()
	require.Equal(t, 1, n)
	require.Eventually(t, func() bool { return len(w.Overdue(time.Now())) == 1 }, 2*time.Second, 10*time.Millisecond)
	close(release)
	require.NoError(t, <-done)
	require.Empty(t, w.Overdue(time.Now()), "healthy again once the handler returns")
	n, _ = w.Busy()
	require.Zero(t, n)
}
