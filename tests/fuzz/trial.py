"""One fuzz input through fastrnn, and the outcome's class.

trial(fmt, path, opts) reads the file as a user would: fastrnn.load for .frnn (and convert,
which must agree), fastrnn.convert for the others (TorchScript with isolate=True). A model that
comes back must run: predict on a small batch with lengths, a stream step, and save/load.
Outcomes:
  "ok"                        converted and ran
  "FastRNNError subclass"     refused with a message (e.g. "ModelFormatError")
  "net:ModelFormatError"      refused, but only by the converters' last-resort wrapper
                              ("the <kind> file cannot be read (SomeError: ...)"): a clean
                              error, though no check named the cause (worth a check of its own)
  "ESCAPE:<type>"             any other exception: a bug
"""
from __future__ import annotations

import os
import re

import numpy as np

import fastrnn

# the isolated child's address-space limit: none under a sanitizer (ASan reserves terabytes)
MEMORY = 0 if os.environ.get("FASTRNN_SANITIZED") else None
NET = re.compile(r"the \w+ file cannot be read \(|ran out of memory; it declares sizes")


def exercise(m):
    """A converted model must run on a small input (any error it raises must be ours)."""
    rng = np.random.default_rng(0)
    if m.input_kind == "ids":
        vocab = getattr(m.layers[0], "vocab_size", 2)
        x = rng.integers(0, max(1, min(vocab, 1 << 20)), (2, 3))
    else:
        if not m.input_size or m.input_size > 1 << 16:
            return
        x = rng.normal(size=(2, 3, m.input_size)).astype(np.float32)
    try:
        m.predict(x, lengths=np.array([3, 1]))
    except (fastrnn.UnsupportedError, fastrnn.ShapeError) as e:
        if "lengths" not in str(e):       # a Conv1D model takes no lengths: then without
            raise
        m.predict(x)
    try:
        s = m.stream(2)
    except fastrnn.UnsupportedError:      # whole sequences only
        pass
    else:
        s.step(x[:, 0])
    fastrnn.load(_saved(m))             # what save writes, load reads


def _saved(m):
    import tempfile
    fd, p = tempfile.mkstemp(suffix=".frnn")
    os.close(fd)
    try:
        m.save(p)
        with open(p, "rb") as f:
            return f.read()
    finally:
        os.unlink(p)


def classify(e):
    if isinstance(e, fastrnn.FastRNNError):
        if isinstance(e, fastrnn.ModelFormatError) and NET.search(str(e)):
            return "net:ModelFormatError"
        return type(e).__name__
    return f"ESCAPE:{type(e).__name__}"


def trial(fmt, path, opts=None, isolate_ts=True):
    """-> (outcome, message) for the model file at path. isolate_ts=False: TorchScript in-process
    too (the long run, whose supervisor survives libtorch's crashes)."""
    try:
        if fmt == "frnn":
            m = fastrnn.load(path)
            fastrnn.convert(path)
        elif fmt == "ts" and isolate_ts:
            m = fastrnn.convert(path, isolate=True, isolate_timeout=60, isolate_memory=MEMORY)
        else:
            m = fastrnn.convert(path, **(opts or {}))
        exercise(m)
    except Exception as e:  # noqa: BLE001 - the point: every exception is classified
        return classify(e), f"{type(e).__name__}: {e}"[:500]
    return "ok", ""
