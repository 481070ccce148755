//go:build integration

package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// hostileText is what a model could raise: it clears the screen, turns the
// terminal red and reverses the rest of the line.
const hostileText = "boom \x1b[2J\x1b[31m\u202eevil\u202c\nsecond line\a"

func TestCLIShowsDatabaseTextWithItsControlsVisible(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	ctx := context.Background()
	r, err := grid.ParseRegion(0.05, "126,37,126.5,37.25", 0)
	require.NoError(t, err)
	b := testutil.StoreBatch(t, c.DB.Store, "terminal", grid.KindPH, grid.PH, r, 50, nil, store.StatusFailed)
	_, err = c.DB.Pool.Exec(ctx, `UPDATE batch_runs SET error = $2 WHERE id = $1`, b.ID, hostileText)
	require.NoError(t, err)
	chunk := 0
	ok, err := c.DB.Store.RecordDeadLetter(ctx, store.DeadLetter{TaskID: "t-\x1b[31m1", Type: "grid:chunk", Queue: "grid",
		BatchID: &b.ID, Chunk: &chunk, Payload: []byte(`{"x":"\u001b[2J"}`), LastError: hostileText, Retries: 5, FailedAt: time.Now()})
	require.NoError(t, err)
	require.True(t, ok)

	for _, args := range [][]string{{"dlq", "list"}, {"dlq", "show", "t-\x1b[31m1"}, {"status", b.ID}} {
		out, errOut, code := c.Enqueuer(args...)
		require.Contains(t, []int{0, 4}, code, errOut)
		require.Contains(t, out, `boom \x1b[2J\x1b[31m\u202eevil\u202c`, "%v: the text is shown, escaped", args)
		for _, raw := range []string{"\x1b", "\u202e", "\a"} {
			require.NotContains(t, out, raw, "%v", args)
		}
		if args[1] != "list" { // list shows the first line
			require.Contains(t, out, `\nsecond line\a`, "%v", args)
		}
	}
	// An error naming the text goes through the same escaping.
	_, errOut, code := c.Enqueuer("dlq", "show", "no-such-\x1b[2J-task")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, `no-such-\x1b[2J-task`)
	require.False(t, strings.Contains(errOut, "\x1b"))
}
