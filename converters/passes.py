"""Folding passes over the lowered pipeline (converters/graph.py appends one layer per op; these
merge what is one layer in the engine). Each pass is exact algebra on float32 weights:

- affine_into_dense: Dense(linear) followed by Activation(affine a, b) (a scalar * / + / - / /
  after a Linear) -> one Dense (a W, a bias + b).
- diagonal_into_dense: a per-feature scale/shift (a diagonal Dense made by graph._affine) merges
  into the Dense before it (scaling its rows, when that Dense has no activation) or else into the
  Dense after it (scaling its columns; the shift goes into that Dense's bias).
- diagonal_into_recurrent: a per-feature scale/shift right before a recurrent layer (a
  BatchNormalization in front of an LSTM) merges into its input weights: W_ih diag(s) and
  b_ih + W_ih t, for every direction (the input projection is linear in every cell).
- activation_into_dense: an Activation after a Dense without one is that Dense's activation.
- identity: Activation(affine 1, 0) and Activation(linear) are dropped.
- cut_early (signature time "last", not a layer fold): the pipeline's last step taken from a
  forward recurrent layer followed only by per-step layers is its final state: the layer stops
  returning sequences and predict takes what the engine returns.
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
    out = []
    for l in layers:
        prev = out[-1] if out else None
        if isinstance(l, ir.Activation) and l.activation.kind == "affine":
            a, b = l.activation.alpha, l.activation.beta
            if a == 1 and b == 0:
                continue
            if _linear_dense(prev):
                out[-1] = ir.Dense(prev.weight * np.float32(a), _bias(prev) * np.float32(a) + np.float32(b))
                continue
        if isinstance(l, ir.Activation) and l.activation.kind == "linear":
            continue
        if isinstance(l, ir.Activation) and _linear_dense(prev) and not _diagonal(prev):
            out[-1] = ir.Dense(prev.weight, prev.bias, l.activation)
            continue
        if isinstance(l, ir.Dense) and _diagonal(l) and _linear_dense(prev):
            s = np.diag(l.weight).astype(np.float32)
            out[-1] = ir.Dense(prev.weight * s[:, None], _bias(prev) * s + _bias(l), l.activation)
            continue
        if isinstance(l, ir.Dense) and isinstance(prev, ir.Dense) and _diagonal(prev) \
                and prev.activation.kind == "linear" and len(out) >= 1 and not _linear_dense(out[-2] if len(out) > 1 else None):
            s, t = np.diag(prev.weight).astype(np.float32), _bias(prev)
            out[-1] = ir.Dense(l.weight * s[None, :], _bias(l) + l.weight @ t, l.activation)
            continue
        if isinstance(l, ir.Recurrent) and isinstance(prev, ir.Dense) and _diagonal(prev) \
                and prev.activation.kind == "linear":
            s, t = np.diag(prev.weight).astype(np.float32), _bias(prev)
            ws = []
            for w in l.weights:
                w = dict(w)
                b = w.get("b_ih")
                w["b_ih"] = (b if b is not None else np.zeros(w["W_ih"].shape[0], np.float32)) + w["W_ih"] @ t
                if w.get("b_hh") is None:
                    w["b_hh"] = np.zeros_like(w["b_ih"])
                w["W_ih"] = w["W_ih"] * s[None, :]
                ws.append(w)
            out[-1] = dataclasses.replace(l, weights=ws)
            continue
        out.append(l)
    return out


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
    if layers[r].direction != "forward" or not all(isinstance(l, (ir.Dense, ir.Activation)) for l in layers[r + 1:]):
        return layers, time
    layers = list(layers)
    layers[r] = dataclasses.replace(layers[r], return_sequences=False)
    return layers, None
