"""Steps flattened into one vector before a Linear (ir.Flatten): torch's out.reshape(B, -1) /
out.flatten(1) / out.contiguous().view(B, -1) read by an nn.Linear(T * H, ...) (fixed-window
forecasters and classifiers), Keras's Flatten after a layer returning sequences (with an Input of
fixed length, convolutions before it). From the live module, TorchScript, a trace, both ONNX
exporters and .keras / .h5 files, against torch / Keras / onnxruntime; the layer against the
float64 reference; other lengths, lengths= and streams are refused, saying why."""
import os

import numpy as np
import pytest
import torch
from conftest import quiet, rec, dense
from torch import nn

import fastrnn
from fastrnn import ShapeError, UnsupportedError, ir, reference

T0, F_IN, H = 8, 3, 5


class ReshapeHead(nn.Module):
    """A 2-layer LSTM, self.fc(out.reshape(out.size(0), -1)) with fc = Linear(seq_len * H, 2)."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(F_IN, H, num_layers=2, batch_first=True)
        self.fc = nn.Linear(T0 * H, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out.reshape(out.size(0), -1))


class FlattenMLP(nn.Module):
    """A bidirectional GRU, out.flatten(1), a ReLU MLP."""
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(F_IN, H, batch_first=True, bidirectional=True)
        self.mlp = nn.Sequential(nn.Linear(T0 * 2 * H, 6), nn.ReLU(), nn.Linear(6, 1))

    def forward(self, x):
        return self.mlp(self.gru(x)[0].flatten(1))


class ViewHead(nn.Module):
    """batch_size = x.size(0); out.contiguous().view(batch_size, -1) after a per-step Linear."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(F_IN, H, batch_first=True)
        self.proj = nn.Linear(H, 2)
        self.fc = nn.Linear(T0 * 2, 3)

    def forward(self, x):
        batch_size = x.size(0)
        out = torch.tanh(self.proj(self.rnn(x)[0]))
        return self.fc(out.contiguous().view(batch_size, -1))


CASES = {"reshape_head": ReshapeHead, "flatten_mlp": FlattenMLP, "view_head": ViewHead}


def _x(B, seed, T=T0):
    return np.random.default_rng(seed).normal(size=(B, T, F_IN)).astype(np.float32)


@pytest.mark.parametrize("capture", ["module", "script", "trace"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_flattened_steps(name, capture, tmp_path):
    torch.manual_seed(len(name))
    m = CASES[name]().eval()
    ex = torch.from_numpy(_x(3, 0))
    if capture == "module":
        f = fastrnn.convert(m, example_input=ex)
    else:
        with quiet():
            a = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, (ex,))
        a.save(str(tmp_path / "m.pt"))
        f = fastrnn.convert(str(tmp_path / "m.pt"), example_input=ex)
    assert any(isinstance(l, ir.Flatten) and l.n == T0 for l in f.layers)
    for B, seed in ((5, 1), (1, 2)):
        x = _x(B, seed)
        with torch.no_grad():
            want = m(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(f.predict(x), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ShapeError, match=f"exactly {T0} steps"):
        f.predict(_x(2, 3, T0 + 1))
    with pytest.raises(ShapeError, match="lengths"):
        f.predict(x, lengths=np.array([T0]))
    with pytest.raises(UnsupportedError, match="Flatten"):
        f.stream(1)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_exports(name, dynamo, tmp_path):
    """The graph's input has a symbolic time axis; the Linear over the flattened steps fixes it."""
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(len(name))
    m = CASES[name]().eval()
    ex = torch.from_numpy(_x(3, 0))
    p = str(tmp_path / "m.onnx")
    with quiet():
        if dynamo:
            ep = torch.export.export(m, (ex,), dynamic_shapes=({0: torch.export.Dim.AUTO},), strict=False)
            torch.onnx.export(ep, f=p, dynamo=True, input_names=["x"])
        else:
            torch.onnx.export(m, (ex,), p, dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "B", 1: "T"}})
    f = fastrnn.convert(p)
    x = _x(4, 3)
    want = ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(f.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)


def test_keras_flatten_after_a_sequence(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    L = keras.layers
    x = _x(3, 4, 12)
    models = {
        "lstm": keras.Sequential([keras.Input((12, F_IN)), L.LSTM(6, return_sequences=True), L.Flatten(),
                                  L.Dense(1)]),
        "cnn_lstm": keras.Sequential([keras.Input((12, F_IN)), L.Conv1D(4, 3, activation="relu"), L.MaxPooling1D(2),
                                      L.GRU(5, return_sequences=True), L.Dropout(0.2), L.Flatten(), L.Dense(2)]),
    }
    for name, km in models.items():
        want = np.asarray(km(x).detach().cpu())
        km.save(tmp_path / f"{name}.keras")
        km.save(tmp_path / f"{name}.h5")
        for src in (km, str(tmp_path / f"{name}.keras"), str(tmp_path / f"{name}.h5")):
            np.testing.assert_allclose(fastrnn.convert(src).predict(x), want, rtol=1e-5, atol=1e-5, err_msg=name)
    km = keras.Sequential([keras.Input((None, F_IN)), L.LSTM(6, return_sequences=True), L.Flatten()])
    with pytest.raises(UnsupportedError, match="unknown length"):
        fastrnn.convert(km)


def test_flatten_layer_against_the_reference(rng, tmp_path):
    layers = [rec(rng, "lstm", F_IN, 6), ir.Flatten(6, 9), dense(rng, 54, 3, "tanh")]
    x = rng.normal(size=(5, 9, F_IN)).astype(np.float32)
    want, _ = reference.run(layers, x)
    m = fastrnn.Model(layers)
    np.testing.assert_allclose(m.predict(x), want, rtol=1e-5, atol=1e-6)
    m.save(tmp_path / "m.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.frnn").predict(x), m.predict(x))
    with pytest.raises(fastrnn.ModelFormatError, match="Flatten needs a sequence"):
        fastrnn.Model([rec(rng, "gru", 3, 4, return_sequences=False), ir.Flatten(4, 2)])
