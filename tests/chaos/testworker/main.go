//go:build integration

// Command testworker is the real worker with two test-only additions, for
// the chaos suite: a task type whose handler ignores cancellation, and a
// model kind that panics on some cells. Never built outside the tests.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/hibiken/asynq"

	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/model/process"
	"github.com/gridbatch/gridbatch/internal/worker"
	"github.com/gridbatch/gridbatch/tests/chaos/chaosmodel"
)

func main() {
	process.RunShimIfAsked()
	cli.Main("testworker", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		var cfg config.Worker
		set := config.NewSet("testworker", "test-only worker", "")
		cfg.Bind(set)
		if err := set.Parse(args); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			return err
		}
		return worker.Run(ctx, cfg, stderr, worker.WithHandler(chaosmodel.TypeHang, asynq.HandlerFunc(hang)),
			worker.WithModel(chaosmodel.Spec(), chaosmodel.Compute))
	})
}

// hang ignores its context on purpose: it sleeps far past any timeout.
func hang(ctx context.Context, t *asynq.Task) error {
	fmt.Fprintln(os.Stderr, "test:hang started; ignoring cancellation")
	time.Sleep(10 * time.Minute)
	return nil
}
