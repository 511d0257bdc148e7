"""The bundled examples: examples/charlm (the trained character-level LSTM: generate.py streams it
and compares with torch) and examples/web (the page and the command-line client that generate
text from it over `fastrnn serve`, sampling on the client's side).

The web tests start the real server (examples/web/server.py: fastrnn.serve's app plus the page)
on 127.0.0.1 with an ephemeral port, in process inside asyncio.run (no pytest-asyncio) or as the
command a user runs. Their oracle is an offline fastrnn Stream of the same model with client.py's
sampler: the text of every client (client.py over the WebSocket, and the page in a real headless
Chromium driven over the Chrome DevTools Protocol) must be exactly its text for the same
(prompt, tokens, temperature, seed).
"""
import asyncio
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp
import numpy as np
import pytest
import torch
from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARLM = os.path.join(ROOT, "examples", "charlm")
WEB = os.path.join(ROOT, "examples", "web")
MODEL = os.path.join(CHARLM, "charlm.frnn")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load("charlm_generate", os.path.join(CHARLM, "generate.py"))
server = _load("charlm_web_server", os.path.join(WEB, "server.py"))
client = _load("charlm_web_client", os.path.join(WEB, "client.py"))
LM = gen.CharLM(MODEL)


def _run(args, env_extra=None, timeout=180):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, os.path.join(CHARLM, "generate.py"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def offline(prompt, tokens, temperature, seed):
    return "".join(gen.generate(LM, prompt, tokens, temperature, seed))


# ---- (a) generate.py, as a user runs it ---------------------------------------------------------
def test_generate_script_reports_both_speeds_and_torch_agrees():
    r = _run(["--prompt", "JULIET:\n", "--tokens", "60", "--seed", "3", "--bench-tokens", "100"])
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "JULIET:\n" + offline("JULIET:\n", 60, gen.DEFAULT_TEMPERATURE, 3) in out   # the text
    lines = out.splitlines()
    f = [l for l in lines if l.startswith("fastrnn:")]
    t = [l for l in lines if l.startswith("torch:")]
    assert len(f) == 1 and "tokens/s" in f[0], out
    assert len(t) == 1 and "tokens/s" in t[0] and "faster" in t[0], out
    assert any(l.startswith("torch without oneDNN:") and "tokens/s" in l for l in lines), out
    assert any(l.startswith("torch agrees: the same 100 greedy characters") for l in lines), out
    assert "DISAGREES" not in out


def test_generate_script_without_torch(tmp_path):
    # a `torch` that cannot be imported, first on the path: the README's first command runs on
    # numpy + fastrnn alone and says how to get the comparison
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('torch is not installed')\n")
    path = os.pathsep.join([str(tmp_path)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    r = _run(["--tokens", "20", "--bench-tokens", "50"], {"PYTHONPATH": path})
    assert r.returncode == 0, r.stderr
    assert "fastrnn:" in r.stdout and "pip install torch==2.13.0" in r.stdout, r.stdout
    assert "Traceback" not in r.stderr


# ---- (b) a fastrnn Stream decodes what torch decodes --------------------------------------------
def test_stream_greedy_equals_torch_greedy():
    m = LM.model
    emb, l1, l2, dense = m.layers
    assert (l1.cell, l2.cell, dense.activation.kind) == ("lstm", "lstm", "log_softmax")
    torch.manual_seed(0)
    t_emb = torch.nn.Embedding(*emb.weight.shape)
    t_lstm = torch.nn.LSTM(emb.weight.shape[1], l1.hidden_size, num_layers=2, batch_first=True)
    t_fc = torch.nn.Linear(*dense.weight.shape[::-1])

    def c(a):                                                # a copy: fastrnn's are read-only
        return torch.tensor(np.array(a))

    with torch.no_grad():
        t_emb.weight.copy_(c(emb.weight))
        for k, layer in enumerate((l1, l2)):
            w = layer.weights[0]
            for tn, fn in (("weight_ih", "W_ih"), ("weight_hh", "W_hh"), ("bias_ih", "b_ih"),
                           ("bias_hh", "b_hh")):
                getattr(t_lstm, f"{tn}_l{k}").copy_(c(w[fn]))
        t_fc.weight.copy_(c(dense.weight))
        t_fc.bias.copy_(c(dense.bias))

    prompt = LM.encode("KING LEAR:\n")
    n = 50
    s = m.stream(batch_size=1)
    out = np.empty((1, m.output_size), np.float32)
    f_ids, f_logp = [], []
    for i in prompt:
        s.step_into(np.array([i]), out)
    for _ in range(n):
        f_logp.append(out[0].copy())
        f_ids.append(int(out.argmax()))
        s.step_into(np.array([f_ids[-1]]), out)

    t_ids, t_logp = [], []
    with torch.inference_mode():
        y, state = t_lstm(t_emb(torch.tensor([prompt])))
        logp = torch.log_softmax(t_fc(y[0, -1]), -1)
        for _ in range(n):
            t_logp.append(logp.numpy().copy())
            t_ids.append(int(logp.argmax()))
            y, state = t_lstm(t_emb(torch.tensor([[t_ids[-1]]])), state)
            logp = torch.log_softmax(t_fc(y[0, -1]), -1)

    assert f_ids == t_ids, (LM.chars, f_ids, t_ids)
    f_logp, t_logp = np.array(f_logp, np.float64), np.array(t_logp, np.float64)
    np.testing.assert_allclose(np.exp(f_logp), np.exp(t_logp), atol=1e-5, rtol=0)   # probabilities
    np.testing.assert_allclose(f_logp, t_logp, atol=1e-5, rtol=1e-4)                # log-probabilities
    assert "".join(LM.chars[i] for i in f_ids).strip()      # it says something


def test_generate_function_is_deterministic_and_greedy_matches_argmax():
    a = offline("ROMEO:\n", 40, 0.8, 11)
    assert a == offline("ROMEO:\n", 40, 0.8, 11) and len(a) == 40
    assert a != offline("ROMEO:\n", 40, 0.8, 12)
    ids, _, _ = gen.greedy_fastrnn(LM, LM.encode("ROMEO:\n"), 40)
    assert offline("ROMEO:\n", 40, 0, 0) == "".join(LM.chars[i] for i in ids)


# ---- (c) the web example: fastrnn serve steps, the client samples ---------------------------------
def oracle(prompt, tokens, temperature, seed):
    """The text any web client must produce: an offline batch-1 Stream fed the prompt (generate.py's
    encoding: unknown characters skipped, an empty prompt is a newline), then client.py's sampler
    on each step's output, each pick fed back."""
    m = LM.model
    s = m.stream(batch_size=1)
    out = np.empty((1, m.output_size), np.float32)
    for i in LM.encode(prompt) or LM.encode("\n"):
        s.step_into(np.array([i]), out)
    rng = client.Mulberry32(seed)
    text = []
    for k in range(tokens):
        i = client.pick(out[0], temperature, rng)
        text.append(LM.chars[i])
        if k + 1 < tokens:
            s.step_into(np.array([i]), out)
    return "".join(text)


def test_sampler_exp_prng_and_distribution():
    # exp_ is a real exp (within 2 ulp of libm's) from +, -, *, / only
    xs = np.concatenate([-np.logspace(-12, np.log10(699), 4000), np.linspace(-40, 0, 4001)])
    worst = max(abs(client.exp_(float(x)) - math.exp(x)) / math.exp(x) for x in xs)
    assert worst <= 2 * 2.0 ** -52, worst
    assert client.exp_(0.0) == 1.0 and client.exp_(-701.0) == 0.0 and client.exp_(-math.inf) == 0.0
    # mulberry32: the values of the common JavaScript function (a += 0x6D2B79F5; ...; >>> 0)
    for seed, want in ((0, [1144304738, 1416247, 958946056, 627933444]),
                       (1, [2693262067, 11749833, 2265367787, 4213581821]),
                       (4294967295, [3850105811, 813802916, 3073704848, 4054706436])):
        r = client.Mulberry32(seed)
        assert [r.next_u32() for _ in range(4)] == want
    for bad in (-1, 2 ** 32, 1.5, True):
        with pytest.raises(ValueError):
            client.Mulberry32(bad)
    # temperature 0: the argmax (the first of a tie), and no draw
    r = client.Mulberry32(5)
    assert client.pick(np.float32([0.1, 2.0, -1.0, 2.0]), 0, r) == 1 and r.a == 5
    # T > 0 draws from softmax(l / T): 40,000 picks match the probabilities (within 5 sigma)
    l = np.log(np.float32([0.5, 0.3, 0.15, 0.05]))
    for T in (1.0, 0.5):
        r = client.Mulberry32(123)
        counts = np.bincount([client.pick(l, T, r) for _ in range(40000)], minlength=4)
        p = np.exp(l.astype(np.float64) / T)
        p /= p.sum()
        assert np.all(np.abs(counts / 40000 - p) <= 5 * np.sqrt(p * (1 - p) / 40000)), (T, counts, p)


async def _in_process(coro):
    """Start examples/web/server.py's app on 127.0.0.1:<ephemeral>; -> coro(session, port)."""
    runner = web.AppRunner(server.make_app(MODEL))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        async with aiohttp.ClientSession() as session:
            return await coro(session, runner.addresses[0][1])
    finally:
        await runner.cleanup()


def _live(metrics):
    return int(next(l for l in metrics.splitlines() if l.startswith("fastrnn_live_sequences ")).split()[1])


def test_web_client_gives_the_oracle_text_concurrent_clients_independent():
    long_prompt = "MACBETH:\n" + "".join(LM.chars[(7 * k) % 63] for k in range(5000))
    reqs = [("ROMEO:", 150, 0.0, 1),                 # greedy
            ("HAMLET:\n", 200, 0.8, 5),
            ("HAMLET:\n", 200, 0.8, 6),               # another seed: other text
            ("First Witch:\n", 120, 1.3, 4294967295),
            ("", 60, 0.6, 9),                         # an empty prompt starts from a newline
            ("Éh, QUEEN~ #1:", 80, 0.5, 2),           # characters outside the vocabulary skipped
            (long_prompt, 30, 0.7, 3),                # a prompt of more than 4096 steps: two messages
            ("HAMLET:\n", 200, 0.8, 5)]               # the second's twin

    async def run(session, port):
        base = f"http://127.0.0.1:{port}"
        async with session.get(base + "/") as r:
            page = (r.status, r.headers["Content-Type"], await r.text())
        async with session.get(base + "/charlm.js") as r:
            js = (r.status, r.headers["Content-Type"], await r.text())
        async with session.get(base + "/vocab.json") as r:
            vocab = json.loads(await r.text())
        texts = await asyncio.gather(*(client.generate_url(f"ws://127.0.0.1:{port}", LM.chars, *q) for q in reqs))
        # one socket, two generations in turn; each ends its sequence: no slot stays taken
        async with session.ws_connect(base + "/v1/ws") as ws:
            again = [await client.generate(ws, LM.chars, "ROMEO:", 150, 0.0, 1),
                     await client.generate(ws, LM.chars, "JULIET:\n", 0, 0.6, 1)]
            live = _live(await (await session.get(base + "/metrics")).text())
        return page, js, vocab, texts, again, live

    page, js, vocab, texts, again, live = asyncio.run(asyncio.wait_for(_in_process(run), 300))
    assert page[0] == 200 and page[1].startswith("text/html") and '<script src="charlm.js">' in page[2]
    assert js[0] == 200 and "javascript" in js[1] and "class Mulberry32" in js[2]
    assert vocab["chars"] == LM.chars
    for q, text in zip(reqs, texts):
        assert len(text) == q[1] and text == oracle(*q), q[:1]
    assert texts[1] == texts[-1] and texts[1] != texts[2]
    ids, _, _ = gen.greedy_fastrnn(LM, LM.encode("ROMEO:"), 150)       # greedy: plain argmax decoding
    assert texts[0] == "".join(LM.chars[i] for i in ids)
    assert again == [texts[0], ""] and live == 0


def test_web_client_reports_server_errors():
    async def run(session, port):
        async with session.ws_connect(f"http://127.0.0.1:{port}/v1/ws") as ws:
            await ws.send_bytes(client.frame("never-started", [1, 2], 0))    # no start flag
            with pytest.raises(client.ServerError, match="no live sequence"):
                await client._last_record(ws, "never-started", len(LM.chars))
            return await client.generate(ws, LM.chars, "KENT:\n", 40, 0.9, 8)   # the socket goes on
    assert asyncio.run(asyncio.wait_for(_in_process(run), 120)) == oracle("KENT:\n", 40, 0.9, 8)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launched():
    """`python examples/web/server.py --port P`, as a user starts it; -> its base URL."""
    port = _free_port()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryFile("w+") as log:
        p = subprocess.Popen([sys.executable, os.path.join(WEB, "server.py"), "--port", str(port), "--capacity", "16"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                if p.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"examples/web/server.py exited: {log.read()}")
                try:
                    urllib.request.urlopen(base + "/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            yield base
        finally:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_web_client_command_line(launched):
    url = "ws" + launched[4:]
    r = subprocess.run([sys.executable, os.path.join(WEB, "client.py"), "--url", url, "--prompt", "ROMEO:",
                        "--tokens", "200", "--seed", "1"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ROMEO:" + oracle("ROMEO:", 200, client.DEFAULT_TEMPERATURE, 1) + "\n"
    bad = subprocess.run([sys.executable, os.path.join(WEB, "client.py"), "--url", url, "--seed", str(2 ** 32)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "seed" in bad.stderr


# ---- (d) the page in a real browser: headless Chromium over the DevTools Protocol ------------------
def _chromium():
    exe = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/lib/chromium/chromium")
                if p and os.access(p, os.X_OK)), None)
    if exe is None:
        pytest.fail("chromium is not installed: the browser test needs Debian's chromium "
                    "(tests/run.sh installs it: apt-get install -y chromium)", pytrace=False)
    return exe


def _descendants(pid):
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class CDP:
    """A tiny Chrome DevTools Protocol client over aiohttp: one page target's WebSocket; call()
    sends a command and returns its result; events are kept by method name."""

    def __init__(self, ws):
        self.ws, self.next_id, self.pending, self.events = ws, 0, {}, {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self):
        async for m in self.ws:
            msg = json.loads(m.data)
            if "id" in msg:
                fut = self.pending.pop(msg["id"])
                if "error" in msg:
                    fut.set_exception(RuntimeError(f"CDP: {msg['error']}"))
                else:
                    fut.set_result(msg.get("result", {}))
            else:
                self.events.setdefault(msg["method"], []).append(msg.get("params", {}))
        for fut in self.pending.values():
            fut.set_exception(RuntimeError("CDP: the browser closed the connection"))

    async def call(self, method, **params):
        self.next_id += 1
        fut = self.pending[self.next_id] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        return await fut

    async def js(self, expression):
        """Evaluate expression in the page (awaiting a promise) -> its JSON value."""
        r = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JavaScript: {r['exceptionDetails'].get('exception', {}).get('description') or r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_event(self, method):
        while not self.events.get(method):
            await asyncio.sleep(0.02)
        return self.events[method].pop(0)


async def _browse(exe, url, drive):
    """Start headless Chromium on a temporary profile, open a page target, load url, run
    drive(cdp); Chromium and every process it started are killed whatever happens."""
    profile = tempfile.mkdtemp(prefix="fastrnn-chromium-")
    log = open(os.path.join(profile, "stderr.log"), "w+")
    p = subprocess.Popen([exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                          "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        active = os.path.join(profile, "DevToolsActivePort")
        while not (os.path.exists(active) and open(active).read().count("\n") >= 1):
            if p.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"chromium exited ({p.returncode}): {log.read()[-3000:]}")
            await asyncio.sleep(0.05)
        port = int(open(active).read().split()[0])
        async with aiohttp.ClientSession() as session:
            async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as r:
                target = await r.json()
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = CDP(ws)
                await cdp.call("Page.enable")
                await cdp.call("Runtime.enable")
                await cdp.call("Page.navigate", url=url)
                await cdp.wait_event("Page.loadEventFired")
                try:
                    return await drive(cdp)
                finally:
                    errors = cdp.events.get("Runtime.exceptionThrown", [])
                    assert not errors, errors
                    cdp.reader.cancel()
    finally:
        procs = _descendants(p.pid)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in procs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def wait_state(runs):
    """JavaScript: a promise of the page's state once `runs` generations were started and none
    is running (data-runs counts the button's starts)."""
    return """new Promise(resolve => { (function poll() {
    const s = document.getElementById("status");
    if (Number(s.dataset.runs || 0) < RUNS || s.dataset.state === "running" || s.dataset.state === "loading")
        setTimeout(poll, 20);
    else resolve({state: s.dataset.state, status: s.textContent,
                  echo: document.getElementById("prompt-echo").textContent,
                  text: document.getElementById("text").textContent});
})(); })""".replace("RUNS", str(int(runs)))


async def _fill_and_click(cdp, prompt, tokens, temperature, seed):
    """Type the form's values as a user would (the fields' value + an input event) and press the
    button with a real mouse click at its centre."""
    values = {"prompt": prompt, "tokens": str(tokens), "temperature": str(temperature), "seed": str(seed)}
    rect = await cdp.js(f"""(() => {{
        for (const [id, v] of Object.entries({json.dumps(values)})) {{
            const e = document.getElementById(id); e.focus(); e.value = v;
            e.dispatchEvent(new Event("input", {{bubbles: true}}));
        }}
        const r = document.getElementById("go").getBoundingClientRect();
        return {{x: r.x + r.width / 2, y: r.y + r.height / 2, disabled: document.getElementById("go").disabled}};
    }})()""")
    assert not rect["disabled"]
    for kind in ("mousePressed", "mouseReleased"):
        await cdp.call("Input.dispatchMouseEvent", type=kind, x=rect["x"], y=rect["y"], button="left", clickCount=1)


@pytest.mark.integration
def test_web_page_in_headless_chromium_gives_the_python_text(launched):
    """The page, loaded from the real server by a real Chromium, filled in and clicked: the text
    it shows is the Python oracle's for the same seed (greedy and sampled), and its JavaScript
    sampler is bit-identical to client.py's on random inputs."""
    exe = _chromium()
    cases = [("ROMEO:\n", 150, 0, 1),
             ("JULIET:\n", 200, 0.8, 7),
             ("Éh, QUEEN~ #1:", 120, 1.3, 4294967295)]
    rng = np.random.default_rng(2)
    samples = []
    for k in range(300):
        l = (rng.normal(size=63) * rng.choice([0.5, 3, 30])).astype(np.float32)
        if k % 10 == 0:
            l[5] = l[40] = l.max() + 1                                   # a tie for the argmax
        samples.append({"l": [float(v) for v in l], "t": float(rng.choice([0, 1e-3, 0.2, 0.6, 1, 1.7, 50])),
                        "seed": int(rng.integers(0, 2 ** 32)), "draws": 5})
    xs = [float(x) for x in np.concatenate([-np.logspace(-12, np.log10(750), 500), rng.uniform(-50, 0, 500)])]

    async def drive(cdp):
        ready = await cdp.js(wait_state(0))
        assert ready["state"] == "ready", ready
        shown = []
        for run, (prompt, tokens, temperature, seed) in enumerate(cases, 1):
            await _fill_and_click(cdp, prompt, tokens, temperature, seed)
            shown.append(await cdp.js(wait_state(run)))
        js = await cdp.js(f"""(() => {{
            const d = new DataView(new ArrayBuffer(8));
            const hex = y => {{ d.setFloat64(0, y); return d.getUint32(0).toString(16).padStart(8, "0")
                                                       + d.getUint32(4).toString(16).padStart(8, "0"); }};
            const picks = {json.dumps(samples)}.map(s => {{
                const r = new CharLM.Mulberry32(s.seed), out = [];
                for (let i = 0; i < s.draws; i++) out.push(CharLM.pick(s.l, s.t, r));
                return out.concat([r.nextU32()]);
            }});
            return {{picks, exp: {json.dumps(xs)}.map(x => hex(CharLM.exp_(x)))}};
        }})()""")
        return shown, js

    shown, js = asyncio.run(asyncio.wait_for(_browse(exe, launched + "/", drive), 300))
    for (prompt, tokens, temperature, seed), got in zip(cases, shown):
        assert got["state"] == "done", got
        assert got["echo"] == prompt and f"seed {seed}" in got["status"]
        assert got["text"] == oracle(prompt, tokens, temperature, seed), (prompt, temperature, seed)
    want = []
    for s in samples:
        r = client.Mulberry32(s["seed"])
        want.append([client.pick(np.float32(s["l"]), s["t"], r) for _ in range(s["draws"])] + [r.next_u32()])
    assert js["picks"] == want
    assert js["exp"] == [struct.pack(">d", client.exp_(x)).hex() for x in xs]
