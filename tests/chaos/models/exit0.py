"""Exits 0 (sys.exit) in the middle of its first chunk, once in the whole scenario."""

import os
import sys

import chaos_common


def compute(cells):
    if chaos_common.once("exit0.marker"):
        print("chaos-exit0: pid %d exits 0" % os.getpid(), flush=True)
        sys.exit(0)
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
