"""An async web service that streams text from the bundled character-level LSTM (fastrnn) to
browsers over a WebSocket, many clients at once, from one event loop.

    pip install aiohttp          # or: pip install ".[examples]"
    python examples/web/server.py --host 127.0.0.1 --port 8080 [--model examples/charlm/charlm.frnn]
    # then open http://127.0.0.1:8080/

Protocol (GET /generate, a WebSocket): the client sends JSON requests, one at a time,
    {"prompt": "ROMEO:\\n", "tokens": 300, "temperature": 0.6, "seed": 1}
(all optional: prompt "", tokens 200 (at most 5000), temperature 0.6 (0 = greedy), seed None =
a random one); the server answers with one message per generated character,
    {"token": "a"}
then {"done": true, "tokens": 300, "seconds": 0.05, "tokens_per_s": 6000.0, "seed": 1}, or
{"error": "..."} for a bad request. The same request always gives the same characters: they
are those of examples/charlm/generate.py's generate() with the same arguments.

Design:
- One fastrnn Model, loaded once and shared by every connection (a Model is immutable and
  thread-safe). Each connection gets its own Stream (its own LSTM state), used only by the
  task that serves that connection.
- The stream is stepped directly in the event loop: a step of this model is about a hundred
  microseconds, little more than handing it to a thread would cost. After every step (each
  prompt character fed, each character generated) the handler awaits asyncio.sleep(0), so
  every connected client advances a step in turn: sending, which usually completes at once,
  would not give the loop to the others, and a long prompt does not stall them.
  A model whose step takes milliseconds would instead be stepped in a thread
  (loop.run_in_executor): fastrnn releases the GIL around every step.
"""
import argparse
import asyncio
import importlib.util
import json
import os
import sys
import time

from aiohttp import WSMsgType, web

HERE = os.path.dirname(os.path.abspath(__file__))
CHARLM_DIR = os.path.join(os.path.dirname(HERE), "charlm")
DEFAULT_MODEL = os.path.join(CHARLM_DIR, "charlm.frnn")
MAX_TOKENS = 5000
MAX_PROMPT = 10000


def _load_charlm():
    """examples/charlm/generate.py as a module (the examples are not a package)."""
    spec = importlib.util.spec_from_file_location("charlm_generate", os.path.join(CHARLM_DIR, "generate.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


charlm = _load_charlm()
LM = web.AppKey("lm", charlm.CharLM)


def parse_request(data):
    """A client's JSON text -> (prompt, tokens, temperature, seed), or ValueError saying why not."""
    try:
        req = json.loads(data)
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(req, dict):
        raise ValueError("expected a JSON object {prompt, tokens, temperature, seed}")
    unknown = set(req) - {"prompt", "tokens", "temperature", "seed"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    prompt = req.get("prompt", "")
    tokens = req.get("tokens", 200)
    temperature = req.get("temperature", charlm.DEFAULT_TEMPERATURE)
    seed = req.get("seed")
    if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT:
        raise ValueError(f"prompt: a string of at most {MAX_PROMPT} characters")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or not 0 <= tokens <= MAX_TOKENS:
        raise ValueError(f"tokens: an integer in [0, {MAX_TOKENS}]")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not 0 <= temperature <= 10:
        raise ValueError("temperature: a number in [0, 10] (0 = greedy)")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError("seed: a non-negative integer, or null for a random one")
    return prompt, tokens, float(temperature), seed


async def generate_ws(request):
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    lm = request.app[LM]
    stream = lm.model.stream(batch_size=1)        # this connection's state; only this task uses it
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                prompt, tokens, temperature, seed = parse_request(msg.data)
            except ValueError as e:
                await ws.send_json({"error": str(e)})
                continue
            t0 = time.perf_counter()
            n = 0
            for ch in charlm.generate_steps(lm, prompt, tokens, temperature, seed, stream=stream):
                if ch is not None:                 # None: a prompt character went in
                    await ws.send_json({"token": ch})
                    n += 1
                await asyncio.sleep(0)             # let the other connections take their turn
            dt = time.perf_counter() - t0
            await ws.send_json({"done": True, "tokens": n, "seconds": round(dt, 6),
                                "tokens_per_s": round(n / dt, 1) if dt > 0 else None, "seed": seed})
    except ConnectionResetError:                   # the client went away mid-stream
        pass
    return ws


async def index(request):
    return web.Response(text=PAGE, content_type="text/html")


def make_app(model_path=DEFAULT_MODEL, vocab_path=None):
    """The aiohttp application: GET / (the page) and GET /generate (the WebSocket)."""
    app = web.Application()
    app[LM] = charlm.CharLM(model_path, vocab_path)
    app.router.add_get("/", index)
    app.router.add_get("/generate", generate_ws)
    return app


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fastrnn: Shakespeare, one character at a time</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:16px/1.45 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
 textarea{width:100%;box-sizing:border-box;font:15px ui-monospace,monospace;padding:.5rem}
 label{margin-right:1rem} input{width:5rem}
 button{font-size:1rem;padding:.35rem 1.2rem;margin-top:.6rem}
 pre{white-space:pre-wrap;background:#f6f5f0;border:1px solid #ddd;padding:1rem;min-height:12rem;
     font:15px/1.4 ui-monospace,monospace} #prompt-echo{color:#888} #stats{color:#666;font-size:.9rem}
</style></head><body>
<h1>Shakespeare, one character at a time</h1>
<p>A 2-layer character-level LSTM (fastrnn), streamed from the server over a WebSocket.</p>
<textarea id="prompt" rows="3">ROMEO:
</textarea>
<div><label>characters <input id="tokens" type="number" value="400" min="0" max="5000"></label>
<label>temperature <input id="temperature" type="number" value="0.6" step="0.1" min="0" max="10"></label>
<label>seed <input id="seed" type="number" placeholder="random" min="0"></label></div>
<button id="go">Generate</button>
<pre id="out"><span id="prompt-echo"></span><span id="text"></span></pre>
<div id="stats"></div>
<script>
const $ = id => document.getElementById(id);
let ws = null, queue = [];
function connect() {
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/generate");
  ws.onopen = () => { while (queue.length) ws.send(queue.shift()); };
  ws.onmessage = ev => {
    const m = JSON.parse(ev.data);
    if (m.token !== undefined) $("text").textContent += m.token;
    else if (m.done) { $("stats").textContent = m.tokens + " characters, " +
        Math.round(m.tokens_per_s).toLocaleString() + " characters/s (seed " + m.seed + ")";
        $("go").disabled = false; }
    else if (m.error) { $("stats").textContent = "error: " + m.error; $("go").disabled = false; }
  };
  ws.onclose = () => { ws = null; $("go").disabled = false; };
}
$("go").onclick = start;
function start() {
  const req = {prompt: $("prompt").value, tokens: parseInt($("tokens").value || "0"),
               temperature: parseFloat($("temperature").value || "0")};
  if ($("seed").value !== "") req.seed = parseInt($("seed").value);
  $("prompt-echo").textContent = req.prompt; $("text").textContent = ""; $("stats").textContent = "";
  $("go").disabled = true;
  const data = JSON.stringify(req);
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(data); else { queue.push(data); if (!ws) connect(); }
}
// /?prompt=...&tokens=...&temperature=...&seed=... fills the form and starts at once
const q = new URLSearchParams(location.search);
for (const k of ["prompt", "tokens", "temperature", "seed"]) if (q.has(k)) $(k).value = q.get(k);
if (q.has("prompt")) start();
</script></body></html>
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="a .frnn file with vocab.json next to it")
    args = ap.parse_args(argv)
    app = make_app(args.model)
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (WebSocket: /generate)", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    sys.exit(main())
