"""A recurrent layer's final states beside pools of its own output, torch.cat([h_n[-2], h_n[-1],
out.mean(1), out.max(1)[0]], 1) (Kaggle text classifiers): one Pool of terms whose "last" / "first"
kinds are a forward direction's final state (its last step within lengths) and a backward one's
(its first step). From the live module, TorchScript, a trace and torch's ONNX exports, against
torch / onnxruntime, with and without packing; streams step by step; the kinds against the
float64 reference."""
import numpy as np
import pytest
import torch
from conftest import quiet, rec
from torch import nn

import fastrnn
from fastrnn import ir, reference

V, E, H, T0 = 30, 6, 5, 7


class BiLastMeanMax(nn.Module):
    """A bidirectional GRU: [h_n fwd, h_n bwd] beside the mean and max over time."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(6 * H, 2)

    def forward(self, x):
        o, h = self.rnn(self.emb(x))
        last = torch.cat([h[-2], h[-1]], 1)
        return self.fc(torch.cat([last, o.mean(1), o.max(1)[0]], 1))


class PoolsThenLast(nn.Module):
    """A 2-layer LSTM (it streams): max and mean pools first, the top layer's h_n[-1] after them."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, H, num_layers=2, batch_first=True)
        self.fc = nn.Linear(3 * H, 3)

    def forward(self, x):
        o, (h, _) = self.rnn(x)
        return self.fc(torch.cat((torch.max(o, 1)[0], torch.mean(o, 1), h[-1]), 1))


class PackedBiFinalsPools(nn.Module):
    """pack_padded_sequence: h_n at each row's own length beside pools of pad_packed_sequence's
    output (torch pools over the longest row's steps)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(6 * H, 2)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        o, (h, _) = self.rnn(p)
        o, _ = nn.utils.rnn.pad_packed_sequence(o, batch_first=True)
        return self.fc(torch.cat([h[-1], h[-2], o.sum(1), torch.max(o, 1)[0]], dim=1))


CASES = {"bi_last_mean_max": BiLastMeanMax, "pools_then_last": PoolsThenLast, "packed": PackedBiFinalsPools}


def _args(name, B, T, seed):
    rng = np.random.default_rng(seed)
    if name == "pools_then_last":
        return (torch.from_numpy(rng.normal(size=(B, T, 4)).astype(np.float32)),)
    x = torch.from_numpy(rng.integers(1, V, (B, T)))
    if name != "packed":
        return (x,)
    lens = torch.from_numpy(rng.integers(1, T + 1, B))
    lens[0] = T
    return x, lens


def _predict(f, args):
    return f.predict(args[0].numpy(), **({"lengths": args[1].numpy()} if len(args) > 1 else {}))


@pytest.mark.parametrize("capture", ["module", "script", "trace"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_finals_beside_pools_match_torch(name, capture, tmp_path):
    torch.manual_seed(len(name))
    m = CASES[name]().eval()
    ex = _args(name, 3, T0, 0)
    if capture == "module":
        f = fastrnn.convert(m, example_input=list(ex))
    else:
        with quiet():
            a = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, ex)
        a.save(str(tmp_path / "m.pt"))
        f = fastrnn.convert(str(tmp_path / "m.pt"), example_input=list(ex))
    pools = [l for l in f.layers if isinstance(l, ir.Pool)]
    assert len(pools) == 1 and "last" in pools[0].kinds
    for B, T, seed in ((4, 11, 1), (1, 3, 2)):
        args = _args(name, B, T, seed)
        with torch.no_grad():
            want = m(*args).numpy()
        np.testing.assert_allclose(_predict(f, args), want, rtol=1e-5, atol=1e-5, err_msg=f"{name} B={B}")
    f.save(tmp_path / "m.frnn")
    np.testing.assert_array_equal(_predict(fastrnn.load(tmp_path / "m.frnn"), args), _predict(f, args))


@pytest.mark.parametrize("name", ["bi_last_mean_max", "pools_then_last"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_exports(name, dynamo, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(len(name))
    m = CASES[name]().eval()
    ex = _args(name, 3, T0, 0)
    p = str(tmp_path / "m.onnx")
    with quiet():
        if dynamo:
            A = torch.export.Dim.AUTO
            ep = torch.export.export(m, ex, dynamic_shapes=({0: A, 1: A},), strict=False)
            torch.onnx.export(ep, f=p, dynamo=True, input_names=["x"])
        else:
            torch.onnx.export(m, ex, p, dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "B", 1: "T"}})
    f = fastrnn.convert(p)
    x = _args(name, 4, 9, 3)[0].numpy()
    want = ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(f.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)


def test_a_final_state_beside_pools_streams():
    torch.manual_seed(1)
    m = PoolsThenLast().eval()
    f = fastrnn.convert(m, example_input=_args("pools_then_last", 2, 5, 0)[0])
    x = _args("pools_then_last", 3, 8, 4)[0].numpy()
    s = f.stream(3)
    got = [s.step(x[:, t]) for t in range(8)]
    for t in (0, 3, 7):
        np.testing.assert_array_equal(got[t], f.predict(x[:, :t + 1]))


@pytest.mark.parametrize("over", ["steps", "valid", "longest"])
def test_last_and_first_terms_against_the_reference(rng, over, tmp_path):
    layers = [rec(rng, "lstm", 4, 6, "bidirectional"),
              ir.Pool(12, over=over, terms=(ir.PoolTerm("last", 0, 6), ir.PoolTerm("first", 6, 12),
                                            ir.PoolTerm("mean", 0, 12)))]
    x = rng.normal(size=(5, 9, 4)).astype(np.float32)
    lengths = np.array([9, 4, 1, 0, 6])
    m = fastrnn.Model(layers)
    for lens in (None, lengths):
        want, _ = reference.run(layers, x, lengths=lens)
        got = m.predict(x, lengths=lens)
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6)
    m.save(tmp_path / "m.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.frnn").predict(x, lengths=lengths),
                                  m.predict(x, lengths=lengths))
