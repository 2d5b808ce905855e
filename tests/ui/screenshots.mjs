// Pictures of the UI for docs/: the start screen, a 4-person call, a screen share on the stage,
// a pinned view and the "alone" invite, at 1280×800 in headless Chromium with the stand-in
// bridge (harness.mjs). The "cameras" are drawn in the page (a gradient and a silhouette), so
// the pictures need no devices. Not a test (no .test.mjs): run it by hand.
//
// Run: node screenshots.mjs [out dir, default ../../docs]

import path from 'node:path';
import fs from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { defaultResponses, joinCallIn, joinInfo, launchChromium, openAppIn, startStaticServer } from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(process.argv[2] || path.join(here, '../../docs'));
const VIEW = { width: 1280, height: 800 };

/** Draws a stand-in camera picture in the page and sends it on the video channel as `key`. */
async function sendPicture(page, key, w, h, scene) {
  if (!scenes.has(key)) scenes.set(key, { w, h, scene });
  await page.evaluate(([key, w, h, scene]) => {
    const c = new OffscreenCanvas(w, h);
    const g = c.getContext('2d');
    if (scene.kind === 'person') {
      const bg = g.createLinearGradient(0, 0, w, h);
      bg.addColorStop(0, `hsl(${scene.hue} 35% 38%)`);
      bg.addColorStop(1, `hsl(${(scene.hue + 40) % 360} 30% 16%)`);
      g.fillStyle = bg;
      g.fillRect(0, 0, w, h);
      // A window-ish light on the wall and a head and shoulders.
      g.fillStyle = 'rgba(255,255,255,0.07)';
      g.fillRect(w * 0.06, h * 0.1, w * 0.22, h * 0.45);
      g.fillStyle = `hsl(${(scene.hue + 180) % 360} 25% 28%)`;
      g.beginPath();
      g.ellipse(w * 0.5, h * 1.02, w * 0.26, h * 0.36, 0, 0, Math.PI * 2);
      g.fill();
      g.fillStyle = `hsl(28 ${scene.skin || 40}% ${scene.light || 62}%)`;
      g.beginPath();
      g.ellipse(w * 0.5, h * 0.45, h * 0.16, h * 0.2, 0, 0, Math.PI * 2);
      g.fill();
      g.fillStyle = `hsl(25 30% ${scene.hair || 20}%)`;
      g.beginPath();
      g.ellipse(w * 0.5, h * 0.33, h * 0.17, h * 0.1, 0, Math.PI, Math.PI * 2);
      g.fill();
    } else {
      // A shared screen: an editor-like window with lines of "code".
      g.fillStyle = '#1f2430';
      g.fillRect(0, 0, w, h);
      g.fillStyle = '#2b3142';
      g.fillRect(0, 0, w, h * 0.05);
      g.fillStyle = '#252a36';
      g.fillRect(0, h * 0.05, w * 0.18, h * 0.95);
      const colors = ['#c678dd', '#61afef', '#98c379', '#e5c07b', '#abb2bf', '#e06c75'];
      let y = h * 0.1;
      let i = 0;
      while (y < h * 0.95) {
        const indent = (i % 5) * w * 0.02;
        let x = w * 0.21 + indent;
        for (let k = 0; k < 1 + (i * 7) % 4; k++) {
          const len = w * (0.04 + ((i * 13 + k * 29) % 17) / 100);
          g.fillStyle = colors[(i + k) % colors.length];
          g.fillRect(x, y, len, h * 0.014);
          x += len + w * 0.012;
        }
        y += h * 0.034;
        i += 1;
      }
      for (let k = 0; k < 12; k++) {
        g.fillStyle = '#3b4252';
        g.fillRect(w * 0.02, h * 0.1 + k * h * 0.045, w * 0.12, h * 0.014);
      }
    }
    return window.__mock.frame(key, w, h, g.getImageData(0, 0, w, h).data);
  }, [key, w, h, scene]);
}

const emit = (page, event, payload) => page.evaluate(([e, p]) => window.__mock.emit(e, p), [event, payload]);
const settle = (page) => page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

/** Scenes per key, so pictures can be drawn again at the size the app reports (as Rust does). */
const scenes = new Map();

/** Sends every picture again at the tile size the UI last asked for (`set_tile_size`). */
async function repaintAtTileSizes(page) {
  await settle(page);
  const sizes = await page.evaluate(() => {
    const last = {};
    for (const c of window.__mock.calls) if (c.cmd === 'set_tile_size') last[c.args.key] = c.args;
    return last;
  });
  for (const [key, scene] of scenes) {
    const s = sizes[key];
    if (!s) continue;
    // Rust keeps the source's aspect inside the reported box.
    const scale = Math.min(s.width / scene.w, s.height / scene.h);
    await sendPicture(page, key, Math.round(scene.w * scale), Math.round(scene.h * scale), scene.scene);
  }
}

const PEOPLE = [
  { id: 'p-maria', name: 'Maria Keller', hue: 200, light: 66 },
  { id: 'p-tom', name: 'Tom Okafor', hue: 20, light: 42, skin: 45, hair: 10 },
  { id: 'p-lin', name: 'Lin Zhou', hue: 280, light: 70, hair: 8 },
];

/** A call with us and the three PEOPLE, all with cameras painting; Tom muted, us speaking. */
async function fourPeople(page, baseUrl) {
  await joinCallIn(page, baseUrl, { join: { value: joinInfo({ previewKey: 'self/camera', name: 'Ann' }) } });
  for (const p of PEOPLE) {
    await emit(page, 'room-event', { type: 'user-connected', id: p.id, name: p.name });
    await emit(page, 'stream-added', { key: `${p.id}/cam`, peerId: p.id, kind: 'camera', name: p.name });
    await emit(page, 'media-state', { id: p.id, mic: p.id !== 'p-tom', cam: true, roomId: 'room-1' });
    await emit(page, 'peer-quality', { id: p.id, rttMs: 24, kbpsIn: 900, kbpsOut: 850, lossPct: 0, level: 'good' });
  }
  await sendPicture(page, 'self/camera', 640, 360, { kind: 'person', hue: 150, light: 60 });
  for (const p of PEOPLE) await sendPicture(page, `${p.id}/cam`, 640, 360, { kind: 'person', ...p });
  await emit(page, 'audio-level', { peerId: 'p-maria', dbfs: -22 });
}

async function main() {
  await fs.mkdir(out, { recursive: true });
  const server = await startStaticServer();
  const baseUrl = `http://127.0.0.1:${server.address().port}`;
  const browser = await launchChromium();
  const shots = [];
  const fresh = async () => {
    const ctx = await browser.newContext({ viewport: VIEW });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => { throw e; });
    return page;
  };
  const snap = async (page, name) => {
    // No hover effects in the pictures; frames at the size the tiles ended up with.
    await page.mouse.move(2, 790);
    await repaintAtTileSizes(page);
    await page.waitForTimeout(250);
    const file = path.join(out, `ui-${name}.png`);
    await page.screenshot({ path: file });
    shots.push(file);
    await page.context().close();
  };

  // The start screen with a camera preview and a mic level.
  let page = await fresh();
  await openAppIn(page, baseUrl, { ...defaultResponses(), start_preview: { value: { video: true, audio: true, errors: [] } } });
  await page.fill('#name', 'Ann Lee');
  await sendPicture(page, 'preview/camera', 640, 360, { kind: 'person', hue: 150, light: 60 });
  await emit(page, 'mic-level', { rms: 0.05, peak: 0.2 });
  await snap(page, 'start');

  // Four people, one muted, one speaking, a few chat lines.
  page = await fresh();
  await fourPeople(page, baseUrl);
  await emit(page, 'chat', { from: 'p-maria', name: 'Maria Keller', text: 'Morning! Can everyone see the agenda?', at: Date.now() - 60000 });
  await emit(page, 'chat', { from: 'p-lin', name: 'Lin Zhou', text: 'Yes — I will share my screen in a minute.', at: Date.now() - 30000 });
  await snap(page, '4-people');

  // Lin shares a screen: it takes the stage, the cameras go to the strip; chat closed with unread.
  page = await fresh();
  await fourPeople(page, baseUrl);
  await page.keyboard.press('c');
  await page.locator('#chat-input').blur();
  await emit(page, 'stream-added', { key: 'p-lin/screen', peerId: 'p-lin', kind: 'screen', name: 'Lin Zhou' });
  await sendPicture(page, 'p-lin/screen', 1280, 800, { kind: 'screen' });
  await emit(page, 'chat', { from: 'p-tom', name: 'Tom Okafor', text: 'Nice, that is the new build?', at: Date.now() });
  await emit(page, 'chat', { from: 'p-maria', name: 'Maria Keller', text: 'Looks good', at: Date.now() });
  await snap(page, 'share');

  // Tom pinned: big on the stage, the others in the strip.
  page = await fresh();
  await fourPeople(page, baseUrl);
  await page.keyboard.press('c');
  await page.locator('#chat-input').blur();
  await page.click('.tile[data-id="p-tom"]');
  await snap(page, 'pinned');

  // Nobody else yet: the invite with copy buttons.
  page = await fresh();
  await joinCallIn(page, baseUrl, { join: { value: joinInfo({ previewKey: 'self/camera', shareUrls: ['http://192.168.1.5:4000', 'http://10.8.0.3:4000'] }) } });
  await sendPicture(page, 'self/camera', 640, 360, { kind: 'person', hue: 150, light: 60 });
  await snap(page, 'alone');

  await browser.close();
  await new Promise((r) => server.close(r));
  for (const f of shots) console.log(f);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
