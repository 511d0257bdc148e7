"""The benchmark workloads, as data, and the one set of weights every engine is built from.

A workload is a network description (`Net`, in PyTorch's terms: cell, sizes, layers, direction,
optional Embedding before and Dense head after) plus how it is driven: `stream` (batch-1 steps
with the state carried from call to call, timed in µs/step) or `seq` (one call on a whole
sequence, timed in ms/call).

Weights are made once per workload as a PyTorch-style state_dict of float32 NumPy arrays
(`make_weights`); from it come the fastrnn IR layers (`ir_layers`), the torch module
(`torch_module`) and the ONNX graph for onnxruntime / openvino (`onnx_model`), so every engine
runs the same numbers. The ONNX graph is written by hand (one fused LSTM/GRU node per layer, the
form ONNX runtimes optimise best) instead of exported from torch; bench/README.md says why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SEED = 20240607
GATES = {"lstm": 4, "gru": 3}


@dataclass(frozen=True)
class Net:
    cell: str                   # "lstm" | "gru"
    input: int                  # features into the first recurrent layer (embedding dim with vocab)
    hidden: int
    layers: int = 1
    bidirectional: bool = False  # concat merge
    vocab: int = 0              # > 0: Embedding(vocab, input) first, the model takes int ids
    head: int = 0               # > 0: Dense(head, sigmoid) on the last step's output

    @property
    def dirs(self):
        return 2 if self.bidirectional else 1

    @property
    def out_size(self):
        return self.head or self.hidden * self.dirs

    def describe(self):
        s = f"{self.cell.upper()} {self.input}->{self.hidden}"
        if self.layers > 1:
            s = f"{self.layers}x {s}"
        if self.bidirectional:
            s = f"bi-{s}"
        if self.vocab:
            s = f"Emb({self.vocab},{self.input}) {s}"
        if self.head:
            s += f" Dense({self.head},sigmoid)@last"
        return s


@dataclass(frozen=True)
class Workload:
    name: str
    net: Net
    kind: str                   # "stream" | "seq"
    batch: int
    T: int = 0                  # seq: time steps per call
    steps: int = 0              # stream: steps per timed repetition (full run)
    quick_steps: int = 0        # stream: steps per repetition with --quick

    @property
    def unit(self):
        return "us/step" if self.kind == "stream" else "ms/call"

    def describe(self):
        shape = f"B={self.batch}" + (f" T={self.T}" if self.kind == "seq" else " step")
        return f"{self.net.describe()}, {shape}"


WORKLOADS = [
    Workload("stream_lstm64", Net("lstm", 64, 64), "stream", 1, steps=4000, quick_steps=1000),
    Workload("stream_lstm256", Net("lstm", 256, 256), "stream", 1, steps=2000, quick_steps=500),
    Workload("stream_lstm1024", Net("lstm", 1024, 1024), "stream", 1, steps=100, quick_steps=25),
    Workload("stream_gru256", Net("gru", 256, 256), "stream", 1, steps=2000, quick_steps=500),
    Workload("seq_lstm256_b1", Net("lstm", 256, 256), "seq", 1, T=100),
    Workload("seq_lstm256_b64", Net("lstm", 256, 256), "seq", 64, T=100),
    Workload("bilstm2_128x256_b32", Net("lstm", 128, 256, layers=2, bidirectional=True), "seq", 32, T=50),
    Workload("emb_lstm32_dense_b128", Net("lstm", 32, 32, vocab=10000, head=1), "seq", 128, T=500),
]


def make_weights(net: Net, seed: int = SEED):
    """A torch-style state_dict (names of the module built by torch_module) of float32 arrays.

    Recurrent and Dense weights ~ U(-1/sqrt(fan), 1/sqrt(fan)) as torch initialises them
    (fan = hidden size for the recurrent layers, in-features for Dense); embedding ~ N(0, 1).
    """
    rng = np.random.default_rng(seed)

    def u(shape, fan):
        k = 1.0 / math.sqrt(fan)
        return rng.uniform(-k, k, shape).astype(np.float32)

    sd = {}
    if net.vocab:
        sd["emb.weight"] = rng.standard_normal((net.vocab, net.input)).astype(np.float32)
    G, H = GATES[net.cell], net.hidden
    for l in range(net.layers):
        n_in = net.input if l == 0 else H * net.dirs
        for sfx in ("", "_reverse")[:net.dirs]:
            sd[f"rnn.weight_ih_l{l}{sfx}"] = u((G * H, n_in), H)
            sd[f"rnn.weight_hh_l{l}{sfx}"] = u((G * H, H), H)
            sd[f"rnn.bias_ih_l{l}{sfx}"] = u((G * H,), H)
            sd[f"rnn.bias_hh_l{l}{sfx}"] = u((G * H,), H)
    if net.head:
        n_in = H * net.dirs
        sd["head.weight"] = u((net.head, n_in), n_in)
        sd["head.bias"] = u((net.head,), n_in)
    return sd


def make_inputs(wl: Workload, seed: int = SEED + 1, steps: int | None = None):
    """seq: x (B, T, F) float32, or ids (B, T) int64 with an Embedding.
    stream: (steps, B, F) or ids (steps, B): entry t is step t's input."""
    rng = np.random.default_rng(seed)
    net = wl.net
    lead = (steps, wl.batch) if wl.kind == "stream" else (wl.batch, wl.T)
    if net.vocab:
        return rng.integers(0, net.vocab, lead, dtype=np.int64)
    return rng.standard_normal(lead + (net.input,)).astype(np.float32)


def _dir_weights(sd, l, sfx):
    return {"W_ih": sd[f"rnn.weight_ih_l{l}{sfx}"], "W_hh": sd[f"rnn.weight_hh_l{l}{sfx}"],
            "b_ih": sd[f"rnn.bias_ih_l{l}{sfx}"], "b_hh": sd[f"rnn.bias_hh_l{l}{sfx}"]}


def ir_layers(net: Net, sd, ir):
    """The fastrnn IR pipeline (ir: the fastrnn.ir module). The canonical layout is torch's, so
    the arrays go in unchanged."""
    layers = []
    if net.vocab:
        layers.append(ir.Embedding(weight=sd["emb.weight"]))
    for l in range(net.layers):
        last_only = net.head and l == net.layers - 1   # the head reads the last step only
        layers.append(ir.Recurrent(
            net.cell, weights=[_dir_weights(sd, l, s) for s in ("", "_reverse")[:net.dirs]],
            direction="bidirectional" if net.bidirectional else "forward", merge_mode="concat",
            return_sequences=not last_only))
    if net.head:
        layers.append(ir.Dense(weight=sd["head.weight"], bias=sd["head.bias"], activation="sigmoid"))
    return layers


def torch_module(net: Net, sd):
    """The torch model a user would write. Without Embedding/head it is the bare nn.LSTM/nn.GRU
    (batch_first), so streaming times exactly `rnn(x_t, state)`. forward returns (y, state)."""
    import torch
    from torch import nn

    rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[net.cell]
    rnn = rnn_cls(net.input, net.hidden, num_layers=net.layers, batch_first=True,
                  bidirectional=net.bidirectional)

    class EmbRnnHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(net.vocab, net.input) if net.vocab else None
            self.rnn = rnn
            self.head = nn.Linear(net.hidden * net.dirs, net.head) if net.head else None

        def forward(self, x, state=None):
            if self.emb is not None:
                x = self.emb(x)
            y, state = self.rnn(x, state)
            if self.head is not None:
                y = torch.sigmoid(self.head(y[:, -1]))
            return y, state

    m = EmbRnnHead() if (net.vocab or net.head) else rnn
    bare = m is rnn                                   # bare module: its keys lack the "rnn." prefix
    state = {(k.removeprefix("rnn.") if bare else k): torch.from_numpy(v.copy()) for k, v in sd.items()}
    m.load_state_dict(state, strict=True)
    return m.eval()


# torch gate order -> ONNX gate order, as block indices into torch's stacked gate rows.
# LSTM: torch i,f,g,o; ONNX i,o,f,c.  GRU: torch r,z,n; ONNX z,r,h.
ONNX_GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2)}


def _to_onnx_gates(a, cell):
    blocks = np.split(a, GATES[cell], axis=0)
    return np.concatenate([blocks[i] for i in ONNX_GATE_ORDER[cell]], axis=0)


def onnx_model(net: Net, sd, batch: int, T: int, with_state: bool):
    """A hand-written ONNX graph equal to torch_module, static shapes (batch, T).

    Inputs: "x" (B, T, F) float32 or (B, T) int64 ids; with_state adds per recurrent layer l
    "h0_l{l}" (and "c0_l{l}" for LSTM), each (dirs, B, H), and the graph then also outputs the
    final states "h_l{l}" / "c_l{l}" (the streaming form: call with T=1, carry the states).
    Output "y": (B, T, dirs*H), or (B, head) with a head.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, inputs, outputs = [], [], [], []
    H, D, B = net.hidden, net.dirs, batch
    lstm = net.cell == "lstm"

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.array(arr, order="C"), name))
        return name

    def node(op, ins, outs, **attrs):
        nodes.append(helper.make_node(op, ins, outs, **attrs))
        return outs[0]

    if net.vocab:
        inputs.append(helper.make_tensor_value_info("x", TensorProto.INT64, [B, T]))
        cur = node("Gather", [const("emb", sd["emb.weight"]), "x"], ["embedded"], axis=0)
    else:
        inputs.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, T, net.input]))
        cur = "x"
    cur = node("Transpose", [cur], ["x_tbf"], perm=[1, 0, 2])          # ONNX RNNs are time-major
    for l in range(net.layers):
        sfxs = ("", "_reverse")[:D]
        W = np.stack([_to_onnx_gates(sd[f"rnn.weight_ih_l{l}{s}"], net.cell) for s in sfxs])
        R = np.stack([_to_onnx_gates(sd[f"rnn.weight_hh_l{l}{s}"], net.cell) for s in sfxs])
        Bias = np.stack([np.concatenate([_to_onnx_gates(sd[f"rnn.bias_ih_l{l}{s}"], net.cell),
                                         _to_onnx_gates(sd[f"rnn.bias_hh_l{l}{s}"], net.cell)])
                         for s in sfxs])
        ins = [cur, const(f"W{l}", W), const(f"R{l}", R), const(f"B{l}", Bias), ""]
        outs = [f"Y{l}", "", ""]
        if with_state:
            names = [f"h0_l{l}"] + ([f"c0_l{l}"] if lstm else [])
            inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [D, B, H]) for n in names]
            ins += names
            outs[1:1 + len(names)] = [f"h_l{l}"] + ([f"c_l{l}"] if lstm else [])
        attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
        if not lstm:
            attrs["linear_before_reset"] = 1          # torch's GRU applies r after W_hn h + b_hn
        while ins[-1] == "":
            ins.pop()
        while outs[-1] == "":
            outs.pop()
        y = node("LSTM" if lstm else "GRU", ins, outs, **attrs)           # (T, D, B, H)
        y = node("Transpose", [y], [f"Y{l}_tbdh"], perm=[0, 2, 1, 3])      # (T, B, D, H)
        cur = node("Reshape", [y, const(f"shape{l}", np.array([T, B, D * H], np.int64))], [f"Y{l}_tbf"])
    if net.head:
        last = node("Gather", [cur, const("last_t", np.array(T - 1, np.int64))], ["last"], axis=0)
        z = node("Gemm", [last, const("head_w", sd["head.weight"]), const("head_b", sd["head.bias"])],
                 ["logits"], transB=1)
        node("Sigmoid", [z], ["y"])
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, net.head]))
    else:
        node("Transpose", [cur], ["y"], perm=[1, 0, 2])
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, T, D * H]))
    if with_state:
        for l in range(net.layers):
            for n in [f"h_l{l}"] + ([f"c_l{l}"] if lstm else []):
                outputs.append(helper.make_tensor_value_info(n, TensorProto.FLOAT, [D, B, H]))
    graph = helper.make_graph(nodes, "fastrnn_bench", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="fastrnn-bench")
    model.ir_version = 8                      # readable by older runtimes too
    onnx.checker.check_model(model)
    return model
