package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/connect"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// conn is an open connection to Redis and PostgreSQL with the batch service on top.
type conn struct {
	st     *store.Store
	rdb    redis.UniversalClient
	client *asynq.Client
	insp   *asynq.Inspector
	svc    *batch.Service
	log    *slog.Logger
}

func openConn(ctx context.Context, c config.Common, stderr io.Writer) (*conn, error) {
	log := logging.New(io.Discard, c.LogFormat, c.LogLevel)
	if c.LogLevel == "debug" {
		log = logging.New(stderr, c.LogFormat, c.LogLevel)
	}
	rdb, err := connect.OpenRedis(ctx, c.RedisURL, log)
	if err != nil {
		return nil, err
	}
	st, err := openStore(ctx, c)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	models, err := connect.Models(c)
	if err != nil {
		rdb.Close()
		st.Close()
		return nil, err
	}
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	svc := batch.New(st, tasks.NewBroker(client, insp, rdb, tasks.ChunkOptions{KindTimeouts: tasks.KindTimeouts(models)}), log, batch.Config{Models: models})
	return &conn{st: st, rdb: rdb, client: client, insp: insp, svc: svc, log: log}, nil
}

func (c *conn) Close() {
	c.client.Close()
	c.st.Close()
	c.rdb.Close()
}
