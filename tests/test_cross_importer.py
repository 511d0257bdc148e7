"""One model, three sources: a seeded random recipe (token ids or floats; 1-2 layers of LSTM, GRU
or SimpleRNN, one or two directions; every step or the final states; a Dense head with an
activation, or none) is written as a torch module, as a Keras model holding the same weights
(Keras's layouts: kernels transposed, GRU gates z, r, h, one LSTM bias) and as the torch module's
ONNX export. The three importers must lower it to the same pipeline (layer kinds, cells,
directions, activations, and the same effective weights) and give the same outputs, each equal
to torch's forward (the oracle) within the accuracy contract.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import keras  # noqa: E402
from keras import layers as KL  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import ir  # noqa: E402

V, E, F_IN, B, T = 20, 6, 5, 3, 7
ACTS = (None, "sigmoid", "softmax", "tanh")


def recipe(seed):
    rng = np.random.default_rng(seed)
    return {"seed": seed, "ids": bool(rng.integers(2)), "cell": ["lstm", "gru", "rnn"][seed % 3],
            "layers": int(rng.integers(1, 3)), "bi": bool(rng.integers(2)), "H": int(rng.choice([4, 7])),
            "seq": bool(rng.integers(2)), "head": bool(rng.integers(3)), "act": ACTS[int(rng.integers(4))]}


class TorchRecipe(nn.Module):
    def __init__(self, r):
        super().__init__()
        self.r = r
        self.emb = nn.Embedding(V, E) if r["ids"] else None
        cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[r["cell"]]
        self.rnn = cls(E if r["ids"] else F_IN, r["H"], num_layers=r["layers"], batch_first=True,
                       bidirectional=r["bi"])
        self.fc = nn.Linear(r["H"] * (2 if r["bi"] else 1), 3) if r["head"] else None
        g = torch.Generator().manual_seed(r["seed"])
        with torch.no_grad():
            for p in self.parameters():
                p.copy_((torch.rand(p.shape, generator=g) - 0.5) * 1.6)

    def forward(self, x):
        if self.emb is not None:
            x = self.emb(x)
        out, h = self.rnn(x)
        if self.r["cell"] == "lstm":
            h = h[0]
        y = out if self.r["seq"] else (torch.cat([h[-2], h[-1]], 1) if self.r["bi"] else h[-1])
        if self.fc is not None:
            y = self.fc(y)
            act = self.r["act"]
            if act == "softmax":
                y = torch.softmax(y, -1)
            elif act is not None:
                y = getattr(torch, act)(y)
        return y


def _keras_cell_weights(cell, w_ih, w_hh, b_ih, b_hh):
    """torch's (W_ih, W_hh, b_ih, b_hh) of one direction -> Keras's [kernel, recurrent_kernel, bias]."""
    if cell == "gru":                     # torch r, z, n -> Keras z, r, h; reset_after: bias (2, 3H)
        H = w_hh.shape[1]
        order = np.r_[H:2 * H, 0:H, 2 * H:3 * H]
        return [w_ih[order].T, w_hh[order].T, np.stack([b_ih[order], b_hh[order]])]
    return [w_ih.T, w_hh.T, b_ih + b_hh]  # LSTM i, f, g, o = Keras i, f, c, o


def keras_model(r, tm):
    inp = keras.Input((T,), dtype="int32") if r["ids"] else keras.Input((T, F_IN))
    x = KL.Embedding(V, E, name="emb")(inp) if r["ids"] else inp
    cls = {"lstm": KL.LSTM, "gru": KL.GRU, "rnn": KL.SimpleRNN}[r["cell"]]
    names = []
    for k in range(r["layers"]):
        seq = r["seq"] or k < r["layers"] - 1
        layer = cls(r["H"], return_sequences=seq)
        if r["bi"]:
            layer = KL.Bidirectional(layer)
        names.append(layer)
        x = layer(x)
    if r["head"]:
        x = KL.Dense(3, activation=r["act"] or None, name="fc")(x)
    model = keras.Model(inp, x)
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    if r["ids"]:
        model.get_layer("emb").set_weights([sd["emb.weight"]])
    for k, layer in enumerate(names):
        ws = []
        for sfx in ("", "_reverse") if r["bi"] else ("",):
            ws += _keras_cell_weights(r["cell"], *(sd[f"rnn.{n}_l{k}{sfx}"] for n in
                                                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
        layer.set_weights(ws)
    if r["head"]:
        model.get_layer("fc").set_weights([sd["fc.weight"].T, sd["fc.bias"]])
    return model


def _canonical(model):
    """The pipeline as (kind, cell, direction, activations, effective weights): b_ih + b_hh where
    only their sum matters (LSTM, RNN, the gates a GRU does not reset)."""
    out = []
    for l in model.layers:
        if isinstance(l, ir.Recurrent):
            ws = []
            for w in l.weights:
                b = w.get("b_ih", 0) + w.get("b_hh", 0) if l.cell != "gru" else None
                if l.cell == "gru":
                    H = w["W_hh"].shape[1]
                    bi, bh = w.get("b_ih"), w.get("b_hh")
                    b = np.concatenate([(bi + bh)[:2 * H], bi[2 * H:], bh[2 * H:]])
                ws.append((w["W_ih"], w["W_hh"], b))
            acts = [[a.kind for a in d] for d in l.activations] if l.activations else None
            if acts is not None and len(acts) == 1:        # one list serves both directions
                acts = acts * len(l.weights)
            out.append(("Recurrent", l.cell, l.direction, l.return_sequences,
                        l.linear_before_reset if l.cell == "gru" else None, acts, ws))
        elif isinstance(l, ir.Dense):
            out.append(("Dense", l.activation.kind, [(l.weight, l.bias)]))
        elif isinstance(l, ir.Embedding):
            out.append(("Embedding", [(l.weight,)]))
        else:
            out.append((type(l).__name__, getattr(getattr(l, "activation", None), "kind", None), []))
    return out


def _same_pipeline(a, b, what):
    ca, cb = _canonical(a), _canonical(b)
    assert [c[:-1] for c in ca] == [c[:-1] for c in cb], what
    for la, lb in zip(ca, cb):
        for wa, wb in zip(la[-1], lb[-1]):
            for x, y in zip(wa, wb):
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6, err_msg=what)


def _x(r, seed):
    rng = np.random.default_rng(seed)
    if r["ids"]:
        return rng.integers(0, V, (B, T)).astype(np.int64)
    return rng.normal(size=(B, T, F_IN)).astype(np.float32)


@pytest.mark.parametrize("seed", range(18))
def test_three_importers_lower_one_recipe_alike(seed, tmp_path):
    r = recipe(seed)
    tm = TorchRecipe(r).eval()
    x = _x(r, seed + 100)
    with torch.no_grad():
        want = tm(torch.from_numpy(x)).numpy()
    from_torch = fastrnn.convert(tm, example_input=torch.from_numpy(x))
    km = keras_model(r, tm)
    np.testing.assert_allclose(km.predict(x, verbose=0), want, rtol=1e-4, atol=1e-5, err_msg="keras twin")
    from_keras = fastrnn.convert(km)
    p = tmp_path / "m.onnx"
    torch.onnx.export(tm, (torch.from_numpy(x),), str(p), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch", 1: "time"}}, opset_version=17)
    from_onnx = fastrnn.convert(str(p))
    for name, m in (("torch", from_torch), ("keras", from_keras), ("onnx", from_onnx)):
        np.testing.assert_allclose(m.predict(x.astype(np.int32) if r["ids"] else x), want, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name} {r}")
    _same_pipeline(from_torch, from_keras, f"torch vs keras {r}")
    _same_pipeline(from_torch, from_onnx, f"torch vs onnx {r}")
