"""fastrnn.predict_ragged: sequences of different lengths bucketed, padded and run with lengths,
results in input order. The oracle: predict on each sequence alone (bit for bit: rows are
independent and steps past a length are not read)."""
import numpy as np
import pytest
from conftest import rec

import fastrnn
from fastrnn import ir

pa = pytest.importorskip("pyarrow")
pd = pytest.importorskip("pandas")
V = 40


def _final(rng):
    """Embedding -> LSTM -> bidirectional GRU's final states -> Dense: one vector per sequence."""
    return fastrnn.Model([ir.Embedding(rng.normal(size=(V, 6)).astype(np.float32)), rec(rng, "lstm", 6, 10),
                          rec(rng, "gru", 10, 7, direction="bidirectional", return_sequences=False),
                          ir.Dense(rng.normal(size=(3, 14)).astype(np.float32), None, "softmax")])


def _steps(rng):
    """Floats -> LSTM -> Dense on every step."""
    return fastrnn.Model([rec(rng, "lstm", 4, 9), ir.Dense(rng.normal(size=(2, 9)).astype(np.float32))])


def _alone(m, s):
    return m.predict(np.asarray(s)[None])[0]


@pytest.mark.parametrize("max_batch, max_steps", [(7, None), (256, None), (32, 200)])
def test_ragged_ids_match_each_sequence_alone(rng, max_batch, max_steps):
    m = _final(rng)
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(1, 40, 150)]
    y = fastrnn.predict_ragged(m, seqs, max_batch=max_batch, max_steps=max_steps)
    assert y.shape == (150, 3)
    for s, row in zip(seqs, y):
        np.testing.assert_array_equal(row, _alone(m, s))


def test_ragged_per_step_outputs_and_input_kinds(rng):
    """A per-step model gives each sequence's (T_i, out); a list, a pyarrow list<list<float>>
    column (chunked) and a pandas Series give the same."""
    m = _steps(rng)
    seqs = [rng.normal(size=(int(n), 4)).astype(np.float32) for n in rng.integers(1, 25, 60)]
    y = fastrnn.predict_ragged(m, seqs, max_batch=16)
    for s, out in zip(seqs, y):
        assert out.shape == (len(s), 2)
        np.testing.assert_array_equal(out, _alone(m, s))
    col = pa.chunked_array([pa.array([s.tolist() for s in seqs[:30]]), pa.array([s.tolist() for s in seqs[30:]])])
    for other in (fastrnn.predict_ragged(m, col, max_batch=16),
                  fastrnn.predict_ragged(m, pd.Series([s for s in seqs]), max_batch=16)):
        for a, b in zip(other, y):
            np.testing.assert_array_equal(a, b)


def test_ragged_arrow_ids_column_and_empty_inputs(rng):
    m = _final(rng)
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(1, 20, 40)]
    y = fastrnn.predict_ragged(m, pa.array([s.tolist() for s in seqs], pa.list_(pa.int32())))
    np.testing.assert_array_equal(y, fastrnn.predict_ragged(m, seqs))
    assert fastrnn.predict_ragged(m, []).shape == (0, 3)


def test_ragged_arrow_slices(rng):
    """A slice of a list column (what Ray hands a batch function) holds offsets that count from
    its parent's start, at both list levels: each row is still its own sequence's."""
    m = _final(rng)
    seqs = [rng.integers(0, V, int(n)) for n in rng.integers(1, 20, 40)]
    col = pa.array([s.tolist() for s in seqs], pa.list_(pa.int32()))
    np.testing.assert_array_equal(fastrnn.predict_ragged(m, col.slice(7, 20)), fastrnn.predict_ragged(m, seqs[7:27]))
    m = _steps(rng)
    fl = [rng.normal(size=(int(n), 4)).astype(np.float32) for n in rng.integers(1, 9, 30)]
    col = pa.chunked_array([pa.array([s.tolist() for s in fl]).slice(5, 12)])
    for a, s in zip(fastrnn.predict_ragged(m, col), fl[5:17]):
        np.testing.assert_array_equal(a, _alone(m, s))


def test_ragged_conv_model_buckets_equal_lengths(rng):
    """A Conv1D takes no lengths: batches hold sequences of one length, each row still its own."""
    m = fastrnn.Model([ir.Conv1D(rng.normal(size=(5, 4, 3)).astype(np.float32), None, padding="same"),
                       rec(rng, "gru", 5, 6, return_sequences=False)])
    seqs = [rng.normal(size=(int(n), 4)).astype(np.float32) for n in rng.choice([3, 5, 8], 30)]
    y = fastrnn.predict_ragged(m, seqs, max_batch=8)
    for s, row in zip(seqs, y):
        np.testing.assert_array_equal(row, _alone(m, s))


def test_ragged_errors_name_the_sequence(rng):
    m = _final(rng)
    with pytest.raises(fastrnn.ShapeError, match="sequence 1"):
        fastrnn.predict_ragged(m, [np.array([1, 2]), np.array([[1, 2]])])
    with pytest.raises(fastrnn.ShapeError, match="sequence 0"):
        fastrnn.predict_ragged(m, [np.array([0.5, 1.5])])
    with pytest.raises(TypeError, match="max_batch"):
        fastrnn.predict_ragged(m, [np.array([1])], max_batch=0)
    with pytest.raises(TypeError, match="list of arrays"):
        fastrnn.predict_ragged(m, "abc")
    with pytest.raises(fastrnn.ShapeError, match="null"):
        fastrnn.predict_ragged(m, pa.array([[1, 2], None]))
