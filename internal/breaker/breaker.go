// Package breaker guards the database with a circuit breaker
// (github.com/sony/gobreaker): after N consecutive connection-class errors it
// opens and work fails fast with ErrOpen instead of hammering a database that
// is down; after OpenFor one probe is let through (half-open), and a success
// closes it. Data and SQL errors never trip it.
package breaker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/sony/gobreaker/v2"
)

// ErrOpen is returned, wrapped, while the breaker is open: the work was not tried.
var ErrOpen = errors.New("database circuit breaker open")

// States as reported to OnChange and State.
const (
	Closed   = "closed"
	HalfOpen = "half-open"
	Open     = "open"
)

// Config configures a Breaker.
type Config struct {
	// Failures is the number of consecutive connection errors that open the
	// breaker. Defaults to 5.
	Failures int
	// OpenFor is how long the breaker stays open before a half-open probe.
	// Defaults to 10s.
	OpenFor time.Duration
	// IsConnError classifies errors; only these count as failures. Required.
	IsConnError func(error) bool
	// OnChange, when set, is called on every state change.
	OnChange func(from, to string)
	// Log receives one line per state change. Defaults to slog.Default().
	Log *slog.Logger
}

// Breaker is a circuit breaker around database work. It is safe for
// concurrent use.
type Breaker struct {
	cb      *gobreaker.CircuitBreaker[struct{}]
	openFor time.Duration
	mu      sync.Mutex
	since   time.Time
}

// New returns a closed breaker.
func New(c Config) *Breaker {
	if c.Failures <= 0 {
		c.Failures = 5
	}
	if c.OpenFor <= 0 {
		c.OpenFor = 10 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	b := &Breaker{openFor: c.OpenFor, since: time.Now()}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "postgres",
		MaxRequests: 1,
		Timeout:     c.OpenFor,
		ReadyToTrip: func(n gobreaker.Counts) bool { return n.ConsecutiveFailures >= uint32(c.Failures) },
		IsSuccessful: func(err error) bool {
			return err == nil || !c.IsConnError(err)
		},
		IsExcluded: func(err error) bool {
			// The caller's own cancellation says nothing about the database.
			var ce *pgconn.ConnectError
			return (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && !errors.As(err, &ce)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			b.mu.Lock()
			b.since = time.Now()
			b.mu.Unlock()
			f, t := name(from), name(to)
			lvl := slog.LevelInfo
			if to == gobreaker.StateOpen {
				lvl = slog.LevelWarn
			}
			c.Log.Log(context.Background(), lvl, "database circuit breaker "+t, "from", f, "to", t,
				"consecutive_failures_to_open", c.Failures, "open_for", c.OpenFor.String())
			if c.OnChange != nil {
				c.OnChange(f, t)
			}
		},
	})
	return b
}

func name(s gobreaker.State) string {
	switch s {
	case gobreaker.StateOpen:
		return Open
	case gobreaker.StateHalfOpen:
		return HalfOpen
	}
	return Closed
}

// Do runs fn unless the breaker is open, in which case it returns an error
// wrapping ErrOpen without calling fn.
func (b *Breaker) Do(fn func() error) error {
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return fmt.Errorf("%w; next probe in %s", ErrOpen, b.NextProbe().Round(100*time.Millisecond))
	}
	return err
}

// State is closed, half-open or open.
func (b *Breaker) State() string { return name(b.cb.State()) }

// NextProbe is how long until an open breaker lets a probe through; 0 when
// not open.
func (b *Breaker) NextProbe() time.Duration {
	if b.cb.State() != gobreaker.StateOpen {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(0, b.openFor-time.Since(b.since))
}

// OpenFor is the configured open duration.
func (b *Breaker) OpenFor() time.Duration { return b.openFor }
