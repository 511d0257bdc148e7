"""Parsing a model file from a stranger in a child process: convert(..., isolate=True).

Why: fastrnn's own readers (.frnn, and the JSON/zip/shape checks of the converters) validate
everything, but converting a Keras, TorchScript or ONNX file also runs third-party parsers that
are not memory-safe on hostile input: libhdf5 (through h5py) can spin forever on a damaged
attribute, libtorch aborts or segfaults on damaged TorchScript archives. Such a file must cost
a clean error, not the caller's process.

How: the parse (convert, or for --check the source framework's own run) runs in a fresh Python
process (`python -m fastrnn.isolate WORKDIR`, never fork: the parent may hold threads and
locks) with
  - a wall-clock limit (timeout, default DEFAULT_TIMEOUT s): the child's whole process group is
    killed when it expires;
  - an address-space limit (memory, default DEFAULT_MEMORY bytes; RLIMIT_AS), so an allocation
    bomb fails inside the child with MemoryError;
  - no core dumps (RLIMIT_CORE 0).
Nothing executable crosses back: the request is JSON plus arrays in an .npz (allow_pickle=False);
the answer is JSON plus a .frnn file, which the parent reads with its validating loader into
memory (the model does not depend on the temporary file), or arrays in an .npz. A child killed by
a signal, out of time or out of memory gives ModelFormatError saying which; a FastRNNError (or
FileNotFoundError) raised in the child is raised again in the parent with its class and message.

What it is not: a sandbox. The child runs as the same user with the same files; a parser exploit
that executes code could do what the user can. Isolation turns crashes, hangs and memory
exhaustion into errors (docs/security.md has the trust model per format).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import numpy as np

from .errors import FastRNNError, ModelFormatError, ShapeError, UnsupportedError

DEFAULT_TIMEOUT = 300.0          # seconds: a real model converts in a few
DEFAULT_MEMORY = 8 << 30         # bytes of address space (importing torch takes ~0.7 GiB)
_ERRORS = {c.__name__: c for c in (FastRNNError, ModelFormatError, UnsupportedError, ShapeError,
                                   FileNotFoundError)}


def _set_limits(memory):
    """In the child, first thing: no core dumps, and the address-space limit (before any large
    import, so the limit holds for everything the parse does)."""
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory:
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _check_limits(timeout, memory):
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if memory is None:
        memory = DEFAULT_MEMORY
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"isolate_timeout must be a positive number of seconds, got {timeout!r}")
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 0:
        raise ValueError(f"isolate_memory must be a number of bytes (0: no limit), got {memory!r}")
    return float(timeout), memory


def _call(task, request, arrays, src, timeout, memory):
    """Run `task` in a child; -> (result dict, workdir with its files). The caller removes the
    workdir."""
    timeout, memory = _check_limits(timeout, memory)
    try:
        req = json.dumps({"task": task, "memory": memory, **request})
    except (TypeError, ValueError) as e:
        raise UnsupportedError(f"isolate: options that are not plain values cannot reach the child process "
                               f"({e}); convert in-process (isolate=False) to pass them") from None
    work = tempfile.mkdtemp(prefix="fastrnn-isolate-")
    try:
        with open(os.path.join(work, "request.json"), "w") as f:
            f.write(req)
        if arrays:
            np.savez(os.path.join(work, "in.npz"), **arrays)
        env = dict(os.environ)
        env.setdefault("KERAS_BACKEND", "torch")
        cmd = [sys.executable, "-m", "fastrnn.isolate", work]
        try:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as e:
            raise FastRNNError(f"isolate: cannot start a child process ({e})") from None
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(p)
            raise ModelFormatError(
                f"{src}: reading the file did not finish within {timeout:g} s (isolate_timeout); a damaged "
                f"or hostile file can make a parser loop forever") from None
        except BaseException:
            _kill(p)
            raise
        result_path = os.path.join(work, "result.json")
        if p.returncode != 0 or not os.path.exists(result_path):
            raise ModelFormatError(_died(src, p.returncode, err, memory))
        with open(result_path) as f:
            result = json.load(f)
        if "error" in result:
            cls = _ERRORS.get(result["error"])
            msg = result.get("message", "")
            if result["error"] == "MemoryError":
                raise ModelFormatError(f"{src}: reading the file needs more than the {memory} bytes of memory "
                                       f"isolation allows (isolate_memory)")
            if cls is None:
                raise ModelFormatError(f"{src}: {result['error']}: {msg}")
            raise cls(msg)
        return result, work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _kill(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait()


def _died(src, rc, err, memory):
    tail = (err or b"").decode(errors="replace").strip().splitlines()
    last = tail[-1][:300] if tail else ""
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return (f"{src}: the parser crashed ({name}) reading the file: it is damaged or hostile"
                + (f" (last message: {last})" if last else ""))
    if "MemoryError" in last or "bad_alloc" in last or "Cannot allocate memory" in last:
        return (f"{src}: reading the file needs more than the {memory} bytes of memory isolation "
                f"allows (isolate_memory)")
    return f"{src}: the isolated parser exited with status {rc}" + (f": {last}" if last else "")


def convert(src, opts, timeout=None, memory=None):
    """fastrnn.convert(src, **opts) in a child process -> Model (module note)."""
    from .fileformat import load
    result, work = _call("convert", {"src": os.fspath(src), "opts": opts}, None, src, timeout, memory)
    try:
        with open(os.path.join(work, "model.frnn"), "rb") as f:
            data = f.read()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load(data)


def run_source(src, x, opts, timeout=None, memory=None):
    """converters.run_source(src, x, **opts) in a child process -> list of arrays. x: an array
    (batch-major input) or a dict of named feeds (an ONNX graph's)."""
    arrays = {f"feed/{k}": v for k, v in x.items()} if isinstance(x, dict) else {"x": x}
    result, work = _call("run_source", {"src": os.fspath(src), "opts": opts, "feeds": isinstance(x, dict)},
                         arrays, src, timeout, memory)
    try:
        with np.load(os.path.join(work, "out.npz"), allow_pickle=False) as z:
            return [z[f"out_{i}"] for i in range(result["outputs"])]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _child(work):
    """The child's side: do the request in WORK, write result.json (and model.frnn / out.npz)."""
    with open(os.path.join(work, "request.json")) as f:
        req = json.load(f)
    _set_limits(req["memory"])
    try:
        if req["task"] == "convert":
            from .converters import convert
            convert(req["src"], **req["opts"]).save(os.path.join(work, "model.frnn"))
            result = {"ok": True}
        else:
            from .converters import run_source
            with np.load(os.path.join(work, "in.npz"), allow_pickle=False) as z:
                x = ({k.split("/", 1)[1]: z[k] for k in z.files} if req["feeds"] else z["x"])
            outs = run_source(req["src"], x, **req["opts"])
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            np.savez(os.path.join(work, "out.npz"), **{f"out_{i}": np.asarray(o) for i, o in enumerate(outs)})
            result = {"ok": True, "outputs": len(outs)}
    except MemoryError:
        result = {"error": "MemoryError", "message": "out of memory"}
    except Exception as e:  # noqa: BLE001 - every failure goes back to the parent as data
        name = type(e).__name__ if type(e).__name__ in _ERRORS else None
        for cls in type(e).__mro__:            # a subclass of ours travels as the class we know
            if cls.__name__ in _ERRORS and name is None:
                name = cls.__name__
        result = {"error": name or type(e).__name__, "message": str(e) if name else f"{e}"}
    with open(os.path.join(work, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    _child(sys.argv[1])
