"""TFLite models for the bench, made by TensorFlow's converter in a virtualenv of its own.

The bench runs TFLite through the `ai-edge-litert` interpreter, which is light and installs beside
the project's numpy. Making a .tflite file needs TensorFlow, which must not go into that
environment (it pins numpy < 2 and brings its own keras). So this file has two halves:

* **bench side** (`model_path`, no TensorFlow): the .tflite file of a workload, from a cache
  keyed by a hash of the weights, the model description and this file. On a miss it writes the
  weights to an .npz and runs this file with the virtualenv's python; the virtualenv is created on
  first use (`python -m venv` + `pip install tensorflow-cpu==2.15.1 "numpy<2"`). A conversion that
  fails is cached too (an .err file beside the .tflite ones) and reported, not retried, until the
  weights or this file change.
* **converter side** (`python tflite_convert.py --convert SPEC.npz OUT.tflite`, inside the
  virtualenv): the model built from the exact weights, then `tf.lite.TFLiteConverter`, float32,
  builtin ops only (no TF ops: the interpreter has none).

The models:

* whole sequence: the Keras model a user would write, tf.keras (Keras 2) layers: Embedding,
  LSTM / GRU (in Bidirectional, merge "concat"), Dense(sigmoid). The converter fuses a Keras LSTM
  into one UNIDIRECTIONAL_SEQUENCE_LSTM op (its state is a variable tensor the op leaves at the
  final state: the caller resets it, `reset_all_variables()`, before each sequence). Keras LSTM
  gates are i,f,c,o = torch's i,f,g,o, so kernel = W_ih^T, recurrent = W_hh^T, bias = b_ih + b_hh.
  Keras GRU with reset_after=True is torch's GRU with the gates z,r,h for torch's r,z,n and the
  two biases kept apart.
* stream ("step" models, T=1): one step of the cell written with plain ops (one FULLY_CONNECTED
  on [x, h], split, logistic / tanh, mul / add) that takes the states and returns the new ones,
  like the ONNX step graph: a Keras LSTM given its initial state as an input does not fuse (it
  becomes a WHILE loop). See bench/README.md for why this form and not the fused op's own state.

    python bench/tflite_convert.py --prepare [NAME ...]   # make the virtualenv and the models now
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TF_REQUIREMENTS = ["tensorflow-cpu==2.15.1", "numpy<2"]   # 2.15: the last tf.keras = Keras 2
CACHE = Path(os.environ.get("FASTRNN_BENCH_CACHE") or Path.home() / ".cache" / "fastrnn-bench")
VENV = CACHE / "tfenv"
MODELS = CACHE / "tflite"
TF_PYTHON = os.environ.get("FASTRNN_BENCH_TF_PYTHON")   # a python that has TensorFlow: no virtualenv
VENV_TIMEOUT_S = 1800
CONVERT_TIMEOUT_S = 600
_venv_error = None          # the reason the virtualenv could not be made, once per process


# ---------------------------------------------------------------- bench side (no TensorFlow)

def spec(wl, stream):
    """What the converter needs besides the weights: the net, the static shapes, the form."""
    n = wl.net
    return dict(name=wl.name, cell=n.cell, input=n.input, hidden=n.hidden, layers=n.layers,
                bidirectional=n.bidirectional, vocab=n.vocab, head=n.head, batch=wl.batch,
                T=1 if stream else wl.T, stream=bool(stream))


def cache_key(sp, sd):
    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(json.dumps([sp, TF_REQUIREMENTS], sort_keys=True).encode())
    for k in sorted(sd):
        a = np.ascontiguousarray(sd[k])
        h.update(f"{k}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def model_path(wl, sd, stream):
    """The cached .tflite file of workload wl (stream: its T=1 step model); converts on a miss.
    Raises RuntimeError with the reason when there is no model."""
    sp = spec(wl, stream)
    stem = f"{sp['name']}{'_step' if stream else ''}"
    key = cache_key(sp, sd)
    out, err = MODELS / f"{stem}-{key}.tflite", MODELS / f"{stem}-{key}.err"
    if out.exists():
        return out
    if err.exists():
        raise RuntimeError(f"conversion failed: {err.read_text().strip()} (cached in {err})")
    python = tf_python()
    MODELS.mkdir(parents=True, exist_ok=True)
    print(f"  tflite: converting {out.name} (once; cached)", flush=True)
    with tempfile.TemporaryDirectory(prefix="fastrnn-tflite-") as tmp:
        spec_file, tmp_out = Path(tmp) / "spec.npz", Path(tmp) / "model.tflite"
        np.savez(spec_file, __spec__=np.array(json.dumps(sp)), **sd)
        try:
            p = subprocess.run([python, str(Path(__file__).resolve()), "--convert",
                                str(spec_file), str(tmp_out)],
                               capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"conversion took over {CONVERT_TIMEOUT_S} s")
        if p.returncode != 0 or not tmp_out.exists():
            why = _last_error(p.stderr) or f"converter exited with status {p.returncode}"
            if p.returncode == 2:           # the converter's own verdict: cache it
                err.write_text(why + "\n")
                _drop_others(stem, err)
            raise RuntimeError(f"conversion failed: {why}")
        os.replace(tmp_out, out)
    _drop_others(stem, out)
    return out


def _drop_others(stem, keep):
    """Remove the files of earlier weights or an earlier converter for the same model."""
    for old in MODELS.glob(f"{stem}-*"):
        if old.name != keep.name:
            old.unlink(missing_ok=True)


def _last_error(stderr):
    """The line of a child's stderr that says why: the converter's own, pip's ERROR, or the last."""
    lines = [l.strip() for l in stderr.splitlines() if l.strip()]
    for mark in ("tflite_convert: ", "ERROR: "):
        marked = [l for l in lines if l.startswith(mark)]
        if marked:
            return marked[-1].removeprefix("tflite_convert: ")[:300]
    return lines[-1][:300] if lines else ""


def tf_python():
    """The python that converts: $FASTRNN_BENCH_TF_PYTHON, or the virtualenv, made on first use
    (under a lock: two runs at once make it once)."""
    if TF_PYTHON:
        return TF_PYTHON
    if _venv_error:
        raise RuntimeError(_venv_error)
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "tfenv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _make_venv()


def _make_venv():
    global _venv_error
    py, stamp = VENV / "bin" / "python", VENV / ".complete"
    want = " ".join(TF_REQUIREMENTS)
    if stamp.exists() and stamp.read_text().strip() == want:
        return str(py)
    print(f"  tflite: creating {VENV} with {want} (once; a minute or two)", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True,
                       capture_output=True, text=True, timeout=120)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *TF_REQUIREMENTS], check=True, capture_output=True, text=True,
                       timeout=VENV_TIMEOUT_S)
    except subprocess.CalledProcessError as e:
        _venv_error = (f"cannot make the TensorFlow virtualenv {VENV}: {' '.join(map(str, e.cmd[:4]))}"
                       f" failed: {_last_error(e.stderr or '')}")
        raise RuntimeError(_venv_error)
    except (OSError, subprocess.TimeoutExpired) as e:
        _venv_error = f"cannot make the TensorFlow virtualenv {VENV}: {type(e).__name__}: {e}"
        raise RuntimeError(_venv_error)
    stamp.write_text(want + "\n")
    return str(py)


def prepare(names):
    """Make the virtualenv and every (or the named) workload's models now, and say which convert."""
    import workloads as W
    for wl in W.WORKLOADS:
        if names and wl.name not in names:
            continue
        try:
            path = model_path(wl, W.make_weights(wl.net), stream=wl.kind == "stream")
            print(f"{wl.name}: {path}")
        except RuntimeError as e:
            print(f"{wl.name}: {e}")


# ---------------------------------------------------------------- converter side (TensorFlow)

KERAS_GRU_ORDER = (1, 0, 2)         # torch r,z,n -> Keras z,r,h


def _reorder(a, order):
    blocks = np.split(a, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def _keras_weights(sp, sd, l, sfx):
    """Direction sfx ("" or "_reverse") of layer l in Keras' layout."""
    w = {k: sd[f"rnn.{k}_l{l}{sfx}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    if sp["cell"] == "lstm":
        return [w["weight_ih"].T, w["weight_hh"].T, w["bias_ih"] + w["bias_hh"]]
    z_r_h = {k: _reorder(v, KERAS_GRU_ORDER) for k, v in w.items()}
    return [z_r_h["weight_ih"].T, z_r_h["weight_hh"].T, np.stack([z_r_h["bias_ih"], z_r_h["bias_hh"]])]


def keras_model(tf, sp, sd):
    """The whole-sequence Keras model, static shapes (batch, T), weights set."""
    B, T = sp["batch"], sp["T"]
    if sp["vocab"]:
        x = inp = tf.keras.Input((T,), batch_size=B, dtype="int64")
        emb = tf.keras.layers.Embedding(sp["vocab"], sp["input"])
        x = emb(x)
        emb.set_weights([sd["emb.weight"]])
    else:
        x = inp = tf.keras.Input((T, sp["input"]), batch_size=B)
    for l in range(sp["layers"]):
        last_only = sp["head"] and l == sp["layers"] - 1
        # a reverse direction's "last" output is its first step: slice the sequence instead
        seq = not last_only or sp["bidirectional"]
        if sp["cell"] == "lstm":
            layer = tf.keras.layers.LSTM(sp["hidden"], return_sequences=seq)
        else:
            layer = tf.keras.layers.GRU(sp["hidden"], return_sequences=seq, reset_after=True)
        weights = _keras_weights(sp, sd, l, "")
        if sp["bidirectional"]:        # Keras' weights: the forward layer's, then the backward's
            layer = tf.keras.layers.Bidirectional(layer, merge_mode="concat")
            weights += _keras_weights(sp, sd, l, "_reverse")
        x = layer(x)
        layer.set_weights(weights)
        if last_only and seq:
            x = x[:, -1]
    if sp["head"]:
        dense = tf.keras.layers.Dense(sp["head"], activation="sigmoid")
        x = dense(x)
        dense.set_weights([sd["head.weight"].T, sd["head.bias"]])
    return tf.keras.Model(inp, x)


def step_function(tf, sp, sd):
    """One step of the recurrent layers, states in and out, as a tf.function to convert:
    f(x (B, F), h0_l0 (B, H)[, c0_l0], h0_l1, ...) -> {"h_l0": (B, H)[, "c_l0"], "h_l1", ...};
    the step's output is the last layer's h."""
    if sp["bidirectional"] or sp["vocab"] or sp["head"]:
        raise NotImplementedError("step models are for plain (uni-directional, no Embedding / "
                                  "head) recurrent stacks")
    B, H, lstm = sp["batch"], sp["hidden"], sp["cell"] == "lstm"
    names = [n for l in range(sp["layers"]) for n in [f"h0_l{l}"] + [f"c0_l{l}"] * lstm]
    sig = [tf.TensorSpec((B, sp["input"]), tf.float32, name="x")] + \
          [tf.TensorSpec((B, H), tf.float32, name=n) for n in names]
    const = {}
    for l in range(sp["layers"]):
        w = {k: sd[f"rnn.{k}_l{l}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
        if lstm:      # one GEMM on [x, h]: torch's stacked (4H, F + H) rows i,f,g,o
            const[l] = (tf.constant(np.concatenate([w["weight_ih"], w["weight_hh"]], 1).T),
                        tf.constant(w["bias_ih"] + w["bias_hh"]))
        else:         # GRU: the h side apart (r multiplies W_hn h + b_hn)
            const[l] = (tf.constant(w["weight_ih"].T), tf.constant(w["bias_ih"]),
                        tf.constant(w["weight_hh"].T), tf.constant(w["bias_hh"]))

    @tf.function(input_signature=sig)
    def step(x, *states):
        out, states = {}, list(states)
        for l in range(sp["layers"]):
            if lstm:
                h, c = states[2 * l], states[2 * l + 1]
                W, b = const[l]
                i, f, g, o = tf.split(tf.matmul(tf.concat([x, h], 1), W) + b, 4, axis=1)
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                h = tf.sigmoid(o) * tf.tanh(c)
                out[f"h_l{l}"], out[f"c_l{l}"] = h, c
            else:
                h = states[l]
                Wi, bi, Wh, bh = const[l]
                xr, xz, xn = tf.split(tf.matmul(x, Wi) + bi, 3, axis=1)
                hr, hz, hn = tf.split(tf.matmul(h, Wh) + bh, 3, axis=1)
                r, z = tf.sigmoid(xr + hr), tf.sigmoid(xz + hz)
                n = tf.tanh(xn + r * hn)
                h = n + z * (h - n)                       # (1 - z) * n + z * h
                out[f"h_l{l}"] = h
            x = h
        return out

    return step


def convert(tf, spec_file, out_file):
    data = np.load(spec_file)
    sp = json.loads(str(data["__spec__"]))
    sd = {k: data[k] for k in data.files if k != "__spec__"}
    with tempfile.TemporaryDirectory(prefix="fastrnn-tf-") as saved:
        if sp["stream"]:     # through a SavedModel: its signature names the states in and out
            module = tf.Module()
            module.step = step_function(tf, sp, sd)
            tf.saved_model.save(module, saved, signatures=module.step.get_concrete_function())
            conv = tf.lite.TFLiteConverter.from_saved_model(saved)
        else:
            conv = tf.lite.TFLiteConverter.from_keras_model(keras_model(tf, sp, sd))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        Path(out_file).write_bytes(conv.convert())


def main(argv):
    if argv[:1] == ["--convert"] and len(argv) == 3:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf     # failing here is the virtualenv's fault, not the model's
        try:
            convert(tf, *argv[1:])
        except Exception as e:  # noqa: BLE001 - any failure is the answer "does not convert"
            msg = " ".join(str(e).split())
            print(f"tflite_convert: {type(e).__name__}: {msg[:300]}", file=sys.stderr)
            return 2
        return 0
    if argv[:1] == ["--prepare"]:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        prepare(argv[1:])
        return 0
    print(__doc__.rsplit("\n\n", 1)[-1], file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
