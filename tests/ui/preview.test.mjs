// The start-screen preview (ui/preview.js) and the per-peer quality indicator (ui/quality.js)
// in headless Chromium against the stand-in IPC bridge of harness.mjs
// (shared with ui.test.mjs).
//
// Run: npm ci && node --test preview.test.mjs   (CHROMIUM=/path overrides /usr/bin/chromium).

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { openAppIn, suiteBrowser, newTestPage } from './harness.mjs';

const suite = suiteBrowser();
let page;

const DEVICES = {
  cameras: [
    { id: 'cam0', name: 'Integrated Camera', isDefault: true },
    { id: 'synthetic:test-pattern', name: 'Test pattern', isDefault: false, synthetic: true },
  ],
  microphones: [
    { id: 'mic0', name: 'Built-in Mic', isDefault: true },
    { id: 'synthetic:tone', name: 'Tone', isDefault: false, synthetic: true },
  ],
  cameraError: null,
  microphoneError: null,
};

async function openApp(responses = {}) {
  const all = {
    list_devices: { value: DEVICES },
    get_settings: { value: { name: 'Ann', lastServers: [], serverMode: 'host' } },
    start_preview: { value: { video: true, audio: true, errors: [] } },
    join: {
      value: {
        selfId: 'self-id', roomId: 'room-1', name: 'Ann', serverUrl: 'http://127.0.0.1:4000',
        hosting: true, shareUrls: [], mic: true, cam: true, joinConfirmed: true,
      },
    },
    ...responses,
  };
  await openAppIn(page, suite.baseUrl, all);
}

const calls = (cmd) => page.evaluate((c) => window.__mock.calls.filter((x) => x.cmd === c), cmd);
const emit = (event, payload) => page.evaluate(([e, p]) => window.__mock.emit(e, p), [event, payload]);

/** Delivers one binary frame of one colour as the reply to the page's pull (painted when this
 * resolves). */
const sendFrame = (key, w, h, rgba) => page.evaluate(
  ([key, w, h, rgba]) => window.__mock.frame(key, w, h, rgba),
  [key, w, h, rgba],
);

const meterWidth = () => page.evaluate(() => {
  const fill = document.getElementById('mic-meter-fill');
  return fill.getBoundingClientRect().width / fill.parentElement.getBoundingClientRect().width;
});

beforeEach(async () => {
  page = await newTestPage(suite, { viewport: { width: 1200, height: 900 } });
});

afterEach(async () => {
  await page.context().close();
});

test('preview starts with the pickers\' devices and restarts when one changes', async () => {
  await openApp();
  let starts = await calls('start_preview');
  assert.equal(starts.length, 1);
  assert.deepEqual(starts[0].args, { camera: 'cam0', microphone: 'mic0' });
  await page.selectOption('#camera', 'synthetic:test-pattern');
  await page.waitForFunction(() => window.__mock.calls.filter((c) => c.cmd === 'start_preview').length === 2);
  starts = await calls('start_preview');
  assert.deepEqual(starts[1].args, { camera: 'synthetic:test-pattern', microphone: 'mic0' });
  await page.selectOption('#microphone', 'synthetic:tone');
  await page.waitForFunction(() => window.__mock.calls.filter((c) => c.cmd === 'start_preview').length === 3);
  starts = await calls('start_preview');
  assert.deepEqual(starts[2].args, { camera: 'synthetic:test-pattern', microphone: 'synthetic:tone' });
});

test('mic meter follows mic-level events', async () => {
  await openApp();
  assert.equal(await meterWidth(), 0);
  await emit('mic-level', { rms: 0.18, peak: 0.25 }); // the tone: about -15 dBFS
  await page.waitForFunction(() => Number(document.getElementById('mic-meter').dataset.level) > 0.7);
  const loud = Number(await page.getAttribute('#mic-meter', 'data-level'));
  assert.ok(loud > 0.7 && loud < 0.8, `level ${loud}`);
  await emit('mic-level', { rms: 0.001, peak: 0.002 }); // -60 dBFS: the bottom of the scale
  assert.equal(Number(await page.getAttribute('#mic-meter', 'data-level')), 0);
  await emit('mic-level', { rms: 1, peak: 1 });
  assert.equal(Number(await page.getAttribute('#mic-meter', 'data-level')), 1);
  assert.ok(await page.locator('#mic-meter.clipping').count() === 1, 'full scale shows as clipping');
  // Garbage does not break it.
  await emit('mic-level', { rms: 'x' });
  assert.equal(Number(await page.getAttribute('#mic-meter', 'data-level')), 0);
});

test('preview canvas paints preview frames; other keys leave it alone', async () => {
  await openApp();
  assert.ok(await page.locator('#preview-canvas').isHidden());
  await sendFrame('preview/camera', 8, 4, [0, 0, 255, 255]);
  await page.waitForSelector('#preview-canvas:not([hidden])');
  const px = await page.evaluate(() => {
    const c = document.getElementById('preview-canvas');
    return [c.width, c.height, ...c.getContext('2d').getImageData(0, 0, 1, 1).data];
  });
  assert.deepEqual(px, [8, 4, 0, 0, 255, 255]);
  await sendFrame('p1/ms1', 8, 4, [255, 0, 0, 255]);
  assert.equal(await page.getAttribute('#preview-canvas', 'data-painted'), '1');
});

test('a device error from start_preview shows on the start screen', async () => {
  await openApp({
    start_preview: { value: { video: false, audio: true, errors: ['No camera found (cam0). Pick another one or join without it.'] } },
  });
  await page.waitForSelector('#preview-note:not([hidden])');
  assert.match(await page.innerText('#preview-note'), /No camera found/);
});

test('joining stops the preview view; leaving restarts the preview', async () => {
  await openApp();
  await sendFrame('preview/camera', 4, 2, [0, 255, 0, 255]);
  await page.waitForSelector('#preview-canvas:not([hidden])');
  await page.fill('#room', 'room-1');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  assert.ok(await page.locator('#preview-canvas').isHidden());
  assert.equal((await calls('start_preview')).length, 1);
  await page.click('#leave');
  await page.waitForSelector('#start-screen:not([hidden])');
  await page.waitForFunction(() => window.__mock.calls.filter((c) => c.cmd === 'start_preview').length === 2);
  const order = (await page.evaluate(() => window.__mock.calls.map((c) => c.cmd)))
    .filter((c) => c === 'leave' || c === 'start_preview');
  assert.deepEqual(order, ['start_preview', 'leave', 'start_preview'], 'restarted only after leave');
});

test('quality indicator on a peer tile follows peer-quality', async () => {
  await openApp();
  await page.fill('#room', 'room-1');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  const ind = '#grid .tile[data-id="p1"] .quality';
  assert.equal(await page.locator(ind).count(), 0, 'no indicator before a reading');
  await emit('peer-quality', { id: 'p1', rttMs: 12.4, kbpsIn: 812.3, kbpsOut: 790, lossPct: 0, level: 'good' });
  await page.waitForSelector(`${ind}.good`);
  const title = await page.getAttribute(ind, 'title');
  assert.match(title, /RTT 12 ms/);
  assert.match(title, /in 812 kbit\/s/);
  assert.match(title, /out 790 kbit\/s/);
  assert.match(title, /loss 0\.0 %/);
  assert.doesNotMatch(title, /link estimate/, 'no estimate without one');
  await emit('peer-quality', { id: 'p1', rttMs: 80, kbpsIn: 400, kbpsOut: 380, lossPct: 3, estimateKbps: 455.6, path: 'relay', level: 'fair' });
  await page.waitForSelector(`${ind}.fair`);
  const relayed = await page.getAttribute(ind, 'title');
  assert.match(relayed, /link estimate 456 kbit\/s/);
  assert.match(relayed, /via a TURN relay/);
  await emit('peer-quality', { id: 'p1', rttMs: 520, kbpsIn: 40, kbpsOut: 30, lossPct: 12.5, level: 'poor' });
  await page.waitForSelector(`${ind}.poor`);
  assert.equal(await page.locator(`${ind}.good`).count(), 0);
  // A re-rendered grid (someone joins) keeps the reading.
  await emit('room-event', { type: 'user-connected', id: 'p2', name: 'Cy' });
  await page.waitForSelector('#grid .tile[data-id="p2"]');
  assert.equal(await page.getAttribute(ind, 'data-level'), 'poor');
  // Unknown peers and malformed payloads are ignored.
  await emit('peer-quality', { id: 'nobody', level: 'good' });
  await emit('peer-quality', null);
  assert.equal(await page.locator('#grid .quality').count(), 1);
  await emit('peer-quality', { id: 'p2', rttMs: null, kbpsIn: 0, kbpsOut: 0, lossPct: 0, level: 'fair' });
  await page.waitForSelector('#grid .tile[data-id="p2"] .quality.fair');
  assert.match(await page.getAttribute('#grid .tile[data-id="p2"] .quality', 'title'), /RTT – ms/);
});
