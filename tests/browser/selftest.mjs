#!/usr/bin/env node
// selftest.mjs — validates the browser rtc.io peer and the driver against a running rtc.io server.
//
//   node tests/browser/selftest.mjs <server-url>          functional checks (two pages, one room)
//   node tests/browser/selftest.mjs <server-url> bench    join → peer-connect time, channel MB/s
//
// It talks to driver.mjs exactly as a Rust test does: JSON lines over the child's stdin/stdout.

import { spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const url = process.argv[2];
const mode = process.argv[3] ?? "test";
if (!url || !/^https?:\/\//.test(url) || !["test", "bench"].includes(mode)) {
  process.stderr.write("usage: node tests/browser/selftest.mjs <server-url> [test|bench]\n");
  process.exit(2);
}

const MiB = 1024 * 1024;

// ─── driver client ──────────────────────────────────────────────────────────────────────────────
class Driver {
  constructor() {
    this.child = spawn(process.execPath, [path.join(HERE, "driver.mjs")], { stdio: ["pipe", "pipe", "inherit"] });
    this.nextId = 1;
    this.pending = new Map();
    this.exited = new Promise((res) => this.child.on("exit", (code) => res(code)));
    readline.createInterface({ input: this.child.stdout }).on("line", (line) => {
      let msg;
      try { msg = JSON.parse(line); } catch { throw new Error(`driver wrote a non-JSON line to stdout: ${line}`); }
      const p = this.pending.get(msg.id);
      if (!p) throw new Error(`driver replied to unknown id: ${line}`);
      this.pending.delete(msg.id);
      if (msg.ok) p.resolve(msg.result); else p.reject(new Error(msg.error));
    });
    this.child.on("exit", (code) => {
      for (const p of this.pending.values()) p.reject(new Error(`driver exited (${code}) before replying`));
      this.pending.clear();
    });
  }
  cmd(cmd, fields = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin.write(JSON.stringify({ id, cmd, ...fields }) + "\n");
    });
  }
  eval(page, expr, arg = null, timeoutMs) { return this.cmd("eval", { page, expr, arg, ...(timeoutMs ? { timeoutMs } : {}) }); }
  waitLog(page, match, timeoutMs = 15000, since = 0) { return this.cmd("waitLog", { page, match, since, timeoutMs }); }
  waitFn(page, expr, arg = null, timeoutMs = 15000) { return this.cmd("waitFn", { page, expr, arg, timeoutMs }); }
  async quit() {
    await this.cmd("quit");
    const code = await this.exited;
    if (code !== 0) throw new Error(`driver exited with ${code}`);
  }
}

/** RTCIO_SELFTEST_DUMP=<dir>: write each page's whole __log there (JSON) before it closes. */
async function dump(d, page, label) {
  const dir = process.env.RTCIO_SELFTEST_DUMP;
  if (!dir) return;
  const { entries } = await d.cmd("log", { page });
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `${label}.json`), JSON.stringify(entries, null, 1));
}

/** The bytes ByteGen(seed) produces (see rtcio-peer.js), hashed here independently. */
function expectedSha256(seed, n) {
  let x = (seed >>> 0) || 0x9e3779b9;
  const buf = Buffer.alloc(Math.ceil(n / 4) * 4);
  for (let i = 0; i < buf.length; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return createHash("sha256").update(buf.subarray(0, n)).digest("hex");
}

// ─── tiny check runner ──────────────────────────────────────────────────────────────────────────
let passed = 0, failed = 0;
const results = [];
async function check(name, fn, { critical = true } = {}) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    passed++;
    results.push(`PASS ${name}${detail ? ` — ${detail}` : ""} (${Date.now() - t0} ms)`);
    console.log(results.at(-1));
  } catch (e) {
    failed++;
    results.push(`FAIL ${name}: ${e.message}`);
    console.log(results.at(-1));
    if (critical) throw new Abort();
  }
}
class Abort extends Error {}
function assert(cond, msg) { if (!cond) throw new Error(msg); }

// ─── functional checks ──────────────────────────────────────────────────────────────────────────
async function selftest(d) {
  const roomId = `selftest-${randomUUID()}`;
  const A = await d.cmd("open", { label: "alice" });
  const B = await d.cmd("open", { label: "bob" });
  let a, b;

  await check("alice joins (tutorial way: srv join-room, camera, broadcast chat)", async () => {
    a = await d.eval(A, "(o) => rtcio.join(o.url, o)", { url, roomId, name: "alice", camera: true, chat: true });
    await d.waitLog(A, { kind: "event", via: "server", name: "join-ok", args: [{ roomId }] });
    return `id ${a.id}`;
  });
  await check("bob joins", async () => {
    b = await d.eval(B, "(o) => rtcio.join(o.url, o)", { url, roomId, name: "bob", camera: true, chat: true });
    const uc = await d.waitLog(A, { kind: "event", via: "server", name: "user-connected", args: [{ id: b.id, name: "bob" }] });
    const io = await d.waitLog(A, { kind: "signal", name: "#rtcio:init-offer", from: b.id });
    assert(uc.index < io.index, "user-connected must precede #rtcio:init-offer");
    return `id ${b.id}`;
  });
  await check("peer-connect on both (alice polite, bob impolite)", async () => {
    const [ja, pa, pb] = await Promise.all([
      d.waitLog(B, { kind: "join" }),
      d.waitLog(A, { kind: "peer-connect", peer: b.id }),
      d.waitLog(B, { kind: "peer-connect", peer: a.id }),
    ]);
    await d.waitLog(A, { kind: "peer-created", peer: b.id, polite: true }, 1000);
    await d.waitLog(B, { kind: "peer-created", peer: a.id, polite: false }, 1000);
    const ms = Math.max(pa.entry.t, pb.entry.t) - ja.entry.t;
    return `join → peer-connect ${ms.toFixed(0)} ms`;
  });
  await check("ctrl `chat` both ways (socket.emit → socket.on)", async () => {
    await d.eval(B, "() => { window.got = []; rtcio.socket.on('chat', (m) => window.got.push(m)); }");
    await d.eval(A, "() => { window.got = []; rtcio.socket.on('chat', (m) => window.got.push(m)); }");
    await d.eval(A, "rtcio.socket.emit('chat', {text: 'hello from alice', from: 'alice'})");
    await d.waitLog(B, { kind: "event", via: "ctrl", name: "chat", peer: a.id, args: [{ text: "hello from alice", from: "alice" }] });
    await d.eval(B, "rtcio.socket.emit('chat', {text: 'hello from bob', from: 'bob'})");
    await d.waitLog(A, { kind: "event", via: "ctrl", name: "chat", peer: b.id, args: [{ text: "hello from bob", from: "bob" }] });
    const gotB = await d.waitFn(B, "window.got.length && window.got");
    assert(gotB[0].text === "hello from alice", `listener saw ${JSON.stringify(gotB)}`);
  });
  await check("per-peer emit (socket.peer(id).emit → socket.peer(id).on)", async () => {
    await d.eval(B, "(id) => { window.direct = null; rtcio.socket.peer(id).on('direct', (m, n) => { window.direct = [m, n]; }); }", a.id);
    await d.eval(A, "(id) => rtcio.socket.peer(id).emit('direct', {n: 42}, 'two')", b.id);
    const got = await d.waitFn(B, "window.direct");
    assert(got[0].n === 42 && got[1] === "two", `got ${JSON.stringify(got)}`);
  });
  await check("broadcast channel `chat` both ways (msg {name, text, at})", async () => {
    await d.eval(A, "rtcio.channels.chat.emit('msg', {name: 'alice', text: 'hi room', at: Date.now()})");
    await d.waitLog(B, { kind: "channel", channel: "chat", peer: a.id, name: "msg", args: [{ name: "alice", text: "hi room" }] });
    await d.eval(B, "rtcio.channels.chat.emit('msg', {name: 'bob', text: 'hi alice', at: Date.now()})");
    await d.waitLog(A, { kind: "channel", channel: "chat", peer: b.id, name: "msg", args: [{ name: "bob", text: "hi alice" }] });
  });
  await check("per-peer binary channel `bulk`: 8 MiB each way with backpressure, SHA-256 verified", async () => {
    const size = 8 * MiB;
    // Lower watermarks than the defaults so that 8 MiB actually exercises send()=false → drain.
    const opts = { ordered: true, highWatermark: MiB, lowWatermark: 256 * 1024 };
    const mk = "(o) => { rtcio.socket.peer(o.peer).createChannel('bulk', o.opts); return rtcio.socket.rtcpeers[o.peer].channels.bulk.readyState; }";
    await d.eval(A, mk, { peer: b.id, opts });
    await d.eval(B, mk, { peer: a.id, opts });
    await d.waitLog(A, { kind: "channel-open", peer: b.id, channel: "bulk" });
    await d.waitLog(B, { kind: "channel-open", peer: a.id, channel: "bulk" });
    const send = "(o) => rtcio.sendBytes(o)";
    const [sa, sb] = await Promise.all([
      d.eval(A, send, { peer: b.id, channel: "bulk", bytes: size, seed: 1 }, 120000),
      d.eval(B, send, { peer: a.id, channel: "bulk", bytes: size, seed: 2 }, 120000),
    ]);
    const done = "(o) => rtcio.recvStats({...o, hash: false}).then((r) => r.bytes >= o.bytes && r)";
    await d.waitFn(B, done, { peer: a.id, channel: "bulk", bytes: size }, 60000);
    await d.waitFn(A, done, { peer: b.id, channel: "bulk", bytes: size }, 60000);
    const ra = await d.eval(A, "(o) => rtcio.recvStats(o)", { peer: b.id, channel: "bulk" });
    const rb = await d.eval(B, "(o) => rtcio.recvStats(o)", { peer: a.id, channel: "bulk" });
    const e1 = expectedSha256(1, size), e2 = expectedSha256(2, size);
    assert(sa.bytes === size && sa.sha256 === e1, `alice sent ${sa.bytes} bytes sha ${sa.sha256}, expected ${e1}`);
    assert(sb.bytes === size && sb.sha256 === e2, `bob sent ${sb.bytes} bytes sha ${sb.sha256}, expected ${e2}`);
    assert(rb.bytes === size && rb.sha256 === e1, `bob received ${rb.bytes} bytes sha ${rb.sha256}, expected ${e1}`);
    assert(ra.bytes === size && ra.sha256 === e2, `alice received ${ra.bytes} bytes sha ${ra.sha256}, expected ${e2}`);
    assert(sa.drains > 0 && sb.drains > 0, `backpressure never engaged (drains ${sa.drains}/${sb.drains})`);
    return `drains ${sa.drains}/${sb.drains}, refused ${sa.refused}/${sb.refused}, sha ${e1.slice(0, 12)}…/${e2.slice(0, 12)}…`;
  });
  await check("camera {id, name, camera: stream} arrives with the sender's id/name and stream id", async () => {
    const sidA = await d.eval(A, "rtcio.local.camera.id");
    const sidB = await d.eval(B, "rtcio.local.camera.id");
    const onB = await d.waitLog(B, { kind: "event", via: "stream", name: "camera", peer: a.id, args: [{ id: a.id, name: "alice" }] });
    const onA = await d.waitLog(A, { kind: "event", via: "stream", name: "camera", peer: b.id, args: [{ id: b.id, name: "bob" }] });
    const camB = onB.entry.args[0].camera.$stream, camA = onA.entry.args[0].camera.$stream;
    assert(camB.id === sidA, `bob got stream id ${camB.id}, alice's is ${sidA}`);
    assert(camA.id === sidB, `alice got stream id ${camA.id}, bob's is ${sidB}`);
    assert(camB.kinds.includes("video") && camB.kinds.includes("audio"), `kinds ${camB.kinds}`);
    // the app-level listener got the substituted RTCIOStream (ID-synced)
    const appB = await d.eval(B, "(id) => ({id: rtcio.remote[id]?.camera?.id, kinds: rtcio.remote[id]?.camera?.mediaStream.getTracks().map(t => t.kind)})", a.id);
    assert(appB.id === sidA, `listener saw stream id ${appB.id}`);
    return `stream ${sidA.slice(0, 8)}… kinds ${camB.kinds.join("+")}`;
  });
  await check("remote video decodes (framesDecoded grows)", async () => {
    const stats = "(id) => rtcio.mediaStats({peer: id}).then((s) => s[id].video)";
    const v1 = await d.waitFn(B, `(id) => rtcio.mediaStats({peer: id}).then((s) => s[id].video.framesDecoded > 0 && s[id].video)`, a.id, 20000);
    const v2 = await d.waitFn(B, `(o) => rtcio.mediaStats({peer: o.id}).then((s) => s[o.id].video.framesDecoded >= o.n && s[o.id].video)`, { id: a.id, n: v1.framesDecoded + 15 }, 20000);
    const vA = await d.waitFn(A, `(id) => rtcio.mediaStats({peer: id}).then((s) => s[id].video.framesDecoded > 10 && s[id].video)`, b.id, 20000);
    const pair = await d.eval(B, "(id) => rtcio.mediaStats({peer: id}).then((s) => s[id].pair)", a.id);
    void stats;
    return `bob: ${v1.framesDecoded} → ${v2.framesDecoded} frames ${v2.frameWidth}x${v2.frameHeight}; alice: ${vA.framesDecoded}; pair ${pair?.local} ↔ ${pair?.remote}`;
  });
  await check("peer-disconnect on alice when bob's page closes", async () => {
    await dump(d, B, "bob");
    const t0 = Date.now();
    await d.cmd("close", { page: B });
    const pl = await d.waitLog(A, { kind: "peer-disconnect", peer: b.id }, 30000);
    await d.waitLog(A, { kind: "broadcast-peer-left", channel: "chat", peer: b.id }, 1000);
    await d.waitLog(A, { kind: "event", via: "server", name: "user-disconnected", args: [{ id: b.id }] }, 1000);
    const { entries } = await d.cmd("log", { page: A });
    const hint = entries.find((e) => e.kind === "signal" && e.name === "#rtcio:peer-left" && e.from === b.id);
    const states = entries.filter((e) => e.kind === "pc-state" && e.peer === b.id && e.t >= t0).map((e) => `${e.state}@+${(e.t - t0).toFixed(0)}`);
    const armed = entries.filter((e) => e.kind === "watchdog-armed" && e.peer === b.id).map((e) => `${e.ms} ms`);
    return `${(pl.entry.t - t0).toFixed(0)} ms after close; peer-left hint at +${hint ? (hint.t - t0).toFixed(0) : "?"} ms; ` +
      `states ${states.join(" → ")}; watchdog ${armed.join(", ")}`;
  });
  await dump(d, A, "alice");
  await d.cmd("close", { page: A });
}

// ─── benchmark ──────────────────────────────────────────────────────────────────────────────────
async function joinTime(d, { camera }) {
  const roomId = `bench-${randomUUID()}`;
  const A = await d.cmd("open", { label: "bench-a" });
  const B = await d.cmd("open", { label: "bench-b" });
  const a = await d.eval(A, "(o) => rtcio.join(o.url, o)", { url, roomId, name: "a", camera, chat: true });
  const b = await d.eval(B, "(o) => rtcio.join(o.url, o)", { url, roomId, name: "b", camera, chat: true });
  const [j, pa, pb] = await Promise.all([
    d.waitLog(B, { kind: "join" }),
    d.waitLog(A, { kind: "peer-connect", peer: b.id }, 30000),
    d.waitLog(B, { kind: "peer-connect", peer: a.id }, 30000),
  ]);
  return { A, B, a, b, ms: Math.max(pa.entry.t, pb.entry.t) - j.entry.t, newcomerMs: pb.entry.t - j.entry.t };
}

async function throughput(d, { A, B, a, b }, { size, chunkSize, name, opts = { ordered: true } }) {
  const mk = "(o) => { rtcio.config.hashEachMessage = false; rtcio.config.recvMode = 'retain'; rtcio.socket.peer(o.peer).createChannel(o.name, o.opts); return true; }";
  await d.eval(A, mk, { peer: b.id, name, opts });
  await d.eval(B, mk, { peer: a.id, name, opts });
  await d.waitLog(A, { kind: "channel-open", peer: b.id, channel: name });
  await d.waitLog(B, { kind: "channel-open", peer: a.id, channel: name });
  const sent = await d.eval(A, "(o) => rtcio.sendBytes(o)", { peer: b.id, channel: name, bytes: size, chunkSize, seed: 3, hash: false }, 300000);
  await d.waitFn(B, "(o) => rtcio.recvStats({...o, hash: false}).then((r) => r.bytes >= o.bytes && r)", { peer: a.id, channel: name, bytes: size }, 300000);
  const r = await d.eval(B, "(o) => rtcio.recvStats(o)", { peer: a.id, channel: name });
  await d.eval(B, "(o) => rtcio.resetRecv(o)", { peer: a.id, channel: name });
  const exp = expectedSha256(3, size);
  if (r.sha256 !== exp) throw new Error(`throughput transfer corrupted: got ${r.sha256}, expected ${exp}`);
  const secs = (r.lastAt - sent.startedAt) / 1000;
  return { mbps: size / MiB / secs, secs, drains: sent.drains, refused: sent.refused };
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];

async function bench(d) {
  const rows = [];
  const data = await joinTime(d, { camera: false });
  rows.push(["join → peer-connect (ctrl + broadcast chat, no media)", `${data.ms.toFixed(0)} ms`]);
  const media = await joinTime(d, { camera: true });
  rows.push(["join → peer-connect (tutorial: camera + chat)", `${media.ms.toFixed(0)} ms`]);
  await d.cmd("close", { page: media.A });
  await d.cmd("close", { page: media.B });
  // Library defaults (ordered, highWatermark 16 MiB, lowWatermark 1 MiB), tutorial-style loop.
  const size = 64 * MiB, runs = 3;
  let n = 0, refused = 0;
  const cold = await throughput(d, data, { size, chunkSize: 16384, name: `bulk${n++}` });
  refused += cold.refused;
  rows.push([`per-peer channel, first ${size / MiB} MiB on a fresh connection, 16 KiB chunks`, `${cold.mbps.toFixed(1)} MB/s`]);
  for (const chunkSize of [16384, 65536]) {
    const xs = [];
    for (let i = 0; i < runs; i++) {
      const t = await throughput(d, data, { size, chunkSize, name: `bulk${n++}` });
      xs.push(t.mbps);
      refused += t.refused;
    }
    rows.push([`per-peer channel, ${size / MiB} MiB in ${chunkSize / 1024} KiB chunks, warm (median of ${runs})`,
      `${median(xs).toFixed(1)} MB/s (runs ${xs.map((x) => x.toFixed(1)).join(", ")})`]);
  }
  await d.cmd("close", { page: data.A });
  await d.cmd("close", { page: data.B });
  console.log("\n| measurement (Chromium ↔ Chromium, one browser, loopback) | value |\n|---|---|");
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
  console.log("MB/s = MiB/s: bytes / 2^20 / seconds from the first send() to the last byte received; every transfer SHA-256 verified.");
  console.log(`Channel options: library defaults (ordered; highWatermark 16 MiB, lowWatermark 1 MiB). Chunks Chromium refused ` +
    `at its 16 MiB send-queue limit (PROTOCOL.md §12.14, lost by the plain JS loop): ${refused}, re-sent by sendBytes.`);
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────
const d = new Driver();
let code = 0;
try {
  const info = await d.cmd("info");
  console.log(`driver up: Chromium ${info.chromium}, pages served from ${info.baseUrl}; server ${url}`);
  if (mode === "bench") await bench(d);
  else await selftest(d);
} catch (e) {
  if (!(e instanceof Abort)) { console.log(`ERROR ${e.stack ?? e.message}`); failed++; }
  code = 1;
}
try { await d.quit(); } catch (e) { console.log(`ERROR quitting driver: ${e.message}`); code = 1; }
if (mode === "test") console.log(`${passed} passed, ${failed} failed`);
process.exit(failed || code ? 1 : 0);
