// Wire-level scenario suite for an rtc.io signaling server (PROTOCOL.md §2, §7.3, §7.4).
//
// Run:  SERVER_URLS=http://127.0.0.1:3001 SUITE_MODE=anchor node --test tests/node/scenarios.test.mjs
//
// Env:
//   SERVER_URLS  comma-separated base URLs (default http://127.0.0.1:3001). With several, clients are
//                spread round-robin across them (scale-out: processes sharing rooms through Redis).
//   SUITE_MODE   "rtcio" (default: the hardened Rust server) or "anchor" (the reference Node server,
//                exact rtc.io-server behaviour). Hardened-behaviour tests run only in rtcio mode.
//   TRANSPORT    "polling" (default: ["polling","websocket"], like browsers) or "websocket".
//   AUTH_TOKEN   token the server was started with; every client then sends auth {token}, and the
//                auth test runs (rtcio mode only).
//   EVENT_TIMEOUT_MS  failure guard per awaited event (default 10000).
//
// Rules the tests follow: handlers look at the first argument only (a recovery-enabled server appends
// an offset string); non-delivery is proven with a marker sent after the bad message on the same path
// (per-socket ordering), never with a sleep; timeouts are only failure guards.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { setTimeout as delay } from "node:timers/promises";
import { io } from "socket.io-client";
import WebSocket from "ws";

// ---------------------------------------------------------------------------------------------
// configuration

const SERVER_URLS = (process.env.SERVER_URLS || "http://127.0.0.1:3001")
  .split(",")
  .map((s) => s.trim().replace(/\/+$/, ""))
  .filter(Boolean);
const MODE = process.env.SUITE_MODE || "rtcio";
const TRANSPORT = process.env.TRANSPORT || "polling";
const AUTH_TOKEN = process.env.AUTH_TOKEN || "";
const EVENT_TIMEOUT = Number(process.env.EVENT_TIMEOUT_MS || 10000);
const SINGLE = SERVER_URLS.length === 1;

if (!["rtcio", "anchor"].includes(MODE)) throw new Error(`SUITE_MODE must be rtcio or anchor, got ${MODE}`);
if (!["polling", "websocket"].includes(TRANSPORT)) {
  throw new Error(`TRANSPORT must be polling or websocket, got ${TRANSPORT}`);
}

const TRANSPORTS = TRANSPORT === "websocket" ? ["websocket"] : ["polling", "websocket"];
const RTCIO_ONLY = MODE === "rtcio" ? false : "hardened behaviour: SUITE_MODE=rtcio only";
const TEST_TIMEOUT = 120_000;

let rr = 0;
function nextUrl() {
  return SERVER_URLS[rr++ % SERVER_URLS.length];
}

const RUN = `${process.pid.toString(36)}${Date.now().toString(36)}`;
let roomSeq = 0;
function newRoom(tag) {
  return `t-${RUN}-${tag}-${++roomSeq}`;
}

const J = (x) => JSON.stringify(x);
const short = (x) => {
  let s;
  try {
    s = J(x);
  } catch {
    s = String(x);
  }
  if (s === undefined) s = "undefined";
  return s.length > 160 ? `${s.slice(0, 160)}…(${s.length} chars)` : s;
};

// ---------------------------------------------------------------------------------------------
// event log with awaitable look-ups

class EventLog {
  constructor(label) {
    this.label = label;
    this.events = []; // { name, args, payload }
    this.waiters = new Set();
  }

  record(name, args, extra = {}) {
    const ev = { name, args, payload: args[0], index: this.events.length, ...extra };
    this.events.push(ev);
    for (const w of [...this.waiters]) {
      if (ev.index >= w.from && this.#matches(w, ev)) {
        this.waiters.delete(w);
        clearTimeout(w.timer);
        w.resolve(ev);
      }
    }
  }

  #matches(w, ev) {
    if (!w.names.includes(ev.name)) return false;
    try {
      return !!w.pred(ev.payload, ev);
    } catch {
      return false;
    }
  }

  find(names, pred = () => true, from = 0) {
    const w = { names: [].concat(names), pred };
    for (let i = from; i < this.events.length; i++) if (this.#matches(w, this.events[i])) return this.events[i];
    return undefined;
  }

  all(names, pred = () => true, from = 0) {
    const w = { names: [].concat(names), pred };
    return this.events.slice(from).filter((ev) => this.#matches(w, ev));
  }

  /** Resolves with the first event (index >= from) named one of `names` whose payload satisfies pred. */
  waitFor(names, pred = () => true, desc = undefined, { from = 0, timeout = EVENT_TIMEOUT } = {}) {
    names = [].concat(names);
    const found = this.find(names, pred, from);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { names, pred, from, resolve };
      w.timer = setTimeout(() => {
        this.waiters.delete(w);
        const tail = this.events
          .slice(-8)
          .map((e) => `${e.name} ${short(e.payload)}`)
          .join("\n    ");
        reject(
          new Error(
            `${this.label}: no ${desc ?? names.join("|")} within ${timeout} ms; last events:\n    ${tail || "(none)"}`,
          ),
        );
      }, timeout);
      this.waiters.add(w);
    });
  }

  /** [name, payload] pairs for the given event names, in arrival order. */
  seq(names, from = 0, to = this.events.length) {
    const set = new Set([].concat(names));
    return this.events
      .slice(from, to)
      .filter((e) => set.has(e.name))
      .map((e) => [e.name, e.payload]);
  }

  dispose() {
    for (const w of this.waiters) clearTimeout(w.timer);
    this.waiters.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// socket.io-client wrapper

class Client extends EventLog {
  constructor(label, { url = nextUrl(), auth, transports = TRANSPORTS, reconnection = false } = {}) {
    super(label);
    this.url = url;
    const opts = { forceNew: true, reconnection, reconnectionDelay: 100, transports, timeout: EVENT_TIMEOUT };
    if (auth !== undefined) opts.auth = auth;
    else if (AUTH_TOKEN) opts.auth = { token: AUTH_TOKEN };
    this.socket = io(url, opts);
    this.initialTransport = this.socket.io.engine?.transport?.name;
    this.socket.onAny((name, ...args) => this.record(name, args));
    this.status = new EventLog(`${label}(status)`);
    this.socket.on("connect", () => this.status.record("connect", [this.socket.id]));
    this.socket.on("connect_error", (err) => this.status.record("connect_error", [err]));
    this.socket.on("disconnect", (reason) => this.status.record("disconnect", [reason]));
  }

  get id() {
    return this.socket.id;
  }

  async connected() {
    const ev = await this.status.waitFor(["connect", "connect_error"], () => true, `connect (${this.url})`);
    if (ev.name === "connect_error") {
      // An "xhr poll error" says only that a polling request failed: keep its cause (a reset,
      // a status) for the next time it flakes under load.
      const e = ev.payload;
      const cause = [e?.description?.message ?? e?.description, e?.context?.status ?? e?.context?.code]
        .filter((x) => x !== undefined && x !== null && x !== "")
        .map(String)
        .join(", ");
      throw new Error(`${this.label}: connect_error: ${e?.message}${cause ? ` (${cause})` : ""} (${this.url})`);
    }
    return this.socket.id;
  }

  emit(name, ...args) {
    this.socket.emit(name, ...args);
  }

  /** Emits and resolves with the first reply (one of `names`, payload matching pred) after the emit. */
  request(event, args, names, pred = () => true, opts = {}) {
    const from = this.events.length;
    this.socket.emit(event, ...args);
    return this.waitFor(names, pred, `${[].concat(names).join("|")} after ${event} ${short(args[0])}`, {
      ...opts,
      from,
    });
  }

  /**
   * Like request(), for join-room / check-room: a `join-error {reason:"rate-limited"}` reply (a
   * hardened server limits these per socket) is not the answer — wait a little and ask again.
   */
  async ask(event, args, names, pred = () => true, guardMs = 30_000) {
    const deadline = Date.now() + guardMs;
    for (;;) {
      const ev = await this.request(event, args, names, pred);
      if (!(ev.name === "join-error" && ev.payload?.reason === "rate-limited")) return ev;
      if (Date.now() > deadline) assert.fail(`${this.label}: ${event} still rate-limited after ${guardMs} ms`);
      await delay(300);
    }
  }

  /** join-room; resolves with the join-ok / join-error reply for that room. */
  tryJoin(roomId, name, password) {
    const payload = { roomId, name };
    if (password !== undefined) payload.password = password;
    return this.ask("join-room", [payload], ["join-ok", "join-error"], (p) => p?.roomId === roomId);
  }

  async join(roomId, name, password) {
    const ev = await this.tryJoin(roomId, name, password);
    if (ev.name !== "join-ok") throw new Error(`${this.label}: join ${roomId} failed: ${short(ev.payload)}`);
    assert.equal(J(ev.payload), J({ roomId }), "join-ok payload");
    return ev;
  }

  relay(target, data, source = this.id) {
    this.socket.emit("#rtcio:message", { source, target, data });
  }

  close() {
    this.socket.disconnect();
    this.status.dispose();
    this.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// raw Engine.IO v4 / Socket.IO v5 client over a WebSocket (byte-level checks)

class RawClient extends EventLog {
  constructor(label, { url = nextUrl() } = {}) {
    super(label);
    this.url = url;
    const wsUrl = `${url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`;
    this.frames = [];
    this.ws = new WebSocket(wsUrl);
    this.ws.on("message", (data, isBinary) => this.#onFrame(isBinary ? data : data.toString("utf8"), isBinary));
    this.ws.on("error", (err) => this.record("ws-error", [err]));
    this.ws.on("close", (code) => this.record("ws-close", [code]));
  }

  #onFrame(text, isBinary) {
    if (isBinary) return this.record("binary", [text]);
    this.frames.push(text);
    if (text === "2") {
      this.ws.send("3");
      return;
    }
    if (text[0] === "0") {
      this.open = JSON.parse(text.slice(1));
      this.record("eio-open", [this.open]);
      this.ws.send(AUTH_TOKEN ? `40${J({ token: AUTH_TOKEN })}` : "40");
      return;
    }
    if (text.startsWith("40")) {
      this.connectAck = text;
      const ack = JSON.parse(text.slice(2));
      this.sid = ack.sid;
      this.record("sio-connect", [ack, text]);
      return;
    }
    if (text.startsWith("44")) {
      this.record("sio-connect-error", [JSON.parse(text.slice(2)), text]);
      return;
    }
    const m = /^42(\d*)(\[[\s\S]*)$/.exec(text);
    if (m) {
      let arr;
      try {
        arr = JSON.parse(m[2]);
      } catch {
        return this.record("unparsable", [text]);
      }
      const [name, ...args] = arr;
      this.record(name, args, { raw: text }); // the frame text, for byte-level checks
      return;
    }
    this.record("other-frame", [text]);
  }

  async connected() {
    const ev = await this.waitFor(["sio-connect", "sio-connect-error", "ws-error", "ws-close"], () => true, "40 ack");
    if (ev.name !== "sio-connect") throw new Error(`${this.label}: raw connect failed: ${ev.name} ${short(ev.payload)}`);
    return this.sid;
  }

  sendFrame(text) {
    this.ws.send(text);
  }

  /** Sends `42["<name>",<payloadText>]` with the payload text exactly as given. */
  sendEvent(name, payloadText) {
    this.ws.send(`42[${J(name)},${payloadText}]`);
  }

  async join(roomId, name) {
    const from = this.events.length;
    this.sendEvent("join-room", J({ roomId, name }));
    const ev = await this.waitFor(["join-ok", "join-error"], (p) => p?.roomId === roomId, `join-ok ${roomId}`, {
      from,
    });
    if (ev.name !== "join-ok") throw new Error(`${this.label}: join failed: ${ev.raw}`);
    return ev;
  }

  close() {
    this.dispose();
    try {
      this.ws.terminate();
    } catch {
      /* already closed */
    }
  }
}

/** Asserts `frame` is `42[<nameJson>,<payloadText>]`, optionally with a trailing offset string argument. */
function assertFrame(frame, name, payloadText, msg) {
  const prefix = `42[${J(name)},`;
  assert.ok(frame.startsWith(prefix), `${msg}: frame does not start with ${prefix}: ${short(frame)}`);
  const rest = frame.slice(prefix.length);
  assert.ok(
    rest.startsWith(payloadText),
    `${msg}: payload text differs\n  expected: ${payloadText}\n  frame:    ${frame}`,
  );
  const tail = rest.slice(payloadText.length);
  assert.match(tail, /^(?:,"[^"\\]*")?\]$/, `${msg}: unexpected trailing part ${short(tail)}`);
}

// ---------------------------------------------------------------------------------------------
// per-test context: every socket is closed at the end of each test

class Ctx {
  constructor() {
    this.closables = [];
  }
  track(x) {
    this.closables.push(x);
    return x;
  }
  async client(label, opts) {
    const c = this.track(new Client(label, opts));
    await c.connected();
    return c;
  }
  unconnected(label, opts) {
    return this.track(new Client(label, opts));
  }
  async raw(label, opts) {
    const r = this.track(new RawClient(label, opts));
    await r.connected();
    return r;
  }
  async clients(labels) {
    const out = [];
    for (const l of labels) out.push(await this.client(l));
    return out;
  }
  closeAll() {
    for (const c of this.closables.reverse()) {
      try {
        c.close();
      } catch {
        /* ignore */
      }
    }
    this.closables = [];
  }
}

function scenario(name, opts, fn) {
  if (typeof opts === "function") [opts, fn] = [{}, opts];
  test(name, { timeout: TEST_TIMEOUT, ...opts }, async (t) => {
    const ctx = new Ctx();
    try {
      await fn(ctx, t);
    } finally {
      ctx.closeAll();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// shared assertions

const BACKFILL = ["user-connected", "media-state", "join-ok", "#rtcio:init-offer", "#rtcio:peer-left", "user-disconnected"];
const PRESENCE = ["user-connected", "#rtcio:init-offer", "#rtcio:peer-left", "user-disconnected", "media-state"];

/**
 * Asserts what a newcomer received up to and including its join-ok: for each existing member
 * `user-connected {name,id}`, then its cached `media-state {id,roomId,mic,cam}` if any, then
 * `join-ok {roomId}`, and nothing else of the presence/signaling kind before it. Member order is the join order on a single server; across processes only the
 * per-member grouping is required.
 */
function assertBackfill(c, roomId, members) {
  const ok = c.find("join-ok", (p) => p?.roomId === roomId);
  assert.ok(ok, `${c.label}: no join-ok for ${roomId}`);
  const seq = c.seq(BACKFILL, 0, ok.index + 1);
  const groups = members.map((m) => {
    const g = [["user-connected", { name: m.name, id: m.id }]];
    if (m.media) g.push(["media-state", { id: m.id, roomId, mic: m.media.mic, cam: m.media.cam }]);
    return g;
  });
  const expected = [...groups.flat(), ["join-ok", { roomId }]];
  if (SINGLE) {
    assert.deepStrictEqual(seq, expected, `${c.label}: backfill sequence`);
    assert.equal(J(seq), J(expected), `${c.label}: backfill key order`);
    return;
  }
  // Scale-out: split into groups each starting with user-connected; compare as sets by id.
  assert.deepStrictEqual(seq.at(-1), ["join-ok", { roomId }], `${c.label}: join-ok must come last`);
  const got = [];
  for (const item of seq.slice(0, -1)) {
    if (item[0] === "user-connected") got.push([item]);
    else {
      assert.ok(got.length, `${c.label}: media-state before any user-connected: ${short(item)}`);
      got.at(-1).push(item);
    }
  }
  const byId = (gs) => [...gs].sort((a, b) => (a[0][1].id < b[0][1].id ? -1 : 1));
  assert.deepStrictEqual(byId(got), byId(groups), `${c.label}: backfill groups`);
  assert.equal(J(byId(got)), J(byId(groups)), `${c.label}: backfill key order`);
}

/** Asserts the exact presence/signaling sequence a member saw after its own join-ok. */
function assertAfterJoin(c, roomId, expected, names = PRESENCE) {
  const ok = c.find("join-ok", (p) => p?.roomId === roomId);
  assert.ok(ok, `${c.label}: no join-ok for ${roomId}`);
  const seq = c.seq(names, ok.index + 1);
  assert.deepStrictEqual(seq, expected, `${c.label}: events after join`);
  assert.equal(J(seq), J(expected), `${c.label}: key order after join`);
}

const joined = (n, id) => [
  ["user-connected", { name: n, id }],
  ["#rtcio:init-offer", { source: id }],
];
const left = (id) => [
  ["#rtcio:peer-left", { id }],
  ["user-disconnected", { id }],
];

/**
 * A check-room round trip that must end in room-check-ok. Retries while the server answers
 * `rate-limited` (or stays silent for a moment, as a limiter may); any other error fails.
 */
async function assertStillWorks(c, roomId = newRoom("alive"), guardMs = 20_000) {
  const deadline = Date.now() + guardMs;
  for (;;) {
    let ev;
    try {
      ev = await c.request("check-room", [{ roomId }], ["room-check-ok", "join-error"], (p) => p?.roomId === roomId, {
        timeout: 2000,
      });
    } catch {
      ev = undefined;
    }
    if (ev?.name === "room-check-ok") {
      assert.equal(J(ev.payload), J({ roomId, passwordRequired: false }));
      return;
    }
    if (ev && ev.payload?.reason !== "rate-limited") {
      assert.fail(`${c.label}: check-room failed: ${short(ev.payload)}`);
    }
    if (Date.now() > deadline) assert.fail(`${c.label}: no room-check-ok within ${guardMs} ms`);
    await delay(250);
  }
}

/** Sends marker relays until one arrives (a limiter may drop some); returns the arrived marker event. */
async function relayMarkerUntilDelivered(from, to, tag, guardMs = 20_000) {
  const deadline = Date.now() + guardMs;
  for (let k = 0; ; k++) {
    const mid = `${tag}-${k}`;
    from.relay(to.id, { mid });
    try {
      return await to.waitFor("#rtcio:message", (p) => p?.data?.mid === mid, `marker ${mid}`, { timeout: 1000 });
    } catch {
      if (Date.now() > deadline) assert.fail(`${to.label}: no marker relay from ${from.label} within ${guardMs} ms`);
    }
  }
}

/** Races `promise` against a failure guard whose timer is always cleared. */
async function withTimeout(promise, what, ms = EVENT_TIMEOUT) {
  let timer;
  const guard = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, guard]);
  } finally {
    clearTimeout(timer);
  }
}

function httpRequest(url, { method = "GET", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(EVENT_TIMEOUT, () => req.destroy(new Error(`timeout ${method} ${url}`)));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

// =============================================================================================
// connection

scenario("connect: CONNECT ack gives a socket id (socket.io-client and raw frames)", async (ctx) => {
  const a = await ctx.client("A");
  assert.equal(typeof a.id, "string");
  assert.ok(a.id.length > 0, "socket id non-empty");

  const r = await ctx.raw("R");
  assert.ok(r.open, "engine.io open packet");
  assert.equal(typeof r.open.sid, "string");
  assert.deepStrictEqual(r.open.upgrades, [], "websocket-first open packet has no upgrades");
  assert.equal(typeof r.open.pingInterval, "number");
  assert.equal(typeof r.open.pingTimeout, "number");
  assert.ok(r.open.maxPayload >= 1_000_000, `maxPayload ${r.open.maxPayload} >= 1 MB`);
  assert.match(r.connectAck, /^40\{/, "CONNECT ack is 40{...} on the default namespace");
  const ack = JSON.parse(r.connectAck.slice(2));
  assert.equal(typeof ack.sid, "string");
  assert.ok(ack.sid.length > 0);
  if ("pid" in ack) assert.equal(typeof ack.pid, "string", "pid (recovery) is a string");
  assert.notEqual(ack.sid, a.id, "distinct sockets get distinct ids");
});

scenario(
  "transport: polling first, then upgrade to websocket",
  { skip: TRANSPORT !== "polling" && "TRANSPORT=websocket" },
  async (ctx) => {
    const c = ctx.unconnected("U");
    assert.equal(c.initialTransport, "polling", "the first transport is long-polling");
    const upgraded = new Promise((resolve) => c.socket.io.engine.once("upgrade", (t) => resolve(t.name)));
    await c.connected();
    const name = await withTimeout(upgraded, "engine.io upgrade event");
    assert.equal(name, "websocket");
    assert.equal(c.socket.io.engine.transport.name, "websocket");
    await assertStillWorks(c);
  },
);

scenario("transport: raw polling handshake, CORS and close", async () => {
  for (const url of SERVER_URLS) {
    const res = await httpRequest(`${url}/socket.io/?EIO=4&transport=polling&t=${RUN}`, {
      headers: { Origin: "http://app.test" },
    });
    assert.equal(res.status, 200, `${url}: polling handshake status`);
    assert.match(String(res.headers["content-type"]), /^text\/plain/i);
    const acao = res.headers["access-control-allow-origin"];
    assert.ok(acao === "*" || acao === "http://app.test", `${url}: Access-Control-Allow-Origin ${acao}`);
    assert.equal(res.body[0], "0", `open packet: ${short(res.body)}`);
    const open = JSON.parse(res.body.slice(1));
    assert.equal(typeof open.sid, "string");
    assert.deepStrictEqual(open.upgrades, ["websocket"]);
    assert.ok(open.maxPayload >= 1_000_000, `maxPayload ${open.maxPayload}`);
    // Close the session politely (engine.io close packet).
    const closed = await httpRequest(`${url}/socket.io/?EIO=4&transport=polling&sid=${encodeURIComponent(open.sid)}`, {
      method: "POST",
      headers: { "Content-Type": "text/plain;charset=UTF-8" },
      body: "1",
    });
    assert.equal(closed.status, 200);
    assert.equal(closed.body, "ok");
  }
});

scenario("healthz: GET /healthz answers 200", { skip: RTCIO_ONLY }, async () => {
  for (const url of SERVER_URLS) {
    const res = await httpRequest(`${url}/healthz`);
    assert.equal(res.status, 200, `${url}/healthz`);
  }
});

// =============================================================================================
// join flow

scenario("join: A, B, C — backfill, join-ok, user-connected then init-offer", async (ctx) => {
  const room = newRoom("join");
  const [a, b, c] = await ctx.clients(["A", "B", "C"]);

  await a.join(room, "alice");
  assertBackfill(a, room, []);

  await b.join(room, "bob");
  assertBackfill(b, room, [{ name: "alice", id: a.id }]);
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === b.id, "init-offer for B");

  const ms = { id: a.id, mic: true, cam: false, roomId: room };
  a.emit("media-state", ms);
  const echo = await b.waitFor("media-state", (p) => p?.id === a.id, "media-state echo at B");
  assert.equal(J(echo.payload), J(ms), "media-state echoed verbatim (key order kept)");

  await c.join(room, "carol");
  assertBackfill(c, room, [
    { name: "alice", id: a.id, media: { mic: true, cam: false } },
    { name: "bob", id: b.id },
  ]);
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === c.id, "init-offer for C at A");
  await b.waitFor("#rtcio:init-offer", (p) => p?.source === c.id, "init-offer for C at B");

  assertAfterJoin(a, room, [...joined("bob", b.id), ...joined("carol", c.id)]);
  assertAfterJoin(b, room, [["media-state", ms], ...joined("carol", c.id)]);
  assertAfterJoin(c, room, []);
  for (const x of [a, b, c]) {
    assert.equal(x.all("join-error").length, 0, `${x.label}: no join-error`);
    assert.equal(x.all("#rtcio:init-offer", (p) => p?.source === x.id).length, 0, `${x.label}: no init-offer about itself`);
  }
});

// =============================================================================================
// relay

scenario("relay: #rtcio:message reaches the target only, unchanged", async (ctx) => {
  const room = newRoom("relay");
  const [a, b, c] = await ctx.clients(["A", "B", "C"]);
  for (const [x, n] of [[a, "alice"], [b, "bob"], [c, "carol"]]) await x.join(room, n);
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);
  await b.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);

  const offer = {
    target: b.id,
    source: a.id,
    data: { description: { type: "offer", sdp: "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" } },
  };
  a.emit("#rtcio:message", offer);
  a.emit("#rtcio:message", { source: a.id, target: a.id, data: { mid: "to-self" } }); // reaches nobody
  a.emit("#rtcio:message", { source: a.id, target: c.id, data: { mid: "marker-c" } });

  const got = await b.waitFor("#rtcio:message", (p) => p?.data?.description, "offer at B");
  assert.equal(J(got.payload), J(offer), "relay payload unchanged, key order kept");

  await c.waitFor("#rtcio:message", (p) => p?.data?.mid === "marker-c", "marker at C");
  assert.deepStrictEqual(
    c.all("#rtcio:message").map((e) => e.payload?.data?.mid),
    ["marker-c"],
    "C got only its own message",
  );

  const cand = {
    source: b.id,
    target: a.id,
    data: { candidate: { candidate: "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host", sdpMid: "0", sdpMLineIndex: 0, usernameFragment: "kOfu" } },
  };
  b.emit("#rtcio:message", cand);
  const atA = await a.waitFor("#rtcio:message", (p) => p?.data?.candidate, "candidate at A");
  assert.equal(J(atA.payload), J(cand));
  assert.equal(a.all("#rtcio:message").length, 1, "A received neither its own relays nor B's offer");
  assert.equal(b.all("#rtcio:message").length, 1, "B received only the offer");
});

scenario("relay: byte-for-byte over raw Engine.IO frames", async (ctx) => {
  const room = newRoom("bytes");
  const ra = await ctx.raw("RA");
  const rb = await ctx.raw("RB");

  const okA = await ra.join(room, "ra");
  assertFrame(okA.raw, "join-ok", J({ roomId: room }), "join-ok frame");
  await rb.join(room, "rb");
  const initOffer = await ra.waitFor("#rtcio:init-offer", (p) => p?.source === rb.sid, "init-offer frame at RA");
  assertFrame(initOffer.raw, "#rtcio:init-offer", J({ source: rb.sid }), "init-offer frame");
  const uc = ra.find("user-connected", (p) => p?.id === rb.sid);
  assertFrame(uc.raw, "user-connected", J({ name: "rb", id: rb.sid }), "user-connected frame");

  // Unusual key order, non-canonical numbers, escapes, nesting, empty containers.
  const payloadText = String.raw`{"target":"${rb.sid}","source":"${ra.sid}","data":{"zeta":1.50,"alpha":1e3,"tiny":1E-7,"neg":-0.0,"big":12345678901234567890,"s":"caf\u00e9 \ud83d\ude00 \u2028 \"q\" \\ \/ \n\t","nested":{"b":[1,{"y":null,"x":true},[]],"a":{},"e":""},"description":{"type":"offer","sdp":"v=0\r\n"}}}`;
  const parsed = JSON.parse(payloadText); // the test's own sanity check
  assert.equal(parsed.target, rb.sid);

  ra.sendEvent("#rtcio:message", payloadText);
  const got = await rb.waitFor("#rtcio:message", (p) => p?.source === ra.sid, "relayed frame at RB");
  if (MODE === "rtcio") {
    assertFrame(got.raw, "#rtcio:message", payloadText, "relay must be byte-preserving");
  } else if (!got.raw.startsWith(`42[${J("#rtcio:message")},${payloadText}`)) {
    // Node re-serializes with JSON.stringify: key order kept, numbers/escapes canonicalized.
    // (A byte-preserving server passes too: that is the stricter rtcio requirement.)
    assertFrame(got.raw, "#rtcio:message", J(parsed), "anchor relay (JSON.stringify form)");
  }
  assert.equal(J(got.payload), J(parsed), "same value, same key order");
  assert.equal(ra.all("#rtcio:message").length, 0, "sender gets nothing back");
});

// =============================================================================================
// leaving

scenario("leave: peer-left then user-disconnected; media-state cache cleared", async (ctx) => {
  const room = newRoom("leave");
  const [a, b, c] = await ctx.clients(["A", "B", "C"]);
  await a.join(room, "alice");
  await b.join(room, "bob");
  await c.join(room, "carol");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);
  await b.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);

  const msB = { id: b.id, mic: false, cam: true, roomId: room };
  b.emit("media-state", msB);
  await a.waitFor("media-state", (p) => p?.id === b.id);
  await c.waitFor("media-state", (p) => p?.id === b.id);

  const bid = b.id;
  b.close();
  await a.waitFor("user-disconnected", (p) => p?.id === bid, "user-disconnected(B) at A");
  await c.waitFor("user-disconnected", (p) => p?.id === bid, "user-disconnected(B) at C");

  assertAfterJoin(a, room, [...joined("bob", bid), ...joined("carol", c.id), ["media-state", msB], ...left(bid)]);
  assertAfterJoin(c, room, [["media-state", msB], ...left(bid)]);

  const d = await ctx.client("D");
  await d.join(room, "dave");
  assertBackfill(d, room, [
    { name: "alice", id: a.id },
    { name: "carol", id: c.id },
  ]);
  assert.equal(d.all(["media-state", "user-connected"], (p) => p?.id === bid).length, 0, "nothing about B");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === d.id);
  await c.waitFor("#rtcio:init-offer", (p) => p?.source === d.id);
});

scenario("recovery: a recovered socket's media-state cache entry is gone (servers granting a pid only)", async (ctx, t) => {
  const probe = await ctx.raw("probe");
  if (!JSON.parse(probe.connectAck.slice(2)).pid) {
    t.skip("server offers no connection-state recovery (no pid in the CONNECT ack)");
    return;
  }
  const room = newRoom("recover");
  const a = await ctx.client("A");
  const b = ctx.track(new Client("B", { reconnection: true }));
  await b.connected();
  await a.join(room, "alice");
  await b.join(room, "bob");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === b.id);
  b.emit("media-state", { id: b.id, mic: true, cam: true, roomId: room });
  await a.waitFor("media-state", (p) => p?.id === b.id);

  const bid = b.id;
  const from = b.status.events.length;
  b.socket.io.engine.close(); // transport drop (recoverable), not a clean namespace disconnect
  await a.waitFor("user-disconnected", (p) => p?.id === bid, "user-disconnected(B) at the drop");
  await b.status.waitFor("connect", () => true, "B reconnect", { from });
  assert.equal(b.socket.recovered, true, "B recovered");
  assert.equal(b.id, bid, "same socket id after recovery");
  assertAfterJoin(a, room, [...joined("bob", bid), ["media-state", { id: bid, mic: true, cam: true, roomId: room }], ...left(bid)]);

  const d = await ctx.client("D");
  await d.join(room, "dave");
  assertBackfill(d, room, [
    { name: "alice", id: a.id },
    { name: "bob", id: bid },
  ]); // B is back in the room, its cached media-state was deleted at the drop
});

// =============================================================================================
// check-room

scenario("check-room: invalid rooms, open rooms, passworded rooms", async (ctx) => {
  const x = await ctx.client("X");
  const ask = async (args) => {
    const ev = await x.ask("check-room", args, ["room-check-ok", "join-error"]);
    return [ev.name, ev.payload];
  };
  const exact = (got, name, payload, msg) => {
    assert.deepStrictEqual(got, [name, payload], msg);
    assert.equal(J(got[1]), J(payload), `${msg} (key order)`);
  };

  exact(await ask([]), "join-error", { reason: "invalid-room" }, "no payload");
  exact(await ask([{}]), "join-error", { reason: "invalid-room" }, "missing roomId");
  exact(await ask([{ password: "x" }]), "join-error", { reason: "invalid-room" }, "missing roomId + password");
  exact(await ask([{ roomId: 42 }]), "join-error", { reason: "invalid-room", roomId: 42 }, "numeric roomId echoed");
  exact(await ask([{ roomId: "" }]), "join-error", { reason: "invalid-room", roomId: "" }, "empty roomId echoed");
  exact(await ask([{ roomId: null }]), "join-error", { reason: "invalid-room", roomId: null }, "null roomId echoed");
  exact(await ask([{ roomId: ["r"] }]), "join-error", { reason: "invalid-room", roomId: ["r"] }, "array roomId");

  const fresh = newRoom("cr-fresh");
  exact(await ask([{ roomId: fresh }]), "room-check-ok", { roomId: fresh, passwordRequired: false }, "empty room");
  exact(await ask([{ roomId: fresh, password: "pw" }]), "room-check-ok", { roomId: fresh, passwordRequired: false }, "empty room + password");

  const locked = newRoom("cr-locked");
  const a = await ctx.client("A");
  await a.join(locked, "alice", "secret");
  exact(await ask([{ roomId: locked }]), "join-error", { reason: "password-required", roomId: locked }, "no password");
  exact(await ask([{ roomId: locked, password: "   " }]), "join-error", { reason: "password-required", roomId: locked }, "blank password");
  exact(await ask([{ roomId: locked, password: 7 }]), "join-error", { reason: "password-required", roomId: locked }, "non-string password");
  exact(await ask([{ roomId: locked, password: "nope" }]), "join-error", { reason: "wrong-password", roomId: locked }, "wrong password");
  exact(await ask([{ roomId: locked, password: " secret " }]), "room-check-ok", { roomId: locked, passwordRequired: true }, "right password (trimmed)");

  const open = newRoom("cr-open");
  const b = await ctx.client("B");
  await b.join(open, "bob");
  exact(await ask([{ roomId: open }]), "room-check-ok", { roomId: open, passwordRequired: false }, "occupied open room");
  exact(await ask([{ roomId: open, password: "x" }]), "room-check-ok", { roomId: open, passwordRequired: false }, "open room ignores password");

  // check-room never joins: the members saw nobody arrive.
  assert.equal(a.all(PRESENCE).length, 0, "A saw no presence events");
  assert.equal(b.all(PRESENCE).length, 0, "B saw no presence events");
});

// =============================================================================================
// passwords

scenario("passwords: seeded by the first joiner, enforced, dropped when the room empties", async (ctx) => {
  const room = newRoom("pw");
  const [a, b, c] = await ctx.clients(["A", "B", "C"]);

  await a.join(room, "alice", " pw ");

  let r = await b.tryJoin(room, "bob");
  assert.equal(J(r.payload), J({ reason: "password-required", roomId: room }));
  r = await b.tryJoin(room, "bob", "   ");
  assert.equal(J(r.payload), J({ reason: "password-required", roomId: room }));
  r = await b.tryJoin(room, "bob", "nope");
  assert.equal(J(r.payload), J({ reason: "wrong-password", roomId: room }));
  r = await b.tryJoin(room, "bob", "pw");
  assert.equal(r.name, "join-ok");
  assertBackfill(b, room, [{ name: "alice", id: a.id }]);

  await c.join(room, "carol", "  pw  ");
  assertBackfill(c, room, [
    { name: "alice", id: a.id },
    { name: "bob", id: b.id },
  ]);
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);
  await b.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);
  assertAfterJoin(a, room, [...joined("bob", b.id), ...joined("carol", c.id)]);

  // Empty the room, then wait (guarded poll) until the server sees it empty.
  a.close();
  b.close();
  c.close();
  const probe = await ctx.client("P");
  const deadline = Date.now() + EVENT_TIMEOUT;
  for (;;) {
    const ev = await probe.ask("check-room", [{ roomId: room }], ["room-check-ok", "join-error"], (p) => p?.roomId === room);
    if (ev.name === "room-check-ok") {
      assert.equal(J(ev.payload), J({ roomId: room, passwordRequired: false }));
      break;
    }
    assert.equal(ev.payload.reason, "password-required");
    if (Date.now() > deadline) assert.fail("room never became empty after all members left");
    await delay(100);
  }

  // The old password is gone: joiners without (or with any) password get in.
  const [d, e, f] = await ctx.clients(["D", "E", "F"]);
  await d.join(room, "dave");
  assertBackfill(d, room, []);
  await e.join(room, "erin", " pw ");
  await f.join(room, "frank");
  assertBackfill(f, room, [
    { name: "dave", id: d.id },
    { name: "erin", id: e.id },
  ]);
});

// =============================================================================================
// media-state, stopScreenShare, chat-message

scenario("media-state: verbatim echo, only boolean mic/cam cached, missing roomId ignored", async (ctx) => {
  const room = newRoom("media");
  const [a, b] = await ctx.clients(["A", "B"]);
  await a.join(room, "alice");
  await b.join(room, "bob");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === b.id);

  const nonBool = { id: a.id, roomId: room, mic: "on", cam: 1, extra: { z: [1, "x"], a: null } };
  a.emit("media-state", nonBool);
  a.emit("media-state", { id: a.id, mic: true, cam: true }); // no roomId: ignored, not cached
  a.emit("media-state", { id: a.id, roomId: "", mic: true, cam: true }); // falsy roomId: ignored
  a.emit("media-state", { id: a.id, roomId: null, mic: true, cam: true });
  const marker = { id: a.id, roomId: room, mic: null, cam: null, marker: 1 };
  a.emit("media-state", marker);
  await b.waitFor("media-state", (p) => p?.marker === 1, "media-state marker at B");
  assert.deepStrictEqual(b.seq("media-state"), [["media-state", nonBool], ["media-state", marker]]);
  assert.equal(J(b.seq("media-state")), J([["media-state", nonBool], ["media-state", marker]]));

  const d = await ctx.client("D");
  await d.join(room, "dave");
  assertBackfill(d, room, [
    { name: "alice", id: a.id },
    { name: "bob", id: b.id },
  ]); // nothing cached so far

  const bools = { roomId: room, id: a.id, mic: false, cam: true };
  a.emit("media-state", bools);
  await b.waitFor("media-state", (p) => p?.mic === false && p?.cam === true);
  const bAtD = await d.waitFor("media-state", (p) => p?.id === a.id);
  assert.equal(J(bAtD.payload), J(bools), "echo verbatim, sender's key order");

  const nonBool2 = { id: a.id, roomId: room, mic: true, cam: "x" };
  a.emit("media-state", nonBool2); // echoed, does not overwrite the cache
  await b.waitFor("media-state", (p) => p?.cam === "x");

  const e = await ctx.client("E");
  await e.join(room, "erin");
  assertBackfill(e, room, [
    { name: "alice", id: a.id, media: { mic: false, cam: true } },
    { name: "bob", id: b.id },
    { name: "dave", id: d.id },
  ]);

  // The sender never gets its own echo: B answers after seeing everything, A sees only that.
  b.emit("chat-message", { roomId: room, text: "marker-from-b" });
  await a.waitFor("chat-message", (p) => p?.text === "marker-from-b");
  assert.equal(a.all("media-state").length, 0, "no media-state echoed to its sender");
});

scenario("stopScreenShare and chat-message: echoed verbatim to the room, not to the sender", async (ctx) => {
  const room = newRoom("echo");
  const [a, b, c] = await ctx.clients(["A", "B", "C"]);
  for (const [x, n] of [[a, "alice"], [b, "bob"], [c, "carol"]]) await x.join(room, n);
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);
  await b.waitFor("#rtcio:init-offer", (p) => p?.source === c.id);

  const ss = { id: a.id, roomId: room, kind: "screen", nested: { b: [1, 2], a: true } };
  a.emit("stopScreenShare", ss);
  a.emit("stopScreenShare", { id: a.id }); // no roomId: ignored
  a.emit("stopScreenShare", { id: a.id, roomId: "" });
  const chat = { roomId: room, name: "alice", text: "héllo ✓ \u2028 😀", at: 1700000000000, meta: { b: 1, a: 2.5 } };
  a.emit("chat-message", chat);

  for (const x of [b, c]) {
    await x.waitFor("chat-message", (p) => p?.name === "alice", `chat-message at ${x.label}`);
    assert.equal(J(x.seq(["stopScreenShare", "chat-message"])), J([["stopScreenShare", ss], ["chat-message", chat]]), `${x.label}: verbatim`);
  }

  b.emit("chat-message", { roomId: room, text: "marker-from-b" });
  await a.waitFor("chat-message", (p) => p?.text === "marker-from-b");
  assert.equal(a.all("stopScreenShare").length, 0, "sender gets no stopScreenShare echo");
  assert.deepStrictEqual(a.seq("chat-message"), [["chat-message", { roomId: room, text: "marker-from-b" }]]);
});

// =============================================================================================
// full mesh of 8

scenario("eight clients: every pair introduced exactly once, then they leave one by one", async (ctx) => {
  const room = newRoom("mesh8");
  const N = 8;
  const cs = [];
  for (let i = 0; i < N; i++) {
    const c = await ctx.client(`P${i}`);
    await c.join(room, `p${i}`);
    await Promise.all(cs.map((e) => e.waitFor("#rtcio:init-offer", (p) => p?.source === c.id, `init-offer for P${i} at ${e.label}`)));
    cs.push(c);
  }
  for (let j = 0; j < N; j++) {
    assertBackfill(cs[j], room, cs.slice(0, j).map((m, i) => ({ name: `p${i}`, id: m.id })));
    const later = [];
    for (let k = j + 1; k < N; k++) later.push(...joined(`p${k}`, cs[k].id));
    assertAfterJoin(cs[j], room, later);
  }

  const ids = cs.map((c) => c.id);
  for (let i = 0; i < N - 1; i++) {
    cs[i].close();
    await Promise.all(
      cs.slice(i + 1).map((r) => r.waitFor("user-disconnected", (p) => p?.id === ids[i], `user-disconnected(P${i}) at ${r.label}`)),
    );
  }
  for (let j = 1; j < N; j++) {
    const expected = [];
    for (let k = j + 1; k < N; k++) expected.push(...joined(`p${k}`, ids[k]));
    for (let k = 0; k < j; k++) expected.push(...left(ids[k]));
    assertAfterJoin(cs[j], room, expected);
  }
});

// =============================================================================================
// robustness

scenario("bad payloads never break the server", async (ctx) => {
  const room = newRoom("bad");
  const [x, y] = await ctx.clients(["X", "Y"]);
  await x.join(room, "x");
  await y.join(room, "y");
  await x.waitFor("#rtcio:init-offer", (p) => p?.source === y.id);

  const huge = "h".repeat(200 * 1024);
  const payloads = [
    null,
    0,
    42,
    -1.5,
    true,
    "str",
    "",
    [],
    [1, "two", null],
    {},
    { roomId: 7 },
    { roomId: {} },
    { roomId: [] },
    { roomId: null, name: null, password: null },
    { roomId: true, mic: "x" },
    { target: null, source: null, data: null },
    { target: 42, data: [] },
    { target: {}, source: x.id },
    { target: [], source: x.id, data: {} },
    huge,
    { roomId: huge },
    { target: huge, source: x.id, data: huge },
  ];
  const events = ["join-room", "check-room", "media-state", "chat-message", "stopScreenShare", "#rtcio:message"];
  for (const ev of events) {
    x.emit(ev); // no argument at all
    for (const p of payloads) x.emit(ev, p);
    x.emit(ev, { roomId: 1 }, "extra", 3, null); // extra arguments
  }

  await assertStillWorks(x);
  assert.ok(x.socket.connected, "X still connected");
  await relayMarkerUntilDelivered(x, y, "after-bad");
  await relayMarkerUntilDelivered(y, x, "after-bad-back");
  const z = await ctx.client("Z");
  await assertStillWorks(z);
});

scenario("malformed Socket.IO frames never break the server", async (ctx) => {
  const room = newRoom("garbage");
  const [a, b] = await ctx.clients(["A", "B"]);
  await a.join(room, "alice");
  await b.join(room, "bob");

  const g = await ctx.raw("G");
  const frames = [
    "42",
    "42[",
    '42{"a":1}',
    "42[]",
    "42[42]",
    "42[null]",
    '42["join-room"',
    '42["#rtcio:message"]',
    '42["check-room",{"roomId":"x"}',
    "4",
    "49",
    "4x",
    "43",
    "44{}",
    "45-",
    "x",
    "",
    "\u0000\u0001",
    "99999",
  ];
  for (const f of frames) g.sendFrame(f);

  // Whatever happened to G, the server serves old and new sockets.
  await relayMarkerUntilDelivered(a, b, "after-garbage");
  await assertStillWorks(a);
  const h = await ctx.raw("H");
  await h.join(newRoom("garbage-new"), "h");
  const n = await ctx.client("N");
  await assertStillWorks(n);
});

// =============================================================================================
// hardened behaviour (rtcio mode only)

scenario("rtcio: relay only between sockets sharing a room; forged source dropped", { skip: RTCIO_ONLY }, async (ctx) => {
  const room = newRoom("scope");
  const other = newRoom("scope-other");
  const [a, b, x, y] = await ctx.clients(["A", "B", "X", "Y"]);
  await a.join(room, "alice");
  await b.join(room, "bob");
  await x.join(other, "xavier");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === b.id);

  // X (other room) and Y (no room) relay to A, then join A's room; A sees the join after the relay.
  x.relay(a.id, { mid: "bad-from-x" });
  await x.join(room, "xavier");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === x.id, "init-offer for X");
  y.relay(a.id, { mid: "bad-from-y" });
  await y.join(room, "yvonne");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === y.id, "init-offer for Y");
  assert.equal(a.all("#rtcio:message").length, 0, "no relay from outside the room reached A");

  // Now they share the room: relays go through.
  await relayMarkerUntilDelivered(x, a, "x-in-room");
  await relayMarkerUntilDelivered(y, a, "y-in-room");

  // Forged / missing source, and a room name as target, are dropped.
  a.relay(b.id, { mid: "forged-x" }, x.id);
  a.relay(b.id, { mid: "forged-bogus" }, "not-a-socket");
  a.relay(b.id, { mid: "forged-empty" }, "");
  a.emit("#rtcio:message", { target: b.id, data: { mid: "no-source" } });
  a.relay(room, { mid: "room-as-target" });
  a.relay(b.id, { mid: "good" });
  await b.waitFor("#rtcio:message", (p) => p?.data?.mid === "good", "good relay at B");
  assert.deepStrictEqual(
    b.all("#rtcio:message").map((e) => e.payload?.data?.mid),
    ["good"],
    "B got only the well-formed relay",
  );
  await relayMarkerUntilDelivered(a, x, "room-target-marker");
  assert.equal(x.all("#rtcio:message", (p) => p?.data?.mid === "room-as-target").length, 0, "room name as target reaches no one");
});

scenario("rtcio: oversized events (> 128 KiB) dropped, socket keeps working", { skip: RTCIO_ONLY }, async (ctx) => {
  const room = newRoom("big");
  const [a, b] = await ctx.clients(["A", "B"]);
  await a.join(room, "alice");
  await b.join(room, "bob");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === b.id);

  const below = "s".repeat(100 * 1024);
  a.relay(b.id, { mid: "below", blob: below });
  const got = await b.waitFor("#rtcio:message", (p) => p?.data?.mid === "below", "100 KiB relay");
  assert.equal(got.payload.data.blob.length, below.length);

  a.relay(b.id, { mid: "above", blob: "L".repeat(140 * 1024) });
  a.emit("chat-message", { roomId: room, text: "big", blob: "L".repeat(140 * 1024) });
  a.emit("chat-message", { roomId: room, text: "small" });
  a.relay(b.id, { mid: "after-big" });
  await b.waitFor("#rtcio:message", (p) => p?.data?.mid === "after-big", "marker after oversized relay");
  await b.waitFor("chat-message", (p) => p?.text === "small", "chat marker");
  assert.equal(b.all("#rtcio:message", (p) => p?.data?.mid === "above").length, 0, "oversized relay dropped");
  assert.equal(b.all("chat-message", (p) => p?.text === "big").length, 0, "oversized chat-message dropped");
  assert.ok(a.socket.connected, "sender still connected");
  await assertStillWorks(a);
});

scenario("rtcio: a relay flood is rate-limited, socket keeps working", { skip: RTCIO_ONLY }, async (ctx) => {
  const room = newRoom("flood");
  const [a, b] = await ctx.clients(["A", "B"]);
  await a.join(room, "alice");
  await b.join(room, "bob");
  await a.waitFor("#rtcio:init-offer", (p) => p?.source === b.id);

  const TOTAL = 2000;
  for (let i = 0; i < TOTAL; i++) a.relay(b.id, { seq: i });
  await relayMarkerUntilDelivered(a, b, "after-flood", 30_000);
  const seqs = b.all("#rtcio:message", (p) => typeof p?.data?.seq === "number").map((e) => e.payload.data.seq);
  assert.ok(seqs.length > 0, "some relays of the flood are delivered");
  assert.ok(seqs.length < TOTAL, `flood must be limited (delivered ${seqs.length}/${TOTAL})`);
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], "delivered relays keep their order");
  assert.ok(a.socket.connected && b.socket.connected, "both still connected");
  await assertStillWorks(a);
});

scenario("rtcio: a join-room flood gets join-error rate-limited", { skip: RTCIO_ONLY }, async (ctx) => {
  const x = await ctx.client("X");
  const base = newRoom("jflood");
  const rooms = new Set();
  for (let i = 0; i < 200; i++) {
    const roomId = `${base}-${i}`;
    rooms.add(roomId);
    x.emit("join-room", { roomId, name: "x" });
  }
  const ev = await x.waitFor("join-error", (p) => p?.reason === "rate-limited", "join-error rate-limited");
  assert.deepStrictEqual(Object.keys(ev.payload), ["reason", "roomId"]);
  assert.ok(rooms.has(ev.payload.roomId), `rate-limited roomId is one we sent: ${short(ev.payload.roomId)}`);
  assert.ok(x.socket.connected, "still connected");
  await assertStillWorks(x);
});

scenario(
  "rtcio: auth token required when configured",
  { skip: RTCIO_ONLY || (!AUTH_TOKEN && "AUTH_TOKEN not set") },
  async (ctx) => {
    for (const url of SERVER_URLS) {
      for (const [label, auth] of [
        ["none", {}],
        ["wrong", { token: `${AUTH_TOKEN}-wrong` }],
      ]) {
        const c = ctx.unconnected(`auth-${label}`, { url, auth });
        const ev = await c.status.waitFor(["connect", "connect_error"], () => true, `connect_error (${label})`);
        assert.equal(ev.name, "connect_error", `${url}: ${label} token must be refused`);
        assert.equal(c.socket.connected, false);
      }
      const ok = await ctx.client("auth-ok", { url, auth: { token: AUTH_TOKEN } });
      assert.ok(ok.id);
      await assertStillWorks(ok);
    }
  },
);
