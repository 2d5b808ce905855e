// File transfer in the call screen: drop files on a person's tile to send them (`send_file`),
// and a panel listing transfers both ways with a progress bar, a Cancel button
// (`cancel_transfer`) while running, the saved path when done and the reason when it failed.
//
// Rust events: `file-progress {tid, peerId, direction, name, size, bytes}`,
// `file-done {tid, peerId, direction, name, path?}`, `file-error {tid, peerId, direction, message}`.
// Window drag and drop comes from Tauri as `tauri://drag-over {position}`,
// `tauri://drag-drop {paths, position}` and `tauri://drag-leave`; `position` is in physical
// pixels of the webview.
import { invoke, listen } from './bridge.js';

/** Transfers shown, by tid: {row, direction, peerId, name, size, bytes, state}. */
const transfers = new Map();
let nameOf = (id) => `Guest ${String(id).slice(0, 4)}`;
/** Called when a transfer first shows (the app opens the side panel the list lives in). */
let onActivity = () => {};

/** "1.5 MB" style sizes (decimal units, one decimal from MB up). */
export function formatBytes(n) {
  const v = Number(n) || 0;
  if (v < 1000) return `${v} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let x = v / 1000;
  let i = 0;
  while (x >= 1000 && i < units.length - 1) { x /= 1000; i += 1; }
  return `${x.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** Whole percent of `bytes` in `size` (an empty file is 100 % done). */
export function percent(bytes, size) {
  const s = Number(size) || 0;
  if (s <= 0) return 100;
  return Math.max(0, Math.min(100, Math.floor((Number(bytes) || 0) * 100 / s)));
}

/** The last component of a path (either separator). */
export function baseName(path) {
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  return parts.length ? parts[parts.length - 1] : String(path);
}

/**
 * The remote person's tile under a drag position (physical pixels, as Tauri reports it), or
 * null: our own tile, screen-share tiles and anything else are not drop targets.
 */
export function peerTileAt(position, dpr = window.devicePixelRatio || 1) {
  if (!position || typeof position.x !== 'number' || typeof position.y !== 'number') return null;
  const screen = document.getElementById('call-screen');
  if (!screen || screen.hidden) return null;
  const el = document.elementFromPoint(position.x / dpr, position.y / dpr);
  const tile = el && el.closest ? el.closest('.tile[data-id]') : null;
  if (!tile || tile.classList.contains('self')) return null;
  return tile;
}

function panel() {
  return document.getElementById('transfers');
}

function list() {
  return document.getElementById('transfer-list');
}

function setNote(text) {
  const note = document.getElementById('transfer-note');
  if (!note) return;
  note.textContent = text || '';
  note.hidden = !text;
  if (text) panel().hidden = false;
}

/** The row of a transfer, made on first sight. */
function rowFor(tid, fields) {
  let t = transfers.get(tid);
  if (!t) {
    const row = document.createElement('li');
    row.className = 'transfer';
    row.dataset.tid = tid;
    const title = document.createElement('div');
    title.className = 'transfer-title';
    const bar = document.createElement('progress');
    bar.max = 100;
    bar.value = 0;
    const status = document.createElement('div');
    status.className = 'transfer-status hint';
    const cancel = document.createElement('button');
    cancel.type = 'button';
    cancel.className = 'secondary transfer-cancel';
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', () => cancelTransfer(tid));
    row.append(title, bar, cancel, status);
    list().prepend(row);
    t = { row, title, bar, status, cancel, direction: 'send', peerId: '', name: '', size: 0, bytes: 0, state: 'running' };
    transfers.set(tid, t);
    panel().hidden = false;
    onActivity();
  }
  Object.assign(t, Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined && v !== null)));
  t.row.dataset.direction = t.direction;
  t.row.dataset.state = t.state;
  const who = nameOf(t.peerId) || t.peerId;
  t.title.textContent = t.direction === 'receive' ? `${t.name} from ${who}` : `${t.name} to ${who}`;
  return t;
}

function showProgress(t) {
  const p = percent(t.bytes, t.size);
  t.bar.value = p;
  t.bar.textContent = `${p} %`;
  t.row.dataset.percent = String(p);
  t.status.textContent = `${formatBytes(t.bytes)} of ${formatBytes(t.size)}`;
}

function onProgress(ev) {
  if (!ev || typeof ev.tid !== 'string') return;
  const known = transfers.get(ev.tid);
  if (known && known.state !== 'running') return; // late progress after done / error
  const t = rowFor(ev.tid, {
    direction: ev.direction === 'receive' ? 'receive' : 'send',
    peerId: ev.peerId,
    name: ev.name,
    size: ev.size,
  });
  // Progress only moves forward on screen, whatever order events come in.
  t.bytes = Math.max(t.bytes, Number(ev.bytes) || 0);
  showProgress(t);
}

function onDone(ev) {
  if (!ev || typeof ev.tid !== 'string') return;
  const t = rowFor(ev.tid, { direction: ev.direction === 'receive' ? 'receive' : 'send', peerId: ev.peerId, name: ev.name });
  t.state = 'done';
  t.row.dataset.state = 'done';
  t.bytes = t.size;
  showProgress(t);
  t.status.textContent = ev.path ? `Saved to ${ev.path}` : `Sent ${formatBytes(t.size)}`;
  t.cancel.hidden = true;
}

function onError(ev) {
  if (!ev || typeof ev.tid !== 'string') return;
  const t = rowFor(ev.tid, { direction: ev.direction === 'receive' ? 'receive' : 'send', peerId: ev.peerId });
  if (!t.name) rowFor(ev.tid, { name: 'file' });
  t.state = 'error';
  t.row.dataset.state = 'error';
  t.status.textContent = `Failed: ${ev.message || 'unknown error'}`;
  t.status.classList.add('error-text');
  t.cancel.hidden = true;
}

async function cancelTransfer(tid) {
  const t = transfers.get(tid);
  if (!t || t.state !== 'running') return;
  t.cancel.disabled = true;
  try {
    await invoke('cancel_transfer', { tid });
  } catch (err) {
    t.cancel.disabled = false;
    setNote(`Could not cancel: ${(err && err.message) || err}`);
  }
}

/** Sends each dropped path to the person whose tile is under the drop. */
export async function onDrop(ev) {
  clearHighlight();
  const paths = ev && Array.isArray(ev.paths) ? ev.paths.filter((p) => typeof p === 'string' && p) : [];
  if (!paths.length) return;
  const tile = peerTileAt(ev.position);
  if (!tile) {
    const screen = document.getElementById('call-screen');
    if (screen && !screen.hidden) setNote("Drop files on a person's tile to send them.");
    return;
  }
  setNote(null);
  const peerId = tile.dataset.id;
  for (const path of paths) {
    try {
      const tid = await invoke('send_file', { peerId, path });
      if (typeof tid === 'string') {
        const t = rowFor(tid, { direction: 'send', peerId, name: transfers.get(tid)?.name || baseName(path) });
        if (t.state === 'running') showProgress(t);
      }
    } catch (err) {
      setNote(`Could not send ${baseName(path)}: ${(err && err.message) || err}`);
    }
  }
}

let highlighted = null;

function clearHighlight() {
  if (highlighted) highlighted.classList.remove('drop-target');
  highlighted = null;
}

function onDragOver(ev) {
  const tile = peerTileAt(ev && ev.position);
  if (tile === highlighted) return;
  clearHighlight();
  if (tile) {
    tile.classList.add('drop-target');
    highlighted = tile;
  }
}

/**
 * Starts listening to transfer and drag-and-drop events. `names(id)` gives a person's display
 * name for the rows; `onActivity()` runs when a transfer first shows. Resolves when every
 * listener is registered.
 */
export function initTransfers({ names, onActivity: activity } = {}) {
  if (typeof names === 'function') nameOf = (id) => names(id) || `Guest ${String(id).slice(0, 4)}`;
  if (typeof activity === 'function') onActivity = activity;
  return Promise.all([
    listen('file-progress', onProgress),
    listen('file-done', onDone),
    listen('file-error', onError),
    listen('tauri://drag-drop', onDrop),
    listen('tauri://drag-over', onDragOver),
    listen('tauri://drag-leave', clearHighlight),
  ]);
}
