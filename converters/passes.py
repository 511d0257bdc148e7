"""Folding passes over the lowered pipeline (converters/graph.py appends one layer per op; these
merge what is one layer in the engine). Each pass is exact algebra on float32 weights:

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
        if isinstance(l, ir.Recurrent) and _linear_dense(prev) and _into_recurrent_pays(prev, l):
            out[-1] = _dense_into_recurrent(prev, l)
            continue
        out.append(l)
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
    if layers[r].direction != "forward" or not all(isinstance(l, (ir.Dense, ir.Activation)) for l in layers[r + 1:]):
        return layers, time
    layers = list(layers)
    layers[r] = dataclasses.replace(layers[r], return_sequences=False)
    return layers, None
