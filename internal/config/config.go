// Package config holds one Config struct per gridbatch binary. Every setting
// comes from an environment variable and may be overridden by a flag of the
// same meaning; Load is the only reader of the process environment.
package config

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/gridbatch/gridbatch/internal/grid"
)

// Defaults shared by the binaries. They are the values DESIGN.md promises.
const (
	DefaultRedisURL    = "redis://127.0.0.1:6379/0"
	DefaultDatabaseURL = "postgres://gridbatch@127.0.0.1:5432/gridbatch?sslmode=disable"
)

// ErrHelp is returned by Load when the user asked for --help; the usage text
// has already been written and the caller should exit 0.
var ErrHelp = flag.ErrHelp

// Common is what every binary needs: where Redis and PostgreSQL are and how
// to log.
type Common struct {
	// RedisURL is any URL asynq.ParseRedisURI accepts (redis://, rediss://,
	// redis-socket://, redis-sentinel://). Defaults to redis://127.0.0.1:6379/0.
	RedisURL string
	// DatabaseURL is a PostgreSQL URL or key=value DSN. Defaults to
	// postgres://gridbatch@127.0.0.1:5432/gridbatch?sslmode=disable.
	DatabaseURL string
	// DBConnectTimeout bounds each new PostgreSQL connection. Defaults to 5s.
	DBConnectTimeout time.Duration
	// DBStatementTimeout is the server-side statement_timeout of every
	// connection. Defaults to 60s.
	DBStatementTimeout time.Duration
	// DBMaxConns caps the pool. Defaults to 8.
	DBMaxConns int
	// LogFormat is "json" (default) or "text".
	LogFormat string
	// LogLevel is debug, info (default), warn or error.
	LogLevel string
	// PrintConfig makes the binary print its effective configuration and exit.
	PrintConfig bool
	// ModelsFile is the models file (YAML) declaring the users' own models;
	// empty means only the built-in ph and hazard.
	ModelsFile string
	// KeepBatches is how many ended batches per kind, besides those whose
	// rows the published values show, keep their own rows; older ones are
	// dropped by the workers' reconciler and 'enqueuer prune'. Defaults to 3.
	KeepBatches int
}

// Batch holds the settings of a batch run.
type Batch struct {
	// ChunkSize is the number of cells in one chunk task. Defaults to 500.
	ChunkSize int
	// Deadline is how long a batch may run before it ends timed_out. Defaults to 2h.
	Deadline time.Duration
	// LockTTL is the TTL of the per-kind batch lock. The zero value means
	// Deadline + 10m, so the lock always outlives the batch it guards.
	LockTTL time.Duration
	// Step is the grid step in degrees. Defaults to 0.05.
	Step float64
	// BBox is the region as LON_MIN,LAT_MIN,LON_MAX,LAT_MAX. Defaults to the
	// Korea box 124,33,132,39.
	BBox string
	// MaxCells refuses batches and seeds larger than this. Defaults to 10,000,000.
	MaxCells int
}

// EffectiveLockTTL is LockTTL, or Deadline + 10m when LockTTL is zero.
func (b Batch) EffectiveLockTTL() time.Duration {
	if b.LockTTL > 0 {
		return b.LockTTL
	}
	return b.Deadline + 10*time.Minute
}

// Validate reports the first setting out of range, naming its variable.
func (b Batch) Validate() error {
	switch {
	case b.ChunkSize < 1 || b.ChunkSize > grid.MaxChunkSize:
		return badValue("GRIDBATCH_CHUNK_SIZE", b.ChunkSize, fmt.Sprintf("must be between 1 and %d", grid.MaxChunkSize))
	case b.Deadline <= 0:
		return badValue("GRIDBATCH_BATCH_DEADLINE", b.Deadline, "must be positive, e.g. 2h")
	case b.LockTTL < 0:
		return badValue("GRIDBATCH_LOCK_TTL", b.LockTTL, "must be positive, or 0 for deadline + 10m")
	case b.LockTTL > 0 && b.LockTTL <= b.Deadline:
		return badValue("GRIDBATCH_LOCK_TTL", b.LockTTL, fmt.Sprintf("must be longer than the batch deadline %s, or the lock could expire under a running batch", b.Deadline))
	case b.MaxCells < 1:
		return badValue("GRIDBATCH_MAX_CELLS", b.MaxCells, "must be at least 1")
	}
	return nil
}

// Validate reports the first bad common setting, naming its variable.
func (c Common) Validate() error {
	if err := validateRedisURL(c.RedisURL); err != nil {
		return err
	}
	if err := validateDatabaseURL(c.DatabaseURL); err != nil {
		return err
	}
	switch {
	case c.DBConnectTimeout <= 0:
		return badValue("GRIDBATCH_DB_CONNECT_TIMEOUT", c.DBConnectTimeout, "must be positive, e.g. 5s")
	case c.DBStatementTimeout <= 0:
		return badValue("GRIDBATCH_DB_STATEMENT_TIMEOUT", c.DBStatementTimeout, "must be positive, e.g. 60s")
	case c.DBMaxConns < 1:
		return badValue("GRIDBATCH_DB_MAX_CONNS", c.DBMaxConns, "must be at least 1")
	case c.KeepBatches < 0:
		return badValue("GRIDBATCH_KEEP_BATCHES", c.KeepBatches, "must be 0 or more")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return badValue("GRIDBATCH_LOG_FORMAT", c.LogFormat, "must be json or text")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return badValue("GRIDBATCH_LOG_LEVEL", c.LogLevel, "must be debug, info, warn or error")
	}
	return nil
}

func validateRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("GRIDBATCH_REDIS_URL=%q is not a URL; expected e.g. redis://127.0.0.1:6379/0", Mask(s))
	}
	switch u.Scheme {
	case "redis", "rediss", "redis-socket", "redis-sentinel":
		return nil
	}
	return fmt.Errorf("GRIDBATCH_REDIS_URL=%q: scheme must be redis, rediss, redis-socket or redis-sentinel; expected e.g. redis://127.0.0.1:6379/0", Mask(s))
}

func validateDatabaseURL(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("GRIDBATCH_DATABASE_URL is empty; expected e.g. postgres://gridbatch@127.0.0.1:5432/gridbatch?sslmode=disable")
	}
	if !strings.Contains(s, "://") {
		return nil // key=value DSN; pgx reports its own errors at connect time
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("GRIDBATCH_DATABASE_URL=%q is not a valid URL; expected e.g. postgres://gridbatch@127.0.0.1:5432/gridbatch?sslmode=disable", Mask(s))
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("GRIDBATCH_DATABASE_URL=%q: scheme must be postgres or postgresql; expected e.g. postgres://gridbatch@127.0.0.1:5432/gridbatch?sslmode=disable", Mask(s))
	}
	return nil
}

func badValue(env string, v any, why string) error {
	return fmt.Errorf("%s=%v %s", env, v, why)
}

// Mask hides passwords in s, so that a configuration or an error can be
// printed safely: the password of every URL in it, found by parsing the URL
// as net/url does (user information ends at the authority's last @, so a
// password holding @ is hidden whole), and the value of every password=
// of a key=value DSN. A secret is "xxxxx".
func Mask(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			break
		}
		start := i
		for start > 0 && isSchemeByte(s[start-1]) {
			start--
		}
		end := len(s)
		if j := strings.IndexFunc(s[i+3:], endsURL); j >= 0 {
			end = i + 3 + j
		}
		b.WriteString(s[:start])
		b.WriteString(redactURL(s[start:end], i-start))
		s = s[end:]
	}
	b.WriteString(s)
	return maskDSNPasswords(b.String())
}

func isSchemeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'
}

// endsURL is a character that ends a URL within a text: a space or a quote.
func endsURL(r rune) bool { return unicode.IsSpace(r) || r == '"' || r == '\'' || r == '`' }

// redactURL returns the URL u (whose "://" is at sep) with its password,
// if any, replaced by xxxxx, as url.URL.Redacted does; a URL net/url cannot
// parse (several hosts, as redis-sentinel's) loses everything between the
// user name and the authority's last @.
func redactURL(u string, sep int) string {
	if pu, err := url.Parse(u); err == nil {
		if _, ok := pu.User.Password(); ok {
			return pu.Redacted()
		}
		return u
	}
	auth := u[sep+3:]
	if j := strings.IndexAny(auth, "/?#"); j >= 0 && !strings.Contains(auth[j:], "@") {
		auth = auth[:j]
	}
	at := strings.LastIndex(auth, "@")
	colon := strings.Index(auth, ":")
	if at < 0 || colon < 0 || colon > at {
		return u
	}
	return u[:sep+3] + auth[:colon] + ":xxxxx" + u[sep+3+at:]
}

// maskDSNPasswords replaces the value of each password= (any case, spaces
// around =) by xxxxx: a quoted value ('…', with \' inside) or one up to
// the next space.
func maskDSNPasswords(s string) string {
	lower := strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
	var b strings.Builder
	from := 0
	for i := 0; ; {
		k := strings.Index(lower[i:], "password")
		if k < 0 {
			break
		}
		j := i + k + len("password")
		for j < len(s) && s[j] == ' ' {
			j++
		}
		if j == len(s) || s[j] != '=' {
			i = i + k + 1
			continue
		}
		j++
		for j < len(s) && s[j] == ' ' {
			j++
		}
		end := j
		if end < len(s) && s[end] == '\'' {
			for end++; end < len(s) && s[end] != '\''; end++ {
				if s[end] == '\\' {
					end++
				}
			}
			end = min(end+1, len(s))
		} else {
			for end < len(s) && !unicode.IsSpace(rune(s[end])) {
				end++
			}
		}
		b.WriteString(s[from:j])
		b.WriteString("xxxxx")
		from, i = end, end
	}
	b.WriteString(s[from:])
	return b.String()
}

// MaskError returns err with any password in its text masked. It keeps the
// chain for errors.Is and errors.As.
func MaskError(err error) error {
	if err == nil {
		return nil
	}
	if m := Mask(err.Error()); m != err.Error() {
		return maskedError{msg: m, err: err}
	}
	return err
}

type maskedError struct {
	msg string
	err error
}

func (e maskedError) Error() string { return e.msg }
func (e maskedError) Unwrap() error { return e.err }

// Set is a flag set whose flags are bound to environment variables. Each
// flag's default comes from its variable when that is set.
type Set struct {
	fs      *flag.FlagSet
	env     map[string]string // flag name → variable
	secret  map[string]bool
	creds   map[string]bool          // URL flags that may carry a password
	derived map[string]func() string // flag name → its effective value, for --print-config
	lookup  func(string) (string, bool)
	about   string
	example string
	args    []string
}

// NewSet starts a flag set for a binary or subcommand. about is the text
// printed at the top of --help, example the lines printed at its end.
func NewSet(name, about, example string) *Set {
	s := &Set{
		fs:      flag.NewFlagSet(name, flag.ContinueOnError),
		env:     map[string]string{},
		secret:  map[string]bool{},
		creds:   map[string]bool{},
		derived: map[string]func() string{},
		lookup:  os.LookupEnv,
		about:   about,
		example: example,
	}
	s.fs.Usage = func() { s.Usage(s.fs.Output()) }
	return s
}

// WithLookup replaces the environment lookup; tests use it.
func (s *Set) WithLookup(f func(string) (string, bool)) *Set {
	s.lookup = f
	return s
}

// FlagSet exposes the underlying flag set, e.g. for positional arguments.
func (s *Set) FlagSet() *flag.FlagSet { return s.fs }

// String binds a string flag to env (which may be empty for a flag-only setting).
func (s *Set) String(p *string, name, env, def, usage string) {
	s.fs.StringVar(p, name, def, usage)
	s.bind(name, env)
}

// Secret is String for a value that is never printed, and never taken from
// the command line (where ps and /proc/PID/cmdline show it): only from its
// variable env, or from the file named by env_FILE.
func (s *Set) Secret(p *string, name, env, def, usage string) {
	s.String(p, name, env, def, usage)
	s.secret[name] = true
}

// CredentialURL is String for a URL that may carry a password: printed
// masked, taken from the file named by env_FILE as well as from env, and
// refused on the command line when it carries a password.
func (s *Set) CredentialURL(p *string, name, env, def, usage string) {
	s.String(p, name, env, def, usage)
	s.creds[name] = true
}

// Int binds an int flag.
func (s *Set) Int(p *int, name, env string, def int, usage string) {
	s.fs.IntVar(p, name, def, usage)
	s.bind(name, env)
}

// Float binds a float64 flag.
func (s *Set) Float(p *float64, name, env string, def float64, usage string) {
	s.fs.Float64Var(p, name, def, usage)
	s.bind(name, env)
}

// Duration binds a time.Duration flag.
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, usage string) {
	s.fs.DurationVar(p, name, def, usage)
	s.bind(name, env)
}

// Bool binds a bool flag.
func (s *Set) Bool(p *bool, name, env string, def bool, usage string) {
	s.fs.BoolVar(p, name, def, usage)
	s.bind(name, env)
}

func (s *Set) bind(name, env string) {
	if env != "" {
		s.env[name] = env
	}
}

// Common binds the settings every binary has.
func (s *Set) Common(c *Common) {
	s.CredentialURL(&c.RedisURL, "redis-url", "GRIDBATCH_REDIS_URL", DefaultRedisURL, "Redis `URL` (asynq's broker); a password only in the variable or GRIDBATCH_REDIS_URL_FILE")
	s.CredentialURL(&c.DatabaseURL, "database-url", "GRIDBATCH_DATABASE_URL", DefaultDatabaseURL, "PostgreSQL `URL`; a password only in the variable or GRIDBATCH_DATABASE_URL_FILE")
	s.Duration(&c.DBConnectTimeout, "db-connect-timeout", "GRIDBATCH_DB_CONNECT_TIMEOUT", 5*time.Second, "bound on opening one PostgreSQL connection")
	s.Duration(&c.DBStatementTimeout, "db-statement-timeout", "GRIDBATCH_DB_STATEMENT_TIMEOUT", 60*time.Second, "server-side statement_timeout of every connection")
	s.Int(&c.DBMaxConns, "db-max-conns", "GRIDBATCH_DB_MAX_CONNS", 8, "maximum PostgreSQL connections of this process")
	s.String(&c.LogFormat, "log-format", "GRIDBATCH_LOG_FORMAT", "json", "log format: json or text")
	s.String(&c.LogLevel, "log-level", "GRIDBATCH_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	s.Bool(&c.PrintConfig, "print-config", "", false, "print the effective configuration (secrets masked) and exit")
	s.String(&c.ModelsFile, "models-file", "GRIDBATCH_MODELS_FILE", "", "models `file` (YAML) declaring your own models; empty: only the built-in ph and hazard")
	s.Int(&c.KeepBatches, "keep-batches", "GRIDBATCH_KEEP_BATCHES", 3, "ended batches per kind whose own rows are kept, besides the published ones")
}

// Batch binds the batch settings.
func (s *Set) Batch(b *Batch) {
	s.Int(&b.ChunkSize, "chunk-size", "GRIDBATCH_CHUNK_SIZE", 500, "cells per chunk task")
	s.Duration(&b.Deadline, "deadline", "GRIDBATCH_BATCH_DEADLINE", 2*time.Hour, "a batch still running after this ends timed_out")
	s.Duration(&b.LockTTL, "lock-ttl", "GRIDBATCH_LOCK_TTL", 0, "TTL of the per-kind batch lock (0 = deadline + 10m)")
	s.derived["lock-ttl"] = func() string {
		if b.LockTTL == 0 {
			return b.EffectiveLockTTL().String() + " (deadline + 10m)"
		}
		return b.LockTTL.String()
	}
	s.Float(&b.Step, "step", "GRIDBATCH_GRID_STEP", 0.05, "grid step in `degrees`; 360/step must be whole")
	s.String(&b.BBox, "bbox", "GRIDBATCH_GRID_BBOX", "124,33,132,39", "region as `LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`")
	s.Int(&b.MaxCells, "max-cells", "GRIDBATCH_MAX_CELLS", 10_000_000, "refuse grids with more cells than this")
}

// Parse applies the environment, then the command-line arguments. Errors name
// the variable or flag and the bad value, with passwords masked. It returns
// ErrHelp after printing usage for -h/--help.
func (s *Set) Parse(args []string) error {
	var errs []error
	s.fs.VisitAll(func(f *flag.Flag) {
		env, ok := s.env[f.Name]
		if !ok {
			return
		}
		v, ok := s.lookup(env)
		if s.secret[f.Name] || s.creds[f.Name] {
			fv, err := s.fromFile(env, ok)
			if err != nil {
				errs = append(errs, err)
				return
			}
			if fv != nil {
				v, ok = *fv, true
			}
		}
		if !ok {
			return
		}
		if err := f.Value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: %s", env, s.show(f.Name, v), expected(f)))
			return
		}
		f.DefValue = f.Value.String()
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.fs.SetOutput(io.Discard)
	err := s.parseInterspersed(args)
	s.fs.SetOutput(os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		s.Usage(os.Stdout)
		return ErrHelp
	}
	if err != nil {
		return MaskError(fmt.Errorf("%v (see --help)", err))
	}
	s.fs.Visit(func(f *flag.Flag) {
		env := s.env[f.Name]
		if s.secret[f.Name] || s.creds[f.Name] && hasPassword(f.Value.String()) {
			err = cmp.Or(err, fmt.Errorf("--%s would show its secret to every user of the machine (ps, /proc/PID/cmdline): set %s, or %s_FILE to a file that holds it", f.Name, env, env))
		}
	})
	return err
}

// fromFile reads the value of env from the file named by env_FILE, if that
// is set: nil when it is not. Both set is an error (set says env is).
func (s *Set) fromFile(env string, set bool) (*string, error) {
	path, ok := s.lookup(env + "_FILE")
	if !ok {
		return nil, nil
	}
	if set {
		return nil, fmt.Errorf("both %s and %s_FILE are set: set one", env, env)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s_FILE=%s: cannot read: %v", env, path, errors.Unwrap(err))
	}
	v := strings.TrimRight(string(b), "\r\n")
	return &v, nil
}

// hasPassword reports whether s, a URL or key=value DSN, holds a password.
func hasPassword(s string) bool { return Mask(s) != s }

// expected says what a flag's value should look like.
func expected(f *flag.Flag) string {
	switch f.Value.(flag.Getter).Get().(type) {
	case time.Duration:
		return "not a duration; use a number with a unit, e.g. 90s, 5m or 2h"
	case int:
		return "not a whole number"
	case float64:
		return "not a number"
	case bool:
		return "not a boolean; use true or false"
	}
	return "invalid value"
}

func (s *Set) show(name, v string) string {
	if s.secret[name] {
		if v == "" {
			return ""
		}
		return "xxxxx"
	}
	return Mask(v)
}

// parseInterspersed parses flags before, between and after positional
// arguments ("status ID --json"); "--" ends the flags.
func (s *Set) parseInterspersed(args []string) error {
	s.args = nil
	for {
		if err := s.fs.Parse(args); err != nil {
			return err
		}
		rest := s.fs.Args()
		if len(rest) == 0 {
			return nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			s.args = append(s.args, rest...)
			return nil
		}
		s.args = append(s.args, rest[0])
		args = rest[1:]
	}
}

// Args returns the positional arguments after Parse.
func (s *Set) Args() []string { return s.args }

// Usage writes the help text: what the command does, its flags with the
// variable behind each, and examples.
func (s *Set) Usage(w io.Writer) {
	fmt.Fprintf(w, "%s\n\nFlags (each may also be set by the environment variable shown):\n", strings.TrimSpace(s.about))
	s.fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		fmt.Fprintf(w, "      %s", usage)
		if env, ok := s.env[f.Name]; ok {
			fmt.Fprintf(w, " [$%s]", env)
		}
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			fmt.Fprintf(w, " (default %s)", s.show(f.Name, f.DefValue))
		}
		fmt.Fprintln(w)
	})
	if s.example != "" {
		fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(s.example, "\n"))
	}
}

// PrintConfig writes every setting as VARIABLE=value (or --flag=value for a
// flag-only setting), sorted, with secrets and URL passwords masked.
func (s *Set) PrintConfig(w io.Writer) {
	var lines []string
	s.fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "print-config" {
			return
		}
		key := "--" + f.Name
		if env, ok := s.env[f.Name]; ok {
			key = env
		}
		v := f.Value.String()
		if d, ok := s.derived[f.Name]; ok {
			v = d()
		}
		lines = append(lines, fmt.Sprintf("%s=%s", key, s.show(f.Name, v)))
	})
	sort.Strings(lines)
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}
