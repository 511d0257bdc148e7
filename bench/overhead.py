"""Per-step Python overhead of Stream.step_into: step_into time minus the C step (the same step
run n times in one C loop, Stream._c_loop) minus the cost of calling an empty Python function
from the same loop. Medians of interleaved repetitions (the machine is noisy).

    python bench/overhead.py [--reps 15]
"""
import argparse
import time

import numpy as np

import fastrnn
from fastrnn import ir


def per_call(f, a, b, n):
    t0 = time.perf_counter()
    for _ in range(n):
        f(a, b)
    return (time.perf_counter() - t0) / n * 1e9


def noop(a, b):
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("-n", type=int, default=100000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cases = {
        "Dense(1->1)": [ir.Dense(np.ones((1, 1), np.float32))],
        "LSTM(64)": [ir.Recurrent("lstm", [{"W_ih": rng.uniform(-.1, .1, (256, 64)).astype(np.float32),
                                             "W_hh": rng.uniform(-.1, .1, (256, 64)).astype(np.float32)}])],
    }
    print(f"isa={fastrnn.cpu_info()['isa']}; ns per step, median of {args.reps}")
    for name, layers in cases.items():
        m = fastrnn.Model(layers)
        s = m.stream(1)
        x = np.ones((1, layers[0].input_size), np.float32)
        out = np.empty((1, m.output_size), np.float32)
        call, c, py = [], [], []
        for _ in range(args.reps):
            call.append(per_call(noop, x, out, args.n))
            c.append(s._c_loop(x, out, args.n) / args.n * 1e9)
            py.append(per_call(s.step_into, x, out, args.n))
        call, c, py = np.median(call), np.median(c), np.median(py)
        print(f"{name:12s} empty call {call:6.0f}  C step {c:7.0f}  step_into {py:7.0f}  "
              f"overhead over C step {py - c:5.0f}  of which the wrapper {py - c - call:5.0f}")


if __name__ == "__main__":
    main()
