// Package numfmt formats numbers for people, alike wherever gridbatch prints
// them: the CLI, the monitor, the benchmark report.
package numfmt

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Int writes n with comma thousands separators: 19,200 and -64,800,000.
func Int[T ~int | ~int64](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Percent prints a fraction as a percentage: 0.4321 → 43.2%.
func Percent(f float64) string {
	p := f * 100
	switch {
	case p == 0 || p == 100:
		return strconv.FormatFloat(p, 'f', 0, 64) + "%"
	case p < 10:
		return strconv.FormatFloat(p, 'f', 2, 64) + "%"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

// Duration prints a duration to the second, or to 0.1 s under 10 s:
// 1h02m03s, 4m05s, 7.3s.
func Duration(d time.Duration) string {
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

// Bytes prints a byte count in binary units: 48.2 MiB.
func Bytes(n int64) string {
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

// Seconds prints a short span given in seconds: 0.5 ms, 2.500 s, 4m05s.
func Seconds(s float64) string {
	if s < 1 {
		return strconv.FormatFloat(s*1000, 'f', 1, 64) + " ms"
	}
	if s < 10 {
		return strconv.FormatFloat(s, 'f', 3, 64) + " s"
	}
	return Duration(time.Duration(s * float64(time.Second)))
}
