"""Damaged converter inputs are a ModelFormatError naming the cause, never another exception.

Each case is one class of input that, mutated at random, used to escape `convert` as a bare
ValueError, IndexError, UnicodeDecodeError or RuntimeError (tests/fuzz/ finds the rest), plus the
format sniffing that mistook a valid .frnn for a pickle.
"""
import io
import os
import struct
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn.errors import ModelFormatError
from fastrnn.converters import sniff

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _lstm_state_dict(**kw):
    torch.manual_seed(0)
    return torch.nn.LSTM(3, 4, batch_first=True, **kw).state_dict()


def test_meta_and_sparse_tensors_hold_no_weights(tmp_path):
    for how in ("meta", "sparse"):
        sd = _lstm_state_dict()
        w = sd["weight_ih_l0"]
        sd["weight_ih_l0"] = w.to("meta") if how == "meta" else w.to_sparse()
        p = tmp_path / f"{how}.pt"
        torch.save(sd, p)
        with pytest.raises(ModelFormatError, match=f"weight_ih_l0.*{how}.*dense tensor was expected"):
            fastrnn.convert(str(p))


def test_projection_weight_must_be_a_matrix(tmp_path):
    sd = _lstm_state_dict(proj_size=2)
    sd["weight_hr_l0"] = sd["weight_hr_l0"].flatten()
    p = tmp_path / "proj.pt"
    torch.save(sd, p)
    with pytest.raises(ModelFormatError, match=r"weight_hr_l0 must be a matrix, got shape \(8,\)"):
        fastrnn.convert(str(p))


def _onnx_lstm(tmp_path):
    m = torch.nn.LSTM(3, 4, batch_first=True)
    p = tmp_path / "lstm.onnx"
    torch.onnx.export(m, (torch.zeros(1, 5, 3),), str(p), input_names=["x"], dynamo=False,
                      dynamic_axes={"x": {0: "B", 1: "T"}})
    return p


def test_damaged_onnx_initializer_is_named(tmp_path):
    p = _onnx_lstm(tmp_path)
    model = onnx.load(str(p))
    big = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    big.raw_data = big.raw_data[:-3]            # 3 bytes short of its declared shape
    bad = tmp_path / "bad.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(ModelFormatError, match=f"initializer '{big.name}' cannot be read"):
        fastrnn.convert(str(bad))
    big.raw_data = b""
    big.data_type = 99                          # no such TensorProto type
    onnx.save(model, str(bad))
    with pytest.raises(ModelFormatError, match=f"initializer '{big.name}' cannot be read"):
        fastrnn.convert(str(bad))


def test_zip_member_names_that_are_not_utf8(tmp_path):
    sd = _lstm_state_dict()
    buf = io.BytesIO()
    torch.save(sd, buf)
    data = bytearray(buf.getvalue())
    # flag a member name as UTF-8 (general purpose bit 11) and put an invalid byte into it
    i = data.index(b"PK\x01\x02")                # first central-directory entry
    data[i + 8] |= 0x08                          # flags, low byte bit 3 -> bit 11 is in the high byte
    data[i + 9] |= 0x08
    n = struct.unpack_from("<H", data, i + 28)[0]
    data[i + 46 + n - 1] = 0xff
    p = tmp_path / "names.pt"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match="damaged zip archive"):
        fastrnn.convert(str(p))


class _Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.GRU(3, 4, batch_first=True)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y)


SEEDS = os.path.join(os.path.dirname(__file__), "fuzz", "seeds")


def _rewrite_archive(src, out, edit):
    """A copy of zip archive src at out, each member's bytes passed through edit(name, data)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for info in z.infolist():
            w.writestr(info, edit(info.filename, z.read(info.filename)))
    return out


def test_damaged_torchscript_debug_info(tmp_path):
    """torch.jit.load reads a module whose debug pickle is damaged; its .code then fails."""
    p = tmp_path / "ts.pt"
    torch.jit.script(_Tagger()).save(str(p))
    out = _rewrite_archive(p, tmp_path / "ts_bad.pt",
                           lambda name, data: b"\x80\x02\xae" if name.endswith(".debug_pkl") else data)
    m = torch.jit.load(str(out))
    with pytest.raises(RuntimeError, match="Unknown opcode"):
        str(m.code)
    with pytest.raises(ModelFormatError, match="ts_bad.pt: the TorchScript archive's code cannot be read "
                                               r"\(RuntimeError: Unknown opcode"):
        fastrnn.convert(str(out))


def test_a_parser_out_of_memory_is_a_model_format_error(tmp_path, monkeypatch):
    """libtorch raises MemoryError (std::bad_alloc) on sizes a damaged archive declares."""
    import fastrnn.converters.torch as conv_torch
    p = tmp_path / "m.pt"
    torch.save(_lstm_state_dict(), p)

    def bad_alloc(*a, **k):
        raise MemoryError("std::bad_alloc")
    monkeypatch.setattr(conv_torch, "convert", bad_alloc)
    with pytest.raises(ModelFormatError, match="m.pt: reading the torch file ran out of memory"):
        fastrnn.convert(str(p))


def _frnn_with_header(tmp_path, size):
    """A valid .frnn whose safetensors header is padded to `size` bytes."""
    p = tmp_path / "m.frnn"
    rng = np.random.default_rng(0)
    fastrnn.Model([fastrnn.ir.Dense(rng.normal(size=(2, 3)).astype(np.float32), np.zeros(2, np.float32))]).save(p)
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    head = raw[8:8 + n].rstrip(b" ")
    assert len(head) <= size
    out = tmp_path / f"h{size}.frnn"
    out.write_bytes(struct.pack("<Q", size) + head + b" " * (size - len(head)) + raw[8 + n:])
    return out


@pytest.mark.parametrize("size", [0x280, 0x780, 0x4080])
def test_frnn_headers_whose_length_starts_like_a_pickle(tmp_path, size):
    p = _frnn_with_header(tmp_path, size)
    assert p.read_bytes()[:1] == b"\x80"
    assert sniff(p) == "frnn"
    m = fastrnn.convert(str(p))
    x = np.ones((1, 3), np.float32)
    np.testing.assert_array_equal(m.predict(x[None])[0], fastrnn.load(p).predict(x[None])[0])


def test_a_legacy_pickle_is_still_a_torch_file(tmp_path):
    p = tmp_path / "legacy.pt"
    torch.save(_lstm_state_dict(), p, _use_new_zipfile_serialization=False)
    assert sniff(p) == "torch"
    assert fastrnn.convert(str(p)).predict(np.zeros((1, 2, 3), np.float32)).shape == (1, 2, 4)


def test_unexpected_failures_inside_a_file_are_model_format_errors(tmp_path, monkeypatch):
    """A failure no importer check names still reaches the user as a ModelFormatError on the file."""
    import fastrnn.converters.onnx as conv_onnx
    p = _onnx_lstm(tmp_path)

    def boom(*a, **k):
        raise ZeroDivisionError("a case no check foresaw")
    monkeypatch.setattr(conv_onnx, "convert", boom)
    with pytest.raises(ModelFormatError, match=r"lstm.onnx: the onnx file cannot be read \(ZeroDivisionError"):
        fastrnn.convert(str(p))
    with pytest.raises(ZeroDivisionError):        # an in-memory model: its own error, shown as is
        fastrnn.convert(onnx.load(str(p)))


@pytest.mark.parametrize("fname", ["keras2/gru_reset_after.keras", "fuzz/seeds/tagger.pt"])
def test_zip_versions_zipfile_does_not_know(tmp_path, fname):
    """zipfile raises NotImplementedError ("zip file version 9.1") for an archive member that
    needs a newer extractor: found by tests/fuzz (keras input 186)."""
    data = bytearray(open(os.path.join(os.path.dirname(__file__), fname), "rb").read())
    i = data.index(b"PK\x01\x02")                # first central-directory entry
    data[i + 6] = 91                             # version needed to extract: 9.1
    p = tmp_path / ("v91" + fname[fname.rindex("."):])
    p.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match=r"damaged zip archive \(NotImplementedError: zip file version 9.1"):
        fastrnn.convert(str(p))


def test_onnx_names_that_are_not_utf8(tmp_path):
    """protobuf returns bytes for a string field that is not UTF-8: found by tests/fuzz (onnx
    input 1325, a TypeError deep in the graph frontend)."""
    data = _onnx_lstm(tmp_path).read_bytes()
    assert data.count(b"\"\x04LSTM") == 1               # NodeProto.op_type (field 4, tag 0x22) = "LSTM"
    bad = tmp_path / "bad_name.onnx"
    bad.write_bytes(data.replace(b"\"\x04LSTM", b"\"\x04LST\xff"))
    with pytest.raises(ModelFormatError, match=r"bad_name.onnx: a damaged ONNX model: op type b'LST\\xff' is not UTF-8"):
        fastrnn.convert(str(bad))


def test_onnx_constants_of_a_declared_huge_shape_are_not_made(tmp_path):
    """An ONNX graph input declaring a batch of 2^31 makes torch's export of zero states a
    ConstantOfShape of (layers, 2^31, H) (found by tests/fuzz, onnx input 40368: it allocated
    64 GiB). The batch size is the input's, so the zeros stay abstract: both readers convert the
    file without allocating them. A ConstantOfShape of a constant shape over 2^24 elements is
    refused by size."""
    from onnx import TensorProto, helper
    from fastrnn.converters.frontends import onnx as frontend
    model = onnx.load(os.path.join(SEEDS, "regressor_torch.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2 ** 31
    x = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    assert frontend.convert(model, "huge_batch").predict(x).shape == (2, 1)
    p = tmp_path / "huge_batch.onnx"
    onnx.save(model, str(p))
    assert fastrnn.convert(str(p)).predict(x).shape == (2, 1)

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [65536, 65536])
    g = model.graph
    g.initializer.append(shape)
    g.node.insert(0, helper.make_node("ConstantOfShape", ["shape"], ["big"]))
    g.node.insert(1, helper.make_node("Identity", ["big"], ["big_out"]))
    g.output.append(helper.make_tensor_value_info("big_out", TensorProto.FLOAT, [65536, 65536]))
    with pytest.raises(fastrnn.UnsupportedError, match=r"a ConstantOfShape of 4294967296 elements"):
        frontend.convert(model, "huge_constant")


def test_torchscript_debug_info_that_is_not_utf8(tmp_path):
    """libtorch formats a node's source range from the archive's debug pickle; a file name
    there that is not UTF-8 raised UnicodeDecodeError from str(node) (tests/fuzz: the most
    common of the TorchScript errors only the last-resort wrapper named)."""
    def edit(name, data):
        if name != "archive/code/__torch__.py.debug_pkl":
            return data
        i = data.index(b"seeds.py")
        return data[:i] + b"\xff" + data[i + 1:]              # same length: the pickle stays valid
    out = _rewrite_archive(os.path.join(SEEDS, "tagger.ts.pt"), tmp_path / "ts_name.pt", edit)
    with pytest.raises(ModelFormatError, match="ts_name.pt: the TorchScript archive's code cannot be read "
                                               r"\(UnicodeDecodeError"):
        fastrnn.convert(str(out))


def test_torchscript_module_without_forward(tmp_path):
    """A TorchScript archive whose code defines no forward (tests/fuzz: one deleted byte in
    `def forward`) is refused by name, not with an AttributeError from the frontend."""
    def edit(name, data):
        if name != "archive/code/__torch__.py":
            return data
        assert data.count(b"def forward(") == 1
        return data.replace(b"def forward(", b"def forwarx(")
    out = _rewrite_archive(os.path.join(SEEDS, "tagger.ts.pt"), tmp_path / "no_forward.pt", edit)
    with pytest.raises(fastrnn.UnsupportedError, match="the TorchScript module .* has no forward method"):
        fastrnn.convert(str(out))


def test_onnx_gather_without_its_index_is_refused():
    """A Gather node that lost its index input (tests/fuzz, onnx input 505): the frontend's search
    for the time length an unrolled loop fixed read input[1] of every Gather (IndexError, named
    only by the last-resort wrapper); now it skips such nodes and the node itself is refused."""
    from onnx import helper
    model = onnx.load(os.path.join(SEEDS, "regressor_torch.onnx"))
    g = model.graph
    g.node.append(helper.make_node("Gather", ["x_lost"], ["y_lost"], name="broken_gather"))
    with pytest.raises(fastrnn.UnsupportedError) as e:
        from fastrnn.converters.frontends import onnx as frontend
        frontend._time_candidates(model)
        frontend.convert(model, "broken")
    assert "cannot be read" not in str(e.value)
