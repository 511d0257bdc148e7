"""Keras 3 (KERAS_BACKEND=torch) -> fastrnn, against real Keras on the same inputs.

Every model is built by Keras with random non-trivial weights (set_weights: neither near zero
nor saturated), saved as .keras and as legacy .h5 into a per-session cache directory, and
converted three ways: from each file and from the live keras.Model. The converted model must
give Keras's outputs to the accuracy contract (1e-5 absolute on O(1) outputs), and a
unidirectional model must stream to the same outputs step by step.
"""
import os
import zlib

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402  (installed by the test command; never skipped)
from keras import layers as L  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import ir  # noqa: E402

B, T, F = 3, 7, 5


def _randomise(model, rng, scale=1.0):
    """Uniform(-a, a) weights, a = 1.5/sqrt(fan_in) for kernels; biases uniform(-0.3, 0.3);
    embeddings uniform(-1, 1)."""
    for layer in model.layers:
        ws = []
        for i, w in enumerate(layer.get_weights()):
            if isinstance(layer, L.BatchNormalization) and i == len(layer.get_weights()) - 1:
                ws.append(rng.uniform(0.5, 2.0, w.shape).astype(np.float32))     # moving variance > 0
                continue
            if w.ndim == 2 and "embedding" not in layer.name:
                a = 1.5 / np.sqrt(w.shape[0])
            elif w.ndim == 2:
                a = 1.0
            else:
                a = 0.3
            ws.append((rng.uniform(-a, a, w.shape) * scale).astype(np.float32))
        layer.set_weights(ws)


def _seq(inp, *ls):
    return keras.Sequential([keras.Input(**inp)] + list(ls))


def _fn(inp, build):
    x = keras.Input(**inp)
    return keras.Model(x, build(x))


FLOAT = {"shape": (T, F)}
IDS = {"shape": (T,), "dtype": "int32"}

CELLS = {
    "rnn": lambda **k: L.SimpleRNN(6, **k),
    "lstm": lambda **k: L.LSTM(6, **k),
    "gru": lambda **k: L.GRU(6, **k),
    "gru_rb": lambda **k: L.GRU(6, reset_after=False, **k),
}

# name -> (builder, input kind, weight scale)
MODELS = {}


def model(name, kind="float", scale=1.0):
    def deco(fn):
        MODELS[name] = (fn, kind, scale)
        return fn
    return deco


for _c, _mk in CELLS.items():
    # every option of a unidirectional layer
    MODELS[f"{_c}_last"] = (lambda mk=_mk: _seq(FLOAT, mk(), L.Dense(2)), "float", 1.0)
    MODELS[f"{_c}_seq"] = (lambda mk=_mk: _seq(FLOAT, mk(return_sequences=True)), "float", 1.0)
    MODELS[f"{_c}_back_seq"] = (lambda mk=_mk: _seq(FLOAT, mk(return_sequences=True, go_backwards=True)),
                                "float", 1.0)
    MODELS[f"{_c}_back_last"] = (lambda mk=_mk: _seq(FLOAT, mk(go_backwards=True)), "float", 1.0)
    MODELS[f"{_c}_nobias"] = (lambda mk=_mk: _seq(FLOAT, mk(use_bias=False, return_sequences=True)),
                              "float", 1.0)
    MODELS[f"{_c}_unroll_dropout"] = (lambda mk=_mk: _seq(FLOAT, mk(unroll=True, dropout=0.3,
                                                                    recurrent_dropout=0.2)), "float", 1.0)
    MODELS[f"{_c}_state_seq"] = (lambda mk=_mk: _fn(FLOAT, lambda x: mk(return_sequences=True,
                                                                         return_state=True)(x)), "float", 1.0)
    MODELS[f"{_c}_state_last"] = (lambda mk=_mk: _fn(FLOAT, lambda x: mk(return_state=True)(x)),
                                  "float", 1.0)
    MODELS[f"{_c}_mask_zero"] = (lambda mk=_mk: _seq(IDS, L.Embedding(20, 5, mask_zero=True),
                                                     mk(return_sequences=True), mk()), "ids", 1.0)
    MODELS[f"{_c}_masking"] = (lambda mk=_mk: _seq(FLOAT, L.Masking(0.0), mk(return_sequences=True),
                                                   L.Dense(2)), "masked", 1.0)
    # a Masking after a go_backwards layer masks the reversed sequence it sees, so the mask lines up
    # (zero trailing inputs give exactly zero outputs from a bias-free layer, which mask steps)
    MODELS[f"{_c}_back_then_masking"] = (lambda mk=_mk: _seq(FLOAT, mk(use_bias=False, go_backwards=True,
                                                                      return_sequences=True),
                                                             L.Masking(0.0), mk(return_sequences=True)),
                                         "masked", 1.0)
    # return_state with an Embedding's mask: Keras 3 writes the mask as NotEqual(ids, 0) feeding
    # the layer's `mask` keyword (converters/keras.py, _drop_implicit_masks)
    MODELS[f"{_c}_mask_zero_state"] = (lambda mk=_mk: _fn(IDS, lambda x: mk(return_state=True)(
        L.Embedding(20, 5, mask_zero=True)(x))), "ids", 1.0)
    MODELS[f"{_c}_mask_zero_state_head"] = (lambda mk=_mk: _fn(IDS, lambda x: L.Dense(2)(mk(
        return_sequences=True, return_state=True)(L.Embedding(20, 5, mask_zero=True)(x))[0])), "ids", 1.0)
    # every recurrent layer after the Embedding gets the NotEqual mask: stacked, state from the last
    MODELS[f"{_c}_mask_zero_stack_state"] = (lambda mk=_mk: _fn(IDS, lambda x: mk(return_state=True)(
        L.Dropout(0.2)(mk(return_sequences=True)(L.Embedding(20, 5, mask_zero=True)(x))))), "ids", 1.0)
    MODELS[f"{_c}_mask_back"] = (lambda mk=_mk: _seq(IDS, L.Embedding(20, 5, mask_zero=True),
                                                     mk(go_backwards=True, return_sequences=True)), "ids", 1.0)
    # Bidirectional: every merge mode, sequences and last step
    for _m in ("concat", "sum", "mul", "ave"):
        MODELS[f"{_c}_bidi_{_m}"] = (lambda mk=_mk, m=_m: _seq(FLOAT, L.Bidirectional(
            mk(return_sequences=True), merge_mode=m), L.Dense(3)), "float", 1.0)
    MODELS[f"{_c}_bidi_last"] = (lambda mk=_mk: _seq(FLOAT, L.Bidirectional(mk()), L.Dense(2)), "float", 1.0)
    MODELS[f"{_c}_bidi_none"] = (lambda mk=_mk: _fn(FLOAT, lambda x: L.Bidirectional(
        mk(return_sequences=True), merge_mode=None)(x)), "float", 1.0)
    MODELS[f"{_c}_bidi_none_last"] = (lambda mk=_mk: _fn(FLOAT, lambda x: L.Bidirectional(
        mk(), merge_mode=None)(x)), "float", 1.0)
    MODELS[f"{_c}_bidi_state"] = (lambda mk=_mk: _fn(FLOAT, lambda x: L.Bidirectional(
        mk(return_sequences=True, return_state=True))(x)), "float", 1.0)
    MODELS[f"{_c}_bidi_mask"] = (lambda mk=_mk: _seq(IDS, L.Embedding(20, 5, mask_zero=True), L.Bidirectional(
        mk(return_sequences=True)), L.TimeDistributed(L.Dense(2))), "ids", 1.0)
    MODELS[f"{_c}_bidi_mask_last"] = (lambda mk=_mk: _seq(IDS, L.Embedding(20, 5, mask_zero=True),
                                                          L.Bidirectional(mk(), merge_mode="ave")), "ids", 1.0)
    # go_backwards feeding other layers: the next layer reads the reversed sequence
    MODELS[f"{_c}_back_stack"] = (lambda mk=_mk: _seq(FLOAT, mk(return_sequences=True, go_backwards=True),
                                                      mk(return_sequences=True), L.Dense(2)), "float", 1.0)
    MODELS[f"{_c}_back_back"] = (lambda mk=_mk: _seq(FLOAT, mk(return_sequences=True, go_backwards=True),
                                                     mk(return_sequences=True, go_backwards=True)), "float", 1.0)
    MODELS[f"{_c}_back_bidi"] = (lambda mk=_mk: _seq(FLOAT, mk(return_sequences=True, go_backwards=True),
                                                     L.Bidirectional(mk(return_sequences=True)), L.Dense(2)),
                                 "float", 1.0)
    MODELS[f"{_c}_back_bidi_out"] = (lambda mk=_mk: _seq(FLOAT, mk(return_sequences=True, go_backwards=True),
                                                         L.Bidirectional(mk(return_sequences=True))), "float", 1.0)
    MODELS[f"{_c}_bidi_back_inner"] = (lambda mk=_mk: _seq(FLOAT, L.Bidirectional(
        mk(return_sequences=True, go_backwards=True), backward_layer=mk(return_sequences=True)),
        L.Dense(2)), "float", 1.0)

# activations: SimpleRNN's activation, LSTM/GRU's activation and recurrent_activation
ACTS = ["tanh", "sigmoid", "relu", "hard_sigmoid", "elu", "selu", "softsign", "softplus", "swish",
        "silu", "relu6", "linear", "leaky_relu", "exponential", "mish", "hard_silu", "hard_tanh"]
for _a in ACTS:
    _s = 0.2 if _a == "exponential" else 0.5 if _a in ("linear", "relu", "elu", "selu", "softplus", "relu6", "leaky_relu",
                                                      "mish", "hard_silu") \
        else 2.5 if _a == "hard_sigmoid" else 1.0
    MODELS[f"act_rnn_{_a}"] = (lambda a=_a: _seq(FLOAT, L.SimpleRNN(6, activation=a, return_sequences=True)),
                               "float", _s)
    MODELS[f"act_lstm_{_a}"] = (lambda a=_a: _seq(FLOAT, L.LSTM(6, activation=a, return_sequences=True)),
                                "float", _s)
    MODELS[f"act_gru_rec_{_a}"] = (lambda a=_a: _seq(FLOAT, L.GRU(6, recurrent_activation=a,
                                                                  return_sequences=True)), "float", _s)
    MODELS[f"act_lstm_rec_{_a}"] = (lambda a=_a: _seq(FLOAT, L.LSTM(6, recurrent_activation=a)), "float", _s)

# heads, identity layers, RNN(cell)
MODELS.update({
    "dense_heads": (lambda: _seq(FLOAT, L.LSTM(8, return_sequences=True), L.TimeDistributed(L.Dense(4, activation="tanh")),
                                 L.Dense(3, activation="softmax")), "float", 1.0),
    "log_softmax_head": (lambda: _seq(FLOAT, L.GRU(8), L.Dense(5), L.Activation("log_softmax")), "float", 1.0),
    "activation_layers": (lambda: _seq(FLOAT, L.SimpleRNN(6, return_sequences=True), L.Activation("relu"),
                                       L.Dense(4, use_bias=False), L.Activation("sigmoid")), "float", 1.0),
    "identity_layers": (lambda: _seq(FLOAT, L.Dropout(0.3), L.SpatialDropout1D(0.2), L.GaussianNoise(0.5),
                                     L.LSTM(6, return_sequences=True), L.GaussianDropout(0.3),
                                     L.ActivityRegularization(l1=0.01), L.AlphaDropout(0.1),
                                     L.TimeDistributed(L.Dense(3))), "float", 1.0),
    "rnn_cell_wrappers": (lambda: _seq(FLOAT, L.RNN(L.LSTMCell(6), return_sequences=True),
                                       L.RNN(L.GRUCell(5), go_backwards=True, return_sequences=True),
                                       L.RNN(L.SimpleRNNCell(4))), "float", 1.0),
    "flatten_after_last": (lambda: _seq(FLOAT, L.GRU(6), L.Flatten(), L.Dense(2)), "float", 1.0),
    "functional_h_consumer": (lambda: _fn(FLOAT, lambda x: L.Dense(2)(L.LSTM(6, return_state=True)(x)[1])),
                              "float", 1.0),
    "functional_state_and_head": (lambda: _fn(FLOAT, lambda x: (lambda o: [L.Dense(2)(o[0]), o[1], o[2]])(
        L.LSTM(6, return_sequences=True, return_state=True)(x))), "float", 1.0),
    # the tutorial models (IMDB / Reuters / the Keras SimpleRNN docs)
    "tut_imdb_simplernn": (lambda: _seq({"shape": (40,), "dtype": "int32"}, L.Embedding(10000, 32),
                                        L.SimpleRNN(32), L.Dense(1, activation="sigmoid")), "ids", 1.0),
    "tut_imdb_lstm": (lambda: _seq({"shape": (40,), "dtype": "int32"}, L.Embedding(10000, 32), L.LSTM(32),
                                   L.Dense(1, activation="sigmoid")), "ids", 1.0),
    "tut_imdb_gru": (lambda: _seq({"shape": (40,), "dtype": "int32"}, L.Embedding(10000, 32), L.GRU(32),
                                  L.Dense(1, activation="sigmoid")), "ids", 1.0),
    "tut_stacked_simplernn": (lambda: _seq({"shape": (40,), "dtype": "int32"}, L.Embedding(10000, 32),
                                           L.SimpleRNN(32, return_sequences=True),
                                           L.SimpleRNN(32, return_sequences=True),
                                           L.SimpleRNN(32, return_sequences=True), L.SimpleRNN(32)), "ids", 1.0),
    "tut_reuters_simplernn": (lambda: _seq({"shape": (49, 1)}, L.SimpleRNN(50), L.Dense(46),
                                           L.Activation("softmax")), "float", 1.0),
    "tut_reuters_lstm2": (lambda: _seq({"shape": (49, 1)}, L.LSTM(50, return_sequences=True), L.LSTM(50),
                                       L.Dense(46), L.Activation("softmax")), "float", 1.0),
    "tut_simplernn3_seq_state": (lambda: _fn({"shape": (10, 8)}, lambda x: L.SimpleRNN(
        3, use_bias=False, return_sequences=True, return_state=True)(x)), "float", 1.0),
    "tut_simplernn3_last_state": (lambda: _fn({"shape": (10, 8)}, lambda x: L.SimpleRNN(
        3, use_bias=False, return_state=True)(x)), "float", 1.0),
    "tut_simplernn3": (lambda: _seq({"shape": (10, 8)}, L.SimpleRNN(3, use_bias=False)), "float", 1.0),
    # BatchNormalization at inference: folded into the Dense or recurrent layer next to it
    "bn_dense": (lambda: _seq(FLOAT, L.LSTM(6, return_sequences=True), L.Dense(4), L.BatchNormalization(),
                              L.Activation("relu"), L.Dense(2)), "float", 1.0),
    "bn_first": (lambda: _seq(FLOAT, L.BatchNormalization(), L.GRU(6), L.Dense(3, activation="softmax")),
                 "float", 1.0),
    "bn_back_bidi": (lambda: _seq(FLOAT, L.LSTM(6, return_sequences=True, go_backwards=True),
                                  L.Bidirectional(L.LSTM(5, return_sequences=True)),
                                  L.BatchNormalization(center=False), L.LSTM(3)), "float", 1.0),
    "bn_last": (lambda: _seq(FLOAT, L.LSTM(6), L.BatchNormalization(scale=False, epsilon=0.01)), "float", 1.0),
    # pooling over time after a recurrent layer: averages under a mask count the unmasked steps
    "gap_lstm": (lambda: _seq(FLOAT, L.LSTM(6, return_sequences=True), L.GlobalAveragePooling1D(),
                              L.Dense(2, activation="sigmoid")), "float", 1.0),
    "gmp_back_bidi": (lambda: _seq(FLOAT, L.GRU(5, return_sequences=True, go_backwards=True),
                                   L.Bidirectional(L.LSTM(4, return_sequences=True)), L.GlobalMaxPooling1D(),
                                   L.Dense(3)), "float", 1.0),
    "gap_masked": (lambda: _seq(IDS, L.Embedding(20, 5, mask_zero=True), L.GRU(6, return_sequences=True),
                                L.GlobalAveragePooling1D(), L.Dense(2)), "ids", 1.0),
    "gmp_masked": (lambda: _seq(IDS, L.Embedding(20, 5, mask_zero=True), L.Bidirectional(
        L.SimpleRNN(6, return_sequences=True)), L.GlobalMaxPooling1D(), L.Dense(2)), "ids", 1.0),
    # the Kaggle pooled RNN: concatenate([GlobalMaxPooling1D()(x), GlobalAveragePooling1D()(x)]) is
    # one Pool layer of two kinds (after a pending column order: go_backwards then Bidirectional)
    "pool_concat": (lambda: _fn(FLOAT, _pool_concat), "float", 1.0),
    "pool_concat_ids": (lambda: _fn(IDS, lambda x: _pooled(L.Bidirectional(L.GRU(5, return_sequences=True))(
        L.Embedding(20, 5)(x)))), "ids", 1.0),
    # convolutions and pooling over time in front of recurrent layers (keras.io's CNN-LSTM), and
    # RepeatVector between an encoder and a decoder (keras.io's addition RNN)
    "cnn_lstm": (lambda: _seq({"shape": (12,), "dtype": "int32"}, L.Embedding(20, 5), L.Dropout(0.2),
                              L.Conv1D(6, 3, padding="valid", activation="relu"), L.MaxPooling1D(2),
                              L.LSTM(7), L.Dense(1, activation="sigmoid")), "ids", 1.0),
    "conv_causal_dilated": (lambda: _seq({"shape": (12, 4)}, L.Conv1D(5, 3, padding="causal", dilation_rate=2),
                                         L.GRU(6, return_sequences=True)), "float", 1.0),
    "conv_same_strided_avg": (lambda: _seq({"shape": (13, 4)}, L.Conv1D(5, 4, strides=2, padding="same",
                                                                        activation="tanh"),
                                           L.AveragePooling1D(3, strides=2, padding="same"),
                                           L.SimpleRNN(6)), "float", 1.0),
    # Keras drops the Embedding's mask at the convolution (the LSTM before it still uses it)
    "conv_after_mask": (lambda: _seq({"shape": (9,), "dtype": "int32"}, L.Embedding(20, 5, mask_zero=True),
                                     L.LSTM(6, return_sequences=True), L.Conv1D(4, 3), L.GRU(5)), "ids", 1.0),
    "addition_rnn": (lambda: _seq({"shape": (7, 4)}, L.LSTM(8), L.RepeatVector(4),
                                  L.LSTM(8, return_sequences=True), L.Dense(5, activation="softmax")),
                     "float", 1.0),
    # the activation layers (LeakyReLU between Dense layers is the usual Keras head), and
    # UnitNormalization (an L2-normalised embedding)
    "activation_layers": (lambda: _seq(FLOAT, L.LSTM(6, return_sequences=True), L.Dense(5), L.LeakyReLU(0.2),
                                       L.Dense(5), L.ReLU(negative_slope=0.1), L.Dense(5), L.ReLU(max_value=6.0),
                                       L.Dense(4), L.ELU(0.5), L.Dense(3), L.Softmax()), "float", 3.0),
    "unit_normalization": (lambda: _seq(FLOAT, L.GRU(6), L.Dense(4), L.UnitNormalization()), "float", 1.0),
    # a sequence flattened (a fixed-length Input), then repeated into a decoder
    "repeat_of_a_flattened_sequence": (lambda: _seq(FLOAT, L.LSTM(4, return_sequences=True), L.Flatten(),
                                                    L.RepeatVector(3), L.LSTM(4)), "float", 1.0),
})


# functional graphs that are not a chain: the graph frontend on the shared lowering
# (converters/frontends/keras.py), through the same matrix (three sources, streams)
MODELS.update({
    "graph_residual_lstms": (lambda: _fn(FLOAT, lambda x: (lambda a: L.Dense(3, activation="softmax")(
        L.GlobalAveragePooling1D()(L.Add()([a, L.LSTM(6, return_sequences=True)(a)]))))(
        L.LSTM(6, return_sequences=True)(x))), "float", 1.0),
    "graph_gate_multiply": (lambda: _fn(FLOAT, lambda x: (lambda a: L.Dense(2)(L.GlobalMaxPooling1D()(
        L.Multiply()([a, L.Dense(6, activation="sigmoid")(a)]))))(L.GRU(6, return_sequences=True)(x))), "float", 1.0),
    "graph_concat_of_two_rnns": (lambda: _fn(FLOAT, lambda x: L.Dense(2)(L.Concatenate()([L.LSTM(3)(x), L.GRU(3)(x)]))),
                                 "float", 1.0),
    "graph_skip_from_input": (lambda: _fn(FLOAT, lambda x: L.Add()([L.Dense(6)(x), L.SimpleRNN(
        6, activation="relu", return_sequences=True)(x)])), "float", 1.0),
    "graph_average_subtract": (lambda: _fn(FLOAT, lambda x: (lambda a, b: L.TimeDistributed(L.Dense(2))(
        L.Average()([a, L.Subtract()([a, b])])))(L.LSTM(5, return_sequences=True)(x),
                                               L.GRU(5, return_sequences=True, reset_after=False)(x))), "float", 1.0),
    "graph_ids_bidi_sum_layernorm": (lambda: _fn(IDS, lambda x: (lambda e: L.Dense(3)(L.LayerNormalization()(L.LSTM(6)(
        L.Add()([L.Dense(4)(e), L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum")(e)])))))(
        L.Embedding(20, 8)(x))), "ids", 1.0),
    "graph_conv_residual": (lambda: _fn(FLOAT, lambda x: (lambda c: L.Dense(2)(L.GlobalAveragePooling1D()(L.Add()([
        L.LSTM(5, return_sequences=True)(c), c]))))(L.Conv1D(5, 3, padding="same", activation="relu")(x))), "float", 1.0),
    "graph_conv_pool_concat": (lambda: _fn(FLOAT, lambda x: (lambda c: L.Dense(2)(L.Concatenate()([
        L.GRU(5, return_sequences=True)(c), c])))(L.MaxPooling1D(2)(L.Conv1D(5, 3, padding="causal")(x)))),
                               "float", 1.0),
    "graph_mha_residual": (lambda: _fn(FLOAT, lambda x: (lambda a: L.Dense(3)(L.GlobalAveragePooling1D()(L.Add()([
        a, L.MultiHeadAttention(num_heads=2, key_dim=3)(a, a)]))))(L.LSTM(6, return_sequences=True)(x))), "float", 1.0),
    "graph_mha_causal": (lambda: _fn(FLOAT, lambda x: (lambda a: L.Dense(2)(L.MultiHeadAttention(num_heads=1, key_dim=6)(
        a, a, use_causal_mask=True)))(L.GRU(6, return_sequences=True)(x))), "float", 1.0),
    "graph_bidi_last_concat": (lambda: _fn(FLOAT, lambda x: L.Dense(2)(L.Concatenate()([
        L.Bidirectional(L.GRU(4))(x), L.LSTM(3)(x)]))), "float", 1.0),
})


def _pool_concat(x):
    h = L.Bidirectional(L.LSTM(4, return_sequences=True))(L.GRU(5, return_sequences=True, go_backwards=True)(x))
    return L.Dense(3)(L.Concatenate()([L.GlobalMaxPooling1D()(h), L.GlobalAveragePooling1D()(h)]))


def _pooled(h):
    """The Kaggle pooled GRU's head: average and max over time side by side, a sigmoid Dense."""
    return L.Dense(2, activation="sigmoid")(L.concatenate([L.GlobalAveragePooling1D()(h),
                                                          L.GlobalMaxPooling1D()(h)]))


def _input(kind, model, rng):
    shape = model.inputs[0].shape
    t = shape[1] if shape[1] is not None else T
    if kind == "ids":
        vocab = next(l for l in model.layers if isinstance(l, L.Embedding)).input_dim
        x = rng.integers(1, vocab, (B, t)).astype(np.int32)
        x[1, t - 2:] = 0                 # right padding, and a masked step in the middle
        x[2, t // 2] = 0
        return x
    x = rng.normal(0, 1, (B, t) + tuple(shape[2:])).astype(np.float32)
    if kind == "masked":
        x[1, t - 3:] = 0.0
        x[2, 2] = 0.0
    return x


@pytest.fixture(scope="session")
def keras_cache(tmp_path_factory):
    """Build each model once per session: (keras model, x, [keras outputs], {format: path})."""
    root = tmp_path_factory.mktemp("keras3")
    built = {}

    def get(name):
        if name not in built:
            fn, kind, scale = MODELS[name]
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            keras.utils.set_random_seed(1)
            m = fn()
            _randomise(m, rng, scale)
            x = _input(kind, m, rng)
            ys = m(x, training=False)
            ys = [keras.ops.convert_to_numpy(y) for y in (ys if isinstance(ys, (list, tuple)) else [ys])]
            paths = {}
            for ext in ("keras", "h5"):
                p = root / f"{name}.{ext}"
                m.save(p)
                paths[ext] = p
            built[name] = (m, x, ys, paths)
        return built[name]
    return get


def _close(got, want, what):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


def _as_list(y):
    return y if isinstance(y, list) else [y]


@pytest.mark.parametrize("source", ["keras", "h5", "live"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_keras3(keras_cache, name, source):
    km, x, want, paths = keras_cache(name)
    m = fastrnn.convert(km if source == "live" else str(paths[source]))
    assert m.meta["keras_version"] == 3
    got = _as_list(m.predict(x))
    assert len(got) == len(want) == m.num_outputs
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (i, g.shape, w.shape)
        _close(g, w, f"output {i}")
    if any(isinstance(l, ir.TIME_CHANGING) for l in m.layers):     # windows over time: predict only
        with pytest.raises(fastrnn.UnsupportedError, match="number of time steps"):
            m.stream(x.shape[0])
    elif any(isinstance(l, ir.Attention) for l in m.layers):       # every step reads the others
        with pytest.raises(fastrnn.UnsupportedError, match="self-attention"):
            m.stream(x.shape[0])
    elif source == "keras" and all(l.direction == "forward" for l in m.layers if isinstance(l, ir.Recurrent)):
        s = m.stream(x.shape[0])
        steps = [_as_list(s.step(x[:, t])) for t in range(x.shape[1])]
        for i, w in enumerate(want):
            if w.ndim == 3:
                _close(np.stack([st[i] for st in steps], axis=1), w, f"stream output {i}")
            else:
                _close(steps[-1][i], w, f"stream output {i} (last step)")


def test_keras3_graphs_take_the_graph_frontend(keras_cache):
    """The functional graphs that are not a chain convert through the shared lowering (meta says
    so); a chain still takes the chain builder."""
    for name in (n for n in MODELS if n.startswith("graph_")):
        assert fastrnn.convert(keras_cache(name)[0]).meta["frontend"] == "graph", name
    assert "frontend" not in fastrnn.convert(keras_cache("lstm_last")[0]).meta


def test_keras3_hard_sigmoid_is_keras3s(keras_cache):
    m = fastrnn.convert(keras_cache("act_lstm_rec_hard_sigmoid")[0])
    assert m.layers[0].activations[0][0] == ir.Act("hard_sigmoid", 1 / 6, 0.5)


def test_keras3_stateful_streams(tmp_path):
    """A stateful Keras model carries state across calls; so does a Stream, or predict with
    initial_state/return_state."""
    rng = np.random.default_rng(5)
    km = keras.Sequential([keras.Input(batch_shape=(2, 4, 3)), L.LSTM(5, stateful=True, return_sequences=True),
                           L.Dense(2)])
    _randomise(km, rng)
    km.save(tmp_path / "s.keras")
    m = fastrnn.convert(str(tmp_path / "s.keras"))
    assert m.meta["stateful"] and m.meta["batch_size"] == 2
    xs = [rng.normal(size=(2, 4, 3)).astype(np.float32) for _ in range(3)]
    want = [keras.ops.convert_to_numpy(km(x)) for x in xs]      # state carries between calls
    s = m.stream(2)
    st = None
    for x, w in zip(xs, want):
        _close(np.stack([s.step(x[:, t]) for t in range(4)], axis=1), w, "stream")
        y, st = m.predict(x, initial_state=st, return_state=True)
        _close(y, w, "predict with state")


def test_keras3_return_state_layout(keras_cache):
    """predict(return_state=True) gives Keras's state tensors: per layer [h(, c)], each (B, H),
    Bidirectional forward first; initial_state takes the same."""
    km, x, want, paths = keras_cache("lstm_bidi_state")
    m = fastrnn.convert(str(paths["keras"]))
    y, st = m.predict(x, return_state=True)
    assert [a.shape for a in st] == [(B, 6)] * 4 == m.state_shapes(B)
    for a, w in zip(st, want[1:]):
        _close(a, w, "state")
    st2 = [a * 0.5 for a in st]
    y2 = m.predict(x, initial_state=st2)
    layer = km.layers[1]        # [0] is the InputLayer
    w2 = keras.ops.convert_to_numpy(layer(x, initial_state=st2)[0])
    _close(y2[0], w2, "with initial_state")


def test_keras3_cell_order_in_bidi_states():
    """Named states must come back in Keras order even when go_backwards makes fastrnn swap the
    directions of a Bidirectional layer."""
    rng = np.random.default_rng(3)
    x = keras.Input((T, F))
    h = L.GRU(4, return_sequences=True, go_backwards=True)(x)
    outs = L.Bidirectional(L.LSTM(3, return_sequences=True, return_state=True))(h)
    km = keras.Model(x, outs)
    _randomise(km, rng)
    xv = rng.normal(size=(B, T, F)).astype(np.float32)
    want = [keras.ops.convert_to_numpy(a) for a in km(xv)]
    got = fastrnn.convert(km).predict(xv)
    for g, w in zip(got, want):
        _close(g, w, "output")


UNSUPPORTED = {
    "layernorm_rms": (lambda: _seq(FLOAT, L.LayerNormalization(rms_scaling=True), L.LSTM(4)), "rms_scaling"),
    "tanh_shrink": (lambda: _seq(FLOAT, L.SimpleRNN(4, activation="tanh_shrink")), "tanh_shrink"),
    "mask_after_back": (lambda: _seq(IDS, L.Embedding(20, 5, mask_zero=True),
                                     L.LSTM(4, go_backwards=True, return_sequences=True), L.LSTM(4)), "go_backwards"),
    "two_inputs": (lambda: (lambda a, b: keras.Model([a, b], L.LSTM(4)(a, initial_state=[b, b])))(
        keras.Input((T, F)), keras.Input((4,))), "inputs"),
    "branch": (lambda: _fn(FLOAT, lambda x: [L.LSTM(4)(x), L.GRU(4)(x)]), "chain"),
    "stacked_cells": (lambda: _seq(FLOAT, L.RNN([L.LSTMCell(4), L.LSTMCell(4)])), "cell"),
    # an explicit mask other than the Embedding's own (id != 0) is not dropped
    "mask_not_3": (lambda: _fn(IDS, lambda x: L.LSTM(4)(L.Embedding(20, 5, mask_zero=True)(x),
                                                        mask=keras.ops.not_equal(x, 3))), "chain"),
    # the mask of the second layer after a Masking is the Masking's, not the Embedding's
    "mask_state_after_masking": (lambda: _fn(IDS, lambda x: L.LSTM(4, return_state=True)(L.Masking(0.5)(
        L.LSTM(4, return_sequences=True)(L.Embedding(20, 5, mask_zero=True)(x))))), "chain"),
    "mask_without_mask_zero": (lambda: _fn(IDS, lambda x: L.LSTM(4)(L.Embedding(20, 5)(x),
                                                                    mask=keras.ops.not_equal(x, 0))), "chain"),
    # Keras's masked mean counts the unmasked steps, its max every step: one Pool has one rule
    "pool_concat_masked": (lambda: _fn(IDS, lambda x: _pooled(L.GRU(5, return_sequences=True)(
        L.Embedding(20, 5, mask_zero=True)(x)))), "unmasked steps next to a max"),
    # not a chain, and beyond the graph frontend (converters/frontends/keras.py): each reason named
    "graph_lambda": (lambda: _fn(FLOAT, lambda x: L.Add()([L.LSTM(3, return_sequences=True)(x),
                                                            L.Lambda(lambda t: t * 2.0)(L.GRU(3, return_sequences=True)(x))])),
                     "a lambda layer"),
    "graph_mask_zero": (lambda: _fn(IDS, lambda x: (lambda e: L.Add()([L.LSTM(5, return_sequences=True)(e), e]))(
        L.Embedding(20, 5, mask_zero=True)(x))), "mask_zero=true"),
    "graph_shared_layer": (lambda: _fn(FLOAT, lambda x: (lambda d: L.Add()([d(x), d(L.LSTM(5, return_sequences=True)(x))]))(
        L.Dense(5))), "a shared layer"),
    "relu_threshold": (lambda: _seq(FLOAT, L.LSTM(4), L.ReLU(threshold=0.5)), "threshold"),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_keras3_unsupported(tmp_path, name):
    fn, word = UNSUPPORTED[name]
    km = fn()
    km.save(tmp_path / "m.keras")
    for src in (km, str(tmp_path / "m.keras")):
        with pytest.raises(fastrnn.UnsupportedError) as e:
            fastrnn.convert(src)
        assert word in str(e.value).lower(), str(e.value)


def test_keras_files_need_no_keras(tmp_path, keras_cache):
    """Converting reads json + h5py only: run it in a process where importing keras,
    tensorflow or torch fails."""
    import subprocess
    import sys
    _, x, want, paths = keras_cache("lstm_bidi_state")
    np.save(tmp_path / "x.npy", x)
    code = f"""
import sys, numpy as np
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('keras', 'tensorflow', 'tf_keras', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import fastrnn
for p in ({str(paths['keras'])!r}, {str(paths['h5'])!r}):
    y = fastrnn.convert(p).predict(np.load({str(tmp_path / 'x.npy')!r}))
    np.save(p + '.y0.npy', y[0])
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    for p in (paths["keras"], paths["h5"]):
        _close(np.load(str(p) + ".y0.npy"), want[0], str(p))
