#!/usr/bin/python3
"""Generate extremes.json: reference values of the grid model kernels over the
whole range of parameters users' inputs can take, computed in high precision
with Python's decimal module (no SciPy needed).

Run from the repository root with any Python 3:

    /usr/bin/python3 internal/grid/testdata/gen_extremes.py > internal/grid/testdata/extremes.json

It is independent of fixtures.json (SciPy's own values at the seeded
parameters) and of the Go kernels: each value is the exact mathematical
result, rounded once to a float, of what scipy.stats.genextreme computes,
given the floats scipy itself rounds on the way:

  mu = mu0 + rate*(year - 2020)     in floats (the product rounded on its own)
  z  = (35 - mu)/sigma, w = xi*z     in floats: near the end of the support the
                                     result depends on their last bits, and scipy
                                     (like the Go kernel) rounds exactly these
  ph:      P = 1 - exp(-exp(log1p(w)/-xi))   (exp(-z) inside when xi == 0), exact;
           0 above the upper end of the support (xi < 0, z >= 1/-xi, in floats),
           1 below the lower end (xi > 0, z <= 1/-xi)
  hazard:  mu + sigma*expm1(xi*g)/xi, g = -log(-log(0.99))  (mu + sigma*g when
           xi == 0), the part after mu exact

Cases cover xi of both signs, tiny and 0, sigma from 1e-6 to 1e4, 35 degC from
far below to far above the location, and series that cross the end of the
support (z at the support's end in some year).
"""

import json
import math
import sys
from decimal import Decimal, getcontext, localcontext

getcontext().prec = 90

SCENARIOS = [("ssp126", 0.012), ("ssp245", 0.028), ("ssp585", 0.055)]
FIRST_YEAR, LAST_YEAR = 2021, 2100
THRESHOLD = 35.0
D = Decimal


def log1p(w):
    """log(1 + w) for the float w > -1, exactly to the context's precision."""
    dw = D(w)
    if abs(w) < 1e-20:
        total, term, n = D(0), dw, 1
        while True:
            total += term / n
            n += 1
            term *= -dw
            if abs(term) < abs(dw) * D("1e-95"):
                return total
    with localcontext() as ctx:
        ctx.prec = 120
        return (1 + dw).ln()


def survival(loglog):
    """1 - exp(-exp(loglog)) rounded to a float, for the Decimal loglog."""
    if loglog > 800:
        return 1.0
    if loglog < -800:
        return 0.0  # below the smallest subnormal
    t = loglog.exp()
    if t > 50:
        return 1.0
    if t < D("1e-5"):
        total, term, n = D(0), t, 1
        while abs(term) > t * D("1e-95"):
            total += term
            n += 1
            term = -term * t / n
        return float(total)
    return float(1 - (-t).exp())


def ph(mu0, sigma, xi, rate):
    out = []
    bound = 1 / -xi if xi != 0 else None
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        mu = mu0 + rate * (year - 2020)
        z = (THRESHOLD - mu) / sigma
        if xi < 0 and z >= bound:
            out.append(0.0)
            continue
        if xi > 0 and z <= bound:
            out.append(1.0)
            continue
        if xi == 0:
            loglog = -D(z)
        else:
            w = xi * z
            if w <= -1:  # rounding just inside the support: the limit
                out.append(0.0 if xi < 0 else 1.0)
                continue
            loglog = log1p(w) / -D(xi)
        out.append(survival(loglog))
    return out


def hazard(mu0, sigma, xi, rate):
    g = -((-log1p(-0.01)).ln())
    dxi = D(xi)
    if xi == 0:
        q = g
    else:
        x = dxi * g
        total, term, n = D(0), x, 1  # expm1(x) by its series, |x| < 8
        while abs(term) > D("1e-95"):
            total += term
            n += 1
            term = term * x / n
        q = total / dxi
    out = []
    for year in range(FIRST_YEAR, LAST_YEAR + 1):
        mu = mu0 + rate * (year - 2020)
        out.append(float(D(mu) + D(sigma) * q))
    return out


def cases():
    xis = [-1.5, -0.5, -0.12, -1e-4, -1e-9, -1e-13, 0.0, 1e-13, 1e-9, 1e-4, 0.12, 0.5, 1.5]
    sigmas = [1e-6, 1.6, 1e4]
    n = 0
    for xi in xis:
        for sigma in sigmas:
            # 35 degC at s scale units above the year-2060 location: the
            # series sweeps the distribution's body or one of its tails.
            for s in (-3.0, 0.7, 6.0):
                name, rate = SCENARIOS[n % 3]
                n += 1
                mu0 = THRESHOLD - sigma * s - rate * 40
                yield dict(label="xi %g sigma %g, 35 at %g sigma above mu(2060)" % (xi, sigma, s),
                           mu0=mu0, sigma=sigma, xi=xi, scenario=name, rate=rate, hazard=s == 0.7)
            if xi != 0:
                # The end of the support, 1/-xi in z, reached in 2060.
                name, rate = SCENARIOS[n % 3]
                n += 1
                mu0 = THRESHOLD - sigma / -xi - rate * 40
                yield dict(label="xi %g sigma %g, the end of the support in 2060" % (xi, sigma),
                           mu0=mu0, sigma=sigma, xi=xi, scenario=name, rate=rate, hazard=False)
    # Far tails: P underflowing towards 0, P rounding to 1.
    for xi, sigma, mu0 in [(-0.12, 1.6, 0.0), (0.12, 1.6, 0.0), (0.0, 1.6, -10.0), (0.0, 0.5, 10.0),
                           (0.0, 1.6, 80.0), (0.3, 0.01, 35.5), (-0.3, 0.01, 34.99)]:
        name, rate = SCENARIOS[n % 3]
        n += 1
        yield dict(label="tail: xi %g sigma %g mu0 %g" % (xi, sigma, mu0),
                   mu0=mu0, sigma=sigma, xi=xi, scenario=name, rate=rate, hazard=False)


def main():
    out = []
    for c in cases():
        # The hazard level is affine in mu: one case per shape and scale.
        kinds = (("ph", ph), ("hazard", hazard)) if c.pop("hazard") else (("ph", ph),)
        for kind, fn in kinds:
            values = fn(c["mu0"], c["sigma"], c["xi"], c["rate"])
            for v in values:
                if not math.isfinite(v):
                    raise SystemExit("non-finite %s value %r for %r" % (kind, v, c))
            out.append(dict(c, kind=kind, values=values))
    sys.stdout.write('{\n "generator": "internal/grid/testdata/gen_extremes.py",\n "cases": [\n')
    sys.stdout.write(",\n".join("  " + json.dumps(c) for c in out))
    sys.stdout.write("\n ]\n}\n")


if __name__ == "__main__":
    main()
