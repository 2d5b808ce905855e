#!/usr/bin/env node
// driver.mjs — controls rtc.io browser peers (peer.html) in one headless Chromium for Rust tests.
//
// stdin:  one JSON command per line   {"id":1,"cmd":"open"}
// stdout: one JSON reply per line     {"id":1,"ok":true,"result":0} | {"id":1,"ok":false,"error":"…"}
// Nothing else is ever written to stdout; diagnostics go to stderr. Commands run concurrently and
// replies may come out of order (match them by id). See README.md for every command.

import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { launchChromium } from "./chromium.mjs";

const ROOT = path.dirname(fileURLToPath(import.meta.url));
// The rtc.io library (and its vendored socket.io-client) is the one rtcio-server serves: /lib/.
const LIB = path.resolve(ROOT, "../../crates/rtcio-server/web");
const VERBOSE = process.env.RTCIO_BROWSER_VERBOSE === "1";
const DEFAULT_EVAL_TIMEOUT_MS = 30000;
const DEFAULT_WAIT_TIMEOUT_MS = 10000;

const err = (...a) => process.stderr.write(`[driver] ${a.join(" ")}\n`);

// ─── static HTTP server ─────────────────────────────────────────────────────────────────────────
const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8", ".map": "application/json", ".json": "application/json" };

function serve(req, res) {
  let rel;
  try {
    rel = decodeURIComponent(new URL(req.url, "http://x").pathname);
  } catch {
    res.writeHead(400).end();
    return;
  }
  if (rel === "/") rel = "/peer.html";
  let base = ROOT;
  if (rel.startsWith("/lib/")) {
    base = LIB;
    rel = rel.slice("/lib".length);
  }
  const file = path.normalize(path.join(base, rel));
  const allowed = file.startsWith(base + path.sep) && !file.includes(`${path.sep}node_modules${path.sep}`);
  if (req.method !== "GET" || !allowed) {
    res.writeHead(404).end();
    return;
  }
  fs.readFile(file, (e, body) => {
    if (e) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": TYPES[path.extname(file)] || "application/octet-stream", "Cache-Control": "no-store" });
    res.end(body);
  });
}

// ─── state ──────────────────────────────────────────────────────────────────────────────────────
let server, baseUrl, browser, tmpDir;
const pages = new Map(); // index → {page, context, label}
const opening = new Map(); // index → promise of a still-running `open`
const inflight = new Set(); // promises of running commands (quit/EOF lets them finish)
let nextPage = 0;
let quitting = false;

async function start() {
  server = http.createServer(serve);
  await new Promise((res, rej) => server.once("error", rej).listen(0, "127.0.0.1", res));
  baseUrl = `http://127.0.0.1:${server.address().port}`;
  // Playwright's own temp artifacts land in tmpDir too, so one rm cleans everything.
  ({ browser, tmpDir } = await launchChromium());
  browser.on("disconnected", () => {
    if (!quitting) err("Chromium disconnected unexpectedly");
  });
  err(`Chromium ${browser.version()} up; serving ${ROOT} (and ${LIB} at /lib/) at ${baseUrl}`);
}

async function cleanup() {
  quitting = true;
  try { if (browser) await browser.close(); } catch (e) { err("browser.close:", e.message); }
  try { if (server) server.close(); } catch { /* ignore */ }
  try { if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true }); } catch (e) { err("rm tmp:", e.message); }
}

async function getPage(n) {
  if (opening.has(Number(n))) await opening.get(Number(n)).catch(() => {});
  const p = pages.get(Number(n));
  if (!p) throw new Error(`no open page ${JSON.stringify(n)} (open pages: ${[...pages.keys()].join(", ") || "none"})`);
  return p;
}

function timeout(ms, what) {
  let t;
  const p = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`${what}: timed out after ${ms} ms`)), ms); });
  p.clear = () => clearTimeout(t);
  return p;
}
async function race(promise, ms, what) {
  const t = timeout(ms, what);
  try { return await Promise.race([promise, t]); } finally { t.clear(); }
}

// Strip Playwright's "page.evaluate: " wrapper and call logs from page errors.
function cleanError(e) {
  let m = String(e?.message ?? e);
  m = m.replace(/^(page|frame)\.(evaluate|waitForFunction): /, "");
  const cut = m.indexOf("\n    at ");
  if (cut > 0) m = m.slice(0, cut);
  return m.split("\nCall log:")[0].trim();
}

// ─── commands ───────────────────────────────────────────────────────────────────────────────────
const commands = {
  async ping() { return "pong"; },

  async info() {
    return { baseUrl, chromium: browser.version(), pages: [...pages.keys()], tmpDir };
  },

  async open({ label, timeoutMs = 30000 }) {
    const index = nextPage++;
    const name = label ?? `page${index}`;
    let release;
    opening.set(index, new Promise((r) => { release = r; }));
    let context;
    try {
      context = await browser.newContext({ permissions: ["camera", "microphone"] });
      const page = await context.newPage();
      page.on("console", (msg) => {
        const type = msg.type();
        if (VERBOSE || type === "error" || type === "warning") err(`[${name}] console.${type}: ${msg.text()}`);
      });
      page.on("pageerror", (e) => err(`[${name}] pageerror: ${e.message}`));
      page.on("crash", () => err(`[${name}] page crashed`));
      await page.goto(`${baseUrl}/peer.html?label=${encodeURIComponent(name)}`, { timeout: timeoutMs });
      await page.waitForFunction(() => window.__rtcioReady === true, null, { timeout: timeoutMs });
      pages.set(index, { page, context, label: name });
    } catch (e) {
      if (context) await context.close().catch(() => {});
      throw new Error(`open: peer.html did not load on ${name}: ${cleanError(e)}`);
    } finally {
      opening.delete(index);
      release();
    }
    return index;
  },

  async eval({ page, expr, arg = null, timeoutMs = DEFAULT_EVAL_TIMEOUT_MS }) {
    if (typeof expr !== "string") throw new Error("eval: `expr` must be a string");
    const { page: p, label } = await getPage(page);
    try {
      return await race(p.evaluate(([e, a]) => window.rtcio.eval(e, a), [expr, arg]), timeoutMs, `eval on ${label}`);
    } catch (e) {
      throw new Error(`eval on ${label} failed: ${cleanError(e)}`);
    }
  },

  async waitLog({ page, match, since = 0, timeoutMs = DEFAULT_WAIT_TIMEOUT_MS }) {
    if (!match || typeof match !== "object") throw new Error("waitLog: `match` must be an object");
    const { page: p, label } = await getPage(page);
    try {
      return await race(
        p.evaluate(([m, s, t]) => window.rtcio.waitLog(m, s, t), [match, since, timeoutMs]),
        timeoutMs + 5000, `waitLog ${JSON.stringify(match)} on ${label}`);
    } catch (e) {
      throw new Error(`${label}: ${cleanError(e)}`);
    }
  },

  async waitFn({ page, expr, arg = null, timeoutMs = DEFAULT_WAIT_TIMEOUT_MS, pollMs = 50 }) {
    if (typeof expr !== "string") throw new Error("waitFn: `expr` must be a string");
    const { page: p, label } = await getPage(page);
    try {
      return await race(
        p.evaluate(([e, a, t, q]) => window.rtcio.waitFn(e, a, t, q), [expr, arg, timeoutMs, pollMs]),
        timeoutMs + 5000, `waitFn ${expr} on ${label}`);
    } catch (e) {
      throw new Error(`${label}: ${cleanError(e)}`);
    }
  },

  async log({ page, since = 0 }) {
    const { page: p } = await getPage(page);
    return await p.evaluate((s) => ({ next: window.__log.length, entries: window.__log.slice(s) }), since);
  },

  async screenshot({ page, path: file }) {
    if (!file) throw new Error("screenshot: `path` is required");
    const { page: p } = await getPage(page);
    await p.screenshot({ path: file });
    return file;
  },

  async close({ page }) {
    const { context } = await getPage(page);
    pages.delete(Number(page));
    await context.close();
    return null;
  },
};

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    reply({ id: null, ok: false, error: `invalid JSON command: ${e.message}` });
    return;
  }
  const id = msg?.id ?? null;
  if (msg?.cmd === "quit") {
    shutdown(0, id, true); // not awaited: this command must not wait for itself
    return;
  }
  const fn = commands[msg?.cmd];
  if (!fn) {
    reply({ id, ok: false, error: `unknown cmd ${JSON.stringify(msg?.cmd)} (known: ${Object.keys(commands).join(", ")}, quit)` });
    return;
  }
  try {
    // Backstop: no command can hang forever, whatever Chromium does.
    const limit = (Number(msg.timeoutMs) > 0 ? Number(msg.timeoutMs) : DEFAULT_EVAL_TIMEOUT_MS) + 15000;
    const result = await race(fn(msg), limit, `${msg.cmd}`);
    reply({ id, ok: true, result: result === undefined ? null : result });
  } catch (e) {
    reply({ id, ok: false, error: cleanError(e) });
  }
}

function reply(obj) {
  if (quitting && obj.ok !== true && obj.id !== null) return; // pending commands die with the browser
  process.stdout.write(JSON.stringify(obj) + "\n");
}

let shuttingDown = null;
const QUIT_GRACE_MS = Number(process.env.RTCIO_DRIVER_QUIT_GRACE_MS ?? 15000);
// quit / stdin EOF: let commands already running finish (each has its own timeout, and the grace
// period caps the wait), then close the browser. Signals close at once.
function shutdown(code, id, graceful = false) {
  if (!shuttingDown) {
    shuttingDown = (async () => {
      if (graceful) {
        const others = [...inflight];
        if (others.length) await race(Promise.allSettled(others), QUIT_GRACE_MS, "quit").catch(() => err("quit: gave up waiting for running commands"));
      }
      await cleanup();
      if (id !== undefined) process.stdout.write(JSON.stringify({ id, ok: true, result: null }) + "\n");
      process.exit(code);
    })();
  }
  return shuttingDown;
}

process.on("SIGINT", () => shutdown(130));
process.on("SIGTERM", () => shutdown(143));
process.stdout.on("error", () => shutdown(0)); // reader went away

try {
  await start();
} catch (e) {
  err(`startup failed: ${e.message}`);
  await cleanup();
  process.exit(1);
}

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  if (line.trim() === "") return;
  const p = handle(line);
  inflight.add(p);
  p.finally(() => inflight.delete(p));
});
rl.on("close", () => shutdown(0, undefined, true));
