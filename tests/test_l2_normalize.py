"""L2 normalisation of a recurrent model's output (speaker / sentence embeddings): F.normalize,
x / x.norm(dim=1, keepdim=True) with and without an added epsilon, per step and of a final
state, Keras's UnitNormalization. Each from the live module, TorchScript, a trace and both ONNX
exporters (ReduceL2, Clip, Expand, Div) against torch / Keras / onnxruntime; a norm used for
anything else is refused by name. The activation itself is checked against torch in
tests/test_reference.py and against the float64 reference in tests/test_kernels.py."""
import os

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import quiet

import fastrnn
from fastrnn import UnsupportedError, ir


class NormalizedFinal(nn.Module):
    """A GRU's last state through a Linear, F.normalize(dim=1) (default eps)."""
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 8, num_layers=2, batch_first=True)
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        _, h = self.gru(x)
        return F.normalize(self.fc(h[-1]), p=2.0, dim=1)


class NormalizedSteps(nn.Module):
    """Per-step embeddings divided by their norm + 1e-5 (a stream of normalised vectors)."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 7, batch_first=True)
        self.fc = nn.Linear(7, 5)

    def forward(self, x):
        e = torch.relu(self.fc(self.lstm(x)[0]))
        return e / (e.norm(p=2, dim=-1, keepdim=True) + 1e-5)


class NormalizedBig(nn.Module):
    """F.normalize with a large eps: rows whose norm is under it are divided by eps instead."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 6, batch_first=True)

    def forward(self, x):
        return F.normalize(self.rnn(x)[0][:, -1], dim=-1, eps=2.0)


CASES = {"final": NormalizedFinal, "steps": NormalizedSteps, "big_eps": NormalizedBig}


def _build(name):
    torch.manual_seed(3)
    return CASES[name]().eval()


def _x(B, T, seed):
    return np.random.default_rng(seed).normal(size=(B, T, 4)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("capture", ["module", "script", "trace"])
def test_torch_normalisation(name, capture, tmp_path):
    m = _build(name)
    ex = torch.from_numpy(_x(3, 7, 0))
    if capture == "module":
        f = fastrnn.convert(m, example_input=ex)
    else:
        with quiet():
            (torch.jit.script(m) if capture == "script" else torch.jit.trace(m, (ex,))).save(str(tmp_path / "m.pt"))
        f = fastrnn.convert(str(tmp_path / "m.pt"), example_input=ex)
    assert "l2_normalize" in {l.activation.kind for l in f.layers if isinstance(l, (ir.Activation, ir.Dense))}
    for B, T, seed in ((2, 9, 1), (1, 3, 2)):
        x = _x(B, T, seed)
        with torch.no_grad():
            want = m(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(f.predict(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_exports(name, dynamo, tmp_path):
    m = _build(name)
    ex = torch.from_numpy(_x(3, 7, 0))
    path = tmp_path / "m.onnx"
    with quiet():
        if dynamo:
            torch.onnx.export(m, (ex,), str(path), dynamo=True, external_data=False)
        else:
            torch.onnx.export(m, (ex,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "b", 1: "t"}})
    f = fastrnn.convert(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: _x(3, 7, 3)}
    np.testing.assert_allclose(f.run(None, feeds)[0], sess.run(None, feeds)[0], rtol=1e-5, atol=1e-6)


def test_a_stream_normalises_each_step():
    m = _build("steps")
    f = fastrnn.convert(m, example_input=torch.from_numpy(_x(2, 5, 0)))
    x = _x(3, 8, 4)
    s = f.stream(3)
    np.testing.assert_array_equal(np.stack([s.step(x[:, t]) for t in range(8)], 1), f.predict(x))


def test_other_uses_of_a_norm_are_refused_by_name():
    class OtherTensor(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, batch_first=True)
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            h = self.lstm(x)[0][:, -1]
            return self.fc(h) / h.norm(dim=1, keepdim=True)

    class L1(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, batch_first=True)

        def forward(self, x):
            return F.normalize(self.lstm(x)[0], p=1, dim=-1)

    class OverTime(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, batch_first=True)

        def forward(self, x):
            o = self.lstm(x)[0]
            return o / o.norm(dim=1, keepdim=True)

    ex = torch.zeros(2, 5, 4)
    for mod, match in ((OtherTensor, "norm of another tensor"), (L1, "p=1"), (OverTime, "L2 norm over the features")):
        with pytest.raises(UnsupportedError, match=match):
            fastrnn.convert(mod().eval(), example_input=ex)
    with pytest.raises(fastrnn.ModelFormatError, match="l2_normalize"):
        ir.Act("l2_normalize", 1e-12, 2)


def test_keras_unit_normalization():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    inp = keras.Input((None, 5))
    x = keras.layers.LSTM(6, return_sequences=True)(inp)
    x = keras.layers.UnitNormalization()(x)
    x = keras.layers.GRU(4)(x)
    m = keras.Model(inp, keras.layers.UnitNormalization(axis=-1)(keras.layers.Dense(3)(x)))
    f = fastrnn.convert(m)
    x = np.random.default_rng(1).normal(size=(3, 8, 5)).astype(np.float32)
    np.testing.assert_allclose(f.predict(x), np.asarray(m(x).detach().cpu()), rtol=1e-5, atol=1e-6)
