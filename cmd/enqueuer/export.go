package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/gridbatch/gridbatch/internal/config"
	"github.com/gridbatch/gridbatch/internal/export"
	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/numfmt"
	"github.com/gridbatch/gridbatch/internal/store"
)

func init() {
	register(command{
		name:    "export",
		usage:   "(--batch ID | --kind KIND [--step DEGREES] [--bbox BBOX]) --format netcdf|parquet|csv --out FILE [--scenario SCENARIO]",
		summary: "write a batch's results, or the published values of a kind, as NetCDF, Parquet or CSV",
		about: `Writes results to --out: with --batch ID the rows that batch computed,
published or not (until retention drops them, GRIDBATCH_KEEP_BATCHES), at the
batch's step; with --kind the published values of the kind at --step (those
of ph_timeseries, …: for each cell, the values of the batch published last
over it). --bbox keeps the cells whose centres lie in it (default: the
batch's bbox, or with --kind every bbox published at that step); --scenario
keeps one scenario.

Formats (--format, or from the extension of --out: .nc, .parquet, .csv):
  netcdf   NetCDF-4, CF-1.8: a variable KIND(scenario, time, lat, lon) of
           float64, NaN (the _FillValue) where a cell has no value,
           compressed (zlib with shuffle, --compression-level), with the
           coordinates scenario, time (days since the first year's 1 January,
           with time_bnds covering each year), year (along time), lat and
           lon (the exact decimal cell centres, degrees, with bounds), the
           grid mapping crs, and the model's units and long_name. Open it
           with xarray:
             ds = xr.open_dataset("ph.nc")
             ds["ph"].sel(scenario="ssp245", time="2050")
             ds["ph"].sel(lat=37.025, lon=126.525)
           Written by Debian's python3-netcdf4 through /usr/bin/python3
           (--python): apt-get install python3-netcdf4.
  parquet  a row per cell, scenario and year: grid_id, lat, lon (the exact
           decimal cell centre), scenario, year, value (Snappy-compressed,
           row groups of 1,048,576 rows).
  csv      the same rows with a header line; numbers at full precision.
           --out - writes it to standard output.
A batch's export carries its provenance (as 'enqueuer status ID --json' shows
it under provenance): NetCDF global attributes and Parquet key-value metadata
gridbatch_provenance (the JSON), gridbatch_model_digest, gridbatch_inputs_sha256,
gridbatch_revision …, source and history; for csv, a sidecar FILE.provenance.json
of the same attributes.

The export streams: memory stays bounded however many cells there are. It
writes a temporary file beside --out and renames it once complete, so --out
is never a partial file; a failed or interrupted export leaves no file. An
--out that is there and is not a regular file (a FIFO, a device, a symbolic
link, a folder) is refused, never replaced. The file's permissions are
0666 less the umask. A progress bar shows on a terminal; a summary line goes
to standard error.`,
		example: `  enqueuer export --batch ph-20261122-041503-3fa9c1 --out ph.nc
  enqueuer export --kind ph --step 0.05 --bbox 126,37,127.5,38 --format parquet --out seoul.parquet
  enqueuer export --kind hazard --scenario ssp585 --format csv --out - | head`,
		run: runExport,
	})
}

func runExport(ctx context.Context, e *env, args []string) error {
	c := commandNamed("export")
	var (
		batchID, kind, bbox, format, out, scenario, python string
		step                                               float64
		level                                              int
	)
	cfg, _, done, err := parse(c, e, args, false, func(s *config.Set) {
		s.String(&batchID, "batch", "", "", "export the own rows (published or not) of batch `ID`")
		s.String(&kind, "kind", "", "", "export the published values of model `KIND` (ph, hazard or one of 'enqueuer models')")
		s.Float(&step, "step", "GRIDBATCH_GRID_STEP", 0.05, "with --kind: the grid step in `degrees` of the values")
		s.String(&bbox, "bbox", "", "", "keep the cells whose centres lie in the box `LON_MIN,LAT_MIN,LON_MAX,LAT_MAX` (default: the batch's, or every one published)")
		s.String(&format, "format", "", "", "`FORMAT`: netcdf, parquet or csv (default: from the extension of --out)")
		s.String(&out, "out", "", "", "the `FILE` to write; - writes csv to standard output (required)")
		s.String(&scenario, "scenario", "", "", "export only this `SCENARIO` (default: every scenario of the model)")
		s.String(&python, "python", "GRIDBATCH_EXPORT_PYTHON", export.DefaultPython, "with netcdf: the `PYTHON3` (with Debian's python3-netcdf4) that writes the file")
		s.Int(&level, "compression-level", "", export.DefaultCompression, "with netcdf: the deflate `LEVEL` (zlib with shuffle, lossless) from 1 (fastest: the byte planes deflate halves) to 9 (smallest: every plane deflate shrinks, several times the time); 0 writes uncompressed")
	})
	if done {
		return err
	}
	f, err := exportFormat(format, out)
	if err != nil {
		return err
	}
	if batchID == "" && kind == "" {
		return fmt.Errorf("--batch or --kind is required: --batch ID exports a batch's rows, --kind one of %s its published values (see --help)",
			strings.Join(e.models.Kinds(), ", "))
	}
	st, err := openStore(ctx, cfg.Common)
	if err != nil {
		return err
	}
	defer st.Close()
	sel, err := exportSelection(ctx, st, e.models, batchID, kind, step, bbox, scenario)
	if err != nil {
		return err
	}

	l := sel.layout
	var bar *progressbar.ProgressBar
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar = progressbar.NewOptions64(int64(l.Region.NumCells()), progressbar.OptionSetWriter(e.stderr),
			progressbar.OptionSetDescription("export "+sel.what), progressbar.OptionShowCount(), progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("cells"), progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionFullWidth())
	}
	if level < 0 || level > 9 {
		return fmt.Errorf("--compression-level %d: want 0 (uncompressed) to 9", level)
	}
	opts := export.Options{Format: f, Python: python, Compression: level}
	if level == 0 {
		opts.Compression = export.NoCompression
	}
	if bar != nil {
		opts.Progress = func(cells int) { _ = bar.Set64(int64(cells)) }
	}
	src := func(ctx context.Context, fn func(export.Series) error) error {
		return st.Export(ctx, sel.query, func(r store.ExportRow) error { return fn(export.Series(r)) })
	}
	start := time.Now()
	var stats export.Stats
	if out == "-" {
		stats, err = export.Stream(ctx, e.stdout, src, l, opts)
	} else {
		stats, err = export.File(ctx, out, src, l, opts)
	}
	if bar != nil {
		if err == nil {
			_ = bar.Finish()
		}
		fmt.Fprintln(e.stderr)
	}
	switch {
	case err != nil && ctx.Err() != nil:
		return fmt.Errorf("export of %s stopped (%w); no file written", sel.what, ctx.Err())
	case err != nil && out != "-":
		return fmt.Errorf("export of %s to %s failed, no file written: %w", sel.what, out, err)
	case err != nil:
		return fmt.Errorf("export of %s: %w", sel.what, err)
	}
	dest := out
	if out == "-" {
		dest = "standard output"
	}
	if f == export.CSV && out != "-" && l.Attributes["gridbatch_provenance"] != "" {
		side, err := writeProvenanceSidecar(out, l.Attributes)
		if err != nil {
			return fmt.Errorf("write the provenance of %s: %w", out, err)
		}
		fmt.Fprintf(e.stderr, "its provenance: %s\n", side)
	}
	fmt.Fprintf(e.stderr, "exported %s of %s: %s series, %s values, %s of %s cells with values; %s to %s (%s) in %s\n",
		sel.what, l.Kind, numfmt.Int(stats.Series), numfmt.Int(stats.Values), numfmt.Int(stats.Cells), numfmt.Int(l.Region.NumCells()),
		f, dest, numfmt.Bytes(stats.Bytes), numfmt.Duration(time.Since(start)))
	return nil
}

// exportFormat returns the format of --format, or of --out's extension.
func exportFormat(format, out string) (export.Format, error) {
	if out == "" {
		return "", errors.New("--out is required: the file to write, or - for csv on standard output (see --help)")
	}
	if format != "" {
		f, err := export.ParseFormat(format)
		if err != nil {
			return "", fmt.Errorf("--%w", err)
		}
		if out == "-" && f != export.CSV {
			return "", fmt.Errorf("--out -: only csv goes to standard output; give --format %s a file", f)
		}
		return f, nil
	}
	if out == "-" {
		return export.CSV, nil
	}
	f, ok := export.FormatOf(out)
	if !ok {
		return "", fmt.Errorf("--format is required: netcdf, parquet or csv (--out %s has no extension .nc, .parquet or .csv)", out)
	}
	return f, nil
}

// exportSel is what an export reads and how it lays it out.
type exportSel struct {
	query  store.ExportQuery
	layout export.Layout
	// what names the selection for people: "batch ID" or "the published values".
	what string
}

// exportSelection resolves the selectors of export into the rows to read
// and their layout.
func exportSelection(ctx context.Context, st *store.Store, models *model.Set, batchID, kind string, step float64,
	bbox, scenario string) (exportSel, error) {
	var sel exportSel
	attrs := map[string]string{"source": "gridbatch"}
	var box *grid.BBox
	if bbox != "" {
		b, err := grid.ParseBBox(bbox)
		if err != nil {
			return sel, fmt.Errorf("--bbox: %w", err)
		}
		box = &b
	}
	var batch *store.Batch
	if batchID != "" {
		b, err := st.GetBatch(ctx, batchID)
		switch {
		case errors.Is(err, store.ErrBatchNotFound):
			return sel, fmt.Errorf("--batch: no batch %s (see 'enqueuer list')", batchID)
		case err != nil:
			return sel, err
		case kind != "" && kind != b.Kind:
			return sel, fmt.Errorf("--kind %s: batch %s is of kind %s", kind, batchID, b.Kind)
		case b.RowsDroppedAt != nil:
			return sel, fmt.Errorf("--batch: batch %s's own rows were dropped by retention at %s (GRIDBATCH_KEEP_BATCHES); export the published values with --kind %s",
				batchID, b.RowsDroppedAt.UTC().Format(time.RFC3339), b.Kind)
		}
		kind, step, batch = b.Kind, b.Step, &b
		if box == nil {
			box = &b.BBox
		}
		sel.what = "batch " + batchID
		attrs["gridbatch_batch_id"] = batchID
		attrs["gridbatch_batch_status"] = b.Status
	} else {
		sel.what = "the published values"
		if box == nil {
			ext, ok, err := st.PublishedExtent(ctx, kind, step)
			if err != nil {
				return sel, err
			}
			if !ok {
				return sel, fmt.Errorf("no published %s values at step %s: %s; run a %s batch at that step (a batch is published when it succeeds)",
					kind, strconv.FormatFloat(step, 'g', -1, 64), publishedSteps(ctx, st, kind), kind)
			}
			box = &ext
		}
	}
	spec, err := models.Spec(kind)
	if err != nil {
		return sel, fmt.Errorf("--kind: %w", err)
	}
	series := store.LayoutOf(spec)
	if batch != nil {
		series = batch.SeriesOf(spec)
	}
	scenarios := series.Names
	if scenario != "" {
		if !slices.Contains(series.Names, scenario) {
			return sel, fmt.Errorf("--scenario: unknown scenario %q of kind %s (known: %s)", scenario, kind, strings.Join(series.Names, ", "))
		}
		scenarios = []string{scenario}
	}
	l, err := grid.NewLattice(step)
	if err != nil {
		return sel, fmt.Errorf("--step: %w", err)
	}
	r, err := grid.NewRegion(l, *box, 0)
	if err != nil {
		return sel, fmt.Errorf("--bbox: %w", err)
	}
	attrs["gridbatch_kind"] = kind
	attrs["gridbatch_step"] = strconv.FormatFloat(step, 'g', -1, 64)
	attrs["gridbatch_bbox"] = r.BBox.String()
	attrs["gridbatch_selection"] = sel.what
	attrs["history"] = time.Now().UTC().Format(time.RFC3339) + " enqueuer export"
	if batch != nil {
		if err := provenanceAttributes(ctx, st, *batch, attrs); err != nil {
			return sel, err
		}
	}
	sel.query = store.ExportQuery{BatchID: batchID, Kind: kind, Step: step, Region: r, Scenario: scenario}
	sel.layout = export.Layout{Kind: kind, Units: spec.Units, LongName: spec.LongName, Region: r, Scenarios: scenarios,
		FirstYear: series.FirstYear, Years: series.Years, Attributes: attrs}
	return sel, nil
}
