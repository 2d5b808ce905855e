//! Two ICE agents (rtc-ice, as webrtc-rs drives them) joining over a simulated network: a
//! virtual clock and a fixed one-way delay, so the tests count round trips, not wall time. The
//! agents run with `peer.rs`'s ICE timing. What they check: both sides select a pair one
//! round trip after the checks start (the controlling side nominates on its first check, the
//! controlled side answers and keeps a nomination that comes before its own check succeeded;
//! `third_party/rtc-ice`), where webrtc-rs 0.21.1 needed a second round trip plus a check tick.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::ice::agent::agent_config::AgentConfig;
use rtc::ice::agent::{Agent, Event};
use rtc::ice::candidate::CandidateConfig;
use rtc::ice::candidate::candidate_host::CandidateHostConfig;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::sansio::Protocol;
use rtc::shared::TaggedBytesMut;

use super::{ICE_CHECKS, ice_wait};

/// One-way delay of the simulated path (the media bench's relayed condition adds 50 ms).
const ONE_WAY: Duration = Duration::from_millis(50);

/// Scheduling slack: the agents' timers fire on the millisecond.
const SLACK: Duration = Duration::from_millis(5);

struct Side {
    agent: Agent,
    addr: SocketAddr,
    selected_at: Option<Instant>,
    checks_sent: usize,
}

fn side(port: u16, controlling: bool) -> Side {
    let (attempt_interval, attempts) = ICE_CHECKS;
    let config = AgentConfig {
        check_interval: attempt_interval,
        max_binding_requests: Some(attempts),
        host_acceptance_min_wait: Some(ice_wait(rtc::ice::candidate::CandidateType::Host, false)),
        srflx_acceptance_min_wait: Some(ice_wait(
            rtc::ice::candidate::CandidateType::ServerReflexive,
            false,
        )),
        prflx_acceptance_min_wait: Some(ice_wait(
            rtc::ice::candidate::CandidateType::PeerReflexive,
            false,
        )),
        relay_acceptance_min_wait: Some(ice_wait(rtc::ice::candidate::CandidateType::Relay, false)),
        multicast_dns_mode: MulticastDnsMode::Disabled,
        is_controlling: controlling,
        ..Default::default()
    };
    let crypto = rtc::crypto::default_provider().expect("crypto provider");
    let mut agent = Agent::new(Instant::now(), Arc::new(config), crypto).expect("agent");
    let host = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: "127.0.0.1".to_owned(),
            port,
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .expect("host candidate");
    agent.add_local_candidate(host).expect("local candidate");
    Side {
        agent,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        selected_at: None,
        checks_sent: 0,
    }
}

/// A STUN Binding request (RFC 5389 message type 0x0001).
fn is_check(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] == 0 && datagram[1] == 1
}

/// Runs the join; `lose_first_controlled_check` drops the controlled side's first check (a
/// TURN permission not installed yet, or a browser whose first check beats our candidate).
/// Returns (controlling, controlled): ms from the start of the checks to each side's
/// selection, and the checks each sent until then.
fn join(lose_first_controlled_check: bool) -> ((f64, usize), (f64, usize)) {
    let mut sides = [side(40_000, true), side(40_001, false)];
    let t0 = Instant::now();
    let mut now = t0;
    let creds: Vec<(String, String)> = sides
        .iter()
        .map(|s| {
            let c = s.agent.get_local_credentials();
            (c.ufrag.clone(), c.pwd.clone())
        })
        .collect();
    let candidates: Vec<_> = sides
        .iter()
        .map(|s| s.agent.get_local_candidates()[0].clone())
        .collect();
    for (i, s) in sides.iter_mut().enumerate() {
        let other = 1 - i;
        let (ufrag, pwd) = creds[other].clone();
        s.agent
            .start_connectivity_checks(now, i == 0, ufrag, pwd)
            .expect("start");
        s.agent
            .add_remote_candidate(candidates[other].clone())
            .expect("remote candidate");
    }
    // The agents check from their next timer on, never in the instant they start (where a
    // zero acceptance wait has not passed yet).
    now += Duration::from_millis(1);
    let mut in_flight: Vec<(Instant, usize, TaggedBytesMut)> = Vec::new();
    let mut lost_one = !lose_first_controlled_check;
    let end = t0 + Duration::from_secs(3);
    while now < end && sides.iter().any(|s| s.selected_at.is_none()) {
        // Deliver what is due, then let each agent act on it and on its timers.
        let (due, later): (Vec<_>, Vec<_>) = in_flight.drain(..).partition(|m| m.0 <= now);
        in_flight = later;
        for (_, to, mut msg) in due {
            msg.now = now;
            std::mem::swap(&mut msg.transport.local_addr, &mut msg.transport.peer_addr);
            sides[to].agent.handle_read(msg).expect("read");
        }
        for s in sides.iter_mut() {
            if s.agent.poll_timeout().is_some_and(|t| t <= now) {
                s.agent.handle_timeout(now).expect("timeout");
            }
        }
        for i in 0..sides.len() {
            while let Some(msg) = sides[i].agent.poll_write() {
                if is_check(&msg.message) {
                    sides[i].checks_sent += 1;
                    if i == 1 && !lost_one {
                        lost_one = true;
                        continue;
                    }
                }
                let Some(to) = sides.iter().position(|s| s.addr == msg.transport.peer_addr) else {
                    continue;
                };
                in_flight.push((now + ONE_WAY, to, msg));
            }
            while let Some(ev) = sides[i].agent.poll_event() {
                if let Event::SelectedCandidatePairChange(..) = ev.event {
                    sides[i].selected_at.get_or_insert(now);
                }
            }
        }
        // Next instant anything happens.
        now = in_flight
            .iter()
            .map(|m| m.0)
            .chain(sides.iter_mut().filter_map(|s| s.agent.poll_timeout()))
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + Duration::from_millis(1))
            .min(end);
    }
    let ms = |s: &Side| {
        s.selected_at.map_or(f64::INFINITY, |t| {
            t.duration_since(t0).as_secs_f64() * 1000.0
        })
    };
    let [a, b] = &sides;
    ((ms(a), a.checks_sent), (ms(b), b.checks_sent))
}

fn within(ms: f64, bound: Duration) -> bool {
    ms <= (bound + SLACK).as_secs_f64() * 1000.0
}

#[test]
fn both_sides_select_one_round_trip_after_the_checks_start() {
    let ((a, a_checks), (b, b_checks)) = join(false);
    let rtt = 2 * ONE_WAY;
    assert!(
        within(a, rtt) && within(b, rtt),
        "selected after {a} ms (controlling, {a_checks} checks) and {b} ms (controlled, \
         {b_checks} checks); one round trip is {rtt:?}"
    );
}

#[test]
fn a_nomination_before_the_controlled_check_succeeds_is_kept() {
    // The controlled side's first check is lost: the controlling side's first check (with
    // USE-CANDIDATE) reaches it before any of its own checks succeeded.
    let ((a, a_checks), (b, b_checks)) = join(true);
    let rtt = 2 * ONE_WAY;
    assert!(
        within(a, rtt) && within(b, rtt + ONE_WAY),
        "selected after {a} ms (controlling, {a_checks} checks) and {b} ms (controlled, \
         {b_checks} checks); one round trip is {rtt:?}"
    );
}
