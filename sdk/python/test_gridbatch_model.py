"""Tests of gridbatch_model and examples/python/reference_model.py, driven like the worker.

Run from the repository root:

    /usr/bin/python3 -m unittest discover -s sdk/python

Each test starts a model process with the protocol pipes on fds 3 (requests)
and 4 (replies), as docs/model-protocol.md says, and speaks the protocol to it
with an implementation of the frames written here, independent of the SDK's.
"""

import contextlib
import fcntl
import io
import json
import math
import os
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
REFERENCE = os.path.join(ROOT, "examples", "python", "reference_model.py")
FIXTURES = os.path.join(ROOT, "internal", "grid", "testdata", "fixtures.json")
PYTHON = "/usr/bin/python3"

HELLO, READY, CHUNK, RESULT, ERROR = 1, 2, 3, 4, 5
INPUTS = ["mu0", "sigma", "xi"]
SERIES = ["ssp126", "ssp245", "ssp585"]
RATES = {"ssp126": 0.012, "ssp245": 0.028, "ssp585": 0.055}
YEARS, FIRST_YEAR = 80, 2021
TIMEOUT = 30.0  # seconds to wait for any one reply
REL = 1e-12


# ---------------------------------------------------------------------------
# The formulas, one value at a time with the math module.


def location(mu0, rate, year):
    return mu0 + rate * (year - 2020)


def ph_value(mu0, sigma, xi, rate, year):
    z = (35.0 - location(mu0, rate, year)) / sigma
    if xi < 0 and z >= 1 / -xi:
        return 0.0
    if xi > 0 and z <= 1 / -xi:
        return 1.0
    t = math.exp(-z) if xi == 0 else math.exp(math.log1p(xi * z) / -xi)
    return -math.expm1(-t)


def hazard_value(mu0, sigma, xi, rate, year):
    g = -math.log(-math.log1p(-0.01))
    q = g if xi == 0 else math.expm1(xi * g) / xi
    return q * sigma + location(mu0, rate, year)


VALUE = {"ph": ph_value, "hazard": hazard_value}


def close(a, b, rel=REL):
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


def seed_params(lat, lon):
    a = abs(lat) - 30
    return 34.0 - 0.35 * a + 0.8 * math.cos(lon * math.pi / 180), 1.6 + 0.02 * abs(a), -0.12


# Cells (grid_id, lat, lon, mu0, sigma, xi): lattice cells with the seed's
# parameters, and made-up ones reaching both ends of the support and the
# Gumbel (xi = 0) and Frechet (xi > 0) shapes.
def test_cells():
    cells = []
    for gid, (lat, lon) in enumerate([(33.025, 124.025), (37.575, 126.975), (38.975, 131.975),
                                      (78.0, 15.0), (-75.0, 0.0), (60.0, 100.0), (5.0, 20.0),
                                      (-30.0, -60.0), (0.025, -179.975)]):
        cells.append((1000 + gid, lat, lon) + seed_params(lat, lon))
    cells += [
        (1, 10.0, 10.0, 20.0, 1.0, -0.5),   # z >= -1/xi every year: P exactly 0
        (2, 10.0, 10.0, 33.9, 0.5, -0.5),   # crosses the upper end of the support
        (3, 10.0, 10.0, 40.0, 1.0, 0.5),    # z <= -1/xi every year: P exactly 1
        (4, 10.0, 10.0, 35.5, 1.0, 0.25),   # Frechet, crosses the lower end
        (5, 10.0, 10.0, 33.0, 2.0, 0.0),    # Gumbel
        (6, 10.0, 10.0, 34.9, 1.3, -1e-9),  # nearly Gumbel
        (7, -10.0, -10.0, 20.0, 3.0, 0.1),  # P near 0
    ]
    return cells


# ---------------------------------------------------------------------------
# Frames, written here on their own (not with the SDK's code).


def frame(ftype, meta, data=b""):
    raw = json.dumps(meta).encode("utf-8")
    return struct.pack("<IIQ", ftype, len(raw), len(data)) + raw + data


def chunk_frame(chunk_id, cells, columns=None):
    columns = columns or ["grid_id", "lat", "lon"] + INPUTS
    n = len(cells)
    data = b"".join(
        struct.pack("<%d%s" % (n, "q" if k == 0 else "d"), *[c[k] for c in cells]) for k in range(len(columns)))
    return frame(CHUNK, {"chunk": chunk_id, "n": n, "columns": columns}, data)


def hello_meta(kind="ph_py", **over):
    meta = {"protocol": 1, "kind": kind, "inputs": INPUTS, "series": SERIES, "first_year": FIRST_YEAR,
            "years": YEARS}
    meta.update(over)
    return meta


class Model:
    """A model process started like the worker starts it, pipes on fds 3 and 4."""

    def __init__(self, argv, on_3_4=True, env=None, tmp=None):
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        self.out = tempfile.TemporaryFile(dir=tmp)
        self.err = tempfile.TemporaryFile(dir=tmp)
        fds = (3, 4) if on_3_4 else (req_r, rep_w)
        full_env = dict(os.environ)
        full_env.update({"GRIDBATCH_MODEL_FDS": "%d,%d" % fds, "GRIDBATCH_MODEL_KIND": "test",
                         "GRIDBATCH_MODEL_PROTOCOL": "1", "PYTHONPATH": HERE})
        full_env.update(env or {})
        if on_3_4:
            # The child gets the pipes on exactly fds 3 and 4, as from the worker;
            # each goes through a high fd first so that dup2 never clobbers the
            # other one.
            def place():
                a = fcntl.fcntl(req_r, fcntl.F_DUPFD_CLOEXEC, 10)
                b = fcntl.fcntl(rep_w, fcntl.F_DUPFD_CLOEXEC, 10)
                os.dup2(a, 3)  # inheritable
                os.dup2(b, 4)
            kw = {"preexec_fn": place, "close_fds": False}  # os.pipe fds are close-on-exec
        else:
            kw = {"pass_fds": fds}  # the fds keep their numbers, which the environment names
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err,
                                         env=full_env, cwd=ROOT, **kw)
        finally:
            os.close(req_r)
            os.close(rep_w)

    def send(self, raw):
        mv = memoryview(raw)
        while len(mv):
            mv = mv[os.write(self.req_w, mv):]

    def _read(self, n, deadline):
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.rep_r], [], [], left)[0]:
                raise AssertionError("no reply within %ss; stderr:\n%s" % (TIMEOUT, self.stderr()))
            b = os.read(self.rep_r, n - len(buf))
            if not b:
                return None if not buf else bytes(buf)
            buf += b
        return bytes(buf)

    def recv(self):
        """Return (type, meta, data bytes), or None at end of file."""
        deadline = time.monotonic() + TIMEOUT
        head = self._read(16, deadline)
        if head is None:
            return None
        if len(head) < 16:
            raise AssertionError("truncated header %r" % head)
        ftype, meta_len, data_len = struct.unpack("<IIQ", head)
        meta = json.loads(self._read(meta_len, deadline) or b"{}") if meta_len else {}
        data = self._read(data_len, deadline) if data_len else b""
        if len(data) != data_len:
            raise AssertionError("truncated data: %d of %d bytes" % (len(data), data_len))
        return ftype, meta, data

    def handshake(self, **over):
        self.send(frame(HELLO, hello_meta(**over)))
        return self.recv()

    def close_requests(self):
        if self.req_w is not None:
            os.close(self.req_w)
            self.req_w = None

    def wait(self):
        try:
            return self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError("model did not exit; stderr:\n%s" % self.stderr())

    def _text(self, f):
        f.seek(0)
        return f.read().decode("utf-8", "replace")

    def stdout(self):
        return self._text(self.out)

    def stderr(self):
        return self._text(self.err)

    def cleanup(self):
        self.close_requests()
        if self.proc.poll() is None:
            self.proc.kill()  # this process only, by its Popen
            self.proc.wait()
        os.close(self.rep_r)
        self.out.close()
        self.err.close()


# A model for the SDK's edge cases; what compute does depends on the chunk's
# first grid_id. It prints to stdout on purpose, including bytes that look
# like a frame.
FAULTY = textwrap.dedent(r'''
    import sys
    import numpy as np
    import gridbatch_model

    print("faulty model: starting")          # stdout, block-buffered
    sys.stdout.buffer.write(b"\x04\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00{}\n")

    def compute(cells):
        g = int(cells["grid_id"][0])
        n = len(cells["grid_id"])
        print("compute chunk of %d cells, first %d" % (n, g), flush=True)
        print("x" * 200000)                    # more than a pipe holds
        sys.stderr.write("stderr line from compute\n")
        if g == 13:
            raise KeyError("no such cell 13")
        if g == 14:
            raise ValueError("bad sigma at cell 14")
        if g == 16:
            raise gridbatch_model.Permanent("cell 16 has no inputs")
        if g == 7:
            return np.zeros((n, 2, 80))         # wrong shape
        if g == 8:
            return np.zeros((n, 3, 80), dtype=np.int64)
        if g == 9:
            return np.zeros((n, 3, 80), dtype=np.float32)
        if g == 10:
            return np.full((n, 3, 80), np.nan)
        if g == 11:
            return np.arange(n * 3 * 80, dtype=">f8").reshape(n, 3, 80)   # big-endian
        if g == 12:
            return np.arange(n * 3 * 80 * 2, dtype=float).reshape(n, 3, 160)[:, :, ::2]  # not contiguous
        if g == 15:
            sys.exit(3)
        return cells["mu0"][:, None, None] + np.zeros((n, 3, 80))

    gridbatch_model.serve(compute, inputs=["mu0", "sigma", "xi"])
''')


# A model written the new way: the layout comes from the handshake (setup)
# and each chunk's context (compute), never from the model's own code. It
# prints what it was given, and refuses a layout without the input "rain".
LAYOUT_MODEL = textwrap.dedent(r"""
    import json
    import numpy as np
    import gridbatch_model

    def setup(layout):
        print("setup", json.dumps([layout.kind, layout.inputs, layout.series, layout.first_year, layout.years]),
              flush=True)
        if "rain" not in layout.inputs:
            raise ValueError("this model reads rain; the models file declares %s" % (layout.inputs,))

    def compute(cells, *, context):
        print("compute", json.dumps([context.kind, context.inputs, context.series, context.first_year,
                                     context.years, context.chunk, context.n, context.shape]), flush=True)
        years = context.first_year + np.arange(context.years, dtype=float)
        return cells["rain"][:, None, None] + np.zeros(context.shape) + years

    gridbatch_model.serve(compute, setup=setup)
""")

# A model written before the handshake gave the layout: it states it to
# serve(), as tests/chaos/models and tests/integration/testdata still do.
STATING_MODEL = textwrap.dedent(r"""
    import sys
    sys.path.insert(0, %r)
    import gridbatch_model, reference_model

    gridbatch_model.serve(reference_model.ph, inputs=reference_model.INPUTS, series=reference_model.SERIES,
                          years=reference_model.YEARS, first_year=reference_model.FIRST_YEAR)
""" % os.path.dirname(REFERENCE))

# A model written before the context: it reads the module global hello.
HELLO_MODEL = textwrap.dedent(r"""
    import numpy as np
    import gridbatch_model

    def compute(cells, scale=2.0):          # a parameter of its own, not context
        h = gridbatch_model.hello
        return scale * np.ones((len(cells["grid_id"]), len(h["series"]), h["years"]))

    gridbatch_model.serve(compute)
""")


class ModelTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.models = []

    def tearDown(self):
        for m in self.models:
            m.cleanup()
        self.tmp.cleanup()

    def start(self, argv, **kw):
        m = Model(argv, tmp=self.tmp.name, **kw)
        self.models.append(m)
        return m

    def reference(self, kind, **kw):
        return self.start([PYTHON, REFERENCE, kind], **kw)

    def faulty(self):
        path = os.path.join(self.tmp.name, "faulty_model.py")
        with open(path, "w") as f:
            f.write(FAULTY)
        m = self.start([PYTHON, path])
        self.assertReady(m.handshake(kind="faulty"), m)
        return m

    def stating(self):
        return self.script("stating_model.py", STATING_MODEL)

    def result_of(self, m, cells, columns):
        m.send(chunk_frame("b1:c000001", cells, columns))
        reply = m.recv()
        self.assertIsNotNone(reply, "no reply to CHUNK; stderr:\n%s" % m.stderr())
        return reply

    def script(self, name, text):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w") as f:
            f.write(text)
        return self.start([PYTHON, path])

    def assertReady(self, reply, m):
        self.assertIsNotNone(reply, "no reply to HELLO; stderr:\n%s" % m.stderr())
        ftype, meta, data = reply
        self.assertEqual(ftype, READY, "reply %d %r; stderr:\n%s" % (ftype, meta, m.stderr()))
        self.assertEqual(meta, {"protocol": 1, "pid": m.proc.pid})
        self.assertEqual(data, b"")

    def result(self, m, cells, chunk_id="b1:c000001"):
        m.send(chunk_frame(chunk_id, cells))
        reply = m.recv()
        self.assertIsNotNone(reply, "no reply to CHUNK; stderr:\n%s" % m.stderr())
        return reply

    def values(self, reply, n, series=3, years=YEARS):
        ftype, meta, data = reply
        self.assertEqual(ftype, RESULT, "reply %d %r" % (ftype, meta))
        self.assertEqual(meta, {"shape": [n, series, years], "dtype": "float64"})
        self.assertEqual(len(data), n * series * years * 8)
        return struct.unpack("<%dd" % (n * series * years), data)

    def check_values(self, kind, cells, vals, series=SERIES, first_year=FIRST_YEAR, years=YEARS):
        bad = []
        for i, c in enumerate(cells):
            for j, s in enumerate(series):
                for k in range(years):
                    want = VALUE[kind](c[3], c[4], c[5], RATES[s], first_year + k)
                    got = vals[(i * len(series) + j) * years + k]
                    if not close(got, want):
                        bad.append((c[0], s, first_year + k, got, want))
        self.assertEqual(bad, [], "%s: %d values differ (grid_id, series, year, got, want)" % (kind, len(bad)))

    # -- the reference model ------------------------------------------------

    def test_reference_values(self):
        cells = test_cells()
        for kind in ("ph", "hazard"):
            with self.subTest(kind=kind):
                m = self.reference(kind)
                self.assertReady(m.handshake(kind=kind + "_py"), m)
                vals = self.values(self.result(m, cells), len(cells))
                self.check_values(kind, cells, vals)
                if kind == "ph":  # the ends of the support are exact
                    self.assertEqual(set(vals[9 * 240:10 * 240]), {0.0})
                    self.assertEqual(set(vals[11 * 240:12 * 240]), {1.0})
                    self.assertIn(0.0, vals[10 * 240:11 * 240])
                    self.assertIn(1.0, vals[12 * 240:13 * 240])
                m.close_requests()
                self.assertEqual(m.wait(), 0, m.stderr())

    def test_reference_many_chunks_and_a_large_one(self):
        m = self.reference("ph")
        self.assertReady(m.handshake(), m)
        for i in range(20):
            cells = [(i * 100 + k, 30.0, 120.0 + k * 0.05) + seed_params(30.0 + i, 120.0 + k * 0.05)
                     for k in range(1 + i)]
            self.check_values("ph", cells, self.values(self.result(m, cells, "b:c%06d" % i), len(cells)))
        # A 500-cell chunk: 960 KB of reply, far more than a pipe holds.
        cells = [(k, 0.0, 0.0) + seed_params(-60 + k * 0.25, -180 + k * 0.7) for k in range(500)]
        vals = self.values(self.result(m, cells, "b:big"), 500)
        self.check_values("ph", cells[::50], [v for i in range(0, 500, 50) for v in vals[i * 240:(i + 1) * 240]])
        m.close_requests()
        self.assertEqual(m.wait(), 0, m.stderr())

    def test_reference_matches_scipy_fixtures(self):
        if not os.path.exists(FIXTURES):
            self.skipTest("no " + FIXTURES)
        with open(FIXTURES) as f:
            cases = json.load(f)["cases"]
        for kind in ("ph", "hazard"):
            mine = [c for c in cases if c["kind"] == kind and c["scenario"] == "ssp126"]
            cells = [(i, c["lat"], c["lon"], c["mu0"], c["sigma"], c["xi"]) for i, c in enumerate(mine)]
            m = self.reference(kind)
            self.assertReady(m.handshake(), m)
            vals = self.values(self.result(m, cells), len(cells))
            for i, c in enumerate(mine):
                for j, s in enumerate(SERIES):
                    want = [d for d in cases if d["kind"] == kind and d["scenario"] == s
                            and d["label"] == c["label"]][0]["values"]
                    got = vals[(i * 3 + j) * YEARS:(i * 3 + j + 1) * YEARS]
                    for k in range(YEARS):
                        self.assertTrue(close(got[k], want[k], 1e-9),
                                        "%s %s %s %d: got %r, scipy %r" % (kind, c["label"], s, k, got[k], want[k]))

    def test_reference_refuses_invalid_params_and_keeps_serving(self):
        m = self.reference("hazard")
        self.assertReady(m.handshake(), m)
        ftype, meta, data = self.result(m, [(42, 0.0, 0.0, 30.0, 0.0, -0.12)])
        self.assertEqual(ftype, ERROR)
        self.assertEqual(meta["type"], "Permanent")
        self.assertTrue(meta["permanent"])
        self.assertIn("cell 42", meta["message"])
        self.assertIn("sigma=0.0", meta["message"])
        self.assertEqual(data, b"")
        cells = test_cells()[:2]
        self.check_values("hazard", cells, self.values(self.result(m, cells), 2))

    def test_reference_computes_the_layout_the_worker_sends(self):
        cells = test_cells()[:4]
        series = ["ssp585", "ssp126"]
        for kind in ("ph", "hazard"):
            with self.subTest(kind=kind):
                m = self.reference(kind)
                self.assertReady(m.handshake(kind=kind + "_py", inputs=["xi", "mu0", "extra", "sigma"], series=series,
                                             first_year=2051, years=7), m)
                # The columns in the declared order, as the worker sends them.
                rows = [(g, lat, lon, xi, mu0, 99.0, sigma) for g, lat, lon, mu0, sigma, xi in cells]
                columns = ["grid_id", "lat", "lon", "xi", "mu0", "extra", "sigma"]
                vals = self.values(self.result_of(m, rows, columns), len(cells), series=2, years=7)
                self.check_values(kind, cells, vals, series=series, first_year=2051, years=7)

    def test_reference_refuses_a_layout_it_cannot_compute(self):
        for field, value in [("inputs", ["mu0", "sigma"]), ("series", ["ssp126", "ssp370"])]:
            with self.subTest(field=field):
                m = self.reference("ph")
                ftype, meta, data = m.handshake(**{field: value})
                self.assertEqual((ftype, meta["type"], data), (ERROR, "HandshakeError", b""))
                self.assertIn("setup refused kind ph_py's layout: ValueError: the reference model reads inputs "
                              "mu0, sigma, xi and knows scenarios ssp126, ssp245, ssp585", meta["message"])
                self.assertIn(", ".join(value), meta["message"])
                self.assertEqual(m.wait(), 2)

    def test_handshake_mismatch(self):
        # An older model that states the layout to serve(): checked against the HELLO.
        for field, value in [("inputs", ["mu0", "sigma"]), ("series", ["ssp126", "ssp585"]), ("years", 79),
                             ("first_year", 2020)]:
            with self.subTest(field=field):
                m = self.stating()
                reply = m.handshake(**{field: value})
                self.assertIsNotNone(reply, m.stderr())
                ftype, meta, data = reply
                self.assertEqual(ftype, ERROR)
                self.assertEqual(meta["type"], "HandshakeError")
                self.assertIn(field + ":", meta["message"])
                self.assertIn(json.dumps(hello_meta()[field]), meta["message"])  # expected
                self.assertIn(json.dumps(value), meta["message"])               # declared
                self.assertEqual(data, b"")
                self.assertEqual(m.wait(), 2)
                self.assertIn("handshake failed", m.stderr())
                self.assertIn(field + ":", m.stderr())

    def test_handshake_missing_field_and_other_protocol(self):
        m = self.stating()
        meta = hello_meta()
        del meta["series"]
        m.send(frame(HELLO, meta))
        ftype, meta, _ = m.recv()
        self.assertEqual((ftype, meta["type"]), (ERROR, "HandshakeError"))
        self.assertIn("series", meta["message"])
        self.assertIn("nothing", meta["message"])
        self.assertEqual(m.wait(), 2)
        m = self.reference("ph")
        ftype, meta, _ = m.handshake(protocol=2)
        self.assertEqual((ftype, meta["type"]), (ERROR, "HandshakeError"))
        self.assertIn("protocol", meta["message"])
        self.assertEqual(m.wait(), 2)

    def test_undeclared_fields_are_not_checked(self):
        # The faulty model declares only its inputs: series and years are the file's.
        m = self.faulty()
        m.close_requests()
        self.assertEqual(m.wait(), 0)

    def test_context_and_setup_carry_the_handshake_layout(self):
        m = self.script("layout_model.py", LAYOUT_MODEL)
        self.assertReady(m.handshake(kind="rainy", inputs=["rain", "wind"], series=["dry", "wet"], first_year=1990,
                                     years=5), m)
        m.send(frame(CHUNK, {"chunk": "b7:c000003", "n": 2, "columns": ["grid_id", "lat", "lon", "rain", "wind"]},
                     struct.pack("<2q8d", 1, 2, 0.5, 0.5, 1.5, 1.5, 10.0, 20.0, 0.0, 0.0)))
        ftype, meta, data = m.recv()
        self.assertEqual((ftype, meta), (RESULT, {"shape": [2, 2, 5], "dtype": "float64"}), m.stderr())
        vals = struct.unpack("<20d", data)
        self.assertEqual(vals[:5], (2000.0, 2001.0, 2002.0, 2003.0, 2004.0))   # cell 1, "dry"
        self.assertEqual(vals[15:], (2010.0, 2011.0, 2012.0, 2013.0, 2014.0))  # cell 2, "wet"
        m.close_requests()
        self.assertEqual(m.wait(), 0, m.stderr())
        lines = m.stdout().splitlines()
        self.assertEqual(lines[0], 'setup ["rainy", ["rain", "wind"], ["dry", "wet"], 1990, 5]')
        self.assertEqual(lines[1], 'compute ["rainy", ["rain", "wind"], ["dry", "wet"], 1990, 5, "b7:c000003", 2, '
                                   '[2, 2, 5]]')

    def test_setup_refuses_a_layout_at_start(self):
        m = self.script("layout_model.py", LAYOUT_MODEL)
        ftype, meta, data = m.handshake(kind="dry_py")
        self.assertEqual((ftype, meta["type"], data), (ERROR, "HandshakeError", b""))
        self.assertEqual(meta["message"], "setup refused kind dry_py's layout: ValueError: this model reads rain; "
                                          "the models file declares ('mu0', 'sigma', 'xi')")
        self.assertEqual(m.wait(), 2)
        self.assertIn("Traceback", m.stderr())
        self.assertNotIn("compute", m.stdout())

    def test_a_hello_without_the_layout_is_refused(self):
        # The model declares nothing: the HELLO's own fields are checked.
        for field, value in [("series", None), ("years", "80"), ("inputs", ["mu0", 3]), ("kind", None)]:
            with self.subTest(field=field):
                m = self.script("layout_model.py", LAYOUT_MODEL)
                meta = hello_meta()
                if value is None:
                    del meta[field]
                else:
                    meta[field] = value
                m.send(frame(HELLO, meta))
                ftype, meta, _ = m.recv()
                self.assertEqual((ftype, meta["type"]), (ERROR, "HandshakeError"))
                self.assertTrue(meta["message"].startswith(field + ": the worker's HELLO has "
                                                           + ("nothing" if value is None else json.dumps(value))),
                                meta["message"])
                self.assertEqual(m.wait(), 2)
                self.assertNotIn("setup", m.stdout())

    def test_a_model_without_context_reads_hello(self):
        m = self.script("hello_model.py", HELLO_MODEL)
        self.assertReady(m.handshake(series=["only"], years=3), m)
        ftype, meta, data = self.result(m, [(1, 0.0, 0.0, 30.0, 1.0, -0.1)])
        self.assertEqual((ftype, meta), (RESULT, {"shape": [1, 1, 3], "dtype": "float64"}), m.stderr())
        self.assertEqual(struct.unpack("<3d", data), (2.0, 2.0, 2.0))

    def test_eof_exits_zero(self):
        m = self.reference("ph")  # before the handshake
        m.close_requests()
        self.assertEqual(m.wait(), 0, m.stderr())
        self.assertIsNone(m.recv())
        m = self.reference("ph")  # after it
        self.assertReady(m.handshake(), m)
        m.close_requests()
        self.assertEqual(m.wait(), 0, m.stderr())
        self.assertIsNone(m.recv())

    def test_started_by_hand_refuses(self):
        env = dict(os.environ, PYTHONPATH=HERE)
        env.pop("GRIDBATCH_MODEL_FDS", None)
        p = subprocess.run([PYTHON, REFERENCE, "ph"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=TIMEOUT)  # close_fds: no fd 3, 4
        self.assertEqual(p.returncode, 2)
        self.assertEqual(p.stdout, b"")
        err = p.stderr.decode()
        self.assertIn("gridbatch worker", err)
        self.assertIn("check(", err)
        self.assertIn("fd 3 is not open", err)

    def test_other_fds_from_the_environment(self):
        m = self.reference("hazard", on_3_4=False)
        self.assertReady(m.handshake(), m)
        cells = test_cells()[:3]
        self.check_values("hazard", cells, self.values(self.result(m, cells), 3))
        m.close_requests()
        self.assertEqual(m.wait(), 0, m.stderr())

    def test_reference_by_installed_sdk_path(self):
        # Without PYTHONPATH the reference model finds the SDK in the checkout.
        m = self.reference("ph", env={"PYTHONPATH": ""})
        self.assertReady(m.handshake(), m)
        m.close_requests()
        self.assertEqual(m.wait(), 0, m.stderr())

    # -- the SDK's edge cases ------------------------------------------------

    def test_exception_is_an_error_and_serving_goes_on(self):
        m = self.faulty()
        for gid, typ, msg in [(13, "KeyError", "'no such cell 13'"), (14, "ValueError", "bad sigma at cell 14"),
                              (16, "Permanent", "cell 16 has no inputs")]:
            ftype, meta, data = self.result(m, [(gid, 0.0, 0.0, 30.0, 1.0, -0.1)], "b:c%d" % gid)
            self.assertEqual(ftype, ERROR)
            self.assertEqual(meta["type"], typ)
            self.assertEqual(meta["message"], msg)
            self.assertEqual(meta.get("permanent", False), typ == "Permanent")
            self.assertIn("Traceback", meta["traceback"])
            self.assertIn("faulty_model.py", meta["traceback"])
            self.assertIn(typ, meta["traceback"])
            self.assertEqual(data, b"")
        vals = self.values(self.result(m, [(1, 0.0, 0.0, 30.5, 1.0, -0.1), (2, 0.0, 0.0, 31.5, 1.0, -0.1)]), 2)
        self.assertEqual(set(vals[:240]), {30.5})
        self.assertEqual(set(vals[240:]), {31.5})
        m.close_requests()
        self.assertEqual(m.wait(), 0)
        err = m.stderr()
        self.assertIn("KeyError", err)
        self.assertIn("chunk b:c13", err)
        self.assertIn("Traceback", err)

    def test_wrong_shape_and_dtype_sent_as_they_are(self):
        m = self.faulty()
        n = 2
        ftype, meta, data = self.result(m, [(7, 0, 0, 30, 1, -0.1), (70, 0, 0, 30, 1, -0.1)])
        self.assertEqual((ftype, meta), (RESULT, {"shape": [n, 2, 80], "dtype": "float64"}))
        self.assertEqual(len(data), n * 2 * 80 * 8)
        for gid, dtype in [(8, "int64"), (9, "float32")]:
            ftype, meta, data = self.result(m, [(gid, 0, 0, 30, 1, -0.1)] * n)
            self.assertEqual((ftype, meta, data), (RESULT, {"shape": [n, 3, 80], "dtype": dtype}, b""))
        # NaN, big-endian and non-contiguous float64 arrive as little-endian C order.
        vals = self.values(self.result(m, [(10, 0, 0, 30, 1, -0.1)]), 1)
        self.assertTrue(all(math.isnan(v) for v in vals))
        self.assertEqual(list(self.values(self.result(m, [(11, 0, 0, 30, 1, -0.1)] * n), n)),
                         [float(i) for i in range(n * 240)])
        self.assertEqual(list(self.values(self.result(m, [(12, 0, 0, 30, 1, -0.1)] * n), n)),
                         [float(2 * i) for i in range(n * 240)])
        m.close_requests()
        self.assertEqual(m.wait(), 0)

    def test_stdout_does_not_disturb_the_protocol(self):
        m = self.faulty()
        for i in range(3):
            vals = self.values(self.result(m, [(100 + i, 0.0, 0.0, 30.0 + i, 1.0, -0.1)]), 1)
            self.assertEqual(set(vals), {30.0 + i})
        m.close_requests()
        self.assertEqual(m.wait(), 0)
        out = m.stdout()
        self.assertTrue(out.startswith("faulty model: starting\n"), out[:100])
        for i in range(3):
            self.assertIn("compute chunk of 1 cells, first %d\n" % (100 + i), out)
        self.assertGreater(len(out), 3 * 200000)
        self.assertIn("stderr line from compute", m.stderr())

    def test_exit_mid_chunk(self):
        m = self.faulty()
        m.send(chunk_frame("b:c15", [(15, 0, 0, 30, 1, -0.1)]))
        self.assertIsNone(m.recv())  # no reply: the pipe closes
        self.assertEqual(m.wait(), 3)

    def test_bad_chunk_is_an_error_and_serving_goes_on(self):
        m = self.faulty()
        m.send(frame(CHUNK, {"chunk": "b:bad", "n": 2, "columns": ["grid_id", "lat", "lon"]}, b"\0" * 40))
        ftype, meta, _ = m.recv()
        self.assertEqual((ftype, meta["type"]), (ERROR, "ProtocolError"))
        self.assertIn("40 bytes", meta["message"])
        vals = self.values(self.result(m, [(1, 0.0, 0.0, 30.0, 1.0, -0.1)]), 1)
        self.assertEqual(set(vals), {30.0})

    def test_unexpected_frame_exits_two(self):
        m = self.faulty()
        m.send(frame(HELLO, hello_meta()))
        self.assertIsNone(m.recv())
        self.assertEqual(m.wait(), 2)
        self.assertIn("expected CHUNK", m.stderr())


class CheckTest(unittest.TestCase):
    """gridbatch_model.check, in this process."""

    def setUp(self):
        self.stderr = io.StringIO()  # check() reports on stderr
        redirect = contextlib.redirect_stderr(self.stderr)
        redirect.__enter__()
        self.addCleanup(redirect.__exit__, None, None, None)
        sys.path.insert(0, HERE)
        sys.path.insert(0, os.path.dirname(REFERENCE))
        import gridbatch_model
        import reference_model
        self.g, self.ref = gridbatch_model, reference_model

    def tearDown(self):
        sys.path.remove(HERE)
        sys.path.remove(os.path.dirname(REFERENCE))

    def test_check_accepts_the_reference(self):
        for compute in (self.ref.ph, self.ref.hazard):
            out = self.g.check(compute, n=5)
            self.assertEqual(out.shape, (5, 3, 80))
        self.assertIn("check: ok: compute returned float64 (5, 3, 80)", self.stderr.getvalue())

    def test_check_names_a_wrong_reply(self):
        import numpy as np
        with self.assertRaisesRegex(AssertionError, r"shape \[4, 3, 79\], want \[4, 3, 80\]"):
            self.g.check(lambda c: np.zeros((len(c["lat"]), 3, 79)))
        with self.assertRaisesRegex(AssertionError, "dtype float32"):
            self.g.check(lambda c: np.zeros((4, 3, 80), dtype=np.float32))
        seen = {}
        self.g.check(lambda c: seen.update(c) or np.zeros((3, 2, 10)), n=3, inputs=["a"], series=["x", "y"], years=10)
        self.assertEqual(list(seen), ["grid_id", "lat", "lon", "a"])
        self.assertEqual(seen["grid_id"].dtype, np.dtype("<i8"))
        self.assertEqual(seen["a"].dtype, np.dtype("<f8"))

    def test_check_uses_the_layout_the_models_file_declares(self):
        import numpy as np
        import tempfile
        d = tempfile.mkdtemp()
        path = os.path.join(d, "models.yaml")
        with open(path, "w") as f:
            f.write("""models:
  - kind: short               # a comment
    command: ["/usr/bin/python3", "short_model.py"]
    inputs: [a]
    series:
      - low
      - "high"
    first_year: 2031
    years: 30   # thirty
  - kind: other
    command: ["/usr/bin/python3", "other.py"]
""")
        seen = {}
        def compute(c):
            seen.update(c)
            return np.zeros((len(c["lat"]), 2, 30))
        out = self.g.check(compute, n=3, kind="short", models=path)
        self.assertEqual(out.shape, (3, 2, 30))
        self.assertEqual(list(seen), ["grid_id", "lat", "lon", "a"])
        self.assertEqual(self.g.hello, None)
        with self.assertRaisesRegex(AssertionError, r"want \[3, 3, 80\] \(cells, series, years\) as in the models file's other"):
            self.g.check(compute, n=3, kind="other", models=path)
        with self.assertRaisesRegex(ValueError, "has no such kind"):
            self.g.check(compute, kind="nope", models=path)
        # Without kind: the entry whose command runs compute's module.
        mod = os.path.join(d, "short_model.py")
        with open(mod, "w") as f:
            f.write("import numpy as np\ndef compute(c):\n    return np.ones((len(c['lat']), 2, 30))\n")
        sys.path.insert(0, d)
        self.addCleanup(sys.path.remove, d)
        import short_model
        os.environ["GRIDBATCH_MODELS_FILE"] = path
        self.addCleanup(os.environ.pop, "GRIDBATCH_MODELS_FILE")
        self.assertEqual(self.g.check(short_model.compute, n=2).shape, (2, 2, 30))


    def test_check_gives_the_models_file_layout_to_setup_and_context(self):
        import numpy as np
        d = tempfile.mkdtemp()
        path = os.path.join(d, "models.yaml")
        with open(path, "w") as f:
            f.write("models:\n  - kind: wet\n    command: [/usr/bin/python3, wet.py]\n    inputs: [rain]\n"
                    "    series: [low, high]\n    first_year: 1990\n    years: 4\n")
        seen = []

        def setup(layout):
            seen.append(layout)

        def compute(cells, context):
            seen.append(context)
            return np.zeros(context.shape)

        out = self.g.check(compute, n=3, kind="wet", models=path, setup=setup)
        self.assertEqual(out.shape, (3, 2, 4))
        self.assertEqual(seen, [self.g.Layout("wet", ("rain",), ("low", "high"), 1990, 4),
                                self.g.Context("wet", ("rain",), ("low", "high"), 1990, 4, chunk="check:c000000", n=3)])
        def refuse(layout):
            raise ValueError("no rain in %s" % (layout.inputs,))

        with self.assertRaisesRegex(ValueError, r"no rain in \('mu0', 'sigma', 'xi'\)"):
            self.g.check(compute, setup=refuse)
        self.assertEqual(len(seen), 2)  # compute was not called

    def test_compute_gets_the_context_when_it_names_it(self):
        import functools
        takes = self.g._takes_context

        def positional(cells, context):
            pass

        def keyword(cells, *, context=None):
            pass

        def other(cells, scale=1.0):
            pass

        def anything(cells, *args, **kwargs):
            pass

        class Model:
            def __call__(self, cells, context):
                pass

        self.assertTrue(takes(positional))
        self.assertTrue(takes(keyword))
        self.assertTrue(takes(Model()))
        self.assertTrue(takes(functools.partial(keyword, context=None)))
        self.assertFalse(takes(other))
        self.assertFalse(takes(anything))  # only a parameter named context, as Dask's block_info
        self.assertFalse(takes(lambda cells: None))
        self.assertFalse(takes(print))  # no signature to read (Python 3.11): compute(cells)


class PackageTest(unittest.TestCase):
    """pip install ./sdk/python: this very module as a typed package (PEP 561), needing only numpy."""

    def test_pip_install(self):
        with tempfile.TemporaryDirectory() as tmp:
            # A copy, so that the in-tree build leaves nothing in the checkout.
            src = os.path.join(tmp, "sdk")
            shutil.copytree(HERE, src, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".mypy_cache", "build", "*.egg-info"))
            site = os.path.join(tmp, "site")
            p = subprocess.run([PYTHON, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                                "--no-cache-dir", "--disable-pip-version-check", "--target", site, src],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=300)
            self.assertEqual(p.returncode, 0, p.stdout.decode("utf-8", "replace"))
            pkg = os.path.join(site, "gridbatch_model")
            self.assertEqual(sorted(f for f in os.listdir(pkg) if f != "__pycache__"), ["__init__.py", "py.typed"])
            self.assertFalse(os.path.islink(os.path.join(pkg, "__init__.py")))
            with open(os.path.join(pkg, "__init__.py"), "rb") as a, open(os.path.join(HERE, "gridbatch_model.py"),
                                                                         "rb") as b:
                self.assertEqual(a.read(), b.read(), "the package is not gridbatch_model.py")
            [info] = [d for d in os.listdir(site) if d.endswith(".dist-info")]
            with open(os.path.join(site, info, "METADATA")) as f:
                requires = [line.split(":", 1)[1].strip() for line in f if line.startswith("Requires-Dist:")]
            self.assertEqual(requires, ["numpy"])
            # Imported from the install (not the checkout), it checks a model.
            code = ("import numpy as np, gridbatch_model as g; print(g.__file__); "
                    "g.check(lambda cells, context: np.zeros(context.shape), n=2)")
            p = subprocess.run([PYTHON, "-I", "-c", "import sys; sys.path.insert(0, %r); %s" % (site, code)],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp,
                               timeout=TIMEOUT)
            self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
            self.assertEqual(p.stdout.decode().strip(), os.path.join(pkg, "__init__.py"))
            self.assertIn("check: ok", p.stderr.decode())


class ReplyMetaTest(unittest.TestCase):
    """A reply's meta fits the worker's cap (16 KiB): a long ERROR is cut, not refused."""

    def setUp(self):
        import gridbatch_model
        self.g = gridbatch_model

    def test_long_error_keeps_the_traceback_end_and_the_message_start(self):
        meta = {"type": "ValueError", "message": "bad cell " + "x" * 9000, "traceback": "line\n" * 5000 + "the end"}
        raw = self.g._encode(self.g._shrunk(meta))
        self.assertLessEqual(len(raw), self.g._MAX_REPLY_META)
        cut = json.loads(raw)
        self.assertEqual(cut["type"], "ValueError")
        self.assertTrue(cut["traceback"].startswith("[cut] ") and cut["traceback"].endswith("the end"))
        self.assertTrue(cut["message"].startswith("bad cell "))

    def test_anything_fits_even_escaped(self):
        meta = {"type": "T" * 40000, "message": "\u00e9" * 50000, "traceback": "\u00e9" * 100000}
        self.assertLessEqual(len(self.g._encode(self.g._shrunk(meta))), self.g._MAX_REPLY_META)


if __name__ == "__main__":
    unittest.main()
