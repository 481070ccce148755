// Package alert posts alerts to a webhook: a JSON document with a
// Slack-compatible one-line "text" and structured fields, sent with a
// timeout and a bounded number of retries, so an unreachable or hanging
// webhook costs a known, bounded time and never more.
package alert

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Events of a Message.
const (
	// EventBatchEnded: a batch ended other than succeeded.
	EventBatchEnded = "batch_ended"
	// EventTickSkipped: a tick came while the previous batch of its kind ran.
	EventTickSkipped = "tick_skipped"
	// EventTickMissed: a tick (or a gap of ticks) was missed and will not fire.
	EventTickMissed = "tick_missed"
)

// Message is one alert. Text is the Slack-style line, plain text: Send
// escapes it (SlackEscape), so a batch's error cannot mention @channel or
// disguise a link; the other fields are for machines. Optional fields are left out of the JSON when empty.
type Message struct {
	Text  string `json:"text"`
	Event string `json:"event"`
	Kind  string `json:"kind"`
	// BatchID is the batch that ended (batch_ended) or, for a skipped tick,
	// the batch still running.
	BatchID string `json:"batch_id"`
	// Status is the batch's final status, or the tick's outcome: skipped or missed.
	Status       string     `json:"status"`
	ScheduledFor *time.Time `json:"scheduled_for"`

	Trigger         string     `json:"trigger,omitempty"`
	Error           string     `json:"error,omitempty"`
	StartedAt       *time.Time `json:"started_at,omitempty"`
	EndedAt         *time.Time `json:"ended_at,omitempty"`
	TotalChunks     int        `json:"total_chunks,omitempty"`
	CompletedChunks int        `json:"completed_chunks,omitempty"`
	FailedChunks    int        `json:"failed_chunks,omitempty"`
	TimedOutChunks  int        `json:"timed_out_chunks,omitempty"`
	LockExpiresAt   *time.Time `json:"lock_expires_at,omitempty"`
	MissedTicks     int        `json:"missed_ticks,omitempty"`
	// Checks are a held batch's failed checks, each "check: what it found".
	Checks      []string   `json:"checks,omitempty"`
	FirstMissed *time.Time `json:"first_missed,omitempty"`
}

// Config configures a Sender. Zero fields take the documented defaults.
type Config struct {
	// URL receives the POSTs. Required.
	URL string
	// Timeout bounds one attempt, connection to response. Defaults to 5s.
	Timeout time.Duration
	// Attempts is how many times a message is tried. Defaults to 3.
	Attempts int
	// Backoff is the wait before the second attempt; it doubles before each
	// later one. Defaults to 1s.
	Backoff time.Duration
	// Client sends the requests. Defaults to a client with no timeout of its
	// own (Timeout applies per attempt).
	Client *http.Client
}

// Sender posts messages to a webhook.
type Sender struct {
	cfg Config
}

// New returns a Sender; it fails when cfg.URL is empty.
func New(cfg Config) (*Sender, error) {
	if cfg.URL == "" {
		return nil, errors.New("alert: empty webhook URL")
	}
	cfg.Timeout = cmp.Or(cfg.Timeout, 5*time.Second)
	cfg.Attempts = cmp.Or(max(cfg.Attempts, 0), 3)
	cfg.Backoff = cmp.Or(cfg.Backoff, time.Second)
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	return &Sender{cfg: cfg}, nil
}

// MaxDuration bounds one Send: every attempt's timeout plus the backoffs.
func (s *Sender) MaxDuration() time.Duration {
	d := time.Duration(s.cfg.Attempts) * s.cfg.Timeout
	for i := 1; i < s.cfg.Attempts; i++ {
		d += s.cfg.Backoff << (i - 1)
	}
	return d
}

// Send posts m, retrying network errors, timeouts, 429 and 5xx answers up
// to the configured attempts with doubling backoff. Any 2xx is success;
// another 4xx is not retried. It returns within MaxDuration, or sooner when
// ctx ends.
func (s *Sender) Send(ctx context.Context, m Message) error {
	m.Text = SlackEscape(m.Text)
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode alert: %w", err)
	}
	var last error
	for i := range s.cfg.Attempts {
		if i > 0 {
			t := time.NewTimer(s.cfg.Backoff << (i - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("alert not sent: %w (last attempt: %v)", ctx.Err(), last)
			case <-t.C:
			}
		}
		retry, err := s.post(ctx, body)
		if err == nil {
			return nil
		}
		last = err
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("alert not sent after %d attempts: %w", s.cfg.Attempts, last)
}

// post makes one attempt; retry says whether another may succeed.
func (s *Sender) post(ctx context.Context, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "gridbatch-scheduler")
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		var ue *url.Error // its text holds the URL, a secret for Slack webhooks
		if errors.As(err, &ue) {
			err = fmt.Errorf("post to the webhook: %w", ue.Err)
		}
		return true, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return false, fmt.Errorf("webhook answered %s; not retried", resp.Status)
	}
}

// slackEscaper escapes the three characters Slack's message formatting
// gives a meaning to.
var slackEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// SlackEscape returns s as Slack shows it literally: & < > escaped as Slack
// asks, so that "<!channel>" mentions nobody and "<https://evil|docs>" is
// no link disguised as another.
func SlackEscape(s string) string { return slackEscaper.Replace(s) }
