"""The PyTorch idioms public code writes, each converted from the live module and compared with
torch on the same input (the oracle), through predict's conventions (DESIGN.md section 1):
batch-major in and out, a flattened (T*B, F) output back as (B, T, F), forward's lengths and
state arguments as predict's lengths= and initial_state=, an unbatched forward as a batch of
sequences run one by one.

Each module is small and seeded; the example given to convert is what the code passes to
forward; the comparison input has another batch size and length, so nothing the capture saw
as a number (batch 3, 7 steps) may stay baked in.
"""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Variable

import fastrnn

V, E, H = 40, 8, 10
B0, T0 = 3, 7            # the example
B1, T1 = 4, 9            # the comparison


def _close(got, want, what=""):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


def _ids(B, T, seed):
    return torch.from_numpy(np.random.default_rng(seed).integers(1, V, (B, T)))


def _floats(B, T, F_, seed):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(B, T, F_)).astype(np.float32))


class H0InForward(nn.Module):
    """h0/c0 made in forward from x.size(0), with .to(device) and Variable; final states of a
    2-layer bi-LSTM concatenated backward-first."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, num_layers=2, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        h0 = torch.zeros(2 * 2, x.size(0), H).to(x.device)
        c0 = Variable(torch.zeros(4, x.size(0), H, device=x.device))
        out, (h, c) = self.rnn(self.emb(x), (h0, c0))
        return F.log_softmax(self.fc(torch.cat([h[-1], h[-2]], -1)), dim=1)


class NewZeros(nn.Module):
    """x.new_zeros / zeros_like initial states, softmax over dim=-1 of every step."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.fc = nn.Linear(H, 4)

    def forward(self, x):
        h = torch.zeros_like(x.new_zeros(1, x.shape[0], H))
        out, h = self.rnn(x, h)
        return F.softmax(self.fc(out), dim=-1)


class RnnNone(nn.Module):
    """self.rnn(x, None) and a regressor's .squeeze(-1)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(5, H, batch_first=True)
        self.fc = nn.Linear(H, 1)

    def forward(self, x):
        out, _ = self.rnn(x, None)
        return self.fc(out[:, -1, :]).squeeze(-1)


class WordLM(nn.Module):
    """pytorch/examples word_language_model: time-major, forward(input, hidden) with
    init_hidden, the decoder on output.view(-1, nhid) giving (T*B, ntoken), and the hidden
    state returned."""
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, 2, dropout=0.2)
        self.decoder = nn.Linear(H, V)

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(2, bsz, H), weight.new_zeros(2, bsz, H))

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        decoded = self.decoder(self.drop(output).view(-1, H))
        return F.log_softmax(decoded, dim=1), hidden


class Packed(nn.Module):
    """forward(ids, lengths): nn.utils.rnn.* by its dotted name, lengths.cpu(), unsorted rows,
    `if self.rnn.bidirectional`, hidden[-2, :, :]."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E, padding_idx=0)
        self.rnn = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, text, text_lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(text), text_lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, hidden = self.rnn(packed)
        if self.rnn.bidirectional:
            hidden = torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1)
        else:
            hidden = hidden[-1, :, :]
        return self.fc(hidden)


class PackedTagger(nn.Module):
    """pack_padded_sequence + pad_packed_sequence(total_length=x.size(1)), a per-step head."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, batch_first=True)
        self.fc = nn.Linear(H, 5)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(p)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return self.fc(out)


class LastValidIndex(nn.Module):
    """out[torch.arange(out.size(0)), lengths - 1] of pad_packed_sequence's output (each row's
    last valid step), a unidirectional GRU."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True)
        self.fc = nn.Linear(H, 2)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(p)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return self.fc(out[torch.arange(out.size(0)), lengths - 1])


class LastValidBi(nn.Module):
    """The same of a bidirectional LSTM: the forward half is its final state, the backward half
    its output at that step (what torch's indexing gives)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(p)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        return self.fc(out[torch.arange(out.shape[0]), lengths - 1, :])


class LastValidGather(nn.Module):
    """out.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, H)).squeeze(1): the same by gather."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, batch_first=True)
        self.fc = nn.Linear(H, 2)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(p)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
        idx = (lengths - 1).view(-1, 1, 1).expand(-1, 1, out.size(2))
        return self.fc(out.gather(1, idx).squeeze(1))


class LastValidUnpacked(nn.Module):
    """No packing: a 2-layer GRU runs over the padding too, then out[arange(B), lengths - 1]
    (causal layers only, so each row's step there does not depend on its padding)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True, num_layers=2)
        self.fc = nn.Linear(H, 2)

    def forward(self, x, lengths):
        out, _ = self.rnn(self.emb(x))
        return self.fc(out[torch.arange(x.size(0)), lengths - 1])


class LastValidTimeMajor(nn.Module):
    """Time-major: out[lengths - 1, torch.arange(B)]."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H)
        self.fc = nn.Linear(H, 2)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x.t()), lengths, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(p)[0])
        return self.fc(out[lengths - 1, torch.arange(out.size(1))])


class SumDirectionsBySlices(nn.Module):
    """out[:, :, :H] + out[:, :, H:] of a bidirectional GRU (the chatbot tutorial's encoder),
    a per-step head."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, :, :H] + out[:, :, H:])


class HnViewLayersDirections(nn.Module):
    """h_n.view(num_layers, num_directions, B, H)[-1] (torch's documented way to tell them
    apart), the top layer's two directions concatenated."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, num_layers=3, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x):
        _, (h, _) = self.rnn(x)
        h = h.view(3, 2, x.size(0), H)[-1]
        return self.fc(torch.cat((h[0], h[1]), dim=1))


class HnSum(nn.Module):
    """h_n.sum(0) of a 2-layer bidirectional LSTM (every layer's and direction's final state
    added), and h_n.mean(0) of a bidirectional GRU beside it."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, H, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(2 * H, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        out, (h, _) = self.lstm(x)
        _, g = self.gru(out)
        return self.fc(h.sum(0)), self.fc(g.mean(0))


class HnMeanTop(nn.Module):
    """h_n.mean(dim=0) of a one-layer bidirectional GRU: its two directions averaged."""
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(5, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        _, h = self.gru(x)
        return self.fc(h.mean(dim=0))


class LSTMTagger(nn.Module):
    """The PyTorch sequence-models tutorial's tagger: one unbatched sentence, len(sentence),
    view(len(sentence), 1, -1), log_softmax over dim=1."""
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(V, E)
        self.lstm = nn.LSTM(E, H)
        self.hidden2tag = nn.Linear(H, 5)

    def forward(self, sentence):
        embeds = self.word_embeddings(sentence)
        lstm_out, _ = self.lstm(embeds.view(len(sentence), 1, -1))
        tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
        return F.log_softmax(tag_space, dim=1)


class PermuteView(nn.Module):
    """h_n.permute(1, 0, 2).contiguous().view(B, -1) of a bi-GRU."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x):
        _, h = self.rnn(self.emb(x))
        return torch.sigmoid(self.fc(h.permute(1, 0, 2).contiguous().view(x.size(0), -1)))


class SequentialHead(nn.Module):
    """An nn.Sequential head (Linear, ReLU, Dropout, Linear, Tanh) and scalar arithmetic."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, batch_first=True)
        self.head = nn.Sequential(nn.Linear(H, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2), nn.Tanh())

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1]) * 2.5 + 1.0


class Residual(nn.Module):
    """A residual connection around a square Linear, then a scale per feature."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.proj = nn.Linear(H, H)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, H))

    def forward(self, x):
        out, _ = self.rnn(x)
        return (self.proj(out) + out) * self.scale


class ResidualHeads(nn.Module):
    """Head features added to the features they came from and two heads side by side, on the
    last hidden state (the Kaggle Jigsaw kernel's h + relu(linear1(h)) + relu(linear2(h)) and
    torch.cat([linear_out(hidden), linear_aux_out(hidden)], 1), tests/corpus; here with a
    subtraction, a scaled branch, a row-wise head and a head reading the first features)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.l1, self.l2 = nn.Linear(H, H), nn.Linear(H, H)
        self.cls, self.reg = nn.Linear(H, 3), nn.Linear(H, 1)

    def forward(self, x):
        _, h = self.rnn(x)
        h = h[-1]
        z = h + torch.tanh(self.l1(h))
        z = z - 0.5 * F.relu(self.l2(z))
        return torch.cat([F.log_softmax(self.cls(z), dim=1), torch.sigmoid(self.reg(h))], 1)


class PerStepResidual(nn.Module):
    """A residual block per step of the sequence output, out + relu(fc(out)), then a tagger
    reading it beside the block's input (torch.cat([y, out], -1)): a DenseNet-style skip."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, batch_first=True)
        self.fc = nn.Linear(H, H)
        self.tag = nn.Linear(2 * H, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        y = out + F.relu(self.fc(out))
        return self.tag(torch.cat([y, out], -1))


class DeadBranch(nn.Module):
    """An auxiliary head computed in forward and not returned (an auxiliary loss's head left in
    forward): nothing of it remains in the model."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.aux = nn.Linear(H, 7)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        aux = torch.tanh(self.aux(out))
        del aux
        return self.fc(out)


class ResidualStack(nn.Module):
    """Residual connections between stacked recurrent layers (GNMT-style: out = lstm2(out) + out)
    and a skip of the first layer's output past the second into the head (torch.cat)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.l1 = nn.LSTM(E, H, batch_first=True)
        self.l2 = nn.LSTM(H, H, batch_first=True)
        self.l3 = nn.GRU(H, H, batch_first=True)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        o1, _ = self.l1(self.emb(x))
        o2, _ = self.l2(o1)
        o2 = o2 + o1
        o3, _ = self.l3(o2)
        return self.fc(torch.cat([o3, o1], -1))


class LastSteps(nn.Module):
    """out[:, -k:] of a bidirectional layer, then a per-step head (xiaojihh/stockPredict's
    self.out(r_out[:, -pred_days:, :])); a sequence shorter than k gives all its steps."""
    def __init__(self, k=4):
        super().__init__()
        self.k = k
        self.rnn = nn.LSTM(5, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(torch.relu(out[:, -self.k:, :]))


class ConvFront(nn.Module):
    """Conv1d(padding="same", an even kernel: torch puts the extra step after), a strided
    AvgPool1d counting its padding, a dilated Conv1d with stride, in front of a GRU tagger."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(5, 6, 4, padding="same")
        self.pool = nn.AvgPool1d(3, stride=2, padding=1)
        self.conv2 = nn.Conv1d(6, 7, 2, stride=2, dilation=2, padding=2, bias=False)
        self.rnn = nn.GRU(7, H, batch_first=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        x = self.pool(torch.tanh(self.conv(x.transpose(1, 2))))
        x = F.relu(self.conv2(x)).transpose(1, 2)
        return self.fc(self.rnn(x)[0])


class Transposed(nn.Module):
    """A batch-first input fed to a time-major LSTM through x.transpose(0, 1), the output
    transposed back."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        out, _ = self.rnn(x.transpose(0, 1))
        return self.fc(out).transpose(0, 1).contiguous()


def _cell_loop(cell_cls, stack):
    class CellLoop(nn.Module):
        """nn.LSTMCell/GRUCell/RNNCell in a Python loop over time."""
        def __init__(self):
            super().__init__()
            self.cell = cell_cls(5, H)
            self.fc = nn.Linear(H, 2)

        def forward(self, x):
            h = torch.zeros(x.size(0), H)
            c = torch.zeros(x.size(0), H)
            outs = []
            for t in range(x.size(1)):
                if cell_cls is nn.LSTMCell:
                    h, c = self.cell(x[:, t, :], (h, c))
                else:
                    h = self.cell(x[:, t], h)
                outs.append(h)
            return self.fc(torch.stack(outs, dim=1) if stack else h)
    CellLoop.__name__ = f"{cell_cls.__name__}Loop{'Seq' if stack else 'Last'}"
    return CellLoop


class StackedCellsPerStepHead(nn.Module):
    """Two cells stacked in one loop, a Linear and a tanh on every step, torch.cat of the steps
    unsqueezed on the time axis (the structure of pytorch/examples time_sequence_prediction)."""
    def __init__(self):
        super().__init__()
        self.lstm1 = nn.LSTMCell(5, H)
        self.lstm2 = nn.GRUCell(H, H)
        self.linear = nn.Linear(H, 2)

    def forward(self, x):
        h = torch.zeros(x.size(0), H)
        c = torch.zeros(x.size(0), H)
        h2 = torch.zeros(x.size(0), H)
        outputs = []
        for t in range(x.size(1)):
            h, c = self.lstm1(x[:, t], (h, c))
            h2 = self.lstm2(h, h2)
            outputs += [torch.tanh(self.linear(h2)).unsqueeze(1)]
        return torch.cat(outputs, dim=1)


class PerStepOnRnnOutput(nn.Module):
    """A Linear applied in a Python loop to each step of an RNN's output, stacked (MorvanZhou's
    RNN regressor)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(5, H, batch_first=True)
        self.out = nn.Linear(H, 1)

    def forward(self, x):
        r_out, _ = self.rnn(x)
        return torch.stack([self.out(r_out[:, t, :]) for t in range(r_out.size(1))], dim=1)


class CellLoopFinalHead(nn.Module):
    """A GRUCell loop, then a Linear and softmax on the last state."""
    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(5, H)
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        h = x.new_zeros(x.size(0), H)
        for t in range(x.size(1)):
            h = self.cell(x[:, t, :], h)
        return F.softmax(self.fc(h), dim=1)


class MeanMaxPool(nn.Module):
    """torch.mean / torch.max over time of a bi-GRU, side by side (the Kaggle kernels)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(4 * H, 1)

    def forward(self, x):
        h, _ = self.rnn(self.emb(x))
        avg_pool = torch.mean(h, 1)
        max_pool, _ = torch.max(h, 1)
        return torch.sigmoid(self.fc(torch.cat((avg_pool, max_pool), 1))).squeeze(1)


class PackedSumPool(nn.Module):
    """A sum and a max over pad_packed_sequence's output (max(lengths) steps, zeros of padding)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, batch_first=True)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x, lengths):
        p = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(p)[0], batch_first=True)
        return self.fc(torch.cat([out.sum(dim=1), out.amax(dim=1)], dim=-1))


class TimeMajorMeanKeepdim(nn.Module):
    """The mean over dim 0 of a time-major output, keepdim, then a Linear: (1, B, out)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        out, _ = self.rnn(x.transpose(0, 1))
        return self.fc(out.mean(0, keepdim=True))


def _valid(x, lengths):
    """Each row's first lengths steps, as models without packing write it."""
    return torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]


class LengthsMaskMean(nn.Module):
    """A mean over each row's own steps without packing: (out * mask).sum(1) / lengths, the mask
    arange(T) < lengths[:, None] (a causal LSTM: its valid steps do not see the padding)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E, padding_idx=0)
        self.rnn = nn.LSTM(E, H, batch_first=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x, lengths):
        out, _ = self.rnn(self.emb(x))
        mask = _valid(x, lengths).float()
        return self.fc((out * mask.unsqueeze(-1)).sum(1) / lengths[:, None].float())


class LengthsMaskMax(nn.Module):
    """A max over the valid steps: masked_fill of the padding's steps with -1e9."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True)
        self.fc = nn.Linear(H, 3)

    def forward(self, x, lengths):
        out, _ = self.rnn(self.emb(x))
        return self.fc(out.masked_fill(~_valid(x, lengths).unsqueeze(-1), -1e9).max(dim=1)[0])


class LengthsMaskAttention(nn.Module):
    """Attention over the valid steps: scores masked to -inf past each row's length, softmax,
    weighted sum; the mask's own sum as the count of a mean beside it."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, batch_first=True)
        self.att = nn.Linear(H, 1)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x, lengths):
        out, _ = self.rnn(self.emb(x))
        mask = _valid(x, lengths)
        a = torch.softmax(self.att(out).squeeze(-1).masked_fill(mask == 0, float("-inf")), dim=1)
        m = mask.float()
        mean = (out * m.unsqueeze(2)).sum(1) / m.sum(1, keepdim=True)
        return self.fc(torch.cat([(a.unsqueeze(-1) * out).sum(1), mean], 1))


class LengthsMaskPacked(nn.Module):
    """A packed bidirectional GRU, padded again, then the same masked mean."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=x.size(1))
        m = _valid(x, lengths).float().unsqueeze(-1)
        return self.fc((out * m).sum(1) / lengths.unsqueeze(1).float())


class HighwayHead(nn.Module):
    """A highway layer on the last step (Srivastava et al.): g * relu(W h) + (1 - g) * h."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, batch_first=True)
        self.gate = nn.Linear(H, H)
        self.proj = nn.Linear(H, H)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        h = out[:, -1]
        g = torch.sigmoid(self.gate(h))
        return self.fc(g * F.relu(self.proj(h)) + (1 - g) * h)


class ActivationsHead(nn.Module):
    """The activations of torch.nn a head may use: Mish, Hardswish, Hardsigmoid, Hardtanh(0, 20)
    (deepspeech's), clamp, PReLU with one slope (per step) and with a slope per feature (of the
    last step: torch's PReLU takes its channels on dim 1)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.fc1 = nn.Linear(H, H)
        self.prelu = nn.PReLU(H, init=0.2)
        self.prelu1 = nn.PReLU(init=0.3)
        self.fc2 = nn.Linear(H, 3)
        with torch.no_grad():
            self.prelu.weight.uniform_(-0.5, 0.5)

    def forward(self, x):
        out, _ = self.rnn(x)
        y = self.fc1(out) * 4
        y = F.mish(y) + F.hardswish(y) + F.hardsigmoid(y) + F.hardtanh(y, 0, 20) + torch.clamp(y, -1.0, 2.0)
        return self.fc2(self.prelu(self.prelu1(y)[:, -1]))


class AutoencoderRepeat(nn.Module):
    """An LSTM autoencoder (time-series anomaly detection tutorials): the encoder's final state
    repeated over the input's own steps, x.size(1), decoded and projected back."""
    def __init__(self, how="repeat"):
        super().__init__()
        self.how = how
        self.enc = nn.LSTM(5, H, num_layers=2, batch_first=True)
        self.dec = nn.LSTM(H, H, batch_first=True)
        self.out = nn.Linear(H, 5)

    def forward(self, x):
        o, (h, _) = self.enc(x)
        if self.how == "repeat":
            z = h[-1].unsqueeze(1).repeat(1, x.size(1), 1)
        elif self.how == "expand":
            z = o[:, -1:, :].expand(-1, x.shape[1], -1)
        else:                                   # a constant count: RepeatVector(4)
            z = h[-1].unsqueeze(1).repeat(1, 4, 1)
        y, _ = self.dec(z)
        return self.out(y)


class AutoencoderSeqLen(AutoencoderRepeat):
    """A decoder of a fixed self.seq_len steps, equal to the example's: the module run on a longer
    input tells it from x.size(1)."""
    seq_len = T0

    def forward(self, x):
        _, (h, _) = self.enc(x)
        y, _ = self.dec(h[-1].unsqueeze(1).repeat(1, self.seq_len, 1))
        return self.out(y)


class SumOverSize(nn.Module):
    """out.sum(1) / x.size(1): the mean (torch.export fixes an LSTM's time axis, so the size is
    the example's number in the graph; the capture reads it as the mean, checked on a longer input)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, batch_first=True)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.fc(torch.sum(out, dim=1) / x.size(1))


class WeightNormSquareSkip(nn.Module):
    """A weight-normalised Linear (nn.utils.parametrizations.weight_norm), the last step beside
    its square, and the input's own last step beside the output's (a skip connection)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, batch_first=True)
        self.fc = nn.utils.parametrizations.weight_norm(nn.Linear(2 * H + 5, 3))

    def forward(self, x):
        out, _ = self.rnn(x)
        h = out[:, -1]
        return self.fc(torch.cat([h, h ** 2, x[:, -1]], 1))


class HorizonView(nn.Module):
    """A multi-horizon forecaster: self.fc(out[:, -1]).view(-1, horizon, n_features); per step
    too (self.fc(out).view(B, T, 3, 4)): predict returns those shapes."""
    def __init__(self, per_step=False):
        super().__init__()
        self.per_step = per_step
        self.rnn = nn.GRU(5, H, num_layers=2, batch_first=True)
        self.fc = nn.Linear(H, 12)

    def forward(self, x):
        out, _ = self.rnn(x)
        if self.per_step:
            return self.fc(out).view(x.size(0), x.size(1), 3, 4)
        return self.fc(out[:, -1]).view(-1, 3, 4)


class FeatureSelect(nn.Module):
    """One feature of each step: a forecaster's self.fc(out)[:, -3:, -1] (RoloVoid/InformerTBM's
    LSTM baseline predicts[:, -pred_len:, -1])."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, batch_first=True)
        self.fc = nn.Linear(H, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out)[:, -3:, -1]


class QueryWeights(nn.Module):
    """Attention scores as a bias-free Linear written out, (o * self.query_weights).sum(-1)
    (bentrevett/pytorch-sentiment-analysis's RNNClassification), softmax over time."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, batch_first=True, bidirectional=True)
        self.query_weights = nn.Parameter(torch.randn(2 * H))
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        o, _ = self.rnn(x)
        a = torch.softmax((o * self.query_weights).sum(dim=-1), dim=1)
        return self.fc((o * a[..., None]).sum(1))


class PackByCount(nn.Module):
    """pack_padded_sequence by lengths counted from the ids, (x != 0).sum(1): forward takes the
    ids only; predict counts them (signature lengths_pad)."""
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, E, padding_idx=0)
        self.rnn = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        lengths = x.gt(0).long().sum(-1)
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.rnn(packed)
        return self.fc(torch.cat([h[-2], h[-1]], 1))


class StackOfModules(nn.Module):
    """salesforce/awd-lstm-lm's RNNModel (model.py): one nn.LSTM module per layer, of different
    widths, time-major; forward(input, hidden) with hidden a list of one (h, c) per module, from
    init_hidden; returns (output viewed as (T, B, V), the list of new (h, c))."""
    def __init__(self):
        super().__init__()
        self.encoder = nn.Embedding(V, E)
        self.sizes = [(E, H), (H, H), (H, E)]
        self.rnns = nn.ModuleList([nn.LSTM(i, o, 1) for i, o in self.sizes])
        self.decoder = nn.Linear(E, V)

    def init_hidden(self, bsz):
        weight = next(self.parameters()).data
        return [(weight.new(1, bsz, o).zero_(), weight.new(1, bsz, o).zero_()) for _, o in self.sizes]

    def forward(self, input, hidden):
        raw_output = self.encoder(input)
        new_hidden = []
        for l, rnn in enumerate(self.rnns):
            raw_output, new_h = rnn(raw_output, hidden[l])
            new_hidden.append(new_h)
        decoded = self.decoder(raw_output.view(raw_output.size(0) * raw_output.size(1), raw_output.size(2)))
        return decoded.view(raw_output.size(0), raw_output.size(1), decoded.size(1)), new_hidden


class DynamicLSTM(nn.Module):
    """ABSA-PyTorch's layers/dynamic_rnn.py: the rows sorted by length by hand (torch.sort(-x_len)),
    packed with enforce_sorted=True, h_n and the padded output put back in the rows' order with the
    inverse order (torch.sort of the order)."""
    def __init__(self, input_size, hidden_size, bidirectional=False):
        super().__init__()
        self.RNN = nn.LSTM(input_size, hidden_size, batch_first=True, bidirectional=bidirectional)

    def forward(self, x, x_len):
        x_sort_idx = torch.sort(-x_len)[1].long()
        x_unsort_idx = torch.sort(x_sort_idx)[1].long()
        x_len = x_len[x_sort_idx]
        x = x[x_sort_idx]
        x_emb_p = nn.utils.rnn.pack_padded_sequence(x, x_len.cpu(), batch_first=True)
        out_pack, (ht, ct) = self.RNN(x_emb_p, None)
        ht = torch.transpose(ht, 0, 1)[x_unsort_idx]
        ht = torch.transpose(ht, 0, 1)
        out = nn.utils.rnn.pad_packed_sequence(out_pack, batch_first=True)[0]
        return out[x_unsort_idx], ht


class SortedByHand(nn.Module):
    """ABSA-PyTorch's models/lstm.py: lengths counted from the ids, DynamicLSTM, a head on h_n[0]."""
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.lstm = DynamicLSTM(E, H)
        self.dense = nn.Linear(H, 3)

    def forward(self, text_raw_indices):
        x_len = torch.sum(text_raw_indices != 0, dim=-1)
        _, h_n = self.lstm(self.embed(text_raw_indices), x_len)
        return self.dense(h_n[0])


class SortedByHandTagger(nn.Module):
    """forward(ids, lengths) through a bidirectional DynamicLSTM, a per-step head on its output."""
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, E)
        self.lstm = DynamicLSTM(E, H, bidirectional=True)
        self.dense = nn.Linear(2 * H, 4)

    def forward(self, ids, lengths):
        out, _ = self.lstm(self.embed(ids), lengths)
        return self.dense(out)


class PoolPlusFinal(nn.Module):
    """The mean over time plus the final state (h.squeeze(0)): pools of one sequence side by side
    (the final state its last step), then their sum. (Two such combinations of pools of one
    sequence would need two Pool layers over it: refused.)"""
    def __init__(self):
        super().__init__()
        self.enc = nn.GRU(5, H, batch_first=True)
        self.fc = nn.Linear(H, 4)

    def forward(self, x):
        out, h = self.enc(x)
        return self.fc(out.mean(dim=1) + h.squeeze(0))


class StaticFeatures(nn.Module):
    """forward(x, static): a history and each row's static features (B, S), concatenated with the
    final state before the head (sales / sensor models with per-item attributes); predict and
    streams take the tuple (x, static)."""
    def __init__(self, time_major=False):
        super().__init__()
        self.time_major = time_major
        self.rnn = nn.LSTM(5, H, batch_first=not time_major)
        self.fc1 = nn.Linear(H + 3, 6)
        self.fc2 = nn.Linear(6, 2)

    def forward(self, x, static):
        _, (h, _) = self.rnn(x)
        return self.fc2(torch.relu(self.fc1(torch.cat([h[-1], static], dim=1))))


class StaticFeaturesTwice(nn.Module):
    """The static features read twice: beside the final state and again beside the head's
    hidden layer (one set of input columns, carried to both)."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.a, self.b = nn.Linear(H + 3, 6), nn.Linear(6 + 3, 2)

    def forward(self, x, static):
        _, h = self.rnn(x)
        z = torch.relu(self.a(torch.cat([h[-1], static], 1)))
        return self.b(torch.cat([z, static], 1))


class StaticFeaturesTimeMajor(StaticFeatures):
    def __init__(self):
        super().__init__(True)


class FinalBesideLastInput(nn.Module):
    """torch.cat([h_n[-1], x[:, -1]], 1): the final state beside the last input step."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.fc = nn.Linear(H + 5, 2)

    def forward(self, x):
        _, h = self.rnn(x)
        return self.fc(torch.cat([h[-1], x[:, -1]], 1))


class LSTMSelfAttention(nn.Module):
    """A bidirectional LSTM, nn.MultiheadAttention over its output (self-attention, 4 heads),
    a residual add and the mean over time (the BiLSTM + self-attention classifiers of many text
    and sensor repositories); torch.fx keeps the attention module whole."""
    def __init__(self, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.rnn = nn.LSTM(5, H, batch_first=batch_first, bidirectional=True)
        self.att = nn.MultiheadAttention(2 * H, 4, batch_first=batch_first)
        self.fc = nn.Linear(2 * H, 3)

    def forward(self, x):
        out, _ = self.rnn(x)
        a, _ = self.att(out, out, out)
        return self.fc((out + a).mean(dim=1 if self.batch_first else 0))


class HandSelfAttention(nn.Module):
    """Self-attention written by hand over a recurrent layer's output: q, k, v Linears,
    torch.bmm(Q, K.transpose(1, 2)) times 1 / sqrt(d), softmax over the keys, torch.bmm(w, V) (or
    F.scaled_dot_product_attention), then a mean over time."""
    def __init__(self, sdpa=False):
        super().__init__()
        self.sdpa, self.scale = sdpa, 1.0 / float(np.sqrt(H))
        self.rnn = nn.LSTM(5, H, batch_first=True)
        self.q, self.k, self.v = nn.Linear(H, H), nn.Linear(H, H), nn.Linear(H, H)
        self.fc = nn.Linear(H, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        Q, K, V = self.q(out), self.k(out), self.v(out)
        if self.sdpa:
            ctx = F.scaled_dot_product_attention(Q, K, V)
        else:
            ctx = torch.bmm(F.softmax(torch.bmm(Q, K.transpose(1, 2)) * self.scale, dim=-1), V)
        return self.fc(ctx.mean(1))


class SdpaSelfAttention(HandSelfAttention):
    def __init__(self):
        super().__init__(True)


class LearnedH0(nn.Module):
    """A learned initial state: nn.Parameter h0 / c0 of (layers * directions, 1, H) expanded (or
    repeated) to the batch, as nn_classes/architecture's forecaster and many sequence models write
    it; the model starts every sequence (predict, streams, a StreamPool's slots) from it."""
    def __init__(self, how="expand", bidirectional=True):
        super().__init__()
        D = 2 if bidirectional else 1
        self.how = how
        self.rnn = nn.LSTM(5, H, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.h0 = nn.Parameter(torch.randn(2 * D, 1, H))
        self.c0 = nn.Parameter(torch.randn(2 * D, 1, H))
        self.fc = nn.Linear(D * H, 3)

    def forward(self, x):
        B = x.size(0)
        if self.how == "expand":
            h0, c0 = self.h0.expand(-1, B, -1).contiguous(), self.c0.expand(-1, B, -1).contiguous()
        elif self.how == "repeat":
            h0, c0 = self.h0.repeat(1, B, 1), self.c0.repeat(1, B, 1)
        else:                                    # a learned h and a zero c
            h0, c0 = self.h0.repeat(1, B, 1), torch.zeros(self.c0.shape[0], B, self.c0.shape[2])
        out, _ = self.rnn(x, (h0, c0))
        return self.fc(out)


class LearnedH0Repeat(LearnedH0):      # one class per variant: TorchScript compiles a class once
    def __init__(self):
        super().__init__("repeat")


class LearnedHZeroC(LearnedH0):
    def __init__(self):
        super().__init__("zero_c", bidirectional=False)


class LearnedH0GRU(nn.Module):
    """A GRU's learned h0 of (1, H), unsqueezed and repeated to the batch."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)
        self.h0 = nn.Parameter(torch.randn(1, H))
        self.fc = nn.Linear(H, 3)

    def forward(self, x):
        out, _ = self.rnn(x, self.h0.unsqueeze(1).repeat(1, x.size(0), 1))
        return self.fc(out)


CASES = {
    "hand_self_attention": (HandSelfAttention, "floats"),
    "sdpa_self_attention": (SdpaSelfAttention, "floats"),
    "lstm_self_attention": (LSTMSelfAttention, "floats"),
    "static_features": (StaticFeatures, "floats_static"),
    "static_features_time_major": (StaticFeaturesTimeMajor, "floats_static_tm"),
    "static_features_twice": (StaticFeaturesTwice, "floats_static"),
    "final_beside_last_input": (FinalBesideLastInput, "floats"),
    "pool_plus_final": (PoolPlusFinal, "floats"),
    "sorted_by_hand": (SortedByHand, "ids_padded"),
    "sorted_by_hand_tagger": (SortedByHandTagger, "ids_lengths"),
    "stack_of_modules": (StackOfModules, "ids_hidden"),
    "learned_h0_expand": (LearnedH0, "floats"),
    "learned_h0_repeat": (LearnedH0Repeat, "floats"),
    "learned_h_zero_c": (LearnedHZeroC, "floats"),
    "learned_h0_gru": (LearnedH0GRU, "floats"),
    "mean_max_pool": (MeanMaxPool, "ids"),
    "packed_sum_max_pool": (PackedSumPool, "ids_lengths"),
    "time_major_mean_keepdim": (TimeMajorMeanKeepdim, "floats"),
    "stacked_cells_per_step_head": (StackedCellsPerStepHead, "floats"),
    "per_step_on_rnn_output": (PerStepOnRnnOutput, "floats"),
    "cell_loop_final_head": (CellLoopFinalHead, "floats"),
    "h0_in_forward": (H0InForward, "ids"),
    "new_zeros": (NewZeros, "floats"),
    "rnn_none_squeeze": (RnnNone, "floats"),
    "word_lm": (WordLM, "ids_hidden"),
    "packed_dotted": (Packed, "ids_lengths"),
    "packed_tagger": (PackedTagger, "ids_lengths"),
    "last_valid_index": (LastValidIndex, "ids_lengths"),
    "last_valid_bidirectional": (LastValidBi, "ids_lengths"),
    "last_valid_gather": (LastValidGather, "ids_lengths"),
    "last_valid_unpacked": (LastValidUnpacked, "ids_lengths"),
    "last_valid_time_major": (LastValidTimeMajor, "ids_lengths"),
    "sum_directions_by_slices": (SumDirectionsBySlices, "floats"),
    "hn_view_layers_directions": (HnViewLayersDirections, "floats"),
    "hn_mean_top": (HnMeanTop, "floats"),
    "hn_sum": (HnSum, "floats"),
    "lstm_tagger_unbatched": (LSTMTagger, "unbatched"),
    "permute_view": (PermuteView, "ids"),
    "sequential_head_scalars": (SequentialHead, "floats"),
    "residual_scale": (Residual, "floats"),
    "residual_heads": (ResidualHeads, "floats"),
    "per_step_residual": (PerStepResidual, "floats"),
    "dead_branch": (DeadBranch, "floats"),
    "residual_stack": (ResidualStack, "ids"),
    "transposed": (Transposed, "floats"),
    "last_steps": (LastSteps, "floats"),
    "conv_front": (ConvFront, "floats"),
    "lengths_mask_mean": (LengthsMaskMean, "ids_lengths"),
    "lengths_mask_max": (LengthsMaskMax, "ids_lengths"),
    "lengths_mask_attention": (LengthsMaskAttention, "ids_lengths"),
    "lengths_mask_packed": (LengthsMaskPacked, "ids_lengths"),
    "highway_head": (HighwayHead, "floats"),
    "activations_head": (ActivationsHead, "floats"),
    "autoencoder_repeat": (AutoencoderRepeat, "floats"),
    "autoencoder_expand": (lambda: AutoencoderRepeat("expand"), "floats"),
    "autoencoder_constant": (lambda: AutoencoderRepeat("constant"), "floats"),
    "autoencoder_seq_len": (AutoencoderSeqLen, "floats"),
    "sum_over_size": (SumOverSize, "ids"),
    "weight_norm_square_skip": (WeightNormSquareSkip, "floats"),
    "horizon_view": (HorizonView, "floats"),
    "horizon_view_per_step": (lambda: HorizonView(True), "floats"),
    "feature_select": (FeatureSelect, "floats"),
    "query_weights": (QueryWeights, "floats"),
}
for _c in (nn.LSTMCell, nn.GRUCell, nn.RNNCell):
    for _s in (False, True):
        CASES[f"{_c.__name__.lower()}_loop_{'seq' if _s else 'last'}"] = (_cell_loop(_c, _s), "floats")


def _forward_args(kind, m, B, T, seed):
    """What the user's code passes to forward, and what predict gets (x batch-major, kwargs)."""
    if kind == "ids":
        x = _ids(B, T, seed)
        return (x,), x.numpy(), {}
    if kind == "floats":
        x = _floats(B, T, 5, seed)
        return (x,), x.numpy(), {}
    if kind in ("floats_static", "floats_static_tm"):    # forward(x, static): predict takes the tuple
        x, st = _floats(B, T, 5, seed), torch.from_numpy(np.random.default_rng(seed + 7).normal(size=(B, 3)).astype(np.float32))
        return ((x.transpose(0, 1).contiguous() if kind.endswith("_tm") else x), st), (x.numpy(), st.numpy()), {}
    if kind == "ids_padded":                  # rows padded with id 0 after their lengths (row 0 full)
        x = _ids(B, T, seed)
        lens = np.random.default_rng(seed).integers(1, T + 1, B)
        lens[0] = T
        x[torch.arange(T)[None, :] >= torch.from_numpy(lens)[:, None]] = 0
        return (x,), x.numpy(), {}
    if kind == "ids_lengths":
        x = _ids(B, T, seed)
        lens = torch.from_numpy(np.random.default_rng(seed).integers(1, T + 1, B))
        lens[0] = T
        return (x, lens), x.numpy(), {"lengths": lens.numpy()}
    if kind == "ids_hidden":                  # time-major ids and init_hidden
        x = _ids(B, T, seed)
        return (x.t().contiguous(), m.init_hidden(B)), x.numpy(), {}
    if kind == "unbatched":
        x = _ids(1, T, seed)[0]
        return (x,), x.numpy()[None], {}
    raise AssertionError(kind)


def _torch_out(kind, m, args):
    with torch.no_grad():
        y = m(*args)
    y = y[0] if isinstance(y, tuple) else y
    y = y.numpy()
    B = args[0].shape[1] if kind == "ids_hidden" else args[0].shape[0]
    if kind == "ids_hidden":                  # (T*B, V) time-major -> (B, T, V)
        y = y.reshape(-1, B, y.shape[-1]).transpose(1, 0, 2)
    elif kind == "unbatched":
        y = y[None]
    elif isinstance(m, TimeMajorMeanKeepdim):    # (1, B, out): predict is batch-major, (B, 1, out)
        y = y.transpose(1, 0, 2)
    return y


@pytest.fixture(params=sorted(CASES))
def case(request):
    name = request.param
    cls, kind = CASES[name]
    torch.manual_seed(len(name))
    m = cls().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.5)
    return name, m, kind


def test_idiom_converts_and_matches(case, tmp_path):
    name, m, kind = case
    ex, _, _ = _forward_args(kind, m, B0, T0, 0)
    f = fastrnn.convert(m, example_input=list(ex))
    for B, T, seed in ((B0, T0, 0), (B1, T1, 1), (1, 2, 2)):
        if kind == "unbatched" and B > 1:
            continue
        args, x, kw = _forward_args(kind, m, B, T, seed)
        want = _torch_out(kind, m, args)
        _close(f.predict(x, **kw), want, f"{name} B={B} T={T}")
    f.save(tmp_path / "m.frnn")
    args, x, kw = _forward_args(kind, m, B1 if kind != "unbatched" else 1, T1, 3)
    _close(fastrnn.load(tmp_path / "m.frnn").predict(x, **kw), _torch_out(kind, m, args), "saved and loaded")


def test_branches_stream_and_keep_only_what_is_read():
    """A per-step branch streams step by step as predict gives; the dead auxiliary head leaves
    nothing, the residual block composes into the layers around it."""
    torch.manual_seed(5)
    x = _floats(B1, T1, 5, 9)
    f = fastrnn.convert(PerStepResidual().eval(), example_input=_floats(B0, T0, 5, 0))
    s = f.stream(B1)
    got = np.stack([s.step(x[:, t].numpy()) for t in range(T1)], 1)
    np.testing.assert_array_equal(got, f.predict(x.numpy()))
    assert [type(l).__name__ for l in f.layers] == ["Recurrent", "Dense", "Dense"]
    assert f.layers[1].carry == ((0, H),) and not f.layers[2].carry
    dead = fastrnn.convert(DeadBranch().eval(), example_input=_floats(B0, T0, 5, 0))
    assert [(type(l).__name__, l.output_size) for l in dead.layers] == [("Recurrent", H), ("Dense", 2)]


def test_unbatched_predict_takes_a_batch():
    """A forward over one sentence converts to a model whose predict takes (B, T) and returns
    (B, T, tags): row b is the module run on sentence b."""
    torch.manual_seed(1)
    m = LSTMTagger().eval()
    f = fastrnn.convert(m, example_input=_ids(1, T0, 0)[0])
    x = _ids(B1, T1, 5)
    want = np.stack([_torch_out("unbatched", m, (x[b],))[0] for b in range(B1)])
    _close(f.predict(x.numpy()), want)
    assert f.meta["input_layout"] == "unbatched"


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_traced_unbatched_tagger_without_example(tmp_path):
    """torch.jit.trace of the tagger bakes len(sentence) into view(7, 1, -1) and saves no input
    shape: converting the archive alone finds the (7,) sentence stand-in from that view; the
    model then takes (B, 7) and gives each row the trace's output."""
    torch.manual_seed(2)
    m = LSTMTagger().eval()
    p = tmp_path / "tagger.pt"
    torch.jit.save(torch.jit.trace(m, _ids(1, T0, 0)[0]), str(p))
    f = fastrnn.convert(str(p))
    x = _ids(B1, T0, 6)
    want = np.stack([_torch_out("unbatched", m, (x[b],))[0] for b in range(B1)])
    _close(f.predict(x.numpy()), want)


def test_state_argument_is_initial_state_and_return_state():
    """forward(input, hidden) -> (output, hidden): predict(x, initial_state=[h, c]) and
    return_state=True in torch's layout, from a non-zero state."""
    torch.manual_seed(4)
    m = WordLM().eval()
    f = fastrnn.convert(m, example_input=[_ids(B0, T0, 0).t().contiguous(), m.init_hidden(B0)])
    x = _ids(B1, T1, 6)
    rng = np.random.default_rng(6)
    h0 = rng.normal(size=(2, B1, H)).astype(np.float32)
    c0 = rng.normal(size=(2, B1, H)).astype(np.float32)
    with torch.no_grad():
        y, (h, c) = m(x.t().contiguous(), (torch.from_numpy(h0), torch.from_numpy(c0)))
    got, (gh, gc) = f.predict(x.numpy(), initial_state=[h0, c0], return_state=True)
    _close(got, y.numpy().reshape(T1, B1, V).transpose(1, 0, 2), "output")
    _close(gh, h.numpy(), "h_n")
    _close(gc, c.numpy(), "c_n")


def test_streaming_a_cell_loop_is_the_loop():
    """An nn.LSTMCell loop converts to one LSTM layer: its stream is the user's loop, step by step."""
    torch.manual_seed(7)
    m = _cell_loop(nn.LSTMCell, True)().eval()
    f = fastrnn.convert(m, example_input=_floats(B0, T0, 5, 0))
    x = _floats(B1, T1, 5, 8)
    with torch.no_grad():
        want = m(x).numpy()
    s = f.stream(B1)
    _close(np.stack([s.step(x[:, t].numpy()) for t in range(T1)], 1), want)


def test_example_input_forms():
    """The example as a tensor, a list of forward's arguments, NumPy arrays, or not at all."""
    torch.manual_seed(9)
    m = PermuteView().eval()
    x = _ids(B1, T1, 9)
    with torch.no_grad():
        want = m(x).numpy()
    for ex in (_ids(B0, T0, 0), [_ids(B0, T0, 0)], (_ids(B0, T0, 0).numpy(),), _ids(B0, T0, 0).numpy(), None):
        _close(fastrnn.convert(m, example_input=ex).predict(x.numpy()), want, repr(type(ex)))


def test_quantized_dynamic_module_and_its_trace(tmp_path):
    """quantize_dynamic(LSTM, Linear): converted with its int8 weights dequantized. torch's int8
    kernels also round the activations on the fly, so they differ from the fp32 model of the
    same weights by about 1e-3; fastrnn matches that fp32 model to the usual 1e-5."""
    torch.manual_seed(11)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, H, num_layers=2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(2 * H, 3)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out)
    m = M().eval()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(m, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    # the fp32 model of the dequantized weights
    ref = M().eval()
    wb = q.rnn._weight_bias()
    sd = {k: v.dequantize() for k, v in wb["weight"].items()} | dict(wb["bias"])
    ref.rnn.load_state_dict(sd)
    ref.fc.weight.data, ref.fc.bias.data = q.fc.weight().dequantize(), q.fc.bias()
    x = _floats(B1, T1, 5, 12)
    with torch.no_grad():
        want, approx = ref(x).numpy(), q(x).numpy()
    f = fastrnn.convert(q, example_input=_floats(B0, T0, 5, 0))
    _close(f.predict(x.numpy()), want, "dequantized weights")
    assert np.abs(f.predict(x.numpy()) - approx).max() < 2e-2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(q, _floats(B0, T0, 5, 0)), tmp_path / "q.pt")
    _close(fastrnn.convert(str(tmp_path / "q.pt")).predict(x.numpy()), want, "traced archive")


def test_every_refused_node_is_listed_with_its_line():
    class TwoProblems(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(5, H, batch_first=True)
            self.norm = nn.LayerNorm(H)

        def forward(self, x):
            out, _ = self.rnn(x)
            return torch.erf(self.norm(out)) + torch.cumsum(out, 1)
    with pytest.raises(fastrnn.UnsupportedError) as e:
        fastrnn.convert(TwoProblems(), example_input=_floats(B0, T0, 5, 0))
    msg = str(e.value)
    assert "erf" in msg and "cumsum" in msg, msg
    assert msg.count("test_torch_idioms.py") >= 2, msg


class CharRNN(nn.Module):
    """A one-step generator (the char-rnn pattern): forward(input, hidden) -> (output, hidden)
    on one token per row, driven by the user's own loop from init_hidden."""
    def __init__(self, model="gru", n_layers=2):
        super().__init__()
        self.model, self.n_layers = model, n_layers
        self.encoder = nn.Embedding(V, E)
        self.rnn = nn.GRU(E, H, n_layers) if model == "gru" else nn.LSTM(E, H, n_layers)
        self.decoder = nn.Linear(H, V)

    def forward(self, input, hidden):
        batch_size = input.size(0)
        encoded = self.encoder(input)
        output, hidden = self.rnn(encoded.view(1, batch_size, -1), hidden)
        return self.decoder(output.view(batch_size, -1)), hidden

    def init_hidden(self, batch_size):
        z = torch.zeros(self.n_layers, batch_size, H)
        return (z, z.clone()) if self.model == "lstm" else z


class FloatStep(nn.Module):
    """A one-step module on float features: x_t.unsqueeze(1) into a batch-first LSTM."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(5, H, batch_first=True)
        self.fc = nn.Linear(H, 2)

    def forward(self, x_t, hidden):
        out, hidden = self.rnn(x_t.unsqueeze(1), hidden)
        return torch.softmax(self.fc(out[:, -1]), -1), hidden

    def init_hidden(self, b):
        return (torch.zeros(1, b, H), torch.zeros(1, b, H))


@pytest.mark.parametrize("make", [lambda: CharRNN("gru"), lambda: CharRNN("lstm"), FloatStep],
                         ids=["char_gru", "char_lstm", "float_step"])
@pytest.mark.parametrize("B_example", [1, B0])
def test_one_step_module_streams_the_users_loop(make, B_example):
    torch.manual_seed(13)
    m = make().eval()
    floats = isinstance(m, FloatStep)
    x = _floats(B1, T1, 5, 14) if floats else _ids(B1, T1, 14)
    ex = _floats(B_example, 1, 5, 0)[:, 0] if floats else _ids(B_example, 1, 0)[:, 0]
    f = fastrnn.convert(m, example_input=[ex, m.init_hidden(B_example)])
    assert f.meta["one_step"] and f.meta["input_layout"] == "one_step"
    hidden, want = m.init_hidden(B1), []
    with torch.no_grad():
        for t in range(T1):
            y, hidden = m(x[:, t], hidden)
            want.append(y.numpy())
    want = np.stack(want, 1)
    s = f.stream(B1)
    _close(np.stack([s.step(x[:, t].numpy()) for t in range(T1)], 1), want, "stream")
    _close(f.predict(x.numpy()), want, "predict over the whole loop")
    from fastrnn.converters import run_source
    _close(run_source(m, x.numpy(), meta=f.meta)[0], want, "--check's run of the loop")


class OneHotSession(nn.Module):
    """GRU4Rec (hungthanhpham94/GRU4REC-pytorch lib/model.py): a one-step session model whose
    item ids are one-hot encoded by scatter_ into a zeroed buffer of the training batch size, then
    a time-major GRU on that one step and a tanh head; forward(input, hidden) -> (logit, hidden)."""
    def __init__(self, batch_size):
        super().__init__()
        self.onehot_buffer = torch.FloatTensor(batch_size, V)
        self.gru = nn.GRU(V, H, 1)
        self.h2o = nn.Linear(H, V)

    def forward(self, input, hidden):
        self.onehot_buffer.zero_()
        embedded = self.onehot_buffer.scatter_(1, input.view(-1, 1), 1).unsqueeze(0)
        output, hidden = self.gru(embedded, hidden)
        return torch.tanh(self.h2o(output.view(-1, output.size(-1)))), hidden


def test_one_hot_by_scatter_into_a_buffer():
    """The scatter_ one-hot is an Embedding of the identity (its GRU's input projection folds into
    a table): the converted model's stream is the user's loop over sessions' items. (The source
    runs at its buffer's batch size only.)"""
    torch.manual_seed(15)
    m = OneHotSession(B0).eval()
    x = _ids(B0, T1, 16)
    f = fastrnn.convert(m, example_input=[x[:, 0], torch.zeros(1, B0, H)])
    assert f.meta["one_step"] and isinstance(f.layers[0], fastrnn.ir.Embedding)
    hidden, want = torch.zeros(1, B0, H), []
    with torch.no_grad():
        for t in range(T1):
            y, hidden = m(x[:, t], hidden)
            want.append(y.numpy())
    s = f.stream(B0)
    _close(np.stack([s.step(x[:, t].numpy()) for t in range(T1)], 1), np.stack(want, 1))


def test_a_one_step_onnx_graph_is_refused_saying_why(tmp_path):
    """The legacy ONNX export of the one-step session model (ScatterElements of ones into a zero
    constant, read as the one-hot) has a graph input with no time axis: run() takes sequences, so
    it is refused with the reason and what converts instead."""
    from conftest import onnx_export
    torch.manual_seed(15)
    m = OneHotSession(B0).eval()
    onnx_export(m, (_ids(B0, 1, 0)[:, 0], torch.zeros(1, B0, H)), str(tmp_path / "m.onnx"), False, ("x", "h"), {})
    with pytest.raises(fastrnn.UnsupportedError, match="is one step .*convert the PyTorch module"):
        fastrnn.convert(str(tmp_path / "m.onnx"))


def test_convolutions_the_engine_does_not_run_are_refused_by_name():
    """A grouped (depthwise) Conv1d, a 2-D convolution, a MaxPool1d with ceil_mode: each named."""
    class Front(nn.Module):
        def __init__(self, conv, pool):
            super().__init__()
            self.conv, self.pool = conv, pool
            self.rnn = nn.LSTM(4, H, batch_first=True)

        def forward(self, x):
            return self.rnn(self.pool(self.conv(x.permute(0, 2, 1))).permute(0, 2, 1))[0]

    x = torch.zeros(B0, T0, 4)
    for conv, pool, why in ((nn.Conv1d(4, 4, 3, groups=2), nn.Identity(), "a grouped convolution"),
                            (nn.Conv1d(4, 4, 3), nn.MaxPool1d(2, ceil_mode=True), "ceil_mode True")):
        with pytest.raises(fastrnn.UnsupportedError, match=why):
            fastrnn.convert(Front(conv, pool).eval(), example_input=x)


class SortedNotRestored(nn.Module):
    """Sorts the batch by length itself (torch.sort + index_select) and packs it sorted, but
    returns h_n in that sorted order: its rows do not match its input's."""
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(5, H, batch_first=True)

    def forward(self, x, lengths):
        lengths, order = torch.sort(lengths, descending=True)
        packed = nn.utils.rnn.pack_padded_sequence(x.index_select(0, order), lengths, batch_first=True)
        _, h = self.rnn(packed)
        return h[-1]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_rows_left_in_length_order_are_refused(tmp_path):
    """A sort of the rows that nothing undoes (what pack_padded_sequence(enforce_sorted=False)
    undoes itself) would give rows in length order: refused, from the module and its trace."""
    torch.manual_seed(4)
    m = SortedNotRestored().eval()
    args = (_floats(B0, T0, 5, 0), torch.tensor([3, 7, 5]))
    p = tmp_path / "sorted.pt"
    torch.jit.save(torch.jit.trace(m, args), str(p))
    for src, kw in ((m, {"example_input": args}), (str(p), {})):
        with pytest.raises(fastrnn.UnsupportedError, match="in the order of their lengths"):
            fastrnn.convert(src, **kw)


def test_a_branch_around_recurrent_layers_streams(tmp_path):
    """The skip around recurrent layers carries the earlier output step by step: streams and a
    StreamPool give predict's numbers."""
    torch.manual_seed(4)
    m = ResidualStack().eval()
    f = fastrnn.convert(m, example_input=_ids(B0, T0, 0))
    assert any(isinstance(l, fastrnn.ir.Recurrent) and l.carry for l in f.layers)
    x = _ids(B1, T1, 8).numpy()
    want = f.predict(x)
    s = f.stream(B1)
    np.testing.assert_array_equal(np.stack([s.step(x[:, t]) for t in range(T1)], 1), want)
    pool = fastrnn.StreamPool(f, capacity=B1)
    slots = [pool.open() for _ in range(B1)]
    got = np.stack([pool.step(slots, x[:, t]) for t in range(T1)], 1)
    np.testing.assert_array_equal(got, want)
    f.save(tmp_path / "m.frnn")
    np.testing.assert_array_equal(fastrnn.load(tmp_path / "m.frnn").predict(x), want)


@pytest.mark.parametrize("capture", ["script", "trace"])
@pytest.mark.parametrize("name", ["last_valid_index", "last_valid_bidirectional", "last_valid_gather",
                                  "last_valid_unpacked", "last_valid_time_major"])
def test_last_valid_step_from_archives(name, capture, tmp_path):
    """TorchScript and a trace (the trace records the packing's sort and the index's arange as
    ops) give each row's last valid step too, at other batch sizes and lengths."""
    _check_archive(name, capture, tmp_path)


def _check_archive(name, capture, tmp_path):
    """CASES[name] saved as a script or trace archive, converted with its example and compared
    with torch at another batch size and length."""
    cls, kind = CASES[name]
    torch.manual_seed(len(name))
    m = cls().eval()
    ex, _, _ = _forward_args(kind, m, B0, T0, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = torch.jit.script(m) if capture == "script" else torch.jit.trace(m, ex)
    a.save(str(tmp_path / "m.pt"))
    f = fastrnn.convert(str(tmp_path / "m.pt"), example_input=list(ex))
    args, x, kw = _forward_args(kind, m, B1, T1, 5)
    _close(f.predict(x, **kw), _torch_out(kind, m, args), f"{name} {capture}")


@pytest.mark.parametrize("name, dynamo", [("last_valid_unpacked", False), ("last_valid_unpacked", True),
                                          ("last_valid_time_major", False), ("last_valid_index", False)])
def test_last_valid_step_from_onnx_exports(name, dynamo, tmp_path):
    """torch's ONNX exports of out[arange(B), lengths - 1]: the legacy exporter gathers rows
    arange(B) * T + lengths - 1 of out flattened to (B*T, F) (time-major: (lengths - 1) * B +
    arange(B) of (T*B, F)), the dynamo one a GatherND of (row, step) pairs; compared with
    onnxruntime. (The dynamo exporter cannot export pack_padded_sequence.)"""
    _check_onnx(name, dynamo, tmp_path)


def _check_onnx(name, dynamo, tmp_path):
    """CASES[name] exported to ONNX (legacy with dynamic batch and time axes, or dynamo), converted
    and compared with onnxruntime on the graph's own inputs (the dynamo export at the example's
    sizes, which its LSTM fixes)."""
    import onnxruntime as ort
    from conftest import onnx_export
    cls, kind = CASES[name]
    torch.manual_seed(len(name))
    m = cls().eval()
    ex, _, _ = _forward_args(kind, m, B0, T0, 0)
    path = str(tmp_path / "m.onnx")
    second = {"ids_lengths": "lengths", "floats_static": "static"}.get(kind)
    names = ("x", second) if second else ("x",)
    axes = {"x": {0: "b", 1: "t"}} | ({second: {0: "b"}} if second else {})
    onnx_export(m, ex, path, dynamo, names, axes)
    f = fastrnn.convert(path)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    args, _, _ = _forward_args(kind, m, B0, T0, 5) if dynamo else _forward_args(kind, m, B1, T1, 5)
    feeds = dict(zip([i.name for i in sess.get_inputs()], [a.numpy() for a in args]))
    _close(f.run(None, feeds)[0], sess.run(None, feeds)[0], name)


def test_last_valid_step_after_a_non_causal_layer_is_refused():
    """Without packing, a bidirectional layer's steps before a row's length depend on its padding:
    out[arange(B), lengths - 1] is refused, saying why."""
    class BiUnpacked(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 5, batch_first=True, bidirectional=True)

        def forward(self, x, lengths):
            return self.rnn(x)[0][torch.arange(x.size(0)), lengths - 1]

    with pytest.raises(fastrnn.UnsupportedError, match="only after causal layers"):
        fastrnn.convert(BiUnpacked().eval(), example_input=[torch.randn(3, 6, 4), torch.tensor([6, 3, 2])])


@pytest.mark.parametrize("dynamo", [False, True])
@pytest.mark.parametrize("name", ["lengths_mask_mean", "lengths_mask_max", "lengths_mask_attention",
                                  "highway_head", "activations_head", "autoencoder_repeat", "autoencoder_expand",
                                  "autoencoder_constant", "horizon_view", "horizon_view_per_step", "sum_over_size",
                                  "weight_norm_square_skip", "feature_select", "query_weights",
                                  "learned_h0_expand", "learned_h0_repeat", "learned_h_zero_c", "learned_h0_gru",
                                  "pool_plus_final", "final_beside_last_input", "static_features",
                                  "hand_self_attention"])
def test_heads_masks_and_autoencoders_from_onnx_exports(name, dynamo, tmp_path):
    """The ONNX exports of the same idioms, compared with onnxruntime: the mask's arange is a
    Range over the graph's own time axis (legacy, dynamic axes) or a constant (dynamo, whose LSTM
    fixes the time axis); the repeat a Tile or an Expand; Mish at opset 17 is x * tanh(softplus(x));
    a learned initial state a Tile / Expand of the constant to the graph's batch (legacy) or the
    constant already expanded to the example's batch (dynamo: its rows are all equal)."""
    _check_onnx(name, dynamo, tmp_path)


def test_state_arguments_of_several_modules():
    """AWD-LSTM's hidden, a list of one (h, c) per nn.LSTM module: predict's initial_state is
    those arrays in that order (h, c of the first module, then the second's ...), return_state
    gives the new list flattened the same way; --check's source arguments rebuild the list of
    tuples."""
    from fastrnn import adapters
    torch.manual_seed(4)
    m = StackOfModules().eval()
    f = fastrnn.convert(m, example_input=[_ids(B0, T0, 0).t(), m.init_hidden(B0)])
    x = _ids(B1, T1, 5)
    rng = np.random.default_rng(6)
    hidden = [tuple(torch.from_numpy(rng.normal(size=(1, B1, o)).astype(np.float32)) for _ in "hc")
              for _, o in m.sizes]
    with torch.no_grad():
        want, new_hidden = m(x.t().contiguous(), hidden)
    y, states = f.predict(x.numpy(), initial_state=[t.numpy() for hc in hidden for t in hc], return_state=True)
    _close(y, want.numpy().transpose(1, 0, 2))
    for got, w in zip(states, [t for hc in new_hidden for t in hc]):
        _close(got, w.numpy())
    args = adapters.source_args(f.meta, x.numpy())
    assert [tuple(a.shape for a in hc) for hc in args[1]] == [((1, B1, o), (1, B1, o)) for _, o in m.sizes]


def test_sdpa_from_the_legacy_onnx_export(tmp_path):
    """F.scaled_dot_product_attention in the legacy export: q and k each times sqrt(1 / sqrt(E))
    (computed from the graph's shape), MatMul, Softmax, MatMul. (The dynamo exporter cannot
    export it here.)"""
    _check_onnx("sdpa_self_attention", False, tmp_path)


def test_rows_sorted_by_hand_from_the_legacy_onnx_export(tmp_path):
    """DynamicLSTM's sort by hand in torch's legacy ONNX export: TopK of -lengths (smallest first)
    and TopK of the order (its inverse), compared with onnxruntime. (Both exporters refuse the
    ABSA-style model that counts its lengths, and the dynamo exporter the sort itself.)"""
    _check_onnx("sorted_by_hand_tagger", False, tmp_path)


def test_static_features_stream_and_are_checked():
    """A model of forward(x, static) streams with (x_t, static) per step, the same numbers as
    predict; a missing or misshapen static argument is a ShapeError naming it; its ONNX export
    (a graph input fastrnn's run() has no role for) is refused saying so."""
    torch.manual_seed(9)
    m = StaticFeatures().eval()
    ex, _, _ = _forward_args("floats_static", m, B0, T0, 0)
    f = fastrnn.convert(m, example_input=list(ex))
    args, (x, st), _ = _forward_args("floats_static", m, B1, T1, 2)
    s = f.stream(B1)
    ys = [s.step((x[:, t], st)) for t in range(T1)]
    np.testing.assert_array_equal(ys[-1], f.predict((x, st)))
    _close(ys[-1], _torch_out("floats_static", m, args))
    with pytest.raises(fastrnn.ShapeError, match="2 arrays"):
        f.predict(x)
    with pytest.raises(fastrnn.ShapeError, match="static must be float of shape"):
        f.predict((x, st[:, :2]))


def test_self_attention_time_major_and_what_is_refused():
    """nn.MultiheadAttention time-major (batch_first=False) converts too; attention between two
    different tensors, or with a key_padding_mask, is refused naming the reason; the model does
    not stream."""
    torch.manual_seed(12)
    m = LSTMSelfAttention(batch_first=False).eval()
    f = fastrnn.convert(m, example_input=_floats(T0, B0, 5, 0))
    x = _floats(B1, T1, 5, 3)
    with torch.no_grad():
        want = m(x.transpose(0, 1)).numpy()
    _close(f.predict(x.numpy()), want)
    with pytest.raises(fastrnn.UnsupportedError, match="self-attention"):
        f.stream(1)

    class Cross(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.mask = mask
            self.rnn = nn.GRU(5, 8, batch_first=True)
            self.att = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            out, _ = self.rnn(x)
            if self.mask:
                return self.att(out, out, out, key_padding_mask=x[:, :, 0] > 10)[0]
            return self.att(out, out * 2, out)[0]

    for mask, why in ((False, "attention between different tensors"), (True, "key_padding_mask")):
        with pytest.raises(fastrnn.UnsupportedError, match=why):
            fastrnn.convert(Cross(mask).eval(), example_input=torch.randn(3, 7, 5))


def test_a_learned_initial_state_starts_every_stream():
    """The learned h0 of LearnedHZeroC (a unidirectional LSTM) starts a Stream, a reset one and a
    StreamPool's slots: step t gives torch's output at step t of the whole sequence."""
    torch.manual_seed(3)
    m = LearnedHZeroC().eval()
    f = fastrnn.convert(m, example_input=_floats(B0, T0, 5, 0))
    assert "h0" in f.layers[0].weights[0] and "c0" not in f.layers[0].weights[0]
    x = _floats(B1, T1, 5, 4)
    want = _torch_out("floats", m, (x,))
    s = f.stream(B1)
    for _ in range(2):
        _close(np.stack([s.step(x[:, t].numpy()) for t in range(T1)], 1), want, "stream")
        s.reset()
    p = fastrnn.StreamPool(f, B1)
    slots = [p.open() for _ in range(B1)]
    _close(np.stack([p.step(slots, x[:, t].numpy()) for t in range(T1)], 1), want, "pool")


def test_constant_initial_states_that_are_not_one_row_are_refused():
    """A constant initial state that differs between rows (no learned state: a fixed batch) is
    refused, saying why."""
    class PerRow(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 5, batch_first=True)
            self.register_buffer("h0", torch.randn(1, 3, 5))

        def forward(self, x):
            return self.rnn(x, self.h0)[0]

    with pytest.raises(fastrnn.UnsupportedError, match="differs between the rows"):
        fastrnn.convert(PerRow().eval(), example_input=torch.randn(3, 6, 4))


def test_lengths_mask_after_a_non_causal_layer_is_refused():
    """Without packing, a bidirectional layer's valid steps depend on the padding: a mask of the
    steps before lengths is refused, saying why (predict with lengths would differ)."""
    class BiMasked(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(4, 5, batch_first=True, bidirectional=True)

        def forward(self, x, lengths):
            m = _valid(x, lengths).float().unsqueeze(-1)
            return (self.rnn(x)[0] * m).sum(1) / lengths[:, None]

    with pytest.raises(fastrnn.UnsupportedError, match="mask of the steps before lengths after Recurrent "
                                                       "bidirectional"):
        fastrnn.convert(BiMasked().eval(), example_input=[torch.randn(3, 6, 4), torch.tensor([6, 3, 2])])


def test_autoencoder_runs_the_inputs_steps():
    """A repeat by x.size(1) is a RepeatVector of the input's own steps (n 0): predict returns as
    many steps as it was given; a constant count stays that count; the module told the example's
    seq_len from x.size(1) (settle_repeats)."""
    ex = _floats(B0, T0, 5, 0)
    f = fastrnn.convert(AutoencoderRepeat().eval(), example_input=ex)
    assert [l.n for l in f.layers if isinstance(l, fastrnn.RepeatVector)] == [0]
    assert f.predict(_floats(2, 11, 5, 1).numpy()).shape == (2, 11, 5)
    with pytest.raises(fastrnn.FastRNNError, match="lengths"):
        f.predict(_floats(2, 11, 5, 1).numpy(), lengths=np.array([11, 3]))
    c = fastrnn.convert(AutoencoderRepeat("constant").eval(), example_input=ex)
    assert [l.n for l in c.layers if isinstance(l, fastrnn.RepeatVector)] == [4]
    s = fastrnn.convert(AutoencoderSeqLen().eval(), example_input=ex)
    assert [l.n for l in s.layers if isinstance(l, fastrnn.RepeatVector)] == [T0]
    assert s.predict(_floats(2, 11, 5, 1).numpy()).shape == (2, T0, 5)


def test_a_size_the_capture_fixed_is_checked_on_a_longer_input():
    """A sum divided by a constant that equals the example's length reads as the mean (above); when
    the module divides by that constant at every length, the longer input shows it and the
    conversion is refused instead of giving a wrong result."""
    class SumOverConstant(SumOverSize):
        def forward(self, x):
            out, _ = self.rnn(self.emb(x))
            return self.fc(torch.sum(out, dim=1) / T0)

    with pytest.raises(fastrnn.UnsupportedError, match="input larger than the example"):
        fastrnn.convert(SumOverConstant().eval(), example_input=_ids(B0, T0, 0))


_ARCHIVES = [(n, c) for n in ("highway_head", "autoencoder_repeat", "autoencoder_expand", "autoencoder_constant",
                              "sum_over_size", "horizon_view", "horizon_view_per_step", "learned_h0_expand",
                              "learned_h0_repeat", "learned_h_zero_c", "learned_h0_gru", "sorted_by_hand",
                              "sorted_by_hand_tagger", "pool_plus_final", "static_features", "final_beside_last_input",
                              "hand_self_attention", "sdpa_self_attention")
             for c in ("script", "trace")] + \
    [(n, "trace") for n in ("lengths_mask_mean", "lengths_mask_max", "lengths_mask_attention", "lengths_mask_packed",
                            "activations_head", "autoencoder_seq_len", "weight_norm_square_skip")]


@pytest.mark.parametrize("name, capture", _ARCHIVES)
def test_new_idioms_from_archives(name, capture, tmp_path):
    """The same idioms from TorchScript archives, compared with torch at another batch and length
    (a trace records x.size(1) as an op, so a repeat by it follows the input and a constant
    seq_len stays the constant). torch.jit.script refuses the activations head (F.hardtanh(y, 0,
    20): ints for floats), the autoencoder's class attribute and weight_norm's Parametrization;
    the masks call a Python helper (_valid), a function call the script capture does not inline."""
    _check_archive(name, capture, tmp_path)


def test_pack_by_counted_lengths():
    """Lengths counted from the padding id inside forward: predict counts them the same way
    (padded rows, other batch and length, saved and loaded); given lengths are used as given."""
    torch.manual_seed(4)
    m = PackByCount().eval()
    x = _ids(B0, T0, 0)
    x[1, 4:] = 0
    x[2, 1:] = 0
    f = fastrnn.convert(m, example_input=x)
    assert f.signature["lengths_pad"] == 0 and not f.meta["takes_lengths"]
    x = _ids(B1, T1, 1)
    x[0, 2:] = 0
    x[3, 7:] = 0
    with torch.no_grad():
        want = m(x).numpy()
    _close(f.predict(x.numpy()), want)
    _close(f.predict(x.numpy(), lengths=(x.numpy() != 0).sum(1)), want)
    back = fastrnn.Model(f.layers, meta=f.meta, signature=f.signature)
    _close(back.predict(x.numpy()), want)
    with pytest.raises(fastrnn.ModelFormatError, match="lengths_pad"):
        fastrnn.Model(f.layers, signature=dict(f.signature, lengths_pad=-1))


class ConvOnChannelsFirst(nn.Module):
    """A Conv1d on the model's own (N, C, T) input (Tacotron 2's encoder convolutions over
    (B, C, T), then transpose(1, 2) into a bidirectional LSTM)."""
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(6, 8, 5, padding=2)
        self.bn = nn.BatchNorm1d(8)
        self.rnn = nn.LSTM(8, 4, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        x = F.dropout(F.relu(self.bn(self.conv(x))), 0.5, self.training)
        out, _ = self.rnn(x.transpose(1, 2))
        return self.fc(out)


@pytest.mark.parametrize("source", ["module", "onnx_legacy", "onnx_dynamo"])
def test_conv_on_a_channels_first_input(source, tmp_path):
    """predict takes (B, T, C) as always (DESIGN section 1); the source's (B, C, T) is recorded
    for --check; the ONNX exports' run() takes the graph's own (B, C, T)."""
    import onnxruntime as ort
    from conftest import onnx_export
    torch.manual_seed(2)
    m = ConvOnChannelsFirst().eval()
    ex = torch.randn(B0, 6, T0)
    x = torch.randn(B1, 6, T1) if source != "onnx_dynamo" else torch.randn(B0, 6, T0)
    with torch.no_grad():
        want = m(x).numpy()
    if source == "module":
        f = fastrnn.convert(m, example_input=ex)
        assert f.meta["input_axes"] == ["B", "F", "T"]
        _close(f.predict(x.numpy().transpose(0, 2, 1)), want)
        return
    path = str(tmp_path / "m.onnx")
    onnx_export(m, (ex,), path, source == "onnx_dynamo", ("x",), {"x": {0: "b", 2: "t"}})
    f = fastrnn.convert(path)
    feeds = {ort.InferenceSession(path).get_inputs()[0].name: x.numpy()}
    _close(f.run(None, feeds)[0], want)


class UnbatchedWithState(nn.Module):
    """One (T, F) utterance viewed (T, 1, F) into a time-major bidirectional LSTM with an
    init_hidden() of batch one passed to forward, directions averaged by slices (a TIMIT phone
    recogniser from public code): an unbatched sequence, not a one-step module."""
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(5, H, num_layers=2, bidirectional=True)
        self.out = nn.Linear(H, 4)

    def init_hidden(self):
        return torch.zeros(4, 1, H), torch.zeros(4, 1, H)

    def forward(self, x, hidden):
        out, hidden = self.lstm(x.view(len(x), 1, -1), hidden)
        out = (out[:, :, :H] + out[:, :, H:]) / 2
        return F.log_softmax(self.out(out.view(out.size(0), -1)), dim=1)


def test_unbatched_sequence_with_a_state_argument():
    torch.manual_seed(6)
    m = UnbatchedWithState().eval()
    f = fastrnn.convert(m, example_input=[torch.randn(T0, 5), m.init_hidden()])
    assert f.meta["input_layout"] == "unbatched" and not f.meta.get("one_step")
    x = torch.randn(T1, 5)
    with torch.no_grad():
        want = m(x, m.init_hidden()).numpy()
    _close(f.predict(x.numpy()[None])[0], want)


class ConvThenPacked(ConvOnChannelsFirst):
    """Tacotron 2's encoder: convolutions (stride 1, padded to keep the steps) over the padded
    (B, C, T) input, then input_lengths.cpu().numpy() into pack_padded_sequence and a
    bidirectional LSTM, padded back."""
    def forward(self, x, input_lengths):
        x = F.dropout(F.relu(self.bn(self.conv(x))), 0.5, self.training).transpose(1, 2)
        input_lengths = input_lengths.cpu().numpy()
        x = nn.utils.rnn.pack_padded_sequence(x, input_lengths, batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(self.rnn(x)[0], batch_first=True)
        return self.fc(out)


def test_conv_before_a_packed_recurrence_takes_lengths():
    torch.manual_seed(3)
    m = ConvThenPacked().eval()
    f = fastrnn.convert(m, example_input=[torch.randn(B0, 6, T0), torch.tensor([T0, 5, 2])])
    x, lens = torch.randn(B1, 6, T1), torch.tensor([T1, 3, 8, 1])
    with torch.no_grad():
        want = m(x, lens).numpy()
    got = f.predict(x.numpy().transpose(0, 2, 1), lengths=lens.numpy())
    _close(got, want)


def test_repeat_of_a_step_taken_at_the_end_is_refused():
    """Each row's last valid step is taken at the pipeline's end (signature time): repeating it
    into a decoder is refused with a reason, not a malformed model."""
    class ValidLastRepeated(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.GRU(5, H, batch_first=True)
            self.dec = nn.GRU(H, H, batch_first=True)

        def forward(self, x, lengths):
            o, _ = self.enc(x)
            z = o[torch.arange(x.size(0)), lengths - 1].unsqueeze(1).repeat(1, x.size(1), 1)
            return self.dec(z)[0]

    with pytest.raises(fastrnn.UnsupportedError, match="repeat of a step the pipeline takes at its end"):
        fastrnn.convert(ValidLastRepeated().eval(), example_input=[torch.randn(3, 7, 5), torch.tensor([7, 5, 2])])
