// rtcio desktop UI: start screen, call screen, chat. Talks to Rust only through bridge.js.
import { invoke, listen } from './bridge.js';
import { initTransfers } from './transfer.js';
import { initPreview, paintPreview, previewStopped, startPreview } from './preview.js';
import { applyQuality, clearQuality, initQuality } from './quality.js';
import { DEFAULT_ASPECT, TILE_GAP, dominantAspect, fitRect, gridRects, spotlightRects } from './layout.js';
import { rmsToDbfs, speakers } from './speaker.js';
import { copyText } from './clipboard.js';
import { paintVideo, renderTimes, webgl2Available } from './renderer.js';
import { icon } from './icons.js';
import { initDevices, setCurrentDevices, setDeviceMenuOpen, POLL_MS } from './devices.js';

const $ = (id) => document.getElementById(id);

/** What the UI knows about the call it is in (null on the start screen). */
let call = null;
/** True while a join is in flight, so a second click or Enter does nothing. */
let joining = false;
let settings = {
  name: '', lastServers: [], camera: null, microphone: null, serverMode: 'host', lastUrl: '', resolution: '720p',
  network: { iceServers: [], iceUsername: '', iceCredential: '', relayOnly: false, hostTurn: false },
  sound: { echoCancellation: true, noiseSuppression: true, autoGain: true },
};

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
  // FNV-1a plus a final mix: ids that differ in one character ("p1", "p2") still get
  // far-apart hues (a plain polynomial hash gives them neighbouring ones).
  let h = 0x811c9dc5;
  for (const ch of String(id)) h = Math.imul(h ^ ch.codePointAt(0), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h = (h ^ (h >>> 16)) >>> 0;
  return `hsl(${h % 360} 55% 42%)`;
}

/**
 * The link people are invited with: the server's address with the room in the fragment,
 * `SERVER/#room=ROOM`. Opened in a browser it is rtcio-server's guest page (served at `/`),
 * which joins that room; pasted into the start screen it splits back into server + room.
 */
export function inviteLink(serverUrl, roomId) {
  const room = encodeURIComponent(roomId);
  try {
    const u = new URL(serverUrl);
    u.hash = `room=${room}`;
    return u.toString();
  } catch {
    return `${String(serverUrl).replace(/\/?$/, '/')}#room=${room}`;
  }
}

/**
 * An invite link pasted back: {server, room}, or null when the text is not one. Both forms:
 * `SERVER/#room=ROOM` (the guest page's, what inviteLink makes; other fragment keys such as
 * `token` are ignored) and the older `SERVER/?room=ROOM`.
 */
export function parseInvite(text) {
  let u;
  try {
    u = new URL(String(text || '').trim());
  } catch {
    return null;
  }
  const room = new URLSearchParams(u.hash.replace(/^#/, '')).get('room') || u.searchParams.get('room');
  if (!room || !['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) return null;
  const path = u.pathname === '/' ? '' : u.pathname;
  return { server: `${u.protocol}//${u.host}${path}`, room };
}

/**
 * Reads one binary video frame from Rust (src-tauri/src/media.rs `encode_frame` /
 * `encode_i420_frame`) at `start` in `buf`, `length` bytes long (the rest of the buffer by
 * default): version u8 (1), pixel format u8 (0 RGBA, 1 I420), key length u16 LE,
 * width u32 LE, height u32 LE, sent-at µs since the epoch u64 LE, key UTF-8, then the pixels:
 * RGBA, or the Y plane then U and V (⌈width/2⌉ × ⌈height/2⌉ each), rows packed. Returns
 * {key, format: 'rgba' | 'i420', width, height, sentAtUs, bytes} plus `pixels` (RGBA) or `y`, `u`, `v`
 * (views into the buffer, no copy), or null.
 */
export function parseFrame(buf, start = 0, length = undefined) {
  if (!(buf instanceof ArrayBuffer)) return null;
  const len = length ?? buf.byteLength - start;
  if (start < 0 || len < 20 || start + len > buf.byteLength) return null;
  const v = new DataView(buf, start, len);
  if (v.getUint8(0) !== 1) return null;
  const tag = v.getUint8(1);
  if (tag > 1) return null;
  const keyLen = v.getUint16(2, true);
  const width = v.getUint32(4, true);
  const height = v.getUint32(8, true);
  const sentAtUs = Number(v.getBigUint64(12, true));
  const offset = 20 + keyLen;
  const luma = width * height;
  const chroma = Math.ceil(width / 2) * Math.ceil(height / 2);
  const size = tag === 0 ? luma * 4 : luma + 2 * chroma;
  if (width === 0 || height === 0 || len !== offset + size) return null;
  const key = keyDecoder.decode(new Uint8Array(buf, start + 20, keyLen));
  const at = start + offset;
  if (tag === 0) {
    return { key, format: 'rgba', width, height, sentAtUs, bytes: len, pixels: new Uint8ClampedArray(buf, at, size) };
  }
  return {
    key, format: 'i420', width, height, sentAtUs, bytes: len,
    y: new Uint8Array(buf, at, luma),
    u: new Uint8Array(buf, at + luma, chroma),
    v: new Uint8Array(buf, at + luma + chroma, chroma),
  };
}

const keyDecoder = new TextDecoder();

/**
 * Reads one reply of `next_frames`: a batch of frames (media.rs `FrameFlow`): version u8 (2),
 * 0, frame count u16 LE, sequence number u32 LE (acknowledged by the next pull), then per
 * frame its length u32 LE and the frame (`parseFrame`). Returns {seq, frames} where a frame
 * that could not be read is null, or null when the batch itself cannot be read. An empty batch
 * (no frame came in time) has no frames.
 */
export function parseBatch(buf) {
  if (!(buf instanceof ArrayBuffer) || buf.byteLength < 8) return null;
  const v = new DataView(buf);
  if (v.getUint8(0) !== 2) return null;
  const count = v.getUint16(2, true);
  const seq = v.getUint32(4, true);
  const frames = [];
  let at = 8;
  for (let i = 0; i < count; i++) {
    if (at + 4 > buf.byteLength) return null;
    const len = v.getUint32(at, true);
    at += 4;
    if (at + len > buf.byteLength) return null;
    frames.push(parseFrame(buf, at, len));
    at += len;
  }
  return at === buf.byteLength ? { seq, frames } : null;
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

/** A synthetic source (test pattern, tone) rather than a real device. */
export function isSyntheticDevice(dev) {
  return !!dev && (dev.synthetic === true || String(dev.id || '').startsWith('synthetic:'));
}

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
    // The self view is mirrored like a mirror, except a synthetic source (its text would read backwards).
    if (isSyntheticDevice(dev)) opt.dataset.synthetic = 'true';
    select.append(opt);
  }
  const preferred = all.find((d) => d.id === chosen) || all.find((d) => d.isDefault) || real[0];
  select.value = preferred ? preferred.id : '';
}

/**
 * While a start-screen picker has the focus (the user is choosing), the lists are asked for
 * every 2 s and refilled when they changed, keeping the choice: a device plugged in appears.
 */
let pickerPoll = null;
let pickerLists = '';
function watchPickers() {
  const ids = ['camera', 'microphone', 'speaker'];
  const refresh = async () => {
    let d;
    try {
      d = await invoke('list_devices');
    } catch {
      return;
    }
    const key = JSON.stringify(d);
    if (key === pickerLists) return;
    pickerLists = key;
    fillDevices($('camera'), d.cameras, 'No camera found', $('camera').value || settings.camera, d.cameraError);
    fillDevices($('microphone'), d.microphones, 'No microphone found', $('microphone').value || settings.microphone, d.microphoneError);
    fillDevices($('speaker'), d.speakers, 'No speaker found', $('speaker').value || settings.speaker, d.speakerError);
  };
  for (const id of ids) {
    $(id).addEventListener('focus', () => {
      clearInterval(pickerPoll);
      pickerLists = '';
      pickerPoll = setInterval(refresh, POLL_MS);
    });
    $(id).addEventListener('blur', () => {
      clearInterval(pickerPoll);
      pickerPoll = null;
    });
  }
}

async function loadDevices() {
  try {
    const d = await invoke('list_devices');
    fillDevices($('camera'), d.cameras, 'No camera found', settings.camera, d.cameraError);
    fillDevices($('microphone'), d.microphones, 'No microphone found', settings.microphone, d.microphoneError);
    fillDevices($('speaker'), d.speakers, 'No speaker found', settings.speaker, d.speakerError);
  } catch (err) {
    fillDevices($('camera'), [], 'No camera found');
    fillDevices($('microphone'), [], 'No microphone found');
    fillDevices($('speaker'), [], 'No speaker found');
    const note = $('device-note');
    note.textContent = `Could not list devices: ${errorText(err)}`;
    note.hidden = false;
  }
}

/**
 * An invite link pasted into the room or server field fills both: the room from `#room=`
 * (or `?room=`), the server (chosen as "Use an rtc.io server") from the rest.
 */
function takeInvite(ev) {
  const found = parseInvite(ev.target.value);
  if (!found) return;
  $('room').value = found.room;
  $('server-url-choice').checked = true;
  $('server-url').value = found.server;
  applyServerMode();
}

/** The Speaker picker's "Test": a short tone on the chosen output (Rust plays it). */
async function testSpeaker() {
  const btn = $('test-speaker');
  if (btn.disabled) return;
  btn.disabled = true;
  const speaker = $('speaker').disabled ? null : $('speaker').value || null;
  try {
    const played = await invoke('test_speaker', { speaker });
    showToast(`Test sound played on ${played && played.device ? played.device : 'the speaker'}`);
  } catch (err) {
    const note = $('device-note');
    note.textContent = errorText(err);
    note.hidden = false;
  } finally {
    btn.disabled = false;
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
  const sound = { echoCancellation: true, noiseSuppression: true, autoGain: true, ...(settings.sound || {}) };
  $('echo-cancellation').checked = sound.echoCancellation !== false;
  $('noise-suppression').checked = sound.noiseSuppression !== false;
  $('auto-gain').checked = sound.autoGain !== false;
  const net = settings.network || {};
  $('ice-servers').value = (net.iceServers || []).join('\n');
  $('ice-username').value = net.iceUsername || '';
  $('ice-credential').value = net.iceCredential || '';
  $('relay-only').checked = !!net.relayOnly;
  $('host-turn').checked = !!net.hostTurn;
  // Open the section when something in it is set, so nobody forgets it is on.
  $('network-settings').open = !!((net.iceServers || []).length || net.relayOnly || net.hostTurn);
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
  const speaker = $('speaker').disabled ? null : $('speaker').value || null;
  const resolution = $('resolution').value;
  const camOption = $('camera').selectedOptions[0];
  const cameraSynthetic = !!camOption && camOption.dataset.synthetic === 'true';
  const network = readNetwork();
  const sound = {
    echoCancellation: $('echo-cancellation').checked,
    noiseSuppression: $('noise-suppression').checked,
    autoGain: $('auto-gain').checked,
  };
  return { name, roomId, hosting, url, password, camera, microphone, speaker, resolution, cameraSynthetic, network, sound };
}

/** The Network section as the `join` command and the settings store take it. */
export function readNetwork() {
  return {
    iceServers: $('ice-servers').value.split('\n').map((u) => u.trim()).filter(Boolean),
    iceUsername: $('ice-username').value.trim(),
    iceCredential: $('ice-credential').value,
    relayOnly: $('relay-only').checked,
    hostTurn: $('host-turn').checked,
  };
}

/** A sentence for the first problem in the Network section (the app checks again), or null. */
export function checkNetwork(net) {
  for (const u of net.iceServers) {
    if (!/^(stuns?|turns?):./.test(u)) return `"${u}" is not a STUN or TURN address (they look like stun:host:3478 or turn:host:3478).`;
  }
  if (net.iceServers.some((u) => u.startsWith('turn')) && (!net.iceUsername || !net.iceCredential)) {
    return 'A TURN server needs a user name and a password (Network section).';
  }
  return null;
}

function validate(form) {
  if (!form.name) return 'Enter your display name.';
  if (!form.roomId) return 'Enter a room id, or press New for a fresh one.';
  const net = checkNetwork(form.network);
  if (net) return net;
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
    network: form.network,
    sound: form.sound,
    speaker: form.speaker,
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
    network: form.network,
    sound: form.sound,
    speaker: form.speaker,
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

const GAP = TILE_GAP;
/**
 * A peer whose connection dropped gets the "reconnecting" banner only after this long: a
 * person leaving normally is gone (user-disconnected) well within it, so no banner flashes.
 */
const PEER_GRACE_MS = 1500;
/** A level not refreshed for this long is silence (levels come ~10/s). */
const LEVEL_HOLD_MS = 800;
/** Tile key of our own screen share (no frames of it come back; the tile says we share). */
const OWN_SHARE_KEY = 'self/screen';

/** Tile elements by tile key: `p:<person id>` or `s:<stream key>`. Kept across renders so
 *  canvases keep their picture and focus stays on a tile's button. */
const tileEls = new Map();
/** Timers: a peer's reconnect grace, a level's hold (by id). */
const peerTimers = new Map();
const levelTimers = new Map();

function enterCall(info, form) {
  setCurrentDevices({ camera: form.camera, microphone: form.microphone, speaker: form.speaker });
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
    // The stage: a tile the person pinned, and a share they sent back to the grid.
    pin: null,
    dismissed: null,
    // stream key → width / height of its latest frame
    aspects: new Map(),
    mirror: !!form.camera && !form.cameraSynthetic,
    signaling: 'connected',
    // Peer ids whose connection is coming back.
    restarting: new Set(),
    // id → dBFS, for the speaking highlight.
    levels: new Map(),
    chatOpen: window.innerWidth >= 900,
    unread: 0,
    invites: [],
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
  const servers = info.hosting
    ? (info.shareUrls && info.shareUrls.length ? info.shareUrls : [info.serverUrl])
    : [form.url || info.serverUrl];
  call.invites = servers.filter(Boolean).map((url) => inviteLink(url, info.roomId));
  fillInvites();
  $('chat-log').replaceChildren();
  const problems = Array.isArray(info.mediaErrors) ? info.mediaErrors : [];
  showError($('call-error'), problems.length ? problems.join(' ') : null);
  hideMonitorPicker();
  updateControls();
  updateBanner();
  $('start-screen').hidden = true;
  $('call-screen').hidden = false;
  // Laid out after the screen shows: the stage has its size only now.
  setChatOpen(call.chatOpen);
  renderGrid();
  const early = earlyStreams;
  earlyStreams = [];
  for (const ev of early) onStreamAdded(ev);
}

function exitCall(message) {
  setDeviceMenuOpen(false);
  call = null;
  reportedSizes.clear();
  clearQuality();
  tileEls.clear();
  $('grid').replaceChildren();
  for (const timers of [peerTimers, levelTimers]) {
    for (const t of timers.values()) clearTimeout(t);
    timers.clear();
  }
  updateBanner();
  $('call-screen').hidden = true;
  $('start-screen').hidden = false;
  showError($('start-error'), message || null);
}

/** The camera stream key of a person, if we get their video. */
function cameraKey(id) {
  for (const [key, st] of call.streams) if (st.peerId === id && st.kind === 'camera') return key;
  return null;
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function videoCanvas(key) {
  const canvas = el('canvas', 'video');
  canvas.dataset.key = key;
  return canvas;
}

function badge(kind, text) {
  const b = el('span', `badge ${kind}`);
  b.dataset.badge = kind;
  b.setAttribute('role', 'img');
  b.setAttribute('aria-label', text);
  b.title = text;
  b.append(icon(kind === 'muted' ? 'mic-off' : 'cam-off'));
  return b;
}

/** What the stage shows, in order: people (we come first), then screen shares. */
function tileModels() {
  const models = [];
  for (const [id, p] of call.people) {
    const key = cameraKey(id);
    models.push({ tk: `p:${id}`, kind: 'person', id, p, videoKey: key && p.cam !== false ? key : null });
  }
  for (const [key, st] of call.streams) {
    if (st.kind === 'screen') models.push({ tk: `s:${key}`, kind: 'share', key, st });
  }
  if (call.sharing) models.push({ tk: `s:${OWN_SHARE_KEY}`, kind: 'own-share', key: OWN_SHARE_KEY });
  return models;
}

function makeTile(m) {
  const tile = el('div', 'tile');
  tile.dataset.tile = m.tk;
  const plate = el('div', 'nameplate');
  plate.append(el('span', 'badges'), el('span', 'tile-name'));
  const pin = el('button', 'pin');
  pin.type = 'button';
  pin.setAttribute('aria-pressed', 'false');
  pin.append(icon('pin', 'on'), icon('unpin', 'off'));
  if (m.kind === 'person') {
    tile.dataset.id = m.id;
    const status = el('div', 'tile-status');
    status.append(el('span', 'spinner'), el('span', '', 'Reconnecting…'));
    tile.append(el('div', 'avatar'), plate, status, pin);
  } else if (m.kind === 'share') {
    tile.classList.add('share');
    tile.dataset.share = m.key;
    tile.append(videoCanvas(m.key), plate, pin);
  } else {
    tile.classList.add('share', 'own');
    tile.dataset.share = m.key;
    const note = el('div', 'own-share');
    const stop = el('button', 'stop-share', 'Stop sharing');
    stop.type = 'button';
    note.append(icon('share'), el('p', '', 'You are sharing your screen'), stop);
    tile.append(note, plate, pin);
  }
  return tile;
}

function updateTile(tile, m) {
  let name;
  if (m.kind === 'person') {
    const p = m.p;
    name = p.self ? `${p.name} (you)` : p.name;
    tile.classList.toggle('self', !!p.self);
    tile.classList.toggle('lost', !!p.lost);
    // Our camera as in a mirror (what people expect of a self view); never a screen.
    tile.classList.toggle('mirror', !!p.self && call.mirror);
    const avatar = tile.querySelector('.avatar');
    avatar.textContent = initials(p.name);
    avatar.style.background = avatarColor(m.id);
    // The video covers the initials; with the camera off the initials show again.
    const canvas = tile.querySelector('canvas.video');
    if (m.videoKey) {
      if (!canvas || canvas.dataset.key !== m.videoKey) {
        canvas?.remove();
        avatar.after(videoCanvas(m.videoKey));
      }
    } else if (canvas) {
      canvas.remove();
    }
    const badges = tile.querySelector('.badges');
    badges.replaceChildren();
    if (p.mic === false) badges.append(badge('muted', 'Muted'));
    if (p.cam === false) badges.append(badge('cam-off', 'Camera off'));
  } else if (m.kind === 'share') {
    const owner = call.people.get(m.st.peerId);
    name = `${(owner && owner.name) || m.st.name || personName(m.st.peerId)}'s screen`;
  } else {
    name = 'Your screen';
  }
  tile.querySelector('.tile-name').textContent = name;
  tile.querySelector('.pin').setAttribute('aria-label', `Pin ${name}`);
}

function renderGrid() {
  const grid = $('grid');
  if (!call) return;
  const models = tileModels();
  const keep = new Set(models.map((m) => m.tk));
  // A pinned person who left is not pinned again should they come back.
  if (call.pin && !keep.has(call.pin)) call.pin = null;
  for (const [tk, tile] of tileEls) {
    if (!keep.has(tk)) {
      tile.remove();
      tileEls.delete(tk);
    }
  }
  const ordered = models.map((m) => {
    let tile = tileEls.get(m.tk);
    if (!tile) {
      tile = makeTile(m);
      tileEls.set(m.tk, tile);
    }
    updateTile(tile, m);
    return tile;
  });
  const current = [...grid.children];
  if (current.length !== ordered.length || ordered.some((t, i) => current[i] !== t)) grid.replaceChildren(...ordered);
  grid.dataset.count = String(ordered.length);
  updateAlone();
  layout();
  applyQuality();
  applySpeaking();
}

// ---------------------------------------------------------------- layout

/** The tile a person pinned, else the newest screen share (a remote one before our own). */
function stageKey() {
  if (!call) return null;
  if (call.pin && tileEls.has(call.pin)) return call.pin;
  const shares = [...tileEls.keys()].filter((tk) => tk.startsWith('s:') && tk !== call.dismissed);
  const remote = shares.filter((tk) => tk !== `s:${OWN_SHARE_KEY}`);
  return remote.at(-1) || shares.at(-1) || null;
}

/** Width / height of what a tile shows, once its frames told us; null before. */
function tileAspect(tile) {
  const canvas = tile.querySelector('canvas.video');
  return canvas ? call.aspects.get(canvas.dataset.key) || null : null;
}

/**
 * Whole pixels (sharp edges and text), rounded down so a box never leaves its cell; the
 * epsilon keeps float noise (−1e-13 for an exact fit) from flooring a whole pixel away.
 */
function place(tile, r) {
  const px = (v) => `${Math.max(0, Math.floor(v + 1e-6))}px`;
  tile.style.left = px(r.x);
  tile.style.top = px(r.y);
  tile.style.width = px(r.w);
  tile.style.height = px(r.h);
}

/**
 * Places every tile: the area-maximising grid (layout.js) or, with something on the stage,
 * the stage tile big and the rest in a strip. Each tile's box has its video's aspect, so the
 * frame fills it without black bars.
 */
function layout() {
  if (!call) return;
  const grid = $('grid');
  const W = grid.clientWidth;
  const H = grid.clientHeight;
  if (W < 2 || H < 2) return;
  const tiles = [...grid.children].filter((t) => t.classList.contains('tile'));
  const stage = stageKey();
  const others = tiles.filter((t) => t.dataset.tile !== stage);
  // The cells' aspect: what most of these videos have (16:9 until frames say otherwise).
  const cellAspect = dominantAspect(others.map(tileAspect).filter(Boolean));
  if (stage) {
    const main = tileEls.get(stage);
    const s = spotlightRects(W, H, others.length, tileAspect(main) || DEFAULT_ASPECT, cellAspect, GAP);
    place(main, s.main);
    others.forEach((t, i) => place(t, fitRect(s.strip[i], tileAspect(t) || cellAspect)));
    grid.dataset.layout = 'spotlight';
    grid.dataset.side = s.side;
    delete grid.dataset.cols;
    delete grid.dataset.rows;
  } else {
    const g = gridRects(W, H, tiles.length, cellAspect, GAP);
    tiles.forEach((t, i) => place(t, fitRect(g.rects[i], tileAspect(t) || cellAspect)));
    grid.dataset.layout = 'grid';
    grid.dataset.cols = String(g.cols);
    grid.dataset.rows = String(g.rows);
    delete grid.dataset.side;
  }
  grid.dataset.stage = stage || '';
  for (const t of tiles) {
    const on = t.dataset.tile === stage;
    t.classList.toggle('pinned', on);
    t.classList.toggle('in-strip', !!stage && !on);
    const pin = t.querySelector('.pin');
    pin.setAttribute('aria-pressed', String(on));
    pin.dataset.tooltip = on ? 'Back to the grid (Esc)' : 'Pin';
  }
  grid.dataset.laidOut = `${W}x${H}`;
  reportTileSizes();
}

let layoutQueued = false;

/** One layout in the next frame, however many frames changed aspect meanwhile. */
function scheduleLayout() {
  if (layoutQueued) return;
  layoutQueued = true;
  requestAnimationFrame(() => {
    layoutQueued = false;
    layout();
  });
}

/** Pins a tile on the stage, or sends the stage tile back to the grid. */
function togglePin(tk) {
  if (!call || !tileEls.has(tk)) return;
  if (stageKey() === tk) {
    unpin();
    return;
  }
  call.pin = tk;
  layout();
}

/** Back to the grid (Escape); true when something was on the stage. */
function unpin() {
  const stage = stageKey();
  if (!stage) return false;
  if (call.pin === stage) call.pin = null;
  // A share that took the stage by itself stays in the grid until a new share starts.
  if (stageKey() === stage) call.dismissed = stage;
  layout();
  return true;
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
// `webgl` / `i420`: frames painted with WebGL / that came as I420.
// `bytesPerKey`: frame bytes painted per tile. `pulls`: pulls made (`next_frames` requests or
// socket messages), `messages`: their replies (batches, empty ones included). `transport`:
// where the frames come from, 'websocket' (the app's loopback socket) or 'ipc' (`next_frames`).
// `stages`: where the page's time goes per batch (summed ms, performance.now()): `waitMs` pull
// sent → its reply's message event (socket only), `parseMs` parseBatch, `uploadMs` / `drawMs`
// the WebGL texture uploads / draw calls (renderer.js `renderTimes`), `paintMs` the whole of
// painting a batch's frames (uploads, draws, 2D canvases, bookkeeping), `batches` batches
// handled, `frames` animation frames seen (requestAnimationFrame: what the page composited),
// `drawPasses` / `tileDraws` animation frames in which the page drew in `requestAnimationFrame`
// (the `layer: true` or `rafDraw` switches; 0 by default) / tiles drawn then, `superseded`
// frames replaced by their tile's next one before such a draw showed them. `drawnPerKey`:
// frames that reached the screen per tile (`perKey` counts those handed to the renderer; the
// same by default, where a frame is drawn when it arrives).
export const videoStats = {
  painted: 0, dropped: 0, ipcMs: 0, paintMs: 0, perKey: {}, bytesPerKey: {}, webgl: 0, i420: 0, messages: 0, pulls: 0,
  transport: null,
  stages: {
    batches: 0, waitMs: 0, parseMs: 0, uploadMs: 0, drawMs: 0, paintMs: 0, frames: 0, drawPasses: 0, tileDraws: 0, superseded: 0,
  },
  drawnPerKey: renderTimes.drawnPerKey,
};

/** Counts the animation frames the page gets (the compositor's rate, next to the paint rate). */
function countAnimationFrames() {
  if (typeof requestAnimationFrame !== 'function') return;
  const tick = () => {
    videoStats.stages.frames += 1;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

/**
 * Gets the frames for as long as the page lives: from the app's loopback WebSocket when it
 * has one (`frame_socket` → {port, token}; one WebSocket message per batch, which WebKit hands
 * the page whole, where an IPC reply arrives in 8 KiB pieces through the app's main thread),
 * else, or when the socket cannot be opened, by `next_frames` over the IPC. Same batches and
 * the same pull-and-acknowledge flow either way.
 */
async function receiveFrames() {
  let socket = null;
  try {
    socket = await invoke('frame_socket');
  } catch (e) {
    console.warn('video frames: no frame socket:', e);
  }
  if (socket && socket.port && socket.token && typeof WebSocket === 'function') {
    // A socket that closes after it worked (it should not) is opened again; one that does
    // not open leaves the frames to the IPC.
    while (await socketFrames(socket)) {
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    console.warn('video frames: the frame socket did not open; using the IPC');
  }
  videoStats.transport = 'ipc';
  pullFrames();
}

/**
 * Pulls batches over the app's frame socket until it closes: a text message names the batch
 * painted (its sequence number, `-` for none) and asks for the next, which comes as one binary
 * message (the `next_frames` reply's bytes). Resolves with whether it had opened.
 */
function socketFrames({ port, token }) {
  return new Promise((resolve) => {
    let opened = false;
    let ws;
    try {
      ws = new WebSocket(`ws://127.0.0.1:${Number(port)}/?token=${encodeURIComponent(token)}`);
    } catch (e) {
      console.warn('video frames:', e);
      resolve(false);
      return;
    }
    ws.binaryType = 'arraybuffer';
    let pulledAt = 0;
    const pull = (ack) => {
      videoStats.pulls += 1;
      ws.send(ack === null ? '-' : String(ack));
      pulledAt = performance.now();
    };
    ws.onopen = () => {
      opened = true;
      videoStats.transport = 'websocket';
      pull(null);
    };
    ws.onmessage = (ev) => {
      videoStats.stages.waitMs += performance.now() - pulledAt;
      // `earlyPull` (a bench switch, `window.__rtcioVideoTuning`): acknowledge and pull before
      // painting, so the round trip overlaps the painting (two batches in flight at most).
      if (window.__rtcioVideoTuning?.earlyPull) {
        const batch = readBatch(ev.data);
        pull(batch && batch.frames.length ? batch.seq : null);
        if (batch) paintBatch(batch);
      } else {
        pull(onFrames(ev.data));
      }
    };
    ws.onclose = () => resolve(opened);
  });
}

/**
 * Pulls video frames for as long as the page lives: one `next_frames {ack}` request at a
 * time, whose reply is a batch (the newest frame of every tile that had one waiting in Rust),
 * painted before the next request, which acknowledges it (`ack`: its sequence number). So the
 * page holds at most one batch, and Rust keeps only the newest frame of each tile meanwhile
 * (late frames replaced, never queued): a page that paints slowly gets several tiles per
 * reply instead of a backlog, and each batch costs two IPC messages.
 */
async function pullFrames() {
  let ack = null;
  let failing = false;
  for (;;) {
    let buf;
    videoStats.pulls += 1;
    try {
      buf = await invoke('next_frames', { ack });
    } catch (e) {
      // Rust refused the pull (it should not): ask again in a moment, holding nothing.
      if (!failing) console.warn('video frames:', e);
      failing = true;
      ack = null;
      await new Promise((resolve) => setTimeout(resolve, 1000));
      continue;
    }
    failing = false;
    ack = onFrames(buf);
  }
}

/**
 * Paints the frames of one batch; returns its sequence number for the next pull's
 * acknowledgement (null for an unreadable or empty batch: nothing to acknowledge).
 */
function onFrames(buf) {
  const batch = readBatch(buf);
  if (!batch) return null;
  paintBatch(batch);
  return batch.frames.length ? batch.seq : null;
}

/** `parseBatch`, counted (a message received, its parse time; unreadable: dropped). */
function readBatch(buf) {
  const t0 = performance.now();
  const batch = parseBatch(buf);
  videoStats.stages.parseMs += performance.now() - t0;
  videoStats.messages += 1;
  if (!batch) videoStats.dropped += 1;
  return batch;
}

/** Paints a parsed batch's frames, timed. */
function paintBatch(batch) {
  const stages = videoStats.stages;
  const t1 = performance.now();
  for (const f of batch.frames) {
    try {
      paintFrame(f);
    } catch (e) {
      videoStats.dropped += 1;
      console.warn('a video frame could not be painted:', e);
    }
  }
  stages.paintMs += performance.now() - t1;
  stages.batches += 1;
  stages.uploadMs = renderTimes.uploadMs;
  stages.drawMs = renderTimes.drawMs;
  stages.drawPasses = renderTimes.drawPasses;
  stages.tileDraws = renderTimes.tileDraws;
  stages.superseded = renderTimes.superseded;
}

function paintFrame(f) {
  const arrived = performance.timeOrigin + performance.now();
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
  // `noPaint` (a bench switch, `window.__rtcioVideoTuning`): everything but the canvas work, to
  // measure what receiving and parsing alone allow.
  const how = window.__rtcioVideoTuning?.noPaint ? 'none' : paintVideo(canvas, f);
  if (!how) {
    videoStats.dropped += 1;
    return;
  }
  canvas.dataset.painted = String(Number(canvas.dataset.painted || 0) + 1);
  canvas.dataset.painter = how;
  // The tile takes the video's real aspect (Rust keeps it when scaling; 2 % absorbs rounding).
  const aspect = f.width / f.height;
  const known = call.aspects.get(f.key);
  if (!known || Math.abs(known - aspect) > aspect * 0.02) {
    call.aspects.set(f.key, aspect);
    scheduleLayout();
  }
  videoStats.painted += 1;
  if (how === 'webgl') videoStats.webgl += 1;
  if (f.format === 'i420') videoStats.i420 += 1;
  videoStats.perKey[f.key] = (videoStats.perKey[f.key] || 0) + 1;
  videoStats.bytesPerKey[f.key] = (videoStats.bytesPerKey[f.key] || 0) + f.bytes;
  videoStats.ipcMs += Math.max(0, arrived - f.sentAtUs / 1000);
  videoStats.paintMs += performance.timeOrigin + performance.now() - arrived;
}

// ---------------------------------------------------------------- who is speaking

/** A level for a tile id (dBFS); it counts until LEVEL_HOLD_MS pass without a new one. */
function setLevel(id, dbfs) {
  if (!call) return;
  call.levels.set(id, dbfs);
  clearTimeout(levelTimers.get(id));
  levelTimers.set(id, setTimeout(() => {
    levelTimers.delete(id);
    if (!call) return;
    call.levels.delete(id);
    applySpeaking();
  }, LEVEL_HOLD_MS));
  applySpeaking();
}

function applySpeaking() {
  if (!call) return;
  const muted = new Set([...call.people].filter(([, p]) => p.mic === false).map(([id]) => id));
  const { speaking, loudest } = speakers(call.levels, { muted });
  for (const tile of tileEls.values()) {
    const id = tile.dataset.id;
    if (id === undefined) continue;
    tile.classList.toggle('speaking', speaking.has(id));
    tile.classList.toggle('loudest', loudest === id);
  }
}

/** `mic-level {rms, peak}`: our own level (the start screen's meter listens too). */
function onMicLevel(ev) {
  if (call && ev) setLevel(call.selfId, rmsToDbfs(ev.rms));
}

/** `audio-level {peerId, dbfs}`: a remote person's level (src-tauri/src/session.rs). */
function onAudioLevel(ev) {
  if (!call || !ev || typeof ev.peerId !== 'string') return;
  setLevel(ev.peerId, Number(ev.dbfs));
}

// ---------------------------------------------------------------- controls, banner, toasts

function setToggle(btn, on, tip) {
  btn.setAttribute('aria-pressed', String(on));
  btn.dataset.tooltip = tip;
}

function updateControls() {
  setToggle($('toggle-mic'), call.mic, call.mic ? 'Mute (M)' : 'Unmute (M)');
  setToggle($('toggle-cam'), call.cam, call.cam ? 'Turn camera off (V)' : 'Turn camera on (V)');
  const picking = !$('monitor').hidden;
  setToggle($('toggle-share'), call.sharing,
    call.sharing ? 'Stop sharing (S)' : picking ? 'Share the chosen screen (S)' : 'Share your screen (S)');
}

/** "A", "A and B", "A, B and C". */
function listNames(names) {
  if (names.length <= 1) return names.join('');
  return `${names.slice(0, -1).join(', ')} and ${names.at(-1)}`;
}

function updateBanner() {
  const banner = $('banner');
  let text = '';
  if (call && call.signaling !== 'connected') {
    text = 'Connection to the server lost — reconnecting…';
    banner.dataset.kind = 'signaling';
  } else if (call && call.restarting.size) {
    const names = [...call.restarting].map((id) => call.people.get(id)?.name || personName(id));
    text = `Reconnecting to ${listNames(names)}…`;
    banner.dataset.kind = 'peer';
  }
  $('banner-text').textContent = text;
  banner.hidden = !text;
}

function setSignaling(state) {
  if (!call) return;
  const was = call.signaling;
  call.signaling = state;
  updateBanner();
  if (was !== 'connected' && state === 'connected') showToast('Reconnected');
}

function setPeerRestarting(id, restarting) {
  if (!call) return;
  clearTimeout(peerTimers.get(id));
  peerTimers.delete(id);
  if (restarting && call.people.has(id)) call.restarting.add(id);
  else call.restarting.delete(id);
  updateBanner();
}

/** A short confirmation at the bottom of either screen. */
export function showToast(text, ms = 4000) {
  const t = el('div', 'toast', text);
  $('toasts').append(t);
  setTimeout(() => t.remove(), ms);
}


async function copyInvite(link) {
  if (!link) return;
  const ok = await copyText(link);
  showToast(ok ? 'Link copied' : `Could not copy — the link is ${link}`);
}

function fillInvites() {
  const list = $('invite-links');
  list.replaceChildren();
  for (const link of call.invites) {
    const li = el('li');
    const btn = el('button', 'copy-invite');
    btn.type = 'button';
    btn.setAttribute('aria-label', `Copy ${link}`);
    btn.append(icon('copy'), el('span', '', 'Copy'));
    btn.addEventListener('click', () => copyInvite(link));
    li.append(el('code', 'invite-link', link), btn);
    list.append(li);
  }
  $('copy-link').hidden = call.invites.length === 0;
}

/** "You are alone" while nobody else is here (their screen share counts as someone). */
function updateAlone() {
  const others = call.people.size > 1 || [...call.streams.values()].some((st) => st.peerId !== call.selfId);
  $('alone').hidden = others;
  $('stage').classList.toggle('is-alone', !others);
}

function setChatOpen(open, { focus = false } = {}) {
  if (!call) return;
  call.chatOpen = open;
  $('chat').hidden = !open;
  setToggle($('toggle-chat'), open, open ? 'Hide chat (C)' : 'Show chat (C)');
  if (open) call.unread = 0;
  updateUnread();
  // The stage changed size: lay it out now rather than a frame later.
  layout();
  if (open && focus) $('chat-input').focus();
}

function updateUnread() {
  const count = $('chat-unread');
  const n = call ? call.unread : 0;
  count.replaceChildren(el('span', '', n > 99 ? '99+' : String(n)), el('span', 'sr-only', ' unread'));
  count.dataset.count = String(n);
  count.hidden = n === 0;
}

// ---------------------------------------------------------------- screen share

function hideMonitorPicker() {
  const picker = $('monitor');
  picker.hidden = true;
  picker.replaceChildren();
  picker.parentElement.classList.remove('picking');
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
      renderGrid();
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
      picker.parentElement.classList.add('picking');
      updateControls();
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
  if (call) {
    updateControls();
    renderGrid();
  }
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

/** Leaves at once (no "are you sure?"); `toast` confirms it on the start screen. */
async function leave(message, { toast = false } = {}) {
  const wasInCall = call !== null;
  exitCall(message);
  if (!wasInCall) return;
  if (toast) showToast('You left the call');
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
  const who = el('span', 'who', msg.name || 'Someone');
  const text = el('span', 'text', msg.text);
  const when = el('span', 'when', formatTime(msg.at));
  li.append(who, text, when);
  const log = $('chat-log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

function addSystem(text) {
  const li = el('li', 'system', text);
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

/** The longest name shown, in characters (the server caps join names at 64 too). */
const MAX_NAME_CHARS = 64;

/**
 * A remote-supplied name as the page shows it, or null when nothing printable is left. Names
 * reach us from peers (stream announcements) as well as the server: control characters and
 * bidirectional overrides (which can make a name read as someone else's) are removed, and a
 * name is cut at MAX_NAME_CHARS so a 10 000-character name cannot take the screen.
 */
export function displayName(raw) {
  if (typeof raw !== 'string') return null;
  // eslint-disable-next-line no-control-regex
  const clean = raw.replace(/[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g, '').trim();
  if (!clean) return null;
  const chars = Array.from(clean);
  return chars.length > MAX_NAME_CHARS ? `${chars.slice(0, MAX_NAME_CHARS - 1).join('')}…` : clean;
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
      setSignaling(ev.state === 'connected' ? 'connected' : 'reconnecting');
      return;
    default:
  }
  if (!call || typeof ev.id !== 'string' || ev.id === call.selfId) return;
  if (ev.type === 'user-connected') {
    const p = call.people.get(ev.id);
    const name = displayName(ev.name) ?? personName(ev.id);
    if (p) p.name = name;
    else {
      call.people.set(ev.id, { name, mic: undefined, cam: undefined });
      addSystem(`${name} joined`);
    }
    renderGrid();
    updateBanner();
  } else if (ev.type === 'user-disconnected') {
    const p = call.people.get(ev.id);
    for (const [key, st] of call.streams) if (st.peerId === ev.id) call.streams.delete(key);
    if (p) {
      call.people.delete(ev.id);
      addSystem(`${p.name} left`);
    }
    setPeerRestarting(ev.id, false);
    renderGrid();
  }
}

/**
 * Planned `connection-state {state: "reconnecting"|"connected", peerId?}` (ui/README.md): with
 * a peerId that peer's connection is restarting, without one it is signaling.
 */
function onConnectionState(ev) {
  if (!call || !ev || typeof ev.state !== 'string') return;
  const up = ev.state === 'connected';
  if (typeof ev.peerId === 'string' && ev.peerId) setPeerRestarting(ev.peerId, !up);
  else setSignaling(up ? 'connected' : 'reconnecting');
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
  const id = ev.id;
  const p = call.people.get(id);
  if (connected) {
    if (p) p.lost = false;
    else call.people.set(id, { name: personName(id) });
    setPeerRestarting(id, false);
  } else if (p) {
    p.lost = true;
    // Still in the room after the grace period: the connection is being re-made.
    clearTimeout(peerTimers.get(id));
    peerTimers.set(id, setTimeout(() => {
      peerTimers.delete(id);
      if (call && call.people.get(id)?.lost) setPeerRestarting(id, true);
    }, PEER_GRACE_MS));
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
  const name = displayName(ev.name);
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
    call.aspects.delete(ev.key);
    renderGrid();
  }
}

function onChat(msg) {
  if (!call || !msg || typeof msg.text !== 'string') return;
  addChat(msg, false);
  if (!call.chatOpen) {
    call.unread += 1;
    updateUnread();
  }
}

// ---------------------------------------------------------------- wiring

/** Where typing goes to text, so single-key shortcuts must not fire. */
function isTextField(target) {
  if (!target || !target.tagName) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === 'TEXTAREA' || tag === 'SELECT') return true;
  if (tag !== 'INPUT') return false;
  return !['button', 'checkbox', 'radio', 'range', 'color', 'file', 'submit', 'reset'].includes(String(target.type).toLowerCase());
}

/** Call shortcuts: M mic, V camera, S share, C chat, Escape back to the grid. */
function onKey(ev) {
  if (!call || ev.defaultPrevented) return;
  if (ev.key === 'Escape') {
    if (!$('monitor').hidden) {
      hideMonitorPicker();
      updateControls();
      ev.preventDefault();
    } else if (!isTextField(ev.target) && unpin()) {
      ev.preventDefault();
    }
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || ev.repeat || isTextField(ev.target)) return;
  switch (ev.key.toLowerCase()) {
    case 'm': setMedia(!call.mic, call.cam); break;
    case 'v': setMedia(call.mic, !call.cam); break;
    case 's': toggleShare(); break;
    case 'c': setChatOpen(!call.chatOpen, { focus: true }); break;
    default: return;
  }
  ev.preventDefault();
}

/** Puts each control's icons in (two for toggles: CSS shows one by aria-pressed). */
function decorateControls() {
  for (const btn of document.querySelectorAll('button[data-icon]')) {
    btn.prepend(icon(btn.dataset.icon, 'on'));
    if (btn.dataset.iconOff) btn.querySelector('.icon').after(icon(btn.dataset.iconOff, 'off'));
  }
}

async function main() {
  decorateControls();
  $('room').value = randomRoomId();
  $('new-room').addEventListener('click', () => { $('room').value = randomRoomId(); });
  $('test-speaker').addEventListener('click', testSpeaker);
  $('server-host').addEventListener('change', applyServerMode);
  $('room').addEventListener('input', takeInvite);
  $('server-url').addEventListener('input', takeInvite);
  $('server-url-choice').addEventListener('change', () => { applyServerMode(); $('server-url').focus(); });
  $('join-form').addEventListener('submit', onJoin);
  $('chat-form').addEventListener('submit', onChatSend);
  $('toggle-mic').addEventListener('click', () => call && setMedia(!call.mic, call.cam));
  $('toggle-cam').addEventListener('click', () => call && setMedia(call.mic, !call.cam));
  $('toggle-share').addEventListener('click', toggleShare);
  $('toggle-chat').addEventListener('click', () => call && setChatOpen(!call.chatOpen));
  $('chat-close').addEventListener('click', () => call && setChatOpen(false));
  $('copy-link').addEventListener('click', () => call && copyInvite(call.invites[0]));
  $('leave').addEventListener('click', () => leave(null, { toast: true }));
  // A click on a tile (or its pin button) pins it; on the stage tile, back to the grid.
  $('grid').addEventListener('click', (ev) => {
    const tile = ev.target.closest('.tile');
    if (!tile) return;
    if (ev.target.closest('.stop-share')) toggleShare();
    else togglePin(tile.dataset.tile);
  });
  // Window resizes, the chat opening: the stage's size is what matters.
  new ResizeObserver(() => layout()).observe($('grid'));
  document.addEventListener('keydown', onKey);

  try {
    await Promise.all([
      listen('room-event', onRoomEvent),
      listen('connection-state', onConnectionState),
      listen('media-state', onMediaState),
      listen('chat', onChat),
      listen('peer-connect', (ev) => onPeer(true, ev)),
      listen('peer-disconnect', (ev) => onPeer(false, ev)),
      listen('stream-added', onStreamAdded),
      listen('stream-removed', onStreamRemoved),
      listen('mic-level', onMicLevel),
      listen('audio-level', onAudioLevel),
      // The call's device menu and what happens when a device stops working (devices.js).
      initDevices({
        inCall: () => !!call,
        setOff: (kind) => call && setMedia(kind === 'microphone' ? false : call.mic, kind === 'camera' ? false : call.cam),
        message: (text) => showError($('call-error'), text),
        toast: (text) => showToast(text),
      }),
      // File drops on tiles and the transfers panel (which opens the side panel if closed).
      initTransfers({
        names: (id) => call && call.people.get(id)?.name,
        onActivity: () => call && !call.chatOpen && setChatOpen(true),
      }),
      initQuality(),
      // I420 frames (1.5 bytes a pixel instead of 4) when WebGL 2 can convert them here.
      invoke('video_formats', { formats: webgl2Available() ? ['rgba', 'i420'] : ['rgba'] }),
    ]);
  } catch (err) {
    showError($('start-error'), `The app's event bridge failed: ${errorText(err)}`);
  }
  // Every tile's frames (the start screen's preview too), as raw bytes (never JSON), pulled
  // one batch at a time.
  receiveFrames();
  countAnimationFrames();
  await loadSettings();
  await loadDevices();
  watchPickers();
  try {
    await initPreview();
  } catch (err) {
    showError($('start-error'), `The preview failed: ${errorText(err)}`);
  }
  document.body.dataset.ready = 'true';
  window.__rtcioVideo = videoStats;
}

main();
