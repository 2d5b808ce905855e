#!/usr/bin/env node
// network-bench.mjs — calls through an impaired link, Rust and Chromium on either end (issue 12's
// benchmark). Prints numbers; it is not a timed test.
//
//   RTCIO_SERVER_BIN=target/release/rtcio-server RTCIO_CLI_BIN=target/release/rtcio \
//     unshare -n sh -c 'ip link set lo up; node tests/browser/network-bench.mjs'
//   (or `cargo bench -p rtcio-cli --bench network`, which does the same)
//
// For every profile × pair: a fresh `rtcio-server --turn --turn-impair …` (each relayed port's
// link clock starts when it is allocated, i.e. with the call), a receive-only receiver (the CLI
// with no sources, or the guest page whose getUserMedia is refused) joins first, then the sender
// (the CLI with `--video testsrc --audio tone`, or the guest page with Chromium's fake camera and
// microphone). Both ends are relay-only (CLI `--relay-only`, page `relay=1`), so the media of the
// one direction measured crosses exactly one impaired link: the sender's relayed port. The call
// runs for RTCIO_BENCH_DURATION seconds from the sender's join (t = 0), sampled once a second.
//
// Env: RTCIO_BENCH_DURATION (s, default 30), RTCIO_BENCH_PROFILES (default "a,b,c,d"),
// RTCIO_BENCH_PAIRS (default "rr,rc,cr,cc": r = Rust CLI, c = Chromium page, sender first),
// RTCIO_BENCH_VIDEO_SIZE (CLI testsrc, default 1280x720), RTCIO_BENCH_FPS (default 30),
// RTCIO_BENCH_CHROMIUM_FPS (the fake camera's rate, default RTCIO_BENCH_FPS),
// RTCIO_BENCH_CLI_AUDIO (the sending CLI's --audio, default tone),
// RTCIO_BENCH_CLI_ARGS (extra flags for the sending CLI, e.g. "--video-bitrate 2500"),
// RTCIO_BENCH_OUT (a file: every run's per-second samples as JSON), RTCIO_BENCH_TIMEOUT_MS
// (whole run; default (duration + 90 s) per run), RTCIO_BENCH_VERBOSE=1,
// RTCIO_BENCH_CHROMIUM_CODEC (e.g. H264: the pages prefer that video codec).
// Exit code 1 when a run failed (no video at all, a child died, a timeout).

import fs from "node:fs";
import os from "node:os";
import {
  CLI_BIN, Cli, SERVER_BIN, inviteUrl, joinAs, killAll, launchChromium, makeLog, openGuest, sleep,
  startServer, stopChild, withTimeout,
} from "./harness.mjs";

const log = makeLog("network-bench");
const env = process.env;
const DURATION_S = Number(env.RTCIO_BENCH_DURATION || 30);
const VIDEO_SIZE = env.RTCIO_BENCH_VIDEO_SIZE || "1280x720";
const FPS = Number(env.RTCIO_BENCH_FPS || 30);
// Chromium's fake camera runs at 20 fps unless told (`--use-fake-device-for-media-stream=fps=N`).
const CHROMIUM_FPS = Number(env.RTCIO_BENCH_CHROMIUM_FPS || FPS);
// The sending CLI's audio source ("none": video alone, e.g. to see what lip sync costs).
const CLI_AUDIO = env.RTCIO_BENCH_CLI_AUDIO || "tone";
const CLI_EXTRA = (env.RTCIO_BENCH_CLI_ARGS || "").split(/\s+/).filter(Boolean);
const VERBOSE = env.RTCIO_BENCH_VERBOSE === "1";
// A video codec the pages put first (e.g. H264: Chromium↔Chromium with the codec Rust sends).
const CHROMIUM_CODEC = env.RTCIO_BENCH_CHROMIUM_CODEC || null;
const OUT = env.RTCIO_BENCH_OUT || "";
/** A receiver "decodes" when it shows at least this many frames per second. */
const MIN_FPS = 15;
/** Settled after the drop: MIN_FPS and audio loss below this, for SETTLE_HOLD_S seconds in a row. */
const MAX_LOSS_PCT = 2;
const SETTLE_HOLD_S = 3;

const PROFILES = {
  a: { title: "(a) 1 Mbit/s, 40 ms RTT, 1 % loss", specs: ["rate=1M,delay=20ms,loss=1%"], cap: () => 1000 },
  b: { title: "(b) 500 kbit/s, 150 ms RTT, 3 % loss", specs: ["rate=500k,delay=75ms,loss=3%"], cap: () => 500 },
  c: { title: "(c) 4 Mbit/s, dropping to 600 kbit/s at t = 20 s", specs: ["rate=4M", "20s:rate=600k"], cap: (t) => (t < 20 ? 4000 : 600), dropAt: 20 },
  d: { title: "(d) 1 s of 30 % loss every 10 s (from t = 5 s), no cap", specs: ["burst=30%/1s/10s/5s"], cap: () => null, bursts: { offset: 5, every: 10, length: 1 } },
};
const PAIRS = {
  rr: { from: "rust", to: "rust", label: "Rust→Rust" },
  rc: { from: "rust", to: "chromium", label: "Rust→Chromium" },
  cr: { from: "chromium", to: "rust", label: "Chromium→Rust" },
  cc: { from: "chromium", to: "chromium", label: "Chromium→Chromium" },
};
const pick = (v, all) => v.split(",").map((x) => x.trim()).filter(Boolean).map((k) => {
  if (!all[k]) throw new Error(`unknown key ${k} (known: ${Object.keys(all).join(", ")})`);
  return k;
});
const profileKeys = pick(env.RTCIO_BENCH_PROFILES || "a,b,c,d", PROFILES);
const pairKeys = pick(env.RTCIO_BENCH_PAIRS || "rr,rc,cr,cc", PAIRS);
const RUNS = profileKeys.length * pairKeys.length;
const TOTAL_TIMEOUT_MS = Number(env.RTCIO_BENCH_TIMEOUT_MS || RUNS * (DURATION_S + 90) * 1000 + 60000);

// ─── statistics ─────────────────────────────────────────────────────────────────────────────────
const nums = (xs) => xs.filter((x) => typeof x === "number" && Number.isFinite(x));
const mean = (xs) => { const v = nums(xs); return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null; };
function pct(xs, p) {
  const v = nums(xs).sort((a, b) => a - b);
  if (!v.length) return null;
  const i = Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1));
  return v[i];
}
const median = (xs) => pct(xs, 50);
const loadavg = () => os.loadavg()[0];

// ─── in the pages ───────────────────────────────────────────────────────────────────────────────
/**
 * Installed in a receiving page: every remote <video> reports each frame it presents through
 * requestVideoFrameCallback, as [marks, capture, receive] latencies in ms (null when unknown):
 * - marks: the CLI's testsrc frame marks (16 × 8 blocks top left: magic, frame number, capture
 *   time in µs since the epoch, CRC-16; crates/rtcio-media/src/synthetic/video.rs) read back
 *   from the picture → glass to glass (capture → expected display), same clock;
 * - capture: expectedDisplayTime − captureTime, Chromium's own estimate of the sender's capture
 *   time (RTCP sender reports / abs-capture-time) when it has one;
 * - receive: expectedDisplayTime − receiveTime (last packet in → display).
 */
function installFrameProbe() {
  if (window.__bench) return;
  window.__bench = { frames: [], hooked: new WeakSet(), markHits: 0, markMisses: 0 };
  const B = window.__bench;
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const crc16 = (d) => {
    let c = 0xffff;
    for (const x of d) { c ^= x << 8; for (let i = 0; i < 8; i++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff; }
    return c;
  };
  const blockFor = (w) => Math.max(8, Math.floor(w / 80 / 8) * 8);
  const readMark = (v) => {
    const w = v.videoWidth;
    const h = v.videoHeight;
    if (!w || !h) return null;
    // The block size of the drawn size, or of a 1280/640-wide source scaled to this size.
    const sizes = [...new Set([blockFor(w), (blockFor(1280) * w) / 1280, (blockFor(640) * w) / 640])];
    for (const b of sizes) {
      const cw = Math.ceil(16 * b);
      const ch = Math.ceil(8 * b);
      if (cw > w || ch > h) continue;
      canvas.width = cw; canvas.height = ch;
      ctx.drawImage(v, 0, 0, cw, ch, 0, 0, cw, ch);
      const px = ctx.getImageData(0, 0, cw, ch).data;
      const bytes = new Uint8Array(16);
      for (let bit = 0; bit < 128; bit++) {
        const col = bit % 16;
        const row = Math.floor(bit / 16);
        let sum = 0;
        let n = 0;
        for (let y = Math.floor(row * b + b / 4); y < row * b + (3 * b) / 4; y++) {
          for (let x = Math.floor(col * b + b / 4); x < col * b + (3 * b) / 4; x++) {
            const i = (y * cw + x) * 4;
            sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
            n++;
          }
        }
        if (n && sum / n > 127) bytes[bit >> 3] |= 0x80 >> (bit & 7);
      }
      if (bytes[0] !== 0xa5 || bytes[1] !== 0x5a) continue;
      if (((bytes[14] << 8) | bytes[15]) !== crc16(bytes.subarray(0, 14))) continue;
      let us = 0;
      for (let i = 6; i < 14; i++) us = us * 256 + bytes[i];
      return us / 1000;
    }
    return null;
  };
  setInterval(() => {
    for (const v of document.querySelectorAll("#grid .tile[data-peer] video")) {
      if (B.hooked.has(v) || !v.requestVideoFrameCallback) continue;
      B.hooked.add(v);
      const cb = (_now, md) => {
        const shown = performance.timeOrigin + md.expectedDisplayTime;
        let captured = null;
        try { captured = readMark(v); } catch { /* not drawable yet */ }
        if (captured) B.markHits++; else B.markMisses++;
        if (B.frames.length < 20000) {
          B.frames.push([
            captured ? shown - captured : null,
            md.captureTime ? md.expectedDisplayTime - md.captureTime : null,
            md.receiveTime ? md.expectedDisplayTime - md.receiveTime : null,
          ]);
        }
        v.requestVideoFrameCallback(cb);
      };
      v.requestVideoFrameCallback(cb);
    }
  }, 200);
}

/** One snapshot of the page's (only) peer connection, plus the frames presented since the last. */
async function pageSnapshot() {
  const peers = Object.values(window.__guest?.socket?.rtcpeers || {});
  const out = { t: performance.timeOrigin + performance.now() };
  out.frames = window.__bench ? window.__bench.frames.splice(0) : [];
  const pc = peers.find((p) => p.connection)?.connection;
  if (!pc) return out;
  const st = await pc.getStats();
  let pairId = null;
  st.forEach((r) => { if (r.type === "transport" && r.selectedCandidatePairId) pairId = r.selectedCandidatePairId; });
  const codec = (r) => st.get(r.codecId)?.mimeType?.replace(/^video\/|^audio\//, "") ?? null;
  st.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video" && (!out.vin || (r.framesDecoded || 0) > out.vin.framesDecoded)) {
      out.vin = {
        framesDecoded: r.framesDecoded || 0, freezeCount: r.freezeCount || 0, totalFreezesDuration: r.totalFreezesDuration || 0,
        jitterBufferDelay: r.jitterBufferDelay || 0, jitterBufferEmittedCount: r.jitterBufferEmittedCount || 0,
        totalDecodeTime: r.totalDecodeTime || 0, packetsLost: r.packetsLost || 0, packetsReceived: r.packetsReceived || 0,
        nackCount: r.nackCount || 0, pliCount: r.pliCount || 0, bytesReceived: r.bytesReceived || 0,
        rtxReceived: r.retransmittedPacketsReceived || 0, framesDropped: r.framesDropped || 0,
        jitterBufferTargetDelay: r.jitterBufferTargetDelay || 0, keyFramesDecoded: r.keyFramesDecoded || 0,
        w: r.frameWidth || 0, h: r.frameHeight || 0, codec: codec(r),
      };
    }
    // The receiver's own round trip (RTCP XR: only if the sender answers its reference times).
    if (r.type === "remote-outbound-rtp" && r.kind === "video") out.vrtt = { rtt: r.roundTripTime ?? null, n: r.roundTripTimeMeasurements ?? 0 };
    if (r.type === "inbound-rtp" && r.kind === "audio") out.ain = {
      packetsLost: r.packetsLost || 0, packetsReceived: r.packetsReceived || 0,
      jitterBufferDelay: r.jitterBufferDelay || 0, jitterBufferEmittedCount: r.jitterBufferEmittedCount || 0,
      jitterBufferTargetDelay: r.jitterBufferTargetDelay || 0,
    };
    if (r.type === "outbound-rtp" && r.kind === "video") {
      out.vout = {
        bytesSent: r.bytesSent || 0, retransmittedBytesSent: r.retransmittedBytesSent || 0, framesEncoded: r.framesEncoded || 0,
        w: r.frameWidth || 0, h: r.frameHeight || 0, fps: r.framesPerSecond || 0, targetBitrate: r.targetBitrate ?? null,
        qualityLimitationReason: r.qualityLimitationReason ?? null, codec: codec(r), nackCount: r.nackCount || 0,
      };
    }
    if (r.type === "outbound-rtp" && r.kind === "audio") out.aout = { bytesSent: r.bytesSent || 0 };
    if (r.type === "candidate-pair" && r.id === pairId) {
      out.pair = {
        rtt: r.currentRoundTripTime ?? null, available: r.availableOutgoingBitrate ?? null,
        local: st.get(r.localCandidateId)?.candidateType, remote: st.get(r.remoteCandidateId)?.candidateType,
      };
    }
  });
  return out;
}

// ─── one run ────────────────────────────────────────────────────────────────────────────────────
/** One call: profile × pair for DURATION_S seconds. Returns the per-second series and a summary. */
async function runPair(pk, ak, browserBox) {
  const P = PROFILES[pk];
  const A = PAIRS[ak];
  const room = `bench-${pk}-${ak}-${process.pid}`;
  const extra = ["--turn", "--turn-port", "0", "--turn-allow-loopback", ...P.specs.flatMap((s) => ["--turn-impair", s])];
  const { url, child: server } = await startServer({ extra, verbose: VERBOSE, log, what: `(${P.specs.join(" then ")})` });
  const pageErrors = [];
  const contexts = [];
  const clis = [];
  const rec = { rx: [], tx: [], rxLines: [], txLines: [], load: [], notes: [] };
  let t0 = 0;
  try {
    const browser = A.from === "chromium" || A.to === "chromium" ? await browserBox.get() : null;
    // The receiver: joins first, sends nothing.
    let rxCli = null;
    let rxPage = null;
    if (A.to === "rust") {
      rxCli = new Cli("rx", url, ["--room", room, "--name", "Receiver", "--relay-only"], { verbose: VERBOSE, log, onLine: (j) => rec.rxLines.push(j) });
      clis.push(rxCli);
      await rxCli.wait("joined", (x) => x.type === "joined", { timeoutMs: 20000 });
    } else {
      const g = await openGuest(browser, inviteUrl(url, room, { relay: true }), pageErrors, "rx-page", { denyMedia: true, verbose: VERBOSE, log, preferVideoCodec: CHROMIUM_CODEC });
      contexts.push(g.context);
      rxPage = g.page;
      await joinAs(rxPage, "Receiver");
      await rxPage.waitForSelector("#call-screen:not([hidden])", { timeout: 20000 });
      await rxPage.evaluate(installFrameProbe);
    }
    // The sender.
    let txCli = null;
    let txPage = null;
    if (A.from === "rust") {
      t0 = Date.now();
      txCli = new Cli("tx", url, ["--room", room, "--name", "Sender", "--relay-only", "--video", "testsrc", "--video-size", VIDEO_SIZE, "--fps", String(FPS), "--audio", CLI_AUDIO, ...CLI_EXTRA], { verbose: VERBOSE, log, onLine: (j) => rec.txLines.push(j) });
      clis.push(txCli);
    } else {
      const g = await openGuest(browser, inviteUrl(url, room, { relay: true }), pageErrors, "tx-page", { verbose: VERBOSE, log, preferVideoCodec: CHROMIUM_CODEC });
      contexts.push(g.context);
      txPage = g.page;
      await txPage.waitForSelector("#join:not([disabled])", { timeout: 20000 });
      t0 = Date.now();
      await joinAs(txPage, "Sender");
      await txPage.waitForSelector("#call-screen:not([hidden])", { timeout: 20000 });
      rec.camera = await txPage.evaluate(() => {
        const t = window.__guest.local?.mediaStream.getVideoTracks()[0];
        return t ? { label: t.label, ...t.getSettings() } : null;
      });
    }
    for (const c of clis) c.child.once("exit", (code, sig) => { if (Date.now() < t0 + DURATION_S * 1000) rec.notes.push(`${c.label} exited early (${code ?? sig})`); });

    // Once a second until the end: the pages' stats (the CLIs print their own lines).
    const end = t0 + DURATION_S * 1000;
    let tick = t0 + 1000;
    while (Date.now() < end) {
      await sleep(Math.max(0, tick - Date.now()));
      tick += 1000;
      rec.load.push(loadavg());
      const snaps = await Promise.all([rxPage, txPage].map((p) => (p ? withTimeout(p.evaluate(pageSnapshot), 5000, "page stats").catch((e) => ({ error: String(e) })) : null)));
      if (snaps[0]) rec.rx.push(snaps[0]);
      if (snaps[1]) rec.tx.push(snaps[1]);
    }
    // The selected candidate pair on both ends (must be relay / relay).
    const paths = [];
    for (const [who, c, p] of [["rx", rxCli, rxPage], ["tx", txCli, txPage]]) {
      if (c) {
        const l = c.lines.find((x) => x.type === "path");
        paths.push(`${who} ${l ? `${l.local?.type}/${l.remote?.type}` : "?"}`);
      } else {
        const l = [...(who === "rx" ? rec.rx : rec.tx)].reverse().find((x) => x.pair);
        paths.push(`${who} ${l ? `${l.pair.local}/${l.pair.remote}` : "?"}`);
      }
    }
    rec.paths = paths.join(", ");
    if (!paths.every((p) => p.endsWith("relay/relay"))) rec.notes.push(`not relayed on both ends: ${rec.paths}`);
    if (pageErrors.length) rec.notes.push(`page errors: ${pageErrors.join("; ")}`);
  } finally {
    for (const c of contexts) { try { await withTimeout(c.close(), 10000, "close context"); } catch { /* the browser goes at the end */ } }
    await Promise.all(clis.map((c) => c.stop()));
    await stopChild(server);
  }
  return summarize(pk, ak, t0, rec);
}

// ─── per-second series and the numbers ──────────────────────────────────────────────────────────
/** Seconds since t0 → bucket index (a sample describes the second that ends at its time). */
const bucket = (t, t0) => Math.ceil((t - t0) / 1000) - 1;

function summarize(pk, ak, t0, rec) {
  const P = PROFILES[pk];
  const A = PAIRS[ak];
  const n = DURATION_S;
  const sec = Array.from({ length: n }, (_, i) => ({ t: i, fps: null, lossPct: null, latMs: null, estMs: null, sentKbps: null, estimateKbps: null, freezeCount: null, freezeMs: null }));
  const at = (t) => { const i = bucket(t, t0); return i >= 0 && i < n ? sec[i] : null; };
  const out = { pair: A.label, key: ak, codec: null, rxSize: null, txSize: null, latSrc: null, notes: rec.notes, paths: rec.paths, camera: rec.camera ?? null };

  // Receiver.
  if (A.to === "rust") {
    out.latSrc = "marks";
    let prevA = null;
    for (const l of rec.rxLines) {
      const s = at(l.ts);
      if (l.type === "video-stats" && !l.ended) {
        out.codec = l.codec; out.rxSize = `${l.width}x${l.height}`;
        if (!s) continue;
        s.fps = l.fps; s.freezeCount = l.freeze_count; s.freezeMs = l.total_freezes_ms;
        if (typeof l.latency_ms === "number") s.latMs = l.latency_ms;
        s.rxKbps = l.kbps; s.keyframeRequests = l.keyframe_requests;
        // Where freezes come from (cumulative counters): frames too late for the playout,
        // gaps given up (a keyframe needed), the playout's delay.
        s.shownLate = l.shown_late; s.gapsGivenUp = l.lost; s.playoutMs = l.playout_delay_ms;
      }
      if (l.type === "audio-stats" && !l.ended) {
        if (prevA && s) {
          const got = l.packets - prevA.packets;
          const lost = l.lost - prevA.lost;
          if (got + lost > 0) s.lossPct = (100 * lost) / (got + lost);
        }
        prevA = l;
      }
    }
  } else {
    let prev = null;
    let markN = 0;
    let capN = 0;
    for (const x of rec.rx) {
      const s = at(x.t);
      if (x.vin) { out.codec = x.vin.codec; out.rxSize = `${x.vin.w}x${x.vin.h}`; }
      if (s) {
        const marks = x.frames.map((f) => f[0]).filter((v) => v !== null);
        const cap = x.frames.map((f) => f[1]).filter((v) => v !== null);
        markN += marks.length;
        capN += cap.length;
        if (marks.length) s.latMs = median(marks);
        else if (cap.length) s.latMs = median(cap);
        if (cap.length) s.capLatMs = median(cap);
        const rxd = x.frames.map((f) => f[2]).filter((v) => v !== null);
        if (rxd.length) s.rxToDisplayMs = median(rxd);
      }
      if (s && x.vin) { s.freezeCount = x.vin.freezeCount; s.freezeMs = Math.round(x.vin.totalFreezesDuration * 1000); }
      if (s && prev?.vin && x.vin) {
        const dt = (x.t - prev.t) / 1000;
        s.fps = (x.vin.framesDecoded - prev.vin.framesDecoded) / dt;
        s.rxKbps = ((x.vin.bytesReceived - prev.vin.bytesReceived) * 8) / dt / 1000;
        // What the receiver asked for in this second (kept in the JSON for diagnosis).
        s.pli = x.vin.pliCount - prev.vin.pliCount;
        s.nack = x.vin.nackCount - prev.vin.nackCount;
        s.videoLost = x.vin.packetsLost - prev.vin.packetsLost;
        s.rtxReceived = x.vin.rtxReceived - prev.vin.rtxReceived;
        if (x.vrtt) { s.rxRttMs = x.vrtt.rtt == null ? null : x.vrtt.rtt * 1000; s.rxRttN = x.vrtt.n; }
        s.framesDropped = x.vin.framesDropped - prev.vin.framesDropped;
        s.keyFramesDecoded = x.vin.keyFramesDecoded - prev.vin.keyFramesDecoded;
        const emitted = x.vin.jitterBufferEmittedCount - prev.vin.jitterBufferEmittedCount;
        const decoded = x.vin.framesDecoded - prev.vin.framesDecoded;
        if (emitted > 0) s.jbTargetMs = ((x.vin.jitterBufferTargetDelay - prev.vin.jitterBufferTargetDelay) / emitted) * 1000;
        if (emitted > 0 && x.pair?.rtt != null) {
          const jb = ((x.vin.jitterBufferDelay - prev.vin.jitterBufferDelay) / emitted) * 1000;
          const dec = decoded > 0 ? ((x.vin.totalDecodeTime - prev.vin.totalDecodeTime) / decoded) * 1000 : 0;
          s.estMs = jb + dec + (x.pair.rtt * 1000) / 2;
        }
      } else if (s && x.vin && !prev?.vin) {
        s.fps = x.vin.framesDecoded; // first second with a peer: frames since the start
      }
      if (s && prev?.ain && x.ain) {
        const got = x.ain.packetsReceived - prev.ain.packetsReceived;
        const lost = x.ain.packetsLost - prev.ain.packetsLost;
        if (got + lost > 0) s.lossPct = (100 * Math.max(0, lost)) / (got + lost);
        // The audio's jitter buffer (Chromium delays video to meet it: lip sync).
        const emitted = x.ain.jitterBufferEmittedCount - prev.ain.jitterBufferEmittedCount;
        if (emitted > 0) {
          s.audioJbMs = ((x.ain.jitterBufferDelay - prev.ain.jitterBufferDelay) / emitted) * 1000;
          s.audioJbTargetMs = ((x.ain.jitterBufferTargetDelay - prev.ain.jitterBufferTargetDelay) / emitted) * 1000;
        }
      }
      if (x.vin || x.ain) prev = x;
    }
    out.latSrc = markN ? "marks (page)" : capN ? "rVFC captureTime" : "n/a";
  }

  // Sender.
  if (A.from === "rust") {
    const per = new Map();
    for (const l of rec.txLines) {
      if (l.type !== "send-stats" || l.ended) continue;
      const i = bucket(l.ts, t0);
      if (i < 0 || i >= n) continue;
      const e = per.get(i) || { video: [], audio: [], est: [], target: [], fps: [] };
      (l.kind === "video" ? e.video : e.audio).push(l.kbps);
      if (l.kind === "video") {
        out.txSize = `${l.width}x${l.height}`;
        e.fps.push(l.fps);
        if (l.estimate_kbps != null) e.est.push(l.estimate_kbps);
        if (l.target_kbps != null) e.target.push(l.target_kbps);
        if (l.keyframes != null) e.keyframes = l.keyframes;
        if (l.encode_ms != null) e.encodeMs = l.encode_ms;
        if (l.quality_level != null) e.quality = l.quality_level;
        if (l.keyframe_requests != null) e.keyframeRequests = l.keyframe_requests;
        if (l.pacer_ms != null) e.pacerMs = l.pacer_ms;
      }
      per.set(i, e);
    }
    for (const [i, e] of per) {
      sec[i].sentKbps = (mean(e.video) ?? 0) + (mean(e.audio) ?? 0);
      sec[i].estimateKbps = mean(e.est);
      sec[i].targetKbps = mean(e.target);
      sec[i].txFps = mean(e.fps);
      // Running totals (the CLI's counters), for diagnosis in the JSON.
      sec[i].keyframes = e.keyframes ?? null;
      sec[i].keyframeRequestsIn = e.keyframeRequests ?? null;
      sec[i].encodeMs = e.encodeMs ?? null;
      sec[i].quality = e.quality ?? null;
      sec[i].pacerMs = e.pacerMs ?? null;
    }
  } else {
    let prev = null;
    for (const x of rec.tx) {
      const s = at(x.t);
      if (x.vout) { out.txSize = `${x.vout.w}x${x.vout.h}`; out.txCodec = x.vout.codec; out.qualityLimitation = x.vout.qualityLimitationReason; }
      if (s && prev?.vout && x.vout) {
        const dt = (x.t - prev.t) / 1000;
        const bytes = x.vout.bytesSent - prev.vout.bytesSent + ((x.aout?.bytesSent ?? 0) - (prev.aout?.bytesSent ?? 0));
        s.sentKbps = (bytes * 8) / dt / 1000;
        s.txFps = x.vout.fps;
        if (x.pair?.available != null) s.estimateKbps = x.pair.available / 1000;
        if (x.vout.targetBitrate != null) s.targetKbps = x.vout.targetBitrate / 1000;
      }
      if (x.vout) prev = x;
    }
  }

  // The numbers.
  const firstI = sec.findIndex((s) => s.fps > 0);
  out.firstFrameS = firstI >= 0 ? firstI + 1 : null;
  const run = firstI >= 0 ? sec.slice(firstI + 1) : [];
  out.fpsMean = mean(run.map((s) => s.fps));
  const lastWith = (k) => [...sec].reverse().find((s) => s[k] != null)?.[k] ?? null;
  out.freezeCount = lastWith("freezeCount");
  out.freezeMs = lastWith("freezeMs");
  // Both counters close a freeze at the next frame: one still going on at the end is in neither.
  // It is added here, in whole seconds without a decoded frame at the end of the run.
  let tail = 0;
  for (let i = n - 1; i > firstI && (sec[i].fps ?? 0) === 0; i--) tail++;
  out.openFreezeMs = firstI >= 0 ? tail * 1000 : null;
  out.freezeMsAll = out.freezeMs == null ? null : out.freezeMs + (out.openFreezeMs ?? 0);
  out.slowS = firstI >= 0 ? run.filter((s) => s.fps == null || s.fps < MIN_FPS).length : null;
  const lats = run.map((s) => s.latMs);
  out.latP50 = pct(lats, 50);
  out.latP95 = pct(lats, 95);
  out.estMs = mean(run.map((s) => s.estMs));
  out.sentKbps = mean(run.map((s) => s.sentKbps));
  out.txFps = mean(run.map((s) => s.txFps));
  out.estimateKbps = mean(run.map((s) => s.estimateKbps));
  out.lossPct = mean(run.map((s) => s.lossPct));
  out.load = mean(rec.load);
  out.cap = P.cap(0);
  if (P.dropAt != null) {
    const after = sec.filter((s) => s.t >= P.dropAt);
    out.fpsAfter = mean(after.map((s) => s.fps));
    out.sentAfter = mean(after.map((s) => s.sentKbps));
    out.capAfter = P.cap(P.dropAt);
    // The first second from which SETTLE_HOLD_S seconds in a row decode ≥ MIN_FPS with < 2 % loss.
    const good = (s) => s && s.fps != null && s.fps >= MIN_FPS && (s.lossPct == null || s.lossPct < MAX_LOSS_PCT);
    let settle = null;
    for (let i = P.dropAt; i + SETTLE_HOLD_S <= n; i++) {
      if (sec.slice(i, i + SETTLE_HOLD_S).every(good)) { settle = i - P.dropAt; break; }
    }
    out.settleS = settle;
  }
  if (P.bursts) {
    // Each burst [b, b+len): how long after its end until a whole second decodes ≥ MIN_FPS again.
    const { offset, every, length } = P.bursts;
    const rec2 = [];
    const minFps = [];
    for (let b = offset; b + length < n; b += every) {
      const endB = b + length;
      const i = sec.findIndex((s) => s.t >= endB && s.fps != null && s.fps >= MIN_FPS);
      rec2.push(i >= 0 ? i - endB : null);
      minFps.push(Math.min(...nums(sec.slice(b, Math.min(n, endB + 3)).map((s) => s.fps))));
    }
    out.recoveryS = rec2;
    out.burstMinFps = minFps;
  }
  out.ok = out.firstFrameS != null && !rec.notes.some((x) => /exited early/.test(x));
  return { summary: out, seconds: sec, camera: rec.camera };
}

// ─── the tables ─────────────────────────────────────────────────────────────────────────────────
const f = (v, d = 0) => (v == null || Number.isNaN(v) ? "–" : Number(v).toFixed(d));
const ratio = (a, b) => (a == null || b == null ? "–" : b === 0 ? (a === 0 ? "1.00" : "∞") : (a / b).toFixed(2));

function table(pk, rows) {
  const P = PROFILES[pk];
  const cc = rows.find((r) => r.key === "cc");
  const head = ["pair", "codec", "sent size", "recv size", "first frame s", "sent fps", "fps mean"];
  if (P.dropAt != null) head.push("fps after drop");
  head.push("freezes", "freeze ms", `s < ${MIN_FPS} fps`, "latency p50 ms", "p95 ms", "latency source", "Chromium est. ms", "sent kbps");
  if (P.dropAt != null) head.push("sent after drop");
  head.push("cap kbps", "sender estimate kbps", "audio loss %");
  if (P.dropAt != null) head.push("settle s");
  if (P.bursts) head.push("recovery s per burst", "min fps around bursts");
  head.push("freeze ms / C→C", "p95 / C→C", "load");
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const r of rows) {
    const c = [r.pair, r.codec ?? "–", `${r.txSize ?? "–"}${r.qualityLimitation && r.qualityLimitation !== "none" ? ` (${r.qualityLimitation})` : ""}`, r.rxSize ?? "–", f(r.firstFrameS), f(r.txFps, 1), f(r.fpsMean, 1)];
    if (P.dropAt != null) c.push(f(r.fpsAfter, 1));
    c.push(f(r.freezeCount), r.openFreezeMs ? `${f(r.freezeMs)} (+${r.openFreezeMs} open)` : f(r.freezeMs), f(r.slowS), f(r.latP50), f(r.latP95), r.latP50 == null ? "n/a" : r.latSrc, f(r.estMs), f(r.sentKbps));
    if (P.dropAt != null) c.push(f(r.sentAfter));
    c.push(P.dropAt != null ? `${r.cap}→${r.capAfter}` : r.cap ?? "none", f(r.estimateKbps), f(r.lossPct, 1));
    if (P.dropAt != null) c.push(r.settleS == null ? "never" : f(r.settleS));
    if (P.bursts) c.push(r.recoveryS.map((x) => (x == null ? "never" : x)).join(", "), r.burstMinFps.map((x) => f(x)).join(", "));
    c.push(r.key === "cc" ? "1.00" : ratio(r.freezeMsAll, cc?.freezeMsAll), r.key === "cc" ? "1.00" : ratio(r.latP95, cc?.latP95), f(r.load, 1));
    lines.push(`| ${c.join(" | ")} |`);
  }
  return lines.join("\n");
}

/** The issue's goal: freeze time and p95 latency ≤ Chromium↔Chromium's; ≤ 3 s to settle after the drop. */
function verdict(pk, rows) {
  const P = PROFILES[pk];
  const cc = rows.find((r) => r.key === "cc");
  const parts = [];
  for (const r of rows.filter((x) => x.key !== "cc")) {
    const why = [];
    if (!r.ok) why.push("no call");
    if (cc && r.freezeMsAll != null && cc.freezeMsAll != null && r.freezeMsAll > cc.freezeMsAll) why.push(`freezes ${r.freezeMsAll} ms > ${cc.freezeMsAll} ms`);
    if (cc && r.latP95 != null && cc.latP95 != null && r.latP95 > cc.latP95) why.push(`p95 ${f(r.latP95)} ms > ${f(cc.latP95)} ms`);
    if (P.dropAt != null && (r.settleS == null || r.settleS > 3)) why.push(`settles ${r.settleS == null ? "never" : `in ${r.settleS} s`} (> 3 s)`);
    const unmeasured = r.latP95 == null ? " (latency not measured)" : "";
    parts.push(`${r.pair} ${why.length ? `MISS (${why.join("; ")})` : "meets"}${unmeasured}`);
  }
  if (!cc) return `verdict ${pk}: no Chromium→Chromium baseline in this run`;
  return `**Verdict ${P.title.split(" ")[0]}:** ${parts.join(" · ")}`;
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────
let browserState = null;
const browserBox = {
  async get() {
    if (!browserState) browserState = await launchChromium({ extraArgs: [`--use-fake-device-for-media-stream=fps=${CHROMIUM_FPS}`] });
    return browserState.browser;
  },
};

async function shutdown() {
  if (browserState) { try { await withTimeout(browserState.cleanup(), 15000, "close Chromium"); } catch { /* killed below */ } }
  await killAll();
}

async function main() {
  log(`server ${SERVER_BIN}, CLI ${CLI_BIN}; ${DURATION_S} s per call; profiles ${profileKeys.join(",")}; pairs ${pairKeys.join(",")}; CLI sender ${VIDEO_SIZE}@${FPS} ${CLI_EXTRA.join(" ")}`);
  const startLoad = fs.readFileSync("/proc/loadavg", "utf8").trim();
  const results = {};
  const raw = {};
  let failed = 0;
  for (const pk of profileKeys) {
    results[pk] = [];
    for (const ak of pairKeys) {
      log(`${PROFILES[pk].title} — ${PAIRS[ak].label}`);
      let r;
      try {
        r = await runPair(pk, ak, browserBox);
      } catch (e) {
        log(`FAIL ${pk}/${ak}: ${e?.stack ?? e}`);
        failed++;
        results[pk].push({ pair: PAIRS[ak].label, key: ak, ok: false, notes: [String(e?.message ?? e)], recoveryS: [], burstMinFps: [] });
        continue;
      }
      const s = r.summary;
      if (!s.ok) failed++;
      results[pk].push(s);
      raw[`${pk}/${ak}`] = r;
      log(`  ${s.ok ? "ok" : "FAILED"}: fps ${f(s.fpsMean, 1)}, freezes ${s.freezeCount} / ${s.freezeMs} ms, latency p50/p95 ${f(s.latP50)}/${f(s.latP95)} ms, sent ${f(s.sentKbps)} kbps, loss ${f(s.lossPct, 1)} %, ${s.paths}${s.notes.length ? `; ${s.notes.join("; ")}` : ""}`);
      if (OUT) fs.writeFileSync(OUT, JSON.stringify({ duration: DURATION_S, videoSize: VIDEO_SIZE, fps: FPS, cliArgs: CLI_EXTRA, runs: raw }, null, 1));
    }
  }
  const endLoad = fs.readFileSync("/proc/loadavg", "utf8").trim();
  // The report (stdout).
  const camera = Object.values(raw).find((r) => r.camera)?.camera;
  const out = [];
  out.push(`## Network bench: ${DURATION_S} s per call, CLI sender testsrc ${VIDEO_SIZE}@${FPS} + tone${CLI_EXTRA.length ? ` (${CLI_EXTRA.join(" ")})` : ""}${camera ? `, Chromium fake camera ${camera.width}x${camera.height}@${camera.frameRate}` : ""}`);
  out.push("");
  out.push(`Load (/proc/loadavg) at start: ${startLoad}; at end: ${endLoad}; ${os.cpus().length} CPUs.`);
  for (const pk of profileKeys) {
    out.push("", `### ${PROFILES[pk].title} — \`${PROFILES[pk].specs.map((s) => `--turn-impair ${s}`).join(" ")}\``, "");
    const ok = results[pk].filter((r) => r.fpsMean !== undefined);
    out.push(table(pk, ok));
    const bad = results[pk].filter((r) => r.notes?.length);
    for (const r of bad) out.push(``, `- ${r.pair}: ${r.notes.join("; ")}`);
    out.push("", verdict(pk, results[pk]));
  }
  process.stdout.write(`${out.join("\n")}\n`);
  return failed;
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => { log(`${sig}: stopping`); shutdown().finally(() => process.exit(sig === "SIGINT" ? 130 : 143)); });
}
const overall = setTimeout(() => {
  log(`FAIL: the bench took longer than ${TOTAL_TIMEOUT_MS} ms`);
  shutdown().finally(() => process.exit(1));
}, TOTAL_TIMEOUT_MS);
let code = 1;
try {
  const failed = await main();
  code = failed ? 1 : 0;
  if (failed) log(`${failed} run(s) failed`);
} catch (e) {
  log(`FAIL: ${e?.stack ?? e}`);
} finally {
  clearTimeout(overall);
  await shutdown();
}
process.exit(code);
