"""float64 NumPy reference of every layer and option: the executable spec and the test oracle.

Written straight from the equations in fastrnn/ir.py, one step at a time, with no attempt at
speed. `run(layers, x, lengths=None, initial_state=None)` mirrors the engine's semantics:

- x: float (batch, time, features) or int ids (batch, time) when layers[0] is an Embedding.
- lengths (packed-sequence semantics): for every recurrent layer, row b is active at steps
  t < lengths[b]; an inactive step keeps the state and outputs zeros; a reverse direction starts at
  lengths[b] - 1.
- Keras masks (Embedding mask_zero, Masking): a masked step keeps the state; its output is the
  previous output ('carry') or zeros ('zero'), per Recurrent.masked_output. The mask flows through
  Dense/Activation/recurrent layers that return sequences and ends at one that does not.
- States are the native layout: per recurrent layer h (dirs, B, state_size), then c for an LSTM.
Returns (y, final_states).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import ShapeError
from .ir import (SELU_ALPHA, SELU_SCALE, Activation, Attention, Conv1D, Dense, Embedding, Masking, Pool, Pool1D, PoolTerm,
                 Recurrent, RepeatVector, Flatten, window_steps)


def _sigmoid(x):
    # both branches evaluated on safe inputs: no overflow warnings, exact for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def act(a, x):
    """Apply an ir.Act to a float64 array (softmax kinds over the last axis)."""
    k, al, be = a.kind, a.alpha, a.beta
    with np.errstate(over="ignore", invalid="ignore"):
        if k == "linear":
            return x
        if k == "sigmoid":
            return _sigmoid(x)
        if k == "tanh":
            return np.tanh(x)
        if k == "relu":
            return np.maximum(x, 0.0)   # keeps NaN, relu(-inf) = 0
        if k == "hard_sigmoid":
            return np.clip(al * x + be, 0.0, 1.0)
        if k == "elu":
            return np.where(x > 0, x, al * np.expm1(np.minimum(x, 0)))
        if k == "softsign":
            return x / (1.0 + np.abs(x))
        if k == "softplus":
            return np.logaddexp(0.0, x)
        if k == "affine":
            return al * x + be
        if k == "leaky_relu":
            return np.where(x >= 0, x, al * x)
        if k == "thresholded_relu":
            return np.where(x > al, x, 0.0)
        if k == "scaled_tanh":
            return al * np.tanh(be * x)
        if k == "selu":
            return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))
        if k == "exponential":
            return np.exp(x)
        if k == "silu":
            return x * _sigmoid(x)
        if k == "relu6":
            return np.clip(x, 0.0, 6.0)
        if k == "mish":
            return x * np.tanh(np.logaddexp(0.0, x))
        if k == "hardswish":
            return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0
        if k == "clip":
            return np.clip(x, al, be)
        if k == "softmax":
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            return e / e.sum(axis=-1, keepdims=True)
        if k == "log_softmax":
            s = x - x.max(axis=-1, keepdims=True)
            return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))
        if k == "gelu":
            return x * 0.5 * _erfc(-x / math.sqrt(2.0))
        if k == "gelu_tanh":
            return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
        if k == "mul_halves":
            n = x.shape[-1] // 2
            return np.concatenate([x[..., :n] * x[..., n:], x[..., n:]], axis=-1)
        if k == "l2_normalize":
            n = np.sqrt((x * x).sum(axis=-1, keepdims=True))
            return x / (n + al if be else np.maximum(n, al))
        if k == "layer_norm":
            d = x - x.mean(axis=-1, keepdims=True)
            return d / np.sqrt((d * d).mean(axis=-1, keepdims=True) + al)
    raise ValueError(f"unknown activation {k}")


_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def _matmul(a, W):
    return a @ W.T


def _cell_step(layer, w, acts, x, h, c, matmul=_matmul):
    """One step of one direction for all rows. x (B, I), h (B, R), c (B, H) or None.
    matmul(a, W): a @ W.T (run's argument)."""
    def mm(a, name, rows=slice(None)):
        return matmul(a, w[name][rows])
    H = layer.hidden_size
    clip = layer.clip
    cl = (lambda v: np.clip(v, -clip, clip)) if clip is not None else (lambda v: v)
    bi = w["b_ih"] if layer.use_bias else 0.0
    bh = w["b_hh"] if layer.use_bias else 0.0
    xi = mm(x, "W_ih") + bi
    if layer.cell == "rnn":
        return act(acts[0], cl(xi + mm(h, "W_hh") + bh)), None
    if layer.cell == "lstm":
        g = xi + mm(h, "W_hh") + bh
        gi, gf, gg, go = (g[:, k * H:(k + 1) * H] for k in range(4))
        if layer.peepholes:
            gi = gi + w["P"][0] * c
            gf = gf + w["P"][1] * c
        i = act(acts[0], cl(gi))
        f = 1.0 - i if layer.input_forget else act(acts[0], cl(gf))
        c2 = f * c + i * act(acts[1], cl(gg))
        if layer.peepholes:
            go = go + w["P"][2] * c2
        o = act(acts[0], cl(go))
        h2 = o * act(acts[2], c2)
        if layer.proj_size:
            h2 = mm(h2, "W_hr")
        return h2, c2
    # gru, gates r, z, n
    bh = bh if layer.use_bias else np.zeros(3 * H)
    hr = mm(h, "W_hh", slice(0, 2 * H)) + bh[:2 * H]
    r = act(acts[0], cl(xi[:, :H] + hr[:, :H]))
    z = act(acts[0], cl(xi[:, H:2 * H] + hr[:, H:]))
    if layer.linear_before_reset:
        n = act(acts[1], cl(xi[:, 2 * H:] + r * (mm(h, "W_hh", slice(2 * H, None)) + bh[2 * H:])))
    else:
        n = act(acts[1], cl(xi[:, 2 * H:] + mm(r * h, "W_hh", slice(2 * H, None)) + bh[2 * H:]))
    return (1.0 - z) * n + z * h, None


def _carried(layer, y, x):
    """y with the layer's carried input columns after it (ir.Dense.carry)."""
    return np.concatenate([y] + [x[..., a:b] for a, b in layer.carry], axis=-1) if layer.carry else y


def _recurrent(layer, x, active, len_ok, carry, init, matmul=_matmul):
    """x (B, T, I); active (B, T) bool or None: the step runs (lengths and Keras mask); len_ok
    (B, T) bool or None: within the row's length (outside it the output is 0 whatever the mask
    mode); init: list of state arrays (None entries) or None: the layer's initial state (h0 / c0,
    or zeros)."""
    B, T, _ = x.shape
    R, H = layer.state_size, layer.hidden_size
    lstm = layer.cell == "lstm"
    outs, hs, cs = [], [], []
    for d in range(layer.num_directions):
        w = {k: v.astype(np.float64) for k, v in layer.weights[d].items()}
        acts = layer.activations[d]
        def start(i, k, n):
            if init is not None and init[i] is not None:
                return init[i][d].astype(np.float64)
            return np.broadcast_to(w[k], (B, n)).copy() if k in w else np.zeros((B, n))
        h = start(0, "h0", R)
        c = start(1, "c0", H) if lstm else None
        y = np.zeros((B, T, R))
        reverse = layer.direction == "reverse" or d == 1
        for t in (range(T - 1, -1, -1) if reverse else range(T)):
            h2, c2 = _cell_step(layer, w, acts, x[:, t].astype(np.float64), h, c, matmul)
            if active is None:
                h, c = h2, c2
                y[:, t] = h
            else:
                a = active[:, t][:, None]
                h = np.where(a, h2, h)
                if lstm:
                    c = np.where(a, c2, c)
                y[:, t] = np.where(a, h, h if carry else 0.0)
                if len_ok is not None:
                    y[:, t] = np.where(len_ok[:, t][:, None], y[:, t], 0.0)
        outs.append(y)
        hs.append(h)
        cs.append(c)
    if layer.return_sequences:
        parts = outs
    else:
        parts = hs
    if len(parts) == 1:
        out = parts[0]
    else:
        m = layer.merge_mode
        out = (np.concatenate(parts, axis=-1) if m == "concat" else parts[0] + parts[1] if m == "sum"
               else parts[0] * parts[1] if m == "mul" else (parts[0] + parts[1]) / 2)
    states = [np.stack(hs)] + ([np.stack(cs)] if lstm else [])
    return out, states


def _self_attention(layer, h, len_active):
    """ir.Attention in float64: per row and head, softmax(scale q k^T) v over the row's steps
    (causal: the steps so far); steps past the row's length give zeros."""
    B, T, _ = h.shape
    E, d = layer.size, layer.size // layer.heads
    out = np.zeros((B, T, E))
    for b in range(B):
        n = T if len_active is None else int(len_active[b].sum())
        for hd in range(layer.heads if n else 0):
            q, k, v = (h[b, :n, j * E + hd * d: j * E + (hd + 1) * d] for j in range(3))
            s = layer.scale * (q @ k.T)
            if layer.causal:
                s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
            p = np.exp(s - s.max(axis=1, keepdims=True))
            out[b, :n, hd * d:(hd + 1) * d] = (p / p.sum(axis=1, keepdims=True)) @ v
    return out


def _windows(h, T, window, stride, dilation, padding):
    """Each output step's input steps (index array, -1 outside the sequence)."""
    b, _, n = window_steps(T, window, stride, dilation, padding)
    idx = np.arange(n)[:, None] * stride - b + np.arange(window)[None, :] * dilation
    return np.where((idx >= 0) & (idx < T), idx, -1)


def _conv1d(layer, h, matmul=_matmul):
    B, T, _ = h.shape
    idx = _windows(h, T, layer.kernel, layer.stride, layer.dilation, layer.padding)
    if not idx.size:
        raise ValueError(f"{T} steps are too few for the window")
    padded = np.concatenate([h, np.zeros((B, 1, h.shape[2]))], axis=1)      # index -1: zeros
    win = padded[:, idx]                                                     # (B, To, k, in)
    w = layer.weight.astype(np.float64)                                      # (out, in, k)
    y = matmul(win.reshape(B, win.shape[1], -1), w.transpose(0, 2, 1).reshape(w.shape[0], -1))
    if layer.bias is not None:
        y = y + layer.bias
    return act(layer.activation, y)


def _pool1d(layer, h):
    B, T, F = h.shape
    idx = _windows(h, T, layer.window, layer.stride, 1, layer.padding)
    inside = idx >= 0
    if layer.kind == "max":
        padded = np.concatenate([h, np.full((B, 1, F), -np.inf)], axis=1)
        return padded[:, idx].max(axis=2)
    padded = np.concatenate([h, np.zeros((B, 1, F))], axis=1)
    count = np.full(idx.shape[0], layer.window) if layer.count_pad else inside.sum(1)
    return padded[:, idx].sum(axis=2) / count[None, :, None]


def _pool(layer, h, mask, len_active, lengths, init):
    """Pooling over time (ir.Pool) continuing from its state init ((1, B, R): each term's running
    values, then the count) -> (B, output_size) and the new state."""
    B, T, _ = h.shape
    terms = layer.term_list()
    starts = np.concatenate([[0], np.cumsum([t.state_width for t in terms])]).astype(int)
    count = np.zeros(B) if init is None else np.asarray(init, np.float64)[0, :, -1].copy()
    st = np.zeros((B, starts[-1])) if init is None else np.asarray(init, np.float64)[0, :, :-1].copy()
    if layer.over == "valid":
        take = np.ones((B, T), bool)
        if len_active is not None:
            take &= len_active
        if mask is not None:
            take &= mask
    else:
        extent = T
        if layer.over == "longest" and lengths is not None and len(lengths):
            extent = min(T, int(np.max(lengths)))
        take = np.broadcast_to(np.arange(T)[None, :] < extent, (B, T))
    outs = []
    new_count = count + take.sum(1)
    for k, term in enumerate(terms):
        v = h[..., term.start:term.stop]
        F = term.width
        if term.kind == "attn":
            outs.append(_attention(term, h[..., term.score], v, take, count, st[:, starts[k]:starts[k + 1]]))
            continue
        if term.kind == "query":
            outs.append(_query(term, v, take, len_active, count, st[:, starts[k]:starts[k + 1]]))
            continue
        if term.kind in ("last", "first"):           # a row's last step within lengths, its first step
            s = st[:, starts[k]:starts[k + 1]]
            ok = np.ones((B, T), bool) if len_active is None else len_active
            for t in range(T):
                rows = ok[:, t] & ((s[:, F] == 0) if term.kind == "first" else True)
                s[rows, :F] = v[rows, t]
                if term.kind == "first":
                    s[rows, F] = 1
            outs.append(s[:, :F].copy())
            continue
        a = st[:, starts[k]:starts[k] + F]
        if term.kind == "max":
            vals = np.where(take[..., None], v, -np.inf)
            m = vals.max(axis=1)
            # NaN propagates (as torch.max); no step taken leaves the state as it was
            m = np.where(np.isnan(v).any(1) & take.any(1)[:, None], np.nan, m)
            a = np.where(count[:, None] > 0, np.maximum(a, m), m)
            a = np.where(take.any(1)[:, None], a, st[:, starts[k]:starts[k] + F])
        else:
            a = a + np.where(take[..., None], v, 0.0).sum(axis=1)
        st[:, starts[k]:starts[k] + F] = a
        with np.errstate(invalid="ignore", divide="ignore"):
            outs.append(a / new_count[:, None] if term.kind == "mean" else a)
    state = np.concatenate([st, new_count[:, None]], axis=1)[None]
    return np.concatenate(outs, axis=1), state


def _attention(term, score, v, take, count, s):
    """An attn term of ir.Pool (ir.PoolTerm) continuing from its state s (B, 2F + 3: sum w v, sum v,
    max z, sum w, position; updated in place): softmax over the steps taken of
    z_t = act(e_t + bias[pos + t]), plus eps, weighting v. In float64 with the engine's online
    order (a running max)."""
    B, T, F = v.shape
    acc, sv, mx, sw, pos = s[:, :F], s[:, F:2 * F], s[:, 2 * F], s[:, 2 * F + 1], s[:, 2 * F + 2]
    n = count.copy()
    bias = term.score_bias
    for t in range(T):
        z = score[:, t].astype(np.float64)
        if bias is not None:
            if np.any(~((pos >= 0) & (pos < len(bias)))):
                raise ShapeError("a step past the last position the attention pool has a bias for")
            z = z + bias[pos.astype(int)]
        pos += 1
        z = act(term.score_activation, z)
        for b in np.flatnonzero(take[:, t]):
            if n[b] == 0:
                mx[b], sw[b], acc[b], sv[b] = z[b], 1.0, v[b, t], v[b, t]
            else:
                m = max(mx[b], z[b])
                q, w = np.exp(mx[b] - m), np.exp(z[b] - m)
                acc[b] = acc[b] * q + w * v[b, t]
                sw[b] = sw[b] * q + w
                sv[b] = sv[b] + v[b, t]
                mx[b] = m
            n[b] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return acc / sw[:, None] + term.eps * sv


def _query(term, v, take, len_active, count, s):
    """A query term of ir.Pool (attention whose query is the row's final value): q from the
    row's last step within its lengths (its first `split` columns) and its first step (the
    others), z_t = act(v_t . q), then the attn term's softmax; its state keeps q where attn
    keeps the sum of v. The whole sequence must be in this call."""
    B, T, F = v.shape
    if np.any(s[:, 2 * F + 2] != 0):
        raise ShapeError("an attention pool whose query is the final value continued from a state")
    last = np.full(B, T - 1) if len_active is None else \
        np.where(len_active.any(1), T - 1 - np.argmax(len_active[:, ::-1], axis=1), 0)
    q = np.concatenate([v[np.arange(B), last, :term.split], v[:, 0, term.split:]], axis=1)
    score = np.einsum("btf,bf->bt", v, q)
    plain = PoolTerm("attn", 0, F, 0, term.score_activation)
    out = _attention(plain, score, v, take, count, s)
    s[:, F:2 * F] = q
    return out


def run(layers, x, lengths=None, initial_state=None, matmul=_matmul):
    """Run the pipeline in float64. Returns (y, final_states) (native state layout).
    matmul(a, W): every matrix product a @ W.T of Dense, Conv1D and recurrent layers (a test
    gives the int8 kernels' own arithmetic here, tests/test_precision.py)."""
    first = layers[0]
    mask = pool_mask = None
    if isinstance(first, Embedding):
        ids = np.asarray(x)
        h = first.weight.astype(np.float64)[ids]
        if first.mask_zero:
            mask = ids != 0
        elif first.pool_mask is not None:         # read by pools only (below)
            pool_mask = ids != first.pool_mask
        rest = layers[1:]
    else:
        h = np.asarray(x, dtype=np.float64)
        rest = layers
    B = h.shape[0]
    T = h.shape[1]
    len_active = None
    if lengths is not None:
        len_active = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    states_out = []
    si = 0
    for layer in rest:
        if h.ndim == 3:
            steps = h.shape[1]          # a RepeatVector of n 0 repeats as many steps as the last sequence had
        if isinstance(layer, Masking):
            mask = np.any(h != layer.mask_value, axis=-1)
            h = h * mask[..., None]      # Keras: masked steps are zeroed
        elif isinstance(layer, Dense):
            y = matmul(h, layer.weight.astype(np.float64))
            if layer.bias is not None:
                y = y + layer.bias
            h = _carried(layer, act(layer.activation, y), h)
        elif isinstance(layer, Activation):
            h = _carried(layer, act(layer.activation, h[..., :layer.size]), h)
        elif isinstance(layer, Recurrent):
            n = 2 if layer.cell == "lstm" else 1
            init = None if initial_state is None else initial_state[si:si + n]
            si += n
            active = mask
            if len_active is not None:
                active = len_active if active is None else active & len_active
            y, st = _recurrent(layer, h, active, len_active, layer.masked_output == "carry", init, matmul)
            h = _carried(layer, y, h)
            states_out += st
            if not layer.return_sequences:
                mask = pool_mask = None
        elif isinstance(layer, Conv1D):
            h, mask, pool_mask = _conv1d(layer, h, matmul), None, None      # a mask ends here (Keras drops it)
        elif isinstance(layer, Pool1D):
            h, mask, pool_mask = _pool1d(layer, h), None, None
        elif isinstance(layer, Attention):
            h = _carried(layer, _self_attention(layer, h, len_active), h)
        elif isinstance(layer, RepeatVector):
            h = np.repeat(h[:, None, :], layer.n or steps, axis=1)
        elif isinstance(layer, Flatten):
            if h.shape[1] != layer.n:
                raise ShapeError(f"Flatten of {layer.n} steps given {h.shape[1]}")
            h, mask, pool_mask = h.reshape(B, -1), None, None
        elif isinstance(layer, Pool):
            init = None if initial_state is None else initial_state[si]
            si += 1
            h, st = _pool(layer, h, mask if mask is not None else pool_mask, len_active, lengths, init)
            states_out.append(st)
            mask = pool_mask = None
    assert B == h.shape[0]
    return h, states_out
