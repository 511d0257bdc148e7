"""fastrnn.distributed: the Ray Data and Spark helpers. The oracle is fastrnn.predict_ragged in
this one process on the same sequences: every row a worker returns must be bit-identical to it
(rows are independent of the batch they share, whatever batch a worker's share makes).

The fast tests call RayPredictor on the batch formats Ray hands over and the Spark workers'
functions on pandas batches, without a cluster. The integration tests (pytest -m integration) run
a real local Ray cluster and a real local[2] SparkSession on a Parquet dataset of 100,000 ragged
token sequences and an IMDB-style torch model, and a float-step model with per-step outputs."""
import collections
import os
import shutil
import types

import numpy as np
import pytest
from conftest import rec

import fastrnn
from fastrnn import distributed as D
from fastrnn import ir

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
pq = pytest.importorskip("pyarrow.parquet")
V = 50


@pytest.fixture(autouse=True)
def _one_thread():
    yield
    fastrnn.set_num_threads(1)              # the library's default, for the tests after these


def _ids_model(rng):
    """Embedding -> LSTM's final state -> Dense: one vector (2) per sequence."""
    return fastrnn.Model([ir.Embedding(rng.normal(size=(V, 8)).astype(np.float32)),
                          rec(rng, "lstm", 8, 12, return_sequences=False),
                          ir.Dense(rng.normal(size=(2, 12)).astype(np.float32), None, "tanh")])


def _steps_model(rng, width=3):
    """Float steps -> GRU -> Dense on every step: (T, 2) per sequence."""
    return fastrnn.Model([rec(rng, "gru", width, 5), ir.Dense(rng.normal(size=(2, 5)).astype(np.float32))])


def _objects(items):
    a = np.empty(len(items), object)
    for i, e in enumerate(items):
        a[i] = e
    return a


def _ids_batches(seqs):
    """The batch formats Ray gives map_batches for an (id, tokens list<int32>) block: a pyarrow
    Table, a dict of NumPy arrays (the list column an object array of int32 arrays), a pandas
    DataFrame with Arrow-backed list columns (Ray 2.5x on pandas 2+), and one with object columns
    of arrays (older Ray; Spark's pandas batches)."""
    table = pa.table({"id": np.arange(len(seqs)), "tokens": pa.array([s.tolist() for s in seqs], pa.list_(pa.int32()))})
    return {"pyarrow": table,
            "numpy": {"id": np.arange(len(seqs)), "tokens": _objects([s.astype(np.int32) for s in seqs])},
            "pandas": table.to_pandas(types_mapper=pd.ArrowDtype),
            "pandas-objects": pd.DataFrame({"id": np.arange(len(seqs)), "tokens": [s.astype(np.int32) for s in seqs]})}


def _floats_batches(seqs):
    t = pa.list_(pa.list_(pa.float32()))
    table = pa.table({"id": np.arange(len(seqs)), "x": pa.array([s.tolist() for s in seqs], t)})
    return {"pyarrow": table,
            "numpy": {"id": np.arange(len(seqs)), "x": _objects([_objects(list(s)) for s in seqs])},
            "pandas": table.to_pandas(types_mapper=pd.ArrowDtype)}


def _column(out, name):
    """The prediction column of a returned batch, as a pyarrow array (and its format checked)."""
    if isinstance(out, pa.Table):
        return out.column(name).combine_chunks()
    if isinstance(out, pd.DataFrame):
        assert isinstance(out[name].dtype, pd.ArrowDtype)
        return pa.array(out[name].array)
    return out[name]


def _vectors(col):
    """list<float> -> (N, k) float32."""
    assert col.type == pa.list_(pa.float32())
    return np.asarray(col.flatten()).reshape(len(col), -1)


def _per_step(col):
    """list<list<float>> -> a list of (T_i, k) float32 arrays."""
    assert col.type == pa.list_(pa.list_(pa.float32()))
    return [np.asarray(r.values.flatten()).reshape(len(r), -1) if len(r) else np.zeros((0, 0), np.float32)
            for r in col]


# ---- worker_threads ---------------------------------------------------------------------------
def test_worker_threads_env_then_affinity_then_one(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4}, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert D.worker_threads() == 3
    for bad in ("0", "-2", "abc", "", "4,2"):
        monkeypatch.setenv("OMP_NUM_THREADS", bad)
        assert D.worker_threads() == 5, bad
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert D.worker_threads() == 5
    monkeypatch.delattr(os, "sched_getaffinity")
    assert D.worker_threads() == 1


def test_ray_predictor_sets_the_workers_threads_unless_told(rng, monkeypatch):
    m = _ids_model(rng)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    D.RayPredictor(m, "tokens")
    assert fastrnn.get_num_threads() == 2
    D.RayPredictor(m, "tokens", threads=1)
    assert fastrnn.get_num_threads() == 1


# ---- RayPredictor.__call__ on each batch format --------------------------------------------------
def test_ray_predictor_every_batch_format_matches_predict_ragged(rng):
    m = _ids_model(rng)
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(0, 40, 120)]    # a few of 0 steps
    want = fastrnn.predict_ragged(m, seqs)
    p = D.RayPredictor(m, "tokens", max_batch=16)
    for fmt, batch in _ids_batches(seqs).items():
        out = p(batch)
        assert type(out) is type(batch), fmt
        assert list(out.keys() if isinstance(out, dict) else out.columns if isinstance(out, pd.DataFrame)
                    else out.column_names) == ["id", "tokens", "prediction"], fmt
        np.testing.assert_array_equal(_vectors(_column(out, "prediction")), want, err_msg=fmt)
    assert list(_ids_batches(seqs)["pandas"].columns) == ["id", "tokens"]       # the input is left alone


def test_ray_predictor_per_step_outputs_are_lists_of_step_vectors(rng):
    m = _steps_model(rng)
    seqs = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in rng.integers(1, 20, 50)]
    want = fastrnn.predict_ragged(m, seqs)
    p = D.RayPredictor(m, "x", "y", max_batch=8, keep_columns=["id"])
    for fmt, batch in _floats_batches(seqs).items():
        out = p(batch)
        got = _per_step(_column(out, "y"))
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b, err_msg=fmt)


def test_ray_predictor_batches_sliced_out_of_a_block(rng):
    """A batch Ray cuts out of a block is a slice: its list columns' offsets do not start at 0
    (at either level of list<list<float>>). Each row must still be its own sequence's."""
    m, f = _ids_model(rng), _steps_model(rng)
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(1, 30, 60)]
    floats = [rng.normal(size=(int(n), 3)).astype(np.float32) for n in rng.integers(1, 12, 60)]
    block = _ids_batches(seqs)["pyarrow"].append_column("x", _floats_batches(floats)["pyarrow"].column("x"))
    part = block.slice(17, 25)
    assert part.column("tokens").chunk(0).offset == 17
    want = fastrnn.predict_ragged(m, seqs[17:42])
    want_f = fastrnn.predict_ragged(f, floats[17:42])
    for batch in (part, part.to_pandas(types_mapper=pd.ArrowDtype)):
        np.testing.assert_array_equal(_vectors(_column(D.RayPredictor(m, "tokens")(batch), "prediction")), want)
        for a, b in zip(_per_step(_column(D.RayPredictor(f, "x")(batch), "prediction")), want_f):
            np.testing.assert_array_equal(a, b)


def test_ray_predictor_model_sources_and_precision(rng, tmp_path):
    m = _ids_model(rng)
    m.save(tmp_path / "m.frnn")
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(1, 30, 40)]
    batch = _ids_batches(seqs)["pyarrow"]
    want = fastrnn.predict_ragged(m, seqs)
    for src in (m, tmp_path / "m.frnn", str(tmp_path / "m.frnn"), m.__reduce__()[1][0]):
        np.testing.assert_array_equal(_vectors(_column(D.RayPredictor(src, "tokens")(batch), "prediction")), want)
    want16 = fastrnn.predict_ragged(m.with_precision("bf16"), seqs)
    for src in (m, tmp_path / "m.frnn"):
        p = D.RayPredictor(src, "tokens", precision="bf16")
        assert p.model.precision == "bf16"
        np.testing.assert_array_equal(_vectors(_column(p(batch), "prediction")), want16)


def test_ray_predictor_keep_columns(rng):
    m = _ids_model(rng)
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(1, 10, 12)]
    for fmt, batch in _ids_batches(seqs).items():
        only = D.RayPredictor(m, "tokens", "p", keep_columns=False)(batch)
        ids = D.RayPredictor(m, "tokens", "p", keep_columns=["id"])(batch)
        names = lambda b: list(b.keys() if isinstance(b, dict) else b.columns if isinstance(b, pd.DataFrame)
                               else b.column_names)
        assert names(only) == ["p"] and names(ids) == ["id", "p"], fmt
        np.testing.assert_array_equal(np.asarray(ids["id"]), np.arange(12))
        with pytest.raises(fastrnn.ShapeError, match="'name'"):
            D.RayPredictor(m, "tokens", keep_columns=["id", "name"])(batch)
        with pytest.raises(fastrnn.ShapeError, match="already has a column 'id'"):
            D.RayPredictor(m, "tokens", "id")(batch)


def test_ray_predictor_errors(rng):
    m, f = _ids_model(rng), _steps_model(rng)
    seqs = [rng.integers(0, V, 3), rng.integers(0, V, 5)]
    batches = _ids_batches(seqs)
    for fmt, batch in batches.items():
        with pytest.raises(fastrnn.ShapeError, match="no column 'text'.*'tokens'"):
            D.RayPredictor(m, "text")(batch)
        with pytest.raises(TypeError, match="column 'id'"):                  # int64, not a list column
            D.RayPredictor(m, "id")(batch)
        with pytest.raises(fastrnn.ShapeError, match="column 'tokens'"):     # ids to a float-step model
            D.RayPredictor(f, "tokens")(batch)
    for fmt, batch in _floats_batches([np.ones((2, 3), np.float32)]).items():
        with pytest.raises(fastrnn.ShapeError, match="Embedding"):             # float steps to an ids model
            D.RayPredictor(m, "x")(batch)
    nulls = pa.table({"tokens": pa.array([[1, 2], None, [3]], pa.list_(pa.int32()))})
    for batch in (nulls, nulls.to_pandas(types_mapper=pd.ArrowDtype), {"tokens": _objects([np.array([1]), None])}):
        with pytest.raises(fastrnn.ShapeError, match="null"):
            D.RayPredictor(m, "tokens")(batch)
    strings = pa.table({"tokens": pa.array([["a", "b"]])})
    with pytest.raises(fastrnn.ArgumentTypeError, match="list<item: string>"):
        D.RayPredictor(m, "tokens")(strings)
    for bad in (42, None, [1, 2], {"model": "x"}):
        with pytest.raises(fastrnn.ArgumentTypeError, match="path to a .frnn file"):
            D.RayPredictor(bad, "tokens")
    with pytest.raises(TypeError, match="max_batch"):
        D.RayPredictor(m, "tokens", max_batch=0)
    with pytest.raises(TypeError, match="threads"):
        D.RayPredictor(m, "tokens", threads=0)
    with pytest.raises(TypeError, match="keep_columns"):
        D.RayPredictor(m, "tokens", keep_columns="id")
    with pytest.raises(TypeError, match="precision"):
        D.RayPredictor(m, "tokens", precision="fp16")
    with pytest.raises(fastrnn.ModelFormatError):
        D.RayPredictor(b"not a model", "tokens")
    with pytest.raises(TypeError, match="batch must be"):
        D.RayPredictor(m, "tokens")([1, 2])


def test_width_one_float_model_takes_a_list_of_floats(rng):
    m = _steps_model(rng, width=1)
    seqs = [rng.normal(size=(int(n), 1)).astype(np.float32) for n in rng.integers(1, 9, 10)]
    want = fastrnn.predict_ragged(m, seqs)
    flat = pa.table({"x": pa.array([s[:, 0].tolist() for s in seqs], pa.list_(pa.float32()))})
    for batch in (flat, {"x": _objects([s[:, 0] for s in seqs])}):
        for a, b in zip(_per_step(_column(D.RayPredictor(m, "x")(batch), "prediction")), want):
            np.testing.assert_array_equal(a, b)


# ---- the Spark workers' functions, without Spark ---------------------------------------------------
def _spec(kind, payload, key=None, precision=None, threads=None, col="tokens"):
    return D._SparkSpec(kind, payload, key, precision, 64, None, threads, col, "prediction")


def test_spark_worker_loads_the_model_once_per_process(rng, tmp_path, monkeypatch):
    """The cache: a broadcast's bytes (keyed by their hash) and a path (keyed by size and mtime:
    a replaced file is loaded again) are loaded once however many batches and partitions run."""
    monkeypatch.setattr(D, "_models", collections.OrderedDict())
    m = _ids_model(rng)
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(1, 30, 60)]
    batches = lambda: (_ids_batches(seqs[i:i + 20])["pandas-objects"] for i in range(0, 60, 20))
    want = fastrnn.predict_ragged(m, seqs)
    data = m.__reduce__()[1][0]
    bc = types.SimpleNamespace(value=data)                      # what a Broadcast gives a worker
    before = D._loads
    for _ in range(2):                                          # two partitions of three batches
        got = np.concatenate([_vectors(_column(b, "prediction"))
                              for b in D._spark_partition(_spec("broadcast", bc, "k1"), batches())])
        np.testing.assert_array_equal(got, want)
    assert D._loads - before == 1
    m.save(tmp_path / "m.frnn")
    for _ in range(2):
        s = D._spark_series(_spec("path", str(tmp_path / "m.frnn")), _ids_batches(seqs)["pandas-objects"]["tokens"])
        np.testing.assert_array_equal(_vectors(pa.array(s.array)), want)
    assert D._loads - before == 2
    m2 = _ids_model(rng)
    m2.save(tmp_path / "m.frnn")
    os.utime(tmp_path / "m.frnn", ns=(1, 1))                    # a different mtime, whatever the clock
    s = D._spark_series(_spec("path", str(tmp_path / "m.frnn")), _ids_batches(seqs)["pandas-objects"]["tokens"])
    np.testing.assert_array_equal(_vectors(pa.array(s.array)), fastrnn.predict_ragged(m2, seqs))
    assert D._loads - before == 3


def test_spark_worker_sets_threads_and_puts_them_back(rng, monkeypatch):
    monkeypatch.setattr(D, "_models", collections.OrderedDict())
    m = _ids_model(rng)
    bc = types.SimpleNamespace(value=m.__reduce__()[1][0])
    seen = []
    real = D._predict
    monkeypatch.setattr(D, "_predict", lambda *a: (seen.append(fastrnn.get_num_threads()), real(*a))[1])
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    batch = _ids_batches([np.array([1, 2, 3])])["pandas-objects"]
    list(D._spark_partition(_spec("broadcast", bc, "k2"), iter([batch])))
    D._spark_series(_spec("broadcast", bc, "k2", threads=3), batch["tokens"])
    assert seen == [2, 3] and fastrnn.get_num_threads() == 1


# ---- integration: real Ray and Spark on a Parquet dataset ----------------------------------------------
N = 100_000


def _imdb_module(torch):
    """The IMDB-style classifier: Embedding(2000, 32) -> LSTM(32) -> Dense(1, sigmoid) on the
    final hidden state (what bench/distributed.py times too)."""
    class Imdb(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(2000, 32)
            self.lstm = torch.nn.LSTM(32, 32, batch_first=True)
            self.fc = torch.nn.Linear(32, 1)

        def forward(self, x):
            _, (h, _) = self.lstm(self.emb(x))
            return torch.sigmoid(self.fc(h[-1]))
    torch.manual_seed(0)
    return Imdb().eval()


def _write_parquet(table, where, files):
    os.makedirs(where, exist_ok=True)
    step = -(-table.num_rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), os.path.join(where, f"part-{i:02d}.parquet"),
                       row_group_size=5000)


@pytest.fixture(scope="session")
def imdb(tmp_path_factory):
    """100,000 token sequences of 1..400 steps (fixed seed) as 10 Parquet files (id int64, tokens
    list<int32>), the converted model (and its .frnn file), and the oracle: predict_ragged of the
    whole column in this process."""
    torch = pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("distributed")
    model = fastrnn.convert(_imdb_module(torch), example_input=torch.zeros(2, 5, dtype=torch.long))
    model.save(root / "imdb.frnn")
    rng = np.random.default_rng(2024)
    lens = rng.integers(1, 401, N)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    tokens = pa.ListArray.from_arrays(pa.array(offsets), pa.array(rng.integers(0, 2000, int(offsets[-1]), dtype=np.int32)))
    table = pa.table({"id": np.arange(N, dtype=np.int64), "tokens": tokens})
    _write_parquet(table, root / "imdb", 10)
    oracle = fastrnn.predict_ragged(model, tokens)
    return types.SimpleNamespace(dir=str(root / "imdb"), model=model, path=str(root / "imdb.frnn"), oracle=oracle)


@pytest.fixture(scope="session")
def steps(tmp_path_factory):
    """2,000 float sequences of 1..60 steps of 8 features (list<list<float>>), a torch LSTM(8, 16)
    -> Linear(16, 3) on every step, converted; the oracle, per-step outputs of predict_ragged."""
    torch = pytest.importorskip("torch")

    class Steps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.lstm(x)[0])
    torch.manual_seed(1)
    root = tmp_path_factory.mktemp("steps")
    model = fastrnn.convert(Steps().eval(), example_input=torch.zeros(2, 5, 8))
    model.save(root / "steps.frnn")
    rng = np.random.default_rng(7)
    seqs = [rng.normal(size=(int(n), 8)).astype(np.float32) for n in rng.integers(1, 61, 2000)]
    table = pa.table({"id": np.arange(2000, dtype=np.int64),
                      "x": pa.array([s.tolist() for s in seqs], pa.list_(pa.list_(pa.float32())))})
    _write_parquet(table, root / "steps", 4)
    return types.SimpleNamespace(dir=str(root / "steps"), model=model, path=str(root / "steps.frnn"),
                                 oracle=fastrnn.predict_ragged(model, seqs))


def _check_vectors(ids, col, oracle, n):
    """Every id exactly once, and each row's prediction bit-identical to the oracle's row."""
    ids = np.asarray(ids)
    assert len(ids) == n and np.array_equal(np.sort(ids), np.arange(n))
    got = _vectors(col)
    assert got.dtype == np.float32 and got.shape == (n, oracle.shape[1])
    assert np.array_equal(got, oracle[ids])


def _check_steps(ids, col, oracle):
    ids = np.asarray(ids)
    assert np.array_equal(np.sort(ids), np.arange(len(oracle)))
    for i, rows in zip(ids, _per_step(col)):
        assert np.array_equal(rows, oracle[i]), i


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=400 << 20, logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.target_max_block_size = 8 << 20      # Ray reads these 28 MB as one block otherwise: ~10 blocks
    yield ray
    ray.shutdown()


def _ray_predict(ray, where, batch_size, fmt, **kwargs):
    """read_parquet -> map_batches(RayPredictor) on a pool of 2 actors -> one Table. Each actor asks
    for half a CPU: two 1-CPU actors would hold both CPUs of this 2-CPU cluster and Ray Data's read
    tasks (1 CPU each) would wait for ever (ray-project/ray#44687); OMP_NUM_THREADS is 1 either way."""
    ds = ray.data.read_parquet(where).map_batches(
        D.RayPredictor, fn_constructor_kwargs=kwargs, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5,
        batch_size=batch_size, batch_format=fmt)
    return pa.concat_tables(ray.get(ds.to_arrow_refs()))


@pytest.mark.integration
def test_ray_data_scores_the_dataset_like_one_process(ray_cluster, imdb):
    t = _ray_predict(ray_cluster, imdb.dir, 4096, "pyarrow", model=imdb.model, column="tokens", keep_columns=["id"])
    assert t.column_names == ["id", "prediction"]
    _check_vectors(t.column("id"), t.column("prediction").combine_chunks(), imdb.oracle, N)


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["numpy", "pandas", "pyarrow"])
def test_ray_data_per_step_float_model_every_batch_format(ray_cluster, steps, fmt):
    """The model by path (read by each actor), each of Ray's batch formats. Columns kept pass
    through as they came (in the numpy format Ray itself converts a passed-back list<list<float>>
    column into pickled objects, so there only the id is kept)."""
    keep = ["id"] if fmt == "numpy" else True
    t = _ray_predict(ray_cluster, steps.dir, 300, fmt, model=steps.path, column="x", max_batch=64, keep_columns=keep)
    assert t.column_names == (["id", "prediction"] if fmt == "numpy" else ["id", "x", "prediction"])
    if fmt != "numpy":
        assert t.schema.field("x").type == pa.list_(pa.list_(pa.float32()))
    assert t.schema.field("prediction").type == pa.list_(pa.list_(pa.float32()))
    _check_steps(t.column("id"), t.column("prediction").combine_chunks(), steps.oracle)


@pytest.mark.integration
def test_ray_sets_omp_num_threads_to_num_cpus(ray_cluster):
    """What worker_threads() relies on: Ray gives a task OMP_NUM_THREADS = its num_cpus."""
    ray = ray_cluster
    assert ray.get(ray.remote(num_cpus=2)(D.worker_threads).remote()) == 2
    assert ray.get(ray.remote(num_cpus=1)(D.worker_threads).remote()) == 1


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs a Java runtime: no java on PATH and no JAVA_HOME")
    from pyspark.sql import SparkSession
    s = (SparkSession.builder.master("local[2]").appName("fastrnn-tests")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .config("spark.sql.shuffle.partitions", "2")
         .config("spark.driver.memory", "1g")
         .config("spark.sql.execution.arrow.maxRecordsPerBatch", "4096")
         .config("spark.sql.files.maxPartitionBytes", str(8 << 20))     # a few partitions per core
         .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def _spark_arrow(df):
    return df.toArrow() if hasattr(df, "toArrow") else pa.Table.from_pandas(df.toPandas())


@pytest.mark.integration
def test_spark_predict_scores_the_dataset_like_one_process(spark, imdb):
    df = spark.read.parquet(imdb.dir)
    out = D.spark_predict(df, imdb.model, "tokens")
    assert out.columns == ["id", "tokens", "prediction"]
    assert out.schema["prediction"].dataType.simpleString() == "array<float>"
    t = _spark_arrow(out.select("id", "prediction"))
    _check_vectors(t.column("id"), t.column("prediction").combine_chunks().cast(pa.list_(pa.float32())),
                   imdb.oracle, N)


@pytest.mark.integration
def test_spark_udf_by_path_on_a_subset(spark, imdb):
    from pyspark.sql import functions as F
    df = spark.read.parquet(imdb.dir).where(F.col("id") % 7 == 0)
    t = _spark_arrow(df.select("id", D.spark_udf(imdb.path, max_batch=128)("tokens").alias("p")))
    ids = np.asarray(t.column("id"))
    assert np.array_equal(np.sort(ids), np.arange(0, N, 7))
    got = _vectors(t.column("p").combine_chunks().cast(pa.list_(pa.float32())))
    assert np.array_equal(got, imdb.oracle[ids])


@pytest.mark.integration
def test_spark_per_step_float_model(spark, steps):
    df = spark.read.parquet(steps.dir)
    out = D.spark_predict(df, steps.model.__reduce__()[1][0], "x", "y", max_batch=64)   # the bytes
    assert out.schema["y"].dataType.simpleString() == "array<array<float>>"
    t = _spark_arrow(out.select("id", "y"))
    steps_t = pa.list_(pa.list_(pa.float32()))
    _check_steps(t.column("id"), t.column("y").combine_chunks().cast(steps_t), steps.oracle)
    t = _spark_arrow(df.withColumn("y", D.spark_udf(steps.model)("x")).select("id", "y"))
    _check_steps(t.column("id"), t.column("y").combine_chunks().cast(steps_t), steps.oracle)


@pytest.mark.integration
def test_spark_errors_name_the_problem(spark, imdb, steps):
    df = spark.read.parquet(imdb.dir)
    with pytest.raises(fastrnn.ShapeError, match="no column 'text'"):
        D.spark_predict(df, imdb.model, "text")
    with pytest.raises(fastrnn.ArgumentTypeError, match="column 'id' is bigint"):
        D.spark_predict(df, imdb.model, "id")
    with pytest.raises(fastrnn.ShapeError, match="float steps|features per step"):
        D.spark_predict(df, steps.model, "tokens")
    with pytest.raises(fastrnn.ShapeError, match="Embedding"):
        D.spark_predict(spark.read.parquet(steps.dir), imdb.model, "x")
    with pytest.raises(fastrnn.ShapeError, match="already has a column 'id'"):
        D.spark_predict(df, imdb.model, "tokens", "id")
    for bad in (42, None, imdb.model.layers):
        with pytest.raises(fastrnn.ArgumentTypeError, match="path to a .frnn file"):
            D.spark_predict(df, bad, "tokens")
        with pytest.raises(fastrnn.ArgumentTypeError, match="path to a .frnn file"):
            D.spark_udf(bad)
    with pytest.raises(fastrnn.ArgumentTypeError, match="pyspark DataFrame"):
        D.spark_predict(df.toPandas().head(2), imdb.model, "tokens")
    with pytest.raises(fastrnn.ModelFormatError, match="cannot read"):      # checked on the driver first
        D.spark_predict(df, imdb.path + ".missing", "tokens")


@pytest.mark.integration
def test_spark_sets_omp_num_threads_to_task_cpus(spark):
    """What worker_threads() relies on: Spark's Python workers get OMP_NUM_THREADS = spark.task.cpus (1)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("int")
    def threads(s: pd.Series) -> pd.Series:
        return pd.Series([D.worker_threads()] * len(s))
    assert {r[0] for r in spark.range(4).select(threads("id")).collect()} == {1}
