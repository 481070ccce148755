//go:build integration

package integration

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/testutil"
)

// trustModel is a user's Python model: the reference P(H) plus SHIFT,
// which the test edits between batches.
const trustModel = `import gridbatch_model, reference_model
SHIFT = 0.0
def compute(cells):
    return reference_model.ph(cells) + SHIFT
gridbatch_model.serve(compute)
`

// TestResultsYouCanTrust runs a user's Python model with the real binaries:
// its batch's provenance (model file digest = sha256sum, in status --json and
// in the NetCDF and Parquet exports alike); an edited model file changes the
// next batch's digest; a value out of the declared range holds the batch
// (exit 7, the cell, year and value in status) until it is published
// --despite-checks; diff's figures equal those computed from two exports.
func TestResultsYouCanTrust(t *testing.T) {
	t.Parallel()
	dir := testutil.ModelDir(t) // the model runs as nobody under a root worker
	repo, err := filepath.Abs("../..")
	require.NoError(t, err)
	script := filepath.Join(dir, "model.py")
	require.NoError(t, os.WriteFile(script, []byte(trustModel), 0o644))
	models := filepath.Join(dir, "models.yaml")
	require.NoError(t, os.WriteFile(models, []byte(`models:
  - kind: heat
    command: ["/usr/bin/python3", "model.py"]
    env: {PYTHONPATH: "`+filepath.Join(repo, "sdk", "python")+`:`+filepath.Join(repo, "examples", "python")+`"}
    checks:
      range: [0, 2]
`), 0o644))
	c := newCluster(t, "GRIDBATCH_MODELS_FILE="+models)
	_, errOut, code := c.Enqueuer("migrate")
	require.Equal(t, 0, code, errOut)
	const bbox = "126,37,127,37.5" // 20 × 10 cells at 0.05
	_, errOut, code = c.Enqueuer("seed", "--bbox", bbox, "--step", "0.05")
	require.Equal(t, 0, code, errOut)
	w := c.Worker()
	// edit rewrites the model file with SHIFT, and restarts the worker: a
	// running model process keeps the code it loaded.
	edit := func(shift string) {
		require.NoError(t, os.WriteFile(script, []byte(strings.Replace(trustModel, "SHIFT = 0.0", "SHIFT = "+shift, 1)), 0o644))
		w.Signal(syscall.SIGTERM)
		w.Wait(t, 30*time.Second)
		w = c.Worker()
	}
	run := func() (string, int) {
		out, errOut, code := c.Enqueuer("run", "--kind", "heat", "--bbox", bbox, "--step", "0.05", "--wait")
		require.NotEmpty(t, out, errOut)
		return strings.SplitN(out, "\n", 2)[0], code
	}
	status := func(id string) (map[string]any, int) {
		out, errOut, code := c.Enqueuer("status", id, "--json")
		require.NotEmpty(t, out, errOut)
		var doc map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &doc))
		return doc, code
	}
	sha256sum := func(path string) string {
		out, err := exec.Command("sha256sum", path).Output()
		require.NoError(t, err)
		return strings.Fields(string(out))[0]
	}

	first, code := run()
	require.Equal(t, 0, code)
	doc, code := status(first)
	require.Equal(t, 0, code)
	prov := doc["provenance"].(map[string]any)
	model := prov["model"].(map[string]any)
	files := map[string]string{}
	for _, f := range model["files"].([]any) {
		f := f.(map[string]any)
		files[f["path"].(string)] = f["sha256"].(string)
	}
	require.Equal(t, sha256sum(script), files[script], "the model file's digest is its sha256sum")
	sdk := filepath.Join(repo, "sdk", "python", "gridbatch_model.py")
	require.Equal(t, sha256sum(sdk), files[sdk], "and the SDK file's")
	require.Regexp(t, "^[0-9a-f]{64}$", model["digest"])
	inputs := prov["inputs"].(map[string]any)
	require.Regexp(t, "^[0-9a-f]{64}$", inputs["sha256"])
	require.EqualValues(t, 200, inputs["cells"])
	require.NotEmpty(t, prov["processes"], "the chunks' worker and model process")
	require.NotEqualValues(t, 0, prov["processes"].([]any)[0].(map[string]any)["model_pid"])

	t.Run("the exports carry the provenance of status --json", func(t *testing.T) {
		nc := filepath.Join(dir, "first.nc")
		_, errOut, code := c.Enqueuer("export", "--batch", first, "--out", nc)
		require.Equal(t, 0, code, errOut)
		pq := filepath.Join(dir, "first.parquet")
		_, errOut, code = c.Enqueuer("export", "--batch", first, "--out", pq)
		require.Equal(t, 0, code, errOut)
		for name, attrs := range map[string]map[string]string{
			"netcdf":  testutil.ReadNetCDF(t, nc, "heat", "ssp245", 2050).Attrs,
			"parquet": testutil.ReadParquet(t, pq).Metadata,
		} {
			var got map[string]any
			require.NoError(t, json.Unmarshal([]byte(attrs["gridbatch_provenance"]), &got), name)
			require.Equal(t, prov, got, name)
			require.Equal(t, model["digest"], attrs["gridbatch_model_digest"], name)
			require.Equal(t, inputs["sha256"], attrs["gridbatch_inputs_sha256"], name)
			require.Contains(t, attrs["source"], "gridbatch", name)
			require.Contains(t, attrs["history"], first, name)
		}
	})

	// An edited model file: the next batch records a new digest.
	edit("0.015625")
	second, code := run()
	require.Equal(t, 0, code)
	doc2, _ := status(second)
	model2 := doc2["provenance"].(map[string]any)["model"].(map[string]any)
	require.Equal(t, model["digest"], model2["digest"], "the declaration did not change")
	for _, f := range model2["files"].([]any) {
		f := f.(map[string]any)
		if f["path"] == script {
			require.Equal(t, sha256sum(script), f["sha256"])
			require.NotEqual(t, files[script], f["sha256"], "the edited file's digest changed")
		}
	}
	require.Equal(t, inputs["sha256"], doc2["provenance"].(map[string]any)["inputs"].(map[string]any)["sha256"], "the inputs did not change")

	t.Run("verify says the model changed, and recomputes bit for bit", func(t *testing.T) {
		out, errOut, code := c.Enqueuer("verify", first, "--cells", "20")
		require.Equal(t, 1, code, "the edited model computes other values: %s %s", out, errOut)
		require.Contains(t, out, "model file "+script+": CHANGED since the batch")
		require.Contains(t, out, "inputs: unchanged")
		require.Contains(t, out, "recomputed 20 cells")
		out, errOut, code = c.Enqueuer("verify", second, "--cells", "all")
		require.Equal(t, 0, code, "%s %s", out, errOut)
		require.Contains(t, out, "model file "+script+": unchanged")
		require.Contains(t, out, "recomputed 200 cells: 48000 values of 48000 the same bit for bit, 0 differ")
	})

	t.Run("diff equals what two exports say", func(t *testing.T) {
		out, errOut, code := c.Enqueuer("diff", second, first, "--from", "2030", "--to", "2040", "--json")
		require.Equal(t, 0, code, errOut)
		var rep struct {
			Series []struct {
				Series        string  `json:"series"`
				CellsCompared int64   `json:"cells_compared"`
				CellsChanged  int64   `json:"cells_changed"`
				MaxAbs        float64 `json:"max_abs_change"`
				P99           float64 `json:"p99_abs_change"`
				Largest       []struct {
					GridID int64 `json:"grid_id"`
					Year   int   `json:"year"`
				} `json:"largest"`
			} `json:"series"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &rep))
		type cellYear struct {
			id   int64
			sc   string
			year int
		}
		read := func(id string) map[cellYear]float64 {
			p := filepath.Join(dir, id+".parquet")
			_, errOut, code := c.Enqueuer("export", "--batch", id, "--out", p)
			require.Equal(t, 0, code, errOut)
			m := map[cellYear]float64{}
			for _, r := range testutil.ReadParquet(t, p).Rows {
				m[cellYear{r.GridID, r.Scenario, r.Year}] = r.Value
			}
			return m
		}
		a, b := read(second), read(first)
		require.Len(t, rep.Series, 3)
		for _, s := range rep.Series {
			changed := map[int64]bool{}
			cells := map[int64]bool{}
			var abs []float64
			for k, va := range a {
				if k.sc != s.Series || k.year < 2030 || k.year > 2040 {
					continue
				}
				id := k.id
				cells[id] = true
				d := math.Abs(va - b[k])
				abs = append(abs, d)
				if va != b[k] {
					changed[id] = true
				}
			}
			slices.Sort(abs)
			require.EqualValues(t, len(cells), s.CellsCompared, s.Series)
			require.EqualValues(t, len(changed), s.CellsChanged, s.Series)
			require.Equal(t, abs[len(abs)-1], s.MaxAbs, s.Series)
			p99 := abs[int(math.Ceil(0.99*float64(len(abs))))-1]
			require.Positive(t, p99, "the edit changed the values")
			require.InEpsilon(t, p99, s.P99, 1e-3, s.Series)
			require.NotEmpty(t, s.Largest)
		}
	})

	t.Run("a value out of range holds the batch until published despite its checks", func(t *testing.T) {
		edit("1.75")
		held, code := run()
		require.Equal(t, 7, code, "run --wait exits 7 for a held batch")
		out, _, code := c.Enqueuer("status", held)
		require.Equal(t, 7, code)
		require.Contains(t, out, "FAILED range")
		require.Regexp(t, `values above 2, largest 2\.[0-9]+ at cell [0-9]+ ssp585 2100`, out)
		doc, _ := status(held)
		require.Equal(t, "held", doc["status"])
		require.Nil(t, doc["published_at"])
		_, errOut, code := c.Enqueuer("publish", held)
		require.Equal(t, 7, code, errOut)
		require.Contains(t, errOut, "--despite-checks")
		_, errOut, code = c.Enqueuer("publish", held, "--despite-checks", "--reason", "a test of the gate")
		require.Equal(t, 0, code, errOut)
		doc, code = status(held)
		require.Equal(t, 0, code)
		require.Equal(t, "succeeded", doc["status"])
		require.NotNil(t, doc["published_at"])
		require.Equal(t, "a test of the gate", doc["publish_reason"])
		require.NotEmpty(t, doc["published_by"])
	})
}
