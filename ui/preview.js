// Start-screen self preview: the chosen camera painted on #preview-canvas (frames keyed
// `preview/camera` on the same binary video channel as the call) and a level meter fed by
// `mic-level {rms, peak}` events (linear 0..1, about ten a second). Rust opens the devices
// (`start_preview` / `stop_preview`); joining stops the preview there, leaving restarts it here.
import { invoke, listen } from './bridge.js';

/** Tile key of the preview frames (src-tauri/src/preview.rs `PREVIEW_KEY`). */
export const PREVIEW_KEY = 'preview/camera';

const $ = (id) => document.getElementById(id);

/** Counts a restart so that an older start_preview answer does not overwrite a newer one. */
let generation = 0;

/** A picker's device id, or null for "none" (an empty value or a disabled picker). */
function chosen(select) {
  return select && !select.disabled && select.value ? select.value : null;
}

/**
 * Meter fill for a level: dBFS mapped from -60..0 onto 0..1, so speech (around -30 dBFS)
 * sits mid-scale instead of hugging the left edge as linear RMS would.
 */
export function meterFraction(rms) {
  if (!(rms > 0)) return 0;
  const db = 20 * Math.log10(Math.min(1, rms));
  return Math.max(0, Math.min(1, (db + 60) / 60));
}

/** Shows a `mic-level` event on the meter. */
export function onMicLevel(ev) {
  const bar = $('mic-meter-fill');
  if (!bar || !ev) return;
  const f = meterFraction(Number(ev.rms));
  bar.style.width = `${(f * 100).toFixed(1)}%`;
  bar.parentElement.dataset.level = f.toFixed(3);
  bar.parentElement.classList.toggle('clipping', Number(ev.peak) >= 0.99);
}

/** Paints a parsed frame ({key, width, height, pixels}) if it is a preview frame; true then. */
export function paintPreview(f) {
  if (!f || f.key !== PREVIEW_KEY) return false;
  const canvas = $('preview-canvas');
  if (!canvas || $('start-screen').hidden) return true;
  if (canvas.width !== f.width) canvas.width = f.width;
  if (canvas.height !== f.height) canvas.height = f.height;
  canvas.getContext('2d').putImageData(new ImageData(f.pixels, f.width, f.height), 0, 0);
  canvas.dataset.painted = String(Number(canvas.dataset.painted || 0) + 1);
  canvas.hidden = false;
  return true;
}

function resetView() {
  const canvas = $('preview-canvas');
  if (canvas) canvas.hidden = true;
  onMicLevel({ rms: 0, peak: 0 });
}

/** (Re)starts the preview with the pickers' devices; problems show under the preview. */
export async function startPreview() {
  const gen = ++generation;
  const camera = chosen($('camera'));
  const microphone = chosen($('microphone'));
  resetView();
  // A camera previews as a mirror; a synthetic test pattern as it is (its text stays readable).
  const option = $('camera') && $('camera').selectedOptions[0];
  $('preview-canvas').classList.toggle('mirror', !!camera && !(option && option.dataset.synthetic === 'true'));
  const note = $('preview-note');
  try {
    const info = await invoke('start_preview', { camera, microphone });
    if (gen !== generation) return;
    const errors = info && Array.isArray(info.errors) ? info.errors : [];
    note.textContent = errors.join(' ');
    note.hidden = errors.length === 0;
  } catch (err) {
    if (gen !== generation) return;
    note.textContent = `The preview did not start: ${(err && err.message) || String(err)}`;
    note.hidden = false;
  }
}

/** Forgets the preview on this side (Rust already stopped it when joining). */
export function previewStopped() {
  generation += 1;
  resetView();
}

/** Listens for levels and picker changes; call once the pickers are filled. */
export async function initPreview() {
  $('camera').addEventListener('change', startPreview);
  $('microphone').addEventListener('change', startPreview);
  await listen('mic-level', onMicLevel);
  await startPreview();
}
