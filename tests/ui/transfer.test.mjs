// The file-transfer UI (ui/transfer.js) in headless Chromium, against the same stand-in for
// Tauri's IPC bridge as ui.test.mjs (harness.mjs). Files
// dropped on a person's tile are sent to that person (`send_file`); the panel shows progress,
// completion and errors both ways; Cancel calls `cancel_transfer`.
//
// Run: npm ci && npm test   (CHROMIUM=/path overrides /usr/bin/chromium)

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { joinCallIn, suiteBrowser, newTestPage } from './harness.mjs';

const suite = suiteBrowser();
let page;


const calls = (cmd) => page.evaluate((c) => window.__mock.calls.filter((x) => x.cmd === c), cmd);
const emit = (event, payload) => page.evaluate(([e, p]) => window.__mock.emit(e, p), [event, payload]);
const text = (sel) => page.locator(sel).innerText();

const joinCall = (responses) => joinCallIn(page, suite.baseUrl, responses);

async function shot(name) {
  if (process.env.UI_SCREENSHOTS) {
    await fs.mkdir(process.env.UI_SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: path.join(process.env.UI_SCREENSHOTS, `${name}.png`) });
  }
}

// Tauri reports drag positions in physical pixels: run at a device pixel ratio of 2 so the
// conversion is exercised.
const scale = 2;

beforeEach(async () => {
  page = await newTestPage(suite, { viewport: { width: 1200, height: 780 }, deviceScaleFactor: scale });
});

afterEach(async () => {
  await page.context().close();
});

/** A call with two other people; returns the centre of a tile in physical pixels. */
async function callWithPeople(responses = {}) {
  await joinCall({ send_file: { value: 'tid-1' }, ...responses });
  await emit('room-event', { type: 'user-connected', id: 'peer-1', name: 'Person 1' });
  await emit('room-event', { type: 'user-connected', id: 'peer-2', name: 'Person 2' });
  await page.waitForSelector('.tile[data-id="peer-2"]');
}

async function centre(selector) {
  const b = await page.locator(selector).boundingBox();
  return { x: (b.x + b.width / 2) * scale, y: (b.y + b.height / 2) * scale };
}

const row = (tid) => page.locator(`#transfer-list .transfer[data-tid="${tid}"]`);

test('dropping files on a tile sends each to that person; elsewhere it only explains', async () => {
  await callWithPeople();
  assert.ok(await page.locator('#transfers').isHidden(), 'no panel before any transfer');

  await emit('tauri://drag-drop', { paths: ['/home/ann/a.bin', '/home/ann/notes.txt'], position: await centre('.tile[data-id="peer-2"]') });
  await page.waitForFunction(() => window.__mock.calls.filter((c) => c.cmd === 'send_file').length === 2);
  const sent = await calls('send_file');
  assert.deepEqual(sent.map((c) => c.args), [
    { peerId: 'peer-2', path: '/home/ann/a.bin' },
    { peerId: 'peer-2', path: '/home/ann/notes.txt' },
  ]);
  await page.waitForSelector('#transfers:not([hidden])');
  assert.match(await row('tid-1').locator('.transfer-title').innerText(), /a\.bin to Person 2/);

  // Our own tile and empty space are no drop targets.
  await emit('tauri://drag-drop', { paths: ['/x/y.bin'], position: await centre('.tile.self') });
  await emit('tauri://drag-drop', { paths: ['/x/y.bin'], position: { x: 2, y: 2 } });
  assert.equal((await calls('send_file')).length, 2);
  assert.match(await text('#transfer-note'), /Drop files on a person's tile/);

  // Dragging over a tile highlights it; leaving clears it.
  await emit('tauri://drag-over', { position: await centre('.tile[data-id="peer-1"]') });
  assert.equal(await page.locator('.tile.drop-target').getAttribute('data-id'), 'peer-1');
  await emit('tauri://drag-leave', null);
  assert.equal(await page.locator('.tile.drop-target').count(), 0);
});

test('a send that cannot start says why', async () => {
  await callWithPeople({ send_file: { error: { kind: 'file', message: 'cannot send /x/dir: not a regular file' } } });
  await emit('tauri://drag-drop', { paths: ['/x/dir'], position: await centre('.tile[data-id="peer-1"]') });
  await page.waitForFunction(() => document.getElementById('transfer-note').textContent.includes('not a regular file'));
  assert.match(await text('#transfer-note'), /Could not send dir/);
  assert.equal(await page.locator('#transfer-list .transfer').count(), 0);
});

test('progress bars move both ways, then done shows where the file went', async () => {
  await callWithPeople();
  const MB = 1_000_000;
  await emit('file-progress', { tid: 's1', peerId: 'peer-1', direction: 'send', name: 'movie.mp4', size: 10 * MB, bytes: 0 });
  await emit('file-progress', { tid: 'r1', peerId: 'peer-2', direction: 'receive', name: 'photo.jpg', size: 4 * MB, bytes: MB });
  assert.match(await row('s1').locator('.transfer-title').innerText(), /movie\.mp4 to Person 1/);
  assert.match(await row('r1').locator('.transfer-title').innerText(), /photo\.jpg from Person 2/);
  assert.equal(await row('s1').locator('progress').evaluate((p) => p.value), 0);
  assert.equal(await row('r1').locator('progress').evaluate((p) => p.value), 25);
  assert.match(await row('r1').locator('.transfer-status').innerText(), /1\.0 MB of 4\.0 MB/);

  await emit('file-progress', { tid: 's1', peerId: 'peer-1', direction: 'send', name: 'movie.mp4', size: 10 * MB, bytes: 5 * MB });
  assert.equal(await row('s1').locator('progress').evaluate((p) => p.value), 50);
  // An older report arriving late never moves the bar back.
  await emit('file-progress', { tid: 's1', peerId: 'peer-1', direction: 'send', name: 'movie.mp4', size: 10 * MB, bytes: 2 * MB });
  assert.equal(await row('s1').locator('progress').evaluate((p) => p.value), 50);

  await emit('file-done', { tid: 's1', peerId: 'peer-1', direction: 'send', name: 'movie.mp4' });
  await emit('file-done', { tid: 'r1', peerId: 'peer-2', direction: 'receive', name: 'photo (1).jpg', path: '/home/ann/Downloads/photo (1).jpg' });
  for (const tid of ['s1', 'r1']) {
    assert.equal(await row(tid).getAttribute('data-state'), 'done');
    assert.equal(await row(tid).locator('progress').evaluate((p) => p.value), 100);
    assert.ok(await row(tid).locator('.transfer-cancel').isHidden(), 'no Cancel once done');
  }
  assert.match(await row('s1').locator('.transfer-status').innerText(), /Sent 10\.0 MB/);
  assert.match(await row('r1').locator('.transfer-status').innerText(), /Saved to \/home\/ann\/Downloads\/photo \(1\)\.jpg/);
  assert.match(await row('r1').locator('.transfer-title').innerText(), /photo \(1\)\.jpg from Person 2/);
  await emit('file-progress', { tid: 's2', peerId: 'peer-2', direction: 'send', name: 'slides.pdf', size: 3 * MB, bytes: 2 * MB });
  await emit('tauri://drag-over', { position: await centre('.tile[data-id="peer-1"]') });
  await shot('transfers');
  // Progress after done is ignored.
  await emit('file-progress', { tid: 'r1', peerId: 'peer-2', direction: 'receive', name: 'photo.jpg', size: 4 * MB, bytes: MB });
  assert.equal(await row('r1').getAttribute('data-state'), 'done');
  assert.equal(await row('r1').locator('progress').evaluate((p) => p.value), 100);
});

test('errors are shown on the row; names are text, never HTML', async () => {
  await callWithPeople();
  await emit('file-progress', { tid: 'r2', peerId: 'peer-1', direction: 'receive', name: '<img src=x onerror=alert(1)>.txt', size: 100, bytes: 40 });
  await emit('file-error', { tid: 'r2', peerId: 'peer-1', direction: 'receive', message: 'the connection to the peer closed before the transfer finished' });
  assert.equal(await row('r2').getAttribute('data-state'), 'error');
  assert.match(await row('r2').locator('.transfer-status').innerText(), /Failed: the connection to the peer closed/);
  assert.ok(await row('r2').locator('.transfer-cancel').isHidden());
  assert.equal(await row('r2').locator('img').count(), 0);
  assert.match(await row('r2').locator('.transfer-title').innerText(), /<img src=x/);
  // An error for a transfer never seen still gets a row; malformed events are ignored.
  await emit('file-error', { tid: 'x9', peerId: 'peer-2', direction: 'send', message: 'cancelled' });
  assert.match(await row('x9').locator('.transfer-status').innerText(), /Failed: cancelled/);
  await emit('file-progress', { peerId: 'peer-2' });
  await emit('file-done', null);
  assert.equal(await page.locator('#transfer-list .transfer').count(), 2);
});

test('Cancel asks Rust to cancel that transfer', async () => {
  await callWithPeople();
  await emit('file-progress', { tid: 'r3', peerId: 'peer-2', direction: 'receive', name: 'big.iso', size: 1000, bytes: 10 });
  await row('r3').locator('.transfer-cancel').click();
  await page.waitForFunction(() => window.__mock.calls.some((c) => c.cmd === 'cancel_transfer'));
  assert.deepEqual((await calls('cancel_transfer')).map((c) => c.args), [{ tid: 'r3' }]);
  await emit('file-error', { tid: 'r3', peerId: 'peer-2', direction: 'receive', message: 'cancelled' });
  assert.equal(await row('r3').getAttribute('data-state'), 'error');
  assert.ok(await row('r3').locator('.transfer-cancel').isHidden());
});
