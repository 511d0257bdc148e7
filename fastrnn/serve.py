"""`fastrnn serve`: a conversation server over one model (docs/serving.md is the user's guide).

    pip install "fastrnn[serve]"          # aiohttp
    fastrnn serve model.frnn --port 8000 --capacity 1024

Built on aiohttp (one process, one asyncio loop; HTTP/1.1 and WebSocket from one well-kept
package, no ASGI layer in between). The engine part is Batcher:

- one StreamPool of `capacity` slots; a live sequence (a conversation, named by the client's id)
  holds one slot from its `start` until its `end`, its idle timeout, or the WebSocket that
  started it closing;
- requests queue their steps on their sequence; one ticker task takes, each tick, the next step
  of every sequence with pending input (at most max_batch of them, round robin) and runs them as
  ONE StreamPool.step in a worker thread (the engine releases the GIL), so the loop goes on
  reading requests meanwhile and they join the next tick: continuous batching. A message with
  many steps (a prompt) rides one step per tick in the shared calls, never a call per token;
- a sequence's steps run in the order they arrived, each exactly once; every output is what an
  offline batch-1 Stream fed the same steps gives, bit for bit (StreamPool's contract);
- memory is bounded: at most `capacity` sequences and `max_pending` queued steps; past either,
  503 with Retry-After (Triton's sequence batcher queues new sequences in a backlog instead; a
  conversation held in a backlog would wait without bound for a slot that an idle client may keep
  for its whole timeout, so fastrnn answers at once and lets the client or the proxy retry);
- a sequence's state can be read and written as a versioned binary snapshot (state_to_bytes /
  state_from_bytes), so a conversation moves to another server bit for bit.

The web part (make_app) is a thin layer of parsing and replies over Batcher; the protocol is in
docs/serving.md.
"""
from __future__ import annotations

import asyncio
import bisect
import collections
import hashlib
import io
import json
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import FastRNNError

SNAPSHOT_MAGIC = b"FRNNSTAT"
SNAPSHOT_VERSION = 1
MAX_ID = 256                     # characters of a sequence id
BUCKETS_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
BUCKETS_SECONDS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


class ServeError(FastRNNError):
    """A request the server refuses: status is the HTTP status it answers with."""
    def __init__(self, status, message, retry_after=None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


def model_fingerprint(data):
    """The id of a model's .frnn bytes in snapshots: a state moves only between equal models."""
    return hashlib.sha256(bytes(data)).hexdigest()[:32]


def state_to_bytes(states, fingerprint, steps):
    """A sequence's state -> its snapshot: magic, version (u32), header length (u32), a JSON
    header {model, steps, shapes}, then each state's float32 values (little-endian) in order."""
    head = json.dumps({"model": fingerprint, "steps": int(steps),
                       "shapes": [list(a.shape) for a in states]}, sort_keys=True).encode()
    parts = [SNAPSHOT_MAGIC, struct.pack("<II", SNAPSHOT_VERSION, len(head)), head]
    parts += [np.ascontiguousarray(a, "<f4").tobytes() for a in states]
    return b"".join(parts)


def state_from_bytes(data, fingerprint, shapes):
    """A snapshot -> (states, steps), checked against this server's model (fingerprint, state
    shapes); every defect is a ServeError 400 naming it."""
    def bad(why):
        raise ServeError(400, f"state snapshot: {why}")
    data = bytes(data)
    if len(data) < 16 or data[:8] != SNAPSHOT_MAGIC:
        bad("not a fastrnn state snapshot (no FRNNSTAT magic)")
    version, n = struct.unpack("<II", data[8:16])
    if version != SNAPSHOT_VERSION:
        bad(f"version {version}, this server reads {SNAPSHOT_VERSION}")
    if n > 65536 or 16 + n > len(data):
        bad(f"a header of {n} bytes in a snapshot of {len(data)}")
    try:
        head = json.loads(data[16:16 + n])
    except (ValueError, UnicodeDecodeError):
        bad("the header is not JSON")
    if not isinstance(head, dict) or set(head) != {"model", "steps", "shapes"}:
        bad("the header must have exactly model, steps, shapes")
    if head["model"] != fingerprint:
        bad(f"it was taken on another model ({str(head['model'])[:40]!r}, this server runs {fingerprint!r})")
    steps = head["steps"]
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        bad(f"steps {steps!r} is not a count")
    if head["shapes"] != [list(s) for s in shapes]:
        bad(f"state shapes {head['shapes']!r}, this model's are {[list(s) for s in shapes]!r}")
    sizes = [int(np.prod(s)) * 4 for s in shapes]
    if len(data) != 16 + n + sum(sizes):
        bad(f"{len(data)} bytes, expected {16 + n + sum(sizes)} for these shapes")
    out, pos = [], 16 + n
    for s, k in zip(shapes, sizes):
        a = np.frombuffer(data, "<f4", k // 4, pos).reshape(s).astype(np.float32)
        if not np.isfinite(a).all():
            bad("a state value is not finite")
        out.append(a)
        pos += k
    return out, steps


class _Request:
    """The steps of one message, their outputs as they come, and who waits for them."""
    __slots__ = ("x", "out", "done", "fut", "on_step", "t0", "end")

    def __init__(self, x, out_size, fut, on_step, end):
        self.x, self.fut, self.on_step, self.end = x, fut, on_step, end
        self.out = np.empty((len(x), out_size), np.float32)
        self.done = 0
        self.t0 = time.perf_counter()


class _Seq:
    __slots__ = ("id", "slot", "queue", "last", "steps", "owner", "ending", "zero")

    def __init__(self, sid, owner):
        self.id, self.owner = sid, owner
        self.slot = None                        # its pool slot: taken by the ticker (Batcher._slot)
        self.zero = False                       # restarted: its slot's state is to be zeroed
        self.queue = collections.deque()        # (request, step index)
        self.last = time.monotonic()
        self.steps = 0
        self.ending = False


class Histogram:
    def __init__(self, buckets):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def add(self, v, n=1):
        self.counts[bisect.bisect_left(self.buckets, v)] += n
        self.sum += v * n

    def text(self, name, help_):
        lines = [f"# HELP {name} {help_}", f"# TYPE {name} histogram"]
        acc = 0
        for b, c in zip(self.buckets, self.counts):
            acc += c
            lines.append(f'{name}_bucket{{le="{b:g}"}} {acc}')
        acc += self.counts[-1]
        lines += [f'{name}_bucket{{le="+Inf"}} {acc}', f"{name}_sum {self.sum:.9g}", f"{name}_count {acc}"]
        return lines


class Batcher:
    """Sequences over one StreamPool, stepped together by one ticker task (module note). Used
    from one asyncio loop; the engine runs in a single worker thread."""

    def __init__(self, model, capacity=1024, max_batch=None, max_pending=None, idle_timeout=60.0,
                 max_steps=4096, fingerprint=None):
        from . import StreamPool
        if not model._cm.can_stream:
            raise FastRNNError("fastrnn serve: this model cannot stream (a layer changes the number of steps, or "
                               "reads the whole sequence); only /v1/predict could serve it")
        self.model = model
        self.capacity = int(capacity)
        self.pool = StreamPool(model, self.capacity)
        self.max_batch = int(max_batch or self.capacity)
        self.max_pending = int(max_pending or 64 * self.capacity)
        self.max_steps = int(max_steps)
        self.idle_timeout = float(idle_timeout)
        self.fingerprint = fingerprint or "unnamed"
        self.ids = model.input_kind == "ids"
        self.in_size = model.input_size
        self.vocab = model.layers[0].vocab_size if self.ids else None
        self.out_size = model.output_size
        self.shapes = model.native_state_shapes(1)
        self.seqs = {}
        self.ready = collections.deque()         # sequences with queued steps, in turn order
        self.pending = 0                         # steps queued, over all sequences
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()               # the pool: one engine call or slot change at a time
        self.idle = asyncio.Event()
        self.idle.set()
        self.exec = ThreadPoolExecutor(1, thread_name_prefix="fastrnn-serve")
        self.draining = False
        self.tasks = []
        # metrics
        self.steps_total = 0
        self.ticks = 0
        self.rejected = collections.Counter()
        self.expired = 0
        self.batch_hist = Histogram(BUCKETS_BATCH)
        self.queue_hist = Histogram(BUCKETS_SECONDS)
        self.engine_hist = Histogram(BUCKETS_SECONDS)

    # -- life ------------------------------------------------------------------------------------
    def start(self):
        self.tasks = [asyncio.get_running_loop().create_task(self._ticker()),
                      asyncio.get_running_loop().create_task(self._reaper())]

    async def drain(self, timeout=10.0):
        """Refuse new work, let every queued step run (at most timeout seconds), stop."""
        self.draining = True
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for s in list(self.seqs.values()):
            self._fail_queue(s, ServeError(503, "the server is shutting down"))
        self.exec.shutdown(wait=True)

    # -- sequences -------------------------------------------------------------------------------
    def _check_id(self, sid):
        if not isinstance(sid, str) or not 1 <= len(sid) <= MAX_ID or not sid.isprintable():
            raise ServeError(400, f"a sequence id is 1 to {MAX_ID} printable characters, got {str(sid)[:80]!r}")

    def _refuse(self, reason, message):
        self.rejected[reason] += 1
        raise ServeError(503, message, retry_after=1)

    def _open(self, sid, owner):
        if self.draining:
            self._refuse("draining", "the server is shutting down")
        if len(self.seqs) >= self.capacity:
            self._refuse("full", f"all {self.capacity} sequence slots are live: retry later, or end idle sequences")
        s = _Seq(sid, owner)
        self.seqs[sid] = s
        return s

    def _slot(self, s):
        """s's pool slot, opened or zeroed now if its start asked for it (under the lock: every
        slot change waits for the pool to be idle, so starts never wait for a tick)."""
        if s.slot is None:
            s.slot = self.pool.open()           # never full: the live sequences are at most capacity
        elif s.zero:
            self.pool.reset(s.slot)
        s.zero = False
        return s.slot

    def _close(self, s):
        """Free s's slot (under the lock: the pool is not stepping)."""
        if self.seqs.get(s.id) is s:
            del self.seqs[s.id]
            if s.slot is not None:
                self.pool.close(s.slot)
        if s.queue:
            self._fail_queue(s, ServeError(409, f"sequence {s.id!r} was ended"))
        try:
            self.ready.remove(s)
        except ValueError:
            pass

    async def end(self, sid, owner=None):
        """End a sequence at once (its queued steps fail): DELETE, or (owner given) the WebSocket
        that started it closing. -> whether it was live."""
        async with self.lock:                    # after the tick in flight, if any
            s = self.seqs.get(sid)
            if s is None or (owner is not None and s.owner is not owner):
                return False
            self._close(s)
            return True

    def _fail_queue(self, s, err):
        done = set()
        while s.queue:
            req, _ = s.queue.popleft()
            self.pending -= 1
            if id(req) not in done and not req.fut.done():
                req.fut.set_exception(err)
            done.add(id(req))
        self._idle_check()

    def _idle_check(self):
        if self.pending == 0:
            self.idle.set()

    def inputs(self, x):
        """A message's steps as the model takes them: (k,) ids or (k, features) floats."""
        try:
            a = np.asarray(x, np.int64 if self.ids else np.float32)
        except (ValueError, TypeError, OverflowError):
            raise ServeError(400, f"inputs: expected {self._want()}") from None
        if self.ids and a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if (self.ids and a.ndim != 1) or (not self.ids and (a.ndim != 2 or a.shape[1] != self.in_size)):
            raise ServeError(400, f"inputs: expected {self._want()}, got an array of shape {a.shape}")
        if not 1 <= len(a) <= self.max_steps:
            raise ServeError(413 if len(a) else 400, f"inputs: 1 to {self.max_steps} steps per message, got {len(a)}")
        if not self.ids and not np.isfinite(a).all():
            raise ServeError(400, "inputs: a value is not finite")
        if self.ids and ((a < 0).any() or (a >= self.vocab).any()):
            raise ServeError(400, f"inputs: token ids are in [0, {self.vocab}), got {int(a.min())}..{int(a.max())}")
        return np.ascontiguousarray(a)

    def _want(self):
        return "a list of token ids (one per step)" if self.ids else \
            f"a list of steps, each a list of {self.in_size} numbers"

    async def submit(self, sid, x, start=False, end=False, owner=None, on_step=None):
        """Run a message's steps on sequence sid -> their (k, output) outputs. start opens it (or
        restarts a live one from a zero state); end closes it after them. on_step(i, row) is
        called as each step's output comes."""
        return await self.enqueue(sid, x, start, end, owner, on_step)

    def enqueue(self, sid, x, start=False, end=False, owner=None, on_step=None):
        """Queue a message's steps (submit's first half; no waiting: a start's slot is taken by
        the ticker) -> the future of their outputs. Messages enqueued one after the other run in
        that order."""
        self._check_id(sid)
        x = self.inputs(x)
        s = self.seqs.get(sid)
        if s is None and not start:
            raise ServeError(404, f"no live sequence {sid!r}: send start=true first (it may have ended or "
                                  f"timed out after {self.idle_timeout:g} s idle)")
        if s is not None and s.ending:
            raise ServeError(409, f"sequence {sid!r} is ending")
        if s is not None and start and s.queue:
            raise ServeError(409, f"sequence {sid!r} is live with steps queued: start it again after them")
        self._admit(x)
        if s is None:
            s = self._open(sid, owner)
        elif start:
            s.zero, s.steps, s.owner = True, 0, owner
        return self._enqueue(s, x, end, on_step)

    def _admit(self, x):
        if self.draining:
            self._refuse("draining", "the server is shutting down")
        if self.pending + len(x) > self.max_pending:
            self._refuse("queue", f"{self.pending} steps are queued (at most {self.max_pending}): retry later")

    def _enqueue(self, s, x, end, on_step):
        fut = asyncio.get_running_loop().create_future()
        req = _Request(x, self.out_size, fut, on_step, end)
        if not s.queue:
            self.ready.append(s)
        s.queue.extend((req, i) for i in range(len(x)))
        s.ending = end
        s.last = time.monotonic()
        self.pending += len(x)
        self.idle.clear()
        self.wake.set()
        return fut

    async def get_state(self, sid):
        async with self.lock:
            s = self.seqs.get(sid)
            if s is None:
                raise ServeError(404, f"no live sequence {sid!r}")
            if s.queue:
                raise ServeError(409, f"sequence {sid!r} has steps queued: read its state after them")
            s.last = time.monotonic()
            return state_to_bytes(self.pool.state(self._slot(s)), self.fingerprint, s.steps)

    async def put_state(self, sid, data, owner=None):
        """Restore (or open) sequence sid from a snapshot; -> its step count."""
        self._check_id(sid)
        states, steps = state_from_bytes(data, self.fingerprint, self.shapes)
        async with self.lock:
            s = self.seqs.get(sid)
            if s is not None and (s.queue or s.ending):
                raise ServeError(409, f"sequence {sid!r} has steps queued")
            if s is None:
                s = self._open(sid, owner)
            self.pool.set_state(self._slot(s), states)
            s.steps, s.last = steps, time.monotonic()
            return steps

    # -- the ticker ------------------------------------------------------------------------------
    def _run(self, slots, x):
        t = time.perf_counter()
        y = self.pool.step(slots, x)
        return y, time.perf_counter() - t

    async def _ticker(self):
        loop = asyncio.get_running_loop()
        while True:
            if not self.ready:
                self._idle_check()
                self.wake.clear()
                await self.wake.wait()
                continue
            async with self.lock:
                await self._tick(loop)
            await asyncio.sleep(0)                      # replies go out before the next tick

    async def _tick(self, loop):
        n = min(len(self.ready), self.max_batch)
        if not n:
            return
        batch = [self.ready.popleft() for _ in range(n)]
        steps = [s.queue[0] for s in batch]
        slots = np.fromiter((self._slot(s) for s in batch), np.int64, n)
        x = np.stack([r.x[i] for r, i in steps])
        now = time.perf_counter()
        for r, i in steps:
            self.queue_hist.add(now - r.t0)
        try:
            y, dt = await loop.run_in_executor(self.exec, self._run, slots, x)
        except (FastRNNError, ValueError) as e:      # not expected: a defect; fail these steps
            err = ServeError(500, f"engine step failed: {e}")
            for s in batch:
                self._fail_queue(s, err)
                self._close(s)
            return
        self.ticks += 1
        self.steps_total += n
        self.batch_hist.add(n)
        self.engine_hist.add(dt)
        for k, s in enumerate(batch):
            r, i = s.queue.popleft()
            self.pending -= 1
            s.steps += 1
            s.last = time.monotonic()
            r.out[i] = y[k]
            r.done += 1
            if r.on_step is not None:
                r.on_step(i, r.out[i])
            if r.done == len(r.x) and not r.fut.done():
                r.fut.set_result(r.out)
            if s.queue:
                self.ready.append(s)
            elif r.end and r.done == len(r.x):
                self._close(s)

    async def _reaper(self):
        period = max(0.05, min(1.0, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(period)
            async with self.lock:
                now = time.monotonic()
                for s in [s for s in self.seqs.values() if not s.queue and now - s.last > self.idle_timeout]:
                    self._close(s)
                    self.expired += 1

    # -- metrics -----------------------------------------------------------------------------------
    def metrics_text(self):
        lines = ["# HELP fastrnn_live_sequences Sequences holding a slot.", "# TYPE fastrnn_live_sequences gauge",
                 f"fastrnn_live_sequences {len(self.seqs)}",
                 "# HELP fastrnn_capacity Sequence slots.", "# TYPE fastrnn_capacity gauge",
                 f"fastrnn_capacity {self.capacity}",
                 "# HELP fastrnn_queued_steps Steps waiting for a tick.", "# TYPE fastrnn_queued_steps gauge",
                 f"fastrnn_queued_steps {self.pending}",
                 "# HELP fastrnn_steps_total Sequence steps run (rate() gives steps/s).",
                 "# TYPE fastrnn_steps_total counter", f"fastrnn_steps_total {self.steps_total}",
                 "# HELP fastrnn_ticks_total Engine calls (one StreamPool step each).",
                 "# TYPE fastrnn_ticks_total counter", f"fastrnn_ticks_total {self.ticks}",
                 "# HELP fastrnn_expired_total Sequences closed by the idle timeout.",
                 "# TYPE fastrnn_expired_total counter", f"fastrnn_expired_total {self.expired}",
                 "# HELP fastrnn_rejected_total Requests refused with 503, by reason.",
                 "# TYPE fastrnn_rejected_total counter"]
        for reason in ("full", "queue", "draining"):
            lines.append(f'fastrnn_rejected_total{{reason="{reason}"}} {self.rejected[reason]}')
        lines += self.batch_hist.text("fastrnn_batch_size", "Sequences stepped per engine call.")
        lines += self.queue_hist.text("fastrnn_queue_delay_seconds",
                                      "From a message's arrival to the tick that takes each of its steps.")
        lines += self.engine_hist.text("fastrnn_step_latency_seconds", "Engine time of one tick.")
        return "\n".join(lines) + "\n"


# ---- the web layer ---------------------------------------------------------------------------------

# Binary WebSocket frames (docs/serving.md): JSON's float printing and parsing cost more than the
# engine's step (a profile of the server at 1,000 conversations: 69% of its time in json), so a
# client that streams many floats sends and gets them raw.
#   client -> server: flags (u8: 1 start, 2 end), id length (u16), id (UTF-8), k (u32), then k
#                     steps: int32 token ids, or k x input_size float32 (little-endian)
#   server -> client: one or more step records back to back (those ready together), each
#                     flags (u8: 1 the message's last step, 2 the sequence ended), id length
#                     (u16), id, step (u32), the output's float32 values
WS_HEAD = struct.Struct("<BH")


def ws_parse(data, b):
    """A binary message -> (id, steps, start, end); ServeError 400 naming a defect."""
    if len(data) < WS_HEAD.size:
        raise ServeError(400, f"a binary frame of {len(data)} bytes: too short for its header")
    flags, n = WS_HEAD.unpack_from(data, 0)
    if flags & ~3:
        raise ServeError(400, f"binary frame flags {flags:#x}: only 1 (start) and 2 (end) are defined")
    pos = WS_HEAD.size + n
    if len(data) < pos + 4:
        raise ServeError(400, "a binary frame shorter than its id and step count")
    try:
        sid = bytes(data[WS_HEAD.size:pos]).decode("utf-8")
    except UnicodeDecodeError:
        raise ServeError(400, "the sequence id is not UTF-8") from None
    (k,) = struct.unpack_from("<I", data, pos)
    width = 1 if b.ids else b.in_size
    if len(data) - pos - 4 != 4 * k * width:
        raise ServeError(400, f"a binary frame of {k} steps carries {len(data) - pos - 4} bytes, "
                              f"expected {4 * k * width} ({'int32 ids' if b.ids else f'{width} float32 per step'})")
    x = np.frombuffer(data, "<i4" if b.ids else "<f4", k * width, pos + 4)
    return sid, (x if b.ids else x.reshape(k, width)), bool(flags & 1), bool(flags & 2)

NPY = "application/x-npy"
SNAPSHOT = "application/octet-stream"


def _npy_bytes(a):
    b = io.BytesIO()
    np.save(b, np.ascontiguousarray(a), allow_pickle=False)
    return b.getvalue()


def _npy_load(data, what):
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any defect of a client's file is a 400
        raise ServeError(400, f"{what}: not a NumPy .npy array ({type(e).__name__}: {e})") from None


def _flag(v, name):
    if isinstance(v, bool):
        return v
    if v in ("1", "true", "True"):
        return True
    if v in (None, "0", "false", "False"):
        return False
    raise ServeError(400, f"{name}: true or false, got {v!r}")


async def _text(request):
    try:
        return (await request.read()).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ServeError(400, f"the body is not UTF-8 text: {e}") from None


def _json_body(text, allowed):
    try:
        msg = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except (ValueError, RecursionError) as e:
        raise ServeError(400, f"the message is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ServeError(400, "the message must be a JSON object")
    extra = set(msg) - set(allowed)
    if extra:
        raise ServeError(400, f"unknown field(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    return msg


def _rows(a):
    """float32 rows as JSON numbers: Python floats of float32 values print exactly, so a client
    parsing them back to float32 gets the same bits."""
    return a.tolist()


def make_app(model, model_bytes=None, capacity=1024, idle_timeout=60.0, max_batch=None, max_pending=None,
             predict_delay=0.002, max_body=64 << 20):
    """The aiohttp application serving `model` (docs/serving.md)."""
    from aiohttp import WSMsgType, web

    if model_bytes is None:
        from .fileformat import to_bytes
        model_bytes = to_bytes(model)
    fp = model_fingerprint(model_bytes)
    B = web.AppKey("batcher", Batcher)
    P = web.AppKey("predict", PredictBatcher)

    def error(e, status=None):
        status = status or e.status
        headers = {"Retry-After": str(e.retry_after)} if getattr(e, "retry_after", None) else None
        return web.json_response({"error": str(e)}, status=status, headers=headers)

    async def steps(request):
        b = request.app[B]
        sid = request.match_info["sid"]
        try:
            if request.content_type == NPY:
                x = _npy_load(await request.read(), "body")
                start, end = _flag(request.query.get("start"), "start"), _flag(request.query.get("end"), "end")
            else:
                msg = _json_body(await _text(request), {"inputs", "start", "end"})
                if "inputs" not in msg:
                    raise ServeError(400, "missing field inputs")
                x = msg["inputs"]
                start, end = _flag(msg.get("start", False), "start"), _flag(msg.get("end", False), "end")
            y = await b.submit(sid, x, start, end)
        except ServeError as e:
            return error(e)
        if NPY in request.headers.get("Accept", ""):
            return web.Response(body=_npy_bytes(y), content_type=NPY)
        return web.json_response({"id": sid, "outputs": _rows(y)})

    async def delete(request):
        if not await request.app[B].end(request.match_info["sid"]):
            return error(ServeError(404, f"no live sequence {request.match_info['sid']!r}"))
        return web.json_response({"id": request.match_info["sid"], "ended": True})

    async def get_state(request):
        try:
            data = await request.app[B].get_state(request.match_info["sid"])
        except ServeError as e:
            return error(e)
        return web.Response(body=data, content_type=SNAPSHOT)

    async def put_state(request):
        try:
            steps_ = await request.app[B].put_state(request.match_info["sid"], await request.read())
        except ServeError as e:
            return error(e)
        return web.json_response({"id": request.match_info["sid"], "steps": steps_})

    async def predict(request):
        try:
            if request.content_type == NPY:
                x, lengths = _npy_load(await request.read(), "body"), None
            else:
                msg = _json_body(await _text(request), {"inputs", "lengths"})
                if "inputs" not in msg:
                    raise ServeError(400, "missing field inputs")
                x, lengths = msg["inputs"], msg.get("lengths")
            y = await request.app[P].submit(x, lengths)
        except ServeError as e:
            return error(e)
        if NPY in request.headers.get("Accept", ""):
            return web.Response(body=_npy_bytes(y), content_type=NPY)
        return web.json_response({"outputs": _rows(y)})

    async def ws(request):
        b = request.app[B]
        sock = web.WebSocketResponse(heartbeat=30, max_msg_size=max_body)
        await sock.prepare(request)
        out = asyncio.Queue()
        owned = set()

        async def writer():
            """Replies in order. Binary step records waiting together go out as one frame (a
            tick makes one per stepped sequence of this socket: one frame, one write for them)."""
            m = await out.get()
            while m is not None:
                if isinstance(m, bytes):
                    parts = [m]
                    m = None
                    while not out.empty():
                        m = out.get_nowait()
                        if not isinstance(m, bytes):
                            break
                        parts.append(m)
                        m = None
                    await sock.send_bytes(b"".join(parts) if len(parts) > 1 else parts[0])
                    if m is None:
                        m = await out.get()
                    continue
                await sock.send_json(m)
                m = await out.get()
        wtask = asyncio.get_running_loop().create_task(writer())

        def binary_steps(sid, k, end):
            e = sid.encode()
            key = struct.pack("<H", len(e)) + e

            def on_step(i, row):
                flags = (1 if i == k - 1 else 0) | (2 if end and i == k - 1 else 0)
                out.put_nowait(bytes([flags]) + key + struct.pack("<I", i) + row.tobytes())
            return on_step

        def json_steps(sid):
            return lambda i, row: out.put_nowait({"id": sid, "step": i, "output": _rows(row)})

        def finished(sid, end, text):
            def cb(fut):
                e = None if fut.cancelled() else fut.exception()
                if fut.cancelled():
                    return
                if e is not None:
                    out.put_nowait({"id": sid, "error": str(e), "status": getattr(e, "status", 500)})
                elif text:
                    out.put_nowait({"id": sid, "done": len(fut.result()), **({"ended": True} if end else {})})
                if end or e is not None:
                    owned.discard(sid)
            return cb

        def intake(m):
            """One message: parsed and queued before the next is read (a socket's messages run
            in their order); its replies come from the ticker."""
            sid, text = None, m.type == WSMsgType.TEXT
            try:
                if text:
                    msg = _json_body(m.data, {"id", "inputs", "start", "end"})
                    sid = msg.get("id")
                    if "inputs" not in msg:
                        raise ServeError(400, "missing field inputs")
                    x, start, end = (msg["inputs"], _flag(msg.get("start", False), "start"),
                                     _flag(msg.get("end", False), "end"))
                    on_step = json_steps(sid)
                else:
                    sid, x, start, end = ws_parse(m.data, b)
                    on_step = binary_steps(sid, len(x), end)
                fut = b.enqueue(sid, x, start, end, owner=sock, on_step=on_step)
            except ServeError as e:
                out.put_nowait({"id": sid if isinstance(sid, str) else None, "error": str(e), "status": e.status})
                return
            owned.add(sid)
            fut.add_done_callback(finished(sid, end, text))

        try:
            async for m in sock:
                if m.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    intake(m)
                elif m.type == WSMsgType.ERROR:
                    break
        finally:
            for sid in list(owned):            # a dropped client frees its slots at once
                await b.end(sid, owner=sock)
            out.put_nowait(None)
            await asyncio.gather(wtask, return_exceptions=True)
        return sock

    async def healthz(request):
        return web.Response(text="ok\n")

    async def readyz(request):
        if request.app[B].draining:
            return web.Response(text="draining\n", status=503)
        return web.Response(text="ready\n")

    async def metrics(request):
        return web.Response(text=request.app[B].metrics_text(), content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def on_startup(app):
        app[B] = Batcher(model, capacity, max_batch, max_pending, idle_timeout, fingerprint=fp)
        app[B].start()
        app[P] = PredictBatcher(model, app[B].exec, predict_delay)

    async def on_shutdown(app):
        await app[P].drain()
        await app[B].drain()

    @web.middleware
    async def json_errors(request, handler):
        """aiohttp's own refusals (no such route, a method not allowed, a body over the limit)
        in the server's error form, {"error": ...}."""
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return web.json_response({"error": f"{e.reason}: {request.method} {request.path}"
                                      + (f" ({e.text})" if e.text and e.text != f"{e.status}: {e.reason}" else "")},
                                     status=e.status, headers={k: v for k, v in e.headers.items()
                                                               if k in ("Allow", "Retry-After")})

    app = web.Application(client_max_size=max_body, middlewares=[json_errors])
    app.router.add_post("/v1/sequences/{sid}/steps", steps)
    app.router.add_delete("/v1/sequences/{sid}", delete)
    app.router.add_get("/v1/sequences/{sid}/state", get_state)
    app.router.add_put("/v1/sequences/{sid}/state", put_state)
    app.router.add_post("/v1/predict", predict)
    app.router.add_get("/v1/ws", ws)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


class PredictBatcher:
    """Whole sequences: requests of the same shape after the batch axis that arrive within
    `delay` seconds run as one predict (rows are independent: each gets its own rows' bits)."""

    def __init__(self, model, executor, delay=0.002, max_rows=4096):
        self.model, self.exec, self.delay, self.max_rows = model, executor, float(delay), int(max_rows)
        self.groups = {}
        self.draining = False
        self.flushes = set()         # running flush tasks (the loop keeps only weak references)

    def inputs(self, x, lengths):
        m = self.model
        ids = m.input_kind == "ids"
        try:
            a = np.asarray(x, np.int64 if ids else np.float32)
            n = None if lengths is None else np.asarray(lengths, np.int64)
        except (ValueError, TypeError, OverflowError):
            raise ServeError(400, "inputs / lengths: arrays of numbers expected") from None
        want = 2 if ids else 3
        if a.ndim != want or (not ids and a.shape[2] != m.input_size) or a.shape[0] < 1 or a.shape[1] < 1:
            raise ServeError(400, f"inputs: expected (batch, time{'' if ids else ', ' + str(m.input_size)}), "
                                  f"got shape {a.shape}")
        if a.shape[0] > self.max_rows:
            raise ServeError(413, f"inputs: at most {self.max_rows} sequences per request")
        if not ids and not np.isfinite(a).all():
            raise ServeError(400, "inputs: a value is not finite")
        if n is not None and (n.shape != (a.shape[0],) or (n < 0).any() or (n > a.shape[1]).any()):
            raise ServeError(400, f"lengths: {a.shape[0]} integers in [0, {a.shape[1]}] expected")
        return a, n

    async def submit(self, x, lengths=None):
        if self.draining:
            raise ServeError(503, "the server is shutting down", retry_after=1)
        a, n = self.inputs(x, lengths)
        key = (a.shape[1:], a.dtype.str, n is not None)
        loop = asyncio.get_running_loop()
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = []
            loop.call_later(self.delay, self._spawn, key)
        fut = loop.create_future()
        g.append((a, n, fut))
        if sum(len(r[0]) for r in g) >= self.max_rows:
            self._spawn(key)
        return await fut

    def _spawn(self, key):
        t = asyncio.get_running_loop().create_task(self._flush(key))
        self.flushes.add(t)
        t.add_done_callback(self.flushes.discard)

    def _predict(self, x, n):
        return self.model.predict(x, lengths=n)

    async def _flush(self, key):
        g = self.groups.pop(key, None)
        if not g:
            return
        x = np.concatenate([r[0] for r in g])
        n = None if g[0][1] is None else np.concatenate([r[1] for r in g])
        try:
            y = await asyncio.get_running_loop().run_in_executor(self.exec, self._predict, x, n)
        except (FastRNNError, ValueError) as e:
            for *_, fut in g:
                if not fut.done():
                    fut.set_exception(ServeError(400, f"predict: {e}"))
            return
        if isinstance(y, list):
            y = y[0]
        pos = 0
        for a, _, fut in g:
            if not fut.done():
                fut.set_result(y[pos:pos + len(a)])
            pos += len(a)

    async def drain(self):
        self.draining = True
        for key in list(self.groups):
            await self._flush(key)
        await asyncio.gather(*self.flushes, return_exceptions=True)


def run(model, name, host="127.0.0.1", port=8000, capacity=1024, idle_timeout=60.0, max_batch=None, threads=None):
    """`fastrnn serve`: serve a loaded model (name: its file, for the banner) until SIGINT /
    SIGTERM (graceful: queued steps drain)."""
    from aiohttp import web

    from . import set_num_threads
    if threads:
        set_num_threads(int(threads))
    app = make_app(model, None, capacity, idle_timeout, max_batch)
    print(f"fastrnn serve: {name} on http://{host}:{port} (capacity {capacity}, idle timeout {idle_timeout:g} s)",
          flush=True)
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=15)
