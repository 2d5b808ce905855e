//! Per-socket event ordering. socketioxide runs every async handler as its own task, which would
//! let a `join-room` overtake the `media-state` sent right after it; instead each inbound event is
//! queued synchronously (in arrival order) and handled one at a time, the disconnecting hook
//! included — the per-socket ordering rtc.io-server gets from Node. The queue has a task only while
//! it holds something: a drain task starts with the first queued event and ends when the queue is
//! empty, so an idle socket has neither a task nor a channel (together ~3 KiB per socket).
//!
//! A `#rtcio:message` relay (the hot path of every call setup) skips the queue when it can: with
//! the in-memory store and the default shared-room rule, a relay that arrives while the socket has
//! nothing queued or running is checked and delivered right where socketioxide reads it — no task,
//! no channel, no await — which keeps the per-socket order, since anything the socket sends later
//! is read only after it.
//!
//! Across sockets, everything that reads a room's membership and then changes it or tells its
//! members (a join with its backfill and fan-out, a leave with its announcements) runs under that
//! room's lock: Node runs such a handler without interleaving, and two joins that each read the
//! members before the other was added would both (or neither) send the other an init-offer.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ratelimit::LogLimiter;

/// Every "event dropped" warning of the process shares this budget: bad input from a forged
/// member is logged, not written a line per event.
static DROP_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(1), 10);
/// The same for leaves that went on without their room leases: when every client of a
/// four-process cluster vanished at once (50 000 sockets, the load bench's end) thousands of
/// leaves waited out the leases of the same rooms, ~7 400 lines in one run.
static LEASE_LOG: LogLimiter = LogLimiter::new(Duration::from_secs(1), 10);

use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{MessageHandler, Value};
use socketioxide::socket::{Sid, Socket};
use tokio::sync::{OwnedMutexGuard, oneshot};
use tracing::{debug, info, warn};

use crate::config::Policy;
use crate::previous_id::{self, EV_PREVIOUS_ID};
use crate::protocol::{
    self, EV_INIT_OFFER, EV_MESSAGE, EV_PEER_LEFT, IdOnly, InitOffer, JoinError, JoinErrorReason,
    JoinOk, MediaStateBackfill, PasswordChange, RoomCheckOk, RoomParse, UserConnected,
};
use crate::ratelimit::TokenBucket;
use crate::store::{RoomLease, Store, StoreError};

/// Events a socket may have waiting before the worker drops new ones (a flood, not a client).
const QUEUE_DEPTH: usize = 1024;
/// Attempts of one join whose room lease expires before it is answered (a stalled Redis).
const JOIN_ATTEMPTS: u32 = 3;
/// join-room + check-room requests a socket may send at once before the rate applies.
const JOIN_BURST: f64 = 20.0;

/// What every socket worker shares.
pub(crate) struct Shared<A: Adapter> {
    pub io: SocketIo<A>,
    pub store: Store,
    pub policy: Policy,
    /// Counts sockets whose disconnect was fully handled (leave announcements sent), so an
    /// embedding app can wait for its own socket's before stopping the server.
    pub disconnects: tokio::sync::watch::Sender<u64>,
    /// Serialises membership reads and changes per room (see the module docs).
    pub rooms: RoomLocks,
}

/// One async lock per room in use; entries go away with their last holder or waiter. (A waiter
/// cancelled after the holder left would leave an idle entry behind; workers never cancel.)
#[derive(Default)]
pub(crate) struct RoomLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds one room's lock; dropping it releases the lock and forgets an idle entry.
pub(crate) struct RoomGuard<'a> {
    locks: &'a RoomLocks,
    room: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl RoomLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // The map is only read or updated in one step; a panic elsewhere cannot corrupt it.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn lock(&self, room: &str) -> RoomGuard<'_> {
        let m = self.map().entry(room.to_string()).or_default().clone();
        RoomGuard {
            locks: self,
            room: room.to_string(),
            guard: Some(m.lock_owned().await),
        }
    }

    /// Locks several rooms, in sorted order so two sockets leaving the same rooms cannot
    /// deadlock.
    async fn lock_all(&self, rooms: &[String]) -> Vec<RoomGuard<'_>> {
        let mut sorted: Vec<&String> = rooms.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut guards = Vec::with_capacity(sorted.len());
        for r in sorted {
            guards.push(self.lock(r).await);
        }
        guards
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

/// Rooms held by one socket: this process's locks and, with Redis, the rooms' leases.
struct Held<'a> {
    _local: Vec<RoomGuard<'a>>,
    leases: Vec<RoomLease>,
}

/// Locks `rooms` in this process, then leases them in the shared store (sorted, like the local
/// locks, so two holders of overlapping rooms cannot deadlock).
async fn hold_rooms<'a, A: Adapter>(
    sh: &'a Shared<A>,
    sid: &str,
    rooms: &[String],
) -> Result<Held<'a>, HandleError> {
    let local = sh.rooms.lock_all(rooms).await;
    let mut sorted: Vec<&String> = rooms.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut held = Held {
        _local: local,
        leases: Vec::new(),
    };
    for room in sorted {
        match sh.store.lease_room(room, sid).await {
            Ok(Some(l)) => held.leases.push(l),
            Ok(None) => {}
            Err(e) => {
                held.release(&sh.store, sid).await;
                return Err(e.into());
            }
        }
    }
    Ok(held)
}

impl Held<'_> {
    /// Gives the leases back, then the local locks.
    async fn release(self, store: &Store, sid: &str) {
        for lease in self.leases {
            // Not fatal: an unreleased lease expires by itself.
            if let Err(e) = store.release_room(lease).await {
                warn!(%sid, "room lease not released: {e}");
            }
        }
    }
}

impl Drop for RoomGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map();
        // Only the map's own reference left: nobody holds or waits for this room.
        if map
            .get(&self.room)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.room);
        }
    }
}

/// How a socket reaches its [`SocketCtx`] from the connect handler (removed there).
struct CtxExt<A: Adapter>(Arc<SocketCtx<A>>);

impl<A: Adapter> Clone for CtxExt<A> {
    fn clone(&self) -> Self {
        CtxExt(self.0.clone())
    }
}

/// Called by the connect handler, which socketioxide calls once it has sent the CONNECT ack and
/// marked the socket connected: from now on replies can be sent, so queued events may run.
pub(crate) fn connected<A: Adapter>(socket: &SocketRef<A>) {
    let Some(CtxExt(ctx)) = socket.extensions.remove::<CtxExt<A>>() else {
        return;
    };
    let sid = socket.id.as_str();
    if ctx.sh.store.register_socket_now(sid) {
        debug!(%sid, "socket connected");
        // Events that came before the ack wait in the queue: run them now, else go idle.
        let mut q = ctx.queue();
        if q.state != State::Connecting {
            return;
        }
        if q.items.is_empty() {
            q.state = State::Idle;
        } else {
            q.state = State::Running;
            drop(q);
            tokio::spawn(drain(ctx, socket.clone(), true));
        }
    } else {
        // The shared store needs a round trip: the drain task registers the socket first.
        let mut q = ctx.queue();
        if q.state != State::Connecting {
            return;
        }
        q.state = State::Running;
        drop(q);
        tokio::spawn(drain(ctx, socket.clone(), false));
    }
}

enum Inbound {
    Event(Value),
    /// The rooms are read when the disconnect starts: a namespace DISCONNECT followed by the
    /// transport closing makes socketioxide drop the socket's rooms before our handler runs.
    Disconnecting {
        rooms: Vec<String>,
        done: oneshot::Sender<()>,
    },
}

/// Who may handle the socket's next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not yet marked connected by socketioxide: events wait in the queue.
    Connecting,
    /// No task: a relay may be handled inline, anything else starts a drain task.
    Idle,
    /// A drain task runs and handles what is queued, in order.
    Running,
    /// Disconnected before it was ever connected: nothing runs any more.
    Gone,
}

/// The socket's queue of events not handled yet, and who handles them.
struct Queue {
    items: VecDeque<Inbound>,
    state: State,
    limits: Limits,
}

/// Per-socket state shared by the [`EventSink`] (socketioxide's read path), the disconnect hook
/// and the drain task. An idle socket has no task and an empty (unallocated) queue: a task and a
/// channel per socket cost more than 3 KiB of an idle socket's ~20.
struct SocketCtx<A: Adapter> {
    sh: Arc<Shared<A>>,
    queue: Mutex<Queue>,
    relay_limit: Mutex<TokenBucket>,
    /// Relays may be handled inline (in-memory store, shared-room rule on).
    inline_relay: bool,
}

impl<A: Adapter> SocketCtx<A> {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every update of the queue is one step; a panic elsewhere cannot leave it half-done.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_relay_token(&self) -> bool {
        self.relay_limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(Instant::now())
    }

    /// Queues `item` and starts a drain task when none runs. False when it was not queued (a
    /// full queue, or a socket that never connected).
    fn enqueue(self: &Arc<Self>, socket: SocketRef<A>, item: Inbound) -> Result<(), &'static str> {
        let mut q = self.queue();
        if q.state == State::Gone {
            return Err("closed");
        }
        if q.items.len() >= QUEUE_DEPTH {
            return Err("full");
        }
        q.items.push_back(item);
        if q.state == State::Idle {
            q.state = State::Running;
            drop(q);
            tokio::spawn(drain(self.clone(), socket, true));
        }
        Ok(())
    }
}

/// The socket's fallback handler, called synchronously for every inbound event in wire order:
/// queues it, or delivers a relay at once (see the module docs). Implementing socketioxide's
/// handler trait directly (instead of a closure) also avoids the task socketioxide would spawn
/// per event for a closure handler.
struct EventSink<A: Adapter> {
    ctx: Arc<SocketCtx<A>>,
}

/// Marks [`EventSink`]'s handler impl apart from socketioxide's closure impls.
struct SinkCall;

impl<A: Adapter> MessageHandler<A, SinkCall> for EventSink<A> {
    fn call(&self, s: Arc<Socket<A>>, v: Value, _ack: Option<i64>) {
        let ctx = &self.ctx;
        let max_bytes = ctx.sh.policy.max_event_bytes;
        let len = match &v {
            Value::Str(t, bins) => {
                t.len() + bins.as_ref().map_or(0, |b| b.iter().map(|b| b.len()).sum())
            }
            Value::Bytes(b) => b.len(),
        };
        if max_bytes > 0 && len > max_bytes {
            if let Some(more) = DROP_LOG.allow(Instant::now()) {
                warn!(sid = %s.id, len, max_bytes, more, "dropping oversized event");
            }
            return;
        }
        // Only this socket's read path queues events, so nothing can be queued between this
        // check and the inline relay: the relay still comes after everything sent before it.
        if ctx.inline_relay
            && ctx.queue().state == State::Idle
            && let Value::Str(text, None) = &v
            && let Ok(ev) = protocol::parse_event(text)
            && ev.name == EV_MESSAGE
        {
            let sid = s.id.as_str();
            if let Err(e) = relay_local(&ctx.sh, ctx, sid, ev.args.first().copied())
                && let Some(more) = DROP_LOG.allow(Instant::now())
            {
                warn!(%sid, more, "event dropped: {e}");
            }
            return;
        }
        let sid = s.id;
        if let Err(why) = ctx.enqueue(SocketRef::from(s), Inbound::Event(v))
            && let Some(more) = DROP_LOG.allow(Instant::now())
        {
            warn!(%sid, more, "dropping event: inbound queue {why}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum HandleError {
    #[error(transparent)]
    Inbound(#[from] protocol::InboundError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("adapter: {0}")]
    Adapter(String),
    /// The room's membership read ran into the adapter's request timeout: possibly partial.
    #[error("room membership read timed out (other processes may be missing)")]
    MembersUnsure,
}

/// Wires a freshly connected socket: own-id room, ordered inbound queue, disconnect hook.
pub(crate) fn attach<A: Adapter>(shared: Arc<Shared<A>>, socket: SocketRef<A>) {
    let sid = socket.id.to_string();
    // socket.io puts every socket in a room named after its id; relays address that room.
    socket.join(sid.clone());
    let rate = shared.policy.relay_per_second;
    let now = Instant::now();
    let ctx = Arc::new(SocketCtx {
        inline_relay: matches!(shared.store, Store::Memory(_))
            && shared.policy.relay_requires_shared_room,
        queue: Mutex::new(Queue {
            items: VecDeque::new(),
            state: State::Connecting,
            limits: Limits {
                joins: TokenBucket::new(shared.policy.joins_per_second, JOIN_BURST, now),
                previous_ids: TokenBucket::new(previous_id::PER_SECOND, previous_id::BURST, now),
            },
        }),
        relay_limit: Mutex::new(TokenBucket::new(rate, rate * 2.0, now)),
        sh: shared,
    });
    socket.extensions.insert(CtxExt(ctx.clone()));
    socket.on_fallback(EventSink { ctx: ctx.clone() });
    socket.on_disconnect(move |s: SocketRef<A>| {
        // Synchronous part of the handler: runs before socketioxide can clear the rooms.
        let rooms = joined_rooms(&s, &sid);
        let (done_tx, done_rx) = oneshot::channel();
        let item = Inbound::Disconnecting {
            rooms,
            done: done_tx,
        };
        let queued = {
            let mut q = ctx.queue();
            if q.state == State::Connecting {
                // Never connected: no event of it ran, there is nothing to announce.
                q.state = State::Gone;
                q.items.clear();
                false
            } else {
                drop(q);
                ctx.enqueue(s.clone(), item).is_ok()
            }
        };
        async move {
            if queued {
                // Keep the socket in its rooms until the leave announcements are out.
                let _ = done_rx.await;
            }
        }
    });
}

#[derive(Clone)]
struct Limits {
    joins: TokenBucket,
    previous_ids: TokenBucket,
}

/// Handles the socket's queued events one at a time, in arrival order, and ends when the queue
/// is empty (the socket is idle again) or after its disconnect.
async fn drain<A: Adapter>(ctx: Arc<SocketCtx<A>>, socket: SocketRef<A>, registered: bool) {
    let sh = &ctx.sh;
    let sid = socket.id.as_str();
    if !registered {
        if let Err(e) = Box::pin(sh.store.register_socket(sid)).await {
            warn!(%sid, "store: {e}");
        }
        debug!(%sid, "socket connected");
    }
    let mut limits = ctx.queue().limits.clone();
    loop {
        let item = {
            let mut q = ctx.queue();
            match q.items.pop_front() {
                Some(item) => item,
                None => {
                    // Idle again: give the queue's buffer back and let relays run inline.
                    q.items = VecDeque::new();
                    q.limits = limits;
                    q.state = State::Idle;
                    return;
                }
            }
        };
        match item {
            Inbound::Event(v) => {
                // Boxed: the handlers' state (store and adapter futures) stays out of the task
                // while it waits for nothing.
                let handled = Box::pin(handle_event(sh, &socket, sid, v, &mut limits, &ctx));
                if let Err(e) = handled.await
                    && let Some(more) = DROP_LOG.allow(Instant::now())
                {
                    warn!(%sid, more, "event dropped: {e}");
                }
            }
            Inbound::Disconnecting { rooms, done } => {
                if let Err(e) = Box::pin(on_disconnecting(sh, &socket, sid, rooms)).await {
                    warn!(%sid, "disconnect cleanup incomplete: {e}");
                }
                let _ = done.send(());
                sh.disconnects.send_modify(|n| *n += 1);
                // Nothing after the disconnect is handled.
                let mut q = ctx.queue();
                q.items = VecDeque::new();
                q.state = State::Gone;
                debug!(%sid, "socket handled its disconnect");
                return;
            }
        }
    }
}

async fn handle_event<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    v: Value,
    limits: &mut Limits,
    ctx: &SocketCtx<A>,
) -> Result<(), HandleError> {
    let text = match &v {
        Value::Str(s, None) => s.as_str(),
        Value::Str(_, Some(_)) | Value::Bytes(_) => {
            // rtc.io signaling never carries binary attachments; relaying placeholders without
            // their buffers would corrupt them, so such events are refused as a whole.
            return Err(protocol::InboundError::Malformed(
                "binary attachments are not supported".into(),
            )
            .into());
        }
    };
    let ev = protocol::parse_event(text)?;
    let arg = ev.args.first().copied();
    match ev.name.as_str() {
        EV_MESSAGE => relay(sh, socket, sid, arg, ctx).await,
        "join-room" => join_room(sh, socket, sid, arg, limits).await,
        "check-room" => check_room(sh, socket, sid, arg, limits).await,
        "media-state" | "stopScreenShare" | "chat-message" => {
            echo(sh, socket, sid, &ev.name, arg).await
        }
        EV_PREVIOUS_ID if sh.policy.previous_id_hint => {
            hint_previous_id(sh, socket, sid, arg, limits).await
        }
        other => {
            debug!(%sid, event = other, "no handler");
            Ok(())
        }
    }
}

/// Rooms the socket joined through the room logic (its own-id room excluded).
fn joined_rooms<A: Adapter>(socket: &SocketRef<A>, sid: &str) -> Vec<String> {
    socket
        .rooms()
        .into_iter()
        .map(|r| r.into_owned())
        .filter(|r| r != sid)
        .collect()
}

fn emit_self<A: Adapter, T: Serialize + ?Sized>(socket: &SocketRef<A>, event: &str, payload: &T) {
    if let Err(e) = socket.emit(event, payload) {
        debug!(sid = %socket.id, event, "emit to self failed: {e}");
    }
}

async fn emit_room<A: Adapter, T: Serialize + ?Sized>(
    socket: &SocketRef<A>,
    room: &str,
    event: &str,
    payload: &T,
) -> Result<(), HandleError> {
    socket
        .to(room.to_string())
        .emit(event, payload)
        .await
        .map_err(|e| HandleError::Adapter(e.to_string()))
}

async fn live_members<A: Adapter>(
    io: &SocketIo<A>,
    room: &str,
) -> Result<Vec<String>, HandleError> {
    // `of("/")` rather than `within`: during shutdown the namespace is gone and `within` panics.
    let Some(ns) = io.of("/") else {
        return Ok(Vec::new());
    };
    let sockets = ns
        .within(room.to_string())
        .fetch_sockets()
        .await
        .map_err(|e| HandleError::Adapter(e.to_string()))?;
    Ok(sockets
        .into_iter()
        .map(|s| s.data().id.to_string())
        .collect())
}

/// A relay in single-process mode with the shared-room rule: checked and delivered without an
/// await (the membership check is a map lookup, the target socket is found by id).
fn relay_local<A: Adapter>(
    sh: &Shared<A>,
    ctx: &SocketCtx<A>,
    sid: &str,
    arg: Option<&RawValue>,
) -> Result<(), HandleError> {
    if !ctx.take_relay_token() {
        debug!(%sid, "relay rate limit");
        return Ok(());
    }
    let addr = protocol::parse_relay(arg)?;
    let Some(payload) = arg else { return Ok(()) };
    if addr.source.as_deref() != Some(sid) {
        debug!(%sid, source = ?addr.source, "relay with foreign source dropped");
        return Ok(());
    }
    if addr.target == sid {
        // The anchor broadcasts to the target room except the sender: a relay to oneself
        // reaches nobody.
        return Ok(());
    }
    if sh.store.shares_room_now(sid, &addr.target) != Some(true) {
        debug!(%sid, target = %addr.target, "relay to a socket outside our rooms dropped");
        return Ok(());
    }
    // A shared room makes `target` a connected socket's id.
    let target = addr
        .target
        .parse::<Sid>()
        .ok()
        .and_then(|t| sh.io.get_socket(t));
    match target {
        Some(t) => {
            if let Err(e) = t.emit(EV_MESSAGE, payload) {
                debug!(%sid, target = %addr.target, "relay not delivered: {e}");
            }
        }
        None => debug!(%sid, target = %addr.target, "relay target gone"),
    }
    Ok(())
}

async fn relay<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    arg: Option<&RawValue>,
    ctx: &SocketCtx<A>,
) -> Result<(), HandleError> {
    if matches!(sh.store, Store::Memory(_)) && sh.policy.relay_requires_shared_room {
        return relay_local(sh, ctx, sid, arg);
    }
    if !ctx.take_relay_token() {
        debug!(%sid, "relay rate limit");
        return Ok(());
    }
    let addr = protocol::parse_relay(arg)?;
    let Some(payload) = arg else { return Ok(()) };
    if sh.policy.relay_requires_shared_room {
        if addr.source.as_deref() != Some(sid) {
            debug!(%sid, source = ?addr.source, "relay with foreign source dropped");
            return Ok(());
        }
        let rooms = joined_rooms(socket, sid);
        if !sh.store.shares_room(&addr.target, &rooms).await? {
            debug!(%sid, target = %addr.target, "relay to a socket outside our rooms dropped");
            return Ok(());
        }
    }
    emit_room(socket, &addr.target, EV_MESSAGE, payload).await
}

fn room_id_of_raw(arg: Option<&RawValue>) -> Option<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct R {
        #[serde(rename = "roomId")]
        room_id: Option<serde_json::Value>,
    }
    arg.and_then(|a| serde_json::from_str::<R>(a.get()).ok())
        .and_then(|r| r.room_id)
}

/// Validates a room request; on failure the `join-error` has been sent and `None` returned.
async fn room_request<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    arg: Option<&RawValue>,
    limits: &mut Limits,
) -> Result<Option<protocol::RoomRequest>, HandleError> {
    if !limits.joins.try_take(Instant::now()) {
        let err = JoinError {
            reason: JoinErrorReason::RateLimited,
            room_id: room_id_of_raw(arg),
        };
        info!(%sid, "join/check rate limit");
        emit_self(socket, "join-error", &err);
        return Ok(None);
    }
    let max_len = match sh.policy.max_room_id_len {
        0 => usize::MAX,
        n => n,
    };
    let req = match protocol::parse_room_request(arg, max_len) {
        RoomParse::Ok(r) => r,
        RoomParse::InvalidRoom(err) => {
            emit_self(socket, "join-error", &err);
            return Ok(None);
        }
    };
    if sh.policy.reject_socket_id_rooms && sh.store.is_socket(&req.room_id).await? {
        info!(%sid, room = %req.room_id, "room id equal to a socket id refused");
        emit_self(
            socket,
            "join-error",
            &JoinError::for_room(JoinErrorReason::InvalidRoom, &req.room_id),
        );
        return Ok(None);
    }
    Ok(Some(req))
}

async fn check_room<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    arg: Option<&RawValue>,
    limits: &mut Limits,
) -> Result<(), HandleError> {
    let Some(req) = room_request(sh, socket, sid, arg, limits).await? else {
        return Ok(());
    };
    // Occupancy and password are read together, as a join would see them.
    let _room = sh.rooms.lock(&req.room_id).await;
    let occupied = !live_members(&sh.io, &req.room_id).await?.is_empty();
    let stored = sh.store.password(&req.room_id).await?;
    match protocol::check_password(occupied, &stored, &req.password) {
        Err(reason) => emit_self(
            socket,
            "join-error",
            &JoinError::for_room(reason, &req.room_id),
        ),
        Ok(()) => emit_self(
            socket,
            "room-check-ok",
            &RoomCheckOk {
                room_id: &req.room_id,
                password_required: occupied && !stored.is_empty(),
            },
        ),
    }
    Ok(())
}

async fn join_room<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    arg: Option<&RawValue>,
    limits: &mut Limits,
) -> Result<(), HandleError> {
    let Some(req) = room_request(sh, socket, sid, arg, limits).await? else {
        return Ok(());
    };
    let room = req.room_id.as_str();
    let name = match protocol::validate_name(req.name.as_deref(), sh.policy.max_name_chars) {
        Ok(n) => n,
        Err(e) => {
            info!(%sid, room, "join refused: {e}");
            emit_self(
                socket,
                "join-error",
                &JoinError::for_room(JoinErrorReason::InvalidName, room),
            );
            return Ok(());
        }
    };
    // From the membership read to the last fan-out emit, no other join or leave of this room
    // may interleave, on this process or another: each pair of members must agree on who was
    // there first. A join whose Redis lease ran out before it became visible starts over.
    let mut attempt = 1;
    loop {
        let held = hold_rooms(sh, sid, std::slice::from_ref(&req.room_id)).await?;
        let last = attempt == JOIN_ATTEMPTS;
        let r = join_locked(sh, socket, sid, &req, name.as_deref(), &held, last).await;
        held.release(&sh.store, sid).await;
        match r {
            Err(
                e @ (HandleError::Store(StoreError::LeaseLost(_)) | HandleError::MembersUnsure),
            ) if !last => {
                if let Some(more) = LEASE_LOG.allow(Instant::now()) {
                    warn!(%sid, room, attempt, more, "{e}; joining again");
                }
                attempt += 1;
            }
            r => return r,
        }
    }
}

/// One join attempt under the room's lock and lease. Everything that can take a round trip (the
/// membership read, the backfill's names and media, the store writes) happens before the joiner
/// becomes visible; then the lease is confirmed (fencing: had it expired, the next joiner may
/// already be telling the room's members, us included once we are in it) and the joiner is added
/// to the room with its backfill and `join-ok` queued in the same synchronous step, so anything
/// sent to the room after that reaches it after its own `join-ok`.
async fn join_locked<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    req: &protocol::RoomRequest,
    name: Option<&str>,
    held: &Held<'_>,
    last_attempt: bool,
) -> Result<(), HandleError> {
    let room = req.room_id.as_str();
    let asked = Instant::now();
    let mut members = live_members(&sh.io, room).await?;
    // A read as slow as the adapter's request timeout may have left out a process that answered
    // late, whose earlier fan-out can still be on its way here: joining on it would put us in the
    // room without that member in our backfill, and its stale init-offer would reach us first.
    // Read again under a fresh lease; the last attempt goes on with what it has.
    if !held.leases.is_empty()
        && !last_attempt
        && asked.elapsed() >= crate::redis_driver::ADAPTER_REQUEST_TIMEOUT
    {
        return Err(HandleError::MembersUnsure);
    }
    let occupied = !members.is_empty();
    let stored = sh.store.password(room).await?;
    if let Err(reason) = protocol::check_password(occupied, &stored, &req.password) {
        info!(%sid, room, ?reason, "join refused");
        emit_self(socket, "join-error", &JoinError::for_room(reason, room));
        return Ok(());
    }
    let rejoin = members.iter().any(|m| m == sid);
    let dedupe = rejoin && sh.policy.dedupe_rejoin;
    // The anchor backfills every member present before the join (itself too on a re-join), in
    // join order.
    let (names, media) = if dedupe {
        (Vec::new(), Vec::new())
    } else {
        sh.store.sort_by_join_order(room, &mut members).await?;
        backfill_stall().await;
        (
            sh.store.names(&members).await?,
            sh.store.media(&members).await?,
        )
    };
    // Fencing: the writes below and the join must not outlive the lease. Renewed here for a
    // full lease, which covers the two writes; the rest is synchronous.
    for lease in &held.leases {
        sh.store.confirm_lease(lease).await?;
    }
    match protocol::password_change(occupied, &req.password) {
        PasswordChange::Keep => {}
        PasswordChange::Set(pw) => sh.store.set_password(room, Some(&pw)).await?,
        PasswordChange::Clear => sh.store.set_password(room, None).await?,
    }
    sh.store.add_member(sid, room, name).await?;
    if dedupe {
        emit_self(socket, "join-ok", &JoinOk { room_id: room });
        return Ok(());
    }
    // No await from here to `join-ok`: the joiner enters the room and has its answer queued in
    // one step.
    socket.join(room.to_string());
    for ((id, name), state) in members.iter().zip(&names).zip(&media) {
        emit_self(
            socket,
            "user-connected",
            &UserConnected {
                name: name.as_deref(),
                id,
            },
        );
        if let Some(m) = state {
            emit_self(
                socket,
                "media-state",
                &MediaStateBackfill {
                    id,
                    room_id: room,
                    mic: m.mic,
                    cam: m.cam,
                },
            );
        }
    }
    emit_self(socket, "join-ok", &JoinOk { room_id: room });
    let me = UserConnected { name, id: sid };
    if matches!(sh.store, Store::Memory(_)) {
        // One process: the members read above under the room's lock are the room minus the
        // joiner. Each gets both events back to back, so its session wakes once and writes them
        // in one syscall; two room broadcasts woke every member twice, and a member woken by the
        // first could write it before the second was queued.
        let offer = InitOffer { source: sid };
        for m in members.iter().filter(|m| *m != sid) {
            let Some(t) = m.parse::<Sid>().ok().and_then(|t| sh.io.get_socket(t)) else {
                debug!(%sid, room, member = %m, "join fan-out: member gone");
                continue;
            };
            emit_self(&t, "user-connected", &me);
            emit_self(&t, EV_INIT_OFFER, &offer);
        }
    } else {
        // A member closing at this moment makes the broadcast report an error, yet the others
        // got it; it must not stop the init-offer after the user-connected.
        for r in [
            emit_room(socket, room, "user-connected", &me).await,
            emit_room(socket, room, EV_INIT_OFFER, &InitOffer { source: sid }).await,
        ] {
            if let Err(e) = r {
                debug!(%sid, room, "join fan-out not delivered to everyone: {e}");
            }
        }
    }
    info!(%sid, room, members = members.len(), "joined");
    Ok(())
}

/// The test hook of a slow backfill read (see [`crate::store::test_hooks`]); nothing by default.
async fn backfill_stall() {
    use crate::store::test_hooks::{BACKFILL_STALL_MS, STALLED};
    let ms = BACKFILL_STALL_MS.swap(0, std::sync::atomic::Ordering::Relaxed);
    if ms > 0 {
        STALLED.notify_one();
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

async fn echo<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    event: &str,
    arg: Option<&RawValue>,
) -> Result<(), HandleError> {
    let echo = protocol::parse_room_echo(event, arg)?;
    if sh.policy.echo_requires_membership && !joined_rooms(socket, sid).contains(&echo.room_id) {
        debug!(%sid, event, room = %echo.room_id, "echo to a room we are not in dropped");
        return Ok(());
    }
    if event == "media-state"
        && let Some(state) = echo.media
    {
        sh.store.set_media(sid, state).await?;
    }
    emit_room(socket, &echo.room_id, event, echo.payload).await
}

/// `#rtcio:previous-id {id}`: the sender's peers still hold connections under its old id, which
/// this server never saw leave (restarted) — send the hint it would have sent then.
async fn hint_previous_id<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    arg: Option<&RawValue>,
    limits: &mut Limits,
) -> Result<(), HandleError> {
    let old = previous_id::parse(arg)?;
    let rooms = joined_rooms(socket, sid);
    let checked = previous_id::precheck(sid, &old, rooms.len()).and_then(|()| {
        if limits.previous_ids.try_take(Instant::now()) {
            Ok(())
        } else {
            Err(previous_id::Refusal::RateLimited)
        }
    });
    let checked = match checked {
        Ok(()) => previous_id::verdict(sh.store.is_socket(&old).await?),
        Err(r) => Err(r),
    };
    if let Err(why) = checked {
        info!(%sid, %old, "previous-id hint refused: {why}");
        return Ok(());
    }
    info!(%sid, %old, rooms = rooms.len(), "peer-left hint for the sender's previous id");
    for room in &rooms {
        if let Err(e) = emit_room(socket, room, EV_PEER_LEFT, &IdOnly { id: &old }).await {
            debug!(%sid, room, "previous-id hint not delivered to everyone: {e}");
        }
    }
    Ok(())
}

async fn on_disconnecting<A: Adapter>(
    sh: &Shared<A>,
    socket: &SocketRef<A>,
    sid: &str,
    rooms: Vec<String>,
) -> Result<(), HandleError> {
    // Best effort throughout: one failed step must not stop the others.
    let mut first_err: Option<HandleError> = None;
    let mut note = |r: Result<(), HandleError>| match r {
        Ok(()) => {}
        // A broadcast reports members that closed at the same moment (a room emptying at once);
        // the others still got it. Expected, not worth a warning.
        Err(HandleError::Adapter(e)) => {
            debug!(%sid, "leave announcement not delivered to everyone: {e}")
        }
        Err(e) => {
            warn!(%sid, "leave step failed: {e}");
            first_err.get_or_insert(e);
        }
    };
    // A join of one of these rooms either completes before (and is told we left) or starts after
    // we are out of the room (and never hears of us).
    let held = match hold_rooms(sh, sid, &rooms).await {
        Ok(h) => Some(h),
        Err(e) => {
            // The announcements matter more than the ordering: go on without the leases.
            if let Some(more) = LEASE_LOG.allow(Instant::now()) {
                warn!(%sid, more, "leaving without the room leases: {e}");
            }
            None
        }
    };
    // rtc.io-server core hook first: the P2P layer's hint.
    for room in &rooms {
        note(emit_room(socket, room, EV_PEER_LEFT, &IdOnly { id: sid }).await);
    }
    // Then the room server's hook.
    note(sh.store.forget_media(sid).await.map_err(Into::into));
    for room in &rooms {
        note(emit_room(socket, room, "user-disconnected", &IdOnly { id: sid }).await);
        // socketioxide drops the rooms only after this hook; leave now, under the lock, so the
        // next joiner's backfill does not list us.
        socket.leave(room.clone());
        match live_members(&sh.io, room).await {
            Ok(m) if m.is_empty() => {
                note(sh.store.set_password(room, None).await.map_err(Into::into))
            }
            Ok(_) => {}
            Err(e) => note(Err(e)),
        }
    }
    if let Some(h) = held {
        h.release(&sh.store, sid).await;
    }
    note(
        sh.store
            .forget_socket(sid, &rooms)
            .await
            .map_err(Into::into),
    );
    debug!(%sid, rooms = rooms.len(), "socket left");
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn room_locks_serialise_one_room_and_forget_idle_ones() {
        let locks = RoomLocks::default();
        let held = locks.lock("r").await;
        assert!(locks.lock("r").now_or_never().is_none(), "second holder");
        // Other rooms are independent.
        let other = locks.lock("s").now_or_never().expect("room s is free");
        drop(other);
        assert_eq!(locks.len(), 1, "only the held room stays");
        drop(held);
        assert_eq!(locks.len(), 0);
        // A repeated room in one leave is locked once, not twice (which would deadlock).
        let rooms = ["b".to_string(), "a".to_string(), "b".to_string()];
        let all = locks.lock_all(&rooms).now_or_never().expect("free rooms");
        assert_eq!(all.len(), 2);
        assert!(locks.lock("a").now_or_never().is_none());
        drop(all);
        assert_eq!(locks.len(), 0);
    }
}
