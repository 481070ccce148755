package monitor

import (
	"math"
	"strconv"
	"time"

	"github.com/gridbatch/gridbatch/internal/numfmt"
)

// cellsPerSecond is the one definition of a rate the monitor shows, in the
// batch view, on a batch's page and in its chart: cells over the seconds
// they took, a span under a second counting as one (so a 100-cell chunk
// that took 0.15 s is 100 cells/s, not 665).
func cellsPerSecond(cells int64, d time.Duration) float64 {
	return float64(cells) / max(d, time.Second).Seconds()
}

// seconds converts a number of seconds, as stored, to a duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// fmtRate prints a rate with about three significant digits.
func fmtRate(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return numfmt.Int(int64(math.Round(v)))
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// timeLayout is the one format of times on the monitor's pages, in UTC.
const timeLayout = "2006-01-02 15:04:05"

// fmtTime prints a time in UTC to the second: "2026-11-22 04:00:30 UTC".
func fmtTime(t time.Time) string { return t.UTC().Format(timeLayout) + " UTC" }

// ago prints how long before now t was: "3m05s ago".
func ago(t, now time.Time) string { return numfmt.Duration(now.Sub(t)) + " ago" }

// truncate shortens s to at most n runes, with an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
