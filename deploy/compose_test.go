package deploy_test

import (
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/model"
)

// loadCompose loads docker-compose.yml the way `docker compose config` does
// in a fresh clone: from a copy of the files a clone has, with every profile
// enabled and without the caller's process environment. withDotEnv first
// does what README.md says, `cp .env.example .env`.
func loadCompose(t *testing.T, withDotEnv bool) *types.Project {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"docker-compose.yml", "Dockerfile", ".env.example"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), readRepoFile(t, name), 0o600))
	}
	if withDotEnv {
		require.NoError(t, os.WriteFile(filepath.Join(dir, ".env"), readRepoFile(t, ".env.example"), 0o600))
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "docker-compose.yml")},
		cli.WithWorkingDirectory(dir),
		cli.WithEnvFiles(), // .env in the working directory, when there is one
		cli.WithDotEnv,
		cli.WithProfiles([]string{"*"}),
	)
	require.NoError(t, err)
	project, err := opts.LoadProject(t.Context())
	require.NoError(t, err, "docker compose config would fail")
	return project
}

// serviceEnv is a service's environment after env_file and interpolation.
func serviceEnv(t *testing.T, s types.ServiceConfig) map[string]string {
	t.Helper()
	env := map[string]string{}
	for k, v := range s.Environment {
		require.NotNil(t, v, "service %s: %s has no value", s.Name, k)
		env[k] = *v
	}
	return env
}

// composeBinary is the gridbatch binary a service runs.
func composeBinary(t *testing.T, binDir string, s types.ServiceConfig) string {
	t.Helper()
	if len(s.Entrypoint) > 0 {
		return binaryOf(t, binDir, s.Entrypoint)
	}
	return binaryOf(t, binDir, s.Command)
}

// imageVersion is the major and minor version of an image tag such as
// redis:7.2 or postgres:15-bookworm.
func imageVersion(t *testing.T, image string) (major, minor int) {
	t.Helper()
	_, tag, ok := strings.Cut(image, ":")
	require.True(t, ok, "image %q must be pinned to a version tag", image)
	tag, _, _ = strings.Cut(tag, "-")
	maj, min, _ := strings.Cut(tag, ".")
	major, err := strconv.Atoi(maj)
	require.NoError(t, err, "image %q: tag is not a version", image)
	if min != "" {
		min, _, _ = strings.Cut(min, ".")
		minor, err = strconv.Atoi(min)
		require.NoError(t, err, "image %q: tag is not a version", image)
	}
	return major, minor
}

// composeMountedFile is the repository file that the container path file of
// service s is: s must bind-mount a folder of the repository read-only over
// one of file's parent folders.
func composeMountedFile(t *testing.T, project *types.Project, s types.ServiceConfig, file string) string {
	t.Helper()
	for _, v := range s.Volumes {
		rel, err := filepath.Rel(v.Target, file)
		if err != nil || v.Target == "" || strings.HasPrefix(rel, "..") {
			continue
		}
		require.Equal(t, types.VolumeTypeBind, v.Type, "service %s: %s comes from a folder of the host", s.Name, v.Target)
		require.True(t, v.ReadOnly, "service %s: mount %s read-only: a model must not change its own code", s.Name, v.Target)
		src, err := filepath.Rel(project.WorkingDir, v.Source)
		require.NoError(t, err)
		require.False(t, src == ".." || strings.HasPrefix(src, ".."+string(filepath.Separator)), "service %s: %s is outside the checkout", s.Name, v.Source)
		local := filepath.Join(repoRoot(t), src, rel)
		require.FileExists(t, local, "service %s: %s", s.Name, file)
		return local
	}
	t.Fatalf("service %s: no volume holds GRIDBATCH_MODELS_FILE %s", s.Name, file)
	return ""
}

func requireArgPair(t *testing.T, command []string, flag, value string) {
	t.Helper()
	i := slices.Index(command, flag)
	require.True(t, i >= 0 && i+1 < len(command) && command[i+1] == value, "command %q must have %s %s", command, flag, value)
}

func TestComposeLoadsFromAFreshClone(t *testing.T) {
	t.Parallel()
	project := loadCompose(t, false)
	binDir := parseDockerfile(t).binDir(t)
	for _, name := range []string{"migrate", "worker", "scheduler", "monitor"} {
		s, err := project.GetService(name)
		require.NoError(t, err)
		_, err = settings(composeBinary(t, binDir, s), serviceEnv(t, s))
		require.NoError(t, err, "service %s without .env", name)
	}
}

func TestCompose(t *testing.T) {
	t.Parallel()
	project := loadCompose(t, true)
	df := parseDockerfile(t)
	binDir := df.binDir(t)
	service := func(t *testing.T, name string) types.ServiceConfig {
		t.Helper()
		s, err := project.GetService(name)
		require.NoError(t, err, "docker-compose.yml must have the service %s", name)
		return s
	}
	// The gridbatch services are those built from the Dockerfile.
	var gridbatch []types.ServiceConfig
	for _, name := range project.ServiceNames() {
		if s := service(t, name); s.Build != nil {
			gridbatch = append(gridbatch, s)
		}
	}
	names := func(ss []types.ServiceConfig) []string {
		var n []string
		for _, s := range ss {
			n = append(n, s.Name)
		}
		slices.Sort(n)
		return n
	}
	require.Equal(t, []string{"enqueuer", "migrate", "monitor", "scheduler", "worker"}, names(gridbatch))

	t.Run("redis keeps every task", func(t *testing.T) {
		t.Parallel()
		redis := service(t, "redis")
		major, minor := imageVersion(t, redis.Image)
		require.True(t, major > 6 || (major == 6 && minor >= 2), "asynq needs Redis >= 6.2, got %s", redis.Image)
		requireArgPair(t, redis.Command, "--appendonly", "yes")
		requireArgPair(t, redis.Command, "--appendfsync", "everysec")
		requireArgPair(t, redis.Command, "--maxmemory-policy", "noeviction")
		require.Empty(t, redis.Ports, "Redis must not be published on the host")
		require.True(t, slices.ContainsFunc(redis.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == "/data"
		}), "Redis's AOF must live in a named volume on /data")
		require.NotNil(t, redis.HealthCheck)
		require.Contains(t, strings.Join(redis.HealthCheck.Test, " "), "redis-cli ping")
	})

	t.Run("postgres keeps its data", func(t *testing.T) {
		t.Parallel()
		pg := service(t, "postgres")
		major, _ := imageVersion(t, pg.Image)
		require.Equal(t, 15, major, "PostgreSQL 15, as make demo and the tests use")
		require.Empty(t, pg.Ports, "PostgreSQL must not be published on the host")
		require.True(t, slices.ContainsFunc(pg.Volumes, func(v types.ServiceVolumeConfig) bool {
			return v.Type == types.VolumeTypeVolume && v.Target == "/var/lib/postgresql/data"
		}), "PostgreSQL's data must live in a named volume")
		require.NotNil(t, pg.HealthCheck)
		require.Contains(t, pg.HealthCheck.Test, "pg_isready")
	})

	t.Run("migrate runs once before the others start", func(t *testing.T) {
		t.Parallel()
		migrate := service(t, "migrate")
		require.Equal(t, []string{binDir + "enqueuer", "migrate"}, []string(migrate.Command))
		require.Equal(t, "no", migrate.Restart)
		require.Equal(t, types.ServiceConditionHealthy, migrate.DependsOn["postgres"].Condition)
		for _, s := range gridbatch {
			if s.Name == "migrate" {
				continue
			}
			require.Equal(t, types.ServiceConditionCompletedSuccessfully, s.DependsOn["migrate"].Condition, "service %s", s.Name)
			require.Equal(t, types.ServiceConditionHealthy, s.DependsOn["redis"].Condition, "service %s", s.Name)
			require.Equal(t, types.ServiceConditionHealthy, s.DependsOn["postgres"].Condition, "service %s", s.Name)
		}
	})

	t.Run("workers scale with --scale", func(t *testing.T) {
		t.Parallel()
		worker := service(t, "worker")
		require.NotNil(t, worker.Deploy)
		require.NotNil(t, worker.Deploy.Replicas)
		require.GreaterOrEqual(t, *worker.Deploy.Replicas, 2)
		require.Empty(t, worker.ContainerName, "a container_name allows one replica only")
		require.Empty(t, worker.Ports, "a host port allows one replica only")
		cfg, err := settings("worker", serviceEnv(t, worker))
		require.NoError(t, err)
		require.Contains(t, []string(worker.Expose), port(t, cfg.(*config.Worker).HTTPAddr), "expose the health and metrics port")
	})

	t.Run("worker requeues its tasks before it is killed", func(t *testing.T) {
		t.Parallel()
		worker := service(t, "worker")
		cfg, err := settings("worker", serviceEnv(t, worker))
		require.NoError(t, err)
		shutdown := cfg.(*config.Worker).ShutdownTimeout
		require.NotNil(t, worker.StopGracePeriod, "the default 10s is shorter than the worker's shutdown timeout")
		grace := time.Duration(*worker.StopGracePeriod)
		require.GreaterOrEqual(t, grace, shutdown+graceMargin,
			"stop_grace_period %s must exceed GRIDBATCH_SHUTDOWN_TIMEOUT %s by %s", grace, shutdown, graceMargin)
	})

	t.Run("two schedulers", func(t *testing.T) {
		t.Parallel()
		scheduler := service(t, "scheduler")
		require.NotNil(t, scheduler.Deploy)
		require.NotNil(t, scheduler.Deploy.Replicas)
		require.Equal(t, 2, *scheduler.Deploy.Replicas)
	})

	t.Run("monitor is published on its listen port", func(t *testing.T) {
		t.Parallel()
		monitor := service(t, "monitor")
		cfg, err := settings("monitor", serviceEnv(t, monitor))
		require.NoError(t, err)
		listen := port(t, cfg.(*config.Monitor).Addr)
		require.NotEmpty(t, monitor.Ports)
		for _, p := range monitor.Ports {
			require.NotEmpty(t, p.Published, "monitor port %d is not published on the host", p.Target)
			require.Equal(t, listen, strconv.Itoa(int(p.Target)), "the monitor listens on %s", cfg.(*config.Monitor).Addr)
		}
	})

	t.Run("gridbatch services run as non-root on a read-only root", func(t *testing.T) {
		t.Parallel()
		for _, s := range gridbatch {
			require.Equal(t, df.user(), s.User, "service %s runs as the image's user", s.Name)
			uid, _, _ := strings.Cut(s.User, ":")
			n, err := strconv.Atoi(uid)
			require.NoError(t, err, "service %s: user %q", s.Name, s.User)
			require.NotZero(t, n, "service %s runs as root", s.Name)
			require.True(t, s.ReadOnly, "service %s: read_only", s.Name)
			require.Contains(t, s.CapDrop, "ALL", "service %s: cap_drop", s.Name)
			require.Contains(t, s.SecurityOpt, "no-new-privileges:true", "service %s: security_opt", s.Name)
		}
	})

	t.Run("workers run the Python image, the others share the static one", func(t *testing.T) {
		t.Parallel()
		worker := service(t, "worker")
		require.NotNil(t, worker.Build)
		require.Equal(t, pythonTarget, worker.Build.Target, "the workers run model processes: python3 and numpy")
		require.NotNil(t, worker.Init, "worker: init")
		require.True(t, *worker.Init, "worker: an init as PID 1 reaps what killed model processes leave behind")
		var static string
		for _, s := range gridbatch {
			require.NotEmpty(t, s.Image, "service %s: name the image so it is built once and shared", s.Name)
			if s.Name == "worker" {
				continue
			}
			require.Empty(t, s.Build.Target, "service %s: the default (static) target", s.Name)
			if static == "" {
				static = s.Image
			}
			require.Equal(t, static, s.Image, "service %s", s.Name)
		}
		require.NotEqual(t, static, worker.Image, "two targets under one tag would overwrite each other")
	})

	t.Run("every gridbatch service reads the models file", func(t *testing.T) {
		t.Parallel()
		for _, s := range gridbatch {
			file := serviceEnv(t, s)["GRIDBATCH_MODELS_FILE"]
			require.True(t, path.IsAbs(file), "service %s: GRIDBATCH_MODELS_FILE %q: an absolute path in the container", s.Name, file)
			local := composeMountedFile(t, project, s, file)
			set, err := model.Load(local)
			require.NoError(t, err, "service %s: the models file %s", s.Name, local)
			if s.Name != "worker" {
				continue
			}
			for _, spec := range set.Specs() {
				if spec.Process() {
					requireModelCommandInImage(t, spec, "service worker, kind "+spec.Kind)
				}
			}
		}
	})

	t.Run("every binary accepts its settings", func(t *testing.T) {
		t.Parallel()
		for _, s := range gridbatch {
			env := serviceEnv(t, s)
			_, err := settings(composeBinary(t, binDir, s), env)
			require.NoError(t, err, "service %s", s.Name)
			requireKnownVariables(t, "service "+s.Name, slices.Sorted(maps.Keys(env)))
		}
	})
}

func TestComposeRedisAsksForAPassword(t *testing.T) {
	t.Parallel()
	for _, withDotEnv := range []bool{false, true} {
		project := loadCompose(t, withDotEnv)
		redis, err := project.GetService("redis")
		require.NoError(t, err)
		i := slices.Index(redis.Command, "--requirepass")
		require.GreaterOrEqual(t, i, 0, "redis-server --requirepass")
		password := redis.Command[i+1]
		require.NotEmpty(t, password)
		require.Equal(t, password, *redis.Environment["REDISCLI_AUTH"], "the healthcheck's redis-cli authenticates")
		for _, name := range []string{"migrate", "worker", "scheduler", "monitor", "enqueuer"} {
			s, err := project.GetService(name)
			require.NoError(t, err)
			opt, err := asynq.ParseRedisURI(serviceEnv(t, s)["GRIDBATCH_REDIS_URL"])
			require.NoError(t, err)
			require.Equal(t, password, opt.(asynq.RedisClientOpt).Password, "service %s (with .env: %v)", name, withDotEnv)
		}
	}
}

func TestComposeSetsTheHTTPAddressOfWorkersAndSchedulers(t *testing.T) {
	t.Parallel()
	project := loadCompose(t, true)
	for name, want := range map[string]string{"worker": ":8081", "scheduler": ":8082"} {
		s, err := project.GetService(name)
		require.NoError(t, err)
		require.Equal(t, want, serviceEnv(t, s)["GRIDBATCH_HTTP_ADDR"],
			"%s: outside a container the default is loopback, so compose sets it", name)
	}
}
