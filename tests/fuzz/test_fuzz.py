"""The short fuzz budget of every test run: inputs 0..FASTRNN_FUZZ_N-1 (default 300) of each
format through tests/fuzz/run.py's supervised worker. Nothing but FastRNNError may escape, and
a crash or hang (libhdf5 loops on some damaged files, see docs/security.md) must become a clean
error under isolate=True. The inputs are the same on every run and machine: a failure here names
its input number, which `python -m tests.fuzz.run --format F --start N --n 1` reproduces.

The long run (docs/security.md has its figures) is the same code with a larger --n. The
malicious files made by hand (external HDF5 storage, pickles, zip and shape bombs, the
TorchScript segfault, the HDF5 hang) are regression tests in tests/test_hostile.py and
tests/test_isolate.py.
"""
import os

import pytest

from tests.fuzz import run

N = int(os.environ.get("FASTRNN_FUZZ_N", "300"))
MEMORY = 0 if os.environ.get("FASTRNN_SANITIZED") else 8 << 30    # ASan needs no address-space limit


def _check(summary):
    outcomes = summary["outcomes"]
    escapes = [f for f in summary["findings"] if f["outcome"].startswith("ESCAPE")]
    assert not escapes, f"exceptions other than FastRNNError: {escapes}"
    assert not run.failed(summary), f"a crash or hang that isolation did not turn into an error: {summary['findings']}"
    assert sum(outcomes.values()) == summary["n"], outcomes


@pytest.mark.parametrize("fmt", ["frnn", "keras", "h5", "onnx", "pt"])
def test_fuzz_in_process(fmt, tmp_path):
    pytest.importorskip("torch" if fmt == "pt" else "onnx" if fmt == "onnx" else "numpy")
    s = run.run(fmt, 0, N, hang=10.0, isolate_timeout=10.0, memory=MEMORY, keep=str(tmp_path / "findings"))
    _check(s)
    # the mutators reach both sides: some inputs still convert and run, most are refused
    refused = sum(v for k, v in s["outcomes"].items() if k not in ("ok", "hang", "crash"))
    assert s["outcomes"].get("ok", 0) >= N // 50 and refused >= N // 3, s["outcomes"]


def test_fuzz_torchscript_isolated(tmp_path):
    """TorchScript is parsed by libtorch, which may crash on a damaged archive: only isolated."""
    pytest.importorskip("torch")
    s = run.run("ts", 0, max(4, N // 40), hang=60.0, isolate_timeout=30.0, memory=MEMORY, keep=str(tmp_path / "findings"))
    _check(s)
