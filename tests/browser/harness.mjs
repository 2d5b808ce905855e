// harness.mjs — what the node scripts that drive rtcio-server, the `rtcio` CLI and the guest page
// in headless Chromium share (guest.test.mjs, network-bench.mjs): child-process bookkeeping,
// bounded waits, starting rtcio-server, the CLI as a JSON-lines participant, and opening /
// joining the guest page. Chromium itself is launched by chromium.mjs (re-exported here).

import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

export { launchChromium } from "./chromium.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, "../..");
/** The guest page's directory (served with `--web-dir`); RTCIO_GUEST_WEB_DIR overrides it. */
export const WEB = path.resolve(process.env.RTCIO_GUEST_WEB_DIR || path.join(ROOT, "crates/rtcio-server/web"));
export const SERVER_BIN = process.env.RTCIO_SERVER_BIN || path.join(ROOT, "target/debug/rtcio-server");
export const CLI_BIN = process.env.RTCIO_CLI_BIN || path.join(ROOT, "target/debug/rtcio");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A stderr logger with a `[prefix]` on every line. */
export const makeLog = (prefix) => (...a) => process.stderr.write(`[${prefix}] ${a.join(" ")}\n`);

/** Rejects with "timed out after N ms: what" unless `promise` settles first. */
export function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([
    promise,
    new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms); }),
  ]).finally(() => clearTimeout(t));
}

// ─── children ───────────────────────────────────────────────────────────────────────────────────
const children = new Set();

/** Remembers a child so that killAll() (and process exit) ends it. */
export function track(child, label) {
  children.add(child);
  child.label = label;
  child.once("exit", () => children.delete(child));
  return child;
}

/** SIGTERM to every tracked child, SIGKILL to those still there after `graceMs`. */
export async function killAll(graceMs = 4000) {
  const list = [...children];
  for (const c of list) { try { c.kill("SIGTERM"); } catch { /* gone */ } }
  const deadline = Date.now() + graceMs;
  while (children.size && Date.now() < deadline) await sleep(50);
  for (const c of children) { try { c.kill("SIGKILL"); } catch { /* gone */ } }
}

/** SIGTERM to one child, SIGKILL after `graceMs`; resolves when it is gone. */
export async function stopChild(child, graceMs = 4000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once("exit", r));
  try { child.kill("SIGTERM"); } catch { /* gone */ }
  const t = setTimeout(() => { try { child.kill("SIGKILL"); } catch { /* gone */ } }, graceMs);
  await gone;
  clearTimeout(t);
}

process.on("exit", () => { for (const c of children) { try { c.kill("SIGKILL"); } catch { /* gone */ } } });

// ─── rtcio-server ───────────────────────────────────────────────────────────────────────────────
/**
 * Starts `rtcio-server --host 127.0.0.1 --port 0 [--web-dir webDir] ...extra` and waits for its
 * "listening on" line. Returns {url, child}. `webDir: null` serves the embedded page.
 */
export async function startServer({ extra = [], webDir = WEB, verbose = false, log = makeLog("server"), what = "" } = {}) {
  if (!fs.existsSync(SERVER_BIN)) throw new Error(`rtcio-server not found at ${SERVER_BIN} (set RTCIO_SERVER_BIN)`);
  const args = ["--host", "127.0.0.1", "--port", "0", ...extra];
  if (webDir) args.push("--web-dir", webDir);
  const child = track(spawn(SERVER_BIN, args, { stdio: ["ignore", "pipe", "pipe"] }), "rtcio-server");
  const errLines = [];
  readline.createInterface({ input: child.stderr }).on("line", (l) => { errLines.push(l); if (errLines.length > 50) errLines.shift(); if (verbose) log(`[server] ${l}`); });
  const url = await withTimeout(new Promise((res, rej) => {
    readline.createInterface({ input: child.stdout }).on("line", (l) => {
      const m = l.match(/listening on (http:\/\/[^\s]+)/);
      if (m) res(m[1].replace(/\/$/, ""));
    });
    child.once("exit", (code) => rej(new Error(`rtcio-server exited with ${code}: ${errLines.slice(-10).join(" | ")}`)));
  }), 15000, "rtcio-server to print its address");
  log(`rtcio-server ${what || (webDir ? "(--web-dir)" : "(embedded page)")} at ${url}`);
  return { url, child };
}

// ─── the CLI ────────────────────────────────────────────────────────────────────────────────────
/**
 * One `rtcio join --server URL --json --loopback --chat-stdin ...args` process; its JSON lines
 * are kept in `lines` (each also handed to `onLine`), `wait()` finds one.
 */
export class Cli {
  constructor(label, serverUrl, args, { verbose = false, log = makeLog("cli"), onLine = null } = {}) {
    if (!fs.existsSync(CLI_BIN)) throw new Error(`rtcio CLI not found at ${CLI_BIN} (set RTCIO_CLI_BIN)`);
    this.label = label;
    this.lines = [];
    this.waiters = [];
    this.stderr = [];
    const full = ["join", "--server", serverUrl, "--json", "--loopback", "--chat-stdin", ...args];
    this.child = track(spawn(CLI_BIN, full, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, RTCIO_LOG: process.env.RTCIO_LOG || "warn" } }), label);
    this.exited = null;
    this.child.once("exit", (code, sig) => { this.exited = { code, sig }; this._check(); });
    this.child.stdin.on("error", () => {});
    readline.createInterface({ input: this.child.stdout }).on("line", (l) => {
      let j;
      try { j = JSON.parse(l); } catch { return; }
      this.lines.push(j);
      if (onLine) onLine(j);
      if (verbose && j.type !== "send-stats" && j.type !== "audio-stats") log(`[${label}] ${l.slice(0, 300)}`);
      this._check();
    });
    // RTCIO_CLI_STDERR=prefix: every CLI's whole stderr also goes to prefix.<label> (debugging).
    const dump = process.env.RTCIO_CLI_STDERR ? fs.createWriteStream(`${process.env.RTCIO_CLI_STDERR}.${label}`, { flags: "a" }) : null;
    readline.createInterface({ input: this.child.stderr }).on("line", (l) => { if (dump) dump.write(l + "\n"); this.stderr.push(l); if (this.stderr.length > 40) this.stderr.shift(); });
  }
  _check() {
    for (const w of [...this.waiters]) {
      const i = this.lines.findIndex((x, k) => k >= w.since && w.pred(x));
      if (i >= 0) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(this.lines[i]); }
      else if (this.exited) { this.waiters.splice(this.waiters.indexOf(w), 1); w.reject(new Error(`${this.label} exited (${JSON.stringify(this.exited)}) before: ${w.what}; stderr: ${this.stderr.slice(-8).join(" | ")}; last lines: ${this.lines.slice(-3).map((x) => JSON.stringify(x).slice(0, 200)).join(" | ")}`)); }
    }
  }
  /** The first line from index `since` on that satisfies `pred`. */
  wait(what, pred, { since = 0, timeoutMs = 20000 } = {}) {
    const p = new Promise((resolve, reject) => { this.waiters.push({ what, pred, since, resolve, reject }); this._check(); });
    return withTimeout(p, timeoutMs, `${this.label}: ${what} (last lines: ${this.lines.slice(-3).map((x) => JSON.stringify(x).slice(0, 160)).join(" | ")})`);
  }
  send(text) { this.child.stdin.write(`${text}\n`); }
  get mark() { return this.lines.length; }
  /** SIGTERM (then SIGKILL); resolves when the process is gone. */
  stop(graceMs = 4000) { return stopChild(this.child, graceMs); }
}

// ─── the guest page ─────────────────────────────────────────────────────────────────────────────
/**
 * A new browser context (camera + microphone allowed unless `denyMedia`) with the page at `url`.
 * Uncaught page errors go to `pageErrors`. Returns {context, page}.
 */
export async function openGuest(browser, url, pageErrors, label, { denyMedia = false, verbose = false, log = makeLog("page"), preferVideoCodec = null } = {}) {
  const context = await browser.newContext({ permissions: denyMedia ? [] : ["camera", "microphone"], viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  if (preferVideoCodec) {
    // Puts one video codec first in every offer and answer the page makes (e.g. "H264", to
    // compare Chromium's H.264 with ours), the way an app would with setCodecPreferences.
    await page.addInitScript((mime) => {
      const prefer = (pc) => {
        const caps = RTCRtpReceiver.getCapabilities("video")?.codecs ?? [];
        const first = caps.filter((c) => c.mimeType.toLowerCase() === `video/${mime.toLowerCase()}`);
        if (!first.length) return;
        const order = [...first, ...caps.filter((c) => !first.includes(c))];
        for (const t of pc.getTransceivers()) {
          if (t.receiver.track?.kind === "video" && !t.stopped) {
            try { t.setCodecPreferences(order); } catch { /* a stopped or closed transceiver */ }
          }
        }
      };
      // setLocalDescription() without a description makes the offer or answer itself.
      for (const name of ["createOffer", "createAnswer", "setLocalDescription"]) {
        const orig = RTCPeerConnection.prototype[name];
        RTCPeerConnection.prototype[name] = function (...args) { prefer(this); return orig.apply(this, args); };
      }
    }, preferVideoCodec);
  }
  if (denyMedia) {
    // What a browser does when the person says no (the fake-UI switch would say yes).
    await page.addInitScript(() => {
      navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Permission denied", "NotAllowedError"));
    });
  }
  page.on("pageerror", (e) => { pageErrors.push(`${label}: ${e.message}`); log(`[${label}] pageerror: ${e.message}`); });
  page.on("console", (m) => { if (verbose || m.type() === "error") log(`[${label}] console.${m.type()}: ${m.text()}`); });
  await page.goto(url, { timeout: 20000 });
  return { context, page };
}

/** Fills the join form (name, optional password) and presses Join. */
export async function joinAs(page, name, password) {
  await page.waitForSelector("#join:not([disabled])", { timeout: 20000 });
  await page.fill("#name", name);
  if (password !== undefined) await page.fill("#password", password);
  await page.click("#join");
}

/** The guest invite link of `room` on `base` (`relay=1`: relayed candidates only). */
export const inviteUrl = (base, room, { relay = false } = {}) => `${base}/#room=${encodeURIComponent(room)}${relay ? "&relay=1" : ""}`;
