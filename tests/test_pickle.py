"""A Model pickles as its .frnn bytes (unpickled through the validating loader: precision, meta
and signature come back), fastrnn.load takes bytes and buffers, and Streams / StreamPools refuse
to pickle with a clear error. The oracle: the original model's predictions, bit for bit."""
import pickle
import pickletools

import numpy as np
import pytest
from conftest import rec

import fastrnn
from fastrnn import ir


def _model(rng):
    return fastrnn.Model([ir.Embedding(rng.normal(size=(30, 5)).astype(np.float32)), rec(rng, "lstm", 5, 16),
                          rec(rng, "gru", 16, 7, direction="bidirectional"),
                          ir.Dense(rng.normal(size=(3, 14)).astype(np.float32), None, "softmax")],
                         meta={"source": "tests", "labels": ["a", "b", "c"]})


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_a_model_pickles_as_its_frnn_bytes(rng, precision):
    m = _model(rng).with_precision(precision)
    data = pickle.dumps(m)
    # the pickle holds one bytes object and the loader's name: no arrays, no model internals
    ops = list(pickletools.genops(data))
    assert sum(op.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "NEWOBJ") for op, _, _ in ops) == 1
    assert [a for op, a, _ in ops if "UNICODE" in op.name] == ["fastrnn.model", "_from_bytes"]
    assert [len(a) for op, a, _ in ops if "BYTES" in op.name] == [len(fastrnn.fileformat.to_bytes(m))]
    back = pickle.loads(data)
    assert back.precision == precision and back.meta == m.meta
    x = rng.integers(0, 30, (4, 9))
    np.testing.assert_array_equal(back.predict(x), m.predict(x))
    np.testing.assert_array_equal(fastrnn.load(bytearray(fastrnn.fileformat.to_bytes(m))).predict(x), m.predict(x))


def test_a_pickle_goes_through_the_loader(rng):
    """The bytes in a pickle are checked as a file is: a damaged one is a ModelFormatError."""
    data = bytearray(pickle.dumps(_model(rng)))
    i = data.index(b'"format_version"')
    data[i + 18:i + 21] = b'"9"'[:3]
    with pytest.raises(fastrnn.ModelFormatError):
        pickle.loads(bytes(data))


def test_streams_and_pools_refuse_to_pickle(rng):
    m = fastrnn.Model([rec(rng, "lstm", 3, 8)])
    for obj in (m.stream(2), fastrnn.StreamPool(m, 3)):
        with pytest.raises(TypeError, match="cannot be pickled.*Pickle its model"):
            pickle.dumps(obj)
