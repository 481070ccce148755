package schedule

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/model"
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	require.NoError(t, err)
	return loc
}

func mustSchedule(t testing.TB, spec string, loc *time.Location) Schedule {
	t.Helper()
	s, err := NewSchedule("ph", spec, loc)
	require.NoError(t, err)
	return s
}

func TestParse(t *testing.T) {
	t.Parallel()
	seoul := mustLoc(t, "Asia/Seoul")
	got, err := Parse(" ph=0 2 1 1 * ; hazard=*/10 * * * * *;", seoul, model.Builtins())
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "ph", got[0].Kind)
	require.Equal(t, "0 2 1 1 *", got[0].Spec)
	require.Equal(t, "hazard", got[1].Kind)
	require.Equal(t, seoul, got[1].Location)

	for _, tc := range []struct{ name, specs, want string }{
		{"empty", " ; ", "no schedule"},
		{"no equals", "ph 0 2 1 1 *", "is not KIND=SPEC"},
		{"unknown kind", "rain=0 2 * * *", `unknown model kind "rain"`},
		{"kind twice", "ph=0 2 * * *;ph=0 3 * * *", "kind ph is scheduled twice"},
		{"too few fields", "ph=0 2 1", "found 3"},
		{"bad field", "ph=0 25 * * *", "above maximum"},
		{"every", "ph=@every 10s", "@every is not anchored to the clock"},
		{"per-spec zone", "ph=CRON_TZ=UTC 0 2 * * *", "set GRIDBATCH_TIMEZONE"},
		{"empty spec", "ph=", "empty cron spec"},
		{"never fires", "ph=0 0 30 2 *", "never fires"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(tc.specs, time.UTC, model.Builtins())
			require.ErrorContains(t, err, tc.want)
			require.NotContains(t, err.Error(), "\n")
		})
	}
}

func TestNextFireTimes(t *testing.T) {
	t.Parallel()
	seoul := mustLoc(t, "Asia/Seoul")
	from := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		spec string
		loc  *time.Location
		want []time.Time
	}{
		{"yearly in Seoul", "0 2 1 1 *", seoul, []time.Time{
			time.Date(2027, 1, 1, 2, 0, 0, 0, seoul),
			time.Date(2028, 1, 1, 2, 0, 0, 0, seoul),
			time.Date(2029, 1, 1, 2, 0, 0, 0, seoul),
		}},
		{"the same spec in UTC", "0 2 1 1 *", time.UTC, []time.Time{
			time.Date(2027, 1, 1, 2, 0, 0, 0, time.UTC),
			time.Date(2028, 1, 1, 2, 0, 0, 0, time.UTC),
			time.Date(2029, 1, 1, 2, 0, 0, 0, time.UTC),
		}},
		{"optional seconds field", "*/10 * * * * *", time.UTC, []time.Time{
			from.Add(10 * time.Second), from.Add(20 * time.Second), from.Add(30 * time.Second),
		}},
		{"descriptor", "@daily", seoul, []time.Time{
			time.Date(2026, 6, 2, 0, 0, 0, 0, seoul),
			time.Date(2026, 6, 3, 0, 0, 0, 0, seoul),
			time.Date(2026, 6, 4, 0, 0, 0, 0, seoul),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustSchedule(t, tc.spec, tc.loc).NextN(from, 3)
			require.Len(t, got, 3)
			for i := range got {
				require.True(t, tc.want[i].Equal(got[i]), "tick %d: want %s, got %s", i, tc.want[i], got[i])
			}
		})
	}
}

func TestLatest(t *testing.T) {
	t.Parallel()
	seoul := mustLoc(t, "Asia/Seoul")
	now := time.Date(2026, 6, 1, 12, 0, 7, 500e6, time.UTC)
	cases := []struct {
		name string
		spec string
		loc  *time.Location
		now  time.Time
		want time.Time
	}{
		{"every 10 s", "*/10 * * * * *", time.UTC, now, time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)},
		{"now exactly on a tick", "*/10 * * * * *", time.UTC, time.Date(2026, 6, 1, 12, 0, 10, 0, time.UTC), time.Date(2026, 6, 1, 12, 0, 10, 0, time.UTC)},
		{"yearly in Seoul", "0 2 1 1 *", seoul, now, time.Date(2026, 1, 1, 2, 0, 0, 0, seoul)},
		{"every second of hour 0", "* * 0 * * *", time.UTC, now, time.Date(2026, 6, 1, 0, 59, 59, 0, time.UTC)},
		{"leap day", "0 0 29 2 *", time.UTC, now, time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := mustSchedule(t, tc.spec, tc.loc).Latest(tc.now)
			require.True(t, tc.want.Equal(got), "want %s, got %s", tc.want, got)
		})
	}
}

func TestCatchUp(t *testing.T) {
	t.Parallel()
	seoul := mustLoc(t, "Asia/Seoul")
	daily := mustSchedule(t, "0 2 * * *", seoul)
	everySecond := mustSchedule(t, "* * * * * *", time.UTC)
	day := func(d int) time.Time { return time.Date(2026, 3, d, 2, 0, 0, 0, seoul) }
	at := func(d int, after time.Duration) time.Time { return day(d).Add(after) }
	sec := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	none := time.Time{}

	cases := []struct {
		name        string
		s           Schedule
		last, now   time.Time
		grace       time.Duration
		fire        time.Time
		missed      []time.Time
		missedCount int
		capped      bool
		firstMissed time.Time
	}{
		{name: "on time", s: daily, last: day(9), now: at(10, 200*time.Millisecond), grace: time.Hour, fire: day(10)},
		{name: "nothing due: latest tick handled", s: daily, last: day(10), now: at(10, 30*time.Minute), grace: time.Hour},
		{name: "nothing due: before the first tick", s: daily, last: day(9), now: at(10, -time.Minute), grace: time.Hour},
		{name: "down at the tick, back within the grace", s: daily, last: day(9), now: at(10, 30*time.Minute), grace: time.Hour, fire: day(10)},
		{name: "down at the tick, back beyond the grace", s: daily, last: day(9), now: at(10, 30*time.Minute), grace: 10 * time.Minute,
			missed: []time.Time{day(10)}, missedCount: 1, firstMissed: day(10)},
		{name: "a gap coalesces into the latest tick", s: daily, last: day(5), now: at(10, 30*time.Minute), grace: time.Hour,
			fire: day(10), missed: []time.Time{day(9), day(8), day(7), day(6)}, missedCount: 4, firstMissed: day(6)},
		{name: "a gap beyond the grace is all missed", s: daily, last: day(5), now: at(10, 30*time.Minute), grace: 10 * time.Minute,
			missed: []time.Time{day(10), day(9), day(8), day(7), day(6)}, missedCount: 5, firstMissed: day(6)},
		{name: "no history, latest within the grace", s: daily, last: none, now: at(10, 30*time.Minute), grace: time.Hour, fire: day(10)},
		{name: "no history, latest beyond the grace", s: daily, last: none, now: at(10, 30*time.Minute), grace: time.Minute,
			missed: []time.Time{day(10)}, missedCount: 1, firstMissed: day(10)},
		{name: "zero grace still fires a tick noticed on time", s: daily, last: day(9), now: at(10, 3*time.Second), grace: 0, fire: day(10)},
		{name: "zero grace misses a tick noticed late", s: daily, last: day(9), now: at(10, 6*time.Second), grace: 0,
			missed: []time.Time{day(10)}, missedCount: 1, firstMissed: day(10)},
		{name: "last after now (clock skew)", s: daily, last: day(11), now: at(10, time.Second), grace: time.Hour},
		{name: "a long gap lists the newest missed ticks", s: everySecond, last: sec, now: sec.Add(time.Hour), grace: time.Hour,
			fire: sec.Add(time.Hour), missed: secondsBefore(sec.Add(time.Hour), MaxListedMissed), missedCount: 3599, firstMissed: sec.Add(time.Second)},
		{name: "a huge gap caps the count", s: everySecond, last: sec, now: sec.Add(48 * time.Hour), grace: time.Hour,
			fire: sec.Add(48 * time.Hour), missed: secondsBefore(sec.Add(48*time.Hour), MaxListedMissed), missedCount: maxCountedMissed, capped: true,
			firstMissed: sec.Add(time.Second)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := CatchUp(tc.s, tc.last, tc.now, tc.grace)
			require.True(t, tc.fire.Equal(d.Fire), "fire: want %s, got %s", tc.fire, d.Fire)
			require.Len(t, d.Missed, len(tc.missed), "missed: %v", d.Missed)
			for i := range tc.missed {
				require.True(t, tc.missed[i].Equal(d.Missed[i]), "missed[%d]: want %s, got %s", i, tc.missed[i], d.Missed[i])
			}
			require.Equal(t, tc.missedCount, d.MissedCount)
			require.Equal(t, tc.capped, d.MissedCapped)
			require.True(t, tc.firstMissed.Equal(d.FirstMissed), "first missed: want %s, got %s", tc.firstMissed, d.FirstMissed)
			require.Equal(t, tc.fire.IsZero() && len(tc.missed) == 0, d.Empty())
		})
	}
}

// secondsBefore returns the n whole seconds before t, newest first.
func secondsBefore(t time.Time, n int) []time.Time {
	var out []time.Time
	for i := 1; i <= n; i++ {
		out = append(out, t.Add(-time.Duration(i)*time.Second))
	}
	return out
}

// TestCatchUpThenNextIsSteady checks that handling each decision and asking
// again never fires a tick twice nor skips one, as the scheduler's loop does.
func TestCatchUpThenNextIsSteady(t *testing.T) {
	t.Parallel()
	s := mustSchedule(t, "*/5 * * * * *", time.UTC)
	start := time.Date(2026, 3, 10, 0, 0, 1, 0, time.UTC)
	var last time.Time
	var fired []time.Time
	for now := start; now.Before(start.Add(time.Minute)); now = now.Add(700 * time.Millisecond) {
		d := CatchUp(s, last, now, time.Hour)
		require.Empty(t, d.Missed, "at %s", now)
		if !d.Fire.IsZero() {
			fired = append(fired, d.Fire)
			last = d.Fire
		}
	}
	require.Len(t, fired, 13, "the catch-up tick at start and 12 more")
	for i := 1; i < len(fired); i++ {
		require.Equal(t, 5*time.Second, fired[i].Sub(fired[i-1]))
	}
}
