"""Serving benchmarks: many live conversations over one model.

    python bench/serving.py                 # pool and threads, full (about two minutes)
    python bench/serving.py --quick         # fewer ticks and repetitions
    python bench/serving.py --json out.json

pool: an LSTM 256->256 (bench/workloads.py's weights for stream_lstm256) with 64 and 512 live
conversations; every tick steps a random half of them (one new input row each). Timed per tick,
three ways, on the same inputs (outputs checked equal first):
  - pool:         fastrnn.StreamPool.step_into(slots, x, out): one call per tick;
  - streams:      one fastrnn Stream per conversation, step_into on each stepped one;
  - onnxruntime:  one session on a T=1 graph of batch len(slots) (the hand-written ONNX LSTM of
                  bench/workloads.py), the states carried by hand: gathered from per-conversation
                  arrays with fancy indexing before the call, scattered back after it.
Reports the median µs per tick (and per conversation-step) over repetitions, the spread (min-max)
and throughput in conversation-steps/s; the ratios say how much faster the pool is.

threads: N Python threads, each with its own batch-1 Stream on ONE shared Model, stepping
concurrently (the engine releases the GIL for calls of more than ~2 µs: fastrnn/_engine.pyx, the
GIL rule); aggregate steps/s at 1 and 2 threads, for LSTMs of --hidden sizes (default 64, a ~3
µs step where the Python part of each call limits scaling, and 256, ~100 µs).

fastrnn.set_num_threads is 1 (or --engine-threads for the pool part); in the threads part the
threads are the caller's.
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import workloads as W  # noqa: E402


def _median_spread(ts):
    return statistics.median(ts), min(ts), max(ts)


def _layers(net):
    import fastrnn
    return W.ir_layers(net, W.make_weights(net), fastrnn.ir)


def pool_bench(live, ticks, reps, seed=0, threads=1):
    import fastrnn
    net = W.Net("lstm", 256, 256)
    sd = W.make_weights(net)
    m = fastrnn.Model(W.ir_layers(net, sd, fastrnn.ir))
    rng = np.random.default_rng(seed)
    n = live // 2
    plan = [np.sort(rng.choice(live, n, replace=False)) for _ in range(ticks)]
    xs = rng.standard_normal((ticks, n, net.input)).astype(np.float32)

    pool = fastrnn.StreamPool(m, live)
    for _ in range(live):
        pool.open()
    streams = [m.stream(1) for _ in range(live)]
    out = np.empty((n, net.hidden), np.float32)

    def run_pool():
        for slots, x in zip(plan, xs):
            pool.step_into(slots, x, out)
        return out

    def run_streams():
        for slots, x in zip(plan, xs):
            for i, s in enumerate(slots):
                streams[s].step_into(x[i:i + 1], out[i:i + 1])
        return out

    cols = {"pool": run_pool, "streams": run_streams}
    try:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(W.onnx_model(net, sd, n, 1, with_state=True).SerializeToString(),
                                    so, providers=["CPUExecutionProvider"])
        H = np.zeros((1, live, net.hidden), np.float32)
        C = np.zeros((1, live, net.hidden), np.float32)

        def run_ort():
            y = None
            for slots, x in zip(plan, xs):
                y, h, c = sess.run(None, {"x": x[:, None], "h0_l0": H[:, slots], "c0_l0": C[:, slots]})
                H[:, slots] = h
                C[:, slots] = c
            return y[:, 0]
        cols["onnxruntime"] = run_ort
    except ImportError as e:
        print(f"  onnxruntime: n/a ({e})")

    # the same ticks from zero states: every column's last output must agree
    ref = run_pool().copy()
    np.testing.assert_array_equal(run_streams(), ref)
    if "onnxruntime" in cols:
        d = float(np.abs(cols["onnxruntime"]() - ref).max())
        assert d < 1e-5, f"onnxruntime differs from fastrnn by {d}"

    res = {}
    for name, f in cols.items():
        f()   # warm
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t0) / ticks)
        med, lo, hi = _median_spread(ts)
        res[name] = {"us_per_tick": med * 1e6, "min": lo * 1e6, "max": hi * 1e6,
                     "us_per_conversation_step": med * 1e6 / n, "steps_per_s": n / med}
    return {"live": live, "stepped_per_tick": n, "ticks": ticks, "reps": reps, "results": res}


def threads_bench(hidden, steps, reps, nthreads):
    import fastrnn
    net = W.Net("lstm", hidden, hidden)
    m = fastrnn.Model(_layers(net))
    x = np.random.default_rng(1).standard_normal((1, hidden)).astype(np.float32)
    res = {}
    for nt in nthreads:
        ts = []
        for _ in range(reps):
            streams = [m.stream(1) for _ in range(nt)]
            outs = [np.empty((1, hidden), np.float32) for _ in range(nt)]
            start = threading.Barrier(nt + 1)

            def work(i):
                s, o = streams[i], outs[i]
                start.wait()
                for _ in range(steps):
                    s.step_into(x, o)

            th = [threading.Thread(target=work, args=(i,)) for i in range(nt)]
            for t in th:
                t.start()
            start.wait()
            t0 = time.perf_counter()
            for t in th:
                t.join()
            ts.append(time.perf_counter() - t0)
        med, lo, hi = _median_spread(ts)
        res[nt] = {"steps_per_s": nt * steps / med, "us_per_step_per_thread": med / steps * 1e6,
                   "spread_s": [lo, hi]}
    return {"hidden": hidden, "steps_per_thread": steps, "reps": reps, "results": res}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--only", choices=("pool", "threads"))
    ap.add_argument("--engine-threads", type=int, default=1, metavar="N",
                    help="pool: fastrnn.set_num_threads(N) for the pool and the streams (default 1)")
    ap.add_argument("--hidden", default="64,256", help="threads: LSTM sizes (default 64,256)")
    ap.add_argument("--gil-flops", type=float, metavar="F",
                    help="development: release the GIL for engine calls of at least F flops "
                         "(fastrnn/_engine.pyx, the GIL rule; 0 = always)")
    args = ap.parse_args(argv)
    import fastrnn
    fastrnn.set_num_threads(1)
    if args.gil_flops is not None:
        fastrnn._engine._set_gil_release_flops(args.gil_flops)
    print(f"fastrnn {fastrnn.__version__}, {fastrnn.cpu_info()['isa']} kernels, {os.cpu_count()} CPUs")
    out = {"pool": [], "threads": []}
    if args.only in (None, "pool"):
        fastrnn.set_num_threads(args.engine_threads)
        print(f"\nStreamPool: LSTM 256->256, a random half of the live conversations stepped per tick, "
              f"engine threads {args.engine_threads} (onnxruntime: intra-op threads the same)")
        print(f"  {'live':>5} {'engine':<12} {'µs/tick':>9} {'spread':>15} {'µs/conv-step':>13} "
              f"{'conv-steps/s':>13} {'pool is':>9}")
        for live in (64, 512):
            ticks = (20 if args.quick else 60) if live == 64 else (4 if args.quick else 12)
            r = pool_bench(live, ticks, 3 if args.quick else 7, threads=args.engine_threads)
            out["pool"].append(r)
            base = r["results"]["pool"]["us_per_tick"]
            for name, v in r["results"].items():
                ratio = "" if name == "pool" else f"{v['us_per_tick'] / base:.1f}x"
                print(f"  {live:>5} {name:<12} {v['us_per_tick']:>9.0f} "
                      f"{v['min']:>7.0f}-{v['max']:<7.0f} {v['us_per_conversation_step']:>13.2f} "
                      f"{v['steps_per_s']:>13,.0f} {ratio:>9}")
    fastrnn.set_num_threads(1)
    if args.only in (None, "threads"):
        print("\nThreads: each Python thread steps its own batch-1 Stream on one shared Model")
        print(f"  {'model':<10} {'threads':>7} {'steps/s':>12} {'µs/step/thread':>15} {'scaling':>8}")
        for hidden in map(int, args.hidden.split(",")):
            steps = max(500, int(2e9 / (8 * hidden * 2 * hidden)))   # about a second per thread
            if args.quick:
                steps //= 4
            r = threads_bench(hidden, steps, 3 if args.quick else 5, (1, 2))
            out["threads"].append(r)
            one = r["results"][1]["steps_per_s"]
            for nt, v in r["results"].items():
                print(f"  LSTM {hidden:<5} {nt:>7} {v['steps_per_s']:>12,.0f} "
                      f"{v['us_per_step_per_thread']:>15.2f} {v['steps_per_s'] / one:>7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
