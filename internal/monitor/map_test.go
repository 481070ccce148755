package monitor_test

import (
	"context"
	"image"
	"image/color"
	"image/png"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/batch"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/gridmap"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/monitor"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

// mapBatch is a batch of insertBatch (ph over the 0.5° Korea grid, 16 x 12
// cells) with rows for ssp126, where values grow northwards, and ssp245,
// where they grow southwards. The cell at 36.25°N 128.25°E has no row and
// the one at 35.25°N 126.25°E has NaN throughout. It ended succeeded.
type mapBatch struct {
	store.Batch
	region               grid.Region
	layout               gridmap.Layout
	north, south         grid.Cell
	missing, nan, middle grid.Cell
}

func newMapBatch(t *testing.T, db *testutil.DB, id string) mapBatch {
	t.Helper()
	b := insertBatch(t, db, id)
	region, err := b.Region()
	require.NoError(t, err)
	m := mapBatch{Batch: b, region: region, layout: gridmap.NewLayout(region)}
	at := func(lat, lon float64) grid.Cell {
		c, err := region.Lattice.CellAt(lat, lon)
		require.NoError(t, err)
		return c
	}
	m.north, m.south = at(38.75, 124.25), at(33.25, 131.75)
	m.missing, m.nan, m.middle = at(36.25, 128.25), at(35.25, 126.25), at(36.25, 126.25)
	var series []grid.Series
	for k := range region.NumCells() {
		c := region.CellAt(k)
		if c.GridID == m.missing.GridID {
			continue
		}
		cs := mapSeries(c, 0)
		if c.GridID == m.nan.GridID {
			for _, s := range cs {
				for i := range s.Values {
					s.Values[i] = math.NaN()
				}
			}
		}
		series = append(series, cs...)
	}
	ids, cells, err := b.Layout.EncodeCells(series)
	require.NoError(t, err)
	ctx := context.Background()
	var table string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT results_table FROM batch_runs WHERE id = $1`, id).Scan(&table))
	_, err = db.Pool.CopyFrom(ctx, []string{table}, []string{"step", "grid_id", "series"},
		pgx.CopyFromSlice(len(ids), func(i int) ([]any, error) { return []any{b.Step, ids[i], cells[i]}, nil }))
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `UPDATE batch_runs SET status = 'succeeded', ended_at = now(), done_chunks = total_chunks,
		completed_chunks = total_chunks, completed_cells = total_cells WHERE id = $1`, id)
	require.NoError(t, err)
	m.Batch = testutil.Batches{Store: db.Store}.Get(t, id)
	return m
}

// mapSeries returns the series of cell c of a mapBatch, plus delta: its
// value grows northwards in ssp126, southwards in ssp245, and by 0.01 a
// year.
func mapSeries(c grid.Cell, delta float64) []grid.Series {
	var series []grid.Series
	for _, sc := range []struct {
		name string
		sign float64
	}{{"ssp126", 1}, {"ssp245", -1}, {"ssp585", 0}} {
		values := make([]float64, 80)
		for i := range values {
			values[i] = sc.sign*(c.Lat-36) + float64(i)*0.01 + delta
		}
		series = append(series, grid.Series{GridID: c.GridID, Scenario: sc.name, Values: values})
	}
	return series
}

// decodeMap checks a map response and decodes its image.
func decodeMap(t *testing.T, resp *http.Response, body string, l gridmap.Layout) image.Image {
	t.Helper()
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.Equal(t, "image/png", resp.Header.Get("Content-Type"))
	img, err := png.Decode(strings.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, l.Width, l.Height), img.Bounds())
	require.Equal(t, 800, img.Bounds().Dx(), "a map is 800 pixels wide, as the README says")
	return img
}

// pixel returns the colour of the middle of cell c on the map.
func pixel(t *testing.T, img image.Image, l gridmap.Layout, c grid.Cell) color.RGBA {
	t.Helper()
	p, ok := l.Pixel(c.Lat, c.Lon)
	require.True(t, ok)
	return color.RGBAModel.Convert(img.At(p.X, p.Y)).(color.RGBA)
}

func TestBatchMap(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	m := newMapBatch(t, e.db, "ph-20261122-000000-map001")
	base := e.url + "/batches/" + m.ID + "/map"

	t.Run("defaults: the first scenario and a middle year", func(t *testing.T) {
		resp, body := get(t, base, user, password)
		img := decodeMap(t, resp, body, m.layout)
		require.NotEmpty(t, resp.Header.Get("ETag"))
		require.Equal(t, gridmap.Viridis(1), pixel(t, img, m.layout, m.north), "ssp126 is hottest in the north")
		require.Equal(t, gridmap.Viridis(0), pixel(t, img, m.layout, m.south))
		require.True(t, gridmap.IsNoValue(pixel(t, img, m.layout, m.missing)), "a cell without a row")
		require.True(t, gridmap.IsNoValue(pixel(t, img, m.layout, m.nan)), "a cell whose value is NaN")
		require.False(t, gridmap.IsNoValue(pixel(t, img, m.layout, m.middle)))

		_, explicit := get(t, base+"?scenario=ssp126&year=2060", user, password)
		require.Equal(t, body, explicit, "the defaults are ssp126 and 2060")

		resp, _ = get(t, base, user, password, "If-None-Match", resp.Header.Get("ETag"))
		require.Equal(t, http.StatusNotModified, resp.StatusCode, "an unchanged map is revalidated, not sent again")
	})
	t.Run("another scenario and year", func(t *testing.T) {
		resp, body := get(t, base+"?scenario=ssp245&year=2100", user, password)
		img := decodeMap(t, resp, body, m.layout)
		require.Equal(t, gridmap.Viridis(0), pixel(t, img, m.layout, m.north), "ssp245 is coldest in the north")
		require.Equal(t, gridmap.Viridis(1), pixel(t, img, m.layout, m.south))
	})
	t.Run("bad requests", func(t *testing.T) {
		for query, want := range map[string]string{
			"?scenario=ssp999":           `scenario "ssp999": the series of ph are ssp126, ssp245, ssp585`,
			"?year=1999":                 "year 1999: the series of ph cover 2021 to 2100",
			"?year=2101&scenario=ssp126": "year 2101: the series of ph cover 2021 to 2100",
			"?year=soon":                 `year "soon": want a year from 2021 to 2100`,
		} {
			resp, body := get(t, base+query, user, password)
			require.Equal(t, http.StatusBadRequest, resp.StatusCode, query)
			require.Equal(t, "400 Bad Request: "+want+"\n", body, "one line")
		}
		resp, body := get(t, e.url+"/batches/no-such-batch/map", user, password)
		require.Equal(t, http.StatusNotFound, resp.StatusCode)
		require.Contains(t, body, `there is no batch "no-such-batch"`)
		resp, _ = get(t, base, "", "")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	})
	t.Run("the batch page shows it with its selectors", func(t *testing.T) {
		resp, page := get(t, e.url+"/batches/"+m.ID, user, password)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, page, `<img class="map" src="/batches/`+m.ID+`/map?scenario=ssp126&amp;year=2060"`)
		require.Contains(t, page, `<form method="get" action="/batches/`+m.ID+`#map" class="map-form">`)
		require.Contains(t, page, `<option value="ssp126" selected>ssp126</option><option value="ssp245">ssp245</option>`)
		require.Contains(t, page, `name="year" value="2060" min="2021" max="2100"`)
		require.NotContains(t, page, "<script")

		_, page = get(t, e.url+"/batches/"+m.ID+"?scenario=ssp585&year=2099", user, password)
		require.Contains(t, page, `src="/batches/`+m.ID+`/map?scenario=ssp585&amp;year=2099"`)
		require.Contains(t, page, `<option value="ssp585" selected>`)

		resp, page = get(t, e.url+"/batches/"+m.ID+"?year=3000", user, password)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, page, "Map: year 3000: the series of ph cover 2021 to 2100")
		require.NotContains(t, page, `<img class="map"`)
	})
}

func TestBatchMapIsDrawnAgainWhenChunksSucceed(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	m := newMapBatch(t, e.db, "ph-20261122-000000-map002")
	url := e.url + "/batches/" + m.ID + "/map"
	resp, body := get(t, url, user, password)
	require.True(t, gridmap.IsNoValue(pixel(t, decodeMap(t, resp, body, m.layout), m.layout, m.missing)))

	// A requeued chunk writes the missing cell and the batch's count of
	// succeeded cells moves.
	ctx := context.Background()
	var table string
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT results_table FROM batch_runs WHERE id = $1`, m.ID).Scan(&table))
	var series []grid.Series
	for _, name := range m.Layout.Names {
		series = append(series, grid.Series{GridID: m.missing.GridID, Scenario: name, Values: make([]float64, 80)})
	}
	_, cells, err := m.Layout.EncodeCells(series)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `INSERT INTO `+`"`+table+`"`+` (step, grid_id, series) VALUES ($1, $2, $3)`,
		m.Step, m.missing.GridID, cells[0])
	require.NoError(t, err)
	_, body2 := get(t, url, user, password)
	require.Equal(t, body, body2, "same chunks, same drawing")
	_, err = e.db.Pool.Exec(ctx, `UPDATE batch_runs SET completed_chunks = completed_chunks + 1, completed_cells = completed_cells + 1 WHERE id = $1`, m.ID)
	require.NoError(t, err)
	resp, body = get(t, url, user, password)
	require.False(t, gridmap.IsNoValue(pixel(t, decodeMap(t, resp, body, m.layout), m.layout, m.missing)))
}

func TestBatchPageWithoutMap(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	t.Run("no rows yet", func(t *testing.T) {
		b := insertBatch(t, e.db, "ph-20261122-000000-map003")
		_, page := get(t, e.url+"/batches/"+b.ID, user, password)
		require.Contains(t, page, "No rows yet: the map appears when the first chunk of this batch has succeeded.")
		require.NotContains(t, page, `<img class="map"`)
		require.Contains(t, page, `class="map-form"`, "the selectors are there")
		resp, body := get(t, e.url+"/batches/"+b.ID+"/map", user, password)
		l := gridmap.NewLayout(mustRegion(t, b))
		img := decodeMap(t, resp, body, l)
		require.True(t, gridmap.IsNoValue(img.At(l.Plot.Min.X+5, l.Plot.Min.Y+5)), "every cell without a value")
	})
	t.Run("rows dropped by retention", func(t *testing.T) {
		m := newMapBatch(t, e.db, "ph-20261122-000000-map004")
		_, err := e.db.Pool.Exec(context.Background(), `UPDATE batch_runs SET rows_dropped_at = now() WHERE id = $1`, m.ID)
		require.NoError(t, err)
		_, page := get(t, e.url+"/batches/"+m.ID, user, password)
		require.Contains(t, page, "No map: this batch&#39;s own rows were dropped by retention at")
		require.NotContains(t, page, `<img class="map"`)
		resp, body := get(t, e.url+"/batches/"+m.ID+"/map", user, password)
		require.Equal(t, http.StatusGone, resp.StatusCode)
		require.Contains(t, body, "own rows were dropped by retention")
		require.Regexp(t, `dropped by retention at `+shownTime, body)
		requireOneTimeFormat(t, page)
	})
}

func mustRegion(t *testing.T, b store.Batch) grid.Region {
	t.Helper()
	r, err := b.Region()
	require.NoError(t, err)
	return r
}

func TestKindMap(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	m := newMapBatch(t, e.db, "ph-20261122-000000-map005")

	resp, body := get(t, e.url+"/kinds/ph/map", user, password)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, "404 Not Found: nothing of kind ph is published, so the map has no default step and bbox; pass step= and bbox=: nothing published\n", body)

	_, err := batch.Publish(context.Background(), e.db.Store, testutil.NoChecks(), m.ID, batch.PublishRequest{})
	require.NoError(t, err)
	_, page := get(t, e.url+"/batches/"+m.ID, user, password)
	require.Contains(t, page, `href="/kinds/ph/map?bbox=124%2C33%2C132%2C39&amp;scenario=ssp126&amp;step=0.5&amp;year=2060"`)
	require.Regexp(t, `yes, at `+shownTime, page, "the publication time in the pages' one format")
	requireOneTimeFormat(t, page)

	t.Run("defaults: the grid of the latest publication", func(t *testing.T) {
		resp, body := get(t, e.url+"/kinds/ph/map", user, password)
		img := decodeMap(t, resp, body, m.layout)
		require.Equal(t, gridmap.Viridis(1), pixel(t, img, m.layout, m.north))
		require.Equal(t, gridmap.Viridis(0), pixel(t, img, m.layout, m.south))
		require.True(t, gridmap.IsNoValue(pixel(t, img, m.layout, m.missing)))
		_, same := get(t, e.url+"/kinds/ph/map?step=0.5&bbox=124,33,132,39&scenario=ssp126&year=2060", user, password)
		require.Equal(t, body, same)
	})
	t.Run("a bbox of its own", func(t *testing.T) {
		r, err := grid.ParseRegion(0.5, "126,35,130,38", 0)
		require.NoError(t, err)
		l := gridmap.NewLayout(r)
		resp, body := get(t, e.url+"/kinds/ph/map?step=0.5&bbox=126,35,130,38&scenario=ssp245&year=2030", user, password)
		img := decodeMap(t, resp, body, l)
		cold, _ := r.Lattice.CellAt(37.75, 126.25)
		hot, _ := r.Lattice.CellAt(35.25, 129.75)
		require.Equal(t, gridmap.Viridis(0), pixel(t, img, l, cold))
		require.Equal(t, gridmap.Viridis(1), pixel(t, img, l, hot))
	})
	t.Run("nothing published at a step with a bbox: an empty map", func(t *testing.T) {
		r, err := grid.ParseRegion(0.25, "0,0,10,10", 0)
		require.NoError(t, err)
		l := gridmap.NewLayout(r)
		resp, body := get(t, e.url+"/kinds/ph/map?step=0.25&bbox=0,0,10,10", user, password)
		img := decodeMap(t, resp, body, l)
		require.True(t, gridmap.IsNoValue(img.At(l.Plot.Min.X+3, l.Plot.Min.Y+3)))
	})
	t.Run("bad requests", func(t *testing.T) {
		for query, want := range map[string]struct {
			status int
			body   string
		}{
			"/kinds/nope/map":                              {http.StatusNotFound, `unknown model kind "nope" (known: hazard, ph)`},
			"/kinds/hazard/map":                            {http.StatusNotFound, "nothing of kind hazard is published"},
			"/kinds/ph/map?step=0.25":                      {http.StatusNotFound, "nothing of kind ph is published at step 0.25"},
			"/kinds/ph/map?step=0.07":                      {http.StatusBadRequest, "step 0.07: 360/step must be a whole number"},
			"/kinds/ph/map?bbox=1,2,3":                     {http.StatusBadRequest, `bbox "1,2,3": want 4 comma-separated numbers`},
			"/kinds/ph/map?year=2200":                      {http.StatusBadRequest, "year 2200: the series of ph cover 2021 to 2100"},
			"/kinds/ph/map?step=0.01&bbox=-180,-90,180,90": {http.StatusBadRequest, "more than the limit of 4,000,000"},
		} {
			resp, body := get(t, e.url+query, user, password)
			require.Equal(t, want.status, resp.StatusCode, query)
			require.Contains(t, body, want.body, query)
			require.Equal(t, 1, strings.Count(body, "\n"), "one line: %s", body)
		}
	})
}

// TestBatchMapUsesTheBatchSeries: a batch's map offers and draws the
// series the batch recorded when it was made, though the models file now
// declares others for its kind.
func TestBatchMapUsesTheBatchSeries(t *testing.T) {
	t.Parallel()
	spec := model.BuiltinSpec(grid.KindPH)
	spec.Command, spec.Series, spec.FirstYear, spec.Years = []string{"/bin/true"}, []string{"low", "high"}, 2031, 20
	models := model.New()
	require.NoError(t, models.Add(spec, nil))
	e := start(t, func(c *monitor.Config) { c.Models = models })
	m := newMapBatch(t, e.db, "ph-20261122-000000-map003")

	resp, body := get(t, e.url+"/batches/"+m.ID+"/map", user, password)
	img := decodeMap(t, resp, body, m.layout)
	require.Equal(t, gridmap.Viridis(1), pixel(t, img, m.layout, m.north), "ssp126 is hottest in the north")
	_, explicit := get(t, e.url+"/batches/"+m.ID+"/map?scenario=ssp126&year=2060", user, password)
	require.Equal(t, body, explicit, "the defaults are the batch's ssp126 and 2060")
	resp, body = get(t, e.url+"/batches/"+m.ID+"/map?scenario=low", user, password)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Equal(t, "400 Bad Request: scenario \"low\": the series of ph are ssp126, ssp245, ssp585\n", body)

	_, page := get(t, e.url+"/batches/"+m.ID, user, password)
	require.Contains(t, page, `<option value="ssp126" selected>ssp126</option><option value="ssp245">ssp245</option>`)
	require.Contains(t, page, `name="year" value="2060" min="2021" max="2100"`)
}

// TestBatchMapDifference: with diff=published the map draws a batch's
// values minus the published ones on the diverging scale centred on zero:
// cells that differ by known amounts get the colours of those amounts
// (+4, the largest, the red end; -1 a blue; equal ones the middle), and a
// cell without a published value, or without a row of the batch, none.
func TestBatchMapDifference(t *testing.T) {
	t.Parallel()
	e := start(t, nil)
	ctx := context.Background()
	published := newMapBatch(t, e.db, "ph-20261122-000000-map006")
	m := newMapBatch(t, e.db, "ph-20261122-000000-map007")
	base := e.url + "/batches/" + m.ID + "/map?scenario=ssp245&year=2060&diff=published"
	table := func(id string) string {
		var table string
		require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT results_table FROM batch_runs WHERE id = $1`, id).Scan(&table))
		return pgx.Identifier{table}.Sanitize()
	}

	resp, body := get(t, base, user, password)
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
	require.Equal(t, "404 Not Found: nothing of kind ph is published at step 0.5, so there is no difference to draw: nothing published\n", body)
	_, page := get(t, e.url+"/batches/"+m.ID+"?diff=published", user, password)
	require.Contains(t, page, "No difference: nothing of kind ph is published at step 0.5.")
	require.NotContains(t, page, `<img class="map"`)

	// The published batch has no row for one cell; the batch differs from
	// it by +4 at its north cell and -1 at its south cell.
	unpublished, err := m.region.Lattice.CellAt(37.25, 129.25)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `DELETE FROM `+table(published.ID)+` WHERE grid_id = $1`, unpublished.GridID)
	require.NoError(t, err)
	_, err = batch.Publish(ctx, e.db.Store, testutil.NoChecks(), published.ID, batch.PublishRequest{})
	require.NoError(t, err)
	for _, d := range []struct {
		c     grid.Cell
		delta float64
	}{{m.north, 4}, {m.south, -1}} {
		_, cells, err := m.Layout.EncodeCells(mapSeries(d.c, d.delta))
		require.NoError(t, err)
		_, err = e.db.Pool.Exec(ctx, `UPDATE `+table(m.ID)+` SET series = $1 WHERE grid_id = $2`, cells[0], d.c.GridID)
		require.NoError(t, err)
	}

	near := func(want, got color.RGBA, what string) {
		t.Helper()
		for _, c := range [][2]uint8{{want.R, got.R}, {want.G, got.G}, {want.B, got.B}} {
			require.InDelta(t, float64(c[0]), float64(c[1]), 1, "%s: want %v, got %v", what, want, got)
		}
	}
	resp, body = get(t, base, user, password)
	img := decodeMap(t, resp, body, m.layout)
	near(gridmap.Diverging(1), pixel(t, img, m.layout, m.north), "+4: the red end")
	near(gridmap.Diverging(0.5-1.0/8), pixel(t, img, m.layout, m.south), "-1 of ±4")
	near(gridmap.Diverging(0.5), pixel(t, img, m.layout, m.middle), "equal: the middle colour")
	require.True(t, gridmap.IsNoValue(pixel(t, img, m.layout, unpublished)), "a cell without a published value")
	require.True(t, gridmap.IsNoValue(pixel(t, img, m.layout, m.missing)), "a cell without a row on either side")
	require.True(t, gridmap.IsNoValue(pixel(t, img, m.layout, m.nan)), "a cell whose values are NaN")

	_, values := get(t, e.url+"/batches/"+m.ID+"/map?scenario=ssp245&year=2060", user, password)
	require.NotEqual(t, body, values, "the values and their difference are two maps")

	_, page = get(t, e.url+"/batches/"+m.ID+"?scenario=ssp245&year=2060&diff=published", user, password)
	require.Contains(t, page, `<img class="map" src="/batches/`+m.ID+`/map?diff=published&amp;scenario=ssp245&amp;year=2060"`)
	require.Contains(t, page, `<option value="published" selected>the difference against published</option>`)

	resp, body = get(t, e.url+"/batches/"+m.ID+"/map?diff=yesterday", user, password)
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.Contains(t, body, `diff "yesterday"`)
}
