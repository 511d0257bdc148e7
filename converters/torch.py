"""PyTorch importer: nn.RNN / nn.LSTM / nn.GRU modules, their state_dict files, TorchScript
archives and (with allow_pickle=True) pickled whole modules -> fastrnn ir layers + a signature.

Every form of every source: bare recurrent modules; custom nn.Modules captured from forward
with torch.fx ("custom modules" below); their TorchScript archives, interpreted graph node by
node ("TorchScript archives" below); their state_dicts, read as a pipeline with options for
what the file cannot say (_pipeline; docs/pytorch.md).

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
from fastrnn.errors import FastRNNError, ModelFormatError, UnsupportedError

from . import require

MODES = {"LSTM": ("lstm", "tanh"), "GRU": ("gru", "tanh"), "RNN_TANH": ("rnn", "tanh"),
         "RNN_RELU": ("rnn", "relu")}
_KEY = re.compile(r"^(.*?)(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


def _torch():
    return require("torch", "reading PyTorch models")


def file_kind(path):
    """'torchscript', 'zip' (a torch.save archive) or 'pickle' (legacy torch.save)."""
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError) as e:
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


def _line(e):
    s = str(e).strip().splitlines()
    return f"{type(e).__name__}: {s[0] if s else ''}"


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
    try:
        held = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):      # no storage to speak of: a sparse or meta tensor
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
    code = str(getattr(mod, "code", ""))
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


def _from_state(sd, prefix, cfg):
    """ir.Recurrent layers of one torch recurrent module from its tensors."""
    mode = cfg["mode"]
    if mode not in MODES:
        raise UnsupportedError(f"recurrent mode {mode!r} is not supported")
    cell, act = MODES[mode]
    L, D = int(cfg["num_layers"]), 2 if cfg["bidirectional"] else 1
    layers = []
    for l in range(L):
        ws = []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            w = {"W_ih": f"weight_ih{sfx}", "W_hh": f"weight_hh{sfx}"}
            if cfg["bias"]:
                w |= {"b_ih": f"bias_ih{sfx}", "b_hh": f"bias_hh{sfx}"}
            if cfg["proj_size"]:
                w["W_hr"] = f"weight_hr{sfx}"
            for k, key in w.items():
                if prefix + key not in sd:
                    raise ModelFormatError(f"missing tensor {prefix + key!r} (a {mode} with "
                                           f"{L} layers, {D} directions)")
                w[k] = _np(sd[prefix + key], prefix + key)
            ws.append(w)
        acts = [[act]] if cell == "rnn" else None
        try:
            layers.append(ir.Recurrent(cell, ws, direction="bidirectional" if D == 2 else "forward",
                                       activations=acts, return_sequences=True))
        except ModelFormatError as e:
            raise ModelFormatError(f"{prefix}layer {l}: {e}") from None
    return layers


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
        sd = obj
    else:
        if head is not None or head_activation is not None:
            raise UnsupportedError("convert: head= and head_activation= apply to state_dict files only "
                                   "(a module's forward says what they say)")
        if not isinstance(obj, (torch.nn.Module, torch.jit.ScriptModule)):
            raise UnsupportedError(f"convert: cannot convert a {type(obj).__name__}")
        if nonlinearity is not None or batch_first is not None:
            raise UnsupportedError("convert: batch_first= and nonlinearity= apply to state_dict files only "
                                   "(a module knows them)")
        cfg = _rnn_config(obj)
        if cfg is None:
            if isinstance(obj, torch.jit.ScriptModule):
                return capture_script(obj, example_input)
            model = capture(obj, example_input)
            model.meta["kind"] = kind
            return model
        sd, prefix = obj.state_dict(), ""
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
    cfg = _rnn_config(mod)
    if cfg is not None:
        in_bf = out_bf = bool(cfg["batch_first"])
        extra = ()
    else:                                    # a custom module: what capture() recorded
        meta = opts.get("meta") or convert(mod).meta
        in_bf, out_bf = meta["input_layout"] == "batch_first", meta["output_layout"] == "batch_first"
        extra = (torch.full((x.shape[0],), x.shape[1], dtype=torch.int64),) if meta["takes_lengths"] else ()
    xt = torch.from_numpy(np.ascontiguousarray(x))
    training = getattr(mod, "training", False)
    try:
        with torch.no_grad():
            out = mod.eval()(xt if in_bf else xt.transpose(0, 1), *extra)
    finally:
        mod.train(training)
    y = out[0] if isinstance(out, (tuple, list)) else out
    y = y if out_bf or y.ndim != 3 else y.transpose(0, 1)
    return [y.contiguous().numpy()]


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


# ---------------------------------------------------------------------------------------------
# custom modules: forward captured with torch.fx
#
# Why torch.fx (symbolic tracing): it records forward as a graph of module calls and functions
# without running it, keeps nn.RNN/LSTM/GRU/Embedding/Linear as single nodes (leaf modules)
# whose weights we read directly, and names every op it cannot reduce. TorchScript tracing would
# inline the RNN into aten calls and bake shapes in; torch.export needs example shapes and
# decomposes the same way. example_input, when given, is run through both the module and the
# converted model as a check.
#
# Each fx node gets an abstract value: the pipeline tensor it stands for (a sequence, with the
# meaning of each axis; or a last-step (batch, features) tensor), an RNN's output tuple, its h_n /
# c_n, rows of h_n, the lengths input. Ops that add a layer must act on the current end of the
# pipeline; anything that would branch it, or any op not listed, raises UnsupportedError naming
# the node and the source line.

class _Seq:
    """A (.., .., features) sequence at pipeline end `pos`; axes: labels of the first two axes
    ('B', 'T', or the input's own 'x0'/'x1' before an RNN fixes them). packed: a PackedSequence;
    padded: pad_packed_sequence's output: "longest" (max(lengths) steps long, signature time
    "longest") or "T" (total_length = the input's time length); None otherwise."""
    def __init__(self, pos, axes, width, packed=False, padded=None):
        self.pos, self.axes, self.width, self.packed, self.padded = pos, list(axes), width, packed, padded


class _Last:
    """A (batch, features) tensor at pipeline end `pos`: the last recurrent layer's final step
    (step=None), or the last step of a pipeline that runs every step: out[:, -1] of a
    bidirectional RNN or of a padded sequence; step is then the signature time that takes it
    ("last", or "longest_last" for pad_packed_sequence's max(lengths)-long output)."""
    def __init__(self, pos, width, step=None):
        self.pos, self.width, self.step = pos, width, step


class _Dim:
    """x.size(axis) of the pipeline input: the length of the axis labelled `label`."""
    def __init__(self, label):
        self.label = label


class _Ret:
    def __init__(self, out, states):
        self.out, self.states = out, states


class _HN:
    """h_n / c_n of the torch RNN module whose last IR layer is layers[idx]."""
    def __init__(self, idx, L, D, width, pos):
        self.idx, self.L, self.D, self.width, self.pos = idx, L, D, width, pos


class _Row:
    def __init__(self, hn, layer, d):
        self.hn, self.layer, self.d = hn, layer, d


class _Lengths:
    pass


ACT_FUNCS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "softmax": "softmax",
             "log_softmax": "log_softmax", "elu": "elu", "selu": "selu", "silu": "silu",
             "softplus": "softplus", "softsign": "softsign", "relu6": "relu6", "leaky_relu": "leaky_relu"}
ACT_MODULES = {"Sigmoid": "sigmoid", "Tanh": "tanh", "ReLU": "relu", "Softmax": "softmax",
               "LogSoftmax": "log_softmax", "ELU": "elu", "SELU": "selu", "SiLU": "silu",
               "Softplus": "softplus", "Softsign": "softsign", "ReLU6": "relu6", "LeakyReLU": "leaky_relu"}
IDENTITY_MODULES = {"Dropout", "Identity", "AlphaDropout", "Dropout1d"}


def _act_functions():
    """The activation functions forward may call (torch.*, torch.nn.functional.*) -> ir kind."""
    torch = _torch()
    table = {}
    for n, kind in ACT_FUNCS.items():
        for mod in (torch, torch.nn.functional):
            f = getattr(mod, n, None)
            if f is not None:
                table[f] = kind
    return table


class _Capture:
    def __init__(self):
        self.act_fns = _act_functions()
        self.layers = []
        self.states = []          # torch signature states, per RNN module: h (and c) stacks
        self.nstates = 0
        self.input_layout = None  # 'batch_first' | 'time_major' for the source's input
        self.input_ids = None
        self.takes_lengths = False

    def fail(self, node, why):
        where = getattr(node, "where", "")
        lines = (node.meta.get("stack_trace") or "").strip().splitlines() if hasattr(node, "meta") else []
        user = [i for i, ln in enumerate(lines) if ln.strip().startswith("File ")
                and f"{os.sep}torch{os.sep}" not in ln]
        if user and user[-1] + 1 < len(lines):
            i = user[-1]
            where = f" ({lines[i].strip()}: {lines[i + 1].strip()})"
        raise UnsupportedError(f"convert: {node.op} {node.target!r} (node {node.name}){where}: {why}")

    # -- pipeline helpers -------------------------------------------------------------------
    def _at_end(self, node, v):
        if v.pos != len(self.layers):
            self.fail(node, "reads a tensor from earlier in the model while later layers exist "
                            "(a branch): fastrnn runs a linear pipeline")

    def _width(self, node, v):
        if isinstance(v, (_Seq, _Last)):
            if isinstance(v, _Seq) and v.width is None:
                self.fail(node, "the input's feature size is unknown here")
            return v.width
        self.fail(node, f"expects a tensor of the pipeline, got {type(v).__name__.strip('_')}")

    def _finalise_last(self, node, rows):
        """h_n rows of the last layer of the latest RNN -> its final-step output."""
        hn = rows[0].hn
        if hn.idx != len(self.layers) - 1 or hn.pos != len(self.layers):
            self.fail(node, "uses the final state of an RNN that is not the last layer so far")
        if any(r.layer != hn.L - 1 for r in rows):
            self.fail(node, "uses the final state of a layer below the top of a stacked RNN")
        dirs = [r.d for r in rows]
        if dirs != list(range(hn.D)):
            self.fail(node, "uses h_n rows that are not the top layer's directions in order "
                            "(h_n[-1] for one direction; torch.cat([h_n[-2], h_n[-1]], 1) for two)")
        self.layers[-1].return_sequences = False
        return _Last(len(self.layers), hn.width * hn.D)

    def _as_tensor(self, node, v):
        """A value used as a pipeline tensor (rows of h_n become the final step)."""
        if isinstance(v, _Row):
            return self._finalise_last(node, [v])
        if isinstance(v, _HN) and v.L * v.D == 1:
            return self._finalise_last(node, [_Row(v, 0, 0)])
        return v

    # -- ops ----------------------------------------------------------------------------------
    def module(self, node, mod, args, kwargs):
        torch = _torch()
        nm = type(mod).__name__
        if nm in IDENTITY_MODULES:
            return args[0]
        if isinstance(mod, torch.nn.Embedding):
            if mod.max_norm is not None:
                self.fail(node, "Embedding(max_norm=...) renormalises rows at lookup: not supported")
            return self.embedding(node, args[0], mod.weight, node.name + ".weight")
        if isinstance(mod, torch.nn.RNNBase):
            return self._rnn(node, mod, args, kwargs)
        if isinstance(mod, torch.nn.Linear):
            return self.dense(node, args[0], mod.weight, mod.bias, node.name)
        if nm in ACT_MODULES:
            dim = getattr(mod, "dim", None)
            alpha = getattr(mod, "alpha", None) if nm == "ELU" else getattr(mod, "negative_slope", None)
            return self._act(node, args[0], ACT_MODULES[nm], dim, alpha)
        if nm == "Flatten":
            x = self._as_tensor(node, args[0])
            if isinstance(x, _Last):
                return x
        self.fail(node, f"module {nm} is not supported (fastrnn converts Embedding, RNN/LSTM/GRU, "
                        f"Linear, activations and dropout)")

    def embedding(self, node, x, W, name):
        if not isinstance(x, _Seq) or x.pos != 0 or self.layers:
            self.fail(node, "an Embedding must read the model's input first")
        self.input_ids = True
        self.layers.append(ir.Embedding(_np(W, name)))
        return _Seq(1, x.axes, int(W.shape[1]))

    def dense(self, node, x, W, b, name):
        x = self._as_tensor(node, x)
        self._at_end(node, x)
        if isinstance(x, _Seq) and x.packed:
            self.fail(node, "a Linear on a PackedSequence")
        if getattr(W, "ndim", 0) != 2 or self._width(node, x) != W.shape[1]:
            self.fail(node, f"Linear of weight shape {tuple(getattr(W, 'shape', ()))} on {x.width} features")
        b = _np(b, name + ".bias") if b is not None else None
        self.layers.append(ir.Dense(_np(W, name + ".weight"), b))
        return self._same(x, int(W.shape[0]))

    def _same(self, x, width):
        if isinstance(x, _Seq):
            return _Seq(len(self.layers), x.axes, width, padded=x.padded)
        return _Last(len(self.layers), width, x.step)

    def _act(self, node, x, kind, dim=None, alpha=None):
        x = self._as_tensor(node, x)
        self._at_end(node, x)
        w = self._width(node, x)
        if kind in ("softmax", "log_softmax"):
            nd = 3 if isinstance(x, _Seq) else 2
            if dim is None or dim not in (-1, nd - 1):
                self.fail(node, f"{kind} over dim={dim}: only the feature (last) axis is supported")
        a = ir.Act(kind, alpha) if alpha is not None else ir.Act(kind)   # ir defaults = torch's
        last = self.layers[-1] if self.layers else None
        if isinstance(last, ir.Dense) and last.activation.kind == "linear":
            last.activation = a          # Linear then activation: one Dense layer
        else:
            self.layers.append(ir.Activation(w, a))
        return self._same(x, w)

    def _rnn(self, node, mod, args, kwargs):
        x = args[0] if args else None
        if len(args) > 1 or kwargs:
            self.fail(node, "an RNN called with an initial state: pass initial_state= to predict instead")
        if not isinstance(x, _Seq):
            self.fail(node, "an RNN must read a sequence of the pipeline")
        if x.padded:
            self.fail(node, "an RNN reading pad_packed_sequence's output unpacked runs over the padding; "
                            "pack it again (pack_padded_sequence)")
        self._at_end(node, x)
        cfg = _rnn_config(mod)
        if x.width is None:
            x.width = cfg["input_size"]
        if x.width != cfg["input_size"]:
            self.fail(node, f"{type(mod).__name__} expects {cfg['input_size']} features, gets {x.width}")
        want = ["B", "T"] if cfg["batch_first"] else ["T", "B"]
        if x.axes != want:
            if self.input_layout is None and sorted(x.axes) == ["x0", "x1"]:
                # the first RNN fixes which input axis is batch and which is time
                b_axis = x.axes[want.index("B")]
                self.input_layout = "batch_first" if b_axis == "x0" else "time_major"
            else:
                self.fail(node, f"{type(mod).__name__}(batch_first={cfg['batch_first']}) reads a tensor "
                                f"whose axes are {x.axes} (expected {want})")
        elif self.input_layout is None:
            self.input_layout = "batch_first" if cfg["batch_first"] else "time_major"
        layers = _from_state(mod.state_dict(), "", cfg)
        sig = _signature(layers, self.nstates)["states"]
        self.layers += layers
        self.states += sig
        self.nstates += sum(2 if l.cell == "lstm" else 1 for l in layers)
        D = 2 if cfg["bidirectional"] else 1
        pos = len(self.layers)
        width = layers[-1].state_size
        hn = _HN(len(self.layers) - 1, cfg["num_layers"], D, width, pos)
        states = (hn, _HN(hn.idx, hn.L, D, cfg["hidden_size"], pos)) if cfg["mode"] == "LSTM" else hn
        out = _Seq(pos, want, width * D, packed=x.packed)
        return _Ret(out, states)

    def function(self, node, fn, args, kwargs):
        import operator
        torch = _torch()
        name = getattr(fn, "__name__", str(fn))
        if fn is operator.getitem:
            return self._getitem(node, args[0], args[1])
        if name == "pack_padded_sequence":
            x = args[0]
            if not isinstance(x, _Seq) or not isinstance(args[1] if len(args) > 1 else kwargs.get("lengths"), _Lengths):
                self.fail(node, "pack_padded_sequence of something other than the pipeline and the lengths input")
            bf = kwargs.get("batch_first", args[2] if len(args) > 2 else False)
            if x.axes[0 if bf else 1] not in ("B", "x0", "x1"):
                self.fail(node, "pack_padded_sequence batch_first does not match the tensor")
            return _Seq(x.pos, x.axes, x.width, packed=True)
        if name == "pad_packed_sequence":
            x = args[0]
            if not isinstance(x, _Seq) or not x.packed:
                self.fail(node, "pad_packed_sequence of something that is not a packed RNN output")
            bf = kwargs.get("batch_first", args[1] if len(args) > 1 else False)
            axes = ["B", "T"] if bf else ["T", "B"]
            total = kwargs.get("total_length", args[3] if len(args) > 3 else None)
            if total is not None and not (isinstance(total, _Dim) and total.label in ("T", self._time_label())):
                self.fail(node, "pad_packed_sequence(total_length=...) other than the input's time length")
            # without total_length the output is max(lengths) long: signature time "longest"
            return (_Seq(x.pos, axes, x.width, padded="longest" if total is None else "T"), _Lengths())
        if fn in (torch.cat, torch.concat, getattr(torch, "concatenate", None)):
            parts = args[0] if args else kwargs.get("tensors")
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if isinstance(parts, (list, tuple)) and parts and all(isinstance(p, _Row) for p in parts) \
                    and dim in (1, -1):
                return self._finalise_last(node, list(parts))
            self.fail(node, "torch.cat of tensors other than the top layer's h_n rows")
        if fn in self.act_fns:
            dim = kwargs.get("dim", args[1] if len(args) > 1 and name in ("softmax", "log_softmax") else None)
            alpha = None
            if name == "leaky_relu":
                alpha = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            if name == "elu":
                alpha = kwargs.get("alpha", args[1] if len(args) > 1 else 1.0)
            return self._act(node, args[0], self.act_fns[fn], dim, alpha)
        if name in ("dropout", "alpha_dropout", "feature_alpha_dropout"):
            return args[0]
        self.fail(node, f"function {name} is not supported")

    def method(self, node, name, args, kwargs):
        x = args[0]
        if name in ("contiguous", "float", "detach", "clone", "cpu") or (name == "to" and not kwargs.get("dtype")):
            return x
        if name in ("sigmoid", "tanh", "relu", "softmax", "log_softmax"):
            dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
            return self._act(node, x, name, dim)
        if name in ("permute", "transpose", "swapaxes", "swapdims") and isinstance(x, _Seq):
            if name == "permute":
                perm = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
            else:
                a, b = (args[1], args[2]) if len(args) > 2 else (kwargs.get("dim0"), kwargs.get("dim1"))
                perm = [0, 1, 2]
                perm[a % 3], perm[b % 3] = perm[b % 3], perm[a % 3]
            perm = [p % 3 for p in perm]
            if perm[2] != 2:
                self.fail(node, "a permutation that moves the feature axis")
            x2 = _Seq(x.pos, [x.axes[perm[0]], x.axes[perm[1]]], x.width, x.packed)
            return x2
        if name == "squeeze" and isinstance(x, _HN):
            return self._as_tensor(node, x)
        if name in ("view", "reshape", "flatten") and isinstance(x, _Last):
            return x
        if name == "size" and isinstance(x, _Seq) and len(args) == 2 and args[1] in (0, 1, -2):
            return _Dim(x.axes[args[1] % 3])
        self.fail(node, f"method .{name}() is not supported here")

    def _getitem(self, node, v, idx):
        if isinstance(v, (tuple, list)):
            return v[idx]
        if isinstance(v, _Ret):
            return (v.out, v.states)[idx]
        if isinstance(v, _HN) and isinstance(idx, int):
            n = v.L * v.D
            if not -n <= idx < n:
                self.fail(node, f"h_n has {n} rows")
            i = idx % n
            return _Row(v, i // v.D, i % v.D)
        if isinstance(v, _Seq) and not v.packed:
            idx = idx if isinstance(idx, tuple) else (idx,)
            full = slice(None)
            t_axis = v.axes.index("T") if "T" in v.axes else None
            if t_axis is not None and len(idx) > t_axis and idx[t_axis] == -1 \
                    and all(i == full for j, i in enumerate(idx) if j != t_axis) and len(idx) <= 3:
                return self._last_step(node, v)
        self.fail(node, f"indexing {type(v).__name__.strip('_')} with {idx!r} is not supported "
                        f"(supported: output[:, -1] / output[-1], h_n[k], tuple items)")

    def _last_step(self, node, v):
        """output[:, -1]. Of a unidirectional RNN's own output: its final state (the same thing).
        Otherwise (a bidirectional RNN: forward final state + the backward direction's first
        step; pad_packed_sequence's output: step max(lengths)-1; per-step layers in between) the
        pipeline runs every step and predict takes the last (signature time "last")."""
        self._at_end(node, v)
        last = self.layers[-1] if self.layers else None
        if not any(isinstance(l, ir.Recurrent) for l in self.layers):
            self.fail(node, "output[:, -1] before any RNN")
        if isinstance(last, ir.Recurrent) and last.direction != "bidirectional" and not v.padded:
            last.return_sequences = False
            return _Last(len(self.layers), v.width)
        return _Last(len(self.layers), v.width, "longest_last" if v.padded == "longest" else "last")

    def _time_label(self):
        """The input's own label ('x0'/'x1') of the time axis, once an RNN has fixed it."""
        return {"batch_first": "x1", "time_major": "x0"}.get(self.input_layout)


def capture(module, example_input=None):
    """Convert a custom nn.Module by tracing its forward with torch.fx."""
    import torch.fx as fx
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    try:
        tracer = fx.Tracer(autowrap_functions=(pack_padded_sequence, pad_packed_sequence))
        tracer.record_stack_traces = True    # error messages name the source line
        graph = tracer.trace(module)
    except Exception as e:  # noqa: BLE001 - fx raises many kinds on untraceable forwards
        raise UnsupportedError(f"convert: torch.fx cannot trace {type(module).__name__}.forward "
                               f"({_line(e)}); data-dependent control flow is not supported") from None
    cap = _Capture()
    nodes = list(graph.nodes)
    out_node = next(n for n in nodes if n.op == "output")
    result = out_node.args[0]
    first = result[0] if isinstance(result, (tuple, list)) and result else result
    if not isinstance(first, fx.Node):
        raise UnsupportedError(f"convert: {type(module).__name__}.forward returns a {type(first).__name__}, "
                               f"not a tensor (or a tuple whose first item is one)")
    need = set()

    def mark(a):
        if isinstance(a, fx.Node) and a not in need:
            need.add(a)
            for b in a.all_input_nodes:
                mark(b)
    mark(first)
    env = {}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if not placeholders or len(placeholders) > 2:
        raise UnsupportedError(f"convert: {type(module).__name__}.forward takes {len(placeholders)} inputs; "
                               f"fastrnn models take x (and optionally lengths)")
    for n in nodes:
        if n.op == "placeholder":
            if n is placeholders[0]:
                env[n] = _Seq(0, ["x0", "x1"], None)
            else:
                env[n] = _Lengths()
                cap.takes_lengths = True
            continue
        if n not in need or n.op == "output":
            continue
        args = fx.node.map_arg(n.args, lambda a: env[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a])
        try:
            if n.op == "call_module":
                env[n] = cap.module(n, module.get_submodule(n.target), args, kwargs)
            elif n.op == "call_function":
                env[n] = cap.function(n, n.target, args, kwargs)
            elif n.op == "call_method":
                env[n] = cap.method(n, n.target, args, kwargs)
            else:
                cap.fail(n, "reads a parameter or buffer directly (only module calls are supported)")
        except (IndexError, TypeError, KeyError, AttributeError) as e:
            # e.g. an index past the end of an RNN's (output, h_n) tuple, an argument of a form
            # the interpretation does not expect
            cap.fail(n, f"cannot be interpreted ({_line(e)})")
    return _finish(cap, env[first], type(module).__name__, "module", module, example_input, out_node)


def _finish(cap, value, name, kind, module, example_input, out_node):
    """The Model from a capture whose forward returned `value` (both capture paths)."""
    from fastrnn import Model
    if isinstance(value, _Ret):          # forward returns an RNN's (output, h_n): its first element
        value = value.out
    y = cap._as_tensor(out_node, value)
    if not isinstance(y, (_Seq, _Last)) or y.pos != len(cap.layers) or not cap.layers:
        raise UnsupportedError(f"convert: {name}.forward returns "
                               f"{type(y).__name__.strip('_')}, not the end of a layer pipeline")
    if isinstance(y, _Seq) and y.packed:
        raise UnsupportedError("convert: forward returns a PackedSequence; pad it (pad_packed_sequence)")
    if isinstance(y, _Seq) and y.axes not in (["B", "T"], ["T", "B"]):
        raise UnsupportedError("convert: forward returns its input unchanged")
    meta = {"source": "torch", "kind": kind, "class": name,
            "input_layout": cap.input_layout or "batch_first",
            "output_layout": ("batch_first" if isinstance(y, _Last) or y.axes == ["B", "T"] else "time_major"),
            "takes_lengths": cap.takes_lengths, "batch_first": (cap.input_layout or "batch_first") == "batch_first"}
    time = (y.step if isinstance(y, _Last) else
            "longest" if isinstance(y, _Seq) and y.padded == "longest" else None)
    model = Model(cap.layers, meta=meta, signature={"outputs": None, "states": cap.states, "time": time})
    if example_input is not None:
        _check_example(module, model, example_input)
    return model


def _check_example(module, model, example_input):
    """Run the module and the converted model on example_input; refuse on a mismatch."""
    torch = _torch()
    ex = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    with torch.no_grad():
        training = module.training
        try:
            ref = module.eval()(*ex)
        finally:
            module.train(training)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    x = ex[0].detach().cpu().numpy()
    if model.meta["input_layout"] == "time_major":
        x = np.swapaxes(x, 0, 1)
    lengths = ex[1].detach().cpu().numpy() if len(ex) > 1 else None
    y = model.predict(x, lengths=lengths)
    r = ref.detach().cpu().float().numpy()
    if model.meta["output_layout"] == "time_major" and r.ndim == 3:
        r = np.swapaxes(r, 0, 1)
    if r.shape != y.shape or not np.allclose(y, r, rtol=1e-4, atol=1e-4):
        diff = float(np.abs(y - r).max()) if r.shape == y.shape else f"shapes {y.shape} vs {r.shape}"
        raise UnsupportedError(f"convert: the converted {type(module).__name__} does not reproduce "
                               f"forward(example_input) (difference {diff}); its forward does something "
                               f"fastrnn did not capture")


# ---------------------------------------------------------------------------------------------
# custom modules from TorchScript archives: the scripted or traced graph, interpreted
#
# A TorchScript archive holds no Python class, only graphs: the module's forward and, for each
# submodule, its own. The interpreter walks forward's graph node by node with the same abstract
# values and the same _Capture as torch.fx capture, so both accept the same models:
#   prim::CallMethod on a submodule      an RNN/LSTM/GRU submodule is one _Capture._rnn call;
#                                        any other submodule's graph is interpreted in turn
#   aten::embedding / F.embedding        Embedding;  aten::linear: Linear (Dense)
#   activations, dropout, transpose/permute, slice/select (out[:, -1], h_n[k]), cat,
#   pack_padded_sequence / pad_packed_sequence (scripted; calls to the functions)
#   tuples, lists and constants
# A traced RNN submodule returns what the trace used of (output, h_n[, c_n]): its graph's
# return values are matched to the outputs of its aten::lstm/gru/rnn_* node. Anything else
# (prim::If, prim::Loop, other aten ops) raises UnsupportedError naming the op and the line.

_TS_RNN_OPS = ("aten::lstm", "aten::gru", "aten::rnn_tanh", "aten::rnn_relu")


class _TSNode:
    """A TorchScript node as _Capture.fail names it: op, target, name and where (file, line)."""
    def __init__(self, node, site):
        self.op, self.target = "node", node.kind()
        outs = list(node.outputs())
        self.name = outs[0].debugName() if outs else node.kind()
        m = re.search(r"# (.+):(\d+):\d+\s*$", str(node).splitlines()[0])
        user = m and f"{os.sep}torch{os.sep}" not in m.group(1)
        self.where = f" (File \"{m.group(1)}\", line {m.group(2)})" if user else site
        self.meta = {}

    @classmethod
    def named(cls, op, target):
        self = cls.__new__(cls)
        self.op, self.target, self.name, self.where, self.meta = op, target, target, "", {}
        return self


class _Mod:
    """A submodule, as prim::GetAttr returns it."""
    def __init__(self, mod):
        self.mod = mod


class _Fn:
    """A function constant: name, and its qualified type (torch's own functions are
    __torch__.torch.*, or plain Function before saving)."""
    def __init__(self, name, qual):
        self.__name__, self.qual = name, qual


def _ts_const(node):
    out = node.output()
    if "name" in node.attributeNames() and "value" not in node.attributeNames():
        return _Fn(node.s("name"), str(out.type()))
    return out.toIValue()


def _full_slice(args):
    _, _, start, end, step = (list(args) + [None] * 5)[:5]
    return start in (None, 0) and (end is None or end >= 2**62) and step in (None, 1)


class _ScriptCapture:
    def __init__(self, cap):
        self.cap = cap

    def run(self, graph, inputs, site=""):
        """Interpret `graph` on abstract `inputs`; site: where its caller is (for errors)."""
        env = dict(zip(graph.inputs(), inputs))
        self.block(graph.nodes(), env, site)
        ret = [env[v] for v in graph.return_node().inputs()]
        return ret[0] if len(ret) == 1 else tuple(ret)

    def block(self, nodes, env, site):
        for n in nodes:
            kind = n.kind()
            node = _TSNode(n, site)
            outs = list(n.outputs())
            if kind == "prim::Constant":
                env[outs[0]] = _ts_const(n)
                continue
            try:
                args = [env[v] for v in n.inputs()]
            except KeyError:
                self.cap.fail(node, "reads a value from an enclosing block")
            if kind == "prim::If" and isinstance(args[0], bool):
                # a condition known when converting (a module attribute, a constant): its branch
                b = list(n.blocks())[0 if args[0] else 1]
                self.block(b.nodes(), env, site)
                env.update(zip(outs, [env[v] for v in b.returnNode().inputs()]))
                continue
            try:
                res = self.node(node, n, kind, args, site)
            except FastRNNError:
                raise
            except (IndexError, TypeError, KeyError, AttributeError, ValueError, RuntimeError) as e:
                self.cap.fail(node, f"cannot be interpreted ({_line(e)})")
            if len(outs) == 1:
                env[outs[0]] = res
            else:
                if not isinstance(res, (tuple, list)) or len(res) != len(outs):
                    self.cap.fail(node, f"gives {len(outs)} values where fastrnn has "
                                        f"{type(res).__name__.strip('_')}")
                env.update(zip(outs, res))

    def node(self, node, n, kind, a, site):
        cap, torch = self.cap, _torch()
        op = kind.split("::", 1)[1]
        if kind == "prim::GetAttr":
            parent = a[0]
            if not isinstance(parent, _Mod):
                cap.fail(node, "an attribute of something that is not a module")
            v = getattr(parent.mod, n.s("name"))
            if isinstance(v, torch.nn.Module):
                return _Mod(v)
            return v                               # a parameter, or a plain attribute (training, p)
        if kind == "prim::CallMethod":
            return self.call(node, n, a, site)
        if kind == "prim::CallFunction":
            return self.function(node, a[0], a[1:])
        if kind in ("prim::TupleConstruct", "prim::ListConstruct"):
            return tuple(a) if kind == "prim::TupleConstruct" else list(a)
        if kind in ("prim::TupleUnpack", "prim::ListUnpack"):
            v = a[0]
            return (v.out, v.states) if isinstance(v, _Ret) else tuple(v)
        if kind in ("prim::TupleIndex", "aten::__getitem__"):
            return cap._getitem(node, a[0], a[1])
        if kind in ("prim::If", "prim::Loop"):
            cap.fail(node, "data-dependent control flow is not supported")
        if kind == "aten::embedding":             # traced: (weight, input, padding_idx, ...)
            return cap.embedding(node, a[1], a[0], node.name)
        if kind == "aten::linear":
            return cap.dense(node, a[0], a[1], a[2] if len(a) > 2 else None, node.name)
        if op in ("dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout",
                  "contiguous", "detach", "clone", "cpu", "to"):
            return a[0]
        if op in ACT_FUNCS and kind.startswith("aten::"):
            return self.act(node, op, a)
        if kind == "aten::slice" and _full_slice(a):
            return a[0]
        if kind == "aten::select":
            x, dim, i = a
            if isinstance(x, _HN) and dim == 0:
                return cap._getitem(node, x, i)
            if isinstance(x, _Seq) and dim in (0, 1):
                return cap._getitem(node, x, (slice(None),) * dim + (i,))
        if kind == "aten::cat":
            return cap.function(node, torch.cat, (a[0], a[1]), {})
        if op in ("transpose", "permute", "squeeze", "view", "reshape", "flatten", "size") and kind.startswith("aten::"):
            return cap.method(node, op, a, {})
        if kind in ("aten::sort", "aten::_pack_padded_sequence", "aten::_pad_packed_sequence"):
            cap.fail(node, "a traced pack_padded_sequence (the trace records its sorting and packing as "
                           "tensor ops, for the example's lengths): save torch.jit.script(module) instead, "
                           "or convert the module itself")
        cap.fail(node, "is not supported (fastrnn reads Embedding, RNN/LSTM/GRU, Linear, activations, "
                       "dropout, the last step and pack/pad)")

    def act(self, node, op, a):
        cap = self.cap
        dim = a[1] if op in ("softmax", "log_softmax") and len(a) > 1 else None
        alpha = None
        if op == "leaky_relu":
            alpha = a[1] if len(a) > 1 else 0.01
        if op == "elu":
            if len(a) > 2 and (a[2] != 1 or (len(a) > 3 and a[3] != 1)):
                cap.fail(node, "elu with scale or input_scale other than 1")
            alpha = a[1] if len(a) > 1 else 1.0
        return cap._act(node, a[0], ACT_FUNCS[op], dim, alpha)

    def function(self, node, fn, a):
        """A scripted call of a Python function (F.log_softmax, pack_padded_sequence, ...)."""
        cap = self.cap
        if not isinstance(fn, _Fn) or not (fn.qual == "Function" or fn.qual.startswith("__torch__.torch.")):
            cap.fail(node, f"a call of {getattr(fn, 'qual', fn)!r}: not one of torch's own functions")
        name = fn.__name__
        if name in ("pack_padded_sequence", "pad_packed_sequence"):
            return cap.function(node, fn, tuple(a), {})
        if name == "embedding":                    # F.embedding(input, weight, padding_idx, max_norm, ...)
            if len(a) > 3 and a[3] is not None:
                cap.fail(node, "Embedding(max_norm=...) renormalises rows at lookup: not supported")
            return cap.embedding(node, a[0], a[1], node.name)
        if name == "linear":
            return cap.dense(node, a[0], a[1], a[2] if len(a) > 2 else None, node.name)
        if name in ("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d"):
            return a[0]
        if name in ACT_FUNCS:                      # F.softmax(input, dim, _stacklevel, dtype), ...
            return self.act(node, name, a)
        cap.fail(node, f"a call of {name or fn!r} is not supported")

    def call(self, node, n, a, site):
        cap = self.cap
        sub = a[0]
        if not isinstance(sub, _Mod):
            cap.fail(node, "a method of something that is not a submodule")
        here = node.where or site
        mod = sub.mod
        if _rnn_config(mod) is not None:
            args = list(a[1:])
            while args and args[-1] is None:     # scripted: forward(input, hx=None)
                args.pop()
            ret = cap._rnn(node, mod, args, {})
            if hasattr(mod, "mode"):              # scripted: forward returns (output, h_n[, c_n])
                return ret
            g = getattr(mod, n.s("name")).graph
            rnn = [m for m in g.nodes() if m.kind() in _TS_RNN_OPS]
            if not rnn:
                cap.fail(node, f"a traced {mod.original_name} without its aten call")
            outs = list(rnn[0].outputs())         # traced: (output, h_n[, c_n]) of the aten call
            vals = [ret.out] + (list(ret.states) if isinstance(ret.states, tuple) else [ret.states])

            def pick(v):
                if v in outs:
                    return vals[outs.index(v)]
                p = v.node()
                if p.kind() == "prim::TupleConstruct":
                    return tuple(pick(i) for i in p.inputs())
                cap.fail(node, f"a traced {mod.original_name} whose forward returns {p.kind()}")
            r = [pick(v) for v in g.return_node().inputs()]
            return r[0] if len(r) == 1 else tuple(r)
        method = getattr(mod, n.s("name"), None)
        if method is None or not hasattr(method, "graph"):
            cap.fail(node, f"calls {n.s('name')} of {getattr(mod, 'original_name', type(mod).__name__)}")
        return self.run(method.graph, [sub] + list(a[1:]), here)


def capture_script(module, example_input=None):
    """Convert a TorchScript module of a custom nn.Module by interpreting its graph."""
    cap = _Capture()
    graph = module.forward.graph
    ins = list(graph.inputs())[1:]
    name = getattr(module, "original_name", None) or type(module).__name__
    if not ins or len(ins) > 2:
        raise UnsupportedError(f"convert: TorchScript {name}.forward takes {len(ins)} inputs; "
                               f"fastrnn models take x (and optionally lengths)")
    vals = [_Mod(module), _Seq(0, ["x0", "x1"], None)]
    if len(ins) == 2:
        vals.append(_Lengths())
        cap.takes_lengths = True
    out = _ScriptCapture(cap).run(graph, vals)
    first = out[0] if isinstance(out, tuple) and out else out
    return _finish(cap, first, name, "torchscript", module, example_input, _TSNode.named("return", name))
