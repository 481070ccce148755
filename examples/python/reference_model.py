"""The reference models `ph` and `hazard`, in numpy, as a gridbatch model process.

Usage (by the worker, declared in examples/models.yaml):

    /usr/bin/python3 python/reference_model.py ph|hazard

It computes what the built-in Go kinds compute (internal/grid/kernel.go), with
the same formulas in the same order, so the results agree to 1e-12 relative
or better. For year y (2021..2100 in examples/models.yaml) and scenario s with
warming rate r (ssp126 0.012, ssp245 0.028, ssp585 0.055 degC/yr), the GEV
location is mu = mu0 + r*(y - 2020), with scale sigma and shape xi (Coles' sign):

- ph:     P(H) = 1 - F(35), the probability that the year's max exceeds 35 degC:
          z = (35 - mu)/sigma, t = exp(log1p(xi*z)/-xi) (exp(-z) when xi == 0),
          P = -expm1(-t); exactly 0 above the upper end of the support
          (xi < 0, z >= -1/xi) and exactly 1 below the lower end (xi > 0, z <= -1/xi).
- hazard: the 100-year return level mu + sigma*expm1(xi*g)/xi (mu + sigma*g when
          xi == 0), g = -log(-log1p(-0.01)).

The layout is the models file's alone: the worker sends it at the start,
setup() refuses one this model cannot compute (an input other than mu0, sigma
and xi missing, a scenario without a warming rate), and ph and hazard compute
the series and years each chunk's context names. Test it without a worker:

    /usr/bin/python3 -c 'import sys; sys.path[:0] = ["examples/python", "sdk/python"]
    import reference_model as m, gridbatch_model as g
    for kind, f in (("ph_py", m.ph), ("hazard_py", m.hazard)):
        g.check(f, kind=kind, models="examples/models.yaml", setup=m.setup)'
"""

import math
import os
import sys

import numpy as np

try:
    import gridbatch_model
except ImportError:  # running from a checkout: the SDK is in ../../sdk/python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))
    import gridbatch_model

INPUTS = ["mu0", "sigma", "xi"]  # the inputs it reads
SERIES = ["ssp126", "ssp245", "ssp585"]  # the scenarios it knows
RATES = np.array([0.012, 0.028, 0.055])  # degC/yr, in SERIES order
RATE = dict(zip(SERIES, RATES.tolist()))
BASE_YEAR = 2020
# The layout of examples/models.yaml, which ph(cells) and hazard(cells) compute
# when called without a context (as older models that wrap them do).
FIRST_YEAR, YEARS = 2021, 80
DEFAULT = gridbatch_model.Layout("reference", tuple(INPUTS), tuple(SERIES), FIRST_YEAR, YEARS)
THRESHOLD = 35.0
EXCEEDANCE_PROB = 0.01
GUMBEL_RETURN = -math.log(-math.log1p(-EXCEEDANCE_PROB))


def _params(kind, cells):
    """Return mu0, sigma, xi as (n, 1, 1) arrays; refuse invalid parameters like the Go kernel.

    Invalid parameters are gridbatch_model.Permanent: no retry fixes them, the
    worker splits the chunk around the cell at once.
    """
    mu0, sigma, xi = (np.asarray(cells[k], dtype=np.float64) for k in INPUTS)
    bad = ~(np.isfinite(mu0) & np.isfinite(sigma) & np.isfinite(xi) & (sigma > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise gridbatch_model.Permanent("compute %s: cell %d: invalid params mu0=%r sigma=%r xi=%r: want finite values and sigma > 0"
                         % (kind, int(cells["grid_id"][i]), float(mu0[i]), float(sigma[i]), float(xi[i])))
    return mu0[:, None, None], sigma[:, None, None], xi[:, None, None]


def setup(layout):
    """Refuse, at the start, a layout this model cannot compute."""
    missing = [name for name in INPUTS if name not in layout.inputs]
    unknown = [s for s in layout.series if s not in RATE]
    if missing or unknown:
        raise ValueError("the reference model reads inputs %s and knows scenarios %s; the models file declares "
                         "inputs %s and series %s" % (", ".join(INPUTS), ", ".join(SERIES),
                                                      ", ".join(layout.inputs), ", ".join(layout.series)))


def _location(mu0, layout):
    """mu0 + rate*(y - 2020), shape (n, series, years); the product rounded on its own, as in Go."""
    rates = np.array([RATE[s] for s in layout.series])
    dy = (layout.first_year + np.arange(layout.years) - BASE_YEAR).astype(np.float64)
    return mu0 + rates[None, :, None] * dy[None, None, :]


def ph(cells, context=None):
    """P(annual max > 35 degC), shape (n, len(series), years) (n, 3, 80 without a context)."""
    mu0, sigma, xi = _params("ph", cells)
    z = (THRESHOLD - _location(mu0, context or DEFAULT)) / sigma
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        bound = 1.0 / -xi  # the standardized end of the support
        loglog = np.where(xi == 0, -z, np.log1p(xi * z) / -xi)  # log(-log F)
        p = -np.expm1(-np.exp(loglog))
    p = np.where((xi < 0) & (z >= bound), 0.0, p)
    p = np.where((xi > 0) & (z <= bound), 1.0, p)
    return p


def hazard(cells, context=None):
    """The 100-year return level (degC), shape (n, len(series), years) (n, 3, 80 without a context)."""
    mu0, sigma, xi = _params("hazard", cells)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(xi != 0, np.expm1(xi * GUMBEL_RETURN) / xi, GUMBEL_RETURN)
    level = q * sigma
    return level + _location(mu0, context or DEFAULT)


KINDS = {"ph": ph, "hazard": hazard}


def main(argv):
    if len(argv) != 2 or argv[1] not in KINDS:
        sys.stderr.write("usage: %s ph|hazard\n" % os.path.basename(argv[0]))
        return 2
    gridbatch_model.serve(KINDS[argv[1]], setup=setup)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
