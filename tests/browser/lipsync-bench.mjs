#!/usr/bin/env node
// lipsync-bench.mjs — audio/video offset at a Rust receiver (issue 13). Prints numbers; it is not
// a timed test. Run by `cargo bench -p rtcio-cli --bench avsync`, which starts this in a
// loopback-only namespace.
//
// Each call: a fresh rtcio-server, the receiver (`rtcio join --play null`, knobs in its
// environment) joins, then the sender: the CLI (`--video testsrc --audio tone`, marks on whole
// Unix seconds) or the guest page in Chromium whose camera and microphone are
// `avsync-source.js` (a canvas and WebAudio with the same marks, keyed to the page's Unix clock).
// The receiver prints `av_offset_ms` per second (audio later when positive); seconds after
// WARMUP_S are kept.
//
// Env: RTCIO_BENCH_DURATION (s per call, default 16), RTCIO_BENCH_PAIRS (default "rr,cr"),
// RTCIO_BENCH_RUNS (indices into RUNS below, default all), RTCIO_BENCH_VIDEO_SIZE (the Rust
// sender's, default 320x180), RTCIO_BENCH_VERBOSE=1.

import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  Cli, inviteUrl, joinAs, launchChromium, makeLog, sleep, startServer, stopChild, withTimeout,
} from "./harness.mjs";

const SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), "avsync-source.js");

const log = makeLog("lipsync-bench");
const env = process.env;
const DURATION_S = Number(env.RTCIO_BENCH_DURATION || 16);
const WARMUP_S = 6;
// The Rust sender's picture size (a bigger one takes longer to encode: what capture-clock
// sender reports make up for).
const VIDEO_SIZE = env.RTCIO_BENCH_VIDEO_SIZE || "320x180";
const VERBOSE = env.RTCIO_BENCH_VERBOSE === "1";
const PAIRS = { rr: "Rust→Rust", cr: "Chromium→Rust" };
const pairKeys = (env.RTCIO_BENCH_PAIRS || "rr,cr").split(",").map((x) => x.trim()).filter((k) => PAIRS[k]);
// Condition × lip sync mode (the receiver's knobs).
const RUNS = [
  ["loopback", "sender reports", {}],
  // The Rust sender's reports on its send clock (before they followed capture time).
  ["loopback", "sender reports (send clock)", {}, { RTCIO_SR_CLOCK: "send" }],
  ["loopback", "shared clock", { RTCIO_AV_SR: "off" }],
  ["loopback", "off", { RTCIO_AV_SYNC: "off" }],
  ["audio held 250 ms", "sender reports", { RTCIO_AUDIO_MIN_DELAY_MS: "250" }],
  ["audio held 250 ms", "sender reports (send clock)", { RTCIO_AUDIO_MIN_DELAY_MS: "250" }, { RTCIO_SR_CLOCK: "send" }],
  ["audio held 250 ms", "off", { RTCIO_AUDIO_MIN_DELAY_MS: "250", RTCIO_AV_SYNC: "off" }],
  ["video held 250 ms", "sender reports", { RTCIO_VIDEO_MIN_DELAY_MS: "250" }],
  ["video held 250 ms", "sender reports (send clock)", { RTCIO_VIDEO_MIN_DELAY_MS: "250" }, { RTCIO_SR_CLOCK: "send" }],
  ["video held 250 ms", "off", { RTCIO_VIDEO_MIN_DELAY_MS: "250", RTCIO_AV_SYNC: "off" }],
];
// RTCIO_BENCH_RUNS: indices into RUNS to do (default all).
const runIdx = (env.RTCIO_BENCH_RUNS || RUNS.map((_, i) => i).join(",")).split(",").map(Number).filter((i) => RUNS[i]);
const KNOBS = ["RTCIO_AV_SR", "RTCIO_AV_SYNC", "RTCIO_AUDIO_MIN_DELAY_MS", "RTCIO_VIDEO_MIN_DELAY_MS", "RTCIO_SR_CLOCK"];

function pct(xs, p) {
  const v = [...xs].sort((a, b) => a - b);
  if (!v.length) return null;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
}
const f1 = (x) => (x === null || x === undefined ? "–" : x.toFixed(1));

async function run(pk, knobs, senderKnobs, browserBox) {
  const room = `lipsync-${pk}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const { url, child: server } = await startServer({ verbose: VERBOSE, log });
  const contexts = [];
  const clis = [];
  const lines = [];
  let page = null;
  try {
    for (const k of KNOBS) delete process.env[k];
    Object.assign(process.env, knobs);
    const rx = new Cli("rx", url, ["--room", room, "--name", "Receiver", "--play", "null"], { verbose: VERBOSE, log, onLine: (j) => lines.push(j) });
    clis.push(rx);
    for (const k of KNOBS) delete process.env[k];
    await rx.wait("joined", (x) => x.type === "joined", { timeoutMs: 20000 });
    if (pk === "rr") {
      Object.assign(process.env, senderKnobs);
      clis.push(new Cli("tx", url, ["--room", room, "--name", "Sender", "--video", "testsrc", "--video-size", VIDEO_SIZE, "--fps", "30", "--audio", "tone"], { verbose: VERBOSE, log }));
      for (const k of KNOBS) delete process.env[k];
    } else {
      const browser = await browserBox.get();
      // The guest page as served, its capture replaced by the synthetic source.
      const context = await browser.newContext({ permissions: ["camera", "microphone"], viewport: { width: 1280, height: 800 } });
      contexts.push(context);
      await context.addInitScript({ path: SOURCE });
      page = await context.newPage();
      page.on("pageerror", (e) => log(`[tx-page] pageerror: ${e.message}`));
      page.on("console", (m) => { if (VERBOSE || m.type() === "error") log(`[tx-page] console.${m.type()}: ${m.text()}`); });
      await page.goto(inviteUrl(url, room), { timeout: 20000 });
      await joinAs(page, "Sender");
    }
    await sleep(DURATION_S * 1000);
    if (page) log(`sender page: ${JSON.stringify(await page.evaluate(() => window.__avsync.stats()))}`);
    return lines.filter((l) => l.type === "audio-stats" && typeof l.av_offset_ms === "number");
  } finally {
    for (const c of contexts) { try { await withTimeout(c.close(), 10000, "close context"); } catch { /* the browser goes at the end */ } }
    await Promise.all(clis.map((c) => c.stop()));
    await stopChild(server);
  }
}

async function main() {
  let browser = null;
  const browserBox = {
    get: async () => {
      if (!browser) browser = await launchChromium();
      return browser.browser;
    },
  };
  const rows = [];
  let failed = false;
  try {
    for (const pk of pairKeys) {
      for (const [cond, mode, knobs, senderKnobs] of runIdx.map((i) => RUNS[i])) {
        // Sender-side knobs are the Rust CLI's (Chromium has none).
        if (senderKnobs && pk !== "rr") continue;
        let stats;
        try {
          stats = await run(pk, knobs, senderKnobs || {}, browserBox);
        } catch (e) {
          log(`${PAIRS[pk]}, ${cond}, ${mode}: ${e.message}`);
          failed = true;
          stats = [];
        }
        // The first WARMUP_S lines are the warm-up (one line a second).
        const settled = stats.slice(WARMUP_S);
        const off = settled.map((l) => l.av_offset_ms);
        const abs = off.map(Math.abs);
        const paths = settled.map((l) => l.path_offset_ms).filter((x) => typeof x === "number");
        const extra = settled.map((l) => l.audio_extra_ms).filter((x) => typeof x === "number");
        rows.push({ load: os.loadavg()[0], pair: PAIRS[pk], cond, mode, n: off.length, p50: pct(abs, 50), p95: pct(abs, 95), signed: pct(off, 50), path: pct(paths, 50), extra: pct(extra, 50) });
        log(`${PAIRS[pk]}, ${cond}, ${mode}: ${off.length} s, offsets ${off.map((x) => x.toFixed(1)).join(" ")}`);
      }
    }
  } finally {
    if (browser) await browser.cleanup();
  }
  console.log("\n| pair | condition | lip sync | s | p50 \\|offset\\| ms | p95 \\|offset\\| ms | median offset ms | path offset ms (SR) | audio extra ms | load (1 min) |");
  console.log("|---|---|---|---|---|---|---|---|---|---|");
  for (const r of rows) console.log(`| ${r.pair} | ${r.cond} | ${r.mode} | ${r.n} | ${f1(r.p50)} | ${f1(r.p95)} | ${f1(r.signed)} | ${f1(r.path)} | ${f1(r.extra)} | ${f1(r.load)} |`);
  console.log("\noffset: audio played later than the video of the same moment when positive; goal |offset| ≤ 45 ms.");
  if (failed) process.exit(1);
}

const deadline = setTimeout(() => { log("timed out"); process.exit(1); }, (pairKeys.length * RUNS.length * (DURATION_S + 60) + 60) * 1000);
main().then(() => { clearTimeout(deadline); process.exit(0); }, (e) => { log(e.stack || String(e)); process.exit(1); });
