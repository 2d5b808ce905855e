// rtcio.js — the rtc.io 1.x browser client, re-implemented on RTCPeerConnection + socket.io-client 4.8.
//
// Follows shared/PROTOCOL.md exactly, defaults and quirks included (section references § point
// there). Served by rtcio-server (the guest page at `/` imports it) and imported by the browser
// test peer (tests/browser/rtcio-peer.js). Plain ES module, no build step.
//
// Differences from the JS library (all opt-in, see tests/browser/README.md "Deviations"):
// - `defaults.iceServers` is what a missing or empty `iceServers` option means (the JS's two
//   public Google STUN servers here; the test layer sets it to [] for offline tests);
// - `loopbackOnly` (default `defaults.loopbackOnly`, false here): only loopback candidates are
//   signaled — a test aid;
// - `hooks`: a recorder a test layer can install (`setHooks`) to see what the library does;
//   no-ops by default.

import { Manager, Socket as IoSocket } from "./vendor/socket.io.esm.min.js";

/** The rtc.io client's fallback when no ICE servers are given (§3.6). */
export const RTCIO_DEFAULT_ICE_SERVERS = [{ urls: ["stun:stun1.l.google.com:19302", "stun:stun2.l.google.com:19302"] }];

/** Library-wide defaults a caller (e.g. a test layer) may change before connecting. */
export const defaults = {
  iceServers: RTCIO_DEFAULT_ICE_SERVERS,
  loopbackOnly: false,
};

const noop = () => {};
/**
 * Observation hooks (no-ops unless a test layer installs its recorder with setHooks). `socket`
 * fields are the socket's `_testIndex` (null unless the caller sets one).
 */
export const hooks = {
  push: noop, // (kind, fields)
  loggable: (v) => v,
  channelEvent: noop, channelMessage: noop, channelData: noop,
  serverEvent: noop, signalOut: noop, streamEvent: noop, ctrlDropped: noop,
  remoteStream: noop, peerCleaned: noop,
};
/** Installs observation hooks (any subset of `hooks`' members). */
export function setHooks(h) { Object.assign(hooks, h); }
const T = hooks;

export const RtcioEvents = {
  OFFER: "#rtcio:offer", // reserved, never emitted (§2.1)
  ANSWER: "#rtcio:answer",
  CANDIDATE: "#rtcio:candidate",
  STREAM_META: "#rtcio:stream-meta",
  MESSAGE: "#rtcio:message",
  INIT_OFFER: "#rtcio:init-offer",
  PEER_LEFT: "#rtcio:peer-left",
};
const INTERNAL_EVENT_PREFIX = "#rtcio:";
const CTRL_CHANNEL_LABEL = "rtcio:ctrl";
const CUSTOM_CHANNEL_PREFIX = "rtcio:ch:";
// §4.5 / §6.1: local-only lifecycle events, never accepted from the ctrl channel.
const RESERVED_EVENTS = new Set(["peer-connect", "peer-disconnect", "track-added", "track-removed"]);

const HIGH_WATERMARK = 16 * 1024 * 1024; // §4.3
const LOW_WATERMARK = 1024 * 1024;
const QUEUE_BUDGET = 1024 * 1024;
const MAX_CTRL_QUEUE = 1024; // §4.5
const MAX_CTRL_ENVELOPE_BYTES = 1048576; // compared with string.length (UTF-16 units)
const DEFAULT_WATCHDOG_TIMEOUT_MS = 12000; // §6.2
const DEFAULT_WATCHDOG_HINT_TIMEOUT_MS = 2500;
const DEFAULT_PEER_LEFT_HINT_TTL_MS = 30000;

/** §4.2: FNV-1a 32 over UTF-16 code units, mapped to SCTP ids 1..=1023. */
export function hashChannelName(name) {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return ((h >>> 0) % 1023) + 1;
}

function pickPositive(value, fallback) {
  return typeof value === "number" && Number.isFinite(value) && value >= 0 ? value : fallback;
}

/**
 * A random UUID. `crypto.randomUUID` exists only in secure contexts (https, localhost); a page
 * served over plain http on a LAN address still needs ids, so fall back to getRandomValues
 * (available everywhere) formatted as a version-4 UUID.
 */
export function randomUUID() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ─── RTCIOStream (§5) ───────────────────────────────────────────────────────────────────────────
export class RTCIOStream {
  constructor(idOrMediaStream, mediaStream) {
    if (idOrMediaStream instanceof MediaStream) {
      this.id = randomUUID();
      this.mediaStream = idOrMediaStream;
    } else {
      this.id = idOrMediaStream;
      this.mediaStream = mediaStream;
    }
    this._changeCbs = [];
    this._addedCbs = [];
    this._removedCbs = [];
    // Platform add/remove events fire only for remote streams (§5.6).
    this._onAdd = (ev) => this._addedCbs.slice().forEach((cb) => cb(ev.track));
    this._onRemove = (ev) => this._removedCbs.slice().forEach((cb) => cb(ev.track));
    this.mediaStream.addEventListener("addtrack", this._onAdd);
    this.mediaStream.addEventListener("removetrack", this._onRemove);
  }
  onTrackChanged(cb) { return sub(this._changeCbs, cb); }
  onTrackAdded(cb) { return sub(this._addedCbs, cb); }
  onTrackRemoved(cb) { return sub(this._removedCbs, cb); }
  _changed() {
    this._changeCbs.slice().forEach((cb) => {
      try { cb(this.mediaStream); } catch (err) { libLog(null, "error", "track change handler failed", { err }); }
    });
  }
  addTrack(track) { this.mediaStream.addTrack(track); this._changed(); return this; }
  removeTrack(track) { this.mediaStream.removeTrack(track); this._changed(); return this; }
  /** Swaps the same-kind track; returns the displaced one (or undefined). */
  replaceTrack(newTrack) {
    const old = this.mediaStream.getTracks().find((t) => t.kind === newTrack.kind);
    if (old) this.mediaStream.removeTrack(old);
    this.mediaStream.addTrack(newTrack);
    this._changed();
    return old;
  }
  replace(stream) {
    [...this.mediaStream.getTracks()].forEach((t) => this.mediaStream.removeTrack(t));
    stream.getTracks().forEach((t) => this.mediaStream.addTrack(t));
    this._changed();
    return this;
  }
  dispose() {
    this.mediaStream.removeEventListener("addtrack", this._onAdd);
    this.mediaStream.removeEventListener("removetrack", this._onRemove);
    this._changeCbs = [];
    this._addedCbs = [];
    this._removedCbs = [];
  }
  toJSON() { return `[RTCIOStream] ${this.id}`; }
}
function sub(list, cb) {
  list.push(cb);
  return () => { const i = list.indexOf(cb); if (i !== -1) list.splice(i, 1); };
}

// ─── RTCIOChannel (§4.6) ────────────────────────────────────────────────────────────────────────
export class RTCIOChannel {
  constructor(options = {}) {
    this._dc = null;
    this._listeners = new Map();
    this._queue = [];
    this._queueBytes = 0;
    this._queueBudget = options.queueBudget ?? QUEUE_BUDGET;
    this._highWatermark = options.highWatermark ?? HIGH_WATERMARK;
    this._lowWatermark = options.lowWatermark ?? LOW_WATERMARK;
    this._meta = { peer: null, name: null }; // where this channel goes (for hooks)
  }
  _attach(dc) {
    this._dc = dc;
    dc.binaryType = "arraybuffer";
    dc.bufferedAmountLowThreshold = this._lowWatermark;
    dc.onopen = () => {
      this._flush();
      T.channelEvent(this, "channel-open");
      this._dispatchLocal("open");
    };
    dc.onclose = () => {
      this._dc = null;
      this._queue = [];
      this._queueBytes = 0;
      T.channelEvent(this, "channel-close");
      this._dispatchLocal("close");
    };
    dc.onerror = (e) => {
      T.channelEvent(this, "channel-error", { error: errText(e?.error ?? e) });
      this._dispatchLocal("error", e);
    };
    dc.onmessage = ({ data }) => {
      if (typeof data === "string") {
        try {
          const { e, d } = JSON.parse(data);
          if (typeof e !== "string") return;
          const args = Array.isArray(d) ? d : [];
          T.channelMessage(this, e, args);
          this._dispatchLocal(e, ...args);
        } catch {
          T.channelEvent(this, "channel-error", { error: "RTCIOChannel: invalid JSON envelope" });
          this._dispatchLocal("error", new Error("RTCIOChannel: invalid JSON envelope"));
        }
      } else {
        T.channelData(this, data);
        this._dispatchLocal("data", data);
      }
    };
    dc.onbufferedamountlow = () => {
      this._flush();
      this._dispatchLocal("drain");
    };
    if (dc.readyState === "open") this._flush();
  }
  _isAttached() { return this._dc !== null; }
  emit(eventName, ...args) {
    if (typeof args[args.length - 1] === "function") {
      console.warn(`[rtc-io] RTCIOChannel.emit('${eventName}'): ack callbacks are not supported — dropping callback`);
      args = args.slice(0, -1);
    }
    this._write(JSON.stringify({ e: eventName, d: args })); // returns nothing (§4.6)
  }
  send(data) { return this._write(data); }
  on(event, handler) {
    let list = this._listeners.get(event);
    if (!list) { list = []; this._listeners.set(event, list); }
    list.push(handler);
    return this;
  }
  off(event, handler) {
    const list = this._listeners.get(event);
    if (!list) return this;
    const i = list.indexOf(handler);
    if (i !== -1) list.splice(i, 1);
    return this;
  }
  once(event, handler) {
    const wrapper = (...args) => { this.off(event, wrapper); handler(...args); };
    return this.on(event, wrapper);
  }
  close() {
    const dc = this._dc;
    if (dc && dc.readyState !== "closed" && dc.readyState !== "closing") dc.close();
    this._queue = [];
    this._queueBytes = 0;
  }
  get readyState() { return this._dc?.readyState ?? "connecting"; }
  get bufferedAmount() { return this._dc?.bufferedAmount ?? 0; }
  _dispatchLocal(event, ...args) {
    const list = this._listeners.get(event);
    if (!list) return;
    list.slice().forEach((h) => {
      try { h(...args); } catch (e) { console.error(`[rtc-io] RTCIOChannel listener [${event}]`, e); }
    });
  }
  _write(data) {
    const dc = this._dc;
    if (dc && dc.readyState === "open" && dc.bufferedAmount < this._highWatermark && this._queue.length === 0) {
      try {
        dc.send(data);
        return true;
      } catch (e) {
        // JS quirk kept on purpose (§4.6, §12.14): a chunk the transport refuses is NOT queued.
        this._dispatchLocal("error", e);
        return false;
      }
    }
    return this._enqueue(data);
  }
  _enqueue(data) {
    const size = typeof data === "string" ? data.length * 2 : data.byteLength;
    if (this._queueBytes + size > this._queueBudget) {
      this._dispatchLocal("error", new Error("RTCIOChannel: queue budget exceeded — wait for 'drain' before sending more"));
      return false;
    }
    this._queue.push(data);
    this._queueBytes += size;
    return false;
  }
  _flush() {
    while (this._queue.length > 0) {
      const dc = this._dc;
      if (!dc || dc.readyState !== "open") break;
      if (dc.bufferedAmount >= this._highWatermark) break;
      const item = this._queue.shift();
      this._queueBytes -= typeof item === "string" ? item.length * 2 : item.byteLength;
      try {
        dc.send(item);
      } catch (e) {
        this._dispatchLocal("error", e);
        break;
      }
    }
  }
}

// ─── RTCIOBroadcastChannel (§4.7) ───────────────────────────────────────────────────────────────
export class RTCIOBroadcastChannel {
  constructor(name) {
    this._name = name;
    this._peers = new Map();
    this._globalListeners = new Map();
    this._closed = false;
  }
  _addPeer(peerId, channel) {
    if (this._closed) return;
    this._peers.set(peerId, channel);
    this._globalListeners.forEach((handlers, event) => handlers.forEach((h) => channel.on(event, h)));
    channel.on("drain", () => this._dispatch("drain"));
    channel.on("error", (e) => this._dispatch("error", e));
    channel.on("close", () => this._removePeer(peerId));
  }
  _removePeer(peerId) {
    if (!this._peers.has(peerId)) return;
    this._peers.delete(peerId);
    T.push("broadcast-peer-left", { channel: this._name, peer: peerId });
    this._dispatch("peer-left", peerId);
    if (this._peers.size === 0 && !this._closed) {
      T.push("broadcast-close", { channel: this._name });
      this._dispatch("close");
    }
  }
  emit(eventName, ...args) { this._peers.forEach((ch) => ch.emit(eventName, ...args)); }
  send(data) {
    let allOk = true;
    this._peers.forEach((ch) => { if (!ch.send(data)) allOk = false; });
    return allOk;
  }
  on(event, handler) {
    let list = this._globalListeners.get(event);
    if (!list) { list = []; this._globalListeners.set(event, list); }
    list.push(handler);
    this._peers.forEach((ch) => ch.on(event, handler));
    return this;
  }
  off(event, handler) {
    const list = this._globalListeners.get(event);
    if (list) { const i = list.indexOf(handler); if (i !== -1) list.splice(i, 1); }
    this._peers.forEach((ch) => ch.off(event, handler));
    return this;
  }
  once(event, handler) {
    const wrapper = (...args) => { this.off(event, wrapper); handler(...args); };
    return this.on(event, wrapper);
  }
  close() {
    if (this._closed) return;
    this._closed = true;
    this._peers.forEach((ch) => ch.close());
    this._peers.clear();
    T.push("broadcast-close", { channel: this._name });
    this._dispatch("close");
  }
  get peerCount() { return this._peers.size; }
  get closed() { return this._closed; }
  _dispatch(event, data) {
    const list = this._globalListeners.get(event);
    if (!list) return;
    list.slice().forEach((h) => {
      try { h(data); } catch (e) { console.error(`[rtc-io] RTCIOBroadcastChannel listener [${event}]`, e); }
    });
  }
}

// ─── Socket: socket.io-client Socket + rtc.io (§2–§6) ───────────────────────────────────────────
function libLog(socket, level, msg, data) {
  T.push("lib", { socket: socket?._testIndex ?? null, level, msg, data: T.loggable(data ?? null) });
  if (level === "debug" && !socket?.debug) return;
  const prefix = `[rtc-io][${socket?.id?.slice(-6) ?? "------"}]`;
  console[level](`${prefix} ${msg}`, data ?? "");
}

export class Socket extends IoSocket {
  constructor(io, nsp, opts) {
    super(io, nsp, opts);
    this._signalingConnectedOnce = false;
    this.rtcpeers = {};
    this.streamEvents = {};
    this.signalingQueues = {};
    this.debug = opts?.debug ?? false;
    this._peerListeners = new Map();
    this._channelDefs = [];
    this._broadcastChannels = new Map();
    // §3.6: a missing or empty list means the default servers (the JS's public STUN pair,
    // unless `defaults.iceServers` was changed — the test layer makes it []).
    this.servers = {
      iceServers: Array.isArray(opts?.iceServers) && opts.iceServers.length > 0 ? opts.iceServers : defaults.iceServers,
    };
    // Not an rtc.io option: relayed candidates only (privacy; needs a TURN server).
    if (opts?.iceTransportPolicy === "relay") this.servers.iceTransportPolicy = "relay";
    const wd = opts?.watchdog;
    this.watchdogTimeoutMs = pickPositive(wd?.timeout, DEFAULT_WATCHDOG_TIMEOUT_MS);
    this.watchdogHintTimeoutMs = pickPositive(wd?.hintTimeout, DEFAULT_WATCHDOG_HINT_TIMEOUT_MS);
    this.peerLeftHintTtlMs = pickPositive(wd?.hintTTL, DEFAULT_PEER_LEFT_HINT_TTL_MS);
    // Test aid: only loopback ICE candidates are signaled (tests/browser/README.md, deviations).
    this._loopbackOnly = opts?.loopbackOnly === undefined ? defaults.loopbackOnly : opts.loopbackOnly !== false;
    this._testIndex = null;

    this._rawEmit = (ev, ...args) => super.emit(ev, ...args);
    this._rawOn = (ev, handler) => super.on(ev, handler);
    this._rawOff = (ev, handler) => super.off(ev, handler);

    // Registered directly: with recovery-enabled servers the trailing offset string lands in
    // `options` and the existing peer becomes impolite — the JS quirk of §3.1, kept.
    this.on(RtcioEvents.INIT_OFFER, this.initializeConnection);
    this.on(RtcioEvents.MESSAGE, this.enqueueSignalingMessage);
    this._rawOn(RtcioEvents.PEER_LEFT, this._handlePeerLeftHint);
    this._rawOn("connect", this._handleSignalingConnect);
  }

  log(level, msg, data) { libLog(this, level, msg, data); }

  // Hook: every inbound socket.io event, before normal dispatch.
  emitEvent(args) {
    T.serverEvent(this, args);
    super.emitEvent(args);
  }

  emit(ev, ...args) {
    const stream = this.getRTCIOStreamDeep(args);
    if (stream) {
      this.log("debug", `emit stream event: ${ev}`, { streamId: stream.id });
      if (!this.streamEvents[stream.id]) this.streamEvents[stream.id] = {};
      this.streamEvents[stream.id][ev] = args;
      this.broadcastPeers(this.addTransceiverToPeer, stream);
    } else if (typeof ev === "string" && ev.startsWith(INTERNAL_EVENT_PREFIX)) {
      T.signalOut(this, ev, args);
      this._rawEmit(ev, ...args);
    } else {
      let outArgs = args;
      if (typeof args[args.length - 1] === "function") {
        this.log("warn", `emit('${ev}'): ack callbacks are not supported over peer transport — dropping callback`);
        outArgs = args.slice(0, -1);
      }
      this._broadcastCtrl(ev, outArgs);
    }
    return this;
  }

  untrackStream(stream) {
    delete this.streamEvents[stream.id];
    return this;
  }

  get server() {
    return {
      emit: (ev, ...args) => { this._rawEmit(ev, ...args); return this; },
      on: (ev, handler) => { this._rawOn(ev, handler); return this; },
      off: (ev, handler) => { this._rawOff(ev, handler); return this; },
    };
  }

  peer(peerId) {
    return {
      emit: (ev, ...args) => {
        let outArgs = args;
        if (typeof args[args.length - 1] === "function") {
          this.log("warn", `peer('${peerId}').emit('${ev}'): ack callbacks not supported — dropping callback`);
          outArgs = args.slice(0, -1);
        }
        // §11.5: a stream argument is NOT special here — it is sent as its token string.
        this._sendCtrl(peerId, ev, outArgs);
      },
      on: (ev, handler) => this._addPeerListener(peerId, ev, handler),
      off: (ev, handler) => this._removePeerListener(peerId, ev, handler),
      createChannel: (name, options = {}) => this._getOrCreateChannel(peerId, name, options),
    };
  }

  createChannel(name, options = {}) {
    let bch = this._broadcastChannels.get(name);
    if (!bch) {
      bch = new RTCIOBroadcastChannel(name);
      this._broadcastChannels.set(name, bch);
      this._channelDefs.push({ name, options });
    }
    Object.values(this.rtcpeers).forEach((peer) => {
      const channel = this._getOrCreateChannel(peer.socketId, name, options);
      bch._addPeer(peer.socketId, channel);
    });
    return bch;
  }

  getRTCIOStreamDeep(obj) {
    if (!obj || typeof obj !== "object") return;
    if (obj instanceof RTCIOStream) return obj;
    if (Array.isArray(obj)) {
      for (const item of obj) { const r = this.getRTCIOStreamDeep(item); if (r) return r; }
    } else {
      for (const key in obj) { const r = this.getRTCIOStreamDeep(obj[key]); if (r) return r; }
    }
  }

  getPeer(id) { return this.rtcpeers[id]; }

  // §3.2: per-source promise chain.
  enqueueSignalingMessage = (payload) => {
    const peerId = payload.source;
    const prev = this.signalingQueues[peerId] ?? Promise.resolve();
    const current = prev
      .then(() => this.handleCallServiceMessage(payload))
      .catch((err) => this.log("error", "Signaling error", { peer: peerId, err }))
      .finally(() => { if (this.signalingQueues[peerId] === current) delete this.signalingQueues[peerId]; });
    this.signalingQueues[peerId] = current;
  };

  // §3.3
  async handleCallServiceMessage(payload) {
    const { source } = payload;
    let isNewPeer = false;
    let peer = this.getPeer(source);
    if (!peer) {
      peer = this.createPeerConnection(payload, { polite: false });
      isNewPeer = true;
      this.log("debug", "Created impolite peer (deferred stream replay)", { peer: source });
    }
    const { description, candidate, mid, events } = payload.data;
    if (description) {
      const st = peer.connectionStatus;
      this.log("debug", `Received ${description.type}`, { peer: source, signalingState: peer.connection.signalingState });
      const readyForOffer = !st.makingOffer &&
        (peer.connection.signalingState === "stable" || st.isSettingRemoteAnswerPending);
      const offerCollision = description.type === "offer" && !readyForOffer;
      st.ignoreOffer = !peer.polite && offerCollision;
      if (st.ignoreOffer) {
        this.log("debug", "Ignoring colliding offer (impolite)", { peer: source });
        return;
      }
      st.isSettingRemoteAnswerPending = description.type === "answer";
      try {
        await peer.connection.setRemoteDescription(description);
      } catch (err) {
        if (err?.name === "InvalidStateError" && offerCollision) {
          this.log("debug", "Implicit rollback not supported, doing manual rollback", { peer: source });
          await peer.connection.setLocalDescription({ type: "rollback" });
          await peer.connection.setRemoteDescription(description);
        } else if (description.type === "answer" && peer.connection.signalingState === "stable") {
          this.log("debug", "Dropping stale answer (already stable)", { peer: source });
          return;
        } else {
          this.log("warn", `setRemoteDescription failed (state: ${peer.connection.signalingState})`, { peer: source, err: err?.message });
          return;
        }
      } finally {
        st.isSettingRemoteAnswerPending = false;
      }
      if (description.type === "offer") {
        await peer.connection.setLocalDescription();
        this.emit(RtcioEvents.MESSAGE, {
          source: this.id,
          target: peer.socketId,
          data: { description: this._outgoingDescription(peer.connection.localDescription) },
        });
        this.log("debug", "Sent answer", { peer: source });
      }
      if (isNewPeer) {
        queueMicrotask(() => { if (this.rtcpeers[peer.socketId] === peer) this.replayStreamsToPeer(peer); });
        queueMicrotask(() => { if (this.rtcpeers[peer.socketId] === peer) this._replayChannelsToPeer(peer); });
      }
    } else if (candidate) {
      try {
        await peer.connection.addIceCandidate(candidate);
      } catch (err) {
        if (!peer.connectionStatus.ignoreOffer) throw err;
      }
    } else if (events) {
      const rtcioStream = peer.streams[mid];
      if (!rtcioStream) {
        this.log("warn", "Stream not found for events — stream not yet registered via ontrack", { mid, peerStreams: Object.keys(peer.streams) });
        return;
      }
      Object.keys(events).forEach((key) => {
        const listeners = this.listeners(key);
        T.streamEvent(this, source, key, events[key], rtcioStream, listeners.length);
        listeners.forEach((listener) => {
          const args = events[key].map((arg) => this.deserializeStreamEvent(arg, rtcioStream));
          listener.call(this, ...args);
        });
      });
    } else if (mid) {
      const rtcioStream = peer.streams[mid];
      if (!rtcioStream) {
        this.log("warn", "Stream metadata request for unknown mid — peer may not have this stream yet", { mid, peer: source });
        return;
      }
      const evs = this.streamEvents[rtcioStream.id];
      if (!evs || Object.keys(evs).length === 0) {
        this.log("debug", "No events for stream yet, skipping metadata response", { mid });
        return;
      }
      this.emit(RtcioEvents.MESSAGE, {
        source: this.id,
        target: peer.socketId,
        data: this.serializeStreamEvent({ mid, events: evs }),
      });
    }
  }

  replayStreamsToPeer(peer) {
    for (const key in this.streamEvents) {
      const stream = this.getRTCIOStreamDeep(this.streamEvents[key]);
      if (stream) this.addTransceiverToPeer(peer, stream);
    }
  }

  // §2.4 / §3.5: existing peer; polite by default (see the recovery quirk above).
  initializeConnection(payload, options = { polite: true }) {
    try {
      const peer = this.createPeerConnection(payload, options);
      for (const key in this.streamEvents) {
        const stream = this.getRTCIOStreamDeep(this.streamEvents[key]);
        if (stream) this.addTransceiverToPeer(peer, stream);
      }
      this._replayChannelsToPeer(peer);
      this.log("debug", `Initialized ${options.polite ? "polite" : "impolite"} peer`, { peer: payload.source });
    } catch (error) {
      this.log("error", "initializeConnection failed", { error });
    } finally {
      // eslint-disable-next-line no-unsafe-finally
      return this.getPeer(payload.source);
    }
  }

  serializeStreamEvent(data) {
    if (data instanceof RTCIOStream) return data.toJSON();
    try {
      if (Array.isArray(data)) return data.map((item) => this.serializeStreamEvent(item));
      if (data && typeof data === "object") {
        const out = {};
        for (const key in data) out[key] = this.serializeStreamEvent(data[key]);
        return out;
      }
    } catch (err) {
      this.log("error", "serializeStreamEvent failed", { err });
    }
    return data;
  }

  deserializeStreamEvent(data, rtcioStream) {
    if (typeof data === "string" && data.startsWith("[RTCIOStream]")) {
      rtcioStream.id = data.replace("[RTCIOStream] ", ""); // ID-sync (§5.4)
      return rtcioStream;
    }
    if (data instanceof RTCIOStream) return data;
    try {
      if (data && typeof data === "object") {
        for (const key in data) data[key] = this.deserializeStreamEvent(data[key], rtcioStream);
      }
    } catch (err) {
      this.log("error", "deserializeStreamEvent failed", { err });
    }
    return data;
  }

  // §5.2 sender side + §5.6 track changes
  addTransceiverToPeer = (peer, rtcioStream) => {
    const msid = rtcioStream.mediaStream.id;
    peer.streams[msid] = rtcioStream;
    if (!peer.streamTransceivers[msid]) peer.streamTransceivers[msid] = [];
    rtcioStream.onTrackChanged((stream) => {
      const tracks = stream.getTracks();
      const trackById = new Map(tracks.map((t) => [t.id, t]));
      const own = peer.streamTransceivers[msid] ?? [];
      const claimed = new Set();
      own.forEach((t) => {
        const st = t.sender.track;
        if (st && trackById.has(st.id)) claimed.add(st.id);
      });
      own.forEach((t) => {
        const st = t.sender.track;
        if (st && trackById.has(st.id)) return;
        const kind = st?.kind ?? t.receiver.track?.kind;
        const replacement = tracks.find((tr) => tr.kind === kind && !claimed.has(tr.id));
        if (replacement) {
          t.sender.replaceTrack(replacement);
          if (t.direction !== "sendonly") t.direction = "sendonly";
          if (t.sender.setStreams) t.sender.setStreams(rtcioStream.mediaStream);
          claimed.add(replacement.id);
        } else if (st) {
          t.sender.replaceTrack(null);
          t.direction = "inactive";
        }
      });
      tracks.forEach((track) => {
        if (claimed.has(track.id)) return;
        const tr = peer.connection.addTransceiver(track, { direction: "sendonly", streams: [rtcioStream.mediaStream] });
        peer.streamTransceivers[msid].push(tr);
        claimed.add(track.id);
      });
    });
    rtcioStream.mediaStream.getTracks().forEach((track) => {
      const claimedMids = new Set(Object.values(peer.streamTransceivers).flat().map((t) => t.mid));
      const idle = peer.connection.getTransceivers().find((t) =>
        t.sender.track === null &&
        t.receiver.track?.kind === track.kind &&
        (t.direction === "sendonly" || t.direction === "sendrecv" || t.direction === "inactive") &&
        !claimedMids.has(t.mid));
      if (idle) {
        idle.sender.replaceTrack(track);
        idle.direction = "sendonly";
        if (idle.sender.setStreams) idle.sender.setStreams(rtcioStream.mediaStream);
        peer.streamTransceivers[msid].push(idle);
      } else {
        const tr = peer.connection.addTransceiver(track, { direction: "sendonly", streams: [rtcioStream.mediaStream] });
        peer.streamTransceivers[msid].push(tr);
      }
    });
  };

  createPeerConnection = (payload, options) => {
    const pc = new RTCPeerConnection(this.servers);
    const { source } = payload;
    this.rtcpeers[source] = {
      connection: pc,
      streams: {},
      streamTransceivers: {},
      socketId: source,
      polite: options.polite,
      connectionStatus: {
        makingOffer: false,
        ignoreOffer: false,
        isSettingRemoteAnswerPending: false,
        negotiationNeeded: false,
        negotiationInProgress: false,
      },
      ctrlDc: null,
      ctrlQueue: [],
      channels: {},
      channelIds: new Map(),
      connectFired: false,
      unhealthyTimer: null,
      peerLeftHintAt: 0,
    };
    const peer = this.rtcpeers[source];
    T.push("peer-created", { socket: this._testIndex, peer: source, polite: !!options.polite });

    pc.ondatachannel = ({ channel: dc }) => {
      this.log("warn", "Unexpected non-negotiated DataChannel — closing", { peer: source, label: dc.label });
      dc.close();
    };

    pc.ontrack = ({ transceiver, track, streams }) => {
      let stream = streams[0];
      if (!stream) {
        stream = new MediaStream([track]);
        this.log("warn", "ontrack: no associated stream, created synthetic", { peer: source, trackKind: track.kind });
      }
      if (!transceiver.mid) return;
      T.push("ontrack", { peer: source, msid: stream.id, trackKind: track.kind, mid: transceiver.mid });
      if (peer.streams[stream.id]) {
        const existing = peer.streams[stream.id].mediaStream;
        const old = existing.getTracks().find((t) => t.kind === track.kind);
        if (old && old.id !== track.id) existing.removeTrack(old);
        if (!existing.getTrackById(track.id)) existing.addTrack(track);
        this._dispatchTrackEvent("track-added", { peerId: source, stream: existing, track });
        return;
      }
      const rtcioStream = new RTCIOStream(stream);
      peer.streams[stream.id] = rtcioStream;
      rtcioStream.onTrackAdded((t) => this._dispatchTrackEvent("track-added", { peerId: source, stream, track: t }));
      rtcioStream.onTrackRemoved((t) => this._dispatchTrackEvent("track-removed", { peerId: source, stream, track: t }));
      T.remoteStream(source, stream);
      this.emit(RtcioEvents.MESSAGE, { source: this.id, target: source, data: { mid: stream.id } });
    };

    pc.onconnectionstatechange = () => {
      const state = pc.connectionState;
      T.push("pc-state", { peer: source, state });
      switch (state) {
        case "connected":
          this._clearUnhealthyTimer(peer);
          break;
        case "disconnected":
          this._armUnhealthyTimer(peer, "ICE consent lost");
          break;
        case "failed":
          try { pc.restartIce(); } catch (e) { this.log("warn", "restartIce failed", { peer: source, e }); }
          this._armUnhealthyTimer(peer, "ICE restart did not recover");
          break;
        case "closed":
          this.cleanupPeer(source);
          break;
      }
    };
    pc.oniceconnectionstatechange = () => {
      T.push("ice-state", { peer: source, state: pc.iceConnectionState });
      if (pc.iceConnectionState === "closed") this.cleanupPeer(source);
    };
    pc.onsignalingstatechange = () => T.push("signaling-state", { peer: source, state: pc.signalingState });

    pc.onicecandidate = (event) => {
      if (event.candidate) {
        if (this._loopbackOnly && !isLoopbackCandidate(event.candidate)) {
          T.push("candidate-filtered", { peer: source, candidate: event.candidate.candidate });
          return;
        }
        this.emit(RtcioEvents.MESSAGE, { source: this.id, target: source, data: { candidate: event.candidate } });
      }
    };

    // §3.4: coalesced negotiation with one microtask deferral.
    pc.onnegotiationneeded = async () => {
      const st = peer.connectionStatus;
      st.negotiationNeeded = true;
      if (st.negotiationInProgress) {
        this.log("debug", "onnegotiationneeded coalesced (negotiation in progress)", { peer: source });
        return;
      }
      await Promise.resolve();
      while (st.negotiationNeeded) {
        st.negotiationNeeded = false;
        st.negotiationInProgress = true;
        try {
          st.makingOffer = true;
          await pc.setLocalDescription();
          this.emit(RtcioEvents.MESSAGE, {
            target: peer.socketId,
            source: this.id,
            data: { description: this._outgoingDescription(pc.localDescription) },
          });
        } catch (error) {
          this.log("error", `onnegotiationneeded error: ${error?.message}`, { peer: source });
        } finally {
          st.makingOffer = false;
          st.negotiationInProgress = false;
        }
      }
    };

    const ctrlDc = pc.createDataChannel(CTRL_CHANNEL_LABEL, { negotiated: true, id: 0, ordered: true });
    this._setupCtrlDc(ctrlDc, peer);
    return peer;
  };

  // Test aid: with loopbackOnly, strip non-loopback a=candidate lines from SDP we send.
  _outgoingDescription(desc) {
    if (!this._loopbackOnly || !desc) return desc;
    const lines = desc.sdp.split("\r\n");
    const kept = lines.filter((l) => !l.startsWith("a=candidate:") || isLoopbackCandidate({ candidate: l.slice(2) }));
    if (kept.length === lines.length) return desc;
    return { type: desc.type, sdp: kept.join("\r\n") };
  }

  _dispatchTrackEvent(name, ev) {
    T.push(name, { peer: ev.peerId, msid: ev.stream.id, trackKind: ev.track.kind, trackId: ev.track.id });
    this.listeners(name).forEach((listener) => listener(ev));
  }

  // §6.4
  _handleSignalingConnect = () => {
    if (!this._signalingConnectedOnce) { this._signalingConnectedOnce = true; return; }
    Object.values(this.rtcpeers).forEach((peer) => {
      const state = peer.connection.connectionState;
      if (state !== "disconnected" && state !== "failed") return;
      try { peer.connection.restartIce(); } catch (e) { this.log("warn", "Reconnect: restartIce failed", { peer: peer.socketId, e }); }
    });
  };

  // §6.3
  _handlePeerLeftHint = (payload) => {
    const id = payload?.id;
    if (!id) return;
    const peer = this.rtcpeers[id];
    if (!peer) return;
    const state = peer.connection.connectionState;
    if (state === "closed") return;
    peer.peerLeftHintAt = Date.now();
    if (state === "disconnected" || state === "failed") {
      try { peer.connection.close(); } catch { /* ignore */ }
      this.cleanupPeer(id);
    }
  };

  broadcastPeers = (cb, ...args) => {
    if (!this.connected) return;
    Object.values(this.rtcpeers).forEach((peer) => cb.call(this, peer, ...args));
  };

  // §6.2
  _armUnhealthyTimer(peer, reason) {
    if (peer.unhealthyTimer) clearTimeout(peer.unhealthyTimer);
    const hintFresh = peer.peerLeftHintAt > 0 && Date.now() - peer.peerLeftHintAt < this.peerLeftHintTtlMs;
    const ms = hintFresh ? this.watchdogHintTimeoutMs : this.watchdogTimeoutMs;
    T.push("watchdog-armed", { peer: peer.socketId, reason, ms, hintFresh });
    peer.unhealthyTimer = setTimeout(() => {
      peer.unhealthyTimer = null;
      const state = peer.connection.connectionState;
      if (state === "connected" || state === "closed") return;
      this.log("warn", `Liveness watchdog: forcing peer close (${reason})`, { peer: peer.socketId, state });
      try { peer.connection.close(); } catch { /* ignore */ }
      this.cleanupPeer(peer.socketId);
    }, ms);
  }
  _clearUnhealthyTimer(peer) {
    if (peer.unhealthyTimer) { clearTimeout(peer.unhealthyTimer); peer.unhealthyTimer = null; }
  }

  // §6.5
  cleanupPeer(peerId) {
    const peer = this.rtcpeers[peerId];
    if (!peer) return;
    this._clearUnhealthyTimer(peer);
    if (peer.ctrlDc && peer.ctrlDc.readyState !== "closed" && peer.ctrlDc.readyState !== "closing") peer.ctrlDc.close();
    peer.ctrlQueue.length = 0;
    Object.values(peer.channels).forEach((ch) => ch.close());
    Object.values(peer.streams).forEach((s) => s.dispose?.());
    this._broadcastChannels.forEach((bch) => bch._removePeer(peerId));
    this._peerListeners.delete(peerId);
    peer.connection.close();
    delete this.rtcpeers[peerId];
    delete this.signalingQueues[peerId];
    T.peerCleaned(this, peerId, peer.connectFired);
    if (peer.connectFired) this.listeners("peer-disconnect").forEach((listener) => listener({ id: peerId }));
  }

  // §4.2 / §4.6
  _getOrCreateChannel(peerId, name, options) {
    const peer = this.rtcpeers[peerId];
    if (!peer) return new RTCIOChannel(options);
    let channel = peer.channels[name];
    if (!channel) {
      channel = new RTCIOChannel(options);
      channel._meta = { peer: peerId, name };
      peer.channels[name] = channel;
    }
    if (!channel._isAttached()) {
      const id = hashChannelName(name);
      const taken = peer.channelIds.get(id);
      if (taken && taken !== name) {
        throw new Error(`[rtc-io] Channel '${name}' hash-collides with existing channel '${taken}' on peer ${peerId} ` +
          `(both names hash to SCTP id ${id}). Pick a different channel name.`);
      }
      peer.channelIds.set(id, name);
      // eslint-disable-next-line no-unused-vars
      const { queueBudget, highWatermark, lowWatermark, ...dcInit } = options;
      const dc = peer.connection.createDataChannel(`${CUSTOM_CHANNEL_PREFIX}${name}`, { ...dcInit, negotiated: true, id });
      channel._attach(dc);
    }
    return channel;
  }

  _replayChannelsToPeer(peer) {
    for (const { name, options } of this._channelDefs) {
      try {
        const channel = this._getOrCreateChannel(peer.socketId, name, options);
        this._broadcastChannels.get(name)?._addPeer(peer.socketId, channel);
      } catch (err) {
        this.log("error", `Failed to replay channel '${name}' to peer`, { peer: peer.socketId, err });
      }
    }
  }

  // §4.1 / §4.5
  _setupCtrlDc(dc, peer) {
    dc.binaryType = "arraybuffer";
    peer.ctrlDc = dc;
    dc.onopen = () => {
      this._flushCtrlQueue(peer);
      T.push("peer-connect", { socket: this._testIndex, peer: peer.socketId });
      this.listeners("peer-connect").forEach((listener) => {
        try { listener({ id: peer.socketId }); } catch (err) { this.log("error", "peer-connect listener", err); }
      });
      peer.connectFired = true;
    };
    dc.onclose = () => {
      T.push("ctrl-close", { peer: peer.socketId });
      peer.ctrlQueue.length = 0;
    };
    dc.onerror = (e) => this.log("warn", "Ctrl channel error", { peer: peer.socketId, e });
    dc.onmessage = ({ data }) => {
      if (typeof data !== "string") return T.ctrlDropped(peer.socketId, "binary");
      if (data.length > MAX_CTRL_ENVELOPE_BYTES) return T.ctrlDropped(peer.socketId, "too-large", { length: data.length });
      let envelope;
      try { envelope = JSON.parse(data); } catch { return T.ctrlDropped(peer.socketId, "invalid-json"); }
      const name = envelope?.e;
      if (typeof name !== "string") return T.ctrlDropped(peer.socketId, "no-event-name");
      if (name.startsWith(INTERNAL_EVENT_PREFIX) || RESERVED_EVENTS.has(name)) {
        this.log("warn", "Ctrl: dropped reserved event from peer", { peer: peer.socketId, name });
        return T.ctrlDropped(peer.socketId, "reserved", { name });
      }
      const args = Array.isArray(envelope.d) ? envelope.d : [];
      T.push("event", { via: "ctrl", socket: this._testIndex, peer: peer.socketId, name, args: T.loggable(args) });
      this.listeners(name).forEach((h) => {
        try { h(...args); } catch (err) { this.log("error", `Listener error [${name}]`, err); }
      });
      this._peerListeners.get(peer.socketId)?.get(name)?.slice().forEach((h) => {
        try { h(...args); } catch (err) { this.log("error", `Peer listener error [${name}]`, err); }
      });
    };
  }
  _broadcastCtrl(name, args) {
    const envelope = JSON.stringify({ e: name, d: args });
    Object.values(this.rtcpeers).forEach((peer) => this._sendCtrlRaw(peer, envelope));
  }
  _sendCtrl(peerId, name, args) {
    const peer = this.rtcpeers[peerId];
    if (!peer) return;
    this._sendCtrlRaw(peer, JSON.stringify({ e: name, d: args }));
  }
  _sendCtrlRaw(peer, envelope) {
    const dc = peer.ctrlDc;
    const state = dc?.readyState;
    if (state === "open") {
      try { dc.send(envelope); return; } catch (e) {
        this.log("warn", "Ctrl send failed, queueing", { peer: peer.socketId, e });
        this._enqueueCtrl(peer, envelope);
        return;
      }
    }
    if (state === "closing" || state === "closed") {
      this.log("warn", "Ctrl DC closed, dropping message", { peer: peer.socketId });
      return;
    }
    this._enqueueCtrl(peer, envelope);
  }
  _enqueueCtrl(peer, envelope) {
    if (peer.ctrlQueue.length >= MAX_CTRL_QUEUE) {
      peer.ctrlQueue.shift();
      this.log("warn", "Ctrl queue full, dropped oldest", { peer: peer.socketId });
    }
    peer.ctrlQueue.push(envelope);
  }
  _flushCtrlQueue(peer) {
    if (peer.ctrlDc?.readyState !== "open") return;
    while (peer.ctrlQueue.length > 0) {
      const envelope = peer.ctrlQueue.shift();
      try { peer.ctrlDc.send(envelope); } catch (e) {
        peer.ctrlQueue.unshift(envelope);
        this.log("warn", "Ctrl flush failed, will retry", { peer: peer.socketId, e });
        return;
      }
    }
  }
  _addPeerListener(peerId, event, handler) {
    let map = this._peerListeners.get(peerId);
    if (!map) { map = new Map(); this._peerListeners.set(peerId, map); }
    let list = map.get(event);
    if (!list) { list = []; map.set(event, list); }
    list.push(handler);
  }
  _removePeerListener(peerId, event, handler) {
    const list = this._peerListeners.get(peerId)?.get(event);
    if (!list) return;
    const i = list.indexOf(handler);
    if (i !== -1) list.splice(i, 1);
  }

  // §9 stats helpers
  async getStats(peerId) {
    const pc = this.getPeer(peerId)?.connection;
    if (!pc) return null;
    const map = new Map();
    (await pc.getStats()).forEach((report) => {
      if (!map.has(report.type)) map.set(report.type, []);
      map.get(report.type).push({ report, description: report.type });
    });
    return map;
  }
  async getSessionStats(peerId) {
    const pc = this.getPeer(peerId)?.connection;
    if (!pc) return null;
    const stats = await pc.getStats();
    const out = { timestamp: Date.now() };
    let pair = null;
    stats.forEach((r) => {
      if (r.type === "outbound-rtp") {
        out.packetsSent = r.packetsSent; out.bytesSent = r.bytesSent;
        const codec = r.codecId && stats.get(r.codecId);
        if (codec) out.codecName = codec.mimeType?.split("/")[1];
      } else if (r.type === "inbound-rtp") {
        out.packetsLost = r.packetsLost; out.packetsReceived = r.packetsReceived;
        out.bytesReceived = r.bytesReceived; out.jitter = r.jitter != null ? r.jitter * 1000 : undefined;
      } else if (r.type === "remote-inbound-rtp" && r.roundTripTime != null) {
        out.rtt = r.roundTripTime * 1000;
      } else if (r.type === "transport" && r.selectedCandidatePairId) {
        pair = stats.get(r.selectedCandidatePairId);
      }
    });
    if (pair) {
      if (out.rtt == null && pair.currentRoundTripTime != null) out.rtt = pair.currentRoundTripTime * 1000;
      out.localAddress = stats.get(pair.localCandidateId)?.address;
      out.remoteAddress = stats.get(pair.remoteCandidateId)?.address;
    }
    return out;
  }
  async getIceCandidateStats(peerId) {
    const pc = this.getPeer(peerId)?.connection;
    if (!pc) return null;
    const stats = await pc.getStats();
    const local = [], remote = [];
    let selected;
    stats.forEach((r) => {
      if (r.type === "local-candidate") local.push(r);
      else if (r.type === "remote-candidate") remote.push(r);
      else if (r.type === "transport" && r.selectedCandidatePairId) {
        const p = stats.get(r.selectedCandidatePairId);
        if (p) selected = { localCandidate: stats.get(p.localCandidateId), remoteCandidate: stats.get(p.remoteCandidateId) };
      }
    });
    return { iceCandidateStats: [...local, ...remote], ...(selected ? { selectedIceCandidatePairStats: selected } : {}) };
  }
}

function isLoopbackCandidate(c) {
  let addr = c.address;
  if (!addr && typeof c.candidate === "string") addr = c.candidate.split(" ")[4];
  if (!addr) return true; // end-of-candidates marker or unparsable: pass through unchanged
  return addr.startsWith("127.") || addr === "::1" || addr === "[::1]";
}

/**
 * io(url, opts) like the library: namespace = URL path. Every call builds a fresh Manager
 * (the library re-uses one per origin+path) so that one page can hold several sockets.
 */
export function connect(url, opts = {}) {
  const u = new URL(url, location.href);
  const nsp = u.pathname || "/";
  const o = { ...opts };
  if (u.search && !o.query) o.query = Object.fromEntries(u.searchParams);
  const manager = new Manager(`${u.protocol}//${u.host}`, o);
  const socket = new Socket(manager, nsp, o);
  manager.nsps[nsp] = socket;
  return socket;
}

export function errText(e) {
  if (!e) return String(e);
  if (e instanceof Error || e?.message) return `${e.name ?? "Error"}: ${e.message}`;
  return String(e);
}
