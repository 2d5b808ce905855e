// Join-phase load generator with the Node socket.io-client (the client browsers use), as in issue 15:
// N sockets over WebSocket, rooms of 4, at most `inFlight` connect+join handshakes at once (64 by
// default). Every member must get `join-ok`, and each existing member exactly one `user-connected`
// and one `#rtcio:init-offer` per later joiner (the server's join order is read from each joiner's
// backfill; room mates must agree on who came first). Then the last joiner of every room leaves
// (`socket.disconnect()`, as the rtc.io client's leave does), at most `inFlight` rooms at a time (all
// at once with leaveBurst=1), and every remaining member must get exactly one `#rtcio:peer-left` and then one `user-disconnected` naming it, and
// nothing else. Completeness is proven with `check-room` markers (the server answers a socket's
// events in order), not with waiting. Exits 0 only when every count is exact.
//
//   node load-joins.mjs URL[,URL…] [sockets=1000] [timeoutSeconds=120] [inFlight=64] [tag] [leaveBurst=0]
//
// Member i connects to URL number i mod (number of URLs): with several server processes sharing
// rooms through Redis, every room spans processes. Prints one JSON line with the counts on stdout
// (the fields of crates/rtcio-server/tests/exact_joins/mod.rs's `Outcome`); the first problems
// also go to stderr.
import { io } from "socket.io-client";

const urls = (process.argv[2] ?? "").split(",").filter(Boolean);
const total = Number(process.argv[3] ?? 1000);
const limitS = Number(process.argv[4] ?? 120);
const IN_FLIGHT = Number(process.argv[5] ?? 64);
const tag = process.argv[6] || `lj${process.pid}`;
// 1: the last members of all rooms leave at once; else at most IN_FLIGHT rooms at a time (the next
// when a previous room's remaining members have both leave events and a marker answered).
const LEAVE_BURST = process.argv[7] === "1";
const ROOM = 4;
if (!urls.length || !(total > 0) || !(IN_FLIGHT > 0)) {
  console.error("usage: node load-joins.mjs URL[,URL…] [sockets] [timeoutSeconds] [inFlight] [tag]");
  process.exit(2);
}

const started = Date.now();
const members = [];
const failures = [];
let joinSecs = 0;
let finished = false;
const deadline = setTimeout(() => finish(`timeout after ${limitS} s`), limitS * 1000);

function member(i) {
  const roomMembers = Math.min(ROOM, total - Math.floor(i / ROOM) * ROOM);
  const m = { i, room: `${tag}-${Math.floor(i / ROOM)}`, roomMembers, id: null, before: [], after: [], leave: [], phase: "join" };
  m.sink = m.before;
  m.onMarker = null;
  m.onEvent = null;
  return m;
}

/** Connect + join-room; resolves on join-ok. */
function join(m) {
  return new Promise((resolve, reject) => {
    const sock = io(urls[m.i % urls.length], { transports: ["websocket"], forceNew: true, reconnection: false });
    m.sock = sock;
    sock.on("connect", () => {
      m.id = sock.id;
      sock.emit("join-room", { roomId: m.room, name: `u${m.i}` });
    });
    sock.on("connect_error", (e) => reject(new Error(`connect_error ${e.message}`)));
    sock.on("disconnect", (reason) => {
      if (m.phase !== "left") m.lost = reason;
    });
    sock.onAny((name, arg) => {
      if (name === "join-ok" && m.phase === "join") {
        m.phase = "joined";
        m.sink = m.after;
        resolve();
      } else if (name === "join-error") {
        reject(new Error(`join-error ${JSON.stringify(arg)}`));
      } else if (name === "room-check-ok" && m.onMarker) {
        const f = m.onMarker;
        m.onMarker = null;
        f();
      } else {
        m.sink.push([name, arg]);
        if (m.onEvent) m.onEvent();
      }
    });
  });
}

// Markers are requests too: at most IN_FLIGHT at once, like the joins (with servers sharing rooms
// through Redis each is a cross-process membership query; thousands at once is another load).
let markersInFlight = 0;
const markerQueue = [];
function release() {
  const next = markerQueue.shift();
  if (next) next(); // the slot passes to the next marker
  else markersInFlight--;
}

/** `check-room`, resolves on its `room-check-ok`: everything sent to this socket before is in. */
async function marker(m) {
  if (markersInFlight >= IN_FLIGHT) await new Promise((r) => markerQueue.push(r));
  else markersInFlight++;
  await new Promise((resolve) => {
    m.onMarker = resolve;
    m.sock.emit("check-room", { roomId: m.room });
  });
  release();
}

async function joinAll() {
  let next = 0;
  async function worker() {
    while (next < total && !finished) {
      const m = member(next++);
      members.push(m);
      try {
        let guard;
        await Promise.race([
          join(m),
          new Promise((_, reject) => {
            guard = setTimeout(() => reject(new Error("no join-ok within 20 s")), 20000);
          }),
        ]).finally(() => clearTimeout(guard));
      } catch (e) {
        m.failed = true;
        failures.push(`socket ${m.i}: ${e.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, total) }, worker));
}

async function leavePhase(live) {
  const has = (m, name) => m.leave.some(([n]) => n === name);
  await Promise.all(
    live.map(async (m) => {
      const backfilled = m.before.filter(([n]) => n === "user-connected").length;
      m.sink = m.leave;
      if (backfilled + 1 === m.roomMembers) {
        m.leaver = true;
        m.phase = "left";
        m.sock.disconnect();
        return;
      }
      // Both leave events (a missing one shows in the counts after a 20 s guard), then a marker:
      // anything the leave sent this socket twice arrives before the marker's reply.
      await new Promise((resolve) => {
        const guard = setTimeout(() => {
          m.onEvent = null;
          failures.push(`socket ${m.i} (${m.id}): leave events incomplete after 20 s`);
          resolve();
        }, 20000);
        const check = () => {
          if (has(m, "user-disconnected") && has(m, "#rtcio:peer-left")) {
            clearTimeout(guard);
            m.onEvent = null;
            resolve();
          }
        };
        m.onEvent = check;
        check();
      });
      await marker(m);
    }),
  );
}

async function main() {
  await joinAll();
  joinSecs = (Date.now() - started) / 1000;
  const live = members.filter((m) => !m.failed);
  await Promise.all(live.map(marker));
  await Promise.all(live.map(marker));
  for (const m of live) m.verified = true;
  if (LEAVE_BURST) {
    await leavePhase(live);
  } else {
    const byRoom = new Map();
    for (const m of live) {
      if (!byRoom.has(m.room)) byRoom.set(m.room, []);
      byRoom.get(m.room).push(m);
    }
    const rooms = [...byRoom.values()];
    for (let k = 0; k < rooms.length && !finished; k += IN_FLIGHT) {
      await leavePhase(rooms.slice(k, k + IN_FLIGHT).flat());
    }
  }
  finish("done");
}

function verify() {
  const rooms = new Map();
  for (const m of members) {
    if (!rooms.has(m.room)) rooms.set(m.room, []);
    rooms.get(m.room).push(m);
  }
  const c = { userConnected: 0, initOffers: 0, due: 0, peerLeft: 0, userDisconnected: 0, leavesExact: 0 };
  const problems = [];
  const ids = (evs, name, key) => evs.filter(([n]) => n === name).map(([, a]) => a?.[key]).sort();
  for (const [room, ms] of rooms) {
    const backfill = new Map(ms.map((m) => [m.id, ids(m.before, "user-connected", "id")]));
    for (const m of ms) {
      const odd = m.before.filter(([n]) => n !== "user-connected");
      if (odd.length) problems.push(`${room}: ${m.id} got ${JSON.stringify(odd)} before its join-ok`);
    }
    for (let a = 0; a < ms.length; a++) {
      for (let b = a + 1; b < ms.length; b++) {
        const x = ms[a], y = ms[b];
        const k = (backfill.get(y.id) ?? []).filter((id) => id === x.id).length + (backfill.get(x.id) ?? []).filter((id) => id === y.id).length;
        if (k !== 1) problems.push(`${room}: ${x.id} and ${y.id} backfilled each other ${k} times`);
      }
    }
    for (const x of ms) {
      const dueFrom = ms.filter((y) => backfill.get(y.id)?.includes(x.id)).map((y) => y.id).sort();
      c.due += dueFrom.length;
      for (const [name, key, field] of [["user-connected", "id", "userConnected"], ["#rtcio:init-offer", "source", "initOffers"]]) {
        const got = ids(x.after, name, key);
        c[field] += got.length;
        if (JSON.stringify(got) !== JSON.stringify(dueFrom)) problems.push(`${room}: ${x.id} got ${name} from ${JSON.stringify(got)}, due ${JSON.stringify(dueFrom)}`);
      }
      const other = x.after.filter(([n]) => n !== "user-connected" && n !== "#rtcio:init-offer");
      if (other.length) problems.push(`${room}: ${x.id} also got ${JSON.stringify(other)}`);
    }
    const leavers = ms.filter((m) => m.leaver);
    let ok = leavers.length === 1;
    if (!ok) problems.push(`${room}: ${leavers.length} leavers, not exactly one`);
    for (const m of ms.filter((m) => !m.leaver)) {
      for (const [n] of m.leave) {
        if (n === "#rtcio:peer-left") c.peerLeft++;
        if (n === "user-disconnected") c.userDisconnected++;
      }
      if (leavers.length !== 1) continue;
      const got = JSON.stringify(m.leave.map(([n, a]) => [n, a?.id]));
      const want = JSON.stringify([["#rtcio:peer-left", leavers[0].id], ["user-disconnected", leavers[0].id]]);
      if (got !== want) {
        ok = false;
        problems.push(`${room}: ${m.id} got ${got} when ${leavers[0].id} left`);
      }
    }
    if (ok) c.leavesExact++;
  }
  return { c, problems };
}

function finish(why) {
  if (finished) return;
  finished = true;
  clearTimeout(deadline);
  const { c, problems } = verify();
  const all = [...failures];
  if (why !== "done") all.push(why);
  for (const m of members) if (m.lost && !m.failed) all.push(`socket ${m.i} (${m.id}) lost: ${m.lost}`);
  all.push(...problems);
  const out = {
    sockets: total,
    joined: members.filter((m) => m.phase !== "join").length,
    joinSecs: joinSecs || (Date.now() - started) / 1000,
    secs: (Date.now() - started) / 1000,
    verified: members.filter((m) => m.verified).length,
    ...c,
    rooms: Math.ceil(total / ROOM),
    problems: all.slice(0, 10),
    problemCount: all.length,
  };
  console.log(JSON.stringify(out));
  for (const p of all.slice(0, 10)) console.error(p);
  for (const m of members) m.sock?.disconnect();
  const full = Math.floor(total / ROOM), rest = total % ROOM;
  const joinDue = full * (ROOM * (ROOM - 1)) / 2 + (rest * Math.max(rest - 1, 0)) / 2;
  const leaveDue = total - Math.ceil(total / ROOM);
  const exact = all.length === 0 && out.joined === total && out.verified === total && c.userConnected === joinDue &&
    c.initOffers === joinDue && c.due === joinDue && c.peerLeft === leaveDue && c.userDisconnected === leaveDue &&
    c.leavesExact === out.rooms;
  setTimeout(() => process.exit(exact ? 0 : 1), 200);
}

main().catch((e) => {
  failures.push(`generator: ${e.stack ?? e}`);
  finish("error");
});
