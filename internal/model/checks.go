package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Checks are the data checks a kind declares (models file 'checks:'): a
// batch's own rows must pass every declared one before it is published.
// A nil field is not declared. Without any, a batch is published as
// before.
type Checks struct {
	// Range is the interval [lo, hi] every value must lie in, NaN aside.
	Range *[2]float64 `json:"range,omitempty"`
	// MaxNaN is the share of NaN values allowed, in [0, 1].
	MaxNaN *float64 `json:"max_nan,omitempty"`
	// MinCoverage is the share of the batch's cells it must have computed,
	// in (0, 1]. Below 1 the kind opts in to partial success: a partial
	// batch that passes every check is published.
	MinCoverage *float64 `json:"min_coverage,omitempty"`
	// MaxChange is the largest absolute change allowed against the
	// published value of the same cell, series and year, at least 0.
	MaxChange *float64 `json:"max_change,omitempty"`
}

// Declared reports whether any check is declared.
func (c *Checks) Declared() bool {
	return c != nil && (c.Range != nil || c.MaxNaN != nil || c.MinCoverage != nil || c.MaxChange != nil)
}

// PartialSuccess reports whether the kind opts in to partial success: it
// declares min_coverage below 1.
func (c *Checks) PartialSuccess() bool {
	return c != nil && c.MinCoverage != nil && *c.MinCoverage < 1
}

// String is the checks as a models file would declare them, e.g.
// "range: [0, 1], max_nan: 0".
func (c *Checks) String() string {
	if !c.Declared() {
		return "none"
	}
	var out []string
	if c.Range != nil {
		out = append(out, fmt.Sprintf("range: [%s, %s]", num(c.Range[0]), num(c.Range[1])))
	}
	for _, f := range []struct {
		name string
		v    *float64
	}{{"max_nan", c.MaxNaN}, {"min_coverage", c.MinCoverage}, {"max_change", c.MaxChange}} {
		if f.v != nil {
			out = append(out, f.name+": "+num(*f.v))
		}
	}
	return strings.Join(out, ", ")
}

func num(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// validate returns the first bad check as (field, problem).
func (c *Checks) validate() (string, string) {
	if c == nil {
		return "", ""
	}
	share := func(v *float64, lo float64, loOpen bool) bool {
		if v == nil {
			return true
		}
		if loOpen {
			return *v > lo && *v <= 1
		}
		return *v >= lo && *v <= 1
	}
	switch {
	case c.Range != nil && (math.IsNaN(c.Range[0]) || math.IsNaN(c.Range[1]) || c.Range[0] > c.Range[1]):
		return "checks.range", fmt.Sprintf("[%s, %s] must be two numbers, the lower first, e.g. [0, 1]", num(c.Range[0]), num(c.Range[1]))
	case !share(c.MaxNaN, 0, false):
		return "checks.max_nan", fmt.Sprintf("%s must be a share between 0 and 1", num(*c.MaxNaN))
	case !share(c.MinCoverage, 0, true):
		return "checks.min_coverage", fmt.Sprintf("%s must be a share above 0 and at most 1", num(*c.MinCoverage))
	case c.MaxChange != nil && !(*c.MaxChange >= 0 && !math.IsInf(*c.MaxChange, 0)):
		return "checks.max_change", fmt.Sprintf("%s must be a finite number of at least 0", num(*c.MaxChange))
	}
	return "", ""
}

// parseChecks reads an entry's 'checks:' mapping; a bad one is reported
// as (field, problem).
func parseChecks(raw json.RawMessage) (*Checks, string, string) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, "", ""
	}
	var c Checks
	if err := strictJSON(raw, &c); err != nil {
		if m := unknownField.FindStringSubmatch(err.Error()); m != nil {
			return nil, "checks." + m[1], "unknown check (known: range, max_nan, min_coverage, max_change)"
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := "checks"
			if te.Field != "" {
				field += "." + te.Field
			}
			return nil, field, fmt.Sprintf("want %s, got %s", te.Type, te.Value)
		}
		return nil, "checks", "want a mapping such as {range: [0, 1], max_nan: 0}: " + oneLine(err)
	}
	var asList struct {
		Range []float64 `json:"range"`
	}
	if json.Unmarshal(raw, &asList) == nil && asList.Range != nil && len(asList.Range) != 2 {
		return nil, "checks.range", fmt.Sprintf("%d numbers: want two, the lower first, e.g. [0, 1]", len(asList.Range))
	}
	if f, p := c.validate(); f != "" {
		return nil, f, p
	}
	return &c, "", ""
}
