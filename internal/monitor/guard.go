package monitor

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MinPasswordLength is the shortest monitor password CheckAuth accepts.
const MinPasswordLength = 12

// noFraming makes every response, asynqmon's included, refuse to be framed
// (clickjacking: a page elsewhere framing the monitor with the browser's
// cached login): X-Frame-Options DENY, and a Content-Security-Policy with
// frame-ancestors 'none', added to the handler's own policy if it has one
// without it.
func noFraming(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&framingWriter{ResponseWriter: w}, r)
	})
}

// framingWriter sets the framing headers just before the response's header
// is written, over whatever the handler set.
type framingWriter struct {
	http.ResponseWriter
	done bool
}

func (f *framingWriter) WriteHeader(code int) {
	if !f.done {
		f.done = true
		h := f.Header()
		h.Set("X-Frame-Options", "DENY")
		switch csp := h.Get("Content-Security-Policy"); {
		case csp == "":
			h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		case !strings.Contains(csp, "frame-ancestors 'none'"):
			h.Set("Content-Security-Policy", csp+"; frame-ancestors 'none'")
		}
	}
	f.ResponseWriter.WriteHeader(code)
}

func (f *framingWriter) Write(b []byte) (int, error) {
	if !f.done {
		f.WriteHeader(http.StatusOK)
	}
	return f.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (f *framingWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// Flush passes a flush on, for streamed responses.
func (f *framingWriter) Flush() {
	if !f.done {
		f.WriteHeader(http.StatusOK)
	}
	if fl, ok := f.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

// loopbackHostOnly refuses (421) a request whose Host header is not a
// loopback name or address: without authentication, a DNS name rebound to
// 127.0.0.1 would otherwise let any web page use the monitor.
func loopbackHostOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		ip := net.ParseIP(host)
		if !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
			http.Error(w, "421 Misdirected Request: without authentication (--insecure-no-auth) the monitor answers only to a loopback host such as 127.0.0.1 or localhost", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Login throttling: a client (IP address) that fails loginFailures logins
// in a row (wrong credentials; none at all is no login) is refused for loginBlock, doubled at each further failure up to
// loginMaxBlock; a success forgets its failures.
const (
	loginFailures  = 5
	loginBlock     = 30 * time.Second
	loginMaxBlock  = 15 * time.Minute
	loginMaxClient = 10_000 // clients remembered at most
)

// loginThrottle counts failed logins per client.
type loginThrottle struct {
	mu      sync.Mutex
	clients map[string]*loginState
	now     func() time.Time
}

type loginState struct {
	failures int
	until    time.Time // refused until then
	last     time.Time
}

func newLoginThrottle() *loginThrottle {
	return &loginThrottle{clients: map[string]*loginState{}, now: time.Now}
}

// blocked returns how long client is still refused, 0 when it may try.
func (t *loginThrottle) blocked(client string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st := t.clients[client]; st != nil {
		return max(st.until.Sub(t.now()), 0)
	}
	return 0
}

// failed records a failed login of client and returns its failures in a
// row and how long it is now refused.
func (t *loginThrottle) failed(client string) (int, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	st := t.clients[client]
	if st == nil {
		if len(t.clients) >= loginMaxClient {
			t.forgetOld(now)
		}
		st = &loginState{}
		t.clients[client] = st
	}
	st.failures++
	st.last = now
	var block time.Duration
	if over := st.failures - loginFailures; over >= 0 {
		block = min(loginBlock<<min(over, 10), loginMaxBlock)
		st.until = now.Add(block)
	}
	return st.failures, block
}

// succeeded forgets client's failures.
func (t *loginThrottle) succeeded(client string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.clients, client)
}

// forgetOld drops the clients not refused and idle for loginMaxBlock, or,
// when none is, every client: memory stays bounded under a flood of
// addresses.
func (t *loginThrottle) forgetOld(now time.Time) {
	for c, st := range t.clients {
		if now.After(st.until) && now.Sub(st.last) > loginMaxBlock {
			delete(t.clients, c)
		}
	}
	if len(t.clients) >= loginMaxClient {
		clear(t.clients)
	}
}

// clientOf is the client address of r (its TCP peer; a proxy in front
// makes every client one).
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// throttled wraps the basic-auth check: a refused client gets 429 with
// Retry-After without its credentials being looked at, and every failure
// is logged with the client's address.
func throttled(t *loginThrottle, log *slog.Logger, check func(r *http.Request) bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := clientOf(r)
		if wait := t.blocked(client); wait > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
			http.Error(w, "429 Too Many Requests: too many failed logins from "+client+"; try again later", http.StatusTooManyRequests)
			return
		}
		if !check(r) {
			// A request without credentials is the browser asking for
			// the login dialog, not a failed login.
			if _, _, given := r.BasicAuth(); given {
				n, block := t.failed(client)
				log.Warn("monitor login failed", "client", client, "failures_in_a_row", n, "refused_for", block.String(), "path", r.URL.Path)
			}
			w.Header().Set("WWW-Authenticate", `Basic realm="gridbatch monitor", charset="UTF-8"`)
			http.Error(w, "401 Unauthorized: this monitor needs the user and password of GRIDBATCH_MONITOR_USER and GRIDBATCH_MONITOR_PASSWORD", http.StatusUnauthorized)
			return
		}
		t.succeeded(client)
		next.ServeHTTP(w, r)
	})
}

// validID reports whether id can be a batch ID (a kind, then the time and
// a random suffix: letters, digits, '_', '.', ':' and '-', 128 at most), so
// that nothing else reaches a query.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
