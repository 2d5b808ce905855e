// guest.js — the browser guest page rtcio-server serves at `/`.
//
// `http(s)://HOST:PORT/#room=ROOM[&token=T]` joins ROOM the way the desktop app and the rtc.io
// demo do (shared/PROTOCOL.md §7.3, §8), with the rtc.io browser client in rtcio.js:
// - before connecting: `GET /ice-servers` (TURN credentials; `Authorization: Bearer T` with a
//   token) — the rtc.io client takes its ICE servers once, at connect; 404 / error → its default;
// - srv `check-room {roomId[, password]}` (asks for the password only when the room has one),
//   then srv `join-room {roomId, name[, password]}`, waiting for `join-ok` / `join-error`;
// - camera + mic announced as `camera {id, name, camera: <stream>}` before joining, a screen as
//   `screenshare {id, name, stream: <stream>}`; stopping it untracks the stream, removes its
//   tracks and sends `stopScreenShare` through the server `{id, roomId}` and over ctrl `{id}`;
// - `media-state {id, mic, cam, roomId}` through the server and over ctrl, again to each peer
//   on `peer-connect`;
// - chat on the broadcast channel `chat`, event `msg {name, text, at}`.
// Everything received is untrusted: payloads are checked, text only ever set as textContent.

import { connect, RTCIOStream, errText } from "./rtcio.js";
import { icon } from "./icons.js";
import { copyText } from "./clipboard.js";
import { gridRects, spotlightRects, fitRect, dominantAspect, DEFAULT_ASPECT, TILE_GAP } from "./layout.js";

const MAX_NAME_CHARS = 64;
const MAX_CHAT_CHARS = 2000;
const REQUEST_TIMEOUT_MS = 10000;
const ICE_FETCH_TIMEOUT_MS = 4000;
const SCREEN_EVENTS = new Set(["screenshare", "screen"]);

const $ = (id) => document.getElementById(id);

// ─── small pure helpers ─────────────────────────────────────────────────────────────────────────

/**
 * `#room=R&token=T&name=N&relay=1` → {room, token, name, relay} (missing ones empty / false).
 * `relay=1`: relayed (TURN) candidates only, so peers never learn this browser's addresses.
 */
export function parseFragment(hash) {
  const p = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  return {
    room: (p.get("room") || "").trim(),
    token: p.get("token") || "",
    name: p.get("name") || "",
    relay: p.get("relay") === "1",
  };
}

/** A display name from anything a peer sent: a trimmed string without control characters. */
export function cleanName(v) {
  if (typeof v !== "string") return "";
  // eslint-disable-next-line no-control-regex
  const s = v.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, "").trim();
  return [...s].slice(0, MAX_NAME_CHARS).join("");
}

function initials(name) {
  const words = cleanName(name).split(/\s+/).filter(Boolean);
  const letters = words.length > 1 ? [words[0], words[words.length - 1]].map((w) => [...w][0]) : [...(words[0] || "?")].slice(0, 2);
  return letters.join("").toUpperCase();
}

/** The message a `join-error` reason deserves. */
export function joinErrorText(reason) {
  switch (reason) {
    case "wrong-password": return "That password is not right for this room. Check it and try again.";
    case "password-required": return "This room has a password. Enter it to join.";
    case "invalid-room": return "This room name cannot be used. Check the invite link.";
    case "invalid-name": return `That name cannot be used: at most ${MAX_NAME_CHARS} characters, no control characters.`;
    case "rate-limited": return "Too many attempts in a short time. Wait a moment and try again.";
    case "timeout": return "The server did not answer. Is it an rtcio room server? Try again.";
    case "disconnected": return "The connection to the server dropped. Try again when it is back.";
    default: return `The server refused to let you in (${String(reason).slice(0, 80)}).`;
  }
}

/** The first RTCIOStream in an event's arguments (depth first, like the library). */
function findStream(v, depth = 0) {
  if (!v || typeof v !== "object" || depth > 8) return null;
  if (v instanceof RTCIOStream) return v;
  for (const k of Array.isArray(v) ? v.keys() : Object.keys(v)) {
    const r = findStream(v[k], depth + 1);
    if (r) return r;
  }
  return null;
}

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// ─── state ──────────────────────────────────────────────────────────────────────────────────────

const frag = parseFragment(location.hash);
const S = {
  room: frag.room,
  token: frag.token,
  name: "",
  password: "",
  socket: null,
  chat: null,
  phase: "connecting", // connecting | ready | joining | in-call | left
  joinedId: null, // our socket id when join-ok came
  passwordRequired: false,
  local: null, // RTCIOStream: camera + mic (either may be missing)
  mediaTried: false,
  mic: false,
  cam: false,
  screen: null, // RTCIOStream of our screen share
  people: new Map(), // id → {id, name, mic, cam}
  tiles: new Map(), // key → tile
  unread: 0,
  secure: window.isSecureContext,
};
window.__guest = S; // for tests and for curious people in the console

// ─── UI helpers ─────────────────────────────────────────────────────────────────────────────────

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function toast(text, ms = 3500) {
  const t = el("div", "toast", text);
  $("toasts").append(t);
  setTimeout(() => t.remove(), ms);
}

function show(screen) {
  for (const id of ["join-screen", "call-screen", "left-screen"]) $(id).hidden = id !== screen;
}

function setJoinError(text) {
  $("join-error").textContent = text || "";
  $("join-error").hidden = !text;
}

function setStatus(text) { $("server-status").textContent = text; }

function setNotice(text) {
  $("call-notice").textContent = text || "";
  $("call-notice").hidden = !text;
}

function setBanner(text) {
  $("banner-text").textContent = text || "";
  $("banner").hidden = !text;
}

/** A guarded handler: nothing a peer or the server sends may throw out of a listener. */
function safe(what, fn) {
  return (...args) => {
    try { return fn(...args); } catch (e) { console.warn(`[guest] ${what}: ${errText(e)}`); }
  };
}

function inviteLink() {
  let link = `${location.origin}/#room=${encodeURIComponent(S.room)}`;
  if (S.token) link += `&token=${encodeURIComponent(S.token)}`;
  return link;
}


// ─── server: ICE servers, connection, room requests ─────────────────────────────────────────────

/** `GET /ice-servers` → a list for RTCPeerConnection, or null (404, error, nonsense). */
async function fetchIceServers() {
  const ctl = new AbortController();
  const t = setTimeout(() => ctl.abort(), ICE_FETCH_TIMEOUT_MS);
  try {
    const headers = S.token ? { Authorization: `Bearer ${S.token}` } : {};
    const r = await fetch("/ice-servers", { headers, cache: "no-store", signal: ctl.signal });
    if (!r.ok) return null;
    const j = await r.json();
    const list = Array.isArray(j?.iceServers) ? j.iceServers : [];
    const ok = list.filter((s) => isObj(s) && (typeof s.urls === "string" || (Array.isArray(s.urls) && s.urls.every((u) => typeof u === "string"))));
    return ok.length ? ok : null;
  } catch {
    return null;
  } finally {
    clearTimeout(t);
  }
}

/**
 * Sends srv `check-room` / `join-room` and resolves with the verdict: {ok: true, data} on
 * `room-check-ok` / `join-ok`, {ok: false, reason} on `join-error` for this room, a timeout or
 * a dropped connection.
 */
function roomRequest(kind, payload, timeoutMs = REQUEST_TIMEOUT_MS) {
  const s = S.socket;
  const okName = kind === "check-room" ? "room-check-ok" : "join-ok";
  return new Promise((resolve) => {
    const done = (r) => {
      clearTimeout(timer);
      s.off(okName, onOk);
      s.off("join-error", onErr);
      s.off("disconnect", onDrop);
      resolve(r);
    };
    const mine = (d) => !isObj(d) || d.roomId === undefined || d.roomId === payload.roomId;
    const onOk = (d) => { if (mine(d)) done({ ok: true, data: isObj(d) ? d : {} }); };
    const onErr = (d) => { if (mine(d)) done({ ok: false, reason: typeof d?.reason === "string" ? d.reason : "join-error" }); };
    const onDrop = () => done({ ok: false, reason: "disconnected" });
    const timer = setTimeout(() => done({ ok: false, reason: "timeout" }), timeoutMs);
    s.on(okName, onOk);
    s.on("join-error", onErr);
    s.on("disconnect", onDrop);
    s.server.emit(kind, payload);
  });
}

function joinPayload() {
  const p = { roomId: S.room, name: S.name };
  if (S.password) p.password = S.password;
  return p;
}

async function start() {
  $("name").value = cleanName(frag.name) || localStorage.getItem("rtcio-guest-name") || "";
  if (S.room) {
    $("join-title").textContent = `Join “${S.room}”`;
  } else {
    $("room-row").hidden = false;
  }
  const iceServers = await fetchIceServers();
  const opts = { reconnectionDelayMax: 5000 };
  if (iceServers) opts.iceServers = iceServers; // else the rtc.io default (public STUN)
  if (S.token) opts.auth = { token: S.token };
  if (frag.relay) opts.iceTransportPolicy = "relay";
  const s = connect(`${location.origin}/`, opts);
  S.socket = s;
  S.chat = s.createChannel("chat", { ordered: true });
  installListeners(s);
  setStatus(`Connecting to ${location.host}…`);
}

function installListeners(s) {
  s.on("connect", safe("connect", onConnect));
  s.on("connect_error", safe("connect_error", (e) => {
    const msg = String(e?.message ?? e);
    if (/unauthori[sz]ed/i.test(msg)) {
      const text = S.token
        ? "The server refused this invite's access token. Ask for a new invite link."
        : "This server needs an access token. Ask for an invite link that includes one.";
      if (S.phase === "in-call") setBanner(text); else { setStatus(text); setJoinError(text); }
      return;
    }
    const text = `Cannot reach the server at ${location.host} (${msg}). Retrying…`;
    if (S.phase === "in-call") setBanner(text); else setStatus(text);
  }));
  s.on("disconnect", safe("disconnect", (reason) => {
    if (S.phase === "left") return;
    if (S.phase === "in-call") setBanner("Connection to the server lost. Reconnecting…");
    else { setStatus("Connection to the server lost. Reconnecting…"); $("join").disabled = true; }
    if (reason === "io server disconnect") setTimeout(() => { if (S.phase !== "left") s.connect(); }, 1000);
  }));

  // Roster (the server's backfill arrives before join-ok).
  s.on("user-connected", safe("user-connected", (d) => {
    if (!isObj(d) || typeof d.id !== "string" || d.id === s.id) return;
    const p = person(d.id);
    const n = cleanName(d.name);
    if (n) p.name = n;
    updatePerson(d.id);
    if (S.phase === "in-call") systemLine(`${p.name || "Someone"} joined`);
  }));
  s.on("user-disconnected", safe("user-disconnected", (d) => {
    if (!isObj(d) || typeof d.id !== "string" || !S.people.has(d.id)) return;
    const p = S.people.get(d.id);
    removePerson(d.id);
    if (S.phase === "in-call") systemLine(`${p.name || "Someone"} left`);
  }));
  s.on("media-state", safe("media-state", (d) => {
    if (!isObj(d) || typeof d.id !== "string" || d.id === s.id) return;
    if (typeof d.roomId === "string" && d.roomId !== S.room) return;
    if (typeof d.mic !== "boolean" && typeof d.cam !== "boolean") return;
    const p = person(d.id);
    if (typeof d.mic === "boolean") p.mic = d.mic;
    if (typeof d.cam === "boolean") p.cam = d.cam;
    updatePerson(d.id);
  }));

  // Streams, every announcement form of PROTOCOL.md §8.
  for (const ev of ["camera", "screenshare", "screen", "stream"]) {
    s.on(ev, safe(ev, (...args) => onStreamAnnounced(ev, args)));
  }
  s.on("track-added", safe("track-added", (e) => refreshStream(e?.peerId, e?.stream)));
  s.on("track-removed", safe("track-removed", (e) => refreshStream(e?.peerId, e?.stream)));
  for (const ev of ["stopScreenShare", "stop-share"]) {
    s.on(ev, safe(ev, (d) => {
      if (isObj(d) && typeof d.id === "string" && d.id !== s.id) removeScreens(d.id);
    }));
  }
  s.on("peer-connect", safe("peer-connect", ({ id } = {}) => {
    if (typeof id !== "string") return;
    person(id);
    updatePerson(id);
    // A peer behind a server that neither caches nor relays media-state: tell it directly.
    if (S.phase === "in-call") s.peer(id).emit("media-state", mediaState());
  }));
  s.on("peer-disconnect", safe("peer-disconnect", ({ id } = {}) => {
    if (typeof id !== "string") return;
    removeScreens(id);
    const t = S.tiles.get(`p:${id}`);
    if (t) attachStream(t, null);
  }));

  // Chat: the tutorial's channel, plus the other forms apps use.
  S.chat.on("msg", safe("chat msg", (m) => onChat(m)));
  s.on("chat", safe("chat", (m) => onChat(m)));
  s.on("chat-message", safe("chat-message", (m) => { if (isObj(m) && m.roomId === S.room) onChat(m); }));
}

async function onConnect() {
  const s = S.socket;
  setBanner("");
  if (S.phase === "in-call") {
    // Our server keeps no session across a reconnect: a new socket id. Peer connections made
    // under the old one are stale (PROTOCOL.md §12.13): close them, then join again.
    if (s.id !== S.joinedId) {
      for (const id of Object.keys(s.rtcpeers)) s.cleanupPeer(id);
      announceStreams();
    }
    const r = await roomRequest("join-room", joinPayload());
    if (!r.ok) {
      leave(joinErrorText(r.reason));
      return;
    }
    S.joinedId = s.id;
    announceMediaState();
    toast("Reconnected");
    return;
  }
  if (S.phase === "left") return;
  S.phase = "ready";
  setStatus(`Connected to ${location.host}.`);
  if (S.room) await checkRoom();
  $("join").disabled = false;
}

/** Asks whether the room needs a password (servers without check-room: no answer, no prompt). */
async function checkRoom() {
  const r = await roomRequest("check-room", { roomId: S.room }, 5000);
  if (r.ok) {
    if (r.data.passwordRequired === true) showPassword();
    return;
  }
  if (r.reason === "password-required") showPassword();
  else if (r.reason !== "timeout" && r.reason !== "disconnected") setJoinError(joinErrorText(r.reason));
}

function showPassword() {
  S.passwordRequired = true;
  $("password-row").hidden = false;
  setStatus(`Connected to ${location.host}. This room has a password.`);
}

// ─── local media ────────────────────────────────────────────────────────────────────────────────

/** Opens camera + mic once (each on its own if both at once fail); notes what is missing. */
async function openLocalMedia() {
  if (S.mediaTried) return;
  S.mediaTried = true;
  const md = navigator.mediaDevices;
  if (!md?.getUserMedia) {
    setNotice(S.secure
      ? "This browser cannot use a camera or microphone here. You joined without them: you can still see and hear the others."
      : "The browser allows camera and microphone only on secure (https or localhost) pages, and this one is plain http. You joined without them: you can still see and hear the others.");
    return;
  }
  const tracks = [];
  let firstError = null;
  try {
    const ms = await md.getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } }, audio: true });
    tracks.push(...ms.getTracks());
  } catch (e) {
    firstError = e;
    for (const c of [{ audio: true }, { video: { width: { ideal: 1280 }, height: { ideal: 720 } } }]) {
      try { tracks.push(...(await md.getUserMedia(c)).getTracks()); } catch { /* the notice says it */ }
    }
  }
  const hasA = tracks.some((t) => t.kind === "audio");
  const hasV = tracks.some((t) => t.kind === "video");
  S.mic = hasA;
  S.cam = hasV;
  if (tracks.length) S.local = new RTCIOStream(new MediaStream(tracks));
  if (!hasA || !hasV) {
    const what = !hasA && !hasV ? "camera and microphone" : hasA ? "camera" : "microphone";
    const why = firstError?.name === "NotAllowedError" || firstError?.name === "SecurityError"
      ? `Your ${what} ${!hasA && !hasV ? "are" : "is"} blocked for this page (allow ${!hasA && !hasV ? "them" : "it"} in the address bar and join again).`
      : firstError?.name === "NotFoundError" || firstError?.name === "OverconstrainedError"
        ? `No ${what} found.`
        : `Your ${what} could not be opened${firstError ? ` (${firstError.name})` : ""}.`;
    setNotice(`${why} ${!hasA && !hasV ? "You joined without them: you can still see and hear the others." : ""}`.trim());
  }
}

function mediaState() {
  return { id: S.socket.id, mic: S.mic, cam: S.cam, roomId: S.room };
}

/** Through the server (cached and backfilled) and over ctrl (the tutorial's P2P form). */
function announceMediaState() {
  const p = mediaState();
  S.socket.server.emit("media-state", p);
  S.socket.emit("media-state", p);
}

/** (Re-)registers our streams under our current socket id. */
function announceStreams() {
  const s = S.socket;
  if (S.local) s.emit("camera", { id: s.id, name: S.name, camera: S.local });
  if (S.screen) s.emit("screenshare", { id: s.id, name: S.name, stream: S.screen });
}

// ─── join / leave ───────────────────────────────────────────────────────────────────────────────

async function onJoinSubmit(ev) {
  ev.preventDefault();
  if (S.phase !== "ready") return;
  setJoinError("");
  const name = cleanName($("name").value);
  if (!name) { setJoinError("Enter your name."); $("name").focus(); return; }
  if (!S.room) {
    const room = $("room").value.trim();
    if (!room) { setJoinError("Enter the room name."); $("room").focus(); return; }
    S.room = room;
  }
  const pw = $("password-row").hidden ? "" : $("password").value;
  if (S.passwordRequired && !pw.trim()) { setJoinError(joinErrorText("password-required")); $("password").focus(); return; }
  S.name = name;
  S.password = pw;
  try { localStorage.setItem("rtcio-guest-name", name); } catch { /* private mode */ }
  S.phase = "joining";
  $("join").disabled = true;
  $("join").textContent = "Joining…";
  try {
    // A wrong password is refused before the browser asks for the camera.
    if (pw) {
      const c = await roomRequest("check-room", { roomId: S.room, password: pw });
      if (!c.ok && c.reason !== "timeout") return joinFailed(c.reason);
    }
    await openLocalMedia();
    announceStreams();
    const r = await roomRequest("join-room", joinPayload());
    if (!r.ok) return joinFailed(r.reason);
    S.joinedId = S.socket.id;
    enterCall();
  } catch (e) {
    joinFailed(errText(e));
  }
}

function joinFailed(reason) {
  S.phase = S.socket.connected ? "ready" : "connecting";
  $("join").disabled = !S.socket.connected;
  $("join").textContent = "Join";
  if (reason === "password-required" || reason === "wrong-password") {
    showPassword();
    $("password").select();
    $("password").focus();
  }
  if (!S.passwordRequired && !$("room-row").hidden) S.room = "";
  setJoinError(joinErrorText(reason));
}

function enterCall() {
  S.phase = "in-call";
  show("call-screen");
  document.title = `${S.room} — rtcio`;
  $("room-title").textContent = S.room;
  const self = ensureTile("self", { self: true });
  if (S.local) attachStream(self, S.local);
  self.el.classList.toggle("mirror", true);
  updateSelf();
  updateControls();
  announceMediaState();
  for (const id of S.people.keys()) updatePerson(id);
  setChatOpen(window.innerWidth >= 900);
  render();
}

/** Leaves the room: peers first (they see us go at once), then the server, then the devices. */
function leave(reason = "") {
  if (S.phase === "left") return;
  S.phase = "left";
  const s = S.socket;
  stopShare(false);
  if (s) {
    for (const id of Object.keys(s.rtcpeers)) s.cleanupPeer(id);
    s.disconnect();
  }
  S.local?.mediaStream.getTracks().forEach((t) => t.stop());
  for (const t of S.tiles.values()) t.el.remove();
  S.tiles.clear();
  $("left-reason").textContent = reason;
  show("left-screen");
  document.title = "rtcio — you left the call";
  $("rejoin").focus();
}

// ─── people and tiles ───────────────────────────────────────────────────────────────────────────

function person(id) {
  let p = S.people.get(id);
  if (!p) {
    p = { id, name: "", mic: true, cam: true };
    S.people.set(id, p);
  }
  return p;
}

function displayName(p) { return p.name || `Guest ${p.id.slice(0, 4)}`; }

function removePerson(id) {
  S.people.delete(id);
  removeScreens(id);
  const t = S.tiles.get(`p:${id}`);
  if (t) removeTile(t);
}

/** The tile record for `key`, created on first use. */
function ensureTile(key, { self = false, screen = false, own = false, peer = null } = {}) {
  let t = S.tiles.get(key);
  if (t) return t;
  const root = el("div", `tile${self ? " self" : ""}${screen ? " share" : ""}${own ? " own" : ""}`);
  root.dataset.key = key;
  if (peer) root.dataset.peer = peer;
  root.dataset.kind = screen ? "screen" : "camera";
  const video = el("video");
  video.autoplay = true;
  video.playsInline = true;
  video.muted = self || own; // our own audio never plays back
  const avatar = el("div", "avatar");
  avatar.setAttribute("aria-hidden", "true");
  const plate = el("div", "nameplate");
  const badges = el("span", "badges");
  const name = el("span", "tile-name");
  plate.append(badges, name);
  root.append(video, avatar, plate);
  if (screen || own) avatar.hidden = true;
  t = { key, peer, screen, own, self, el: root, video, avatar, badges, nameEl: name, stream: null, aspect: DEFAULT_ASPECT, added: performance.now() };
  video.addEventListener("loadeddata", () => onVideoSize(t));
  video.addEventListener("resize", () => onVideoSize(t));
  video.addEventListener("playing", () => { video.dataset.playing = ""; onVideoSize(t); });
  S.tiles.set(key, t);
  $("grid").append(root);
  return t;
}

function onVideoSize(t) {
  const w = t.video.videoWidth, h = t.video.videoHeight;
  if (w > 0 && h > 0) {
    const a = w / h;
    if (Math.abs(a - t.aspect) > 0.01) { t.aspect = a; render(); }
  }
}

function removeTile(t) {
  t.video.srcObject = null;
  t.el.remove();
  S.tiles.delete(t.key);
  render();
}

/** Shows `wrapper`'s MediaStream in the tile (null: back to the initials). */
function attachStream(t, wrapper) {
  t.stream = wrapper;
  const ms = wrapper?.mediaStream ?? null;
  if (t.video.srcObject !== ms) {
    t.video.srcObject = ms;
    delete t.video.dataset.playing;
  }
  if (!ms) return;
  const p = t.video.play();
  if (p && typeof p.catch === "function") {
    p.catch((e) => {
      if (e?.name !== "NotAllowedError" || t.video.muted) return;
      // Autoplay with sound refused: play muted, offer a button for the sound.
      t.video.muted = true;
      t.video.play().catch(() => {});
      if (t.el.querySelector(".sound-button")) return;
      const b = el("button", "sound-button", "Turn on sound");
      b.type = "button";
      b.addEventListener("click", () => { t.video.muted = false; t.video.play().catch(() => {}); b.remove(); });
      t.el.append(b);
    });
  }
}

/** The peer whose connection carries `wrapper` (its announcement's `id` could say anything). */
function ownerOf(wrapper) {
  for (const p of Object.values(S.socket.rtcpeers)) {
    for (const w of Object.values(p.streams)) if (w === wrapper) return p.socketId;
  }
  return null;
}

function onStreamAnnounced(ev, args) {
  const wrapper = findStream(args);
  if (!wrapper) return; // the same event name without a stream (ctrl / server): not ours
  const peer = ownerOf(wrapper);
  if (!peer) return;
  const a = isObj(args[0]) ? args[0] : {};
  const screen = SCREEN_EVENTS.has(ev) || (ev === "stream" && (a.metadata?.kind === "screen" || a.screen === wrapper));
  const p = person(peer);
  const n = cleanName(a.name ?? a.metadata?.displayName);
  if (n && !p.name) p.name = n;
  if (screen) {
    const t = ensureTile(`s:${peer}:${wrapper.mediaStream.id}`, { screen: true, peer });
    t.added = performance.now();
    attachStream(t, wrapper);
  } else {
    const t = ensureTile(`p:${peer}`, { peer });
    attachStream(t, wrapper);
  }
  updatePerson(peer);
  render();
}

/** A remote stream gained or lost a track: a screen without video is over. */
function refreshStream(peer, ms) {
  if (typeof peer !== "string" || !(ms instanceof MediaStream)) return;
  for (const t of [...S.tiles.values()]) {
    if (t.peer !== peer || t.stream?.mediaStream !== ms) continue;
    if (t.screen && ms.getVideoTracks().length === 0) { removeTile(t); continue; }
    t.video.srcObject = null; // pick up the changed track set
    attachStream(t, t.stream);
    updatePerson(peer);
  }
}

function removeScreens(peer) {
  for (const t of [...S.tiles.values()]) if (t.screen && t.peer === peer) removeTile(t);
}

function badge(name, label) {
  const b = el("span", "badge");
  b.dataset.badge = name;
  b.setAttribute("role", "img");
  b.setAttribute("aria-label", label);
  b.append(icon(name));
  return b;
}

function updatePerson(id) {
  const p = S.people.get(id);
  if (!p || S.phase !== "in-call") return;
  const t = ensureTile(`p:${id}`, { peer: id });
  const name = displayName(p);
  t.nameEl.textContent = name;
  t.avatar.textContent = initials(name);
  t.el.setAttribute("aria-label", name);
  t.badges.replaceChildren();
  if (!p.mic) t.badges.append(badge("mic-off", "Microphone off"));
  if (!p.cam) t.badges.append(badge("cam-off", "Camera off"));
  const hasVideo = !!t.stream?.mediaStream.getVideoTracks().length;
  t.el.classList.toggle("cam-off", !p.cam || !hasVideo);
  for (const s of S.tiles.values()) {
    if (s.screen && s.peer === id) {
      s.nameEl.textContent = `${name} (screen)`;
      s.el.setAttribute("aria-label", `${name}'s screen`);
    }
  }
  render();
}

function updateSelf() {
  const t = S.tiles.get("self");
  if (!t) return;
  t.nameEl.textContent = `${S.name} (you)`;
  t.avatar.textContent = initials(S.name);
  t.el.setAttribute("aria-label", `${S.name} (you)`);
  t.badges.replaceChildren();
  if (!S.mic) t.badges.append(badge("mic-off", "Microphone off"));
  if (!S.cam) t.badges.append(badge("cam-off", "Camera off"));
  t.el.classList.toggle("cam-off", !S.cam);
}

/** Tiles in display order: us, the others in join order, then screens. */
function orderedTiles() {
  const out = [];
  const self = S.tiles.get("self");
  if (self) out.push(self);
  for (const id of S.people.keys()) { const t = S.tiles.get(`p:${id}`); if (t) out.push(t); }
  for (const t of S.tiles.values()) if (t.screen || t.own) out.push(t);
  return out;
}

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; layout(); });
}

function place(t, r) {
  const s = t.el.style;
  s.left = `${r.x}px`; s.top = `${r.y}px`; s.width = `${r.w}px`; s.height = `${r.h}px`;
  t.el.classList.remove("in-strip");
}

/** Aspect-keeping grid; a screen share (a remote one before ours, newest first) on the stage. */
function layout() {
  const grid = $("grid");
  const W = grid.clientWidth, H = grid.clientHeight;
  const tiles = orderedTiles();
  const count = S.people.size + 1;
  $("call-status").textContent = `${count} ${count === 1 ? "person" : "people"}`;
  if (!tiles.length || W <= 0 || H <= 0) return;
  const shares = tiles.filter((t) => t.screen || t.own).sort((a, b) => (a.own - b.own) || (b.added - a.added));
  const main = shares[0];
  if (main) {
    const others = tiles.filter((t) => t !== main);
    const r = spotlightRects(W, H, others.length, main.own ? 16 / 9 : main.aspect, dominantAspect(others.map((t) => t.aspect)), TILE_GAP);
    place(main, r.main);
    others.forEach((t, i) => { place(t, fitRect(r.strip[i], t.aspect)); t.el.classList.add("in-strip"); });
    grid.dataset.layout = "spotlight";
    grid.dataset.stage = main.key;
  } else {
    const r = gridRects(W, H, tiles.length, dominantAspect(tiles.map((t) => t.aspect)), TILE_GAP);
    tiles.forEach((t, i) => place(t, fitRect(r.rects[i], t.aspect)));
    grid.dataset.layout = "grid";
    delete grid.dataset.stage;
    grid.dataset.cols = String(r.cols);
    grid.dataset.rows = String(r.rows);
  }
}

// ─── controls ───────────────────────────────────────────────────────────────────────────────────

function setupButton(b) {
  const on = b.dataset.icon, off = b.dataset.iconOff;
  if (on) b.prepend(icon(on, "on"));
  if (off) b.querySelector(".icon.on").after(icon(off, "off"));
}

function updateControls() {
  const hasA = !!S.local?.mediaStream.getAudioTracks().length;
  const hasV = !!S.local?.mediaStream.getVideoTracks().length;
  const mic = $("toggle-mic"), cam = $("toggle-cam"), share = $("toggle-share");
  mic.setAttribute("aria-pressed", String(S.mic));
  mic.disabled = !hasA;
  mic.dataset.tooltip = !hasA ? "No microphone" : S.mic ? "Mute (M)" : "Unmute (M)";
  cam.setAttribute("aria-pressed", String(S.cam));
  cam.disabled = !hasV;
  cam.dataset.tooltip = !hasV ? "No camera" : S.cam ? "Turn camera off (V)" : "Turn camera on (V)";
  const canShare = !!navigator.mediaDevices?.getDisplayMedia;
  share.disabled = !canShare;
  share.setAttribute("aria-pressed", String(!!S.screen));
  share.dataset.tooltip = !canShare
    ? (S.secure ? "Screen sharing is not available in this browser" : "Screen sharing needs a secure (https) page")
    : S.screen ? "Stop sharing (S)" : "Share screen (S)";
  updateSelf();
}

function toggleMic() {
  const tr = S.local?.mediaStream.getAudioTracks() ?? [];
  if (!tr.length) return;
  S.mic = !S.mic;
  tr.forEach((t) => { t.enabled = S.mic; });
  updateControls();
  announceMediaState();
}

function toggleCam() {
  const tr = S.local?.mediaStream.getVideoTracks() ?? [];
  if (!tr.length) return;
  S.cam = !S.cam;
  tr.forEach((t) => { t.enabled = S.cam; });
  updateControls();
  announceMediaState();
}

async function startShare() {
  if (S.screen || !navigator.mediaDevices?.getDisplayMedia) return;
  let ms;
  try {
    ms = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (e) {
    if (e?.name !== "NotAllowedError" && e?.name !== "AbortError") toast(`Screen sharing failed: ${e?.message || e?.name || e}`);
    return;
  }
  if (S.phase !== "in-call" || S.screen) { ms.getTracks().forEach((t) => t.stop()); return; }
  const w = new RTCIOStream(ms);
  S.screen = w;
  // The browser's own "Stop sharing" ends the track.
  ms.getVideoTracks().forEach((t) => t.addEventListener("ended", () => { if (S.screen === w) stopShare(true); }));
  const s = S.socket;
  s.emit("screenshare", { id: s.id, name: S.name, stream: w });
  const t = ensureTile("self-share", { own: true });
  if (!t.el.querySelector(".own-share")) {
    const box = el("div", "own-share");
    const stop = el("button", "stop-share", "Stop sharing");
    stop.type = "button";
    stop.addEventListener("click", () => stopShare(true));
    box.append(icon("share"), el("p", "", "You are sharing your screen"), stop);
    t.el.append(box);
  }
  t.nameEl.textContent = `${S.name} (your screen)`;
  t.added = performance.now();
  updateControls();
  render();
}

/** Stops our share: untrack, remove its tracks (peers see track-removed), tell the room. */
function stopShare(tell) {
  const w = S.screen;
  if (!w) return;
  S.screen = null;
  const s = S.socket;
  s.untrackStream(w);
  const tracks = w.mediaStream.getTracks();
  tracks.forEach((t) => w.removeTrack(t));
  tracks.forEach((t) => t.stop());
  if (tell && s.connected) {
    s.server.emit("stopScreenShare", { id: s.id, roomId: S.room });
    s.emit("stopScreenShare", { id: s.id });
  }
  const t = S.tiles.get("self-share");
  if (t) removeTile(t);
  updateControls();
}

function setChatOpen(open) {
  $("chat").hidden = !open;
  $("toggle-chat").setAttribute("aria-pressed", String(open));
  $("toggle-chat").dataset.tooltip = open ? "Close chat (C)" : "Open chat (C)";
  if (open) {
    S.unread = 0;
    $("chat-unread").hidden = true;
  }
  render();
}

// ─── chat ───────────────────────────────────────────────────────────────────────────────────────

function chatLine(who, text, at, mine = false) {
  const li = el("li", mine ? "mine" : "");
  li.append(el("span", "who", who));
  li.append(document.createTextNode(text));
  const d = new Date(Number.isFinite(at) ? at : Date.now());
  li.append(el("span", "when", d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  const log = $("chat-log");
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atEnd || mine) log.scrollTop = log.scrollHeight;
}

function systemLine(text) {
  const li = el("li", "system", text);
  $("chat-log").append(li);
}

/** One incoming chat message in any of the forms apps use (PROTOCOL.md §8). */
function onChat(m) {
  if (S.phase !== "in-call") return;
  let text, name, at;
  if (typeof m === "string") text = m;
  else if (isObj(m)) {
    text = typeof m.text === "string" ? m.text : typeof m.message === "string" ? m.message : null;
    name = cleanName(m.name ?? m.from ?? m.user);
    at = typeof m.at === "number" ? m.at : undefined;
  }
  if (typeof text !== "string" || !text.trim()) return;
  text = [...text].slice(0, MAX_CHAT_CHARS).join("");
  chatLine(name || "Someone", text, at);
  if ($("chat").hidden) {
    S.unread += 1;
    $("chat-unread").textContent = String(S.unread);
    $("chat-unread").hidden = false;
  }
}

function sendChat(ev) {
  ev.preventDefault();
  const input = $("chat-input");
  const text = input.value.trim();
  if (!text || S.phase !== "in-call") return;
  const at = Date.now();
  S.chat.emit("msg", { name: S.name, text, at });
  chatLine(`${S.name} (you)`, text, at, true);
  input.value = "";
}

// ─── wiring ─────────────────────────────────────────────────────────────────────────────────────

function wire() {
  document.querySelectorAll("button[data-icon]").forEach(setupButton);
  $("join-form").addEventListener("submit", safe("join", onJoinSubmit));
  $("toggle-mic").addEventListener("click", toggleMic);
  $("toggle-cam").addEventListener("click", toggleCam);
  $("toggle-share").addEventListener("click", () => (S.screen ? stopShare(true) : startShare()));
  $("leave").addEventListener("click", () => leave());
  $("toggle-chat").addEventListener("click", () => setChatOpen($("chat").hidden));
  $("chat-close").addEventListener("click", () => setChatOpen(false));
  $("chat-form").addEventListener("submit", sendChat);
  $("rejoin").addEventListener("click", () => location.reload());
  $("copy-link").addEventListener("click", async () => {
    toast((await copyText(inviteLink())) ? "Invite link copied" : `Copy this link: ${inviteLink()}`, 5000);
  });
  new ResizeObserver(() => render()).observe($("grid"));
  document.addEventListener("keydown", (e) => {
    if (S.phase !== "in-call" || e.ctrlKey || e.altKey || e.metaKey || e.repeat) return;
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement) return;
    const k = e.key.toLowerCase();
    if (k === "m") toggleMic();
    else if (k === "v") toggleCam();
    else if (k === "s") $("toggle-share").click();
    else if (k === "c") { setChatOpen($("chat").hidden); if (!$("chat").hidden) $("chat-input").focus(); }
    else return;
    e.preventDefault();
  });
  // Closing the tab: peers and the server hear it at once.
  window.addEventListener("pagehide", () => { if (S.phase === "in-call") leave(); });
  window.addEventListener("hashchange", () => { if (S.phase !== "in-call") location.reload(); });
}

wire();
start().catch((e) => {
  setStatus(`The page could not start: ${errText(e)}`);
  console.error(e);
});
