package store

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"math"
	"path"

	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationTable is goose's bookkeeping table, in the current schema.
const migrationTable = "gridbatch_schema_migrations"

// Migrate applies every pending embedded migration and returns the versions
// it applied. Concurrent callers are serialised by a PostgreSQL advisory lock
// (goose's session locker): the first applies, the others find nothing to do.
func (s *Store) Migrate(ctx context.Context) ([]int64, error) {
	return s.MigrateTo(ctx, math.MaxInt64)
}

// MigrateTo is Migrate up to and including version: for tests of a
// migration, on a schema as an earlier gridbatch left it.
func (s *Store) MigrateTo(ctx context.Context, version int64) ([]int64, error) {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, err
	}
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, sub,
		goose.WithSessionLocker(locker), goose.WithTableName(migrationTable))
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	results, err := p.UpTo(ctx, version)
	if err != nil {
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	var applied []int64
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// LatestMigration returns the version of the newest embedded migration:
// the schema version Migrate brings a database to.
func LatestMigration() int64 {
	files, _ := fs.Glob(migrations, "migrations/*.sql")
	var latest int64
	for _, f := range files {
		if v, err := goose.NumericComponent(path.Base(f)); err == nil {
			latest = max(latest, v)
		}
	}
	return latest
}

// SchemaVersion returns the highest applied migration, 0 when none is.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version_id), 0) FROM `+migrationTable+` WHERE is_applied`).Scan(&v)
	if IsSchemaError(err) {
		return 0, nil
	}
	return v, err
}
