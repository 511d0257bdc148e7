"""The .frnn file: save -> load round trips bit-identically, weights come back as read-only memory
maps (and run as such), the format is versioned and validated. (Fuzzing: test_fuzz_loader.py.)"""
import json
import struct

import numpy as np
import pytest
from conftest import dense, rec

import fastrnn
from fastrnn import ir, reference


def every_layer_kind(rng):
    return [ir.Embedding(rng.normal(size=(12, 6)).astype(np.float32), mask_zero=True),
            rec(rng, "lstm", 6, 9, "bidirectional", peepholes=True, proj=4, clip=2.0, merge_mode="sum",
                activations=[[ir.Act("hard_sigmoid", 1 / 6, 0.5), "tanh", "softsign"],
                             ["sigmoid", ir.Act("scaled_tanh", 0.5, 2.0), "tanh"]]),
            rec(rng, "gru", 4, 16, linear_before_reset=False, bias=False, masked_output="zero"),
            rec(rng, "rnn", 16, 5, "forward", activations=[ir.Act("leaky_relu", 0.2)]),
            ir.Masking(5, 0.5),
            dense(rng, 5, 7, "log_softmax"), ir.Activation(7, ir.Act("affine", 2.0, -1.0))]


def test_round_trip_bit_identical(rng, tmp_path):
    m = fastrnn.Model(every_layer_kind(rng), meta={"source": "test", "n": 1})
    p1, p2 = tmp_path / "a.frnn", tmp_path / "b.frnn"
    m.save(p1)
    m2 = fastrnn.load(p1)
    assert m2.meta == {"source": "test", "n": 1}
    x = rng.integers(0, 12, (3, 11))
    np.testing.assert_array_equal(m.predict(x), m2.predict(x))
    m2.save(p2)
    assert p1.read_bytes() == p2.read_bytes()
    for a, b in zip(m.layers, m2.layers):
        assert type(a) is type(b) and a.options() == b.options()
        for (k, u), (k2, v) in zip(sorted(a.tensors().items()), sorted(b.tensors().items())):
            assert k == k2 and u.tobytes() == v.tobytes()


def test_files_are_standard_safetensors(rng, tmp_path):
    from safetensors.numpy import load_file
    from safetensors import safe_open
    m = fastrnn.Model(every_layer_kind(rng))
    m.save(tmp_path / "m.frnn")
    loaded = load_file(str(tmp_path / "m.frnn"))
    assert loaded["layers.0.weight"].tobytes() == m.layers[0].weight.tobytes()
    assert len(loaded) == sum(len(l.tensors()) for l in m.layers)
    with safe_open(str(tmp_path / "m.frnn"), "np") as f:
        assert f.metadata()["format"] == "fastrnn"


def test_weights_are_readonly_views_of_the_file_read_once(rng, tmp_path):
    """load reads the file whole into one bytes object; the weights are read-only views of it
    (no mapping of the file: tests/test_misuse.py rewrites the file under a loaded model)."""
    m = fastrnn.Model([rec(rng, "lstm", 3, 17), dense(rng, 17, 2)])
    m.save(tmp_path / "m.frnn")
    m2 = fastrnn.load(tmp_path / "m.frnn")
    w = m2.layers[0].weights[0]["W_ih"]
    assert not w.flags.writeable
    base = w
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, bytes)
    assert base.nbytes == (tmp_path / "m.frnn").stat().st_size
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))


def test_readonly_weights_from_python(rng):
    layer = rec(rng, "gru", 3, 16)
    for w in layer.weights[0].values():
        w.flags.writeable = False
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    fastrnn.Model([layer]).predict(x)


def _rewrite_meta(src, dst, **changes):
    raw = src.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["__metadata__"].update(changes)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    dst.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n:])


def test_version_and_format_checked(rng, tmp_path):
    m = fastrnn.Model([rec(rng, "rnn", 2, 3)])
    m.save(tmp_path / "m.frnn")
    newer = str(fastrnn.fileformat.VERSION + 1)
    _rewrite_meta(tmp_path / "m.frnn", tmp_path / "newer.frnn", format_version=newer)
    with pytest.raises(fastrnn.ModelFormatError, match="newer fastrnn"):
        fastrnn.load(tmp_path / "newer.frnn")
    _rewrite_meta(tmp_path / "m.frnn", tmp_path / "other.frnn", format="pt")
    with pytest.raises(fastrnn.ModelFormatError, match="expected 'fastrnn'"):
        fastrnn.load(tmp_path / "other.frnn")
    # a plain safetensors file of someone else's weights
    from safetensors.numpy import save_file
    save_file({"w": np.zeros(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(fastrnn.ModelFormatError, match="format is None"):
        fastrnn.load(tmp_path / "plain.safetensors")


def test_carry_is_version_3(rng, tmp_path):
    """A model with a carry (a branch) is written as version 3, round-trips bit for bit and is
    refused in a file that claims an older version (an older reader refuses the option too);
    a model without one is still written as version 1."""
    layers = [rec(rng, "gru", 3, 4), ir.Dense(rng.normal(size=(2, 4)), None, "relu", carry=((1, 3), (0, 4))),
              ir.Activation(2, "tanh", carry=((2, 8),))]
    m = fastrnn.Model(layers)
    m.save(tmp_path / "m.frnn")
    raw = (tmp_path / "m.frnn").read_bytes()
    meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
    assert meta["format_version"] == "3"
    assert json.loads(meta["spec"])["layers"][1]["options"]["carry"] == [[1, 3], [0, 4]]
    m2 = fastrnn.load(tmp_path / "m.frnn")
    assert [l.carry for l in m2.layers[1:]] == [((1, 3), (0, 4)), ((2, 8),)]
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    m2.save(tmp_path / "again.frnn")
    assert (tmp_path / "again.frnn").read_bytes() == raw
    _rewrite_meta(tmp_path / "m.frnn", tmp_path / "v2.frnn", format_version="2")
    with pytest.raises(fastrnn.ModelFormatError, match="carry or an attention pool in a version 2 file"):
        fastrnn.load(tmp_path / "v2.frnn")
    att = fastrnn.Model([rec(rng, "gru", 3, 4), ir.Dense(rng.normal(size=(1, 4)), carry=((0, 4),)),
                         ir.Pool(4, ("attn",), score_bias=rng.normal(size=6), eps=1e-10)])
    att.save(tmp_path / "att.frnn")
    back = fastrnn.load(tmp_path / "att.frnn")
    np.testing.assert_array_equal(back.layers[-1].score_bias, att.layers[-1].score_bias)
    np.testing.assert_array_equal(back.predict(x[:, :6]), att.predict(x[:, :6]))
    _rewrite_meta(tmp_path / "att.frnn", tmp_path / "att2.frnn", format_version="2")
    with pytest.raises(fastrnn.ModelFormatError, match="attention pool in a version 2 file"):
        fastrnn.load(tmp_path / "att2.frnn")
    fastrnn.Model(layers[:1]).save(tmp_path / "plain.frnn")
    raw = (tmp_path / "plain.frnn").read_bytes()
    assert json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]["format_version"] == "1"


def test_truncated_files(rng, tmp_path):
    m = fastrnn.Model([rec(rng, "lstm", 3, 4)])
    m.save(tmp_path / "m.frnn")
    raw = (tmp_path / "m.frnn").read_bytes()
    for cut in (0, 4, 8, 20, len(raw) // 2, len(raw) - 1):
        (tmp_path / "t.frnn").write_bytes(raw[:cut])
        with pytest.raises(fastrnn.ModelFormatError):
            fastrnn.load(tmp_path / "t.frnn")
    with pytest.raises(fastrnn.ModelFormatError, match="cannot read"):
        fastrnn.load(tmp_path / "missing.frnn")


def test_absurd_version_strings(rng, tmp_path):
    fastrnn.Model([rec(rng, "rnn", 2, 3)]).save(tmp_path / "m.frnn")
    for v in ("9" * 5000, "²", "-1", "1.0", ""):
        _rewrite_meta(tmp_path / "m.frnn", tmp_path / "v.frnn", format_version=v)
        with pytest.raises(fastrnn.ModelFormatError, match="format_version"):
            fastrnn.load(tmp_path / "v.frnn")


def test_load_from_bytes_and_buffers(rng, tmp_path):
    """fastrnn.load takes the file's bytes (bytes, bytearray, memoryview, a NumPy uint8 array)
    as well as a path: the same model, the same bits; validated the same way."""
    m = fastrnn.Model(every_layer_kind(rng), meta={"source": "test"})
    m.save(tmp_path / "m.frnn")
    raw = (tmp_path / "m.frnn").read_bytes()
    x = rng.integers(0, 12, (2, 5))
    want = m.predict(x)
    mutable = bytearray(raw)
    for src in (raw, mutable, memoryview(raw), np.frombuffer(raw, np.uint8)):
        m2 = fastrnn.load(src)
        np.testing.assert_array_equal(m2.predict(x), want)
        assert m2.meta == {"source": "test"}
    # a writable buffer is copied: changing it afterwards does not change the model
    m3 = fastrnn.load(mutable)
    mutable[-64:] = bytes(64)
    m3.save(tmp_path / "again.frnn")
    assert (tmp_path / "again.frnn").read_bytes() == raw
    for cut in (0, 4, 8, 20, len(raw) // 2, len(raw) - 1):
        with pytest.raises(fastrnn.ModelFormatError, match="bytes"):
            fastrnn.load(raw[:cut])
    with pytest.raises(TypeError, match="path or bytes"):
        fastrnn.load(12)


@pytest.mark.parametrize("what", ["pool_mask", "last_first", "flatten"])
def test_version_5_features_in_an_older_file_are_refused(what, tmp_path):
    """An Embedding's pool_mask and the "last" / "first" pool kinds are written as format version
    5; a file of an older version holding them was not written by fastrnn: refused."""
    rng = np.random.default_rng(0)
    if what == "pool_mask":
        layers = [ir.Embedding(rng.normal(size=(9, 3)).astype(np.float32), pool_mask=0),
                  rec(rng, "gru", 3, 4), ir.Pool(4, ("mean",), "valid")]
    elif what == "last_first":
        layers = [rec(rng, "gru", 3, 4), ir.Pool(4, ("last", "max"))]
    else:
        layers = [rec(rng, "gru", 3, 4), ir.Flatten(4, 5), dense(rng, 20, 2)]
    fastrnn.Model(layers).save(tmp_path / "m.frnn")
    raw = (tmp_path / "m.frnn").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    assert head["__metadata__"]["format_version"] == "5"
    head["__metadata__"]["format_version"] = "4"
    h = json.dumps(head).encode()
    h += b" " * (-len(h) % 8)
    (tmp_path / "old.frnn").write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n:])
    with pytest.raises(fastrnn.ModelFormatError, match="version 5"):
        fastrnn.load(tmp_path / "old.frnn")
    assert fastrnn.load(tmp_path / "m.frnn").layers[1].options() == layers[1].options()


def test_version_8_static_graph_inputs(tmp_path):
    """An ONNX graph signature with a static-features input (role "static", converters/graph.py
    _static_columns) is version 8: written as such, run() reads it back the same, refused in a
    file that claims version 7."""
    rng = np.random.default_rng(5)
    sig = {"outputs": None, "states": None, "time": None, "graph": {
        "inputs": [{"name": "x", "role": "x", "axes": ["B", "T", "F"]}, {"name": "s", "role": "static", "cols": [3, 5]}],
        "outputs": [{"name": "y", "kind": "y", "axes": ["B", "T", "F"], "dirs": 1, "last": None}]}}
    m = fastrnn.Model([rec(rng, "gru", 5, 4)], signature=sig)
    assert _saved_version(m, tmp_path / "m.frnn") == "8"
    feeds = {"x": rng.normal(size=(2, 6, 3)).astype(np.float32), "s": rng.normal(size=(2, 2)).astype(np.float32)}
    joined = np.concatenate([feeds["x"], np.broadcast_to(feeds["s"][:, None], (2, 6, 2))], -1)
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.frnn").run(None, feeds)[0], m.predict(joined))
    _rewrite_meta(tmp_path / "m.frnn", tmp_path / "v7.frnn", format_version="7")
    with pytest.raises(fastrnn.ModelFormatError, match="static features.*version 8"):
        fastrnn.load(tmp_path / "v7.frnn")


def _saved_version(m, path):
    """m saved at path; -> the format_version the file was written as."""
    m.save(path)
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n])["__metadata__"]["format_version"]


@pytest.mark.parametrize("what", ["mish", "hardswish", "clip", "repeat_own_steps"])
def test_version_7_features(what, tmp_path):
    """The mish, hardswish and clip activations and a RepeatVector of the sequence's own steps
    (n 0) are format version 7: written as such, read back to the same numbers, refused in a file
    that claims version 6 (a reader of version 6 has no such kinds); a model without them is still
    written at the lowest version that holds it."""
    rng = np.random.default_rng(1)
    if what == "repeat_own_steps":
        layers = [rec(rng, "gru", 3, 4, return_sequences=False), ir.RepeatVector(4, 0), rec(rng, "lstm", 4, 2)]
    else:
        act = ir.Act(what, -0.25, 0.5) if what == "clip" else ir.Act(what)
        layers = [rec(rng, "gru", 3, 4), ir.Dense(rng.normal(size=(2, 4)), None, act)]
    m = fastrnn.Model(layers)
    assert _saved_version(m, tmp_path / "m.frnn") == "7"
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    back = fastrnn.load(tmp_path / "m.frnn")
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    np.testing.assert_allclose(m.predict(x), reference.run(m.layers, x)[0], rtol=1e-5, atol=1e-6)
    if what == "repeat_own_steps":
        assert m.predict(x).shape == (2, 6, 2) and m.predict(x[:, :4]).shape == (2, 4, 2)
    _rewrite_meta(tmp_path / "m.frnn", tmp_path / "v6.frnn", format_version="6")
    with pytest.raises(fastrnn.ModelFormatError, match="version 7"):
        fastrnn.load(tmp_path / "v6.frnn")
    with pytest.raises(fastrnn.ModelFormatError, match="lower bound"):
        ir.Act("clip", 1.0, -1.0)


def test_version_8_learned_initial_state(tmp_path):
    """A Recurrent layer's learned initial state (h0 / c0) is format version 8: written as such,
    read back to the same numbers (also as int8: the state stays float32), refused in a file that
    claims version 7; a c0 outside an LSTM, or of the wrong width, is a ModelFormatError."""
    rng = np.random.default_rng(4)
    layer = rec(rng, "lstm", 3, 4)
    w = dict(layer.weights[0], h0=rng.normal(size=4).astype(np.float32), c0=rng.normal(size=4).astype(np.float32))
    m = fastrnn.Model([ir.Recurrent("lstm", [w])])
    assert _saved_version(m, tmp_path / "m.frnn") == "8"
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    back = fastrnn.load(tmp_path / "m.frnn")
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    np.testing.assert_array_equal(back.layers[0].weights[0]["c0"], w["c0"])
    m.with_precision("int8").save(tmp_path / "m8.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m8.frnn").layers[0].weights[0]["h0"], w["h0"])
    _rewrite_meta(tmp_path / "m.frnn", tmp_path / "v7.frnn", format_version="7")
    with pytest.raises(fastrnn.ModelFormatError, match="learned initial state.*version 8"):
        fastrnn.load(tmp_path / "v7.frnn")
    with pytest.raises(fastrnn.ModelFormatError, match="LSTM's only"):
        ir.Recurrent("gru", [dict(rec(rng, "gru", 3, 4).weights[0], c0=np.zeros(4, np.float32))])
    with pytest.raises(fastrnn.ModelFormatError, match="h0"):
        ir.Recurrent("lstm", [dict(layer.weights[0], h0=np.zeros(5, np.float32))])


def test_version_8_self_attention(tmp_path):
    """A self-attention layer (ir.Attention) is format version 8: saved and loaded to the same
    numbers with its options and carry, refused in a file claiming version 7; bad options are
    ModelFormatErrors."""
    rng = np.random.default_rng(6)
    att = ir.Attention(4, 2, True, 0.3, extra=3, carry=((12, 15),))
    m = fastrnn.Model([rec(rng, "gru", 3, 3), ir.Dense(rng.normal(size=(12, 3)).astype(np.float32), None, carry=((0, 3),)),
                       att, ir.Dense(rng.normal(size=(2, 7)).astype(np.float32))])
    assert _saved_version(m, tmp_path / "m.frnn") == "8"
    back = fastrnn.load(tmp_path / "m.frnn")
    assert back.layers[2].options() == att.options()
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    _rewrite_meta(tmp_path / "m.frnn", tmp_path / "v7.frnn", format_version="7")
    with pytest.raises(fastrnn.ModelFormatError, match="self-attention layer in a version 7"):
        fastrnn.load(tmp_path / "v7.frnn")
    for bad in ({"size": 6, "heads": 4}, {"size": 4, "scale": 0.0}, {"size": 4, "carry": ((10, 13),)}):
        with pytest.raises(fastrnn.ModelFormatError):
            ir.Attention(**bad)


def test_signature_axes_split_the_features(tmp_path):
    """Signature axes '#k' view the features as (k, F / k) (a forecaster's fc(h).view(B, horizon,
    n_features)): predict and output_shapes give that shape, saved and loaded; a k that does not
    divide the features, a '#k' not right before 'F', or a malformed one is a ModelFormatError."""
    rng = np.random.default_rng(3)
    layers = [rec(rng, "gru", 3, 4, return_sequences=False), dense(rng, 4, 12)]
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    plain = fastrnn.Model(layers).predict(x)
    m = fastrnn.Model(layers, signature={"axes": ["B", "#4", "F"]})
    np.testing.assert_array_equal(m.predict(x), plain.reshape(2, 4, 3))
    assert m.output_shapes(batch_size=2, time_steps=5) == [(2, 4, 3)]
    m.save(tmp_path / "m.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.frnn").predict(x), plain.reshape(2, 4, 3))
    for bad in (["B", "#5", "F"], ["B", "F", "#4"], ["B", "#0", "F"], ["B", "#x", "F"], ["B", "#4"]):
        with pytest.raises(fastrnn.ModelFormatError, match="signature axes"):
            fastrnn.Model(layers, signature={"axes": bad})
