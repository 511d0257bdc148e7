"""fastrnn at fp32, bf16 and int8 on the bench workloads: time relative to fp32 (the three timed
interleaved in one process, rounds of each in a rotating order, medians) and the error against fp32.

    python bench/precision.py                       # every workload, 7 rounds
    python bench/precision.py stream_lstm256,seq_lstm256_b64 --rounds 11

Streams time step_into over the workload's quick step count; sequences one predict call. The
error columns are Model.compare against the fp32 model on the timed input (max |diff|, SQNR).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastrnn  # noqa: E402
from bench import workloads as W  # noqa: E402

PRECISIONS = ("fp32", "bf16", "int8")


def timer(wl, m):
    if wl.kind == "stream":
        steps = wl.quick_steps
        x = W.make_inputs(wl, steps=steps)

        def run():
            s, out = m.stream(batch_size=1), np.empty((1, m.output_size), np.float32)
            t = time.perf_counter()
            for i in range(steps):
                s.step_into(x[i], out)
            return (time.perf_counter() - t) / steps * 1e6
        return run, x[:, 0][None] if x.ndim == 2 else x.transpose(1, 0, 2)
    x = W.make_inputs(wl)

    def run():
        t = time.perf_counter()
        m.predict(x)
        return (time.perf_counter() - t) * 1e3
    return run, x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workloads", nargs="?", default=",".join(w.name for w in W.WORKLOADS))
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    print(f"{'workload':24s} {'unit':8s}" + "".join(f"{q:>10s}" for q in PRECISIONS)
          + "  bf16/fp32 int8/fp32  max|diff| bf16, int8  SQNR dB bf16, int8")
    for name in args.workloads.split(","):
        wl = next(w for w in W.WORKLOADS if w.name == name)
        base = fastrnn.Model(W.ir_layers(wl.net, W.make_weights(wl.net), fastrnn.ir))
        models = {q: base if q == "fp32" else base.with_precision(q) for q in PRECISIONS}
        runs = {q: timer(wl, m) for q, m in models.items()}
        for q in PRECISIONS:
            runs[q][0]()                                    # warm up
        times = {q: [] for q in PRECISIONS}
        for r in range(args.rounds):                          # the order rotates round by round
            for q in PRECISIONS[r % 3:] + PRECISIONS[:r % 3]:
                times[q].append(runs[q][0]())
        med = {q: float(np.median(v)) for q, v in times.items()}
        x = runs["fp32"][1][:4, :200]
        errs = [models[q].compare(base, x, stream_steps=0) for q in ("bf16", "int8")]
        print(f"{name:24s} {wl.unit:8s}" + "".join(f"{med[q]:10.2f}" for q in PRECISIONS)
              + f"  {med['bf16'] / med['fp32']:9.2f} {med['int8'] / med['fp32']:9.2f}"
              + f"  {errs[0]['max_abs']:.1e}, {errs[1]['max_abs']:.1e}"
              + f"   {errs[0]['sqnr_db']:.1f}, {errs[1]['sqnr_db']:.1f}", flush=True)


if __name__ == "__main__":
    main()
