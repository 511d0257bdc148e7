"""Keras 2 (tf.keras 2.15) files -> fastrnn, against the outputs Keras 2 itself recorded.

The .h5 / .keras files and expected.npz were written once by tests/keras2/make_fixtures.py
(TensorFlow cannot be installed by the test command; see tests/keras2/README.md). Converting
must not need TensorFlow or Keras: these tests do not import either.
"""
import json
import os

import numpy as np
import pytest

import fastrnn
from fastrnn import ir

HERE = os.path.join(os.path.dirname(__file__), "keras2")
MANIFEST = json.load(open(os.path.join(HERE, "MANIFEST.json")))["models"]
EXPECTED = np.load(os.path.join(HERE, "expected.npz"))
FILES = [(name, f) for name, m in sorted(MANIFEST.items()) for f in m["files"]]


def _exact(got, want, what):
    # the accuracy contract: 1e-5 absolute on O(1) outputs (rtol 1e-4 beyond)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


def _streamable(m):
    return all(l.direction == "forward" for l in m.layers if isinstance(l, ir.Recurrent))


def _stream_all(m, x):
    """Step a fresh stream through x (batch-major); stacks the per-step outputs."""
    s = m.stream(x.shape[0])
    return [s.step(x[:, t]) for t in range(x.shape[1])]


@pytest.mark.parametrize("name,fname", FILES, ids=[f for _, f in FILES])
def test_keras2_file(name, fname):
    info = MANIFEST[name]
    m = fastrnn.convert(os.path.join(HERE, fname))
    assert m.meta["source"] == "keras" and m.meta["keras_version"] == 2
    x = EXPECTED[f"{name}.x"]
    tm = m.meta["time_major"]
    xb = np.swapaxes(x, 0, 1) if tm else x        # predict is batch-major (DESIGN section 1)
    want = [EXPECTED[f"{name}.y{i}"] for i in range(info["num_outputs"])]
    if m.meta["stateful"]:
        # a stateful Keras model carries state across predict calls: a Stream does the same
        s = m.stream(xb.shape[0])
        for xs, key in ((xb, "y0"), (EXPECTED[f"{name}.x_2"], "y0_2")):
            got = np.stack([s.step(xs[:, t]) for t in range(xs.shape[1])], axis=1)
            _exact(got, EXPECTED[f"{name}.{key}"], key)
        # ... and so does predict, threading the state through
        y1, st = m.predict(xb, return_state=True)
        y2 = m.predict(EXPECTED[f"{name}.x_2"], initial_state=st)
        _exact(y1, EXPECTED[f"{name}.y0"], "predict 1")
        _exact(y2, EXPECTED[f"{name}.y0_2"], "predict 2")
        return
    got = m.predict(xb)
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if tm and g.ndim == 3:
            g = np.swapaxes(g, 0, 1)
        assert g.shape == w.shape, (i, g.shape, w.shape)
        _exact(g, w, f"output {i}")
    if _streamable(m):
        steps = _stream_all(m, xb)
        T = xb.shape[1]
        for i, w in enumerate(want):
            w = np.swapaxes(w, 0, 1) if tm and w.ndim == 3 else w
            st = steps[-1] if m.num_outputs == 1 else steps[-1][i]
            if w.ndim == 3:
                seq = [s if m.num_outputs == 1 else s[i] for s in steps]
                _exact(np.stack(seq, axis=1), w, f"stream output {i}")
            else:
                _exact(st, w, f"stream output {i} after {T} steps")


def test_keras2_roundtrip_frnn(tmp_path):
    m = fastrnn.convert(os.path.join(HERE, "bidi_state.h5"))
    m.save(tmp_path / "m.frnn")
    m2 = fastrnn.load(tmp_path / "m.frnn")
    x = EXPECTED["bidi_state.x"]
    for a, b in zip(m.predict(x), m2.predict(x)):
        np.testing.assert_array_equal(a, b)
    assert m2.signature == m.signature and m2.meta == m.meta


def test_keras2_hard_sigmoid_is_keras2s():
    # Keras 2 hard_sigmoid is clip(0.2 x + 0.5); Keras 3's is clip(x/6 + 0.5)
    m = fastrnn.convert(os.path.join(HERE, "lstm_hard_sigmoid.h5"))
    assert m.layers[0].activations[0][0] == ir.Act("hard_sigmoid", 0.2, 0.5)


def _mutate(obj, rng):
    """A copy of a JSON value with one random leaf or container replaced by junk."""
    junk = [None, -1, 0, 10**12, 1e300, "x", "", [], {}, [1, 2, 3], {"a": 1}, True, 2.5]
    paths = []

    def walk(v, path):
        paths.append(path)
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, path + [k])
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, path + [i])
    walk(obj, [])
    path = paths[rng.integers(len(paths))]
    new = json.loads(json.dumps(obj))
    if not path:
        return junk[rng.integers(len(junk))]
    parent = new
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
    else:
        parent[path[-1]] = junk[rng.integers(len(junk))]
    return new


@pytest.mark.parametrize("name", ["bidi_state", "mask_zero_bidi", "identity_layers", "gru_reset_before"])
def test_keras_config_fuzz(tmp_path, name):
    """Corrupted configs and weight files raise FastRNNError subclasses (or convert); nothing
    else escapes and nothing crashes."""
    import shutil
    import zipfile
    import h5py
    rng = np.random.default_rng(len(name))
    src = os.path.join(HERE, name + ".h5")
    with h5py.File(src, "r") as f:
        cfg = json.loads(f.attrs["model_config"])
    for i in range(60):
        p = tmp_path / f"m{i}.h5"
        shutil.copy(src, p)
        with h5py.File(p, "r+") as f:
            f.attrs["model_config"] = json.dumps(_mutate(cfg, rng))
        try:
            fastrnn.convert(str(p))
        except fastrnn.FastRNNError:
            pass
    # weights: drop or reshape a dataset
    with h5py.File(src, "r") as f:
        dsets = []
        f["model_weights"].visititems(lambda n, o: dsets.append(n) if isinstance(o, h5py.Dataset) else None)
    for i, d in enumerate(dsets):
        p = tmp_path / f"w{i}.h5"
        shutil.copy(src, p)
        with h5py.File(p, "r+") as f:
            shape = f["model_weights"][d].shape
            del f["model_weights"][d]
            if i % 2:
                f["model_weights"][d] = np.zeros(tuple(s + 1 for s in shape), np.float32)
        with pytest.raises(fastrnn.ModelFormatError):
            fastrnn.convert(str(p))
    # bytes: truncated .h5 and .keras files, bit-flipped .keras archives (bit flips inside HDF5
    # metadata test libhdf5, which can loop on them: see the trust note in converters/keras.py)
    ksrc = os.path.join(HERE, name + ".keras")
    for path in (src, ksrc):
        data = open(path, "rb").read()
        for i in range(20):
            if path == src and not i % 2:
                continue
            b = bytearray(data[: rng.integers(1, len(data))] if i % 2 else data)
            if not i % 2:
                for _ in range(8):
                    b[rng.integers(len(b))] ^= 0xFF
            p = tmp_path / f"b{i}{os.path.splitext(path)[1]}"
            p.write_bytes(bytes(b))
            try:
                fastrnn.convert(str(p))
            except fastrnn.FastRNNError:
                pass
    with zipfile.ZipFile(ksrc) as z:
        assert "config.json" in z.namelist()


def test_keras22_sequential_list_config(tmp_path):
    """Keras <= 2.2 wrote a Sequential config as a bare list of layers, with batch_input_shape on
    the first layer and no InputLayer: rewrite a Keras 2.15 file that way and convert it."""
    import shutil
    import h5py
    p = tmp_path / "old.h5"
    shutil.copy(os.path.join(HERE, "reuters_simplernn.h5"), p)
    with h5py.File(p, "r+") as f:
        cfg = json.loads(f.attrs["model_config"])
        layers = [l for l in cfg["config"]["layers"] if l["class_name"] != "InputLayer"]
        layers[0]["config"]["batch_input_shape"] = [None, 49, 1]
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers})
        f.attrs["keras_version"] = "2.2.4"
    m = fastrnn.convert(str(p))
    assert m.input_size == 1 and m.meta["time_steps"] == 49
    _exact(m.predict(EXPECTED["reuters_simplernn.x"]), EXPECTED["reuters_simplernn.y0"], "list config")
