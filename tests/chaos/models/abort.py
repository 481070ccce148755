"""Aborts (SIGABRT, no core dump) on every chunk holding cell CHAOS_ABORT_GRID_ID."""

import os
import resource

import chaos_common

ABORT_ID = int(os.environ["CHAOS_ABORT_GRID_ID"])


def compute(cells):
    if ABORT_ID in cells["grid_id"]:
        print("chaos-abort: pid %d aborts" % os.getpid(), flush=True)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.abort()
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
