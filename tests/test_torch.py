"""PyTorch (2.13, CPU) -> fastrnn, against real torch on the same inputs.

Bare nn.RNN / nn.LSTM / nn.GRU with every constructor option, as modules, state_dict files
(zip and legacy pickle), checkpoint dicts, TorchScript archives (scripted and traced) and pickled
modules (allow_pickle=True only); packed lengths, h0/c0, torch's state layout, streaming, the
seed example, refusals and the command line.
"""
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastrnn

torch.set_num_threads(1)

KINDS = {"rnn_tanh": (torch.nn.RNN, {"nonlinearity": "tanh"}), "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
         "lstm": (torch.nn.LSTM, {}), "gru": (torch.nn.GRU, {})}


def _module(kind, I=5, H=7, seed=0, scale=1.5, **opts):
    """A module with non-trivial weights: torch's uniform(+-1/sqrt(H)) init scaled up."""
    cls, extra = KINDS[kind]
    torch.manual_seed(seed)
    m = cls(I, H, **extra, **opts)
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(scale)
    return m.eval()


def _torch_run(m, x, lengths=None, init=None):
    """torch on batch-major numpy x -> (out batch-major, [h_n(, c_n)])."""
    xt = torch.from_numpy(x)
    if not m.batch_first:
        xt = xt.transpose(0, 1)
    inp = xt
    if lengths is not None:
        inp = pack_padded_sequence(xt, torch.as_tensor(lengths), batch_first=m.batch_first, enforce_sorted=False)
    hx = None
    if init is not None:
        hx = tuple(torch.from_numpy(a) for a in init) if len(init) == 2 else torch.from_numpy(init[0])
    with torch.no_grad():
        out, h = m(inp, hx)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, batch_first=m.batch_first, total_length=x.shape[1])
    if not m.batch_first:
        out = out.transpose(0, 1)
    hs = list(h) if isinstance(h, tuple) else [h]
    return out.numpy(), [a.numpy() for a in hs]


def _close(got, want, what=""):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


def _compare(f, m, x, lengths=None, init=None):
    y, st = f.predict(x, lengths=lengths, initial_state=init, return_state=True)
    out, hs = _torch_run(m, x, lengths, init)
    _close(y, out, "output")
    assert len(st) == len(hs)
    for i, (a, b) in enumerate(zip(st, hs)):
        assert a.shape == b.shape, (i, a.shape, b.shape)
        _close(a, b, f"state {i}")


MATRIX = [(k, L, bi, bias, bf) for k, L, bi, bias, bf in
          itertools.product(KINDS, (1, 3), (False, True), (True, False), (False, True))]


@pytest.mark.parametrize("kind,L,bi,bias,bf", MATRIX, ids=[
    f"{k}-L{L}-{'bi' if bi else 'uni'}-{'bias' if bias else 'nobias'}-{'bf' if bf else 'tm'}"
    for k, L, bi, bias, bf in MATRIX])
def test_module_options(kind, L, bi, bias, bf):
    m = _module(kind, num_layers=L, bidirectional=bi, bias=bias, batch_first=bf, dropout=0.3 if L > 1 else 0.0)
    f = fastrnn.convert(m)
    rng = np.random.default_rng(L * 10 + bi)
    B, T = 4, 9
    x = rng.normal(size=(B, T, 5)).astype(np.float32)
    _compare(f, m, x)
    # h0 (and c0) in torch's layout (layers*directions, B, H)
    init = [rng.normal(0, 0.5, s).astype(np.float32) for s in f.state_shapes(B)]
    _compare(f, m, x, init=init)
    # packed lengths (unsorted, one full row, one of length 1)
    _compare(f, m, x, lengths=np.array([T, 3, 1, 6]), init=init)


@pytest.mark.parametrize("bi,L", [(False, 1), (True, 1), (True, 3), (False, 2)])
def test_lstm_proj_size(bi, L):
    m = _module("lstm", H=8, proj_size=3, num_layers=L, bidirectional=bi)
    f = fastrnn.convert(m)
    D = 2 if bi else 1
    assert f.state_shapes(2) == [(L * D, 2, 3), (L * D, 2, 8)]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    init = [rng.normal(0, 0.5, s).astype(np.float32) for s in f.state_shapes(2)]
    _compare(f, m, x)
    _compare(f, m, x, lengths=np.array([2, 6]), init=init)


def test_seed_example():
    """torch.nn.RNN(20, 50, 2) on a (100, 32, 20) time-major input with h_0 (2, 32, 50)."""
    torch.manual_seed(0)
    rnn = torch.nn.RNN(20, 50, 2).eval()
    inp = torch.randn(100, 32, 20)
    h0 = torch.randn(2, 32, 50)
    with torch.no_grad():
        out, hn = rnn(inp, h0)
    f = fastrnn.convert(rnn)
    y, (h,) = f.predict(inp.numpy().transpose(1, 0, 2), initial_state=[h0.numpy()], return_state=True)
    _close(y.transpose(1, 0, 2), out.numpy(), "output")   # predict is batch-major
    _close(h, hn.numpy(), "h_n")


@pytest.mark.parametrize("kind", list(KINDS))
def test_stream_unidirectional(kind):
    m = _module(kind, num_layers=2, batch_first=True)
    f = fastrnn.convert(m)
    x = np.random.default_rng(2).normal(size=(3, 8, 5)).astype(np.float32)
    out, hs = _torch_run(m, x)
    s = f.stream(3)
    for t in range(8):
        _close(s.step(x[:, t]), out[:, t], f"step {t}")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("torch")
    m = _module("lstm", num_layers=2, bidirectional=True, proj_size=4, batch_first=True)
    r = _module("rnn_relu", num_layers=2)
    g = _module("gru", num_layers=1)
    p = {}
    torch.save(m.state_dict(), d / "sd.pt")
    torch.save(m.state_dict(), d / "sd_legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": m.state_dict()}, d / "ckpt.pt")
    torch.save({"model_state_dict": g.state_dict(), "optimizer": {}}, d / "ckpt_gru.tar")
    torch.save(r.state_dict(), d / "relu.bin")
    torch.jit.save(torch.jit.script(m), d / "scripted.pt")
    x0 = torch.zeros(2, 3, 5)
    torch.jit.save(torch.jit.trace(g, (x0.transpose(0, 1),)), d / "traced.pt")
    torch.jit.save(torch.jit.trace(m, (torch.zeros(2, 3, 5),)), d / "traced_lstm.pt")   # batch_first
    torch.jit.save(torch.jit.trace(r, (x0.transpose(0, 1),)), d / "traced_relu.pt")
    torch.save(m, d / "whole.pt")
    for k in ("sd.pt", "sd_legacy.pth", "ckpt.pt", "ckpt_gru.tar", "relu.bin", "scripted.pt", "traced.pt",
              "traced_lstm.pt", "traced_relu.pt", "whole.pt"):
        p[k] = str(d / k)
    return p, {"lstm": m, "relu": r, "gru": g}


@pytest.mark.parametrize("name,mod,opts", [
    ("sd.pt", "lstm", {"batch_first": True}), ("sd_legacy.pth", "lstm", {"batch_first": True}),
    ("ckpt.pt", "lstm", {}), ("ckpt_gru.tar", "gru", {}), ("relu.bin", "relu", {"nonlinearity": "relu"}),
    ("scripted.pt", "lstm", {}), ("traced.pt", "gru", {}), ("traced_lstm.pt", "lstm", {}),
    ("traced_relu.pt", "relu", {}), ("whole.pt", "lstm", {"allow_pickle": True})])
def test_files(files, name, mod, opts):
    paths, mods = files
    m = mods[mod]
    f = fastrnn.convert(paths[name], **opts)
    x = np.random.default_rng(3).normal(size=(3, 6, 5)).astype(np.float32)
    _compare(f, m, x, lengths=np.array([6, 2, 4]))
    kind = "torchscript" if "traced" in name or "scripted" in name else "pickle" if name == "whole.pt" \
        else "state_dict"
    assert f.meta["kind"] == kind
    assert f.meta["batch_first"] == m.batch_first or kind == "state_dict" and "batch_first" not in opts


def test_pickled_module_refused(files):
    paths, _ = files
    with pytest.raises(fastrnn.ModelFormatError, match="allow_pickle=True") as e:
        fastrnn.convert(paths["whole.pt"])
    assert "runs code" in str(e.value)


def test_relu_state_dict_needs_nonlinearity(files):
    """The file cannot say tanh or relu: without nonlinearity= it is torch's default, tanh."""
    paths, mods = files
    x = np.random.default_rng(4).normal(size=(2, 5, 5)).astype(np.float32)
    f = fastrnn.convert(paths["relu.bin"])
    assert f.layers[0].activations[0][0].kind == "tanh"
    assert not np.allclose(f.predict(x), _torch_run(mods["relu"], x)[0], atol=1e-3)


def test_state_dict_options(tmp_path):
    class Custom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

        def forward(self, x):
            return self.lstm(self.emb(x))[0]
    c = Custom().eval()
    torch.save(c.state_dict(), tmp_path / "c.pt")
    x = np.random.default_rng(0).integers(0, 10, (2, 5))
    with torch.no_grad():        # no Linear: no head= needed, the output is the LSTM's
        _close(fastrnn.convert(str(tmp_path / "c.pt")).predict(x), c(torch.from_numpy(x)).numpy())
    with pytest.raises(fastrnn.UnsupportedError, match="state_dict files only"):
        fastrnn.convert(torch.nn.LSTM(2, 2), batch_first=True)
    with pytest.raises(fastrnn.UnsupportedError, match="state_dict files only"):
        fastrnn.convert(c, head="last")


def test_damaged_files(tmp_path, files):
    paths, _ = files
    for name in ("sd.pt", "scripted.pt", "sd_legacy.pth"):
        data = open(paths[name], "rb").read()
        for cut in (0.2, 0.6, 0.95):
            p = tmp_path / f"{cut}{name}"
            p.write_bytes(data[: int(len(data) * cut)])
            try:
                fastrnn.convert(str(p))
            except fastrnn.FastRNNError:
                pass


def test_cli_state_dict_check(files, tmp_path):
    paths, _ = files
    out = tmp_path / "m.frnn"
    r = subprocess.run(["fastrnn-convert", paths["sd.pt"], "-o", str(out), "--check", "--batch-first"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout
    r = subprocess.run(["fastrnn-convert", paths["relu.bin"], "-o", str(out), "--check", "--nonlinearity", "relu"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "fastrnn.cli", paths["whole.pt"], "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "allow" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(["fastrnn-convert", paths["whole.pt"], "-o", str(out), "--allow-pickle", "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---- custom modules, captured from forward with torch.fx --------------------------------------

class EmbLstmLast(torch.nn.Module):
    """Embedding -> LSTM -> Linear on out[:, -1] -> sigmoid (a sentiment classifier)."""
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return torch.sigmoid(self.fc(out[:, -1]))


class EmbLstmHn(torch.nn.Module):
    """Time-major 2-layer LSTM, Linear on h_n[-1], log_softmax."""
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.lstm = torch.nn.LSTM(8, 16, 2, dropout=0.1)
        self.fc = torch.nn.Linear(16, 3)

    def forward(self, x):
        _, (h, c) = self.lstm(self.emb(x).transpose(0, 1))
        return torch.nn.functional.log_softmax(self.fc(h[-1]), dim=-1)


class Tagger(torch.nn.Module):
    """Embedding -> bi-GRU -> per-step Linear."""
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.drop = torch.nn.Dropout(0.2)
        self.gru = torch.nn.GRU(8, 6, batch_first=True, bidirectional=True)
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x):
        out, _ = self.gru(self.drop(self.emb(x)))
        return self.fc(out)


class Regressor(torch.nn.Module):
    """A 2-layer LSTM regressor on float features."""
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 10, 2, batch_first=True)
        self.head = torch.nn.Linear(10, 1)
        self.act = torch.nn.Tanh()

    def forward(self, x):
        out, (h, c) = self.lstm(x)
        return self.act(self.head(h[-1]))


class PackedBi(torch.nn.Module):
    """forward(x, lengths) with pack_padded_sequence; bi-LSTM final states concatenated."""
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.lstm = torch.nn.LSTM(8, 5, batch_first=True, bidirectional=True)
        self.fc = torch.nn.Linear(10, 2)

    def forward(self, x, lengths):
        p = pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, c) = self.lstm(p)
        return torch.softmax(self.fc(torch.cat([h[-2], h[-1]], dim=1)), dim=1)


class TimeMajorSeq(torch.nn.Module):
    """A time-major input (T, B, F), GRU stack, relu head per step; returns a tuple."""
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(4, 6, nonlinearity="relu")
        self.gru = torch.nn.GRU(6, 5)
        self.fc = torch.nn.Linear(5, 2)

    def forward(self, x):
        a, _ = self.rnn(x)
        b, h = self.gru(a)
        return torch.relu(self.fc(b)), h


class BiLast(torch.nn.Module):
    """out[:, -1] of a bi-LSTM: the forward final state and the backward direction's first step."""
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 5, batch_first=True, bidirectional=True)
        self.fc = torch.nn.Linear(10, 4)

    def forward(self, x):
        out, _ = self.lstm(x)
        return torch.log_softmax(self.fc(out[:, -1]), dim=-1)


class PackedLast(torch.nn.Module):
    """out[:, -1] of pad_packed_sequence's output, max(lengths) long: padding for shorter rows."""
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 8)
        self.gru = torch.nn.GRU(8, 6, batch_first=True)
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, x, lengths):
        out, _ = self.gru(pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True)
        return torch.sigmoid(self.fc(out)[:, -1])


class PackedTagger(torch.nn.Module):
    """A per-step head on pad_packed_sequence's output: max(lengths) steps, or x.size(1) given."""
    def __init__(self, total=False):
        super().__init__()
        self.total = total
        self.emb = torch.nn.Embedding(50, 8)
        self.lstm = torch.nn.LSTM(8, 6, batch_first=True, bidirectional=True)
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x, lengths):
        out, _ = self.lstm(pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False))
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.size(1) if self.total else None)
        return self.fc(out)


class PackedTaggerT(PackedTagger):
    def __init__(self):
        super().__init__(total=True)


CUSTOM = {"emb_lstm_last": EmbLstmLast, "emb_lstm_hn": EmbLstmHn, "tagger": Tagger, "regressor": Regressor,
          "packed_bi": PackedBi, "time_major_seq": TimeMajorSeq, "bi_last": BiLast, "packed_last": PackedLast,
          "packed_tagger": PackedTagger, "packed_tagger_t": PackedTaggerT}


def _custom_case(name):
    torch.manual_seed(len(name))
    m = CUSTOM[name]().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.5)
    rng = np.random.default_rng(len(name))
    if name in ("regressor", "bi_last"):
        x = rng.normal(size=(4, 9, 3)).astype(np.float32)
    elif name == "time_major_seq":
        x = rng.normal(size=(4, 9, 4)).astype(np.float32)          # batch-major for predict
    else:
        x = rng.integers(0, 50, (4, 9))
    lens = {"packed_bi": [9, 4, 1, 7], "packed_last": [6, 4, 1, 3], "packed_tagger": [2, 7, 1, 5],
            "packed_tagger_t": [2, 7, 1, 5]}.get(name)
    return m, x, None if lens is None else np.array(lens)


def _torch_custom(m, name, x, lens):
    xt = torch.from_numpy(x)
    if name == "time_major_seq":
        xt = xt.transpose(0, 1)
    args = (xt, torch.from_numpy(lens)) if lens is not None else (xt,)
    with torch.no_grad():
        r = m(*args)
    r = r[0] if isinstance(r, tuple) else r
    return (r.transpose(0, 1) if name == "time_major_seq" else r).numpy(), args


# what a state_dict cannot say, given as options (docs/pytorch.md); the other cases (out[:, -1]
# of a bidirectional or padded output, a max(lengths)-long output) are not expressible by them
STATE_DICT_OPTS = {"emb_lstm_last": {"head": "last", "head_activation": "sigmoid", "batch_first": True},
                   "emb_lstm_hn": {"head": "last", "head_activation": "log_softmax"},
                   "tagger": {"head": "sequence", "batch_first": True},
                   "regressor": {"head": "last", "head_activation": ["tanh"], "batch_first": True},
                   "packed_bi": {"head": "last", "head_activation": "softmax", "batch_first": True},
                   "time_major_seq": {"head": "sequence", "head_activation": "relu", "nonlinearity": "relu"},
                   "packed_tagger_t": {"head": "sequence", "batch_first": True}}


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name, source", [(n, s) for n in sorted(CUSTOM)
                                          for s in ("module", "pickle", "state_dict", "script", "trace")
                                          if s != "state_dict" or n in STATE_DICT_OPTS])
def test_custom_module(name, source, tmp_path):
    m, x, lens = _custom_case(name)
    want, args = _torch_custom(m, name, x, lens)
    path = str(tmp_path / "m.pt")
    if source == "module":
        f = fastrnn.convert(m, example_input=args)
    elif source == "state_dict":
        torch.save(m.state_dict(), path)
        f = fastrnn.convert(path, **STATE_DICT_OPTS[name])
        assert f.meta["kind"] == "state_dict"
    elif source in ("script", "trace"):
        torch.jit.save(torch.jit.script(m) if source == "script" else torch.jit.trace(m, args), path)
        f = fastrnn.convert(path)
        assert f.meta["kind"] == "torchscript"
    else:
        torch.save(m, tmp_path / "m.pt")
        with pytest.raises(fastrnn.ModelFormatError, match="allow_pickle"):
            fastrnn.convert(str(tmp_path / "m.pt"))
        f = fastrnn.convert(str(tmp_path / "m.pt"), allow_pickle=True)
    if source != "state_dict":
        assert f.meta["input_layout"] == ("time_major" if name == "time_major_seq" else "batch_first"), \
            f.meta["input_layout"]
    _close(f.predict(x, lengths=lens), want, "predict")
    f.save(tmp_path / "m.frnn")
    _close(fastrnn.load(tmp_path / "m.frnn").predict(x, lengths=lens), want, "saved and loaded")
    if all(l.direction == "forward" for l in f.layers if isinstance(l, fastrnn.Recurrent)):
        s = f.stream(x.shape[0])
        steps = [s.step(x[:, t]) for t in range(x.shape[1])]
        if lens is not None:               # a stream has no lengths: every row is x.shape[1] long
            want = _torch_custom(m, name, x, np.full(x.shape[0], x.shape[1]))[0]
        if want.ndim == 3:
            _close(np.stack(steps, axis=1), want, "stream")
        else:
            _close(steps[-1], want, "stream, last step")


def test_custom_module_states():
    """return_state gives torch's h_n, c_n of each RNN module, in module order."""
    m, x, _ = _custom_case("time_major_seq")
    f = fastrnn.convert(m)
    y, st = f.predict(x, return_state=True)
    with torch.no_grad():
        a, h1 = m.rnn(torch.from_numpy(x).transpose(0, 1))
        _, h2 = m.gru(a)
    assert [s.shape for s in st] == [(1, 4, 6), (1, 4, 5)]
    _close(st[0], h1.numpy(), "rnn h_n")
    _close(st[1], h2.numpy(), "gru h_n")


class _Conv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 4, 3, groups=2)     # depthwise-style: not an engine Conv1D
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        return self.lstm(self.conv(x.transpose(1, 2)).transpose(1, 2))[0]


class _Branch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out) + out


class _PadThenRnn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.LSTM(4, 4, batch_first=True)
        self.b = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x, lengths):
        out, _ = self.a(pack_padded_sequence(x, lengths, batch_first=True))
        return self.b(pad_packed_sequence(out, batch_first=True)[0])[0]


class _Branchy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        if x.sum() > 0:
            return self.lstm(x)[0]
        return x


class _BadIndex(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[2]


class _DictOut(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        return {"y": self.lstm(x)[0]}


@pytest.mark.parametrize("cls,word", [(_Conv, "grouped convolution"), (_PadThenRnn, "padding"),
                                      (_Branchy, "control flow"), (_BadIndex, "getitem"), (_DictOut, "dict")])
def test_custom_unsupported(cls, word):
    with pytest.raises(fastrnn.UnsupportedError) as e:
        fastrnn.convert(cls())
    assert word in str(e.value).lower(), str(e.value)
    assert "line" in str(e.value) or cls is _Branchy, str(e.value)      # each refusal names its source line


class _ScriptAdd(torch.nn.Module):
    """A scalar after the RNN (folded into an affine activation) ..."""
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        out, _ = self.lstm(x)
        return out + 1


@pytest.mark.parametrize("cls", [_Branch, _ScriptAdd])
@pytest.mark.parametrize("source", ["module", "script"])
def test_residual_and_scalar_arithmetic(cls, source, tmp_path):
    """... and a residual connection around a square Linear, fc(out) + out (one Dense of W + I)."""
    torch.manual_seed(2)
    m = cls().eval()
    x = np.random.default_rng(2).normal(size=(3, 6, 4)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    if source == "script":
        torch.jit.save(torch.jit.script(m), tmp_path / "s.pt")
        f = fastrnn.convert(str(tmp_path / "s.pt"))
    else:
        f = fastrnn.convert(m, example_input=torch.from_numpy(x))
    _close(f.predict(x), want)


def test_custom_cli_check(tmp_path):
    m, x, _ = _custom_case("tagger")
    torch.save(m, tmp_path / "tagger.pt")
    import os
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))    # unpickling imports this module
    r = subprocess.run(["fastrnn-convert", str(tmp_path / "tagger.pt"), "--allow-pickle", "--check"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


class _TwoHeads(torch.nn.Module):
    """Embedding -> GRU -> Linear -> ReLU -> Linear -> softmax, per step."""
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 4)
        self.gru = torch.nn.GRU(4, 6, batch_first=True)
        self.fc1 = torch.nn.Linear(6, 5)
        self.fc2 = torch.nn.Linear(5, 3, bias=False)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.relu(self.fc1(self.gru(self.emb(x))[0]))), dim=-1)


def test_state_dict_head_activations_per_linear(tmp_path):
    torch.manual_seed(3)
    m = _TwoHeads().eval()
    x = np.random.default_rng(3).integers(0, 20, (3, 7))
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    torch.save({"model_state_dict": m.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    f = fastrnn.convert(str(tmp_path / "ckpt.pth"), head="sequence", head_activation=["relu", "softmax"])
    _close(f.predict(x), want)
    r = subprocess.run(["fastrnn-convert", str(tmp_path / "ckpt.pth"), "--head", "sequence",
                        "--head-activation", "relu,softmax", "--batch-first", "--check"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr
    f2 = fastrnn.load(tmp_path / "ckpt.frnn")
    _close(f2.predict(x), want)


class _Norm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 6, batch_first=True)
        self.norm = torch.nn.LayerNorm(6)


class _Between(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.GRU(4, 6, batch_first=True)
        self.proj = torch.nn.Linear(6, 6)
        self.b = torch.nn.GRU(6, 6, batch_first=True)


class _Unordered(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.b = torch.nn.GRU(6, 5, batch_first=True)
        self.a = torch.nn.GRU(4, 6, batch_first=True)


@pytest.mark.parametrize("mod, opts, match", [
    (_TwoHeads, {}, "head='sequence' or head='last'"),
    (_TwoHeads, {"head": "middle"}, "head must be"),
    (_TwoHeads, {"head": "last", "head_activation": ["relu"]}, "1 activations for 2 Linear"),
    (_TwoHeads, {"head": "last", "head_activation": "swish"}, "unknown activation"),
    (_TwoHeads, {"head": "last", "nonlinearity": "relu"}, "nn.RNN modules only"),
    (_Norm, {}, "not an Embedding or a Linear"),
    (_Between, {}, "between recurrent modules"),
    (_Unordered, {}, "registered in the order"),
])
def test_state_dict_custom_refusals(tmp_path, mod, opts, match):
    torch.save(mod().state_dict(), tmp_path / "m.pt")
    with pytest.raises(fastrnn.UnsupportedError, match=match):
        fastrnn.convert(str(tmp_path / "m.pt"), **opts)


class _ScriptIf(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        out, _ = self.lstm(x)
        if bool(x.sum() > 0):
            out = torch.relu(out)
        return out


def my_squash(x):
    return torch.sigmoid(x) * 2


class _ScriptUserFn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(4, 4, batch_first=True)

    def forward(self, x):
        return my_squash(self.lstm(x)[0])


@pytest.mark.parametrize("cls, match", [(_ScriptIf, "sum.*line"),
                                        (_ScriptUserFn, "my_squash.*not one of torch's own")])
def test_script_unsupported(tmp_path, cls, match):
    torch.jit.save(torch.jit.script(cls()), tmp_path / "s.pt")
    with pytest.raises(fastrnn.UnsupportedError, match=match):
        fastrnn.convert(str(tmp_path / "s.pt"))


def test_script_cli_check(tmp_path):
    m, x, _ = _custom_case("emb_lstm_hn")
    torch.jit.save(torch.jit.script(m), tmp_path / "s.pt")
    r = subprocess.run(["fastrnn-convert", str(tmp_path / "s.pt"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout + r.stderr


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(8, 16, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("source", ["module", "script", "trace"])
@pytest.mark.parametrize("which", ["nested", "bare_rnn"])
def test_sequential_stacks(tmp_path, source, which):
    """nn.Sequential stacks: of an Embedding, a submodule wrapping an LSTM and a Linear; of a
    lone GRU (whose (output, h_n) tuple gives output)."""
    torch.manual_seed(5)
    rng = np.random.default_rng(5)
    if which == "nested":
        net = torch.nn.Sequential(torch.nn.Embedding(30, 8), _Encoder(), torch.nn.Linear(16, 2), torch.nn.Sigmoid())
        x = rng.integers(0, 30, (3, 6))
    else:
        net = torch.nn.Sequential(torch.nn.GRU(8, 16, batch_first=True, num_layers=2))
        x = rng.normal(size=(3, 6, 8)).astype(np.float32)
    net.eval()
    with torch.no_grad():
        want = net(torch.from_numpy(x))
    want = (want[0] if isinstance(want, tuple) else want).numpy()
    if source == "module":
        f = fastrnn.convert(net)
    else:
        s = torch.jit.script(net) if source == "script" else torch.jit.trace(net, (torch.from_numpy(x),))
        torch.jit.save(s, tmp_path / "s.pt")
        f = fastrnn.convert(str(tmp_path / "s.pt"))
    _close(f.predict(x), want)
