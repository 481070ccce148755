//go:build integration

package integration

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/gridmap"
	"github.com/gridbatch/gridbatch/internal/store"
)

// mapPixels loads the batch page's map in the browser, waits until the
// image has loaded, and reads the colours of the given image pixels by
// drawing the image onto a canvas.
func mapPixels(t *testing.T, ctx context.Context, pts ...image.Point) (naturalW, naturalH int, px []color.RGBA) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`#map img.map`))))
	waitFor(t, 30*time.Second, "the map image to load", func() bool {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(i => i.complete && i.naturalWidth > 0)(document.querySelector('#map img.map'))`))
		return err == nil && ok
	})
	var coords []string
	for _, p := range pts {
		coords = append(coords, fmt.Sprintf("[%d,%d]", p.X, p.Y))
	}
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`(() => {
		const img = document.querySelector('#map img.map');
		const c = document.createElement('canvas');
		c.width = img.naturalWidth; c.height = img.naturalHeight;
		const g = c.getContext('2d');
		g.drawImage(img, 0, 0);
		const out = [img.naturalWidth, img.naturalHeight];
		for (const [x, y] of [`+strings.Join(coords, ",")+`]) out.push(...g.getImageData(x, y, 1, 1).data);
		return out;
	})()`))
	require.NoError(t, err)
	require.Len(t, got, 2+4*len(pts))
	for i := range pts {
		v := got[2+4*i:]
		px = append(px, color.RGBA{uint8(v[0]), uint8(v[1]), uint8(v[2]), uint8(v[3])})
	}
	return got[0], got[1], px
}

// near reports whether two colours differ by at most 2 in every channel
// (the browser may colour-manage an untagged PNG by a unit).
func near(a, b color.RGBA) bool {
	d := func(x, y uint8) bool { return x-y <= 2 || y-x <= 2 }
	return d(a.R, b.R) && d(a.G, b.G) && d(a.B, b.B) && a.A == b.A
}

// TestMonitorMapInBrowser drives headless Chromium to the batch page of a
// hazard batch over the 0.05° Korea grid whose chunk 10 lost an input (it is
// dead-lettered, so its 500 cells have no value): the map image loads, the
// hottest cell (south-west; the 100-year return level falls northwards) is
// drawn in the scale's top colour and differs from the coldest (north-east),
// the dead-lettered chunk's cells are hatched, and the plain-HTML selectors
// show another scenario and year.
func TestMonitorMapInBrowser(t *testing.T) {
	t.Parallel()
	const user, password = "ops", "monitor-map-password"
	shots := artifacts(t)
	c := newCluster(t)
	c.Seed()
	ctx := browser(t, user, password)

	const chunkSize, failing = 500, 10
	lat, err := grid.NewLattice(0.05)
	require.NoError(t, err)
	region, err := grid.NewRegion(lat, grid.BBox{LonMin: 124, LatMin: 33, LonMax: 132, LatMax: 39}, 0)
	require.NoError(t, err)
	lost := region.ChunkIDs(failing, chunkSize)
	_, err = c.DB.Pool.Exec(context.Background(), `DELETE FROM cell_params WHERE step = 0.05 AND grid_id = $1`, lost[0])
	require.NoError(t, err)

	mon := c.Start("monitor", []string{"GRIDBATCH_MONITOR_USER=" + user, "GRIDBATCH_MONITOR_PASSWORD=" + password,
		"GRIDBATCH_MONITOR_ADDR=127.0.0.1:0"})
	base := "http://" + logValue(t, mon, regexp.MustCompile(`msg="monitor started" addr=(\S+)`), 30*time.Second)
	id := c.RunBatch("--kind", "hazard", "--chunk-size", strconv.Itoa(chunkSize))
	c.Worker("GRIDBATCH_CONCURRENCY=2", "GRIDBATCH_MAX_RETRY=0")
	b := c.WaitEnded(id, 3*time.Minute)
	require.Equal(t, store.StatusPartial, b.Status, "error: %v", b.Error)
	require.Equal(t, 1, b.FailedChunks)

	layout := gridmap.NewLayout(region)
	at := func(lat, lon float64) image.Point {
		p, ok := layout.Pixel(lat, lon)
		require.True(t, ok, "%g,%g", lat, lon)
		return p
	}
	failed, err := lat.CellByID(lost[0])
	require.NoError(t, err)
	computed, err := lat.CellByID(lost[len(lost)/2])
	require.NoError(t, err)
	hot, cold, gap, beside := at(33.025, 124.025), at(38.975, 131.975), at(failed.Lat, failed.Lon), at(computed.Lat, computed.Lon)

	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(base+"/batches/"+id)))
	w, h, px := mapPixels(t, ctx, hot, cold, gap, beside)
	require.Equal(t, layout.Width, w)
	require.Equal(t, layout.Height, h)
	t.Logf("map %dx%d: hot cell %v, cold cell %v, dead-lettered cell %v", w, h, px[0], px[1], px[2])
	require.NotEqual(t, px[0], px[1], "the hot cell and the cold cell differ")
	require.True(t, near(gridmap.Viridis(1), px[0]), "the hottest cell is the top of the scale: %v", px[0])
	require.True(t, near(gridmap.Viridis(0), px[1]), "the coldest cell is the bottom of the scale: %v", px[1])
	require.True(t, near(gridmap.FailedFill, px[2]), "the dead-lettered cell is drawn failed: %v", px[2])
	require.False(t, gridmap.IsNoValue(px[3]) || near(gridmap.FailedFill, px[3]), "the rest of its chunk was computed: %v", px[3])

	shot, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS(`#map`)))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(shots, "monitor-map.png"), shot, 0o644))
	t.Logf("screenshot: %s", filepath.Join(shots, "monitor-map.png"))

	// The selectors are a plain GET form: another scenario and year.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.CSS(`form.map-form select[name=scenario]`), "ssp585"),
		chromedp.SetValue(chromedp.CSS(`form.map-form input[name=year]`), "2100"),
		chromedp.Click(chromedp.CSS(`form.map-form button`)),
	))
	waitFor(t, 30*time.Second, "the page of ssp585 in 2100", func() bool {
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && strings.Contains(loc, "scenario=ssp585&year=2100")
	})
	src, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#map img.map').getAttribute('src')`))
	require.NoError(t, err)
	require.Equal(t, "/batches/"+id+"/map?scenario=ssp585&year=2100", src)
	_, _, px = mapPixels(t, ctx, hot, cold)
	require.NotEqual(t, px[0], px[1])
}
