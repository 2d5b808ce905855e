// How the page gets its video frames (ui/app.js `receiveFrames`): over the app's loopback
// WebSocket when `frame_socket` names one (src-tauri/src/frame_socket.rs: a text message
// acknowledges the batch painted, `-` for none, and asks for the next; the reply is one binary
// message, the `next_frames` reply's bytes), and by `next_frames` over the IPC when the
// command fails or the socket does not open. The socket is Playwright's `routeWebSocket`
// stand-in: no real server, the test answers each pull.

import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { joinCallIn, joinInfo, suiteBrowser, newTestPage } from './harness.mjs';

const suite = suiteBrowser();
let page;

beforeEach(async () => {
  page = await newTestPage(suite);
});

afterEach(async () => {
  await page.context().close();
});

/** One I420 frame (media.rs `encode_i420_frame`), each plane filled with its value of `yuv`. */
function i420Bytes(key, w, h, [y, u, v]) {
  const k = Buffer.from(key);
  const luma = w * h;
  const chroma = Math.ceil(w / 2) * Math.ceil(h / 2);
  const buf = Buffer.alloc(20 + k.length + luma + 2 * chroma);
  buf.writeUInt8(1, 0);
  buf.writeUInt8(1, 1);
  buf.writeUInt16LE(k.length, 2);
  buf.writeUInt32LE(w, 4);
  buf.writeUInt32LE(h, 8);
  buf.writeBigUInt64LE(BigInt(Date.now() - 5) * 1000n, 12);
  k.copy(buf, 20);
  let at = 20 + k.length;
  buf.fill(y, at, at += luma);
  buf.fill(u, at, at += chroma);
  buf.fill(v, at, at += chroma);
  return buf;
}

/** A batch (media.rs `FrameFlow`): version 2, count, sequence number, each frame after its length. */
function batchBytes(frames, seq) {
  const head = Buffer.alloc(8);
  head.writeUInt8(2, 0);
  head.writeUInt16LE(frames.length, 2);
  head.writeUInt32LE(seq, 4);
  const parts = [head];
  for (const f of frames) {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(f.length, 0);
    parts.push(len, f);
  }
  return Buffer.concat(parts);
}

/**
 * The app's frame socket, answered here: `pulls` holds every text message of every
 * connection, `nextPull()` resolves with the next one, `send(batch)` answers the pull
 * waiting (the page makes one at a time), `nextConnection()` resolves when the page connects.
 */
function frameSocket() {
  const s = {
    urls: [], pulls: [], current: null, waiters: [], connWaiters: [],
    nextPull() {
      return new Promise((resolve) => this.waiters.push(resolve));
    },
    nextConnection() {
      return new Promise((resolve) => this.connWaiters.push(resolve));
    },
    send(bytes) {
      this.current.send(bytes);
    },
  };
  s.route = (ws) => {
    s.urls.push(ws.url());
    s.current = ws;
    ws.onMessage((m) => {
      s.pulls.push(String(m));
      s.waiters.shift()?.(String(m));
    });
    s.connWaiters.shift()?.(ws);
  };
  return s;
}

const attr = (key, name) => page.getAttribute(`canvas.video[data-key="${key}"]`, name);
const calls = (cmd) => page.evaluate((c) => window.__mock.calls.filter((x) => x.cmd === c), cmd);
const emit = (event, payload) => page.evaluate(([e, p]) => window.__mock.emit(e, p), [event, payload]);
const stats = () => page.evaluate(() => window.__rtcioVideo);
const pixel = (key) => page.evaluate(async (key) => {
  const { readPixel } = await import('./renderer.js');
  return readPixel(document.querySelector(`canvas.video[data-key="${key}"]`), 1, 1);
}, key);

async function addRemote() {
  await emit('room-event', { type: 'user-connected', id: 'p1', name: 'Bob' });
  await emit('stream-added', { key: 'p1/ms1', peerId: 'p1', kind: 'camera', name: 'Bob' });
}

test('frames come over the frame socket: one pull at a time, each naming the batch painted', async () => {
  const sock = frameSocket();
  const port = 45321;
  const token = 'a b/c+d';
  await page.routeWebSocket(`ws://127.0.0.1:${port}/**`, sock.route);
  const first = sock.nextPull();
  await joinCallIn(page, suite.baseUrl, {
    join: { value: joinInfo() },
    frame_socket: { value: { port, token } },
  });
  await addRemote();
  assert.equal(await first, '-', 'the first pull acknowledges nothing');
  assert.deepEqual(sock.urls, [`ws://127.0.0.1:${port}/?token=${encodeURIComponent(token)}`]);
  assert.equal((await stats()).transport, 'websocket');

  // A batch: painted, then the next pull names it.
  let next = sock.nextPull();
  sock.send(batchBytes([i420Bytes('p1/ms1', 8, 4, [120, 100, 150])], 7));
  assert.equal(await next, '7');
  assert.equal(await attr('p1/ms1', 'data-painted'), '1');
  assert.equal(await attr('p1/ms1', 'data-painter'), 'webgl');
  const px = await pixel('p1/ms1');
  // BT.601 limited range of (120, 100, 150), as video.test.mjs computes it.
  assert.ok(px && [156, 114, 65].every((c, i) => Math.abs(px[i] - c) <= 2), `painted colour ${px}`);

  // An empty batch (nothing came in time) and an unreadable one acknowledge nothing.
  next = sock.nextPull();
  sock.send(batchBytes([], 8));
  assert.equal(await next, '-');
  next = sock.nextPull();
  sock.send(batchBytes([i420Bytes('p1/ms1', 8, 4, [16, 128, 128])], 9).subarray(0, 30));
  assert.equal(await next, '-');
  assert.equal(await attr('p1/ms1', 'data-painted'), '1');
  const s = await stats();
  assert.deepEqual([s.messages, s.pulls, s.painted, s.dropped], [3, 4, 1, 1]);
  assert.equal((await calls('next_frames')).length, 0, 'nothing over the IPC');

  // A socket that closes after it worked is opened again (after a pause), from a fresh pull.
  const again = sock.nextConnection();
  next = sock.nextPull();
  sock.current.close();
  await again;
  assert.equal(await next, '-');
  assert.equal(sock.urls.length, 2);
  next = sock.nextPull();
  sock.send(batchBytes([i420Bytes('p1/ms1', 8, 4, [81, 90, 240])], 10));
  assert.equal(await next, '10');
  assert.equal(await attr('p1/ms1', 'data-painted'), '2');
  assert.equal((await stats()).transport, 'websocket');
  assert.equal((await calls('next_frames')).length, 0, 'still nothing over the IPC');
});

/** A loopback port nothing listens on (a listener's, closed again): connecting is refused. */
async function closedPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

test('when the frame socket does not open, the frames come by next_frames', async () => {
  const port = await closedPort();
  await joinCallIn(page, suite.baseUrl, {
    join: { value: joinInfo() },
    frame_socket: { value: { port, token: 't' } },
  });
  await addRemote();
  // Resolves once the page pulled again over the IPC, i.e. painted it.
  await page.evaluate(() => window.__mock.frameI420('p1/ms1', 8, 4, [120, 100, 150], { ageMs: 5 }));
  assert.equal(await attr('p1/ms1', 'data-painted'), '1');
  assert.equal((await stats()).transport, 'ipc');
  assert.deepEqual((await calls('next_frames')).map((c) => c.args.ack), [null, 0]);
  assert.equal((await calls('frame_socket')).length, 1);
});

test('when frame_socket fails (or answers nothing), the frames come by next_frames', async () => {
  for (const answer of [{ error: { kind: 'internal', message: 'no socket' } }, { value: null }]) {
    await page.goto('about:blank');
    await joinCallIn(page, suite.baseUrl, { join: { value: joinInfo() }, frame_socket: answer });
    await addRemote();
    await page.evaluate(() => window.__mock.frameI420('p1/ms1', 8, 4, [120, 100, 150], { ageMs: 5 }));
    assert.equal(await attr('p1/ms1', 'data-painted'), '1', JSON.stringify(answer));
    assert.equal((await stats()).transport, 'ipc');
  }
});
