// Package store is all of gridbatch's SQL: the PostgreSQL pool, the embedded
// migrations and the queries of every table.
package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configure the pool. Zero fields take the defaults documented on each.
type Options struct {
	// URL is a PostgreSQL URL or DSN.
	URL string
	// ConnectTimeout bounds opening one connection. Defaults to 5s.
	ConnectTimeout time.Duration
	// StatementTimeout is set as statement_timeout on every connection, so
	// no query can wait forever. Defaults to 60s.
	StatementTimeout time.Duration
	// MaxConns caps the pool. Defaults to 8.
	MaxConns int32
	// MaxConnLifetime recycles connections. Defaults to 30m.
	MaxConnLifetime time.Duration
	// HealthCheckPeriod is how often idle connections are checked. Defaults to 15s.
	HealthCheckPeriod time.Duration
	// AppName is reported as application_name. Defaults to "gridbatch".
	AppName string
}

// Store wraps a pgxpool.Pool.
type Store struct {
	pool *pgxpool.Pool
}

// PoolConfig is the pool configuration Open uses for o: its connect,
// statement, lock and idle-in-transaction bounds, application name, size,
// connection lifetimes and the ping of an idle connection before it is
// handed out. What runs its own SQL beside a Store (the tests' and the
// bench's pools) opens its pool with it, under the same bounds. Errors never
// contain the password.
func PoolConfig(o Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		return nil, fmt.Errorf("GRIDBATCH_DATABASE_URL: %w", err)
	}
	cfg.ConnConfig.ConnectTimeout = orDefault(o.ConnectTimeout, 5*time.Second)
	stmt := orDefault(o.StatementTimeout, 60*time.Second)
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(stmt.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["lock_timeout"] = strconv.FormatInt(stmt.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt((2 * stmt).Milliseconds(), 10)
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		app := o.AppName
		if app == "" {
			app = "gridbatch"
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = app
	}
	cfg.MaxConns = max(o.MaxConns, 0)
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 8
	}
	cfg.MaxConnLifetime = orDefault(o.MaxConnLifetime, 30*time.Minute)
	cfg.MaxConnLifetimeJitter = cfg.MaxConnLifetime / 10
	cfg.HealthCheckPeriod = orDefault(o.HealthCheckPeriod, 15*time.Second)
	cfg.MaxConnIdleTime = 5 * time.Minute
	// pgxpool pings a connection idle for over 1 s before handing it out, so a
	// connection the server terminated is replaced, never handed out; bound the ping.
	cfg.PingTimeout = 2 * time.Second
	return cfg, nil
}

// Open builds the pool of PoolConfig(o) and checks one connection within
// the connect timeout. Errors never contain the password.
func Open(ctx context.Context, o Options) (*Store, error) {
	cfg, err := PoolConfig(o)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open PostgreSQL pool: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.ConnConfig.ConnectTimeout+time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("GRIDBATCH_DATABASE_URL: cannot connect to PostgreSQL at %s: %s (is the server up and the URL right?)", describe(cfg.ConnConfig), rootCause(err))
	}
	return &Store{pool: pool}, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks one round trip within ctx.
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

func describe(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s/%s (user %s)", net.JoinHostPort(c.Host, strconv.Itoa(int(c.Port))), c.Database, c.User)
}

// rootCause returns the most useful short text of a connect error: the
// server's message, or the innermost system error.
func rootCause(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Error()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out"
	}
	return err.Error()
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// IsConnError reports whether err means the database could not be reached or
// the connection broke, as opposed to an error in the data or the SQL. Only
// these errors should trip a circuit breaker or count as DB connection errors.
func IsConnError(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code[:2] {
		case "08", // connection exception
			"57", // operator intervention: admin_shutdown, crash_shutdown, cannot_connect_now, query_canceled by terminate
			"53": // insufficient resources: too many connections
			return pgErr.Code != "57014" // query_canceled is a timeout, not a broken connection
		}
		return false
	}
	if pgconn.SafeToRetry(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	if errors.Is(err, pgx.ErrTxClosed) || errors.Is(err, net.ErrClosed) {
		return true
	}
	// pgconn reports a connection closed under it as a plain error with this text.
	var s = err.Error()
	return containsAny(s, "conn closed", "connection reset", "broken pipe", "unexpected EOF", "failed to connect", "connection refused", "server closed the connection", "the database system is")
}

// IsSchemaError reports whether err means the schema is missing or wrong
// (undefined table or column): a system-level error no retry can fix.
func IsSchemaError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "42P01", "42703", "42883", "3F000": // undefined_table, undefined_column, undefined_function, invalid_schema_name
			return true
		}
	}
	return false
}

// SchemaHint returns err worded for an operator when IsSchemaError(err) is
// true: one line saying that the database has no gridbatch schema or an old
// one, with PostgreSQL's message, and "run: enqueuer migrate". Otherwise it
// returns err. The hint wraps err, and hinting it again changes nothing.
func SchemaHint(err error) error {
	var h *schemaHintError
	if !IsSchemaError(err) || errors.As(err, &h) {
		return err
	}
	return &schemaHintError{err}
}

type schemaHintError struct{ err error }

func (e *schemaHintError) Error() string {
	why := e.err.Error()
	var pgErr *pgconn.PgError
	if errors.As(e.err, &pgErr) {
		why = pgErr.Message
	}
	return fmt.Sprintf("the database has no gridbatch schema or an old one (%s); run: enqueuer migrate", why)
}

func (e *schemaHintError) Unwrap() error { return e.err }

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
