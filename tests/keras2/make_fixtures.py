"""Regenerate the Keras 2 (tf.keras) fixtures in this folder.

Run with a Python that has TensorFlow 2.15 (which bundles Keras 2.15), never
the project's own environment:

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.15.1 h5py
    /tmp/tfenv/bin/python tests/keras2/make_fixtures.py

For every model it writes <name>.h5 (legacy HDF5 full model, model.save),
<name>.keras for the small models (Keras native zip format), and collects
inputs/outputs into expected.npz plus a MANIFEST.json.  Everything is seeded:
each model draws from its own numpy Generator seeded from its name, so the
fixtures do not depend on the order in which models are built.
"""

import json
import os
import sys
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

keras = tf.keras
L = keras.layers

HERE = os.path.dirname(os.path.abspath(__file__))
BASE_SEED = 20240611
B = 3  # batch
T = 7  # default time steps


def keras_version():
    import keras as _k  # the package tf.keras resolves to in TF 2.15
    return _k.__version__


# ----------------------------------------------------------------------------
# model builders: each returns (model, input_kind, spec) where spec describes
# how to make the input: dict(kind="float", shape=...) or dict(kind="ids",
# shape=..., vocab=..., pad=bool) or dict(kind="float_masked", shape=...)
# ----------------------------------------------------------------------------

def seq(name, inp, layers):
    return keras.Sequential([inp] + layers, name=name)


def imdb(name, rnn):
    m = seq(name, keras.Input(shape=(20,), dtype="int32"),
            [L.Embedding(10000, 32), rnn, L.Dense(1, activation="sigmoid")])
    return m, dict(kind="ids", shape=(B, 20), vocab=10000, pad=False)


def build_imdb_simplernn(name):
    return imdb(name, L.SimpleRNN(32))


def build_imdb_lstm(name):
    return imdb(name, L.LSTM(32))


def build_imdb_gru(name):
    return imdb(name, L.GRU(32))


def build_stacked_simplernn(name):
    m = seq(name, keras.Input(shape=(T,), dtype="int32"), [
        L.Embedding(1000, 32),
        L.SimpleRNN(32, return_sequences=True),
        L.SimpleRNN(32, return_sequences=True),
        L.SimpleRNN(32, return_sequences=True),
        L.SimpleRNN(32),
        L.Dense(1, activation="sigmoid"),
    ])
    return m, dict(kind="ids", shape=(B, T), vocab=1000, pad=False)


def build_reuters_simplernn(name):
    m = seq(name, keras.Input(shape=(49, 1)), [
        L.SimpleRNN(50), L.Dense(46), L.Activation("softmax")])
    return m, dict(kind="float", shape=(B, 49, 1))


def build_reuters_lstm2(name):
    m = seq(name, keras.Input(shape=(49, 1)), [
        L.LSTM(50, return_sequences=True), L.LSTM(50), L.Dense(46),
        L.Activation("softmax")])
    return m, dict(kind="float", shape=(B, 49, 1))


def build_simplernn3_seq_state(name):
    inp = keras.Input(shape=(10, 8))
    seq_out, state = L.SimpleRNN(3, use_bias=False, return_sequences=True,
                                 return_state=True)(inp)
    m = keras.Model(inp, [seq_out, state], name=name)
    return m, dict(kind="float", shape=(B, 10, 8))


def build_simplernn3_last_state(name):
    inp = keras.Input(shape=(10, 8))
    out, state = L.SimpleRNN(3, use_bias=False, return_sequences=False,
                             return_state=True)(inp)
    m = keras.Model(inp, [out, state], name=name)
    return m, dict(kind="float", shape=(B, 10, 8))


def f75(name, layers):
    return seq(name, keras.Input(shape=(T, 5)), layers), \
        dict(kind="float", shape=(B, T, 5))


def build_gru_reset_before(name):
    return f75(name, [L.GRU(6, reset_after=False, return_sequences=True)])


def build_gru_reset_after(name):
    return f75(name, [L.GRU(6, reset_after=True), L.Dense(2)])


def build_lstm_hard_sigmoid(name):
    return f75(name, [L.LSTM(6, recurrent_activation="hard_sigmoid",
                             return_sequences=True)])


def build_gru_hard_sigmoid_relu(name):
    return f75(name, [L.GRU(6, activation="relu",
                            recurrent_activation="hard_sigmoid",
                            reset_after=True, return_sequences=True)])


def build_simplernn_acts(name):
    return f75(name, [
        L.SimpleRNN(6, activation="relu", return_sequences=True),
        L.SimpleRNN(4, activation="elu", return_sequences=True),
        L.SimpleRNN(4, activation="softsign"),
        L.Dense(3, activation="softmax"),
    ])


def bidi_merge(mode):
    def build(name):
        return f75(name, [
            L.Bidirectional(L.LSTM(6, return_sequences=True), merge_mode=mode),
            L.Dense(2)])
    return build


def build_bidi_none(name):
    inp = keras.Input(shape=(T, 5))
    fwd, bwd = L.Bidirectional(L.GRU(4, return_sequences=True),
                               merge_mode=None)(inp)
    m = keras.Model(inp, [fwd, bwd], name=name)
    return m, dict(kind="float", shape=(B, T, 5))


def build_bidi_last(name):
    return f75(name, [L.Bidirectional(L.SimpleRNN(5)), L.Dense(2)])


def build_bidi_state(name):
    inp = keras.Input(shape=(T, 5))
    outs = L.Bidirectional(L.LSTM(4, return_state=True))(inp)
    assert len(outs) == 5
    m = keras.Model(inp, list(outs), name=name)
    return m, dict(kind="float", shape=(B, T, 5))


def build_go_backwards_seq(name):
    return f75(name, [L.LSTM(6, go_backwards=True, return_sequences=True),
                      L.LSTM(4, return_sequences=True)])


def build_go_backwards_last(name):
    return f75(name, [L.GRU(6, go_backwards=True), L.Dense(2)])


def build_mask_zero_lstm(name):
    m = seq(name, keras.Input(shape=(T,), dtype="int32"), [
        L.Embedding(50, 8, mask_zero=True),
        L.LSTM(6, return_sequences=True),
        L.LSTM(5),
        L.Dense(2),
    ])
    return m, dict(kind="ids", shape=(B, T), vocab=50, pad=True)


def build_mask_zero_bidi(name):
    m = seq(name, keras.Input(shape=(T,), dtype="int32"), [
        L.Embedding(50, 8, mask_zero=True),
        L.Bidirectional(L.GRU(5, return_sequences=True)),
        L.TimeDistributed(L.Dense(3)),
    ])
    return m, dict(kind="ids", shape=(B, T), vocab=50, pad=True)


def build_masking_gru(name):
    m = seq(name, keras.Input(shape=(T, 5)), [
        L.Masking(mask_value=0.0),
        L.GRU(6, return_sequences=True),
        L.Dense(2),
    ])
    return m, dict(kind="float_masked", shape=(B, T, 5))


def build_identity_layers(name):
    return f75(name, [
        L.Dropout(0.3),
        L.SpatialDropout1D(0.2),
        L.GaussianNoise(0.5),
        L.LSTM(6, dropout=0.2, recurrent_dropout=0.2, return_sequences=True),
        L.GaussianDropout(0.3),
        L.ActivityRegularization(l1=0.01),
        L.TimeDistributed(L.Dense(3, activation="tanh")),
        L.Activation("relu"),
    ])


def build_lstm_state(name):
    inp = keras.Input(shape=(T, 5))
    s, h, c = L.LSTM(6, return_sequences=True, return_state=True)(inp)
    m = keras.Model(inp, [s, h, c], name=name)
    return m, dict(kind="float", shape=(B, T, 5))


def build_stateful_lstm(name):
    m = seq(name, keras.Input(batch_shape=(3, 4, 5)), [
        L.LSTM(6, stateful=True, return_sequences=True),
        L.Dense(2),
    ])
    return m, dict(kind="float", shape=(3, 4, 5), stateful=True)


def build_time_major_lstm(name):
    # Input axis 0 is time, axis 1 the batch (3), axis 2 the features.
    inp = keras.Input(batch_shape=(None, 3, 5))
    out = L.LSTM(6, time_major=True, return_sequences=True)(inp)
    m = keras.Model(inp, out, name=name)
    return m, dict(kind="float", shape=(T, 3, 5))


def build_nobias_unroll(name):
    return f75(name, [
        L.LSTM(6, use_bias=False, unroll=True, return_sequences=True),
        L.GRU(4, use_bias=False, unroll=True),
    ])


def build_lstm_activations(name):
    return f75(name, [
        L.LSTM(6, activation="softsign", recurrent_activation="sigmoid",
               return_sequences=True),
        L.LSTM(4, activation="selu", recurrent_activation="hard_sigmoid"),
    ])


# (name, builder, description, weight scale)
MODELS = [
    ("imdb_simplernn", build_imdb_simplernn,
     "Embedding(10000,32) -> SimpleRNN(32) -> Dense(1,sigmoid); T=20", 1.0),
    ("imdb_lstm", build_imdb_lstm,
     "Embedding(10000,32) -> LSTM(32) -> Dense(1,sigmoid); T=20", 1.0),
    ("imdb_gru", build_imdb_gru,
     "Embedding(10000,32) -> GRU(32) -> Dense(1,sigmoid); T=20", 1.0),
    ("stacked_simplernn", build_stacked_simplernn,
     "Embedding(1000,32) -> SimpleRNN(32,seq) x3 -> SimpleRNN(32) -> "
     "Dense(1,sigmoid)", 1.0),
    ("reuters_simplernn", build_reuters_simplernn,
     "(49,1) -> SimpleRNN(50) -> Dense(46) -> Activation(softmax); T=49", 1.0),
    ("reuters_lstm2", build_reuters_lstm2,
     "(49,1) -> LSTM(50,seq) -> LSTM(50) -> Dense(46) -> softmax; T=49", 1.0),
    ("simplernn3_seq_state", build_simplernn3_seq_state,
     "functional (10,8) -> SimpleRNN(3,no bias,seq,state) -> [seq, state]",
     1.0),
    ("simplernn3_last_state", build_simplernn3_last_state,
     "functional (10,8) -> SimpleRNN(3,no bias,state) -> [out, state]", 1.0),
    ("gru_reset_before", build_gru_reset_before,
     "(7,5) -> GRU(6,reset_after=False,seq)", 1.0),
    ("gru_reset_after", build_gru_reset_after,
     "(7,5) -> GRU(6,reset_after=True) -> Dense(2)", 1.0),
    ("lstm_hard_sigmoid", build_lstm_hard_sigmoid,
     "(7,5) -> LSTM(6,recurrent_activation=hard_sigmoid,seq); weights x2 so "
     "hard_sigmoid clips for some units", 2.0),
    ("gru_hard_sigmoid_relu", build_gru_hard_sigmoid_relu,
     "(7,5) -> GRU(6,relu,hard_sigmoid,reset_after=True,seq)", 1.0),
    ("simplernn_acts", build_simplernn_acts,
     "(7,5) -> SimpleRNN(6,relu,seq) -> SimpleRNN(4,elu,seq) -> "
     "SimpleRNN(4,softsign) -> Dense(3,softmax)", 1.0),
    ("bidi_concat", bidi_merge("concat"),
     "(7,5) -> Bidirectional(LSTM(6,seq),concat) -> Dense(2)", 1.0),
    ("bidi_sum", bidi_merge("sum"),
     "(7,5) -> Bidirectional(LSTM(6,seq),sum) -> Dense(2)", 1.0),
    ("bidi_mul", bidi_merge("mul"),
     "(7,5) -> Bidirectional(LSTM(6,seq),mul) -> Dense(2)", 1.0),
    ("bidi_ave", bidi_merge("ave"),
     "(7,5) -> Bidirectional(LSTM(6,seq),ave) -> Dense(2)", 1.0),
    ("bidi_none", build_bidi_none,
     "functional (7,5) -> Bidirectional(GRU(4,seq),merge_mode=None) -> "
     "[fwd, bwd]", 1.0),
    ("bidi_last", build_bidi_last,
     "(7,5) -> Bidirectional(SimpleRNN(5)) -> Dense(2)", 1.0),
    ("bidi_state", build_bidi_state,
     "functional (7,5) -> Bidirectional(LSTM(4,return_state)) -> "
     "[y, h_fw, c_fw, h_bw, c_bw]", 1.0),
    ("go_backwards_seq", build_go_backwards_seq,
     "(7,5) -> LSTM(6,go_backwards,seq) -> LSTM(4,seq)", 1.0),
    ("go_backwards_last", build_go_backwards_last,
     "(7,5) -> GRU(6,go_backwards) -> Dense(2)", 1.0),
    ("mask_zero_lstm", build_mask_zero_lstm,
     "Embedding(50,8,mask_zero) -> LSTM(6,seq) -> LSTM(5) -> Dense(2); ids "
     "right-padded with 0", 1.0),
    ("mask_zero_bidi", build_mask_zero_bidi,
     "Embedding(50,8,mask_zero) -> Bidirectional(GRU(5,seq)) -> "
     "TimeDistributed(Dense(3)); ids right-padded with 0", 1.0),
    ("masking_gru", build_masking_gru,
     "(7,5) -> Masking(0.0) -> GRU(6,seq) -> Dense(2); trailing steps "
     "exactly 0.0", 1.0),
    ("identity_layers", build_identity_layers,
     "(7,5) -> Dropout -> SpatialDropout1D -> GaussianNoise -> "
     "LSTM(6,dropout,recurrent_dropout,seq) -> GaussianDropout -> "
     "ActivityRegularization -> TimeDistributed(Dense(3,tanh)) -> "
     "Activation(relu); inference: noise/dropout layers are identity", 1.0),
    ("lstm_state", build_lstm_state,
     "functional (7,5) -> LSTM(6,seq,state) -> [seq, h, c]", 1.0),
    ("stateful_lstm", build_stateful_lstm,
     "batch_shape (3,4,5) -> LSTM(6,stateful,seq) -> Dense(2); two "
     "consecutive calls (x,y0) then (x_2,y0_2) without reset", 1.0),
    ("time_major_lstm", build_time_major_lstm,
     "functional batch_shape (None,3,5) -> LSTM(6,time_major,seq); x is "
     "(time=7, batch=3, feat=5), y0 is (time, batch, 6)", 1.0),
    ("nobias_unroll", build_nobias_unroll,
     "(7,5) -> LSTM(6,no bias,unroll,seq) -> GRU(4,no bias,unroll)", 1.0),
    ("lstm_activations", build_lstm_activations,
     "(7,5) -> LSTM(6,softsign,sigmoid,seq) -> "
     "LSTM(4,selu,hard_sigmoid)", 1.0),
]


def rng_for(name, salt):
    return np.random.default_rng([BASE_SEED, zlib.crc32(name.encode()), salt])


def overwrite_weights(model, rng, scale):
    """Replace every weight by a seeded random non-trivial value."""
    for w in model.weights:
        short = w.name.split("/")[-1].split(":")[0]
        shape = tuple(w.shape)
        if short == "embeddings":
            val = rng.integers(-48, 49, size=shape) / 64.0
        elif short in ("kernel", "recurrent_kernel"):
            a = scale * 1.5 / np.sqrt(shape[0])
            val = rng.uniform(-a, a, size=shape)
        elif short == "bias":
            val = rng.uniform(-0.3 * scale, 0.3 * scale, size=shape)
        else:
            raise RuntimeError("unexpected weight %s" % w.name)
        w.assign(val.astype(w.dtype.as_numpy_dtype))


def make_input(spec, rng):
    shape = spec["shape"]
    kind = spec["kind"]
    if kind == "ids":
        x = rng.integers(1, spec["vocab"], size=shape).astype(np.int32)
        if spec["pad"]:
            t = shape[1]
            for i in range(shape[0]):
                n = int(rng.integers(0, t // 2 + 1))
                if n:
                    x[i, t - n:] = 0
        return x
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "float_masked":
        t = shape[1]
        for i in range(shape[0]):
            n = int(rng.integers(0, t // 2 + 1))
            if n:
                x[i, t - n:, :] = 0.0
    return x


def run(model, x):
    y = model(x, training=False)
    if not isinstance(y, (list, tuple)):
        y = [y]
    return [np.asarray(v) for v in y]


def main():
    tfv = tf.__version__
    kv = keras_version()
    if not kv.startswith("2."):
        sys.exit("needs Keras 2 (tf.keras); got keras %s" % kv)
    expected = {}
    manifest = {"tensorflow_version": tfv, "keras_version": kv,
                "generator": "tests/keras2/make_fixtures.py",
                "models": {}}
    for name, build, desc, scale in MODELS:
        keras.backend.clear_session()  # layer names restart per model
        np.random.seed(BASE_SEED)
        tf.random.set_seed(BASE_SEED)
        model, spec = build(name)
        overwrite_weights(model, rng_for(name, 1), scale)
        big = any(isinstance(l, L.Embedding) and l.input_dim >= 10000
                  for l in model.layers)
        files = [name + ".h5"]
        model.save(os.path.join(HERE, name + ".h5"), save_format="h5")
        if not big:
            files.append(name + ".keras")
            model.save(os.path.join(HERE, name + ".keras"))
        in_rng = rng_for(name, 2)
        x = make_input(spec, in_rng)
        ys = run(model, x)
        expected[name + ".x"] = x
        for i, y in enumerate(ys):
            expected["%s.y%d" % (name, i)] = y
        entry = {
            "description": desc,
            "files": files,
            "input_kind": "ids" if spec["kind"] == "ids" else "float",
            "input_shape": list(x.shape),
            "num_outputs": len(ys),
            "output_shapes": [list(y.shape) for y in ys],
            "tensorflow_version": tfv,
            "keras_version": kv,
        }
        if spec.get("stateful"):
            x2 = make_input(spec, in_rng)
            ys2 = run(model, x2)  # states carried over from the first call
            expected[name + ".x_2"] = x2
            for i, y in enumerate(ys2):
                expected["%s.y%d_2" % (name, i)] = y
            entry["stateful_calls"] = 2
        manifest["models"][name] = entry
        print("%-24s %s -> %s" % (name, x.shape,
                                  [tuple(y.shape) for y in ys]))
    np.savez_compressed(os.path.join(HERE, "expected.npz"), **expected)
    with open(os.path.join(HERE, "MANIFEST.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=False)
        f.write("\n")


if __name__ == "__main__":
    main()
