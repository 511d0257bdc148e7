"""PyTorch importer: nn.RNN / nn.LSTM / nn.GRU modules, their state_dict files, TorchScript
archives and (with allow_pickle=True) pickled whole modules -> fastrnn ir layers + a signature.

Every form of every source: bare recurrent modules (here); custom nn.Modules and TorchScript
archives, captured by converters/frontends/torch.py (torch.export, else torch.fx; TorchScript
graphs) and lowered op by op by the importers' shared lowering (converters/graph.py); their
state_dicts, read as a pipeline with options for what the file cannot say (_pipeline;
docs/pytorch.md).

Sources, recognised by content (DESIGN.md section 1, convention 8):
  module             an nn.RNN / nn.LSTM / nn.GRU instance (or a TorchScript module of one).
  TorchScript        a zip with <name>/constants.pkl or <name>/code/: torch.jit.load.
  state_dict         a torch.save zip/pickle that loads with weights_only=True into a mapping of
                     tensors (a checkpoint dict holding one under "state_dict" or
                     "model_state_dict" too).
  pickled module     anything else torch.save wrote: only full unpickling reads it, which runs
                     code from the file; refused with ModelFormatError unless allow_pickle=True.

state_dict rules (the file holds weights, not the architecture; docs/pytorch.md says the same):
  keys <prefix>weight_ih_l<k>[_reverse], weight_hh_l<k>..., bias_ih_l<k>..., bias_hh_l<k>...,
  weight_hr_l<k>... of one module (one common prefix). num_layers = highest k + 1;
  bidirectional if any _reverse key; bias if any bias key; proj_size = rows of weight_hr_l0;
  hidden_size = columns of weight_hr_l0, else of weight_hh_l0; gates = rows of weight_ih_l0 /
  hidden_size: 4 LSTM, 3 GRU, 1 RNN. Not in the file, so given as options: nonlinearity=
  ("tanh", torch's default, or "relu") for an RNN, batch_first= (default False, torch's) for the
  record and for --check.

Framework facts used (canonical layout is torch's own, so weights are copied as they are):
- gate orders LSTM i,f,g,o and GRU r,z,n; GRU is reset-after (linear_before_reset=True).
- layer k > 0 reads the concatenation [forward, backward] of layer k-1 (IR merge "concat").
- forward returns (output, h_n) or (output, (h_n, c_n)); predict returns output (batch-major,
  whatever batch_first says: DESIGN.md section 1); states are h_n (and c_n), each
  (num_layers*directions, batch, H) with direction fastest (index = layer*D + d), and h_n of a
  projected LSTM has proj_size columns.
- dropout between layers is training-only.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile

import numpy as np

from fastrnn import ir
from fastrnn.errors import ModelFormatError, UnsupportedError

from . import ZIP_ERRORS, require
from . import error_line as _line

MODES = {"LSTM": ("lstm", "tanh"), "GRU": ("gru", "tanh"), "RNN_TANH": ("rnn", "tanh"),
         "RNN_RELU": ("rnn", "relu")}
_KEY = re.compile(r"^(.*?)(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


def _torch():
    return require("torch", "reading PyTorch models")


def file_kind(path):
    """'torchscript', 'zip' (a torch.save archive) or 'pickle' (legacy torch.save)."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except ZIP_ERRORS as e:
            raise ModelFormatError(f"{path}: damaged zip archive ({e})") from None
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "zip"
    return "pickle"


def load(path, allow_pickle=False):
    """-> (object, kind): a module, a TorchScript module or a state_dict mapping."""
    torch = _torch()
    path = os.fspath(path)
    kind = file_kind(path)
    if kind == "torchscript":
        try:
            return torch.jit.load(path, map_location="cpu"), "torchscript"
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError and others on bad archives
            raise ModelFormatError(f"{path}: not a loadable TorchScript archive ({_line(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError for a module, others for damage
        if not isinstance(e, pickle.UnpicklingError) or "Weights only load failed" not in str(e):
            raise ModelFormatError(f"{path}: not a readable torch.save file ({_line(e)})") from None
        if not allow_pickle:
            raise ModelFormatError(
                f"{path}: holds a pickled object (e.g. a whole nn.Module), which only full unpickling can "
                f"read, and unpickling runs code from the file. Save model.state_dict() or a TorchScript "
                f"archive instead, or, for a file you trust, pass allow_pickle=True "
                f"(fastrnn-convert --allow-pickle)") from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:  # noqa: BLE001
            raise ModelFormatError(f"{path}: unpickling failed ({_line(e2)})") from None
        return obj, "pickle"
    if isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict"):
            if isinstance(obj.get(k), dict):
                obj = obj[k]
                break
        return obj, "state_dict"
    if isinstance(obj, torch.nn.Module):   # only reachable for modules weights_only accepts
        return obj, "pickle"
    raise ModelFormatError(f"{path}: holds a {type(obj).__name__}, not a module or a state_dict")


def _np(t, name):
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        raise ModelFormatError(f"{name}: expected a tensor, got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise ModelFormatError(f"{name}: expected a float tensor, got {t.dtype}")
    _check_storage(t, name)
    return t.detach().to("cpu", torch.float32).contiguous().numpy().copy()


def _check_storage(t, name):
    """Refuse a tensor whose elements its storage does not hold, before it is copied: a view
    broadcast with stride 0 (zeros(1).expand(2**31, 16): 8 bytes on disk, 128 GiB once made
    contiguous). A weight's elements are distinct; views into a shared flat buffer (cuDNN's
    flattened RNN weights) are smaller than it and pass."""
    if t.is_meta or t.layout != _torch().strided:
        raise ModelFormatError(f"{name}: a {'meta' if t.is_meta else str(t.layout)} tensor holds no weights "
                               f"(a dense tensor was expected)")
    try:
        held = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):      # no storage to speak of
        held = -1
    need = t.numel() * t.element_size()
    if need > max(held, 0) and need > 0:
        raise ModelFormatError(f"{name}: a {tuple(t.shape)} tensor with {held if held >= 0 else 'no'} bytes of "
                               f"storage (an expanded or broadcast view, or not a dense tensor); a weight "
                               f"must hold its own {need} bytes")


# ---------------------------------------------------------------------------------------------
# one recurrent module

def _rnn_config(mod):
    """The constructor options of an nn.RNNBase (or TorchScript module of one), or None."""
    torch = _torch()
    name = type(mod).__name__ if isinstance(mod, torch.nn.RNNBase) else getattr(mod, "original_name", None)
    if name not in ("RNN", "LSTM", "GRU"):
        return None
    keys = ("mode", "input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional",
            "proj_size")
    if not all(hasattr(mod, k) for k in keys):
        cfg = _traced_config(mod)
        if cfg is None:
            raise UnsupportedError(f"a TorchScript {name} whose options cannot be read")
        return cfg
    return {k: getattr(mod, k) for k in keys}


def _traced_config(mod):
    """A traced TorchScript RNN keeps no constructor attributes: read the options from its
    state_dict (as for a state_dict file) and from the aten call in its code,
    torch.<lstm|gru|rnn_tanh|rnn_relu>(input, hx, params, has_biases, num_layers, dropout, train,
    bidirectional, batch_first), whose last argument is batch_first."""
    code = str(getattr(mod, "code", ""))     # a damaged archive fails here: convert() names it
    m = re.search(r"torch\.(lstm|gru|rnn_tanh|rnn_relu)\(", code)
    if not m:
        return None
    depth, args, cur = 1, [], ""
    for ch in code[m.end():]:
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0:
            break
        if ch == "," and depth == 1:
            args.append(cur.strip())
            cur = ""
        else:
            cur += ch
    args.append(cur.strip())
    nl = {"rnn_tanh": "tanh", "rnn_relu": "relu"}.get(m.group(1))
    _, cfg = _infer(mod.state_dict(), nl)
    if args and args[-1] in ("True", "False"):
        cfg["batch_first"] = args[-1] == "True"
    return cfg


def flat_params(sd, prefix, cfg):
    """A torch recurrent module's tensors in ATen's order (per layer and direction W_ih, W_hh,
    (b_ih, b_hh), (W_hr)) as float32 arrays."""
    mode = cfg["mode"]
    if mode not in MODES:
        raise UnsupportedError(f"recurrent mode {mode!r} is not supported")
    L, D = int(cfg["num_layers"]), 2 if cfg["bidirectional"] else 1
    out = []
    for l in range(L):
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            keys = [f"weight_ih{sfx}", f"weight_hh{sfx}"] + ([f"bias_ih{sfx}", f"bias_hh{sfx}"] if cfg["bias"] else []) \
                + ([f"weight_hr{sfx}"] if cfg["proj_size"] else [])
            for key in keys:
                if prefix + key not in sd:
                    raise ModelFormatError(f"missing tensor {prefix + key!r} (a {mode} with "
                                           f"{L} layers, {D} directions)")
                out.append(_np(sd[prefix + key], prefix + key))
    return out


def _from_state(sd, prefix, cfg):
    """ir.Recurrent layers of one torch recurrent module from its tensors."""
    from .graph import torch_layers
    mode = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}.get(cfg["mode"])
    params = flat_params(sd, prefix, cfg)
    try:
        return torch_layers(mode, params, int(cfg["num_layers"]), 2 if cfg["bidirectional"] else 1,
                            bool(cfg["bias"]), int(cfg["proj_size"] or 0))
    except ModelFormatError as e:
        raise ModelFormatError(f"{prefix}{e}") from None


def _signature(layers, first_state=0):
    """torch's h_n (and c_n): every layer's directions stacked, index layer*D + d."""
    h, c, k = [], [], first_state
    for l in layers:
        h += [[k, d] for d in range(l.num_directions)]
        if l.cell == "lstm":
            c += [[k + 1, d] for d in range(l.num_directions)]
        k += 2 if l.cell == "lstm" else 1
    states = [{"parts": h, "stack": True}] + ([{"parts": c, "stack": True}] if c else [])
    return {"outputs": None, "states": states}


def _groups(sd):
    """The state_dict's modules in registration order (the order of their first key):
    [(prefix, "rnn", [key matches]) | (prefix, "other", {name: tensor})]."""
    out, where = [], {}
    for k in sd:
        if not isinstance(k, str):
            raise ModelFormatError(f"the state_dict has a non-string key {k!r}")
        m = _KEY.match(k)
        prefix, kind = (m.group(1), "rnn") if m else (k.rpartition(".")[0] + "." if "." in k else "", "other")
        if (prefix, kind) not in where:
            where[(prefix, kind)] = len(out)
            out.append((prefix, kind, [] if m else {}))
        g = out[where[(prefix, kind)]][2]
        if m:
            g.append(m)
        else:
            g[k[len(prefix):]] = sd[k]
    return out


def _infer(sd, nonlinearity):
    """A bare recurrent module's options from its state_dict keys and shapes (module note)."""
    groups = _groups(sd)
    rnns = [g for g in groups if g[1] == "rnn"]
    if not rnns:
        raise ModelFormatError(f"the state_dict has no recurrent weights (weight_ih_l0 ...); keys: "
                               f"{', '.join(map(str, list(sd)[:6]))}")
    if len(groups) > 1:
        raise UnsupportedError("the state_dict holds more than one module: "
                               + ", ".join(repr(p or "(top)") for p, _, _ in groups))
    prefix, cfg = _infer_rnn(sd, rnns[0][0], rnns[0][2], nonlinearity)
    if nonlinearity is not None and not cfg["mode"].startswith("RNN"):
        raise UnsupportedError("convert: nonlinearity= applies to an nn.RNN state_dict only")
    return prefix, cfg


def _infer_rnn(sd, prefix, ms, nonlinearity):
    """One recurrent module's options from its keys (matches of _KEY) and shapes; nonlinearity
    applies to an nn.RNN (one gate) and is ignored for an LSTM / GRU."""
    L = max(int(m.group(4)) for m in ms) + 1
    D = 2 if any(m.group(5) for m in ms) else 1
    bias = any(m.group(2) == "bias" for m in ms)
    def t(name):
        if prefix + name not in sd:
            raise ModelFormatError(f"missing tensor {prefix + name!r}")
        return sd[prefix + name]
    W_ih, W_hh = t("weight_ih_l0"), t("weight_hh_l0")
    if getattr(W_ih, "ndim", 0) != 2 or getattr(W_hh, "ndim", 0) != 2:
        raise ModelFormatError(f"{prefix}weight_ih_l0 / weight_hh_l0 must be matrices")
    proj = 0
    if prefix + "weight_hr_l0" in sd:
        W_hr = t("weight_hr_l0")
        if getattr(W_hr, "ndim", 0) != 2:
            raise ModelFormatError(f"{prefix}weight_hr_l0 must be a matrix, got shape {tuple(getattr(W_hr, 'shape', ()))}")
        proj, H = int(W_hr.shape[0]), int(W_hr.shape[1])
    else:
        H = int(W_hh.shape[1])
    G = W_ih.shape[0] // H if H else 0
    if H < 1 or W_ih.shape[0] != G * H or G not in (1, 3, 4):
        raise ModelFormatError(f"{prefix}weight_ih_l0 has {W_ih.shape[0]} rows: not 1, 3 or 4 gates of "
                               f"hidden size {H}")
    if G == 1:
        nl = nonlinearity or "tanh"
        if nl not in ("tanh", "relu"):
            raise ModelFormatError(f"nonlinearity must be 'tanh' or 'relu', got {nl!r}")
        mode = "RNN_TANH" if nl == "tanh" else "RNN_RELU"
    else:
        mode = "LSTM" if G == 4 else "GRU"          # nonlinearity= is for nn.RNN: callers check
    return prefix, {"mode": mode, "input_size": int(W_ih.shape[1]), "hidden_size": H, "num_layers": L,
                    "bias": bias, "batch_first": False, "bidirectional": D == 2, "proj_size": proj}


# head_activation= names (a state_dict's head) -> ir activation kinds
ACT_FUNCS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "softmax": "softmax",
             "log_softmax": "log_softmax", "elu": "elu", "selu": "selu", "silu": "silu",
             "softplus": "softplus", "softsign": "softsign", "relu6": "relu6", "leaky_relu": "leaky_relu"}


def _act_kind(name, where):
    kind = ACT_FUNCS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise UnsupportedError(f"{where}: unknown activation {name!r} (one of {', '.join(sorted(ACT_FUNCS))})")
    return kind


def _pipeline(sd, nonlinearity=None, head=None, head_activation=None):
    """A custom module's state_dict -> (modules, ir layers, signature). The rules (module note,
    docs/pytorch.md): modules in registration order; an optional Embedding first (one 2-D
    `weight`); one or more RNN/LSTM/GRU modules, each reading the one before; then Linear layers
    (`weight` (out, in) and optional `bias`). What forward does with them is not in the file:
    head= says whether the Linears act on every step ("sequence") or on the last one ("last": the
    final states, h_n[-1], or torch.cat([h_n[-2], h_n[-1]], 1) for a bidirectional RNN), and
    head_activation= names the activation after the last Linear (or one per Linear, a list).
    modules: [(prefix, "embedding" | "rnn" | "linear", cfg or activation kind)]."""
    groups = _groups(sd)
    if not any(kind == "rnn" for _, kind, _ in groups):
        raise ModelFormatError(f"the state_dict has no recurrent weights (weight_ih_l0 ...); keys: "
                               f"{', '.join(map(str, list(sd)[:6]))}")
    if head not in (None, "last", "sequence"):
        raise UnsupportedError(f"convert: head must be 'last' or 'sequence', got {head!r}")
    mods, layers, states, nstates, width = [], [], [], 0, None
    for i, (prefix, kind, g) in enumerate(groups):
        name = repr(prefix[:-1] or "(top)")
        if kind == "rnn":
            _, cfg = _infer_rnn(sd, prefix, g, nonlinearity)
            if width is not None and width != cfg["input_size"]:
                raise UnsupportedError(f"state_dict module {name} ({cfg['mode']}) reads {cfg['input_size']} "
                                       f"features but the module before it gives {width}; fastrnn needs the "
                                       f"modules registered in the order forward uses them")
            ls = _from_state(sd, prefix, cfg)
            states += _signature(ls, nstates)["states"]
            nstates += sum(2 if l.cell == "lstm" else 1 for l in ls)
            layers += ls
            mods.append((prefix, "rnn", cfg))
            width = ls[-1].output_size
            continue
        extra = sorted(set(g) - {"weight", "bias"})
        if extra or "weight" not in g or getattr(g["weight"], "ndim", 0) != 2:
            raise UnsupportedError(
                f"state_dict module {name} holds {', '.join(sorted(g))}: not an Embedding or a Linear "
                f"(fastrnn reads state_dicts of Embedding -> RNN/LSTM/GRU ... -> Linear ... modules; "
                f"convert the module itself or a TorchScript archive for anything else)")
        W = g["weight"]
        if not layers and "bias" not in g and i + 1 < len(groups) and groups[i + 1][1] == "rnn":
            # an Embedding: (vocab, dim) with dim = the RNN's input size (checked with the RNN)
            layers.append(ir.Embedding(_np(W, prefix + "weight")))
            mods.append((prefix, "embedding", None))
            width = int(W.shape[1])
            continue
        if not layers or any(k == "rnn" for _, k, _ in groups[i + 1:]):
            raise UnsupportedError(f"state_dict module {name} (a Linear) before or between recurrent "
                                   f"modules: its activation is not in the file; convert the module itself")
        if int(W.shape[1]) != width:
            raise UnsupportedError(f"state_dict module {name} (Linear {W.shape[1]} -> {W.shape[0]}) reads "
                                   f"{W.shape[1]} features but the module before it gives {width}")
        b = _np(g["bias"], prefix + "bias") if "bias" in g else None
        layers.append(ir.Dense(_np(W, prefix + "weight"), b))
        mods.append((prefix, "linear", "linear"))
        width = int(W.shape[0])
    if nonlinearity is not None and not any(k == "rnn" and c["mode"].startswith("RNN") for _, k, c in mods):
        raise UnsupportedError("convert: nonlinearity= applies to nn.RNN modules only; this state_dict has none")
    linears = [i for i, m in enumerate(mods) if m[1] == "linear"]
    if linears and head is None:
        raise UnsupportedError(
            f"convert: the state_dict has Linear {mods[linears[0]][0][:-1]!r} after the RNN; whether forward "
            f"applies it to every step or to the last one is not in the file: pass head='sequence' or "
            f"head='last' (fastrnn-convert --head), and head_activation= for what follows it")
    if head_activation is not None and not linears:
        raise UnsupportedError("convert: head_activation= needs a Linear after the RNN in the state_dict")
    acts = head_activation if isinstance(head_activation, (list, tuple)) else \
        [None] * (len(linears) - 1) + [head_activation] if linears else []
    if len(acts) != len(linears):
        raise UnsupportedError(f"convert: head_activation lists {len(acts)} activations for {len(linears)} "
                               f"Linear layers")
    dense = [l for l in layers if isinstance(l, ir.Dense)]
    for i, d, a in zip(linears, dense, acts):
        if a is not None:
            kind = _act_kind(a, "head_activation")
            mods[i] = (mods[i][0], "linear", kind)
            d.activation = ir.Act(kind)
    if head == "last":
        rec = [l for l in layers if isinstance(l, ir.Recurrent)][-1]
        rec.return_sequences = False
    return mods, layers, {"outputs": None, "states": states}



def _is_pipeline(sd, head, head_activation):
    """A state_dict read by _pipeline (a custom module's), not as one bare RNN."""
    return len(_groups(sd)) > 1 or head is not None or head_activation is not None


def convert(src, *, example_input=None, batch_first=None, nonlinearity=None, allow_pickle=False, head=None,
            head_activation=None):
    """PyTorch module or file -> fastrnn.Model (module note)."""
    from fastrnn import Model
    torch = _torch()
    if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
        obj, kind = load(src, allow_pickle=allow_pickle)
    else:
        obj, kind = src, "module"
    if kind == "state_dict":
        if _is_pipeline(obj, head, head_activation):
            mods, layers, sig = _pipeline(obj, nonlinearity, head, head_activation)
            meta = {"source": "torch", "kind": "state_dict", "batch_first": bool(batch_first),
                    "input_layout": "batch_first" if batch_first else "time_major",
                    "head": head or "sequence", "modules": [[p, k, c] for p, k, c in mods]}
            return Model(layers, meta=meta, signature=sig)
        prefix, cfg = _infer(obj, nonlinearity)
        if batch_first is not None:
            cfg["batch_first"] = bool(batch_first)
        return _rnn_model(obj, prefix, cfg, kind)
    if head is not None or head_activation is not None:
        raise UnsupportedError("convert: head= and head_activation= apply to state_dict files only "
                               "(a module's forward says what they say)")
    if not isinstance(obj, (torch.nn.Module, torch.jit.ScriptModule)):
        raise UnsupportedError(f"convert: cannot convert a {type(obj).__name__}")
    if nonlinearity is not None or batch_first is not None:
        raise UnsupportedError("convert: batch_first= and nonlinearity= apply to state_dict files only "
                               "(a module knows them)")
    if kind != "torchscript":
        return _from_module(obj, example_input, kind)
    try:                    # a TorchScript file: libtorch reads a method's code and debug pickle only
        return _from_module(obj, example_input, kind)           # when asked (.code, .graph, str(node))
    except (ModelFormatError, UnsupportedError):                # NotImplementedError is a RuntimeError
        raise
    except (RuntimeError, UnicodeDecodeError, MemoryError) as e:
        raise ModelFormatError(f"{os.fspath(src)}: the TorchScript archive's code cannot be read "
                               f"({_line(e)})") from None


def _from_module(obj, example_input, kind):
    """A module or TorchScript module -> Model: a bare RNN from its weights and options, anything
    else through the frontend's capture of forward."""
    torch = _torch()
    cfg = _rnn_config(obj)
    if cfg is not None:
        return _rnn_model(obj.state_dict(), "", cfg, kind)
    from .frontends import torch as frontend
    if not isinstance(obj, torch.jit.ScriptModule):
        return frontend.convert_module(obj, example_input, kind)
    if not hasattr(obj, "forward"):
        raise UnsupportedError(f"convert: the TorchScript module {type(obj).__name__} has no forward method (a "
                               f"damaged archive, or a module saved without one): nothing to convert")
    return frontend.convert_script(obj, example_input)


def _rnn_model(sd, prefix, cfg, kind):
    from fastrnn import Model
    layers = _from_state(sd, prefix, cfg)
    meta = {"source": "torch", "kind": kind, "module": cfg, "batch_first": bool(cfg["batch_first"])}
    return Model(layers, meta=meta, signature=_signature(layers))


def run_source(src, x, **opts):
    """Run the torch module itself on batch-major x; returns [output] batch-major (for --check).
    opts: those of convert, and meta= (the converted model's, so a custom module is not
    captured again to learn its input and output layouts)."""
    torch = _torch()
    if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
        obj, kind = load(src, allow_pickle=opts.get("allow_pickle", False))
    else:
        obj, kind = src, "module"
    if kind == "state_dict" and _is_pipeline(obj, opts.get("head"), opts.get("head_activation")):
        return [_run_pipeline(obj, x, **opts)]
    if kind == "state_dict":
        _, cfg = _infer(obj, opts.get("nonlinearity"))
        cfg["batch_first"] = bool(opts.get("batch_first") or False)
        mod = _rnn_module(cfg)
        mod.load_state_dict(obj)
    else:
        mod = obj
    training = getattr(mod, "training", False)
    cfg = _rnn_config(mod)
    try:
        with torch.no_grad():
            mod.eval()
            if cfg is not None:
                bf = bool(cfg["batch_first"])
                xt = torch.from_numpy(np.ascontiguousarray(x))
                out = mod(xt if bf else xt.transpose(0, 1))
                y = out[0]
                return [(y if bf else y.transpose(0, 1)).contiguous().numpy()]
            return [_run_custom(mod, x, opts.get("meta") or convert(mod).meta)]
    finally:
        mod.train(training)


def _run_custom(mod, x, meta):
    """A custom module on predict's x, its first output in predict's layout (fastrnn/adapters.py);
    an unbatched module row by row."""
    torch = _torch()
    from fastrnn import adapters
    if meta.get("one_step"):
        return _run_loop(mod, x, meta)
    rows = [x[i:i + 1] for i in range(x.shape[0])] if meta["input_layout"] == "unbatched" else [x]
    ys = []
    for xr in rows:
        args = [torch.from_numpy(a) if isinstance(a, np.ndarray) else tuple(torch.from_numpy(t) for t in a)
                for a in adapters.source_args(meta, xr)]
        out = mod(*args)
        while isinstance(out, (tuple, list)):
            out = out[0]
        ys.append(adapters.to_predict(out.float().numpy(), meta["output_axes"], xr.shape[0], xr.shape[1]))
    return np.concatenate(ys) if len(ys) > 1 else ys[0]


def _run_loop(mod, x, meta):
    """A one-step module driven the way its users drive it: forward(x[:, t], hidden) for every
    step, from init_hidden's zeros, the hidden it returns passed back in."""
    torch = _torch()
    from fastrnn import adapters
    args = [torch.from_numpy(a) if isinstance(a, np.ndarray) else tuple(torch.from_numpy(t) for t in a)
            for a in adapters.source_args(meta, x[:, :1])]
    n = len(meta.get("step_inputs") or [None])      # arguments read per step, then the hidden state
    hidden = args[n] if len(args) > n else None
    ys = []
    for t in range(x.shape[1]):
        xt = np.ascontiguousarray(x[:, t])
        parts = adapters.split_steps(meta, xt) if meta.get("step_inputs") else [xt]
        y, hidden = mod(*(torch.from_numpy(p) for p in parts), hidden)
        while isinstance(y, (tuple, list)):
            y = y[0]
        ys.append(adapters.step_to_predict(y.float().numpy(), meta["output_axes"], x.shape[0]))
    return np.concatenate(ys, axis=1)


def _rnn_module(cfg):
    """An nn.RNN / LSTM / GRU built from a config of _infer_rnn / _rnn_config."""
    torch = _torch()
    cfg = dict(cfg)
    mode = cfg.pop("mode")
    cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(mode, torch.nn.RNN)
    kw = {k: v for k, v in cfg.items() if k != "proj_size" or mode == "LSTM"}
    if cls is torch.nn.RNN:
        kw["nonlinearity"] = "relu" if mode == "RNN_RELU" else "tanh"
    return cls(**kw)


def _run_pipeline(sd, x, *, nonlinearity=None, head=None, head_activation=None, batch_first=None, **_):
    """--check for a custom module's state_dict: rebuild it in torch as _pipeline reads it (each
    module loads its own tensors, strictly), run it on batch-major x."""
    torch = _torch()
    F = torch.nn.functional
    mods, _, _ = _pipeline(sd, nonlinearity, head, head_activation)
    h = torch.from_numpy(np.ascontiguousarray(x))
    bf = bool(batch_first)
    n_rnn, seen = sum(k == "rnn" for _, k, _ in mods), 0
    with torch.no_grad():
        for prefix, kind, c in mods:
            own = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if kind == "embedding":
                m = torch.nn.Embedding(*own["weight"].shape)
            elif kind == "rnn":
                m = _rnn_module(dict(c, batch_first=bf))
            else:
                m = torch.nn.Linear(own["weight"].shape[1], own["weight"].shape[0], bias="bias" in own)
            m.load_state_dict(own, strict=True)
            m.eval()
            if kind == "rnn":
                out, hn = m(h if bf else h.transpose(0, 1))
                seen += 1
                hn = hn[0] if isinstance(hn, tuple) else hn
                if seen == n_rnn and head == "last":
                    h = torch.cat([hn[-2], hn[-1]], 1) if c["bidirectional"] else hn[-1]
                else:
                    h = out if bf else out.transpose(0, 1)     # batch-major between modules
                continue
            h = m(h)
            if kind == "linear" and c != "linear":
                f = getattr(F, c)
                h = f(h, dim=-1) if c in ("softmax", "log_softmax") else f(h)
    return h.contiguous().numpy()
