"""predict_ragged: score a list of sequences of different lengths (the usual shape of a corpus).

    y = fastrnn.predict_ragged(model, sequences, max_batch=256)

`sequences` is a list (or tuple) of arrays, one per sequence: token ids (T_i,) for a model that
starts with an Embedding, else floats (T_i, features) ((T_i,) for a model of one feature a step);
or a pyarrow list column (ListArray,
LargeListArray, ChunkedArray of them; a list<list<float>> column for float steps) or a pandas
Series of lists / arrays. The sequences are sorted by length, cut into batches of at most
`max_batch` sequences and `max_steps` padded steps, each batch padded to its longest member and
run by one Model.predict with `lengths` (packed-sequence semantics, DESIGN §1), and the results
come back in input order:

- a model whose output is one vector per sequence: an array (N, output_size);
- a model whose output has a step axis: a list of N arrays (T_i, output_size), each cut to its
  sequence's length.

Every row is what predict gives for that sequence alone (the engine's rows are independent;
steps past a row's length are not read), with one exception that is the source model's own:
a pool over the "longest" steps (torch's pooling of pad_packed_sequence's output, which counts
the padding up to the batch's longest sequence) depends on the batch, as it does in torch.
A model with a layer that changes the number of steps (Conv1D, Pool1D, RepeatVector) takes no
lengths: its batches are then sequences of equal length only. A sequence of 0 steps gives
predict's result for lengths 0 (zeros, or the output of the initial state).
"""
from __future__ import annotations

import numpy as np

from .errors import ArgumentTypeError, ShapeError

__all__ = ["predict_ragged"]


def _as_list(sequences, width):
    """The sequences as a list of NumPy arrays ((T,) ids or (T, width) floats)."""
    mod = type(sequences).__module__
    if mod.startswith("pyarrow"):
        import pyarrow as pa
        col = sequences.combine_chunks() if isinstance(sequences, pa.ChunkedArray) else sequences
        if not pa.types.is_list(col.type) and not pa.types.is_large_list(col.type):
            raise ArgumentTypeError(f"predict_ragged: a pyarrow column of lists expected, got {col.type}")
        if col.null_count:
            raise ShapeError(f"predict_ragged: {col.null_count} null sequence(s) in the column")
        offs = np.asarray(col.offsets)
        offs = offs - offs[0]            # a slice's offsets count from its parent's start; flatten() does not
        flat = col.flatten()
        if pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type):      # list<list<float>>
            inner = np.asarray(flat.flatten().to_numpy(zero_copy_only=False), np.float32)
            sizes = np.diff(np.asarray(flat.offsets))
            if len(sizes) and (sizes != sizes[0]).any():
                raise ShapeError("predict_ragged: steps of different widths in the column")
            k = int(sizes[0]) if len(sizes) else (width or 0)
            steps = inner.reshape(-1, k) if k else inner.reshape(0, width or 0)
            return [steps[a:b] for a, b in zip(offs[:-1], offs[1:])]
        vals = flat.to_numpy(zero_copy_only=False)
        return [vals[a:b] for a, b in zip(offs[:-1], offs[1:])]
    if mod.startswith("pandas"):
        sequences = list(sequences)
    if isinstance(sequences, np.ndarray) and sequences.dtype != object:
        sequences = list(sequences)           # a padded 2-D / 3-D array: rows of equal length
    if not isinstance(sequences, (list, tuple)):
        raise ArgumentTypeError(f"predict_ragged: sequences must be a list of arrays, a pyarrow list column or "
                                f"a pandas Series, got {type(sequences).__name__}")
    return sequences


def predict_ragged(model, sequences, max_batch=256, max_steps=None):
    """Model.predict over sequences of different lengths, bucketed by length (module note)."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ArgumentTypeError(f"predict_ragged: max_batch must be an integer >= 1, got {max_batch!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer))
                                  or max_steps < 1):
        raise ArgumentTypeError(f"predict_ragged: max_steps must be an integer >= 1 or None, got {max_steps!r}")
    ids = model.input_kind == "ids"
    width = model.input_size
    seqs = _as_list(sequences, width)
    arrs = []
    for i, s in enumerate(seqs):
        a = np.asarray(s)
        if ids:
            if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
                raise ShapeError(f"predict_ragged: sequence {i}: token ids (T,) of integers expected, got "
                                 f"{a.dtype} {a.shape}")
        elif a.ndim == 1 and width == 1:       # one feature a step, given as (T,) (a list<float> column)
            a = a[:, None]
        if not ids and (a.ndim != 2 or a.shape[1] != width):
            raise ShapeError(f"predict_ragged: sequence {i}: (steps, {width}) floats expected, got {a.shape}")
        arrs.append(a)
    n = len(arrs)
    lens = np.fromiter((len(a) for a in arrs), np.int64, n)
    fixed = bool(model._cm.changes_time)       # predict takes no lengths then
    order = np.argsort(lens, kind="stable")
    per_step = model.output_is_sequence
    out = [None] * n if per_step else None
    pos = 0
    while pos < n:
        end = min(n, pos + int(max_batch))
        if fixed:                              # equal lengths only
            end = pos + int(np.searchsorted(lens[order[pos:end]], lens[order[pos]], side="right"))
        longest = int(lens[order[end - 1]])
        if max_steps is not None:              # padded steps per batch: sorted, so cut at the budget
            while end - pos > 1 and (end - pos) * max(longest, 1) > max_steps:
                end -= 1
                longest = int(lens[order[end - 1]])
        idx = order[pos:end]
        T = max(longest, 1)
        shape = (len(idx), T) if ids else (len(idx), T, width)
        x = np.zeros(shape, np.int64 if ids else np.float32)
        for r, j in enumerate(idx):
            x[r, :lens[j]] = arrs[j]
        y = model.predict(x, lengths=None if fixed else lens[idx])
        if isinstance(y, list):
            y = y[0]
        if per_step:
            for r, j in enumerate(idx):
                out[j] = y[r, :lens[j]]
        else:
            if out is None:
                out = np.empty((n,) + y.shape[1:], y.dtype)
            out[idx] = y
        pos = end
    if out is None:                            # no sequence
        return np.empty((0, model.output_size), np.float32)
    return out
