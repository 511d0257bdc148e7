"""LayerNorm and GELU, as recurrent models written since transformers made them common: an input
LayerNorm before the LSTM, a LayerNorm of its output, GELU heads (exact and tanh forms),
F.layer_norm of the final state, Keras's LayerNormalization and gelu. Each from the live
module, TorchScript, a trace and both ONNX exporters (the legacy one writes GELU as an Erf or
Tanh chain of nodes, fused back into one), against torch / Keras / onnxruntime; streams step by
step against predict."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, TensorProto
from torch import nn

from conftest import quiet

import fastrnn
from fastrnn import UnsupportedError, ir


def _affine(ln):
    """A trained LayerNorm's scale and shift are not 1 and 0."""
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    return ln


class NormLSTM(nn.Module):
    """Input LayerNorm, a bidirectional LSTM, LayerNorm of its output, GELU, a per-step Linear."""
    def __init__(self, approximate="none"):
        super().__init__()
        self.ln_in = _affine(nn.LayerNorm(4))
        self.lstm = nn.LSTM(4, 6, batch_first=True, bidirectional=True)
        self.ln = _affine(nn.LayerNorm(12))
        self.act = nn.GELU(approximate=approximate)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        out, _ = self.lstm(self.ln_in(x))
        return self.fc(self.act(self.ln(out)))


class FinalStateNorm(nn.Module):
    """F.layer_norm (no affine) of a GRU's last hidden state, F.gelu, a classifier."""
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(F.gelu(F.layer_norm(h[-1], (8,), eps=1e-6)))


class StreamNorm(nn.Module):
    """A causal per-step model (it streams): LSTM, LayerNorm without affine, tanh-GELU MLP."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 9)
        self.ln = nn.LayerNorm(9, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(9, 16), nn.GELU(approximate="tanh"), nn.Linear(16, 4))

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.mlp(self.ln(out))


CASES = {"norm_lstm": (NormLSTM,), "norm_lstm_tanh": (NormLSTM, "tanh"), "final_state": (FinalStateNorm,),
         "stream": (StreamNorm,)}


def _build(name):
    torch.manual_seed(5)
    return CASES[name][0](*CASES[name][1:]).eval()


def _x(m, B, T, seed):
    x = np.random.default_rng(seed).normal(size=(B, T, 4)).astype(np.float32) * 2 + 1
    return x.transpose(1, 0, 2).copy() if isinstance(m, StreamNorm) else x     # StreamNorm is time-major


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("capture", ["module", "script", "trace"])
def test_torch_layer_norm_and_gelu(name, capture, tmp_path):
    m = _build(name)
    ex = torch.from_numpy(_x(m, 3, 7, 0))
    if capture == "module":
        f = fastrnn.convert(m, example_input=ex)
    else:
        with quiet():
            (torch.jit.script(m) if capture == "script" else torch.jit.trace(m, (ex,))).save(str(tmp_path / "m.pt"))
        f = fastrnn.convert(str(tmp_path / "m.pt"), example_input=ex)
    kinds = {l.activation.kind for l in f.layers if isinstance(l, (ir.Activation, ir.Dense))}
    assert "layer_norm" in kinds and kinds & {"gelu", "gelu_tanh"}
    for B, T, seed in ((2, 9, 1), (1, 3, 2)):
        x = _x(m, B, T, seed)
        with torch.no_grad():
            want = m(torch.from_numpy(x)).numpy()
        got = f.predict(x.transpose(1, 0, 2) if isinstance(m, StreamNorm) else x)
        if isinstance(m, StreamNorm):
            got = got.transpose(1, 0, 2)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_exports(name, dynamo, tmp_path):
    """LayerNormalization nodes; GELU as a Gelu node (dynamo) or an Erf / Tanh chain (legacy)."""
    m = _build(name)
    ex = torch.from_numpy(_x(m, 3, 7, 0))
    path = tmp_path / "m.onnx"
    with quiet():
        if dynamo:
            torch.onnx.export(m, (ex,), str(path), dynamo=True, external_data=False)
        else:
            torch.onnx.export(m, (ex,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    if not dynamo:
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert "LayerNormalization" in ops and ops & {"Erf", "Tanh"}
    f = fastrnn.convert(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: _x(m, 3, 7, 3)}
    np.testing.assert_allclose(f.run(None, feeds)[0], sess.run(None, feeds)[0], rtol=1e-5, atol=1e-5)


def test_streams_normalise_each_step():
    m = _build("stream")
    f = fastrnn.convert(m, example_input=torch.from_numpy(_x(m, 2, 5, 0)))
    x = _x(m, 3, 8, 4).transpose(1, 0, 2)       # batch-major for fastrnn
    s = f.stream(3)
    steps = np.stack([s.step(x[:, t]) for t in range(8)], 1)
    np.testing.assert_array_equal(steps, f.predict(x))


def _gelu_graph(order, one=1.0):
    """x (T, B, 3) -> RNN(4) -> MatMul -> GELU written with the operands in another order than
    torch's exporter (x * 0.5 first, then times 1 + erf(x * (1 / sqrt 2))) -> y; one: the
    constant added to erf."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 5)).astype(np.float32)
    Wr, Rr = rng.normal(size=(1, 4, 3)).astype(np.float32), rng.normal(size=(1, 4, 4)).astype(np.float32) * 0.5
    inits = [helper.make_tensor("W", TensorProto.FLOAT, W.shape, W.ravel()),
             helper.make_tensor("Wr", TensorProto.FLOAT, Wr.shape, Wr.ravel()),
             helper.make_tensor("Rr", TensorProto.FLOAT, Rr.shape, Rr.ravel()),
             helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
             helper.make_tensor("c_r2", TensorProto.FLOAT, [], [0.70710678]),
             helper.make_tensor("c_half", TensorProto.FLOAT, [], [0.5]),
             helper.make_tensor("c_one", TensorProto.FLOAT, [], [one])]
    nodes = [helper.make_node("RNN", ["x", "Wr", "Rr"], ["y4"], hidden_size=4),
             helper.make_node("Squeeze", ["y4", "ax1"], ["r"]),
             helper.make_node("MatMul", ["r", "W"], ["h"])]
    if order == "half_first":
        nodes += [helper.make_node("Mul", ["c_half", "h"], ["hh"]),
                  helper.make_node("Mul", ["h", "c_r2"], ["u"]),
                  helper.make_node("Erf", ["u"], ["e"]),
                  helper.make_node("Add", ["c_one", "e"], ["a"]),
                  helper.make_node("Mul", ["a", "hh"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["t", "b", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["t", "b", 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_gelu_chain_in_another_order_is_fused(tmp_path):
    path = tmp_path / "g.onnx"
    onnx.save(_gelu_graph("half_first"), str(path))
    f = fastrnn.convert(str(path))
    assert [l.activation.kind for l in f.layers[1:]] == ["gelu"]
    x = np.random.default_rng(1).normal(size=(6, 2, 3)).astype(np.float32) * 3
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(f.run(None, {"x": x})[0], sess.run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_an_erf_chain_that_is_not_gelu_is_refused(tmp_path):
    """1.5 + erf(.) instead of 1 + erf(.): not GELU, so the Erf stays and is refused, by name."""
    path = tmp_path / "g.onnx"
    onnx.save(_gelu_graph("half_first", one=1.5), str(path))
    with pytest.raises(UnsupportedError, match="Erf"):
        fastrnn.convert(str(path))


def test_layer_norm_options_refused_with_their_reason():
    class OverTwo(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, batch_first=True)

        def forward(self, x):
            out, _ = self.lstm(x)
            return F.layer_norm(out, out.shape[-2:])
    with pytest.raises(UnsupportedError, match="last 2 axes"):
        fastrnn.convert(OverTwo().eval(), example_input=torch.zeros(2, 5, 4))
    with pytest.raises(fastrnn.ModelFormatError, match="epsilon"):
        ir.Act("layer_norm", -1.0)


def test_keras_layer_normalization_and_gelu():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    inp = keras.Input((None, 5))
    x = keras.layers.LayerNormalization()(inp)
    x = keras.layers.Bidirectional(keras.layers.LSTM(6, return_sequences=True))(x)
    x = keras.layers.LayerNormalization(epsilon=1e-5, center=False)(x)
    x = keras.layers.Dense(7, activation="gelu")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    m = keras.Model(inp, keras.layers.Dense(3)(x))
    rng = np.random.default_rng(1)
    for w in m.weights:
        if "gamma" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape))
        elif "beta" in w.path:
            w.assign(rng.normal(size=w.shape) * 0.3)
    f = fastrnn.convert(m)
    x = rng.normal(size=(3, 8, 5)).astype(np.float32) * 2 + 1
    want = np.asarray(m(x).detach().cpu())
    np.testing.assert_allclose(f.predict(x), want, rtol=1e-5, atol=1e-5)


def test_keras_gelu_inside_a_recurrent_cell():
    """An elementwise activation is one of a cell's too: SimpleRNN(activation="gelu")."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    m = keras.Sequential([keras.Input((None, 3)), keras.layers.SimpleRNN(5, activation="gelu"), keras.layers.Dense(2)])
    x = np.random.default_rng(2).normal(size=(4, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(fastrnn.convert(m).predict(x), np.asarray(m(x).detach().cpu()), rtol=1e-5, atol=1e-5)
