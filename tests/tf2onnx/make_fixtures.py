"""Keras (tf.keras 2.15) LSTM/GRU models exported by tf2onnx 1.17 (opset 13): fixtures for
tests/test_onnx.py, which checks fastrnn against onnxruntime on them. TensorFlow cannot be
installed in CI, so the files are committed with this seeded script (run it in this directory,
in a venv with tensorflow-cpu==2.15.1, tf2onnx==1.17.0, numpy<2, protobuf<5, onnx<1.17).

Some exports are refused, and tests/test_onnx.py checks that the refusal names why: tf2onnx lowers
Keras layers it cannot map onto an ONNX recurrent op (SimpleRNN, GRU(reset_after=False),
masking, non-default activations) to Loop graphs, and go_backwards=True with
return_sequences=True returns the sequence in reversed time order, which fastrnn's engine does
not produce.
"""
import numpy as np, tensorflow as tf, tf2onnx
tf.random.set_seed(0); np.random.seed(0)
L=tf.keras.layers
def seq(*ls, inp=(7,4), dtype="float32"):
    return tf.keras.Sequential([L.Input(inp, dtype=dtype)] + list(ls))
x_in = L.Input((7,4)); y, h, c = L.LSTM(5, return_sequences=True, return_state=True)(x_in)
models={
 "lstm_seq": tf.keras.Sequential([L.Input((7,4)), L.LSTM(5, return_sequences=True)]),
 "gru_last": tf.keras.Sequential([L.Input((7,4)), L.GRU(5)]),
 "gru_v1_last": tf.keras.Sequential([L.Input((7,4)), L.GRU(5, reset_after=False)]),
 "bilstm_dense": tf.keras.Sequential([L.Input((7,4)), L.Bidirectional(L.LSTM(5)), L.Dense(3, activation="softmax")]),
 "emb_lstm_sigmoid": tf.keras.Sequential([L.Input((7,), dtype="int32"), L.Embedding(30, 8), L.LSTM(6), L.Dense(1, activation="sigmoid")]),
 "stacked_gru": tf.keras.Sequential([L.Input((7,4)), L.GRU(5, return_sequences=True), L.GRU(6, return_sequences=True), L.Dense(2)]),
 "simplernn": tf.keras.Sequential([L.Input((7,4)), L.SimpleRNN(5, return_sequences=True)]),
 "bigru_seq_dense": seq(L.Bidirectional(L.GRU(5, return_sequences=True)), L.Dense(2)),
 "bilstm_sum": seq(L.Bidirectional(L.LSTM(5, return_sequences=True), merge_mode="sum")),
 "bilstm_ave_last": seq(L.Bidirectional(L.LSTM(5), merge_mode="ave")),
 "bilstm_mul_last": seq(L.Bidirectional(L.LSTM(5), merge_mode="mul")),
 "lstm_backwards": seq(L.LSTM(5, go_backwards=True)),
 "lstm_backwards_seq": seq(L.LSTM(5, go_backwards=True, return_sequences=True)),
 "stacked_lstm_relu": seq(L.LSTM(6, return_sequences=True), L.Dropout(0.3), L.LSTM(5), L.Dense(3, activation="relu")),
 "emb_mask_lstm": seq(L.Embedding(30, 8, mask_zero=True), L.LSTM(6), inp=(7,), dtype="int32"),
 "lstm_states": tf.keras.Model(x_in, [y, h, c]),
 "gru_hard": seq(L.GRU(5, activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True)),
 "bigru_bilstm": seq(L.Bidirectional(L.GRU(5, return_sequences=True)), L.Bidirectional(L.LSTM(4)), L.Dense(2, activation="softmax")),
 "lstm_timedist": seq(L.LSTM(5, return_sequences=True), L.TimeDistributed(L.Dense(3, activation="sigmoid"))),
}
for n,m in models.items():
    for w in m.weights: w.assign(np.random.uniform(-0.8,0.8,w.shape).astype(w.dtype.as_numpy_dtype))
    spec=(tf.TensorSpec((None,)+tuple(m.input_shape[1:]), m.inputs[0].dtype, name="x"),)
    try:
        tf2onnx.convert.from_keras(m, input_signature=spec, opset=13, output_path=f"{n}.onnx")
        print(n, "ok")
    except Exception as e: print(n, "ERR", str(e)[:200])
