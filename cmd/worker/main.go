// Command worker runs chunk and batch tasks from the asynq queues "grid" and
// "batch". Run as many replicas as you like.
package main

import (
	"context"
	"io"

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
reachable) and /metrics on GRIDBATCH_HTTP_ADDR. On SIGTERM it stops taking
tasks, lets in-flight ones finish within GRIDBATCH_SHUTDOWN_TIMEOUT, requeues the
rest and exits 0.`

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
	return worker.Run(ctx, cfg, stderr)
}
