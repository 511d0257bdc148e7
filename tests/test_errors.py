"""Bad input gets a clear error naming what was expected and what came, never a crash."""
import numpy as np
import pytest
from conftest import dense, rec

import fastrnn
from fastrnn import ir


@pytest.fixture
def fm(rng):   # float model: 3 features in, LSTM 5
    return fastrnn.Model([rec(rng, "lstm", 3, 5), dense(rng, 5, 2)])


@pytest.fixture
def im(rng):   # ids model, vocab 10
    return fastrnn.Model([ir.Embedding(rng.normal(size=(10, 4)).astype(np.float32)), rec(rng, "gru", 4, 6)])


@pytest.mark.parametrize("x, match", [
    (np.zeros((2, 4, 4), np.float32), r"expected x of shape \(batch, time, 3\), got shape \(2, 4, 4\)"),
    (np.zeros((4, 3), np.float32), r"got shape \(4, 3\) \(for one sequence use x\[None\]\)"),
    (np.zeros((1, 2, 3, 1), np.float32), "got shape"),
    (np.zeros((2, 4, 3), np.int64), "expected float input.*got dtype int64"),
    (np.zeros((2, 0, 3), np.float32), "at least one time step"),
    (np.array([["a"]]), "dtype"),
])
def test_predict_bad_x(fm, x, match):
    with pytest.raises(fastrnn.ShapeError, match=match):
        fm.predict(x)


def test_predict_ids(im):
    with pytest.raises(fastrnn.ShapeError, match=r"token id 10 at \(1, 2\) is outside \[0, 10\)"):
        im.predict(np.array([[1, 2, 3], [4, 5, 10]]))
    with pytest.raises(fastrnn.ShapeError, match=r"token id -1 at \(0, 0\)"):
        im.predict(np.array([[-1, 2, 3]]))
    with pytest.raises(fastrnn.ShapeError, match="integer token ids"):
        im.predict(np.zeros((2, 3), np.float32))
    with pytest.raises(fastrnn.ShapeError, match=r"x\[None\]"):
        im.predict(np.array([1, 2, 3]))
    assert im.predict(np.zeros((0, 3), np.int64)).shape == (0, 3, 6)   # empty batch is fine


@pytest.mark.parametrize("lengths, match", [
    ([1, -1], r"length -1 is outside \[0, 4\]"),
    ([5, 1], r"length 5 is outside \[0, 4\]"),
    ([1, 2, 3], r"expected lengths of shape \(2,\)"),
    ([1.0, 2.0], "lengths must be integers"),
])
def test_bad_lengths(fm, lengths, match):
    with pytest.raises(fastrnn.ShapeError, match=match):
        fm.predict(np.zeros((2, 4, 3), np.float32), lengths=np.array(lengths))


def test_bad_initial_state(fm):
    x = np.zeros((2, 4, 3), np.float32)
    with pytest.raises(fastrnn.ShapeError, match=r"expected 2 arrays \(h0, c0\), got 1"):
        fm.predict(x, initial_state=[np.zeros((1, 2, 5))])
    with pytest.raises(fastrnn.ShapeError, match=r"initial_state\[1\]: expected shape \(1, 2, 5\), got \(2, 5\)"):
        fm.predict(x, initial_state=[np.zeros((1, 2, 5)), np.zeros((2, 5))])
    with pytest.raises(fastrnn.ShapeError, match="expected a list"):
        fm.predict(x, initial_state=np.zeros((1, 2, 5)))


def test_stream_bad_inputs(fm, im):
    s = fm.stream(2)
    out = np.empty((2, 2), np.float32)
    with pytest.raises(fastrnn.ShapeError, match=r"expected x of shape \(2, 3\), got \(1, 3\)"):
        s.step(np.zeros((1, 3), np.float32))
    with pytest.raises(fastrnn.ShapeError, match="expected float input"):
        s.step(np.zeros((2, 3), np.int32))
    with pytest.raises(fastrnn.ShapeError, match="out must be"):
        s.step_into(np.zeros((2, 3), np.float32), np.empty((2, 2), np.float64))
    with pytest.raises(fastrnn.ShapeError, match="out must be"):
        s.step_into(np.zeros((2, 3), np.float32), np.empty((2, 4), np.float32)[:, ::2])
    ro = np.empty((2, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(fastrnn.ShapeError, match="out must be"):
        s.step_into(np.zeros((2, 3), np.float32), ro)
    with pytest.raises(TypeError):
        s.step_into(np.zeros((2, 3), np.float32), None)
    s.step_into(np.zeros((2, 3), np.float32), out)
    si = im.stream(2)
    with pytest.raises(fastrnn.ShapeError, match=r"outside \[0, vocab_size\)"):
        si.step(np.array([1, 10]))
    with pytest.raises(fastrnn.ShapeError, match=r"outside \[0, vocab_size\)"):
        si.step(np.array([1, -3], np.int8))
    with pytest.raises(fastrnn.ShapeError, match=r"outside \[0, vocab_size\)"):
        si.step(np.array([1, 2**63 + 5], np.uint64))
    with pytest.raises(fastrnn.ShapeError, match="token ids must be integers"):
        si.step(np.array([1.0, 2.0]))
    with pytest.raises(fastrnn.ShapeError, match=r"shape \(2,\)"):
        si.step(np.array([[1], [2]]))
    si.step(np.array([1, 2], np.uint8))      # still usable after errors
    with pytest.raises(fastrnn.ShapeError, match="batch_size must be an integer >= 1"):
        im.stream(0)


def test_nan_inf_input_propagates(fm):
    x = np.zeros((2, 3, 3), np.float32)
    x[0, 1, 0] = np.nan
    x[1, 0, 2] = np.inf
    y = fm.predict(x)
    assert np.isnan(y[0, 1:]).all() and not np.isnan(y[0, 0]).any()
    s = fm.stream(2)
    assert np.isnan(s.step(np.array([[np.nan, 0, 0], [0, 0, 0]], np.float32))[0]).all()


@pytest.mark.parametrize("make, match", [
    (lambda r: ir.Recurrent("lstm", [{"W_ih": np.zeros((8, 3)), "W_hh": np.zeros((8, 3))}]),
     r"W_hh: expected shape \(8, 2\)"),
    (lambda r: ir.Recurrent("lstm", [{"W_ih": np.zeros((7, 3)), "W_hh": np.zeros((7, 3))}]),
     "multiple of 4 gates"),
    (lambda r: ir.Recurrent("gru", [{"W_ih": np.zeros((3, 1)), "W_hh": np.zeros((3, 1))}], direction="bidirectional"),
     "expected a list of 2"),
    (lambda r: ir.Recurrent("rnn", [{"W_ih": np.zeros((1, 1)), "W_hh": np.zeros((1, 1)), "P": np.zeros((3, 1))}]),
     "LSTM option"),
    (lambda r: ir.Recurrent("rnn", [{"W_ih": np.zeros((1, 1)), "W_hh": np.zeros((1, 1))}], activations=["softmax"]),
     "not an elementwise"),
    (lambda r: ir.Recurrent("lstm", [{"W_ih": np.zeros((4, 1)), "W_hh": np.zeros((4, 1))}], activations=["tanh"]),
     "takes 3 activations"),
    (lambda r: ir.Dense(np.zeros((2, 3)), np.zeros(3)), r"Dense.bias: expected shape \(2,\)"),
    (lambda r: ir.Act("swishy"), "unknown activation"),
    (lambda r: ir.Recurrent("lstm", [{"W_ih": np.zeros((4, 1)), "W_hh": np.zeros((4, 1))}], clip=-1),
     "clip must be a positive"),
])
def test_bad_specs(rng, make, match):
    with pytest.raises(fastrnn.ModelFormatError, match=match):
        make(rng)


def test_bad_pipelines(rng):
    with pytest.raises(fastrnn.ModelFormatError, match="expects 4 input features, the previous layer gives 5"):
        fastrnn.Model([rec(rng, "lstm", 3, 5), rec(rng, "gru", 4, 2)])
    with pytest.raises(fastrnn.ModelFormatError, match="needs a sequence"):
        fastrnn.Model([rec(rng, "lstm", 3, 5, return_sequences=False), rec(rng, "gru", 5, 2)])
    with pytest.raises(fastrnn.ModelFormatError, match="only be the first layer"):
        fastrnn.Model([rec(rng, "lstm", 3, 4), ir.Embedding(np.zeros((5, 4)))])
    with pytest.raises(fastrnn.ModelFormatError, match="non-empty list"):
        fastrnn.Model([])
    with pytest.raises(fastrnn.ModelFormatError, match="input_size 4 does not match layer 0 input 3"):
        fastrnn.Model([ir.Activation(3, "tanh")], input_size=4)
    m = fastrnn.Model([ir.Activation(3, "tanh")])
    assert m.predict(np.zeros((1, 1, 3), np.float32)).shape == (1, 1, 3)


def test_exception_hierarchy():
    assert issubclass(fastrnn.ShapeError, (fastrnn.FastRNNError, ValueError))
    assert issubclass(fastrnn.ModelFormatError, (fastrnn.FastRNNError, ValueError))
    assert issubclass(fastrnn.UnsupportedError, (fastrnn.FastRNNError, NotImplementedError))


def test_run_needs_onnx_model(fm):
    with pytest.raises(fastrnn.UnsupportedError, match="converted from ONNX"):
        fm.run(None, {"X": np.zeros((1, 1, 3), np.float32)})


def test_byte_swapped_inputs_are_read_as_numbers(rng, fm, im):
    x = rng.normal(size=(2, 3)).astype(np.float32)
    s1, s2 = fm.stream(2), fm.stream(2)
    np.testing.assert_array_equal(s1.step(x.astype(">f4")), s2.step(x))
    np.testing.assert_array_equal(s1.step(x.astype(">f8")), s2.step(x))
    ids = np.array([1, 9])
    np.testing.assert_array_equal(im.stream(2).step(ids.astype(">i2")), im.stream(2).step(ids))
    np.testing.assert_array_equal(fm.predict(x[:, None].astype(">f4")), fm.predict(x[:, None]))


def test_layers_mutated_after_construction_are_revalidated(rng):
    layer = rec(rng, "rnn", 3, 600)
    layer.weights[0]["W_hh"] = np.zeros((1, 1), np.float32)     # would read 600*600 floats
    with pytest.raises(fastrnn.ModelFormatError, match="W_hh"):
        fastrnn.Model([layer])
    d = dense(rng, 4, 3)
    d.bias = np.zeros(1, np.float32)
    with pytest.raises(fastrnn.ModelFormatError, match="bias"):
        fastrnn.Model([d])


def test_unbuilt_objects_raise_instead_of_crashing(fm):
    from fastrnn import _engine
    s = _engine.Stream.__new__(_engine.Stream)
    for call in (s.reset, lambda: s.step(np.zeros((1, 3), np.float32)), lambda: s.state):
        with pytest.raises(fastrnn.FastRNNError):
            call()
    with pytest.raises(fastrnn.FastRNNError):
        _engine.CModel.__new__(_engine.CModel).state_dims(0)
    with pytest.raises(fastrnn.FastRNNError, match="built once"):
        fm._cm.__init__(fm.layers, 3)
    st = fm.stream(1)
    with pytest.raises(fastrnn.FastRNNError, match="initialised once"):
        st.__init__(fm, fm._cm, 1)


def test_odd_arguments_raise_documented_errors(fm):
    with pytest.raises(fastrnn.ShapeError, match="not an array"):
        fm.predict([[[1, 2, 3]], [[1, 2]]])
    with pytest.raises(fastrnn.ShapeError, match="batch_size"):
        fm.stream(2**31)
    with pytest.raises(ValueError, match=r"\[1, 4096\]"):
        fastrnn.set_num_threads(2**40)
    with pytest.raises(ValueError):
        fastrnn.set_num_threads(0)


def test_masking_zeroes_masked_steps_like_keras(rng):
    """Keras Masking outputs x * mask: a Dense right after it sees zeros at masked steps."""
    d = dense(rng, 3, 2)
    m = fastrnn.Model([ir.Masking(3, mask_value=0.5), d])
    x = rng.normal(size=(1, 4, 3)).astype(np.float32)
    x[0, 1] = 0.5
    y = m.predict(x)
    np.testing.assert_allclose(y[0, 1], d.bias, rtol=0, atol=0)
    np.testing.assert_allclose(y[0, 0], x[0, 0] @ d.weight.T + d.bias, rtol=1e-6, atol=1e-6)


def test_signature_time_cuts_the_time_axis(rng, tmp_path):
    """signature time: how a source cuts y's time axis (torch out[:, -1] of a bidirectional RNN,
    pad_packed_sequence's max(lengths)-long output, out[:, -k:]); checked against slicing the plain
    output."""
    layers = [rec(rng, "gru", 3, 4, "bidirectional"), dense(rng, 8, 2)]
    plain = fastrnn.Model(layers)
    x = rng.normal(size=(3, 6, 3)).astype(np.float32)
    lens = np.array([2, 4, 1])
    y, yl = plain.predict(x), plain.predict(x, lengths=lens)
    cases = {"last": (y[:, -1], yl[:, -1]), "longest": (y, yl[:, :4]), "longest_last": (y[:, -1], yl[:, 3]),
             "tail": (y[:, -4:], yl[:, -4:]), "tail longer than T": (y, yl)}
    for name, (want, want_l) in cases.items():
        time = {"tail": 4 if name == "tail" else 9} if name.startswith("tail") else name
        m = fastrnn.Model(layers, signature={"time": time})
        assert m.output_is_sequence == (name == "longest" or name.startswith("tail"))
        np.testing.assert_array_equal(m.predict(x), want)
        np.testing.assert_array_equal(m.predict(x, lengths=lens), want_l)
        p = tmp_path / "m.frnn"
        m.save(p)
        assert fastrnn.load(p).signature["time"] == time
    for bad in ("first", 1, {"tail": 0}, {"tail": 2.0}, {"tail": True}, {"tail": 2, "head": 1}, {}):
        with pytest.raises(fastrnn.ModelFormatError, match="signature time"):
            fastrnn.Model(layers, signature={"time": bad})
    with pytest.raises(fastrnn.ModelFormatError, match="signature time"):
        fastrnn.Model([rec(rng, "gru", 3, 4, return_sequences=False)], signature={"time": "last"})


def test_signature_graph_is_validated(rng):
    """The ONNX inputs/outputs entry of a signature (saved in .frnn files) is checked before
    run() can use it: a malformed one raises ModelFormatError, never a NumPy error in run()."""
    layers = [rec(rng, "gru", 3, 4, "bidirectional")]
    x_in = {"name": "X", "role": "x", "axes": ["T", "B", "F"]}
    good = {"inputs": [x_in], "outputs": [{"name": "Y", "kind": "y", "axes": ["T", "D", "B", "F"], "dirs": 2,
                                           "last": None}]}
    m = fastrnn.Model(layers, signature={"graph": good})
    x = rng.normal(size=(5, 2, 3)).astype(np.float32)
    y = m.run(None, {"X": x})[0]
    np.testing.assert_array_equal(y, m.predict(x.transpose(1, 0, 2)).reshape(2, 5, 2, 4).transpose(1, 2, 0, 3))
    bad_outputs = [
        {"name": "Y", "kind": "y", "axes": ["T", "D", "B", "F"], "dirs": 3, "last": None},   # 8 % 3
        {"name": "Y", "kind": "y", "axes": ["B", "F"], "dirs": 1, "last": "final"},        # y is a sequence
        {"name": "Y", "kind": "y", "axes": ["T", "T", "F"], "dirs": 1, "last": None},
        {"name": "H", "kind": "state", "axes": ["S", "B", "F"], "parts": [[0, 2]]},        # no direction 2
        {"name": "H", "kind": "state", "axes": ["S", "B", "F"], "parts": [[1, 0]]},        # no state 1
    ]
    for o in bad_outputs:
        with pytest.raises(fastrnn.ModelFormatError, match="signature graph"):
            fastrnn.Model(layers, signature={"graph": {"inputs": [x_in], "outputs": [o]}})
    with pytest.raises(fastrnn.ModelFormatError, match="signature graph"):
        fastrnn.Model(layers, signature={"graph": {"inputs": [], "outputs": good["outputs"]}})
