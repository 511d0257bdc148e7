"""Build: the C kernels (src_c/) as a static library with our own strict flags, then the Cython
extension fastrnn._engine over it.

The default build is portable (baseline x86-64): ISA instructions appear only in the ISA files,
which raise their own target with `#pragma GCC target`, and run only after CPUID said so.
Environment:
  FASTRNN_WERROR=1   -Werror on our C (CI sets it; -Wall -Wextra are always on)
  FASTRNN_NATIVE=1   add -march=native to the kernels (opt-in; the result runs only on this CPU)
  FASTRNN_SANITIZE=address,undefined | thread
                     build C and Cython with those sanitizers (-O1 -g; tests/sanitize.sh builds
                     such a copy aside and runs tests under it: see docs/security.md)
"""
import glob
import os
import platform

import numpy as np
from setuptools import Extension, setup

X86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")

c_sources = sorted(glob.glob("src_c/*.c"))
for fam in ("gemm", "act", "rec"):
    c_sources += [f"src_c/{fam}/scalar.c"]
    if X86:
        c_sources += [f"src_c/{fam}/avx2.c", f"src_c/{fam}/avx512.c", f"src_c/{fam}/avx512_vnni.c"]

cflags = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-fvisibility=hidden"]
if os.environ.get("FASTRNN_WERROR") == "1":
    cflags.append("-Werror")
if os.environ.get("FASTRNN_NATIVE") == "1":
    cflags.append("-march=native")
if not X86:
    cflags.append("-DFRNN_NO_X86")
ext_cflags, ext_lflags = ["-O2"], ["-lpthread"]
sanitize = os.environ.get("FASTRNN_SANITIZE", "").strip()
if sanitize:
    san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g", "-O1"]
    if "undefined" in sanitize:
        san.append("-fno-sanitize-recover=undefined")   # a UB report fails the run
    cflags = [f for f in cflags if f != "-O3"] + san
    ext_cflags, ext_lflags = san, ext_lflags + [f"-fsanitize={sanitize}"]

setup(
    packages=["fastrnn", "fastrnn.converters", "fastrnn.converters.frontends"],
    package_dir={"fastrnn": "fastrnn", "fastrnn.converters": "converters",
                 "fastrnn.converters.frontends": "converters/frontends"},
    libraries=[("fastrnn_c", {"sources": c_sources, "include_dirs": ["src_c"], "cflags": cflags})],
    ext_modules=[Extension(
        "fastrnn._engine",
        sources=["fastrnn/_engine.pyx"],
        include_dirs=["src_c", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=ext_cflags,
        libraries=["fastrnn_c"],
        extra_link_args=ext_lflags,
    )],
)
