"""A command-line client of `fastrnn serve` running the character-level LSTM: the model steps on
the server, the sampling happens here, exactly as the web page's charlm.js does it in a browser.

    python examples/web/server.py --port 8000           # or: fastrnn serve examples/charlm/charlm.frnn
    python examples/web/client.py --url ws://127.0.0.1:8000 --prompt "ROMEO:" --tokens 200 --seed 1

The same (prompt, tokens, temperature, seed) gives the same text here and in the page: both
implement the one sampling rule below with float64 arithmetic that IEEE 754 makes bit-identical
in Python and JavaScript (only +, -, *, / on doubles, in the same order; no library exp, whose
last bit differs between libm and V8).

Protocol (docs/serving.md, binary WebSocket frames on /v1/ws): the prompt's character ids go as
ONE message of many steps with the start flag (in messages of at most 4096 steps if longer); the
server answers one record per step with the model's output, the next character's 63
log-probabilities as float32. The output of the prompt's last step gives the first character;
each sampled character goes back as a one-step message, whose output gives the next; the last
character goes with the end flag, which ends the sequence on the server (its slot is freed).
An empty prompt starts from a newline, as speeches do; characters outside the vocabulary are
skipped.

The sampling rule (charlm.js implements the same, line for line):
- PRNG: mulberry32 (a public-domain generator with a 32-bit state, common in JavaScript). seed: an integer in [0, 2**32). Each draw:
      a = (a + 0x6D2B79F5) mod 2**32;  t = a
      t = imul(t ^ (t >> 15), t | 1)
      t = t ^ (t + imul(t ^ (t >> 7), t | 61))       (mod 2**32)
      u32 = t ^ (t >> 14);   uniform = u32 / 2**32     (exact in float64, in [0, 1))
  (>> on the unsigned 32-bit value; imul: the low 32 bits of the product.)
- One step's output l (float32 log-probabilities, read as float64, which is exact):
  temperature 0: the argmax (the first on ties); no draw.
  temperature T > 0: m = max(l); w[i] = exp((l[i] - m) / T) with exp_ below; total = w[0] +
  w[1] + ... in index order; x = uniform() * total; the first i whose running sum (the same
  additions in the same order) exceeds x; the last id if none does.
- exp_(x) for x <= 0: 0 below -700; else k = floor(x * (1/ln 2) + 0.5), r = (x - k * LN2_HI) -
  k * LN2_LO (Cody-Waite: LN2_HI has its low 32 bits zero, so k * LN2_HI is exact), a degree-13
  Taylor polynomial of e**r by Horner's rule with coefficients c[n] = c[n-1] / n, times 2**k
  (exact: the result stays a normal double). Within 2 ulp of math.exp (tests/test_examples.py).

This is not the sampler of examples/charlm/generate.py (NumPy's PCG64, which a browser would
have to reimplement in 128-bit arithmetic): the same seed gives other text there.
"""
import argparse
import asyncio
import json
import math
import os
import struct
import sys
import uuid

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_VOCAB = os.path.join(os.path.dirname(HERE), "charlm", "vocab.json")
DEFAULT_TEMPERATURE = 0.6
MAX_STEPS = 4096            # the server's limit of steps per message
START, END = 1, 2           # client -> server frame flags
LAST, ENDED = 1, 2          # server -> client record flags

# ---- the sampling rule (module note; charlm.js has the same) --------------------------------------
M32 = 0xFFFFFFFF


class Mulberry32:
    """mulberry32: uniform() gives the same doubles as charlm.js's Mulberry32 with the same seed."""

    def __init__(self, seed):
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= M32:
            raise ValueError(f"seed: an integer in [0, 2**32), got {seed!r}")
        self.a = seed

    def next_u32(self):
        self.a = (self.a + 0x6D2B79F5) & M32
        t = self.a
        t = ((t ^ (t >> 15)) * (t | 1)) & M32
        t = (t ^ (t + (((t ^ (t >> 7)) * (t | 61)) & M32))) & M32
        return t ^ (t >> 14)

    def uniform(self):
        return self.next_u32() / 4294967296.0


LN2_HI = 6.93147180369123816490e-01     # ln 2's leading bits (the low 32 bits of the double are 0)
LN2_LO = 1.90821492927058770002e-10     # ln 2 - LN2_HI
INV_LN2 = 1.44269504088896338700e+00
EXP_C = [1.0]
for _n in range(1, 14):
    EXP_C.append(EXP_C[-1] / _n)         # 1/n!, computed the same way in charlm.js
del _n


def exp_(x):
    """e**x for x <= 0 from +, -, *, / only (bit-identical to charlm.js's exp_)."""
    if x < -700.0:
        return 0.0
    k = math.floor(x * INV_LN2 + 0.5)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = EXP_C[13]
    for n in range(12, -1, -1):
        p = p * r + EXP_C[n]
    return math.ldexp(p, k)


def pick(logits, temperature, rng):
    """The next id from one step's output (the model's float32 log-probabilities) by the module
    note's rule: the argmax at temperature 0, else a draw from softmax(logits / temperature)."""
    l = [float(v) for v in np.asarray(logits, np.float32)]       # float32 -> float64: exact
    if temperature <= 0:
        best = 0
        for i in range(1, len(l)):
            if l[i] > l[best]:
                best = i
        return best
    m = max(l)
    w = [exp_((v - m) / temperature) for v in l]
    total = 0.0
    for v in w:
        total += v
    x = rng.uniform() * total
    acc = 0.0
    for i, v in enumerate(w):
        acc += v
        if acc > x:
            return i
    return len(w) - 1


# ---- the vocabulary and the wire ------------------------------------------------------------------
def load_chars(path=DEFAULT_VOCAB):
    with open(path, encoding="utf-8") as f:
        return json.load(f)["chars"]


def encode(chars, text):
    """Ids of the characters of text that are in the vocabulary (others skipped); an empty result
    is a newline's id (speeches start after one)."""
    index = {c: i for i, c in enumerate(chars)}
    ids = [index[c] for c in text if c in index]
    return ids or [index["\n"]]


def frame(sid, ids, flags):
    """A client -> server binary frame: flags (u8), id length (u16), id, k (u32), k int32 ids."""
    e = sid.encode()
    return struct.pack("<BH", flags, len(e)) + e + struct.pack("<I", len(ids)) + np.asarray(ids, "<i4").tobytes()


def records(data, out_size):
    """A server -> client binary frame -> its step records [(flags, id, step, float32 output)]."""
    out, pos = [], 0
    while pos < len(data):
        flags, n = struct.unpack_from("<BH", data, pos)
        sid = bytes(data[pos + 3:pos + 3 + n]).decode()
        (step,) = struct.unpack_from("<I", data, pos + 3 + n)
        pos += 7 + n
        if pos + 4 * out_size > len(data):
            raise ValueError(f"a step record cut short: {len(data) - pos} bytes for {out_size} float32")
        out.append((flags, sid, step, np.frombuffer(data, "<f4", out_size, pos)))
        pos += 4 * out_size
    return out


class ServerError(RuntimeError):
    pass


async def _last_record(ws, sid, out_size):
    """Wait for the record of sid's current message's last step; -> (flags, its output)."""
    import aiohttp
    while True:
        m = await ws.receive()
        if m.type == aiohttp.WSMsgType.BINARY:
            for flags, rid, _, y in records(m.data, out_size):
                if rid == sid and flags & LAST:
                    return flags, y
        elif m.type == aiohttp.WSMsgType.TEXT:
            msg = json.loads(m.data)
            if "error" in msg:
                raise ServerError(f"server: {msg['error']} ({msg.get('status')})")
        else:
            raise ServerError(f"the WebSocket closed ({m.type.name}) before the sequence ended")


async def generate(ws, chars, prompt, tokens, temperature=DEFAULT_TEMPERATURE, seed=0, on_char=None, sid=None):
    """Generate `tokens` characters after `prompt` on an open aiohttp WebSocket to /v1/ws (the
    module note's protocol and rule) -> the text. on_char(ch) is called as each one is picked."""
    rng = Mulberry32(seed)
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature: a number >= 0, got {temperature!r}")
    sid = sid or "client-" + uuid.uuid4().hex
    ids = encode(chars, prompt)
    n = len(chars)
    for k in range(0, len(ids), MAX_STEPS):
        last = k + MAX_STEPS >= len(ids)
        await ws.send_bytes(frame(sid, ids[k:k + MAX_STEPS], (START if k == 0 else 0) | (END if last and tokens == 0 else 0)))
        _, y = await _last_record(ws, sid, n)
    text = []
    for k in range(tokens):
        i = pick(y, temperature, rng)
        text.append(chars[i])
        if on_char is not None:
            on_char(chars[i])
        await ws.send_bytes(frame(sid, [i], END if k + 1 == tokens else 0))
        _, y = await _last_record(ws, sid, n)
    return "".join(text)


def ws_url(url):
    """ws://host:port (or http://...) -> its /v1/ws; a URL with a path is taken as it is."""
    if url.startswith("http"):
        url = "ws" + url[4:]
    scheme, _, rest = url.partition("://")
    return url if "/" in rest.strip("/") else f"{scheme}://{rest.rstrip('/')}/v1/ws"


async def generate_url(url, chars, prompt, tokens, temperature=DEFAULT_TEMPERATURE, seed=0, on_char=None):
    """generate() on a WebSocket of its own to the server at url."""
    import aiohttp
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url(url)) as ws:
            return await generate(ws, chars, prompt, tokens, temperature, seed, on_char)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8000", help="the server (default %(default)s)")
    ap.add_argument("--prompt", default="ROMEO:\n", help="text to start from; \\n is a newline (default %(default)r)")
    ap.add_argument("--tokens", type=int, default=200, help="characters to generate (default 200)")
    ap.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                    help="0 = greedy; lower is safer, higher is wilder (default %(default)s)")
    ap.add_argument("--seed", type=int, default=None, help="sampling seed in [0, 2**32) (default: a random one)")
    ap.add_argument("--vocab", default=DEFAULT_VOCAB, help="the model's vocab.json (default: the bundled model's)")
    args = ap.parse_args(argv)
    import aiohttp
    prompt = args.prompt.replace("\\n", "\n")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    if args.tokens < 0:
        ap.error("--tokens: 0 or more")
    try:
        Mulberry32(seed)
        if not (args.temperature >= 0 and math.isfinite(args.temperature)):
            raise ValueError("temperature: a number >= 0")
    except ValueError as e:
        ap.error(str(e))

    def show(ch):
        sys.stdout.write(ch)
        sys.stdout.flush()
    sys.stdout.write(prompt)
    try:
        text = asyncio.run(generate_url(args.url, load_chars(args.vocab), prompt, args.tokens,
                                        args.temperature, seed, show))
    except (OSError, ServerError, aiohttp.ClientError) as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    if not (prompt + text).endswith("\n"):
        sys.stdout.write("\n")
    if args.seed is None:
        print(f"(seed {seed})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
