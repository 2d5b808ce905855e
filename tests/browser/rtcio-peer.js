// rtcio-peer.js — a browser rtc.io peer for integration tests.
//
// Part 1 (the library) re-implements the rtc.io 1.x browser client exactly as shared/PROTOCOL.md
// describes it — defaults and quirks included — on top of the browser's RTCPeerConnection and
// socket.io-client 4.8. Part 2 (the test layer) records everything that happens in `window.__log`
// and offers helpers the Node driver (driver.mjs) calls. README.md lists every deviation.
//
// Plain ES module, no build step. Section references (§) point into PROTOCOL.md.

import { Manager, Socket as IoSocket } from "./node_modules/socket.io-client/dist/socket.io.esm.min.js";

// ═══════════════════════════════════════════════════════════════════════════════════════════════
// Part 1 — the rtc.io client library
// ═══════════════════════════════════════════════════════════════════════════════════════════════

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

// ─── RTCIOStream (§5) ───────────────────────────────────────────────────────────────────────────
export class RTCIOStream {
  constructor(idOrMediaStream, mediaStream) {
    if (idOrMediaStream instanceof MediaStream) {
      this.id = crypto.randomUUID();
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
    this._meta = { peer: null, name: null }; // test layer: where this channel goes
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
    // §3.6. DEVIATION (offline tests): a missing or empty list means NO ice servers; the JS
    // falls back to two public STUN servers instead.
    this.servers = { iceServers: Array.isArray(opts?.iceServers) ? opts.iceServers : [] };
    const wd = opts?.watchdog;
    this.watchdogTimeoutMs = pickPositive(wd?.timeout, DEFAULT_WATCHDOG_TIMEOUT_MS);
    this.watchdogHintTimeoutMs = pickPositive(wd?.hintTimeout, DEFAULT_WATCHDOG_HINT_TIMEOUT_MS);
    this.peerLeftHintTtlMs = pickPositive(wd?.hintTTL, DEFAULT_PEER_LEFT_HINT_TTL_MS);
    // Test layer: only loopback ICE candidates are signaled (see README, deviations).
    this._loopbackOnly = opts?.loopbackOnly !== false;
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

  // Test layer: record every inbound socket.io event before normal dispatch.
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

  // Test layer: with loopbackOnly, strip non-loopback a=candidate lines from SDP we send.
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

// ═══════════════════════════════════════════════════════════════════════════════════════════════
// Part 2 — the test layer
// ═══════════════════════════════════════════════════════════════════════════════════════════════

// Incremental SHA-256 (WebCrypto has no streaming digest).
const K256 = new Int32Array([ // Int32 views keep V8 on small-integer paths
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
export class Sha256 {
  constructor() {
    this.h = new Int32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    this.buf = new Uint8Array(64);
    this.bufLen = 0;
    this.total = 0;
    this.w = new Int32Array(64);
  }
  update(data) {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength);
    const n = bytes.length;
    let i = 0;
    this.total += n;
    if (this.bufLen) {
      const take = Math.min(64 - this.bufLen, n);
      this.buf.set(bytes.subarray(0, take), this.bufLen);
      this.bufLen += take;
      i = take;
      if (this.bufLen === 64) { this._block(this.buf, 0); this.bufLen = 0; }
    }
    for (; i + 64 <= n; i += 64) this._block(bytes, i);
    if (i < n) { this.buf.set(bytes.subarray(i), 0); this.bufLen = n - i; }
    return this;
  }
  _block(b, o) {
    const w = this.w, H = this.h;
    for (let t = 0; t < 16; t++, o += 4) w[t] = (b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3];
    for (let t = 16; t < 64; t++) {
      const a = w[t - 15], c = w[t - 2];
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((c >>> 17) | (c << 15)) ^ ((c >>> 19) | (c << 13)) ^ (c >>> 10);
      w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
    }
    let a = H[0], bb = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K256[t] + w[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & bb) ^ (a & c) ^ (bb & c))) | 0;
      h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = bb; bb = a; a = (t1 + t2) | 0;
    }
    H[0] = (H[0] + a) | 0; H[1] = (H[1] + bb) | 0; H[2] = (H[2] + c) | 0; H[3] = (H[3] + d) | 0;
    H[4] = (H[4] + e) | 0; H[5] = (H[5] + f) | 0; H[6] = (H[6] + g) | 0; H[7] = (H[7] + h) | 0;
  }
  /** Hex digest of everything so far; does not disturb the running state. */
  hex() {
    const c = new Sha256();
    c.h.set(this.h); c.buf.set(this.buf); c.bufLen = this.bufLen; c.total = this.total;
    const bits = this.total * 8;
    const pad = new Uint8Array(((c.bufLen < 56 ? 56 : 120) - c.bufLen) + 8);
    pad[0] = 0x80;
    const dv = new DataView(pad.buffer);
    dv.setUint32(pad.length - 8, Math.floor(bits / 2 ** 32));
    dv.setUint32(pad.length - 4, bits >>> 0);
    c.update(pad);
    return Array.from(c.h, (x) => (x >>> 0).toString(16).padStart(8, "0")).join("");
  }
}
export function sha256Hex(data) { return new Sha256().update(data).hex(); }

/**
 * Deterministic test bytes: xorshift32 (x ^= x<<13; x ^= x>>>17; x ^= x<<5), seed 0 → 0x9e3779b9,
 * each step's 32-bit state written little-endian; the byte stream is the concatenation, so chunk
 * boundaries do not matter. A Rust test can regenerate the same bytes.
 */
export class ByteGen {
  constructor(seed = 1) { this.x = (seed >>> 0) || 0x9e3779b9; this.pend = 0; this.pendLen = 0; }
  _step() { let x = this.x; x ^= x << 13; x ^= x >>> 17; x ^= x << 5; this.x = x >>> 0; return this.x; }
  next(n) {
    const out = new Uint8Array(n);
    let i = 0;
    while (i < n && this.pendLen > 0) { out[i++] = this.pend & 0xff; this.pend >>>= 8; this.pendLen--; }
    while (i + 4 <= n) {
      const x = this._step();
      out[i] = x & 0xff; out[i + 1] = (x >>> 8) & 0xff; out[i + 2] = (x >>> 16) & 0xff; out[i + 3] = x >>> 24;
      i += 4;
    }
    if (i < n) {
      let x = this._step(); this.pendLen = 4;
      while (i < n) { out[i++] = x & 0xff; x >>>= 8; this.pendLen--; }
      this.pend = x;
    }
    return out;
  }
}

function errText(e) {
  if (!e) return String(e);
  if (e instanceof Error || e?.message) return `${e.name ?? "Error"}: ${e.message}`;
  return String(e);
}
const now = () => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;

/** Test recorder: the append-only log plus the hooks the library calls. */
const T = {
  log: [],
  waiters: [],
  recv: new Map(), // "peer\u0000channel" → {messages, bytes, sha, firstAt, lastAt}
  config: { hashEachMessage: true, recvMode: "hash", attachRemoteVideo: true },

  push(kind, fields = {}) {
    const entry = { t: now(), kind, ...fields };
    const index = T.log.length;
    T.log.push(entry);
    if (T.waiters.length) {
      for (const w of T.waiters.slice()) {
        if (index >= w.since && matches(entry, w.pattern)) { w.done(index, entry); }
      }
    }
    return entry;
  },

  /** JSON-safe copy of any value: streams/channels/sockets/binary become small descriptions. */
  loggable(v, depth = 0, seen = new WeakSet()) {
    if (v === null || v === undefined) return v ?? null;
    const ty = typeof v;
    if (ty === "string" || ty === "boolean") return v;
    if (ty === "number") return Number.isFinite(v) ? v : String(v);
    if (ty === "bigint") return v.toString();
    if (ty === "function" || ty === "symbol") return undefined;
    if (v instanceof RTCIOStream) return { $stream: streamInfo(v) };
    if (typeof MediaStream !== "undefined" && v instanceof MediaStream) return { $mediaStream: { id: v.id, kinds: v.getTracks().map((t) => t.kind) } };
    if (typeof MediaStreamTrack !== "undefined" && v instanceof MediaStreamTrack) return { $track: { id: v.id, kind: v.kind, readyState: v.readyState } };
    if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return { $bytes: v.byteLength, sha256: sha256Hex(v) };
    if (v instanceof Error) return { $error: errText(v) };
    if (v instanceof Socket) return { $socket: { index: v._testIndex, id: v.id ?? null, connected: v.connected } };
    if (v instanceof RTCIOChannel) return { $channel: { ...v._meta, readyState: v.readyState } };
    if (v instanceof RTCIOBroadcastChannel) return { $broadcast: { name: v._name, peers: [...v._peers.keys()], closed: v._closed } };
    if (typeof Event !== "undefined" && v instanceof Event) return { $event: v.type };
    if (typeof Node !== "undefined" && v instanceof Node) return { $node: v.nodeName };
    if (v instanceof Map) v = Object.fromEntries(v);
    if (v instanceof Set) v = [...v];
    if (typeof v.toJSON === "function" && !Array.isArray(v)) {
      try { return T.loggable(v.toJSON(), depth, seen); } catch { /* fall through */ }
    }
    if (seen.has(v)) return "[Circular]";
    if (depth > 12) return "[Depth]";
    seen.add(v);
    let out;
    if (Array.isArray(v)) {
      out = v.map((x) => { const y = T.loggable(x, depth + 1, seen); return y === undefined ? null : y; });
    } else {
      out = {};
      for (const k in v) {
        const y = T.loggable(v[k], depth + 1, seen);
        if (y !== undefined) out[k] = y;
      }
    }
    seen.delete(v);
    return out;
  },

  serverEvent(socket, args) {
    const [name, ...rest] = args;
    if (typeof name === "string" && name.startsWith(INTERNAL_EVENT_PREFIX)) {
      const p = rest[0];
      const d = p?.data;
      let what = "other";
      if (name === RtcioEvents.MESSAGE) {
        if (d?.description) what = d.description.type;
        else if (d?.candidate) what = "candidate";
        else if (d?.events) what = "meta-response";
        else if (d?.mid) what = "meta-request";
      } else if (name === RtcioEvents.INIT_OFFER) what = "init-offer";
      else if (name === RtcioEvents.PEER_LEFT) what = "peer-left";
      T.push("signal", { socket: socket._testIndex, name, what, from: p?.source ?? p?.id ?? null, args: T.loggable(rest) });
    } else {
      T.push("event", { via: "server", socket: socket._testIndex, name, args: T.loggable(rest) });
    }
  },
  signalOut(socket, name, args) {
    const d = args[0]?.data;
    let what = "other";
    if (d?.description) what = d.description.type;
    else if (d?.candidate) what = "candidate";
    else if (d?.events) what = "meta-response";
    else if (d?.mid) what = "meta-request";
    T.push("signal-out", { socket: socket._testIndex, name, what, to: args[0]?.target ?? null, args: T.loggable(args) });
  },
  streamEvent(socket, peer, name, rawArgs, wrapper, listeners) {
    // Log the args as the listeners will see them, without mutating anything (ID-sync only
    // happens when there is a listener, exactly as in the library).
    const subst = (x) => {
      if (typeof x === "string" && x.startsWith("[RTCIOStream]")) return { $stream: { ...streamInfo(wrapper), id: x.replace("[RTCIOStream] ", "") } };
      if (Array.isArray(x)) return x.map(subst);
      if (x && typeof x === "object") { const o = {}; for (const k in x) o[k] = subst(x[k]); return o; }
      return x;
    };
    T.push("event", { via: "stream", socket: socket._testIndex, peer, name, args: T.loggable(rawArgs.map(subst)), listeners });
  },
  ctrlDropped(peer, reason, extra = {}) { T.push("ctrl-dropped", { peer, reason, ...extra }); },
  channelEvent(ch, kind, extra = {}) { T.push(kind, { peer: ch._meta.peer, channel: ch._meta.name, ...extra }); },
  channelMessage(ch, name, args) {
    T.push("channel", { peer: ch._meta.peer, channel: ch._meta.name, name, args: T.loggable(args) });
  },
  channelData(ch, data) {
    const key = `${ch._meta.peer}\u0000${ch._meta.name}`;
    let r = T.recv.get(key);
    if (!r) { r = { messages: 0, bytes: 0, sha: new Sha256(), chunks: [], firstAt: now(), lastAt: 0 }; T.recv.set(key, r); }
    const bytes = new Uint8Array(data);
    r.messages++; r.bytes += bytes.length; r.lastAt = now();
    // "hash": running SHA-256 in JS (default); "retain": keep the bytes and hash them natively
    // when asked (cheaper while receiving — used by the benchmark).
    if (T.config.recvMode === "retain") r.chunks.push(bytes); else r.sha.update(bytes);
    const entry = { peer: ch._meta.peer, channel: ch._meta.name, bytes: bytes.length, total: r.bytes };
    if (T.config.hashEachMessage) entry.sha256 = sha256Hex(bytes);
    T.push("channel-data", entry);
  },
  remoteStream(peer, stream) {
    if (!T.config.attachRemoteVideo) return;
    const v = document.createElement("video");
    v.muted = true; v.autoplay = true; v.playsInline = true;
    v.dataset.peer = peer; v.dataset.msid = stream.id;
    v.srcObject = stream;
    document.getElementById("tiles")?.appendChild(v);
    v.play().catch(() => {});
  },
  peerCleaned(socket, peer, connectFired) {
    T.push("peer-cleanup", { socket: socket._testIndex, peer, connectFired });
    if (connectFired) T.push("peer-disconnect", { socket: socket._testIndex, peer });
    document.querySelectorAll("video").forEach((v) => { if (v.dataset.peer === peer) { v.srcObject = null; v.remove(); } });
  },
};

function streamInfo(w) {
  return { id: w.id, msid: w.mediaStream.id, kinds: w.mediaStream.getTracks().map((t) => t.kind) };
}

/**
 * Partial deep match: every key of `pattern` must match in `value`. Objects recurse; arrays match
 * element-wise by index (value may be longer); primitives compare with ===.
 */
export function matches(value, pattern) {
  if (pattern === null || typeof pattern !== "object") return value === pattern;
  if (value === null || typeof value !== "object") return false;
  if (Array.isArray(pattern)) {
    if (!Array.isArray(value) || value.length < pattern.length) return false;
    return pattern.every((p, i) => matches(value[i], p));
  }
  return Object.keys(pattern).every((k) => matches(value[k], pattern[k]));
}

window.addEventListener("error", (e) => T.push("error", { where: "window", message: errText(e.error ?? e.message) }));
window.addEventListener("unhandledrejection", (e) => T.push("error", { where: "unhandledrejection", message: errText(e.reason) }));

// ─── helpers for the driver ─────────────────────────────────────────────────────────────────────
const sockets = [];
function sock(i) {
  const s = i === undefined || i === null ? sockets[sockets.length - 1] : sockets[i];
  if (!s) throw new Error(`no socket ${i ?? "(none connected yet)"}`);
  return s;
}
function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}
function channelFor(socket, peer, channel) {
  if (typeof channel !== "string") return channel;
  const p = socket.rtcpeers[peer];
  if (!p) throw new Error(`unknown peer ${peer}`);
  const ch = p.channels[channel];
  if (!ch) throw new Error(`no channel '${channel}' to peer ${peer} (create it first)`);
  return ch;
}

const rtcio = {
  RTCIOStream, RTCIOChannel, RTCIOBroadcastChannel, Socket, Sha256, ByteGen,
  hashChannelName, sha256Hex, matches,
  sockets,
  local: {},
  remote: {},
  channels: {},
  config: T.config,
  get socket() { return sock(); },

  connect(url, opts = {}) {
    const s = connect(url, opts);
    s._testIndex = sockets.length;
    sockets.push(s);
    s.on("connect", () => T.push("connect", { socket: s._testIndex, id: s.id, recovered: s.recovered }));
    s.on("disconnect", (reason) => T.push("disconnect", { socket: s._testIndex, reason }));
    s.on("connect_error", (err) => T.push("connect_error", { socket: s._testIndex, message: errText(err) }));
    return s;
  },
  io(url, opts) { return rtcio.connect(url, opts); },

  /** getUserMedia with the fake devices; the RTCIOStream is kept in rtcio.local[name]. */
  async getUserMedia({ name = "camera", constraints = { video: true, audio: true } } = {}) {
    const ms = await navigator.mediaDevices.getUserMedia(constraints);
    const stream = new RTCIOStream(ms);
    rtcio.local[name] = stream;
    return streamInfo(stream);
  },

  /**
   * The tutorial's way into a room: connect; on every `connect` send srv `join-room {roomId, name}`
   * and (if `camera`) emit `camera {id, name, camera: <stream>}`; optional broadcast `chat`
   * channel; optional per-peer channels created on `peer-connect`. Resolves on the first connect.
   */
  async join(url, { roomId, name, camera = false, chat = false, perPeer = [], timeoutMs = 15000, ...connectOpts } = {}) {
    let stream = null;
    if (camera) {
      await rtcio.getUserMedia({ name: "camera", constraints: camera === true ? { video: true, audio: true } : camera });
      stream = rtcio.local.camera;
    }
    const s = rtcio.connect(url, { iceServers: [], ...connectOpts });
    if (chat) rtcio.channels.chat = s.createChannel("chat", { ordered: true });
    s.on("connect", () => {
      T.push("join", { socket: s._testIndex, id: s.id, roomId, name });
      s.server.emit("join-room", { roomId, name });
      if (stream) s.emit("camera", { id: s.id, name, camera: stream });
    });
    // Tutorial receivers key tiles by `id` and label them with `name`.
    rtcio.remote = rtcio.remote ?? {};
    s.on("camera", (p) => { if (p && typeof p === "object" && p.id) rtcio.remote[p.id] = p; });
    for (const { name: ch, options } of perPeer) {
      s.on("peer-connect", ({ id }) => s.peer(id).createChannel(ch, options ?? { ordered: true }));
    }
    await withTimeout(new Promise((res, rej) => {
      if (s.connected) return res();
      s.once("connect", res);
      s.once("connect_error", (e) => rej(new Error(`connect_error: ${errText(e)}`)));
    }), timeoutMs, `socket.io connect to ${url}`);
    return { socket: s._testIndex, id: s.id, stream: stream ? streamInfo(stream) : null };
  },

  /**
   * Sends `bytes` deterministic bytes (ByteGen(seed)) over the per-peer channel, in `chunkSize`
   * pieces, the way the tutorial's file transfer does: whenever send() returns false, await
   * `drain`. A chunk the channel refused (an `error` during send: transport threw or queue budget)
   * is re-sent after `drain` when onRefused == "retry" (default) or skipped ("skip", the plain
   * JS app behaviour). sha256 covers exactly the bytes the channel accepted.
   */
  async sendBytes({ socket, peer, channel, bytes, chunkSize = 16384, seed = 1, onRefused = "retry", hash = true, timeoutMs = 120000 }) {
    const s = sock(socket);
    const ch = channelFor(s, peer, channel);
    const started = now();
    const deadline = Date.now() + timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    if (ch.readyState !== "open") {
      await withTimeout(new Promise((res) => ch.once("open", res)), left(), `channel '${channel}' to open`);
    }
    const gen = new ByteGen(seed);
    const hasher = hash ? new Sha256() : null;
    let sent = 0, accepted = 0, chunks = 0, falses = 0, refused = 0, drains = 0, pending = null;
    const waitDrain = () => withTimeout(new Promise((res, rej) => {
      const onDrain = () => { ch.off("close", onClose); res(); };
      const onClose = () => { ch.off("drain", onDrain); rej(new Error(`channel '${channel}' closed during sendBytes`)); };
      ch.once("drain", onDrain);
      ch.once("close", onClose);
    }), left(), `'drain' on channel '${channel}' after ${sent} of ${bytes} bytes`);
    while (sent < bytes) {
      const chunk = pending ?? gen.next(Math.min(chunkSize, bytes - sent));
      pending = null;
      let errored = false;
      const onErr = () => { errored = true; };
      ch.on("error", onErr);
      const ok = ch.send(chunk.buffer);
      ch.off("error", onErr);
      chunks++;
      if (ok || !errored) { if (hasher) hasher.update(chunk); accepted += chunk.length; sent += chunk.length; }
      if (ok) continue;
      falses++;
      if (errored) {
        refused++;
        if (onRefused === "retry") pending = chunk; else sent += chunk.length;
      }
      if (ch.readyState !== "open") throw new Error(`channel '${channel}' is ${ch.readyState} after ${sent} bytes`);
      await waitDrain();
      drains++;
    }
    return { bytes: accepted, sha256: hasher ? hasher.hex() : null, chunks, falseReturns: falses, refused, drains, startedAt: started, endedAt: now() };
  },

  /**
   * The tutorial's file sender (PROTOCOL.md §8 "File transfer") over the per-peer channel `file`
   * (created here if needed, `ordered: true`): emit `meta {tid, name, size, mime}`, send `bytes`
   * deterministic bytes (ByteGen(seed)) in 16 384-byte chunks with send(), awaiting `drain`
   * whenever it returns false (sendBytes), then emit `eof {tid}`. Returns sendBytes' result plus
   * `{tid, name}`.
   */
  async sendFile({ socket, peer, bytes, name = "file.bin", mime = "application/octet-stream", tid, seed = 1, timeoutMs = 120000 }) {
    const s = sock(socket);
    const ch = s.peer(peer).createChannel("file", { ordered: true });
    tid = tid ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    ch.emit("meta", { tid, name, size: bytes, mime });
    const r = await rtcio.sendBytes({ socket, peer, channel: "file", bytes, seed, timeoutMs, chunkSize: 16384 });
    ch.emit("eof", { tid });
    return { tid, name, ...r };
  },

  /**
   * The tutorial's file receiver on the per-peer channel `file` of every current and future peer
   * of the socket: `meta` starts a file, binary messages before any `meta` are dropped, `eof` is
   * accepted only for the current tid. Each complete file is pushed to `rtcio.files` and logged
   * as `file-received {peer, tid, name, size, mime, bytes, sha256}` (`sha256` of the bytes
   * received; `sha256Sent`: the sender's, when its eof has one). `cancel {tid, reason}` (an
   * extension the tutorial ignores) is only logged, as `file-cancel`.
   */
  receiveFiles({ socket } = {}) {
    const s = sock(socket);
    rtcio.files = rtcio.files ?? [];
    const attach = (id) => {
      const ch = s.peer(id).createChannel("file", { ordered: true });
      if (ch.__fileReceiver) return;
      ch.__fileReceiver = true;
      let cur = null;
      ch.on("meta", (m) => {
        cur = { tid: m?.tid, name: m?.name, size: m?.size, mime: m?.mime ?? "application/octet-stream", bytes: 0, chunks: [] };
      });
      ch.on("data", (buf) => {
        if (!cur) return;
        cur.bytes += buf.byteLength;
        cur.chunks.push(new Uint8Array(buf)); // hashed natively at eof (the JS SHA-256 is slow)
      });
      ch.on("eof", async (e) => {
        if (!cur || e?.tid !== cur.tid) return;
        const c = cur;
        cur = null;
        const all = new Uint8Array(c.bytes);
        let o = 0;
        for (const x of c.chunks) { all.set(x, o); o += x.length; }
        const d = await crypto.subtle.digest("SHA-256", all);
        const sha256 = Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
        const f = { peer: id, tid: c.tid, name: c.name, size: c.size, mime: c.mime, bytes: c.bytes, sha256, sha256Sent: e?.sha256 ?? null };
        rtcio.files.push(f);
        T.push("file-received", f);
      });
      ch.on("cancel", (c) => T.push("file-cancel", { peer: id, tid: c?.tid, reason: c?.reason }));
    };
    Object.keys(s.rtcpeers).forEach(attach);
    s.on("peer-connect", ({ id }) => attach(id));
    return true;
  },

  /** Bytes received as binary messages from `peer` on `channel` (running SHA-256 of them all). */
  async recvStats({ peer, channel, hash = true }) {
    const r = T.recv.get(`${peer}\u0000${channel}`);
    if (!r) return { messages: 0, bytes: 0, sha256: hash ? new Sha256().hex() : null, firstAt: null, lastAt: null };
    let sha256 = null;
    if (hash && r.chunks.length) {
      if (r.sha.total) throw new Error("recvStats: recvMode changed during a transfer");
      const all = new Uint8Array(r.bytes);
      let o = 0;
      for (const c of r.chunks) { all.set(c, o); o += c.length; }
      const d = await crypto.subtle.digest("SHA-256", all);
      sha256 = Array.from(new Uint8Array(d), (x) => x.toString(16).padStart(2, "0")).join("");
    } else if (hash) {
      sha256 = r.sha.hex();
    }
    return { messages: r.messages, bytes: r.bytes, sha256, firstAt: r.firstAt, lastAt: r.lastAt };
  },
  /** Forget what was received from `peer` on `channel` (so a new transfer starts from zero). */
  resetRecv({ peer, channel }) { T.recv.delete(`${peer}\u0000${channel}`); return true; },

  /** SHA-256 of ByteGen(seed)'s first `bytes` bytes (what sendBytes sends when nothing is skipped). */
  expectedSha256({ bytes, seed = 1 }) {
    const g = new ByteGen(seed), h = new Sha256();
    for (let done = 0; done < bytes;) { const n = Math.min(1 << 20, bytes - done); h.update(g.next(n)); done += n; }
    return h.hex();
  },

  /** getStats summary per peer: inbound/outbound RTP, selected candidate pair, data channels. */
  async mediaStats({ socket, peer } = {}) {
    const s = sock(socket);
    const ids = peer ? [peer] : Object.keys(s.rtcpeers);
    const out = {};
    for (const id of ids) {
      const pc = s.rtcpeers[id]?.connection;
      if (!pc) { out[id] = null; continue; }
      const stats = await pc.getStats();
      const r = { inbound: [], outbound: [], pair: null, dataChannels: [] };
      stats.forEach((x) => {
        if (x.type === "inbound-rtp") {
          r.inbound.push({ kind: x.kind, mid: x.mid, trackIdentifier: x.trackIdentifier, packetsReceived: x.packetsReceived,
            bytesReceived: x.bytesReceived, framesDecoded: x.framesDecoded, frameWidth: x.frameWidth, frameHeight: x.frameHeight,
            framesPerSecond: x.framesPerSecond, codec: stats.get(x.codecId)?.mimeType });
        } else if (x.type === "outbound-rtp") {
          r.outbound.push({ kind: x.kind, mid: x.mid, packetsSent: x.packetsSent, bytesSent: x.bytesSent, framesEncoded: x.framesEncoded,
            frameWidth: x.frameWidth, frameHeight: x.frameHeight, codec: stats.get(x.codecId)?.mimeType });
        } else if (x.type === "transport" && x.selectedCandidatePairId) {
          const p = stats.get(x.selectedCandidatePairId);
          const l = p && stats.get(p.localCandidateId), rm = p && stats.get(p.remoteCandidateId);
          if (p) r.pair = { local: l && `${l.address}:${l.port} ${l.candidateType}`, remote: rm && `${rm.address}:${rm.port} ${rm.candidateType}`, rtt: p.currentRoundTripTime };
        } else if (x.type === "data-channel") {
          r.dataChannels.push({ label: x.label, id: x.dataChannelIdentifier, state: x.state, messagesSent: x.messagesSent,
            bytesSent: x.bytesSent, messagesReceived: x.messagesReceived, bytesReceived: x.bytesReceived });
        }
      });
      const v = r.inbound.filter((x) => x.kind === "video");
      r.video = { framesDecoded: v.reduce((a, x) => a + (x.framesDecoded ?? 0), 0), frameWidth: v[0]?.frameWidth ?? null, frameHeight: v[0]?.frameHeight ?? null };
      out[id] = r;
    }
    return out;
  },

  /** Snapshot of the peer table. */
  peers({ socket } = {}) {
    const s = sock(socket);
    return Object.values(s.rtcpeers).map((p) => ({
      id: p.socketId, polite: !!p.polite, connectionState: p.connection.connectionState,
      signalingState: p.connection.signalingState, connectFired: p.connectFired,
      ctrl: p.ctrlDc?.readyState ?? null, ctrlQueue: p.ctrlQueue.length,
      channels: Object.fromEntries(Object.entries(p.channels).map(([n, c]) => [n, c.readyState])),
      streams: Object.entries(p.streams).map(([msid, w]) => ({ msid, id: w.id, kinds: w.mediaStream.getTracks().map((t) => t.kind) })),
    }));
  },

  log(since = 0) { return T.log.slice(since); },
  findLog(pattern, since = 0) {
    for (let i = since; i < T.log.length; i++) if (matches(T.log[i], pattern)) return { index: i, entry: T.log[i] };
    return null;
  },
  /** Resolves with {index, entry} for the first entry at index ≥ since matching `pattern`. */
  waitLog(pattern, since = 0, timeoutMs = 10000) {
    const hit = rtcio.findLog(pattern, since);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = {
        pattern, since,
        done: (index, entry) => { clearTimeout(timer); T.waiters.splice(T.waiters.indexOf(w), 1); resolve({ index, entry }); },
      };
      const timer = setTimeout(() => {
        T.waiters.splice(T.waiters.indexOf(w), 1);
        const last = T.log.slice(-3).map((e) => JSON.stringify(e).slice(0, 300));
        reject(new Error(`waitLog timed out after ${timeoutMs} ms: no log entry matching ${JSON.stringify(pattern)} ` +
          `at index >= ${since} (log has ${T.log.length} entries; last: ${last.join(" | ") || "none"})`));
      }, timeoutMs);
      T.waiters.push(w);
    });
  },
  /** Polls `expr` (see eval) every pollMs until it is truthy; resolves with that value. */
  async waitFn(expr, arg, timeoutMs = 10000, pollMs = 50) {
    const deadline = performance.now() + timeoutMs;
    let lastErr = null;
    for (;;) {
      try {
        const v = await rtcio.eval(expr, arg);
        if (v) return v;
        lastErr = null;
      } catch (e) { lastErr = e; }
      if (performance.now() >= deadline) {
        throw new Error(`waitFn timed out after ${timeoutMs} ms: ${expr} did not become truthy` +
          (lastErr ? ` (last evaluation threw ${errText(lastErr)})` : ""));
      }
      await new Promise((r) => setTimeout(r, pollMs));
    }
  },
  push(kind, fields) { return T.push(kind, fields); },
  toJSON(v) { const x = T.loggable(v); return x === undefined ? null : x; },

  /** Used by the driver's `eval`: `expr` is an expression; if it yields a function it is called with `arg`. */
  async eval(expr, arg) {
    const src = String(expr).trim().replace(/;+\s*$/, "");
    // eslint-disable-next-line no-new-func
    let v = new Function("arg", "rtcio", `return (${src}\n);`)(arg, rtcio);
    if (typeof v === "function") v = v(arg);
    return rtcio.toJSON(await v);
  },
};

window.__log = T.log;
window.rtcio = rtcio;
window.__rtcioReady = true;
T.push("page-ready", { url: location.href });
