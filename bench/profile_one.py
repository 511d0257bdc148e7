"""Run one bench workload's fastrnn predict in a loop, for a profiler:

    perf record -g python bench/profile_one.py seq_lstm256_b64 20
    perf report --no-children --sort symbol

PRECISION=int8 (or bf16) profiles the model at that precision. Prints the median ms/call. Same weights and inputs as bench/run.py (bench/workloads.py); whole
sequences only (`seq` workloads)."""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import workloads as W  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import ir  # noqa: E402


def main(name, reps=10):
    wl = {w.name: w for w in W.WORKLOADS}[name]
    m = fastrnn.Model(W.ir_layers(wl.net, W.make_weights(wl.net), ir))
    if os.environ.get("PRECISION"):   # bf16 / int8: the model at that precision
        m = m.with_precision(os.environ["PRECISION"])
    rng = np.random.default_rng(0)
    x = rng.integers(0, wl.net.vocab, (wl.batch, wl.T)) if wl.net.vocab else \
        rng.normal(size=(wl.batch, wl.T, wl.net.input)).astype(np.float32)
    m.predict(x)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        m.predict(x)
        ts.append(time.perf_counter() - t)
    print(f"{name}: median {np.median(ts) * 1e3:.2f} ms/call over {reps}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10)
