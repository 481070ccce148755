"""The reference ph (examples/python/reference_model.py), failing on chosen cells.

Environment (the models file's env:):
  POISON_IDS           comma-separated grid ids it fails on
  POISON_MODE          raise (ValueError), permanent (gridbatch_model.Permanent),
                       abort (os.abort(): SIGABRT, a crash), once (raises the first
                       time it sees each poisoned cell, then computes it)
  POISON_HEAL_FILE     when this file exists, the poisoned cells are computed
  POISON_MIB_PER_CELL  allocate and touch this many MiB per cell of the chunk,
                       held 0.6 s (for memory_limit)

Every failure is first written to poison.log in the working directory (the
models file's folder), one line per chunk: "hit <ids> <cells> <mode>"; a
poisoned cell computed after healing writes "healed <ids> <cells>", an
allocation "alloc <cells> <MiB>".
"""

import os
import resource
import sys
import time

_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..")
sys.path[:0] = [os.path.join(_ROOT, "sdk", "python"), os.path.join(_ROOT, "examples", "python")]

import numpy as np  # noqa: E402

import gridbatch_model  # noqa: E402
import reference_model  # noqa: E402

POISON = {int(x) for x in os.environ.get("POISON_IDS", "").split(",") if x}
MODE = os.environ.get("POISON_MODE", "raise")
HEAL = os.environ.get("POISON_HEAL_FILE", "")
MIB_PER_CELL = float(os.environ.get("POISON_MIB_PER_CELL", "0"))


def mark(line):
    fd = os.open("poison.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def first_time(name):
    try:
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        return False


def compute(cells):
    ids = [int(g) for g in cells["grid_id"]]
    n = len(ids)
    if MIB_PER_CELL:
        mib = int(n * MIB_PER_CELL)
        mark("alloc %d %d" % (n, mib))
        hog = np.ones((mib << 20) // 8)  # ones: every page is touched
        time.sleep(0.6)
        del hog
    hit = [g for g in ids if g in POISON]
    if hit and HEAL and os.path.exists(HEAL):
        mark("healed %s %d" % (",".join(map(str, hit)), n))
        hit = []
    if hit and MODE == "once" and not first_time("once-%d" % hit[0]):
        mark("recovered %s %d" % (",".join(map(str, hit)), n))
        hit = []
    if hit:
        mark("hit %s %d %s" % (",".join(map(str, hit)), n, MODE))
        if MODE == "abort":
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.abort()
        if MODE == "permanent":
            raise gridbatch_model.Permanent("poisoned cells %s" % hit)
        raise ValueError("poisoned cells %s" % hit)
    return reference_model.ph(cells)


if __name__ == "__main__":
    gridbatch_model.serve(compute, inputs=reference_model.INPUTS, series=reference_model.SERIES,
                          years=reference_model.YEARS, first_year=reference_model.FIRST_YEAR)
