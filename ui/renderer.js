// Paints video frames on tile canvases. I420 frames (src-tauri/src/media.rs `encode_i420_frame`,
// 1.5 bytes a pixel over the IPC) go to WebGL 2: three R8 textures, YUV → RGB in the fragment
// shader (BT.601 limited range, what rtcio-media's own conversion uses). The canvas is sized to
// the frame and its CSS size scales it (the default shader reads texels unfiltered). RGBA
// frames (our own preview, or a page without WebGL 2) go to a 2D canvas with `putImageData`,
// exactly as before. A canvas keeps the kind of context its first frame gave
// it (a canvas cannot have both): a WebGL canvas shows a later RGBA frame as a texture, a 2D
// canvas converts a later I420 frame in JavaScript.

/**
 * Summed milliseconds (performance.now()) of the WebGL texture uploads and draw calls since the
 * page loaded: the bench's per-stage table reads them (app.js `videoStats.stages`). With
 * software GL an upload is a copy on the page's main thread; a draw is queued and mostly runs
 * when the page composites.
 */
export const renderTimes = { uploadMs: 0, drawMs: 0 };

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
  let gl;
  try {
    gl = canvas.getContext('webgl2', {
      alpha: false, antialias: false, depth: false, stencil: false, premultipliedAlpha: false,
    });
  } catch {
    gl = null;
  }
  if (!gl) return null;
  try {
    const program = gl.createProgram();
    gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, VERTEX));
    // `sampler: 'linear'` (a bench switch): the filtered lookups, as before.
    const fetch = tuning().sampler !== 'linear';
    gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, fetch ? FRAGMENT_FETCH : FRAGMENT));
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(program) || 'link');
    gl.useProgram(program);
    ['texY', 'texU', 'texV'].forEach((name, unit) => gl.uniform1i(gl.getUniformLocation(program, name), unit));
    const filter = fetch ? gl.NEAREST : gl.LINEAR;
    const textureSet = () => ({
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
    });
    // Two sets of textures, used in turn: uploading into the set the last draw read would
    // wait for that draw to finish (with software GL, on the page's main thread).
    // `pingPong: false` (a bench switch): one set, as before.
    const sets = tuning().pingPong === false ? [textureSet()] : [textureSet(), textureSet()];
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

function drawWebgl(p, f) {
  const { gl } = p;
  if (gl.isContextLost()) return false;
  const t0 = performance.now();
  p.set = p.sets[p.next];
  p.next = (p.next + 1) % p.sets.length;
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
  // `noDraw` (a bench switch): uploads only, so the canvas is not redrawn or composited again.
  if (!window.__rtcioVideoTuning?.noDraw) {
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

/**
 * Paints a parsed frame (app.js `parseFrame`) on `canvas`, sized to the frame. Returns how:
 * 'webgl', '2d', or null when it could not be painted (a lost WebGL context).
 */
export function paintVideo(canvas, f) {
  let p = painters.get(canvas);
  if (!p) {
    p = (f.format === 'i420' && webglPainter(canvas)) || null;
    if (!p) {
      const ctx = canvas.getContext('2d');
      if (!ctx) return null;
      p = { kind: '2d', ctx };
    }
    painters.set(canvas, p);
  }
  if (canvas.width !== f.width) canvas.width = f.width;
  if (canvas.height !== f.height) canvas.height = f.height;
  const ok = p.kind === 'webgl' ? drawWebgl(p, f) : draw2d(p, f);
  return ok ? p.kind : null;
}

/** How `canvas` is painted: 'webgl', '2d', or null before its first frame. */
export function painterKind(canvas) {
  return painters.get(canvas)?.kind ?? null;
}

/**
 * The RGBA of pixel (x, y) (top-left origin) as last painted: for tests. A WebGL canvas's
 * drawing buffer is gone once composited, so it is drawn again from its textures first.
 */
export function readPixel(canvas, x, y) {
  const p = painters.get(canvas);
  if (!p) return null;
  if (p.kind === '2d') return [...p.ctx.getImageData(x, y, 1, 1).data];
  const { gl } = p;
  gl.uniform1i(p.rgbaAt, p.last === 'i420' ? 0 : 1);
  gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  const out = new Uint8Array(4);
  gl.readPixels(x, canvas.height - 1 - y, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
  return [...out];
}
