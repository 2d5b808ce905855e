// The desktop app's UI (ui/) in headless Chromium, with a stand-in for Tauri's IPC bridge.
//
// The stand-in (harness.mjs) records every invoke, answers from per-test canned responses,
// and lets the test fire Tauri events (`window.__mock.emit(name, payload)`).
//
// Run: npm ci && npm test   (CHROMIUM=/path overrides /usr/bin/chromium; UI_SCREENSHOTS=dir
// saves a picture of each main state).

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { defaultResponses, joinCallIn, joinInfo, openAppIn, suiteBrowser, newTestPage } from './harness.mjs';

const suite = suiteBrowser();
let page;

const openApp = (responses = {}) => openAppIn(page, suite.baseUrl, { ...defaultResponses(), ...responses });

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

beforeEach(async () => {
  page = await newTestPage(suite);
});

afterEach(async () => {
  await page.context().close();
});

// ------------------------------------------------------------------ start screen

test('start screen: settings, a random room id and device pickers', async () => {
  await openApp();
  assert.equal(await page.inputValue('#name'), 'Ann');
  assert.match(await page.inputValue('#room'), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  const first = await page.inputValue('#room');
  await page.click('#new-room');
  assert.notEqual(await page.inputValue('#room'), first);
  // Default device preselected, both listed.
  assert.equal(await page.inputValue('#camera'), 'cam1');
  assert.equal(await page.locator('#camera option').count(), 2);
  assert.equal(await page.inputValue('#microphone'), 'mic0');
  // Hosting is the default; the URL field waits until chosen, offering the recent server.
  assert.equal(await page.isChecked('#server-host'), true);
  assert.equal(await page.isDisabled('#server-url'), true);
  assert.equal(await page.inputValue('#server-url'), 'http://10.0.0.2:3001');
  await shot('start');
});

test('start screen: no devices found', async () => {
  await openApp({
    list_devices: { value: { cameras: [], microphones: [], cameraError: null, microphoneError: 'ALSA: no card' } },
  });
  assert.equal(await page.isDisabled('#camera'), true);
  assert.equal(await text('#camera'), 'No camera found');
  assert.equal(await page.isDisabled('#microphone'), true);
  assert.match(await text('#microphone'), /No microphone found \(ALSA: no card\)/);
  // Joining without devices sends nulls: the app starts muted with the camera off.
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  const [join] = await calls('join');
  assert.equal(join.args.req.camera, null);
  assert.equal(join.args.req.microphone, null);
});

test('start screen: form checks before anything is sent', async () => {
  await openApp();
  await page.fill('#name', '  ');
  await page.click('#join-button');
  assert.equal(await text('#start-error'), 'Enter your display name.');
  await page.fill('#name', 'Ann');
  await page.fill('#room', '');
  await page.click('#join-button');
  assert.match(await text('#start-error'), /room id/);
  await page.fill('#room', 'r1');
  await page.check('#server-url-choice');
  for (const bad of ['192.168.1.5:3001', 'ftp://x.y', 'not a url']) {
    await page.fill('#server-url', bad);
    await page.click('#join-button');
    assert.match(await text('#start-error'), /not (a valid|an http\(s\)) address/, bad);
  }
  await page.fill('#server-url', '');
  await page.click('#join-button');
  assert.match(await text('#start-error'), /Enter the address/);
  assert.equal((await calls('join')).length, 0);
});

test('join sends the form and opens the call; settings are saved', async () => {
  await openApp({ join: { value: joinInfo({ hosting: false, shareUrls: [] }) } });
  await page.fill('#name', 'Ann Lee');
  await page.fill('#room', 'room-1');
  await page.check('#server-url-choice');
  await page.fill('#server-url', 'http://192.168.1.9:3001');
  await page.fill('#password', 'pw');
  await page.selectOption('#camera', 'cam0');
  await page.selectOption('#resolution', '1080p');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  const [join] = await calls('join');
  assert.deepEqual(join.args, {
    req: {
      name: 'Ann Lee',
      roomId: 'room-1',
      server: { kind: 'url', url: 'http://192.168.1.9:3001' },
      password: 'pw',
      camera: 'cam0',
      microphone: 'mic0',
      resolution: '1080p',
      network: { iceServers: [], iceUsername: '', iceCredential: '', relayOnly: false, hostTurn: false },
      sound: { echoCancellation: true, noiseSuppression: true, autoGain: true },
      speaker: 'spk0',
    },
  });
  assert.equal(await text('#room-title'), 'Room room-1');
  assert.equal(await page.locator('.tile').count(), 1);
  assert.equal(await text('.tile .avatar'), 'AL');
  assert.match(await text('.tile .tile-name'), /Ann Lee \(you\)/);
  const [save] = await calls('save_settings');
  assert.equal(save.args.settings.name, 'Ann Lee');
  assert.equal(save.args.settings.serverMode, 'url');
  assert.deepEqual(save.args.settings.lastServers, ['http://192.168.1.9:3001', 'http://10.0.0.2:3001']);
  assert.equal(save.args.settings.resolution, '1080p');
  assert.equal(save.args.settings.camera, 'cam0');
});

test('network settings: checked, sent with join, saved, and shown open next time', async () => {
  await openApp({ join: { value: joinInfo() } });
  assert.equal(await page.getAttribute('#network-settings', 'open'), null, 'closed when nothing is set');
  await page.click('#network-settings summary');
  await page.fill('#ice-servers', 'http://not-turn\n');
  await page.click('#join-button');
  assert.match(await text('#start-error'), /not a STUN or TURN address/);
  await page.fill('#ice-servers', ' turn:turn.example.org:3478 \n\nstun:stun.example.org');
  await page.click('#join-button');
  assert.match(await text('#start-error'), /needs a user name and a password/);
  assert.equal((await calls('join')).length, 0);
  await page.fill('#ice-username', 'ann');
  await page.fill('#ice-credential', 's3cret');
  await page.check('#relay-only');
  await page.check('#host-turn');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  const [join] = await calls('join');
  const want = {
    iceServers: ['turn:turn.example.org:3478', 'stun:stun.example.org'],
    iceUsername: 'ann',
    iceCredential: 's3cret',
    relayOnly: true,
    hostTurn: true,
  };
  assert.deepEqual(join.args.req.network, want);
  const [save] = await calls('save_settings');
  assert.deepEqual(save.args.settings.network, want);
  // Next start: the saved choices are back and the section is open.
  const ctx = page.context();
  await page.close();
  page = await ctx.newPage();
  await openApp({ get_settings: { value: { name: 'Ann', lastServers: [], network: { ...want, hostTurn: false } } } });
  assert.notEqual(await page.getAttribute('#network-settings', 'open'), null);
  assert.equal(await page.inputValue('#ice-servers'), 'turn:turn.example.org:3478\nstun:stun.example.org');
  assert.equal(await page.isChecked('#relay-only'), true);
  assert.equal(await page.isChecked('#host-turn'), false);
});

test('speaker picker: default chosen, Test plays on the chosen one, the choice joins and is saved', async () => {
  await openApp({
    join: { value: joinInfo() },
    test_speaker: { value: { device: 'USB Headset', peakDbfs: -14 } },
    get_settings: { value: { name: 'Ann', lastServers: [], speaker: 'spk1' } },
  });
  assert.equal(await page.inputValue('#speaker'), 'spk1', 'the saved speaker');
  await page.click('#test-speaker');
  const [t] = await calls('test_speaker');
  assert.deepEqual(t.args, { speaker: 'spk1' });
  await page.waitForSelector('text=Test sound played on USB Headset');
  await page.selectOption('#speaker', 'synthetic:silent');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  const [join] = await calls('join');
  assert.equal(join.args.req.speaker, 'synthetic:silent');
  const [save] = await calls('save_settings');
  assert.equal(save.args.settings.speaker, 'synthetic:silent');
});

test('a speaker that cannot play says so on the start screen', async () => {
  await openApp({ test_speaker: { error: { kind: 'media', message: 'Cannot play on this speaker: busy' } } });
  await page.click('#test-speaker');
  await page.waitForSelector('#device-note:not([hidden])');
  assert.match(await text('#device-note'), /Cannot play on this speaker: busy/);
  assert.equal(await page.isDisabled('#test-speaker'), false, 'the button comes back');
});

test('microphone processing: on by default, switches sent with join and saved', async () => {
  await openApp({
    join: { value: joinInfo() },
    get_settings: { value: { name: 'Ann', lastServers: [], sound: { autoGain: false } } },
  });
  assert.equal(await page.isChecked('#echo-cancellation'), true);
  assert.equal(await page.isChecked('#noise-suppression'), true);
  assert.equal(await page.isChecked('#auto-gain'), false, 'the saved choice');
  await page.uncheck('#noise-suppression');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  const [join] = await calls('join');
  const want = { echoCancellation: true, noiseSuppression: false, autoGain: false };
  assert.deepEqual(join.args.req.sound, want);
  const [save] = await calls('save_settings');
  assert.deepEqual(save.args.settings.sound, want);
});

test('the saved resolution is preselected; an unknown one leaves 720p', async () => {
  await openApp({ get_settings: { value: { name: 'Ann', lastServers: [], resolution: '360p' } } });
  assert.equal(await page.inputValue('#resolution'), '360p');
  const ctx = page.context();
  await page.close();
  page = await ctx.newPage();
  await openApp({ get_settings: { value: { name: 'Ann', lastServers: [], resolution: '8k' } } });
  assert.equal(await page.inputValue('#resolution'), '720p');
});

test('hosting shows the addresses others can use', async () => {
  await joinCall();
  const [join] = await calls('join');
  assert.deepEqual(join.args.req.server, { kind: 'host' });
  assert.match(await text('#share-info'), /http:\/\/192\.168\.1\.5:4000/);
});

// ------------------------------------------------------------------ errors

const REASONS = {
  'wrong-password': 'Wrong password for this room.',
  'password-required': 'This room is protected: enter its password.',
  'invalid-room': 'That room id is not valid.',
  'room-full': 'The server refused to let you join (room-full).',
};

for (const [reason, message] of Object.entries(REASONS)) {
  test(`join-error ${reason} is explained on the start screen`, async () => {
    await openApp({ join: { error: { kind: 'join', reason, message: `refused: ${reason}` } } });
    await page.click('#join-button');
    await page.waitForSelector('#start-error:not([hidden])');
    assert.equal(await text('#start-error'), message);
    assert.equal(await page.isHidden('#call-screen'), true);
    assert.equal(await page.isEnabled('#join-button'), true);
  });
}

test('connection errors: unreachable, timeout, bad URL from Rust', async () => {
  const cases = [
    [{ kind: 'unreachable', message: 'connection refused' }, /Cannot reach the server.*connection refused/],
    [{ kind: 'timeout', message: 'no answer within 8 s' }, /did not answer in time/],
    [{ kind: 'badUrl', message: '"x": relative URL' }, /not valid/],
    [{ kind: 'host', message: 'could not host on this computer: address in use' }, /address in use/],
  ];
  for (const [error, re] of cases) {
    await openApp({ join: { error } });
    await page.click('#join-button');
    await page.waitForSelector('#start-error:not([hidden])');
    assert.match(await text('#start-error'), re);
  }
});

test('a join-error during the call (re-join after reconnect) ends it with the reason', async () => {
  await joinCall();
  await emit('room-event', { type: 'join-error', reason: 'wrong-password', roomId: 'room-1' });
  await page.waitForSelector('#start-screen:not([hidden])');
  assert.equal(await text('#start-error'), REASONS['wrong-password']);
  assert.equal((await calls('leave')).length, 1);
});

// ------------------------------------------------------------------ grid

for (let n = 1; n <= 8; n++) {
  test(`grid layout with ${n} participant(s)`, async () => {
    await joinCall();
    for (let i = 1; i < n; i++) {
      await emit('room-event', { type: 'user-connected', id: `peer-${i}`, name: `Person ${i}` });
    }
    const tiles = page.locator('#grid .tile');
    assert.equal(await tiles.count(), n);
    const grid = await page.locator('#grid').boundingBox();
    const boxes = [];
    for (let i = 0; i < n; i++) boxes.push(await tiles.nth(i).boundingBox());
    // The shape ui/layout.js picks for this stage (the biggest 16:9 tiles), not a fixed one.
    const { cols, rows } = await page.evaluate(async ([w, h, count]) => {
      const m = await import('./layout.js');
      return m.bestGrid(w, h, count, m.DEFAULT_ASPECT, m.TILE_GAP);
    }, [grid.width, grid.height, n]);
    // Same size, inside the grid, no overlaps, the expected number of columns and rows.
    for (const b of boxes) {
      assert.ok(Math.abs(b.width - boxes[0].width) < 1 && Math.abs(b.height - boxes[0].height) < 1, 'equal tiles');
      assert.ok(Math.abs(b.width / b.height - 16 / 9) < 0.02, '16:9 tiles');
      assert.ok(b.x >= grid.x - 0.5 && b.y >= grid.y - 0.5, 'inside grid (top-left)');
      assert.ok(b.x + b.width <= grid.x + grid.width + 0.5 && b.y + b.height <= grid.y + grid.height + 0.5, 'inside grid');
    }
    for (let i = 0; i < n; i++) {
      for (let j = i + 1; j < n; j++) {
        const a = boxes[i];
        const b = boxes[j];
        const overlap = a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5 && a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5;
        assert.ok(!overlap, `tiles ${i} and ${j} overlap`);
      }
    }
    // Rows by their top edge; a shorter last row is centred, so count columns per row.
    const perRow = new Map();
    for (const b of boxes) perRow.set(Math.round(b.y), (perRow.get(Math.round(b.y)) || 0) + 1);
    assert.equal(perRow.size, rows, 'rows');
    assert.equal(Math.max(...perRow.values()), Math.min(cols, n), 'columns');
    assert.equal(await page.getAttribute('#grid', 'data-cols'), String(cols));
    // The grid is used: tiles take at least a third of its area together.
    const area = boxes.reduce((s, b) => s + b.width * b.height, 0);
    assert.ok(area > grid.width * grid.height / 3, 'tiles fill the grid');
    // Names and initials on every tile.
    for (let i = 1; i < n; i++) {
      const tile = page.locator(`.tile[data-id="peer-${i}"]`);
      assert.equal(await tile.locator('.tile-name').innerText(), `Person ${i}`);
      assert.equal(await tile.locator('.avatar').innerText(), `P${i}`);
    }
    if (n === 4 || n === 8) await shot(`grid-${n}`);
  });
}

test('people leave: user-disconnected removes the tile, peer-disconnect dims it', async () => {
  await joinCall();
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  await emit('room-event', { type: 'user-connected', id: 'p2', name: 'Cy' });
  await emit('peer-disconnect', { id: 'p2' });
  assert.match(await page.getAttribute('.tile[data-id="p2"]', 'class'), /lost/);
  await emit('peer-connect', { id: 'p2' });
  assert.doesNotMatch(await page.getAttribute('.tile[data-id="p2"]', 'class'), /lost/);
  await emit('room-event', { type: 'user-disconnected', id: 'p1' });
  assert.equal(await page.locator('.tile').count(), 2);
  assert.equal(await page.locator('.tile[data-id="p1"]').count(), 0);
  assert.match(await text('#chat-log'), /Bob joined[\s\S]*Bob left/);
  // A peer the server never announced still gets a tile.
  await emit('peer-connect', { id: 'zz99xx' });
  assert.equal(await text('.tile[data-id="zz99xx"] .tile-name'), 'Guest zz99');
});

// ------------------------------------------------------------------ media state

test('badges follow media-state', async () => {
  await joinCall();
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  await emit('room-event', { type: 'user-connected', id: 'p2', name: 'Cy' });
  const badges = (id) => page.locator(`.tile[data-id="${id}"] [data-badge]`).evaluateAll((els) => els.map((e) => e.dataset.badge));
  assert.deepEqual(await badges('p1'), []);
  await emit('media-state', { id: 'p1', mic: false, cam: true, roomId: 'room-1' });
  assert.deepEqual(await badges('p1'), ['muted']);
  assert.deepEqual(await badges('p2'), []);
  await emit('media-state', { id: 'p1', mic: false, cam: false, roomId: 'room-1' });
  assert.deepEqual(await badges('p1'), ['muted', 'cam-off']);
  await emit('media-state', { id: 'p1', mic: true, cam: false });
  assert.deepEqual(await badges('p1'), ['cam-off']);
  // Another room's state and our own echo are ignored.
  await emit('media-state', { id: 'p2', mic: false, cam: false, roomId: 'elsewhere' });
  assert.deepEqual(await badges('p2'), []);
  await emit('media-state', { id: 'self-id', mic: false, cam: false, roomId: 'room-1' });
  assert.deepEqual(await badges('self-id'), []);
  await shot('badges');
});

test('M and V keys and the buttons toggle our state and tell Rust', async () => {
  await joinCall();
  const badges = () => page.locator('.tile[data-id="self-id"] [data-badge]').evaluateAll((els) => els.map((e) => e.dataset.badge));
  await page.keyboard.press('m');
  assert.deepEqual((await calls('set_media_state')).map((c) => c.args), [{ mic: false, cam: true }]);
  assert.deepEqual(await badges(), ['muted']);
  // The state is the button's pressed state (crossed icon on red), the tooltip the next action.
  assert.equal(await page.getAttribute('#toggle-mic', 'aria-pressed'), 'false');
  assert.equal(await page.getAttribute('#toggle-mic', 'data-tooltip'), 'Unmute (M)');
  await page.keyboard.press('v');
  assert.deepEqual((await calls('set_media_state')).at(-1).args, { mic: false, cam: false });
  assert.deepEqual(await badges(), ['muted', 'cam-off']);
  await page.click('#toggle-mic');
  assert.deepEqual((await calls('set_media_state')).at(-1).args, { mic: true, cam: false });
  assert.equal(await page.getAttribute('#toggle-cam', 'aria-pressed'), 'false');
  // Typing in the chat box is not a shortcut.
  await page.click('#chat-input');
  await page.keyboard.type('mv');
  assert.equal((await calls('set_media_state')).length, 3);
});

test('a failed media-state change is rolled back and shown', async () => {
  await joinCall({ set_media_state: { error: { kind: 'notJoined', message: 'not in a room' } } });
  await page.keyboard.press('m');
  await page.waitForSelector('#call-error:not([hidden])');
  assert.match(await text('#call-error'), /not in a room/);
  assert.equal(await page.getAttribute('#toggle-mic', 'aria-pressed'), 'true');
  assert.equal(await page.getAttribute('#toggle-mic', 'data-tooltip'), 'Mute (M)');
});

// ------------------------------------------------------------------ chat

test('chat: send echoes locally, receive shows name and text, never HTML', async () => {
  await joinCall({ send_chat: { value: { name: 'Ann', text: 'hello all', at: 1700000000000 } } });
  await page.fill('#chat-input', '  hello all ');
  await page.press('#chat-input', 'Enter');
  await page.waitForSelector('#chat-log li.mine');
  assert.deepEqual((await calls('send_chat')).map((c) => c.args), [{ text: 'hello all' }]);
  assert.equal(await page.inputValue('#chat-input'), '');
  assert.equal(await text('#chat-log li.mine .who'), 'Ann');
  assert.equal(await text('#chat-log li.mine .text'), 'hello all');

  await emit('chat', { from: 'p1', name: 'Bob', text: '<img src=x onerror="window.pwned=1">hi', at: 1700000001000 });
  const last = page.locator('#chat-log li').last();
  assert.equal(await last.locator('.who').innerText(), 'Bob');
  assert.equal(await last.locator('.text').innerText(), '<img src=x onerror="window.pwned=1">hi');
  assert.equal(await page.evaluate(() => window.pwned), undefined);
  assert.equal(await page.locator('#chat-log img').count(), 0);
  // Empty input sends nothing.
  await page.click('#chat-send');
  assert.equal((await calls('send_chat')).length, 1);
  await shot('chat');
});

test('chat: a failed send keeps the text and says why', async () => {
  await joinCall({ send_chat: { error: { kind: 'connection', message: 'socket closed' } } });
  await page.fill('#chat-input', 'lost?');
  await page.click('#chat-send');
  await page.waitForSelector('#call-error:not([hidden])');
  assert.match(await text('#call-error'), /Message not sent: socket closed/);
  assert.equal(await page.inputValue('#chat-input'), 'lost?');
});

test('leave returns to the start screen', async () => {
  await joinCall();
  await page.click('#leave');
  await page.waitForSelector('#start-screen:not([hidden])');
  assert.equal((await calls('leave')).length, 1);
  assert.equal(await page.isHidden('#start-error'), true);
  // Events after leaving change nothing and do not throw.
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Late' });
  await emit('chat', { name: 'Late', text: 'hi' });
});

// ------------------------------------------------------------------ video tiles and screen share

/** Delivers one binary frame of one colour (handed over 5 ms ago) as the reply to the page's
 * pull; `rgba` null: a malformed frame (unknown version). Resolves once it is painted. */
const sendFrame = (key, w, h, rgba) => page.evaluate(
  ([key, w, h, rgba]) =>
    window.__mock.frame(key, w, h, rgba || [0, 0, 0, 0], { version: rgba === null ? 9 : 1, ageMs: 5 }),
  [key, w, h, rgba],
);

const pixel = (key) => page.evaluate((key) => {
  const c = document.querySelector(`canvas.video[data-key="${key}"]`);
  return c ? [c.width, c.height, ...c.getContext('2d').getImageData(0, 0, 1, 1).data] : null;
}, key);

test('video: pulled binary frames paint the tile canvas; sizes reported; camera off shows initials', async () => {
  await joinCall({ join: { value: joinInfo({ previewKey: 'self/camera' }) } });
  assert.equal((await calls('video_formats')).length, 1);
  // The page pulls frames from the start, holding nothing yet.
  assert.deepEqual((await calls('next_frames')).map((c) => c.args), [{ ack: null }]);
  // Our own preview canvas exists at once.
  assert.equal(await page.locator('.tile[data-id="self-id"] canvas.video[data-key="self/camera"]').count(), 1);

  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  await emit('stream-added', { key: 'p1/ms1', peerId: 'p1', kind: 'camera', name: 'Bob' });
  assert.equal(await page.locator('.tile[data-id="p1"] canvas.video[data-key="p1/ms1"]').count(), 1);
  // The displayed size of both video tiles went to Rust.
  const sizes = await calls('set_tile_size');
  for (const key of ['self/camera', 'p1/ms1']) {
    const c = sizes.find((x) => x.args.key === key);
    assert.ok(c && c.args.width > 10 && c.args.height > 10, `size of ${key}`);
  }

  // Replies are painted in the order they come, the later over the earlier.
  await sendFrame('p1/ms1', 4, 2, [255, 0, 0, 255]);
  assert.equal(await page.getAttribute('canvas[data-key="p1/ms1"]', 'data-painted'), '1');
  await sendFrame('p1/ms1', 4, 2, [0, 255, 0, 255]);
  assert.equal(await page.getAttribute('canvas[data-key="p1/ms1"]', 'data-painted'), '2');
  assert.deepEqual(await pixel('p1/ms1'), [4, 2, 0, 255, 0, 255]);
  await sendFrame('self/camera', 6, 4, [0, 0, 255, 255]);
  assert.deepEqual(await pixel('self/camera'), [6, 4, 0, 0, 255, 255]);
  // Malformed frames and unknown keys are dropped.
  await sendFrame('p1/ms1', 4, 2, null);
  await sendFrame('nobody/x', 4, 2, [1, 2, 3, 255]);
  assert.equal(await page.getAttribute('canvas[data-key="p1/ms1"]', 'data-painted'), '2');
  const stats = await page.evaluate(() => window.__rtcioVideo);
  assert.equal(stats.painted, 3);
  assert.equal(stats.dropped, 2);
  assert.deepEqual(stats.perKey, { 'p1/ms1': 2, 'self/camera': 1 });
  assert.ok(stats.ipcMs >= 15 && stats.ipcMs < 5000, `IPC time from the header: ${stats.ipcMs}`);
  // Every batch is acknowledged once, by the next pull, painted or dropped (Rust replies to
  // one pull at a time).
  assert.deepEqual((await calls('next_frames')).map((c) => c.args.ack), [null, 0, 1, 2, 3, 4]);
  await shot('video-tiles');

  // Camera off: the initials again; on: the canvas is back.
  await emit('media-state', { id: 'p1', mic: true, cam: false });
  assert.equal(await page.locator('.tile[data-id="p1"] canvas.video').count(), 0);
  assert.equal(await page.locator('.tile[data-id="p1"] .avatar').innerText(), 'B');
  await emit('media-state', { id: 'p1', mic: true, cam: true });
  assert.equal(await page.locator('.tile[data-id="p1"] canvas.video').count(), 1);
  await page.keyboard.press('v');
  assert.equal(await page.locator('.tile[data-id="self-id"] canvas.video').count(), 0);

  // The stream ends: no canvas, the tile stays.
  await emit('stream-removed', { key: 'p1/ms1', peerId: 'p1', kind: 'camera' });
  assert.equal(await page.locator('.tile[data-id="p1"] canvas.video').count(), 0);
  assert.equal(await page.locator('.tile[data-id="p1"]').count(), 1);
});

test('screen share: remote share tiles come and go; our share button picks a monitor and stops', async () => {
  await joinCall({
    list_monitors: { value: [
      { id: 'DP-1', name: 'DP-1 (1920x1080)', isDefault: false },
      { id: 'HDMI-1', name: 'HDMI-1 (1280x720)', isDefault: true },
    ] },
  });
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  await emit('stream-added', { key: 'p1/sc', peerId: 'p1', kind: 'screen', name: 'Bob' });
  const tile = page.locator('.tile.share[data-share="p1/sc"]');
  assert.equal(await tile.count(), 1);
  assert.equal(await tile.locator('.tile-name').innerText(), "Bob's screen");
  assert.equal(await tile.locator('canvas.video[data-key="p1/sc"]').count(), 1);
  assert.equal(await page.getAttribute('#grid', 'data-count'), '3');
  await shot('share-tile');
  // The stop-share echo (or track removal) becomes stream-removed.
  await emit('stream-removed', { key: 'p1/sc', peerId: 'p1', kind: 'screen' });
  assert.equal(await page.locator('.tile.share').count(), 0);
  assert.equal(await page.getAttribute('#grid', 'data-count'), '2');
  // A person leaving takes their share with them.
  await emit('stream-added', { key: 'p1/sc2', peerId: 'p1', kind: 'screen', name: 'Bob' });
  assert.equal(await page.locator('.tile.share').count(), 1);
  await emit('room-event', { type: 'user-disconnected', id: 'p1' });
  assert.equal(await page.locator('.tile.share').count(), 0);
  assert.equal(await page.locator('.tile').count(), 1);

  // Ours: the first click shows the monitors (primary chosen), the second shares it.
  assert.equal(await page.getAttribute('#toggle-share', 'aria-pressed'), 'false');
  await page.click('#toggle-share');
  assert.equal(await page.isVisible('#monitor'), true);
  assert.equal(await page.locator('#monitor option').count(), 2);
  assert.equal(await page.inputValue('#monitor'), 'HDMI-1');
  await page.selectOption('#monitor', 'DP-1');
  await page.click('#toggle-share');
  await page.waitForFunction(() => document.getElementById('toggle-share').getAttribute('aria-pressed') === 'true');
  const started = await calls('start_screen_share');
  assert.deepEqual(started.map((c) => c.args), [{ monitor: 'DP-1' }]);
  assert.equal(await page.isVisible('#monitor'), false);
  await page.click('#toggle-share');
  await page.waitForFunction(() => document.getElementById('toggle-share').getAttribute('aria-pressed') === 'false');
  assert.equal((await calls('stop_screen_share')).length, 1);
});

test('screen share: errors are shown, not thrown', async () => {
  await joinCall({ list_monitors: { error: { kind: 'media', message: 'Wayland without X' } } });
  await page.click('#toggle-share');
  await page.waitForSelector('#call-error:not([hidden])');
  assert.match(await text('#call-error'), /Screen sharing is not available: Wayland without X/);
  assert.equal((await calls('start_screen_share')).length, 0);
});

test('devices: synthetic sources are offered but never chosen by themselves; media errors shown', async () => {
  await openApp({
    list_devices: { value: {
      cameras: [{ id: 'synthetic:test-pattern', name: 'Test pattern', isDefault: false, synthetic: true }],
      microphones: [
        { id: 'mic0', name: 'Built-in Mic', isDefault: true, synthetic: false },
        { id: 'synthetic:tone', name: 'Tone', isDefault: false, synthetic: true },
      ],
      cameraError: null,
      microphoneError: null,
    } },
    join: { value: joinInfo({ cam: false, mediaErrors: ['The camera is in use by another program.'] }) },
  });
  assert.equal(await page.isDisabled('#camera'), false);
  assert.equal(await page.locator('#camera option').count(), 2);
  assert.equal(await page.inputValue('#camera'), '');
  assert.equal(await text('#camera option:first-child'), 'No camera found');
  assert.equal(await page.inputValue('#microphone'), 'mic0');
  await page.selectOption('#microphone', 'synthetic:tone');
  await page.fill('#room', 'room-1');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  const [join] = await calls('join');
  assert.equal(join.args.req.camera, null);
  assert.equal(join.args.req.microphone, 'synthetic:tone');
  assert.match(await text('#call-error'), /in use by another program/);
  // With a test pattern chosen on purpose, it is what is asked for.
  await page.click('#leave');
  await page.selectOption('#camera', 'synthetic:test-pattern');
  await page.click('#join-button');
  await page.waitForSelector('#call-screen:not([hidden])');
  assert.equal((await calls('join'))[1].args.req.camera, 'synthetic:test-pattern');
});

test('video: a stream announced while joining is kept, and its name replaces a placeholder', async () => {
  await openApp({ join: { value: joinInfo() } });
  // Hold the join answer until the stream event has arrived.
  await page.evaluate(() => {
    const orig = window.__TAURI_INTERNALS__.invoke;
    window.__TAURI_INTERNALS__.invoke = (cmd, args) => {
      if (cmd !== 'join') return orig(cmd, args);
      return new Promise((resolve) => { window.__releaseJoin = () => resolve(orig(cmd, args)); });
    };
  });
  await page.fill('#room', 'room-1');
  await page.click('#join-button');
  await page.waitForFunction(() => typeof window.__releaseJoin === 'function');
  await emit('stream-added', { key: 'p7/m', peerId: 'p7', kind: 'camera', name: 'Dee' });
  await page.evaluate(() => window.__releaseJoin());
  await page.waitForSelector('#call-screen:not([hidden])');
  assert.equal(await text('.tile[data-id="p7"] .tile-name'), 'Dee');
  assert.equal(await page.locator('.tile[data-id="p7"] canvas.video[data-key="p7/m"]').count(), 1);
  // A peer first seen through peer-connect gets its real name from its camera announcement.
  await emit('peer-connect', { id: 'q1q1q1' });
  assert.equal(await text('.tile[data-id="q1q1q1"] .tile-name'), 'Guest q1q1');
  await emit('stream-added', { key: 'q1q1q1/m', peerId: 'q1q1q1', kind: 'camera', name: 'Quinn' });
  assert.equal(await text('.tile[data-id="q1q1q1"] .tile-name'), 'Quinn');
});
