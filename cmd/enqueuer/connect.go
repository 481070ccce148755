package main

import (
	"context"
	"io"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/logging"
)

// openConn connects the commands that start, cancel or requeue: Redis,
// PostgreSQL and the batch service on them. Their log lines (go-redis's,
// the batch service's) go to stderr only at GRIDBATCH_LOG_LEVEL=debug.
func openConn(ctx context.Context, c config.Common, stderr io.Writer) (*connect.Conn, error) {
	log := logging.New(io.Discard, c.LogFormat, c.LogLevel)
	if c.LogLevel == "debug" {
		log = logging.New(stderr, c.LogFormat, c.LogLevel)
	}
	return connect.Open(ctx, c, connect.Options{App: enqueuerApp, Log: log})
}
