"""Gating products of two tensors of the pipeline (the row-wise mul_halves activation over the two
placed side by side): a(o) * sigmoid(g(o)) per step and on the last step, tanh(a) * sigmoid(b)
of a chunk of one output, F.glu / nn.GLU, a hand-written x * sigmoid(x). From the live module,
TorchScript, a trace and both ONNX exporters against torch / onnxruntime; streams step by step.
The activation against torch and the float64 reference: tests/test_reference.py,
tests/test_kernels.py."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import quiet
from torch import nn

import fastrnn
from fastrnn import ir

T0, F_IN, H = 7, 4, 6


class GatedSteps(nn.Module):
    """A gated linear unit per step after an LSTM: self.a(o) * torch.sigmoid(self.g(o)), a head."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(F_IN, H, batch_first=True)
        self.a, self.g = nn.Linear(H, 5), nn.Linear(H, 5)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        o, _ = self.lstm(x)
        return self.fc(self.a(o) * torch.sigmoid(self.g(o)))


class ChunkGate(nn.Module):
    """A GRU of 2H units, a, b = out.chunk(2, -1), tanh(a) * sigmoid(b) of the last step."""
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(F_IN, 2 * H, batch_first=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        a, b = self.gru(x)[0][:, -1].chunk(2, dim=-1)
        return self.fc(torch.tanh(a) * torch.sigmoid(b))


class GLUHead(nn.Module):
    """nn.GLU after a Linear of the final state, F.glu of the steps of a bidirectional layer."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(F_IN, H, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(H, 8)
        self.glu = nn.GLU()
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        o, _ = self.rnn(x)
        s = F.glu(o, dim=-1)                     # (B, T, H): forward half gated by the backward half
        return self.fc(self.glu(self.proj(s.mean(1))))


class SwishByHand(nn.Module):
    """x * torch.sigmoid(x) written out, per step."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(F_IN, H, batch_first=True)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        h = self.fc(self.rnn(x)[0])
        return h * torch.sigmoid(h)


CASES = {"gated_steps": GatedSteps, "chunk_gate": ChunkGate, "glu_head": GLUHead, "swish_by_hand": SwishByHand}


def _x(B, T, seed):
    return np.random.default_rng(seed).normal(size=(B, T, F_IN)).astype(np.float32)


def _build(name):
    torch.manual_seed(len(name))
    return CASES[name]().eval()


@pytest.mark.parametrize("capture", ["module", "script", "trace"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_gating_products_match_torch(name, capture, tmp_path):
    m = _build(name)
    ex = torch.from_numpy(_x(3, T0, 0))
    if capture == "module":
        f = fastrnn.convert(m, example_input=ex)
    else:
        with quiet():
            a = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, (ex,))
        a.save(str(tmp_path / "m.pt"))
        f = fastrnn.convert(str(tmp_path / "m.pt"), example_input=ex)
    assert any(getattr(l, "activation", None) == ir.Act("mul_halves") for l in f.layers)
    for B, T, seed in ((4, 11, 1), (1, 2, 2)):
        x = _x(B, T, seed)
        with torch.no_grad():
            want = m(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(f.predict(x), want, rtol=1e-5, atol=1e-5, err_msg=f"{name} B={B}")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_exports(name, dynamo, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    m = _build(name)
    ex = torch.from_numpy(_x(3, T0, 0))
    p = str(tmp_path / "m.onnx")
    with quiet():
        if dynamo:
            A = torch.export.Dim.AUTO
            ep = torch.export.export(m, (ex,), dynamic_shapes=({0: A, 1: A},), strict=False)
            torch.onnx.export(ep, f=p, dynamo=True, input_names=["x"])
        else:
            torch.onnx.export(m, (ex,), p, dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "B", 1: "T"}})
    f = fastrnn.convert(p)
    x = _x(4, T0, 3)
    want = ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(f.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-5)


def test_a_gated_model_streams():
    m = _build("gated_steps")
    f = fastrnn.convert(m, example_input=torch.from_numpy(_x(2, 5, 0)))
    x = _x(3, 9, 4)
    s = f.stream(3)
    np.testing.assert_array_equal(np.stack([s.step(x[:, t]) for t in range(9)], 1), f.predict(x))


def test_products_of_other_shapes_are_refused():
    class Broadcast(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(F_IN, H, batch_first=True)

        def forward(self, x):
            o, (h, _) = self.lstm(x)
            return o * h[-1].unsqueeze(1)         # every step times the final state

    with pytest.raises(fastrnn.UnsupportedError, match="cannot be lowered"):
        fastrnn.convert(Broadcast().eval(), example_input=torch.from_numpy(_x(2, 5, 0)))
    with pytest.raises(fastrnn.ModelFormatError, match="even"):
        ir.Dense(np.ones((3, 2), np.float32), activation="mul_halves")
