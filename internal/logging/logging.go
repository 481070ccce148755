// Package logging builds the slog logger every binary uses and adapts it to
// asynq's Logger interface.
package logging

import (
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

type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...)) }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...), "fatal", true) }
