"""fastrnn-convert (fastrnn/cli.py): the installed console script end to end, and convert_main
in-process: output names, --check (agreement, FAIL, the source framework missing), and errors
reported as one `fastrnn-convert: error:` line with exit code 1.

Keras 3 (torch backend) builds the source models once per module; it cannot load the Keras 2
fixtures that carry time_major, so the --check success paths use these."""
import os

os.environ["KERAS_BACKEND"] = "torch"   # before anything imports keras

import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastrnn
import fastrnn.converters
from fastrnn import ir
from fastrnn.cli import _default_output, _random_input, convert_main

# Keras 3's own numpy-2 deprecation noise (set_weights, predict), not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CHECK_RE = re.compile(r"^check: max abs difference (\S+) over (\d+) outputs? \(batch (\d+), (\d+) steps\): (.*)$",
                      re.M)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Keras 3 model files with random weights: {name: path}."""
    keras = pytest.importorskip("keras")
    d = tmp_path_factory.mktemp("cli_models")
    rng = np.random.default_rng(0)

    def rnd(m):
        m.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in m.get_weights()])
        return m

    L = keras.layers
    paths = {}
    ids = rnd(keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(100, 8), L.LSTM(8),
                                L.Dense(1, activation="sigmoid")]))
    paths["ids_keras"] = d / "ids.keras"
    ids.save(paths["ids_keras"])
    paths["ids_h5"] = d / "ids.h5"
    ids.save(paths["ids_h5"])
    mask = rnd(keras.Sequential([keras.Input((None,), dtype="int32"), L.Embedding(50, 6, mask_zero=True),
                                 L.GRU(5, return_sequences=True)]))
    paths["mask_h5"] = d / "mask.h5"
    mask.save(paths["mask_h5"])
    i = keras.Input((None, 4))
    y, h, c = L.LSTM(6, return_sequences=True, return_state=True)(i)
    paths["multi"] = d / "multi.keras"
    rnd(keras.Model(i, [y, h, c])).save(paths["multi"])
    conv = rnd(keras.Sequential([keras.Input((10, 4)), L.LayerNormalization(rms_scaling=True, name="my_norm"), L.LSTM(4)]))
    paths["conv"] = d / "conv.keras"
    conv.save(paths["conv"])
    return {k: str(v) for k, v in paths.items()}


def run(capsys, *argv):
    capsys.readouterr()                       # drop anything printed before (e.g. fixture setup)
    rc = convert_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err, *needles):
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fastrnn-convert: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], err


def check_line(out):
    m = CHECK_RE.search(out)
    assert m, out
    return float(m.group(1)), int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5)


def _as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


# ---- the installed console script --------------------------------------------------------------

def test_console_script_end_to_end(models, tmp_path):
    exe = shutil.which("fastrnn-convert")
    assert exe, "fastrnn-convert is not on PATH: pip install -e . (pyproject [project.scripts])"
    out = tmp_path / "lstm.frnn"
    p = subprocess.run([exe, models["ids_keras"], "-o", str(out), "--check"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith(f"wrote {out}: fastrnn.Model([Embedding(100, 8), LSTM(8->8), Dense(8->1, sigmoid)]")
    diff, n, batch, steps, verdict = check_line(p.stdout)
    assert diff <= 1e-5 and n == 1 and (batch, steps) == (3, 16) and verdict == "ok"
    x = np.random.default_rng(5).integers(0, 100, (4, 11))
    np.testing.assert_array_equal(fastrnn.load(out).predict(x), fastrnn.convert(models["ids_keras"]).predict(x))


# ---- convert_main in-process ---------------------------------------------------------------------

def test_default_output_name(models, tmp_path, capsys):
    src = tmp_path / "my.model.keras"
    shutil.copy(models["ids_keras"], src)
    rc, out, err = run(capsys, src)
    assert rc == 0, err
    want = tmp_path / "my.model.frnn"
    assert out == f"wrote {want}: {fastrnn.load(want)!r}\n"
    assert _default_output("dir.v2/model") == "dir.v2/model.frnn"


def test_output_option_and_multi_output(models, tmp_path, capsys):
    out_path = tmp_path / "sub" / "x.frnn"
    out_path.parent.mkdir()
    rc, out, err = run(capsys, models["multi"], "-o", out_path, "--check", "--batch", 2, "--steps", 5)
    assert rc == 0, out + err
    assert out.splitlines()[0].endswith("(3 outputs)")
    m = fastrnn.load(out_path)
    assert m.num_outputs == 3 and not os.path.exists(os.path.splitext(models["multi"])[0] + ".frnn")
    diff, n, batch, steps, verdict = check_line(out)
    assert diff <= 1e-5 and n == 3 and (batch, steps) == (2, 5) and verdict == "ok"


@pytest.mark.parametrize("name", ["ids_h5", "mask_h5"])
def test_check_h5_from_keras3(models, tmp_path, capsys, name):
    rc, out, err = run(capsys, models[name], "-o", tmp_path / "m.frnn", "--check")
    assert rc == 0, out + err
    diff, n, batch, steps, verdict = check_line(out)
    assert diff <= 1e-5 and verdict == "ok" and (n, batch, steps) == (1, 3, 16)


@pytest.mark.parametrize("name,n", [("emb_lstm_sigmoid", 1), ("bilstm_dense", 1), ("lstm_states", 3)])
def test_check_onnx(tmp_path, capsys, name, n):
    """--check of tf2onnx exports against onnxruntime: int32 ids (the graph's own type), the
    graph's static time steps, every output."""
    pytest.importorskip("onnxruntime")
    src = os.path.join(os.path.dirname(__file__), "tf2onnx", name + ".onnx")
    rc, out, err = run(capsys, src, "-o", tmp_path / "m.frnn", "--check")
    assert rc == 0, out + err
    diff, outs, batch, steps, verdict = check_line(out)
    assert diff <= 1e-5 and verdict == "ok" and outs == n and steps == 7


def test_check_fails_on_a_difference(models, tmp_path, capsys, monkeypatch):
    def off(src, x, **opts):
        return [y + np.float32(1e-3) for y in _as_list(fastrnn.convert(src).predict(x))]
    monkeypatch.setattr(fastrnn.converters, "run_source", off)
    rc, out, err = run(capsys, models["multi"], "-o", tmp_path / "m.frnn", "--check")
    assert rc == 1
    diff, n, _, _, verdict = check_line(out)
    assert abs(diff - 1e-3) < 1e-5 and n == 3 and verdict.startswith("FAIL")
    # ... and passes when the tolerance allows it
    rc, out, err = run(capsys, models["multi"], "-o", tmp_path / "m.frnn", "--check", "--tolerance", "2e-3")
    assert rc == 0 and check_line(out)[4] == "ok"


def test_check_fails_on_output_count_or_shape(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fastrnn.converters, "run_source",
                        lambda src, x, **opts: _as_list(fastrnn.convert(src).predict(x))[:2])
    rc, out, err = run(capsys, models["multi"], "-o", tmp_path / "m.frnn", "--check")
    assert rc == 1 and "FAIL" in out and "3 outputs" in out and "gives 2" in out
    monkeypatch.setattr(fastrnn.converters, "run_source",
                        lambda src, x, **opts: [y[:, :1] for y in _as_list(fastrnn.convert(src).predict(x))])
    rc, out, err = run(capsys, models["multi"], "-o", tmp_path / "m.frnn", "--check")
    assert rc == 1 and "FAIL" in out and "shape" in out


def test_check_when_source_framework_unavailable(models, tmp_path, capsys, monkeypatch):
    def missing(src, x, **opts):
        raise fastrnn.UnsupportedError("Keras is not installed (pip install keras)")
    monkeypatch.setattr(fastrnn.converters, "run_source", missing)
    rc, out, err = run(capsys, models["ids_keras"], "-o", tmp_path / "m.frnn", "--check")
    assert rc == 1
    assert out.startswith("wrote ")                    # the conversion itself succeeded
    assert_one_error_line(err, "Keras is not installed")


def test_check_when_source_framework_crashes(models, tmp_path, capsys, monkeypatch):
    def crash(src, x, **opts):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(fastrnn.converters, "run_source", crash)
    rc, out, err = run(capsys, models["ids_keras"], "-o", tmp_path / "m.frnn", "--check")
    assert rc == 1
    assert_one_error_line(err, "RuntimeError", "boom")


def test_check_input_generation():
    rng = np.random.default_rng(0)
    emb = ir.Embedding(rng.standard_normal((7, 3)).astype(np.float32), mask_zero=True)
    m = fastrnn.Model([emb, ir.Recurrent("gru", [{"W_ih": np.zeros((9, 3), np.float32),
                                                   "W_hh": np.zeros((9, 3), np.float32)}])])
    x = _random_input(m, 5, 10, seed=0)
    assert x.dtype == np.int64 and x.shape == (5, 10)
    assert (x[0] >= 1).all() and x.max() < 7
    for row in x[1:]:                                   # right-padded with 1..steps//2 zeros
        k = int((row == 0).sum())
        assert 1 <= k <= 5 and (row[10 - k:] == 0).all() and (row[:10 - k] >= 1).all()
    np.testing.assert_array_equal(x, _random_input(m, 5, 10, seed=0))
    mf = fastrnn.Model([ir.Recurrent("rnn", [{"W_ih": np.zeros((2, 4), np.float32),
                                              "W_hh": np.zeros((2, 2), np.float32)}])])
    xf = _random_input(mf, 2, 3, seed=1)
    assert xf.dtype == np.float32 and xf.shape == (2, 3, 4)


# ---- errors: one line, exit 1 --------------------------------------------------------------------

def test_random_bytes(tmp_path, capsys):
    src = tmp_path / "junk.keras"
    src.write_bytes(np.random.default_rng(0).bytes(4096))
    rc, out, err = run(capsys, src)
    assert rc == 1 and out == ""
    assert_one_error_line(err, "junk.keras")
    assert not (tmp_path / "junk.frnn").exists()


@pytest.mark.parametrize("frac", [0.1, 0.5, 0.9])
def test_truncated_h5(models, tmp_path, capsys, frac):
    data = open(models["ids_h5"], "rb").read()
    src = tmp_path / "cut.h5"
    src.write_bytes(data[:int(len(data) * frac)])
    rc, out, err = run(capsys, src)
    assert rc == 1 and out == ""
    assert_one_error_line(err)


def test_missing_file(tmp_path, capsys):
    rc, out, err = run(capsys, tmp_path / "nope.keras")
    assert rc == 1
    assert_one_error_line(err, "nope.keras")


def test_directory_and_unwritable_output(models, tmp_path, capsys):
    rc, out, err = run(capsys, tmp_path)
    assert rc == 1
    assert_one_error_line(err)
    rc, out, err = run(capsys, models["ids_keras"], "-o", tmp_path / "no" / "such" / "dir.frnn")
    assert rc == 1
    assert_one_error_line(err, "dir.frnn")


def test_unsupported_layer(models, tmp_path, capsys):
    rc, out, err = run(capsys, models["conv"], "-o", tmp_path / "c.frnn")
    assert rc == 1
    assert_one_error_line(err, "my_norm", "LayerNormalization")
    assert not (tmp_path / "c.frnn").exists()


def test_usage_errors(capsys):
    rc, out, err = run(capsys)
    assert rc == 2 and "usage:" in err
    rc, out, err = run(capsys, "x.keras", "--batch", "0")
    assert rc == 2 and "--batch" in err
    rc, out, err = run(capsys, "--version")
    assert rc == 0 and fastrnn.__version__ in out


def test_keyboard_interrupt(models, tmp_path, capsys, monkeypatch):
    def interrupted(src, **opts):
        raise KeyboardInterrupt
    monkeypatch.setattr(fastrnn, "convert", interrupted)
    rc, out, err = run(capsys, models["ids_keras"], "-o", tmp_path / "m.frnn")
    assert rc == 130 and err == ""


def test_allow_pickle_is_passed_only_when_given(models, tmp_path, capsys, monkeypatch):
    seen = []
    real = fastrnn.convert
    monkeypatch.setattr(fastrnn, "convert", lambda src, **opts: seen.append(opts) or real(src))
    assert run(capsys, models["ids_keras"], "-o", tmp_path / "a.frnn")[0] == 0
    assert run(capsys, models["ids_keras"], "-o", tmp_path / "b.frnn", "--allow-pickle")[0] == 0
    assert run(capsys, models["ids_keras"], "-o", tmp_path / "c.frnn", "--no-isolate")[0] == 0
    assert seen == [{"isolate": True}, {"allow_pickle": True, "isolate": True}, {}]


def test_isolation_options_reach_convert(models, tmp_path, capsys, monkeypatch):
    seen = []
    real = fastrnn.convert
    monkeypatch.setattr(fastrnn, "convert", lambda src, **opts: seen.append(opts) or real(src))
    assert run(capsys, models["ids_keras"], "-o", tmp_path / "a.frnn", "--timeout", "30",
               "--memory-limit", "4G")[0] == 0
    assert seen == [{"isolate": True, "isolate_timeout": 30.0, "isolate_memory": 4 << 30}]
    rc, _, err = run(capsys, models["ids_keras"], "--no-isolate", "--timeout", "30")
    assert rc == 1 and "apply with --isolate" in err
    rc, _, err = run(capsys, models["ids_keras"], "--memory-limit", "lots")
    assert rc == 2 and "size" in err


def test_isolated_cli_turns_a_parser_failure_into_one_error_line(models, tmp_path, capsys):
    """The default (isolated) command on a file its parser cannot finish in time: one line."""
    rc, out, err = run(capsys, models["ids_keras"], "-o", tmp_path / "a.frnn", "--timeout", "0.01")
    assert rc == 1 and out == "" and err.count("\n") == 1 and "did not finish within 0.01 s" in err
    assert not (tmp_path / "a.frnn").exists()


def test_python_dash_m(models, tmp_path):
    p = subprocess.run([sys.executable, "-m", "fastrnn.cli", str(tmp_path / "missing.h5")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
