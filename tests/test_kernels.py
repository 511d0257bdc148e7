"""Kernel-level accuracy: every activation against float64 on a dense grid including extremes,
through an Activation layer (act_rows) and through the recurrent epilogue (rec_step), with the
error bounds stated in src_c/act/vec.h. Runs under each ISA (.ci/run sets FASTRNN_ISA)."""
import numpy as np
import pytest

import fastrnn
from fastrnn import ir, reference

GRID = np.concatenate([np.linspace(-12, 12, 4801), np.linspace(-0.7, 0.7, 1401),
                       [-100.0, -87.5, -30.0, -1e-6, -1e-30, 0.0, 1e-30, 1e-6, 30.0, 80.0, 100.0]])
PARAMS = {"hard_sigmoid": (1 / 6, 0.5), "clip": (-0.5, 2.0), "elu": (0.7, 0), "affine": (0.8, -0.3), "leaky_relu": (0.1, 0),
          "thresholded_relu": (0.25, 0), "scaled_tanh": (1.7, 0.66)}
# absolute error bounds (|y| <= ~1) and relative ones for unbounded kinds
ABS = {"sigmoid": 2e-7, "tanh": 3e-7, "softsign": 2e-7, "hard_sigmoid": 1e-7, "scaled_tanh": 6e-7}
# the recurrent epilogues' rational tanh and sigmoid (v_tanh_rat_n, v_sigmoid_rat_n; fit_tanh.py
# in src_c/act measures 3.25e-7 and 1.66e-7 on 2.4M points)
EPI_ABS = {"sigmoid": 2e-7, "tanh": 3.5e-7}
REL = 4e-7


def apply(kind, x):
    a = ir.Act(kind, *PARAMS.get(kind, ()))
    m = fastrnn.Model([ir.Activation(x.shape[-1], a)])
    y = m.predict(x.astype(np.float32)[None, None])[0, 0]
    return y, reference.act(a, x.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("kind", [k for k in ir.ACTIVATIONS if k not in ir.ROW_WISE])
def test_elementwise_accuracy(kind):
    x = GRID
    if kind in ("exponential", "selu", "elu", "silu", "softplus"):
        x = x[x < 80]   # exp saturates at 1.65e38 above 88 (documented); keep results finite
    y, want = apply(kind, x)
    err = np.abs(y - want)
    if kind in ABS:
        assert err.max() <= ABS[kind], (kind, x[err.argmax()], err.max())
    else:
        bound = REL * np.abs(want) + 2e-7   # relative, plus absolute near 0 (exp(x) - 1)
        bad = err > bound
        assert not bad.any(), (kind, x[bad][:5], y[bad][:5], want[bad][:5])


@pytest.mark.parametrize("kind", ["softmax", "log_softmax", "layer_norm", "l2_normalize", "l2_normalize_add",
                                  "mul_halves"])
@pytest.mark.parametrize("n", [1, 7, 16, 17, 33, 100])
def test_rowwise_accuracy(kind, n):
    rng = np.random.default_rng(n)
    n *= 2 if kind == "mul_halves" else 1          # two halves
    x = (rng.normal(size=(5, n)) * 6 + (40 if kind == "layer_norm" else 0)).astype(np.float32)
    x[4] *= 1e-7                             # l2_normalize: a row whose norm is under the epsilon
    a = ir.Act("l2_normalize", 1e-6) if kind == "l2_normalize" else \
        ir.Act("l2_normalize", 1e-5, 1) if kind == "l2_normalize_add" else ir.Act(kind)
    m = fastrnn.Model([ir.Activation(n, a)])
    y = m.predict(x[:, None])[:, 0]
    np.testing.assert_allclose(y, reference.act(a, x.astype(np.float64)), rtol=1e-6,
                               atol=3e-7 if kind != "layer_norm" else 1e-6)


def test_nonfinite_inputs():
    x = np.array([np.nan, np.inf, -np.inf, 0.0], np.float32)
    for kind in [k for k in ir.ACTIVATIONS if k not in ir.ROW_WISE]:
        y, want = apply(kind, x.astype(np.float64))
        assert np.isnan(y[0]) == np.isnan(want[0]), kind   # NaN propagates (thresholded_relu: 0)
        # +-inf: finite where the function is bounded; exp-like kinds saturate at 1.65e38 (documented)
        for i in (1, 2):
            if np.isfinite(want[i]):
                assert abs(y[i] - want[i]) <= 1e-6 * max(1, abs(want[i])) or np.isnan(want[i]), (kind, x[i], y[i])


def test_recurrent_epilogue_activations():
    """sigmoid/tanh as inlined in rec_step: a 1-unit RNN with weight 1 is the activation itself."""
    for kind in ("tanh", "sigmoid"):
        x = GRID.astype(np.float32)
        layer = ir.Recurrent("rnn", [{"W_ih": np.ones((1, 1), np.float32), "W_hh": np.zeros((1, 1), np.float32)}],
                             activations=[kind])
        y = fastrnn.Model([layer]).predict(x[:, None, None])[:, 0, 0]
        want = reference.act(ir.Act(kind), x.astype(np.float64))
        assert np.abs(y - want).max() <= EPI_ABS[kind], (kind, np.abs(y - want).max())
        # relative accuracy near 0 (tanh keeps it: x P(x^2) / Q(x^2))
        if kind == "tanh":
            small = (np.abs(x) < 0.5) & (x != 0)
            assert (np.abs(y - want)[small] / np.abs(want[small])).max() <= 4e-7


def test_lstm_gate_pairs():
    """An LSTM step's gate math as rec_step runs it (with the default gates: i g and o tanh(c) each
    with one reciprocal, act/vec.h v_sig_tanh_lk), against float64: a 1-unit LSTM whose W_ih is the
    identity takes its gate pre-activations straight from the input. Bounds: the forget gate's
    error times |c_prev| plus what was measured for the pairs (c 3.3e-7, h 5.2e-7; the separate
    rational forms gave 3.8e-7 and 5.3e-7). Also under input_forget (the separate forms)."""
    rng = np.random.default_rng(5)
    n = 100000
    x = np.concatenate([rng.uniform(-3, 3, (n, 4)), rng.uniform(-25, 25, (n, 4))]).astype(np.float32)
    x[:4] = [[np.inf, -np.inf, 1, 2], [1, 2, np.inf, -np.inf], [np.nan, 0, 0, 0], [0, 0, 0, np.nan]]
    c0 = rng.uniform(-4, 4, (1, 2 * n, 1)).astype(np.float32)
    h0 = np.zeros_like(c0)
    for opts in ({}, dict(input_forget=True)):
        layer = ir.Recurrent("lstm", [{"W_ih": np.eye(4, dtype=np.float32),
                                       "W_hh": np.zeros((4, 1), np.float32)}], **opts)
        _, (h, c) = fastrnn.Model([layer]).predict(x[:, None], initial_state=[h0, c0], return_state=True)
        with np.errstate(invalid="ignore"):   # the NaN and inf rows
            _, (hr, cr) = reference.run([layer], x[:, None], initial_state=[h0, c0])
        assert np.array_equal(np.isnan(h), np.isnan(hr)) and np.array_equal(np.isnan(c), np.isnan(cr))
        ok = ~np.isnan(cr)
        assert (np.abs(c - cr)[ok] <= 1.7e-7 * np.abs(c0)[ok] + 4.5e-7).all(), opts
        assert (np.abs(h - hr)[ok] <= 6e-7).all(), opts


@pytest.mark.parametrize("K", [1, 3, 64, 127, 128, 130, 256, 300, 520])
def test_gemm_rows_are_batch_invariant(K):
    """The packed GEMM through a Dense layer: a row's output has the same bits whether it runs
    alone (the streaming path: whole tiles over all of K), in a few rows (each tile shape of the
    few-row path), or among hundreds (the
    blocked path: every tile over one block of K at a time, partial sums in scratch; row blocks
    of 48 and of the L2 size, MC), and matches float64. Column counts cover partial vectors and
    panels of 2 and 4 vectors."""
    rng = np.random.default_rng(K)
    x = rng.uniform(-1, 1, (301, 1, K)).astype(np.float32)
    for N in (1, 17, 70, 130):
        layer = ir.Dense(rng.uniform(-0.5, 0.5, (N, K)).astype(np.float32),
                         rng.uniform(-0.5, 0.5, N).astype(np.float32))
        m = fastrnn.Model([layer])
        full = m.predict(x)
        want = reference.run([layer], x)[0]
        np.testing.assert_allclose(full, want, rtol=1e-5, atol=1e-5 * np.sqrt(K))
        # every row count of the few-row path (gemm_few: each tile shape, one or two tiles)
        spans = [(0, n) for n in range(2, 17)] + [(300, 301), (11, 24), (40, 101), (5, 300)]
        for lo, hi in spans:
            np.testing.assert_array_equal(m.predict(x[lo:hi]), full[lo:hi], err_msg=f"N={N} rows {lo}:{hi}")
