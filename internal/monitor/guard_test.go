package monitor_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/monitor"
)

func TestNoResponseMayBeFramed(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	insertBatch(t, e.db, "ph-20261122-000000-abcdef")
	for _, page := range []string{"/", "/batches/ph-20261122-000000-abcdef", "/asynqmon/", "/asynqmon/api/queues",
		"/asynqmon/static/js/main.js", "/metrics", "/static/monitor.css", "/healthz", "/no-such-page", "/batches/%00"} {
		for _, creds := range [][2]string{{user, password}, {"", ""}} {
			resp, _ := get(t, e.url+page, creds[0], creds[1])
			require.Equal(t, "DENY", resp.Header.Get("X-Frame-Options"), "%s (%d)", page, resp.StatusCode)
			require.Contains(t, resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'", "%s (%d)", page, resp.StatusCode)
		}
	}
	// asynqmon's own page was served (the attack's target), not an error.
	resp, body := get(t, e.url+"/asynqmon/", user, password)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, "<html")
}

func TestFailedLoginsAreThrottledAndLogged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	e := start(t, func(c *monitor.Config) { c.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
	for i := range 5 {
		resp, _ := get(t, e.url+"/", user, "guess "+string(rune('a'+i)))
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "attempt %d", i+1)
	}
	// Refused now, even with the right password: a guess could not be told.
	resp, body := get(t, e.url+"/", user, password)
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, body)
	require.NotEmpty(t, resp.Header.Get("Retry-After"))
	require.Equal(t, 5, strings.Count(logs.String(), "monitor login failed"), logs.String())
	require.Contains(t, logs.String(), "client=127.0.0.1 failures_in_a_row=5 refused_for=30s")
	require.NotContains(t, logs.String(), "guess", "passwords are never logged")
	resp, _ = get(t, e.url+"/healthz", "", "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "healthz stays open")
}

func TestRequestsWithoutCredentialsAreNoFailedLogins(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	for range 20 {
		resp, _ := get(t, e.url+"/", "", "")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}
	resp, _ := get(t, e.url+"/", user, password)
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestInsecureNoAuthAnswersOnlyLoopbackHosts(t *testing.T) {
	t.Parallel()
	e := start(t, func(c *monitor.Config) { c.InsecureNoAuth = true; c.User, c.Password = "", "" })
	for host, want := range map[string]int{
		"":                    http.StatusOK, // the test server's 127.0.0.1:port
		"localhost:8080":      http.StatusOK,
		"[::1]:8080":          http.StatusOK,
		"127.0.0.1":           http.StatusOK,
		"evil.example:8080":   http.StatusMisdirectedRequest, // DNS rebinding: a name of the attacker's, pointing at 127.0.0.1
		"10.0.0.5:8080":       http.StatusMisdirectedRequest,
		"localhost.evil.test": http.StatusMisdirectedRequest,
	} {
		req, err := http.NewRequest(http.MethodGet, e.url+"/", nil)
		require.NoError(t, err)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, want, resp.StatusCode, "Host %q", host)
	}
}

func TestBannersComeFromFixedTexts(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	id := "ph-20261122-000000-abcdef"
	insertBatch(t, e.db, id)
	_, page := get(t, e.url+"/batches/"+id+"?requeued=Your+session+expired.+Log+in+at+evil.example", user, password)
	require.NotContains(t, page, "evil.example")
	require.NotContains(t, page, "Requeued ")
	_, page = get(t, e.url+"/batches/"+id+"?requeue_error=Call+support+at+evil.example&requeue=Call+evil.example", user, password)
	require.NotContains(t, page, "evil.example")
	_, page = get(t, e.url+"/batches/"+id+"?requeue=failed", user, password)
	require.Contains(t, page, "Requeue failed: the monitor&#39;s log has the reason")
	_, page = get(t, e.url+"/batches/"+id+"?requeued=3", user, password)
	require.Contains(t, page, "Requeued 3 dead letters")
}

func TestIDsAreCheckedBeforeTheyReachSQL(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	for _, path := range []string{"/batches/%00", "/batches/a%00b", "/batches/" + strings.Repeat("x", 200), "/batches/%27%3B--",
		"/batches/%00/map?scenario=ssp245&year=2050", "/batches/ph%0a1"} {
		resp, body := get(t, e.url+path, user, password)
		require.Equal(t, http.StatusNotFound, resp.StatusCode, "%s: %s", path, body)
		require.NotContains(t, body, "SQLSTATE", path)
		require.NotContains(t, strings.ToLower(body), "postgres", path)
		if !strings.Contains(path, "/map") {
			require.Contains(t, body, "No such batch", "%s: the batch page answered", path)
		}
	}
	resp, body := do(t, http.MethodPost, e.url+"/batches/%00/requeue", user, password, nil, "Origin", e.url)
	require.Equal(t, http.StatusNotFound, resp.StatusCode, body)
}
