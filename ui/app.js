// rtcio desktop UI: start screen, call screen, chat. Talks to Rust only through bridge.js.
import { channel, invoke, listen } from './bridge.js';
import { initTransfers } from './transfer.js';
import { initPreview, paintPreview, previewStopped, startPreview } from './preview.js';
import { applyQuality, clearQuality, initQuality } from './quality.js';

const $ = (id) => document.getElementById(id);

/** What the UI knows about the call it is in (null on the start screen). */
let call = null;
/** True while a join is in flight, so a second click or Enter does nothing. */
let joining = false;
let settings = { name: '', lastServers: [], camera: null, microphone: null, serverMode: 'host', lastUrl: '', resolution: '720p' };

// ---------------------------------------------------------------- helpers

/** A random room id: crypto.randomUUID where the page is a secure context, else built by hand. */
export function randomRoomId() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') return window.crypto.randomUUID();
  const b = new Uint8Array(16);
  window.crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Up to two initials from a display name. */
export function initials(name) {
  const parts = String(name || '').trim().split(/\s+/).filter(Boolean);
  if (parts.length === 0) return '?';
  const first = [...parts[0]][0] || '';
  const last = parts.length > 1 ? [...parts[parts.length - 1]][0] || '' : '';
  return (first + last).toUpperCase();
}

/** A stable colour per person, so tiles are told apart before video exists. */
export function avatarColor(id) {
  let h = 0;
  for (const ch of String(id)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${h % 360} 55% 42%)`;
}

/** Columns × rows for n equal tiles: as square as possible, wider than tall. */
export function gridShape(n) {
  const count = Math.max(1, n);
  const cols = Math.ceil(Math.sqrt(count));
  const rows = Math.ceil(count / cols);
  return { cols, rows };
}

/**
 * Reads one binary video frame from Rust (src-tauri/src/media.rs `encode_frame`): version u8
 * (1), 0, key length u16 LE, width u32 LE, height u32 LE, sent-at µs since the epoch u64 LE,
 * key UTF-8, RGBA. Returns {key, width, height, sentAtUs, pixels} (pixels a view into the
 * buffer, no copy) or null.
 */
export function parseFrame(buf) {
  if (!(buf instanceof ArrayBuffer) || buf.byteLength < 20) return null;
  const v = new DataView(buf);
  if (v.getUint8(0) !== 1) return null;
  const keyLen = v.getUint16(2, true);
  const width = v.getUint32(4, true);
  const height = v.getUint32(8, true);
  const sentAtUs = Number(v.getBigUint64(12, true));
  const offset = 20 + keyLen;
  const size = width * height * 4;
  if (width === 0 || height === 0 || buf.byteLength !== offset + size) return null;
  const key = new TextDecoder().decode(new Uint8Array(buf, 20, keyLen));
  return { key, width, height, sentAtUs, pixels: new Uint8ClampedArray(buf, offset, size) };
}

/** Human text for the reasons an rtc.io example server gives in `join-error`. */
export function joinErrorText(reason) {
  switch (reason) {
    case 'wrong-password': return 'Wrong password for this room.';
    case 'password-required': return 'This room is protected: enter its password.';
    case 'invalid-room': return 'That room id is not valid.';
    default: return `The server refused to let you join${reason ? ` (${reason})` : ''}.`;
  }
}

/** Human text for an error value rejected by a Rust command (`{kind, message, reason?}`). */
export function errorText(err) {
  if (!err) return 'Something went wrong.';
  if (typeof err === 'string') return err;
  switch (err.kind) {
    case 'join': return joinErrorText(err.reason);
    case 'badUrl': return `That server address is not valid: ${err.message}. Use something like http://192.168.1.20:3001.`;
    case 'unreachable': return `Cannot reach the server. Check the address and that it is running (${err.message}).`;
    case 'timeout': return 'The server did not answer in time. Check the address and your network.';
    case 'refused': return `The server refused the connection (${err.message}).`;
    default: return err.message || String(err);
  }
}

/** Accepts a URL a person types: http(s) or ws(s), with a host. Returns an error text or null. */
export function checkServerUrl(text) {
  const value = String(text || '').trim();
  if (!value) return 'Enter the address of an rtc.io server, e.g. http://192.168.1.20:3001.';
  let u;
  try {
    u = new URL(value);
  } catch {
    return `"${value}" is not a valid address. Use something like http://192.168.1.20:3001.`;
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) || !u.hostname) {
    return `"${value}" is not an http(s) address. Use something like http://192.168.1.20:3001.`;
  }
  return null;
}

function showError(el, text) {
  el.textContent = text || '';
  el.hidden = !text;
}

function formatTime(at) {
  const d = new Date(typeof at === 'number' ? at : Date.now());
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

// ---------------------------------------------------------------- start screen

function fillDevices(select, list, noneText, chosen, error) {
  select.replaceChildren();
  const all = list || [];
  if (all.length === 0) {
    const opt = document.createElement('option');
    opt.value = '';
    opt.textContent = error ? `${noneText} (${error})` : noneText;
    select.append(opt);
    select.disabled = true;
    return;
  }
  select.disabled = false;
  // Synthetic sources (test pattern, tone) are offered after the real devices and only chosen
  // on purpose: a machine without a camera starts with "none", not with a test pattern.
  const real = all.filter((d) => !d.synthetic);
  if (real.length === 0) {
    const opt = document.createElement('option');
    opt.value = '';
    opt.textContent = error ? `${noneText} (${error})` : noneText;
    select.append(opt);
  }
  for (const dev of all) {
    const opt = document.createElement('option');
    opt.value = dev.id;
    opt.textContent = dev.isDefault ? `${dev.name} (default)` : dev.name;
    select.append(opt);
  }
  const preferred = all.find((d) => d.id === chosen) || all.find((d) => d.isDefault) || real[0];
  select.value = preferred ? preferred.id : '';
}

async function loadDevices() {
  try {
    const d = await invoke('list_devices');
    fillDevices($('camera'), d.cameras, 'No camera found', settings.camera, d.cameraError);
    fillDevices($('microphone'), d.microphones, 'No microphone found', settings.microphone, d.microphoneError);
  } catch (err) {
    fillDevices($('camera'), [], 'No camera found');
    fillDevices($('microphone'), [], 'No microphone found');
    const note = $('device-note');
    note.textContent = `Could not list devices: ${errorText(err)}`;
    note.hidden = false;
  }
}

function applyServerMode() {
  const host = $('server-host').checked;
  $('server-url').disabled = host;
}

function fillRecentServers() {
  const list = $('recent-servers');
  list.replaceChildren();
  for (const url of settings.lastServers || []) {
    const opt = document.createElement('option');
    opt.value = url;
    list.append(opt);
  }
}

async function loadSettings() {
  try {
    const s = await invoke('get_settings');
    if (s && typeof s === 'object') settings = { ...settings, ...s };
  } catch (err) {
    // Settings are a convenience: start with defaults and say so, without blocking the user.
    showError($('start-error'), `Could not load saved settings: ${errorText(err)}`);
  }
  $('name').value = settings.name || '';
  // An unknown saved value leaves the default selected.
  if ([...$('resolution').options].some((o) => o.value === settings.resolution)) {
    $('resolution').value = settings.resolution;
  }
  if (settings.serverMode === 'url') $('server-url-choice').checked = true;
  $('server-url').value = settings.lastUrl || (settings.lastServers || [])[0] || '';
  fillRecentServers();
  applyServerMode();
}

function readForm() {
  const name = $('name').value.trim();
  const roomId = $('room').value.trim();
  const hosting = $('server-host').checked;
  const url = $('server-url').value.trim();
  const password = $('password').value;
  const camera = $('camera').disabled ? null : $('camera').value || null;
  const microphone = $('microphone').disabled ? null : $('microphone').value || null;
  const resolution = $('resolution').value;
  return { name, roomId, hosting, url, password, camera, microphone, resolution };
}

function validate(form) {
  if (!form.name) return 'Enter your display name.';
  if (!form.roomId) return 'Enter a room id, or press New for a fresh one.';
  if (!form.hosting) return checkServerUrl(form.url);
  return null;
}

async function onJoin(ev) {
  ev.preventDefault();
  if (joining) return;
  const form = readForm();
  const problem = validate(form);
  showError($('start-error'), problem);
  if (problem) return;

  joining = true;
  $('join-button').disabled = true;
  $('join-button').textContent = 'Joining…';
  const req = {
    name: form.name,
    roomId: form.roomId,
    server: form.hosting ? { kind: 'host' } : { kind: 'url', url: form.url },
    password: form.password ? form.password : null,
    camera: form.camera,
    microphone: form.microphone,
    resolution: form.resolution,
  };
  try {
    // Rust stops the preview before joining: the call opens the devices itself.
    previewStopped();
    const info = await invoke('join', { req });
    enterCall(info, form);
    saveSettings(form);
  } catch (err) {
    earlyStreams = [];
    showError($('start-error'), errorText(err));
    startPreview();
  } finally {
    joining = false;
    $('join-button').disabled = false;
    $('join-button').textContent = 'Join';
  }
}

async function saveSettings(form) {
  const lastServers = form.hosting
    ? settings.lastServers || []
    : [form.url, ...(settings.lastServers || []).filter((u) => u !== form.url)].slice(0, 5);
  settings = {
    ...settings,
    name: form.name,
    camera: form.camera,
    microphone: form.microphone,
    resolution: form.resolution,
    serverMode: form.hosting ? 'host' : 'url',
    lastUrl: form.hosting ? settings.lastUrl : form.url,
    lastServers,
  };
  fillRecentServers();
  try {
    await invoke('save_settings', { settings });
  } catch (err) {
    // Not worth interrupting the call for: show it quietly in the call's error line.
    showError($('call-error'), `Could not save settings: ${errorText(err)}`);
  }
}

// ---------------------------------------------------------------- call screen

function enterCall(info, form) {
  call = {
    selfId: info.selfId,
    roomId: info.roomId,
    name: form.name,
    mic: info.mic,
    cam: info.cam,
    // id → {name, mic, cam, lost}
    people: new Map(),
    // stream key → {peerId, kind: 'camera' | 'screen', name}
    streams: new Map(),
    sharing: false,
  };
  if (info.previewKey) call.streams.set(info.previewKey, { peerId: info.selfId, kind: 'camera', name: form.name });
  call.people.set(info.selfId, { name: form.name, mic: info.mic, cam: info.cam, self: true });
  $('room-title').textContent = `Room ${info.roomId}`;
  $('call-status').textContent = info.joinConfirmed ? '' : 'joined (server did not confirm)';
  const share = $('share-info');
  if (info.hosting && info.shareUrls && info.shareUrls.length) {
    share.textContent = `Hosting — others on your network can use: ${info.shareUrls.join('  ·  ')}`;
    share.hidden = false;
  } else {
    // Still show the port: people on this computer (or a tunnel) can use it.
    share.textContent = info.hosting ? `Hosting on this computer at ${info.serverUrl} (no network address found)` : '';
    share.hidden = !info.hosting;
  }
  $('chat-log').replaceChildren();
  const problems = Array.isArray(info.mediaErrors) ? info.mediaErrors : [];
  showError($('call-error'), problems.length ? problems.join(' ') : null);
  hideMonitorPicker();
  updateControls();
  renderGrid();
  const early = earlyStreams;
  earlyStreams = [];
  for (const ev of early) onStreamAdded(ev);
  $('start-screen').hidden = true;
  $('call-screen').hidden = false;
  // The grid was laid out while hidden (zero sizes): measure the tiles now that they show.
  reportTileSizes();
}

function exitCall(message) {
  call = null;
  reportedSizes.clear();
  clearQuality();
  $('call-screen').hidden = true;
  $('start-screen').hidden = false;
  showError($('start-error'), message || null);
}

/** The camera stream key of a person, if we get their video. */
function cameraKey(id) {
  for (const [key, st] of call.streams) if (st.peerId === id && st.kind === 'camera') return key;
  return null;
}

function videoCanvas(key) {
  const canvas = document.createElement('canvas');
  canvas.className = 'video';
  canvas.dataset.key = key;
  return canvas;
}

function renderGrid() {
  const grid = $('grid');
  if (!call) return;
  const entries = [...call.people.entries()];
  const shares = [...call.streams.entries()].filter(([, st]) => st.kind === 'screen');
  const { cols, rows } = gridShape(entries.length + shares.length);
  grid.style.setProperty('--cols', cols);
  grid.style.setProperty('--rows', rows);
  grid.dataset.count = String(entries.length + shares.length);
  const personTiles = entries.map(([id, p]) => {
    const tile = document.createElement('div');
    tile.className = 'tile' + (p.self ? ' self' : '') + (p.lost ? ' lost' : '');
    tile.dataset.id = id;
    const avatar = document.createElement('div');
    avatar.className = 'avatar';
    avatar.textContent = initials(p.name);
    avatar.style.background = avatarColor(id);
    const label = document.createElement('div');
    label.className = 'tile-name';
    label.textContent = p.self ? `${p.name} (you)` : p.name;
    const badges = document.createElement('div');
    badges.className = 'badges';
    if (p.mic === false) badges.append(badge('muted', 'Muted'));
    if (p.cam === false) badges.append(badge('cam-off', 'Camera off'));
    tile.append(avatar);
    // The video covers the initials; with the camera off the initials show again.
    const key = cameraKey(id);
    if (key && p.cam !== false) tile.append(videoCanvas(key));
    tile.append(label, badges);
    return tile;
  });
  const shareTiles = shares.map(([key, st]) => {
    const tile = document.createElement('div');
    tile.className = 'tile share';
    tile.dataset.share = key;
    const label = document.createElement('div');
    label.className = 'tile-name';
    const owner = call.people.get(st.peerId);
    label.textContent = `${(owner && owner.name) || st.name || personName(st.peerId)}'s screen`;
    tile.append(videoCanvas(key), label);
    return tile;
  });
  grid.replaceChildren(...personTiles, ...shareTiles);
  applyQuality();
  reportTileSizes();
}

/** Last size reported per stream key, so resizes are sent once. */
const reportedSizes = new Map();

/** Tells Rust the displayed size (device pixels) of every video tile: frames come scaled to it. */
function reportTileSizes() {
  if (!call) return;
  const dpr = window.devicePixelRatio || 1;
  for (const canvas of document.querySelectorAll('#grid canvas.video')) {
    const w = Math.round(canvas.clientWidth * dpr);
    const h = Math.round(canvas.clientHeight * dpr);
    if (w < 2 || h < 2) continue;
    const key = canvas.dataset.key;
    const last = reportedSizes.get(key);
    if (last && last.w === w && last.h === h) continue;
    reportedSizes.set(key, { w, h });
    invoke('set_tile_size', { key, width: w, height: h }).catch(() => {});
  }
}

/**
 * Frames painted / dropped since the page loaded, and summed milliseconds of IPC (Rust handing
 * the frame over → it arrives here) and of painting. The bench and the tests read it.
 */
// Counters read by the IPC bench (src-tauri/examples/ipc_bench.rs); `perKey` = frames painted per tile.
export const videoStats = { painted: 0, dropped: 0, ipcMs: 0, paintMs: 0, perKey: {} };

function paintFrame(buf) {
  const arrived = performance.timeOrigin + performance.now();
  const f = parseFrame(buf);
  if (paintPreview(f)) return;
  if (!f || !call) {
    videoStats.dropped += 1;
    return;
  }
  const canvas = document.querySelector(`#grid canvas.video[data-key="${CSS.escape(f.key)}"]`);
  if (!canvas) {
    videoStats.dropped += 1;
    return;
  }
  if (canvas.width !== f.width) canvas.width = f.width;
  if (canvas.height !== f.height) canvas.height = f.height;
  canvas.getContext('2d').putImageData(new ImageData(f.pixels, f.width, f.height), 0, 0);
  canvas.dataset.painted = String(Number(canvas.dataset.painted || 0) + 1);
  videoStats.painted += 1;
  videoStats.perKey[f.key] = (videoStats.perKey[f.key] || 0) + 1;
  videoStats.ipcMs += Math.max(0, arrived - f.sentAtUs / 1000);
  videoStats.paintMs += performance.timeOrigin + performance.now() - arrived;
}

function badge(kind, text) {
  const b = document.createElement('span');
  b.className = `badge ${kind}`;
  b.dataset.badge = kind;
  b.textContent = text;
  return b;
}

function updateControls() {
  const mic = $('toggle-mic');
  const cam = $('toggle-cam');
  mic.setAttribute('aria-pressed', String(call.mic));
  mic.textContent = call.mic ? 'Mic on' : 'Mic off';
  cam.setAttribute('aria-pressed', String(call.cam));
  cam.textContent = call.cam ? 'Camera on' : 'Camera off';
  const share = $('toggle-share');
  share.setAttribute('aria-pressed', String(call.sharing));
  share.textContent = call.sharing ? 'Stop sharing' : 'Share screen';
}

// ---------------------------------------------------------------- screen share

function hideMonitorPicker() {
  const picker = $('monitor');
  picker.hidden = true;
  picker.replaceChildren();
}

async function toggleShare() {
  if (!call) return;
  if (call.sharing) {
    try {
      await invoke('stop_screen_share');
    } catch (err) {
      showError($('call-error'), `Could not stop sharing: ${errorText(err)}`);
    }
    if (call) {
      call.sharing = false;
      updateControls();
    }
    return;
  }
  const picker = $('monitor');
  if (picker.hidden) {
    let monitors;
    try {
      monitors = await invoke('list_monitors');
    } catch (err) {
      showError($('call-error'), `Screen sharing is not available: ${errorText(err)}`);
      return;
    }
    if (!Array.isArray(monitors) || monitors.length === 0) {
      showError($('call-error'), 'No screen to share was found.');
      return;
    }
    if (monitors.length > 1) {
      // Let the person pick, then press the button again.
      for (const m of monitors) {
        const opt = document.createElement('option');
        opt.value = m.id;
        opt.textContent = m.isDefault ? `${m.name} (primary)` : m.name;
        picker.append(opt);
      }
      const primary = monitors.find((m) => m.isDefault) || monitors[0];
      picker.value = primary.id;
      picker.hidden = false;
      $('toggle-share').textContent = 'Share this screen';
      return;
    }
    picker.replaceChildren();
    const only = document.createElement('option');
    only.value = monitors[0].id;
    picker.append(only);
  }
  const monitor = picker.value || null;
  hideMonitorPicker();
  try {
    await invoke('start_screen_share', { monitor });
    if (call) {
      call.sharing = true;
      showError($('call-error'), null);
    }
  } catch (err) {
    showError($('call-error'), `Could not share the screen: ${errorText(err)}`);
  }
  if (call) updateControls();
}

async function setMedia(mic, cam) {
  if (!call) return;
  const before = { mic: call.mic, cam: call.cam };
  call.mic = mic;
  call.cam = cam;
  const me = call.people.get(call.selfId);
  if (me) Object.assign(me, { mic, cam });
  updateControls();
  renderGrid();
  try {
    await invoke('set_media_state', { mic, cam });
  } catch (err) {
    // Roll back so the buttons never claim a state the others were not told about.
    if (call) {
      call.mic = before.mic;
      call.cam = before.cam;
      if (me) Object.assign(me, before);
      updateControls();
      renderGrid();
    }
    showError($('call-error'), `Could not change microphone/camera state: ${errorText(err)}`);
  }
}

async function leave(message) {
  const wasInCall = call !== null;
  exitCall(message);
  if (!wasInCall) return;
  try {
    await invoke('leave');
  } catch (err) {
    showError($('start-error'), message || `Leaving did not finish cleanly: ${errorText(err)}`);
  }
  // The call has released the devices: the start screen shows them again.
  startPreview();
}

// ---------------------------------------------------------------- chat

function addChat(msg, mine) {
  const li = document.createElement('li');
  if (mine) li.className = 'mine';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = msg.name || 'Someone';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = msg.text;
  const when = document.createElement('span');
  when.className = 'when';
  when.textContent = formatTime(msg.at);
  li.append(who, text, when);
  const log = $('chat-log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

function addSystem(text) {
  const li = document.createElement('li');
  li.className = 'system';
  li.textContent = text;
  $('chat-log').append(li);
}

async function onChatSend(ev) {
  ev.preventDefault();
  if (!call) return;
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text) return;
  try {
    const sent = await invoke('send_chat', { text });
    input.value = '';
    // rtc.io apps echo their own messages locally: the channel does not send them back.
    addChat(sent && typeof sent === 'object' ? sent : { name: call.name, text, at: Date.now() }, true);
  } catch (err) {
    showError($('call-error'), `Message not sent: ${errorText(err)}`);
  }
}

// ---------------------------------------------------------------- events from Rust

function personName(id) {
  return `Guest ${String(id).slice(0, 4)}`;
}

function onRoomEvent(ev) {
  if (!ev || typeof ev !== 'object') return;
  switch (ev.type) {
    case 'join-error':
      // During a join the rejected command says it too; after a re-join it ends the call.
      if (call) leave(joinErrorText(ev.reason));
      else showError($('start-error'), joinErrorText(ev.reason));
      return;
    case 'join-ok':
      if (call) $('call-status').textContent = '';
      return;
    case 'connection':
      if (call) $('call-status').textContent = ev.state === 'connected' ? '' : `signaling ${ev.state}…`;
      return;
    default:
  }
  if (!call || typeof ev.id !== 'string' || ev.id === call.selfId) return;
  if (ev.type === 'user-connected') {
    const p = call.people.get(ev.id);
    const name = typeof ev.name === 'string' && ev.name ? ev.name : personName(ev.id);
    if (p) p.name = name;
    else {
      call.people.set(ev.id, { name, mic: undefined, cam: undefined });
      addSystem(`${name} joined`);
    }
    renderGrid();
  } else if (ev.type === 'user-disconnected') {
    const p = call.people.get(ev.id);
    for (const [key, st] of call.streams) if (st.peerId === ev.id) call.streams.delete(key);
    if (p) {
      call.people.delete(ev.id);
      addSystem(`${p.name} left`);
    }
    renderGrid();
  }
}

function onMediaState(ev) {
  if (!call || !ev || typeof ev.id !== 'string' || ev.id === call.selfId) return;
  if (ev.roomId && ev.roomId !== call.roomId) return;
  let p = call.people.get(ev.id);
  if (!p) {
    // The server backfills media-state right after user-connected; a peer's ctrl copy may
    // arrive first. Either way the person is in the room.
    p = { name: personName(ev.id) };
    call.people.set(ev.id, p);
  }
  if (typeof ev.mic === 'boolean') p.mic = ev.mic;
  if (typeof ev.cam === 'boolean') p.cam = ev.cam;
  renderGrid();
}

function onPeer(connected, ev) {
  if (!call || !ev || typeof ev.id !== 'string' || ev.id === call.selfId) return;
  const p = call.people.get(ev.id);
  if (connected) {
    if (p) p.lost = false;
    else call.people.set(ev.id, { name: personName(ev.id) });
  } else if (p) {
    p.lost = true;
  }
  renderGrid();
}

/** Stream events that arrived while the join command was still running. */
let earlyStreams = [];

function onStreamAdded(ev) {
  if (!ev || typeof ev.key !== 'string' || typeof ev.peerId !== 'string') return;
  if (ev.kind !== 'camera' && ev.kind !== 'screen') return;
  if (!call) {
    // A peer's stream can beat the join command's answer to the page: keep it for enterCall.
    if (joining) earlyStreams.push(ev);
    return;
  }
  const name = typeof ev.name === 'string' && ev.name ? ev.name : null;
  call.streams.set(ev.key, { peerId: ev.peerId, kind: ev.kind, name });
  const p = call.people.get(ev.peerId);
  if (!p) call.people.set(ev.peerId, { name: name || personName(ev.peerId) });
  // The demo's announcement carries the sender's name: better than a "Guest" placeholder.
  else if (name && p.name === personName(ev.peerId)) p.name = name;
  renderGrid();
}

function onStreamRemoved(ev) {
  if (!ev || typeof ev.key !== 'string') return;
  if (!call) {
    earlyStreams = earlyStreams.filter((e) => e.key !== ev.key);
    return;
  }
  if (call.streams.delete(ev.key)) {
    reportedSizes.delete(ev.key);
    renderGrid();
  }
}

function onChat(msg) {
  if (!call || !msg || typeof msg.text !== 'string') return;
  addChat(msg, false);
}

// ---------------------------------------------------------------- wiring

function onKey(ev) {
  if (!call || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const tag = ev.target && ev.target.tagName;
  if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT') return;
  const key = ev.key.toLowerCase();
  if (key === 'm') {
    ev.preventDefault();
    setMedia(!call.mic, call.cam);
  } else if (key === 'v') {
    ev.preventDefault();
    setMedia(call.mic, !call.cam);
  }
}

async function main() {
  $('room').value = randomRoomId();
  $('new-room').addEventListener('click', () => { $('room').value = randomRoomId(); });
  $('server-host').addEventListener('change', applyServerMode);
  $('server-url-choice').addEventListener('change', () => { applyServerMode(); $('server-url').focus(); });
  $('join-form').addEventListener('submit', onJoin);
  $('chat-form').addEventListener('submit', onChatSend);
  $('toggle-mic').addEventListener('click', () => call && setMedia(!call.mic, call.cam));
  $('toggle-cam').addEventListener('click', () => call && setMedia(call.mic, !call.cam));
  $('toggle-share').addEventListener('click', toggleShare);
  $('leave').addEventListener('click', () => leave(null));
  window.addEventListener('resize', reportTileSizes);
  document.addEventListener('keydown', onKey);

  try {
    await Promise.all([
      listen('room-event', onRoomEvent),
      listen('media-state', onMediaState),
      listen('chat', onChat),
      listen('peer-connect', (ev) => onPeer(true, ev)),
      listen('peer-disconnect', (ev) => onPeer(false, ev)),
      listen('stream-added', onStreamAdded),
      listen('stream-removed', onStreamRemoved),
      // File drops on tiles and the transfers panel.
      initTransfers({ names: (id) => call && call.people.get(id)?.name }),
      initQuality(),
      // One channel for every tile's frames: raw bytes, never JSON.
      invoke('video_channel', { channel: channel(paintFrame) }),
    ]);
  } catch (err) {
    showError($('start-error'), `The app's event bridge failed: ${errorText(err)}`);
  }
  await loadSettings();
  await loadDevices();
  try {
    await initPreview();
  } catch (err) {
    showError($('start-error'), `The preview failed: ${errorText(err)}`);
  }
  document.body.dataset.ready = 'true';
  window.__rtcioVideo = videoStats;
}

main();
