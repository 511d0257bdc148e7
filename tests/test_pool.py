"""StreamPool: many batch-1 conversations stepped as one batch (src_c/engine.c, stream pools).
The oracle is a batch-1 Stream per slot, itself equal to predict on the prefix (test_stream.py):
every pool step must give exactly its bits, whatever subset of slots is stepped, in whatever
order, with slots opened, closed, reset and restored in between. Runs under every ISA
(tests/run.sh)."""
import threading

import numpy as np
import pytest
from conftest import dense, rand_weights, rec
from test_stream import models

import fastrnn
from fastrnn import ir


def _input(m, rng, n):
    if m.input_kind == "ids":
        x = rng.integers(0, m.layers[0].vocab_size, n)
        x[rng.random(n) < 0.2] = 0        # masked steps where the Embedding has mask_zero
        return x
    x = rng.normal(size=(n, m.input_size)).astype(np.float32)
    x[rng.random(n) < 0.2] = 0            # masked steps for a Masking layer
    return x


def _drive(m, rng, cap, ticks, threads=1):
    """Random open/close/reset/step traffic on a pool and on one Stream per live slot; every pool
    output must equal its slot's Stream output bit for bit."""
    fastrnn.set_num_threads(threads)
    try:
        pool = fastrnn.StreamPool(m, cap)
        assert pool and len(pool) == 0   # an empty pool is still a true object
        live = {}
        for tick in range(ticks):
            r = rng.random()
            if (r < 0.15 or not live) and len(live) < cap:
                slot = pool.open()
                assert slot not in live and slot == min(set(range(cap)) - set(live))
                live[slot] = m.stream(1)
            elif r < 0.22:
                slot = int(rng.choice(list(live)))
                pool.close(slot)
                del live[slot]
            elif r < 0.25:
                slot = int(rng.choice(list(live)))
                pool.reset(slot)
                live[slot].reset()
            else:
                n = int(rng.integers(1, len(live) + 1))
                slots = rng.permutation(list(live))[:n]
                x = _input(m, rng, n)
                y = pool.step(slots, x)
                for i, s in enumerate(slots):
                    np.testing.assert_array_equal(y[i], live[s].step(x[i:i + 1])[0],
                                                  err_msg=f"tick {tick} slot {s}")
        for s, stream in live.items():
            for a, b in zip(pool.state(s), stream.state):
                np.testing.assert_array_equal(a, b)
        assert pool.num_open == len(live) == len(pool) and list(pool.open_slots()) == sorted(live)
    finally:
        fastrnn.set_num_threads(1)


def test_pool_equals_one_stream_per_slot(rng):
    for name, layers in models(rng):
        _drive(fastrnn.Model(layers), rng, cap=6, ticks=120)


def test_pool_big_layers_two_threads_equal_streams(rng):
    # LSTM 256 at up to 24 rows: steps split across threads by hidden units (engine.c rec_mode)
    lstm = ir.Recurrent("lstm", [rand_weights(rng, "lstm", 64, 256, scale=256 ** -0.5)])
    m = fastrnn.Model([lstm, dense(rng, 256, 10, "softmax")])
    _drive(m, rng, cap=24, ticks=40, threads=2)


def test_closed_slot_never_leaks_state(rng):
    m = fastrnn.Model([rec(rng, "gru", 3, 16), dense(rng, 16, 2)])
    pool = fastrnn.StreamPool(m, 2)
    a, b = pool.open(), pool.open()
    x = rng.normal(size=(2, 3)).astype(np.float32)
    for _ in range(5):
        pool.step([a, b], x)
    pool.close(a)
    assert pool.open() == a                      # the lowest free slot comes back...
    assert all(not st.any() for st in pool.state(a))                # ...with a zero state
    np.testing.assert_array_equal(pool.step([a], x[:1]), m.stream(1).step(x[:1]))
    assert any(st.any() for st in pool.state(b))                    # b kept its own


def test_state_snapshot_and_restore(rng):
    m = fastrnn.Model(next(models(rng))[1])
    pool = fastrnn.StreamPool(m, 3)
    slots = np.array([pool.open() for _ in range(3)])
    x = rng.integers(1, 30, (20, 3))
    for t in range(8):
        pool.step(slots, x[t])
    snap = pool.state(1)
    first = [pool.step([1], x[t, 1:2]) for t in range(8, 20)]
    pool.set_state(1, snap)
    again = [pool.step([1], x[t, 1:2]) for t in range(8, 20)]
    for u, v in zip(first, again):
        np.testing.assert_array_equal(u, v)
    # a snapshot is a copy, and moves between a pool slot and a batch-1 Stream both ways
    s = m.stream(1)
    s.state = snap
    pool.set_state(2, snap)
    np.testing.assert_array_equal(s.step(x[8, :1]), pool.step([2], x[8, :1]))
    pool.set_state(0, s.state)
    np.testing.assert_array_equal(s.step(x[9, :1]), pool.step([0], x[9, :1]))
    with pytest.raises(fastrnn.ShapeError):
        pool.set_state(0, [np.zeros((1, 2, 5), np.float32)] * len(snap))


def test_slot_and_input_forms(rng):
    m = fastrnn.Model([rec(rng, "lstm", 4, 8), dense(rng, 8, 3)])
    pool = fastrnn.StreamPool(m, 5)
    for _ in range(5):
        pool.open()
    x = rng.normal(size=(5, 4))                  # float64, converted
    want = fastrnn.StreamPool(m, 5)
    for _ in range(5):
        want.open()
    ref = want.step(np.array([4, 0, 2]), x[:3].astype(np.float32))
    big = np.zeros(10, np.uint8)
    big[::2] = [4, 0, 2, 1, 3]
    out = np.empty((3, 3), np.float32)
    pool.step_into(big[::2][:3], x[:3], out)       # a strided uint8 view of slots
    np.testing.assert_array_equal(out, ref)
    assert pool.step([], np.zeros((0, 4), np.float32)).shape == (0, 3)
    for bad_slots, msg in [([5], "outside"), ([-1], "outside"), ([1, 1], "twice"), ([1.5], "integers"),
                           ([[1]], "1-D"), (list(range(6)), "the pool has 5")]:
        with pytest.raises(fastrnn.ShapeError, match=msg):
            pool.step(bad_slots, np.zeros((len(bad_slots), 4), np.float32))
    with pytest.raises(fastrnn.ShapeError, match=r"shape \(2, 4\)"):
        pool.step([0, 1], np.zeros((3, 4), np.float32))
    with pytest.raises(fastrnn.ShapeError, match="out must be"):
        pool.step_into([0], np.zeros((1, 4), np.float32), np.empty((2, 3), np.float32))
    pool.close(3)
    for f in (pool.close, pool.reset, pool.state):
        with pytest.raises(fastrnn.ShapeError, match="slot 3 is not open"):
            f(3)
    with pytest.raises(fastrnn.ShapeError, match="not open"):
        pool.step([3], np.zeros((1, 4), np.float32))
    assert pool.open() == 3
    with pytest.raises(fastrnn.FastRNNError, match="full"):
        pool.open()
    for cap in (0, -1, 2.0, True):
        with pytest.raises(fastrnn.ShapeError):
            fastrnn.StreamPool(m, cap)
    with pytest.raises(TypeError):
        fastrnn.StreamPool(object(), 3)


def test_bad_token_id_changes_no_state(rng):
    layers = [ir.Embedding(rng.normal(size=(10, 4)).astype(np.float32)), rec(rng, "lstm", 4, 8)]
    m = fastrnn.Model(layers)
    pool = fastrnn.StreamPool(m, 2)
    pool.open(), pool.open()
    pool.step([0, 1], [3, 4])
    before = [pool.state(0), pool.state(1)]
    for bad in ([3, 10], [-1, 2], np.array([3, 2**63], np.uint64)):
        with pytest.raises(fastrnn.ShapeError, match="token id"):
            pool.step([0, 1], bad)
    for s in (0, 1):
        for a, b in zip(pool.state(s), before[s]):
            np.testing.assert_array_equal(a, b)


def test_bidirectional_cannot_pool(rng):
    m = fastrnn.Model([rec(rng, "gru", 3, 4, "bidirectional")])
    with pytest.raises(fastrnn.UnsupportedError, match="cannot stream"):
        fastrnn.StreamPool(m, 4)


def test_a_pool_used_by_two_threads_raises(rng):
    m = fastrnn.Model([rec(rng, "lstm", 64, 256)])
    pool = fastrnn.StreamPool(m, 64)
    slots = np.array([pool.open() for _ in range(64)])
    x = rng.normal(size=(64, 64)).astype(np.float32)
    errors, stop = [], threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                pool.step(slots, x)
            except fastrnn.FastRNNError as e:
                errors.append(str(e))

    ts = [threading.Thread(target=hammer) for _ in range(2)]
    for t in ts:
        t.start()
    stop.wait(1.0)
    stop.set()
    for t in ts:
        t.join()
    assert errors and all("another thread" in e for e in errors)
    # the pool still works and was never corrupted: a fresh slot runs like a fresh stream
    pool.close(0)
    pool.open()
    np.testing.assert_array_equal(pool.step([0], x[:1]), m.stream(1).step(x[:1]))


def test_uninitialised_pool_raises_instead_of_crashing(rng):
    pool = fastrnn.StreamPool.__new__(fastrnn.StreamPool)    # __init__ never ran: no C pool
    for call in (pool.open, lambda: pool.close(0), lambda: pool.reset(0), lambda: pool.state(0),
                 lambda: pool.set_state(0, []), lambda: pool.step([0], np.zeros((1, 3), np.float32))):
        with pytest.raises(fastrnn.FastRNNError, match="not initialised"):
            call()
    assert not pool.is_open(0) and pool.capacity == 0 and len(pool) == 0
    m = fastrnn.Model([rec(rng, "gru", 3, 4)])
    live = fastrnn.StreamPool(m, 2)
    live.open()
    assert live.is_open(0) and not live.is_open(1) and not live.is_open(2**70) and not live.is_open(-1)
