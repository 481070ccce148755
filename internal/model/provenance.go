package model

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Declaration is the spec as parsed, with snake_case keys as in the
// models file and every default filled: what a batch records of its
// model (its JSON, keys sorted, is what batch.Provenance digests).
func (s Spec) Declaration() map[string]any {
	d := map[string]any{
		"kind": s.Kind, "inputs": s.Inputs, "series": s.Series, "first_year": s.FirstYear, "years": s.Years,
		"source": s.Source(), "units": s.Units, "long_name": s.LongName,
	}
	if s.Process() {
		d["command"], d["workdir"], d["env"] = s.Command, s.Workdir, s.Env
		d["timeout"], d["memory_limit"] = s.Timeout.String(), s.MemoryLimit
		d["max_chunks_per_process"], d["processes"] = s.MaxChunksPerProcess, s.Processes
	}
	if s.Checks.Declared() {
		d["checks"] = s.Checks
	}
	return d
}

// ProgramFiles returns the model's program files, absolute: each element
// of its command that names an existing regular file (relative ones read
// from Workdir, the program also looked up in PATH), and, for a Python
// model (its program is python…), the SDK file gridbatch_model.py where
// the model would import it from: the folder of a script it names, that
// folder's ../../sdk/python (as the example models do), Workdir,
// Workdir/sdk/python or a folder of the entry's PYTHONPATH. A built-in
// model has none.
func (s Spec) ProgramFiles() []string {
	var files []string
	add := func(p string) {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && !slices.Contains(files, p) {
			files = append(files, p)
		}
	}
	var dirs []string
	for i, arg := range s.Command {
		p := arg
		if !filepath.IsAbs(p) {
			p = filepath.Join(s.Workdir, p)
		}
		if _, err := os.Stat(p); err != nil && i == 0 && !strings.Contains(arg, "/") {
			if lp, err := lookPath(arg); err == nil {
				p = lp
			}
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			add(filepath.Clean(p))
			if strings.HasSuffix(p, ".py") {
				dirs = append(dirs, filepath.Dir(p), filepath.Join(filepath.Dir(p), "..", "..", "sdk", "python"))
			}
		}
	}
	if !s.Process() || !strings.HasPrefix(filepath.Base(s.Command[0]), "python") {
		return files
	}
	dirs = append(dirs, s.Workdir, filepath.Join(s.Workdir, "sdk", "python"))
	if pp := s.Env["PYTHONPATH"]; pp != "" {
		dirs = append(dirs, filepath.SplitList(pp)...)
	}
	for _, d := range dirs {
		sdk := filepath.Join(d, "gridbatch_model.py")
		if st, err := os.Stat(sdk); err == nil && st.Mode().IsRegular() {
			add(filepath.Clean(sdk))
			break
		}
	}
	return files
}

// lookPath finds a program in PATH, as exec.LookPath without its checks
// on the current directory.
func lookPath(name string) (string, error) {
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// processKey is the context key of a *ProcessNote.
type processKey struct{}

// ProcessNote is where a runtime notes the pid of the model process that
// computed a chunk (see WithProcessNote and NoteProcess).
type ProcessNote struct{ PID int }

// WithProcessNote returns ctx carrying a note that NoteProcess fills.
func WithProcessNote(ctx context.Context) (context.Context, *ProcessNote) {
	n := &ProcessNote{}
	return context.WithValue(ctx, processKey{}, n), n
}

// NoteProcess records pid in ctx's note, when it has one.
func NoteProcess(ctx context.Context, pid int) {
	if n, ok := ctx.Value(processKey{}).(*ProcessNote); ok {
		n.PID = pid
	}
}
