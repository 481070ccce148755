"""Once in the scenario, on a chunk after its first (so the chunk's timeout starts
with the hang, not with the process's start): start a child (sleep 1000), ignore
SIGTERM and sleep forever."""

import os
import signal
import subprocess
import time

import chaos_common

served = 0


def compute(cells):
    global served
    served += 1
    if served > 1 and chaos_common.once("hang.marker"):
        child = subprocess.Popen(["sleep", "1000"])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("chaos-hang: pid %d hangs, child pid %d" % (os.getpid(), child.pid), flush=True)
        while True:
            time.sleep(3600)
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
