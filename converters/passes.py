"""Folding passes over the lowered pipeline (converters/graph.py appends one layer per op; these
merge what is one layer in the engine), run until none applies (fold):

- affine_into_dense: Dense(linear) followed by Activation(affine a, b) (a scalar * / + / - / /
  after a Linear) -> one Dense (a W, a bias + b).
- diagonal_into_dense: a per-feature scale/shift (a diagonal Dense made by graph._affine) merges
  into the Dense before it (scaling its rows, when that Dense has no activation) or else into the
  Dense after it (scaling its columns; the shift goes into that Dense's bias).
- dense_into_recurrent: a Dense without activation right before a recurrent layer (a
  BatchNormalization's per-feature scale in front of an LSTM, the input projection the dynamo
  exporter hoists out of an unrolled nn.RNN, a user's Linear) merges into its input weights:
  W_ih W and b_ih + W_ih t, for every direction (the input projection is linear in every cell),
  when that costs no more per step (rows(W_ih) x in <= out x in + rows(W_ih) x out).
- activation_into_dense: an Activation after a Dense without one is that Dense's activation.
- identity: Activation(affine 1, 0) and Activation(linear) are dropped.
- compose: a Dense after a Dense without activation is one Dense (W2 W1) when that costs no more
  per row (out2 x in1 <= out1 x in1 + out2 x out1): a Linear after a Linear, the sum that ends a
  branch (graph._sum: x + f(x)) after the layer it went around. A carry (ir.Dense.carry, the
  columns of a branch) is part of the first's linear map (rows selecting them); a Dense that
  carries columns itself is not composed into the one before.
- prune: the columns nothing reads are dropped (prune's note).
- cut_early (signature time "last", not a layer fold): the pipeline's last step taken from a
  forward recurrent layer followed only by per-step layers is its final state: the layer stops
  returning sequences and predict takes what the engine returns.
Not exact but within the accuracy contract (a few float32 roundings): compose and
dense_into_recurrent sum in another order; the rest is exact.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from fastrnn import ir


def _linear_dense(l):
    return isinstance(l, ir.Dense) and l.activation.kind == "linear"


def _diagonal(l):
    if not _linear_dense(l) and not isinstance(l, ir.Dense):
        return False
    W = l.weight
    return W.shape[0] == W.shape[1] and not np.count_nonzero(W - np.diag(np.diag(W)))


def _bias(l):
    return l.bias if l.bias is not None else np.zeros(l.weight.shape[0], np.float32)


def fold(layers):
    """The folds below and prune until none applies (one can make another possible: Denses
    compose from the last one backwards)."""
    layers = list(layers)
    while True:
        out = prune(_fold_once(layers))
        if len(out) == len(layers) and all(a is b for a, b in zip(out, layers)):
            return out
        layers = out


def _passes_on(prev, l):
    """l (an Activation) acts on prev's own columns and carries prev's carried ones unchanged."""
    return l.size == prev.own_size and _flat(l.carry) == list(range(prev.own_size, prev.output_size))


def _fold_once(layers):
    out = []
    for l in layers:
        prev = out[-1] if out else None
        if isinstance(l, ir.Activation) and _flat(l.carry) == list(range(l.size, l.input_size)) and \
                (l.activation.kind == "linear" or (l.activation.kind == "affine" and
                                                   (l.activation.alpha, l.activation.beta) == (1, 0))):
            continue                     # the identity
        if isinstance(l, ir.Activation) and l.activation.kind == "affine" and _linear_dense(prev) \
                and _passes_on(prev, l):
            a, b = l.activation.alpha, l.activation.beta
            out[-1] = ir.Dense(prev.weight * np.float32(a), _bias(prev) * np.float32(a) + np.float32(b),
                               carry=prev.carry)
            continue
        if isinstance(l, ir.Activation) and _linear_dense(prev) and not _diagonal(prev) and _passes_on(prev, l):
            out[-1] = ir.Dense(prev.weight, prev.bias, l.activation, carry=prev.carry)
            continue
        if isinstance(l, ir.Dense) and _diagonal(l) and _linear_dense(prev) and not l.carry and not prev.carry:
            s = np.diag(l.weight).astype(np.float32)
            out[-1] = ir.Dense(prev.weight * s[:, None], _bias(prev) * s + _bias(l), l.activation)
            continue
        if isinstance(l, ir.Dense) and isinstance(prev, ir.Dense) and _diagonal(prev) and not prev.carry \
                and prev.activation.kind == "linear" and len(out) >= 1 and not _linear_dense(out[-2] if len(out) > 1 else None):
            s, t = np.diag(prev.weight).astype(np.float32), _bias(prev)
            out[-1] = ir.Dense(l.weight * s[None, :], _bias(l) + l.weight @ t, l.activation, carry=l.carry)
            continue
        if isinstance(l, ir.Dense) and not l.carry and _linear_dense(prev) and _compose_pays(prev, l):
            out[-1] = _compose(prev, l)
            continue
        if isinstance(l, ir.Recurrent) and _linear_dense(prev) and not prev.carry and _into_recurrent_pays(prev, l):
            out[-1] = _dense_into_recurrent(prev, l)
            continue
        out.append(l)
    return out


def _flat(carry):
    return [c for a, b in carry for c in range(a, b)]


def col_ranges(cols):
    """Column indices -> (start, stop) ranges, consecutive runs merged."""
    out = []
    for c in cols:
        if out and out[-1][1] == c:
            out[-1] = (out[-1][0], c + 1)
        else:
            out.append((c, c + 1))
    return tuple(out)


def _linear_map(d):
    """A Dense without activation as the linear map of its whole output: (M, t) in float64, its
    carried columns as rows selecting them."""
    n = d.input_size
    sel = np.eye(n)[_flat(d.carry)] if d.carry else np.zeros((0, n))
    M = np.concatenate([d.weight.astype(np.float64), sel])
    t = np.concatenate([_bias(d).astype(np.float64), np.zeros(len(sel))])
    return M, t


def _compose_pays(prev, l):
    """Whether l after prev (a linear Dense carrying columns) costs no more as one Dense: the
    sum a branch ends with (graph._sum) after the layer it went around."""
    return l.own_size * prev.input_size <= prev.own_size * prev.input_size + l.own_size * l.input_size


def _compose(prev, l):
    """l (W2, t2, act) after a linear prev whose output is M x + t: one Dense (W2 M, W2 t + t2)."""
    M, t = _linear_map(prev)
    W2 = l.weight.astype(np.float64)
    return ir.Dense((W2 @ M).astype(np.float32), (W2 @ t + _bias(l)).astype(np.float32), l.activation)


def prune(layers):
    """Drop the columns of a run of Dense / Activation layers that no later layer reads: rows of a
    Dense whose output nothing reads (not under softmax, which reads them all), carried columns
    nothing reads (graph.Lowering.reach carries a branch's tensor through every layer up to
    where it is read). A Dense left with no row of its own becomes the selection of what it
    carried, or nothing when that is its input unchanged."""
    n = len(layers)
    plan = [None] * n                     # per Dense / Activation: (own rows kept, carry positions kept)
    need = None                           # the columns the next layer reads of this one (None: all)
    for i in range(n - 1, -1, -1):
        l = layers[i]
        if not isinstance(l, (ir.Dense, ir.Activation)):
            need = None
            continue
        own, src = l.own_size, _flat(l.carry)
        keep = set(range(l.output_size)) if need is None else need
        rows = list(range(own))
        if isinstance(l, ir.Dense) and l.activation.kind not in ir.ROW_WISE:
            rows = [r for r in rows if r in keep]
        js = [j for j in range(len(src)) if own + j in keep]
        plan[i] = (rows, js)
        reads = np.any(l.weight[rows] != 0, axis=0) if isinstance(l, ir.Dense) else np.arange(l.input_size) < l.size
        need = set(np.flatnonzero(reads).tolist()) | {src[j] for j in js}
    out, layout = [], None     # layout: the previous layer's new output columns as its old indices
    for i, l in enumerate(layers):
        if plan[i] is None:
            out.append(l)
            layout = None
            continue
        rows, js = plan[i]
        src = _flat(l.carry)
        pos = {c: k for k, c in enumerate(layout)} if layout is not None else None
        kept = [pos[src[j]] if pos is not None else src[j] for j in js]
        new_in = len(layout) if layout is not None else l.input_size
        carried = [l.own_size + j for j in js]
        if isinstance(l, ir.Dense) and not rows:      # only its carry is read
            if kept != list(range(new_in)):
                out.append(ir.Dense(np.eye(new_in, dtype=np.float32)[kept]))
            layout = carried
            continue
        if isinstance(l, ir.Dense):
            W = l.weight[rows][:, layout] if layout is not None else l.weight[rows]
            nl = ir.Dense(np.ascontiguousarray(W), None if l.bias is None else l.bias[rows], l.activation,
                          carry=col_ranges(kept))
        else:
            nl = ir.Activation(l.size, l.activation, carry=col_ranges(kept))
        same = len(rows) == l.own_size and js == list(range(len(src))) and \
            (layout is None or layout == list(range(len(layout))))
        out.append(l if same else nl)
        layout = rows + carried
    for a, b in zip(out, out[1:]):        # a run's columns must still chain (never otherwise): else as it was
        if isinstance(b, (ir.Dense, ir.Activation)) and a.output_size != b.input_size:
            return list(layers)
    return out


def _into_recurrent_pays(d, r):
    """Whether W_ih W costs no more per step than W then W_ih (rows of W_ih x inputs)."""
    g, h = r.weights[0]["W_ih"].shape
    f = d.weight.shape[1]
    return g * f <= h * f + g * h


def _dense_into_recurrent(d, r):
    """Dense(W, t) then a recurrent layer: its input projection is linear in every cell, so
    W_ih (W x + t) + b_ih = (W_ih W) x + (b_ih + W_ih t), for every direction."""
    W, t = d.weight.astype(np.float64), _bias(d).astype(np.float64)
    ws = []
    for w in r.weights:
        w = dict(w)
        wih = w["W_ih"].astype(np.float64)
        b = w.get("b_ih")
        w["b_ih"] = ((b if b is not None else 0) + wih @ t).astype(np.float32)
        if w.get("b_hh") is None:
            w["b_hh"] = np.zeros_like(w["b_ih"])
        w["W_ih"] = (wih @ W).astype(np.float32)
        ws.append(w)
    return dataclasses.replace(r, weights=ws)


def cut_early(layers, time):
    """(layers, signature time) -> the same with the last step taken early where it can be
    (module note): time "last", a forward recurrent layer followed only by Dense / Activation
    layers (which act per step)."""
    if time != "last":
        return layers, time
    rec = [i for i, l in enumerate(layers) if isinstance(l, ir.Recurrent)]
    if not rec:
        return layers, time
    r = rec[-1]
    if layers[r].direction != "forward" or layers[r].carry or \
            not all(isinstance(l, (ir.Dense, ir.Activation)) for l in layers[r + 1:]):
        return layers, time
    layers = list(layers)
    layers[r] = dataclasses.replace(layers[r], return_sequences=False)
    return layers, None
