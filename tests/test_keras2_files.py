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
