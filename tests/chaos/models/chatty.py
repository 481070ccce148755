"""Prints a line to stdout and one to stderr on every chunk."""

import os
import sys

import chaos_common


def compute(cells):
    n = len(cells["grid_id"])
    print("chaos-chatty stdout: pid %d, %d cells" % (os.getpid(), n), flush=True)
    print("chaos-chatty stderr: pid %d, %d cells" % (os.getpid(), n), file=sys.stderr, flush=True)
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
