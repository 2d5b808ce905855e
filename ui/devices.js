// Devices during a call (issue 13): the call screen's device menu switches the camera,
// microphone and speaker without leaving (`switch_camera {device}`, `switch_microphone
// {device}`, `switch_speaker {speaker}`: Rust swaps the source under the running track, no
// renegotiation); `device-lost {kind, message, fallback}` says a device stopped working mid-call
// and what Rust fell back to (null: that kind is off now). While the menu is open the lists are
// polled every 2 s, so a device plugged in appears in it.
import { invoke, listen } from './bridge.js';

const $ = (id) => document.getElementById(id);

/** How often the open menu asks for the device lists (hotplug). */
export const POLL_MS = 2000;

const PICKERS = [
  { select: 'call-camera', list: 'cameras', cmd: 'switch_camera', arg: 'device', kind: 'camera' },
  { select: 'call-microphone', list: 'microphones', cmd: 'switch_microphone', arg: 'device', kind: 'microphone' },
  { select: 'call-speaker', list: 'speakers', cmd: 'switch_speaker', arg: 'speaker', kind: 'speaker' },
];

let hooks = null;
let poll = null;
/** The device of each kind in use now (ids), kept across list refreshes. */
const current = { camera: null, microphone: null, speaker: null };
let lastLists = '';

/**
 * `h`: {inCall(): bool, setOff(kind): turns camera / microphone off (tells the room),
 * message(text): shows it above the control bar, toast(text)}.
 */
export async function initDevices(h) {
  hooks = h;
  $('device-menu-btn').addEventListener('click', () => setDeviceMenuOpen($('device-menu').hidden));
  for (const p of PICKERS) $(p.select).addEventListener('change', () => switchTo(p));
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !$('device-menu').hidden) setDeviceMenuOpen(false);
  });
  await listen('device-lost', onDeviceLost);
}

/** The devices the call started with (the start screen's picks). */
export function setCurrentDevices({ camera = null, microphone = null, speaker = null } = {}) {
  Object.assign(current, { camera, microphone, speaker });
}

/** Opens (and starts polling the lists) or closes the menu. */
export function setDeviceMenuOpen(open) {
  $('device-menu').hidden = !open;
  $('device-menu-btn').setAttribute('aria-expanded', String(open));
  clearInterval(poll);
  poll = null;
  if (open) {
    lastLists = '';
    refresh();
    poll = setInterval(refresh, POLL_MS);
  }
}

async function refresh() {
  let lists;
  try {
    lists = await invoke('list_devices');
  } catch {
    return;
  }
  const key = JSON.stringify(lists);
  if (key === lastLists) return;
  lastLists = key;
  for (const p of PICKERS) fill($(p.select), (lists && lists[p.list]) || [], current[p.kind]);
}

function fill(select, devices, chosen) {
  select.replaceChildren();
  for (const d of devices) {
    const opt = document.createElement('option');
    opt.value = d.id;
    opt.textContent = d.isDefault ? `${d.name} (default)` : d.name;
    select.append(opt);
  }
  const pick = devices.find((d) => d.id === chosen) || devices.find((d) => d.isDefault) || devices[0];
  select.value = pick ? pick.id : '';
  select.disabled = devices.length === 0;
}

async function switchTo(p) {
  const select = $(p.select);
  const id = select.value;
  const before = current[p.kind];
  try {
    await invoke(p.cmd, { [p.arg]: id });
    current[p.kind] = id;
    const name = select.selectedOptions[0]?.textContent || id;
    hooks?.toast(`Switched the ${p.kind} to ${name}`);
  } catch (err) {
    if (before) select.value = before;
    hooks?.message(`Could not switch the ${p.kind}: ${err && err.message ? err.message : String(err)}`);
  }
}

function onDeviceLost(ev) {
  if (!ev || !hooks || !hooks.inCall()) return;
  const kind = ev.kind === 'microphone' ? 'microphone' : 'camera';
  hooks.message(String(ev.message || `Your ${kind} stopped working.`));
  if (ev.fallback && ev.fallback.id) {
    current[kind] = ev.fallback.id;
    const p = PICKERS.find((x) => x.kind === kind);
    if (p && [...$(p.select).options].some((o) => o.value === ev.fallback.id)) $(p.select).value = ev.fallback.id;
  } else {
    hooks.setOff(kind);
  }
  // The lists changed (the device is gone): ask again at the next poll.
  lastLists = '';
}
