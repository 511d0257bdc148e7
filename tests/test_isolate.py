"""convert(..., isolate=True) and run_source(..., isolate=True): the parse in a child process
with a time and memory limit (fastrnn/isolate.py). The result must be exactly the in-process
conversion, errors must come back with their class and message, and a parser that crashes,
hangs or runs out of memory must cost a ModelFormatError, never the caller's process."""
import glob
import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import keras  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.converters import run_source  # noqa: E402
from fastrnn.errors import ModelFormatError, UnsupportedError  # noqa: E402

HERE = os.path.dirname(__file__)


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(30, 4)
        self.lstm = torch.nn.LSTM(4, 5, batch_first=True)
        self.fc = torch.nn.Linear(5, 2)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return torch.log_softmax(self.fc(out[:, -1]), -1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("isolate")
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Classifier().eval()), d / "script.pt")
    torch.save(torch.nn.GRU(3, 4, num_layers=2).state_dict(), d / "sd.pt")
    keras.utils.set_random_seed(1)
    km = keras.Sequential([keras.Input((6, 3)), keras.layers.GRU(4, return_sequences=True)])
    km.save(d / "k.keras")
    km.save(d / "k.h5")
    bad = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4), keras.layers.RepeatVector(2),
                            keras.layers.Lambda(lambda t: t * 2)])
    try:
        bad.save(d / "bad.keras")
    except Exception:  # noqa: BLE001 - a Lambda may refuse to serialise; any refused model will do
        bad = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(4), keras.layers.Reshape((2, 2))])
        bad.save(d / "bad.keras")
    return {"script": d / "script.pt", "sd": d / "sd.pt", "keras": d / "k.keras", "h5": d / "k.h5",
            "onnx": os.path.join(HERE, "tf2onnx", "gru_last.onnx"), "bad": d / "bad.keras"}


def _leftovers():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "fastrnn-isolate-*")))


@pytest.mark.parametrize("name", ["script", "sd", "keras", "h5", "onnx"])
def test_isolated_conversion_is_the_in_process_one(files, name, tmp_path):
    before = _leftovers()
    a = fastrnn.convert(str(files[name]))
    b = fastrnn.convert(str(files[name]), isolate=True)
    a.save(tmp_path / "a.frnn")
    b.save(tmp_path / "b.frnn")
    assert (tmp_path / "a.frnn").read_bytes() == (tmp_path / "b.frnn").read_bytes()
    assert _leftovers() == before        # the child's directory is gone, the model lives on
    x = np.random.default_rng(0).integers(1, 30, (2, 6)) if b.input_kind == "ids" else \
        np.random.default_rng(0).normal(size=(2, 6, b.input_size)).astype(np.float32)
    np.testing.assert_array_equal(a.predict(x), b.predict(x))


def test_isolated_run_source_is_the_framework(files):
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype(np.float32)
    for name in ("keras", "sd"):
        want = run_source(str(files[name]), x)
        got = run_source(str(files[name]), x, isolate=True)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_errors_come_back_with_their_class_and_message(files):
    with pytest.raises(UnsupportedError) as inproc:
        fastrnn.convert(str(files["bad"]))
    with pytest.raises(UnsupportedError) as isolated:
        fastrnn.convert(str(files["bad"]), isolate=True)
    assert str(isolated.value) == str(inproc.value)
    with pytest.raises(FileNotFoundError):
        fastrnn.convert(str(files["bad"]) + ".missing", isolate=True)
    with pytest.raises(UnsupportedError, match="head"):
        fastrnn.convert(str(files["sd"]), isolate=True, head="bogus")


def test_in_memory_models_and_stray_options_are_refused():
    with pytest.raises(UnsupportedError, match="isolate=True applies to model files"):
        fastrnn.convert(torch.nn.LSTM(3, 4), isolate=True)
    with pytest.raises(UnsupportedError, match="apply with isolate=True"):
        fastrnn.convert(torch.nn.LSTM(3, 4), isolate_timeout=3)
    with pytest.raises(ValueError, match="isolate_timeout"):
        fastrnn.convert(os.path.join(HERE, "tf2onnx", "gru_last.onnx"), isolate=True, isolate_timeout=-1)


def test_time_limit(files):
    """A child that cannot finish in time is killed (its whole process group) and reported."""
    before = _leftovers()
    with pytest.raises(ModelFormatError, match=r"did not finish within 0.01 s"):
        fastrnn.convert(str(files["script"]), isolate=True, isolate_timeout=0.01)
    assert _leftovers() == before


def test_memory_limit(files):
    """Too little address space for the parser (here: to even load libtorch) is an error that
    says so, whatever part of the parse ran out."""
    with pytest.raises(ModelFormatError, match="memory"):
        fastrnn.convert(str(files["script"]), isolate=True, isolate_memory=300 << 20)


def test_frnn_files_need_no_isolation(files, tmp_path):
    m = fastrnn.convert(str(files["sd"]))
    m.save(tmp_path / "m.frnn")
    assert repr(fastrnn.convert(str(tmp_path / "m.frnn"), isolate=True)) == repr(m)


# ---- real parser crashes and hangs (tests/hostile/README.md) -------------------------------------

HOSTILE = os.path.join(HERE, "hostile")


def _raw_outcome(code, path, timeout):
    """What the bare parser does with the file in its own process: 'signal', 'hang' or 'error'."""
    import subprocess
    import sys
    try:
        p = subprocess.run([sys.executable, "-c", code, path], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hang"
    return "signal" if p.returncode < 0 else "error" if p.returncode else "ok"


def test_a_torchscript_archive_that_segfaults_libtorch():
    path = os.path.join(HOSTILE, "torchscript_segv.pt")
    raw = _raw_outcome("import sys, torch; torch.jit.load(sys.argv[1], map_location='cpu')", path, 120)
    with pytest.raises(ModelFormatError) as e:
        fastrnn.convert(path, isolate=True)
    if raw == "signal":               # this torch crashes on it: the error says so
        assert "crashed (SIGSEGV)" in str(e.value), str(e.value)


def test_an_h5_that_hangs_libhdf5():
    path = os.path.join(HOSTILE, "h5_global_heap_hang.h5")
    raw = _raw_outcome("import sys, h5py; f = h5py.File(sys.argv[1]); f.attrs.get('model_config')", path, 5)
    with pytest.raises(ModelFormatError) as e:
        fastrnn.convert(path, isolate=True, isolate_timeout=5)
    if raw == "hang":
        assert "did not finish within 5 s" in str(e.value), str(e.value)


def test_the_command_line_isolates_by_default(tmp_path):
    """fastrnn-convert on both files: one error line each, exit code 1, no output file."""
    import subprocess
    for name in ("torchscript_segv.pt", "h5_global_heap_hang.h5"):
        out = tmp_path / (name + ".frnn")
        r = subprocess.run(["fastrnn-convert", os.path.join(HOSTILE, name), "-o", str(out), "--timeout", "5"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, (name, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("fastrnn-convert: error:"), r.stderr
        assert not out.exists()
