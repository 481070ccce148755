#!/usr/bin/python3
"""Generate fixtures.json, the scipy reference values for the grid model kernels.

Run from the repository root with Debian's Python and SciPy
(apt-get install -y python3-scipy):

    /usr/bin/python3 internal/grid/testdata/gen_fixtures.py > internal/grid/testdata/fixtures.json

Each case is one (cell, scenario, kind) series of 80 yearly values for
2021..2100, computed with scipy.stats.genextreme(c=-xi, loc=mu, scale=sigma)
where mu = mu0 + rate*(year - 2020):
  kind "ph":     .sf(35.0)   probability that the year's max exceeds 35 degC
  kind "hazard": .isf(0.01)  100-year return level
Cases with "reference": true take mu0, sigma, xi from the reference model
formulas at the cell centre (lat, lon); the Go tests check ReferenceParams
against them. The other cases use made-up parameters to reach the edges of
the support (probability exactly 0 or 1) and the Gumbel/Frechet shapes.
Floats are printed with repr, i.e. full precision.
"""

import json
import math
import sys

import scipy
from scipy.stats import genextreme

SCENARIOS = [("ssp126", 0.012), ("ssp245", 0.028), ("ssp585", 0.055)]
FIRST_YEAR, LAST_YEAR = 2021, 2100
THRESHOLD = 35.0
EXCEEDANCE = 0.01


def reference_params(lat, lon):
    """The reference model, in the same operation order as grid.ReferenceParams."""
    a = abs(lat) - 30
    mu0 = 34.0 - 0.35 * a + 0.8 * math.cos(lon * math.pi / 180)
    sigma = 1.6 + 0.02 * abs(a)
    return mu0, sigma, -0.12


def centre(step, row, col):
    """Centre of a lattice cell, as grid.Lattice.Cell computes it."""
    return -90 + (row + 0.5) * step, -180 + (col + 0.5) * step


def series(kind, mu0, sigma, xi, rate):
    out = []
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        mu = mu0 + rate * (year - 2020)
        dist = genextreme(c=-xi, loc=mu, scale=sigma)
        if kind == "ph":
            v = dist.sf(THRESHOLD)
        else:
            v = dist.isf(EXCEEDANCE)
        v = float(v)
        if not math.isfinite(v):
            raise SystemExit(f"non-finite value {v} for {kind} mu={mu} sigma={sigma} xi={xi}")
        out.append(v)
    return out


def main():
    step = 0.05
    # (label, lat, lon) at lattice centres, all with reference parameters.
    reference_cells = [
        ("korea south-west corner", *centre(step, 2460, 6080)),   # 33.025N 124.025E
        ("korea seoul", *centre(step, 2550, 6139)),               # 37.525N 126.975E
        ("korea north-east corner", *centre(step, 2579, 6239)),  # 38.975N 131.975E
        ("arctic cold, P near 0", *centre(step, 3599, 3600)),     # 89.975N 0.025E
        ("antarctic cold, P near 0", *centre(step, 5, 7100)),     # 89.725S 175.025E
        ("subarctic, P small", *centre(step, 3000, 3000)),        # 60.025N 29.975W
        ("tropics, P rounds to 1", *centre(step, 1800, 3600)),    # 0.025N 0.025E
        ("tropic of cancer, P near 1", *centre(step, 2200, 3600)),  # 20.025N 0.025E
        ("subtropics south", *centre(step, 1200, 1234)),          # 29.975S 118.275W
    ]
    # (label, mu0, sigma, xi) made-up parameters for the support edges.
    synthetic = [
        ("35 above the upper bound all years, P exactly 0", 20.0, 1.0, -0.2),
        ("crosses the upper bound mid-century, P 0 then tiny", 25.0, 1.0, -0.12),
        ("gumbel xi 0", 30.0, 2.0, 0.0),
        ("frechet xi 0.1", 31.0, 1.5, 0.1),
        ("frechet below the lower bound, P exactly 1", 41.0, 1.0, 0.2),
        ("tiny shape xi -1e-6", 33.0, 1.7, -1e-6),
    ]
    cases = []
    for label, lat, lon in reference_cells:
        mu0, sigma, xi = reference_params(lat, lon)
        for kind in ("ph", "hazard"):
            for name, rate in SCENARIOS:
                cases.append(dict(label=label, reference=True, lat=lat, lon=lon,
                                  mu0=mu0, sigma=sigma, xi=xi, scenario=name, rate=rate,
                                  kind=kind, values=series(kind, mu0, sigma, xi, rate)))
    for label, mu0, sigma, xi in synthetic:
        for kind in ("ph", "hazard"):
            for name, rate in SCENARIOS:
                cases.append(dict(label=label, reference=False, lat=0.0, lon=0.0,
                                  mu0=mu0, sigma=sigma, xi=xi, scenario=name, rate=rate,
                                  kind=kind, values=series(kind, mu0, sigma, xi, rate)))
    doc = dict(
        generator="internal/grid/testdata/gen_fixtures.py",
        scipy=scipy.__version__,
        cases=cases,
    )
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
