"""The .frnn file: a safetensors container of the IR (no pickle, versioned, memory-mappable).

Layout (safetensors): 8-byte little-endian header length N, N bytes of JSON header, then the
tensor bytes. Tensors are float32, named "layers.<i>.<name>" (<name> as in ir: weight, bias, or
"<direction>.W_ih" ...). The header's "__metadata__" holds three strings:
  format          "fastrnn"
  format_version  "1"; "2" for a reduced-precision model; "3" when a Dense or Activation has a
                  carry (a branch, ir.Dense) or a Pool the attn kind; "4" when a Pool has terms (pools
                  of different columns side by side, ir.PoolTerm); "5" when an Embedding has a
                  pool_mask (pools that leave out the steps of a padding id); the lowest that holds
                  the model is written (also "5" for a Pool of the "last" / "first" kinds and a
                  Flatten layer); "6" when a Pool has a term of the "query" kind (attention whose
                  query is the final value); "7" when an activation is mish, hardswish or
                  clip, or a RepeatVector has n 0 (the steps of the sequence it follows); "8" when a
                  Recurrent layer has a learned initial state (h0 / c0 tensors), a layer is
                  self-attention (ir.Attention), or an ONNX graph
                  signature has an input of per-row static features (role "static") (a file with a
                  higher major version is refused, not misread; this reader reads all eight)
  spec            JSON: {"input_size": int|null, "meta": {...},
                         "layers": [{"type": ..., "options": {...}, "tensors": [names]}],
                         "signature": {...},   (fastrnn/signature.py; optional, added in
                                                version 1 before any release)
                         "precision": "bf16" | "int8"}   (version 2; absent: fp32)
Version 2 (fastrnn/precision.py): a bf16 model's reduced matrices are "BF16" tensors; an int8
model's are "I8" tensors, each with a F32 tensor "<name>@scale" (one scale per output row, the
first axis). Every other tensor stays F32. An fp32 model is written exactly as version 1 was.

Both directions are implemented here (the container is simple): writing so that the bytes are
deterministic, reading so that every field and offset is validated before use (as safetensors'
own Metadata::validate does) and the tensors are read-only views of one buffer holding the file.

A file is read into memory whole, once, by load; it is not memory-mapped. Services replace a model
file in place (`cp new.frnn model.frnn`), and a mapping would then show the model the new bytes, or
kill the process with SIGBUS once the file shrinks; a loaded model depends on nothing outside
its process. The cost is the file's size in memory beside the engine's packed copy. save writes
a temporary file beside the target, syncs it and renames it over the target (see _write_atomic).

The safetensors package reads our files (tests check it). Anything malformed, truncated or
hostile raises ModelFormatError; nothing in a file is ever executed or unpickled. Model.meta
follows one rule (check_meta) in Model(), save and load alike.
"""
from __future__ import annotations

import json
import math
import os
import stat
import struct
import threading

import numpy as np

from . import ir
from . import signature as sig_
from .errors import ArgumentTypeError, ModelFormatError, ShapeError

FORMAT = "fastrnn"
VERSION = 8                      # the highest this reader reads; a model is written as the lowest that holds it
MAX_HEADER = 64 << 20            # a header over 64 MiB is not one we wrote
MAX_META_DEPTH = 32              # lists and dicts inside Model.meta, counting meta itself
_DTYPES = {"F32": np.dtype("<f4"), "BF16": np.dtype("<u2"), "I8": np.dtype("i1")}


def save(model, path):
    """Write `model` to `path` (.frnn). Deterministic: the same model always gives the same bytes
    (sorted JSON keys, tensors in name order), which the safetensors package's own writer does
    not promise; the result is a standard safetensors file (tests read it back with it)."""
    _write_atomic(path, _parts(model))


def to_bytes(model):
    """The .frnn bytes save() writes (what a Model pickles as; load() takes them back)."""
    return b"".join(p if isinstance(p, bytes) else memoryview(p).cast("B") for p in _parts(model))


def _parts(model):
    """The .frnn file as a list of bytes and arrays, in file order."""
    from . import precision as prec
    tensors, layers = {}, []
    reduced = model.precision != "fp32"
    for i, layer in enumerate(model.layers):
        names = []
        small = set(prec.reduced_names(layer)) if reduced else set()
        for name, arr in layer.tensors().items():
            key = f"layers.{i}.{name}"
            if name not in small:
                tensors[key] = np.ascontiguousarray(arr, dtype="<f4")
            elif model.precision == "bf16":
                tensors[key] = prec.to_bf16_bits(arr).reshape(arr.shape).astype("<u2")
            else:
                tensors[key], tensors[key + "@scale"] = prec.quantize_int8(arr, model._scales[(i, name)])
            names.append(name)
        layers.append({"type": ir.TYPE_NAMES[type(layer)], "options": layer.options(), "tensors": names})
    spec = {"input_size": model.input_size, "meta": check_meta(model.meta, "model.meta"), "layers": layers,
            "signature": sig_.to_json(model.signature)}
    if reduced:
        spec["precision"] = model.precision
    spec_json = json.dumps(spec, sort_keys=True, allow_nan=False)
    header = {"__metadata__": {"format": FORMAT, "format_version": str(_version(model, reduced)), "spec": spec_json}}
    dtype_names = {v.str: k for k, v in _DTYPES.items()}
    pos = 0
    for name in sorted(tensors):
        a = tensors[name]
        header[name] = {"dtype": dtype_names[a.dtype.str],
                        "shape": list(a.shape), "data_offsets": [pos, pos + a.nbytes]}
        pos += a.nbytes
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)            # 8-byte aligned data, as safetensors pads
    if len(h) > MAX_HEADER:              # load refuses such a header: so does save
        raise ModelFormatError(f"model.meta makes a {len(h)}-byte header, over the {MAX_HEADER}-byte limit")
    return [struct.pack("<Q", len(h)), h] + [tensors[name] for name in sorted(tensors)]


def _version(model, reduced):
    """The lowest version that holds the model: the highest of _LAYER_VERSIONS any layer needs, 4
    with a Pool of terms, 3 with a carry (a branch) or an attention pool, 2 reduced, else 1."""
    if _static_graph_inputs(model.signature):
        return 8
    for v, needs, _ in _LAYER_VERSIONS:
        if any(needs(l) for l in model.layers):
            return v
    if any(getattr(l, "terms", None) is not None for l in model.layers):
        return 4
    if any(getattr(l, "carry", ()) or "attn" in getattr(l, "kinds", ()) for l in model.layers):
        return 3
    return 2 if reduced else 1


def _needs_v5(layer):
    """An Embedding's pool_mask, a Pool of the last / first kind, a Flatten: format version 5."""
    return getattr(layer, "pool_mask", None) is not None or bool(set(getattr(layer, "kinds", ())) & {"last", "first"}) \
        or isinstance(layer, ir.Flatten)


def _needs_v6(layer):
    """A Pool with a term of the query kind: format version 6."""
    return "query" in getattr(layer, "kinds", ())


_V7_ACTS = frozenset({"mish", "hardswish", "clip"})


def _needs_v7(layer):
    """An activation of a kind version 7 added (_V7_ACTS), anywhere in the layer's options, or a
    RepeatVector of the sequence's own steps (n 0)."""
    if isinstance(layer, ir.RepeatVector) and layer.n == 0:
        return True
    todo = [layer.options()]
    while todo:
        o = todo.pop()
        if isinstance(o, dict):
            if o.get("kind") in _V7_ACTS:
                return True
            todo += list(o.values())
        elif isinstance(o, (list, tuple)):
            todo += list(o)
    return False


def _needs_v8(layer):
    """A Recurrent layer with a learned initial state (h0 / c0), or a self-attention layer:
    format version 8."""
    return isinstance(layer, ir.Recurrent) and any("h0" in w or "c0" in w for w in layer.weights) \
        or isinstance(layer, ir.Attention)


def _static_graph_inputs(signature):
    """An ONNX graph signature with per-row static features (an input of role "static"): version 8."""
    g = signature.get("graph") if isinstance(signature, dict) else None
    ins = g.get("inputs") if isinstance(g, dict) else None
    return isinstance(ins, list) and any(isinstance(e, dict) and e.get("role") == "static" for e in ins)


# per-layer features of the later versions, the highest first: (version, test, what it is)
_LAYER_VERSIONS = (
    (8, _needs_v8, "a learned initial state (Recurrent h0 / c0) or a self-attention layer"),
    (7, _needs_v7, f"a {'/'.join(sorted(_V7_ACTS))} activation or a RepeatVector of n 0"),
    (6, _needs_v6, "a pool of the query kind"),
    (5, _needs_v5, "an embedding's pool_mask, a pool of the last / first kind or a Flatten"),
)


def _write_atomic(path, parts):
    """Write parts (bytes or arrays) to path through a temporary file beside it, synced to disk
    before it is renamed over the target: a crash or a full disk never leaves a truncated model,
    and a process that loaded the old file is unaffected (the old inode stays as it was). The
    directory is synced too, so the rename itself survives a power loss."""
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentTypeError(f"save: expected a path, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.islink(path):              # replace the file a symlink names, keeping the link
        path = os.path.realpath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as e:
        raise type(e)(e.errno, f"save: cannot write beside {path}: {e.strerror}", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part if isinstance(part, bytes) else memoryview(part).cast("B"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return                            # a folder we may not open: the file is in place anyway
    try:
        os.fsync(dfd)
    except OSError:
        pass                              # some filesystems do not sync directories
    finally:
        os.close(dfd)


def check_meta(meta, where="meta"):
    """Model.meta as a .frnn file holds it; returns a deep copy made of plain Python values.

    A dict with string keys whose values are JSON values: str, an integer that fits 64 bits, a
    finite float, bool, None, and lists (tuples become lists) and dicts of them, nested at most
    MAX_META_DEPTH deep; NumPy scalars become the Python numbers they hold. Model(), save and load
    all apply this one rule, so every file load accepts is one save can write back, and the
    reverse. Anything else is a ModelFormatError naming where it is."""
    def value(v, at, depth):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            if not -2**63 <= v < 2**64:
                raise ModelFormatError(f"{at}: the integer {int(v)} does not fit 64 bits")
            return int(v)
        if isinstance(v, (float, np.floating)):
            if not math.isfinite(v):
                raise ModelFormatError(f"{at}: {float(v)} is not a finite number")
            return float(v)
        if depth >= MAX_META_DEPTH:
            raise ModelFormatError(f"{at}: nested more than {MAX_META_DEPTH} deep")
        if isinstance(v, (list, tuple)):
            return [value(e, f"{at}[{i}]", depth + 1) for i, e in enumerate(v)]
        if isinstance(v, dict):
            out = {}
            for k, e in v.items():
                if not isinstance(k, str):
                    raise ModelFormatError(f"{at}: keys are strings, got {type(k).__name__} {k!r}")
                out[k] = value(e, f"{at}[{k!r}]", depth + 1)
            return out
        raise ModelFormatError(f"{at}: a {type(v).__name__} is not a JSON value "
                               f"(str, number, bool, None, list or dict)")
    if not isinstance(meta, dict):
        raise ModelFormatError(f"{where}: expected a dict, got {type(meta).__name__}")
    return value(meta, where, 1)


def _no_constant(name):
    raise ValueError(f"{name} is not allowed")


def _fail(path, msg):
    raise ModelFormatError(f"{os.fspath(path)}: not a valid .frnn file: {msg}")


def _source(src):
    """A .frnn source: (name for messages, path or None, bytes-like or None)."""
    if isinstance(src, (str, os.PathLike)):
        return os.fspath(src), src, None
    try:
        buf = memoryview(src)
    except TypeError:
        raise ArgumentTypeError(f"fastrnn.load: expected a path or bytes, got {type(src).__name__}") from None
    if not buf.c_contiguous:
        raise ModelFormatError("fastrnn.load: a buffer that is not contiguous bytes")
    buf = buf.cast("B") if buf.format != "B" or buf.ndim != 1 else buf
    if not buf.readonly:                 # a bytearray the caller may change later: the model keeps a copy
        buf = memoryview(bytes(buf))
    return f"<{buf.nbytes} bytes>", None, buf


def _read_header(name, size, read):
    """The header length n and the n header bytes, through read(offset, count)."""
    head = read(0, 8)
    if len(head) < 8:
        _fail(name, f"{size} bytes, too short for a header")
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > min(MAX_HEADER, size - 8):
        _fail(name, f"header length {n} does not fit a {size}-byte file")
    return n, read(8, n)


def read_container(src):
    """Parse and validate a safetensors file (a path, read whole, or bytes / a buffer, used
    in place). Returns (metadata: dict[str, str], tensors: dict)."""
    path, fs_path, buf = _source(src)
    if buf is None:     # a file is read whole, once: the model never depends on it afterwards
        try:
            if not stat.S_ISREG(os.stat(fs_path).st_mode):   # /dev/zero, a FIFO: never ends
                _fail(path, "not a regular file")
            with open(fs_path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                n, _ = _read_header(path, size, lambda a, k: f.read(k))   # its size, before reading it all
                f.seek(0)
                buf = memoryview(f.read(size))
        except OSError as e:
            raise ModelFormatError(f"{path}: cannot read: {e}") from None
    size = buf.nbytes
    n, raw = _read_header(path, size, lambda a, k: bytes(buf[a:a + k]))
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        _fail(path, f"header is not JSON ({type(e).__name__})")
    if not isinstance(header, dict):
        _fail(path, "header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        _fail(path, "__metadata__ must map strings to strings")
    data_start, data_len = 8 + n, size - 8 - n
    spans, entries = [], {}
    for name, e in header.items():
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            _fail(path, f"tensor {name!r}: entry must have dtype, shape, data_offsets")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if not isinstance(dt, str) or dt not in _DTYPES:
            _fail(path, f"tensor {name!r}: dtype {dt!r} (fastrnn files hold F32, and BF16 / I8 weights)")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(type(d) is int and 0 <= d < 2**40 for d in shape)):
            _fail(path, f"tensor {name!r}: bad shape {shape!r}")
        if not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs):
            _fail(path, f"tensor {name!r}: bad data_offsets {offs!r}")
        a, b = offs
        nbytes = math.prod(shape) * _DTYPES[dt].itemsize
        if not (0 <= a <= b <= data_len) or b - a != nbytes:
            _fail(path, f"tensor {name!r}: data_offsets {offs} do not hold shape {shape} "
                        f"within {data_len} data bytes")
        spans.append((a, b, name))
        entries[name] = (dt, tuple(shape), a)
    spans.sort()
    pos = 0
    for a, b, name in spans:   # contiguous, no overlap, no hole (as safetensors requires)
        if a != pos:
            _fail(path, f"tensor {name!r} starts at {a}, expected {pos} (overlap or gap)")
        pos = b
    if pos != data_len:
        _fail(path, f"{data_len - pos} trailing bytes after the last tensor")
    tensors = {}
    if entries:
        mm = np.frombuffer(buf, np.uint8, count=data_len, offset=data_start)
        for name, (dt, shape, a) in entries.items():
            count = math.prod(shape)
            arr = np.frombuffer(mm, dtype=_DTYPES[dt], count=count, offset=a).reshape(shape)
            tensors[name] = arr
    return meta, tensors


def load(src, precision=None):
    """Read a .frnn file (a path, read into memory whole; or bytes / a buffer holding one, whose
    tensors are read-only views of it) into a fastrnn.Model. precision: None (the file's), or
    "fp32" / "bf16" / "int8" (Model.with_precision at load; from an int8 file, its int8 values)."""
    from . import precision as prec
    from .model import Model
    if precision is not None:
        prec.check(precision, "load: precision")
    meta, tensors = read_container(src)
    path = _source(src)[0]
    if meta.get("format") != FORMAT:
        _fail(path, f"format is {meta.get('format')!r}, expected {FORMAT!r} "
                    f"(to convert a model from another framework use fastrnn.convert)")
    ver = meta.get("format_version", "")
    if not (ver.isascii() and ver.isdigit() and len(ver) <= 9):
        _fail(path, f"bad format_version {ver!r}")
    if int(ver) > VERSION:
        raise ModelFormatError(f"{os.fspath(path)}: format version {ver} was written by a newer "
                               f"fastrnn (this one reads up to {VERSION}); upgrade fastrnn")
    try:
        spec = json.loads(meta.get("spec", ""), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        _fail(path, "spec is not JSON (NaN and Infinity are not allowed)")
    if not isinstance(spec, dict) or not {"input_size", "meta", "layers"} <= set(spec) \
            <= {"input_size", "meta", "layers", "signature", "precision"}:
        _fail(path, "spec must have exactly input_size, meta, layers (and optionally signature, precision)")
    file_prec = spec.get("precision", "fp32")
    if file_prec not in ("bf16", "int8") and "precision" in spec or int(ver) < 2 and file_prec != "fp32":
        _fail(path, f"spec.precision {spec.get('precision')!r} (a version 2 file's \"bf16\" or \"int8\")")
    if not isinstance(spec["layers"], list) or not spec["layers"]:
        _fail(path, "spec.layers must be a non-empty list")
    if not isinstance(spec["meta"], dict):
        _fail(path, "spec.meta must be an object")
    in_size = spec["input_size"]
    if in_size is not None and (type(in_size) is not int or in_size < 1):
        _fail(path, f"bad input_size {in_size!r}")
    layers, used, scales = [], set(), {}
    for i, ls in enumerate(spec["layers"]):
        if not isinstance(ls, dict) or set(ls) != {"type", "options", "tensors"}:
            _fail(path, f"layer {i}: must have exactly type, options, tensors")
        names = ls["tensors"]
        if not isinstance(names, list) or not all(isinstance(t, str) for t in names):
            _fail(path, f"layer {i}: tensors must be a list of names")
        parts, reduced = {}, set()
        for t in names:
            key = f"layers.{i}.{t}"
            if key not in tensors or key in used:
                _fail(path, f"layer {i}: tensor {key!r} missing or listed twice")
            used.add(key)
            parts[t] = _decoded(path, i, t, key, tensors, used, file_prec, scales)
            if tensors[key].dtype != np.float32:
                reduced.add(t)
        try:
            layer = ir.layer_from_parts(ls["type"], ls["options"], parts)
        except ModelFormatError as e:
            _fail(path, f"layer {i}: {e}")
        if int(ver) < 3 and ("carry" in ls["options"] or "attn" in getattr(layer, "kinds", ())):
            _fail(path, f"layer {i}: a carry or an attention pool in a version {ver} file (they are version 3)")
        if int(ver) < 4 and "terms" in ls["options"]:
            _fail(path, f"layer {i}: a pool of terms in a version {ver} file (they are version 4)")
        for v, needs, what in _LAYER_VERSIONS:
            if int(ver) < v and needs(layer):
                _fail(path, f"layer {i}: {what} in a version {ver} file (that is version {v})")
        # the reduced tensors are exactly the layer's matrices (precision.reduced_names)
        want = set(prec.reduced_names(layer)) if file_prec != "fp32" else set()
        if reduced != want:
            _fail(path, f"layer {i}: tensors {sorted(reduced ^ want)} are "
                        f"{'not ' if want - reduced else ''}in the model's precision {file_prec}, "
                        f"expected exactly {sorted(want)} (the rest float32)")
        layers.append(layer)
    if used != set(tensors):
        _fail(path, f"tensors not used by any layer: {sorted(set(tensors) - used)[:5]}")
    if int(ver) < 8 and _static_graph_inputs(spec.get("signature")):
        _fail(path, f"a graph input of static features in a version {ver} file (that is version 8)")
    try:
        model = Model(layers, input_size=in_size, meta=spec["meta"], signature=spec.get("signature"),
                      _precision=file_prec, _scales=scales)
    except (ModelFormatError, ShapeError) as e:
        _fail(path, str(e))
    return model if precision is None or precision == file_prec else model.with_precision(precision)


def _decoded(path, i, t, key, tensors, used, file_prec, scales):
    """Tensor t of layer i as float32: as stored, or a reduced one (BF16 bits widened; I8 times
    its "@scale" tensor, recorded in scales) when its dtype is the file's precision."""
    from . import precision as prec
    a = tensors[key]
    if a.dtype == np.float32:
        return a
    expect = {"fp32": "float32", "bf16": "uint16", "int8": "int8"}[file_prec]
    if a.dtype.name != expect:
        _fail(path, f"layer {i}: tensor {t!r} is {a.dtype.name}, expected {expect} in a {file_prec} model")
    if file_prec == "bf16":
        return prec.from_bf16_bits(a).reshape(a.shape)
    sk = key + "@scale"
    s = tensors.get(sk)
    if a.ndim < 1 or s is None or s.dtype != np.float32 or s.shape != (a.shape[0],) or sk in used:
        _fail(path, f"layer {i}: int8 tensor {t!r} needs a float32 {sk!r} of shape ({a.shape[0] if a.ndim else 0},)")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        _fail(path, f"layer {i}: {sk!r} holds a negative or non-finite scale")
    used.add(sk)
    scales[(i, t)] = np.array(s)
    return prec.dequantize_int8(a, s)
