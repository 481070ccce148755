package breaker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var errConn = errors.New("connection refused")

func isConn(err error) bool { return errors.Is(err, errConn) }

func TestOpensAfterConsecutiveConnErrorsAndRecovers(t *testing.T) {
	t.Parallel()
	var changes []string
	b := New(Config{Failures: 3, OpenFor: 50 * time.Millisecond, IsConnError: isConn,
		OnChange: func(from, to string) { changes = append(changes, from+">"+to) }})
	calls := 0
	fail := func() error { calls++; return errConn }
	for range 3 {
		require.ErrorIs(t, b.Do(fail), errConn)
	}
	require.Equal(t, Open, b.State())
	// Open: fails fast without touching the database.
	err := b.Do(fail)
	require.ErrorIs(t, err, ErrOpen)
	require.Equal(t, 3, calls, "no call while open")
	require.Positive(t, b.NextProbe())

	time.Sleep(60 * time.Millisecond)
	require.NoError(t, b.Do(func() error { return nil }), "half-open probe")
	require.Equal(t, Closed, b.State())
	require.Equal(t, []string{"closed>open", "open>half-open", "half-open>closed"}, changes)
}

func TestDataErrorsAndCancellationNeverTrip(t *testing.T) {
	t.Parallel()
	b := New(Config{Failures: 2, IsConnError: isConn})
	dataErr := errors.New("duplicate key value violates unique constraint")
	for range 10 {
		require.ErrorIs(t, b.Do(func() error { return dataErr }), dataErr)
		require.ErrorIs(t, b.Do(func() error { return context.Canceled }), context.Canceled)
	}
	require.Equal(t, Closed, b.State())
	// A success in between resets the consecutive count.
	require.Error(t, b.Do(func() error { return errConn }))
	require.NoError(t, b.Do(func() error { return nil }))
	require.Error(t, b.Do(func() error { return errConn }))
	require.Equal(t, Closed, b.State())
}
