package config

import (
	"bytes"
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
	require.Equal(t, DefaultRedisURL, c.RedisURL)
	require.Equal(t, DefaultDatabaseURL, c.DatabaseURL)
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
