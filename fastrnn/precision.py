"""Reduced precision: bf16 and int8 weights, and the error report that says what they cost.

    m16 = m.with_precision("bf16")      # a new Model; m is unchanged. "fp32" | "bf16" | "int8"
    m8 = m.with_precision("int8")       # int8 weights, one scale per output row (symmetric)
    m8.precision                        # "int8"
    rep = m8.compare(m, x)              # dict: max_abs, mean_abs, sqnr_db, cosine, argmax_agreement,
                                        # "stream": the same over a long stream (drift); str(rep): a table

What is reduced: the matrices of matrix products -- Dense.weight, Conv1D.weight, and a recurrent
layer's W_ih, W_hh and W_hr (projection). Biases, peepholes, embedding tables (a lookup reads one
row per step: not where the bytes of a step go), states, cell math and every sum stay fp32.

  bf16   each weight rounded to the nearest bfloat16 (ties to even): 8 bits of mantissa.
  int8   per output row r (a row of W, W (out, in); Conv1D (out, in * k)): scale_r = max|W_r| / 127,
         q = round(W / scale_r) in [-127, 127] (symmetric: -128 is never used, so the kernels'
         sums of q * x are symmetric too), the weight the model computes with is q * scale_r.
         A row of zeros has scale 0.

The numbers: a bf16 model computes with the reduced weights (the values above, exactly
representable in fp32), accumulating in fp32: the engine packs them as bf16 and widens them in
registers, so it differs from the float64 reference on those weights by fp32 rounding only.
An int8 model's products run on integer kernels (src_c/simd/q8.h): the other operand (a step's
input, the state) is quantized per row and call to u8 codes (quantize_activations) and the sums
of codes are exact integers, scaled after (q8_matmul computes the same bits in NumPy; the tests
give it to fastrnn.reference.run as its matmul). Without VNNI, int8 matrices of at most 128 KiB
in fp32 run weight-only instead (fp32 activations, the int8 weights widened: the dequantized
weights' product, fp32 rounding only); engine.c storage_wt says why.

Files: a bf16 model stores its reduced tensors as safetensors "BF16", an int8 model as "I8" plus
one F32 tensor "<name>@scale" per matrix (fileformat.py); such files are format version 2.
Loading one gives back the same weights bit for bit, and the same scales.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from . import ir
from .errors import ArgumentTypeError, ShapeError

PRECISIONS = ("fp32", "bf16", "int8")


def check(precision, what="precision"):
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ArgumentTypeError(f"{what} must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def reduced_names(layer):
    """The names (as in layer.tensors()) of the layer's matrices that a precision reduces."""
    if isinstance(layer, (ir.Dense, ir.Conv1D)):
        return ["weight"]
    if isinstance(layer, ir.Recurrent):
        return [n for n in layer.tensors() if n.split(".", 1)[1] in ("W_ih", "W_hh", "W_hr")]
    return []


# ---- the number formats ---------------------------------------------------------------------

def to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest, ties to even."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    """bfloat16 bit patterns -> float32 (exact)."""
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


def bf16(a):
    """a rounded to bfloat16, as float32."""
    return from_bf16_bits(to_bf16_bits(a)).reshape(np.shape(a))


def int8_scales(a):
    """One scale per output row (the first axis): max |row| / 127, float32."""
    rows = np.asarray(a, np.float32).reshape(np.shape(a)[0], -1)
    return (np.abs(rows).max(axis=1) / np.float32(127)).astype(np.float32)


def quantize_int8(a, scales=None):
    """(q int8, scales float32): q = round(a / scale) per output row, in [-127, 127]."""
    a = np.asarray(a, np.float32)
    s = int8_scales(a) if scales is None else np.asarray(scales, np.float32)
    rows = a.reshape(a.shape[0], -1).astype(np.float64)
    sd = s.astype(np.float64)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(sd > 0, np.rint(rows / np.where(sd > 0, sd, 1.0)), 0.0)
    return np.clip(q, -127, 127).astype(np.int8).reshape(a.shape), s


def dequantize_int8(q, scales):
    """q * scale per output row, float32 (the weights an int8 model computes with)."""
    q = np.asarray(q, np.int8)
    rows = q.reshape(q.shape[0], -1).astype(np.float32) * np.asarray(scales, np.float32)[:, None]
    return rows.reshape(q.shape)


def quantize_activations(x):
    """Rows of x (..., K) -> (u, s, zp): the engine's dynamic u8 quantization of a matrix
    product's other operand (src_c/simd/q8.h), in the same float32 operations:
    lo = min(0, min x), hi = max(0, max x), inv = 255 / (hi - lo), s = (hi - lo) / 255,
    zp = rint(-lo inv), u = clip(rint(x inv) + zp, 0, 255); x ~ s (u - zp). A row of zeros
    has s = 0; a row holding an inf or NaN has s = NaN."""
    x = np.asarray(x, np.float32)
    f = np.float32
    lo = np.minimum(x.min(-1, initial=0), f(0)).astype(f)
    hi = np.maximum(x.max(-1, initial=0), f(0)).astype(f)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        rng = (hi - lo).astype(f)
        bad = ~np.isfinite(x).all(-1)
        ok = (rng > 0) & ~bad
        inv = np.where(ok, f(255) / np.where(ok, rng, f(1)), f(0)).astype(f)
        zp = np.where(ok, np.rint((-lo * inv).astype(f)), f(0)).astype(f)
        u = np.clip(np.rint((x * inv[..., None]).astype(f)) + zp[..., None], 0, 255)
        u = np.where(ok[..., None], u, 0).astype(np.int64)
        s = np.where(bad, f(np.nan), np.where(ok, (rng / f(255)).astype(f), f(0))).astype(f)
    return u, s, zp.astype(np.int64)


def q8_matmul(x, q, scales, bias=None):
    """x (..., K) float32 times int8 weights q (N, K) with their row scales, as the engine's
    integer kernel computes it (src_c/simd/q8.h): exact int sums of the codes, then
    (float32)(sum - zp csum) * (s * scale) (+ bias), every step rounded to float32."""
    u, s, zp = quantize_activations(x)
    q = np.asarray(q, np.int64)
    acc = u @ q.T - zp[..., None] * q.sum(1)
    f = np.float32
    with np.errstate(invalid="ignore", over="ignore"):
        y = acc.astype(f) * (s[..., None] * np.asarray(scales, f)).astype(f)
        y = y.astype(f)
        if bias is not None:
            y = (y + np.asarray(bias, f)).astype(f)
    return y


# ---- models -----------------------------------------------------------------------------------

def reduce_layers(layers, precision, scales=None):
    """Copies of `layers` with their reduced matrices at `precision` -> (layers, scales):
    scales[(layer index, name)] for int8. Given scales (a model loaded from an int8 file, or
    already int8), those are kept, so that quantizing again changes nothing."""
    out, new_scales = [], {}
    for i, layer in enumerate(layers):
        names = reduced_names(layer) if precision != "fp32" else []
        if not names:
            out.append(layer)
            continue
        t = dict(layer.tensors())
        for n in names:
            if precision == "bf16":
                t[n] = bf16(t[n])
            else:
                q, s = quantize_int8(t[n], None if scales is None else scales.get((i, n)))
                t[n] = dequantize_int8(q, s)
                new_scales[(i, n)] = s
        out.append(_with_tensors(layer, t))
    return out, new_scales


def _with_tensors(layer, t):
    if isinstance(layer, ir.Recurrent):
        w = [dict(d) for d in layer.weights]
        for name, arr in t.items():
            d, _, k = name.partition(".")
            w[int(d)][k] = arr
        return dataclasses.replace(layer, weights=w)
    return dataclasses.replace(layer, **t)


def with_precision(model, precision):
    """model at `precision` (Model.with_precision)."""
    from .model import Model
    check(precision)
    if precision == model.precision:
        scales = model._scales
        layers = list(model.layers)
    else:
        layers, scales = reduce_layers(model.layers, precision,
                                       model._scales if model.precision == "int8" and precision == "int8" else None)
    return Model(layers, input_size=model._in_size, meta=model.meta, signature=model.signature,
                 _precision=precision, _scales=scales)


def weight_bytes(model):
    """Bytes of the model's weights as its file stores them: reduced matrices at the model's
    precision (int8: 1 byte each plus a float32 scale per row; bf16: 2), the rest float32."""
    total = 0
    for layer in model.layers:
        names = set(reduced_names(layer)) if model.precision != "fp32" else set()
        for n, a in layer.tensors().items():
            if n not in names:
                total += a.size * 4
            elif model.precision == "bf16":
                total += a.size * 2
            else:
                total += a.size + a.shape[0] * 4
    return total


# ---- the error report -------------------------------------------------------------------------

class Report(dict):
    """The error of a model's outputs against a reference's (Model.compare): a dict with
    max_abs, mean_abs, sqnr_db (10 log10 of signal power over error power; inf when equal),
    cosine, argmax_agreement (the fraction of rows -- every step's row for a sequence output --
    whose largest feature is the same; None for one-feature outputs), n (values compared), and
    "stream" (the same over a long stream, or None). str(report) is a readable table."""

    def __str__(self):
        rows = [("predict", self)] + ([(f"stream, {self['stream']['steps']} steps", self["stream"])]
                                      if self.get("stream") else [])
        head = f"{'':<22}{'max |diff|':>12}{'mean |diff|':>13}{'SQNR dB':>9}{'cosine':>11}{'argmax':>9}"
        lines = [f"{self.get('precision', '?')} against {self.get('reference', '?')}", head]
        for name, r in rows:
            am = "-" if r["argmax_agreement"] is None else f"{100 * r['argmax_agreement']:.2f}%"
            lines.append(f"{name:<22}{r['max_abs']:>12.3g}{r['mean_abs']:>13.3g}{r['sqnr_db']:>9.1f}"
                         f"{r['cosine']:>11.7f}{am:>9}")
        return "\n".join(lines)


def errors(y, ref):
    """The error measures of y against ref (arrays, or lists of arrays: every output)."""
    ys = y if isinstance(y, (list, tuple)) else [y]
    rs = ref if isinstance(ref, (list, tuple)) else [ref]
    if len(ys) != len(rs) or any(np.shape(a) != np.shape(b) for a, b in zip(ys, rs)):
        raise ShapeError(f"compare: outputs of shapes {[np.shape(a) for a in ys]} against "
                         f"{[np.shape(b) for b in rs]}")
    a = np.concatenate([np.asarray(v, np.float64).ravel() for v in ys])
    b = np.concatenate([np.asarray(v, np.float64).ravel() for v in rs])
    d = a - b
    sig, err = float(np.dot(b, b)), float(np.dot(d, d))
    na, nb = math.sqrt(float(np.dot(a, a))), math.sqrt(sig)
    agree = []
    for v, r in zip(ys, rs):
        v, r = np.asarray(v), np.asarray(r)
        if v.ndim >= 2 and v.shape[-1] > 1:
            agree.append(np.argmax(v, -1) == np.argmax(r, -1))
    return {"max_abs": float(np.abs(d).max()) if d.size else 0.0,
            "mean_abs": float(np.abs(d).mean()) if d.size else 0.0,
            "sqnr_db": math.inf if err == 0 else (-math.inf if sig == 0 else 10 * math.log10(sig / err)),
            "cosine": 1.0 if na == nb == 0 else (float(np.dot(a, b)) / (na * nb) if na and nb else 0.0),
            "argmax_agreement": float(np.concatenate([g.ravel() for g in agree]).mean()) if agree else None,
            "n": int(d.size)}


def compare(model, reference, x, lengths=None, stream_steps=1000):
    """Model.compare: model against reference on predict(x, lengths) and, for a streamable
    model, over one stream of stream_steps steps (x's rows, their steps repeated) -- the drift."""
    from .model import Model
    if not isinstance(reference, Model):
        raise ArgumentTypeError(f"compare: the reference must be a fastrnn.Model, got {type(reference).__name__}")
    if isinstance(stream_steps, bool) or not isinstance(stream_steps, (int, np.integer)) or stream_steps < 0:
        raise ArgumentTypeError(f"compare: stream_steps must be an integer >= 0, got {stream_steps!r}")
    rep = Report(errors(model.predict(x, lengths=lengths), reference.predict(x, lengths=lengths)))
    rep["precision"], rep["reference"] = model.precision, reference.precision
    rep["stream"] = None
    xs = x if not isinstance(x, tuple) else np.concatenate(x, -1)
    xs = np.asarray(xs)
    if stream_steps and lengths is None and xs.ndim >= 2 and xs.shape[1] > 0 and model._cm.can_stream \
            and reference._cm.can_stream:
        reps = -(-int(stream_steps) // xs.shape[1])
        seq = np.concatenate([xs] * reps, axis=1)[:, :int(stream_steps)]
        a, b = model.stream(batch_size=seq.shape[0]), reference.stream(batch_size=seq.shape[0])
        ya, yb = [], []
        for t in range(seq.shape[1]):
            ya.append(np.asarray(_first(a.step(seq[:, t]))))
            yb.append(np.asarray(_first(b.step(seq[:, t]))))
        rep["stream"] = errors(np.stack(ya, 1), np.stack(yb, 1)) | {"steps": int(seq.shape[1])}
    return rep


def _first(y):
    return y[0] if isinstance(y, list) else y

