"""ONNX frontend: a graph node by node -> canonical op calls on the shared lowering
(converters/graph.py), the same handlers the PyTorch captures use.

Each ONNX op is translated to ATen's name and argument order (Gemm -> linear, MatMul ->
matmul, Transpose -> permute, Reshape -> view with ONNX's 0 = "keep this dimension", Squeeze /
Unsqueeze over each axis, Slice per axis, Gather -> select / embedding, ReduceMean -> mean ...),
so what torch's exporters write (legacy and dynamo) lowers exactly as the module it came from.
Shape arithmetic (Shape -> Gather / Slice -> Mul -> Concat -> Reshape, ConstantOfShape,
Expand) runs on Python tuples of example sizes, which remember which one is the batch or the
time (graph.Size). LSTM / GRU / RNN nodes convert their weights from ONNX's layout to the IR's
here (gate orders, peepholes, activations: converters/onnx.py's notes) and lower as one
recurrent layer with a direction axis D on Y (Lowering.onnx_recurrent).

What is outside this frontend (for now): the glue tf2onnx writes around Keras layers (masks,
merge modes as Add/Mul of direction slices, ReverseSequence) and torch's legacy export of
pack_padded_sequence (a TopK row sort): converters/onnx.py's own interpreter still reads those,
and convert() tries this frontend first (converters/onnx.py, convert).
"""
from __future__ import annotations

import operator

import numpy as np

from fastrnn import ir
from fastrnn.errors import ModelFormatError, UnsupportedError

from .. import graph as G
from ..graph import Input, Lowering, PT, Size, Zeros

EX_B, EX_T = 3, 5

_ACTS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Softsign": "softsign", "Softplus": "softplus",
         "Selu": "selu", "Exp": "exp", "Mish": "mish", "HardSwish": "hardswish"}
_ARITH = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}
_PYOPS = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv}


class _Shape(tuple):
    """A 1-D integer tensor of sizes (ONNX shape arithmetic), elements int or graph.Size."""


def _ints(v):
    """A shape-like value as a list of ints (Sizes kept), or None."""
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, np.ndarray) and v.dtype.kind in "iu":
        return [int(i) for i in v.reshape(-1)]
    if isinstance(v, np.ndarray) and v.dtype.kind == "O" and all(isinstance(i, (int, np.integer)) for i in v.reshape(-1)):
        return [i if isinstance(i, Size) else int(i) for i in v.reshape(-1)]     # shape arithmetic with Sizes
    if isinstance(v, (int, np.integer)):
        return [int(v)]
    return None


def _by_batch(sizes, ndim):
    """Expand / Tile sizes of a constant of ndim axes that hold the graph's batch size: the
    constant is broadcast over the batch (a learned initial state; graph.py _const_over_batch)."""
    return len(sizes) == ndim and any(isinstance(n, Size) and n.sym == "B" for n in sizes)


def _shape_like(v):
    """A value of shape arithmetic: a shape, a size, an integer or an integer array (a size with a
    tensor of the pipeline, out.sum(1) / x.size(1), is the tensor's arithmetic instead)."""
    return isinstance(v, (tuple, int, np.integer)) or isinstance(v, np.ndarray) and v.dtype.kind in "iuO"


MAX_CONSTANT = 1 << 24          # elements of a constant the frontend makes (64 MiB of float32)


def _int_scalar(v):
    """An int, a Size or a 0-d integer array."""
    return isinstance(v, (int, np.integer)) or isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu"


def _attrs(node):
    from onnx import helper
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _array(t):
    from onnx import numpy_helper
    try:
        a = numpy_helper.to_array(t)
    except Exception as e:  # noqa: BLE001 - damaged tensors raise ValueError, TypeError, KeyError ...
        raise ModelFormatError(f"convert: initializer {t.name!r} cannot be read ({type(e).__name__}: {e})") from None
    return a.astype(np.float32) if a.dtype.kind == "f" else a


class _Frontend:
    def __init__(self, model, name):
        self.model = model
        self.low = Lowering(name)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.env = {}
        self.inputs = []              # (name, Input | PT)
        self.cache = {}               # derived constants (derived)
        self.time_size = None         # a time length to assume for a symbolic axis (convert)

    def where(self, node, i):
        return f" (ONNX node {node.name or i!r}, {node.op_type})"

    # -- inputs ----------------------------------------------------------------------------------
    def bind_inputs(self):
        g = self.model.graph
        inits = {t.name for t in g.initializer}
        for t in g.initializer:
            self.env[t.name] = _array(t)
        sizes = {}
        first = None
        for i, vi in enumerate(v for v in g.input if v.name not in inits):
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or None for d in tt.shape.dim]
            ids = tt.elem_type not in (1, 10, 11, 16)          # float, float16, double, bfloat16
            if first is None:
                first = vi.name
                n = len(dims) - (0 if ids or len(dims) == 1 else 1)
                if n < 1 or n > 2:
                    raise UnsupportedError(f"convert: the graph input {vi.name!r} has shape {dims}: expected "
                                           f"(batch, time{'' if ids else ', features'}) or (time, batch"
                                           f"{'' if ids else ', features'})")
                labels = ("x0", "x1")[:n]
                made = [EX_B, EX_T]
                if self.time_size:             # (T, whether the time axis comes first)
                    T, time_first = self.time_size
                    made = [EX_B if T != EX_B else EX_B + 1, T]
                    if time_first:
                        made.reverse()
                for l, d, k in zip(labels, dims, made):
                    size = d if isinstance(d, int) and d > 0 else sizes.setdefault(d, k) if d else k
                    while size in [self.low.xsizes.get(o) for o in ("x0", "x1") if o != l] and not isinstance(d, int):
                        size += 1
                    sizes[d] = size
                    self.low.xsizes[l] = size
                width = None if ids else dims[-1]
                if not ids and not (isinstance(width, int) and width > 0):
                    width = self._first_width()        # symbolic features: the first layer's width
                if not ids and width is None:
                    raise UnsupportedError(f"convert: the graph input {vi.name!r} has no fixed feature size")
                if not ids and len(dims) == 1:          # one series, no feature axis (graph.py)
                    v = PT(0, labels, 1)
                    self.low.series = True
                else:
                    v = PT(0, labels + (() if ids else ("F",)), width)
                if not ids and len(dims) == 2 and not (isinstance(dims[-1], int) and dims[-1] > 0):
                    # (B, T) if the graph takes it apart in steps: the time size it would have
                    self.low.series_size = self.time_size[0] if self.time_size else EX_T
                self.low.input_ids = ids
            else:
                shape = tuple(d if isinstance(d, int) and d > 0 else sizes.get(d, EX_B) for d in dims)
                v = Input(i, vi.name, shape)
            self.inputs.append((vi.name, v))
            self.env[vi.name] = v

    def _first_width(self):
        """The input width of the graph's first recurrent node or Gemm / MatMul with constant
        weights (for an input whose feature axis is declared symbolic)."""
        for n in self.model.graph.node:
            w = self.env.get(n.input[1]) if len(n.input) > 1 else None
            if not isinstance(w, np.ndarray) or w.ndim < 2:
                continue
            if n.op_type in ("LSTM", "GRU", "RNN") and w.ndim == 3:
                return int(w.shape[2])
            if n.op_type == "MatMul":
                return int(w.shape[0])
            if n.op_type == "Gemm":
                return int(w.shape[0 if not any(a.name == "transB" and a.i for a in n.attribute) else 1])
        return None

    # -- the walk ----------------------------------------------------------------------------------
    def run(self):
        self.bind_inputs()
        self.run_nodes(fuse_elementwise(self.model.graph))
        return [(o.name, self.env.get(o.name)) for o in self.model.graph.output]

    def run_nodes(self, nodes):
        for i, node in enumerate(nodes):
            a = [self.env.get(n) if n else None for n in node.input]
            missing = [n for n, v in zip(node.input, a) if n and v is None]
            where = self.where(node, i)
            if missing:
                res = self.low.refuse(node.op_type, f"reads {missing[0]!r}, which no node makes", where)
            elif G._has_bad(a):
                res = G.Bad()
            else:
                fn = getattr(self, "op_" + node.op_type, None)
                if fn is None:
                    res = self.low.refuse(node.op_type, f"ONNX op {node.op_type} is not supported", where)
                else:
                    try:
                        res = fn(node, a, _attrs(node), where)
                    except G.Refused as e:
                        res = self.low.refuse(node.op_type, e.why, where)
                    except (IndexError, TypeError, KeyError, ValueError, ArithmeticError, AttributeError) as e:
                        res = self.low.refuse(node.op_type, f"cannot be interpreted ({type(e).__name__}: {e})", where)
            outs = list(res) if isinstance(res, list) else [res]
            for name, v in zip(node.output, outs + [None] * (len(node.output) - len(outs))):
                if name:
                    self.env[name] = G.Bad() if isinstance(res, G.Bad) else v

    def call(self, op, args, where, **kw):
        return self.low.call(op, tuple(args), kw, where)

    # -- ops -------------------------------------------------------------------------------------
    def op_Loop(self, node, a, at, w):
        """A Loop whose trip count and condition are known when converting (tf2onnx's while loop
        over a Keras layer's steps: the counter runs to the input's length) is unrolled: its body
        runs once per iteration on the same handlers, so each step's cell arithmetic becomes the
        step expressions an unrolled export gives (converters/cells.py), and the scan outputs
        are the steps stacked."""
        from collections import ChainMap
        body = at["body"]
        M, cond, carried = a[0], a[1], list(a[2:])
        if len(body.input) != 2 + len(carried) or len(body.output) < 1 + len(carried):
            self.low.fail(f"a Loop body with {len(body.input)} inputs and {len(body.output)} outputs for "
                          f"{len(carried)} carried values")
        trip = None
        if M is not None:
            if not isinstance(M, (np.ndarray, int)) or np.size(M) != 1:
                self.low.fail(f"a Loop whose trip count is {G._what(M)}, not known when converting")
            trip = int(np.asarray(M).reshape(-1)[0])
        go = self._known_bool(cond, True)
        scans = [[] for _ in range(len(body.output) - 1 - len(carried))]
        inits = {t.name: _array(t) for t in body.initializer}
        outer, i = self.env, 0
        try:
            while go and (trip is None or i < trip):
                if i >= G.MAX_UNROLL:
                    self.low.fail(f"a Loop of more than {G.MAX_UNROLL} iterations")
                env = ChainMap(dict(inits), outer)
                for vi, v in zip(body.input, [np.asarray(i, np.int64), np.asarray(go)] + carried):
                    if vi.name:
                        env.maps[0][vi.name] = v
                self.env = env
                self.run_nodes(body.node)
                outs = [env.get(o.name) for o in body.output]
                if any(v is None or isinstance(v, G.Bad) for v in outs):
                    return G.Bad()
                go = self._known_bool(outs[0], True)
                carried = outs[1:1 + len(carried)]
                for k, v in enumerate(outs[1 + len(carried):]):
                    scans[k].append(v)
                i += 1
        finally:
            self.env = outer
        stacked = [self.call("stack", [steps, 0], w) if steps else self.low.fail("a Loop that runs no iteration")
                   for steps in scans]
        return carried + stacked

    def _known_bool(self, v, default):
        if v is None:
            return default
        if isinstance(v, (bool, np.bool_)) or (isinstance(v, np.ndarray) and v.size == 1):
            return bool(np.asarray(v).reshape(-1)[0])
        self.low.fail(f"a loop condition that is {G._what(v)}, not known when converting")

    def _compare(self, node, a, at, w):
        x, y = a[0], a[1] if len(a) > 1 else None
        if any(isinstance(v, _Shape) for v in a) and all(isinstance(v, (_Shape, np.ndarray, int, np.number)) for v in a):
            a = [np.asarray(list(v), dtype=object) if isinstance(v, _Shape) else v for v in a]   # shape arithmetic
            x, y = a[0], a[1] if len(a) > 1 else None
        if not all(isinstance(v, (np.ndarray, int, float, np.number)) for v in a):
            op = {"Equal": "eq", "Greater": "gt", "GreaterOrEqual": "ge", "Less": "lt", "LessOrEqual": "le",
                  "Not": "logical_not"}.get(node.op_type)
            if op is None:
                self.low.fail(f"{node.op_type} of {' and '.join(G._what(v) for v in a)} (only of constants)")
            return self.call(op, a[:1] if op == "logical_not" else a[:2], w)   # a mask of the token ids
        f = {"Less": np.less, "LessOrEqual": np.less_equal, "Greater": np.greater, "GreaterOrEqual": np.greater_equal,
             "Equal": np.equal, "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}.get(node.op_type)
        return np.asarray(np.logical_not(x) if node.op_type == "Not" else f(x, y))

    op_Less = op_LessOrEqual = op_Greater = op_GreaterOrEqual = op_Equal = op_And = op_Or = op_Xor = op_Not = _compare

    def _minmax(self, node, a, at, w):
        x, *rest = a
        for y in rest:
            if isinstance(x, np.ndarray) and x.size == 1 and not isinstance(y, np.ndarray):
                x, y = y, x
            if not (isinstance(y, np.ndarray) and y.size == 1) and not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
                self.low.fail(f"{node.op_type} of {G._what(x)} and {G._what(y)} (only with a scalar)")
            if isinstance(x, np.ndarray):
                x = (np.maximum if node.op_type == "Max" else np.minimum)(x, y)
            else:
                c = float(y.reshape(-1)[0])
                x = self.call("clamp", [x, c, None] if node.op_type == "Max" else [x, None, c], w)
        return x

    op_Min = op_Max = _minmax

    def op_TopK(self, node, a, at, w):
        """The legacy export's sort of the lengths (pack_padded_sequence's, or torch.sort(-lengths)
        before one) or of their order (its inverse): the shared sort (graph.py)."""
        return list(self.call("sort", [a[0], at.get("axis", -1), bool(at.get("largest", 1))], w))

    def op_ReduceProd(self, node, a, at, w):
        if isinstance(a[0], tuple):          # the number of elements of a shape (Size products kept)
            n = 1
            for d in a[0]:
                n = n * d
            return n if not at.get("keepdims", 1) else _Shape([n])
        self.low.fail(f"ReduceProd of {G._what(a[0])} (only of a shape)")

    def op_Range(self, node, a, at, w):
        vals = [int(np.asarray(v).reshape(-1)[0]) if isinstance(v, (np.ndarray, np.number)) else v for v in a[:3]]
        if not all(isinstance(v, int) for v in vals):
            self.low.fail("a Range whose bounds are not known when converting")
        return np.arange(*vals)

    def op_ScatterElements(self, node, a, at, w):
        return self.call("scatter", [a[0], at.get("axis", 0), a[1], a[2]], w)

    def op_Identity(self, node, a, at, w):
        return a[0]

    def op_Dropout(self, node, a, at, w):
        return [a[0], None]

    def op_Where(self, node, a, at, w):
        """Where(mask, fill, x): torch's masked_fill as the exporters write it."""
        cond, fill, x = a[:3]
        if isinstance(cond, np.ndarray) and any(isinstance(v, _Shape) for v in (fill, x)) and \
                all(isinstance(v, (_Shape, np.ndarray)) for v in (fill, x)):    # shape arithmetic (expand's -1)
            f, v = (np.broadcast_to(np.asarray(list(u) if isinstance(u, _Shape) else u, dtype=object), cond.shape)
                    for u in (fill, x))
            return _Shape(p if isinstance(p, Size) else int(p) for p in np.where(cond, f, v).reshape(-1))
        if all(isinstance(v, np.ndarray) for v in (cond, fill, x)):
            return np.where(cond, fill, x)
        return self.call("masked_fill", [x, cond, fill], w)

    def op_Cast(self, node, a, at, w):
        v = a[0]
        if isinstance(v, np.ndarray):
            from onnx import helper
            return v.astype(helper.tensor_dtype_to_np_dtype(at["to"]))
        return v

    def op_Constant(self, node, a, at, w):
        if "value" in at:
            from onnx import TensorProto
            if not isinstance(at["value"], TensorProto):
                raise G.Refused(f"its value is a {type(at['value']).__name__}, not a tensor")
            return _array(at["value"])
        for k in ("value_float", "value_int"):
            if k in at:
                return np.asarray(at[k], np.float32 if k == "value_float" else np.int64)
        for k in ("value_floats", "value_ints"):
            if k in at:
                return np.asarray(at[k], np.float32 if k == "value_floats" else np.int64)
        self.low.fail("a Constant without a value")

    def op_Shape(self, node, a, at, w):
        if isinstance(a[0], (_Shape, np.ndarray)):     # of shape arithmetic or a constant: its length, its shape
            shape = (len(a[0]),) if isinstance(a[0], _Shape) else a[0].shape
            return _Shape(shape[at.get("start", 0):at.get("end", len(shape))])
        shape = self.call("size", [a[0]], w)
        if isinstance(shape, G.Bad):
            return shape
        shape = tuple(shape) if isinstance(shape, tuple) else (shape,)
        return _Shape(shape[at.get("start", 0):at.get("end", len(shape))])

    def op_Size(self, node, a, at, w):
        return np.asarray(int(np.prod(self.low.shape(a[0]))))

    def op_ConstantOfShape(self, node, a, at, w):
        shape = _ints(a[0])
        if shape is None:
            self.low.fail(f"a shape that is {G._what(a[0])}")
        value, dtype = 0.0, np.float32
        if "value" in at:
            from onnx import numpy_helper
            v = numpy_helper.to_array(at["value"]).reshape(-1)
            integer = v.dtype.kind in "iu"          # an integer shape (the legacy export of repeat's ones)
            value, dtype = (int(v[0]), np.int64) if integer else (float(v[0]), np.float32)
        if value == 0 and any(isinstance(d, Size) and d.sym for d in shape):
            return Zeros(tuple(shape))
        n = int(np.prod([max(int(d), 0) for d in shape], dtype=object))
        if n > MAX_CONSTANT:           # a shape the graph declares, not one an exporter writes
            self.low.fail(f"a ConstantOfShape of {n} elements (shape {[int(d) for d in shape]}): over the "
                          f"{MAX_CONSTANT} fastrnn materialises")
        return np.full([int(d) for d in shape], value, dtype)

    def op_Expand(self, node, a, at, w):
        x, shape = a[0], _ints(a[1])
        if shape is None:
            self.low.fail(f"expands to a shape that is {G._what(a[1])}")
        if isinstance(x, Zeros) or (isinstance(x, np.ndarray) and x.dtype.kind == "f" and not x.any()):
            xs = x.shape
            out = list(np.broadcast_shapes(tuple(int(d) for d in xs), tuple(int(d) for d in shape)))
            return Zeros(tuple(shape[i - (len(out) - len(shape))] if i >= len(out) - len(shape) and shape[
                i - (len(out) - len(shape))] != 1 else out[i] for i in range(len(out))))
        if isinstance(x, np.ndarray) and not _by_batch(shape, x.ndim):
            return np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))).copy()
        return self.call("expand", [x, list(shape)], w)

    def op_Tile(self, node, a, at, w):
        reps = _ints(a[1])
        if reps is None:
            self.low.fail(f"tiles by {G._what(a[1])}")
        if isinstance(a[0], np.ndarray) and not _by_batch(reps, a[0].ndim):
            return np.tile(a[0], [int(r) for r in reps])
        return self.call("repeat", [a[0], list(reps)], w)

    def op_Gather(self, node, a, at, w):
        x, idx = a[0], np.asarray(a[1]) if isinstance(a[1], np.number) else a[1]
        axis = at.get("axis", 0)
        if isinstance(x, tuple):                                   # shape arithmetic
            if isinstance(idx, np.ndarray) and idx.ndim == 0:
                return x[int(idx)]
            return _Shape(x[int(i)] for i in np.asarray(idx).reshape(-1))
        if isinstance(x, np.ndarray) and isinstance(idx, PT) and axis == 0:
            return self.call("embedding", [x, idx], w)
        if isinstance(x, np.ndarray) and isinstance(idx, np.ndarray):
            return np.take(x, idx, axis=axis)
        if isinstance(idx, G.FlatStepIdx) and axis == 0:      # rows arange(B) * T + lengths - 1
            return self.call("index", [x, [idx]], w)
        if isinstance(idx, G.Perm):           # rows in a packing's order, or back
            return self.call("index_select", [x, axis, idx], w)
        if isinstance(idx, np.ndarray) and idx.dtype.kind in "iu":
            if idx.ndim == 0:
                return self.call("select", [x, axis, int(idx)], w)
            if idx.ndim == 1 and idx.size == 1:
                i = int(idx[0])
                n = self.low.shape(x)[axis]
                i = i % n
                return self.call("slice", [x, axis, i, i + 1, 1], w)
        self.low.fail(f"gathers {G._what(idx)} from {G._what(x)}")

    def op_GatherND(self, node, a, at, w):
        x, idx = a[0], a[1]
        if isinstance(idx, G.PairIdx) and not at.get("batch_dims", 0):    # out[arange(B), lengths - 1]
            return self.call("index", [x, [np.arange(self.low.size("B")), idx.step]], w)
        self.low.fail(f"a GatherND of {G._what(x)} by {G._what(idx)} (only each row's step lengths - 1)")

    def op_Unsqueeze(self, node, a, at, w):
        axes = at.get("axes") if self.opset < 13 else _ints(a[1])
        x = a[0]
        if isinstance(x, (int, np.integer)) or (isinstance(x, np.ndarray) and x.ndim == 0 and x.dtype.kind in "iu"):
            return _Shape([int(x) if not isinstance(x, Size) else x])
        if isinstance(x, Size):
            return _Shape([x])
        n = len(self.low.shape(x)) + len(axes) if not isinstance(x, tuple) else 1 + len(axes)
        for ax in sorted(d % n for d in axes):
            x = self.call("unsqueeze", [x, ax], w)
        return x

    def op_Squeeze(self, node, a, at, w):
        axes = at.get("axes") if self.opset < 13 else (_ints(a[1]) if len(a) > 1 and a[1] is not None else None)
        x = a[0]
        if isinstance(x, tuple) and len(x) == 1:
            return x[0]
        if axes is None:
            return self.call("squeeze", [x], w)
        n = len(self.low.shape(x))
        for ax in sorted((d % n for d in axes), reverse=True):
            x = self.call("squeeze", [x, ax], w)
        return x

    def op_Reshape(self, node, a, at, w):
        x, shape = a[0], _ints(a[1])
        if shape is None:
            self.low.fail(f"reshapes to a shape that is {G._what(a[1])}")
        if isinstance(x, tuple):
            return _Shape(x)
        if not at.get("allowzero", 0):                    # 0: keep that dimension of the input
            have = self.low.shape(x)
            shape = [have[i] if d == 0 else d for i, d in enumerate(shape)]
        return self.call("view", [x, list(shape)], w)

    def op_Flatten(self, node, a, at, w):
        x = a[0]
        n = len(self.low.shape(x))
        axis = at.get("axis", 1) % (n + 1) if n else 0
        sizes = self.low.shape(x)
        return self.call("view", [x, [int(np.prod(sizes[:axis])), int(np.prod(sizes[axis:]))]], w)

    def op_Transpose(self, node, a, at, w):
        x = a[0]
        perm = at.get("perm") or list(range(len(self.low.shape(x))))[::-1]
        return self.call("permute", [x, list(perm)], w)

    def op_Slice(self, node, a, at, w):
        x = a[0]
        if self.opset < 10:
            starts, ends, axes, steps = at["starts"], at["ends"], at.get("axes"), None
        else:
            starts, ends = _ints(a[1]), _ints(a[2])
            axes = _ints(a[3]) if len(a) > 3 and a[3] is not None else None
            steps = _ints(a[4]) if len(a) > 4 and a[4] is not None else None
        if starts is None or ends is None:
            self.low.fail("a Slice whose bounds are not known when converting")
        axes = axes or list(range(len(starts)))
        steps = steps or [1] * len(starts)
        if isinstance(x, tuple):
            return _Shape(x[int(starts[0]):int(min(ends[0], 2**62)):int(steps[0])])
        for ax, s, e, st in zip(axes, starts, ends, steps):
            x = self.call("slice", [x, ax, int(s), int(min(e, 2**62)), int(st)], w)
        return x

    def op_Concat(self, node, a, at, w):
        axis = at.get("axis", 0)
        if all(isinstance(v, (tuple, np.ndarray)) for v in a) and any(isinstance(v, tuple) for v in a):
            out = []
            for v in a:
                out += _ints(v)
            return _Shape(out)
        return self.call("cat", [list(a), axis], w)

    def op_Split(self, node, a, at, w):
        x, axis = a[0], at.get("axis", 0)
        sizes = at.get("split") if self.opset < 13 else (_ints(a[1]) if len(a) > 1 and a[1] is not None else None)
        if sizes is None:
            n = self.low.shape(x)[axis] if not isinstance(x, np.ndarray) else x.shape[axis]
            k = at.get("num_outputs", len(node.output))
            each = -(-n // k)
            sizes = [min(each, n - i * each) for i in range(k)]
        if len(sizes) != len(node.output):
            self.low.fail(f"a Split into {len(sizes)} pieces with {len(node.output)} outputs")
        return list(self.call("split_with_sizes", [x, [int(s) for s in sizes], axis], w))

    def op_BatchNormalization(self, node, a, at, w):
        if at.get("training_mode", 0):
            self.low.fail("BatchNormalization in training mode")
        return self.call("batch_norm", [a[0], a[1], a[2], a[3], a[4], False, 0.1, at.get("epsilon", 1e-5)], w)

    def op_SplitToSequence(self, node, a, at, w):
        x, axis = a[0], at.get("axis", 0)
        split = _ints(a[1]) if len(a) > 1 and a[1] is not None else None
        if isinstance(x, PT) and axis % len(x.axes) == len(x.axes) - 1 and split in (None, [1]):
            x = G._as_series(self.low, x) or x      # steps of a (B, T) series
        n = self.low.shape(x)[axis] if not isinstance(x, np.ndarray) else x.shape[axis]
        if split is None:                  # pieces of one, the axis dropped unless keepdims
            if at.get("keepdims", 1):
                return tuple(self.call("split_with_sizes", [x, [1] * n, axis], w))
            return tuple(self.call("select", [x, axis, i], w) for i in range(n))
        if np.ndim(a[1]) == 0:
            split = [min(split[0], n - k) for k in range(0, n, max(split[0], 1))]
        return tuple(self.call("split_with_sizes", [x, [int(s) for s in split], axis], w))

    def op_SequenceAt(self, node, a, at, w):
        seq, pos = a
        if not isinstance(seq, tuple):
            self.low.fail(f"SequenceAt of {G._what(seq)}")
        i = int(_ints(pos)[0])
        if not -len(seq) <= i < len(seq):
            self.low.fail(f"SequenceAt {i} of a sequence of {len(seq)} tensors")
        return seq[i]

    def op_Sqrt(self, node, a, at, w):
        """The square root of a size (the legacy export of scaled_dot_product_attention computes its
        scale from the features' size); of a tensor, the shared op."""
        v = _ints(a[0]) if isinstance(a[0], tuple) else a[0]      # a shape's sizes
        if isinstance(v, list) or isinstance(v, (int, float, np.number)) or \
                isinstance(v, np.ndarray) and v.dtype.kind in "fiu":
            return np.sqrt(np.asarray(v, np.float64)).astype(np.float32)
        return self.call("sqrt", [a[0]], w)

    def op_MatMul(self, node, a, at, w):
        return self.call("matmul", a[:2], w)

    def _window(self, at, what):
        """ONNX's 1-D window attributes -> (kernel, stride, pads [begin, end], dilation)."""
        k = at.get("kernel_shape")
        if k is not None and len(k) != 1:
            self.low.fail(f"a {len(k)}-D {what} (only 1-D windows over time)")
        if at.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            self.low.fail(f"a {what} with auto_pad={at['auto_pad']} (the exporters write explicit pads)")
        pads = list(at.get("pads", [0, 0]))
        if len(pads) != 2:
            self.low.fail(f"a {what} with pads {pads}")
        return (k[0] if k else None, list(at.get("strides", [1]))[0], pads, list(at.get("dilations", [1]))[0])

    def op_Conv(self, node, a, at, w):
        k, stride, pads, dilation = self._window(at, "Conv")
        bias = a[2] if len(a) > 2 else None
        return self.call("conv1d", [a[0], a[1], bias, stride, pads, dilation, at.get("group", 1)], w)

    def op_MaxPool(self, node, a, at, w):
        k, stride, pads, dilation = self._window(at, "MaxPool")
        if len(node.output) > 1 and node.output[1]:
            self.low.fail("a MaxPool whose indices are used")
        return self.call("max_pool1d", [a[0], k, stride, pads, dilation, bool(at.get("ceil_mode", 0))], w)

    def op_AveragePool(self, node, a, at, w):
        k, stride, pads, _ = self._window(at, "AveragePool")
        return self.call("avg_pool1d", [a[0], k, stride, pads, bool(at.get("ceil_mode", 0)),
                                        bool(at.get("count_include_pad", 0))], w)

    def op_Gemm(self, node, a, at, w):
        A, B, C = a[0], a[1], a[2] if len(a) > 2 else None
        alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
        if at.get("transA", 0):
            self.low.fail("a Gemm with transA (only alpha x W^T + beta b)")
        if not isinstance(B, np.ndarray):
            self.low.fail("a Gemm whose weight is not a constant")
        if beta == 0:                     # torch.mm exports as a Gemm with beta 0 and no C
            C = None
        W = B if at.get("transB", 0) else self.derived(B, "T", lambda: np.ascontiguousarray(B.T))
        if alpha != 1:
            W = self.derived(W, ("alpha", alpha), lambda: (W * np.float32(alpha)).astype(np.float32))
        if C is not None and beta != 1:
            C = self.derived(C, ("beta", beta), lambda: (np.asarray(C) * np.float32(beta)).astype(np.float32))
        if C is not None and (not isinstance(C, np.ndarray) or C.size not in (1, W.shape[0])):
            self.low.fail("a Gemm bias that is not a vector")
        b = None if C is None else C if C.shape == (W.shape[0],) else self.derived(
            C, W.shape[0], lambda: np.broadcast_to(C.reshape(-1), (W.shape[0],)).astype(np.float32))
        return self.call("linear", [A, W, b], w)

    def derived(self, a, key, make):
        """One array made from constant a, the same object every time (the nodes of an unrolled
        loop are recognised as one by their weights' identity)."""
        k = (id(a), key)
        if k not in self.cache:
            self.cache[k] = (a, make())
        return self.cache[k][1]

    def _arith(self, node, a, at, w):
        x, y = a[0], a[1]
        if (isinstance(x, Size) or isinstance(y, Size)) and _int_scalar(x) and _int_scalar(y):
            p, q = (v if isinstance(v, Size) else int(v) for v in (x, y))      # s * b of x.shape: one size
            return _PYOPS[node.op_type](p, q)
        if any(isinstance(p, G.StepIdx) and isinstance(q, tuple) for p, q in ((x, y), (y, x))):
            # lengths - 1 + arange(B) * T (that product computed as shape arithmetic)
            x, y = (np.asarray([int(v) for v in p], np.int64) if isinstance(p, tuple) else p for p in (x, y))
        if (isinstance(x, (tuple, Size)) or isinstance(y, (tuple, Size))) and _shape_like(x) and _shape_like(y):
            xs, ys = _ints(x) if not isinstance(x, Size) else [x], _ints(y) if not isinstance(y, Size) else [y]
            n = max(len(xs), len(ys))
            xs, ys = xs * (n // len(xs)), ys * (n // len(ys))
            return _Shape(_PYOPS[node.op_type](p, q) for p, q in zip(xs, ys))
        if isinstance(x, np.ndarray) and isinstance(y, np.ndarray):
            r = np.asarray({"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[node.op_type](x, y))
            return r.astype(x.dtype) if x.dtype.kind in "iu" and y.dtype.kind in "iu" else r.astype(np.float32)
        if isinstance(y, np.ndarray) and y.size == 1:
            y = float(y.reshape(-1)[0])
        if isinstance(x, np.ndarray) and x.size == 1 and node.op_type in ("Add", "Mul"):
            x, y = y, float(x.reshape(-1)[0])
        elif isinstance(x, np.ndarray) and x.size == 1 and node.op_type == "Sub":
            return self.call("rsub", [y, float(x.reshape(-1)[0])], w)
        return self.call(_ARITH[node.op_type], [x, y], w)

    op_Add = op_Sub = op_Mul = op_Div = _arith

    def op_Pow(self, node, a, at, w):
        e = a[1]
        if isinstance(e, np.ndarray) and e.size == 1 and not isinstance(a[0], np.ndarray):
            e = float(e.reshape(-1)[0])
        return self.call("pow", [a[0], e], w)

    def op_Neg(self, node, a, at, w):
        return self.call("neg", a[:1], w)

    def _act(self, node, a, at, w):
        return self.call(_ACTS[node.op_type], a[:1], w)

    op_Relu = op_Sigmoid = op_Tanh = op_Softsign = op_Softplus = op_Selu = op_Exp = op_Mish = op_HardSwish = _act

    def op_HardSigmoid(self, node, a, at, w):
        return self.call("hard_sigmoid", [a[0], float(at.get("alpha", 0.2)), float(at.get("beta", 0.5))], w)

    def op_PRelu(self, node, a, at, w):
        return self.call("prelu", a[:2], w)

    def op_LayerNormalization(self, node, a, at, w):
        x = a[0]
        n = len(self.low.shape(x))
        axis = int(at.get("axis", -1))
        if axis % n != n - 1:
            self.low.fail(f"a LayerNormalization from axis {axis} (only over the last, the features)")
        if int(at.get("stash_type", 1)) != 1:
            self.low.fail("a LayerNormalization computed in a type other than float")
        if any(o for o in node.output[1:]):
            self.low.fail("a LayerNormalization whose mean or inverse deviation is read")
        scale = a[1] if len(a) > 1 else None
        bias = a[2] if len(a) > 2 else None
        return self.call("layer_norm", [x, [self.low.shape(x)[-1]], scale, bias, at.get("epsilon", 1e-5)], w)

    def op_Gelu(self, node, a, at, w):
        return self.call("gelu", [a[0], at.get("approximate", "none")], w)

    def op_LeakyRelu(self, node, a, at, w):
        return self.call("leaky_relu", [a[0], at.get("alpha", 0.01)], w)

    def op_Elu(self, node, a, at, w):
        return self.call("elu", [a[0], at.get("alpha", 1.0)], w)

    def op_Clip(self, node, a, at, w):
        lo = at.get("min") if self.opset < 11 else (float(a[1]) if len(a) > 1 and a[1] is not None else None)
        hi = at.get("max") if self.opset < 11 else (float(a[2]) if len(a) > 2 and a[2] is not None else None)
        return self.call("clamp", [a[0], lo, hi], w)

    def _softmax(self, node, a, at, w):
        x = a[0]
        n = len(self.low.shape(x))
        axis = at.get("axis", -1 if self.opset >= 13 else 1)
        if self.opset < 13 and axis % n != n - 1:
            self.low.fail(f"a {node.op_type} of opset {self.opset} over axis {axis} (it flattens the axes after it)")
        return self.call("softmax" if node.op_type == "Softmax" else "log_softmax", [x, axis], w)

    op_Softmax = op_LogSoftmax = _softmax

    def _reduce(self, node, a, at, w):
        axes = at.get("axes")                               # an attribute before opset 18
        if axes is None and len(a) > 1 and a[1] is not None:
            axes = _ints(a[1])                              # an input since
        if axes is None or len(axes) != 1:
            self.low.fail(f"{node.op_type} over {axes}: pooling reduces the time axis alone")
        if node.op_type == "ReduceL2":
            return self.call("linalg_vector_norm", [a[0], 2, list(axes), bool(at.get("keepdims", 1))], w)
        op = {"ReduceMean": "mean", "ReduceMax": "amax", "ReduceSum": "sum"}[node.op_type]
        return self.call(op, [a[0], list(axes), bool(at.get("keepdims", 1))], w)

    op_ReduceMean = op_ReduceMax = op_ReduceSum = op_ReduceL2 = _reduce

    # -- recurrent nodes -------------------------------------------------------------------------
    def _recurrent(self, node, a, at, w):
        from ..onnx import recurrent_layer
        a = list(a) + [None] * (8 - len(a))
        X, Wt, R, Bb, lens, h0, c0, P = a[:8]
        if not all(v is None or isinstance(v, np.ndarray) for v in (Wt, R, Bb, P)):
            self.low.fail("recurrent weights that are not constants")
        try:
            layer = recurrent_layer(node.op_type, Wt, R, Bb, P, at)
        except (ModelFormatError, UnsupportedError) as e:
            self.low.fail(str(e))
        layout = int(at.get("layout", 0))
        if isinstance(lens, np.ndarray):
            self.low.fail("a constant sequence_lens (give lengths as a graph input)")
        y, yh, yc = self.low.onnx_recurrent(layer, X, h0, c0, lens, layout)
        return [y, yh, yc]

    def op_LSTM(self, node, a, at, w):
        return self._recurrent(node, a, at, w)

    op_GRU = op_RNN = op_LSTM


# ---- elementwise functions written as several nodes --------------------------------------------
#
# torch's legacy exporter writes GELU as Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5 (its
# tanh form with Pow / Mul / Tanh), in some order of the operands. Such a chain becomes one Gelu
# node before the walk: from each Erf / Tanh, up through elementwise nodes with constants to a
# source x, down through single consumers to a root; the nodes between are evaluated on probe
# values, and a chain that computes gelu(x) (or its tanh form) is replaced. The same check for
# every way of writing it, no pattern per exporter.

_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Neg", "Sqrt"}
_PROBE = np.linspace(-6.0, 6.0, 49)


def _erf(v):
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(v)


_FUSED = {"gelu": lambda v: v * 0.5 * (1.0 + _erf(v / np.sqrt(2.0))),
          "tanh": lambda v: 0.5 * v * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (v + 0.044715 * v ** 3)))}


def _graph_consts(graph):
    from onnx import numpy_helper
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return consts


def _eval_chain(nodes, x, consts):
    """The value of the chain's last node for x = the probe (None when it reads another tensor)."""
    env = {x: _PROBE}
    fns = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power}
    with np.errstate(all="ignore"):
        for n in nodes:
            args = []
            for i in n.input:
                if i in env:
                    args.append(env[i])
                elif i in consts and consts[i].size == 1 and consts[i].dtype.kind == "f":
                    args.append(float(consts[i].reshape(-1)[0]))
                else:
                    return None
            op = n.op_type
            if op in fns and len(args) == 2:
                env[n.output[0]] = fns[op](args[0], args[1])
            elif op in ("Erf", "Tanh", "Neg", "Sqrt") and len(args) == 1:
                env[n.output[0]] = {"Erf": _erf, "Tanh": np.tanh, "Neg": np.negative, "Sqrt": np.sqrt}[op](args[0])
            else:
                return None
    return np.broadcast_to(env[nodes[-1].output[0]], _PROBE.shape)


def fuse_elementwise(graph):
    """The graph's nodes with GELU chains made one Gelu node each (section note)."""
    nodes = list(graph.node)
    if not any(n.op_type in ("Erf", "Tanh") for n in nodes):
        return nodes
    from onnx import helper
    consts = _graph_consts(graph)
    prod = {o: n for n in nodes for o in n.output}
    users = {}
    for n in nodes:
        for i in set(n.input):
            users.setdefault(i, []).append(n)
    outs = {o.name for o in graph.output}
    gone, put = set(), {}

    def between(x, root):
        """The nodes from x (exclusive) to root, in graph order, or None when one reads another
        non-constant tensor or is used outside the chain."""
        seen, stack = set(), [root]
        while stack:
            n = stack.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            for i in n.input:
                if i == x or i in consts:
                    continue
                p = prod.get(i)
                if p is None or p.op_type not in _ELEMENTWISE:
                    return None
                stack.append(p)
        chain = [n for n in nodes if id(n) in seen]
        inner = {o for n in chain for o in n.output} - {root.output[0]}
        if any(o in outs or any(id(u) not in seen for u in users.get(o, ())) for o in inner):
            return None
        return chain
    for t in nodes:
        if t.op_type not in ("Erf", "Tanh") or id(t) in gone:
            continue
        sources, todo = [], [t.input[0]]
        while todo and len(sources) < 12:   # up: the candidates for x, the nearest first
            u = todo.pop(0)
            if u in sources or u in consts:
                continue
            sources.append(u)
            p = prod.get(u)
            if p is not None and p.op_type in _ELEMENTWISE:
                todo += list(p.input)
        best, r = None, t
        for _ in range(6):                  # down: the candidates for the root
            us = users.get(r.output[0], [])
            if len(us) != 1 or us[0].op_type not in _ELEMENTWISE:
                break
            r = us[0]
            for x in sources:
                chain = between(x, r)
                v = _eval_chain(chain, x, consts) if chain else None
                kind = next((k for k, f in _FUSED.items()
                             if v is not None and np.allclose(v, f(_PROBE), rtol=1e-5, atol=1e-6)), None)
                if kind:
                    best = (x, r, chain, kind)
        if best:
            x, r, chain, kind = best
            gone.update(id(n) for n in chain)
            put[id(r)] = helper.make_node("Gelu", [x], [r.output[0]], name=(r.name or "") + "/gelu",
                                          approximate="none" if kind == "gelu" else "tanh")
    return [put.get(id(n), n) for n in nodes if id(n) not in gone or id(n) in put]


def _final_first(low, outs):
    """A graph that outputs final states only (Y_h, h_n[-1]): when its first output is the last
    layer's h, every direction in order, that output becomes the pipeline's (return_sequences
    False), so predict and streams return it, as for the module whose forward returns it. Other
    outputs stay states."""
    if not outs or any(o["kind"] == "y" for o in outs) or not low.rnns:
        return
    o, r = outs[0], low.rnns[-1]
    layer = low.layers[-1]
    if not isinstance(layer, ir.Recurrent) or r.last != len(low.layers) - 1 or layer.carry:
        return
    k = r.top
    if o["parts"] != [[k, d] for d in range(r.D)] or ("S" not in o["axes"] and r.D != 1):
        return
    layer.return_sequences = False
    axes = [("D" if r.D > 1 else "1") if l == "S" else l for l in o["axes"]]
    outs[0] = {"name": o["name"], "kind": "y", "axes": axes, "dirs": r.D, "last": "final"}


def convert(model, name):
    """An ONNX ModelProto -> Model (with the graph signature run() reads). A graph whose
    sequence input has a symbolic time axis but that fixes the time elsewhere (torch's dynamo
    exporter specializes it when forward reshapes with x.size(1)) lowers only at that length:
    when the made-up length fails, the lengths the graph's Reshape shapes name are tried."""
    hint = []
    try:
        return _convert(model, name, None, hint)
    except UnsupportedError as e:
        first = e
    for T in list(dict.fromkeys(hint + _time_candidates(model))):
        for time_first in (False, True):
            try:
                return _convert(model, name, (T, time_first), [])
            except UnsupportedError:
                continue
    raise first


def _time_candidates(model):
    """Positive sizes written into Reshape targets (constants), most frequent first, at most 3;
    then the length an unrolled loop steps through (one more than the largest single step a
    Gather, Slice or SequenceAt takes: the exporter fixed the loop's length), and an input axis named by a
    number (the dynamo exporter's name for a size it specialized)."""
    from collections import Counter
    consts = {t.name: t for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    seen = Counter()
    for n in model.graph.node:
        if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in consts:
            try:
                vals = _array(consts[n.input[1]]).reshape(-1)
            except ModelFormatError:
                continue
            seen.update(int(v) for v in vals if 1 < v < 1_000_000)
    out = [v for v, _ in seen.most_common(3)]
    steps = []
    for n in model.graph.node:
        try:
            if len(n.input) < 2:
                continue
            if n.op_type in ("Gather", "SequenceAt") and n.input[1] in consts:
                idx = _array(consts[n.input[1]])
                if idx.ndim == 0 or idx.size == 1:
                    steps.append(int(idx.reshape(-1)[0]))
            elif n.op_type == "Slice" and len(n.input) > 2 and n.input[1] in consts and n.input[2] in consts:
                s0, e0 = _array(consts[n.input[1]]).reshape(-1), _array(consts[n.input[2]]).reshape(-1)
                if s0.size == 1 and e0.size == 1 and int(e0[0]) == int(s0[0]) + 1:
                    steps.append(int(s0[0]))
        except (ModelFormatError, ValueError, TypeError, IndexError):
            continue
    if steps and 0 < max(steps) + 1 < 1_000_000:
        out.append(max(steps) + 1)
    inits = {t.name for t in model.graph.initializer}
    first = next((vi.name for vi in model.graph.input if vi.name not in inits), None)
    for n in model.graph.node:           # input.split(1, dim=1): one output per step
        if n.op_type == "Split" and n.input and n.input[0] == first and len(n.output) > 1:
            out.append(len(n.output))
    for vi in model.graph.input[:1]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param.isdigit() and 1 < int(d.dim_param) < 1_000_000:
                out.append(int(d.dim_param))
    return list(dict.fromkeys(out))


def _out_dtype(model, oname):
    """A graph output's integer dtype ("int32" | "int64"; int64 when the graph does not say)."""
    from onnx import TensorProto
    vi = next((o for o in model.graph.output if o.name == oname), None)
    t = vi.type.tensor_type.elem_type if vi is not None else 0
    return "int32" if t == TensorProto.INT32 else "int64"


def _convert(model, name, T, hint):
    """hint: the lengths the lowering asked for (a Linear over flattened steps fixes the time)."""
    from fastrnn import Model
    from ..passes import cut_early, fold
    fe = _Frontend(model, name)
    fe.time_size = T
    outs = fe.run()
    low = fe.low
    if getattr(low, "time_hint", None):
        hint.append(low.time_hint)
    tails = {}                        # graph output -> k of its out[:, -k:]
    valid = set()                     # graph outputs taking each row's step lengths - 1
    for oname, v in outs:
        if isinstance(v, G.Bad):
            continue
        if v is None:
            low.errors.append(f"output {oname!r}: no node makes it")
    low.raise_errors()
    finals = {}                     # the last state of an unrolled cell, beside its every step
    loopy = [(o, v) for o, v in outs if G.cells.loopish(v)]
    for oname, v in sorted(loopy, key=lambda ov: G.chain_last(low, ov[1]) is not None):   # finals last
        try:
            f = G.chain_final(low, v)
            if f is not None:
                finals[oname] = f
                continue
            outs[[o for o, _ in outs].index(oname)] = (oname, low.tensor(v))
        except G.REFUSALS as e:
            raise UnsupportedError(f"convert: graph output {oname!r}: {G.why(e)}") from None
    io_in, io_out, unused = [], [], []
    for iname, v in fe.inputs:
        if isinstance(v, PT):
            if low.series_of is not None and v == low.series_of:
                v = G._as_series(low, v)
            if low.channel_first:          # (N, F, T): the lowering swapped its last two axes' roles
                v = G.replace(v, axes=tuple({"x1": "F", "F": "x1"}.get(a, a) for a in v.axes))
            axes = [low.lab(l) for l in v.axes]
            if any(l in ("x0", "x1") for l in axes):
                raise UnsupportedError(f"convert: the graph input {iname!r} never reaches a recurrent node")
            if "T" not in axes:
                raise UnsupportedError(f"convert: the graph input {iname!r} is one step (axes {', '.join(axes)}: no "
                                       f"time axis), a step of a loop the graph's user drives: fastrnn's run() takes "
                                       f"sequences; convert the PyTorch module instead (its stream() is that loop)")
            io_in.append({"name": iname, "role": "x", "axes": axes})
        elif v.index in low.length_inputs:
            io_in.append({"name": iname, "role": "lengths"})
        elif low.static_cols(v.index) is not None:
            io_in.append({"name": iname, "role": "static", "cols": list(low.static_cols(v.index))})
        elif v.index in low.state_rows:
            taken = low.state_rows[v.index]
            axes = list(low.state_axes.get(v.index, ("S", "B", "F")))
            n = v.shape[axes.index("S")] if len(v.shape) == len(axes) else len(taken)
            if sorted(taken) != list(range(n)):
                raise UnsupportedError(f"convert: the state input {iname!r} has rows that initialise no state")
            io_in.append({"name": iname, "role": "state", "axes": axes, "parts": [list(taken[r]) for r in range(n)]})
        else:
            io_in.append(None)              # read by nothing fastrnn runs
            unused.append(iname)
    time, ends = None, []
    for oname, v in outs:
        split = ()
        if isinstance(v, G.FeatSplit):       # Reshape of the features to (k, F): run() gives that shape
            v, split = v.x, v.ks
        if oname in finals:
            s, lead = finals[oname]
            io_out.append({"name": oname, "kind": "state", "axes": ["S"] * lead + ["B", "F"], "parts": [[s, 0]]})
            continue
        if isinstance(v, G.Input) and v.index in low.length_inputs and v.rows is None:
            iname = next(n for n, w in fe.inputs if isinstance(w, G.Input) and w.index == v.index)
            io_out.append({"name": oname, "kind": "lengths", "input": iname, "dtype": _out_dtype(model, oname)})
            continue
        try:
            low.check_rows(v, "it")
            if isinstance(v, G.HN):
                io_out.append({"name": oname, "kind": "state", "axes": [low.lab(l) for l in v.axes],
                               "parts": [list(p) for p in v.parts]})
                continue
            y = low.tensor(v, "a tensor of the pipeline or final states")
            low.check_rows(y, "it")
        except G.REFUSALS as e:
            raise UnsupportedError(f"convert: graph output {oname!r}: {G.why(e)}") from None
        try:
            y = low.whole(y)
        except G.REFUSALS as e:
            raise UnsupportedError(f"convert: graph output {oname!r} is an intermediate tensor of the pipeline "
                                   f"(only the end of the pipeline and final states can be outputs): "
                                   f"{G.why(e)}") from None
        last = {"final": "final", "last": "step", "valid_last": "step"}.get(y.time)
        if y.time == "valid_last":
            valid.add(oname)
        if last is None and "T" not in [p for l in y.axes for p in (low.lab(l) if isinstance(low.lab(l), tuple)
                                                                        else (low.lab(l),))]:
            last = "final"            # pooled over time: one step
        if y.time is None and y.pos in low.cut:
            raise UnsupportedError(f"convert: graph output {oname!r} takes every step of a recurrent layer whose "
                                   f"final state another output takes")
        if y.time in ("longest", "longest_last") or y.padded:
            raise UnsupportedError(f"convert: graph output {oname!r} is cut at the batch's longest row")
        if isinstance(y.time, tuple):      # ("tail", k): a Slice of the last k steps, still a sequence
            tails[oname] = y.time[1]
        axes = []
        for l in y.axes:
            l = low.lab(l)
            axes.append("*".join(l) if isinstance(l, tuple) else l)
        if split:
            if axes[-1] != "F" or y.dirs != 1:
                raise UnsupportedError(f"convert: graph output {oname!r} splits an axis other than its features")
            axes = axes[:-1] + [f"#{k}" for k in split] + ["F"]
        io_out.append({"name": oname, "kind": "y", "axes": axes, "dirs": y.dirs, "last": last})
        ends.append((oname, y))
    for oname, y in ends:                  # the engine has one output: each "y" must be all of it
        if y.pos != len(low.layers) or y.cols is not None:
            raise UnsupportedError(f"convert: graph output {oname!r} is an intermediate tensor of the pipeline "
                                   f"(only the end of the pipeline and final states can be outputs)")
    _final_first(low, io_out)
    ys = [(o["last"], tails.get(o["name"]), o["name"] in valid) for o in io_out if o["kind"] == "y"]
    if len(set(ys)) > 1:
        raise UnsupportedError("convert: graph outputs take the pipeline's steps in different ways (every step, "
                               "the last step, the last steps)")
    if ys and ys[0][0] == "step":
        time = "valid_last" if ys[0][2] else "last"
    if ys and ys[0][1] is not None:
        time = {"tail": ys[0][1]}
    meta = {"source": "onnx", "opset": fe.opset, "producer": model.producer_name or None,
            "frontend": "graph"}
    if unused:                             # run() accepts (and ignores) feeds for them, as onnxruntime does
        meta["unused_inputs"] = unused
    layers, head = G.split_head(low, fold)
    layers, time = cut_early(layers, time)
    return Model(layers, meta=meta, signature={"outputs": None, "states": None, "time": time, "head": head,
                                               "graph": {"inputs": [e for e in io_in if e], "outputs": io_out}})
