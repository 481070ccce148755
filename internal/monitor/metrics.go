package monitor

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gridbatch/gridbatch/internal/store"
)

// Names of the monitor's own metrics, for dashboards and tests.
const (
	NameBatchRunning      = "gridbatch_batch_running"
	NameBatchCellsDone    = "gridbatch_batch_cells_done"
	NameBatchCellsFailed  = "gridbatch_batch_cells_failed"
	NameBatchCellsTotal   = "gridbatch_batch_cells_total"
	NameBatchChunksDone   = "gridbatch_batch_chunks_done"
	NameBatchChunksFailed = "gridbatch_batch_chunks_failed"
	NameBatchChunksTotal  = "gridbatch_batch_chunks_total"
	NameBatchStarted      = "gridbatch_batch_started_timestamp_seconds"
	NameBatchLastEnd      = "gridbatch_batch_last_end_timestamp_seconds"
	NameDeadLettersOpen   = "gridbatch_dead_letters_open"
	NameMonitorDBUp       = "gridbatch_monitor_db_up"
	NameBatchesHeld       = "gridbatch_batches_held"
)

// batchCollector reads the batch gauges from PostgreSQL at every scrape.
// Labels are bounded: kind (the registered models and any kind of a
// running batch) and, on the last-end timestamp, the five final statuses.
// No series carries a batch ID; the running batch of a kind is identified
// by its gridbatch_batch_started_timestamp_seconds.
type batchCollector struct {
	st      *store.Store
	kinds   []string
	timeout time.Duration

	running, cellsDone, cellsFailed, cellsTotal    *prometheus.Desc
	chunksDone, chunksFailed, chunksTotal, started *prometheus.Desc
	lastEnd, deadLetters, dbUp                     *prometheus.Desc
	held                                           *prometheus.Desc
}

func newBatchCollector(st *store.Store, kinds []string) *batchCollector {
	kind := []string{"kind"}
	return &batchCollector{
		st:           st,
		kinds:        kinds,
		timeout:      5 * time.Second,
		running:      prometheus.NewDesc(NameBatchRunning, "1 while a batch of the kind runs, else 0.", kind, nil),
		cellsDone:    prometheus.NewDesc(NameBatchCellsDone, "Cells of the kind's running batch whose chunk has a final outcome (succeeded, dead-lettered or timed out); 0 when none runs.", kind, nil),
		cellsFailed:  prometheus.NewDesc(NameBatchCellsFailed, "Cells of the kind's running batch in dead-lettered chunks.", kind, nil),
		cellsTotal:   prometheus.NewDesc(NameBatchCellsTotal, "Cells of the kind's running batch; 0 when none runs.", kind, nil),
		chunksDone:   prometheus.NewDesc(NameBatchChunksDone, "Chunks of the kind's running batch with a final outcome.", kind, nil),
		chunksFailed: prometheus.NewDesc(NameBatchChunksFailed, "Chunks of the kind's running batch dead-lettered so far.", kind, nil),
		chunksTotal:  prometheus.NewDesc(NameBatchChunksTotal, "Chunks of the kind's running batch.", kind, nil),
		started:      prometheus.NewDesc(NameBatchStarted, "Start time (Unix seconds) of the kind's running batch; 0 when none runs.", kind, nil),
		lastEnd:      prometheus.NewDesc(NameBatchLastEnd, "End time (Unix seconds) of the most recent batch of the kind that ended with the status.", []string{"kind", "status"}, nil),
		held:         prometheus.NewDesc(NameBatchesHeld, "Batches of the kind held now: computed, but their declared checks failed, so they are not published.", kind, nil),
		deadLetters:  prometheus.NewDesc(NameDeadLettersOpen, "Dead letters recorded in PostgreSQL and not requeued, of every batch.", nil, nil),
		dbUp:         prometheus.NewDesc(NameMonitorDBUp, "1 when the monitor's last read of PostgreSQL for these metrics worked, else 0.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *batchCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.running, c.cellsDone, c.cellsFailed, c.cellsTotal, c.chunksDone,
		c.chunksFailed, c.chunksTotal, c.started, c.lastEnd, c.deadLetters, c.dbUp, c.held} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *batchCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	running, err := c.st.RunningBatches(ctx)
	var ends []store.KindEnd
	var open int64
	if err == nil {
		ends, err = c.st.LastEnds(ctx)
	}
	if err == nil {
		open, err = c.st.OpenDeadLetters(ctx)
	}
	var held map[string]int64
	if err == nil {
		held, err = c.st.HeldBatches(ctx)
	}
	if err != nil {
		ch <- prometheus.MustNewConstMetric(c.dbUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.dbUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(c.deadLetters, prometheus.GaugeValue, float64(open))

	byKind := map[string]store.Batch{}
	for _, b := range running { // newest first: keep the newest of a kind
		if _, ok := byKind[b.Kind]; !ok {
			byKind[b.Kind] = b
		}
	}
	kinds := slices.Clone(c.kinds)
	for k := range byKind {
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, k := range kinds {
		b, ok := byKind[k]
		var run, started float64
		if ok {
			run, started = 1, float64(b.StartedAt.UnixMilli())/1000
		}
		gauge(c.running, run, k)
		gauge(c.started, started, k)
		gauge(c.cellsDone, float64(b.CompletedCells+b.FailedCells+b.TimedOutCells), k)
		gauge(c.cellsFailed, float64(b.FailedCells), k)
		gauge(c.cellsTotal, float64(b.TotalCells), k)
		gauge(c.chunksDone, float64(b.DoneChunks), k)
		gauge(c.chunksFailed, float64(b.FailedChunks), k)
		gauge(c.chunksTotal, float64(b.TotalChunks), k)
		gauge(c.held, float64(held[k]), k)
	}
	for _, e := range ends {
		gauge(c.lastEnd, float64(e.EndedAt.UnixMilli())/1000, e.Kind, e.Status)
	}
}
