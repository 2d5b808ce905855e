//! One task per remote peer: owns its RTCPeerConnection, the ctrl channel and the named channels,
//! and handles inbound signals, local changes, connection states and timers strictly one at a
//! time (the JS per-source promise chain, with our own offers in the same queue).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, Registry as InterceptorRegistry,
    SettingEngineBuilder, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};

use crate::bwe::{BandwidthEstimate, PublishedGcc};
use crate::channel::{BroadcastChannel, Channel, ChannelError, ChannelOptions};
use crate::listeners::{Event, Origin};
use crate::peer_media::{Attach, PeerMedia};
use crate::proto::backpressure::CtrlQueue;
use crate::proto::channel_id::{CTRL_ID, CTRL_LABEL, channel_id, channel_label, collision_message};
use crate::proto::channel_sync::{self, RemoteChannels};
use crate::proto::envelope::{self, Candidate, Description, SdpKind, Signal};
use crate::proto::negotiation::{BreakAction, Negotiator, RemoteAction, SignalingState};
use crate::proto::watchdog::{LinkState, Watchdog, WatchdogAction};
use crate::socket::{Shared, SocketCmd};

/// Work for a peer task.
pub(crate) enum PeerCmd {
    /// An inbound `#rtcio:message` from this peer.
    Signal(Signal),
    /// `#rtcio:peer-left` for this peer.
    Hint,
    /// An encoded ctrl envelope to send.
    Ctrl(String),
    /// Attach a named channel (or return the existing one).
    Attach {
        name: String,
        opts: ChannelOptions,
        parent: Option<BroadcastChannel>,
        reply: Option<oneshot::Sender<Result<Channel, ChannelError>>>,
    },
    /// Signaling came back with the same socket id: restart ICE if unhealthy.
    SignalingReconnected,
    /// The application asked for an ICE restart (renegotiation) with this peer.
    RestartIce,
    /// Statistics summary.
    Stats(oneshot::Sender<crate::stats::PeerStats>),
    /// Tear down now (graceful close of the socket, or a replacement peer).
    Close(Option<oneshot::Sender<()>>),
    /// Our socket id changed (or the remote's did): this connection is kept for its media but
    /// never signaled again; `rekey` tells an rtcio remote our new id.
    Stale {
        rekey: Option<String>,
    },
    /// A stale connection is replaced: tear down; `quiet` (same remote id as its replacement)
    /// skips what would undo the replacement (`peer-disconnect`, per-peer listeners).
    Retire {
        quiet: bool,
    },
    /// Send a local stream (emitted, or replayed).
    AttachStream(crate::stream::LocalStream),
    /// A local stream's tracks changed.
    StreamChanged(crate::stream::LocalStream),
    /// webrtc-rs started a remote track (first RTP packet).
    Track(Arc<dyn webrtc::media_stream::track_remote::TrackRemote>),
    /// Send a PLI for the remote track on this mid.
    RequestKeyframe(String),
    Pc(PcEvent),
    CtrlEvent(DataChannelEvent),
    /// A data channel webrtc-rs announced (in-band from the remote, or a twin of ours).
    Announced(Arc<dyn DataChannel>),
    MaybeOffer,
}

pub(crate) enum PcEvent {
    Candidate(RTCIceCandidateInit),
    Link(LinkState),
    GatheringComplete,
}

/// What the socket keeps per peer.
pub(crate) struct PeerHandle {
    pub tx: mpsc::UnboundedSender<PeerCmd>,
    pub generation: u64,
}

struct Handler {
    tx: mpsc::UnboundedSender<PeerCmd>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(c) => {
                let _ = self.tx.send(PeerCmd::Pc(PcEvent::Candidate(c)));
            }
            Err(e) => debug!("unserialisable local candidate: {e}"),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(PeerCmd::Pc(PcEvent::GatheringComplete));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let link = match state {
            RTCPeerConnectionState::New => LinkState::New,
            RTCPeerConnectionState::Connecting => LinkState::Connecting,
            RTCPeerConnectionState::Connected => LinkState::Connected,
            RTCPeerConnectionState::Disconnected => LinkState::Disconnected,
            RTCPeerConnectionState::Failed => LinkState::Failed,
            RTCPeerConnectionState::Closed => LinkState::Closed,
            _ => return,
        };
        let _ = self.tx.send(PeerCmd::Pc(PcEvent::Link(link)));
    }

    async fn on_track(&self, track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>) {
        let _ = self.tx.send(PeerCmd::Track(track));
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // Sorted out by the peer task: twins of our negotiated channels are kept, in-band
        // channels (rtc.io never uses them; the JS closes them at once) are closed.
        let _ = self.tx.send(PeerCmd::Announced(dc));
    }
}

/// Everything a peer task starts with.
pub(crate) struct PeerStart {
    pub remote: String,
    pub polite: bool,
    pub generation: u64,
    pub shared: Arc<Shared>,
    pub socket_tx: mpsc::UnboundedSender<SocketCmd>,
    pub broadcasts: Vec<BroadcastChannel>,
    pub first: Option<Signal>,
}

/// Spawns the peer task and returns its handle.
pub(crate) fn spawn(start: PeerStart) -> PeerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = PeerHandle {
        tx: tx.clone(),
        generation: start.generation,
    };
    tokio::spawn(run(start, tx, rx));
    handle
}

struct Peer {
    remote: String,
    generation: u64,
    shared: Arc<Shared>,
    socket_tx: mpsc::UnboundedSender<SocketCmd>,
    self_tx: mpsc::UnboundedSender<PeerCmd>,
    pc: Arc<dyn PeerConnection>,
    ctrl: Arc<dyn DataChannel>,
    ctrl_open: bool,
    ctrl_closed: bool,
    ctrl_queue: CtrlQueue,
    connected_fired: bool,
    negotiator: Negotiator,
    sig: SignalingState,
    remote_described: bool,
    early_candidates: VecDeque<RTCIceCandidateInit>,
    restart_ice: bool,
    link: LinkState,
    watchdog: Watchdog,
    glare_deadline: Option<Instant>,
    channels: HashMap<u16, Channel>,
    /// Which of our channels the remote has created (early data is lost otherwise).
    remote_channels: RemoteChannels,
    /// The remote is an rtc.io JS peer (its SDP does not announce channels).
    js_remote: bool,
    /// Our channels by webrtc-rs handle id, to recognise announced twins.
    by_handle: HashMap<usize, Channel>,
    /// Twin handles of the ctrl channel, kept alive (dropping one unregisters id 0's events).
    ctrl_twins: Vec<Arc<dyn DataChannel>>,
    broadcasts: Vec<BroadcastChannel>,
    replayed: bool,
    done: bool,
    last_sample: Option<crate::stats::Sample>,
    offers_sent: u64,
    glares: u64,
    media: PeerMedia,
    /// Send-side bandwidth estimate (congestion control on).
    estimate: Option<Arc<BandwidthEstimate>>,
    /// From before a socket id change: no signaling, no ICE restart (proto::handover).
    stale: bool,
    /// Cleanup leaves the remote id's listeners and `peer-disconnect` to its replacement.
    quiet: bool,
    /// First media reported to the socket (for the handover).
    media_reported: bool,
    /// Keyframes of our video asked for when the connection first came up.
    keyframes_asked: bool,
}

/// A peer connection, its send-side estimate (congestion control on), the capture instants
/// its sender reports are made from and the repair round trip its NACK generator measures.
type BuiltPc = (
    Arc<dyn PeerConnection>,
    Option<Arc<BandwidthEstimate>>,
    Arc<crate::capture_sr::CaptureTimes>,
    Arc<crate::nack_limit::SharedRtt>,
);

async fn build_pc(shared: &Shared, tx: mpsc::UnboundedSender<PeerCmd>) -> Result<BuiltPc, String> {
    let se = SettingEngineBuilder::new()
        // Answering as DTLS server: Chromium's first ctrl message was lost 2–3 times in 10 otherwise.
        .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server)
        // Advertise a=max-message-size (262144) so browsers accept messages above 64 KiB.
        .with_sctp_max_message_size(
            rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize::Unbounded,
        )
        // mDNS needs a multicast route that loopback-only hosts do not have.
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
    let se = ice_timing(se, shared.opts.relay_only).build();
    let mut media = MediaEngine::default();
    crate::peer_media::register_codecs(&mut media)?;
    let captures = Arc::new(crate::capture_sr::CaptureTimes::default());
    let repair = Arc::new(crate::nack_limit::SharedRtt::default());
    let (registry, estimate) =
        interceptors(&shared.opts.congestion, &mut media, &captures, &repair)?;
    let registry = registry
        // Last in the chain: keyframe requests reach the application.
        .with(
            rtc::interceptor::Slot::from(14_000),
            crate::peer_media::KeyframeRequestForwarder::default(),
        );
    let policy = if shared.opts.relay_only {
        rtc::peer_connection::configuration::RTCIceTransportPolicy::Relay
    } else {
        rtc::peer_connection::configuration::RTCIceTransportPolicy::All
    };
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(shared.opts.ice_servers.resolve())
        .with_ice_transport_policy(policy)
        .build();
    let addrs: Vec<String> = shared
        .bind_addrs
        .iter()
        .map(|ip| format!("{ip}:0"))
        .collect();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_setting_engine(se)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { tx }))
        .with_udp_addrs(addrs)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    Ok((Arc::new(pc), estimate, captures, repair))
}

/// How often missing packets are NACKed. webrtc-rs's default is 100 ms: a lost packet then
/// waits 50 ms on average for its first NACK, plus the round trip, and the frames behind it
/// stall long enough to count as a freeze (> 150 ms) at a 40 ms RTT. Chromium NACKs at once.
/// Each missing packet is asked for every interval, [`NACKS_PER_PACKET`] times; with
/// [`crate::bwe::CongestionConfig::paced_nacks`] (the default) again only once a repair
/// round trip has passed ([`crate::nack_pace`]).
const NACK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(20);

/// NACKs per missing packet without [`crate::bwe::CongestionConfig::paced_nacks`] (120 ms of
/// asking; our responder sends one copy per round trip whatever is asked). Asking longer (15,
/// 300 ms) was tried with that limit: bursts of 30 % loss froze 2–6× longer (packets recovered
/// late were waited for, and the playout delay grew with them). Before the limit every NACK
/// was answered: with 10 a congested link paid up to 10 copies of each lost packet; with 3 a
/// 1 s burst of 30 % loss left packets unrecovered.
const NACKS_PER_PACKET: u16 = 6;

/// NACK feedback for video, the responder (retransmits what peers NACK) and a generator at
/// [`NACK_INTERVAL`] (webrtc-rs's `configure_nack` with a shorter interval); with `repair`
/// (paced NACKs on), its repeats paced by the measured repair round trip, published there.
fn nack(
    registry: InterceptorRegistry,
    media: &mut MediaEngine,
    rtt: Arc<crate::nack_limit::SharedRtt>,
    repair: Option<Arc<crate::nack_limit::SharedRtt>>,
) -> InterceptorRegistry {
    use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RtpCodecKind};
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let registry = registry.with(
        rtc::interceptor::Slot::NackResponder,
        crate::nack_limit::LimitedNackResponder::new(rtt),
    );
    match repair {
        Some(repair) => registry.with(
            rtc::interceptor::Slot::NackGenerator,
            crate::nack_pace::PacedNackGenerator::new(NACK_INTERVAL, repair),
        ),
        None => registry.with(
            rtc::interceptor::Slot::NackGenerator,
            rtc::interceptor::NackGeneratorBuilder::new()
                .with_interval(NACK_INTERVAL)
                .with_max_nacks_per_packet(NACKS_PER_PACKET)
                .build(),
        ),
    }
}

/// webrtc-rs's default interceptors (NACK + RTX, RTCP reports, simulcast header extensions,
/// transport-wide CC feedback to the remote) plus, when enabled, the send side of congestion
/// control (TWCC sequence numbers, GCC, pacer) with its estimate published.
fn interceptors(
    cc: &crate::bwe::CongestionConfig,
    media: &mut MediaEngine,
    captures: &Arc<crate::capture_sr::CaptureTimes>,
    repair: &Arc<crate::nack_limit::SharedRtt>,
) -> Result<(InterceptorRegistry, Option<Arc<BandwidthEstimate>>), String> {
    // Measured by congestion control's feedback; without it the responder assumes 100 ms.
    let rtt = Arc::new(crate::nack_limit::SharedRtt::default());
    let registry = nack(
        InterceptorRegistry::new(),
        media,
        rtt.clone(),
        cc.paced_nacks.then(|| repair.clone()),
    );
    configure_simulcast_extension_headers(media).map_err(|e| e.to_string())?;
    // webrtc-rs's `configure_rtcp_reports`, with the sender reports on the capture clock.
    let registry = registry
        .with(
            rtc::interceptor::Slot::ReceiverReport,
            rtc::interceptor::ReceiverReportBuilder::new().build(),
        )
        .with(
            rtc::interceptor::Slot::SenderReport,
            crate::capture_sr::CaptureTimeReports::new(captures.clone()),
        )
        // Round trips for browsers that only receive from us (RTCP XR DLRR answers).
        .with(
            rtc::interceptor::Slot::from(11_500),
            crate::xr_rtt::XrRttResponder::default(),
        );
    // A receive-only Chromium sends the reference times answered above only when "rrtr" is
    // negotiated.
    media.register_feedback(
        rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
            typ: "rrtr".to_owned(),
            parameter: String::new(),
        },
        rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video,
    );
    if !cc.enabled {
        let registry = configure_twcc_receiver_only(registry, media).map_err(|e| e.to_string())?;
        return Ok((registry, None));
    }
    let estimate = Arc::new(BandwidthEstimate::new(cc.start_bps));
    // webrtc-rs's `configure_congestion_control` with TWCC feedback, but our pacer in place of
    // its single-FIFO one (`crate::pacer`; the FIFO stays selectable to compare): the same
    // feedback and header extension registrations (both in `configure_twcc_receiver_only`,
    // with the TWCC receiver that gives the remote's estimator its feedback), the estimator,
    // the pacer, the TWCC sender.
    let registry = configure_twcc_receiver_only(registry, media).map_err(|e| e.to_string())?;
    // The pacer sends probe clusters, the estimator reads them back (only with our pacer).
    // Not handed over while probing is off: the pacer would ask the log on every packet.
    let probes = (cc.priority_pacer && PROBING).then(|| estimate.probes().clone());
    let registry = if cc.priority_pacer {
        registry.with(
            rtc::interceptor::Slot::Pacer,
            crate::pacer::PriorityPacer::new(Some(estimate.clone()), probes.clone()),
        )
    } else {
        registry.with(
            rtc::interceptor::Slot::Pacer,
            rtc::interceptor::PacerBuilder::new().build(),
        )
    };
    let registry = registry
        .with(
            rtc::interceptor::Slot::CongestionControl,
            rtc::interceptor::CongestionControlBuilder::new(match probes {
                Some(p) => PublishedGcc::new(cc, estimate.clone())
                    .with_rtt(rtt)
                    .with_probes(p),
                None => PublishedGcc::new(cc, estimate.clone()).with_rtt(rtt),
            })
            .build(),
        )
        .with(
            rtc::interceptor::Slot::TwccSender,
            rtc::interceptor::TwccSenderBuilder::new().build(),
        );
    Ok((registry, Some(estimate)))
}

/// Probe clusters at the start of a call (`crate::probe`); one switch, to compare a build
/// without them. (They were off for a stop: the relay tests' `path` line went missing, which
/// turned out to be a peer-reflexive remote candidate missing from the stats report — rtc
/// change 3 — that probing's timing only made more likely.)
const PROBING: bool = true;

/// ICE check pacing: one round of checks every 50 ms (Chromium paces at ~50 ms while
/// connecting), 50 tries per pair: that keeps the 2.5 s a pair gets before it is given up above
/// the default 1.4 s, since handshakes on a busy CPU are slow.
const ICE_CHECKS: (std::time::Duration, u16) = (std::time::Duration::from_millis(50), 50);

/// How long after the checks start a pair with a `typ` candidate may be nominated. With the
/// aggressive nomination of `third_party/rtc-ice` this is also when its checks start to carry
/// USE-CANDIDATE: the first of them that succeeds is the selected pair.
fn ice_wait(typ: rtc::ice::candidate::CandidateType, relay_only: bool) -> std::time::Duration {
    use rtc::ice::candidate::CandidateType;
    use std::time::Duration;
    match typ {
        // A browser that joins us often sends its checks before its candidates arrive (and its
        // host candidates may be mDNS names we do not resolve), so the pair is often
        // peer-reflexive: webrtc-rs's 1 s wait for those was 1 s of such joins.
        CandidateType::Host | CandidateType::PeerReflexive => Duration::ZERO,
        // A host pair, if there is one, is checked in the same round: a short wait lets it win.
        CandidateType::ServerReflexive => Duration::from_millis(100),
        // Relay pairs wait a few check rounds for a direct path (no renomination in
        // webrtc-rs). Relay-only, no better pair can come: the wait was 0.5 s of every relayed
        // join. (Taken back once because a lossy relay-only CI call did not connect; that run
        // also had relayed packets waiting for the driver's next wake-up, fixed in
        // third_party/webrtc since.)
        CandidateType::Relay if relay_only => Duration::ZERO,
        CandidateType::Relay => Duration::from_millis(500),
        // Unspecified (never nominated) and types a later rtc-ice may add.
        _ => Duration::ZERO,
    }
}

/// ICE pacing and nomination closer to Chromium's than webrtc-rs's defaults (checks every
/// 200 ms, a peer-reflexive pair nominated only 1 s after the start); Chromium itself
/// nominates the first pair that works.
fn ice_timing(se: SettingEngineBuilder, relay_only: bool) -> SettingEngineBuilder {
    use rtc::ice::candidate::CandidateType;
    let (interval, attempts) = ICE_CHECKS;
    se.with_ice_connection_attempts(Some(interval), Some(attempts))
        .with_host_acceptance_min_wait(Some(ice_wait(CandidateType::Host, relay_only)))
        .with_prflx_acceptance_min_wait(Some(ice_wait(CandidateType::PeerReflexive, relay_only)))
        .with_srflx_acceptance_min_wait(Some(ice_wait(CandidateType::ServerReflexive, relay_only)))
        .with_relay_acceptance_min_wait(Some(ice_wait(CandidateType::Relay, relay_only)))
}

/// The ICE timing above on a simulated network (round trips until both sides select a pair).
#[cfg(test)]
#[path = "ice_join_sim.rs"]
mod ice_join_sim;

/// After closing a connected JS peer's connection, before our socket leaves signaling. The
/// close sends a DTLS fatal alert (third_party/rtc-dtls) that turns the browser's
/// `connectionState` `failed`; the rtc.io JS cleans up at once only if the server's peer-left
/// hint (sent when our signaling goes) arrives after that. Hint first, the JS arms a 2.5 s
/// watchdog instead. Nothing acknowledges the alert, so the order is kept by waiting: Chromium
/// took ~10 ms on an idle machine; the rest is margin for a busy one.
const LEAVE_LINGER: std::time::Duration = std::time::Duration::from_millis(250);

fn ctrl_init() -> RTCDataChannelInit {
    RTCDataChannelInit {
        ordered: true,
        negotiated: Some(CTRL_ID),
        ..RTCDataChannelInit::default()
    }
}

async fn run(
    start: PeerStart,
    self_tx: mpsc::UnboundedSender<PeerCmd>,
    mut rx: mpsc::UnboundedReceiver<PeerCmd>,
) {
    let PeerStart {
        remote,
        polite,
        generation,
        shared,
        socket_tx,
        broadcasts,
        first,
    } = start;
    let gone = |socket_tx: &mpsc::UnboundedSender<SocketCmd>| {
        let _ = socket_tx.send(SocketCmd::PeerGone {
            id: remote.clone(),
            generation,
        });
    };
    let (pc, estimate, captures, repair) = match build_pc(&shared, self_tx.clone()).await {
        Ok(built) => built,
        Err(e) => {
            warn!(peer = %remote, "cannot create a peer connection: {e}");
            gone(&socket_tx);
            return;
        }
    };
    let ctrl = match pc.create_data_channel(CTRL_LABEL, Some(ctrl_init())).await {
        Ok(dc) => dc,
        Err(e) => {
            warn!(peer = %remote, "cannot create the ctrl channel: {e}");
            let _ = pc.close().await;
            gone(&socket_tx);
            return;
        }
    };
    {
        let ctrl = ctrl.clone();
        let tx = self_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = ctrl.poll().await {
                if tx.send(PeerCmd::CtrlEvent(ev)).is_err() {
                    break;
                }
            }
        });
    }
    let jitter = 1.0 + rand::random::<f64>();
    let mut p = Peer {
        remote: remote.clone(),
        generation,
        shared: shared.clone(),
        socket_tx,
        self_tx: self_tx.clone(),
        pc,
        ctrl,
        ctrl_open: false,
        ctrl_closed: false,
        ctrl_queue: CtrlQueue::default(),
        connected_fired: false,
        negotiator: Negotiator::new(
            polite && !shared.opts.force_impolite,
            shared.opts.glare_break.mul_f64(jitter),
        ),
        sig: SignalingState::Stable,
        remote_described: false,
        early_candidates: VecDeque::new(),
        restart_ice: false,
        link: LinkState::New,
        watchdog: Watchdog::new(shared.opts.watchdog),
        glare_deadline: None,
        channels: HashMap::new(),
        remote_channels: RemoteChannels::default(),
        js_remote: false,
        by_handle: HashMap::new(),
        ctrl_twins: Vec::new(),
        broadcasts,
        replayed: false,
        done: false,
        last_sample: None,
        offers_sent: 0,
        glares: 0,
        media: PeerMedia::new(&remote, self_tx.clone(), estimate.clone(), captures, repair),
        estimate,
        stale: false,
        quiet: false,
        media_reported: false,
        keyframes_asked: false,
    };
    p.watchdog.start(std::time::Instant::now());
    info!(peer = %remote, polite, "peer created");
    if polite {
        // Existing member: transceivers for every registered stream, channels, then one
        // coalesced offer that includes m=application (PROTOCOL.md §3.5).
        p.replay_streams().await;
        p.replay_channels().await;
        p.local_change();
    }
    if let Some(sig) = first {
        p.on_signal(sig).await;
    }
    while !p.done {
        let wd = p.watchdog.deadline().map(Instant::from_std);
        let glare = p.glare_deadline;
        let held = p.media.announcement_deadline().map(Instant::from_std);
        let cmd = tokio::select! {
            cmd = rx.recv() => cmd,
            _ = sleep_opt(wd) => { p.on_watchdog_timer().await; continue; }
            _ = sleep_opt(glare) => { p.on_glare_timer().await; continue; }
            _ = sleep_opt(held) => { p.media.expire_announcements(); continue; }
        };
        let Some(cmd) = cmd else { break };
        p.handle(cmd).await;
    }
    if !p.done {
        p.cleanup().await;
    }
}

fn link_name(l: LinkState) -> &'static str {
    match l {
        LinkState::New => "new",
        LinkState::Connecting => "connecting",
        LinkState::Connected => "connected",
        LinkState::Disconnected => "disconnected",
        LinkState::Failed => "failed",
        LinkState::Closed => "closed",
    }
}

fn signaling_name(s: SignalingState) -> &'static str {
    match s {
        SignalingState::Stable => "stable",
        SignalingState::HaveLocalOffer => "have-local-offer",
        SignalingState::HaveRemoteOffer => "have-remote-offer",
        SignalingState::Other => "other",
    }
}

pub(crate) async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Peer {
    /// Tells the socket that this connection is up (`media: false`) or carries media.
    fn progress(&self, media: bool) {
        let _ = self.socket_tx.send(SocketCmd::PeerProgress {
            id: self.remote.clone(),
            generation: self.generation,
            media,
        });
    }

    fn local_id(&self) -> String {
        self.shared.id()
    }

    fn send_signal(&self, payload: Value) {
        if self.stale {
            // The remote knows us (or we know it) by an id the server no longer has.
            return;
        }
        if let Err(e) = self.shared.sio.emit(envelope::MESSAGE_EVENT, &[payload]) {
            warn!(peer = %self.remote, "cannot send signaling message: {e}");
        }
    }

    /// A local change needs negotiating; the offer is made after already queued work.
    fn local_change(&mut self) {
        if self.negotiator.on_negotiation_needed(self.sig) {
            let _ = self.self_tx.send(PeerCmd::MaybeOffer);
        }
    }

    async fn handle(&mut self, cmd: PeerCmd) {
        match cmd {
            PeerCmd::Signal(s) => self.on_signal(s).await,
            PeerCmd::Hint => {
                let action = self.watchdog.on_hint(self.link, std::time::Instant::now());
                // Our extension: a peer whose ctrl channel the remote already closed is gone.
                if action == WatchdogAction::Cleanup || (self.ctrl_closed && self.connected_fired) {
                    info!(peer = %self.remote, "peer-left hint: cleaning up");
                    self.cleanup().await;
                }
            }
            PeerCmd::Ctrl(text) => self.send_ctrl(text).await,
            PeerCmd::Attach {
                name,
                opts,
                parent,
                reply,
            } => {
                let r = self.attach(&name, opts, parent).await;
                match reply {
                    Some(tx) => {
                        let _ = tx.send(r);
                    }
                    None => {
                        if let Err(e) = r {
                            warn!(peer = %self.remote, "{e}");
                        }
                    }
                }
            }
            PeerCmd::RestartIce => {
                self.restart_ice = true;
                self.local_change();
            }
            PeerCmd::Stats(reply) => {
                let now = std::time::Instant::now();
                let report = self
                    .pc
                    .get_stats(now, webrtc::peer_connection::StatsSelector::None)
                    .await;
                let (st, sample) = crate::stats::summarize(
                    &self.remote,
                    (self.offers_sent, self.glares),
                    self.negotiator.polite(),
                    link_name(self.link),
                    signaling_name(self.sig),
                    &report,
                    self.last_sample,
                    now,
                    self.estimate.as_deref(),
                );
                self.last_sample = Some(sample);
                let _ = reply.send(st);
            }
            PeerCmd::SignalingReconnected => {
                if matches!(self.link, LinkState::Disconnected | LinkState::Failed) {
                    self.restart_ice = true;
                    self.local_change();
                }
            }
            PeerCmd::Close(done) => {
                let linger = self.leave_linger();
                self.cleanup().await;
                if let Some(linger) = linger {
                    // Our signaling goes after this (the server's peer-left hint): see
                    // LEAVE_LINGER.
                    tokio::time::sleep(linger).await;
                }
                if let Some(d) = done {
                    let _ = d.send(());
                }
            }
            PeerCmd::Stale { rekey } => {
                self.stale = true;
                self.glare_deadline = None;
                if let Some(id) = rekey {
                    self.send_ctrl(crate::proto::handover::rekey_message(&id))
                        .await;
                }
            }
            PeerCmd::Retire { quiet } => {
                self.quiet = quiet;
                self.cleanup().await;
            }
            PeerCmd::Pc(ev) => self.on_pc_event(ev).await,
            PeerCmd::CtrlEvent(ev) => self.on_ctrl_event(ev).await,
            PeerCmd::MaybeOffer => self.maybe_offer().await,
            PeerCmd::AttachStream(stream) => {
                if self.done {
                    return;
                }
                match self.media.attach(&self.pc, &self.shared, &stream).await {
                    // Already attached: the new metadata goes out unsolicited; JS receivers
                    // re-dispatch it.
                    Attach::Refresh(Some(update)) => self.send_signal(envelope::data_envelope(
                        &self.local_id(),
                        &self.remote,
                        update,
                    )),
                    Attach::Refresh(None) => {}
                    Attach::New { renegotiate } => {
                        if renegotiate {
                            self.local_change();
                        }
                    }
                }
            }
            PeerCmd::StreamChanged(stream) => {
                if !self.done && self.media.sync(&self.pc, &stream).await {
                    self.local_change();
                }
            }
            PeerCmd::Track(track) => {
                self.media.on_track(&self.pc, track).await;
                if !self.media_reported {
                    self.media_reported = true;
                    self.progress(true);
                }
            }
            PeerCmd::RequestKeyframe(mid) => self.media.request_keyframe(&mid).await,
            PeerCmd::Announced(dc) => {
                // Handles are matched by webrtc-rs's internal channel id (not the SCTP stream id).
                let hid = dc.id();
                if hid == self.ctrl.id() {
                    self.ctrl_twins.push(dc);
                } else if let Some(ch) = self.by_handle.get(&hid) {
                    ch.twin(dc);
                } else {
                    debug!(peer = %self.remote, hid, "closing an in-band data channel");
                    let _ = dc.close().await;
                }
            }
        }
    }

    async fn maybe_offer(&mut self) {
        if !self.negotiator.wants_offer(self.sig) {
            return;
        }
        let opts = if std::mem::take(&mut self.restart_ice) {
            if let Err(e) = self.pc.restart_ice().await {
                warn!(peer = %self.remote, "restart_ice: {e}");
            }
            None
        } else {
            None
        };
        debug!(peer = %self.remote, "creating offer");
        let offer = match self.pc.create_offer(opts).await {
            Ok(o) => o,
            Err(e) => {
                warn!(peer = %self.remote, "create_offer: {e}");
                return;
            }
        };
        if let Err(e) = self.pc.set_local_description(offer).await {
            warn!(peer = %self.remote, "set_local_description(offer): {e}");
            return;
        }
        self.sig = SignalingState::HaveLocalOffer;
        self.negotiator.on_offer_sent();
        self.offers_sent += 1;
        let Some(local) = self.pc.local_description().await else {
            return;
        };
        let d = Description {
            kind: SdpKind::Offer,
            sdp: channel_sync::mark_sdp(&local.sdp),
        };
        debug!(peer = %self.remote, "sending offer");
        self.send_signal(envelope::description_envelope(
            &self.local_id(),
            &self.remote,
            &d,
        ));
    }

    async fn on_signal(&mut self, sig: Signal) {
        match sig {
            Signal::Description(d) => self.on_description(d).await,
            Signal::Candidate(c) => self.on_candidate(c).await,
            Signal::MetaRequest { mid } => {
                if let Some(data) = self.media.answer(&self.shared, &mid) {
                    self.send_signal(envelope::data_envelope(
                        &self.local_id(),
                        &self.remote,
                        data,
                    ));
                }
            }
            Signal::MetaResponse { mid, events } => {
                self.media.on_metadata(&self.shared, &mid, events)
            }
        }
    }

    async fn on_description(&mut self, d: Description) {
        match self.negotiator.on_remote_description(&d, self.sig) {
            RemoteAction::IgnoreAndArm(after) => {
                self.glares += 1;
                info!(peer = %self.remote, "glare: ignoring the remote offer (impolite)");
                self.glare_deadline = Some(Instant::now() + after);
            }
            RemoteAction::DropStaleAnswer => debug!(peer = %self.remote, "stale answer dropped"),
            RemoteAction::RollbackThenApply => {
                self.glares += 1;
                info!(peer = %self.remote, "glare: rolling back our offer (polite)");
                if self.rollback().await {
                    self.apply(d).await;
                }
            }
            RemoteAction::Apply => self.apply(d).await,
        }
    }

    async fn rollback(&mut self) -> bool {
        let rb = match RTCSessionDescription::rollback(None) {
            Ok(rb) => rb,
            Err(e) => {
                warn!("rollback description: {e}");
                return false;
            }
        };
        match self.pc.set_local_description(rb).await {
            Ok(()) => {
                self.sig = SignalingState::Stable;
                true
            }
            Err(e) => {
                warn!(peer = %self.remote, "rollback failed: {e}");
                false
            }
        }
    }

    async fn apply(&mut self, d: Description) {
        let desc = match d.kind {
            // Our answer follows the offer's codec order: make it lead with what we decode.
            SdpKind::Offer => {
                RTCSessionDescription::offer(crate::proto::codec_order::prefer_h264(&d.sdp))
            }
            SdpKind::Answer => RTCSessionDescription::answer(d.sdp.clone()),
        };
        let desc = match desc {
            Ok(x) => x,
            Err(e) => {
                warn!(peer = %self.remote, "unusable remote SDP: {e}");
                return;
            }
        };
        if let Err(e) = self.pc.set_remote_description(desc).await {
            warn!(peer = %self.remote, kind = ?d.kind, "set_remote_description: {e}");
            return;
        }
        // Remote streams come from the SDP, not from on_track timing (PROTOCOL.md §5.7).
        for msid in self.media.on_remote_sdp(&self.shared, &d.sdp) {
            self.send_signal(envelope::data_envelope(
                &self.local_id(),
                &self.remote,
                crate::proto::stream_meta::request(&msid),
            ));
        }
        if self.remote_channels.on_remote_sdp(&d.sdp) {
            self.js_remote = true;
            // Not an rtcio peer: channels send as soon as they are open, as in rtc.io.
            for ch in self.channels.values() {
                ch.remote_ready();
            }
        }
        self.glare_deadline = None;
        self.remote_described = true;
        self.flush_early_candidates().await;
        match d.kind {
            SdpKind::Answer => {
                debug!(peer = %self.remote, "remote answer applied");
                self.sig = SignalingState::Stable;
                self.media.refresh_payload_types().await;
            }
            SdpKind::Offer => {
                self.sig = SignalingState::HaveRemoteOffer;
                let answer = match self.pc.create_answer(None).await {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(peer = %self.remote, "create_answer: {e}");
                        return;
                    }
                };
                if let Err(e) = self.pc.set_local_description(answer).await {
                    warn!(peer = %self.remote, "set_local_description(answer): {e}");
                    return;
                }
                self.sig = SignalingState::Stable;
                self.media.refresh_payload_types().await;
                if let Some(local) = self.pc.local_description().await {
                    let a = Description {
                        kind: SdpKind::Answer,
                        sdp: channel_sync::mark_sdp(&local.sdp),
                    };
                    debug!(peer = %self.remote, "sending answer");
                    self.send_signal(envelope::description_envelope(
                        &self.local_id(),
                        &self.remote,
                        &a,
                    ));
                }
                if !self.replayed {
                    // Newcomer: replay streams, then channels, once the first answer is out;
                    // our media goes out in a second negotiation.
                    self.replay_streams().await;
                    self.replay_channels().await;
                }
            }
        }
        if self.negotiator.wants_offer(self.sig) {
            let _ = self.self_tx.send(PeerCmd::MaybeOffer);
        }
    }

    async fn on_candidate(&mut self, c: Candidate) {
        if c.candidate.is_empty() {
            debug!(peer = %self.remote, "end of candidates");
            return;
        }
        let init = RTCIceCandidateInit {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
            ..RTCIceCandidateInit::default()
        };
        debug!(peer = %self.remote, candidate = %init.candidate, "remote candidate");
        if !self.remote_described {
            self.early_candidates.push_back(init);
            return;
        }
        self.add_candidate(init).await;
    }

    async fn add_candidate(&mut self, init: RTCIceCandidateInit) {
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            if self.negotiator.ignoring_offer() {
                debug!(peer = %self.remote, "candidate of an ignored offer: {e}");
            } else {
                warn!(peer = %self.remote, "add_ice_candidate: {e}");
            }
        }
    }

    async fn flush_early_candidates(&mut self) {
        while let Some(c) = self.early_candidates.pop_front() {
            self.add_candidate(c).await;
        }
    }

    async fn on_pc_event(&mut self, ev: PcEvent) {
        match ev {
            PcEvent::Candidate(c) => {
                debug!(peer = %self.remote, candidate = %c.candidate, "sending local candidate");
                let cand = Candidate {
                    candidate: c.candidate,
                    sdp_mid: c.sdp_mid,
                    sdp_mline_index: c.sdp_mline_index,
                    username_fragment: c.username_fragment,
                };
                self.send_signal(envelope::candidate_envelope(
                    &self.local_id(),
                    &self.remote,
                    &cand,
                ));
            }
            PcEvent::GatheringComplete => debug!(peer = %self.remote, "ICE gathering complete"),
            PcEvent::Link(state) => {
                debug!(peer = %self.remote, ?state, "connection state");
                self.link = state;
                if state == LinkState::Connected && !self.keyframes_asked {
                    self.keyframes_asked = true;
                    // The keyframe asked for here is the first that reaches the peer: the
                    // pacer probes the link with it.
                    if PROBING && let Some(e) = &self.estimate {
                        e.probes().set_ready(std::time::Instant::now());
                    }
                    self.request_local_keyframes();
                }
                match self.watchdog.on_state(state, std::time::Instant::now()) {
                    // No signaling for a stale connection: it has done its job.
                    WatchdogAction::RestartIceAndArm(_) if self.stale => {
                        info!(peer = %self.remote, "old connection failed: closing it");
                        self.cleanup().await;
                    }
                    WatchdogAction::RestartIceAndArm(_) => {
                        info!(peer = %self.remote, "connection failed: restarting ICE");
                        self.restart_ice = true;
                        self.local_change();
                    }
                    WatchdogAction::Cleanup => self.cleanup().await,
                    _ => {}
                }
            }
        }
    }

    async fn on_watchdog_timer(&mut self) {
        match self.watchdog.on_timer(self.link, std::time::Instant::now()) {
            WatchdogAction::Cleanup => {
                info!(peer = %self.remote, link = link_name(self.link), "watchdog expired");
                self.cleanup().await;
            }
            // Never connected within the connect timeout (ICE or DTLS stuck): a restart may
            // find a working pair; DTLS keeps retransmitting over it. A stale connection's
            // replacement is already being built, so it just goes.
            WatchdogAction::RestartIceAndArm(_) if self.stale => self.cleanup().await,
            WatchdogAction::RestartIceAndArm(_) => {
                info!(
                    peer = %self.remote,
                    link = link_name(self.link),
                    "not connected in time: restarting ICE"
                );
                self.restart_ice = true;
                self.local_change();
            }
            _ => {}
        }
    }

    async fn on_glare_timer(&mut self) {
        self.glare_deadline = None;
        if let BreakAction::RollbackAndApply(offer) = self.negotiator.on_break_timer(self.sig) {
            info!(peer = %self.remote, "glare deadlock: yielding to the remote offer");
            if self.rollback().await {
                self.apply(offer).await;
            }
        }
    }

    async fn send_ctrl(&mut self, text: String) {
        if self.ctrl_closed {
            return;
        }
        if self.ctrl_open && self.ctrl_queue.is_empty() {
            if let Err(e) = self.ctrl.send_text(&text).await {
                debug!(peer = %self.remote, "ctrl send failed, queued: {e}");
                self.ctrl_queue.push(text);
            }
        } else if self.ctrl_queue.push(text) {
            warn!(peer = %self.remote, "ctrl queue full: oldest envelope dropped");
        }
    }

    async fn flush_ctrl(&mut self) {
        let mut items = self.ctrl_queue.take();
        while let Some(text) = items.pop_front() {
            if let Err(e) = self.ctrl.send_text(&text).await {
                debug!(peer = %self.remote, "ctrl flush stopped: {e}");
                items.push_front(text);
                self.ctrl_queue.restore_front(items);
                return;
            }
        }
    }

    async fn on_ctrl_event(&mut self, ev: DataChannelEvent) {
        match ev {
            DataChannelEvent::OnOpen => {
                self.ctrl_open = true;
                self.flush_ctrl().await;
                if !self.connected_fired {
                    self.connected_fired = true;
                    self.progress(false);
                    info!(peer = %self.remote, "peer-connect");
                    self.shared
                        .dispatch_local("peer-connect", vec![json!({"id": self.remote})]);
                }
            }
            DataChannelEvent::OnMessage(msg) => {
                if !msg.is_string {
                    return; // binary on ctrl is ignored, as in rtc.io
                }
                let Ok(text) = std::str::from_utf8(&msg.data) else {
                    return;
                };
                if let Some(new) = crate::proto::handover::parse_rekey(text) {
                    let _ = self.socket_tx.send(SocketCmd::Rekey {
                        old: self.remote.clone(),
                        generation: self.generation,
                        new,
                    });
                    return;
                }
                if let Some(id) = channel_sync::parse_open_event(text) {
                    debug!(peer = %self.remote, id, "the remote created its end of a channel");
                    if self.remote_channels.on_open_event(id)
                        && let Some(ch) = self.channels.get(&id).cloned()
                    {
                        ch.remote_ready();
                        // Say it again: our own announcement may have been the first message on
                        // a fresh ctrl channel, which webrtc-rs sometimes loses.
                        self.send_ctrl(channel_sync::open_event(id)).await;
                    }
                    return;
                }
                match envelope::decode_ctrl(text) {
                    Ok((name, args)) => {
                        let ev = Event::new(&name, args, Origin::Peer(self.remote.clone()));
                        self.shared.listeners.dispatch(&ev);
                        if let Some(reg) = self.shared.peer_registry(&self.remote, false) {
                            reg.dispatch(&ev);
                        }
                    }
                    Err(why) => debug!(peer = %self.remote, ?why, "ctrl message dropped"),
                }
            }
            DataChannelEvent::OnClose => {
                self.ctrl_open = false;
                self.ctrl_closed = true;
                self.ctrl_queue.clear();
            }
            _ => {}
        }
    }

    /// Asks the encoders of our video for a keyframe as the connection first comes up (SRTP
    /// is keyed: what is written now reaches the peer), as Chromium's sender starts with one.
    /// The encoder of an already running stream sends deltas, and a joiner could decode
    /// nothing before its own PLI round trip: ~50 ms more to a Chromium joiner's first frame
    /// on loopback (`benches/media.rs`, `MEDIA_BENCH_TRACE=1`), one RTT more on any path.
    fn request_local_keyframes(&self) {
        let req = crate::stream::KeyframeRequest {
            peer: self.remote.clone(),
            fir: false,
        };
        for stream in self.shared.streams().registered() {
            for track in stream.tracks() {
                if track.kind() == crate::MediaKind::Video {
                    debug!(peer = %self.remote, track = track.id(), "keyframe at connect");
                    track.feed().keyframe_request(req.clone());
                }
            }
        }
    }

    async fn replay_streams(&mut self) {
        let streams = self.shared.streams().registered();
        let mut changed = false;
        for s in streams {
            if let Attach::New { renegotiate: true } =
                self.media.attach(&self.pc, &self.shared, &s).await
            {
                changed = true;
            }
        }
        if changed {
            self.local_change();
        }
    }

    async fn replay_channels(&mut self) {
        self.replayed = true;
        for b in self.broadcasts.clone() {
            if b.is_closed() {
                continue;
            }
            if let Err(e) = self
                .attach(b.name(), b.options().clone(), Some(b.clone()))
                .await
            {
                // One colliding channel must not stop the others.
                warn!(peer = %self.remote, "{e}");
            }
        }
    }

    async fn attach(
        &mut self,
        name: &str,
        opts: ChannelOptions,
        parent: Option<BroadcastChannel>,
    ) -> Result<Channel, ChannelError> {
        if self.done {
            return Err(ChannelError::NoPeer(self.remote.clone()));
        }
        let id = channel_id(name);
        if let Some(existing) = self.channels.get(&id) {
            if existing.name() == name {
                if let Some(b) = &parent {
                    b.add_member(existing.clone());
                }
                return Ok(existing.clone());
            }
            return Err(ChannelError::Collision(collision_message(
                name,
                existing.name(),
                &self.remote,
                id,
            )));
        }
        let dc = self
            .pc
            .create_data_channel(&channel_label(name), Some(opts.init(id)))
            .await
            .map_err(|e| ChannelError::Send(e.to_string()))?;
        let ch = Channel::spawn(
            name,
            &self.remote,
            id,
            opts,
            parent.as_ref().map(|b| b.inner.clone()),
        );
        // Known before webrtc-rs's announcement of a twin handle for it is handled (this task
        // is busy until we return): a twin we did not recognise would be closed, and closing
        // it closes the channel itself (same handle id).
        self.by_handle.insert(dc.id(), ch.clone());
        ch.attach(dc);
        if self.remote_channels.ready(id) {
            ch.remote_ready();
        }
        // An rtcio peer holds its data for this id until it hears that our end exists (JS peers
        // drop `#rtcio:` names on ctrl).
        self.send_ctrl(channel_sync::open_event(id)).await;
        if let Some(b) = &parent {
            b.add_member(ch.clone());
            if !self.broadcasts.iter().any(|x| x.name() == b.name()) {
                self.broadcasts.push(b.clone());
            }
        }
        self.channels.insert(id, ch.clone());
        Ok(ch)
    }

    /// How long a graceful close waits after closing a connected JS peer's connection.
    fn leave_linger(&self) -> Option<std::time::Duration> {
        (self.js_remote && self.connected_fired && self.link == LinkState::Connected && !self.done)
            .then_some(LEAVE_LINGER)
    }

    async fn cleanup(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.glare_deadline = None;
        self.ctrl_queue.clear();
        let _ = self.ctrl.close().await;
        self.media.close();
        for ch in self.channels.values() {
            ch.close();
        }
        if !self.quiet {
            for b in &self.broadcasts {
                b.peer_cleaned_up(&self.remote);
            }
        }
        if let Err(e) = self.pc.close().await {
            debug!(peer = %self.remote, "close: {e}");
        }
        if !self.quiet {
            self.shared.drop_peer_registry(&self.remote);
        }
        let _ = self.socket_tx.send(SocketCmd::PeerGone {
            id: self.remote.clone(),
            generation: self.generation,
        });
        if self.connected_fired && !self.quiet {
            info!(peer = %self.remote, "peer-disconnect");
            self.shared
                .dispatch_local("peer-disconnect", vec![json!({"id": self.remote})]);
        }
    }
}
