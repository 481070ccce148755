package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/gridbatch/gridbatch/internal/alert"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/health"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/schedule"
)

// serve runs the scheduler until ctx is cancelled (SIGTERM/SIGINT), then
// releases the lease and returns nil.
func serve(ctx context.Context, cfg config.Scheduler, schedules []schedule.Schedule, models *model.Set, stderr io.Writer) error {
	log := logging.New(stderr, cfg.LogFormat, cfg.LogLevel)
	region, err := grid.ParseRegion(cfg.Step, cfg.BBox, cfg.MaxCells)
	if err != nil {
		return err
	}
	var sender *alert.Sender
	if cfg.AlertWebhookURL != "" {
		if sender, err = alert.New(alert.Config{URL: cfg.AlertWebhookURL, Timeout: cfg.AlertTimeout}); err != nil {
			return err
		}
	}

	conn, err := connect.Open(ctx, cfg.Common, connect.Options{App: "gridbatch-scheduler", Log: log, Models: models})
	if err != nil {
		return err
	}
	defer conn.Close()
	st, rdb := conn.Store, conn.Redis
	if err := st.CheckSchedulerSchema(ctx); err != nil {
		return err
	}

	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	instance := batch.WorkerName(os.Getpid()) + ":" + hex.EncodeToString(suffix)
	s, err := schedule.New(st, rdb, conn.Batch, log, schedule.Config{
		Schedules:    schedules,
		MisfireGrace: cfg.MisfireGrace,
		LeaderTTL:    cfg.LeaderTTL,
		Instance:     instance,
		Alerts:       sender,
		Request: batch.Request{Region: region, ChunkSize: cfg.ChunkSize, Deadline: cfg.Deadline,
			LockTTL: cfg.EffectiveLockTTL()},
	})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	health.Register(mux, rdb, st, func() []string { return s.Health(time.Now()) }, nil)
	httpSrv, err := health.Listen(cfg.HTTPAddr, mux, log)
	if err != nil {
		return err
	}
	log.Info("scheduler started", "instance", instance, "timezone", cfg.TimeZone, "misfire_grace", cfg.MisfireGrace.String(),
		"leader_ttl", cfg.LeaderTTL.String(), "alerts", sender != nil, "bbox", region.BBox.String(), "step", cfg.Step,
		"chunk_size", cfg.ChunkSize, "deadline", cfg.Deadline.String(), "http_addr", httpSrv.Addr())
	err = s.Run(ctx)
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = httpSrv.Shutdown(sctx)
	log.Info("scheduler stopped", "instance", instance)
	return err
}

var _ schedule.Triggerer = (*batch.Service)(nil)
