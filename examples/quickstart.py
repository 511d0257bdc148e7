"""Quick start: build a model from layer specs and NumPy weights, save it, load it, run it
batched and stream it token by token, and time a streaming step.

A small character-level language model (Embedding(64, 32) -> LSTM(128) -> LSTM(128) ->
Dense(64, softmax)) with seeded random weights: everything below works the same for a model
converted from Keras/PyTorch/ONNX (examples/charlm/ runs a trained one).
"""
import os
import tempfile
import time

import numpy as np

import fastrnn

VOCAB, EMB, HID = 64, 32, 128
rng = np.random.default_rng(0)


def u(*shape, scale=0.2):
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def lstm(inp, hid):
    return fastrnn.Recurrent("lstm", [{"W_ih": u(4 * hid, inp), "W_hh": u(4 * hid, hid),
                                       "b_ih": u(4 * hid), "b_hh": u(4 * hid)}])


model = fastrnn.Model([
    fastrnn.Embedding(u(VOCAB, EMB, scale=1.0)),
    lstm(EMB, HID),
    lstm(HID, HID),
    fastrnn.Dense(u(VOCAB, HID), u(VOCAB), activation="softmax"),
])
print(model, "| kernels:", fastrnn.cpu_info()["isa"])

path = os.path.join(tempfile.mkdtemp(), "charlm.frnn")
model.save(path)
model = fastrnn.load(path)
print(f"saved and reloaded {path} ({os.path.getsize(path) / 1e6:.2f} MB)")

# batched: 8 sequences of 50 token ids -> next-token distributions for every step
ids = rng.integers(0, VOCAB, (8, 50))
probs = model.predict(ids)
print("predict:", probs.shape, "rows sum to 1:", np.allclose(probs.sum(-1), 1, atol=1e-5))

# streaming: feed one token, get the distribution, sample the next token (greedy here)
stream = model.stream(batch_size=1)
token = np.array([1])
out = np.empty((1, VOCAB), np.float32)
generated = []
for _ in range(20):
    stream.step_into(token, out)
    token = out.argmax(axis=1)
    generated.append(int(token[0]))
print("greedy tokens:", generated)

# the same tokens through predict give the same last-step distribution (bit for bit)
check = model.predict(np.array([[1] + generated[:-1]]))[:, -1]
print("stream == predict on the prefix:", np.array_equal(check, out))

n = 20000
t0 = time.perf_counter()
for _ in range(n):
    stream.step_into(token, out)
dt = (time.perf_counter() - t0) / n
print(f"streaming: {dt * 1e6:.2f} us/step (2 x LSTM({HID}) + softmax head, batch 1)")
