"""ONNX importer: graphs built around the LSTM / GRU / RNN operators -> fastrnn ir layers + the
graph's own inputs and outputs (for Model.run, onnxruntime's InferenceSession.run).

The graph is interpreted node by node with abstract values, as the PyTorch importer interprets
forward (converters/torch.py): each tensor is a constant (initializers, Constant, and anything
computed from constants only, folded with NumPy), a pipeline tensor (the model's data, with a
label per axis: B batch, T time, D direction, F features, 1 a unit axis; the input's own x0/x1
until a recurrent node says which is batch and which is time), the final states of recurrent
nodes (Y_h / Y_c, stacked as torch's exporter stacks layers), a shape vector of such labels
(Shape -> Gather -> Concat, from which ConstantOfShape builds zero initial states), or the
sequence_lens input. Ops that add a layer must read the current end of the pipeline; anything
that would branch it, and any op not listed in docs/onnx.md, raises UnsupportedError naming the
node (name, op type, index).

Framework facts used (canonical layout is torch's, DESIGN.md section 2):
- W [D, G*H, I], R [D, G*H, H], B [D, 2*G*H] = [Wb, Rb], P [D, 3*H]; direction 0 forward.
- gate orders: ONNX LSTM i,o,f,c -> torch i,f,g,o; ONNX GRU z,r,h -> torch r,z,n; P i,o,f ->
  ir i,f,o. Wb and Rb are kept apart (b_ih, b_hh), as GRU's n gate needs them apart.
- GRU linear_before_reset defaults to 0 (ir linear_before_reset=False); torch exports 1.
- activations: per direction [f] (RNN), [f, g] (GRU), [f, g, h] (LSTM); activation_alpha and
  activation_beta are consumed in order by the activations that take them (see _activations).
- layout 0: X [T, B, I], Y [T, D, B, H], Y_h/Y_c [D, B, H]; layout 1 (opset 14+): X [B, T, I],
  Y [B, T, D, H], Y_h/Y_c [B, D, H].
- sequence_lens: outputs past a row's length are 0; Y_h is the state at its last valid step;
  the reverse direction starts there (fastrnn's lengths semantics, DESIGN.md convention 4).
"""
from __future__ import annotations

import copy
import os

import numpy as np

from fastrnn import ir
from fastrnn.errors import FastRNNError, ModelFormatError, UnsupportedError

from . import require

# ONNX activation name -> (ir kind, takes alpha, takes beta, spec default alpha, default beta)
ACTS = {"Relu": ("relu", False, False, 0, 0), "Tanh": ("tanh", False, False, 0, 0),
        "Sigmoid": ("sigmoid", False, False, 0, 0), "Affine": ("affine", True, True, 1.0, 0.0),
        "LeakyRelu": ("leaky_relu", True, False, 0.01, 0), "ThresholdedRelu": ("thresholded_relu", True, False, 1.0, 0),
        "ScaledTanh": ("scaled_tanh", True, True, 1.0, 1.0), "HardSigmoid": ("hard_sigmoid", True, True, 0.2, 0.5),
        "Elu": ("elu", True, False, 1.0, 0), "Softsign": ("softsign", False, False, 0, 0),
        "Softplus": ("softplus", False, False, 0, 0)}
CELLS = {"RNN": ("rnn", 1, ["Tanh"]), "GRU": ("gru", 3, ["Sigmoid", "Tanh"]),
         "LSTM": ("lstm", 4, ["Sigmoid", "Tanh", "Tanh"])}
GATE_ORDER = {"rnn": [0], "gru": [1, 0, 2], "lstm": [0, 2, 3, 1]}   # torch gate g <- ONNX block
HEAD_ACTS = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Relu": "relu", "Softmax": "softmax",
             "LogSoftmax": "log_softmax", "Softsign": "softsign", "Softplus": "softplus", "Elu": "elu",
             "LeakyRelu": "leaky_relu", "Selu": "selu"}
PASS = ("Identity", "Dropout")


def _onnx():
    return require("onnx", "reading ONNX models")


def load(src):
    """A path or ModelProto -> ModelProto, its names checked (_check_names)."""
    onnx = _onnx()
    if isinstance(src, onnx.ModelProto):
        _check_names(src, "convert")
        return src
    path = os.fspath(src)
    try:
        model = onnx.load(path)
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others on damage
        raise ModelFormatError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    _check_names(model, path)
    return model


def _check_names(model, where):
    """Every name and op type the readers use is text: protobuf hands back bytes for a string
    field that is not valid UTF-8 (a damaged file), which would fail deep inside either reader."""
    g = model.graph
    for kind, names in (("op type", (n.op_type for n in g.node)), ("op domain", (n.domain for n in g.node)),
                        ("node name", (n.name for n in g.node)),
                        ("tensor name", (x for n in g.node for x in list(n.input) + list(n.output))),
                        ("attribute name", (a.name for n in g.node for a in n.attribute)),
                        ("initializer name", (t.name for t in g.initializer)),
                        ("graph input or output name", (v.name for v in list(g.input) + list(g.output)))):
        for x in names:
            if not isinstance(x, str):
                raise ModelFormatError(f"{where}: a damaged ONNX model: {kind} {x[:60]!r} is not UTF-8 text")


# ---------------------------------------------------------------------------------------------
# abstract values

class _Val:
    """Base of the abstract values that carry data rows. perm: the rows are in a permuted batch
    order (torch's export of pack_padded_sequence(enforce_sorted=False) sorts rows by length
    with TopK and restores them with the inverse permutation; every layer works row by row, so
    fastrnn runs rows in their own order and only checks that each graph output is restored)."""
    perm = False

    def derive(self, **changes):
        out = copy.copy(self)
        out.__dict__.update(changes)
        return out

    def with_axes(self, axes):
        return self.derive(axes=list(axes))


class _P(_Val):
    """A pipeline tensor at pipeline end `pos`: axes labels, width = size of F, dirs = size of D
    (when a D axis is present). last: None (has a T axis), "final" (the last layer's final
    state, return_sequences=False) or "step" (T-1 of a pipeline that runs every step). flip: the
    sequence is in reversed time order (Keras go_backwards=True: tf2onnx reverses the input and
    runs a forward node, which is fastrnn's reverse direction with its output flipped)."""
    def __init__(self, pos, axes, width, dirs=1, last=None, flip=False):
        self.pos, self.axes, self.width, self.dirs, self.last = pos, list(axes), width, dirs, last
        self.flip = flip


class _Dir(_Val):
    """One direction d of a bidirectional layer's Y (the pipeline end), sliced out by the glue of
    Keras Bidirectional exports: its final step (the forward direction's last step, the
    backward direction's first) is a final state; the two directions merge again as
    merge_mode."""
    def __init__(self, pos, axes, width, d):
        self.pos, self.axes, self.width, self.d = pos, list(axes), width, d


class _S(_Val):
    """Final states: parts [(native state k, direction d)], stacked on axis S (absent when one
    part was squeezed or gathered out); axes from S, B, F, 1."""
    def __init__(self, parts, axes, width, top):
        self.parts, self.axes, self.width, self.top = list(parts), list(axes), width, top


class _SIn(_Val):
    """A graph input of initial states, (rows, B, F) in axes order; rows: indices taken so far."""
    def __init__(self, name, axes, rows, width):
        self.name, self.axes, self.rows, self.width = name, list(axes), list(rows), width


class _Shape:
    """A shape vector: ints and axis labels."""
    def __init__(self, dims):
        self.dims = list(dims)


class _Zeros:
    pass


class _Lens(_Val):
    def __init__(self, name):
        self.name = name


class _Perm:
    """TopK's indices of the lengths: a batch permutation (rows sorted by length)."""


class _Inv:
    """The inverse of a _Perm (ScatterElements of 0..B-1 at its indices)."""


class _Iota:
    """Range(0, B): the row numbers."""


def recurrent_layer(op_type, W, R, B, P, a, direction=None):
    """An ONNX LSTM / GRU / RNN node's weights and attributes -> one ir.Recurrent (module note:
    gate orders, peepholes, activations, defaults). direction overrides the attribute (a
    forward node over reversed time runs as fastrnn's reverse direction)."""
    cell, G, default_acts = CELLS[op_type]
    adir = _s(a.get("direction", b"forward"))
    if adir not in ("forward", "reverse", "bidirectional"):
        raise UnsupportedError(f"direction {adir!r}")
    direction = direction or adir
    D = 2 if adir == "bidirectional" else 1
    if not isinstance(W, np.ndarray) or not isinstance(R, np.ndarray) or W.ndim != 3 or R.ndim != 3 \
            or W.shape[0] != D or R.shape[0] != D:
        raise ModelFormatError(f"W {getattr(W, 'shape', W)} / R {getattr(R, 'shape', R)} do not have {D} "
                               f"direction(s)")
    H = int(a.get("hidden_size", R.shape[2]))
    if R.shape[1:] != (G * H, H) or W.shape[1] != G * H:
        raise ModelFormatError(f"W {W.shape} / R {R.shape} do not match hidden_size {H} with {G} gate(s)")
    order = GATE_ORDER[cell]

    def gates(m):           # ONNX gate blocks -> torch order
        return np.concatenate([m[g * H:(g + 1) * H] for g in order], axis=0).astype(np.float32)
    ws = []
    for d in range(D):
        w = {"W_ih": gates(W[d]), "W_hh": gates(R[d])}
        if B is not None:
            if B.shape != (D, 2 * G * H):
                raise ModelFormatError(f"B has shape {B.shape}, expected {(D, 2 * G * H)}")
            w["b_ih"], w["b_hh"] = gates(B[d, :G * H]), gates(B[d, G * H:])
        if P is not None:
            if P.shape != (D, 3 * H):
                raise ModelFormatError(f"P has shape {P.shape}, expected {(D, 3 * H)}")
            p = P[d].astype(np.float32)
            w["P"] = np.stack([p[:H], p[2 * H:], p[H:2 * H]])     # ONNX i,o,f -> ir i,f,o
        ws.append(w)
    acts = _activations(a, default_acts, D)
    clip = a.get("clip")
    opts = {"activations": acts, "clip": float(clip) if clip is not None else None}
    if cell == "lstm":
        opts["input_forget"] = bool(a.get("input_forget", 0))
    if cell == "gru":
        opts["linear_before_reset"] = bool(a.get("linear_before_reset", 0))
    return ir.Recurrent(cell, ws, direction=direction, return_sequences=True, **opts)


def _activations(a, default, D):
    """The activations attribute (with its alphas and betas, consumed in order by the
    activations that take them) -> per direction a list of ir.Act."""
    names = [_s(n) for n in a.get("activations", [])] or default * D
    n = len(default)
    if len(names) == n and D == 2:
        names = names * 2
    if len(names) != n * D:
        raise UnsupportedError(f"activations lists {len(names)} functions, expected {n * D}")
    alphas, betas = list(a.get("activation_alpha", [])), list(a.get("activation_beta", []))
    out = []
    for name in names:
        key = next((k for k in ACTS if k.lower() == name.lower()), None)
        if key is None:
            raise UnsupportedError(f"activation {name!r} (supported: {', '.join(ACTS)})")
        kind, ta, tb, da, db = ACTS[key]
        al = alphas.pop(0) if ta and alphas else da
        be = betas.pop(0) if tb and betas else db
        out.append(ir.Act(kind, float(al), float(be)))
    return [out[i * n:(i + 1) * n] for i in range(D)]


def _attrs(node):
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


class _Graph:
    def __init__(self, model):
        from .frontends.onnx import _array      # a damaged initializer: ModelFormatError naming it
        self.model = model
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        if self.opset is None:
            raise ModelFormatError("the model imports no ai.onnx opset")
        self.env = {}
        for t in g.initializer:
            self.env[t.name] = _array(t)
        self.layers, self.nstates = [], 0
        self.subst = {}                         # x0/x1 -> B/T once a recurrent node fixes them
        self.inputs = []                        # graph inputs: [name, role, info]
        self.state_feeds = {}                   # graph state input name -> {row: (k, d)}
        self.lens_name = None
        self.summed = None                      # the last sum of a layer's directions (Mul 0.5: ave)
        self.fused = []                         # values a later node changed by fusing into their layer
        self.index = -1                         # the node being interpreted (for errors)
        for vi in g.input:
            if vi.name in self.env:
                continue                        # an initializer listed as an input (IR < 4)
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
            elem = tt.elem_type
            self.inputs.append([vi.name, None, {"dims": dims, "elem": elem}])
            self.env[vi.name] = ("input", vi.name, dims, elem)

    # -- errors -------------------------------------------------------------------------------
    def fail(self, node, why):
        raise UnsupportedError(f"convert: ONNX node {node.name or '(unnamed)'!r} ({node.op_type}, "
                               f"node {self.index}): {why}")

    def val(self, node, name):
        if name == "":
            return None
        if name not in self.env:
            self.fail(node, f"reads {name!r}, which no earlier node makes")
        v = self.env[name]
        if isinstance(v, tuple) and v[0] == "input":
            v = self._bind_input(node, v)
        if self.is_fused(v):
            self.fail(node, f"reads {name!r}, whose layer a later node has changed by fusing into it "
                            f"(a bias, an activation or a merge of directions): the value before that "
                            f"node is not kept")
        return v

    def is_fused(self, v):
        return any(v is f for f in self.fused)

    def _fuse(self, v):
        """v's layer is changed in place by the node reading v (MatMul + Add, Dense + activation,
        sum of directions * 0.5): v itself no longer exists; the result is a new value."""
        self.fused.append(v)
        return v.derive()

    def _bind_input(self, node, v):
        """A graph input's role, by position and type: the first is the sequence (float
        (.., .., F), or integer ids (.., ..)); an integer vector is sequence_lens; other float
        rank-3 inputs are initial states (rows, B, H)."""
        _, name, dims, elem = v
        onnx = _onnx()
        entry = next(e for e in self.inputs if e[0] == name)
        first = entry is self.inputs[0]
        is_int = elem in (onnx.TensorProto.INT32, onnx.TensorProto.INT64)
        if first and is_int and len(dims) == 2:
            v, entry[1] = _P(0, ["x0", "x1"], None), "x"
        elif first and not is_int and len(dims) == 3:
            v, entry[1] = _P(0, ["x0", "x1", "F"], dims[2]), "x"
        elif not first and is_int and len(dims) == 1:
            v, entry[1] = _Lens(name), "lengths"
            self.lens_name = name
        elif not first and not is_int and len(dims) == 3:
            # (rows, B, H); read directly by a layout=1 node: (B, rows, H)
            bm = node.op_type in CELLS and _attrs(node).get("layout", 0) == 1
            rows = dims[1] if bm else dims[0]
            v, entry[1] = _SIn(name, ["B", "S", "F"] if bm else ["S", "B", "F"], range(rows) if rows else [],
                               dims[2]), "state"
        else:
            self.fail(node, f"graph input {name!r} (shape {dims}) has no role fastrnn knows: the "
                            f"sequence (first), sequence_lens (integers (B,)) or initial states (float, rank 3)")
        entry[2]["value"] = v
        self.env[name] = v
        return v

    def const(self, node, name, what):
        v = self.val(node, name)
        if not isinstance(v, np.ndarray):
            self.fail(node, f"{what} must be a constant")
        return v

    # -- run ----------------------------------------------------------------------------------
    def run(self):
        g = self.model.graph
        for self.index, node in enumerate(g.node):     # before their condition arithmetic fails
            if node.op_type in ("Loop", "Scan", "If") and node.domain in ("", "ai.onnx"):
                self.fail(node, "control flow is not supported: fastrnn reads recurrences written as "
                                "LSTM/GRU/RNN nodes (tf2onnx writes a Loop for Keras layers it cannot map onto them: "
                                "SimpleRNN, GRU(reset_after=False), masking, other activations; "
                                "convert the Keras file itself instead)")
        if not any(n.op_type in CELLS and n.domain in ("", "ai.onnx") for n in g.node):
            raise UnsupportedError(
                "convert: the graph has no LSTM, GRU or RNN node. fastrnn reads recurrences written as "
                "those operators; an exporter that unrolls the time loop into per-step MatMul/Sigmoid/Tanh "
                "nodes (Keras 3's model.export(format='onnx'), torch's dynamo exporter for "
                "nn.RNN(nonlinearity='relu')) writes a graph fastrnn cannot read: convert the source "
                "model itself (the .keras file, the torch module)")
        for self.index, node in enumerate(g.node):
            try:
                outs = self.node(node)
            except FastRNNError:
                raise
            except (IndexError, KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as e:
                self.fail(node, f"cannot be interpreted ({type(e).__name__}: {e})")
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for name, v in zip(node.output, outs):
                if name:
                    self.env[name] = v

    def node(self, node):
        op, a = node.op_type, _attrs(node)
        if node.domain not in ("", "ai.onnx"):
            self.fail(node, f"operator domain {node.domain!r} is not supported")
        if op == "Constant":
            onnx = _onnx()
            if "value" in a:
                return onnx.numpy_helper.to_array(a["value"])
            for k in ("value_float", "value_int"):
                if k in a:
                    return np.array(a[k])
            for k in ("value_floats", "value_ints"):
                if k in a:
                    return np.array(a[k])
            self.fail(node, "a Constant of a kind fastrnn does not read")
        if op in CELLS:
            return self.recurrent(node, a)
        ins = [self.val(node, n) for n in node.input]
        if all(isinstance(v, np.ndarray) or v is None for v in ins):
            return self.fold(node, op, a, ins)
        if isinstance(ins[0], _Zeros) and op in ("Unsqueeze", "Squeeze", "Transpose", "Reshape", "Cast",
                                                  "Expand", "Identity", "Tile", "Slice", "Gather"):
            return ins[0]                       # zeros stay zeros (tf2onnx shapes its zero states)
        if op in PASS or op == "Cast" and isinstance(ins[0], (_P, _S, _Shape, _Lens, _Perm, _Inv, _Iota)):
            if op == "Dropout" and len(node.output) > 1 and node.output[1]:
                self.fail(node, "Dropout's mask output")
            return ins[0]
        if op in HEAD_ACTS:
            return self._head(node, a, ins, HEAD_ACTS[op])
        handler = getattr(self, "op_" + op, None)
        if handler is None:
            self.fail(node, "is not supported (fastrnn reads LSTM/GRU/RNN and the glue around them: "
                            "docs/onnx.md)")
        return handler(node, a, ins)

    # -- constants ----------------------------------------------------------------------------
    def fold(self, node, op, a, ins):
        """An op on constants only, computed with NumPy (the shape arithmetic exporters emit)."""
        x = ins[0] if ins else None
        if op in PASS:
            return x
        if op == "Cast":
            return x.astype(_np_dtype(a["to"]))
        if op == "Shape":
            return np.array(x.shape, np.int64)
        if op == "Gather":
            return np.take(x, ins[1], axis=a.get("axis", 0))
        if op in ("Unsqueeze", "Squeeze"):
            axes = self._axes_arg(node, a, ins)
            if op == "Squeeze":
                return np.squeeze(x, tuple(axes)) if axes is not None else np.squeeze(x)
            for ax in sorted(int(v) % (x.ndim + len(axes)) for v in axes):
                x = np.expand_dims(x, ax)
            return x
        if op == "Concat":
            return np.concatenate(ins, axis=a["axis"])
        if op == "Reshape":
            shape = [x.shape[i] if s == 0 and not a.get("allowzero") else s for i, s in enumerate(ins[1])]
            return x.reshape(shape)
        if op == "Transpose":
            return np.transpose(x, a.get("perm"))
        if op == "ConstantOfShape":
            v = _onnx().numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            return np.full(tuple(int(s) for s in x), v.reshape(-1)[0], v.dtype)
        if op in ("Add", "Sub", "Mul", "Div"):
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply,
                 "Div": (lambda p, q: p // q if p.dtype.kind in "iu" else p / q)}[op]
            return f(ins[0], ins[1])
        if op == "Slice":
            starts, ends, axes, steps = _slice_args(a, ins, self.opset)
            sl = [slice(None)] * x.ndim
            for ax, st, en, sp in zip(axes, starts, ends, steps):
                sl[ax] = slice(st, en, sp)
            return x[tuple(sl)]
        if op == "Expand":
            return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(s) for s in ins[1]))).copy()
        if op == "Range":
            return np.arange(ins[0], ins[1], ins[2])
        self.fail(node, "on constants is not supported")

    # -- recurrent ops ------------------------------------------------------------------------
    def recurrent(self, node, a):
        return self._recurrent(node, a)

    def _recurrent(self, node, a):
        cell, G, default_acts = CELLS[node.op_type]
        ins = list(node.input) + [""] * (8 - len(node.input))
        X = self.val(node, ins[0])
        W, R = self.const(node, ins[1], "W"), self.const(node, ins[2], "R")
        B = self.const(node, ins[3], "B") if ins[3] else None
        P = self.const(node, ins[7], "P") if cell == "lstm" and ins[7] else None
        direction = _s(a.get("direction", b"forward"))
        D = 2 if direction == "bidirectional" else 1
        if direction not in ("forward", "reverse", "bidirectional"):
            self.fail(node, f"direction {direction!r}")
        if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
            self.fail(node, f"W {W.shape} / R {R.shape} do not have {D} direction(s)")
        H = int(a.get("hidden_size", R.shape[2]))
        if R.shape[1:] != (G * H, H) or W.shape[1] != G * H:
            self.fail(node, f"W {W.shape} / R {R.shape} do not match hidden_size {H} with {G} gate(s)")
        layout = int(a.get("layout", 0))
        if layout not in (0, 1):
            self.fail(node, f"layout {layout}")
        want = ["B", "T", "F"] if layout else ["T", "B", "F"]
        if not isinstance(X, _P) or X.last is not None or len(X.axes) != 3:
            self.fail(node, "X must be a sequence of the pipeline")
        self._end(node, X, flip_ok=True)
        axes = [self.subst.get(l, l) for l in X.axes]
        if axes != want:
            free = [l for l in axes if l in ("x0", "x1")]
            if sorted(free) == ["x0", "x1"] and axes[2] == "F":
                for l, w in zip(axes[:2], want[:2]):
                    self.subst[l] = w
            else:
                self.fail(node, f"X has axes {axes}, expected {want} (layout {layout})")
        if X.flip:      # a forward node over reversed time: fastrnn's reverse direction, Y reversed
            if D == 2 or ins[4]:
                self.fail(node, "a bidirectional node, or sequence_lens, over a reversed sequence")
            direction = "reverse" if direction == "forward" else "forward"
        I = int(W.shape[2])
        if X.width is not None and X.width != I:
            self.fail(node, f"X has {X.width} features, W expects {I}")
        try:
            layer = recurrent_layer(node.op_type, W, R, B, P, a, direction)
        except (ModelFormatError, UnsupportedError) as e:
            self.fail(node, str(e))
        # sequence_lens and initial states
        lens = self.val(node, ins[4]) if ins[4] else None
        if lens is not None and not isinstance(lens, _Lens):
            if isinstance(lens, np.ndarray):
                self.fail(node, "a constant sequence_lens (give lengths as a graph input)")
            self.fail(node, "sequence_lens must be a graph input")
        if lens is not None and lens.perm != X.perm:
            self.fail(node, "sequence_lens and X are rows in different orders")
        k = self.nstates
        s_axes = ["B", "S", "F"] if layout else ["S", "B", "F"]
        self._init_state(node, ins[5], k, D, s_axes, X.perm)
        if cell == "lstm":
            self._init_state(node, ins[6], k + 1, D, s_axes, X.perm)
        self.layers.append(layer)
        self.nstates += 2 if cell == "lstm" else 1
        pos = len(self.layers)
        y_axes = ["B", "T", "D", "F"] if layout else ["T", "D", "B", "F"]
        top = len(self.layers) - 1
        Y = _P(pos, y_axes, H, D, flip=X.flip).derive(perm=X.perm)
        Yh = _S([(k, d) for d in range(D)], s_axes, H, top).derive(perm=X.perm)
        Yc = _S([(k + 1, d) for d in range(D)], s_axes, H, top).derive(perm=X.perm) if cell == "lstm" else None
        return [Y, Yh, Yc]

    def _init_state(self, node, name, k, D, axes, perm):
        if not name:
            return
        v = self.val(node, name)
        if isinstance(v, _Zeros) or isinstance(v, np.ndarray) and not v.any():
            return
        if isinstance(v, np.ndarray):
            self.fail(node, "a constant non-zero initial state (give it as a graph input)")
        if not isinstance(v, _SIn) or len(v.rows) != D or v.axes != axes:
            self.fail(node, f"initial states must be a graph input (or rows of one) with axes "
                            f"{axes} ({D} direction(s), batch, hidden), or zeros")
        if v.perm != perm:
            self.fail(node, "initial states and X are rows in different orders")
        feeds = self.state_feeds.setdefault(v.name, {"axes": v.axes, "rows": {}})
        for d, r in enumerate(v.rows):
            if r in feeds["rows"]:
                self.fail(node, f"row {r} of {v.name!r} initialises two states")
            feeds["rows"][r] = (k, d)

    # -- glue ---------------------------------------------------------------------------------
    def _end(self, node, v, flip_ok=False):
        """v (a pipeline value) must be the end of the pipeline, and its steps still exist."""
        if not isinstance(v, (_P, _Dir)):
            return
        if v.pos != len(self.layers):
            self.fail(node, "reads a tensor from earlier in the model while later layers exist (a branch)")
        last = self.layers[-1] if self.layers else None
        if (isinstance(v, _Dir) or v.last is None) and isinstance(last, ir.Recurrent) and not last.return_sequences:
            self.fail(node, "uses every step of a layer whose final state another node already takes as "
                            "the output (fastrnn runs that layer without its per-step output)")
        if isinstance(v, _P) and v.flip and not flip_ok:
            self.fail(node, "uses a sequence in reversed time order (Keras go_backwards=True with "
                            "return_sequences=True): only its last step, or another recurrent layer, may read it")

    def op_Transpose(self, node, a, ins):
        v = ins[0]
        if isinstance(v, (_P, _S, _SIn, _Dir)):
            perm = a.get("perm") or list(range(len(v.axes)))[::-1]
            return v.with_axes([v.axes[p] for p in perm])
        self.fail(node, "of this value")

    def _axes_arg(self, node, a, ins):
        if "axes" in a:
            return [int(x) for x in a["axes"]]
        if len(ins) > 1 and ins[1] is not None:
            if not isinstance(ins[1], np.ndarray):
                self.fail(node, "axes must be a constant")
            return [int(x) for x in ins[1].reshape(-1)]
        return None

    @staticmethod
    def _unit(v, l):
        """Whether axis label l of v has size 1."""
        return l == "1" or (l == "D" and isinstance(v, _P) and v.dirs == 1) or \
            (l == "S" and isinstance(v, _S) and len(v.parts) == 1)

    def op_Squeeze(self, node, a, ins):
        v = ins[0]
        axes = self._axes_arg(node, a, ins)
        if isinstance(v, _Shape):
            return v
        if not isinstance(v, (_P, _S, _Dir)):
            self.fail(node, "of this value")
        n = len(v.axes)
        idx = sorted({x % n for x in axes}) if axes is not None else \
            [i for i, l in enumerate(v.axes) if self._unit(v, l)]
        for i in idx:
            if not self._unit(v, v.axes[i]):
                self.fail(node, f"squeezes axis {i} ({v.axes[i]}), which is not of size 1")
        return v.with_axes([l for i, l in enumerate(v.axes) if i not in idx])

    def op_Unsqueeze(self, node, a, ins):
        v = ins[0]
        axes = self._axes_arg(node, a, ins)
        if isinstance(v, _Shape):
            return v                       # a shape scalar made a vector (for Concat)
        if not isinstance(v, (_P, _S, _Dir)):
            self.fail(node, "of this value")
        out = list(v.axes)
        for ax in sorted(x % (len(v.axes) + len(axes)) for x in axes):
            out.insert(ax, "1")
        return v.with_axes(out)

    def op_Reshape(self, node, a, ins):
        """Reshapes that merge D and F (directions side by side: [fwd, bwd] features, the
        engine's concat) or S and F of final states; that flatten the batch and time axes into
        rows and back (tf2onnx's Tensordot around a Dense on a sequence); or that only add or
        remove unit axes."""
        v, shape = ins[0], ins[1]
        if not isinstance(v, (_P, _S)):
            self.fail(node, "of this value")
        dims = shape.dims if isinstance(shape, _Shape) else [int(s) for s in np.asarray(shape).reshape(-1)]
        core = [l for l in v.axes if l != "1"]
        if isinstance(v, _P) and "D" in core and core.index("D") == len(core) - 2 and len(dims) == len(core) - 1:
            return v.derive(axes=[l for l in v.axes if l not in ("D", "1")], width=v.width * v.dirs, dirs=1)
        if isinstance(v, _S) and core[-2:] == ["S", "F"] and len(dims) == len(core) - 1:
            if [p[0] for p in v.parts] != [v.parts[0][0]] * len(v.parts) or v.top != len(self.layers) - 1:
                self.fail(node, "merges final states that are not the last layer's directions")
            return self._final(node, v, [l for l in v.axes if l != "1"])
        if isinstance(v, _P):
            rows = self._rows_reshape(core, [self.subst.get(d, d) if isinstance(d, str) else d for d in dims],
                                      v.width)
            if rows is not None:
                return v.with_axes(rows)
        if len(dims) == len(core) and all(isinstance(d, str) or d in (0, -1) or d > 0 for d in dims):
            return v.with_axes(core)
        self.fail(node, f"reshapes axes {v.axes} to {dims}: only merging directions into features, "
                        f"flattening batch and time into rows and back, or removing unit axes, is supported")

    def _rows_reshape(self, core, dims, width):
        """(a, b, F) -> (a*b, F) and back: the new axes, or None. Back needs a and b as labels
        (Shape of the sequence) or as the graph's static sizes, one of them may be -1."""
        lab = [self.subst.get(l, l) for l in core]
        seq = {"B", "T", "x0", "x1"}
        merged = "*".join(lab[:2])
        if len(core) == 3 and lab[2] == "F" and set(lab[:2]) <= seq and len(dims) == 2 \
                and dims[0] in (-1, 0, merged) and dims[1] in (width, -1) and list(dims).count(-1) <= 1:
            return [core[0] + "*" + core[1], "F"]
        if len(core) == 2 and "*" in core[0] and len(dims) == 3 and dims[2] in (width, -1):
            parts = core[0].split("*")
            static = self._static_sizes()

            def fits(d, l):
                l = self.subst.get(l, l)
                return d == -1 or (self.subst.get(d, d) == l if isinstance(d, str) else static.get(l) == d)
            if all(fits(d, l) for d, l in zip(dims[:2], parts)) and list(dims).count(-1) <= 1:
                return parts + ["F"]
        return None

    def _static_sizes(self):
        """{axis label: size} of the sequence input's static dims."""
        entry = next((e for e in self.inputs if e[1] == "x"), None)
        if entry is None:
            return {}
        return {self.subst.get(l, l): d for l, d in zip(entry[2]["value"].axes, entry[2]["dims"]) if d}

    def _final(self, node, s, axes, merge="concat"):
        """Final states of the last layer's directions, in order, as its final output, merged
        as merge_mode (concat: side by side)."""
        layer = self.layers[s.top]
        k = s.parts[0][0]
        if [d for _, d in s.parts] != list(range(layer.num_directions)):
            self.fail(node, "uses final states that are not the last layer's directions in order")
        if s.top != len(self.layers) - 1 or k != self.nstates - (2 if layer.cell == "lstm" else 1):
            self.fail(node, "uses the final state of a layer that is not the last so far, or c")
        layer.return_sequences = False
        layer.merge_mode = merge
        width = s.width * (len(s.parts) if merge == "concat" else 1)
        return _P(len(self.layers), [l for l in axes if l != "S"], width, 1, "final").derive(perm=s.perm)

    def op_Shape(self, node, a, ins):
        v = ins[0]
        if isinstance(v, (_Lens, _Perm, _Inv, _Iota)):
            return _Shape(["B"])
        if isinstance(v, (_P, _S, _SIn)):
            dims = [self.subst.get(l, l) for l in v.axes]
            dims = [(v.width if l == "F" else 1 if l == "1" else
                     (v.dirs if isinstance(v, _P) else None) if l == "D" else l) for l in dims]
            start, end = a.get("start", 0), a.get("end")
            return _Shape(dims[start:end])
        self.fail(node, "of this value")

    def op_Gather(self, node, a, ins):
        v, idx = ins
        axis = a.get("axis", 0)
        if isinstance(v, np.ndarray) and isinstance(idx, _P) and v.ndim == 2 and idx.width is None:
            # an initializer indexed by the ids input: an Embedding
            if idx.pos != 0 or self.layers:
                self.fail(node, "an Embedding must read the model's input first")
            self.layers.append(ir.Embedding(v.astype(np.float32)))
            return idx.derive(pos=1, axes=idx.axes + ["F"], width=int(v.shape[1]))
        if isinstance(idx, (_Perm, _Inv)):
            return self._permute(node, v, axis, idx)
        if not isinstance(idx, np.ndarray) or idx.ndim > 1:
            self.fail(node, "indices must be a constant scalar or vector")
        if isinstance(v, _Shape):
            return _Shape([v.dims[int(i)] for i in np.atleast_1d(idx)])
        if isinstance(v, (_S, _SIn)) and v.axes[axis % len(v.axes)] == "S":
            return self._take_rows(node, v, [int(i) for i in np.atleast_1d(idx)], keep=idx.ndim == 1)
        if isinstance(v, (_P, _Dir)) and idx.size == 1:
            ax = axis % len(v.axes)
            picked = self._pick(node, v, ax, int(idx.reshape(-1)[0]), keep=idx.ndim == 1)
            if picked is not None:
                return picked
        self.fail(node, f"gathers {idx.tolist()} on axis {axis} of this value")

    def _pick(self, node, v, ax, i, keep):
        """Index i of axis ax of the pipeline end: a step of T (the last one, or the first of a
        reverse layer) or a direction of D; None when it is neither."""
        label = self.subst.get(v.axes[ax], v.axes[ax])
        if label == "T":
            return self._step(node, v, ax, i, keep)
        if label == "D" and isinstance(v, _P):
            self._end(node, v)
            if v.dirs == 1 and i in (0, -1):
                return v.with_axes(self._drop(v.axes, ax, keep))
            layer = self.layers[-1] if self.layers else None
            if v.dirs == 2 and isinstance(layer, ir.Recurrent) and v.pos == len(self.layers) and i in (0, 1, -1):
                d = _Dir(v.pos, self._drop(v.axes, ax, keep), v.width, i % 2)
                return self._dir_final(node, d, None, -1, False) if v.last == "step" else d
        return None

    @staticmethod
    def _drop(axes, ax, keep):
        """axes without axis ax (Gather), or with it made a unit axis (Slice, keep)."""
        return axes[:ax] + (["1"] if keep else []) + axes[ax + 1:]

    def _take_rows(self, node, v, rows, keep):
        src = v.parts if isinstance(v, _S) else v.rows
        n = len(src)
        try:
            sel = [src[r] for r in rows]
        except IndexError:
            self.fail(node, f"row {rows} of {n}")
        axes = v.axes if keep else [l for l in v.axes if l != "S"]
        return v.derive(axes=axes, **{"parts" if isinstance(v, _S) else "rows": sel})

    def _step(self, node, v, axis, i, keep):
        """Step i of the time axis: -1, or 0 of a direction that runs backwards. The forward
        direction's last step is its final state unless sequence_lens pads short rows; otherwise
        every step is run and T-1 taken ("step")."""
        if isinstance(v, _Dir):
            return self._dir_final(node, v, axis, i, keep)
        self._end(node, v, flip_ok=True)
        last = self.layers[-1] if self.layers else None
        if v.flip:                              # step i of reversed time is step -1 - i
            if i not in (0, -1):
                self.fail(node, f"takes step {i} of a sequence in reversed time order")
            i = -1 - i
        rec = isinstance(last, ir.Recurrent) and v.pos == len(self.layers) and v.last is None
        if rec and v.dirs == 1 and "D" not in v.axes and (
                i == -1 and last.direction == "forward" and self.lens_name is None
                or i == 0 and last.direction == "reverse"):
            last.return_sequences = False
            form = "final"
        elif i == -1 and not v.flip:
            form = "step"
        else:
            self.fail(node, f"takes step {i} of the sequence (only the last step, or the first of a "
                            f"reverse layer, which is its final state, is supported)")
        return v.derive(axes=self._drop(v.axes, axis, keep), last=form, flip=False)

    def _dir_final(self, node, v, axis, i, keep):
        """A step of one direction of a bidirectional layer: its final state when that step is
        the direction's last."""
        self._end(node, v)
        layer = self.layers[-1]
        if not (v.d == 1 and i == 0 or v.d == 0 and i == -1 and self.lens_name is None):
            self.fail(node, f"takes step {i} of direction {v.d} of a bidirectional layer (only each "
                            f"direction's final step is supported: forward -1 without sequence_lens, backward 0)")
        k = self.nstates - (2 if layer.cell == "lstm" else 1)
        axes = v.axes if axis is None else self._drop(v.axes, axis, keep)
        return _S([(k, v.d)], axes, v.width, len(self.layers) - 1).derive(perm=v.perm)

    def op_Slice(self, node, a, ins):
        v = ins[0]
        starts, ends, axes, steps = _slice_args(a, ins, self.opset)
        if len(axes) != 1:
            self.fail(node, "a slice over several axes")
        ax, st, en = axes[0], starts[0], ends[0]
        if steps == [-1] and isinstance(v, _P) and st in (-1, 2**63 - 1, 2**31 - 1) and en <= -2**31 \
                and self.subst.get(v.axes[ax % len(v.axes)], v.axes[ax % len(v.axes)]) in ("T", "x0", "x1"):
            return self._reverse(node, v, ax % len(v.axes), None)          # torch.flip on time
        if any(s != 1 for s in steps):
            self.fail(node, "a slice with a step other than reversing the whole time axis")
        if isinstance(v, (_S, _SIn)) and v.axes[ax % len(v.axes)] == "S":
            n = len(v.parts if isinstance(v, _S) else v.rows)
            return self._take_rows(node, v, list(range(n))[slice(st, en)], keep=True)
        if isinstance(v, _Shape):
            return _Shape(v.dims[st:en])
        if isinstance(v, (_P, _Dir)):
            ax %= len(v.axes)
            i = st if en == st + 1 and st != -1 or st == -1 and en >= 2**31 - 1 else None
            picked = None if i is None else self._pick(node, v, ax, i, keep=True)
            if picked is not None:
                return picked
        self.fail(node, f"slices [{st}:{en}] on axis {ax} of this value")

    def op_Split(self, node, a, ins):
        """Split of the direction axis (one output per direction), of stacked final states into
        layers / directions, or of a shape vector."""
        v, axis, n = ins[0], a.get("axis", 0), len(node.output)
        if isinstance(v, _Shape):
            total = len(v.dims)
        elif isinstance(v, (_S, _SIn)) and v.axes[axis % len(v.axes)] == "S":
            total = len(v.parts if isinstance(v, _S) else v.rows)
        elif isinstance(v, _P) and self.subst.get(v.axes[axis % len(v.axes)], v.axes[axis % len(v.axes)]) == "D":
            total = v.dirs
        else:
            self.fail(node, f"splits axis {axis} of this value (only directions, stacked states or shapes)")
        if len(ins) > 1 and ins[1] is not None:
            sizes = [int(x) for x in self.const(node, node.input[1], "split").reshape(-1)]
        elif "split" in a:
            sizes = [int(x) for x in a["split"]]
        else:
            sizes = [-(-total // n)] * (n - 1) + [total - -(-total // n) * (n - 1)]
        if sum(sizes) != total or len(sizes) != n:
            self.fail(node, f"splits {total} into {sizes}")
        outs, o = [], 0
        for sz in sizes:
            if isinstance(v, _Shape):
                outs.append(_Shape(v.dims[o:o + sz]))
            elif isinstance(v, _P):
                picked = self._pick(node, v, axis % len(v.axes), o, keep=True) if sz == 1 else None
                if picked is None:
                    self.fail(node, f"splits the directions into {sizes}")
                outs.append(picked)
            else:
                outs.append(self._take_rows(node, v, list(range(o, o + sz)), keep=True))
            o += sz
        return outs

    def op_Concat(self, node, a, ins):
        axis = a["axis"]
        if all(isinstance(v, (_Shape, np.ndarray)) for v in ins):
            dims = []
            for v in ins:
                dims += v.dims if isinstance(v, _Shape) else [int(x) for x in np.asarray(v).reshape(-1)]
            return _Shape(dims)
        if all(isinstance(v, _Zeros) or isinstance(v, np.ndarray) and not v.any() for v in ins):
            return _Zeros()                     # zero states of two directions (tf2onnx)
        if all(isinstance(v, _S) for v in ins) and len({tuple(v.axes) for v in ins}) == 1 \
                and ins[0].axes[axis % len(ins[0].axes)] == "S":
            self._same_perm(node, ins)
            parts = [p for v in ins for p in v.parts]
            return ins[0].derive(parts=parts, top=max(v.top for v in ins))
        if all(isinstance(v, _S) and len(v.parts) == 1 for v in ins) and len({tuple(v.axes) for v in ins}) == 1 \
                and ins[0].axes[axis % len(ins[0].axes)] == "F":
            self._same_perm(node, ins)         # directions side by side; a split-off S is a unit axis
            axes = ["1" if l == "S" else l for l in ins[0].axes]
            s = ins[0].derive(parts=[v.parts[0] for v in ins], axes=["S"] + axes, top=max(v.top for v in ins))
            return self._final(node, s, axes)
        if all(isinstance(v, _Dir) for v in ins) and ins[0].axes[axis % len(ins[0].axes)] == "F" \
                and [v.d for v in ins] == [0, 1]:
            return self._merge_dirs(node, ins, "concat")
        self.fail(node, "concatenates values that are not final states or shapes")

    def op_ConstantOfShape(self, node, a, ins):
        val = _onnx().numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1)
        if isinstance(ins[0], _Shape) and not val.any():
            return _Zeros()
        self.fail(node, "a ConstantOfShape that is not zeros of a shape fastrnn follows")

    def _same_perm(self, node, ins):
        if len({v.perm for v in ins}) > 1:
            self.fail(node, "combines rows in different orders")

    def op_TopK(self, node, a, ins):
        """Lengths sorted, longest first: torch's export of pack_padded_sequence sorts the rows."""
        v, k = ins
        all_rows = isinstance(k, _Shape) and [self.subst.get(d, d) for d in k.dims] == ["B"] or \
            isinstance(k, np.ndarray) and self._static_sizes().get("B") == int(k.reshape(-1)[0])
        if not isinstance(v, _Lens) or v.perm or not a.get("largest", 1) or a.get("axis", -1) not in (0, -1) \
                or not all_rows:
            self.fail(node, "a TopK other than sorting all of sequence_lens")
        return [v.derive(perm=True), _Perm()]

    def op_Range(self, node, a, ins):
        start, limit, delta = ins
        if isinstance(limit, _Shape) and len(limit.dims) == 1 and isinstance(start, np.ndarray) \
                and isinstance(delta, np.ndarray) and int(start) == 0 and int(delta) == 1:
            return _Iota()
        self.fail(node, "a Range other than 0 .. batch")

    def op_ScatterElements(self, node, a, ins):
        data, idx, upd = ins       # a static batch folds Range and ConstantOfShape to constants
        zeros = isinstance(data, _Zeros) or isinstance(data, np.ndarray) and data.ndim == 1 and not data.any()
        iota = isinstance(upd, _Iota) or isinstance(upd, np.ndarray) and (upd == np.arange(upd.size)).all()
        if zeros and isinstance(idx, _Perm) and iota and a.get("axis", 0) == 0 \
                and a.get("reduction", "none") in ("none", b"none"):
            return _Inv()
        self.fail(node, "a ScatterElements other than inverting a sort permutation")

    def _permute(self, node, v, axis, idx):
        """Gather of rows by a sort permutation (perm) or by its inverse (restores the order)."""
        if not isinstance(v, (_P, _S, _SIn, _Dir)):
            self.fail(node, "reorders something other than data rows")
        ax = axis % len(v.axes)
        label = self.subst.get(v.axes[ax], v.axes[ax])
        if label in ("x0", "x1"):
            other = "x1" if label == "x0" else "x0"
            self.subst[label], self.subst[other] = "B", "T"
        elif label != "B":
            self.fail(node, f"reorders axis {ax} ({label}), not the batch")
        if v.perm != isinstance(idx, _Inv):
            self.fail(node, "applies a row permutation twice" if v.perm else "restores a row order that was not permuted")
        return v.derive(perm=not v.perm)

    def op_ReduceProd(self, node, a, ins):
        """The product of a shape vector (tf2onnx's Tensordot: rows = batch * time)."""
        v = ins[0]
        if not isinstance(v, _Shape) or a.get("keepdims", 1) and len(v.dims) != 1:
            self.fail(node, "a product of something other than a shape vector")
        ints = [d for d in v.dims if not isinstance(d, str)]
        labels = [d for d in v.dims if isinstance(d, str)]
        if labels and any(d != 1 for d in ints):
            self.fail(node, f"a product of shape dims {v.dims}")
        return _Shape(["*".join(labels)] if labels else [int(np.prod(ints))])

    def op_ReverseSequence(self, node, a, ins):
        """The whole sequence reversed in time (lengths = the time size): Keras go_backwards."""
        v, lens = ins
        full = isinstance(lens, _Shape) and len(lens.dims) == 1 or \
            isinstance(lens, np.ndarray) and self._static_sizes().get("T") is not None \
            and (lens == self._static_sizes()["T"]).all()
        if not full:
            self.fail(node, "reverses rows by lengths other than the whole sequence")
        out = self._reverse(node, v, a.get("time_axis", 0), a.get("batch_axis", 1))
        if isinstance(lens, _Shape) and self.subst.get(lens.dims[0], lens.dims[0]) != "T":
            self.fail(node, "reverses rows by lengths other than the whole sequence")
        return out

    def _reverse(self, node, v, t, b):
        """The sequence v reversed on its time axis t (b: its batch axis, when known)."""
        if not isinstance(v, _P) or v.last is not None or v.axes[-1] != "F" or len(v.axes) not in (3, 4):
            self.fail(node, "reverses something other than the pipeline's sequence")
        self._end(node, v, flip_ok=True)
        labels = [self.subst.get(l, l) for l in v.axes]
        free = [l for l in ("x0", "x1") if l in labels]
        for ax, want in ((t, "T"), (b, "B")):
            if ax is None:
                continue
            if labels[ax] in ("x0", "x1"):
                self.subst[labels[ax]] = want
                free.remove(labels[ax])
                labels[ax] = want
            elif labels[ax] != want:
                self.fail(node, f"axis {ax} is {labels[ax]}, not {want}")
        if len(free) == 1:                      # the other of x0/x1
            self.subst[free[0]] = "B" if "T" in labels else "T"
        if v.dirs != 1:
            self.fail(node, "reverses a bidirectional layer's output")
        return v.derive(flip=not v.flip)

    def op_Expand(self, node, a, ins):
        if isinstance(ins[0], _Shape) and len(ins[0].dims) == 1:
            return ins[0]                       # a size broadcast to every row (full lengths)
        if isinstance(ins[0], (_Zeros, np.ndarray)) and not np.asarray(0 if isinstance(ins[0], _Zeros) else ins[0]).any():
            return _Zeros()
        self.fail(node, "an Expand of something other than zeros")

    def _as_pipe(self, node, v):
        """A final state read by a head layer (torch's fc(h_n[-1])): the last layer's h of a
        single direction becomes the pipeline's output (return_sequences=False)."""
        if isinstance(v, _S) and len(v.parts) == 1 and self.layers and v.top == len(self.layers) - 1 \
                and self.layers[-1].num_directions == 1:
            axes = [l for l in v.axes if l != "S"]
            return self._final(node, v.derive(axes=["S"] + axes), axes)
        return v

    def _dense(self, node, x, Wt, b):
        """Dense on the pipeline end: Wt (in, out) as MatMul stores it."""
        x = self._as_pipe(node, x)
        if not isinstance(x, _P) or "D" in x.axes:
            self.fail(node, "a matrix product of something other than the pipeline's features")
        self._end(node, x)
        if x.axes[-1] != "F" or Wt.ndim != 2 or Wt.shape[0] != x.width:
            self.fail(node, f"a weight of shape {Wt.shape} on {x.width} features")
        self.layers.append(ir.Dense(np.ascontiguousarray(Wt.T, np.float32),
                                    None if b is None else np.asarray(b, np.float32).reshape(-1)))
        return x.derive(pos=len(self.layers), width=int(Wt.shape[1]), dirs=1)

    def op_MatMul(self, node, a, ins):
        x, W = ins
        if not isinstance(W, np.ndarray):
            self.fail(node, "the weight must be a constant")
        return self._dense(node, x, W, None)

    def op_Gemm(self, node, a, ins):
        x, W = ins[0], ins[1]
        C = ins[2] if len(ins) > 2 else None
        if not isinstance(W, np.ndarray) or (C is not None and not isinstance(C, np.ndarray)):
            self.fail(node, "weights must be constants")
        if a.get("transA", 0):
            self.fail(node, "transA=1")
        alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
        Wt = (W.T if a.get("transB", 0) else W) * alpha
        b = None if C is None else np.broadcast_to(C * beta, (Wt.shape[1],))
        return self._dense(node, x, Wt, b)

    def _merge_dirs(self, node, ins, mode):
        """The two directions of the last layer merged as Keras Bidirectional's merge_mode:
        sequences (_Dir, concatenated or added / multiplied step by step) or final states."""
        u, w = ins
        self._same_perm(node, ins)
        if len({tuple(v.axes) for v in ins}) != 1 or {u.d if isinstance(u, _Dir) else u.parts[0][1],
                                                       w.d if isinstance(w, _Dir) else w.parts[0][1]} != {0, 1}:
            self.fail(node, f"merges values that are not the two directions of one layer ({mode})")
        if isinstance(u, _S):
            if len(u.parts) != 1 or len(w.parts) != 1 or "S" in u.axes:
                self.fail(node, f"merges stacked final states ({mode})")
            s = u.derive(parts=sorted(u.parts + w.parts, key=lambda p: p[1]), axes=["S"] + u.axes,
                         top=max(u.top, w.top))
            out = self._final(node, s, u.axes, mode)
        else:
            self._end(node, u)
            self.layers[-1].merge_mode = mode
            out = _P(u.pos, u.axes, u.width * (2 if mode == "concat" else 1)).derive(perm=u.perm)
        self.summed = out if mode == "sum" else None
        return out

    def op_Mul(self, node, a, ins):
        if all(isinstance(v, _Dir) for v in ins) or all(isinstance(v, _S) for v in ins):
            return self._merge_dirs(node, ins, "mul")
        x, c = ins if isinstance(ins[1], np.ndarray) else ins[::-1]
        if x is self.summed and isinstance(c, np.ndarray) and c.size == 1 and float(c) == 0.5:
            self._end(node, x)
            self.layers[-1].merge_mode = "ave"            # Keras merge_mode="ave": (fwd + bwd) * 0.5
            return self._fuse(x)
        self.fail(node, "a Mul other than merging a bidirectional layer's directions")

    def op_Add(self, node, a, ins):
        if all(isinstance(v, _Dir) for v in ins) or all(isinstance(v, _S) for v in ins):
            return self._merge_dirs(node, ins, "sum")
        x, b = ins
        if isinstance(x, np.ndarray):
            x, b = b, x
        last = self.layers[-1] if self.layers else None
        if isinstance(x, _P) and isinstance(b, np.ndarray) and isinstance(last, ir.Dense) \
                and last.bias is None and x.pos == len(self.layers) and b.size == last.output_size \
                and last.activation.kind == "linear":
            last.bias = np.asarray(b, np.float32).reshape(-1)      # MatMul + Add: one Dense
            return self._fuse(x)
        self.fail(node, "an Add other than the bias after a MatMul")

    def _head(self, node, a, ins, kind):
        x = self._as_pipe(node, ins[0])
        if not isinstance(x, _P):
            self.fail(node, "an activation of something other than the pipeline")
        self._end(node, x)
        if kind in ("softmax", "log_softmax"):
            axis = a.get("axis", -1 if self.opset >= 13 else 1)
            if axis % len(x.axes) != len(x.axes) - 1:
                self.fail(node, f"{kind} over axis {axis}: only the feature (last) axis is supported")
        alpha = a.get("alpha")
        act = ir.Act(kind, float(alpha)) if alpha is not None and kind in ("elu", "leaky_relu") else ir.Act(kind)
        last = self.layers[-1] if self.layers else None
        if isinstance(last, ir.Dense) and last.activation.kind == "linear":
            last.activation = act
            x = self._fuse(x)
        else:
            self.layers.append(ir.Activation(x.width * x.dirs, act))
        return x.derive(pos=len(self.layers))



def _np_dtype(to):
    onnx = _onnx()
    return onnx.helper.tensor_dtype_to_np_dtype(to)


def _slice_args(a, ins, opset):
    """Slice's starts, ends, axes, steps as int lists: attributes before opset 10, constant
    inputs after (a non-constant raises TypeError, which names the node)."""
    def ints(v):
        if v is None:
            return None
        if not isinstance(v, (np.ndarray, list, tuple)):
            raise TypeError("starts, ends, axes and steps must be constants")
        return [int(x) for x in np.asarray(v).reshape(-1)]
    if opset < 10:
        starts, ends, axes, steps = ints(a["starts"]), ints(a["ends"]), ints(a.get("axes")), None
    else:
        extra = list(ins[3:5]) + [None, None]
        starts, ends, axes, steps = ints(ins[1]), ints(ins[2]), ints(extra[0]), ints(extra[1])
    axes = list(range(len(starts))) if axes is None else axes
    return starts, ends, axes, steps or [1] * len(axes)


# ---------------------------------------------------------------------------------------------
# the graph's own inputs and outputs (Model.run)

def _io(g, model):
    """The signature's "graph" entry: how run() maps feeds and outputs (fastrnn/signature.py)."""
    inputs = []
    for name, role, info in g.inputs:
        if role is None:
            continue                      # an input the graph never reads
        e = {"name": name, "role": role}
        if role == "x":
            v = info["value"]
            e["axes"] = [g.subst.get(l, l) for l in v.axes]
            if any(l in ("x0", "x1") for l in e["axes"]):
                raise UnsupportedError(f"convert: the graph input {name!r} never reaches a recurrent node")
        elif role == "state":
            feeds = g.state_feeds.get(name)
            v = info["value"]
            if feeds is None:
                raise UnsupportedError(f"convert: the state input {name!r} is read but initialises no state")
            n = len(v.rows) or (max(feeds["rows"]) + 1)
            if sorted(feeds["rows"]) != list(range(n)):
                raise UnsupportedError(f"convert: the state input {name!r} has rows that initialise no state")
            e["axes"] = v.axes
            e["parts"] = [list(feeds["rows"][r]) for r in range(n)]
        inputs.append(e)
    outputs = []
    for vi in model.graph.output:
        v = g.env.get(vi.name)
        if isinstance(v, tuple) and v[0] == "input":
            raise UnsupportedError(f"convert: graph output {vi.name!r} is a graph input")
        if g.is_fused(v):
            raise UnsupportedError(f"convert: graph output {vi.name!r} is a value whose layer a later node "
                                   f"changed by fusing into it (a bias, an activation or a merge of directions)")
        if isinstance(v, _Val) and v.perm:
            raise UnsupportedError(f"convert: graph output {vi.name!r} has its rows sorted by length "
                                   f"(the graph never restores their order)")
        if isinstance(v, _P):
            if v.flip:
                raise UnsupportedError(f"convert: graph output {vi.name!r} is a sequence in reversed time order "
                                       f"(Keras go_backwards=True with return_sequences=True)")
            if v.pos != len(g.layers):
                raise UnsupportedError(f"convert: graph output {vi.name!r} is an intermediate tensor of the "
                                       f"pipeline (only the end of the pipeline and final states can be outputs)")
            axes = [g.subst.get(l, l) for l in v.axes]
            outputs.append({"name": vi.name, "kind": "y", "axes": axes, "dirs": v.dirs, "last": v.last})
        elif isinstance(v, _S):
            outputs.append({"name": vi.name, "kind": "state", "axes": v.axes,
                            "parts": [list(p) for p in v.parts]})
        else:
            raise UnsupportedError(f"convert: graph output {vi.name!r} is "
                                   f"{'a constant' if isinstance(v, np.ndarray) else type(v).__name__.strip('_')}, "
                                   f"not the pipeline's output or final states")
    return {"inputs": inputs, "outputs": outputs}


def _final_first(g, io):
    """A graph that outputs final states only (Y_h, h_n[-1], no sequence): when its first output
    is the last layer's h, every direction in order, that output becomes the pipeline's
    (return_sequences=False), so predict and stream return it, as for the source model whose
    forward returns it. Other outputs stay states."""
    outs = io["outputs"]
    if not outs or any(o["kind"] == "y" for o in outs):
        return
    o, layer = outs[0], g.layers[-1]
    if not isinstance(layer, ir.Recurrent):
        return
    k = g.nstates - (2 if layer.cell == "lstm" else 1)
    D = layer.num_directions
    if o["parts"] != [[k, d] for d in range(D)] or ("S" not in o["axes"] and D != 1):
        return
    layer.return_sequences = False
    axes = [("D" if D > 1 else "1") if l == "S" else l for l in o["axes"]]
    outs[0] = {"name": o["name"], "kind": "y", "axes": axes, "dirs": D, "last": "final"}


def convert(src):
    """An ONNX model (path or ModelProto) -> fastrnn.Model with run(). Two readers, while the
    graph frontend on the importers' shared lowering (converters/frontends/onnx.py) grows to
    cover the glue this module's interpreter knows (tf2onnx's Keras patterns, torch's legacy
    export of pack_padded_sequence): the interpreter first, then the frontend, which reads what
    torch's exporters write around everything the PyTorch importer handles (views, heads,
    arithmetic, pooling, states ...). When both refuse, the interpreter's error is given with
    every node the frontend could not lower."""
    from .frontends import onnx as frontend
    model = load(src)
    name = os.path.basename(os.fspath(src)) if isinstance(src, (str, os.PathLike)) else (model.graph.name or "graph")
    try:
        return _convert_interpreted(model)
    except UnsupportedError as e:
        first = e
    try:
        return frontend.convert(model, name)
    except UnsupportedError as e:
        raise UnsupportedError(f"{first}\n(the graph frontend also refuses it: {e})") from None


def _convert_interpreted(model):
    """The interpreter of this module (module note) -> Model."""
    from fastrnn import Model
    g = _Graph(model)
    g.run()
    io = _io(g, model)
    _final_first(g, io)
    ys = [o for o in io["outputs"] if o["kind"] == "y"]
    time = "last" if any(o["last"] == "step" for o in ys) else None
    if ys and len({o["last"] for o in ys}) > 1:
        raise UnsupportedError("convert: graph outputs take the pipeline both per step and at its last step")
    meta = {"source": "onnx", "opset": g.opset, "producer": model.producer_name or None}
    dims = next(e for e in g.inputs if e[1] == "x")[2]["dims"]
    axes = next(e for e in io["inputs"] if e["role"] == "x")["axes"]
    for label, key in (("B", "batch_size"), ("T", "time_steps")):     # static dims (for --check)
        if len(dims) == len(axes) and dims[axes.index(label)]:
            meta[key] = int(dims[axes.index(label)])
    return Model(g.layers, meta=meta, signature={"outputs": None, "states": None, "time": time, "graph": io})


def feeds_for(model, x, seed):
    """Feeds for --check from batch-major x: x in the graph's layout, random lengths in [1, T]
    (one row full), random initial states."""
    from fastrnn.model import _to_axes
    rng = np.random.default_rng(seed)
    g = model.signature["graph"]
    B, T = x.shape[0], x.shape[1]
    feeds = {}
    for e in g["inputs"]:
        if e["role"] == "x":
            feeds[e["name"]] = _to_axes(x, ["B", "T", "F"] if x.ndim == 3 else ["B", "T"], e["axes"])
        elif e["role"] == "lengths":
            lens = rng.integers(1, T + 1, B).astype(np.int32)
            lens[0] = T
            feeds[e["name"]] = lens
        else:
            w = model._dims[e["parts"][0][0]][1]
            st = rng.normal(size=(len(e["parts"]), B, w)).astype(np.float32)
            feeds[e["name"]] = _to_axes(st, ["S", "B", "F"], e["axes"])
    return feeds


def run_source(src, feeds):
    """onnxruntime on the model itself (for --check): the list of outputs."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UnsupportedError("--check of an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    model = load(src)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.input}
    feeds = {k: v.astype(_np_dtype(types[k])) if types.get(k) else v for k, v in feeds.items()}
    return sess.run(None, feeds)      # (ids and lengths in the graph's own integer type)
