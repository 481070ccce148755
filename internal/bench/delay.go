package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// DelayFigure is figure 11: the pipeline at Step with every binary (the
// workers and the enqueuer) reaching Redis and PostgreSQL through an
// in-process toxiproxy that adds Delay each way, against the same batch on
// loopback, the workers at their own default settings. The two alternate,
// loopback first, Repeat pairs.
type DelayFigure struct {
	Delay             time.Duration
	Loopback, Delayed []PipelineFigure
	// Ratios are delayed / loopback cells/s of each pair; Ratio their
	// median, the target's figure.
	Ratios []float64
	Ratio  float64
	Proxy  string
	// RedisRTT and PostgresRTT are the median round trips (PING, SELECT 1)
	// measured through the proxies before the runs: at least 2 × Delay, or
	// the figure is refused.
	RedisRTT, PostgresRTT time.Duration
	// PeakRSSBytes is the largest VmHWM of a worker over the runs.
	PeakRSSBytes int64
}

// toxiproxyVersion names the proxy in the table (go.mod's version).
const toxiproxyVersion = "toxiproxy v2.5.0 (in-process, latency toxic upstream and downstream)"

// delayProxy is one service behind a toxiproxy proxy with a latency toxic
// each way.
type delayProxy struct {
	p   *toxiproxy.Proxy
	url string // the service's URL with the proxy's address
}

func startDelayProxy(srv *toxiproxy.ApiServer, name, rawURL string, delay time.Duration) (*delayProxy, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bench: %s URL: %w", name, err)
	}
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", u.Host)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("bench: start the %s proxy: %w", name, err)
	}
	for _, stream := range []string{"upstream", "downstream"} {
		spec := fmt.Sprintf(`{"name": "delay_%s", "type": "latency", "stream": %q, "attributes": {"latency": %d}}`,
			stream, stream, delay.Milliseconds())
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
			p.Stop()
			return nil, fmt.Errorf("bench: %s proxy %s delay: %w", name, stream, err)
		}
	}
	u.Host = p.Listen
	return &delayProxy{p: p, url: u.String()}, nil
}

// delay measures figure 11 at cfg.Step (seeded already) with the workers at
// their own default settings; it leaves no worker running.
func (h *harness) delay(ctx context.Context, d time.Duration) (*DelayFigure, error) {
	if d.Milliseconds() < 1 {
		return nil, errors.New("bench: the injected delay must be at least 1ms (toxiproxy's unit)")
	}
	f := &DelayFigure{Delay: d, Proxy: toxiproxyVersion}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	rp, err := startDelayProxy(srv, "redis", h.cfg.RedisURL, d)
	if err != nil {
		return nil, err
	}
	defer rp.p.Stop()
	pp, err := startDelayProxy(srv, "postgres", h.cfg.DatabaseURL, d)
	if err != nil {
		return nil, err
	}
	defer pp.p.Stop()

	if f.RedisRTT, f.PostgresRTT, err = probeRTT(ctx, rp.url, pp.url); err != nil {
		return nil, err
	}
	if f.RedisRTT < 2*d || f.PostgresRTT < 2*d {
		return nil, fmt.Errorf("bench: round trips through the proxies (Redis %s, PostgreSQL %s) are shorter than the %s injected each way", f.RedisRTT, f.PostgresRTT, d)
	}
	h.logf("delay: round trips through the proxies: Redis %s, PostgreSQL %s", f.RedisRTT, f.PostgresRTT)

	redisURL, dbURL, own := h.cfg.RedisURL, h.cfg.DatabaseURL, h.ownConcurrency
	defer func() { h.cfg.RedisURL, h.cfg.DatabaseURL, h.ownConcurrency = redisURL, dbURL, own }()
	h.ownConcurrency = true
	if h.workerSettings, err = h.output(ctx, filepath.Join(h.cfg.BinDir, "worker"), h.workerEnv(false), "--print-config"); err != nil {
		return nil, fmt.Errorf("worker --print-config: %w", err)
	}
	run := func(delayed bool) (PipelineFigure, error) {
		h.cfg.RedisURL, h.cfg.DatabaseURL = redisURL, dbURL
		if delayed {
			h.cfg.RedisURL, h.cfg.DatabaseURL = rp.url, pp.url
		}
		if err := h.startWorkers(ctx, false); err != nil {
			return PipelineFigure{}, err
		}
		pr, err := h.pipeline(ctx, h.cfg.Kind, h.cfg.Step, false)
		if err != nil {
			h.killWorkers()
			return pr, err
		}
		ws, err := h.workerFigures()
		if err != nil {
			h.killWorkers()
			return pr, err
		}
		for _, w := range ws {
			f.PeakRSSBytes = max(f.PeakRSSBytes, w.PeakRSSBytes)
		}
		return pr, h.stopWorkers()
	}
	for i := range h.cfg.Repeat {
		lo, err := run(false)
		if err != nil {
			return nil, err
		}
		de, err := run(true)
		if err != nil {
			return nil, fmt.Errorf("with %s injected: %w", d, err)
		}
		f.Loopback, f.Delayed = append(f.Loopback, lo), append(f.Delayed, de)
		f.Ratios = append(f.Ratios, de.CellsPerSecond/lo.CellsPerSecond)
		h.logf("delay pair #%d at step %g, %d chunks in flight: loopback %.0f cells/s, %s each way %.0f cells/s: %.3f (Redis commands per chunk %.1f; workers' peak RSS so far %.0f MiB)",
			i+1, h.cfg.Step, lo.Concurrency, lo.CellsPerSecond, d, de.CellsPerSecond, f.Ratios[i], de.RedisCallsPerChunk, float64(f.PeakRSSBytes)/(1<<20))
	}
	f.Ratio = median(f.Ratios)
	return f, nil
}

// probeRTT returns the median of 20 round trips to Redis (PING) and
// PostgreSQL (SELECT 1) at the given URLs.
func probeRTT(ctx context.Context, redisURL, dbURL string) (rd, pg time.Duration, err error) {
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return 0, 0, err
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: connect through the proxy: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var rs, ps []float64
	for range 20 {
		start := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return 0, 0, fmt.Errorf("bench: PING through the proxy: %w", err)
		}
		rs = append(rs, float64(time.Since(start)))
		start = time.Now()
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			return 0, 0, fmt.Errorf("bench: SELECT 1 through the proxy: %w", err)
		}
		ps = append(ps, float64(time.Since(start)))
	}
	return time.Duration(median(rs)), time.Duration(median(ps)), nil
}
