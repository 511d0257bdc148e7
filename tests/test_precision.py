"""Reduced precision (fastrnn/precision.py): bf16 and int8 weights, files that keep them, and
the accuracy contract (README, Accuracy): against the fp32 engine on the bench workloads and
the bundled charlm, bf16 max |diff| <= 5e-3, int8 <= 1.5e-2 with SQNR >= 30 dB; charlm greedy
decoding the same character at >= 99% (bf16) / >= 97% (int8) of 1000 steps; the IMDB-style
Embedding -> LSTM -> Dense classifier the same class on >= 99.5% of inputs; a 10,000-step
stream stays within those bounds. Oracles: the fp32 model (itself checked against torch and the
float64 reference elsewhere) and the float64 reference run on the reduced weights."""
import json
import math
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import precision as P
from fastrnn import reference

from bench import workloads as W

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOUND = {"bf16": 5e-3, "int8": 1.5e-2}


def _model(name, **over):
    wl = next(w for w in W.WORKLOADS if w.name == name)
    sd = W.make_weights(wl.net)
    return fastrnn.Model(W.ir_layers(wl.net, sd, fastrnn.ir)), wl


def _x(m, wl, B, T, seed=0):
    rng = np.random.default_rng(seed)
    if wl.net.vocab:
        return rng.integers(0, wl.net.vocab, (B, T))
    return rng.standard_normal((B, T, wl.net.input)).astype(np.float32)


# ---- the number formats ---------------------------------------------------------------------

def test_bf16_rounds_to_nearest_even():
    a = np.array([1.0, 1 + 2**-8, 1 + 2**-7 + 2**-8, 1 + 2**-9, -3.14159, 1e-30, 65504.0], np.float32)
    got = P.bf16(a)
    assert np.all(got.view(np.uint32) & 0xFFFF == 0)
    # nearest with 8 significant bits (spacing 2^-7 at 1), ties to the even one
    assert got[1] == 1.0 and got[2] == 1 + 2**-6 and got[3] == 1.0
    rel = np.abs(got - a) / np.abs(a)
    assert rel.max() <= 2**-8


def test_int8_is_symmetric_per_output_row():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 11)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)[:, None]
    w[3] = 0
    q, s = P.quantize_int8(w)
    assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
    np.testing.assert_array_equal(s, (np.abs(w).max(1) / np.float32(127)).astype(np.float32))
    assert s[3] == 0 and not q[3].any()
    assert np.all(np.abs(q).max(1)[[0, 1, 2, 4, 5]] == 127)        # each row uses its full range
    d = P.dequantize_int8(q, s)
    assert np.all(np.abs(d - w) <= s[:, None] / 2 * (1 + 1e-6))
    q2, _ = P.quantize_int8(d, s)                                    # quantizing again changes nothing
    np.testing.assert_array_equal(q2, q)


# ---- the API ----------------------------------------------------------------------------------

@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_with_precision_is_a_new_model_computing_with_the_reduced_weights(prec, monkeypatch):
    monkeypatch.setenv("FASTRNN_PACK_WIDE_BYTES", "0")   # every int8 matrix on the integer kernels
    m, wl = _model("bilstm2_128x256_b32")
    x = _x(m, wl, 2, 6)
    before = m.predict(x)
    r = m.with_precision(prec)
    assert r.precision == prec and m.precision == "fp32" and prec in repr(r)
    np.testing.assert_array_equal(m.predict(x), before)                 # m is unchanged
    for la, lb in zip(m.layers, r.layers):
        for n in P.reduced_names(la):
            a, b = la.tensors()[n], lb.tensors()[n]
            want = P.bf16(a) if prec == "bf16" else P.dequantize_int8(*P.quantize_int8(a))
            np.testing.assert_array_equal(b, want)
        for n, a in la.tensors().items():               # biases stay fp32
            if n not in P.reduced_names(la):
                np.testing.assert_array_equal(lb.tensors()[n], a)
    # the float64 reference on the reduced weights is what the reduced model computes (int8:
    # with the integer kernels' products, which quantize the other operand too: q8mm)
    y64, _ = reference.run(r.layers, x, matmul=q8mm if prec == "int8" else reference._matmul)
    np.testing.assert_allclose(r.predict(x), y64, rtol=1e-5, atol=2e-6)
    assert r.with_precision(prec).precision == prec
    assert r.with_precision("fp32").precision == "fp32"
    with pytest.raises(fastrnn.ArgumentTypeError, match="precision"):
        m.with_precision("fp16")


def test_int8_from_int8_keeps_its_scales_and_bf16_from_int8_starts_from_its_values():
    m, wl = _model("stream_gru256")
    m8 = m.with_precision("int8")
    again = m8.with_precision("bf16").with_precision("int8")
    x = _x(m, wl, 2, 5)
    assert np.abs(again.predict(x) - m8.predict(x)).max() < 5e-3
    np.testing.assert_array_equal(m8.with_precision("int8").predict(x), m8.predict(x))


def test_compare_reports_the_error_and_the_drift():
    m, wl = _model("stream_lstm256")
    m8 = m.with_precision("int8")
    x = _x(m, wl, 2, 20)
    rep = m8.compare(m, x, stream_steps=300)
    assert set(rep) >= {"max_abs", "mean_abs", "sqnr_db", "cosine", "argmax_agreement", "n", "stream"}
    y8, y = m8.predict(x), m.predict(x)
    assert rep["max_abs"] == pytest.approx(float(np.abs(y8.astype(np.float64) - y).max()))
    assert rep["n"] == y.size and 0.99 < rep["cosine"] <= 1 and rep["sqnr_db"] > 30
    assert rep["stream"]["steps"] == 300 and rep["stream"]["max_abs"] <= BOUND["int8"]
    text = str(rep)
    assert "int8 against fp32" in text and "stream, 300 steps" in text and "SQNR" in text
    same = m.compare(m, x, stream_steps=0)
    assert same["max_abs"] == 0 and same["sqnr_db"] == math.inf and same["stream"] is None
    with pytest.raises(fastrnn.ArgumentTypeError, match="reference"):
        m8.compare("model.frnn", x)


# ---- the accuracy contract --------------------------------------------------------------------

@pytest.mark.parametrize("name", [w.name for w in W.WORKLOADS if w.name != "stream_lstm1024"])
@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_accuracy_contract_on_the_bench_workloads(name, prec):
    m, wl = _model(name)
    x = _x(m, wl, 4, 60 if wl.kind == "seq" else 40, seed=1)
    rep = m.with_precision(prec).compare(m, x, stream_steps=0)
    assert rep["max_abs"] <= BOUND[prec], rep
    if prec == "int8":
        assert rep["sqnr_db"] >= 30, rep


@pytest.mark.parametrize("prec,agree", [("bf16", 0.99), ("int8", 0.97)])
def test_charlm_greedy_decoding_agrees(prec, agree):
    m = fastrnn.load(os.path.join(ROOT, "examples", "charlm", "charlm.frnn"))
    s, ids, tok = m.stream(batch_size=1), [], 1
    for _ in range(1000):                        # fp32's own greedy text
        ids.append(tok)
        tok = int(np.argmax(s.step(np.array([tok]))))
    x = np.array([ids])
    rep = m.with_precision(prec).compare(m, x, stream_steps=0)
    assert rep["argmax_agreement"] >= agree, rep
    scale = float(np.abs(m.predict(x)).max())         # logits, not O(1): the bound relative to them
    assert rep["max_abs"] <= BOUND[prec] * scale, (rep, scale)


def test_imdb_style_classifier_keeps_its_class():
    m, wl = _model("emb_lstm32_dense_b128")
    rng = np.random.default_rng(3)
    x = rng.integers(0, wl.net.vocab, (1000, 80))
    y = m.predict(x)[:, 0]
    for prec in ("bf16", "int8"):
        yr = m.with_precision(prec).predict(x)[:, 0]
        assert np.mean((yr > 0.5) == (y > 0.5)) >= 0.995, prec
        assert np.abs(yr - y).max() <= BOUND[prec]


@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_a_ten_thousand_step_stream_does_not_drift(prec):
    m, wl = _model("stream_gru256")
    x = _x(m, wl, 1, 10_000, seed=4)
    rep = m.with_precision(prec).compare(m, x[:, :50], stream_steps=10_000)
    assert rep["stream"]["steps"] == 10_000
    assert rep["stream"]["max_abs"] <= BOUND[prec], rep["stream"]


@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_streams_and_pools_run_at_every_precision(prec):
    m, wl = _model("stream_lstm64")
    r = m.with_precision(prec)
    x = _x(m, wl, 3, 8)
    s, single = r.stream(batch_size=3), r.stream(batch_size=1)
    pool = fastrnn.StreamPool(r, 4)
    slots = [pool.open() for _ in range(3)]
    for t in range(8):
        y = s.step(x[:, t])
        np.testing.assert_allclose(y, r.predict(x[:, :t + 1])[:, -1], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(pool.step(slots, x[:, t]), y)     # slots as their own streams
        np.testing.assert_array_equal(single.step(x[:1, t]), y[:1])


# ---- files ---------------------------------------------------------------------------------------

def _header(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw


@pytest.mark.parametrize("prec,dtype,ratio", [("bf16", "BF16", 0.52), ("int8", "I8", 0.27)])
def test_reduced_files_store_reduced_weights_and_load_bit_for_bit(tmp_path, prec, dtype, ratio):
    m, wl = _model("seq_lstm256_b1")
    r = m.with_precision(prec)
    m.save(tmp_path / "m.frnn")
    r.save(tmp_path / "r.frnn")
    assert os.path.getsize(tmp_path / "r.frnn") < ratio * os.path.getsize(tmp_path / "m.frnn")
    h, raw = _header(tmp_path / "r.frnn")
    assert h["__metadata__"]["format_version"] == "2"
    assert json.loads(h["__metadata__"]["spec"])["precision"] == prec
    assert h["layers.0.0.W_ih"]["dtype"] == dtype and h["layers.0.0.b_ih"]["dtype"] == "F32"
    assert ("layers.0.0.W_hh@scale" in h) == (prec == "int8")
    assert _header(tmp_path / "m.frnn")[0]["__metadata__"]["format_version"] == "1"   # fp32 as before
    back = fastrnn.load(tmp_path / "r.frnn")
    x = _x(m, wl, 2, 7)
    assert back.precision == prec
    np.testing.assert_array_equal(back.predict(x), r.predict(x))
    back.save(tmp_path / "again.frnn")
    assert (tmp_path / "again.frnn").read_bytes() == raw
    np.testing.assert_array_equal(fastrnn.load(raw).predict(x), r.predict(x))      # from bytes too
    up = fastrnn.load(tmp_path / "r.frnn", precision="fp32")
    assert up.precision == "fp32"
    # its values, now as fp32 weights: what the float64 reference computes with them
    np.testing.assert_allclose(up.predict(x), reference.run(r.layers, x)[0], rtol=1e-5, atol=2e-6)
    if prec == "bf16":   # the same products, fp32 sums
        np.testing.assert_allclose(up.predict(x), r.predict(x), rtol=1e-5, atol=1e-6)
    else:                # int8 also quantizes each product's other operand (simd/q8.h)
        assert np.abs(up.predict(x) - r.predict(x)).max() <= BOUND["int8"]
    assert fastrnn.load(tmp_path / "m.frnn", precision=prec).precision == prec
    with pytest.raises(fastrnn.ArgumentTypeError, match="precision"):
        fastrnn.load(tmp_path / "m.frnn", precision="int4")


def _rewrite(src, dst, fix):
    h, raw = _header(src)
    (n,) = struct.unpack("<Q", raw[:8])
    body = raw[8 + n:]
    fix(h)
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + body)


def test_damaged_reduced_files_are_refused(tmp_path):
    m, _ = _model("stream_lstm64")
    m.with_precision("int8").save(tmp_path / "r.frnn")
    m.save(tmp_path / "m.frnn")

    def spec(f):
        def fix(h):
            s = json.loads(h["__metadata__"]["spec"])
            f(s)
            h["__metadata__"]["spec"] = json.dumps(s)
        return fix
    cases = [
        (tmp_path / "r.frnn", spec(lambda s: s.__setitem__("precision", "int4")), "precision"),
        (tmp_path / "r.frnn", spec(lambda s: s.__setitem__("precision", "bf16")), "expected uint16"),
        (tmp_path / "r.frnn", spec(lambda s: s.pop("precision")), "expected float32"),
        (tmp_path / "m.frnn", spec(lambda s: s.__setitem__("precision", "int8")), "precision"),
        (tmp_path / "r.frnn", lambda h: h.__setitem__("layers.0.0.W_hhx@scale", h.pop("layers.0.0.W_hh@scale")),
         "@scale"),
    ]
    for i, (src, fix, word) in enumerate(cases):
        _rewrite(src, tmp_path / f"bad{i}.frnn", fix)
        with pytest.raises(fastrnn.ModelFormatError, match=word):
            fastrnn.load(tmp_path / f"bad{i}.frnn")
    # a negative scale
    h, raw = _header(tmp_path / "r.frnn")
    (n,) = struct.unpack("<Q", raw[:8])
    a = h["layers.0.0.W_hh@scale"]["data_offsets"][0] + 8 + n
    bad = bytearray(raw)
    bad[a:a + 4] = struct.pack("<f", -1.0)
    with pytest.raises(fastrnn.ModelFormatError, match="negative or non-finite scale"):
        fastrnn.load(bytes(bad))


# ---- converters and the command line ---------------------------------------------------------

@pytest.mark.skipif(bool(os.environ.get("FASTRNN_SANITIZED")),
                    reason="its CLI run loads torch in a child interpreter, which aborts under the preloaded "
                           "sanitizer runtime (tests/sanitize.sh); the normal suite runs it")
def test_convert_with_precision_and_the_cli_check(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.GRU(6, 48, batch_first=True)
    m8 = fastrnn.convert(net, precision="int8")
    assert m8.precision == "int8"
    x = np.random.default_rng(0).standard_normal((2, 9, 6)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    assert np.abs(m8.predict(x) - want).max() <= BOUND["int8"]
    with pytest.raises(fastrnn.ArgumentTypeError, match="precision"):
        fastrnn.convert(net, precision="int16")
    torch.save(net.state_dict(), tmp_path / "gru.pt")
    out = subprocess.run([sys.executable, "-m", "fastrnn", "convert", str(tmp_path / "gru.pt"), "-o",
                          str(tmp_path / "g.frnn"), "--precision", "bf16", "--check", "--batch-first"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "bf16 against torch" in out.stdout and "SQNR" in out.stdout and ": ok" in out.stdout
    assert fastrnn.load(tmp_path / "g.frnn").precision == "bf16"
    info = subprocess.run([sys.executable, "-m", "fastrnn", "info", str(tmp_path / "g.frnn"), "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    d = json.loads(info.stdout)
    assert d["precision"] == "bf16" and d["weight_bytes"] == P.weight_bytes(fastrnn.load(tmp_path / "g.frnn"))


# ---- the kernels at their edges ---------------------------------------------------------------

def _rec_model(rng, cell, I, H, prec, **kw):
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    k = 1 / np.sqrt(H)
    w = {"W_ih": rng.uniform(-k, k, (G * H, I)).astype(np.float32),
         "W_hh": rng.uniform(-k, k, (G * H, H)).astype(np.float32),
         "b_ih": rng.uniform(-k, k, G * H).astype(np.float32), "b_hh": rng.uniform(-k, k, G * H).astype(np.float32)}
    layers = [fastrnn.Recurrent(cell, [w], **kw),
              fastrnn.Dense(rng.uniform(-k, k, (5, H)).astype(np.float32), np.zeros(5, np.float32))]
    return fastrnn.Model(layers).with_precision(prec)


# H around the vector widths (8, 16) and the batch-1 tile grouping; B across the row blocks (V_RB
# 3-6), the GEMM's few-row limit (12) and the widened many-row paths; K odd and below a block
@pytest.mark.parametrize("prec", ["bf16", "int8"])
@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": False}),
                                     ("rnn", {})])
@pytest.mark.parametrize("H", [1, 7, 9, 16, 17, 33])
@pytest.mark.parametrize("packed", ["reduced", "wide"])
def test_kernels_at_tile_edges_match_the_reference_and_are_batch_invariant(prec, cell, kw, H, packed,
                                                                           monkeypatch):
    # reduced: bf16 / int8 panels even for these small matrices; wide: fp32 panels of the same
    # values (the engine's choice for matrices up to 128 KiB, engine.c storage_wt)
    monkeypatch.setenv("FASTRNN_PACK_WIDE_BYTES", "0" if packed == "reduced" else str(1 << 30))
    rng = np.random.default_rng(H)
    m = _rec_model(rng, cell, 5, H, prec, **kw)
    x = rng.standard_normal((27, 4, 5)).astype(np.float32)
    y = m.predict(x)
    # float64 on the reduced weights (int8 packed reduced: with the integer kernels' products)
    want, _ = reference.run(m.layers, x, matmul=q8mm if prec == "int8" and packed == "reduced" else reference._matmul)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    for B in (1, 2, 5, 7, 13):                      # any batch gives each row the same bits
        np.testing.assert_array_equal(m.predict(x[:B]), y[:B])
    s = m.stream(batch_size=3)
    for t in range(4):
        np.testing.assert_array_equal(s.step(x[:3, t]), y[:3, t])


@pytest.mark.parametrize("prec", ["bf16", "int8"])
def test_threads_give_the_same_bits_at_every_precision(prec):
    """Two threads split a stream step's units (the input projection's columns from an offset,
    with their scales) and a batch's rows; the results stay those of one thread."""
    m, wl = _model("stream_lstm256")                 # 1 MiB matrices: packed reduced
    r = m.with_precision(prec)
    x = _x(m, wl, 16, 12, seed=5)
    one = r.predict(x)
    s1 = r.stream(batch_size=1)
    ys1 = [s1.step(x[:1, t]) for t in range(12)]
    fastrnn.set_num_threads(2)
    try:
        np.testing.assert_array_equal(r.predict(x), one)
        s2 = r.stream(batch_size=1)
        for t in range(12):
            np.testing.assert_array_equal(s2.step(x[:1, t]), ys1[t])
    finally:
        fastrnn.set_num_threads(1)


# ---- int8 with dynamic activations (src_c/simd/q8.h) -----------------------------------------

def q8mm(a, W):
    """The engine's integer product a @ W.T for an int8 matrix W (reference.run's matmul):
    fastrnn.precision.q8_matmul, exact int sums of u8 activation codes and W's int8 codes with
    the float32 scaling, as float64."""
    return P.q8_matmul(np.asarray(a, np.float32), *P.quantize_int8(np.asarray(W, np.float32))).astype(np.float64)


def test_activation_quantization_is_exact_at_its_edges():
    x = np.array([[0, 0, 0], [1, -1, 0.5], [2, 3, 4], [-2, -1, -0.25], [np.inf, 1, 0], [np.nan, 0, 1]],
                 np.float32)
    u, s, zp = P.quantize_activations(x)
    assert s[0] == 0 and not u[0].any() and zp[0] == 0                   # a row of zeros
    assert s[1] == np.float32(2) / 255 and zp[1] == 128 and u[1, 2] == 192   # zero is exact: u = zp
    assert zp[2] == 0 and u[2, 2] == 255 and zp[3] == 255 and u[3, 0] == 0  # 0 joins one-signed rows
    assert np.isnan(s[4]) and np.isnan(s[5])                              # non-finite rows give NaN
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 77)).astype(np.float32)
    u, s, zp = P.quantize_activations(x)
    back = s[:, None] * (u - zp[:, None])
    assert np.all(np.abs(back - x) <= s[:, None] * (0.5 + 1e-5))         # half a step at most


@pytest.mark.parametrize("cell,kw", [("lstm", {}), ("gru", {}), ("gru", {"linear_before_reset": False}),
                                     ("rnn", {}), ("lstm", {"proj_size": 6})])
@pytest.mark.parametrize("H", [7, 16, 33])
def test_int8_recurrence_is_the_integer_arithmetic_step_by_step(cell, kw, H, monkeypatch):
    kw = dict(kw)
    """Every matrix packed for the integer kernels (FASTRNN_PACK_WIDE_BYTES=0); each stream
    step, from the engine's own state, against the float64 step whose matrix products are
    q8_matmul's (the same codes, the same integer sums): equal up to the fp32 gate math, except
    that GRU linear_before_reset=0 quantizes r*h, which the reference forms in float64 (a code
    may round the other way: one step of r*h times the weight, at most)."""
    monkeypatch.setenv("FASTRNN_PACK_WIDE_BYTES", "0")
    rng = np.random.default_rng(H)
    G = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    k, I = 1 / np.sqrt(H), 11
    R = kw.pop("proj_size", None) or H
    w = {"W_ih": rng.uniform(-k, k, (G * H, I)).astype(np.float32),
         "W_hh": rng.uniform(-k, k, (G * H, R)).astype(np.float32),
         "b_ih": rng.uniform(-k, k, G * H).astype(np.float32), "b_hh": rng.uniform(-k, k, G * H).astype(np.float32)}
    if R != H:
        w["W_hr"] = rng.uniform(-k, k, (R, H)).astype(np.float32)
    m = fastrnn.Model([fastrnn.Recurrent(cell, [w], **kw)]).with_precision("int8")
    layer = m.layers[0]
    w64 = {n: a.astype(np.float64) for n, a in layer.weights[0].items()}
    x = rng.standard_normal((5, 30, I)).astype(np.float32) * 2
    s = m.stream(batch_size=5)
    tol = 3e-6 if kw.get("linear_before_reset", True) else 2 / 255 * k * 1.01 + 3e-6
    worst = 0.0
    for t in range(30):
        st = s.state
        h0 = st[0][0].astype(np.float64)
        c0 = st[1][0].astype(np.float64) if cell == "lstm" else None
        y = s.step(x[:, t])
        h1, c1 = reference._cell_step(layer, w64, layer.activations[0], x[:, t].astype(np.float64), h0, c0,
                                      q8mm)
        worst = max(worst, float(np.abs(y - h1).max()))
        if cell == "lstm":
            worst = max(worst, float(np.abs(s.state[1][0] - c1).max()))
    assert worst <= tol, worst
    # and the whole sequence at once is the stream, row by row (batch invariance)
    y = m.predict(x)
    s2 = m.stream(batch_size=1)
    for t in range(30):
        np.testing.assert_array_equal(s2.step(x[2:3, t]), y[2:3, t])


def test_int8_products_give_the_same_bits_under_every_isa(monkeypatch):
    """Integer sums are exact and their scaling is the same IEEE operations everywhere: an int8
    matrix product does not depend on the ISA (fp32's sums are blocked per ISA; the gate math
    after a recurrent product still is ISA's own). Dense layers: products and biases only."""
    monkeypatch.setenv("FASTRNN_PACK_WIDE_BYTES", "0")
    from fastrnn import _engine
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 13, 40)).astype(np.float32)
    ws = [(rng.uniform(-.2, .2, (70, 40)).astype(np.float32), rng.uniform(-1, 1, 70).astype(np.float32)),
          (rng.uniform(-.2, .2, (33, 70)).astype(np.float32), rng.uniform(-1, 1, 33).astype(np.float32))]
    outs, before = {}, _engine.isa_current()
    try:
        for isa in fastrnn.cpu_info()["available"]:
            _engine.set_isa(isa)
            m = fastrnn.Model([fastrnn.Dense(w, b) for w, b in ws]).with_precision("int8")
            outs[isa] = m.predict(x)
    finally:
        _engine.set_isa(before)   # the ISA this run was given (tests/run.sh forces each in turn)
    q = [P.quantize_int8(m.layers[i].weight) for i in range(2)]
    want = P.q8_matmul(P.q8_matmul(x, *q[0], ws[0][1]), *q[1], ws[1][1])
    for isa, y in outs.items():
        np.testing.assert_array_equal(y, want, err_msg=isa)
