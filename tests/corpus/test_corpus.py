"""The real-world model corpus (tests/corpus/README.md): every model of torch_models.CASES and
keras_models.CASES converted the way a user would, from every capture that exists for it, and
compared with the oracle (oracle.py) on a seeded random input (batch 3, time 7).

Captures (the part of a case id after the model name):
  module        fastrnn.convert(live module, example_input=forward's arguments)
  script        torch.jit.script -> save -> fastrnn.convert(path)
  trace         torch.jit.trace(module, forward's arguments) -> save -> fastrnn.convert(path)
  onnx_legacy   torch.onnx.export(dynamo=False, dynamic batch/time axes) -> fastrnn.convert(path),
                m.run(None, feeds) vs onnxruntime            (whole-sequence modules only)
  onnx_dynamo   torch.export.export(strict=False, Dim.AUTO on batch/time) ->
                torch.onnx.export(program, dynamo=True), likewise (exports cached, see
                _export_onnx_cached)
  keras         fastrnn.convert(live keras.Model)

THE RATCHET. Most of these models do not convert today; the importers are being rewritten so that
all of them do. Nothing is skipped or xfailed; instead the dicts below record today's state and
the tests assert it, so the lists can only shrink:
  REFUSED_TODAY   conversion raises a FastRNNError today (a clean refusal; value: the start of
                  the message seen today, informational). When such a case converts, its test
                  FAILS telling you to remove it from the dict (and then it must match the oracle).
  CRASHES_TODAY   conversion raises another exception type today: a bug. The test asserts that
                  exact type, so it fails once fixed, telling you to move the case.
  WRONG_TODAY     conversion succeeds but the result does not match the oracle (or predict /
                  stream / run raises): a bug; the test asserts the mismatch still happens.
  CAPTURE_FAILS_TODAY
                  the source framework itself cannot produce the artifact (torch.jit.script,
                  torch.jit.trace or torch.onnx.export raises, or onnxruntime cannot run the
                  export): an exporter limitation, not a fastrnn failure. Asserted the same way.
Every other case must convert and match the oracle.

Run: KERAS_BACKEND=torch OPENBLAS_NUM_THREADS=1 python -m pytest -q tests/corpus
`python -m tests.corpus.test_corpus` prints today's table (README).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import warnings
import zlib

import numpy as np
import pytest
import torch

import fastrnn

from . import oracle
from . import torch_models as TM

B, T = 3, 7
TORCH_CAPTURES = ("module", "script", "trace", "onnx_legacy", "onnx_dynamo")

torch.set_num_threads(1)

# ---------------------------------------------------------------------------------------------
# today's state (the ratchet)

REFUSED_TODAY = {
    'curiousily_lstm_autoencoder-script':    # a forward of one fixed size: converts with example_input
        "UnsupportedError: convert: CuriousilyRecurrentAutoencoder: 1 operation cannot be lowered to fastrnn's pipeline: reshape: view(1, 7, 1) of a tensor of shape (3, 5, 1)",
    'bentrevett_seq2seq_packed_encoder-onnx_legacy':
        "UnsupportedError: convert: graph output '156' is an intermediate tensor of the pipeline (only the end of the pipeline and final states can be outputs)",
    'tut_char_rnn_generation_step-script':
        "UnsupportedError: convert: TutCharRNNGenerator: 1 operation cannot be lowered to fastrnn's pipeline: cat: torch.cat of tensors other than rows of one h_n (e.g. torch.cat([h_n[-2], h_n[-1]], 1))",
    'tut_char_rnn_generation_step-trace':
        "UnsupportedError: convert: TutCharRNNGenerator: 1 operation cannot be lowered to fastrnn's pipeline: cat: torch.cat of tensors other than rows of one h_n (e.g. torch.cat([h_n[-2], h_n[-1]], 1))",
    'ctc_text_rcnn-trace':
        "UnsupportedError: convert: CTCTextRCNN: 1 operation cannot be lowered to fastrnn's pipeline: max_pool1d: a max pooling with no output step for the example's 5 steps (the trace's tuple input keeps no sizes; MaxPool1d(pad_size) needs pad_size steps)",
    'ctc_text_rcnn-onnx_legacy':
        "UnsupportedError: convert: ONNX node '/Concat' (Concat, node 26): concatenates values that are not final states or shapes linear (ONNX node '/fc/Gemm', Gemm): a Linear over the last axis of a tensor with axes (B, F, T), which is not the feature axis)",
    'ctc_text_rcnn-onnx_dynamo':
        "UnsupportedError: convert: ONNX node 'node_Mul_122' (Mul, node 13): a Mul other than merging a bidirectional layer's directions linear (ONNX node 'node_linear', Gemm): a Linear over the last axis of a tensor with axes (B, F, T), which is not the feature axis)",
    'pp_text_rnn-onnx_dynamo':
        'UnsupportedError: convert: the graph has no LSTM, GRU or RNN node (the dynamo exporter unrolls nn.RNN)',
    'pp_text_rcnn-trace':
        "UnsupportedError: convert: PPTextRCNN: 1 operation cannot be lowered to fastrnn's pipeline: max_pool1d: a max pooling with no output step for the example's 5 steps (the trace fixed the window to 7 steps)",
    'pp_text_rcnn-onnx_legacy':
        "UnsupportedError: convert: ONNX node '/If' (If, node 36): control flow is not supported",
    'pp_text_rcnn-onnx_dynamo':
        "UnsupportedError: convert: ONNX node 'node_cat' (Concat, node 5): concatenates values that are not final states or shapes",
    'gru4rec_session_step-trace':    # one step of (B,) ids: the archive keeps no shapes; converts with example_input
        "UnsupportedError: convert: GRU4REC: 1 operation cannot be lowered to fastrnn's pipeline: scatter_: scatter into Zeros",
}

CRASHES_TODAY = {
}

WRONG_TODAY = {
}

CAPTURE_FAILS_TODAY = {
    'salesforce_awd_lstm-script':
        "torch.jit.script: RuntimeError: 'Tensor' object has no attribute or method 'new'.",
    'salesforce_awd_lstm-trace':
        'torch.jit.trace: RuntimeError: Only tensors, lists, tuples of tensors, or dictionary of tensors can be output from traced functions',
    'salesforce_awd_lstm-onnx_legacy':     # WeightDrop sets weight_hh_l0 in forward
        'torch.onnx.export(dynamo=False): RuntimeError: state_dict changed after running the tracer',
    'absa_pytorch_lstm-script':
        'torch.jit.script: RuntimeError: Type mismatch: ht is set to type Tensor in the true branch and type Tuple[Tensor, Tensor] in the false branch',
    'absa_pytorch_lstm-onnx_legacy':
        'torch.onnx.export(dynamo=False): RuntimeError: vector::_M_range_check',
    'absa_pytorch_lstm-onnx_dynamo':
        "torch.onnx.export(dynamo=True): TypeError: zeros(): argument 'size' failed to unpack the object at pos 2",
    'gru4rec_session_step-script':
        "torch.jit.script: RuntimeError: Module 'GRU4REC' has no attribute 'look_up'",
    'rtvc_speaker_encoder-script':
        'torch.jit.script: RuntimeError: Arguments for call are not valid.',
    'tut_chatbot_encoder-script':
        'torch.jit.script: RuntimeError: strides() called on an undefined Tensor',
    'tut_chatbot_encoder-onnx_dynamo':
        'torch.onnx.export(dynamo=True): TypeError: zeros(): argument \'size\' failed to unpack the object at pos 2 with error "type must be tuple of ints,but got FakeTensor"',
    'grucell_forecaster-script':
        'the captured artifact cannot run the test input: RuntimeError: 0 INTERNAL ASSERT FAILED at alias_analysis.cpp: "We don\'t have an op for aten::dim but it isn\'t a special case" (torch.jit.script of x.dim() on an Optional hidden)',
    'morvan_rnn_regressor-script':
        'the captured artifact cannot run the test input: RuntimeError: For batched 3-D input, hx should also be 3-D but got 1-D tensor (the scripted forward types h_state=None as a Tensor)',
    'wheelchair_cnn_lstm-script':
        "torch.jit.script: UnsupportedNodeError: SetComp aren't supported",
    'bentrevett_sentiment_lstm-onnx_dynamo':
        'torch.onnx.export(dynamo=True): TypeError: zeros(): argument \'size\' failed to unpack the object at pos 2 with error "type must be tuple of ints,but got FakeTensor"',
    'bentrevett_sentiment_packed_bilstm-onnx_dynamo':
        'torch.onnx.export(dynamo=True): TypeError: zeros(): argument \'size\' failed to unpack the object at pos 2 with error "type must be tuple of ints,but got FakeTensor"',
    'bentrevett_sentiment_rnn-onnx_dynamo':
        'torch.onnx.export(dynamo=True): DataDependentOutputException: aten.equal.default',
    'bentrevett_seq2seq_packed_encoder-onnx_dynamo':
        'torch.onnx.export(dynamo=True): TypeError: zeros(): argument \'size\' failed to unpack the object at pos 2 with error "type must be tuple of ints,but got FakeTensor"',
    'deepspeech_rnns-onnx_dynamo':
        'torch.onnx.export(dynamo=True): TypeError: zeros(): argument \'size\' failed to unpack the object at pos 2 with error "type must be tuple of ints,but got FakeTensor"',
    'deepspeech_rnns-script':
        'torch.jit.script: RuntimeError: Arguments for call are not valid.',
    'dlwizard_rnn_relu-script':
        'torch.jit.script: RuntimeError: Class Variable does not have an __init__ function defined:',
    'ex_time_sequence_prediction-script':
        'torch.jit.script: RuntimeError: all inputs of range must be ints, found Tensor (inferred) in argument 0:',
    'ex_word_language_model_lstm-script':
        'torch.jit.script: RuntimeError: Arguments for call are not valid.',
    'kaggle_quora_lstm_gru_attention-script':
        'torch.jit.script: RuntimeError: Unsupported value kind: Tensor',
    'grucell_forecaster-trace':
        'torch.jit.trace: TypeError: torch.jit.trace cannot take a None argument',
    'kaggle_jigsaw_simple_lstm-script':
        'torch.jit.script: RuntimeError: Python type cannot be used as a value:',
    'luopeixiang_ner_bilstm-onnx_dynamo':
        'torch.onnx.export(dynamo=True): TypeError: zeros(): argument \'size\' failed to unpack the object at pos 2 with error "type must be tuple of ints,but got FakeTensor"',
    'morvan_rnn_regressor-trace':
        'torch.jit.trace: TypeError: torch.jit.trace cannot take a None argument',
    'mstsn_gru-script':
        'torch.jit.script: RuntimeError: strides() called on an undefined Tensor',
    'spro_char_rnn_step-script':
        'torch.jit.script: RuntimeError: Arguments for call are not valid.',
    'tut_dynamic_quantization_lstm_lm-onnx_dynamo':
        "torch.onnx.export(dynamo=True): AttributeError: __torch__.torch.classes.rnn.CellParamsBase (of Python compilation unit at: 0) does not have a field with name '__obj_flatten__'",
    'tut_dynamic_quantization_lstm_lm-onnx_legacy':
        'torch.onnx.export(dynamo=False): RuntimeError: Only tuples, lists and Variables are supported as JIT inputs/outputs. Dictionaries and strings are also accepted, but their usage is not recommended. Her',
    'tut_dynamic_quantization_lstm_lm-script':
        'torch.jit.script: RuntimeError: Arguments for call are not valid.',
    'udacity_char_rnn-script':
        'torch.jit.script: RuntimeError: Arguments for call are not valid.',
    'udacity_sentiment_rnn-script':
        'torch.jit.script: RuntimeError: Arguments for call are not valid.',
    'yunjey_birnn-script':
        "torch.jit.script: RuntimeError: python value of type 'device' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local",
    'ctc_text_rnn-script':
        'torch.jit.script: RuntimeError: Tensor (inferred) cannot be used as a tuple: (TorchScript types an unannotated x as a Tensor; the source unpacks x, _ = x)',
    'ctc_text_rnn_att-script':
        'torch.jit.script: RuntimeError: Tensor (inferred) cannot be used as a tuple: (TorchScript types an unannotated x as a Tensor; the source unpacks x, _ = x)',
    'ctc_text_rcnn-script':
        'torch.jit.script: RuntimeError: Tensor (inferred) cannot be used as a tuple: (TorchScript types an unannotated x as a Tensor; the source unpacks x, _ = x)',
    'pp_text_lstm-script':
        "torch.jit.script: RuntimeError: python value of type 'device' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local (the global device written for the source's .cuda())",
    'pp_text_lstm_attn-script':
        "torch.jit.script: RuntimeError: python value of type 'device' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local (the global device written for the source's .cuda())",
    'pp_text_rnn-script':
        "torch.jit.script: RuntimeError: python value of type 'device' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local (the global device written for the source's .cuda())",
    'pp_text_rcnn-script':
        "torch.jit.script: RuntimeError: python value of type 'device' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local (the global device written for the source's .cuda())",
    'pp_text_self_attention-script':
        "torch.jit.script: RuntimeError: python value of type 'device' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local (the global device written for the source's .cuda())",
    'yunjey_rnn-script':
        "torch.jit.script: RuntimeError: python value of type 'device' cannot be used as a value. Perhaps it is a closed over global variable? If so, please consider passing it in as an argument or use a local",
}


# ---------------------------------------------------------------------------------------------
# case ids

def torch_case_ids():
    out = []
    for c in TM.CASES:
        for cap in TORCH_CAPTURES:
            if cap.startswith("onnx") and c.kind != "sequence":
                continue
            out.append(f"{c.name}-{cap}")
    return out


def keras_case_ids():
    from . import keras_models as KM
    return [f"{c.name}-keras" for c in KM.CASES]


def _split(case_id):
    name, cap = case_id.rsplit("-", 1)
    return name, cap


def _rng(case_id, salt=0):
    return np.random.default_rng(zlib.crc32(case_id.split("-")[0].encode()) + salt)


class CaptureFailed(Exception):
    """The source framework could not produce the artifact (exporter limitation)."""


class Wrong(Exception):
    """Converted, but the result does not match the oracle."""


def _msg(e):
    """The exception's type and first line, plus the first itemised reason of a multi-line refusal
    (`- op (File ..., line N, in forward: code): why` -> `op: why`)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    out = f"{type(e).__name__}: {lines[0] if lines else ''}"
    for ln in lines[1:]:
        if ln.startswith("- "):
            item = ln[2:]
            if " (File " in item:
                item = item.split(" (File ", 1)[0] + ": " + item.rsplit("): ", 1)[-1]
            return f"{out} {item}"
    return out


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------
# torch: build the capture, convert it, check it

def _example_args(case, module, rng):
    """forward's arguments as the source calls it, for conversion and tracing (one sequence for an
    unbatched case, one step of the loop for a step case: Case.inputs says which)."""
    return case.inputs(module, B, T, rng)


def _flat_args(args):
    """forward's arguments -> (names, tensors) as torch.onnx.export flattens them."""
    names, tensors = [], []
    for i, a in enumerate(args):
        if a is None:
            continue
        if isinstance(a, (tuple, list)) and all(isinstance(t, (tuple, list)) for t in a):
            for k, pair in enumerate(a):       # a list of one (h, c) per module (AWD-LSTM's hidden)
                for j, t in enumerate(pair):
                    names.append(f"{'hc'[j]}0_{k}" if len(pair) == 2 else f"arg{i}_{k}_{j}")
                    tensors.append(t)
        elif isinstance(a, (tuple, list)):
            for j, t in enumerate(a):
                names.append(["h0", "c0"][j] if len(a) == 2 else f"arg{i}_{j}")
                tensors.append(t)
        else:
            names.append("input" if i == 0 else ("lengths" if a.dtype == torch.int64 and a.dim() == 1 else "h0"))
            tensors.append(a)
    return names, tensors


def _dynamic_axes(case, names, tensors):
    axes = {}
    for n, t in zip(names, tensors):
        if n == "input":
            if case.layout == "time_major":
                axes[n] = {0: "time", 1: "batch"}
            elif case.layout == "batch_feature_time":
                axes[n] = {0: "batch", 2: "time"}
            else:
                axes[n] = {0: "batch", 1: "time"} if t.dim() >= 2 else {0: "batch"}
        elif n == "lengths":
            axes[n] = {0: "batch"}
        elif t.dim() == 3:
            axes[n] = {1: "batch"}
    return axes


def _dynamic_shapes(case, args):
    """torch.export's dynamic_shapes for forward's arguments: Dim.AUTO on the batch and time axes
    (torch specializes an axis the model's code fixes, e.g. the time axis of an unrolled loop)."""
    A = torch.export.Dim.AUTO

    def one(i, a):
        if a is None:
            return None
        if isinstance(a, (tuple, list)):      # its structure mirrored (a list of (h, c) tuples stays one)
            return type(a)(one(i if j == 0 else -1, t) for j, t in enumerate(a))
        if i == 0:
            return {0: A, 1: A} if case.layout != "batch_feature_time" else {0: A, 2: A}
        if a.dim() == 1:
            return {0: A}
        return {1: A} if a.dim() == 3 else {0: A}
    return tuple(one(i, a) for i, a in enumerate(args))


_EXPORT_CACHE = os.environ.get("FASTRNN_CORPUS_CACHE",
                               os.path.join(tempfile.gettempdir(), "fastrnn-corpus-exports"))


def _cache_key(case_id):
    """Exports depend on torch, the exporter code below and the model's source: the key hashes them."""
    import inspect
    h = hashlib.sha256()
    for part in (torch.__version__, getattr(__import__("onnxscript"), "__version__", ""), case_id,
                 inspect.getsource(TM), inspect.getsource(_export_onnx), inspect.getsource(_dynamic_shapes),
                 inspect.getsource(_flat_args)):
        h.update(str(part).encode())
    return h.hexdigest()[:24]


def _export_onnx_cached(case_id, case, module, args, path, dynamo):
    """torch.onnx.export(dynamo=True) takes 2-10 s a model; its result (the .onnx file, or the
    exporter's failure) is kept in _EXPORT_CACHE ($FASTRNN_CORPUS_CACHE, default a directory
    under the system temp dir; FASTRNN_CORPUS_CACHE=off disables it) under a key of torch's
    version, the export code and the model source, so a rerun of an unchanged corpus does not
    export again. The legacy exporter is fast and always runs."""
    if not dynamo or _EXPORT_CACHE == "off":
        return _export_onnx(case, module, args, path, dynamo)
    key = os.path.join(_EXPORT_CACHE, _cache_key(case_id))
    if os.path.exists(key + ".err"):
        with open(key + ".err") as f:
            raise CaptureFailed(f.read())
    if not os.path.exists(key + ".onnx"):
        os.makedirs(_EXPORT_CACHE, exist_ok=True)
        try:
            _export_onnx(case, module, args, path, dynamo)
        except CaptureFailed as e:
            with open(key + ".err.tmp", "w") as f:
                f.write(str(e))
            os.replace(key + ".err.tmp", key + ".err")
            raise
        if os.path.exists(str(path) + ".data"):    # weights the exporter wrote as external data
            shutil.copyfile(str(path) + ".data", key + ".onnx.data.tmp")
            os.replace(key + ".onnx.data.tmp", key + ".onnx.data")
        shutil.copyfile(path, key + ".onnx.tmp")
        os.replace(key + ".onnx.tmp", key + ".onnx")
    else:
        shutil.copyfile(key + ".onnx", path)
        if os.path.exists(key + ".onnx.data"):
            shutil.copyfile(key + ".onnx.data", str(path) + ".data")
    import onnxruntime as ort
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise CaptureFailed(f"onnxruntime cannot load the export: {_msg(e)}") from None
    return sess, _flat_args(args)[0]


def _export_onnx(case, module, args, path, dynamo):
    """legacy: torch.onnx.export(dynamo=False, dynamic_axes=batch/time, opset 17).
    dynamo: torch.export.export(strict=False, dynamic_shapes=Dim.AUTO batch/time), then
    torch.onnx.export(exported_program, dynamo=True) -- the exporter's first strategy, without its
    slow fallbacks (a failure of torch.export is the exporter's limitation)."""
    names, tensors = _flat_args(args)
    try:
        with _quiet():
            if dynamo:
                ep = torch.export.export(module, tuple(args), dynamic_shapes=_dynamic_shapes(case, args),
                                         strict=False)
                torch.onnx.export(ep, f=str(path), dynamo=True, input_names=names)
            else:
                torch.onnx.export(module, tuple(args), str(path), dynamo=False, input_names=names,
                                  dynamic_axes=_dynamic_axes(case, names, tensors), opset_version=17)
    except Exception as e:  # noqa: BLE001 - any exporter failure is the exporter's
        raise CaptureFailed(f"torch.onnx.export(dynamo={dynamo}): {_msg(e)}") from None
    import onnxruntime as ort
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001
        raise CaptureFailed(f"onnxruntime cannot load the export: {_msg(e)}") from None
    return sess, names


def _onnx_feeds(case, module, sess, names, rng):
    """A second input of the same shapes, fed by the graph's own input names."""
    args = case.inputs(module, B, T, rng)
    _, tensors = _flat_args(args)
    by_name = dict(zip(names, tensors))
    feeds = {}
    for i in sess.get_inputs():
        if i.name not in by_name:
            raise CaptureFailed(f"the export has an input {i.name!r} that forward does not take")
        feeds[i.name] = oracle.np_(by_name[i.name])
    try:
        sess.run(None, feeds)
    except Exception as e:  # noqa: BLE001
        raise CaptureFailed(f"onnxruntime cannot run the export: {_msg(e)}") from None
    return feeds


def _torchscript(case, module, args, path, cap):
    try:
        with _quiet():
            if cap == "script":
                sm = torch.jit.script(module)
            else:
                if any(a is None for a in args):
                    raise TypeError("torch.jit.trace cannot take a None argument")
                sm = torch.jit.trace(module, tuple(args), check_trace=False)
            torch.jit.save(sm, str(path))
            loaded = torch.jit.load(str(path))
    except Exception as e:  # noqa: BLE001
        raise CaptureFailed(f"torch.jit.{cap}: {_msg(e)}") from None
    return loaded


def torch_prepare(case_id, tmp_path):
    """-> (case, module, capture, src, runner, extra): src is what fastrnn.convert gets."""
    name, cap = _split(case_id)
    case = TM.BY_NAME[name]
    module = case.build()
    rng = _rng(case_id)
    args = _example_args(case, module, rng)
    if cap == "module":
        return case, module, cap, module, module, {"args": args}
    if cap in ("script", "trace"):
        if case.reset is not None:
            case.reset(module)
        path = tmp_path / f"{name}.{cap}.pt"
        runner = _torchscript(case, module, args, path, cap)
        return case, module, cap, str(path), runner, {"args": args}
    path = tmp_path / f"{name}.{cap}.onnx"
    sess, names = _export_onnx_cached(case_id, case, module, args, path, dynamo=(cap == "onnx_dynamo"))
    feeds = _onnx_feeds(case, module, sess, names, _rng(case_id, 1))
    return case, module, cap, str(path), None, {"feeds": feeds}


def torch_convert(case, module, cap, src, extra):
    with _quiet():
        if cap == "module":
            return fastrnn.convert(src, example_input=extra["args"])
        return fastrnn.convert(src)


def torch_check(model, case, module, cap, src, runner, extra, case_id):
    rng = _rng(case_id, 2)
    try:
        with _quiet():
            if cap.startswith("onnx"):
                oracle.check_onnx(model, src, extra["feeds"])
            elif case.kind == "sequence":
                args = case.inputs(module, B, T, rng)
                twin = None if case.float_twin is None else oracle.dequantized_twin(module, case.float_twin)
                oracle.check_sequence(model, runner, case, args, rng, twin=twin)
            elif case.kind == "unbatched":
                rows = [case.inputs(module, 1, T, rng) for _ in range(B)]
                oracle.check_unbatched(model, runner, case, rows)
            else:
                seq = case.seq(B, T, rng)
                oracle.check_step(model, runner, case, seq, B, T, module)
    except oracle.SourceFailed as e:
        raise CaptureFailed(f"the captured artifact cannot run the test input: {e}") from e
    except Exception as e:  # noqa: BLE001 - AssertionError (mismatch) or an error from predict/run
        raise Wrong(_msg(e)) from e


def outcome_torch(case_id, tmp_path):
    """-> (kind, detail): kind in ok | refused | crash | wrong | capture."""
    try:
        case, module, cap, src, runner, extra = torch_prepare(case_id, tmp_path)
    except CaptureFailed as e:
        return "capture", str(e)
    try:
        model = torch_convert(case, module, cap, src, extra)
    except fastrnn.FastRNNError as e:
        return "refused", _msg(e)
    except Exception as e:  # noqa: BLE001
        return "crash", type(e).__name__
    try:
        torch_check(model, case, module, cap, src, runner, extra, case_id)
    except Wrong as e:
        return "wrong", str(e)
    except CaptureFailed as e:
        return "capture", str(e)
    return "ok", ""


# ---------------------------------------------------------------------------------------------
# keras

def outcome_keras(case_id, tmp_path):
    from . import keras_models as KM
    name, _ = _split(case_id)
    case = KM.BY_NAME[name]
    kmodel = case.build()
    x = case.inputs(B, T, _rng(case_id, 2))
    try:
        with _quiet():
            model = fastrnn.convert(kmodel)
    except fastrnn.FastRNNError as e:
        return "refused", _msg(e)
    except Exception as e:  # noqa: BLE001
        return "crash", type(e).__name__
    try:
        with _quiet():
            oracle.check_keras(model, kmodel, x)
    except oracle.SourceFailed as e:
        return "capture", str(e)
    except Exception as e:  # noqa: BLE001
        return "wrong", _msg(e)
    return "ok", ""


# ---------------------------------------------------------------------------------------------
# the ratchet

def _assert_today(case_id, kind, detail):
    if case_id in CAPTURE_FAILS_TODAY:
        assert kind == "capture", (
            f"{case_id}: the source framework now produces this artifact (result: {kind} {detail}); "
            f"remove it from CAPTURE_FAILS_TODAY (and record its fastrnn result)")
        return
    if kind == "capture":
        pytest.fail(f"{case_id}: the source framework could not produce the artifact: {detail}. If this is "
                    f"an exporter limitation, add it to CAPTURE_FAILS_TODAY")
    if case_id in REFUSED_TODAY:
        if kind == "refused":
            return
        if kind == "crash":
            pytest.fail(f"{case_id}: expected a clean refusal (FastRNNError, today: "
                        f"{REFUSED_TODAY[case_id]!r}), got {detail}")
        pytest.fail(f"{case_id} now converts ({'and matches the oracle' if kind == 'ok' else 'but: ' + detail}): "
                    f"remove it from REFUSED_TODAY" + ("" if kind == "ok" else " and fix the mismatch"))
    if case_id in CRASHES_TODAY:
        if kind == "crash" and detail == CRASHES_TODAY[case_id]:
            return
        pytest.fail(f"{case_id}: no longer crashes with {CRASHES_TODAY[case_id]} (now: {kind} {detail}); "
                    f"remove it from CRASHES_TODAY" + (" and move it to REFUSED_TODAY" if kind == "refused" else ""))
    if case_id in WRONG_TODAY:
        if kind == "wrong":
            return
        pytest.fail(f"{case_id}: no longer gives a wrong result (now: {kind} {detail}); remove it from "
                    f"WRONG_TODAY" + (" and move it to REFUSED_TODAY" if kind == "refused" else ""))
    assert kind == "ok", f"{case_id}: {kind}: {detail}"


@pytest.mark.parametrize("case_id", torch_case_ids())
def test_torch(case_id, tmp_path):
    kind, detail = outcome_torch(case_id, tmp_path)
    _assert_today(case_id, kind, detail)


@pytest.mark.parametrize("case_id", keras_case_ids())
def test_keras(case_id, tmp_path):
    pytest.importorskip("keras")
    kind, detail = outcome_keras(case_id, tmp_path)
    _assert_today(case_id, kind, detail)


def test_ratchet_dicts_name_real_cases():
    known = set(torch_case_ids()) | set(keras_case_ids())
    for d, n in ((REFUSED_TODAY, "REFUSED_TODAY"), (CRASHES_TODAY, "CRASHES_TODAY"), (WRONG_TODAY, "WRONG_TODAY"),
                 (CAPTURE_FAILS_TODAY, "CAPTURE_FAILS_TODAY")):
        stale = sorted(set(d) - known)
        assert not stale, f"{n} names cases that do not exist: {stale}"
    both = set(REFUSED_TODAY) & set(CRASHES_TODAY) | set(REFUSED_TODAY) & set(WRONG_TODAY) \
        | set(CRASHES_TODAY) & set(WRONG_TODAY)
    assert not both, f"a case is in two of the dicts: {sorted(both)}"


def test_registry_names_sources():
    from . import keras_models as KM
    for c in list(TM.CASES) + list(KM.CASES):
        assert c.source and c.idioms, c.name
    assert len(TM.CASES) >= 25 and len(KM.CASES) >= 10


# ---------------------------------------------------------------------------------------------
# today's table (README)

def table():
    rows = {}
    for cid in torch_case_ids() + keras_case_ids():
        cap = _split(cid)[1]
        r = rows.setdefault(cap, {"cases": 0, "ok": 0, "refused": 0, "crash": 0, "wrong": 0, "capture": 0})
        r["cases"] += 1
        if cid in CAPTURE_FAILS_TODAY:
            r["capture"] += 1
        elif cid in REFUSED_TODAY:
            r["refused"] += 1
        elif cid in CRASHES_TODAY:
            r["crash"] += 1
        elif cid in WRONG_TODAY:
            r["wrong"] += 1
        else:
            r["ok"] += 1
    return rows


if __name__ == "__main__":
    print("| capture | cases | converts + matches | refused | crashes | wrong result | exporter cannot produce |")
    print("|---|---|---|---|---|---|---|")
    for cap, r in table().items():
        print(f"| {cap} | {r['cases']} | {r['ok']} | {r['refused']} | {r['crash']} | {r['wrong']} | {r['capture']} |")
