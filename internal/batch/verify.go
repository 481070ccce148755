package batch

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/gridbatch/gridbatch/internal/model"
	"github.com/gridbatch/gridbatch/internal/store"
)

// ModelChanges says, a line each, whether a model changed between was (a
// batch's provenance) and now: its declaration, and each program file.
func ModelChanges(was, now store.ModelProvenance) []string {
	var out []string
	if was.Digest == now.Digest {
		out = append(out, "model declaration: unchanged (sha256 "+now.Digest+")")
	} else {
		out = append(out, "model declaration: CHANGED since the batch (sha256 "+was.Digest+", now "+now.Digest+")")
	}
	for _, f := range was.Files {
		i := slices.IndexFunc(now.Files, func(g store.FileDigest) bool { return g.Path == f.Path })
		switch {
		case i < 0:
			out = append(out, "model file "+f.Path+": GONE or no longer named by the model")
		case now.Files[i].SHA256 != f.SHA256:
			out = append(out, "model file "+f.Path+": CHANGED since the batch (sha256 "+f.SHA256+", now "+now.Files[i].SHA256+")")
		default:
			out = append(out, "model file "+f.Path+": unchanged")
		}
	}
	for _, g := range now.Files {
		if !slices.ContainsFunc(was.Files, func(f store.FileDigest) bool { return f.Path == g.Path }) {
			out = append(out, "model file "+g.Path+": NEW since the batch")
		}
	}
	if was.BuiltinRevision != now.BuiltinRevision {
		out = append(out, fmt.Sprintf("built-in model: revision %s then, %s now", was.BuiltinRevision, now.BuiltinRevision))
	}
	return out
}

// VerifyResult is what Verify found.
type VerifyResult struct {
	Cells, Values, Same int
	// First are the first differences (at most 10).
	First []VerifyDiff
}

// VerifyDiff is one value that differs.
type VerifyDiff struct {
	GridID   int64
	Series   string
	Year     int
	Was, Now float64
}

// Verify recomputes up to n cells of batch b (spread evenly over its
// cells) with spec and c and compares each value with the batch's own
// rows bit for bit (NaN equal to NaN).
func Verify(ctx context.Context, st *store.Store, c Computer, spec model.Spec, b store.Batch, n int) (VerifyResult, error) {
	var res VerifyResult
	r, err := b.Region()
	if err != nil {
		return res, err
	}
	total := r.NumCells()
	every := max(1, total/max(n, 1))
	var ids []int64
	for i := 0; i < total && len(ids) < n; i += every {
		ids = append(ids, r.CellAt(i).GridID)
	}
	l := b.SeriesOf(spec)
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		cells, err := st.LoadCells(ctx, b.Step, chunk, spec.Inputs)
		if err != nil {
			return res, err
		}
		values, err := c.Compute(ctx, spec, "verify-"+b.ID, cells)
		if err != nil {
			return res, fmt.Errorf("recompute: %w", err)
		}
		if len(values) != len(chunk)*len(l.Names)*l.Years {
			return res, fmt.Errorf("recompute: %d values for %d cells; the model's series or years changed since the batch", len(values), len(chunk))
		}
		for i, id := range chunk {
			for j, name := range l.Names {
				was, err := st.ReadBatchSeries(ctx, b.ID, b.Step, id, name)
				if err != nil {
					return res, fmt.Errorf("cell %d %s of batch %s: %w", id, name, b.ID, err)
				}
				now := values[(i*len(l.Names)+j)*l.Years:][:l.Years]
				for y, v := range was.Values {
					res.Values++
					if math.Float64bits(v) == math.Float64bits(now[y]) || (v != v && now[y] != now[y]) {
						res.Same++
					} else if len(res.First) < 10 {
						res.First = append(res.First, VerifyDiff{GridID: id, Series: name, Year: l.FirstYear + y, Was: v, Now: now[y]})
					}
				}
			}
			res.Cells++
		}
	}
	return res, nil
}
