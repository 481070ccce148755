package connect

import (
	"context"
	"io"
	"log/slog"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/gridbatch/gridbatch/dlq"
	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/tasks"
)

// Options are what a process adds to the common configuration when it
// connects.
type Options struct {
	// App names the PostgreSQL connections (application_name), e.g.
	// "gridbatch-worker".
	App string
	// Log receives the batch service's lines and, at debug level,
	// go-redis's own. Nil discards them.
	Log *slog.Logger
	// Models is the model set. Nil makes Open load GRIDBATCH_MODELS_FILE
	// (Models) once Redis and PostgreSQL are reached, and New take the
	// built-in models.
	Models *model.Set
	// Chunk are the options of the chunk tasks the broker enqueues. A nil
	// KindTimeouts is set to the models' own timeouts (tasks.KindTimeouts).
	Chunk tasks.ChunkOptions
	// Batch configures the batch service. Its Models is set to the model
	// set; an empty Worker is batch.New's default (batch.WorkerName).
	Batch batch.Config
	// Compute, when set, gives the batch service's Compute
	// (batch.Config.Compute) from the model set; Open calls it only once
	// Redis and PostgreSQL are reached, so that what it starts (the
	// worker's model processes) never starts in a process that cannot
	// connect.
	Compute func(*model.Set) batch.Computer
}

// Conn is a process's connections and what runs on them: the store, the
// Redis client, asynq's client and inspector on that client, the task
// broker and the batch service.
type Conn struct {
	Store *store.Store
	Redis redis.UniversalClient
	// RedisOpt is GRIDBATCH_REDIS_URL parsed, for what opens its own
	// connections (asynqmon). Nil on a Conn from New.
	RedisOpt  asynq.RedisConnOpt
	Client    *asynq.Client
	Inspector *asynq.Inspector
	Broker    *tasks.Broker
	Batch     *batch.Service
	Models    *model.Set
	Log       *slog.Logger
	// owned: Close closes Store and Redis (Open opened them).
	owned bool
}

// Open connects to Redis (one PING within 5 s) and then PostgreSQL as c
// says, loads the model set unless opts gives it, and builds the broker and
// the batch service on them. Its errors are Redis's (GRIDBATCH_REDIS_URL),
// OpenStore's and Models', in that order; what it opened before an error
// is closed.
func Open(ctx context.Context, c config.Common, opts Options) (*Conn, error) {
	opts.Log = logger(opts.Log)
	rdb, redisOpt, err := openRedis(ctx, c.RedisURL, opts.Log)
	if err != nil {
		return nil, err
	}
	st, err := OpenStore(ctx, c, opts.App)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	if opts.Models == nil {
		if opts.Models, err = Models(c); err != nil {
			st.Close()
			rdb.Close()
			return nil, err
		}
	}
	conn := New(st, rdb, opts)
	conn.RedisOpt, conn.owned = redisOpt, true
	return conn, nil
}

// New builds the broker and the batch service on a store and a Redis
// client that are already open (a test's). Close leaves them open.
func New(st *store.Store, rdb redis.UniversalClient, opts Options) *Conn {
	log := logger(opts.Log)
	models := opts.Models
	if models == nil {
		models = model.Builtins()
	}
	client := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	chunk := opts.Chunk
	if chunk.KindTimeouts == nil {
		chunk.KindTimeouts = tasks.KindTimeouts(models)
	}
	broker := tasks.NewBroker(client, insp, rdb, chunk)
	bc := opts.Batch
	bc.Models = models
	if opts.Compute != nil {
		bc.Compute = opts.Compute(models)
	}
	return &Conn{Store: st, Redis: rdb, Client: client, Inspector: insp, Broker: broker,
		Batch: batch.New(st, broker, log, bc), Models: models, Log: log}
}

// NewBroker returns a broker on the Conn's clients whose chunk tasks get
// opts (as given: KindTimeouts is not filled in), e.g. for requeued dead
// letters.
func (c *Conn) NewBroker(opts tasks.ChunkOptions) *tasks.Broker {
	return tasks.NewBroker(c.Client, c.Inspector, c.Redis, opts)
}

// DLQ returns the dead-letter queue of both queues (tasks.QueueNames) on
// the Conn's batch service; b is the broker requeued chunks go through (nil
// for the Conn's). cfg's Queues is set.
func (c *Conn) DLQ(b *tasks.Broker, cfg dlq.Config) (*dlq.Service, error) {
	if b == nil {
		b = c.Broker
	}
	cfg.Queues = tasks.QueueNames()
	return dlq.New(c.Store, c.Redis, c.Client, c.Batch, b, c.Log, cfg)
}

// Close closes what Open opened, in reverse order: the store, then the
// Redis client. asynq's client and inspector share that Redis client and
// hold nothing of their own. On a Conn from New it does nothing.
func (c *Conn) Close() {
	if !c.owned {
		return
	}
	c.Store.Close()
	c.Redis.Close()
}

func logger(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return log
}
