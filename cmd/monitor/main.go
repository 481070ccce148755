// Command monitor serves asynqmon and gridbatch's batch view behind
// authentication.
package main

import (
	"context"
	"errors"
	"io"

	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
)

func main() { cli.Main("monitor", run) }

const about = `Usage: monitor [flags]

Serves the batch view at /, asynqmon at /asynqmon/ and Prometheus metrics at
/metrics, all behind HTTP basic auth (GRIDBATCH_MONITOR_USER and
GRIDBATCH_MONITOR_PASSWORD); /healthz is open.`

const example = `  GRIDBATCH_MONITOR_USER=ops GRIDBATCH_MONITOR_PASSWORD=... monitor --addr :8080
  monitor --insecure-no-auth --addr 127.0.0.1:8080`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg config.Monitor
	set := config.NewSet("monitor", about, example)
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
	return errors.New("the monitor is not built yet (issue: Observability and the monitor); use asynqmon directly meanwhile")
}
