"""Test models of scripts/compose-test.sh (declared in models.yaml).

    test_model.py slow   every chunk takes 0.4 s; each value is mu0 + year index
    test_model.py hang   like slow without the sleep, but the first chunk this
                         container serves sleeps for an hour (a hung model),
                         after writing its pid to /tmp/gridbatch-hung-model.pid
"""

import os
import sys
import time

import numpy as np

import gridbatch_model

HUNG_PID = "/tmp/gridbatch-hung-model.pid"


def values(cells):
    n = len(cells["grid_id"])
    return cells["mu0"][:, None, None] + np.zeros((n, 3, 80)) + np.arange(80.0)


def slow(cells):
    time.sleep(0.4)
    return values(cells)


def hang(cells):
    try:  # the first chunk in this container: one process wins the file
        fd = os.open(HUNG_PID, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return values(cells)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    print("hanging on purpose, pid %d" % os.getpid(), flush=True)
    time.sleep(3600)
    return values(cells)


if __name__ == "__main__":
    gridbatch_model.serve({"slow": slow, "hang": hang}[sys.argv[1]], inputs=["mu0", "sigma", "xi"])
