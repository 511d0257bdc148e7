"""BatchNorm at inference (folded into the neighbouring Dense) and the masked mean of packed
sequences (out.sum(1) / lengths of pad_packed_sequence's output: a Pool over each row's own
steps). The oracle is the torch module (and onnxruntime for its export)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastrnn  # noqa: E402
from fastrnn import UnsupportedError  # noqa: E402


def _bn(n):
    bn = nn.BatchNorm1d(n)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


class BNHead(nn.Module):
    """BatchNorm1d on the final hidden state before the classifier."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.bn = _bn(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.fc(torch.relu(self.bn(h[-1])))


class BNSteps(nn.Module):
    """BatchNorm1d over (B, C, T) of every step, between transposes (deepspeech's SequenceWise
    idea written inline)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 6, batch_first=True)
        self.bn = _bn(6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(self.bn(out.transpose(1, 2)).transpose(1, 2))


class MaskedMean(nn.Module):
    """Mean over each review's own tokens of a packed LSTM's output."""

    def __init__(self, also_max=False):
        super().__init__()
        self.emb = nn.Embedding(30, 5)
        self.lstm = nn.LSTM(5, 7, batch_first=True)
        self.fc = nn.Linear(14 if also_max else 7, 2)
        self.also_max = also_max

    def forward(self, ids, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(ids), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        mean = out.sum(dim=1) / lengths.unsqueeze(1).float()
        if self.also_max:
            mean = torch.cat([mean, out.max(dim=1)[0]], 1)
        return self.fc(mean)


def _seeded(cls, **kw):
    torch.manual_seed(7)
    return cls(**kw).eval()


@pytest.mark.parametrize("cls", [BNHead, BNSteps])
def test_batch_norm_folds_and_matches(cls, tmp_path):
    m = _seeded(cls)
    x = np.random.default_rng(0).standard_normal((3, 6, 4)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    for src in (m, torch.jit.script(m)):
        fm = fastrnn.convert(src, example_input=torch.from_numpy(x[:2, :4]))
        assert not any(type(l).__name__ == "Activation" and l.activation.kind == "affine" for l in fm.layers)
        np.testing.assert_allclose(fm.predict(x), want, rtol=1e-5, atol=1e-5)
    path = tmp_path / "bn.onnx"
    torch.onnx.export(m, (torch.from_numpy(x),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 1: "time"}}, opset_version=17)
    ort = pytest.importorskip("onnxruntime")
    got = fastrnn.convert(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ort.InferenceSession(str(path)).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_batch_norm_in_training_mode_is_refused():
    m = _seeded(BNHead).train()
    with pytest.raises(UnsupportedError):
        fastrnn.convert(torch.jit.script(m), example_input=torch.zeros(2, 3, 4))


def test_masked_mean_is_a_pool_over_each_rows_steps():
    m = _seeded(MaskedMean)
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 30, (4, 7))
    lens = np.array([7, 2, 5, 1])
    fm = fastrnn.convert(m, example_input=(torch.from_numpy(ids), torch.from_numpy(lens)))
    assert [type(l).__name__ for l in fm.layers] == ["Embedding", "Recurrent", "Pool", "Dense"]
    got = fm.predict(ids, lengths=lens)
    for i, n in enumerate(lens):       # each row alone, unpadded: the mean over its own steps
        with torch.no_grad():
            want = m(torch.from_numpy(ids[i:i + 1, :n]), torch.tensor([n])).numpy()
        np.testing.assert_allclose(got[i:i + 1], want, rtol=1e-5, atol=1e-5)


def test_masked_mean_beside_a_max_over_the_padding_is_refused():
    m = _seeded(MaskedMean, also_max=True)
    with pytest.raises(UnsupportedError, match="masked mean"):
        fastrnn.convert(m, example_input=(torch.ones(3, 5, dtype=torch.int64), torch.tensor([5, 2, 3])))


class OneHot(nn.Module):
    """A char model fed F.one_hot(ids, n).float() (an Embedding whose table is the identity)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(11, 8, batch_first=True)
        self.fc = nn.Linear(8, 11)

    def forward(self, x):
        out, _ = self.lstm(nn.functional.one_hot(x, 11).float())
        return self.fc(out)


class DirectionFinals(nn.Module):
    """The forward direction's last step beside the backward direction's first, cut from the
    output by columns: the two final states."""

    def __init__(self):
        super().__init__()
        self.hidden = 8
        self.gru = nn.GRU(4, 8, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(torch.cat((out[:, -1, :self.hidden], out[:, 0, self.hidden:]), dim=1))


class StackedRows(nn.Module):
    """torch.stack of the last layer's h_n rows on axis 1, flattened per row."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 6, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return self.fc(torch.stack([h[-2], h[-1]], dim=1).view(x.size(0), -1))


class AdaptivePools(nn.Module):
    """F.adaptive_max_pool1d / adaptive_avg_pool1d(out.permute(0, 2, 1), 1): pools over time."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        t = out.permute(0, 2, 1)
        mx = nn.functional.adaptive_max_pool1d(t, 1).squeeze(-1)
        av = nn.functional.adaptive_avg_pool1d(t, 1).view(x.size(0), -1)
        return self.fc(torch.cat([mx, av], 1))


@pytest.mark.parametrize("cls", [OneHot, DirectionFinals, StackedRows, AdaptivePools])
@pytest.mark.parametrize("capture", ["module", "script", "trace"])
def test_more_idioms_match_torch(cls, capture, tmp_path):
    m = _seeded(cls)
    rng = np.random.default_rng(2)
    x = rng.integers(0, 11, (3, 7)) if cls is OneHot else rng.standard_normal((3, 7, 4)).astype(np.float32)
    ex = torch.from_numpy(x)
    if capture == "module":
        fm = fastrnn.convert(m, example_input=ex)
    else:                               # an archive, as users save it
        (torch.jit.script(m) if capture == "script" else torch.jit.trace(m, (ex,))).save(str(tmp_path / "m.pt"))
        fm = fastrnn.convert(str(tmp_path / "m.pt"), example_input=ex)
    with torch.no_grad():
        want = m(ex).numpy()
    np.testing.assert_allclose(fm.predict(x), want, rtol=1e-5, atol=1e-5)


class Spectrogram(nn.Module):
    """deepspeech.pytorch's layout: N x F x T input transposed to T x N x F, a bidirectional LSTM
    whose directions are summed (view(T, N, 2, -1).sum(2)) or averaged, a per-frame Linear."""

    def __init__(self, reduce="sum"):
        super().__init__()
        self.rnn = nn.LSTM(6, 5, bidirectional=True)
        self.bn = _bn(5)
        self.fc = nn.Linear(5, 3)
        self.reduce = reduce

    def forward(self, x):
        x = x.transpose(1, 2).transpose(0, 1).contiguous()
        x, _ = self.rnn(x)
        t, n = x.size(0), x.size(1)
        x = x.view(t, n, 2, -1)
        x = x.sum(2) if self.reduce == "sum" else x.mean(2)
        x = self.bn(x.view(t * n, -1)).view(t, n, -1)
        return self.fc(x).transpose(0, 1)


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_channels_first_input_and_summed_directions(reduce):
    m = _seeded(Spectrogram, reduce=reduce)
    x = np.random.default_rng(4).standard_normal((3, 6, 8)).astype(np.float32)     # N x F x T
    fm = fastrnn.convert(m, example_input=torch.from_numpy(x[:2, :, :5]))
    assert fm.meta["input_axes"] == ["B", "F", "T"]
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fm.predict(np.ascontiguousarray(x.transpose(0, 2, 1))), want, rtol=1e-5, atol=1e-5)
