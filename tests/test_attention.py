"""Attention pooling over time (ir.Pool kind "attn"): the layer against the float64 reference and
its streams, and the attention modules public code writes, converted from the live module (and
torch's ONNX exports) and compared with torch at sizes other than the example's."""
import contextlib
import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import close, rec
from torch import nn

import fastrnn
from fastrnn import ir, reference
from tests.corpus.torch_models import QuoraAttention, _trained_bias

V, E, H, T0 = 30, 6, 5, 7


class KaggleAttentionNet(nn.Module):
    """The Attention module of the Kaggle Quora / Jigsaw kernels (tests/corpus/torch_models.py,
    QuoraAttention) in such a kernel's model: embedding, bi-LSTM, bi-GRU, the attention of
    the GRU's output beside its mean and max pools, torch.cat, ReLU head."""
    def __init__(self, bias=True):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(2 * H, H, bidirectional=True, batch_first=True)
        self.gru_attention = QuoraAttention(2 * H, T0, bias)
        self.linear = nn.Linear(3 * 2 * H, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        h_lstm, _ = self.lstm(self.embedding(x))
        h_gru, _ = self.gru(h_lstm)
        h_gru_atten = self.gru_attention(h_gru)
        avg_pool = torch.mean(h_gru, 1)
        max_pool, _ = torch.max(h_gru, 1)
        conc = torch.cat((h_gru_atten, avg_pool, max_pool), 1)
        return self.out(F.relu(self.linear(conc)))


class KaggleAttentionLSTM(nn.Module):
    """The same attention after one forward LSTM (a model that streams)."""
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, batch_first=True)
        self.attention = QuoraAttention(H, T0)
        self.out = nn.Linear(H, 2)

    def forward(self, x):
        h, _ = self.lstm(self.embedding(x))
        return self.out(self.attention(h))


class SoftmaxBmm(nn.Module):
    """Attention as many sentiment repositories write it: a Linear score per step, softmax over
    time, torch.bmm(weights.unsqueeze(1), out).squeeze(1), a classifier."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, H, batch_first=True)
        self.attn = nn.Linear(H, 1)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        w = F.softmax(self.attn(out).squeeze(-1), dim=1)
        ctx = torch.bmm(w.unsqueeze(1), out).squeeze(1)
        return F.log_softmax(self.fc(ctx), dim=1)


class TanhMLPAttention(nn.Module):
    """Additive attention of the hierarchical-attention-network kind: u = tanh(W out + b), a score
    v(u), softmax over time of the (B, T, 1) scores, (a * out).sum(1)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, H, batch_first=True, bidirectional=True)
        self.W = nn.Linear(2 * H, 6)
        self.v = nn.Linear(6, 1, bias=False)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        a = F.softmax(self.v(torch.tanh(self.W(out))), dim=1)
        return self.fc((a * out).sum(1))


class VectorAttention(nn.Module):
    """Att-BLSTM style (relation classification): M = tanh(H), scores torch.matmul(M, self.w) with
    a parameter VECTOR w (no Linear), softmax over time, (H * alpha.unsqueeze(-1)).sum(1), tanh."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, H, batch_first=True, bidirectional=True)
        self.w = nn.Parameter(torch.randn(2 * H))
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        alpha = F.softmax(torch.matmul(torch.tanh(out), self.w), dim=1)
        return self.fc(torch.tanh((out * alpha.unsqueeze(-1)).sum(1)))


class QuoraTwoAttentions(nn.Module):
    """The Kaggle Quora kernel's NeuralNet with both of its attention modules (corpus
    kaggle_quora_lstm_gru_attention): the LSTM's output attended beside the GRU that reads it,
    the GRU's output attended, mean and max pooled -- pools of two tensors side by side."""
    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(2 * H, H, bidirectional=True, batch_first=True)
        self.lstm_attention = QuoraAttention(2 * H, T0)
        self.gru_attention = QuoraAttention(2 * H, T0)
        self.linear = nn.Linear(4 * 2 * H, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        h_lstm, _ = self.lstm(self.embedding(x))
        h_gru, _ = self.gru(h_lstm)
        conc = torch.cat((self.lstm_attention(h_lstm), self.gru_attention(h_gru), torch.mean(h_gru, 1),
                          torch.max(h_gru, 1)[0]), 1)
        return self.out(F.relu(self.linear(conc)))


class StackPools(nn.Module):
    """Pools of every layer of a stack (a feature-pyramid head): the lower LSTM's max beside the
    upper one's mean and max, and a softmax attention of each layer's output with its own score."""
    def __init__(self):
        super().__init__()
        self.l1 = nn.LSTM(4, H, batch_first=True)
        self.l2 = nn.LSTM(H, H + 1, batch_first=True)
        self.s1 = nn.Linear(H, 1)
        self.s2 = nn.Linear(H + 1, 1)
        self.fc = nn.Linear(H + 3 * (H + 1) + H, 2)

    def forward(self, x):
        o1, _ = self.l1(x)
        o2, _ = self.l2(o1)
        a1 = F.softmax(self.s1(o1), dim=1)
        a2 = F.softmax(self.s2(o2), dim=1)
        return self.fc(torch.cat([o1.max(1)[0], o2.mean(1), o2.amax(1), (a2 * o2).sum(1), (a1 * o1).sum(1)], 1))


class StructuredSelfAttention(nn.Module):
    """Structured self-attention (Lin et al. 2017) as the prakashpandey9/Text-Classification-Pytorch
    selfAttention.py model writes it (tests/corpus/torch_models.py keeps that model itself): r
    heads' scores W_s2(tanh(W_s1(out))), permute(0, 2, 1), softmax over time (dim=2),
    torch.bmm(A, out) -> (B, r, 2H), flattened to (B, r * 2H); `reduce` averages (or sums) the
    heads instead, as other implementations do."""
    def __init__(self, reduce=None, r=3):
        super().__init__()
        self.reduce = reduce
        self.rnn = nn.LSTM(4, H, batch_first=True, bidirectional=True)
        self.W_s1 = nn.Linear(2 * H, 6)
        self.W_s2 = nn.Linear(6, r)
        self.fc = nn.Linear(2 * H if reduce else r * 2 * H, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        A = F.softmax(self.W_s2(torch.tanh(self.W_s1(out))).permute(0, 2, 1), dim=2)
        M = torch.bmm(A, out)
        if self.reduce == "mean":
            return self.fc(M.mean(1))
        if self.reduce == "sum":
            return self.fc(torch.sum(M, 1))
        return self.fc(M.view(-1, M.size()[1] * M.size()[2]))


class HeadsTransposed(nn.Module):
    """The same r heads softmaxed over dim=1 of the (B, T, r) scores, then
    torch.bmm(A.transpose(1, 2), out) and flatten(1)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, H, batch_first=True)
        self.score = nn.Linear(H, 2)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        A = F.softmax(self.score(out), dim=1)
        return self.fc(torch.bmm(A.transpose(1, 2), out).flatten(1))


def _seeded(cls, *a):
    torch.manual_seed(3)
    return _trained_bias(cls(*a)).eval()


def _input(m, B, T, seed):
    rng = np.random.default_rng(seed)
    if isinstance(m, (KaggleAttentionNet, KaggleAttentionLSTM, QuoraTwoAttentions)):
        return torch.from_numpy(rng.integers(0, V, (B, T)))
    return torch.from_numpy(rng.normal(size=(B, T, 4)).astype(np.float32))


CASES = {"kaggle": (KaggleAttentionNet, True), "kaggle_nobias": (KaggleAttentionNet, False),
         "softmax_bmm": (SoftmaxBmm,), "tanh_mlp": (TanhMLPAttention,), "quora_two": (QuoraTwoAttentions,),
         "stack_pools": (StackPools,), "vector": (VectorAttention,), "heads": (StructuredSelfAttention,),
         "heads_mean": (StructuredSelfAttention, "mean"), "heads_sum": (StructuredSelfAttention, "sum"),
         "heads_one": (StructuredSelfAttention, None, 1), "heads_transposed": (HeadsTransposed,)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_attention_module_converts_and_matches(name, tmp_path):
    m = _seeded(*CASES[name])
    f = fastrnn.convert(m, example_input=_input(m, 3, T0, 0))
    assert any(isinstance(l, ir.Pool) and "attn" in l.kinds for l in f.layers)
    fixed = isinstance(m, (KaggleAttentionNet, QuoraTwoAttentions))          # step_dim: the module runs T0 steps only
    for B, T, seed in ((3, T0, 0), (4, T0 if fixed else 11, 1), (1, T0 if fixed else 2, 2)):
        x = _input(m, B, T, seed)
        with torch.no_grad():
            want = m(x).numpy()
        close(f.predict(x.numpy()), want, f"{name} B={B} T={T}")
    f.save(tmp_path / "m.frnn")
    x = _input(m, 2, T0, 4)
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.frnn").predict(x.numpy()), f.predict(x.numpy()))


@pytest.mark.parametrize("name", ["kaggle", "softmax_bmm", "tanh_mlp", "quora_two", "stack_pools", "vector", "heads",
                                  "heads_mean", "heads_transposed"])
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_attention_onnx_exports(name, dynamo, tmp_path):
    m = _seeded(*CASES[name])
    x = _input(m, 3, T0, 0)
    path = tmp_path / "m.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(m, (x,), str(path), dynamo=True, external_data=False)
        else:
            torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "b"}})
    f = fastrnn.convert(str(path))
    x2 = _input(m, 3, T0, 5)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x2.numpy()})[0]
    feeds = {sess.get_inputs()[0].name: x2.numpy()}
    close(f.run(None, feeds)[0], want)


def test_streams_give_the_attention_of_the_prefix():
    """A stream's step t is the attention pool of the first t + 1 steps (the online softmax is
    the pool's state), bit for bit what predict gives for those steps; a step past the positions
    of a bias per position is a ShapeError."""
    m = _seeded(SoftmaxBmm)
    f = fastrnn.convert(m, example_input=_input(m, 2, T0, 0))
    x = _input(m, 3, 9, 6).numpy()
    s = f.stream(3)
    for t in range(9):
        got = s.step(x[:, t])
        np.testing.assert_array_equal(got, f.predict(x[:, :t + 1]))
    with torch.no_grad():
        close(got, m(torch.from_numpy(x)).numpy())
    k = _seeded(KaggleAttentionLSTM)
    fk = fastrnn.convert(k, example_input=_input(k, 2, T0, 0))
    s = fk.stream(2)
    ids = _input(k, 2, T0, 7).numpy()
    for t in range(T0):
        y = s.step(ids[:, t])
    np.testing.assert_array_equal(y, fk.predict(ids))
    with pytest.raises(fastrnn.ShapeError, match="position"):
        s.step(ids[:, 0])
    with pytest.raises(fastrnn.ShapeError, match="position"):
        fk.predict(np.zeros((1, T0 + 1), np.int64))


def _check_against_the_reference(rng, layers):
    """predict with lengths and its states as the float64 reference; a stream's last step is
    predict's bits. -> (model, x, lengths, y)"""
    m = fastrnn.Model(layers)
    x = rng.normal(size=(4, 12, 3)).astype(np.float32)
    lengths = np.array([12, 5, 1, 9])
    y, st = m.predict(x, lengths=lengths, return_state=True)
    yr, sr = reference.run(layers, x, lengths=lengths)
    close(y, yr)
    for a, b in zip(st, sr):
        close(a, b)
    s = m.stream(4)
    for t in range(12):
        got = s.step(x[:, t])
    np.testing.assert_array_equal(got, m.predict(x))
    return m, x, lengths, y


@pytest.mark.parametrize("over", ["steps", "valid", "longest"])
@pytest.mark.parametrize("bias", [False, True])
def test_attention_pool_layer_against_the_reference(rng, over, bias):
    """Pool(kinds with "attn"): [score, values] in, the values' softmax-weighted sum (+ eps times
    their sum) beside other kinds; lengths, states and streams as the float64 reference."""
    F_ = 17
    layers = [rec(rng, "lstm", 3, F_), ir.Dense(rng.normal(size=(1, F_)).astype(np.float32), None, "linear",
                                               carry=((0, F_),)),
              ir.Pool(F_, ("max", "attn", "sum"), over, score_activation="tanh", eps=1e-3,
                      score_bias=rng.normal(size=12).astype(np.float32) if bias else None)]
    _check_against_the_reference(rng, layers)


def test_attention_options_are_validated():
    with pytest.raises(fastrnn.ModelFormatError, match="attn kind"):
        ir.Pool(3, ("mean",), eps=1e-3)
    with pytest.raises(fastrnn.ModelFormatError, match="twice"):
        ir.Pool(3, ("attn", "attn"))
    with pytest.raises(fastrnn.ModelFormatError, match="not elementwise"):
        ir.Pool(3, ("attn",), score_activation="softmax")
    assert ir.Pool(3, ("attn", "max")).input_size == 4


def _terms_pool(rng, F1, F2, over, bias):
    """lstm(3 -> F1) -> [score1 | lstm(F1 -> F2) carrying o1] -> [score2 | ...] -> a Pool of terms:
    attn(o1), max(o2), attn(o2), mean(o1), sum(o2)."""
    W1 = rng.normal(size=(1, F1)).astype(np.float32)
    layers = [rec(rng, "lstm", 3, F1), rec(rng, "gru", F1, F2, return_sequences=True, carry=((0, F1),))]
    layers.append(ir.Dense(np.concatenate([np.zeros((1, F2), np.float32), W1], 1), None, carry=((0, F2 + F1),)))
    layers.append(ir.Dense(rng.normal(size=(1, F2 + F1 + 1)).astype(np.float32) * [[1] * F2 + [0] * (F1 + 1)],
                           None, carry=((0, F2 + F1 + 1),)))
    # columns: score2 | o2 | o1 | score1
    s2, o2, o1, s1 = 0, 1, 1 + F2, 1 + F2 + F1
    b = (lambda: rng.normal(size=12).astype(np.float32)) if bias else (lambda: None)
    terms = (ir.PoolTerm("attn", o1, o1 + F1, s1, "tanh", b(), 1e-3), ir.PoolTerm("max", o2, o2 + F2),
             ir.PoolTerm("attn", o2, o2 + F2, s2, "linear", b()), ir.PoolTerm("mean", o1, o1 + F1),
             ir.PoolTerm("sum", o2, o2 + F2))
    return layers + [ir.Pool(s1 + 1, over=over, terms=terms)]


@pytest.mark.parametrize("over", ["steps", "valid", "longest"])
@pytest.mark.parametrize("bias", [False, True])
def test_pool_of_terms_against_the_reference(rng, over, bias, tmp_path):
    """ir.Pool's general form: pools of different columns (two attentions with their own scores
    and options) side by side; lengths, states, streams and a StreamPool as the float64
    reference; saved as format version 4."""
    F1, F2 = 5, 17
    layers = _terms_pool(rng, F1, F2, over, bias)
    m, x, lengths, y = _check_against_the_reference(rng, layers)
    assert m.output_size == 2 * F1 + 3 * F2
    pool = fastrnn.StreamPool(m, 3)
    slot = pool.open()
    for t in range(12):
        one = pool.step(np.array([slot]), x[2:3, t])
    np.testing.assert_array_equal(one, m.predict(x[2:3]))
    m.save(tmp_path / "t.frnn")
    import json, struct
    raw = (tmp_path / "t.frnn").read_bytes()
    head = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert head["__metadata__"]["format_version"] == "4"
    back = fastrnn.load(tmp_path / "t.frnn")
    assert [t.options() for t in back.layers[-1].terms] == [t.options() for t in layers[-1].terms]
    np.testing.assert_array_equal(back.predict(x, lengths=lengths), y)


def test_pool_terms_are_validated():
    """Columns outside the input, attn options on other kinds, a score missing, too many terms,
    and kinds or attn options beside terms: each a ModelFormatError naming it."""
    T_ = ir.PoolTerm
    bad = [(lambda: ir.Pool(4, terms=(T_("mean", 2, 5),)), "outside"),
           (lambda: ir.Pool(4, terms=(T_("attn", 1, 3, 4),)), "outside"),
           (lambda: T_("attn", 0, 2), "score column"),
           (lambda: T_("max", 0, 2, 3), "attn kind"),
           (lambda: T_("mean", 0, 2, eps=0.1), "attn kind"),
           (lambda: T_("mean", 2, 2), "empty"),
           (lambda: T_("avg", 0, 2), "kind"),
           (lambda: ir.Pool(4, terms=()), "PoolTerm"),
           (lambda: ir.Pool(4, terms=(T_("mean", 0, 1),) * 17), "PoolTerm"),
           (lambda: ir.Pool(4, ("max",), terms=(T_("mean", 0, 1),)), "terms' own"),
           (lambda: ir.Pool(4, eps=1.0, terms=(T_("mean", 0, 1),)), "terms' own")]
    for make, match in bad:
        with pytest.raises(fastrnn.ModelFormatError, match=match):
            make()
    p = ir.Pool(6, terms=(T_("attn", 1, 4, 0), T_("max", 2, 6), T_("mean", 0, 1)))
    assert (p.kinds, p.input_size, p.output_size) == (("attn", "max", "mean"), 6, 8)


def test_a_pool_of_terms_in_an_older_file_is_refused(rng, tmp_path):
    """A version 3 file (or older) that holds terms was not written by fastrnn: refused."""
    import json, struct
    layers = _terms_pool(rng, 3, 4, "steps", True)
    fastrnn.Model(layers).save(tmp_path / "t.frnn")
    raw = (tmp_path / "t.frnn").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    head["__metadata__"]["format_version"] = "3"
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    (tmp_path / "old.frnn").write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n:])
    with pytest.raises(fastrnn.ModelFormatError, match="version 4"):
        fastrnn.load(tmp_path / "old.frnn")
