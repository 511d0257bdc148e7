"""fastrnn: run trained recurrent networks (RNN, LSTM, GRU; stacked, bidirectional; Embedding and
Dense heads) on the CPU, fast, from Python. See README.md and docs/.

    m = fastrnn.load("model.frnn")          # or fastrnn.convert(...), or fastrnn.Model(layers)
    y = m.predict(x)                        # batch-major
    s = m.stream(batch_size=1); y_t = s.step(x_t)
    pool = fastrnn.StreamPool(m, capacity); y = pool.step(slots, x)   # many conversations

FASTRNN_ISA=scalar|avx2|avx512|avx512_vnni (read at import) forces the kernels new models use.
"""
import os as _os

from .errors import ArgumentTypeError, FastRNNError, ModelFormatError, ShapeError, UnsupportedError
from . import ir
from .ir import Act, Activation, Conv1D, Dense, Embedding, Masking, Pool, Pool1D, PoolTerm, Recurrent, RepeatVector
from . import _engine
from ._engine import Stream, StreamPool, get_num_threads, set_num_threads
from .model import Model
from .fileformat import load
from .ragged import predict_ragged

__version__ = "0.1.0"

_isa = _os.environ.get("FASTRNN_ISA", "").strip().lower()
if _isa:
    _engine.set_isa(_isa)   # raises FastRNNError naming what this CPU can run


def cpu_info():
    """Which kernels run: {'isa': in use for new models, 'available': [...], 'kernels': [...],
    'threads': set_num_threads value}."""
    return {"isa": _engine.isa_current(), "available": list(_engine.isa_available()),
            "kernels": list(_engine.kernel_names()), "threads": get_num_threads()}


def convert(src, **opts):
    """Convert a Keras / PyTorch / ONNX model (path or in-memory object) into a Model;
    precision="bf16" / "int8" reduces its weights (Model.with_precision)."""
    from .converters import convert as _convert
    return _convert(src, **opts)


__all__ = ["Model", "Stream", "StreamPool", "load", "convert", "predict_ragged", "cpu_info", "set_num_threads", "get_num_threads",
           "Embedding", "Masking", "Dense", "Activation", "Recurrent", "Pool", "PoolTerm", "Conv1D", "Pool1D", "RepeatVector", "Act", "ir",
           "FastRNNError", "ModelFormatError", "ShapeError", "ArgumentTypeError", "UnsupportedError"]
