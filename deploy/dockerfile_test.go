package deploy_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/model"
)

// The Dockerfile's image for workers of Python models (docker build --target).
const (
	// pythonTarget is its stage.
	pythonTarget = "worker-python"
	// imagePython is Debian's python3, the interpreter the models files name.
	imagePython = "/usr/bin/python3"
	// imageSDK holds sdk/python/gridbatch_model.py and is on PYTHONPATH.
	imageSDK = "/opt/gridbatch/sdk/python"
	// imageExamples holds examples/ (the reference model and its models file).
	imageExamples = "/opt/gridbatch/examples/"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line    int    // where it starts, 1-based
	keyword string // upper case: FROM, RUN, COPY, …
	args    string
}

// stage is one FROM and the instructions under it.
type stage struct {
	image, name  string
	instructions []instruction
}

// dockerfile is the parsed Dockerfile.
type dockerfile struct {
	stages []stage
}

// parseDockerfile reads the Dockerfile at the module root. It understands
// what this repository's Dockerfile uses: comments, parser directives,
// backslash continuations and "FROM image AS name"; heredocs are refused.
func parseDockerfile(t *testing.T) dockerfile {
	t.Helper()
	var (
		df      dockerfile
		pending strings.Builder
		start   int
	)
	for i, raw := range strings.Split(string(readRepoFile(t, "Dockerfile")), "\n") {
		line := strings.TrimSpace(raw)
		if strings.HasPrefix(line, "#") || (line == "" && pending.Len() == 0) {
			continue
		}
		if pending.Len() == 0 {
			start = i + 1
		}
		if body, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(body + " ")
			continue
		}
		pending.WriteString(line)
		text := strings.TrimSpace(pending.String())
		pending.Reset()
		require.NotContains(t, text, "<<", "Dockerfile:%d: heredocs are not understood by this test", start)
		keyword, args, _ := strings.Cut(text, " ")
		ins := instruction{line: start, keyword: strings.ToUpper(keyword), args: strings.TrimSpace(args)}
		if ins.keyword == "FROM" {
			f := strings.Fields(ins.args)
			require.True(t, len(f) == 1 || (len(f) == 3 && strings.EqualFold(f[1], "AS")), "Dockerfile:%d: FROM %s", start, ins.args)
			st := stage{image: f[0]}
			if len(f) == 3 {
				st.name = f[2]
			}
			df.stages = append(df.stages, st)
			continue
		}
		require.NotEmpty(t, df.stages, "Dockerfile:%d: %s before the first FROM", start, ins.keyword)
		last := &df.stages[len(df.stages)-1]
		last.instructions = append(last.instructions, ins)
	}
	require.Zero(t, pending.Len(), "Dockerfile ends in a continuation line")
	require.GreaterOrEqual(t, len(df.stages), 2, "Dockerfile must build in one stage and run from another")
	return df
}

// buildStage is the stage that runs `go build`, and that instruction.
func (df dockerfile) buildStage(t *testing.T) (stage, instruction) {
	t.Helper()
	var (
		found []stage
		run   instruction
	)
	for _, st := range df.stages {
		for _, ins := range st.instructions {
			if ins.keyword == "RUN" && strings.Contains(ins.args, "go build") {
				found = append(found, st)
				run = ins
			}
		}
	}
	require.Len(t, found, 1, "the Dockerfile must have exactly one RUN with go build")
	return found[0], run
}

// final is the runtime stage that `docker build` without --target builds.
func (df dockerfile) final() stage { return df.stages[len(df.stages)-1] }

// stage returns the stage named name (a --target).
func (df dockerfile) stage(t *testing.T, name string) stage {
	t.Helper()
	for _, st := range df.stages {
		if st.name == name {
			return st
		}
	}
	t.Fatalf("the Dockerfile has no stage %q (FROM … AS %s)", name, name)
	return stage{}
}

// user is the final stage's USER, "" when it has none.
func (df dockerfile) user() string { return df.final().user() }

// user is the stage's USER, "" when it has none.
func (st stage) user() string {
	var user string
	for _, ins := range st.instructions {
		if ins.keyword == "USER" {
			user = ins.args
		}
	}
	return user
}

// env is the stage's ENV settings (the KEY=VALUE form, unquoted values).
func (st stage) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, ins := range st.instructions {
		if ins.keyword != "ENV" {
			continue
		}
		for _, kv := range strings.Fields(ins.args) {
			k, v, ok := strings.Cut(kv, "=")
			require.True(t, ok && assignment.MatchString(kv), "Dockerfile:%d: write ENV as KEY=VALUE", ins.line)
			require.NotContains(t, v, `"`, "Dockerfile:%d: ENV %s: this test reads unquoted values only", ins.line, k)
			env[k] = v
		}
	}
	return env
}

// copies are the stage's COPY instructions from the build context (not
// --from another stage), as [sources…, destination].
func (st stage) copies() [][]string {
	var out [][]string
	for _, ins := range st.instructions {
		f := strings.Fields(ins.args)
		if ins.keyword == "COPY" && len(f) >= 2 && !strings.HasPrefix(f[0], "--") {
			out = append(out, f)
		}
	}
	return out
}

// binDir is the directory the final stage copies the build output into,
// with a trailing slash.
func (df dockerfile) binDir(t *testing.T) string {
	t.Helper()
	return df.binDirOf(t, df.final())
}

// binDirOf is the directory the stage st copies the build output into, with
// a trailing slash.
func (df dockerfile) binDirOf(t *testing.T, st stage) string {
	t.Helper()
	build, run := df.buildStage(t)
	_, _, out := goBuildArgs(t, run)
	for _, ins := range st.instructions {
		f := strings.Fields(ins.args)
		if ins.keyword == "COPY" && len(f) == 3 && f[0] == "--from="+build.name && f[1] == out {
			require.True(t, strings.HasSuffix(f[2], "/"), "Dockerfile:%d: copy the binaries into a directory ending in /", ins.line)
			return f[2]
		}
	}
	t.Fatalf("the stage %q must COPY --from=%s %s into a directory", st.name, build.name, out)
	return ""
}

var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// goBuildArgs splits the build RUN into its environment assignments and the
// go command's arguments (without "go"), and returns the -o directory.
func goBuildArgs(t *testing.T, run instruction) (env, args []string, out string) {
	t.Helper()
	words := shellWords(t, run)
	for len(words) > 0 && strings.HasPrefix(words[0], "--") { // RUN flags: --mount=…, --network=…
		words = words[1:]
	}
	for len(words) > 0 && assignment.MatchString(words[0]) {
		env, words = append(env, words[0]), words[1:]
	}
	require.Contains(t, env, "CGO_ENABLED=0", "Dockerfile:%d: the build must be static", run.line)
	require.GreaterOrEqual(t, len(words), 2)
	require.Equal(t, []string{"go", "build"}, words[:2], "Dockerfile:%d: the RUN must be the go build alone", run.line)
	args = words[1:]
	for i, w := range args {
		if w == "-o" && i+1 < len(args) {
			out = args[i+1]
		}
	}
	require.True(t, strings.HasSuffix(out, "/"), "Dockerfile:%d: -o must name a directory (trailing /) so every binary lands in it", run.line)
	return env, args, out
}

// shellWords splits a RUN's shell command into words. Only plain words and
// single or double quotes are allowed: the test runs the command itself, so
// it must be one simple command without shell operators or expansions.
func shellWords(t *testing.T, run instruction) []string {
	t.Helper()
	require.NotRegexp(t, "[;&|`$()<>]", run.args, "Dockerfile:%d: the build RUN must be one simple command", run.line)
	var (
		words []string
		cur   strings.Builder
		quote rune
		inArg bool
	)
	for _, r := range run.args {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inArg = r, true
		case r == ' ' || r == '\t':
			if inArg {
				words = append(words, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	require.Zero(t, quote, "Dockerfile:%d: unbalanced quote", run.line)
	if inArg {
		words = append(words, cur.String())
	}
	return words
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	df := parseDockerfile(t)
	build, run := df.buildStage(t)

	t.Run("builder is the Go of go.mod", func(t *testing.T) {
		t.Parallel()
		m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(readRepoFile(t, "go.mod"))
		require.NotNil(t, m, "go.mod has no go directive")
		require.True(t, strings.HasPrefix(build.image, "golang:"+string(m[1])), "build stage %q must use Go %s like go.mod", build.image, m[1])
		require.NotEmpty(t, build.name, "the build stage needs a name for COPY --from")
		var copiesAll bool
		for _, ins := range build.instructions {
			if ins.line < run.line && ins.keyword == "COPY" && ins.args == ". ." {
				copiesAll = true
			}
		}
		require.True(t, copiesAll, "the build stage must COPY . . before the go build, which runs at the module root")
	})

	t.Run("runtime is static, distroless and non-root", func(t *testing.T) {
		t.Parallel()
		final := df.final()
		require.True(t, final.image == "scratch" || strings.HasPrefix(final.image, "gcr.io/distroless/static"),
			"the runtime image %q must be distroless/static or scratch", final.image)
		uid, _, _ := strings.Cut(df.user(), ":")
		n, err := strconv.Atoi(uid)
		require.NoError(t, err, "USER %q: use a numeric uid so Kubernetes can verify runAsNonRoot", df.user())
		require.NotZero(t, n, "USER must not be root")
		require.Equal(t, "/usr/local/bin/", df.binDir(t))
	})

	t.Run("build context leaves out secrets and history", func(t *testing.T) {
		t.Parallel()
		patterns := dockerignore(t)
		for _, p := range []string{".env", ".git"} {
			require.Contains(t, patterns, p, ".dockerignore")
		}
	})

	t.Run("worker-python runs Python models, non-root", func(t *testing.T) {
		t.Parallel()
		py := df.stage(t, pythonTarget)
		require.NotEqual(t, pythonTarget, df.final().name, "the default target (the last stage) stays the static image")
		require.True(t, strings.HasPrefix(py.image, "debian:bookworm"), "stage %s: FROM %s: Debian 12, whose python3-numpy is built for its /usr/bin/python3", py.name, py.image)

		var packages []string
		for _, ins := range py.instructions {
			if ins.keyword != "RUN" {
				continue
			}
			require.NotRegexp(t, `\bpip3? install\b`, ins.args, "Dockerfile:%d: numpy comes from Debian: there is no package index here", ins.line)
			for _, cmd := range strings.Split(ins.args, "&&") {
				_, rest, ok := strings.Cut(cmd, "apt-get install")
				if !ok {
					continue
				}
				require.Contains(t, strings.Fields(rest), "--no-install-recommends", "Dockerfile:%d", ins.line)
				require.Contains(t, ins.args, "rm -rf /var/lib/apt/lists", "Dockerfile:%d: drop apt's lists in the same layer", ins.line)
				for _, w := range strings.Fields(rest) {
					if !strings.HasPrefix(w, "-") {
						packages = append(packages, w)
					}
				}
			}
		}
		require.Subset(t, packages, []string{"python3", "python3-numpy"}, "stage %s: apt-get install", py.name)

		require.Equal(t, df.binDir(t), df.binDirOf(t, py), "the same commands run in both images")

		pythonPath := strings.Split(py.env(t)["PYTHONPATH"], ":")
		require.Contains(t, pythonPath, imageSDK, "stage %s: the SDK must be importable (ENV PYTHONPATH)", py.name)
		dests := map[string]string{}
		for _, f := range py.copies() {
			dest := f[len(f)-1]
			for _, src := range f[:len(f)-1] {
				_, err := os.Stat(filepath.Join(repoRoot(t), filepath.FromSlash(path.Clean(src))))
				require.NoError(t, err, "stage %s: COPY %s: not in the repository", py.name, src)
				for _, p := range dockerignore(t) {
					for prefix := path.Clean(src); prefix != "."; prefix = path.Dir(prefix) {
						m, err := path.Match(p, prefix)
						require.NoError(t, err)
						require.False(t, m, "stage %s: COPY %s, which .dockerignore leaves out (%s)", py.name, src, p)
					}
				}
				dests[path.Clean(src)] = dest
			}
		}
		require.Equal(t, imageSDK, path.Clean(dests["sdk/python/gridbatch_model.py"]), "stage %s: COPY the SDK onto PYTHONPATH", py.name)
		require.Equal(t, imageExamples, dests["examples"], "stage %s: COPY examples/", py.name)

		uid, _, _ := strings.Cut(py.user(), ":")
		n, err := strconv.Atoi(uid)
		require.NoError(t, err, "stage %s: USER %q: use a numeric uid so Kubernetes can verify runAsNonRoot", py.name, py.user())
		require.NotZero(t, n, "stage %s: USER must not be root", py.name)
		require.Equal(t, df.user(), py.user(), "both images run as one user")

		var cmd []string
		for _, ins := range py.instructions {
			if ins.keyword == "CMD" {
				require.NoError(t, json.Unmarshal([]byte(ins.args), &cmd), "Dockerfile:%d: CMD in the JSON form", ins.line)
			}
		}
		require.Equal(t, []string{df.binDir(t) + "worker"}, cmd, "stage %s runs the worker by default", py.name)
	})

	t.Run("go build of the build stage succeeds", func(t *testing.T) {
		t.Parallel()
		env, args, out := goBuildArgs(t, run)
		dir := t.TempDir()
		for i, a := range args {
			if a == out {
				args[i] = dir + string(filepath.Separator)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), env...)
		output, err := cmd.CombinedOutput()
		require.NoError(t, err, "Dockerfile:%d: %s %s\n%s", run.line, strings.Join(env, " "), strings.Join(cmd.Args, " "), output)
		for _, name := range commands(t) {
			require.FileExists(t, filepath.Join(dir, name), "the image would lack the binary %s", name)
		}
	})
}

// dockerignore is the patterns of .dockerignore.
func dockerignore(t *testing.T) []string {
	t.Helper()
	var patterns []string
	for line := range strings.Lines(string(readRepoFile(t, ".dockerignore"))) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	return patterns
}

// requireModelCommandInImage fails unless the worker-python image can run
// spec's command: Debian's python3, and each script (*.py) present, either in
// the image's examples or relative to the workdir (a folder of the checkout
// that is mounted into the container).
func requireModelCommandInImage(t *testing.T, spec model.Spec, where string) {
	t.Helper()
	require.Equal(t, imagePython, spec.Command[0], "%s: the image has Debian's python3 (with numpy) at %s", where, imagePython)
	for _, arg := range spec.Command[1:] {
		if !strings.HasSuffix(arg, ".py") {
			continue
		}
		var local string
		switch {
		case strings.HasPrefix(arg, imageExamples):
			local = filepath.Join(repoRoot(t), "examples", filepath.FromSlash(strings.TrimPrefix(arg, imageExamples)))
		case path.IsAbs(arg):
			t.Fatalf("%s: %s is neither in the image's %s nor relative to the workdir", where, arg, imageExamples)
		default:
			local = filepath.Join(spec.Workdir, filepath.FromSlash(arg))
		}
		require.FileExists(t, local, "%s: the model's script %s", where, arg)
	}
}
