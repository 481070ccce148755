// Package connect turns the configuration into a connected process: Open
// reaches Redis (one PING) and PostgreSQL (OpenStore), loads the model set
// (Models), and builds asynq's client and inspector, the task broker and the
// batch service on them, and its dead-letter queue (Conn.DLQ); Close closes
// them. Every binary connects through it; tests build the same objects on
// their own connections with New. Each error is one line that names the
// variable to fix.
package connect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/logging"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// Models loads the models of GRIDBATCH_MODELS_FILE (the built-in ph and
// hazard when it is empty). Its error is one line naming the file, the entry
// and the field.
func Models(c config.Common) (*model.Set, error) {
	set, err := model.Load(c.ModelsFile)
	if err != nil {
		return nil, fmt.Errorf("GRIDBATCH_MODELS_FILE: %w", err)
	}
	return set, nil
}

// openRedis connects to GRIDBATCH_REDIS_URL (any form asynq.ParseRedisURI
// accepts) and checks it with one PING within 5 s. It first routes
// go-redis's own log lines, process-wide, to log at debug level
// (logging.Redis), so that an unreachable Redis is reported once, in
// openRedis's error, not also by go-redis on standard error. It returns
// the URL parsed too.
func openRedis(ctx context.Context, url string, log *slog.Logger) (redis.UniversalClient, asynq.RedisConnOpt, error) {
	redis.SetLogger(logging.Redis(log))
	opt, err := asynq.ParseRedisURI(url)
	if err != nil {
		return nil, nil, fmt.Errorf("GRIDBATCH_REDIS_URL: %w", err)
	}
	rdb, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, nil, errors.New("GRIDBATCH_REDIS_URL: unsupported Redis connection type")
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, nil, fmt.Errorf("GRIDBATCH_REDIS_URL: cannot reach Redis at %s: %v (is it up and the URL right?)", config.Mask(url), err)
	}
	return rdb, opt, nil
}

// OpenStore opens the PostgreSQL pool with the common settings; app names
// the connections (application_name).
func OpenStore(ctx context.Context, c config.Common, app string) (*store.Store, error) {
	return store.Open(ctx, store.Options{
		URL:              c.DatabaseURL,
		ConnectTimeout:   c.DBConnectTimeout,
		StatementTimeout: c.DBStatementTimeout,
		MaxConns:         int32(c.DBMaxConns),
		AppName:          app,
	})
}
