package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/schedule"
)

func TestPrintConfigShowsTheNextFireTimes(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--print-config", "--timezone", "Asia/Seoul",
		"--schedules", "ph=0 2 1 1 *;hazard=*/10 * * * * *", "--alert-webhook-url", "https://hooks.example/T0/SECRET"}, &out, &errOut)
	require.NoError(t, err)
	require.Contains(t, out.String(), "GRIDBATCH_SCHEDULES=ph=0 2 1 1 *;hazard=*/10 * * * * *\n")
	require.Contains(t, out.String(), "GRIDBATCH_ALERT_WEBHOOK_URL=xxxxx\n")
	require.NotContains(t, out.String(), "SECRET")
	require.Regexp(t, `# ph=0 2 1 1 \* \(Asia/Seoul\) fires next at \d{4}-01-01T02:00:00\+09:00, \d{4}-01-01T02:00:00\+09:00, \d{4}-01-01T02:00:00\+09:00\n`, out.String())
	require.Regexp(t, `# hazard=\*/10 \* \* \* \* \* \(Asia/Seoul\) fires next at `, out.String())
}

func TestPrintNext(t *testing.T) {
	t.Parallel()
	s, err := schedule.Parse("ph=30 1 * * *", time.UTC)
	require.NoError(t, err)
	var out bytes.Buffer
	printNext(&out, s, time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC))
	require.Equal(t, "# ph=30 1 * * * (UTC) fires next at 2026-03-11T01:30:00Z, 2026-03-12T01:30:00Z, 2026-03-13T01:30:00Z\n", out.String())
}

func TestBadSchedulesStopTheBinaryWithOneLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--schedules", "ph=0 2 1"}, `GRIDBATCH_SCHEDULES="ph=0 2 1": ph=0 2 1: expected 5 to 6 fields`},
		{[]string{"--schedules", "rain=0 2 * * *"}, `unknown model kind "rain"`},
		{[]string{"--schedules", ""}, "GRIDBATCH_SCHEDULES is empty"},
		{[]string{"--timezone", "Mars/Olympus"}, "GRIDBATCH_TIMEZONE=Mars/Olympus"},
		{[]string{"--leader-ttl", "100ms"}, "GRIDBATCH_LEADER_TTL=100ms must be at least 1s"},
		{[]string{"--alert-webhook-url", "ftp://x/SECRET"}, "GRIDBATCH_ALERT_WEBHOOK_URL is not an http(s) URL"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		require.ErrorContains(t, err, tc.want)
		require.False(t, strings.ContainsAny(err.Error(), "\n"))
		require.NotContains(t, err.Error(), "SECRET")
	}
}
