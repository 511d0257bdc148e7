"""The test oracle of the corpus: what fastrnn must return for a model, computed from the source
framework's own output on the same input (DESIGN.md section 1; tests/corpus/README.md).

Conventions (one function each below):

convert   fastrnn.convert(module, example_input=args), args = what the code passes to forward
          (a tensor, or a tuple of forward's arguments); TorchScript archives and .onnx files are
          converted from their path.

sequence  predict is batch-major. x is forward's first argument, given to predict as (B, T, ...):
          transposed from (T, B, ...) when the module is time-major, from (B, F, T) for N x F x T
          spectrogram input. The expected value is forward's first output (the first element of a
          returned tuple), made batch-major: (T, B, F) -> (B, T, F); (T*B, F) of a time-major model
          and (B*T, F) of a batch-first one -> (B, T, F); every other shape ((B, F), (B,), (B, T) of
          a batch-first model, h_n (layers*dirs, B, H) returned by an encoder) as forward gives it.
          forward(x, lengths) -> predict(x, lengths=lengths);
          forward(x, hidden)  -> predict(x) equals forward(x, init_hidden(B)) (the zero state), and
                                 predict(x, initial_state=[h] / [h, c], return_state=True) equals
                                 forward(x, (h, c)) and its returned state, in torch's layout, for a
                                 random state (when forward returns a state).
unbatched forward over one sequence ((T,) ids, (T,) or (T, F) floats): predict takes the rows
          stacked, (B, T) / (B, T, F), and returns forward's outputs stacked, row by row.
step      forward(x_t, hidden) -> (y_t, hidden) driven by the user's loop: m.stream(batch_size=B),
          s.step(feed(x, t)) gives the loop's output at step t for every row, the loop starting from
          initHidden()/init_hidden()'s state. feed is x[:, t] ((B, F) or (B,) ids); a step module
          with several non-state arguments (char_rnn_generation's forward(category, input,
          hidden)) gets them as a tuple in forward's order. Outputs are compared with their batch-1
          axes dropped: (B, -1).
onnx      m.run(None, feeds) equals onnxruntime's InferenceSession(path).run(None, feeds), output by
          output, with the graph's own names and layouts.
keras     m.predict(x) equals the Keras model's own output on x (a list for several outputs).

Accuracy: max |diff| <= 1e-5 for O(1) outputs, rtol 1e-4 beyond (np.testing.assert_allclose with
rtol=1e-4, atol=1e-5). A dynamically quantized module is compared with its own (quantized) output
at a tolerance of twice the distance, on the same arguments, between it and the float model holding
its dequantized weights, plus 1e-5 (what an fp32 engine running the int8 weights can reach: torch
also quantizes the activations on the fly; see quantized_tolerance).
"""
from __future__ import annotations

import copy

import numpy as np
import torch

RTOL, ATOL = 1e-4, 1e-5


# ---------------------------------------------------------------------------------------------
# helpers

def np_(v):
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().numpy()
    return np.asarray(v)


def first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def state_list(h):
    """torch's hidden argument or returned state -> [h] or [h, c] as numpy arrays (a list of one
    (h, c) per module, AWD-LSTM's, flattened in order: h1, c1, h2, c2, ...)."""
    if h is None:
        return None
    if isinstance(h, (tuple, list)):
        return [a for x in h for a in state_list(x)]
    return [np_(h)]


def close(got, want, what="", rtol=RTOL, atol=ATOL):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol,
                               err_msg=what)


class SourceFailed(Exception):
    """The source model (or the artifact captured from it) cannot run the test input: no oracle."""


def run(module, args, reset=None):
    try:
        if reset is not None:
            reset(module)
        with torch.no_grad():
            return module(*args)
    except Exception as e:  # noqa: BLE001
        raise SourceFailed(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e


def batch_major_x(case, x):
    """forward's x -> the batch-major array predict takes."""
    a = np_(x)
    if case.layout == "time_major":
        a = np.swapaxes(a, 0, 1)
    elif case.layout == "batch_feature_time":
        a = np.swapaxes(a, 1, 2)
    return np.ascontiguousarray(a)


def expected_output(case, y, B):
    """forward's first output -> what predict returns (batch-major)."""
    y = np_(y)
    if case.output == "TB":
        return np.swapaxes(y, 0, 1)
    if case.output == "TB_flat":
        return np.swapaxes(y.reshape(y.shape[0] // B, B, *y.shape[1:]), 0, 1)
    if case.output == "BT_flat":
        return y.reshape(B, y.shape[0] // B, *y.shape[1:])
    return y          # "B", "BT", "state": as forward gives it


def seq_arg(args):
    """forward's sequence: its first argument, or that argument's first item when it is a tuple
    (Chinese-Text-Classification-Pytorch's forward(self, x) with x, seq_len = x)."""
    return args[0][0] if isinstance(args[0], (tuple, list)) else args[0]


def _roles(case, args):
    out = {"x": seq_arg(args)}
    for r, a in zip(case.roles[1:], args[1:]):
        out[r] = a
    return out


def predict_kwargs(case, args):
    r = _roles(case, args)
    kw = {}
    if "lengths" in r:
        kw["lengths"] = np_(r["lengths"]).astype(np.int64)
    if r.get("hidden") is not None:
        kw["initial_state"] = state_list(r["hidden"])
    return kw


def _random_like(h, rng):
    if isinstance(h, (tuple, list)):
        return tuple(_random_like(a, rng) for a in h)
    return torch.from_numpy((0.5 * rng.standard_normal(tuple(h.shape))).astype(np.float32)).to(h.dtype)


# ---------------------------------------------------------------------------------------------
# tolerance of a dynamically quantized module

def dequantized_twin(qmodule, float_builder):
    """The float model with the quantized module's dequantized weights (what an fp32 engine runs)."""
    twin = float_builder()
    fmods = dict(twin.named_modules())
    for name, q in qmodule.named_modules():
        f = fmods.get(name)
        if f is None:
            continue
        if hasattr(q, "get_weight") and hasattr(q, "get_bias"):        # dynamic quantized LSTM/GRU
            with torch.no_grad():
                for k, w in q.get_weight().items():
                    getattr(f, k).copy_(w.dequantize() if w.is_quantized else w)
                for k, b in q.get_bias().items():
                    getattr(f, k).copy_(b)
        elif type(q).__module__.startswith("torch.ao.nn.quantized") and callable(getattr(q, "weight", None)):
            with torch.no_grad():
                f.weight.copy_(q.weight().dequantize())
                if q.bias() is not None:
                    f.bias.copy_(q.bias())
        elif not list(q.children()) and hasattr(q, "weight") and isinstance(q.weight, torch.nn.Parameter):
            with torch.no_grad():
                f.weight.copy_(q.weight)
    return twin.eval()


def quantized_tolerance(runner, twin, args):
    """atol for a quantized case on these arguments: 2 x |quantized - dequantized-float twin| + 1e-5,
    over forward's first output and its returned state."""
    q = run(runner, args)
    f = run(twin, copy.deepcopy(args))
    qs = [np_(first(q))] + (state_list(q[1]) if isinstance(q, (tuple, list)) and len(q) > 1 else [])
    fs = [np_(first(f))] + (state_list(f[1]) if isinstance(f, (tuple, list)) and len(f) > 1 else [])
    return 2.0 * max(float(np.abs(a - b).max()) for a, b in zip(qs, fs)) + ATOL


# ---------------------------------------------------------------------------------------------
# the checks

def check_shapes(model, x, got):
    """Model.output_shapes (the signature's shape program, what `fastrnn info` prints) says the
    shapes predict just returned (the tests give every batch a full-length row)."""
    shapes = [np.shape(g) for g in (got if isinstance(got, list) else [got])]
    want = [tuple(s) for s in model.output_shapes(x.shape[0], x.shape[1])]
    assert shapes == want, f"output_shapes {want} but predict returned {shapes}"


def check_sequence(model, runner, case, args, rng, twin=None):
    """A whole-sequence module (or its TorchScript archive) against the converted model. twin: the
    dequantized float model of a quantized module (sets the tolerance, quantized_tolerance)."""
    atol = ATOL if twin is None else quantized_tolerance(runner, twin, args)
    out = run(runner, args, case.reset)
    B = np_(seq_arg(args)).shape[{"time_major": 1}.get(case.layout, 0)]
    want = expected_output(case, first(out), B)
    x = batch_major_x(case, seq_arg(args))
    kw = predict_kwargs(case, args)
    r = _roles(case, args)
    has_hidden = "hidden" in r
    if has_hidden:
        kw.pop("initial_state", None)       # predict(x) without a state = the init_hidden zero state
    got = model.predict(x, **kw)
    close(got, want, f"{case.name}: predict vs forward", atol=atol)
    check_shapes(model, x, got)
    if has_hidden and isinstance(out, (tuple, list)) and len(out) > 1:
        # an explicit, non-zero state (shaped as the one passed, or when None as the one returned),
        # and the state forward returns
        h = _random_like(r["hidden"] if r["hidden"] is not None else out[1], rng)
        args2 = tuple(h if role == "hidden" else a for role, a in zip(case.roles, args))
        if twin is not None:
            atol = quantized_tolerance(runner, twin, args2)
        out2 = run(runner, args2, case.reset)
        kw2 = dict(kw, initial_state=state_list(h))
        got2, state = model.predict(x, return_state=True, **kw2)
        close(got2, expected_output(case, first(out2), B), f"{case.name}: predict(initial_state=...)", atol=atol)
        want_state = state_list(out2[1])
        assert len(state) == len(want_state), f"{case.name}: {len(state)} states, forward returns {len(want_state)}"
        for k, (g, w) in enumerate(zip(state, want_state)):
            close(g, w, f"{case.name}: returned state {k}", atol=atol)


def check_unbatched(model, runner, case, rows):
    """rows: forward's arguments for B single sequences; predict takes them stacked."""
    want = np.stack([np_(first(run(runner, r, case.reset))) for r in rows])
    x = np.stack([np_(r[0]) for r in rows])
    got = model.predict(x)
    close(got, want, f"{case.name}: predict(rows) vs forward(row)")
    check_shapes(model, x, got)


def user_loop(runner, case, seq, B, T, init_module):
    """The source's loop, row by row from init(): expected[t] is (B, -1)."""
    outs = []
    for b in range(B):
        hidden = case.init(init_module)
        row = []
        for t in range(T):
            y, hidden = run(runner, case.step(seq, b, t, hidden))
            row.append(np_(y).reshape(-1))
        outs.append(row)
    return [np.stack([outs[b][t] for b in range(B)]) for t in range(T)]


def check_step(model, runner, case, seq, B, T, init_module):
    want = user_loop(runner, case, seq, B, T, init_module)
    s = model.stream(batch_size=B)
    for t in range(T):
        f = case.feed(seq, t)
        f = tuple(np_(a) for a in f) if isinstance(f, tuple) else np_(f)
        y = np.asarray(s.step(f))
        close(y.reshape(B, -1), want[t], f"{case.name}: stream step {t} vs the user's loop")


def check_onnx(model, path, feeds):
    import onnxruntime as ort
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        raise SourceFailed(f"onnxruntime: {type(e).__name__}: {e}") from e
    got = model.run(None, feeds)
    assert len(got) == len(want), f"run: {len(got)} outputs, onnxruntime gives {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        close(g, w, f"onnx output {k} ({sess.get_outputs()[k].name})")


def keras_outputs(kmodel, x):
    import keras
    y = kmodel(x, training=False)
    if isinstance(y, (list, tuple)):
        return [np.asarray(keras.ops.convert_to_numpy(a)) for a in y]
    return np.asarray(keras.ops.convert_to_numpy(y))


def check_keras(model, kmodel, x):
    try:
        want = keras_outputs(kmodel, x)
    except Exception as e:  # noqa: BLE001
        raise SourceFailed(f"keras: {type(e).__name__}: {e}") from e
    got = model.predict(x)
    check_shapes(model, x, got)
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), \
            f"predict: expected a list of {len(want)} outputs, got {type(got).__name__}"
        for k, (g, w) in enumerate(zip(got, want)):
            close(g, w, f"keras output {k}")
    else:
        close(got, want, "keras predict")
