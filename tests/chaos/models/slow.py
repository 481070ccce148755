"""Starts a child (sleep 1000) at start, then sleeps CHAOS_SLEEP seconds per chunk."""

import os
import subprocess
import time

import chaos_common

SLEEP = float(os.environ.get("CHAOS_SLEEP", "1"))
CHILD = subprocess.Popen(["sleep", "1000"])  # must not outlive the worker either


def compute(cells):
    time.sleep(SLEEP)
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
