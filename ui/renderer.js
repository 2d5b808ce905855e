// Paints video frames of the call's tiles. I420 frames (src-tauri/src/media.rs
// `encode_i420_frame`, 1.5 bytes a pixel) go to WebGL 2: three R8 textures, YUV → RGB in the
// fragment shader (BT.601 limited range, what rtcio-media's own conversion uses). By default
// each tile's canvas has its own WebGL context, sized to the frame (its CSS size scales it; the
// shader reads texels unfiltered). RGBA frames (our own preview, or a page without WebGL 2) go
// to a 2D canvas with `putImageData`. A canvas keeps the painter its first frame gave it: a
// WebGL canvas shows a later RGBA frame as a texture, a 2D canvas converts a later I420 frame
// in JavaScript.
//
// `window.__rtcioVideoTuning.layer === true` (a bench switch, not the default: measured slower
// with software GL, see src-tauri/README.md "One video layer") draws every WebGL tile on ONE
// canvas instead (the "video layer", behind the grid, the grid's size): one context, one swap
// and one composite per animation frame. Frames are uploaded when they arrive; the layer draws
// in `requestAnimationFrame`, at most once per animation frame, only the tiles whose frame (or
// place) changed. Each tile keeps its `canvas.video` as a transparent placeholder: its box is
// where the layer draws the picture (`object-fit: contain`, the tile's rounded corners) and it
// carries the same dataset (`data-key`, `data-painted`, `data-painter`) and the frame's size.
// With `layerBox: 'tiles'` (also a bench switch) the layer covers only the union of its tiles'
// boxes rather than the whole grid (its size is its cost with software GL).

/**
 * Summed milliseconds (performance.now()) of the WebGL texture uploads and draw calls since the
 * page loaded: the bench's per-stage table reads them (app.js `videoStats.stages`). With
 * software GL an upload is a copy on the page's main thread; a draw is queued and mostly runs
 * when the page composites. Counts too: `drawPasses` animation frames in which the shared layer
 * (or, with `rafDraw`, the tile canvases) drew, `tileDraws` tiles drawn in them, `superseded` frames uploaded but replaced by their
 * tile's next frame before a draw showed them, `drawnPerKey` frames that reached the screen per
 * tile key (the painted rate).
 */
export const renderTimes = {
  uploadMs: 0, drawMs: 0, drawPasses: 0, tileDraws: 0, superseded: 0, drawnPerKey: {},
};

function countDrawn(canvas) {
  const key = canvas.dataset.key;
  if (key !== undefined) renderTimes.drawnPerKey[key] = (renderTimes.drawnPerKey[key] || 0) + 1;
}

/** Cached answer of `webgl2Available`. */
let probed = null;

/** True when this page can create a WebGL 2 context (the page then asks Rust for I420). */
export function webgl2Available() {
  if (probed === null) {
    try {
      const gl = document.createElement('canvas').getContext('webgl2');
      probed = !!gl;
      gl?.getExtension('WEBGL_lose_context')?.loseContext();
    } catch {
      probed = false;
    }
  }
  return probed;
}

const VERTEX = `#version 300 es
// One quad over the whole canvas, no vertex buffer: texture row 0 (the picture's top) at the top.
const vec2 P[4] = vec2[4](vec2(-1.0, -1.0), vec2(1.0, -1.0), vec2(-1.0, 1.0), vec2(1.0, 1.0));
out vec2 uv;
void main() {
  vec2 p = P[gl_VertexID];
  uv = vec2(p.x + 1.0, 1.0 - p.y) * 0.5;
  gl_Position = vec4(p, 0.0, 1.0);
}`;

// BT.601 limited range: Y 16..235, Cb/Cr 16..240 around 128 (the coefficients of
// rtcio-media's `yuv` conversion). highp: mediump's 10-bit mantissa would be off by a level.
const FRAGMENT = `#version 300 es
precision highp float;
uniform sampler2D texY;
uniform sampler2D texU;
uniform sampler2D texV;
uniform int rgba;
in vec2 uv;
out vec4 color;
void main() {
  if (rgba == 1) {
    color = vec4(texture(texY, uv).rgb, 1.0);
    return;
  }
  float y = 1.164383 * (texture(texY, uv).r * 255.0 - 16.0);
  float u = texture(texU, uv).r * 255.0 - 128.0;
  float v = texture(texV, uv).r * 255.0 - 128.0;
  vec3 rgb = vec3(y + 1.596027 * v, y - 0.391762 * u - 0.812968 * v, y + 2.017232 * u);
  color = vec4(clamp(rgb / 255.0, 0.0, 1.0), 1.0);
}`;

// The default: the canvas is always sized to the frame (`paintVideo`), so each fragment is
// exactly one luma texel and `texelFetch` reads it without filtering (chroma: the texel of its
// 2 × 2 block, as `i420ToRgba` does). With software GL (llvmpipe) the filtered lookups of the
// shader above were the bulk of each draw; mediump would be cheaper still, but off by a level.
const FRAGMENT_FETCH = `#version 300 es
precision highp float;
precision highp int;
uniform highp sampler2D texY;
uniform highp sampler2D texU;
uniform highp sampler2D texV;
uniform int rgba;
out vec4 color;
void main() {
  ivec2 size = textureSize(texY, 0);
  ivec2 at = ivec2(int(gl_FragCoord.x), size.y - 1 - int(gl_FragCoord.y));
  if (rgba == 1) {
    color = vec4(texelFetch(texY, at, 0).rgb, 1.0);
    return;
  }
  ivec2 c = at / 2;
  float y = 1.164383 * (texelFetch(texY, at, 0).r * 255.0 - 16.0);
  float u = texelFetch(texU, c, 0).r * 255.0 - 128.0;
  float v = texelFetch(texV, c, 0).r * 255.0 - 128.0;
  vec3 rgb = vec3(y + 1.596027 * v, y - 0.391762 * u - 0.812968 * v, y + 2.017232 * u);
  color = vec4(clamp(rgb / 255.0, 0.0, 1.0), 1.0);
}`;

/** The page's video switches the bench sets (`window.__rtcioVideoTuning`), or none. */
function tuning() {
  return (typeof window !== 'undefined' && window.__rtcioVideoTuning) || {};
}

/** Canvas → {kind: 'webgl' | '2d', ...}: what paints it. */
const painters = new WeakMap();
/** Canvases with a WebGL context: released once out of the page (see `releaseDetached`). */
const glCanvases = new Set();

/**
 * Frees the WebGL contexts of canvases no longer in the page (a tile's camera turned off and
 * on makes a new canvas): browsers keep only a few contexts alive and, past that, take the
 * oldest one away, which could be a live tile's, long before garbage collection would.
 */
function releaseDetached() {
  for (const c of glCanvases) {
    if (c.isConnected) continue;
    glCanvases.delete(c);
    painters.get(c)?.gl.getExtension('WEBGL_lose_context')?.loseContext();
    painters.delete(c);
  }
}

function compile(gl, type, source) {
  const s = gl.createShader(type);
  gl.shaderSource(s, source);
  gl.compileShader(s);
  if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s) || 'shader');
  return s;
}

/** A WebGL 2 painter for `canvas`, or null (no WebGL 2, or it failed to set up). */
function webglPainter(canvas) {
  if (!webgl2Available()) return null;
  releaseDetached();
  const gl = webgl2Context(canvas);
  if (!gl) return null;
  try {
    // `sampler: 'linear'` (a bench switch): the filtered lookups, as before.
    const fetch = tuning().sampler !== 'linear';
    const program = yuvProgram(gl, fetch ? FRAGMENT_FETCH : FRAGMENT);
    const filter = fetch ? gl.NEAREST : gl.LINEAR;
    // Two sets of textures, used in turn: uploading into the set the last draw read would
    // wait for that draw to finish (with software GL, on the page's main thread).
    // `pingPong: false` (a bench switch): one set, as before.
    const sets = tuning().pingPong === false
      ? [textureSet(gl, filter)]
      : [textureSet(gl, filter), textureSet(gl, filter)];
    // Chroma rows of an odd-width picture are not 4-byte aligned.
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    const painter = { kind: 'webgl', gl, sets, next: 0, set: sets[0], rgbaAt: gl.getUniformLocation(program, 'rgba') };
    // A lost context (driver reset) is rebuilt on the next frame.
    canvas.addEventListener('webglcontextlost', (e) => { e.preventDefault(); }, { once: true });
    canvas.addEventListener('webglcontextrestored', () => painters.delete(canvas), { once: true });
    glCanvases.add(canvas);
    return painter;
  } catch (e) {
    console.warn('WebGL video painter unavailable:', e);
    return null;
  }
}

/**
 * Uploads one plane into texture `i` of the painter's current set, bound to unit `i`
 * (allocated again only when its size changes).
 */
function upload(p, i, width, height, format, data) {
  const { gl, set } = p;
  gl.activeTexture(gl.TEXTURE0 + i);
  gl.bindTexture(gl.TEXTURE_2D, set.textures[i]);
  const key = `${width}x${height}/${format}`;
  const internal = format === gl.RED ? gl.R8 : gl.RGBA8;
  if (set.sizes[i] !== key) {
    gl.texImage2D(gl.TEXTURE_2D, 0, internal, width, height, 0, format, gl.UNSIGNED_BYTE, data);
    set.sizes[i] = key;
  } else {
    gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, width, height, format, gl.UNSIGNED_BYTE, data);
  }
}

/** Per-canvas painters whose frame waits for the next animation frame (`rafDraw`). */
const queued = new Set();
let queuedFrame = false;

/** `rafDraw`: draws each waiting canvas once, in the animation frame. */
function drawQueued() {
  queuedFrame = false;
  const t0 = performance.now();
  for (const p of queued) {
    if (p.gl.isContextLost()) continue;
    p.gl.viewport(0, 0, p.width, p.height);
    p.gl.drawArrays(p.gl.TRIANGLE_STRIP, 0, 4);
    p.dirty = false;
    countDrawn(p.canvas);
    renderTimes.tileDraws += 1;
  }
  if (queued.size) renderTimes.drawPasses += 1;
  queued.clear();
  renderTimes.drawMs += performance.now() - t0;
}

function drawWebgl(p, f, canvas) {
  const { gl } = p;
  if (gl.isContextLost()) return false;
  const t0 = performance.now();
  // `rafDraw` (a bench switch): each canvas drawn in the animation frame,
  // a frame not drawn yet replaced in its (unread) set.
  const raf = !!tuning().rafDraw;
  if (raf && p.dirty) {
    renderTimes.superseded += 1;
  } else {
    p.set = p.sets[p.next];
    p.next = (p.next + 1) % p.sets.length;
  }
  if (f.format === 'i420') {
    const cw = Math.ceil(f.width / 2);
    const ch = Math.ceil(f.height / 2);
    upload(p, 0, f.width, f.height, gl.RED, f.y);
    upload(p, 1, cw, ch, gl.RED, f.u);
    upload(p, 2, cw, ch, gl.RED, f.v);
    gl.uniform1i(p.rgbaAt, 0);
  } else {
    upload(p, 0, f.width, f.height, gl.RGBA, new Uint8Array(f.pixels.buffer, f.pixels.byteOffset, f.pixels.byteLength));
    gl.uniform1i(p.rgbaAt, 1);
  }
  p.last = f.format;
  const t1 = performance.now();
  if (raf) {
    Object.assign(p, { dirty: true, width: f.width, height: f.height, canvas });
    queued.add(p);
    if (!queuedFrame) {
      queuedFrame = true;
      requestAnimationFrame(drawQueued);
    }
  } else if (!window.__rtcioVideoTuning?.noDraw) {
    // `noDraw` (a bench switch): uploads only, so the canvas is not redrawn or composited again.
    gl.viewport(0, 0, f.width, f.height);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }
  renderTimes.uploadMs += t1 - t0;
  renderTimes.drawMs += performance.now() - t1;
  return true;
}

/**
 * I420 planes → RGBA bytes (BT.601 limited range, the shader's formula): the 2D canvas's way to
 * show an I420 frame when it has no WebGL.
 */
export function i420ToRgba(f) {
  const { width: w, height: h, y, u, v } = f;
  const cw = Math.ceil(w / 2);
  const out = new Uint8ClampedArray(w * h * 4);
  for (let row = 0; row < h; row++) {
    const crow = (row >> 1) * cw;
    for (let col = 0; col < w; col++) {
      const yy = 1.164383 * (y[row * w + col] - 16);
      const cu = u[crow + (col >> 1)] - 128;
      const cv = v[crow + (col >> 1)] - 128;
      const o = (row * w + col) * 4;
      // Uint8ClampedArray rounds and clamps.
      out[o] = yy + 1.596027 * cv;
      out[o + 1] = yy - 0.391762 * cu - 0.812968 * cv;
      out[o + 2] = yy + 2.017232 * cu;
      out[o + 3] = 255;
    }
  }
  return out;
}

function draw2d(p, f) {
  const pixels = f.format === 'i420' ? i420ToRgba(f) : f.pixels;
  p.ctx.putImageData(new ImageData(pixels, f.width, f.height), 0, 0);
  return true;
}

// The shared layer's shader: one tile per draw, its viewport the tile's box in the layer's
// drawing buffer. Outside the tile's rounded corners it paints the stage's colour (what shows
// there), around the picture black bars (`object-fit: contain`, as the tile canvases had),
// inside it the frame's texel under the fragment (nearest: Rust sends frames at the tile's
// size, so it is 1:1 or within a few %). `mirror` flips our own camera; `dim` fades a tile
// whose peer is reconnecting towards the stage's colour (CSS opacity 0.45, as before).
const FRAGMENT_LAYER = `#version 300 es
precision highp float;
precision highp int;
uniform highp sampler2D texY;
uniform highp sampler2D texU;
uniform highp sampler2D texV;
uniform int rgba;
uniform vec4 box;
uniform vec4 pic;
uniform float radius;
uniform vec3 backdrop;
uniform float dim;
uniform int mirror;
out vec4 color;
void main() {
  vec2 p = gl_FragCoord.xy;
  vec2 hs = box.zw * 0.5;
  vec2 q = abs(p - box.xy - hs) - (hs - radius);
  if (radius > 0.0 && length(max(q, 0.0)) > radius) {
    color = vec4(backdrop, 1.0);
    return;
  }
  vec3 rgb = vec3(0.0);
  vec2 rel = (p - pic.xy) / pic.zw;
  if (rel.x >= 0.0 && rel.x < 1.0 && rel.y >= 0.0 && rel.y < 1.0) {
    ivec2 size = textureSize(texY, 0);
    ivec2 at = clamp(ivec2(int(rel.x * float(size.x)), int((1.0 - rel.y) * float(size.y))), ivec2(0), size - 1);
    if (mirror == 1) at.x = size.x - 1 - at.x;
    if (rgba == 1) {
      rgb = texelFetch(texY, at, 0).rgb;
    } else {
      ivec2 c = at / 2;
      float y = 1.164383 * (texelFetch(texY, at, 0).r * 255.0 - 16.0);
      float u = texelFetch(texU, c, 0).r * 255.0 - 128.0;
      float v = texelFetch(texV, c, 0).r * 255.0 - 128.0;
      rgb = clamp(vec3(y + 1.596027 * v, y - 0.391762 * u - 0.812968 * v, y + 2.017232 * u) / 255.0, 0.0, 1.0);
    }
  }
  color = vec4(mix(backdrop, rgb, dim), 1.0);
}`;

/** The shared video layer (one per page), or null before the first WebGL tile / without one. */
let layer = null;

/** The first colour up the tree from `el` that is not transparent, as 0..1 RGB. */
function backdropOf(el) {
  for (let e = el; e && e.nodeType === 1; e = e.parentElement) {
    const m = getComputedStyle(e).backgroundColor.match(/[\d.]+/g);
    if (m && (m.length < 4 || Number(m[3]) > 0)) return m.slice(0, 3).map((x) => Number(x) / 255);
  }
  return [0, 0, 0];
}

/** A WebGL 2 context for `canvas` with the options every video canvas uses (plus `extra`), or
 * null when there is none. */
function webgl2Context(canvas, extra = {}) {
  try {
    return canvas.getContext('webgl2', {
      alpha: false, antialias: false, depth: false, stencil: false, premultipliedAlpha: false, ...extra,
    });
  } catch {
    return null;
  }
}

/** The shared vertex shader with `fragment`, linked and in use, its texY/texU/texV samplers on
 * texture units 0–2; throws when it does not compile or link. */
function yuvProgram(gl, fragment) {
  const program = gl.createProgram();
  gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
  gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, fragment));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program) || 'link');
  gl.useProgram(program);
  ['texY', 'texU', 'texV'].forEach((name, unit) => gl.uniform1i(gl.getUniformLocation(program, name), unit));
  return program;
}

/** One set of Y, U and V plane textures on `gl` (a tile keeps two, used in turn: see `webglPainter`). */
function textureSet(gl, filter) {
  return {
    textures: [0, 1, 2].map(() => {
      const t = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, t);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, filter);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, filter);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      return t;
    }),
    sizes: [],
  };
}

/**
 * The layer canvas for the grid `grid` (made once, placed just before the grid in its parent,
 * so the tiles, later in the tree, paint over it), or null without WebGL 2.
 * `drawAll` (a bench switch): no preserved drawing buffer, so every tile is drawn again in
 * each animation frame where any changed (the default keeps the buffer and draws only those).
 */
function videoLayer(grid) {
  if (layer && layer.grid === grid && layer.canvas.isConnected) return layer;
  if (layer) dropLayer();
  if (!webgl2Available() || !grid.parentElement) return null;
  const canvas = document.createElement('canvas');
  canvas.id = 'video-layer';
  canvas.setAttribute('aria-hidden', 'true');
  canvas.hidden = true;
  const drawAll = !!tuning().drawAll;
  const gl = webgl2Context(canvas, { preserveDrawingBuffer: !drawAll });
  if (!gl) return null;
  try {
    const program = yuvProgram(gl, FRAGMENT_LAYER);
    const u = {};
    for (const name of ['rgba', 'box', 'pic', 'radius', 'backdrop', 'dim', 'mirror']) u[name] = gl.getUniformLocation(program, name);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    grid.parentElement.insertBefore(canvas, grid);
    layer = {
      canvas, gl, u, grid, drawAll,
      // Placeholder canvas → its tile's state (textures, frame, box drawn).
      tiles: new Map(),
      // Draw every tile in the next pass (size, a tile gone, a read-back).
      full: true,
      scheduled: false,
      backdrop: backdropOf(grid),
      uploadAtFrame: tuning().uploadAt === 'raf',
      // `scale` (a bench switch, for measuring): the drawing buffer that fraction of the
      // layer's device pixels, so the cost of its size shows.
      scale: Number(tuning().scale) > 0 ? Number(tuning().scale) : 1,
    };
    canvas.addEventListener('webglcontextlost', (e) => e.preventDefault());
    // A restored context has none of the old textures: start again with the next frames.
    canvas.addEventListener('webglcontextrestored', () => dropLayer());
    return layer;
  } catch (e) {
    console.warn('WebGL video layer unavailable:', e);
    return null;
  }
}

/** Forgets the layer (its canvas leaves the page; its tiles get a new painter next frame). */
function dropLayer() {
  if (!layer) return;
  for (const c of layer.tiles.keys()) painters.delete(c);
  layer.canvas.remove();
  layer.gl.getExtension('WEBGL_lose_context')?.loseContext();
  layer = null;
}

/** A tile's state on the layer: two texture sets used in turn (as `webglPainter`'s). */
function layerTile(l, canvas) {
  const { gl } = l;
  const t = {
    kind: 'webgl', layer: l, sets: [textureSet(gl, gl.NEAREST), textureSet(gl, gl.NEAREST)], set: null,
    // A frame uploaded (or, with `uploadAt: 'raf'`, waiting) that no draw showed yet.
    changed: false, pending: null, format: null, width: 0, height: 0,
    // What the last draw used, to see a moved tile or a changed look.
    drawn: '', tileEl: canvas.closest('.tile'), radius: 0,
  };
  t.set = t.sets[0];
  if (t.tileEl) {
    t.radius = parseFloat(getComputedStyle(t.tileEl).borderTopLeftRadius) || 0;
    t.tileEl.classList.add('layered');
  }
  l.tiles.set(canvas, t);
  return t;
}

/** Uploads frame `f` into the tile's texture set (`upload` binds units 0–2). */
function uploadTile(l, t, f) {
  const { gl } = l;
  const t0 = performance.now();
  const p = { gl, set: t.set };
  if (f.format === 'i420') {
    const cw = Math.ceil(f.width / 2);
    const ch = Math.ceil(f.height / 2);
    upload(p, 0, f.width, f.height, gl.RED, f.y);
    upload(p, 1, cw, ch, gl.RED, f.u);
    upload(p, 2, cw, ch, gl.RED, f.v);
  } else {
    upload(p, 0, f.width, f.height, gl.RGBA, new Uint8Array(f.pixels.buffer, f.pixels.byteOffset, f.pixels.byteLength));
  }
  t.format = f.format;
  t.width = f.width;
  t.height = f.height;
  renderTimes.uploadMs += performance.now() - t0;
}

/** A frame for a layer tile: uploaded now (or kept for the next draw), drawn at the next frame. */
function paintLayer(canvas, t, f) {
  const l = t.layer;
  if (l.gl.isContextLost()) return false;
  if (t.changed) {
    // Not drawn yet: the new frame takes its place, in the same (unread) set.
    renderTimes.superseded += 1;
  } else {
    // The other set: the last draw may still be reading this one (software GL draws later).
    t.set = t.sets[(t.sets.indexOf(t.set) + 1) % t.sets.length];
  }
  t.changed = true;
  if (l.uploadAtFrame) t.pending = f;
  else uploadTile(l, t, f);
  scheduleLayer(l);
  return true;
}

function scheduleLayer(l) {
  if (l.scheduled) return;
  l.scheduled = true;
  requestAnimationFrame(() => drawLayer(l));
}

/** Binds a tile's textures and sets its look; the caller sets the viewport and draws. */
function bindTile(l, t, box, pic, look) {
  const { gl, u } = l;
  for (let i = 0; i < 3; i++) {
    gl.activeTexture(gl.TEXTURE0 + i);
    gl.bindTexture(gl.TEXTURE_2D, t.set.textures[i]);
  }
  gl.uniform1i(u.rgba, t.format === 'i420' ? 0 : 1);
  gl.uniform4f(u.box, box.x, box.y, box.w, box.h);
  gl.uniform4f(u.pic, pic.x, pic.y, pic.w, pic.h);
  gl.uniform1f(u.radius, look.radius);
  gl.uniform3f(u.backdrop, ...l.backdrop);
  gl.uniform1f(u.dim, look.dim);
  gl.uniform1i(u.mirror, look.mirror ? 1 : 0);
}

/**
 * Sizes and places the layer over `area` (CSS pixels from the grid's top left; default the
 * last area, at first the whole grid); true when its drawing buffer was reset.
 */
function fitLayer(l, area = l.area) {
  const { canvas, grid } = l;
  const a = area || { left: 0, top: 0, width: grid.clientWidth, height: grid.clientHeight };
  l.area = area;
  const dpr = (window.devicePixelRatio || 1) * l.scale;
  const w = Math.max(1, Math.round(a.width * dpr));
  const h = Math.max(1, Math.round(a.height * dpr));
  const left = grid.offsetLeft + a.left;
  const top = grid.offsetTop + a.top;
  const at = `${left}px/${top}px/${a.width}px/${a.height}px`;
  if (canvas.dataset.at !== at) {
    canvas.dataset.at = at;
    Object.assign(canvas.style, {
      left: `${left}px`, top: `${top}px`, width: `${a.width}px`, height: `${a.height}px`,
    });
  }
  if (canvas.width === w && canvas.height === h) return false;
  canvas.width = w;
  canvas.height = h;
  return true;
}

/**
 * `layerBox: 'tiles'` (a bench switch): the union of the layer tiles' boxes, in CSS pixels
 * from the grid's top left (`g`, its client rect), so the layer covers no empty cell and no
 * 2D tile; null (the whole grid) otherwise or without tiles.
 */
function tilesArea(l, g) {
  if (tuning().layerBox !== 'tiles') return null;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const [c, t] of l.tiles) {
    if (!t.format) continue;
    const r = c.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) continue;
    x0 = Math.min(x0, r.left); y0 = Math.min(y0, r.top);
    x1 = Math.max(x1, r.right); y1 = Math.max(y1, r.bottom);
  }
  if (x0 === Infinity) return null;
  const left = Math.floor(x0 - g.left);
  const top = Math.floor(y0 - g.top);
  return { left, top, width: Math.ceil(x1 - g.left) - left, height: Math.ceil(y1 - g.top) - top };
}

/**
 * One animation frame of the layer: tiles whose placeholder left the page are forgotten
 * (their textures freed), then every tile that has a new frame, moved or changed look is
 * drawn at its placeholder's box (all of them when the buffer was reset, a tile left, or
 * with `drawAll`). Runs again next frame while the layer has tiles, so a tile that moves
 * without a new frame (a pin, a resize) is drawn at its new place.
 */
function drawLayer(l) {
  l.scheduled = false;
  if (layer !== l) return;
  const { gl, canvas } = l;
  if (gl.isContextLost()) return;
  for (const [c, t] of l.tiles) {
    if (c.isConnected && c.closest('.tile') === t.tileEl) continue;
    l.tiles.delete(c);
    painters.delete(c);
    for (const set of t.sets) for (const tex of set.textures) gl.deleteTexture(tex);
    // Its tile gets its own background back unless a new canvas there is on the layer too.
    if (t.tileEl && ![...l.tiles.values()].some((o) => o.tileEl === t.tileEl)) t.tileEl.classList.remove('layered');
    l.full = true;
  }
  canvas.hidden = l.tiles.size === 0;
  if (canvas.hidden) return;
  const t0 = performance.now();
  for (const t of l.tiles.values()) {
    if (t.pending) {
      uploadTile(l, t, t.pending);
      t.pending = null;
    }
  }
  const grid = l.grid.getBoundingClientRect();
  const area = tilesArea(l, grid);
  if (fitLayer(l, area)) l.full = true;
  // The layer's top left on the screen.
  const g = { left: grid.left + (area ? area.left : 0), top: grid.top + (area ? area.top : 0) };
  const dpr = (window.devicePixelRatio || 1) * l.scale;
  const H = canvas.height;
  const entries = [];
  let moved = false;
  for (const [c, t] of l.tiles) {
    if (!t.format) continue;
    const r = c.getBoundingClientRect();
    const x0 = Math.round((r.left - g.left) * dpr);
    const x1 = Math.round((r.right - g.left) * dpr);
    const y0 = H - Math.round((r.bottom - g.top) * dpr);
    const y1 = H - Math.round((r.top - g.top) * dpr);
    const box = { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
    if (box.w < 1 || box.h < 1) continue;
    // `object-fit: contain` of the frame in the box, centred.
    const s = Math.min(box.w / t.width, box.h / t.height);
    const pw = t.width * s;
    const ph = t.height * s;
    const pic = { x: box.x + (box.w - pw) / 2, y: box.y + (box.h - ph) / 2, w: pw, h: ph };
    const el = t.tileEl;
    const look = {
      radius: t.radius * dpr,
      dim: el && el.classList.contains('lost') ? 0.45 : 1,
      mirror: !!el && el.classList.contains('self') && el.classList.contains('mirror'),
    };
    const sig = `${box.x},${box.y},${box.w},${box.h},${t.width}x${t.height},${look.dim},${look.mirror}`;
    // A tile drawn elsewhere (or differently) before: what it covered must be drawn again.
    if (t.drawn && sig !== t.drawn) moved = true;
    entries.push({ c, t, box, pic, look, sig });
  }
  // `drawAll`: the buffer is not kept, so any change draws every tile.
  const full = l.full || moved || (l.drawAll && entries.some((e) => e.t.changed));
  const draw = full ? entries : entries.filter((e) => e.t.changed);
  if (full) {
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clearColor(...l.backdrop, 1);
    gl.clear(gl.COLOR_BUFFER_BIT);
  }
  for (const { c, t, box, pic, look, sig } of draw) {
    bindTile(l, t, box, pic, look);
    gl.viewport(box.x, box.y, box.w, box.h);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    if (t.changed) countDrawn(c);
    t.changed = false;
    t.drawn = sig;
    renderTimes.tileDraws += 1;
  }
  if (draw.length) renderTimes.drawPasses += 1;
  l.full = false;
  renderTimes.drawMs += performance.now() - t0;
  scheduleLayer(l);
}

/**
 * Paints a parsed frame (app.js `parseFrame`) for the tile canvas `canvas`, whose `width` /
 * `height` become the frame's. Returns how: 'webgl' (the canvas's own context, or the shared
 * layer with `layer: true`), '2d', or null when it could not be painted (a lost WebGL
 * context). A layer tile's frame is uploaded here and shows at the next animation frame.
 */
export function paintVideo(canvas, f) {
  let p = painters.get(canvas);
  // A layer that was dropped (context restored) took its tiles' painters with it.
  if (p && p.layer && p.layer !== layer) p = null;
  if (!p) {
    if (f.format === 'i420') {
      const grid = tuning().layer === true ? canvas.parentElement?.closest('.grid') : null;
      const l = grid ? videoLayer(grid) : null;
      p = l ? layerTile(l, canvas) : webglPainter(canvas);
    }
    if (!p) {
      const ctx = canvas.getContext('2d');
      if (!ctx) return null;
      p = { kind: '2d', ctx };
    }
    painters.set(canvas, p);
  }
  if (canvas.width !== f.width) canvas.width = f.width;
  if (canvas.height !== f.height) canvas.height = f.height;
  let ok;
  if (p.layer) {
    ok = paintLayer(canvas, p, f);
  } else {
    ok = p.kind === 'webgl' ? drawWebgl(p, f, canvas) : draw2d(p, f);
    // A `rafDraw` canvas counts when its animation frame draws it.
    if (ok && !(p.kind === 'webgl' && tuning().rafDraw)) countDrawn(canvas);
  }
  return ok ? p.kind : null;
}

/** How `canvas` is painted: 'webgl', '2d', or null before its first frame. */
export function painterKind(canvas) {
  return painters.get(canvas)?.kind ?? null;
}

/** True when `canvas`'s frames are drawn by the shared video layer. */
export function onLayer(canvas) {
  const p = painters.get(canvas);
  return !!p && !!p.layer && p.layer === layer;
}

/**
 * The RGBA of pixel (x, y) (top-left origin) of the frame last painted: for tests. A WebGL
 * drawing buffer is gone once composited, so the frame is drawn again from its textures first
 * (a layer tile 1:1 at the layer's corner, which the next animation frame draws over).
 */
export function readPixel(canvas, x, y) {
  const p = painters.get(canvas);
  if (!p) return null;
  if (p.kind === '2d') return [...p.ctx.getImageData(x, y, 1, 1).data];
  const out = new Uint8Array(4);
  if (p.layer) {
    const l = p.layer;
    const { gl } = l;
    if (p.pending) {
      uploadTile(l, p, p.pending);
      p.pending = null;
    }
    fitLayer(l);
    const box = { x: 0, y: 0, w: p.width, h: p.height };
    bindTile(l, p, box, box, { radius: 0, dim: 1, mirror: false });
    gl.viewport(0, 0, p.width, p.height);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    gl.readPixels(x, p.height - 1 - y, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
    l.full = true;
    scheduleLayer(l);
    return [...out];
  }
  const { gl } = p;
  gl.uniform1i(p.rgbaAt, p.last === 'i420' ? 0 : 1);
  gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  gl.readPixels(x, canvas.height - 1 - y, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
  return [...out];
}
