// The call screen of issue 18 in headless Chromium with the stand-in bridge (harness.mjs):
// the layout applied at several window sizes (aspect kept, no black bars), pin / unpin, the
// screen share as the stage, the self view mirrored, keyboard shortcuts and keyboard access,
// accessible names, the reconnect banner, the alone state with its copy buttons, the chat's
// unread count, the speaking highlight and the leave toast. The pure layout functions are
// tested in layout.test.mjs.
//
// Run: npm ci && node --test call.test.mjs   (CHROMIUM=/path overrides /usr/bin/chromium)

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { defaultResponses, joinCallIn, joinInfo, openAppIn, suiteBrowser, newTestPage } from './harness.mjs';

const suite = suiteBrowser();
let page;

const calls = (cmd) => page.evaluate((c) => window.__mock.calls.filter((x) => x.cmd === c), cmd);
const emit = (event, payload) => page.evaluate(([e, p]) => window.__mock.emit(e, p), [event, payload]);
const text = (sel) => page.locator(sel).innerText();
const attr = (sel, name) => page.getAttribute(sel, name);
/** Two animation frames: the layout scheduled by a frame's new aspect has run. */
const settle = () => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

/** Joins with our own camera tile (`self/camera`) unless `extra` says otherwise. */
const joinCall = (responses = {}) => joinCallIn(page, suite.baseUrl, {
  join: { value: joinInfo({ previewKey: 'self/camera' }) },
  ...responses,
});

async function newPage(viewport = { width: 1200, height: 780 }) {
  page = await newTestPage(suite, { viewport });
}

beforeEach(async () => {
  await newPage();
});

afterEach(async () => {
  await page.context().close();
});

/** Delivers a one-colour frame of w×h as the reply to the page's pull (painted when this resolves). */
const sendFrame = (key, w, h) =>
  page.evaluate(([key, w, h]) => window.__mock.frame(key, w, h, 200), [key, w, h]);

/** A person with a camera stream `<id>/cam`. */
async function addPerson(id, name, { frame = null } = {}) {
  await emit('room-event', { type: 'user-connected', id, name });
  await emit('stream-added', { key: `${id}/cam`, peerId: id, kind: 'camera', name });
  if (frame) await sendFrame(`${id}/cam`, frame[0], frame[1]);
}

/**
 * Every tile's box, and for tiles showing video the painted picture's box: a canvas with
 * `object-fit: contain` shows its w×h bitmap as the largest box of that aspect inside it.
 */
const measure = () => page.evaluate(() => {
  const grid = document.getElementById('grid').getBoundingClientRect();
  return [...document.querySelectorAll('#grid .tile')].map((t) => {
    const r = t.getBoundingClientRect();
    const c = t.querySelector('canvas.video');
    let picture = null;
    if (c && c.width > 0 && c.dataset.painted) {
      const cr = c.getBoundingClientRect();
      const a = c.width / c.height;
      const w = Math.min(cr.width, cr.height * a);
      picture = { w, h: w / a };
    }
    return {
      tile: t.dataset.tile,
      x: r.x - grid.x, y: r.y - grid.y, w: r.width, h: r.height,
      picture,
      // clientWidth/Height: what app.js lays out with (whole pixels).
      gridW: document.getElementById('grid').clientWidth, gridH: document.getElementById('grid').clientHeight,
    };
  });
});

/** Black bars: the part of the tile the picture does not cover. */
const bars = (m) => 1 - (m.picture.w * m.picture.h) / (m.w * m.h);

function assertInsideNoOverlap(boxes, label) {
  for (const b of boxes) {
    assert.ok(b.x >= -0.5 && b.y >= -0.5 && b.x + b.w <= b.gridW + 0.5 && b.y + b.h <= b.gridH + 0.5, `${label}: ${b.tile} inside the stage ${JSON.stringify(boxes)}`);
  }
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i];
      const b = boxes[j];
      const overlap = a.x < b.x + b.w - 0.5 && b.x < a.x + a.w - 0.5 && a.y < b.y + b.h - 0.5 && b.y < a.y + a.h - 0.5;
      assert.ok(!overlap, `${label}: ${a.tile} and ${b.tile} overlap`);
    }
  }
}

// ------------------------------------------------------------------ layout

for (const viewport of [{ width: 1280, height: 800 }, { width: 1000, height: 700 }, { width: 760, height: 560 }, { width: 1600, height: 900 }]) {
  test(`layout at ${viewport.width}×${viewport.height}: 1–9 video tiles, the best grid, aspect kept, no black bars`, async () => {
    await page.context().close();
    await newPage(viewport);
    await joinCall();
    await sendFrame('self/camera', 64, 36);
    for (let n = 1; n <= 9; n++) {
      if (n > 1) await addPerson(`peer-${n}`, `Person ${n}`, { frame: [64, 36] });
      await settle();
      const boxes = await measure();
      const label = `${n} tiles at ${viewport.width}×${viewport.height}`;
      assert.equal(boxes.length, n, label);
      const { gridW, gridH } = boxes[0];
      // The shape ui/layout.js finds best for this stage.
      const best = await page.evaluate(async ([w, h, count]) => {
        const m = await import('./layout.js');
        return m.bestGrid(w, h, count, m.DEFAULT_ASPECT, m.TILE_GAP);
      }, [gridW, gridH, n]);
      assert.equal(await attr('#grid', 'data-cols'), String(best.cols), `${label}: columns`);
      assert.equal(await attr('#grid', 'data-rows'), String(best.rows), `${label}: rows`);
      assert.equal(new Set(boxes.map((b) => Math.round(b.y))).size, best.rows, `${label}: rows on screen`);
      assertInsideNoOverlap(boxes, label);
      for (const b of boxes) {
        assert.ok(Math.abs(b.w - best.tileW) <= 1.5 && Math.abs(b.h - best.tileH) <= 1.5, `${label}: ${b.tile} is ${b.w}×${b.h}, not ${best.tileW}×${best.tileH}`);
        assert.ok(Math.abs(b.w / b.h - 16 / 9) < 0.02, `${label}: ${b.tile} keeps 16:9 (${b.w}×${b.h})`);
        assert.ok(b.picture, `${label}: ${b.tile} shows video`);
        assert.ok(bars(b) <= 0.05, `${label}: ${b.tile} has ${(bars(b) * 100).toFixed(1)} % black bars`);
      }
      // The stage is used: the tiles' own side touches the stage's edges (within the gap).
      const usedW = Math.max(...boxes.map((b) => b.x + b.w)) - Math.min(...boxes.map((b) => b.x));
      const usedH = Math.max(...boxes.map((b) => b.y + b.h)) - Math.min(...boxes.map((b) => b.y));
      assert.ok(usedW >= gridW - 12 || usedH >= gridH - 12, `${label}: tiles fill the stage one way (${usedW}×${usedH} of ${gridW}×${gridH})`);
    }
  });
}

test('layout: a 4:3 camera gets a 4:3 tile, the grid follows the most common aspect; resizes re-lay out', async () => {
  await joinCall();
  await sendFrame('self/camera', 64, 36);
  await addPerson('p1', 'Bob', { frame: [64, 36] });
  await addPerson('p2', 'Cy', { frame: [48, 36] });
  await settle();
  let boxes = await measure();
  const cy = boxes.find((b) => b.tile === 'p:p2');
  assert.ok(Math.abs(cy.w / cy.h - 4 / 3) < 0.02, `4:3 tile: ${cy.w}×${cy.h}`);
  for (const b of boxes) assert.ok(bars(b) <= 0.05, `${b.tile}: ${(bars(b) * 100).toFixed(1)} % bars`);
  // Everyone switches to 4:3: so do the cells.
  await sendFrame('self/camera', 48, 36);
  await sendFrame('p1/cam', 48, 36);
  await settle();
  boxes = await measure();
  for (const b of boxes) {
    assert.ok(Math.abs(b.w / b.h - 4 / 3) < 0.02, `${b.tile} 4:3`);
    assert.ok(bars(b) <= 0.05);
  }
  // Rust is told the new sizes.
  const sizes = (await calls('set_tile_size')).filter((c) => c.args.key === 'p2/cam');
  const last = sizes.at(-1).args;
  assert.ok(Math.abs(last.width / last.height - 4 / 3) < 0.02, `reported ${last.width}×${last.height}`);
  // A smaller window: laid out again for the new stage, still inside it.
  const before = await attr('#grid', 'data-laid-out');
  await page.setViewportSize({ width: 800, height: 600 });
  await page.waitForFunction((b) => document.getElementById('grid').dataset.laidOut !== b, before);
  boxes = await measure();
  assertInsideNoOverlap(boxes, 'after resize');
  assert.equal(boxes[0].gridW, Number((await attr('#grid', 'data-laid-out')).split('x')[0]));
});

// ------------------------------------------------------------------ pin, share stage, mirror

test('pin: click a tile or its pin button to spotlight it; again or Escape to unpin', async () => {
  await joinCall();
  await addPerson('p1', 'Bob', { frame: [64, 36] });
  await addPerson('p2', 'Cy', { frame: [64, 36] });
  await addPerson('p3', 'Dee', { frame: [64, 36] });
  assert.equal(await attr('#grid', 'data-layout'), 'grid');
  await page.click('.tile[data-id="p2"]');
  assert.equal(await attr('#grid', 'data-layout'), 'spotlight');
  assert.equal(await attr('#grid', 'data-stage'), 'p:p2');
  assert.equal(await attr('.tile[data-id="p2"] .pin', 'aria-pressed'), 'true');
  let boxes = await measure();
  const main = boxes.find((b) => b.tile === 'p:p2');
  for (const b of boxes.filter((x) => x !== main)) {
    assert.ok(b.w * b.h * 4 < main.w * main.h, `${b.tile} is a small strip tile`);
  }
  assert.ok(Math.abs(main.w / main.h - 16 / 9) < 0.02);
  assertInsideNoOverlap(boxes, 'spotlight');
  // The pinned tile is reported big to Rust, so its frames come in at that size.
  const big = (await calls('set_tile_size')).filter((c) => c.args.key === 'p2/cam').at(-1).args;
  assert.ok(big.width >= main.w - 2, `pinned size reported: ${big.width}`);
  // Clicking another tile moves the pin; clicking the pinned one unpins.
  await page.click('.tile[data-id="p3"]');
  assert.equal(await attr('#grid', 'data-stage'), 'p:p3');
  await page.click('.tile[data-id="p3"]');
  assert.equal(await attr('#grid', 'data-layout'), 'grid');
  // By keyboard: the pin button (Enter), then Escape.
  await page.focus('.tile[data-id="p1"] .pin');
  await page.keyboard.press('Enter');
  assert.equal(await attr('#grid', 'data-stage'), 'p:p1');
  await page.keyboard.press('Escape');
  assert.equal(await attr('#grid', 'data-layout'), 'grid');
  // The pinned person leaving: back to the grid.
  await page.click('.tile[data-id="p1"]');
  await emit('room-event', { type: 'user-disconnected', id: 'p1' });
  assert.equal(await attr('#grid', 'data-layout'), 'grid');
  assert.equal(await page.locator('.tile.pinned').count(), 0);
});

test('share as the stage: a remote share takes it with the cameras in a strip; Escape, own share, removal', async () => {
  await joinCall({ list_monitors: { value: [{ id: 'DP-1', name: 'DP-1', isDefault: true }] } });
  await sendFrame('self/camera', 64, 36);
  await addPerson('p1', 'Bob', { frame: [64, 36] });
  await addPerson('p2', 'Cy', { frame: [64, 36] });
  await emit('stream-added', { key: 'p1/sc', peerId: 'p1', kind: 'screen', name: 'Bob' });
  assert.equal(await attr('#grid', 'data-stage'), 's:p1/sc');
  await sendFrame('p1/sc', 160, 100); // a 16:10 screen
  await settle();
  let boxes = await measure();
  const share = boxes.find((b) => b.tile === 's:p1/sc');
  assert.ok(Math.abs(share.w / share.h - 1.6) < 0.02, `the stage takes the screen's 16:10 (${share.w}×${share.h})`);
  assert.ok(bars(share) <= 0.05);
  for (const b of boxes.filter((x) => x !== share)) {
    assert.ok(b.w * b.h * 4 < share.w * share.h, `${b.tile} in the strip`);
    assert.ok(bars(b) <= 0.05, `${b.tile}: no bars in the strip`);
  }
  assertInsideNoOverlap(boxes, 'share stage');
  // Screens are never mirrored; our camera is (a real camera was chosen).
  const transform = (sel) => page.locator(sel).evaluate((e) => getComputedStyle(e).transform);
  assert.equal(await transform('canvas[data-key="p1/sc"]'), 'none');
  assert.equal(await transform('canvas[data-key="p1/cam"]'), 'none');
  assert.equal(await transform('canvas[data-key="self/camera"]'), 'matrix(-1, 0, 0, 1, 0, 0)');
  // Escape sends it back to the grid; it stays there.
  await page.keyboard.press('Escape');
  assert.equal(await attr('#grid', 'data-layout'), 'grid');
  assert.equal(await page.locator('.tile.share').count(), 1);
  await emit('media-state', { id: 'p2', mic: false, cam: true });
  assert.equal(await attr('#grid', 'data-layout'), 'grid');
  // Our own share: a tile that says so on the stage, with a Stop button.
  await page.keyboard.press('s');
  await page.waitForSelector('.tile.share.own');
  assert.deepEqual((await calls('start_screen_share')).map((c) => c.args), [{ monitor: 'DP-1' }]);
  assert.equal(await attr('#grid', 'data-stage'), 's:self/screen');
  assert.match(await text('.tile.share.own'), /You are sharing your screen/);
  // A new remote share wins over our own.
  await emit('stream-added', { key: 'p2/sc', peerId: 'p2', kind: 'screen', name: 'Cy' });
  assert.equal(await attr('#grid', 'data-stage'), 's:p2/sc');
  await emit('stream-removed', { key: 'p2/sc', peerId: 'p2', kind: 'screen' });
  assert.equal(await attr('#grid', 'data-stage'), 's:self/screen');
  await page.click('.tile.share.own .stop-share');
  await page.waitForSelector('.tile.share.own', { state: 'detached' });
  assert.equal((await calls('stop_screen_share')).length, 1);
  assert.equal(await attr('#toggle-share', 'aria-pressed'), 'false');
  // Bob's first share was sent back to the grid: it stays there.
  assert.equal(await attr('#grid', 'data-layout'), 'grid');
  await emit('stream-removed', { key: 'p1/sc', peerId: 'p1', kind: 'screen' });
  assert.equal(await page.locator('.tile.share').count(), 0);
});

test('self view: a test pattern is not mirrored, on the start screen nor in the call', async () => {
  await openAppIn(page, suite.baseUrl, {
    ...defaultResponses(),
    list_devices: { value: {
      cameras: [
        { id: 'cam0', name: 'USB Camera', isDefault: true },
        { id: 'synthetic:test-pattern', name: 'Test pattern', isDefault: false, synthetic: true },
      ],
      microphones: [],
    } },
    join: { value: joinInfo({ previewKey: 'self/camera' }) },
  });
  await page.waitForFunction(() => document.getElementById('preview-canvas').classList.contains('mirror'));
  await page.selectOption('#camera', 'synthetic:test-pattern');
  await page.waitForFunction(() => !document.getElementById('preview-canvas').classList.contains('mirror'));
  await page.fill('#room', 'room-1');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  assert.doesNotMatch(await attr('.tile.self', 'class'), /mirror/);
});

// ------------------------------------------------------------------ controls and keyboard

test('controls: accessible names, pressed states, tooltips with the shortcut', async () => {
  await joinCall();
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  const byName = async (name, id) => {
    const b = page.getByRole('button', { name, exact: true });
    assert.equal(await b.count(), 1, `one button named "${name}"`);
    assert.equal(await b.getAttribute('id'), id, `"${name}" is #${id}`);
  };
  await byName('Microphone', 'toggle-mic');
  await byName('Camera', 'toggle-cam');
  await byName('Share screen', 'toggle-share');
  await byName('Chat', 'toggle-chat');
  await byName('Leave call', 'leave');
  await byName('Copy invite link', 'copy-link');
  await byName('Close chat', 'chat-close');
  assert.equal(await page.getByRole('button', { name: 'Pin Bob', exact: true }).count(), 1);
  // Every button on the call screen has a name (the icons alone would give none).
  const snapshot = await page.locator('#call-screen').ariaSnapshot();
  assert.doesNotMatch(snapshot, /- button(:|\s*$)/m, snapshot);
  assert.match(snapshot, /button "Microphone" \[pressed\]/);
  assert.match(snapshot, /button "Share screen"(?! \[pressed\])/);
  const tips = {
    'toggle-mic': ['Mute (M)', 'M'],
    'toggle-cam': ['Turn camera off (V)', 'V'],
    'toggle-share': ['Share your screen (S)', 'S'],
    'toggle-chat': ['Hide chat (C)', 'C'],
  };
  for (const [id, [tip, key]] of Object.entries(tips)) {
    assert.equal(await attr(`#${id}`, 'data-tooltip'), tip);
    assert.equal(await attr(`#${id}`, 'aria-keyshortcuts'), key);
  }
  // The tooltip shows on hover: drawn from data-tooltip.
  await page.hover('#toggle-mic');
  await page.waitForFunction(() => getComputedStyle(document.getElementById('toggle-mic'), '::after').opacity === '1');
  assert.equal(await page.locator('#toggle-mic').evaluate((e) => getComputedStyle(e, '::after').content), '"Mute (M)"');
  // Off = the crossed icon on red, and the tooltip names the way back.
  await page.click('#toggle-mic');
  assert.equal(await attr('#toggle-mic', 'aria-pressed'), 'false');
  assert.equal(await attr('#toggle-mic', 'data-tooltip'), 'Unmute (M)');
  assert.equal(await page.locator('#toggle-mic .icon-mic-off').isVisible(), true);
  assert.equal(await page.locator('#toggle-mic .icon-mic').isVisible(), false);
  await page.mouse.move(1, 1);
  await page.waitForFunction(() => getComputedStyle(document.getElementById('toggle-mic')).backgroundColor === 'rgb(220, 38, 38)');
  // Our tile shows the muted badge by its name, with a name of its own.
  assert.equal(await page.getByRole('img', { name: 'Muted' }).count(), 1);
});

test('keyboard: Tab reaches every control in order, Enter and Space press them', async () => {
  await joinCall();
  const order = [];
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  for (let i = 0; i < 30 && order.length < 40; i++) {
    await page.keyboard.press('Tab');
    order.push(await page.evaluate(() => document.activeElement.id || document.activeElement.className));
  }
  const at = (id) => order.indexOf(id);
  for (const id of ['toggle-mic', 'toggle-cam', 'toggle-share', 'leave', 'toggle-chat', 'copy-link', 'chat-input']) {
    assert.ok(at(id) >= 0, `${id} reachable by Tab: ${order.join(', ')}`);
  }
  assert.ok(at('toggle-mic') < at('toggle-cam') && at('toggle-cam') < at('toggle-share') && at('toggle-share') < at('leave') && at('leave') < at('toggle-chat'), order.join(', '));
  await page.focus('#toggle-mic');
  await page.keyboard.press('Enter');
  assert.equal(await attr('#toggle-mic', 'aria-pressed'), 'false');
  await page.focus('#toggle-cam');
  await page.keyboard.press('Space');
  assert.equal(await attr('#toggle-cam', 'aria-pressed'), 'false');
  assert.deepEqual((await calls('set_media_state')).map((c) => c.args), [{ mic: false, cam: true }, { mic: false, cam: false }]);
  // Focus stays on the button after the press (the tile re-render does not steal it).
  assert.equal(await page.evaluate(() => document.activeElement.id), 'toggle-cam');
});

test('shortcuts: M V S C and Escape; not while typing, not with Ctrl/Alt/Meta', async () => {
  await joinCall({ list_monitors: { value: [{ id: 'DP-1', name: 'DP-1', isDefault: true }] } });
  await page.keyboard.press('m');
  await page.keyboard.press('v');
  assert.deepEqual((await calls('set_media_state')).map((c) => c.args), [{ mic: false, cam: true }, { mic: false, cam: false }]);
  await page.keyboard.press('s');
  await page.waitForFunction(() => document.getElementById('toggle-share').getAttribute('aria-pressed') === 'true');
  await page.keyboard.press('S'); // Shift+s: the same key
  await page.waitForFunction(() => document.getElementById('toggle-share').getAttribute('aria-pressed') === 'false');
  assert.equal((await calls('stop_screen_share')).length, 1);
  // C closes the chat panel and opens it again with the cursor in the message box.
  assert.equal(await page.isVisible('#chat'), true);
  await page.keyboard.press('c');
  assert.equal(await page.isVisible('#chat'), false);
  assert.equal(await attr('#toggle-chat', 'aria-pressed'), 'false');
  await page.keyboard.press('c');
  assert.equal(await page.isVisible('#chat'), true);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'chat-input');
  // Typing there is text, not shortcuts.
  await page.keyboard.type('mvsc');
  assert.equal(await page.inputValue('#chat-input'), 'mvsc');
  assert.equal((await calls('set_media_state')).length, 2);
  assert.equal(await page.isVisible('#chat'), true);
  // Modifiers leave the keys to the system (Ctrl+C copies, Ctrl+M etc.).
  await page.locator('#chat-input').blur();
  for (const combo of ['Control+m', 'Alt+v', 'Meta+c', 'Control+s']) await page.keyboard.press(combo);
  assert.equal((await calls('set_media_state')).length, 2);
  assert.equal(await page.isVisible('#chat'), true);
  assert.equal((await calls('start_screen_share')).length, 1);
});

test('monitor picker: S opens it above the share button, Escape closes it', async () => {
  await joinCall({ list_monitors: { value: [
    { id: 'DP-1', name: 'DP-1', isDefault: false },
    { id: 'HDMI-1', name: 'HDMI-1', isDefault: true },
  ] } });
  await page.keyboard.press('s');
  await page.waitForSelector('#monitor:not([hidden])');
  assert.equal(await attr('#toggle-share', 'data-tooltip'), 'Share the chosen screen (S)');
  const picker = await page.locator('#monitor').boundingBox();
  const button = await page.locator('#toggle-share').boundingBox();
  assert.ok(picker.y + picker.height <= button.y, 'the picker sits above the button');
  await page.keyboard.press('Escape');
  assert.equal(await page.isHidden('#monitor'), true);
  assert.equal(await attr('#toggle-share', 'data-tooltip'), 'Share your screen (S)');
  assert.equal((await calls('start_screen_share')).length, 0);
});

// ------------------------------------------------------------------ state

test('banner: signaling reconnecting, then back (with a toast)', async () => {
  await joinCall();
  assert.equal(await page.isHidden('#banner'), true);
  await emit('room-event', { type: 'connection', state: 'reconnecting', id: null });
  assert.equal(await page.isVisible('#banner'), true);
  assert.equal(await attr('#banner', 'data-kind'), 'signaling');
  assert.match(await text('#banner'), /Connection to the server lost — reconnecting…/);
  assert.equal(await attr('#banner', 'role'), 'status');
  await emit('room-event', { type: 'connection', state: 'connected', id: 'new-id' });
  assert.equal(await page.isHidden('#banner'), true);
  assert.match(await text('#toasts'), /Reconnected/);
  // The planned connection-state event without a peer means the same.
  await emit('connection-state', { state: 'reconnecting' });
  assert.equal(await attr('#banner', 'data-kind'), 'signaling');
  await emit('connection-state', { state: 'connected' });
  assert.equal(await page.isHidden('#banner'), true);
});

test('banner: a peer connection restarting names the person; leaving is no restart', async () => {
  await joinCall();
  await addPerson('p1', 'Bob');
  await addPerson('p2', 'Cy');
  await emit('peer-disconnect', { id: 'p1' });
  // The tile dims at once and says so; the banner waits out the grace period.
  assert.match(await attr('.tile[data-id="p1"]', 'class'), /lost/);
  assert.equal(await page.isVisible('.tile[data-id="p1"] .tile-status'), true);
  assert.equal(await page.isHidden('#banner'), true);
  await page.waitForSelector('#banner:not([hidden])');
  assert.equal(await text('#banner-text'), 'Reconnecting to Bob…');
  assert.equal(await attr('#banner', 'data-kind'), 'peer');
  await emit('connection-state', { state: 'reconnecting', peerId: 'p2' });
  assert.equal(await text('#banner-text'), 'Reconnecting to Bob and Cy…');
  await emit('peer-connect', { id: 'p1' });
  assert.equal(await text('#banner-text'), 'Reconnecting to Cy…');
  await emit('connection-state', { state: 'connected', peerId: 'p2' });
  assert.equal(await page.isHidden('#banner'), true);
  // A person who leaves: their connection drops, then the server says they left. No banner.
  await emit('peer-disconnect', { id: 'p2' });
  await emit('room-event', { type: 'user-disconnected', id: 'p2' });
  await page.waitForTimeout(1800);
  assert.equal(await page.isHidden('#banner'), true);
});

test('alone: the invite links with copy buttons; gone when someone joins, back when they leave', async () => {
  await page.addInitScript(() => {
    window.__copied = [];
    Object.defineProperty(navigator, 'clipboard', {
      configurable: true,
      value: { writeText: async (t) => { window.__copied.push(t); } },
    });
  });
  await joinCall({ join: { value: joinInfo({ shareUrls: ['http://192.168.1.5:4000', 'http://10.8.0.3:4000'] }) } });
  assert.equal(await page.isVisible('#alone'), true);
  assert.match(await text('#alone'), /You are alone in the room/);
  const links = await page.locator('.invite-link').allInnerTexts();
  assert.deepEqual(links, ['http://192.168.1.5:4000/#room=room-1', 'http://10.8.0.3:4000/#room=room-1']);
  await page.getByRole('button', { name: 'Copy http://10.8.0.3:4000/#room=room-1' }).click();
  await page.waitForSelector('.toast');
  assert.deepEqual(await page.evaluate(() => window.__copied), ['http://10.8.0.3:4000/#room=room-1']);
  assert.match(await text('#toasts'), /Link copied/);
  // The header's copy button: the first link.
  await page.click('#copy-link');
  assert.deepEqual(await page.evaluate(() => window.__copied.at(-1)), 'http://192.168.1.5:4000/#room=room-1');
  // Someone's here: no longer alone (the tile takes the space).
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  assert.equal(await page.isHidden('#alone'), true);
  await emit('room-event', { type: 'user-disconnected', id: 'p1' });
  assert.equal(await page.isVisible('#alone'), true);
});

test('alone: copying falls back to the selection way, and says so when nothing works', async () => {
  await page.addInitScript(() => {
    window.__execCopy = [];
    window.__execWorks = true;
    Object.defineProperty(navigator, 'clipboard', {
      configurable: true,
      value: { writeText: async () => { throw new DOMException('denied', 'NotAllowedError'); } },
    });
    document.execCommand = (cmd) => {
      window.__execCopy.push([cmd, document.activeElement && document.activeElement.value]);
      return window.__execWorks;
    };
  });
  // Joined by URL: the link is the server typed in.
  await openAppIn(page, suite.baseUrl, { ...defaultResponses(), join: { value: joinInfo({ hosting: false, shareUrls: [] }) } });
  await page.fill('#room', 'room-1');
  await page.check('#server-url-choice');
  await page.fill('#server-url', 'https://rooms.example.org');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  assert.deepEqual(await page.locator('.invite-link').allInnerTexts(), ['https://rooms.example.org/#room=room-1']);
  await page.click('.copy-invite');
  await page.waitForSelector('.toast');
  assert.deepEqual(await page.evaluate(() => window.__execCopy), [['copy', 'https://rooms.example.org/#room=room-1']]);
  assert.match(await text('#toasts'), /Link copied/);
  await page.evaluate(() => { window.__execWorks = false; });
  await page.click('.copy-invite');
  await page.waitForFunction(() => document.getElementById('toasts').textContent.includes('Could not copy'));
  assert.match(await text('#toasts'), /Could not copy — the link is https:\/\/rooms\.example\.org\/#room=room-1/);
});

test('an invite link pasted into the room field fills the server and the room', async () => {
  await openAppIn(page, suite.baseUrl, defaultResponses());
  await page.fill('#room', 'http://192.168.1.5:4000/?room=team%20sync');
  assert.equal(await page.inputValue('#room'), 'team sync');
  assert.equal(await page.isChecked('#server-url-choice'), true);
  assert.equal(await page.inputValue('#server-url'), 'http://192.168.1.5:4000');
  await page.fill('#server-url', 'https://rooms.example.org/rtc/?room=abc');
  assert.equal(await page.inputValue('#room'), 'abc');
  assert.equal(await page.inputValue('#server-url'), 'https://rooms.example.org/rtc/');
  // The guest page's form (what the app hands out now).
  await page.fill('#room', 'http://192.168.1.5:4000/#room=team%20sync');
  assert.equal(await page.inputValue('#room'), 'team sync');
  assert.equal(await page.inputValue('#server-url'), 'http://192.168.1.5:4000');
  // The pure helpers both ways.
  const round = await page.evaluate(async () => {
    const m = await import('./app.js');
    return [
      m.inviteLink('http://h:1', 'a b/c&d'), m.parseInvite(m.inviteLink('http://h:1', 'a b/c&d')), m.parseInvite('room-1'), m.parseInvite('ftp://h/?room=x'),
      m.parseInvite('http://h:1/?room=old%20form'), m.parseInvite('https://h/#room=r1&token=t'), m.parseInvite('http://h:1/#other=1'),
    ];
  });
  assert.deepEqual(round, [
    'http://h:1/#room=a%20b%2Fc%26d', { server: 'http://h:1', room: 'a b/c&d' }, null, null,
    { server: 'http://h:1', room: 'old form' }, { server: 'https://h', room: 'r1' }, null,
  ]);
  // A plain room id is left alone.
  await page.fill('#room', 'plain-room');
  assert.equal(await page.inputValue('#room'), 'plain-room');
});

test('chat: unread count on the chat button while the panel is closed', async () => {
  await joinCall();
  await page.click('#toggle-chat');
  assert.equal(await page.isHidden('#chat'), true);
  assert.equal(await page.isHidden('#chat-unread'), true);
  await emit('chat', { from: 'p1', name: 'Bob', text: 'one', at: Date.now() });
  await emit('chat', { from: 'p1', name: 'Bob', text: 'two', at: Date.now() });
  // "joined" / "left" lines are not messages.
  await emit('room-event', { type: 'user-connected', id: 'p9', name: 'Zed' });
  assert.equal(await page.isVisible('#chat-unread'), true);
  assert.equal(await attr('#chat-unread', 'data-count'), '2');
  assert.equal(await page.locator('#chat-unread span:not(.sr-only)').innerText(), '2');
  // Its text is the button's description for screen readers.
  assert.equal(await attr('#toggle-chat', 'aria-describedby'), 'chat-unread');
  assert.match(await page.locator('#chat-unread').textContent(), /^2 unread$/);
  await page.click('#toggle-chat');
  assert.equal(await page.isVisible('#chat'), true);
  assert.equal(await page.isHidden('#chat-unread'), true);
  assert.equal(await page.locator('#chat-log li:not(.system)').count(), 2);
  // With the panel open nothing counts; the panel's own close button closes it.
  await emit('chat', { from: 'p1', name: 'Bob', text: 'three', at: Date.now() });
  assert.equal(await page.isHidden('#chat-unread'), true);
  await page.click('#chat-close');
  assert.equal(await page.isHidden('#chat'), true);
  // The stage grew into the panel's space.
  const gridW = await page.locator('#grid').evaluate((e) => e.clientWidth);
  assert.ok(gridW > 1000, `stage ${gridW} px wide without the panel`);
});

test('speaking: mic-level lights our tile, the planned audio-level anyone; muted never; silence ends it', async () => {
  await joinCall();
  await addPerson('p1', 'Bob');
  await addPerson('p2', 'Cy');
  await emit('media-state', { id: 'p2', mic: false, cam: true });
  await emit('mic-level', { rms: 0.2, peak: 0.5 });
  assert.match(await attr('.tile.self', 'class'), /speaking/);
  await emit('audio-level', { peerId: 'p1', dbfs: -12 });
  await emit('audio-level', { peerId: 'p2', dbfs: -10 });
  assert.match(await attr('.tile[data-id="p1"]', 'class'), /speaking/);
  assert.match(await attr('.tile[data-id="p1"]', 'class'), /loudest/);
  assert.doesNotMatch(await attr('.tile[data-id="p2"]', 'class'), /speaking/);
  // Quiet: below the threshold at once; no level at all for a while: off.
  await emit('mic-level', { rms: 0.001, peak: 0.002 });
  assert.doesNotMatch(await attr('.tile.self', 'class'), /speaking/);
  await page.waitForFunction(() => !document.querySelector('.tile[data-id="p1"]').classList.contains('speaking'));
  // Muting ourselves: our level no longer counts.
  await page.keyboard.press('m');
  await emit('mic-level', { rms: 0.3, peak: 0.5 });
  assert.doesNotMatch(await attr('.tile.self', 'class'), /speaking/);
  // The ring is drawn: a coloured border over the tile (after its 120 ms fade-in).
  await emit('audio-level', { peerId: 'p1', dbfs: -12 });
  await page.waitForFunction(() => getComputedStyle(document.querySelector('.tile[data-id="p1"]'), '::after').borderTopColor === 'rgb(74, 222, 128)');
});

test('devices: the call menu switches camera, microphone and speaker without leaving', async () => {
  await joinCall({
    switch_camera: { value: { device: 'cam0', label: 'camera' } },
    switch_microphone: { value: { device: 'synthetic:tone', label: 'tone' } },
    switch_speaker: { value: { speaker: 'spk1', device: 'USB Headset' } },
  });
  assert.equal(await attr('#device-menu-btn', 'aria-expanded'), 'false');
  assert.equal(await page.getByRole('button', { name: 'Devices', exact: true }).count(), 1);
  await page.click('#device-menu-btn');
  assert.equal(await attr('#device-menu-btn', 'aria-expanded'), 'true');
  // The lists come from list_devices; the devices the call started with are selected.
  await page.waitForFunction(() => document.getElementById('call-camera').options.length === 2);
  assert.equal(await page.inputValue('#call-camera'), 'cam1');
  assert.equal(await page.inputValue('#call-speaker'), 'spk0');
  await page.selectOption('#call-camera', 'cam0');
  await page.selectOption('#call-speaker', 'spk1');
  await page.waitForFunction(() => window.__mock.calls.some((c) => c.cmd === 'switch_speaker'));
  assert.deepEqual((await calls('switch_camera')).map((c) => c.args), [{ device: 'cam0' }]);
  assert.deepEqual((await calls('switch_speaker')).map((c) => c.args), [{ speaker: 'spk1' }]);
  // Still in the call; nothing was left or re-joined.
  assert.equal(await page.isVisible('#call-screen'), true);
  assert.equal((await calls('leave')).length, 0);
  assert.equal((await calls('join')).length, 1);
  // A switch Rust refuses: the message, and the picker goes back to the device in use.
  await page.evaluate(() => { window.__mock.responses.switch_camera = { error: { kind: 'media', message: 'Cannot switch to this camera: busy' } }; });
  await page.selectOption('#call-camera', 'cam1');
  await page.waitForFunction(() => !document.getElementById('call-error').hidden);
  assert.match(await text('#call-error'), /Could not switch the camera: Cannot switch to this camera: busy/);
  assert.equal(await page.inputValue('#call-camera'), 'cam0');
  await page.keyboard.press('Escape');
  assert.equal(await page.isHidden('#device-menu'), true);
});

test('devices: a device plugged in appears in the open menu (lists polled every 2 s)', async () => {
  await joinCall();
  await page.click('#device-menu-btn');
  await page.waitForFunction(() => document.getElementById('call-camera').options.length === 2);
  await page.evaluate(() => {
    const d = window.__mock.responses.list_devices.value;
    window.__mock.responses.list_devices = { value: { ...d, cameras: [...d.cameras, { id: 'cam9', name: 'New Webcam', isDefault: false }] } };
  });
  await page.waitForFunction(() => [...document.getElementById('call-camera').options].some((o) => o.value === 'cam9'), null, { timeout: 5000 });
  assert.equal(await page.inputValue('#call-camera'), 'cam1', 'the device in use stays selected');
  // Closed: no more polling.
  await page.click('#device-menu-btn');
  const n = (await calls('list_devices')).length;
  await page.waitForTimeout(2500);
  assert.equal((await calls('list_devices')).length, n);
});

test('devices: an unplugged camera shows a message; without a fallback it is off and the room is told', async () => {
  await joinCall();
  await emit('device-lost', {
    kind: 'camera', device: 'cam1', fallback: { id: 'cam0', name: 'Integrated Camera' },
    message: 'Your camera (USB Camera) stopped working: the device was unplugged. Switched to Integrated Camera.',
  });
  assert.match(await text('#call-error'), /USB Camera\) stopped working: the device was unplugged\. Switched to Integrated Camera/);
  assert.equal(await attr('#toggle-cam', 'aria-pressed'), 'true', 'a fallback keeps the camera on');
  assert.equal((await calls('set_media_state')).length, 0);
  await emit('device-lost', {
    kind: 'microphone', device: 'mic0', fallback: null,
    message: 'Your microphone (Built-in Mic) stopped working: no audio for 2 s. No other microphone found, so it is off; you are still in the call.',
  });
  assert.match(await text('#call-error'), /No other microphone found, so it is off; you are still in the call/);
  assert.equal(await attr('#toggle-mic', 'aria-pressed'), 'false');
  assert.equal(await attr('#toggle-cam', 'aria-pressed'), 'true');
  assert.deepEqual((await calls('set_media_state')).map((c) => c.args), [{ mic: false, cam: true }]);
  assert.equal(await page.isVisible('#call-screen'), true);
});

test('leave: no question, a toast on the start screen; a join-error exit gives none', async () => {
  await joinCall();
  await page.click('#leave');
  await page.waitForSelector('#start-screen:not([hidden])');
  assert.equal((await calls('leave')).length, 1);
  assert.equal(await text('#toasts .toast'), 'You left the call');
  assert.equal(await page.isHidden('#start-error'), true);
  // The toast goes away by itself.
  await page.waitForSelector('#toasts .toast', { state: 'detached', timeout: 8000 });
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  await emit('room-event', { type: 'join-error', reason: 'wrong-password', roomId: 'room-1' });
  await page.waitForSelector('#start-screen:not([hidden])');
  assert.equal(await page.locator('#toasts .toast').count(), 0);
  // A fresh call starts clean: no banner, no leftover tiles.
  await emit('room-event', { type: 'connection', state: 'reconnecting' });
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  assert.equal(await page.isHidden('#banner'), true);
  assert.equal(await page.locator('#grid .tile').count(), 1);
});

// ------------------------------------------------------------------ hostile names

test('names: control and bidi-override characters are removed, long names are cut', async () => {
  await joinCall();
  // A name that would render reversed (U+202E) and take the whole screen.
  await addPerson('p1', `\u202Eevil\u0007${'x'.repeat(10_000)}`, { frame: [320, 240] });
  // A name with nothing printable falls back to the placeholder.
  await addPerson('p2', '\u200b\u202a\n');
  const names = await page.$$eval('.tile:not(.self) .tile-name', (els) => els.map((e) => e.textContent));
  assert.equal(names.length, 2, `two remote tiles: ${names.map((n) => n.length)}`);
  const evil = names.find((n) => n.startsWith('evil'));
  assert.ok(evil, `the first name keeps its printable part: ${names.map((n) => n.slice(0, 10))}`);
  assert.ok(Array.from(evil).length <= 64, `cut at 64 characters, got ${evil.length}`);
  assert.doesNotMatch(evil, /[\u0000-\u001f\u202a-\u202e]/);
  assert.ok(names.includes('Guest p2'), `an empty name becomes the placeholder: ${names}`);
});
