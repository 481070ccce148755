// Package alerttest gives tests webhooks to send gridbatch's alerts to: one
// that records them, and one that hangs.
package alerttest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gridbatch/gridbatch/internal/alert"
)

// Recorder is a webhook that records every alert it receives; a body that
// is not an alert.Message gets 400.
type Recorder struct {
	*httptest.Server
	mu   sync.Mutex
	msgs []alert.Message
}

// NewRecorder starts a Recorder; it closes when the test ends.
func NewRecorder(t testing.TB) *Recorder {
	w := &Recorder{}
	w.Server = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var m alert.Message
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(rw, err.Error(), http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
	}))
	t.Cleanup(w.Close)
	return w
}

// Received returns the alerts received so far of the given events, or all
// of them when none is given.
func (w *Recorder) Received(events ...string) []alert.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []alert.Message
	for _, m := range w.msgs {
		if len(events) == 0 || slices.Contains(events, m.Event) {
			out = append(out, m)
		}
	}
	return out
}

// Hanging is a webhook that reads each request's body and then answers
// nothing until the client gives up or the test ends.
type Hanging struct {
	*httptest.Server
	calls atomic.Int64
}

// NewHanging starts a Hanging webhook; when the test ends it lets the
// requests still hanging go, then closes.
func NewHanging(t testing.TB) *Hanging {
	h := &Hanging{}
	release := make(chan struct{})
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h.calls.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(h.Close)                   // runs second: Close waits for the handlers
	t.Cleanup(func() { close(release) }) // runs first
	return h
}

// Calls is how many requests have reached the webhook.
func (h *Hanging) Calls() int { return int(h.calls.Load()) }
