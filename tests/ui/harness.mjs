// Shared by the UI suites: a static server for ui/ and the stand-in for Tauri's IPC bridge.
//
// ui/bridge.js only uses `__TAURI_INTERNALS__.invoke` and `.transformCallback`, so the mock
// provides those two: it records every invoke, answers from per-test canned responses, and lets
// the test fire Tauri events (`window.__mock.emit(name, payload)`) and channel messages
// (`window.__mock.callback(id, payload)`).

import http from 'node:http';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

/** The UI's folder. */
export const UI_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../ui');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
};

/** Serves ui/ read-only on 127.0.0.1 (modules need http, not file://). */
export function startStaticServer() {
  return new Promise((resolve) => {
    const srv = http.createServer(async (req, res) => {
      try {
        const url = new URL(req.url, 'http://x');
        const rel = decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname);
        const file = path.resolve(UI_DIR, '.' + rel);
        if (!file.startsWith(UI_DIR + path.sep)) throw new Error('outside ui/');
        const body = await fs.readFile(file);
        res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
        res.end(body);
      } catch {
        res.writeHead(404);
        res.end();
      }
    });
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

/** Runs in the page before any of its scripts: the fake `__TAURI_INTERNALS__`. */
export function installMock(config) {
  const callbacks = new Map();
  const listeners = [];
  let nextId = 1;
  const calls = [];
  // `next_frames`: pulls waiting for a batch, batches waiting for a pull, and the resolver of
  // the batch the page holds (its next pull means it is painted).
  const pulls = {
    waiting: [],
    ready: [],
    held: null,
    maxWaiting: 0,
    log: [],
    serve() {
      while (this.waiting.length && this.ready.length) {
        const { message, painted } = this.ready.shift();
        this.held = painted;
        this.waiting.shift()(message);
      }
    },
  };
  const responses = config.responses || {};
  window.__mock = {
    calls,
    listeners,
    responses,
    // Runs a callback made with transformCallback (a Tauri channel's, for instance).
    callback(id, payload) {
      callbacks.get(id)?.(payload);
    },
    emit(event, payload) {
      for (const l of listeners) {
        if (l.event === event) callbacks.get(l.handler)?.({ event, id: l.id, payload });
      }
    },
    // The bytes of one binary video frame (src-tauri media.rs layout) of w×h. `pixels`: a
    // byte to fill with, one RGBA pixel ([r, g, b, a]) repeated, or all w×h×4 bytes. Options:
    // `version` (1; anything else makes a malformed frame), `ageMs` (how long ago it was
    // handed over).
    frameBytes(key, w, h, pixels, { version = 1, ageMs = 0 } = {}) {
      const k = new TextEncoder().encode(key);
      const buf = new ArrayBuffer(20 + k.length + w * h * 4);
      const v = new DataView(buf);
      v.setUint8(0, version);
      v.setUint16(2, k.length, true);
      v.setUint32(4, w, true);
      v.setUint32(8, h, true);
      v.setBigUint64(12, BigInt(Date.now() - ageMs) * 1000n, true);
      new Uint8Array(buf, 20, k.length).set(k);
      const px = new Uint8Array(buf, 20 + k.length);
      if (typeof pixels === 'number') px.fill(pixels);
      else if (pixels.length === 4) for (let i = 0; i < w * h; i++) px.set(pixels, i * 4);
      else px.set(pixels);
      return buf;
    },
    // The bytes of one I420 frame (media.rs `encode_i420_frame`: format byte 1, the Y plane,
    // then U and V of ⌈w/2⌉ × ⌈h/2⌉, rows packed). `yuv`: [y, u, v] values filling each plane,
    // or {y, u, v} arrays of the planes' bytes. `truncate`: bytes cut off the end (malformed).
    i420Bytes(key, w, h, yuv, { ageMs = 0, truncate = 0 } = {}) {
      const k = new TextEncoder().encode(key);
      const luma = w * h;
      const chroma = Math.ceil(w / 2) * Math.ceil(h / 2);
      const buf = new ArrayBuffer(20 + k.length + luma + 2 * chroma - truncate);
      const v = new DataView(buf);
      v.setUint8(0, 1);
      v.setUint8(1, 1);
      v.setUint16(2, k.length, true);
      v.setUint32(4, w, true);
      v.setUint32(8, h, true);
      v.setBigUint64(12, BigInt(Date.now() - ageMs) * 1000n, true);
      new Uint8Array(buf, 20, k.length).set(k);
      const px = new Uint8Array(buf, 20 + k.length);
      const planes = Array.isArray(yuv) ? yuv.map((x, i) => new Array(i ? chroma : luma).fill(x)) : [yuv.y, yuv.u, yuv.v];
      const all = [...planes[0], ...planes[1], ...planes[2]].slice(0, px.length);
      px.set(all);
      return buf;
    },
    // Delivers frames (ArrayBuffers) as one batch, the reply to the page's `next_frames` pull
    // (media.rs `FrameFlow`: version 2, count, sequence number, then each frame after its
    // length): to the pull waiting now, else to the page's next one. Options: `seq` (the
    // batch's sequence number; counts up by default), `truncate` (bytes cut off the end: a
    // malformed batch). Resolves once the page has painted it (its next pull came).
    batch(frames, { seq, truncate = 0 } = {}) {
      const len = 8 + frames.reduce((n, f) => n + 4 + f.byteLength, 0);
      const buf = new ArrayBuffer(len);
      const v = new DataView(buf);
      v.setUint8(0, 2);
      v.setUint16(2, frames.length, true);
      window.__frameSeq = window.__frameSeq ?? 0;
      v.setUint32(4, seq ?? window.__frameSeq++, true);
      let at = 8;
      for (const f of frames) {
        v.setUint32(at, f.byteLength, true);
        new Uint8Array(buf, at + 4, f.byteLength).set(new Uint8Array(f));
        at += 4 + f.byteLength;
      }
      const message = truncate ? buf.slice(0, buf.byteLength - truncate) : buf;
      const painted = new Promise((resolve) => pulls.ready.push({ message, painted: resolve }));
      pulls.serve();
      return painted;
    },
    // Delivers one RGBA frame (`frameBytes`) alone in a batch.
    frame(key, w, h, pixels, opts = {}) {
      return this.batch([this.frameBytes(key, w, h, pixels, opts)]);
    },
    // Delivers one I420 frame (`i420Bytes`) alone in a batch.
    frameI420(key, w, h, yuv, opts = {}) {
      return this.batch([this.i420Bytes(key, w, h, yuv, opts)]);
    },
    // The page's `next_frames` pulls: `waiting` (unanswered, never more than one for a page
    // that holds one batch at a time), `maxWaiting`, and per pull the `painted` counter and
    // the pulls still unanswered when it was made (`log`).
    pulls,
  };
  window.__TAURI_INTERNALS__ = {
    transformCallback(cb) {
      const id = nextId++;
      callbacks.set(id, cb);
      return id;
    },
    invoke(cmd, args) {
      calls.push({ cmd, args: JSON.parse(JSON.stringify(args ?? {})) });
      if (cmd === 'next_frames') {
        pulls.log.push({ ack: args?.ack ?? null, painted: window.__rtcioVideo?.painted ?? 0, waiting: pulls.waiting.length });
        pulls.held?.();
        pulls.held = null;
        return new Promise((resolve) => {
          pulls.waiting.push(resolve);
          pulls.maxWaiting = Math.max(pulls.maxWaiting, pulls.waiting.length);
          pulls.serve();
        });
      }
      if (cmd === 'plugin:event|listen') {
        const id = nextId++;
        listeners.push({ event: args.event, handler: args.handler, id });
        return Promise.resolve(id);
      }
      const r = responses[cmd];
      if (r && r.error) return Promise.reject(r.error);
      if (r && 'value' in r) return Promise.resolve(r.value);
      return Promise.resolve(null);
    },
  };
}

/** Devices `list_devices` answers with by default. */
export const DEVICES = {
  cameras: [
    { id: 'cam0', name: 'Integrated Camera', isDefault: false },
    { id: 'cam1', name: 'USB Camera', isDefault: true },
  ],
  microphones: [{ id: 'mic0', name: 'Built-in Mic', isDefault: true }],
  speakers: [
    { id: 'spk0', name: 'Built-in Speakers', isDefault: true },
    { id: 'spk1', name: 'USB Headset', isDefault: false },
    { id: 'synthetic:silent', name: 'Silent (no output)', isDefault: false, synthetic: true },
  ],
  cameraError: null,
  microphoneError: null,
  speakerError: null,
};

/** What `join` answers with by default (`extra` overrides fields). */
export function joinInfo(extra = {}) {
  return {
    selfId: 'self-id',
    roomId: 'room-1',
    name: 'Ann',
    serverUrl: 'http://127.0.0.1:4000',
    hosting: true,
    shareUrls: ['http://192.168.1.5:4000'],
    mic: true,
    cam: true,
    joinConfirmed: true,
    ...extra,
  };
}

/** Canned answers most tests start from (`openApp`'s `responses` override them). */
export function defaultResponses() {
  return {
    list_devices: { value: DEVICES },
    get_settings: { value: { name: 'Ann', lastServers: ['http://10.0.0.2:3001'], serverMode: 'host' } },
    join: { value: joinInfo() },
    send_chat: { value: { name: 'Ann', text: 'echo', at: 1700000000000 } },
  };
}

/** Loads the UI in `page` with the stand-in bridge answering `responses`; waits until it is ready. */
export async function openAppIn(page, baseUrl, responses) {
  await page.addInitScript(installMock, { responses });
  await page.goto(`${baseUrl}/index.html`);
  await page.waitForSelector('body[data-ready="true"]');
}

/** Opens the UI with the default answers (plus `responses`) and joins `room-1`. */
export async function joinCallIn(page, baseUrl, responses = {}) {
  await openAppIn(page, baseUrl, { ...defaultResponses(), ...responses });
  await page.fill('#room', 'room-1');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
}

/** Headless Chromium as every suite runs it (`CHROMIUM` overrides `/usr/bin/chromium`). */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** A page in a fresh context of the suite's browser (`options`: `newContext`'s, e.g. viewport):
 * an error thrown in the page fails the test. */
export async function newTestPage(suite, options = { viewport: { width: 1200, height: 780 } }) {
  const ctx = await suite.browser.newContext(options);
  const page = await ctx.newPage();
  page.on('pageerror', (e) => { throw e; });
  return page;
}

/** One static server for ui/ and one Chromium per test file: registers the file's `before` /
 * `after` hooks and returns `{baseUrl, browser}`, filled in once `before` has run. */
export function suiteBrowser() {
  const suite = { server: null, baseUrl: null, browser: null };
  before(async () => {
    suite.server = await startStaticServer();
    suite.baseUrl = `http://127.0.0.1:${suite.server.address().port}`;
    suite.browser = await launchChromium();
  });
  after(async () => {
    await suite.browser?.close();
    await new Promise((r) => (suite.server ? suite.server.close(r) : r()));
  });
  return suite;
}
