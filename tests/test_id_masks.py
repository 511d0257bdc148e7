"""Masks made from the token ids (mask = ids != pad) that only a pooling reads: the recurrence runs
over the padding (the source never packs it away) and the pool leaves those steps out. The
masked mean of sentence encoders ((out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)), a masked
sum, a max over out.masked_fill(mask == 0, -inf), attention scores masked_fill(mask == 0, -1e10)
before their softmax, the Kaggle Attention module given its mask (exp(scores) * mask), padding id
0 and 1. Each from the live module, TorchScript and a trace, against torch, on batches whose rows
have padding at different places (also inside a row: the mask is the ids', not lengths); streams
against predict. ir.Embedding.pool_mask is checked against the float64 reference in
tests/test_reference.py's way here too."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastrnn
from fastrnn import UnsupportedError, ir, reference
from tests.corpus.torch_models import QuoraAttention

V, E, H = 30, 6, 5


class MaskedMeanEncoder(nn.Module):
    """A bidirectional LSTM's outputs averaged over the non-padding tokens (sentence-embedding
    style mean pooling, with the count clamped away from 0)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E, padding_idx=0)
        self.rnn = nn.LSTM(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        mask = (x != 0).unsqueeze(-1).float()
        pooled = (out * mask).sum(1) / torch.clamp(mask.sum(1), min=1e-9)
        return self.fc(pooled)


class MaskedMaxSum(nn.Module):
    """A GRU (it streams); the max over out.masked_fill(mask == 0, -inf) beside the masked sum,
    padding id 1 (torchtext's <pad>)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E, padding_idx=1)
        self.rnn = nn.GRU(E, H, batch_first=True)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        mask = (x != 1).unsqueeze(-1)
        mx = out.masked_fill(mask == 0, float("-inf")).max(dim=1)[0]
        sm = (out * mask.float()).sum(dim=1)
        return self.fc(torch.cat([mx, sm], dim=1))


class MaskedSoftmaxAttention(nn.Module):
    """Scores per step, masked_fill(mask == 0, -1e10), softmax over time, torch.bmm with the outputs."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E, padding_idx=0)
        self.rnn = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.att = nn.Linear(2 * H, 1)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        scores = self.att(out).squeeze(-1)
        scores = scores.masked_fill(x == 0, -1e10)
        w = F.softmax(scores, dim=1)
        return self.fc(torch.bmm(w.unsqueeze(1), out).squeeze(1))


class KaggleAttentionMasked(nn.Module):
    """The Kaggle Attention module (tests/corpus: QuoraAttention) called with a mask of the ids,
    (x > 0).float(): exp(scores) * mask."""
    def __init__(self, T):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, batch_first=True)
        self.attention = QuoraAttention(H, T)
        self.fc = nn.Linear(H, 1)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.fc(self.attention(out, (x > 0).float()))


T0 = 9
CASES = {"masked_mean": MaskedMeanEncoder, "masked_max_sum": MaskedMaxSum,
         "masked_softmax_attention": MaskedSoftmaxAttention, "kaggle_attention_masked": lambda: KaggleAttentionMasked(T0)}
PAD = {"masked_max_sum": 1}


def _build(name):
    torch.manual_seed(len(name))
    return CASES[name]().eval()


def _ids(name, B, T, seed):
    """Rows padded at the end by different amounts, one row with a padding id inside it too."""
    pad = PAD.get(name, 0)
    rng = np.random.default_rng(seed)
    x = rng.integers(2, V, (B, T))
    for b in range(B):
        n = max(1, T - 3 * b)
        x[b, n:] = pad
    x[-1, 1] = pad
    return x


def _convert(name, m, capture, tmp_path):
    ex = torch.from_numpy(_ids(name, 3, T0, 0))
    if capture == "module":
        return fastrnn.convert(m, example_input=ex)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, (ex,))
    a.save(str(tmp_path / "m.pt"))
    return fastrnn.convert(str(tmp_path / "m.pt"), example_input=ex)


# torch.jit.script(...).save() of the Kaggle Attention module raises in torch itself ("strides()
# called on an undefined Tensor", as for the corpus's mstsn_gru): that capture does not exist
@pytest.mark.parametrize("name,capture", [(n, c) for n in sorted(CASES) for c in ("module", "script", "trace")
                                          if (n, c) != ("kaggle_attention_masked", "script")])
def test_masked_pools_match_torch(name, capture, tmp_path):
    m = _build(name)
    f = _convert(name, m, capture, tmp_path)
    assert f.layers[0].pool_mask == PAD.get(name, 0) and not f.layers[0].mask_zero
    assert [l.over for l in f.layers if isinstance(l, ir.Pool)] == ["valid"]
    T = T0 if name == "kaggle_attention_masked" else 12     # its bias per position fixes the length
    for B, seed in ((4, 1), (1, 2)):
        x = _ids(name, B, T, seed)
        with torch.no_grad():
            want = m(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(f.predict(x), want, rtol=1e-5, atol=1e-5, err_msg=f"{name} B={B}")
    f.save(tmp_path / "m.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.frnn").predict(x), f.predict(x))


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_exports(name, dynamo, tmp_path):
    """Equal / Not / Cast / Mul / ReduceSum / Div / Where (masked_fill) of the ids, as both of
    torch's exporters write them, against onnxruntime."""
    import contextlib
    import io
    ort = pytest.importorskip("onnxruntime")
    m = _build(name)
    ex = torch.from_numpy(_ids(name, 3, T0, 0))
    p = str(tmp_path / "m.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            A = torch.export.Dim.AUTO
            ep = torch.export.export(m, (ex,), dynamic_shapes=({0: A, 1: A},), strict=False)
            torch.onnx.export(ep, f=p, dynamo=True, input_names=["x"])
        else:
            torch.onnx.export(m, (ex,), p, dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "B", 1: "T"}})
    f = fastrnn.convert(p)
    assert f.layers[0].pool_mask == PAD.get(name, 0)
    x = _ids(name, 4, T0, 3)
    want = ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(f.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)


def test_a_masked_pool_streams():
    """Step t of a stream is the masked pool of steps 0..t (padding steps leave it unchanged)."""
    m = _build("masked_max_sum")
    f = _convert("masked_max_sum", m, "module", None)
    x = _ids("masked_max_sum", 3, 10, 4)
    s = f.stream(3)
    got = [s.step(x[:, t]) for t in range(10)]
    for t in (4, 9):
        np.testing.assert_array_equal(got[t][1:], f.predict(x[1:, :t + 1]))   # row 0 is padding at t = 9 only


def test_pool_mask_against_the_reference():
    rng = np.random.default_rng(0)
    from conftest import rec
    emb = ir.Embedding(rng.normal(size=(20, 5)).astype(np.float32), pool_mask=3)
    for d, kinds in (("forward", ("mean", "max", "sum")), ("bidirectional", ("mean",))):
        layers = [emb, rec(rng, "gru", 5, 7, d), ir.Pool(7 * (2 if d == "bidirectional" else 1), kinds, "valid")]
        x = rng.integers(0, 20, (5, 11))
        x[:, 8:] = 3
        x[1, 2] = 3
        want, _ = reference.run(layers, x)
        np.testing.assert_allclose(fastrnn.Model(layers).predict(x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(fastrnn.ModelFormatError, match="mask_zero and pool_mask"):
        ir.Embedding(np.ones((3, 2), np.float32), mask_zero=True, pool_mask=0)


def test_masks_read_otherwise_are_refused():
    class EmbGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, E)
            self.rnn = nn.GRU(E, H, batch_first=True)

    class MeanOfMasked(EmbGRU):
        """(out * mask).mean(1): divided by every step, which a masked pool is not."""
        def forward(self, x):
            out, _ = self.rnn(self.emb(x))
            return (out * (x != 0).unsqueeze(-1).float()).mean(1)

    class MaskIntoRecurrence(EmbGRU):
        """The mask multiplies the embeddings before the GRU: not a pool's."""
        def forward(self, x):
            e = self.emb(x) * (x != 0).unsqueeze(-1).float()
            return self.rnn(e)[0][:, -1]

    class MaskAboveOne(EmbGRU):
        """(mask > 1) is false everywhere: not the mask, nor its negation."""
        def forward(self, x):
            out, _ = self.rnn(self.emb(x))
            return (out * ((x != 0) > 1).unsqueeze(-1).float()).sum(1)

    ex = torch.from_numpy(_ids("x", 3, 7, 0))
    with pytest.raises(UnsupportedError, match="comparisons make masks"):
        fastrnn.convert(MaskAboveOne().eval(), example_input=ex)
    with pytest.raises(UnsupportedError, match="a sum of the zeroed one"):
        fastrnn.convert(MeanOfMasked().eval(), example_input=ex)
    with pytest.raises(UnsupportedError, match="pool_mask|mask of the padding id|masks of the token ids"):
        fastrnn.convert(MaskIntoRecurrence().eval(), example_input=ex)
