"""Keras functional graphs on the importers' shared lowering (converters/graph.py).

converters/keras.py builds a chain of layers directly, with the Keras semantics a chain needs
(masks, go_backwards parity, return_state outputs, stateful layers, Keras 2 time_major). A
functional model that is not a chain -- residual Add around recurrent layers, a Multiply gate,
a Concatenate of two branches, a Subtract / Average / Maximum of branches -- is refused there
("not a chain") and comes here: each layer call becomes the same op calls a torch module's
capture makes (linear, lstm / gru / rnn_tanh, add, mul, cat, mean, amax, activations ...), so
branches are handled once, by the shared lowering's carried columns, for every source.

What this frontend reads: one InputLayer ((batch, time, features) floats or (batch, time) ids);
Embedding without mask_zero; Dense (on the last axis, any activation fastrnn has);
SimpleRNN / LSTM / GRU and RNN(cell) with their standard activations (SimpleRNN: tanh or relu),
return_sequences either way, no masks, go_backwards, return_state or stateful; Bidirectional of
those (every merge mode); Activation / ReLU / Softmax / LeakyReLU / ELU; TimeDistributed(Dense /
Activation); Conv1D and Max/AveragePooling1D (made by the chain builder, placed as torch's
windows); LayerNormalization over the features; GlobalAverage/MaxPooling1D; Add, Subtract,
Multiply, Average and Concatenate on the last axis; dropout-like layers (identity). One output. Each layer is called
once (a shared layer, a Siamese encoder, is refused). Everything else is refused by name, all
refusals listed at once as for the other frontends; converts() then reports the chain builder's
error with this frontend's.
"""
from __future__ import annotations

import numpy as np

from fastrnn import ir
from fastrnn.errors import ModelFormatError, UnsupportedError

from .. import graph as G
from ..graph import Lowering, PT

EX_B, EX_T = 2, 5                 # the stand-in input's batch and time (no sizes are baked in)
_MERGE = {"Add": "add", "Subtract": "sub", "Multiply": "mul"}
_ACT_LAYERS = {"ReLU": "relu", "Softmax": "softmax"}


def convert(cfg, version, reader, name):
    """A functional Keras config (converters/keras.py load_source) -> Model."""
    from fastrnn import Model
    from ..keras import IDENTITY, _inbound, _layer_name, _refs, _ZipWeights
    from ..passes import cut_early, fold
    c = cfg["config"]
    layers = [dict(lc, name=_layer_name(lc)) for lc in c["layers"]]
    if isinstance(reader, _ZipWeights):
        for l in layers:
            l["_wkey"] = reader.key(l)
    ins, outs = _refs(c.get("input_layers", [])), _refs(c.get("output_layers", []))
    if len(ins) != 1 or len(outs) != 1:
        raise UnsupportedError(f"convert: {name}: {len(ins)} inputs and {len(outs)} outputs (the graph frontend "
                               f"reads models of one input and one output)")
    low = Lowering(name)
    env, made = {}, set()
    for l in layers:
        calls = _inbound(l)
        made.add(l["name"])
        if l["class_name"] == "InputLayer":
            env[(l["name"], 0, 0)] = _input(low, l)
            continue
        if len(calls) != 1:
            low.refuse(l["name"], f"called {len(calls)} times (a shared layer)", f" ({l['class_name']})")
            env.update({(l["name"], i, 0): G.Bad() for i in range(len(calls))})
            continue
        for r in calls[0]:
            if r[0] not in made:
                raise ModelFormatError(f"layer {l['name']!r} reads {r[0]!r} before it is made")
            if (r[0], r[1], r[2]) not in env:     # a second output (return_state) of a layer made here
                low.refuse(l["name"], f"reads output {r[2]} of {r[0]!r} (the graph frontend reads one output "
                                      f"per layer: no return_state)", f" ({l['class_name']})")
                env[(r[0], r[1], r[2])] = G.Bad()
        args = [env[(r[0], r[1], r[2])] for r in calls[0]]
        where = f" (layer {l['name']!r}, {l['class_name']})"
        if G._has_bad(args):                  # reads a refused layer's output: refused once, there
            env[(l["name"], 0, 0)] = G.Bad()
            continue
        if l["class_name"] in IDENTITY:
            env[(l["name"], 0, 0)] = args[0]
            continue
        try:
            env[(l["name"], 0, 0)] = _layer(low, l, args, version, reader, where)
        except ModelFormatError:
            raise                                 # a malformed file, not a refusal
        except G.REFUSALS as e:                   # also a Keras option the helpers refuse
            env[(l["name"], 0, 0)] = low.refuse(l["name"], G.why(e), f" ({l['class_name']})")
    y = env.get(tuple(outs[0]))
    low.raise_errors()
    try:
        y = low.whole(low.tensor(y, "a tensor computed by the layers"))
    except G.REFUSALS as e:
        raise UnsupportedError(f"convert: {name}: the output: {G.why(e)}") from None
    layers_ir, head = G.split_head(low, fold)
    axes = [low.lab(a) for a in y.axes]
    if axes not in (["B", "T", "F"], ["B", "F"]):
        raise UnsupportedError(f"convert: {name}: the output has axes {G._axes_str(axes)}")
    time = y.time if y.time not in ("final", None) else None
    layers_ir, time = cut_early(layers_ir, time)
    meta = {"source": "keras", "keras_version": version, "class_name": cfg.get("class_name"),
            "frontend": "graph", "time_major": False, "stateful": False,
            "input_dtype": "int32" if low.input_ids else None}
    return Model(layers_ir, meta=meta, signature={"outputs": None, "states": None, "time": time, "head": head})


def _input(low, l):
    c = l["config"]
    shape = c.get("batch_shape") or c.get("batch_input_shape")
    dtype = c.get("dtype")
    dtype = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    ids = isinstance(dtype, str) and dtype.startswith(("int", "uint"))
    if not isinstance(shape, list) or len(shape) != (2 if ids else 3) or (not ids and not isinstance(shape[-1], int)):
        raise UnsupportedError(f"the input {l['name']!r} has shape {shape}: expected (batch, time"
                               f"{'' if ids else ', features'})")
    low.xsizes = {"x0": EX_B, "x1": shape[1] if isinstance(shape[1], int) else EX_T}
    low.bind = {"x0": "B", "x1": "T"}
    low.input_ids = ids
    return PT(0, ("x0", "x1") if ids else ("x0", "x1", "F"), None if ids else int(shape[-1]))


def _layer(low, l, args, version, reader, where):
    from ..keras import _act, _refuse_extras, _weights
    cls, c = l["class_name"], l["config"]
    def call(op, *a):
        return _call(low, op, *a)
    if cls in _MERGE or cls in ("Average", "Concatenate"):
        if cls == "Concatenate" and c.get("axis", -1) not in (-1, 2):
            low.fail(f"a Concatenate along axis {c.get('axis')} (only the features)")
        if cls == "Concatenate":
            return call("cat", args, -1)
        if cls == "Subtract" and len(args) != 2:
            low.fail("a Subtract of other than two tensors")
        y = args[0]
        for a in args[1:]:
            y = call(_MERGE.get(cls, "add"), y, a)
        return call("mul", y, 1.0 / len(args)) if cls == "Average" else y
    if cls == "MultiHeadAttention":
        return _mha(low, l, args, reader)
    x = args[0]
    if len(args) != 1:
        low.fail(f"{len(args)} inputs (initial states, masks or several tensors: the graph frontend reads one)")
    if cls == "Embedding":
        _refuse_extras(l, c, {"input_dim", "output_dim", "mask_zero"})
        if c.get("mask_zero"):
            low.fail("mask_zero=True (a masked model that is not a chain)")
        (E,) = _weights(l, reader.get(l), [(int(c["input_dim"]), int(c["output_dim"]))])
        return call("embedding", E, x)
    if cls == "Dense":
        _refuse_extras(l, c, {"units"})
        U = int(c["units"])
        arrs = reader.get(l)
        k, *b = _weights(l, arrs, [(_in_width(arrs, x), U)] + ([(U,)] if c.get("use_bias", True) else []))
        y = call("linear", x, np.ascontiguousarray(k.T), b[0] if b else None)
        return _activation(low, y, _act(c.get("activation"), version, where, allow_rowwise=True))
    if cls == "Activation":
        return _activation(low, x, _act(c.get("activation"), version, where, allow_rowwise=True))
    if cls in _ACT_LAYERS:
        if cls == "ReLU" and (c.get("max_value") is not None or c.get("negative_slope") or c.get("threshold")):
            low.fail("a ReLU with max_value, negative_slope or threshold")
        if cls == "Softmax" and c.get("axis", -1) not in (-1, 2):
            low.fail(f"a Softmax over axis {c.get('axis')}")
        return _activation(low, x, ir.Act(_ACT_LAYERS[cls]))
    if cls == "LeakyReLU":
        return call("leaky_relu", x, float(c.get("negative_slope", c.get("alpha", 0.3))))
    if cls == "ELU":
        return call("elu", x, float(c.get("alpha", 1.0)))
    if cls in ("GlobalAveragePooling1D", "GlobalAvgPool1D", "GlobalMaxPooling1D", "GlobalMaxPool1D"):
        if c.get("data_format", "channels_last") != "channels_last" or c.get("keepdims"):
            low.fail("a global pooling with data_format channels_first or keepdims")
        return call("mean" if "Av" in cls else "amax", x, [1])
    if cls == "LayerNormalization":
        axis = c.get("axis", -1)
        if axis not in (-1, 2, [-1], [2]):
            low.fail(f"a LayerNormalization over axis {axis}")
        arrs = reader.get(l)
        n = arrs[0].shape[0] if arrs else low.tensor(x).width
        ws = _weights(l, arrs, [(n,)] * (int(bool(c.get("scale", True))) + int(bool(c.get("center", True)))))
        gamma = ws.pop(0) if c.get("scale", True) else None
        beta = ws.pop(0) if c.get("center", True) else None
        return call("layer_norm", x, [n], gamma, beta, float(c.get("epsilon", 1e-3)))
    if cls == "TimeDistributed":
        inner = c.get("layer")
        if not isinstance(inner, dict) or inner.get("class_name") not in ("Dense", "Activation"):
            low.fail("a TimeDistributed of other than Dense or Activation")
        return _layer(low, {"class_name": inner["class_name"], "config": inner.get("config", {}), "name": l["name"],
                            "_wkey": l.get("_wkey")}, args, version, reader, where)
    if cls in _WINDOWS:
        return _window(low, l, x, version, reader)
    if cls == "Lambda":
        low.fail("a Lambda layer (Python code in the model, which a converter cannot read): write it with Keras "
                 "layers")
    if cls == "Bidirectional":
        return _recurrent(low, l, x, version, reader, where, bidirectional=True)
    return _recurrent(low, l, x, version, reader, where)


def _in_width(arrs, x):
    """A layer's input features: its kernel's rows, or (no weights in the file: _weights then says
    so) those of the tensor it reads."""
    return arrs[0].shape[0] if arrs and len(arrs[0].shape) >= 2 else getattr(x, "width", None)


def _call(low, op, *args):
    """One shared op's handler; its refusal refuses the layer (convert records it once)."""
    fn = G.handler(op)
    if fn is None:
        low.fail(f"op {op!r} is not supported")
    return fn(low, *args)


def _activation(low, x, a):
    if a.kind == "linear":
        return x
    return G.activation(low, x, a.kind, alpha=a.alpha, beta=a.beta, dim=-1 if a.kind in ir.ROW_WISE else None)


def _mha(low, l, args, reader):
    """MultiHeadAttention()(x, x) (self-attention: query, value and key the same tensor): the shared
    self_attention op, its q / k / v kernels (E, heads, key_dim) as one Linear of 3 heads * key_dim
    rows, the output kernel (heads, key_dim, E') as the Linear after it."""
    from ..keras import _refuse_extras, _weights
    c = l["config"]
    _refuse_extras(l, c, {"num_heads", "key_dim", "value_dim", "use_bias", "output_shape", "attention_axes",
                          "use_gate", "sliding_window", "flash_attention", "seed"})
    h, kd = int(c["num_heads"]), int(c["key_dim"])
    if c.get("value_dim") not in (None, kd) or c.get("output_shape") is not None or c.get("use_gate") \
            or c.get("sliding_window") is not None or c.get("attention_axes") not in (None, [1], (1,), 1, [-2]):
        low.fail("value_dim other than key_dim, output_shape, use_gate, sliding_window or attention_axes other "
                 "than the time axis")
    if len(args) < 2 or any(a != args[0] for a in args[1:]):
        low.fail("attention between different tensors, or with an attention mask (only self-attention: "
                 "query, value and key the same sequence)")
    node = (l.get("inbound_nodes") or [{}])[0]
    kw = node.get("kwargs", {}) if isinstance(node, dict) else {}
    x = low.tensor(args[0])
    E, bias = x.width, bool(c.get("use_bias", True))
    arrs = reader.get(l)
    shapes = []
    for _ in range(3):
        shapes += [(E, h, kd)] + ([(h, kd)] if bias else [])
    out_shape = arrs[-2 if bias else -1].shape if arrs else (h, kd, E)
    shapes += [(h, kd, out_shape[-1])] + ([(out_shape[-1],)] if bias else [])
    ws = _weights(l, arrs, shapes)
    step = 2 if bias else 1
    in_w = np.concatenate([ws[i * step].reshape(E, h * kd).T for i in range(3)])
    in_b = np.concatenate([ws[i * step + 1].reshape(-1) for i in range(3)]) if bias else None
    out_w = np.ascontiguousarray(ws[3 * step].reshape(h * kd, -1).T)
    out_b = ws[3 * step + 1] if bias else None
    return G.handler("self_attention")(low, x, np.ascontiguousarray(in_w), in_b, out_w, out_b, h,
                                       bool(kw.get("use_causal_mask")), 1.0 / float(np.sqrt(kd)))


_WINDOWS = ("Conv1D", "Convolution1D", "MaxPooling1D", "AveragePooling1D", "MaxPool1D", "AvgPool1D")


def _window(low, l, x, version, reader):
    """Conv1D and 1-D pooling: the chain builder makes the layer (Keras's padding and kernel
    layout, converters/keras.py), the shared lowering places it as the windows of torch's Conv1d
    over (batch, channels, time)."""
    from ..keras import _Builder
    x = low.tensor(x)
    b = _Builder(version, reader)
    b.width = x.width
    b.add(0, l)
    (layer,) = b.layers
    what = "convolution" if isinstance(layer, ir.Conv1D) else "pooling"
    xc = G._window_input(low, G.handler("transpose")(low, x, 1, 2), what)
    y = G._window_out(low, xc, layer, b.width, what)
    return G.handler("transpose")(low, y, 1, 2)


_INFERENCE_OPTIONS = ("units", "activation", "recurrent_activation", "use_bias", "reset_after", "return_sequences",
                      "return_state", "stateful", "time_major")
_STANDARD = {"lstm": ("tanh", "sigmoid"), "gru": ("tanh", "sigmoid"), "rnn": ("tanh", None)}


def _recurrent(low, l, x, version, reader, where, bidirectional=False):
    """SimpleRNN / LSTM / GRU / RNN(cell), or a Bidirectional of one, as the torch-layout
    recurrent op the torch captures give: -> its output sequence, or its final value."""
    from ..keras import _cell_weights, _rnn_conf
    outer, arrs = l["config"], reader.get(l)         # a Bidirectional's: forward, then backward
    if bidirectional:
        inner, back = outer.get("layer"), outer.get("backward_layer")
        if not isinstance(inner, dict):
            raise ModelFormatError(f"{where}: no wrapped layer in the config")
        if isinstance(back, dict):            # Keras 3 writes the one it made: the forward's, reversed
            fc, bc = inner.get("config", {}), back.get("config", {})
            same = all(fc.get(k) == bc.get(k) for k in _INFERENCE_OPTIONS)   # not initializers, names
            if back.get("class_name") != inner.get("class_name") or not same or \
                    bool(bc.get("go_backwards")) == bool(fc.get("go_backwards")):
                low.fail("a Bidirectional with a backward_layer other than the forward layer reversed")
        merge = outer.get("merge_mode", "concat")
        if merge not in ("concat", "sum", "mul", "ave"):
            low.fail(f"a Bidirectional with merge_mode={merge!r}")
        l = {"class_name": inner.get("class_name"), "config": inner.get("config", {}), "name": l["name"],
             "_wkey": l.get("_wkey")}
    cell, c = _rnn_conf(l)
    if cell is None:
        low.fail(f"class {l['class_name']} is not supported by the graph frontend")
    for k in ("go_backwards", "return_state", "stateful", "time_major"):
        if c.get(k):
            low.fail(f"{k}=True (a layer the graph frontend does not read; as a chain it converts)")
    act, rec = c.get("activation", "tanh"), c.get("recurrent_activation", _STANDARD[cell][1])
    mode = {"lstm": "lstm", "gru": "gru", "rnn": "rnn_tanh"}[cell]
    if cell == "rnn" and act == "relu":
        mode = "rnn_relu"
    elif act != "tanh" or (rec != _STANDARD[cell][1] and cell != "rnn"):
        low.fail(f"activation={act!r}, recurrent_activation={rec!r} (the graph frontend reads the standard ones)")
    D = 2 if bidirectional else 1
    n, I = len(arrs) // D, _in_width(arrs, x)
    params = []
    for d in range(D):
        w, H, reset_after = _cell_weights(l, cell, c, arrs[d * n:(d + 1) * n], I, version)
        params += [w["W_ih"], w["W_hh"]] + ([w["b_ih"], w["b_hh"]] if "b_ih" in w else [])
    if cell == "gru" and not reset_after:
        mode = "gru_v1"
    out, hn, _ = low.recurrent(mode, x, None, params, "b_ih" in w, 1, bidirectional, True)
    seq = bool(c.get("return_sequences", False))
    if not bidirectional:
        return out if seq else _call(low, "select", hn, 0, -1)
    if seq:
        y = out
    else:
        y = _call(low, "cat", [_call(low, "select", hn, 0, 0), _call(low, "select", hn, 0, 1)], -1)
    merge = outer.get("merge_mode", "concat")
    if merge == "concat":
        return y
    H = params[1].shape[1]
    a, b = _call(low, "slice", y, -1, 0, H), _call(low, "slice", y, -1, H, 2 * H)
    z = _call(low, {"sum": "add", "ave": "add", "mul": "mul"}[merge], a, b)
    return _call(low, "mul", z, 0.5) if merge == "ave" else z

