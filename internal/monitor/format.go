package monitor

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/gridbatch/gridbatch/internal/numfmt"
)

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

// fmtPct prints a fraction as a percentage: 0.4321 → 43.2%.
func fmtPct(f float64) string {
	p := f * 100
	switch {
	case p == 0 || p == 100:
		return strconv.FormatFloat(p, 'f', 0, 64) + "%"
	case p < 10:
		return strconv.FormatFloat(p, 'f', 2, 64) + "%"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// humanDuration prints a duration to the second, or to 0.1 s under 10 s:
// 1h02m03s, 4m05s, 7.3s.
func humanDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < 10*time.Second && d%time.Second != 0 {
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	}
	d = d.Round(time.Second)
	h, m, s := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%02dm%02ds", h, m, s)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, s)
	}
	return fmt.Sprintf("%ds", s)
}

// fmtBytes prints a byte count in binary units: 48.2 MiB.
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// fmtTime prints a time in UTC to the second.
func fmtTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" }

// ago prints how long before now t was: "3m05s ago".
func ago(t, now time.Time) string { return humanDuration(now.Sub(t)) + " ago" }

// truncate shortens s to at most n runes, with an ellipsis.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
