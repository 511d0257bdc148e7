"""The long fuzz run: inputs start..start+n-1 of each format, in a supervised child process.

    python -m tests.fuzz.run --format onnx --n 100000 [--start 0] [--out results.json]
    python -m tests.fuzz.run --format all --n 1000

The child (`--worker`) mutates and tries inputs in order, one JSON line per input on stdout,
in-process, as a user's program would. The parent reads the lines; when the child dies (a
signal: a crash) or says nothing for --hang seconds (a hang), the input it was on is recorded,
saved under --keep, converted again with isolate=True (the documented way to open such a
file: it must give a FastRNNError, or a model that runs, since libtorch's crashes may depend on
what its process did before), and a new child goes on from the next input. The child runs
under an address-space limit (--memory), as a service would, so an allocation bomb is a
MemoryError, not a machine out of memory (0: no limit, which AddressSanitizer's shadow memory
needs).

The summary (printed, and written to --out as JSON) counts each outcome (tests/fuzz/trial.py),
and lists every ESCAPE, crash and hang with its number and description. Exit status 1 if any
ESCAPE, or any crash or hang that isolation did not turn into a clean error.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import time

FORMATS = ("frnn", "keras", "h5", "onnx", "pt", "ts")


def worker(fmt, start, n, workdir, in_process=False):
    from . import mutate, seeds, trial
    corpus = seeds.load(fmt)
    path = os.path.join(workdir, f"input{seeds.SUFFIX[fmt]}")
    for i in range(start, start + n):
        name, data, desc = mutate.mutate(fmt, corpus, i)
        print(json.dumps({"i": i, "start": True}), flush=True)
        with open(path, "wb") as f:
            f.write(data)
        outcome, msg = trial.trial(fmt, path, seeds.OPTS.get(name), isolate_ts=not in_process)
        print(json.dumps({"i": i, "seed": name, "outcome": outcome, "msg": msg if outcome != "ok" else "",
                          "desc": desc[:300]}), flush=True)


def _limit(memory):
    def f():
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return f


def _recheck(fmt, i, keep, timeout, memory):
    """Input i, which crashed or hung the worker: saved under keep, and converted isolated."""
    from . import mutate, seeds, trial
    import fastrnn
    corpus = seeds.load(fmt)
    name, data, desc = mutate.mutate(fmt, corpus, i)
    os.makedirs(keep, exist_ok=True)
    path = os.path.join(keep, f"{fmt}-{i}{seeds.SUFFIX[fmt]}")
    with open(path, "wb") as f:
        f.write(data)
    try:
        m = fastrnn.convert(path, isolate=True, isolate_timeout=timeout, isolate_memory=memory,
                            **(seeds.OPTS.get(name) or {}))
        trial.exercise(m)           # what converts must run (in this process: the engine is ours)
        isolated = "ok"
    except Exception as e:  # noqa: BLE001
        isolated = trial.classify(e) + f" ({str(e)[:200]})"
    return {"i": i, "seed": name, "desc": desc[:300], "file": path, "isolated": isolated}


def run(fmt, start, n, *, hang=30.0, memory=8 << 30, keep="fuzz-findings", log=None, isolate_timeout=30.0,
        in_process=False):
    counts = collections.Counter()
    bad = []
    i, end = start, start + n
    t0 = time.time()
    last_report = t0
    with tempfile.TemporaryDirectory(prefix="fastrnn-fuzz-") as work:
        while i < end:
            cmd = [sys.executable, "-m", "tests.fuzz.run", "--worker", "--format", fmt, "--start", str(i),
                   "--n", str(end - i), "--workdir", work] + (["--in-process"] if in_process else [])
            err = open(os.path.join(work, "worker.err"), "wb")
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, preexec_fn=_limit(memory),
                                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
            sel = selectors.DefaultSelector()
            sel.register(p.stdout, selectors.EVENT_READ)
            current, buf, died = None, b"", None
            while True:
                if not sel.select(timeout=hang):
                    p.kill()
                    died = "hang"
                    break
                chunk = os.read(p.stdout.fileno(), 1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    rec = json.loads(line)
                    if rec.get("start"):
                        current = rec["i"]
                        continue
                    current = None
                    counts[rec["outcome"]] += 1
                    if rec["outcome"].startswith("ESCAPE"):
                        bad.append(rec)
                    if log:
                        log.write(line.decode() + "\n")
                    i = rec["i"] + 1
            rc = p.wait()
            sel.close()
            err.close()
            if current is not None:          # the child stopped inside an input
                kind = died or (f"signal {-rc}" if rc < 0 else f"exit {rc}")
                counts["crash" if kind != "hang" else "hang"] += 1
                rec = {"outcome": kind, **_recheck(fmt, current, keep, isolate_timeout, memory)}
                bad.append(rec)
                print(f"  {fmt} #{current}: {kind}; isolated: {rec['isolated']}", flush=True)
                i = current + 1
            elif rc != 0 and i < end:
                with open(os.path.join(work, "worker.err"), errors="replace") as f:
                    tail = f.read()[-3000:]
                raise RuntimeError(f"fuzz worker exited {rc} between inputs (at {i}):\n{tail}")
            if time.time() - last_report > 60:
                last_report = time.time()
                print(f"  {fmt}: {i - start}/{n} in {last_report - t0:.0f} s", flush=True)
    return {"format": fmt, "start": start, "n": n, "seconds": round(time.time() - t0, 1),
            "outcomes": dict(counts.most_common()), "findings": bad}


def failed(summary):
    """An exception other than FastRNNError, in the worker or in the isolated re-check of a
    crash or hang (which must end in a FastRNNError, or convert and run: a parser whose crash
    depends on what the process did before, as libtorch's may)."""
    return any(b["outcome"].startswith("ESCAPE") or str(b.get("isolated", "")).startswith("ESCAPE")
               for b in summary["findings"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", default="all", choices=FORMATS + ("all",))
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--hang", type=float, default=30.0, help="seconds without progress that make a hang")
    ap.add_argument("--isolate-timeout", type=float, default=30.0,
                    help="isolate_timeout of the isolated re-check of a crash or hang")
    ap.add_argument("--memory", type=int, default=8 << 30,
                    help="the child's address-space limit, bytes (0: none; a sanitizer build needs none)")
    ap.add_argument("--keep", default="fuzz-findings", help="where inputs that crash or hang are saved")
    ap.add_argument("--out", help="write the summary here (JSON)")
    ap.add_argument("--log", help="append every outcome here (JSON lines)")
    ap.add_argument("--in-process", action="store_true",
                    help="TorchScript in the worker's own process too (it is isolated by default: libtorch "
                         "crashes on some damaged archives, which the supervisor then records)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.format, a.start, a.n, a.workdir, a.in_process)
        return 0
    os.environ.setdefault("KERAS_BACKEND", "torch")
    log = open(a.log, "a") if a.log else None
    summaries = []
    for fmt in (FORMATS if a.format == "all" else (a.format,)):
        s = run(fmt, a.start, a.n, hang=a.hang, memory=a.memory, keep=a.keep, log=log,
                isolate_timeout=a.isolate_timeout, in_process=a.in_process)
        summaries.append(s)
        print(json.dumps({k: v for k, v in s.items() if k != "findings"}), flush=True)
        for b in s["findings"]:
            print("   ", json.dumps(b)[:400], flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(summaries, f, indent=1)
    return 1 if any(failed(s) for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
