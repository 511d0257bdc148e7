"""Shared helpers: random layer specs with non-trivial weights, and the tolerance of the accuracy
contract (DESIGN.md section 4: 1e-5 absolute where outputs are O(1), rtol 1e-4 otherwise)."""
import contextlib
import io
import warnings
import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn import ir

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def rand_weights(rng, cell, I, H, *, bias=True, peepholes=False, proj=0, scale=0.5):
    G = GATES[cell]
    u = lambda *s: rng.uniform(-scale, scale, s).astype(np.float32)
    w = {"W_ih": u(G * H, I), "W_hh": u(G * H, proj or H)}
    if bias:
        w["b_ih"], w["b_hh"] = u(G * H), u(G * H)
    if peepholes:
        w["P"] = u(3, H)
    if proj:
        w["W_hr"] = u(proj, H)
    return w


def rec(rng, cell, I, H, direction="forward", *, bias=True, peepholes=False, proj=0, **opts):
    nd = 2 if direction == "bidirectional" else 1
    ws = [rand_weights(rng, cell, I, H, bias=bias, peepholes=peepholes, proj=proj) for _ in range(nd)]
    return ir.Recurrent(cell, ws, direction=direction, **opts)


def dense(rng, I, O, activation="linear", bias=True):
    return ir.Dense(rng.uniform(-0.5, 0.5, (O, I)).astype(np.float32),
                    rng.uniform(-0.5, 0.5, O).astype(np.float32) if bias else None, activation)


def quiet():
    """A context that silences warnings and what an exporter prints (torch.jit / torch.onnx)."""
    s = contextlib.ExitStack()
    s.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    s.enter_context(contextlib.redirect_stdout(io.StringIO()))
    s.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return s


def uniform_module(make, seed, scale):
    """make() in eval mode with every parameter drawn from U(-scale, scale) (seeded)."""
    import torch
    torch.manual_seed(seed)
    m = make().eval()
    for p in m.parameters():
        p.data.uniform_(-scale, scale)
    return m


def onnx_export(module, args, path, dynamo, input_names=("x",), dynamic_axes=None):
    """torch.onnx.export of module(*args) to path: the dynamo exporter (static shapes), or the
    legacy one at opset 17 with input_names and dynamic_axes; quiet."""
    import torch
    with quiet():
        if dynamo:
            torch.onnx.export(module, tuple(args), str(path), dynamo=True, external_data=False)
        else:
            torch.onnx.export(module, tuple(args), str(path), dynamo=False, opset_version=17,
                              input_names=list(input_names), dynamic_axes=dynamic_axes)


def close(got, want, what=""):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


@pytest.fixture
def rng(request):
    # a seed per test, stable across runs
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def isa():
    return fastrnn.cpu_info()["isa"]
