package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Load returns the built-in models with those of the models file at path
// added; an entry whose kind is ph or hazard replaces that built-in. An
// empty path returns Builtins. A bad file is an error of one line naming the
// file, the entry and the field (a *FieldError where an entry is at fault).
func Load(path string) (*Set, error) {
	set := Builtins()
	if path == "" {
		return set, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("models file %s: %w (set GRIDBATCH_MODELS_FILE to a readable YAML file, or unset it for the built-in models)", path, errors.Unwrap(err))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("models file %s: %w", path, err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("models file %s: not valid YAML: %s", path, oneLine(err))
	}
	var doc struct {
		Models []json.RawMessage `json:"models"`
	}
	if err := strictJSON(js, &doc); err != nil || doc.Models == nil {
		return nil, fmt.Errorf("models file %s: want a top-level 'models:' list of entries (see examples/models.yaml)", path)
	}
	seen := map[string]int{}
	for i, rawEntry := range doc.Models {
		spec, err := parseEntry(rawEntry, path, filepath.Dir(abs))
		if err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				fe.Entry = i + 1
			}
			return nil, err
		}
		if first, dup := seen[spec.Kind]; dup {
			return nil, &FieldError{File: path, Kind: spec.Kind, Field: "kind", Entry: i + 1, Problem: fmt.Sprintf("declared twice (also entry %d)", first)}
		}
		seen[spec.Kind] = i + 1
		if err := set.Add(spec, nil); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				fe.Entry = i + 1
			}
			return nil, err
		}
	}
	return set, nil
}

// entry is one models-file entry as written.
type entry struct {
	Kind                string            `json:"kind"`
	Command             []string          `json:"command"`
	Workdir             string            `json:"workdir"`
	Env                 map[string]string `json:"env"`
	Inputs              []string          `json:"inputs"`
	Series              []string          `json:"series"`
	FirstYear           int               `json:"first_year"`
	Years               int               `json:"years"`
	Timeout             string            `json:"timeout"`
	MemoryLimit         json.RawMessage   `json:"memory_limit"`
	MaxChunksPerProcess int               `json:"max_chunks_per_process"`
	Processes           int               `json:"processes"`
	Units               string            `json:"units"`
	LongName            string            `json:"long_name"`
	Checks              json.RawMessage   `json:"checks"`
}

var unknownField = regexp.MustCompile(`unknown field "([^"]+)"`)
var typeError = regexp.MustCompile(`field ([A-Za-z_.]+) of type`)

func parseEntry(raw json.RawMessage, file, dir string) (Spec, error) {
	var kindOnly struct {
		Kind any `json:"kind"`
	}
	_ = json.Unmarshal(raw, &kindOnly)
	kind, _ := kindOnly.Kind.(string)
	bad := func(field, format string, a ...any) error {
		return &FieldError{File: file, Kind: kind, Field: field, Problem: fmt.Sprintf(format, a...)}
	}
	var e entry
	if err := strictJSON(raw, &e); err != nil {
		if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
			return Spec{}, bad(m[1], "unknown field (known: kind, command, workdir, env, inputs, series, first_year, years, timeout, memory_limit, max_chunks_per_process, processes, units, long_name, checks)")
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Spec{}, bad(te.Field, "want %s, got %s", te.Type, te.Value)
		}
		if m := typeError.FindStringSubmatch(err.Error()); m != nil {
			return Spec{}, bad(m[1], "%s", oneLine(err))
		}
		return Spec{}, bad("(entry)", "want a mapping of fields: %s", oneLine(err))
	}
	if e.Kind == "" {
		return Spec{}, bad("kind", "missing")
	}
	if len(e.Command) == 0 {
		return Spec{}, bad("command", "missing: the argv of the model process, e.g. [\"/usr/bin/python3\", \"model.py\"]")
	}
	spec := Spec{Kind: e.Kind, Command: e.Command, Env: e.Env, Inputs: e.Inputs, Series: e.Series,
		FirstYear: e.FirstYear, Years: e.Years, MaxChunksPerProcess: e.MaxChunksPerProcess, Processes: e.Processes,
		Units: e.Units, LongName: e.LongName, File: file}
	checks, field, problem := parseChecks(e.Checks)
	if field != "" {
		return Spec{}, bad(field, "%s", problem)
	}
	spec.Checks = checks
	spec.Workdir = dir
	if e.Workdir != "" {
		spec.Workdir = e.Workdir
		if !filepath.IsAbs(e.Workdir) {
			spec.Workdir = filepath.Join(dir, e.Workdir)
		}
	}
	if st, err := os.Stat(spec.Workdir); err != nil || !st.IsDir() {
		return Spec{}, bad("workdir", "%s is not a directory", spec.Workdir)
	}
	if e.Timeout != "" {
		d, err := time.ParseDuration(e.Timeout)
		if err != nil || d <= 0 {
			return Spec{}, bad("timeout", "%q is not a positive duration such as 5m or 90s", e.Timeout)
		}
		spec.Timeout = d
	}
	if len(e.MemoryLimit) > 0 && string(e.MemoryLimit) != "null" {
		n, err := parseBytes(e.MemoryLimit)
		if err != nil {
			return Spec{}, bad("memory_limit", "%s", err)
		}
		spec.MemoryLimit = n
	}
	if e.Inputs != nil && len(e.Inputs) == 0 {
		return Spec{}, bad("inputs", "an empty list: omit it for the default %v", DefaultInputs)
	}
	if e.Series != nil && len(e.Series) == 0 {
		return Spec{}, bad("series", "an empty list: omit it for the default %v", DefaultSeries)
	}
	return spec, nil
}

// parseBytes reads a memory size: a number of bytes, or a number with a unit
// KiB, MiB, GiB, TiB (powers of 1024) or KB, MB, GB, TB (powers of 1000).
func parseBytes(raw json.RawMessage) (int64, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n float64
		if err := json.Unmarshal(raw, &n); err != nil || n <= 0 || n != float64(int64(n)) {
			return 0, fmt.Errorf("%s is not a size such as 2GiB or 512MiB", raw)
		}
		return int64(n), nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<62 {
		return 0, fmt.Errorf("%q is not a size such as 2GiB or 512MiB", s)
	}
	return int64(v * float64(mult)), nil
}

func strictJSON(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }
