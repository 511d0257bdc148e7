"""`fastrnn serve` (fastrnn/serve.py) on loopback: sequences over HTTP and WebSocket against
offline Streams of the same conversations (bit for bit), continuous batching, state snapshots
moved between two servers, capacity / idle timeout / malformed input, /v1/predict, metrics,
graceful shutdown, and the command itself as a real process."""
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

aiohttp = pytest.importorskip("aiohttp")
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402
from conftest import rec  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import ir  # noqa: E402
from fastrnn.serve import make_app, state_to_bytes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V = 20


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return fastrnn.Model([ir.Embedding(rng.normal(size=(V, 6)).astype(np.float32)), rec(rng, "lstm", 6, 12),
                          rec(rng, "gru", 12, 9), ir.Dense(rng.normal(size=(5, 9)).astype(np.float32), None,
                                                           "log_softmax")])


def _float_model(seed=1):
    rng = np.random.default_rng(seed)
    return fastrnn.Model([rec(rng, "lstm", 3, 8), ir.Dense(rng.normal(size=(2, 8)).astype(np.float32))])


def _offline(model, steps):
    """What a batch-1 Stream gives for these steps."""
    s = model.stream(1)
    return np.stack([s.step(np.asarray(steps[t:t + 1]))[0] for t in range(len(steps))])


def serve(model, coro, **kw):
    """Run coro(client) against a fresh app for model."""
    async def main():
        app = make_app(model, **kw)
        async with TestClient(TestServer(app)) as client:
            return await coro(client)
    return asyncio.run(main())


def f32(rows):
    return np.asarray(rows, np.float64).astype(np.float32)


def test_conversations_over_http_match_offline_streams():
    """Many conversations at once, each in several messages (start, middle, end): every output
    is the offline Stream's, bit for bit, and the steps of different conversations share ticks."""
    m = _model()
    rng = np.random.default_rng(0)
    convs = {f"c{i}": rng.integers(0, V, int(rng.integers(3, 12))) for i in range(40)}

    async def talk(client, sid, ids):
        out, cut = [], sorted({0, len(ids), *rng.integers(1, len(ids), 2).tolist()})
        for k, (a, b) in enumerate(zip(cut, cut[1:])):
            r = await client.post(f"/v1/sequences/{sid}/steps",
                                  json={"inputs": ids[a:b].tolist(), "start": k == 0, "end": b == len(ids)})
            assert r.status == 200, await r.text()
            out.append(f32((await r.json())["outputs"]))
        return np.concatenate(out)

    async def run(client):
        outs = await asyncio.gather(*(talk(client, sid, ids) for sid, ids in convs.items()))
        metrics = await (await client.get("/metrics")).text()
        return outs, metrics
    outs, metrics = serve(m, run)
    for (sid, ids), got in zip(convs.items(), outs):
        np.testing.assert_array_equal(got, _offline(m, ids), err_msg=sid)
    vals = {l.split()[0]: float(l.split()[1]) for l in metrics.splitlines() if l and not l.startswith("#")}
    steps = sum(len(v) for v in convs.values())
    assert vals["fastrnn_steps_total"] == steps
    assert vals["fastrnn_ticks_total"] < steps / 3            # batched: several conversations per call
    assert vals["fastrnn_live_sequences"] == 0                 # every one ended


def test_a_prompt_rides_shared_ticks():
    """A message of 50 steps beside 20 one-step conversations: the engine runs one call per
    tick for all of them (50 ticks for the prompt, the others inside those), not one per token."""
    m = _model()
    prompt = np.arange(50) % V

    async def run(client):
        async def one(i):
            r = await client.post(f"/v1/sequences/s{i}/steps", json={"inputs": [i % V], "start": True})
            return r.status
        big = client.post("/v1/sequences/p/steps", json={"inputs": prompt.tolist(), "start": True})
        res = await asyncio.gather(big, *(one(i) for i in range(20)))
        body = await res[0].json()
        text = await (await client.get("/metrics")).text()
        return body, res[1:], text
    body, statuses, text = serve(m, run)
    assert set(statuses) == {200}
    np.testing.assert_array_equal(f32(body["outputs"]), _offline(m, prompt))
    ticks = next(float(l.split()[1]) for l in text.splitlines() if l.startswith("fastrnn_ticks_total"))
    assert 50 <= ticks <= 52


def test_binary_npy_steps_and_float_inputs():
    m = _float_model()
    x = np.random.default_rng(3).normal(size=(7, 3)).astype(np.float32)

    async def run(client):
        import io
        b = io.BytesIO()
        np.save(b, x[:4])
        r = await client.post("/v1/sequences/a/steps?start=1", data=b.getvalue(),
                              headers={"Content-Type": "application/x-npy", "Accept": "application/x-npy"})
        assert r.status == 200
        first = np.load(io.BytesIO(await r.read()))
        r = await client.post("/v1/sequences/a/steps", json={"inputs": x[4:].tolist(), "end": True})
        return first, f32((await r.json())["outputs"])
    first, rest = serve(m, run)
    np.testing.assert_array_equal(np.concatenate([first, rest]), _offline(m, x))


def test_state_moves_to_another_server_bit_for_bit():
    """GET the state after some steps on server A, PUT it on server B (a new sequence there), go
    on: B's outputs are those of one uninterrupted offline Stream."""
    m = _model()
    data = fastrnn.fileformat.to_bytes(m)
    ids = np.random.default_rng(5).integers(0, V, 14)

    async def run():
        apps = [make_app(m, data), make_app(m, data)]
        async with TestClient(TestServer(apps[0])) as a, TestClient(TestServer(apps[1])) as b:
            r = await a.post("/v1/sequences/x/steps", json={"inputs": ids[:6].tolist(), "start": True})
            first = f32((await r.json())["outputs"])
            snap = await (await a.get("/v1/sequences/x/state")).read()
            r = await b.put("/v1/sequences/x/state", data=snap)
            assert (await r.json())["steps"] == 6
            r = await b.post("/v1/sequences/x/steps", json={"inputs": ids[6:].tolist()})
            rest = f32((await r.json())["outputs"])
            # refused snapshots: each a 400 naming the defect; the sequence is unharmed
            other = fastrnn.fileformat.to_bytes(_model(seed=9))
            bad = {"magic": b"NOTASNAP" + snap[8:], "truncated": snap[:-4],
                   "model": state_to_bytes([np.zeros_like(a) for a in m.stream(1).state],
                                           fastrnn.serve.model_fingerprint(other), 0),
                   "nan": snap[:-4] + np.float32(np.nan).tobytes()}
            errors = {}
            for k, v in bad.items():
                r = await b.put("/v1/sequences/y/state", data=v)
                errors[k] = (r.status, (await r.json())["error"])
            return first, rest, errors
    first, rest, errors = asyncio.run(run())
    np.testing.assert_array_equal(np.concatenate([first, rest]), _offline(m, ids))
    assert errors["magic"][0] == 400 and "magic" in errors["magic"][1]
    assert errors["truncated"][0] == 400 and "bytes" in errors["truncated"][1]
    assert errors["model"][0] == 400 and "another model" in errors["model"][1]
    assert errors["nan"][0] == 400 and "finite" in errors["nan"][1]


def test_capacity_idle_timeout_and_unknown_sequences():
    m = _model()

    async def run(client):
        post = lambda sid, **kw: client.post(f"/v1/sequences/{sid}/steps", json={"inputs": [1], **kw})
        assert (await post("a", start=True)).status == 200
        assert (await post("b", start=True)).status == 200
        r = await post("c", start=True)
        full = (r.status, r.headers.get("Retry-After"), (await r.json())["error"])
        assert (await client.delete("/v1/sequences/a")).status == 200
        assert (await post("c", start=True)).status == 200      # a's slot is free again
        r = await post("zz")
        unknown = (r.status, (await r.json())["error"])
        await asyncio.sleep(0.6)                                # past the idle timeout
        r = await post("b")
        expired = r.status
        metrics = await (await client.get("/metrics")).text()
        return full, unknown, expired, metrics
    full, unknown, expired, metrics = serve(m, run, capacity=2, idle_timeout=0.2)
    assert full[0] == 503 and full[1] == "1" and "slots" in full[2]
    assert unknown[0] == 404 and "start" in unknown[1]
    assert expired == 404
    assert 'fastrnn_rejected_total{reason="full"} 1' in metrics and "fastrnn_expired_total 2" in metrics


@pytest.mark.parametrize("body, status, words", [
    ("not json", 400, "not JSON"),
    ("[1, 2]", 400, "JSON object"),
    ('{"inputs": [1], "bogus": 1}', 400, "unknown field"),
    ('{"start": true}', 400, "missing field inputs"),
    ('{"inputs": [[1, 2]], "start": true}', 400, "shape"),
    ('{"inputs": ["a"], "start": true}', 400, "token ids"),
    ('{"inputs": [], "start": true}', 400, "1 to"),
    ('{"inputs": [1], "start": "maybe"}', 400, "start"),
    ('{"inputs": [1], "start": NaN}', 400, "not JSON"),
])
def test_malformed_messages_get_a_4xx_and_the_server_survives(body, status, words):
    m = _model()

    async def run(client):
        r = await client.post("/v1/sequences/s/steps", data=body, headers={"Content-Type": "application/json"})
        got = (r.status, (await r.json())["error"])
        ok = await client.post("/v1/sequences/t/steps", json={"inputs": [1, 2], "start": True})
        return got, ok.status
    (st, msg), after = serve(m, run)
    assert st == status and words in msg, msg
    assert after == 200


def test_too_many_steps_and_bad_ids():
    m = _model()

    async def run(client):
        r1 = await client.post("/v1/sequences/s/steps", json={"inputs": [1] * 5000, "start": True})
        r2 = await client.post("/v1/sequences/" + "x" * 300 + "/steps", json={"inputs": [1], "start": True})
        r3 = await client.post("/v1/sequences/s/steps", json={"inputs": [V + 5], "start": True})
        return r1.status, r2.status, r3.status, (await r3.json())["error"]
    s1, s2, s3, e3 = serve(m, run)
    assert (s1, s2) == (413, 400)
    assert s3 == 400 and "token ids are in [0, 20)" in e3


def test_websocket_steps_stream_in_order_and_a_drop_frees_slots():
    m = _model()
    ids = np.random.default_rng(8).integers(0, V, 9)

    async def run(client):
        ws = await client.ws_connect("/v1/ws")
        await ws.send_str("garbage")
        err = await ws.receive_json()
        await ws.send_json({"id": "w", "inputs": ids[:5].tolist(), "start": True})
        await ws.send_json({"id": "w", "inputs": ids[5:].tolist()})
        frames = [await ws.receive_json() for _ in range(9 + 2)]
        await ws.send_json({"id": "w2", "inputs": [1], "start": True})
        frames2 = [await ws.receive_json() for _ in range(2)]
        live = await (await client.get("/metrics")).text()
        await ws.close()
        await asyncio.sleep(0.05)
        after = await (await client.get("/metrics")).text()
        return err, frames, frames2, live, after
    err, frames, frames2, live, after = serve(m, run)
    assert "not JSON" in err["error"]
    steps = [f for f in frames if "output" in f]
    assert [f["step"] for f in steps] == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    np.testing.assert_array_equal(f32([f["output"] for f in steps]), _offline(m, ids))
    assert [f.get("done") for f in frames if "done" in f] == [5, 4]
    assert "fastrnn_live_sequences 2" in live and "fastrnn_live_sequences 0" in after


def test_predict_batches_concurrent_requests():
    m = _float_model()
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 6, 3)).astype(np.float32) for _ in range(8)]

    async def run(client):
        rs = await asyncio.gather(*(client.post("/v1/predict", json={"inputs": x.tolist()}) for x in xs))
        bad = await client.post("/v1/predict", json={"inputs": [[1.0]]})
        return [f32((await r.json())["outputs"]) for r in rs], bad.status
    outs, bad = serve(m, run)
    for x, y in zip(xs, outs):
        np.testing.assert_array_equal(y, m.predict(x))
    assert bad == 400


def test_health_and_graceful_shutdown_drains_queued_steps():
    """Shutdown while a long message is queued: it completes; readyz says draining meanwhile."""
    m = _model()
    prompt = (np.arange(300) % V).tolist()

    async def run():
        app = make_app(m)
        server = TestServer(app)
        client = TestClient(server)
        await client.start_server()
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
        task = asyncio.get_running_loop().create_task(
            client.post("/v1/sequences/p/steps", json={"inputs": prompt, "start": True}))
        await asyncio.sleep(0.01)
        await app.shutdown()                     # what SIGTERM runs: drain, then stop
        r = await task
        out = (r.status, f32((await r.json())["outputs"]))
        await client.close()
        return out
    status, y = asyncio.run(run())
    assert status == 200
    np.testing.assert_array_equal(y, _offline(m, np.array(prompt)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_command_serves_the_bundled_model(tmp_path):
    """`fastrnn serve examples/charlm/charlm.frnn` as users start it: a real process on a port."""
    port = _free_port()
    model = os.path.join(ROOT, "examples", "charlm", "charlm.frnn")
    p = subprocess.Popen([sys.executable, "-m", "fastrnn", "serve", model, "--port", str(port), "--capacity", "8"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        req = urllib.request.Request(base + "/v1/sequences/one/steps", method="POST",
                                     data=json.dumps({"inputs": [1, 2, 3], "start": True}).encode(),
                                     headers={"Content-Type": "application/json"})
        got = f32(json.loads(urllib.request.urlopen(req, timeout=10).read())["outputs"])
        m = fastrnn.load(model)
        np.testing.assert_array_equal(got, _offline(m, np.array([1, 2, 3])))
    finally:
        p.terminate()
        out, err = p.communicate(timeout=20)
    assert p.returncode in (0, -15), err


def test_slot_changes_during_engine_calls_under_load():
    """Big batches (the engine releases the GIL, so the loop runs beside a tick) with starts,
    deletes and state reads arriving meanwhile: no request fails but those of ended sequences
    (409), and every finished conversation is its offline Stream's, bit for bit."""
    rng = np.random.default_rng(11)
    m = fastrnn.Model([ir.Embedding(rng.normal(size=(V, 64)).astype(np.float32)), rec(rng, "lstm", 64, 256)])
    convs = {f"c{i}": rng.integers(0, V, 12) for i in range(120)}
    doomed = set(list(convs)[::7])
    deletes = []

    async def talk(client, sid, ids):
        outs = []
        for k in range(0, 12, 3):
            r = await client.post(f"/v1/sequences/{sid}/steps", json={"inputs": ids[k:k + 3].tolist(), "start": k == 0})
            if r.status != 200:
                return r.status, (await r.json())["error"]
            outs.append(f32((await r.json())["outputs"]))
            if sid in doomed and k == 3:
                deletes.append(asyncio.get_running_loop().create_task(client.delete(f"/v1/sequences/{sid}")))
            elif k == 6:
                assert (await client.get(f"/v1/sequences/{sid}/state")).status in (200, 409)
        return 200, np.concatenate(outs)

    async def run(client):
        out = await asyncio.gather(*(talk(client, sid, ids) for sid, ids in convs.items()))
        assert {r.status for r in await asyncio.gather(*deletes)} <= {200, 404}
        return out
    results = serve(m, run)
    for (sid, ids), (status, got) in zip(convs.items(), results):
        if status == 200:
            np.testing.assert_array_equal(got, _offline(m, ids), err_msg=sid)
        else:
            assert sid in doomed and status in (404, 409), (sid, status, got)
    assert sum(st == 200 for st, _ in results) >= len(convs) - len(doomed)


def _frame(sid, x, start=False, end=False):
    import struct
    e = sid.encode()
    return struct.pack("<BH", start | 2 * end, len(e)) + e + struct.pack("<I", len(x)) + np.asarray(x).tobytes()


def test_binary_websocket_frames():
    """Binary frames carry float32 / int32 as they are: each step's frame holds its output's
    bits; a malformed frame gets a JSON error frame and the socket goes on."""
    import struct
    m = _model()
    ids = np.random.default_rng(9).integers(0, V, 9).astype("<i4")

    async def run(client):
        ws = await client.ws_connect("/v1/ws")
        await ws.send_bytes(b"\x07\x00")                                   # too short
        e1 = await ws.receive_json()
        await ws.send_bytes(_frame("b", ids[:5], start=True)[:-2])          # payload cut
        e2 = await ws.receive_json()
        await ws.send_bytes(_frame("b", ids[:5], start=True))
        await ws.send_bytes(_frame("b", ids[5:], end=True))
        records = []
        while len(records) < 9:                 # a frame holds one or more step records
            f, pos = (await ws.receive()).data, 0
            while pos < len(f):
                fl, n = struct.unpack_from("<BH", f, pos)
                records.append((fl, f[pos + 3:pos + 3 + n], struct.unpack_from("<I", f, pos + 3 + n)[0],
                                np.frombuffer(f, "<f4", 5, pos + 7 + n)))
                pos += 7 + n + 4 * 5
        await ws.close()
        return e1, e2, records
    e1, e2, records = serve(m, run)
    assert "too short" in e1["error"] and "bytes" in e2["error"]
    assert [r[1] for r in records] == [b"b"] * 9 and [r[2] for r in records] == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    flags, rows = [r[0] for r in records], [r[3] for r in records]
    assert flags == [0, 0, 0, 0, 1, 0, 0, 0, 3]
    np.testing.assert_array_equal(np.stack(rows), _offline(m, ids))


def test_protocol_fuzz_http_and_websocket():
    """Random bodies, queries, ids and frames (hypothesis-made) at both endpoints: every answer
    is a 2xx or a 4xx / error frame with a message (never a 500, a dropped connection or a stuck
    server), and a well-formed conversation afterwards still matches its offline Stream."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    m = _model()
    js = st.recursive(st.none() | st.booleans() | st.integers(-5, 40) | st.floats(allow_nan=False) | st.text(max_size=5),
                      lambda c: st.lists(c, max_size=4) | st.dictionaries(
                          st.sampled_from(["inputs", "start", "end", "id", "x"]), c, max_size=4), max_leaves=12)
    bodies = st.one_of(js.map(lambda v: json.dumps(v).encode()), st.binary(max_size=64))
    ids = st.text(min_size=0, max_size=8).filter(lambda s: "/" not in s and "?" not in s and "#" not in s)
    frames = st.one_of(st.binary(max_size=48),
                       st.builds(lambda f, sid, k, pay: bytes([f]) + len(sid.encode()).to_bytes(2, "little")
                                 + sid.encode() + k.to_bytes(4, "little") + pay,
                                 st.integers(0, 255), st.text(max_size=4), st.integers(0, 6), st.binary(max_size=24)))
    cases = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(st.tuples(ids, bodies, st.sampled_from(["", "?start=1", "?end=true", "?start=2"]),
                              st.sampled_from(["application/json", "application/x-npy"])), min_size=1, max_size=3),
           st.lists(frames, max_size=3), st.lists(js.map(json.dumps), max_size=2))
    def collect(posts, bins, texts):
        cases.append((posts, bins, texts))
    collect()

    async def run(client):
        import urllib.parse
        bad = []
        ws = await client.ws_connect("/v1/ws")
        for posts, bins, texts in cases:
            for sid, body, q, ctype in posts:
                path = "/v1/sequences/" + urllib.parse.quote(sid or "x", safe="") + "/steps" + q
                r = await client.post(path, data=body, headers={"Content-Type": ctype})
                text = await r.text()
                if not (r.status < 300 or (400 <= r.status < 500 and "error" in json.loads(text))):
                    bad.append((path, body, r.status, text))
            for f in bins:
                await ws.send_bytes(f)
            for t in texts:
                await ws.send_str(t)
        await ws.send_json({"id": "end-marker", "inputs": [1], "start": True, "end": True})
        while True:                                 # every frame: an output, a done, or a 4xx error
            msg = await ws.receive(timeout=10)
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            f = json.loads(msg.data)
            if "error" in f and not 400 <= f["status"] < 500:
                bad.append(("ws", f))
            if f.get("id") == "end-marker" and f.get("done"):
                break
        ids_ = np.array([3, 1, 4, 1, 5])
        r = await client.post("/v1/sequences/after/steps", json={"inputs": ids_.tolist(), "start": True})
        return bad, r.status, f32((await r.json())["outputs"]), ids_
    bad, status, got, ids_ = serve(m, run)
    assert not bad, bad[:3]
    assert status == 200
    np.testing.assert_array_equal(got, _offline(m, ids_))
