"""On its first chunk, once: a RESULT header claiming 6 GiB of data on fd 4, then a hang."""

import json
import os
import struct
import time

import chaos_common

CLAIM = 6 << 30


def compute(cells):
    if chaos_common.once("claim.marker"):
        print("chaos-claim: pid %d claims %d bytes" % (os.getpid(), CLAIM), flush=True)
        meta = json.dumps({"shape": [CLAIM // 8], "dtype": "float64"}).encode()
        os.write(4, struct.pack("<IIQ", 4, len(meta), CLAIM) + meta + b"\0" * 65536)
        time.sleep(60)
    return chaos_common.ph(cells)


if __name__ == "__main__":
    chaos_common.serve(compute)
