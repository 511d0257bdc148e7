"""The seed corpus: valid files of each format, which the mutators damage.

  frnn   three models built here (ids: Embedding(mask_zero) -> LSTM with peepholes, projection and
         clip -> Pool(mean, max) -> Dense; float: Masking -> bidirectional GRU -> Conv1D ->
         Pool1D -> SimpleRNN -> Dense -> Activation; head: LSTM -> linear SimpleRNN with a
         signature head over both layers' final states and a state of some columns), saved by
         the current writer
  keras  tests/keras2/*.keras, written by tf.keras (the files strangers send)
  h5     tests/keras2/*.h5, the same models in the legacy HDF5 format
  onnx   tests/tf2onnx/*.onnx (tf2onnx) and tests/fuzz/seeds/*.onnx (torch.onnx.export)
  pt     tests/fuzz/seeds/*.pt: torch.save state_dicts (zip and legacy pickle)
  ts     tests/fuzz/seeds/*.ts.pt: TorchScript archives (fuzzed under isolation only)

The committed files are the corpus, so a seed number names the same input on every machine.
`python -m tests.fuzz.seeds` rewrites tests/fuzz/seeds/ (needs torch; zip archives get fixed
member dates and serialization id, but a legacy pickle's storage keys and a TorchScript archive
still differ from run to run). Only files that convert are seeds (a refused file's mutants
would test little but the refusal); OPTS gives the options a state_dict needs.
"""
from __future__ import annotations

import glob
import io
import os
import tempfile
import zipfile

import numpy as np

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(TESTS, "fuzz", "seeds")
FORMATS = ("frnn", "keras", "h5", "onnx", "pt", "ts")
SUFFIX = {"frnn": ".frnn", "keras": ".keras", "h5": ".h5", "onnx": ".onnx", "pt": ".pt", "ts": ".pt"}
# the Keras fixtures used as seeds: every cell, bidirectional merges, masks, states, stacks
KERAS = ("bidi_concat", "gru_reset_after", "lstm_activations", "mask_zero_lstm", "masking_gru",
         "simplernn3_seq_state", "stateful_lstm")
TF2ONNX = ("bigru_bilstm", "bigru_seq_dense", "bilstm_ave_last", "bilstm_dense", "bilstm_mul_last", "bilstm_sum",
           "emb_lstm_sigmoid", "gru_last", "lstm_backwards", "lstm_seq", "lstm_states", "lstm_timedist",
           "stacked_gru", "stacked_lstm_relu")
OPTS = {"tagger.pt": {"head": "sequence"}, "regressor_legacy.pt": {"head": "last"}}


def _frnn_models():
    import fastrnn
    from fastrnn import ir
    rng = np.random.default_rng(20261206)
    u = lambda *s: rng.uniform(-0.5, 0.5, s).astype(np.float32)
    ids = [
        ir.Embedding(u(9, 3), mask_zero=True),
        ir.Recurrent("lstm", [{"W_ih": u(8, 3), "W_hh": u(8, 2), "b_ih": u(8), "b_hh": u(8),
                               "P": u(3, 2), "W_hr": u(2, 2)}], clip=3.0,
                     activations=[ir.Act("hard_sigmoid", 0.2, 0.5), "tanh", "softsign"]),
        ir.Pool(2, ("mean", "max"), "valid"),
        ir.Dense(u(3, 4), u(3), "softmax"),
    ]
    flt = [
        ir.Masking(2, mask_value=0.0),
        ir.Recurrent("gru", [{"W_ih": u(6, 2), "W_hh": u(6, 2)}, {"W_ih": u(6, 2), "W_hh": u(6, 2)}],
                     direction="bidirectional", merge_mode="concat", linear_before_reset=False),
        ir.Conv1D(u(3, 4, 2), u(3), padding="causal", activation="relu"),
        ir.Pool1D(3, "avg", 2, padding="same"),
        ir.Recurrent("rnn", [{"W_ih": u(3, 3), "W_hh": u(3, 3), "b_ih": u(3), "b_hh": u(3)}],
                     return_sequences=False),
        ir.Dense(u(2, 3), None, "linear"),
        ir.Activation(2, ir.Act("scaled_tanh", 1.5, 0.5)),
    ]
    head = [
        ir.Recurrent("lstm", [{"W_ih": u(8, 3), "W_hh": u(8, 2), "b_ih": u(8), "b_hh": u(8)}]),
        ir.Recurrent("rnn", [{"W_ih": u(3, 2), "W_hh": u(3, 3)}], activations=[["linear"]]),
        ir.Dense(u(2, 5), u(2), "relu"),
        ir.Activation(2, "log_softmax"),
    ]
    branch = [      # carried columns (format version 3): a residual head
        ir.Recurrent("gru", [{"W_ih": u(6, 3), "W_hh": u(6, 2)}]),
        ir.Dense(u(3, 2), u(3), "relu", carry=((0, 2), (1, 2))),
        ir.Activation(3, "tanh", carry=((3, 6),)),
        ir.Dense(u(2, 6), None, "linear", carry=((5, 6),)),
    ]
    attention = [   # an attention pool with a bias per position (format version 3)
        ir.Recurrent("gru", [{"W_ih": u(6, 3), "W_hh": u(6, 2)}]),
        ir.Dense(u(1, 2), None, "linear", carry=((0, 2),)),
        ir.Pool(2, ("attn", "max"), score_activation="tanh", score_bias=u(5), eps=1e-10),
    ]
    terms = [       # a pool of terms over two tensors (format version 4)
        ir.Recurrent("gru", [{"W_ih": u(6, 3), "W_hh": u(6, 2)}]),
        ir.Dense(u(1, 2), None, "linear", carry=((0, 2),)),
        ir.Recurrent("rnn", [{"W_ih": u(2, 3), "W_hh": u(2, 2)}], carry=((0, 3),)),
        ir.Pool(5, terms=(ir.PoolTerm("attn", 3, 5, 2, "tanh", u(4), 1e-10), ir.PoolTerm("max", 0, 2),
                          ir.PoolTerm("attn", 0, 2, 4), ir.PoolTerm("mean", 3, 5))),
    ]
    sigs = {"head": {"head": {"from": 2, "parts": [[0, 0], [2, 0]]},
                     "states": [{"parts": [[0, 0]], "stack": False}, {"parts": [[1, 0]], "stack": False},
                                {"parts": [[2, 0]], "stack": False, "cols": [0, 2]}]}}
    out = []
    with tempfile.TemporaryDirectory(prefix="fastrnn-fuzz-seeds-") as d:
        # reduced precision (format version 2: BF16 / I8 tensors and their scales); carry (3); terms (4)
        for name, layers, prec in (("ids", ids, None), ("float", flt, None), ("head", head, None),
                                   ("ids_int8", ids, "int8"), ("float_bf16", flt, "bf16"),
                                   ("branch", branch, None), ("attention", attention, None),
                                   ("terms", terms, None)):
            path = os.path.join(d, f"{name}.frnn")
            m = fastrnn.Model(layers, meta={"source": "tests/fuzz", "seed": name}, signature=sigs.get(name))
            (m.with_precision(prec) if prec else m).save(path)
            with open(path, "rb") as f:
                out.append((f"{name}.frnn", f.read()))
    return out


def _read(paths):
    out = []
    for p in sorted(paths):
        with open(p, "rb") as f:
            out.append((os.path.basename(p), f.read()))
    return out


def load(fmt):
    """[(name, bytes)] of the valid files of format `fmt`."""
    if fmt == "frnn":
        return _frnn_models()
    if fmt in ("keras", "h5"):
        return _read(os.path.join(TESTS, "keras2", f"{n}.{fmt}") for n in KERAS)
    if fmt == "onnx":
        return _read([os.path.join(TESTS, "tf2onnx", f"{n}.onnx") for n in TF2ONNX]
                     + glob.glob(os.path.join(SEEDS, "*.onnx")))
    if fmt == "pt":
        return _read(p for p in glob.glob(os.path.join(SEEDS, "*.pt")) if not p.endswith(".ts.pt"))
    if fmt == "ts":
        return _read(glob.glob(os.path.join(SEEDS, "*.ts.pt")))
    raise ValueError(f"no such format {fmt!r}; one of {FORMATS}")


# ---------------------------------------------------------------------------------------------
# writing tests/fuzz/seeds/ (torch)
# ---------------------------------------------------------------------------------------------

def _normalise_zip(data):
    """A torch archive with fixed member dates and serialization id (torch writes a random one)."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as w:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename.endswith(".data/serialization_id"):
                body = b"0" * len(body)
            w.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), body)
    return out.getvalue()


def make():
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Tagger(nn.Module):        # the PyTorch tutorials' sequence tagger
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(12, 4)
            self.rnn = nn.LSTM(4, 5, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(10, 3)

        def forward(self, ids):
            y, _ = self.rnn(self.emb(ids))
            return torch.log_softmax(self.fc(y), -1)

    class Regressor(nn.Module):     # a GRU that ends on its last step
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 4, num_layers=2, batch_first=True)
            self.fc = nn.Linear(4, 1)

        def forward(self, x):
            y, _ = self.rnn(x)
            return self.fc(y[:, -1])

    os.makedirs(SEEDS, exist_ok=True)
    files = {}

    def save(name, obj, **kw):
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        data = buf.getvalue()
        files[name] = _normalise_zip(data) if data[:2] == b"PK" else data

    save("lstm2_bi_proj.pt", nn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2).state_dict())
    save("tagger.pt", Tagger().state_dict())
    save("regressor_legacy.pt", Regressor().state_dict(), _use_new_zipfile_serialization=False)
    save("rnn_relu.pt", {"state_dict": nn.RNN(2, 3, nonlinearity="relu").state_dict()})
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(Tagger()), buf)
    files["tagger.ts.pt"] = _normalise_zip(buf.getvalue())
    for name, mod, x in (("tagger_torch.onnx", Tagger(), torch.zeros(2, 5, dtype=torch.long)),
                         ("regressor_torch.onnx", Regressor(), torch.zeros(2, 5, 3))):
        buf = io.BytesIO()
        torch.onnx.export(mod, (x,), buf, input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "B", 1: "T"}})
        files[name] = buf.getvalue()
    for name, data in files.items():
        with open(os.path.join(SEEDS, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    make()
