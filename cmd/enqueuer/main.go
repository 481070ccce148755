// Command enqueuer is the operator's CLI: migrate the schema, seed a grid,
// run and watch batches, read results and work the dead-letter queue.
package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/gridbatch/gridbatch/internal/cli"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/model/process"
	"github.com/gridbatch/gridbatch/internal/store"
)

func main() {
	process.RunShimIfAsked() // verify starts model processes through this binary
	cli.Main("enqueuer", run)
}

// command is one subcommand. Each lives in its own file.
type command struct {
	name    string
	usage   string // the arguments after the name
	summary string
	about   string // longer help, printed by NAME --help
	example string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands is filled by the init functions of the subcommand files.
var commands []command

// helpGroups is how --help lists the commands: by task, each group in the
// order an operator meets its commands (the files register them in file
// name order). A command in no group is listed last, under Other.
var helpGroups = []struct {
	title string
	names []string
}{
	{"Set-up", []string{"migrate", "models", "seed", "import"}},
	{"Batches", []string{"run", "status", "list", "cancel", "publish", "prune"}},
	{"Results", []string{"results", "export", "diff", "verify"}},
	{"Dead letters", []string{"dlq"}},
}

func register(c command) { commands = append(commands, c) }

// env is what a subcommand runs with.
type env struct {
	stdout, stderr io.Writer
	// models are those of GRIDBATCH_MODELS_FILE, loaded by parse.
	models *model.Set
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		if len(args) > 1 && args[0] == "help" {
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		usage(stdout)
		if len(args) == 0 {
			return cli.WithCode(cli.ExitError, nil)
		}
		return nil
	}
	name := args[0]
	for _, c := range commands {
		if c.name == name {
			// Every command on a database without the schema says to migrate.
			return store.SchemaHint(c.run(ctx, &env{stdout: stdout, stderr: stderr}, args[1:]))
		}
	}
	return fmt.Errorf("unknown command %q; run 'enqueuer --help' for the list", name)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `enqueuer — the gridbatch operator's CLI.

gridbatch computes a climate-risk model over every cell of a grid as a batch of
chunk tasks on Redis (asynq), run by any number of worker processes, with results
in PostgreSQL. Configuration comes from GRIDBATCH_* environment variables; flags
override them. Every command answers --help.

Usage: enqueuer COMMAND [flags] [args]

Commands, by task:
`)
	listed := map[string]bool{}
	group := func(title string, names []string) {
		fmt.Fprintf(w, "  %s\n", title)
		for _, name := range names {
			for _, c := range commands {
				if c.name == name {
					fmt.Fprintf(w, "    %-10s %s\n", c.name, c.summary)
					listed[name] = true
				}
			}
		}
	}
	for _, g := range helpGroups {
		group(g.title, g.names)
	}
	var other []string
	for _, c := range commands {
		if !listed[c.name] {
			other = append(other, c.name)
		}
	}
	if len(other) > 0 {
		group("Other", other)
	}
	fmt.Fprint(w, `
Exit codes: 0 ok/succeeded, 1 usage or runtime error, 3 partial, 4 timed out or
failed, 5 refused (a batch of that kind is already running), 6 cancelled,
7 held (computed, but its declared checks failed, so it was not published).

A first run:
  enqueuer migrate
  enqueuer seed --bbox 124,33,132,39 --step 0.05
  id=$(enqueuer run --kind ph | head -1)
  enqueuer status "$id"
`)
}

// newSet starts the flag set of a subcommand, with the common flags bound.
func newSet(c command, cfg *config.Enqueuer, batch bool) *config.Set {
	about := fmt.Sprintf("Usage: enqueuer %s", c.name)
	if c.usage != "" {
		about += " " + c.usage
	}
	about += "\n\n" + strings.TrimSpace(c.about)
	s := config.NewSet("enqueuer "+c.name, about, c.example)
	s.Common(&cfg.Common)
	if batch {
		s.Batch(&cfg.Batch)
	}
	return s
}

// parse parses args into a fresh config, validates it and handles --print-config.
// done reports that the command has nothing more to do.
func parse(c command, e *env, args []string, batch bool, bind func(*config.Set)) (cfg config.Enqueuer, set *config.Set, done bool, err error) {
	set = newSet(c, &cfg, batch)
	if bind != nil {
		bind(set)
	}
	if err = set.Parse(args); err != nil {
		return cfg, set, true, err
	}
	if cfg.PrintConfig {
		set.PrintConfig(e.stdout)
		return cfg, set, true, nil
	}
	if err = cfg.Common.Validate(); err != nil {
		return cfg, set, true, err
	}
	if e.models, err = connect.Models(cfg.Common); err != nil {
		return cfg, set, true, err
	}
	if batch {
		if err = cfg.Batch.Validate(); err != nil {
			return cfg, set, true, err
		}
	}
	return cfg, set, false, nil
}
