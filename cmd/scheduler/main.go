// Command scheduler fires a batch of each kind on its cron schedule. Several
// replicas may run; one leads at a time.
package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/schedule"
)

func main() { cli.Main("scheduler", run) }

const about = `Usage: scheduler [flags]

Fires one batch of each kind on its cron schedule (GRIDBATCH_SCHEDULES, read in
GRIDBATCH_TIMEZONE): 5 fields (minute hour day month weekday), or 6 with a
leading seconds field, or @daily and the like. Safe to run as several
replicas: one leads through a lease in Redis (GRIDBATCH_LEADER_TTL), and a dead
leader is replaced within seconds. Each tick fires at most once, whatever
fails over. A tick missed while no scheduler ran fires once on start when it
is within GRIDBATCH_MISFIRE_GRACE; several missed ticks coalesce into the
latest, and older ones are logged as missed. A tick that comes while the
previous batch of its kind still runs is skipped, with a log line naming that
batch. Batches that end other than succeeded, and skipped or missed ticks, are
posted to GRIDBATCH_ALERT_WEBHOOK_URL (Slack-compatible JSON) when it is set.
The batch settings (bbox, step, chunk size, deadline, lock TTL) are the
enqueuer's. A leader whose tick loop stalls (a wait without a bound) gives
its lease up, so a standby leads. Serves /healthz (liveness: fails when the
tick loop or the lease loop has stalled) and /readyz (Redis and PostgreSQL
answer) on GRIDBATCH_HTTP_ADDR. On SIGTERM it releases the lease and exits 0.`

const example = `  scheduler --schedules 'ph=0 2 1 1 *;hazard=0 3 1 1 *' --timezone Asia/Seoul
  GRIDBATCH_SCHEDULES='ph=*/10 * * * * *' GRIDBATCH_MISFIRE_GRACE=1m scheduler
  scheduler --print-config    # the configuration and each kind's next 3 fire times`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg config.Scheduler
	set := config.NewSet("scheduler", about, example)
	cfg.Bind(set)
	if err := set.Parse(args); err != nil {
		return err
	}
	if cfg.PrintConfig {
		set.PrintConfig(stdout)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	loc, _ := time.LoadLocation(cfg.TimeZone) // checked by Validate
	models, err := connect.Models(cfg.Common)
	if err != nil {
		return err
	}
	schedules, err := schedule.Parse(cfg.Schedules, loc, models)
	if err != nil {
		return fmt.Errorf("GRIDBATCH_SCHEDULES=%q: %w", cfg.Schedules, err)
	}
	if cfg.PrintConfig {
		printNext(stdout, schedules, time.Now())
		return nil
	}
	return serve(ctx, cfg, schedules, models, stderr)
}

// printNext writes each kind's next 3 fire times, as comments after the
// configuration.
func printNext(w io.Writer, schedules []schedule.Schedule, now time.Time) {
	for _, s := range schedules {
		var ts []string
		for _, t := range s.NextN(now, 3) {
			ts = append(ts, t.In(s.Location).Format(time.RFC3339))
		}
		fmt.Fprintf(w, "# %s=%s (%s) fires next at %s\n", s.Kind, s.Spec, s.Location, strings.Join(ts, ", "))
	}
}
