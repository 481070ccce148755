package main

import (
	"context"
	"fmt"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "migrate",
		summary: "create or update the PostgreSQL schema (safe to run concurrently)",
		about: `Applies every pending embedded SQL migration to GRIDBATCH_DATABASE_URL, then
creates the results table <kind>_timeseries of every model that GRIDBATCH_MODELS_FILE
declares (see 'enqueuer models'). Several migrate processes may start at once: a
PostgreSQL advisory lock lets one apply the migrations while the others wait and
then find nothing to do.`,
		example: "  enqueuer migrate\n  GRIDBATCH_DATABASE_URL=postgres://gridbatch:secret@db:5432/gridbatch enqueuer migrate",
		run:     runMigrate,
	})
}

func runMigrate(ctx context.Context, e *env, args []string) error {
	c := commandNamed("migrate")
	cfg, _, done, err := parse(c, e, args, false, nil)
	if done {
		return err
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	applied, err := st.Migrate(ctx)
	if err != nil {
		return err
	}
	v, err := st.SchemaVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if len(applied) == 0 {
		fmt.Fprintf(e.stderr, "schema is up to date (version %d)\n", v)
	} else {
		fmt.Fprintf(e.stderr, "applied %d migration(s); schema is at version %d\n", len(applied), v)
	}
	created, err := st.EnsureResultsTables(ctx, e.models.Kinds())
	if err != nil {
		return err
	}
	for _, t := range created {
		fmt.Fprintf(e.stderr, "created results table %s\n", t)
	}
	return nil
}

func commandNamed(name string) command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	panic("no command " + name)
}

// enqueuerApp names the enqueuer's PostgreSQL connections (application_name).
const enqueuerApp = "gridbatch-enqueuer"

func openStore(ctx context.Context, c config.Common) (*store.Store, error) {
	return connect.OpenStore(ctx, c, enqueuerApp)
}
