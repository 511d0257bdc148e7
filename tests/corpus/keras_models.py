"""Real-world Keras recurrent models, re-typed from public code as test fixtures (keras.io examples,
the TensorFlow text tutorials, Deep Learning with Python, machinelearningmastery.com, Kaggle
kernels). Architectures and layer options follow the source; sizes are small.

CASES is the registry: KCase(name, source, build, inputs, idioms).
  build()                   the keras.Model (seeded)
  inputs(batch, time, rng)  what the source feeds model.predict: int token ids (batch, time)
                            ("ids", padded with 0 after each row's length where the model masks
                            with mask_zero=True), or float32 (batch, time, features) ("floats")
  kind                      "ids" | "floats"
Models with a fixed input length use TIME, the corpus's sequence length.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

TIME = 7        # the corpus's sequence length (tests use batch 3, time 7)
VOCAB = 40


@dataclass(frozen=True)
class KCase:
    name: str
    source: str
    build: Callable
    inputs: Callable
    kind: str = "ids"
    idioms: tuple = ()


def _keras():
    import keras
    return keras


def _seeded(fn):
    def build():
        keras = _keras()
        keras.utils.set_random_seed(0)
        return fn(keras, keras.layers)
    return build


def ids(B, T, rng, vocab=VOCAB):
    return rng.integers(1, vocab, size=(B, T)).astype(np.int32)


def ids_post_padded(B, T, rng, vocab=VOCAB):
    """Token ids padded with 0 at the end (TextVectorization / padding='post'), rows of mixed length."""
    x = ids(B, T, rng, vocab)
    lens = [T] + [max(1, T - 2 - 2 * i) for i in range(B - 1)]
    for b, n in enumerate(lens):
        x[b, n:] = 0
    return x


def floats(B, T, F, rng):
    return rng.standard_normal((B, T, F)).astype(np.float32)


def onehot(B, T, n, rng):
    return np.eye(n, dtype=np.float32)[rng.integers(0, n, size=(B, T))]


# --------------------------------------------------------------------------------------------

def bidirectional_lstm_imdb(keras, layers):
    """keras.io examples/nlp/bidirectional_lstm_imdb.py: Input(shape=(None,), dtype="int32"),
    Embedding, 2 Bidirectional(LSTM) (the first return_sequences=True), Dense(1, sigmoid)."""
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = layers.Embedding(VOCAB, 8)(inputs)
    x = layers.Bidirectional(layers.LSTM(12, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(12))(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs)


def addition_rnn(keras, layers):
    """keras.io examples/nlp/addition_rnn.py: Sequential LSTM encoder over one-hot characters
    (input_shape=(MAXLEN, len(chars))), RepeatVector(DIGITS + 1), LSTM(return_sequences=True),
    Dense(len(chars), softmax) on every step. DIGITS=3 gives MAXLEN = 7."""
    DIGITS, chars = 3, 12
    MAXLEN = DIGITS + 1 + DIGITS
    model = keras.Sequential()
    model.add(keras.Input(shape=(MAXLEN, chars)))
    model.add(layers.LSTM(16))
    model.add(layers.RepeatVector(DIGITS + 1))
    model.add(layers.LSTM(16, return_sequences=True))
    model.add(layers.Dense(chars, activation="softmax"))
    return model


def lstm_seq2seq_encoder(keras, layers):
    """keras.io examples/nlp/lstm_seq2seq.py, the inference encoder: Input(shape=(None,
    num_encoder_tokens)), LSTM(latent_dim, return_state=True), encoder_model =
    keras.Model(encoder_inputs, [state_h, state_c]) (two outputs)."""
    num_encoder_tokens, latent_dim = 10, 16
    encoder_inputs = keras.Input(shape=(None, num_encoder_tokens))
    encoder = layers.LSTM(latent_dim, return_state=True)
    encoder_outputs, state_h, state_c = encoder(encoder_inputs)
    encoder_states = [state_h, state_c]
    return keras.Model(encoder_inputs, encoder_states)


def cnn_lstm_imdb(keras, layers):
    """machinelearningmastery.com Sequence Classification with LSTM Recurrent Neural Networks in
    Python with Keras (the CNN-LSTM): Embedding(top_words, 32, input_length=max_review_length),
    Conv1D(32, 3, padding='same', activation='relu'), MaxPooling1D(pool_size=2), LSTM(100),
    Dense(1, sigmoid). (input_length dropped: Keras 3.)"""
    model = keras.Sequential()
    model.add(keras.Input(shape=(TIME,), dtype="int32"))
    model.add(layers.Embedding(VOCAB, 8))
    model.add(layers.Conv1D(filters=8, kernel_size=3, padding="same", activation="relu"))
    model.add(layers.MaxPooling1D(pool_size=2))
    model.add(layers.LSTM(12))
    model.add(layers.Dense(1, activation="sigmoid"))
    return model


def rnn_lstmcell_batchnorm(keras, layers):
    """keras.io guides/working_with_rnns.py build_model(allow_cudnn_kernel=False):
    keras.layers.RNN(keras.layers.LSTMCell(units), input_shape=(None, input_dim)),
    BatchNormalization(), Dense(output_size) (logits)."""
    input_dim, units, output_size = 8, 16, 10
    lstm_layer = layers.RNN(layers.LSTMCell(units))
    model = keras.models.Sequential([keras.Input(shape=(None, input_dim)), lstm_layer,
                                     layers.BatchNormalization(), layers.Dense(output_size)])
    bn = model.layers[1]
    rng = np.random.default_rng(1)        # trained statistics, so inference batch norm is not identity
    bn.set_weights([rng.uniform(0.5, 1.5, units).astype("float32"), rng.normal(0, 0.1, units).astype("float32"),
                    rng.normal(0, 0.3, units).astype("float32"), rng.uniform(0.5, 1.5, units).astype("float32")])
    return model


def spatialdropout_lstm(keras, layers):
    """Multi-Class Text Classification with LSTM (Susan Li, Consumer Complaints; Kaggle / TDS):
    Embedding(MAX_NB_WORDS, EMBEDDING_DIM, input_length=X.shape[1]), SpatialDropout1D(0.2),
    LSTM(100, dropout=0.2, recurrent_dropout=0.2), Dense(5, softmax)."""
    model = keras.Sequential()
    model.add(keras.Input(shape=(TIME,), dtype="int32"))
    model.add(layers.Embedding(VOCAB, 8))
    model.add(layers.SpatialDropout1D(0.2))
    model.add(layers.LSTM(12, dropout=0.2, recurrent_dropout=0.2))
    model.add(layers.Dense(5, activation="softmax"))
    return model


def toxic_bilstm_globalmaxpool(keras, layers):
    """Kaggle Improved LSTM baseline: GloVe + dropout (Jeremy Howard, Toxic Comment Classification):
    Input(shape=(maxlen,)), Embedding, Bidirectional(LSTM(50, return_sequences=True, dropout=0.1,
    recurrent_dropout=0.1)), GlobalMaxPool1D(), Dense(50, relu), Dropout(0.1), Dense(6, sigmoid)."""
    inp = keras.Input(shape=(TIME,))
    x = layers.Embedding(VOCAB, 8)(inp)
    x = layers.Bidirectional(layers.LSTM(10, return_sequences=True, dropout=0.1, recurrent_dropout=0.1))(x)
    x = layers.GlobalMaxPool1D()(x)
    x = layers.Dense(12, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(6, activation="sigmoid")(x)
    return keras.Model(inputs=inp, outputs=x)


def pooled_bigru(keras, layers):
    """Kaggle Pooled GRU + FastText (Vladimir Demidov, Toxic Comment Classification):
    Embedding, SpatialDropout1D(0.2), Bidirectional(GRU(80, return_sequences=True)),
    concatenate([GlobalAveragePooling1D()(x), GlobalMaxPooling1D()(x)]), Dense(6, sigmoid)."""
    inp = keras.Input(shape=(TIME,))
    x = layers.Embedding(VOCAB, 8)(inp)
    x = layers.SpatialDropout1D(0.2)(x)
    x = layers.Bidirectional(layers.GRU(10, return_sequences=True))(x)
    avg_pool = layers.GlobalAveragePooling1D()(x)
    max_pool = layers.GlobalMaxPooling1D()(x)
    conc = layers.concatenate([avg_pool, max_pool])
    outp = layers.Dense(6, activation="sigmoid")(conc)
    return keras.Model(inputs=inp, outputs=outp)


def tf_text_classification_rnn(keras, layers):
    """TensorFlow tutorial Text classification with an RNN
    (https://www.tensorflow.org/text/tutorials/text_classification_rnn), after its TextVectorization
    encoder: Embedding(mask_zero=True), Bidirectional(LSTM(64)), Dense(64, relu), Dense(1) (logits)."""
    return keras.Sequential([
        keras.Input(shape=(None,), dtype="int64"),
        layers.Embedding(input_dim=VOCAB, output_dim=8, mask_zero=True),
        layers.Bidirectional(layers.LSTM(12)),
        layers.Dense(12, activation="relu"),
        layers.Dense(1),
    ])


def tf_text_classification_rnn_stacked(keras, layers):
    """The same tutorial's stacked model: Embedding(mask_zero=True), Bidirectional(LSTM(64,
    return_sequences=True)), Bidirectional(LSTM(32)), Dense(64, relu), Dropout(0.5), Dense(1)."""
    return keras.Sequential([
        keras.Input(shape=(None,), dtype="int64"),
        layers.Embedding(VOCAB, 8, mask_zero=True),
        layers.Bidirectional(layers.LSTM(12, return_sequences=True)),
        layers.Bidirectional(layers.LSTM(8)),
        layers.Dense(12, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(1),
    ])


def mlm_stacked_lstm(keras, layers):
    """machinelearningmastery.com How to Develop LSTM Models for Time Series Forecasting, Stacked
    LSTM: LSTM(50, activation='relu', return_sequences=True, input_shape=(n_steps, n_features)),
    LSTM(50, activation='relu'), Dense(1)."""
    n_steps, n_features = TIME, 2
    model = keras.Sequential()
    model.add(keras.Input(shape=(n_steps, n_features)))
    model.add(layers.LSTM(12, activation="relu", return_sequences=True))
    model.add(layers.LSTM(12, activation="relu"))
    model.add(layers.Dense(1))
    return model


def dlwp_jena_stacked_gru(keras, layers):
    """Deep Learning with Python (Chollet), 6.3 Advanced use of recurrent neural networks, Jena
    temperature forecasting, stacked recurrent layers: GRU(32, dropout=0.1, recurrent_dropout=0.5,
    return_sequences=True, input_shape=(None, float_data.shape[-1])), GRU(64, activation='relu',
    dropout=0.1, recurrent_dropout=0.5), Dense(1)."""
    model = keras.Sequential()
    model.add(keras.Input(shape=(None, 5)))
    model.add(layers.GRU(12, dropout=0.1, recurrent_dropout=0.5, return_sequences=True))
    model.add(layers.GRU(16, activation="relu", dropout=0.1, recurrent_dropout=0.5))
    model.add(layers.Dense(1))
    return model


def dlwp_imdb_gru(keras, layers):
    """Deep Learning with Python 6.2/6.3 IMDB GRU text classifier: Embedding(max_features, 32),
    GRU(32), Dense(1, sigmoid)."""
    model = keras.Sequential()
    model.add(keras.Input(shape=(None,), dtype="int32"))
    model.add(layers.Embedding(VOCAB, 8))
    model.add(layers.GRU(12))
    model.add(layers.Dense(1, activation="sigmoid"))
    return model


def timeseries_weather_forecasting(keras, layers):
    """keras.io examples/timeseries/timeseries_weather_forecasting.py: Input((sequence_length,
    features)), LSTM(32), Dense(1)."""
    inputs = keras.layers.Input(shape=(TIME, 4))
    lstm_out = keras.layers.LSTM(16)(inputs)
    outputs = keras.layers.Dense(1)(lstm_out)
    return keras.Model(inputs=inputs, outputs=outputs)


def lstm_character_level_text_generation(keras, layers):
    """keras.io examples/generative/lstm_character_level_text_generation.py:
    Sequential([Input((maxlen, len(chars))), LSTM(128), Dense(len(chars), softmax)])."""
    maxlen, chars = TIME, 10
    return keras.Sequential([
        keras.Input(shape=(maxlen, chars)),
        layers.LSTM(16),
        layers.Dense(chars, activation="softmax"),
    ])


def gru_globalaveragepooling_masked(keras, layers):
    """A GRU text classifier over masked, post-padded ids with GlobalAveragePooling1D after the
    recurrent layer (the pattern of the keras.io guide Understanding masking & padding:
    Embedding(mask_zero=True) feeding an RNN with return_sequences=True, and of Kaggle GRU
    baselines): Embedding(mask_zero=True), GRU(return_sequences=True), GlobalAveragePooling1D(),
    Dense(1, sigmoid)."""
    inp = keras.Input(shape=(None,), dtype="int32")
    x = layers.Embedding(VOCAB, 8, mask_zero=True)(inp)
    x = layers.GRU(12, return_sequences=True)(x)
    x = layers.GlobalAveragePooling1D()(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inp, out)


CASES = [
    KCase("keras_io_bidirectional_lstm_imdb",
          "https://github.com/keras-team/keras-io/blob/master/examples/nlp/bidirectional_lstm_imdb.py",
          _seeded(bidirectional_lstm_imdb), lambda B, T, rng: ids(B, T, rng),
          idioms=("Bidirectional LSTM", "stacked LSTMs", "Input(shape=(None,))")),
    KCase("keras_io_addition_rnn",
          "https://github.com/keras-team/keras-io/blob/master/examples/nlp/addition_rnn.py",
          _seeded(addition_rnn), lambda B, T, rng: onehot(B, T, 12, rng), kind="floats",
          idioms=("RepeatVector", "LSTM encoder-decoder", "per-step softmax Dense")),
    KCase("keras_io_lstm_seq2seq_encoder",
          "https://github.com/keras-team/keras-io/blob/master/examples/nlp/lstm_seq2seq.py",
          _seeded(lstm_seq2seq_encoder), lambda B, T, rng: onehot(B, T, 10, rng), kind="floats",
          idioms=("return_state=True", "model outputs [state_h, state_c]")),
    KCase("mlm_cnn_lstm_imdb",
          "https://machinelearningmastery.com/sequence-classification-lstm-recurrent-neural-networks-python-keras/",
          _seeded(cnn_lstm_imdb), lambda B, T, rng: ids(B, T, rng),
          idioms=("Conv1D + MaxPooling1D before LSTM (CNN-LSTM)",)),
    KCase("keras_io_rnn_lstmcell_batchnorm",
          "https://github.com/keras-team/keras-io/blob/master/guides/working_with_rnns.py",
          _seeded(rnn_lstmcell_batchnorm), lambda B, T, rng: floats(B, T, 8, rng), kind="floats",
          idioms=("RNN(LSTMCell(...))", "BatchNormalization after LSTM", "logits Dense")),
    KCase("kaggle_spatialdropout_lstm",
          "https://towardsdatascience.com/multi-class-text-classification-with-lstm-1590bee1bd17 (Susan Li)",
          _seeded(spatialdropout_lstm), lambda B, T, rng: ids(B, T, rng),
          idioms=("SpatialDropout1D", "LSTM(dropout, recurrent_dropout)", "softmax Dense")),
    KCase("kaggle_toxic_bilstm_globalmaxpool",
          "https://www.kaggle.com/code/jhoward/improved-lstm-baseline-glove-dropout",
          _seeded(toxic_bilstm_globalmaxpool), lambda B, T, rng: ids(B, T, rng),
          idioms=("Bidirectional LSTM return_sequences", "GlobalMaxPool1D after a recurrent layer",
                  "Dense relu + Dropout + Dense sigmoid")),
    KCase("kaggle_pooled_bigru",
          "https://www.kaggle.com/code/yekenot/pooled-gru-fasttext",
          _seeded(pooled_bigru), lambda B, T, rng: ids(B, T, rng),
          idioms=("SpatialDropout1D", "Bidirectional GRU", "GlobalAveragePooling1D + GlobalMaxPooling1D",
                  "concatenate")),
    KCase("tf_text_classification_rnn",
          "https://www.tensorflow.org/text/tutorials/text_classification_rnn",
          _seeded(tf_text_classification_rnn), lambda B, T, rng: ids_post_padded(B, T, rng).astype(np.int64),
          idioms=("Embedding(mask_zero=True)", "Bidirectional LSTM", "post-padded ids")),
    KCase("tf_text_classification_rnn_stacked",
          "https://www.tensorflow.org/text/tutorials/text_classification_rnn",
          _seeded(tf_text_classification_rnn_stacked),
          lambda B, T, rng: ids_post_padded(B, T, rng).astype(np.int64),
          idioms=("Embedding(mask_zero=True)", "stacked Bidirectional LSTMs", "Dropout")),
    KCase("mlm_stacked_lstm_relu",
          "https://machinelearningmastery.com/how-to-develop-lstm-models-for-time-series-forecasting/",
          _seeded(mlm_stacked_lstm), lambda B, T, rng: floats(B, T, 2, rng), kind="floats",
          idioms=("stacked LSTMs", "LSTM(activation='relu')")),
    KCase("dlwp_jena_stacked_gru",
          "https://github.com/fchollet/deep-learning-with-python-notebooks/blob/master/first_edition/6.3-advanced-usage-of-recurrent-neural-networks.ipynb",
          _seeded(dlwp_jena_stacked_gru), lambda B, T, rng: floats(B, T, 5, rng), kind="floats",
          idioms=("stacked GRUs", "GRU(activation='relu')", "recurrent_dropout")),
    KCase("dlwp_imdb_gru",
          "https://github.com/fchollet/deep-learning-with-python-notebooks/blob/master/first_edition/6.2-understanding-recurrent-neural-networks.ipynb",
          _seeded(dlwp_imdb_gru), lambda B, T, rng: ids(B, T, rng),
          idioms=("GRU text classifier",)),
    KCase("keras_io_timeseries_weather",
          "https://github.com/keras-team/keras-io/blob/master/examples/timeseries/timeseries_weather_forecasting.py",
          _seeded(timeseries_weather_forecasting), lambda B, T, rng: floats(B, T, 4, rng), kind="floats",
          idioms=("functional LSTM regressor",)),
    KCase("keras_io_lstm_text_generation",
          "https://github.com/keras-team/keras-io/blob/master/examples/generative/lstm_character_level_text_generation.py",
          _seeded(lstm_character_level_text_generation), lambda B, T, rng: onehot(B, T, 10, rng), kind="floats",
          idioms=("one-hot characters", "softmax Dense")),
    KCase("keras_gru_gap_masked",
          "https://github.com/keras-team/keras-io/blob/master/guides/understanding_masking_and_padding.py",
          _seeded(gru_globalaveragepooling_masked), lambda B, T, rng: ids_post_padded(B, T, rng),
          idioms=("Embedding(mask_zero=True)", "GRU return_sequences", "GlobalAveragePooling1D after a recurrent layer (masked)")),
]

BY_NAME = {c.name: c for c in CASES}
