#!/usr/bin/python3
"""Time the numpy reference kernel on one core: the numpy side of figure 1.

Usage (by internal/bench, from the repository root):

    /usr/bin/python3 tests/bench/numpy_kernel.py ph|hazard SECONDS < inputs

stdin holds the cells of BenchmarkCompute (internal/grid/model_test.go) as
little-endian float64 triples mu0, sigma, xi. The script runs
examples/python/reference_model.py's function for the kind on all of them at
once, as a model process does for a chunk, for about SECONDS, and prints

    ns/cell <mean wall-clock ns per cell> cpu-ns/cell <CPU time per cell> calls <n> cells <cells per call>

Run it with OMP_NUM_THREADS=1 (one core, like the Go benchmark's one goroutine).
"""

import os
import sys
import time

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ in the checkout

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path[:0] = [os.path.join(ROOT, "examples", "python"), os.path.join(ROOT, "sdk", "python")]
import reference_model  # noqa: E402


def main(argv):
    if len(argv) != 3 or argv[1] not in reference_model.KINDS:
        sys.stderr.write("usage: numpy_kernel.py ph|hazard SECONDS < inputs\n")
        return 2
    fn = reference_model.KINDS[argv[1]]
    seconds = float(argv[2])
    params = np.frombuffer(sys.stdin.buffer.read(), dtype="<f8").reshape(-1, 3)
    cells = {"grid_id": np.arange(len(params), dtype=np.int64),
             "mu0": params[:, 0].copy(), "sigma": params[:, 1].copy(), "xi": params[:, 2].copy()}
    fn(cells)  # warm up
    calls = 0
    start, cpu = time.perf_counter(), time.process_time()
    while True:
        fn(cells)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    cpu = time.process_time() - cpu
    n = calls * len(params)
    print("ns/cell %.1f cpu-ns/cell %.1f calls %d cells %d" % (elapsed * 1e9 / n, cpu * 1e9 / n, calls, len(params)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
