//! Room state that must be visible to every server process: member names, the rooms each socket
//! joined, the media-state cache and the room password registry. In memory for a single process,
//! in Redis when several processes share rooms.
//!
//! In Redis everything a process writes expires unless that process keeps it alive: each socket's
//! state is one hash `<prefix>:sock:<sid>` and each room password `<prefix>:pw:<room>`, all with a
//! TTL that a heartbeat task refreshes for this process's own sockets and their rooms. A process
//! that crashes (SIGKILL, power loss) therefore leaves nothing behind once the TTL has passed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::protocol::MediaState;

/// A failure of the shared store (only the Redis store can fail).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another process held the room's lease for longer than a lease lives.
    #[error("room {0:?} stayed leased by another process")]
    LeaseTimeout(String),
    /// Our lease of the room expired (and may have been taken) before we were done with it.
    #[error("room {0:?}: our lease expired before the join was answered")]
    LeaseLost(String),
}

/// How long a room lease lives in Redis when its holder dies without releasing it. A join holds it
/// for a few Redis round trips (and an adapter request, up to its 5 s timeout).
const ROOM_LEASE: Duration = Duration::from_secs(10);

/// Test-only knobs for reproducing a join that outlives its room lease (issue 15); not part of the
/// API and never set by the server itself.
#[doc(hidden)]
pub mod test_hooks {
    use std::sync::atomic::AtomicU64;

    /// Overrides [`super::ROOM_LEASE`] (milliseconds) when non-zero.
    pub static ROOM_LEASE_MS: AtomicU64 = AtomicU64::new(0);
    /// When non-zero, the next join to reach its backfill reads stalls this long (milliseconds)
    /// while holding its room lease, and sets it back to zero.
    pub static BACKFILL_STALL_MS: AtomicU64 = AtomicU64::new(0);
    /// Notified when that stall begins.
    pub static STALLED: tokio::sync::Notify = tokio::sync::Notify::const_new();
}

fn room_lease() -> Duration {
    match test_hooks::ROOM_LEASE_MS.load(Ordering::Relaxed) {
        0 => ROOM_LEASE,
        ms => Duration::from_millis(ms),
    }
}
/// Longest pause between two attempts to take a busy lease.
const LEASE_RETRY_MAX: Duration = Duration::from_millis(20);
/// Makes every lease token of this process unique.
static LEASE_SEQ: AtomicU64 = AtomicU64::new(0);

/// A room lease held in Redis, so that joins and leaves of one room on different processes do not
/// interleave. Give it back with [`Store::release_room`].
#[derive(Debug)]
pub struct RoomLease {
    key: String,
    token: String,
    room: String,
}

/// Shared room state, in memory or in Redis.
#[derive(Clone)]
pub enum Store {
    /// Single-process state.
    Memory(Arc<Mutex<MemoryState>>),
    /// State shared by every process using the same Redis and prefix.
    Redis(RedisStore),
}

/// The in-memory state.
#[derive(Debug, Default)]
pub struct MemoryState {
    sockets: HashSet<String>,
    names: HashMap<String, String>,
    rooms: HashMap<String, HashSet<String>>,
    media: HashMap<String, MediaState>,
    passwords: HashMap<String, String>,
    /// room → socket → join sequence number (the anchor lists members in join order).
    join_seq: HashMap<String, HashMap<String, u64>>,
    next_seq: u64,
}

/// Redis-backed state: plain keys under a prefix, one connection manager that reconnects itself.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// TTL of every key this process writes (refreshed by the heartbeat, see the module docs).
    ttl_ms: u64,
    /// This process's sockets and the rooms each joined: what the heartbeat keeps alive.
    local: Arc<Mutex<HashMap<String, HashSet<String>>>>,
}

/// Default TTL of a process's Redis keys: how long a crashed process's sockets stay visible.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(60);
/// Keys refreshed per pipelined round trip by the heartbeat.
const HEARTBEAT_BATCH: usize = 1000;

impl Store {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        Store::Memory(Arc::new(Mutex::new(MemoryState::default())))
    }

    /// Connects to Redis; keys are `<prefix>:…` and live `key_ttl` unless refreshed. Starts the
    /// heartbeat that refreshes this process's keys every third of `key_ttl`; it ends when the
    /// last clone of the store is dropped.
    pub async fn redis(
        client: redis::Client,
        prefix: &str,
        key_ttl: Duration,
    ) -> Result<Self, StoreError> {
        // redis-rs's 500 ms default failed room leases and socket keys under a join burst.
        let conn = ConnectionManager::new_with_config(
            client,
            redis::aio::ConnectionManagerConfig::new()
                .set_response_timeout(Some(crate::redis_driver::RESPONSE_TIMEOUT)),
        )
        .await?;
        let store = RedisStore {
            conn,
            prefix: prefix.to_string(),
            ttl_ms: (key_ttl.as_millis() as u64).max(1000),
            local: Arc::default(),
        };
        tokio::spawn(heartbeat(
            store.conn.clone(),
            store.prefix.clone(),
            store.ttl_ms,
            Arc::downgrade(&store.local),
        ));
        Ok(Store::Redis(store))
    }

    fn mem(m: &Mutex<MemoryState>) -> MutexGuard<'_, MemoryState> {
        // A panic while holding the lock cannot leave the maps half-updated in a harmful way.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a connected socket id.
    pub async fn register_socket(&self, sid: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                Self::mem(m).sockets.insert(sid.to_string());
                Ok(())
            }
            Store::Redis(r) => {
                r.locals().entry(sid.to_string()).or_default();
                let mut c = r.conn.clone();
                let key = r.sock_key(sid);
                let _: () = redis::pipe()
                    .hset(&key, "c", 1)
                    .ignore()
                    .pexpire(&key, r.ttl_ms as i64)
                    .ignore()
                    .query_async(&mut c)
                    .await?;
                Ok(())
            }
        }
    }

    /// Records a connected socket id at once when that needs no round trip (in memory); false
    /// for the shared store, which needs [`Store::register_socket`].
    pub fn register_socket_now(&self, sid: &str) -> bool {
        match self {
            Store::Memory(m) => {
                Self::mem(m).sockets.insert(sid.to_string());
                true
            }
            Store::Redis(_) => false,
        }
    }

    /// True when `id` is the id of a connected socket (on any process).
    pub async fn is_socket(&self, id: &str) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m).sockets.contains(id)),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                Ok(c.exists(r.sock_key(id)).await?)
            }
        }
    }

    /// Records that `sid` joined `room` under `name`.
    pub async fn add_member(
        &self,
        sid: &str,
        room: &str,
        name: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut s = Self::mem(m);
                match name {
                    Some(n) => s.names.insert(sid.to_string(), n.to_string()),
                    None => s.names.remove(sid),
                };
                s.rooms
                    .entry(sid.to_string())
                    .or_default()
                    .insert(room.to_string());
                s.next_seq += 1;
                let seq = s.next_seq;
                // A re-join keeps its place, like re-adding to a JS Set.
                s.join_seq
                    .entry(room.to_string())
                    .or_default()
                    .entry(sid.to_string())
                    .or_insert(seq);
                Ok(())
            }
            Store::Redis(r) => {
                r.locals()
                    .entry(sid.to_string())
                    .or_default()
                    .insert(room.to_string());
                let mut c = r.conn.clone();
                let seq: u64 = c.incr(r.key("seq"), 1u64).await?;
                let key = r.sock_key(sid);
                let mut pipe = redis::pipe();
                match name {
                    Some(n) => pipe.hset(&key, "name", n).ignore(),
                    None => pipe.hdel(&key, "name").ignore(),
                };
                // A re-join keeps its place, like re-adding to a JS Set.
                pipe.hset_nx(&key, room_field(room), seq)
                    .ignore()
                    .pexpire(&key, r.ttl_ms as i64)
                    .ignore();
                let _: () = pipe.query_async(&mut c).await?;
                Ok(())
            }
        }
    }

    /// Names of the given sockets (None when unknown or nameless), in order.
    pub async fn names(&self, sids: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        match self {
            Store::Memory(m) => {
                let s = Self::mem(m);
                Ok(sids.iter().map(|id| s.names.get(id).cloned()).collect())
            }
            Store::Redis(r) => {
                if sids.is_empty() {
                    return Ok(Vec::new());
                }
                Ok(r.field_of_each(sids, "name").await?)
            }
        }
    }

    /// Sorts `sids` into the order they joined `room` (unknown ones last, by id).
    pub async fn sort_by_join_order(
        &self,
        room: &str,
        sids: &mut [String],
    ) -> Result<(), StoreError> {
        let seqs: Vec<Option<u64>> = match self {
            Store::Memory(m) => {
                let s = Self::mem(m);
                let order = s.join_seq.get(room);
                sids.iter()
                    .map(|id| order.and_then(|o| o.get(id).copied()))
                    .collect()
            }
            Store::Redis(r) => {
                if sids.is_empty() {
                    return Ok(());
                }
                r.field_of_each(sids, &room_field(room)).await?
            }
        };
        let mut keyed: Vec<(Option<u64>, String)> =
            seqs.into_iter().zip(sids.iter().cloned()).collect();
        keyed.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        for (slot, (_, id)) in sids.iter_mut().zip(keyed) {
            *slot = id;
        }
        Ok(())
    }

    /// In-memory store only (`None` for Redis): true when sockets `a` and `b` share a joined room.
    /// Synchronous and allocation-free, for the relay's hot path.
    pub fn shares_room_now(&self, a: &str, b: &str) -> Option<bool> {
        let Store::Memory(m) = self else { return None };
        let s = Self::mem(m);
        let (Some(x), Some(y)) = (s.rooms.get(a), s.rooms.get(b)) else {
            return Some(false);
        };
        let (small, big) = if x.len() <= y.len() { (x, y) } else { (y, x) };
        Some(small.iter().any(|r| big.contains(r)))
    }

    /// True when `target` has joined any of `rooms`.
    pub async fn shares_room(&self, target: &str, rooms: &[String]) -> Result<bool, StoreError> {
        match self {
            Store::Memory(m) => {
                let s = Self::mem(m);
                Ok(s.rooms
                    .get(target)
                    .is_some_and(|joined| rooms.iter().any(|r| joined.contains(r))))
            }
            Store::Redis(r) => {
                if rooms.is_empty() {
                    return Ok(false);
                }
                let mut c = r.conn.clone();
                let fields: Vec<String> = rooms.iter().map(|room| room_field(room)).collect();
                let hits: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(r.sock_key(target))
                    .arg(fields)
                    .query_async(&mut c)
                    .await?;
                Ok(hits.iter().any(Option::is_some))
            }
        }
    }

    /// Caches the last boolean `{mic, cam}` of a socket.
    pub async fn set_media(&self, sid: &str, state: MediaState) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                Self::mem(m).media.insert(sid.to_string(), state);
                Ok(())
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let text = serde_json::to_string(&state).unwrap_or_default();
                let key = r.sock_key(sid);
                let _: () = redis::pipe()
                    .hset(&key, "media", text)
                    .ignore()
                    .pexpire(&key, r.ttl_ms as i64)
                    .ignore()
                    .query_async(&mut c)
                    .await?;
                Ok(())
            }
        }
    }

    /// Cached media states of the given sockets, in order.
    pub async fn media(&self, sids: &[String]) -> Result<Vec<Option<MediaState>>, StoreError> {
        match self {
            Store::Memory(m) => {
                let s = Self::mem(m);
                Ok(sids.iter().map(|id| s.media.get(id).copied()).collect())
            }
            Store::Redis(r) => {
                if sids.is_empty() {
                    return Ok(Vec::new());
                }
                let raw: Vec<Option<String>> = r.field_of_each(sids, "media").await?;
                Ok(raw
                    .into_iter()
                    .map(|t| t.and_then(|t| serde_json::from_str(&t).ok()))
                    .collect())
            }
        }
    }

    /// The room password, `""` when none.
    pub async fn password(&self, room: &str) -> Result<String, StoreError> {
        match self {
            Store::Memory(m) => Ok(Self::mem(m)
                .passwords
                .get(room)
                .cloned()
                .unwrap_or_default()),
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let pw: Option<String> = c.get(r.key(&format!("pw:{room}"))).await?;
                Ok(pw.unwrap_or_default())
            }
        }
    }

    /// Sets (`Some`) or drops (`None`) the room password.
    pub async fn set_password(&self, room: &str, pw: Option<&str>) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut s = Self::mem(m);
                match pw {
                    Some(p) => s.passwords.insert(room.to_string(), p.to_string()),
                    None => s.passwords.remove(room),
                };
                Ok(())
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let key = r.key(&format!("pw:{room}"));
                let _: () = match pw {
                    Some(p) => c.pset_ex(key, p, r.ttl_ms).await?,
                    None => c.del(key).await?,
                };
                Ok(())
            }
        }
    }

    /// Forgets everything about a socket that left `rooms`.
    pub async fn forget_socket(&self, sid: &str, rooms: &[String]) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                let mut s = Self::mem(m);
                for room in rooms {
                    if let Some(order) = s.join_seq.get_mut(room) {
                        order.remove(sid);
                        if order.is_empty() {
                            s.join_seq.remove(room);
                        }
                    }
                }
                s.sockets.remove(sid);
                s.names.remove(sid);
                s.rooms.remove(sid);
                s.media.remove(sid);
                Ok(())
            }
            Store::Redis(r) => {
                r.locals().remove(sid);
                let mut c = r.conn.clone();
                let _: () = c.del(r.sock_key(sid)).await?;
                Ok(())
            }
        }
    }

    /// Takes the cross-process lease of `room` for `holder`, waiting while another process holds
    /// it. `None` for the in-memory store (one process; its own room locks suffice).
    pub async fn lease_room(
        &self,
        room: &str,
        holder: &str,
    ) -> Result<Option<RoomLease>, StoreError> {
        let Store::Redis(r) = self else {
            return Ok(None);
        };
        let mut c = r.conn.clone();
        let key = r.key(&format!("lock:{room}"));
        let token = format!("{holder}:{}", LEASE_SEQ.fetch_add(1, Ordering::Relaxed));
        // A lease left by a dead process expires, so waiting longer than that means trouble.
        let lease = room_lease();
        let deadline = Instant::now() + lease + Duration::from_secs(1);
        let mut pause = Duration::from_millis(1);
        loop {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(lease.as_millis() as u64)
                .query_async(&mut c)
                .await?;
            if taken.is_some() {
                return Ok(Some(RoomLease {
                    key,
                    token,
                    room: room.to_string(),
                }));
            }
            if Instant::now() >= deadline {
                return Err(StoreError::LeaseTimeout(room.to_string()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(LEASE_RETRY_MAX);
        }
    }

    /// Fencing check: renews `lease` for a full lease time if it is still ours, else fails with
    /// [`StoreError::LeaseLost`]. A holder calls it right before it makes a change others must
    /// not see interleaved (a joiner becoming visible in the room): past a lost lease another
    /// joiner may already have read the room and be telling its members.
    pub async fn confirm_lease(&self, lease: &RoomLease) -> Result<(), StoreError> {
        let Store::Redis(r) = self else {
            return Ok(());
        };
        let mut c = r.conn.clone();
        let ours: i64 = redis::cmd("EVAL")
            .arg(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end",
            )
            .arg(1)
            .arg(&lease.key)
            .arg(&lease.token)
            .arg(room_lease().as_millis() as u64)
            .query_async(&mut c)
            .await?;
        if ours == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(lease.room.clone()))
        }
    }

    /// Gives a lease back, unless it already expired and another holder took it.
    pub async fn release_room(&self, lease: RoomLease) -> Result<(), StoreError> {
        let Store::Redis(r) = self else {
            return Ok(());
        };
        let mut c = r.conn.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                 return redis.call('DEL', KEYS[1]) else return 0 end",
            )
            .arg(1)
            .arg(&lease.key)
            .arg(&lease.token)
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Drops the cached media state of a socket (done first on disconnecting, like the anchor).
    pub async fn forget_media(&self, sid: &str) -> Result<(), StoreError> {
        match self {
            Store::Memory(m) => {
                Self::mem(m).media.remove(sid);
                Ok(())
            }
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = c.hdel(r.sock_key(sid), "media").await?;
                Ok(())
            }
        }
    }
}

impl RedisStore {
    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.prefix)
    }

    /// The hash holding one socket's state: `c` (connected), `name`, `media` and `r:<room>` =
    /// join sequence number per joined room.
    fn sock_key(&self, sid: &str) -> String {
        sock_key(&self.prefix, sid)
    }

    fn locals(&self) -> MutexGuard<'_, HashMap<String, HashSet<String>>> {
        // Updated in single steps; a panic elsewhere cannot leave it half-changed.
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One field of each socket's hash, in order (one pipelined round trip).
    async fn field_of_each<T: redis::FromRedisValue>(
        &self,
        sids: &[String],
        field: &str,
    ) -> Result<Vec<Option<T>>, StoreError> {
        let mut pipe = redis::pipe();
        for id in sids {
            pipe.hget(self.sock_key(id), field);
        }
        let mut c = self.conn.clone();
        Ok(pipe.query_async(&mut c).await?)
    }
}

fn sock_key(prefix: &str, sid: &str) -> String {
    format!("{prefix}:sock:{sid}")
}

/// The field of a socket's hash that records its membership of `room`.
fn room_field(room: &str) -> String {
    format!("r:{room}")
}

/// The keys that must outlive the next heartbeat: every local socket's hash and the passwords of
/// the rooms they are in.
fn live_keys(prefix: &str, local: &HashMap<String, HashSet<String>>) -> Vec<String> {
    let rooms: HashSet<&String> = local.values().flatten().collect();
    local
        .keys()
        .map(|sid| sock_key(prefix, sid))
        .chain(rooms.into_iter().map(|room| format!("{prefix}:pw:{room}")))
        .collect()
}

/// Refreshes the TTL of this process's keys every third of the TTL (two missed beats are
/// survived), until the store is dropped.
async fn heartbeat(
    mut conn: ConnectionManager,
    prefix: String,
    ttl_ms: u64,
    local: Weak<Mutex<HashMap<String, HashSet<String>>>>,
) {
    let period = Duration::from_millis(ttl_ms / 3);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let keys = {
            let Some(local) = local.upgrade() else { return };
            let map = local.lock().unwrap_or_else(|p| p.into_inner());
            live_keys(&prefix, &map)
        };
        for chunk in keys.chunks(HEARTBEAT_BATCH) {
            let mut pipe = redis::pipe();
            for k in chunk {
                // PEXPIRE on a missing key (a room without a password) does nothing.
                pipe.pexpire(k, ttl_ms as i64).ignore();
            }
            let r: Result<(), _> = pipe.query_async(&mut conn).await;
            if let Err(e) = r {
                // Rate-limited by the period; the next beat retries.
                tracing::warn!("redis key heartbeat failed: {e}");
                break;
            }
        }
    }
}
