// avsync-source.js — a synthetic camera + microphone for lip-sync measurements (issue 13), in a
// browser page: the video is drawn on a canvas (`captureStream`), the audio made with WebAudio
// (`OscillatorNode`s → `MediaStreamAudioDestinationNode`), and both carry marks on ONE clock,
// the Unix clock as `performance.timeOrigin + performance.now()` gives it:
// - every frame carries the frame mark rtcio-media's test pattern draws
//   (`crates/rtcio-media/src/synthetic/video.rs`): a 16 × 8 grid of 8-pixel black/white blocks
//   in the top-left corner (magic A5 5A, frame number, capture time in µs since the Unix epoch,
//   CRC-16/CCITT), the capture time being the moment the frame is drawn;
// - the 440 Hz tone is replaced by a 20 ms 3 kHz burst starting on every whole Unix second, as
//   `ToneSource` does (`synthetic/audio.rs`), placed so that its first sample is rendered —
//   handed to the track — at that second.
// A receiver that reads both (the `rtcio` CLI's `av_offset_ms`) then measures the real sync
// error of the call, not a drift between two files (what Chromium's fake devices gave).
//
// Classic script (no module): loaded as a Playwright init script into the guest page, or with a
// <script> element into peer.html. It replaces `navigator.mediaDevices.getUserMedia` with one
// that returns the synthetic tracks asked for; `window.__avsync` has the state and `stats()`.

(() => {
  if (window.__avsync) return;
  const W = 320;
  const H = 180;
  const FPS = 30;
  // marker_block_size(320) in video.rs: max(320 / 80 / 8 * 8, 8).
  const BLOCK = 8;
  const COLS = 16;
  const ROWS = 8;
  const RATE = 48000;
  const MARK_S = 0.02;
  const nowUnixMs = () => performance.timeOrigin + performance.now();

  function crc16(bytes) {
    let crc = 0xffff;
    for (const b of bytes) {
      crc ^= b << 8;
      for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
  }

  /** The 16 marker bytes of video.rs's `marker_bytes`. */
  function markerBytes(frame, captureUs) {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    b[0] = 0xa5;
    b[1] = 0x5a;
    v.setUint32(2, frame >>> 0);
    v.setBigUint64(6, BigInt(captureUs));
    v.setUint16(14, crc16(b.subarray(0, 14)));
    return b;
  }

  const state = {
    started: false,
    frames: 0,
    marksScheduled: 0,
    // Render-time estimates (ms of performance time minus context ms), newest last.
    estimates: [],
    lastDrawGapMs: 0,
    maxDrawGapMs: 0,
  };

  function drawFrame(g, i) {
    // Moving stripes and a bouncing box (something to encode), then the marker.
    const shift = (i * 6) % W;
    g.fillStyle = "#777";
    g.fillRect(0, 0, W, H);
    g.fillStyle = "#3a6";
    for (let x = -H - shift % 40; x < W; x += 40) {
      g.beginPath();
      g.moveTo(x, H);
      g.lineTo(x + H, 0);
      g.lineTo(x + H + 16, 0);
      g.lineTo(x + 16, H);
      g.fill();
    }
    const travel = W - 54;
    const pos = (i * 8) % (2 * travel);
    g.fillStyle = "#fff";
    g.fillRect(pos < travel ? pos : 2 * travel - pos, H / 2 - 15, 54, 30);
    // The capture time is read last, right before the frame is handed over (end of this task).
    const captureUs = Math.round(nowUnixMs() * 1000);
    const bytes = markerBytes(i, captureUs);
    for (let bit = 0; bit < COLS * ROWS; bit++) {
      const on = bytes[bit >> 3] & (0x80 >> (bit & 7));
      g.fillStyle = on ? "#fff" : "#000";
      g.fillRect((bit % COLS) * BLOCK, Math.floor(bit / COLS) * BLOCK, BLOCK, BLOCK);
    }
  }

  function startVideo() {
    const canvas = document.createElement("canvas");
    canvas.width = W;
    canvas.height = H;
    const g = canvas.getContext("2d", { alpha: false });
    drawFrame(g, 0);
    const stream = canvas.captureStream(FPS);
    const track = stream.getVideoTracks()[0];
    // Keep the resolution (no CPU-adaptation downscale): the marker's block size follows the
    // frame width the receiver decodes.
    track.contentHint = "detail";
    let last = performance.now();
    let next = last;
    // Drawn in animation frames (the canvas is captured when the frame is committed, right
    // after the callback), at most FPS a second; a timer keeps it going if frames stall.
    const tick = () => {
      const now = performance.now();
      if (now + 4 < next) return;
      next = Math.max(next + 1000 / FPS, now);
      state.lastDrawGapMs = now - last;
      state.maxDrawGapMs = Math.max(state.maxDrawGapMs, state.lastDrawGapMs);
      last = now;
      state.frames += 1;
      drawFrame(g, state.frames);
    };
    const raf = () => { tick(); requestAnimationFrame(raf); };
    requestAnimationFrame(raf);
    setInterval(() => { if (performance.now() - last > 100) tick(); }, 50);
    return track;
  }

  function startAudio() {
    const ac = new AudioContext({ sampleRate: RATE, latencyHint: "interactive" });
    const dest = ac.createMediaStreamDestination();
    dest.channelCount = 1;
    const tone = ac.createOscillator();
    tone.frequency.value = 440;
    const toneGain = ac.createGain();
    toneGain.gain.value = 0.25;
    const mark = ac.createOscillator();
    mark.frequency.value = 3000;
    const markGain = ac.createGain();
    markGain.gain.value = 0;
    tone.connect(toneGain).connect(dest);
    mark.connect(markGain).connect(dest);
    tone.start();
    mark.start();
    ac.resume().catch(() => {});
    const scheduled = new Set();
    // When a context time is rendered (handed to the track): the output timestamp says when
    // `contextTime` is played; rendering runs `outputLatency` plus one render buffer
    // (`baseLatency`) ahead of that, a whole buffer at a time: the middle of the buffer.
    const estimate = () => {
      const ts = ac.getOutputTimestamp();
      if (ac.state !== "running" || !ts.performanceTime) return;
      const e = ts.performanceTime - ts.contextTime * 1000 - (ac.outputLatency || 0) * 1000 - (ac.baseLatency || 0) * 500;
      state.estimates.push(e);
      if (state.estimates.length > 40) state.estimates.shift();
    };
    const offsetMs = () => {
      const v = [...state.estimates].sort((a, b) => a - b);
      return v.length ? v[v.length >> 1] : null;
    };
    const schedule = () => {
      estimate();
      const off = offsetMs();
      if (off === null || state.estimates.length < 5) return;
      const now = nowUnixMs();
      // The next whole seconds, 0.3 to 2 s ahead (context times must be in the future).
      for (let s = Math.ceil((now + 300) / 1000); s * 1000 <= now + 2000; s++) {
        if (scheduled.has(s)) continue;
        const c = (s * 1000 - performance.timeOrigin - off) / 1000;
        if (c <= ac.currentTime + 0.05) continue;
        scheduled.add(s);
        toneGain.gain.setValueAtTime(0, c);
        markGain.gain.setValueAtTime(0.5, c);
        toneGain.gain.setValueAtTime(0.25, c + MARK_S);
        markGain.gain.setValueAtTime(0, c + MARK_S);
        state.marksScheduled += 1;
      }
      for (const s of scheduled) if (s * 1000 < now - 5000) scheduled.delete(s);
    };
    setInterval(schedule, 100);
    state.audio = ac;
    state.offsetMs = offsetMs;
    return dest.stream.getAudioTracks()[0];
  }

  /** getUserMedia's answer: the synthetic tracks asked for (one of each, made once). */
  async function getUserMedia(constraints = {}) {
    if (!state.started) {
      state.started = true;
      state.video = startVideo();
      state.audioTrack = startAudio();
    }
    const tracks = [];
    if (constraints.video) tracks.push(state.video);
    if (constraints.audio) tracks.push(state.audioTrack);
    if (!tracks.length) throw new DOMException("no media asked for", "TypeError");
    return new MediaStream(tracks);
  }

  window.__avsync = {
    state,
    getUserMedia,
    stats: () => ({
      frames: state.frames,
      marksScheduled: state.marksScheduled,
      audioState: state.audio?.state ?? null,
      renderOffsetMs: state.offsetMs ? state.offsetMs() : null,
      outputLatencyMs: state.audio ? state.audio.outputLatency * 1000 : null,
      maxDrawGapMs: state.maxDrawGapMs,
    }),
  };
  const install = () => {
    if (navigator.mediaDevices) navigator.mediaDevices.getUserMedia = getUserMedia;
  };
  install();
})();
