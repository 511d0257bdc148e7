"""The engine's threads (set_num_threads; src_c/pool.c, engine.c run_rec): every way a call can be
split gives exactly the bits of the 1-thread run, and the 1-thread run matches the float64
reference. The splits: batch chunks (>= 8 rows per thread), the two directions of a bidirectional
layer on two threads, the hidden units of each step across threads (small batches of big layers,
also in streams). Also: concurrent callers (the pool is busy: the region runs serially) and
fork. Runs under every ISA (tests/run.sh)."""
import multiprocessing
import threading
import time

import numpy as np
import pytest
from conftest import close, dense, rand_weights

import fastrnn
from fastrnn import _engine, ir, reference


@pytest.fixture
def threads():
    def use(n):
        fastrnn.set_num_threads(n)
    yield use
    fastrnn.set_num_threads(1)


def rec(rng, cell, I, H, direction="forward", *, peepholes=False, proj=0, **opts):
    """A layer with torch's initial scale, U(-1/sqrt(H), 1/sqrt(H)): big layers with O(1) weights
    saturate and amplify rounding beyond the accuracy contract's O(1) assumption."""
    nd = 2 if direction == "bidirectional" else 1
    ws = [rand_weights(rng, cell, I, H, peepholes=peepholes, proj=proj, scale=H ** -0.5)
          for _ in range(nd)]
    return ir.Recurrent(cell, ws, direction=direction, **opts)


def _run(m, x, threads, n, **kw):
    threads(n)
    return m.predict(x, return_state=True, **kw)


def _same(a, b):
    ya, sa = a
    yb, sb = b
    np.testing.assert_array_equal(ya, yb)
    for u, v in zip(sa, sb):
        np.testing.assert_array_equal(u, v)


# (name, layers(rng), batch, T): each case is big enough to pass the work thresholds of rec_mode
CASES = {
    # units of each step split (TILES): H not a multiple of the tile pairs, lengths, sequences
    "lstm200_tiles": (lambda r: [rec(r, "lstm", 48, 200), dense(r, 200, 3)], 1, 30),
    # batch 1 with short tiles: each thread's tiles in groups (AVX-512, rec/impl.h V_TILE_LANES)
    "lstm128_tile_groups": (lambda r: [rec(r, "lstm", 128, 128)], 1, 30),
    "gru256_lbr_tiles_b3": (lambda r: [rec(r, "gru", 40, 256, linear_before_reset=True)], 3, 20),
    "rnn520_tiles_last": (lambda r: [rec(r, "rnn", 64, 520, return_sequences=False)], 2, 25),
    "lstm_peep_clip_tiles": (lambda r: [rec(r, "lstm", 32, 192, peepholes=True, clip=0.8)], 2, 15),
    # serial fallbacks inside a threaded call: GRU linear_before_reset=0, projection
    "gru0_serial": (lambda r: [rec(r, "gru", 32, 256, linear_before_reset=False)], 1, 20),
    "lstm_proj_serial": (lambda r: [rec(r, "lstm", 32, 256, proj=100)], 1, 20),
    # directions on two threads (DIRS), with every merge, projection, GRU lbr=0 scratch
    "bilstm_dirs": (lambda r: [rec(r, "lstm", 24, 128, "bidirectional"), dense(r, 256, 4)], 3, 40),
    "bilstm_proj_sum": (lambda r: [rec(r, "lstm", 24, 96, "bidirectional", proj=40, merge_mode="sum")], 2, 30),
    "bigru0_ave": (lambda r: [rec(r, "gru", 24, 96, "bidirectional", linear_before_reset=False,
                                  merge_mode="ave")], 2, 30),
    "bigru_last_mul": (lambda r: [rec(r, "gru", 24, 96, "bidirectional", merge_mode="mul",
                                      return_sequences=False)], 4, 30),
    # stacked: a bidirectional layer then a tiled one
    "stack_dirs_tiles": (lambda r: [rec(r, "lstm", 16, 64, "bidirectional"), rec(r, "lstm", 128, 256)], 1, 20),
    # batch chunks (>= 8 rows per thread)
    "lstm_chunks": (lambda r: [rec(r, "lstm", 16, 64), dense(r, 64, 2)], 37, 20),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("nt", [2, 3])
def test_split_gives_serial_bits(rng, threads, name, nt):
    make, B, T = CASES[name]
    layers = make(rng)
    m = fastrnn.Model(layers)
    x = rng.normal(size=(B, T, layers[0].input_size)).astype(np.float32)
    lens = rng.integers(0, T + 1, B)
    lens[0] = T
    init = [rng.normal(size=s).astype(np.float32) for s in m.state_shapes(B)]
    for kw in ({}, dict(lengths=lens, initial_state=init)):
        one = _run(m, x, threads, 1, **kw)
        _same(one, _run(m, x, threads, nt, **kw))
        yr, sr = reference.run(layers, x, **kw)
        close(one[0], yr, name)
        for a, b in zip(one[1], sr):
            close(a, b, name + " state")


@pytest.fixture
def xp_chunk():
    yield _engine._testing_set_xp_chunk
    _engine._testing_set_xp_chunk(0)


@pytest.mark.parametrize("steps", [1, 7])
def test_chunked_input_projection_gives_the_same_bits(rng, threads, xp_chunk, steps):
    """Recurrent layers project their input in chunks of steps (engine.c rec_tc; forward and
    reverse directions from their own ends, the last chunk shorter): chunks of 1 and 7 steps,
    on 1 and 2 threads, give exactly the bits of the automatic size (the GEMM is
    batch-invariant), with lengths and initial states, for every split mode."""
    for name, (make, B, T) in CASES.items():
        layers = make(rng)
        m = fastrnn.Model(layers)
        x = rng.normal(size=(B, T, layers[0].input_size)).astype(np.float32)
        lens = rng.integers(0, T + 1, B)
        init = [rng.normal(size=s).astype(np.float32) for s in m.state_shapes(B)]
        for kw in ({}, dict(lengths=lens, initial_state=init)):
            xp_chunk(0)
            want = _run(m, x, threads, 1, **kw)
            xp_chunk(steps)
            for n in (1, 2):
                _same(want, _run(m, x, threads, n, **kw))


def test_keras_mask_tiles(rng, threads):
    """Embedding(mask_zero) -> a tiled layer: masked steps carry the state, per thread's units."""
    emb = ir.Embedding(rng.normal(size=(50, 24)).astype(np.float32), mask_zero=True)
    layers = [emb, rec(rng, "lstm", 24, 256, masked_output="zero"), rec(rng, "gru", 256, 128)]
    m = fastrnn.Model(layers)
    ids = rng.integers(0, 50, (2, 30))
    ids[0, 5:9] = 0
    ids[1, -4:] = 0
    _same(_run(m, ids, threads, 1), _run(m, ids, threads, 2))
    close(m.predict(ids), reference.run(layers, ids)[0])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stream_threads(rng, threads, cell):
    """A stream step of a big layer splits its units; the same bits as 1 thread."""
    layers = [rec(rng, cell, 64, 256), dense(rng, 256, 5)]
    m = fastrnn.Model(layers)
    xs = rng.normal(size=(12, 2, 64)).astype(np.float32)
    out = {}
    for n in (1, 2):
        threads(n)
        s = m.stream(batch_size=2)
        out[n] = np.stack([s.step(x) for x in xs])
    np.testing.assert_array_equal(out[1], out[2])
    close(out[1], reference.run(layers, xs.transpose(1, 0, 2))[0].transpose(1, 0, 2))


def test_concurrent_callers(rng, threads):
    """Python threads predicting at once with set_num_threads(2): one gets the pool, the others
    run serially; everyone gets the serial bits."""
    layers = [rec(rng, "lstm", 32, 256), dense(rng, 256, 3)]
    m = fastrnn.Model(layers)
    xs = [rng.normal(size=(1 + i % 3, 15, 32)).astype(np.float32) for i in range(6)]
    threads(1)
    want = [m.predict(x) for x in xs]
    threads(2)
    got = [None] * len(xs)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                got[i] = m.predict(xs[i])
                np.testing.assert_array_equal(got[i], want[i])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def _child(conn, layers, x):
    fastrnn.set_num_threads(2)
    conn.send(fastrnn.Model(layers).predict(x))


def test_fork_after_threads(rng, threads):
    """A child forked after the parent used its workers starts its own."""
    layers = [rec(rng, "lstm", 16, 256)]
    x = rng.normal(size=(1, 10, 16)).astype(np.float32)
    threads(2)
    want = fastrnn.Model(layers).predict(x)
    ctx = multiprocessing.get_context("fork")
    a, b = ctx.Pipe()
    p = ctx.Process(target=_child, args=(b, layers, x))
    p.start()
    assert a.poll(60), "the forked child did not answer"
    np.testing.assert_array_equal(a.recv(), want)
    p.join(10)
    assert p.exitcode == 0


@pytest.mark.parametrize("engine_threads", [1, 2])
def test_stress_8_threads_10000_steps(rng, threads, engine_threads):
    """8 Python threads x 10,000 steps, each with its own Stream (and every other thread also a
    StreamPool) on one shared Model, all at once, while the engine may use 2 threads of its own
    (then the callers contend for its workers, engine.c rec_mode TILES): every output is exactly
    the serial one."""
    m = fastrnn.Model([ir.Embedding(rng.normal(size=(40, 8)).astype(np.float32), mask_zero=True),
                       rec(rng, "lstm", 8, 192), rec(rng, "gru", 192, 17), dense(rng, 17, 40, "softmax")])
    N, T = 8, 10_000      # LSTM 192: a step big enough to split across the engine's threads
    ids = [rng.integers(0, 40, T) for _ in range(N)]
    serial = [m.predict(x[None])[0] for x in ids]      # predict, not a stream: a separate oracle
    threads(engine_threads)
    got = [np.empty((T, 40), np.float32) for _ in range(N)]
    errors = []
    start = threading.Barrier(N)

    def work(i):
        try:
            if i % 2:
                pool = fastrnn.StreamPool(m, 3)
                pool.open(), pool.open()                 # the conversation runs in slot 2
                slot = np.array([pool.open()])
                step = lambda t: pool.step_into(slot, ids[i][t:t + 1], got[i][t:t + 1])  # noqa: E731
            else:
                s = m.stream(1)
                step = lambda t: s.step_into(ids[i][t:t + 1], got[i][t:t + 1])  # noqa: E731
            start.wait()
            for t in range(T):
                step(t)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(N)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    for i in range(N):
        np.testing.assert_array_equal(got[i], serial[i], err_msg=f"thread {i}")


def test_big_calls_release_the_gil(rng, threads):
    """A long engine call (predict, a big stream step, a pool step) lets other Python threads
    run meanwhile; the GIL rule (fastrnn/_engine.pyx) keeps it only for calls of a few µs."""
    m = fastrnn.Model([rec(rng, "lstm", 64, 256)])
    x = rng.normal(size=(16, 300, 64)).astype(np.float32)
    s = m.stream(2048)
    pool = fastrnn.StreamPool(m, 2048)
    slots = np.array([pool.open() for _ in range(2048)])
    xs = rng.normal(size=(2048, 64)).astype(np.float32)
    calls = {"predict": lambda: m.predict(x), "stream": lambda: s.step(xs),   # ~40-130 ms each
             "pool": lambda: pool.step(slots, xs)}
    for name, call in calls.items():
        window = []

        def run():
            t0 = time.perf_counter()
            call()
            window.extend((t0, time.perf_counter()))

        t = threading.Thread(target=run)
        t.start()
        ticks = []
        while t.is_alive():           # the main thread's own progress, timestamped
            ticks.append(time.perf_counter())
        t.join()
        t0, t1 = window
        seen = [t0] + [v for v in ticks if t0 < v < t1] + [t1]
        gap = max(b - a for a, b in zip(seen, seen[1:]))
        # held, the main thread stops for the whole C call (after a switch interval's worth)
        assert gap < 0.5 * (t1 - t0), f"{name}: the main thread stopped {gap * 1e3:.1f} ms of {(t1 - t0) * 1e3:.1f}"
