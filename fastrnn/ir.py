"""The IR: a model is a linear pipeline of layer specs holding float32 NumPy weights.

Every converter produces these objects; the .frnn file stores them (fastrnn/fileformat.py); the
engine packs their weights once at load (fastrnn/_engine.pyx); fastrnn/reference.py runs them in
float64 as the executable spec. docs/layers.md is the user-facing description.

Canonical weight layout (PyTorch's, whatever the source):
  Recurrent, per direction d (forward first), gate order LSTM i,f,g,o; GRU r,z,n; RNN one gate:
    W_ih (G*H, I)     input weights
    W_hh (G*H, R)     recurrent weights; R = H, or proj_size for an LSTM with projection
    b_ih, b_hh (G*H)  kept apart (GRU's n gate needs them apart); both present or both absent
    P    (3, H)       LSTM peepholes, rows in the order i, f, o (ONNX stores i, o, f)
    W_hr (proj, H)    LSTM projection (torch proj_size)
    h0 (R), c0 (H)    the state every sequence starts from when no initial state is given (a
                      learned initial state, torch's nn.Parameter h0 expanded over the batch);
                      absent: zeros. c0 is an LSTM's only. predict, streams, Stream.reset and a
                      StreamPool's new / reset slots all start from it.
  Dense: weight (out, in), bias (out,) or none.  Embedding: weight (vocab, dim).

Equations (per direction, x_t the input, h/c the state; f, g, h the activations in ONNX's naming):
  rnn : h' = f(W_ih x + b_ih + W_hh h + b_hh)
  lstm: i = f(.), f_ = f(.) (or 1 - i with input_forget), g_ = g(.), c' = f_*c + i*g_,
        o = f(. + P_o*c'), h' = o*h(c') [then W_hr h' with projection]; peepholes add P_i*c, P_f*c
        to the i and f pre-activations; clip bounds every gate pre-activation to [-clip, clip].
  gru : r = f(.), z = f(.), n = g(W_in x + b_in + r*(W_hn h + b_hn))   (linear_before_reset=True,
        torch and Keras reset_after=True) or n = g(W_in x + b_in + W_hn (r*h) + b_hn) (False);
        h' = (1-z)*n + z*h
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import ModelFormatError

# Activation kinds. The numeric codes are shared with the C engine (src_c/fastrnn.h, FRNN_ACT_*).
# name -> (code, default alpha, default beta)
ACTIVATIONS = {
    "linear": (0, 0.0, 0.0),
    "sigmoid": (1, 0.0, 0.0),
    "tanh": (2, 0.0, 0.0),
    "relu": (3, 0.0, 0.0),
    "hard_sigmoid": (4, 0.2, 0.5),      # clip(alpha*x + beta, 0, 1); Keras 3: alpha=1/6
    "elu": (5, 1.0, 0.0),               # x if x > 0 else alpha*(exp(x) - 1)
    "softsign": (6, 0.0, 0.0),          # x / (1 + |x|)
    "softplus": (7, 0.0, 0.0),          # log(1 + exp(x))
    "affine": (8, 1.0, 0.0),            # alpha*x + beta (ONNX Affine)
    "leaky_relu": (9, 0.01, 0.0),       # x if x >= 0 else alpha*x
    "thresholded_relu": (10, 1.0, 0.0),  # x if x > alpha else 0
    "scaled_tanh": (11, 1.0, 1.0),      # alpha*tanh(beta*x) (ONNX ScaledTanh)
    "selu": (12, 0.0, 0.0),             # Klambauer et al. constants
    "exponential": (13, 0.0, 0.0),      # exp(x)
    "silu": (14, 0.0, 0.0),             # x*sigmoid(x) (Keras swish)
    "relu6": (15, 0.0, 0.0),            # min(max(x, 0), 6)
    "gelu": (16, 0.0, 0.0),             # x Phi(x) (torch's GELU, Keras's gelu(approximate=False))
    "gelu_tanh": (17, 0.0, 0.0),        # x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2
    "mish": (18, 0.0, 0.0),             # x tanh(softplus(x))
    "hardswish": (19, 0.0, 0.0),        # x relu6(x + 3) / 6 (torch's Hardswish, Keras's hard_silu)
    "clip": (20, -1.0, 1.0),            # min(max(x, alpha), beta) (torch's Hardtanh and clamp, ONNX Clip)
    "softmax": (32, 0.0, 0.0),          # over the feature axis; Dense and Activation only
    "log_softmax": (33, 0.0, 0.0),
    "layer_norm": (34, 1e-5, 0.0),      # (x - mean) / sqrt(var + alpha) over the features (row-wise;
                                        # LayerNorm's scale and shift are a Dense after it)
    "l2_normalize": (35, 1e-12, 0.0),   # x / max(||x||, alpha) (beta 0: F.normalize) or x / (||x|| + alpha)
                                        # (beta 1), ||x|| the L2 norm of the row's features (row-wise)
    "mul_halves": (36, 0.0, 0.0),       # over 2n features: x[:n] * x[n:], then x[n:] as it was (row-wise;
                                        # a gating product a(o) * sigmoid(g(o)) of two tensors side by side)
}
ALIASES = {"hard_swish": "hardswish", "hard_silu": "hardswish", "hard_tanh": "clip", "swish": "silu", "identity": "linear", "none": "linear"}
ROW_WISE = ("softmax", "log_softmax", "layer_norm", "l2_normalize", "mul_halves")

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _isnan(v):
    return isinstance(v, float) and math.isnan(v)


@dataclass(frozen=True)
class Act:
    """An activation: a kind from ACTIVATIONS and its alpha/beta (ignored by kinds without them)."""
    kind: str
    alpha: float = math.nan
    beta: float = math.nan

    def __post_init__(self):
        kind = ALIASES.get(self.kind, self.kind) if isinstance(self.kind, str) else None
        if kind not in ACTIVATIONS:
            raise ModelFormatError(
                f"unknown activation {self.kind!r}; known: {', '.join(sorted(ACTIVATIONS))}")
        _, da, db = ACTIVATIONS[kind]
        object.__setattr__(self, "kind", kind)
        alpha = _float(f"activation {kind} alpha", self.alpha) if not _isnan(self.alpha) else da
        beta = _float(f"activation {kind} beta", self.beta) if not _isnan(self.beta) else db
        object.__setattr__(self, "alpha", float(alpha))
        object.__setattr__(self, "beta", float(beta))
        if kind == "clip" and not alpha <= beta:
            raise ModelFormatError(f"activation clip: its lower bound (alpha) must not exceed its upper (beta), "
                                   f"got {alpha}, {beta}")
        if kind == "layer_norm" and not alpha >= 0:
            raise ModelFormatError(f"activation layer_norm: its epsilon (alpha) must be >= 0, got {alpha}")
        if kind == "l2_normalize" and not (alpha >= 0 and beta in (0.0, 1.0)):
            raise ModelFormatError(f"activation l2_normalize: epsilon (alpha) >= 0 and mode (beta) 0 or 1 expected, "
                                   f"got {alpha}, {beta}")

    @property
    def code(self) -> int:
        return ACTIVATIONS[self.kind][0]

    def to_json(self):
        return {"kind": self.kind, "alpha": self.alpha, "beta": self.beta}

    @staticmethod
    def of(a) -> "Act":
        """Normalise a name, dict or Act into an Act."""
        if isinstance(a, Act):
            return a
        if isinstance(a, str):
            return Act(a)
        if isinstance(a, dict):
            extra = set(a) - {"kind", "alpha", "beta"}
            if extra or "kind" not in a:
                raise ModelFormatError(f"activation must have 'kind' (+ alpha, beta), got {a!r}")
            if not isinstance(a["kind"], str):
                raise ModelFormatError(f"activation kind must be a string, got {a['kind']!r}")
            return Act(a["kind"], a.get("alpha", math.nan), a.get("beta", math.nan))
        raise ModelFormatError(f"an activation is a name, a dict or an Act, got {type(a).__name__}")


def _f32(name, a, ndim):
    """A weight as a float32 C-contiguous array (read-only memory maps pass through uncopied)."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as e:  # noqa: BLE001 - anything array-like that fails is a format error
            raise ModelFormatError(f"{name}: not an array ({e})") from None
    if a.dtype.kind not in "fiu":
        raise ModelFormatError(f"{name}: expected a float array, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ModelFormatError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    if a.dtype != np.float32 or not (a.flags.c_contiguous and a.flags.aligned):
        a = np.require(a, np.float32, ["C", "A"])
    return a


def _shape(name, a, shape):
    if a.shape != tuple(shape):
        raise ModelFormatError(f"{name}: expected shape {tuple(shape)}, got {a.shape}")


CELLS = {"rnn": (1, 1), "lstm": (4, 3), "gru": (3, 2)}   # cell -> (gates, activations)
DEFAULT_ACTS = {"rnn": ("tanh",), "lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh")}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
MERGE_MODES = ("concat", "sum", "mul", "ave")


@dataclass(eq=False)
class Embedding:
    """Token ids (batch, time) -> vectors. mask_zero: id 0 masks its step (Keras semantics: every
    layer after it sees the mask). pool_mask: steps whose id is pool_mask are left out of the pools
    over valid steps (Pool over="valid") after it, and nothing else: recurrent layers still run
    them (torch's masks made from the ids, x != pad, that only a pooling or attention reads)."""
    weight: np.ndarray
    mask_zero: bool = False
    pool_mask: int | None = None

    def __post_init__(self):
        self.weight = _f32("Embedding.weight", self.weight, 2)
        if self.weight.shape[0] < 1 or self.weight.shape[1] < 1:
            raise ModelFormatError(f"Embedding.weight: empty shape {self.weight.shape}")
        self.mask_zero = bool(self.mask_zero)
        if self.pool_mask is not None:
            self.pool_mask = _pos_int("Embedding.pool_mask", self.pool_mask, 0)
            if self.mask_zero:
                raise ModelFormatError("Embedding: mask_zero and pool_mask together")

    vocab_size = property(lambda self: self.weight.shape[0])
    output_size = property(lambda self: self.weight.shape[1])
    input_size = None

    def tensors(self):
        return {"weight": self.weight}

    def options(self):
        return {"mask_zero": self.mask_zero} | ({"pool_mask": self.pool_mask} if self.pool_mask is not None else {})


@dataclass(eq=False)
class Masking:
    """Keras Masking: a step whose features all equal mask_value is masked. size: features."""
    size: int
    mask_value: float = 0.0

    def __post_init__(self):
        self.size = _pos_int("Masking.size", self.size)
        self.mask_value = _float("Masking.mask_value", self.mask_value)

    input_size = property(lambda self: self.size)
    output_size = property(lambda self: self.size)

    def tensors(self):
        return {}

    def options(self):
        return {"size": self.size, "mask_value": self.mask_value}


@dataclass(eq=False)
class Dense:
    """y = activation(x W^T + b) on the last axis; per step when its input is a sequence.
    carry: input column ranges ((start, stop), ...) copied after y unchanged, in that order (a
    branch of the model's graph: a later layer reads them beside y; converters/graph.py). A
    Recurrent layer that returns sequences carries columns the same way, step by step."""
    weight: np.ndarray
    bias: np.ndarray | None = None
    activation: Act | str = "linear"
    carry: tuple = ()

    def __post_init__(self):
        self.weight = _f32("Dense.weight", self.weight, 2)
        if min(self.weight.shape) < 1:
            raise ModelFormatError(f"Dense.weight: empty shape {self.weight.shape}")
        if self.bias is not None:
            self.bias = _f32("Dense.bias", self.bias, 1)
            _shape("Dense.bias", self.bias, (self.weight.shape[0],))
        self.activation = Act.of(self.activation)
        self.carry = _carry("Dense.carry", self.carry, self.weight.shape[1])
        _even_halves("Dense", self.activation, self.weight.shape[0])

    input_size = property(lambda self: self.weight.shape[1])
    own_size = property(lambda self: self.weight.shape[0])
    output_size = property(lambda self: self.weight.shape[0] + carried(self.carry))

    def tensors(self):
        return {"weight": self.weight} | ({"bias": self.bias} if self.bias is not None else {})

    def options(self):
        return {"activation": self.activation.to_json()} | _carry_json(self.carry)


@dataclass(eq=False)
class Activation:
    """An activation alone on the first `size` input features; carry as Dense's (the input is
    then max(size, the carry's last stop) wide)."""
    size: int
    activation: Act | str = "linear"
    carry: tuple = ()

    def __post_init__(self):
        self.size = _pos_int("Activation.size", self.size)
        self.activation = Act.of(self.activation)
        self.carry = _carry("Activation.carry", self.carry, None)
        _even_halves("Activation", self.activation, self.size)

    input_size = property(lambda self: max([self.size] + [e for _, e in self.carry]))
    own_size = property(lambda self: self.size)
    output_size = property(lambda self: self.size + carried(self.carry))

    def tensors(self):
        return {}

    def options(self):
        return {"size": self.size, "activation": self.activation.to_json()} | _carry_json(self.carry)


def _even_halves(what, act, width):
    if act.kind == "mul_halves" and width % 2:
        raise ModelFormatError(f"{what}: mul_halves over {width} features (an even number: two halves)")


MAX_CARRY = 1024                 # ranges of one layer's carry


def carried(carry):
    """How many columns a carry copies."""
    return sum(e - s for s, e in carry)


def _carry(name, carry, width):
    """carry as a tuple of (start, stop) int pairs, 0 <= start < stop (<= width when known)."""
    try:
        pairs = [tuple(p) for p in carry]
    except TypeError:
        raise ModelFormatError(f"{name}: expected a list of [start, stop] pairs, got {carry!r}") from None
    if len(pairs) > MAX_CARRY:
        raise ModelFormatError(f"{name}: {len(pairs)} ranges (at most {MAX_CARRY})")
    out = []
    for p in pairs:
        if len(p) != 2:
            raise ModelFormatError(f"{name}: {p!r} is not a [start, stop] pair")
        s = _pos_int(f"{name} start", p[0], 0)
        e = _pos_int(f"{name} stop", p[1], 1)
        if e <= s or (width is not None and e > width):
            raise ModelFormatError(f"{name}: range [{s}, {e}) is empty or outside the {width} input features")
        out.append((s, e))
    return tuple(out)


def _carry_json(carry):
    return {"carry": [list(p) for p in carry]} if carry else {}


POOL_KINDS = ("mean", "max", "sum", "attn", "last", "first", "query")
POOL_OVER = ("valid", "steps", "longest")


@dataclass(eq=False)
class Pool:
    """Pooling over time: a sequence of `size` features -> one step of len(kinds) * size, the
    kinds ("mean", "max", "sum") side by side (torch.cat([out.mean(1), out.max(1)[0]], 1) is
    kinds=("mean", "max")). over: which steps count --
      "valid"    a row's steps within its length and not masked (Keras GlobalAveragePooling1D
                 under a mask);
      "steps"    every step of the sequence, padding zeros included (torch on a padded tensor,
                 Keras without a mask, GlobalMaxPooling1D);
      "longest"  the first max(lengths) steps of the batch (torch's pooling of
                 pad_packed_sequence's output), every step without lengths.
    A stream keeps the running pool as a state (width len(kinds) * size + 1: the running sums /
    maxima and the count), so step t gives the pool over steps 0..t. A mean over no step is
    0 / 0 (NaN, as Keras computes for a fully masked row).
    "attn" (attention over time; at most once): the input is then size + 1 features, a score e_t
    first and the values v_t after it (every kind pools the values); per row
    z_t = score_activation(e_t + score_bias[t]) (t the step's position, score_bias (positions,)
    or None), and the pool is sum_t (softmax(z)_t + eps) v_t over the steps that count. Its state
    is 2 * size + 3 wide (sum of w v, sum of v, running max, sum of w, position; engine note in
    src_c/fastrnn.h); a step past the bias's positions is a ShapeError.
    "query" (terms only; format version 6): attention whose query is the row's own final value
    (torch.bmm(out, h_n[-1].unsqueeze(2)) scores, PoolTerm). A model with one cannot stream.
    "last" and "first" (format version 5): the value at a row's last step within its lengths
    (every step without lengths) and at its first step, whatever `over` and masks say: a
    recurrent layer's final state beside pools of its output (torch.cat([h_n[-2], h_n[-1],
    out.mean(1)], 1): a forward direction's final state is its last step, a backward one's its
    first). "first" keeps size + 1 state floats (the value, whether it is taken).
    terms (the general form; format version 4): pools of different columns side by side, as
    torch.cat([attn(h1), attn(h2), h2.mean(1), h2.max(1)[0]], 1) of the Kaggle Quora kernels.
    `size` is then the input's width, each PoolTerm pools its columns [start, stop) (an attn term
    reading its score from column `score`, with its own options), the output is the terms' results
    side by side, and kinds (derived) and the pool-wide attn options stay unset. The simple form is
    the terms of term_list()."""
    size: int
    kinds: tuple = ("mean",)
    over: str = "steps"
    score_activation: Act | str = "linear"
    score_bias: np.ndarray | None = None
    eps: float = 0.0
    terms: tuple | None = None

    def __post_init__(self):
        self.size = _pos_int("Pool.size", self.size)
        if self.terms is not None:
            self._check_terms()
            return
        if isinstance(self.kinds, str):
            self.kinds = (self.kinds,)
        if not isinstance(self.kinds, (list, tuple)) or not 1 <= len(self.kinds) <= 3 \
                or not all(isinstance(k, str) and k in POOL_KINDS and k != "query" for k in self.kinds):
            raise ModelFormatError(f"Pool.kinds: expected 1 to 3 of {POOL_KINDS}, got {self.kinds!r}")
        self.kinds = tuple(self.kinds)
        if not _is_one_of(self.over, POOL_OVER):
            raise ModelFormatError(f"Pool.over: expected one of {POOL_OVER}, got {self.over!r}")
        if self.size * (len(self.kinds) + 2) + 4 > 2**29:
            raise ModelFormatError(f"Pool.size: {self.size} is too large")
        if len(set(self.kinds)) != len(self.kinds):
            raise ModelFormatError(f"Pool.kinds: {self.kinds!r} names a kind twice")
        self.score_activation = Act.of(self.score_activation)
        if self.score_activation.kind in ROW_WISE:
            raise ModelFormatError(f"Pool.score_activation: {self.score_activation.kind} is not elementwise")
        self.eps = _float("Pool.eps", self.eps)
        if self.score_bias is not None:
            self.score_bias = _f32("Pool.score_bias", self.score_bias, 1)
            if not 1 <= len(self.score_bias) <= 2**24:
                raise ModelFormatError(f"Pool.score_bias: {len(self.score_bias)} positions")
        if "attn" not in self.kinds and (self.score_bias is not None or self.eps != 0
                                         or self.score_activation.kind != "linear"):
            raise ModelFormatError("Pool: score_activation, score_bias and eps are options of the attn kind")

    def _check_terms(self):
        if not isinstance(self.terms, (list, tuple)) or not 1 <= len(self.terms) <= POOL_MAX_TERMS \
                or not all(isinstance(t, PoolTerm) for t in self.terms):
            raise ModelFormatError(f"Pool.terms: 1 to {POOL_MAX_TERMS} PoolTerm, got {self.terms!r}")
        if not _is_one_of(self.over, POOL_OVER):
            raise ModelFormatError(f"Pool.over: expected one of {POOL_OVER}, got {self.over!r}")
        self.terms = tuple(self.terms)
        for i, t in enumerate(self.terms):
            if t.stop > self.size or (t.score is not None and t.score >= self.size):
                raise ModelFormatError(f"Pool.terms[{i}]: columns outside the {self.size} input features")
        kinds = tuple(t.kind for t in self.terms)
        if tuple(self.kinds) not in (("mean",), kinds) or self.score_bias is not None or self.eps != 0 \
                or Act.of(self.score_activation).kind != "linear":
            raise ModelFormatError("Pool: with terms, kinds and the attn options are the terms' own")
        self.kinds, self.score_activation = kinds, Act.of("linear")
        if self.size * 3 + sum(t.state_width for t in self.terms) + 4 > 2**29:
            raise ModelFormatError(f"Pool.size: {self.size} is too large")

    def term_list(self):
        """The terms the pool computes: its own, or those of the simple form (an attn score in
        column 0, the values after it)."""
        if self.terms is not None:
            return self.terms
        a = int("attn" in self.kinds)
        return tuple(PoolTerm(k, a, a + self.size, 0, self.score_activation, self.score_bias, self.eps)
                     if k == "attn" else PoolTerm(k, a, a + self.size) for k in self.kinds)

    input_size = property(lambda self: self.size if self.terms is not None else self.size + ("attn" in self.kinds))
    output_size = property(lambda self: self.size * len(self.kinds) if self.terms is None
                           else sum(t.width for t in self.terms))

    def tensors(self):
        if self.terms is not None:
            return {f"score_bias.{i}": t.score_bias for i, t in enumerate(self.terms) if t.score_bias is not None}
        return {"score_bias": self.score_bias} if self.score_bias is not None else {}

    def options(self):
        if self.terms is not None:
            return {"size": self.size, "kinds": list(self.kinds), "over": self.over,
                    "terms": [t.options() for t in self.terms]}
        o = {"size": self.size, "kinds": list(self.kinds), "over": self.over}
        if "attn" in self.kinds:
            o |= {"score_activation": self.score_activation.to_json(), "eps": self.eps}
        return o


POOL_MAX_TERMS = 16


@dataclass(eq=False)
class PoolTerm:
    """One pool of ir.Pool's general form: kind over the input columns [start, stop); an attn
    term reads its score from column `score` and has the attn options of ir.Pool.
    A "query" term is attention whose query q is the row's own final value: its first `split`
    columns at the row's last step within its lengths (every step without lengths), the others
    at its first step (a forward direction's final state, a backward one's: torch's
    torch.cat([h_n[-2], h_n[-1]], 1) of a bidirectional layer is split = width / 2);
    z_t = score_activation(v_t . q) (an affine one scales it), then sum_t softmax(z)_t v_t over
    the steps that count. q needs the whole sequence, so a model with one cannot stream."""
    kind: str
    start: int
    stop: int
    score: int | None = None
    score_activation: Act | str = "linear"
    score_bias: np.ndarray | None = None
    eps: float = 0.0
    split: int | None = None

    def __post_init__(self):
        if not _is_one_of(self.kind, POOL_KINDS):
            raise ModelFormatError(f"PoolTerm.kind: expected one of {POOL_KINDS}, got {self.kind!r}")
        self.start = _pos_int("PoolTerm.start", self.start, 0)
        self.stop = _pos_int("PoolTerm.stop", self.stop, 1)
        if self.stop <= self.start:
            raise ModelFormatError(f"PoolTerm: columns [{self.start}, {self.stop}) are empty")
        self.score_activation = Act.of(self.score_activation)
        if self.score_activation.kind in ROW_WISE:
            raise ModelFormatError(f"PoolTerm.score_activation: {self.score_activation.kind} is not elementwise")
        self.eps = _float("PoolTerm.eps", self.eps)
        if self.kind == "query":
            if self.score is not None or self.score_bias is not None or self.eps != 0:
                raise ModelFormatError("PoolTerm: a query term has no score column, score_bias or eps")
            self.split = _pos_int("PoolTerm.split", self.width if self.split is None else self.split, 0, self.width)
        elif self.split is not None:
            raise ModelFormatError("PoolTerm: split is an option of the query kind")
        if self.kind == "attn":
            if self.score is None:
                raise ModelFormatError("PoolTerm: an attn term needs its score column")
            self.score = _pos_int("PoolTerm.score", self.score, 0)
            if self.score_bias is not None:
                self.score_bias = _f32("PoolTerm.score_bias", self.score_bias, 1)
                if not 1 <= len(self.score_bias) <= 2**24:
                    raise ModelFormatError(f"PoolTerm.score_bias: {len(self.score_bias)} positions")
        elif self.kind != "query" and (self.score is not None or self.score_bias is not None or self.eps != 0
                                       or self.score_activation.kind != "linear"):
            raise ModelFormatError("PoolTerm: score, score_activation, score_bias and eps are options of the attn kind")

    width = property(lambda self: self.stop - self.start)
    state_width = property(lambda self: 2 * self.width + 3 if self.kind in ("attn", "query")
                           else self.width + 1 if self.kind == "first" else self.width)

    def options(self):
        o = {"kind": self.kind, "start": self.start, "stop": self.stop}
        if self.kind == "attn":
            o |= {"score": self.score, "score_activation": self.score_activation.to_json(), "eps": self.eps}
        if self.kind == "query":
            o |= {"split": self.split, "score_activation": self.score_activation.to_json()}
        return o

    @staticmethod
    def from_json(i, o, bias):
        if not isinstance(o, dict):
            raise ModelFormatError(f"pool: terms[{i}] must be an object")
        keys = {"kind", "start", "stop"} | ({"score", "score_activation", "eps"} if o.get("kind") == "attn" else
                                            {"split", "score_activation"} if o.get("kind") == "query" else set())
        if set(o) != keys:
            raise ModelFormatError(f"pool: terms[{i}] must have exactly {sorted(keys)}, got {sorted(o)}")
        types = {"kind": str, "start": int, "stop": int, "score": int, "score_activation": dict, "eps": _NUM,
                 "split": int}
        for k, v in o.items():
            if not isinstance(v, types[k]) or isinstance(v, bool):
                raise ModelFormatError(f"pool: terms[{i}].{k}={v!r} has the wrong type")
        if bias is not None and o["kind"] != "attn":
            raise ModelFormatError(f"pool: a score_bias for terms[{i}], which is not an attn term")
        sa = o.get("score_activation")
        return PoolTerm(o["kind"], o["start"], o["stop"], o.get("score"), "linear" if sa is None else sa,
                        bias, o.get("eps", 0.0), o.get("split"))


def _padding(name, p):
    """"valid" | "same" | "causal" | [before, after] (explicit steps)."""
    if isinstance(p, str) and p in ("valid", "same", "causal"):
        return p
    if isinstance(p, (list, tuple)) and len(p) == 2:
        return [_pos_int(f"{name} padding", p[0], 0, 1 << 20), _pos_int(f"{name} padding", p[1], 0, 1 << 20)]
    raise ModelFormatError(f"{name}.padding: expected 'valid', 'same', 'causal' or [before, after], got {p!r}")


def window_steps(T, window, stride, dilation, padding):
    """(pad_before, pad_after, steps out) of a window over T steps (src_c/engine.c window_steps)."""
    eff = (window - 1) * dilation + 1
    if padding == "valid":
        b = a = 0
    elif padding == "causal":
        b, a = eff - 1, 0
    elif padding == "same":
        n = -(-T // stride)
        total = max((n - 1) * stride + eff - T, 0)
        b, a = total // 2, total - total // 2
    else:
        b, a = padding
    span = T + b + a
    return b, a, (0 if span < eff else (span - eff) // stride + 1)


@dataclass(eq=False)
class Conv1D:
    """A convolution over time in front of (or between) recurrent layers: weight (out, in,
    kernel) (torch's layout), bias (out,) or none, then an activation. Output step t reads input
    steps t*stride - pad_before + j*dilation (zeros outside the sequence). padding: "valid",
    "same" (ceil(T / stride) steps; TensorFlow's split, the extra step after), "causal" (Keras:
    (kernel - 1) * dilation steps before) or [before, after]. It changes the number of steps, so
    a model with one runs whole sequences only (no stream, no lengths)."""
    weight: np.ndarray
    bias: np.ndarray | None = None
    stride: int = 1
    dilation: int = 1
    padding: object = "valid"
    activation: Act | str = "linear"

    def __post_init__(self):
        self.weight = _f32("Conv1D.weight", self.weight, 3)
        if min(self.weight.shape) < 1:
            raise ModelFormatError(f"Conv1D.weight: empty shape {self.weight.shape}")
        if self.bias is not None:
            self.bias = _f32("Conv1D.bias", self.bias, 1)
            _shape("Conv1D.bias", self.bias, (self.weight.shape[0],))
        self.stride = _pos_int("Conv1D.stride", self.stride, 1, 1 << 20)
        self.dilation = _pos_int("Conv1D.dilation", self.dilation, 1, 1 << 20)
        self.padding = _padding("Conv1D", self.padding)
        self.activation = Act.of(self.activation)
        _even_halves("Conv1D", self.activation, self.weight.shape[0])

    input_size = property(lambda self: self.weight.shape[1])
    output_size = property(lambda self: self.weight.shape[0])
    kernel = property(lambda self: self.weight.shape[2])

    def steps(self, T):
        return window_steps(T, self.kernel, self.stride, self.dilation, self.padding)[2]

    def tensors(self):
        return {"weight": self.weight} | ({"bias": self.bias} if self.bias is not None else {})

    def options(self):
        return {"stride": self.stride, "dilation": self.dilation, "padding": self.padding,
                "activation": self.activation.to_json()}


@dataclass(eq=False)
class Pool1D:
    """Max or average pooling over windows of time (MaxPooling1D / AveragePooling1D, torch's
    MaxPool1d / AvgPool1d): `size` features, windows of `window` steps every `stride` (default
    the window), padding "valid", "same" or [before, after]; an average over a window that
    reaches into the padding divides by the window (count_pad: torch's count_include_pad) or by
    the steps inside it (Keras). Changes the number of steps (whole sequences only)."""
    size: int
    kind: str = "max"
    window: int = 2
    stride: int | None = None
    padding: object = "valid"
    count_pad: bool = False

    def __post_init__(self):
        self.size = _pos_int("Pool1D.size", self.size)
        if not _is_one_of(self.kind, ("max", "avg")):
            raise ModelFormatError(f"Pool1D.kind: 'max' or 'avg', got {self.kind!r}")
        self.window = _pos_int("Pool1D.window", self.window, 1, 1 << 20)
        self.stride = self.window if self.stride is None else _pos_int("Pool1D.stride", self.stride, 1, 1 << 20)
        self.padding = _padding("Pool1D", self.padding)
        if self.padding == "causal":
            raise ModelFormatError("Pool1D.padding: 'causal' is for convolutions")
        if not isinstance(self.count_pad, (bool, np.bool_)):
            raise ModelFormatError(f"Pool1D.count_pad: a bool, got {self.count_pad!r}")
        self.count_pad = bool(self.count_pad)

    input_size = property(lambda self: self.size)
    output_size = property(lambda self: self.size)

    def steps(self, T):
        return window_steps(T, self.window, self.stride, 1, self.padding)[2]

    def tensors(self):
        return {}

    def options(self):
        return {"size": self.size, "kind": self.kind, "window": self.window, "stride": self.stride,
                "padding": self.padding, "count_pad": self.count_pad}


@dataclass(eq=False)
class RepeatVector:
    """One step (batch, size) -> n steps of it (batch, n, size): Keras RepeatVector, between an
    encoder that ends on its last step and a decoder. n 0: as many steps as the sequence the
    encoder ended had (torch's h.unsqueeze(1).repeat(1, x.size(1), 1); .frnn format version 7).
    Whole sequences only."""
    size: int
    n: int

    def __post_init__(self):
        self.size = _pos_int("RepeatVector.size", self.size)
        self.n = _pos_int("RepeatVector.n", self.n, 0, 1 << 24)

    input_size = property(lambda self: self.size)
    output_size = property(lambda self: self.size)

    def steps(self, T):
        """Steps after it, T the steps of the sequence before the layer that ended it."""
        return self.n or T

    def tensors(self):
        return {}

    def options(self):
        return {"size": self.size, "n": self.n}


@dataclass(eq=False)
class Attention:
    """Self-attention over the steps of each row (torch's nn.MultiheadAttention(x, x, x), Keras's
    MultiHeadAttention()(x, x) between their projections): the input holds q, k and v side by side
    (3 * size columns, each `heads` heads of size / heads); step i's output per head is
    sum_j softmax_j(scale * q_i . k_j) v_j over the row's steps j (within lengths; j <= i when
    causal); size columns out. scale None: 1 / sqrt(size / heads). A step past a row's length gives
    zeros. Whole sequences only: every step reads the others (format version 8)."""
    size: int
    heads: int = 1
    causal: bool = False
    scale: float | None = None
    extra: int = 0                    # input columns after q, k, v it does not read (a branch's, carried)
    carry: tuple = ()

    def __post_init__(self):
        self.size = _pos_int("Attention.size", self.size)
        self.extra = _pos_int("Attention.extra", self.extra, 0)
        self.heads = _pos_int("Attention.heads", self.heads)
        if self.size % self.heads:
            raise ModelFormatError(f"Attention: size {self.size} is not a multiple of heads {self.heads}")
        self.causal = bool(self.causal)
        if self.scale is None:
            self.scale = 1.0 / math.sqrt(self.size // self.heads)
        self.scale = _float("Attention.scale", self.scale)
        if not self.scale > 0:
            raise ModelFormatError(f"Attention.scale must be a positive finite number, got {self.scale}")
        self.carry = _carry("Attention.carry", self.carry, self.input_size)

    input_size = property(lambda self: 3 * self.size + self.extra)
    own_size = property(lambda self: self.size)
    output_size = property(lambda self: self.size + carried(self.carry))

    def tensors(self):
        return {}

    def options(self):
        return {"size": self.size, "heads": self.heads, "causal": self.causal, "scale": self.scale,
                "extra": self.extra} | _carry_json(self.carry)


@dataclass(eq=False)
class Flatten:
    """A sequence of exactly n steps of `size` features -> one vector of n * size, step after step
    (batch, n * size): Keras Flatten after a layer returning sequences, torch's out.reshape(B, -1)
    before a Linear of n * size inputs. Whole sequences of n steps only (format version 5)."""
    size: int
    n: int

    def __post_init__(self):
        self.size = _pos_int("Flatten.size", self.size)
        self.n = _pos_int("Flatten.n", self.n, 1, 1 << 24)
        if self.size * self.n > 1 << 28:
            raise ModelFormatError(f"Flatten: {self.n} steps of {self.size} features are too many")

    input_size = property(lambda self: self.size)
    output_size = property(lambda self: self.size * self.n)

    def steps(self, T):
        return int(T == self.n)

    def tensors(self):
        return {}

    def options(self):
        return {"size": self.size, "n": self.n}


TIME_CHANGING = (Conv1D, Pool1D, RepeatVector, Flatten)


def _pos_int(name, v, lo=1, hi=2**31 - 1):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ModelFormatError(f"{name}: expected an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def _float(name, v):
    """A finite float, or ModelFormatError (huge JSON integers overflow float())."""
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise ModelFormatError(f"{name}: expected a number, got {v!r}") from None
    if not math.isfinite(f):
        raise ModelFormatError(f"{name}: expected a finite number, got {v!r}")
    return f


@dataclass(eq=False)
class Recurrent:
    """One recurrent layer (rnn | lstm | gru), one or two directions. See the module note for the
    weight layout and equations.

    weights: a list with one dict per direction (forward first) of W_ih, W_hh and optionally
        b_ih + b_hh, P (LSTM peepholes), W_hr (LSTM projection).
    activations: per direction, the cell's activations in ONNX order (rnn: f; lstm: f, g, h;
        gru: f, g); one list is used for both directions. Default: the cell's standard ones.
    clip: bound on every gate pre-activation (ONNX clip), None for none.
    input_forget: LSTM couples the forget gate to the input gate (f = 1 - i).
    linear_before_reset: GRU applies the reset gate after the recurrent matmul (torch; Keras
        reset_after=True) or before it (False; ONNX default, Keras reset_after=False).
    return_sequences: output every step (batch, time, features) or only the last (batch, features).
        The "last" output of a reverse direction is its final state (after it reached step 0).
    masked_output: under a Keras mask (Embedding mask_zero / Masking) a masked step keeps the
        state; its output is the previous output ('carry', Keras) or zeros ('zero').
    """
    cell: str
    weights: list
    direction: str = "forward"
    merge_mode: str = "concat"
    activations: list | None = None
    clip: float | None = None
    input_forget: bool = False
    linear_before_reset: bool = True
    return_sequences: bool = True
    masked_output: str = "carry"
    carry: tuple = ()
    hidden_size: int = field(init=False)
    input_size: int = field(init=False)
    proj_size: int = field(init=False)
    use_bias: bool = field(init=False)
    peepholes: bool = field(init=False)

    def __post_init__(self):
        if not _is_one_of(self.cell, CELLS):
            raise ModelFormatError(f"Recurrent.cell: expected one of {sorted(CELLS)}, got {self.cell!r}")
        if not _is_one_of(self.direction, DIRECTIONS):
            raise ModelFormatError(
                f"Recurrent.direction: expected one of {sorted(DIRECTIONS)}, got {self.direction!r}")
        if not _is_one_of(self.merge_mode, MERGE_MODES):
            raise ModelFormatError(
                f"Recurrent.merge_mode: expected one of {MERGE_MODES}, got {self.merge_mode!r}")
        if not _is_one_of(self.masked_output, ("carry", "zero")):
            raise ModelFormatError(f"Recurrent.masked_output: 'carry' or 'zero', got {self.masked_output!r}")
        gates, nact = CELLS[self.cell]
        ndir = DIRECTIONS[self.direction]
        if isinstance(self.weights, dict):
            self.weights = [self.weights]
        if not isinstance(self.weights, (list, tuple)) or len(self.weights) != ndir:
            raise ModelFormatError(
                f"Recurrent.weights: expected a list of {ndir} dict(s) for direction "
                f"{self.direction!r}, got {type(self.weights).__name__} of length "
                f"{len(self.weights) if hasattr(self.weights, '__len__') else '?'}")
        for d, w in enumerate(self.weights):
            if not isinstance(w, dict):
                raise ModelFormatError(f"Recurrent.weights[{d}]: expected a dict of arrays")
        w0 = self.weights[0]
        for k in ("W_ih", "W_hh"):
            if k not in w0:
                raise ModelFormatError(f"Recurrent.weights[0]: missing {k}")
        W_ih = _f32("W_ih", w0["W_ih"], 2)
        if W_ih.shape[0] % gates or W_ih.shape[0] == 0 or W_ih.shape[1] == 0:
            raise ModelFormatError(
                f"{self.cell} W_ih: rows must be a positive multiple of {gates} gates, got {W_ih.shape}")
        H, I = W_ih.shape[0] // gates, W_ih.shape[1]
        has_proj = "W_hr" in w0
        if has_proj and self.cell != "lstm":
            raise ModelFormatError("W_hr (projection) is an LSTM option only")
        P = _f32("W_hr", w0["W_hr"], 2).shape[0] if has_proj else 0
        if has_proj and P < 1:
            raise ModelFormatError("W_hr: projection size must be >= 1")
        R = P or H
        self.hidden_size, self.input_size, self.proj_size = H, I, P
        self.use_bias = "b_ih" in w0 or "b_hh" in w0
        self.peepholes = "P" in w0
        if self.peepholes and self.cell != "lstm":
            raise ModelFormatError("peepholes (P) are an LSTM option only")
        allowed = {"W_ih", "W_hh", "b_ih", "b_hh", "P", "W_hr", "h0", "c0"}
        norm = []
        for d, w in enumerate(self.weights):
            extra = set(w) - allowed
            if extra:
                raise ModelFormatError(f"Recurrent.weights[{d}]: unknown tensors {sorted(extra)}")
            expect = {"W_ih": (gates * H, I), "W_hh": (gates * H, R)}
            if self.use_bias:
                expect |= {"b_ih": (gates * H,), "b_hh": (gates * H,)}
            if self.peepholes:
                expect["P"] = (3, H)
            if has_proj:
                expect["W_hr"] = (P, H)
            if "h0" in w:
                expect["h0"] = (R,)
            if "c0" in w:
                if self.cell != "lstm":
                    raise ModelFormatError(f"Recurrent.weights[{d}]: c0 (an initial cell state) is an LSTM's only")
                expect["c0"] = (H,)
            if set(w) != set(expect):
                raise ModelFormatError(
                    f"Recurrent.weights[{d}]: expected tensors {sorted(expect)}, got {sorted(w)}")
            nd = {}
            for k, shp in expect.items():
                nd[k] = _f32(f"{self.cell} weights[{d}].{k}", w[k], len(shp))
                _shape(f"{self.cell} weights[{d}].{k}", nd[k], shp)
            norm.append(nd)
        self.weights = norm
        acts = self.activations
        if acts is None:
            acts = [list(DEFAULT_ACTS[self.cell])]
        if not isinstance(acts, (list, tuple)) or not acts:
            raise ModelFormatError("Recurrent.activations: expected a list (per direction) of lists")
        if not isinstance(acts[0], (list, tuple)):
            acts = [acts]
        if len(acts) == 1:
            acts = [acts[0]] * ndir
        if len(acts) != ndir:
            raise ModelFormatError(f"Recurrent.activations: expected {ndir} direction lists, got {len(acts)}")
        out = []
        for d, al in enumerate(acts):
            if not isinstance(al, (list, tuple)) or len(al) != nact:
                raise ModelFormatError(
                    f"Recurrent.activations[{d}]: a {self.cell} takes {nact} activations, got {al!r}")
            al = [Act.of(a) for a in al]
            for a in al:
                if a.kind in ROW_WISE:
                    raise ModelFormatError(f"{a.kind} is not an elementwise activation")
            out.append(al)
        self.activations = out
        if self.clip is not None:
            self.clip = _float("Recurrent.clip", self.clip)
            if not self.clip > 0:
                raise ModelFormatError(f"Recurrent.clip must be a positive finite number, got {self.clip}")
        self.input_forget = bool(self.input_forget)
        if self.input_forget and self.cell != "lstm":
            raise ModelFormatError("input_forget is an LSTM option only")
        self.linear_before_reset = bool(self.linear_before_reset)
        self.return_sequences = bool(self.return_sequences)
        self.carry = _carry("Recurrent.carry", self.carry, self.input_size)
        if self.carry and not self.return_sequences:
            raise ModelFormatError("Recurrent.carry: input columns are carried per step (return_sequences=True)")

    @property
    def num_directions(self):
        return DIRECTIONS[self.direction]

    @property
    def gates(self):
        return CELLS[self.cell][0]

    @property
    def state_size(self):
        """Width of h (proj_size for a projected LSTM, else hidden_size)."""
        return self.proj_size or self.hidden_size

    @property
    def own_size(self):
        n = self.state_size
        return 2 * n if self.direction == "bidirectional" and self.merge_mode == "concat" else n

    @property
    def output_size(self):
        return self.own_size + carried(self.carry)

    def state_shapes(self, batch):
        """Shapes of this layer's states in the native layout: h, then c for an LSTM."""
        nd = self.num_directions
        s = [(nd, batch, self.state_size)]
        if self.cell == "lstm":
            s.append((nd, batch, self.hidden_size))
        return s

    def tensors(self):
        return {f"{d}.{k}": v for d, w in enumerate(self.weights) for k, v in w.items()}

    def options(self):
        return {
            "cell": self.cell, "direction": self.direction, "merge_mode": self.merge_mode,
            "activations": [[a.to_json() for a in al] for al in self.activations],
            "clip": self.clip, "input_forget": self.input_forget,
            "linear_before_reset": self.linear_before_reset,
            "return_sequences": self.return_sequences, "masked_output": self.masked_output,
        } | _carry_json(self.carry)


LAYER_TYPES = {"embedding": Embedding, "masking": Masking, "dense": Dense,
               "activation": Activation, "recurrent": Recurrent, "pool": Pool, "conv1d": Conv1D,
               "pool1d": Pool1D, "repeat": RepeatVector, "flatten": Flatten, "attention": Attention}
TYPE_NAMES = {v: k for k, v in LAYER_TYPES.items()}


_NUM = (int, float)
# the JSON options of each layer type and their types (exactly these keys; see options())
OPTION_TYPES = {
    "embedding": {"mask_zero": bool},
    "masking": {"size": int, "mask_value": _NUM},
    "dense": {"activation": dict},
    "activation": {"size": int, "activation": dict},
    "pool": {"size": int, "kinds": list, "over": str},
    "conv1d": {"stride": int, "dilation": int, "padding": (str, list), "activation": dict},
    "pool1d": {"size": int, "kind": str, "window": int, "stride": int, "padding": (str, list), "count_pad": bool},
    "repeat": {"size": int, "n": int},
    "flatten": {"size": int, "n": int},
    "attention": {"size": int, "heads": int, "causal": bool, "scale": _NUM, "extra": int},
    "recurrent": {"cell": str, "direction": str, "merge_mode": str, "activations": list,
                  "clip": _NUM + (type(None),), "input_forget": bool, "linear_before_reset": bool,
                  "return_sequences": bool, "masked_output": str},
}


# options a layer writes only when they are not their default (a file with one is format version 3)
OPTIONAL_OPTIONS = {"embedding": {"pool_mask": int}, "dense": {"carry": list}, "activation": {"carry": list}, "recurrent": {"carry": list},
                    "attention": {"carry": list},
                    "pool": {"score_activation": dict, "eps": _NUM, "terms": list}}


def layer_from_parts(type_name, options, tensors):
    """Rebuild a layer from its JSON options and named tensors (the inverse of options()/tensors()).
    Every option must be present with its JSON type: a file is never guessed at."""
    cls = LAYER_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise ModelFormatError(f"unknown layer type {type_name!r}")
    if not isinstance(options, dict):
        raise ModelFormatError(f"{type_name}: options must be an object")
    types, extra = OPTION_TYPES[type_name], OPTIONAL_OPTIONS.get(type_name, {})
    if not set(types) <= set(options) <= set(types) | set(extra):
        raise ModelFormatError(f"{type_name}: options must be exactly {sorted(types)}"
                               f"{' (and optionally ' + ', '.join(sorted(extra)) + ')' if extra else ''}, "
                               f"got {sorted(options)}")
    for k, t in (types | extra).items():
        if k not in options:
            continue
        v = options[k]
        if not isinstance(v, t) or (isinstance(v, bool) and t is not bool):
            raise ModelFormatError(f"{type_name}: option {k}={v!r} has the wrong type")
    try:
        if cls is Recurrent:
            o = dict(options)
            if o["direction"] not in DIRECTIONS:
                raise ModelFormatError(f"recurrent: unknown direction {o['direction']!r}")
            nd = DIRECTIONS[o["direction"]]
            w = [{} for _ in range(nd)]
            for name, arr in tensors.items():
                d, _, k = name.partition(".")
                if not d.isdigit() or int(d) >= nd:
                    raise ModelFormatError(f"recurrent: unexpected tensor {name!r}")
                w[int(d)][k] = arr
            return Recurrent(weights=w, **o)
        if cls is Embedding:
            return Embedding(weight=tensors.get("weight"), **options) if set(tensors) == {"weight"} \
                else _bad(type_name, tensors)
        if cls is Pool:
            if "terms" in options:
                o = dict(options)
                n = len(o["terms"])
                if not 1 <= n <= POOL_MAX_TERMS or not set(tensors) <= {f"score_bias.{i}" for i in range(n)}:
                    _bad(type_name, tensors)
                o["terms"] = tuple(PoolTerm.from_json(i, t, tensors.get(f"score_bias.{i}"))
                                   for i, t in enumerate(o["terms"]))
                return Pool(**o)
            if not set(tensors) <= {"score_bias"}:
                _bad(type_name, tensors)
            return Pool(score_bias=tensors.get("score_bias"), **options)
        if cls in (Dense, Conv1D):
            if not set(tensors) <= {"weight", "bias"} or "weight" not in tensors:
                _bad(type_name, tensors)
            return cls(weight=tensors["weight"], bias=tensors.get("bias"), **options)
        if tensors:
            _bad(type_name, tensors)
        return cls(**options)
    except TypeError as e:  # unknown / missing option names
        raise ModelFormatError(f"{type_name}: bad options {sorted(options)}: {e}") from None


def _bad(type_name, tensors):
    raise ModelFormatError(f"{type_name}: unexpected tensors {sorted(tensors)}")


def _is_one_of(value, allowed):
    """value is one of the allowed option names (an array given by mistake in an option's place
    is not: `in` would raise TypeError or compare it element-wise)."""
    return isinstance(value, str) and value in allowed


def check_pipeline(layers, input_size=None):
    """Validate that layers chain; returns (input_kind, input_size, output_size, sequence_out).

    input_kind is 'ids' when the first layer is an Embedding, else 'float'.
    """
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ModelFormatError("a model needs a non-empty list of layers")
    for i, l in enumerate(layers):
        if type(l) not in TYPE_NAMES:
            raise ModelFormatError(f"layer {i}: not a fastrnn layer spec ({type(l).__name__})")
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer))
                                   or input_size < 1):
        raise ModelFormatError(f"input_size must be a positive integer or None, got {input_size!r}")
    first = layers[0]
    kind = "ids" if isinstance(first, Embedding) else "float"
    size = first.output_size if kind == "ids" else first.input_size
    if kind == "float" and input_size is not None and size is not None and input_size != size:
        raise ModelFormatError(f"input_size {input_size} does not match layer 0 input {size}")
    in_size = size if kind == "float" else None
    seq = True
    start = 1 if kind == "ids" else 0
    for i, l in enumerate(layers[start:], start):
        if isinstance(l, Embedding):
            raise ModelFormatError(f"layer {i}: an Embedding can only be the first layer")
        if l.input_size != size:
            raise ModelFormatError(
                f"layer {i} ({TYPE_NAMES[type(l)]}): expects {l.input_size} input features, "
                f"the previous layer gives {size}")
        if isinstance(l, Recurrent):
            if not seq:
                raise ModelFormatError(
                    f"layer {i}: a recurrent layer needs a sequence, but an earlier recurrent "
                    f"layer has return_sequences=False")
            seq = l.return_sequences
        if isinstance(l, Pool):
            if not seq:
                raise ModelFormatError(f"layer {i}: pooling over time needs a sequence, but an earlier "
                                       f"layer ends the sequence")
            seq = False
        if isinstance(l, (Conv1D, Pool1D)) and not seq:
            raise ModelFormatError(f"layer {i}: {TYPE_NAMES[type(l)]} needs a sequence, but an earlier layer "
                                   f"ends the sequence")
        if isinstance(l, RepeatVector):
            if seq:
                raise ModelFormatError(f"layer {i}: RepeatVector repeats one step, but its input is a sequence")
            seq = True
        if isinstance(l, Flatten):
            if not seq:
                raise ModelFormatError(f"layer {i}: Flatten needs a sequence, but an earlier layer ends the sequence")
            seq = False
        if isinstance(l, Masking) and any(isinstance(p, TIME_CHANGING) for p in layers[:i]):
            raise ModelFormatError(f"layer {i}: Masking after a layer that changes the number of steps")

        size = l.output_size
    return kind, in_size, size, seq
