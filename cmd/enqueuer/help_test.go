package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/config"
)

// TestHelpGroupsEveryCommandByTask: enqueuer --help lists each registered
// command exactly once, under its task, the groups in their order; each
// command still answers its own --help. Not parallel: a command's help goes
// to os.Stdout, which it captures.
func TestHelpGroupsEveryCommandByTask(t *testing.T) {
	var out bytes.Buffer
	require.NoError(t, run(context.Background(), []string{"--help"}, &out, &out))
	text := out.String()
	require.NotContains(t, text, "  Other\n", "a command in no group of helpGroups")

	section := text[strings.Index(text, "Commands, by task:\n"):strings.Index(text, "\nExit codes:")]
	var titles, names []string
	for _, line := range strings.Split(strings.TrimSpace(section), "\n")[1:] {
		if m := regexp.MustCompile(`^    (\S+) +\S`).FindStringSubmatch(line); m != nil {
			names = append(names, m[1])
		} else {
			titles = append(titles, strings.TrimSpace(line))
		}
	}
	require.Equal(t, []string{"Set-up", "Batches", "Results", "Dead letters"}, titles)
	var registered []string
	for _, c := range commands {
		registered = append(registered, c.name)
	}
	require.ElementsMatch(t, registered, names, "each command once, and only registered ones")
	require.Equal(t, []string{"migrate", "models", "seed", "import", "run", "status", "list", "cancel", "publish",
		"prune", "results", "export", "diff", "verify", "dlq"}, names)

	for _, name := range names {
		own := ownHelp(t, name)
		require.True(t, strings.HasPrefix(own, "Usage: enqueuer "+name), "%s --help: %.200s", name, own)
	}
}

// ownHelp returns what enqueuer NAME --help prints (to os.Stdout, or
// standard output as run is given it).
func ownHelp(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "help"))
	require.NoError(t, err)
	defer f.Close()
	stdout := os.Stdout
	os.Stdout = f
	err = run(context.Background(), []string{name, "--help"}, f, f)
	os.Stdout = stdout
	if err != nil { // dlq prints its own help and returns nil
		require.ErrorIs(t, err, config.ErrHelp, name)
	}
	b, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	return string(b)
}
