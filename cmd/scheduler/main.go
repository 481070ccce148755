// Command scheduler fires a batch of each kind on its cron schedule. Several
// replicas may run; one leads at a time.
package main

import (
	"context"
	"errors"
	"io"

	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
)

func main() { cli.Main("scheduler", run) }

const about = `Usage: scheduler [flags]

Fires one batch of each kind on its cron schedule (GRIDBATCH_SCHEDULES, read in
GRIDBATCH_TIMEZONE). Safe to run as several replicas: one leads at a time, and a
dead leader is replaced within seconds. A tick missed while no scheduler ran
fires once on start when it is within GRIDBATCH_MISFIRE_GRACE.`

const example = `  scheduler --schedules 'ph=0 2 1 1 *;hazard=0 3 1 1 *' --timezone Asia/Seoul
  scheduler --print-config`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg config.Scheduler
	set := config.NewSet("scheduler", about, example)
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
	return errors.New("the scheduler is not built yet (issue: Scheduler); trigger batches with 'enqueuer run'")
}
