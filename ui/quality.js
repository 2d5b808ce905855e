// Per-peer connection quality on the call's tiles: `peer-quality {id, rttMs, kbpsIn, kbpsOut,
// lossPct, estimateKbps, path, level}` (about once a second, src-tauri/src/quality.rs) becomes a three-bar
// indicator on that person's tile (class good / fair / poor) with the numbers as its tooltip.
import { listen } from './bridge.js';

const LEVELS = ['good', 'fair', 'poor'];
/** Latest reading per peer id, so a re-rendered grid gets its indicators back at once. */
const latest = new Map();

/** Tooltip text for a reading. */
export function qualityText(q) {
  const n = (x, digits = 0) => (Number.isFinite(Number(x)) ? Number(x).toFixed(digits) : '–');
  const rtt = q.rttMs === null || q.rttMs === undefined ? '–' : n(q.rttMs);
  const est = Number.isFinite(Number(q.estimateKbps)) && q.estimateKbps !== null ? ` · link estimate ${n(q.estimateKbps)} kbit/s` : '';
  const via = q.path === 'relay' ? ' · via a TURN relay' : q.path === 'direct' ? ' · direct' : '';
  return `Connection ${LEVELS.includes(q.level) ? q.level : 'unknown'} · RTT ${rtt} ms · in ${n(q.kbpsIn)} kbit/s · out ${n(q.kbpsOut)} kbit/s · loss ${n(q.lossPct, 1)} %${est}${via}`;
}

function indicator(tile) {
  let el = tile.querySelector('.quality');
  if (!el) {
    el = document.createElement('span');
    el.className = 'quality';
    el.setAttribute('role', 'img');
    for (let i = 0; i < 3; i++) el.append(document.createElement('i'));
    tile.append(el);
  }
  return el;
}

function show(id) {
  const q = latest.get(id);
  const tile = document.querySelector(`#grid .tile[data-id="${CSS.escape(id)}"]`);
  if (!q || !tile) return;
  const el = indicator(tile);
  const level = LEVELS.includes(q.level) ? q.level : 'unknown';
  el.className = `quality ${level}`;
  el.dataset.level = level;
  el.title = qualityText(q);
  el.setAttribute('aria-label', el.title);
}

/** Handles one `peer-quality` event. */
export function onPeerQuality(q) {
  if (!q || typeof q.id !== 'string') return;
  latest.set(q.id, q);
  show(q.id);
}

/** Puts the indicators back after the grid was re-rendered. */
export function applyQuality() {
  for (const id of latest.keys()) show(id);
}

/** Forgets every reading (on leaving a call). */
export function clearQuality() {
  latest.clear();
}

/** Starts listening. */
export function initQuality() {
  return listen('peer-quality', onPeerQuality);
}
