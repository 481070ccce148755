package monitor

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// deadLetterRows is how many dead letters the batch page lists.
const deadLetterRows = 500

var funcs = template.FuncMap{
	"int":      func(n int) string { return numfmt.Int(n) },
	"int64":    func(n int64) string { return numfmt.Int(n) },
	"pct":      numfmt.Percent,
	"time":     fmtTime,
	"truncate": truncate,
	"iso":      func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}

var pages = func() map[string]*template.Template {
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html"))
	out := map[string]*template.Template{}
	for _, name := range []string{"overview", "batch", "error"} {
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html"))
	}
	return out
}()

func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	fsrv := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		fsrv.ServeHTTP(w, r)
	})
}

// layout is what every page's frame needs.
type layout struct {
	Title    string
	Refresh  int // seconds; 0 disables the reload
	Now      time.Time
	ReadOnly bool
	NoAuth   bool
	Problems []string
}

// render writes a page with the security headers of every page: a strict
// content security policy (no script at all; styles only from /static/),
// no framing, no sniffing, no caching.
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := pages[name].ExecuteTemplate(&buf, "layout.html", data); err != nil {
		s.cfg.Log.Error("render page", "page", name, "error", err)
		http.Error(w, "500 internal error: render "+name+": "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) layout(title string, now time.Time) layout {
	return layout{Title: title, Now: now, ReadOnly: !s.cfg.AllowWrites, NoAuth: s.cfg.InsecureNoAuth}
}

// bar is a stacked progress bar of a batch's chunks, drawn as SVG (inline
// style attributes would need a weaker content security policy).
type bar struct {
	Done, Total int
	Segs        []seg
}

type seg struct {
	X, W  float64
	Class string
	Title string
}

// minSeg is the narrowest a non-empty failure segment is drawn, in percent
// of the bar, so that 3 dead letters among 4,000 chunks stay visible.
const minSeg = 1.5

func newBar(b store.Batch) bar {
	out := bar{Done: b.DoneChunks, Total: b.TotalChunks}
	if b.TotalChunks <= 0 {
		return out
	}
	parts := []struct {
		n     int
		class string
		what  string
	}{
		{b.CompletedChunks, "ok", "succeeded"},
		{b.FailedChunks, "fail", "dead-lettered"},
		{b.TimedOutChunks, "timeout", "timed out"},
		{b.CancelledChunks, "cancel", "cancelled"},
	}
	widths := make([]float64, len(parts))
	sum := 0.0
	for i, p := range parts {
		widths[i] = 100 * float64(p.n) / float64(b.TotalChunks)
		if i > 0 && p.n > 0 && widths[i] < minSeg {
			widths[i] = minSeg
		}
		sum += widths[i]
	}
	// The widened failures take room from the open part; only when the bar
	// would overflow do they come out of the succeeded part.
	widths[0] = max(widths[0]-max(sum-100, 0), 0)
	x := 0.0
	for i, p := range parts {
		if p.n <= 0 {
			continue
		}
		out.Segs = append(out.Segs, seg{X: x, W: widths[i], Class: p.class, Title: numfmt.Int(p.n) + " chunks " + p.what})
		x += widths[i]
	}
	return out
}

// batchRow is one batch as the batch view and the batch page show it.
type batchRow struct {
	ID, Kind, Status, Trigger string
	Running                   bool
	Started                   time.Time
	StartedAgo                string
	Elapsed                   string
	Ended                     *time.Time
	Total, Done               int
	Succeeded, Failed         int
	TimedOut, Cancelled       int
	CellsDone, CellsTotal     int64
	Pct                       string
	Rate                      string
	RateNote                  string
	ETA                       string
	DeadlineIn                string
	DeadLetters               int
	Bar                       bar
	Error                     string
}

func newRow(o store.BatchOverview, now time.Time) batchRow {
	b := o.Batch
	r := batchRow{ID: b.ID, Kind: b.Kind, Status: b.Status, Trigger: b.Trigger, Running: !b.Ended(),
		Started: b.StartedAt, StartedAgo: ago(b.StartedAt, now), Ended: b.EndedAt,
		Total: b.TotalChunks, Done: b.DoneChunks, Succeeded: b.CompletedChunks, Failed: b.FailedChunks,
		TimedOut: b.TimedOutChunks, Cancelled: b.CancelledChunks,
		CellsDone: b.CompletedCells + b.FailedCells + b.TimedOutCells, CellsTotal: b.TotalCells,
		DeadLetters: o.DeadLetters, Bar: newBar(b), Rate: "—", ETA: "—"}
	if b.Error != nil {
		r.Error = *b.Error
	}
	if b.TotalChunks > 0 {
		r.Pct = numfmt.Percent(float64(b.DoneChunks) / float64(b.TotalChunks))
	}
	switch {
	case r.Running:
		r.Elapsed = numfmt.Duration(now.Sub(b.StartedAt))
		r.DeadlineIn = numfmt.Duration(b.DeadlineAt.Sub(now))
		if o.RecentSeconds > 0 {
			rate := cellsPerSecond(o.RecentCells, seconds(o.RecentSeconds))
			r.Rate = fmtRate(rate)
			r.RateNote = "over the last " + numfmt.Duration(seconds(o.RecentSeconds))
			left := b.TotalCells - r.CellsDone
			switch {
			case left <= 0 || b.DoneChunks >= b.TotalChunks:
				r.ETA = "finishing"
			case rate > 0:
				r.ETA = numfmt.Duration(time.Duration(float64(left) / rate * float64(time.Second)))
			default:
				r.ETA = "stalled"
			}
		}
	case b.DurationSeconds != nil:
		d := seconds(*b.DurationSeconds)
		r.Elapsed = numfmt.Duration(d)
		if *b.DurationSeconds > 0 {
			r.Rate = fmtRate(cellsPerSecond(b.CompletedCells, d))
			r.RateNote = "average over the batch"
		}
	}
	return r
}

// queueRow is one asynq queue in the summary.
type queueRow struct {
	Name                                       string
	Pending, Active, Scheduled, Retry, Archive int
	Latency                                    string
	Paused                                     bool
}

type workers struct {
	Processes, Slots, Busy int
}

// queueSummary reads asynq's queues and servers; a problem is returned as
// text for the page's banner.
func (s *Server) queueSummary() ([]queueRow, workers, []string) {
	var problems []string
	var out []queueRow
	names, err := s.insp.Queues()
	if err != nil {
		return nil, workers{}, []string{"Redis: cannot list the queues: " + err.Error()}
	}
	slices.Sort(names)
	var wk workers
	for _, q := range names {
		qi, err := s.insp.GetQueueInfo(q)
		if err != nil {
			problems = append(problems, "Redis: queue "+q+": "+err.Error())
			continue
		}
		wk.Busy += qi.Active
		out = append(out, queueRow{Name: q, Pending: qi.Pending, Active: qi.Active, Scheduled: qi.Scheduled,
			Retry: qi.Retry, Archive: qi.Archived, Latency: numfmt.Duration(qi.Latency), Paused: qi.Paused})
	}
	// Busy counts the queues' active tasks, which are current; the
	// servers' own lists of active workers lag by a heartbeat (5 s).
	servers, err := s.insp.Servers()
	if err != nil {
		problems = append(problems, "Redis: cannot list the workers: "+err.Error())
	}
	for _, si := range servers {
		wk.Processes++
		wk.Slots += si.Concurrency
	}
	return out, wk, problems
}

type overviewPage struct {
	layout
	Running     []batchRow
	Recent      []batchRow
	Queues      []queueRow
	Workers     workers
	OpenDLQ     int64
	RateWindow  string
	RecentLimit int
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	now := time.Now()
	p := overviewPage{layout: s.layout("Batches", now), RateWindow: numfmt.Duration(s.cfg.RateWindow), RecentLimit: s.cfg.RecentBatches}
	ovs, err := s.cfg.Store.BatchOverviews(ctx, s.cfg.RecentBatches, s.cfg.RateWindow)
	if err != nil {
		p.Problems = append(p.Problems, "PostgreSQL: cannot read the batches: "+err.Error())
	}
	for _, o := range ovs {
		row := newRow(o, now)
		if row.Running {
			p.Running = append(p.Running, row)
		} else {
			p.Recent = append(p.Recent, row)
		}
	}
	if p.OpenDLQ, err = s.cfg.Store.OpenDeadLetters(ctx); err != nil && len(p.Problems) == 0 {
		p.Problems = append(p.Problems, "PostgreSQL: cannot count the dead letters: "+err.Error())
	}
	var qp []string
	p.Queues, p.Workers, qp = s.queueSummary()
	p.Problems = append(p.Problems, qp...)
	if len(p.Running) > 0 || len(p.Problems) > 0 {
		p.Refresh = int(s.cfg.Refresh.Seconds())
	}
	s.render(w, http.StatusOK, "overview", p)
}

type figure struct {
	Label, Value, Note string
}

type deadLetterRow struct {
	TaskID, Type, Error, ShortError string
	Chunk                           string
	// Cell is the failed cell (grid ID and centre) of a dead letter of one
	// cell, or the part of the chunk it was.
	Cell       string
	Retries    int
	FailedAt   time.Time
	RequeuedAt *time.Time
}

type batchPageData struct {
	layout
	B            batchRow
	Step         float64
	BBox         string
	ChunkSize    int
	Deadline     time.Time
	LockExpires  time.Time
	Chunks       []figure
	Cells        []figure
	Figures      []figure
	Chart        chartView
	Map          mapView
	DeadLetters  []deadLetterRow
	DLTotal      int
	DLOpen       int
	DLShown      int
	AllowWrites  bool
	CanRequeue   bool
	Flash        string
	RequeueError string
	// Checks and Provenance are the batch's (results you can trust); nil
	// when none ran or none was recorded.
	Checks     *store.CheckReport
	Provenance *store.Provenance
}

func (s *Server) batchPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	id := r.PathValue("id")
	now := time.Now()
	if !validID(id) {
		s.errorPage(w, http.StatusNotFound, "No such batch", "There is no batch "+strconv.QuoteToASCII(id)+".")
		return
	}
	o, err := s.cfg.Store.BatchOverview(ctx, id, s.cfg.RateWindow)
	if errors.Is(err, store.ErrBatchNotFound) {
		s.errorPage(w, http.StatusNotFound, "No such batch", "There is no batch "+strconv.Quote(id)+".")
		return
	}
	if err != nil {
		s.errorPage(w, http.StatusServiceUnavailable, "Cannot read the batch", "PostgreSQL: "+err.Error())
		return
	}
	b := o.Batch
	p := batchPageData{layout: s.layout(b.ID, now), B: newRow(o, now), Step: b.Step,
		BBox:      strconv.FormatFloat(b.BBox.LonMin, 'g', -1, 64) + "," + strconv.FormatFloat(b.BBox.LatMin, 'g', -1, 64) + "," + strconv.FormatFloat(b.BBox.LonMax, 'g', -1, 64) + "," + strconv.FormatFloat(b.BBox.LatMax, 'g', -1, 64),
		ChunkSize: b.ChunkSize, Deadline: b.DeadlineAt, LockExpires: b.LockExpiresAt,
		AllowWrites: s.cfg.AllowWrites, CanRequeue: s.cfg.AllowWrites && s.cfg.Requeue != nil,
		Checks: b.Checks, Provenance: b.Provenance}
	// The banners are fixed texts chosen by a code of the URL (a count is
	// the only value taken from it), never text of the URL.
	if n, err := strconv.Atoi(r.URL.Query().Get("requeued")); err == nil && n >= 0 {
		p.Flash = "Requeued " + strconv.Itoa(n) + " dead letters: their chunks run again with a fresh retry count."
	}
	if r.URL.Query().Get("requeue") == "failed" {
		p.RequeueError = "the monitor's log has the reason (message \"requeue dead letters\")."
	}

	stats, err := s.cfg.Store.BatchChunkStats(ctx, id)
	if err != nil {
		p.Problems = append(p.Problems, "PostgreSQL: chunk figures: "+err.Error())
	}
	end := now
	if b.EndedAt != nil {
		end = *b.EndedAt
	}
	elapsed := end.Sub(b.StartedAt)
	bucket := chartBucket(elapsed)
	tp, err := s.cfg.Store.Throughput(ctx, id, bucket)
	if err != nil {
		p.Problems = append(p.Problems, "PostgreSQL: throughput: "+err.Error())
	}
	p.Chart = buildChart(tp, bucket, elapsed, b.StartedAt)
	p.Map = s.batchMapView(ctx, b, r.URL.Query())

	dls, total, err := s.cfg.Store.BatchDeadLetters(ctx, id, deadLetterRows)
	if err != nil {
		p.Problems = append(p.Problems, "PostgreSQL: dead letters: "+err.Error())
	}
	p.DLTotal, p.DLShown, p.DLOpen = total, len(dls), o.DeadLetters
	for _, d := range dls {
		row := deadLetterRow{TaskID: d.TaskID, Type: d.Type, Error: d.LastError, ShortError: truncate(d.LastError, 140),
			Retries: d.Retries, FailedAt: d.FailedAt, RequeuedAt: d.RequeuedAt, Chunk: "—"}
		if d.Chunk != nil {
			row.Chunk = strconv.Itoa(*d.Chunk)
		}
		switch {
		case d.GridID != nil:
			row.Cell = cellText(b.Step, *d.GridID)
		case d.Hi > 0:
			row.Cell = fmt.Sprintf("cells %d–%d of the chunk", d.Lo, d.Hi)
		default:
			row.Cell = "the whole chunk"
		}
		p.DeadLetters = append(p.DeadLetters, row)
	}

	dbErrors := b.DBConnErrors
	if !b.Ended() && s.cfg.DBErrors != nil {
		dbErrors += s.cfg.DBErrors(ctx, id)
	}
	p.Chunks, p.Cells, p.Figures = figures(b, stats, dbErrors, now)
	if p.B.Running {
		p.Refresh = int(s.cfg.Refresh.Seconds())
	}
	s.render(w, http.StatusOK, "batch", p)
}

// figures are the batch page's numbers: DESIGN.md's list (start, end,
// duration, chunk and cell counts, success rate, average task time, peak
// worker memory, DB connection errors). A running batch's rate, average and
// peak are computed live from its chunks; an ended one's are its record.
func figures(b store.Batch, c store.ChunkStats, dbErrors int64, now time.Time) (chunks, cells, other []figure) {
	n := func(v int) string { return numfmt.Int(v) }
	chunks = []figure{
		{"Total", n(b.TotalChunks), ""},
		{"Succeeded", n(b.CompletedChunks), ""},
		{"Dead-lettered", n(b.FailedChunks), "retries exhausted or not retryable"},
		{"Timed out", n(b.TimedOutChunks), "still open at the deadline"},
	}
	if b.CancelledChunks > 0 {
		chunks = append(chunks, figure{"Cancelled", n(b.CancelledChunks), ""})
	}
	if !b.Ended() {
		chunks = append(chunks, figure{"Open", n(c.Pending), "queued, running or retrying"})
	}
	cells = []figure{
		{"Total", numfmt.Int(b.TotalCells), ""},
		{"Succeeded", numfmt.Int(b.CompletedCells), ""},
		{"Dead-lettered", numfmt.Int(b.FailedCells), ""},
		{"Timed out", numfmt.Int(b.TimedOutCells), ""},
	}
	start := figure{"Started", fmtTime(b.StartedAt), ago(b.StartedAt, now) + " · trigger " + b.Trigger}
	endF := figure{"Ended", "—", "still running"}
	dur := figure{"Duration", numfmt.Duration(now.Sub(b.StartedAt)), "so far"}
	if b.EndedAt != nil {
		endF = figure{"Ended", fmtTime(*b.EndedAt), ago(*b.EndedAt, now)}
		dur.Note = ""
		if b.DurationSeconds != nil {
			dur.Value = numfmt.Duration(seconds(*b.DurationSeconds))
		}
	}
	rate := figure{"Success rate", "—", "succeeded cells of all cells"}
	avg := figure{"Average task", "—", "succeeded chunks"}
	peak := figure{"Peak worker memory", "—", "largest RSS a chunk reported"}
	if b.Ended() {
		if b.SuccessRate != nil {
			rate.Value = numfmt.Percent(*b.SuccessRate)
		}
		if b.AvgTaskSeconds != nil {
			avg.Value = numfmt.Seconds(*b.AvgTaskSeconds)
		}
		// No chunk reported one (a batch that failed before any chunk ran): "—", not 0 B.
		if b.PeakWorkerRSSBytes != nil && *b.PeakWorkerRSSBytes > 0 {
			peak.Value = numfmt.Bytes(*b.PeakWorkerRSSBytes)
		}
	} else {
		if done := b.CompletedCells + b.FailedCells + b.TimedOutCells; done > 0 {
			rate = figure{"Success rate", numfmt.Percent(float64(b.CompletedCells) / float64(done)), "so far, of cells with an outcome"}
		}
		if c.AvgTaskSeconds != nil {
			avg.Value, avg.Note = numfmt.Seconds(*c.AvgTaskSeconds), "so far"
		}
		if c.PeakRSSBytes != nil {
			peak.Value, peak.Note = numfmt.Bytes(*c.PeakRSSBytes), "so far"
		}
	}
	other = []figure{start, endF, dur, rate, avg, peak,
		{"DB connection errors", numfmt.Int(dbErrors), "met by chunk tasks"},
		{"Deadline", fmtTime(b.DeadlineAt), ""},
		{"Published", b.PublicationWith(fmtTime), "the values readers of " + b.Kind + "_timeseries see"},
	}
	return chunks, cells, other
}

func (s *Server) requeue(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	switch {
	case !validID(id):
		http.NotFound(w, r)
		return
	case !s.cfg.AllowWrites:
		http.Error(w, "403 Forbidden: the monitor is read-only; start it with --allow-writes to requeue dead letters here, or run: enqueuer dlq requeue --batch "+id, http.StatusForbidden)
		return
	case s.cfg.Requeue == nil:
		http.Error(w, "501 Not Implemented: requeue from the monitor is not available in this build; run: enqueuer dlq requeue --batch "+id, http.StatusNotImplemented)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "400 Bad Request: "+err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Minute)
	defer cancel()
	taskIDs := r.PostForm["task_id"]
	q := url.Values{}
	n, err := s.cfg.Requeue(ctx, id, taskIDs)
	if err != nil {
		s.cfg.Log.Error("requeue dead letters", "batch_id", id, "task_ids", taskIDs, "error", err)
		q.Set("requeue", "failed")
	} else {
		s.cfg.Log.Info("requeued dead letters from the monitor", "batch_id", id, "requeued", n, "user", s.cfg.User)
		q.Set("requeued", strconv.Itoa(n))
	}
	http.Redirect(w, r, "/batches/"+url.PathEscape(id)+"?"+q.Encode()+"#dead-letters", http.StatusSeeOther)
}

type errorPageData struct {
	layout
	Heading, Message string
}

func (s *Server) errorPage(w http.ResponseWriter, status int, heading, msg string) {
	s.render(w, status, "error", errorPageData{layout: s.layout(heading, time.Now()), Heading: heading, Message: msg})
}

// cellText names a cell by grid ID and centre: "4553467 (37.025, 126.525)".
func cellText(step float64, id int64) string {
	l, err := grid.NewLattice(step)
	if err != nil {
		return strconv.FormatInt(id, 10)
	}
	c, err := l.CellByID(id)
	if err != nil {
		return strconv.FormatInt(id, 10)
	}
	round := func(v float64) float64 { return math.Round(v*1e9) / 1e9 }
	return fmt.Sprintf("%d (%g, %g)", id, round(c.Lat), round(c.Lon))
}
