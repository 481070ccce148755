// Package numfmt formats numbers for people: every count gridbatch prints
// (CLI errors, the monitor, the benchmark report) goes through Int.
package numfmt

import (
	"strconv"
	"strings"
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
