"""Model: a pipeline of ir layers, packed once into the C engine; predict() and stream().

Every input is checked here, before C sees it, with a message naming what was expected and
what came (ShapeError). Conventions (DESIGN.md section 1):
- predict is batch-major: float32 (batch, time, features), or integer ids (batch, time) when the
  first layer is an Embedding. Other float dtypes are converted to float32; token ids may be any
  integer dtype.
- lengths: packed-sequence semantics (outputs past a row's length are 0; final states are those at
  its last valid step; a reverse direction starts at its last valid step).
- Outputs and states: what the source model returns (fastrnn/signature.py, recorded by the
  converter). Without a signature, predict returns the pipeline's output and states use the
  native layout: per recurrent layer h (directions, batch, width), then c (directions, batch,
  hidden) for an LSTM. Stream.state always uses the native layout.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import _engine, ir, signature as sig_
from .adapters import inputs_text, join_steps
from .errors import ArgumentTypeError, ShapeError, UnsupportedError
from .fileformat import check_meta

_MAX_ROWS = 2**31 - 1
_WEIGHT_TYPES = {"fp32": 0, "bf16": 1, "int8": 2}   # src_c/kernels.h FRNN_W_*


def _check_rows(a):
    """The documented batch x time limit of predict, checked on the shape alone."""
    if a.shape[0] * a.shape[1] > _MAX_ROWS:
        raise ShapeError(f"predict: batch*time = {a.shape[0] * a.shape[1]} is over the limit {_MAX_ROWS}; "
                         f"split the batch")


class Model:
    """A runnable model. Build one from ir layer specs (see docs/layers.md), from a converter
    (fastrnn.convert) or from a file (fastrnn.load).

    layers: list of fastrnn.Embedding / Masking / Dense / Activation / Recurrent.
    input_size: optional check: features of a float input (every layer knows its own).
    meta: free-form JSON-able dict saved with the model (converters record the source here).
    signature: how the source presents outputs and states (fastrnn/signature.py); None = native.
    """

    def __init__(self, layers, input_size=None, *, meta=None, signature=None, _precision="fp32", _scales=None):
        # layer specs are mutable dataclasses: validate (copies of) them now, so that a weight
        # replaced after construction can never reach C with the wrong size
        if not isinstance(layers, (list, tuple)):
            raise ArgumentTypeError(f"Model: layers must be a list of fastrnn layer specs, got {type(layers).__name__}")
        layers = [dataclasses.replace(l) if type(l) in ir.TYPE_NAMES else l for l in layers]
        n = sig_.head_from(signature, layers)
        _, in_size, _, _ = ir.check_pipeline(layers[:n], input_size)
        self.layers = layers
        self.meta = check_meta({} if meta is None else meta)
        wt = _WEIGHT_TYPES[_precision]         # fastrnn/precision.py: Model.with_precision, load
        self._cm = _engine.CModel(layers[:n], in_size or 0, wt)
        self._in_size = in_size
        self._dims = [self._cm.state_dims(i) for i in range(self._cm.num_states)]
        self._head = self._head_parts = None
        if n < len(layers):         # a head over final states (signature head)
            self._head_parts, width = sig_.head_parts(signature, self._dims, layers[n])
            ir.check_pipeline(layers[n:], width)
            self._head = _engine.CModel(layers[n:], width, wt)
        self.signature = sig_.check(signature, self._dims, self.output_size, bool(self._cm.output_is_sequence)
                                    and self._head is None, internal=_pool_states(layers[:n]), input_size=in_size)
        self._outputs_states = sig_.uses_states(self.signature)   # decided once, not per call/step
        self._precision, self._scales = _precision, dict(_scales or {})

    # ---- precision (fastrnn/precision.py) ------------------------------------------------
    @property
    def precision(self):
        """'fp32', 'bf16' or 'int8': the precision of the weights of its matrix products."""
        return self._precision

    def with_precision(self, precision):
        """A new Model whose matrices (Dense, Conv1D, recurrent W_ih / W_hh / W_hr) are at
        `precision`: "fp32", "bf16" (rounded to bfloat16) or "int8" (symmetric, one scale per
        output row). This model is unchanged. From an int8 model, "fp32" / "bf16" start from its
        int8 values (what it computes with), not from the weights it was made from."""
        from .precision import with_precision
        return with_precision(self, precision)

    def compare(self, reference, x, lengths=None, stream_steps=1000):
        """The error of this model against `reference` (a Model: the fp32 one this was made
        from) on predict(x, lengths), and over one stream of stream_steps steps (x's steps
        repeated; the drift) when both can stream and no lengths are given. Returns a dict
        (max_abs, mean_abs, sqnr_db, cosine, argmax_agreement, n, precision, reference, stream);
        str() of it is a table."""
        from .precision import compare
        return compare(self, reference, x, lengths=lengths, stream_steps=stream_steps)

    # ---- description ---------------------------------------------------------------------
    @property
    def input_kind(self):
        """'ids' (the model starts with an Embedding) or 'float'."""
        return "ids" if self._cm.input_ids else "float"

    @property
    def input_size(self):
        """Features per step of a float input (None for ids)."""
        return self._in_size

    @property
    def output_size(self):
        return (self._head if self._head is not None else self._cm).output_size

    @property
    def output_is_sequence(self):
        """True: predict returns (batch, time, out); False: (batch, out) (the last step)."""
        return bool(self._cm.output_is_sequence) and sig_.keeps_time(self.signature["time"]) and self._head is None

    def _head_forward(self, states):
        """The head's output (B, out) from the native final states (signature head)."""
        feats = np.concatenate([states[k][d] for k, d in self._head_parts], axis=1)
        y, _ = self._head.forward(np.ascontiguousarray(feats[:, None, :], dtype=np.float32), None, None, False)
        return np.ascontiguousarray(y[:, 0])

    @property
    def isa(self):
        """Which kernels this model runs ('scalar', 'avx2', 'avx512')."""
        return self._cm.isa

    def state_shapes(self, batch_size):
        """Shapes of the states predict takes (initial_state) and returns (return_state=True),
        in the source's layout (the native one for models built from ir layers)."""
        return sig_.shapes(self.signature, self._dims, batch_size)

    def output_shapes(self, batch_size, time_steps):
        """The shapes of what predict returns for (batch_size, time_steps) input without lengths
        (a list: one shape per array), from the signature alone (nothing runs)."""
        steps = self._cm.output_steps(time_steps) if self._cm.output_is_sequence and self._head is None else None
        return sig_.output_shapes(self.signature, self._dims, self.output_size, steps, batch_size, time_steps)

    def native_state_shapes(self, batch_size):
        """Shapes of the native states (Stream.state): per recurrent layer h, then c."""
        return [(d, batch_size, w) for d, w in self._dims]

    @property
    def num_outputs(self):
        """1, or the length of the list predict returns for a multi-output source model."""
        outs = self.signature["outputs"]
        return 1 if outs is None else len(outs)

    def __repr__(self):
        names = ", ".join(_describe(l) for l in self.layers)
        prec = f", precision={self.precision!r}" if self.precision != "fp32" else ""
        return f"fastrnn.Model([{names}], isa={self.isa!r}{prec})"

    # ---- checks --------------------------------------------------------------------------
    def _check_x(self, x):
        try:
            a = np.asarray(x)
        except (ValueError, TypeError) as e:
            raise ShapeError(f"predict: x is not an array: {e}") from None
        if self._cm.input_ids:
            if a.dtype.kind not in "iu":
                raise ShapeError(f"predict: this model starts with an Embedding and takes integer token "
                                 f"ids of shape (batch, time); got dtype {a.dtype}")
            if a.ndim != 2:
                raise ShapeError(f"predict: expected token ids of shape (batch, time), got shape {a.shape}"
                                 + (" (for one sequence use x[None])" if a.ndim == 1 else ""))
            _check_rows(a)
            if a.size:
                vocab = self.layers[0].vocab_size
                lo, hi = a.min(), a.max()
                if lo < 0 or hi >= vocab:
                    bad = lo if lo < 0 else hi
                    pos = tuple(int(i) for i in np.argwhere(a == bad)[0])
                    raise ShapeError(f"predict: token id {int(bad)} at {pos} is outside [0, {vocab})")
            return np.ascontiguousarray(a, dtype=np.int64)
        if a.dtype.kind != "f":
            raise ShapeError(f"predict: expected float input of shape (batch, time, {self._in_size}), "
                             f"got dtype {a.dtype}")
        if a.ndim == 2 and self._in_size == 1:
            a = a[:, :, None]   # one feature per step: (batch, time) is (batch, time, 1) (README)
        if a.ndim != 3 or a.shape[2] != self._in_size:
            raise ShapeError(f"predict: expected x of shape (batch, time, {self._in_size}), got shape {a.shape}"
                             + (" (for one sequence use x[None])" if a.ndim == 2 else ""))
        _check_rows(a)          # before the copy below: a broadcast view may stand for terabytes
        return np.ascontiguousarray(a, dtype=np.float32)

    def _join(self, x, what):
        """A model that reads several arguments side by side (meta step_inputs: a one-step
        module's forward(category, input, hidden), or a sequence and per-row static features,
        forward(x, static)) takes them as a tuple in forward's order -- each (batch, time, width)
        in predict and (batch, width) in a step, a static one (batch, width) in both -- or side by
        side in one array."""
        spec = self.meta.get("step_inputs")
        if spec and not isinstance(x, tuple) and np.ndim(x) >= 1 and np.shape(x)[-1] != sum(s["width"] for s in spec):
            raise ShapeError(f"{what}: this model reads {len(spec)} arrays side by side ({inputs_text(self.meta)}): "
                             f"pass them as a tuple in that order, or joined into one array of "
                             f"{sum(s['width'] for s in spec)} features")
        if not isinstance(x, tuple) or not spec:
            return x
        try:
            return join_steps(self.meta, x, what)
        except ValueError as e:
            raise ShapeError(str(e)) from None

    def _check_states(self, states, batch, what):
        """Native states (Stream.state setter); None entries: the initial state."""
        n = self._cm.num_states
        if isinstance(states, (list, tuple)) and len(states) != n:
            raise ShapeError(f"{what}: expected {n} arrays ({self._state_names()}), got {len(states)}")
        return sig_.check_states_shape(states, self.native_state_shapes(batch), what, self._start_states(batch))

    def _start_states(self, batch):
        """The native states every row starts from: a Recurrent layer's learned initial state (h0 /
        c0, broadcast over the rows), else zeros."""
        out = []
        for l in self.layers:
            if isinstance(l, ir.Recurrent):
                names = ["h0", "c0"] if l.cell == "lstm" else ["h0"]
                for name, shp in zip(names, l.state_shapes(batch)):
                    out.append(np.zeros(shp, np.float32))
                    for d, w in enumerate(l.weights):
                        if name in w:
                            out[-1][d] = w[name]
            elif isinstance(l, ir.Pool):
                out.append(np.zeros(self.native_state_shapes(batch)[len(out)], np.float32))
        return out

    def _state_names(self):
        names, i, p = [], 0, 0
        for l in self.layers:
            if isinstance(l, ir.Recurrent):
                names += [f"h{i}"] + ([f"c{i}"] if l.cell == "lstm" else [])
                i += 1
            elif isinstance(l, ir.Pool):
                names.append(f"pool{p}")
                p += 1
        return ", ".join(names)

    # ---- running -------------------------------------------------------------------------
    def predict(self, x, lengths=None, initial_state=None, return_state=False):
        """Run whole sequences. x: (batch, time, features) floats or (batch, time) ids.

        Returns y ((batch, time, out), or (batch, out) when the model ends on its last step) -- a
        list of arrays for a multi-output source model (Keras return_state=True, merge_mode=None)
        -- or (y, states) with return_state=True. lengths: (batch,) valid steps per row.
        initial_state: list of arrays shaped as state_shapes(batch) (None entries: the state every
        sequence starts from, zeros or the model's learned initial state).
        """
        a = self._check_x(self._join(x, "predict"))
        B, T = a.shape[0], a.shape[1]
        if T == 0:
            raise ShapeError("predict: sequences need at least one time step")
        lens = None
        if self._cm.changes_time:
            if lengths is not None and not self._cm.keeps_steps:
                raise ShapeError("predict: lengths with a layer that changes the number of steps (Conv1D, Pool1D "
                                 "other than stride 1 padded 'same' or causally, RepeatVector, Flatten): pad the "
                                 "sequences instead")
            flat = [l for l in self.layers if isinstance(l, ir.Flatten)]
            if flat and self._cm.output_steps(T) < 1:
                raise ShapeError(f"predict: the model flattens exactly {flat[0].n} steps (Keras Flatten, a Linear "
                                 f"over torch's out.reshape(B, -1)); {T} time steps do not give that many there")
            if self._cm.output_steps(T) < 1:
                raise ShapeError(f"predict: {T} time steps are too few for the model's convolution or pooling "
                                 f"windows")
        if lengths is None and self.signature["lengths_pad"] is not None:
            # the source packs by (ids != pad).sum(1) (signature lengths_pad): the same lengths
            lengths = (a != self.signature["lengths_pad"]).sum(axis=1)
        if lengths is not None:
            lens = np.asarray(lengths)
            if lens.dtype.kind not in "iu":
                raise ShapeError(f"predict: lengths must be integers, got dtype {lens.dtype}")
            if lens.shape != (B,):
                raise ShapeError(f"predict: expected lengths of shape ({B},), got {lens.shape}")
            if B and (lens.min() < 0 or lens.max() > T):
                bad = lens.min() if lens.min() < 0 else lens.max()
                raise ShapeError(f"predict: length {int(bad)} is outside [0, {T}] (time steps of x)")
            lens = np.ascontiguousarray(lens, dtype=np.int64)
        init = None
        if initial_state is not None:
            if self.signature["states"] is None:
                init = self._check_states(initial_state, B, "initial_state")
            else:
                start = self._start_states(B)
                init = sig_.from_source(self.signature, sig_.check_states_shape(
                    initial_state, self.state_shapes(B), "initial_state",
                    sig_.to_source(self.signature, start)), start)
        want = bool(return_state) or self._outputs_states or self._head is not None
        if B == 0:
            shape = (0, self._cm.output_steps(T), self.output_size) if self.output_is_sequence else (0, self.output_size)
            y = np.zeros(shape, np.float32)
            states = [np.zeros(s, np.float32) for s in self.native_state_shapes(0)]
        else:
            y, states = self._cm.forward(a, lens, init, want)
            if self._head is not None:
                y = self._head_forward(states)
            y = sig_.cut_time(self.signature, y, lens)
        y = sig_.shape_y(self.signature, sig_.outputs(self.signature, y, states))
        return (y, sig_.to_source(self.signature, states)) if return_state else y

    def stream(self, batch_size=1):
        """A Stream of `batch_size` rows over this model (its own state; one thread at a time)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
            raise ArgumentTypeError(f"stream: batch_size must be an integer >= 1, got {batch_size!r}")
        if not 1 <= batch_size <= 2**31 - 1:
            raise ShapeError(f"stream: batch_size must be an integer >= 1, got {batch_size!r}")
        if self._head is not None:
            return _HeadStream(self, self._cm, int(batch_size))
        if self.num_outputs > 1 or self._outputs_states:
            return _MultiOutputStream(self, self._cm, int(batch_size))
        if self.meta.get("step_inputs"):
            return _JoinedStream(self, self._cm, int(batch_size))
        return _engine.Stream(self, self._cm, int(batch_size))

    def run(self, output_names, feeds):
        """onnxruntime's InferenceSession.run for models converted from ONNX: feeds by the graph's
        own input names, in its own layouts; returns a list of arrays in graph output order, or
        in the order of output_names."""
        g = self.signature["graph"]
        if g is None:
            raise UnsupportedError("run() needs a model converted from ONNX (fastrnn.convert of an .onnx file); "
                                   "this model has no ONNX graph signature: use predict()")
        return _onnx_run(self, g, output_names, feeds)

    def save(self, path):
        """Write a .frnn file (safetensors; the spec as versioned JSON metadata)."""
        from .fileformat import save
        save(self, path)

    def __reduce__(self):
        """A Model pickles as its .frnn bytes (never as Python objects): unpickling runs them
        through the validating loader, so a pickle from elsewhere is as safe to load as a file,
        and precision, meta and signature come back with the weights."""
        from .fileformat import to_bytes
        return _from_bytes, (to_bytes(self),)


def _from_bytes(data):
    from .fileformat import load
    return load(data)


def _to_axes(a, have, want):
    """Array `a` whose axes are labelled `have` -> labels `want` ('1' = a unit axis; 'T*B' = the
    axes T and B flattened together, T outer). A label of have missing from want must be a unit
    axis (the batch of one of an unbatched graph, the feature of a squeezed one-wide output)."""
    split = [l for l in want if sig_.split_size(l)]          # the features viewed as (k..., F)
    if split and "F" in have:
        i = have.index("F")
        a = a.reshape(a.shape[:i] + tuple(sig_.split_size(l) for l in split) + (-1,) + a.shape[i + 1:])
        have = have[:i] + split + have[i:]
    atoms = [p for l in want if l != "1" for p in l.split("*")]
    drop = [i for i, l in enumerate(have) if l not in atoms]
    if drop:
        a = a.reshape([n for i, n in enumerate(a.shape) if i not in drop])
        have = [l for i, l in enumerate(have) if i not in drop]
    a = np.transpose(a, [have.index(l) for l in atoms])
    sizes = dict(zip(atoms, a.shape))
    shape = [1 if l == "1" else int(np.prod([sizes[p] for p in l.split("*")])) for l in want]
    return np.ascontiguousarray(a.reshape(shape))


def _from_axes(a, have, want, what):
    """A fed array labelled `have` (unit axes '1' dropped) -> labels `want`."""
    if a.ndim != len(have):
        raise ShapeError(f"run: input {what!r}: expected rank {len(have)} ({', '.join(have)}), got shape {a.shape}")
    for i, l in enumerate(have):
        if l == "1" and a.shape[i] != 1:
            raise ShapeError(f"run: input {what!r}: axis {i} must have size 1, got shape {a.shape}")
    keep = [i for i, l in enumerate(have) if l != "1"]
    a = a.reshape([a.shape[i] for i in keep])
    have = [have[i] for i in keep]
    return np.transpose(a, [have.index(l) for l in want])


def _onnx_run(model, g, output_names, feeds):
    if not isinstance(feeds, dict):
        raise ShapeError(f"run: feeds must be a dict of input name -> array, got {type(feeds).__name__}")
    names = [e["name"] for e in g["inputs"]]
    missing = [n for n in names if n not in feeds]
    extra = [n for n in feeds if n not in names and n not in model.meta.get("unused_inputs", ())]
    if missing or extra:
        raise ShapeError("run: " + "; ".join(
            ([f"missing input(s) {', '.join(map(repr, missing))}"] if missing else [])
            + ([f"unknown input(s) {', '.join(map(repr, extra))} (the graph's inputs: {', '.join(names)})"]
               if extra else [])))
    xe = next(e for e in g["inputs"] if e["role"] == "x")
    try:
        x = np.asarray(feeds[xe["name"]])
    except (ValueError, TypeError) as e:
        raise ShapeError(f"run: input {xe['name']!r} is not an array: {e}") from None
    if "B" not in xe["axes"]:                   # one unbatched sequence: a batch of one
        if x.ndim != len(xe["axes"]):
            raise ShapeError(f"run: input {xe['name']!r}: expected rank {len(xe['axes'])} "
                             f"({', '.join(xe['axes'])}), got shape {x.shape}")
        x, xe = x[None], dict(xe, axes=["B"] + list(xe["axes"]))
    statics = sorted((e for e in g["inputs"] if e["role"] == "static"), key=lambda e: e["cols"][0])
    F0 = model.input_size - sum(e["cols"][1] - e["cols"][0] for e in statics) if model.input_size else None
    if "F" in xe["axes"] and x.ndim == len(xe["axes"]) and x.shape[xe["axes"].index("F")] != F0:
        want = tuple(F0 if l == "F" else 1 if l == "1" else l for l in xe["axes"])
        raise ShapeError(f"run: input {xe['name']!r}: expected shape {want} (axes {', '.join(xe['axes'])}), "
                         f"got {x.shape}")
    x = _from_axes(x, xe["axes"], ["B", "T", "F"] if "F" in xe["axes"] else ["B", "T"], xe["name"])
    B = x.shape[0]
    if statics:                                 # per-row features: the input's last columns, every step
        parts = [x]
        for e in statics:
            a = np.asarray(feeds[e["name"]])
            w = e["cols"][1] - e["cols"][0]
            if a.shape != (B, w) or a.dtype.kind != "f":
                raise ShapeError(f"run: input {e['name']!r}: expected float static features of shape ({B}, {w}), "
                                 f"got {a.dtype} {a.shape}")
            parts.append(np.broadcast_to(a[:, None, :], (B, x.shape[1], w)))
        x = np.concatenate(parts, axis=-1)
    lens, init = None, None
    for e in g["inputs"]:
        a = feeds[e["name"]]
        if e["role"] == "lengths":
            lens = np.asarray(a)
            if lens.shape != (B,) or lens.dtype.kind not in "iu":
                raise ShapeError(f"run: input {e['name']!r}: expected integer sequence lengths of shape ({B},), "
                                 f"got {lens.dtype} {lens.shape}")
            if B and (lens.min() < 0 or lens.max() > x.shape[1]):
                raise ShapeError(f"run: input {e['name']!r}: lengths must lie in [0, {x.shape[1]}] (time steps), "
                                 f"got {lens.min()}..{lens.max()}")
        elif e["role"] == "state":
            a = _from_axes(np.asarray(a), e["axes"], ["S", "B", "F"], e["name"])
            if init is None:
                init = model._start_states(B)
            w = model._dims[e["parts"][0][0]][1]
            if a.shape != (len(e["parts"]), B, w) or a.dtype.kind != "f":
                raise ShapeError(f"run: input {e['name']!r}: expected float states of shape "
                                 f"{(len(e['parts']), B, w)} in axes (S, B, F), got {a.dtype} {a.shape}")
            for r, (k, d) in enumerate(e["parts"]):
                init[k][d] = a[r]
    try:
        y, states = model.predict(x, lengths=lens, initial_state=init, return_state=True)
    except ShapeError as e:      # predict names what is wrong (ids, lengths, steps): say run()
        raise ShapeError(f"run: {e}") from None
    outs = {}
    for o in g["outputs"]:
        if o["kind"] == "lengths":            # the lengths fed, passed through as the graph does
            outs[o["name"]] = lens.astype(o["dtype"])
            continue
        if o["kind"] == "y":
            have = ["B", "F"] if o["last"] else ["B", "T", "F"]
            a = y
            if "D" in o["axes"]:
                a = a.reshape(a.shape[:-1] + (o["dirs"], a.shape[-1] // o["dirs"]))
                have = have[:-1] + ["D", "F"]
        else:
            a = np.stack([states[k][d] for k, d in o["parts"]])
            have = ["S", "B", "F"]
            if "S" not in o["axes"]:
                a, have = a[0], ["B", "F"]
        outs[o["name"]] = _to_axes(a, have, o["axes"])
    order = [o["name"] for o in g["outputs"]]
    if output_names is None:
        return [outs[n] for n in order]
    unknown = [n for n in output_names if n not in outs]
    if unknown:
        raise ShapeError(f"run: unknown output name(s) {', '.join(map(repr, unknown))} (the graph's outputs: "
                         f"{', '.join(order)})")
    return [outs[n] for n in output_names]


class _MultiOutputStream(_engine.Stream):
    """A Stream over a multi-output source model (e.g. Keras return_state=True): step() returns
    the list the source model returns for this step; step_into() writes the main output only."""

    def step(self, x):
        y = _engine.Stream.step(self, x)
        sig = self.model.signature
        native = self.state if self.model._outputs_states else None
        if not self.model.output_is_sequence:
            res = sig_.outputs_list(sig, y, native)
        else:        # a one-step sequence: the time axis added for the signature is dropped again
            res = [a[:, 0] if o["kind"] == "y" else a
                   for o, a in zip(sig["outputs"], sig_.outputs_list(sig, y[:, None], native))]
        return res[0] if len(res) == 1 else res


class _JoinedStream(_engine.Stream):
    """A Stream over a one-step module that reads several arguments per step (Model._join):
    step((category, input_t)) or step(x_t) with them side by side."""

    def step(self, x):
        return _engine.Stream.step(self, self.model._join(x, "step"))

    def step_into(self, x, out):
        return _engine.Stream.step_into(self, self.model._join(x, "step_into"), out)


class _HeadStream(_engine.Stream):
    """A Stream over a model whose head reads final states (signature head): each step runs the
    recurrent layers, then the head on the states they hold now (what predict returns for the
    steps so far)."""

    def step(self, x):
        _engine.Stream.step(self, x)
        return self.model._head_forward(self.state)

    def step_into(self, x, out):
        B, n = self.batch_size, self.model.output_size
        if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (B, n)
                and out.flags.c_contiguous and out.flags.writeable):
            raise ShapeError(f"step_into: out must be a writeable C-contiguous float32 array of shape ({B}, {n})")
        out[...] = self.step(x)


def _pool_states(layers):
    """Native state indices of pooling layers (no source framework has them as states)."""
    out, k = set(), 0
    for l in layers:
        if isinstance(l, ir.Recurrent):
            k += 2 if l.cell == "lstm" else 1
        elif isinstance(l, ir.Pool):
            out.add(k)
            k += 1
    return out


def _describe(l):
    c = f"+{ir.carried(l.carry)}" if getattr(l, "carry", ()) else ""     # columns a branch carries
    if isinstance(l, ir.Recurrent):
        d = "" if l.direction == "forward" else f", {l.direction}"
        h0 = ", learned initial state" if any("h0" in w or "c0" in w for w in l.weights) else ""
        return f"{l.cell.upper()}({l.input_size}->{l.hidden_size}{c}{d}{h0})"
    if isinstance(l, ir.Embedding):
        return f"Embedding({l.vocab_size}, {l.output_size})"
    if isinstance(l, ir.Dense):
        return f"Dense({l.input_size}->{l.own_size}{c}, {l.activation.kind})"
    if isinstance(l, ir.Activation):
        return f"Activation({l.activation.kind}{', ' + str(l.size) + c if c else ''})"
    if isinstance(l, ir.Pool):
        return f"Pool({'+'.join(l.kinds)}, {l.over})"
    if isinstance(l, ir.Conv1D):
        return f"Conv1D({l.input_size}->{l.output_size}, k={l.kernel}, {l.activation.kind})"
    if isinstance(l, ir.Pool1D):
        return f"Pool1D({l.kind}, {l.window})"
    if isinstance(l, ir.RepeatVector):
        return f"RepeatVector({l.n or 'T'})"
    if isinstance(l, ir.Flatten):
        return f"Flatten({l.n} steps)"
    if isinstance(l, ir.Attention):
        return f"Attention({l.size}{c}, heads={l.heads}{', causal' if l.causal else ''})"
    return f"Masking({l.mask_value})"
