// Package health serves the liveness and readiness endpoints of gridbatch's
// long-running processes (worker, scheduler), so that both answer alike.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/store"
)

// PingTimeout bounds each dependency's ping in /readyz.
const PingTimeout = 2 * time.Second

// Register adds to mux:
//
//   - GET /healthz, liveness: "ok", or 503 with one "unhealthy: …" line per
//     problem live reports (a restart is the remedy);
//   - GET /readyz, readiness: "ready" when Redis and PostgreSQL each answer a
//     ping within PingTimeout and the database is migrated (its schema at
//     store.LatestMigration or later), else 503 naming each that did not
//     (passwords masked) or the migration to run, and one line per problem
//     notReady reports (nil: none), such as a model whose processes cannot
//     start.
func Register(mux *http.ServeMux, rdb redis.UniversalClient, st *store.Store, live, notReady func() []string) {
	var migrated atomic.Bool // once migrated, a schema stays so
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if problems := live(); len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range problems {
				fmt.Fprintln(w, "unhealthy: "+p)
			}
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), PingTimeout)
		defer cancel()
		var problems []string
		if err := rdb.Ping(ctx).Err(); err != nil {
			problems = append(problems, "redis: "+config.Mask(err.Error()))
		}
		if err := st.Ping(ctx); err != nil {
			problems = append(problems, "postgres: "+config.Mask(err.Error()))
		} else if !migrated.Load() {
			if p := schemaProblem(ctx, st); p != "" {
				problems = append(problems, p)
			} else {
				migrated.Store(true)
			}
		}
		if notReady != nil {
			problems = append(problems, notReady()...)
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range problems {
				fmt.Fprintln(w, p)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
}

// schemaProblem says what is missing from the database's schema, "" when
// nothing is: a worker on an unmigrated database fails every chunk.
func schemaProblem(ctx context.Context, st *store.Store) string {
	v, err := st.SchemaVersion(ctx)
	latest := store.LatestMigration()
	switch {
	case err != nil:
		return "postgres: cannot read the schema version: " + config.Mask(err.Error())
	case v == 0:
		return "postgres: the database is not migrated (no gridbatch tables in its schema): run `enqueuer migrate`"
	case v < latest:
		return fmt.Sprintf("postgres: the schema is at migration %d of %d: run `enqueuer migrate`", v, latest)
	}
	return ""
}

// Server serves a process's endpoints on GRIDBATCH_HTTP_ADDR.
type Server struct {
	srv *http.Server
	ln  net.Listener
}

// Listen binds addr, the value of GRIDBATCH_HTTP_ADDR, and serves h on it in
// the background; a bind error names the variable. Errors while serving are
// logged.
func Listen(addr string, h http.Handler, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("GRIDBATCH_HTTP_ADDR=%s: %w", addr, err)
	}
	s := &Server{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server", "error", err)
		}
	}()
	return s, nil
}

// Addr is the address served, with the port chosen when addr asked for 0.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops serving, waiting for requests in progress until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
