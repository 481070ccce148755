// Command worker runs chunk and batch tasks from the asynq queues "grid" and
// "batch". Run as many replicas as you like.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/model/process"
	"github.com/gridbatch/gridbatch/internal/worker"
)

func main() {
	process.RunShimIfAsked()
	cli.Main("worker", run)
}

const about = `Usage: worker [flags]

Pulls chunk tasks from the asynq queue "grid" and batch tasks from "batch",
computes each chunk's cells and writes their series to PostgreSQL. Scale it by
running more replicas. Serves /healthz (liveness), /readyz (Redis and PostgreSQL
reachable, database migrated) and /metrics on GRIDBATCH_HTTP_ADDR. On SIGTERM it
stops taking tasks, lets in-flight ones finish within GRIDBATCH_SHUTDOWN_TIMEOUT,
requeues the rest and exits 0. On SIGHUP it reads GRIDBATCH_MODELS_FILE again
and, when its models changed, shuts down the same way and starts again in the
same process (same PID, arguments and environment) with the new models.`

const example = `  worker --concurrency 4
  GRIDBATCH_TASK_TIMEOUT=10m GRIDBATCH_MAX_RETRY=3 worker
  worker --print-config`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg config.Worker
	set := config.NewSet("worker", about, example)
	cfg.Bind(set)
	if err := set.Parse(args); err != nil {
		return err
	}
	if cfg.PrintConfig {
		set.PrintConfig(stdout)
		return nil
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	err := worker.Run(ctx, cfg, stderr)
	if errors.Is(err, worker.ErrReload) {
		return reexec()
	}
	return err
}

// reexec replaces the process with a fresh run of the same binary, with the
// same arguments and environment: a worker that reads its models file anew.
func reexec() error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	if err := syscall.Exec(self, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("reload: exec %s: %w", self, err)
	}
	return nil
}
