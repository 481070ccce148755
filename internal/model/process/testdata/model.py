"""A test model for internal/model/process: the reference ph, misbehaving on
demand ("layout": the reference ph computing the layout the worker sends). argv[1] picks the behaviour; with a second argument, only on the
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
    if hit and behaviour == "report":
        report()
    if hit and behaviour == "claim":
        claim(6 << 30)
    if hit and behaviour == "setsid":
        grandchild(int(os.environ["GRIDBATCH_TEST_ALLOC_MIB"]))
    if behaviour == "print":
        print("computing %d cells" % len(cells["grid_id"]), flush=True)
        print("a warning on stderr", file=sys.stderr, flush=True)
    out = reference_model.ph(cells)
    if hit and behaviour == "shape":
        return out[:, :2, :]
    if hit and behaviour == "int":
        return out.astype(np.int64)
    return out


def report():
    """Print what this process can reach, as one JSON line."""
    import json

    def attempt(path):
        try:
            with open(path, "rb") as f:
                return "read %d bytes" % len(f.read())
        except OSError as e:
            return type(e).__name__
    home = os.environ.get("HOME", "")
    try:
        with open(os.path.join(home, "probe"), "w") as f:
            f.write("x")
        home_writable = True
    except OSError:
        home_writable = False
    worker = os.environ.get("GRIDBATCH_TEST_WORKER_PID", "0")
    print("report: " + json.dumps({
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "env": dict(os.environ),
        "fds": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "worker_environ": attempt("/proc/%s/environ" % worker),
        "secret_file": attempt(os.environ.get("GRIDBATCH_TEST_SECRET_FILE", "/nonexistent")),
        "home_owner": os.stat(home).st_uid if os.path.isdir(home) else -1, "home_writable": home_writable,
    }), flush=True)


def claim(size):
    """Write a RESULT header claiming size bytes of data, a few of them, then hang."""
    import json
    import struct
    meta = json.dumps({"shape": [size // 8], "dtype": "float64"}).encode()
    os.write(4, struct.pack("<IIQ", 4, len(meta), size) + meta + b"\0" * 4096)
    time.sleep(60)


def grandchild(mib):
    """Start a process in a session of its own that allocates mib MiB and holds them."""
    code = "import time, numpy as np; b = np.ones(%d * 1024 * 1024 // 8); time.sleep(60)" % mib
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)  # setsid() before exec
    print("grandchild pid %d" % p.pid, flush=True)


def signal_ignored():
    import signal
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


if __name__ == "__main__":
    if behaviour == "refuse":
        gridbatch_model.serve(compute, inputs=["rain"])
    elif behaviour == "layout":  # the reference ph as examples/ serves it: the layout the worker sends
        gridbatch_model.serve(reference_model.ph, setup=reference_model.setup)
    else:
        gridbatch_model.serve(compute)
