// rtcio-peer.js — a browser rtc.io peer for integration tests.
//
// Part 1 (the library) is crates/rtcio-server/web/rtcio.js — the same file rtcio-server serves
// to the guest page — served here at /lib/ by driver.mjs: it re-implements the rtc.io 1.x
// browser client exactly as shared/PROTOCOL.md describes it, defaults and quirks included, on
// top of the browser's RTCPeerConnection and socket.io-client 4.8. Part 2 (this file, the test
// layer) records everything that happens in `window.__log` and offers helpers the Node driver
// (driver.mjs) calls. README.md lists every deviation.
//
// Plain ES module, no build step. Section references (§) point into PROTOCOL.md.

import {
  RtcioEvents, RTCIOStream, RTCIOChannel, RTCIOBroadcastChannel, Socket, connect, hashChannelName,
  errText, defaults, setHooks,
} from "/lib/rtcio.js";

export { RtcioEvents, RTCIOStream, RTCIOChannel, RTCIOBroadcastChannel, Socket, connect, hashChannelName };

const INTERNAL_EVENT_PREFIX = "#rtcio:";

// Offline tests: no ICE servers unless a test passes some (the JS falls back to public STUN),
// and only loopback candidates are signaled unless `loopbackOnly: false`.
defaults.iceServers = [];
defaults.loopbackOnly = true;

// ═══════════════════════════════════════════════════════════════════════════════════════════════
// Part 2 — the test layer
// ═══════════════════════════════════════════════════════════════════════════════════════════════

// Incremental SHA-256 (WebCrypto has no streaming digest).
const K256 = new Int32Array([ // Int32 views keep V8 on small-integer paths
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
export class Sha256 {
  constructor() {
    this.h = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    this.buf = new Uint8Array(64);
    this.bufLen = 0;
    this.total = 0;
    this.w = new Int32Array(64);
  }
  update(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength);
    const n = bytes.length;
    let i = 0;
    this.total += n;
    if (this.bufLen) {
      const take = Math.min(64 - this.bufLen, n);
      this.buf.set(bytes.subarray(0, take), this.bufLen);
      this.bufLen += take;
      i = take;
      if (this.bufLen === 64) { this._block(this.buf, 0); this.bufLen = 0; }
    }
    for (; i + 64 <= n; i += 64) this._block(bytes, i);
    if (i < n) { this.buf.set(bytes.subarray(i), 0); this.bufLen = n - i; }
    return this;
  }
  _block(b, o) {
    const w = this.w, H = this.h;
    for (let t = 0; t < 16; t++, o += 4) w[t] = (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
    for (let t = 16; t < 64; t++) {
      const a = w[t - 15], c = w[t - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((c >>> 17) | (c << 15)) ^ ((c >>> 19) | (c << 13)) ^ (c >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    let a = H[0], bb = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K256[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = bb; bb = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + bb) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }
  /** Hex digest of everything so far; does not disturb the running state. */
  hex() {
    const c = new Sha256();
    c.h.set(this.h); c.buf.set(this.buf); c.bufLen = this.bufLen; c.total = this.total;
    const bits = this.total * 8;
    const pad = new Uint8Array(((c.bufLen < 56 ? 56 : 120) - c.bufLen) + 8);
    pad[0] = 0x80;
    const dv = new DataView(pad.buffer);
    dv.setUint32(pad.length - 8, Math.floor(bits / 2 ** 32));
    dv.setUint32(pad.length - 4, bits >>> 0);
    c.update(pad);
    return Array.from(c.h, (x) => (x >>> 0).toString(16).padStart(8, "0")).join("");
  }
}
export function sha256Hex(data) { return new Sha256().update(data).hex(); }

/**
 * Deterministic test bytes: xorshift32 (x ^= x<<13; x ^= x>>>17; x ^= x<<5), seed 0 → 0x9e3779b9,
 * each step's 32-bit state written little-endian; the byte stream is the concatenation, so chunk
 * boundaries do not matter. A Rust test can regenerate the same bytes.
 */
export class ByteGen {
  constructor(seed = 1) { this.x = (seed >>> 0) || 0x9e3779b9; this.pend = 0; this.pendLen = 0; }
  _step() { let x = this.x; x ^= x << 13; x ^= x >>> 17; x ^= x << 5; this.x = x >>> 0; return this.x; }
  next(n) {
    const out = new Uint8Array(n);
    let i = 0;
    while (i < n && this.pendLen > 0) { out[i++] = this.pend & 0xff; this.pend >>>= 8; this.pendLen--; }
    while (i + 4 <= n) {
      const x = this._step();
      out[i] = x & 0xff; out[i + 1] = (x >>> 8) & 0xff; out[i + 2] = (x >>> 16) & 0xff; out[i + 3] = x >>> 24;
      i += 4;
    }
    if (i < n) {
      let x = this._step(); this.pendLen = 4;
      while (i < n) { out[i++] = x & 0xff; x >>>= 8; this.pendLen--; }
      this.pend = x;
    }
    return out;
  }
}

const now = () => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;

/** Test recorder: the append-only log plus the hooks the library calls. */
const T = {
  log: [],
  waiters: [],
  recv: new Map(), // "peer\u0000channel" → {messages, bytes, sha, firstAt, lastAt}
  config: { hashEachMessage: true, recvMode: "hash", attachRemoteVideo: true },

  push(kind, fields = {}) {
    const entry = { t: now(), kind, ...fields };
    const index = T.log.length;
    T.log.push(entry);
    if (T.waiters.length) {
      for (const w of T.waiters.slice()) {
        if (index >= w.since && matches(entry, w.pattern)) { w.done(index, entry); }
      }
    }
    return entry;
  },

  /** JSON-safe copy of any value: streams/channels/sockets/binary become small descriptions. */
  loggable(v, depth = 0, seen = new WeakSet()) {
    if (v === null || v === undefined) return v ?? null;
    const ty = typeof v;
    if (ty === "string" || ty === "boolean") return v;
    if (ty === "number") return Number.isFinite(v) ? v : String(v);
    if (ty === "bigint") return v.toString();
    if (ty === "function" || ty === "symbol") return undefined;
    if (v instanceof RTCIOStream) return { $stream: streamInfo(v) };
    if (typeof MediaStream !== "undefined" && v instanceof MediaStream) return { $mediaStream: { id: v.id, kinds: v.getTracks().map((t) => t.kind) } };
    if (typeof MediaStreamTrack !== "undefined" && v instanceof MediaStreamTrack) return { $track: { id: v.id, kind: v.kind, readyState: v.readyState } };
    if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return { $bytes: v.byteLength, sha256: sha256Hex(v) };
    if (v instanceof Error) return { $error: errText(v) };
    if (v instanceof Socket) return { $socket: { index: v._testIndex, id: v.id ?? null, connected: v.connected } };
    if (v instanceof RTCIOChannel) return { $channel: { ...v._meta, readyState: v.readyState } };
    if (v instanceof RTCIOBroadcastChannel) return { $broadcast: { name: v._name, peers: [...v._peers.keys()], closed: v._closed } };
    if (typeof Event !== "undefined" && v instanceof Event) return { $event: v.type };
    if (typeof Node !== "undefined" && v instanceof Node) return { $node: v.nodeName };
    if (v instanceof Map) v = Object.fromEntries(v);
    if (v instanceof Set) v = [...v];
    if (typeof v.toJSON === "function" && !Array.isArray(v)) {
      try { return T.loggable(v.toJSON(), depth, seen); } catch { /* fall through */ }
    }
    if (seen.has(v)) return "[Circular]";
    if (depth > 12) return "[Depth]";
    seen.add(v);
    let out;
    if (Array.isArray(v)) {
      out = v.map((x) => { const y = T.loggable(x, depth + 1, seen); return y === undefined ? null : y; });
    } else {
      out = {};
      for (const k in v) {
        const y = T.loggable(v[k], depth + 1, seen);
        if (y !== undefined) out[k] = y;
      }
    }
    seen.delete(v);
    return out;
  },

  serverEvent(socket, args) {
    const [name, ...rest] = args;
    if (typeof name === "string" && name.startsWith(INTERNAL_EVENT_PREFIX)) {
      const p = rest[0];
      const d = p?.data;
      let what = "other";
      if (name === RtcioEvents.MESSAGE) {
        if (d?.description) what = d.description.type;
        else if (d?.candidate) what = "candidate";
        else if (d?.events) what = "meta-response";
        else if (d?.mid) what = "meta-request";
      } else if (name === RtcioEvents.INIT_OFFER) what = "init-offer";
      else if (name === RtcioEvents.PEER_LEFT) what = "peer-left";
      T.push("signal", { socket: socket._testIndex, name, what, from: p?.source ?? p?.id ?? null, args: T.loggable(rest) });
    } else {
      T.push("event", { via: "server", socket: socket._testIndex, name, args: T.loggable(rest) });
    }
  },
  signalOut(socket, name, args) {
    const d = args[0]?.data;
    let what = "other";
    if (d?.description) what = d.description.type;
    else if (d?.candidate) what = "candidate";
    else if (d?.events) what = "meta-response";
    else if (d?.mid) what = "meta-request";
    T.push("signal-out", { socket: socket._testIndex, name, what, to: args[0]?.target ?? null, args: T.loggable(args) });
  },
  streamEvent(socket, peer, name, rawArgs, wrapper, listeners) {
    // Log the args as the listeners will see them, without mutating anything (ID-sync only
    // happens when there is a listener, exactly as in the library).
    const subst = (x) => {
      if (typeof x === "string" && x.startsWith("[RTCIOStream]")) return { $stream: { ...streamInfo(wrapper), id: x.replace("[RTCIOStream] ", "") } };
      if (Array.isArray(x)) return x.map(subst);
      if (x && typeof x === "object") { const o = {}; for (const k in x) o[k] = subst(x[k]); return o; }
      return x;
    };
    T.push("event", { via: "stream", socket: socket._testIndex, peer, name, args: T.loggable(rawArgs.map(subst)), listeners });
  },
  ctrlDropped(peer, reason, extra = {}) { T.push("ctrl-dropped", { peer, reason, ...extra }); },
  channelEvent(ch, kind, extra = {}) { T.push(kind, { peer: ch._meta.peer, channel: ch._meta.name, ...extra }); },
  channelMessage(ch, name, args) {
    T.push("channel", { peer: ch._meta.peer, channel: ch._meta.name, name, args: T.loggable(args) });
  },
  channelData(ch, data) {
    const key = `${ch._meta.peer}\u0000${ch._meta.name}`;
    let r = T.recv.get(key);
    if (!r) { r = { messages: 0, bytes: 0, sha: new Sha256(), chunks: [], firstAt: now(), lastAt: 0 }; T.recv.set(key, r); }
    const bytes = new Uint8Array(data);
    r.messages++; r.bytes += bytes.length; r.lastAt = now();
    // "hash": running SHA-256 in JS (default); "retain": keep the bytes and hash them natively
    // when asked (cheaper while receiving — used by the benchmark).
    if (T.config.recvMode === "retain") r.chunks.push(bytes); else r.sha.update(bytes);
    const entry = { peer: ch._meta.peer, channel: ch._meta.name, bytes: bytes.length, total: r.bytes };
    if (T.config.hashEachMessage) entry.sha256 = sha256Hex(bytes);
    T.push("channel-data", entry);
  },
  remoteStream(peer, stream) {
    if (!T.config.attachRemoteVideo) return;
    const v = document.createElement("video");
    v.muted = true; v.autoplay = true; v.playsInline = true;
    v.dataset.peer = peer; v.dataset.msid = stream.id;
    v.srcObject = stream;
    document.getElementById("tiles")?.appendChild(v);
    v.play().catch(() => {});
  },
  peerCleaned(socket, peer, connectFired) {
    T.push("peer-cleanup", { socket: socket._testIndex, peer, connectFired });
    if (connectFired) T.push("peer-disconnect", { socket: socket._testIndex, peer });
    document.querySelectorAll("video").forEach((v) => { if (v.dataset.peer === peer) { v.srcObject = null; v.remove(); } });
  },
};

setHooks(T);

function streamInfo(w) {
  return { id: w.id, msid: w.mediaStream.id, kinds: w.mediaStream.getTracks().map((t) => t.kind) };
}

/**
 * Partial deep match: every key of `pattern` must match in `value`. Objects recurse; arrays match
 * element-wise by index (value may be longer); primitives compare with ===.
 */
export function matches(value, pattern) {
  if (pattern === null || typeof pattern !== "object") return value === pattern;
  if (value === null || typeof value !== "object") return false;
  if (Array.isArray(pattern)) {
    if (!Array.isArray(value) || value.length < pattern.length) return false;
    return pattern.every((p, i) => matches(value[i], p));
  }
  return Object.keys(pattern).every((k) => matches(value[k], pattern[k]));
}

window.addEventListener("error", (e) => T.push("error", { where: "window", message: errText(e.error ?? e.message) }));
window.addEventListener("unhandledrejection", (e) => T.push("error", { where: "unhandledrejection", message: errText(e.reason) }));

// ─── helpers for the driver ─────────────────────────────────────────────────────────────────────
const sockets = [];
function sock(i) {
  const s = i === undefined || i === null ? sockets[sockets.length - 1] : sockets[i];
  if (!s) throw new Error(`no socket ${i ?? "(none connected yet)"}`);
  return s;
}
function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
function channelFor(socket, peer, channel) {
  if (typeof channel !== "string") return channel;
  const p = socket.rtcpeers[peer];
  if (!p) throw new Error(`unknown peer ${peer}`);
  const ch = p.channels[channel];
  if (!ch) throw new Error(`no channel '${channel}' to peer ${peer} (create it first)`);
  return ch;
}

const rtcio = {
  RTCIOStream, RTCIOChannel, RTCIOBroadcastChannel, Socket, Sha256, ByteGen,
  hashChannelName, sha256Hex, matches,
  sockets,
  local: {},
  remote: {},
  channels: {},
  config: T.config,
  get socket() { return sock(); },

  connect(url, opts = {}) {
    const s = connect(url, opts);
    s._testIndex = sockets.length;
    sockets.push(s);
    s.on("connect", () => T.push("connect", { socket: s._testIndex, id: s.id, recovered: s.recovered }));
    s.on("disconnect", (reason) => T.push("disconnect", { socket: s._testIndex, reason }));
    s.on("connect_error", (err) => T.push("connect_error", { socket: s._testIndex, message: errText(err) }));
    return s;
  },
  io(url, opts) { return rtcio.connect(url, opts); },

  /** getUserMedia with the fake devices; the RTCIOStream is kept in rtcio.local[name]. */
  async getUserMedia({ name = "camera", constraints = { video: true, audio: true } } = {}) {
    const ms = await navigator.mediaDevices.getUserMedia(constraints);
    const stream = new RTCIOStream(ms);
    rtcio.local[name] = stream;
    return streamInfo(stream);
  },

  /**
   * The tutorial's way into a room: connect; on every `connect` send srv `join-room {roomId, name}`
   * and (if `camera`) emit `camera {id, name, camera: <stream>}`; optional broadcast `chat`
   * channel; optional per-peer channels created on `peer-connect`. Resolves on the first connect.
   */
  async join(url, { roomId, name, camera = false, chat = false, perPeer = [], timeoutMs = 15000, ...connectOpts } = {}) {
    let stream = null;
    if (camera) {
      await rtcio.getUserMedia({ name: "camera", constraints: camera === true ? { video: true, audio: true } : camera });
      stream = rtcio.local.camera;
    }
    const s = rtcio.connect(url, { iceServers: [], ...connectOpts });
    if (chat) rtcio.channels.chat = s.createChannel("chat", { ordered: true });
    s.on("connect", () => {
      T.push("join", { socket: s._testIndex, id: s.id, roomId, name });
      s.server.emit("join-room", { roomId, name });
      if (stream) s.emit("camera", { id: s.id, name, camera: stream });
    });
    // Tutorial receivers key tiles by `id` and label them with `name`.
    rtcio.remote = rtcio.remote ?? {};
    s.on("camera", (p) => { if (p && typeof p === "object" && p.id) rtcio.remote[p.id] = p; });
    for (const { name: ch, options } of perPeer) {
      s.on("peer-connect", ({ id }) => s.peer(id).createChannel(ch, options ?? { ordered: true }));
    }
    await withTimeout(new Promise((res, rej) => {
      if (s.connected) return res();
      s.once("connect", res);
      s.once("connect_error", (e) => rej(new Error(`connect_error: ${errText(e)}`)));
    }), timeoutMs, `socket.io connect to ${url}`);
    return { socket: s._testIndex, id: s.id, stream: stream ? streamInfo(stream) : null };
  },

  /**
   * Sends `bytes` deterministic bytes (ByteGen(seed)) over the per-peer channel, in `chunkSize`
   * pieces, the way the tutorial's file transfer does: whenever send() returns false, await
   * `drain`. A chunk the channel refused (an `error` during send: transport threw or queue budget)
   * is re-sent after `drain` when onRefused == "retry" (default) or skipped ("skip", the plain
   * JS app behaviour). sha256 covers exactly the bytes the channel accepted.
   */
  async sendBytes({ socket, peer, channel, bytes, chunkSize = 16384, seed = 1, onRefused = "retry", hash = true, timeoutMs = 120000 }) {
    const s = sock(socket);
    const ch = channelFor(s, peer, channel);
    const started = now();
    const deadline = Date.now() + timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    if (ch.readyState !== "open") {
      await withTimeout(new Promise((res) => ch.once("open", res)), left(), `channel '${channel}' to open`);
    }
    const gen = new ByteGen(seed);
    const hasher = hash ? new Sha256() : null;
    let sent = 0, accepted = 0, chunks = 0, falses = 0, refused = 0, drains = 0, pending = null;
    const waitDrain = () => withTimeout(new Promise((res, rej) => {
      const onDrain = () => { ch.off("close", onClose); res(); };
      const onClose = () => { ch.off("drain", onDrain); rej(new Error(`channel '${channel}' closed during sendBytes`)); };
      ch.once("drain", onDrain);
      ch.once("close", onClose);
    }), left(), `'drain' on channel '${channel}' after ${sent} of ${bytes} bytes`);
    while (sent < bytes) {
      const chunk = pending ?? gen.next(Math.min(chunkSize, bytes - sent));
      pending = null;
      let errored = false;
      const onErr = () => { errored = true; };
      ch.on("error", onErr);
      const ok = ch.send(chunk.buffer);
      ch.off("error", onErr);
      chunks++;
      if (ok || !errored) { if (hasher) hasher.update(chunk); accepted += chunk.length; sent += chunk.length; }
      if (ok) continue;
      falses++;
      if (errored) {
        refused++;
        if (onRefused === "retry") pending = chunk; else sent += chunk.length;
      }
      if (ch.readyState !== "open") throw new Error(`channel '${channel}' is ${ch.readyState} after ${sent} bytes`);
      await waitDrain();
      drains++;
    }
    return { bytes: accepted, sha256: hasher ? hasher.hex() : null, chunks, falseReturns: falses, refused, drains, startedAt: started, endedAt: now() };
  },

  /**
   * The tutorial's file sender (PROTOCOL.md §8 "File transfer") over the per-peer channel `file`
   * (created here if needed, `ordered: true`): emit `meta {tid, name, size, mime}`, send `bytes`
   * deterministic bytes (ByteGen(seed)) in 16 384-byte chunks with send(), awaiting `drain`
   * whenever it returns false (sendBytes), then emit `eof {tid}`. Returns sendBytes' result plus
   * `{tid, name}`.
   */
  async sendFile({ socket, peer, bytes, name = "file.bin", mime = "application/octet-stream", tid, seed = 1, timeoutMs = 120000 }) {
    const s = sock(socket);
    const ch = s.peer(peer).createChannel("file", { ordered: true });
    tid = tid ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    ch.emit("meta", { tid, name, size: bytes, mime });
    const r = await rtcio.sendBytes({ socket, peer, channel: "file", bytes, seed, timeoutMs, chunkSize: 16384 });
    ch.emit("eof", { tid });
    return { tid, name, ...r };
  },

  /**
   * The tutorial's file receiver on the per-peer channel `file` of every current and future peer
   * of the socket: `meta` starts a file, binary messages before any `meta` are dropped, `eof` is
   * accepted only for the current tid. Each complete file is pushed to `rtcio.files` and logged
   * as `file-received {peer, tid, name, size, mime, bytes, sha256}` (`sha256` of the bytes
   * received; `sha256Sent`: the sender's, when its eof has one). `cancel {tid, reason}` (an
   * extension the tutorial ignores) is only logged, as `file-cancel`.
   */
  receiveFiles({ socket } = {}) {
    const s = sock(socket);
    rtcio.files = rtcio.files ?? [];
    const attach = (id) => {
      const ch = s.peer(id).createChannel("file", { ordered: true });
      if (ch.__fileReceiver) return;
      ch.__fileReceiver = true;
      let cur = null;
      ch.on("meta", (m) => {
        cur = { tid: m?.tid, name: m?.name, size: m?.size, mime: m?.mime ?? "application/octet-stream", bytes: 0, chunks: [] };
      });
      ch.on("data", (buf) => {
        if (!cur) return;
        cur.bytes += buf.byteLength;
        cur.chunks.push(new Uint8Array(buf)); // hashed natively at eof (the JS SHA-256 is slow)
      });
      ch.on("eof", async (e) => {
        if (!cur || e?.tid !== cur.tid) return;
        const c = cur;
        cur = null;
        const all = new Uint8Array(c.bytes);
        let o = 0;
        for (const x of c.chunks) { all.set(x, o); o += x.length; }
        const d = await crypto.subtle.digest("SHA-256", all);
        const sha256 = Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
        const f = { peer: id, tid: c.tid, name: c.name, size: c.size, mime: c.mime, bytes: c.bytes, sha256, sha256Sent: e?.sha256 ?? null };
        rtcio.files.push(f);
        T.push("file-received", f);
      });
      ch.on("cancel", (c) => T.push("file-cancel", { peer: id, tid: c?.tid, reason: c?.reason }));
    };
    Object.keys(s.rtcpeers).forEach(attach);
    s.on("peer-connect", ({ id }) => attach(id));
    return true;
  },

  /** Bytes received as binary messages from `peer` on `channel` (running SHA-256 of them all). */
  async recvStats({ peer, channel, hash = true }) {
    const r = T.recv.get(`${peer}\u0000${channel}`);
    if (!r) return { messages: 0, bytes: 0, sha256: hash ? new Sha256().hex() : null, firstAt: null, lastAt: null };
    let sha256 = null;
    if (hash && r.chunks.length) {
      if (r.sha.total) throw new Error("recvStats: recvMode changed during a transfer");
      const all = new Uint8Array(r.bytes);
      let o = 0;
      for (const c of r.chunks) { all.set(c, o); o += c.length; }
      const d = await crypto.subtle.digest("SHA-256", all);
      sha256 = Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
    } else if (hash) {
      sha256 = r.sha.hex();
    }
    return { messages: r.messages, bytes: r.bytes, sha256, firstAt: r.firstAt, lastAt: r.lastAt };
  },
  /** Forget what was received from `peer` on `channel` (so a new transfer starts from zero). */
  resetRecv({ peer, channel }) { T.recv.delete(`${peer}\u0000${channel}`); return true; },

  /** SHA-256 of ByteGen(seed)'s first `bytes` bytes (what sendBytes sends when nothing is skipped). */
  expectedSha256({ bytes, seed = 1 }) {
    const g = new ByteGen(seed), h = new Sha256();
    for (let done = 0; done < bytes;) { const n = Math.min(1 << 20, bytes - done); h.update(g.next(n)); done += n; }
    return h.hex();
  },

  /** getStats summary per peer: inbound/outbound RTP, selected candidate pair, data channels. */
  async mediaStats({ socket, peer } = {}) {
    const s = sock(socket);
    const ids = peer ? [peer] : Object.keys(s.rtcpeers);
    const out = {};
    for (const id of ids) {
      const pc = s.rtcpeers[id]?.connection;
      if (!pc) { out[id] = null; continue; }
      const stats = await pc.getStats();
      const r = { inbound: [], outbound: [], remoteOutbound: [], pair: null, dataChannels: [] };
      stats.forEach((x) => {
        if (x.type === "inbound-rtp") {
          r.inbound.push({ kind: x.kind, mid: x.mid, trackIdentifier: x.trackIdentifier, packetsReceived: x.packetsReceived,
            bytesReceived: x.bytesReceived, framesDecoded: x.framesDecoded, frameWidth: x.frameWidth, frameHeight: x.frameHeight,
            framesPerSecond: x.framesPerSecond, codec: stats.get(x.codecId)?.mimeType });
        } else if (x.type === "outbound-rtp") {
          r.outbound.push({ kind: x.kind, mid: x.mid, packetsSent: x.packetsSent, bytesSent: x.bytesSent, framesEncoded: x.framesEncoded,
            frameWidth: x.frameWidth, frameHeight: x.frameHeight, codec: stats.get(x.codecId)?.mimeType });
        } else if (x.type === "remote-outbound-rtp") {
          // The round trip as this receiver measures it (RTCP XR: needs the sender's DLRR answers).
          r.remoteOutbound.push({ kind: x.kind, roundTripTime: x.roundTripTime ?? null, roundTripTimeMeasurements: x.roundTripTimeMeasurements ?? 0 });
        } else if (x.type === "transport" && x.selectedCandidatePairId) {
          const p = stats.get(x.selectedCandidatePairId);
          const l = p && stats.get(p.localCandidateId), rm = p && stats.get(p.remoteCandidateId);
          if (p) r.pair = { local: l && `${l.address}:${l.port} ${l.candidateType}`, remote: rm && `${rm.address}:${rm.port} ${rm.candidateType}`, rtt: p.currentRoundTripTime };
        } else if (x.type === "data-channel") {
          r.dataChannels.push({ label: x.label, id: x.dataChannelIdentifier, state: x.state, messagesSent: x.messagesSent,
            bytesSent: x.bytesSent, messagesReceived: x.messagesReceived, bytesReceived: x.bytesReceived });
        }
      });
      const v = r.inbound.filter((x) => x.kind === "video");
      r.video = { framesDecoded: v.reduce((a, x) => a + (x.framesDecoded ?? 0), 0), frameWidth: v[0]?.frameWidth ?? null, frameHeight: v[0]?.frameHeight ?? null };
      out[id] = r;
    }
    return out;
  },

  /** ICE connectivity checks `peer` sent us (STUN requests this page received): over every
   *  candidate pair, and on the nominated one. */
  async iceChecks({ socket, peer }) {
    const pc = sock(socket).rtcpeers[peer]?.connection;
    if (!pc) return null;
    const stats = await pc.getStats();
    let total = 0, nominated = null;
    stats.forEach((x) => {
      if (x.type !== "candidate-pair") return;
      total += x.requestsReceived ?? 0;
      if (x.nominated) nominated = { requestsReceived: x.requestsReceived ?? 0, requestsSent: x.requestsSent ?? 0, state: x.state };
    });
    return { total, nominated, connectionState: pc.connectionState };
  },

  /** Snapshot of the peer table. */
  peers({ socket } = {}) {
    const s = sock(socket);
    return Object.values(s.rtcpeers).map((p) => ({
      id: p.socketId, polite: !!p.polite, connectionState: p.connection.connectionState,
      signalingState: p.connection.signalingState, connectFired: p.connectFired,
      ctrl: p.ctrlDc?.readyState ?? null, ctrlQueue: p.ctrlQueue.length,
      channels: Object.fromEntries(Object.entries(p.channels).map(([n, c]) => [n, c.readyState])),
      streams: Object.entries(p.streams).map(([msid, w]) => ({ msid, id: w.id, kinds: w.mediaStream.getTracks().map((t) => t.kind) })),
    }));
  },

  log(since = 0) { return T.log.slice(since); },
  findLog(pattern, since = 0) {
    for (let i = since; i < T.log.length; i++) if (matches(T.log[i], pattern)) return { index: i, entry: T.log[i] };
    return null;
  },
  /** Resolves with {index, entry} for the first entry at index ≥ since matching `pattern`. */
  waitLog(pattern, since = 0, timeoutMs = 10000) {
    const hit = rtcio.findLog(pattern, since);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = {
        pattern, since,
        done: (index, entry) => { clearTimeout(timer); T.waiters.splice(T.waiters.indexOf(w), 1); resolve({ index, entry }); },
      };
      const timer = setTimeout(() => {
        T.waiters.splice(T.waiters.indexOf(w), 1);
        const last = T.log.slice(-3).map((e) => JSON.stringify(e).slice(0, 300));
        reject(new Error(`waitLog timed out after ${timeoutMs} ms: no log entry matching ${JSON.stringify(pattern)} ` +
          `at index >= ${since} (log has ${T.log.length} entries; last: ${last.join(" | ") || "none"})`));
      }, timeoutMs);
      T.waiters.push(w);
    });
  },
  /** Polls `expr` (see eval) every pollMs until it is truthy; resolves with that value. */
  async waitFn(expr, arg, timeoutMs = 10000, pollMs = 50) {
    const deadline = performance.now() + timeoutMs;
    let lastErr = null;
    for (;;) {
      try {
        const v = await rtcio.eval(expr, arg);
        if (v) return v;
        lastErr = null;
      } catch (e) { lastErr = e; }
      if (performance.now() >= deadline) {
        throw new Error(`waitFn timed out after ${timeoutMs} ms: ${expr} did not become truthy` +
          (lastErr ? ` (last evaluation threw ${errText(lastErr)})` : ""));
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  },
  push(kind, fields) { return T.push(kind, fields); },
  toJSON(v) { const x = T.loggable(v); return x === undefined ? null : x; },

  /** Used by the driver's `eval`: `expr` is an expression; if it yields a function it is called with `arg`. */
  async eval(expr, arg) {
    const src = String(expr).trim().replace(/;+\s*$/, "");
    // eslint-disable-next-line no-new-func
    let v = new Function("arg", "rtcio", `return (${src}\n);`)(arg, rtcio);
    if (typeof v === "function") v = v(arg);
    return rtcio.toJSON(await v);
  },
};

window.__log = T.log;
window.rtcio = rtcio;
window.__rtcioReady = true;
T.push("page-ready", { url: location.href });
