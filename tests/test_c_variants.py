"""Every kernel variant in one process, from C: tests/c/test_variants.c built against the engine's
sources with the package's own flags (setup.py: -O3, the ISA files raising their own target),
run once; it walks each ISA this CPU runs x each weight precision x sizes at the tile edges,
through Dense (GEMM) and RNN / LSTM / GRU layers (step kernels), against a float64 reference
and for batch invariance (its header says what and why)."""
import glob
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["-O3", "-std=gnu11", "-Wall", "-Wextra"] + (["-Werror"] if os.environ.get("FASTRNN_WERROR") == "1" else [])


@pytest.mark.skipif(not shutil.which("gcc") or sys.platform != "linux", reason="builds with gcc on Linux")
def test_every_variant_against_float64(tmp_path):
    srcs = sorted(glob.glob(os.path.join(ROOT, "src_c", "*.c")))
    for fam in ("gemm", "act", "rec"):
        srcs += sorted(glob.glob(os.path.join(ROOT, "src_c", fam, "*.c")))
    srcs.append(os.path.join(ROOT, "tests", "c", "test_variants.c"))

    def compile_one(src):
        obj = tmp_path / (os.path.relpath(src, ROOT).replace(os.sep, "_") + ".o")
        r = subprocess.run(["gcc", *FLAGS, "-I", os.path.join(ROOT, "src_c"), "-c", src, "-o", str(obj)],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{src}:\n{r.stderr}"
        return str(obj)

    with ThreadPoolExecutor(os.cpu_count() or 2) as ex:
        objs = list(ex.map(compile_one, srcs))
    exe = tmp_path / "test_variants"
    r = subprocess.run(["gcc", *objs, "-o", str(exe), "-lm", "-lpthread"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if k != "FASTRNN_ISA"}
    r = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=600)
    print(r.stdout[-3000:])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr
    assert " 0 failures" in r.stdout.splitlines()[-1]
