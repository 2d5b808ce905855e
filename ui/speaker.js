// Who is talking: audio levels per tile id (dBFS) → the ids to highlight. Pure, so that any
// level source plugs in: `mic-level {rms, peak}` for our own tile, `audio-level {peerId, dbfs}`
// for everyone else (see ui/README.md).

/** Above this a person counts as speaking (speech is around −30 dBFS, room noise below −50). */
export const SPEAKING_DBFS = -45;

/** dBFS of a linear RMS level (0..1); −Infinity for silence or garbage. */
export function rmsToDbfs(rms) {
  const v = Number(rms);
  if (!(v > 0)) return -Infinity;
  return 20 * Math.log10(Math.min(1, v));
}

/**
 * `levels`: Map (or plain object) id → dBFS. Returns {speaking: Set of ids at or above
 * `threshold`, loudest: the id with the highest such level or null}. Ids in `muted` never
 * count: a muted microphone's level is not heard by anyone.
 */
export function speakers(levels, { threshold = SPEAKING_DBFS, muted = new Set() } = {}) {
  const entries = levels instanceof Map ? [...levels.entries()] : Object.entries(levels || {});
  const speaking = new Set();
  let loudest = null;
  let top = -Infinity;
  for (const [id, raw] of entries) {
    const db = Number(raw);
    if (!Number.isFinite(db) || db < threshold || muted.has(id)) continue;
    speaking.add(id);
    if (db > top) { top = db; loudest = id; }
  }
  return { speaking, loudest };
}
