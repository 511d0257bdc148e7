"""The C engine against the float64 reference (fastrnn/reference.py), at awkward sizes, for every
cell and option. This file runs under each ISA the machine has: .ci/run repeats it with
FASTRNN_ISA=scalar|avx2|avx512, and test_isa_matrix below also builds models under every ISA in
one process."""
import numpy as np
import pytest
from conftest import close, dense, rand_weights, rec

import fastrnn
from fastrnn import _engine, ir, reference

SIZES = [1, 15, 16, 17, 33]
SHAPES = [(1, 1), (7, 37), (1, 37), (7, 1)]   # (batch, time)


def check(layers, x, lengths=None, init=None):
    m = fastrnn.Model(layers, input_size=None if layers[0].input_size else x.shape[-1])
    y, st = m.predict(x, lengths=lengths, initial_state=init, return_state=True)
    yr, sr = reference.run(layers, x, lengths=lengths, initial_state=init)
    assert y.dtype == np.float32 and y.shape == yr.shape
    close(y, yr, "output")
    assert len(st) == len(sr)
    for i, (a, b) in enumerate(zip(st, sr)):
        assert a.shape == b.shape
        close(a, b, f"state {i}")
    return m, y


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("H", SIZES)
@pytest.mark.parametrize("BT", SHAPES, ids=lambda s: f"B{s[0]}T{s[1]}")
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_cells_sizes(rng, cell, H, BT, direction):
    B, T = BT
    I = int(rng.choice([1, 5, 16]))
    layers = [rec(rng, cell, I, H, direction)]
    x = rng.normal(size=(B, T, I)).astype(np.float32)
    check(layers, x)
    check(layers, x, lengths=rng.integers(0, T + 1, B))


@pytest.mark.parametrize("H", [1, 17, 33])
@pytest.mark.parametrize("opts", [
    dict(peepholes=True), dict(proj=5), dict(proj=1, peepholes=True), dict(clip=0.3),
    dict(input_forget=True), dict(bias=False), dict(peepholes=True, clip=1.0, input_forget=True),
    dict(activations=[ir.Act("hard_sigmoid", 1 / 6, 0.5), "softsign", ir.Act("scaled_tanh", 0.7, 1.3)]),
    dict(activations=[ir.Act("hard_sigmoid", 0.2, 0.5), "relu6", "tanh"]),
], ids=lambda o: "-".join(f"{k}" for k in o))
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_options(rng, H, opts, direction):
    x = rng.normal(size=(3, 9, 4)).astype(np.float32)
    layers = [rec(rng, "lstm", 4, H, direction, **opts)]
    init = [rng.normal(size=s).astype(np.float32) for s in layers[0].state_shapes(3)]
    check(layers, x)
    check(layers, x, lengths=np.array([9, 1, 4]), init=init)


@pytest.mark.parametrize("H", [1, 16, 33])
@pytest.mark.parametrize("lbr", [True, False])
@pytest.mark.parametrize("opts", [{}, dict(bias=False), dict(clip=0.5),
                                  dict(activations=[ir.Act("hard_sigmoid"), "softsign"])],
                         ids=["default", "nobias", "clip", "acts"])
def test_gru_options(rng, H, lbr, opts):
    x = rng.normal(size=(4, 11, 3)).astype(np.float32)
    for direction in ("forward", "reverse", "bidirectional"):
        layers = [rec(rng, "gru", 3, H, direction, linear_before_reset=lbr, **opts)]
        init = [rng.normal(size=s).astype(np.float32) for s in layers[0].state_shapes(4)]
        check(layers, x, init=init)
        check(layers, x, lengths=np.array([11, 0, 5, 1]))


# every elementwise activation as the RNN's (bounded input scale keeps exp-like kinds O(1))
ELEMENTWISE = [k for k in ir.ACTIVATIONS if k not in ir.ROW_WISE]


@pytest.mark.parametrize("kind", ELEMENTWISE)
def test_rnn_every_activation(rng, kind):
    a = {"elu": ir.Act("elu", 0.7), "leaky_relu": ir.Act("leaky_relu", 0.1),
         "thresholded_relu": ir.Act("thresholded_relu", 0.2), "affine": ir.Act("affine", 0.8, 0.1),
         "scaled_tanh": ir.Act("scaled_tanh", 1.5, 0.8),
         "hard_sigmoid": ir.Act("hard_sigmoid", 1 / 6, 0.5)}.get(kind, kind)
    layer = ir.Recurrent("rnn", [{k: v * 0.5 for k, v in rec(rng, "rnn", 3, 17).weights[0].items()}],
                         activations=[a], clip=3.0)
    x = rng.normal(size=(2, 12, 3)).astype(np.float32)
    check([layer], x)


@pytest.mark.parametrize("merge", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("seq", [True, False])
def test_bidirectional_merge(rng, merge, seq):
    layers = [rec(rng, "lstm", 6, 17, "bidirectional", merge_mode=merge, return_sequences=seq)]
    x = rng.normal(size=(5, 8, 6)).astype(np.float32)
    check(layers, x)
    check(layers, x, lengths=np.array([8, 3, 1, 0, 7]))


def test_stacked_with_heads(rng):
    """Embedding -> bi-GRU -> LSTM(proj) -> LSTM(last step) -> Dense(softmax) -> Activation."""
    E = ir.Embedding(rng.normal(size=(20, 7)).astype(np.float32))
    layers = [E, rec(rng, "gru", 7, 16, "bidirectional"), rec(rng, "lstm", 32, 9, proj=4),
              rec(rng, "lstm", 4, 33, return_sequences=False), dense(rng, 33, 5, "softmax"),
              ir.Activation(5, "log_softmax")]
    x = rng.integers(0, 20, (7, 37))
    m, y = check(layers, x)
    assert y.shape == (7, 5)
    check(layers, x, lengths=rng.integers(0, 38, 7))


@pytest.mark.parametrize("kind", ["linear", "sigmoid", "tanh", "relu", "softmax", "log_softmax",
                                  "silu", "selu", "exponential", "softplus", "elu", "relu6"])
@pytest.mark.parametrize("out", [1, 15, 16, 17, 33])
def test_dense_heads(rng, kind, out):
    layers = [rec(rng, "gru", 4, 16), dense(rng, 16, out, kind, bias=out % 2 == 1)]
    check(layers, rng.normal(size=(3, 5, 4)).astype(np.float32))


@pytest.mark.parametrize("out", [1, 16, 17])
@pytest.mark.parametrize("kind", ["relu", "softmax"])
@pytest.mark.parametrize("seq", [True, False])
def test_carried_columns(rng, out, kind, seq):
    """Dense / Activation carry (a branch of the source's graph): input column ranges, repeated and
    in any order, copied after the layer's own output; per step on a sequence or after the last
    step; streamed step by step as predict gives, and read by a later layer."""
    r = rec(rng, "lstm", 3, 16, return_sequences=seq)
    d1 = ir.Dense(rng.uniform(-1, 1, (out, 16)).astype(np.float32), None, kind, carry=((0, 16), (3, 5), (3, 5)))
    w1 = out + 20
    a = ir.Activation(out, "tanh", carry=((out, w1), (0, 1)))
    d2 = ir.Dense(rng.uniform(-1, 1, (7, w1 + 1)).astype(np.float32), rng.uniform(-1, 1, 7).astype(np.float32),
                  "linear", carry=((w1, w1 + 1), (2 % out, 2 % out + 1)))
    layers = [r, d1, a, d2]
    x = rng.normal(size=(5, 11, 3)).astype(np.float32)
    m, y = check(layers, x)
    assert y.shape == ((5, 11, 9) if seq else (5, 9)) and m.output_size == 9
    if seq:
        check(layers, x, lengths=rng.integers(0, 12, 5))
        s = m.stream(5)
        got = np.stack([s.step(x[:, t]) for t in range(11)], 1)
        np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("direction, merge", [("forward", "concat"), ("bidirectional", "concat"),
                                              ("bidirectional", "sum")])
@pytest.mark.parametrize("emb", [False, True])
def test_recurrent_layers_carry_columns(rng, direction, merge, emb):
    """A recurrent layer returning sequences carries input columns step by step (a branch around
    it), with lengths, merged directions and after an Embedding (which is then not folded into
    the layer's input projection: its output is carried)."""
    nd = 2 if direction == "bidirectional" else 1
    r1 = rec(rng, "lstm", 4, 5, direction, merge_mode=merge)
    r1 = ir.Recurrent("lstm", r1.weights, direction=direction, merge_mode=merge, carry=((0, 4), (1, 3)))
    w = (10 if merge == "concat" and nd == 2 else 5) + 6
    layers = ([ir.Embedding(rng.normal(size=(9, 4)).astype(np.float32))] if emb else []) + [
        r1, ir.Recurrent("gru", rec(rng, "gru", w, 17).weights, carry=((0, 2),)), dense(rng, 19, 3)]
    x = rng.integers(0, 9, (3, 6)) if emb else rng.normal(size=(3, 6, 4)).astype(np.float32)
    m, y = check(layers, x)
    check(layers, x, lengths=np.array([6, 2, 0]))
    if nd == 1:
        s = m.stream(3)
        np.testing.assert_array_equal(np.stack([s.step(x[:, t]) for t in range(6)], 1), y)
    with pytest.raises(fastrnn.ModelFormatError, match="return_sequences"):
        ir.Recurrent("gru", rec(rng, "gru", 4, 3).weights, return_sequences=False, carry=((0, 1),))


@pytest.mark.parametrize("pos", [-1.0, -1e30, 5.0, 1e30, np.nan, np.inf])
def test_attention_state_with_a_bad_position_is_refused(rng, pos):
    """An attention pool's state holds the step's position, an index into its bias per position:
    a state set from outside (initial_state, Stream.state, a StreamPool slot) with a position
    outside [0, positions) is a ShapeError, never a read outside the bias."""
    F_ = 3
    layers = [ir.Dense(rng.normal(size=(1, F_)).astype(np.float32), carry=((0, F_),)),
              ir.Pool(F_, ("attn",), score_bias=rng.normal(size=5).astype(np.float32))]
    m = fastrnn.Model(layers, input_size=F_)
    x = rng.normal(size=(2, 2, F_)).astype(np.float32)
    st = np.zeros((1, 2, 2 * F_ + 4), np.float32)
    st[0, :, 2 * F_ + 2] = pos
    with pytest.raises(fastrnn.ShapeError, match="position"):
        m.predict(x, initial_state=[st])
    s = m.stream(2)
    s.state = [st]
    with pytest.raises(fastrnn.ShapeError, match="position"):
        s.step(x[:, 0])


def test_carry_is_validated():
    W = np.ones((2, 3), np.float32)
    for bad in (((0, 4),), ((2, 2),), ((-1, 1),), ((0,),), 5, ((0.5, 1),), ((True, 2),)):
        with pytest.raises(fastrnn.ModelFormatError, match="carry"):
            ir.Dense(W, carry=bad)
    with pytest.raises(fastrnn.ModelFormatError, match="carry"):
        ir.Activation(2, carry=((3, 3),))
    assert ir.Activation(2, carry=((4, 6),)).input_size == 6      # its input reaches the carried columns
    with pytest.raises(fastrnn.ModelFormatError, match="expects 6 input features"):
        fastrnn.Model([ir.Dense(W), ir.Activation(2, carry=((4, 6),))])


@pytest.mark.parametrize("masked_output", ["carry", "zero"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_keras_mask_semantics(rng, masked_output, direction):
    """Embedding(mask_zero) / Masking: a masked step keeps the state; its output is carried or 0."""
    E = ir.Embedding(rng.normal(size=(6, 4)).astype(np.float32), mask_zero=True)
    layers = [E, rec(rng, "lstm", 4, 17, direction, masked_output=masked_output),
              rec(rng, "gru", 34 if direction == "bidirectional" else 17, 5, return_sequences=False)]
    ids = rng.integers(0, 6, (6, 10))
    ids[0, 5:] = 0      # trailing padding
    ids[1, :3] = 0      # leading padding
    ids[2, :] = 0       # all masked
    check(layers, ids)
    M = ir.Masking(3, mask_value=0.0)
    x = rng.normal(size=(4, 9, 3)).astype(np.float32)
    x[0, 4:] = 0
    x[1, ::2] = 0
    check([M, rec(rng, "rnn", 3, 16, direction, masked_output=masked_output)], x)


def test_input_size_one_and_single_step(rng):
    for cell in ("rnn", "lstm", "gru"):
        check([rec(rng, cell, 1, 1)], rng.normal(size=(1, 1, 1)).astype(np.float32))


def test_nan_inf_propagate(rng):
    """NaN/Inf inputs flow through the arithmetic like any value: no crash, NaN where they reach."""
    layers = [rec(rng, "lstm", 3, 17), dense(rng, 17, 4, "softmax")]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    x[0, 2, 1] = np.nan
    x[1, 3, 0] = np.inf
    x[2, 1, 2] = -np.inf
    y = m.predict(x)
    assert np.isnan(y[0, 2:]).all() and np.isfinite(y[0, :2]).all()
    assert np.isfinite(y[2, :1]).all()
    yr, _ = reference.run(layers, x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yr))


def test_batch_threads_give_serial_results(rng):
    """set_num_threads splits large batches by rows: results equal the 1-thread run exactly."""
    layers = [rec(rng, "lstm", 32, 64, "bidirectional"), dense(rng, 128, 3)]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(33, 60, 32)).astype(np.float32)
    lens = rng.integers(0, 61, 33)
    init = [rng.normal(size=s).astype(np.float32) for s in m.state_shapes(33)]
    try:
        fastrnn.set_num_threads(1)
        y1, s1 = m.predict(x, lengths=lens, initial_state=init, return_state=True)
        fastrnn.set_num_threads(3)
        y3, s3 = m.predict(x, lengths=lens, initial_state=init, return_state=True)
    finally:
        fastrnn.set_num_threads(1)
    np.testing.assert_array_equal(y1, y3)
    for a, b in zip(s1, s3):
        np.testing.assert_array_equal(a, b)


# (cell, H, options): tile counts 1-8 (one group of tiles and two), tiles too long to group
# (LSTM 200, RNN 520), two-pass GRU, projection (K = proj)
BATCH_ONE = [("lstm", 16, {}), ("lstm", 40, dict(peepholes=True, clip=0.7)), ("lstm", 64, {}),
             ("lstm", 80, dict(input_forget=True)), ("lstm", 96, dict(proj=20)), ("lstm", 112, {}),
             ("lstm", 128, dict(peepholes=True)), ("lstm", 200, {}),
             ("gru", 48, dict(linear_before_reset=True)), ("gru", 96, dict(linear_before_reset=False)),
             ("gru", 160, dict(linear_before_reset=True, clip=1.0)), ("rnn", 33, {}), ("rnn", 100, {}),
             ("rnn", 520, {})]


@pytest.mark.parametrize("cell,H,opts", BATCH_ONE, ids=lambda v: str(v))
def test_batch_one_gives_its_rows_bits(rng, cell, H, opts):
    """A sequence run alone gives exactly its row's bits in a batch. At batch 1 with short tiles,
    AVX-512 runs groups of a step's tiles as the epilogue's lanes (rec/impl.h, V_TILE_LANES); in a
    batch the lanes are rows."""
    peep, proj = opts.pop("peepholes", False), opts.pop("proj", 0)
    w = rand_weights(rng, cell, 24, H, peepholes=peep, proj=proj, scale=H ** -0.5)
    layers = [ir.Recurrent(cell, [w], **opts)]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(6, 9, 24)).astype(np.float32)
    init = [rng.normal(size=s).astype(np.float32) for s in m.state_shapes(6)]
    y, st = m.predict(x, initial_state=init, return_state=True)
    yr, sr = reference.run(layers, x, initial_state=init)
    close(y, yr, "output")
    for b in (0, 4):
        y1, s1 = m.predict(x[b:b + 1], initial_state=[s[:, b:b + 1] for s in init], return_state=True)
        np.testing.assert_array_equal(y1[0], y[b])
        for u, v in zip(s1, st):
            np.testing.assert_array_equal(u[:, 0], v[:, b])   # (directions, batch, units)


@pytest.mark.parametrize("cell,opts", [("rnn", {}), ("lstm", {}), ("lstm", dict(proj=16)), ("gru", {}),
                                       ("gru", dict(linear_before_reset=False))], ids=str)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_steps_write_h_into_the_output(rng, cell, opts, direction):
    """Without lengths or a mask, a layer that returns sequences writes each step's h straight into
    its output rows and reads it there at the next step (engine.c, rec_part: direct); with lengths
    it keeps h in the state buffers and copies it out. Both give the same bits, output and state,
    and the reference's numbers; H = 32 is whole vectors on every ISA."""
    opts = dict(opts)
    proj = opts.pop("proj", 0)
    w = [rand_weights(rng, cell, 12, 32, proj=proj, scale=32 ** -0.5)
         for _ in range(2 if direction == "bidirectional" else 1)]
    layers = [ir.Recurrent(cell, w, direction=direction, **opts), dense(rng, (proj or 32) * len(w), 3)]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(7, 11, 12)).astype(np.float32)
    init = [rng.normal(size=s).astype(np.float32) for s in m.state_shapes(7)]
    check(layers, x, init=init)   # the direct path against the reference, output and state
    y, st = m.predict(x, initial_state=init, return_state=True)
    y2, st2 = m.predict(x, initial_state=init, lengths=np.full(7, 11), return_state=True)
    np.testing.assert_array_equal(y, y2)
    for a, b in zip(st, st2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("isa_name", _engine.ISA_NAMES)
def test_isa_matrix(rng, isa_name):
    """Every ISA this CPU has, in one process (models keep the ISA they were built with)."""
    if isa_name not in _engine.isa_available():
        pytest.skip(f"this CPU has no {isa_name}")
    before = _engine.isa_current()
    try:
        _engine.set_isa(isa_name)
        layers = [rec(rng, "lstm", 5, 17, "bidirectional", peepholes=True, proj=3),
                  rec(rng, "gru", 6, 33, linear_before_reset=False), dense(rng, 33, 4, "softmax")]
        m, _ = check(layers, rng.normal(size=(7, 37, 5)).astype(np.float32))
        assert m.isa == isa_name
    finally:
        _engine.set_isa(before)


def test_cpu_info_reports_isa():
    info = fastrnn.cpu_info()
    assert info["isa"] in info["available"]
    assert info["available"][0] == "scalar"
    assert {"gemm", "rec_step", "act_rows"} <= set(info["kernels"])


def test_denormals_are_flushed_inside_the_engine_and_the_callers_fpu_is_restored():
    """A state decaying into the denormal range (|x| < 1.2e-38) is flushed to zero inside engine
    calls (MXCSR FTZ/DAZ: no 10-30x microcode cliff); the caller's own arithmetic still makes
    denormals afterwards (its MXCSR restored), from predict, streams, pools and worker threads."""
    H = 4
    w = {"W_ih": np.eye(H, dtype=np.float32), "W_hh": 0.5 * np.eye(H, dtype=np.float32)}
    m = fastrnn.Model([fastrnn.Recurrent("rnn", [w], activations=[["linear"]])])
    x = np.zeros((64, 140, H), np.float32)
    x[:, 0] = 1e-30                      # h_t = 1e-30 / 2^t: denormal from t = 27, zero by ~t = 123
    want, _ = reference.run(m.layers, x[:1])
    assert 0 < want[0, 40, 0] < 1.2e-38                  # float64 keeps the denormal
    tiny = np.float32(1e-38)

    def caller_makes_denormals():
        return float(tiny * np.float32(1e-3)) != 0.0
    assert caller_makes_denormals()
    fastrnn.set_num_threads(2)
    try:
        y = m.predict(x)                                  # 64 rows: worker threads take a chunk
    finally:
        fastrnn.set_num_threads(1)
    assert caller_makes_denormals()
    normal = np.abs(want[0, :, 0]) >= 1.2e-38
    np.testing.assert_allclose(y[0, normal], want[0, normal], rtol=1e-6)
    assert not y[:, ~normal].any()                        # flushed: exactly zero
    s = m.stream(batch_size=1)
    ys = np.stack([s.step(x[:1, t]) for t in range(140)], 1)
    np.testing.assert_array_equal(ys, y[:1])
    assert caller_makes_denormals()
    pool = fastrnn.StreamPool(m, 2)
    slot = pool.open()
    for t in range(30):
        pool.step([slot], x[:1, t])
    assert caller_makes_denormals()


def _learned(rng, layer, c=True):
    """layer with a learned initial state per direction: h0, and c0 for an LSTM when c."""
    ws = []
    for w in layer.weights:
        w = dict(w, h0=rng.normal(size=layer.state_size).astype(np.float32))
        if c and layer.cell == "lstm":
            w["c0"] = rng.normal(size=layer.hidden_size).astype(np.float32)
        ws.append(w)
    return ir.Recurrent(layer.cell, ws, direction=layer.direction, return_sequences=layer.return_sequences)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_learned_initial_state(rng, cell, direction):
    """Recurrent h0 / c0 (a learned initial state): every row starts from it, in predict with and
    without lengths (a row of length 0 keeps it), with initial_state entries None (those states
    start from it) or given (they replace it), against the float64 reference."""
    layers = [_learned(rng, rec(rng, cell, 5, 17, direction)),
              _learned(rng, rec(rng, cell, 34 if direction == "bidirectional" else 17, 6, proj=0), c=False),
              dense(rng, 6, 3)]
    x = rng.normal(size=(7, 9, 5)).astype(np.float32)
    m, y = check(layers, x)
    check(layers, x, lengths=np.array([9, 0, 3, 1, 9, 2, 5]))
    n = m._cm.num_states
    check(layers, x, init=[None] * n)
    given = [rng.normal(size=s).astype(np.float32) for s in m.state_shapes(7)]
    check(layers, x, init=[given[0]] + [None] * (n - 1))
    assert not np.allclose(y, fastrnn.Model([_without_start(l) for l in layers]).predict(x))   # it is used


def _without_start(layer):
    if not isinstance(layer, ir.Recurrent):
        return layer
    ws = [{k: v for k, v in w.items() if k not in ("h0", "c0")} for w in layer.weights]
    return ir.Recurrent(layer.cell, ws, direction=layer.direction, return_sequences=layer.return_sequences)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_streams_and_pool_slots_start_from_the_learned_state(rng, cell):
    """A Stream (new, and after reset) and a StreamPool's slots (fresh, reopened after a close,
    reset) start from h0 / c0: each gives predict's steps bit for bit."""
    layers = [_learned(rng, rec(rng, cell, 4, 17)), _learned(rng, rec(rng, cell, 17, 5)), dense(rng, 5, 2)]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    y = m.predict(x)
    s = m.stream(3)
    for _ in range(2):
        np.testing.assert_array_equal(np.stack([s.step(x[:, t]) for t in range(6)], 1), y)
        s.reset()
    p = fastrnn.StreamPool(m, 3)
    a, b = p.open(), p.open()
    p.step([a, b], x[:2, 0])
    p.close(a)
    a = p.open()                     # reopened
    p.reset(b)
    c = p.open()                     # never opened before
    got = np.stack([p.step([a, b, c], x[:, t]) for t in range(6)], 1)
    np.testing.assert_array_equal(got, y)


@pytest.mark.parametrize("heads, causal", [(1, False), (2, False), (4, True), (3, True)])
@pytest.mark.parametrize("BT", [(1, 1), (3, 9), (7, 17)], ids=lambda s: f"B{s[0]}T{s[1]}")
def test_self_attention(rng, heads, causal, BT):
    """ir.Attention (q, k, v side by side from the Dense before it; a carried branch beside them)
    against the float64 reference: heads, causal, lengths (a row of length 0 gives zeros), the
    columns it carries; a model with it does not stream; the batch split over threads gives the
    serial bits."""
    B, T = BT
    E = 6 * heads
    layers = [rec(rng, "gru", 5, 7), dense(rng, 7, 3 * E), ir.Attention(E, heads, causal, extra=7, carry=((3 * E, 3 * E + 7),)),
              dense(rng, E + 7, 4)]
    layers[1] = ir.Dense(layers[1].weight, layers[1].bias, carry=((0, 7),))
    x = rng.normal(size=(B, T, 5)).astype(np.float32)
    m, y = check(layers, x)
    lens = rng.integers(0, T + 1, B)
    lens[0] = T
    check(layers, x, lengths=lens)
    with pytest.raises(fastrnn.UnsupportedError, match="self-attention"):
        m.stream(1)
    big = rng.normal(size=(32, T, 5)).astype(np.float32)
    one = m.predict(big)
    fastrnn.set_num_threads(2)
    try:
        np.testing.assert_array_equal(m.predict(big), one)
    finally:
        fastrnn.set_num_threads(1)
