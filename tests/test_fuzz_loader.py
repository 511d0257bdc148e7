"""Fuzz the .frnn loader (fastrnn/fileformat.py): on any input, fastrnn.load either returns a
model whose predict runs, or raises fastrnn.ModelFormatError. Never another exception, never a
crash (DESIGN.md sections 3 and 6: "Corrupt or hostile files raise ModelFormatError").

Two small valid models are saved once per session (an ids model: Embedding(mask_zero) -> LSTM with
peepholes, projection and clip -> Dense(softmax); a float model: Masking -> bidirectional GRU
(linear_before_reset=False) -> RNN(return_sequences=False) -> Dense -> Activation). Hypothesis
then, on their bytes:
  - flips random bytes; truncates at random lengths; splices random (and JSON-ish) bytes into the
    JSON header, with and without fixing the length field; rewrites the length field;
  - mutates the parsed header: tensor entries (dtype "F64"/"I64"/"BOOL"/..., shapes that overflow
    or are negative, huge / negative / overlapping data_offsets, missing or extra keys), drops,
    adds and renames tensors, the __metadata__ strings (format, format_version "2", "²", ...);
  - mutates the spec JSON: options of the wrong type or hostile values (huge ints, 1e400, deep
    nesting), activation fields, unknown layer types, layers dropped / duplicated / swapped,
    tensor lists, input_size, meta; NaN / Infinity literals; the whole spec or header replaced by
    random or deeply nested JSON.
Then fixed regression cases for each hostile variant assert that the ModelFormatError message
names the problem.

Each example writes one small file under pytest's tmp_path and loads it in-process.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import ir
from fastrnn.fileformat import VERSION

MFE = fastrnn.ModelFormatError


def _n(examples):
    """max_examples, scaled by FASTRNN_HYPOTHESIS_SCALE (e.g. 20 for a long local soak)."""
    return max(1, int(examples * float(os.environ.get("FASTRNN_HYPOTHESIS_SCALE", "1"))))


FUZZ = settings(max_examples=_n(300), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# the base files
# ---------------------------------------------------------------------------------------------

def _base_models():
    rng = np.random.default_rng(1234)
    u = lambda *s: rng.uniform(-0.5, 0.5, s).astype(np.float32)
    ids = [
        ir.Embedding(u(7, 3), mask_zero=True),
        ir.Recurrent("lstm", [{"W_ih": u(8, 3), "W_hh": u(8, 1), "b_ih": u(8), "b_hh": u(8),
                               "P": u(3, 2), "W_hr": u(1, 2)}], clip=3.0,
                     activations=[ir.Act("hard_sigmoid", 0.2, 0.5), "tanh", "softsign"]),
        ir.Dense(u(3, 1), u(3), "softmax"),
    ]
    flt = [
        ir.Masking(2, mask_value=0.0),
        ir.Recurrent("gru", [{"W_ih": u(6, 2), "W_hh": u(6, 2)}, {"W_ih": u(6, 2), "W_hh": u(6, 2)}],
                     direction="bidirectional", merge_mode="concat", linear_before_reset=False),
        ir.Recurrent("rnn", [{"W_ih": u(3, 4), "W_hh": u(3, 3), "b_ih": u(3), "b_hh": u(3)}],
                     return_sequences=False, masked_output="zero"),
        ir.Dense(u(2, 3), None, "linear"),
        ir.Activation(2, ir.Act("scaled_tanh", 1.5, 0.5)),
    ]
    return {"ids": fastrnn.Model(ids, meta={"source": "fuzz"}), "float": fastrnn.Model(flt)}


@pytest.fixture(scope="session")
def bases(tmp_path_factory):
    """kind -> bytes of a valid .frnn file."""
    d = tmp_path_factory.mktemp("bases")
    out = {}
    for kind, m in _base_models().items():
        m.save(d / f"{kind}.frnn")
        out[kind] = (d / f"{kind}.frnn").read_bytes()
        check_load(d / f"{kind}.frnn", must_load=True)
    return out


def split(data):
    """(header dict, tensor bytes) of a valid file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def assemble(header, body, *, raw_header=None):
    """A file from a header (dict / any JSON value, or raw bytes) and tensor bytes."""
    h = raw_header if raw_header is not None else json.dumps(header, allow_nan=True).encode()
    return struct.pack("<Q", len(h)) + h + body


def check_load(path, must_load=False):
    """The contract: load returns a runnable model or raises ModelFormatError (returned)."""
    try:
        m = fastrnn.load(path)
    except MFE as e:
        assert not must_load, f"a valid file was refused: {e}"
        assert str(e), "ModelFormatError without a message"
        return e
    assert isinstance(m, fastrnn.Model)
    rng = np.random.default_rng(0)
    if m.input_kind == "ids":
        x = rng.integers(0, m.layers[0].vocab_size, (2, 3))
    else:
        if m.input_size > 1 << 16:   # e.g. Activation(size=2**30): valid, but not worth 4 GB of input
            return m
        x = rng.normal(size=(2, 3, m.input_size)).astype(np.float32)
    y = m.predict(x, lengths=np.array([3, 1]))
    assert y.shape[0] == 2
    return m


def load_bytes(tmp_path, data):
    p = tmp_path / "fuzz.frnn"
    p.write_bytes(data)
    return check_load(p)


KINDS = st.sampled_from(["ids", "float"])


# ---------------------------------------------------------------------------------------------
# byte-level fuzz
# ---------------------------------------------------------------------------------------------

@FUZZ
@given(kind=KINDS, flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                                  min_size=1, max_size=8))
def test_fuzz_flip_bytes(tmp_path, bases, kind, flips):
    data = bytearray(bases[kind])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    load_bytes(tmp_path, bytes(data))


@FUZZ
@given(kind=KINDS, cut=st.floats(0, 1, exclude_max=True))
def test_fuzz_truncate(tmp_path, bases, kind, cut):
    data = bases[kind]
    assert isinstance(load_bytes(tmp_path, data[:int(cut * len(data))]), MFE)


JSONISH = st.text(alphabet='{}[]":,0123456789.eE+-ntrufalsNIy \\/u', max_size=24).map(str.encode)


@FUZZ
@given(kind=KINDS, where=st.floats(0, 1), junk=st.one_of(st.binary(min_size=1, max_size=24), JSONISH),
       delete=st.integers(0, 8), fix_length=st.booleans())
def test_fuzz_splice_header(tmp_path, bases, kind, where, junk, delete, fix_length):
    data = bases[kind]
    (n,) = struct.unpack("<Q", data[:8])
    raw = data[8:8 + n]
    i = int(where * len(raw))
    raw2 = raw[:i] + junk + raw[i + delete:]
    length = len(raw2) if fix_length else n
    load_bytes(tmp_path, struct.pack("<Q", length) + raw2 + data[8 + n:])


@FUZZ
@given(kind=KINDS, length=st.one_of(
    st.integers(0, 2**64 - 1), st.integers(-24, 24),
    st.sampled_from([0, 1, 2, 7, 8, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, (64 << 20) + 1])))
def test_fuzz_header_length(tmp_path, bases, kind, length):
    data = bases[kind]
    (n,) = struct.unpack("<Q", data[:8])
    if -24 <= length <= 24:
        length = max(0, n + length)   # near the true length
    load_bytes(tmp_path, struct.pack("<Q", length % 2**64) + data[8:])


# ---------------------------------------------------------------------------------------------
# structured (header / spec) fuzz
# ---------------------------------------------------------------------------------------------

BIG = [2**31 - 1, 2**31, 2**32, 2**40, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, 10**400,
       -1, -2**31, -2**63, -10**400, 0]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(BIG),
    st.floats(), st.sampled_from([1e308, 1e400, -1e400, 5e-324, -0.0, 0.5]),
    st.text(max_size=12), st.sampled_from(["", "F32", "lstm", "tanh", "carry", "1", "²", "NaN"]))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


def nested(depth, kind="list"):
    return ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)


DTYPES = ["F64", "I64", "BOOL", "F16", "BF16", "U8", "I8", "I32", "U64", "F8_E4M3", "f32", "F32 ",
          "", "float32"]


@st.composite
def entry_mutation(draw, header):
    names = sorted(k for k, e in header.items() if k != "__metadata__" and isinstance(e, dict)
                   and isinstance(e.get("shape"), list) and isinstance(e.get("data_offsets"), list)
                   and len(e["data_offsets"]) == 2)
    if not names:
        return "no tensor entry left to mutate"
    name = draw(st.sampled_from(names))
    e = header[name]
    op = draw(st.sampled_from(["dtype", "shape", "shape_near", "offsets", "offsets_near", "offsets_other",
                               "drop_key", "extra_key", "value", "drop_tensor", "dup_tensor", "rename"]))
    if op == "dtype":
        e["dtype"] = draw(st.one_of(st.sampled_from(DTYPES), json_values))
    elif op == "shape":
        e["shape"] = draw(st.one_of(st.lists(st.one_of(st.integers(), st.sampled_from(BIG)), max_size=10),
                                    json_values))
    elif op == "shape_near":   # same number of bytes, or a plausible other shape
        k = draw(st.sampled_from(["perm", "flat", "scalar", "extra1", "zero", "neg", "overflow"]))
        s = e["shape"] if all(type(v) is int and abs(v) < 2**62 for v in e["shape"]) else [3]   # after a "shape"
        e["shape"] = {"perm": s[::-1], "flat": [math.prod(s)], "scalar": [], "extra1": s + [1],
                      "zero": [0] + s[1:], "neg": [-1] + s[1:],
                      "overflow": [2**62, 2**62] + s}[k]
    elif op == "offsets":
        e["data_offsets"] = draw(st.one_of(
            st.lists(st.one_of(st.integers(), st.sampled_from(BIG)), min_size=2, max_size=2), json_values))
    elif op == "offsets_near":
        a, b = e["data_offsets"]
        da, db = draw(st.integers(-8, 8)), draw(st.integers(-8, 8))
        e["data_offsets"] = [a + da, b + db] if isinstance(a, int) and isinstance(b, int) else [da, db]
    elif op == "offsets_other":   # point at another tensor's bytes (overlap)
        e["data_offsets"] = list(header[draw(st.sampled_from(names))]["data_offsets"])
    elif op == "drop_key":
        del e[draw(st.sampled_from(sorted(e)))]
    elif op == "extra_key":
        e[draw(st.text(max_size=6))] = draw(json_values)
    elif op == "value":
        header[name] = draw(json_values)
    elif op == "drop_tensor":
        del header[name]
    elif op == "dup_tensor":
        header[name + draw(st.sampled_from(["x", "_", ".0", ""])) + "2"] = dict(e)
    else:
        header[draw(st.text(max_size=16))] = header.pop(name)
    return f"{op} {name}"


@st.composite
def metadata_mutation(draw, header):
    md = header["__metadata__"]
    ops = ["format", "version", "extra", "spec_text", "not_dict"] + (["drop", "value"] if md else [])
    op = draw(st.sampled_from(ops))
    if op == "format":
        md["format"] = draw(st.one_of(st.sampled_from(["", "safetensors", "FASTRNN", "fastrnn "]), st.text()))
    elif op == "version":
        md["format_version"] = draw(st.one_of(
            st.sampled_from(["2", "0", "01", "10", "-1", "1.0", "1 ", "", "²", "١", "0x1", "9" * 5000]),
            st.text(max_size=6)))
    elif op == "drop":
        del md[draw(st.sampled_from(sorted(md)))]
    elif op == "extra":
        md[draw(st.text(max_size=8))] = draw(st.text(max_size=8))
    elif op == "value":
        md[draw(st.sampled_from(sorted(md)))] = draw(json_values)
    elif op == "spec_text":
        md["spec"] = draw(st.one_of(st.text(max_size=40), st.sampled_from(
            [nested(100000), nested(100000, "dict"), nested(500), "NaN", "[]", "{}", "null", "1e400"])))
    else:
        header["__metadata__"] = draw(json_values)
    return f"metadata {op}"


OPTION_VALUES = st.one_of(st.sampled_from(BIG), json_values, st.sampled_from(
    [1e400, -1e400, "lstm", "gru", "rnn", "reverse", "bidirectional", "sum", "zero", "bogus",
     {"kind": "tanh", "alpha": 10**400, "beta": 0}, {"kind": "softmax"}, {"kind": 3},
     [[{"kind": "tanh"}]], [["tanh", "tanh", "tanh"]], [], [[]]]))


@st.composite
def spec_mutation(draw, spec):
    layers = spec["layers"]
    i = draw(st.integers(0, len(layers) - 1))
    L = layers[i]
    op = draw(st.sampled_from(["option"] * 6 + ["act_field"] * 3 + ["drop_option", "extra_option",
                               "type", "tensors", "layer_value", "drop_layer", "dup_layer", "swap",
                               "input_size", "meta", "top_key", "layers_value"]))
    if op == "option" and L["options"]:
        k = draw(st.sampled_from(sorted(L["options"])))
        L["options"][k] = draw(OPTION_VALUES)
        return f"spec option layer {i} {k}={L['options'][k]!r:.60}"
    elif op == "act_field":
        acts = []
        o = L["options"]
        if isinstance(o.get("activation"), dict):
            acts.append(o["activation"])
        if isinstance(o.get("activations"), list):
            acts += [a for al in o["activations"] for a in al]
        if acts:
            a = draw(st.sampled_from(acts))
            a[draw(st.sampled_from(["kind", "alpha", "beta", "other"]))] = draw(st.one_of(
                OPTION_VALUES, st.sampled_from(sorted(ir.ACTIVATIONS)), st.floats()))
    elif op == "drop_option" and L["options"]:
        del L["options"][draw(st.sampled_from(sorted(L["options"])))]
    elif op == "extra_option":
        L["options"][draw(st.text(max_size=8))] = draw(OPTION_VALUES)
    elif op == "type":
        L["type"] = draw(st.one_of(st.sampled_from(sorted(ir.LAYER_TYPES) + ["Dense", "lstm", "conv1d", ""]),
                                   json_values))
    elif op == "tensors":
        L["tensors"] = draw(st.one_of(st.lists(st.sampled_from(L["tensors"] + ["weight", "bias", "0.W_ih",
                                                                               "1.W_ih", "0.P", "x"])),
                                      json_values))
    elif op == "layer_value":
        layers[i] = draw(json_values)
    elif op == "drop_layer":
        del layers[i]
    elif op == "dup_layer":
        layers.insert(i, copy.deepcopy(L))
    elif op == "swap":
        j = draw(st.integers(0, len(layers) - 1))
        layers[i], layers[j] = layers[j], layers[i]
    elif op == "input_size":
        spec["input_size"] = draw(OPTION_VALUES)
    elif op == "meta":
        spec["meta"] = draw(json_values)
    elif op == "top_key":
        spec[draw(st.sampled_from(["input_size", "meta", "layers", "extra"]))] = draw(json_values)
    else:
        spec["layers"] = draw(json_values)
    return f"spec {op} layer {i}"


@FUZZ
@given(kind=KINDS, data=st.data())
def test_fuzz_hostile_header(tmp_path, bases, kind, data):
    header, body = split(bases[kind])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if not isinstance(header, dict) or not isinstance(header.get("__metadata__"), dict) \
                or len(header) < 2:
            break
        note(data.draw(st.one_of(entry_mutation(header), metadata_mutation(header)), label="mutation"))
    tail = data.draw(st.sampled_from(["same", "cut", "extra"]), label="body")
    if tail == "cut":
        body = body[:-4]
    elif tail == "extra":
        body = body + b"\0" * 4
    load_bytes(tmp_path, assemble(header, body))


@FUZZ
@given(kind=KINDS, data=st.data(), nan=st.booleans())
def test_fuzz_hostile_spec(tmp_path, bases, kind, data, nan):
    header, body = split(bases[kind])
    spec = json.loads(header["__metadata__"]["spec"])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) or not spec["layers"] \
                or not all(isinstance(L, dict) and isinstance(L.get("options"), dict)
                           and isinstance(L.get("tensors"), list) for L in spec["layers"]):
            break
        note(data.draw(spec_mutation(spec), label="mutation"))
    text = json.dumps(spec, allow_nan=True)
    if nan:   # a number literal becomes NaN / Infinity (json.dumps of floats never writes these)
        nums = [m for m in re.finditer(r"(?<=[:\[ ])-?\d+(\.\d+)?(?=[,\]}])", text)]
        if nums:
            m = nums[data.draw(st.integers(0, len(nums) - 1), label="number")]
            text = text[:m.start()] + data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity"])) \
                + text[m.end():]
    header["__metadata__"]["spec"] = text
    load_bytes(tmp_path, assemble(header, body))


@settings(max_examples=_n(100), deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=KINDS, value=json_values, where=st.sampled_from(["header", "spec"]))
def test_fuzz_random_json(tmp_path, bases, kind, value, where):
    header, body = split(bases[kind])
    if where == "header":
        header = value
    else:
        header["__metadata__"]["spec"] = json.dumps(value, allow_nan=True)
    assert isinstance(load_bytes(tmp_path, assemble(header, body)), MFE)


# ---------------------------------------------------------------------------------------------
# fixed regression cases
# ---------------------------------------------------------------------------------------------

def refuse(tmp_path, data, word):
    """Loading `data` raises ModelFormatError whose message contains `word` (case-insensitive)."""
    p = tmp_path / "bad.frnn"
    p.write_bytes(data)
    with pytest.raises(MFE) as ei:
        fastrnn.load(p)
    msg = str(ei.value)
    assert os.fspath(p) in msg, f"the message does not name the file: {msg}"
    msg = msg.replace(os.fspath(p), "<file>")   # tmp_path holds the test's name: not evidence
    assert word.lower() in msg.lower(), f"{word!r} not in: {msg}"
    return ei.value


def with_header(base, fn):
    header, body = split(base)
    fn(header)
    return assemble(header, body)


INF = "__1e400__"   # a spec value written as the JSON number 1e400 (parses as inf; json.dumps
                   # of float('inf') would write the non-JSON literal Infinity instead)


def with_spec(base, fn, *, raw=None):
    header, body = split(base)
    spec = json.loads(header["__metadata__"]["spec"])
    fn(spec)
    text = raw if raw is not None else json.dumps(spec)
    header["__metadata__"]["spec"] = text.replace(f'"{INF}"', "1e400")
    return assemble(header, body)


def test_base_files_load(tmp_path, bases):
    for kind, data in bases.items():
        (tmp_path / "ok.frnn").write_bytes(data)
        m = check_load(tmp_path / "ok.frnn", must_load=True)
        assert m.input_kind == kind


@pytest.mark.parametrize("cut,word", [(0, "too short"), (7, "too short"), (8, "header length"),
                                      (100, "header length"), (-1, "data_offsets")])
def test_truncated(tmp_path, bases, cut, word):
    data = bases["ids"]
    refuse(tmp_path, data[:cut], word)


@pytest.mark.parametrize("length", [0, 1, 2**63, 2**64 - 1, (64 << 20) + 1])
def test_header_length_field(tmp_path, bases, length):
    data = bases["ids"]
    refuse(tmp_path, struct.pack("<Q", length) + data[8:], "header length")


def test_header_not_json(tmp_path, bases):
    data = bytearray(bases["ids"])
    data[8] = ord("x")
    refuse(tmp_path, bytes(data), "JSON")
    data[8:10] = b"\xff\xfe"
    refuse(tmp_path, bytes(data), "JSON")


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_header_deeply_nested(tmp_path, bases, kind):
    raw = nested(100000, kind).encode()
    refuse(tmp_path, assemble(None, split(bases["ids"])[1], raw_header=raw), "JSON")


def test_header_not_object(tmp_path, bases):
    refuse(tmp_path, assemble([1, 2], split(bases["ids"])[1]), "object")


def _set(name, key, value):
    def f(h):
        h[name][key] = value
    return f


W = "layers.0.weight"   # (7, 3) at [0, 84]


@pytest.mark.parametrize("offs", [[0, 2**64], [0, 10**30], [2**63, 2**63 + 84], [-84, 0], [0, -1],
                                  [84, 0], [0, 85], [0, 84.0], [0], [0, 84, 84], "0,84", None])
def test_bad_data_offsets(tmp_path, bases, offs):
    refuse(tmp_path, with_header(bases["ids"], _set(W, "data_offsets", offs)), "data_offsets")


def test_overlapping_data_offsets(tmp_path, bases):
    def f(h):
        h["layers.1.0.P"]["data_offsets"] = [0, 24]   # inside layers.0.weight
    refuse(tmp_path, with_header(bases["ids"], f), "overlap")
    refuse(tmp_path, with_header(bases["ids"], _set(W, "data_offsets", [1, 85])), "overlap")


def test_trailing_bytes(tmp_path, bases):
    refuse(tmp_path, bases["ids"] + b"\0" * 4, "trailing")


@pytest.mark.parametrize("shape", [[2**62, 2**62], [2**40, 1], [2**39, 2**39, 2**39], [-7, -3], [7, 3.0],
                                   [1] * 9, "7x3", [True, 3], [21, 0]])
def test_bad_shape(tmp_path, bases, shape):
    refuse(tmp_path, with_header(bases["ids"], _set(W, "shape", shape)), "shape")


@pytest.mark.parametrize("dtype", ["F64", "I64", "BOOL", "F16", "I16", "U8", "f32", "", None, 1, 1.5])
def test_bad_dtype(tmp_path, bases, dtype):
    refuse(tmp_path, with_header(bases["ids"], _set(W, "dtype", dtype)), "dtype")


def test_entry_keys(tmp_path, bases):
    def drop(h):
        del h[W]["dtype"]
    refuse(tmp_path, with_header(bases["ids"], drop), "dtype, shape, data_offsets")
    refuse(tmp_path, with_header(bases["ids"], _set(W, "extra", 1)), "dtype, shape, data_offsets")


def test_missing_tensor(tmp_path, bases):
    header, body = split(bases["ids"])
    a, b = header.pop("layers.2.weight")["data_offsets"]   # the last tensor's bytes
    assert b == len(body)
    refuse(tmp_path, assemble(header, body[:a]), "missing")


def test_extra_tensor(tmp_path, bases):
    header, body = split(bases["ids"])
    header["layers.9.weight"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(body), len(body) + 4]}
    refuse(tmp_path, assemble(header, body + b"\0" * 4), "not used")


def test_tensor_listed_twice(tmp_path, bases):
    def f(spec):
        spec["layers"][2]["tensors"] = ["weight", "weight", "bias"]
    refuse(tmp_path, with_spec(bases["ids"], f), "twice")


@pytest.mark.parametrize("raw", [
    '{"input_size": NaN, "meta": {}, "layers": []}',
    None,   # the clip of the LSTM
    '{"input_size": Infinity, "meta": {}, "layers": []}',
])
def test_nan_in_spec(tmp_path, bases, raw):
    if raw is None:
        header, _ = split(bases["ids"])
        raw = header["__metadata__"]["spec"].replace('"clip": 3.0', '"clip": NaN')
        assert "NaN" in raw
    refuse(tmp_path, with_spec(bases["ids"], lambda s: None, raw=raw), "NaN")


@pytest.mark.parametrize("where", ["spec", "meta", "options", "input_size"])
def test_spec_deeply_nested(tmp_path, bases, where):
    header, _ = split(bases["ids"])
    spec = json.loads(header["__metadata__"]["spec"])
    if where == "meta":
        spec["meta"] = "NEST"
    elif where == "options":
        spec["layers"][0]["options"]["mask_zero"] = "NEST"
    elif where == "input_size":
        spec["input_size"] = "NEST"
    raw = nested(100000) if where == "spec" else json.dumps(spec).replace('"NEST"', nested(100000))
    refuse(tmp_path, with_spec(bases["ids"], lambda s: None, raw=raw), "spec")


@pytest.mark.parametrize("layer,key,value", [
    (0, "mask_zero", 1), (0, "mask_zero", "true"), (0, "mask_zero", None),
    (1, "cell", 1), (1, "direction", None), (1, "merge_mode", ["concat"]), (1, "activations", "tanh"),
    (1, "clip", "3"), (1, "clip", True), (1, "input_forget", 0), (1, "linear_before_reset", "yes"),
    (1, "return_sequences", 1), (1, "masked_output", False),
    (2, "activation", "softmax"), (2, "activation", None),
])
def test_wrong_option_type(tmp_path, bases, layer, key, value):
    def f(spec):
        spec["layers"][layer]["options"][key] = value
    refuse(tmp_path, with_spec(bases["ids"], f), "wrong type")


@pytest.mark.parametrize("layer,key,value", [
    (0, "size", 2.0), (0, "size", True), (0, "size", "2"), (0, "mask_value", "0"), (0, "mask_value", None),
    (4, "size", None),
])
def test_wrong_option_type_float_model(tmp_path, bases, layer, key, value):
    def f(spec):
        spec["layers"][layer]["options"][key] = value
    refuse(tmp_path, with_spec(bases["float"], f), "wrong type")


@pytest.mark.parametrize("layer,key,value,word", [
    (1, "cell", "conv", "cell"),
    (1, "merge_mode", "max", "merge_mode"), (1, "masked_output", "keep", "masked_output"),
    (1, "clip", -1.0, "clip"), (1, "clip", 0, "clip"), (1, "clip", INF, "clip"),
    (1, "activations", [["tanh"]], "activations"), (1, "activations", [[{"kind": "bogus"}] * 3], "bogus"),
    (1, "activations", [[{"kind": "tanh", "alpha": "x"}] * 3], "alpha"),
    (1, "activations", [[{"kind": "tanh", "alpha": INF}] * 3], "alpha"),
    (1, "activations", [[{"kind": "softmax"}] * 3], "softmax"),
    (2, "activation", {"kind": "elu", "alpha": 1, "beta": -1}, None),
    (1, "linear_before_reset", False, None),   # ignored by an LSTM
    (1, "input_forget", True, None),
])
def test_bad_option_value(tmp_path, bases, layer, key, value, word):
    def f(spec):
        spec["layers"][layer]["options"][key] = value
    data = with_spec(bases["ids"], f)
    if word is None:   # a valid change: loads and runs
        (tmp_path / "ok.frnn").write_bytes(data)
        check_load(tmp_path / "ok.frnn", must_load=True)
    else:
        refuse(tmp_path, data, word)


def test_missing_and_extra_option(tmp_path, bases):
    def drop(spec):
        del spec["layers"][1]["options"]["clip"]
    refuse(tmp_path, with_spec(bases["ids"], drop), "options must be exactly")

    def extra(spec):
        spec["layers"][1]["options"]["hidden_size"] = 2
    refuse(tmp_path, with_spec(bases["ids"], extra), "options must be exactly")


@pytest.mark.parametrize("type_name", ["conv2d", "Dense", "", 3, None, ["dense"]])
def test_unknown_layer_type(tmp_path, bases, type_name):
    def f(spec):
        spec["layers"][2]["type"] = type_name
    refuse(tmp_path, with_spec(bases["ids"], f), "unknown layer type")


def test_layers_that_do_not_chain(tmp_path, bases):
    def swap(spec):
        spec["layers"][1], spec["layers"][2] = spec["layers"][2], spec["layers"][1]
    refuse(tmp_path, with_spec(bases["ids"], swap), "layer 1")

    def rs_false(spec):   # a recurrent layer after one with return_sequences=False
        spec["layers"][1]["options"]["return_sequences"] = False
        spec["layers"][2]["options"]["return_sequences"] = True
    refuse(tmp_path, with_spec(bases["float"], rs_false), "return_sequences")


@pytest.mark.parametrize("spec_json,word", [
    ('{"input_size": null, "meta": {}, "layers": []}', "non-empty"),
    ('{"input_size": null, "meta": {}}', "exactly"),
    ('{"input_size": null, "meta": [], "layers": [1]}', "meta"),
    ('{"input_size": -3, "meta": {}, "layers": [1]}', "input_size"),
    ('{"input_size": 2.0, "meta": {}, "layers": [1]}', "input_size"),
    ('[]', "spec"), ('', "spec"), ('nul', "spec"),
])
def test_bad_spec_structure(tmp_path, bases, spec_json, word):
    refuse(tmp_path, with_spec(bases["ids"], lambda s: None, raw=spec_json), word)


@pytest.mark.parametrize("version", [str(VERSION + 1), "10", "999"])
def test_newer_format_version(tmp_path, bases, version):
    data = with_header(bases["ids"], lambda h: h["__metadata__"].__setitem__("format_version", version))
    e = refuse(tmp_path, data, "newer")
    assert "version" in str(e)


@pytest.mark.parametrize("version", ["", "1.0", "-1", "v1", " 1", "0x1"])
def test_bad_format_version(tmp_path, bases, version):
    data = with_header(bases["ids"], lambda h: h["__metadata__"].__setitem__("format_version", version))
    refuse(tmp_path, data, "format_version")


@pytest.mark.parametrize("fmt", ["safetensors", "", "FASTRNN", None])
def test_wrong_format(tmp_path, bases, fmt):
    def f(h):
        if fmt is None:
            del h["__metadata__"]["format"]
        else:
            h["__metadata__"]["format"] = fmt
    refuse(tmp_path, with_header(bases["ids"], f), "format")


def test_metadata_not_strings(tmp_path, bases):
    refuse(tmp_path, with_header(bases["ids"], lambda h: h["__metadata__"].__setitem__("format_version", 1)),
           "__metadata__")
    refuse(tmp_path, with_header(bases["ids"], lambda h: h.__setitem__("__metadata__", [])), "__metadata__")


def _activation_only(header, size=2):
    """header with a spec of one Activation layer (no tensors)."""
    spec = {"input_size": None, "meta": {}, "layers": [{"type": "activation", "tensors": [], "options": {
        "size": size, "activation": {"kind": "tanh", "alpha": 0.0, "beta": 0.0}}}]}
    return {"__metadata__": dict(header["__metadata__"], spec=json.dumps(spec))}


def test_activation_only_model_loads(tmp_path, bases):
    header, _ = split(bases["float"])
    (tmp_path / "a.frnn").write_bytes(assemble(_activation_only(header), b""))
    m = check_load(tmp_path / "a.frnn", must_load=True)
    assert m.input_size == 2


def test_zero_size_tensor_at_page_boundary(tmp_path, bases):
    """A zero-element tensor and no tensor bytes, the data starting exactly on a page boundary
    (np.memmap of 0 bytes at the end of the file)."""
    header, _ = split(bases["float"])
    header = _activation_only(header)
    header["layers.0.x"] = {"dtype": "F32", "shape": [0, 5], "data_offsets": [0, 0]}
    raw = json.dumps(header).encode()
    raw += b" " * (4096 - 8 - len(raw))
    refuse(tmp_path, assemble(None, b"", raw_header=raw), "not used")


# ---- library bugs found by the fuzz (these fail until fixed) ---------------------------------

@pytest.mark.parametrize("value", [10**400, -10**400], ids=["1e400", "-1e400"])
def test_huge_int_clip(tmp_path, bases, value):
    """JSON integers are unbounded: clip = 10**400 (an int, so it passes the type check) must be
    refused as not finite, not crash float() with OverflowError."""
    def f(spec):
        spec["layers"][1]["options"]["clip"] = value
    refuse(tmp_path, with_spec(bases["ids"], f), "clip")


def test_huge_int_activation_alpha(tmp_path, bases):
    def f(spec):
        spec["layers"][2]["options"]["activation"]["alpha"] = 10**400
    refuse(tmp_path, with_spec(bases["ids"], f), "alpha")


def test_huge_int_mask_value(tmp_path, bases):
    def f(spec):
        spec["layers"][0]["options"]["mask_value"] = 10**400
    (tmp_path / "m.frnn").write_bytes(with_spec(bases["float"], f))
    check_load(tmp_path / "m.frnn")   # either reads it (as inf?) or refuses it; never OverflowError


@pytest.mark.parametrize("size", [2**31, 2**40, 2**63], ids=["2**31", "2**40", "2**63"])
def test_huge_layer_size_without_tensors(tmp_path, bases, size):
    """Masking / Activation carry their size in the spec (no tensor bounds it); a size past the
    engine's int must be a ModelFormatError, not OverflowError from the Cython int conversion."""
    header, _ = split(bases["float"])
    refuse(tmp_path, assemble(_activation_only(header, size), b""), "size")


@pytest.mark.parametrize("dtype", [["F32"], {"F32": 1}])
def test_unhashable_dtype(tmp_path, bases, dtype):
    """`dt not in _DTYPES` raises TypeError (unhashable) when the header's dtype is a list/object."""
    refuse(tmp_path, with_header(bases["ids"], _set(W, "dtype", dtype)), "dtype")


def test_unknown_direction_message(tmp_path, bases):
    """An unknown direction is reported as "unexpected tensor '0.W_ih'" (layer_from_parts maps
    tensors before Recurrent validates the direction): the message should name the direction."""
    def f(spec):
        spec["layers"][1]["options"]["direction"] = "sideways"
    refuse(tmp_path, with_spec(bases["ids"], f), "direction")


@pytest.mark.parametrize("version", ["²", "³", "①"])
def test_unicode_digit_format_version(tmp_path, bases, version):
    """str.isdigit() is True for '²' but int('²') raises ValueError."""
    data = with_header(bases["ids"], lambda h: h["__metadata__"].__setitem__("format_version", version))
    refuse(tmp_path, data, "version")
