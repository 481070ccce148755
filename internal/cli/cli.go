// Package cli is what the gridbatch binaries share at their edges: exit
// codes, signal handling and printing errors as one masked line.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/gridbatch/gridbatch/internal/config"
)

// Exit codes of DESIGN.md.
const (
	ExitOK        = 0
	ExitError     = 1
	ExitPartial   = 3
	ExitFailed    = 4 // timed out or failed
	ExitRefused   = 5 // a batch of that kind is already running
	ExitCancelled = 6
	ExitHeld      = 7 // computed, but its declared checks failed: not published
)

// ExitError carries the process exit code for an error. A nil Err with a
// code exits silently with that code.
type ExitErr struct {
	Code int
	Err  error
}

func (e *ExitErr) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitErr) Unwrap() error { return e.Err }

// WithCode wraps err so the process exits with code.
func WithCode(code int, err error) error { return &ExitErr{Code: code, Err: err} }

// Code maps an error to its exit code: 0 for nil or --help, the carried code
// for an ExitErr, 1 otherwise.
func Code(err error) int {
	if err == nil || errors.Is(err, config.ErrHelp) {
		return ExitOK
	}
	var e *ExitErr
	if errors.As(err, &e) {
		return e.Code
	}
	return ExitError
}

// Main runs run with a context cancelled on SIGINT or SIGTERM, prints any
// error as one line "name: message" with passwords masked, and exits with the
// error's code.
func Main(name string, run func(ctx context.Context, args []string, stdout, stderr io.Writer) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	code := Code(err)
	if err != nil && code != ExitOK {
		var e *ExitErr
		if !errors.As(err, &e) || e.Err != nil {
			fmt.Fprintf(os.Stderr, "%s: %s\n", name, Visible(OneLine(config.Mask(err.Error()))))
		}
	}
	os.Exit(code)
}

// OneLine folds a multi-line message into one line.
func OneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// Visible returns s with what a terminal would act on made visible: every
// control character (C0 such as ESC and newline, DEL, C1), every
// bidirectional-text control (U+061C, U+200E/F, U+202A–E, U+2066–9) and
// every byte that is not UTF-8 is written as a Go escape (\x1b, \n,
// \u202e), so that text from the database (a model's error, a payload)
// cannot move the cursor, recolour the terminal or reorder a line. Every
// command prints such text through it.
func Visible(s string) string {
	clean := true
	for _, r := range s {
		if hidden(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case hidden(r):
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\n', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// hidden is a rune Visible escapes.
func hidden(r rune) bool {
	switch {
	case r == utf8.RuneError:
		return true // possibly a byte that is not UTF-8; a real U+FFFD is escaped too
	case unicode.IsControl(r):
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}
