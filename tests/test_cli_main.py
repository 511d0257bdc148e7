"""The `fastrnn` command (fastrnn/cli.py main): info (text and --json, checked against parameter
counts computed here from the weights), run (outputs equal Model.predict / Model.run exactly;
every error one `fastrnn: error:` line with exit code 1; pickled inputs refused), bench (runs,
reports its keys; no timing asserted), convert (the same as fastrnn-convert), usage errors (exit
2) and the installed console script.

Models are built from layer specs with seeded random weights (scale 1/sqrt(H)); main() runs
in-process except where the console script itself is the point."""
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
from fastrnn import ir
from fastrnn.cli import convert_main, main
from conftest import GATES, rand_weights


# ---- models --------------------------------------------------------------------------------------

def _u(rng, *shape, scale):
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def _cell(rng, cell, I, H, bias=True):
    return rand_weights(rng, cell, I, H, bias=bias, scale=1 / np.sqrt(H))


def _rec_params(cell, I, H, dirs=1, bias=True):
    """Parameters of a recurrent layer, from the equations (not from the layer object)."""
    G = GATES[cell]
    return dirs * (G * H * I + G * H * H + (2 * G * H if bias else 0))


V, E, H = 20, 6, 8          # the ids model: Embedding(20, 6) -> LSTM(6 -> 8) -> Dense(8 -> 20, softmax)
FI, FH, FO = 3, 5, 2        # the float model: GRU(3 -> 5) -> Dense(5 -> 2)
BI, BH = 3, 4               # the bidirectional model: Masking -> RNN(3 -> 4, bidirectional, sum, last step)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_main")
    rng = np.random.default_rng(1234)
    models = {
        "ids": fastrnn.Model([
            ir.Embedding(_u(rng, V, E, scale=1.0)),
            ir.Recurrent("lstm", [_cell(rng, "lstm", E, H)]),
            ir.Dense(_u(rng, V, H, scale=1 / np.sqrt(H)), _u(rng, V, scale=0.1), activation="softmax")]),
        "float": fastrnn.Model([
            ir.Recurrent("gru", [_cell(rng, "gru", FI, FH)], linear_before_reset=False),
            ir.Dense(_u(rng, FO, FH, scale=1 / np.sqrt(FH)), None)]),
        "bi": fastrnn.Model([
            ir.Masking(BI, 0.0),
            ir.Recurrent("rnn", [_cell(rng, "rnn", BI, BH, bias=False), _cell(rng, "rnn", BI, BH, bias=False)],
                         direction="bidirectional", merge_mode="sum", return_sequences=False),
            ir.Activation(BH, "tanh")]),
        # a multi-output model (as Keras return_state=True gives): [y, h, c]
        "multi": fastrnn.Model([ir.Recurrent("lstm", [_cell(rng, "lstm", FI, FH)])], signature={
            "outputs": [{"kind": "y"}, {"kind": "state", "state": 0, "dir": 0},
                        {"kind": "state", "state": 1, "dir": 0}]}),
    }
    out = {}
    for name, m in models.items():
        out[name] = str(d / f"{name}.frnn")
        m.save(out[name])
    return out


def cli(capsys, *argv):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err, *needles):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastrnn: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], err


def info_json(capsys, path):
    rc, out, err = cli(capsys, "info", "--json", path)
    assert rc == 0 and err == "", err
    return json.loads(out)


# ---- info ----------------------------------------------------------------------------------------

def test_info_json_ids_model(paths, capsys):
    info = info_json(capsys, paths["ids"])
    want = [V * E, _rec_params("lstm", E, H), H * V + V]
    assert [l["params"] for l in info["layers"]] == want
    assert info["params"] == sum(want) and info["weight_bytes"] == 4 * sum(want)
    assert info["file_bytes"] == os.path.getsize(paths["ids"])
    assert info["memory_bytes"] is None or info["memory_bytes"] > 0
    assert [l["type"] for l in info["layers"]] == ["embedding", "recurrent", "dense"]
    emb, lstm, dense = info["layers"]
    assert emb["vocab_size"] == V and emb["output_size"] == E and emb["mask_zero"] is False
    assert (lstm["cell"], lstm["direction"], lstm["input_size"], lstm["hidden_size"], lstm["output_size"]) \
        == ("lstm", "forward", E, H, H)
    assert lstm["return_sequences"] is True and lstm["use_bias"] is True
    assert lstm["tensors"] == {"0.W_ih": [4 * H, E], "0.W_hh": [4 * H, H], "0.b_ih": [4 * H], "0.b_hh": [4 * H]}
    assert dense["activation"]["kind"] == "softmax" and dense["use_bias"] is True
    assert info["input"] == {"kind": "ids", "shape": ["batch", "time"], "dtype": "int", "vocab_size": V,
                             "mask_zero": False}
    assert info["outputs"] == [{"shape": ["batch", "time", V], "every_step": True, "dtype": "float32"}]
    assert info["num_outputs"] == 1
    assert [s["shape"] for s in info["states"]] == [[1, "batch", H], [1, "batch", H]]
    assert [p["state"] for s in info["states"] for p in s["parts"]] == ["h", "c"]
    assert info["isa"] == fastrnn.cpu_info()["isa"] and info["isa_available"] == fastrnn.cpu_info()["available"]
    assert info["can_stream"] is True and info["stream_unsupported"] is None
    assert info["source"] is None and info["meta"] == {} and info["onnx"] is None
    assert info["model"] == repr(fastrnn.load(paths["ids"]))


def test_info_text_ids_model(paths, capsys):
    rc, out, err = cli(capsys, "info", paths["ids"])
    assert rc == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"{paths['ids']}: {fastrnn.load(paths['ids'])!r}"
    assert "built from layer specs" in out
    assert f"token ids (batch, time), any integer dtype, in [0, {V})" in out
    assert f"(batch, time, {V}) float32, every step" in out

    def row(needle):
        hits = [l for l in lines if needle in l]
        assert len(hits) == 1, (needle, out)
        return hits[0].split()
    r = row("Embedding  ")
    assert r[0] == "0" and f"{V} x {E}" in " ".join(r) and "mask_zero=False" in r and r[-1] == f"{V * E:,}"
    r = row("Recurrent lstm, forward")
    assert r[0] == "1" and f"{E} -> {H}" in " ".join(r) and "return_sequences=True" in r
    assert r[-1] == f"{_rec_params('lstm', E, H):,}"
    r = row("activation=softmax")
    assert r[:2] == ["2", "Dense"] and r[-1] == f"{H * V + V:,}"
    total = V * E + _rec_params("lstm", E, H) + H * V + V
    assert row(" total ")[-1] == f"{total:,}"
    assert f"{total:,} parameters: {4 * total:,} bytes float32" in out
    assert f"{os.path.getsize(paths['ids']):,}-byte file" in out
    assert out.count(f"(1, batch, {H})") == 2
    assert f"kernels   {fastrnn.cpu_info()['isa']}" in out
    assert f"stream    yes: step(x_t) takes (batch,) ids, returns (batch, {V})" in out


def test_info_float_and_bidirectional(paths, capsys):
    info = info_json(capsys, paths["float"])
    assert [l["params"] for l in info["layers"]] == [_rec_params("gru", FI, FH), FH * FO]
    assert info["layers"][0]["linear_before_reset"] is False and info["layers"][1]["use_bias"] is False
    assert info["input"]["kind"] == "float" and info["input"]["shape"] == ["batch", "time", FI]
    assert info["outputs"][0]["shape"] == ["batch", "time", FO]

    info = info_json(capsys, paths["bi"])
    want = [0, _rec_params("rnn", BI, BH, dirs=2, bias=False), 0]
    assert [l["params"] for l in info["layers"]] == want and info["params"] == sum(want)
    rnn = info["layers"][1]
    assert (rnn["direction"], rnn["merge_mode"], rnn["num_directions"], rnn["return_sequences"]) \
        == ("bidirectional", "sum", 2, False)
    assert info["input"]["mask_value"] == 0.0
    assert info["outputs"] == [{"shape": ["batch", BH], "every_step": False, "dtype": "float32"}]
    assert info["states"][0]["shape"] == [2, "batch", BH]
    assert [p["direction"] for p in info["states"][0]["parts"]] == ["forward", "backward"]
    assert info["can_stream"] is False and "bidirectional" in info["stream_unsupported"]

    rc, out, err = cli(capsys, "info", paths["bi"])
    assert rc == 0
    assert f"(batch, {BH}) float32, last step only" in out
    assert "Recurrent rnn, bidirectional" in out and "merge_mode=sum" in out and "no bias" in out
    assert "return_sequences=False" in out and "mask_value=0" in out and "is masked (Masking)" in out
    assert "stream    no: " in out and "bidirectional" in out.split("stream    no: ")[1]


def test_info_multi_output(paths, capsys):
    info = info_json(capsys, paths["multi"])
    assert info["num_outputs"] == 3
    assert [o["shape"] for o in info["outputs"]] == [["batch", "time", FH], ["batch", FH], ["batch", FH]]
    rc, out, err = cli(capsys, "info", paths["multi"])
    assert "[2] (batch, 5) float32, last step only" in out and "a list of 3 arrays" in out
    assert "returns the list of 3 outputs for that step" in out


def _onnx_lstm(path, T=5, B=2, I=3, Hh=4, seed=0):
    """An ONNX LSTM node with sequence_lens and initial_h graph inputs (time-major, layout 0)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    s = 1 / np.sqrt(Hh)
    W, R, Bb = _u(rng, 1, 4 * Hh, I, scale=s), _u(rng, 1, 4 * Hh, Hh, scale=s), _u(rng, 1, 8 * Hh, scale=s)
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "seq_lens", "h0"], ["Y", "Y_h"], hidden_size=Hh)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I]),
         helper.make_tensor_value_info("seq_lens", TensorProto.INT32, ["B"]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "B", Hh])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "B", Hh]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "B", Hh])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R"), numpy_helper.from_array(Bb, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = min(model.ir_version, 8)
    onnx.save(model, path)
    feeds = {"X": rng.standard_normal((T, B, I)).astype(np.float32),
             "seq_lens": np.array([T, T - 2], np.int32),
             "h0": rng.standard_normal((1, B, Hh)).astype(np.float32)}
    return feeds


def test_info_and_run_onnx(tmp_path, capsys):
    feeds = _onnx_lstm(str(tmp_path / "lstm.onnx"))
    frnn = tmp_path / "lstm.frnn"
    rc, out, err = cli(capsys, "convert", tmp_path / "lstm.onnx", "-o", frnn)
    assert rc == 0, err
    info = info_json(capsys, frnn)
    assert info["source"] == "onnx" and info["meta"]["source"] == "onnx"
    assert info["layers"][0]["params"] == _rec_params("lstm", 3, 4)
    g = info["onnx"]
    assert [(e["name"], e["shape"]) for e in g["inputs"]] == [
        ("X", ["time", "batch", 3]), ("seq_lens", ["batch"]), ("h0", [1, "batch", 4])]
    assert [e["role"] for e in g["inputs"]][:2] == ["sequence", "sequence lengths"]
    assert g["inputs"][2]["role"].startswith("initial state: h of layer 0")
    assert [(e["name"], e["shape"]) for e in g["outputs"]] == [("Y", ["time", 1, "batch", 4]), ("Y_h", [1, "batch", 4])]
    rc, out, err = cli(capsys, "info", frnn)
    assert "onnx in   X" in out and "seq_lens" in out and "onnx out  Y" in out and "source    onnx" in out

    # run with the graph's own named inputs (.npz) -> the graph's outputs by name
    np.savez(tmp_path / "feeds.npz", **feeds)
    rc, out, err = cli(capsys, "run", frnn, "-i", tmp_path / "feeds.npz", "-o", tmp_path / "outs.npz")
    assert rc == 0, err
    want = fastrnn.load(frnn).run(None, feeds)
    with np.load(tmp_path / "outs.npz", allow_pickle=False) as got:
        assert got.files == ["Y", "Y_h"]
        for name, w in zip(["Y", "Y_h"], want):
            np.testing.assert_array_equal(got[name], w)
    assert out.startswith(f"wrote {tmp_path / 'outs.npz'}: Y float32 (5, 1, 2, 4), Y_h float32 (1, 2, 4)")
    # two graph outputs do not fit one .npy; --lengths belongs to .npy inputs
    rc, out, err = cli(capsys, "run", frnn, "-i", tmp_path / "feeds.npz", "-o", tmp_path / "o.npy")
    assert rc == 1 and not (tmp_path / "o.npy").exists()
    assert_one_error_line(err, "2 outputs", "Y, Y_h", ".npz")
    np.save(tmp_path / "lens.npy", np.array([5, 3]))
    rc, out, err = cli(capsys, "run", frnn, "-i", tmp_path / "feeds.npz", "-o", tmp_path / "o.npz",
                       "--lengths", tmp_path / "lens.npy")
    assert rc == 1
    assert_one_error_line(err, "--lengths")
    # missing graph input: run()'s own message
    np.savez(tmp_path / "partial.npz", X=feeds["X"])
    rc, out, err = cli(capsys, "run", frnn, "-i", tmp_path / "partial.npz", "-o", tmp_path / "o.npz")
    assert rc == 1
    assert_one_error_line(err, "missing input", "seq_lens")
    # a .npy input is batch-major predict, whatever the source
    x = np.ascontiguousarray(feeds["X"].swapaxes(0, 1))
    np.save(tmp_path / "x.npy", x)
    rc, out, err = cli(capsys, "run", frnn, "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert rc == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), fastrnn.load(frnn).predict(x))


def test_info_missing_and_bad_files(paths, tmp_path, capsys):
    rc, out, err = cli(capsys, "info", tmp_path / "nope.frnn")
    assert rc == 1 and out == ""
    assert_one_error_line(err, "nope.frnn", "no such file")
    junk = tmp_path / "junk.frnn"
    junk.write_bytes(b"\x00" * 100)
    rc, out, err = cli(capsys, "info", junk)
    assert rc == 1
    assert_one_error_line(err, "junk.frnn")
    rc, out, err = cli(capsys, "info", tmp_path)
    assert rc == 1
    assert_one_error_line(err, "directory")


# ---- run -----------------------------------------------------------------------------------------

def test_run_ids_and_float_equal_predict(paths, tmp_path, capsys):
    rng = np.random.default_rng(7)
    ids = rng.integers(0, V, (3, 11)).astype(np.int32)        # any integer dtype
    np.save(tmp_path / "ids.npy", ids)
    rc, out, err = cli(capsys, "run", paths["ids"], "-i", tmp_path / "ids.npy", "-o", tmp_path / "y.npy")
    assert rc == 0 and err == ""
    assert out == f"wrote {tmp_path / 'y.npy'}: float32 (3, 11, {V})\n"
    y = np.load(tmp_path / "y.npy", allow_pickle=False)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, fastrnn.load(paths["ids"]).predict(ids))

    x = rng.standard_normal((4, 6, FI)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    lens = np.array([6, 1, 3, 0])
    np.save(tmp_path / "lens.npy", lens)
    m = fastrnn.load(paths["float"])
    rc, out, err = cli(capsys, "run", paths["float"], "-i", tmp_path / "x.npy", "-o", tmp_path / "yf.npy",
                       "--lengths", tmp_path / "lens.npy")
    assert rc == 0, err
    got = np.load(tmp_path / "yf.npy")
    np.testing.assert_array_equal(got, m.predict(x, lengths=lens))
    assert (got[1, 1:] == 0).all() and (got[3] == 0).all()     # packed-sequence semantics
    # output without a .npy suffix is written exactly there; .npz holds output_0
    rc, out, err = cli(capsys, "run", paths["float"], "-i", tmp_path / "x.npy", "-o", tmp_path / "plain",
                       "--threads", "2")
    assert rc == 0 and os.path.exists(tmp_path / "plain") and fastrnn.get_num_threads() == 1
    np.testing.assert_array_equal(np.load(tmp_path / "plain"), m.predict(x))
    rc, out, err = cli(capsys, "run", paths["float"], "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert rc == 0
    with np.load(tmp_path / "y.npz") as z:
        assert z.files == ["output_0"]
        np.testing.assert_array_equal(z["output_0"], m.predict(x))
    # float64 input is converted (as predict does)
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    rc, out, err = cli(capsys, "run", paths["float"], "-i", tmp_path / "x64.npy", "-o", tmp_path / "y64.npy")
    assert rc == 0
    np.testing.assert_array_equal(np.load(tmp_path / "y64.npy"), m.predict(x.astype(np.float64)))


def test_run_multi_output(paths, tmp_path, capsys):
    x = np.random.default_rng(3).standard_normal((2, 4, FI)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rc, out, err = cli(capsys, "run", paths["multi"], "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert rc == 0, err
    want = fastrnn.load(paths["multi"]).predict(x)
    with np.load(tmp_path / "y.npz") as z:
        assert z.files == ["output_0", "output_1", "output_2"]
        for k, w in zip(z.files, want):
            np.testing.assert_array_equal(z[k], w)
    rc, out, err = cli(capsys, "run", paths["multi"], "-i", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert rc == 1 and out == "" and not (tmp_path / "y.npy").exists()
    assert_one_error_line(err, "3 outputs", ".npz")


def test_run_errors(paths, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x2d.npy", rng.standard_normal((3, FI)).astype(np.float32))
    np.save(tmp_path / "ids.npy", rng.integers(0, V, (2, 5)))
    np.save(tmp_path / "x.npy", rng.standard_normal((2, 5, FI)).astype(np.float32))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"x": np.zeros(3)}))
    (tmp_path / "text.npy").write_text("not numpy\n")
    np.savez(tmp_path / "named.npz", x=np.zeros((2, 5, FI), np.float32))
    np.save(tmp_path / "badlens.npy", np.array([1, 2, 3]))
    npz = (tmp_path / "named.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(npz[:len(npz) // 2])        # a truncated download
    (tmp_path / "pk.npz").write_bytes(b"PK\x03\x04 not a zip at all")
    out_path = tmp_path / "y.npy"
    cases = [
        (["run", tmp_path / "nope.frnn", "-i", tmp_path / "x.npy"], ["nope.frnn", "no such file"]),
        (["run", paths["float"], "-i", tmp_path / "missing.npy"], ["missing.npy", "no such file"]),
        (["run", paths["float"], "-i", tmp_path / "x2d.npy"], ["shape (batch, time, 3)", "(3, 3)"]),
        (["run", paths["float"], "-i", tmp_path / "ids.npy"], ["dtype int64"]),
        (["run", paths["ids"], "-i", tmp_path / "x.npy"], ["integer token ids"]),
        (["run", paths["ids"], "-i", tmp_path / "obj.npy"], ["obj.npy", "unpickl", "never"]),
        (["run", paths["ids"], "-i", tmp_path / "raw.pkl"], ["raw.pkl", "pickle file"]),
        (["run", paths["ids"], "-i", tmp_path / "text.npy"], ["text.npy", "not a NumPy"]),
        (["run", paths["float"], "-i", tmp_path / "named.npz"], ["named.npz", "ONNX", ".npy"]),
        (["run", paths["float"], "-i", tmp_path / "cut.npz"], ["cut.npz", "not a NumPy"]),
        (["run", paths["float"], "-i", tmp_path / "pk.npz"], ["pk.npz", "not a NumPy"]),
        (["run", paths["float"], "-i", tmp_path / "x.npy", "--lengths", tmp_path / "badlens.npy"],
         ["lengths of shape (2,)"]),
        (["run", paths["float"], "-i", tmp_path / "x.npy", "--lengths", tmp_path / "obj.npy"], ["unpickl"]),
    ]
    for argv, needles in cases:
        rc, out, err = cli(capsys, *argv, "-o", out_path)
        assert rc == 1 and out == "", (argv, out, err)
        assert_one_error_line(err, *needles)
        assert not out_path.exists(), argv
    ids = rng.integers(0, V, (2, 5))
    ids[1, 2] = V                                      # out of the vocabulary
    np.save(tmp_path / "oob.npy", ids)
    rc, out, err = cli(capsys, "run", paths["ids"], "-i", tmp_path / "oob.npy", "-o", out_path)
    assert rc == 1
    assert_one_error_line(err, f"token id {V}", "(1, 2)")
    rc, out, err = cli(capsys, "run", paths["float"], "-i", tmp_path / "x.npy", "-o", tmp_path / "no" / "dir.npy")
    assert rc == 1
    assert_one_error_line(err, "dir.npy")
    assert os.listdir(tmp_path).count("y.npy") == 0 and not any(".tmp" in f for f in os.listdir(tmp_path))


# ---- bench ---------------------------------------------------------------------------------------

STREAM_KEYS = {"batch", "us_per_step", "us_per_step_min", "steps_per_s", "repeats", "steps_per_repeat"}
PREDICT_KEYS = {"batch", "steps", "ms_per_call", "ms_per_call_min", "sequences_per_s", "steps_per_s", "calls"}


def test_bench_json(paths, capsys):
    rc, out, err = cli(capsys, "bench", paths["ids"], "--seconds", "0.02", "--batch", "3", "--steps", "4", "--json")
    assert rc == 0 and err == ""
    res = json.loads(out)
    assert set(res) == {"file", "model", "fastrnn", "isa", "precision", "threads", "stream", "stream_skipped",
                        "predict"}
    assert res["precision"] == "fp32"
    assert set(res["stream"]) == STREAM_KEYS and res["stream_skipped"] is None
    assert set(res["predict"]) == PREDICT_KEYS
    assert res["predict"]["batch"] == 3 and res["predict"]["steps"] == 4 and res["predict"]["calls"] >= 1
    assert res["stream"]["batch"] == 1 and res["stream"]["repeats"] >= 1 and res["stream"]["steps_per_repeat"] >= 1
    assert all(v > 0 for v in list(res["stream"].values()) + list(res["predict"].values()))
    assert res["isa"] == fastrnn.cpu_info()["isa"] and res["threads"] == 1 and res["fastrnn"] == fastrnn.__version__


def test_bench_at_a_precision(paths, capsys):
    rc, out, err = cli(capsys, "bench", paths["ids"], "--seconds", "0.02", "--batch", "2", "--steps", "3",
                       "--precision", "int8", "--json")
    assert rc == 0 and err == ""
    res = json.loads(out)
    assert res["precision"] == "int8" and "precision='int8'" in res["model"]
    rc, out, err = cli(capsys, "bench", paths["ids"], "--seconds", "0.02", "--precision", "int4")
    assert rc == 2 and "invalid choice" in err


def test_bench_text_threads_and_no_stream(paths, capsys):
    rc, out, err = cli(capsys, "bench", paths["float"], "--seconds", "0.02", "--batch", "2", "--steps", "3",
                       "--threads", "2")
    assert rc == 0 and err == ""                      # no bar: stderr is not a terminal
    assert "2 threads" in out and "stream step" in out and "µs/step" in out and "ms/call" in out
    assert "seq/s" in out and "steps/s" in out
    assert fastrnn.get_num_threads() == 1            # restored after the command
    rc, out, err = cli(capsys, "bench", paths["bi"], "--seconds", "0.02", "--batch", "2", "--steps", "3", "--json")
    assert rc == 0
    res = json.loads(out)
    assert res["stream"] is None and "bidirectional" in res["stream_skipped"]
    assert set(res["predict"]) == PREDICT_KEYS
    rc, out, err = cli(capsys, "bench", paths["bi"], "--seconds", "0.02", "--batch", "2", "--steps", "3")
    assert rc == 0 and "stream step skipped: " in out and "predict" in out


def test_bench_progress_and_interrupt(paths, capsys, monkeypatch):
    rc, out, err = cli(capsys, "bench", paths["multi"], "--seconds", "0.02", "--batch", "2", "--steps", "3",
                       "--progress")
    assert rc == 0
    assert "\r" in err and "[" in err and "#" in err and "100%" in err
    assert err.endswith("\r") and err.rsplit("\r", 2)[-2].strip() == ""        # the bar is erased

    import fastrnn.cli as cli_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_mod, "_bench_predict", interrupted)
    rc, out, err = cli(capsys, "bench", paths["ids"], "--seconds", "0.02", "--threads", "2", "--progress")
    assert rc == 130 and out == "" and fastrnn.get_num_threads() == 1


# ---- convert = fastrnn-convert -------------------------------------------------------------------

def test_convert_is_fastrnn_convert(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    src = tmp_path / "gru.pt"
    torch.save(torch.nn.GRU(3, 5, num_layers=2).state_dict(), src)
    results = {}
    for name, fn, argv in (("old", convert_main, []), ("new", main, ["convert"])):
        capsys.readouterr()
        dst = tmp_path / f"{name}.frnn"
        rc = fn(argv + [str(src), "-o", str(dst), "--check", "--batch", "2", "--steps", "4"])
        out, err = capsys.readouterr()
        results[name] = (rc, out.replace(str(dst), "OUT"), err, dst.read_bytes())
    assert results["old"][0] == results["new"][0] == 0
    assert results["old"][1] == results["new"][1] and results["new"][1].startswith("wrote OUT: fastrnn.Model([GRU(")
    assert "check: max abs difference" in results["new"][1]
    assert results["old"][3] == results["new"][3]                     # the same bytes
    # the default output name, errors (exit 1, one line) and usage errors (exit 2) alike
    rc, out, err = cli(capsys, "convert", src)
    assert rc == 0 and out.startswith(f"wrote {tmp_path / 'gru.frnn'}: ")
    rc, out, err = cli(capsys, "convert", tmp_path / "missing.pt")
    assert rc == 1
    assert_one_error_line(err, "missing.pt: no such file")
    capsys.readouterr()
    assert convert_main([str(tmp_path / "missing.pt")]) == 1
    assert capsys.readouterr().err == err.replace("fastrnn: error:", "fastrnn-convert: error:")
    for argv in (["--batch", "0"], ["--nonlinearity", "gelu"], ["--bogus"]):
        rc, out, err = cli(capsys, "convert", src, *argv)
        assert rc == 2 and "usage: fastrnn" in err and "error:" in err
        capsys.readouterr()
        assert convert_main([str(src)] + argv) == 2


# ---- usage ---------------------------------------------------------------------------------------

def test_usage_help_and_version(paths, capsys):
    rc, out, err = cli(capsys)
    assert rc == 2 and "usage: fastrnn" in err and "COMMAND" in err
    rc, out, err = cli(capsys, "frobnicate")
    assert rc == 2 and "invalid choice" in err
    rc, out, err = cli(capsys, "--version")
    assert rc == 0 and out.strip() == f"fastrnn {fastrnn.__version__}"
    rc, out, err = cli(capsys, "--help")
    assert rc == 0 and all(c in out for c in ("convert", "info", "run", "bench"))
    for cmd in ("convert", "info", "run", "bench"):
        rc, out, err = cli(capsys, cmd, "--help")
        assert rc == 0 and out.startswith(f"usage: fastrnn {cmd}")
    for argv in (["info"], ["run", paths["ids"]], ["run", paths["ids"], "-i", "x.npy"],
                 ["bench", paths["ids"], "--seconds", "0"], ["bench", paths["ids"], "--seconds", "inf"],
                 ["bench", paths["ids"], "--batch", "0"], ["bench", paths["ids"], "--threads", "x"],
                 ["info", paths["ids"], "--bogus"]):
        rc, out, err = cli(capsys, *argv)
        assert rc == 2 and "usage:" in err and "error:" in err, argv


# ---- the installed console script ----------------------------------------------------------------

def test_console_script(paths, tmp_path):
    exe = shutil.which("fastrnn")
    assert exe, "fastrnn is not on PATH: pip install -e . (pyproject [project.scripts])"
    p = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"fastrnn {fastrnn.__version__}"
    p = subprocess.run([exe, "info", "--json", paths["ids"]], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["params"] == V * E + _rec_params("lstm", E, H) + H * V + V
    p = subprocess.run([exe, "run", paths["ids"], "-i", str(tmp_path / "none.npy"), "-o", str(tmp_path / "y.npy")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.startswith("fastrnn: error: ") and p.stderr.count("\n") == 1
    p = subprocess.run([sys.executable, "-m", "fastrnn", "--version"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == f"fastrnn {fastrnn.__version__}"   # python -m fastrnn


def test_stdout_closed_early(paths):
    """`fastrnn info m.frnn | head -1`: no BrokenPipeError traceback."""
    code = "import sys; from fastrnn.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen([sys.executable, "-c", code, "info", "--json", paths["ids"]],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                                  # before the child writes anything
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.wait(timeout=60) == 141 and err == "", err


def test_npz_output_names_are_free(tmp_path):
    # graph outputs become .npz members by name; numpy.savez(f, **arrays) would reject "file"
    from fastrnn import cli as cli_mod
    arrays = {"file": np.arange(3, dtype=np.float32), "allow_pickle": np.ones((2, 2), np.float32)}
    cli_mod._save_arrays(str(tmp_path / "y.npz"), arrays)
    with np.load(tmp_path / "y.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["allow_pickle", "file"]
        for k, a in arrays.items():
            np.testing.assert_array_equal(z[k], a)
