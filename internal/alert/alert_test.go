package alert_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gridbatch/gridbatch/internal/alert"
	"github.com/gridbatch/gridbatch/internal/alert/alerttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newSender(t *testing.T, url string, timeout time.Duration) *alert.Sender {
	t.Helper()
	s, err := alert.New(alert.Config{URL: url, Timeout: timeout, Backoff: 10 * time.Millisecond,
		Client: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	require.NoError(t, err)
	return s
}

func TestSendPostsSlackCompatibleJSON(t *testing.T) {
	t.Parallel()
	var body []byte
	var contentType string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		contentType = r.Header.Get("Content-Type")
		body, _ = io.ReadAll(r.Body)
	}))
	defer srv.Close()
	at := time.Date(2026, 3, 10, 2, 0, 0, 0, time.UTC)
	err := newSender(t, srv.URL, time.Second).Send(context.Background(), alert.Message{
		Text: "ph batch ph-1 ended partial", Event: alert.EventBatchEnded, Kind: "ph", BatchID: "ph-1",
		Status: "partial", ScheduledFor: &at, FailedChunks: 2,
	})
	require.NoError(t, err)
	require.Equal(t, "application/json", contentType)
	var got map[string]any
	require.NoError(t, json.Unmarshal(body, &got))
	require.Equal(t, "ph batch ph-1 ended partial", got["text"])
	require.Equal(t, "batch_ended", got["event"])
	require.Equal(t, "ph", got["kind"])
	require.Equal(t, "ph-1", got["batch_id"])
	require.Equal(t, "partial", got["status"])
	require.Equal(t, "2026-03-10T02:00:00Z", got["scheduled_for"])
	require.EqualValues(t, 2, got["failed_chunks"])
	require.NotContains(t, got, "missed_ticks", "empty optional fields are left out")
}

func TestSendRetries(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		statuses  []int // answers in turn; the last repeats
		wantCalls int32
		wantErr   string
	}{
		{"success at once", []int{200}, 1, ""},
		{"5xx then success", []int{503, 502, 204}, 3, ""},
		{"429 is retried", []int{429, 200}, 2, ""},
		{"5xx every time gives up after 3 attempts", []int{500}, 3, "after 3 attempts: webhook answered 500"},
		{"4xx is not retried", []int{404}, 1, "404 Not Found; not retried"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n := int(calls.Add(1)) - 1
				w.WriteHeader(tc.statuses[min(n, len(tc.statuses)-1)])
			}))
			defer srv.Close()
			err := newSender(t, srv.URL, time.Second).Send(context.Background(), alert.Message{Text: "x"})
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
			require.Equal(t, tc.wantCalls, calls.Load())
		})
	}
}

func TestSendIsBoundedWhenTheWebhookHangsOrIsDown(t *testing.T) {
	t.Parallel()
	hang := alerttest.NewHanging(t)

	s := newSender(t, hang.URL, 200*time.Millisecond)
	start := time.Now()
	err := s.Send(context.Background(), alert.Message{Text: "x"})
	require.ErrorContains(t, err, "after 3 attempts")
	require.Less(t, time.Since(start), s.MaxDuration()+time.Second)
	require.Equal(t, 3*200*time.Millisecond+10*time.Millisecond+20*time.Millisecond, s.MaxDuration())

	// Nothing listens: a refused connection fails fast, and the error
	// does not leak the URL (a Slack webhook URL is a secret).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	err = newSender(t, "http://"+addr+"/services/T000/SECRET", time.Second).Send(context.Background(), alert.Message{Text: "x"})
	require.Error(t, err)
	require.NotContains(t, err.Error(), "SECRET")

	// A cancelled context stops the retries at once.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	require.Error(t, newSender(t, hang.URL, 10*time.Second).Send(ctx, alert.Message{Text: "x"}))
	require.Less(t, time.Since(start), 2*time.Second)
}

func TestNewNeedsAURL(t *testing.T) {
	t.Parallel()
	_, err := alert.New(alert.Config{})
	require.Error(t, err)
}

func TestSendEscapesTheTextForSlack(t *testing.T) {
	t.Parallel()
	rec := alerttest.NewRecorder(t)
	hostile := "model said <!channel> see <https://evil.example/login|https://docs.example> & <@U123>"
	require.NoError(t, newSender(t, rec.URL, time.Second).Send(context.Background(), alert.Message{
		Text: ":warning: gridbatch: ph batch ph-1 ended failed. Error: " + hostile, Event: alert.EventBatchEnded, Error: hostile}))
	got := rec.Received(alert.EventBatchEnded)
	require.Len(t, got, 1)
	require.Equal(t, ":warning: gridbatch: ph batch ph-1 ended failed. Error: model said &lt;!channel&gt; see &lt;https://evil.example/login|https://docs.example&gt; &amp; &lt;@U123&gt;", got[0].Text)
	require.NotContains(t, got[0].Text, "<")
	require.Equal(t, hostile, got[0].Error, "the machine field keeps the text as it is")
}
