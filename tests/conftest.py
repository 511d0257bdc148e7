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


def close(got, want, what=""):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


@pytest.fixture
def rng(request):
    # a seed per test, stable across runs
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def isa():
    return fastrnn.cpu_info()["isa"]
