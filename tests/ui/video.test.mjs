// Video tiles' painting (ui/renderer.js): I420 frames (media.rs `encode_i420_frame`) painted by
// WebGL 2 with the YUV → RGB conversion in a shader, RGBA frames by a 2D canvas, and the page
// without WebGL 2 asking Rust for RGBA and still showing an I420 frame it gets. Headless
// Chromium here has WebGL 2 (SwiftShader); the second case takes it away before the page loads.

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { inflateSync } from 'node:zlib';
import { joinCallIn, joinInfo, suiteBrowser, newTestPage } from './harness.mjs';

const suite = suiteBrowser();
let page;

beforeEach(async () => {
  page = await newTestPage(suite);
});

afterEach(async () => {
  await page.context().close();
});

const calls = (cmd) => page.evaluate((c) => window.__mock.calls.filter((x) => x.cmd === c), cmd);
const emit = (event, payload) => page.evaluate(([e, p]) => window.__mock.emit(e, p), [event, payload]);
const sendI420 = (key, w, h, yuv, opts = {}) => page.evaluate(
  ([key, w, h, yuv, opts]) => window.__mock.frameI420(key, w, h, yuv, { ageMs: 5, ...opts }), [key, w, h, yuv, opts]);
const sendRgba = (key, w, h, rgba) => page.evaluate(
  ([key, w, h, rgba]) => window.__mock.frame(key, w, h, rgba, { ageMs: 5 }), [key, w, h, rgba]);
/** [r, g, b, a] at (x, y) of a tile's canvas as painted (the renderer redraws a WebGL one). */
const pixel = (key, x = 0, y = 0) => page.evaluate(async ([key, x, y]) => {
  const { readPixel } = await import('./renderer.js');
  return readPixel(document.querySelector(`canvas.video[data-key="${key}"]`), x, y);
}, [key, x, y]);
const attr = (key, name) => page.getAttribute(`canvas.video[data-key="${key}"]`, name);

/** BT.601 limited range, computed here independently of the page: what Rust's `yuv` gives. */
function bt601(y, u, v) {
  const c = 1.164383 * (y - 16);
  const clamp = (x) => Math.max(0, Math.min(255, Math.round(x)));
  return [clamp(c + 1.596027 * (v - 128)), clamp(c - 0.391762 * (u - 128) - 0.812968 * (v - 128)),
    clamp(c + 2.017232 * (u - 128)), 255];
}

function near(actual, expected, tolerance, what) {
  assert.ok(actual && actual.every((x, i) => Math.abs(x - expected[i]) <= tolerance),
    `${what}: ${JSON.stringify(actual)} vs ${JSON.stringify(expected)}`);
}

async function joinWithRemote() {
  await joinCallIn(page, suite.baseUrl, { join: { value: joinInfo({ previewKey: 'self/camera' }) } });
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  await emit('stream-added', { key: 'p1/ms1', peerId: 'p1', kind: 'camera', name: 'Bob' });
}

test('with WebGL 2 the page asks for I420 and paints it in a shader; RGBA still paints', async () => {
  await joinWithRemote();
  const [reg] = await calls('video_formats');
  assert.deepEqual(reg.args.formats, ['rgba', 'i420']);

  // A flat colour: the shader's conversion against BT.601 limited range (±2 levels of float
  // rounding on the GPU).
  await sendI420('p1/ms1', 8, 4, [120, 100, 150]);
  assert.equal(await attr('p1/ms1', 'data-painted'), '1');
  assert.equal(await attr('p1/ms1', 'data-painter'), 'webgl');
  assert.deepEqual(await page.evaluate(() => {
    const c = document.querySelector('canvas.video[data-key="p1/ms1"]');
    return [c.width, c.height];
  }), [8, 4]);
  near(await pixel('p1/ms1'), bt601(120, 100, 150), 2, 'flat I420 colour');
  near(await pixel('p1/ms1', 7, 3), bt601(120, 100, 150), 2, 'flat I420 colour, last pixel');

  // Where each plane's bytes land: a 6×4 picture (chroma rows of 3 bytes: not 4-aligned),
  // the top-left luma white, the bottom row dark, the right half of the chroma reddish.
  const w = 6;
  const h = 4;
  const y = new Array(w * h).fill(126);
  y[0] = 235;
  for (let x = 0; x < w; x++) y[(h - 1) * w + x] = 16;
  const u = [128, 128, 128, 128, 128, 128];
  const v = [128, 128, 240, 128, 128, 240];
  await sendI420('p1/ms1', w, h, { y, u, v });
  assert.equal(await attr('p1/ms1', 'data-painted'), '2');
  near(await pixel('p1/ms1', 0, 0), [255, 255, 255, 255], 2, 'top-left is the first luma byte');
  near(await pixel('p1/ms1', 1, 0), bt601(126, 128, 128), 2, 'top row, grey');
  near(await pixel('p1/ms1', 2, 3), [0, 0, 0, 255], 2, 'bottom row is the last luma row');
  // Right column: its chroma texel only (clamped at the edge), red from V = 240.
  near(await pixel('p1/ms1', 5, 1), bt601(126, 128, 240), 3, 'right column takes the last chroma column');

  // An RGBA frame on the same (WebGL) canvas: shown as a texture, colour exact.
  await sendRgba('p1/ms1', 4, 2, [10, 200, 30, 255]);
  assert.equal(await attr('p1/ms1', 'data-painted'), '3');
  near(await pixel('p1/ms1', 3, 1), [10, 200, 30, 255], 0, 'RGBA through WebGL');
  // And back to I420.
  await sendI420('p1/ms1', 8, 4, [81, 90, 240]);
  near(await pixel('p1/ms1', 4, 2), bt601(81, 90, 240), 2, 'I420 again');

  // Our own preview is RGBA: a 2D canvas, exactly as before.
  await sendRgba('self/camera', 6, 4, [0, 0, 255, 255]);
  assert.equal(await attr('self/camera', 'data-painter'), '2d');
  assert.deepEqual(await pixel('self/camera', 5, 3), [0, 0, 255, 255]);

  // A truncated I420 frame is dropped, not painted; odd sizes round the chroma up.
  await sendI420('p1/ms1', 8, 4, [16, 128, 128], { truncate: 1 });
  assert.equal(await attr('p1/ms1', 'data-painted'), '4');
  await sendI420('p1/ms1', 5, 3, [120, 100, 150]);
  assert.equal(await attr('p1/ms1', 'data-painted'), '5');
  near(await pixel('p1/ms1', 4, 2), bt601(120, 100, 150), 2, 'odd-sized I420');

  const stats = await page.evaluate(() => window.__rtcioVideo);
  assert.equal(stats.painted, 6);
  assert.equal(stats.dropped, 1);
  assert.equal(stats.i420, 4);
  assert.equal(stats.webgl, 5);
  // Every batch is acknowledged once, by the next pull, the truncated frame's too.
  assert.deepEqual((await calls('next_frames')).map((c) => c.args.ack), [null, 0, 1, 2, 3, 4, 5, 6]);
});

test('without WebGL 2 the page asks for RGBA and still shows an I420 frame', async () => {
  await page.addInitScript(() => {
    const get = HTMLCanvasElement.prototype.getContext;
    HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
      return kind === 'webgl2' ? null : get.call(this, kind, ...rest);
    };
  });
  await joinWithRemote();
  const [reg] = await calls('video_formats');
  assert.deepEqual(reg.args.formats, ['rgba']);
  // RGBA as before.
  await sendRgba('p1/ms1', 4, 2, [0, 255, 0, 255]);
  assert.equal(await attr('p1/ms1', 'data-painter'), '2d');
  assert.deepEqual(await pixel('p1/ms1', 3, 1), [0, 255, 0, 255]);
  // An I420 frame anyway (sent before Rust heard the page's formats): converted here.
  const w = 6;
  const y = new Array(w * 4).fill(120);
  y[w * 3 + 5] = 235;
  await sendI420('p1/ms1', w, 4, { y, u: new Array(6).fill(100), v: new Array(6).fill(150) });
  assert.equal(await attr('p1/ms1', 'data-painted'), '2');
  assert.deepEqual(await page.evaluate(() => {
    const c = document.querySelector('canvas.video[data-key="p1/ms1"]');
    return [c.width, c.height];
  }), [6, 4]);
  near(await pixel('p1/ms1', 0, 0), bt601(120, 100, 150), 1, 'JavaScript conversion');
  near(await pixel('p1/ms1', 5, 3), bt601(235, 100, 150), 1, 'last pixel is the last luma byte');
  const stats = await page.evaluate(() => window.__rtcioVideo);
  assert.equal(stats.webgl, 0);
  assert.equal(stats.i420, 1);
});

/** The screen's RGBA at (x, y) (CSS pixels): a 1×1 screenshot, what the page composited. */
async function screenPixel(x, y) {
  const png = await page.screenshot({ clip: { x, y, width: 1, height: 1 } });
  // PNG: chunks after the 8-byte signature; IHDR's colour type (2 RGB, 6 RGBA), IDAT's zlib
  // data. One pixel in one row: whatever the row's filter, its bytes are the pixel itself.
  let at = 8;
  let type = 6;
  const idat = [];
  while (at < png.length) {
    const len = png.readUInt32BE(at);
    const kind = png.toString('latin1', at + 4, at + 8);
    if (kind === 'IHDR') type = png[at + 8 + 9];
    if (kind === 'IDAT') idat.push(png.subarray(at + 8, at + 8 + len));
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  return type === 2 ? [...raw.subarray(1, 4), 255] : [...raw.subarray(1, 5)];
}

/** The centre (CSS pixels) of a tile's box. */
const centre = (sel) => page.evaluate((sel) => {
  const r = document.querySelector(sel).getBoundingClientRect();
  return [Math.round(r.left + r.width / 2), Math.round(r.top + r.height / 2)];
}, sel);

/** Resolves after two animation frames: the layer has drawn what came before. */
const frames = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

/** The picture colours (Y, U, V) of the two remotes on the layer. */
const P1_YUV = [120, 100, 150];
const P2_YUV = [81, 90, 240];

/** A call with two remotes, p1 and p2, each with one 16:9 frame (as the tiles are) painted. */
async function twoRemotesOnTheLayer() {
  await joinWithRemote();
  await emit('room-event', { type: 'user-connected', id: 'p2', name: 'Cy' });
  await emit('stream-added', { key: 'p2/ms1', peerId: 'p2', kind: 'camera', name: 'Cy' });
  await page.evaluate(([a, b]) => {
    const m = window.__mock;
    return m.batch([
      m.i420Bytes('p1/ms1', 32, 18, a, { ageMs: 5 }),
      m.i420Bytes('p2/ms1', 32, 18, b, { ageMs: 5 }),
    ]);
  }, [P1_YUV, P2_YUV]);
  await frames();
}

/** Pins p2 (the stage; p1 goes to the strip), without a new frame. */
async function pinP2() {
  await page.click('.tile[data-id="p2"]');
  await frames();
}

/** The screen shows each remote's picture in the middle of its tile. */
async function bothOnScreen(what) {
  near(await screenPixel(...await centre('.tile[data-id="p1"]')), bt601(...P1_YUV), 3, `${what}: p1 on screen`);
  near(await screenPixel(...await centre('.tile[data-id="p2"]')), bt601(...P2_YUV), 3, `${what}: p2 on screen`);
}

test('`layer: true`: every WebGL tile is drawn on one shared layer behind the grid, at its tile\'s place', async () => {
  // The layer is a switch (measured slower than a canvas per tile with software GL).
  // Count the page's WebGL 2 contexts (the start-up probe's canvas is never in the page).
  await page.addInitScript(() => {
    window.__rtcioVideoTuning = { layer: true };
    const get = HTMLCanvasElement.prototype.getContext;
    window.__glCanvases = new Set();
    HTMLCanvasElement.prototype.getContext = function (kind, ...rest) {
      const ctx = get.call(this, kind, ...rest);
      if (kind === 'webgl2' && ctx) window.__glCanvases.add(this);
      return ctx;
    };
  });
  await twoRemotesOnTheLayer();
  const red = bt601(...P1_YUV);
  assert.equal(await attr('p1/ms1', 'data-painter'), 'webgl');
  assert.equal(await attr('p2/ms1', 'data-painter'), 'webgl');
  assert.deepEqual(await page.evaluate(() => [...window.__glCanvases].filter((c) => c.isConnected).map((c) => c.id)),
    ['video-layer'], 'one WebGL context in the page: the layer\'s');
  assert.deepEqual(await page.evaluate(async () => {
    const { onLayer } = await import('./renderer.js');
    return [...document.querySelectorAll('#grid canvas.video')].map((c) => [c.dataset.key, onLayer(c), c.width, c.height]);
  }), [['self/camera', false, 300, 150], ['p1/ms1', true, 32, 18], ['p2/ms1', true, 32, 18]],
  'the placeholders keep the frame size; our own tile has no frame yet');
  // What the screen shows in the middle of each tile: the layer's picture through the tile.
  await bothOnScreen('first frames');
  const stats = await page.evaluate(() => window.__rtcioVideo);
  assert.deepEqual([stats.drawnPerKey['p1/ms1'], stats.drawnPerKey['p2/ms1']], [1, 1]);

  // A tile that moves without a new frame (pinned: the stage) is drawn at its new place.
  await pinP2();
  assert.equal(await page.getAttribute('#grid', 'data-layout'), 'spotlight');
  await bothOnScreen('p2 pinned');
  await page.keyboard.press('Escape');

  // Camera off: the tile is the avatar again, nothing of the video is left on the layer.
  await emit('media-state', { id: 'p1', mic: true, cam: false });
  await frames();
  const [x, y] = await centre('.tile[data-id="p1"]');
  assert.equal(await page.evaluate(() => document.querySelector('.tile[data-id="p1"]').classList.contains('layered')), false);
  const shown = await screenPixel(x, y);
  assert.ok(Math.abs(shown[0] - red[0]) + Math.abs(shown[1] - red[1]) + Math.abs(shown[2] - red[2]) > 30,
    `camera off shows no video: ${shown}`);
  // And on: a new placeholder, on the same layer.
  await emit('media-state', { id: 'p1', mic: true, cam: true });
  await sendI420('p1/ms1', 32, 18, P1_YUV);
  assert.equal(await attr('p1/ms1', 'data-painter'), 'webgl');
  near(await pixel('p1/ms1'), red, 2, 'the new canvas paints');
  await frames();
  await bothOnScreen('p1 back');
  assert.equal(await page.evaluate(() => document.querySelectorAll('canvas#video-layer').length), 1);
});

test('`layerBox: \'tiles\'`: the layer covers only the union of its tiles, and follows them', async () => {
  await page.addInitScript(() => { window.__rtcioVideoTuning = { layer: true, layerBox: 'tiles' }; });
  await twoRemotesOnTheLayer();
  const boxes = () => page.evaluate(() => {
    const box = (el) => { const r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    const tiles = ['p1/ms1', 'p2/ms1'].map((k) => box(document.querySelector(`canvas.video[data-key="${k}"]`)));
    const union = [Math.min(...tiles.map((b) => b[0])), Math.min(...tiles.map((b) => b[1])),
      Math.max(...tiles.map((b) => b[2])), Math.max(...tiles.map((b) => b[3]))];
    return { layer: box(document.getElementById('video-layer')), union, grid: box(document.getElementById('grid')) };
  });
  const check = (b, what) => {
    b.layer.forEach((v, i) => assert.ok(Math.abs(v - b.union[i]) <= 1, `${what}: layer ${b.layer} is the tiles' union ${b.union}`));
  };
  const before = await boxes();
  check(before, 'two remotes and our own (2D) tile');
  const area = (b) => (b[2] - b[0]) * (b[3] - b[1]);
  assert.ok(area(before.layer) < area(before.grid), 'smaller than the grid: our own tile is not on it');
  await bothOnScreen('first frames');
  // Pinned: the tiles move and change size without a new frame; the layer follows them.
  await pinP2();
  check(await boxes(), 'p2 pinned');
  await bothOnScreen('p2 pinned');
});

test('by default each tile has its own WebGL canvas, given back when removed', async () => {
  await joinWithRemote();
  await sendI420('p1/ms1', 8, 4, [120, 100, 150]);
  // Camera off and on: the tile gets a new canvas; the old one keeps its context until then.
  await page.evaluate(() => {
    const c = document.querySelector('canvas.video[data-key="p1/ms1"]');
    window.__oldGl = c.getContext('webgl2');
  });
  await emit('media-state', { id: 'p1', mic: true, cam: false });
  assert.equal(await page.evaluate(() => window.__oldGl.isContextLost()), false);
  await emit('media-state', { id: 'p1', mic: true, cam: true });
  await sendI420('p1/ms1', 8, 4, [120, 100, 150]);
  assert.equal(await attr('p1/ms1', 'data-painter'), 'webgl');
  near(await pixel('p1/ms1'), bt601(120, 100, 150), 2, 'the new canvas paints');
  assert.equal(await page.evaluate(() => window.__oldGl.isContextLost()), true, 'old context released');
  assert.equal(await page.locator('#video-layer').count(), 0);
});

test('one batch carries several tiles\' frames and is acknowledged by the next pull', async () => {
  await joinWithRemote();
  await emit('room-event', { type: 'user-connected', id: 'p2', name: 'Cy' });
  await emit('stream-added', { key: 'p2/ms1', peerId: 'p2', kind: 'camera', name: 'Cy' });
  // What Rust replies when the page was busy: the newest frame of every tile that had one, in
  // one batch; an unreadable frame and an unknown tile in it are dropped, the rest painted.
  await page.evaluate(() => {
    const m = window.__mock;
    return m.batch([
      m.i420Bytes('p1/ms1', 8, 4, [120, 100, 150], { ageMs: 5 }),
      m.i420Bytes('p2/ms1', 8, 4, [81, 90, 240], { ageMs: 5 }),
      m.frameBytes('self/camera', 6, 4, [0, 0, 255, 255], { ageMs: 5 }),
      m.frameBytes('p2/ms1', 4, 2, [1, 2, 3, 255], { version: 9 }),
      m.frameBytes('nobody/x', 4, 2, [1, 2, 3, 255]),
    ], { seq: 41 });
  });
  assert.equal(await attr('p1/ms1', 'data-painted'), '1');
  assert.equal(await attr('p2/ms1', 'data-painted'), '1');
  near(await pixel('p1/ms1', 2, 2), bt601(120, 100, 150), 2, 'first tile of the batch');
  near(await pixel('p2/ms1', 2, 2), bt601(81, 90, 240), 2, 'second tile of the batch');
  assert.deepEqual(await pixel('self/camera', 5, 3), [0, 0, 255, 255]);
  const pulls = await calls('next_frames');
  assert.deepEqual(pulls.map((c) => c.args), [{ ack: null }, { ack: 41 }], 'one acknowledgement, on the next pull');
  const stats = await page.evaluate(() => window.__rtcioVideo);
  assert.deepEqual([stats.painted, stats.dropped, stats.messages], [3, 2, 1]);
  assert.ok(2 * stats.messages / stats.painted < 1, 'fewer IPC messages than frames painted');
  // A reply that is not a whole batch is dropped and acknowledges nothing; an empty batch
  // (no frame in time) paints nothing and acknowledges nothing.
  await page.evaluate(() => {
    const m = window.__mock;
    return m.batch([m.frameBytes('p1/ms1', 4, 2, [1, 2, 3, 255])], { seq: 42, truncate: 1 });
  });
  await page.evaluate(() => window.__mock.batch([], { seq: 0xffffffff }));
  assert.equal(await attr('p1/ms1', 'data-painted'), '1');
  assert.deepEqual((await calls('next_frames')).map((c) => c.args.ack), [null, 41, null, null]);
  assert.equal((await page.evaluate(() => window.__rtcioVideo)).dropped, 3);
});

test('the page pulls one batch at a time and paints it before the next pull', async () => {
  await joinWithRemote();
  // Three batches ready at once (a mock cannot be slower than Rust): the page still takes them
  // one pull at a time, each pull made after the previous batch was painted and naming it.
  await page.evaluate(() => {
    const m = window.__mock;
    return Promise.all([1, 2, 3].map((n) => m.frame('p1/ms1', 4, 2, [n, 0, 0, 255], { ageMs: 5 })));
  });
  const log = await page.evaluate(() => window.__mock.pulls.log);
  assert.deepEqual(log.map((p) => p.ack), [null, 0, 1, 2]);
  assert.deepEqual(log.map((p) => p.painted), [0, 1, 2, 3], 'each pull after painting the previous batch');
  assert.ok(log.every((p) => p.waiting === 0), 'no pull while another one waits');
  assert.equal(await page.evaluate(() => window.__mock.pulls.maxWaiting), 1, 'never more than one pull out');
  assert.deepEqual((await pixel('p1/ms1', 0, 0)).slice(0, 3), [3, 0, 0], 'the last batch is what shows');
});
