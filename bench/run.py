#!/usr/bin/env python
"""Time fastrnn against torch, onnxruntime, openvino and TFLite in one process, same weights, same
inputs.

For every workload (bench/workloads.py) and thread count, each engine is built from one set of
weights; every output is checked against the baseline (fastrnn at the first thread count; torch
when fastrnn cannot run) on the timed input, max |diff| <= 1e-4, and the baseline itself against
fastrnn's float64 reference on a short prefix, BEFORE anything is timed. Then each column is warmed
up and repeated; the table gives the median and the spread (IQR / median), and the ratio columns
fastrnn / peer (below 1: fastrnn faster). A peer that is not installed or fails on a workload is
reported as n/a with the reason; it never stops the run. See bench/README.md.

    python bench/run.py [--quick] [--only NAME[,NAME]] [--threads 1,2] [--json PATH]
"""
from __future__ import annotations

import argparse
import fnmatch
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import sys
import time
import types
from pathlib import Path

# NumPy's BLAS threads (only the float64 reference check uses them) spin after each call and
# would take the second core from whichever engine runs next at 2 threads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402

import engines as E
import workloads as W

TOL = 1e-4                 # max |diff| allowed between any engine and the baseline
CHECK_STEPS = 100          # stream steps compared (from a fresh state)
REF_T = 16                 # time steps of the float64 reference check (it is slow)
ROUNDS = 8                 # measure(): each engine's timed reps come in this many interleaved slices,
WARM_REP_MAX_S = 0.1       # each after an untimed rep when a rep is shorter than this
TIMING = {                 # warm-up: >= warm_s seconds and >= 1 rep; then reps to fill budget_s,
    "full": dict(warm_s=0.5, budget_s=3.0, min_reps=5, max_reps=300),     # within min/max reps
    "quick": dict(warm_s=0.1, budget_s=0.4, min_reps=3, max_reps=50),
}
SHORT = {"fastrnn": "fastrnn", "torch": "torch", "torch-nodnn": "tnd", "onnxruntime": "ort",
         "openvino": "ov", "tflite": "tfl", "fastrnn-bf16": "fr16", "fastrnn-int8": "fr8",
         "torch-int8": "t8", "onnxruntime-int8": "ort8", "openvino-bf16": "ov16"}
# the short names are accepted by --peers too; "reduced" names every reduced-precision column
REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- imports

def import_fastrnn():
    if importlib.util.find_spec("fastrnn") is None:
        sys.path.append(str(REPO))              # the source tree, when fastrnn is not installed
    try:
        import fastrnn
        from fastrnn import ir, reference
    except Exception as e:  # noqa: BLE001 - whatever the cause, the engine cannot run
        raise SystemExit(_no_fastrnn(f"{type(e).__name__}: {e}"))
    if not hasattr(fastrnn, "Model"):
        raise SystemExit(_no_fastrnn(f"{fastrnn.__file__} has no fastrnn.Model"))
    return fastrnn, ir, reference


def _no_fastrnn(why):
    return (f"bench: cannot use fastrnn ({why}).\n"
            "Build and install it first (pip install -e .), or run with --peers-only to check the "
            "peers against torch and the float64 reference and time them alone.")


def import_spec_modules():
    """fastrnn.ir and fastrnn.reference without the engine (--peers-only): import them normally,
    or, when the package cannot import (extension not built), load the two files by path."""
    if importlib.util.find_spec("fastrnn") is None:
        sys.path.append(str(REPO))
    try:
        from fastrnn import ir, reference
        return ir, reference
    except Exception:  # noqa: BLE001
        for k in [k for k in sys.modules if k == "fastrnn" or k.startswith("fastrnn.")]:
            del sys.modules[k]
        pkg = types.ModuleType("fastrnn")
        pkg.__path__ = [str(REPO / "fastrnn")]   # a bare package: its __init__ is not run
        sys.modules["fastrnn"] = pkg
        return importlib.import_module("fastrnn.ir"), importlib.import_module("fastrnn.reference")


def detect_peers(wanted):
    """({package: version} of the peers that import, {peer: reason} for the others)."""
    ok, missing = {}, {}
    for name in wanted:
        pkg = E.MODULE.get(name, name)
        try:
            ok[pkg] = importlib.import_module(pkg).__version__
        except Exception as e:  # noqa: BLE001
            missing[name] = f"{type(e).__name__}: {e}"
    return ok, missing


def machine_info(fastrnn):
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if fastrnn is not None:
        info["fastrnn_cpu_info"] = fastrnn.cpu_info()
    info["env"] = {k: v for k, v in os.environ.items()
                   if k.startswith(("FASTRNN_", "OMP_", "MKL_", "OPENBLAS_"))}
    return info


def versions(fastrnn, peers):
    v = {"numpy": np.__version__, **peers}
    if fastrnn is not None:
        v["fastrnn"] = getattr(fastrnn, "__version__", "?")
    try:
        import onnx
        v["onnx"] = onnx.__version__
    except ImportError:
        pass
    if "ai_edge_litert" in peers:       # what makes the .tflite files (its own virtualenv)
        tfc = E.tflite_convert
        v["tflite converter"] = tfc.TF_PYTHON or " ".join(tfc.TF_REQUIREMENTS)
    return v


# ---------------------------------------------------------------- one workload

def reason(e):
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:200] if msg else ''}"


def build_columns(ctx, engine_names, threads, fastrnn):
    cols, failed = [], []
    for n in threads:
        for name in engine_names:
            try:
                col = (E.fastrnn_column(fastrnn, ctx, n) if name == "fastrnn"
                       else E.BUILDERS[name](ctx, n))
                cols.append(col)
            except Exception as e:  # noqa: BLE001 - a peer failing is a result, not a crash
                failed.append(dict(engine=name, threads=n, status="n/a", reason=reason(e)))
    return cols, failed


def check(ctx, cols, x_check, reference):
    """Outputs of every column on x_check; diffs vs the baseline; the baseline vs the reference.
    Returns ({id(col): result dict}, baseline description)."""
    res, outs = {}, {}
    for col in cols:
        try:
            col.enter()
            outs[id(col)] = np.asarray(col.output(col.prep(x_check)), dtype=np.float64)
        except Exception as e:  # noqa: BLE001
            res[id(col)] = dict(status="error", reason=reason(e))
    base = next((c for eng in ("fastrnn", "torch") for c in cols
                 if c.engine == eng and id(c) in outs), None)
    if base is None:
        for col in cols:
            res.setdefault(id(col), dict(status="unchecked", reason="no baseline engine ran"))
        return res, None
    b = outs[id(base)]
    for col in cols:
        if id(col) in outs:
            o = outs[id(col)]
            d = float(np.max(np.abs(o - b))) if o.shape == b.shape else float("inf")
            tol = E.tolerance(col.engine, TOL)
            ok = d <= tol
            res[id(col)] = dict(status="ok" if ok else "mismatch", max_abs_diff=d,
                                reason=None if ok else f"max |diff| {d:.3g} vs baseline > {tol:g}"
                                + ("" if o.shape == b.shape else f" (shape {o.shape} vs {b.shape})"))
    # the baseline against the float64 reference, on a short input (the reference is slow)
    wl, desc = ctx.wl, f"{base.engine}·{base.threads}t"
    try:
        if wl.kind == "seq":
            xs = np.ascontiguousarray(x_check[:, :REF_T])
            base.enter()
            got = np.asarray(base.output(base.prep(xs)), np.float64)
            ref = reference.run(ctx.layers, xs)[0]
        else:   # stream outputs (steps, B, out) vs the reference's batch-major sequence
            n = min(REF_T, len(x_check))
            ref = reference.run(ctx.layers, np.swapaxes(x_check[:n], 0, 1))[0]
            got = np.swapaxes(b[:n], 0, 1) if not wl.net.head else b[n - 1]
        rd = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("inf")
    except Exception as e:  # noqa: BLE001
        print(f"  reference check of {desc} failed: {reason(e)}")
        rd = float("nan")
    res[id(base)]["ref_diff"] = rd
    return res, dict(baseline=desc, ref_diff=rd, ref_ok=rd <= TOL)


def measure(cols, inps, units, scale, cfg):
    """Time every column of one workload, interleaved: after each one's warm-up, rounds in which
    each column runs one untimed rep (its caches refilled after the others ran; not when a rep takes
    WARM_REP_MAX_S or more) and then timed reps
    for about budget_s / ROUNDS, until each has its reps. The machine's speed drifts over seconds
    (other tenants); interleaving gives every engine the same mix of fast and slow moments, where
    timing the engines one after another let one engine's whole budget fall in a slow minute.
    Returns, per column, stats of scale * seconds / units per repetition, or the exception."""
    out, ts, want, t_rep = [None] * len(cols), [[] for _ in cols], [0] * len(cols), [1.0] * len(cols)
    gc.collect()
    gc.disable()
    try:
        for i, (col, inp) in enumerate(zip(cols, inps)):
            try:
                col.enter()
                t_end, n = time.perf_counter() + cfg["warm_s"], 0
                while n < 1 or time.perf_counter() < t_end:
                    t0 = time.perf_counter()
                    col.rep(inp)
                    t_rep[i] = time.perf_counter() - t0
                    n += 1
                want[i] = int(min(cfg["max_reps"], max(cfg["min_reps"], cfg["budget_s"] / max(t_rep[i], 1e-9))))
            except Exception as e:  # noqa: BLE001
                out[i] = e
        while any(out[i] is None and len(ts[i]) < want[i] for i in range(len(cols))):
            for i, (col, inp) in enumerate(zip(cols, inps)):
                if out[i] is not None or len(ts[i]) >= want[i]:
                    continue
                try:
                    col.enter()
                    if t_rep[i] < WARM_REP_MAX_S:   # a long rep refills its caches itself
                        col.rep(inp)
                    for _ in range(min(want[i] - len(ts[i]), -(-want[i] // ROUNDS))):
                        t0 = time.perf_counter()
                        col.rep(inp)
                        ts[i].append(time.perf_counter() - t0)
                except Exception as e:  # noqa: BLE001
                    out[i] = e
    finally:
        gc.enable()
    for i in range(len(cols)):
        if out[i] is None:
            v = np.asarray(ts[i]) * scale / units
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            out[i] = dict(median=float(med), q1=float(q1), q3=float(q3), min=float(v.min()),
                          max=float(v.max()), reps=len(v))
    return out


def run_workload(wl, engine_names, threads, args, fastrnn, ir, reference):
    ctx = E.Context(wl, ir)
    cfg = TIMING["quick" if args.quick else "full"]
    if wl.kind == "seq":
        x_check = x_time = W.make_inputs(wl)
        units, scale, per = 1, 1e3, "1 call/rep"
    else:
        steps = wl.quick_steps if args.quick else wl.steps
        xs = W.make_inputs(wl, steps=max(steps, CHECK_STEPS))
        x_check, x_time = xs[:CHECK_STEPS], xs[:steps]
        units, scale, per = steps, 1e6, f"{steps} steps/rep"
    print(f"\n[{wl.name}] {wl.describe()}; {per}", flush=True)
    cols, results = build_columns(ctx, engine_names, threads, fastrnn)
    checked, base = check(ctx, cols, x_check, reference)
    if base is not None:
        what = f"{CHECK_STEPS} steps" if wl.kind == "stream" else "the timed input"
        diffs = "  ".join(f"{c.engine}·{c.threads}t {checked[id(c)]['max_abs_diff']:.2g}"
                          for c in cols if "max_abs_diff" in checked[id(c)])
        print(f"  check, max |diff| vs {base['baseline']} on {what}: {diffs}")
        print(f"  check, {base['baseline']} vs float64 reference ({REF_T} steps): "
              f"{base['ref_diff']:.2g}{'' if base['ref_ok'] else '  <-- EXCEEDS ' + format(TOL, 'g')}")
    rows = [dict(engine=col.engine, threads=col.threads, **checked[id(col)]) for col in cols]
    timed, inps = [], []
    for col, r in zip(cols, rows):
        if r["status"] == "ok":
            try:
                inps.append(col.prep(x_time))
                timed.append((col, r))
            except Exception as e:  # noqa: BLE001
                r.update(status="error", reason=reason(e))
    for (col, r), m in zip(timed, measure([c for c, _ in timed], inps, units, scale, cfg)):
        if isinstance(m, Exception):
            r.update(status="error", reason=reason(m))
        else:
            r.update(m)
    results.extend(rows)
    order = {(n, e): i for i, (n, e) in enumerate((n, e) for n in threads for e in engine_names)}
    results.sort(key=lambda r: order[r["threads"], r["engine"]])
    for r in results:
        cell = (f"{r['median']:.4g} {wl.unit} ±{spread(r):.0f}% (n={r['reps']})" if "median" in r
                else f"{r['status']}: {r['reason']}")
        print(f"  {r['engine']:>11}·{r['threads']}t  {cell}", flush=True)
    ctx.close()
    return dict(name=wl.name, description=wl.describe(), kind=wl.kind, unit=wl.unit,
                batch=wl.batch, T=wl.T or None, steps_per_rep=units if wl.kind == "stream" else None,
                check=base, results=results)


# ---------------------------------------------------------------- report

def finite(o):
    """o with NaN / inf floats as None (strict JSON)."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [finite(v) for v in o]
    return o


def spread(r):
    return 100.0 * (r["q3"] - r["q1"]) / r["median"]


def fmt(v):
    return f"{v:.0f}" if v >= 1000 else f"{v:.4g}"


def print_tables(out, engine_names, threads):
    peers = [e for e in engine_names if e != "fastrnn"]
    notes = []
    for n in threads:
        head = ["workload", "unit"] + engine_names + ([f"fr/{SHORT[p]}" for p in peers]
                                                      if "fastrnn" in engine_names else [])
        rows = []
        for w in out:
            by = {r["engine"]: r for r in w["results"] if r["threads"] == n}
            row = [w["name"], w["unit"]]
            for e in engine_names:
                r = by.get(e)
                if r is None:
                    row.append("-")
                elif "median" in r:
                    row.append(f"{fmt(r['median'])} ±{spread(r):.0f}%")
                else:
                    notes.append(f"[{len(notes) + 1}] {e}·{n}t {w['name']}: "
                                 f"{r['status']}: {r['reason']}")
                    row.append(f"{r['status']} [{len(notes)}]")
            fr = by.get("fastrnn", {}).get("median")
            for p in peers if "fastrnn" in engine_names else []:
                pm = by.get(p, {}).get("median")
                row.append(f"{fr / pm:.3f}" if fr and pm else "-")
            rows.append(row)
        widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
        print(f"\n== {n} thread{'s' if n > 1 else ''}: median ±IQR/median"
              + ("; fr/x = fastrnn / x, below 1 = fastrnn faster" if "fastrnn" in engine_names else ""))
        for r in [head] + rows:
            print("  ".join(str(c).ljust(wd) if i < 2 else str(c).rjust(wd)
                            for i, (c, wd) in enumerate(zip(r, widths))))
    for note in notes:
        print(note)


def print_errors(out, reduced):
    """max |diff| of each reduced-precision column against the fp32 baseline (the check's input)."""
    if not reduced:
        return
    print("\n== reduced precision: max |diff| vs the fp32 baseline (first thread count)")
    print("  ".join(["workload".ljust(24)] + [e.rjust(16) for e in reduced]))
    for w in out:
        by = {r["engine"]: r for r in reversed(w["results"])}
        print("  ".join([w["name"].ljust(24)] + [
            (f"{by[e]['max_abs_diff']:.2g}" if "max_abs_diff" in by.get(e, {}) else "-").rjust(16)
            for e in reduced]))


# ---------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short timings: the whole suite in under two minutes")
    p.add_argument("--only", help="comma-separated workload names or globs (see --list)")
    p.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2 (default 1)")
    p.add_argument("--peers", default=",".join(E.PEERS),
                   help=f"comma-separated peers to time (default {','.join(E.PEERS)}; "
                        f"also {','.join(E.REDUCED)}, or reduced for all of those; "
                        "tnd, ort, ov, tfl, fr16, fr8, t8, ort8, ov16 accepted)")
    p.add_argument("--json", metavar="PATH", help="write every result and the machine info here")
    p.add_argument("--peers-only", action="store_true",
                   help="no fastrnn engine: check the peers against torch + the float64 reference "
                        "and time them (for developing the bench before the engine exists)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for wl in W.WORKLOADS:
            print(f"{wl.name:24} {wl.describe()}")
        return 0
    wls = W.WORKLOADS
    if args.only:
        pats = [s.strip() for s in args.only.split(",") if s.strip()]
        wls = [w for w in wls if any(fnmatch.fnmatchcase(w.name, p) for p in pats)]
        if not wls:
            raise SystemExit(f"bench: --only {args.only!r} matches no workload (see --list)")
    try:
        threads = [int(t) for t in args.threads.split(",")]
        assert threads and min(threads) >= 1
    except (ValueError, AssertionError):
        raise SystemExit(f"bench: --threads wants positive integers like 1,2, got {args.threads!r}")
    alias = {short: engine for engine, short in SHORT.items()}
    wanted = []
    for p in (p.strip() for p in args.peers.split(",")):
        wanted += list(E.REDUCED) if p == "reduced" else [alias.get(p, p)] if p else []
    if bad := [p for p in wanted if p not in E.PEERS + E.REDUCED]:
        raise SystemExit(f"bench: unknown peer(s) {bad}; known: {', '.join(E.PEERS + E.REDUCED)}, reduced")

    if args.peers_only:
        fastrnn = None
        ir, reference = import_spec_modules()
    else:
        fastrnn, ir, reference = import_fastrnn()
    peers, missing = detect_peers(wanted)
    engine_names = ([] if fastrnn is None else ["fastrnn"]) + [p for p in wanted if p not in missing]

    info, vers = machine_info(fastrnn), versions(fastrnn, peers)
    print(f"cpu: {info['cpu']} ({info.get('usable_cpus', info['logical_cpus'])} usable cpus)"
          + (f"; fastrnn isa: {info['fastrnn_cpu_info'].get('isa')}" if fastrnn else ""))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    for name, why in missing.items():
        print(f"unavailable peer: {name} ({why})")
    if fastrnn is None:
        print("--peers-only: fastrnn is not timed; torch is the baseline")
    print(f"mode: {'quick' if args.quick else 'full'}; threads: {threads}; tolerance {TOL:g}")

    t0 = time.perf_counter()
    out = [run_workload(wl, engine_names, threads, args, fastrnn, ir, reference) for wl in wls]
    print_tables(out, engine_names, threads)
    print_errors(out, [e for e in engine_names if e in E.REDUCED])
    print(f"({len(wls)} workloads in {time.perf_counter() - t0:.0f} s)")
    if missing:
        print("unavailable peers: " + "; ".join(f"{k} ({v})" for k, v in missing.items()))
    bad = [(w["name"], r["engine"], r["threads"]) for w in out for r in w["results"]
           if r["status"] == "mismatch"] + [(w["name"], "reference", "-") for w in out
                                             if w["check"] and not w["check"]["ref_ok"]]
    if bad:
        print("OUTPUTS DIFFER: " + ", ".join(f"{n} {e}·{t}t" for n, e, t in bad))
    if args.json:
        doc = dict(machine=info, versions=vers, unavailable=missing,
                   settings=dict(quick=args.quick, threads=threads, tolerance=TOL,
                                 check_steps=CHECK_STEPS, reference_steps=REF_T,
                                 peers_only=args.peers_only, seed=W.SEED),
                   workloads=out)
        Path(args.json).write_text(json.dumps(finite(doc), indent=1))
        print(f"wrote {args.json}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
