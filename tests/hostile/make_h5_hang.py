#!/usr/bin/env python3
"""Regenerate the HDF5 hang fixtures (fastrnn isolation regression tests).

Outputs (next to this script unless a directory is given as argv[1]):
  h5_hang_seed1008.h5 : mutate_h5(base.h5, seed=1008)  -> 6 changed bytes
  h5_hang_min.h5      : base.h5 with only 1 of those bytes applied
                        (offset 4225: 0x00 -> 0x04, the high byte of the
                        size field of a global-heap object), also hangs.
Observed (h5py 3.16.0 / HDF5 2.0.0): h5py.File(p,'r') succeeds, then
f.attrs.get('model_config') spins forever at 100% CPU, constant RSS.
"""
import hashlib, os, random, sys, tempfile

# ---------------- base file (deterministic with h5py 3.16.0 / HDF5 2.0.0) ----
def make_base(path):
    import h5py, json, sys
    import numpy as np
    rng = np.random.RandomState(0)
    layers = [("lstm", [("kernel:0", (4, 12)), ("recurrent_kernel:0", (3, 12)), ("bias:0", (12,))]),
              ("dense", [("kernel:0", (3, 2)), ("bias:0", (2,))])]
    cfg = {"class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, None, 4], "dtype": "float32", "sparse": False, "ragged": False, "name": "input_1"}},
        {"class_name": "LSTM", "config": {"name": "lstm", "trainable": True, "dtype": "float32", "return_sequences": False, "return_state": False,
            "go_backwards": False, "stateful": False, "unroll": False, "time_major": False, "units": 3, "activation": "tanh",
            "recurrent_activation": "sigmoid", "use_bias": True,
            "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "recurrent_initializer": {"class_name": "Orthogonal", "config": {"gain": 1.0, "seed": None}},
            "bias_initializer": {"class_name": "Zeros", "config": {}}, "unit_forget_bias": True,
            "kernel_regularizer": None, "recurrent_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
            "kernel_constraint": None, "recurrent_constraint": None, "bias_constraint": None,
            "dropout": 0.0, "recurrent_dropout": 0.0, "implementation": 2}},
        {"class_name": "Dense", "config": {"name": "dense", "trainable": True, "dtype": "float32", "units": 2, "activation": "linear",
            "use_bias": True, "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": None}},
            "bias_initializer": {"class_name": "Zeros", "config": {}}, "kernel_regularizer": None, "bias_regularizer": None,
            "activity_regularizer": None, "kernel_constraint": None, "bias_constraint": None}}]}}
    s = json.dumps(cfg)
    s = s + " " * max(0, 2048 - len(s))   # pad to ~2 KB
    with h5py.File(path, "w", track_order=False) as f:
        f.attrs["model_config"] = s
        f.attrs["keras_version"] = "2.13.1"
        f.attrs["backend"] = "tensorflow"
        mw = f.create_group("model_weights")
        mw.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        mw.attrs["backend"] = "tensorflow"
        mw.attrs["keras_version"] = "2.13.1"
        for lname, ws in layers:
            g = mw.create_group(lname)
            g.attrs["weight_names"] = np.array([f"{lname}/{w}".encode() for w, _ in ws])
            sub = g.create_group(lname)
            for wname, shape in ws:
                sub.create_dataset(wname, data=rng.randn(*shape).astype("float32"), track_times=False)

# ---------------- mutation function (verbatim from the fuzzer) ----------------
def _nops(rng):
    # geometric-ish: mostly 1-2 changes
    return rng.choice([1, 1, 1, 2, 2, 3, 4, 6])

INTERESTING = [0, 255, 127, 128, 1, 65, 32, 254]

def mutate_h5(base, seed):
    """HDF5 mutator: raw byte mutations biased toward metadata, or truncation."""
    rng = random.Random(seed)
    r = rng.random()
    if r < 0.9:
        n = _nops(rng)
        b = bytearray(base)
        for _ in range(n):
            pos = rng.randrange(len(b))
            op = rng.random()
            if op < 0.35:
                b[pos] ^= 1 << rng.randrange(8)
            elif op < 0.7:
                b[pos] = rng.randrange(256)
            else:
                b[pos] = rng.choice(INTERESTING)
        return bytes(b), f"raw:ops={n}"
    else:
        cut = rng.randrange(1, len(base))
        return base[:cut], f"truncate:{cut}"

BASE_SHA256 = "10b6f36c0b9a2365af0b03bb172c198e6205a24c603d06398d3ef78a4f60183c"
SEED_SHA256 = "9d345e4b1cd9182523d345aaaa32282fe39caa0cfd0d682a8784c6d741c2392d"
MIN_SHA256 = "705a4752c6e371ead2accbd22f461c489cfe5cd49b063c4f99955612db02884e"

def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as td:
        bp = os.path.join(td, "base.h5")
        make_base(bp)
        base = open(bp, "rb").read()
    if hashlib.sha256(base).hexdigest() != BASE_SHA256:
        print("WARNING: base.h5 differs from the recorded one (different h5py/HDF5?);"
              " byte offsets may not match", file=sys.stderr)
    data, desc = mutate_h5(base, 1008)
    mn = bytearray(base); mn[4225] = data[4225]
    for name, blob, want in (("h5_hang_seed1008.h5", data, SEED_SHA256),
                             ("h5_hang_min.h5", bytes(mn), MIN_SHA256)):
        p = os.path.join(out, name)
        open(p, "wb").write(blob)
        got = hashlib.sha256(blob).hexdigest()
        print(p, desc if "seed" in name else "min", got, "OK" if got == want else "MISMATCH")

if __name__ == "__main__":
    main()
