package bench

import (
	"context"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// TestDelayProxyDelaysBothServices checks figure 11's fault: the proxies
// forward to the real services, and through them a Redis PING and a
// PostgreSQL SELECT 1 each take at least twice the injected delay (there
// and back).
func TestDelayProxyDelaysBothServices(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	const delay = 5 * time.Millisecond
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	rp, err := startDelayProxy(srv, "redis", r.URL, delay)
	require.NoError(t, err)
	defer rp.p.Stop()
	pp, err := startDelayProxy(srv, "postgres", db.URL, delay)
	require.NoError(t, err)
	defer pp.p.Stop()
	require.NotEqual(t, r.URL, rp.url)
	require.NotEqual(t, db.URL, pp.url)

	rd, pg, err := probeRTT(ctx, rp.url, pp.url)
	require.NoError(t, err)
	require.GreaterOrEqual(t, rd, 2*delay, "Redis round trip through the proxy")
	require.GreaterOrEqual(t, pg, 2*delay, "PostgreSQL round trip through the proxy")
}
