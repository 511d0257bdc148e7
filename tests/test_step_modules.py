"""One-step modules written by hand (the char-RNN tutorials of pytorch/tutorials,
intermediate_source/char_rnn_classification_tutorial.py before 2024): hidden = i2h(cat(x, hidden)),
output = act(i2o(cat(x, hidden))). The output reads the PREVIOUS hidden state; fastrnn runs one
linear recurrence over [hidden; output pre-activation] (converters/cells.py, one_step_linear).
The oracle is the user's own loop over the torch module."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import fastrnn  # noqa: E402
from fastrnn import ModelFormatError, UnsupportedError  # noqa: E402


class CharRNN(nn.Module):
    """The tutorial's RNN (i2h / i2o over torch.cat((input, hidden), 1), LogSoftmax)."""

    def __init__(self, n_in=7, n_hidden=9, n_out=4, act=None):
        super().__init__()
        self.hidden_size = n_hidden
        self.i2h = nn.Linear(n_in + n_hidden, n_hidden)
        self.i2o = nn.Linear(n_in + n_hidden, n_out)
        self.act = act or nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        combined = torch.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        output = self.act(self.i2o(combined))
        return output, hidden

    def initHidden(self):
        return torch.zeros(1, self.hidden_size)


class TanhHidden(CharRNN):
    """hidden = tanh(i2h(...)) with the output still reading the previous hidden: no recurrence
    of the engine computes that."""

    def forward(self, input, hidden):
        combined = torch.cat((input, hidden), 1)
        return self.i2o(combined), torch.tanh(self.i2h(combined))


def _loop(m, x, h):
    ys = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, h = m(torch.from_numpy(x[:, t]), h)
            ys.append(y.numpy())
    return np.stack(ys, 1), h.numpy()


def _module(act=None, cls=CharRNN):
    torch.manual_seed(5)
    return cls(act=act).eval()


@pytest.mark.parametrize("capture", ["module", "script", "trace"])
def test_char_rnn_step_streams_the_users_loop(capture, tmp_path):
    m = _module()
    ex = (torch.zeros(1, 7), m.initHidden())
    if capture == "module":
        fm = fastrnn.convert(m, example_input=ex)
    else:
        art = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, ex)
        art.save(str(tmp_path / "m.pt"))
        fm = fastrnn.convert(str(tmp_path / "m.pt"))
    x = np.random.default_rng(0).standard_normal((3, 6, 7)).astype(np.float32)
    want, _ = _loop(m, x, torch.zeros(3, 9))
    s = fm.stream(batch_size=3)
    for t in range(x.shape[1]):
        np.testing.assert_allclose(s.step(x[:, t]), want[:, t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fm.predict(x), want, rtol=1e-5, atol=1e-5)


def test_char_rnn_state_in_the_sources_layout(tmp_path):
    m = _module(act=nn.Softmax(dim=1))
    fm = fastrnn.convert(m, example_input=(torch.zeros(2, 7), torch.zeros(2, 9)))
    assert fm.state_shapes(3) == [(3, 9)]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 5, 7)).astype(np.float32)
    h0 = rng.standard_normal((3, 9)).astype(np.float32)
    want, h_last = _loop(m, x, torch.from_numpy(h0))
    y, (h,) = fm.predict(x, initial_state=[h0], return_state=True)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h, h_last, rtol=1e-5, atol=1e-5)
    fm.save(tmp_path / "c.frnn")            # the signature's state cols survive the file
    back = fastrnn.load(tmp_path / "c.frnn")
    y2, (h2,) = back.predict(x, initial_state=[h0], return_state=True)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(h2, h)


@pytest.mark.parametrize("capture", ["module", "script", "trace"])
def test_step_module_reading_several_arguments_per_step(capture, tmp_path):
    from tests.corpus.torch_models import TutCharRNNGenerator   # the generation tutorial's RNN
    torch.manual_seed(6)
    m = TutCharRNNGenerator(3, 7, 9, 7).eval()
    ex = [torch.zeros(1, 3), torch.zeros(1, 7), m.initHidden()]
    if capture == "module":
        fm = fastrnn.convert(m, example_input=ex)
    else:
        art = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, tuple(ex))
        art.save(str(tmp_path / "g.pt"))
        with pytest.raises(UnsupportedError, match="example_input"):   # the archive has no widths
            fastrnn.convert(str(tmp_path / "g.pt"))
        fm = fastrnn.convert(str(tmp_path / "g.pt"), example_input=ex)
    assert [(s["name"], s["width"]) for s in fm.meta["step_inputs"]] == [("category", 3), ("input", 7)]
    rng = np.random.default_rng(4)
    B, T = 4, 6
    cats = np.eye(3, dtype=np.float32)[rng.integers(0, 3, B)]
    letters = np.eye(7, dtype=np.float32)[rng.integers(0, 7, (B, T))]
    want = []                              # the tutorial's sampling loop, one name at a time
    with torch.no_grad():
        for b in range(B):
            h, row = m.initHidden(), []
            for t in range(T):
                y, h = m(torch.from_numpy(cats[b:b + 1]), torch.from_numpy(letters[b:b + 1, t]), h)
                row.append(y.numpy()[0])
            want.append(row)
    want = np.array(want)
    s = fm.stream(batch_size=B)
    out = np.empty((B, 7), np.float32)
    for t in range(T):
        if t % 2:
            s.step_into((cats, letters[:, t]), out)
            got = out
        else:
            got = s.step((cats, letters[:, t]))
        np.testing.assert_allclose(got, want[:, t], rtol=1e-5, atol=1e-5)
    seq = (np.repeat(cats[:, None], T, 1), letters)
    y = fm.predict(seq)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(fm.predict(np.concatenate(seq, -1)), y)    # or side by side
    from fastrnn.converters import torch as ct                   # --check runs the source's loop
    np.testing.assert_allclose(ct.run_source(m, np.concatenate(seq, -1), meta=fm.meta)[0], want,
                               rtol=1e-5, atol=1e-5)
    fm.save(tmp_path / "g.frnn")
    back = fastrnn.load(tmp_path / "g.frnn")
    np.testing.assert_array_equal(back.predict(seq), y)
    with pytest.raises(fastrnn.ShapeError, match="input must be float of shape"):
        back.stream(batch_size=B).step((cats, letters[:, 0, :5]))
    with pytest.raises(fastrnn.ShapeError, match="reads 2 arrays per step"):
        back.predict((letters,))


def test_nonlinear_hidden_with_output_of_the_previous_state_is_refused():
    with pytest.raises(UnsupportedError):
        fastrnn.convert(_module(cls=TanhHidden), example_input=(torch.zeros(1, 7), torch.zeros(1, 9)))


def test_signature_state_cols_are_validated():
    layer = fastrnn.Recurrent("rnn", [{"W_ih": np.zeros((5, 3), np.float32), "W_hh": np.zeros((5, 5), np.float32)}],
                              activations=[["linear"]])
    ok = fastrnn.Model([layer], signature={"states": [{"parts": [[0, 0]], "stack": False, "cols": [0, 2]}]})
    assert ok.state_shapes(4) == [(4, 2)]
    for bad in ([0, 6], [3, 3], [1], "0:2"):
        with pytest.raises(ModelFormatError, match="cols"):
            fastrnn.Model([layer], signature={"states": [{"parts": [[0, 0]], "stack": False, "cols": bad}]})
