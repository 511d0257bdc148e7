"""The importers' shared lowering: a captured tensor graph, op by op, into the fastrnn pipeline.

A frontend (converters/frontends/) walks what its capture recorded -- a torch.export ATen graph,
a torch.fx graph of module calls, a TorchScript graph -- and calls Lowering.call(op, args) for
each node, with the canonical op name (ATen's, without namespace and overload: "linear",
"lstm", "view", "select", ...) and ATen's argument order. The handler of each op (registered
with @handles, converters/registry.py) runs it on ABSTRACT values, which say what a tensor is in
terms of the pipeline being built rather than holding data:

  PT     a tensor computed from the pipeline: its position (how many layers existed when it
         was made), the meaning of each of its axes ("B" batch, "T" time, "F" features, "1" a
         unit axis, a tuple for axes flattened together such as ("T", "B"); "x0"/"x1" for the
         input's axes until the first recurrent layer says which is batch and which is time),
         its time selection (the final step, the last step, max(lengths) steps), packed /
         padded (pack_padded_sequence), and a pending column order (features of a concat taken
         in another order).
  HN     h_n or c_n of a recurrent op: its rows are native states (layer k, direction d) of
         the pipeline, its axes among "S" (the stacked rows), "B", "F".
  Zeros  a tensor of zeros made in forward (an initial state): only its shape matters.
  Input  a forward argument other than the sequence, until its use says what it is:
         the lengths of pack_padded_sequence, or an initial state of a recurrent op.
  Size   an int from the example input that remembers whether it is the batch or time size.
  numpy arrays are constants (weights, folded values); Python scalars, tuples and lists are
  themselves.

Layer ops (embedding, linear, activations, recurrent ops, scalar and per-feature arithmetic)
append a layer when their input is the end of the pipeline; layout ops (transpose, view,
squeeze, select of the last step, cat of final states, ...) only change the abstract value.
Layout that reaches the model's output is the output adapter: predict returns the canonical
batch-major (B, T, F) / (B, F) whatever the source's axes, and meta records the source's axes
(fastrnn/adapters.py turns one into the other, for --check and for comparing an example).

A node that cannot be lowered is recorded with its source line and the walk goes on (its
result is Bad, and nodes that read a Bad value are skipped); at the end ONE UnsupportedError
lists every refused node. After the walk, passes fold what the walk appended one op at a time
(scalar affine maps and per-feature scales into the neighbouring Dense, activations into the
Dense before them): converters/passes.py.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, replace

import numpy as np

from fastrnn import ir
from fastrnn.errors import FastRNNError, UnsupportedError

from .passes import col_ranges
from .registry import handler, handles

# ---------------------------------------------------------------------------------------------
# abstract values


class Size(int):
    """An int (its value at the example input) that remembers its meaning: sym "B", "T", a
    product such as "B*T", or None for a plain number."""

    def __new__(cls, v, sym=None):
        self = int.__new__(cls, v)
        self.sym = sym
        return self

    def _combine(self, other, op, sign):
        v = op(int(self), int(other))
        a, b = self.sym, getattr(other, "sym", None)
        if sign == "*" and a and b:
            return Size(v, f"{a}*{b}")
        if sign == "*" and (a or b) and not (a and b):
            return Size(v, None)
        return v

    def __mul__(self, o):
        return self._combine(o, operator.mul, "*") if isinstance(o, int) else NotImplemented

    __rmul__ = __mul__

    def __repr__(self):
        return f"{int(self)}{'<' + self.sym + '>' if self.sym else ''}"


@dataclass(frozen=True)
class PT:
    """A tensor of the pipeline (module note)."""
    pos: int
    axes: tuple
    width: int | None                 # size of the "F" axis (None: ids, no feature axis)
    time: str | tuple | None = None   # None | "final" | "last" | "longest" | "longest_last" | ("tail", k)
    packed: bool = False
    padded: str | None = None         # pad_packed_sequence: "longest" (max(lengths)) | "T"
    cols: tuple | None = None         # ((start, stop), ...): features = these pipeline columns
    dirs: int = 1                     # the size of a "D" (direction) axis, apart from the features
    rows: str | None = None           # "sorted": rows in a packing's length order (Perm, below)


@dataclass(frozen=True)
class HN:
    """h_n / c_n rows (module note). parts: ((k, d), ...) per row of the "S" axis."""
    parts: tuple
    axes: tuple
    width: int
    kind: str                         # "h" | "c"
    rnn: int                          # which recurrent call made it
    pos: int
    rows: str | None = None           # as PT.rows
    group: int = 0                    # h_n.view(L, D, B, H): axes "L", "S" split the rows, "S" has group


@dataclass(frozen=True)
class Zeros:
    shape: tuple


@dataclass(frozen=True)
class Input:
    index: int
    name: str
    shape: tuple
    rows: tuple | None = None         # rows of axis row_axis it still covers (a slice of it)
    row_axis: int | None = None


@dataclass(frozen=True)
class PS:
    """A per-step value of a Python loop over time (unrolled by the capture): step t of `src`,
    then the per-step `ops` applied to it. src: ("seq", PT, axis) -- step t of a sequence of the
    pipeline (x[:, t]); ("chain", k) -- the state a recurrent cell chain holds after step t
    (kind "h" or "c"). ops: (("linear", key) | ("act", key) | ("unsq", dim), ...), payloads in
    Lowering.ps_payload. Each step of a loop gives the same src and ops with its own t, which is
    how a loop is recognised (converters/graph.py, loops over time)."""
    src: tuple
    t: int
    ops: tuple = ()
    kind: str = "h"


@dataclass(frozen=True)
class Finals:
    """h_n of unrolled layers: the last steps of several cell chains stacked along a new first
    axis (the dynamo exporter's h_n of a multi-layer nn.RNN); its rows are read by index."""
    rows: tuple


MAX_UNROLL = 4096         # iterations of a loop a frontend unrolls (ONNX Loop, TorchScript prim::Loop)


class Lengths:
    pass


class Bad:
    """The result of a node that was refused (its error is recorded once)."""


@dataclass
class _Rnn:
    """One recurrent op call: its IR layers are layers[first:last + 1]."""
    first: int
    last: int
    L: int
    D: int
    width: int                        # h's width (proj_size or hidden)
    hidden: int
    lstm: bool
    state0: int                       # native index of its first state

    @property
    def top(self):
        """The native index of its top layer's h."""
        return self.state0 + (2 * (self.L - 1) if self.lstm else self.L - 1)


def why(e):
    """What a refusal (REFUSALS) says: a handler's own reason, or what could not be interpreted."""
    if isinstance(e, Refused):
        return e.why
    if isinstance(e, FastRNNError):
        return str(e)
    return f"cannot be interpreted ({type(e).__name__}: {e})"


class Refused(Exception):
    def __init__(self, why):
        super().__init__(why)
        self.why = why


# ---------------------------------------------------------------------------------------------
# the lowering

# what a handler may raise on values it cannot lower: recorded against the node, never escaping
REFUSALS = (Refused, FastRNNError, IndexError, TypeError, KeyError, ValueError, AttributeError)


class Lowering:
    """Builds the pipeline from canonical op calls (module note). The frontend binds the
    inputs (bind_x, Input values), calls call() per node in order, then finish()."""

    def __init__(self, name):
        self.name = name
        self.layers = []
        self.rnns = []
        self.states = []              # signature states (torch: per RNN call, h and c stacks)
        self.nstates = 0
        self.bind = {}                # "x0"/"x1" -> "B"/"T"
        self.xsizes = {}              # "x0"/"x1" -> the example input's size
        self.static = set()           # input labels the capture fixed to the example's size (torch.export)
        self.guessed_repeats = []     # (ir.RepeatVector of n 0, the example's steps): graph._tile
        self.lengths_pad = None       # pack_padded_sequence by (ids != pad).sum(1): that pad (signature)
        self.rnn_out = {}             # index in rnns -> the output sequence of a torch-layout recurrent op
        self.input_ids = None
        self.takes_lengths = False
        self.unbatched = False
        self.one_step = False             # forward(x_t, hidden): one step of a user's loop
        self.x_leaf, self.x_name = 0, "x"   # which of forward's (flattened) arguments is the sequence
        self.step_inputs = None           # [(argument, name, width)]: x_t read from several arguments
        self.static_inputs = []           # [(argument, name, width)]: per-row features added to the input (_static_columns)
        self.series = False           # the input is a float series without a feature axis (below)
        self.series_of = None         # the 2-D input PT it was read from
        self.series_size = None       # the example's size of that input's second axis (if not its width)
        self.channel_first = False    # the input is (B, F, T) (a spectrogram N x F x T): _channels_first
        self.state_inputs = {}        # Input.index -> (rnn index, "h" | "c" | "hc")
        self.state_axes = {}          # Input.index -> its axes (ONNX initial states)
        self.state_rows = {}          # Input.index -> {row: (native state, direction)}
        self.length_inputs = set()    # Input.index of lengths (ONNX sequence_lens)
        self.lengths_index = None     # Input.index of pack_padded_sequence's lengths (torch)
        self.cut = set()              # positions whose recurrent layer now ends on its final state
        self.errors = []
        self.where = ""
        self.chains = []              # recurrent cells unrolled over time (loops over time, below)
        self.ps_payload = {}          # per-step op key -> its weights
        self.ps_made = {}             # (src, ops, sequence) -> the PT a loop became
        self.const_cache = {}         # frontends: one array per source tensor
        self.chain_state = {}         # cell chain -> (its first native state, made per step)
        self.state_cols = {}          # recurrent layer -> the source state's width (signature cols)
        self.head = None              # (first head layer, native (k, d) parts, width): a head over final states
        self.carried = {}             # (pos, cols) of a tensor -> where reach() carried it to
        self.finals = {}              # (rnn, h_n rows, axes) -> the pipeline tensor _final made of them

    # ---- helpers ------------------------------------------------------------------------
    def fail(self, why):
        raise Refused(why)

    def lab(self, a):
        """An axis label with the input's labels resolved once bound."""
        if isinstance(a, tuple):
            return tuple(self.lab(x) for x in a)
        return self.bind.get(a, a)

    def size(self, a):
        a = self.lab(a)
        if isinstance(a, tuple):
            return int(np.prod([self.size(x) for x in a]))
        if a in self.xsizes:
            return self.xsizes[a]
        return {"B": self.xsizes.get(self._label_of("B"), 1), "T": self.xsizes.get(self._label_of("T"), 1),
                "1": 1}.get(a)

    def _label_of(self, meaning):
        for k, v in self.bind.items():
            if v == meaning:
                return k
        return None

    def shape(self, v):
        """The example shape of a PT or HN."""
        if isinstance(v, PT):
            return tuple(v.width if a == "F" else v.dirs if a == "D" else self.size(a) for a in v.axes)
        if isinstance(v, HN):
            return tuple(self._hn_size(v, a) for a in v.axes)
        if isinstance(v, Zeros):
            return v.shape
        if isinstance(v, PS):
            return _ps_shape(self, v)
        if cells.is_step(v):
            node, lead = cells.lift(self, v)
            return (1,) * lead + (self.size("B"), node.width)
        if isinstance(v, (Input, StepIdx)):
            return v.shape
        if isinstance(v, np.ndarray):
            return v.shape
        if isinstance(v, Att):
            return tuple(1 if a == "1" else v.score.width if a == "F" else self.size(a) for a in v.axes)
        if isinstance(v, (IdMask, QScore)):
            return tuple(1 if a == "1" else self.size(a) for a in v.axes)
        if isinstance(v, Heads):
            return (self.size("B"), len(v.pools), v.pools[0].x.width)
        if isinstance(v, SelfScores):         # (batch, queries, keys)
            return (self.size("B"), self.size("T"), self.size("T"))
        if isinstance(v, (MaskedPT, Flipped)):
            return self.shape(v.x)
        if isinstance(v, Pooled):             # a pool not made yet: the time axis gone or kept as a unit
            shp = _kept_shape(self, v)
            return tuple(shp) if v.keepdim else tuple(n for a, n in zip(v.x.axes, shp) if self.lab(a) != "T")
        self.fail(f"expects a tensor, got {_what(v)}")

    def _hn_size(self, v, a):
        if isinstance(a, tuple):
            return int(np.prod([self._hn_size(v, x) for x in a]))
        return {"S": v.group or len(v.parts), "L": len(v.parts) // (v.group or 1), "F": v.width,
                "B": self.size("B"), "1": 1}[a]

    def static_cols(self, index):
        """The input columns (start, stop) of the static argument `index` (_static_columns), or None."""
        a = getattr(self, "static_base", 0)
        for i, _, w in self.static_inputs:
            if i == index:
                return a, a + w
            a += w
        return None

    def pipe_width(self, x):
        """The pipeline's own width where x was made (x.width counts only x's columns)."""
        if not x.pos or (self.head is not None and x.pos == self.head[0]):
            return x.width                 # the input, or a head's input (final states)
        return self.layers[x.pos - 1].output_size

    def at_end(self, x):
        if x.pos != len(self.layers):
            self.fail("reads a tensor from before a later layer (a branch): fastrnn runs a linear pipeline")
        if x.cols is None and x.pos and x.width is not None and self.pipe_width(x) != x.width * x.dirs:
            self.fail("reads some of the columns at the end of the pipeline (others carried beside them for "
                      "a branch); only a Linear, an activation or arithmetic can read them")
        if isinstance(x, PT) and x.time is None and x.pos in self.cut and "T" in [self.lab(a) for a in x.axes]:
            self.fail("uses every step of a recurrent layer whose final state is also used (fastrnn runs "
                      "that layer without its per-step output)")

    def reach(self, x):
        """x readable at the end of the pipeline, for a reader that acts per row (a Linear, an
        activation, arithmetic, a concat). When later layers exist (a branch of the source's
        graph: a residual connection, two heads on one tensor) and all of them act per step
        (Dense, Activation, recurrent layers returning sequences), each is made to carry x's
        columns after its own (ir.Dense.carry; a later one's weights read none of them),
        so x is the last columns at the end; a tensor carried once is found where it went
        (self.carried). -> x at the end, cols explicit where the pipeline there is wider; the
        columns nothing reads in the end are dropped by passes.prune."""
        if not isinstance(x, PT):
            self.fail(f"expects a tensor of the pipeline, got {_what(x)}")
        n = len(self.layers)
        key = lambda v: (v.pos, v.cols if v.cols is not None else ((0, v.width),))   # noqa: E731
        while x.pos < n and key(x) in self.carried:
            x = replace(x, **self.carried[key(x)])
        if x.pos < n:
            k = key(x)
            later = self.layers[x.pos:]
            bad = [l for l in later if not isinstance(l, (ir.Dense, ir.Activation, ir.Attention))
                   and not (isinstance(l, ir.Recurrent) and l.return_sequences)]
            if bad or x.packed or (self.head is not None and x.pos < self.head[0]):
                what = type(bad[0]).__name__ if bad else "a head over final states" if not x.packed else "a packing"
                self.fail(f"reads a tensor from before a later {what} (a branch around layers other than Linear "
                          f"layers, activations, self-attention and recurrent layers returning sequences): "
                          f"fastrnn runs a linear pipeline")
            cols = x.cols if x.cols is not None else ((0, x.width),)
            c = sum(e - a for a, e in cols)
            for i in range(x.pos, n):
                l = self.layers[i]
                if i > x.pos:                      # the columns carried by the layer before
                    w = l.input_size
                    l = _widened(l, c)
                    cols = ((w, w + c),)
                self.layers[i] = replace(l, carry=l.carry + tuple(cols))
            end = self.layers[-1].output_size
            moved = {"pos": n, "cols": ((end - c, end),)}
            self.carried[k] = moved
            x = replace(x, **moved)
        if x.cols is None and x.pos and x.width is not None and self.pipe_width(x) != x.width * x.dirs:
            x = replace(x, cols=((0, x.width * x.dirs),))
        return x

    def reach_all(self, xs):
        """reach() of each x; a later one's carry widens the pipeline after an earlier one's
        columns, so each is reached again (its columns stay where they went)."""
        return [self.reach(x) for x in [self.reach(x) for x in xs]]

    def whole(self, x):
        """x is every column of the pipeline at its end: x reached, then, when it is only some of
        the columns there or in another order, a Dense selecting them (passes fold it away)."""
        x = self.reach(x)
        if x.cols is None:
            return x
        idx = np.concatenate([np.arange(a, b) for a, b in x.cols])
        if len(idx) == self.pipe_width(x) and (idx == np.arange(len(idx))).all():
            return replace(x, cols=None)
        return self.append(ir.Dense(np.eye(self.pipe_width(x), dtype=np.float32)[idx]), x)

    def check_rows(self, v, what):
        """An output must have its rows in the input's order (a packing's sort undone)."""
        if getattr(v, "rows", None) == "sorted":
            self.fail(f"{what} has its rows in the order of their lengths (a pack_padded_sequence sort "
                      f"that is not undone)")

    def tensor(self, x, what="a tensor of the pipeline"):
        """x as a PT: rows of h_n of the top layer become the last recurrent layer's final step."""
        if isinstance(x, HN):
            return self._final(x)
        if cells.is_step(x):
            x = cells.to_ps(self, x)
        if isinstance(x, PS):
            return _ps_final(self, x)
        if isinstance(x, Pooled):
            return self.pool_layer([x])
        if isinstance(x, Flipped):
            self.fail(f"{what} reads a sequence in reversed time order (torch.flip): only a recurrent layer, "
                      f"per-step layers, a flip back, its last step or a pool over time can read one")
        if isinstance(x, Att) and x.bias is None and x.stage != "norm" and "1" not in x.axes \
                and isinstance(x.score, PT):
            y = x.score                            # exp(scores) used as a tensor: per-step layers
            for k in ([x.act] if x.act != "linear" else []) + (["exponential"] if x.stage == "exp" else []):
                y = activation(self, y, k)
            return y
        if not isinstance(x, PT):
            self.fail(f"expects {what}, got {_what(x)}")
        return x

    def _final(self, v):
        """h_n rows (B, F) or (B, S*F) -> the pipeline's final step, when they are the top
        layer's directions of the latest recurrent op, with nothing after it."""
        if v.kind != "h":
            self.fail("uses c_n as a tensor of the pipeline (only h_n rows are outputs of the layers)")
        axes = tuple(self.lab(a) for a in v.axes)
        made = self.finals.get((v.rnn, v.parts, axes))
        if made is not None:                  # read again after later layers: reach() carries it
            return made
        y = self._final_new(v, axes)
        self.finals[(v.rnn, v.parts, axes)] = y
        return y

    def _final_new(self, v, axes):
        if axes not in (("B", "F"), ("B", ("S", "F"))):
            self.fail(f"uses h_n with axes {_axes_str(axes)} as a pipeline tensor; take rows (h_n[-1]) or "
                      f"flatten them per batch row")
        r = self.rnns[v.rnn]
        if v.rnn != len(self.rnns) - 1 or v.pos != len(self.layers) or r.last != len(self.layers) - 1:
            self.fail("uses the final state of a recurrent layer that is not the last layer so far")
        top = [(r.top, d) for d in range(r.D)]
        parts = list(v.parts)
        if sorted(parts) != top or len(parts) != r.D:
            return self._head_start(v, r)
        layer = self.layers[-1]
        if layer.carry:
            self.fail("uses the final state of a recurrent layer whose steps carry a branch's columns")
        layer.return_sequences = False
        self.cut.add(len(self.layers))
        cols = None
        if parts != top:                # [backward, forward]: the engine's columns swapped
            H = r.width
            cols = tuple((d * H, (d + 1) * H) for _, d in parts)
        return PT(len(self.layers), ("B", "F"), r.width * r.D, time="final", cols=cols, rows=v.rows)

    def _head_start(self, v, r):
        """Final states other than the top layer's directions as features (h_n.permute(1, 0,
        2).reshape(B, -1) of a stacked RNN): what follows is a head over those native states
        (signature head), made of per-row layers only."""
        if self.head is not None or len(set(v.parts)) != len(v.parts):
            self.fail("uses h_n rows other than the top layer's directions twice")
        if v.rows is not None:
            self.fail("uses h_n rows in the order of their lengths (a pack_padded_sequence sort that is not undone)")
        layer = self.layers[-1]
        if layer.carry:
            self.fail("uses final states of recurrent layers whose steps carry a branch's columns")
        layer.return_sequences = False         # its per-step output is not read
        self.cut.add(len(self.layers))
        self.head = (len(self.layers), [list(p) for p in v.parts], v.width * len(v.parts))
        return PT(len(self.layers), ("B", "F"), self.head[2], time="final")

    def append(self, layer, x, width=None):
        """Append a layer that acts on x's features; -> the new end, x's axes kept."""
        self.layers.append(layer)
        return replace(x, pos=len(self.layers), width=width if width is not None else x.width, cols=None,
                       packed=x.packed)

    def feature_axis(self, x, dim):
        """Resolve dim of x to its index and check it is the feature axis."""
        n = len(x.axes)
        if not isinstance(dim, int) or not -n <= dim < n:
            self.fail(f"dim {dim!r} of a {n}-dimensional tensor")
        return dim % n

    # ---- driving ------------------------------------------------------------------------
    def call(self, op, args, kwargs, where=""):
        """Lower one node; -> its abstract result (Bad when refused; the error is recorded)."""
        if _has_bad(args) or _has_bad(kwargs):
            return Bad()
        fn = handler(op)
        self.where = where
        try:
            if fn is None:
                self.fail(f"op {op!r} is not supported{_hint(op)}")
            if op in FLIP_PER_STEP and any(isinstance(a, Flipped) for a in args):
                return _flipped_per_step(self, fn, args, kwargs)
            return fn(self, *args, **kwargs)
        except REFUSALS as e:
            self.errors.append(f"{op}{where}: {why(e)}")
            return Bad()

    def refuse(self, op, why, where=""):
        self.errors.append(f"{op}{where}: {why}")
        return Bad()

    def raise_errors(self):
        if self.errors:
            n = len(self.errors)
            head = (f"convert: {self.name}: {n} operation{'s' if n > 1 else ''} cannot be lowered to "
                    f"fastrnn's pipeline:")
            raise UnsupportedError(head + "".join(f"\n  - {e}" for e in self.errors))

    # ---- recurrent layers ---------------------------------------------------------------
    def recurrent(self, mode, x, hx, params, has_biases, num_layers, bidirectional, batch_first, proj_size=0):
        """A torch-layout recurrent op (ATen lstm/gru/rnn_tanh/rnn_relu): params flat, per layer
        and direction W_ih, W_hh, (b_ih, b_hh), (W_hr). -> (output PT, h_n HN, c_n HN or None)."""
        L, D = int(num_layers), 2 if bidirectional else 1
        per = (4 if has_biases else 2) + (1 if proj_size else 0)
        if not isinstance(params, (list, tuple)) or len(params) != L * D * per:
            self.fail(f"expected {L * D * per} weight tensors for {L} layers x {D} directions, got "
                      f"{len(params) if isinstance(params, (list, tuple)) else _what(params)}")
        if not all(isinstance(p, np.ndarray) for p in params):
            self.fail("recurrent weights that are not constants (computed in forward)")
        hx_items = list(hx) if isinstance(hx, (list, tuple)) else [hx]
        flipped = isinstance(x, Flipped)
        if flipped:
            if D == 2:
                self.fail("a bidirectional layer reading a sequence in reversed time order (torch.flip)")
            x = x.x
        x = _channels_first(self, x, ("B", "T", "F") if batch_first else ("T", "B", "F"))
        x = self._reach_rnn_input(x)
        axes = self._rnn_input(x, ("B", "T", "F") if batch_first else ("T", "B", "F"), hx_items, mode)
        if x.cols is not None:
            params = list(params)                      # layer 0's W_ih of each direction
            for d in range(D):
                params[d * per] = permute_columns(params[d * per], x.cols, self.pipe_width(x))
        layers = torch_layers(mode, params, L, D, has_biases, proj_size)
        if flipped:
            t_label = _flip_label(self, x)
            for layer in layers:            # rnn(torch.flip(x, [time])): each layer runs backwards
                layer.direction = "reverse"
        r, h, c = self._add_rnn(layers, x, hx)
        idx, pos = len(self.rnns) - 1, len(self.layers)
        out_axes = x.axes
        if self.one_step:           # the unit axis that played the time (in the order the op read it)
            out_axes = tuple("1" if a == "T" else a for a in axes)
        out = PT(pos, out_axes, D * r.width, packed=x.packed, rows=x.rows)
        self.rnn_out[idx] = out
        if flipped:
            out = Flipped(out, t_label)
        hn = HN(tuple(h), ("S", "B", "F"), r.width, "h", idx, pos, x.rows)
        cn = HN(tuple(c), ("S", "B", "F"), r.hidden, "c", idx, pos, x.rows) if c else None
        return out, hn, cn

    def _reach_rnn_input(self, x):
        """A recurrent layer's input made before later layers (recurrences side by side over one
        input: torch.cat([self.lstm(e)[0], self.gru(e)[0]], 2), a hand-written bidirectional
        layer): carried past them to the end (reach), read as columns."""
        if isinstance(x, PT) and x.pos < len(self.layers) and not x.packed and x.time is None:
            return self.reach(x)
        return x

    def _rnn_input(self, x, want, hx_items, what):
        """Check x as a recurrent layer's input and bind its axes to want ((B, T, F) or
        (T, B, F)); -> its resolved axes."""
        if not isinstance(x, PT):
            self.fail(f"a recurrent layer reads {_what(x)}, not a sequence of the pipeline")
        if x.padded:
            self.fail("a recurrent layer reading pad_packed_sequence's output unpacked runs over the padding; "
                      "pack it again (pack_padded_sequence)")
        if x.time is not None:
            self.fail("a recurrent layer after the last step or steps were taken (the whole sequence is needed)")
        if "D" in [self.lab(a) for a in x.axes]:
            self.fail("a recurrent layer reads directions that are not merged into the features")
        self.at_end(x)
        axes = tuple(self.lab(a) for a in x.axes)
        batch_first = want[0] == "B"
        if len(axes) == 2 and axes[-1] == "F":       # one unbatched sequence (T, F)
            axes = (axes[0], "1", "F") if not batch_first else ("1", axes[0], "F")
            self.unbatched = True
        if len(axes) != 3 or axes[2] != "F":
            self.fail(f"a recurrent layer reads a tensor with axes {_axes_str(axes)}; expected {_axes_str(want)}")
        if (not self.bind and not self.rnns and any(isinstance(v, Input) for v in hx_items)
                and len(self.xsizes) == 1 and sorted(axes[:2]) == sorted(("x0", "1"))
                and (axes.index("1") == want.index("T") or self.xsizes["x0"] == 1)):
            # forward(x_t, hidden) -> (y_t, hidden) on one step (x_t has no time axis; the RNN reads
            # it as a one-step sequence): a module the user's own loop drives. Its input's axis is
            # the batch, the unit axis the time: predict and stream() replay that loop.
            self.bind["x0"] = "B"
            self.one_step = True
            axes = tuple("T" if a == "1" else self.lab(a) for a in axes)
            if axes[:2] == want[1::-1] and self.xsizes["x0"] == 1:
                axes = want            # both unit-sized in the example: view(1, 1, -1) is either order
        for a, w in zip(axes[:2], want[:2]):
            if a == w:
                continue
            if a in ("x0", "x1") and a not in self.bind and w not in self.bind.values():
                self.bind[a] = w
            elif a == "1" and w == "B" and "B" not in self.bind.values():
                self.unbatched = True                # an unsqueezed unit axis plays the batch
            else:
                self.fail(f"{what} reads a tensor with axes {_axes_str(axes)} (expected {_axes_str(want)})")
        return axes

    def _add_rnn(self, layers, x, hx, s_axes=("S", "B", "F")):
        """Append recurrent layers (one op: stacked layers of one cell) reading x; initial states
        hx, their axes s_axes; -> (the _Rnn, h parts, c parts) in torch's stacking (layer * D + d)."""
        if layers[0].input_size != (self.pipe_width(x) if x.cols is not None else x.width):
            self.fail(f"a recurrent layer of {layers[0].input_size} inputs reads {x.width} features")
        first = len(self.layers)
        L, D = len(layers), layers[0].num_directions
        lstm = layers[0].cell == "lstm"
        r = _Rnn(first, first + L - 1, L, D, layers[-1].state_size, layers[-1].hidden_size, lstm, self.nstates)
        self.layers += self._initial_state(hx, r, layers, s_axes)
        h, c = [], []
        for l in range(L):
            k0 = r.state0 + (2 * l if r.lstm else l)
            h += [(k0, d) for d in range(D)]
            c += [(k0 + 1, d) for d in range(D)] if r.lstm else []
        self.states.append({"parts": [list(p) for p in h], "stack": True})
        if c:
            self.states.append({"parts": [list(p) for p in c], "stack": True})
        self.nstates += L * (2 if r.lstm else 1)
        self.rnns.append(r)
        return r, h, c

    def onnx_recurrent(self, layer, x, initial_h, initial_c, lengths, layout):
        """An ONNX LSTM / GRU / RNN node as one ir.Recurrent (weights already in the IR's
        layout): X (T, B, F) (layout 0) or (B, T, F) (1); -> (Y, Y_h, Y_c): Y with a direction axis
        D ((T, D, B, F) / (B, T, D, F)), Y_h / Y_c rows (S, B, F) / (B, S, F)."""
        flipped = isinstance(x, Flipped)
        if flipped:
            if layer.direction == "bidirectional":
                self.fail("a bidirectional layer reading a sequence in reversed time order (torch.flip)")
            x = x.x
        x = _channels_first(self, x, ("B", "T", "F") if layout else ("T", "B", "F"))
        x = self._reach_rnn_input(x)
        axes = self._rnn_input(x, ("B", "T", "F") if layout else ("T", "B", "F"), [initial_h, initial_c], "X")
        if flipped:
            t_label = _flip_label(self, x)
            layer = replace(layer, direction="forward" if layer.direction == "reverse" else "reverse")
        if x.cols is not None:
            for w in layer.weights:
                w["W_ih"] = permute_columns(w["W_ih"], x.cols, self.pipe_width(x))
            layer = replace(layer)
        if lengths is not None:
            if not isinstance(lengths, Input):
                self.fail(f"sequence_lens that is {_what(lengths)}: give lengths as a graph input")
            self.takes_lengths = True
            self.length_inputs.add(lengths.index)
        hx = [initial_h] + ([initial_c] if layer.cell == "lstm" else [])
        s_axes = ("B", "S", "F") if layout else ("S", "B", "F")
        for v in hx:
            if isinstance(v, Input):
                if v.rows is not None and v.row_axis != s_axes.index("S"):
                    self.fail(f"initial states sliced along another axis than the directions of layout {layout}")
                self.state_axes[v.index] = s_axes
        r, h, c = self._add_rnn([layer], x, hx if layer.cell == "lstm" else initial_h, s_axes)
        idx, pos = len(self.rnns) - 1, len(self.layers)
        y_axes = ("B", "T", "D", "F") if layout else ("T", "D", "B", "F")
        del axes
        y = PT(pos, y_axes, r.width, dirs=r.D, rows=x.rows)
        self.rnn_out[idx] = PT(pos, tuple(a for a in y_axes if a != "D"), r.D * r.width, rows=x.rows)
        if flipped:
            y = Flipped(y, t_label)
        yh = HN(tuple(h), s_axes, r.width, "h", idx, pos, x.rows)
        yc = HN(tuple(c), s_axes, r.hidden, "c", idx, pos, x.rows) if c else None
        return y, yh, yc

    def _initial_state(self, hx, r, layers, s_axes=("S", "B", "F")):
        """hx: None or zeros (nothing to do); forward's own state argument(s) -> predict's
        initial_state (recorded in state_inputs); a constant broadcast over the batch (a learned
        initial state) -> the layers' h0 / c0. s_axes: the states' axes. -> layers."""
        items = list(hx) if isinstance(hx, (list, tuple)) else [hx]
        for i, v in enumerate(items):
            role = "hc"[i] if r.lstm and len(items) == 2 else "h"
            if v is None or isinstance(v, Zeros):
                continue
            if isinstance(v, np.ndarray) and not v.any():
                continue
            if isinstance(v, np.ndarray):
                layers = self._learned_state(v, role, r, layers, s_axes)
                continue
            if isinstance(v, Input):
                rows = v.rows if v.rows is not None else range(r.L * r.D)
                if len(rows) != r.L * r.D:
                    self.fail(f"an initial state of {len(rows)} rows for {r.L} layer(s) x {r.D} direction(s)")
                taken = self.state_rows.setdefault(v.index, {})
                for j, row in enumerate(rows):        # row j: layer j // D, direction j % D
                    l, d = divmod(j, r.D)
                    k = r.state0 + (2 * l + (role == "c") if r.lstm else l)
                    if row in taken:
                        self.fail(f"row {row} of the state argument {v.name!r} initialises two states")
                    taken[row] = (k, d)
                if v.rows is None:
                    if v.index in self.state_inputs:
                        self.fail("one state argument initialises two recurrent layers")
                    self.state_inputs[v.index] = (len(self.rnns), role)
                continue
            self.fail(f"an initial state that is {_what(v)}: only zeros, a constant (a learned initial state) "
                      f"or a state passed to forward (predict's initial_state) are supported")
        return layers

    def _learned_state(self, v, role, r, layers, s_axes):
        """A constant initial state, the same for every row (an nn.Parameter h0 expanded or repeated
        to the batch size, or with a batch of one): rows of axis S are (layer, direction) in torch's
        stacking -> h0 / c0 of those layers' directions."""
        v = np.asarray(v, np.float32)
        width = r.hidden if role == "c" else r.width
        b = s_axes.index("B")
        if v.ndim != 3 or v.shape[b] not in (1, self.size("B")) or v.shape[s_axes.index("S")] != r.L * r.D \
                or v.shape[2] != width:
            self.fail(f"a constant initial {role} of shape {v.shape}: a learned initial state has "
                      f"{r.L * r.D} rows (layers x directions) of {width} for a batch of one, broadcast over "
                      f"the batch (axes {_axes_str(s_axes)})")
        per_row = np.moveaxis(v, b, 0)                 # (B, S, F)
        if not (per_row == per_row[:1]).all():       # the dynamo exporter's expand, folded at the example's batch
            self.fail(f"a constant initial {role} that differs between the rows of the batch")
        rows = per_row[0]
        out = []
        for l, layer in enumerate(layers):
            ws = [dict(w, **{role + "0": rows[l * r.D + d]}) for d, w in enumerate(layer.weights)]
            out.append(replace(layer, weights=ws))
        return out


def _widened(l, c):
    """Layer l reading c more input columns after its own, which none of its weights read (a
    branch's columns carried past it, static features added to the input); an Activation reads
    them only through a carry. None for a layer that cannot."""
    if isinstance(l, ir.Dense):
        return replace(l, weight=np.concatenate([l.weight, np.zeros((l.own_size, c), np.float32)], 1))
    if isinstance(l, ir.Recurrent):             # its input projection reads none of them
        return replace(l, weights=[dict(d, W_ih=np.concatenate(
            [d["W_ih"], np.zeros((d["W_ih"].shape[0], c), np.float32)], 1)) for d in l.weights])
    if isinstance(l, ir.Attention):             # columns past its q, k, v
        return replace(l, extra=l.extra + c)
    return l if isinstance(l, ir.Activation) else None


def split_head(low, fold):
    """The lowered layers folded (converters/passes.py), and the signature head when the output
    reads final states other than the top layer's (Lowering._head_start): the pipeline and the
    head are folded apart, the head made of per-row layers only (a linear one when the states are
    the output themselves). -> (layers, head or None)."""
    if low.head is None:
        return fold(low.layers), None
    n, parts, width = low.head
    main, head = fold(low.layers[:n]), fold(low.layers[n:])
    bad = [type(l).__name__ for l in head if not isinstance(l, (ir.Dense, ir.Activation))]
    if bad:
        raise UnsupportedError(f"convert: {low.name}: a {bad[0]} after final states of several layers (only "
                               f"Linear layers and activations may read them)")
    if not head:
        head = [ir.Activation(width, "linear")]
    return main + head, {"from": len(main), "parts": parts}


def torch_layers(mode, params, L, D, has_biases, proj_size):
    """ir.Recurrent layers from torch-layout weights: params flat in ATen's order, per layer and
    direction W_ih, W_hh, (b_ih, b_hh), (W_hr) (torch's layout is the IR's: no reordering).
    Mode "gru_v1" is a GRU that resets the state before its recurrent matmul (Keras
    reset_after=False, ONNX linear_before_reset=0; unrolled cells only)."""
    cell = {"lstm": "lstm", "gru": "gru", "gru_v1": "gru", "rnn_tanh": "rnn", "rnn_relu": "rnn"}[mode]
    act = "relu" if mode == "rnn_relu" else "tanh"
    per = (4 if has_biases else 2) + (1 if proj_size else 0)
    layers, k = [], 0
    for l in range(L):
        ws = []
        for d in range(D):
            p = params[k:k + per]
            k += per
            w = {"W_ih": p[0], "W_hh": p[1]}
            if has_biases:
                w["b_ih"], w["b_hh"] = p[2], p[3]
            if proj_size:
                w["W_hr"] = p[-1]
            ws.append(w)
        try:
            layers.append(ir.Recurrent(cell, ws, direction="bidirectional" if D == 2 else "forward",
                                       activations=[[act]] if cell == "rnn" else None, return_sequences=True,
                                       linear_before_reset=mode != "gru_v1"))
        except FastRNNError as e:
            raise type(e)(f"layer {l}: {e}") from None
    return layers


def permute_columns(W, cols, total=None):
    """W (out, in) reading features in `cols` order (pipeline column ranges) -> W reading the
    pipeline's own `total` columns (columns not in cols get zero weights)."""
    idx = np.concatenate([np.arange(a, b) for a, b in cols])
    W2 = np.zeros((W.shape[0], total if total is not None else W.shape[1]), W.dtype)
    np.add.at(W2.T, idx, W.T)            # a column read twice (torch.cat([x, x])) sums
    return W2


def _has_bad(v):
    if isinstance(v, Bad):
        return True
    if isinstance(v, (list, tuple)):
        return any(_has_bad(x) for x in v)
    if isinstance(v, dict):
        return any(_has_bad(x) for x in v.values())
    return False


def _permutes(low, x):
    """x's cols are every column of the pipeline where it is, each once."""
    idx = np.concatenate([np.arange(a, b) for a, b in x.cols])
    return len(idx) == low.pipe_width(x) and len(set(idx.tolist())) == len(idx)


def _what(v):
    if isinstance(v, PT):
        return "a tensor of the pipeline"
    if isinstance(v, HN):
        return f"{v.kind}_n"
    if isinstance(v, np.ndarray):
        return f"a constant of shape {v.shape}"
    if isinstance(v, Input):
        return f"the argument {v.name!r}"
    if cells.is_step(v):
        return "a step value of a loop over time"
    if isinstance(v, Flipped):
        return "a sequence in reversed time order (torch.flip)"
    if isinstance(v, Att):
        return "attention weights" + (f" of {v.score.width} heads" if v.score.width > 1 else "")
    if isinstance(v, Heads):
        return f"the attention pools of {len(v.pools)} heads (B, heads, F)"
    if isinstance(v, QScore):
        return "attention scores against the final state"
    if isinstance(v, FeatSplit):
        return f"features viewed as {v.ks + (v.x.width // int(np.prod(v.ks)),)} (forward's output only)"
    if isinstance(v, IdMask):
        return (f"a mask of the padding id {v.pad}" if v.pad != LENGTHS else "a mask of the steps before lengths") + \
            (" (its count of steps)" if v.count else "")
    if isinstance(v, MaskedPT):
        return f"a sequence under a mask of {'the padding id ' + str(v.pad) if v.pad != LENGTHS else 'lengths'} " \
               f"(read by a pooling over time only)"
    return type(v).__name__


def _axes_str(axes):
    return "(" + ", ".join("*".join(a) if isinstance(a, tuple) else a for a in axes) + ")"


_HINTS = {
    "layer_norm": "; normalisation inside the pipeline is not supported",
}


def _hint(op):
    return _HINTS.get(op, "")


# ---------------------------------------------------------------------------------------------
# handlers: pass-through

@handles("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d",
         "contiguous", "clone", "detach", "cpu", "alias", "lift_fresh_copy", "_to_copy", "to", "float",
         "requires_grad_", "type_as", "cuda", "identity")
def _identity(low, x, *args, **kwargs):
    if isinstance(x, np.ndarray) and x.dtype.kind == "f":
        return x.astype(np.float32)
    return x


@handles("numpy")
def _numpy(low, x, *args):
    """lengths.cpu().numpy() into pack_padded_sequence (Tacotron 2's encoder): the same lengths."""
    if not isinstance(x, (Input, np.ndarray)):
        low.fail(f".numpy() of {_what(x)} (only of forward's lengths or a constant)")
    return x


@handles("dim")
def _dim(low, x):
    return len(low.shape(x))


@handles("size", "sym_size")
def _size(low, x, dim=None):
    if isinstance(x, (Flipped, NegLengths)):
        x = x.x
    if isinstance(x, FlatStepIdx) and dim in (None, 0, -1):     # one index per row
        return (Size(low.size("B"), "B"),) if dim is None else Size(low.size("B"), "B")
    if isinstance(x, BatchSizes) and dim == 0:      # batch_sizes.size(0): the longest row's length
        return Size(low.size("T"), "longest")
    if isinstance(x, Perm) and dim in (None, 0):    # a row order: one index per row
        return (Size(low.size("B"), "B"),) if dim is None else Size(low.size("B"), "B")
    if isinstance(x, (PT, HN, Zeros, Input, np.ndarray, PS, Heads)) or cells.is_step(x):
        shp = low.shape(x)
        if dim is None:
            return tuple(_sized(low, x, i, s) for i, s in enumerate(shp))
        n = len(shp)
        if not -n <= dim < n:
            low.fail(f"size({dim}) of a {n}-dimensional tensor")
        return _sized(low, x, dim % n, shp[dim % n])
    low.fail(f"size of {_what(x)}")


def _sized(low, x, i, s):
    if isinstance(x, PT):
        a = low.lab(x.axes[i])
        return Size(s, a if a in ("B", "T", "x0", "x1") else "*".join(a) if isinstance(a, tuple) else None)
    if isinstance(x, PS) or cells.is_step(x):        # one step: (1, ...,) batch, features
        n = len(low.shape(x))
        return Size(s, "B") if i == n - 2 else s
    if isinstance(x, HN) and low.lab(x.axes[i]) == "B" or isinstance(x, Heads) and i == 0:
        return Size(s, "B")
    return s


@handles("len")
def _len(low, x):
    if isinstance(x, (list, tuple)):
        return len(x)
    return _size(low, x, 0)


# ---- constants and zeros --------------------------------------------------------------------

def _shape_arg(low, a):
    if isinstance(a, (list, tuple)) and len(a) == 1 and isinstance(a[0], (list, tuple)):
        a = a[0]
    if not all(isinstance(d, int) for d in a):
        low.fail(f"a shape that is not known when converting: {a!r}")
    return tuple(int(d) for d in a)


def _filled(low, op, args, kwargs):
    if op in ("zeros_like", "ones_like", "full_like", "randn_like"):
        shape = low.shape(args[0])
        fill = {"zeros_like": 0.0, "ones_like": 1.0, "randn_like": None}.get(op, args[1] if len(args) > 1 else
                                                                            kwargs.get("fill_value"))
    elif op.startswith("new_"):
        shape = _shape_arg(low, args[1:2] if len(args) == 2 else args[1:])
        fill = {"new_zeros": 0.0, "new_ones": 1.0, "new_empty": 0.0}.get(op)
        if op == "new_full":
            shape, fill = _shape_arg(low, [args[1]]), args[2] if len(args) > 2 else kwargs.get("fill_value")
    else:
        if op == "full":
            shape, fill = _shape_arg(low, [args[0]]), args[1] if len(args) > 1 else kwargs.get("fill_value")
        else:
            shape = _shape_arg(low, args)
            fill = {"zeros": 0.0, "ones": 1.0, "empty": 0.0}.get(op)
    if fill is None:
        low.fail(f"{op}: a random tensor (an initial state drawn at random each call) cannot be reproduced")
    if fill == 0:
        return Zeros(shape)
    return np.full(shape, float(fill), np.float32)


for _op in ("zeros", "new_zeros", "zeros_like", "full", "new_full", "ones", "new_ones", "ones_like",
            "full_like", "empty", "new_empty", "randn", "rand", "randn_like"):
    handles(_op)((lambda op: lambda low, *a, **k: _filled(low, op, a, k))(_op))


@handles("new", "new_tensor_uninit")
def _new(low, x, *shape):
    """x.new(*sizes): an uninitialised tensor, filled later (fill_ / zero_)."""
    return Zeros(_shape_arg(low, shape))


@handles("fill", "fill_", "zero_")
def _fill(low, x, value=0.0):
    if not isinstance(x, (Zeros, np.ndarray)):
        low.fail(f"{'fill_' if value else 'zero_'} of {_what(x)}")
    return Zeros(low.shape(x)) if value == 0 else np.full(low.shape(x), float(value), np.float32)


@handles("scalar_tensor", "tensor")
def _scalar_tensor(low, v, *args, **kwargs):
    return np.asarray(v, np.float32)


# ---- embedding, linear -------------------------------------------------------------------------

@handles("embedding")
def _embedding(low, weight, indices, padding_idx=None, scale_grad_by_freq=False, sparse=False, max_norm=None):
    if max_norm is not None:
        low.fail("Embedding(max_norm=...) renormalises rows at lookup: not supported")
    if not isinstance(weight, np.ndarray) or weight.ndim != 2:
        low.fail("an embedding whose table is not a constant matrix")
    if isinstance(indices, np.ndarray) and indices.dtype.kind in "iu":     # positions arange(T): rows of the table
        if indices.size and (indices.min() < 0 or indices.max() >= weight.shape[0]):
            low.fail(f"an embedding of constant indices outside its {weight.shape[0]} rows")
        return weight[indices].astype(np.float32)
    if not isinstance(indices, PT) or indices.pos != 0 or low.layers or indices.width is not None:
        low.fail("an Embedding must read the model's input (token ids) first")
    low.input_ids = True
    low.layers.append(ir.Embedding(weight))
    return replace(indices, pos=1, axes=indices.axes + ("F",), width=int(weight.shape[1]))


@handles("one_hot")
def _one_hot(low, indices, num_classes=-1):
    """F.one_hot(ids, n).float() of the input: an Embedding whose table is the identity."""
    if not isinstance(num_classes, int) or num_classes < 1:
        low.fail("one_hot without num_classes (its width would depend on the data)")
    return _embedding(low, np.eye(num_classes, dtype=np.float32), indices)


@handles("linear")
def _linear(low, x, weight, bias=None):
    if cells.is_step(x) or isinstance(x, Zeros) or (isinstance(x, Input) and x.row_axis == -1):
        # a cell's gates, unrolled (from zeros or one row of a state argument): step expressions
        if not isinstance(weight, np.ndarray) or weight.ndim != 2 or not (bias is None or isinstance(bias, np.ndarray)):
            low.fail("a Linear whose weights are not constants")
        return cells.linear(low, x, weight, bias)
    if isinstance(x, PS) and x.kind == "h":          # inside a loop over time: a per-step Linear
        if not isinstance(weight, np.ndarray) or (bias is not None and not isinstance(bias, np.ndarray)):
            low.fail("a Linear whose weights are not constants")
        return _ps_op(low, x, ("linear",), (cells.intern(low, weight), None if bias is None else cells.intern(low, bias)))
    x = low.tensor(x)
    if x.packed:
        low.fail("a Linear on a PackedSequence")
    x = low.reach(x)
    if x.dirs > 1:
        low.fail("a Linear over directions that are not merged into the features")
    if not isinstance(weight, np.ndarray) or weight.ndim != 2:
        low.fail("a Linear whose weight is not a constant matrix")
    if low.lab(x.axes[-1]) == ("T", "F"):
        x = _flatten_steps(low, x, weight.shape[1])
    if low.lab(x.axes[-1]) != "F":
        low.fail(f"a Linear over the last axis of a tensor with axes {_axes_str(low.lab(x.axes))}, which is "
                 f"not the feature axis")
    if weight.shape[1] != x.width:
        low.fail(f"a Linear of weight shape {weight.shape} on {x.width} features")
    if bias is not None and not isinstance(bias, np.ndarray):
        low.fail("a Linear whose bias is not a constant")
    W = permute_columns(weight, x.cols, low.pipe_width(x)) if x.cols is not None else weight
    return low.append(ir.Dense(W, bias), x, int(weight.shape[0]))


def _flatten_steps(low, x, n_in):
    """out.reshape(B, -1) (steps, then features) read by a Linear of n_in inputs: the Linear fixes
    the number of steps (n_in / features); an ir.Flatten of them, then the Linear over its output."""
    if x.time is not None or x.padded or x.packed or low.takes_lengths or n_in % x.width:
        low.fail("a Linear over steps flattened with their features, of a tensor cut in time or with lengths "
                 f"(or {n_in} inputs for {x.width} features a step)")
    x = low.whole(x)
    n = n_in // x.width
    if n != low.size("T"):
        low.time_hint = n              # an ONNX graph's made-up length: its frontend tries this one
        low.fail(f"a Linear over {n} flattened steps of a {low.size('T')}-step example")
    low.layers.append(ir.Flatten(x.width, n))
    return replace(x, pos=len(low.layers), axes=x.axes[:-1] + ("F",), width=x.width * n, cols=None)


@dataclass(frozen=True, eq=False)
class SelfScores:
    """bmm(q, k.transpose(1, 2)) of two sequences of the pipeline: the T x T attention scores of
    a hand-written self-attention, times `scale` since; weights: after a softmax over the keys."""
    q: PT
    k: PT
    scale: float = 1.0
    weights: bool = False


def _is_seq(low, x, axes=("B", "T", "F")):
    return isinstance(x, PT) and x.time is None and not x.packed and x.width is not None and \
        tuple(low.lab(a) for a in x.axes) == axes


def _attend(low, q, k, v, scale, causal=False):
    """softmax(scale q k^T) v of three sequences of the pipeline of one width: q, k and v side by
    side (each reached at the end), then an ir.Attention of one head."""
    if not (q.width == k.width == v.width):
        low.fail(f"a self-attention of queries, keys and values of {q.width}, {k.width} and {v.width} features "
                 f"(fastrnn's attention layer takes one width)")
    qkv = low.whole(_cat_features(low, [q, k, v], -1))
    return low.append(ir.Attention(q.width, 1, bool(causal), float(scale)), qkv, q.width)


@handles("scaled_dot_product_attention")
def _sdpa(low, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, *rest, **kw):
    """F.scaled_dot_product_attention(q, k, v) of (B, T, E) sequences (one head)."""
    if attn_mask is not None or kw.get("enable_gqa"):
        low.fail("scaled_dot_product_attention with an attn_mask (fastrnn's attention masks only by lengths)")
    if not all(_is_seq(low, t) for t in (q, k, v)):
        low.fail("scaled_dot_product_attention of tensors other than (batch, time, features) sequences of the "
                 "pipeline (heads split by view / transpose are not read)")
    return _attend(low, q, k, v, scale if scale is not None else 1.0 / np.sqrt(q.width), is_causal)


@handles("bmm")
def _bmm(low, a, x):
    if _is_seq(low, a) and _is_seq(low, x, ("B", "F", "T")):
        return SelfScores(a, replace(x, axes=(x.axes[0], x.axes[2], x.axes[1])))    # q @ k^T
    if isinstance(a, SelfScores) and a.weights and _is_seq(low, x):
        return _attend(low, a.q, a.k, x, a.scale)                                  # weights @ v
    if isinstance(a, SelfScores) or isinstance(x, SelfScores):
        low.fail("a product of attention scores other than softmax(q k^T) v")
    r = _query_bmm(low, a, x) or _att_bmm(low, a, x)
    if r is None:
        low.fail(f"a batched matmul of {_what(a)} and {_what(x)} (only attention weights and a sequence)")
    return r


@handles("matmul", "mm")
def _matmul(low, x, w):
    if isinstance(x, (Att, SelfScores)) or isinstance(w, (HN, Att)) or isinstance(x, PT) and isinstance(w, PT):
        return _bmm(low, x, w)
    if isinstance(x, np.ndarray) and isinstance(w, np.ndarray):
        return np.matmul(x, w).astype(np.float32)
    if isinstance(w, np.ndarray) and w.ndim == 1:        # x @ v: a Linear to one feature, squeezed
        return _squeeze(low, _linear(low, x, np.ascontiguousarray(w[None, :]), None), -1)
    if not isinstance(w, np.ndarray) or w.ndim != 2:
        low.fail("a matmul of the pipeline with something other than a constant matrix")
    return _linear(low, x, np.ascontiguousarray(w.T), None)


@handles("addmm")
def _addmm(low, bias, x, w, beta=1, alpha=1):
    if beta != 1 or alpha != 1 or not isinstance(w, np.ndarray):
        low.fail("addmm other than bias + x @ W")
    return _linear(low, x, np.ascontiguousarray(w.T), bias)


@handles("t", "numpy_T")
def _t(low, x):
    if isinstance(x, np.ndarray):
        return x.T
    return _transpose(low, x, 0, 1)


# ---- activations -------------------------------------------------------------------------------

def activation(low, x, kind, alpha=None, dim=None, beta=None):
    if beta is not None and (cells.is_step(x) or isinstance(x, (PS, Att))):
        low.fail(f"{kind} inside a loop over time")
    if cells.is_step(x):
        if kind in ir.ROW_WISE and dim not in (None, -1, 1):
            low.fail(f"{kind} over dim={dim} of one step (batch, features)")
        return cells.act(low, x, kind, alpha)
    if isinstance(x, PS) and x.kind == "h":          # inside a loop over time: per step
        if kind in ir.ROW_WISE and dim not in (None, -1, 1):
            low.fail(f"{kind} over dim={dim} of one step (batch, features)")
        return _ps_op(low, x, ("act",), (kind, alpha, -1 if kind in ir.ROW_WISE else None))
    if isinstance(x, Att) or (kind == "exponential" and _is_score(low, x)
                              and "F" not in [low.lab(a) for a in x.axes]):
        return _att_act(low, _att_of(low, x, kind), kind)      # attention scores (Att)
    x = low.tensor(x)
    if x.packed:
        low.fail(f"{kind} of a PackedSequence")
    if x.width is None:
        low.fail(f"{kind} of the token ids")
    if x.dirs > 1:
        low.fail(f"{kind} of directions that are not merged into the features")
    if kind in ir.ROW_WISE:
        i = low.feature_axis(x, -1 if dim is None else dim)
        if low.lab(x.axes[i]) != "F":
            low.fail(f"{kind} over dim={dim} (axis {low.lab(x.axes[i])!r}): only the feature axis is supported")
    x = low.reach(x)
    if x.cols is not None and (kind in ir.ROW_WISE or not _permutes(low, x)):
        x = low.whole(x)                  # some columns, or a row-wise one of permuted columns
    a = ir.Act(kind, alpha if alpha is not None else float("nan"), beta if beta is not None else float("nan"))
    # a Dense before it takes it in passes.fold (not here: another reader may need the value before
    # it); elementwise on every column in a permuted order, the order carries over
    low.layers.append(ir.Activation(x.width, a))
    return replace(x, pos=len(low.layers))


for _name, _kind in (("sigmoid", "sigmoid"), ("tanh", "tanh"), ("relu", "relu"), ("selu", "selu"),
                     ("silu", "silu"), ("softsign", "softsign"), ("relu6", "relu6"), ("exp", "exponential"),
                     ("mish", "mish"), ("hardswish", "hardswish")):
    handles(_name, _name + "_")((lambda k: lambda low, x, *a, **kw: activation(low, x, k))(_kind))


@handles("gelu")
def _gelu(low, x, approximate="none"):
    """GELU, exact (x Phi(x)) or its tanh form (torch's approximate="tanh")."""
    if approximate not in ("none", "tanh"):
        low.fail(f"gelu with approximate={approximate!r}")
    return activation(low, x, "gelu" if approximate == "none" else "gelu_tanh")


@handles("layer_norm")
def _layer_norm(low, x, normalized_shape, weight=None, bias=None, eps=1e-5, *rest):
    """LayerNorm over the features: the row-wise layer_norm activation, then its scale and shift
    as a per-feature affine map (folded into the Dense after it)."""
    shape = list(normalized_shape) if isinstance(normalized_shape, (list, tuple)) else [normalized_shape]
    if len(shape) != 1:
        low.fail(f"a layer_norm over the last {len(shape)} axes (only over the features)")
    if not all(v is None or isinstance(v, np.ndarray) for v in (weight, bias)):
        low.fail("a layer_norm whose scale or shift is not a constant")
    width = getattr(x, "width", None)
    if isinstance(x, PT) and width is not None and int(shape[0]) != width:
        low.fail(f"a layer_norm over {shape[0]} features of a tensor of {width}")
    y = activation(low, x, "layer_norm", alpha=float(eps), dim=-1)
    if weight is None and bias is None:
        return y
    n = int(shape[0])
    s = np.ones(n, np.float32) if weight is None else np.asarray(weight, np.float32).reshape(-1)
    b = np.zeros(n, np.float32) if bias is None else np.asarray(bias, np.float32).reshape(-1)
    return _affine(low, y, s, b, "layer_norm", dim=-1)


@handles("native_layer_norm")
def _native_layer_norm(low, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    return _layer_norm(low, x, normalized_shape, weight, bias, eps), None, None


@handles("clamp", "clip", "clamp_min")
def _clamp(low, x, lo=None, hi=None):
    """Bounds of a step value (a gate's hard sigmoid, clip(a x + b, 0, 1)); max/min with a
    scalar. Of constants: folded; of the pipeline: relu and relu6."""
    if _is_const(x) and (lo is None or _is_const(lo)) and (hi is None or _is_const(hi)):
        return np.clip(x, lo, hi).astype(np.float32)
    if not (lo is None or isinstance(lo, (int, float))) or not (hi is None or isinstance(hi, (int, float))):
        low.fail("bounds that are not numbers")
    if isinstance(x, IdMask) and x.count and hi is None and lo is not None and 0 < float(lo) <= 1:
        return x                 # count.clamp(min=1e-9): the same where a row has a kept step
    if isinstance(x, Norm) and hi is None and lo is not None and x.eps is None:
        return replace(x, eps=float(lo), mode=0)      # F.normalize's norm.clamp_min(eps)
    if cells.is_step(x):
        if lo is not None:
            x = cells.act(low, x, "max", float(lo))
        return x if hi is None else cells.act(low, x, "min", float(hi))
    return _clip(low, x, lo, hi)


_FLT_MAX = float(np.finfo(np.float32).max)


def _clip(low, x, lo, hi):
    """x bounded to [lo, hi] (either None: unbounded) on the pipeline: relu, relu6, or the clip
    activation (an absent bound is the float32 maximum: only an infinite input tells)."""
    if lo is None and hi is None:
        return x
    if (lo, hi) == (0, None):
        return activation(low, x, "relu")
    if (lo, hi) == (0, 6):
        return activation(low, x, "relu6")
    lo, hi = (-_FLT_MAX if lo is None else float(lo)), (_FLT_MAX if hi is None else float(hi))
    if not lo <= hi:
        low.fail(f"a clamp to [{lo}, {hi}] (an empty range)")
    return activation(low, x, "clip", alpha=lo, beta=hi)


handles("clamp_max")(lambda low, x, hi: _clamp(low, x, None, hi))


@handles("softmax", "_softmax", "special_softmax")
def _softmax(low, x, dim=None, *args, **kwargs):
    if isinstance(x, SelfScores):
        if x.weights or dim not in (-1, 2):
            low.fail(f"a softmax of attention scores over dim={dim} (only over the keys, the last axis)")
        return replace(x, weights=True)
    return _att_softmax(low, x, dim) or activation(low, x, "softmax", dim=dim)


@handles("log_softmax", "_log_softmax", "special_log_softmax")
def _log_softmax(low, x, dim=None, *args, **kwargs):
    return activation(low, x, "log_softmax", dim=dim)


@handles("elu", "elu_")
def _elu(low, x, alpha=1.0, scale=1.0, input_scale=1.0, *args):
    if scale != 1 or input_scale != 1:
        low.fail("elu with scale or input_scale other than 1")
    return activation(low, x, "elu", alpha=float(alpha))


@handles("leaky_relu", "leaky_relu_")
def _leaky_relu(low, x, negative_slope=0.01, *args):
    return activation(low, x, "leaky_relu", alpha=float(negative_slope))


@handles("hardtanh", "hardtanh_")
def _hardtanh(low, x, min_val=-1.0, max_val=1.0, *args):
    return _clamp(low, x, float(min_val), float(max_val))


@handles("pow")
def _pow(low, x, e):
    """x ** 2 (x * x, a gating product of x with itself); of constants, folded."""
    if _is_const(x) and _is_const(e):
        return np.power(np.asarray(x, np.float32), np.asarray(e, np.float32))
    if not _is_num(e) or float(e) not in (1.0, 2.0):
        low.fail(f"a power {e!r} of {_what(x)} (only squares, x ** 2)")
    return x if float(e) == 1 else _arith(low, "mul", x, x)


handles("square")(lambda low, x: _pow(low, x, 2))


@handles("_weight_norm", "_weight_norm_interface")
def _weight_norm(low, v, g, dim=0):
    """nn.utils.weight_norm's weight g * v / ||v|| (the norm over every axis but dim): folded."""
    if not (isinstance(v, np.ndarray) and isinstance(g, np.ndarray)):
        low.fail("a weight_norm of weights that are not constants")
    v64 = v.astype(np.float64)
    axes = tuple(i for i in range(v.ndim) if i != dim % v.ndim) if dim is not None and dim != -1 or v.ndim == 1 \
        else tuple(range(v.ndim))
    w = v64 * (g.astype(np.float64) / np.sqrt((v64 * v64).sum(axis=axes, keepdims=True)))
    return w.astype(np.float32)


@handles("hard_sigmoid")
def _hard_sigmoid(low, x, alpha=0.2, beta=0.5):
    """clip(alpha x + beta, 0, 1) (ONNX HardSigmoid, Keras's hard_sigmoid)."""
    return activation(low, x, "hard_sigmoid", alpha=float(alpha), beta=float(beta))


@handles("hardsigmoid", "hardsigmoid_")
def _hardsigmoid(low, x):
    """torch's relu6(x + 3) / 6: the hard_sigmoid kind with alpha 1/6, beta 1/2."""
    return _hard_sigmoid(low, x, 1 / 6, 0.5)


@handles("prelu", "_prelu_kernel")
def _prelu(low, x, weight):
    """nn.PReLU: one learned slope is leaky_relu; a slope per feature is relu(x) - a relu(-x),
    two branches the pipeline already runs (a Dense of [I; -I], relu, a Dense of [I, -diag(a)]),
    each output exact (x or a x plus zeros)."""
    if not isinstance(weight, np.ndarray):
        low.fail("a PReLU whose slope is not a constant")
    a = np.asarray(weight, np.float32).reshape(-1)
    if a.size == 1:
        return activation(low, x, "leaky_relu", alpha=float(a[0]))
    x = low.tensor(x)
    if x.width != a.size or len(x.axes) < 2 or low.lab(x.axes[1]) != "F":    # torch's channels: dim 1
        low.fail(f"a PReLU of {a.size} slopes over {low.shape(x)} (one slope per feature, the features on dim 1)")
    n, eye = a.size, np.eye(a.size, dtype=np.float32)
    y = low.append(ir.Dense(np.concatenate([eye, -eye], 0)), low.whole(low.reach(x)), 2 * n)
    y = activation(low, y, "relu")
    return low.append(ir.Dense(np.concatenate([eye, -np.diag(a)], 1)), y, n)


@handles("softplus")
def _softplus(low, x, beta=1, threshold=20, *args):
    if beta != 1:
        low.fail("softplus with beta other than 1")
    return activation(low, x, "softplus")


# ---- arithmetic ---------------------------------------------------------------------------------

def _affine(low, x, scale, shift, what, dim=-1):
    """x * scale + shift on a pipeline tensor: scalars become an affine Activation, per-feature
    vectors (along dim, the feature axis) a diagonal Dense (passes fold both into a neighbouring
    Dense); of a step inside a loop over time, the step's own arithmetic."""
    if cells.is_step(x) or isinstance(x, PS):
        return _arith(low, "add", _arith(low, "mul", x, scale), shift)
    x = low.tensor(x)
    if x.width is None or x.packed:
        low.fail(f"{what} of {'a PackedSequence' if x.packed else 'the token ids'}")
    x = low.reach(x)
    if x.cols is not None and not _permutes(low, x):
        x = low.whole(x)
    s, b = np.asarray(scale, np.float32), np.asarray(shift, np.float32)
    if s.size == 1 and b.size == 1:
        low.layers.append(ir.Activation(x.width, ir.Act("affine", float(s.ravel()[0]), float(b.ravel()[0]))))
        return replace(x, pos=len(low.layers))
    n = x.width
    if s.ndim > len(x.axes) or b.ndim > len(x.axes) or any(d != 1 for d in s.shape[:-1] + b.shape[:-1]) \
            or s.shape[-1:] not in ((), (1,), (n,)) or b.shape[-1:] not in ((), (1,), (n,)):
        low.fail(f"{what} with a constant of shape {s.shape if s.size > 1 else b.shape}: only scalars and "
                 f"per-feature vectors of the last axis fold into the pipeline")
    if low.lab(x.axes[dim]) != "F" or (dim % len(x.axes) != len(x.axes) - 1 and s.ndim + b.ndim > 2):
        low.fail(f"{what} along an axis that is not the feature axis")
    sv = np.broadcast_to(s.reshape(-1), (n,)).astype(np.float32)
    bv = np.broadcast_to(b.reshape(-1), (n,)).astype(np.float32)
    if x.cols is not None:               # per-feature constants of a permuted order: in pipeline order
        idx = np.concatenate([np.arange(a, c) for a, c in x.cols])
        sv2, bv2 = np.empty_like(sv), np.empty_like(bv)
        sv2[idx], bv2[idx] = sv, bv
        sv, bv = sv2, bv2
    low.layers.append(ir.Dense(np.diag(sv), bv))
    return replace(x, pos=len(low.layers))


@handles("batch_norm")
def _batch_norm(low, x, weight, bias, mean, var, training=False, momentum=0.1, eps=1e-5, *rest):
    """BatchNorm at inference: a per-channel scale and shift (channels on axis 1), folded into the
    neighbouring Dense like any per-feature affine map."""
    if training:
        low.fail("batch_norm in training mode (batch statistics): convert the module in eval()")
    if not all(isinstance(v, np.ndarray) for v in (mean, var)):
        low.fail("batch_norm without running statistics (track_running_stats=False normalises with the batch's own)")
    var64 = np.asarray(var, np.float64)
    scale = (np.ones_like(var64) if weight is None else np.asarray(weight, np.float64)) / np.sqrt(var64 + float(eps))
    shift = (0.0 if bias is None else np.asarray(bias, np.float64)) - np.asarray(mean, np.float64) * scale
    return _affine(low, x, scale.astype(np.float32), shift.astype(np.float32), "batch_norm", dim=1)


@handles("_native_batch_norm_legit_no_training")
def _batch_norm_no_training(low, x, weight, bias, mean, var, momentum=0.1, eps=1e-5):
    return _batch_norm(low, x, weight, bias, mean, var, False, momentum, eps), None, None


@handles("native_batch_norm", "_native_batch_norm_legit")
def _native_batch_norm(low, x, weight, bias, mean, var, training=False, momentum=0.1, eps=1e-5):
    return _batch_norm(low, x, weight, bias, mean, var, training, momentum, eps), None, None


def _is_const(v):
    return isinstance(v, (int, float, np.ndarray, np.number)) and not isinstance(v, bool)


def _step_arith(a, b):
    """Whether a op b is arithmetic of a loop's steps (converters/cells.py): a step value with
    anything, or one step of a sequence with another, a zero state or a constant."""
    if cells.is_step(a) or cells.is_step(b):
        return True
    return any(isinstance(p, PS) and (isinstance(q, (PS, Zeros)) or _is_const(q)) for p, q in ((a, b), (b, a)))


def _arith(low, op, a, b, alpha=1):
    if any(isinstance(v, (IdMask, MaskedPT)) for v in (a, b)):
        return _mask_arith(low, op, a, b)
    if isinstance(a, SelfScores) or isinstance(b, SelfScores):   # scores / sqrt(d), scores * c
        a, b = (float(np.asarray(v).reshape(-1)[0]) if isinstance(v, np.ndarray) and v.size == 1 else v for v in (a, b))
        if isinstance(a, SelfScores) and not a.weights and op in ("mul", "div") and _is_num(b) and b:
            return replace(a, scale=a.scale * (float(b) if op == "mul" else 1.0 / float(b)))
        if isinstance(b, SelfScores) and not b.weights and op == "mul" and _is_num(a):
            return replace(b, scale=b.scale * float(a))
        low.fail(f"{op} of attention scores other than a scale (softmax(q k^T / c) v)")
    if alpha == 1 and not _step_arith(a, b):
        if isinstance(a, QScore) and op in ("mul", "div"):
            a = _att_of(low, a, op)
        r = _att_arith(low, op, a, b)          # attention weights (Att)
        if r is not None:
            return r
    if any(map(cells.loopish, (a, b))) and all(
            cells.at_last_step(low, v) if cells.loopish(v) else isinstance(v, (PT, HN)) for v in (a, b)):
        a, b = low.tensor(a), low.tensor(b)    # two values of a head on out[:, -1] (a gate times a value)
    if _step_arith(a, b):
        if alpha != 1:
            if not _is_const(b):
                low.fail(f"{op} with alpha={alpha} of step values")
            b = b * alpha
        return cells.arith(low, op, a, b)      # a cell's arithmetic, unrolled (converters/cells.py)
    if isinstance(a, Norm) or isinstance(b, Norm):
        return _norm_arith(low, op, a, b)
    if isinstance(b, np.ndarray) and b.ndim == 0 and b.dtype.kind in "iu":
        b = int(b)                                           # a trace's 0-d integer constant
    if op == "sub" and isinstance(a, Input) and len(a.shape) == 1 and a.rows is None and _is_num(b) and b == int(b):
        return StepIdx(a, int(b) * int(alpha), a.shape)     # lengths - 1: each row's last step
    if op in ("add", "mul") and alpha == 1:
        flat = _flat_step(low, op, a, b)
        if flat is not None:
            return flat
    if op == "div" and isinstance(a, Pooled) and isinstance(b, Input):
        m = _masked_mean(low, a, b)
        if m is not None:
            return m
    sym = getattr(b, "sym", None)
    if op == "div" and isinstance(a, Pooled) and a.kind == "sum" and a.over is None and a.mask is None \
            and not a.x.padded and _is_num(b) and b == low.size("T") \
            and (sym is not None and low.lab(sym) == "T" or sym is None and low._label_of("T") in low.static):
        # out.sum(1) / x.size(1): the mean. torch.export fixed the time axis (an nn.LSTM's), so the
        # size is the example's number; the module capture checks the reading on a longer input
        return replace(a, kind="mean")
    if _is_const(a) and _is_const(b):
        r = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
             "rsub": lambda p, q: q - p}[op](a, b * alpha if op in ("add", "sub") else b)
        return np.asarray(r, np.float32) if isinstance(r, np.ndarray) else r
    if isinstance(a, Zeros) and _is_const(b) and op in ("mul", "div"):
        return a
    if op in ("add", "sub", "rsub", "mul") and any(isinstance(v, Pooled) for v in (a, b)) and \
            all(isinstance(v, (Pooled, HN)) for v in (a, b)):
        # out.mean(1) + h.squeeze(0): pools of one sequence (a final state is its last step) side by
        # side in one Pool layer, as torch.cat of them is, then their sum or product
        if op == "rsub":
            a, b, op = b, a, "sub"
        y = _cat(low, [a, b], -1)
        w = y.width // 2
        a, b = _columns(low, y, 0, w, 1), _columns(low, y, w, 2 * w, 1)
    if op in ("add", "sub", "rsub") and isinstance(a, (PT, HN)) and isinstance(b, (PT, HN)):
        if op == "rsub":
            a, b = b, a
        return _sum(low, a, b, -float(alpha) if op != "add" else float(alpha))
    if op == "mul" and isinstance(a, (PT, HN)) and isinstance(b, (PT, HN)):
        return _product(low, a, b)
    if op in ("add", "sub", "rsub") and alpha != 1 and _is_const(b):
        b = b * alpha
    if op == "rsub":                                 # b - a
        return _affine(low, a, -1.0, b, "rsub")
    if _is_const(b) and not _is_const(a):
        if op == "add":
            return _affine(low, a, 1.0, b, "add")
        if op == "sub":
            return _affine(low, a, 1.0, -np.asarray(b, np.float32), "sub")
        if op == "mul":
            return _affine(low, a, b, 0.0, "mul")
        if op == "div":
            return _affine(low, a, 1.0 / np.asarray(b, np.float64), 0.0, "div")
    if _is_const(a) and not _is_const(b) and op in ("add", "mul"):
        return _arith(low, op, b, a)
    low.fail(f"{op} of {_what(a)} and {_what(b)}")


def _sum(low, a, b, sign):
    """a + sign * b of two tensors of the pipeline (a residual connection, heads added): both
    reached at the end (Lowering.reach carries the earlier one through the layers between),
    then one Dense of 0 / 1 / sign weights reading their columns. Each output is one float sum,
    as the source computes it; passes.fold then merges it with its linear neighbours (around a
    Linear, x + W x is one Dense of W + I)."""
    a, b = low.tensor(a), low.tensor(b)
    _same_shape(low, a, b, "an add")
    a, b = low.reach_all([a, b])
    w, n = a.width, low.pipe_width(a)
    W = np.zeros((w, n), np.float32)
    rows = np.arange(w)
    for v, s in ((a, 1.0), (b, sign)):
        idx = np.concatenate([np.arange(p, q) for p, q in v.cols]) if v.cols is not None else rows
        np.add.at(W, (rows, idx), np.float32(s))
    return low.append(ir.Dense(W), a, w)


def _product(low, a, b):
    """a * b of two tensors of the pipeline (a gating product: self.a(o) * torch.sigmoid(self.g(o)),
    torch.tanh(x1) * torch.sigmoid(x2) of a chunk): both reached at the end, side by side (a Dense
    selecting their columns when they are not already; the passes fold it), then the row-wise
    mul_halves activation, whose first half is the product."""
    a, b = low.tensor(a), low.tensor(b)
    _same_shape(low, a, b, "a product")
    a, b = low.reach_all([a, b])
    x = low.whole(_cat_features(low, [a, b], len(a.axes) - 1))
    w = a.width
    low.layers.append(ir.Activation(2 * w, ir.Act("mul_halves")))
    return replace(x, pos=len(low.layers), width=w, cols=((0, w),))


@handles("glu")
def _glu(low, x, dim=-1):
    """F.glu / nn.GLU: the first half of the features times the sigmoid of the second."""
    x = low.tensor(x)
    if low.lab(x.axes[low.feature_axis(x, dim)]) != "F" or x.width is None or x.width % 2:
        low.fail(f"glu over dim={dim} (only over an even number of features)")
    h = x.width // 2
    return _product(low, _columns(low, x, 0, h, 1), activation(low, _columns(low, x, h, 2 * h, 1), "sigmoid"))


def _same_shape(low, a, b, what):
    for v in (a, b):
        if v.packed or v.width is None or v.dirs > 1:
            low.fail(f"{what} of {'a PackedSequence' if v.packed else 'the token ids' if v.width is None else 'directions'}")
    if (tuple(low.lab(a.axes)), a.time, a.rows, a.padded, a.width) != \
            (tuple(low.lab(b.axes)), b.time, b.rows, b.padded, b.width):
        low.fail(f"{what} of tensors of the pipeline of different shapes {low.shape(a)} and {low.shape(b)} "
                 f"(broadcasting between them is not supported)")


for _op in ("add", "sub", "mul", "div", "rsub"):
    handles(_op, _op + "_")((lambda op: lambda low, a, b, alpha=1, **kw: _arith(low, op, a, b, alpha))(_op))


@handles("neg")
def _neg(low, x):
    if _is_const(x):
        return -x
    if _is_lengths(x):
        return NegLengths(x)
    if cells.is_step(x):
        return cells.neg(low, x)
    return _affine(low, x, -1.0, 0.0, "neg")


for _n, _f in (("pymul", operator.mul), ("pyadd", operator.add), ("pysub", operator.sub),
               ("floordiv", operator.floordiv), ("truediv", operator.truediv)):
    handles(_n)((lambda f: lambda low, a, b: f(a, b) if _is_num(a) and _is_num(b)
                 else low.fail(f"Python arithmetic on {_what(a)} and {_what(b)}"))(_f))


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---- series without a feature axis ----------------------------------------------------------------
#
# A float input may have no feature axis: one series (T,) viewed as (T, 1, 1), or a batch (B, T)
# split into steps for cells or unsqueezed for the recurrence (one value per step). Such a tensor
# is a PT whose axes hold no "F" and whose width is 1, the same value a one-wide feature axis
# squeezed away gives; a unit axis added last (unsqueeze(-1), view(T, 1, -1), x[:, t:t+1] of a
# loop) becomes its feature axis. A 2-D float input is read as one sequence (T, F) until an op
# takes its second axis apart into unit steps (a slice of one, a select, a unit axis added
# after it): from then on it is the series (x0, x1). The converted model's predict takes
# (B, T) floats (and (B, T, 1)), its streams (B,) (and (B, 1)): Model._check_x.

def _featureless(low, x):
    """Whether x is a float tensor without a feature axis (one value per position)."""
    if not isinstance(x, PT) or low.input_ids or x.width != 1:
        return False
    return "F" not in [t for a in x.axes for t in _atoms(low, a)]


def _as_series(low, x):
    """The 2-D float input (x0, F) read as the series (x0, x1) (above); None when x is not it."""
    if low.series_of is not None and x == low.series_of:
        return PT(0, ("x0", "x1"), 1)          # the input again, read as a series already
    if not (isinstance(x, PT) and x.pos == 0 and not low.layers and not low.input_ids and not low.bind
            and x.axes == ("x0", "F") and "x1" not in low.xsizes and x.cols is None):
        return None
    low.xsizes["x1"] = low.series_size or x.width
    low.series, low.series_of = True, x
    return PT(0, ("x0", "x1"), 1)


# ---- N x F x T input ------------------------------------------------------------------------------

def _channels_first(low, x, want):
    """The 3-D float input read as (B, F, T) when a recurrent layer gets it with its last axis
    where the time goes (N x F x T spectrograms transposed into the RNN: deepspeech's
    x.transpose(1, 2).transpose(0, 1)): its axes relabelled, the sizes swapped. x otherwise."""
    if not (isinstance(x, PT) and x.pos == 0 and not low.layers and not low.bind and not low.input_ids
            and sorted(map(str, x.axes)) == ["F", "x0", "x1"] and x.cols is None and not low.series):
        return x
    if x.axes.index("F") != want.index("T") or x.axes.index("x1") != want.index("F"):
        return x
    swap = {"x1": "F", "F": "x1"}
    low.xsizes["x1"], width = x.width, low.xsizes["x1"]
    low.channel_first = True
    return replace(x, axes=tuple(swap.get(a, a) for a in x.axes), width=width)



# ---- layout ---------------------------------------------------------------------------------------

def _layout(low, x):
    if isinstance(x, Att) and x.score.width > 1:          # A.transpose(1, 2) of several heads' weights
        return x
    if isinstance(x, (PS, Pooled)) or cells.is_step(x):
        x = low.tensor(x)
    if isinstance(x, (PT, HN)):
        return x
    low.fail(f"a layout change of {_what(x)}")


@handles("transpose", "swapaxes", "swapdims", "transpose_")
def _transpose(low, x, d0, d1):
    if isinstance(x, np.ndarray):
        return np.swapaxes(x, d0, d1)
    if isinstance(x, Zeros):
        s = list(x.shape)
        s[d0], s[d1] = s[d1], s[d0]
        return Zeros(tuple(s))
    x = _layout(low, x)
    n = len(x.axes)
    perm = list(range(n))
    perm[d0 % n], perm[d1 % n] = perm[d1 % n], perm[d0 % n]
    return _permute(low, x, perm)


@handles("permute")
def _permute(low, x, *dims):
    if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
        dims = tuple(dims[0])
    if isinstance(x, np.ndarray):
        return np.transpose(x, dims)
    if isinstance(x, Zeros):
        return Zeros(tuple(x.shape[d] for d in dims))
    x = _layout(low, x)
    n = len(x.axes)
    if sorted(d % n for d in dims) != list(range(n)):
        low.fail(f"permute({list(dims)}) of a {n}-dimensional tensor")
    return replace(x, axes=tuple(x.axes[d % n] for d in dims))


@handles("view", "reshape", "_unsafe_view", "_reshape_alias", "view_as", "reshape_as")
def _view(low, x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (list, tuple)):
        shape = tuple(shape[0])
    if len(shape) == 1 and isinstance(shape[0], (PT, HN, Zeros, np.ndarray)):    # view_as
        shape = low.shape(shape[0])
    if isinstance(x, np.ndarray):
        return x.reshape(tuple(int(s) for s in shape))
    if isinstance(x, StepIdx):
        return _step_idx_view(low, x, shape)
    if isinstance(x, Zeros):
        n = int(np.prod(x.shape))
        known = int(np.prod([s for s in shape if s != -1]))
        return Zeros(tuple(n // known if s == -1 else int(s) for s in shape))
    if isinstance(x, Heads):
        return _heads_flat(low, x, shape)
    un = _unkept(low, x, shape)                  # view(B, -1) of adaptive_max_pool1d(..., 1)
    if un is not None:
        return un
    x = _layout(low, x)
    if shape and int(shape[-1]) == 1 and len(shape) > len(x.axes) and getattr(x, "width", None) != 1:
        x = _as_series(low, x) or x             # view(B, T, 1) of a (B, T) series (a (T, 1) input keeps its F)
    return _reshape(low, x, shape)


def _reshape(low, x, shape):
    src = list(x.axes)
    sizes = list(low.shape(x))
    total = int(np.prod(sizes)) if sizes else 1
    tgt = [int(s) for s in shape]
    if tgt.count(-1) > 1:
        low.fail(f"view{tuple(tgt)} with several -1")
    if -1 in tgt:
        known = int(np.prod([s for s in tgt if s != -1])) or 1
        tgt[tgt.index(-1)] = total // known
    if int(np.prod(tgt) if tgt else 1) != total:
        low.fail(f"view{tuple(shape)} of a tensor of shape {tuple(sizes)}")
    axes = _regroup(low, x, src, sizes, tgt)
    if axes is None and isinstance(x, HN):
        h = _hn_split(low, x, sizes, tgt)
        if h is not None:
            return h
    if axes is None and isinstance(x, PT):
        d = _directions_split(low, x, tgt)
        if d is not None:
            return d
        s = _features_split(low, x, sizes, tgt)
        if s is not None:
            return s
    if axes is None:
        low.fail(f"view{tuple(shape)} of a tensor with axes {_axes_str(low.lab(x.axes))} and shape "
                 f"{tuple(sizes)}: not a flattening or unflattening of whole axes")
    if isinstance(x, PT) and ("D", "F") in axes:      # directions merged into features: the concat
        i = axes.index(("D", "F"))
        axes[i] = "F"
        return replace(x, axes=tuple(axes), width=x.width * x.dirs, dirs=1)
    if isinstance(x, PT) and any(a == "D" or (isinstance(a, tuple) and "D" in a) for a in axes) and x.dirs > 1:
        low.fail(f"view{tuple(shape)} that does not merge the directions into the features in order")
    if _featureless(low, x) and axes and axes[-1] == "1":
        axes[-1] = "F"                           # view(T, 1, -1) of a series: its feature axis
    return replace(x, axes=tuple(axes))


@dataclass(frozen=True)
class FeatSplit:
    """The features of x viewed as (k..., F): a multi-step forecaster's self.fc(h).view(B, horizon,
    n_features). Forward's output only: predict reshapes the engine's y the same way (signature
    axes '#k', fastrnn/signature.py)."""
    x: PT
    ks: tuple


def _features_split(low, x, sizes, tgt):
    """view(B, k, F) of a (B, k*F) tensor (the leading axes kept, the last one split); None if it
    is not that."""
    labels = [low.lab(a) for a in x.axes]
    n = len(sizes)
    if x.width is None or x.dirs != 1 or x.packed or labels[-1] != "F" or len(tgt) <= n \
            or list(tgt[:n - 1]) != list(sizes[:n - 1]) or any(int(k) < 1 for k in tgt[n - 1:]) \
            or int(np.prod(tgt[n - 1:])) != x.width:
        return None
    ks = tuple(int(k) for k in tgt[n - 1:-1] if int(k) != 1)
    if not ks:
        return None
    return FeatSplit(x, ks)


def _hn_split(low, x, sizes, tgt):
    """h_n.view(num_layers, num_directions, B, H) (torch's documented way to tell layers and
    directions apart): the rows as axes "L" x "S" (HN.group rows each); None if it is not that."""
    if x.group or low.lab(x.axes[0]) != "S" or len(tgt) != len(sizes) + 1 or tgt[2:] != list(sizes[1:]) \
            or tgt[0] * tgt[1] != len(x.parts) or tgt[1] < 1:
        return None
    return replace(x, axes=("L", "S") + tuple(x.axes[1:]), group=tgt[1])


def _directions_split(low, x, tgt):
    """view(T, B, 2, -1) of a bidirectional layer's own (T, B, 2H) output: its directions as a D
    axis again (to be summed or averaged: deepspeech's .sum(2)); None if it is not that."""
    if not low.rnns or x.pos != len(low.layers) or x.dirs != 1 or x.cols is not None or x.time is not None:
        return None
    r = low.rnns[-1]
    if r.D != 2 or r.last != len(low.layers) - 1 or x.width != 2 * r.width:
        return None
    labels = [low.lab(a) for a in x.axes]
    if labels[-1] != "F" or len(tgt) != len(labels) + 1 or tgt[-2:] != [2, r.width] or \
            [int(v) for v in tgt[:-2]] != list(low.shape(x)[:-1]):
        return None
    return replace(x, axes=x.axes[:-1] + ("D", "F"), width=r.width, dirs=2)


def _atoms(low, a):
    """The elementary labels of an axis (a flattened axis has several)."""
    a = low.lab(a) if not isinstance(a, tuple) else a
    return list(a) if isinstance(a, tuple) else [a]


def _regroup(low, x, src, sizes, tgt):
    """Axes of x reshaped to sizes tgt, as merges/splits of whole labelled axes; unit axes come
    and go freely (and so does a unit batch of an unbatched model). None if it is not that."""
    def size_of(a):
        if a == "1":
            return 1
        if a == "F":
            return x.width
        if a == "D":
            return x.dirs
        if a == "S":
            return len(x.parts)
        return low.size(a)
    atoms = []
    for a in src:
        atoms += [t for t in _atoms(low, a) if t != "1" and not (low.unbatched and t == "B")]
    # a one-wide feature axis is "soft": kept where the target has a 1 for it, else dropped
    # (out.view(B, -1) of (B*T, 1) scores is (B, T), the features squeezed)
    soft = [a == "F" and size_of(a) == 1 for a in atoms]
    out, i = [], 0
    for s in tgt:
        if s == 1:
            if i < len(atoms) and size_of(atoms[i]) == 1:
                out.append(atoms[i])
                i += 1
            else:
                out.append("1")
            continue
        group, prod = [], 1
        while i < len(atoms) and prod < s:
            if soft[i]:
                i += 1
                continue
            group.append(atoms[i])
            prod *= size_of(atoms[i])
            i += 1
        if prod != s or not group:
            return None
        out.append(group[0] if len(group) == 1 else tuple(group))
    if not all(soft[i:]):
        return None
    return out


@handles("flatten")
def _flatten(low, x, start_dim=0, end_dim=-1):
    if isinstance(x, np.ndarray):
        s = x.shape
        n = len(s)
        a, b = start_dim % n, end_dim % n
        return x.reshape(s[:a] + (-1,) + s[b + 1:])
    if isinstance(x, Heads):
        return _heads_flat(low, x, (-1, int(np.prod(low.shape(x)[1:]))) if start_dim % 3 == 1 and end_dim % 3 == 2
                           else ())
    x = _layout(low, x)
    sizes = low.shape(x)
    n = len(sizes)
    a, b = start_dim % n, end_dim % n
    return _reshape(low, x, tuple(sizes[:a]) + (int(np.prod(sizes[a:b + 1])),) + tuple(sizes[b + 1:]))


@handles("squeeze", "squeeze_")
def _squeeze(low, x, dim=None):
    if isinstance(x, np.ndarray):
        return np.squeeze(x, dim) if dim is not None else np.squeeze(x)
    if isinstance(x, Zeros):
        s = [d for i, d in enumerate(x.shape) if not (d == 1 and (dim is None or i in _dims(dim, len(x.shape))))]
        return Zeros(tuple(s))
    if cells.is_step(x):
        return cells.squeeze(low, x, dim)
    if isinstance(x, Input) and dim is not None and x.shape[dim % len(x.shape)] == 1 and (
            x.row_axis is None or x.row_axis == dim % len(x.shape)):
        # one row of a state argument without its row axis (h0[0] of an unrolled nn.RNN)
        shape = x.shape[:dim % len(x.shape)] + x.shape[dim % len(x.shape) + 1:]
        return replace(x, shape=shape, rows=x.rows if x.rows is not None else (0,), row_axis=-1)
    if isinstance(x, PS) and x.ops and x.ops[-1][0] == "unsq" and dim is not None and \
            dim % len(low.shape(x)) == x.ops[-1][1] % len(low.shape(x)):
        return replace(x, ops=x.ops[:-1])        # x[:, t:t+1].squeeze(1): step t
    if isinstance(x, QScore) and isinstance(dim, int) and x.axes[dim % len(x.axes)] == "1":
        return replace(x, axes=x.axes[:dim % len(x.axes)] + x.axes[dim % len(x.axes) + 1:])
    if isinstance(x, Pooled) and isinstance(dim, int):
        kept = _kept_shape(low, x)
        un = _unkept(low, x, kept[:dim % len(kept)] + kept[dim % len(kept) + 1:])
        if un is not None:
            return un
    x = _layout(low, x)
    sizes = low.shape(x)
    n = len(sizes)
    labels = [low.lab(a) for a in x.axes]
    if dim is None:        # what the model means at any size: unit axes and a one-wide feature axis
        dims = {i for i in range(n) if labels[i] in ("1", "F", "S", "D") or (labels[i] == "B" and low.unbatched)}
    else:
        dims = _dims(dim, n)
    keep = [i for i in range(n) if not (i in dims and sizes[i] == 1)]
    for i in range(n):
        if i in keep:
            continue
        a = labels[i]
        if a == "B" and not low.unbatched:
            low.fail("squeeze of the batch axis (it has size 1 in the example input: give an example with "
                     "more than one row)")
        if a == "T":
            low.fail("squeeze of the time axis (one time step in the example input: give a longer example)")
        if isinstance(a, tuple):
            low.fail(f"squeeze of the flattened {'*'.join(a)} axis")
    out = replace(x, axes=tuple(x.axes[i] for i in keep))
    if isinstance(out, PT) and "D" in labels and "D" not in [labels[i] for i in keep]:
        out = replace(out, dirs=1)
    return out


def _feature_sum(low, x, i, keepdim, scale):
    """x.sum(-1) / x.mean(-1) over the features: a Dense of one output (bentrevett's
    (o * self.query_weights).sum(-1), a bias-free Linear written out; folded with the scale
    before it); the axis kept with one feature, or gone."""
    x = low.reach(x)
    W = np.zeros((1, low.pipe_width(x)), np.float32)
    idx = np.concatenate([np.arange(p, q) for p, q in x.cols]) if x.cols is not None else np.arange(x.width)
    W[0, idx] = np.float32(scale)
    y = low.append(ir.Dense(W), x, 1)
    return y if keepdim else replace(y, axes=y.axes[:i] + y.axes[i + 1:])


def _select_feature(low, x, i, index):
    """x[..., k]: one feature column, its axis gone (a forecaster's out[:, -1, 0], predicts[:, :, -1])."""
    if x.width is None or x.dirs != 1 or not -x.width <= index < x.width:
        low.fail(f"select of feature {index} of {_what(x)}")
    y = _columns(low, x, index % x.width, index % x.width + 1, 1)
    return replace(y, axes=y.axes[:i] + y.axes[i + 1:])


def _dims(dim, n):
    ds = dim if isinstance(dim, (list, tuple)) else [dim]
    return {d % n for d in ds}


@handles("unsqueeze", "unsqueeze_")
def _unsqueeze(low, x, dim):
    if cells.is_step(x):
        return cells.unsqueeze(low, x, dim)
    if isinstance(x, PS):
        return _ps_op(low, x, ("unsq", dim))
    if isinstance(x, np.ndarray):
        return np.expand_dims(x, dim)
    if isinstance(x, Zeros):
        s = list(x.shape)
        s.insert(dim % (len(s) + 1), 1)
        return Zeros(tuple(s))
    if isinstance(x, StepIdx):
        s = list(x.shape)
        s.insert(dim % (len(s) + 1), 1)
        return replace(x, shape=tuple(s))
    if isinstance(x, IdMask):
        axes = list(x.axes)
        axes.insert(dim % (len(axes) + 1), "1")
        return replace(x, axes=tuple(axes))
    if isinstance(x, Input) and len(x.shape) == 1 and (x.rows is None or tuple(x.rows) == tuple(range(x.shape[0]))) \
            and dim in (1, -1):                 # lengths.unsqueeze(1), lengths[:, None]: a column (a divisor, a mask)
        return replace(x, shape=(x.shape[0], 1), rows=None, row_axis=None)
    if isinstance(x, Att):
        axes = list(x.axes)
        axes.insert(dim % (len(axes) + 1), "1")
        return replace(x, axes=tuple(axes))
    if isinstance(x, Input) and x.row_axis == -1:       # h0[0].unsqueeze(0): still that one row
        s = list(x.shape)
        s.insert(dim % (len(s) + 1), 1)
        return replace(x, shape=tuple(s))
    x = _layout(low, x)
    n = len(x.axes)
    if dim % (n + 1) == n:
        x = _as_series(low, x) or x
        n = len(x.axes)
    axes = list(x.axes)
    axes.insert(dim % (n + 1), "F" if dim % (n + 1) == n and _featureless(low, x) else "1")
    return replace(x, axes=tuple(axes))


# ---- indexing -------------------------------------------------------------------------------------

@handles("select")
def _select(low, x, dim, index):
    if isinstance(x, np.ndarray):
        return np.take(x, index, axis=dim)
    if isinstance(x, HN):
        return _hn_select(low, x, dim, index)
    if isinstance(x, Zeros):
        s = list(x.shape)
        del s[dim]
        return Zeros(tuple(s))
    if cells.is_step(x):
        return cells.squeeze(low, x, dim)        # x[0] of a (1, B, H) step value
    if isinstance(x, Finals) and dim == 0 and -len(x.rows) <= index < len(x.rows):
        return x.rows[index]
    if isinstance(x, BatchSizes) and index == 0:      # batch_sizes[0]: the batch
        return Size(low.size("B"), "B")
    if isinstance(x, Flipped):
        return _flipped_select(low, x, dim, index)
    x = low.tensor(x)
    n = len(x.axes)
    i = dim % n
    a = low.lab(x.axes[i])
    if a == "F" and _as_series(low, x) is not None:      # x[:, t] of a (B, T) series
        return _select(low, PT(0, ("x0", "x1"), 1), dim, index)
    if x.packed:
        low.fail("indexing a PackedSequence")
    if a == "1":
        return replace(x, axes=x.axes[:i] + x.axes[i + 1:])
    if _steps_axis(low, x, i):
        size = low.size(a)
        if not -size <= index < size:
            low.fail(f"step {index} of {size}")
        return PS(("seq", x, i), index % size)   # the last step, or a loop's step (resolved where used)
    if a == "B" and low.unbatched:
        return replace(x, axes=x.axes[:i] + x.axes[i + 1:])
    if a == "D":                     # one direction's features: a range of the pipeline's columns
        d = index % x.dirs
        if x.cols is not None:
            low.fail("a direction of features already reordered")
        return replace(x, axes=x.axes[:i] + x.axes[i + 1:], dirs=1, cols=((d * x.width, (d + 1) * x.width),))
    if a == "F" and not x.packed:
        return _select_feature(low, x, i, index)
    low.fail(f"select of index {index} along the {a} axis")


def _last_step(low, x, i):
    """output[:, -1]. Of a unidirectional recurrent layer's own output: its final state (the
    engine then skips writing the other steps). Otherwise (a bidirectional layer: forward final
    state + the backward direction's first step; pad_packed_sequence's output: step
    max(lengths) - 1; per-step layers in between) the pipeline runs every step and predict takes
    the last (signature time)."""
    low.at_end(x)
    if not any(isinstance(l, ir.Recurrent) for l in low.layers):
        low.fail("the last step before any recurrent layer")
    if x.time is not None:
        low.fail("the last step of a tensor that has no time axis")
    axes = x.axes[:i] + x.axes[i + 1:]
    # the pipeline runs every step and predict takes the last (signature time); passes.cut_early
    # then stops a forward recurrent layer at its final state when only per-step layers follow
    # it (the same numbers, without the other steps). Done at the end, not here: another reader
    # of the sequence (an ONNX graph with several outputs) must not see it cut.
    return replace(x, axes=axes, time="longest_last" if x.padded == "longest" else "last", padded=None)


def _last_steps(low, x, k):
    """output[:, -k:]: the pipeline runs every step and predict keeps the last k (signature time
    {"tail": k}; fewer when the sequence is shorter, as torch's slice gives). Per-step layers may
    follow (they commute with the cut); a recurrence or a pooling over time may not."""
    low.at_end(x)
    if not any(isinstance(l, ir.Recurrent) for l in low.layers):
        low.fail("a slice of the last steps before any recurrent layer")
    if x.time is not None or x.packed or x.padded:
        low.fail(f"the last {k} steps of a tensor already cut in time (a last step, pad_packed_sequence's "
                 f"longest row, a PackedSequence)")
    return replace(x, time=("tail", k))


def _hn_select(low, x, dim, index):
    n = len(x.axes)
    i = dim % n
    a = low.lab(x.axes[i])
    if a in ("L", "S") and x.group:             # of h_n.view(L, D, B, H)
        g, n = x.group, len(x.parts) // x.group
        k = n if a == "L" else g
        if not -k <= index < k:
            low.fail(f"{x.kind}_n.view has {k} rows along that axis, row {index} asked")
        index %= k
        parts = x.parts[index * g:(index + 1) * g] if a == "L" else x.parts[index::g]
        axes = tuple("S" if b == "L" else b for j, b in enumerate(x.axes) if j != i)
        return replace(x, parts=parts, axes=axes, group=0)
    if a != "S":
        if a == "1":
            return replace(x, axes=x.axes[:i] + x.axes[i + 1:])
        low.fail(f"select along the {a} axis of {x.kind}_n")
    rows = len(x.parts)
    if not -rows <= index < rows:
        low.fail(f"{x.kind}_n has {rows} rows, row {index} asked")
    return replace(x, parts=(x.parts[index % rows],), axes=x.axes[:i] + x.axes[i + 1:])


@handles("slice")
def _slice(low, x, dim=0, start=None, end=None, step=1):
    if isinstance(x, np.ndarray):
        idx = [slice(None)] * x.ndim
        idx[dim] = slice(start, end, step)
        return x[tuple(idx)]
    if isinstance(x, (list, tuple)):
        return x[slice(start, end, step)]
    if isinstance(x, Input):           # rows of a state argument (an exporter's per-layer slice)
        n = x.shape[dim % len(x.shape)]
        rows = x.rows if x.rows is not None and x.row_axis == dim % len(x.shape) else range(n)
        picked = tuple(list(rows)[slice(start, None if end is None or end >= 2**62 else end, step)])
        if x.rows is not None and x.row_axis != dim % len(x.shape):
            low.fail(f"slices of {x.name!r} along two axes")
        shape = list(x.shape)
        shape[dim % len(shape)] = len(picked)
        return replace(x, rows=picked, row_axis=dim % len(x.shape), shape=tuple(shape))
    shp = low.shape(x) if isinstance(x, (PT, HN, Zeros, PS, Flipped)) or cells.is_step(x) else None
    if shp is None:
        low.fail(f"slice of {_what(x)}")
    n = len(shp)
    i = dim % n
    size = shp[i]
    e0 = None if end is None or end >= 2**62 or end <= -2**62 else end
    s, e, st = slice(start, e0, step).indices(size)
    if (s, e, st) == (0, size, 1):
        return x
    if st == -1 and len(range(s, e, st)) == size and size > 1:
        return _flip(low, x, [i])                # x[:, ::-1] (an ONNX export of torch.flip)
    if isinstance(x, Flipped):
        low.fail(f"a slice of {_what(x)}")
    if isinstance(x, PS) and i == n - 1 and st == 1:
        hn = _direction_final(low, x, s, e)
        if hn is not None:
            return hn
    if isinstance(x, PS) and i == n - 1 and st == 1 and x.src[0] == "seq" and not x.ops and x.src[1].pos \
            and x.src[1].pos == len(low.layers) and x.t == low.shape(x.src[1])[x.src[2]] - 1:
        return _columns(low, low.tensor(x), s, e, st)   # columns of a layer's last step (out[:, -1].chunk(2, -1))
    if (cells.is_step(x) or isinstance(x, PS)) and i == n - 1 and st == 1:
        return cells.cols(low, x, s, e)          # a cell's gates (a Split of the gate columns)
    if isinstance(x, PS):
        x = low.tensor(x)
    if isinstance(x, Zeros):
        s2 = list(x.shape)
        s2[i] = len(range(s, e, st))
        return Zeros(tuple(s2))
    if isinstance(x, HN) and low.lab(x.axes[i]) == "S" and not x.group:
        return replace(x, parts=tuple(x.parts[s:e:st]))
    if isinstance(x, PT) and low.lab(x.axes[i]) == "T" and st == 1 and e == size and start is not None and start < -1:
        return _last_steps(low, x, -start)
    if isinstance(x, PT) and low.lab(x.axes[i]) == "F" and e == s + 1 and st == 1 and _as_series(low, x):
        return _slice(low, PT(0, ("x0", "x1"), 1), dim, start, end, step)    # x[:, t:t+1] of a series
    if isinstance(x, PT) and low.lab(x.axes[i]) == "F":
        return _columns(low, x, s, e, st)
    if isinstance(x, PT) and _steps_axis(low, x, i) and st == 1 and e == s + 1:
        # x[:, t:t+1]: step t with a unit axis (out[:, -1:] is the last step, resolved where used)
        return _ps_op(low, _select(low, x, i, s), ("unsq", i))
    shown = lambda v: "" if v is None or abs(v) >= 1 << 62 else v     # noqa: E731 - torch's open end is 2**63 - 1
    low.fail(f"a slice [{shown(start)}:{shown(end)}:{step}] of the "
             f"{low.lab(x.axes[i]) if isinstance(x, (PT, HN)) else i} axis")


# ---- reversed time (torch.flip) ------------------------------------------------------------------
#
# rnn(torch.flip(x, [1])) runs the recurrence from the last step to the first: a recurrent layer
# of direction "reverse" reading x, whose output is that layer's in reversed order. The lowering
# carries the order as Flipped(x) (never a layer: the engine has no time reversal): per-step ops
# keep it, a recurrent layer reading it runs backwards, a second flip or a pool over time drops
# it, out[:, -1] of it is the reverse layer's final state. Anything else refuses it (a flip
# with lengths would move each row's padding to its front: refused too).

@dataclass(frozen=True, eq=False)
class Flipped:
    x: PT
    label: object                      # the raw label of the reversed (time) axis


# ops that act on each step alone: a Flipped argument passes through them
FLIP_PER_STEP = {"linear", "relu", "relu_", "tanh", "sigmoid", "dropout", "feature_dropout", "alpha_dropout",
                 "dropout_", "gelu", "elu", "leaky_relu", "hardtanh", "softplus", "silu", "contiguous", "clone",
                 "detach", "detach_", "to", "_to_copy", "type_as", "alias", "lift_fresh_copy", "permute",
                 "transpose", "add", "mul", "sub", "div", "rsub", "neg", "clamp", "layer_norm", "float", "squeeze",
                 "unsqueeze", "matmul", "addmm", "softsign", "selu", "view", "reshape", "_unsafe_view",
                 "_reshape_alias", "flatten"}   # a reshape keeping the time axis whole (_flipped_per_step)


def _flip_label(low, x):
    """The time axis's raw label of a flipped recurrent layer's input x, checked."""
    label = next((a for a in x.axes if low.lab(a) == "T"), None)
    if label is None:
        low.fail("torch.flip of a sequence without a time axis")
    _check_flip(low, x, label)
    return label


def _check_flip(low, x, label):
    if low.lab(label) != "T":
        low.fail("torch.flip of another axis than the time axis")
    if low.takes_lengths or low.lengths_index is not None or x.padded or x.packed:
        low.fail("torch.flip of a sequence with lengths (it moves each row's padding to its front)")


@handles("flip")
def _flip(low, x, dims):
    if isinstance(x, np.ndarray):
        return np.flip(x, dims).copy()
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    if isinstance(x, (PT, Flipped)):               # a unit axis reversed is itself
        y = x.x if isinstance(x, Flipped) else x
        dims = [d for d in dims if low.lab(y.axes[d % len(y.axes)]) != "1"] or dims
    if isinstance(x, Flipped):
        if len(dims) != 1 or low.lab(x.x.axes[dims[0] % len(x.x.axes)]) != low.lab(x.label):
            low.fail(f"torch.flip({list(dims)}) of {_what(x)} (only back along its time axis)")
        return x.x
    if not isinstance(x, PT) or len(dims) != 1:
        low.fail(f"torch.flip({dims}) of {_what(x)} (only a sequence of the pipeline along its time axis)")
    label = x.axes[dims[0] % len(x.axes)]
    if low.lab(label) not in ("T", "x0", "x1") or x.time is not None:
        low.fail(f"torch.flip along the {low.lab(label)} axis (only along time, to run a recurrence backwards)")
    if low.lab(label) == "T":
        _check_flip(low, x, label)
    return Flipped(x, label)


def _flipped_per_step(low, fn, args, kwargs):
    """A per-step op of Flipped sequences: the op of their unflipped values, still flipped."""
    flips = [a for a in args if isinstance(a, Flipped)]
    if any(isinstance(a, (PT, HN, PS, Pooled, Att)) for a in args) or len({low.lab(f.label) for f in flips}) != 1:
        low.fail("arithmetic of a sequence in reversed time order (torch.flip) and one in order")
    x = flips[0].x
    t = [low.lab(a) for a in x.axes].index(low.lab(flips[0].label))
    for a in args:                    # a constant that varies along time (a bias per position) sees the steps reversed
        j = t - (len(x.axes) - a.ndim) if isinstance(a, np.ndarray) else -1
        if 0 <= j < a.ndim and a.shape[j] > 1:
            low.fail("a constant that varies along time applied to a sequence in reversed time order (torch.flip)")
    y = fn(low, *[a.x if isinstance(a, Flipped) else a for a in args], **kwargs)
    if not isinstance(y, PT) or low.lab(flips[0].label) not in [low.lab(a) for a in y.axes] or y.time is not None:
        low.fail(f"{_what(y)} made from a sequence in reversed time order (torch.flip)")
    return Flipped(y, flips[0].label)


def _flipped_select(low, x, dim, index):
    """out[:, -1] of rnn(torch.flip(x, [1])): the reverse layer's final state (its step 0)."""
    seq = x.x
    i = dim % len(seq.axes)
    if low.lab(seq.axes[i]) != low.lab(x.label) or low.lab(x.label) != "T":
        low.fail(f"select along the {low.lab(seq.axes[i])} axis of {_what(x)}")
    if index not in (-1, low.size("T") - 1):
        low.fail(f"step {index} of {_what(x)} (only its last step, the reverse layer's final state)")
    r = low.rnns[-1] if low.rnns else None
    layer = low.layers[-1] if low.layers else None
    if r is None or seq.pos != len(low.layers) or r.last != len(low.layers) - 1 or seq.cols is not None \
            or not isinstance(layer, ir.Recurrent) or layer.direction != "reverse" or seq.width != r.width:
        low.fail(f"the last step of {_what(x)} that is not a recurrent layer's own output")
    k = r.top
    return HN(((k, 0),), tuple(a for j, a in enumerate(seq.axes) if j != i), r.width, "h", len(low.rnns) - 1,
              seq.pos, seq.rows)


def _direction_final(low, v, s, e):
    """out[:, -1, :H] / out[:, 0, H:] of a bidirectional layer's own output (no lengths): the
    forward direction's final state, the backward one's (its step 0): h_n rows, or None."""
    if v.src[0] != "seq" or v.ops or low.takes_lengths:
        return None
    seq, axis = v.src[1], v.src[2]
    if not low.rnns or seq.pos != len(low.layers) or seq.padded or seq.packed or seq.time is not None \
            or seq.cols is not None or seq.dirs != 1 or low.lab(seq.axes[axis]) != "T":
        return None
    r = low.rnns[-1]
    if r.D != 2 or r.last != len(low.layers) - 1 or seq.width != 2 * r.width:
        return None
    H, T = r.width, low.size("T")
    d = 0 if (s, e, v.t) == (0, H, T - 1) else 1 if (s, e, v.t) == (H, 2 * H, 0) else None
    if d is None:
        return None
    k = r.top
    return HN(((k, d),), ("B", "F"), H, "h", len(low.rnns) - 1, seq.pos, seq.rows)


def _columns(low, x, s, e, st):
    """Feature columns [s:e] of a pipeline tensor (one direction of a bidirectional output,
    out[..., :H] + out[..., H:] of the chatbot tutorial, a chunk): the same tensor reading only
    those columns (PT.cols), as a select of one direction does; its readers (a Linear, an add,
    an activation, a concat) take columns."""
    if st != 1:
        low.fail("a strided slice of the features")
    if x.dirs > 1:
        low.fail("a slice of features whose directions are not merged")
    base = list(x.cols) if x.cols is not None else [(0, x.width)]
    flat = np.concatenate([np.arange(a, b) for a, b in base])[s:e]
    return replace(x, width=len(flat), cols=col_ranges(flat.tolist()))


@handles("narrow")
def _narrow(low, x, dim, start, length):
    return _slice(low, x, dim, start, start + length, 1)


@handles("getitem")
def _getitem(low, x, idx):
    """Python indexing: tuples and lists (an RNN's (output, h_n)), and tensors: ints, slices,
    None and Ellipsis, lowered to select/slice/unsqueeze."""
    if isinstance(x, (list, tuple)):
        if isinstance(idx, slice):
            return x[idx]
        if not isinstance(idx, int) or not -len(x) <= idx < len(x):
            low.fail(f"item {idx!r} of a {len(x)}-tuple")
        return x[idx]
    if isinstance(x, np.ndarray) and not isinstance(idx, (PT, HN)):
        return x[idx]
    items = idx if isinstance(idx, tuple) else (idx,)
    if isinstance(items[0], Perm) and all(it == slice(None) for it in items[1:]):
        return _index_select(low, x, 0, items[0])       # x[sort_idx]: rows reordered
    if isinstance(x, Input) and all(it is None or it == slice(None) for it in items):   # lengths[:, None]
        for dim, it in enumerate(items):
            if it is None:
                x = _unsqueeze(low, x, dim)
        return x
    if not isinstance(x, (PT, HN, Zeros)):
        low.fail(f"indexing {_what(x)}")
    if any(isinstance(it, (StepIdx, np.ndarray, range)) for it in items):
        return _index(low, x, [None if isinstance(it, slice) and it == slice(None) else
                               np.arange(it.start, it.stop, it.step) if isinstance(it, range) else it for it in items])
    n = len(low.shape(x))
    if Ellipsis in items:
        k = items.index(Ellipsis)
        rest = n - (len(items) - 1 - sum(1 for v in items if v is None))
        items = items[:k] + (slice(None),) * rest + items[k + 1:]
    dim = 0
    for it in items:
        if it is None:
            x = _unsqueeze(low, x, dim)
            dim += 1
        elif isinstance(it, slice):
            x = _slice(low, x, dim, it.start, it.stop, 1 if it.step is None else it.step)
            dim += 1
        elif isinstance(it, int):
            x = _select(low, x, dim, it)
        else:
            low.fail(f"indexing with {_what(it)}")
    return x


@handles("cat", "concat", "concatenate")
def _cat(low, tensors, dim=0):
    if any(isinstance(t, StepIdx) for t in tensors):
        return _pair_idx(low, tensors, dim)
    step = _step_cat(low, tensors, dim)
    if step is not None:
        return step
    tensors = _steps_as_ps(low, tensors)
    if len(tensors) > 1 and any(isinstance(t, PS) for t in tensors) and all(
            isinstance(t, (PT, HN)) or isinstance(t, PS) and cells.at_last_step(low, t)
            and not any(op[0] == "unsq" for op in t.ops) for t in tensors):
        # torch.cat([out[:, -1], x[:, -1]], 1): last steps side by side (h_n[-1] as its layer's last
        # step first, so that the input's columns can still be carried past the layer)
        tensors = [_hn_last_step(low, t) if isinstance(t, HN) else t for t in tensors]
        tensors = [low.tensor(t) for t in tensors]
    if any(isinstance(t, Pooled) for t in tensors) and any(isinstance(t, HN) for t in tensors):
        tensors = _finals_as_pools(low, tensors)
    if tensors and all(isinstance(t, Pooled) for t in tensors):      # pools side by side: one layer
        n = len(tensors[0].x.axes) - (0 if tensors[0].keepdim else 1)
        axes = [low.lab(a) for a in tensors[0].x.axes if tensors[0].keepdim or low.lab(a) != "T"]
        if dim % n != n - 1 or axes[-1] != "F":
            low.fail("torch.cat of pools along an axis other than the features")
        return low.pool_layer(list(tensors))
    if tensors and all(isinstance(t, PS) and t.src[0] == "chain" and t.ops == (("unsq", 0),) for t in tensors) \
            and dim == 0 and len({t.src for t in tensors}) == len(tensors):
        return Finals(tuple(replace(t, ops=()) for t in tensors))    # final states of several layers
    if tensors and all(isinstance(t, PS) for t in tensors):         # cat of y_t.unsqueeze(d): a stack
        last = {t.ops[-1] if t.ops else None for t in tensors}
        if len(last) == 1 and list(last)[0] and list(last)[0][0] == "unsq":
            return _ps_stack(low, [replace(t, ops=t.ops[:-1]) for t in tensors], list(last)[0][1], dim)
        if dim % 2 == 1 and all(_ps_shape(low, t)[1:] == (1,) for t in tensors):
            # torch.cat of (B, 1) step outputs: the series (B, T) of their one feature
            return _squeeze(low, _ps_stack(low, list(tensors), 1, 1), 2)
        low.fail("torch.cat of loop steps that were not each unsqueezed along the concatenated axis")
    if all(isinstance(t, np.ndarray) for t in tensors):
        return np.concatenate(tensors, axis=dim)
    if all(isinstance(t, Zeros) for t in tensors):
        s = list(tensors[0].shape)
        s[dim] = sum(t.shape[dim] for t in tensors)
        return Zeros(tuple(s))
    if tensors and all(isinstance(t, HN) for t in tensors):
        t0 = tensors[0]
        n = len(t0.axes)
        i = dim % n
        a = low.lab(t0.axes[i])
        if a == "S" and all(t.kind == t0.kind and t.axes == t0.axes for t in tensors):
            # rows of several recurrent ops stacked (a torch export writes one ONNX node per layer)
            return replace(tensors[-1], parts=sum((t.parts for t in tensors), ()))
        if all(t.rnn == t0.rnn and t.kind == t0.kind and t.axes == t0.axes for t in tensors):
            if a == "F" and all(len(t.parts) == 1 for t in tensors) and i == n - 1:
                parts = sum((t.parts for t in tensors), ())
                axes = t0.axes[:-1] + (("S", "F"),)
                return replace(t0, parts=parts, axes=axes)
    if len(tensors) > 1 and all(isinstance(t, (PT, HN)) or _is_static(low, t) for t in tensors) and \
            any(isinstance(t, HN) for t in tensors) and not all(isinstance(t, HN) for t in tensors):
        # torch.cat([h_n[-1], x[:, -1]], 1), torch.cat([h_n[-1], static], 1): h_n[-1] as its layer's
        # last step, so that the other columns can still be carried past the layer
        tensors = [_hn_last_step(low, t) if isinstance(t, HN) else t for t in tensors]
    if len(tensors) > 1 and any(_is_static(low, t) for t in tensors) and \
            all(isinstance(t, PT) or _is_static(low, t) for t in tensors):
        ref = next(t for t in tensors if isinstance(t, PT))
        tensors = [_static_columns(low, t, ref) if isinstance(t, Input) else t for t in tensors]
    if len(tensors) > 1 and all(isinstance(t, PT) for t in tensors):
        return _cat_features(low, tensors, dim)
    if len(tensors) > 1 and all(isinstance(t, HN) for t in tensors) and len({t.rnn for t in tensors}) > 1:
        return _finals_of_side_by_side(low, tensors, dim)
    low.fail("torch.cat of tensors other than rows of one h_n (e.g. torch.cat([h_n[-2], h_n[-1]], 1)) or "
             "features of tensors of the pipeline")


# ---- self-attention ------------------------------------------------------------------------------

@handles("self_attention")
def _self_attention(low, x, in_w, in_b, out_w, out_b, heads, causal=False, scale=None):
    """Multi-head self-attention over the steps of x (torch's nn.MultiheadAttention(x, x, x),
    Keras's MultiHeadAttention()(x, x)): the q, k, v projections as one Linear (in_w: 3E rows,
    q then k then v, each head's columns together), an ir.Attention layer, the output Linear."""
    if not all(isinstance(w, np.ndarray) for w in (in_w, out_w)) or in_w.ndim != 2 or in_w.shape[0] % 3:
        low.fail("a self-attention whose projections are not constant matrices (3 E rows in, E columns out)")
    E = in_w.shape[0] // 3
    if not isinstance(heads, int) or heads < 1 or E % heads or out_w.shape[1] != E:
        low.fail(f"a self-attention of {heads} heads over {E} features")
    x = low.tensor(x)
    if x.time is not None or x.packed or "T" not in [low.lab(a) for a in x.axes]:
        low.fail("a self-attention over a tensor that is not a whole sequence (every step of the pipeline)")
    qkv = low.whole(_linear(low, x, in_w, in_b))
    y = low.append(ir.Attention(E, heads, bool(causal), scale), qkv, E)
    return _linear(low, y, out_w, out_b)


# ---- static inputs: a second argument of per-row features beside the sequence ----------------------
#
# torch.cat([h_n[-1], static], 1) of forward(x, static), static (B, S): features of each row that do
# not change over time (a customer's or a sensor's own attributes beside its history). They become
# S more columns of the model's input, the same at every step (predict and streams take the tuple
# (x, static) and join it, meta step_inputs with "static"), read by no recurrent weight and carried
# past the layers to where forward concatenates them (Lowering.reach), exactly as x[:, -1] of the
# input is when forward concatenates that.

def _is_static(low, t):
    """t: a (B, S) argument of forward no other use has claimed (lengths, states)."""
    return isinstance(t, Input) and len(t.shape) == 2 and t.rows is None and t.row_axis is None \
        and t.index not in low.state_inputs and t.index != low.lengths_index and t.index not in low.length_inputs


def _hn_last_step(low, t):
    """h_n[-1] of a forward layer as its output's last step (the same values; the layer keeps
    returning its sequence, so columns can be carried past it), else as low.tensor reads it."""
    r = low.rnns[t.rnn] if 0 <= t.rnn < len(low.rnns) else None
    seq = low.rnn_out.get(t.rnn)
    if r is not None and seq is not None and t.kind == "h" and r.D == 1 and t.rows is None \
            and [low.lab(a) for a in t.axes] == ["B", "F"] and list(t.parts) == [(r.top, 0)] \
            and low.layers[r.last].direction == "forward" and seq.pos == len(low.layers) and not seq.packed:
        return _last_step(low, seq, [low.lab(a) for a in seq.axes].index("T"))
    return low.tensor(t)


def _static_columns(low, inp, ref):
    """The argument inp as columns added to the model's input, carried to the end and taken at
    the step ref is (its values are the same at every step)."""
    if low.input_ids or low.series or low.unbatched or low.one_step or low.channel_first or not low.layers:
        low.fail(f"the argument {inp.name!r} beside {'token ids' if low.input_ids else 'this input'} (static "
                 f"features join a batch-first or time-major float sequence)")
    if low.takes_lengths or low.lengths_pad is not None:
        low.fail(f"the argument {inp.name!r} beside a packed sequence (its columns would be cut at each row's length)")
    if [low.lab(a) for a in ref.axes] != ["B", "F"] or ref.time is None:
        low.fail(f"the argument {inp.name!r} concatenated with a tensor of axes {_axes_str([low.lab(a) for a in ref.axes])} "
                 f"(only beside a final state or a step: (batch, features))")
    cols = low.static_cols(inp.index)
    if cols is None:                      # first use: S more input columns, after those already added
        first = low.layers[0]
        F, S = first.input_size, int(inp.shape[1])
        widened = _widened(first, S) if isinstance(first, (ir.Dense, ir.Recurrent)) else None
        if widened is None:
            low.fail(f"the argument {inp.name!r} beside an input read first by a {type(first).__name__} (only a "
                     f"recurrent or Linear layer takes the added columns)")
        low.layers[0] = widened
        if not low.static_inputs:
            low.static_base = F           # the sequence's own features, the static ones after them
        low.static_inputs.append((inp.index, inp.name, S))
        cols = (F, F + S)
    t = next(k for k in ("x0", "x1") if low.bind.get(k) == "T")
    x = low.reach(PT(0, ("x0", "x1", "F"), cols[1] - cols[0], cols=(cols,)))
    return replace(x, axes=tuple(a for a in x.axes if a != t), time=ref.time)


def _cat_features(low, tensors, dim):
    """torch.cat of tensors of the pipeline along their features (two heads side by side, a
    tensor beside a later one): each reached at the end (Lowering.reach), the result their
    columns side by side, in that order."""
    t0 = tensors[0]
    n = len(t0.axes)
    if not isinstance(dim, int) or low.lab(t0.axes[dim % n]) != "F":
        low.fail("torch.cat of tensors of the pipeline along an axis other than the features")
    for t in tensors:
        if t.packed or t.width is None or t.dirs > 1 or \
                (tuple(low.lab(t.axes)), t.time, t.rows, t.padded) != (tuple(low.lab(t0.axes)), t0.time, t0.rows, t0.padded):
            low.fail(f"torch.cat of tensors of the pipeline of shapes {[low.shape(v) for v in tensors]} "
                     f"(only their features may differ)")
    reached = low.reach_all(tensors)
    cols = sum((t.cols if t.cols is not None else ((0, t.width),) for t in reached), ())
    return replace(reached[-1], cols=cols, width=sum(t.width for t in reached))


def _step_cat(low, tensors, dim):
    """torch.cat((x_t, hidden), 1) in a one-step module (forward(x_t, hidden) driven by the user's
    loop, x_t (B, F) with no time axis), or of step values: a step expression (converters/cells.py)."""
    if not isinstance(tensors, (list, tuple)) or len(tensors) < 2:
        return None
    first = not low.layers and not low.bind and not low.rnns and len(low.xsizes) == 1

    def is_x(t):
        return first and isinstance(t, PT) and t.pos == 0 and t.axes == ("x0", "F") and not low.input_ids

    def is_state(t):
        return isinstance(t, Input) and len(t.shape) == 2 and t.rows is None
    if not all(cells.is_step(t) or is_x(t) or is_state(t) for t in tensors) or dim % 2 != 1 or \
            not (any(is_state(t) for t in tensors) or low.one_step and all(cells.is_step(t) for t in tensors)):
        return None
    parts = []
    for t in tensors:
        if is_x(t):                  # the step the user's loop feeds: step 0 of a one-step sequence
            low.one_step = True
            low.bind["x0"] = "B"
            t = PS(("seq", PT(0, ("x0", "T", "F"), t.width), 1), 0)
        parts.append(t)
    return cells.cat(low, parts)


def _steps_as_ps(low, tensors):
    """Step values of an unrolled cell (converters/cells.py) as the loop's per-step values."""
    if isinstance(tensors, (list, tuple)) and any(cells.is_step(t) for t in tensors):
        return [cells.to_ps(low, t) if cells.is_step(t) else t for t in tensors]
    return tensors


def _steps_axis(low, x, i):
    """Whether axis i of x is (or may be, before a loop binds the input's axes) the time axis."""
    a = low.lab(x.axes[i])
    return a == "T" or (a in ("x0", "x1") and a not in low.bind)


@handles("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes")
def _split(low, x, size, dim=0):
    """torch.split / ONNX Split: pieces of size (an int) or sizes (a list) along dim."""
    if isinstance(x, PT) and dim % len(x.axes) == len(x.axes) - 1 and \
            all(int(s) == 1 for s in (size if isinstance(size, (list, tuple)) else [size])):
        x = _as_series(low, x) or x             # input.split(1, dim=1) of a (B, T) series
    shape = low.shape(x) if not isinstance(x, np.ndarray) else x.shape
    n = shape[dim % len(shape)]
    sizes = [int(s) for s in size] if isinstance(size, (list, tuple)) else \
        [min(int(size), n - k) for k in range(0, n, max(int(size), 1))]
    if sum(sizes) != n or any(s < 0 for s in sizes):
        low.fail(f"split into {sizes} of an axis of {n}")
    out, k = [], 0
    for s in sizes:
        out.append(_slice(low, x, dim, k, k + s, 1))
        k += s
    return out


@handles("chunk", "unsafe_chunk")
def _chunk(low, x, chunks, dim=0):
    shape = low.shape(x) if not isinstance(x, np.ndarray) else x.shape
    n = shape[dim % len(shape)]
    each = -(-n // int(chunks))
    return _split(low, x, each, dim)


@handles("stack")
def _stack(low, tensors, dim=0):
    tensors = _steps_as_ps(low, tensors)
    if tensors and all(isinstance(t, PS) for t in tensors):
        return _ps_stack(low, list(tensors), dim, dim)
    if all(isinstance(t, np.ndarray) for t in tensors):
        return np.stack(tensors, axis=dim)
    if tensors and all(isinstance(t, HN) and len(t.parts) == 1 for t in tensors) and \
            len({(t.rnn, t.kind, t.axes) for t in tensors}) == 1:
        t0 = tensors[0]           # rows of h_n stacked again, on any axis (view(B, -1) flattens them)
        k = dim % (len(t0.axes) + 1)
        return replace(t0, parts=sum((t.parts for t in tensors), ()), axes=t0.axes[:k] + ("S",) + t0.axes[k:])
    low.fail("torch.stack of tensors other than rows of one h_n")


# ---- recurrent ops (ATen) ---------------------------------------------------------------------

def _rnn_args(low, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first=None):
    """The padded overload's arguments of ATen's lstm / gru / rnn_*; the packed overload
    (data, batch_sizes, hx, params, has_biases, num_layers, dropout, train, bidirectional) of a
    traced PackedSequence shifts them by one, its layout the packing's."""
    if isinstance(hx, BatchSizes):
        if not isinstance(x, PT) or not x.packed:
            low.fail("a recurrent op's packed overload on something that is not a packed sequence")
        return x, params, has_biases, num_layers, dropout, train, bidirectional, batch_first, \
            x.packed == "batch_first"
    return x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first


def _rnn(low, mode, *args):
    """ATen's lstm / gru / rnn_tanh / rnn_relu -> (output, h_n, c_n or None)."""
    x, hx, params, has_biases, num_layers, _, _, bidirectional, batch_first = _rnn_args(low, *args[:9])
    proj = _proj_size(params, has_biases, num_layers, bidirectional) if mode == "lstm" else 0
    return low.recurrent(mode, x, hx, params, has_biases, num_layers, bidirectional, batch_first, proj)


@handles("lstm")
def _lstm(low, *args):
    return _rnn(low, "lstm", *args)


def _proj_size(params, has_biases, L, bi):
    per = len(params) // (int(L) * (2 if bi else 1)) if params else 0
    base = 4 if has_biases else 2
    if per == base + 1 and isinstance(params[base], np.ndarray):
        return int(params[base].shape[0])
    return 0


for _mode in ("gru", "rnn_tanh", "rnn_relu"):
    handles(_mode)((lambda mode: lambda low, *a: _rnn(low, mode, *a)[:2])(_mode))


# ---- packed sequences ------------------------------------------------------------------------------

@handles("pack_padded_sequence")
def _pack(low, x, lengths, batch_first=False, enforce_sorted=True):
    if not isinstance(x, PT):
        low.fail(f"pack_padded_sequence of {_what(x)}")
    if isinstance(lengths, Input):
        low.takes_lengths = True
        low.lengths_index = lengths.index         # a masked mean divides by them (_masked_mean)
    elif isinstance(lengths, IdMask) and lengths.count and lengths.keep and lengths.pad != LENGTHS \
            and [low.lab(a) for a in lengths.axes if low.lab(a) != "1"] in (["B"], ["x0" if batch_first else "x1"]) \
            and not low.takes_lengths:
        if low.lengths_pad not in (None, lengths.pad):
            low.fail("pack_padded_sequence by the counts of two padding ids")
        low.lengths_pad = lengths.pad             # (ids != pad).sum(1): predict counts them (signature lengths_pad)
    elif not isinstance(lengths, Lengths):
        low.fail(f"pack_padded_sequence with lengths that are {_what(lengths)}, not an argument of forward")
    a = low.lab(x.axes[0 if batch_first else 1])
    if a not in ("B", "x0", "x1"):
        low.fail("pack_padded_sequence's batch_first does not match the tensor")
    return replace(x, packed="batch_first" if batch_first else "time_major", padded=None)


# ---- a traced pack_padded_sequence ---------------------------------------------------------------
#
# torch.jit.trace records pack_padded_sequence(enforce_sorted=False) as the ops it runs: the
# lengths sorted (aten::sort), the rows reordered (index_select), aten::_pack_padded_sequence
# giving (data, batch_sizes), the inverse order made with empty_like / arange / scatter_, the RNN's
# packed overload aten::lstm(data, batch_sizes, ...), and index_select by the inverse order of h_n
# and of aten::_pad_packed_sequence's output; torch's legacy ONNX export writes the same flow as
# TopK, Gather, ScatterElements and Gather. fastrnn's layers treat rows independently (with
# lengths), so the orders are abstract values (Perm) and the reordered tensors are themselves,
# flagged rows="sorted" until the inverse puts them back; a pipeline whose output is still flagged
# is refused (its rows would come out in length order).

@dataclass(frozen=True)
class Perm:
    """The rows' order of a traced pack_padded_sequence: "sorted" (by length), "buffer" (the
    empty_like its inverse is scattered into) or "inverse"."""
    kind: str


@dataclass(frozen=True)
class NegLengths:
    """-lengths, sorted to put the rows in length order (ABSA-PyTorch's DynamicLSTM:
    torch.sort(-x_len)[1])."""
    x: object


def _is_lengths(v):
    """forward's lengths argument or lengths counted from the ids ((ids != pad).sum(1))."""
    return isinstance(v, Input) or isinstance(v, IdMask) and v.count and v.keep


@dataclass(frozen=True)
class BatchSizes:
    """The batch_sizes of a traced PackedSequence."""


@handles("sort")
def _sort(low, x, dim=-1, descending=False, *rest):
    """The lengths sorted: by a traced pack_padded_sequence(enforce_sorted=False), or by hand before
    one with enforce_sorted=True, and the order sorted again (its inverse, to put the rows back).
    fastrnn's rows are independent, so the orders are abstract (Perm) and the values are kept."""
    if _is_lengths(x) or isinstance(x, NegLengths):
        return x, Perm("sorted")
    if isinstance(x, Perm) and x.kind == "sorted":
        return x, Perm("inverse")
    low.fail(f"a sort of {_what(x)} (only the lengths, to pack the rows in their order)")


@handles("index_select")
def _index_select(low, x, dim, index):
    if isinstance(x, np.ndarray) and isinstance(index, np.ndarray):
        return np.take(x, index, axis=dim)
    if isinstance(index, Perm) and index.kind == "sorted" and _is_lengths(x):
        return x                             # the lengths in the rows' new order: still each row's
    if isinstance(index, Perm) and isinstance(x, (PT, HN)):
        axis = low.lab(x.axes[dim % len(x.axes)])
        if axis != "B" and not (axis in ("x0", "x1") and axis not in low.bind):
            low.fail(f"index_select by a row order along the {axis} axis")
        if index.kind == "sorted" and x.rows is None and not (isinstance(x, PT) and x.packed):
            return replace(x, rows="sorted")
        if index.kind == "inverse" and x.rows == "sorted":
            return replace(x, rows=None)     # the rows back in their order
    if isinstance(index, Perm) and index.kind == "inverse" and isinstance(x, Lengths):
        return x
    low.fail(f"index_select of {_what(x)} by {_what(index)} (only the row orders of a traced "
             f"pack_padded_sequence)")


@handles("empty_like")
def _empty_like(low, x, *rest, **kw):
    if isinstance(x, Perm):
        return Perm("buffer")
    return Zeros(low.shape(x))


@handles("numel")
def _numel(low, x):
    if isinstance(x, Perm):
        return Size(low.size("B"), "B")
    return int(np.prod(low.shape(x)))


@handles("arange")
def _arange(low, *a, **kw):
    ints = [int(v) for v in a[:3] if isinstance(v, (int, np.integer)) and not isinstance(v, bool)]
    if not ints:
        low.fail("arange without integer bounds")
    return np.arange(*ints)


@handles("scatter", "scatter_")
def _scatter(low, x, dim, index, src, *rest):
    if isinstance(x, (Perm, Zeros, np.ndarray)) and isinstance(index, Perm) and index.kind == "sorted" and \
            isinstance(src, np.ndarray) and np.array_equal(src.reshape(-1), np.arange(src.size)):
        return Perm("inverse")           # invert_permutation(sorted_indices): arange scattered by it
    if all(isinstance(v, np.ndarray) for v in (x, index, src)):
        out = x.copy()
        np.put_along_axis(out, index, src, axis=dim)
        return out
    zero = isinstance(x, Zeros) or isinstance(x, np.ndarray) and x.dtype.kind == "f" and not x.any()
    ones = _is_num(src) and src == 1 or isinstance(src, np.ndarray) and src.size and (src == 1).all()
    if zero and ones and len(x.shape) == 2 and dim in (1, -1) and isinstance(index, PT) and index.pos == 0 \
            and index.width is None and len(index.axes) == 2 and low.lab(index.axes[1]) == "1":
        # buffer.zero_().scatter_(1, ids.view(-1, 1), 1): the ids one-hot (GRU4Rec's onehot_encode;
        # ONNX ScatterElements of ones into a zero constant)
        return _one_hot(low, replace(index, axes=index.axes[:1]), int(x.shape[1]))
    low.fail(f"scatter into {_what(x)}")


@handles("_pack_padded_sequence")
def _pack_traced(low, x, lengths, batch_first):
    """enforce_sorted=False: the rows sorted first (rows="sorted"); True: the tensor itself."""
    if not isinstance(x, PT):
        low.fail(f"aten::_pack_padded_sequence of {_what(x)}")
    return _pack(low, x, lengths, batch_first, x.rows is None), BatchSizes()


@handles("_pad_packed_sequence")
def _pad_traced(low, data, batch_sizes, batch_first, padding_value, total_length):
    if not isinstance(batch_sizes, BatchSizes):
        low.fail("aten::_pad_packed_sequence of something that is not a traced PackedSequence")
    longest = isinstance(total_length, Size) and total_length.sym == "longest"
    return _pad(low, data, batch_first, padding_value, None if longest else total_length)


@handles("pad_packed_sequence")
def _pad(low, seq, batch_first=False, padding_value=0.0, total_length=None):
    if not isinstance(seq, PT) or not seq.packed:
        low.fail("pad_packed_sequence of something that is not a packed recurrent output")
    if padding_value != 0:
        low.fail("pad_packed_sequence with a padding value other than 0")
    axes = ("B", "T", "F") if batch_first else ("T", "B", "F")
    if total_length is not None:
        ok = isinstance(total_length, Size) and total_length.sym == "T" or \
            (isinstance(total_length, int) and total_length == low.size("T") and
             getattr(total_length, "sym", "T") in (None, "T") and isinstance(total_length, Size))
        if not ok:
            low.fail("pad_packed_sequence(total_length=...) other than the input's time length")
    return (replace(seq, axes=axes, packed=False, padded="longest" if total_length is None else "T"), Lengths())


# ---- masks made from the token ids -----------------------------------------------------------------
#
# mask = (ids != pad) (or ids > 0, or ids == pad and its negation), unsqueezed and cast, read by
# pooling only: (out * mask).sum(1) / mask.sum(1) (a masked mean, sentence-embedding style),
# (out * mask).sum(1), out.masked_fill(mask == 0, -inf).max(1), attention scores
# masked_fill(mask == 0, -1e10) before their softmax, or exp(scores) * mask (the Kaggle Attention
# module's mask). The recurrence still runs the padding (the source never packs it away); the
# pools leave those steps out: ir.Embedding.pool_mask, ir.Pool over="valid".

@dataclass(frozen=True)
class IdMask:
    """ids != pad (keep=True: true at the steps kept) or ids == pad (keep=False); axes: the ids',
    unit axes "1" where unsqueezed. count: its sum over time (the number of kept steps per row).
    pad LENGTHS: arange(T)[None, :] < lengths[:, None], each row's first lengths steps (inp: the
    lengths argument's Input.index), read as pools over the valid steps (_lengths_mask)."""
    pad: int | str
    keep: bool
    axes: tuple
    count: bool = False
    inp: int | None = None


LENGTHS = "lengths"


@dataclass(frozen=True)
class MaskedPT:
    """A sequence of the pipeline with its padding steps zeroed (fill "zero": a sum then leaves them
    out) or set to a large negative value (fill "neg": a max then leaves them out)."""
    x: PT
    pad: int
    fill: str


def _mask_over(pad):
    return {} if pad is None else {"over": "valid"} if pad == LENGTHS else {"over": "valid", "mask": pad}


def _mask_key(p):
    """What a pool's steps are masked by: its padding id, LENGTHS, or None."""
    return p.mask if p.mask is not None else LENGTHS if p.over == "valid" else None


def _lengths_mask(low, op, a, b):
    """arange(T)[None, :] < lengths[:, None] (or lengths.unsqueeze(1) > arange(T); >= / <= give the
    padding steps): the mask of each row's first lengths steps, an IdMask of pad LENGTHS; None
    when a op b is not that. The capture fixed T to the example's (an arange of it)."""
    if isinstance(a, Input) and _is_const(b):
        a, b, op = b, a, {"gt": "lt", "le": "ge", "lt": "gt", "ge": "le"}.get(op)
    if op not in ("lt", "ge") or not isinstance(b, Input) or not _is_const(a):
        return None
    r = np.asarray(a)
    if r.dtype.kind not in "iuf" or r.ndim not in (1, 2) or r.shape[:-1] not in ((), (1,)) \
            or not np.array_equal(r.reshape(-1), np.arange(r.size)) or len(b.shape) != 2 or b.shape[1] != 1 \
            or b.rows is not None:
        return None
    bl, tl = low._label_of("B"), low._label_of("T")
    if bl is None or tl is None:               # before the input's axes are bound: by their example sizes
        bl, tl = (next((k for k in ("x0", "x1") if k not in low.bind and low.xsizes.get(k) == n
                        and low.xsizes.get("x0") != low.xsizes.get("x1")), None) for n in (b.shape[0], r.size))
    if bl is None or tl is None or bl == tl or low.size(bl) != b.shape[0] or low.size(tl) != r.size:
        return None
    return IdMask(LENGTHS, op == "lt", (bl, tl), inp=b.index)


def _lengths_role(low, m):
    """A mask of lengths read by a pool: its argument is predict's lengths. Without packing, the
    layers so far ran over the padding; their steps before each row's length are those of a run
    with lengths only when every one is causal (nothing reads later steps)."""
    if m.pad != LENGTHS:
        return
    if low.lengths_index is None:
        _causal_so_far(low, "a mask of the steps before lengths")
        low.takes_lengths = True
        low.lengths_index = m.inp
        low.length_inputs.add(m.inp)       # an ONNX graph input of role "lengths"
    elif m.inp != low.lengths_index:
        low.fail("a mask of the steps before another argument than pack_padded_sequence's lengths")


def _causal_so_far(low, what):
    bad = [l for l in low.layers if not isinstance(l, (ir.Embedding, ir.Dense, ir.Activation))
           and not (isinstance(l, ir.Recurrent) and l.direction == "forward" and l.return_sequences)]
    if bad or not low.rnns:
        low.fail(f"{what} after {type(bad[0]).__name__ + (' ' + bad[0].direction if isinstance(bad[0], ir.Recurrent) else '') if bad else 'no recurrent layer'} "
                 f"(without pack_padded_sequence, only after causal layers: their steps then depend on the "
                 f"padding)")


def _is_ids(low, x):
    return isinstance(x, PT) and x.width is None and not x.pos


def _int_const(v):
    if isinstance(v, np.ndarray) and v.size == 1 and v.dtype.kind in "iub":
        v = int(v.reshape(-1)[0])
    return v if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else None


def _compare(low, op, a, b):
    if _is_const(a) and _is_const(b):
        f = {"eq": np.equal, "ne": np.not_equal, "gt": np.greater, "lt": np.less, "ge": np.greater_equal,
             "le": np.less_equal}[op]
        return np.asarray(f(a, b))
    if _int_const(a) is not None and op in ("eq", "ne"):
        a, b = b, a
    c = _int_const(b)
    if _is_ids(low, a) and c is not None:
        if op in ("ne", "eq"):
            return IdMask(int(c), op == "ne", tuple(a.axes))
        if (op, c) in (("gt", 0), ("ge", 1)):           # ids are >= 0: id 0 is the padding
            return IdMask(0, True, tuple(a.axes))
    if isinstance(a, IdMask) and not a.count and ((c in (0, 1) and op in ("eq", "ne")) or (op, c) == ("gt", 0)):
        same = op == "gt" or (op == "eq") == (c == 1)     # mask == 1, mask != 0, mask > 0: itself
        return a if same else replace(a, keep=not a.keep)
    m = _lengths_mask(low, op, a, b)
    if m is not None:
        return m
    low.fail(f"{op} of {_what(a)} and {_what(b)} (comparisons make masks of the token ids, ids != pad, and of "
             f"the steps before lengths, arange(T)[None, :] < lengths[:, None])")


for _op in ("eq", "ne", "gt", "lt", "ge", "le"):
    handles(_op, _op + "_")((lambda op: lambda low, a, b: _compare(low, op, a, b))(_op))


@handles("logical_not", "bitwise_not")
def _logical_not(low, x):
    if isinstance(x, IdMask) and not x.count:
        return replace(x, keep=not x.keep)
    if isinstance(x, np.ndarray):
        return np.logical_not(x)
    low.fail(f"not of {_what(x)}")


def _mask_fits(low, m, x, unit_features):
    """m's axes are x's (a sequence of the pipeline or scores) with, when unit_features, a unit
    axis where x has its features."""
    labels = tuple(low.lab(a) for a in x.axes)
    want = tuple("1" if v == "F" else v for v in labels) if unit_features else labels
    return tuple(low.lab(a) for a in m.axes) == want


def _mask_arith(low, op, a, b):
    if op == "mul" and isinstance(b, IdMask) and not isinstance(a, IdMask):
        a, b = b, a
    if op == "mul" and isinstance(a, IdMask) and not a.count:
        if not a.keep:
            low.fail("a product with the padding steps' mask (ids == pad): only the kept steps' (ids != pad)")
        if isinstance(b, Att) and b.stage == "exp" and _mask_fits(low, a, b, False):
            _lengths_role(low, a)
            return replace(b, mask=a.pad)               # exp(scores) * mask (the Kaggle Attention's)
        if isinstance(b, PT) and b.width is not None and _mask_fits(low, a, b, True):
            _lengths_role(low, a)
            return MaskedPT(b, a.pad, "zero")
        if isinstance(b, np.ndarray) and b.size == 1 and float(b.reshape(-1)[0]) == 1:
            return a                                      # mask * 1.0 (a cast)
    if op == "div" and isinstance(a, Pooled) and isinstance(b, IdMask) and b.count and a.kind == "sum" \
            and _mask_key(a) == b.pad and [low.lab(v) for v in b.axes if low.lab(v) != "1"] == ["B"]:
        return replace(a, kind="mean")                    # (out * mask).sum(1) / mask.sum(1)
    low.fail(f"{op} of {_what(a)} and {_what(b)} (a mask of the padding id is read by a product with a sequence "
             f"then a sum over time, or by masked_fill before a max or a softmax over time)")


def _mask_reduce(low, op, x, dim, keepdim):
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if dim is None or len(dims) != 1:
        low.fail(f"{op} of a mask over {dim}")
    i = int(dims[0])
    if isinstance(x, IdMask):
        if op != "sum" or x.count or low.lab(x.axes[i % len(x.axes)]) not in ("T", "x0", "x1"):
            low.fail(f"{op} of a mask of the padding id (only its sum over time: the number of kept steps)")
        axes = list(x.axes)
        if keepdim:
            axes[i % len(axes)] = "1"
        else:
            del axes[i % len(axes)]
        return replace(x, axes=tuple(axes), count=True)
    r = _reduce(low, op, x.x, dim, keepdim)
    p, rest = (r[0], r[1:]) if isinstance(r, tuple) else (r, ())
    if not (isinstance(p, Pooled) and ((p.kind == "sum" and x.fill == "zero") or (p.kind == "max" and x.fill == "neg"))):
        low.fail(f"{op} over time of a sequence whose padding steps are {'zeroed' if x.fill == 'zero' else 'set to -inf'} "
                 f"(a sum of the zeroed one, a max of the other)")
    p = replace(p, **_mask_over(x.pad))
    return (p,) + rest if rest else p


@handles("masked_fill", "masked_fill_")
def _masked_fill(low, x, mask, value):
    """x.masked_fill(mask == 0, v) with a mask of the padding id: 0 before a sum, a large negative
    value before a max or a softmax of attention scores."""
    v = float(np.asarray(value).reshape(-1)[0]) if _is_const(value) else None
    if not isinstance(mask, IdMask) or mask.count or v is None:
        low.fail(f"masked_fill of {_what(x)} where {_what(mask)} (only by a mask of the padding id)")
    if mask.keep:
        low.fail("masked_fill of the kept steps (ids != pad); the padding's (ids == pad, mask == 0) is")
    if isinstance(x, (Att, PT)) and (isinstance(x, Att) or _is_score(low, x)) and v <= -1e4:
        att = _att_of(low, x, "masked_fill")
        if not _mask_fits(low, mask, att, False) or att.stage != "score":
            low.fail("masked_fill of attention scores by a mask of other axes, or after their softmax")
        _lengths_role(low, mask)
        return replace(att, mask=mask.pad)
    if isinstance(x, PT) and x.width is not None and _mask_fits(low, mask, x, True) and (v == 0 or v <= -1e4):
        _lengths_role(low, mask)
        return MaskedPT(x, mask.pad, "zero" if v == 0 else "neg")
    low.fail(f"masked_fill of {_what(x)} with {v} (0 before a sum, -inf or a large negative value before a max "
             f"or a softmax over time)")


def _pool_mask_to_embedding(low, pad):
    first = low.layers[0] if low.layers else None
    if not isinstance(first, ir.Embedding) or first.mask_zero:
        low.fail("a pool under a mask of the token ids in a model that does not start with an Embedding")
    if first.pool_mask is not None and first.pool_mask != pad:
        low.fail(f"pools under masks of two padding ids ({first.pool_mask} and {pad})")
    low.layers[0] = replace(first, pool_mask=pad)


# ---- each row's last valid step ------------------------------------------------------------------
#
# out[torch.arange(B), lengths - 1] and out.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, H))
# of a recurrent layer's per-step output: the signature's time "valid_last" (fastrnn/signature.py),
# lengths a predict argument. The pipeline runs every step; predict takes each row's step.

@dataclass(frozen=True)
class StepIdx:
    """lengths - back, lengths a forward argument (B,), viewed to `shape`."""
    inp: Input
    back: int
    shape: tuple


@dataclass(frozen=True)
class FlatStepIdx:
    """Each row's step lengths - back as a row of a sequence flattened to (B*T, ...): arange(B) * T
    + (lengths - back), or (T*B, ...) time-major: (lengths - back) * B + arange(B) (torch's
    legacy ONNX export of out[arange(B), lengths - 1] / out[lengths - 1, arange(B)] gathers those
    rows of out flattened). scaled: only the product (lengths - back) * B so far."""
    step: StepIdx
    time_major: bool = False
    scaled: bool = False


def _flat_step(low, op, a, b):
    """a + b or a * b as a FlatStepIdx, or None."""
    if isinstance(b, (StepIdx, FlatStepIdx)):
        a, b = b, a
    B, T = low.size("B"), low.size("T")
    if op == "mul":
        if isinstance(a, StepIdx) and len(a.shape) == 1 and _is_num(b) and int(b) == B != T:
            return FlatStepIdx(a, True, True)
        return None
    if not isinstance(b, np.ndarray) or b.shape != (B,) or B == T:
        return None
    if isinstance(a, FlatStepIdx) and a.scaled and np.array_equal(b, np.arange(B)):
        return FlatStepIdx(a.step, True)
    if isinstance(a, StepIdx) and len(a.shape) == 1 and np.array_equal(b, np.arange(B) * T):
        return FlatStepIdx(a)
    return None


@dataclass(frozen=True)
class PairIdx:
    """torch.cat([arange(B)[:, None], (lengths - back)[:, None]], -1): (row, step) pairs, the
    indices of a GatherND (torch's dynamo ONNX export of out[arange(B), lengths - 1])."""
    step: StepIdx


def _pair_idx(low, tensors, dim):
    B = low.size("B")
    rows = [t for t in tensors if isinstance(t, np.ndarray)]
    steps = [t for t in tensors if isinstance(t, StepIdx)]
    if len(tensors) != 2 or len(rows) != 1 or not isinstance(tensors[1], StepIdx) or dim % 2 != 1 \
            or rows[0].shape != (B, 1) or steps[0].shape != (B, 1) or not np.array_equal(rows[0][:, 0], np.arange(B)):
        low.fail("a concatenation of lengths - 1 with anything but the rows arange(B) before it")
    return PairIdx(replace(steps[0], shape=(B,)))


def _step_idx_view(low, x, shape):
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(x.shape))
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1])) or 1
        shape = tuple(n // known if s == -1 else s for s in shape)
    if int(np.prod(shape)) != n:
        low.fail(f"view{shape} of lengths - {x.back}")
    return replace(x, shape=shape)


def _valid_last(low, x, tdim, idx):
    """x's step lengths - 1 per row (tdim: its time axis)."""
    if idx.back != 1:
        low.fail(f"step lengths - {idx.back} of each row (only lengths - 1, the last valid step)")
    x = low.tensor(x)
    if low.lab(x.axes[tdim]) != "T" and low.lab(x.axes[tdim]) not in ("x0", "x1"):
        low.fail("an index by lengths - 1 along an axis that is not the time axis")
    if low.lengths_index is None:
        # the recurrence ran over the padding too: its steps before each row's length are those of
        # a run with lengths when every layer so far is causal (nothing reads later steps)
        _causal_so_far(low, "an index by lengths - 1")
        low.takes_lengths = True
        low.lengths_index = idx.inp.index
        low.length_inputs.add(idx.inp.index)       # an ONNX graph input of role "lengths"
    elif idx.inp.index != low.lengths_index:
        low.fail("an index by another argument than pack_padded_sequence's lengths")
    low.at_end(x)
    if x.time is not None or x.packed:
        low.fail("the last valid step of a tensor already cut in time")
    axes = x.axes[:tdim] + x.axes[tdim + 1:]
    return replace(x, axes=axes, time="valid_last", padded=None)


def _index(low, x, items):
    """x[i0, i1, ...] with tensors: rows every row (arange(B)) and lengths - 1 along time."""
    shp = low.shape(x) if isinstance(x, (PT, HN, PS)) else None
    if shp is None:
        low.fail(f"advanced indexing of {_what(x)}")
    if items and isinstance(items[0], FlatStepIdx) and not items[0].scaled:
        x = low.tensor(x)
        flat = ("T", "B") if items[0].time_major else ("B", "T")
        if low.lab(x.axes[0]) != flat or any(i is not None for i in items[1:]):
            low.fail(f"rows of each row's step lengths - 1 of a tensor whose first axis is not {'*'.join(flat)} "
                     f"flattened")
        return _valid_last(low, replace(x, axes=tuple(x.axes[0]) + x.axes[1:]), flat.index("T"), items[0].step)
    items = list(items) + [None] * (len(shp) - len(items))
    kinds = []
    for d, it in enumerate(items):
        if it is None:
            kinds.append("all")
        elif isinstance(it, StepIdx) and len(it.shape) == 1:
            kinds.append("step")
        elif isinstance(it, np.ndarray) and it.ndim == 1 and len(it) == shp[d] and (it == np.arange(shp[d])).all():
            kinds.append("rows")
        else:
            kinds.append("other")
    if sorted(kinds) != sorted(["rows", "step"] + ["all"] * (len(shp) - 2)):
        low.fail("advanced indexing other than out[torch.arange(B), lengths - 1] (each row's last valid step)")
    t, r = kinds.index("step"), kinds.index("rows")
    if abs(t - r) != 1:
        low.fail("an index by arange(B) and lengths - 1 on axes that are not next to each other")
    x = low.tensor(x)
    if low.lab(x.axes[r]) not in ("B", "x0", "x1"):
        low.fail("arange(B) along an axis that is not the batch")
    return _valid_last(low, x, t, items[t])


@handles("index", "_unsafe_index")
def _index_op(low, x, indices):
    if indices and isinstance(indices[0], Perm) and all(i is None for i in indices[1:]):
        return _index_select(low, x, 0, indices[0])      # x[sort_idx]: rows reordered
    return _index(low, x, [None if i is None else i for i in indices])


@handles("gather")
def _gather(low, x, dim, index, *rest, **kw):
    """x.gather(dim, (lengths - 1).view(-1, 1, 1).expand(-1, 1, H)): each row's last valid step,
    a unit time axis kept."""
    if not isinstance(index, StepIdx) or not isinstance(x, (PT, PS)):
        low.fail(f"gather of {_what(x)} by {_what(index)} (only by lengths - 1 along the time axis)")
    shp = low.shape(x)
    dim %= len(shp)
    want = list(shp)
    want[dim] = 1
    if list(index.shape) != want and list(index.shape) != want[:-1] + [1]:
        low.fail(f"gather by lengths - 1 viewed as {index.shape} (expected {tuple(want)})")
    return _unsqueeze(low, _valid_last(low, x, dim, index), dim)


@handles("long", "int")
def _to_int(low, x, *rest):
    if isinstance(x, np.ndarray):
        return x.astype(np.int64)
    if isinstance(x, (StepIdx, Input, Size, int)):
        return x
    low.fail(f"an integer cast of {_what(x)}")


# ---- L2 normalisation -------------------------------------------------------------------------
#
# x / x.norm(dim=-1, keepdim=True) of a tensor of the pipeline, with F.normalize's
# norm.clamp_min(eps).expand_as(x) or a speaker encoder's (norm + eps): the row-wise
# l2_normalize activation. The norm alone is a Norm until the division says what it is for.

@dataclass(frozen=True, eq=False)
class Norm:
    x: PT
    keepdim: bool
    eps: float | None = None          # None: not bounded yet
    mode: int = 0                     # 0: max(norm, eps); 1: norm + eps (ir.ACTIVATIONS l2_normalize)


@handles("linalg_vector_norm", "norm", "linalg_norm", "frobenius_norm")
def _norm(low, x, p=2, dim=None, keepdim=False, *rest, **kw):
    keepdim = kw.get("keepdim", keepdim)
    dim = kw.get("dim", dim)
    p = kw.get("ord", kw.get("p", p))
    if isinstance(x, np.ndarray):
        return np.asarray(np.linalg.norm(x, ord=None if p in (2, "fro") else p,
                                         axis=None if dim is None else tuple(np.atleast_1d(dim)),
                                         keepdims=bool(keepdim)), np.float32)
    x = low.tensor(x)
    dims = list(np.atleast_1d(dim)) if dim is not None else list(range(len(x.axes)))
    if p not in (2, 2.0, "fro", None) or len(dims) != 1 or low.lab(x.axes[low.feature_axis(x, int(dims[0]))]) != "F":
        low.fail(f"a norm (p={p}, dim={dim}) other than the L2 norm over the features")
    return Norm(x, bool(keepdim))


@handles("normalize")
def _normalize(low, x, p=2.0, dim=1, eps=1e-12, *rest):
    """F.normalize as one call (a capture that keeps it whole)."""
    return _norm_arith(low, "div", x, replace(_norm(low, x, p, [dim], True), eps=float(eps), mode=0))


@handles("expand_as", "expand")
def _expand_as(low, x, *shape, **kw):
    if isinstance(x, Norm) and x.keepdim:
        return x                          # broadcast against its tensor by the division
    if isinstance(x, StepIdx):             # the same step for each feature: the view's shape is kept
        return x
    labels = None
    if len(shape) == 1 and isinstance(shape[0], (PT, HN)):
        labels = [low.lab(a) for a in shape[0].axes]
        shape = low.shape(shape[0])       # expand_as
    if shape and isinstance(shape[0], (list, tuple)):
        shape = tuple(shape[0])           # TorchScript's expand(self, size, implicit)
    if isinstance(x, np.ndarray):
        return _const_over_batch(low, x, shape, labels, "expand")
    if isinstance(x, (PT, HN, PS)) or cells.is_step(x):
        return _tile(low, x, shape, "expand")
    low.fail(f"expand of {_what(x)}")


@handles("repeat")
def _repeat(low, x, *sizes):
    if isinstance(x, np.ndarray):
        return _const_over_batch(low, x, sizes, None, "repeat")
    return _tile(low, x, sizes, "repeat")


def _const_over_batch(low, x, sizes, labels, op):
    """A constant expanded or repeated along a unit axis to the batch size: itself, broadcast over
    the batch where it is used (arange(T).unsqueeze(0).expand_as(ids); a learned initial state,
    self.h0.expand(-1, B, -1) or self.h0.repeat(1, B, 1), Lowering._initial_state). labels: the
    axes' labels when known (expand_as), else those of the sizes."""
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = tuple(sizes[0])
    if labels is None:
        labels = [low.lab(n.sym) if isinstance(n, Size) else None for n in sizes]
    keep = (-1, 1) if op == "repeat" else (-1,)
    if x.ndim == len(sizes) and all(n in keep or (op == "expand" and n == d) or (d == 1 and lab in ("B", "x0", "x1"))
                                    for n, d, lab in zip(sizes, x.shape, labels)):
        return x
    low.fail(f"{op} {tuple(sizes)} of a constant of shape {x.shape} (only along a unit axis, to the batch size)")


_TIME_CHANGING = (ir.Conv1D, ir.Pool1D, ir.RepeatVector, ir.Flatten)


def _tile(low, x, sizes, op):
    """One vector per row made a sequence: x.unsqueeze(1).repeat(1, n, 1) or .expand(-1, n, -1)
    of an encoder's final value (an LSTM autoencoder's decoder input; h.repeat(n, 1, 1) of a
    (1, B, H) state, time-major). The unit axis becomes the time axis, an ir.RepeatVector of n
    steps, or of the input's own steps (n 0) when n is x.size(1) the capture kept symbolic."""
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = tuple(sizes[0])
    unit = [i for i, a in enumerate(x.axes) if low.lab(a) == "1" or low.lab(a) == "S" and len(x.parts) == 1] \
        if isinstance(x, HN) else []
    rest = tuple(a for j, a in enumerate(x.axes) if j not in unit) if unit else ()
    if unit and low.unbatched and tuple(map(low.lab, rest)) == ("F",):
        x = replace(low.tensor(replace(x, axes=("B", "F"))), axes=rest)   # one sequence's: no batch axis
    else:
        x = low.tensor(replace(x, axes=rest) if unit else x)
    for i in unit:                        # h_n of one layer, h_n[-1].unsqueeze(1): its rows, unit axes kept
        x = replace(x, axes=x.axes[:i] + ("1",) + x.axes[i:])
    if x.time == "last":                  # out[:, -1:]: the last step made a vector (a Pool of that kind)
        i = [low.lab(a) for a in x.axes].index("1") if "1" in [low.lab(a) for a in x.axes] else None
        b = next(a for a in x.axes if low.lab(a) == "B")
        v = low.pool_layer([Pooled(replace(x, axes=(b, low._label_of("T") or "T", "F"), time=None), "last", False)])
        x = v if i is None else replace(v, axes=v.axes[:i] + ("1",) + v.axes[i:])
    if x.time not in (None, "final"):
        low.fail(f"{op} of a step the pipeline takes at its end ({x.time}: each row's last valid step, the "
                 f"longest row's, the last k)")
    if x.packed or x.width is None or x.dirs > 1:
        low.fail(f"{op} of {'a PackedSequence' if x.packed else 'the token ids' if x.width is None else 'directions'}")
    labs = [low.lab(a) for a in x.axes]
    if len(sizes) != len(labs):
        low.fail(f"{op} to {len(sizes)} axes of a tensor of {len(labs)} (only along an existing unit axis)")
    have = low.shape(x)
    grow = [i for i, (n, h) in enumerate(zip(sizes, have))        # expand: -1 (torch) or 1 (ONNX) keeps an axis
            if not (op == "expand" and (n in (-1, 1) or n == h)) and not (op == "repeat" and n == 1)]
    if not grow and op == "expand":
        return x                          # to its own shape (the dynamo exporter's Expand before a Tile)
    if len(grow) != 1 or labs[grow[0]] != "1" or "T" in labs or any(isinstance(a, tuple) for a in labs):
        low.fail(f"{op} {tuple(sizes)} of a tensor of shape {tuple(have)} (axes {_axes_str(labs)}): only a vector "
                 f"per row repeated along a new unit axis, as the time axis (x.unsqueeze(1).repeat(1, T, 1))")
    i, n = grow[0], sizes[grow[0]]
    if not isinstance(n, int):
        low.fail(f"{op} by {_what(n)} steps")
    # x.size(1) of the input: a size the capture kept symbolic, or, where torch.export fixed the time
    # axis (it does for every nn.LSTM), the example's own number of steps. The second is a guess (a
    # constant of the same value reads the same): the module capture settles it on a longer input
    # (frontends/torch.py, settle_repeats). A trace records x.size(1) as an op, and a number in an
    # archive or an ONNX graph is the constant it runs with.
    sym = isinstance(n, Size) and low.lab(n.sym) == "T"
    changed = any(isinstance(l, _TIME_CHANGING) for l in low.layers)
    own = sym or (not changed and getattr(n, "sym", None) is None and int(n) == low.size("T")
                  and low._label_of("T") in low.static)
    if own and changed:
        low.fail(f"{op} by the input's steps after a layer that changed them (a Conv1D, pooling window or "
                 f"RepeatVector)")
    if n < 1:
        low.fail(f"{op} by {n} steps")
    x = low.whole(low.reach(x))
    key = low._label_of("T") or "T"
    layer = ir.RepeatVector(x.width, 0 if own else int(n))
    if own and not sym:
        low.guessed_repeats.append((layer, int(n)))
    y = _window_out(low, x, layer, x.width, op)
    return replace(y, axes=x.axes[:i] + (key,) + x.axes[i + 1:], time=None)


def _norm_arith(low, op, a, b):
    if op == "add" and isinstance(b, Norm):
        a, b = b, a
    if isinstance(a, Norm) and op == "add" and a.eps is None and \
            (_is_num(b) or (isinstance(b, np.ndarray) and b.size == 1)):
        return replace(a, eps=float(np.asarray(b).reshape(-1)[0]), mode=1)
    if op == "div" and isinstance(b, Norm) and not isinstance(a, Norm):
        x = low.tensor(a)
        if x != b.x or not b.keepdim:
            low.fail("a division by the norm of another tensor (only x / x.norm(dim=-1, keepdim=True))")
        return activation(low, x, "l2_normalize", alpha=b.eps or 0.0, beta=float(b.mode), dim=-1)
    low.fail(f"{op} of {_what(a)} and {_what(b)} (a norm is read only by the division normalising its "
             f"tensor: x / x.norm(dim=-1, keepdim=True), F.normalize)")


# ---- reductions: pooling over time ------------------------------------------------------------
#
# out.mean(1), torch.max(out, 1)[0], out.sum(dim=1), amax over the time axis of a sequence of the
# pipeline: a Pooled value, made into an ir.Pool layer when it is used -- alone, or side by side
# with other pools of the same sequence when torch.cat puts them together on the feature axis
# (the Kaggle idiom cat([mean, max], 1)), which is one Pool layer of several kinds.

@dataclass(frozen=True)
class Pooled:
    x: PT
    kind: str
    keepdim: bool
    over: str | None = None           # ir.Pool over, when not the tensor's own (a masked mean: "valid")
    att: object = None                # kind "attn": its weights (Att)
    mask: int | None = None           # the padding id whose steps it leaves out (IdMask; over "valid")


def _masked_mean(low, p, n):
    """out.sum(1) / lengths (as a column, or as it is) of pad_packed_sequence's output: its padding
    is zeros, so that is the mean over each row's own steps (Pool over="valid")."""
    if not (isinstance(p, Pooled) and p.kind == "sum" and (p.over is None and p.x.padded or _mask_key(p) == LENGTHS)
            and isinstance(n, Input)
            and n.index == low.lengths_index and len(n.shape) in (1, 2)
            and n.shape[-1] == (low.size("B") if len(n.shape) == 1 else 1)):
        return None
    if len(n.shape) == 1 and p.keepdim:
        low.fail("a masked mean dividing by lengths along the time axis that sum kept")
    return replace(p, kind="mean", over="valid")


def _reduce(low, op, x, dim=None, keepdim=False, *rest, **kwargs):
    keepdim = kwargs.get("keepdim", keepdim)
    if isinstance(x, np.ndarray):
        fn = {"amax": np.max, "amin": np.min, "max": np.max, "min": np.min, "mean": np.mean, "sum": np.sum}[op]
        r = np.asarray(fn(x, axis=None if dim is None else tuple(dim) if isinstance(dim, (list, tuple)) else dim,
                          keepdims=bool(keepdim)), np.float32)
        return (r, None) if op in ("max", "min") and dim is not None and not isinstance(dim, (list, tuple)) else r
    if isinstance(x, PS):
        x = low.tensor(x)
    if isinstance(x, (IdMask, MaskedPT)):
        return _mask_reduce(low, op, x, dim, keepdim)
    if isinstance(x, Flipped):                # mean / max / sum over time do not see the order
        dims = dim if isinstance(dim, (list, tuple)) else [dim]
        if dim is None or len(dims) != 1 or low.lab(x.x.axes[dims[0] % len(x.x.axes)]) != low.lab(x.label):
            low.fail(f"{op} of {_what(x)} over another axis than its time")
        x = x.x
    if isinstance(x, (Att, Weighted)) and op == "sum" and isinstance(dim, (list, tuple)) and len(dim) == 1:
        dim = dim[0]
    if isinstance(x, (Att, Weighted)) and op == "sum" and isinstance(dim, int):
        if isinstance(x, Weighted):                 # (x * a.unsqueeze(-1)).sum(1)
            return _att_pool(low, x.x, x.att, keepdim, dim % len(x.x.axes))
        if x.stage == "exp" and x.axes[dim % len(x.axes)] == "T" and keepdim:
            return AttSum(x)                        # what exp(z) is divided by
    if isinstance(x, HN) and op in ("sum", "mean"):
        return _hn_reduce(low, op, x, dim, keepdim)
    if isinstance(x, Heads):
        return _heads_reduce(low, op, x, dim, keepdim)
    if not isinstance(x, PT):
        low.fail(f"{op} of {_what(x)}")
    if op in ("amin", "min"):
        low.fail(f"{op} over time (only mean, max and sum pool a sequence)")
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if dim is None or len(dims) != 1:
        low.fail(f"{op} over {'every axis' if dim is None else f'axes {list(dims)}'}: pooling reduces the time "
                 f"axis alone")
    i = dims[0] % len(x.axes)
    a = low.lab(x.axes[i])
    if a in ("x0", "x1") and a not in low.bind:        # pooling before any recurrent layer
        labels = [low.lab(v) for v in x.axes]
        others = [v for v in labels if v in ("x0", "x1") and v != a]
        low.bind[a] = "T"
        for v in others:
            low.bind[v] = "B"
        a = "T"
    if a == "D" and op in ("sum", "mean") and not keepdim:
        return _merge_directions(low, x, i, "sum" if op == "sum" else "ave")
    if a == "F" and op in ("sum", "mean") and x.width is not None and x.dirs == 1 and not x.packed:
        return _feature_sum(low, x, i, keepdim, 1.0 if op == "sum" else 1.0 / x.width)
    if a != "T":
        low.fail(f"{op} over the {a} axis: only pooling over time is supported")
    if x.packed:
        low.fail(f"{op} of a PackedSequence")
    if x.time is not None:
        low.fail(f"{op} over time of a tensor already cut in time (its last step or last steps)")
    kind = {"amax": "max"}.get(op, op)
    p = Pooled(x, kind, bool(keepdim))
    return (p, ArgMax()) if op == "max" and not isinstance(dim, (list, tuple)) else p


def _hn_reduce(low, op, x, dim, keepdim):
    """h_n.sum(0) / h_n.mean(0): the final states (rows of layers and directions) summed or
    averaged per batch row: those states side by side (the top layer's final step, or a head over
    the native states), then a Dense adding their blocks (folded into the next Linear)."""
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    if dim is None or len(dims) != 1 or keepdim or x.kind != "h" or x.group:
        low.fail(f"{op} of {x.kind}_n over {dim} (only over its rows, h_n.{op}(0))")
    i = int(dims[0]) % len(x.axes)
    if low.lab(x.axes[i]) != "S" or [low.lab(a) for j, a in enumerate(x.axes) if j != i] != ["B", "F"]:
        low.fail(f"{op} of h_n over its {low.lab(x.axes[i])} axis (only over its rows, h_n.{op}(0))")
    y = low.whole(low.tensor(replace(x, axes=("B", ("S", "F")))))
    n, H = len(x.parts), x.width
    W = np.tile(np.eye(H, dtype=np.float32), (1, n)) * np.float32(1.0 / n if op == "mean" else 1.0)
    return low.append(ir.Dense(W), y, H)


class ArgMax:
    """The indices torch.max(x, dim) also returns: nothing in fastrnn computes them."""


def _merge_directions(low, x, i, mode):
    """The two directions of the last recurrent layer summed or averaged: its merge mode."""
    low.at_end(x)
    layer = low.layers[-1] if low.layers else None
    if not isinstance(layer, ir.Recurrent) or layer.num_directions != 2 or layer.merge_mode != "concat" \
            or x.dirs != 2 or x.time is not None or x.cols is not None:
        low.fail("a sum over directions that are not the last recurrent layer's own")
    layer.merge_mode = mode
    return replace(x, axes=x.axes[:i] + x.axes[i + 1:], dirs=1)


def _adaptive(low, kind, x, output_size):
    """adaptive_{max,avg}_pool1d(out.permute(0, 2, 1), 1): a pool over the time axis (the last),
    which it keeps as a unit axis."""
    n = output_size[0] if isinstance(output_size, (list, tuple)) and len(output_size) == 1 else output_size
    if not isinstance(n, int) or n != 1:
        low.fail(f"adaptive pooling to {n!r} steps (only to one: a pool over the whole sequence)")
    return _reduce(low, kind, x, -1, True)


@handles("adaptive_max_pool1d")
def _adaptive_max(low, x, output_size):
    return _adaptive(low, "amax", x, output_size), ArgMax()


@handles("adaptive_avg_pool1d")
def _adaptive_avg(low, x, output_size):
    return _adaptive(low, "mean", x, output_size)


@handles("_adaptive_max_pool1d")            # F.adaptive_max_pool1d as TorchScript calls it
def _adaptive_max_f(low, x, output_size, return_indices=False):
    y = _adaptive(low, "amax", x, output_size)
    return (y, ArgMax()) if return_indices else y


def _kept_shape(low, p):
    """The example shape of a pool that keeps its time axis (a unit axis there)."""
    return [1 if low.lab(a) == "T" else n for a, n in zip(p.x.axes, low.shape(p.x))]


def _unkept(low, p, shape):
    """A pool that kept its time axis (keepdim, adaptive pooling) with that unit axis dropped by a
    squeeze or a view to `shape` (one -1 allowed): the same pool without it (still lazy, so pools
    of one tensor side by side stay one layer); None otherwise."""
    if not (isinstance(p, Pooled) and p.keepdim):
        return None
    kept = _kept_shape(low, p)
    want = [n for a, n in zip(p.x.axes, kept) if low.lab(a) != "T"]
    shape = [int(v) for v in shape]
    if shape.count(-1) == 1:
        rest = int(np.prod([v for v in shape if v != -1])) or 1
        shape[shape.index(-1)] = int(np.prod(kept)) // rest
    return replace(p, keepdim=False) if shape == want else None


for _op in ("mean", "sum", "amax", "max", "amin", "min"):
    handles(_op)((lambda op: lambda low, x, *a, **k: _reduce(low, op, x, *a, **k))(_op))


# ---- attention over time ----------------------------------------------------------------------
#
# Attention pooling as public code writes it: a score per step from a Linear of the sequence (or
# an MLP of it), optionally a bias per position (the Kaggle Attention module's self.b of
# step_dim), an activation, normalised over time (F.softmax(., dim=1), or exp then a division by
# its own sum over time, plus 1e-10), and the sequence weighted by it and summed over time
# (x * a.unsqueeze(-1) then .sum(1), or torch.bmm(a.unsqueeze(1), x)). The weights are an
# abstract value (Att) until that sum, which is an ir.Pool of the "attn" kind reading the score
# beside the sequence (both reached at the end of the pipeline: the score's Linear carries the
# sequence's columns, Lowering.reach). Streams keep the online softmax as the pool's state.

@dataclass(frozen=True, eq=False)
class Att:
    """Weights over time (section note). score: the one-feature pipeline tensor of the scores;
    axes: the weights' own axes (the score's, a unit axis "1" where unsqueezed); then bias (one
    per position, or None), act, and stage: "score" (act may still come), "exp" (exp taken, not
    yet divided by its sum over time), "norm" (normalised, eps added)."""
    score: PT
    axes: tuple
    bias: object = None
    act: str = "linear"
    stage: str = "score"
    eps: float = 0.0
    mask: int | None = None           # the padding id whose steps the weights leave out (IdMask)


@dataclass(frozen=True, eq=False)
class AttSum:
    """The sum over time (keepdim) of Att weights in stage "exp": what normalises them."""
    att: Att


@dataclass(frozen=True, eq=False)
class Weighted:
    """A sequence of the pipeline times attention weights: summed over time, an attention pool."""
    x: PT
    att: Att


def _is_score(low, x, heads=False):
    """x is a per-step scalar of the pipeline: one feature, its feature axis squeezed away or of
    size 1, and a time axis; with heads, also scores of several heads, one per feature."""
    if not isinstance(x, PT) or not x.pos or x.packed or x.time is not None or x.dirs > 1 \
            or x.width != 1 and not (heads and x.width and x.width > 1 and "F" in [low.lab(a) for a in x.axes]):
        return False
    labels = [low.lab(a) for a in x.axes]
    return "T" in labels and all(isinstance(a, str) for a in labels)


def _att_of(low, x, what, heads=False):
    """Att in stage "score" of a score tensor, or x itself when it is an Att."""
    if isinstance(x, Att):
        return x
    if isinstance(x, QScore):
        return Att(x, x.axes)
    if _is_score(low, x, heads):
        return Att(x, tuple(low.lab(a) for a in x.axes))
    low.fail(f"{what} of {_what(x)}")


def _time_bias(low, a, b):
    """a + b where a is a score and b a constant along its time axis alone (a bias per
    position: the Kaggle Attention module's self.b): -> Att with that bias, or None."""
    if not (isinstance(a, Att) or _is_score(low, a)) or not isinstance(b, np.ndarray) or b.size < 2:
        return None
    att = _att_of(low, a, "a bias per position")
    shape = low.shape(att)
    if b.ndim > len(shape):
        return None
    full = (1,) * (len(shape) - b.ndim) + tuple(b.shape)
    big = [i for i, n in enumerate(full) if n != 1]
    if len(big) != 1 or att.axes[big[0]] != "T" or full[big[0]] != shape[big[0]]:
        return None
    if att.stage != "score" or att.bias is not None or att.act != "linear":
        low.fail("a bias per position added after the scores' activation or normalisation")
    return replace(att, bias=np.asarray(b, np.float32).reshape(-1))


def _att_act(low, att, kind):
    """An activation of attention scores: the score's own, exp (stage "exp"), or, once a bias
    per position is added, the pool's score activation."""
    if att.stage != "score":
        low.fail(f"{kind} of attention weights already {'normalised' if att.stage == 'norm' else 'exponentiated'}")
    if kind == "exponential":
        return replace(att, stage="exp")
    if kind in ir.ROW_WISE or att.act != "linear":
        low.fail(f"{kind} of attention scores after {att.act}")
    return replace(att, act=kind)


def _att_softmax(low, x, dim):
    """softmax over the time axis of scores: normalised attention weights; None when dim is not
    a time axis of a score."""
    if not (isinstance(x, (Att, QScore)) or _is_score(low, x, heads=True)) or not isinstance(dim, int):
        return None
    att = _att_of(low, x, "softmax", heads=True)
    if att.axes[dim % len(att.axes)] != "T":
        return None
    if att.stage != "score":
        low.fail("a softmax of attention weights already normalised or exponentiated")
    return replace(att, stage="norm")


def _att_arith(low, op, a, b):
    """Arithmetic of attention weights: a bias per position, the division by their sum over
    time, + eps after it, and a sequence times them. -> the value, or None when it is not that."""
    if op == "add" and (isinstance(a, Att) or _is_score(low, a)) and isinstance(b, np.ndarray):
        r = _time_bias(low, a, b)
        if r is not None:
            return r
    if not isinstance(a, Att) and not (isinstance(b, Att) and op == "mul"):
        return None
    for w in (a, b):
        if isinstance(w, Att) and w.score.width > 1:
            low.fail(f"{op} of {_what(w)} (several heads' weights are read by torch.bmm(weights, sequence) only)")
    if op == "div" and isinstance(b, AttSum) and b.att is a and a.stage == "exp":
        return replace(a, stage="norm")
    if op in ("mul", "div") and _is_num(b) and float(b) != 0 and a.stage == "score" and a.act == "linear" \
            and a.bias is None:             # scores / sqrt(d): an affine score activation
        return replace(a, act=ir.Act("affine", float(b) if op == "mul" else 1.0 / float(b), 0.0))
    if op == "add" and (_is_num(b) or isinstance(b, np.ndarray) and b.size == 1) and a.stage == "norm" \
            and a.eps == 0:
        return replace(a, eps=float(np.asarray(b).reshape(-1)[0]))   # a trace's constants are arrays
    if op == "mul":
        att, x = (a, b) if isinstance(a, Att) else (b, a)
        if isinstance(x, PT) and att.stage == "norm":
            labels = tuple(low.lab(v) for v in x.axes)
            if labels == tuple("F" if v == "1" else v for v in att.axes) and "F" in labels:
                return Weighted(x, att)
        low.fail(f"attention weights times {_what(x)} (only a sequence of the pipeline whose feature axis "
                 f"the weights have as a unit axis: x * a.unsqueeze(-1))")
    low.fail(f"{op} of attention weights (in stage {a.stage}) and {_what(b)}")


def _att_pool(low, x, att, keepdim, at):
    """The weighted sequence summed over time (axis index `at`): Pooled of the attn kind."""
    if att.stage != "norm":
        low.fail("a sum over time of weights that are not normalised over time (a softmax)")
    if low.lab(x.axes[at]) != "T":
        low.fail("attention weights summed over an axis other than time")
    return Pooled(x, "attn", bool(keepdim), att=att, **_mask_over(att.mask))


def _att_bmm(low, a, x):
    """torch.bmm(a.unsqueeze(1), x): (B, 1, T) weights times a (B, T, F) sequence -> (B, 1, F);
    torch.bmm(A, x) of r heads' weights (B, r, T) -> Heads."""
    if not (isinstance(a, Att) and isinstance(x, PT)) or a.stage != "norm":
        return None
    labels = tuple(low.lab(v) for v in x.axes)
    if a.score.width > 1:
        if len(labels) != 3 or labels[1:] != ("T", "F") or a.axes != (labels[0], "F", "T") or a.bias is not None:
            low.fail(f"a batched matmul of {_what(a)} {_axes_str(a.axes)} with anything but a (B, T, F) sequence")
        return Heads(tuple(Pooled(x, "attn", False, att=replace(a, score=_columns(low, a.score, j, j + 1, 1)),
                                  **_mask_over(a.mask)) for j in range(a.score.width)))
    if len(labels) != 3 or labels[1:] != ("T", "F") or a.axes not in ((labels[0], "1", "T"), (labels[0], "F", "T")):
        low.fail("a batched matmul of attention weights (B, 1, T) with anything but a (B, T, F) sequence")
    return Pooled(x, "attn", True, att=a, **_mask_over(a.mask))


@dataclass(frozen=True, eq=False)
class QScore:
    """torch.bmm(out, q.unsqueeze(2)) of a recurrent layer's own output out (B, T, F) and its final
    state q (h_n rows: the forward direction's final state, then the backward one's): each step's
    score v_t . q against the sequence's final value (ir.PoolTerm kind "query": q is the value at
    the row's last step within its lengths for the first `split` columns, at its first step for
    the others). axes: (B, T, "1") until squeezed. Predict only: q is known after the last step."""
    x: PT
    split: int
    axes: tuple
    width = 1


def _query_bmm(low, a, x):
    """torch.bmm(out, h.unsqueeze(2)) -> QScore; torch.bmm(out.transpose(1, 2), w.unsqueeze(2)) of
    attention weights w (B, T) -> their pool, (B, F, 1); None when it is neither."""
    if isinstance(a, PT) and isinstance(x, HN):
        labels = tuple(low.lab(v) for v in a.axes)
        xl = tuple(low.lab(v) for v in x.axes)
        r = low.rnns[x.rnn] if 0 <= x.rnn < len(low.rnns) else None
        top = r.top if r else None
        if labels != ("B", "T", "F") or xl not in (("B", "F", "1"), ("B", ("S", "F"), "1")) or x.kind != "h" \
                or r is None or x.rnn != len(low.rnns) - 1 or list(x.parts) != [(top, d) for d in range(r.D)] \
                or a.pos != r.last + 1 or a.cols is not None or a.dirs != 1 or a.width != r.D * r.width \
                or a.time is not None or a.packed or x.rows is not None:
            low.fail("a batched matmul of a sequence with h_n other than a recurrent layer's own output with its "
                     "top layer's final state (forward direction first): attention against the final state")
        return QScore(a, r.width, ("B", "T", "1"))
    if isinstance(a, PT) and isinstance(x, Att) and x.stage == "norm":
        labels = tuple(low.lab(v) for v in a.axes)
        if labels != ("B", "F", "T") or x.axes != ("B", "T", "1") or x.score.width != 1:
            low.fail(f"a batched matmul of a tensor with axes {_axes_str(labels)} and attention weights "
                     f"{_axes_str(x.axes)} (only out.transpose(1, 2) with w.unsqueeze(2))")
        seq = replace(a, axes=(a.axes[0], a.axes[2], a.axes[1]))
        y = low.pool_layer([Pooled(seq, "attn", False, att=x, **_mask_over(x.mask))])
        return _unsqueeze(low, y, 2)
    return None


@dataclass(frozen=True, eq=False)
class Heads:
    """torch.bmm(A, x) of the weights of r heads A (B, r, T) and a sequence x (B, T, F): (B, r, F),
    the structured self-attention of Lin et al. 2017 (a score MLP to r columns, softmax over
    time). Each head's row is an attention pool of x with its own score column; flattened to
    (B, r * F) they are r attn terms of one ir.Pool side by side, summed or averaged over the heads
    a Dense adds those blocks."""
    pools: tuple


def _heads_flat(low, h, shape):
    """view(B, r * F) / flatten(1) of Heads: the pools side by side."""
    r, F_ = len(h.pools), h.pools[0].x.width
    tgt = [int(v) for v in shape]
    if len(tgt) != 2 or tgt[1] != r * F_ or tgt[0] not in (-1, low.size("B")):
        low.fail(f"view{tuple(shape)} of {_what(h)}: only flattened to (B, {r * F_})")
    return low.pool_layer(list(h.pools))


def _heads_reduce(low, op, h, dim, keepdim):
    """Heads summed or averaged over the heads axis: the pools side by side, then a Dense adding
    their blocks (folded into the next Linear)."""
    if isinstance(dim, (list, tuple)) and len(dim) == 1:
        dim = dim[0]
    if op not in ("sum", "mean") or not isinstance(dim, int) or dim % 3 != 1 or keepdim:
        low.fail(f"{op} of {_what(h)} over {dim} (only a sum or mean over the heads, axis 1)")
    y = low.pool_layer(list(h.pools))
    r, F_ = len(h.pools), h.pools[0].x.width
    W = np.tile(np.eye(F_, dtype=np.float32), (1, r)) * np.float32(1.0 / r if op == "mean" else 1.0)
    return low.append(ir.Dense(W), y, F_)


def _pool_layer(low, pools):
    """Pooled values side by side -> one ir.Pool layer; the PT after it. Pools of one sequence
    (at most one attention) are the simple form; pools of several tensors, or several attentions,
    are ir.PoolTerm over the columns of their tensors (and scores) placed side by side."""
    x = pools[0].x
    if len({p.keepdim for p in pools}) != 1:
        low.fail("torch.cat of pools that keep the time axis and pools that do not")
    if len({p.over for p in pools}) != 1 or len({p.mask for p in pools}) != 1:
        low.fail("torch.cat of a masked mean or pool (a sum divided by the lengths, or under a mask of the padding id) and "
                 "another pool over the padded steps")
    if pools[0].mask is not None:
        _pool_mask_to_embedding(low, pools[0].mask)
    if any(p.x.width is None for p in pools):
        low.fail("pooling token ids")
    i = [low.lab(a) for a in x.axes].index("T")
    over = pools[0].over or ("longest" if x.padded == "longest" else "steps")
    kinds = [p.kind for p in pools]
    query = [p for p in pools if p.att is not None and isinstance(p.att.score, QScore)]
    if all(p.x == x for p in pools) and kinds.count("attn") <= 1 and len(set(kinds)) == len(kinds) and not query:
        opts = {}
        if "attn" in kinds:       # the pool reads [score, x] (Lowering.reach, whole)
            a = next(p.att for p in pools if p.kind == "attn")
            low.whole(_cat_features(low, [_att_score(a, x), x], len(x.axes) - 1))
            opts = {"score_activation": a.act, "score_bias": a.bias, "eps": a.eps}
        else:
            low.whole(x)
        layer = ir.Pool(x.width, tuple(kinds), over, **opts)
    else:
        parts, at = [], []        # the tensors side by side, and where each one starts

        def place(t):
            for j, q in enumerate(parts):
                if q == t:
                    return at[j]
                if t.cols is not None and len(t.cols) == 1 and q.cols is None and \
                        replace(t, cols=None, width=q.width) == q:
                    return at[j] + t.cols[0][0]        # some columns of a tensor placed whole
            at.append(sum(q.width for q in parts))
            parts.append(t)
            return at[-1]
        for p in pools:                                # whole tensors first: column ranges read them
            if p.x.cols is None:
                place(p.x)
        terms = []
        for p in pools:
            start = place(p.x)
            if p in query:
                q = p.att.score
                if q.x != p.x or p.att.bias is not None or p.att.eps != 0:
                    low.fail("attention against a final state that weights another tensor than the sequence whose "
                             "final state it is, or with a bias per position or an eps")
                terms.append(ir.PoolTerm("query", start, start + p.x.width, score_activation=p.att.act,
                                         split=q.split))
            elif p.kind == "attn":
                score = place(_att_score(p.att, p.x))
                terms.append(ir.PoolTerm("attn", start, start + p.x.width, score, p.att.act, p.att.bias, p.att.eps))
            else:
                terms.append(ir.PoolTerm(p.kind, start, start + p.x.width))
        if len(terms) > ir.POOL_MAX_TERMS:
            low.fail(f"torch.cat of {len(terms)} pools (at most {ir.POOL_MAX_TERMS})")
        x = low.whole(_cat_features(low, parts, len(x.axes) - 1))
        layer = ir.Pool(x.width, over=over, terms=tuple(terms))
    low.layers.append(layer)
    low.nstates += 1                  # its own (internal) state: a recurrent layer after it numbers on
    axes = x.axes[:i] + (("1",) if pools[0].keepdim else ()) + x.axes[i + 1:]
    return replace(x, pos=len(low.layers), axes=axes, width=layer.output_size, padded=None, cols=None)


def _finals_as_pools(low, tensors):
    """torch.cat([h_n[-2], h_n[-1], out.mean(1), out.max(1)[0]], 1): the top layer's final states
    beside pools of its own output are pools of that output too -- a forward direction's final
    state its last step (within lengths), a backward one's its first (ir.Pool kinds "last",
    "first"). -> the tensors with each h_n row made such a Pooled."""
    ref = next(t for t in tensors if isinstance(t, Pooled))
    out = []
    for t in tensors:
        if not isinstance(t, HN):
            out.append(t)
            continue
        r = low.rnns[t.rnn] if 0 <= t.rnn < len(low.rnns) else None
        seq = ref.x
        top = r.top if r else None
        axes = tuple(low.lab(a) for a in t.axes)
        if t.kind != "h" or r is None or t.rnn != len(low.rnns) - 1 or t.rows is not None \
                or axes not in (("B", "F"), ("B", ("S", "F"))) or any(k != top for k, _ in t.parts) \
                or seq.pos != r.last + 1 or seq.cols is not None or seq.dirs != 1 or seq.width != r.D * r.width \
                or seq.time is not None:
            low.fail("torch.cat of final states with pools of another tensor than the recurrent layer's own "
                     "output (only its top layer's h_n rows beside pools of its output)")
        out += _hn_pools(low, t, seq, ref.keepdim, over=ref.over, mask=ref.mask)
    return out


def _hn_pools(low, t, seq, keepdim, **kw):
    """h_n rows t of a recurrent op's top layer as pools of its output seq: a forward direction's
    final state is its last step (within lengths), a backward one's -- or a layer run backwards
    over torch.flip(x) -- its first."""
    r = low.rnns[t.rnn]
    reverse = low.layers[r.last].direction == "reverse"
    return [Pooled(seq if r.D == 1 else replace(seq, width=r.width, cols=((d * r.width, (d + 1) * r.width),)),
                   "last" if (d == 0) != reverse else "first", keepdim, **kw) for _, d in t.parts]


def _finals_of_side_by_side(low, tensors, dim):
    """torch.cat([h1[-1], h2[-1]], 1) of recurrent layers side by side over one input: each
    top-layer row is its layer's last step (a forward direction's final state, within lengths)
    or first step (a backward one's), pools of those layers' outputs carried to the end."""
    pools = []
    for t in tensors:
        r = low.rnns[t.rnn] if 0 <= t.rnn < len(low.rnns) else None
        out = low.rnn_out.get(t.rnn)
        top = r.top if r else None
        axes = tuple(low.lab(a) for a in t.axes)
        if t.kind != "h" or out is None or t.rows is not None or axes not in (("B", "F"), ("B", ("S", "F"))) \
                or dim % len(axes) != len(axes) - 1 or any(k != top for k, _ in t.parts) or out.packed:
            low.fail("torch.cat of final states of several recurrent layers other than their top layers' h_n rows "
                     "along the features")
        pools += _hn_pools(low, t, out, False)
    return low.pool_layer(pools)


def _att_score(a, x):
    """The score tensor of attention weights a, as a one-feature tensor of x's axes."""
    return replace(a.score, axes=x.axes, time=x.time, padded=x.padded, rows=x.rows)


Lowering.pool_layer = lambda self, pools: _pool_layer(self, pools)


# ---- convolution and pooling windows over time ------------------------------------------------------
#
# torch's Conv1d / MaxPool1d / AvgPool1d read (batch, channels, time): a permute of a batch-first
# sequence, or the model's own (N, F, T) input. They become ir.Conv1D / ir.Pool1D layers, which
# change the number of steps: the time axis keeps its label, its example size becomes the
# window's output steps, and the model then runs whole sequences only (no lengths, no stream).

def _window_input(low, x, what):
    """x as (batch, features, time) for a window op: checks, binds unbound input axes; -> x."""
    if isinstance(x, PS):
        low.fail(f"a {what} inside a loop over time")
    x = _channels_first(low, low.tensor(x), ("B", "F", "T"))    # the model's own N x C x T input
    if x.cols is not None and x.dirs == 1 and not x.packed:
        x = low.whole(x)              # columns in another order (torch.cat((embed, out), 2)): a Dense selecting them
    low.at_end(x)
    labels = [low.lab(a) for a in x.axes]
    if len(labels) != 3 or labels[1] != "F":
        low.fail(f"a {what} over a tensor with axes {_axes_str(labels)}: expected (batch, channels, time), "
                 f"the features on dim 1")
    if x.packed or x.padded or x.time is not None:
        low.fail(f"a {what} over a PackedSequence or a sequence already cut in time")
    if x.cols is not None or x.dirs > 1:
        low.fail(f"a {what} over features in a permuted order")
    for a, want in ((labels[0], "B"), (labels[2], "T")):
        if a in ("x0", "x1") and a not in low.bind:
            low.bind[a] = want
    if (low.lab(x.axes[0]), low.lab(x.axes[2])) != ("B", "T"):
        low.fail(f"a {what} whose dims 0 and 2 are not the batch and the time axes")
    return x


def _window_out(low, x, layer, width, what):
    """Append a window layer; the time axis's example size becomes its output steps."""
    key = next((k for k, v in low.bind.items() if v == "T"), None)
    T = int(low.size("T"))
    if layer.steps(T) < 1:
        low.fail(f"a {what} with no output step for the example's {T} steps")
    y = low.append(layer, x, width)
    if key is not None:
        sym = getattr(low.xsizes.get(key), "sym", None)
        low.xsizes[key] = Size(layer.steps(T), sym)
    return y


def _pads(low, padding, what):
    if isinstance(padding, (list, tuple)) and len(padding) == 1:
        padding = padding[0]
    if isinstance(padding, (list, tuple)) and len(padding) == 2:      # ONNX pads [begin, end]
        return [int(padding[0]), int(padding[1])]
    if not isinstance(padding, int) or padding < 0:
        low.fail(f"a {what} with padding {padding!r}")
    return [padding, padding]


@handles("conv1d")
def _conv1d(low, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """aten.conv1d(x, w, b, stride, padding, dilation, groups) (padding: ints, "same" or "valid")."""
    return _conv(low, x, weight, bias, stride, padding, dilation, groups)


@handles("_convolution", "convolution")
def _convolution(low, x, weight, bias, stride, padding, dilation, transposed=False, output_padding=0, groups=1,
                 *rest):
    """aten._convolution / convolution: what torch.jit.trace records for Conv1d."""
    if transposed:
        low.fail("a transposed convolution")
    return _conv(low, x, weight, bias, stride, padding, dilation, groups)


def _one(v):
    """An int of a 1-D op's argument, which torch gives as [n]."""
    return int(v[0]) if isinstance(v, (list, tuple)) and len(v) == 1 else v


def _conv(low, x, weight, bias, stride, padding, dilation, groups):
    if not isinstance(weight, np.ndarray) or weight.ndim != 3:
        low.fail("a convolution whose weight is not a constant (out, in, kernel) array: only 1-D convolutions")
    if bias is not None and not isinstance(bias, np.ndarray):
        low.fail("a convolution whose bias is not a constant")
    if groups != 1:
        low.fail(f"a grouped convolution (groups={groups})")
    stride, dilation = _one(stride), _one(dilation)
    if not isinstance(stride, int) or not isinstance(dilation, int):
        low.fail(f"a convolution with stride {stride!r}, dilation {dilation!r}")
    x = _window_input(low, x, "convolution")
    if weight.shape[1] != x.width:
        low.fail(f"a convolution of weight shape {weight.shape} on {x.width} channels")
    k = int(weight.shape[2])
    if padding == "same":                 # torch's split: the extra step after
        total = dilation * (k - 1)
        pads = [total // 2, total - total // 2]
    elif padding == "valid":
        pads = [0, 0]
    else:
        pads = _pads(low, padding, "convolution")
    layer = ir.Conv1D(weight.astype(np.float32), None if bias is None else bias.astype(np.float32),
                      stride, dilation, pads)
    return _window_out(low, x, layer, int(weight.shape[0]), "convolution")


def _pool1d(low, op, x, kernel_size, stride=None, padding=0, *rest):
    """aten.max_pool1d(x, kernel, stride, padding, dilation, ceil_mode) (and _with_indices);
    aten.avg_pool1d(x, kernel, stride, padding, ceil_mode, count_include_pad); TorchScript's
    F._max_pool1d(x, kernel, stride, padding, dilation, ceil_mode, return_indices)."""
    kind = "avg" if op == "avg_pool1d" else "max"
    if op == "_max_pool1d" and len(rest) > 2 and rest[2]:
        op = "max_pool1d_with_indices"
    if isinstance(kernel_size, (list, tuple)) and len(kernel_size) == 1:
        kernel_size = kernel_size[0]
    whole = isinstance(kernel_size, Size) and kernel_size.sym and low.lab(kernel_size.sym) == "T" \
        or _one(kernel_size) == low.size("T") > 1 and low._label_of("T") in low.static
    if whole and _one(padding) == 0 and (stride is None or _one(stride) in (kernel_size, [])) \
            and not (rest[1] if kind == "max" and len(rest) > 1 else rest[0] if kind == "avg" and rest else False) \
            and (kind == "avg" or not rest or _one(rest[0]) == 1):
        # F.max_pool1d(y, y.size(2)): a window as long as the sequence, the pool over time
        y = _reduce(low, "amax" if kind == "max" else "mean", x, -1, True)
        return (y, None) if op == "max_pool1d_with_indices" else y
    kernel_size, stride = _one(kernel_size), _one(stride)
    if isinstance(stride, (list, tuple)) and not stride:     # torch's default: the kernel
        stride = None
    if kind == "max":
        dilation, ceil_mode, count_pad = (_one(rest[0]) if rest else 1), (rest[1] if len(rest) > 1 else False), False
    else:
        dilation, ceil_mode, count_pad = 1, (rest[0] if rest else False), (rest[1] if len(rest) > 1 else True)
    if dilation != 1 or ceil_mode:
        low.fail(f"a {kind} pooling with dilation {dilation} / ceil_mode {ceil_mode}")
    x = _window_input(low, x, f"{kind} pooling")
    layer = ir.Pool1D(x.width, kind, int(kernel_size), None if stride is None else int(stride),
                      _pads(low, padding, "pooling"), bool(count_pad))
    y = _window_out(low, x, layer, x.width, f"{kind} pooling")
    return (y, None) if op == "max_pool1d_with_indices" else y


for _op in ("max_pool1d", "avg_pool1d", "max_pool1d_with_indices", "_max_pool1d"):
    handles(_op)((lambda op: lambda low, x, *a: _pool1d(low, op, x, *a))(_op))


# ---- loops over time (unrolled by the capture) -----------------------------------------------------
#
# for t in range(x.size(1)): h = cell(x[:, t], h); outs.append(fc(h)) is recorded as T cell calls
# and T Linear calls. Each value made in the loop is a PS (step t of a source, then per-step ops).
# A cell call must read step t of one source (a sequence of the pipeline, or another chain's
# state: stacked cells) with the state the previous call returned (zeros at t = 0) and the same
# weights; the chain is then one recurrent layer. Per-step Linear layers and activations become
# layers after it. The loop is made into layers when its result is used: the last step as the
# final step, or torch.stack / torch.cat of every step as the sequence.

@dataclass
class _Chain:
    mode: str
    src: tuple                        # the per-step input: (src, ops) of its PS
    ops: tuple
    weights: tuple
    last: int
    init: tuple = ()                  # its initial (h, c): Zeros, or a state forward takes (Input)


def _ps_shape(low, v):
    """The example shape of one step of a loop value: its source's step, then its ops."""
    if v.src[0] == "seq":
        s = low.shape(v.src[1])
        shape = list(s[:v.src[2]] + s[v.src[2] + 1:])
    else:
        ch = low.chains[v.src[1]]
        shape = [low.size("B") if "B" in low.bind.values() else _ps_batch(low, ch), ch.weights[1].shape[1]]
    for op in v.ops:
        if op[0] == "linear":
            shape[-1] = low.ps_payload[op[1]][0].shape[0]
        elif op[0] == "unsq":
            shape.insert(op[1] % (len(shape) + 1), 1)
    return tuple(shape)


def _ps_batch(low, ch):
    """The batch size of a cell chain's steps (before the loop has bound the input's axes)."""
    while True:
        if ch.src[0] == "seq":
            x, axis = ch.src[1], ch.src[2]
            return low.shape(x)[1 - axis]
        ch = low.chains[ch.src[1]]


def _ps_op(low, x, op, payload=None):
    """x (a PS) with one more per-step op; payload (weights) is kept by identity."""
    if payload is not None:
        key = tuple(id(p) for p in payload)
        low.ps_payload[key] = payload
        op = op + (key,)
    return replace(x, ops=x.ops + (op,))


def _cell(low, mode, inp, state, w_ih, w_hh, b_ih=None, b_hh=None):
    if not isinstance(inp, PS) or inp.kind != "h":
        low.fail(f"a recurrent cell reads {_what(inp)}: fastrnn converts cells fed one step of a sequence "
                 f"per call (for t in range(x.size(1)): h = cell(x[:, t], h))")
    states = list(state) if isinstance(state, (list, tuple)) else [state]
    ws = (w_ih, w_hh, b_ih, b_hh)
    if not all(w is None or isinstance(w, np.ndarray) for w in ws) or (b_ih is None) != (b_hh is None):
        low.fail("cell weights that are not constants")
    if all(v is None or isinstance(v, (Zeros, Input)) for v in states):
        if inp.t != 0:
            low.fail(f"a cell chain starting at step {inp.t} (it must start at step 0 with a zero state)")
        low.chains.append(_Chain(mode, inp.src, inp.ops, ws, 0, tuple(states)))
        k = len(low.chains) - 1
    else:
        if not all(isinstance(v, PS) and v.src[0] == "chain" and not v.ops for v in states) \
                or len({v.src for v in states}) != 1:
            low.fail("a cell whose state is not the previous call's state (or zeros at step 0)")
        k = states[0].src[1]
        ch = low.chains[k]
        if any(key[0] == ("chain", k) for key in low.ps_made):
            low.fail("a cell chain continued after its result was used")
        if ch.mode != mode or ch.src != inp.src or ch.ops != inp.ops or any(
                a is not b for a, b in zip(ch.weights, ws)) or inp.t != ch.last + 1 \
                or any(v.t != ch.last for v in states):
            low.fail(f"cell call {inp.t} does not continue the chain of step {ch.last} (the same cell, the "
                     f"next step of the same sequence, the previous state)")
        ch.last = inp.t
    h = PS(("chain", k), inp.t)
    lstm = (mode[0] if isinstance(mode, tuple) else mode) == "lstm"
    return (h, PS(("chain", k), inp.t, (), "c")) if lstm else h


for _mode in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
    handles(_mode + "_cell")((lambda mode: lambda low, inp, hx, w_ih, w_hh, b_ih=None, b_hh=None:
                              _cell(low, mode, inp, hx, w_ih, w_hh, b_ih, b_hh))(_mode))


def _ps_steps(low, src):
    """How many steps the loop over src has (the length of the sequence it steps through)."""
    while src[0] == "chain":
        ch = low.chains[src[1]]
        src = ch.src
    x, axis = src[1], src[2]
    return low.size(x.axes[axis])


def _ps_made(low, src, ops, sequence):
    """The PT of per-step values (src, ops) over every step (sequence) or at the last step."""
    key = (src, ops, sequence)
    if key in low.ps_made:
        return low.ps_made[key]
    if any(k[0] == src and k[2] != sequence for k in low.ps_made):
        low.fail("uses a loop's values both per step and at the last step")
    if ops:
        v = _ps_made(low, src, ops[:-1], sequence)
        op = ops[-1]
        if op[0] == "linear":
            W, b = low.ps_payload[op[1]]
            v = _linear(low, v, W, b)
        elif op[0] == "act":
            kind, alpha, dim = low.ps_payload[op[1]]
            v = activation(low, v, kind, alpha=alpha, dim=dim)
        elif op[0] == "unsq" and not sequence:          # out[:, -1:]: the last step, a unit axis kept
            v = _unsqueeze(low, v, op[1])
        elif op[0] == "unsq" and _featureless(low, v) and op[1] % len(v.axes) == len(v.axes) - 1:
            v = replace(v, axes=v.axes + ("F",))        # x[:, t:t+1] of a series: its one feature
        else:
            low.fail(f"a per-step {op[0]} inside the loop")
    elif src[0] == "seq":
        x, axis = src[1], src[2]
        a = x.axes[axis]
        if sequence:
            _bind_steps(low, x, axis)
            v = x
        else:
            if a in ("x0", "x1") and a not in low.bind:
                _bind_steps(low, x, axis)
            if x.pos < len(low.layers) and not x.packed:    # x[:, -1] of the input read after a layer: carried
                x = low.reach(x)
            v = _last_step(low, x, axis)
    else:
        v = _chain_layer(low, src[1], sequence)
    low.ps_made[key] = v
    return v


def _bind_steps(low, x, axis):
    """The loop steps along `axis` of x: it is the time axis, the other the batch."""
    labels = [low.lab(a) for a in x.axes]
    if not (len(labels) == 3 and labels[2] == "F" or len(labels) == 2 and _featureless(low, x)):
        low.fail(f"a loop over a tensor with axes {_axes_str(labels)}")
    for i, want in ((axis, "T"), (1 - axis, "B")):
        a = labels[i]
        if a == want:
            continue
        if a in ("x0", "x1") and a not in low.bind and want not in low.bind.values():
            low.bind[a] = want
        else:
            low.fail(f"a loop steps along the {a} axis")


def _chain_layer(low, k, sequence):
    """Cell chain k as one recurrent layer, its input made first."""
    ch = low.chains[k]
    T = _ps_steps(low, ("chain", k))
    if ch.last != T - 1:
        low.fail(f"a loop over {ch.last + 1} of {T} steps: fastrnn converts loops over every step")
    x = _ps_made(low, ch.src, ch.ops, True)
    low.at_end(x)
    w_ih, w_hh, b_ih, b_hh = ch.weights
    params = [w_ih, w_hh] + ([b_ih, b_hh] if b_ih is not None else [])
    if x.cols is not None:
        params[0] = permute_columns(params[0], x.cols, low.pipe_width(x))
    mode, acts = ch.mode if isinstance(ch.mode, tuple) else (ch.mode, None)
    (layer,) = torch_layers(mode, params, 1, 1, b_ih is not None, 0)
    if acts is not None:                 # an unrolled cell's own activations (converters/cells.py)
        layer = replace(layer, activations=[list(acts)])
    if layer.input_size != x.width:
        low.fail(f"a cell of {layer.input_size} inputs reads {x.width} features")
    layer.return_sequences = sequence
    first = len(low.layers)
    low.layers.append(layer)
    lstm = mode == "lstm"
    s0 = low.nstates
    low.states.append({"parts": [[s0, 0]], "stack": False})
    if lstm:
        low.states.append({"parts": [[s0 + 1, 0]], "stack": False})
    low.nstates += 2 if lstm else 1
    rnn = _Rnn(first, first, 1, 1, layer.state_size, layer.hidden_size, lstm, s0)
    if any(isinstance(v, Input) for v in ch.init):      # a state forward takes: predict's initial_state
        # (before the append: it records the layer's index)
        low.layers[first:] = low._initial_state(list(ch.init), rnn, low.layers[first:])
    low.rnns.append(rnn)
    low.chain_state[k] = (s0, sequence)
    pos = len(low.layers)
    if sequence:
        return PT(pos, ("B", "T", "F"), layer.output_size)
    return PT(pos, ("B", "F"), layer.output_size, time="final")


def _ps_final(low, v):
    """A loop's value used as a tensor: its last step."""
    if v.kind != "h":
        low.fail("uses a cell's c as a tensor of the pipeline")
    T = _ps_steps(low, v.src)
    if v.t != T - 1:
        low.fail(f"step {v.t} of {T} used as a tensor: only the last step is supported (output[:, -1], or "
                 f"the state after a loop over every step), or every step stacked")
    return _ps_made(low, v.src, v.ops, False)


def chain_last(low, v):
    """v (a loop value) as a cell chain's state after its last step (unsqueezed at 0 or not): its
    PS, or None (also when v is no cell)."""
    try:
        ps = cells.to_ps(low, v) if cells.is_step(v) else v
    except Refused:
        return None
    if not isinstance(ps, PS) or ps.src[0] != "chain" or any(op != ("unsq", 0) for op in ps.ops) \
            or ps.t != _ps_steps(low, ps.src) - 1:
        return None
    return ps


def chain_final(low, v):
    """v as the final state of a cell chain whose layer already runs every step (a graph output
    next to the per-step output): (native state, unit axes before it), or None."""
    ps = chain_last(low, v)
    made = low.chain_state.get(ps.src[1]) if ps is not None else None
    if made is None or not made[1]:
        return None
    return made[0] + (1 if ps.kind == "c" else 0), len(ps.ops)


def _ps_stack(low, steps, unsq_dim, dim):
    """torch.stack(steps, dim) (or torch.cat of steps unsqueezed at dim): every step of one loop
    value, in order -> its sequence, the time axis where dim puts it."""
    if any(t.kind != "h" for t in steps) or len({(t.src, t.ops) for t in steps}) != 1 \
            or [t.t for t in steps] != list(range(len(steps))) or len(steps) != _ps_steps(low, steps[0].src):
        low.fail("torch.stack / torch.cat of loop values that are not every step of one loop, in order")
    if unsq_dim % 3 != dim % 3:
        low.fail("torch.cat along another axis than the steps were unsqueezed on")
    seq = _ps_made(low, steps[0].src, steps[0].ops, True)
    if dim % 3 == 1:
        return seq
    if dim % 3 == 0:
        return replace(seq, axes=("T", "B", "F"))
    low.fail("torch.stack of loop values along the feature axis")


from . import cells  # noqa: E402  (cells reads this module's names)
