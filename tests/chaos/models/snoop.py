"""On its first chunk, once: looks for the worker's secrets as an attacker would.

It prints one line, chaos-snoop: <json>, with its uid, its environment, what
reading its worker's /proc/<pid>/environ gave, and every process whose
environ it could read that holds GRIDBATCH_DATABASE_URL or GRIDBATCH_REDIS_URL.
"""

import json
import os

import chaos_common


def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def attempt(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        return type(e).__name__


def compute(cells):
    if chaos_common.once("snoop.marker"):
        worker = ppid_of(os.getppid())  # model → supervisor → worker
        got = attempt("/proc/%d/environ" % worker)
        leaks = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                env = attempt("/proc/%s/environ" % name)
                if isinstance(env, bytes) and (b"GRIDBATCH_DATABASE_URL=" in env or b"GRIDBATCH_REDIS_URL=" in env):
                    leaks.append(int(name))
        print("chaos-snoop: " + json.dumps({
            "pid": os.getpid(), "uid": os.getuid(), "worker": worker, "env": dict(os.environ),
            "worker_environ": got if isinstance(got, str) else "read %d bytes" % len(got), "leaks": leaks,
        }), flush=True)
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
