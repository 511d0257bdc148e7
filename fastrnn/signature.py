"""The source model's signature: how predict's outputs and states look to the user.

The engine computes one thing per call: the pipeline's output y ((B, T, out) or (B, out)) and the
native states (per recurrent layer h (dirs, B, width), then c (dirs, B, hidden) for an LSTM).
A converter records here how the source framework presents them, so that predict returns what
the source model returns (DESIGN.md section 1, conventions 2 and 3):

  outputs: None (y alone), or a list; predict then returns a list with one array per entry:
    {"kind": "y", "flip": bool, "cols": [[start, stop], ...] | None}
        the pipeline output; flip reverses the time axis (Keras go_backwards returns its
        sequence in processing order); cols concatenates those feature ranges (Keras
        Bidirectional(merge_mode=None) returns the two directions as two outputs).
    {"kind": "state", "state": k, "dir": d}
        native state k, direction d, shape (B, width) (Keras return_state=True).
    {"kind": "states", "parts": [[k, d], ...]}
        native states stacked on a new first axis, (len(parts), B, width): a torch forward
        that returns h_n (or c_n) first (an encoder handing its state to a decoder).
    A list of one entry makes predict return that one array.
  time: None (y as the engine computes it), or how the source cuts y's time axis when the
    pipeline runs every step (before outputs apply):
    "last"          y[:, T-1]: torch's out[:, -1] of a bidirectional RNN (the forward final
                    state and the backward direction's first step), the layers after it run
                    per step, which is the same thing.
    "longest"       y[:, :n], n = max(lengths) (T without lengths): pad_packed_sequence pads to
                    the longest row, not to T.
    "longest_last"  y[:, n-1]: out[:, -1] of pad_packed_sequence's output.
    "valid_last"    y[b, lengths[b]-1] (y[:, T-1] without lengths; step 0 for a length 0): each
                    row's last valid step, torch's out[torch.arange(B), lengths - 1] or
                    out.gather(1, (lengths - 1).view(-1, 1, 1).expand(...)).
    {"tail": k}     y[:, max(T-k, 0):]: torch's out[:, -k:] (the last k steps of the padded time
                    axis, fewer when T < k, as the slice gives; lengths do not move them).
  states: None (native layout), or a list of entries, one array per entry, for
    predict(initial_state=...) and predict(return_state=True):
    {"parts": [[k, d], ...], "stack": bool, "cols": [start, stop] (optional)}
        stack=False: one part, shape (B, width) (Keras: h, c of each layer and direction);
        stack=True: the parts stacked on a new first axis (torch: (layers*dirs, B, H)).
        cols: the source's state is those columns of the native one (a torch one-step module whose
        output reads the previous hidden state runs a recurrence with the output's columns next
        to the hidden ones, converters/cells.py); the other columns start at zero.
    Together the parts must name every (state, direction) of the model exactly once.

  axes: None, or the axes of predict's output y for a source that drops or adds unit axes
    (a regressor's .squeeze(-1), an out[:, -1:]): labels among "B", "T", "F", "1" in that
    order apart from the units, "B" first; "F" may be missing only when the output has one
    feature. "#k" axes right before "F" view the features as (k, ..., F / prod(k)) (a
    forecaster's self.fc(h).view(B, horizon, n_features)); a graph output's axes may hold them
    too. predict reshapes the engine's (B, T, F) / (B, F) to it; streams do not.
  lengths_pad: None, or a padding id of a model of token ids whose source packs its rows by
    (ids != pad).sum(1): predict without lengths counts them the same way.
  head: None, or {"from": n, "parts": [[k, d], ...]}: layers n.. (Dense and Activation layers) are
    a head over the final states: they read native states (k, d), each (B, width), side by side,
    and predict returns their output (B, out) (torch's h_n.permute(1, 0, 2).reshape(B, -1) of a
    stacked RNN, whose lower layers' final states no pipeline layer passes on). Streams run the
    head on the states after each step; outputs, time and graph are then None.
  graph: None, or an ONNX graph's own inputs and outputs, for Model.run (converters/onnx.py):
    {"inputs": [{"name", "role": "x", "axes": [...]},          the sequence; axes label its
                {"name", "role": "lengths"},                   dims (B, T, F; 1 a unit axis)
                {"name", "role": "static", "cols": [a, b]},    per-row features (B, b - a): the
                                                               input's columns a..b at every step
                {"name", "role": "state", "axes": [...],       initial states; row r of axis S
                 "parts": [[k, d], ...]}],                     initialises native state k, dir d
     "outputs": [{"name", "kind": "y", "axes": [...], "dirs": D, "last": None | "final" | "step"},
                 {"name", "kind": "state", "axes": [...], "parts": [[k, d], ...]},
                 {"name", "kind": "lengths", "input": name, "dtype": "int32" | "int64"}]}
    y's features split into (D, F) when its axes hold D; "last": the output has no T axis.

The signature is plain JSON and is saved in the .frnn file with the layers.
"""
from __future__ import annotations

import numpy as np

from .errors import ModelFormatError, ShapeError


def _int(v):
    return type(v) is int


def keeps_time(time):
    """Whether predict still returns a time axis after signature time `time` cuts y (a model
    whose engine output is a sequence)."""
    return time in (None, "longest") or isinstance(time, dict)


def check(sig, state_dims, output_size, output_is_sequence, internal=(), input_size=None):
    """Validate (and normalise) a signature dict against a model. state_dims: list of
    (dirs, width) per native state; output_is_sequence: the engine's y; internal: native states
    the source has no counterpart of (a pooling layer's running pool): the source's states need
    not name them (they start at zero); input_size: features of a float input (None: token ids),
    which a graph's sequence input must carry on an F axis (optional for one feature, absent for
    ids). Raises ModelFormatError."""
    if sig is None:
        return {"outputs": None, "states": None, "time": None, "graph": None, "axes": None, "head": None,
                "lengths_pad": None}
    if not isinstance(sig, dict) or not set(sig) <= {"outputs", "states", "time", "graph", "axes", "head",
                                                     "lengths_pad"}:
        raise ModelFormatError(f"signature must be a dict with outputs, states, time, graph, axes, head and/or "
                               f"lengths_pad, got {sig!r}")
    pad = sig.get("lengths_pad")
    if pad is not None and (not _int(pad) or pad < 0 or input_size is not None):
        raise ModelFormatError(f"signature lengths_pad {pad!r}: a padding id (an int >= 0) of a model of token ids")
    head = sig.get("head")
    if head is not None and (sig.get("outputs") is not None or sig.get("time") is not None):
        raise ModelFormatError("signature head: the model's output is the head's (no outputs, no time)")
    graph = None
    if sig.get("graph") is not None:
        seq = output_is_sequence and keeps_time(sig.get("time"))     # what predict returns
        graph = _check_graph(sig["graph"], state_dims, output_size, seq, input_size)
    outs, states, time = sig.get("outputs"), sig.get("states"), sig.get("time")
    if time is not None:
        tail = isinstance(time, dict)
        if tail and (set(time) != {"tail"} or not _int(time["tail"]) or not 1 <= time["tail"] <= 1 << 31):
            raise ModelFormatError(f"signature time {{'tail': k}} needs a number of steps k >= 1, got {time!r}")
        if (not tail and time not in ("last", "longest", "longest_last", "valid_last")) or not output_is_sequence:
            raise ModelFormatError(f"signature time must be 'last', 'longest', 'longest_last', 'valid_last' or "
                                   f"{{'tail': k}} on a "
                                   f"model that outputs every step, got {time!r}")
        output_is_sequence = keeps_time(time)
    if outs is not None:
        if not isinstance(outs, list) or not outs:
            raise ModelFormatError("signature outputs must be a non-empty list")
        norm = []
        for i, o in enumerate(outs):
            if not isinstance(o, dict):
                raise ModelFormatError(f"signature output {i}: expected a dict, got {o!r}")
            if o.get("kind") == "y" and set(o) <= {"kind", "flip", "cols"}:
                flip, cols = o.get("flip", False), o.get("cols")
                if type(flip) is not bool or (flip and not output_is_sequence):
                    raise ModelFormatError(f"signature output {i}: bad flip {flip!r}")
                if cols is not None:
                    if not isinstance(cols, list) or not cols or not all(
                            isinstance(c, list) and len(c) == 2 and _int(c[0]) and _int(c[1])
                            and 0 <= c[0] < c[1] <= output_size for c in cols):
                        raise ModelFormatError(f"signature output {i}: bad cols {cols!r} "
                                               f"(ranges within [0, {output_size}])")
                norm.append({"kind": "y", "flip": flip, "cols": cols})
            elif o.get("kind") == "states" and set(o) == {"kind", "parts"} and isinstance(o["parts"], list) \
                    and o["parts"] and all(isinstance(p, list) and len(p) == 2 and _int(p[0]) and _int(p[1])
                                           and 0 <= p[0] < len(state_dims) and 0 <= p[1] < state_dims[p[0]][0]
                                           for p in o["parts"]) \
                    and len({state_dims[p[0]][1] for p in o["parts"]}) == 1:
                norm.append({"kind": "states", "parts": [list(p) for p in o["parts"]]})
            elif o.get("kind") == "state" and set(o) == {"kind", "state", "dir"}:
                k, d = o["state"], o["dir"]
                if not (_int(k) and _int(d) and 0 <= k < len(state_dims) and 0 <= d < state_dims[k][0]):
                    raise ModelFormatError(f"signature output {i}: no state {k!r} direction {d!r}")
                norm.append({"kind": "state", "state": k, "dir": d})
            else:
                raise ModelFormatError(f"signature output {i}: unknown form {o!r}")
        outs = norm
    if states is not None:
        if not isinstance(states, list):
            raise ModelFormatError("signature states must be a list")
        seen, norm = set(), []
        for i, e in enumerate(states):
            if not isinstance(e, dict) or not {"parts", "stack"} <= set(e) <= {"parts", "stack", "cols"} \
                    or type(e["stack"]) is not bool or not isinstance(e["parts"], list) or not e["parts"]:
                raise ModelFormatError(f"signature state {i}: expected {{'parts': [[k, d], ...], 'stack': bool}}")
            parts = []
            for p in e["parts"]:
                if not (isinstance(p, list) and len(p) == 2 and _int(p[0]) and _int(p[1])
                        and 0 <= p[0] < len(state_dims) and 0 <= p[1] < state_dims[p[0]][0]):
                    raise ModelFormatError(f"signature state {i}: no state/direction {p!r}")
                if tuple(p) in seen:
                    raise ModelFormatError(f"signature state {i}: {p!r} named twice")
                seen.add(tuple(p))
                parts.append((p[0], p[1]))
            if not e["stack"] and len(parts) != 1:
                raise ModelFormatError(f"signature state {i}: an unstacked entry has one part")
            if len({state_dims[k][1] for k, _ in parts}) != 1:
                raise ModelFormatError(f"signature state {i}: stacked parts differ in width")
            entry = {"parts": [list(p) for p in parts], "stack": e["stack"]}
            cols = e.get("cols")
            if cols is not None:
                w = state_dims[parts[0][0]][1]
                if not (isinstance(cols, list) and len(cols) == 2 and _int(cols[0]) and _int(cols[1])
                        and 0 <= cols[0] < cols[1] <= w):
                    raise ModelFormatError(f"signature state {i}: bad cols {cols!r} (a range within [0, {w}])")
                entry["cols"] = list(cols)
            norm.append(entry)
        need = {(k, d) for k, (dirs, _) in enumerate(state_dims) for d in range(dirs) if k not in internal}
        seen -= {(k, d) for k, d in seen if k in internal}
        if seen != need:
            raise ModelFormatError(f"signature states must name every state and direction once; "
                                   f"missing {sorted(need - seen)[:4]}")
        states = norm
    axes = sig.get("axes")
    if axes is not None:
        core = ["B", "T", "F"] if output_is_sequence else ["B", "F"]
        split = [a for a in axes if _split_axis(a)] if isinstance(axes, list) else []
        k = int(np.prod([int(a[1:]) for a in split])) if split else 1
        if not isinstance(axes, list) or not all(isinstance(a, str) and (a in ("B", "T", "F", "1") or _split_axis(a))
                                                 for a in axes) \
                or [a for a in axes if a != "1" and a not in split] not in (core, core[:-1] if output_size == 1 else core) \
                or not axes or axes[0] != "B" or outs is not None or graph is not None \
                or split and ("F" not in axes or axes[axes.index("F") - len(split):axes.index("F")] != split
                              or output_size % k):
            raise ModelFormatError(f"signature axes {axes!r}: expected {core} with unit axes '1' after 'B' "
                                   f"(and without 'F' only for one output feature), the features possibly split "
                                   f"as '#k' axes right before 'F' (k dividing the output size), on a "
                                   f"single-output model")
    if head is not None:
        head = {"from": head["from"], "parts": [list(p) for p in head["parts"]]}     # checked by head_parts
    return {"outputs": outs, "states": states, "time": time, "graph": graph, "axes": axes, "head": head,
            "lengths_pad": pad}


def head_from(sig, layers):
    """Where the head of signature head starts (len(layers) without one); its layers are Dense and
    Activation layers after at least one other."""
    head = sig.get("head") if isinstance(sig, dict) else None
    if head is None:
        return len(layers)
    if not isinstance(head, dict) or set(head) != {"from", "parts"}:
        raise ModelFormatError(f"signature head must be {{'from': n, 'parts': [[k, d], ...]}}, got {head!r}")
    n = head["from"]
    if not _int(n) or not 1 <= n < len(layers):
        raise ModelFormatError(f"signature head: 'from' must be a layer index in [1, {len(layers) - 1}], got {n!r}")
    from . import ir
    if not all(isinstance(l, (ir.Dense, ir.Activation)) for l in layers[n:]):
        raise ModelFormatError("signature head: the head's layers must be Dense and Activation layers")
    return n


def head_parts(sig, state_dims, first):
    """The native states a head reads, checked: ([(k, d), ...], their total width)."""
    parts = sig["head"]["parts"]
    if not isinstance(parts, list) or not parts or not all(
            isinstance(p, list) and len(p) == 2 and _int(p[0]) and _int(p[1])
            and 0 <= p[0] < len(state_dims) and 0 <= p[1] < state_dims[p[0]][0] for p in parts):
        raise ModelFormatError(f"signature head: parts must name native states [[k, d], ...], got {parts!r}")
    width = sum(state_dims[k][1] for k, _ in parts)
    if first.input_size != width:
        raise ModelFormatError(f"signature head: its first layer reads {first.input_size} features, the states "
                               f"give {width}")
    return [(k, d) for k, d in parts], width


_LABELS = {"x": {"B", "T", "F", "1"}, "state": {"S", "B", "F", "1"}, "y": {"B", "T", "D", "F", "1"}}


def _check_graph(g, state_dims, output_size, output_is_sequence, input_size=None):
    """Validate the ONNX inputs/outputs entry (a hostile .frnn must not reach run() malformed):
    y outputs match predict's output (time axis, directions dividing the features), state parts
    of one entry share a width."""
    def bad(why):
        raise ModelFormatError(f"signature graph: {why}")
    if not isinstance(g, dict) or set(g) != {"inputs", "outputs"} or not isinstance(g["inputs"], list) \
            or not isinstance(g["outputs"], list):
        bad("expected {'inputs': [...], 'outputs': [...]}")

    def parts_ok(parts):
        return isinstance(parts, list) and parts and all(
            isinstance(p, list) and len(p) == 2 and _int(p[0]) and _int(p[1]) and 0 <= p[0] < len(state_dims)
            and 0 <= p[1] < state_dims[p[0]][0] for p in parts) \
            and len({state_dims[p[0]][1] for p in parts}) == 1

    def axes_ok(axes, kind, need):
        # a y output may flatten batch and time into one axis ("T*B": T outer)
        if not isinstance(axes, list) or not all(isinstance(l, str) for l in axes):
            return False
        atoms = [p for l in axes for p in (l.split("*") if kind == "y" and "*" in l else [l])]
        merged = [l for l in axes if "*" in l]
        split = [l for l in atoms if kind == "y" and _split_axis(l)]      # the features split: '#k' before 'F'
        if split and ("F" not in atoms or atoms[atoms.index("F") - len(split):atoms.index("F")] != split
                      or output_size % int(np.prod([int(l[1:]) for l in split]))):
            return False
        atoms = [l for l in atoms if l not in split]
        return all(l in _LABELS[kind] for l in atoms) \
            and all(set(l.split("*")) <= {"B", "T"} and len(l.split("*")) == 2 for l in merged) \
            and all(atoms.count(l) == 1 for l in need) and all(atoms.count(l) <= 1 for l in atoms if l != "1")
    names = set()
    xs = [e for e in g["inputs"] if isinstance(e, dict) and e.get("role") == "x"]
    has_b = bool(xs) and isinstance(xs[0].get("axes"), list) and "B" in xs[0]["axes"]
    for e in g["inputs"]:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or e["name"] in names:
            bad(f"input {e!r}")
        names.add(e["name"])
        role = e.get("role")
        if role == "x" and set(e) == {"name", "role", "axes"} and axes_ok(e["axes"], "x", "T") \
                and ("F" in e["axes"] if input_size not in (None, 1) else
                     "F" not in e["axes"] if input_size is None else True):
            continue                  # no "B": one unbatched sequence (run() feeds it as a batch of one)
        if role == "lengths" and set(e) == {"name", "role"}:
            continue
        if role == "static" and set(e) == {"name", "role", "cols"} and isinstance(e["cols"], list) \
                and len(e["cols"]) == 2 and all(_int(c) for c in e["cols"]) and input_size \
                and 0 < e["cols"][0] < e["cols"][1] <= input_size:
            continue
        if role == "state" and set(e) == {"name", "role", "axes", "parts"} and axes_ok(e["axes"], "state", "SBF") \
                and parts_ok(e["parts"]):
            continue
        bad(f"input {e!r}")
    if sum(e["role"] == "x" for e in g["inputs"]) != 1:
        bad("exactly one input must be the sequence")
    names = set()
    for e in g["outputs"]:
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or e["name"] in names:
            bad(f"output {e!r}")
        names.add(e["name"])
        if e.get("kind") == "y" and set(e) == {"name", "kind", "axes", "dirs", "last"} \
                and e["last"] in (None, "final", "step") and _int(e["dirs"]) and e["dirs"] in (1, 2) \
                and output_size % e["dirs"] == 0 and (e["last"] is None) == output_is_sequence \
                and axes_ok(e["axes"], "y", ("B" if has_b else "") + ("" if e["last"] else "T")
                            + ("" if output_size == 1 else "F")) \
                and ("B" in [p for l in e["axes"] for p in l.split("*")]) == has_b \
                and ("T" in [p for l in e["axes"] for p in l.split("*")]) == (not e["last"]):
            continue
        if e.get("kind") == "state" and set(e) == {"name", "kind", "axes", "parts"} and parts_ok(e["parts"]) \
                and axes_ok(e["axes"], "state", "BF") and ("S" in e["axes"] or len(e["parts"]) == 1):
            continue
        if e.get("kind") == "lengths" and set(e) == {"name", "kind", "input", "dtype"} \
                and e["dtype"] in ("int32", "int64") and any(i.get("name") == e["input"] and i.get("role") == "lengths"
                                                             for i in g["inputs"]):
            continue                  # the lengths input passed through (deepspeech returns its lengths)
        bad(f"output {e!r}")
    return g


def to_json(sig):
    return {k: v for k, v in sig.items() if v is not None}


def cut_time(sig, y, lengths):
    """The source's time axis from the engine's y (B, T, out): sig["time"] (see above)."""
    if sig["time"] is None:
        return y
    t = sig["time"]
    if isinstance(t, dict):
        k = min(t["tail"], y.shape[1])
        return np.ascontiguousarray(y[:, y.shape[1] - k:])
    if t == "valid_last":
        if lengths is None or not len(lengths):
            return np.ascontiguousarray(y[:, -1])
        idx = np.clip(np.asarray(lengths, np.int64) - 1, 0, y.shape[1] - 1)
        return np.ascontiguousarray(y[np.arange(y.shape[0]), idx])
    n = y.shape[1] if t == "last" or lengths is None or not len(lengths) else max(int(lengths.max()), 1)
    if t != "longest":
        return np.ascontiguousarray(y[:, n - 1])
    return y if n == y.shape[1] else np.ascontiguousarray(y[:, :n])


def outputs(sig, y, native):
    """predict's return value from the engine's y (after cut_time) and native states (list):
    y itself, one array, or a list (outputs_list)."""
    if sig["outputs"] is None:
        return y
    res = outputs_list(sig, y, native)
    return res[0] if len(res) == 1 else res


def outputs_list(sig, y, native):
    """Every entry of sig["outputs"] as an array, in order."""
    outs = sig["outputs"]
    res = []
    for o in outs:
        if o["kind"] == "state":
            res.append(native[o["state"]][o["dir"]].copy())
            continue
        if o["kind"] == "states":
            res.append(np.stack([native[k][d] for k, d in o["parts"]]))
            continue
        a = y
        if o["cols"] is not None:
            a = np.concatenate([a[..., c0:c1] for c0, c1 in o["cols"]], axis=-1)
        if o["flip"]:
            a = a[:, ::-1]
        res.append(np.ascontiguousarray(a) if a is not y else y)
    return res


def split_size(a):
    """k of an axis label '#k' (k of the features' rows, outer to the rest, 'F': torch's
    fc(h).view(B, k, -1)), else None."""
    ok = isinstance(a, str) and a[:1] == "#" and a[1:].isdigit() and a[1:2] != "0" and int(a[1:]) <= 1 << 24
    return int(a[1:]) if ok else None


def _split_axis(a):
    return split_size(a) is not None


def _axis_sizes(axes, shape):
    """The size of each label of axes for an engine y of `shape` ((B, T, F) or (B, F))."""
    sizes = dict(zip(["B", "T", "F"] if len(shape) == 3 else ["B", "F"], shape))
    k = [split_size(a) for a in axes if _split_axis(a)]
    sizes["F"] //= int(np.prod(k)) if k else 1
    return [1 if a == "1" else split_size(a) or sizes[a] for a in axes]


def shape_y(sig, y):
    """predict's y from the engine's (B, T, F) / (B, F): sig["axes"] (see above)."""
    axes = sig["axes"]
    if axes is None:
        return y
    return y.reshape(_axis_sizes(axes, y.shape))


def output_shapes(sig, state_dims, output_size, steps, batch, time, longest=None):
    """The shapes of what predict returns, without running it: the engine's y is (batch, steps,
    output_size) (steps: the engine's output steps for `time` input steps; None when it ends on
    its last step), then the same program as cut_time, outputs_list and shape_y. longest: the
    longest of the lengths given (pad_packed_sequence's time), time when none. -> a list, one
    shape per array predict returns (one entry for a single array)."""
    y = (batch, steps, output_size) if steps is not None else (batch, output_size)
    t = sig["time"]
    if t is not None and steps is not None:
        if isinstance(t, dict):
            y = (batch, min(t["tail"], steps), output_size)
        elif t == "longest":
            y = (batch, steps if longest is None else max(min(longest, steps), 1), output_size)
        else:
            y = (batch, output_size)
    if sig["outputs"] is None:
        axes = sig["axes"]
        if axes is not None:
            y = tuple(_axis_sizes(axes, y))
        return [y]
    out = []
    for o in sig["outputs"]:
        if o["kind"] == "state":
            out.append((batch, state_dims[o["state"]][1]))
        elif o["kind"] == "states":
            out.append((len(o["parts"]), batch, state_dims[o["parts"][0][0]][1]))
        else:
            width = output_size if o["cols"] is None else sum(c1 - c0 for c0, c1 in o["cols"])
            out.append(y[:-1] + (width,))
    return out


def uses_states(sig):
    """True when some output is a state (predict must ask the engine for the final states)."""
    return sig["outputs"] is not None and any(o["kind"] in ("state", "states") for o in sig["outputs"])


def shapes(sig, state_dims, batch):
    """Shapes of the states predict takes and returns, in the signature's layout."""
    if sig["states"] is None:
        return [(d, batch, w) for d, w in state_dims]
    out = []
    for e in sig["states"]:
        w = state_dims[e["parts"][0][0]][1]
        if "cols" in e:
            w = e["cols"][1] - e["cols"][0]
        out.append((len(e["parts"]), batch, w) if e["stack"] else (batch, w))
    return out


def _cols(e):
    c = e.get("cols")
    return slice(None) if c is None else slice(c[0], c[1])


def to_source(sig, native):
    """Native state list -> the source's layout."""
    if sig["states"] is None:
        return native
    out = []
    for e in sig["states"]:
        cols = _cols(e)
        if e["stack"]:
            out.append(np.stack([native[k][d][:, cols] for k, d in e["parts"]]))
        else:
            k, d = e["parts"][0]
            out.append(np.ascontiguousarray(native[k][d][:, cols]))
    return out


def from_source(sig, states, start):
    """States in the source's layout (already shape-checked, float32) -> native list; start: the
    native states every row starts from (what columns no source state covers keep)."""
    if sig["states"] is None:
        return states
    native = [np.array(a) for a in start]
    for e, a in zip(sig["states"], states):
        cols = _cols(e)
        for j, (k, d) in enumerate(e["parts"]):
            native[k][d][:, cols] = a[j] if e["stack"] else a
    return native


def check_states_shape(states, shps, what, start):
    """Common shape/dtype check of a list of state arrays; returns float32 contiguous arrays
    (None entries become those of start, the states every row starts from)."""
    if not isinstance(states, (list, tuple)):
        raise ShapeError(f"{what}: expected a list of {len(shps)} arrays, got {type(states).__name__}")
    if len(states) != len(shps):
        raise ShapeError(f"{what}: expected {len(shps)} arrays, got {len(states)}")
    out = []
    for i, (s, shp) in enumerate(zip(states, shps)):
        if s is None:
            out.append(np.ascontiguousarray(start[i], dtype=np.float32))
            continue
        a = np.asarray(s)
        if a.dtype.kind not in "fiu":
            raise ShapeError(f"{what}[{i}]: expected a float array, got dtype {a.dtype}")
        if a.shape != shp:
            raise ShapeError(f"{what}[{i}]: expected shape {shp}, got {a.shape}")
        out.append(np.ascontiguousarray(a, dtype=np.float32))
    return out
