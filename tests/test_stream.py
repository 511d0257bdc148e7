"""Streams: one step of the whole pipeline per call; equal to predict on the prefix (bit for bit:
the kernels are batch-invariant), state snapshots, views as inputs, ids of any integer dtype,
threads sharing one model."""
import threading

import numpy as np
import pytest
from conftest import dense, rec

import fastrnn
from fastrnn import ir


def models(rng):
    E = ir.Embedding(rng.normal(size=(30, 8)).astype(np.float32), mask_zero=True)
    yield "ids-seq", [E, rec(rng, "lstm", 8, 17, peepholes=True, proj=5), rec(rng, "gru", 5, 16),
                      dense(rng, 16, 30, "softmax")]
    yield "ids-last", [ir.Embedding(rng.normal(size=(30, 8)).astype(np.float32)),
                       rec(rng, "gru", 8, 33, linear_before_reset=False),
                       rec(rng, "lstm", 33, 15, return_sequences=False), dense(rng, 15, 1, "sigmoid")]
    yield "float-rnn", [rec(rng, "rnn", 6, 1), rec(rng, "rnn", 1, 33, clip=0.5), ir.Activation(33, "tanh")]
    yield "float-masking", [ir.Masking(4), rec(rng, "lstm", 4, 16, masked_output="zero")]
    # input projections of several GEMM panels, the last one narrower (GRU 40: 144 columns), which
    # a stream step runs in descending order every other step (gemm/impl.h, gemm_panels: desc)
    yield "float-panels", [rec(rng, "gru", 6, 40), rec(rng, "lstm", 40, 36), dense(rng, 36, 3)]


@pytest.mark.parametrize("B", [1, 7])
def test_stream_equals_predict_on_prefix(rng, B):
    for name, layers in models(rng):
        m = fastrnn.Model(layers)
        T = 13
        if m.input_kind == "ids":
            x = rng.integers(0, 30, (B, T))
            x[0, 3] = 0
        else:
            x = rng.normal(size=(B, T, m.input_size)).astype(np.float32)
            x[0, 5] = 0      # a masked step for the Masking model
        full = m.predict(x)
        s = m.stream(B)
        for t in range(T):
            y = s.step(x[:, t])
            want = full[:, t] if m.output_is_sequence else m.predict(x[:, :t + 1])
            np.testing.assert_array_equal(y, want, err_msg=f"{name} step {t}")
        _, states = m.predict(x, return_state=True)
        for a, b in zip(s.state, states):
            np.testing.assert_array_equal(a, b)


def test_snapshot_restore_resumes_exactly(rng):
    m = fastrnn.Model(next(models(rng))[1])
    x = rng.integers(0, 30, (3, 20))
    s = m.stream(3)
    for t in range(8):
        s.step(x[:, t])
    snap = s.state
    first = [s.step(x[:, t]) for t in range(8, 20)]
    s.state = snap
    again = [s.step(x[:, t]) for t in range(8, 20)]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # a snapshot is a copy: stepping never changes it
    before = [a.copy() for a in snap]
    s.step(x[:, 0])
    for a, b in zip(snap, before):
        np.testing.assert_array_equal(a, b)
    s.reset()
    fresh = m.stream(3)
    np.testing.assert_array_equal(s.step(x[:, 0]), fresh.step(x[:, 0]))


def test_step_into_views_and_dtypes(rng):
    layers = [rec(rng, "lstm", 5, 16), dense(rng, 16, 3)]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(4, 9, 5))            # float64: converted, not refused
    want = m.predict(x.astype(np.float32))
    s = m.stream(4)
    out = np.empty((4, 3), np.float32)
    for t in range(9):
        s.step_into(x[:, t], out)            # non-contiguous view, float64
        np.testing.assert_array_equal(out, want[:, t])
    s.reset()
    xf = np.asfortranarray(x.astype(np.float32)[:, 0])
    np.testing.assert_array_equal(s.step(xf), want[:, 0])
    s.reset()
    np.testing.assert_array_equal(s.step(x[:, 0].astype(np.float16).astype(np.float32)),
                                  s.__class__(m, m._cm, 4).step(x[:, 0].astype(np.float16)))
    s.reset()
    np.testing.assert_array_equal(s.step(x[:, 0].tolist()), want[:, 0])   # lists work too


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.uint32, np.uint64])
def test_ids_any_integer_dtype(rng, dtype):
    layers = [ir.Embedding(rng.normal(size=(100, 4)).astype(np.float32)), rec(rng, "gru", 4, 8)]
    m = fastrnn.Model(layers)
    ids = rng.integers(0, 100, (2, 6))
    want = m.predict(ids)
    s = m.stream(2)
    both = np.stack([ids, ids], -1).astype(dtype)       # (2, 6, 2): ids[:, t] a strided view
    for t in range(6):
        np.testing.assert_array_equal(s.step(both[:, t, 0]), want[:, t])
    np.testing.assert_array_equal(m.predict(ids.astype(dtype)), want)


def test_bidirectional_and_reverse_cannot_stream(rng):
    for direction in ("bidirectional", "reverse"):
        m = fastrnn.Model([rec(rng, "lstm", 3, 4, direction)])
        with pytest.raises(fastrnn.UnsupportedError, match="cannot stream"):
            m.stream()


def test_threads_share_a_model(rng):
    """4 threads, each with its own Stream on one shared Model, give the serial results."""
    m = fastrnn.Model([ir.Embedding(rng.normal(size=(50, 16)).astype(np.float32)),
                       rec(rng, "lstm", 16, 64), rec(rng, "gru", 64, 33), dense(rng, 33, 50, "softmax")])
    seqs = [rng.integers(0, 50, (2, 300)) for _ in range(4)]
    serial = [m.predict(x) for x in seqs]
    results = [None] * 4
    barrier = threading.Barrier(4)

    def work(i):
        s = m.stream(2)
        out = np.empty((2, 50), np.float32)
        ys = []
        barrier.wait()
        for t in range(300):
            s.step_into(seqs[i][:, t], out)
            ys.append(out.copy())
        results[i] = np.stack(ys, 1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_state_setter_checks(rng):
    m = fastrnn.Model([rec(rng, "lstm", 3, 5)])
    s = m.stream(2)
    with pytest.raises(fastrnn.ShapeError, match="expected 2 arrays"):
        s.state = [np.zeros((1, 2, 5))]
    with pytest.raises(fastrnn.ShapeError, match=r"expected shape \(1, 2, 5\)"):
        s.state = [np.zeros((1, 2, 5)), np.zeros((1, 3, 5))]
    s.state = [np.ones((1, 2, 5)), None]        # None: zeros
    st = s.state
    assert np.all(st[0] == 1) and np.all(st[1] == 0)


def test_a_stream_stepped_by_two_threads_raises(rng):
    """Misuse (one Stream, two threads at once) gives FastRNNError, never a crash or torn state."""
    import time
    m = fastrnn.Model([rec(rng, "lstm", 128, 256)])
    s = m.stream(16)
    x = np.ones((16, 128), np.float32)
    stop = threading.Event()

    def stepper():
        while not stop.is_set():
            try:
                s.step(x)
            except fastrnn.FastRNNError:
                pass

    t = threading.Thread(target=stepper)
    t.start()
    seen = set()
    try:
        deadline = time.time() + 20
        while time.time() < deadline and len(seen) < 2:
            try:
                s.step(x)
            except fastrnn.FastRNNError as e:
                assert "another thread" in str(e)
                seen.add("step")
            try:
                s.state
            except fastrnn.FastRNNError as e:
                assert "another thread" in str(e)
                seen.add("state")
    finally:
        stop.set()
        t.join()
    assert seen == {"step", "state"}
    s.reset()                      # still a working stream
    np.testing.assert_array_equal(s.step(x), m.stream(16).step(x))
