package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/gridbatch/gridbatch/internal/config"
)

func init() {
	register(command{
		name:    "models",
		summary: "list the model kinds: built-in and those of GRIDBATCH_MODELS_FILE",
		about: `Lists every model kind a batch can run: the built-in ph and hazard (Go, in the
worker) and those declared in the models file GRIDBATCH_MODELS_FILE (each run by
the workers as supervised processes of its command). An entry named ph or hazard
replaces the built-in one. A bad models file is refused with one line naming
the file, the entry and the field. Reads no database.`,
		example: "  enqueuer models\n  GRIDBATCH_MODELS_FILE=examples/models.yaml enqueuer models --json",
		run:     runModels,
	})
}

// modelRow is one kind as `enqueuer models --json` prints it.
type modelRow struct {
	Kind                string   `json:"kind"`
	Source              string   `json:"source"`
	Table               string   `json:"table"`
	Inputs              []string `json:"inputs"`
	Series              []string `json:"series"`
	FirstYear           int      `json:"first_year"`
	Years               int      `json:"years"`
	TimeoutSeconds      float64  `json:"timeout_seconds,omitempty"`
	MemoryLimitBytes    int64    `json:"memory_limit_bytes,omitempty"`
	Processes           int      `json:"processes"`
	MaxChunksPerProcess int      `json:"max_chunks_per_process"`
	Workdir             string   `json:"workdir,omitempty"`
}

func runModels(ctx context.Context, e *env, args []string) error {
	var asJSON bool
	_, set, done, err := parse(commandNamed("models"), e, args, false, func(s *config.Set) {
		s.Bool(&asJSON, "json", "", false, "print one JSON document")
	})
	if done {
		return err
	}
	if len(set.Args()) > 0 {
		return fmt.Errorf("models takes no arguments (got %q)", set.Args()[0])
	}
	var rows []modelRow
	for _, s := range e.models.Specs() {
		rows = append(rows, modelRow{Kind: s.Kind, Source: s.Source(), Table: s.Table(), Inputs: s.Inputs, Series: s.Series,
			FirstYear: s.FirstYear, Years: s.Years, TimeoutSeconds: s.Timeout.Seconds(), MemoryLimitBytes: s.MemoryLimit,
			Processes: s.Processes, MaxChunksPerProcess: s.MaxChunksPerProcess, Workdir: s.Workdir})
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"models": rows})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tSOURCE\tINPUTS\tSERIES\tYEARS\tTIMEOUT")
	for _, s := range e.models.Specs() {
		timeout := "GRIDBATCH_TASK_TIMEOUT"
		if s.Timeout > 0 {
			timeout = s.Timeout.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d-%d\t%s\n", s.Kind, s.Source(), strings.Join(s.Inputs, ","), strings.Join(s.Series, ","),
			s.FirstYear, s.FirstYear+s.Years-1, timeout)
	}
	return tw.Flush()
}
