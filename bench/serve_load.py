"""Load on `fastrnn serve`: many concurrent conversations from a real WebSocket client on loopback.

    python bench/serve_load.py                          # 100, 1,000 and 10,000 conversations
    python bench/serve_load.py --conversations 100,1000 --steps 10 --json out.json

The model is the StreamPool bench's LSTM 256->256 (bench/workloads.py, stream_lstm256), saved to
a temporary .frnn. Each conversation is interactive: it sends one step (256 floats, JSON), waits
for that step's output frame, sends the next; all conversations at once, multiplexed over
--sockets WebSockets (a gateway's connections), in serve's binary frames (float32 as they are;
docs/serving.md). Servers run as their own processes, the client
in this one: client and server share the machine's cores. Per run:

  fastrnn serve           continuous batching (every conversation with a step waiting, one
                          StreamPool call per tick);
  serve --max-batch 1     (a) the same server, one conversation per engine call (one Stream
                          per conversation, stepped one at a time);
  onnxruntime             (b) the same protocol on aiohttp around an onnxruntime session of the
                          same LSTM at T=1, batch 1, each conversation's h and c carried in the
                          server between requests (what users write today: onnxruntime keeps no
                          state).

Reported: steps/s (conversation-steps completed per second of wall time), p50 / p99 step latency
(send to output frame), and, for fastrnn serve, the mean batch per engine call, where a step's
time goes (engine per conversation-step, from the server's own metrics; queueing delay; the rest
is protocol: JSON, sockets, the event loops), the server's own CPU per conversation-step beside
the bare StreamPool's time per conversation-step on batches of the same size in this process,
and the engine calls a 50-step prompt costs. Every fastrnn output is checked bit-identical to an
offline batch Stream of the same conversations (StreamPool's contract: a row is its batch-1
Stream's); onnxruntime's are checked within 1e-5.
"""
import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import workloads as W  # noqa: E402

NET = W.Net("lstm", 256, 256)


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


# ---- (b): onnxruntime behind the same protocol --------------------------------------------------

def ort_server(port):
    """The /v1/ws protocol of fastrnn serve (steps only) around onnxruntime, states per sequence."""
    import onnxruntime as ort
    from aiohttp import WSMsgType, web
    sd = W.make_weights(NET)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(W.onnx_model(NET, sd, 1, 1, with_state=True).SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    zero = np.zeros((1, 1, NET.hidden), np.float32)
    states = {}

    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for m in sock:
            if m.type != WSMsgType.BINARY:
                continue
            sid, xs, start, end = _unpack(m.data)
            h, c = (zero, zero) if start else states[sid]
            for i, x in enumerate(xs):
                y, h, c = sess.run(None, {"x": x[None, None], "h0_l0": h, "c0_l0": c})
                await sock.send_bytes(_pack_out(sid, i, (i == len(xs) - 1) | (2 * end), y[0, 0]))
            if end:
                states.pop(sid, None)
            else:
                states[sid] = (h, c)
        return sock

    async def ready(request):
        return web.Response(text="ready\n")
    app = web.Application()
    app.router.add_get("/v1/ws", ws)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# ---- the binary frames of fastrnn/serve.py (ws_parse) ----------------------------------------------

def _pack_in(sid, x, start, end):
    e = sid.encode()
    return struct.pack("<BH", start | 2 * end, len(e)) + e + struct.pack("<I", len(x)) + x.astype("<f4").tobytes()


def _unpack(data):
    flags, n = struct.unpack_from("<BH", data)
    sid = data[3:3 + n].decode()
    (k,) = struct.unpack_from("<I", data, 3 + n)
    return sid, np.frombuffer(data, "<f4", offset=7 + n).reshape(k, -1), bool(flags & 1), bool(flags & 2)


def _pack_out(sid, step, flags, row):
    e = sid.encode()
    return struct.pack("<BH", flags, len(e)) + e + struct.pack("<I", step) + row.astype("<f4").tobytes()


# ---- the client ------------------------------------------------------------------------------------

async def drive(port, xs, nsock):
    """Every conversation i steps xs[i] one step per message, waiting for each output; -> (outputs
    (N, T, H), latencies, wall seconds)."""
    import aiohttp
    N, T, _ = xs.shape
    out = np.empty((N, T, NET.hidden), np.float32)
    lat = []
    async with aiohttp.ClientSession() as http:
        socks = [await http.ws_connect(f"http://127.0.0.1:{port}/v1/ws", max_msg_size=0) for _ in range(nsock)]
        waiting = {}

        async def reader(ws):
            async for m in ws:
                if m.type != aiohttp.WSMsgType.BINARY:
                    raise RuntimeError(f"server error: {m.data}")
                data, pos = m.data, 0
                while pos < len(data):         # one or more step records
                    flags, n = struct.unpack_from("<BH", data, pos)
                    end = pos + 7 + n + 4 * NET.hidden
                    if flags & 1:              # the message's last step: its output
                        waiting.pop(data[pos + 3:pos + 3 + n].decode()).set_result(
                            np.frombuffer(data, "<f4", NET.hidden, pos + 7 + n))
                    pos = end
        readers = [asyncio.get_running_loop().create_task(reader(ws)) for ws in socks]

        async def conv(i):
            ws = socks[i % nsock]
            sid = f"c{i}"
            for t in range(T):
                fut = asyncio.get_running_loop().create_future()
                waiting[sid] = fut
                t0 = time.perf_counter()
                await ws.send_bytes(_pack_in(sid, xs[i, t:t + 1], t == 0, t == T - 1))
                row = await fut
                lat.append(time.perf_counter() - t0)
                out[i, t] = row
        t0 = time.perf_counter()
        await asyncio.gather(*(conv(i) for i in range(N)))
        wall = time.perf_counter() - t0
        for ws in socks:
            await ws.close()
        for r in readers:
            r.cancel()
    return out, lat, wall


def _metrics(port):
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l and not l.startswith("#")}


def run_variant(name, model_path, xs, nsock, capacity):
    port = _port()
    if name == "onnxruntime":
        cmd = [sys.executable, __file__, "--ort-server", str(port)]
    else:
        cmd = [sys.executable, "-m", "fastrnn", "serve", model_path, "--port", str(port),
               "--capacity", str(capacity)] + (["--max-batch", "1"] if name.endswith("max-batch 1") else [])
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import urllib.request
        for _ in range(400):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except OSError:
                if p.poll() is not None:
                    raise RuntimeError(p.stderr.read())
                time.sleep(0.05)
        cpu0 = _cpu_seconds(p.pid)
        out, lat, wall = asyncio.run(drive(port, xs, nsock))
        cpu = _cpu_seconds(p.pid) - cpu0
        met = _metrics(port) if name != "onnxruntime" else None
    finally:
        p.terminate()
        p.wait(20)
    steps = xs.shape[0] * xs.shape[1]
    lat = sorted(lat)
    r = {"steps_per_s": steps / wall, "p50_ms": 1e3 * lat[len(lat) // 2],
         "p99_ms": 1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], "server_cpu_us_per_step": 1e6 * cpu / steps}
    if met:
        ticks = met["fastrnn_ticks_total"]
        r["mean_batch"] = met["fastrnn_steps_total"] / ticks
        r["engine_us_per_step"] = 1e6 * met["fastrnn_step_latency_seconds_sum"] / met["fastrnn_steps_total"]
        r["queue_ms_mean"] = 1e3 * met["fastrnn_queue_delay_seconds_sum"] / met["fastrnn_queue_delay_seconds_count"]
        r["server_own_us_per_step"] = r["server_cpu_us_per_step"] - r["engine_us_per_step"]
    return r, out


def bare_pool_us_per_step(model, batch, reps=200):
    """StreamPool.step_into on `batch` slots in this process: µs per conversation-step."""
    import fastrnn
    batch = max(1, int(round(batch)))
    pool = fastrnn.StreamPool(model, batch)
    slots = np.array([pool.open() for _ in range(batch)])
    x = np.random.default_rng(0).standard_normal((batch, NET.input)).astype(np.float32)
    out = np.empty((batch, NET.hidden), np.float32)
    for _ in range(10):
        pool.step_into(slots, x, out)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        pool.step_into(slots, x, out)
        ts.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(ts) / batch


def prompt_calls(model_path):
    """Engine calls of one 50-step message (a prompt) beside 20 one-step conversations."""
    import fastrnn
    from fastrnn.serve import make_app
    from aiohttp.test_utils import TestClient, TestServer
    m = fastrnn.load(model_path)
    x = np.random.default_rng(1).standard_normal((50, NET.input)).astype(np.float32)

    async def go():
        async with TestClient(TestServer(make_app(m))) as c:
            one = [c.post(f"/v1/sequences/s{i}/steps", json={"inputs": x[:1].tolist(), "start": True})
                   for i in range(20)]
            await asyncio.gather(c.post("/v1/sequences/p/steps", json={"inputs": x.tolist(), "start": True}), *one)
            return _parse(await (await c.get("/metrics")).text())["fastrnn_ticks_total"]
    return asyncio.run(go())


def _parse(text):
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l and not l.startswith("#")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conversations", default="100,1000,10000")
    ap.add_argument("--steps", type=int, default=8, help="steps per conversation (default 8)")
    ap.add_argument("--sockets", type=int, default=32)
    ap.add_argument("--variants", default="fastrnn serve,serve --max-batch 1,onnxruntime")
    ap.add_argument("--json")
    ap.add_argument("--ort-server", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort_server:
        return ort_server(a.ort_server)
    import fastrnn
    sd = W.make_weights(NET)
    m = fastrnn.Model(W.ir_layers(NET, sd, fastrnn.ir))
    cpu = fastrnn.cpu_info()
    print(f"# bench/serve_load.py: LSTM {NET.input}->{NET.hidden}, {a.steps} steps per conversation, "
          f"{a.sockets} WebSockets; isa {cpu['isa']}")
    results = {"steps": a.steps, "sockets": a.sockets, "isa": cpu["isa"], "runs": {}}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "lstm256.frnn")
        m.save(path)
        calls = prompt_calls(path)
        print(f"a 50-step message beside 20 one-step conversations: {calls:g} engine calls")
        results["prompt_engine_calls"] = calls
        for n in [int(v) for v in a.conversations.split(",")]:
            xs = np.random.default_rng(n).standard_normal((n, a.steps, NET.input)).astype(np.float32)
            s = m.stream(n)
            want = np.stack([s.step(xs[:, t]) for t in range(a.steps)], 1)
            row = {}
            for v in a.variants.split(","):
                r, out = run_variant(v, path, xs, min(a.sockets, n), capacity=max(n, 16))
                if v == "onnxruntime":
                    d_ = float(np.abs(out - want).max())
                    assert d_ < 1e-5, f"onnxruntime differs by {d_}"
                    r["max_abs_diff"] = d_
                else:
                    assert np.array_equal(out, want), f"{v}: outputs differ from the offline Stream"
                    r["bit_identical"] = True
                if "mean_batch" in r:
                    r["bare_pool_us_per_step"] = bare_pool_us_per_step(m, r["mean_batch"])
                row[v] = r
                extra = ""
                if "mean_batch" in r:
                    extra = (f"  batch {r['mean_batch']:.1f}, engine {r['engine_us_per_step']:.1f} µs/step, "
                             f"queue {r['queue_ms_mean']:.2f} ms, server own {r['server_own_us_per_step']:.1f} µs/step "
                             f"(bare pool {r['bare_pool_us_per_step']:.1f})")
                print(f"{n:>6} conv  {v:<22} {r['steps_per_s']:>9.0f} steps/s  p50 {r['p50_ms']:7.2f} ms  "
                      f"p99 {r['p99_ms']:7.2f} ms{extra}", flush=True)
            results["runs"][n] = row
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
