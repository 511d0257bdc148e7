"""The ONNX importer (fastrnn.convert on an onnx.ModelProto or a .onnx path, then
Model.run with onnxruntime's InferenceSession.run semantics), against real onnx/onnxruntime.

What is tested, and against which oracle:

1. onnx's own backend node tests for LSTM / GRU / RNN (test_lstm_defaults, test_gru_seq_length,
   test_simple_rnn_batchwise, ...), collected at test time from the installed onnx package, with
   W/R/B/P turned into initializers. Oracle: the expected outputs stored in each case (onnx's
   NumPy reference helpers). Every case must pass; none is skipped.
2. Hand-built single-node graphs (one builder, `build`) with seeded random weights as
   initializers: every op x direction, with/without B, sequence_lens / initial_h / initial_c as
   graph inputs, peepholes, clip, input_forget, linear_before_reset, every activation of the spec
   with explicit activation_alpha/beta, subsets of the outputs (including "" names), layout=1, and
   opsets 7, 14 and the newest onnx knows. Oracle: onnxruntime (CPUExecutionProvider). layout=1
   has no onnxruntime kernel: the same weights in a layout=0 graph run on transposed inputs, and
   the outputs are transposed back. Where onnxruntime cannot be the oracle (see the notes below),
   a float64 NumPy implementation of the ONNX spec equations (`np_rnn`) is used instead; that
   implementation is itself checked against onnxruntime on the variants onnxruntime does run.
3. Exporter glue: torch.onnx.export (TorchScript exporter, dynamo=False; and the dynamo exporter
   when onnxscript is importable) of nn.LSTM / nn.GRU / nn.RNN wrappers and of a small
   Embedding -> LSTM -> Linear -> softmax classifier, and of the custom modules of
   tests/test_torch.py (h_n heads, packed sequences, time-major stacks); hand-built glue graphs
   (direction Split/Slice and merges, time flips). Oracle: onnxruntime on the same proto and
   feeds, every output; predict also against the torch module. Unidirectional models also
   stream: Stream.step equals predict.
4. Errors: a Loop whose body is no cell, Scan nodes and an Add between two recurrent outputs
   -> UnsupportedError naming the node; missing / extra feeds and wrong shapes -> ShapeError
   naming the input. (Unrolled cells: tests/test_unrolled_cells.py.)
5. tf2onnx exports of Keras models (committed fixtures, tests/tf2onnx): every output against
   onnxruntime, save/load, streaming, the Loop graphs tf2onnx writes for SimpleRNN,
   GRU(reset_after=False) and other activations included; a masked layer's Loop is refused by name.

Tolerance: rtol 1e-4, atol 1e-5 (the accuracy contract, tests/conftest.py).
"""
import io
import os
import re
import zlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastrnn  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
NEWEST = onnx.defs.onnx_opset_version()
ACTIVATIONS = ["Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
               "HardSigmoid", "Elu", "Softsign", "Softplus"]
USES_ALPHA = {"Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"}
USES_BETA = {"Affine", "ScaledTanh", "HardSigmoid"}

# Where onnxruntime is not the oracle, and why (found by experiment with onnxruntime 1.32.0):
# - layout=1: onnxruntime has no batch-major kernels ("Batchwise recurrent operations
#   (layout == 1) are not supported", at session creation; test_ort_has_no_layout1_kernel) ->
#   the layout=0 graph with the same weights on transposed data, outputs transposed back.
# - Everything else ran in onnxruntime and agreed with the NumPy spec implementation: all 11
#   activations in every slot, clip, input_forget, linear_before_reset, peepholes,
#   sequence_lens, initial states, opsets 7, 14 and 28 (the newest onnx 1.23 knows). So np_rnn
#   is only a stand-in: `oracle` falls back to it when onnxruntime refuses a model (e.g. a newer
#   onnx's opset that this onnxruntime does not know yet).
# - activation_alpha / activation_beta: onnxruntime hands them out in order to only the
#   activations that take an alpha (Affine, LeakyRelu, ThresholdedRelu, ScaledTanh, HardSigmoid,
#   Elu) or a beta (Affine, ScaledTanh, HardSigmoid), not one per activation
#   (test_activation_alpha_beta_order). Its defaults when they are omitted are not the spec's
#   (e.g. Affine and ScaledTanh get alpha=0, ThresholdedRelu alpha=0), so every graph here gives
#   them explicitly.


# --------------------------------------------------------------------------------------------
# helpers: graph builder, onnxruntime runner, NumPy reference, compare


def _vi(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def build(op, *, T=4, B=3, I=3, H=4, direction="forward", bias=True, peepholes=False,
          seq_lens=None, init_h=False, init_c=False, outputs=("Y", "Y_h"), layout=0, opset=14,
          seed=0, scale=0.7, **attrs):
    """A single-node `op` graph with seeded random W/R[/B/P] initializers.

    seq_lens: None, or a list of B lengths fed as graph input `sequence_lens`; init_h/init_c:
    feed `initial_h`/`initial_c` as graph inputs. outputs: the node's output list (may contain
    "" for skipped outputs). Returns (model, feeds, params), params holding every array
    (weights and feeds, in layout 0) and the attributes, for the NumPy reference."""
    rng = np.random.default_rng(seed)
    G, D = GATES[op], (2 if direction == "bidirectional" else 1)
    u = lambda *s: rng.uniform(-scale, scale, s).astype(np.float32)  # noqa: E731
    p = {"W": u(D, G * H, I), "R": u(D, G * H, H)}
    if bias:
        p["B"] = u(D, 2 * G * H)
    if peepholes:
        p["P"] = u(D, 3 * H)
    x = rng.uniform(-2, 2, (T, B, I)).astype(np.float32)
    feeds = {"X": x}
    graph_inputs = [_vi("X", [T, B, I] if layout == 0 else [B, T, I])]
    if seq_lens is not None:
        feeds["sequence_lens"] = np.asarray(seq_lens, np.int32)
        graph_inputs.append(_vi("sequence_lens", [B], TensorProto.INT32))
    for flag, name in ((init_h, "initial_h"), (init_c, "initial_c")):
        if flag:
            feeds[name] = u(D, B, H) * 2
            graph_inputs.append(_vi(name, [D, B, H] if layout == 0 else [B, D, H]))
    names = ["X", "W", "R", "B" if bias else "", "sequence_lens" if seq_lens is not None else "",
             "initial_h" if init_h else ""]
    if op == "LSTM":
        names += ["initial_c" if init_c else "", "P" if peepholes else ""]
    while names[-1] == "":
        names.pop()
    attrs = {"hidden_size": H, **attrs}
    if direction != "forward":
        attrs["direction"] = direction
    if layout:
        attrs["layout"] = layout
    node = helper.make_node(op, names, list(outputs), name=f"{op.lower()}_node", **attrs)
    shapes = {"Y": [T, D, B, H], "Y_h": [D, B, H], "Y_c": [D, B, H]}
    if layout:
        shapes = {"Y": [B, T, D, H], "Y_h": [B, D, H], "Y_c": [B, D, H]}
    graph = helper.make_graph(
        [node], f"{op}_graph", graph_inputs, [_vi(o, shapes[o]) for o in outputs if o],
        [numpy_helper.from_array(p[k], k) for k in ("W", "R", "B", "P") if k in p])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8) if opset <= 16 else model.ir_version
    onnx.checker.check_model(model, full_check=True)
    params = {**p, **feeds, "op": op, "attrs": attrs, "outputs": [o for o in outputs if o]}
    if layout:  # feeds in the graph's own (batch-major) layout
        feeds = {k: (v.swapaxes(0, 1).copy() if k != "sequence_lens" else v)
                 for k, v in feeds.items()}
    return model, feeds, params


def ort_run(model, feeds, output_names=None):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(output_names, feeds)


def fast_run(model, feeds, output_names=None):
    return fastrnn.convert(model).run(output_names, feeds)


def compare(got, want, names, what=""):
    assert isinstance(got, list), f"{what}: run() must return a list, got {type(got)}"
    assert len(got) == len(want), f"{what}: {len(got)} outputs, want {len(want)} ({names})"
    for g, w, n in zip(got, want, names):
        g = np.asarray(g)
        assert g.shape == np.shape(w), f"{what} {n}: shape {g.shape}, want {np.shape(w)}"
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"{what} {n}")


def graph_output_names(model):
    return [o.name for o in model.graph.output]


# --- float64 NumPy implementation of the ONNX spec (Operators.md, RNN / GRU / LSTM)

def _act(name, x, alpha, beta):
    if name == "Relu":
        return np.maximum(x, 0)
    if name == "Tanh":
        return np.tanh(x)
    if name == "Sigmoid":
        return 1 / (1 + np.exp(-x))
    if name == "Affine":
        return alpha * x + beta
    if name == "LeakyRelu":
        return np.where(x >= 0, x, alpha * x)
    if name == "ThresholdedRelu":
        return np.where(x > alpha, x, 0.0)
    if name == "ScaledTanh":
        return alpha * np.tanh(beta * x)
    if name == "HardSigmoid":
        return np.clip(alpha * x + beta, 0, 1)
    if name == "Elu":
        return np.where(x >= 0, x, alpha * (np.exp(x) - 1))
    if name == "Softsign":
        return x / (1 + np.abs(x))
    if name == "Softplus":
        return np.log1p(np.exp(x))
    raise ValueError(name)


DEFAULT_ACTS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}


def resolve_activations(op, attrs, ndir, positional=False):
    """[(name, alpha, beta)] for each direction. alpha/beta are consumed in order by the
    activations that use them (onnxruntime's reading, pinned by test_ort_alpha_beta_consumption),
    or one per activation when positional=True."""
    names = list(attrs.get("activations") or DEFAULT_ACTS[op] * ndir)
    alphas, betas = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    out = []
    for i, n in enumerate(names):
        if positional:
            a = alphas[i] if i < len(alphas) else np.nan
            b = betas[i] if i < len(betas) else np.nan
        else:
            a = alphas.pop(0) if n in USES_ALPHA and alphas else np.nan
            b = betas.pop(0) if n in USES_BETA and betas else np.nan
        out.append((n, a, b))
    k = len(DEFAULT_ACTS[op])
    return [out[d * k:(d + 1) * k] for d in range(ndir)]


def np_rnn(params, positional_alpha=False):
    """Outputs (in params['outputs'] order, layout 0) of the op in float64 from the spec."""
    op, at = params["op"], params["attrs"]
    x = params["X"].astype(np.float64)
    T, B, _ = x.shape
    H = at["hidden_size"]
    direction = at.get("direction", "forward")
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    clip = at.get("clip")
    acts = resolve_activations(op, at, D, positional_alpha)
    lens = params.get("sequence_lens")
    lens = np.full(B, T) if lens is None else np.asarray(lens)
    Y = np.zeros((T, D, B, H))
    Yh, Yc = np.zeros((D, B, H)), np.zeros((D, B, H))
    for d in range(D):
        W = params["W"][d].astype(np.float64)
        R = params["R"][d].astype(np.float64)
        Bv = params["B"][d].astype(np.float64) if "B" in params else np.zeros(2 * G * H)
        Wb, Rb = Bv[:G * H], Bv[G * H:]
        P = params["P"][d].astype(np.float64) if "P" in params else np.zeros(3 * H)
        f = lambda v, j: _act(acts[d][j][0], np.clip(v, -clip, clip) if clip else v,  # noqa
                              acts[d][j][1], acts[d][j][2])
        rev = direction == "reverse" or d == 1
        for b in range(B):
            h = params["initial_h"][d, b].astype(np.float64) if "initial_h" in params else np.zeros(H)
            c = params["initial_c"][d, b].astype(np.float64) if "initial_c" in params else np.zeros(H)
            L = int(lens[b])
            for t in (range(L - 1, -1, -1) if rev else range(L)):
                xw = W @ x[t, b] + Wb
                if op == "RNN":
                    h = f(xw + R @ h + Rb, 0)
                elif op == "GRU":
                    hr = R @ h
                    z = f(xw[:H] + hr[:H] + Rb[:H], 0)
                    r = f(xw[H:2 * H] + hr[H:2 * H] + Rb[H:2 * H], 0)
                    Rh = R[2 * H:]
                    if at.get("linear_before_reset", 0):
                        hh = f(xw[2 * H:] + r * (Rh @ h + Rb[2 * H:]), 1)
                    else:
                        hh = f(xw[2 * H:] + Rh @ (r * h) + Rb[2 * H:], 1)
                    h = (1 - z) * hh + z * h
                else:
                    g = xw + R @ h + Rb
                    i = f(g[:H] + P[:H] * c, 0)
                    if at.get("input_forget", 0):
                        fg = 1 - i
                    else:
                        fg = f(g[2 * H:3 * H] + P[2 * H:] * c, 0)
                    cc = f(g[3 * H:], 1)
                    c = fg * c + i * cc
                    o = f(g[H:2 * H] + P[H:2 * H] * c, 0)
                    h = o * _act(acts[d][2][0], c, acts[d][2][1], acts[d][2][2])
                Y[t, d, b] = h
            Yh[d, b], Yc[d, b] = h, c
    res = {"Y": Y, "Y_h": Yh, "Y_c": Yc}
    return [res[o] for o in params["outputs"]]


def to_layout1(outs, names):
    return [o.transpose(2, 0, 1, 3) if n == "Y" else o.swapaxes(0, 1) for o, n in zip(outs, names)]


def oracle(model, feeds, params, output_names=None):
    """onnxruntime's outputs for `model` (layout=1 graphs: via the layout=0 graph on transposed
    data, since onnxruntime has no batch-major kernels)."""
    layout = params["attrs"].get("layout", 0)
    if not layout:
        try:
            sess = ort.InferenceSession(model.SerializeToString(),
                                        providers=["CPUExecutionProvider"])
        except Exception:   # a model onnxruntime cannot load: the spec's equations instead
            want = dict(zip(params["outputs"], np_rnn(params)))
            return [want[n].astype(np.float32) for n in output_names or params["outputs"]]
        return sess.run(output_names, feeds)
    m0 = onnx.ModelProto()
    m0.CopyFrom(model)
    node = m0.graph.node[0]
    keep = [a for a in node.attribute if a.name != "layout"]
    del node.attribute[:]
    node.attribute.extend(keep)
    for vi in list(m0.graph.input) + list(m0.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.name == "Y":      # [B,T,D,H] -> [T,D,B,H]
            order = [1, 2, 0, 3]
        elif vi.name in ("X", "initial_h", "initial_c", "Y_h", "Y_c"):
            order = [1, 0, 2]
        else:
            continue
        vals = [dims[i].dim_value for i in order]
        for d, v in zip(dims, vals):
            d.dim_value = v
    feeds0 = {k: params[k] for k in feeds}
    names = output_names or graph_output_names(model)
    return to_layout1(ort_run(m0, feeds0, names), names)


def check(model, feeds, params, output_names=None, what=""):
    """fastrnn vs onnxruntime on every output (or `output_names`, in that order)."""
    want = oracle(model, feeds, params, output_names)
    got = fast_run(model, feeds, output_names)
    compare(got, want, output_names or graph_output_names(model), what)
    return got


ALL_OUTS = {"RNN": ("Y", "Y_h"), "GRU": ("Y", "Y_h"), "LSTM": ("Y", "Y_h", "Y_c")}
OPS = ["RNN", "GRU", "LSTM"]
DIRS = ["forward", "reverse", "bidirectional"]


# --------------------------------------------------------------------------------------------
# 1. onnx's backend node tests

_BACKEND_WANTED = {
    "test_lstm_defaults", "test_lstm_with_initial_bias", "test_lstm_with_peepholes",
    "test_lstm_batchwise", "test_gru_defaults", "test_gru_seq_length",
    "test_gru_with_initial_bias", "test_gru_batchwise", "test_simple_rnn_defaults",
    "test_simple_rnn_with_initial_bias", "test_rnn_seq_length", "test_simple_rnn_batchwise"}


def _backend_cases():
    """onnx's node test cases whose graph is one LSTM / GRU / RNN node, from the installed onnx.

    collect_testcases() (onnx.backend.test.case.node) imports every op's case module and runs
    all their exporters (~16 s), and its op_type filter takes a single op; so this imports just
    the rnn/lstm/gru case modules, whose class definitions register their cases through the same
    expect() into the same list collect_testcases() returns (node._NodeTestCases). If another
    caller already ran collect_testcases() in this process, the list is already populated."""
    import importlib

    import onnx.backend.test.case.node as node_cases
    for mod in ("rnn", "lstm", "gru"):
        importlib.import_module(f"onnx.backend.test.case.node.{mod}")
    cases = {}
    for c in node_cases._NodeTestCases:
        if c.model is not None and len(c.model.graph.node) == 1 and \
                c.model.graph.node[0].op_type in GATES:
            cases.setdefault(c.name, c)
    return cases


BACKEND_CASES = _backend_cases()


def test_backend_cases_collected():
    assert _BACKEND_WANTED <= set(BACKEND_CASES), sorted(_BACKEND_WANTED - set(BACKEND_CASES))


def weights_as_initializers(model, inputs):
    """A copy of `model` whose W/R/B/P graph inputs are initializers holding `inputs`' arrays;
    returns (model, the remaining feeds)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    feeds, keep = {}, []
    for vi, arr in zip(list(m.graph.input), inputs):
        if vi.name in ("X", "sequence_lens", "initial_h", "initial_c"):
            feeds[vi.name] = arr
            keep.append(vi)
        else:
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), vi.name))
    del m.graph.input[:]
    m.graph.input.extend(keep)
    onnx.checker.check_model(m)
    return m, feeds


@pytest.mark.parametrize("name", sorted(BACKEND_CASES))
def test_backend_node_tests(name):
    case = BACKEND_CASES[name]
    for inputs, outputs in case.data_sets:
        model, feeds = weights_as_initializers(case.model, inputs)
        got = fast_run(model, feeds)
        compare(got, list(outputs), graph_output_names(model), name)


# --------------------------------------------------------------------------------------------
# 2. hand-built single-node graphs vs onnxruntime


def test_numpy_reference_matches_ort():
    """The NumPy oracle agrees with onnxruntime where both run (so it can stand in for it)."""
    for op in OPS:
        for d in DIRS:
            m, f, p = build(op, direction=d, seq_lens=[4, 2, 1], init_h=True, init_c=True,
                            peepholes=op == "LSTM", outputs=ALL_OUTS[op], clip=1.5, scale=1.5)
            compare(np_rnn(p), ort_run(m, f), ALL_OUTS[op], f"{op} {d}")


@pytest.mark.parametrize("variant", ["bias", "nobias", "opset7", "opset_newest"])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("op", OPS)
def test_op_direction(op, direction, variant):
    opset = {"opset7": 7, "opset_newest": NEWEST}.get(variant, 14)
    m, f, p = build(op, direction=direction, bias=variant != "nobias", opset=opset,
                    outputs=ALL_OUTS[op], seed=zlib.crc32(f"{op}{direction}{variant}".encode()))
    check(m, f, p, what=f"{op} {direction} {variant}")


@pytest.mark.parametrize("state", ["lens", "lens_full", "init", "lens_init"])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("op", OPS)
def test_sequence_lens_and_initial_state(op, direction, state):
    lens = {"lens": [5, 2, 3], "lens_full": [5, 5, 5], "lens_init": [1, 5, 4]}.get(state)
    init = "init" in state
    m, f, p = build(op, T=5, direction=direction, seq_lens=lens, init_h=init,
                    init_c=init and op == "LSTM", outputs=ALL_OUTS[op])
    check(m, f, p, what=f"{op} {direction} {state}")


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("extra", ["plain", "state", "input_forget"])
def test_lstm_peepholes(direction, extra):
    kw = {"state": dict(seq_lens=[3, 4], init_h=True, init_c=True),
          "input_forget": dict(input_forget=1)}.get(extra, {})
    m, f, p = build("LSTM", B=2, direction=direction, peepholes=True,
                    outputs=ALL_OUTS["LSTM"], **kw)
    check(m, f, p, what=f"peepholes {direction} {extra}")


@pytest.mark.parametrize("direction", DIRS)
def test_lstm_input_forget(direction):
    m, f, p = build("LSTM", direction=direction, input_forget=1, outputs=ALL_OUTS["LSTM"],
                    init_c=True)
    check(m, f, p, what=f"input_forget {direction}")


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("op", OPS)
def test_clip(op, direction):
    # large weights and inputs so that the clip bites on most gate pre-activations
    m, f, p = build(op, direction=direction, clip=0.8, scale=2.0, init_h=True,
                    init_c=op == "LSTM", outputs=ALL_OUTS[op])
    check(m, f, p, what=f"{op} {direction} clip")


@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("direction", DIRS)
def test_gru_linear_before_reset(direction, lbr):
    m, f, p = build("GRU", direction=direction, linear_before_reset=lbr, seq_lens=[4, 1, 3],
                    init_h=True)
    check(m, f, p, what=f"GRU {direction} lbr={lbr}")


def _acts(op, a, ndir=1):
    return {"RNN": [a], "GRU": ["Sigmoid", a], "LSTM": ["Sigmoid", a, a]}[op] * ndir


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("op", OPS)
def test_activations(op, act):
    # activation_alpha/beta are always given explicitly, the same value for every activation,
    # so the test does not depend on how they are distributed (test_activation_alpha_beta_order
    # pins that down). alpha=0.6 keeps ThresholdedRelu's threshold inside the data range.
    acts = _acts(op, act, 2)
    m, f, p = build(op, direction="bidirectional", activations=acts,
                    activation_alpha=[0.6] * len(acts), activation_beta=[0.3] * len(acts),
                    outputs=ALL_OUTS[op], seed=ACTIVATIONS.index(act))
    check(m, f, p, what=f"{op} {acts}")


@pytest.mark.parametrize("op,acts,alpha,beta", [
    ("LSTM", ["Sigmoid", "LeakyRelu", "Elu"], [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]),
    ("LSTM", ["HardSigmoid", "Tanh", "Affine"], [0.1, 0.2, 0.3], [0.5, 0.6, 0.7]),
    ("LSTM", ["Sigmoid", "ScaledTanh", "Affine"], [0.9, 1.1, 0.4], [0.7, 0.5, 0.3]),
    ("GRU", ["HardSigmoid", "Affine", "Sigmoid", "ScaledTanh"], [0.3, 0.4, 0.9], [0.5, 0.1, 1.1]),
    ("RNN", ["Softsign", "LeakyRelu"], [0.4, 0.05], [0.0, 0.0]),
    ("RNN", ["Tanh", "ThresholdedRelu"], [0.5, 0.2], [0.0, 0.0]),
])
def test_activation_alpha_beta_order(op, acts, alpha, beta):
    """onnxruntime hands activation_alpha/beta out in order to only the activations that take an
    alpha (beta), not one per activation: ["Sigmoid", "LeakyRelu", "Elu"] with alpha
    [0.1, 0.2, 0.3] is LeakyRelu(0.1), Elu(0.2). The converter must match onnxruntime."""
    direction = "bidirectional" if len(acts) > len(DEFAULT_ACTS[op]) else "forward"
    m, f, p = build(op, direction=direction, activations=acts, activation_alpha=alpha,
                    activation_beta=beta, outputs=ALL_OUTS[op])
    # pin the oracle's reading: the NumPy spec implementation with compact consumption agrees
    # with onnxruntime, the one-value-per-activation reading does not
    want = ort_run(m, f)
    compare(np_rnn(p), want, ALL_OUTS[op], "compact reading")
    assert not all(np.allclose(a, b, rtol=RTOL, atol=ATOL)
                   for a, b in zip(np_rnn(p, positional_alpha=True), want))
    check(m, f, p, what=f"{op} {acts} alpha={alpha} beta={beta}")


_OUTPUT_SUBSETS = [("Y",), ("", "Y_h"), ("Y", ""), ("Y", "Y_h"), ("", "", "Y_c"), ("Y", "", "Y_c"),
                   ("", "Y_h", "Y_c"), ("Y", "Y_h", "Y_c")]


@pytest.mark.parametrize("op,outputs", [(op, o) for op in OPS for o in _OUTPUT_SUBSETS
                                        if op == "LSTM" or "Y_c" not in o],
                         ids=lambda v: v if isinstance(v, str) else "-".join(x or "_" for x in v))
def test_output_subsets(op, outputs):
    m, f, p = build(op, direction="bidirectional", outputs=outputs, seq_lens=[4, 3, 2])
    check(m, f, p, what=f"{op} {outputs}")


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("op", OPS)
def test_final_states_only(op, direction, layout):
    """A graph that outputs Y_h (and Y_c) but no Y: predict returns Y_h batch-major, directions
    side by side (B, D*H), as a module returning h_n would; a forward one streams it."""
    outputs = ("", "Y_h", "Y_c") if op == "LSTM" else ("", "Y_h")
    lens = [4, 2, 3]
    m, f, p = build(op, direction=direction, layout=layout, outputs=outputs, seq_lens=lens)
    check(m, f, p, what=f"{op} {direction} layout={layout} final only")
    conv = fastrnn.convert(m)
    assert not conv.output_is_sequence
    ref = ort_run(*build(op, direction=direction, outputs=outputs, seq_lens=lens)[:2])[0]   # [D, B, H]
    x_bm = p["X"].swapaxes(0, 1)
    got = conv.predict(x_bm, lengths=np.array(lens))
    np.testing.assert_allclose(got, ref.transpose(1, 0, 2).reshape(3, -1), rtol=RTOL, atol=ATOL)
    if direction == "forward":
        check_stream(m, x_bm, f"{op} final only")


@pytest.mark.parametrize("op", OPS)
def test_run_output_names(op):
    m, f, p = build(op, outputs=ALL_OUTS[op], seq_lens=[2, 4, 3], init_h=True)
    conv = fastrnn.convert(m)
    every = ort_run(m, f)
    by = dict(zip(ALL_OUTS[op], every))
    for names in (["Y_h"], ["Y"], list(reversed(ALL_OUTS[op])), ["Y_h", "Y"], None):
        got = conv.run(names, f)
        want = [by[n] for n in names] if names is not None else every
        compare(got, want, names or list(ALL_OUTS[op]), f"{op} run({names})")
    # repeated runs of one converted model give the same answer (no state leaks across runs)
    compare(conv.run(None, f), every, list(ALL_OUTS[op]), "second run")


@pytest.mark.parametrize("state", ["plain", "lens", "init"])
@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("op", OPS)
def test_layout1(op, direction, state):
    kw = {"plain": {}, "lens": dict(seq_lens=[3, 4, 1]),
          "init": dict(init_h=True, init_c=op == "LSTM")}[state]
    m, f, p = build(op, direction=direction, layout=1, outputs=ALL_OUTS[op], **kw)
    assert f["X"].shape == (3, 4, 3)   # batch-major
    check(m, f, p, what=f"{op} {direction} layout=1 {state}")


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("op", OPS)
def test_stream_single_node(op, layout):
    """A unidirectional graph streams: step(x[:, t]) == predict(x)[:, t] == Y[t] (batch-major)."""
    m, f, p = build(op, layout=layout, T=5, outputs=ALL_OUTS[op], clip=2.0)
    x_bm = p["X"].swapaxes(0, 1).copy()
    y = ort_run(*build(op, T=5, outputs=("Y",), clip=2.0)[:2])[0]   # [T, 1, B, H]
    check_stream(m, x_bm, f"{op} layout={layout}", y[:, 0].swapaxes(0, 1))


def test_ort_has_no_layout1_kernel():
    """Why test_layout1 goes through the layout=0 graph: pin the onnxruntime gap."""
    m, f, _ = build("GRU", layout=1)
    with pytest.raises(Exception, match="layout"):
        ort_run(m, f)


def test_dynamic_dims_and_path(tmp_path):
    """Symbolic T/B dims: other sequence lengths and batch sizes run; a path loads too."""
    m, f, p = build("LSTM", outputs=ALL_OUTS["LSTM"], direction="bidirectional", init_h=True,
                    init_c=True)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if vi.name == "X":
            dims[0].dim_param, dims[1].dim_param = "T", "N"
        else:
            dims[1].dim_param = "N"
    for vi in m.graph.output:
        del vi.type.tensor_type.shape.dim[:]
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    conv = fastrnn.convert(str(path))
    rng = np.random.default_rng(5)
    for T, B in ((4, 3), (1, 1), (5, 2)):
        feeds = {"X": rng.standard_normal((T, B, 3)).astype(np.float32),
                 "initial_h": rng.standard_normal((2, B, 4)).astype(np.float32),
                 "initial_c": rng.standard_normal((2, B, 4)).astype(np.float32)}
        compare(conv.run(None, feeds), ort_run(m, feeds), list(ALL_OUTS["LSTM"]), f"T={T} B={B}")


# --------------------------------------------------------------------------------------------
# 3. exporter glue: torch.onnx.export


def _torch():
    return pytest.importorskip("torch")


def _rnn_wrapper(cell, *, batch_first, bidirectional, num_layers, with_h0, I=3, H=5):
    torch = _torch()
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[cell]
    kw = {"nonlinearity": "relu"} if cell == "RNN" else {}

    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = cls(I, H, num_layers=num_layers, batch_first=batch_first,
                           bidirectional=bidirectional, **kw)

        def forward(self, x, *state):
            if not state:
                out, st = self.rnn(x)
            elif cell == "LSTM":
                out, st = self.rnn(x, state)
            else:
                out, st = self.rnn(x, state[0])
            return (out, *st) if cell == "LSTM" else (out, st)

    torch.manual_seed(zlib.crc32(repr((cell, batch_first, bidirectional, num_layers, with_h0)).encode()))
    return Wrap().eval()


def torch_export(module, args, input_names, output_names, *, dynamo=False, batch_axes=None):
    """torch.onnx.export to a ModelProto. batch_axes: {input name: its batch axis}, made dynamic
    (TorchScript exporter; the dynamo exporter keeps the example's shapes)."""
    torch = _torch()
    import warnings
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if dynamo:
            ep = torch.onnx.export(module, args, dynamo=True, input_names=input_names,
                                   output_names=output_names, verbose=False)
            return ep.model_proto
        f = io.BytesIO()
        torch.onnx.export(module, args, f, dynamo=False, opset_version=14,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes={n: {ax: "batch"} for n, ax in (batch_axes or {}).items()})
        return onnx.load_from_string(f.getvalue())


def check_exported(proto, feeds, what):
    want = ort_run(proto, feeds)
    got = fast_run(proto, feeds)
    compare(got, want, graph_output_names(proto), what)


def check_stream(proto, x_bm, what, want_bm=None):
    """Streaming step by step equals predict on batch-major x (per-step outputs), or for a
    model that ends on its last step, predict on the prefix. want_bm: what predict must give
    (onnxruntime's first output, made batch-major)."""
    conv = fastrnn.convert(proto)
    B, T = x_bm.shape[:2]
    y = conv.predict(x_bm)
    if isinstance(y, (list, tuple)):
        y = y[0]
    if want_bm is not None:
        np.testing.assert_allclose(y, want_bm, rtol=RTOL, atol=ATOL, err_msg=f"{what} predict")
    s = conv.stream(B)
    for t in range(T):
        yt = s.step(x_bm[:, t])
        want = y[:, t] if y.ndim == 3 else conv.predict(x_bm[:, :t + 1])
        np.testing.assert_allclose(yt, want, rtol=RTOL, atol=ATOL, err_msg=f"{what} step {t}")


TORCH_CONFIGS = [  # (batch_first, bidirectional, num_layers, with_h0)
    (True, False, 1, False), (False, False, 2, False), (False, False, 2, True),
    (True, True, 2, True), (False, True, 1, False)]


@pytest.mark.parametrize("cfg", TORCH_CONFIGS,
                         ids=lambda c: f"bf{int(c[0])}-bi{int(c[1])}-L{c[2]}-h0{int(c[3])}")
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_torch_export(cell, cfg):
    torch = _torch()
    batch_first, bidirectional, num_layers, with_h0 = cfg
    B, T, I, H = 2, 5, 3, 5
    mod = _rnn_wrapper(cell, batch_first=batch_first, bidirectional=bidirectional,
                       num_layers=num_layers, with_h0=with_h0, I=I, H=H)
    g = torch.Generator().manual_seed(1)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), generator=g)
    args, names = [x], ["x"]
    if with_h0:
        nd = num_layers * (2 if bidirectional else 1)
        args.append(torch.randn(nd, B, H, generator=g))
        names.append("h0")
        if cell == "LSTM":
            args.append(torch.randn(nd, B, H, generator=g))
            names.append("c0")
    outs = ["out", "h_n", "c_n"] if cell == "LSTM" else ["out", "h_n"]
    proto = torch_export(mod, tuple(args), names, outs)
    feeds = {n: a.numpy() for n, a in zip(names, args)}
    what = f"{cell} {cfg}"
    check_exported(proto, feeds, what)
    # onnxruntime and torch agree too (sanity of the oracle)
    with torch.no_grad():
        ref = mod(*args)
    np.testing.assert_allclose(ort_run(proto, feeds)[0], ref[0].numpy(), rtol=1e-4, atol=1e-5)
    if not bidirectional and not with_h0:
        bm = (lambda a: a) if batch_first else (lambda a: a.swapaxes(0, 1).copy())
        check_stream(proto, bm(feeds["x"]), what, bm(ort_run(proto, feeds)[0]))


def _classifier():
    torch = _torch()

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(30, 8)
            self.lstm = torch.nn.LSTM(8, 16, batch_first=True)
            self.fc = torch.nn.Linear(16, 3)

        def forward(self, x):
            out, _ = self.lstm(self.emb(x))
            return torch.softmax(self.fc(out[:, -1]), dim=-1)

    torch.manual_seed(3)
    return Classifier().eval()


def test_torch_export_classifier():
    torch = _torch()
    ids = torch.randint(0, 30, (3, 5), generator=torch.Generator().manual_seed(2))
    proto = torch_export(_classifier(), (ids,), ["ids"], ["probs"])
    feeds = {"ids": ids.numpy()}
    check_exported(proto, feeds, "classifier")
    check_stream(proto, feeds["ids"], "classifier", ort_run(proto, feeds)[0])


# The dynamo exporter (torch.onnx.export(..., dynamo=True)) needs onnxscript, which torch does
# not depend on: without it the export raises ModuleNotFoundError. onnxscript is on PyPI
# (0.7.2 with onnx-ir 1.1.0 installs cleanly next to onnx 1.23.2 / torch 2.13); with it the
# export works here, but costs ~7 s for the first export in a process and ~2-3 s after, so only
# two models go through it. The test extras install onnxscript; without it these tests skip.

def test_torch_dynamo_export_lstm():
    torch = _torch()
    pytest.importorskip("onnxscript")
    mod = _rnn_wrapper("LSTM", batch_first=True, bidirectional=True, num_layers=2, with_h0=True)
    g = torch.Generator().manual_seed(4)
    x, h0, c0 = torch.randn(2, 4, 3, generator=g), torch.randn(4, 2, 5, generator=g), \
        torch.randn(4, 2, 5, generator=g)
    proto = torch_export(mod, (x, h0, c0), ["x", "h0", "c0"], ["out", "h_n", "c_n"], dynamo=True)
    check_exported(proto, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()}, "dynamo LSTM")


def test_torch_dynamo_export_classifier():
    torch = _torch()
    pytest.importorskip("onnxscript")
    ids = torch.randint(0, 30, (3, 5), generator=torch.Generator().manual_seed(2))
    proto = torch_export(_classifier(), (ids,), ["ids"], ["probs"], dynamo=True)
    feeds = {"ids": ids.numpy()}
    check_exported(proto, feeds, "dynamo classifier")
    check_stream(proto, feeds["ids"], "dynamo classifier", ort_run(proto, feeds)[0])


# The custom modules of the PyTorch converter's tests (tests/test_torch.py), exported by both
# exporters. torch cannot export some of them: PackedBi (h_n of a packed bidirectional LSTM:
# the TorchScript exporter fails inside torch) and, with the dynamo exporter, every module that
# packs (torch.export refuses pack_padded_sequence). The dynamo exporter unrolls
# nn.RNN(nonlinearity="relu") into per-step MatMul/Relu nodes, which fastrnn refuses.
TORCH_CUSTOM_EXPORTS = [(n, d) for n in ("bi_last", "emb_lstm_hn", "emb_lstm_last", "packed_last", "packed_tagger",
                                         "packed_tagger_t", "regressor", "tagger", "time_major_seq")
                        for d in (False, True) if not (d and n.startswith("packed"))]


@pytest.mark.parametrize("name,dynamo", TORCH_CUSTOM_EXPORTS,
                         ids=lambda v: v if isinstance(v, str) else ("dynamo" if v else "ts"))
def test_torch_custom_module_exports(name, dynamo):
    """Every output equals onnxruntime's; predict equals the torch module itself (where the
    export keeps torch's semantics: not after pad_packed_sequence, whose export returns x's
    length instead of max(lengths)); TorchScript exports also run at another batch size."""
    _torch()
    if dynamo:
        pytest.importorskip("onnxscript")
    from test_torch import _custom_case, _torch_custom
    m, x, lens = _custom_case(name)
    if lens is not None:
        lens[0] = x.shape[1]               # one full row: torch's max(lengths) == x's length
    want_torch, args = _torch_custom(m, name, x, lens)
    names = ["x", "lengths"][:len(args)]
    batch_axes = {"x": 1 if name == "time_major_seq" else 0, "lengths": 0}
    if dynamo and name == "time_major_seq":
        with pytest.raises(fastrnn.UnsupportedError, match=r"\(Slice, node"):
            fastrnn.convert(torch_export(m, args, names, None, dynamo=True))
        return
    proto = torch_export(m, args, names, None, dynamo=dynamo, batch_axes={n: batch_axes[n] for n in names})
    feeds = {i.name: a.numpy() for i, a in zip(proto.graph.input, args)}
    check_exported(proto, feeds, f"{name} {'dynamo' if dynamo else 'ts'}")
    conv = fastrnn.convert(proto)
    y = conv.predict(x, lengths=lens)
    np.testing.assert_allclose(y[0] if isinstance(y, list) else y, want_torch, rtol=RTOL, atol=ATOL,
                               err_msg=f"{name}: predict vs the torch module")
    if not dynamo:
        sub = {k: (v[:, :2] if k == "x" and name == "time_major_seq" else v[:2]) for k, v in feeds.items()}
        check_exported(proto, sub, f"{name} batch 2")


def test_torch_packed_export_row_order_is_checked():
    """The sort of a packed export must be undone before an output: a graph that drops the
    restoring Gather, or sorts twice, is refused."""
    _torch()
    from test_torch import _custom_case, _torch_custom
    m, x, lens = _custom_case("packed_tagger")
    _, args = _torch_custom(m, "packed_tagger", x, lens)
    proto = torch_export(m, args, ["x", "lengths"], None)
    nodes = list(proto.graph.node)
    scatter = next(n for n in nodes if n.op_type == "ScatterElements")
    restore = next(n for n in nodes if n.op_type == "Gather" and n.input[1] == scatter.output[0])
    fastrnn.convert(proto)                                   # as exported: converts
    twice = onnx.ModelProto()
    twice.CopyFrom(proto)
    g = next(n for n in twice.graph.node if n.output[0] == restore.output[0])
    g.input[1] = scatter.input[1]                            # the sort again instead of its inverse
    with pytest.raises(fastrnn.UnsupportedError, match="permutation twice"):
        fastrnn.convert(twice)
    kept = onnx.ModelProto()
    kept.CopyFrom(proto)
    g = next(n for n in kept.graph.node if n.output[0] == restore.output[0])
    g.op_type, g.input[:] = "Identity", [g.input[0]]
    del g.attribute[:]
    with pytest.raises(fastrnn.UnsupportedError, match="sorted by length"):
        fastrnn.convert(kept)


# --- hand-built glue around one recurrent node (patterns of tf2onnx and torch exports) ---------

INT64_MIN = -2**63


def glue_graph(op, glue, outputs, *, direction="bidirectional", T=5, B=3, I=3, H=4, lens=None, seed=0,
               pre=()):
    """X (T, B, I) [+ sequence_lens] -> `pre` nodes -> `op` node on X (or on the output of the last
    `pre` node), outputs Y, Y_h -> `glue` nodes -> `outputs` (names; shapes left to
    onnxruntime). glue, pre: (op_type, inputs, outputs, attrs) tuples; constant inputs are lists
    of ints, made initializers named c_<values>."""
    rng = np.random.default_rng(seed)
    D, G = (2 if direction == "bidirectional" else 1), GATES[op]
    inits = {"W": rng.uniform(-0.7, 0.7, (D, G * H, I)), "R": rng.uniform(-0.7, 0.7, (D, G * H, H)),
             "B": rng.uniform(-0.7, 0.7, (D, 2 * G * H))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    x_in = pre[-1][2][0] if pre else "X"
    rec = helper.make_node(op, [x_in, "W", "R", "B", "sequence_lens" if lens else ""], ["Y", "Y_h"],
                           hidden_size=H, direction=direction)
    nodes, consts = [], {}
    for i, node in enumerate(list(pre) + [None] + list(glue)):
        if node is None:
            nodes.append(rec)
            continue
        typ, ins, outs, attrs = node
        names = []
        for v in ins:
            if isinstance(v, str):
                names.append(v)
            else:
                name = "c_" + "_".join(map(str, v)).replace("-", "m")
                consts[name] = np.array(v, np.int64)
                names.append(name)
        nodes.append(helper.make_node(typ, names, outs, name=f"glue{i}", **attrs))
    inits += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    ins = [_vi("X", [T, B, I])] + ([_vi("sequence_lens", [B], TensorProto.INT32)] if lens else [])
    graph = helper.make_graph(nodes, "g", ins, [helper.make_empty_tensor_value_info(o) for o in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    feeds = {"X": rng.uniform(-2, 2, (T, B, I)).astype(np.float32)}
    if lens:
        feeds["sequence_lens"] = np.array(lens, np.int32)
    return model, feeds


_SPLIT_DIRS = [("Split", ["Y", [1, 1]], ["yf4", "yb4"], {"axis": 1}),
               ("Squeeze", ["yf4", [1]], ["yf"], {}), ("Squeeze", ["yb4", [1]], ["yb"], {})]
_SLICE_DIRS = [("Slice", ["Y", [0], [1], [1]], ["yf4"], {}), ("Slice", ["Y", [1], [2], [1]], ["yb4"], {}),
               ("Squeeze", ["yf4", [1]], ["yf"], {}), ("Squeeze", ["yb4", [1]], ["yb"], {})]
_FINAL_STEPS = [("Gather", ["yf", [-1][0:1]], ["lf1"], {"axis": 0}), ("Gather", ["yb", [0]], ["lb1"], {"axis": 0}),
                ("Squeeze", ["lf1", [0]], ["lf"], {}), ("Squeeze", ["lb1", [0]], ["lb"], {})]
GLUE_CASES = {
    # directions apart, then merged as Keras merge_mode, per step
    "split_concat": (_SPLIT_DIRS + [("Concat", ["yf", "yb"], ["out"], {"axis": 2})], ["out"]),
    "slice_sum": (_SLICE_DIRS + [("Add", ["yf", "yb"], ["out"], {})], ["out"]),
    "slice_ave": (_SLICE_DIRS + [("Add", ["yf", "yb"], ["s"], {}), ("Mul", ["s", "half"], ["out"], {})], ["out"]),
    "split_mul": (_SPLIT_DIRS + [("Mul", ["yf", "yb"], ["out"], {})], ["out"]),
    # each direction's final step, side by side / added
    "final_steps_concat": (_SLICE_DIRS + _FINAL_STEPS + [("Concat", ["lf", "lb"], ["out"], {"axis": 1})], ["out"]),
    "final_steps_sum": (_SPLIT_DIRS + _FINAL_STEPS + [("Add", ["lb", "lf"], ["out"], {})], ["out"]),
    # Y_h split per direction, concatenated on features (a unit axis left in front)
    "split_hn": ([("Split", ["Y_h"], ["hf", "hb"], {"axis": 0}),
                  ("Concat", ["hf", "hb"], ["out"], {"axis": 2})], ["out", "Y_h"]),
}


@pytest.mark.parametrize("lens", [None, [5, 2, 4]], ids=["full", "lens"])
@pytest.mark.parametrize("case", sorted(GLUE_CASES))
@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_direction_glue(op, case, lens):
    glue, outputs = GLUE_CASES[case]
    model, feeds = glue_graph(op, glue, outputs, lens=lens)
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    if lens and case.startswith("final_steps"):
        # under sequence_lens the forward direction's step T-1 is 0 for short rows, not its final state
        with pytest.raises(fastrnn.UnsupportedError, match="final step"):
            fastrnn.convert(model)
        return
    check_exported(model, feeds, f"{op} {case} lens={lens}")


@pytest.mark.parametrize("op", OPS)
def test_time_flip_glue(op):
    """torch.flip / Keras go_backwards as a Slice with step -1: a forward node over reversed
    time is fastrnn's reverse direction; flipping Y back gives it in time order, and its last
    step (in reversed order) is the final state."""
    pre = [("Slice", ["X", [-1], [INT64_MIN], [0], [-1]], ["Xr"], {})]
    squeeze = [("Squeeze", ["Y", [1]], ["y"], {})]
    for glue, outputs in (([("Slice", ["y", [-1], [INT64_MIN], [0], [-1]], ["out"], {})], ["out", "Y_h"]),
                          ([("Gather", ["y", [-1][0:1]], ["l1"], {"axis": 0}), ("Squeeze", ["l1", [0]], ["out"], {})],
                           ["out"])):
        model, feeds = glue_graph(op, squeeze + glue, outputs, direction="forward", pre=pre)
        check_exported(model, feeds, f"{op} flipped -> {outputs}")
        conv = fastrnn.convert(model)
        assert conv.layers[0].direction == "reverse"
    # the node's output still in reversed time order is not something fastrnn produces
    model, _ = glue_graph(op, squeeze, ["y"], direction="forward", pre=pre)
    with pytest.raises(fastrnn.UnsupportedError, match="reversed time order"):
        fastrnn.convert(model)


# --------------------------------------------------------------------------------------------
# 4. errors


def _loop_model():
    """X -> Loop (body: identity on a carried tensor) -> the loop's output: a loop in the graph."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [_vi("iter", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL),
         _vi("v_in", [4, 2, 3])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out", [4, 2, 3])])
    node = helper.make_node("Loop", ["trip", "", "X"], ["Y"], name="my_loop", body=body)
    graph = helper.make_graph(
        [node], "g", [_vi("X", [4, 2, 3])], [_vi("Y", [4, 2, 3])],
        [numpy_helper.from_array(np.array(3, np.int64), "trip")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _scan_model():
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
         helper.make_node("Identity", ["s_out"], ["y_t"])],
        "body", [_vi("s_in", [2, 3]), _vi("x_t", [2, 3])], [_vi("s_out", [2, 3]), _vi("y_t", [2, 3])])
    node = helper.make_node("Scan", ["S0", "X"], ["S", "Y"], name="my_scan", body=body,
                            num_scan_inputs=1)
    graph = helper.make_graph(
        [node], "g", [_vi("X", [4, 2, 3])], [_vi("S", [2, 3]), _vi("Y", [4, 2, 3])],
        [numpy_helper.from_array(np.zeros((2, 3), np.float32), "S0")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _add_of_two_rnns():
    """Two RNNs on X whose Y outputs are added: recurrences side by side (the first carries X
    past itself, tests/test_side_by_side.py), summed per step."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, s).astype(np.float32), n)
             for n, s in (("W1", (1, 4, 3)), ("R1", (1, 4, 4)), ("W2", (1, 4, 3)),
                          ("R2", (1, 4, 4)))]
    nodes = [helper.make_node("RNN", ["X", "W1", "R1"], ["Y1"], name="rnn_a", hidden_size=4),
             helper.make_node("RNN", ["X", "W2", "R2"], ["Y2"], name="rnn_b", hidden_size=4),
             helper.make_node("Add", ["Y1", "Y2"], ["Y"], name="sum_of_rnns")]
    graph = helper.make_graph(nodes, "g", [_vi("X", [4, 2, 3])], [_vi("Y", [4, 1, 2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_an_add_of_two_rnns_over_one_input_converts():
    model = _add_of_two_rnns()
    f = fastrnn.convert(model)
    assert [type(l).__name__ for l in f.layers][:2] == ["Recurrent", "Recurrent"] and f.layers[0].carry
    x = np.random.default_rng(1).normal(size=(4, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(f.run(None, {"X": x})[0], ort_run(model, {"X": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("make,node_names", [
    (_loop_model, ["my_loop"]), (_scan_model, ["my_scan"])], ids=["Loop", "Scan"])
def test_unsupported_graphs(make, node_names):
    model = make()
    onnx.checker.check_model(model)
    feeds = {"X": np.ones((4, 2, 3), np.float32)}
    ort_run(model, feeds)   # a valid model: onnxruntime runs it
    with pytest.raises(fastrnn.UnsupportedError) as e:
        fastrnn.convert(model)
    msg = str(e.value)
    assert any(repr(n) in msg or n in msg for n in node_names), msg


_SQ = [("Squeeze", ["Y", [1]], ["y"], {})]
_DENSE = _SQ + [("MatMul", ["y", "Wd"], ["mm"], {}), ("Add", ["mm", "bd"], ["o"], {})]


@pytest.mark.parametrize("glue,outputs,direction,match", [
    (_DENSE, ["mm", "o"], "forward", "fusing"),                                  # MatMul and MatMul + Add
    (_DENSE + [("Sigmoid", ["o"], ["s"], {})], ["o", "s"], "forward", "fusing"),  # Dense and its activation
    (_DENSE + [("Relu", ["mm"], ["s"], {})], ["o", "s"], "forward", "fusing"),   # a second reader of MatMul
    ([("Slice", ["Y", [0], [1], [1]], ["f"], {}), ("Slice", ["Y", [1], [2], [1]], ["b"], {}),
      ("Add", ["f", "b"], ["sum"], {}), ("Mul", ["sum", "half"], ["ave"], {})], ["sum", "ave"],
     "bidirectional", "fusing"),                                                 # sum and ave of directions
], ids=["bias", "activation", "second-reader", "sum-and-ave"])
def test_values_changed_by_fusion_are_refused(glue, outputs, direction, match):
    """fastrnn fuses a bias, an activation or `* 0.5` into the layer before it; a graph that also
    reads or outputs the value before the fusion would get the fused numbers: it is refused.
    (onnxruntime runs these graphs: they are valid.)"""
    model, feeds = glue_graph("LSTM", glue, outputs, direction=direction)
    model.graph.initializer.extend([numpy_helper.from_array(np.ones((8 if direction == "bidirectional" else 4, 2),
                                                                    np.float32), "Wd"),
                                    numpy_helper.from_array(np.ones(2, np.float32), "bd"),
                                    numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    ort_run(model, feeds)
    with pytest.raises(fastrnn.UnsupportedError, match=match):
        fastrnn.convert(model)


def test_unrolled_graph_refused_with_advice():
    """A recurrence unrolled into per-step nodes (as Keras 3's ONNX export writes it): the graph
    has no recurrent node, and the refusal says so and what to convert instead."""
    rng = np.random.default_rng(0)
    W, R = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(4, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["X", "t0"], ["x0"], axis=1),
             helper.make_node("MatMul", ["x0", "W"], ["p0"]), helper.make_node("Tanh", ["p0"], ["h0"]),
             helper.make_node("Gather", ["X", "t1"], ["x1"], axis=1),
             helper.make_node("MatMul", ["x1", "W"], ["p1"]), helper.make_node("MatMul", ["h0", "R"], ["q1"]),
             helper.make_node("Add", ["p1", "q1"], ["s1"]), helper.make_node("Tanh", ["s1"], ["H"])]
    inits = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"),
             numpy_helper.from_array(np.array(0, np.int64), "t0"), numpy_helper.from_array(np.array(1, np.int64), "t1")]
    model = helper.make_model(helper.make_graph(nodes, "g", [_vi("X", [2, 2, 3])], [_vi("H", [2, 4])], inits),
                              opset_imports=[helper.make_opsetid("", 14)])
    ort_run(model, {"X": np.ones((2, 2, 3), np.float32)})
    with pytest.raises(fastrnn.UnsupportedError, match=r"no LSTM, GRU or RNN node.*\.keras file"):
        fastrnn.convert(model)


def test_unsupported_error_is_a_fastrnn_error():
    assert issubclass(fastrnn.UnsupportedError, fastrnn.FastRNNError)
    assert issubclass(fastrnn.ShapeError, fastrnn.FastRNNError)


def _state_model():
    return build("LSTM", seq_lens=[4, 2, 3], init_h=True, init_c=True,
                 outputs=ALL_OUTS["LSTM"])


@pytest.mark.parametrize("bad,name", [
    ("missing:X", "X"), ("missing:sequence_lens", "sequence_lens"),
    ("missing:initial_c", "initial_c"), ("extra:bogus", "bogus"),
    ("shape:X", "X"), ("rank:X", "X"), ("shape:initial_h", "initial_h"),
    ("shape:sequence_lens", "sequence_lens")])
def test_feed_errors(bad, name):
    m, feeds, _ = _state_model()
    conv = fastrnn.convert(m)
    kind, key = bad.split(":")
    feeds = dict(feeds)
    if kind == "missing":
        del feeds[key]
    elif kind == "extra":
        feeds[key] = np.zeros((4, 3, 3), np.float32)
    elif kind == "shape":
        a = feeds[key]
        feeds[key] = np.zeros(a.shape[:-1] + (a.shape[-1] + 1,), a.dtype)
    else:
        feeds[key] = feeds[key][0]
    with pytest.raises(fastrnn.ShapeError, match=name):
        conv.run(None, feeds)


def test_run_unknown_output_name():
    m, feeds, _ = _state_model()
    with pytest.raises(fastrnn.FastRNNError, match="nope"):
        fastrnn.convert(m).run(["nope"], feeds)


def _add_of_lstm_states():
    """Y_h + Y_c of one LSTM: elementwise math between two recurrent outputs."""
    m, _, _ = build("LSTM", outputs=("", "Y_h", "Y_c"))
    g = m.graph
    g.node.append(helper.make_node("Add", ["Y_h", "Y_c"], ["S"], name="h_plus_c"))
    del g.output[:]
    g.output.append(_vi("S", [1, 3, 4]))
    return m


def test_unsupported_add_of_states():
    model = _add_of_lstm_states()
    onnx.checker.check_model(model)
    ort_run(model, {"X": np.ones((4, 3, 3), np.float32)})
    with pytest.raises(fastrnn.UnsupportedError, match="h_plus_c"):
        fastrnn.convert(model)


def test_constant_nonzero_initial_state():
    """initial_h as a non-zero initializer: either imported right or refused, never wrong."""
    m, f, p = build("GRU", direction="bidirectional")
    h0 = np.random.default_rng(1).uniform(-1, 1, (2, 3, 4)).astype(np.float32)
    m.graph.initializer.append(numpy_helper.from_array(h0, "initial_h"))
    node = m.graph.node[0]
    node.input.extend(["", "initial_h"])
    try:
        conv = fastrnn.convert(m)
    except fastrnn.UnsupportedError:
        return
    compare(conv.run(None, f), ort_run(m, f), graph_output_names(m), "constant initial_h")


def _random_config(rng):
    op = ["RNN", "GRU", "LSTM"][rng.integers(3)]
    direction = DIRS[rng.integers(3)]
    D = 2 if direction == "bidirectional" else 1
    T, B, I, H = (int(rng.integers(1, n + 1)) for n in (5, 3, 4, 5))
    kw = dict(T=T, B=B, I=I, H=H, direction=direction, bias=bool(rng.integers(2)),
              layout=int(rng.integers(2)), opset=[7, 14, NEWEST][rng.integers(3)],
              seed=int(rng.integers(1 << 30)), scale=float(rng.uniform(0.3, 1.5)))
    if kw["opset"] == 7:
        kw["layout"] = 0
    if rng.integers(2):
        kw["seq_lens"] = [int(v) for v in rng.integers(1, T + 1, B)]
    kw["init_h"] = bool(rng.integers(2))
    if op == "LSTM":
        kw["init_c"] = bool(rng.integers(2))
        kw["peepholes"] = bool(rng.integers(2))
        if rng.integers(3) == 0:
            kw["input_forget"] = 1
    if op == "GRU":
        kw["linear_before_reset"] = int(rng.integers(2))
    if rng.integers(3) == 0:
        kw["clip"] = float(rng.uniform(0.5, 3))
    if rng.integers(2):
        k = len(DEFAULT_ACTS[op])
        acts = [str(a) for a in rng.choice(ACTIVATIONS, k * D)]
        if op != "RNN":   # keep the gates' activations squashing, so the state stays bounded
            for d in range(D):
                acts[d * k] = ["Sigmoid", "HardSigmoid"][rng.integers(2)]
        kw["activations"] = acts
        kw["activation_alpha"] = [round(float(v), 3) for v in rng.uniform(0.1, 1.0, k * D)]
        kw["activation_beta"] = [round(float(v), 3) for v in rng.uniform(0.1, 1.0, k * D)]
    outs = list(ALL_OUTS[op])
    keep = [o if rng.integers(3) else "" for o in outs]
    if not any(keep):
        keep[0] = outs[0]
    while keep[-1] == "":
        keep.pop()
    kw["outputs"] = tuple(keep)
    return op, kw


@pytest.mark.parametrize("i", range(40))
def test_random_configs(i):
    """Seeded random combinations of every attribute / input / output option at once."""
    op, kw = _random_config(np.random.default_rng(1000 + i))
    m, f, p = build(op, **kw)
    check(m, f, p, what=f"{op} {kw}")


# --- tf2onnx exports of Keras models (committed fixtures, tests/tf2onnx/make_fixtures.py) --------

_TF2ONNX = os.path.join(os.path.dirname(__file__), "tf2onnx")


# name -> (unidirectional: streams too, the refusal's reason or None)
TF2ONNX = {
    "lstm_seq": (True, None), "gru_last": (True, None), "emb_lstm_sigmoid": (True, None),
    "bilstm_dense": (False, None), "stacked_gru": (True, None), "bigru_seq_dense": (False, None),
    "bilstm_sum": (False, None), "bilstm_ave_last": (False, None), "bilstm_mul_last": (False, None),
    "lstm_backwards": (False, None), "stacked_lstm_relu": (True, None), "lstm_states": (True, None),
    "bigru_bilstm": (False, None), "lstm_timedist": (True, None),
    # tf2onnx writes Loop graphs for these: unrolled by the graph frontend, each step's
    # arithmetic read as a cell (converters/cells.py); a masked layer's Loop is still refused
    "gru_v1_last": (True, None), "simplernn": (True, None), "gru_hard": (True, None),
    "emb_mask_lstm": (True, "(Loop, node"),
    "lstm_backwards_seq": (False, "reversed time order"),
}


def _tf2onnx_x(name, B, seed=7):
    rng = np.random.default_rng(seed)
    if name.startswith("emb"):
        return rng.integers(0, 30, (B, 7)).astype(np.int32)
    return rng.normal(size=(B, 7, 4)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(TF2ONNX))
def test_tf2onnx_keras_exports(name, tmp_path):
    """Every output of run() equals onnxruntime's, for two batch sizes; predict gives the
    first output; the saved model runs the same; unidirectional models stream."""
    path = os.path.join(_TF2ONNX, name + ".onnx")
    uni, refused = TF2ONNX[name]
    if refused:
        with pytest.raises(fastrnn.UnsupportedError, match=re.escape(refused)):
            fastrnn.convert(path)
        return
    conv = fastrnn.convert(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for B in (3, 1):
        x = _tf2onnx_x(name, B)
        want = sess.run(None, {"x": x})
        got = conv.run(None, {"x": x})
        assert len(got) == len(want)
        for g, w, o in zip(got, want, sess.get_outputs()):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"{name} {o.name} B={B}")
    y = conv.predict(x)
    np.testing.assert_allclose(y[0] if isinstance(y, (list, tuple)) else y, want[0], rtol=RTOL, atol=ATOL)
    conv.save(tmp_path / "m.frnn")
    again = fastrnn.load(tmp_path / "m.frnn").run(None, {"x": x})
    for g, w in zip(again, got):
        np.testing.assert_array_equal(g, w)
    if uni:
        check_stream(path, _tf2onnx_x(name, 2, seed=8), name)


def test_a_last_step_nothing_reads_does_not_cut_the_sequence():
    """Gather(y, [-1]) whose result no output reads, beside a MatMul on every step: the graph
    frontend takes the last step without cutting the layer (passes.cut_early cuts only when
    nothing needs the other steps), so the per-step output is right."""
    glue = _SQ + [("Gather", ["y", [-1][0:1]], ["l"], {"axis": 0}), ("MatMul", ["y", "Wd"], ["o"], {})]
    model, feeds = glue_graph("LSTM", glue, ["o"], direction="forward")
    model.graph.initializer.extend([numpy_helper.from_array(
        np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32), "Wd")])
    want = ort_run(model, feeds)
    got = fastrnn.convert(model).run(None, feeds)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
