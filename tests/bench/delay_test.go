package bench

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestDelayProxyDelaysBothServices checks figure 11's fault with each
// proxy: it forwards to the real services, and through it a Redis PING and
// a PostgreSQL SELECT 1 each take at least twice the injected delay (there
// and back).
func TestDelayProxyDelaysBothServices(t *testing.T) {
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	const delay = 5 * time.Millisecond
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	for _, proxy := range []string{proxyToxiproxy, proxyHop} {
		t.Run(proxy, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := func(name, url string) *delayProxy {
				p, err := startProxy(proxy, srv, name+"-"+proxy, url, delay)
				require.NoError(t, err)
				t.Cleanup(p.stop)
				require.NotEqual(t, url, p.url)
				return p
			}
			rp, pp := start("redis", r.URL), start("postgres", db.URL)
			rd, pg, err := probeRTT(ctx, rp.url, pp.url)
			require.NoError(t, err)
			require.GreaterOrEqual(t, rd, 2*delay, "Redis round trip through the proxy")
			require.GreaterOrEqual(t, pg, 2*delay, "PostgreSQL round trip through the proxy")
		})
	}
}

// TestHopCarriesEveryByteInOrder sends 4 MiB through a hop to an echo
// server and back, written in pieces while it is read.
func TestHopCarriesEveryByteInOrder(t *testing.T) {
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer echo.Close()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	h, err := startHop(echo.Addr().String(), time.Millisecond)
	require.NoError(t, err)
	defer h.Close()
	c, err := net.Dial("tcp", h.Addr())
	require.NoError(t, err)
	defer c.Close()

	sent := make([]byte, 4<<20)
	_, _ = rand.NewChaCha8([32]byte{1}).Read(sent)
	go func() {
		for b := sent; len(b) > 0; {
			n := min(len(b), 1+len(b)%70_000)
			if _, err := c.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
		}
	}()
	got := make([]byte, len(sent))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Minute)))
	_, err = io.ReadFull(c, got)
	require.NoError(t, err)
	require.True(t, bytes.Equal(sent, got), "the bytes came back changed or out of order")
}
