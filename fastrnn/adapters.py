"""Between a source model's tensors and predict's canonical ones.

predict is batch-major whatever the source (DESIGN.md section 1): it takes x as (B, T, F) (or
(B, T) ids) and returns (B, T, F), or (B, F) for a model that ends on one step. A converted
model's meta records the source's own axes (labels "B", "T", "F", "1", and "T*B" for an axis
that flattens time and batch, outer first): meta["input_axes"] for forward's sequence argument
and meta["output_axes"] for what forward returns first. These functions map between the two,
for --check (run the source on predict's input) and for checking a conversion on an example:

  to_canonical(y, axes, B, T)      a source output -> predict's layout
  source_x(x, axes)                predict's x -> the source's sequence argument
  predict_args(meta, args)         forward's arguments -> predict's keyword arguments
  join_steps / split_steps         the arguments read side by side (a one-step module's, or a
                                   sequence and static features) <-> the model's x / x_t

An unbatched source (one sequence, no batch axis) has no "B" label: its predict rows are run one
by one through the source.
"""
from __future__ import annotations

import numpy as np

from .signature import split_size


def axes_json(axes):
    """Axis labels as strings ("T*B" for a flattened axis)."""
    return ["*".join(a) if isinstance(a, (tuple, list)) else str(a) for a in axes]


def _atoms(a):
    return a.split("*")


def to_canonical(y, axes, B, T):
    """A source array with the given axis labels -> (B, T, F) or (B, F) (or (B, T) / (B,) when
    the source has no feature axis). Unit axes are dropped, flattened axes split, a missing batch
    axis added."""
    y = np.asarray(y)
    if y.ndim != len(axes):
        raise ValueError(f"output of rank {y.ndim} for axes {axes}")
    sizes = {"B": B, "T": T}
    shape, labels = [], []
    for n, a in zip(y.shape, axes):
        parts = _atoms(a)
        if len(parts) == 1:
            shape.append(n)
            labels.append(parts[0])
            continue
        known = int(np.prod([sizes[p] for p in parts[1:]]))
        sub = [n // known] + [sizes[p] for p in parts[1:]]
        shape += sub
        labels += parts
    y = y.reshape(shape)
    keep = [i for i, l in enumerate(labels) if l != "1"]
    y = y.reshape([shape[i] for i in keep])
    labels = [labels[i] for i in keep]
    if "B" not in labels:
        y, labels = y[None], ["B"] + labels
    split = [l for l in labels if split_size(l)]          # the features split (fc(h).view(B, k, -1))
    want = [l for l in ("B", "T") if l in labels] + split + (["F"] if "F" in labels else [])
    if sorted(want) != sorted(labels) or split and "F" not in labels:
        raise ValueError(f"cannot read axes {axes} as batch, time and features")
    y = np.transpose(y, [labels.index(l) for l in want])
    if split:
        y = y.reshape(y.shape[:len(want) - len(split) - 1] + (-1,))
    return np.ascontiguousarray(y)


def predict_axes(axes):
    """The axes of predict's output for a source output with `axes`: batch first and time
    second (flattened axes split), then the source's other axes in its order (the features, a
    unit axis); a source without a batch axis (one sequence) gains one."""
    atoms = [p for a in axes for p in _atoms(a)]
    return ["B"] + (["T"] if "T" in atoms else []) + [a for a in atoms if a not in ("B", "T")]


def to_predict(y, axes, B, T):
    """A source output -> exactly what predict returns for it (a state, axes with "S", as it is:
    states keep the source's layout)."""
    if "S" in axes:
        return np.asarray(y)
    c = to_canonical(y, axes, B, T)
    sizes = dict(zip([l for l in ("B", "T", "F") if l in predict_axes(axes) or l == "F"][:c.ndim], c.shape))
    split = [split_size(a) for a in predict_axes(axes) if split_size(a)]
    if split:
        sizes["F"] //= int(np.prod(split))
    return c.reshape([1 if a == "1" else split_size(a) or sizes[a] for a in predict_axes(axes)])


def source_x(x, axes):
    """predict's x ((B, T, F) or (B, T)) -> the source's sequence argument with `axes` (its
    labels among "B", "T", "F"; without "B" only for one row)."""
    if x.ndim == 3 and x.shape[2] == 1 and "F" not in axes:
        x = x[:, :, 0]                  # a series without a feature axis (one value per step)
    have = ["B", "T", "F"][:x.ndim]
    if "B" not in axes:
        if x.shape[0] != 1:
            raise ValueError("an unbatched source takes one sequence at a time")
        x, have = x[0], have[1:]
    return np.ascontiguousarray(np.transpose(x, [have.index(a) for a in axes]))


def predict_args(meta, args):
    """forward's arguments (NumPy; the sequence first) -> predict's keyword arguments: x batch-
    major, lengths= when forward takes them, initial_state= from forward's state argument(s)."""
    axes = list(meta["input_axes"])
    leaves = _flat(args)
    static = meta.get("step_inputs") and not meta.get("one_step")
    x = np.asarray(leaves[0])
    if meta.get("step_inputs") and not static:    # x_t from several arguments, side by side
        x = join_steps(meta, [leaves[s["arg"]] for s in _by_arg(meta)], "example_input")
    if meta.get("one_step"):              # x_t of a one-step module: predict on a one-step sequence
        axes = axes[:1] + ["T"] + axes[1:]
        x = np.expand_dims(x, axes.index("T"))
    have = list(axes)
    if "B" not in have:
        x, have = x[None], ["B"] + have
    want = [l for l in ("B", "T", "F") if l in have]
    x = np.ascontiguousarray(np.transpose(x, [have.index(l) for l in want]))
    if static:                            # the sequence (batch-major now) beside per-row static features
        x = join_steps(meta, [x if not s.get("static") else leaves[s["arg"]] for s in _by_arg(meta)], "example_input")
    kw = {"x": x}
    rest = _flat(args)[1:]
    if meta.get("takes_lengths"):
        lens = next((np.asarray(a) for a in rest if a is not None and np.asarray(a).ndim == 1), None)
        if lens is not None:
            kw["lengths"] = lens.astype(np.int64)
    states = meta.get("state_args") or {}
    if states:
        leaves = [np.asarray(v) for v in _flat(args)]
        kw["initial_state"] = [leaves[int(i)] for i in sorted(states, key=lambda s: _state_place(states[s]))]
    return kw


def _state_place(e):
    """A state argument's place in predict's initial_state (files before state_args had "state":
    one module's h, then c)."""
    return e.get("state", "hc".index(e["role"]))


def _flat(args):
    """forward's arguments with their tuples / lists flattened, depth first (Input.index counts
    these): a first argument that is a tuple (forward(self, x) with x, seq_len = x, as
    Chinese-Text-Classification-Pytorch's models take it) gives its items, the sequence first; a
    list of (h, c) pairs (one per recurrent module) gives h, c, h, c, ..."""
    out = []
    for a in args:
        out += _flat(a) if isinstance(a, (list, tuple)) else [a]
    return out


def inputs_text(meta):
    """The arguments a model reads side by side, in forward's order: "x (5), static (3)"."""
    return ", ".join(f"{s['name']} ({s['width']})" for s in _by_arg(meta))


def _by_arg(meta):
    """meta step_inputs (in the model's column order) in forward's argument order."""
    return sorted(meta["step_inputs"], key=lambda s: s["arg"])


def join_steps(meta, parts, what):
    """The arguments the model reads side by side (meta step_inputs), given in forward's order ->
    the model's input, (..., sum of widths) in its column order: a one-step module's per-step
    arguments (forward(category, input, hidden)), each (..., width); or a sequence and per-row
    static features (forward(x, static)), the static ones (batch, width) the same at every step.
    Steps ((B, w) each) give x_t, sequences (B, T, w) give predict's x."""
    spec = _by_arg(meta)
    if len(parts) != len(spec):
        raise ValueError(f"{what}: this model reads {len(spec)} arrays {'per step ' if meta.get('one_step') else ''}"
                         f"({inputs_text(meta)}), got {len(parts)}")
    parts = [np.asarray(p) for p in parts]
    lead = next(p.shape[:-1] for p, s in zip(parts, spec) if not s.get("static"))
    out = {}
    for p, s in zip(parts, spec):
        want = lead[:1] + (s["width"],) if s.get("static") else lead + (s["width"],)
        if p.ndim < 1 or p.shape != want or p.dtype.kind != "f":
            raise ValueError(f"{what}: {s['name']} must be float of shape {want} (the other arguments' leading "
                             f"axes, then its {s['width']} features{'; the same at every step' if s.get('static') else ''}),"
                             f" got {p.dtype} {p.shape}")
        if s.get("static") and len(lead) > 1:
            p = np.broadcast_to(p[:, None, :], lead + (s["width"],))
        out[id(s)] = p
    return np.concatenate([out[id(s)] for s in meta["step_inputs"]], axis=-1)


def split_steps(meta, xt):
    """join_steps undone: the model's x_t (B, sum of widths), or x (B, T, ...) -> the arguments in
    forward's order (a static one from the first step)."""
    spec = meta["step_inputs"]
    cuts = np.cumsum([s["width"] for s in spec])[:-1]
    parts = {id(s): p for s, p in zip(spec, np.split(xt, cuts, axis=-1))}
    return [np.ascontiguousarray(parts[id(s)][:, 0] if s.get("static") and xt.ndim == 3 else parts[id(s)])
            for s in _by_arg(meta)]


def source_args(meta, x, lengths=None):
    """predict's x (and lengths) -> forward's arguments for a custom torch module (NumPy):
    the sequence in the source's axes (a one-step module's first step, split into the
    arguments it reads per step), then lengths (all steps when not given) and zero states
    in the order forward takes them (init_hidden's zeros)."""
    if meta.get("step_inputs") and meta.get("one_step"):
        args = split_steps(meta, x[:, 0])
    elif meta.get("step_inputs"):        # the sequence beside per-row static features
        args = [p if s.get("static") else source_x(p, meta["input_axes"])
                for p, s in zip(split_steps(meta, x), _by_arg(meta))]
    else:
        args = [np.ascontiguousarray(x[:, 0]) if meta.get("one_step") else source_x(x, meta["input_axes"])]
    B, T = x.shape[0], x.shape[1]
    if meta.get("takes_lengths"):
        args.append(np.full((B,), T, np.int64) if lengths is None else np.asarray(lengths, np.int64))
    states = meta.get("state_args") or {}
    if states:
        keys = sorted(states, key=int)
        zs = [np.zeros([B if d == "B" else d for d in states[k]["shape"]], np.float32) for k in keys]
        if any("path" in states[k] for k in keys):      # nested: lists of (h, c) tuples, by path
            tree = {}
            for k, z in zip(keys, zs):
                node, path = tree, states[k]["path"][1:]
                for i in path[:-1]:
                    node = node.setdefault(i, {})
                node[path[-1]] = z
            args.append(_nested(tree))
        else:
            args.append(tuple(zs) if len(zs) > 1 else zs[0])
    return args


def _nested(tree):
    """{index: leaf or subtree} -> a list of its items; the innermost level (the leaves, an
    (h, c) pair) a tuple."""
    items = [tree[i] for i in sorted(tree)]
    if all(isinstance(v, dict) for v in items):
        return [_nested(v) for v in items]
    return tuple(items)


def step_to_predict(y, axes, B):
    """One step's output of a one-step module (meta one_step) -> (B, 1, ...) as predict gives
    for a one-step sequence."""
    return to_canonical(y, axes, B, 1)[:, None]
