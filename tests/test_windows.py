"""Layers that change the number of time steps: ir.Conv1D, ir.Pool1D (max / avg) and
ir.RepeatVector, against the float64 reference (fastrnn/reference.py) for every padding, stride,
dilation and window, in front of and between recurrent layers; batch and thread invariance; the
.frnn file; and what such a model refuses (streams, lengths, masks, too few steps). Run under
every ISA (tests/run.sh)."""
import numpy as np
import pytest
from conftest import dense, rec

import fastrnn
from fastrnn import ir, reference

PADS = ["valid", "same", "causal", [2, 1]]


def _conv(rng, I, O, k, **kw):
    return ir.Conv1D(rng.uniform(-0.6, 0.6, (O, I, k)).astype(np.float32), rng.uniform(-0.3, 0.3, O).astype(np.float32),
                     **kw)


def _check(m, x):
    y = m.predict(x)
    yr, _ = reference.run(m.layers, x)
    assert y.shape == yr.shape
    np.testing.assert_allclose(y, yr, rtol=1e-5, atol=2e-6)
    return y


@pytest.mark.parametrize("padding", PADS, ids=["valid", "same", "causal", "explicit"])
@pytest.mark.parametrize("k, stride, dilation", [(1, 1, 1), (3, 1, 1), (2, 2, 1), (3, 1, 3), (4, 3, 2)])
def test_conv1d(rng, padding, k, stride, dilation):
    m = fastrnn.Model([_conv(rng, 5, 7, k, stride=stride, dilation=dilation, padding=padding, activation="relu"),
                       rec(rng, "gru", 7, 6), dense(rng, 6, 2, "tanh")])
    for B, T in ((1, 13), (4, 9), (2, (k - 1) * dilation + 1)):
        x = rng.normal(size=(B, T, 5)).astype(np.float32)
        y = _check(m, x)
        assert y.shape[1] == m.layers[0].steps(T)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("window, stride, padding, count_pad",
                         [(2, None, "valid", False), (3, 2, "same", False), (3, 1, [1, 1], True), (4, 4, "same", False),
                          (1, 1, "valid", False)])
def test_pool1d(rng, kind, window, stride, padding, count_pad):
    m = fastrnn.Model([rec(rng, "lstm", 3, 8), ir.Pool1D(8, kind, window, stride, padding, count_pad),
                       rec(rng, "rnn", 8, 4, return_sequences=False)])
    for B, T in ((3, 11), (1, window)):
        _check(m, rng.normal(size=(B, T, 3)).astype(np.float32))


def test_cnn_lstm_on_token_ids(rng):
    m = fastrnn.Model([ir.Embedding(rng.normal(size=(30, 6)).astype(np.float32)),
                       _conv(rng, 6, 8, 3, activation="relu"), ir.Pool1D(8, "max", 2),
                       rec(rng, "lstm", 8, 5, return_sequences=False), dense(rng, 5, 1, "sigmoid")])
    _check(m, rng.integers(0, 30, (4, 17)))


def test_repeat_vector_between_encoder_and_decoder(rng):
    m = fastrnn.Model([rec(rng, "lstm", 4, 9, return_sequences=False), ir.RepeatVector(9, 6),
                       rec(rng, "gru", 9, 7), dense(rng, 7, 5, "softmax")])
    for T in (1, 3, 8):                      # the output has 6 steps whatever the input's length
        y = _check(m, rng.normal(size=(3, T, 4)).astype(np.float32))
        assert y.shape == (3, 6, 5)


def test_rows_and_threads_give_the_same_bits(rng):
    m = fastrnn.Model([_conv(rng, 5, 16, 3, padding="same"), ir.Pool1D(16, "avg", 2),
                       rec(rng, "lstm", 16, 33), dense(rng, 33, 3)])
    x = rng.normal(size=(40, 15, 5)).astype(np.float32)
    one = m.predict(x)
    np.testing.assert_array_equal(np.concatenate([m.predict(x[i:i + 1]) for i in range(40)]), one)
    try:
        fastrnn.set_num_threads(2)
        np.testing.assert_array_equal(m.predict(x), one)
    finally:
        fastrnn.set_num_threads(1)


def test_file_round_trip(rng, tmp_path):
    m = fastrnn.Model([_conv(rng, 3, 4, 2, padding=[1, 0], dilation=2), ir.Pool1D(4, "avg", 3, 1, "same", True),
                       rec(rng, "gru", 4, 5, return_sequences=False), ir.RepeatVector(5, 3), rec(rng, "rnn", 5, 2)])
    m.save(tmp_path / "w.frnn")
    m2 = fastrnn.load(tmp_path / "w.frnn")
    x = rng.normal(size=(2, 9, 3)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(x), m2.predict(x))
    assert [l.options() for l in m.layers] == [l.options() for l in m2.layers]


def test_what_such_models_refuse(rng):
    m = fastrnn.Model([_conv(rng, 3, 4, 5), rec(rng, "gru", 4, 5)])
    x = rng.normal(size=(2, 9, 3)).astype(np.float32)
    with pytest.raises(fastrnn.UnsupportedError, match="number of time steps"):
        m.stream(1)
    with pytest.raises(fastrnn.UnsupportedError, match="number of time steps"):
        fastrnn.StreamPool(m, 2)
    with pytest.raises(fastrnn.ShapeError, match="lengths"):
        m.predict(x, lengths=np.array([9, 4]))
    with pytest.raises(fastrnn.ShapeError, match="too few"):
        m.predict(x[:, :4])
    with pytest.raises(fastrnn.ModelFormatError, match="Masking after"):
        fastrnn.Model([_conv(rng, 3, 3, 2), ir.Masking(3)])
    with pytest.raises(fastrnn.ModelFormatError, match="repeats one step"):
        fastrnn.Model([rec(rng, "gru", 3, 4), ir.RepeatVector(4, 2)])
    with pytest.raises(fastrnn.ModelFormatError, match="needs a sequence"):
        fastrnn.Model([rec(rng, "gru", 3, 4, return_sequences=False), _conv(rng, 4, 4, 1)])
    for bad in ({"padding": "full"}, {"stride": 0}, {"padding": [1]}, {"dilation": -1}):
        with pytest.raises(fastrnn.ModelFormatError):
            _conv(rng, 3, 4, 2, **bad)
    with pytest.raises(fastrnn.ModelFormatError):
        ir.Pool1D(3, "median")
    with pytest.raises(fastrnn.ModelFormatError):
        ir.Pool1D(3, "max", 2, padding="causal")


def test_fastrnn_info_lists_them(rng, tmp_path, capsys):
    from fastrnn.cli import main
    fastrnn.Model([_conv(rng, 3, 4, 2), ir.Pool1D(4), rec(rng, "gru", 4, 5, return_sequences=False),
                   ir.RepeatVector(5, 3), rec(rng, "rnn", 5, 2)]).save(tmp_path / "w.frnn")
    assert main(["info", str(tmp_path / "w.frnn")]) == 0
    out = capsys.readouterr().out
    assert "Conv1D" in out and "Pool1D max" in out and "RepeatVector" in out and "n=3" in out


def test_lengths_through_windows_that_keep_the_steps(rng):
    """Windows of stride 1 padded "same" or causally keep step t at step t: predict takes
    lengths, as the float64 reference computes them (the windows read the padding); a stride, a
    valid window or a RepeatVector still refuses them."""
    layers = [_conv(rng, 3, 4, 5, padding="same"), ir.Pool1D(4, "max", 3, 1, "same"),
              _conv(rng, 4, 4, 3, padding="causal"), rec(rng, "gru", 4, 5), ir.Pool(5, ("mean", "last"), "valid")]
    m = fastrnn.Model(layers)
    x = rng.normal(size=(3, 9, 3)).astype(np.float32)
    lens = np.array([9, 4, 1])
    np.testing.assert_allclose(m.predict(x, lengths=lens), reference.run(layers, x, lengths=lens)[0],
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(m.predict(x, lengths=lens), m.predict(x))
    for bad in ([_conv(rng, 3, 4, 3), rec(rng, "gru", 4, 5)],
                [_conv(rng, 3, 4, 3, padding="same", stride=2), rec(rng, "gru", 4, 5)]):
        with pytest.raises(fastrnn.ShapeError, match="lengths"):
            fastrnn.Model(bad).predict(x, lengths=lens)
