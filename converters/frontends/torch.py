"""PyTorch frontends: a custom nn.Module or TorchScript graph -> canonical op calls on the shared
lowering (converters/graph.py) -> a fastrnn Model.

Captures, in the order they are tried for a module (docs/pytorch.md says which each model takes;
meta["capture"] records it):
  torch.export   forward run on the example input with symbolic sizes (torch.export.export,
                 non-strict, every input dimension Dim.AUTO): ATen ops only, Python resolved --
                 len(x), x.size(0) arithmetic, devices, Variable, optional arguments, dotted
                 calls such as nn.utils.rnn.* -- an RNN module is one aten.lstm/gru/rnn_* node
                 with its weights. It cannot capture pack_padded_sequence (data-dependent shapes).
  torch.fx       symbolic tracing, when torch.export fails: module calls (nn.LSTM, nn.Linear, ...)
                 stay single nodes whose weights are read from the module, pack_padded_sequence
                 and pad_packed_sequence are kept whole (autowrap). It needs no example, but
                 cannot see through len() or data-dependent Python.
  TorchScript    an archive (torch.jit.script or trace): its graph, interpreted node by node;
                 a scripted RNN submodule (prim::CallMethod) is one recurrent op read from the
                 submodule, a traced one is its aten::lstm node.
Each translates its nodes to the canonical names (ATen's) and argument order, so every op is
handled once, in converters/graph.py, whichever capture saw it.

The example input is what the code passes to forward: a tensor, or the argument list
([ids, lengths], [x, model.init_hidden(B)]); NumPy arrays are accepted. Without one, an
example is made from the module's first layer (ids for an Embedding, floats for an RNN or a
Linear) and, for further required arguments, full lengths or the module's init_hidden(B).
"""
from __future__ import annotations

import inspect
import operator
import os
import re

import numpy as np

from fastrnn.errors import FastRNNError, UnsupportedError

from .. import error_line
from .. import graph as G
from ..graph import Input, Lowering, PT

EX_B, EX_T = 3, 5          # the sizes of a made-up example (distinct, and unlike most layer sizes)


def _torch():
    from ..torch import _torch as t
    return t()


def _np(t, name):
    from ..torch import _np as conv
    return conv(t, name)


def _const(low, t, name):
    """A tensor met in the graph -> a NumPy constant (float32 for floats). The same tensor gives
    the same array every time (a cell called in a loop is recognised by its weights' identity)."""
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        return t
    cache = getattr(low, "const_cache", None)
    if cache is not None and id(t) in cache and cache[id(t)][0] is t:
        return cache[id(t)][1]
    if t.dtype.is_floating_point:
        a = _np(t, name)
    else:
        from ..torch import _check_storage
        _check_storage(t, name)
        a = t.detach().cpu().numpy().copy()
    if cache is not None:
        cache[id(t)] = (t, a)
    return a


# ---------------------------------------------------------------------------------------------
# example inputs

def example_args(module, example_input):
    """-> (tuple of forward's arguments as tensors, made: bool)."""
    if example_input is None:
        return _made_example(module), True
    ex = list(example_input) if isinstance(example_input, (list, tuple)) else [example_input]
    return tuple(_as_tensor(a) for a in ex), False


def _as_tensor(a):
    torch = _torch()
    if isinstance(a, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.long() if a.dtype.kind in "iu" else t.float()
    if isinstance(a, (list, tuple)):
        return type(a)(_as_tensor(x) for x in a)
    return a


def _made_example(module):
    torch = _torch()
    g = torch.Generator().manual_seed(0)
    first = None
    for _, m in module.named_modules():
        if isinstance(m, (torch.nn.Embedding, torch.nn.RNNBase, torch.nn.Linear, torch.nn.RNNCellBase)):
            first = m
            break
    if isinstance(first, torch.nn.Embedding):
        x = torch.randint(1, max(first.num_embeddings, 2), (EX_B, EX_T), generator=g)
    elif isinstance(first, torch.nn.RNNBase):
        shape = (EX_B, EX_T) if first.batch_first else (EX_T, EX_B)
        x = torch.randn(*shape, first.input_size, generator=g)
    elif isinstance(first, (torch.nn.Linear, torch.nn.RNNCellBase)):
        x = torch.randn(EX_B, EX_T, getattr(first, "in_features", getattr(first, "input_size", 1)), generator=g)
    else:
        raise UnsupportedError(f"convert: {type(module).__name__} has no Embedding, RNN/LSTM/GRU or Linear "
                               f"to run; nothing to convert")
    args = [x]
    try:
        params = list(inspect.signature(module.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    for p in params:
        if p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            break
        name = p.name.lower()
        if "len" in name:
            args.append(torch.full((EX_B,), EX_T, dtype=torch.int64))
        elif hasattr(module, "init_hidden") or hasattr(module, "initHidden"):
            init = getattr(module, "init_hidden", None) or getattr(module, "initHidden")
            try:
                args.append(init(EX_B))
            except TypeError:
                args.append(init())
        else:
            raise UnsupportedError(f"convert: {type(module).__name__}.forward takes {p.name!r} as well; pass "
                                   f"example_input=[x, {p.name}] (what your code passes to forward)")
    return tuple(args)


# ---------------------------------------------------------------------------------------------
# the common part: inputs, outputs, the Model

def bind_inputs(low, leaves):
    """Abstract values of forward's flattened tensor arguments: the first is the sequence, the
    others Inputs until their use says what they are."""
    torch = _torch()
    vals = []
    for i, (name, t) in enumerate(leaves):
        if not isinstance(t, torch.Tensor):
            vals.append(t)
            continue
        if not vals or not any(isinstance(v, PT) for v in vals):
            shape = tuple(t.shape)
            ids = not t.dtype.is_floating_point
            n = len(shape) - (0 if ids or len(shape) == 1 else 1)
            if n < 1 or n > 2:
                raise UnsupportedError(f"convert: forward's input {name!r} has shape {shape}: expected "
                                       f"(batch, time{'' if ids else ', features'}) or one sequence "
                                       f"(time{'' if ids else ', features'})")
            labels = ("x0", "x1")[:n]
            for l, s in zip(labels, shape):
                low.xsizes[l] = s
            if not ids and len(shape) == 1:          # one series, no feature axis (graph.py)
                vals.append(PT(0, labels, 1))
                low.series = True
            else:
                vals.append(PT(0, labels + (() if ids else ("F",)), None if ids else shape[-1]))
            low.input_ids = ids
            low.x_leaf, low.x_name = i, name
        else:
            vals.append(Input(i, name, tuple(t.shape)))
    return vals


def finish(low, result, name, kind, capture, module=None, example=None, leaves=None):
    """The Model from the lowered forward and what it returned."""
    from fastrnn import Model
    from ..passes import cut_early, fold
    from fastrnn import adapters
    if isinstance(result, dict):
        low.errors.append("return: forward returns a dict; fastrnn models return a tensor (or a tuple whose "
                          "first item is one)")
    first = result
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    y, state_out, split = None, None, ()
    if isinstance(first, G.FeatSplit):       # self.fc(h).view(B, horizon, F): predict reshapes y so
        first, split = first.x, first.ks
    if isinstance(first, G.HN) and not low.errors:
        state_out = _state_output(low, first)
        if state_out is not None:
            if first.rows is not None:
                low.errors.append("return: forward's output has its rows in the order of their lengths (a "
                                  "pack_padded_sequence sort that is not undone)")
            first = PT(len(low.layers), ("B", "T", "F"), None)     # the engine's y, unused
    if not low.errors and not isinstance(first, G.Bad) and state_out is None:
        try:
            if low.one_step and G.cells.is_step(first) and isinstance(result, (tuple, list)) \
                    and len(result) > 1 and G.cells.is_step(result[1]):
                first = G.cells.one_step_linear(low, first, result[1]) or first    # the char-RNN step
            y = low.tensor(first, "a tensor computed by the layers")
            low.check_rows(y, "forward's output")
            if not low.layers:
                low.fail("forward returns its input unchanged")
            y = low.whole(y)
            if y.packed:
                low.fail("forward returns a PackedSequence; pad it (pad_packed_sequence)")
        except G.REFUSALS as e:
            low.errors.append(f"return: {G.why(e)}")
    low.raise_errors()
    if state_out is not None:
        return _finish_states(low, state_out, name, kind, capture, module, example)
    if y is None:
        raise UnsupportedError(f"convert: {name}.forward returns {G._what(first)}, not a tensor of the pipeline")
    layers, head = G.split_head(low, fold)
    out_axes = [low.lab(a) for a in y.axes]
    if split:
        if out_axes[-1] != "F":
            raise UnsupportedError(f"convert: {name}: features split (view(B, k, -1)) of an output whose last "
                                   f"axis is not its features")
        out_axes = out_axes[:-1] + [f"#{k}" for k in split] + ["F"]
    if low.unbatched:
        layout = "unbatched"
    else:
        layout = "batch_first" if low.bind.get("x0") == "B" else "time_major"
    time = {"final": None, None: "longest" if y.padded == "longest" else None}.get(y.time, y.time)
    if isinstance(time, tuple):          # ("tail", k): out[:, -k:]
        time = {"tail": time[1]}
    layers, time = cut_early(layers, time)
    meta = {"source": "torch", "kind": kind, "class": name, "capture": capture,
            "input_layout": layout, "input_axes": _input_axes(low),
            "output_axes": adapters.axes_json(out_axes), "takes_lengths": bool(low.takes_lengths),
            "state_args": _state_args(low, example),
            "batch_first": layout != "time_major",
            "output_layout": "time_major" if out_axes[:2] == ["T", "B"] else "batch_first"}
    if low.one_step:
        meta["one_step"] = True          # forward is one step: predict and streams run the loop
        meta["input_layout"] = "one_step"
        if low.step_inputs:              # x_t is several arguments side by side (cells.one_step_linear)
            meta["step_inputs"] = [{"arg": i, "name": re.sub(r"\.\d+$", "", n), "width": w}   # TorchScript's input.1
                                   for i, n, w in low.step_inputs]
    if low.static_inputs:                # per-row features beside the sequence, in the input's columns
        meta["step_inputs"] = [{"arg": low.x_leaf, "name": re.sub(r"\.\d+$", "", low.x_name), "width": low.static_base}] + \
            [{"arg": i, "name": re.sub(r"\.\d+$", "", n), "width": w, "static": True} for i, n, w in low.static_inputs]
    paxes = adapters.predict_axes(meta["output_axes"])
    canonical = ["B", "T", "F"] if "T" in paxes else ["B", "F"]
    if low.one_step:
        paxes = canonical = ["B", "T", "F"]
    def build():
        m = Model(layers, meta=meta, signature={"outputs": None, "states": low.states, "time": time,
                                                "axes": None if paxes == canonical else paxes, "head": head,
                                                "lengths_pad": low.lengths_pad})
        if getattr(low, "quantized", False):
            m.meta["quantized_source"] = "int8 weights dequantized to fp32"
            m._quantized_source = True
        return m
    model = build()
    if module is not None and example is not None:
        # also on a larger input: a trace fixes every size, and torch.export the time axis of every
        # nn.LSTM / GRU / RNN (x.size(1) is then the example's number in the graph)
        grown = capture in ("torch.jit.trace", "torch.export")
        try:
            check_example(module, model, example, other_size=grown)
        except UnsupportedError as e:
            if not (grown and low.guessed_repeats):
                raise
            model = settle_repeats(low, module, example, build, e)
    return model


def settle_repeats(low, module, example, build, first):
    """A repeat by the example's own number of steps (graph._tile: the capture fixed x.size(1))
    was read as repeating the input's steps; the module run on a larger input said otherwise:
    a constant of that value, if that reproduces it."""
    for layer, n in low.guessed_repeats:
        layer.n = n
    model = build()
    try:
        check_example(module, model, example, other_size=True)
    except UnsupportedError:
        raise first from None
    return model


def _state_output(low, v):
    """forward returning h_n / c_n (rows of) first: a signature states output, unless the rows
    are the last layer's final step (then the pipeline's y is that, as for any h_n[-1])."""
    axes = tuple(low.lab(a) for a in v.axes)
    if v.kind == "h" and v.rnn == len(low.rnns) - 1 and v.pos == len(low.layers) and axes in (("B", "F"),):
        r = low.rnns[v.rnn]
        top = [(r.top, d) for d in range(r.D)]
        if list(v.parts) == top[:1] and r.D == 1:
            return None
    if axes == ("S", "B", "F"):
        return {"kind": "states", "parts": [list(p) for p in v.parts]}
    if axes == ("B", "F") and len(v.parts) == 1:
        k, d = v.parts[0]
        return {"kind": "state", "state": k, "dir": d}
    return None


def _finish_states(low, out, name, kind, capture, module, example):
    """A model whose predict returns native states (forward returns h_n first)."""
    from fastrnn import Model
    from ..passes import fold
    layout = "batch_first" if low.bind.get("x0") == "B" else "time_major"
    axes = ["S", "B", "F"] if out["kind"] == "states" else ["B", "F"]
    meta = {"source": "torch", "kind": kind, "class": name, "capture": capture, "input_layout": layout,
            "input_axes": _input_axes(low),
            "output_axes": axes, "output_is_state": True, "takes_lengths": bool(low.takes_lengths),
            "state_args": _state_args(low, example),
            "batch_first": layout != "time_major", "output_layout": "state"}
    model = Model(fold(low.layers), meta=meta, signature={"outputs": [out], "states": low.states})
    if module is not None and example is not None:
        check_example(module, model, example)
    return model


def _input_axes(low):
    """meta input_axes: forward's sequence argument's axes in its own order (batch, time, and the
    features unless it has none: ids, a series; (B, F, T) for a spectrogram)."""
    from fastrnn import adapters
    axes = [low.lab(a) for a in ("x0", "x1") if a in low.xsizes]
    if low.channel_first:
        axes = [axes[0], "F", axes[1]]
    elif not (low.input_ids or low.series):
        axes.append("F")
    return adapters.axes_json(axes)


def _state_args(low, example):
    """meta state_args: forward's state arguments by leaf index (adapters._flat), each with its
    role (h or c), shape ("B" the batch), its place in predict's initial_state ("state": the
    signature states entry of its module and role), and, for a state nested deeper than one
    tuple, its path in forward's arguments (AWD-LSTM's list of one (h, c) per LSTM module)."""
    paths = _leaf_paths(example) if example is not None else None
    out = {}
    for k, (r, role) in sorted(low.state_inputs.items()):
        rnn = low.rnns[r]
        e = {"role": role, "state": sum(2 if q.lstm else 1 for q in low.rnns[:r]) + (role == "c")}
        if r in low.state_cols:          # (B, H): the h columns of a one-step module's state
            e["shape"] = ["B", low.state_cols[r]]
        else:
            e["shape"] = [rnn.L * rnn.D, "B", rnn.width if role == "h" else rnn.hidden]
        if paths is not None and len(paths[k]) > 2:
            e["path"] = paths[k]
        out[str(k)] = e
    return out


def _leaf_paths(args):
    """The path (indices into forward's arguments, then into their nested tuples / lists) of each
    leaf, in adapters._flat's order."""
    out = []

    def walk(v, path):
        if isinstance(v, (tuple, list)):
            for i, e in enumerate(v):
                walk(e, path + [i])
        else:
            out.append(path)
    for i, a in enumerate(args):
        walk(a, [i])
    return out


def check_example(module, model, args, other_size=False):
    """Run the module and the converted model on the example; refuse on a mismatch. With
    other_size, also on a variant of the example with one more row and two more steps, when the
    module itself accepts it: a capture that baked the example's sizes in (a traced len(x))
    shows there."""
    _compare(module, model, args, "forward(example_input)")
    if other_size:
        variant = _grown(model.meta, args)
        if variant is not None:
            _compare(module, model, variant, "forward on an input larger than the example", optional=True)


def _attributes(module):
    """Each submodule's plain attributes (self.hidden of a module that keeps its state between
    calls), to put back after a comparison's call: every call starts where the user's does."""
    return [(m, {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"})
            for m in module.modules()]


def _compare(module, model, args, what, optional=False):
    torch = _torch()
    from fastrnn import adapters
    with torch.no_grad():
        training = module.training
        kept = _attributes(module)
        try:
            ref = module.eval()(*args)
        except Exception:  # noqa: BLE001 - a module written for one size rejects another: nothing to compare
            if optional:
                return
            raise
        finally:
            module.train(training)
            for m, attrs in kept:
                m.__dict__.update(attrs)
    while isinstance(ref, (tuple, list)):
        ref = ref[0]
    try:
        kw = adapters.predict_args(model.meta, [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else
                                                _np_tree(a) for a in args])
        y = model.predict(**kw)
        ref = ref.detach().cpu().float().numpy()
        r = (adapters.step_to_predict(ref, model.meta["output_axes"], kw["x"].shape[0])
             if model.meta.get("one_step") else
             adapters.to_predict(ref, model.meta["output_axes"], kw["x"].shape[0], kw["x"].shape[1]))
    except (FastRNNError, ValueError) as e:
        raise UnsupportedError(f"convert: the converted {type(module).__name__} cannot run {what} "
                               f"({e})") from None
    tol = 2e-2 if getattr(model, "_quantized_source", False) else 1e-4
    if r.shape != y.shape or not np.allclose(y, r, rtol=tol, atol=tol):
        diff = float(np.abs(y - r).max()) if r.shape == y.shape else f"shapes {y.shape} vs {r.shape}"
        raise UnsupportedError(f"convert: the converted {type(module).__name__} does not reproduce "
                               f"{what} (difference {diff}); its forward does something fastrnn did not "
                               f"capture, or the capture fixed a size of the example")


def _grown(meta, args):
    """The example with one more batch row and two more steps (the sequence repeated), lengths
    and states grown to match; None when the layout does not say how."""
    torch = _torch()
    axes = meta.get("input_axes") or []
    if not args or not isinstance(args[0], torch.Tensor) or meta.get("input_layout") == "one_step":
        return None
    x = args[0]
    if "B" in axes:
        b = axes.index("B")
        x = torch.cat([x, x.narrow(b, 0, 1)], b)
    if "T" in axes:
        t = axes.index("T")
        x = torch.cat([x, x.narrow(t, 0, min(2, x.shape[t]))], t)
    out = [x]
    B = x.shape[axes.index("B")] if "B" in axes else None
    T = x.shape[axes.index("T")] if "T" in axes else None
    for a in args[1:]:
        if isinstance(a, torch.Tensor) and a.dim() == 1 and not a.dtype.is_floating_point and B and T:
            out.append(torch.full((B,), T, dtype=a.dtype))          # lengths: every row full
        elif isinstance(a, torch.Tensor) and a.dim() == 2 and a.dtype.is_floating_point and B and a.shape[0] == B - 1:
            out.append(torch.cat([a, a[:1]], 0))                      # per-row static features
        elif isinstance(a, (tuple, list)) or (isinstance(a, torch.Tensor) and a.dim() == 3):
            grown = _grown_states(a) if B else None
            if grown is None:
                return None
            out.append(grown)
        else:
            out.append(a)
    return out


def _grown_states(a):
    """States (L*D, B, H), alone or in nested tuples / lists, with one more batch row; None when
    a leaf is not such a state."""
    torch = _torch()
    if isinstance(a, (tuple, list)):
        items = [_grown_states(s) for s in a]
        return None if any(s is None for s in items) else type(a)(items)
    if isinstance(a, torch.Tensor) and a.dim() == 3:
        return torch.cat([a, a.narrow(1, 0, 1)], 1)
    return None


def _np_tree(a):
    torch = _torch()
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    if isinstance(a, (list, tuple)):
        return type(a)(_np_tree(x) for x in a)
    return a


def _where(stack):
    """The user's source line from a recorded stack trace (the last frame outside torch)."""
    lines = (stack or "").strip().splitlines()
    user = [i for i, ln in enumerate(lines) if ln.strip().startswith("File ")
            and f"{os.sep}torch{os.sep}" not in ln and f"{os.sep}fastrnn{os.sep}" not in ln]
    if user and user[-1] + 1 < len(lines):
        i = user[-1]
        return f" ({lines[i].strip()}: {lines[i + 1].strip()})"
    return ""


# ---------------------------------------------------------------------------------------------
# module calls (torch.fx and TorchScript): the canonical op of each torch.nn module

def module_call(low, mod, args, kwargs, where):
    """A call of a torch.nn module on abstract args -> its result."""
    torch = _torch()
    nn = torch.nn
    nm = type(mod).__name__
    x = args[0] if args else kwargs.get("input")
    if _quantized(mod):
        return quantized_call(low, mod, x, args[1] if len(args) > 1 else kwargs.get("hx"), where)
    if isinstance(mod, nn.RNNBase):
        return rnn_module_call(low, mod, x, args[1] if len(args) > 1 else kwargs.get("hx"), where)
    if isinstance(mod, nn.RNNCellBase):
        op = {"LSTMCell": "lstm_cell", "GRUCell": "gru_cell"}.get(nm) or \
            ("rnn_relu_cell" if getattr(mod, "nonlinearity", "tanh") == "relu" else "rnn_tanh_cell")
        hx = args[1] if len(args) > 1 else kwargs.get("hx")
        ws = [_const(low, mod.weight_ih, "weight_ih"), _const(low, mod.weight_hh, "weight_hh")]
        ws += [_const(low, mod.bias_ih, "bias_ih"), _const(low, mod.bias_hh, "bias_hh")] if mod.bias else []
        return low.call(op, (x, list(hx) if isinstance(hx, (tuple, list)) else hx, *ws), {}, where)
    if isinstance(mod, nn.Linear):
        return low.call("linear", (x, _const(low, mod.weight, f"{where}.weight"),
                                   None if mod.bias is None else _const(low, mod.bias, f"{where}.bias")), {}, where)
    if isinstance(mod, nn.Embedding):
        return low.call("embedding", (_const(low, mod.weight, "weight"), x, mod.padding_idx),
                        {"max_norm": mod.max_norm}, where)
    simple = {"Sigmoid": "sigmoid", "Tanh": "tanh", "ReLU": "relu", "SELU": "selu", "SiLU": "silu",
              "Softsign": "softsign", "ReLU6": "relu6", "Identity": "identity", "Dropout": "dropout",
              "Mish": "mish", "Hardswish": "hardswish", "Hardsigmoid": "hardsigmoid",
              "AlphaDropout": "dropout", "Dropout1d": "dropout", "Dropout2d": "dropout",
              "FeatureAlphaDropout": "dropout"}
    if nm in simple:
        return low.call(simple[nm], (x,), {}, where)
    if nm in ("Softmax", "LogSoftmax"):
        return low.call(nm.lower(), (x, mod.dim), {}, where)
    if nm == "ELU":
        return low.call("elu", (x, mod.alpha), {}, where)
    if nm == "LeakyReLU":
        return low.call("leaky_relu", (x, mod.negative_slope), {}, where)
    if nm == "Hardtanh":
        return low.call("hardtanh", (x, mod.min_val, mod.max_val), {}, where)
    if nm == "PReLU":
        return low.call("prelu", (x, _const(low, mod.weight, f"{where}.weight")), {}, where)
    if nm == "Softplus":
        return low.call("softplus", (x, mod.beta, mod.threshold), {}, where)
    if nm == "Flatten":
        return low.call("flatten", (x, mod.start_dim, mod.end_dim), {}, where)
    if nm == "GELU":
        return low.call("gelu", (x, getattr(mod, "approximate", "none")), {}, where)
    if nm == "LayerNorm":
        c = [None if t is None else _const(low, t, f"{where}.{n}") for n, t in (("weight", mod.weight), ("bias", mod.bias))]
        return low.call("layer_norm", (x, list(mod.normalized_shape), *c, mod.eps), {}, where)
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        c = [None if t is None else _const(low, t, f"{where}.{n}")
             for n, t in (("weight", mod.weight), ("bias", mod.bias), ("running_mean", mod.running_mean),
                          ("running_var", mod.running_var))]
        return low.call("batch_norm", (x, *c, False, mod.momentum, mod.eps), {}, where)
    if nm == "MultiheadAttention":    # torch.fx keeps it whole (torch.export would decompose it)
        return _mha_call(low, mod, args, kwargs, where)
    if nm == "Conv1d":                # torch.fx keeps the module (a packed model: its capture is fx's)
        if mod.padding_mode != "zeros":
            return low.refuse("conv1d", f"a Conv1d with padding_mode={mod.padding_mode!r}", where)
        return low.call("conv1d", (x, _const(low, mod.weight, f"{where}.weight"),
                                   None if mod.bias is None else _const(low, mod.bias, f"{where}.bias"),
                                   mod.stride, mod.padding, mod.dilation, mod.groups), {}, where)
    if nm in ("MaxPool1d", "AvgPool1d"):
        if nm == "MaxPool1d":
            return low.call("max_pool1d", (x, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                                           mod.ceil_mode), {}, where)
        return low.call("avg_pool1d", (x, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode,
                                       mod.count_include_pad), {}, where)
    if nm in ("AdaptiveMaxPool1d", "AdaptiveAvgPool1d"):
        if nm == "AdaptiveMaxPool1d" and mod.return_indices:
            return low.refuse("adaptive_max_pool1d", "an AdaptiveMaxPool1d returning indices", where)
        r = low.call(nm.replace("Adaptive", "adaptive_").replace("MaxPool1d", "max_pool1d").replace(
            "AvgPool1d", "avg_pool1d"), (x, mod.output_size), {}, where)
        return r[0] if isinstance(r, tuple) else r
    if nm == "Sequential":
        for m in mod:
            x = module_call(low, m, (x,), {}, where)
        return x
    return low.refuse(nm.lower(), f"module {nm} is not supported", where)


def _mha_call(low, mod, args, kwargs, where):
    """nn.MultiheadAttention(x, x, x) (self-attention, no masks): -> (its output, None: the
    attention weights are not computed)."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask", "average_attn_weights",
             "is_causal")
    a = dict(zip(names, args)) | kwargs
    q, k, v = a.get("query"), a.get("key"), a.get("value")
    if not (q == k == v):
        return low.refuse("multi_head_attention", "attention between different tensors (only self-attention: "
                                                  "query, key and value the same sequence)", where)
    if a.get("key_padding_mask") is not None or a.get("attn_mask") is not None or a.get("is_causal"):
        return low.refuse("multi_head_attention", "a key_padding_mask, attn_mask or is_causal (fastrnn's "
                                                  "attention masks only by lengths)", where)
    if not mod._qkv_same_embed_dim or mod.bias_k is not None or mod.add_zero_attn:
        return low.refuse("multi_head_attention", "kdim / vdim other than embed_dim, add_bias_kv or add_zero_attn",
                          where)
    c = lambda t, n: None if t is None else _const(low, t, f"{where}.{n}")   # noqa: E731
    y = low.call("self_attention", (q, c(mod.in_proj_weight, "in_proj_weight"), c(mod.in_proj_bias, "in_proj_bias"),
                                    c(mod.out_proj.weight, "out_proj.weight"), c(mod.out_proj.bias, "out_proj.bias"),
                                    mod.num_heads), {}, where)
    return (y, None)


def _quantized(mod):
    return type(mod).__module__.startswith("torch.ao.nn.quantized")


def quantized_call(low, mod, x, hx, where):
    """A dynamically quantized module (torch.ao.quantization.quantize_dynamic): Linear, LSTM, GRU
    with int8 weights, run in fp32 with those weights dequantized. torch's own kernels also
    quantize the activations on the fly, so the two differ by that rounding (about 1e-3 on O(1)
    outputs), which the example check allows (low.quantized)."""
    nm = type(mod).__name__
    low.quantized = True
    if nm == "Linear":
        b = mod.bias()
        return low.call("linear", (x, _np(mod.weight().dequantize(), "weight"),
                                   None if b is None else _np(b, "bias")), {}, where)
    if nm in ("LSTM", "GRU"):
        wb = mod._weight_bias()
        sd = {k: v.dequantize() if v.is_quantized else v for k, v in wb["weight"].items()}
        sd.update(wb["bias"])
        cfg = {"mode": nm, "input_size": mod.input_size, "hidden_size": mod.hidden_size,
               "num_layers": mod.num_layers, "bias": mod.bias, "batch_first": mod.batch_first,
               "bidirectional": mod.bidirectional, "proj_size": 0}
        return rnn_module_call(low, mod, x, hx, where, cfg=cfg, sd=sd)
    return low.refuse(nm.lower(), f"quantized module {nm} is not supported (dynamic Linear, LSTM and GRU are)",
                      where)


def rnn_module_call(low, mod, x, hx, where, cfg=None, sd=None):
    """An nn.RNN/LSTM/GRU module call (torch.fx leaf, scripted submodule) as its ATen op; returns
    what the module returns: (output, h_n) or (output, (h_n, c_n))."""
    from ..torch import _rnn_config, flat_params
    cfg = cfg or _rnn_config(mod)
    mode = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}.get(cfg["mode"])
    if mode is None:
        return low.refuse("rnn", f"recurrent mode {cfg['mode']!r}", where)
    L = int(cfg["num_layers"])
    try:
        params = flat_params(mod.state_dict() if sd is None else sd, "", cfg)
    except FastRNNError as e:
        return low.refuse(mode, str(e), where)
    if mode == "lstm" and hx is not None and not isinstance(hx, (tuple, list)):
        return low.refuse(mode, "an LSTM called with one state tensor (it takes (h0, c0))", where)
    res = low.call(mode, (x, list(hx) if isinstance(hx, (tuple, list)) else hx, params, bool(cfg["bias"]), L,
                          0.0, False, bool(cfg["bidirectional"]), bool(cfg["batch_first"])), {}, where)
    if isinstance(res, G.Bad):
        return res
    return (res[0], (res[1], res[2])) if mode == "lstm" else (res[0], res[1])


# ---------------------------------------------------------------------------------------------
# torch.export

def _aten_name(target):
    schema = getattr(target, "_schema", None)
    if schema is not None:
        return schema.name.split("::", 1)[-1]
    if target is operator.getitem:
        return "getitem"
    py = {operator.mul: "mul", operator.add: "add", operator.sub: "sub", operator.floordiv: "floordiv",
          operator.truediv: "truediv", operator.neg: "neg"}
    return py.get(target, getattr(target, "__name__", str(target)))


def capture_export(module, args, name):
    torch = _torch()
    A = torch.export.Dim.AUTO

    def dyn(a):
        if isinstance(a, torch.Tensor):
            return {i: A for i in range(a.ndim)}
        if isinstance(a, (list, tuple)):
            return type(a)(dyn(x) for x in a)
        return None
    import logging
    import warnings
    previous = logging.root.manager.disable
    try:
        logging.disable(logging.CRITICAL)   # export logs its guesses and prints graph dumps on failure;
        import contextlib                   # fastrnn reports failures itself
        import io
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            ep = torch.export.export(module, tuple(args), dynamic_shapes=tuple(dyn(a) for a in args), strict=False)
    finally:
        logging.disable(previous)
    low = Lowering(name)
    sig = ep.graph_signature
    consts = {}
    for spec in sig.input_specs:
        k = spec.kind.name
        if k in ("PARAMETER", "BUFFER"):
            consts[spec.arg.name] = ep.state_dict[spec.target] if spec.target in ep.state_dict else \
                dict(module.named_buffers())[spec.target]
        elif k == "CONSTANT_TENSOR":
            consts[spec.arg.name] = ep.constants[spec.target]
    user = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
    flat, _ = torch.utils._pytree.tree_flatten(tuple(args))
    leaves = list(zip(user, [a for a in flat]))
    vals = dict(zip(user, bind_inputs(low, leaves)))
    env = {}
    out_node = None
    nodes = list(ep.graph.nodes)
    x_node = next((n for n in nodes if n.op == "placeholder" and low.x_leaf is not None
                   and n.name == user[low.x_leaf]), None)
    if x_node is not None and hasattr(x_node.meta.get("val"), "shape"):
        # the sequence's axes that forward's code fixed to the example's size (a window as long as
        # the example: F.max_pool1d(y, y.size(2)), graph.py)
        low.static = {lab for lab, n in zip(("x0", "x1"), x_node.meta["val"].shape)
                      if type(n) is int or getattr(getattr(getattr(n, "node", None), "expr", None), "is_number", False)}
    for n in nodes:
        if n.op == "output":
            out_node = n
    spec = ep.call_spec.out_spec
    if spec is not None and spec.type is dict:
        return low, {}, leaves
    first = out_node.args[0][0] if out_node.args[0] else None

    def lower(out):
        need = _needed(out)
        for n in nodes:
            if n in env:
                continue
            if n.op == "placeholder":
                env[n] = vals[n.name] if n.name in vals else _const(low, consts[n.name], n.name)
                continue
            if n not in need or n.op != "call_function":
                continue
            args_ = torch.fx.node.map_arg(n.args, lambda a: env[a])
            kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: env[a])
            kwargs = {k: v for k, v in kwargs.items() if k not in ("device", "dtype", "layout", "pin_memory",
                                                                   "memory_format", "non_blocking", "copy")}
            env[n] = low.call(_aten_name(n.target), args_, kwargs, _where(n.meta.get("stack_trace")))
        return env[out]
    if not isinstance(first, torch.fx.Node):
        return low, first, leaves
    return low, _with_next_state(low, lower(first), out_node.args[0], lower, torch.fx.Node), leaves


def _with_next_state(low, first, outs, lower, node_type):
    """first, or (first, forward's second output) for a one-step module whose first output is still
    a step expression: the char-RNN step's output reads the previous hidden state, and the state
    it returns says how the hidden state moves on (cells.one_step_linear). The second output is
    lowered after the first and forgotten when that adds layers or refusals."""
    if not (low.one_step and G.cells.is_step(first)) or len(outs) < 2 or not isinstance(outs[1], node_type):
        return first
    n_layers, n_errors = len(low.layers), len(low.errors)
    second = lower(outs[1])
    if len(low.layers) != n_layers or len(low.errors) != n_errors:
        del low.layers[n_layers:], low.errors[n_errors:]
        return first
    return first, second


def _needed(out_node):
    """The nodes out_node depends on (itself included)."""
    need, todo = set(), [out_node]
    while todo:
        n = todo.pop()
        if n in need:
            continue
        need.add(n)
        todo += list(n.all_input_nodes)
    return need


# ---------------------------------------------------------------------------------------------
# torch.fx

_FUNC_NAMES = {"embedding": "f_embedding"}


def capture_fx(module, args, name):
    torch = _torch()
    import torch.fx as fx
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    import math
    # pack/pad kept whole, imported by name or called as nn.utils.rnn.pack_padded_sequence
    tracer = fx.Tracer(autowrap_modules=(math, torch.nn.utils.rnn),
                       autowrap_functions=(pack_padded_sequence, pad_packed_sequence))
    tracer.record_stack_traces = True
    graph = tracer.trace(module)
    low = Lowering(name)
    nodes = list(graph.nodes)
    out_node = next(n for n in nodes if n.op == "output")
    placeholders = [n for n in nodes if n.op == "placeholder"]
    leaves, given = [], list(args)
    for i, p in enumerate(placeholders):
        if i < len(given):
            leaves.append((p.target, given[i]))
        else:
            leaves.append((p.target, p.args[0] if p.args else None))     # the default value
    flat = []
    for nm, v in leaves:                     # a (h, c) argument: two leaves, rebuilt below
        if isinstance(v, (tuple, list)):
            flat += [(f"{nm}_{j}", x) for j, x in enumerate(v)]
        else:
            flat.append((nm, v))
    vals = bind_inputs(low, flat)
    it = iter(vals)
    env = {}
    for p, (_, v) in zip(placeholders, leaves):
        env[p] = type(v)(next(it) for _ in v) if isinstance(v, (tuple, list)) else next(it)
    result = out_node.args[0]
    if isinstance(result, dict):
        return low, {}, flat
    first = result
    while isinstance(first, (tuple, list)) and first:
        first = first[0]

    def lower(out):
        need = _needed(out)
        for n in nodes:
            if n not in need or n in env or n.op in ("placeholder", "output"):
                continue
            where = _where(n.meta.get("stack_trace")) if hasattr(n, "meta") else ""
            a = fx.node.map_arg(n.args, lambda v: env[v])
            k = fx.node.map_arg(n.kwargs, lambda v: env[v])
            if n.op == "get_attr":
                env[n] = _const(low, _attr(module, n.target), n.target)
            elif n.op == "call_module":
                env[n] = module_call(low, module.get_submodule(n.target), a, k, where)
            elif n.op == "call_function":
                env[n] = fx_function(low, n.target, a, k, where)
            elif n.op == "call_method":
                env[n] = fx_method(low, n.target, a, k, where)
        return env[out]
    if not isinstance(first, fx.Node):         # predict returns the first output
        return low, first, flat
    outs = result if isinstance(result, (tuple, list)) else [result]
    return low, _with_next_state(low, lower(first), outs, lower, fx.Node), flat


def _attr(module, target):
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


class _Token:
    """x.device, x.dtype: only ever passed on to zeros(..., device=...)."""


def fx_function(low, fn, a, k, where):
    torch = _torch()
    F = torch.nn.functional
    name = getattr(fn, "__name__", str(fn))
    if fn is getattr:
        obj, attr = a[0], a[1]
        if attr == "shape":
            return low.call("size", (obj,), {}, where)
        if attr in ("device", "dtype", "is_cuda", "layout"):
            return _Token()
        if attr == "data":
            return obj
        return low.refuse("getattr", f"attribute {attr!r} of {G._what(obj)}", where)
    if fn is len:
        return low.call("len", (a[0],), {}, where)
    if fn in (operator.getitem,):
        return low.call("getitem", a, {}, where)
    ops = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
           operator.floordiv: "floordiv", operator.neg: "neg", operator.iadd: "add", operator.imul: "mul"}
    if fn in ops:
        return low.call(ops[fn], a, k, where)
    if fn is F.embedding or name == "embedding" and getattr(fn, "__module__", "").endswith("functional"):
        inp, w = a[0], a[1]
        return low.call("embedding", (w, inp) + tuple(a[2:3]), {"max_norm": k.get("max_norm", a[3] if len(a) > 3 else None)},
                        where)
    if name in ("softmax", "log_softmax"):
        return low.call(name, (a[0], k.get("dim", a[1] if len(a) > 1 else None)), {}, where)
    if name == "dropout" or name in ("alpha_dropout", "feature_alpha_dropout", "dropout1d"):
        return a[0]
    if name in ("pack_padded_sequence", "pad_packed_sequence"):
        return low.call(name, a, k, where)
    if name in ("Variable",):
        return a[0]
    if name in ("zeros", "ones", "full", "randn", "rand", "empty"):
        k = {kk: v for kk, v in k.items() if kk == "fill_value"}
        return low.call(name, a, k, where)
    k = {kk: v for kk, v in k.items() if not isinstance(v, _Token) and kk not in ("device", "dtype", "inplace")}
    return low.call(name, a, k, where)


def fx_method(low, name, a, k, where):
    k = {kk: v for kk, v in k.items() if not isinstance(v, _Token) and kk not in ("device", "dtype", "non_blocking")}
    if name == "to":
        return a[0]
    if name in ("new_zeros", "new_ones", "new_empty", "new_full"):
        return low.call(name, a, {}, where)
    if name == "size" and len(a) == 1 and "dim" in k:
        a, k = (a[0], k["dim"]), {}
    if name in ("type", "type_as", "float", "double", "cpu", "cuda", "long", "int"):
        return a[0]
    if name in ("softmax", "log_softmax"):
        return low.call(name, (a[0], k.get("dim", a[1] if len(a) > 1 else None)), {}, where)
    return low.call(name, a, k, where)


# ---------------------------------------------------------------------------------------------
# TorchScript graphs

class _Mod:
    """A submodule, as prim::GetAttr returns it."""
    def __init__(self, mod):
        self.mod = mod


class _Packed:
    """A TorchScript object holding packed (quantized) weights, or a module attribute on the way
    to one."""
    def __init__(self, mod, obj):
        self.mod, self.obj = mod, obj


def _unpacked(obj):
    """LinearPackedParamsBase -> (weight, bias) as float32 arrays, the weight dequantized."""
    w, b = obj.__getstate__()[0][:2]
    return _np(w.dequantize() if w.is_quantized else w, "weight"), None if b is None else _np(b, "bias")


class _Fn:
    """A function constant: its name and qualified type."""
    def __init__(self, name, qual):
        self.name, self.qual = name, qual


def _ts_where(node, site):
    m = re.search(r"# (.+):(\d+):\d+\s*$", str(node).splitlines()[0])
    if m and f"{os.sep}torch{os.sep}" not in m.group(1):
        return f" (File \"{m.group(1)}\", line {m.group(2)})"
    return site


def _ts_const(node):
    out = node.output()
    if "name" in node.attributeNames() and "value" not in node.attributeNames():
        return _Fn(node.s("name"), str(out.type()))
    v = out.toIValue()
    torch = _torch()
    if isinstance(v, torch.Tensor):
        return _const(None, v, "constant")
    return v


_PY_OPS = {"aten::eq": operator.eq, "aten::ne": operator.ne, "aten::lt": operator.lt, "aten::gt": operator.gt,
           "aten::le": operator.le, "aten::ge": operator.ge, "aten::__is__": operator.is_,
           "aten::__isnot__": operator.is_not, "aten::__not__": operator.not_, "aten::mul": operator.mul,
           "aten::add": operator.add, "aten::sub": operator.sub, "aten::floordiv": operator.floordiv,
           "aten::__and__": operator.and_, "aten::__or__": operator.or_, "aten::neg": operator.neg}


class ScriptCapture:
    def __init__(self, low):
        self.low = low

    def run(self, graph, inputs, site="", first_only=False):
        """Interpret graph on abstract inputs. first_only: only what the first returned value
        (the first element of a returned tuple) depends on (predict returns only it)."""
        env = dict(zip(graph.inputs(), inputs))
        need = None
        if first_only:
            v = graph.return_node().inputs().__next__()
            while v.node().kind() == "prim::TupleConstruct":
                v = next(v.node().inputs())
            need = _ts_needed(v)
        self.block(graph.nodes(), env, site, need)
        if first_only:
            ret = graph.return_node().inputs().__next__()
            outs = list(ret.node().inputs()) if ret.node().kind() == "prim::TupleConstruct" else [ret]

            def lower(w):           # the nodes w needs that the first output did not
                done = need
                self.block(graph.nodes(), env, site, {n for n in _ts_needed(w) if n not in done})
                return env[w]
            return _with_next_state(self.low, env[v], outs, lower, _torch()._C.Value)
        ret = [env[v] for v in graph.return_node().inputs()]
        return ret[0] if len(ret) == 1 else tuple(ret)

    def block(self, nodes, env, site, need=None):
        for n in nodes:
            if need is not None and n not in need:
                continue
            kind = n.kind()
            outs = list(n.outputs())
            where = _ts_where(n, site)
            if kind == "prim::Constant":
                env[outs[0]] = _ts_const(n)
                continue
            try:
                args = [env[v] for v in n.inputs()]
            except KeyError:
                res = self.low.refuse(kind, "reads a value from an enclosing block", where)
                env.update({o: res for o in outs})
                continue
            if kind == "prim::If" and isinstance(args[0], bool):
                b = list(n.blocks())[0 if args[0] else 1]
                self.block(b.nodes(), env, site)
                env.update(zip(outs, [env[v] for v in b.returnNode().inputs()]))
                continue
            if kind == "prim::Loop" and isinstance(args[0], int) and isinstance(args[1], bool):
                env.update(zip(outs, self.loop(n, args, env, site, where)))
                continue
            res = self.node(n, kind, args, where)
            if len(outs) == 1 and kind in ("prim::TupleUnpack", "prim::ListUnpack") and \
                    isinstance(res, (tuple, list)) and len(res) == 1:
                env[outs[0]] = res[0]         # a, = inputs: the one item
            elif len(outs) == 1:
                env[outs[0]] = res
            elif isinstance(res, G.Bad):
                env.update({o: res for o in outs})
            elif isinstance(res, (tuple, list)) and len(res) == len(outs):
                env.update(zip(outs, res))
            else:
                bad = self.low.refuse(kind, f"gives {len(outs)} values where fastrnn has {G._what(res)}", where)
                env.update({o: bad for o in outs})

    def loop(self, n, args, env, site, where):
        """A loop whose count and condition are known when converting (for t in
        range(x.size(1))) is unrolled: its body runs once per iteration, so a cell called per step
        becomes the chain a module capture gives (converters/graph.py, loops over time) and a
        list it appends to holds every step. -> the carried values after the last iteration."""
        body = list(n.blocks())[0]
        ins, rets = list(body.inputs()), list(body.returnNode().inputs())
        trip, go, carried = args[0], args[1], list(args[2:])
        i = 0
        while go and i < trip:
            if i >= G.MAX_UNROLL:
                return [self.low.refuse("prim::Loop", f"a loop of more than {G.MAX_UNROLL} iterations", where)] * \
                    len(carried)
            env.update(zip(ins, [i] + carried))
            self.block(body.nodes(), env, site)
            vals = [env[v] for v in rets]
            go, carried = vals[0], vals[1:]
            if not isinstance(go, bool):
                return [self.low.refuse("prim::Loop", "a loop condition that depends on tensor values", where)] * \
                    len(carried)
            i += 1
        return carried

    def node(self, n, kind, a, where):
        low = self.low
        torch = _torch()
        if G._has_bad(a):
            return G.Bad()
        if kind == "prim::GetAttr":
            parent = a[0]
            if isinstance(parent, _Mod):
                v = getattr(parent.mod, n.s("name"))
            elif isinstance(parent, _Packed) and parent.obj is None:
                v = getattr(parent.mod, n.s("name"))
            else:
                return low.refuse(kind, "an attribute of something that is not a module", where)
            if isinstance(v, torch.ScriptObject):
                return _Packed(None, v)
            if isinstance(v, torch.nn.Module):
                return _Mod(v)
            if isinstance(v, tuple) and v and all(isinstance(t, torch.Tensor) for t in v):
                return tuple(_const(low, t, f"{n.s('name')}[{i}]") for i, t in enumerate(v))   # self.hidden_cell
            return _const(low, v, n.s("name")) if isinstance(v, torch.Tensor) else v
        if kind == "prim::CallMethod":
            return self.call(n, a, where)
        if kind in ("aten::quantized_lstm", "aten::quantized_gru"):
            return self.quantized_rnn(kind, a, where)
        if kind == "quantized::linear_dynamic":
            if not isinstance(a[1], _Packed):
                return low.refuse(kind, "packed weights that are not a module's", where)
            w, b = _unpacked(a[1].obj)
            low.quantized = True
            return low.call("linear", (a[0], w, b), {}, where)
        if kind == "prim::CallFunction":
            return self.function(a[0], a[1:], where)
        if kind in ("prim::TupleConstruct", "prim::ListConstruct"):
            return tuple(a) if kind == "prim::TupleConstruct" else list(a)
        if kind in ("prim::TupleUnpack", "prim::ListUnpack"):
            return tuple(a[0])
        if kind == "prim::TupleIndex":
            return low.call("getitem", (a[0], a[1]), {}, where)
        if kind in ("prim::NumToTensor", "aten::Int", "aten::ScalarImplicit", "aten::Float", "prim::device",
                    "prim::dtype", "aten::detach", "prim::unchecked_cast", "aten::IntImplicit"):
            return a[0] if a else None
        if kind == "prim::Uninitialized":
            return None
        if kind == "prim::RaiseException":    # a check of forward failed for the shapes assumed
            return low.refuse("raise", f"forward raises {a[1] if len(a) > 1 else 'an exception'}: {a[0]}", where)
        if kind == "aten::format" and all(isinstance(v, (int, float, bool, str)) for v in a):
            return a[0].format(*a[1:])
        if kind in ("prim::If", "prim::Loop"):
            return low.refuse(kind, "data-dependent control flow is not supported", where)
        if kind in ("aten::__is__", "aten::__isnot__"):       # `hx is not None` in a cell's forward
            same = a[0] is a[1] or (a[0] is None and a[1] is None)
            return same if kind == "aten::__is__" else not same
        if kind == "aten::__contains__" and isinstance(a[0], (list, tuple)) and \
                all(isinstance(v, (int, float, bool, str)) for v in list(a[0]) + [a[1]]):
            return a[1] in a[0]
        if kind == "aten::append" and isinstance(a[0], list):
            a[0].append(a[1])            # the list a loop collects its steps in
            return a[0]
        if kind in _PY_OPS and all(v is None or isinstance(v, (int, float, bool, str)) for v in a):
            return _PY_OPS[kind](*a)
        if kind == "aten::__getitem__":
            return low.call("getitem", (a[0], a[1]), {}, where)
        if kind == "aten::len":
            return low.call("len", (a[0],), {}, where)
        if kind == "aten::size" and len(a) == 1:
            return low.call("size", (a[0],), {}, where)
        if kind.startswith("aten::"):
            op = kind.split("::", 1)[1]
            if op in ("zeros", "ones", "empty", "full", "randn", "rand"):
                a = a[:2] if op == "full" else a[:1]
            elif op in ("zeros_like", "ones_like", "new_zeros", "new_ones", "new_empty"):
                a = a[:2] if op.startswith("new_") else a[:1]
            elif op == "to":
                return a[0]
            elif op in ("softmax", "log_softmax"):
                a = a[:2]
            elif op == "dropout" or op == "feature_dropout":
                return a[0]
            return low.call(op, tuple(a), {}, where)
        return low.refuse(kind, "is not supported", where)

    def quantized_rnn(self, kind, a, where):
        """aten::quantized_lstm / quantized_gru of a traced dynamically quantized module: the
        same op as lstm / gru, its int8 weights dequantized (converters/frontends note)."""
        low = self.low
        x, hx, params, has_biases, num_layers, _, _, bidirectional, batch_first = a[:9]
        flat = []
        for p in params:
            if not isinstance(p, _Packed):
                return low.refuse(kind, "recurrent weights that are not packed parameters", where)
            st = p.obj.__getstate__()[0]
            if st[0] != "quantized_dynamic":
                return low.refuse(kind, f"quantized recurrent weights of kind {st[0]!r}", where)
            (w_ih, _), (w_hh, _) = _unpacked(st[4][0]), _unpacked(st[4][1])
            flat += [w_ih, w_hh] + ([_np(st[1][0], "b_ih"), _np(st[1][1], "b_hh")] if has_biases else [])
        low.quantized = True
        op = "lstm" if kind.endswith("lstm") else "gru"
        return low.call(op, (x, hx, flat, has_biases, num_layers, 0.0, False, bidirectional, batch_first), {}, where)

    def function(self, fn, a, where):
        low = self.low
        if not isinstance(fn, _Fn) or not (fn.qual == "Function" or fn.qual.startswith("__torch__.torch.")):
            return low.refuse("call", f"a call of {getattr(fn, 'qual', fn)!r}: not one of torch's own functions",
                              where)
        name = fn.name
        if name == "embedding":                    # F.embedding(input, weight, padding_idx, max_norm, ...)
            return low.call("embedding", (a[1], a[0]), {"max_norm": a[3] if len(a) > 3 else None}, where)
        if name in ("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d"):
            return a[0]
        if name in ("softmax", "log_softmax"):
            return low.call(name, (a[0], a[1] if len(a) > 1 else None), {}, where)
        if name == "batch_norm" and len(a) == 8:   # F.batch_norm(input, running_mean, running_var, weight,
            return low.call(name, (a[0], a[3], a[4], a[1], a[2], a[5], a[6], a[7]), {}, where)   # bias, ...)
        return low.call(name, tuple(a), {}, where)

    def call(self, n, a, where):
        low = self.low
        sub = a[0]
        if not isinstance(sub, _Mod):
            return low.refuse("prim::CallMethod", "a method of something that is not a submodule", where)
        mod = sub.mod
        from ..torch import _rnn_config
        if hasattr(mod, "mode") and hasattr(mod, "weight_ih_l0") and _rnn_config(mod) is not None:  # scripted RNN
            args = list(a[1:])
            while args and args[-1] is None:
                args.pop()
            return rnn_module_call(low, mod, args[0], args[1] if len(args) > 1 else None, where)
        method = getattr(mod, n.s("name"), None)
        if method is None or not hasattr(method, "graph"):
            return low.refuse("prim::CallMethod", f"calls {n.s('name')} of "
                                                  f"{getattr(mod, 'original_name', type(mod).__name__)}", where)
        return self.run(method.graph, [sub] + list(a[1:]), where)


def _mutators(n):
    """The top-level nodes that append to a list n makes (a loop filling it)."""
    out = []
    for o in n.outputs():
        if o.type().kind() != "ListType":
            continue
        for u in o.uses():
            top = u.user
            while top.owningBlock().owningNode() is not None:
                top = top.owningBlock().owningNode()
            out.append(top)
    return out


def _ts_needed(value):
    """The top-level nodes of a TorchScript graph that value depends on (a node with blocks
    counts with everything its blocks read)."""
    need, todo = set(), [value.node()]
    while todo:
        n = todo.pop()
        if n in need:
            continue
        need.add(n)
        todo += [v.node() for v in n.inputs()]
        todo += _mutators(n)
        stack = list(n.blocks())
        while stack:
            b = stack.pop()
            for m in b.nodes():
                todo += [v.node() for v in m.inputs()]
                stack += list(m.blocks())
            todo += [v.node() for v in b.returnNode().inputs()]
    return need


def capture_script(module, name, first, others=None):
    """Interpret a TorchScript module's forward with `first` standing for its sequence input
    (and `others` for the next arguments, when given)."""
    low = Lowering(name)
    graph = module.forward.graph
    ins = list(graph.inputs())[1:]
    if not ins:
        raise UnsupportedError(f"convert: TorchScript {name}.forward takes no input")
    leaves, shaped = [], []
    cell = _cell_state_standin(module)
    for i, v in enumerate(ins):
        default = first if i == 0 else others[i - 1] if others and i <= len(others) else None
        if default is None and i > 0 and cell is not None and "hid" in v.debugName().lower():
            default = cell              # forward(x, hidden) of a cell loop: hidden is (B, H)
        ex = _ts_example(v.type(), default)
        if ex is None and v.type().kind() == "ListType":
            ex = _list_example(v, default)
        shaped.append(ex)
        if isinstance(ex, tuple):          # a (h, c) argument: one leaf each
            leaves += [(f"{v.debugName()}_{j}", e) for j, e in enumerate(ex)]
        else:
            leaves.append((v.debugName(), ex))
    vals = iter(bind_inputs(low, leaves))
    args = [tuple(next(vals) for _ in ex) if isinstance(ex, tuple) else next(vals) for ex in shaped]
    out = ScriptCapture(low).run(graph, [_Mod(module)] + args, first_only=True)
    return low, out, leaves


def _ts_example(t, default):
    """A stand-in tensor for a TorchScript graph input of type t: a traced graph records its
    example's shape and dtype; a scripted one only says Tensor (then `default`, the stand-in the
    module's first layer suggests, for the sequence; zeros for others); a tuple of tensors gives
    a tuple; an Optional or other type None."""
    torch = _torch()
    kind = t.kind()
    if kind == "TupleType":      # the sequence may be a tuple's first item: forward(x) with x, seq_len = x
        return tuple(_ts_example(e, default if j == 0 else None) for j, e in enumerate(t.elements()))
    if kind != "TensorType":
        return None
    sizes = t.sizes() if hasattr(t, "sizes") else None
    dtype = t.dtype() if hasattr(t, "dtype") else None
    if sizes is not None and all(isinstance(d, int) for d in sizes):
        return torch.zeros(sizes, dtype=dtype or torch.float32)
    return default if default is not None else torch.zeros((1, EX_B, 1))


def _list_example(v, default):
    """Stand-ins for a graph input that is a list of tensors, forward(inputs) with inputs[0] the
    sequence (ABSA-PyTorch's models): as many as the graph unpacks (prim::ListUnpack) or indexes
    (aten::__getitem__ by a constant), the first the sequence's; None when neither says."""
    n = 0
    for u in v.uses():
        node = u.user
        if node.kind() == "prim::ListUnpack":
            n = max(n, len(list(node.outputs())))
        elif node.kind() == "aten::__getitem__":
            idx = list(node.inputs())[1].node()
            if idx.kind() == "prim::Constant" and idx.output().type().kind() == "IntType":
                n = max(n, idx.i("value") + 1)
    if not n:
        return None
    first = default if default is not None else _torch().zeros((1, EX_B, 1))
    return (first,) + (None,) * (n - 1)


def _cell_state_standin(module):
    """(B, H) zeros when the module's first recurrent submodule is a GRUCell / RNNCell (the
    hidden argument of a cell loop), else None."""
    torch = _torch()
    for _, m in module.named_modules():
        on = getattr(m, "original_name", type(m).__name__)
        if on in ("GRUCell", "RNNCell"):
            return torch.zeros((EX_B, m.weight_hh.shape[1]))
        if on in ("LSTM", "GRU", "RNN", "LSTMCell"):
            return None
    return None


def _step_inputs(module):
    """Stand-ins of a one-step module whose first layer reads torch.cat((x_t, hidden), 1) (the
    char-RNN tutorials' i2h: in = F + H, out = H): x_t (B, F) and hidden (B, H), when forward
    takes a second tensor."""
    torch = _torch()
    ins = list(module.forward.graph.inputs())[1:]
    if len(ins) < 2 or ins[1].type().kind() != "TensorType":
        return []
    for _, m in module.named_modules():
        on = getattr(m, "original_name", type(m).__name__)
        if on in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Embedding", "Conv1d"):
            return []
        if on == "Linear":
            n_in, n_out = m.weight.shape[1], m.weight.shape[0]
            return [(torch.zeros((EX_B, n_in - n_out)), [torch.zeros((EX_B, n_out))])] if n_in > n_out else []
    return []


def _traced_lengths(module):
    """Stand-ins of the length a trace fixed: torch.jit.trace unrolls a loop over time for the
    example's steps (x[:, t] for t up to T - 1 as constants) and bakes len(x) into views, and saves
    no input shape, so after the stand-ins of _script_inputs: (B, T, F), (T,) and (B, T) ones of
    1 + the largest step a select takes, of the steps a split into ones unpacks
    (input.split(1, dim=1)), and of the first four sizes views name (view(len(sentence), 1, -1);
    the Kaggle Attention module's view(-1, step_dim) after a view(-1, feature_dim))."""
    torch = _torch()

    def const_int(v):
        n = v.node()
        return n.i("value") if n.kind() == "prim::Constant" and n.output().type().kind() == "IntType" else None
    steps, sizes = [], []
    stack = [m.forward.graph.block() for m in module.modules() if hasattr(m, "forward") and hasattr(m.forward, "graph")]
    while stack:
        b = stack.pop()
        for n in b.nodes():
            stack += list(n.blocks())
            ins = list(n.inputs())
            if n.kind() == "aten::select" and const_int(ins[2]) is not None:
                steps.append(const_int(ins[2]))
            elif n.kind() in ("aten::view", "aten::reshape") and ins[1].node().kind() == "prim::ListConstruct":
                # view(len(sentence), 1, -1) of one sequence: the length the trace saw
                sizes += [v for v in map(const_int, ins[1].node().inputs()) if v is not None and v > 1]
            elif n.kind() == "prim::ListUnpack" and ins[0].node().kind() in ("aten::split", "aten::unsafe_split") \
                    and const_int(list(ins[0].node().inputs())[1]) == 1:
                steps.append(len(list(n.outputs())) - 1)
    lengths = ([max(steps) + 1] if steps else []) + list(dict.fromkeys(sizes))[:4]
    out, base = [], _script_inputs(module)
    for T in dict.fromkeys(lengths):
        if not 1 < T <= G.MAX_UNROLL or T == EX_T:
            continue
        for x in base:
            if x.dim() == 3 and x.shape[2] == EX_T and x.shape[1] != EX_T:     # (B, F, T)
                out.append(torch.zeros((x.shape[0], x.shape[1], T), dtype=x.dtype))
            elif x.dim() == 3:                  # (B, T, F)
                out.append(torch.zeros((x.shape[0], T, x.shape[2]), dtype=x.dtype))
            elif x.dim() == 1 and (x.shape[0] == EX_B or x.is_floating_point()):   # one sequence (T,)
                out.append(torch.zeros((T,), dtype=x.dtype))
            elif x.dim() == 2 and tuple(x.shape) == (EX_B, EX_T):     # a series, or a batch of ids
                out.append(torch.zeros((EX_B, T), dtype=x.dtype))
    return out


def _script_inputs(module):
    """Stand-ins for a TorchScript module's sequence input, most likely first: a saved graph
    does not record its input's rank. Ids when its first layer is an embedding (a (B, T) batch,
    else one step or one sequence (B,), else one token as a batch of one, for code that views it
    as (1, 1, -1)), floats of the first recurrent or linear layer's width otherwise ((B, T, F),
    (B, F), (1, F); for one feature also a series without a feature axis, (T,) and (B, T)), or of a
    first Conv1d's channels ((B, T, C) permuted by the code, or (B, C, T))."""
    torch = _torch()
    for _, m in module.named_modules():
        on = getattr(m, "original_name", type(m).__name__)
        if on == "Embedding":
            return [torch.zeros((EX_B, EX_T), dtype=torch.int64), torch.zeros((EX_B,), dtype=torch.int64),
                    torch.zeros((1,), dtype=torch.int64)]
        size = None
        if on in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"):
            w = getattr(m, "weight_ih_l0", getattr(m, "weight_ih", None))
            size = w.shape[1] if w is not None else getattr(m, "input_size", 1)
        elif on == "Linear":
            size = m.weight.shape[1]
        elif on == "Conv1d":       # channels: a batch-first sequence it permutes, or (N, C, L) itself
            size = m.weight.shape[1]
            return [torch.zeros((EX_B, EX_T, size)), torch.zeros((EX_B, size, EX_T))]
        if size is not None:
            series = [torch.zeros((EX_T,)), torch.zeros((EX_B, EX_T))] if size == 1 else []
            return [torch.zeros((EX_B, EX_T, size)), torch.zeros((EX_B, size)), torch.zeros((1, size))] + series \
                + [torch.zeros((EX_B, size, EX_T))]          # N x F x T (a spectrogram)
    return [torch.zeros((EX_B, EX_T, 1))]


# ---------------------------------------------------------------------------------------------
# entry points

def convert_module(module, example_input=None, kind="module"):
    """A custom nn.Module -> Model: torch.export, else torch.fx (module note)."""
    name = type(module).__name__
    args, made = example_args(module, example_input)
    training = module.training
    module.eval()
    try:
        captured, why = None, []
        # quantized modules and nn.MultiheadAttention: torch.fx keeps them whole (export would record
        # their int8 kernels, or the attention's decomposition)
        if not any(_quantized(m) or isinstance(m, _torch().nn.MultiheadAttention) for m in module.modules()):
            try:
                captured = capture_export(module, args, name), "torch.export"
            except FastRNNError:
                raise
            except Exception as e:  # noqa: BLE001 - export fails in many ways; fx may still capture
                why.append(f"torch.export says {error_line(e)}")
        if captured is None:
            try:
                captured = capture_fx(module, args, name), "torch.fx"
            except FastRNNError:
                raise
            except Exception as e:  # noqa: BLE001
                why.append(f"torch.fx says {error_line(e)}")
        if captured is None:         # Python neither capture can see through (an assert on values):
            try:                     # what forward did on the example, checked on a larger input too
                captured = capture_trace(module, args, name), "torch.jit.trace"
            except FastRNNError:
                raise
            except Exception as e:  # noqa: BLE001
                why.append(f"torch.jit.trace says {error_line(e)}")
                raise UnsupportedError(f"convert: {name}.forward cannot be captured: {'; '.join(why)}") from None
        (low, result, leaves), capture = captured
        return finish(low, result, name, kind, capture, module, None if made else args, leaves)
    finally:
        module.train(training)


def capture_trace(module, args, name):
    """The module traced on its example (torch.jit.trace), its graph interpreted like an
    archive's; the example's own tensors stand for the inputs."""
    torch = _torch()
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        traced = torch.jit.trace(module, tuple(args), check_trace=False, strict=False)
        import io
        buf = io.BytesIO()          # saved and loaded: submodules become script modules with graphs
        torch.jit.save(traced, buf)
        buf.seek(0)
        traced = torch.jit.load(buf)
    for w in seen:        # the user's code turned a traced tensor into a Python value: a branch or a
        if issubclass(w.category, torch.jit.TracerWarning) and f"{os.sep}torch{os.sep}" not in w.filename:
            raise UnsupportedError(          # size the trace would freeze at the example's
                f"convert: {name}.forward cannot be captured: torch.export and torch.fx cannot trace it, and "
                f"a trace would freeze its data-dependent control flow or sizes (File \"{w.filename}\", line "
                f"{w.lineno}: {str(w.message).splitlines()[0][:120]})")
    low = Lowering(name)
    leaves, shaped = [], []
    for i, a in enumerate(args):
        shaped.append(a)
        if isinstance(a, (tuple, list)):
            leaves += [(f"arg{i}_{j}", e) for j, e in enumerate(a)]
        else:
            leaves.append((f"arg{i}", a))
    vals = iter(bind_inputs(low, leaves))
    inputs = [type(a)(next(vals) for _ in a) if isinstance(a, (tuple, list)) else next(vals) for a in shaped]
    out = ScriptCapture(low).run(traced.graph, [_Mod(traced)] + inputs, first_only=True)
    return low, out, leaves


def convert_script(module, example_input=None):
    """A TorchScript module -> Model. Without an example, each stand-in of _script_inputs is
    tried in turn; the first that lowers wins (errors are those of the first stand-in)."""
    name = getattr(module, "original_name", None) or type(module).__name__
    args = None
    if example_input is not None:
        args, _ = example_args(module, example_input)
    firsts = [(args[0], list(args[1:]) or None)] if args else \
        [(x, None) for x in _script_inputs(module) + _traced_lengths(module)] + _step_inputs(module)
    error = None
    for first, others in firsts:
        try:
            low, result, leaves = capture_script(module, name, first, others)
            return finish(low, result, name, "torchscript", "torchscript", module, args, leaves)
        except UnsupportedError as e:
            error = error or e
    tensors = [v for v in list(module.forward.graph.inputs())[1:] if v.type().kind() == "TensorType"]
    if args is None and len(tensors) > 2:
        raise UnsupportedError(f"{error}\n(TorchScript keeps no argument shapes, and forward takes "
                               f"{len(tensors)} tensors: pass example_input=[...] with forward's arguments, "
                               f"e.g. the first step of your loop)") from None
    if args is None:
        raise UnsupportedError(f"{error}\n(TorchScript keeps no argument shapes: fastrnn tried stand-in inputs of a "
                               f"few steps; a forward written for one size needs example_input=[...] with its "
                               f"arguments)") from None
    raise error
