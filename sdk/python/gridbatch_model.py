"""gridbatch_model: run your own Python model under the gridbatch worker.

Standard library + numpy, Python >= 3.9, typed (PEP 561). Install it with
``pip install ./sdk/python`` from a checkout (its only dependency is numpy),
or, as before, copy this one file next to your model or put its folder
(``sdk/python``) on PYTHONPATH: the module is the same either way.

Write a compute function, hand it to serve()
--------------------------------------------
::

    import numpy as np
    import gridbatch_model

    def compute(cells, context):
        mu0, sigma = cells["mu0"], cells["sigma"]        # float64, shape (n,)
        out = np.empty(context.shape)                    # (n, len(series), years)
        years = context.first_year + np.arange(context.years)
        ...
        return out

    if __name__ == "__main__":
        gridbatch_model.serve(compute)

The layout (``inputs``, ``series``, ``first_year``, ``years``) is declared
once, in the models file: the worker sends it in the handshake and ``serve()``
hands it to compute. ``compute(cells)`` is called once per chunk (up to a few
hundred cells). ``cells`` is a dict of numpy arrays of shape (n,), one per
column:

- ``"grid_id"``: int64, the cell's id on the lattice;
- ``"lat"``, ``"lon"``: float64, the cell centre in degrees;
- one float64 array per input the models file declares (``inputs``).

The arrays are views of the chunk as it arrived (no copy); they are yours
until compute returns.

When compute has a parameter named ``context`` (as Dask's ``map_blocks``
passes ``block_info=`` to a function that names it), it also gets the
chunk's ``Context``: ``kind``, ``inputs``, ``series`` (tuples of names, as the
models file lists them), ``first_year``, ``years``, ``chunk`` (the chunk's
id, as in the worker's log) and ``n`` (its number of cells), and ``shape``,
``(n, len(series), years)``. A compute without that parameter is called as
``compute(cells)``, as before.

It returns a float64 array of shape ``(n, len(series), years)``: for each cell
(in the order of ``cells``), one row of ``years`` values per series, index 0
being ``first_year``. NaN is allowed. Anything else (another shape, float32,
ints, bools) fails the chunk *without retry* and the worker's log names the
expected and the received shape or dtype: nothing is converted for you, so a
bug shows instead of being stored.

``serve()`` returns when the worker is done with the process (normal exit 0).
A model that cannot compute every layout gives ``serve(compute,
setup=setup)``: ``setup(layout)`` is called once with the models file's
``Layout`` before the first chunk, and an exception from it stops the process
at start (exit status 2) with its message, before any chunk is taken; load
what depends on the layout there too. The keyword arguments ``inputs``,
``series``, ``first_year`` and ``years`` of older models still work: each one
given must equal the models file's declaration, else the process stops at
start with an error naming the field, what the model expects and what the
file declares. (``gridbatch_model.hello``, the handshake as a dict, is still
set for older models that read it; ``context`` replaces it.)

Declare the model in the models file
------------------------------------
The file named by ``GRIDBATCH_MODELS_FILE`` (YAML), read by every gridbatch
binary (see ``examples/models.yaml``)::

    models:
      - kind: ph_py               # results go to ph_py_timeseries (`enqueuer migrate` makes it)
        command: ["/usr/bin/python3", "python/reference_model.py", "ph"]  # argv, no shell
        workdir: .                # default: the models file's folder; relative paths from it
        env: {OMP_NUM_THREADS: "1"}   # added to the model's environment
        inputs: [mu0, sigma, xi]  # per-cell inputs, in this order (default these three)
        series: [ssp126, ssp245, ssp585]  # rows per cell (default these)
        first_year: 2021          # default 2021
        years: 80                 # values per series (default 80)
        timeout: 2m               # per chunk (default GRIDBATCH_TASK_TIMEOUT)
        memory_limit: 1GiB        # RSS of the process and its children (default none)
        max_chunks_per_process: 0 # start a fresh process after this many chunks; 0 never
        processes: 0              # model processes per worker; 0 = the worker's concurrency

The worker starts each process once and hands it one chunk after another, so
import numpy/scipy, load tables or weights at module level (or in setup), not
in compute.

Printing, exceptions, timeouts, threads
---------------------------------------
- Print freely to stdout and stderr: the protocol does not use them (it has
  its own pipes, file descriptors 3 and 4), and the worker logs each line
  with the kind and the pid. stdout is block-buffered when it is not a
  terminal: use ``print(..., flush=True)`` or ``env: {PYTHONUNBUFFERED: "1"}``
  to see lines as they are printed.
- An exception in compute fails the chunk with its type and message (the
  traceback goes to stderr and to the worker's log) and the chunk is retried
  later like any failure. The process stays up and serves the next chunk.
  A chunk that keeps failing is split in halves, recursively, until the
  failing cells stand alone: only they are dead-lettered, every other cell
  is computed. Raise ``gridbatch_model.Permanent`` for an error no retry
  will fix (bad inputs): the chunk is split at once, never retried.
- ``sys.exit()``, a crash or a signal mid-chunk fails the chunk (retried);
  the worker starts a fresh process.
- At a chunk's timeout, when its batch is cancelled, when the process tree's
  RSS passes ``memory_limit`` or on any protocol violation, the worker
  SIGKILLs the process's whole process group: no ``finally``, ``atexit`` or
  signal handler runs, child processes die too. Do not rely on cleanup; write
  any files of your own atomically (write, then rename).
- The worker runs several model processes side by side (``processes``), each
  on its own chunk: keep each one single-threaded with
  ``env: {OMP_NUM_THREADS: "1"}`` (also ``OPENBLAS_NUM_THREADS``,
  ``MKL_NUM_THREADS`` for those libraries), or they fight over the cores.

Test locally
------------
``serve()`` only runs under the worker; started by hand it stops with exit
status 2 and says so. Test compute with ``check()``, which calls it on
made-up cells and checks the reply as the worker would, in the layout the
models file declares for it (``$GRIDBATCH_MODELS_FILE``'s entry whose command
runs compute's module, or ``check(compute, kind=KIND)``), with the setup and
the context serve() would give::

    GRIDBATCH_MODELS_FILE=models.yaml /usr/bin/python3 -c 'import mymodel, gridbatch_model; gridbatch_model.check(mymodel.compute, n=4, setup=mymodel.setup)'

(``mymodel.py`` calls serve() under ``if __name__ == "__main__":`` so that
importing it does not start serving.) Then run a small batch with the model
declared in a models file.

The protocol itself (for other languages) is docs/model-protocol.md.
"""

from __future__ import annotations

import fcntl
import inspect
import io
import json
import os
import struct
import sys
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["serve", "check", "Layout", "Context", "Cells", "Permanent", "hello", "PROTOCOL"]

#: The protocol version this module speaks.
PROTOCOL = 1

#: A chunk's cells: column name -> (n,) array ("grid_id" int64, the others float64).
Cells = Dict[str, "NDArray[Any]"]

#: The worker's HELLO meta (kind, inputs, series, first_year, years) as a
#: dict once serve() has started; None before. Kept for models written
#: before the context: read compute's ``context`` instead.
hello: Optional[Dict[str, Any]] = None

# Frame types.
HELLO, READY, CHUNK, RESULT, ERROR = 1, 2, 3, 4, 5
_TYPE_NAMES = {HELLO: "HELLO", READY: "READY", CHUNK: "CHUNK", RESULT: "RESULT", ERROR: "ERROR"}

_HEADER = struct.Struct("<IIQ")  # type, meta_len, data_len
_MAX_META = 64 << 20  # a larger meta means the stream is out of step
_MAX_REPLY_META = 16 << 10  # the worker kills a model whose reply meta is larger

# The values check() uses when neither the caller nor a models file says.
_DEFAULT_INPUTS = ("mu0", "sigma", "xi")
_DEFAULT_SERIES = ("ssp126", "ssp245", "ssp585")
_DEFAULT_FIRST_YEAR, _DEFAULT_YEARS = 2021, 80


@dataclass(frozen=True)
class Layout:
    """What the models file declares of a kind, as the worker sends it in the handshake.

    compute returns, for n cells, a float64 array of shape
    ``(n, len(series), years)``, year index 0 being ``first_year``.
    """

    kind: str
    inputs: Tuple[str, ...]  #: the per-cell inputs, in the cells dict after grid_id, lat, lon
    series: Tuple[str, ...]  #: the rows of each cell's result, in this order
    first_year: int
    years: int  #: values per series


@dataclass(frozen=True)
class Context(Layout):
    """One chunk's context, given to a compute that has a ``context`` parameter."""

    chunk: str  #: the chunk's id, as in the worker's log ("<batch id>:c000017")
    n: int  #: the chunk's number of cells

    @property
    def shape(self) -> Tuple[int, int, int]:
        """The shape of the result compute returns: (n, len(series), years)."""
        return (self.n, len(self.series), self.years)


if TYPE_CHECKING:
    from typing import Protocol

    from numpy.typing import ArrayLike, NDArray

    class ComputeWithContext(Protocol):
        """A compute function that takes the chunk's context."""

        def __call__(self, cells: Cells, /, *, context: Context) -> ArrayLike: ...

    #: What serve() and check() accept: compute(cells) or compute(cells, context).
    Compute = Union[Callable[[Cells], ArrayLike], ComputeWithContext]
else:
    ArrayLike = Any
    Compute = Callable[..., Any]


class Permanent(Exception):
    """Raise it from compute for an error no retry will fix, such as bad inputs.

    The chunk is not retried: the worker splits it in halves at once,
    recursively, until the failing cells stand alone, and dead-letters only
    them (one dead letter per cell, naming it); every other cell is computed.
    Any other exception is retried first, and split once its retries are used
    up. ``raise gridbatch_model.Permanent("cell %d: sigma <= 0" % gid)``.
    """


class _ProtocolError(Exception):
    """The worker sent something this module cannot follow."""


class _Stop(Exception):
    """Stop serving: status None returns from serve(), else exit with it."""

    def __init__(self, status: Optional[int] = None) -> None:
        super().__init__(status)
        self.status = status


def _log(msg: str) -> None:
    """Write one diagnostic line to stderr (never to stdout: that is the user's)."""
    try:
        sys.stderr.write("gridbatch_model[%d]: %s\n" % (os.getpid(), msg))
        sys.stderr.flush()
    except Exception:  # a closed or broken stderr must not stop serving
        pass


def _program() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python3"


def _takes_context(compute: Callable[..., Any]) -> bool:
    """Whether compute has a parameter named context (then it gets the chunk's
    Context as context=), as Dask passes block_info= to a function naming it."""
    try:
        params = inspect.signature(compute).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins): compute(cells)
        return False
    p = params.get("context")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def _context(layout: Layout, chunk: str, n: int) -> Context:
    return Context(layout.kind, layout.inputs, layout.series, layout.first_year, layout.years, chunk=chunk, n=n)


# ---------------------------------------------------------------------------
# File descriptors and frames


def _fds() -> Tuple[int, int]:
    """Return (request fd, reply fd) or exit 2 explaining why not."""
    spec = os.environ.get("GRIDBATCH_MODEL_FDS")
    if spec is None:
        rfd, wfd = 3, 4
    else:
        try:
            rfd, wfd = (int(x) for x in spec.split(","))
            if rfd < 0 or wfd < 0:
                raise ValueError
        except ValueError:
            sys.stderr.write(
                "%s: GRIDBATCH_MODEL_FDS=%r: want two file descriptors 'READ,WRITE', for example '3,4'\n"
                % (_program(), spec))
            sys.exit(2)
    problems = []
    for fd, want, word in ((rfd, (os.O_RDONLY, os.O_RDWR), "reading"),
                           (wfd, (os.O_WRONLY, os.O_RDWR), "writing")):
        try:
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            problems.append("fd %d is not open" % fd)
            continue
        if mode not in want:
            problems.append("fd %d is not open for %s" % (fd, word))
    if problems:
        sys.stderr.write(
            "%s: this model is meant to run under the gridbatch worker, which starts it with its\n"
            "  protocol pipes on file descriptors %d and %d (%s).\n"
            "  Declare it in the models file (GRIDBATCH_MODELS_FILE) and let the worker start it.\n"
            "  To test compute locally, without a worker, call gridbatch_model.check(compute, n=4)\n"
            "  instead of serve(), for example:\n"
            "    /usr/bin/python3 -c 'import mymodel, gridbatch_model; gridbatch_model.check(mymodel.compute, n=4)'\n"
            "  (help: /usr/bin/python3 -c 'import gridbatch_model; help(gridbatch_model)')\n"
            % (_program(), rfd, wfd, "; ".join(problems)))
        sys.exit(2)
    for fd in (rfd, wfd):
        os.set_inheritable(fd, False)  # children the model starts do not hold the pipes
        os.set_blocking(fd, True)
    return rfd, wfd


class _Channel:
    """Frames over a request fd (read) and a reply fd (write)."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._r = io.FileIO(rfd, "rb", closefd=False)
        self._wfd = wfd

    def _fill(self, buf: memoryview, at_boundary: bool) -> bool:
        """Fill buf (a writable buffer) from the request fd.

        Returns False on end of file before the first byte when at_boundary;
        end of file anywhere else is a truncated frame.
        """
        mv = buf.cast("B")
        got, want = 0, len(mv)
        while got < want:
            k = self._r.readinto(mv[got:])
            if k is None:  # non-blocking and empty; cannot happen after set_blocking
                continue
            if k == 0:
                if at_boundary and got == 0:
                    return False
                raise _ProtocolError("end of file in the middle of a frame (%d of %d bytes)" % (got, want))
            got += k
        return True

    def read(self) -> Optional[Tuple[int, Dict[str, Any], NDArray[np.uint8]]]:
        """Return (type, meta dict, data as a uint8 array) or None at end of file."""
        head = bytearray(_HEADER.size)
        if not self._fill(memoryview(head), True):
            return None
        ftype, meta_len, data_len = _HEADER.unpack(head)
        if meta_len > _MAX_META:
            raise _ProtocolError("frame type %d with a meta of %d bytes" % (ftype, meta_len))
        raw = bytearray(meta_len)
        self._fill(memoryview(raw), False)
        try:
            data = np.empty(data_len, dtype=np.uint8)  # aligned, so the columns are views
        except (MemoryError, ValueError):
            raise _ProtocolError("frame type %d with %d bytes of data: cannot hold them" % (ftype, data_len))
        self._fill(data.data, False)
        try:
            meta = json.loads(raw.decode("utf-8")) if meta_len else {}
        except ValueError as e:
            raise _ProtocolError("frame type %d: meta is not UTF-8 JSON: %s" % (ftype, e))
        if not isinstance(meta, dict):
            raise _ProtocolError("frame type %d: meta is not a JSON object" % ftype)
        return ftype, meta, data

    def write(self, ftype: int, meta: Dict[str, Any], data: Optional[NDArray[np.float64]] = None) -> None:
        """Send one frame; data is a C-contiguous little-endian array or None."""
        raw = _encode(meta)
        if len(raw) > _MAX_REPLY_META:
            raw = _encode(_shrunk(meta))
        body = b"" if data is None else data.reshape(-1).view(np.uint8).data
        try:
            _write_all(self._wfd, _HEADER.pack(ftype, len(raw), len(body)) + raw)
            if len(body):
                _write_all(self._wfd, body)
        except BrokenPipeError:
            _log("the worker closed the reply pipe; stopping")
            raise _Stop(None)


def _encode(meta: Dict[str, Any]) -> bytes:
    return json.dumps(meta, ensure_ascii=True, allow_nan=False).encode("ascii")


def _shrunk(meta: Dict[str, Any]) -> Dict[str, Any]:
    """meta cut to fit _MAX_REPLY_META: the traceback keeps its end, the
    message and type their start (the whole traceback went to stderr)."""
    meta = dict(meta)
    for key, keep_end in (("traceback", True), ("message", False), ("type", False)):
        text = meta.get(key)
        while isinstance(text, str) and text and len(_encode(meta)) > _MAX_REPLY_META:
            text = text[(len(text) + 1) // 2:] if keep_end else text[:len(text) // 2]
            meta[key] = ("[cut] " + text) if keep_end else (text + " [cut]")
    return meta


def _write_all(fd: int, buf: Union[bytes, memoryview]) -> None:
    mv = memoryview(buf)
    while len(mv):
        mv = mv[os.write(fd, mv):]


# ---------------------------------------------------------------------------
# Chunks and results


def _cells(n: Any, columns: Any, data: NDArray[np.uint8]) -> Cells:
    """Build the cells dict from a chunk's columns: views of data, no copy."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise _ProtocolError("chunk meta: n=%r is not a count" % (n,))
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _ProtocolError("chunk meta: columns=%r is not a list of names" % (columns,))
    if len(set(columns)) != len(columns):
        raise _ProtocolError("chunk meta: columns %r repeat a name" % (columns,))
    width = 8 * n
    if data.nbytes != width * len(columns):
        raise _ProtocolError("chunk data: %d bytes, want %d columns of %d values (%d bytes)"
                             % (data.nbytes, len(columns), n, width * len(columns)))
    cells = {}
    for k, name in enumerate(columns):
        cells[name] = data[k * width:(k + 1) * width].view("<i8" if name == "grid_id" else "<f8")
    return cells


def _error_meta(exc: BaseException, tb_text: str) -> Dict[str, Any]:
    try:
        message = str(exc)
    except Exception:
        message = repr(exc)
    meta: Dict[str, Any] = {"type": type(exc).__name__, "message": message, "traceback": tb_text}
    if isinstance(exc, Permanent):
        meta["permanent"] = True
    return meta


def _result(result: Any) -> Tuple[Dict[str, Any], Optional[NDArray[np.float64]]]:
    """Return (meta, data) of the RESULT frame for what compute returned."""
    r = np.asarray(result)
    shape = [int(d) for d in r.shape]
    if r.dtype.kind == "f" and r.dtype.itemsize == 8:  # float64 in either byte order
        return {"shape": shape, "dtype": "float64"}, r.astype("<f8", order="C", copy=False)
    # Not converted: the worker fails the chunk naming the dtype.
    return {"shape": shape, "dtype": str(r.dtype)}, None


def _run(compute: Compute, meta: Dict[str, Any], data: NDArray[np.uint8], layout: Layout,
         with_context: bool) -> Tuple[int, Dict[str, Any], Optional[NDArray[np.float64]]]:
    """Compute one chunk; return the reply (type, meta, data)."""
    chunk = meta.get("chunk", "?")
    try:
        cells = _cells(meta.get("n"), meta.get("columns"), data)
    except _ProtocolError as e:
        _log("chunk %s: %s" % (chunk, e))
        return ERROR, {"type": "ProtocolError", "message": str(e), "traceback": ""}, None
    try:
        if with_context:
            result = compute(cells, context=_context(layout, str(chunk), int(meta["n"])))  # type: ignore[call-arg]
        else:
            result = compute(cells)  # type: ignore[call-arg]
    except Exception as e:
        tb = traceback.format_exception(type(e), e, e.__traceback__.tb_next or e.__traceback__)  # type: ignore[union-attr]
        tb_text = "".join(tb)
        _log("chunk %s: compute raised %s\n%s" % (chunk, type(e).__name__, tb_text.rstrip("\n")))
        return (ERROR, _error_meta(e, tb_text), None)
    del cells
    try:
        rmeta, rdata = _result(result)
    except Exception as e:  # e.g. a ragged list numpy cannot make an array of
        msg = "compute returned a %s that numpy cannot make an array of: %s" % (type(result).__name__, e)
        _log("chunk %s: %s" % (chunk, msg))
        return ERROR, {"type": type(e).__name__, "message": msg, "traceback": traceback.format_exc()}, None
    return RESULT, rmeta, rdata


# ---------------------------------------------------------------------------
# serve


def _names(v: Any) -> Optional[Tuple[str, ...]]:
    """v as a tuple of names when it is a JSON list of strings, else None."""
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    return None


def _count(v: Any) -> Optional[int]:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _hello_layout(meta: Dict[str, Any], reported: Sequence[str]) -> Tuple[Optional[Layout], List[str]]:
    """The Layout a HELLO meta carries, or the problems that make it none
    (fields in reported have been named already)."""
    kind = meta["kind"] if isinstance(meta.get("kind"), str) else None
    inputs, series = _names(meta.get("inputs")), _names(meta.get("series"))
    first_year, years = _count(meta.get("first_year")), _count(meta.get("years"))
    got = {"kind": kind, "inputs": inputs, "series": series, "first_year": first_year, "years": years}
    want = {"kind": "a name", "inputs": "a list of names", "series": "a list of names",
            "first_year": "an integer", "years": "an integer"}
    problems = ["%s: the worker's HELLO has %s, want %s"
                % (f, json.dumps(meta[f]) if f in meta else "nothing", want[f])
                for f, v in got.items() if v is None and f not in reported]
    if kind is None or inputs is None or series is None or first_year is None or years is None:
        return None, problems
    return Layout(kind, inputs, series, first_year, years), problems


def _handshake(ch: _Channel, declared: List[Tuple[str, Any]],
               setup: Optional[Callable[[Layout], None]]) -> Layout:
    """Read HELLO, compare it with what serve() was told, run setup; send
    READY and return the layout, or send ERROR and stop (exit status 2)."""
    global hello
    frame = ch.read()
    if frame is None:
        raise _Stop(None)  # closed before the handshake: the worker is done with us
    ftype, meta, _ = frame
    problems = []
    layout = None
    if ftype != HELLO:
        problems.append("expected HELLO first, received frame type %d (%s)"
                        % (ftype, _TYPE_NAMES.get(ftype, "unknown")))
    elif meta.get("protocol") != PROTOCOL:
        problems.append("protocol: the model speaks %d, the worker %s" % (PROTOCOL, json.dumps(meta.get("protocol"))))
    else:
        reported = []
        for field, want in declared:
            if want is None:
                continue
            got = meta.get(field)
            if got != want:
                reported.append(field)
                problems.append("%s: the model expects %s but the models file declares %s"
                                % (field, json.dumps(want), json.dumps(got) if field in meta else "nothing"))
        layout, more = _hello_layout(meta, reported)
        problems += more
    if layout is not None and not problems and setup is not None:
        try:
            setup(layout)
        except Exception as e:
            _log("setup raised %s\n%s" % (type(e).__name__, traceback.format_exc().rstrip("\n")))
            problems.append("setup refused kind %s's layout: %s: %s" % (layout.kind, type(e).__name__, e))
    if problems or layout is None:
        msg = "; ".join(problems)
        _log("handshake failed (kind %s): %s" % (meta.get("kind", "?"), msg))
        ch.write(ERROR, {"type": "HandshakeError", "message": msg, "traceback": ""})
        raise _Stop(2)
    hello = meta
    ch.write(READY, {"protocol": PROTOCOL, "pid": os.getpid()})
    return layout


def _as_list(name: str, v: Optional[Sequence[str]]) -> Optional[List[str]]:
    if v is None:
        return None
    if isinstance(v, str):
        raise TypeError("serve(%s=...): want a list of names, not the string %r" % (name, v))
    return [str(x) for x in v]


def _as_int(name: str, v: Optional[int]) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or int(v) != v:
        raise TypeError("serve(%s=%r): want an integer" % (name, v))
    return int(v)


def serve(compute: Compute, *, setup: Optional[Callable[[Layout], None]] = None,
          inputs: Optional[Sequence[str]] = None, series: Optional[Sequence[str]] = None,
          years: Optional[int] = None, first_year: Optional[int] = None) -> None:
    """Serve chunks to the gridbatch worker until it is done with this process.

    compute(cells) gets a dict of (n,) arrays ("grid_id" int64; "lat", "lon"
    and each declared input float64) and returns a float64 array of shape
    (n, len(series), years), in the layout the models file declares and the
    worker sends at the start. When compute has a parameter named context it
    is called as compute(cells, context=Context(...)), the chunk's context.

    setup(layout), when given, is called once with that Layout before the
    first chunk; an exception from it stops the process at start (exit
    status 2) with a HandshakeError carrying its message. inputs, series,
    years and first_year (older models), when given, must equal the models
    file's declaration, else the process stops at start the same way, the
    error naming the field.

    Returns when the worker closes the request pipe. Exits with status 2 when
    not started by the worker (see check() to test locally) or when the
    worker breaks the protocol.
    """
    if not callable(compute):
        raise TypeError("serve(compute): compute must be callable, got %r" % (compute,))
    if setup is not None and not callable(setup):
        raise TypeError("serve(setup=...): setup must be callable, got %r" % (setup,))
    declared = [("inputs", _as_list("inputs", inputs)), ("series", _as_list("series", series)),
                ("first_year", _as_int("first_year", first_year)), ("years", _as_int("years", years))]
    with_context = _takes_context(compute)
    ch = _Channel(*_fds())
    try:
        layout = _handshake(ch, declared, setup)
        while True:
            frame = ch.read()
            if frame is None:
                return  # the worker is done with this process
            ftype, meta, data = frame
            if ftype != CHUNK:
                raise _ProtocolError("expected CHUNK, received frame type %d (%s)"
                                     % (ftype, _TYPE_NAMES.get(ftype, "unknown")))
            rtype, rmeta, rdata = _run(compute, meta, data, layout, with_context)
            del frame, meta, data
            ch.write(rtype, rmeta, rdata)
            del rdata
    except _Stop as s:
        if s.status is None:
            return
        sys.exit(s.status)
    except _ProtocolError as e:
        _log("protocol error: %s; exiting" % e)
        sys.exit(2)


# ---------------------------------------------------------------------------
# check


def _made_up_cells(n: int, inputs: Sequence[str]) -> Tuple[List[str], NDArray[np.uint8]]:
    """n cells of a 0.05-degree lattice with plausible inputs, as a chunk's bytes."""
    step = 0.05
    rng = np.random.default_rng(20210101)
    ncols = int(round(360 / step))
    rows = rng.integers(int(30 / step), int(160 / step), size=n)  # latitudes -60..70
    cols = rng.integers(0, ncols, size=n)
    lat = -90 + (rows + 0.5) * step
    lon = -180 + (cols + 0.5) * step
    a = np.abs(lat) - 30
    known = {  # the reference model's inputs, as `enqueuer seed` writes them
        "mu0": 34.0 - 0.35 * a + 0.8 * np.cos(lon * np.pi / 180),
        "sigma": 1.6 + 0.02 * np.abs(a),
        "xi": np.full(n, -0.12),
    }
    columns = ["grid_id", "lat", "lon"] + list(inputs)
    parts = [(rows * ncols + cols).astype("<i8"), lat.astype("<f8"), lon.astype("<f8")]
    for name in inputs:
        parts.append(known[name].astype("<f8") if name in known else rng.uniform(0, 1, size=n).astype("<f8"))
    data = np.empty(8 * n * len(columns), dtype=np.uint8)
    for k, p in enumerate(parts):
        data[k * 8 * n:(k + 1) * 8 * n] = p.view(np.uint8)
    return columns, data


def _scalar(text: str) -> str:
    """A YAML scalar of the models file: quotes and a trailing comment removed."""
    text = text.strip()
    if text[:1] in "\"'":
        end = text.find(text[0], 1)
        return text[1:end] if end > 0 else text[1:]
    return text.split(" #", 1)[0].strip()


def _flow_list(text: str) -> Optional[List[str]]:
    """A YAML flow list such as [ssp126, "ssp245"], or None when text is not one."""
    text = text.split(" #", 1)[0].strip() if not text.strip().startswith("[") else text.strip()
    if not text.startswith("[") or "]" not in text:
        return None
    return [_scalar(x) for x in text[1:text.rindex("]")].split(",") if x.strip()]


def _model_entries(path: str) -> List[Dict[str, Any]]:
    """The entries of a models file as dicts of their top-level fields.

    A reader of the subset the models file uses (a list of mappings under
    ``models:``, scalars, flow lists ``[a, b]`` and block lists ``- a``), so
    that the SDK needs no YAML package; gridbatch itself validates the file.
    """
    entries: List[Dict[str, Any]] = []
    entry: Optional[Dict[str, Any]] = None
    key: Optional[str] = None
    indent: Optional[int] = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.rstrip("\n")
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped == "models:":
                continue
            lead = len(line) - len(line.lstrip(" "))
            if stripped.startswith("- ") and (indent is None or lead <= indent):
                indent = lead
                entry, key = {}, None
                entries.append(entry)
                stripped = stripped[2:].strip()
            elif stripped.startswith("- ") and entry is not None and key is not None:
                entry.setdefault(key, []).append(_scalar(stripped[2:]))
                continue
            if entry is None or ":" not in stripped:
                continue
            key, _, value = stripped.partition(":")
            key = key.strip()
            if value.strip() and not value.strip().startswith("#"):
                lst = _flow_list(value)
                entry[key] = lst if lst is not None else _scalar(value)
                key = None  # a value: no block list follows
    return entries


def _declared_layout(compute: Compute, kind: Optional[str], models: Optional[str]) -> Dict[str, Any]:
    """The layout (inputs, series, first_year, years) the models file declares
    for kind, or for the entry whose command runs compute's module; {} when
    there is no such file or entry (and kind is None)."""
    path = models or os.environ.get("GRIDBATCH_MODELS_FILE")
    if not path:
        if kind is not None:
            raise ValueError("check(kind=%r): no models file: pass models=PATH or set GRIDBATCH_MODELS_FILE" % kind)
        return {}
    entries = _model_entries(path)
    if kind is not None:
        found = [e for e in entries if e.get("kind") == kind]
        if not found:
            raise ValueError("check(kind=%r): %s has no such kind (it has: %s)"
                             % (kind, path, ", ".join(str(e.get("kind")) for e in entries)))
    else:
        module = getattr(sys.modules.get(getattr(compute, "__module__", ""), None), "__file__", None)
        name = os.path.basename(module) if module else None
        found = [e for e in entries if name and isinstance(e.get("command"), list)
                 and any(os.path.basename(a) == name for a in e["command"])]
        if len(found) != 1:
            return {}
    e = found[0]
    layout: Dict[str, Any] = {}
    for field in ("inputs", "series"):
        if isinstance(e.get(field), list):
            layout[field] = e[field]
    for field in ("first_year", "years"):
        if field in e:
            layout[field] = int(e[field])
    layout["kind"] = e.get("kind")
    return layout


def check(compute: Compute, n: int = 4, inputs: Optional[Sequence[str]] = None,
          series: Optional[Sequence[str]] = None, years: Optional[int] = None, first_year: Optional[int] = None,
          *, kind: Optional[str] = None, models: Optional[str] = None,
          setup: Optional[Callable[[Layout], None]] = None) -> NDArray[np.float64]:
    """Call compute on n made-up cells and check its reply as the worker would.

    The layout checked (inputs, series, years, first_year) is the one the
    models file declares, as the worker would send it: the entry of kind in
    the file models (default $GRIDBATCH_MODELS_FILE), or without kind the
    entry whose command runs compute's module file; each argument given
    overrides it; without a file or an entry, the defaults (mu0, sigma, xi;
    ssp126, ssp245, ssp585; 2021 and 80 years). setup, when given, is called
    with that Layout first, as serve() does; compute gets the chunk's Context
    when it has a context parameter, as under serve().

    The cells come from a 0.05-degree lattice between 60 S and 70 N; mu0, sigma
    and xi follow the reference model's formulas, any other input is uniform
    in [0, 1). Returns the result array; raises AssertionError naming the
    expected and the received shape or dtype when the worker would refuse it.
    Exceptions from setup and compute propagate, with their traceback.
    """
    declared = _declared_layout(compute, kind, models)
    layout = Layout(
        kind=declared.get("kind") or "check",
        inputs=tuple(inputs if inputs is not None else declared.get("inputs", _DEFAULT_INPUTS)),
        series=tuple(series if series is not None else declared.get("series", _DEFAULT_SERIES)),
        first_year=int(first_year if first_year is not None else declared.get("first_year", _DEFAULT_FIRST_YEAR)),
        years=int(years if years is not None else declared.get("years", _DEFAULT_YEARS)))
    source = ("the models file's %s" % declared["kind"]) if declared else "the defaults"
    global hello
    n = int(n)
    if setup is not None:
        setup(layout)
    columns, data = _made_up_cells(n, layout.inputs)
    cells = _cells(n, columns, data)
    saved = hello
    hello = {"protocol": PROTOCOL, "kind": layout.kind, "inputs": list(layout.inputs),
             "series": list(layout.series), "first_year": layout.first_year, "years": layout.years}
    try:
        if _takes_context(compute):
            result = compute(cells, context=_context(layout, "check:c000000", n))  # type: ignore[call-arg]
        else:
            result = compute(cells)  # type: ignore[call-arg]
    finally:
        hello = saved
    meta, out = _result(result)
    want = [n, len(layout.series), layout.years]
    if meta["dtype"] != "float64" or out is None:
        raise AssertionError("compute returned dtype %s, want float64 (shape %s): the worker would fail the chunk"
                             % (meta["dtype"], meta["shape"]))
    if meta["shape"] != want:
        raise AssertionError("compute returned shape %s, want %s (cells, series, years) as in %s: the worker would "
                             "fail the chunk (check(..., kind=KIND) or series=, years= check another layout)"
                             % (meta["shape"], want, source))
    nan = int(np.count_nonzero(np.isnan(out)))
    _log("check: ok: compute returned float64 %s for %d made-up cells (%d NaN of %d values)"
         % (tuple(want), n, nan, out.size))
    return out
