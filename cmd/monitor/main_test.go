package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

func TestMain(m *testing.M) { testutil.VerifyTestMain(m) }

// noCredentials unsets the monitor's variables for one test (restored
// after it, which is why the tests of this file do not run in parallel).
func noCredentials(t *testing.T) {
	for _, k := range []string{"GRIDBATCH_MONITOR_USER", "GRIDBATCH_MONITOR_PASSWORD", "GRIDBATCH_MONITOR_ADDR", "GRIDBATCH_MONITOR_ALLOW_WRITES"} {
		t.Setenv(k, "")
		require.NoError(t, os.Unsetenv(k))
	}
}

func TestRefusesToStartWithoutCredentials(t *testing.T) {
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"no credentials":                     {[]string{"--addr", "127.0.0.1:0"}, "refusing to start without credentials: set GRIDBATCH_MONITOR_USER and GRIDBATCH_MONITOR_PASSWORD"},
		"insecure on every interface":        {[]string{"--insecure-no-auth", "--addr", ":8080"}, "GRIDBATCH_MONITOR_ADDR=:8080: it is not a loopback address"},
		"insecure on 0.0.0.0":                {[]string{"--insecure-no-auth", "--addr", "0.0.0.0:0"}, "not a loopback address"},
		"insecure on a non-loopback address": {[]string{"--insecure-no-auth", "--addr", "192.0.2.10:8080"}, "not a loopback address"},
		"user without password":              {[]string{"--user", "ops", "--addr", "0.0.0.0:0"}, "GRIDBATCH_MONITOR_PASSWORD is empty"},
	} {
		t.Run(name, func(t *testing.T) {
			noCredentials(t)
			// Nothing is listening at these URLs: the check must come first.
			t.Setenv("GRIDBATCH_REDIS_URL", "redis://127.0.0.1:1/0")
			t.Setenv("GRIDBATCH_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none?sslmode=disable")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := run(ctx, c.args, io.Discard, io.Discard)
			require.ErrorContains(t, err, c.want)
		})
	}
}

// logLines captures the monitor's JSON log and reports its listen address.
type logLines struct {
	mu   sync.Mutex
	buf  strings.Builder
	addr chan string
	once sync.Once
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "monitor started" {
			l.once.Do(func() { l.addr <- rec.Addr })
		}
	}
	return len(p), nil
}

func TestServesOnLoopbackWithoutAuthWhenAsked(t *testing.T) {
	noCredentials(t)
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	t.Setenv("GRIDBATCH_REDIS_URL", r.URL)
	t.Setenv("GRIDBATCH_DATABASE_URL", db.URL)
	t.Setenv("GRIDBATCH_LOG_FORMAT", "json")
	logs := &logLines{addr: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--insecure-no-auth", "--addr", "127.0.0.1:0"}, io.Discard, logs) }()
	var addr string
	select {
	case addr = <-logs.addr:
	case err := <-done:
		t.Fatalf("monitor stopped: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("monitor did not start within 30s")
	}
	for _, page := range []string{"/healthz", "/", "/metrics", "/asynqmon/"} {
		resp, err := http.Get("http://" + addr + page)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, page)
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("monitor did not stop within 10s of its context")
	}
}
