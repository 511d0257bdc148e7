"""fastrnn.distributed: score a dataset of sequences with Ray Data or Spark (predict_ragged on workers).

    from fastrnn.distributed import RayPredictor, spark_predict, spark_udf, worker_threads

    # Ray Data: one model per actor, loaded in __init__; each batch is one predict_ragged call
    ds.map_batches(RayPredictor, fn_constructor_kwargs={"model": m, "column": "tokens"},
                   compute=ray.data.ActorPoolStrategy(size=n),   # or concurrency=n
                   batch_size=4096, batch_format="pyarrow")
    # Spark: a DataFrame with df's columns and "prediction" (mapInPandas) ...
    out = spark_predict(df, m, "tokens", "prediction")
    # ... or a pandas_udf: only the input column goes to Python and only the output comes back
    out = df.select("id", spark_udf(m)("tokens").alias("prediction"))

Neither ray nor pyspark is imported by `import fastrnn` or by this module: each function imports
what it needs when called (pip install "fastrnn[distributed]"). docs/distributed.md has the
cluster set-up and the measured cost.

Design decisions (each one is the answer to a question a user of a cluster asks):

- Threads. `fastrnn.set_num_threads` stays 1 by default for the library (DESIGN §3): a process
  that did not ask for threads gets none. On a worker the scheduler has already said how many
  cores the work may use, so the helpers set the engine's threads to `worker_threads()` unless
  the caller passes `threads=`: OMP_NUM_THREADS when it holds a positive integer (Ray sets it in
  each task and actor to its num_cpus; Spark sets it in its Python workers to spark.task.cpus),
  else the CPUs this process may run on (os.sched_getaffinity), else 1. That never asks for more
  threads than the worker was given, so n workers on n cores do not oversubscribe. Ray sets the
  threads once per actor (in __init__; the actor's process is its own); Spark sets them for each
  partition or batch and puts the previous value back afterwards (a Python worker process is
  reused by later tasks, which may be someone else's code).
- How the model reaches a worker. A Model pickles as its .frnn bytes (Model.__reduce__), so
  giving RayPredictor a Model sends the bytes with the actor's constructor arguments and the
  actor loads them once. Spark: a Model or bytes is sent once per executor as a broadcast of the
  bytes (with precision= applied on the driver first: a bf16 / int8 model is smaller to send);
  a path is sent as a string and loaded by each executor, so the file must be readable at that
  path on every executor (shared storage, or the same file at the same path on each node) and on the
  driver, which loads it to check it and to know the output type. Without a SparkContext (Spark
  Connect) the bytes travel inside the function's closure instead of a broadcast.
- Loaded once per worker process, not per batch. Spark runs the function once per partition in
  Python worker processes that it reuses (spark.python.worker.reuse, on by default); the models a
  process has loaded are kept in a small cache in this module (the last 4), keyed by the SHA-256
  of the bytes (computed once, on the driver) or by the path with the file's size and mtime (a
  replaced file is loaded again) and precision. So is every batch of a pandas_udf.
- What a worker returns. The prediction column is a list column of float32 whatever the batch
  format: list<float> for a model with one vector per sequence, list<list<float>> (one vector per
  step, T_i of them) for a model with per-step outputs; Spark's types are array<float> and
  array<array<float>>. In Ray's numpy batch format the column is returned as a pyarrow ListArray
  (Ray's batch-to-block conversion keeps Arrow arrays as they are; an object array of NumPy
  vectors would become one of Ray's tensor types instead, not a list); in the pandas format it is
  a pandas ArrowDtype column (as Ray itself hands list columns to pandas batches). Values are
  predict_ragged's, bit for bit: which rows share a batch never changes a row's result.
- Which columns come back (Ray). keep_columns=True: every input column plus the prediction;
  keep_columns=False: the prediction only; keep_columns=["id", ...]: those columns plus the
  prediction (the usual choice: the token column is the bulk of a batch and rarely wanted
  downstream). One argument rather than a flag plus a list, so there is no combination to get
  wrong. Kept columns go back as they came; in the numpy format Ray converts them from NumPy
  itself (a list column comes back as one of its tensor types, a list<list<float>> one as pickled
  objects, slowly), one more reason for batch_format="pyarrow". spark_predict keeps df's
  columns (mapInPandas returns whole rows; select the columns you need first, or use spark_udf,
  which moves only the input column to Python and only the prediction back).
- Input columns. A list column of integer token ids for a model that starts with an Embedding;
  a list of lists of floats (one list of `input_size` features per step) for a float model, or a
  list of floats for a model with input_size 1. A null row is an error naming the column and the
  count (predict_ragged's rule; filter them out first), as is a missing column, a column of
  another type, or a model argument that is not a path, bytes or Model.
- Batches. Each batch Ray or Spark hands over is one predict_ragged call: its sequences are
  sorted by length and run in groups of max_batch, so larger batches pad less (Ray's batch_size,
  Spark's spark.sql.execution.arrow.maxRecordsPerBatch, 10,000 by default, are the knobs).
  A batch that is a slice of a larger Arrow array (Ray cuts batches out of blocks) is read as the
  slice it is (predict_ragged rebases its offsets).
"""
import collections
import collections.abc
import functools
import hashlib
import os
import threading

import numpy as np

from .errors import ArgumentTypeError, ShapeError

__all__ = ["worker_threads", "RayPredictor", "spark_predict", "spark_udf"]

_CACHE_SIZE = 4          # models kept per Spark Python worker process (a session rarely uses more)


def worker_threads():
    """The engine threads this worker was given: OMP_NUM_THREADS if it is a positive integer (set
    by Ray to a task's or actor's num_cpus and by Spark to spark.task.cpus), else the number of
    CPUs this process may run on (os.sched_getaffinity), else 1."""
    v = os.environ.get("OMP_NUM_THREADS", "").strip()
    if v.isdigit() and int(v) > 0:
        return int(v)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return 1


# ---- the model ------------------------------------------------------------------------------
def _kind(model, what):
    """'path', 'bytes' or 'model' for a model argument; ArgumentTypeError for anything else."""
    from .model import Model
    if isinstance(model, Model):
        return "model"
    if isinstance(model, (str, os.PathLike)):
        return "path"
    if isinstance(model, (bytes, bytearray, memoryview)):
        return "bytes"
    raise ArgumentTypeError(f"{what}: model must be a path to a .frnn file (str or os.PathLike), the bytes of "
                            f"one, or a fastrnn.Model; got {type(model).__name__}")


def _load(model, precision, what):
    """A Model from a model argument (path, bytes, Model), at `precision` when given."""
    from .fileformat import load
    kind = _kind(model, what)
    if kind == "model":
        return model if precision is None or precision == model.precision else model.with_precision(precision)
    return load(os.fspath(model) if kind == "path" else model, precision=precision)


def _check_options(model, max_batch, max_steps, threads):
    """predict_ragged's checks of max_batch / max_steps (on no sequences), and threads'."""
    from .ragged import predict_ragged
    predict_ragged(model, [], max_batch=max_batch, max_steps=max_steps)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise ArgumentTypeError(f"threads must be an integer >= 1 or None (worker_threads()), got {threads!r}")


# ---- columns in ---------------------------------------------------------------------------
def _expects(model):
    if model.input_kind == "ids":
        return "a list column of integer token ids"
    w = model.input_size
    return (f"a list column of steps, each a list of {w} floats" + (" (or a list of floats)" if w == 1 else ""))


def _arrow_sequences(col, model, name):
    """A pyarrow column (Array or ChunkedArray) -> what predict_ragged takes, type-checked."""
    import pyarrow as pa
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    t = col.type
    if isinstance(t, pa.ExtensionType):        # e.g. Ray's tensor columns: their NumPy form
        return _numpy_sequences(col.to_numpy(zero_copy_only=False), model, name)
    if pa.types.is_fixed_size_list(t):
        col = col.cast(pa.list_(t.value_type))
        t = col.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        raise ArgumentTypeError(f"column {name!r} is {t}; {_expects(model)} expected")
    if col.null_count:
        raise ShapeError(f"column {name!r} has {col.null_count} null sequence(s); filter them out first")
    v = t.value_type
    nested = pa.types.is_list(v) or pa.types.is_large_list(v) or pa.types.is_fixed_size_list(v)
    leaf = v.value_type if nested else v
    if model.input_kind == "ids":
        if nested or pa.types.is_floating(leaf):      # numbers, but steps of features: the wrong model
            raise ShapeError(f"column {name!r} is {t}; the model starts with an Embedding and takes "
                             f"{_expects(model)}")
        if not pa.types.is_integer(leaf):
            raise ArgumentTypeError(f"column {name!r} is {t}; {_expects(model)} expected")
        return col
    if not (pa.types.is_floating(leaf) or pa.types.is_integer(leaf)):
        raise ArgumentTypeError(f"column {name!r} is {t}; {_expects(model)} expected")
    if nested:
        if pa.types.is_fixed_size_list(v):
            col = col.cast(pa.list_(pa.list_(leaf)))
        return col
    if model.input_size != 1:
        raise ShapeError(f"column {name!r} is {t} (one number per step); the model takes "
                         f"{model.input_size} features per step: {_expects(model)} expected")
    return col                                  # predict_ragged reads (T,) steps of a 1-feature model


def _numpy_sequences(col, model, name):
    """A NumPy column (an object array of per-row arrays, as Ray's numpy batches and Spark's pandas
    Series hold a list column; or a 2-D / 3-D array of equal-length rows) -> a list of arrays."""
    if col.dtype != object:
        if col.ndim < 2:
            raise ArgumentTypeError(f"column {name!r} holds one {col.dtype} value per row; {_expects(model)} "
                                    f"expected")
        if model.input_kind != "ids" and col.ndim == 2 and model.input_size == 1:
            col = col[:, :, None]
        return list(col)
    nulls = sum(1 for e in col if e is None)
    if nulls:
        raise ShapeError(f"column {name!r} has {nulls} null sequence(s); filter them out first")
    out = []
    width = model.input_size or 0
    for i, e in enumerate(col):
        if not isinstance(e, np.ndarray):
            if not isinstance(e, (list, tuple)):
                raise ArgumentTypeError(f"column {name!r}, row {i}: a {type(e).__name__}; {_expects(model)} "
                                        f"expected")
            e = np.asarray(e)
        if e.dtype == object:                  # list<list<float>>: an array of per-step arrays
            e = np.stack(e).astype(np.float32, copy=False) if len(e) else np.zeros((0, width), np.float32)
        elif model.input_kind != "ids" and e.ndim == 1 and width == 1 and e.dtype.kind in "fiu":
            e = e[:, None]
        if model.input_kind == "ids" and e.size and e.dtype.kind == "f":
            raise ShapeError(f"column {name!r}, row {i}: floats; the model starts with an Embedding and takes "
                             f"{_expects(model)}")
        if e.size and e.dtype.kind not in "fiu":
            raise ArgumentTypeError(f"column {name!r}, row {i}: {e.dtype} values; {_expects(model)} expected")
        if e.ndim != (1 if model.input_kind == "ids" else 2) or (e.ndim == 2 and e.shape[1] != width):
            raise ShapeError(f"column {name!r}, row {i}: shape {e.shape}; {_expects(model)} expected")
        out.append(e)
    return out


def _sequences(col, model, name):
    """Any column a batch format holds -> what predict_ragged takes (see the module note)."""
    mod = type(col).__module__
    if mod.startswith("pyarrow"):
        return _arrow_sequences(col, model, name)
    if mod.startswith("pandas"):
        import pandas as pd
        if isinstance(col.dtype, pd.ArrowDtype):      # Ray's pandas batches: list columns as Arrow
            import pyarrow as pa
            return _arrow_sequences(pa.array(col.array), model, name)
        col = col.to_numpy()
    if isinstance(col, np.ndarray):
        return _numpy_sequences(col, model, name)
    if isinstance(col, (list, tuple)):
        arr = np.empty(len(col), object)
        for i, e in enumerate(col):
            arr[i] = e
        return _numpy_sequences(arr, model, name)
    raise ArgumentTypeError(f"column {name!r} is a {type(col).__name__}; {_expects(model)} expected")


# ---- columns out --------------------------------------------------------------------------
def _offsets(ends, what):
    import pyarrow as pa
    ends = np.asarray(ends, np.int64)
    if ends.size and ends[-1] > np.iinfo(np.int32).max:
        raise ShapeError(f"{what}: {int(ends[-1])} values in one batch is over a list column's limit; "
                         f"use smaller batches")
    return pa.array(ends.astype(np.int32))


def _arrow_output(y, per_step, out_size):
    """predict_ragged's result -> a pyarrow list<float> (one vector per row) or list<list<float>>
    (one vector per step) array, without a copy of the per-sequence case's values."""
    import pyarrow as pa
    if not per_step:
        y = np.ascontiguousarray(y, np.float32).reshape(len(y), -1)
        k = y.shape[1]
        return pa.ListArray.from_arrays(_offsets(np.arange(0, y.size + 1, k), "prediction"), pa.array(y.reshape(-1)))
    lens = np.fromiter((len(a) for a in y), np.int64, len(y))
    vals = np.concatenate(y).astype(np.float32, copy=False) if len(y) else np.zeros((0, out_size), np.float32)
    k = vals.shape[1] if vals.ndim == 2 else out_size
    inner = pa.ListArray.from_arrays(_offsets(np.arange(0, vals.size + 1, k), "prediction"),
                                     pa.array(np.ascontiguousarray(vals).reshape(-1)))
    return pa.ListArray.from_arrays(_offsets(np.concatenate([[0], np.cumsum(lens)]), "prediction"), inner)


def _pandas_output(arr, index):
    import pandas as pd
    return pd.Series(pd.arrays.ArrowExtensionArray(arr), index=index)


def _predict(model, col, name, max_batch, max_steps):
    from .ragged import predict_ragged
    y = predict_ragged(model, _sequences(col, model, name), max_batch=max_batch, max_steps=max_steps)
    return _arrow_output(y, model.output_is_sequence, model.output_size)


# ---- Ray Data -----------------------------------------------------------------------------
class RayPredictor:
    """A callable class for Ray Data's map_batches: the model is loaded once per actor, each batch
    is one predict_ragged call on `column`, and the batch comes back in its own format with
    `output_column` added (module note: output types, keep_columns).

        ds.map_batches(RayPredictor, fn_constructor_kwargs={"model": "model.frnn", "column": "tokens",
                       "keep_columns": ["id"]}, compute=ray.data.ActorPoolStrategy(size=4),
                       batch_size=4096, batch_format="pyarrow")

    model: a path (str / os.PathLike, read on the worker), the .frnn bytes, or a fastrnn.Model
    (sent as its bytes). precision: "fp32" / "bf16" / "int8" to run at (fastrnn.load(precision=)),
    or None for the model's own. threads: the engine's threads in this actor (None:
    worker_threads(), i.e. the actor's num_cpus). max_batch, max_steps: predict_ragged's.
    Batches: a dict of NumPy arrays, a pandas DataFrame or a pyarrow Table; "pyarrow" is the
    cheapest (the sequences are read from the column's buffers without a per-row copy)."""

    def __init__(self, model, column, output_column="prediction", *, max_batch=256, max_steps=None,
                 threads=None, precision=None, keep_columns=True):
        from ._engine import set_num_threads
        for arg, v in (("column", column), ("output_column", output_column)):
            if not isinstance(v, str):
                raise ArgumentTypeError(f"RayPredictor: {arg} must be a column name (str), got {type(v).__name__}")
        if not isinstance(keep_columns, bool):
            if isinstance(keep_columns, str) or not isinstance(keep_columns, (list, tuple)) or \
                    not all(isinstance(c, str) for c in keep_columns):
                raise ArgumentTypeError(f"RayPredictor: keep_columns must be True, False or a list of column "
                                        f"names, got {keep_columns!r}")
            keep_columns = list(keep_columns)
            if output_column in keep_columns:
                raise ShapeError(f"RayPredictor: keep_columns names the output column {output_column!r}")
        self.model = _load(model, precision, "RayPredictor")
        _check_options(self.model, max_batch, max_steps, threads)
        self.column, self.output_column = column, output_column
        self.max_batch, self.max_steps, self.keep_columns = max_batch, max_steps, keep_columns
        self.threads = worker_threads() if threads is None else int(threads)
        set_num_threads(self.threads)          # this actor's process is ours: set once

    def _kept(self, names):
        if self.keep_columns is True:
            kept = list(names)
            if self.output_column in kept:
                raise ShapeError(f"RayPredictor: the batch already has a column {self.output_column!r}; choose "
                                 f"another output_column or keep_columns without it")
            return kept
        if self.keep_columns is False:
            return []
        missing = [c for c in self.keep_columns if c not in names]
        if missing:
            raise ShapeError(f"RayPredictor: keep_columns {missing} not in the batch (columns: {list(names)})")
        return self.keep_columns

    def _column(self, names, get):
        if self.column not in names:
            raise ShapeError(f"RayPredictor: no column {self.column!r} in the batch (columns: {list(names)})")
        return _predict(self.model, get(self.column), self.column, self.max_batch, self.max_steps)

    def __call__(self, batch):
        mod = type(batch).__module__
        if mod.startswith("pyarrow"):
            import pyarrow as pa
            if not isinstance(batch, pa.Table):
                raise ArgumentTypeError(f"RayPredictor: a batch must be a dict of arrays, a pandas DataFrame or a "
                                        f"pyarrow Table, got {type(batch).__name__}")
            names = batch.column_names
            kept = self._kept(names)
            y = self._column(names, batch.column)
            out = batch.select(kept) if kept != names else batch
            return out.append_column(self.output_column, y)
        if mod.startswith("pandas"):
            names = list(batch.columns)
            kept = self._kept(names)
            y = self._column(names, batch.__getitem__)
            out = batch[kept]                  # a new frame: the input batch is left as it came
            return out.assign(**{self.output_column: _pandas_output(y, batch.index)})
        if isinstance(batch, collections.abc.Mapping):
            names = list(batch)
            kept = self._kept(names)
            y = self._column(names, batch.__getitem__)
            out = {c: batch[c] for c in kept}
            out[self.output_column] = y
            return out
        raise ArgumentTypeError(f"RayPredictor: a batch must be a dict of arrays, a pandas DataFrame or a pyarrow "
                                f"Table, got {type(batch).__name__}")


# ---- Spark --------------------------------------------------------------------------------
class _SparkSpec:
    """What a Spark worker needs, pickled into the function's closure: where the model comes from
    (a broadcast of the bytes, the bytes themselves, or a path), the cache key, the options."""

    def __init__(self, kind, payload, key, precision, max_batch, max_steps, threads, input_col, output_col):
        self.kind, self.payload, self.key, self.precision = kind, payload, key, precision
        self.max_batch, self.max_steps, self.threads = max_batch, max_steps, threads
        self.input_col, self.output_col = input_col, output_col


_models = collections.OrderedDict()      # key -> Model, in this worker process (module note)
_models_lock = threading.Lock()
_loads = 0                               # models loaded in this process (tests read it)


def _worker_model(spec):
    """The model of `spec` in this process: loaded on first use, then from the cache."""
    global _loads
    from .fileformat import load
    if spec.kind == "path":
        st = os.stat(spec.payload)
        key = ("path", spec.payload, st.st_size, st.st_mtime_ns, spec.precision)
    else:
        key = ("sha256", spec.key)
    with _models_lock:
        m = _models.get(key)
        if m is not None:
            _models.move_to_end(key)
            return m
    if spec.kind == "path":
        m = load(spec.payload, precision=spec.precision)
    else:
        m = load(spec.payload.value if spec.kind == "broadcast" else spec.payload)
    with _models_lock:
        _models[key] = m
        _loads += 1
        while len(_models) > _CACHE_SIZE:
            _models.popitem(last=False)
    return m


def _spark_type(model):
    from pyspark.sql.types import ArrayType, FloatType
    t = ArrayType(FloatType())
    return ArrayType(t) if model.output_is_sequence else t


def _driver_model(model, precision, what):
    """(kind, the Model on the driver): checked now, and its output type known."""
    kind = _kind(model, what)
    return kind, _load(os.fspath(model) if kind == "path" else model, precision, what)


def _spark_spec(model, kind, m, input_col, output_col, max_batch, max_steps, threads, precision, session):
    """What the workers get: a path, or the bytes (as a broadcast when there is a SparkContext)."""
    from .fileformat import to_bytes
    if kind == "path":
        return _SparkSpec("path", os.fspath(model), None, precision, max_batch, max_steps, threads,
                          input_col, output_col)
    data = to_bytes(m) if (kind == "model" or precision is not None) else bytes(model)
    sc = None
    if session is not None:
        try:
            sc = session.sparkContext           # Spark Connect has none: the bytes go in the closure
        except Exception:                       # noqa: BLE001 (pyspark's Connect error types vary)
            sc = None
    payload, how = (sc.broadcast(data), "broadcast") if sc is not None else (data, "bytes")
    return _SparkSpec(how, payload, hashlib.sha256(data).hexdigest(), None, max_batch, max_steps, threads,
                      input_col, output_col)


def _check_spark_column(df, name, model, what):
    from pyspark.sql import types as T
    if not isinstance(name, str):
        raise ArgumentTypeError(f"{what}: input_col must be a column name (str), got {type(name).__name__}")
    fields = {f.name: f.dataType for f in df.schema.fields}
    if name not in fields:
        raise ShapeError(f"{what}: no column {name!r} in the DataFrame (columns: {list(fields)})")
    t = fields[name]
    inner = t.elementType if isinstance(t, T.ArrayType) else None
    leaf = inner.elementType if isinstance(inner, T.ArrayType) else inner
    nums = (T.IntegralType, T.FloatType, T.DoubleType)
    if inner is None or not isinstance(leaf, nums):
        raise ArgumentTypeError(f"{what}: column {name!r} is {t.simpleString()}; {_expects(model)} expected")
    nested = isinstance(inner, T.ArrayType)
    if model.input_kind == "ids":
        if nested or not isinstance(leaf, T.IntegralType):
            raise ShapeError(f"{what}: column {name!r} is {t.simpleString()}; the model starts with an Embedding "
                             f"and takes {_expects(model)} (array<int>)")
    elif not nested and model.input_size != 1:
        raise ShapeError(f"{what}: column {name!r} is {t.simpleString()} (one number per step); the model takes "
                         f"{model.input_size} features per step: array<array<float>> expected")


def _set_threads(spec):
    from ._engine import get_num_threads, set_num_threads
    prev = get_num_threads()
    set_num_threads(worker_threads() if spec.threads is None else int(spec.threads))
    return prev


def _spark_partition(spec, batches):
    """mapInPandas' function: each pandas batch of a partition with the prediction column added."""
    from ._engine import set_num_threads
    model = _worker_model(spec)
    prev = _set_threads(spec)
    try:
        for pdf in batches:
            y = _predict(model, pdf[spec.input_col], spec.input_col, spec.max_batch, spec.max_steps)
            pdf[spec.output_col] = _pandas_output(y, pdf.index)    # pdf is this task's own copy
            yield pdf
    finally:
        set_num_threads(prev)


def _spark_series(spec, s):
    """spark_udf's function: a pandas Series of sequences -> a Series of predictions."""
    from ._engine import set_num_threads
    model = _worker_model(spec)
    prev = _set_threads(spec)
    try:
        y = _predict(model, s, spec.input_col, spec.max_batch, spec.max_steps)
    finally:
        set_num_threads(prev)
    return _pandas_output(y, s.index)


def _is_spark_df(df):
    return hasattr(df, "mapInPandas") and hasattr(df, "schema") and hasattr(df, "sparkSession")


def spark_predict(df, model, input_col, output_col="prediction", *, max_batch=256, max_steps=None,
                  threads=None, precision=None):
    """df with `output_col` added: the model's prediction for each row's sequence in `input_col`
    (array<int> token ids, or array<array<float>> steps), as array<float> (one vector per row) or
    array<array<float>> (a model with per-step outputs). Runs as df.mapInPandas: each Arrow batch
    (spark.sql.execution.arrow.maxRecordsPerBatch rows) is one predict_ragged call.

    model: a fastrnn.Model or .frnn bytes (sent to executors as a broadcast, at `precision` when
    given), or a path (loaded by each executor at `precision`; it must be readable at that path on
    the driver and on every executor). Loaded once per Python worker process. threads: the
    engine's threads per task (None: worker_threads(), i.e. spark.task.cpus)."""
    what = "spark_predict"
    if not _is_spark_df(df):
        raise ArgumentTypeError(f"{what}: df must be a pyspark DataFrame, got {type(df).__name__}")
    if not isinstance(output_col, str):
        raise ArgumentTypeError(f"{what}: output_col must be a column name (str), got {type(output_col).__name__}")
    kind, m = _driver_model(model, precision, what)
    _check_options(m, max_batch, max_steps, threads)
    _check_spark_column(df, input_col, m, what)
    if output_col in df.columns:
        raise ShapeError(f"{what}: the DataFrame already has a column {output_col!r}; choose another output_col")
    spec = _spark_spec(model, kind, m, input_col, output_col, max_batch, max_steps, threads, precision,
                       df.sparkSession)
    from pyspark.sql.types import StructField, StructType
    schema = StructType(list(df.schema.fields) + [StructField(output_col, _spark_type(m), True)])
    return df.mapInPandas(functools.partial(_spark_partition, spec), schema)


def spark_udf(model, *, max_batch=256, max_steps=None, threads=None, precision=None):
    """A pandas_udf (Series of sequences -> Series of predictions) for df.withColumn / select:

        df.withColumn("prediction", spark_udf(model)("tokens"))

    Same model handling and options as spark_predict; the return type is array<float> or
    array<array<float>>. Only the input column is sent to Python and only the prediction comes
    back. Made with the active SparkSession (for the broadcast)."""
    what = "spark_udf"
    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql.functions import pandas_udf
    kind, m = _driver_model(model, precision, what)
    _check_options(m, max_batch, max_steps, threads)
    spec = _spark_spec(model, kind, m, "the udf's input", None, max_batch, max_steps, threads, precision,
                       SparkSession.getActiveSession())

    def fastrnn_predict(s):
        return _spark_series(spec, s)
    fastrnn_predict.__annotations__ = {"s": pd.Series, "return": pd.Series}   # pandas_udf reads the kind here
    return pandas_udf(fastrnn_predict, returnType=_spark_type(m))
