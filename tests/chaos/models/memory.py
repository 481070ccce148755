"""On its first chunk, once: allocates and touches CHAOS_ALLOC_MIB MiB, then holds it."""

import os
import time

import numpy as np

import chaos_common

ALLOC_MIB = int(os.environ.get("CHAOS_ALLOC_MIB", "400"))


def compute(cells):
    if chaos_common.once("memory.marker"):
        print("chaos-memory: pid %d allocates %d MiB" % (os.getpid(), ALLOC_MIB), flush=True)
        hog = np.ones((ALLOC_MIB << 20) // 8)  # ones, not zeros: every page is written
        time.sleep(60)
        del hog
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
