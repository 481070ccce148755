// Package model is the set of models a gridbatch binary knows: a declared
// Spec per kind (its inputs, series, years, timeout and how it runs), the
// built-in Go models ph and hazard, and the loader of the models file
// (GRIDBATCH_MODELS_FILE). The worker, the enqueuer, the scheduler and the
// store share this one description of a model; how a declared command is run
// as a supervised process lives in package model/process.
package model

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The defaults of a models-file entry.
var (
	// DefaultInputs are the per-cell inputs `enqueuer seed` writes.
	DefaultInputs = []string{"mu0", "sigma", "xi"}
	// DefaultSeries are the reference model's scenarios.
	DefaultSeries = []string{"ssp126", "ssp245", "ssp585"}
)

// DefaultFirstYear and DefaultYears are the years of a series by default:
// 2021 to 2100.
const (
	DefaultFirstYear = 2021
	DefaultYears     = 80
)

// KindPattern is what a kind must match: it names the results table
// <kind>_timeseries.
var KindPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,30}$`)

// InputPattern is what an input's name must match: it is a column of
// cell_params.
var InputPattern = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// Spec declares one model kind.
type Spec struct {
	// Kind names the model and its results table <kind>_timeseries.
	Kind string
	// Command is the argv of a model process (no shell). Empty for a Go
	// model compiled into the binaries, such as the built-in ph and hazard.
	Command []string
	// Workdir is the model process's working directory. Defaults to the
	// models file's folder.
	Workdir string
	// Env is added to the worker's environment for the model process.
	Env map[string]string
	// Inputs are the per-cell inputs the model reads, columns of
	// cell_params. Defaults to DefaultInputs.
	Inputs []string
	// Series are the series computed per cell, stored in the scenario
	// column. Defaults to DefaultSeries.
	Series []string
	// FirstYear is the year of a series' first value. Defaults to 2021.
	FirstYear int
	// Years is the length of every series. Defaults to 80.
	Years int
	// Timeout bounds one chunk. Zero means the worker's task timeout.
	Timeout time.Duration
	// MemoryLimit bounds the RSS of a model process and its children, in
	// bytes. Zero means no limit.
	MemoryLimit int64
	// MaxChunksPerProcess replaces a model process after this many chunks.
	// Zero means never.
	MaxChunksPerProcess int
	// Processes is the number of model processes per worker. Zero means
	// the worker's concurrency.
	Processes int
	// Units and LongName describe the values (CF attributes in exports).
	Units, LongName string
	// File is the models file that declared the model; empty for a
	// built-in one.
	File string
	// Checks are the checks a batch's rows must pass to be published;
	// nil declares none. The built-in ph declares range [0, 1].
	Checks *Checks
}

// Table returns the results table of the model: <kind>_timeseries.
func (s Spec) Table() string { return s.Kind + "_timeseries" }

// Process reports whether the model runs as a supervised process.
func (s Spec) Process() bool { return len(s.Command) > 0 }

// Source says where the model comes from: "built-in", "go" for a Go model
// added by a program, or the command it runs.
func (s Spec) Source() string {
	switch {
	case s.Process():
		return strings.Join(s.Command, " ")
	case s.File == "":
		return "built-in"
	}
	return "go"
}

// Values returns how many values the model computes for n cells:
// n·len(Series)·Years.
func (s Spec) Values(n int) int { return n * len(s.Series) * s.Years }

// Cells are a chunk's cells as columns, each of the same length: grid ids,
// cell centres (degrees) and one column per declared input, in the order of
// Spec.Inputs.
type Cells struct {
	GridID   []int64
	Lat, Lon []float64
	Inputs   [][]float64
}

// Len returns the number of cells.
func (c Cells) Len() int { return len(c.GridID) }

// Computer computes a chunk: for the cells c it returns
// c.Len()·len(Series)·Years values in C order (cell, then series, then
// year). Once ctx is done it returns an error wrapping ctx.Err().
type Computer interface {
	Compute(ctx context.Context, spec Spec, c Cells) ([]float64, error)
}

// ComputerFunc adapts a function to Computer.
type ComputerFunc func(ctx context.Context, spec Spec, c Cells) ([]float64, error)

// Compute calls f.
func (f ComputerFunc) Compute(ctx context.Context, spec Spec, c Cells) ([]float64, error) {
	return f(ctx, spec, c)
}

// ErrUnknown is returned (wrapped) for a kind the set does not hold.
var ErrUnknown = errors.New("unknown model kind")

// ErrInvalid marks a reply no retry can fix and that is the model's fault,
// not its cells': a reply of the wrong shape or type. A chunk failing with
// it is dead-lettered at once, whole.
var ErrInvalid = errors.New("invalid model result")

// ErrPermanent marks an error no retry will fix that comes from the cells a
// model was given (bad inputs): a process model's gridbatch_model.Permanent,
// and inputs the built-in models reject. A chunk failing with it is split at
// once around the failing cells, never retried (batch.Classify).
var ErrPermanent = errors.New("permanent model error")

// ErrRaised marks a model's own error for a chunk (an exception in a
// process model's compute); ErrCrashed a model process that died mid-chunk
// (a signal, an exit). Either is retried, then split (batch.Classify).
var (
	ErrRaised  = errors.New("model raised")
	ErrCrashed = errors.New("model process died")
)

// ErrMemoryLimit marks a model process killed over its memory_limit: its
// chunk is retried as two halves (batch.Classify).
var ErrMemoryLimit = errors.New("memory limit")

// Set is the models a binary knows, by kind. Build it with Builtins, Load or
// New and Add; it is read-only once shared.
type Set struct {
	specs map[string]Spec
	// goComputers holds the Computer of each Go model by kind; a process
	// model has none.
	goComputers map[string]Computer
}

// New returns an empty set.
func New() *Set { return &Set{specs: map[string]Spec{}, goComputers: map[string]Computer{}} }

// Add declares spec, filling its defaults. A Go model passes its Computer;
// a process model passes nil. A kind already in the set is replaced.
func (s *Set) Add(spec Spec, c Computer) error {
	spec = withDefaults(spec)
	if err := spec.validate(); err != nil {
		return err
	}
	if c == nil && !spec.Process() {
		return fmt.Errorf("model %s: no command and no Go computer", spec.Kind)
	}
	s.specs[spec.Kind] = spec
	if c != nil {
		s.goComputers[spec.Kind] = c
	} else {
		delete(s.goComputers, spec.Kind)
	}
	return nil
}

// Kinds returns the kinds of the set, sorted.
func (s *Set) Kinds() []string {
	kinds := make([]string, 0, len(s.specs))
	for k := range s.specs {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	return kinds
}

// Specs returns the specs of the set in the order of Kinds.
func (s *Set) Specs() []Spec {
	out := make([]Spec, 0, len(s.specs))
	for _, k := range s.Kinds() {
		out = append(out, s.specs[k])
	}
	return out
}

// Spec returns the spec of kind. For an unknown kind it returns an error
// wrapping ErrUnknown that lists the known kinds, for example
// `unknown model kind "x" (known: hazard, ph)`.
func (s *Set) Spec(kind string) (Spec, error) {
	spec, ok := s.specs[kind]
	if !ok {
		return Spec{}, fmt.Errorf("%w %q (known: %s)", ErrUnknown, kind, strings.Join(s.Kinds(), ", "))
	}
	return spec, nil
}

// Go returns the Computer of a Go model; ok is false for a process model or
// an unknown kind.
func (s *Set) Go(kind string) (c Computer, ok bool) {
	c, ok = s.goComputers[kind]
	return c, ok
}

// Inputs returns every input some model of the set reads, sorted.
func (s *Set) Inputs() []string {
	var all []string
	for _, spec := range s.specs {
		for _, in := range spec.Inputs {
			if !slices.Contains(all, in) {
				all = append(all, in)
			}
		}
	}
	slices.Sort(all)
	return all
}

func withDefaults(s Spec) Spec {
	if s.Inputs == nil {
		s.Inputs = slices.Clone(DefaultInputs)
	}
	if s.Series == nil {
		s.Series = slices.Clone(DefaultSeries)
	}
	if s.FirstYear == 0 {
		s.FirstYear = DefaultFirstYear
	}
	if s.Years == 0 {
		s.Years = DefaultYears
	}
	return s
}

// validate reports the first bad field as a FieldError.
func (s Spec) validate() error {
	bad := func(field, format string, a ...any) error {
		return &FieldError{File: s.File, Kind: s.Kind, Field: field, Problem: fmt.Sprintf(format, a...)}
	}
	switch {
	case !KindPattern.MatchString(s.Kind):
		return bad("kind", "%q must match %s (it names the table <kind>_timeseries)", s.Kind, KindPattern)
	case len(s.Inputs) == 0:
		return bad("inputs", "a model reads at least one input")
	case len(s.Series) == 0:
		return bad("series", "a model computes at least one series")
	case s.FirstYear < 1 || s.FirstYear > 9999:
		return bad("first_year", "%d must be between 1 and 9999", s.FirstYear)
	case s.Years < 1 || s.Years > 10000:
		return bad("years", "%d must be between 1 and 10000", s.Years)
	case s.Timeout < 0:
		return bad("timeout", "%s must be positive, e.g. 5m", s.Timeout)
	case s.MemoryLimit < 0:
		return bad("memory_limit", "must be positive, e.g. 2GiB")
	case s.MaxChunksPerProcess < 0:
		return bad("max_chunks_per_process", "%d must be 0 (never) or more", s.MaxChunksPerProcess)
	case s.Processes < 0 || s.Processes > 256:
		return bad("processes", "%d must be between 0 (the worker's concurrency) and 256", s.Processes)
	}
	for _, in := range s.Inputs {
		if !InputPattern.MatchString(in) || slices.Contains([]string{"step", "grid_id", "lat", "lon"}, in) {
			return bad("inputs", "%q must match %s and not be step, grid_id, lat or lon", in, InputPattern)
		}
	}
	if dup := firstDuplicate(s.Inputs); dup != "" {
		return bad("inputs", "%q is listed twice", dup)
	}
	for _, se := range s.Series {
		if se == "" || len(se) > 64 {
			return bad("series", "%q must be 1 to 64 characters", se)
		}
	}
	if dup := firstDuplicate(s.Series); dup != "" {
		return bad("series", "%q is listed twice", dup)
	}
	if f, p := s.Checks.validate(); f != "" {
		return bad(f, "%s", p)
	}
	if s.Process() && s.Command[0] == "" {
		return bad("command", "the program (its first element) is empty")
	}
	return nil
}

func firstDuplicate(xs []string) string {
	for i, x := range xs {
		if slices.Contains(xs[:i], x) {
			return x
		}
	}
	return ""
}

// FieldError is a bad models-file entry: its file, entry and field.
type FieldError struct {
	File, Kind, Field, Problem string
	// Entry is the entry's index in the file, from 1; 0 when unknown.
	Entry int
}

func (e *FieldError) Error() string {
	where := e.File
	if where == "" {
		where = "model"
	}
	entry := fmt.Sprintf("kind %q", e.Kind)
	if e.Entry > 0 {
		entry = fmt.Sprintf("entry %d (kind %q)", e.Entry, e.Kind)
	}
	return fmt.Sprintf("%s: %s: %s: %s", where, entry, e.Field, e.Problem)
}
