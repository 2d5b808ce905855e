// The call's layout and speaker functions (ui/layout.js, ui/speaker.js): pure, so node runs
// them directly — no browser. The applied layout (tiles on screen, frames inside them) is
// tested in call.test.mjs.
//
// Run: node --test layout.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_ASPECT, bestGrid, dominantAspect, fitRect, gridRects, spotlightRects } from '../../ui/layout.js';
import { rmsToDbfs, speakers } from '../../ui/speaker.js';

const SIZES = [
  [1280, 800], [1200, 780], [1920, 1080], [880, 620], [720, 520], [600, 900], [2560, 700], [400, 300],
];
const GAP = 8;
const close = (a, b, eps = 1e-6) => Math.abs(a - b) <= eps;

/** Brute force: the largest tile any column count gives. */
function bruteBest(w, h, n, aspect) {
  let best = 0;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const cw = (w - GAP * (cols - 1)) / cols;
    const ch = (h - GAP * (rows - 1)) / rows;
    const tw = Math.max(0, Math.min(cw, ch * aspect));
    best = Math.max(best, tw * (tw / aspect));
  }
  return best;
}

for (const aspect of [16 / 9, 4 / 3]) {
  test(`bestGrid maximises the tile for 1–9 tiles at ${SIZES.length} sizes (aspect ${aspect.toFixed(2)})`, () => {
    for (const [w, h] of SIZES) {
      for (let n = 1; n <= 9; n++) {
        const g = bestGrid(w, h, n, aspect, GAP);
        const at = `${n} tiles in ${w}×${h}`;
        assert.ok(g.cols * g.rows >= n, `${at}: room for every tile`);
        assert.ok((g.rows - 1) * g.cols < n, `${at}: no empty row`);
        assert.ok(close(g.tileW / g.tileH, aspect, 1e-9), `${at}: aspect kept`);
        assert.ok(g.cols * g.tileW + (g.cols - 1) * GAP <= w + 1e-6, `${at}: fits the width`);
        assert.ok(g.rows * g.tileH + (g.rows - 1) * GAP <= h + 1e-6, `${at}: fits the height`);
        // Within the tie tolerance of the best possible tile.
        assert.ok(g.tileW * g.tileH >= bruteBest(w, h, n, aspect) * 0.99, `${at}: largest tile`);
      }
    }
  });
}

test('bestGrid picks the shapes people expect', () => {
  const shape = (w, h, n, a = 16 / 9) => { const g = bestGrid(w, h, n, a, GAP); return `${g.cols}x${g.rows}`; };
  // Landscape window: two side by side, four in a square, six as 3×2, nine as 3×3.
  assert.equal(shape(1280, 720, 1), '1x1');
  assert.equal(shape(1280, 720, 2), '2x1');
  assert.equal(shape(1280, 720, 3), '2x2');
  assert.equal(shape(1280, 720, 4), '2x2');
  assert.equal(shape(1280, 720, 6), '3x2');
  assert.equal(shape(1280, 720, 9), '3x3');
  // Portrait window (or a narrow stage next to the chat): stacked.
  assert.equal(shape(600, 900, 2), '1x2');
  assert.equal(shape(600, 900, 3), '1x3');
  // A very wide strip of a window: all in one row.
  assert.equal(shape(2560, 400, 4), '4x1');
  // Near-square cells for 4:3 video in a 4:3 window.
  assert.equal(shape(1024, 768, 4, 4 / 3), '2x2');
  // Nonsense counts are one tile.
  assert.equal(shape(1280, 720, 0), '1x1');
});

test('gridRects: inside the stage, no overlap, rows centred, last row centred', () => {
  for (const [w, h] of SIZES) {
    for (let n = 1; n <= 9; n++) {
      const { cols, rows, rects } = gridRects(w, h, n, DEFAULT_ASPECT, GAP);
      assert.equal(rects.length, n);
      for (const r of rects) {
        assert.ok(r.x >= -1e-6 && r.y >= -1e-6 && r.x + r.w <= w + 1e-6 && r.y + r.h <= h + 1e-6, `${n} in ${w}×${h}: inside`);
      }
      for (let i = 0; i < n; i++) {
        for (let j = i + 1; j < n; j++) {
          const a = rects[i];
          const b = rects[j];
          const overlap = a.x < b.x + b.w - 1e-6 && b.x < a.x + a.w - 1e-6 && a.y < b.y + b.h - 1e-6 && b.y < a.y + a.h - 1e-6;
          assert.ok(!overlap, `${n} in ${w}×${h}: ${i} and ${j} overlap`);
        }
      }
      // Symmetric margins: the group sits in the middle.
      const left = Math.min(...rects.map((r) => r.x));
      const right = w - Math.max(...rects.map((r) => r.x + r.w));
      const top = Math.min(...rects.map((r) => r.y));
      const bottom = h - Math.max(...rects.map((r) => r.y + r.h));
      assert.ok(close(left, right, 1e-6) && close(top, bottom, 1e-6), `${n} in ${w}×${h}: centred`);
      const last = rects.filter((r) => close(r.y, rects[n - 1].y));
      assert.equal(last.length, n - (rows - 1) * cols);
      assert.ok(close(last[0].x, w - (last.at(-1).x + last.at(-1).w), 1e-6), 'last row centred');
    }
  }
  assert.deepEqual(gridRects(800, 600, 0).rects, []);
});

test('spotlightRects: the main tile keeps its aspect, the strip goes where the main tile is bigger', () => {
  // A wide window: a 16:9 share over a bottom strip of 3 cameras.
  const wide = spotlightRects(1280, 700, 3, 16 / 9, 16 / 9, GAP);
  assert.ok(close(wide.main.w / wide.main.h, 16 / 9, 1e-9));
  assert.equal(wide.strip.length, 3);
  // A very wide stage: a strip on the right leaves more room for a 16:9 main tile.
  const wider = spotlightRects(1900, 600, 3, 16 / 9, 16 / 9, GAP);
  assert.equal(wider.side, 'right');
  // A tall stage: the strip goes under the main tile.
  const tall = spotlightRects(700, 900, 4, 16 / 9, 16 / 9, GAP);
  assert.equal(tall.side, 'bottom');
  for (const [w, h] of SIZES) {
    for (let n = 0; n <= 8; n++) {
      for (const mainAspect of [16 / 9, 16 / 10, 4 / 3, 9 / 16]) {
        const s = spotlightRects(w, h, n, mainAspect, 16 / 9, GAP);
        const at = `${n} others in ${w}×${h}, main ${mainAspect.toFixed(2)}`;
        assert.equal(s.strip.length, n);
        assert.ok(close(s.main.w / s.main.h, mainAspect, 1e-9), `${at}: main aspect`);
        const all = [s.main, ...s.strip];
        for (const r of all) {
          assert.ok(r.x >= -1e-6 && r.y >= -1e-6 && r.x + r.w <= w + 1e-6 && r.y + r.h <= h + 1e-6, `${at}: inside`);
        }
        for (const r of s.strip) {
          assert.ok(close(r.w / r.h, 16 / 9, 1e-9), `${at}: strip aspect`);
          const overlap = r.x < s.main.x + s.main.w - 1e-6 && s.main.x < r.x + r.w - 1e-6
            && r.y < s.main.y + s.main.h - 1e-6 && s.main.y < r.y + r.h - 1e-6;
          assert.ok(!overlap, `${at}: strip over the main tile`);
        }
        // The main tile dominates: bigger than every thumbnail together.
        if (n > 0 && n <= 6) {
          const thumbs = s.strip.reduce((t, r) => t + r.w * r.h, 0);
          assert.ok(s.main.w * s.main.h > thumbs, `${at}: main is the biggest`);
        }
      }
    }
  }
  // Nobody else: the main tile fills the stage at its aspect.
  const alone = spotlightRects(1600, 900, 0, 16 / 9);
  assert.deepEqual(alone.main, { x: 0, y: 0, w: 1600, h: 900 });
});

test('fitRect and dominantAspect', () => {
  assert.deepEqual(fitRect({ x: 10, y: 20, w: 400, h: 400 }, 2), { x: 10, y: 120, w: 400, h: 200 });
  assert.deepEqual(fitRect({ x: 0, y: 0, w: 400, h: 100 }, 2), { x: 100, y: 0, w: 200, h: 100 });
  assert.equal(dominantAspect([]), DEFAULT_ASPECT);
  assert.equal(dominantAspect([4 / 3, 1280 / 720, 640 / 360, NaN, 0]), 1280 / 720);
});

test('speakers: levels above the threshold, the loudest, muted ones never', () => {
  assert.equal(rmsToDbfs(1), 0);
  assert.ok(close(rmsToDbfs(0.1), -20));
  assert.equal(rmsToDbfs(0), -Infinity);
  assert.equal(rmsToDbfs('x'), -Infinity);
  const levels = new Map([['a', -20], ['b', -35], ['c', -70], ['d', -10]]);
  const r = speakers(levels, { muted: new Set(['d']) });
  assert.deepEqual([...r.speaking].sort(), ['a', 'b']);
  assert.equal(r.loudest, 'a');
  assert.deepEqual([...speakers({ x: -30, y: 'loud' }).speaking], ['x']);
  assert.equal(speakers(new Map()).loudest, null);
  assert.deepEqual([...speakers(levels, { threshold: -15 }).speaking], ['d']);
});
