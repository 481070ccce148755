package monitor

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/gridmap"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
)

// The maps: GET /batches/{id}/map draws a batch's own values, GET
// /kinds/{kind}/map the published values of a kind, for one scenario and
// year, as a PNG (package gridmap). A map is drawn from one query and kept:
// it is drawn again only when its values may have changed (another chunk of
// the batch succeeded, another batch was published), and for a running
// batch at most every MapRefresh, however often its page reloads.

// mapMaxCells bounds the region of a kind's map: its query returns a row
// per cell.
const mapMaxCells = 4_000_000

// mapTimeout bounds drawing one map, its query included.
const mapTimeout = time.Minute

// mapParams returns the scenario and year of a map of kind's series l: the
// query's, or the first series and its middle year. Errors are one line
// naming the bad value and what is allowed.
func mapParams(q url.Values, kind string, l store.SeriesLayout) (scenario string, year int, err error) {
	scenario = cmp.Or(q.Get("scenario"), l.Names[0])
	if !slices.Contains(l.Names, scenario) {
		return "", 0, fmt.Errorf("scenario %q: the series of %s are %s", scenario, kind, strings.Join(l.Names, ", "))
	}
	first, last := l.FirstYear, l.FirstYear+l.Years-1
	year = first + (l.Years-1)/2
	if s := q.Get("year"); s != "" {
		y, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return "", 0, fmt.Errorf("year %q: want a year from %d to %d", s, first, last)
		}
		if y < first || y > last {
			return "", 0, fmt.Errorf("year %d: the series of %s cover %d to %d", y, kind, first, last)
		}
		year = y
	}
	return scenario, year, nil
}

// mapError answers a map request that cannot be drawn, with one line.
func (s *Server) mapError(w http.ResponseWriter, r *http.Request, err error) {
	var status int
	switch {
	case errors.Is(err, store.ErrBatchNotFound), errors.Is(err, model.ErrUnknown), errors.Is(err, store.ErrNoPublication):
		status = http.StatusNotFound
	case errors.Is(err, store.ErrNoSeries):
		status = http.StatusGone
	case errors.As(err, new(badRequest)):
		status = http.StatusBadRequest
	default:
		status = http.StatusServiceUnavailable
		s.cfg.Log.Error("draw a map", "path", r.URL.Path, "query", r.URL.RawQuery, "error", err)
	}
	http.Error(w, fmt.Sprintf("%d %s: %s", status, http.StatusText(status), strings.ReplaceAll(err.Error(), "\n", " ")), status)
}

// badRequest marks an error in a map request's parameters.
type badRequest struct{ error }

func (s *Server) batchMap(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), mapTimeout)
	defer cancel()
	if !validID(r.PathValue("id")) {
		http.NotFound(w, r)
		return
	}
	b, err := s.cfg.Store.GetBatch(ctx, r.PathValue("id"))
	if errors.Is(err, store.ErrBatchNotFound) {
		err = fmt.Errorf("there is no batch %q: %w", r.PathValue("id"), err)
	}
	if err != nil {
		s.mapError(w, r, err)
		return
	}
	spec, err := s.cfg.Models.Spec(b.Kind)
	if err != nil {
		s.mapError(w, r, fmt.Errorf("batch %s: %w; start the monitor with the models file that declares it", b.ID, err))
		return
	}
	scenario, year, err := mapParams(r.URL.Query(), b.Kind, b.SeriesOf(spec))
	if err != nil {
		s.mapError(w, r, badRequest{err})
		return
	}
	if b.RowsDroppedAt != nil {
		s.mapError(w, r, fmt.Errorf("batch %s's own rows were dropped by retention at %s (GRIDBATCH_KEEP_BATCHES): %w",
			b.ID, fmtTime(*b.RowsDroppedAt), store.ErrNoSeries))
		return
	}
	diff, err := mapDiff(r.URL.Query())
	if err != nil {
		s.mapError(w, r, badRequest{err})
		return
	}
	key := strings.Join([]string{"batch", b.ID, scenario, strconv.Itoa(year), diff}, "\x00")
	// Its rows change only when a chunk succeeds.
	version := fmt.Sprintf("%s %d %d", b.Status, b.CompletedCells, b.FailedCells)
	if diff != "" {
		// The published values change only when a batch is published.
		pub, err := s.cfg.Store.LatestPublication(ctx, b.Kind, b.Step)
		if errors.Is(err, store.ErrNoPublication) {
			err = fmt.Errorf("nothing of kind %s is published at step %s, so there is no difference to draw: %w", b.Kind, fmtStep(b.Step), err)
		}
		if err != nil {
			s.mapError(w, r, err)
			return
		}
		version += " " + pub.PublishedAt.UTC().Format(time.RFC3339Nano)
	}
	s.serveMap(w, r, key, version, !b.Ended(), func() ([]byte, error) {
		region, err := b.Region()
		if err != nil {
			return nil, err
		}
		if diff != "" {
			return s.drawDifference(ctx, b, spec, region, scenario, year)
		}
		v := gridmap.NewLayout(region).NewValues()
		if err := s.cfg.Store.BatchMapValues(ctx, b.ID, scenario, year, v.Set); err != nil {
			return nil, err
		}
		failed, err := s.cfg.Store.FailedPieces(ctx, b.ID)
		if err != nil {
			return nil, err
		}
		for _, p := range failed {
			ids := region.ChunkIDs(p.Chunk, b.ChunkSize)
			if !p.Whole() && p.Lo >= 0 && p.Hi <= len(ids) && p.Lo < p.Hi {
				ids = ids[p.Lo:p.Hi]
			}
			for _, id := range ids {
				v.Fail(id)
			}
		}
		return encodeMap(v, gridmap.Labels{
			Title:    b.Kind + " · " + scenario + " · " + strconv.Itoa(year),
			Subtitle: fmt.Sprintf("batch %s (%s) · step %s° · bbox %s", b.ID, b.Status, fmtStep(b.Step), b.BBox),
			Quantity: spec.LongName, Units: spec.Units,
		})
	})
}

// mapDiff returns the query's diff: empty (the values themselves) or
// "published" (the batch's values minus the published ones).
func mapDiff(q url.Values) (string, error) {
	switch d := q.Get("diff"); d {
	case "", "published":
		return d, nil
	default:
		return "", fmt.Errorf("diff %q: the map draws a batch's values, or with diff=published their difference against the published values", d)
	}
}

// drawDifference draws the map of batch b's values minus the published
// values of its kind, cell by cell, on a diverging scale centred on zero.
// A cell without a value on either side (no row, NaN, dead-lettered) has
// no difference. It reads the published values of the region first, one
// float64 per cell of the region (regions of more than mapMaxCells cells
// are refused), then the batch's rows in one pass.
func (s *Server) drawDifference(ctx context.Context, b store.Batch, spec model.Spec, region grid.Region, scenario string, year int) ([]byte, error) {
	n := region.NumCells()
	if n > mapMaxCells {
		return nil, badRequest{fmt.Errorf("batch %s has %s cells; the difference map draws at most %s", b.ID, numfmt.Int(n), numfmt.Int(mapMaxCells))}
	}
	cols := int64(region.Lattice.Cols)
	index := func(gridID int64) int {
		row, col := int(gridID/cols), int(gridID%cols)
		if gridID < 0 || row < region.Row0 || row >= region.Row1 || col < region.Col0 || col >= region.Col1 {
			return -1
		}
		return (row-region.Row0)*region.NumCols() + col - region.Col0
	}
	published := make([]float64, n)
	for i := range published {
		published[i] = math.NaN()
	}
	if err := s.cfg.Store.PublishedMapValues(ctx, b.Kind, region, scenario, year, func(id int64, v float64) {
		if k := index(id); k >= 0 {
			published[k] = v
		}
	}); err != nil {
		return nil, err
	}
	d := gridmap.NewLayout(region).NewDifferences()
	if err := s.cfg.Store.BatchMapValues(ctx, b.ID, scenario, year, func(id int64, v float64) {
		if k := index(id); k >= 0 {
			d.Set(id, v-published[k]) // NaN on either side: no value
		}
	}); err != nil {
		return nil, err
	}
	return encodeMap(d, gridmap.Labels{
		Title:    b.Kind + " · " + scenario + " · " + strconv.Itoa(year) + " · batch - published",
		Subtitle: fmt.Sprintf("batch %s (%s) minus the published values · step %s° · bbox %s", b.ID, b.Status, fmtStep(b.Step), b.BBox),
		Quantity: "difference against published", Units: spec.Units,
	})
}

func (s *Server) kindMap(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), mapTimeout)
	defer cancel()
	spec, err := s.cfg.Models.Spec(r.PathValue("kind"))
	if err != nil {
		s.mapError(w, r, err)
		return
	}
	q := r.URL.Query()
	var step float64
	if v := q.Get("step"); v != "" {
		l, err := grid.ParseStep(v)
		if err != nil {
			s.mapError(w, r, badRequest{err})
			return
		}
		step = l.Step
	}
	var bbox grid.BBox
	if v := q.Get("bbox"); v != "" {
		if bbox, err = grid.ParseBBox(v); err != nil {
			s.mapError(w, r, badRequest{err})
			return
		}
	}
	scenario, year, err := mapParams(q, spec.Kind, store.LayoutOf(spec))
	if err != nil {
		s.mapError(w, r, badRequest{err})
		return
	}
	pub, err := s.cfg.Store.LatestPublication(ctx, spec.Kind, step)
	version := "none"
	switch {
	case err == nil:
		version = pub.PublishedAt.UTC().Format(time.RFC3339Nano)
	case !errors.Is(err, store.ErrNoPublication) || step == 0 || q.Get("bbox") == "":
		if errors.Is(err, store.ErrNoPublication) {
			at := ""
			if step != 0 {
				at = " at step " + fmtStep(step)
			}
			err = fmt.Errorf("nothing of kind %s is published%s, so the map has no default step and bbox; pass step= and bbox=: %w", spec.Kind, at, err)
		}
		s.mapError(w, r, err)
		return
	}
	if step == 0 {
		step = pub.Step
	}
	if q.Get("bbox") == "" {
		bbox = pub.BBox
	}
	l, err := grid.NewLattice(step)
	if err != nil {
		s.mapError(w, r, badRequest{err})
		return
	}
	region, err := grid.NewRegion(l, bbox, mapMaxCells)
	if err != nil {
		s.mapError(w, r, badRequest{err})
		return
	}
	key := strings.Join([]string{"kind", spec.Kind, fmtStep(step), bbox.String(), scenario, strconv.Itoa(year)}, "\x00")
	s.serveMap(w, r, key, version, false, func() ([]byte, error) {
		v := gridmap.NewLayout(region).NewValues()
		if err := s.cfg.Store.PublishedMapValues(ctx, spec.Kind, region, scenario, year, v.Set); err != nil {
			return nil, err
		}
		return encodeMap(v, gridmap.Labels{
			Title:    spec.Kind + " · " + scenario + " · " + strconv.Itoa(year) + " · published",
			Subtitle: fmt.Sprintf("the published values of %s (%s_timeseries) · step %s° · bbox %s", spec.Kind, spec.Kind, fmtStep(step), bbox),
			Quantity: spec.LongName, Units: spec.Units,
		})
	})
}

func encodeMap(v *gridmap.Values, lb gridmap.Labels) ([]byte, error) {
	var buf bytes.Buffer
	if err := gridmap.Encode(&buf, v, lb); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func fmtStep(step float64) string { return strconv.FormatFloat(step, 'g', -1, 64) }

// serveMap answers with the map under key: the kept drawing when it shows
// version, or when throttle is set and it is younger than MapRefresh;
// otherwise a new drawing. Browsers revalidate with its ETag.
func (s *Server) serveMap(w http.ResponseWriter, r *http.Request, key, version string, throttle bool, draw func() ([]byte, error)) {
	d, ok := s.maps.get(key)
	if !ok || (d.version != version && !(throttle && time.Since(d.at) < s.cfg.MapRefresh)) {
		png, err := draw()
		if err != nil {
			s.mapError(w, r, err)
			return
		}
		sum := sha256.Sum256(png)
		d = drawnMap{version: version, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, png: png, at: time.Now()}
		s.maps.put(key, d)
	}
	h := w.Header()
	h.Set("Content-Type", "image/png")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", d.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(d.png))
}

// mapCacheSize is how many drawings the monitor keeps (about 100 KB each).
const mapCacheSize = 32

// mapCache keeps the latest drawing of each map.
type mapCache struct {
	mu sync.Mutex
	m  map[string]drawnMap
}

type drawnMap struct {
	version, etag string
	png           []byte
	at            time.Time
}

func (c *mapCache) get(key string) (drawnMap, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[key]
	return d, ok
}

// put keeps d under key, forgetting the oldest drawing when full.
func (c *mapCache) put(key string, d drawnMap) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]drawnMap{}
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= mapCacheSize {
		oldest := ""
		for k, e := range c.m {
			if oldest == "" || e.at.Before(c.m[oldest].at) {
				oldest = k
			}
		}
		delete(c.m, oldest)
	}
	c.m[key] = d
}

// mapView is the map panel of the batch page: the selectors and the image,
// or why there is none.
type mapView struct {
	Scenarios           []string
	Scenario            string
	Year                int
	FirstYear, LastYear int
	// Src is the image's URL; empty when no map is shown.
	Src, Alt string
	W, H     int
	// Note says why no map is shown.
	Note string
	// Error is a bad scenario or year in the page's query.
	Error string
	// Published links to the published values over the batch's grid,
	// when the batch is published.
	Published string
	// Diff is "published" when the map draws the batch's values minus
	// the published ones, empty when it draws the values.
	Diff string
}

// batchMapView lays out the map panel of batch b for the page's query.
func (s *Server) batchMapView(ctx context.Context, b store.Batch, q url.Values) mapView {
	spec, err := s.cfg.Models.Spec(b.Kind)
	if err != nil {
		return mapView{Note: "No map: " + err.Error() + "; the monitor reads the models file (GRIDBATCH_MODELS_FILE) that declares it."}
	}
	series := b.SeriesOf(spec)
	v := mapView{Scenarios: series.Names, FirstYear: series.FirstYear, LastYear: series.FirstYear + series.Years - 1}
	v.Scenario, v.Year, err = mapParams(q, b.Kind, series)
	if err != nil {
		v.Error = "Map: " + err.Error()
		v.Scenario, v.Year, _ = mapParams(nil, b.Kind, series)
		return v
	}
	params := url.Values{"scenario": {v.Scenario}, "year": {strconv.Itoa(v.Year)}}
	if v.Diff, err = mapDiff(q); err != nil {
		v.Error = "Map: " + err.Error()
		return v
	}
	if v.Diff != "" {
		params.Set("diff", v.Diff)
	}
	if b.PublishedAt != nil {
		pq := url.Values{"step": {fmtStep(b.Step)}, "bbox": {b.BBox.String()}, "scenario": {v.Scenario}, "year": {strconv.Itoa(v.Year)}}
		v.Published = "/kinds/" + url.PathEscape(b.Kind) + "/map?" + pq.Encode()
	}
	switch {
	case b.RowsDroppedAt != nil:
		v.Note = "No map: this batch's own rows were dropped by retention at " + fmtTime(*b.RowsDroppedAt) +
			" (GRIDBATCH_KEEP_BATCHES keeps the latest batches of a kind besides the published ones)."
		return v
	case b.CompletedCells == 0 && !b.Ended():
		v.Note = "No rows yet: the map appears when the first chunk of this batch has succeeded."
		return v
	case b.CompletedCells == 0:
		v.Note = "No map: this batch wrote no rows (no chunk succeeded)."
		return v
	}
	region, err := b.Region()
	if err != nil {
		v.Note = "No map: " + err.Error()
		return v
	}
	if v.Diff != "" {
		if n := region.NumCells(); n > mapMaxCells {
			v.Note = "No difference map: this batch has " + numfmt.Int(n) + " cells; the difference map draws at most " + numfmt.Int(mapMaxCells) + "."
			return v
		}
		if _, err := s.cfg.Store.LatestPublication(ctx, b.Kind, b.Step); errors.Is(err, store.ErrNoPublication) {
			v.Note = "No difference: nothing of kind " + b.Kind + " is published at step " + fmtStep(b.Step) + "."
			return v
		} else if err != nil {
			v.Note = "No map: PostgreSQL: " + err.Error()
			return v
		}
	}
	l := gridmap.NewLayout(region)
	v.Src = "/batches/" + url.PathEscape(b.ID) + "/map?" + params.Encode()
	v.W, v.H = l.Width, l.Height
	v.Alt = fmt.Sprintf("Map of %s for %s in %d over %s cells of batch %s", b.Kind, v.Scenario, v.Year, numfmt.Int(region.NumCells()), b.ID)
	if v.Diff != "" {
		v.Alt = fmt.Sprintf("Map of the difference of batch %s's %s against the published values for %s in %d over %s cells", b.ID, b.Kind, v.Scenario, v.Year, numfmt.Int(region.NumCells()))
	}
	return v
}
