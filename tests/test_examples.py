"""The bundled examples: examples/charlm (the trained character-level LSTM: generate.py streams it
and compares with torch) and examples/web (the aiohttp WebSocket service that serves it).

The web tests start the real app on 127.0.0.1 with an ephemeral port inside asyncio.run (no
pytest-asyncio), and talk to it with aiohttp's WebSocket client.
"""
import asyncio
import importlib.util
import os
import subprocess
import sys

import aiohttp
import numpy as np
import torch
from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHARLM = os.path.join(ROOT, "examples", "charlm")
MODEL = os.path.join(CHARLM, "charlm.frnn")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


server = _load("charlm_web_server", os.path.join(ROOT, "examples", "web", "server.py"))
gen = server.charlm   # examples/charlm/generate.py, as the server loaded it
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


# ---- (c) the web service ------------------------------------------------------------------------
def _with_server(client):
    """Start examples/web/server.py's app on 127.0.0.1:<ephemeral>, run client(session, base_url)."""
    async def main():
        runner = web.AppRunner(server.make_app(MODEL))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                return await client(session, f"http://127.0.0.1:{port}")
        finally:
            await runner.cleanup()
    return asyncio.run(asyncio.wait_for(main(), 60))


async def _receive(ws):
    """Messages until done (or error): (list of tokens, last message)."""
    tokens = []
    while True:
        msg = await ws.receive_json(timeout=30)
        if "token" in msg:
            tokens.append(msg["token"])
        else:
            return tokens, msg


async def _ask(session, base, req):
    async with session.ws_connect(base + "/generate") as ws:
        await ws.send_json(req)
        return await _receive(ws)


def test_web_streams_tokens_equal_to_offline_generation():
    req = {"prompt": "HAMLET:\n", "tokens": 120, "temperature": 0.8, "seed": 5}

    async def client(session, base):
        async with session.get(base + "/") as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            assert "new WebSocket" in await r.text()
        return await _ask(session, base, req)

    tokens, done = _with_server(client)
    assert len(tokens) == 120 and all(isinstance(t, str) and len(t) == 1 for t in tokens)
    assert done["done"] is True and done["tokens"] == 120 and done["tokens_per_s"] > 0
    assert "".join(tokens) == offline("HAMLET:\n", 120, 0.8, 5)


def test_web_concurrent_clients_are_independent():
    reqs = [{"prompt": "OTHELLO:\n", "tokens": 150, "temperature": 0.7, "seed": 1},
            {"prompt": "First Witch:\n", "tokens": 100, "temperature": 1.0, "seed": 2},
            {"prompt": "OTHELLO:\n", "tokens": 150, "temperature": 0.7, "seed": 1}]

    async def client(session, base):
        return await asyncio.gather(*(_ask(session, base, r) for r in reqs))

    results = _with_server(client)
    for req, (tokens, done) in zip(reqs, results):
        assert done.get("done") is True and done["tokens"] == req["tokens"] == len(tokens)
        want = offline(req["prompt"], req["tokens"], req["temperature"], req["seed"])
        assert "".join(tokens) == want
    assert results[0][0] == results[2][0]


def test_web_one_connection_several_requests_and_errors():
    async def client(session, base):
        async with session.ws_connect(base + "/generate") as ws:
            await ws.send_str("not json")
            _, err1 = await _receive(ws)
            await ws.send_json({"prompt": "A", "tokens": -1})
            _, err2 = await _receive(ws)
            got = []
            for seed in (7, 8, 7):                 # the stream is reset for every request
                await ws.send_json({"prompt": "PORTIA:\n", "tokens": 30, "seed": seed})
                got.append(await _receive(ws))
            await ws.send_json({"prompt": "", "tokens": 0})
            empty = await _receive(ws)
            return err1, err2, got, empty

    err1, err2, got, empty = _with_server(client)
    assert "error" in err1 and "JSON" in err1["error"]
    assert "error" in err2 and "tokens" in err2["error"]
    texts = ["".join(t) for t, _ in got]
    assert texts[0] == texts[2] == offline("PORTIA:\n", 30, gen.DEFAULT_TEMPERATURE, 7)
    assert texts[1] == offline("PORTIA:\n", 30, gen.DEFAULT_TEMPERATURE, 8)
    assert empty[0] == [] and empty[1]["done"] is True and empty[1]["tokens"] == 0


def test_web_long_request_does_not_hold_up_a_short_one():
    # the handler yields to the event loop after every step, prompt steps included: a short
    # request that arrives while a long one runs finishes first
    long_req = {"prompt": offline("MACBETH:\n", 2500, 0.7, 0), "tokens": 2500, "seed": 0}
    short_req = {"prompt": "BANQUO:\n", "tokens": 10, "seed": 0}
    finished = []

    async def run(session, base, req, name, delay):
        await asyncio.sleep(delay)
        tokens, done = await _ask(session, base, req)
        finished.append(name)
        return tokens, done

    async def client(session, base):
        return await asyncio.gather(run(session, base, long_req, "long", 0),
                                    run(session, base, short_req, "short", 0.02))

    (lt, ld), (st, sd) = _with_server(client)
    assert ld["tokens"] == 2500 and sd["tokens"] == 10
    assert "".join(st) == offline("BANQUO:\n", 10, gen.DEFAULT_TEMPERATURE, 0)
    assert finished == ["short", "long"]


def test_web_client_that_leaves_mid_stream(caplog):
    async def client(session, base):
        leaver = aiohttp.ClientSession()
        ws = await leaver.ws_connect(base + "/generate")
        await ws.send_json({"prompt": "LEAR:\n", "tokens": 3000, "seed": 1})
        for _ in range(5):
            assert "token" in await ws.receive_json(timeout=30)
        await leaver.close()                         # drops the connection mid-stream
        await asyncio.sleep(0.2)
        return await _ask(session, base, {"prompt": "CORDELIA:\n", "tokens": 40, "seed": 1})

    with caplog.at_level("ERROR"):
        tokens, done = _with_server(client)
    assert "".join(tokens) == offline("CORDELIA:\n", 40, gen.DEFAULT_TEMPERATURE, 1)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
