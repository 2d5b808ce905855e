//! A TURN relay in the signaling server's process (`rtcio-server --turn`), on webrtc-rs's `turn`
//! crate: UDP, relay ports from a configured range, the same short-lived HMAC credentials
//! `/ice-servers` hands out (see [`crate::ice`]), a cap on live allocations, and no relaying to
//! loopback or private addresses unless allowed (so the relay cannot be used to reach the
//! server's own network).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::net::UdpSocket;
use tracing::{info, warn};
use turn::auth::{AuthHandler, generate_auth_key};
use turn::relay::RelayAddressGenerator;
use turn::server::Server;
use turn::server::config::{ConnConfig, ServerConfig as TurnServerConfig};
use util::Conn;

use crate::ice;
use crate::impair::{Link, Schedule, Verdict};

/// How the embedded relay runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Where TURN clients reach it (UDP). Port 0 picks a free one.
    pub listen: SocketAddr,
    /// The address written into relayed candidates; `None` = the listen address, or when that
    /// is unspecified (0.0.0.0) the address of the default route (127.0.0.1 without one).
    pub relay_ip: Option<IpAddr>,
    /// Ports for relayed addresses.
    pub ports: RangeInclusive<u16>,
    /// TURN realm.
    pub realm: String,
    /// Live allocations at most (each is one relayed port).
    pub max_allocations: usize,
    /// Live allocations per credential (user name) at most: a browser in a call of N uses
    /// about N (one per peer connection).
    pub max_allocations_per_user: usize,
    /// Relay to and from loopback addresses (tests, same-machine peers).
    pub allow_loopback: bool,
    /// Relay to and from private, link-local and CGNAT ranges (a LAN relay).
    pub allow_private: bool,
    /// Tests and benchmarks: impair every packet a relayed port sends (rate cap, delay,
    /// jitter, loss), each allocation on its own link whose clock starts with it. Run both
    /// ends relay-only, so each direction of a call crosses one relayed port.
    pub impairment: Schedule,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 3478)),
            relay_ip: None,
            ports: 49152..=65535,
            realm: "rtcio".to_string(),
            max_allocations: 1000,
            max_allocations_per_user: 32,
            allow_loopback: false,
            allow_private: false,
            impairment: Schedule::default(),
        }
    }
}

/// Which peer addresses the relay may exchange packets with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Loopback allowed.
    pub allow_loopback: bool,
    /// Private / link-local / CGNAT / unique-local allowed.
    pub allow_private: bool,
}

impl PeerPolicy {
    /// Whether packets may be relayed to or from `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        match ip {
            IpAddr::V4(v4) => {
                if v4.is_broadcast() || v4.octets()[0] == 0 {
                    return false;
                }
                if v4.is_loopback() {
                    return self.allow_loopback;
                }
                let o = v4.octets();
                let cgnat = o[0] == 100 && (64..128).contains(&o[1]);
                if v4.is_private() || v4.is_link_local() || cgnat {
                    return self.allow_private;
                }
                true
            }
            IpAddr::V6(v6) => {
                if v6.is_loopback() {
                    return self.allow_loopback;
                }
                let seg = v6.segments()[0];
                let unique_local = seg & 0xfe00 == 0xfc00;
                let link_local = seg & 0xffc0 == 0xfe80;
                if unique_local || link_local {
                    return self.allow_private;
                }
                true
            }
        }
    }
}

/// What the relay has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Allocations alive now.
    pub allocations: usize,
    /// Allocations refused because the cap was reached.
    pub refused_allocations: u64,
    /// Bytes relayed from peers to clients and from clients to peers.
    pub bytes_relayed: u64,
    /// Packets dropped because the peer address is not allowed.
    pub blocked_packets: u64,
    /// Packets the impairment layer dropped (loss and full queues).
    pub impaired_drops: u64,
}

#[derive(Default)]
struct Counters {
    live: AtomicUsize,
    /// Live allocations per user name.
    per_user: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The user name the latest Allocate request authenticated with. The `turn` crate handles
    /// one listening socket's requests one after another on one task and calls the
    /// authenticator right before it asks for the relayed port, so this names the allocation's
    /// owner (the crate does not pass it on).
    last_user: std::sync::Mutex<Option<String>>,
    refused: AtomicU64,
    bytes: AtomicU64,
    blocked: AtomicU64,
    impaired_drops: AtomicU64,
    last_block_log: std::sync::Mutex<Option<Instant>>,
}

impl Counters {
    fn blocked(&self, peer: SocketAddr) {
        self.blocked.fetch_add(1, Ordering::Relaxed);
        // One line per 10 s at most: a client probing private addresses must not flood the log.
        let Ok(mut last) = self.last_block_log.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            warn!(%peer, "TURN: not relaying to or from a loopback/private address (see --turn-allow-private)");
        }
    }
}

/// Why the relay did not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Binding the TURN port failed.
    #[error("cannot listen for TURN on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration was refused.
    #[error("invalid TURN relay configuration: {0}")]
    Config(String),
    /// The `turn` crate failed.
    #[error("TURN relay: {0}")]
    Turn(#[from] turn::Error),
}

/// A running relay; [`TurnRelay::close`] stops it.
pub struct TurnRelay {
    server: Server,
    addr: SocketAddr,
    relay_ip: IpAddr,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for TurnRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnRelay")
            .field("addr", &self.addr)
            .field("relay_ip", &self.relay_ip)
            .finish()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks `<expiry>[:<user>]` usernames against the shared secret.
struct TimeLimitedAuth {
    secret: String,
    now: fn() -> u64,
    counters: Arc<Counters>,
}

impl AuthHandler for TimeLimitedAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        if let Err(e) = ice::check_username(username, (self.now)()) {
            tracing::debug!(%src_addr, %e, "TURN: credentials refused");
            return Err(turn::Error::Other(e.to_string()));
        }
        if let Ok(mut last) = self.counters.last_user.lock() {
            *last = Some(username.to_string());
        }
        let password = ice::password(&self.secret, username);
        Ok(generate_auth_key(username, realm, &password))
    }
}

/// Binds relayed ports in the configured range and wraps them in [`GuardedConn`].
struct PortRange {
    bind_ip: IpAddr,
    relay_ip: IpAddr,
    ports: RangeInclusive<u16>,
    max_allocations: usize,
    max_per_user: usize,
    policy: PeerPolicy,
    counters: Arc<Counters>,
    impairment: Schedule,
}

#[async_trait]
impl RelayAddressGenerator for PortRange {
    fn validate(&self) -> Result<(), turn::Error> {
        if self.ports.is_empty() || *self.ports.start() == 0 {
            return Err(turn::Error::Other("empty relay port range".into()));
        }
        Ok(())
    }

    async fn allocate_conn(
        &self,
        use_ipv4: bool,
        requested_port: u16,
    ) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        if !use_ipv4 {
            return Err(turn::Error::Other("IPv6 relaying is not offered".into()));
        }
        let user = self
            .counters
            .last_user
            .lock()
            .ok()
            .and_then(|u| u.clone())
            .unwrap_or_default();
        let slot = Slot::take(
            &self.counters,
            self.max_allocations,
            user,
            self.max_per_user,
        )
        .ok_or_else(|| {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            turn::Error::Other("allocation quota reached".into())
        })?;
        let (lo, hi) = (*self.ports.start(), *self.ports.end());
        let span = u32::from(hi - lo) + 1;
        let mut socket = None;
        if requested_port != 0 && (lo..=hi).contains(&requested_port) {
            socket = bind_udp(SocketAddr::new(self.bind_ip, requested_port)).ok();
        }
        // Random probes first (ports are not predictable), then a sweep so a nearly full range
        // still finds its last free port.
        for _ in 0..16 {
            if socket.is_some() {
                break;
            }
            let port = lo + (rand::random::<u32>() % span) as u16;
            socket = bind_udp(SocketAddr::new(self.bind_ip, port)).ok();
        }
        let first = rand::random::<u32>() % span;
        for i in 0..span {
            if socket.is_some() {
                break;
            }
            let port = lo + ((first + i) % span) as u16;
            socket = bind_udp(SocketAddr::new(self.bind_ip, port)).ok();
        }
        let socket = socket.ok_or_else(|| turn::Error::Other("no free relay port".into()))?;
        let mut relay_addr = socket
            .local_addr()
            .map_err(|e| turn::Error::Other(e.to_string()))?;
        relay_addr.set_ip(self.relay_ip);
        let socket = Arc::new(socket);
        let link = (!self.impairment.is_empty()).then(|| {
            let seed = u64::from(relay_addr.port()) ^ rand::random::<u64>();
            let start = Instant::now();
            Impaired {
                start,
                link: std::sync::Mutex::new(Link::new(self.impairment.clone(), seed)),
                line: DelayLine::spawn(socket.clone(), start, self.counters.clone()),
            }
        });
        let conn = GuardedConn {
            inner: socket,
            policy: self.policy,
            counters: self.counters.clone(),
            link,
            _slot: slot,
        };
        Ok((Arc::new(conn), relay_addr))
    }
}

/// One live allocation in the count; released when its relayed socket is dropped.
struct Slot(Arc<Counters>, String);

impl Slot {
    /// One allocation of `user`, if neither the total nor the user's quota is used up.
    fn take(counters: &Arc<Counters>, max: usize, user: String, per_user: usize) -> Option<Slot> {
        let mut users = counters.per_user.lock().ok()?;
        let mine = users.get(&user).copied().unwrap_or(0);
        if mine >= per_user {
            return None;
        }
        counters
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        users.insert(user.clone(), mine + 1);
        Some(Slot(counters.clone(), user))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut users) = self.0.per_user.lock()
            && let Some(n) = users.get_mut(&self.1)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(&self.1);
            }
        }
    }
}

/// A relayed UDP port that only talks to allowed peers and counts what it relays.
struct GuardedConn {
    inner: Arc<UdpSocket>,
    policy: PeerPolicy,
    counters: Arc<Counters>,
    /// The impaired link this port sends on.
    link: Option<Impaired>,
    _slot: Slot,
}

/// The impaired link of one relayed port: the link model, when it started, and the delay line
/// that sends what the model delays.
struct Impaired {
    start: Instant,
    link: std::sync::Mutex<Link>,
    line: DelayLine,
}

/// Sends delayed packets at their due time, in due-time order and, for equal due times, in
/// the order they were handed over. A task per packet (what this was) let two packets due in
/// the same millisecond leave in either order: a delay-only link reordered a keyframe's first
/// packets, which a real fixed-delay path never does (jitter still reorders, as it should).
struct DelayLine {
    tx: tokio::sync::mpsc::UnboundedSender<(Duration, Vec<u8>, SocketAddr)>,
}

impl DelayLine {
    fn spawn(socket: Arc<UdpSocket>, start: Instant, counters: Arc<Counters>) -> DelayLine {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<(Duration, Vec<u8>, SocketAddr)>();
        tokio::spawn(async move {
            let mut due: std::collections::BTreeMap<(Duration, u64), (Vec<u8>, SocketAddr)> =
                std::collections::BTreeMap::new();
            let mut n = 0u64;
            let mut open = true;
            while open || !due.is_empty() {
                let next = due.keys().next().map(|(at, _)| *at);
                let wake = async {
                    match next {
                        Some(at) => {
                            tokio::time::sleep_until(tokio::time::Instant::from_std(start + at))
                                .await
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    got = rx.recv(), if open => match got {
                        Some((at, data, to)) => {
                            due.insert((at, n), (data, to));
                            n += 1;
                        }
                        None => open = false,
                    },
                    () = wake => {}
                }
                // Whatever woke us, send what is due: a steady stream of new packets must not
                // hold back the ones already waiting.
                while let Ok((at, data, to)) = rx.try_recv() {
                    due.insert((at, n), (data, to));
                    n += 1;
                }
                let now = start.elapsed();
                while let Some(entry) = due.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let (data, to) = entry.remove();
                    if let Ok(sent) = socket.send_to(&data, to).await {
                        counters.bytes.fetch_add(sent as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        DelayLine { tx }
    }

    /// Queues `data` for `to` at `at` (from the link's start).
    fn send_at(&self, at: Duration, data: &[u8], to: SocketAddr) {
        let _ = self.tx.send((at, data.to_vec(), to));
    }
}

#[async_trait]
impl Conn for GuardedConn {
    async fn connect(&self, addr: SocketAddr) -> util::Result<()> {
        Ok(self.inner.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> util::Result<usize> {
        Ok(self.inner.recv(buf).await?)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            if self.policy.allows(from.ip()) {
                self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                return Ok((n, from));
            }
            self.counters.blocked(from);
        }
    }

    async fn send(&self, buf: &[u8]) -> util::Result<usize> {
        Ok(self.inner.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> util::Result<usize> {
        if !self.policy.allows(target.ip()) {
            self.counters.blocked(target);
            // Reported as sent: the allocation must not treat a refused peer as a socket error.
            return Ok(buf.len());
        }
        if let Some(imp) = &self.link {
            let now = imp.start.elapsed();
            let verdict = imp
                .link
                .lock()
                .map(|mut l| l.on_packet(now, buf.len()))
                .unwrap_or(Verdict::SendAt(now));
            match verdict {
                Verdict::Lost | Verdict::QueueFull => {
                    self.counters.impaired_drops.fetch_add(1, Ordering::Relaxed);
                    return Ok(buf.len());
                }
                // Through the line even when due now: a packet must not overtake one queued
                // before it.
                Verdict::SendAt(at) => {
                    imp.line.send_at(at, buf, target);
                    return Ok(buf.len());
                }
            }
        }
        let n = self.inner.send_to(buf, target).await?;
        self.counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn local_addr(&self) -> util::Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> util::Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

/// Socket buffers of the relay's UDP sockets. The default (~208 KiB) overflows under bursts
/// at a few hundred Mbit/s (seen in the relay bench: drops at the listening socket where coturn,
/// which raises its buffers, had none); the kernel caps this at `net.core.rmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` with [`SOCKET_BUFFER`]-sized buffers (best effort).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// The source address the default route would use (no packet is sent); loopback without one.
fn default_route_ip() -> IpAddr {
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| {
            s.connect((Ipv4Addr::new(192, 0, 2, 1), 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

impl TurnRelay {
    /// Starts a relay that accepts credentials made with `secret`.
    pub async fn start(config: &RelayConfig, secret: &str) -> Result<TurnRelay, RelayError> {
        if secret.is_empty() {
            return Err(RelayError::Config("the TURN secret is empty".into()));
        }
        if config.ports.is_empty() || *config.ports.start() == 0 {
            return Err(RelayError::Config(format!(
                "relay port range {}-{} is empty",
                config.ports.start(),
                config.ports.end()
            )));
        }
        let socket = bind_udp(config.listen).map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        let addr = socket.local_addr().map_err(|source| RelayError::Bind {
            addr: config.listen,
            source,
        })?;
        let relay_ip = config.relay_ip.unwrap_or_else(|| {
            if addr.ip().is_unspecified() {
                default_route_ip()
            } else {
                addr.ip()
            }
        });
        let counters = Arc::new(Counters::default());
        let generator = PortRange {
            bind_ip: addr.ip(),
            relay_ip,
            ports: config.ports.clone(),
            max_allocations: config.max_allocations,
            max_per_user: config.max_allocations_per_user.max(1),
            policy: PeerPolicy {
                allow_loopback: config.allow_loopback,
                allow_private: config.allow_private,
            },
            counters: counters.clone(),
            impairment: config.impairment.clone(),
        };
        let server = Server::new(TurnServerConfig {
            conn_configs: vec![ConnConfig {
                conn: Arc::new(socket),
                relay_addr_generator: Box::new(generator),
            }],
            realm: config.realm.clone(),
            auth_handler: Arc::new(TimeLimitedAuth {
                secret: secret.to_string(),
                now: unix_now,
                counters: counters.clone(),
            }),
            channel_bind_timeout: Duration::from_secs(600),
            alloc_close_notify: None,
        })
        .await?;
        info!(%addr, %relay_ip, ports = ?config.ports, "TURN relay listening (UDP)");
        if !config.impairment.is_empty() {
            warn!(schedule = ?config.impairment, "TURN relay impairs what it relays (test mode)");
        }
        Ok(TurnRelay {
            server,
            addr,
            relay_ip,
            counters,
        })
    }

    /// The UDP address clients send TURN requests to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address relayed candidates carry.
    pub fn relay_ip(&self) -> IpAddr {
        self.relay_ip
    }

    /// Counters since start.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            allocations: self.counters.live.load(Ordering::Acquire),
            refused_allocations: self.counters.refused.load(Ordering::Relaxed),
            bytes_relayed: self.counters.bytes.load(Ordering::Relaxed),
            blocked_packets: self.counters.blocked.load(Ordering::Relaxed),
            impaired_drops: self.counters.impaired_drops.load(Ordering::Relaxed),
        }
    }

    /// Stops relaying and frees every allocation.
    pub async fn close(&self) {
        if let Err(e) = self.server.close().await {
            warn!(%e, "TURN relay did not close cleanly");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_policy_blocks_internal_ranges_by_default() {
        let strict = PeerPolicy {
            allow_loopback: false,
            allow_private: false,
        };
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!strict.allows(blocked.parse().unwrap()), "{blocked}");
        }
        for allowed in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:1.2.3.4",
        ] {
            assert!(strict.allows(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn peer_policy_switches() {
        let lo = PeerPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        assert!(lo.allows("127.0.0.1".parse().unwrap()));
        assert!(!lo.allows("192.168.0.1".parse().unwrap()));
        let lan = PeerPolicy {
            allow_loopback: false,
            allow_private: true,
        };
        assert!(lan.allows("192.168.0.1".parse().unwrap()));
        assert!(lan.allows("fd12::1".parse().unwrap()));
        assert!(!lan.allows("127.0.0.1".parse().unwrap()));
        // Never: unspecified, multicast, broadcast.
        let all = PeerPolicy {
            allow_loopback: true,
            allow_private: true,
        };
        assert!(!all.allows("0.0.0.0".parse().unwrap()));
        assert!(!all.allows("239.1.1.1".parse().unwrap()));
        assert!(!all.allows("255.255.255.255".parse().unwrap()));
    }

    #[test]
    fn auth_refuses_expired_and_malformed_names() {
        fn at_1000() -> u64 {
            1000
        }
        let auth = TimeLimitedAuth {
            secret: "s".into(),
            now: at_1000,
            counters: Arc::new(Counters::default()),
        };
        let src: SocketAddr = "1.2.3.4:5".parse().unwrap();
        assert!(auth.auth_handle("999:bob", "r", src).is_err());
        assert!(auth.auth_handle("bob", "r", src).is_err());
        let key = auth.auth_handle("1001:bob", "r", src).unwrap();
        assert_eq!(
            key,
            generate_auth_key("1001:bob", "r", &ice::password("s", "1001:bob"))
        );
    }

    #[test]
    fn slots_are_capped_and_released() {
        let c = Arc::new(Counters::default());
        let a = Slot::take(&c, 2, "u".into(), 9).unwrap();
        let _b = Slot::take(&c, 2, "v".into(), 9).unwrap();
        assert!(Slot::take(&c, 2, "w".into(), 9).is_none());
        drop(a);
        assert!(Slot::take(&c, 2, "w".into(), 9).is_some());
    }

    #[test]
    fn slots_are_capped_per_user() {
        let c = Arc::new(Counters::default());
        let a = Slot::take(&c, 10, "u".into(), 2).unwrap();
        let _b = Slot::take(&c, 10, "u".into(), 2).unwrap();
        assert!(Slot::take(&c, 10, "u".into(), 2).is_none(), "u's third");
        assert!(Slot::take(&c, 10, "v".into(), 2).is_some(), "v is not u");
        drop(a);
        assert!(Slot::take(&c, 10, "u".into(), 2).is_some());
    }

    #[tokio::test]
    async fn the_delay_line_keeps_the_order_of_packets_due_together_and_sorts_by_due_time() {
        let out = Arc::new(bind_udp("127.0.0.1:0".parse().unwrap()).unwrap());
        let rx = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let to = rx.local_addr().unwrap();
        let counters = Arc::new(Counters::default());
        let start = Instant::now();
        let line = DelayLine::spawn(out, start, counters.clone());
        // 40 packets due in the same millisecond (a burst through a fixed delay), then one due
        // before them that was handed over last (jitter): due time first, then hand-over order.
        for i in 0..40u8 {
            line.send_at(Duration::from_millis(30), &[i], to);
        }
        line.send_at(Duration::from_millis(20), &[200], to);
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        while got.len() < 41 {
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), rx.recv_from(&mut buf))
                .await
                .expect("all packets within 5 s")
                .unwrap();
            got.push(buf[..n][0]);
        }
        let mut want = vec![200u8];
        want.extend(0..40u8);
        assert_eq!(got, want);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 41);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
