"""torch.flip of the time axis (graph.py, "reversed time"): rnn(torch.flip(x, [1])) is a recurrent
layer of direction "reverse", its output that layer's in reversed order. Converted from the live
module, TorchScript (script and trace) and both ONNX exporters, compared with torch at other
sizes than the example's; what cannot be lowered is refused by name."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import close, onnx_export, uniform_module
from torch import nn

import fastrnn
from fastrnn import ir


class LatentEncoder(nn.Module):
    """The encoder of a Latent-ODE-style model found by code search (file id 68581858323): the
    history read backwards so that the last hidden state holds what is near t = 0,
    out, _ = self.lstm(torch.flip(x, dims=[1])), then head(out[:, -1])."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        out, _ = self.lstm(torch.flip(x, dims=[1]))
        return self.head(out[:, -1])


class FlipBackTagger(nn.Module):
    """A time-major GRU over the reversed sequence, its output flipped back into order, a
    per-step Linear and ReLU before the flip (per-step ops keep the order)."""
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 5)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        out, _ = self.gru(x.flip(0))
        return torch.relu(self.fc(out)).flip(0)


class FlipFinalState(nn.Module):
    """fc(h_n[-1]) of a recurrent layer reading the reversed sequence, or the mean over time of
    its output (order does not matter to a pool)."""
    def __init__(self, cell, pool=False):
        super().__init__()
        self.pool = pool
        self.rnn = cell(4, 5, batch_first=True)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        out, h = self.rnn(torch.flip(x, [1]))
        return self.fc(out.mean(1) if self.pool else h[-1])


class FlipStateBesidePool(nn.Module):
    """torch.cat([h_n[-1], out.mean(1)], 1) of a GRU over the reversed sequence: the final state
    beside a pool of the output is a pool term of it, its first step (the layer runs backwards)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        out, h = self.rnn(torch.flip(x, [1]))
        return self.fc(torch.cat([h[-1], out.mean(1)], 1))


CASES = {"latent": LatentEncoder, "state_beside_pool": FlipStateBesidePool, "flip_back": FlipBackTagger, "final_state": lambda: FlipFinalState(nn.GRU),
         "pool": lambda: FlipFinalState(nn.LSTM, pool=True), "rnn": lambda: FlipFinalState(nn.RNN)}
# torch's dynamo exporter writes nn.RNN as an unrolled loop of MatMul / Tanh (docs/onnx.md)
ONNX = [(n, d) for n in sorted(CASES) for d in (False, True) if not (n == "rnn" and d)]


def _model(name):
    return uniform_module(CASES[name], 5, 0.6)


def _x(m, B, T, seed):
    x = np.random.default_rng(seed).normal(size=(B, T, 4)).astype(np.float32)
    return torch.from_numpy(x.transpose(1, 0, 2).copy() if isinstance(m, FlipBackTagger) else x)


def _want(m, x):
    with torch.no_grad():
        y = m(x).numpy()
    return y.transpose(1, 0, 2) if isinstance(m, FlipBackTagger) else y


def _predict_x(m, x):
    return x.numpy().transpose(1, 0, 2) if isinstance(m, FlipBackTagger) else x.numpy()


@pytest.mark.parametrize("capture", ["module", "script", "trace"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_flip_converts_and_matches(name, capture, tmp_path):
    m = _model(name)
    ex = _x(m, 3, 7, 0)
    src = m
    if capture != "module":
        src = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, (ex,))
        torch.jit.save(src, str(tmp_path / "m.pt"))
        src = str(tmp_path / "m.pt")
    f = fastrnn.convert(src, example_input=ex)
    assert any(isinstance(l, ir.Recurrent) and l.direction == "reverse" for l in f.layers)
    for B, T, seed in ((3, 7, 1), (2, 12, 2), (1, 1, 3)):
        x = _x(m, B, T, seed)
        close(f.predict(_predict_x(m, x)), _want(m, x), f"{name} {capture} B={B} T={T}")
    with pytest.raises(fastrnn.UnsupportedError, match="reverse|backward|stream"):
        f.stream(1)


@pytest.mark.parametrize("name, dynamo", ONNX, ids=[f"{n}-{'dynamo' if d else 'legacy'}" for n, d in ONNX])
def test_flip_onnx_exports(name, dynamo, tmp_path):
    m = _model(name)
    x = _x(m, 3, 7, 0)
    path = tmp_path / "m.onnx"
    onnx_export(m, [x], path, dynamo,
                dynamic_axes={"x": {0: "t", 1: "b"} if isinstance(m, FlipBackTagger) else {0: "b", 1: "t"}})
    f = fastrnn.convert(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = _x(m, 3, 7, 4)
    feeds = {sess.get_inputs()[0].name: x2.numpy()}
    close(f.run(None, feeds)[0], sess.run(None, feeds)[0], f"{name} {'dynamo' if dynamo else 'legacy'}")


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(torch.flip(x, [1]), lengths, batch_first=True, enforce_sorted=False)
        _, h = self.rnn(p)
        return h[-1]


class Refused(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how
        self.rnn = nn.GRU(4, 5, batch_first=True, bidirectional=how == "bidirectional")
        self.register_buffer("pos", torch.linspace(-1, 1, 5)[None, :, None])

    def forward(self, x):
        if self.how == "features":
            return self.rnn(torch.flip(x, [2]))[0]
        if self.how == "position":          # a bias per position on the reversed steps
            return self.rnn(torch.flip(x, [1]) + self.pos)[0][:, -1]
        out, _ = self.rnn(torch.flip(x, [1]))
        if self.how == "mixed":
            return out + self.rnn(x)[0]
        if self.how == "returned":
            return out
        return out[:, -1]


@pytest.mark.parametrize("how, match", [
    ("features", "flip along the F axis"),
    ("bidirectional", "bidirectional layer reading a sequence in reversed time order"),
    ("returned", "reversed time order"),
    ("mixed", "arithmetic of a sequence in reversed time order"),
    ("position", "a constant that varies along time"),
])
def test_flips_that_cannot_be_lowered_are_refused_by_name(how, match):
    with pytest.raises(fastrnn.UnsupportedError, match=match):
        fastrnn.convert(Refused(how).eval(), example_input=torch.zeros(2, 5, 4))


def test_a_flip_with_lengths_is_refused():
    with pytest.raises(fastrnn.UnsupportedError, match="flip of a sequence with lengths|reversed time order"):
        fastrnn.convert(Packed().eval(), example_input=[torch.zeros(2, 5, 4), torch.tensor([5, 3])])
