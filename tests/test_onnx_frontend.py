"""The ONNX graph frontend (converters/frontends/onnx.py) on what torch's exporters write for
the idioms of tests/test_torch_idioms.py: each module exported (legacy exporter, dynamic batch and
time; the dynamo exporter for a few), converted, and run() compared with onnxruntime on the
graph's own inputs, at sizes other than the export's."""
import contextlib
import io
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

import fastrnn
import test_torch_idioms as I

LEGACY = ["h0_in_forward", "new_zeros", "rnn_none_squeeze", "word_lm", "permute_view", "sequential_head_scalars",
          "residual_scale", "transposed", "mean_max_pool", "time_major_mean_keepdim", "lstm_tagger_unbatched",
          "per_step_on_rnn_output", "residual_heads", "per_step_residual", "residual_stack"]
DYNAMO = ["h0_in_forward", "residual_scale", "mean_max_pool", "permute_view", "residual_heads", "per_step_residual",
          "residual_stack"]


def _export(name, dynamo, path):
    cls, kind = I.CASES[name]
    torch.manual_seed(len(name))
    m = cls().eval()
    args, _, _ = I._forward_args(kind, m, I.B0, I.T0, 0)
    flat = []
    for a in args:
        flat += list(a) if isinstance(a, tuple) else [a]
    names = [f"in{i}" for i in range(len(flat))]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            A = torch.export.Dim.AUTO
            dyn = tuple({i: A for i in range(min(a.ndim, 2))} for a in args)   # batch and time
            ep = torch.export.export(m, tuple(args), dynamic_shapes=dyn, strict=False)
            torch.onnx.export(ep, tuple(args), str(path), dynamo=True, external_data=False)
        else:
            axes = {}
            x = flat[0]
            if kind != "unbatched" and name not in ("per_step_on_rnn_output",):   # a Python loop fixes T
                axes = {names[0]: {0: "d0", 1: "d1"} if x.ndim >= 2 else {0: "d0"}}
                for n, t in zip(names[1:], flat[1:]):
                    axes[n] = {1: "d1" if kind == "ids_hidden" else "d0"}
            torch.onnx.export(m, tuple(args), str(path), dynamo=False, opset_version=17, input_names=names,
                              dynamic_axes=axes or None)
    return m, kind, args


def _feeds(sess, kind, m, B, T):
    args, _, _ = I._forward_args(kind, m, B, T, 7)
    flat = []
    for a in args:
        flat += list(a) if isinstance(a, tuple) else [a]
    return {i.name: a.numpy() for i, a in zip(sess.get_inputs(), flat)}


@pytest.mark.parametrize("name, dynamo", [(n, False) for n in LEGACY] + [(n, True) for n in DYNAMO],
                         ids=[f"{n}-legacy" for n in LEGACY] + [f"{n}-dynamo" for n in DYNAMO])
def test_exported_idiom_runs_as_onnxruntime(name, dynamo, tmp_path):
    m, kind, args = _export(name, dynamo, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    f = fastrnn.convert(str(tmp_path / "m.onnx"))
    fixed = dynamo or kind == "unbatched" or name == "per_step_on_rnn_output"
    sizes = [(I.B0, I.T0)] if fixed else [(I.B0, I.T0), (I.B1, I.T1)]
    if kind == "unbatched":
        sizes = [(1, I.T0)]
    for B, T in sizes:
        feeds = _feeds(sess, kind, m, B, T)
        want = sess.run(None, feeds)
        got = f.run(None, feeds)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"{name} B={B} T={T}")


def test_lengths_returned_as_a_graph_output(tmp_path):
    """forward(x, lengths) returning (y, lengths.int()) (deepspeech's (x, output_lengths)): the
    legacy export's second output is the lengths input passed through (Cast to int32); run()
    returns it as the graph does, beside y."""
    class PackedWithLengths(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x, lengths):
            lengths = lengths.cpu().int()
            p = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            o, _ = self.rnn(p)
            o, _ = torch.nn.utils.rnn.pad_packed_sequence(o, batch_first=True, total_length=x.size(1))
            return self.fc(o), lengths

    torch.manual_seed(0)
    m = PackedWithLengths().eval()
    x = torch.randn(3, 6, 3)
    lens = torch.tensor([6, 2, 4])
    p = str(tmp_path / "m.onnx")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x, lens), p, dynamo=False, opset_version=17, input_names=["x", "lengths"],
                          output_names=["y", "out_lengths"],
                          dynamic_axes={"x": {0: "B", 1: "T"}, "lengths": {0: "B"}})
    f = fastrnn.convert(p)
    feeds = {"x": np.random.default_rng(1).normal(size=(4, 5, 3)).astype(np.float32),
             "lengths": np.array([5, 1, 3, 4])}
    want = ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = f.run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    assert got[1].dtype == want[1].dtype and np.array_equal(got[1], want[1])
