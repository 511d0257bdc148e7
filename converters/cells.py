"""Unrolled recurrent cells: one step's arithmetic recognised as an LSTM, GRU or RNN cell.

An exporter that cannot write a recurrence as one operator writes every step of it as plain
arithmetic: torch.onnx (legacy and dynamo) of nn.LSTMCell / GRUCell / RNNCell called in a Python
loop over time, and the dynamo exporter's nn.RNN, give per step a Gemm / MatMul of the step's
input and one of the previous state, a Split into gates, Add, Mul, Sub, Sigmoid, Tanh, Relu. The
shared lowering (converters/graph.py) runs those ops on STEP EXPRESSIONS instead of refusing them
(any capture that decomposes a cell reaches the same code):

  Aff(src, W, b)     W src + b for one source (a Linear / Gemm / MatMul; Split takes row ranges)
  Atom(kind, arg)    an activation of an expression
  Add(a, b, sign)    a + sign * b;  Mul(a, b);  Const(value) a scalar or per-feature constant
  Leaf(ps)           a per-step value the loop machinery knows (graph.PS: step t of a sequence,
                     the state of a cell chain)
  ZLeaf(width)       a zero initial state (an h0 / c0 made in forward)
  Lead(x, n)         x with n leading unit axes (the (1, B, H) state of an unrolled nn.RNN)

Nothing is decided while the ops are read. When a step value is used as a tensor (stacked over
the steps, a graph output, read by a layer of the pipeline), to_ps() recognises it top down:

  - its STEP is the latest sequence step it depends on; the cell at step t is expanded into a sum
    of products of the step's own arithmetic only (nodes of earlier steps, activations and
    linear maps stay opaque), so how the exporter wrote it (h - n)*z + n, (1 - z)*n + z*h, the
    order of operands) does not matter;
  - the sum is matched against the three cells of torch's definitions (docs/pytorch.md):
      RNN   h' = act(W x + U h + b)                         act tanh or relu
      LSTM  c' = s(Af) c + s(Ai) tanh(Ag),  h' = s(Ao) tanh(c')
      GRU   h' = (1 - z) n + z h,  z = s(Az),  n = tanh(Ain + s(Ar) * Ahn)   (and z <-> 1 - z)
    where the A are linear forms of the step's input x (step t) and the previous state h (step
    t - 1, or zeros at step 0); their weights are read off the linear maps and stacked in torch's
    gate order;
  - the previous state is recognised first (recursively), and the cell goes through the same
    chain handler as an explicit lstm_cell / gru_cell call (graph._cell), which checks that every
    step is the same cell continuing the previous step's state: a loop becomes one Recurrent
    layer exactly as a module capture's cell loop does.

A step value that is no cell (per-step arithmetic the pipeline cannot run) is refused with a
message naming what it is. Weights are interned by content, so the copies every step of an
unrolled graph holds are one array (the chain check compares identity).
"""
from __future__ import annotations

import hashlib
import sys

import numpy as np

from . import graph as G


class Sx:
    """A step expression (module note). Compared by identity."""
    width = 0


class Aff(Sx):
    def __init__(self, src, W, b):
        self.src, self.W, self.b, self.width = src, W, b, int(W.shape[0])


class Atom(Sx):
    def __init__(self, kind, alpha, arg):
        self.kind, self.alpha, self.arg, self.width = kind, alpha, arg, arg.width


class Add(Sx):
    def __init__(self, a, b, sign):
        self.a, self.b, self.sign, self.width = a, b, sign, max(a.width, b.width)


class Mul(Sx):
    def __init__(self, a, b):
        self.a, self.b, self.width = a, b, max(a.width, b.width)


class Const(Sx):
    def __init__(self, v):
        self.v = v
        self.width = 1 if np.ndim(v) == 0 else int(np.shape(v)[-1])


class Leaf(Sx):
    def __init__(self, ps, width):
        self.ps, self.width = ps, width


class ZLeaf(Sx):
    def __init__(self, width):
        self.width = width


class ILeaf(Sx):
    """An initial state forward takes (one row of a state argument, graph.Input)."""
    def __init__(self, inp, width):
        self.inp, self.width = inp, width


class Lead(Sx):
    def __init__(self, inner, n):
        self.inner, self.n, self.width = inner, n, inner.width


class Cat(Sx):
    """torch.cat of step values along the features (a Linear over it splits its columns)."""
    def __init__(self, parts):
        self.parts, self.width = tuple(parts), sum(p.width for p in parts)


def is_step(v):
    return isinstance(v, Sx)


def loopish(v):
    return isinstance(v, (Sx, G.PS))


# ---- building (from the graph's handlers) ---------------------------------------------------

def _state(low):
    if not hasattr(low, "sx"):
        low.sx = {"leaf": {}, "zero": {}, "done": {}, "const": {}, "const_id": {}, "step": {}, "cols": {}}
    return low.sx


def at_last_step(low, v):
    """Whether v, a step value, reads only the last step of sequences (out[:, -1] and per-step
    layers and arithmetic of it), no cell state: a head's value, not a loop's. Such a value is a
    tensor of the pipeline (graph._arith resolves it before a product or sum of two of them,
    which no cell matcher needs to see)."""
    seen, todo = set(), [v]
    while todo:
        n = todo.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, G.PS):
            if n.src[0] != "seq" or n.t != G._ps_steps(low, n.src) - 1:
                return False
        elif isinstance(n, Leaf):
            todo.append(n.ps)
        elif isinstance(n, (ZLeaf, ILeaf)):
            return False
        elif isinstance(n, (Add, Mul)):
            todo += [n.a, n.b]
        elif isinstance(n, Aff):
            todo.append(n.src)
        elif isinstance(n, Atom):
            todo.append(n.arg)
        elif isinstance(n, Lead):
            todo.append(n.inner)
        elif isinstance(n, Cat):
            todo += list(n.parts)
        elif not isinstance(n, Const):
            return False
    return True


def lift(low, v):
    """v as (node, leading unit axes)."""
    if isinstance(v, Lead):
        return v.inner, v.n
    if isinstance(v, Sx):
        return v, 0
    if isinstance(v, G.PS):
        return _lift_ps(low, v)
    if isinstance(v, G.Zeros):
        shape = tuple(int(d) for d in v.shape)
        if len(shape) < 2 or any(d != 1 for d in shape[:-2]):
            low.fail(f"a zero tensor of shape {shape} inside a loop over time")
        st = _state(low)["zero"]
        return st.setdefault(shape[-1], ZLeaf(shape[-1])), len(shape) - 2
    if isinstance(v, G.Input) and len(v.shape) == 2 and v.rows is None:
        st = _state(low)["leaf"]         # a (B, H) state argument of a one-step module
        key = ("input", v.index, None)
        if key not in st:
            st[key] = (ILeaf(v, int(v.shape[-1])), 0)
        return st[key]
    if isinstance(v, G.Input):
        shape = tuple(int(d) for d in v.shape)
        if len(shape) < 2 or any(d != 1 for d in shape[:-2]) or v.rows is None or len(v.rows) != 1:
            low.fail(f"the argument {v.name!r} of shape {shape} in a step's arithmetic (one row of a state "
                     f"argument is an initial state)")
        st = _state(low)["leaf"]
        key = ("input", v.index, v.rows)
        if key not in st:
            st[key] = (ILeaf(G.replace(v, shape=shape[-2:]), shape[-1]), 0)
        return st[key][0], len(shape) - 2
    if G._is_const(v):
        a = np.asarray(v, np.float32)
        batch = low.size("B") if low.bind else None        # the input's axes not told apart yet: either
        if a.ndim >= 2 and all(d == 1 for d in a.shape[:-2]) and a.shape[-2] > 1 and \
                (a.shape[-2] == batch if batch else a.shape[-2] in low.xsizes.values()) and \
                (a == a[..., :1, :]).all():
            # the same row for each of the example's rows: a static-shape export's h0 (zeros), or
            # the first step's U h0 + b folded into a constant: its per-feature vector
            a = a[..., :1, :]
        if a.ndim > 1 and any(d != 1 for d in a.shape[:-1]):
            low.fail(f"a constant of shape {a.shape} in a step's arithmetic (only scalars and per-feature vectors)")
        a = a.reshape(-1)
        return Const(float(a[0]) if a.size == 1 or not np.any(a != a[0]) else a), 0
    low.fail(f"{G._what(v)} in a step's arithmetic")


def _lift_ps(low, v):
    """One node per PS value (a value used twice is one factor)."""
    st = _state(low)["leaf"]
    if v not in st:
        # x[:, t:t+1] of a series without a feature axis (graph.py): step t, its one feature
        series = bool(v.ops) and v.ops[-1][0] == "unsq" and v.ops[-1][1] % 2 == 1 \
            and len(low.shape(G.replace(v, ops=v.ops[:-1]))) == 1
        st[v] = (Leaf(v, int(low.shape(v)[-1])), 0) if not v.ops or series else _lift_op(low, v)
    return st[v]


def _lift_op(low, v):
    inner, lead = _lift_ps(low, G.replace(v, ops=v.ops[:-1]))
    op = v.ops[-1]
    if op[0] == "linear":
        W, b = low.ps_payload[op[1]]
        return Aff(inner, W, b if b is not None else np.zeros(W.shape[0], np.float32)), lead
    if op[0] == "act":
        kind, alpha, _ = low.ps_payload[op[1]]
        return Atom(kind, alpha, inner), lead
    if op[0] == "unsq" and op[1] % (lead + 3) == 0:
        return inner, lead + 1
    low.fail(f"a per-step {op[0]} in a step's arithmetic")


def wrap(node, lead):
    return Lead(node, lead) if lead else node


def linear(low, x, W, b):
    node, lead = lift(low, x)
    if W.shape[1] != node.width:
        low.fail(f"a Linear of weight shape {W.shape} on {node.width} features")
    b = b if b is not None else np.zeros(W.shape[0], np.float32)
    if isinstance(node, Cat):            # W [a; b] = W_a a + W_b b
        out, k = Const(b), 0
        for p in node.parts:
            out = Add(out, Aff(p, W[:, k:k + p.width], np.zeros(W.shape[0], np.float32)), 1)
            k += p.width
        return wrap(out, lead)
    return wrap(Aff(node, W, b), lead)


def cat(low, parts):
    """torch.cat(parts, 1) of step values (one step's input and state side by side)."""
    nodes = [lift(low, p) for p in parts]
    if any(lead for _, lead in nodes):
        low.fail("torch.cat of step values with leading unit axes")
    return Cat([n for n, _ in nodes])


def arith(low, op, a, b):
    """a op b where one of them is a step value ("add" | "sub" | "mul" | "div" | "rsub")."""
    if op == "rsub":
        a, b, op = b, a, "sub"
    (p, la), (q, lb) = lift(low, a), lift(low, b)
    if p.width != q.width and 1 not in (p.width, q.width):
        low.fail(f"{op} of {p.width} and {q.width} features")
    if op == "div":
        if not isinstance(q, Const):
            low.fail("a division by a step value")
        q = Const(np.float32(1) / np.asarray(q.v, np.float32))
        op = "mul"
    node = Mul(p, q) if op == "mul" else Add(p, q, 1 if op == "add" else -1)
    return wrap(node, max(la, lb))


def neg(low, x):
    node, lead = lift(low, x)
    return wrap(Mul(Const(-1.0), node), lead)


def act(low, x, kind, alpha):
    node, lead = lift(low, x)
    return wrap(Atom(kind, alpha, node), lead)


def cols(low, x, s, e):
    """Feature columns [s:e] of a step value (a Split of the gates)."""
    node, lead = lift(low, x)
    return wrap(_cols(low, node, s, e), lead)


def _cols(low, n, s, e):
    if (s, e) == (0, n.width):
        return n
    memo = _state(low)["cols"]
    key = (id(n), s, e)
    if key in memo:
        return memo[key][1]
    if isinstance(n, Aff):
        r = Aff(n.src, n.W[s:e], n.b[s:e])
    elif isinstance(n, Atom):
        r = Atom(n.kind, n.alpha, _cols(low, n.arg, s, e))
    elif isinstance(n, Add):
        r = Add(_cols(low, n.a, s, e) if n.a.width > 1 else n.a, _cols(low, n.b, s, e) if n.b.width > 1 else n.b,
                n.sign)
    elif isinstance(n, Mul):
        r = Mul(_cols(low, n.a, s, e) if n.a.width > 1 else n.a, _cols(low, n.b, s, e) if n.b.width > 1 else n.b)
    elif isinstance(n, Const):
        r = Const(n.v[s:e])
    elif isinstance(n, ZLeaf):
        r = _state(low)["zero"].setdefault(e - s, ZLeaf(e - s))
    else:
        low.fail(f"a slice [{s}:{e}] of a loop's state features")
    memo[key] = (n, r)                   # n kept alive: its id stays its own
    return r


def squeeze(low, x, dim):
    node, lead = lift(low, x)
    if lead and dim in (None, 0):
        return wrap(node, lead - 1)
    low.fail(f"a squeeze of dim {dim} of one step (batch, features)")


def unsqueeze(low, x, dim):
    node, lead = lift(low, x)
    if dim % (lead + 3) != 0:            # y_t.unsqueeze(1) to be stacked: a per-step value now
        return G._ps_op(low, to_ps(low, x), ("unsq", dim))
    return wrap(node, lead + 1)


# ---- recognition ------------------------------------------------------------------------------

def _step(low, n):
    """The latest sequence step n depends on (-1: none, a zero state or constants)."""
    memo = _state(low)["step"]
    k = id(n)
    if k in memo:
        return memo[k][1]
    if isinstance(n, Leaf):
        r = n.ps.t
    elif isinstance(n, (ZLeaf, ILeaf, Const)):
        r = -1
    elif isinstance(n, Aff):
        r = _step(low, n.src)
    elif isinstance(n, Atom):
        r = _step(low, n.arg)
    elif isinstance(n, Cat):
        r = max(_step(low, p) for p in n.parts)
    else:
        r = max(_step(low, n.a), _step(low, n.b))
    memo[k] = (n, r)
    return r


def _affine(n):
    """Whether n is affine in its leaves (no product of two step values, no activation)."""
    if isinstance(n, (Aff, Const, Leaf, ZLeaf, ILeaf)):
        return True
    if isinstance(n, Add):
        return _affine(n.a) and _affine(n.b)
    if isinstance(n, Mul):
        return (isinstance(n.a, Const) and _affine(n.b)) or (isinstance(n.b, Const) and _affine(n.a))
    return False


def _expand(low, n, t):
    """n as {factor ids: (coef, factors)}: a sum of products of the step-t arithmetic. Linear
    maps, activations and leaves are factors, and so is an earlier step's value that is not
    affine (the previous h or c; U h + b computed from it belongs to this step and is expanded)."""
    if isinstance(n, Const):
        return {(): (n.v, ())}
    if isinstance(n, (Aff, Atom, Leaf, ZLeaf, ILeaf)) or (0 <= _step(low, n) < t and not _affine(n)):
        return {(id(n),): (1.0, (n,))}
    a = _expand(low, n.a, t)
    b = _expand(low, n.b, t)
    out = {}
    if isinstance(n, Add):
        items = list(a.values()) + [(c * n.sign, f) for c, f in b.values()]
    else:
        items = [(ca * cb, fa + fb) for ca, fa in a.values() for cb, fb in b.values()]
    for c, f in items:
        f = tuple(sorted(f, key=id))
        k = tuple(id(x) for x in f)
        if k in out:
            c = out[k][0] + c
        out[k] = (c, f)
    return {k: v for k, v in out.items() if not (np.ndim(v[0]) == 0 and v[0] == 0)}


def _lin(low, terms, width):
    """A sum of linear terms -> ({id(source): (source, W)}, b), or None when it is not one."""
    parts, b = {}, np.zeros(width, np.float64)
    for c, f in terms:
        c = np.asarray(c, np.float64)
        if not f:
            b = b + c
            continue
        if len(f) != 1:
            return None
        x = f[0]
        if isinstance(x, Aff):
            src, W, bb = x.src, x.W.astype(np.float64), x.b.astype(np.float64)
        else:                            # a leaf, an activation or an earlier step's value: itself
            src, W, bb = x, np.eye(x.width), np.zeros(x.width)
        if W.shape[0] != width:
            return None
        W = W * (c[:, None] if c.ndim else c)
        b = b + bb * c
        if id(src) in parts:
            W = parts[id(src)][1] + W
        parts[id(src)] = (src, W)
    return parts, b


def _sources(low, forms, t):
    """The input (step t) and state (step t - 1, or a zero state at step 0) of linear forms."""
    srcs = {}
    for parts, _ in forms:
        for k, (s, _) in parts.items():
            srcs[k] = s
    inp = [s for s in srcs.values() if _step(low, s) == t]
    st = [s for s in srcs.values() if s not in inp]
    if len(inp) != 1 or len(st) != 1 or not (isinstance(st[0], ZLeaf) or _step(low, st[0]) == t - 1):
        return None
    return inp[0], st[0]


def intern(low, a):
    """One array per content (the copies of an unrolled loop's steps are one weight). An array
    seen before (the same weight read at every step) is not hashed again."""
    st = _state(low)
    seen = st["const_id"].get(id(a))
    if seen is not None and seen[0] is a:
        return seen[1]
    b = np.ascontiguousarray(a, np.float32)
    k = (b.shape, hashlib.sha1(b.tobytes()).digest())
    r = st["const"].setdefault(k, b)
    st["const_id"][id(a)] = (a, r)       # a kept alive: its id stays its own
    return r


def _stacked(low, forms, inp, st, width):
    """Gate linear forms -> (W_ih, W_hh, b) stacked in the given order."""
    wi, wh, bs = [], [], []
    for parts, b in forms:
        if set(parts) - {id(inp), id(st)}:
            return None
        # a part that is absent is zero (a zero state's weights an exporter dropped at step 0 then
        # differ from step 1's, and the chain check refuses the loop)
        wi.append(parts[id(inp)][1] if id(inp) in parts else np.zeros((b.shape[0], inp.width)))
        wh.append(parts[id(st)][1] if id(st) in parts else np.zeros((b.shape[0], st.width)))
        bs.append(b)
    return np.vstack(wi), np.vstack(wh), np.concatenate(bs)


GATES = ("sigmoid", "hard_sigmoid")


def _act_of(x):
    """(ir.Act, argument) of an activation node, or None; max(min(y, 1), 0) is a hard sigmoid
    of y (Keras's clip(0.2 a + 0.5, 0, 1): the 0.2 and 0.5 are in y's linear form)."""
    if not isinstance(x, Atom):
        return None
    if x.kind in ("max", "min"):
        y = x.arg
        if isinstance(y, Atom) and {x.kind, y.kind} == {"max", "min"}:
            lo, hi = (x.alpha, y.alpha) if x.kind == "max" else (y.alpha, x.alpha)
            if (lo, hi) == (0, 1):
                return G.ir.Act("hard_sigmoid", 1.0, 0.0), y.arg
        return None
    if x.kind not in G.ir.ACTIVATIONS or x.kind in G.ir.ROW_WISE:
        return None
    return (G.ir.Act(x.kind) if x.alpha is None else G.ir.Act(x.kind, x.alpha)), x.arg


def _gate(x):
    a = _act_of(x)
    return a if a is not None and a[0].kind in GATES else None


def _cand(x):
    a = _act_of(x)
    return a if a is not None and a[0].kind not in GATES else None


def _mode(base, acts, default):
    """The chain's mode: torch's name, or (name, activations) when they are not the default."""
    return base if [a.kind for a in acts] == default and all(
        a == G.ir.Act(a.kind) for a in acts) else (base, tuple(acts))


def _match_rnn(low, n, t):
    c = _cand(n)
    if c is None:
        return None
    act, arg = c
    f = _lin(low, _expand(low, arg, t).values(), n.width)
    io = f and _sources(low, [f], t)
    if not io:
        return None
    inp, st = io
    W = _stacked(low, [f], inp, st, n.width)
    if W is None or W[1].shape != (n.width, n.width):
        return None
    base = "rnn_relu" if act.kind == "relu" else "rnn_tanh"
    return _mode(base, [act], [act.kind if act.kind == "relu" else "tanh"]), inp, [st], W, None


def _match_lstm(low, n, t):
    e = list(_expand(low, n, t).values())
    if len(e) != 1 or np.ndim(e[0][0]) or e[0][0] != 1 or len(e[0][1]) != 2:
        return None
    a, b = e[0][1]
    (o, hh) = (a, b) if _gate(a) and _cand(b) else (b, a)
    if not (_gate(o) and _cand(hh)) or _step(low, _cand(hh)[1]) != t:
        return None
    C = _cand(hh)[1]
    ce = list(_expand(low, C, t).values())
    if len(ce) != 2 or any(np.ndim(c) or c != 1 or len(f) != 2 for c, f in ce):
        return None

    def input_term(f):
        p, q = f
        for i, g in ((p, q), (q, p)):
            if _gate(i) and _cand(g) and _step(low, _cand(g)[1]) == t:
                return i, g
        return None
    terms = [(input_term(f), f) for _, f in ce]
    ig = next((it for it, _ in terms if it is not None), None)
    if ig is None:
        return None
    i, g = ig
    fterm = next(f for it, f in terms if it is not ig)
    fg = next((x for x in fterm if _gate(x) and _step(low, _gate(x)[1]) == t), None)
    if fg is None:
        return None
    cp = next(x for x in fterm if x is not fg)
    if not (isinstance(cp, ZLeaf) or _step(low, cp) < t):
        return None
    gates = [_gate(x)[0] for x in (i, fg, o)]
    if len(set(gates)) != 1:
        return None                      # the engine's LSTM has one gate activation
    forms = [_lin(low, _expand(low, arg, t).values(), n.width)
             for arg in (_gate(i)[1], _gate(fg)[1], _cand(g)[1], _gate(o)[1])]
    if any(f is None for f in forms):
        return None
    io = _sources(low, forms, t)
    if not io:
        return None
    inp, st = io
    W = _stacked(low, forms, inp, st, n.width)
    if W is None:
        return None
    mode = _mode("lstm", [gates[0], _cand(g)[0], _cand(hh)[0]], ["sigmoid", "tanh", "tanh"])
    return mode, inp, [st, cp], W, C


def _match_gru(low, n, t):
    e = list(_expand(low, n, t).values())
    if len(e) != 3 or any(np.ndim(c) or abs(c) != 1 for c, _ in e):
        return None
    single = [f[0] for c, f in e if len(f) == 1 and c == 1]
    pairs = [(c, f) for c, f in e if len(f) == 2]
    if len(single) != 1 or len(pairs) != 2:
        return None
    s = single[0]
    flip = _cand(s) is None               # h - z h + z n: z is torch's 1 - z
    zs = {id(x): x for _, f in pairs for x in f if _gate(x)}
    for z in zs.values():
        rest = {}
        for c, f in pairs:
            if z not in f:
                break
            rest[c] = f[0] if f[1] is z else f[1]
        else:
            if set(rest) != {1, -1}:
                continue
            n_gate, hp = (rest[1], rest[-1]) if flip else (rest[-1], rest[1])
            if (flip and hp is not s) or (not flip and n_gate is not s):
                continue
            if _cand(n_gate) is None or _step(low, _cand(n_gate)[1]) != t:
                continue
            m = _gru_gates(low, n, t, z, n_gate, hp, flip)
            if m is not None:
                return m
    return None


def _gru_gates(low, n, t, z, ng, hp, flip):
    ne = list(_expand(low, _cand(ng)[1], t).values())
    fz = _lin(low, _expand(low, _gate(z)[1], t).values(), n.width)
    if fz is None:
        return None
    if flip:
        fz = ({k: (s, -W) for k, (s, W) in fz[0].items()}, -fz[1])
        if _gate(z)[0].kind != "sigmoid":
            return None                  # 1 - s(a) = s(-a) holds for the logistic sigmoid only
    rs = {id(x): x for _, f in ne for x in f if _gate(x)}
    for r in rs.values():                # n = g(W x + b + r (U h + b')): torch's GRU
        plain = [(c, f) for c, f in ne if r not in f]
        timesr = [(c, tuple(x for x in f if x is not r)) for c, f in ne if r in f]
        if any(len(f) > 1 for _, f in timesr) or not timesr:      # r U h, and r b_hn
            continue
        fin, fhn = _lin(low, plain, n.width), _lin(low, timesr, n.width)
        fr = _lin(low, _expand(low, _gate(r)[1], t).values(), n.width)
        if None in (fin, fhn, fr) or _gate(r)[0] != _gate(z)[0]:
            continue
        io = _sources(low, [fr, fz, fin, fhn], t)
        if not io:
            continue
        inp, st = io
        if (st is not hp and not (isinstance(st, ZLeaf) and isinstance(hp, ZLeaf))) \
                or id(st) in fin[0] or id(inp) in fhn[0]:
            continue
        W = _stacked(low, [fr, fz, fin, fhn], inp, st, n.width)
        if W is None:
            continue
        H = n.width
        w_hh = np.vstack([W[1][:2 * H], W[1][3 * H:]])
        b_hh = np.concatenate([np.zeros(2 * H), W[2][3 * H:]])
        return _mode("gru", [_gate(z)[0], _cand(ng)[0]], ["sigmoid", "tanh"]), inp, [st], \
            (W[0][:3 * H], w_hh, W[2][:3 * H]), b_hh
    return _gru_v1_gates(low, n, t, z, ng, hp, fz, ne)


def _gru_v1_gates(low, n, t, z, ng, hp, fz, ne):
    """n = g(W x + U (r * h) + b): the reset gate applied before the recurrent matmul (Keras
    reset_after=False)."""
    fN = _lin(low, ne, n.width)
    if fN is None:
        return None
    for k, (src, U) in fN[0].items():
        if not isinstance(src, Mul):
            continue
        e = list(_expand(low, src, t).values())
        if len(e) != 1 or np.ndim(e[0][0]) or e[0][0] != 1 or len(e[0][1]) != 2:
            continue
        r = next((x for x in e[0][1] if _gate(x)), None)
        h = next((x for x in e[0][1] if x is not r), None)
        if r is None or _gate(r)[0] != _gate(z)[0] or not (
                h is hp or (isinstance(h, ZLeaf) and isinstance(hp, ZLeaf))):
            continue
        fin = ({kk: v for kk, v in fN[0].items() if kk != k}, fN[1])
        fr = _lin(low, _expand(low, _gate(r)[1], t).values(), n.width)
        if fr is None:
            continue
        io = _sources(low, [fr, fz, fin], t)
        if not io:
            continue
        inp, st = io
        if (st is not h and not isinstance(st, ZLeaf)) or id(st) in fin[0]:
            continue
        W = _stacked(low, [fr, fz, fin], inp, st, n.width)
        if W is None:
            continue
        w_hh = np.vstack([W[1][:2 * n.width], U])
        mode = _mode("gru_v1", [_gate(z)[0], _cand(ng)[0]], ["sigmoid", "tanh"])
        return mode, inp, [st], (W[0], w_hh, W[2]), np.zeros_like(W[2])
    return None


def _form(low, n):
    """n as an affine map of its leaves, ({id(leaf): (leaf, W)}, b) in float64, or None."""
    if isinstance(n, (Leaf, ILeaf)):
        return {id(n): (n, np.eye(n.width))}, np.zeros(n.width)
    if isinstance(n, ZLeaf):
        return {}, np.zeros(n.width)
    if isinstance(n, Const):
        return {}, np.asarray(n.v, np.float64)
    if isinstance(n, Aff):
        f = _form(low, n.src)
        if f is None:
            return None
        W = n.W.astype(np.float64)
        b = np.broadcast_to(f[1], (n.src.width,))
        return {k: (l, W @ np.broadcast_to(M, (n.src.width, l.width))) for k, (l, M) in f[0].items()}, \
            W @ b + n.b
    if isinstance(n, Add):
        fa, fb = _form(low, n.a), _form(low, n.b)
        if fa is None or fb is None:
            return None
        parts = dict(fa[0])
        for k, (l, M) in fb[0].items():
            parts[k] = (l, parts[k][1] + n.sign * M) if k in parts else (l, n.sign * M)
        return parts, fa[1] + n.sign * fb[1]
    if isinstance(n, Mul) and (isinstance(n.a, Const) or isinstance(n.b, Const)):
        c, o = (n.a, n.b) if isinstance(n.a, Const) else (n.b, n.a)
        f = _form(low, o)
        if f is None:
            return None
        cv = np.asarray(c.v, np.float64)
        col = cv[:, None] if cv.ndim else cv
        return {k: (l, col * M) for k, (l, M) in f[0].items()}, cv * f[1]
    return None


def one_step_linear(low, out, hid):
    """A one-step module whose new hidden state is affine in [x_t, hidden] and whose output is an
    activation of another affine map of them (the tutorials' char-RNN: hidden = i2h(cat(x,
    hidden)), output = log_softmax(i2o(cat(x, hidden)))): the output reads the PREVIOUS state,
    which no pipeline layer sees. As one linear recurrence of the state s = [h; z], z the output's
    pre-activation, s_t = W_ih x_t + W_hh s_{t-1} + b with W_hh = [[U_h, 0], [U_z, 0]], then the z
    columns and the activations: the same numbers. -> the pipeline's output (PT), or None when
    the module is not of that form. The source's state is the h columns (signature cols)."""
    (nh, lh), (no, lo) = lift(low, hid), lift(low, out)
    if lh or lo:
        return None
    acts, n = [], no
    while isinstance(n, Atom) and n.kind in G.ir.ACTIVATIONS:
        acts.append((n.kind, n.alpha))
        n = n.arg
    fh, fz = _form(low, nh), _form(low, n)
    if fh is None or fz is None:
        return None
    leaves = {k: l for f in (fh, fz) for k, (l, _) in f[0].items()}
    xs = [l for l in leaves.values() if isinstance(l, Leaf) and l.ps.src[0] == "seq" and l.ps.t == 0]
    hs = [l for l in leaves.values() if isinstance(l, ILeaf)]
    states = [l for l in hs if l.width == nh.width]
    if len(xs) != 1 or not states or len(leaves) != len(hs) + 1:
        return None
    # the state is the argument of the hidden's width (the last such: forward(..., hidden)); any
    # other argument is read at every step beside x_t (forward(category, input, hidden)): the
    # model's step input is all of them side by side, in forward's order (meta step_inputs)
    h = max(states, key=lambda l: l.inp.index)
    xs = sorted([(low.x_leaf, xs[0])] + [(l.inp.index, l) for l in hs if l is not h], key=lambda p: p[0])
    H, Z = nh.width, n.width

    def mats(f, w):
        get = (lambda l: np.broadcast_to(f[0][id(l)][1], (w, l.width)) if id(l) in f[0] else np.zeros((w, l.width)))
        return np.hstack([get(l) for _, l in xs]), get(h), np.broadcast_to(f[1], (w,))
    (wxh, whh, bh), (wxz, whz, bz) = mats(fh, H), mats(fz, Z)
    w_hh = np.zeros((H + Z, H + Z))
    w_hh[:H, :H], w_hh[H:, :H] = whh, whz
    ws = (np.vstack([wxh, wxz]), w_hh, np.concatenate([bh, bz]), np.zeros(H + Z))
    x = next(l for _, l in xs if isinstance(l, Leaf)).ps
    if len(xs) > 1:
        low.step_inputs = [(i, l.inp.name if isinstance(l, ILeaf) else low.x_name, l.width) for i, l in xs]
        x = G.PS(("seq", G.replace(x.src[1], width=sum(l.width for _, l in xs))) + x.src[2:], x.t)
    ps = G._cell(low, ("rnn_tanh", (G.ir.Act("linear"),)), x, h.inp, *(intern(low, w) for w in ws))
    v = G._ps_made(low, ps.src, ps.ops, True)            # every step of the user's loop
    low.states[-1]["cols"] = [0, H]
    low.state_cols[len(low.rnns) - 1] = H
    sel = np.hstack([np.zeros((Z, H)), np.eye(Z)]).astype(np.float32)
    v = G._linear(low, G.replace(v, axes=("B", "F")), sel, np.zeros(Z, np.float32))
    for kind, alpha in reversed(acts):
        v = G.activation(low, v, kind, alpha=alpha, dim=-1 if kind in G.ir.ROW_WISE else None)
    return v


def _ps_of_state(low, s):
    if isinstance(s, ZLeaf):
        return G.Zeros((1, s.width))
    if isinstance(s, ILeaf):
        return s.inp
    return to_ps(low, s)


def _cell_of(low, n):
    """n (a step value) as a recognised cell's h: its PS, or None."""
    t = _step(low, n)
    if t < 0:
        return None
    for match in (_match_lstm, _match_gru, _match_rnn):
        m = match(low, n, t)
        if m is None:
            continue
        mode, inp, states, W, extra = m
        base = mode[0] if isinstance(mode, tuple) else mode
        if base in ("gru", "gru_v1"):
            (w_ih, w_hh, b_ih), b_hh = W, extra
        else:
            (w_ih, w_hh, b_ih), b_hh = W, np.zeros_like(W[2])
        inp_ps = to_ps(low, inp)
        h_ps = _ps_of_state(low, states[0])
        if base == "lstm":
            cp = states[1]
            done = _state(low)["done"]
            if isinstance(cp, (ZLeaf, ILeaf)):
                c_ps = _ps_of_state(low, cp)
            elif isinstance(cp, Leaf):
                c_ps = cp.ps
            elif id(cp) in done:
                c_ps = done[id(cp)][1]
            else:
                low.fail("an LSTM step whose cell state is not the previous step's")
            h, c = G._cell(low, mode, inp_ps, (h_ps, c_ps), *(intern(low, w) for w in (w_ih, w_hh, b_ih, b_hh)))
            done[id(extra)] = (extra, c)
            return h
        return G._cell(low, mode, inp_ps, h_ps, *(intern(low, w) for w in (w_ih, w_hh, b_ih, b_hh)))
    return None


def to_ps(low, v):
    """A step value as the loop machinery's PS (module note); refused when it is not a cell or
    per-step layers of one."""
    node, lead = lift(low, v)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        ps = _to_ps(low, node)
    except RecursionError:
        low.fail("a chain of steps too long to read (over the interpreter's recursion limit)")
    finally:
        sys.setrecursionlimit(limit)
    for _ in range(lead):
        ps = G._ps_op(low, ps, ("unsq", 0))
    return ps


def _to_ps(low, n):
    done = _state(low)["done"]
    if id(n) in done:
        return done[id(n)][1]
    if isinstance(n, Leaf):
        return n.ps
    ps = _cell_of(low, n)
    lin = None if ps is not None or isinstance(n, (Aff, Atom)) else \
        _lin(low, _expand(low, n, max(_step(low, n), 0)).values(), n.width)
    if ps is None and lin is not None and len(lin[0]) == 1:     # per-step scale / shift of one value
        (src, W), = lin[0].values()
        ps = G._ps_op(low, _to_ps(low, src), ("linear",), (intern(low, W), intern(low, lin[1])))
    if ps is None:
        if isinstance(n, Aff):
            ps = G._ps_op(low, _to_ps(low, n.src), ("linear",), (intern(low, n.W), intern(low, n.b)))
        elif isinstance(n, Atom) and n.kind in G.ir.ACTIVATIONS:
            ps = G._ps_op(low, _to_ps(low, n.arg), ("act",), (n.kind, n.alpha, -1 if n.kind in G.ir.ROW_WISE
                                                                            else None))
        else:
            low.fail(f"per-step arithmetic that is not an LSTM, GRU or RNN cell ({_describe(n)}): fastrnn "
                     f"converts loops whose steps are standard cells (docs/onnx.md, unrolled cells)")
    done[id(n)] = (n, ps)
    return ps


def _describe(n, depth=0):
    if depth > 2:
        return "..."
    if isinstance(n, Aff):
        return f"linear({_describe(n.src, depth + 1)})"
    if isinstance(n, Atom):
        return f"{n.kind}({_describe(n.arg, depth + 1)})"
    if isinstance(n, Add):
        return f"{_describe(n.a, depth + 1)} {'+' if n.sign > 0 else '-'} {_describe(n.b, depth + 1)}"
    if isinstance(n, Mul):
        return f"{_describe(n.a, depth + 1)} * {_describe(n.b, depth + 1)}"
    if isinstance(n, Const):
        return "c"
    if isinstance(n, ZLeaf):
        return "zeros"
    if isinstance(n, Leaf):
        return "x_t" if n.ps.src[0] == "seq" else "h"
    if isinstance(n, Cat):
        return f"cat({', '.join(_describe(p, depth + 1) for p in n.parts)})"
    return type(n).__name__
