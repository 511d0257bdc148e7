// charlm.js: the character-LM page's client of `fastrnn serve` (index.html loads it; no build
// step, no dependencies). The model steps on the server; the sampling happens here.
//
// Protocol (docs/serving.md, binary WebSocket frames on /v1/ws): the prompt's character ids go
// as ONE message of many steps with the start flag (messages of at most 4096 steps if longer);
// the server answers one record per step holding the model's output, the next character's
// log-probabilities as float32. The prompt's last step's output gives the first character; each
// sampled character goes back as a one-step message whose output gives the next; the last one
// goes with the end flag, which ends the sequence on the server.
//
// The sampling rule is examples/web/client.py's, line for line (its module note states it):
// mulberry32 for the uniform draws, the argmax at temperature 0, else the first id whose running
// sum of exp_((l[i] - max) / T) exceeds uniform() * total. Every number is a float64 and every
// operation a +, -, *, / or an exact one (floor, a power of two, float32 -> float64), in the same
// order as in Python: IEEE 754 makes the results bit-identical, so the same (prompt, tokens,
// temperature, seed) gives the same text here and in client.py. (Math.exp is not used: its last
// bit is the JS engine's, not libm's.)
"use strict";

const CharLM = (() => {
  const MAX_STEPS = 4096;           // the server's limit of steps per message
  const START = 1, END = 2;         // client -> server frame flags
  const LAST = 1;                   // server -> client record flag: the message's last step

  // ---- the sampling rule -------------------------------------------------------------------------
  class Mulberry32 {
    constructor(seed) {
      if (!Number.isInteger(seed) || seed < 0 || seed > 0xFFFFFFFF)
        throw new RangeError("seed: an integer in [0, 4294967295], got " + seed);
      this.a = seed;
    }
    nextU32() {
      this.a = (this.a + 0x6D2B79F5) >>> 0;
      let t = this.a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return (t ^ (t >>> 14)) >>> 0;
    }
    uniform() { return this.nextU32() / 4294967296; }
  }

  const LN2_HI = 6.93147180369123816490e-01;   // ln 2's leading bits (the low 32 bits are 0)
  const LN2_LO = 1.90821492927058770002e-10;   // ln 2 - LN2_HI
  const INV_LN2 = 1.44269504088896338700e+00;
  const EXP_C = [1.0];
  for (let n = 1; n < 14; n++) EXP_C.push(EXP_C[n - 1] / n);   // 1/n!, as client.py computes it
  const bits = new DataView(new ArrayBuffer(8));

  function pow2(k) {                // 2**k for an integer k in [-1022, 1023], built exactly
    bits.setUint32(0, (k + 1023) << 20);
    bits.setUint32(4, 0);
    return bits.getFloat64(0);
  }

  function exp_(x) {                // e**x for x <= 0 (client.py's exp_)
    if (x < -700) return 0;
    const k = Math.floor(x * INV_LN2 + 0.5);
    const r = (x - k * LN2_HI) - k * LN2_LO;
    let p = EXP_C[13];
    for (let n = 12; n >= 0; n--) p = p * r + EXP_C[n];
    return p * pow2(k);
  }

  function pick(logits, temperature, rng) {
    const n = logits.length;
    if (temperature <= 0) {
      let best = 0;
      for (let i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
      return best;
    }
    let m = logits[0];
    for (let i = 1; i < n; i++) if (logits[i] > m) m = logits[i];
    const w = new Float64Array(n);
    for (let i = 0; i < n; i++) w[i] = exp_((logits[i] - m) / temperature);
    let total = 0;
    for (let i = 0; i < n; i++) total += w[i];
    const x = rng.uniform() * total;
    let acc = 0;
    for (let i = 0; i < n; i++) {
      acc += w[i];
      if (acc > x) return i;
    }
    return n - 1;
  }

  // ---- the vocabulary and the wire ---------------------------------------------------------------
  function encode(chars, text) {    // ids of the known characters; none: a newline's
    const index = new Map([...chars].map((c, i) => [c, i]));
    const ids = [];
    for (const c of text) if (index.has(c)) ids.push(index.get(c));
    return ids.length ? ids : [index.get("\n")];
  }

  function frame(sid, ids, flags) { // flags (u8), id length (u16), id, k (u32), k int32 ids
    const id = new TextEncoder().encode(sid);
    const buf = new ArrayBuffer(3 + id.length + 4 + 4 * ids.length);
    const v = new DataView(buf);
    v.setUint8(0, flags);
    v.setUint16(1, id.length, true);
    new Uint8Array(buf, 3, id.length).set(id);
    v.setUint32(3 + id.length, ids.length, true);
    ids.forEach((x, i) => v.setInt32(7 + id.length + 4 * i, x, true));
    return buf;
  }

  function parseRecords(buf, outSize) {   // a server frame -> [{flags, id, step, output}]
    const v = new DataView(buf), dec = new TextDecoder(), out = [];
    let pos = 0;
    while (pos < buf.byteLength) {
      const flags = v.getUint8(pos), n = v.getUint16(pos + 1, true);
      const id = dec.decode(new Uint8Array(buf, pos + 3, n));
      const step = v.getUint32(pos + 3 + n, true);
      pos += 7 + n;
      if (pos + 4 * outSize > buf.byteLength) throw new Error("a step record cut short");
      const output = new Float64Array(outSize);       // float32 -> float64: exact
      for (let i = 0; i < outSize; i++) output[i] = v.getFloat32(pos + 4 * i, true);
      out.push({flags, id, step, output});
      pos += 4 * outSize;
    }
    return out;
  }

  // One WebSocket to /v1/ws; step() sends a message of a sequence and resolves with the output of
  // its last step (records of other steps are not needed for sampling).
  class Connection {
    constructor(url, outSize) {
      this.url = url; this.outSize = outSize; this.ws = null; this.waiting = new Map();
    }
    open() {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this);
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(this.url);
        ws.binaryType = "arraybuffer";
        ws.onopen = () => { this.ws = ws; resolve(this); };
        ws.onerror = () => reject(new Error("cannot open " + this.url));
        ws.onclose = () => {
          this.ws = null;
          for (const w of this.waiting.values()) w.reject(new Error("the connection closed"));
          this.waiting.clear();
        };
        ws.onmessage = ev => this.receive(ev.data);
      });
    }
    receive(data) {
      if (typeof data === "string") {               // a JSON frame: an error
        const m = JSON.parse(data);
        if (m.error === undefined) return;
        const err = new Error(m.error + " (" + m.status + ")");
        const ws = m.id != null && this.waiting.has(m.id) ? [m.id] : [...this.waiting.keys()];
        for (const id of ws) { this.waiting.get(id).reject(err); this.waiting.delete(id); }
        return;
      }
      for (const r of parseRecords(data, this.outSize)) {
        const w = this.waiting.get(r.id);
        if (w && (r.flags & LAST)) { this.waiting.delete(r.id); w.resolve(r.output); }
      }
    }
    step(sid, ids, flags) {
      return new Promise((resolve, reject) => {
        if (!this.ws) return reject(new Error("not connected"));
        this.waiting.set(sid, {resolve, reject});
        this.ws.send(frame(sid, ids, flags));
      });
    }
  }

  // Generate `tokens` characters after `prompt`; onChar(ch) gets each as it is picked.
  async function generate(conn, chars, {prompt, tokens, temperature, seed}, onChar) {
    const rng = new Mulberry32(seed);
    const ids = encode(chars, prompt);
    const sid = "web-" + Array.from(crypto.getRandomValues(new Uint32Array(4)), x => x.toString(16)).join("");
    let y;
    for (let k = 0; k < ids.length; k += MAX_STEPS) {
      const last = k + MAX_STEPS >= ids.length;
      y = await conn.step(sid, ids.slice(k, k + MAX_STEPS), (k === 0 ? START : 0) | (last && tokens === 0 ? END : 0));
    }
    for (let k = 0; k < tokens; k++) {
      const i = pick(y, temperature, rng);
      onChar(chars[i]);
      y = await conn.step(sid, [i], k + 1 === tokens ? END : 0);
    }
  }

  return {Mulberry32, exp_, pick, encode, frame, parseRecords, Connection, generate};
})();

// ---- the page ---------------------------------------------------------------------------------------
(() => {
  const $ = id => document.getElementById(id);
  let chars = null, conn = null;

  function setState(state, message) {
    $("status").dataset.state = state;
    $("status").textContent = message;
    $("go").disabled = state === "running" || chars === null;
  }

  function readForm() {             // -> the request, or throws naming the bad field
    const tokens = Number($("tokens").value);
    if (!Number.isInteger(tokens) || tokens < 0) throw new Error("characters: an integer >= 0");
    const temperature = Number($("temperature").value);
    if (!Number.isFinite(temperature) || temperature < 0) throw new Error("temperature: a number >= 0 (0 = greedy)");
    let seed;
    if ($("seed").value.trim() === "") seed = crypto.getRandomValues(new Uint32Array(1))[0];
    else {
      seed = Number($("seed").value);
      if (!Number.isInteger(seed) || seed < 0 || seed > 0xFFFFFFFF) throw new Error("seed: an integer in [0, 4294967295]");
    }
    return {prompt: $("prompt").value, tokens, temperature, seed};
  }

  async function start() {
    $("status").dataset.runs = Number($("status").dataset.runs || 0) + 1;   // presses of the button
    let req;
    try { req = readForm(); } catch (e) { setState("error", e.message); return; }
    $("prompt-echo").textContent = req.prompt;
    const text = document.createTextNode("");
    $("text").replaceChildren(text);
    setState("running", "generating (seed " + req.seed + ")");
    const t0 = performance.now();
    try {
      if (!conn) conn = new CharLM.Connection((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws", chars.length);
      await conn.open();
      await CharLM.generate(conn, chars, req, ch => text.appendData(ch));
    } catch (e) {
      setState("error", "error: " + e.message);
      return;
    }
    const s = (performance.now() - t0) / 1000;
    setState("done", req.tokens + " characters in " + s.toFixed(2) + " s, " +
             Math.round(req.tokens / Math.max(s, 1e-6)).toLocaleString() + " characters/s (seed " + req.seed + ")");
  }

  $("go").onclick = start;
  fetch("vocab.json").then(r => {
    if (!r.ok) throw new Error("vocab.json: HTTP " + r.status);
    return r.json();
  }).then(v => {
    chars = v.chars;
    setState("ready", "ready");
    // /?prompt=...&tokens=...&temperature=...&seed=... fills the form and starts at once
    const q = new URLSearchParams(location.search);
    for (const k of ["prompt", "tokens", "temperature", "seed"]) if (q.has(k)) $(k).value = q.get(k);
    if (q.has("prompt")) start();
  }).catch(e => setState("error", "error: " + e.message));
})();
