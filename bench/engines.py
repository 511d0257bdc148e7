"""The engines the runner times, each built for one workload at one thread count (a "column").

A column offers the same four things whatever the engine:
  prep(x)        the input in the engine's own form (tensors, per-step views), made once;
  enter()        set the engine's process-wide settings (torch, fastrnn threads) before it runs;
  output(inp)    its output on `inp` as a NumPy array (the correctness check);
  rep(inp)       one timed repetition: one call (seq) or len(inp) stream steps, the state carried on.
`inp` comes from prep(x), so no conversion is timed.
For a stream, x is (steps, B, F), output() returns (steps, B, out) from a fresh state, and rep()
continues the running state (a long-running stream, as a service keeps one).

Streaming peers are driven as a service would: torch calls the module on (B, 1, F) with the carried
(h, c); onnxruntime / openvino run a T=1 graph that takes and returns the states; TFLite runs a T=1
step model that does the same (made by bench/tflite_convert.py, as the whole-sequence models).
"""
from __future__ import annotations

import os
import tempfile
from functools import partial

import numpy as np

import tflite_convert
import workloads as W

PEERS = ("torch", "torch-nodnn", "onnxruntime", "openvino", "tflite")
# reduced precision (opt-in with --peers): fastrnn's own bf16 / int8 and what users would pick
# instead: torch quantize_dynamic qint8, onnxruntime quantize_dynamic QInt8 (DynamicQuantizeLSTM;
# it leaves a GRU in fp32), OpenVINO with a bf16 inference precision hint (bf16 only where the CPU
# has it)
REDUCED = ("fastrnn-bf16", "fastrnn-int8", "torch-int8", "onnxruntime-int8", "openvino-bf16")
MODULE = {"torch-nodnn": "torch",        # engine -> the package it needs, when the names differ
          "tflite": "ai_edge_litert", "fastrnn-bf16": "fastrnn", "fastrnn-int8": "fastrnn",
          "torch-int8": "torch", "onnxruntime-int8": "onnxruntime", "openvino-bf16": "openvino"}
TOLERANCE = {"bf16": 2e-2, "int8": 6e-2}   # vs the fp32 baseline: a sanity bound, the error is reported


class Column:
    def __init__(self, engine, threads, prep, output, rep, enter=lambda: None):
        self.engine, self.threads = engine, threads
        self.prep, self.output, self.rep, self.enter = prep, output, rep, enter


class CarriedState:
    """Stream through a step function f(x_t, state) -> (y_t, state), state carried between calls."""

    def __init__(self, step, zero_state):
        self.step, self.zero_state = step, zero_state
        self.state = zero_state()

    def rep(self, xs):
        step, st = self.step, self.state
        for x in xs:
            _, st = step(x, st)
        self.state = st

    def output(self, xs):
        step, st, ys = self.step, self.zero_state(), []
        for x in xs:
            y, st = step(x, st)
            ys.append(np.array(y).reshape(y.shape[0], -1))     # (B, 1, H) -> (B, H)
        return np.stack(ys)


# ---------------------------------------------------------------- fastrnn

def tolerance(engine, tol):
    """The check's bound for an engine: tol (fp32), or its precision's (TOLERANCE)."""
    return next((v for k, v in TOLERANCE.items() if engine.endswith("-" + k)), tol)


def fastrnn_column(fastrnn, ctx, threads, precision="fp32"):
    m = fastrnn.Model(ctx.layers)
    name = "fastrnn" if precision == "fp32" else f"fastrnn-{precision}"
    if precision != "fp32":
        m = m.with_precision(precision)
    enter = partial(fastrnn.set_num_threads, threads)
    if ctx.wl.kind == "seq":
        return Column(name, threads, lambda x: x, m.predict, m.predict, enter)
    s = m.stream(batch_size=ctx.wl.batch)
    out = np.empty((ctx.wl.batch, ctx.wl.net.out_size), np.float32)

    def rep(xs):
        step_into = s.step_into
        for x in xs:
            step_into(x, out)

    def output(xs):
        s.reset()
        ys = np.stack([np.array(s.step(x)) for x in xs])
        s.reset()
        return ys

    return Column(name, threads, list, output, rep, enter)


def fastrnn_reduced_column(ctx, threads, precision):
    import fastrnn
    return fastrnn_column(fastrnn, ctx, threads, precision)


# ---------------------------------------------------------------- torch

def torch_column(ctx, threads, onednn=True, int8=False):
    """torch eager. onednn=False ("torch-nodnn") turns off torch's oneDNN (mkldnn) RNN path, which
    torch takes by default on CPU: faster for whole sequences, much slower for single steps.
    int8 ("torch-int8"): torch.ao.quantization.quantize_dynamic of the recurrent and Linear
    modules to qint8 (int8 weights, activations quantized per call)."""
    import torch

    name = "torch-int8" if int8 else "torch" if onednn else "torch-nodnn"
    net = ctx.torch_module()
    if int8:        # quantize_dynamic swaps submodules only: the bench's bare nn.LSTM goes in a holder
        nn = torch.nn

        class Holder(nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, *a):
                return self.m(*a)

        net = torch.ao.quantization.quantize_dynamic(Holder(net), {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)

    def enter():
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn

    if ctx.wl.kind == "seq":
        @torch.inference_mode()
        def call(x):
            return net(x)[0]
        return Column(name, threads, torch.from_numpy, lambda x: call(x).numpy(), call, enter)

    n, B, H = ctx.wl.net.layers * ctx.wl.net.dirs, ctx.wl.batch, ctx.wl.net.hidden

    def zero_state():
        h = torch.zeros(n, B, H)
        return (h, torch.zeros(n, B, H)) if ctx.wl.net.cell == "lstm" else h

    stream = CarriedState(net, zero_state)
    run = torch.inference_mode()
    return Column(name, threads, lambda xs: [torch.from_numpy(x[:, None]) for x in xs],
                  run(stream.output), run(stream.rep), enter)


# ---------------------------------------------------------------- onnxruntime / openvino

def _onnx_feed_stream(engine, threads, ctx, infer):
    """A stream over a T=1 graph: infer(feed) -> [y, *states] in graph output order."""
    net, B = ctx.wl.net, ctx.wl.batch
    names = [n for l in range(net.layers) for n in ([f"h0_l{l}"] + [f"c0_l{l}"] * (net.cell == "lstm"))]
    shape = (net.dirs, B, net.hidden)

    def zero_state():   # the state is the feed dict itself, updated in place step after step
        return {n: np.zeros(shape, np.float32) for n in names}

    def step(x, feed):
        feed["x"] = x
        y, *st = infer(feed)
        feed.update(zip(names, st))
        return y, feed

    stream = CarriedState(step, zero_state)
    return Column(engine, threads, lambda xs: [x[:, None] for x in xs], stream.output, stream.rep)


def ort_column(ctx, threads, int8=False):
    """onnxruntime; int8 ("onnxruntime-int8"): onnxruntime.quantization.quantize_dynamic of the
    same graph, QInt8 weights (its LSTM becomes DynamicQuantizeLSTM; a GRU stays fp32)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    stream = ctx.wl.kind == "stream"
    name = "onnxruntime-int8" if int8 else "onnxruntime"
    src = ctx.onnx_int8_path(stream) if int8 else ctx.onnx_model(stream=stream).SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    if ctx.wl.kind == "seq":
        def call(x):
            return sess.run(["y"], {"x": x})[0]
        return Column(name, threads, lambda x: x, call, call)
    return _onnx_feed_stream(name, threads, ctx, partial(sess.run, None))


def ov_column(ctx, threads, bf16=False):
    """OpenVINO at f32, or ("openvino-bf16") with the bf16 inference precision hint."""
    import openvino as ov

    model = ov.convert_model(ctx.onnx_path(stream=ctx.wl.kind == "stream"))
    name = "openvino-bf16" if bf16 else "openvino"
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    req = compiled.create_infer_request()
    if ctx.wl.kind == "seq":
        def call(x):
            return req.infer({"x": x}, share_inputs=True).to_tuple()[0]
        return Column(name, threads, lambda x: x, call, call)
    return _onnx_feed_stream(name, threads, ctx,
                             lambda feed: req.infer(feed, share_inputs=True).to_tuple())


# ---------------------------------------------------------------- tflite

def tflite_column(ctx, threads):
    """The ai-edge-litert interpreter (its default XNNPACK delegate), num_threads = threads, on
    the .tflite model converted from the same weights (tflite_convert.py). Tensors are found by
    the model's signature names, then each call is set_tensor / invoke / get_tensor."""
    from ai_edge_litert.interpreter import Interpreter

    is_stream = ctx.wl.kind == "stream"
    it = Interpreter(model_path=str(ctx.tflite_path(is_stream)), num_threads=threads)
    it.allocate_tensors()
    runner = it.get_signature_runner()
    ins = {k: d["index"] for k, d in runner.get_input_details().items()}
    outs = {k: d["index"] for k, d in runner.get_output_details().items()}
    del runner            # invoke() refuses to run while anything else holds the interpreter
    set_tensor, invoke, get_tensor = it.set_tensor, it.invoke, it.get_tensor
    if not is_stream:
        (x_in,), (y_out,) = ins.values(), outs.values()

        def call(x):
            it.reset_all_variables()     # the fused LSTM op keeps its final state: a new sequence
            set_tensor(x_in, x)
            invoke()
            return get_tensor(y_out)
        return Column("tflite", threads, lambda x: x, call, call)

    net, x_in = ctx.wl.net, ins["x"]
    kinds = ("h", "c") if net.cell == "lstm" else ("h",)
    st_in = [ins[f"{k}0_l{l}"] for l in range(net.layers) for k in kinds]     # the step model's
    st_out = [outs[f"{k}_l{l}"] for l in range(net.layers) for k in kinds]    # names
    y_at = (net.layers - 1) * len(kinds)                                      # the last layer's h
    shape = (ctx.wl.batch, net.hidden)

    def step(x, st):
        set_tensor(x_in, x)
        for i, s in zip(st_in, st):
            set_tensor(i, s)
        invoke()
        st = [get_tensor(o) for o in st_out]
        return st[y_at], st

    stream = CarriedState(step, lambda: [np.zeros(shape, np.float32) for _ in st_in])
    return Column("tflite", threads, list, stream.output, stream.rep)


BUILDERS = {"torch": torch_column, "torch-nodnn": partial(torch_column, onednn=False),
            "onnxruntime": ort_column, "openvino": ov_column, "tflite": tflite_column,
            "fastrnn-bf16": partial(fastrnn_reduced_column, precision="bf16"),
            "fastrnn-int8": partial(fastrnn_reduced_column, precision="int8"),
            "torch-int8": partial(torch_column, int8=True), "onnxruntime-int8": partial(ort_column, int8=True),
            "openvino-bf16": partial(ov_column, bf16=True)}


# ---------------------------------------------------------------- per-workload context

def has_vnni():
    """The CPU has AVX512-VNNI or AVX-VNNI (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


class Context:
    """One workload's weights, IR layers and (lazily, shared by columns) torch / ONNX / TFLite
    models."""

    def __init__(self, wl, ir):
        self.wl = wl
        self.sd = W.make_weights(wl.net)
        self.layers = W.ir_layers(wl.net, self.sd, ir)
        self._cache = {}
        self._tmp = None

    def _cached(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def torch_module(self):
        return W.torch_module(self.wl.net, self.sd)

    def onnx_model(self, stream):
        T = 1 if stream else self.wl.T
        return self._cached(("onnx", stream), lambda: W.onnx_model(
            self.wl.net, self.sd, self.wl.batch, T, with_state=stream))

    def onnx_path(self, stream):
        """The ONNX model written to a file (openvino's convert_model takes a path)."""
        def write():
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="fastrnn-bench-")
            path = os.path.join(self._tmp.name, f"{self.wl.name}{'_step' if stream else ''}.onnx")
            with open(path, "wb") as f:
                f.write(self.onnx_model(stream).SerializeToString())
            return path
        return self._cached(("path", stream), write)

    def onnx_int8_path(self, stream):
        """The ONNX model quantized by onnxruntime.quantization.quantize_dynamic (QInt8), a file."""
        def make():
            from onnxruntime.quantization import QuantType, quantize_dynamic
            path = self.onnx_path(stream)
            out = path[:-5] + "_int8.onnx"
            # without VNNI, onnxruntime's u8 x s8 products saturate their 16-bit pair sums
            # (vpmaddubsw) unless the weights keep 7 bits: its reduce_range option
            quantize_dynamic(path, out, weight_type=QuantType.QInt8, reduce_range=not has_vnni())
            return out
        return self._cached(("onnx_int8", stream), make)

    def tflite_path(self, stream):
        """The cached .tflite file (converted on first use; raises with the reason if it cannot)."""
        return self._cached(("tflite", stream), lambda: tflite_convert.model_path(
            self.wl, self.sd, stream))

    def close(self):
        if self._tmp is not None:
            self._tmp.cleanup()
