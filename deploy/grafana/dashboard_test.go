// Package grafana_test checks deploy/grafana/gridbatch.json, the Grafana
// dashboard of gridbatch's metrics: it must be valid JSON and every metric
// its queries use must exist in the worker's or the monitor's registry.
package grafana_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/metrics"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/monitor"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
	"github.com/gridbatch/gridbatch/tasks"
)

type dashboard struct {
	Title      string  `json:"title"`
	UID        string  `json:"uid"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
}

func load(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("gridbatch.json")
	require.NoError(t, err)
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	require.NoError(t, dec.Decode(&d), "gridbatch.json must be valid JSON")
	require.False(t, dec.More(), "one JSON document")
	return d
}

var (
	quoted    = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	matchers  = regexp.MustCompile(`\{[^}]*\}`)
	ranges    = regexp.MustCompile(`\[[^\]]*\]`)
	grouping  = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	ident     = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	operators = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "e"}
)

// metricNames returns the metric names a PromQL expression selects.
func metricNames(expr string) []string {
	s := quoted.ReplaceAllString(expr, " ")
	s = matchers.ReplaceAllString(s, " ")
	s = ranges.ReplaceAllString(s, " ")
	s = grouping.ReplaceAllString(s, " ")
	var out []string
	for _, m := range ident.FindAllStringSubmatch(s, -1) {
		if m[1] != "" || slices.Contains(operators, m[0]) { // a function call or a keyword
			continue
		}
		out = append(out, m[0])
	}
	return out
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"gridbatch_task_duration_seconds_bucket"},
		metricNames(`histogram_quantile(0.95, sum by (le) (rate(gridbatch_task_duration_seconds_bucket{type="grid:chunk"}[$__rate_interval])))`))
	require.Equal(t, []string{"gridbatch_batch_cells_total", "gridbatch_batch_cells_done", "gridbatch_batch_cells_done", "gridbatch_batch_running"},
		metricNames(`(gridbatch_batch_cells_total - gridbatch_batch_cells_done) / (deriv(gridbatch_batch_cells_done[5m]) > 0) and on (kind) gridbatch_batch_running == 1`))
	require.Empty(t, metricNames(`time()`))
}

// registered gathers every family name the worker and the monitor export.
// The monitor's collectors only report what exists, so the test gives
// them queues and an ended batch first.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	w := metrics.NewWorker(tasks.TypeChunk, tasks.TypePlan, tasks.TypeLock)
	fams, err := w.Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		names[f.GetName()] = true
	}

	r := testutil.NewRedis(t)
	db := testutil.NewDB(t)
	client := asynq.NewClientFromRedisClient(r.Client)
	for _, q := range tasks.QueueNames() {
		_, err := client.Enqueue(asynq.NewTask("test:noop", nil), asynq.Queue(q))
		require.NoError(t, err)
	}
	ctx := context.Background()
	lat, err := grid.NewLattice(0.5)
	require.NoError(t, err)
	region, err := grid.NewRegion(lat, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}, 0)
	require.NoError(t, err)
	now := time.Now()
	_, err = db.Store.InsertBatch(ctx, store.NewBatch{ID: "ph-test", Kind: "ph", Region: region, ChunkSize: 20, StartedAt: now,
		DeadlineAt: now.Add(time.Hour), LockExpiresAt: now.Add(2 * time.Hour), Trigger: "test", Layout: store.LayoutOf(model.BuiltinSpec(grid.KindPH))})
	require.NoError(t, err)
	_, _, _, err = db.Store.FinishBatch(ctx, "ph-test", store.Final{Status: store.StatusCancelled, PendingChunkStatus: store.ChunkCancelled}, batch.Gate{}.Decide(batch.AtEnd))
	require.NoError(t, err)
	m, err := monitor.New(monitor.Config{Store: db.Store, Redis: r.Client, RedisConnOpt: r.ClientOpt(), InsecureNoAuth: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = m.Close() })
	fams, err = m.Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		names[f.GetName()] = true
	}
	return names
}

func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	t.Parallel()
	d := load(t)
	require.Equal(t, "gridbatch", d.UID)
	names := registered(t)
	for _, want := range []string{metrics.NameTasks, metrics.NameBreakerState, monitor.NameBatchRunning, "asynq_queue_size"} {
		require.True(t, names[want], "the registries export %s", want)
	}

	ids := map[int]bool{}
	used := map[string]bool{}
	queries := 0
	for _, p := range d.Panels {
		require.False(t, ids[p.ID], "panel id %d is unique", p.ID)
		ids[p.ID] = true
		require.NotEmpty(t, p.Title)
		require.LessOrEqual(t, p.GridPos.X+p.GridPos.W, 24, "panel %q fits the 24-column grid", p.Title)
		if p.Type == "row" {
			continue
		}
		require.NotNil(t, p.Datasource, "panel %q has a datasource", p.Title)
		require.Equal(t, "${datasource}", p.Datasource.UID, "panel %q uses the datasource variable", p.Title)
		require.NotEmpty(t, p.Targets, "panel %q has queries", p.Title)
		for _, tg := range p.Targets {
			queries++
			ms := metricNames(tg.Expr)
			require.NotEmpty(t, ms, "panel %q: %s selects no metric", p.Title, tg.Expr)
			for _, m := range ms {
				used[m] = true
			}
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			if s, ok := q["query"].(string); ok {
				inner := strings.TrimSuffix(strings.TrimPrefix(s, "label_values("), ")")
				used[strings.TrimSpace(strings.SplitN(inner, ",", 2)[0])] = true
			}
		}
	}
	var missing []string
	for m := range used {
		base := m
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if !names[base] && strings.HasSuffix(m, suffix) {
				base = strings.TrimSuffix(m, suffix)
			}
		}
		if !names[base] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	require.Empty(t, missing, "metrics the dashboard uses that neither the worker nor the monitor exports")
	t.Logf("%d panels, %d queries, %d metrics, all exported", len(d.Panels), queries, len(used))
}
