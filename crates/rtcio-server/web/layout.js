// Where the call's tiles go: pure functions of the stage's size, the tile count and the
// video's aspect ratio (no DOM here, so node tests them directly). app.js applies the result
// as absolute positions on every render and resize.

/** Aspect ratio used until a tile's first frame says otherwise. */
export const DEFAULT_ASPECT = 16 / 9;

/** Space between tiles, px (app.js lays out with it; the tests compute with it). */
export const TILE_GAP = 10;

/** Areas within this fraction of each other count as equal (then the fuller grid wins). */
const AREA_TIE = 0.005;

/** The largest `aspect` box inside `rect` ({x, y, w, h}), centred in it. */
export function fitRect(rect, aspect = DEFAULT_ASPECT) {
  const a = aspect > 0 && Number.isFinite(aspect) ? aspect : DEFAULT_ASPECT;
  const w = Math.max(0, Math.min(rect.w, rect.h * a));
  const h = w / a;
  return { x: rect.x + (rect.w - w) / 2, y: rect.y + (rect.h - h) / 2, w, h };
}

/**
 * Columns × rows for `count` tiles of one `aspect` in a `width` × `height` stage with `gap`
 * between cells: every column count is tried and the one giving the biggest tile wins (what
 * the well-known calling apps do, instead of a fixed square-ish grid that letterboxes video).
 * Near-ties go to the shape with fewer empty cells. Returns {cols, rows, tileW, tileH}.
 */
export function bestGrid(width, height, count, aspect = DEFAULT_ASPECT, gap = 8) {
  const n = Math.max(1, Math.floor(count) || 1);
  const a = aspect > 0 && Number.isFinite(aspect) ? aspect : DEFAULT_ASPECT;
  let best = null;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const cellW = (width - gap * (cols - 1)) / cols;
    const cellH = (height - gap * (rows - 1)) / rows;
    const tileW = Math.max(0, Math.min(cellW, cellH * a));
    const tileH = tileW / a;
    const area = tileW * tileH;
    const empty = cols * rows - n;
    const better = !best
      || area > best.area * (1 + AREA_TIE)
      || (area >= best.area * (1 - AREA_TIE) && empty < best.empty);
    if (better) best = { cols, rows, tileW, tileH, area, empty };
  }
  return { cols: best.cols, rows: best.rows, tileW: best.tileW, tileH: best.tileH };
}

/**
 * The grid view: one {x, y, w, h} cell per tile in reading order. Tiles sit together in the
 * middle of the stage (rows centred vertically, each row — also a shorter last one — centred
 * horizontally), so spare space is around the group, not between tiles.
 */
export function gridRects(width, height, count, aspect = DEFAULT_ASPECT, gap = 8) {
  const n = Math.max(0, Math.floor(count) || 0);
  if (n === 0) return { cols: 0, rows: 0, rects: [] };
  const { cols, rows, tileW, tileH } = bestGrid(width, height, n, aspect, gap);
  const blockH = rows * tileH + (rows - 1) * gap;
  const y0 = (height - blockH) / 2;
  const rects = [];
  for (let r = 0; r < rows; r++) {
    const inRow = Math.min(cols, n - r * cols);
    const rowW = inRow * tileW + (inRow - 1) * gap;
    const x0 = (width - rowW) / 2;
    for (let c = 0; c < inRow; c++) {
      rects.push({ x: x0 + c * (tileW + gap), y: y0 + r * (tileH + gap), w: tileW, h: tileH });
    }
  }
  return { cols, rows, rects };
}

function clamp(v, lo, hi) {
  return Math.max(lo, Math.min(hi, v));
}

/**
 * The spotlight view (a pinned tile or a screen share on the stage): the main tile as big as
 * its aspect allows, the `others` tiles in a strip below it or to its right, whichever leaves
 * the main tile bigger. Returns {side: 'none'|'bottom'|'right', main, strip: [cells]}; the
 * main box already has `mainAspect`, strip cells have `stripAspect`.
 */
export function spotlightRects(width, height, others, mainAspect = DEFAULT_ASPECT, stripAspect = DEFAULT_ASPECT, gap = 8) {
  const n = Math.max(0, Math.floor(others) || 0);
  const sa = stripAspect > 0 && Number.isFinite(stripAspect) ? stripAspect : DEFAULT_ASPECT;
  if (n === 0) return { side: 'none', main: fitRect({ x: 0, y: 0, w: width, h: height }, mainAspect), strip: [] };
  const options = [];
  {
    // Strip along the bottom: thumbnails at most ~a fifth of the height, shrunk to fit the width.
    let th = clamp(height * 0.2, 60, 180);
    let tw = th * sa;
    const fitW = (width - gap * (n - 1)) / n;
    if (tw > fitW) { tw = Math.max(0, fitW); th = tw / sa; }
    const main = fitRect({ x: 0, y: 0, w: width, h: Math.max(0, height - th - gap) }, mainAspect);
    // Main and strip as one group, centred vertically; the strip centred under the main tile.
    const groupH = main.h + gap + th;
    const top = (height - groupH) / 2;
    main.y = top;
    const rowW = n * tw + (n - 1) * gap;
    const x0 = (width - rowW) / 2;
    const strip = [];
    for (let i = 0; i < n; i++) strip.push({ x: x0 + i * (tw + gap), y: top + main.h + gap, w: tw, h: th });
    options.push({ side: 'bottom', main, strip });
  }
  {
    // Strip down the right-hand side: thumbnails at most ~a fifth of the width.
    let tw = clamp(width * 0.2, 100, 280);
    let th = tw / sa;
    const fitH = (height - gap * (n - 1)) / n;
    if (th > fitH) { th = Math.max(0, fitH); tw = th * sa; }
    const main = fitRect({ x: 0, y: 0, w: Math.max(0, width - tw - gap), h: height }, mainAspect);
    const groupW = main.w + gap + tw;
    const left = (width - groupW) / 2;
    main.x = left;
    const colH = n * th + (n - 1) * gap;
    const y0 = (height - colH) / 2;
    const strip = [];
    for (let i = 0; i < n; i++) strip.push({ x: left + main.w + gap, y: y0 + i * (th + gap), w: tw, h: th });
    options.push({ side: 'right', main, strip });
  }
  const area = (o) => o.main.w * o.main.h;
  return area(options[1]) > area(options[0]) * (1 + AREA_TIE) ? options[1] : options[0];
}

/**
 * The aspect most tiles share (rounded to 2 decimals so 1280×720 and 640×360 agree), for the
 * grid's cells; DEFAULT_ASPECT when nothing is known yet.
 */
export function dominantAspect(aspects) {
  const counts = new Map();
  for (const a of aspects || []) {
    if (!(a > 0) || !Number.isFinite(a)) continue;
    const k = Math.round(a * 100) / 100;
    const c = counts.get(k) || { n: 0, a };
    c.n += 1;
    counts.set(k, c);
  }
  let best = null;
  for (const c of counts.values()) if (!best || c.n > best.n) best = c;
  return best ? best.a : DEFAULT_ASPECT;
}
