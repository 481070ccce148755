// Package logging builds the slog logger every binary uses and adapts it to
// asynq's Logger interface and go-redis's.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/hibiken/asynq"
)

// New returns a JSON (format "json") or text logger at the given level
// (debug, info, warn, error), writing to w.
func New(w io.Writer, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level)) // validated by config; info on error
	opts := &slog.HandlerOptions{Level: lv}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Asynq adapts a slog.Logger to asynq.Logger; asynq's own lines carry
// component=asynq.
func Asynq(l *slog.Logger) asynq.Logger { return asynqLogger{l.With("component", "asynq")} }

// AsynqLevel maps a level name to asynq's.
func AsynqLevel(level string) asynq.LogLevel {
	switch strings.ToLower(level) {
	case "debug":
		return asynq.DebugLevel
	case "warn":
		return asynq.WarnLevel
	case "error":
		return asynq.ErrorLevel
	}
	return asynq.InfoLevel
}

// Redis adapts a slog.Logger to go-redis's internal logger (set with
// redis.SetLogger). go-redis logs what gridbatch reports in its own words
// (a pool that cannot dial, a connection dropped), so its lines go to l at
// debug level, with component=redis.
func Redis(l *slog.Logger) RedisLogger { return RedisLogger{l.With("component", "redis")} }

// RedisLogger is go-redis's internal logger on slog; see Redis.
type RedisLogger struct{ l *slog.Logger }

// Printf logs one go-redis line at debug level.
func (r RedisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.l.DebugContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "fatal", true) }
