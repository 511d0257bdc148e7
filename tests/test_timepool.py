"""ir.Pool, pooling over time (mean / max / sum, side by side), against the float64 reference
(fastrnn/reference.py) for every way steps count (valid / steps / longest), with lengths and
Keras masks; its stream (step t = the pool over steps 0..t, from a state), StreamPool slots,
snapshots, threads, the .frnn file, and the awkward sizes. Run under every ISA (tests/run.sh)."""
import threading

import numpy as np
import pytest
from conftest import dense, rec

import fastrnn
from fastrnn import ir, reference

KINDS = [("mean",), ("max",), ("sum",), ("mean", "max"), ("max", "sum", "mean")]


def _model(rng, kinds, over, H=5, masked=False, cell="lstm"):
    first = [ir.Embedding(rng.normal(size=(20, 4)).astype(np.float32), mask_zero=True)] if masked else []
    layers = first + [rec(rng, cell, 4 if masked else 3, H), ir.Pool(H, kinds, over),
                      dense(rng, H * len(kinds), 2, "tanh")]
    return fastrnn.Model(layers)


def _x(m, rng, B, T):
    if m.input_kind == "ids":
        x = rng.integers(1, 20, (B, T))
        x[0, T // 2:] = 0          # masked steps (Keras: they do not count for "valid" means)
        return x
    return rng.normal(size=(B, T, 3)).astype(np.float32)


@pytest.mark.parametrize("kinds", KINDS, ids=["+".join(k) for k in KINDS])
@pytest.mark.parametrize("over", ir.POOL_OVER)
@pytest.mark.parametrize("masked", [False, True], ids=["floats", "masked_ids"])
def test_pool_matches_reference(rng, kinds, over, masked):
    m = _model(rng, kinds, over, masked=masked)
    for B, T in ((1, 1), (3, 7), (5, 2)):
        x = _x(m, rng, B, T)
        for lens in (None, rng.integers(1, T + 1, B)):
            y, st = m.predict(x, lengths=lens, return_state=True)
            yr, sr = reference.run(m.layers, x, lengths=lens)
            np.testing.assert_allclose(y, yr, rtol=1e-5, atol=1e-5, err_msg=f"{kinds} {over} B={B} T={T}")
            np.testing.assert_allclose(st[-1], sr[-1], rtol=1e-5, atol=1e-5)   # the running pool


def test_how_steps_count(rng):
    """valid: a row's own steps; steps: every step (zeros of padding included); longest: the
    batch's longest row, every step without lengths."""
    x = np.arange(2 * 4, dtype=np.float32).reshape(2, 4, 1) + 1
    lens = np.array([2, 3])
    got = {}
    for over in ir.POOL_OVER:
        m = fastrnn.Model([ir.Activation(1, "linear"), ir.Pool(1, ("mean", "sum"), over)])
        got[over] = m.predict(x, lengths=lens)
    # the input itself is pooled here (no recurrent layer zeroes the steps past a row's length)
    np.testing.assert_allclose(got["valid"], [[1.5, 3.0], [6.0, 18.0]])
    np.testing.assert_allclose(got["steps"], [[2.5, 10.0], [6.5, 26.0]])
    np.testing.assert_allclose(got["longest"], [[2.0, 6.0], [6.0, 18.0]])
    m = fastrnn.Model([ir.Activation(1, "linear"), ir.Pool(1, ("mean",), "longest")])
    np.testing.assert_allclose(m.predict(x), [[2.5], [6.5]])        # no lengths: every step


def test_max_propagates_nan_and_mean_of_no_step_is_nan():
    m = fastrnn.Model([ir.Activation(2, "linear"), ir.Pool(2, ("max", "mean"), "valid")])
    x = np.array([[[1, 2], [np.nan, 0], [5, 1]]], np.float32)
    y = m.predict(x)
    assert np.isnan(y[0, 0]) and y[0, 1] == 2 and np.isnan(y[0, 2])
    y0 = m.predict(np.ones((1, 3, 2), np.float32), lengths=np.array([0]))
    assert np.isnan(y0[0, 2]) and np.isnan(y0[0, 3])             # Keras: sum / count = 0 / 0


@pytest.mark.parametrize("kinds", KINDS[3:], ids=["mean+max", "max+sum+mean"])
def test_stream_is_the_pool_of_the_prefix(rng, kinds):
    for masked in (False, True):
        m = _model(rng, kinds, "valid" if masked else "steps", masked=masked, cell="gru")
        x = _x(m, rng, 4, 9)
        s = m.stream(4)
        for t in range(9):
            np.testing.assert_array_equal(s.step(x[:, t]), m.predict(x[:, :t + 1]), err_msg=f"step {t}")
        _, states = m.predict(x, return_state=True)
        for a, b in zip(s.state, states):
            np.testing.assert_array_equal(a, b)


def test_snapshot_restore_and_initial_state(rng):
    m = _model(rng, ("mean", "max"), "steps")
    x = _x(m, rng, 2, 10)
    s = m.stream(2)
    for t in range(4):
        s.step(x[:, t])
    snap = s.state
    rest = [s.step(x[:, t]) for t in range(4, 10)]
    s.state = snap
    np.testing.assert_array_equal(np.stack([s.step(x[:, t]) for t in range(4, 10)]), np.stack(rest))
    # predict continuing from the snapshot = the stream
    y = m.predict(x[:, 4:], initial_state=snap)
    np.testing.assert_array_equal(y, rest[-1])


def test_stream_pool_slots_are_their_own_streams(rng):
    m = _model(rng, ("max", "mean"), "steps", H=17)
    pool = fastrnn.StreamPool(m, 6)
    slots = [pool.open() for _ in range(6)]
    x = _x(m, rng, 6, 8)
    alone = [m.stream(1) for _ in slots]
    for t in range(8):
        take = np.array([i for i in range(6) if (i + t) % 3])          # a varying subset per tick
        y = pool.step(np.array(slots)[take], x[take, t])
        for j, i in enumerate(take):
            np.testing.assert_array_equal(y[j], alone[i].step(x[i:i + 1, t])[0])
    pool.close(slots[0])
    again = pool.open()
    np.testing.assert_array_equal(pool.state(again)[-1], 0)             # a reused slot starts empty


def test_threads_share_a_pooling_model(rng):
    m = _model(rng, ("mean", "max", "sum"), "steps", H=33)
    x = _x(m, rng, 3, 50)
    serial = m.stream(3)
    ref = [serial.step(x[:, t]) for t in range(50)]
    errors = []

    def work():
        s = m.stream(3)
        for t in range(50):
            if not np.array_equal(s.step(x[:, t]), ref[t]):
                errors.append(t)
    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


def test_file_round_trip_and_validation(rng, tmp_path):
    m = _model(rng, ("mean", "max"), "longest")
    m.save(tmp_path / "p.frnn")
    m2 = fastrnn.load(tmp_path / "p.frnn")
    x = _x(m, rng, 3, 6)
    lens = np.array([6, 2, 4])
    np.testing.assert_array_equal(m.predict(x, lengths=lens), m2.predict(x, lengths=lens))
    assert "Pool(mean+max, longest)" in repr(m2)
    for bad in ({"kinds": []}, {"kinds": ["median"]}, {"over": "some"}, {"size": 0},
                {"kinds": ["mean"] * 4}):
        with pytest.raises(fastrnn.ModelFormatError):
            ir.Pool(**({"size": 3} | bad))
    with pytest.raises(fastrnn.ModelFormatError, match="needs a sequence"):
        fastrnn.Model([rec(rng, "gru", 3, 4, return_sequences=False), ir.Pool(4)])


def test_fastrnn_info_describes_a_pool(rng, tmp_path, capsys):
    from fastrnn.cli import main
    _model(rng, ("mean", "max"), "valid", masked=True).save(tmp_path / "p.frnn")
    assert main(["info", str(tmp_path / "p.frnn")]) == 0
    out = capsys.readouterr().out
    assert "Pool over time" in out and "kinds=mean+max, over=valid" in out and "pool of layer 2" in out
    assert main(["info", str(tmp_path / "p.frnn"), "--json"]) == 0
