"""Misuse of the API and of model files: one rule for meta, wrong types that are TypeErrors,
loaded models that never depend on their file, and saves that never leave half a file.

Each test is a case a hostile-input campaign found: it failed (a traceback, a silent wrong
answer, a MemoryError, SIGBUS) before the change that added it.
"""
import json
import os
import struct
import threading

import numpy as np
import pytest
from conftest import dense, rec

import fastrnn
from fastrnn import ArgumentTypeError, ModelFormatError, ShapeError, ir
from fastrnn.cli import main


@pytest.fixture
def fm(rng):   # float model: 3 features in, LSTM 5, Dense 2
    return fastrnn.Model([rec(rng, "lstm", 3, 5), dense(rng, 5, 2)])


def _with_spec(raw, edit):
    """A .frnn's bytes with its spec JSON text replaced by edit(text) (the tensors untouched)."""
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["spec"] = edit(header["__metadata__"]["spec"])
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + raw[8 + n:]


def _nested(depth):
    v = "leaf"
    for _ in range(depth - 1):
        v = {"k": v}
    return v


# ---- item 6: one rule for meta in Model(), save and load ---------------------------------------

GOOD_META = [{}, {"source": "keras", "n": 3, "x": -1.5, "ok": True, "none": None, "l": [1, [2, {"a": "b"}]]},
             {"big": 2**63 - 1, "neg": -2**63, "u": 2**64 - 1}, {"deep": _nested(31)}, {"é": "ü\u2603"}]
BAD_META = [({"x": float("inf")}, "not a finite number"), ({"x": float("nan")}, "not a finite number"),
            ({"x": 2**64}, "does not fit 64 bits"), ({"x": -2**63 - 1}, "does not fit 64 bits"),
            ({"deep": _nested(32)}, "nested more than 32 deep"), ({"deep": _nested(5000)}, "nested more than"),
            ({"o": object()}, "not a JSON value"), ({"s": {1, 2}}, "not a JSON value"),
            ({"k": {1: "a"}}, "keys are strings"), ({"b": b"bytes"}, "not a JSON value")]


@pytest.mark.parametrize("meta", GOOD_META)
def test_meta_load_save_and_model_accept_the_same(fm, meta, tmp_path):
    m = fastrnn.Model(fm.layers, meta=meta)
    assert m.meta == meta and m.meta is not meta
    m.save(tmp_path / "m.frnn")
    back = fastrnn.load(tmp_path / "m.frnn")
    assert back.meta == meta
    back.save(tmp_path / "again.frnn")
    assert (tmp_path / "again.frnn").read_bytes() == (tmp_path / "m.frnn").read_bytes()


@pytest.mark.parametrize("meta, match", BAD_META)
def test_meta_refused_alike_by_model_save_and_load(fm, meta, match, tmp_path):
    with pytest.raises(ModelFormatError, match=match):
        fastrnn.Model(fm.layers, meta=meta)
    fm.meta["bad"] = meta                          # meta is a plain dict: changed after construction
    with pytest.raises(ModelFormatError, match=match):
        fm.save(tmp_path / "m.frnn")
    assert not os.listdir(tmp_path), "a refused save leaves no file behind"


@pytest.mark.parametrize("text, match", [
    ('{"x": 1e400}', "not a finite number"), ('{"x": -1e999}', "not a finite number"),
    ('{"x": 18446744073709551616}', "does not fit 64 bits"),
    ('{"d": ' + '{"k": ' * 40 + '1' + '}' * 40 + '}', "nested more than 32 deep"),
])
def test_load_refuses_what_save_would_refuse(fm, tmp_path, text, match):
    """A file whose meta JSON parses to values save cannot write (1e400 is inf to Python)."""
    fm.save(tmp_path / "m.frnn")
    raw = (tmp_path / "m.frnn").read_bytes()
    bad = _with_spec(raw, lambda spec: spec.replace('"meta":{}', '"meta":' + text).replace('"meta": {}', '"meta": ' + text))
    assert bad != raw
    with pytest.raises(ModelFormatError, match=match):
        fastrnn.load(bad)


def test_numpy_scalars_in_meta_become_numbers(fm, tmp_path):
    m = fastrnn.Model(fm.layers, meta={"n": np.int64(4), "f": np.float32(0.5), "b": np.bool_(True), "t": (1, 2)})
    assert m.meta == {"n": 4, "f": 0.5, "b": True, "t": [1, 2]}
    assert type(m.meta["n"]) is int and type(m.meta["b"]) is bool
    m.save(tmp_path / "m.frnn")
    assert fastrnn.load(tmp_path / "m.frnn").meta == m.meta


def test_save_refuses_a_header_load_would_refuse(fm, tmp_path):
    from fastrnn.fileformat import MAX_HEADER
    fm.meta["blob"] = "x" * MAX_HEADER
    with pytest.raises(ModelFormatError, match="over the .*-byte limit"):
        fm.save(tmp_path / "m.frnn")


@pytest.mark.parametrize("source", [5, 1.5, True, ["a", "b"], {"framework": "x"}])
def test_info_of_a_model_whose_source_is_not_a_string(fm, tmp_path, capsys, source):
    path = tmp_path / "m.frnn"
    fastrnn.Model(fm.layers, meta={"source": source}).save(path)
    assert main(["info", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"source    {source}" in out and err == ""
    assert main(["info", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr()[0])["source"] == source


def test_graph_signature_x_needs_its_feature_axis(rng):
    """A float model's ONNX sequence input must carry F (else run() can never feed it)."""
    lstm = rec(rng, "lstm", 3, 4)
    graph = {"inputs": [{"name": "X", "role": "x", "axes": ["T", "B", "F"]}],
             "outputs": [{"name": "Y", "kind": "y", "axes": ["T", "B", "F"], "dirs": 1, "last": None}]}
    fastrnn.Model([lstm], signature={"graph": graph})
    graph["inputs"][0]["axes"] = ["T", "B"]
    with pytest.raises(ModelFormatError, match="signature graph: input"):
        fastrnn.Model([lstm], signature={"graph": graph})
    one = rec(rng, "lstm", 1, 4)                    # one feature: the graph may leave F out
    fastrnn.Model([one], signature={"graph": graph})
    emb = ir.Embedding(rng.normal(size=(7, 3)).astype(np.float32))
    fastrnn.Model([emb, lstm], signature={"graph": graph})     # ids: (T, B) and no F
    graph["inputs"][0]["axes"] = ["T", "B", "F"]
    with pytest.raises(ModelFormatError, match="signature graph: input"):
        fastrnn.Model([emb, lstm], signature={"graph": graph})


# ---- item 7: API misuse: both ways of catching, no silent wrong answer --------------------------

def test_wrong_types_are_type_errors_and_shape_errors(fm):
    pool = fastrnn.StreamPool(fm, 2)
    s = fm.stream(2)
    x = np.zeros((2, 3), np.float32)
    for call in [lambda: fastrnn.StreamPool("model", 4), lambda: fastrnn.StreamPool(fm, "4"),
                 lambda: s.step_into(x, None), lambda: s.step_into(x, [[0.0, 0.0]] * 2),
                 lambda: pool.step_into([0], x[:1], None), lambda: fastrnn.set_num_threads("2"),
                 lambda: fm.stream(2.0), lambda: fm.stream(True), lambda: pool.close("a"),
                 lambda: fastrnn.load(5), lambda: fm.save(5), lambda: fastrnn.Model(None)]:
        for kind in (TypeError, ShapeError, ArgumentTypeError, fastrnn.FastRNNError):
            with pytest.raises(kind):
                call()
    for call in [lambda: fastrnn.set_num_threads(0), lambda: fastrnn.set_num_threads(5000),
                 lambda: fastrnn.StreamPool(fm, 0), lambda: fm.stream(0)]:
        with pytest.raises(ValueError):
            call()
        with pytest.raises(ShapeError):
            call()


def test_a_bool_is_never_a_slot(fm):
    pool = fastrnn.StreamPool(fm, 4)
    a, b = pool.open(), pool.open()
    assert (a, b) == (0, 1)
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ArgumentTypeError, match="a bool"):
        pool.step([0, True], x)
    with pytest.raises(ArgumentTypeError, match="a bool"):
        pool.step((np.bool_(False), 1), x)
    with pytest.raises(ArgumentTypeError):
        pool.step(np.array([False, True]), x)
    # nothing was stepped: slot 1 still at its zero state, as a fresh batch-1 stream
    ref = fm.stream(1)
    np.testing.assert_array_equal(pool.step([1], x[:1]), ref.step(x[:1]))


def test_an_oversized_input_is_refused_before_it_is_copied(fm, rng):
    """A broadcast view of 2**40 rows costs nothing to make; copying it would need 12 TiB."""
    huge = np.broadcast_to(np.zeros(3, np.float64), (2**20, 2**20, 3))
    with pytest.raises(ShapeError, match="batch\\*time = 1099511627776 is over the limit"):
        fm.predict(huge)
    ids = fastrnn.Model([ir.Embedding(rng.normal(size=(9, 3)).astype(np.float32)), rec(rng, "gru", 3, 2)])
    with pytest.raises(ShapeError, match="over the limit"):
        ids.predict(np.broadcast_to(np.int64(3), (2**20, 2**20)))


def test_options_given_arrays_by_mistake(rng):
    W = rng.normal(size=(16, 3)).astype(np.float32)
    with pytest.raises(ModelFormatError, match="Recurrent.direction"):
        ir.Recurrent("lstm", [{"W_ih": W}], W)               # weights passed positionally twice
    with pytest.raises(ModelFormatError, match="Recurrent.cell"):
        ir.Recurrent(W, [])
    with pytest.raises(ModelFormatError, match="unknown activation"):
        ir.Act(W)
    with pytest.raises(ModelFormatError, match="input_size must be a positive integer"):
        fastrnn.Model([rec(rng, "gru", 3, 2)], input_size="3")


# ---- item 8: a loaded model owns its weights; saves are atomic ----------------------------------

def test_a_file_rewritten_in_place_after_load(fm, tmp_path, rng):
    path = tmp_path / "m.frnn"
    fm.save(path)
    original = path.read_bytes()
    m = fastrnn.load(path)
    x = rng.normal(size=(2, 4, 3)).astype(np.float32)
    want = m.predict(x)
    other = fastrnn.Model([rec(rng, "lstm", 3, 5), dense(rng, 5, 2)])
    other.save(tmp_path / "other.frnn")
    with open(path, "r+b") as f:                 # cp other.frnn m.frnn: the same inode, rewritten
        f.write((tmp_path / "other.frnn").read_bytes())
    np.testing.assert_array_equal(m.predict(x), want)
    m.save(tmp_path / "resaved.frnn")
    assert (tmp_path / "resaved.frnn").read_bytes() == original
    with open(path, "r+b") as f:                 # and cut short: a mapping would now raise SIGBUS
        f.truncate(16)
    assert float(np.abs(m.layers[0].weights[0]["W_ih"]).sum()) > 0
    m.save(tmp_path / "resaved2.frnn")
    assert (tmp_path / "resaved2.frnn").read_bytes() == original


def test_load_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(ModelFormatError, match="not a regular file"):
        fastrnn.load("/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ModelFormatError, match="not a regular file"):
        fastrnn.load(fifo)


def test_a_failed_save_leaves_the_old_file_and_no_litter(fm, tmp_path, monkeypatch, rng):
    path = tmp_path / "m.frnn"
    fm.save(path)
    old = path.read_bytes()
    other = fastrnn.Model([rec(rng, "lstm", 3, 5), dense(rng, 5, 2)])

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        other.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.frnn"]


def test_save_replaces_atomically_under_a_reader(fm, tmp_path, rng):
    """Readers of the path see the old model or the new one, never a mixture or a short file."""
    path = tmp_path / "m.frnn"
    models = [fm, fastrnn.Model([rec(rng, "lstm", 3, 5), dense(rng, 5, 2)])]
    for i, m in enumerate(models):
        m.save(tmp_path / f"{i}.frnn")
    wanted = {(tmp_path / f"{i}.frnn").read_bytes() for i in range(2)}
    models[0].save(path)
    stop, seen, errors = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            try:
                seen.add(path.read_bytes())
            except OSError as e:          # never: the name always points at a whole file
                errors.append(e)
    t = threading.Thread(target=reader)
    t.start()
    for k in range(60):
        models[k % 2].save(path)
    stop.set()
    t.join()
    assert not errors and seen <= wanted and seen
    assert sorted(os.listdir(tmp_path)) == ["0.frnn", "1.frnn", "m.frnn"]


def test_save_through_a_symlink_keeps_the_link(fm, tmp_path):
    (tmp_path / "v1").mkdir()
    target = tmp_path / "v1" / "model.frnn"
    fm.save(target)
    link = tmp_path / "current.frnn"
    link.symlink_to(target)
    fastrnn.Model(fm.layers, meta={"v": 2}).save(link)
    assert link.is_symlink() and fastrnn.load(target).meta == {"v": 2}


def test_save_errors_name_the_target(fm, tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot write beside .*missing/m.frnn"):
        fm.save(tmp_path / "missing" / "m.frnn")
