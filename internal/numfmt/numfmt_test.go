package numfmt

import (
	"math"
	"testing"
	"time"
)

func TestInt(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{
		0: "0", 7: "7", 999: "999", 1000: "1,000", 19200: "19,200", 480000: "480,000",
		64800000: "64,800,000", -1: "-1", -1000: "-1,000", -123456: "-123,456",
		math.MinInt64: "-9,223,372,036,854,775,808",
	} {
		if got := Int(n); got != want {
			t.Errorf("Int(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDurationPercentBytesSeconds(t *testing.T) {
	t.Parallel()
	for in, want := range map[time.Duration]string{
		0: "0s", 300 * time.Millisecond: "0.3s", time.Second: "1s", 7300 * time.Millisecond: "7.3s",
		42 * time.Second: "42s", 4*time.Minute + 5*time.Second: "4m05s", time.Hour + 2*time.Minute + 3*time.Second: "1h02m03s",
		-time.Second: "0s",
	} {
		if got := Duration(in); got != want {
			t.Errorf("Duration(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{0: "0%", 1: "100%", 0.996875: "99.7%", 0.0271: "2.71%"} {
		if got := Percent(in); got != want {
			t.Errorf("Percent(%v) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 24_330_240: "23.2 MiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(in); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[float64]string{0.0005: "0.5 ms", 0.02485: "24.9 ms", 2.5: "2.500 s", 42: "42s", 245: "4m05s"} {
		if got := Seconds(in); got != want {
			t.Errorf("Seconds(%v) = %q, want %q", in, got, want)
		}
	}
}
