"""Importers from other frameworks into the fastrnn IR (installed as fastrnn.converters).

convert(src, **opts) recognises the source by content (files) or type (in-memory objects) and
hands it to the Keras, PyTorch or ONNX importer. Converters only ever produce ir layers + a
Model; they never touch kernels.

Importers: converters/keras.py (.keras, .h5, keras.Model); converters/torch.py (bare nn.RNN /
LSTM / GRU modules, state_dicts, TorchScript, pickled modules with allow_pickle=True);
converters/onnx.py (.onnx files and onnx.ModelProto).
"""
import importlib
import os
import zipfile
import zlib

from fastrnn.errors import FastRNNError, ModelFormatError, UnsupportedError

# what zipfile raises on a damaged or hostile archive: BadZipFile, NotImplementedError (a version
# or compression method it does not know), UnicodeDecodeError (member names), ValueError /
# OSError / EOFError (offsets and sizes), zlib.error (a damaged deflate stream)
ZIP_ERRORS = (zipfile.BadZipFile, NotImplementedError, UnicodeDecodeError, ValueError, OSError, EOFError, zlib.error)


def error_line(e, limit=300):
    """'ErrorType: first line of its message' (at most `limit` characters of it), for messages
    that quote another library's error."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:limit] if lines else ''}"


def require(module, purpose):
    """Import an optional framework package, or raise UnsupportedError saying what needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if "failed to map segment" in str(e) or "cannot allocate memory" in str(e).lower():
            raise MemoryError(f"importing {module}: {e}") from None   # installed, but out of address space
        raise UnsupportedError(f"{purpose} needs {module} (pip install {module})") from None


def sniff(path):
    """The kind of model file at `path` from its first bytes: 'keras' (zip with config.json),
    'h5', 'onnx', 'torch' (zip/pickle), 'frnn' (safetensors) or None."""
    with open(path, "rb") as f:
        head = f.read(16)
        f.seek(0, os.SEEK_END)
        size = f.tell()
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except ZIP_ERRORS as e:
            raise ModelFormatError(f"{os.fspath(path)}: a damaged zip archive ({type(e).__name__}: {e})") from None
        if "config.json" in names:
            return "keras"
        return "torch"
    # a safetensors (.frnn) header length, then its JSON: before the pickle test, since the
    # length's low byte may be 0x80 (a header of 128 + 256k bytes)
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:
        return "frnn"
    if head[:1] == b"\x80":   # pickle protocol 2+ (legacy torch.save)
        return "torch"
    if head[:1] == b"\x08":   # protobuf field 1 varint: ModelProto.ir_version
        return "onnx"
    return None


def _kind_of(obj):
    """The framework of an in-memory model: by isinstance against the frameworks already imported
    (a user's subclass lives in the user's module), else by the type's module."""
    import sys
    # keras first: a Keras 3 model on the torch backend is also a torch.nn.Module
    checks = (("keras", "Model", "keras"), ("tf_keras", "Model", "keras"), ("torch", "nn.Module", "torch"),
              ("onnx", "ModelProto", "onnx"))
    for mod, attr, kind in checks:
        m = sys.modules.get(mod)
        try:
            cls = m
            for a in attr.split("."):
                cls = getattr(cls, a)
        except AttributeError:
            continue
        if m is not None and isinstance(cls, type) and isinstance(obj, cls):
            return kind
    return {"keras": "keras", "tf_keras": "keras", "torch": "torch", "onnx": "onnx"}.get(
        type(obj).__module__.split(".")[0])


def convert(src, *, precision=None, **opts):
    """isolate=True: parse the file in a child process with a time and memory limit
    (fastrnn/isolate.py); isolate_timeout (seconds) and isolate_memory (bytes) set them.
    precision: "fp32", "bf16" or "int8" (Model.with_precision of the result); None keeps the
    source's (fp32, or a .frnn file's own)."""
    from fastrnn import precision as prec
    if precision is not None:
        prec.check(precision, "convert: precision")
    model = _convert(src, **opts)
    return model if precision in (None, model.precision) else model.with_precision(precision)


def _convert(src, *, isolate=False, isolate_timeout=None, isolate_memory=None, **opts):
    kind = None
    if not isolate and (isolate_timeout is not None or isolate_memory is not None):
        raise UnsupportedError("convert: isolate_timeout= and isolate_memory= apply with isolate=True")
    if isolate and not isinstance(src, (str, os.PathLike)):
        raise UnsupportedError(f"convert: isolate=True applies to model files; a {type(src).__name__} in "
                               f"memory was already parsed by its framework")
    if isinstance(src, (str, os.PathLike)):
        if not os.path.exists(src):
            raise FileNotFoundError(src)
        kind = sniff(src)
        if isolate and kind not in ("frnn", None):
            from fastrnn import isolate as iso
            return iso.convert(src, opts, isolate_timeout, isolate_memory)
        if kind is None:
            raise ModelFormatError(f"{os.fspath(src)}: not a Keras, PyTorch, ONNX or fastrnn model file")
        if kind == "frnn":
            from fastrnn import load
            return load(src)
    else:
        kind = _kind_of(src)
        if kind is None:
            raise UnsupportedError(f"convert: cannot convert a {type(src).__module__}.{type(src).__name__}")
    try:
        return _dispatch(kind, src, opts)
    except (FastRNNError, FileNotFoundError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - a file no importer check caught: still a clean error
        if not isinstance(src, (str, os.PathLike)):
            raise                # an in-memory model: an error of ours or of its framework, shown as is
        if isinstance(e, MemoryError):   # a parser (libtorch's std::bad_alloc) believed a damaged size
            raise ModelFormatError(f"{os.fspath(src)}: reading the {kind} file ran out of memory; it declares "
                                   f"sizes it does not hold (damaged, or made to exhaust memory)") from None
        raise ModelFormatError(f"{os.fspath(src)}: the {kind} file cannot be read ({error_line(e)})") from None


def _dispatch(kind, src, opts):
    if kind in ("keras", "h5"):
        from . import keras
        return keras.convert(src, **opts)
    if kind == "torch":
        from . import torch
        return torch.convert(src, **opts)
    if kind == "onnx":
        if opts:
            raise UnsupportedError(f"convert: options {', '.join(sorted(opts))} do not apply to ONNX models")
        from . import onnx
        return onnx.convert(src)
    raise UnsupportedError(f"convert: the {kind} importer is not available in this version of fastrnn")


def run_source(src, x, *, isolate=False, isolate_timeout=None, isolate_memory=None, **opts):
    """Run the source model in its own framework on batch-major x (for --check); returns a list
    of output arrays. Raises UnsupportedError when that framework is not installed. isolate=True:
    in a child process, as convert's."""
    kind = sniff(src) if isinstance(src, (str, os.PathLike)) else _kind_of(src)
    if isolate and isinstance(src, (str, os.PathLike)):
        from fastrnn import isolate as iso
        return iso.run_source(src, x, opts, isolate_timeout, isolate_memory)
    if kind in ("keras", "h5"):
        from . import keras
        return keras.run_source(src, x, **opts)
    if kind == "torch":
        from . import torch
        return torch.run_source(src, x, **opts)
    if kind == "onnx":
        from . import onnx
        return onnx.run_source(src, x)
    raise UnsupportedError(f"--check: running {kind} models is not available in this version of fastrnn")
