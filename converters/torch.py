"""PyTorch importer: nn.RNN / nn.LSTM / nn.GRU modules, their state_dict files, TorchScript
archives and (with allow_pickle=True) pickled whole modules -> fastrnn ir layers + a signature.

Status: bare recurrent modules in every form. Custom nn.Modules (Embedding -> LSTM -> Linear and
the like, captured from forward) and state_dicts holding more than one recurrent module are not
converted yet: they raise UnsupportedError saying so.

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
import re
import zipfile

import numpy as np

from fastrnn import ir
from fastrnn.errors import ModelFormatError, UnsupportedError

MODES = {"LSTM": ("lstm", "tanh"), "GRU": ("gru", "tanh"), "RNN_TANH": ("rnn", "tanh"),
         "RNN_RELU": ("rnn", "relu")}
_KEY = re.compile(r"^(.*?)(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")


def _torch():
    try:
        import torch
    except ImportError:
        raise UnsupportedError("reading PyTorch models needs torch (pip install torch)") from None
    return torch


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
        if not isinstance(e, __import__("pickle").UnpicklingError) or "Weights only load failed" not in str(e):
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
    return t.detach().to("cpu", torch.float32).contiguous().numpy().copy()


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


def _infer(sd, nonlinearity):
    """A bare recurrent module's options from its state_dict keys and shapes (module note)."""
    groups = {}
    other = []
    for k in sd:
        m = _KEY.match(k) if isinstance(k, str) else None
        if m:
            groups.setdefault(m.group(1), []).append(m)
        else:
            other.append(k)
    if not groups:
        raise ModelFormatError(f"the state_dict has no recurrent weights (weight_ih_l0 ...); keys: "
                               f"{', '.join(map(str, list(sd)[:6]))}")
    if len(groups) > 1 or other:
        raise UnsupportedError(
            f"the state_dict holds more than one recurrent module ({', '.join(repr(p) for p in groups)}"
            + (f"; other tensors: {', '.join(map(str, other[:4]))}" if other else "")
            + "): state_dicts of custom modules (Embedding/Linear around the RNN) are not converted yet; "
              "convert the module itself or a TorchScript archive of a bare RNN")
    prefix, ms = next(iter(groups.items()))
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
        if nonlinearity is not None:
            raise UnsupportedError("convert: nonlinearity= applies to an nn.RNN state_dict only")
        mode = "LSTM" if G == 4 else "GRU"
    return prefix, {"mode": mode, "input_size": int(W_ih.shape[1]), "hidden_size": H, "num_layers": L,
                    "bias": bias, "batch_first": False, "bidirectional": D == 2, "proj_size": proj}


def convert(src, *, example_input=None, batch_first=None, nonlinearity=None, allow_pickle=False):
    """PyTorch module or file -> fastrnn.Model (module note)."""
    from fastrnn import Model
    torch = _torch()
    if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
        obj, kind = load(src, allow_pickle=allow_pickle)
    else:
        obj, kind = src, "module"
    if kind == "state_dict":
        prefix, cfg = _infer(obj, nonlinearity)
        if batch_first is not None:
            cfg["batch_first"] = bool(batch_first)
        sd = obj
    else:
        if not isinstance(obj, (torch.nn.Module, torch.jit.ScriptModule)):
            raise UnsupportedError(f"convert: cannot convert a {type(obj).__name__}")
        if nonlinearity is not None or batch_first is not None:
            raise UnsupportedError("convert: batch_first= and nonlinearity= apply to state_dict files only "
                                   "(a module knows them)")
        cfg = _rnn_config(obj)
        if cfg is None:
            name = getattr(obj, "original_name", None) or type(obj).__name__
            raise UnsupportedError(
                f"convert: a {name} module: custom modules (forward captured with example_input=) "
                f"are not converted yet; bare nn.RNN / nn.LSTM / nn.GRU are")
        sd, prefix = obj.state_dict(), ""
    layers = _from_state(sd, prefix, cfg)
    meta = {"source": "torch", "kind": kind, "module": cfg, "batch_first": bool(cfg["batch_first"])}
    return Model(layers, meta=meta, signature=_signature(layers))


def run_source(src, x, **opts):
    """Run the torch module itself on batch-major x; returns [output] batch-major (for --check)."""
    torch = _torch()
    if isinstance(src, (str, bytes)) or hasattr(src, "__fspath__"):
        obj, kind = load(src, allow_pickle=opts.get("allow_pickle", False))
    else:
        obj, kind = src, "module"
    if kind == "state_dict":
        _, cfg = _infer(obj, opts.get("nonlinearity"))
        cfg["batch_first"] = bool(opts.get("batch_first") or False)
        mode = cfg.pop("mode")
        cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}.get(mode, torch.nn.RNN)
        kw = {k: v for k, v in cfg.items() if k != "proj_size" or mode == "LSTM"}
        if cls is torch.nn.RNN:
            kw["nonlinearity"] = "relu" if mode == "RNN_RELU" else "tanh"
        mod = cls(**kw)
        mod.load_state_dict(obj)
    else:
        mod = obj
    bf = bool(getattr(mod, "batch_first", False))
    xt = torch.from_numpy(np.ascontiguousarray(x))
    training = getattr(mod, "training", False)
    try:
        with torch.no_grad():
            out = mod.eval()(xt if bf else xt.transpose(0, 1))
    finally:
        mod.train(training)
    y = out[0] if isinstance(out, (tuple, list)) else out
    y = y if bf else y.transpose(0, 1)
    return [y.contiguous().numpy()]
