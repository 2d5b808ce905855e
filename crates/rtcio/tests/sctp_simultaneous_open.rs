//! webrtc-rs SCTP association set-up, simulated without sockets or clocks: both ends send an
//! INIT at once (RFC 9260 5.2.1 "INIT collision"), as Chromium does on both DTLS roles and as
//! our DTLS server does since third_party/rtc-sctp change 2 and third_party/rtc change 2.
//! When we offered (DTLS server) our SCTP only listened, so the browser's data channel opened
//! two round trips after its DTLS completed; sending our INIT too makes it one.
//!
//! Each end must end up with exactly one association (the published endpoint made a second
//! one from the peer's INIT and left its own stuck in COOKIE-WAIT), connected once, with
//! streams open and data flowing both ways; also when one of the two INITs is lost, when an
//! INIT is repeated after the association is up, and in the old set-up where one end only
//! listens.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::sctp::{
    Association, AssociationHandle, ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event,
    PayloadProtocolIdentifier, ServerConfig, StreamEvent, TransportConfig,
};
use rtc::shared::TransportProtocol;

/// One-way delay of the simulated path: the relayed bench's 50 ms.
const ONE_WAY: Duration = Duration::from_millis(50);
const STEP: Duration = Duration::from_millis(1);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// SCTP chunk type of the first chunk of a datagram (INIT is 1).
fn first_chunk_type(d: &[u8]) -> Option<u8> {
    d.get(12).copied()
}

const CT_INIT: u8 = 1;

/// One SCTP end: its endpoint and every association it holds.
struct Peer {
    name: &'static str,
    addr: SocketAddr,
    ep: Endpoint,
    assocs: HashMap<AssociationHandle, Association>,
    /// Associations the endpoint created from an incoming INIT.
    created_by_peer: usize,
    connected: usize,
    lost: usize,
    received: Vec<(u16, Vec<u8>)>,
}

impl Peer {
    /// `listen`: the endpoint has a server config (accepts an association the peer starts),
    /// as webrtc-rs's DTLS server has.
    fn new(name: &'static str, port: u16, listen: bool) -> Peer {
        let server = listen.then(|| ServerConfig::new(TransportConfig::default()).into());
        Peer {
            name,
            addr: addr(port),
            ep: Endpoint::new(
                addr(port),
                TransportProtocol::UDP,
                EndpointConfig::default().into(),
                server,
            ),
            assocs: HashMap::new(),
            created_by_peer: 0,
            connected: 0,
            lost: 0,
            received: vec![],
        }
    }

    fn connect(&mut self, now: Instant, to: SocketAddr) {
        let (ch, a) = self
            .ep
            .connect(now, ClientConfig::new(TransportConfig::default()), to)
            .expect("connect");
        self.assocs.insert(ch, a);
    }

    fn transmits(&mut self, now: Instant) -> Vec<Bytes> {
        let mut out = vec![];
        for a in self.assocs.values_mut() {
            while let Some(t) = a.poll_transmit(now) {
                if let rtc::sctp::Payload::RawEncode(c) = t.message {
                    out.extend(c);
                }
            }
        }
        out
    }

    fn receive(&mut self, now: Instant, from: SocketAddr, d: Bytes) {
        match self.ep.handle(now, from, None, d) {
            Some((ch, DatagramEvent::NewAssociation(a))) => {
                self.created_by_peer += 1;
                self.assocs.insert(ch, a);
            }
            Some((ch, DatagramEvent::AssociationEvent(e))) => {
                if let Some(a) = self.assocs.get_mut(&ch) {
                    a.handle_event(e);
                }
            }
            _ => {}
        }
    }

    fn events(&mut self) {
        for a in self.assocs.values_mut() {
            let mut readable = vec![];
            while let Some(ev) = a.poll() {
                match ev {
                    Event::Connected => self.connected += 1,
                    Event::AssociationLost { .. } => self.lost += 1,
                    Event::Stream(StreamEvent::Readable { id }) => readable.push(id),
                    _ => {}
                }
            }
            for id in readable {
                if let Ok(mut st) = a.stream(id) {
                    while let Ok(Some(c)) = st.read_sctp() {
                        let mut buf = vec![0u8; c.len()];
                        if let Ok(n) = c.read(&mut buf) {
                            buf.truncate(n);
                            self.received.push((id, buf));
                        }
                    }
                }
            }
        }
    }

    fn timeouts(&mut self, now: Instant) {
        for a in self.assocs.values_mut() {
            if a.poll_timeout().is_some_and(|t| t <= now) {
                a.handle_timeout(now);
            }
        }
    }

    /// The one association, once it is the only one and established.
    fn established(&mut self) -> Option<&mut Association> {
        if self.assocs.len() != 1 {
            return None;
        }
        self.assocs
            .values_mut()
            .next()
            .filter(|a| !a.is_handshaking() && !a.is_closed())
    }

    fn assert_one_association(&self) {
        assert_eq!(
            self.assocs.len(),
            1,
            "{}: associations (created from a peer INIT: {})",
            self.name,
            self.created_by_peer
        );
        let a = self.assocs.values().next().expect("one association");
        assert!(
            !a.is_handshaking() && !a.is_closed(),
            "{}: association established",
            self.name
        );
        assert_eq!(self.connected, 1, "{}: Connected events", self.name);
        assert_eq!(self.lost, 0, "{}: associations lost", self.name);
    }
}

/// Two ends on a path with `ONE_WAY` delay in each direction. `drop` decides, for each
/// datagram (sender index 0 = `a`, 1 = `b`, and the datagram), whether the path loses it.
struct Net {
    now: Instant,
    a: Peer,
    b: Peer,
    /// (arrival, to b?, datagram)
    wire: VecDeque<(Instant, bool, Bytes)>,
}

impl Net {
    fn new(a: Peer, b: Peer) -> Net {
        Net {
            now: Instant::now(),
            a,
            b,
            wire: VecDeque::new(),
        }
    }

    fn step(&mut self, drop: &mut dyn FnMut(usize, &Bytes) -> bool) {
        let now = self.now;
        self.a.timeouts(now);
        self.b.timeouts(now);
        for (i, out) in [self.a.transmits(now), self.b.transmits(now)]
            .into_iter()
            .enumerate()
        {
            for d in out {
                if !drop(i, &d) {
                    self.wire.push_back((now + ONE_WAY, i == 0, d));
                }
            }
        }
        while self.wire.front().is_some_and(|(t, _, _)| *t <= now) {
            let Some((_, to_b, d)) = self.wire.pop_front() else {
                break;
            };
            if to_b {
                let from = self.a.addr;
                self.b.receive(now, from, d);
            } else {
                let from = self.b.addr;
                self.a.receive(now, from, d);
            }
        }
        self.a.events();
        self.b.events();
        self.now += STEP;
    }

    /// Runs until both ends are established (or 10 s of simulated time); returns the time
    /// taken.
    fn establish(&mut self, drop: &mut dyn FnMut(usize, &Bytes) -> bool) -> Duration {
        let start = self.now;
        while self.now.duration_since(start) < Duration::from_secs(10) {
            self.step(drop);
            if self.a.established().is_some() && self.b.established().is_some() {
                break;
            }
        }
        self.now.duration_since(start)
    }

    /// Opens a stream from each end, sends one message each way and runs until both arrive.
    fn exchange(&mut self) {
        let now = self.now;
        for (p, sid, msg) in [
            (&mut self.a, 1u16, &b"from a"[..]),
            (&mut self.b, 2u16, &b"from b"[..]),
        ] {
            let name = p.name;
            let a = p
                .established()
                .unwrap_or_else(|| panic!("{name}: established"));
            let mut st = a
                .open_stream(sid, PayloadProtocolIdentifier::Binary)
                .expect("open stream");
            st.write_chunk_with_ppi(
                now,
                &Bytes::copy_from_slice(msg),
                PayloadProtocolIdentifier::Binary,
            )
            .expect("write");
        }
        for _ in 0..2_000 {
            if !self.a.received.is_empty() && !self.b.received.is_empty() {
                break;
            }
            self.step(&mut |_, _| false);
        }
        assert_eq!(self.b.received, vec![(1, b"from a".to_vec())], "a -> b");
        assert_eq!(self.a.received, vec![(2, b"from b".to_vec())], "b -> a");
    }
}

/// `a` is webrtc-rs as DTLS server (listens and, since the change, also sends INIT); `b`
/// connects like any DTLS client (webrtc-rs's endpoint there has no server config).
fn both_connect() -> Net {
    let mut net = Net::new(Peer::new("a", 5000, true), Peer::new("b", 6000, false));
    let now = net.now;
    let (ta, tb) = (net.b.addr, net.a.addr);
    net.a.connect(now, ta);
    net.b.connect(now, tb);
    net
}

#[test]
fn both_ends_sending_init_at_once_make_one_association_each() {
    let mut net = both_connect();
    let took = net.establish(&mut |_, _| false);
    net.a.assert_one_association();
    net.b.assert_one_association();
    assert_eq!(
        net.a.created_by_peer, 0,
        "a: associations made from b's INIT"
    );
    // INITs cross, then INIT ACKs, then COOKIE ECHOs: three one-way trips. With one end only
    // listening the initiator waits for the COOKIE ACK too (four, `one_end_listening_...`).
    assert!(
        took <= 3 * ONE_WAY + 10 * STEP,
        "established after {took:?} of simulated time"
    );
    net.exchange();
}

/// As in a join: our DTLS server completes half a round trip before the browser's DTLS
/// client and sends its INIT then; the browser sends its own when its DTLS completes. The
/// browser's end is up one round trip after it started (our COOKIE ECHO answers its INIT
/// ACK), not two (its INIT, our INIT ACK, its COOKIE ECHO, our COOKIE ACK).
#[test]
fn the_later_end_is_up_one_round_trip_after_its_init() {
    let mut net = Net::new(Peer::new("a", 5000, true), Peer::new("b", 6000, false));
    let (now, to) = (net.now, net.b.addr);
    net.a.connect(now, to);
    while net.now.duration_since(now) < ONE_WAY {
        net.step(&mut |_, _| false);
    }
    let (b_start, to) = (net.now, net.a.addr);
    net.b.connect(b_start, to);
    let mut b_up = None;
    for _ in 0..10_000 {
        net.step(&mut |_, _| false);
        if b_up.is_none() && net.b.established().is_some() {
            b_up = Some(net.now.duration_since(b_start));
        }
        if b_up.is_some() && net.a.established().is_some() {
            break;
        }
    }
    net.a.assert_one_association();
    net.b.assert_one_association();
    let b_up = b_up.expect("b established");
    assert!(
        b_up <= 2 * ONE_WAY + 10 * STEP,
        "b established {b_up:?} of simulated time after its INIT"
    );
    net.exchange();
}

#[test]
fn the_first_ends_init_lost_still_makes_one_association_each() {
    let mut net = both_connect();
    let mut lost = false;
    net.establish(&mut |from, d| {
        let init = first_chunk_type(d) == Some(CT_INIT);
        if from == 0 && init && !lost {
            lost = true;
            return true;
        }
        false
    });
    assert!(lost, "a's INIT was dropped");
    net.a.assert_one_association();
    net.b.assert_one_association();
    net.exchange();
}

#[test]
fn the_second_ends_init_lost_still_makes_one_association_each() {
    let mut net = both_connect();
    let mut lost = false;
    net.establish(&mut |from, d| {
        let init = first_chunk_type(d) == Some(CT_INIT);
        if from == 1 && init && !lost {
            lost = true;
            return true;
        }
        false
    });
    assert!(lost, "b's INIT was dropped");
    net.a.assert_one_association();
    net.b.assert_one_association();
    net.exchange();
}

/// A repeated INIT (a retransmission that crossed our answer, a duplicate on the path) that
/// arrives once the association is up must not tear it down or start another.
#[test]
fn an_init_repeated_after_set_up_changes_nothing() {
    let mut net = both_connect();
    let mut b_init = None;
    net.establish(&mut |from, d| {
        if from == 1 && first_chunk_type(d) == Some(CT_INIT) {
            b_init = Some(d.clone());
        }
        false
    });
    let b_init = b_init.expect("b sent an INIT");
    let (now, from) = (net.now, net.b.addr);
    net.a.receive(now, from, b_init);
    for _ in 0..(3 * ONE_WAY.as_millis()) {
        net.step(&mut |_, _| false);
    }
    net.a.assert_one_association();
    net.b.assert_one_association();
    net.exchange();
}

/// The published set-up: `a` only listens, `b` sends the one INIT.
#[test]
fn one_end_listening_still_works() {
    let mut net = Net::new(Peer::new("a", 5000, true), Peer::new("b", 6000, false));
    let (now, to) = (net.now, net.a.addr);
    net.b.connect(now, to);
    let took = net.establish(&mut |_, _| false);
    net.a.assert_one_association();
    net.b.assert_one_association();
    assert_eq!(
        net.a.created_by_peer, 1,
        "a: associations made from b's INIT"
    );
    assert!(
        took >= 4 * ONE_WAY,
        "b is up after two round trips, took {took:?}"
    );
    net.exchange();
}

/// The published set-up with `a`'s INIT ACK lost: `b` repeats its INIT after its T1 timer,
/// and that INIT belongs to the association the first one made (the published endpoint made
/// a second one, and the first stayed half-open for the life of the endpoint).
#[test]
fn one_end_listening_with_its_init_ack_lost_still_makes_one_association() {
    const CT_INIT_ACK: u8 = 2;
    let mut net = Net::new(Peer::new("a", 5000, true), Peer::new("b", 6000, false));
    let (now, to) = (net.now, net.a.addr);
    net.b.connect(now, to);
    let mut lost = false;
    net.establish(&mut |from, d| {
        if from == 0 && first_chunk_type(d) == Some(CT_INIT_ACK) && !lost {
            lost = true;
            return true;
        }
        false
    });
    assert!(lost, "a's INIT ACK was dropped");
    net.a.assert_one_association();
    net.b.assert_one_association();
    net.exchange();
}
