"""Generate Shakespeare-like text, one character at a time, with a character-level LSTM running
on fastrnn; then time the same generation in fastrnn and (if installed) PyTorch.

    python examples/charlm/generate.py
    python examples/charlm/generate.py --prompt "HAMLET:" --tokens 500 --temperature 0.6 --seed 7

The model (charlm.frnn, next to this file) is Embedding(63, 64) -> LSTM(256) -> LSTM(256) ->
Dense(63, log_softmax), trained with PyTorch by train.py on Shakespeare's plays (see README.md
here). It needs only NumPy and fastrnn: the prompt goes through a fastrnn Stream one character
per step, then each step's log-probabilities choose the next character (the argmax with
--temperature 0, else a sample from softmax(log_p / temperature), seeded), which is fed back in.

The speed test decodes --bench-tokens characters greedily after the prompt, batch 1, one thread,
with fastrnn and with torch.nn.Embedding/LSTM/Linear holding the same weights (copied from the
fastrnn model's layers, which keep PyTorch's layout), checks that both chose the same characters
and gave the same next-character probabilities (within 1e-5), and prints both speeds.

The functions here (CharLM, generate, greedy_fastrnn, torch_modules, greedy_torch) are what
tests/test_examples.py uses (the web page in ../web/ samples in the client with its own seeded
rule, so a seed there gives other text than here).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import fastrnn

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "charlm.frnn")
TORCH_VERSION = "2.13.0"
DEFAULT_TEMPERATURE = 0.6     # lower: safer, more repetitive text; higher: more invented words


class CharLM:
    """The loaded model (immutable, shareable by any number of threads and tasks) and its
    vocabulary. vocab.json is looked for next to the model file."""

    def __init__(self, model_path=DEFAULT_MODEL, vocab_path=None):
        self.model_path = model_path
        self.model = fastrnn.load(model_path)
        vocab_path = vocab_path or os.path.join(os.path.dirname(os.path.abspath(model_path)), "vocab.json")
        with open(vocab_path, encoding="utf-8") as f:
            self.meta = json.load(f)
        self.chars = self.meta["chars"]
        self.index = {c: i for i, c in enumerate(self.chars)}
        if len(self.chars) != self.model.output_size:
            raise ValueError(f"{vocab_path} has {len(self.chars)} characters but {model_path} "
                             f"predicts {self.model.output_size}")

    def encode(self, text):
        """Ids of the characters of `text` that the model knows (others are skipped)."""
        return [self.index[c] for c in text if c in self.index]

    def unknown(self, text):
        return sorted({c for c in text if c not in self.index})


def pick(logp, temperature, rng):
    """The next id from one step's log-probabilities (float32 (vocab,)): the argmax when
    temperature <= 0, else a draw from softmax(logp / temperature) using rng."""
    if temperature <= 0:
        return int(np.argmax(logp))
    z = logp.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(cdf) - 1))


def generate(lm, prompt, tokens, temperature=DEFAULT_TEMPERATURE, seed=0, stream=None):
    """Yield `tokens` generated characters, one per step, after feeding `prompt` (an empty one
    starts from a newline, as speeches do). `stream`: a Stream of lm.model with batch 1 to use
    (it is reset first); by default a new one. Same arguments, same characters."""
    return (ch for ch in generate_steps(lm, prompt, tokens, temperature, seed, stream) if ch is not None)


def generate_steps(lm, prompt, tokens, temperature=DEFAULT_TEMPERATURE, seed=0, stream=None):
    """generate(), yielding after every model step: None after each prompt character, then the
    generated characters. A server stepping one Stream per client in its event loop awaits
    between steps so that a long prompt does not hold up its other clients."""
    stream = stream if stream is not None else lm.model.stream(batch_size=1)
    stream.reset()
    rng = np.random.default_rng(seed)
    out = np.empty((1, lm.model.output_size), np.float32)   # step_into writes here: no allocation
    x = np.empty(1, np.int64)
    for i in lm.encode(prompt) or lm.encode("\n"):
        x[0] = i
        stream.step_into(x, out)
        yield None
    for k in range(tokens):
        x[0] = pick(out[0], temperature, rng)
        yield lm.chars[x[0]]
        if k + 1 < tokens:                                   # the last one needs no step
            stream.step_into(x, out)


# ---- the speed test ---------------------------------------------------------------------------
def greedy_fastrnn(lm, prompt_ids, n, record=False):
    """Greedy decoding of n ids after prompt_ids. Returns (ids, seconds for the n steps,
    log-probabilities of every step after the prompt's last one (n, vocab) if record)."""
    s = lm.model.stream(batch_size=1)
    out = np.empty((1, lm.model.output_size), np.float32)
    x = np.empty(1, np.int64)
    for i in prompt_ids:
        x[0] = i
        s.step_into(x, out)
    ids, logs = [], []
    t0 = time.perf_counter()
    for _ in range(n):
        if record:
            logs.append(out[0].copy())
        x[0] = out.argmax()
        ids.append(int(x[0]))
        s.step_into(x, out)
    dt = time.perf_counter() - t0
    return ids, dt, (np.array(logs) if record else None)


def torch_modules(model):
    """torch Embedding, LSTM (all the layers in one nn.LSTM) and Linear holding the weights of a
    fastrnn model Embedding -> forward LSTM layers -> Dense(log_softmax). fastrnn keeps PyTorch's
    layout (gates i, f, g, o; W_ih (4H, I); b_ih and b_hh apart), so they copy as they are."""
    import torch
    emb, *recs, dense = model.layers
    assert isinstance(emb, fastrnn.Embedding) and isinstance(dense, fastrnn.Dense)
    assert dense.activation.kind == "log_softmax", dense.activation
    assert all(isinstance(r, fastrnn.Recurrent) and r.cell == "lstm" and r.direction == "forward"
               for r in recs)
    H = recs[0].hidden_size
    t = lambda a: torch.from_numpy(np.array(a, np.float32))   # a copy: fastrnn's are read-only
    t_emb = torch.nn.Embedding(*emb.weight.shape)
    t_lstm = torch.nn.LSTM(emb.weight.shape[1], H, num_layers=len(recs), batch_first=True)
    t_fc = torch.nn.Linear(dense.weight.shape[1], dense.weight.shape[0])
    with torch.no_grad():
        t_emb.weight.copy_(t(emb.weight))
        for k, r in enumerate(recs):
            w = r.weights[0]
            for name, key in (("weight_ih", "W_ih"), ("weight_hh", "W_hh"), ("bias_ih", "b_ih"),
                              ("bias_hh", "b_hh")):
                getattr(t_lstm, f"{name}_l{k}").copy_(t(w[key]))
        t_fc.weight.copy_(t(dense.weight))
        t_fc.bias.copy_(t(dense.bias))
    return t_emb.eval(), t_lstm.eval(), t_fc.eval()


def greedy_torch(mods, prompt_ids, n, record=False):
    """greedy_fastrnn's loop in torch: one step at a time, carrying (h, c)."""
    import torch
    emb, lstm, fc = mods
    logs, ids = [], []
    with torch.inference_mode():
        state = None
        x = torch.tensor([prompt_ids], dtype=torch.long)          # the prompt in one call
        y, state = lstm(emb(x), state)
        logp = torch.log_softmax(fc(y[:, -1]), dim=-1)
        t0 = time.perf_counter()
        for _ in range(n):
            if record:
                logs.append(logp[0].numpy().copy())
            i = int(logp.argmax())
            ids.append(i)
            y, state = lstm(emb(torch.tensor([[i]])), state)
            logp = torch.log_softmax(fc(y[:, -1]), dim=-1)
        dt = time.perf_counter() - t0
    return ids, dt, (np.array(logs) if record else None)


def speed_test(lm, prompt_ids, n):
    """Print fastrnn's and torch's greedy tokens/s on the same weights and whether they agree.
    torch is timed as it comes (its LSTM runs on oneDNN on x86) and with oneDNN off (its native
    kernels, faster at batch 1). Returns a dict of the numbers (None without torch)."""
    greedy_fastrnn(lm, prompt_ids, min(n, 50))                    # warm up
    f_ids, f_dt, _ = greedy_fastrnn(lm, prompt_ids, n)
    f_rate = n / f_dt
    print(f"speed: greedy decoding of {n} characters after the prompt, batch 1, 1 thread")
    print(f"{'fastrnn:':22}{f_rate:8,.0f} tokens/s {f_dt / n * 1e6:7.1f} us/token")
    try:
        import torch
    except ImportError:
        print(f"{'torch:':22}not installed; to compare with it: pip install torch=={TORCH_VERSION}")
        return {"fastrnn_tokens_per_s": f_rate, "torch_tokens_per_s": None}
    torch.set_num_threads(1)
    mods = torch_modules(lm.model)
    rates = {}
    onednn = torch.backends.mkldnn.enabled
    try:
        for label, dnn in (("", onednn), (" without oneDNN", False)):
            torch.backends.mkldnn.enabled = dnn
            greedy_torch(mods, prompt_ids, min(n, 50))             # warm up
            ids, dt, _ = greedy_torch(mods, prompt_ids, n)
            rates[label] = (n / dt, ids)
            print(f"{'torch' + label + ':':22}{n / dt:8,.0f} tokens/s {dt / n * 1e6:7.1f} us/token"
                  f"  (fastrnn is {f_rate * dt / n:.1f}x faster)")
    finally:
        torch.backends.mkldnn.enabled = onednn
    t_rate = rates[""][0]
    # the same log-probabilities at every step (both fed fastrnn's choices, so a near-tie that
    # the two break differently cannot hide a real difference further on)
    m = min(n, 300)
    _, _, f_log = greedy_fastrnn(lm, prompt_ids, m, record=True)
    with torch.inference_mode():
        emb, lstm, fc = mods
        x = torch.tensor([list(prompt_ids) + f_ids[:m - 1]], dtype=torch.long)
        t_log = torch.log_softmax(fc(lstm(emb(x))[0]), dim=-1)[0, len(prompt_ids) - 1:].numpy()
    # probabilities are O(1): the accuracy contract's 1e-5 applies to them (a log-probability of
    # -20 carries float32 rounding of ~1e-6 relative, i.e. up to ~2e-5 absolute)
    diff = float(np.abs(np.exp(f_log.astype(np.float64)) - np.exp(t_log.astype(np.float64))).max())
    same = min(next((k for k, (a, b) in enumerate(zip(f_ids, ids)) if a != b), n)
               for _, ids in rates.values())
    if same == n and diff <= 1e-5:
        print(f"torch agrees: the same {n} greedy characters; next-character probabilities "
              f"within {diff:.1e} over {m} steps (tolerance 1e-5)")
    else:
        print(f"torch DISAGREES: greedy characters equal for the first {same} of {n}; largest "
              f"probability difference {diff:.1e} over {m} steps (tolerance 1e-5)")
    return {"fastrnn_tokens_per_s": f_rate, "torch_tokens_per_s": t_rate,
            "torch_native_tokens_per_s": rates[" without oneDNN"][0], "same_tokens": same == n,
            "max_prob_diff": diff}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompt", default="ROMEO:\n",
                    help="text to start from; \\n is a newline (default %(default)r)")
    ap.add_argument("--tokens", type=int, default=300, help="characters to generate (default 300)")
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                    help="0 = greedy; lower is safer, higher is wilder (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--bench-tokens", type=int, default=1000,
                    help="characters decoded by the speed test (0: no speed test; default 1000)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="a .frnn file (vocab.json next to it)")
    args = ap.parse_args(argv)

    args.prompt = args.prompt.replace("\\n", "\n")           # --prompt "HAMLET:\nTo be" works in any shell
    lm = CharLM(args.model)
    meta = lm.meta
    print(f"fastrnn {fastrnn.__version__}, {fastrnn.cpu_info()['isa']} kernels: "
          f"{os.path.basename(args.model)} = {lm.model}")
    if "final_val_loss" in meta:
        print(f"a character-level LSTM trained on Shakespeare's plays ({meta['steps']} steps, "
              f"validation loss {meta['final_val_loss']:.2f} nats/char); temperature "
              f"{args.temperature}, seed {args.seed}")
    bad = lm.unknown(args.prompt)
    if bad:
        print(f"(skipping prompt characters the model does not know: {''.join(bad)!r})")
    print("-" * 72)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()
    text = args.prompt
    for ch in generate(lm, args.prompt, args.tokens, args.temperature, args.seed):
        sys.stdout.write(ch)
        sys.stdout.flush()
        text += ch
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    print("-" * 72)
    if args.bench_tokens > 0:
        speed_test(lm, lm.encode(args.prompt) or lm.encode("\n"), args.bench_tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
