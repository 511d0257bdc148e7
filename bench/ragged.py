"""The cost of fastrnn.predict_ragged against predict on batches already sorted and padded.

    python bench/ragged.py [--n 4000] [--max-batch 256] [--reps 5]

Model: bench/workloads.py's IMDB-style net (emb_lstm32_dense_b128: Embedding(10000, 32) -> LSTM(32) -> Dense, one
output per review), reviews of 10 to 500 tokens (log-uniform). Timed, interleaved, median of
--reps: predict_ragged on the reviews in their original (shuffled) order, and the same batches
prepared beforehand (sorted, padded, lengths) then run by predict in a loop: the difference is
predict_ragged's own work (sorting, padding, scattering back). Also reported: predict on the
reviews padded to 500 in their own order with lengths (no bucketing), to show what bucketing
saves. Results are checked equal first.
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import workloads as W  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    import fastrnn
    net = next(w.net for w in W.WORKLOADS if w.name == "emb_lstm32_dense_b128")
    m = fastrnn.Model(W.ir_layers(net, W.make_weights(net), fastrnn.ir))
    rng = np.random.default_rng(0)
    lens = np.exp(rng.uniform(np.log(10), np.log(500), a.n)).astype(int)
    seqs = [rng.integers(1, net.vocab, int(t)) for t in lens]

    order = np.argsort(lens, kind="stable")
    batches = []
    for p in range(0, a.n, a.max_batch):
        idx = order[p:p + a.max_batch]
        x = np.zeros((len(idx), lens[idx].max()), np.int64)
        for r, j in enumerate(idx):
            x[r, :lens[j]] = seqs[j]
        batches.append((x, lens[idx]))
    unsorted = []
    for p in range(0, a.n, a.max_batch):
        idx = np.arange(p, min(a.n, p + a.max_batch))
        x = np.zeros((len(idx), lens[idx].max()), np.int64)
        for r, j in enumerate(idx):
            x[r, :lens[j]] = seqs[j]
        unsorted.append((x, lens[idx]))

    def ragged():
        return fastrnn.predict_ragged(m, seqs, max_batch=a.max_batch)

    def presorted():
        return [m.predict(x, lengths=n) for x, n in batches]

    def unbucketed():
        return [m.predict(x, lengths=n) for x, n in unsorted]

    y = ragged()
    np.testing.assert_array_equal(np.concatenate(presorted())[np.argsort(order)], y)
    ts = {"predict_ragged": [], "predict on presorted batches": [], "predict, batches in input order": []}
    fns = dict(zip(ts, (ragged, presorted, unbucketed)))
    for _ in range(a.reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    base = statistics.median(ts["predict on presorted batches"])
    print(f"# bench/ragged.py: {a.n} reviews of 10-500 tokens, {net.cell.upper()} {net.hidden}, "
          f"max_batch {a.max_batch}; isa {fastrnn.cpu_info()['isa']}, median of {a.reps}")
    for k, v in ts.items():
        med = statistics.median(v)
        print(f"{k:<34} {1e3 * med:8.1f} ms  {a.n / med:9.0f} sequences/s  {med / base:5.2f}x")


if __name__ == "__main__":
    main()
