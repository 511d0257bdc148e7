"""Validate fastrnn/reference.py (the float64 oracle of the C engine) against real frameworks.

- torch: nn.RNN (tanh, relu), nn.LSTM (incl. proj_size), nn.GRU; bias on/off; bidirectional;
  2 layers; h0/c0; packed sequences (``lengths``); batch_first=False; return_sequences=False and
  the merge modes; an Embedding -> LSTM -> Dense(softmax) pipeline.
- onnxruntime, hand-built ONNX LSTM / GRU / RNN nodes: the options torch lacks (activations with
  alpha/beta, clip, input_forget, peepholes, linear_before_reset=0, reverse, sequence_lens,
  initial_h/initial_c).
- ``reference.act`` elementwise vs torch.nn.functional in float64, on a grid with large |x| and
  on non-finite inputs.

Reference (float64) vs framework (float32): max |diff| <= 1e-5 (outputs are O(1)).
Keras masking semantics (Embedding mask_zero / Masking) are not checked here: Keras is not installed.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
import types
import zlib
from pathlib import Path

import numpy as np
import pytest


def _load_fastrnn():
    """Return (ir, reference). When `import fastrnn` fails (its __init__ imports an extension that
    is not built yet), load the pure-Python modules by file path under a bare `fastrnn` package."""
    try:
        from fastrnn import ir, reference
        return ir, reference
    except ImportError:
        pass
    pkg_dir = Path(__file__).resolve().parents[1] / "fastrnn"
    pkg = types.ModuleType("fastrnn")
    pkg.__path__ = [str(pkg_dir)]
    sys.modules["fastrnn"] = pkg
    for name in ("errors", "ir", "reference"):
        spec = importlib.util.spec_from_file_location(f"fastrnn.{name}", pkg_dir / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        setattr(pkg, name, mod)
    return pkg.ir, pkg.reference


ir, reference = _load_fastrnn()

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - torch is part of the test environment
    torch = None
try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
except ImportError:  # pragma: no cover
    onnx = ort = None

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
needs_ort = pytest.mark.skipif(ort is None, reason="onnx / onnxruntime are not installed")

TOL = 1e-5


def assert_close(got, want, what, tol=TOL):
    """got: the float64 reference; want: the float32 framework result."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} (reference) != {want.shape} (framework)"
    assert np.all(np.isfinite(want)), f"{what}: framework output is not finite"
    diff = np.abs(got - want)
    if diff.size and not diff.max() <= tol:
        worst = np.unravel_index(np.argmax(diff), diff.shape)
        raise AssertionError(
            f"{what}: max |reference - framework| = {diff.max():.3g} > {tol} at index {worst}: "
            f"reference {got[worst]!r}, framework {want[worst]!r}")


def zero_masked(layers):
    """The layers with masked_output='zero'. Under `lengths` alone, packed-sequence semantics
    (zeros past each row's length) must hold whatever masked_output (a Keras-mask option) is:
    outputs under lengths are checked on these copies, and on the default spec ('carry') by the
    *_lengths_default_spec tests."""
    return [dataclasses.replace(l, masked_output="zero") if isinstance(l, ir.Recurrent) else l
            for l in layers]


def _rng(*key):
    """A generator seeded from ints and strings (crc32: stable across processes, unlike hash())."""
    return np.random.default_rng([zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in key])


# ---------------------------------------------------------------------------------------------
# 1. torch
# ---------------------------------------------------------------------------------------------

TORCH_CELLS = {
    # name -> (torch class, ir cell, extra kwargs, ir activations or None for the defaults)
    "rnn_tanh": ("RNN", "rnn", {"nonlinearity": "tanh"}, [["tanh"]]),
    "rnn_relu": ("RNN", "rnn", {"nonlinearity": "relu"}, [["relu"]]),
    "lstm": ("LSTM", "lstm", {}, None),
    "lstm_proj": ("LSTM", "lstm", {"proj_size": 3}, None),
    "gru": ("GRU", "gru", {}, None),
}
I_SIZE, H_SIZE = 5, 7


def make_torch(kind, bias, bidirectional, num_layers, batch_first=True, seed=0):
    cls, _, kw, _ = TORCH_CELLS[kind]
    torch.manual_seed(seed)
    m = getattr(torch.nn, cls)(I_SIZE, H_SIZE, num_layers=num_layers, bias=bias,
                               batch_first=batch_first, bidirectional=bidirectional, **kw)
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for p in m.parameters():  # uniform(-0.5, 0.5): larger than torch's default init
            p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.5)
    return m.eval()


def torch_to_ir(m, kind, **rec_opts):
    """One ir.Recurrent per torch layer; torch's weights are the canonical layout as they are."""
    _, cell, _, acts = TORCH_CELLS[kind]
    ndir = 2 if m.bidirectional else 1
    layers = []
    for k in range(m.num_layers):
        ws = []
        for d in range(ndir):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            names = {"W_ih": "weight_ih", "W_hh": "weight_hh"}
            if m.bias:
                names |= {"b_ih": "bias_ih", "b_hh": "bias_hh"}
            if getattr(m, "proj_size", 0):
                names["W_hr"] = "weight_hr"
            ws.append({key: getattr(m, tn + sfx).detach().numpy().copy() for key, tn in names.items()})
        opts = dict(direction="bidirectional" if ndir == 2 else "forward", merge_mode="concat",
                    activations=acts, linear_before_reset=True)
        if k == m.num_layers - 1:
            opts |= rec_opts
        layers.append(ir.Recurrent(cell, ws, **opts))
    return layers


def torch_states_to_native(m, states):
    """torch [h (L*D, B, Hout)] or [h, c] -> per layer h (D, B, Hout) [, c (D, B, H)]."""
    ndir = 2 if m.bidirectional else 1
    out = []
    for k in range(m.num_layers):
        for s in states:
            out.append(np.asarray(s)[k * ndir:(k + 1) * ndir])
    return out


def native_states_to_torch(m, states):
    n = len(states) // m.num_layers
    return [np.concatenate(states[j::n], axis=0) for j in range(n)]


def _torch_inputs(m, kind, B, T, with_state, seed):
    rng = _rng(seed, kind, B, T)
    x = rng.standard_normal((B, T, I_SIZE)).astype(np.float32)
    ndir = 2 if m.bidirectional else 1
    states = None
    if with_state:
        hout = getattr(m, "proj_size", 0) or H_SIZE
        states = [rng.standard_normal((m.num_layers * ndir, B, hout)).astype(np.float32) * 0.5]
        if isinstance(m, torch.nn.LSTM):
            states.append(rng.standard_normal((m.num_layers * ndir, B, H_SIZE)).astype(np.float32) * 0.5)
    return x, states


def _torch_state_arg(m, states):
    if states is None:
        return None
    ts = [torch.from_numpy(s) for s in states]
    return tuple(ts) if isinstance(m, torch.nn.LSTM) else ts[0]


def _torch_state_out(m, hn):
    return [t.detach().numpy() for t in (hn if isinstance(m, torch.nn.LSTM) else (hn,))]


@needs_torch
@pytest.mark.parametrize("packed", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "h0"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["1layer", "2layers"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", list(TORCH_CELLS))
def test_torch(kind, bias, bidirectional, num_layers, with_state, packed):
    B, T = 4, 6
    m = make_torch(kind, bias, bidirectional, num_layers)
    layers = torch_to_ir(m, kind)
    x, states = _torch_inputs(m, kind, B, T, with_state, seed=1)
    lengths = np.array([6, 2, 1, 4]) if packed else None
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if packed:
            xp = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=True,
                                                         enforce_sorted=False)
            yp, hn = m(xp, _torch_state_arg(m, states))
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(yp, batch_first=True, total_length=T)
        else:
            y, hn = m(xt, _torch_state_arg(m, states))
    want_states = _torch_state_out(m, hn)
    init = None if states is None else torch_states_to_native(m, states)
    got, got_states = reference.run(layers, x, lengths=lengths, initial_state=init)
    if packed:
        got, zstates = reference.run(zero_masked(layers), x, lengths=lengths, initial_state=init)
        for a, b in zip(got_states, zstates):   # masked_output never changes the states
            np.testing.assert_array_equal(a, b)
        # packed-sequence semantics: exact zeros past each row's length
        assert np.all(got[np.arange(T)[None, :] >= lengths[:, None]] == 0.0)
    assert_close(got, y.numpy(), "output")
    assert len(got_states) == len(want_states) * num_layers
    for j, (g, w) in enumerate(zip(native_states_to_torch(m, got_states), want_states)):
        assert_close(g, w, f"final state {'hc'[j]}")
    # the state shapes are the ones the layer spec announces
    assert [s.shape for s in got_states] == [sh for l in layers for sh in l.state_shapes(B)]


@needs_torch
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_torch_lengths_default_spec(kind, bidirectional):
    """pack_padded_sequence semantics with the layer spec as a converter makes it (defaults)."""
    B, T = 4, 6
    m = make_torch(kind, True, bidirectional, 1, seed=2)
    x, _ = _torch_inputs(m, kind, B, T, False, seed=2)
    lengths = np.array([6, 2, 1, 4])
    with torch.no_grad():
        xp = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(m(xp)[0], batch_first=True, total_length=T)
    got, _ = reference.run(torch_to_ir(m, kind), x, lengths=lengths)
    assert_close(got, y.numpy(), "output past the lengths")


@needs_torch
@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm_proj", "gru"])
def test_torch_batch_first_false(kind):
    """A time-major torch module: the reference takes (B, T, F) and returns (B, T, H)."""
    B, T = 3, 5
    m = make_torch(kind, True, True, 2, batch_first=False, seed=3)
    layers = torch_to_ir(m, kind)
    x, states = _torch_inputs(m, kind, B, T, True, seed=3)
    with torch.no_grad():
        y, hn = m(torch.from_numpy(x.transpose(1, 0, 2).copy()), _torch_state_arg(m, states))
    got, got_states = reference.run(layers, x, initial_state=torch_states_to_native(m, states))
    assert_close(got, y.numpy().transpose(1, 0, 2), "output")
    for g, w in zip(native_states_to_torch(m, got_states), _torch_state_out(m, hn)):
        assert_close(g, w, "final state")


@needs_torch
@pytest.mark.parametrize("packed", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("kind", ["rnn_relu", "lstm", "lstm_proj", "gru"])
def test_torch_return_sequences_false(kind, bidirectional, packed):
    """return_sequences=False gives each direction's final state (a reverse direction's is the
    one after it reached step 0): torch's h_n of the last layer, concatenated."""
    B, T = 4, 6
    m = make_torch(kind, True, bidirectional, 2, seed=5)
    layers = torch_to_ir(m, kind, return_sequences=False)
    x, _ = _torch_inputs(m, kind, B, T, False, seed=5)
    lengths = np.array([3, 6, 1, 5]) if packed else None
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if packed:
            xt = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.from_numpy(lengths), batch_first=True,
                                                         enforce_sorted=False)
        _, hn = m(xt)
    h = (hn[0] if isinstance(hn, tuple) else hn).numpy()
    ndir = 2 if bidirectional else 1
    want = np.concatenate(list(h[-ndir:]), axis=-1)
    got, _ = reference.run(layers, x, lengths=lengths)
    assert_close(got, want, "last output")


@needs_torch
@pytest.mark.parametrize("merge_mode", ["sum", "mul", "ave"])
def test_torch_merge_modes(merge_mode):
    B, T = 3, 5
    m = make_torch("lstm", True, True, 1, seed=7)
    layers = torch_to_ir(m, "lstm", merge_mode=merge_mode)
    x, _ = _torch_inputs(m, "lstm", B, T, False, seed=7)
    with torch.no_grad():
        y, _ = m(torch.from_numpy(x))
    fw, bw = y[..., :H_SIZE].double().numpy(), y[..., H_SIZE:].double().numpy()
    want = {"sum": fw + bw, "mul": fw * bw, "ave": (fw + bw) / 2}[merge_mode]
    got, _ = reference.run(layers, x)
    assert_close(got, want, f"merge {merge_mode}")


@needs_torch
def test_torch_pipeline_embedding_lstm_dense():
    """Embedding -> LSTM -> Dense(softmax), and an Activation layer, vs the torch equivalents."""
    torch.manual_seed(11)
    vocab, dim, out = 13, I_SIZE, 4
    emb = torch.nn.Embedding(vocab, dim)
    lstm = make_torch("lstm", True, False, 1, seed=11)
    lin = torch.nn.Linear(H_SIZE, out)
    with torch.no_grad():
        lin.weight.uniform_(-0.5, 0.5)
        lin.bias.uniform_(-0.5, 0.5)
    ids = _rng(11).integers(0, vocab, size=(3, 6))
    with torch.no_grad():
        h, _ = lstm(emb(torch.from_numpy(ids)))
        z = lin(h)
        want_softmax = torch.softmax(z, -1).numpy()
        want_silu = F.silu(z).numpy()
    layers = [ir.Embedding(emb.weight.detach().numpy())] + torch_to_ir(lstm, "lstm") + [
        ir.Dense(lin.weight.detach().numpy(), lin.bias.detach().numpy(), "softmax")]
    assert ir.check_pipeline(layers)[0] == "ids"
    got, states = reference.run(layers, ids)
    assert_close(got, want_softmax, "softmax head")
    layers[-1] = ir.Dense(lin.weight.detach().numpy(), lin.bias.detach().numpy())
    got, _ = reference.run(layers + [ir.Activation(out, "swish")], ids)
    assert_close(got, want_silu, "linear head + silu")


# ---------------------------------------------------------------------------------------------
# 2. onnxruntime, hand-built ONNX LSTM / GRU / RNN nodes
# ---------------------------------------------------------------------------------------------

ONNX_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# ONNX row blocks -> canonical order: LSTM i,o,f,c -> i,f,g,o; GRU z,r,h -> r,z,n
ONNX_TO_CANON = {"LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2], "RNN": [0]}
ONNX_ACT = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Affine": "affine",
            "LeakyRelu": "leaky_relu", "ThresholdedRelu": "thresholded_relu",
            "ScaledTanh": "scaled_tanh", "HardSigmoid": "hard_sigmoid", "Elu": "elu",
            "Softsign": "softsign", "Softplus": "softplus"}
# which ONNX activations take alpha / beta (onnxruntime consumes activation_alpha / _beta only for
# those, in order; we always pass them explicitly, ONNX's and onnxruntime's defaults differ)
ONNX_AB = {"Affine": (True, True), "LeakyRelu": (True, False), "ThresholdedRelu": (True, False),
           "ScaledTanh": (True, True), "HardSigmoid": (True, True), "Elu": (True, False)}
ONNX_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
ONNX_H, ONNX_I, ONNX_B, ONNX_T = 6, 5, 4, 6
ONNX_LENS = np.array([6, 2, 1, 5], dtype=np.int32)


def _act_spec(a):
    """'Name' or ('Name', alpha[, beta]) -> (name, alpha|None, beta|None)."""
    if isinstance(a, str):
        return a, None, None
    return a[0], a[1], (a[2] if len(a) > 2 else None)


def _reorder(a, op, H):
    """Rows of an ONNX per-gate matrix/vector (G*H, ...) into the canonical gate order."""
    return np.concatenate([a[g * H:(g + 1) * H] for g in ONNX_TO_CANON[op]], axis=0)


def onnx_case(op, direction, acts=None, clip=None, input_forget=0, linear_before_reset=0,
              bias=True, peepholes=False, seq_lens=False, init=False, seed=0):
    """Build an ONNX model of one LSTM/GRU/RNN node, its inputs, and the equivalent ir layer.

    acts: per direction, a list of activation specs (ONNX order f[, g[, h]]); None: defaults.
    """
    H, I, B, T = ONNX_H, ONNX_I, ONNX_B, ONNX_T
    G = ONNX_GATES[op]
    D = 2 if direction == "bidirectional" else 1
    rng = _rng(seed, op, direction)
    u = lambda *s: (rng.random(s) - 0.5).astype(np.float32)  # noqa: E731 - uniform(-0.5, 0.5)
    feeds = {"X": rng.standard_normal((T, B, I)).astype(np.float32),
             "W": u(D, G * H, I), "R": u(D, G * H, H)}
    if bias:
        feeds["B"] = u(D, 2 * G * H)
    if seq_lens:
        feeds["sequence_lens"] = ONNX_LENS.copy()
    if init:
        feeds["initial_h"] = (rng.standard_normal((D, B, H)) * 0.5).astype(np.float32)
        if op == "LSTM":
            feeds["initial_c"] = (rng.standard_normal((D, B, H)) * 0.5).astype(np.float32)
    if peepholes:
        feeds["P"] = u(D, 3 * H)

    names = {"LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
             "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
             "RNN": ["X", "W", "R", "B", "sequence_lens", "initial_h"]}[op]
    node_inputs = [n if n in feeds else "" for n in names]
    while node_inputs and node_inputs[-1] == "":
        node_inputs.pop()
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    attrs = {"hidden_size": H, "direction": direction}
    if acts is None:
        acts = [ONNX_DEFAULT_ACTS[op]] * D
    else:
        names_flat, alphas, betas = [], [], []
        for per_dir in acts:
            for a in per_dir:
                n, al, be = _act_spec(a)
                names_flat.append(n)
                need_a, need_b = ONNX_AB.get(n, (False, False))
                if need_a:
                    alphas.append(al)
                if need_b:
                    betas.append(be)
        attrs["activations"] = names_flat
        if alphas:
            attrs["activation_alpha"] = alphas
        if betas:
            attrs["activation_beta"] = betas
    if clip is not None:
        attrs["clip"] = clip
    if op == "LSTM" and input_forget:
        attrs["input_forget"] = 1
    if op == "GRU":
        attrs["linear_before_reset"] = linear_before_reset
    node = helper.make_node(op, node_inputs, outputs, **attrs)
    elem = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32}
    g_inputs = [helper.make_tensor_value_info(n, elem[feeds[n].dtype], feeds[n].shape)
                for n in node_inputs if n]
    g_outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (T, D, B, H))] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, (D, B, H)) for n in outputs[1:]]
    model = helper.make_model(helper.make_graph([node], f"{op}_test", g_inputs, g_outputs),
                              opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8

    # the same layer in the IR: canonical gate order, ONNX B = [Wb; Rb], P = [Pi, Po, Pf]
    ws = []
    for d in range(D):
        w = {"W_ih": _reorder(feeds["W"][d], op, H), "W_hh": _reorder(feeds["R"][d], op, H)}
        if bias:
            w["b_ih"] = _reorder(feeds["B"][d][:G * H], op, H)
            w["b_hh"] = _reorder(feeds["B"][d][G * H:], op, H)
        if peepholes:
            p = feeds["P"][d]
            w["P"] = np.stack([p[:H], p[2 * H:], p[H:2 * H]])  # rows i, f, o
        ws.append(w)
    ir_acts = [[ir.Act(ONNX_ACT[_act_spec(a)[0]],
                       *(math.nan if v is None else v for v in _act_spec(a)[1:])) for a in per_dir]
               for per_dir in acts]
    layer = ir.Recurrent({"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}[op], ws, direction=direction,
                         activations=ir_acts, clip=clip, input_forget=bool(input_forget),
                         linear_before_reset=bool(linear_before_reset) if op == "GRU" else True)
    return model, feeds, layer


def check_onnx(model, feeds, layer, default_spec=False):
    onnx.checker.check_model(model, full_check=True)   # a malformed graph is this file's bug
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outs = sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001 - the oracle cannot run this variant
        pytest.skip(f"onnxruntime cannot run this variant: {type(e).__name__}: {e}")
    Y, Y_h = outs[0], outs[1]
    T, D, B, H = Y.shape
    lengths = feeds.get("sequence_lens")
    init = None
    if "initial_h" in feeds:
        init = [feeds["initial_h"]] + ([feeds["initial_c"]] if "initial_c" in feeds else [])
    x = feeds["X"].transpose(1, 0, 2)                          # time-major -> batch-major
    got, states = reference.run([layer], x, lengths=lengths, initial_state=init)
    assert_close(states[0], Y_h, "Y_h")
    if len(outs) > 2:
        assert_close(states[1], outs[2], "Y_c")
    if lengths is not None and not default_spec:
        got, _ = reference.run(zero_masked([layer]), x, lengths=lengths, initial_state=init)
    assert_close(got, Y.transpose(2, 0, 1, 3).reshape(B, T, D * H), "Y")


DIRECTIONS = ["forward", "reverse", "bidirectional"]
STATE_CASES = {"plain": {}, "init": {"init": True}, "lens_init": {"seq_lens": True, "init": True}}


def _both_dirs(direction, first, second):
    """Activation lists per direction: the second direction gets different ones on purpose."""
    return [first] if direction != "bidirectional" else [first, second]


LSTM_CASES = {
    "default": {},
    "nobias": {"bias": False},
    "clip": {"clip": 0.6},
    "input_forget": {"input_forget": 1},
    "peepholes": {"peepholes": True},
    "peep_forget_clip": {"peepholes": True, "input_forget": 1, "clip": 0.9},
    "hardsig_tanh_scaledtanh": {"acts": (["HardSigmoid", 0.3, 0.45], "Tanh", ["ScaledTanh", 1.3, 0.7])},
    "sig_softsign_softplus": {"acts": ("Sigmoid", "Softsign", "Softplus")},
    "hardsig_elu_affine": {"acts": (["HardSigmoid", 0.25, 0.55], ["Elu", 0.8], ["Affine", 0.6, 0.1])},
    "sig_leaky_thresholded": {"acts": ("Sigmoid", ["LeakyRelu", 0.15], ["ThresholdedRelu", 0.1])},
    "sig_relu_tanh_peep": {"acts": ("Sigmoid", "Relu", "Tanh"), "peepholes": True, "clip": 1.5},
}

GRU_CASES = {
    "default": {},
    "nobias": {"bias": False},
    "clip": {"clip": 0.5},
    "hardsig_softsign": {"acts": (["HardSigmoid", 0.3, 0.45], "Softsign")},
    "sig_relu": {"acts": ("Sigmoid", "Relu")},
    "hardsig_scaledtanh": {"acts": (["HardSigmoid", 0.25, 0.55], ["ScaledTanh", 0.9, 1.2])},
    "sig_elu": {"acts": ("Sigmoid", ["Elu", 0.7])},
    "softsign_leaky": {"acts": ("Softsign", ["LeakyRelu", 0.2])},
    "sig_affine_clip": {"acts": ("Sigmoid", ["Affine", 0.8, -0.1]), "clip": 1.0},
}

RNN_CASES = {
    "tanh": {},
    "nobias": {"bias": False},
    "tanh_clip": {"clip": 0.4},
    "relu": {"acts": ("Relu",)},
    "sigmoid": {"acts": ("Sigmoid",)},
    "affine": {"acts": (["Affine", 0.6, 0.1],)},
    "leaky_relu": {"acts": (["LeakyRelu", 0.1],)},
    "elu": {"acts": (["Elu", 0.8],)},
    "softsign": {"acts": ("Softsign",)},
    "softplus": {"acts": ("Softplus",)},
    "thresholded_relu": {"acts": (["ThresholdedRelu", 0.2],)},
    "scaled_tanh": {"acts": (["ScaledTanh", 1.1, 0.7],)},
    "hard_sigmoid": {"acts": (["HardSigmoid", 0.3, 0.4],)},
    "relu_clip": {"acts": ("Relu",), "clip": 0.7},
}


def _onnx_kwargs(op, case, direction, state):
    kw = dict(case) | STATE_CASES[state]
    acts = kw.pop("acts", None)
    if acts is not None:
        other = list(reversed(acts)) if op == "GRU" else ONNX_DEFAULT_ACTS[op]
        kw["acts"] = _both_dirs(direction, list(acts), other)
    elif direction == "bidirectional" and op == "RNN":
        kw["acts"] = [["Tanh"], [["LeakyRelu", 0.3]]]  # different activations per direction
    return kw


@needs_ort
@pytest.mark.parametrize("state", list(STATE_CASES))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", list(LSTM_CASES))
def test_onnx_lstm(case, direction, state):
    check_onnx(*onnx_case("LSTM", direction, **_onnx_kwargs("LSTM", LSTM_CASES[case], direction, state)))


@needs_ort
@pytest.mark.parametrize("linear_before_reset", [0, 1], ids=["lbr0", "lbr1"])
@pytest.mark.parametrize("state", list(STATE_CASES))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", list(GRU_CASES))
def test_onnx_gru(case, direction, state, linear_before_reset):
    kw = _onnx_kwargs("GRU", GRU_CASES[case], direction, state)
    check_onnx(*onnx_case("GRU", direction, linear_before_reset=linear_before_reset, **kw))


@needs_ort
@pytest.mark.parametrize("state", list(STATE_CASES))
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("case", list(RNN_CASES))
def test_onnx_rnn(case, direction, state):
    check_onnx(*onnx_case("RNN", direction, **_onnx_kwargs("RNN", RNN_CASES[case], direction, state)))


@needs_ort
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_onnx_lengths_default_spec(op):
    """ONNX sequence_lens: Y is 0 past each row's length, with the default layer spec."""
    model, feeds, layer = onnx_case(op, "bidirectional", seq_lens=True, init=True, seed=9)
    assert layer.masked_output == "carry"
    check_onnx(model, feeds, layer, default_spec=True)


# ---------------------------------------------------------------------------------------------
# 3. reference.act, elementwise, vs torch.nn.functional in float64
# ---------------------------------------------------------------------------------------------

def _torch_acts():
    if torch is None:
        return {}
    sa, ss = ir.SELU_ALPHA, ir.SELU_SCALE
    return {
        # id: (ir.Act, torch float64 function)
        "linear": (ir.Act("linear"), lambda t: t),
        "sigmoid": (ir.Act("sigmoid"), torch.sigmoid),
        "tanh": (ir.Act("tanh"), torch.tanh),
        "relu": (ir.Act("relu"), torch.relu),
        "hard_sigmoid_torch": (ir.Act("hard_sigmoid", 1 / 6, 0.5), F.hardsigmoid),
        "hard_sigmoid_default": (ir.Act("hard_sigmoid"), lambda t: torch.clamp(0.2 * t + 0.5, 0, 1)),
        "hard_sigmoid_ab": (ir.Act("hard_sigmoid", 0.3, 0.4), lambda t: torch.clamp(0.3 * t + 0.4, 0, 1)),
        "elu": (ir.Act("elu"), F.elu),
        "elu_alpha": (ir.Act("elu", 0.7), lambda t: F.elu(t, alpha=0.7)),
        "softsign": (ir.Act("softsign"), F.softsign),
        "softplus": (ir.Act("softplus"), F.softplus),   # x past its threshold 20: rel. err 1e-10
        "affine": (ir.Act("affine", 0.6, -0.2), lambda t: 0.6 * t - 0.2),
        "leaky_relu": (ir.Act("leaky_relu"), F.leaky_relu),
        "leaky_relu_alpha": (ir.Act("leaky_relu", 0.2), lambda t: F.leaky_relu(t, 0.2)),
        "thresholded_relu": (ir.Act("thresholded_relu", 0.5), lambda t: F.threshold(t, 0.5, 0.0)),
        "scaled_tanh": (ir.Act("scaled_tanh", 1.7, 0.6), lambda t: 1.7 * torch.tanh(0.6 * t)),
        "selu": (ir.Act("selu"), F.selu),
        "selu_constants": (ir.Act("selu"), lambda t: ss * torch.where(t > 0, t, sa * torch.expm1(t))),
        "exponential": (ir.Act("exponential"), torch.exp),
        "silu": (ir.Act("silu"), F.silu),
        "swish": (ir.Act("swish"), F.silu),
        "relu6": (ir.Act("relu6"), F.relu6),
        "mish": (ir.Act("mish"), F.mish),
        "hardswish": (ir.Act("hardswish"), F.hardswish),
        "clip": (ir.Act("clip", -0.5, 2.0), lambda t: F.hardtanh(t, -0.5, 2.0)),
        "clip_default": (ir.Act("clip"), F.hardtanh),
        "softmax": (ir.Act("softmax"), lambda t: F.softmax(t, dim=-1)),
        "log_softmax": (ir.Act("log_softmax"), lambda t: F.log_softmax(t, dim=-1)),
        "gelu": (ir.Act("gelu"), F.gelu),
        "gelu_tanh": (ir.Act("gelu_tanh"), lambda t: F.gelu(t, approximate="tanh")),
        "layer_norm": (ir.Act("layer_norm", 1e-5), lambda t: F.layer_norm(t, t.shape[-1:], eps=1e-5)),
        "layer_norm_eps": (ir.Act("layer_norm", 0.1), lambda t: F.layer_norm(t, t.shape[-1:], eps=0.1)),
        "l2_normalize": (ir.Act("l2_normalize", 1e-12), lambda t: F.normalize(t, dim=-1)),
        "l2_normalize_eps": (ir.Act("l2_normalize", 50.0), lambda t: F.normalize(t, dim=-1, eps=50.0)),
        "l2_normalize_add": (ir.Act("l2_normalize", 1e-5, 1), lambda t: t / (torch.norm(t, dim=-1, keepdim=True) + 1e-5)),
        "mul_halves": (ir.Act("mul_halves"), lambda t: torch.cat([t[..., :t.shape[-1] // 2] * t[..., t.shape[-1] // 2:],
                                                                  t[..., t.shape[-1] // 2:]], -1)),
    }


TORCH_ACTS = _torch_acts()
GRID = np.concatenate([np.linspace(-12, 12, 194), [-1e4, -750, -710, -100, -40, -30, -20, -0.0,
                                                   20, 30, 40, 100, 700, 1e4],
                       [-1e-300, 1e-300, -5e-324, 5e-324]])


@needs_torch
@pytest.mark.parametrize("name", list(TORCH_ACTS) or ["none"])
def test_act_vs_torch(name):
    a, fn = TORCH_ACTS[name]
    if a.kind in ir.ROW_WISE:
        x = np.stack([GRID[:40], GRID[40:80], GRID[80:120], GRID[-40:],
                      np.array([-1e4, 1e4] * 20), np.full(40, 3.0)])   # rows, softmax over the last axis
    else:
        x = GRID.reshape(4, -1)
    got = reference.act(a, x.copy())
    want = fn(torch.from_numpy(x.copy())).numpy()
    assert got.shape == x.shape and got.dtype == np.float64
    rtol = 2e-10 if a.kind == "softplus" else 1e-12
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-15, err_msg=name)


# Non-finite inputs: reference vs torch on +-inf and NaN. softsign(+-inf) and silu(-inf) are NaN in
# torch too (so they agree). thresholded_relu is left out of the NaN check: torch's F.threshold
# propagates NaN, ONNX ThresholdedRelu (x > alpha ? x : 0) maps it to 0, as the reference does.


@needs_torch
@pytest.mark.parametrize("name", list(TORCH_ACTS))
def test_act_nonfinite_vs_torch(name):
    a, fn = TORCH_ACTS[name]
    vals = [-np.inf, np.inf] + ([] if a.kind == "thresholded_relu" else [np.nan])
    if a.kind in ir.ROW_WISE:
        x = np.array([[1.0, v, 0.5] for v in vals])
    else:
        x = np.array(vals + [0.25, -0.25])
    got = reference.act(a, x.copy())
    want = fn(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15, equal_nan=True, err_msg=name)


@needs_torch
def test_act_covers_every_kind():
    """Every activation kind of the IR is compared above (none is silently left out)."""
    assert {a.kind for a, _ in TORCH_ACTS.values()} == set(ir.ACTIVATIONS)
