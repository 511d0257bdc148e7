"""Measure the corpus live (not the ratchet): every case converted and checked now, a table per
capture, and the cases whose result differs from the ratchet dicts (to update them after an
importer change).

    KERAS_BACKEND=torch OPENBLAS_NUM_THREADS=1 python -m tests.corpus.measure [--diff] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from . import test_corpus as C


def measure():
    out = {}
    for cid in C.torch_case_ids() + C.keras_case_ids():
        with tempfile.TemporaryDirectory() as d:
            fn = C.outcome_keras if C._split(cid)[1] == "keras" else C.outcome_torch
            try:
                kind, detail = fn(cid, Path(d))
            except Exception as e:  # noqa: BLE001 - an old importer may fail outside convert
                kind, detail = "crash", type(e).__name__
        out[cid] = (kind, detail)
        print(f"{cid}: {kind} {detail[:160]}", file=sys.stderr, flush=True)
    return out


def expected(cid):
    if cid in C.CAPTURE_FAILS_TODAY:
        return "capture"
    if cid in C.REFUSED_TODAY:
        return "refused"
    if cid in C.CRASHES_TODAY:
        return "crash"
    if cid in C.WRONG_TODAY:
        return "wrong"
    return "ok"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--diff", action="store_true", help="list cases whose result differs from the dicts")
    ap.add_argument("--json", help="write {case: [kind, detail]} here")
    ap.add_argument("--write", action="store_true",
                    help="rewrite the ratchet dicts in test_corpus.py from this measurement")
    a = ap.parse_args(argv)
    res = measure()
    rows = {}
    for cid, (kind, _) in res.items():
        r = rows.setdefault(C._split(cid)[1], {"cases": 0, "ok": 0, "refused": 0, "crash": 0, "wrong": 0,
                                                 "capture": 0})
        r["cases"] += 1
        r[kind] += 1
    print("| capture | cases | converts + matches | refused | crashes | wrong result | exporter cannot produce |")
    print("|---|---|---|---|---|---|---|")
    for cap, r in rows.items():
        print(f"| {cap} | {r['cases']} | {r['ok']} | {r['refused']} | {r['crash']} | {r['wrong']} | {r['capture']} |")
    if a.diff:
        for cid, (kind, detail) in res.items():
            if kind != expected(cid):
                print(f"{cid}: dicts say {expected(cid)}, now {kind} {detail[:200]}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.write:
        write_dicts(res)


_DICTS = {"refused": "REFUSED_TODAY", "crash": "CRASHES_TODAY", "wrong": "WRONG_TODAY",
          "capture": "CAPTURE_FAILS_TODAY"}


def write_dicts(res):
    """Replace the four ratchet dicts of test_corpus.py by this measurement (entries sorted)."""
    path = Path(C.__file__)
    text = path.read_text()
    for kind, name in _DICTS.items():
        start = text.index(f"{name} = {{\n")
        end = text.index("\n}\n", start) + 3
        body = "".join(f"    {cid!r}:\n        {detail[:200]!r},\n"
                       for cid, (k, detail) in sorted(res.items()) if k == kind)
        text = text[:start] + f"{name} = {{\n{body}}}\n" + text[end:]
    path.write_text(text)


if __name__ == "__main__":
    main()
