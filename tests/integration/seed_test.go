//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gridbatch/gridbatch/internal/grid"
	"github.com/gridbatch/gridbatch/internal/store"
	"github.com/gridbatch/gridbatch/internal/testutil"
)

func countCells(t *testing.T, db *testutil.DB) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM cell_params`).Scan(&n))
	return n
}

// requireOneLineError checks a failed command: exit 1, nothing on stdout, one
// line on stderr containing want.
func requireOneLineError(t *testing.T, stdout, stderr string, code int, want string) {
	t.Helper()
	require.Equal(t, 1, code, "stderr: %s", stderr)
	require.Empty(t, stdout)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
	require.True(t, strings.HasPrefix(stderr, "enqueuer: "), "stderr: %q", stderr)
	require.Contains(t, stderr, want)
}

func TestSeedCommand(t *testing.T) {
	db := testutil.NewEmptyDB(t)
	env := testutil.Env(testutil.NewRedis(t), db)
	korea := []string{"--bbox", "124,33,132,39", "--step", "0.05"}

	t.Run("refuses without the schema", func(t *testing.T) {
		out, errOut, code := runBin(t, env, "enqueuer", append([]string{"seed"}, korea...)...)
		requireOneLineError(t, out, errOut, code, "run: enqueuer migrate")
	})

	_, errOut, code := runBin(t, env, "enqueuer", "migrate")
	require.Equal(t, 0, code, errOut)

	t.Run("first seed writes 19,200 cells", func(t *testing.T) {
		out, errOut, code := runBin(t, env, "enqueuer", append([]string{"seed"}, korea...)...)
		require.Equal(t, 0, code, errOut)
		require.Empty(t, out)
		require.Equal(t, "seeded 19200 new cells (19200 in bbox 124,33,132,39 at step 0.05; 0 already present)\n", errOut)
		require.Equal(t, 19200, countCells(t, db))
	})

	t.Run("second seed writes 0", func(t *testing.T) {
		out, errOut, code := runBin(t, env, "enqueuer", append([]string{"seed", "--json"}, korea...)...)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, "seeded 0 new cells (19200 in bbox 124,33,132,39 at step 0.05; 19200 already present)\n", errOut)
		var got map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Equal(t, map[string]any{"step": 0.05, "bbox": "124,33,132,39", "cells": 19200.0, "inserted": 0.0, "already_present": 19200.0}, got)
		require.Equal(t, 19200, countCells(t, db))
	})

	t.Run("the environment sets bbox and step", func(t *testing.T) {
		env := append(env[:len(env):len(env)], "GRIDBATCH_GRID_BBOX=124,33,125,34", "GRIDBATCH_GRID_STEP=0.1")
		_, errOut, code := runBin(t, env, "enqueuer", "seed")
		require.Equal(t, 0, code, errOut)
		require.Equal(t, "seeded 100 new cells (100 in bbox 124,33,125,34 at step 0.1; 0 already present)\n", errOut)
	})

	for _, tc := range []struct {
		name string
		args []string
		env  string
		want string
	}{
		{name: "step not a number", args: []string{"--step", "abc"}, want: `invalid value "abc" for flag -step`},
		{name: "step zero", args: []string{"--step", "0"}, want: "step 0: must be positive"},
		{name: "step negative", args: []string{"--step", "-0.05"}, want: "step -0.05: must be positive"},
		{name: "step not dividing 360", args: []string{"--step", "0.07"}, want: "step 0.07: 360/step must be a whole number"},
		{name: "step not dividing 360 from the environment", env: "GRIDBATCH_GRID_STEP=0.07", want: "step 0.07: 360/step must be a whole number"},
		{name: "bbox not four numbers", args: []string{"--bbox", "124,33,132"}, want: "want 4 comma-separated numbers"},
		{name: "bbox latitude outside range", args: []string{"--bbox", "124,33,132,91"}, want: "bbox lat_max 91 outside [-90,90]"},
		{name: "bbox longitude outside range", args: []string{"--bbox", "-181,33,132,39"}, want: "bbox lon_min -181 outside [-180,180]"},
		{name: "lon_min not less than lon_max", args: []string{"--bbox", "132,33,124,39"}, want: "bbox lon_min 132 must be less than lon_max 124"},
		{name: "lat_min not less than lat_max", args: []string{"--bbox", "124,39,132,33"}, want: "bbox lat_min 39 must be less than lat_max 33"},
		{name: "too many cells", args: []string{"--max-cells", "19199"}, want: "has 19,200 cells, more than the limit of 19,199 (GRIDBATCH_MAX_CELLS)"},
		{name: "no cell centre in the bbox", args: []string{"--bbox", "124.01,33.01,124.02,33.02"}, want: "contains no cell centre"},
	} {
		t.Run("bad input: "+tc.name, func(t *testing.T) {
			env, args := env[:len(env):len(env)], append([]string{"seed"}, korea...)
			if tc.env != "" {
				env, args = append(env, tc.env), []string{"seed", "--bbox", "124,33,132,39"}
			}
			out, errOut, code := runBin(t, env, "enqueuer", append(args, tc.args...)...)
			requireOneLineError(t, out, errOut, code, tc.want)
			require.Equal(t, 19200+100, countCells(t, db), "nothing written")
		})
	}

	t.Run("help teaches", func(t *testing.T) {
		out, _, code := runBin(t, env, "enqueuer", "seed", "--help")
		require.Equal(t, 0, code)
		require.Contains(t, out, "Usage: enqueuer seed")
		require.Contains(t, out, "idempotent")
		require.Contains(t, out, "Examples:\n  enqueuer seed --bbox 124,33,132,39 --step 0.05")
	})
}

// noSeriesLine is the no-series message results prints for cell; steps
// is what it says of the steps that hold values.
func noSeriesLine(kind string, cell grid.Cell, lat, lon, scenario, steps string) string {
	return fmt.Sprintf("enqueuer: no published %s series for cell %d (lat %s, lon %s) at step 0.05 scenario %s; %s; run a %s batch over it (a batch is published when it succeeds), or publish an ended one with 'enqueuer publish ID'\n",
		kind, cell.GridID, lat, lon, scenario, steps, kind)
}

func TestResultsCommand(t *testing.T) {
	db := testutil.NewDB(t)
	env := testutil.Env(testutil.NewRedis(t), db)
	ctx := context.Background()
	l, err := grid.NewLattice(0.05)
	require.NoError(t, err)
	seoul, err := l.CellAt(37.53, 127.02)
	require.NoError(t, err)
	query := []string{"results", "--kind", "ph", "--scenario", "ssp245", "--lat", "37.53", "--lon", "127.02"}

	t.Run("no series", func(t *testing.T) {
		out, errOut, code := runBin(t, env, "enqueuer", query...)
		require.Equal(t, 1, code)
		require.Empty(t, out)
		require.Equal(t, noSeriesLine("ph", seoul, "37.525", "127.025", "ssp245", "ph has no published values at any step"), errOut)

		south, err := l.CellAt(-33.86, 151.21)
		require.NoError(t, err)
		out, errOut, code = runBin(t, env, "enqueuer", "results", "--kind", "hazard", "--scenario", "ssp585", "--lat", "-33.86", "--lon", "151.21")
		require.Equal(t, 1, code)
		require.Empty(t, out)
		require.Equal(t, noSeriesLine("hazard", south, "-33.875", "151.225", "ssp585", "hazard has no published values at any step"), errOut)
	})

	// A series as a batch would write it: the ph model's values for the cell's reference inputs.
	series, err := grid.PH.Compute(ctx, []grid.Input{{GridID: seoul.GridID, Params: grid.ReferenceParams(seoul.Lat, seoul.Lon)}})
	require.NoError(t, err)
	values := series[1].Values
	require.Equal(t, "ssp245", series[1].Scenario)
	computed := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	testutil.PublishSeries(t, db.Pool, "ph", "ph-test-batch", store.StoredSeries{Step: 0.05, GridID: seoul.GridID,
		Scenario: "ssp245", FirstYear: 2021, Values: values, ComputedAt: computed})

	t.Run("year value lines at full precision", func(t *testing.T) {
		out, errOut, code := runBin(t, env, "enqueuer", query...)
		require.Equal(t, 0, code, errOut)
		require.Empty(t, errOut)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		require.Len(t, lines, 80)
		for i, line := range lines {
			fields := strings.Fields(line)
			require.Len(t, fields, 2, "line %q", line)
			require.Equal(t, strconv.Itoa(2021+i), fields[0])
			v, err := strconv.ParseFloat(fields[1], 64)
			require.NoError(t, err)
			require.Equal(t, values[i], v, "year %s: the printed value round-trips exactly", fields[0])
		}
	})

	t.Run("json", func(t *testing.T) {
		out, errOut, code := runBin(t, env, "enqueuer", append(query, "--json")...)
		require.Equal(t, 0, code, errOut)
		require.Equal(t, 1, strings.Count(out, "\n"), "one document")
		var got struct {
			Kind        string    `json:"kind"`
			Scenario    string    `json:"scenario"`
			Step        float64   `json:"step"`
			GridID      int64     `json:"grid_id"`
			Lat         float64   `json:"lat"`
			Lon         float64   `json:"lon"`
			BatchID     string    `json:"batch_id"`
			ComputedAt  time.Time `json:"computed_at"`
			ModelDigest string    `json:"model_digest"`
			Years       []int     `json:"years"`
			Values      []float64 `json:"values"`
		}
		dec := json.NewDecoder(strings.NewReader(out))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&got), out)
		require.Equal(t, "ph", got.Kind)
		require.Equal(t, "ssp245", got.Scenario)
		require.Equal(t, 0.05, got.Step)
		require.Equal(t, seoul.GridID, got.GridID)
		require.Equal(t, seoul.Lat, got.Lat)
		require.Equal(t, seoul.Lon, got.Lon)
		require.Equal(t, "ph-test-batch", got.BatchID)
		require.True(t, computed.Equal(got.ComputedAt), "computed_at %s", got.ComputedAt)
		require.Len(t, got.Years, 80)
		require.Equal(t, 2021, got.Years[0])
		require.Equal(t, 2100, got.Years[79])
		require.Equal(t, values, got.Values)
	})

	t.Run("other scenario of the same cell has no series", func(t *testing.T) {
		_, errOut, code := runBin(t, env, "enqueuer", "results", "--kind", "ph", "--scenario", "ssp126", "--lat", "37.53", "--lon", "127.02")
		require.Equal(t, 1, code)
		require.Equal(t, noSeriesLine("ph", seoul, "37.525", "127.025", "ssp126", "ph has no published values at any step"), errOut)
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown scenario", []string{"--kind", "ph", "--scenario", "ssp370", "--lat", "37.53", "--lon", "127.02"},
			`unknown scenario "ssp370" (known: ssp126, ssp245, ssp585)`},
		{"unknown kind", []string{"--kind", "risk", "--scenario", "ssp245", "--lat", "37.53", "--lon", "127.02"},
			`--kind: unknown model kind "risk" (known: hazard, ph)`},
		{"no kind", []string{"--scenario", "ssp245", "--lat", "37.53", "--lon", "127.02"}, "--kind is required"},
		{"no lat", []string{"--kind", "ph", "--scenario", "ssp245", "--lon", "127.02"}, "--lat is required"},
		{"lat not a number", []string{"--kind", "ph", "--scenario", "ssp245", "--lat", "north", "--lon", "127.02"}, `--lat "north"`},
		{"lon outside range", []string{"--kind", "ph", "--scenario", "ssp245", "--lat", "37.53", "--lon", "190"}, "lon 190 outside [-180,180]"},
		{"bad step", []string{"--kind", "ph", "--scenario", "ssp245", "--lat", "37.53", "--lon", "127.02", "--step", "0.07"}, "step 0.07: 360/step must be a whole number"},
	} {
		t.Run("bad input: "+tc.name, func(t *testing.T) {
			out, errOut, code := runBin(t, env, "enqueuer", append([]string{"results"}, tc.args...)...)
			requireOneLineError(t, out, errOut, code, tc.want)
		})
	}

	t.Run("help teaches", func(t *testing.T) {
		out, _, code := runBin(t, env, "enqueuer", "results", "--help")
		require.Equal(t, 0, code)
		require.Contains(t, out, "Usage: enqueuer results (--kind KIND | --batch ID)")
		require.Contains(t, out, "Examples:\n  enqueuer results --kind ph --scenario ssp245")
	})
}
