"""Attention whose query is the sequence's own final state (ir.PoolTerm kind "query"): the score
of step t is v_t . q with q the recurrent layer's final state, h_n -- prakashpandey9/
Text-Classification-Pytorch's LSTM_Attn.py (tests/corpus keeps that model) and the many
"attention_net(lstm_output, final_state)" copies of it. The layer against the float64
reference, its file, its refusal to stream, and the modules public code writes converted from
the live module and torch's ONNX exports, compared with torch at other sizes."""
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from conftest import close, onnx_export, rec, uniform_module
from torch import nn

import fastrnn
from fastrnn import ir, reference

V, E, H = 30, 6, 5


@pytest.mark.parametrize("over", ["steps", "valid", "longest"])
@pytest.mark.parametrize("bi", [False, True], ids=["forward", "bidirectional"])
def test_query_pool_against_the_reference(rng, over, bi, tmp_path):
    """Recurrent -> Pool(query over its output, beside a max), with lengths, states as the
    reference; q the forward direction's last valid step and the backward one's first."""
    F_ = 2 * H if bi else H
    layers = [rec(rng, "lstm", 3, H, "bidirectional" if bi else "forward"),
              ir.Pool(F_, over=over, terms=(ir.PoolTerm("query", 0, F_, score_activation=ir.Act("affine", 0.7, 0.0),
                                                        split=H), ir.PoolTerm("max", 0, F_)))]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(4, 12, 3)).astype(np.float32)
    lengths = np.array([12, 5, 1, 9])
    for kw in ({}, {"lengths": lengths}):
        y, st = m.predict(x, return_state=True, **kw)
        yr, sr = reference.run(layers, x, **kw)
        close(y, yr)
        for a, b in zip(st, sr):
            close(a, b)
    m.save(tmp_path / "q.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "q.frnn").predict(x, lengths=lengths),
                                  m.predict(x, lengths=lengths))
    with pytest.raises(fastrnn.UnsupportedError, match="query is the sequence's final value"):
        m.stream(1)
    with pytest.raises(fastrnn.UnsupportedError, match="query is the sequence's final value"):
        fastrnn.StreamPool(m, 2)


def test_query_terms_are_validated_and_versioned(tmp_path):
    with pytest.raises(fastrnn.ModelFormatError, match="split"):
        ir.PoolTerm("query", 0, 4, split=5)
    with pytest.raises(fastrnn.ModelFormatError, match="no score column"):
        ir.PoolTerm("query", 0, 4, score=0)
    with pytest.raises(fastrnn.ModelFormatError, match="split is an option"):
        ir.PoolTerm("attn", 0, 4, score=0, split=2)
    with pytest.raises(fastrnn.ModelFormatError, match="kinds"):
        ir.Pool(4, ("query",))
    assert ir.PoolTerm("query", 1, 4).split == 3
    rng = np.random.default_rng(0)
    m = fastrnn.Model([rec(rng, "gru", 3, H), ir.Pool(H, terms=(ir.PoolTerm("query", 0, H),))])
    m.save(tmp_path / "q.frnn")
    raw = (tmp_path / "q.frnn").read_bytes()
    assert b'"format_version":"6"' in raw.replace(b" ", b"")
    old = raw.replace(b'"format_version":"6"', b'"format_version":"5"')
    (tmp_path / "old.frnn").write_bytes(old)
    with pytest.raises(fastrnn.ModelFormatError, match="query kind in a version 5 file"):
        fastrnn.load(tmp_path / "old.frnn")


def test_info_names_the_query_term(tmp_path, capsys):
    """fastrnn info shows where the query comes from; fastrnn bench says the model does not stream."""
    from fastrnn.cli import main
    rng = np.random.default_rng(1)
    m = fastrnn.Model([rec(rng, "lstm", 3, H, "bidirectional"),
                       ir.Pool(2 * H, terms=(ir.PoolTerm("query", 0, 2 * H, split=H),))])
    m.save(tmp_path / "q.frnn")
    capsys.readouterr()
    assert main(["info", str(tmp_path / "q.frnn")]) == 0
    out = capsys.readouterr().out
    assert f"query[0:{2 * H}] (against the final value: last step [0:{H}], first step [{H}:{2 * H}]" in out


class LSTMAttn(nn.Module):
    """LSTM_Attn.py's attention_net, batch-first: hidden = final_state.squeeze(0),
    torch.bmm(lstm_output, hidden.unsqueeze(2)).squeeze(2), F.softmax(., 1),
    torch.bmm(lstm_output.transpose(1, 2), soft.unsqueeze(2)).squeeze(2)."""
    def __init__(self, cell=nn.LSTM):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = cell(E, H, batch_first=True)
        self.label = nn.Linear(H, 2)

    def forward(self, x):
        out, h = self.rnn(self.emb(x))
        hidden = (h[0] if isinstance(h, tuple) else h).squeeze(0)
        w = F.softmax(torch.bmm(out, hidden.unsqueeze(2)).squeeze(2), 1)
        return self.label(torch.bmm(out.transpose(1, 2), w.unsqueeze(2)).squeeze(2))


class BiScaledAttn(nn.Module):
    """A bidirectional GRU's output against torch.cat([h_n[-2], h_n[-1]], 1), scaled by
    1 / sqrt(2H) (scaled dot-product), torch.matmul, weights applied as (out * w.unsqueeze(-1)).sum(1),
    beside the final state itself."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(4, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4 * H, 3)

    def forward(self, x):
        out, h = self.rnn(x)
        q = torch.cat([h[-2], h[-1]], 1)
        s = torch.matmul(out, q.unsqueeze(2)).squeeze(-1) / math.sqrt(2 * H)
        w = torch.softmax(s, dim=1)
        return self.fc(torch.cat([(out * w.unsqueeze(-1)).sum(1), q], 1))


class PackedAttn(nn.Module):
    """Packed: pack_padded_sequence, pad_packed_sequence, attention against h_n[-1] of a 2-layer
    LSTM (the padding's zero steps take part in torch's softmax, score 0)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, num_layers=2, batch_first=True)
        self.fc = nn.Linear(H, 2)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.rnn(p)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        w = F.softmax(torch.bmm(out, h[-1].unsqueeze(2)).squeeze(2), dim=1)
        return self.fc(torch.bmm(w.unsqueeze(1), out).squeeze(1))


CASES = {"lstm_attn": LSTMAttn, "gru_attn": lambda: LSTMAttn(nn.GRU), "bi_scaled": BiScaledAttn,
         "packed": PackedAttn}


def _model(name):
    return uniform_module(CASES[name], 7, 0.8)


def _args(m, B, T, seed):
    rng = np.random.default_rng(seed)
    if isinstance(m, BiScaledAttn):
        return [torch.from_numpy(rng.normal(size=(B, T, 4)).astype(np.float32))]
    ids = torch.from_numpy(rng.integers(1, V, (B, T)))
    if isinstance(m, PackedAttn):
        lengths = torch.from_numpy(rng.integers(1, T + 1, B))
        lengths[0] = T
        return [ids, lengths]
    return [ids]


@pytest.mark.parametrize("name", sorted(CASES))
def test_query_attention_modules_convert_and_match(name):
    m = _model(name)
    f = fastrnn.convert(m, example_input=_args(m, 3, 7, 0))
    assert any(isinstance(l, ir.Pool) and "query" in l.kinds for l in f.layers)
    for B, T, seed in ((3, 7, 1), (4, 11, 2), (1, 2, 3)):
        args = _args(m, B, T, seed)
        with torch.no_grad():
            want = m(*args).numpy()
        kw = {"lengths": args[1].numpy()} if len(args) > 1 else {}
        close(f.predict(args[0].numpy(), **kw), want, f"{name} B={B} T={T}")


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("name", ["lstm_attn", "gru_attn", "bi_scaled"])
def test_query_attention_onnx_exports(name, dynamo, tmp_path):
    m = _model(name)
    args = _args(m, 3, 7, 0)
    path = tmp_path / "m.onnx"
    onnx_export(m, args, path, dynamo, dynamic_axes={"x": {0: "b", 1: "t"}})
    f = fastrnn.convert(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {sess.get_inputs()[0].name: _args(m, 3, 7, 4)[0].numpy()}
    close(f.run(None, feeds)[0], sess.run(None, feeds)[0], name)
