"""Float series without a feature axis: a module whose forward takes (B, T) or (T,) floats (one
value per step) converts; predict takes (B, T) (and (B, T, 1)), streams take (B,) (and (B, 1)).
The oracle is the torch module itself (and onnxruntime for its ONNX export)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastrnn  # noqa: E402
from fastrnn import ShapeError  # noqa: E402


class Unsqueezed(nn.Module):
    """x.unsqueeze(-1) into a batch-first LSTM, a per-step regression head: the common
    time-series forecaster."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, 8, batch_first=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x):
        out, _ = self.lstm(x.unsqueeze(-1))
        return self.fc(out).squeeze(-1)


class Viewed(nn.Module):
    """x.view(B, T, 1) into a GRU, the last step's head."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 6, batch_first=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        out, _ = self.gru(x.view(x.size(0), x.size(1), 1))
        return self.fc(out[:, -1])


class CellLoop(nn.Module):
    """x[:, t:t+1] into an RNNCell over every step, outputs concatenated along dim 1."""

    def __init__(self):
        super().__init__()
        self.cell = nn.RNNCell(1, 5)
        self.fc = nn.Linear(5, 1)

    def forward(self, x):
        h = torch.zeros(x.size(0), 5)
        outs = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t:t + 1], h)
            outs.append(self.fc(h))
        return torch.cat(outs, dim=1)


class OneSeries(nn.Module):
    """One (T,) series viewed as (T, 1, 1) for a time-major LSTM; the last prediction."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(1, 7)
        self.fc = nn.Linear(7, 1)

    def forward(self, x):
        out, _ = self.lstm(x.view(len(x), 1, -1))
        return self.fc(out.view(len(x), -1))[-1]


def _seeded(cls):
    torch.manual_seed(3)
    return cls().eval()


@pytest.mark.parametrize("cls", [Unsqueezed, Viewed, CellLoop])
def test_batched_series_converts_and_matches(cls):
    m = _seeded(cls)
    x = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    fm = fastrnn.convert(m, example_input=torch.from_numpy(x[:3, :6]))
    assert fm.input_size == 1
    with torch.no_grad():
        want = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(fm.predict(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fm.predict(x[:, :, None]), want, rtol=1e-5, atol=1e-6)
    s = fm.stream(batch_size=4)
    for t in range(x.shape[1]):
        y = s.step(x[:, t])              # (B,): one value per row
    if want.ndim == 2 and want.shape[1] == x.shape[1]:
        np.testing.assert_allclose(y[:, 0], want[:, -1], rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_one_series_is_predicted_from_rows():
    m = _seeded(OneSeries)
    xs = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    fm = fastrnn.convert(m, example_input=torch.from_numpy(xs[0, :5]))
    with torch.no_grad():
        want = np.stack([m(torch.from_numpy(r)).numpy() for r in xs])
    np.testing.assert_allclose(fm.predict(xs), want, rtol=1e-5, atol=1e-6)


def test_series_model_refuses_other_shapes():
    fm = fastrnn.convert(_seeded(Unsqueezed), example_input=torch.zeros(2, 4))
    with pytest.raises(ShapeError, match=r"\(batch, time, 1\)"):
        fm.predict(np.zeros((2, 4, 3), np.float32))
    with pytest.raises(ShapeError):
        fm.predict(np.zeros((4,), np.float32))
    with pytest.raises(ShapeError):
        fm.stream(batch_size=2).step(np.zeros((3,), np.float32))


def test_series_saves_and_loads(tmp_path):
    m = _seeded(Viewed)
    fm = fastrnn.convert(m, example_input=torch.zeros(2, 5))
    fm.save(tmp_path / "s.frnn")
    back = fastrnn.load(tmp_path / "s.frnn")
    x = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), fm.predict(x))


def test_series_onnx_export_runs_like_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = _seeded(Unsqueezed)
    path = tmp_path / "s.onnx"
    torch.onnx.export(m, (torch.zeros(2, 5),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 1: "time"}}, opset_version=17)
    fm = fastrnn.convert(str(path))
    x = np.random.default_rng(3).standard_normal((3, 7)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = fm.run(None, {"x": x})
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fm.predict(x)[:, :, 0], want[0], rtol=1e-5, atol=1e-6)   # canonical (B, T, F)
