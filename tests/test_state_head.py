"""Final states of several layers as features: torch's h_n.permute(1, 0, 2).reshape(B, -1) of a
stacked RNN (and torch.cat of any h_n rows) feeding Linear layers. The engine's pipeline passes on
only the top layer's output, so the layers after such states are a head over the native final
states (signature head). The oracle is the torch module (and onnxruntime for its export)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastrnn  # noqa: E402
from fastrnn import ModelFormatError, UnsupportedError  # noqa: E402


class Permuted(nn.Module):
    """A 2-layer LSTM classifier whose head reads every layer's h_n (a GitHub course assignment's
    idiom, tests/corpus: course_lstm_hn_permute)."""

    def __init__(self, bidirectional=False, cell=nn.LSTM, head=True):
        super().__init__()
        self.rnn = cell(5, 6, num_layers=2, batch_first=True, bidirectional=bidirectional)
        n = 2 * (2 if bidirectional else 1) * 6
        self.fc = nn.Sequential(nn.ReLU(), nn.Linear(n, 4), nn.Tanh(), nn.Linear(4, 3)) if head else None

    def forward(self, x):
        _, h = self.rnn(x)
        h_n = h[0] if isinstance(h, tuple) else h
        feats = h_n.permute(1, 0, 2).contiguous().view(x.size(0), -1)
        return self.fc(feats) if self.fc is not None else feats


class LowerOnly(nn.Module):
    """torch.cat of the lower layer's h_n row with the top one, in another order."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, 7, num_layers=3)
        self.fc = nn.Linear(14, 2)

    def forward(self, x):
        _, h = self.gru(x)
        return torch.log_softmax(self.fc(torch.cat([h[-1], h[0]], 1)), dim=1)


def _m(cls, **kw):
    torch.manual_seed(11)
    return cls(**kw).eval()


CASES = [
    (Permuted, {}, True),
    (Permuted, {"bidirectional": True, "cell": nn.GRU}, True),
    (Permuted, {"head": False}, True),
    (LowerOnly, {}, False),
]


@pytest.mark.parametrize("cls,kw,batch_first", CASES)
def test_head_over_final_states_matches_torch(cls, kw, batch_first, tmp_path):
    m = _m(cls, **kw)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 9, 5)).astype(np.float32)
    src = x if batch_first else x.transpose(1, 0, 2)
    fm = fastrnn.convert(m, example_input=torch.from_numpy(np.ascontiguousarray(src[:3, :6] if batch_first
                                                                                else src[:6, :3])))
    with torch.no_grad():
        want = m(torch.from_numpy(np.ascontiguousarray(src))).numpy()
    got = fm.predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert [tuple(s) for s in fm.output_shapes(4, 9)] == [got.shape]
    fm.save(tmp_path / "h.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "h.frnn").predict(x), got)


def test_head_streams_what_predict_gives_for_the_prefix():
    m = _m(Permuted)
    fm = fastrnn.convert(m, example_input=torch.zeros(2, 4, 5))
    x = np.random.default_rng(1).standard_normal((3, 7, 5)).astype(np.float32)
    s = fm.stream(batch_size=3)
    out = np.empty((3, 3), np.float32)
    for t in range(7):
        s.step_into(x[:, t], out)
        np.testing.assert_allclose(out, fm.predict(x[:, :t + 1]), rtol=1e-5, atol=1e-6)


def test_head_runs_in_a_stream_pool_as_in_its_streams():
    m = _m(Permuted)
    fm = fastrnn.convert(m, example_input=torch.zeros(2, 4, 5))
    x = np.random.default_rng(3).standard_normal((4, 6, 5)).astype(np.float32)
    pool = fastrnn.StreamPool(fm, 6)
    slots = [pool.open() for _ in range(6)][1:5]          # not the first slots, to see the gather
    streams = [fm.stream() for _ in range(4)]
    out = np.empty((3, fm.output_size), np.float32)
    for t in range(6):
        rows = [0, 2, 3] if t % 2 else [3, 1, 0, 2]       # conversations stepped in any order
        if t % 2:
            pool.step_into(np.array(slots)[rows], x[rows, t], out)
            got = out
        else:
            got = pool.step(np.array(slots)[rows], x[rows, t])
        for i, r in enumerate(rows):
            np.testing.assert_array_equal(got[i:i + 1], streams[r].step(x[r:r + 1, t]))
    # a state snapshot moves a conversation between the pool and a stream
    s = fm.stream()
    s.state = pool.state(slots[0])
    np.testing.assert_array_equal(s.step(x[:1, 0]), pool.step([slots[0]], x[:1, 0]))


def test_head_with_lengths_reads_each_rows_final_states():
    m = _m(Permuted)
    fm = fastrnn.convert(m, example_input=torch.zeros(2, 4, 5))
    x = np.random.default_rng(2).standard_normal((3, 8, 5)).astype(np.float32)
    lens = np.array([8, 3, 5])
    got = fm.predict(x, lengths=lens)
    for i, n in enumerate(lens):
        with torch.no_grad():
            want = m(torch.from_numpy(x[i:i + 1, :n])).numpy()
        np.testing.assert_allclose(got[i:i + 1], want, rtol=1e-5, atol=1e-5)


def test_head_onnx_export_runs_like_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = _m(Permuted, bidirectional=True, cell=nn.GRU)
    path = tmp_path / "h.onnx"
    torch.onnx.export(m, (torch.zeros(2, 5, 5),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 1: "time"}}, opset_version=17)
    fm = fastrnn.convert(str(path))
    x = np.random.default_rng(3).standard_normal((3, 6, 5)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_allclose(fm.run(None, {"x": x})[0], want[0], rtol=1e-5, atol=1e-5)


def test_head_signature_is_validated():
    rnn = fastrnn.Recurrent("gru", [{"W_ih": np.zeros((9, 2), np.float32), "W_hh": np.zeros((9, 3), np.float32)}])
    dense = fastrnn.Dense(np.zeros((4, 3), np.float32))
    ok = fastrnn.Model([rnn, dense], signature={"head": {"from": 1, "parts": [[0, 0]]}})
    assert ok.predict(np.zeros((2, 3, 2), np.float32)).shape == (2, 4)
    for head in ({"from": 0, "parts": [[0, 0]]}, {"from": 1, "parts": [[1, 0]]}, {"from": 1, "parts": []},
                 {"from": 1}, {"from": 1, "parts": [[0, 0], [0, 0]]}):
        with pytest.raises(ModelFormatError, match="head"):
            fastrnn.Model([rnn, dense], signature={"head": head})
    with pytest.raises(ModelFormatError, match="head"):
        fastrnn.Model([rnn, rnn], signature={"head": {"from": 1, "parts": [[0, 0]]}})
