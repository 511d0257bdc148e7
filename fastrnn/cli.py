"""The command line: `fastrnn` (convert, info, run, bench) and `fastrnn-convert`.

    fastrnn convert SRC [-o OUT] [--check] ...      the same as fastrnn-convert SRC ... (below)
    fastrnn info MODEL.frnn [--json]
    fastrnn run MODEL.frnn -i INPUT.npy|.npz -o OUT.npy|.npz [--lengths LENS.npy] [--threads N]
    fastrnn bench MODEL.frnn [--batch N] [--steps T] [--seconds S] [--threads N] [--seed S]
                             [--progress] [--json]
    fastrnn --version | --help | COMMAND --help

Entry points: main(argv=None) for `fastrnn`, convert_main(argv=None) for `fastrnn-convert`; both
return the exit code (the console scripts exit with it). `python -m fastrnn` is `fastrnn`;
`python -m fastrnn.cli` is fastrnn-convert.

fastrnn info: the model's layers, one line each (type, cell, direction, in -> out sizes, options
such as return_sequences, mask_zero / mask_value, activations, merge_mode, and the parameter count;
parameters are counted from the layer's own tensors), the input (token ids with the vocabulary,
or float features), what predict returns (shapes with "batch" and "time" for the axes that follow
the input; found by running predict on two tiny zero inputs), the state shapes (initial_state /
return_state=True, in the source's layout, and Stream.state's native layout when it differs),
the weights (parameters x 4 bytes, the file's size, and the bytes the engine holds once packed:
measured as the C heap's growth across the load with glibc's mallinfo2, omitted elsewhere), the
kernels (Model.isa, fastrnn.cpu_info()), whether it can stream, the source (Model.meta) and, for a
model converted from ONNX, the graph's own input and output names with their shapes and roles.
--json prints one object with the same content (shapes as lists with "batch"/"time" strings).

fastrnn run: predict on an array loaded with numpy.load(allow_pickle=False) (a file holding
pickled objects is refused, never unpickled): a .npy of float (batch, time, features) or integer
ids (batch, time); --lengths a .npy of integers (batch,). The output file's name decides its
format: .npz (arrays output_0, output_1, ...) or anything else a .npy, written exactly at that
path. A model that returns several outputs (a Keras model with return_state=True) needs an .npz.
For a model converted from ONNX, INPUT may also be an .npz of the graph's inputs by name: it runs
as onnxruntime would (Model.run: the graph's layouts) and an .npz output holds the graph's
outputs by name (a .npy: its first output, allowed only when the graph has one); a .npy
input always goes through predict (batch-major), whatever the source. Prints `wrote OUT:
<dtype> <shape>`, or `<name> <dtype> <shape>` per array of an .npz.

fastrnn bench: random input of the model's kind (token ids in range, or float32 N(0, 1); seeded).
  stream:  batch 1, Stream.step_into on preallocated arrays in a Python loop (what a service's
           loop costs: the engine's step plus the ~0.1 µs call), 7 repeats of about S/7 seconds
           each, the stream reset before each; median and min µs/step. A model that cannot stream
           (a reverse or bidirectional layer) skips this part and says why.
  predict: (batch, steps) whole sequences; one warm-up call, then calls until S seconds have
           passed (at least one); median and min ms/call, sequences/s and steps/s.
  --threads sets fastrnn.set_num_threads for the run. A progress bar (\\r-redrawn text) goes to
  stderr when it is a terminal and the run takes a second or more, or always with --progress.
  Prints a table, or one JSON object with --json. Nothing is asserted about speed here.

fastrnn-convert: the command-line face of fastrnn.convert + Model.save.

    fastrnn-convert SRC [-o OUT] [--check] [--allow-pickle] [--no-isolate] [--timeout S]
                        [--memory-limit SIZE] [--batch-first] [--nonlinearity F] [--head last|sequence] [--head-activation A[,A...]] [--batch N] [--steps T] [--seed S] [--precision P] [--tolerance TOL]

Converts the model file SRC (.keras, .h5, ...; recognised by content, not extension) and writes
OUT (default: SRC with its suffix replaced by .frnn), then prints `wrote OUT: <the model>`.

--check also runs the source framework (when installed) and fastrnn on the same seeded random
input, and prints the largest absolute difference over all outputs. The input has the model's
shape: token ids in [1, vocab) for a model that starts with an Embedding (rows after the first
right-padded with zeros when the Embedding has mask_zero, so masking is exercised), float32
N(0, 1) otherwise; batch = --batch, else the source's fixed batch size (a stateful Keras model's),
else 3; steps = --steps, else the source's fixed input length, else 16. The tolerance is absolute
(DESIGN.md section 4: 1e-5 where outputs are O(1)).

--precision bf16|int8 writes OUT with its matrices at that precision (Model.with_precision);
with --check it also prints the error report (max / mean |diff|, SQNR, cosine, argmax agreement)
against the source, and the default tolerance is the accuracy contract's (bf16 5e-3, int8 1.5e-2;
README, Accuracy).

--isolate (the default) parses SRC, and runs its framework for --check, in a child process with
a time limit (--timeout, default 300 s) and an address-space limit (--memory-limit, default 8G),
so a damaged or hostile file that crashes or hangs its parser (libhdf5, libtorch) gives one
error line instead (fastrnn/isolate.py, docs/security.md); --no-isolate parses in this process.

--allow-pickle lets fastrnn.convert read a file that only full unpickling can read (a pickled
torch module); only do that for files you trust. --batch-first, --nonlinearity, --head and
--head-activation describe a PyTorch state_dict's module, which the file cannot say
(docs/pytorch.md): --head says whether the Linear layers after the RNN act on every step or on
the last one, --head-activation names the activation after the last Linear (or, comma-separated,
one per Linear; "none" for none).

Exit codes (both commands): 0 done (and, with --check, outputs agree); 1 an error (one line on
stderr, `fastrnn-convert: error: ...` or `fastrnn: error: ...`, no traceback) or --check found a
difference over the tolerance or outputs that differ in count or shape (prints FAIL); 2 a usage
error (argparse: usage and the message on stderr); 130 interrupted (Ctrl-C); 141 (fastrnn) stdout
closed early (e.g. piped into head). `fastrnn convert` prints exactly what fastrnn-convert prints;
only its error lines start with `fastrnn: error:`.
"""
import argparse
import os
import sys
import warnings
import zipfile
import zlib

import numpy as np

from . import ir, signature as sig_

PROG = "fastrnn-convert"


def _positive_int(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


# --check's default bound on max |diff| against the source, by precision (the accuracy contract,
# README "Accuracy")
TOLERANCES = {"fp32": 1e-5, "bf16": 5e-3, "int8": 1.5e-2}


def _tolerance(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {s!r}")
    return v


def _bytes(s):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = s.strip().upper().removesuffix("B").removesuffix("I")
    u = t[-1:] if t[-1:] in units else ""
    try:
        v = float(t[:len(t) - len(u)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 8G, 512M or 0, got {s!r}") from None
    if not 0 <= v < 2**62 / units[u]:
        raise argparse.ArgumentTypeError(f"expected a size >= 0, got {s!r}")
    return int(v * units[u])


_CONVERT_DESCRIPTION = "Convert a Keras / PyTorch / ONNX recurrent model into a fastrnn .frnn file."


def _add_convert_arguments(p):
    """The options of `fastrnn-convert`, which `fastrnn convert` shares (one definition)."""
    from . import __version__
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
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                   help="parse SRC (and run its framework for --check) in a child process with a time "
                        "and memory limit, so a damaged or hostile file cannot crash or hang this one "
                        "(default: on; --no-isolate parses in this process)")
    p.add_argument("--timeout", type=_seconds, metavar="S",
                   help="with --isolate: seconds the child may take (default 300)")
    p.add_argument("--memory-limit", type=_bytes, metavar="SIZE",
                   help="with --isolate: the child's address-space limit, e.g. 8G or 512M (default 8G; 0: none)")
    p.add_argument("--batch", type=_positive_int, metavar="N",
                   help="--check batch size (default: the model's fixed batch size, else 3)")
    p.add_argument("--steps", type=_positive_int, metavar="T",
                   help="--check time steps (default: the model's fixed input length, else 16)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="--check random seed (default 0)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="weights of the matrix products in OUT: fp32 (default), bf16, or int8 with one "
                        "scale per output row; with --check, the error report against the source")
    p.add_argument("--tolerance", type=_tolerance, default=None, metavar="TOL",
                   help="--check: largest allowed absolute difference (default 1e-5; at --precision bf16 "
                        "5e-3, int8 1.5e-2: the accuracy contract)")
    p.add_argument("--version", action="version", version=f"%(prog)s (fastrnn {__version__})")
    return p


def _parser():
    """The parser of `fastrnn-convert`."""
    return _add_convert_arguments(argparse.ArgumentParser(prog=PROG, description=_CONVERT_DESCRIPTION))


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
    if args.isolate:
        opts["isolate"] = True
        if args.timeout is not None:
            opts["isolate_timeout"] = args.timeout
        if args.memory_limit is not None:
            opts["isolate_memory"] = args.memory_limit
    elif args.timeout is not None or args.memory_limit is not None:
        raise _Error("--timeout and --memory-limit apply with --isolate")
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
    tol = args.tolerance if args.tolerance is not None else TOLERANCES[model.precision]
    ok = diff <= tol
    n = len(ours)
    verdict = "ok" if ok else f"FAIL (tolerance {tol:g})"
    if model.precision != "fp32":
        from .precision import Report, errors
        rep = Report(errors(ours, theirs), precision=model.precision, reference=source)
        print("\n".join("check: " + line for line in str(rep).splitlines()))
    print(f"check: max abs difference {diff:.2g} over {n} output{'s' if n != 1 else ''} "
          f"{where}: {verdict}")
    return ok


def _convert(args):
    import fastrnn
    if not os.path.exists(args.src):
        raise _Error(f"{args.src}: no such file")
    out = args.output or _default_output(args.src)
    model = fastrnn.convert(args.src, **_opts(args))
    if args.precision != "fp32":
        model = model.with_precision(args.precision)
    model.save(out)
    line = f"wrote {out}: {model!r}"
    if model.num_outputs > 1:
        line += f" ({model.num_outputs} outputs)"
    print(line, flush=True)
    if args.check and not _check(args, model):
        return 1
    return 0


def _entry(prog, parser, call, argv):
    """Parse argv, run call(args), turn failures into exit codes: 2 usage (argparse printed it),
    1 an error (one `prog: error: ...` line on stderr), 141 stdout closed early (`| head`), 130
    Ctrl-C."""
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:             # usage error (2, message printed) or --help/--version (0)
            return e.code if isinstance(e.code, int) else 2
        from .errors import FastRNNError
        try:
            rc = call(args)
            sys.stdout.flush()
            return rc
        except BrokenPipeError:             # `fastrnn info m.frnn | head`: stop quietly
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return 141
        except (FastRNNError, OSError, _Error) as e:
            sys.stdout.flush()
            print(f"{prog}: error: {_oneline(e)}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 130


def convert_main(argv=None):
    """Entry point of `fastrnn-convert`; returns the exit code (the console script exits with it)."""
    return _entry(PROG, _parser(), _convert, argv)


# ==== the `fastrnn` command: convert, info, run, bench ===========================================

MAIN_PROG = "fastrnn"


def _seconds(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {s!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {s!r}")
    return v


def _main_parser():
    from . import __version__
    p = argparse.ArgumentParser(
        prog=MAIN_PROG,
        description="fastrnn: fast CPU inference of recurrent networks (RNN, LSTM, GRU). "
                    "Convert a model, describe it, run it on .npy files, time it.",
        epilog="`fastrnn COMMAND --help` lists a command's options. `fastrnn convert` is `fastrnn-convert`.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("convert", help="convert a Keras / PyTorch / ONNX model to .frnn (= fastrnn-convert)",
                       description=_CONVERT_DESCRIPTION)
    _add_convert_arguments(c)
    c.set_defaults(func=_convert)

    i = sub.add_parser("info", help="describe a .frnn model: layers, input, outputs, states, parameters",
                       description="Describe a .frnn model: its layers (one line each, with their parameter "
                                   "counts), input, outputs, state shapes, weight bytes, the kernels it runs, "
                                   "whether it can stream, its source framework and, for a model converted "
                                   "from ONNX, the graph's input and output names.")
    i.add_argument("model", metavar="MODEL", help=".frnn file")
    i.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    i.set_defaults(func=_info)

    r = sub.add_parser("run", help="run a .frnn model on a .npy input and save the output",
                       description="Run MODEL.predict on the array in INPUT and save what it returns. "
                                   "INPUT is a .npy file: float (batch, time, features), or integer token ids "
                                   "(batch, time) for a model that starts with an Embedding; or, for a model "
                                   "converted from ONNX, an .npz file of the graph's inputs by name "
                                   "(run as onnxruntime would: Model.run). Files are read with "
                                   "allow_pickle=False: pickled data is refused, never loaded.")
    r.add_argument("model", metavar="MODEL", help=".frnn file")
    r.add_argument("-i", "--input", required=True, metavar="INPUT", help="input .npy (or .npz for an ONNX model)")
    r.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="where to save the output: a .npy file, or an .npz file (required when the model "
                        "returns several outputs: arrays output_0, output_1, ..., or the ONNX graph's "
                        "output names)")
    r.add_argument("--lengths", metavar="LENS", help="a .npy of integer valid steps per row (batch,) "
                   "(packed-sequence semantics: outputs past a row's length are 0)")
    r.add_argument("--threads", type=_positive_int, metavar="N", help="fastrnn.set_num_threads(N) (default 1)")
    r.set_defaults(func=_run)

    b = sub.add_parser("bench", help="time streaming steps and batched predict on random input",
                       description="Time MODEL on random input of its kind (token ids in range, or float "
                                   "N(0, 1)): a stream at batch 1 (Stream.step_into in a loop, preallocated "
                                   "arrays; median µs/step over several repeats) and predict on whole "
                                   "sequences of shape (batch, steps) (sequences/s and steps/s). A model that "
                                   "cannot stream (reverse or bidirectional layers) skips the stream part.")
    b.add_argument("model", metavar="MODEL", help=".frnn file")
    b.add_argument("--batch", type=_positive_int, default=32, metavar="N", help="predict batch size (default 32)")
    b.add_argument("--steps", type=_positive_int, default=100, metavar="T",
                   help="predict sequence length (default 100)")
    b.add_argument("--seconds", type=_seconds, default=1.0, metavar="S",
                   help="time spent measuring each part, stream and predict (default 1)")
    b.add_argument("--threads", type=_positive_int, metavar="N", help="fastrnn.set_num_threads(N) (default 1)")
    b.add_argument("--seed", type=int, default=0, metavar="S", help="random input seed (default 0)")
    b.add_argument("--precision", choices=("fp32", "bf16", "int8"),
                   help="time the model at this precision (Model.with_precision; default: the file's)")
    b.add_argument("--progress", action="store_true",
                   help="show the progress bar on stderr even when it is not a terminal")
    b.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    b.set_defaults(func=_bench)

    v = sub.add_parser("serve", help="serve a model: conversations over HTTP and WebSocket (docs/serving.md)",
                       description="Serve MODEL to many conversations at once: POST /v1/sequences/{id}/steps, "
                                   "the WebSocket /v1/ws, GET/PUT /v1/sequences/{id}/state (a snapshot that "
                                   "moves a conversation to another server), POST /v1/predict for whole "
                                   "sequences, /healthz, /readyz and Prometheus /metrics. Each tick steps every "
                                   "conversation with input waiting as one batch. Needs aiohttp: "
                                   "pip install \"fastrnn[serve]\". SIGINT / SIGTERM drain queued steps, then stop.")
    v.add_argument("model", metavar="MODEL", help=".frnn file")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    v.add_argument("--capacity", type=_positive_int, default=1024, metavar="N",
                   help="live conversations at most (StreamPool slots; default 1024); past it, 503 + Retry-After")
    v.add_argument("--idle-timeout", type=_seconds, default=60.0, metavar="S",
                   help="close a conversation after S seconds without a message (default 60)")
    v.add_argument("--max-batch", type=_positive_int, metavar="N",
                   help="conversations stepped per engine call at most (default: the capacity)")
    v.add_argument("--threads", type=_positive_int, metavar="N", help="fastrnn.set_num_threads(N) (default 1)")
    v.set_defaults(func=_serve)
    return p


def _serve(args):
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise _Error('fastrnn serve needs aiohttp: pip install "fastrnn[serve]"') from None
    from .serve import run
    run(_load_model(args.model), args.model, args.host, args.port, args.capacity, args.idle_timeout,
        args.max_batch, args.threads)
    return 0


def main(argv=None):
    """Entry point of `fastrnn`; returns the exit code (the console script exits with it)."""
    return _entry(MAIN_PROG, _main_parser(), lambda args: args.func(args), argv)


# ---- shared helpers ----------------------------------------------------------------------------

def _load_model(path):
    import fastrnn
    if not os.path.exists(path):
        raise _Error(f"{path}: no such file")
    if os.path.isdir(path):
        raise _Error(f"{path}: is a directory, not a .frnn file")
    return fastrnn.load(path)


class _Threads:
    """set_num_threads(n) for the duration of a command (restored after: main() may run in-process)."""

    def __init__(self, n):
        self.n = n

    def __enter__(self):
        import fastrnn
        self.old = fastrnn.get_num_threads()
        if self.n is not None:
            fastrnn.set_num_threads(self.n)
        return fastrnn.get_num_threads()

    def __exit__(self, *exc):
        import fastrnn
        fastrnn.set_num_threads(self.old)


_mallinfo2 = None     # glibc's mallinfo2, looked up once (False: not available)


def _heap_in_use():
    """Bytes the C allocator has handed out (glibc mallinfo2), or None where unknown. The engine
    copies and packs weights with malloc, so the difference across a load is the packed model."""
    global _mallinfo2
    if _mallinfo2 is None:
        _mallinfo2 = False
        try:
            import ctypes

            class _MI2(ctypes.Structure):
                _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                           "usmblks", "fsmblks", "uordblks", "fordblks",
                                                           "keepcost")]
            f = ctypes.CDLL(None).mallinfo2
            f.restype = _MI2
            f.argtypes = []
            _mallinfo2 = f
        except (OSError, AttributeError, ImportError, TypeError):   # not glibc >= 2.33 (or Windows)
            pass
    if not _mallinfo2:
        return None
    m = _mallinfo2()
    return int(m.uordblks) + int(m.hblkhd)



def _human_bytes(n):
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} B"


def _shape_str(shape):
    parts = [str(d) for d in shape]
    return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"


def _symbolic(shapes_a, shapes_b, a, b):
    """Shapes computed at two sizes (batch a[0], time a[1]; then b) -> the dims that follow the
    batch as "batch", the time steps as "time", the rest as ints."""
    out = []
    for sa, sb in zip(shapes_a, shapes_b):
        dims = []
        for x, y in zip(sa, sb):
            if x == y:
                dims.append(int(x))
            elif (x, y) == (a[0], b[0]):
                dims.append("batch")
            elif (x, y) == (a[1], b[1]):
                dims.append("time")
            else:
                dims.append("steps")            # a number of steps that convolution windows made
        out.append(dims)
    return out


# ---- info ----------------------------------------------------------------------------------------

def _act_str(a):
    _, da, db = ir.ACTIVATIONS[a.kind]
    if (a.alpha, a.beta) == (da, db):
        return a.kind
    return f"{a.kind}(alpha={a.alpha:g}, beta={a.beta:g})"


def _layer_params(layer):
    return sum(int(t.size) for t in layer.tensors().values())


def _carry_str(layer):
    """', carry=[a:b] [c:d]': the input columns a branch carries past the layer (ir.Dense)."""
    return f", carry={' '.join(f'[{a}:{b}]' for a, b in layer.carry)}" if layer.carry else ""


def _term_str(t):
    """'attn[1:9] (score 0, tanh, eps=1e-10, score_bias of 7 positions)' / 'max[9:17]': a pool term."""
    if t.kind == "query":
        return (f"query[{t.start}:{t.stop}] (against the final value: last step [{t.start}:{t.start + t.split}], "
                f"first step [{t.start + t.split}:{t.stop}], {_act_str(t.score_activation)})")
    if t.kind != "attn":
        return f"{t.kind}[{t.start}:{t.stop}]"
    return (f"attn[{t.start}:{t.stop}] (score {t.score}, {_act_str(t.score_activation)}, eps={t.eps:g}"
            + ("" if t.score_bias is None else f", score_bias of {len(t.score_bias)} positions") + ")")


def _layer_text(layer, masks):
    """(name, sizes, options) of one layer for the text table."""
    if isinstance(layer, ir.Embedding):
        return "Embedding", f"{layer.vocab_size} x {layer.output_size}", f"mask_zero={layer.mask_zero}" + (
            f", pool_mask={layer.pool_mask} (pools leave out id {layer.pool_mask})" if layer.pool_mask is not None else "")
    if isinstance(layer, ir.Masking):
        return "Masking", f"{layer.size} -> {layer.size}", f"mask_value={layer.mask_value:g}"
    if isinstance(layer, ir.Dense):
        opts = f"activation={_act_str(layer.activation)}" + ("" if layer.bias is not None else ", no bias")
        return "Dense", f"{layer.input_size} -> {layer.output_size}", opts + _carry_str(layer)
    if isinstance(layer, ir.Activation):
        return "Activation", f"{layer.input_size} -> {layer.output_size}", \
            f"activation={_act_str(layer.activation)}" + _carry_str(layer)
    if isinstance(layer, ir.Pool) and layer.terms is not None:
        return "Pool over time", f"{layer.input_size} -> {layer.output_size}", \
            f"terms={' + '.join(_term_str(t) for t in layer.terms)}, over={layer.over}"
    if isinstance(layer, ir.Pool):
        att = "" if "attn" not in layer.kinds else \
            f", score_activation={_act_str(layer.score_activation)}, eps={layer.eps:g}" + \
            ("" if layer.score_bias is None else f", score_bias of {len(layer.score_bias)} positions")
        return "Pool over time", f"{layer.input_size} -> {layer.output_size}", \
            f"kinds={'+'.join(layer.kinds)}, over={layer.over}" + att
    if isinstance(layer, ir.Conv1D):
        return "Conv1D", f"{layer.input_size} -> {layer.output_size}", \
            (f"kernel={layer.kernel}, stride={layer.stride}, dilation={layer.dilation}, padding={layer.padding}, "
             f"activation={_act_str(layer.activation)}" + ("" if layer.bias is not None else ", no bias"))
    if isinstance(layer, ir.Pool1D):
        return f"Pool1D {layer.kind}", f"{layer.size} -> {layer.size}", \
            f"window={layer.window}, stride={layer.stride}, padding={layer.padding}" + \
            (", count_pad" if layer.count_pad else "")
    if isinstance(layer, ir.RepeatVector):
        return "RepeatVector", f"{layer.size} -> {layer.size}", f"n={layer.n or 'T'}"
    if isinstance(layer, ir.Flatten):
        return "Flatten", f"{layer.size} -> {layer.output_size}", f"{layer.n} steps"
    if isinstance(layer, ir.Attention):
        return "Self-attention", f"{layer.input_size} -> {layer.output_size}", \
            f"heads={layer.heads}, causal={layer.causal}, scale={layer.scale:g}"
    name = f"Recurrent {layer.cell}, {layer.direction}"
    opts = [f"return_sequences={layer.return_sequences}"]
    if layer.hidden_size != layer.own_size:
        opts.append(f"hidden={layer.hidden_size}")
    if layer.direction == "bidirectional":
        opts.append(f"merge_mode={layer.merge_mode}")
    if layer.proj_size:
        opts.append(f"proj_size={layer.proj_size}")
    acts = [[_act_str(a) for a in al] for al in layer.activations]
    if any(al != list(ir.DEFAULT_ACTS[layer.cell]) for al in acts):
        opts.append("activations=" + " | ".join(",".join(al) for al in acts))
    if layer.cell == "gru":
        opts.append(f"linear_before_reset={layer.linear_before_reset}")
    if layer.clip is not None:
        opts.append(f"clip={layer.clip:g}")
    if layer.input_forget:
        opts.append("input_forget")
    if layer.peepholes:
        opts.append("peepholes")
    if not layer.use_bias:
        opts.append("no bias")
    if masks or layer.masked_output != "carry":
        opts.append(f"masked_output={layer.masked_output}")
    return name, f"{layer.input_size} -> {layer.output_size}", ", ".join(opts) + _carry_str(layer)


def _layer_json(i, layer):
    d = {"index": i, "type": ir.TYPE_NAMES[type(layer)], "input_size": layer.input_size,
         "output_size": layer.output_size}
    if isinstance(layer, ir.Embedding):
        d["vocab_size"] = layer.vocab_size
    if isinstance(layer, ir.Recurrent):
        d.update(hidden_size=layer.hidden_size, proj_size=layer.proj_size, state_size=layer.state_size,
                 num_directions=layer.num_directions, use_bias=layer.use_bias, peepholes=layer.peepholes)
    if isinstance(layer, ir.Dense):
        d["use_bias"] = layer.bias is not None
    d.update(layer.options())
    d["params"] = _layer_params(layer)
    d["tensors"] = {k: list(t.shape) for k, t in layer.tensors().items()}
    return d


def _state_parts(model):
    """Native state k -> (index in model.layers, 'h' or 'c', the layer)."""
    parts = []
    for i, layer in enumerate(model.layers):
        if isinstance(layer, ir.Recurrent):
            parts.append((i, "h", layer))
            if layer.cell == "lstm":
                parts.append((i, "c", layer))
        elif isinstance(layer, ir.Pool):
            parts.append((i, "pool", layer))
    return parts


def _states_info(model):
    native = _state_parts(model)
    shapes = _symbolic(model.state_shapes(2), model.state_shapes(3), (2,), (3,))
    sig = model.signature["states"]
    entries = sig if sig is not None else [
        {"parts": [[k, d] for d in range(getattr(layer, "num_directions", 1))], "stack": True}
        for k, (_, _, layer) in enumerate(native)]
    return [{"shape": shape, "stacked": bool(e["stack"]), "parts": _parts_info(native, e["parts"])}
            for e, shape in zip(entries, shapes)]


def _parts_info(native, parts):
    """[[k, d], ...] (native state k, direction d) -> [{layer, state, direction}, ...]"""
    out = []
    for k, d in parts:
        i, kind, layer = native[k]
        if isinstance(layer, ir.Pool):
            out.append({"layer": i, "state": kind, "direction": "forward"})
            continue
        direction = layer.direction if layer.num_directions == 1 else ("forward", "backward")[d]
        out.append({"layer": i, "state": kind, "direction": direction})
    return out


def _state_text(st):
    """'h of layer 1' / 'h of layers 1, 2 (forward, backward)' for one state entry."""
    kinds = sorted({p["state"] for p in st["parts"]}, key=["h", "c", "pool"].index)
    layers = list(dict.fromkeys(p["layer"] for p in st["parts"]))
    dirs = list(dict.fromkeys(p["direction"] for p in st["parts"]))
    what = f"{'/'.join(kinds)} of layer{'s' if len(layers) > 1 else ''} {', '.join(map(str, layers))}"
    if dirs != ["forward"]:
        what += f" ({', '.join(dirs)})"
    return what


def _graph_info(model):
    """The ONNX graph's own inputs and outputs (names, roles, shapes in its layout), or None."""
    g = model.signature["graph"]
    if g is None:
        return None
    widths = [s[2] for s in model.native_state_shapes(1)]
    native = _state_parts(model)

    def shape(axes, F=None, S=None, D=None):
        split = [sig_.split_size(a) for a in axes if sig_.split_size(a)]        # the features viewed as (k..., F)
        m = {"B": "batch", "T": "time", "1": 1, "F": F // int(np.prod(split)) if split and F else F, "S": S, "D": D}
        return [sig_.split_size(a) or m[a] for a in axes]

    def state(e, role):
        parts = _parts_info(native, e["parts"])
        return {"name": e["name"], "role": f"{role}: {_state_text({'parts': parts})}", "dtype": "float32",
                "shape": shape(e["axes"], F=widths[e["parts"][0][0]], S=len(e["parts"])), "parts": parts}
    inputs, outputs = [], []
    for e in g["inputs"]:
        if e["role"] == "x":
            inputs.append({"name": e["name"], "role": "sequence", "shape": shape(e["axes"], F=model.input_size),
                           "dtype": "int" if model.input_kind == "ids" else "float32"})
        elif e["role"] == "lengths":
            inputs.append({"name": e["name"], "role": "sequence lengths", "shape": ["batch"], "dtype": "int"})
        else:
            inputs.append(state(e, "initial state"))
    for e in g["outputs"]:
        if e["kind"] == "y":
            outputs.append({"name": e["name"], "role": "output" if e["last"] is None else "output, last step",
                            "shape": shape(e["axes"], F=model.output_size // e["dirs"], D=e["dirs"]),
                            "dtype": "float32"})
        else:
            outputs.append(state(e, "final state"))
    return {"inputs": inputs, "outputs": outputs}


def _outputs_info(model):
    """Shapes of what predict returns at two tiny sizes (the signature's shape program, nothing
    runs), told apart into batch, time and steps."""
    shapes = model.output_shapes
    t = 3                                   # a convolution or pooling window may need more steps
    while model._cm.output_steps(t) < 1 and t < 1 << 20:
        t *= 2
    t2 = 2 * t + 3 if model._cm.changes_time else t + 2      # far enough apart to move a strided window
    syms = _symbolic(shapes(2, t), shapes(3, t2), (2, t), (3, t2))
    return [{"shape": s, "every_step": "time" in s or "steps" in s, "dtype": "float32"} for s in syms]


def _meta_text(meta):
    source = meta.get("source")
    if source is None or source == "":
        return "built from layer specs (no converter)"
    simple = [f"{k}={v}" for k, v in meta.items()
              if k != "source" and v is not None and isinstance(v, (str, int, float, bool))]
    return str(source) + (f" ({', '.join(simple)})" if simple else "")


def _model_info(path):
    """(everything `fastrnn info` says as a JSON-able dict, the loaded Model)."""
    import fastrnn
    from .precision import weight_bytes
    before = _heap_in_use()
    model = _load_model(path)
    after = _heap_in_use()
    memory = after - before if before is not None and after is not None and after > before else None
    layers = [_layer_json(i, l) for i, l in enumerate(model.layers)]
    params = sum(l["params"] for l in layers)
    if model.input_kind == "ids":
        emb = model.layers[0]
        inp = {"kind": "ids", "shape": ["batch", "time"], "dtype": "int", "vocab_size": emb.vocab_size,
               "mask_zero": emb.mask_zero}
    else:
        inp = {"kind": "float", "shape": ["batch", "time", model.input_size], "dtype": "float32",
               "features": model.input_size}
    masking = next((l for l in model.layers if isinstance(l, ir.Masking)), None)
    if masking is not None:
        inp["mask_value"] = masking.mask_value
    stream, why = _stream_or_why(model)
    can_stream = stream is not None
    cpu = fastrnn.cpu_info()
    return {
        "file": os.fspath(path), "file_bytes": os.path.getsize(path), "model": repr(model),
        "source": model.meta.get("source"), "meta": model.meta,
        "input": inp, "num_outputs": model.num_outputs, "outputs": _outputs_info(model),
        "layers": layers, "params": params, "precision": model.precision,
        "weight_bytes": weight_bytes(model), "memory_bytes": memory,
        "states": _states_info(model),
        "stream_states": [{"shape": s} for s in _symbolic(model.native_state_shapes(2),
                                                           model.native_state_shapes(3), (2,), (3,))],
        "isa": model.isa, "isa_available": cpu["available"], "threads": cpu["threads"],
        "can_stream": can_stream, "stream_unsupported": why,
        "onnx": _graph_info(model),
    }, model


def _table(rows, indent="  ", right=()):
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _info_text(info, model):
    inp = info["input"]
    lines = [f"{info['file']}: {info['model']}", f"source    {_meta_text(info['meta'])}"]
    if inp["kind"] == "ids":
        s = f"token ids (batch, time), any integer dtype, in [0, {inp['vocab_size']})"
        if inp["mask_zero"]:
            s += "; id 0 masks a step (mask_zero)"
    else:
        s = f"float32 (batch, time, {inp['features']}) (other float dtypes are converted)"
    if "mask_value" in inp:
        s += f"; a step whose features all equal {inp['mask_value']:g} is masked (Masking)"
    lines.append(f"input     {s}")
    outs = info["outputs"]
    time = model.signature["time"]
    tail = time["tail"] if isinstance(time, dict) else None
    for j, o in enumerate(outs):
        head = "output    " if j == 0 else "          "
        tag = f"[{j}] " if len(outs) > 1 else ""
        steps = (f"the last {tail} steps (fewer when the sequence is shorter)" if tail and o["every_step"]
                 else "every step" if o["every_step"] else "last step only")
        lines.append(f"{head}{tag}{_shape_str(o['shape'])} float32, {steps}")
    if len(outs) > 1:
        lines.append(f"          (predict returns a list of {len(outs)} arrays)")
    masks = any(l["type"] == "masking" or l.get("mask_zero") for l in info["layers"])
    rows = [("#", "layer", "sizes", "options", "params")]
    for j, layer in enumerate(model.layers):
        name, sizes, opts = _layer_text(layer, masks)
        rows.append((str(j), name, sizes, opts, f"{info['layers'][j]['params']:,}"))
    rows.append(("", "total", "", "", f"{info['params']:,}"))
    lines.append("layers")
    lines += _table(rows, right=(0, 4))
    if info["states"]:
        layout = "native layout" if model.signature["states"] is None else "the source's layout"
        lines.append(f"states    initial_state / return_state=True ({layout}):")
        rows = [(f"[{j}]", _shape_str(st["shape"]), _state_text(st)) for j, st in enumerate(info["states"])]
        lines += _table(rows, indent="            ")
        if model.signature["states"] is not None:
            lines.append("          Stream.state (native layout): "
                         + ", ".join(_shape_str(s["shape"]) for s in info["stream_states"]))
    else:
        lines.append("states    none (no recurrent layer)")
    mem = info["memory_bytes"]
    prec = {"fp32": "float32", "bf16": "bf16 matrices (the rest float32)",
            "int8": "int8 matrices with a float32 scale per row (the rest float32)"}[info["precision"]]
    lines.append(f"weights   {info['params']:,} parameters: {info['weight_bytes']:,} bytes {prec} "
                 f"({_human_bytes(info['weight_bytes'])}) in a {info['file_bytes']:,}-byte file")
    if mem is not None:
        lines.append(f"          {mem:,} bytes ({_human_bytes(mem)}) in memory once packed for the "
                     f"{info['isa']} kernels (measured at load)")
    lines.append(f"kernels   {info['isa']} (this CPU: {', '.join(info['isa_available'])}); "
                 f"threads {info['threads']}")
    if info["can_stream"]:
        x_t = "(batch,) ids" if inp["kind"] == "ids" else f"(batch, {inp['features']})"
        if len(outs) > 1:
            ret = (f"the list of {len(outs)} outputs for that step (step_into writes the main output, "
                   f"(batch, {model.output_size}))")
        else:
            ret = f"(batch, {model.output_size})"
        lines.append(f"stream    yes: step(x_t) takes {x_t}, returns {ret}")
    else:
        lines.append(f"stream    no: {info['stream_unsupported']}")
    g = info["onnx"]
    if g is not None:
        for label, entries in (("onnx in  ", g["inputs"]), ("onnx out ", g["outputs"])):
            rows = [(e["name"], _shape_str(e["shape"]), e["role"]) for e in entries]
            tab = _table(rows, indent="")
            lines.append(f"{label} {tab[0]}")
            lines += ["          " + t for t in tab[1:]]
    return "\n".join(lines)


def _info(args):
    import json
    info, model = _model_info(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_info_text(info, model))
    return 0


# ---- run -----------------------------------------------------------------------------------------

def _load_array_file(path, what):
    """np.load without pickle: an ndarray (.npy) or a dict of arrays (.npz), recognised by content."""
    if not os.path.exists(path):
        raise _Error(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise _Error(f"{what} {path}: is a directory")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise _Error(f"{what} {path}: {e.strerror or _oneline(e)}") from None
    if not (magic.startswith(b"\x93NUMPY") or magic.startswith(b"PK")):
        if magic[:1] == b"\x80":                # a pickle (protocol 2+): numpy would unpickle it
            raise _Error(f"{what} {path}: is a pickle file, which fastrnn never loads "
                         f"(save a numeric array with numpy.save)")
        raise _Error(f"{what} {path}: not a NumPy .npy/.npz file")
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        if not isinstance(data, np.ndarray):
            raise ValueError(f"unexpected content {type(data).__name__}")
        return data
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, zlib.error) as e:   # truncated or not a zip
        msg = _oneline(e)
        if "pickle" in msg.lower() or "object arrays" in msg.lower():
            raise _Error(f"{what} {path}: holds Python objects, which only unpickling could read; "
                         f"fastrnn never unpickles (save a numeric array with numpy.save)") from None
        raise _Error(f"{what} {path}: not a NumPy .npy/.npz file ({msg})") from None


def _save_arrays(path, arrays):
    """arrays: one ndarray (a .npy file) or a dict name -> array (an .npz file), written to `path`
    exactly (numpy would append a suffix to a name without one)."""
    if os.path.isdir(path):
        raise _Error(f"output {path}: is a directory")
    tmp = f"{path}.tmp{os.getpid()}"       # write aside, then rename: never half a file
    try:
        with open(tmp, "wb") as f:
            if isinstance(arrays, dict):   # not np.savez(f, **arrays): a graph output may be named "file"
                with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                    for name, a in arrays.items():
                        with z.open(f"{name}.npy", "w", force_zip64=True) as m:
                            np.lib.format.write_array(m, np.asanyarray(a), allow_pickle=False)
            else:
                np.save(f, arrays, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _Error(f"output {path}: {e.strerror or _oneline(e)}") from None
        raise


def _run(args):
    model = _load_model(args.model)
    out_npz = args.output.lower().endswith(".npz")
    data = _load_array_file(args.input, "input")
    graph = model.signature["graph"]
    if isinstance(data, dict):
        if graph is None:
            raise _Error(f"input {args.input}: an .npz input holds the named inputs of a model converted "
                         f"from ONNX; this model takes one array: save x as a .npy file")
        if args.lengths:
            raise _Error(f"--lengths goes with a .npy input; put the lengths in {args.input} under the "
                         f"graph's lengths input name")
        names = [o["name"] for o in graph["outputs"]]
        if len(names) > 1 and not out_npz:
            raise _Error(f"this ONNX graph has {len(names)} outputs ({', '.join(names)}): "
                         f"give an .npz output file")
        with _Threads(args.threads):
            ys = model.run(None, data)
        result = dict(zip(names, ys)) if out_npz else ys[0]
    else:
        n = model.num_outputs
        if n > 1 and not out_npz:
            raise _Error(f"this model returns {n} outputs (a list): give an .npz output file "
                         f"(arrays output_0 .. output_{n - 1})")
        lengths = _load_array_file(args.lengths, "lengths") if args.lengths else None
        if isinstance(lengths, dict):
            raise _Error(f"lengths {args.lengths}: expected a .npy file of integers (batch,), got an .npz")
        with _Threads(args.threads):
            y = model.predict(data, lengths=lengths)
        if isinstance(y, list):
            result = {f"output_{j}": a for j, a in enumerate(y)}
        else:
            result = {"output_0": y} if out_npz else y
    _save_arrays(args.output, result)
    if isinstance(result, dict):
        desc = ", ".join(f"{k} {a.dtype} {_shape_str(a.shape)}" for k, a in result.items())
    else:
        desc = f"{result.dtype} {_shape_str(result.shape)}"
    print(f"wrote {args.output}: {desc}")
    return 0


# ---- bench ---------------------------------------------------------------------------------------

class _Progress:
    """A one-line text bar on stderr, redrawn with \\r at most 10 times a second."""
    WIDTH = 30

    def __init__(self, enabled, total):
        import time
        self.enabled, self.total, self.clock = enabled, max(total, 1e-9), time.perf_counter
        self.last, self.drawn, self.line = 0.0, 0, ""

    def update(self, label, done):
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last < 0.1 and done < self.total:
            return
        self.last = now
        frac = min(max(done / self.total, 0.0), 1.0)
        n = int(round(frac * self.WIDTH))
        line = f"{label:<8} [{'#' * n}{'.' * (self.WIDTH - n)}] {frac * 100:3.0f}%"
        if line == self.line:
            return
        self.line = line
        sys.stderr.write("\r" + line)
        sys.stderr.flush()
        self.drawn = len(line)

    def close(self):
        if self.enabled and self.drawn:
            sys.stderr.write("\r" + " " * self.drawn + "\r")
            sys.stderr.flush()
            self.drawn = 0


def _stream_or_why(model):
    """(a batch-1 Stream, None), or (None, why the model cannot stream)"""
    from .errors import UnsupportedError
    try:
        return model.stream(1), None
    except UnsupportedError as e:
        return None, _oneline(e)


def _bench_stream(model, s, seconds, seed, progress):
    """µs per s.step_into (s: a batch-1 Stream of model): a loop over preallocated inputs (64
    random steps, cycled), the stream reset before each repeat; the median over the repeats."""
    import statistics
    import time
    L, reps = 64, 7
    x = _random_input(model, 1, L, seed)
    x = x.reshape(L, 1) if model.input_kind == "ids" else np.ascontiguousarray(x[0][:, None, :])
    views = [x[t] for t in range(L)]          # (1,) ids or (1, features) each
    out = np.empty((1, model.output_size), np.float32)
    step = s.step_into
    clock = time.perf_counter

    def loop(seq, blocks):
        t0 = clock()
        for _ in range(blocks):
            for xt in seq:
                step(xt, out)
        return clock() - t0
    def plan(n):                              # n steps as (inputs, times round them)
        return (views[:n], 1) if n < L else (views, n // L)
    loop(views[:1], 1)                        # warm-up (first touch of the stream's buffers)
    n, target = 8, seconds / reps
    while True:                               # calibrate on at least 10 ms (or one repeat's time)
        t = loop(*plan(n))
        if t >= min(0.01, target) or n >= 1 << 30:
            break
        n *= 4 if t < min(0.01, target) / 8 else 2
    n = max(1, int(target / (t / n)))
    seq, blocks = plan(n)
    times = []
    for r in range(reps):
        s.reset()
        times.append(loop(seq, blocks) / (blocks * len(seq)) * 1e6)
        progress.update("stream", seconds * (r + 1) / reps)
    med = statistics.median(times)
    return {"batch": 1, "us_per_step": med, "us_per_step_min": min(times), "steps_per_s": 1e6 / med,
            "repeats": reps, "steps_per_repeat": blocks * len(seq)}


def _bench_predict(model, batch, steps, seconds, seed, progress, offset):
    """Whole-sequence predict on a random (batch, steps) input: one warm-up call, then timed calls
    until `seconds` have passed (at least one); median."""
    import statistics
    import time
    x = _random_input(model, batch, steps, seed)
    clock = time.perf_counter
    model.predict(x)                          # warm-up (allocates the workspace)
    times, start = [], clock()
    while True:
        t0 = clock()
        model.predict(x)
        times.append(clock() - t0)
        elapsed = clock() - start
        progress.update("predict", offset + min(elapsed, seconds))
        if elapsed >= seconds or len(times) >= 100000:
            break
    med = statistics.median(times)
    return {"batch": batch, "steps": steps, "ms_per_call": med * 1e3, "ms_per_call_min": min(times) * 1e3,
            "sequences_per_s": batch / med, "steps_per_s": batch * steps / med, "calls": len(times)}


def _fmt(v):
    """A time or rate with three significant digits, thousands separated."""
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}" if v >= 1 else f"{v:.3g}"


def _bench(args):
    import json
    from . import __version__
    model = _load_model(args.model)
    if args.precision and args.precision != model.precision:
        model = model.with_precision(args.precision)
    s, why = _stream_or_why(model)
    total = args.seconds * (2 if why is None else 1)
    progress = _Progress(args.progress or (sys.stderr.isatty() and total >= 1), total)
    try:
        with _Threads(args.threads) as threads:
            stream = _bench_stream(model, s, args.seconds, args.seed, progress) if s is not None else None
            offset = args.seconds if why is None else 0.0
            pred = _bench_predict(model, args.batch, args.steps, args.seconds, args.seed, progress, offset)
    finally:
        progress.close()
    res = {"file": os.fspath(args.model), "model": repr(model), "fastrnn": __version__, "isa": model.isa,
           "precision": model.precision, "threads": threads, "stream": stream, "stream_skipped": why, "predict": pred}
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['file']}: {res['model']}")
    print(f"fastrnn {__version__}, {res['isa']} kernels, {res['precision']} weights, "
          f"{threads} thread{'s' if threads != 1 else ''}")
    rows = [("", "batch", "steps", "median", "min", "throughput", "runs")]
    if stream is not None:
        rows.append(("stream step", "1", "1", f"{_fmt(stream['us_per_step'])} µs/step",
                     f"{_fmt(stream['us_per_step_min'])} µs/step", f"{_fmt(stream['steps_per_s'])} steps/s",
                     f"{stream['repeats']} x {stream['steps_per_repeat']:,} steps"))
    rows.append(("predict", str(pred["batch"]), str(pred["steps"]), f"{_fmt(pred['ms_per_call'])} ms/call",
                 f"{_fmt(pred['ms_per_call_min'])} ms/call",
                 f"{_fmt(pred['sequences_per_s'])} seq/s, {_fmt(pred['steps_per_s'])} steps/s",
                 f"{pred['calls']:,} calls"))
    for line in _table(rows, right=(1, 2, 3, 4)):
        print(line)
    if stream is None:
        print(f"stream step skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(convert_main())
