package bench

import (
	"net"
	"sync"
	"time"
)

// hop is a TCP proxy that delays every byte by a fixed time each way, as a
// network hop would, with less CPU than toxiproxy's chain of goroutines and
// channels (see Config.DelayProxy): per direction
// one goroutine reads and one writes, and the writer sends everything due in
// one writev, so a stream costs about a read per segment and a write per
// delay period.
type hop struct {
	ln     net.Listener
	target string
	delay  time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startHop listens on a free loopback port and forwards each connection to
// target with delay added each way.
func startHop(target string, delay time.Duration) (*hop, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hop{ln: ln, target: target, delay: delay, conns: map[net.Conn]struct{}{}}
	h.wg.Add(1)
	go h.serve()
	return h, nil
}

// Addr is the address to connect to instead of the target.
func (h *hop) Addr() string { return h.ln.Addr().String() }

// Close stops listening and closes every connection.
func (h *hop) Close() {
	h.ln.Close()
	h.mu.Lock()
	h.closed = true
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *hop) track(c net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		c.Close()
		return false
	}
	h.conns[c] = struct{}{}
	return true
}

func (h *hop) serve() {
	defer h.wg.Done()
	for {
		c, err := h.ln.Accept()
		if err != nil {
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.link(c)
		}()
	}
}

// link forwards one client connection until either side ends it.
func (h *hop) link(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", h.target)
	if err != nil {
		return
	}
	defer server.Close()
	if !h.track(client) || !h.track(server) {
		return
	}
	defer func() {
		h.mu.Lock()
		delete(h.conns, client)
		delete(h.conns, server)
		h.mu.Unlock()
	}()
	done := make(chan struct{}, 2)
	go func() { h.pipe(server, client); done <- struct{}{} }()
	go func() { h.pipe(client, server); done <- struct{}{} }()
	<-done // one side ended: end both
	client.Close()
	server.Close()
	<-done
}

// segment is bytes read at a time.
type segment struct {
	at  time.Time
	buf *[]byte
	n   int
}

var hopBuffers = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// pipe copies src to dst, each byte delay after it was read.
func (h *hop) pipe(dst, src net.Conn) {
	segs := make(chan segment, 1024)
	go func() {
		defer close(segs)
		for {
			buf := hopBuffers.Get().(*[]byte)
			n, err := src.Read(*buf)
			if n > 0 {
				segs <- segment{at: time.Now(), buf: buf, n: n}
			} else {
				hopBuffers.Put(buf)
			}
			if err != nil {
				return
			}
		}
	}()
	var (
		out     net.Buffers
		held    []*[]byte
		next    segment
		hasNext bool
	)
	for {
		if !hasNext {
			s, ok := <-segs
			if !ok {
				return
			}
			next, hasNext = s, true
		}
		time.Sleep(time.Until(next.at.Add(h.delay)))
		// Send what is due now in one write.
		out, held = out[:0], held[:0]
		now := time.Now()
		for hasNext && !next.at.Add(h.delay).After(now) {
			out = append(out, (*next.buf)[:next.n])
			held = append(held, next.buf)
			hasNext = false
			select {
			case s, ok := <-segs:
				if ok {
					next, hasNext = s, true
				}
			default:
			}
		}
		_, err := out.WriteTo(dst)
		for _, b := range held {
			hopBuffers.Put(b)
		}
		if err != nil {
			src.Close() // ends the reader
			for s := range segs {
				hopBuffers.Put(s.buf)
			}
			return
		}
	}
}
