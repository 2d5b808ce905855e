// Reference rtc.io signaling server on Node socket.io 4.8.
//
// = rtc.io-server core (PROTOCOL.md §7.1) + the example production room server (§7.3), kept
// behaviourally identical to them on the wire. Used as the comparison server in the load
// benchmark and as the "anchor" the scenario suite (scenarios.test.mjs) is validated against.
//
// Env:
//   PORT      listen port on 127.0.0.1 (default 3001; 0 = ephemeral)
//   RECOVERY  "1" enables connection-state recovery (120 000 ms, skipMiddlewares) like the
//             example server; default off. With it every non-volatile server->client event
//             carries a trailing offset argument (§1.4).
//
// stdout: exactly one line, `LISTENING <port>`, once the server accepts connections.
//
// One deliberate difference from the originals: a handler that throws (e.g. `chat-message` with a
// null payload, `#rtcio:message` without arguments) is caught and reported on stderr. In the
// original the exception escapes socket.io's process.nextTick dispatch and kills the process;
// here nothing is emitted for that event, which is what the wire shows until the crash.

import { createServer } from "node:http";
import { Server } from "socket.io";

const PORT = process.env.PORT === undefined || process.env.PORT === "" ? 3001 : Number(process.env.PORT);
const RECOVERY = process.env.RECOVERY === "1";

const httpServer = createServer((_req, res) => {
  // Only reached for paths socket.io does not own (no /healthz on the anchor).
  res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
});

const io = new Server(httpServer, {
  cors: { origin: "*" },
  ...(RECOVERY
    ? { connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true } }
    : {}),
});

/** Wraps a listener so an exception is logged instead of crashing the process (see header). */
function safe(event, fn) {
  return (...args) => {
    try {
      fn(...args);
    } catch (err) {
      process.stderr.write(`handler ${event} threw: ${err && err.message}\n`);
    }
  };
}

// ---- rtc.io-server core (§7.1): registered first, so it runs before the app handlers ----

io.on("connection", (socket) => {
  socket.on(
    "#rtcio:message",
    safe("#rtcio:message", (data) => {
      socket.to(data.target).emit("#rtcio:message", data);
    }),
  );
  socket.on(
    "disconnecting",
    safe("disconnecting", () => {
      const ownId = socket.id;
      socket.rooms.forEach((roomId) => {
        if (roomId === ownId) return;
        socket.to(roomId).emit("#rtcio:peer-left", { id: ownId });
      });
    }),
  );
});

// ---- example production room server (§7.3) ----

const lastMediaState = new Map(); // socketId -> { mic, cam }
const roomPasswords = new Map(); // roomId -> password

function trimPassword(p) {
  return typeof p === "string" ? p.trim() : "";
}

io.on("connection", (socket) => {
  socket.on(
    "stopScreenShare",
    safe("stopScreenShare", (data) => {
      if (data.roomId) {
        socket.to(data.roomId).emit("stopScreenShare", data);
      }
    }),
  );

  socket.on(
    "check-room",
    safe("check-room", (payload) => {
      const roomId = payload?.roomId;
      if (!roomId || typeof roomId !== "string") {
        socket.emit("join-error", { reason: "invalid-room", roomId });
        return;
      }
      const supplied = trimPassword(payload?.password);
      const occupants = io.sockets.adapter.rooms.get(roomId);
      const hasOccupants = !!(occupants && occupants.size > 0);
      const stored = roomPasswords.get(roomId) ?? "";
      if (hasOccupants && stored && supplied !== stored) {
        socket.emit("join-error", {
          reason: supplied ? "wrong-password" : "password-required",
          roomId,
        });
        return;
      }
      socket.emit("room-check-ok", {
        roomId,
        passwordRequired: hasOccupants && !!stored,
      });
    }),
  );

  socket.on(
    "join-room",
    safe("join-room", (payload) => {
      const { name, roomId } = payload ?? {};
      const supplied = trimPassword(payload?.password);
      if (!roomId || typeof roomId !== "string") {
        socket.emit("join-error", { reason: "invalid-room", roomId });
        return;
      }

      const existing = io.sockets.adapter.rooms.get(roomId);
      const hasOccupants = !!(existing && existing.size > 0);
      const stored = roomPasswords.get(roomId) ?? "";

      if (hasOccupants) {
        if (stored && supplied !== stored) {
          socket.emit("join-error", {
            reason: supplied ? "wrong-password" : "password-required",
            roomId,
          });
          return;
        }
      } else if (supplied) {
        roomPasswords.set(roomId, supplied);
      } else {
        roomPasswords.delete(roomId);
      }

      socket.data.name = name;
      socket.data.roomId = roomId;

      const existingUsers = Array.from(existing || []);
      socket.join(roomId);

      existingUsers.forEach((id) => {
        const existingSocket = io.sockets.sockets.get(id);
        if (!existingSocket) return;
        socket.emit("user-connected", { name: existingSocket.data.name, id });
        const state = lastMediaState.get(id);
        if (state) {
          socket.emit("media-state", { id, roomId, mic: state.mic, cam: state.cam });
        }
      });

      socket.emit("join-ok", { roomId });
      socket.to(roomId).emit("user-connected", { name, id: socket.id });
      socket.to(roomId).emit("#rtcio:init-offer", { source: socket.id });
    }),
  );

  socket.on(
    "chat-message",
    safe("chat-message", (message) => {
      socket.to(message.roomId).emit("chat-message", message);
    }),
  );

  socket.on(
    "media-state",
    safe("media-state", (data) => {
      if (!data?.roomId) return;
      if (typeof data.mic === "boolean" && typeof data.cam === "boolean") {
        lastMediaState.set(socket.id, { mic: data.mic, cam: data.cam });
      }
      socket.to(data.roomId).emit("media-state", data);
    }),
  );

  socket.on(
    "disconnecting",
    safe("disconnecting", () => {
      lastMediaState.delete(socket.id);
      socket.rooms.forEach((roomId) => {
        if (roomId === socket.id) return;
        socket.to(roomId).emit("user-disconnected", { id: socket.id });
        // socket.io removes the socket from its rooms after this hook: size 1 = only the leaver.
        const occupants = io.sockets.adapter.rooms.get(roomId);
        if (occupants && occupants.size <= 1) {
          roomPasswords.delete(roomId);
        }
      });
    }),
  );
});

httpServer.listen(PORT, "127.0.0.1", () => {
  process.stdout.write(`LISTENING ${httpServer.address().port}\n`);
});

function shutdown() {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
