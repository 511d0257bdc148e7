"""Real-world PyTorch recurrent models, re-typed from public code as test fixtures.

Each class reproduces the architecture and the forward idioms of the model named in its docstring
(official tutorials and examples, popular GitHub repositories, Kaggle kernels, blog posts): how it
builds h0, init_hidden, pack_padded_sequence with lengths, views and reshapes of outputs, heads,
log_softmax, dropout. Sizes are small (vocab <= 100, hidden <= 32) so the corpus runs fast; class
and attribute names follow the source where they do not clash.

CASES is the registry (corpus/README.md lists it with the idioms). A Case holds:
  name, source     an id and where the model comes from (URL, or repository + path)
  build()          the module (seeded; eval mode is set by the tests)
  inputs(model, batch, time, rng)
                   the arguments of forward exactly as the source calls it: a tuple like (x,),
                   (ids, lengths) or (x, model.init_hidden(batch)); for an "unbatched" case, one
                   sequence ((time,) ids or (time, F) floats) and `batch` is ignored; for a
                   "step" case, one step of the user's loop (batch 1 where the source is)
  kind             "sequence" | "step" (forward(x_t, hidden) -> (y_t, hidden), driven by a loop)
                   | "unbatched" (forward over one sequence)
  layout           axis order of forward's first argument: "batch_first", "time_major", or
                   "batch_feature_time" (N x F x T spectrogram features)
  output           layout of forward's first output: "BT" (batch-major, or no time axis but a
                   batch-major shape the source chose), "TB" (time-major), "B" (batch, features),
                   "TB_flat" ((T*B, F) of a time-major model), "BT_flat" ((B*T, F)), "state"
                   (an encoder returning h_n: (layers*dirs, B, H), torch's own layout)
  roles            what each forward argument is: "x", "lengths", "hidden"
  sorted_lengths   the source packs with enforce_sorted=True: lengths come sorted, longest first
  idioms           the idioms the case exercises (README table)
  reset(model)     re-initialises a stateful attribute before each sequence, as the source's loop does
  step cases: seq(batch, time, rng) the data the user's loop walks (batch-major arrays);
              init(model) its initial hidden (initHidden()); step(seq, b, t, hidden) the forward
              arguments of row b at step t; feed(seq, t) what stream.step() gets for all rows
  float_twin()     for a dynamically quantized case: the float model it was quantized from
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import autograd
from torch.autograd import Variable
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")   # as the sources write it

VOCAB = 40
EMB = 8
HID = 12


# ---------------------------------------------------------------------------------------------
# registry

@dataclass(frozen=True)
class Case:
    name: str
    source: str
    build: Callable[[], nn.Module]
    inputs: Callable
    kind: str = "sequence"
    layout: str = "batch_first"
    output: str = "BT"
    roles: tuple = ("x",)
    sorted_lengths: bool = False
    idioms: tuple = ()
    reset: Optional[Callable] = None
    seq: Optional[Callable] = None
    init: Optional[Callable] = None
    step: Optional[Callable] = None
    feed: Optional[Callable] = None
    float_twin: Optional[Callable] = None
    ids: bool = field(default=False)        # forward's x holds token ids


def _seeded(fn, seed=0):
    def build():
        torch.manual_seed(seed)
        m = fn()
        return m.eval()
    return build


# input helpers (torch tensors, as the sources' data loaders give them)

def ids_bt(rng, B, T, vocab=VOCAB):
    return torch.from_numpy(rng.integers(1, vocab, size=(B, T))).long()


def floats(rng, *shape, dtype=torch.float32):
    return torch.from_numpy(rng.standard_normal(shape).astype(np.float32)).to(dtype)


def onehot(rng, B, T, n):
    idx = rng.integers(0, n, size=(B, T))
    return torch.from_numpy(np.eye(n, dtype=np.float32)[idx])


def lengths_for(B, T, sorted_desc):
    """A mix of full and shorter rows (one is full, so pad_packed_sequence gives T steps); sorted
    longest first where the source packs with enforce_sorted=True, shuffled otherwise."""
    base = [T] + [max(1, T - 2 - 2 * i) for i in range(B - 1)]
    if not sorted_desc and B > 1:
        base = base[1:2] + base[:1] + base[2:]
    return torch.tensor(base, dtype=torch.int64)


def pad_after(ids, lengths, batch_first=True, pad=0):
    ids = ids.clone()
    for b, n in enumerate(lengths.tolist()):
        if batch_first:
            ids[b, n:] = pad
        else:
            ids[n:, b] = pad
    return ids


# =============================================================================================
# 1. PyTorch tutorials and examples
# =============================================================================================

class TutCharRNNStep(nn.Module):
    """`RNN` of the NLP From Scratch: Classifying Names with a Character-Level RNN tutorial
    (pytorch/tutorials intermediate_source/char_rnn_classification_tutorial.py, before the 2024
    rewrite): two Linear layers over cat(input, hidden), LogSoftmax, initHidden() with Variable;
    the user loop `for i in range(line_tensor.size()[0]): output, hidden = rnn(line_tensor[i], hidden)`."""

    def __init__(self, input_size, hidden_size, output_size):
        super(TutCharRNNStep, self).__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        combined = torch.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        output = self.i2o(combined)
        output = self.softmax(output)
        return output, hidden

    def initHidden(self):
        return Variable(torch.zeros(1, self.hidden_size))


class TutCharRNN(nn.Module):
    """`CharRNN` of the same tutorial after its 2024 rewrite (pytorch/tutorials
    intermediate_source/char_rnn_classification_tutorial.py): nn.RNN over a time-major one-hot
    line tensor (T, B, n_letters), h2o(hidden[0]), LogSoftmax(dim=1)."""

    def __init__(self, input_size, hidden_size, output_size):
        super(TutCharRNN, self).__init__()
        self.rnn = nn.RNN(input_size, hidden_size)
        self.h2o = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, line_tensor):
        rnn_out, hidden = self.rnn(line_tensor)
        output = self.h2o(hidden[0])
        output = self.softmax(output)
        return output


class TutCharRNNGenerator(nn.Module):
    """`RNN` of NLP From Scratch: Generating Names with a Character-Level RNN
    (pytorch/tutorials intermediate_source/char_rnn_generation_tutorial.py):
    forward(category, input, hidden) with i2h / i2o / o2o, dropout and LogSoftmax; the sampling
    loop feeds one letter per step with the category fixed."""

    def __init__(self, n_categories, input_size, hidden_size, output_size):
        super(TutCharRNNGenerator, self).__init__()
        self.hidden_size = hidden_size
        self.i2h = nn.Linear(n_categories + input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(n_categories + input_size + hidden_size, output_size)
        self.o2o = nn.Linear(hidden_size + output_size, output_size)
        self.dropout = nn.Dropout(0.1)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, category, input, hidden):
        input_combined = torch.cat((category, input, hidden), 1)
        hidden = self.i2h(input_combined)
        output = self.i2o(input_combined)
        output_combined = torch.cat((hidden, output), 1)
        output = self.o2o(output_combined)
        output = self.dropout(output)
        output = self.softmax(output)
        return output, hidden

    def initHidden(self):
        return torch.zeros(1, self.hidden_size)


class RNNModel(nn.Module):
    """`RNNModel` of pytorch/examples word_language_model/model.py: Embedding -> LSTM / GRU /
    RNN_TANH / RNN_RELU (time-major, nlayers, dropout) -> Linear decoder, optional tied weights;
    forward(input, hidden) returns F.log_softmax(decoded.view(-1, ntoken), dim=1) ((T*B, ntoken))
    and hidden; init_hidden(bsz) builds zeros with weight.new_zeros."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super(RNNModel, self).__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ['LSTM', 'GRU']:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError('When using the tied flag, nhid must be equal to emsize')
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == 'LSTM':
            return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                    weight.new_zeros(self.nlayers, bsz, self.nhid))
        else:
            return weight.new_zeros(self.nlayers, bsz, self.nhid)


class LSTMModel(nn.Module):
    """`LSTMModel` of the (beta) Dynamic Quantization on an LSTM Word Language Model tutorial
    (pytorch/tutorials advanced_source/dynamic_quantization_tutorial.py), quantized with
    torch.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8);
    forward(input, hidden) returns (decoded (T, B, ntoken), hidden)."""

    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.5):
        super(LSTMModel, self).__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.init_weights()
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        self.encoder.weight.data.uniform_(-initrange, initrange)
        self.decoder.bias.data.zero_()
        self.decoder.weight.data.uniform_(-initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        return decoded, hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                weight.new_zeros(self.nlayers, bsz, self.nhid))


def _quantized_lstm_lm():
    model = LSTMModel(ntoken=VOCAB, ninp=EMB, nhid=HID, nlayers=2)
    model.eval()
    return torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)


class LSTMTagger(nn.Module):
    """`LSTMTagger` of Sequence Models and Long Short-Term Memory Networks (pytorch/tutorials
    beginner_source/nlp/sequence_models_tutorial.py): one unbatched sentence of word ids,
    embeds.view(len(sentence), 1, -1), lstm_out.view(len(sentence), -1), log_softmax(dim=1)."""

    def __init__(self, embedding_dim, hidden_dim, vocab_size, tagset_size):
        super(LSTMTagger, self).__init__()
        self.hidden_dim = hidden_dim
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim)
        self.hidden2tag = nn.Linear(hidden_dim, tagset_size)

    def forward(self, sentence):
        embeds = self.word_embeddings(sentence)
        lstm_out, _ = self.lstm(embeds.view(len(sentence), 1, -1))
        tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
        tag_scores = F.log_softmax(tag_space, dim=1)
        return tag_scores


class LSTMTaggerLegacy(nn.Module):
    """The same tutorial's earlier `LSTMTagger` (pytorch/tutorials
    beginner_source/nlp/sequence_models_tutorial.py, 2017 versions): the hidden state is a module
    attribute, self.hidden = self.init_hidden() of autograd.Variable zeros, reset by the training
    loop (`model.hidden = model.init_hidden()`) before each sentence; log_softmax without dim."""

    def __init__(self, embedding_dim, hidden_dim, vocab_size, tagset_size):
        super(LSTMTaggerLegacy, self).__init__()
        self.hidden_dim = hidden_dim
        self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim)
        self.hidden2tag = nn.Linear(hidden_dim, tagset_size)
        self.hidden = self.init_hidden()

    def init_hidden(self):
        return (autograd.Variable(torch.zeros(1, 1, self.hidden_dim)),
                autograd.Variable(torch.zeros(1, 1, self.hidden_dim)))

    def forward(self, sentence):
        embeds = self.word_embeddings(sentence)
        lstm_out, self.hidden = self.lstm(
            embeds.view(len(sentence), 1, -1), self.hidden)
        tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
        tag_scores = F.log_softmax(tag_space, dim=1)   # the 2017 source omits dim (implicit 1 for 2-D)
        return tag_scores


class EncoderRNNStep(nn.Module):
    """`EncoderRNN` of NLP From Scratch: Translation with a Sequence to Sequence Network and
    Attention (pytorch/tutorials intermediate_source/seq2seq_translation_tutorial.py, before the
    2023 rewrite): one word per call, embedding(input).view(1, 1, -1), GRU, initHidden() on
    `device`; the user loop `encoder(input_tensor[ei], encoder_hidden)`."""

    def __init__(self, input_size, hidden_size):
        super(EncoderRNNStep, self).__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size)

    def forward(self, input, hidden):
        embedded = self.embedding(input).view(1, 1, -1)
        output = embedded
        output, hidden = self.gru(output, hidden)
        return output, hidden

    def initHidden(self):
        return torch.zeros(1, 1, self.hidden_size, device=device)


class DecoderRNNStep(nn.Module):
    """`DecoderRNN` (the simple decoder) of the same tutorial (pre-2023): one token per call,
    embedding(input).view(1, 1, -1), F.relu, GRU, LogSoftmax(out(output[0]))."""

    def __init__(self, hidden_size, output_size):
        super(DecoderRNNStep, self).__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size)
        self.out = nn.Linear(hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        output = self.embedding(input).view(1, 1, -1)
        output = F.relu(output)
        output, hidden = self.gru(output, hidden)
        output = self.softmax(self.out(output[0]))
        return output, hidden

    def initHidden(self):
        return torch.zeros(1, 1, self.hidden_size, device=device)


class EncoderRNN(nn.Module):
    """`EncoderRNN` of the same tutorial after its 2023 rewrite (pytorch/tutorials
    intermediate_source/seq2seq_translation_tutorial.py): batch_first GRU over dropout(embedding),
    returns (output, hidden)."""

    def __init__(self, input_size, hidden_size, dropout_p=0.1):
        super(EncoderRNN, self).__init__()
        self.hidden_size = hidden_size
        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input):
        embedded = self.dropout(self.embedding(input))
        output, hidden = self.gru(embedded)
        return output, hidden


class Sequence(nn.Module):
    """`Sequence` of pytorch/examples time_sequence_prediction/train.py: two nn.LSTMCell in a Python
    loop over input.split(1, dim=1), zeros made in forward (dtype=torch.double, .to(device) of a
    dummy parameter), optional `future` argument, torch.cat(outputs, dim=1); the model is .double()."""

    def __init__(self):
        super(Sequence, self).__init__()
        self.lstm1 = nn.LSTMCell(1, 16)
        self.lstm2 = nn.LSTMCell(16, 16)
        self.linear = nn.Linear(16, 1)
        self.dummy_param = nn.Parameter(torch.empty(0))

    def forward(self, input, future=0):
        outputs = []
        device = self.dummy_param.device
        h_t = torch.zeros(input.size(0), 16, dtype=torch.double).to(device)
        c_t = torch.zeros(input.size(0), 16, dtype=torch.double).to(device)
        h_t2 = torch.zeros(input.size(0), 16, dtype=torch.double).to(device)
        c_t2 = torch.zeros(input.size(0), 16, dtype=torch.double).to(device)

        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for i in range(future):  # if we should predict the future
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        outputs = torch.cat(outputs, dim=1)
        return outputs


# =============================================================================================
# 2. Popular repositories
# =============================================================================================

class BentrevettRNN(nn.Module):
    """`RNN` of bentrevett/pytorch-sentiment-analysis legacy/1 - Simple Sentiment Analysis.ipynb:
    time-major ids [sent len, batch], nn.RNN, the notebook's
    `assert torch.equal(output[-1,:,:], hidden.squeeze(0))`, fc(hidden.squeeze(0))."""

    def __init__(self, input_dim, embedding_dim, hidden_dim, output_dim):
        super().__init__()
        self.embedding = nn.Embedding(input_dim, embedding_dim)
        self.rnn = nn.RNN(embedding_dim, hidden_dim)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, text):
        embedded = self.embedding(text)
        output, hidden = self.rnn(embedded)
        assert torch.equal(output[-1, :, :], hidden.squeeze(0))
        return self.fc(hidden.squeeze(0))


class BentrevettPackedBiLSTM(nn.Module):
    """`RNN` of bentrevett/pytorch-sentiment-analysis legacy/2 - Upgraded Sentiment Analysis.ipynb:
    time-major, padding_idx, 2-layer bidirectional LSTM over
    pack_padded_sequence(embedded, text_lengths.to('cpu')) (sorted batches), pad_packed_sequence
    (unused), dropout(torch.cat((hidden[-2,:,:], hidden[-1,:,:]), dim = 1)), fc."""

    def __init__(self, vocab_size, embedding_dim, hidden_dim, output_dim, n_layers,
                 bidirectional, dropout, pad_idx):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_idx)
        self.rnn = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers,
                           bidirectional=bidirectional, dropout=dropout)
        self.fc = nn.Linear(hidden_dim * 2, output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text, text_lengths):
        embedded = self.dropout(self.embedding(text))
        packed_embedded = nn.utils.rnn.pack_padded_sequence(embedded, text_lengths.to('cpu'))
        packed_output, (hidden, cell) = self.rnn(packed_embedded)
        output, output_lengths = nn.utils.rnn.pad_packed_sequence(packed_output)
        hidden = self.dropout(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))
        return self.fc(hidden)


class BentrevettLSTM(nn.Module):
    """`LSTM` of bentrevett/pytorch-sentiment-analysis "2 - Recurrent Neural Networks.ipynb" (2023):
    batch_first, pack_padded_sequence(embedded, length, batch_first=True, enforce_sorted=False),
    `if self.lstm.bidirectional:` torch.cat([hidden[-1], hidden[-2]], dim=-1), dropout, fc."""

    def __init__(self, vocab_size, embedding_dim, hidden_dim, output_dim, n_layers, bidirectional,
                 dropout_rate, pad_index):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, n_layers, bidirectional=bidirectional,
                            dropout=dropout_rate, batch_first=True)
        self.fc = nn.Linear(hidden_dim * 2 if bidirectional else hidden_dim, output_dim)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, ids, length):
        embedded = self.dropout(self.embedding(ids))
        packed_embedded = nn.utils.rnn.pack_padded_sequence(
            embedded, length, batch_first=True, enforce_sorted=False)
        packed_output, (hidden, cell) = self.lstm(packed_embedded)
        output, output_length = nn.utils.rnn.pad_packed_sequence(packed_output)
        if self.lstm.bidirectional:
            hidden = self.dropout(torch.cat([hidden[-1], hidden[-2]], dim=-1))
        else:
            hidden = self.dropout(hidden[-1])
        prediction = self.fc(hidden)
        return prediction


class Seq2SeqEncoder(nn.Module):
    """`Encoder` of bentrevett/pytorch-seq2seq 1 - Sequence to Sequence Learning with Neural
    Networks: time-major src, dropout(embedding), multi-layer LSTM, returns (hidden, cell)."""

    def __init__(self, input_dim, emb_dim, hid_dim, n_layers, dropout):
        super().__init__()
        self.hid_dim = hid_dim
        self.n_layers = n_layers
        self.embedding = nn.Embedding(input_dim, emb_dim)
        self.rnn = nn.LSTM(emb_dim, hid_dim, n_layers, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src):
        embedded = self.dropout(self.embedding(src))
        outputs, (hidden, cell) = self.rnn(embedded)
        return hidden, cell


class Seq2SeqPackedEncoder(nn.Module):
    """`Encoder` of bentrevett/pytorch-seq2seq 4 - Packed Padded Sequences, Masking, Inference and
    BLEU: bidirectional GRU over pack_padded_sequence(embedded, src_len.to('cpu')) (batches sorted
    by length), pad_packed_sequence, hidden = torch.tanh(self.fc(torch.cat((hidden[-2,:,:],
    hidden[-1,:,:]), dim = 1))); returns (outputs, hidden)."""

    def __init__(self, input_dim, emb_dim, enc_hid_dim, dec_hid_dim, dropout):
        super().__init__()
        self.embedding = nn.Embedding(input_dim, emb_dim)
        self.rnn = nn.GRU(emb_dim, enc_hid_dim, bidirectional=True)
        self.fc = nn.Linear(enc_hid_dim * 2, dec_hid_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, src_len):
        embedded = self.dropout(self.embedding(src))
        packed_embedded = nn.utils.rnn.pack_padded_sequence(embedded, src_len.to('cpu'))
        packed_outputs, hidden = self.rnn(packed_embedded)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(packed_outputs)
        hidden = torch.tanh(self.fc(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1)))
        return outputs, hidden


class ChatbotEncoderRNN(nn.Module):
    """`EncoderRNN` of the PyTorch chatbot tutorial (beginner_source/chatbot_tutorial.py): an
    embedding shared with the decoder passed in, a bidirectional GRU over
    pack_padded_sequence(embedded, input_lengths) (batches sorted by length), pad_packed_sequence,
    the two directions summed with outputs[:, :, :self.hidden_size] + outputs[:, :, self.hidden_size:];
    forward(input_seq, input_lengths, hidden=None) returns (outputs, hidden)."""

    def __init__(self, hidden_size, embedding, n_layers=1, dropout=0):
        super(ChatbotEncoderRNN, self).__init__()
        self.n_layers = n_layers
        self.hidden_size = hidden_size
        self.embedding = embedding
        self.gru = nn.GRU(hidden_size, hidden_size, n_layers,
                          dropout=(0 if n_layers == 1 else dropout), bidirectional=True)

    def forward(self, input_seq, input_lengths, hidden=None):
        embedded = self.embedding(input_seq)
        packed = nn.utils.rnn.pack_padded_sequence(embedded, input_lengths.cpu())
        outputs, hidden = self.gru(packed, hidden)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs)
        outputs = outputs[:, :, :self.hidden_size] + outputs[:, :, self.hidden_size:]
        return outputs, hidden


class BiLSTMPOSTagger(nn.Module):
    """`BiLSTMPOSTagger` of bentrevett/pytorch-pos-tagging 1 - BiLSTM for PoS Tagging: time-major
    text, 2-layer bidirectional LSTM, fc(dropout(outputs)) per token ([sent len, batch, tags])."""

    def __init__(self, input_dim, embedding_dim, hidden_dim, output_dim, n_layers, bidirectional,
                 dropout, pad_idx):
        super().__init__()
        self.embedding = nn.Embedding(input_dim, embedding_dim, padding_idx=pad_idx)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers, bidirectional=bidirectional,
                            dropout=dropout if n_layers > 1 else 0)
        self.fc = nn.Linear(hidden_dim * 2 if bidirectional else hidden_dim, output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text):
        embedded = self.dropout(self.embedding(text))
        outputs, (hidden, cell) = self.lstm(embedded)
        predictions = self.fc(self.dropout(outputs))
        return predictions


class SpeakerEncoder(nn.Module):
    """`SpeakerEncoder` of CorentinJ/Real-Time-Voice-Cloning (encoder/model.py, GE2E speaker
    verification): a 3-layer LSTM over mel frames, forward(utterances, hidden_init=None),
    relu(linear(hidden[-1])), then L2-normalised: embeds_raw / (torch.norm(embeds_raw, dim=1,
    keepdim=True) + 1e-5). The loss parameters are moved with .to(loss_device) as the source does."""

    def __init__(self, device, loss_device, mel_n_channels=10, model_hidden_size=HID, model_num_layers=3,
                 model_embedding_size=HID):
        super().__init__()
        self.loss_device = loss_device
        self.lstm = nn.LSTM(input_size=mel_n_channels, hidden_size=model_hidden_size,
                            num_layers=model_num_layers, batch_first=True).to(device)
        self.linear = nn.Linear(in_features=model_hidden_size, out_features=model_embedding_size).to(device)
        self.relu = torch.nn.ReLU().to(device)
        self.similarity_weight = nn.Parameter(torch.tensor([10.])).to(loss_device)
        self.similarity_bias = nn.Parameter(torch.tensor([-5.])).to(loss_device)
        self.loss_fn = nn.CrossEntropyLoss().to(loss_device)

    def forward(self, utterances, hidden_init=None):
        out, (hidden, cell) = self.lstm(utterances, hidden_init)
        embeds_raw = self.relu(self.linear(hidden[-1]))
        embeds = embeds_raw / (torch.norm(embeds_raw, dim=1, keepdim=True) + 1e-5)
        return embeds


class ResemblyzerVoiceEncoder(nn.Module):
    """`VoiceEncoder` of resemble-ai/Resemblyzer (resemblyzer/voice_encoder.py): LSTM over mel
    frames, _, (hidden, _) = self.lstm(mels), relu(linear(hidden[-1])), divided by its
    torch.norm(dim=1, keepdim=True) (no epsilon)."""

    def __init__(self, mel_n_channels=10, model_hidden_size=HID, model_num_layers=3, model_embedding_size=HID):
        super().__init__()
        self.lstm = nn.LSTM(mel_n_channels, model_hidden_size, model_num_layers, batch_first=True)
        self.linear = nn.Linear(model_hidden_size, model_embedding_size)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.FloatTensor):
        _, (hidden, _) = self.lstm(mels)
        embeds_raw = self.relu(self.linear(hidden[-1]))
        return embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)


class YunjeyRNN(nn.Module):
    """`RNN` of yunjey/pytorch-tutorial tutorials/02-intermediate/recurrent_neural_network/main.py:
    h0/c0 = torch.zeros(num_layers, x.size(0), hidden_size).to(device), fc(out[:, -1, :])."""

    def __init__(self, input_size, hidden_size, num_layers, num_classes):
        super(YunjeyRNN, self).__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)
        c0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)
        out, _ = self.lstm(x, (h0, c0))
        out = self.fc(out[:, -1, :])
        return out


class YunjeyBiRNN(nn.Module):
    """`BiRNN` of yunjey/pytorch-tutorial
    tutorials/02-intermediate/bidirectional_recurrent_neural_network/main.py: h0 of
    num_layers*2 rows, bidirectional LSTM, fc(out[:, -1, :]) of width hidden_size*2."""

    def __init__(self, input_size, hidden_size, num_layers, num_classes):
        super(YunjeyBiRNN, self).__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(hidden_size * 2, num_classes)

    def forward(self, x):
        h0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size).to(device)
        c0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size).to(device)
        out, _ = self.lstm(x, (h0, c0))
        out = self.fc(out[:, -1, :])
        return out


class MorvanRNNClassifier(nn.Module):
    """`RNN` of MorvanZhou/PyTorch-Tutorial tutorial-contents/402_RNN_classifier.py:
    r_out, (h_n, h_c) = self.rnn(x, None); self.out(r_out[:, -1, :])."""

    def __init__(self, input_size=8, hidden=16, classes=10):
        super(MorvanRNNClassifier, self).__init__()
        self.rnn = nn.LSTM(input_size=input_size, hidden_size=hidden, num_layers=1, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        r_out, (h_n, h_c) = self.rnn(x, None)   # None represents zero initial hidden state
        out = self.out(r_out[:, -1, :])
        return out


class MorvanRNNRegressor(nn.Module):
    """`RNN` of MorvanZhou/PyTorch-Tutorial tutorial-contents/403_RNN_regressor.py:
    forward(x, h_state) (None on the first call, then the returned state), a Python loop applying
    self.out to r_out[:, time_step, :], torch.stack(outs, dim=1); returns (outs, h_state)."""

    def __init__(self, input_size=1, hidden=16):
        super(MorvanRNNRegressor, self).__init__()
        self.rnn = nn.RNN(input_size=input_size, hidden_size=hidden, num_layers=1, batch_first=True)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x, h_state):
        r_out, h_state = self.rnn(x, h_state)
        outs = []
        for time_step in range(r_out.size(1)):
            outs.append(self.out(r_out[:, time_step, :]))
        return torch.stack(outs, dim=1), h_state


class SproCharRNN(nn.Module):
    """`CharRNN` of spro/char-rnn.pytorch model.py: one character per call (input (batch,) ids),
    batch_size = input.size(0), self.rnn(encoded.view(1, batch_size, -1), hidden),
    decoder(output.view(batch_size, -1)); init_hidden(batch_size) of Variable zeros ("lstm")."""

    def __init__(self, input_size, hidden_size, output_size, model="gru", n_layers=1):
        super(SproCharRNN, self).__init__()
        self.model = model.lower()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.n_layers = n_layers
        self.encoder = nn.Embedding(input_size, hidden_size)
        if self.model == "gru":
            self.rnn = nn.GRU(hidden_size, hidden_size, n_layers)
        elif self.model == "lstm":
            self.rnn = nn.LSTM(hidden_size, hidden_size, n_layers)
        self.decoder = nn.Linear(hidden_size, output_size)

    def forward(self, input, hidden):
        batch_size = input.size(0)
        encoded = self.encoder(input)
        output, hidden = self.rnn(encoded.view(1, batch_size, -1), hidden)
        output = self.decoder(output.view(batch_size, -1))
        return output, hidden

    def init_hidden(self, batch_size):
        if self.model == "lstm":
            return (Variable(torch.zeros(self.n_layers, batch_size, self.hidden_size)),
                    Variable(torch.zeros(self.n_layers, batch_size, self.hidden_size)))
        return Variable(torch.zeros(self.n_layers, batch_size, self.hidden_size))


class LuoBiLSTM(nn.Module):
    """`BiLSTM` of luopeixiang/named_entity_recognition models/bilstm.py: batch_first, sorted
    batches, pack_padded_sequence(emb, lengths, batch_first=True), pad_packed_sequence(...,
    batch_first=True), lin(rnn_out) per token."""

    def __init__(self, vocab_size, emb_size, hidden_size, out_size):
        super(LuoBiLSTM, self).__init__()
        self.embedding = nn.Embedding(vocab_size, emb_size)
        self.bilstm = nn.LSTM(emb_size, hidden_size, batch_first=True, bidirectional=True)
        self.lin = nn.Linear(2 * hidden_size, out_size)

    def forward(self, sents_tensor, lengths):
        emb = self.embedding(sents_tensor)  # [B, L, emb_size]
        packed = pack_padded_sequence(emb, lengths, batch_first=True)
        rnn_out, _ = self.bilstm(packed)
        rnn_out, _ = pad_packed_sequence(rnn_out, batch_first=True)
        scores = self.lin(rnn_out)  # [B, L, out_size]
        return scores


class DLWizardLSTM(nn.Module):
    """`LSTMModel` of deeplearningwizard.com Long Short-Term Memory Neural Networks (LSTM)
    (https://www.deeplearningwizard.com/deep_learning/practical_pytorch/pytorch_lstm_neuralnetwork/):
    h0 = torch.zeros(layer_dim, x.size(0), hidden_dim).requires_grad_(), lstm(x, (h0.detach(),
    c0.detach())), fc(out[:, -1, :])."""

    def __init__(self, input_dim, hidden_dim, layer_dim, output_dim):
        super(DLWizardLSTM, self).__init__()
        self.hidden_dim = hidden_dim
        self.layer_dim = layer_dim
        self.lstm = nn.LSTM(input_dim, hidden_dim, layer_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        h0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
        c0 = torch.zeros(self.layer_dim, x.size(0), self.hidden_dim).requires_grad_()
        out, (hn, cn) = self.lstm(x, (h0.detach(), c0.detach()))
        out = self.fc(out[:, -1, :])
        return out


class DLWizardRNN(nn.Module):
    """`RNNModel` of deeplearningwizard.com Recurrent Neural Network with PyTorch (the 2017 edition,
    https://www.deeplearningwizard.com/deep_learning/practical_pytorch/pytorch_recurrent_neuralnetwork/):
    nn.RNN(..., nonlinearity='relu'), h0 = Variable(torch.zeros(layer_dim, x.size(0), hidden_dim)),
    fc(out[:, -1, :])."""

    def __init__(self, input_dim, hidden_dim, layer_dim, output_dim):
        super(DLWizardRNN, self).__init__()
        self.hidden_dim = hidden_dim
        self.layer_dim = layer_dim
        self.rnn = nn.RNN(input_dim, hidden_dim, layer_dim, batch_first=True, nonlinearity='relu')
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        h0 = Variable(torch.zeros(self.layer_dim, x.size(0), self.hidden_dim))
        out, hn = self.rnn(x, h0)
        out = self.fc(out[:, -1, :])
        return out


class KaggleStockGRU(nn.Module):
    """`GRU` of the Kaggle kernel Stock Prediction: LSTM & GRU (Taron Zakaryan,
    https://www.kaggle.com/code/taronzakaryan/predicting-stock-price-using-lstm-model-pytorch):
    h0 = torch.zeros(...).requires_grad_(), out, (hn) = self.gru(x, (h0.detach())), fc(out[:, -1, :])."""

    def __init__(self, input_dim, hidden_dim, num_layers, output_dim):
        super(KaggleStockGRU, self).__init__()
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.gru = nn.GRU(input_dim, hidden_dim, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_dim).requires_grad_()
        out, (hn) = self.gru(x, (h0.detach()))
        out = self.fc(out[:, -1, :])
        return out


class AirModel(nn.Module):
    """`AirModel` of machinelearningmastery.com LSTM for Time Series Prediction in PyTorch
    (https://machinelearningmastery.com/lstm-for-time-series-prediction-in-pytorch/): batch_first
    LSTM, a Linear on every step: x, _ = self.lstm(x); x = self.linear(x)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(input_size=1, hidden_size=16, num_layers=1, batch_first=True)
        self.linear = nn.Linear(16, 1)

    def forward(self, x):
        x, _ = self.lstm(x)
        x = self.linear(x)
        return x


class StackAbuseLSTM(nn.Module):
    """`LSTM` of stackabuse.com Time Series Prediction using LSTM with PyTorch in Python
    (https://stackabuse.com/time-series-prediction-using-lstm-with-pytorch-in-python/): one
    unbatched (T,) series, self.hidden_cell held on the module and reset by the loop,
    input_seq.view(len(input_seq), 1, -1), predictions[-1]."""

    def __init__(self, input_size=1, hidden_layer_size=16, output_size=1):
        super().__init__()
        self.hidden_layer_size = hidden_layer_size
        self.lstm = nn.LSTM(input_size, hidden_layer_size)
        self.linear = nn.Linear(hidden_layer_size, output_size)
        self.hidden_cell = (torch.zeros(1, 1, self.hidden_layer_size),
                            torch.zeros(1, 1, self.hidden_layer_size))

    def forward(self, input_seq):
        lstm_out, self.hidden_cell = self.lstm(input_seq.view(len(input_seq), 1, -1), self.hidden_cell)
        predictions = self.linear(lstm_out.view(len(input_seq), -1))
        return predictions[-1]


class SpatialDropout(nn.Dropout2d):
    """SpatialDropout of the Jigsaw kernel below: Dropout2d over (N, K, 1, T) via unsqueeze/permute."""

    def forward(self, x):
        x = x.unsqueeze(2)    # (N, T, 1, K)
        x = x.permute(0, 3, 2, 1)  # (N, K, 1, T)
        x = super(SpatialDropout, self).forward(x)  # (N, K, 1, T), some features are masked
        x = x.permute(0, 3, 2, 1)  # (N, T, 1, K)
        x = x.squeeze(2)  # (N, T, K)
        return x


class JigsawNeuralNet(nn.Module):
    """`NeuralNet` of the Kaggle kernel Simple LSTM - PyTorch version (Benjamin Minixhofer, Jigsaw
    Unintended Bias in Toxicity Classification,
    https://www.kaggle.com/code/bminixhofer/simple-lstm-pytorch-version): SpatialDropout, two
    bidirectional LSTMs, torch.mean / torch.max pooling over time, h_conc + relu(linear1) +
    relu(linear2) residual, torch.cat([result, aux_result], 1)."""

    def __init__(self, max_features, embed_size, num_aux_targets, LSTM_UNITS=8):
        super(JigsawNeuralNet, self).__init__()
        DENSE_HIDDEN_UNITS = 4 * LSTM_UNITS
        self.embedding = nn.Embedding(max_features, embed_size)
        self.embedding_dropout = SpatialDropout(0.3)
        self.lstm1 = nn.LSTM(embed_size, LSTM_UNITS, bidirectional=True, batch_first=True)
        self.lstm2 = nn.LSTM(LSTM_UNITS * 2, LSTM_UNITS, bidirectional=True, batch_first=True)
        self.linear1 = nn.Linear(DENSE_HIDDEN_UNITS, DENSE_HIDDEN_UNITS)
        self.linear2 = nn.Linear(DENSE_HIDDEN_UNITS, DENSE_HIDDEN_UNITS)
        self.linear_out = nn.Linear(DENSE_HIDDEN_UNITS, 1)
        self.linear_aux_out = nn.Linear(DENSE_HIDDEN_UNITS, num_aux_targets)

    def forward(self, x):
        h_embedding = self.embedding(x)
        h_embedding = self.embedding_dropout(h_embedding)
        h_lstm1, _ = self.lstm1(h_embedding)
        h_lstm2, _ = self.lstm2(h_lstm1)
        # global average pooling
        avg_pool = torch.mean(h_lstm2, 1)
        # global max pooling
        max_pool, _ = torch.max(h_lstm2, 1)
        h_conc = torch.cat((max_pool, avg_pool), 1)
        h_conc_linear1 = F.relu(self.linear1(h_conc))
        h_conc_linear2 = F.relu(self.linear2(h_conc))
        hidden = h_conc + h_conc_linear1 + h_conc_linear2
        result = self.linear_out(hidden)
        aux_result = self.linear_aux_out(hidden)
        out = torch.cat([result, aux_result], 1)
        return out


class QuoraNeuralNet(nn.Module):
    """`NeuralNet` of the Kaggle kernel PyTorch starter (Benjamin Minixhofer, Quora Insincere
    Questions Classification, https://www.kaggle.com/code/bminixhofer/deterministic-neural-networks-using-pytorch),
    without its two attention branches: torch.squeeze(Dropout2d(torch.unsqueeze(h_embedding, 0))),
    bidirectional LSTM -> bidirectional GRU, torch.mean / torch.max pooling, relu(linear), dropout, out."""

    def __init__(self, max_features, embed_size, hidden_size=8):
        super(QuoraNeuralNet, self).__init__()
        self.embedding = nn.Embedding(max_features, embed_size)
        self.embedding_dropout = nn.Dropout2d(0.1)
        self.lstm = nn.LSTM(embed_size, hidden_size, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(hidden_size * 2, hidden_size, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(hidden_size * 4, 16)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        h_embedding = self.embedding(x)
        h_embedding = torch.squeeze(self.embedding_dropout(torch.unsqueeze(h_embedding, 0)))
        h_lstm, _ = self.lstm(h_embedding)
        h_gru, _ = self.gru(h_lstm)
        avg_pool = torch.mean(h_gru, 1)
        max_pool, _ = torch.max(h_gru, 1)
        conc = torch.cat((avg_pool, max_pool), 1)
        conc = self.relu(self.linear(conc))
        conc = self.dropout(conc)
        out = self.out(conc)
        return out


class QuoraAttention(nn.Module):
    """`Attention` of the same Kaggle kernel (and of many Quora / Jigsaw kernels after it): a
    score per step torch.mm(x.view(-1, feature_dim), weight).view(-1, step_dim), a bias per
    position, tanh, exp, divided by its sum over time plus 1e-10, x * a.unsqueeze(-1) summed."""

    def __init__(self, feature_dim, step_dim, bias=True, **kwargs):
        super(QuoraAttention, self).__init__(**kwargs)
        self.supports_masking = True
        self.bias = bias
        self.feature_dim = feature_dim
        self.step_dim = step_dim
        self.features_dim = 0
        weight = torch.zeros(feature_dim, 1)
        nn.init.xavier_uniform_(weight)
        self.weight = nn.Parameter(weight)
        if bias:
            self.b = nn.Parameter(torch.zeros(step_dim))

    def forward(self, x, mask=None):
        feature_dim = self.feature_dim
        step_dim = self.step_dim
        eij = torch.mm(x.contiguous().view(-1, feature_dim), self.weight).view(-1, step_dim)
        if self.bias:
            eij = eij + self.b
        eij = torch.tanh(eij)
        a = torch.exp(eij)
        if mask is not None:
            a = a * mask
        a = a / torch.sum(a, 1, keepdim=True) + 1e-10
        weighted_input = x * torch.unsqueeze(a, -1)
        return torch.sum(weighted_input, 1)


class QuoraAttentionNet(nn.Module):
    """`NeuralNet` of the Kaggle kernel above with its two attention branches: the LSTM's output
    attended beside the GRU that reads it, the GRU's output attended, mean and max pooled."""

    def __init__(self, max_features, embed_size, maxlen, hidden_size=8):
        super(QuoraAttentionNet, self).__init__()
        self.embedding = nn.Embedding(max_features, embed_size)
        self.embedding_dropout = nn.Dropout2d(0.1)
        self.lstm = nn.LSTM(embed_size, hidden_size, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(hidden_size * 2, hidden_size, bidirectional=True, batch_first=True)
        self.lstm_attention = QuoraAttention(hidden_size * 2, maxlen)
        self.gru_attention = QuoraAttention(hidden_size * 2, maxlen)
        self.linear = nn.Linear(hidden_size * 8, 16)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        h_embedding = self.embedding(x)
        h_embedding = torch.squeeze(self.embedding_dropout(torch.unsqueeze(h_embedding, 0)))
        h_lstm, _ = self.lstm(h_embedding)
        h_gru, _ = self.gru(h_lstm)
        h_lstm_atten = self.lstm_attention(h_lstm)
        h_gru_atten = self.gru_attention(h_gru)
        avg_pool = torch.mean(h_gru, 1)
        max_pool, _ = torch.max(h_gru, 1)
        conc = torch.cat((h_lstm_atten, h_gru_atten, avg_pool, max_pool), 1)
        conc = self.relu(self.linear(conc))
        conc = self.dropout(conc)
        out = self.out(conc)
        return out


def _trained_bias(m):
    """The attention biases start at zero; a trained model's are not."""
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, QuoraAttention) and mod.bias:
                mod.b.copy_(torch.linspace(-0.5, 0.5, mod.step_dim))
    return m


class SequenceWise(nn.Module):
    """deepspeech.pytorch SequenceWise: collapses T*N*H to (T*N)*H for a per-frame module."""

    def __init__(self, module):
        super(SequenceWise, self).__init__()
        self.module = module

    def forward(self, x):
        t, n = x.size(0), x.size(1)
        x = x.view(t * n, -1)
        x = self.module(x)
        x = x.view(t, n, -1)
        return x


class InferenceBatchSoftmax(nn.Module):
    def forward(self, input_):
        if not self.training:
            return F.softmax(input_, dim=-1)
        else:
            return input_


class BatchRNN(nn.Module):
    """deepspeech.pytorch BatchRNN: SequenceWise(BatchNorm1d), pack_padded_sequence(x,
    output_lengths, enforce_sorted=False), rnn(x, h) with h=None by default, pad_packed_sequence,
    bidirectional outputs summed: x.view(x.size(0), x.size(1), 2, -1).sum(2).view(...)."""

    def __init__(self, input_size, hidden_size, rnn_type=nn.LSTM, bidirectional=False, batch_norm=True):
        super(BatchRNN, self).__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.batch_norm = SequenceWise(nn.BatchNorm1d(input_size)) if batch_norm else None
        self.rnn = rnn_type(input_size=input_size, hidden_size=hidden_size,
                            bidirectional=bidirectional, bias=True)
        self.num_directions = 2 if bidirectional else 1

    def forward(self, x, output_lengths, h=None):
        if self.batch_norm is not None:
            x = self.batch_norm(x)
        x = nn.utils.rnn.pack_padded_sequence(x, output_lengths, enforce_sorted=False)
        x, h = self.rnn(x, h)
        x, _ = nn.utils.rnn.pad_packed_sequence(x)
        if self.bidirectional:
            x = x.view(x.size(0), x.size(1), 2, -1).sum(2).view(x.size(0), x.size(1), -1)  # (TxNxH*2) -> (TxNxH) by sum
        return x


class DeepSpeechRNNs(nn.Module):
    """The recurrent half of `DeepSpeech` in SeanNaren/deepspeech.pytorch deepspeech_pytorch/model.py
    (after its conv front end): N x H x T features, x.transpose(1, 2).transpose(0, 1).contiguous(),
    lengths.cpu().int(), a stack of BatchRNN (the first without batch norm), fc =
    SequenceWise(BatchNorm1d + Linear(bias=False)), x.transpose(0, 1), InferenceBatchSoftmax;
    returns (x, output_lengths)."""

    def __init__(self, n_feats=10, hidden=12, nb_layers=2, num_classes=8, bidirectional=True):
        super(DeepSpeechRNNs, self).__init__()
        self.bidirectional = bidirectional
        rnns = [BatchRNN(n_feats, hidden, rnn_type=nn.LSTM, bidirectional=bidirectional, batch_norm=False)]
        for _ in range(nb_layers - 1):
            rnns.append(BatchRNN(hidden, hidden, rnn_type=nn.LSTM, bidirectional=bidirectional))
        self.rnns = nn.Sequential(*rnns)
        fully_connected = nn.Sequential(nn.BatchNorm1d(hidden), nn.Linear(hidden, num_classes, bias=False))
        self.fc = nn.Sequential(SequenceWise(fully_connected))
        self.inference_softmax = InferenceBatchSoftmax()

    def forward(self, x, lengths):
        lengths = lengths.cpu().int()
        output_lengths = lengths
        x = x.transpose(1, 2).transpose(0, 1).contiguous()  # TxNxH
        for rnn in self.rnns:
            x = rnn(x, output_lengths)
        x = self.fc(x)
        x = x.transpose(0, 1)
        # identity in training mode, softmax in eval mode
        x = self.inference_softmax(x)
        return x, output_lengths


def _deepspeech():
    m = DeepSpeechRNNs()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():      # trained running statistics, so eval-mode batch norm is not identity
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.3)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            with torch.no_grad():
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return m


class DSSELSTMModel(nn.Module):
    """`LSTMModel` of the Data Science Stack Exchange question Time Series Forecasting with RNNs
    (https://datascience.stackexchange.com/questions/54551): batch_size, seq_len, dim = x.shape,
    fc(out[:,-1].view(batch_size, -1)), return out.view(-1)."""

    def __init__(self, input_dim, hidden_dim, num_layers, output_dim=1):
        super(DSSELSTMModel, self).__init__()
        self.num_layers = num_layers
        self.hidden_dim = hidden_dim
        self.rnn = nn.LSTM(input_dim, hidden_dim, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x):
        batch_size, seq_len, dim = x.shape
        out, _ = self.rnn(x)
        out = self.fc(out[:, -1].view(batch_size, -1))
        return out.view(-1)


class CourseLSTM(nn.Module):
    """`LSTM` of a public course assignment on Google-News word2vec reviews (GitHub, "TODO 5";
    found by code search, file id 53976246707): h_0 = torch.zeros(...).to(x.device),
    h_n.permute(1, 0, 2).contiguous().view(x.size(0), -1) (all layers' final states), relu,
    fc1, relu, fc2."""

    def __init__(self, num_classes, input_size, hidden_size, num_layers, seq_length):
        super(CourseLSTM, self).__init__()
        self.num_classes = num_classes
        self.num_layers = num_layers
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.seq_length = seq_length
        self.lstm = nn.LSTM(self.input_size, self.hidden_size, self.num_layers, batch_first=True)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(self.num_layers * self.hidden_size, 16)
        self.fc2 = nn.Linear(16, self.num_classes)

    def forward(self, x):
        h_0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(x.device)
        c_0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(x.device)
        output, (h_n, c_n) = self.lstm(x, (h_0, c_0))
        h_n = h_n.permute(1, 0, 2).contiguous().view(x.size(0), -1)
        out = self.relu(h_n)
        out = self.fc1(out)
        out = self.relu(out)
        out = self.fc2(out)
        return out


class MSTSNGRU(nn.Module):
    """`GRU` of nuist-yjx/MSTSN Models/TEM/GRU.py: forward(x, hidden=None) with
    h_0 = x.data.new(num_layers, batch_size, hidden_size).fill_(0).float(),
    output.reshape(-1, hidden_size) -> fc -> reshape(batch_size, timestep, -1)."""

    def __init__(self, feature_size, hidden_size, num_layers, output_size):
        super(MSTSNGRU, self).__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.gru = nn.GRU(feature_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x, hidden=None):
        batch_size = x.shape[0]
        if hidden is None:
            h_0 = x.data.new(self.num_layers, batch_size, self.hidden_size).fill_(0).float()
        else:
            h_0 = hidden
        output, h_0 = self.gru(x, h_0)
        batch_size, timestep, hidden_size = output.shape
        output = output.reshape(-1, hidden_size)
        output = self.fc(output)
        output = output.reshape(batch_size, timestep, -1)
        return output


class MyPredictionGRU(nn.Module):
    """`GRU` of PepsiC0/MyPrediction model/GRU.py: time-major, s, b, h = x.shape,
    x.view(s * b, h) -> fc -> x.view(s, b, -1)."""

    def __init__(self, input_size, hidden_size, num_layers, output_size):
        super(MyPredictionGRU, self).__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.gru = nn.GRU(input_size, hidden_size, num_layers)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        x, _ = self.gru(x)
        s, b, h = x.shape
        x = x.view(s * b, h)
        x = self.fc(x)
        x = x.view(s, b, -1)
        return x


class UdacityCharRNN(nn.Module):
    """`CharRNN` of udacity/deep-learning-v2-pytorch recurrent-neural-networks/char-rnn
    (Character_Level_RNN_Solution.ipynb): one-hot batch_first input, forward(x, hidden),
    out.contiguous().view(-1, self.n_hidden) -> fc ((B*T, chars)); init_hidden with
    weight.new(...).zero_()."""

    def __init__(self, n_chars, n_hidden=12, n_layers=2, drop_prob=0.5):
        super().__init__()
        self.drop_prob = drop_prob
        self.n_layers = n_layers
        self.n_hidden = n_hidden
        self.lstm = nn.LSTM(n_chars, n_hidden, n_layers, dropout=drop_prob, batch_first=True)
        self.dropout = nn.Dropout(drop_prob)
        self.fc = nn.Linear(n_hidden, n_chars)

    def forward(self, x, hidden):
        r_output, hidden = self.lstm(x, hidden)
        out = self.dropout(r_output)
        out = out.contiguous().view(-1, self.n_hidden)
        out = self.fc(out)
        return out, hidden

    def init_hidden(self, batch_size):
        weight = next(self.parameters()).data
        hidden = (weight.new(self.n_layers, batch_size, self.n_hidden).zero_(),
                  weight.new(self.n_layers, batch_size, self.n_hidden).zero_())
        return hidden


class UdacitySentimentRNN(nn.Module):
    """`SentimentRNN` of udacity/deep-learning-v2-pytorch sentiment-rnn
    (Sentiment_RNN_Solution.ipynb): forward(x, hidden), lstm_out.contiguous().view(-1, hidden_dim),
    fc, sigmoid, sig_out.view(batch_size, -1), sig_out[:, -1]; init_hidden with weight.new(...)."""

    def __init__(self, vocab_size, output_size, embedding_dim, hidden_dim, n_layers, drop_prob=0.5):
        super(UdacitySentimentRNN, self).__init__()
        self.output_size = output_size
        self.n_layers = n_layers
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, n_layers, dropout=drop_prob, batch_first=True)
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(hidden_dim, output_size)
        self.sig = nn.Sigmoid()

    def forward(self, x, hidden):
        batch_size = x.size(0)
        embeds = self.embedding(x)
        lstm_out, hidden = self.lstm(embeds, hidden)
        lstm_out = lstm_out.contiguous().view(-1, self.hidden_dim)
        out = self.dropout(lstm_out)
        out = self.fc(out)
        sig_out = self.sig(out)
        sig_out = sig_out.view(batch_size, -1)
        sig_out = sig_out[:, -1]  # get last batch of labels
        return sig_out, hidden

    def init_hidden(self, batch_size):
        weight = next(self.parameters()).data
        hidden = (weight.new(self.n_layers, batch_size, self.hidden_dim).zero_(),
                  weight.new(self.n_layers, batch_size, self.hidden_dim).zero_())
        return hidden


class GRUNet(nn.Module):
    """`GRUNet` of the FloydHub blog post GRU (Gated Recurrent Unit) networks in PyTorch
    (Gabriel Loye, https://blog.floydhub.com/gru-with-pytorch/): forward(x, h),
    fc(relu(out[:,-1])), returns (out, h); init_hidden(batch_size) with
    weight.new(n_layers, batch_size, hidden_dim).zero_().to(device)."""

    def __init__(self, input_dim, hidden_dim, output_dim, n_layers, drop_prob=0.2):
        super(GRUNet, self).__init__()
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.gru = nn.GRU(input_dim, hidden_dim, n_layers, batch_first=True, dropout=drop_prob)
        self.fc = nn.Linear(hidden_dim, output_dim)
        self.relu = nn.ReLU()

    def forward(self, x, h):
        out, h = self.gru(x, h)
        out = self.fc(self.relu(out[:, -1]))
        return out, h

    def init_hidden(self, batch_size):
        weight = next(self.parameters()).data
        hidden = weight.new(self.n_layers, batch_size, self.hidden_dim).zero_().to(device)
        return hidden


class WheelchairCNNLSTM(nn.Module):
    """`CNNLSTM` of trish2023/Brain-Controlled-Wheelchair real_time_system/cnn_lstm_model.py: two
    Conv1d(padding=1) with F.relu, MaxPool1d(2), x.permute(0, 2, 1) around them, self.lstm with
    flatten_parameters(), fc(lstm_out[:, -1, :])."""

    def __init__(self, input_size, hidden_size, num_classes):
        super(WheelchairCNNLSTM, self).__init__()
        self.conv1 = nn.Conv1d(in_channels=input_size, out_channels=10, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(in_channels=10, out_channels=14, kernel_size=3, padding=1)
        self.pool = nn.MaxPool1d(kernel_size=2)
        self.lstm = nn.LSTM(input_size=14, hidden_size=hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        x = x.permute(0, 2, 1)  # (batch, features, seq_len)
        x = F.relu(self.conv1(x))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.permute(0, 2, 1)  # (batch, seq_len, features)
        self.lstm.flatten_parameters()
        lstm_out, _ = self.lstm(x)
        out = self.fc(lstm_out[:, -1, :])
        return out


class DRLCBMCNNLSTM(nn.Module):
    """`CNNLSTM` of cclliu/DRL_CBM surrogate_model/cnn_lstm.py: a kernel-1 Conv1d between two
    permutes, h0/c0 zeros from x.size(0) .to(x.device), a 2-layer LSTM, fc(out[:, -1, :])."""
    device = torch.device("cpu")

    def __init__(self, input_size, hidden_size, num_layers, output_size):
        super(DRLCBMCNNLSTM, self).__init__()
        self.conv = nn.Conv1d(in_channels=input_size, out_channels=input_size, kernel_size=1)
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, x):
        x = x.permute(0, 2, 1)
        x = self.conv(x)
        x = x.permute(0, 2, 1)
        h0 = torch.zeros(self.lstm.num_layers, x.size(0), self.lstm.hidden_size).to(x.device)
        c0 = torch.zeros(self.lstm.num_layers, x.size(0), self.lstm.hidden_size).to(x.device)
        out, _ = self.lstm(x, (h0, c0))
        out = self.fc(out[:, -1, :])
        return out


class StockPredictLSTM(nn.Module):
    """`LSTM` of xiaojihh/stockPredict model.py: self.lstm(x, None), nn.Sequential(nn.Linear) on
    the last pred_days steps: self.out(r_out[:, -self.pred_days:, :])."""

    def __init__(self, pred_days=3):
        super(StockPredictLSTM, self).__init__()
        self.pred_days = pred_days
        self.lstm = nn.LSTM(input_size=1, hidden_size=16, num_layers=1, batch_first=True)
        self.out = nn.Sequential(nn.Linear(16, 1))

    def forward(self, x):
        r_out, (h_n, h_c) = self.lstm(x, None)   # None: zero initial state
        out = self.out(r_out[:, -self.pred_days:, :])
        return out


class ERSWRNN(nn.Module):
    """`RNN` of huawenbo/ERSW-project model_development/RNN.py: x = h_n[-1,:,:], classifier =
    nn.Sequential(nn.Linear, nn.Tanh(), nn.Linear, nn.Sigmoid())."""

    def __init__(self, in_dim, hidden_dim, n_layer, hidden_mlp, n_classes):
        super(ERSWRNN, self).__init__()
        self.n_layer = n_layer
        self.hidden_dim = hidden_dim
        self.rnn = nn.RNN(in_dim, hidden_dim, n_layer, batch_first=True)
        self.classifier = nn.Sequential(nn.Linear(hidden_dim, hidden_mlp), nn.Tanh(),
                                        nn.Linear(hidden_mlp, n_classes), nn.Sigmoid())

    def forward(self, x):
        out, h_n = self.rnn(x)
        x = h_n[-1, :, :]
        x = self.classifier(x)
        return x


class ScaledForecaster(nn.Module):
    """An LSTM 7-day forecaster from a public project plan on GitHub (found by code search, file id
    53889631468): nn.Sequential(Linear, ReLU, Linear, Sigmoid) head on out[:, -1, :], scaled to a
    percentage with `* 100`."""

    def __init__(self, input_size=6, hidden_size=16, num_layers=2):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=0.2)
        self.fc = nn.Sequential(nn.Linear(hidden_size, 8), nn.ReLU(), nn.Linear(8, 7), nn.Sigmoid())

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1, :]) * 100


class GRUCellForecaster(nn.Module):
    """A GRUCell forecaster from GitHub (found by code search, file id 66797748111): forward(x,
    hidden) takes one step (batch, features) or a buffer (batch, seq_len, features); hidden =
    x.new_zeros(...) when None; a Python loop of nn.GRUCell over x[:, t, :], fc(hidden).unsqueeze(1)
    per step, torch.cat(outputs, dim=1); returns (output, hidden)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.hidden_size = hidden_size
        self.gru_cell = nn.GRUCell(input_size=input_size, hidden_size=hidden_size)
        self.fc = nn.Linear(hidden_size, 1)

    def forward(self, x, hidden):
        squeeze_time = False
        if x.dim() == 2:
            x = x.unsqueeze(1)
            squeeze_time = True
        if hidden is None:
            hidden = x.new_zeros(x.size(0), self.hidden_size)
        outputs = []
        for t in range(x.size(1)):
            hidden = self.gru_cell(x[:, t, :], hidden)
            outputs.append(self.fc(hidden).unsqueeze(1))
        output = torch.cat(outputs, dim=1)
        if squeeze_time:
            output = output.squeeze(1)
        return output, hidden


class D2STGNNRNNLayer(nn.Module):
    """`RNNLayer` of zezhishao/D2STGNN (models/inherent_block): hx = torch.zeros_like(X[:, 0, :]),
    a Python loop of nn.GRUCell over X[:, t, :], torch.stack(output, dim=0) (time-major out),
    dropout. The source first folds its node axis into the batch; here the input is (B, T, D)."""

    def __init__(self, hidden_dim, dropout=0.1):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.gru_cell = nn.GRUCell(hidden_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, X):
        hx = torch.zeros_like(X[:, 0, :])
        output = []
        for _ in range(X.shape[1]):
            hx = self.gru_cell(X[:, _, :], hx)
            output.append(hx)
        output = torch.stack(output, dim=0)
        output = self.dropout(output)
        return output


# ---- prakashpandey9/Text-Classification-Pytorch (models/*.py) ---------------------------------
# Five classifiers of one popular repository, each re-typed with its forward as written: ids
# (batch, time) permuted to time-major, h_0 / c_0 made in forward from self.batch_size (the
# `batch_size=None` branch the training loop takes) with Variable(...).cuda() -- written here
# .to(device), the CPU the tests run on. The GloVe table assignment is dropped (random weights).

class PPTextLSTM(nn.Module):
    """models/LSTM.py (LSTMClassifier): self.label(final_hidden_state[-1])."""

    def __init__(self, batch_size, output_size, hidden_size, vocab_size, embedding_length):
        super(PPTextLSTM, self).__init__()
        self.batch_size = batch_size
        self.hidden_size = hidden_size
        self.word_embeddings = nn.Embedding(vocab_size, embedding_length)
        self.lstm = nn.LSTM(embedding_length, hidden_size)
        self.label = nn.Linear(hidden_size, output_size)

    def forward(self, input_sentence, batch_size=None):
        input = self.word_embeddings(input_sentence)
        input = input.permute(1, 0, 2)
        if batch_size is None:
            h_0 = Variable(torch.zeros(1, self.batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(1, self.batch_size, self.hidden_size).to(device))
        else:
            h_0 = Variable(torch.zeros(1, batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(1, batch_size, self.hidden_size).to(device))
        output, (final_hidden_state, final_cell_state) = self.lstm(input, (h_0, c_0))
        final_output = self.label(final_hidden_state[-1])
        return final_output


class PPTextLSTMAttn(nn.Module):
    """models/LSTM_Attn.py (AttentionModel): attention whose query is the final hidden state,
    torch.bmm(lstm_output, hidden.unsqueeze(2)).squeeze(2), softmax over time,
    torch.bmm(lstm_output.transpose(1, 2), soft_attn_weights.unsqueeze(2)).squeeze(2)."""

    def __init__(self, batch_size, output_size, hidden_size, vocab_size, embedding_length):
        super(PPTextLSTMAttn, self).__init__()
        self.batch_size = batch_size
        self.hidden_size = hidden_size
        self.word_embeddings = nn.Embedding(vocab_size, embedding_length)
        self.lstm = nn.LSTM(embedding_length, hidden_size)
        self.label = nn.Linear(hidden_size, output_size)

    def attention_net(self, lstm_output, final_state):
        hidden = final_state.squeeze(0)
        attn_weights = torch.bmm(lstm_output, hidden.unsqueeze(2)).squeeze(2)
        soft_attn_weights = F.softmax(attn_weights, 1)
        new_hidden_state = torch.bmm(lstm_output.transpose(1, 2), soft_attn_weights.unsqueeze(2)).squeeze(2)
        return new_hidden_state

    def forward(self, input_sentences, batch_size=None):
        input = self.word_embeddings(input_sentences)
        input = input.permute(1, 0, 2)
        if batch_size is None:
            h_0 = Variable(torch.zeros(1, self.batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(1, self.batch_size, self.hidden_size).to(device))
        else:
            h_0 = Variable(torch.zeros(1, batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(1, batch_size, self.hidden_size).to(device))
        output, (final_hidden_state, final_cell_state) = self.lstm(input, (h_0, c_0))
        output = output.permute(1, 0, 2)
        attn_output = self.attention_net(output, final_hidden_state)
        logits = self.label(attn_output)
        return logits


class PPTextRNN(nn.Module):
    """models/RNN.py: 2-layer bidirectional nn.RNN, h_n.permute(1, 0, 2).contiguous().view(B, 4H)."""

    def __init__(self, batch_size, output_size, hidden_size, vocab_size, embedding_length):
        super(PPTextRNN, self).__init__()
        self.batch_size = batch_size
        self.hidden_size = hidden_size
        self.word_embeddings = nn.Embedding(vocab_size, embedding_length)
        self.rnn = nn.RNN(embedding_length, hidden_size, num_layers=2, bidirectional=True)
        self.label = nn.Linear(4 * hidden_size, output_size)

    def forward(self, input_sentences, batch_size=None):
        input = self.word_embeddings(input_sentences)
        input = input.permute(1, 0, 2)
        if batch_size is None:
            h_0 = Variable(torch.zeros(4, self.batch_size, self.hidden_size).to(device))
        else:
            h_0 = Variable(torch.zeros(4, batch_size, self.hidden_size).to(device))
        output, h_n = self.rnn(input, h_0)
        h_n = h_n.permute(1, 0, 2)
        h_n = h_n.contiguous().view(h_n.size()[0], h_n.size()[1] * h_n.size()[2])
        logits = self.label(h_n)
        return logits


class PPTextRCNN(nn.Module):
    """models/RCNN.py (Lai et al. 2015): torch.cat((output, input), 2) -- the bi-LSTM's output
    beside its own input --, W2, F.max_pool1d(y, y.size()[2]) (a window as long as the
    sequence), squeeze(2)."""

    def __init__(self, batch_size, output_size, hidden_size, vocab_size, embedding_length):
        super(PPTextRCNN, self).__init__()
        self.batch_size = batch_size
        self.hidden_size = hidden_size
        self.word_embeddings = nn.Embedding(vocab_size, embedding_length)
        self.dropout = 0.8
        self.lstm = nn.LSTM(embedding_length, hidden_size, dropout=self.dropout, bidirectional=True)
        self.W2 = nn.Linear(2 * hidden_size + embedding_length, hidden_size)
        self.label = nn.Linear(hidden_size, output_size)

    def forward(self, input_sentence, batch_size=None):
        input = self.word_embeddings(input_sentence)
        input = input.permute(1, 0, 2)
        if batch_size is None:
            h_0 = Variable(torch.zeros(2, self.batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(2, self.batch_size, self.hidden_size).to(device))
        else:
            h_0 = Variable(torch.zeros(2, batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(2, batch_size, self.hidden_size).to(device))
        output, (final_hidden_state, final_cell_state) = self.lstm(input, (h_0, c_0))
        final_encoding = torch.cat((output, input), 2).permute(1, 0, 2)
        y = self.W2(final_encoding)
        y = y.permute(0, 2, 1)
        y = F.max_pool1d(y, y.size()[2])
        y = y.squeeze(2)
        logits = self.label(y)
        return logits


class PPTextSelfAttention(nn.Module):
    """models/selfAttention.py (structured self-attention, Lin et al. 2017): r heads'
    scores W_s2(F.tanh(W_s1(out))), permute(0, 2, 1), F.softmax(dim=2), torch.bmm(A, output),
    hidden_matrix.view(-1, size()[1] * size()[2]); r = 30 and d_a = 350 in the source, smaller here."""

    def __init__(self, batch_size, output_size, hidden_size, vocab_size, embedding_length, r=4, d_a=10):
        super(PPTextSelfAttention, self).__init__()
        self.batch_size = batch_size
        self.hidden_size = hidden_size
        self.word_embeddings = nn.Embedding(vocab_size, embedding_length)
        self.dropout = 0.8
        self.bilstm = nn.LSTM(embedding_length, hidden_size, dropout=self.dropout, bidirectional=True)
        self.W_s1 = nn.Linear(2 * hidden_size, d_a)
        self.W_s2 = nn.Linear(d_a, r)
        self.fc_layer = nn.Linear(r * 2 * hidden_size, 20)
        self.label = nn.Linear(20, output_size)

    def attention_net(self, lstm_output):
        attn_weight_matrix = self.W_s2(F.tanh(self.W_s1(lstm_output)))
        attn_weight_matrix = attn_weight_matrix.permute(0, 2, 1)
        attn_weight_matrix = F.softmax(attn_weight_matrix, dim=2)
        return attn_weight_matrix

    def forward(self, input_sentences, batch_size=None):
        input = self.word_embeddings(input_sentences)
        input = input.permute(1, 0, 2)
        if batch_size is None:
            h_0 = Variable(torch.zeros(2, self.batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(2, self.batch_size, self.hidden_size).to(device))
        else:
            h_0 = Variable(torch.zeros(2, batch_size, self.hidden_size).to(device))
            c_0 = Variable(torch.zeros(2, batch_size, self.hidden_size).to(device))
        output, (h_n, c_n) = self.bilstm(input, (h_0, c_0))
        output = output.permute(1, 0, 2)
        attn_weight_matrix = self.attention_net(output)
        hidden_matrix = torch.bmm(attn_weight_matrix, output)
        fc_out = self.fc_layer(hidden_matrix.view(-1, hidden_matrix.size()[1] * hidden_matrix.size()[2]))
        logits = self.label(fc_out)
        return logits


# ---- 649453932/Chinese-Text-Classification-Pytorch (models/*.py) ------------------------------
# The repository's recurrent classifiers, re-typed with their forward as written: forward(self,
# x) takes the tuple (ids, seq_len) its data iterator yields and unpacks it (x, _ = x); the
# embedding has padding_idx = n_vocab - 1; the sizes come from a Config object (smaller here).

class CTCConfig:
    """The fields of the repository's Config the models read (random embeddings)."""

    def __init__(self, pad_size=7):
        self.embedding_pretrained = None
        self.n_vocab = VOCAB
        self.embed = EMB
        self.hidden_size = HID
        self.num_layers = 2
        self.dropout = 0.5
        self.num_classes = 4
        self.hidden_size2 = 6
        self.pad_size = pad_size


def _filled_w(m):
    """The source leaves self.w = nn.Parameter(torch.Tensor(n)) uninitialised until training:
    a trained-like vector instead."""
    with torch.no_grad():
        m.w.uniform_(-0.5, 0.5)
    return m


class CTCTextRNN(nn.Module):
    """models/TextRNN.py: 2-layer bidirectional LSTM, self.fc(out[:, -1, :])."""

    def __init__(self, config):
        super(CTCTextRNN, self).__init__()
        if config.embedding_pretrained is not None:
            self.embedding = nn.Embedding.from_pretrained(config.embedding_pretrained, freeze=False)
        else:
            self.embedding = nn.Embedding(config.n_vocab, config.embed, padding_idx=config.n_vocab - 1)
        self.lstm = nn.LSTM(config.embed, config.hidden_size, config.num_layers,
                            bidirectional=True, batch_first=True, dropout=config.dropout)
        self.fc = nn.Linear(config.hidden_size * 2, config.num_classes)

    def forward(self, x):
        x, _ = x
        out = self.embedding(x)
        out, _ = self.lstm(out)
        out = self.fc(out[:, -1, :])
        return out


class CTCTextRNNAtt(nn.Module):
    """models/TextRNN_Att.py (Att-BLSTM): M = tanh(H), alpha = F.softmax(torch.matmul(M, self.w),
    dim=1).unsqueeze(-1) with a parameter vector w, torch.sum(H * alpha, 1), relu, fc1, fc."""

    def __init__(self, config):
        super(CTCTextRNNAtt, self).__init__()
        if config.embedding_pretrained is not None:
            self.embedding = nn.Embedding.from_pretrained(config.embedding_pretrained, freeze=False)
        else:
            self.embedding = nn.Embedding(config.n_vocab, config.embed, padding_idx=config.n_vocab - 1)
        self.lstm = nn.LSTM(config.embed, config.hidden_size, config.num_layers,
                            bidirectional=True, batch_first=True, dropout=config.dropout)
        self.tanh1 = nn.Tanh()
        self.w = nn.Parameter(torch.Tensor(config.hidden_size * 2))
        self.tanh2 = nn.Tanh()
        self.fc1 = nn.Linear(config.hidden_size * 2, config.hidden_size2)
        self.fc = nn.Linear(config.hidden_size2, config.num_classes)

    def forward(self, x):
        x, _ = x
        emb = self.embedding(x)
        H, _ = self.lstm(emb)
        M = self.tanh1(H)
        alpha = F.softmax(torch.matmul(M, self.w), dim=1).unsqueeze(-1)
        out = H * alpha
        out = torch.sum(out, 1)
        out = F.relu(out)
        out = self.fc1(out)
        out = self.fc(out)
        return out


class CTCTextRCNN(nn.Module):
    """models/TextRCNN.py: torch.cat((embed, out), 2) -- the embeddings beside the bi-LSTM's
    output --, relu, permute, nn.MaxPool1d(config.pad_size) (a window as long as the padded
    sentence), .squeeze(), fc."""

    def __init__(self, config):
        super(CTCTextRCNN, self).__init__()
        if config.embedding_pretrained is not None:
            self.embedding = nn.Embedding.from_pretrained(config.embedding_pretrained, freeze=False)
        else:
            self.embedding = nn.Embedding(config.n_vocab, config.embed, padding_idx=config.n_vocab - 1)
        self.lstm = nn.LSTM(config.embed, config.hidden_size, 1,
                            bidirectional=True, batch_first=True, dropout=config.dropout)
        self.maxpool = nn.MaxPool1d(config.pad_size)
        self.fc = nn.Linear(config.hidden_size * 2 + config.embed, config.num_classes)

    def forward(self, x):
        x, _ = x
        embed = self.embedding(x)
        out, _ = self.lstm(embed)
        out = torch.cat((embed, out), 2)
        out = F.relu(out)
        out = out.permute(0, 2, 1)
        out = self.maxpool(out).squeeze()
        out = self.fc(out)
        return out


# ---- salesforce/awd-lstm-lm (model.py, weight_drop.py, locked_dropout.py, embed_regularize.py) ----
# One nn.LSTM module per layer (the last one ninp wide, its decoder tied to the embedding), the
# hidden state a list of one (h, c) per module, WeightDrop on weight_hh_l0 (identity in eval).

def awd_embedded_dropout(embed, words, dropout=0.1, scale=None):
    if dropout:
        mask = embed.weight.data.new().resize_((embed.weight.size(0), 1)).bernoulli_(1 - dropout).expand_as(
            embed.weight) / (1 - dropout)
        masked_embed_weight = mask * embed.weight
    else:
        masked_embed_weight = embed.weight
    if scale:
        masked_embed_weight = scale.expand_as(masked_embed_weight) * masked_embed_weight
    padding_idx = embed.padding_idx
    if padding_idx is None:
        padding_idx = -1
    return F.embedding(words, masked_embed_weight, padding_idx, embed.max_norm, embed.norm_type,
                       embed.scale_grad_by_freq, embed.sparse)


class AWDLockedDropout(nn.Module):
    def forward(self, x, dropout=0.5):
        if not self.training or not dropout:
            return x
        m = x.data.new(1, x.size(1), x.size(2)).bernoulli_(1 - dropout)
        mask = Variable(m, requires_grad=False) / (1 - dropout)
        return mask.expand_as(x) * x


class AWDWeightDrop(nn.Module):
    def __init__(self, module, weights, dropout=0, variational=False):
        super(AWDWeightDrop, self).__init__()
        self.module, self.weights, self.dropout, self.variational = module, weights, dropout, variational
        self._setup()

    def widget_demagnetizer_y2k_edition(*args, **kwargs):
        return

    def _setup(self):
        if issubclass(type(self.module), torch.nn.RNNBase):
            self.module.flatten_parameters = self.widget_demagnetizer_y2k_edition
        for name_w in self.weights:
            w = getattr(self.module, name_w)
            del self.module._parameters[name_w]
            self.module.register_parameter(name_w + '_raw', nn.Parameter(w.data))

    def _setweights(self):
        for name_w in self.weights:
            raw_w = getattr(self.module, name_w + '_raw')
            w = F.dropout(raw_w, p=self.dropout, training=self.training)
            setattr(self.module, name_w, nn.Parameter(w))

    def forward(self, *args):
        self._setweights()
        return self.module.forward(*args)


class AWDRNNModel(nn.Module):
    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, dropouth=0.5, dropouti=0.5,
                 dropoute=0.1, wdrop=0, tie_weights=False):
        super(AWDRNNModel, self).__init__()
        self.lockdrop = AWDLockedDropout()
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnns = [torch.nn.LSTM(ninp if l == 0 else nhid, nhid if l != nlayers - 1 else (ninp if tie_weights else nhid),
                                   1, dropout=0) for l in range(nlayers)]
        if wdrop:
            self.rnns = [AWDWeightDrop(rnn, ['weight_hh_l0'], dropout=wdrop) for rnn in self.rnns]
        self.rnns = torch.nn.ModuleList(self.rnns)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        self.ninp, self.nhid, self.nlayers = ninp, nhid, nlayers
        self.dropout, self.dropouti, self.dropouth, self.dropoute = dropout, dropouti, dropouth, dropoute
        self.tie_weights = tie_weights

    def forward(self, input, hidden, return_h=False):
        emb = awd_embedded_dropout(self.encoder, input, dropout=self.dropoute if self.training else 0)
        emb = self.lockdrop(emb, self.dropouti)
        raw_output = emb
        new_hidden, raw_outputs, outputs = [], [], []
        for l, rnn in enumerate(self.rnns):
            raw_output, new_h = rnn(raw_output, hidden[l])
            new_hidden.append(new_h)
            raw_outputs.append(raw_output)
            if l != self.nlayers - 1:
                raw_output = self.lockdrop(raw_output, self.dropouth)
                outputs.append(raw_output)
        hidden = new_hidden
        output = self.lockdrop(raw_output, self.dropout)
        outputs.append(output)
        decoded = self.decoder(output.view(output.size(0) * output.size(1), output.size(2)))
        result = decoded.view(output.size(0), output.size(1), decoded.size(1))
        if return_h:
            return result, hidden, raw_outputs, outputs
        return result, hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters()).data
        return [(Variable(weight.new(1, bsz, self.nhid if l != self.nlayers - 1 else
                                     (self.ninp if self.tie_weights else self.nhid)).zero_()),
                 Variable(weight.new(1, bsz, self.nhid if l != self.nlayers - 1 else
                                     (self.ninp if self.tie_weights else self.nhid)).zero_()))
                for l in range(self.nlayers)]


# ---- songyouwei/ABSA-PyTorch (layers/dynamic_rnn.py, models/lstm.py): the rows sorted by length
# by hand around a pack with enforce_sorted=True, the lengths counted from the ids.

class ABSADynamicLSTM(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True, dropout=0,
                 bidirectional=False, only_use_last_hidden_state=False, rnn_type='LSTM'):
        super(ABSADynamicLSTM, self).__init__()
        self.batch_first, self.only_use_last_hidden_state, self.rnn_type = batch_first, only_use_last_hidden_state, rnn_type
        rnn = nn.LSTM if rnn_type == 'LSTM' else nn.GRU
        self.RNN = rnn(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, bias=bias,
                       batch_first=batch_first, dropout=dropout, bidirectional=bidirectional)

    def forward(self, x, x_len):
        """sort"""
        x_sort_idx = torch.sort(-x_len)[1].long()
        x_unsort_idx = torch.sort(x_sort_idx)[1].long()
        x_len = x_len[x_sort_idx]
        x = x[x_sort_idx]
        """pack"""
        x_emb_p = torch.nn.utils.rnn.pack_padded_sequence(x, x_len.cpu(), batch_first=self.batch_first)
        if self.rnn_type == 'LSTM':
            out_pack, (ht, ct) = self.RNN(x_emb_p, None)
        else:
            out_pack, ht = self.RNN(x_emb_p, None)
            ct = None
        """unsort: h"""
        ht = torch.transpose(ht, 0, 1)[x_unsort_idx]
        ht = torch.transpose(ht, 0, 1)
        if self.only_use_last_hidden_state:
            return ht
        out = torch.nn.utils.rnn.pad_packed_sequence(out_pack, batch_first=self.batch_first)[0]
        out = out[x_unsort_idx]
        if self.rnn_type == 'LSTM':
            ct = torch.transpose(ct, 0, 1)[x_unsort_idx]
            ct = torch.transpose(ct, 0, 1)
        return out, (ht, ct)


class ABSALSTM(nn.Module):
    def __init__(self, embedding_matrix, embed_dim, hidden_dim, polarities_dim):
        super(ABSALSTM, self).__init__()
        self.embed = nn.Embedding.from_pretrained(torch.tensor(embedding_matrix, dtype=torch.float))
        self.lstm = ABSADynamicLSTM(embed_dim, hidden_dim, num_layers=1, batch_first=True)
        self.dense = nn.Linear(hidden_dim, polarities_dim)

    def forward(self, inputs):
        text_raw_indices = inputs[0]
        x = self.embed(text_raw_indices)
        x_len = torch.sum(text_raw_indices != 0, dim=-1)
        _, (h_n, _) = self.lstm(x, x_len)
        return self.dense(h_n[0])


# ---- hungthanhpham94/GRU4REC-pytorch (lib/model.py): a session's next item, one step per call,
# the item one-hot encoded by scatter_ into a buffer of the training batch size.

class GRU4REC(nn.Module):
    def __init__(self, input_size, hidden_size, output_size, num_layers=1, final_act='tanh',
                 dropout_hidden=.5, dropout_input=0, batch_size=50, embedding_dim=-1):
        super(GRU4REC, self).__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.num_layers, self.batch_size, self.embedding_dim = num_layers, batch_size, embedding_dim
        self.dropout_input = dropout_input
        self.onehot_buffer = self.init_emb()
        self.h2o = nn.Linear(hidden_size, output_size)
        self.final_activation = nn.Tanh() if final_act == 'tanh' else nn.ReLU()
        if self.embedding_dim != -1:
            self.look_up = nn.Embedding(input_size, self.embedding_dim)
            self.gru = nn.GRU(self.embedding_dim, self.hidden_size, self.num_layers, dropout=dropout_hidden)
        else:
            self.gru = nn.GRU(self.input_size, self.hidden_size, self.num_layers, dropout=dropout_hidden)

    def forward(self, input, hidden):
        if self.embedding_dim == -1:
            embedded = self.onehot_encode(input)
            embedded = embedded.unsqueeze(0)
        else:
            embedded = self.look_up(input.unsqueeze(0))
        output, hidden = self.gru(embedded, hidden)
        output = output.view(-1, output.size(-1))
        logit = self.final_activation(self.h2o(output))
        return logit, hidden

    def init_emb(self):
        return torch.FloatTensor(self.batch_size, self.output_size)

    def onehot_encode(self, input):
        self.onehot_buffer.zero_()
        index = input.view(-1, 1)
        return self.onehot_buffer.scatter_(1, index, 1)

    def init_hidden(self):
        return torch.zeros(self.num_layers, self.batch_size, self.hidden_size)


# =============================================================================================
# registry
# =============================================================================================

# ---- curiousily: "Time Series Anomaly Detection using LSTM Autoencoders with PyTorch in Python"
# (https://curiousily.com/posts/time-series-anomaly-detection-using-lstm-autoencoder-with-pytorch-in-python/,
# the ECG5000 notebook of github.com/curiousily/Getting-Things-Done-with-Pytorch): one (seq_len, 1)
# sequence per call, reshaped to a batch of one; the encoder's h_n repeated seq_len times into the
# decoder. Re-typed with small sizes; seq_len is the test's T.

class CuriousilyEncoder(nn.Module):
    def __init__(self, seq_len, n_features, embedding_dim=64):
        super(CuriousilyEncoder, self).__init__()
        self.seq_len, self.n_features = seq_len, n_features
        self.embedding_dim, self.hidden_dim = embedding_dim, 2 * embedding_dim
        self.rnn1 = nn.LSTM(input_size=n_features, hidden_size=self.hidden_dim, num_layers=1, batch_first=True)
        self.rnn2 = nn.LSTM(input_size=self.hidden_dim, hidden_size=embedding_dim, num_layers=1, batch_first=True)

    def forward(self, x):
        x = x.reshape((1, self.seq_len, self.n_features))
        x, (_, _) = self.rnn1(x)
        x, (hidden_n, _) = self.rnn2(x)
        return hidden_n.reshape((self.n_features, self.embedding_dim))


class CuriousilyDecoder(nn.Module):
    def __init__(self, seq_len, input_dim=64, n_features=1):
        super(CuriousilyDecoder, self).__init__()
        self.seq_len, self.input_dim = seq_len, input_dim
        self.hidden_dim, self.n_features = 2 * input_dim, n_features
        self.rnn1 = nn.LSTM(input_size=input_dim, hidden_size=input_dim, num_layers=1, batch_first=True)
        self.rnn2 = nn.LSTM(input_size=input_dim, hidden_size=self.hidden_dim, num_layers=1, batch_first=True)
        self.output_layer = nn.Linear(self.hidden_dim, n_features)

    def forward(self, x):
        x = x.repeat(self.seq_len, self.n_features)
        x = x.reshape((self.n_features, self.seq_len, self.input_dim))
        x, (hidden_n, cell_n) = self.rnn1(x)
        x, (hidden_n, cell_n) = self.rnn2(x)
        x = x.reshape((self.seq_len, self.hidden_dim))
        return self.output_layer(x)


class CuriousilyRecurrentAutoencoder(nn.Module):
    def __init__(self, seq_len, n_features, embedding_dim=64):
        super(CuriousilyRecurrentAutoencoder, self).__init__()
        self.encoder = CuriousilyEncoder(seq_len, n_features, embedding_dim)
        self.decoder = CuriousilyDecoder(seq_len, embedding_dim, n_features)

    def forward(self, x):
        x = self.encoder(x)
        x = self.decoder(x)
        return x


def _x(t):
    return (t,)


def _step_default(seq, b, t, hidden):
    return (seq[b:b + 1, t], hidden)


def _feed_default(seq, t):
    return seq[:, t]


def _hidden_zeros_tm(model, batch):
    return model.init_hidden(batch)


def _char_gen_seq(B, T, rng):
    cat = onehot(rng, B, 1, 5)[:, 0]
    return (cat, onehot(rng, B, T, 10))


CASES = [
    # ---- tutorials and examples -------------------------------------------------------------
    Case("tut_char_rnn_classification_step",
         "https://github.com/pytorch/tutorials/blob/main/intermediate_source/char_rnn_classification_tutorial.py (RNN, pre-2024)",
         _seeded(lambda: TutCharRNNStep(10, HID, 6)),
         inputs=lambda m, B, T, rng: (onehot(rng, 1, 1, 10)[:, 0], m.initHidden()),
         kind="step", output="B", roles=("x", "hidden"),
         seq=lambda B, T, rng: onehot(rng, B, T, 10), init=lambda m: m.initHidden(),
         step=_step_default, feed=_feed_default,
         idioms=("step module in a user loop", "initHidden() with Variable", "torch.cat((input, hidden), 1)",
                 "Linear recurrence (no nonlinearity)", "LogSoftmax(dim=1)")),
    Case("tut_char_rnn_classification",
         "https://github.com/pytorch/tutorials/blob/main/intermediate_source/char_rnn_classification_tutorial.py (CharRNN, 2024)",
         _seeded(lambda: TutCharRNN(10, HID, 6)),
         inputs=lambda m, B, T, rng: _x(onehot(rng, B, T, 10).transpose(0, 1).contiguous()),
         layout="time_major", output="B",
         idioms=("time-major one-hot input", "nn.RNN", "h2o(hidden[0])", "LogSoftmax(dim=1)")),
    Case("tut_char_rnn_generation_step",
         "https://github.com/pytorch/tutorials/blob/main/intermediate_source/char_rnn_generation_tutorial.py",
         _seeded(lambda: TutCharRNNGenerator(5, 10, HID, 10)),
         inputs=lambda m, B, T, rng: (onehot(rng, 1, 1, 5)[:, 0], onehot(rng, 1, 1, 10)[:, 0], m.initHidden()),
         kind="step", output="B", roles=("x", "x", "hidden"),
         seq=_char_gen_seq, init=lambda m: m.initHidden(),
         step=lambda s, b, t, h: (s[0][b:b + 1], s[1][b:b + 1, t], h),
         feed=lambda s, t: (s[0], s[1][:, t]),
         idioms=("step module in a user loop", "three forward arguments (category, input, hidden)",
                 "torch.cat of three tensors", "dropout", "LogSoftmax(dim=1)")),
    Case("ex_word_language_model_lstm",
         "https://github.com/pytorch/examples/blob/main/word_language_model/model.py (RNNModel('LSTM'))",
         _seeded(lambda: RNNModel('LSTM', VOCAB, EMB, HID, 2, dropout=0.2)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, B, T).t().contiguous(), m.init_hidden(B)),
         layout="time_major", output="TB_flat", roles=("x", "hidden"), ids=True,
         idioms=("forward(input, hidden)", "init_hidden with weight.new_zeros", "time-major ids",
                 "2-layer LSTM", "decoded.view(-1, ntoken)", "F.log_softmax(dim=1)")),
    Case("ex_word_language_model_gru",
         "https://github.com/pytorch/examples/blob/main/word_language_model/model.py (RNNModel('GRU'))",
         _seeded(lambda: RNNModel('GRU', VOCAB, EMB, HID, 2, dropout=0.2)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, B, T).t().contiguous(), m.init_hidden(B)),
         layout="time_major", output="TB_flat", roles=("x", "hidden"), ids=True,
         idioms=("forward(input, hidden)", "init_hidden with weight.new_zeros", "GRU", "decoded.view(-1, ntoken)")),
    Case("ex_word_language_model_rnn_tied",
         "https://github.com/pytorch/examples/blob/main/word_language_model/model.py (RNNModel('RNN_TANH', tied))",
         _seeded(lambda: RNNModel('RNN_TANH', VOCAB, HID, HID, 1, dropout=0.2, tie_weights=True)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, B, T).t().contiguous(), m.init_hidden(B)),
         layout="time_major", output="TB_flat", roles=("x", "hidden"), ids=True,
         idioms=("tied embedding/decoder weights", "nn.RNN tanh", "decoded.view(-1, ntoken)")),
    Case("tut_dynamic_quantization_lstm_lm",
         "https://github.com/pytorch/tutorials/blob/main/advanced_source/dynamic_quantization_tutorial.py",
         _seeded(_quantized_lstm_lm),
         inputs=lambda m, B, T, rng: (ids_bt(rng, B, T).t().contiguous(), m.init_hidden(B)),
         layout="time_major", output="TB", roles=("x", "hidden"), ids=True,
         float_twin=_seeded(lambda: LSTMModel(ntoken=VOCAB, ninp=EMB, nhid=HID, nlayers=2)),
         idioms=("quantize_dynamic({nn.LSTM, nn.Linear}, qint8)", "forward(input, hidden)", "init_hidden")),
    Case("tut_lstm_tagger",
         "https://github.com/pytorch/tutorials/blob/main/beginner_source/nlp/sequence_models_tutorial.py",
         _seeded(lambda: LSTMTagger(EMB, HID, VOCAB, 5)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, 1, T)[0]),
         kind="unbatched", output="BT", ids=True,
         idioms=("unbatched (T,) ids", "len(sentence)", "embeds.view(len(sentence), 1, -1)",
                 "lstm_out.view(len(sentence), -1)", "F.log_softmax(dim=1)")),
    Case("tut_lstm_tagger_2017",
         "https://github.com/pytorch/tutorials/blob/v0.3.0/beginner_source/nlp/sequence_models_tutorial.py",
         _seeded(lambda: LSTMTaggerLegacy(EMB, HID, VOCAB, 5)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, 1, T)[0]),
         kind="unbatched", output="BT", ids=True,
         # the source's loop calls init_hidden() (zeros); a script keeps forward's methods only and a
         # trace keeps the hidden it read as a constant
         reset=lambda m: hasattr(m, "hidden") and setattr(m, "hidden", tuple(torch.zeros_like(t) for t in m.hidden)),
         idioms=("unbatched (T,) ids", "hidden held on the module (self.hidden)", "autograd.Variable",
                 "len(sentence)")),
    Case("tut_seq2seq_encoder_step",
         "https://github.com/pytorch/tutorials/blob/v1.13.0/intermediate_source/seq2seq_translation_tutorial.py (EncoderRNN)",
         _seeded(lambda: EncoderRNNStep(VOCAB, HID)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, 1, 1)[:, 0], m.initHidden()),
         kind="step", output="B", roles=("x", "hidden"), ids=True,
         seq=lambda B, T, rng: ids_bt(rng, B, T), init=lambda m: m.initHidden(),
         step=_step_default, feed=_feed_default,
         idioms=("step module in a user loop", "embedding(input).view(1, 1, -1)", "initHidden(device=device)")),
    Case("tut_seq2seq_decoder_step",
         "https://github.com/pytorch/tutorials/blob/v1.13.0/intermediate_source/seq2seq_translation_tutorial.py (DecoderRNN)",
         _seeded(lambda: DecoderRNNStep(HID, VOCAB)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, 1, 1), m.initHidden()),
         kind="step", output="B", roles=("x", "hidden"), ids=True,
         seq=lambda B, T, rng: ids_bt(rng, B, T), init=lambda m: m.initHidden(),
         step=lambda s, b, t, h: (s[b:b + 1, t:t + 1], h), feed=_feed_default,
         idioms=("step module in a user loop", "F.relu on embeddings", "output[0]", "LogSoftmax(dim=1)")),
    Case("tut_seq2seq_encoder",
         "https://github.com/pytorch/tutorials/blob/main/intermediate_source/seq2seq_translation_tutorial.py (EncoderRNN, 2023)",
         _seeded(lambda: EncoderRNN(VOCAB, HID)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)),
         output="BT", ids=True,
         idioms=("batch_first GRU", "returns (output, hidden)", "dropout on embeddings")),
    Case("ex_time_sequence_prediction",
         "https://github.com/pytorch/examples/blob/main/time_sequence_prediction/train.py",
         _seeded(lambda: Sequence().double()),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, dtype=torch.double)),
         output="BT",
         idioms=("nn.LSTMCell x2 in a Python loop", "input.split(1, dim=1)", "h0 in forward with .to(device)",
                 "optional argument future=0", "float64 model", "torch.cat(outputs, dim=1)")),
    # ---- repositories ------------------------------------------------------------------------
    Case("bentrevett_sentiment_rnn",
         "https://github.com/bentrevett/pytorch-sentiment-analysis/blob/master/legacy/1%20-%20Simple%20Sentiment%20Analysis.ipynb",
         _seeded(lambda: BentrevettRNN(VOCAB, EMB, HID, 1)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T).t().contiguous()),
         layout="time_major", output="B", ids=True,
         idioms=("time-major ids", "assert torch.equal(...) in forward", "hidden.squeeze(0)")),
    Case("bentrevett_sentiment_packed_bilstm",
         "https://github.com/bentrevett/pytorch-sentiment-analysis/blob/master/legacy/2%20-%20Upgraded%20Sentiment%20Analysis.ipynb",
         _seeded(lambda: BentrevettPackedBiLSTM(VOCAB, EMB, HID, 1, 2, True, 0.5, 0)),
         inputs=lambda m, B, T, rng: (lambda L: (pad_after(ids_bt(rng, B, T), L).t().contiguous(), L))(
             lengths_for(B, T, True)),
         layout="time_major", output="B", roles=("x", "lengths"), sorted_lengths=True, ids=True,
         idioms=("pack_padded_sequence(emb, text_lengths.to('cpu')) sorted", "pad_packed_sequence unused",
                 "torch.cat((hidden[-2,:,:], hidden[-1,:,:]), dim=1)", "2-layer bidirectional LSTM", "padding_idx")),
    Case("bentrevett_sentiment_lstm",
         "https://github.com/bentrevett/pytorch-sentiment-analysis/blob/main/2%20-%20Recurrent%20Neural%20Networks.ipynb",
         _seeded(lambda: BentrevettLSTM(VOCAB, EMB, HID, 2, 2, True, 0.5, 0)),
         inputs=lambda m, B, T, rng: (lambda L: (pad_after(ids_bt(rng, B, T), L), L))(lengths_for(B, T, False)),
         output="B", roles=("x", "lengths"), ids=True,
         idioms=("pack_padded_sequence(batch_first=True, enforce_sorted=False)", "if self.lstm.bidirectional:",
                 "torch.cat([hidden[-1], hidden[-2]], dim=-1)", "pad_packed_sequence without batch_first (unused)")),
    Case("bentrevett_seq2seq_encoder",
         "https://github.com/bentrevett/pytorch-seq2seq/blob/master/1%20-%20Sequence%20to%20Sequence%20Learning%20with%20Neural%20Networks.ipynb",
         _seeded(lambda: Seq2SeqEncoder(VOCAB, EMB, HID, 2, 0.5)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T).t().contiguous()),
         layout="time_major", output="state", ids=True,
         idioms=("returns (hidden, cell): first output is h_n", "time-major ids", "2-layer LSTM")),
    Case("bentrevett_seq2seq_packed_encoder",
         "https://github.com/bentrevett/pytorch-seq2seq/blob/master/4%20-%20Packed%20Padded%20Sequences%2C%20Masking%2C%20Inference%20and%20BLEU.ipynb",
         _seeded(lambda: Seq2SeqPackedEncoder(VOCAB, EMB, HID, HID, 0.5)),
         inputs=lambda m, B, T, rng: (lambda L: (pad_after(ids_bt(rng, B, T), L).t().contiguous(), L))(
             lengths_for(B, T, True)),
         layout="time_major", output="TB", roles=("x", "lengths"), sorted_lengths=True, ids=True,
         idioms=("pack_padded_sequence(src_len.to('cpu')) sorted", "pad_packed_sequence (time-major)",
                 "torch.tanh(fc(torch.cat((hidden[-2,:,:], hidden[-1,:,:]), dim=1)))", "bidirectional GRU")),
    Case("tut_chatbot_encoder",
         "https://github.com/pytorch/tutorials/blob/main/beginner_source/chatbot_tutorial.py (EncoderRNN)",
         _seeded(lambda: ChatbotEncoderRNN(HID, nn.Embedding(VOCAB, HID), 2, 0.1)),
         inputs=lambda m, B, T, rng: (lambda L: (pad_after(ids_bt(rng, B, T), L).t().contiguous(), L))(
             lengths_for(B, T, True)),
         layout="time_major", output="TB", roles=("x", "lengths"), sorted_lengths=True, ids=True,
         idioms=("embedding passed to the constructor", "pack_padded_sequence(embedded, input_lengths.cpu()) sorted",
                 "forward(input_seq, input_lengths, hidden=None)", "2-layer bidirectional GRU",
                 "outputs[:, :, :H] + outputs[:, :, H:] (directions summed by slices)")),
    Case("bentrevett_pos_tagger",
         "https://github.com/bentrevett/pytorch-pos-tagging/blob/master/1%20-%20BiLSTM%20for%20PoS%20Tagging.ipynb",
         _seeded(lambda: BiLSTMPOSTagger(VOCAB, EMB, HID, 6, 2, True, 0.25, 0)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T).t().contiguous()),
         layout="time_major", output="TB", ids=True,
         idioms=("time-major tagger", "2-layer bidirectional LSTM", "fc(dropout(outputs)) per step")),
    Case("rtvc_speaker_encoder",
         "https://github.com/CorentinJ/Real-Time-Voice-Cloning/blob/master/encoder/model.py (SpeakerEncoder)",
         _seeded(lambda: SpeakerEncoder(device, torch.device("cpu"))),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 10)),
         output="B",
         idioms=("forward(utterances, hidden_init=None)", "relu(linear(hidden[-1]))",
                 "embeds_raw / (torch.norm(embeds_raw, dim=1, keepdim=True) + 1e-5)")),
    Case("resemblyzer_voice_encoder",
         "https://github.com/resemble-ai/Resemblyzer/blob/master/resemblyzer/voice_encoder.py (VoiceEncoder)",
         _seeded(lambda: ResemblyzerVoiceEncoder()),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 10)),
         output="B",
         idioms=("_, (hidden, _) = self.lstm(mels)", "embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)")),
    Case("yunjey_rnn",
         "https://github.com/yunjey/pytorch-tutorial/blob/master/tutorials/02-intermediate/recurrent_neural_network/main.py",
         _seeded(lambda: YunjeyRNN(8, HID, 2, 10)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 8)),
         output="B",
         idioms=("h0 = torch.zeros(num_layers, x.size(0), H).to(device)", "out[:, -1, :]")),
    Case("yunjey_birnn",
         "https://github.com/yunjey/pytorch-tutorial/blob/master/tutorials/02-intermediate/bidirectional_recurrent_neural_network/main.py",
         _seeded(lambda: YunjeyBiRNN(8, HID, 2, 10)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 8)),
         output="B",
         idioms=("h0 of num_layers*2 rows .to(device)", "out[:, -1, :] of a bidirectional LSTM")),
    Case("morvan_rnn_classifier",
         "https://github.com/MorvanZhou/PyTorch-Tutorial/blob/master/tutorial-contents/402_RNN_classifier.py",
         _seeded(lambda: MorvanRNNClassifier()),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 8)),
         output="B",
         idioms=("self.rnn(x, None)", "r_out[:, -1, :]")),
    Case("morvan_rnn_regressor",
         "https://github.com/MorvanZhou/PyTorch-Tutorial/blob/master/tutorial-contents/403_RNN_regressor.py",
         _seeded(lambda: MorvanRNNRegressor()),
         inputs=lambda m, B, T, rng: (floats(rng, B, T, 1), None),
         output="BT", roles=("x", "hidden"),
         idioms=("forward(x, h_state) with h_state None", "Python loop over r_out.size(1) applying Linear",
                 "torch.stack(outs, dim=1)", "returns (outs, h_state)")),
    Case("spro_char_rnn_step",
         "https://github.com/spro/char-rnn.pytorch/blob/master/model.py",
         _seeded(lambda: SproCharRNN(VOCAB, HID, VOCAB, model="lstm", n_layers=2)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, 1, 1)[:, 0], m.init_hidden(1)),
         kind="step", output="B", roles=("x", "hidden"), ids=True,
         seq=lambda B, T, rng: ids_bt(rng, B, T), init=lambda m: m.init_hidden(1),
         step=_step_default, feed=_feed_default,
         idioms=("step module in a user loop", "batch_size = input.size(0)", "encoded.view(1, batch_size, -1)",
                 "output.view(batch_size, -1)", "init_hidden(batch) with Variable", "LSTM state tuple")),
    Case("luopeixiang_ner_bilstm",
         "https://github.com/luopeixiang/named_entity_recognition/blob/master/models/bilstm.py",
         _seeded(lambda: LuoBiLSTM(VOCAB, EMB, HID, 7)),
         inputs=lambda m, B, T, rng: (lambda L: (pad_after(ids_bt(rng, B, T), L), L))(lengths_for(B, T, True)),
         output="BT", roles=("x", "lengths"), sorted_lengths=True, ids=True,
         idioms=("pack_padded_sequence(batch_first=True) sorted", "pad_packed_sequence(batch_first=True)",
                 "per-token Linear of a bidirectional LSTM")),
    Case("dlwizard_lstm",
         "https://www.deeplearningwizard.com/deep_learning/practical_pytorch/pytorch_lstm_neuralnetwork/",
         _seeded(lambda: DLWizardLSTM(8, HID, 2, 10)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 8)),
         output="B",
         idioms=("h0 = torch.zeros(...).requires_grad_()", "h0.detach()", "out[:, -1, :]")),
    Case("dlwizard_rnn_relu",
         "https://www.deeplearningwizard.com/deep_learning/practical_pytorch/pytorch_recurrent_neuralnetwork/",
         _seeded(lambda: DLWizardRNN(8, HID, 2, 10)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 8)),
         output="B",
         idioms=("h0 = Variable(torch.zeros(...))", "nn.RNN(nonlinearity='relu')", "out[:, -1, :]")),
    Case("kaggle_stock_gru",
         "https://www.kaggle.com/code/taronzakaryan/predicting-stock-price-using-lstm-model-pytorch",
         _seeded(lambda: KaggleStockGRU(4, HID, 2, 1)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 4)),
         output="B",
         idioms=("h0.requires_grad_() / .detach()", "out, (hn) = self.gru(x, (h0.detach()))", "out[:, -1, :]")),
    Case("mlm_airmodel",
         "https://machinelearningmastery.com/lstm-for-time-series-prediction-in-pytorch/",
         _seeded(lambda: AirModel()),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 1)),
         output="BT",
         idioms=("per-step Linear regression head",)),
    Case("curiousily_lstm_autoencoder",
         "https://curiousily.com/posts/time-series-anomaly-detection-using-lstm-autoencoder-with-pytorch-in-python/",
         _seeded(lambda: CuriousilyRecurrentAutoencoder(7, 1, 6)),
         inputs=lambda m, B, T, rng: _x(floats(rng, m.encoder.seq_len, 1)),
         kind="unbatched", output="BT",
         idioms=("unbatched (seq_len, 1) floats", "x.reshape((1, seq_len, n_features))",
                 "hidden_n.reshape((n_features, embedding_dim))", "x.repeat(seq_len, n_features): RepeatVector",
                 "x.reshape((seq_len, hidden_dim)) into a Linear")),
    Case("stackabuse_airline_lstm",
         "https://stackabuse.com/time-series-prediction-using-lstm-with-pytorch-in-python/",
         _seeded(lambda: StackAbuseLSTM()),
         inputs=lambda m, B, T, rng: _x(floats(rng, T)),
         kind="unbatched", output="B",
         # (a trace keeps forward only: its hidden_cell is the constant the trace read)
         reset=lambda m: hasattr(m, "hidden_cell") and setattr(
             m, "hidden_cell", (torch.zeros(1, 1, m.hidden_layer_size), torch.zeros(1, 1, m.hidden_layer_size))),
         idioms=("unbatched (T,) floats", "self.hidden_cell held on the module", "len(input_seq)",
                 "predictions[-1]")),
    Case("kaggle_jigsaw_simple_lstm",
         "https://www.kaggle.com/code/bminixhofer/simple-lstm-pytorch-version",
         _seeded(lambda: JigsawNeuralNet(VOCAB, EMB, 3)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)),
         output="B", ids=True,
         idioms=("SpatialDropout (Dropout2d with unsqueeze/permute/squeeze)", "two bidirectional LSTMs",
                 "torch.mean(h, 1) / torch.max(h, 1) pooling", "residual add of head features",
                 "torch.cat([result, aux_result], 1)")),
    Case("kaggle_quora_lstm_gru_attention",
         "https://www.kaggle.com/code/bminixhofer/deterministic-neural-networks-using-pytorch",
         _seeded(lambda: _trained_bias(QuoraAttentionNet(VOCAB, EMB, 7))),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)),
         output="B", ids=True,
         idioms=("Attention module: torch.mm(x.view(-1, F), w).view(-1, step_dim) + b, tanh, exp, a / a.sum(1) + 1e-10, "
                 "torch.sum(x * a.unsqueeze(-1), 1)", "attention of the LSTM's output beside the GRU reading it",
                 "torch.cat of attentions and mean/max pools")),
    Case("kaggle_quora_lstm_gru_pool",
         "https://www.kaggle.com/code/bminixhofer/deterministic-neural-networks-using-pytorch",
         _seeded(lambda: QuoraNeuralNet(VOCAB, EMB)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)),
         output="B", ids=True,
         idioms=("torch.squeeze(Dropout2d(torch.unsqueeze(h, 0)))", "LSTM -> GRU (bidirectional)",
                 "mean/max pooling over time", "ReLU + dropout head")),
    Case("deepspeech_rnns",
         "https://github.com/SeanNaren/deepspeech.pytorch/blob/master/deepspeech_pytorch/model.py",
         _seeded(_deepspeech),
         inputs=lambda m, B, T, rng: (floats(rng, B, 10, T), lengths_for(B, T, False)),
         layout="batch_feature_time", output="BT", roles=("x", "lengths"),
         idioms=("N x F x T input, transpose(1, 2).transpose(0, 1).contiguous()", "lengths.cpu().int()",
                 "pack_padded_sequence(enforce_sorted=False)", "rnn(x, h) with h=None default",
                 "bidirectional outputs summed via view(..., 2, -1).sum(2)", "SequenceWise BatchNorm1d",
                 "Linear(bias=False)", "F.softmax(dim=-1) in eval", "returns (x, output_lengths)")),
    Case("wheelchair_cnn_lstm",
         "https://github.com/trish2023/Brain-Controlled-Wheelchair/blob/main/real_time_system/cnn_lstm_model.py",
         _seeded(lambda: WheelchairCNNLSTM(8, HID, 3)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 8)),
         output="B",
         idioms=("x.permute(0, 2, 1) into Conv1d", "F.relu(conv)", "MaxPool1d(2) halves the steps",
                 "lstm.flatten_parameters()", "fc(lstm_out[:, -1, :])")),
    Case("drl_cbm_cnn_lstm",
         "https://github.com/cclliu/DRL_CBM/blob/main/surrogate_model/cnn_lstm.py",
         _seeded(lambda: DRLCBMCNNLSTM(5, HID, 2, 1)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 5)),
         output="B",
         idioms=("kernel-1 Conv1d between permutes", "h0/c0 zeros(num_layers, x.size(0), H).to(x.device)",
                 "fc(out[:, -1, :])")),
    Case("dsse_lstm_regressor",
         "https://datascience.stackexchange.com/questions/54551/time-series-forecasting-with-rnns",
         _seeded(lambda: DSSELSTMModel(3, HID, 2)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 3)),
         output="BT",
         idioms=("batch_size, seq_len, dim = x.shape", "out[:,-1].view(batch_size, -1)", "out.view(-1) -> (B,)")),
    Case("course_lstm_hn_permute",
         "GitHub course assignment, LSTM on Google-News word2vec reviews (code search file id 53976246707)",
         _seeded(lambda: CourseLSTM(3, 6, HID, 2, 7)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 6)),
         output="B",
         idioms=("h_0 ... .to(x.device)", "h_n.permute(1, 0, 2).contiguous().view(x.size(0), -1)",
                 "ReLU before and after fc1")),
    Case("mstsn_gru",
         "https://github.com/nuist-yjx/MSTSN/blob/main/Models/TEM/GRU.py",
         _seeded(lambda: MSTSNGRU(4, HID, 2, 2)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 4)),
         output="BT",
         idioms=("optional argument hidden=None", "x.data.new(...).fill_(0).float()",
                 "output.reshape(-1, H) -> fc -> reshape(B, T, -1)")),
    Case("myprediction_gru",
         "https://github.com/PepsiC0/MyPrediction/blob/main/model/GRU.py",
         _seeded(lambda: MyPredictionGRU(4, HID, 2, 2)),
         inputs=lambda m, B, T, rng: _x(floats(rng, T, B, 4)),
         layout="time_major", output="TB",
         idioms=("s, b, h = x.shape", "x.view(s * b, h) -> fc -> x.view(s, b, -1)", "time-major GRU")),
    Case("udacity_char_rnn",
         "https://github.com/udacity/deep-learning-v2-pytorch/tree/master/recurrent-neural-networks/char-rnn",
         _seeded(lambda: UdacityCharRNN(10)),
         inputs=lambda m, B, T, rng: (onehot(rng, B, T, 10), m.init_hidden(B)),
         output="BT_flat", roles=("x", "hidden"),
         idioms=("forward(x, hidden)", "init_hidden with weight.new(...).zero_()",
                 "out.contiguous().view(-1, n_hidden) -> (B*T, chars)")),
    Case("udacity_sentiment_rnn",
         "https://github.com/udacity/deep-learning-v2-pytorch/tree/master/sentiment-rnn",
         _seeded(lambda: UdacitySentimentRNN(VOCAB, 1, EMB, HID, 2)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, B, T), m.init_hidden(B)),
         output="BT", roles=("x", "hidden"), ids=True,
         idioms=("forward(x, hidden)", "lstm_out.contiguous().view(-1, hidden_dim)", "sigmoid per step",
                 "sig_out.view(batch_size, -1)[:, -1]")),
    Case("floydhub_grunet",
         "https://blog.floydhub.com/gru-with-pytorch/",
         _seeded(lambda: GRUNet(5, HID, 1, 2)),
         inputs=lambda m, B, T, rng: (floats(rng, B, T, 5), m.init_hidden(B)),
         output="B", roles=("x", "hidden"),
         idioms=("forward(x, h) returning (out, h)", "init_hidden with weight.new(...).zero_().to(device)",
                 "fc(relu(out[:,-1]))")),
    Case("stockpredict_last_days",
         "https://github.com/xiaojihh/stockPredict/blob/main/model.py",
         _seeded(lambda: StockPredictLSTM()),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 1)),
         output="BT",
         idioms=("self.lstm(x, None)", "r_out[:, -pred_days:, :] (last steps)", "nn.Sequential(nn.Linear)")),
    Case("ersw_rnn_sequential_head",
         "https://github.com/huawenbo/ERSW-project/blob/main/model_development/RNN.py",
         _seeded(lambda: ERSWRNN(6, HID, 2, 8, 3)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 6)),
         output="B",
         idioms=("h_n[-1,:,:]", "nn.Sequential(Linear, Tanh, Linear, Sigmoid)")),
    Case("scaled_forecaster",
         "GitHub project plan, LSTM 7-day forecaster (code search file id 53889631468)",
         _seeded(lambda: ScaledForecaster()),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, 6)),
         output="B",
         idioms=("nn.Sequential(Linear, ReLU, Linear, Sigmoid) head", "scalar arithmetic * 100")),
    Case("grucell_forecaster",
         "GitHub GRUCell forecaster (code search file id 66797748111)",
         _seeded(lambda: GRUCellForecaster(3, HID)),
         inputs=lambda m, B, T, rng: (floats(rng, B, T, 3), None),
         output="BT", roles=("x", "hidden"),
         idioms=("nn.GRUCell in a Python loop", "hidden = x.new_zeros(...) when None", "x.dim() branch",
                 "fc(hidden).unsqueeze(1) + torch.cat(outputs, dim=1)")),
    Case("d2stgnn_rnn_layer",
         "https://github.com/zezhishao/D2STGNN (RNNLayer)",
         _seeded(lambda: D2STGNNRNNLayer(HID)),
         inputs=lambda m, B, T, rng: _x(floats(rng, B, T, HID)),
         output="TB",
         idioms=("torch.zeros_like(X[:, 0, :])", "nn.GRUCell in a Python loop", "torch.stack(output, dim=0)")),
    # ---- prakashpandey9/Text-Classification-Pytorch: self.batch_size zeros, so B is the example's --------
    Case("pp_text_lstm", "https://github.com/prakashpandey9/Text-Classification-Pytorch/blob/master/models/LSTM.py",
         _seeded(lambda: PPTextLSTM(3, 2, HID, VOCAB, EMB)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)), output="B", ids=True,
         idioms=("forward(input_sentence, batch_size=None)", "Variable(torch.zeros(1, self.batch_size, H))",
                 "input.permute(1, 0, 2)", "self.label(final_hidden_state[-1])")),
    Case("pp_text_lstm_attn", "https://github.com/prakashpandey9/Text-Classification-Pytorch/blob/master/models/LSTM_Attn.py",
         _seeded(lambda: PPTextLSTMAttn(3, 2, HID, VOCAB, EMB)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)), output="B", ids=True,
         idioms=("attention whose query is h_n: torch.bmm(lstm_output, hidden.unsqueeze(2)).squeeze(2)",
                 "F.softmax(attn_weights, 1)", "torch.bmm(lstm_output.transpose(1, 2), w.unsqueeze(2)).squeeze(2)")),
    Case("pp_text_rnn", "https://github.com/prakashpandey9/Text-Classification-Pytorch/blob/master/models/RNN.py",
         _seeded(lambda: PPTextRNN(3, 2, HID, VOCAB, EMB)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)), output="B", ids=True,
         idioms=("2-layer bidirectional nn.RNN", "h_n.permute(1, 0, 2).contiguous().view(B, 4H)")),
    Case("pp_text_rcnn", "https://github.com/prakashpandey9/Text-Classification-Pytorch/blob/master/models/RCNN.py",
         _seeded(lambda: PPTextRCNN(3, 2, HID, VOCAB, EMB)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)), output="B", ids=True,
         idioms=("torch.cat((output, input), 2): a recurrent layer's output beside its input",
                 "F.max_pool1d(y, y.size()[2]) then squeeze(2)")),
    Case("pp_text_self_attention", "https://github.com/prakashpandey9/Text-Classification-Pytorch/blob/master/models/selfAttention.py",
         _seeded(lambda: PPTextSelfAttention(3, 2, HID, VOCAB, EMB)),
         inputs=lambda m, B, T, rng: _x(ids_bt(rng, B, T)), output="B", ids=True,
         idioms=("structured self-attention: r heads softmaxed over time (dim=2)", "torch.bmm(A, output)",
                 "hidden_matrix.view(-1, size()[1] * size()[2])")),
    # ---- 649453932/Chinese-Text-Classification-Pytorch: forward takes the tuple (ids, seq_len) ----
    Case("ctc_text_rnn", "https://github.com/649453932/Chinese-Text-Classification-Pytorch/blob/master/models/TextRNN.py",
         _seeded(lambda: CTCTextRNN(CTCConfig())),
         inputs=lambda m, B, T, rng: ((ids_bt(rng, B, T), torch.full((B,), T)),), output="B", ids=True,
         idioms=("forward(self, x) with x, _ = x (ids, seq_len)", "padding_idx=n_vocab - 1",
                 "2-layer bidirectional LSTM", "self.fc(out[:, -1, :])")),
    Case("ctc_text_rnn_att", "https://github.com/649453932/Chinese-Text-Classification-Pytorch/blob/master/models/TextRNN_Att.py",
         _seeded(lambda: _filled_w(CTCTextRNNAtt(CTCConfig()))),
         inputs=lambda m, B, T, rng: ((ids_bt(rng, B, T), torch.full((B,), T)),), output="B", ids=True,
         idioms=("forward(self, x) with x, _ = x", "F.softmax(torch.matmul(tanh(H), self.w), dim=1).unsqueeze(-1)",
                 "torch.sum(H * alpha, 1)", "relu, fc1, fc")),
    Case("ctc_text_rcnn", "https://github.com/649453932/Chinese-Text-Classification-Pytorch/blob/master/models/TextRCNN.py",
         _seeded(lambda: CTCTextRCNN(CTCConfig(pad_size=7))),
         inputs=lambda m, B, T, rng: ((ids_bt(rng, B, T), torch.full((B,), T)),), output="B", ids=True,
         idioms=("forward(self, x) with x, _ = x", "torch.cat((embed, out), 2): the embeddings beside the output",
                 "nn.MaxPool1d(pad_size) over the padded sentence", ".squeeze()")),
]

CASES += [
    Case("salesforce_awd_lstm",
         "https://github.com/salesforce/awd-lstm-lm/blob/master/model.py (+ weight_drop.py, locked_dropout.py, "
         "embed_regularize.py)",
         _seeded(lambda: AWDRNNModel('LSTM', VOCAB, EMB, HID, 3, dropout=0.4, dropouth=0.25, dropouti=0.4,
                                     dropoute=0.1, wdrop=0.5, tie_weights=True)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, B, T).t().contiguous(), m.init_hidden(B)),
         layout="time_major", output="TB", roles=("x", "hidden"), ids=True,
         idioms=("one nn.LSTM module per layer, of different widths", "hidden: a list of one (h, c) per module",
                 "WeightDrop on weight_hh_l0", "LockedDropout", "embedded_dropout", "decoder tied to the embedding",
                 "output.view(T * B, H) then decoded.view(T, B, V)")),
    Case("absa_pytorch_lstm",
         "https://github.com/songyouwei/ABSA-PyTorch/blob/master/models/lstm.py (+ layers/dynamic_rnn.py)",
         _seeded(lambda: ABSALSTM(np.random.default_rng(0).standard_normal((VOCAB, EMB)), EMB, HID, 3)),
         inputs=lambda m, B, T, rng: ([pad_after(ids_bt(rng, B, T), lengths_for(B, T, False))],),
         output="B", ids=True,
         idioms=("forward(inputs) with inputs[0] the ids", "x_len = torch.sum(ids != 0, dim=-1)",
                 "torch.sort(-x_len)[1]: rows sorted by hand", "pack_padded_sequence(enforce_sorted=True)",
                 "torch.transpose(ht, 0, 1)[x_unsort_idx]", "nn.Embedding.from_pretrained")),
    Case("gru4rec_session_step",
         "https://github.com/hungthanhpham94/GRU4REC-pytorch/blob/master/lib/model.py",
         _seeded(lambda: GRU4REC(VOCAB, HID, VOCAB, batch_size=1)),
         inputs=lambda m, B, T, rng: (ids_bt(rng, 1, 1)[:, 0], m.init_hidden()),
         kind="step", output="B", roles=("x", "hidden"), ids=True,
         seq=lambda B, T, rng: ids_bt(rng, B, T), init=lambda m: m.init_hidden(),
         step=_step_default, feed=_feed_default,
         idioms=("step module in a user loop", "one-hot by onehot_buffer.zero_().scatter_(1, ids.view(-1, 1), 1)",
                 "time-major GRU on one step", "output.view(-1, H)", "tanh of the item scores")),
]

BY_NAME = {c.name: c for c in CASES}
