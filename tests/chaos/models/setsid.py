"""On its first chunk, once: starts a grandchild in a session of its own (setsid)
that allocates and touches CHAOS_ALLOC_MIB MiB and holds them, then waits."""

import os
import subprocess
import sys
import time

import chaos_common

ALLOC_MIB = int(os.environ.get("CHAOS_ALLOC_MIB", "400"))


def compute(cells):
    if chaos_common.once("setsid.marker"):
        code = "import time, numpy as np; hog = np.ones(%d * 1024 * 1024 // 8); time.sleep(120)" % ALLOC_MIB
        child = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        print("chaos-setsid: pid %d grandchild %d" % (os.getpid(), child.pid), flush=True)
        time.sleep(60)
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
