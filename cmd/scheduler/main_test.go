package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/schedule"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

func TestPrintConfigShowsTheNextFireTimes(t *testing.T) {
	t.Setenv("GRIDBATCH_ALERT_WEBHOOK_URL", "https://hooks.example/T0/SECRET")
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--print-config", "--timezone", "Asia/Seoul",
		"--schedules", "ph=0 2 1 1 *;hazard=*/10 * * * * *"}, &out, &errOut)
	require.NoError(t, err)
	require.Contains(t, out.String(), "GRIDBATCH_SCHEDULES=ph=0 2 1 1 *;hazard=*/10 * * * * *\n")
	require.Contains(t, out.String(), "GRIDBATCH_ALERT_WEBHOOK_URL=xxxxx\n")
	require.NotContains(t, out.String(), "SECRET")
	require.Regexp(t, `# ph=0 2 1 1 \* \(Asia/Seoul\) fires next at \d{4}-01-01T02:00:00\+09:00, \d{4}-01-01T02:00:00\+09:00, \d{4}-01-01T02:00:00\+09:00\n`, out.String())
	require.Regexp(t, `# hazard=\*/10 \* \* \* \* \* \(Asia/Seoul\) fires next at `, out.String())
}

func TestPrintNext(t *testing.T) {
	t.Parallel()
	s, err := schedule.Parse("ph=30 1 * * *", time.UTC, model.Builtins())
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
		{[]string{"--alert-webhook-url", "https://x/SECRET"}, "--alert-webhook-url would show its secret to every user of the machine"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, &out, &errOut)
		require.ErrorContains(t, err, tc.want)
		require.False(t, strings.ContainsAny(err.Error(), "\n"))
		require.NotContains(t, err.Error(), "SECRET")
	}
}

// TestServesHealthEndpoints runs the scheduler against a test's Redis and
// PostgreSQL and reads its /healthz and /readyz; it stops on cancel.
func TestServesHealthEndpoints(t *testing.T) {
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	t.Setenv("GRIDBATCH_DATABASE_URL", db.URL) // its password: never in a flag
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--redis-url", r.URL, "--http-addr", "127.0.0.1:0",
			"--log-format", "json", "--schedules", "ph=0 2 1 1 *"}, io.Discard, pw)
		pw.Close()
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var l struct {
				Msg      string `json:"msg"`
				HTTPAddr string `json:"http_addr"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "scheduler started" {
				addr <- l.HTTPAddr
			}
		}
	}()
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case err := <-done:
		t.Fatalf("scheduler stopped before it started: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no \"scheduler started\" line within 30s")
	}
	for path, want := range map[string]string{"/healthz": "ok\n", "/readyz": "ready\n"} {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", path, body)
		require.Equal(t, want, string(body), path)
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("scheduler did not stop within 30s of cancel")
	}
	_, err := http.Get(base + "/healthz")
	require.Error(t, err, "the endpoints stop with the scheduler")
}
