"""Recurrent layers side by side over one input (graph.py Lowering._reach_rnn_input): the input
carried past the first layer (ir.Recurrent.carry), the second reading those columns; the outputs
joined by a concat of their steps, pools of each, or their final states (pools of the "last" /
"first" kind of each output). Converted from the live module and both ONNX exporters, compared
with torch at other sizes; a causal one streams bit for bit as predict."""
import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import close, onnx_export, uniform_module
from torch import nn

import fastrnn
from fastrnn import ir

V = 20


class HandWrittenBi(nn.Module):
    """A bidirectional LSTM written by hand: one LSTM forwards, another over torch.flip(x, [1])
    flipped back, the two outputs concatenated per step (as chars2EEGvec-style code does)."""
    def __init__(self):
        super().__init__()
        self.f = nn.LSTM(4, 5, batch_first=True)
        self.b = nn.LSTM(4, 5, batch_first=True)
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        of, _ = self.f(x)
        ob, _ = self.b(torch.flip(x, [1]))
        return self.fc(torch.cat([of, ob.flip(1)], 2))


class ParallelPools(nn.Module):
    """Kaggle-kernel style: a bidirectional LSTM and a bidirectional GRU both over the
    embeddings, the mean of one beside the max of the other."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(6, 4, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(18, 2)

    def forward(self, x):
        e = self.emb(x)
        h1, _ = self.lstm(e)
        h2, _ = self.gru(e)
        return self.fc(torch.cat([h1.mean(1), h2.max(1)[0]], 1))


class ParallelFinals(nn.Module):
    """The final states of an LSTM and a bidirectional GRU side by side."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.gru = nn.GRU(4, 3, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(11, 2)

    def forward(self, x):
        _, (h1, _) = self.lstm(x)
        _, h2 = self.gru(x)
        return self.fc(torch.cat([h1[-1], h2[-2], h2[-1]], 1))


class ParallelSteps(nn.Module):
    """An LSTM and a GRU over one input, their steps concatenated: causal, so it streams."""
    def __init__(self):
        super().__init__()
        self.a = nn.LSTM(4, 5, batch_first=True)
        self.b = nn.GRU(4, 3, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.cat([self.a(x)[0], self.b(x)[0]], 2))


CASES = {"hand_bi": HandWrittenBi, "pools": ParallelPools, "finals": ParallelFinals, "steps": ParallelSteps}


def _x(name, B, T, seed):
    rng = np.random.default_rng(seed)
    if name == "pools":
        return torch.from_numpy(rng.integers(0, V, (B, T)))
    return torch.from_numpy(rng.normal(size=(B, T, 4)).astype(np.float32))


@pytest.mark.parametrize("name", sorted(CASES))
def test_side_by_side_converts_and_matches(name):
    m = uniform_module(CASES[name], 3, 0.7)
    f = fastrnn.convert(m, example_input=_x(name, 3, 7, 0))
    assert sum(isinstance(l, ir.Recurrent) for l in f.layers) == 2
    assert any(isinstance(l, ir.Recurrent) and l.carry for l in f.layers)
    for B, T, seed in ((3, 7, 1), (2, 12, 2), (1, 1, 3)):
        x = _x(name, B, T, seed)
        with torch.no_grad():
            want = m(x).numpy()
        close(f.predict(x.numpy()), want, f"{name} B={B} T={T}")
    if name == "steps":
        x = _x(name, 2, 9, 4).numpy()
        s = f.stream(2)
        got = np.stack([s.step(x[:, t]) for t in range(9)], 1)
        np.testing.assert_array_equal(got, f.predict(x))


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_side_by_side_onnx_exports(name, dynamo, tmp_path):
    m = uniform_module(CASES[name], 3, 0.7)
    onnx_export(m, [_x(name, 3, 7, 0)], tmp_path / "m.onnx", dynamo, dynamic_axes={"x": {0: "b", 1: "t"}})
    f = fastrnn.convert(str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: _x(name, 3, 7, 5).numpy()}
    close(f.run(None, feeds)[0], sess.run(None, feeds)[0], name)


class EmbedBesideOutput(nn.Module):
    """torch.cat((embed, out), 2) (the embeddings first, the layer's output after them: the
    pipeline holds them the other way round), then a max over time: the pool reads the columns in
    the concatenation's order. Before, the pool's output kept the concatenation's column order
    and was reordered twice (a wrong result that only the module capture's check caught)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, 4)
        self.lstm = nn.LSTM(4, 3, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(10, 2)

    def forward(self, x, unused):
        e = self.emb(x)
        out, _ = self.lstm(e)
        return self.fc(torch.cat((e, out), 2).max(1)[0])


@pytest.mark.parametrize("capture", ["module", "legacy", "dynamo"])
def test_a_pool_reads_columns_in_the_concatenations_order(capture, tmp_path):
    m = uniform_module(EmbedBesideOutput, 4, 0.7)
    args = [_x("pools", 3, 7, 0), torch.zeros(3)]
    if capture == "module":
        f = fastrnn.convert(m, example_input=args)
        x = _x("pools", 2, 10, 1)
        with torch.no_grad():
            close(f.predict(x.numpy()), m(x, None).numpy())
        return
    path = tmp_path / "m.onnx"
    onnx_export(m, args, path, capture == "dynamo", ("x", "unused"), {"x": {0: "b", 1: "t"}, "unused": {0: "b"}})
    f = fastrnn.convert(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), [_x("pools", 3, 7, 2), torch.zeros(3)])}
    want = sess.run(None, feeds)[0]
    # every input the graph declares is accepted, as onnxruntime accepts it, the unused one ignored
    close(f.run(None, feeds)[0], want)
    with pytest.raises(fastrnn.ShapeError, match="unknown input"):
        f.run(None, dict(feeds, other=np.zeros(3, np.float32)))
