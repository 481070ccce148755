package monitor

import (
	"fmt"
	"math"
	"time"

	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
)

// The throughput chart's geometry, in SVG user units.
const (
	chartW, chartH         = 860, 220
	chartLeft, chartRight  = 64, 12
	chartTop, chartBottom  = 12, 28
	chartMaxBuckets        = 120
	chartFailedBandHeight  = 6
	chartPlotW, chartPlotH = chartW - chartLeft - chartRight, chartH - chartTop - chartBottom
)

// chartBucket picks the bucket size for a batch that has run for elapsed:
// the smallest round size that gives at most chartMaxBuckets buckets (10 s
// up to a 20-minute batch, 1 s under two minutes).
func chartBucket(elapsed time.Duration) time.Duration {
	for _, b := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute,
		2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour} {
		if elapsed <= b*chartMaxBuckets {
			return b
		}
	}
	return time.Duration(math.Ceil(float64(elapsed)/float64(chartMaxBuckets)/float64(time.Hour))) * time.Hour
}

// chartView is what the template draws.
type chartView struct {
	W, H          int
	Bars          []chartBar
	Failed        []chartBar
	GridLines     []chartLabel
	XLabels       []chartLabel
	PlotX, PlotY  int
	PlotW, PlotH  int
	PlotR, PlotB  int
	AvgY          float64
	AvgLabel      string
	Bucket        string
	Empty         bool
	Peak, Average string
}

type chartBar struct {
	X, Y, W, H float64
	Title      string
}

type chartLabel struct {
	X, Y float64
	Text string
}

// buildChart lays out cells/s per bucket over the batch's life so far.
func buildChart(buckets []store.ThroughputBucket, bucket, elapsed time.Duration, started time.Time) chartView {
	n := max(int(math.Ceil(float64(elapsed)/float64(bucket))), 1)
	for _, b := range buckets {
		n = max(n, b.Index+1)
	}
	v := chartView{W: chartW, H: chartH, PlotX: chartLeft, PlotY: chartTop, PlotW: chartPlotW, PlotH: chartPlotH,
		PlotR: chartLeft + chartPlotW, PlotB: chartTop + chartPlotH,
		Bucket: numfmt.Duration(bucket)}
	// A bucket's rate divides by the time it covers: the last one may be
	// cut short by the batch's end, or by now while it runs.
	rate := func(b store.ThroughputBucket) float64 {
		return cellsPerSecond(b.Cells, min(elapsed-time.Duration(b.Index)*bucket, bucket))
	}
	var peak float64
	var cells int64
	for _, b := range buckets {
		peak = max(peak, rate(b))
		cells += b.Cells
	}
	v.Empty = len(buckets) == 0
	yMax := niceCeil(peak)
	bw := float64(chartPlotW) / float64(n)
	gap := math.Min(1, bw/4)
	for _, b := range buckets {
		x := chartLeft + float64(b.Index)*bw
		from := started.Add(time.Duration(b.Index) * bucket).UTC()
		to := from.Add(bucket)
		when := fmt.Sprintf("%s–%s UTC", from.Format(timeLayout), to.Format(time.TimeOnly))
		if b.Cells > 0 {
			r := rate(b)
			h := r / yMax * chartPlotH
			v.Bars = append(v.Bars, chartBar{X: x + gap/2, Y: chartTop + chartPlotH - h, W: bw - gap, H: h,
				Title: fmt.Sprintf("%s: %s cells, %s cells/s", when, numfmt.Int(b.Cells), fmtRate(r))})
		}
		if b.Failed > 0 {
			v.Failed = append(v.Failed, chartBar{X: x + gap/2, Y: chartTop + chartPlotH + 2, W: bw - gap, H: chartFailedBandHeight,
				Title: fmt.Sprintf("%s: %d chunks dead-lettered", when, b.Failed)})
		}
	}
	for i := 0; i <= 4; i++ {
		val := yMax * float64(i) / 4
		v.GridLines = append(v.GridLines, chartLabel{X: chartLeft - 8, Y: chartTop + chartPlotH - float64(i)/4*chartPlotH, Text: fmtRate(val)})
	}
	total := time.Duration(n) * bucket
	for i := 0; i <= 4; i++ {
		v.XLabels = append(v.XLabels, chartLabel{X: chartLeft + float64(i)/4*chartPlotW, Y: chartH - 6,
			Text: numfmt.Duration(total * time.Duration(i) / 4)})
	}
	if elapsed > 0 && cells > 0 {
		avg := cellsPerSecond(cells, elapsed)
		v.AvgY = chartTop + chartPlotH - avg/yMax*chartPlotH
		v.AvgLabel = "average " + fmtRate(avg) + " cells/s"
		v.Average = fmtRate(avg)
	}
	v.Peak = fmtRate(peak)
	return v
}

// niceCeil rounds v up to 1, 2, 2.5 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}
