"""Recurrences written as per-step arithmetic (converters/cells.py): nn.LSTMCell / GRUCell /
RNNCell called in a Python loop and exported to ONNX (every step becomes Gemm, Split, Sigmoid,
Tanh, Mul, Add nodes), the dynamo exporter's unrolled nn.RNN, and cells written by hand with
their own Linear layers and gate arithmetic (captured live, where the same handlers see the
same arithmetic). Each converts to recurrent layers and is compared with its framework: the
module's forward (predict, on another batch size than the export's) and onnxruntime (run, on
the graph's own inputs).

The loops in torch.onnx's export have the example's number of steps (the Python loop is
unrolled); fastrnn's model runs any length, and is compared at the export's.
"""
import numpy as np
import pytest
import torch
from torch import nn

import fastrnn

ort = pytest.importorskip("onnxruntime")
F_IN, H, T = 3, 6, 5


def _x(B, seed):
    return np.random.default_rng(seed).normal(size=(B, T, F_IN)).astype(np.float32)


def _close(got, want, what=""):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


class LSTMCellLoop(nn.Module):
    """nn.LSTMCell over x[:, t] with its (h, c) tuple carried whole, a Linear per step, each step
    unsqueezed and concatenated."""
    def __init__(self):
        super().__init__()
        self.h = H
        self.cell = nn.LSTMCell(F_IN, H)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        state = (x.new_zeros(x.size(0), self.h),) * 2
        outs = []
        for t in range(x.size(1)):
            state = self.cell(x[:, t], state)
            outs.append(self.fc(state[0]).unsqueeze(1))
        return torch.cat(outs, 1)


class StackedLSTMCells(nn.Module):
    """Two LSTMCells, the second fed the first's h; the last step's h of the second."""
    def __init__(self):
        super().__init__()
        self.h = H
        self.c1, self.c2 = nn.LSTMCell(F_IN, H), nn.LSTMCell(H, H)
        self.fc = nn.Linear(H, 1)

    def forward(self, x):
        z = x.new_zeros(x.size(0), self.h)
        h1, c1, h2, c2 = z, z, z, z
        for t in range(x.size(1)):
            h1, c1 = self.c1(x[:, t, :], (h1, c1))
            h2, c2 = self.c2(h1, (h2, c2))
        return self.fc(h2)


class GRUCellLoop(nn.Module):
    """GRUCell from zeros; returns the final h."""
    def __init__(self):
        super().__init__()
        self.h = H
        self.cell = nn.GRUCell(F_IN, H)

    def forward(self, x):
        h = torch.zeros(x.size(0), self.h)
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
        return h


class RNNCellLoop(nn.Module):
    def __init__(self, nonlinearity):
        super().__init__()
        self.h = H
        self.cell = nn.RNNCell(F_IN, H, nonlinearity=nonlinearity)

    def forward(self, x):
        h = torch.zeros(x.size(0), self.h)
        ys = []
        for t in range(x.size(1)):
            h = self.cell(x[:, t], h)
            ys.append(h.unsqueeze(1))
        return torch.cat(ys, 1)


class HandLSTM(nn.Module):
    """An LSTM cell written out: one Linear on x and one on h, chunk into i, f, g, o, the
    products in another order than torch's (c = i * g + c * f)."""
    def __init__(self):
        super().__init__()
        self.h = H
        self.wx = nn.Linear(F_IN, 4 * H)
        self.wh = nn.Linear(H, 4 * H, bias=False)

    def forward(self, x):
        h = torch.zeros(x.size(0), self.h)
        c = torch.zeros(x.size(0), self.h)
        for t in range(x.size(1)):
            i, f, g, o = (self.wh(h) + self.wx(x[:, t])).chunk(4, 1)
            c = torch.tanh(g) * torch.sigmoid(i) + c * torch.sigmoid(f)
            h = torch.tanh(c) * torch.sigmoid(o)
        return h


class HandGRU(nn.Module):
    """A GRU written with the update gate the other way round (h' = z n + (1 - z) h), separate
    Linear layers per gate, the reset gate inside the candidate's recurrent term."""
    def __init__(self):
        super().__init__()
        self.h = H
        self.xr, self.xz, self.xn = (nn.Linear(F_IN, H) for _ in range(3))
        self.hr, self.hz, self.hn = (nn.Linear(H, H) for _ in range(3))

    def forward(self, x):
        h = torch.zeros(x.size(0), self.h)
        for t in range(x.size(1)):
            xt = x[:, t]
            r = torch.sigmoid(self.xr(xt) + self.hr(h))
            z = torch.sigmoid(self.xz(xt) + self.hz(h))
            n = torch.tanh(self.xn(xt) + r * self.hn(h))
            h = z * n + (1 - z) * h
        return h


class NotACell(nn.Module):
    """Per-step arithmetic that is no standard cell (a leaky integrator with a sigmoid)."""
    def __init__(self):
        super().__init__()
        self.h = H
        self.wx, self.wh = nn.Linear(F_IN, H), nn.Linear(H, H)

    def forward(self, x):
        h = torch.zeros(x.size(0), self.h)
        for t in range(x.size(1)):
            h = 0.5 * h + torch.sigmoid(self.wx(x[:, t]) + self.wh(h))
        return h


CASES = {
    "lstmcell_loop": LSTMCellLoop,
    "stacked_lstmcells": StackedLSTMCells,
    "grucell_loop": GRUCellLoop,
    "rnncell_tanh": lambda: RNNCellLoop("tanh"),
    "rnncell_relu": lambda: RNNCellLoop("relu"),
    "hand_lstm": HandLSTM,
    "hand_gru": HandGRU,
}


def _module(name):
    torch.manual_seed(sorted(CASES).index(name))
    return CASES[name]().eval()


def _export(module, path, dynamo):
    ex = torch.from_numpy(_x(3, 0))
    if dynamo:
        ep = torch.export.export(module, (ex,), dynamic_shapes=({0: torch.export.Dim("batch")},), strict=False)
        torch.onnx.export(ep, f=str(path), dynamo=True, input_names=["x"])
    else:
        torch.onnx.export(module, (ex,), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch"}},
                          opset_version=17)


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_legacy_export_of_a_cell_loop(name, tmp_path):
    module = _module(name)
    p = tmp_path / f"{name}.onnx"
    _export(module, p, dynamo=False)
    m = fastrnn.convert(str(p))
    assert any(isinstance(l, fastrnn.ir.Recurrent) for l in m.layers)
    assert not any(isinstance(l, fastrnn.ir.Dense) and l.weight.shape[0] == l.weight.shape[1] == H
                   and np.allclose(l.weight, np.eye(H)) for l in m.layers)
    x = _x(4, 1)
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})
    got = m.run(None, {"x": x})
    for g, w in zip(got, want):
        _close(g, w, name)
    with torch.no_grad():
        _close(m.predict(x), module(torch.from_numpy(x)).numpy(), name)


@pytest.mark.parametrize("name", ["lstmcell_loop", "hand_gru", "rnncell_relu"])
def test_onnx_dynamo_export_of_a_cell_loop(name, tmp_path):
    module = _module(name)
    p = tmp_path / f"{name}.onnx"
    _export(module, p, dynamo=True)
    m = fastrnn.convert(str(p))
    x = _x(4, 2)
    want = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for g, w in zip(m.run(None, {"x": x}), want):
        _close(g, w, name)


@pytest.mark.parametrize("name", ["hand_lstm", "hand_gru"])
def test_hand_written_cell_module(name):
    """The live module (torch.export capture): the same arithmetic reaches the same recogniser;
    the model runs any length, unlike the unrolled export."""
    module = _module(name)
    m = fastrnn.convert(module, example_input=torch.from_numpy(_x(3, 0)))
    assert [type(l).__name__ for l in m.layers] == ["Recurrent"]
    x = _x(5, 3)
    with torch.no_grad():
        _close(m.predict(x), module(torch.from_numpy(x)).numpy(), name)


def test_dynamo_unrolled_rnn_keeps_one_input_projection(tmp_path):
    """torch's dynamo exporter writes nn.RNN as one MatMul over every step, then per step the
    recurrent MatMul plus step t of that projection: the projection folds into the recurrent
    layer's input weights (converters/passes.py), no separate Dense is left."""
    torch.manual_seed(0)
    rnn = nn.RNN(F_IN, H, num_layers=2, batch_first=True, nonlinearity="relu").eval()

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = rnn

        def forward(self, x):
            return self.rnn(x)[0]

    module = M().eval()
    p = tmp_path / "rnn.onnx"
    _export(module, p, dynamo=True)
    m = fastrnn.convert(str(p))
    assert [type(l).__name__ for l in m.layers] == ["Recurrent", "Recurrent"]
    assert [l.input_size for l in m.layers] == [F_IN, H]
    x = _x(4, 4)
    with torch.no_grad():
        _close(m.predict(x), module(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_dynamo_rnn_exported_directly_with_dynamic_shapes(nonlinearity, tmp_path):
    """torch.onnx.export(module, dynamic_shapes=...) with Dim.AUTO on batch and time: torch
    specializes the time of the unrolled loop, which it walks with SplitToSequence / SequenceAt
    while the graph's input says the time axis is symbolic; the converter finds the length from
    the steps the graph takes."""
    import contextlib
    import io
    torch.manual_seed(1)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(F_IN, H, batch_first=True, nonlinearity=nonlinearity)

        def forward(self, x):
            return self.rnn(x)[0][:, -1]

    module = M().eval()
    p = tmp_path / "rnn.onnx"
    A = torch.export.Dim.AUTO
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(module, (torch.from_numpy(_x(3, 0)),), str(p), dynamo=True, external_data=False,
                          dynamic_shapes=({0: A, 1: A},))
    import onnx
    assert "SequenceAt" in {n.op_type for n in onnx.load(str(p)).graph.node}
    m = fastrnn.convert(str(p))
    x = _x(4, 5)
    want = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    _close(m.run(None, {"x": x})[0], want)
    with torch.no_grad():
        _close(m.predict(x), module(torch.from_numpy(x)).numpy())


def test_per_step_arithmetic_that_is_no_cell_is_refused(tmp_path):
    module = NotACell().eval()
    p = tmp_path / "leaky.onnx"
    _export(module, p, dynamo=False)
    with pytest.raises(fastrnn.UnsupportedError, match="not an LSTM, GRU or RNN cell"):
        fastrnn.convert(str(p))
    with pytest.raises(fastrnn.UnsupportedError, match="not an LSTM, GRU or RNN cell"):
        fastrnn.convert(module, example_input=torch.from_numpy(_x(3, 0)))


@pytest.mark.parametrize("name", ["grucell_loop", "hand_gru", "hand_lstm", "rnncell_relu", "stacked_lstmcells"])
def test_scripted_cell_loop(name, tmp_path):
    """torch.jit.script keeps the loop (prim::Loop over range(x.size(1))) and the list it appends
    to: the TorchScript frontend unrolls it at the stand-in's length, as a module capture sees it,
    and the model runs any length."""
    module = _module(name)
    p = tmp_path / f"{name}.pt"
    torch.jit.save(torch.jit.script(module), str(p))
    m = fastrnn.convert(str(p))
    assert [type(l).__name__ for l in m.layers][:1] == ["Recurrent"]
    x = np.random.default_rng(5).normal(size=(4, 11, F_IN)).astype(np.float32)
    with torch.no_grad():
        _close(m.predict(x), module(torch.from_numpy(x)).numpy(), name)


class Rank4(nn.Module):
    def forward(self, x):
        if x.dim() != 4:
            raise ValueError("expected a 4-D input, got {}-D".format(x.dim()))
        return x


def test_scripted_check_that_raises_is_named(tmp_path):
    """A check in a module that forward calls, raising for the shapes fastrnn assumed, is
    reported as that raise (a check in forward itself is not run: only what its output depends on
    is)."""
    class Checked(nn.Module):
        def __init__(self):
            super().__init__()
            self.h = H
            self.check = Rank4()
            self.cell = nn.GRUCell(F_IN, H)

        def forward(self, x):
            x = self.check(x)
            return self.cell(x[:, 0], torch.zeros(x.size(0), self.h))

    p = tmp_path / "checked.pt"
    torch.jit.save(torch.jit.script(Checked()), str(p))
    with pytest.raises(fastrnn.UnsupportedError, match=r"forward raises builtins.ValueError: expected a 4-D input, got 3-D"):
        fastrnn.convert(str(p))


def test_unrolled_rnn_from_a_state_input(tmp_path):
    """forward(x, h0) of nn.RNN, unrolled by the dynamo exporter: h0 (a graph input) is the
    chain's initial state, a state input of run (as LSTM/GRU/RNN nodes' initial_h), and the
    final state a state output."""
    torch.manual_seed(3)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.RNN(F_IN, H, batch_first=True)
            self.fc = nn.Linear(H, 2)

        def forward(self, x, h0):
            out, h = self.rnn(x, h0)
            return self.fc(out), h

    module = M().eval()
    ex = (torch.from_numpy(_x(3, 0)), torch.zeros(1, 3, H))
    ep = torch.export.export(module, ex, dynamic_shapes=({0: torch.export.Dim("batch")},
                                                         {1: torch.export.Dim("batch")}), strict=False)
    p = tmp_path / "rnn_h0.onnx"
    torch.onnx.export(ep, f=str(p), dynamo=True, input_names=["x", "h0"])
    m = fastrnn.convert(str(p))
    feeds = {"x": _x(4, 6), "h0": np.random.default_rng(7).normal(size=(1, 4, H)).astype(np.float32)}
    want = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = m.run(None, feeds)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        _close(g, w)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ["lstmcell_loop", "hand_gru", "stacked_lstmcells"])
def test_traced_cell_loop(name, tmp_path):
    """torch.jit.trace unrolls the loop for the example's 9 steps and saves no input shape: the
    stand-in that lowers is (B, 9, F), its length read off the steps the trace selects."""
    module = _module(name)
    p = tmp_path / f"{name}.pt"
    ex = np.random.default_rng(8).normal(size=(3, 9, F_IN)).astype(np.float32)
    torch.jit.save(torch.jit.trace(module, torch.from_numpy(ex)), str(p))
    m = fastrnn.convert(str(p))
    x = np.random.default_rng(9).normal(size=(4, 9, F_IN)).astype(np.float32)
    with torch.no_grad():
        _close(m.predict(x), module(torch.from_numpy(x)).numpy(), name)
