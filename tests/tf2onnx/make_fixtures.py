"""Keras (tf.keras 2.15) LSTM/GRU models exported by tf2onnx 1.17 (opset 13): fixtures for
tests/test_onnx.py, which checks fastrnn against onnxruntime on them. TensorFlow cannot be
installed in CI, so the files are committed with this seeded script (run it in a venv with
tensorflow-cpu==2.15.1, tf2onnx==1.17.0, numpy<2, protobuf<5, onnx<1.17).

Committed: lstm_seq, gru_last, emb_lstm_sigmoid. The script also makes bilstm_dense,
stacked_gru (a Dense after a sequence: tf2onnx's Tensordot reshapes), gru_v1_last
(reset_after=False) and simplernn: tf2onnx lowers the last two to Loop graphs. fastrnn does not
convert these four yet (issue 5 notes).
"""
import numpy as np, tensorflow as tf, tf2onnx
tf.random.set_seed(0); np.random.seed(0)
L=tf.keras.layers
models={
 "lstm_seq": tf.keras.Sequential([L.Input((7,4)), L.LSTM(5, return_sequences=True)]),
 "gru_last": tf.keras.Sequential([L.Input((7,4)), L.GRU(5)]),
 "gru_v1_last": tf.keras.Sequential([L.Input((7,4)), L.GRU(5, reset_after=False)]),
 "bilstm_dense": tf.keras.Sequential([L.Input((7,4)), L.Bidirectional(L.LSTM(5)), L.Dense(3, activation="softmax")]),
 "emb_lstm_sigmoid": tf.keras.Sequential([L.Input((7,), dtype="int32"), L.Embedding(30, 8), L.LSTM(6), L.Dense(1, activation="sigmoid")]),
 "stacked_gru": tf.keras.Sequential([L.Input((7,4)), L.GRU(5, return_sequences=True), L.GRU(6, return_sequences=True), L.Dense(2)]),
 "simplernn": tf.keras.Sequential([L.Input((7,4)), L.SimpleRNN(5, return_sequences=True)]),
}
for n,m in models.items():
    for w in m.weights: w.assign(np.random.uniform(-0.8,0.8,w.shape).astype(w.dtype.as_numpy_dtype))
    spec=(tf.TensorSpec((None,)+tuple(m.input_shape[1:]), m.inputs[0].dtype, name="x"),)
    try:
        tf2onnx.convert.from_keras(m, input_signature=spec, opset=13, output_path=f"{n}.onnx")
        print(n, "ok")
    except Exception as e: print(n, "ERR", str(e)[:200])
