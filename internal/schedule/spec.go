// Package schedule fires a batch of each kind on its cron schedule. Several
// replicas may run: one leads, through a lease in Redis with a TTL; only the
// leader fires. Each fire is idempotent on its tick (batch_runs has one row
// per kind and scheduled_for), a tick missed while no scheduler ran fires
// once within the misfire grace, and every tick that starts no batch is
// logged, recorded in schedule_ticks and alerted.
//
// This file is the pure part: cron specs, fire times, and the catch-up
// decision as a function of (schedule, last handled tick, now, grace).
package schedule

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/gridbatch/gridbatch/internal/model"
)

// OnTime is how late a tick may be noticed and still count as on time: it
// fires even with a zero misfire grace.
const OnTime = 5 * time.Second

// MaxListedMissed is how many missed ticks a Decision lists.
const MaxListedMissed = 10

// maxCountedMissed bounds the walk that counts the missed ticks of a long gap.
const maxCountedMissed = 100_000

// parser reads standard 5-field specs, 6-field specs with a leading seconds
// field, and descriptors such as @daily.
var parser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is one kind's cron trigger, read in a time zone.
type Schedule struct {
	// Kind is the batch kind it fires.
	Kind string
	// Spec is the cron spec as configured.
	Spec string
	// Location is the zone the spec is read in.
	Location *time.Location

	spec *cron.SpecSchedule
}

// NewSchedule parses one cron spec for kind, read in loc. Specs have 5
// fields (minute hour day-of-month month day-of-week), or 6 with a leading
// seconds field, or are a descriptor (@yearly, @monthly, @weekly, @daily,
// @hourly). @every and a per-spec TZ= are refused: ticks must be fixed points
// of the clock in one zone, so every replica computes the same ones.
func NewSchedule(kind, spec string, loc *time.Location) (s Schedule, err error) {
	spec = strings.TrimSpace(spec)
	switch {
	case spec == "":
		return s, fmt.Errorf("%s: empty cron spec", kind)
	case strings.HasPrefix(spec, "@every"):
		return s, fmt.Errorf("%s=%s: @every is not anchored to the clock; use a cron spec such as '*/10 * * * *'", kind, spec)
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return s, fmt.Errorf("%s=%s: a per-spec time zone is not supported; set GRIDBATCH_TIMEZONE", kind, spec)
	}
	defer func() { // robfig/cron panics on a few malformed specs
		if r := recover(); r != nil {
			err = fmt.Errorf("%s=%s: invalid cron spec: %v", kind, spec, r)
		}
	}()
	parsed, err := parser.Parse(spec)
	if err != nil {
		return s, fmt.Errorf("%s=%s: %v (a spec is 5 fields: minute hour day month weekday; or 6 with leading seconds; or @daily and the like)", kind, spec, err)
	}
	ss, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return s, fmt.Errorf("%s=%s: unsupported schedule", kind, spec)
	}
	ss.Location = loc
	s = Schedule{Kind: kind, Spec: spec, Location: loc, spec: ss}
	if s.Next(time.Now()).IsZero() {
		return s, fmt.Errorf("%s=%s: never fires", kind, spec)
	}
	return s, nil
}

// Parse reads GRIDBATCH_SCHEDULES: "KIND=SPEC;KIND=SPEC", each kind a known
// batch kind at most once, each spec as NewSchedule reads it, in loc.
func Parse(specs string, loc *time.Location, models *model.Set) ([]Schedule, error) {
	var out []Schedule
	for part := range strings.SplitSeq(specs, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		kind, spec, ok := strings.Cut(part, "=")
		kind = strings.TrimSpace(kind)
		if !ok || kind == "" {
			return nil, fmt.Errorf("%q is not KIND=SPEC, e.g. 'ph=0 2 1 1 *'", part)
		}
		if _, err := models.Spec(kind); err != nil {
			return nil, err
		}
		if slices.ContainsFunc(out, func(s Schedule) bool { return s.Kind == kind }) {
			return nil, fmt.Errorf("kind %s is scheduled twice; give each kind one spec", kind)
		}
		s, err := NewSchedule(kind, spec, loc)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no schedule; expected KIND=SPEC;KIND=SPEC, e.g. 'ph=0 2 1 1 *;hazard=0 3 1 1 *'")
	}
	return out, nil
}

// Next returns the first tick strictly after t, in the schedule's zone; the
// zero time when there is none within five years.
func (s Schedule) Next(t time.Time) time.Time { return s.spec.Next(t) }

// NextN returns the next n ticks after t.
func (s Schedule) NextN(t time.Time, n int) []time.Time {
	var out []time.Time
	for range n {
		t = s.Next(t)
		if t.IsZero() {
			break
		}
		out = append(out, t)
	}
	return out
}

// lookbacks are the windows Latest searches, smallest first, so the walk
// inside the first window holding a tick stays short.
var lookbacks = []time.Duration{
	2 * time.Second, time.Minute, time.Hour, 24 * time.Hour, 32 * 24 * time.Hour,
	367 * 24 * time.Hour, 5 * 367 * 24 * time.Hour, 9 * 367 * 24 * time.Hour,
}

// Latest returns the last tick at or before now; the zero time when there
// was none in the last nine years.
func (s Schedule) Latest(now time.Time) time.Time {
	for _, d := range lookbacks {
		t := s.Next(now.Add(-d))
		if t.IsZero() || t.After(now) {
			continue
		}
		for {
			n := s.Next(t)
			if n.IsZero() || n.After(now) {
				return t
			}
			t = n
		}
	}
	return time.Time{}
}

// Decision is what to do about the ticks of one schedule that passed since
// the last handled one.
type Decision struct {
	// Fire is the tick to fire now: the latest tick at or before now, when
	// it is at most the misfire grace (or OnTime) late. Zero when none.
	Fire time.Time
	// Missed are the ticks that will never fire, newest first, at most
	// MaxListedMissed of them: ticks older than Fire (they coalesce into
	// it), and the latest tick itself when it is beyond the grace.
	Missed []time.Time
	// MissedCount is how many ticks were missed in all; a lower bound when
	// MissedCapped is set (a gap of more than 100,000 ticks).
	MissedCount  int
	MissedCapped bool
	// FirstMissed is the oldest missed tick, when known (zero otherwise).
	FirstMissed time.Time
}

// Empty reports whether there is nothing to do.
func (d Decision) Empty() bool { return d.Fire.IsZero() && len(d.Missed) == 0 }

// CatchUp decides what to do at now about the ticks of s after last, the
// newest tick already handled (fired, skipped or missed; zero when none
// ever was). The latest tick at or before now fires when it is at most
// max(grace, OnTime) late; older ticks coalesce into it and are missed.
// With no history (last zero) only the latest tick is considered: it fires
// or is missed.
func CatchUp(s Schedule, last, now time.Time, grace time.Duration) Decision {
	var d Decision
	latest := s.Latest(now)
	if latest.IsZero() || (!last.IsZero() && !latest.After(last)) {
		return d
	}
	if now.Sub(latest) <= max(grace, OnTime) {
		d.Fire = latest
	} else {
		d.Missed = append(d.Missed, latest)
		d.MissedCount = 1
		d.FirstMissed = latest
	}
	if last.IsZero() {
		return d
	}
	// The newest older ticks, found backwards.
	for t := latest; len(d.Missed) < MaxListedMissed; {
		t = s.Latest(t.Add(-time.Nanosecond))
		if t.IsZero() || !t.After(last) {
			break
		}
		d.Missed = append(d.Missed, t)
	}
	// The count and the oldest, found forwards.
	first := s.Next(last)
	if first.IsZero() || !first.Before(latest) {
		return d
	}
	d.FirstMissed = first
	n := 0
	for t := first; !t.IsZero() && t.Before(latest); t = s.Next(t) {
		if n++; n >= maxCountedMissed {
			d.MissedCapped = true
			break
		}
	}
	d.MissedCount += n
	return d
}
