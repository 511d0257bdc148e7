"""Scoring a Parquet dataset with Ray Data and Spark: fastrnn.distributed against the same
pipelines around onnxruntime, and fastrnn.predict_ragged in one process.

    python bench/distributed.py                      # 100,000 sequences, 1 and 2 workers, 3 runs each
    python bench/distributed.py --n 20000 --reps 1 --only direct,ray --json out.json

Data: 100,000 token sequences of 1..400 tokens (uniform, fixed seed; tests/test_distributed.py's
dataset), as 10 Parquet files (id int64, tokens list<int32>) in a temporary directory. Model: the
IMDB-style classifier, Embedding(2000, 32) -> LSTM(32) -> Dense(1, sigmoid) on the final hidden
state, a torch module with a fixed seed; fastrnn.convert makes the fastrnn model; onnxruntime gets
the same weights through torch.onnx.export (below). Every run's results are checked first: the
fastrnn pipelines bit-identical to predict_ragged in this process, onnxruntime within 1e-5.

What onnxruntime runs (a careful user's pipeline; the same in each place):
  - the export: pack_padded_sequence does not export (torch 2.13: the TorchScript exporter fails
    in LSTM's packed path; torch.export rejects it), so the exported module runs the LSTM over the
    padded batch and takes the output at each row's last valid step, out[arange(B), lengths - 1]:
    for a one-way LSTM this is exactly the packed final state. Exported with dynamo=False
    (one ONNX LSTM node) and dynamic batch and time axes.
  - per batch Ray or Spark hands over: sort by length, cut into groups of 256, pad each group to
    its longest sequence, run, put the results back in order (the sorting predict_ragged does;
    without it the padding costs ~3x, bench/ragged.py). One InferenceSession per worker process
    (Ray: in the actor's __init__; Spark: cached in the Python worker, as fastrnn's is), with
    intra_op_num_threads 1 per worker, as fastrnn runs 1 engine thread per 1-CPU worker.

Pipelines, each timed from reading the Parquet files to having every row's result:
  - direct: one process, pyarrow.parquet.read_table + predict_ragged on the column (fastrnn at 1
    and 2 engine threads; onnxruntime's ragged loop at 1 and 2 intra-op threads);
  - Ray Data (local cluster, num_cpus=2): read_parquet -> map_batches(callable class, actor pool
    of 1 or 2, batch_format="pyarrow", batch_size 4096, keep id + prediction) -> the blocks'
    Arrow tables fetched to the driver. With 2 workers each actor asks for 0.5 CPU: two 1-CPU
    actors hold both CPUs of a 2-CPU cluster and Ray's read tasks never run (ray-project/ray#44687).
    DataContext.target_max_block_size is 8 MiB so the 28 MB of files become ~10 blocks.
  - Spark (local[1] / local[2]; 10 partitions, one per file; Arrow batches of 10,000 rows):
    spark_predict (mapInPandas: whole rows go to Python and back), spark_udf (a pandas_udf in
    df.select("id", udf("tokens")): only the token column goes to Python), and onnxruntime in a
    user-written pandas_udf; the action is .write.format("noop") (every row computed, nothing
    written).
  - overhead: the same pipelines with no model (Ray: an actor that adds a constant column; Spark:
    mapInPandas and a pandas_udf that do the same), and reading alone, so that framework cost and
    model cost can be told apart; and, in this process, what fastrnn's wrappers add per batch
    format over predict_ragged on the same batches (Arrow to NumPy / pandas and back).

Timing: every configuration runs once untimed (checked, and warm), then --reps times, the
configurations of one framework interleaved round by round; the medians are reported. The
machine may be shared: read the medians, and rerun before believing a few percent.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import types

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402

SEED_DATA, SEED_MODEL = 2024, 0
VOCAB, MAX_BATCH, RAY_BATCH, SPARK_BATCH = 2000, 256, 4096, 10000


# ---- data and models ---------------------------------------------------------------------------
def make_data(root, n, files=10):
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(SEED_DATA)
    lens = rng.integers(1, 401, n)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(0, VOCAB, int(offsets[-1]), dtype=np.int32)))
    table = pa.table({"id": np.arange(n, dtype=np.int64), "tokens": tokens})
    where = os.path.join(root, "imdb")
    os.makedirs(where)
    step = -(-n // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), os.path.join(where, f"part-{i:02d}.parquet"), row_group_size=5000)
    return where, int(offsets[-1])


def make_models(root):
    """(fastrnn Model, path of its .frnn, path of the .onnx) from one seeded torch module."""
    import torch

    import fastrnn

    class Imdb(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(VOCAB, 32)
            self.lstm = torch.nn.LSTM(32, 32, batch_first=True)
            self.fc = torch.nn.Linear(32, 1)

        def forward(self, x):
            _, (h, _) = self.lstm(self.emb(x))
            return torch.sigmoid(self.fc(h[-1]))

    class ImdbLast(Imdb):
        """The export: the LSTM over the padded batch, the output at each row's last valid step."""
        def forward(self, x, lengths):
            out, _ = self.lstm(self.emb(x))
            return torch.sigmoid(self.fc(out[torch.arange(x.shape[0]), lengths - 1]))

    torch.manual_seed(SEED_MODEL)
    module = Imdb().eval()
    model = fastrnn.convert(module, example_input=torch.zeros(2, 5, dtype=torch.long))
    frnn = os.path.join(root, "imdb.frnn")
    model.save(frnn)
    last = ImdbLast().eval()
    last.load_state_dict(module.state_dict())
    onnx_path = os.path.join(root, "imdb.onnx")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(last, (torch.zeros(2, 5, dtype=torch.long), torch.tensor([5, 3])), onnx_path,
                          input_names=["x", "lengths"], output_names=["y"], dynamo=False,
                          dynamic_axes={"x": {0: "batch", 1: "time"}, "lengths": {0: "batch"}, "y": {0: "batch"}})
    return model, frnn, onnx_path


# ---- onnxruntime, as a careful user runs it ---------------------------------------------------------
def ort_session(path, threads=1):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_ragged(sess, seqs, max_batch=MAX_BATCH):
    """Sequences (a pyarrow list column or a list of arrays) -> (N, 1): sorted by length, groups of
    max_batch padded to their longest, results back in input order."""
    if hasattr(seqs, "offsets") or hasattr(seqs, "chunks"):
        col = seqs.combine_chunks() if hasattr(seqs, "chunks") else seqs
        offs = np.asarray(col.offsets)
        vals = col.values.to_numpy()
        seqs = [vals[a:b] for a, b in zip(offs[:-1], offs[1:])]
    n = len(seqs)
    lens = np.fromiter((len(s) for s in seqs), np.int64, n)
    order = np.argsort(lens, kind="stable")
    out = np.empty((n, 1), np.float32)
    for p in range(0, n, max_batch):
        idx = order[p:p + max_batch]
        x = np.zeros((len(idx), int(lens[idx[-1]])), np.int64)
        for r, j in enumerate(idx):
            x[r, :lens[j]] = seqs[j]
        out[idx] = sess.run(None, {"x": x, "lengths": lens[idx]})[0]
    return out


def _ort_worker_session(path):
    """One session per Spark Python worker process (a cache that lives in sys.modules: a function
    defined in a script is pickled with copies of its globals, so a global dict would not last)."""
    cache = sys.modules.setdefault("_bench_ort_sessions", types.ModuleType("_bench_ort_sessions"))
    sess = getattr(cache, "sess", None)
    if sess is None or cache.path != path:
        cache.sess, cache.path = ort_session(path), path
    return cache.sess


# ---- measuring ------------------------------------------------------------------------------
def timed(configs, reps):
    """configs: {name: fn() -> result}. Runs each once (result kept for the checks), then reps rounds
    interleaved. Returns ({name: [seconds]}, {name: first result})."""
    first, ts = {}, {k: [] for k in configs}
    for k, f in configs.items():
        first[k] = f()
    for _ in range(reps):
        for k, f in configs.items():
            t = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t)
    return ts, first


def check(name, ids, y, want, exact):
    ids = np.asarray(ids)
    y = np.asarray(y, np.float32).reshape(len(ids), -1)
    assert len(ids) == len(want) and np.array_equal(np.sort(ids), np.arange(len(want))), f"{name}: ids"
    if exact:
        assert np.array_equal(y, want[ids]), f"{name}: not bit-identical to predict_ragged"
        return 0.0
    d = float(np.abs(y - want[ids]).max())
    assert d <= 1e-5, f"{name}: max |diff| {d} against predict_ragged"
    return d


def _vectors(col):
    import pyarrow as pa
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(col.flatten()).reshape(len(col), -1)


# ---- the pipelines --------------------------------------------------------------------------
def bench_direct(where, model, onnx_path, reps, want):
    import pyarrow.parquet as pq

    import fastrnn
    res = {}

    def fr(threads):
        def run():
            fastrnn.set_num_threads(threads)
            try:
                t = pq.read_table(where)
                return t.column("id"), fastrnn.predict_ragged(model, t.column("tokens"), max_batch=MAX_BATCH)
            finally:
                fastrnn.set_num_threads(1)
        return run

    sessions = {1: ort_session(onnx_path, 1), 2: ort_session(onnx_path, 2)}

    def ort(threads):
        def run():
            t = pq.read_table(where)
            return t.column("id"), ort_ragged(sessions[threads], t.column("tokens"))
        return run

    def read():
        return pq.read_table(where)
    configs = {("direct", "fastrnn", 1): fr(1), ("direct", "onnxruntime", 1): ort(1),
               ("direct", "fastrnn", 2): fr(2), ("direct", "onnxruntime", 2): ort(2), ("direct", "read", 1): read}
    ts, first = timed(configs, reps)
    for k, v in first.items():
        if k[1] != "read":
            res[k + ("diff",)] = check(str(k), v[0], v[1], want, k[1] == "fastrnn")
    return ts, res


class RayOrt:
    """onnxruntime in a Ray actor: the session made once in __init__, each batch sorted and padded."""
    def __init__(self, path):
        self.sess = ort_session(path, 1)

    def __call__(self, batch):
        import pyarrow as pa
        y = ort_ragged(self.sess, batch.column("tokens"))
        return pa.table({"id": batch.column("id"), "prediction": pa.array(y[:, 0])})


class RayNoop:
    """No model: the same data flow (id and a constant column back)."""
    def __call__(self, batch):
        import pyarrow as pa
        return pa.table({"id": batch.column("id"), "prediction": pa.array(np.zeros(batch.num_rows, np.float32))})


def bench_ray(where, model, onnx_path, reps, want, workers):
    import pyarrow as pa
    import ray

    from fastrnn.distributed import RayPredictor
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             object_store_memory=500 << 20)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.target_max_block_size = 8 << 20
    res = {}
    try:
        def pipeline(cls, kwargs, n):
            def run():
                ds = ray.data.read_parquet(where)
                if cls is not None:
                    ds = ds.map_batches(cls, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=n),
                                        num_cpus=1 if n == 1 else 0.5, batch_size=RAY_BATCH, batch_format="pyarrow")
                return pa.concat_tables(ray.get(ds.to_arrow_refs()))
            return run
        configs = {("ray", "read", 2): pipeline(None, None, 2)}
        for n in workers:
            configs[("ray", "fastrnn", n)] = pipeline(
                RayPredictor, {"model": model, "column": "tokens", "keep_columns": ["id"], "max_batch": MAX_BATCH}, n)
            configs[("ray", "onnxruntime", n)] = pipeline(RayOrt, {"path": onnx_path}, n)
        configs[("ray", "no model", max(workers))] = pipeline(RayNoop, {}, max(workers))
        ts, first = timed(configs, reps)
        for k, t in first.items():
            if k[1] in ("fastrnn", "onnxruntime"):
                res[k + ("diff",)] = check(str(k), t.column("id"), _vectors(t.column("prediction")) if k[1] == "fastrnn"
                                           else np.asarray(t.column("prediction")), want, k[1] == "fastrnn")
        return ts, res
    finally:
        ray.shutdown()


def _spark_session(n):
    from pyspark.sql import SparkSession
    s = (SparkSession.builder.master(f"local[{n}]").appName("fastrnn-bench")
         .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", str(2 * n)).config("spark.driver.memory", "2g")
         .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(SPARK_BATCH))
         .config("spark.sql.files.maxPartitionBytes", str(4 << 20))       # one partition per file: 10
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    return s


def bench_spark(where, model, onnx_path, reps, want, workers):
    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import FloatType

    from fastrnn.distributed import spark_predict, spark_udf
    all_ts, res = {}, {}

    @pandas_udf(FloatType())
    def ort_udf(s: pd.Series) -> pd.Series:
        return pd.Series(ort_ragged(_ort_worker_session(onnx_path), list(s))[:, 0])

    @pandas_udf(FloatType())
    def noop_udf(s: pd.Series) -> pd.Series:
        return pd.Series(np.zeros(len(s), np.float32))

    def noop_map(batches):
        for pdf in batches:
            pdf["prediction"] = np.zeros(len(pdf), np.float32)
            yield pdf

    for n in workers:
        spark = _spark_session(n)
        try:
            df = spark.read.parquet(where)
            assert df.rdd.getNumPartitions() >= 2 * n, df.rdd.getNumPartitions()
            frames = {
                ("spark", "fastrnn (spark_predict)", n): spark_predict(df, model, "tokens", max_batch=MAX_BATCH)
                .select("id", "prediction"),
                ("spark", "fastrnn (spark_udf)", n): df.select("id", spark_udf(model, max_batch=MAX_BATCH)("tokens")
                                                              .alias("prediction")),
                ("spark", "onnxruntime (pandas_udf)", n): df.select("id", ort_udf("tokens").alias("prediction")),
            }
            if n == max(workers):
                frames[("spark", "read", n)] = df.select("id", "tokens")
                frames[("spark", "no model (mapInPandas)", n)] = df.mapInPandas(
                    noop_map, "id long, tokens array<int>, prediction float").select("id", "prediction")
                frames[("spark", "no model (pandas_udf)", n)] = df.select("id", noop_udf("tokens").alias("prediction"))
            for k, f in frames.items():                  # checked once (collected), then timed with a noop sink
                if "read" in k[1] or "no model" in k[1]:
                    continue
                t = f.toArrow()
                y = t.column("prediction")
                res[k + ("diff",)] = check(str(k), t.column("id"), _vectors(y) if "fastrnn" in k[1] else np.asarray(y),
                                           want, "fastrnn" in k[1])
            ts, _ = timed({k: (lambda f=f: f.write.format("noop").mode("overwrite").save()) for k, f in frames.items()},
                          reps)
            all_ts.update(ts)
        finally:
            spark.stop()
    return all_ts, res


def wrapper_overhead(where, model, reps):
    """In this process, 1 thread: predict_ragged on each batch, against RayPredictor.__call__ on the
    same batches in each of Ray's formats, the conversions Ray does to hand a batch over and to
    take it back, and the Spark worker's function with pyarrow's pandas conversions around it
    (what pyspark does on each Arrow batch, approximately)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from ray.data.block import BlockAccessor

    import fastrnn
    from fastrnn import distributed as D
    table = pq.read_table(where).combine_chunks()
    batches = [table.slice(p, RAY_BATCH) for p in range(0, table.num_rows, RAY_BATCH)]
    sbatches = [table.slice(p, SPARK_BATCH) for p in range(0, table.num_rows, SPARK_BATCH)]
    p = D.RayPredictor(model, "tokens", keep_columns=["id"], max_batch=MAX_BATCH, threads=1)
    np_batches = [BlockAccessor.for_block(b).to_batch_format("numpy") for b in batches]
    pd_batches = [BlockAccessor.for_block(b).to_batch_format("pandas") for b in batches]
    spark_pd = [b.to_pandas() for b in sbatches]
    bc = types.SimpleNamespace(value=fastrnn.fileformat.to_bytes(model))
    spec = D._SparkSpec("broadcast", bc, "bench", None, MAX_BATCH, None, 1, "tokens", "prediction")

    def spark_fn():
        return [D._spark_series(spec, b["tokens"]) for b in spark_pd]

    zeros = [np.zeros((b.num_rows, 1), np.float32) for b in batches]

    def own():                                   # the wrapper's own work: column in, prediction column out
        for b, y in zip(batches, zeros):
            D._sequences(b.column("tokens"), model, "tokens")
            D._arrow_output(y, False, 1)
    configs = {
        "fastrnn.distributed's own work per batch (no predict)": own,
        "predict_ragged on the 4096-row batches": lambda: [fastrnn.predict_ragged(model, b.column("tokens"),
                                                                                  max_batch=MAX_BATCH) for b in batches],
        "RayPredictor, pyarrow batches": lambda: [p(b) for b in batches],
        "RayPredictor, numpy batches": lambda: [p(b) for b in np_batches],
        "RayPredictor, pandas batches": lambda: [p(b) for b in pd_batches],
        "Ray: Arrow block -> numpy batches": lambda: [BlockAccessor.for_block(b).to_batch_format("numpy") for b in batches],
        "Ray: Arrow block -> pandas batches": lambda: [BlockAccessor.for_block(b).to_batch_format("pandas")
                                                       for b in batches],
        "predict_ragged on the 10,000-row batches": lambda: [fastrnn.predict_ragged(model, b.column("tokens"),
                                                                                    max_batch=MAX_BATCH) for b in sbatches],
        "spark_udf's function on pandas batches": spark_fn,
        "Spark: Arrow batch -> pandas (tokens)": lambda: [b.column("tokens").to_pandas() for b in sbatches],
        "Spark: prediction pandas -> Arrow": lambda: [pa.Array.from_pandas(s) for s in spark_series],
        "Spark: tokens pandas -> Arrow (spark_predict's round trip)": lambda: [
            pa.Array.from_pandas(b["tokens"], type=pa.list_(pa.int32())) for b in spark_pd],
    }
    spark_series = spark_fn()
    assert isinstance(spark_series[0].dtype, pd.ArrowDtype)
    ts, _ = timed(configs, reps)
    return ts


# ---- report ---------------------------------------------------------------------------------
def med(v):
    return statistics.median(v) if v else float("nan")


def report(n, tokens, ts, diffs, over, workers, reps):
    import platform

    import fastrnn
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"\n# bench/distributed.py: {n:,} sequences ({tokens:,} tokens, 1-400 each), Embedding(2000, 32) -> LSTM(32) -> "
          f"Dense(1); {cpu}, {os.cpu_count()} CPUs, isa {fastrnn.cpu_info()['isa']}; median of {reps} (machine may be "
          f"shared)\n")
    print("| pipeline | workers | fastrnn seq/s | onnxruntime seq/s | fastrnn / onnxruntime |")
    print("|---|---|---|---|---|")
    rows = [("direct (1 process; read_table + predict_ragged)", "direct", "fastrnn", "onnxruntime", [1, 2]),
            ("Ray Data (map_batches, pyarrow batches)", "ray", "fastrnn", "onnxruntime", workers),
            ("Spark spark_predict (mapInPandas) / ORT pandas_udf", "spark", "fastrnn (spark_predict)",
             "onnxruntime (pandas_udf)", workers),
            ("Spark spark_udf (pandas_udf) / ORT pandas_udf", "spark", "fastrnn (spark_udf)", "onnxruntime (pandas_udf)",
             workers)]
    for label, fw, a, b, ws in rows:
        for w in ws:
            ta, tb = med(ts.get((fw, a, w), [])), med(ts.get((fw, b, w), []))
            if ta != ta and tb != tb:
                continue
            unit = "threads" if fw == "direct" else "workers"
            print(f"| {label} | {w} {unit if fw == 'direct' else ''} | {n / ta:,.0f} | {n / tb:,.0f} | {tb / ta:.2f}x |")
    print("\nWhole-pipeline medians (s) and what the framework costs without a model:\n")
    print("| pipeline | workers | median s | seq/s |")
    print("|---|---|---|---|")
    for k in sorted(ts, key=lambda k: (k[0], k[2], k[1])):
        print(f"| {k[0]}: {k[1]} | {k[2]} | {med(ts[k]):.2f} | {n / med(ts[k]):,.0f} |")
    if over:
        print(f"\nWrappers in this process, 1 thread (all {n:,} sequences, median s):\n")
        print("| step | s | per 1,000 sequences (ms) |")
        print("|---|---|---|")
        for k, v in over.items():
            print(f"| {k} | {med(v):.3f} | {1e3 * med(v) / (n / 1000):.2f} |")
    if diffs:
        print("\nChecks: fastrnn pipelines bit-identical to predict_ragged; onnxruntime max |diff|: "
              + ", ".join(f"{k[0]} {k[1]} x{k[2]} {v:.1e}" for k, v in diffs.items() if "onnx" in k[1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--only", default="direct,ray,spark,overhead")
    ap.add_argument("--json")
    a = ap.parse_args()
    workers = [int(w) for w in a.workers.split(",")]
    only = set(a.only.split(","))
    import pyarrow.parquet as pq

    import fastrnn
    with tempfile.TemporaryDirectory(prefix="fastrnn-bench-") as root:
        where, tokens = make_data(root, a.n)
        model, _, onnx_path = make_models(root)
        want = fastrnn.predict_ragged(model, pq.read_table(where).column("tokens"), max_batch=MAX_BATCH)
        ts, diffs, over = {}, {}, {}
        for name, fn in (("direct", lambda: bench_direct(where, model, onnx_path, a.reps, want)),
                         ("ray", lambda: bench_ray(where, model, onnx_path, a.reps, want, workers)),
                         ("spark", lambda: bench_spark(where, model, onnx_path, a.reps, want, workers))):
            if name in only:
                t0 = time.perf_counter()
                t, d = fn()
                ts.update(t)
                diffs.update(d)
                print(f"# {name} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if "overhead" in only:
            over = wrapper_overhead(where, model, a.reps)
        report(a.n, tokens, ts, diffs, over, workers, a.reps)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"n": a.n, "reps": a.reps, "times": {" | ".join(map(str, k)): v for k, v in ts.items()},
                           "overhead": over, "diffs": {" | ".join(map(str, k)): v for k, v in diffs.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
