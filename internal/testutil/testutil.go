// Package testutil gives tests isolated slices of the real Redis and
// PostgreSQL started by `make test-services-up`: a fresh Redis database number and
// a fresh PostgreSQL schema per test. A service that is down fails the test
// with the command that starts it; nothing is ever skipped or mocked.
// Cluster runs the real binaries on such a slice: the integration and
// chaos suites' one harness.
package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/store"
)

// The tests' own services of scripts/services.sh (`make test-services-up`:
// Redis 6392, PostgreSQL 5442), never the demo's (6390, 5440), so tests
// and a running demo share no Redis database and no schema.
// GRIDBATCH_TEST_REDIS_URL and GRIDBATCH_TEST_DATABASE_URL point the tests
// elsewhere.
const (
	defaultRedisURL    = "redis://127.0.0.1:6392/0"
	defaultDatabaseURL = "postgres://gridbatch:gridbatch@127.0.0.1:5442/gridbatch?sslmode=disable"
	startHint          = "start it with: make test-services-up"
	redisDBs           = 1024 // scripts/services.sh starts Redis with --databases 1024
)

// RedisURL is the base URL of the test Redis.
func RedisURL() string { return envOr("GRIDBATCH_TEST_REDIS_URL", defaultRedisURL) }

// DatabaseURL is the base URL of the test PostgreSQL.
func DatabaseURL() string { return envOr("GRIDBATCH_TEST_DATABASE_URL", defaultDatabaseURL) }

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// Redis is one test's private Redis database.
type Redis struct {
	// URL selects the test's own database number; pass it to binaries as GRIDBATCH_REDIS_URL.
	URL string
	// DB is the database number.
	DB int
	// Client is connected to that database.
	Client *redis.Client
}

// ClientOpt returns asynq's connection options for the test database.
func (r *Redis) ClientOpt() asynq.RedisClientOpt {
	opt, err := asynq.ParseRedisURI(r.URL)
	if err != nil {
		panic(err)
	}
	return opt.(asynq.RedisClientOpt)
}

// NewRedis returns a flushed Redis database that no other test uses at the
// same time, flushed again when the test ends.
func NewRedis(t testing.TB) *Redis {
	t.Helper()
	base := RedisURL()
	opt, err := redis.ParseURL(base)
	if err != nil {
		t.Fatalf("GRIDBATCH_TEST_REDIS_URL=%q: %v", base, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctl := redis.NewClient(opt)
	defer ctl.Close()
	if err := ctl.Ping(ctx).Err(); err != nil {
		t.Fatalf("Redis at %s is not reachable (%v); %s", opt.Addr, err, startHint)
	}
	n, err := ctl.Incr(ctx, "gridbatch:test:db-seq").Result()
	if err != nil {
		t.Fatalf("allocate a Redis database: %v", err)
	}
	db := 1 + int(n%(redisDBs-1))
	u, _ := url.Parse(base)
	u.Path = "/" + strconv.Itoa(db)
	opt.DB = db
	c := redis.NewClient(opt)
	if err := c.FlushDB(ctx).Err(); err != nil {
		t.Fatalf("flush Redis database %d: %v (is Redis started with --databases %d? %s)", db, err, redisDBs, startHint)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.FlushDB(ctx).Err()
		_ = c.Close()
	})
	return &Redis{URL: u.String(), DB: db, Client: c}
}

// DB is one test's private PostgreSQL schema, migrated.
type DB struct {
	// URL sets search_path to the test's schema; pass it to binaries as GRIDBATCH_DATABASE_URL.
	URL string
	// Schema is the schema name.
	Schema string
	// Store is open on the schema.
	Store *store.Store
	// Pool is the test's own pool on the schema, for its raw SQL; the
	// store's pool is the store's own.
	Pool *pgxpool.Pool
}

var (
	adminOnce sync.Once
	adminPool *pgxpool.Pool
	adminErr  error
)

func admin(ctx context.Context) (*pgxpool.Pool, error) {
	adminOnce.Do(func() {
		adminPool, adminErr = pgxpool.New(ctx, DatabaseURL())
		if adminErr == nil {
			adminErr = adminPool.Ping(ctx)
		}
	})
	return adminPool, adminErr
}

// closeAdmin closes the admin pool if a test opened it.
func closeAdmin() {
	if adminPool != nil {
		adminPool.Close()
	}
}

// NewDB creates a fresh schema, migrates it, and drops it when the test ends.
func NewDB(t testing.TB) *DB {
	t.Helper()
	db := NewEmptyDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := db.Store.Migrate(ctx); err != nil {
		t.Fatalf("migrate schema %s: %v", db.Schema, err)
	}
	return db
}

// NewEmptyDB is NewDB without the migrations.
func NewEmptyDB(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := admin(ctx)
	if err != nil {
		t.Fatalf("PostgreSQL at %s is not reachable (%v); %s", hostOf(DatabaseURL()), err, startHint)
	}
	schema := "t_" + strings.ToLower(randomHex(6))
	if _, err := pool.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = pool.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
	})
	u := SchemaURL(DatabaseURL(), schema)
	s, err := store.Open(ctx, store.Options{URL: u, MaxConns: 8})
	if err != nil {
		t.Fatalf("open store on schema %s: %v", schema, err)
	}
	t.Cleanup(s.Close)
	p, err := testPool(u)
	if err != nil {
		t.Fatalf("open a pool on schema %s: %v", schema, err)
	}
	t.Cleanup(p.Close)
	return &DB{URL: u, Schema: schema, Store: s, Pool: p}
}

// testPool returns a pool on url for a test's raw SQL, under the bounds of
// the store's own pool (store.PoolConfig).
func testPool(url string) (*pgxpool.Pool, error) {
	cfg, err := store.PoolConfig(store.Options{URL: url, AppName: "gridbatch-test"})
	if err != nil {
		return nil, err
	}
	return pgxpool.NewWithConfig(context.Background(), cfg)
}

// SchemaURL returns base with search_path set to schema.
func SchemaURL(base, schema string) string {
	u, err := url.Parse(base)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "?"
	}
	return u.Host
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Env returns the environment for a gridbatch binary pointed at r and db,
// on top of the current one.
func Env(r *Redis, db *DB, extra ...string) []string {
	env := append(os.Environ(),
		"GRIDBATCH_REDIS_URL="+r.URL,
		"GRIDBATCH_DATABASE_URL="+db.URL,
		"GRIDBATCH_LOG_FORMAT=text",
	)
	return append(env, extra...)
}

// Eventually polls cond every 100ms until it is true or timeout passes, then fails with msg.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s: %s", timeout, fmt.Sprint(msg))
}
