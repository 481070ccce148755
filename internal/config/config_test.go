package config

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func lookup(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestWorkerDefaultsEnvAndFlags(t *testing.T) {
	t.Parallel()
	var c Worker
	s := NewSet("worker", "about", "").WithLookup(lookup(map[string]string{
		"GRIDBATCH_TASK_TIMEOUT": "90s",
		"GRIDBATCH_MAX_RETRY":    "3",
	}))
	c.Bind(s)
	require.NoError(t, s.Parse([]string{"--max-retry", "7"}))
	require.NoError(t, c.Validate())
	require.Equal(t, 90*time.Second, c.TaskTimeout, "environment sets the value")
	require.Equal(t, 7, c.MaxRetry, "a flag overrides the environment")
	require.Equal(t, 10*time.Second, c.RetryBase, "default")
	require.Equal(t, 4*runtime.GOMAXPROCS(0), c.Concurrency, "default: four chunks per CPU")
	require.Equal(t, 2*runtime.GOMAXPROCS(0), c.ModelProcessesPerKind(), "default: two model processes per kind and CPU")
	c.Concurrency = 1
	require.Equal(t, 1, c.ModelProcessesPerKind(), "no more model processes than chunks at once")
	require.Equal(t, DefaultRedisURL, c.RedisURL)
	require.Equal(t, DefaultDatabaseURL, c.DatabaseURL)
	if os.Geteuid() == 0 {
		require.Equal(t, "nobody", c.ModelUser, "a root worker runs models as nobody")
	} else {
		require.Empty(t, c.ModelUser, "as the worker itself")
	}
}

func TestBadValuesNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, env, value, want string
	}{
		{"duration", "GRIDBATCH_TASK_TIMEOUT", "5x", `GRIDBATCH_TASK_TIMEOUT="5x": not a duration`},
		{"int", "GRIDBATCH_CONCURRENCY", "many", `GRIDBATCH_CONCURRENCY="many": not a whole number`},
		{"range", "GRIDBATCH_CONCURRENCY", "0", "GRIDBATCH_CONCURRENCY=0 must be between 1 and 1000"},
		{"policy", "GRIDBATCH_RETRY_POLICY", "random", "GRIDBATCH_RETRY_POLICY=random must be linear or exponential"},
		{"redis scheme", "GRIDBATCH_REDIS_URL", "http://x", `GRIDBATCH_REDIS_URL="http://x": scheme must be`},
		{"db scheme masks password", "GRIDBATCH_DATABASE_URL", "mysql://u:hunter2@h/d", `GRIDBATCH_DATABASE_URL="mysql://u:xxxxx@h/d": scheme must be postgres`},
		{"log format", "GRIDBATCH_LOG_FORMAT", "xml", "GRIDBATCH_LOG_FORMAT=xml must be json or text"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var c Worker
			s := NewSet("worker", "about", "").WithLookup(lookup(map[string]string{tc.env: tc.value}))
			c.Bind(s)
			err := s.Parse(nil)
			if err == nil {
				err = c.Validate()
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "\n")
			require.NotContains(t, err.Error(), "hunter2")
		})
	}
}

func TestBatchValidate(t *testing.T) {
	t.Parallel()
	ok := Batch{ChunkSize: 500, Deadline: 2 * time.Hour, MaxCells: 10}
	require.NoError(t, ok.Validate())
	require.Equal(t, 2*time.Hour+10*time.Minute, ok.EffectiveLockTTL())
	short := ok
	short.LockTTL = time.Hour
	require.ErrorContains(t, short.Validate(), "GRIDBATCH_LOCK_TTL=1h0m0s must be longer than the batch deadline")
	zero := ok
	zero.ChunkSize = 0
	require.ErrorContains(t, zero.Validate(), "GRIDBATCH_CHUNK_SIZE=0")
}

func TestMask(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://gridbatch:s3cret@db:5432/gridbatch":    "postgres://gridbatch:xxxxx@db:5432/gridbatch",
		"redis://:p%40ss@redis:6379/0":                     "redis://:xxxxx@redis:6379/0",
		"redis-sentinel://:pw@h1:26379,h2:26379?master=mm": "redis-sentinel://:xxxxx@h1:26379,h2:26379?master=mm",
		"host=db user=u password=s3cret dbname=x":          "host=db user=u password=xxxxx dbname=x",
		"postgres://gridbatch@db/gridbatch":                "postgres://gridbatch@db/gridbatch",
	} {
		require.Equal(t, want, Mask(in))
	}
}

func TestPrintConfigMasksSecrets(t *testing.T) {
	t.Parallel()
	var c Monitor
	s := NewSet("monitor", "about", "").WithLookup(lookup(map[string]string{
		"GRIDBATCH_DATABASE_URL":     "postgres://u:topsecret@db/x",
		"GRIDBATCH_MONITOR_PASSWORD": "alsosecret",
	}))
	c.Bind(s)
	require.NoError(t, s.Parse(nil))
	var out bytes.Buffer
	s.PrintConfig(&out)
	require.NotContains(t, out.String(), "topsecret")
	require.NotContains(t, out.String(), "alsosecret")
	require.Contains(t, out.String(), "GRIDBATCH_DATABASE_URL=postgres://u:xxxxx@db/x")
	require.Contains(t, out.String(), "GRIDBATCH_MONITOR_PASSWORD=xxxxx")
	var help bytes.Buffer
	s.Usage(&help)
	require.True(t, strings.Contains(help.String(), "[$GRIDBATCH_MONITOR_USER]"), help.String())
	require.NotContains(t, help.String(), "alsosecret")
}

// TestPrintConfigShowsTheEffectiveLockTTL: a lock TTL left at 0 prints
// what it means, deadline + 10m, not 0s.
func TestPrintConfigShowsTheEffectiveLockTTL(t *testing.T) {
	t.Parallel()
	for env, want := range map[string]string{
		"":   "GRIDBATCH_LOCK_TTL=3h10m0s (deadline + 10m)\n",
		"5h": "GRIDBATCH_LOCK_TTL=5h0m0s\n",
	} {
		vars := map[string]string{"GRIDBATCH_BATCH_DEADLINE": "3h"}
		if env != "" {
			vars["GRIDBATCH_LOCK_TTL"] = env
		}
		var b Batch
		s := NewSet("scheduler", "about", "").WithLookup(lookup(vars))
		s.Batch(&b)
		require.NoError(t, s.Parse(nil))
		var out bytes.Buffer
		s.PrintConfig(&out)
		require.Contains(t, out.String(), want)
	}
}

func TestFlagsAfterPositionalArguments(t *testing.T) {
	t.Parallel()
	var asJSON bool
	var limit int
	s := NewSet("status", "about", "").WithLookup(lookup(nil))
	s.Bool(&asJSON, "json", "", false, "json")
	s.Int(&limit, "limit", "", 1, "limit")
	require.NoError(t, s.Parse([]string{"ID1", "--json", "ID2", "--limit", "3", "--", "--not-a-flag"}))
	require.True(t, asJSON)
	require.Equal(t, 3, limit)
	require.Equal(t, []string{"ID1", "ID2", "--not-a-flag"}, s.Args())
}

func TestMaskParsesURLs(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		// The password holds @: all of it is hidden, up to the authority's last @.
		"redis://:p@sPw@redis:6379/0":                            "redis://:xxxxx@redis:6379/0",
		"postgres://u:a@b:c@db:5432/x?sslmode=verify-full":       "postgres://u:xxxxx@db:5432/x?sslmode=verify-full",
		`GRIDBATCH_REDIS_URL="redis://:p@sPw@h/0": bad`:          `GRIDBATCH_REDIS_URL="redis://:xxxxx@h/0": bad`,
		"dial redis://u:p@ss@h1/0 and postgres://v:q@h2/db then": "dial redis://u:xxxxx@h1/0 and postgres://v:xxxxx@h2/db then",
		"redis-sentinel://:p@w@h1:26379,h2:26379?master=mm":      "redis-sentinel://:xxxxx@h1:26379,h2:26379?master=mm",
		"host=db password='a b\\' c' user=u":                     "host=db password=xxxxx user=u",
		"host=db PASSWORD = s3cret":                              "host=db PASSWORD = xxxxx",
		"no secret here: redis://h:6379/0":                       "no secret here: redis://h:6379/0",
	} {
		require.Equal(t, want, Mask(in), in)
	}
}

func TestSecretsComeOnlyFromTheEnvironmentOrAFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "db-url")
	require.NoError(t, os.WriteFile(file, []byte("postgres://u:from@file@db/x\n"), 0o600))
	pw := filepath.Join(t.TempDir(), "pw")
	require.NoError(t, os.WriteFile(pw, []byte("a long password\n"), 0o600))
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		err  string // "" for none
	}{
		{"a password in --database-url", nil, []string{"--database-url", "postgres://u:hunter2@db/x"},
			"--database-url would show its secret to every user of the machine (ps, /proc/PID/cmdline): set GRIDBATCH_DATABASE_URL, or GRIDBATCH_DATABASE_URL_FILE to a file that holds it"},
		{"a password in --redis-url", nil, []string{"--redis-url", "redis://:p@ss@h:6379/0"}, "--redis-url would show its secret"},
		{"--password at all", nil, []string{"--password", "hunter2hunter2"}, "--password would show its secret"},
		{"URLs without a password in flags", nil, []string{"--redis-url", "redis://h:6379/1", "--database-url", "postgres://u@db/x"}, ""},
		{"both a variable and its file", map[string]string{"GRIDBATCH_DATABASE_URL": "postgres://u@db/x", "GRIDBATCH_DATABASE_URL_FILE": file}, nil,
			"both GRIDBATCH_DATABASE_URL and GRIDBATCH_DATABASE_URL_FILE are set: set one"},
		{"a file that is not there", map[string]string{"GRIDBATCH_MONITOR_PASSWORD_FILE": "/nonexistent/pw"}, nil,
			"GRIDBATCH_MONITOR_PASSWORD_FILE=/nonexistent/pw: cannot read: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Monitor
			s := NewSet("monitor", "about", "").WithLookup(lookup(tc.env))
			c.Bind(s)
			err := s.Parse(tc.args)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
			require.NotContains(t, err.Error(), "hunter2")
			require.NotContains(t, err.Error(), "p@ss")
		})
	}

	var c Monitor
	s := NewSet("monitor", "about", "").WithLookup(lookup(map[string]string{"GRIDBATCH_DATABASE_URL_FILE": file, "GRIDBATCH_MONITOR_PASSWORD_FILE": pw}))
	c.Bind(s)
	require.NoError(t, s.Parse(nil))
	require.Equal(t, "postgres://u:from@file@db/x", c.DatabaseURL, "read from the file, without its newline")
	require.Equal(t, "a long password", c.Password)
	var out bytes.Buffer
	s.PrintConfig(&out)
	require.Contains(t, out.String(), "GRIDBATCH_DATABASE_URL=postgres://u:xxxxx@db/x\n", "masked whole")
	require.NotContains(t, out.String(), "file@")
}
