// Join-phase load generator with the Node socket.io-client (the client browsers use), as in issue 15:
// N sockets over WebSocket, rooms of 4, at most 64 connect+join handshakes in flight; every member must
// get `join-ok`, and each existing member exactly one `user-connected` and one `#rtcio:init-offer` per
// later joiner (the server's join order is read from each joiner's backfill). Exits 0 when exact.
//
//   node load-joins.mjs http://127.0.0.1:3001 [sockets=1000] [timeoutSeconds=120]
//
// Prints one JSON line with the counts on stdout; details of the first problems on stderr.
import { io } from "socket.io-client";

const url = process.argv[2];
const total = Number(process.argv[3] ?? 1000);
const limitS = Number(process.argv[4] ?? 120);
const ROOM = 4;
const IN_FLIGHT = 64;
if (!url || !(total > 0)) {
  console.error("usage: node load-joins.mjs URL [sockets] [timeoutSeconds]");
  process.exit(2);
}

const tag = `lj${process.pid}`;
const members = []; // {i, room, sock, id, before: [], after: [], joined}
let inFlight = 0;
let next = 0;
let joined = 0;
let failed = 0;
const started = Date.now();
const deadline = setTimeout(() => finish("timeout"), limitS * 1000);

function startOne() {
  const i = next++;
  const m = { i, room: `${tag}-${Math.floor(i / ROOM)}`, id: null, before: [], after: [], joined: false };
  members.push(m);
  inFlight++;
  const sock = io(url, { transports: ["websocket"], forceNew: true, reconnection: false });
  m.sock = sock;
  sock.on("connect", () => {
    m.id = sock.id;
    sock.emit("join-room", { roomId: m.room, name: `u${i}` });
  });
  sock.on("connect_error", (e) => {
    failed++;
    console.error(`socket ${i}: connect_error ${e.message}`);
    done(m);
  });
  sock.onAny((name, arg) => {
    if (name === "join-ok") {
      if (!m.joined) {
        m.joined = true;
        joined++;
        done(m);
      }
      return;
    }
    (m.joined ? m.after : m.before).push([name, arg]);
  });
}

function done(m) {
  if (m.counted) return;
  m.counted = true;
  inFlight--;
  pump();
}

function pump() {
  while (inFlight < IN_FLIGHT && next < total) startOne();
  if (joined + failed === total) setTimeout(() => finish("joined"), 2000); // stragglers of the fan-out
}

function finish(why) {
  clearTimeout(deadline);
  const secs = (Date.now() - started) / 1000;
  const rooms = new Map();
  for (const m of members) {
    if (!rooms.has(m.room)) rooms.set(m.room, []);
    rooms.get(m.room).push(m);
  }
  let due = 0, initOffers = 0, missing = 0, extra = 0;
  const problems = [];
  for (const [room, ms] of rooms) {
    const backfill = new Map(ms.map((m) => [m.id, m.before.filter(([n]) => n === "user-connected").map(([, a]) => a?.id)]));
    for (const x of ms) {
      const dueFrom = ms.filter((y) => backfill.get(y.id)?.includes(x.id)).map((y) => y.id).sort();
      due += dueFrom.length;
      for (const [name, key] of [["user-connected", "id"], ["#rtcio:init-offer", "source"]]) {
        const got = x.after.filter(([n]) => n === name).map(([, a]) => a?.[key]).sort();
        if (name === "#rtcio:init-offer") initOffers += got.length;
        const left = [...got];
        for (const d of dueFrom) {
          const k = left.indexOf(d);
          if (k < 0) missing++;
          else left.splice(k, 1);
        }
        extra += left.length;
        if (left.length || got.length !== dueFrom.length) {
          if (problems.length < 10) problems.push(`${room}: ${x.id} got ${name} ${JSON.stringify(got)}, due ${JSON.stringify(dueFrom)}`);
        }
      }
    }
  }
  const fullDue = Math.floor(total / ROOM) * (ROOM * (ROOM - 1)) / 2;
  const out = { why, sockets: total, joined, failed, secs, initOffers, initOffersDue: fullDue, missing, extra };
  console.log(JSON.stringify(out));
  for (const p of problems) console.error(p);
  if (why !== "joined") {
    const stuck = members.filter((m) => !m.joined).slice(0, 5);
    for (const m of stuck) console.error(`socket ${m.i} (${m.id ?? "not connected"}) has no join-ok; before: ${JSON.stringify(m.before)}`);
  }
  for (const m of members) m.sock.disconnect();
  const exact = why === "joined" && failed === 0 && missing === 0 && extra === 0 && initOffers === fullDue;
  setTimeout(() => process.exit(exact ? 0 : 1), 200);
}

pump();
