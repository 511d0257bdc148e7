"""Deterministic mutators: mutate(fmt, seeds, n) -> (bytes, description).

Input number n of a format is always the same bytes (random.Random seeded with "fmt:n"; the seed
files are committed), so a failure found by a long run is reproduced by its number alone:
`python -m tests.fuzz.run --format h5 --start N --n 1`.

Each format mixes blind byte damage (what a broken download or disk gives) with damage that
knows the format's structure, which gets past the first checksum or parser and reaches the
converter's own checks (what a hostile author writes):
  all     bytes: flips, random and boundary bytes, boundary integers (0, -1, 2^31, 2^63 ...)
          written over 2/4/8 bytes, deletions, insertions, duplicated runs, truncation
  JSON    (.frnn header and spec, .keras config.json, .h5 model_config): a node of the document
          replaced by a boundary number, NaN, a wrong-typed value, a deep nesting or a name
          from another layer; keys dropped; list items dropped, duplicated, swapped
  zip     (.keras, .pt): one member's bytes or JSON damaged and the archive rewritten valid;
          members dropped, renamed, duplicated; a local header damaged; raw bytes
  HDF5    raw bytes (libhdf5's metadata); through h5py: a weight replaced by another shape or
          dtype or a scalar, a dataset or group deleted, weight_names / model_config rewritten
  ONNX    through the protobuf: an initializer's dims, data type or payload; a node's op type,
          attributes, inputs, outputs; graph input shapes and types; the opset; nodes dropped
          or duplicated
"""
from __future__ import annotations

import io
import json
import math
import os
import random
import struct
import tempfile
import warnings
import zipfile

BOUNDARY_BYTES = (0x00, 0x01, 0x7f, 0x80, 0xff, 0xfe, 0x20, 0x22, 0x7b, 0x5b)
BOUNDARY_INTS = (0, 1, -1, 2, 3, 7, 8, 255, 256, 65535, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
                 2 ** 53, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1, -2 ** 31, -2 ** 63)
INT64 = tuple(v for v in BOUNDARY_INTS if -2 ** 63 <= v < 2 ** 63)   # what a protobuf int64 holds
BOUNDARY_NUMBERS = BOUNDARY_INTS + (0.5, -0.0, 1e-45, 3.4e38, 1e308, -1e308, 1e400, math.nan, math.inf, -math.inf)
WORDS = ("", "lstm", "gru", "rnn", "LSTM", "GRU", "SimpleRNN", "Bidirectional", "Dense", "Embedding", "tanh",
         "sigmoid", "relu", "softmax", "hard_sigmoid", "linear", "concat", "sum", "reverse", "bidirectional",
         "forward", "float32", "float64", "int8", "F64", "I64", "BOOL", "channels_first", "same", "valid",
         "causal", "x" * 4096, "\u00b2", "\ud7ff", "../../etc/passwd", "/dev/zero", "a/b", "0", "-1", "1e400")
FIXED_DATE = (1980, 1, 1, 0, 0, 0)


def _count(rng):
    return rng.choice((1, 1, 1, 2, 2, 3, 4, 8))


# ---------------------------------------------------------------------------------------------
# bytes
# ---------------------------------------------------------------------------------------------

def bytes_ops(rng, data, n=None):
    """n random byte-level edits of data -> (bytes, description)."""
    b = bytearray(data)
    n = n or _count(rng)
    done = []
    for _ in range(n):
        if not b:
            break
        pos = rng.randrange(len(b))
        op = rng.random()
        if op < 0.25:
            b[pos] ^= 1 << rng.randrange(8)
            done.append(f"flip@{pos}")
        elif op < 0.45:
            b[pos] = rng.randrange(256)
            done.append(f"set@{pos}")
        elif op < 0.6:
            b[pos] = rng.choice(BOUNDARY_BYTES)
            done.append(f"byte@{pos}")
        elif op < 0.75:
            width = rng.choice((2, 4, 8))
            v = rng.choice(BOUNDARY_INTS) % (1 << (8 * width))
            b[pos:pos + width] = v.to_bytes(width, rng.choice(("little", "big")))
            done.append(f"int{8 * width}@{pos}")
        elif op < 0.83:
            k = min(len(b) - pos, rng.choice((1, 1, 2, 4, 16, 256)))
            del b[pos:pos + k]
            done.append(f"del{k}@{pos}")
        elif op < 0.91:
            k = rng.choice((1, 1, 2, 4, 16))
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(k))
            done.append(f"ins{k}@{pos}")
        elif op < 0.97:
            k = min(len(b) - pos, rng.choice((4, 16, 64, 512)))
            at = rng.randrange(len(b) + 1)
            b[at:at] = b[pos:pos + k]
            done.append(f"dup{k}@{pos}->{at}")
        else:
            del b[pos:]
            done.append(f"cut@{pos}")
    return bytes(b), ",".join(done)


# ---------------------------------------------------------------------------------------------
# JSON documents
# ---------------------------------------------------------------------------------------------

def _nodes(doc, path=()):
    """Every (path, value) of a JSON document, the root included."""
    yield path, doc
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _nodes(v, path + (i,))


def _replace(doc, path, value):
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return doc


def _other_value(rng, old, strings):
    r = rng.random()
    if r < 0.35:
        return rng.choice(BOUNDARY_NUMBERS)
    if r < 0.55:
        return rng.choice(strings)
    if r < 0.65:
        return rng.choice((None, True, False, [], {}, [0], {"": 0}))
    if r < 0.75:
        v = old
        for _ in range(rng.choice((2, 40, 200))):
            v = [v]
        return v
    if r < 0.85 and isinstance(old, (int, float)) and not isinstance(old, bool) and math.isfinite(old):
        return type(old)(old * rng.choice((-1, 2, 1000))) if isinstance(old, int) else old * rng.choice((-1, 2, 1e30))
    if isinstance(old, list) and old:
        return old[:rng.randrange(len(old))]
    return str(old)


def json_ops(rng, doc, n=None):
    """n edits of a parsed JSON document (modified in place when possible) -> (doc, description)."""
    n = n or _count(rng)
    strings = list(WORDS) + [v for _, v in _nodes(doc) if isinstance(v, str) and len(v) < 64][:200]
    done = []
    for _ in range(n):
        nodes = list(_nodes(doc))
        path, value = rng.choice(nodes)
        op = rng.random()
        where = "/".join(map(str, path))[-80:]
        if op < 0.6 or not path:
            doc = _replace(doc, path, _other_value(rng, value, strings))
            done.append(f"set:{where}")
            continue
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        if op < 0.75:
            del parent[key]
            done.append(f"del:{where}")
        elif isinstance(parent, list):
            if op < 0.9:
                parent.insert(key, json.loads(json.dumps(parent[key])))
                done.append(f"dup:{where}")
            else:
                j = rng.randrange(len(parent))
                parent[key], parent[j] = parent[j], parent[key]
                done.append(f"swap:{where}<->{j}")
        else:
            new = rng.choice(strings) if rng.random() < 0.7 else str(key) + "_"
            parent[new] = parent.pop(key)
            done.append(f"rename:{where}->{new[:20]}")
    return doc, ",".join(done)


def json_bytes(rng, text, n=None):
    """Edits of a JSON text (bytes or str) -> (bytes, description); raw byte edits when it does
    not parse."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        return bytes_ops(rng, text if isinstance(text, bytes) else text.encode(), n)
    doc, desc = json_ops(rng, doc, n)
    return json.dumps(doc, allow_nan=True).encode(), desc


# ---------------------------------------------------------------------------------------------
# zip archives (.keras, torch.save, TorchScript)
# ---------------------------------------------------------------------------------------------

def _members(data):
    z = zipfile.ZipFile(io.BytesIO(data))
    return [(i.filename, z.read(i.filename), i.compress_type) for i in z.infolist()]


def _zip(members):
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as w:
        warnings.simplefilter("ignore")          # a duplicated member name is meant
        for name, body, how in members:
            w.writestr(zipfile.ZipInfo(name, date_time=FIXED_DATE), body, compress_type=how)
    return out.getvalue()


def _member_weight(name):
    if name.endswith((".json", ".pkl")):
        return 8
    if name.endswith((".h5", ".py", ".debug_pkl")):
        return 4
    return 1


def zip_ops(rng, data):
    members = _members(data)
    r = rng.random()
    if r < 0.6:
        i = rng.choices(range(len(members)), [_member_weight(m[0]) for m in members])[0]
        name, body, how = members[i]
        if name.endswith(".json"):
            body, desc = json_bytes(rng, body)
        elif name.endswith(".h5") and rng.random() < 0.6:
            body, desc = h5_ops(rng, body)
        else:
            body, desc = bytes_ops(rng, body)
        members[i] = (name, body, how)
        return _zip(members), f"member {name}: {desc}"
    if r < 0.7:
        i = rng.randrange(len(members))
        name, body, how = members[i]
        op = rng.choice(("drop", "rename", "dup"))
        if op == "drop":
            del members[i]
        elif op == "rename":
            members[i] = (rng.choice(WORDS[1:12]) + rng.choice(("", ".json", ".h5", "/data/0", "/code/x.py")), body, how)
        else:
            members.append((name, body, how))
        return _zip(members), f"{op} member {name}"
    if r < 0.8:
        info = rng.choice(zipfile.ZipFile(io.BytesIO(data)).infolist())
        b = bytearray(data)
        for _ in range(_count(rng)):
            b[info.header_offset + rng.randrange(30)] = rng.randrange(256)
        return bytes(b), f"local header of {info.filename}"
    out, desc = bytes_ops(rng, data)
    return out, f"raw: {desc}"


# ---------------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------------

def _h5_structure(rng, data):
    import h5py
    import numpy as np
    fd, path = tempfile.mkstemp(suffix=".h5")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with h5py.File(path, "r+") as f:
            dsets, groups = [], []
            f.visititems(lambda n, o: (dsets if isinstance(o, h5py.Dataset) else groups).append(n))
            r = rng.random()
            if r < 0.3 and "model_config" in f.attrs:
                cfg = f.attrs["model_config"]
                text, desc = json_bytes(rng, cfg if isinstance(cfg, bytes) else str(cfg).encode())
                f.attrs["model_config"] = text
                desc = f"model_config: {desc}"
            elif r < 0.6 and dsets:
                name = rng.choice(dsets)
                old = f[name]
                shape = list(old.shape)
                choice = rng.random()
                if choice < 0.4 and shape:
                    k = rng.randrange(len(shape))
                    shape[k] = rng.choice((0, 1, shape[k] + 1, max(shape[k] - 1, 0), shape[k] * 2))
                    new = np.zeros(shape, old.dtype)
                elif choice < 0.6:
                    new = np.zeros(shape, rng.choice(("f8", "f2", "i8", "u1", "?")))
                elif choice < 0.75:
                    new = np.float32(rng.choice((0.0, math.nan, math.inf)))
                else:
                    new = np.zeros(shape + [2], old.dtype)
                del f[name]
                f.create_dataset(name, data=new, track_times=False)
                desc = f"dataset {name}: {new.dtype}{list(np.shape(new))}"
            elif r < 0.75 and (dsets or groups):
                name = rng.choice(dsets + groups)
                if name in f:
                    del f[name]
                desc = f"deleted {name}"
            else:
                holders = [f] + [f[g] for g in groups]
                holders = [h for h in holders if "weight_names" in h.attrs or "layer_names" in h.attrs]
                if not holders:
                    return None
                h = rng.choice(holders)
                key = "weight_names" if "weight_names" in h.attrs else "layer_names"
                names = [bytes(v) for v in h.attrs[key]]
                op = rng.choice(("drop", "dup", "swap", "rename"))
                if op == "drop" and names:
                    names.pop(rng.randrange(len(names)))
                elif op == "dup" and names:
                    names.append(rng.choice(names))
                elif op == "swap" and len(names) > 1:
                    i, j = rng.sample(range(len(names)), 2)
                    names[i], names[j] = names[j], names[i]
                elif names:
                    names[rng.randrange(len(names))] = rng.choice(WORDS).encode()
                h.attrs[key] = np.array(names, dtype=object if not names else None)
                desc = f"{h.name} {key}: {op}"
        with open(path, "rb") as f:
            return f.read(), desc
    except Exception:  # noqa: BLE001 - h5py refused this edit: fall back to a byte mutation
        return None
    finally:
        os.unlink(path)


def h5_ops(rng, data):
    r = rng.random()
    if r < 0.4:
        got = _h5_structure(rng, data)
        if got is not None:
            return got[0], f"h5py: {got[1]}"
    if r < 0.95:
        out, desc = bytes_ops(rng, data)
        return out, f"raw: {desc}"
    cut = rng.randrange(1, len(data))
    return data[:cut], f"cut@{cut}"


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------

ONNX_OPS = ("LSTM", "GRU", "RNN", "MatMul", "Gemm", "Add", "Mul", "Transpose", "Reshape", "Squeeze",
            "Unsqueeze", "Slice", "Gather", "Concat", "Split", "Softmax", "Tanh", "Sigmoid", "Relu", "Shape",
            "Loop", "Scan", "Identity", "Cast", "ReduceMean", "Flatten", "Neg", "Unknown")


def _onnx_structure(rng, m):
    """One edit of ModelProto m, in place -> description."""
    import onnx
    g = m.graph
    r = rng.random()
    if r < 0.3 and g.initializer:
        t = rng.choice(g.initializer)
        what = rng.choice(("dims", "dims", "type", "raw", "move", "external"))
        if what == "dims" and t.dims:
            k = rng.randrange(len(t.dims))
            t.dims[k] = rng.choice((0, 1, -1, min(t.dims[k] + 1, 2 ** 62), min(t.dims[k] * 2, 2 ** 62), 2 ** 31, 2 ** 62))
        elif what == "dims":
            t.dims.append(rng.choice((0, 1, 2, 2 ** 40)))
        elif what == "type":
            t.data_type = rng.randrange(0, 25)
        elif what == "raw":
            raw = t.raw_data
            t.raw_data = raw[:rng.randrange(len(raw) + 1)] if raw and rng.random() < 0.6 else raw + bytes(rng.choice((1, 4, 64)))
        elif what == "move":
            import numpy as np
            from onnx import numpy_helper
            try:
                a = numpy_helper.to_array(t).ravel()
            except Exception:  # noqa: BLE001 - already damaged
                a = np.zeros(1, np.float32)
            t.ClearField("raw_data")
            t.float_data.extend(a.astype(np.float32)[:rng.randrange(a.size + 2)].tolist())
        else:
            t.data_location = onnx.TensorProto.EXTERNAL
            e = t.external_data.add()
            e.key, e.value = "location", rng.choice(("../../etc/passwd", "/dev/zero", "w.bin"))
        return f"initializer {t.name}: {what}"
    if r < 0.65 and g.node:
        i = rng.randrange(len(g.node))
        node = g.node[i]
        what = rng.choice(("op", "attr", "attr", "attr", "input", "output", "drop", "dup"))
        if what == "op":
            node.op_type = rng.choice(ONNX_OPS)
        elif what == "attr" and node.attribute:
            a = rng.choice(node.attribute)
            kind = rng.random()
            if a.ints and kind < 0.5:
                a.ints[rng.randrange(len(a.ints))] = rng.choice(INT64)
            elif a.strings and kind < 0.5:
                a.strings[rng.randrange(len(a.strings))] = rng.choice(WORDS).encode()
            elif kind < 0.7:
                a.i = rng.choice(INT64)
                a.f = rng.choice((0.0, -1.0, 1e30, math.nan, math.inf))
            elif kind < 0.85:
                a.s = rng.choice(WORDS).encode()
            else:
                node.attribute.remove(a)
        elif what == "attr":
            a = node.attribute.add()
            a.name, a.type, a.i = rng.choice(("hidden_size", "direction", "axis", "perm", "layout")), 2, -1
        elif what == "input" and node.input:
            k = rng.randrange(len(node.input))
            node.input[k] = rng.choice(("", "x", node.name, rng.choice(g.node).output[0] if g.node[0].output else ""))
        elif what == "output" and node.output:
            node.output[rng.randrange(len(node.output))] = rng.choice(("", "y", g.input[0].name if g.input else "x"))
        elif what == "drop":
            del g.node[i]
        else:
            g.node.append(node)
        return f"node {i} ({node.op_type}): {what}"
    if r < 0.85 and (g.input or g.output):
        v = rng.choice(list(g.input) + list(g.output))
        tt = v.type.tensor_type
        if tt.shape.dim and rng.random() < 0.7:
            d = rng.choice(tt.shape.dim)
            if rng.random() < 0.5:
                d.dim_value = rng.choice((0, 1, 3, 2 ** 31, 2 ** 62))
            else:
                d.dim_param = rng.choice(("B", "T", "", "unk"))
        else:
            tt.elem_type = rng.randrange(0, 25)
        return f"value {v.name}"
    if m.opset_import:
        m.opset_import[0].version = rng.choice((1, 6, 7, 13, 14, 22, 99, 2 ** 40))
        return "opset"
    return "nothing"


def onnx_ops(rng, data):
    if rng.random() < 0.7:
        import onnx
        m = onnx.ModelProto()
        m.ParseFromString(data)
        descs = [_onnx_structure(rng, m) for _ in range(_count(rng))]
        return m.SerializeToString(), "proto: " + "; ".join(descs)
    out, desc = bytes_ops(rng, data)
    return out, f"raw: {desc}"


# ---------------------------------------------------------------------------------------------
# .frnn
# ---------------------------------------------------------------------------------------------

def frnn_ops(rng, data):
    """.frnn: an 8-byte header length, the JSON header (tensors, and the spec as a JSON string
    in __metadata__), the tensor bytes."""
    (n,) = struct.unpack_from("<Q", data)
    head, body = data[8:8 + n], data[8 + n:]
    r = rng.random()
    if r < 0.35:
        header = json.loads(head)
        spec = header.get("__metadata__", {}).get("spec")
        if spec is not None and rng.random() < 0.6:
            text, desc = json_bytes(rng, spec)
            header["__metadata__"]["spec"] = text.decode()
            desc = f"spec: {desc}"
        else:
            header, desc = json_ops(rng, header)
            desc = f"header: {desc}"
        head = json.dumps(header, allow_nan=True).encode()
        if rng.random() < 0.1:    # keep the old length: the header overruns or falls short
            return struct.pack("<Q", n) + head + body, desc + ", stale length"
        return struct.pack("<Q", len(head)) + head + body, desc
    if r < 0.45:
        v = rng.choice(BOUNDARY_INTS + (n + 1, n - 1, len(data), len(data) - 7)) % (1 << 64)
        return struct.pack("<Q", v) + data[8:], f"length {v}"
    if r < 0.6:
        out, desc = bytes_ops(rng, body)
        return data[:8 + n] + out, f"tensor bytes: {desc}"
    out, desc = bytes_ops(rng, data)
    return out, f"raw: {desc}"


def pt_ops(rng, data):
    if data[:2] == b"PK":
        return zip_ops(rng, data)
    out, desc = bytes_ops(rng, data)     # a legacy pickle
    return out, f"raw: {desc}"


MUTATORS = {"frnn": frnn_ops, "keras": zip_ops, "h5": h5_ops, "onnx": onnx_ops, "pt": pt_ops, "ts": zip_ops}


def mutate(fmt, seeds, n):
    """Input number n of format fmt, from seeds [(name, bytes)] -> (name of its seed, bytes,
    what was done)."""
    rng = random.Random(f"{fmt}:{n}")
    name, data = rng.choice(seeds)
    out, desc = MUTATORS[fmt](rng, data)
    return name, out, desc
