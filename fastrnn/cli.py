"""fastrnn-convert: the command-line face of fastrnn.convert + Model.save.

    fastrnn-convert SRC [-o OUT] [--check] [--allow-pickle] [--batch-first] [--nonlinearity F]
                        [--head last|sequence] [--head-activation A[,A...]] [--batch N] [--steps T] [--seed S] [--tolerance TOL]

Converts the model file SRC (.keras, .h5, ...; recognised by content, not extension) and writes
OUT (default: SRC with its suffix replaced by .frnn), then prints `wrote OUT: <the model>`.

--check also runs the source framework (when installed) and fastrnn on the same seeded random
input, and prints the largest absolute difference over all outputs. The input has the model's
shape: token ids in [1, vocab) for a model that starts with an Embedding (rows after the first
right-padded with zeros when the Embedding has mask_zero, so masking is exercised), float32
N(0, 1) otherwise; batch = --batch, else the source's fixed batch size (a stateful Keras model's),
else 3; steps = --steps, else the source's fixed input length, else 16. The tolerance is absolute
(DESIGN.md section 4: 1e-5 where outputs are O(1)).

--allow-pickle lets fastrnn.convert read a file that only full unpickling can read (a pickled
torch module); only do that for files you trust. --batch-first, --nonlinearity, --head and
--head-activation describe a PyTorch state_dict's module, which the file cannot say
(docs/pytorch.md): --head says whether the Linear layers after the RNN act on every step or on
the last one, --head-activation names the activation after the last Linear (or, comma-separated,
one per Linear; "none" for none).

Exit codes: 0 converted (and, with --check, outputs agree); 1 an error (one line on stderr,
`fastrnn-convert: error: ...`, no traceback) or --check found a difference over the tolerance
or outputs that differ in count or shape (prints FAIL); 2 a usage error (argparse); 130
interrupted (Ctrl-C).
"""
import argparse
import os
import sys
import warnings

import numpy as np

PROG = "fastrnn-convert"


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _tolerance(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {s!r}")
    return v


def _parser():
    from . import __version__
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a Keras / PyTorch / ONNX recurrent model into a fastrnn .frnn file.")
    p.add_argument("src", metavar="SRC", help="model file (.keras, .h5, .pt/.pth; recognised by content)")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output .frnn file (default: SRC with its suffix replaced by .frnn)")
    p.add_argument("--check", action="store_true",
                   help="run the source framework and fastrnn on random inputs and compare")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow files that only full unpickling can read (trusted files only)")
    p.add_argument("--batch-first", action="store_true",
                   help="a PyTorch state_dict's module was built with batch_first=True (recorded in the "
                        "model; used by --check)")
    p.add_argument("--nonlinearity", choices=("tanh", "relu"),
                   help="a PyTorch nn.RNN state_dict's nonlinearity (default tanh, torch's)")
    p.add_argument("--head", choices=("last", "sequence"),
                   help="a PyTorch state_dict's Linear layers after the RNN act on the last step or on every step")
    p.add_argument("--head-activation", metavar="A[,A...]",
                   help="a PyTorch state_dict's activation after its last Linear (sigmoid, softmax, "
                        "log_softmax, tanh, relu, ...), or one per Linear, comma-separated ('none' for none)")
    p.add_argument("--batch", type=_positive_int, metavar="N",
                   help="--check batch size (default: the model's fixed batch size, else 3)")
    p.add_argument("--steps", type=_positive_int, metavar="T",
                   help="--check time steps (default: the model's fixed input length, else 16)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="--check random seed (default 0)")
    p.add_argument("--tolerance", type=_tolerance, default=1e-5, metavar="TOL",
                   help="--check: largest allowed absolute difference (default 1e-5)")
    p.add_argument("--version", action="version", version=f"%(prog)s (fastrnn {__version__})")
    return p


class _Error(Exception):
    """A failure reported as one `error:` line."""


def _oneline(e):
    """An exception as one line of text."""
    if isinstance(e, OSError) and e.strerror:
        msg = f"{e.filename}: {e.strerror}" if e.filename is not None else e.strerror
    else:
        msg = str(e) or type(e).__name__
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


def _default_output(src):
    root, ext = os.path.splitext(src)
    return (root if ext else src) + ".frnn"


def _random_input(model, batch, steps, seed):
    rng = np.random.default_rng(seed)
    if model.input_kind == "ids":
        emb = model.layers[0]
        if emb.vocab_size > 1:
            x = rng.integers(1, emb.vocab_size, size=(batch, steps), dtype=np.int64)
        else:
            x = np.zeros((batch, steps), np.int64)
        if emb.mask_zero and steps // 2 >= 1:
            for row in range(1, batch):   # row 0 stays full length
                x[row, steps - int(rng.integers(1, steps // 2 + 1)):] = 0
        return x
    return rng.standard_normal((batch, steps, model.input_size)).astype(np.float32)


def _max_diff(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    d[np.isnan(a) & np.isnan(b)] = 0.0
    d[np.isnan(d)] = np.inf        # NaN on one side only is a difference, never "ok"
    return float(d.max())


def _opts(args):
    """convert / run_source options from the command line (only those given)."""
    opts = {"allow_pickle": True} if args.allow_pickle else {}
    if args.batch_first:
        opts["batch_first"] = True
    if args.nonlinearity:
        opts["nonlinearity"] = args.nonlinearity
    if args.head:
        opts["head"] = args.head
    if args.head_activation:
        acts = [None if a.strip().lower() == "none" else a.strip() for a in args.head_activation.split(",")]
        opts["head_activation"] = acts if len(acts) > 1 else acts[0]
    return opts


def _check(args, model):
    """Returns True when fastrnn and the source framework agree."""
    from .converters import run_source
    from .errors import FastRNNError
    meta = model.meta
    batch = args.batch or meta.get("batch_size") or 3
    steps = args.steps or meta.get("time_steps") or 16
    x = _random_input(model, int(batch), int(steps), args.seed)
    if model.signature["graph"] is not None:     # ONNX: the graph's own feeds, run() vs onnxruntime
        from .converters.onnx import feeds_for
        x = feeds_for(model, x, args.seed)
        ours = model.run(None, x)
    else:
        ours = model.predict(x)
    ours = list(ours) if isinstance(ours, (list, tuple)) else [ours]
    source = meta.get("source", "the source framework")
    try:
        with warnings.catch_warnings():     # the framework's own warnings are not this tool's output
            warnings.simplefilter("ignore")
            theirs = run_source(args.src, x, meta=model.meta, **_opts(args))
    except (FastRNNError, OSError, _Error):
        raise
    except Exception as e:  # noqa: BLE001 - whatever the framework raises, in one line
        raise _Error(f"--check: {source} failed on the random input: "
                     f"{type(e).__name__}: {_oneline(e)}") from None
    theirs = list(theirs) if isinstance(theirs, (list, tuple)) else [theirs]
    theirs = [np.asarray(t) for t in theirs]
    where = f"(batch {batch}, {steps} steps)"
    if len(ours) != len(theirs):
        print(f"check: fastrnn gives {len(ours)} outputs, {source} gives {len(theirs)} {where}: FAIL")
        return False
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a.shape != b.shape:
            print(f"check: output {i} has shape {a.shape} in fastrnn, {b.shape} in {source} "
                  f"{where}: FAIL")
            return False
    diff = max(_max_diff(a, b) for a, b in zip(ours, theirs))
    ok = diff <= args.tolerance
    n = len(ours)
    verdict = "ok" if ok else f"FAIL (tolerance {args.tolerance:g})"
    print(f"check: max abs difference {diff:.2g} over {n} output{'s' if n != 1 else ''} "
          f"{where}: {verdict}")
    return ok


def _convert(args):
    import fastrnn
    if not os.path.exists(args.src):
        raise _Error(f"{args.src}: no such file")
    out = args.output or _default_output(args.src)
    model = fastrnn.convert(args.src, **_opts(args))
    model.save(out)
    line = f"wrote {out}: {model!r}"
    if model.num_outputs > 1:
        line += f" ({model.num_outputs} outputs)"
    print(line, flush=True)
    if args.check and not _check(args, model):
        return 1
    return 0


def convert_main(argv=None):
    """Entry point of `fastrnn-convert`; returns the exit code (the console script exits with it)."""
    try:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:             # usage error (2, message printed) or --help/--version (0)
            return e.code if isinstance(e.code, int) else 2
        from .errors import FastRNNError
        try:
            return _convert(args)
        except (FastRNNError, OSError, _Error) as e:
            sys.stdout.flush()
            print(f"{PROG}: error: {_oneline(e)}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(convert_main())
