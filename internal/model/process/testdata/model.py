"""A test model for internal/model/process: the reference ph, misbehaving on
demand. argv[1] picks the behaviour; with a second argument, only on the
chunks whose first grid_id is in it (comma-separated)."""
import os
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "..", "sdk", "python"))
sys.path.insert(0, os.path.join(here, "..", "..", "..", "..", "examples", "python"))

import numpy as np  # noqa: E402
import gridbatch_model  # noqa: E402
import reference_model  # noqa: E402

behaviour = sys.argv[1]
only = set(int(x) for x in sys.argv[2].split(",")) if len(sys.argv) > 2 else None


def compute(cells):
    hit = only is None or int(cells["grid_id"][0]) in only
    if hit and behaviour == "hang":
        subprocess.Popen(["sleep", "1000"])
        signal_ignored()
        while True:
            time.sleep(1)
    if hit and behaviour == "abort":
        os.abort()
    if hit and behaviour == "exit":
        sys.stdout.flush()
        os._exit(0)
    if hit and behaviour == "raise":
        raise ValueError("boom in cell %d" % cells["grid_id"][0])
    if hit and behaviour == "memory":
        block = np.ones(400 * 1024 * 1024 // 8)  # 400 MiB, touched
        time.sleep(5)
        del block
    if behaviour == "print":
        print("computing %d cells" % len(cells["grid_id"]), flush=True)
        print("a warning on stderr", file=sys.stderr, flush=True)
    out = reference_model.ph(cells)
    if hit and behaviour == "shape":
        return out[:, :2, :]
    if hit and behaviour == "int":
        return out.astype(np.int64)
    return out


def signal_ignored():
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    if behaviour == "refuse":
        gridbatch_model.serve(compute, inputs=["rain"])
    else:
        gridbatch_model.serve(compute)
