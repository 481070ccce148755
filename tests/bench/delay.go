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
// loopback, the workers at their own default settings. Between the two, the
// same batch runs through the same proxies with no delay (their latency
// toxics at 0 ms): the proxies copy every byte (a batch's rows, about 1 GB at
// 0.01°) on the machine's own cores, and that run tells their cost from the
// delay's. The three alternate, loopback first, Repeat times.
type DelayFigure struct {
	Delay                      time.Duration
	Loopback, Proxied, Delayed []PipelineFigure
	// Ratios are delayed / loopback cells/s of each round; Ratio their
	// median, the target's figure.
	Ratios []float64
	Ratio  float64
	// ProxiedRatios are delayed / proxied (no delay) cells/s of each round,
	// ProxiedRatio their median: the delay's own cost, the proxies' CPU
	// paid on both sides.
	ProxiedRatios []float64
	ProxiedRatio  float64
	Proxy         string
	// RedisRTT and PostgresRTT are the median round trips (PING, SELECT 1)
	// measured through the proxies before the runs: at least 2 × Delay, or
	// the figure is refused.
	RedisRTT, PostgresRTT time.Duration
	// PeakRSSBytes is the largest VmHWM of a worker over the runs.
	PeakRSSBytes int64
}

// The proxies of Config.DelayProxy.
const (
	proxyToxiproxy = "toxiproxy"
	proxyHop       = "hop"
)

// toxiproxyVersion and hopName name the proxy in the table (go.mod's version).
const (
	toxiproxyVersion = "toxiproxy v2.5.0 (in-process, latency toxic upstream and downstream)"
	hopName          = "the bench's own hop proxy (in-process: a reader and a writer goroutine each way, writev of what is due)"
)

// delayProxy is one service behind a proxy that delays each way.
type delayProxy struct {
	url  string // the service's URL with the proxy's address
	stop func()
}

// startDelayProxy puts the service at rawURL behind a toxiproxy proxy with
// a latency toxic each way.
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
	return &delayProxy{url: u.String(), stop: p.Stop}, nil
}

// startProxy puts the service at rawURL behind a proxy of kind (toxiproxy,
// on srv, or hop) that adds delay each way.
func startProxy(kind string, srv *toxiproxy.ApiServer, name, rawURL string, delay time.Duration) (*delayProxy, error) {
	if kind == proxyHop {
		return startHopProxy(name, rawURL, delay)
	}
	return startDelayProxy(srv, name, rawURL, delay)
}

// startHopProxy puts the service at rawURL behind a hop.
func startHopProxy(name, rawURL string, delay time.Duration) (*delayProxy, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("bench: %s URL: %w", name, err)
	}
	h, err := startHop(u.Host, delay)
	if err != nil {
		return nil, fmt.Errorf("bench: start the %s proxy: %w", name, err)
	}
	u.Host = h.Addr()
	return &delayProxy{url: u.String(), stop: h.Close}, nil
}

// delay measures figure 11 at cfg.Step (seeded already) with the workers at
// their own default settings; it leaves no worker running.
func (h *harness) delay(ctx context.Context, d time.Duration) (*DelayFigure, error) {
	if d.Milliseconds() < 1 {
		return nil, errors.New("bench: the injected delay must be at least 1ms (toxiproxy's unit)")
	}
	f := &DelayFigure{Delay: d, Proxy: toxiproxyVersion}
	if h.cfg.DelayProxy == proxyHop {
		f.Proxy = hopName
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	var proxies [2][2]*delayProxy // [no delay, delayed][Redis, PostgreSQL]
	for i, delay := range []time.Duration{0, d} {
		for j, svc := range []struct{ name, url string }{{"redis", h.cfg.RedisURL}, {"postgres", h.cfg.DatabaseURL}} {
			p, err := startProxy(h.cfg.DelayProxy, srv, fmt.Sprintf("%s-%s", svc.name, delay), svc.url, delay)
			if err != nil {
				return nil, err
			}
			defer p.stop()
			proxies[i][j] = p
		}
	}
	var err error
	if f.RedisRTT, f.PostgresRTT, err = probeRTT(ctx, proxies[1][0].url, proxies[1][1].url); err != nil {
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
	// run measures one batch on loopback (via nil) or through proxies.
	run := func(via *[2]*delayProxy) (PipelineFigure, error) {
		h.cfg.RedisURL, h.cfg.DatabaseURL = redisURL, dbURL
		if via != nil {
			h.cfg.RedisURL, h.cfg.DatabaseURL = via[0].url, via[1].url
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
		lo, err := run(nil)
		if err != nil {
			return nil, err
		}
		px, err := run(&proxies[0])
		if err != nil {
			return nil, fmt.Errorf("through the proxies with no delay: %w", err)
		}
		de, err := run(&proxies[1])
		if err != nil {
			return nil, fmt.Errorf("with %s injected: %w", d, err)
		}
		f.Loopback, f.Proxied, f.Delayed = append(f.Loopback, lo), append(f.Proxied, px), append(f.Delayed, de)
		f.Ratios = append(f.Ratios, de.CellsPerSecond/lo.CellsPerSecond)
		f.ProxiedRatios = append(f.ProxiedRatios, de.CellsPerSecond/px.CellsPerSecond)
		h.logf("delay round #%d at step %g, %d chunks in flight: loopback %.0f cells/s, through the proxies with no delay %.0f, with %s each way %.0f: %.3f × loopback, %.3f × no delay "+
			"(finish %.1f, %.1f, %.1f s; CPU busy %s, %s, %s; the proxies (this process) %.1f, %.1f, %.1f core-s; the workers %.1f, %.1f, %.1f core-s; Redis commands per chunk %.1f; workers' peak RSS so far %.0f MiB)",
			i+1, h.cfg.Step, lo.Concurrency, lo.CellsPerSecond, px.CellsPerSecond, d, de.CellsPerSecond, f.Ratios[i], f.ProxiedRatios[i],
			lo.FinishSeconds, px.FinishSeconds, de.FinishSeconds,
			pct(lo.CPUBusy), pct(px.CPUBusy), pct(de.CPUBusy), lo.CPU.Harness, px.CPU.Harness, de.CPU.Harness,
			lo.CPU.Workers, px.CPU.Workers, de.CPU.Workers, de.RedisCallsPerChunk, float64(f.PeakRSSBytes)/(1<<20))
	}
	f.Ratio = median(f.Ratios)
	f.ProxiedRatio = median(f.ProxiedRatios)
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
