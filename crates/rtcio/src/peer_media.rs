//! The media half of a peer task (PROTOCOL.md §5): our streams' transceivers and senders, the
//! remote streams read from each applied SDP, metadata requests/responses, RTP readers and
//! keyframe requests. The peer task calls in here; protocol decisions live in `proto`.

use crate::interceptor_util::interceptor_types;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::sender_report::SenderReport as RtcpSenderReport;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{MediaEngine, PeerConnection};
use webrtc::rtp_transceiver::{RtpSender, RtpTransceiver};

use crate::listeners::{Event, Origin};
use crate::peer::PeerCmd;
use crate::proto::rtp_assembler::{FrameAssembler, RtpCodec};
use crate::proto::sdp_streams::{self, MediaKind, RemoteTrack as SdpTrack};
use crate::proto::stream_meta::{self, Announced, Announcements, SentStreams};
use crate::socket::Shared;
use crate::stream::{
    Feed, KeyframeRequest, LocalStream, MediaFrame, NO_PT, RemoteStream, RemoteTrack, Route,
    SenderReport, Sink,
};

/// H.264 as browsers decode it everywhere: constrained baseline, packetization-mode 1.
const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";

fn h264() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "video/H264".into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: H264_FMTP.into(),
        rtcp_feedback: vec![],
    }
}

fn opus() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/opus".into(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    }
}

/// The codecs we negotiate, in preference order: H.264 first so browsers send us what our
/// decoder handles; VP8 after it so VP8-only peers still connect (their frames arrive tagged
/// [`RtpCodec::Vp8`]).
pub(crate) fn register_codecs(media: &mut MediaEngine) -> Result<(), String> {
    let fb = |typ: &str, parameter: &str| rtc::rtp_transceiver::rtp_sender::RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    let video_fb = vec![
        fb("goog-remb", ""),
        fb("ccm", "fir"),
        fb("nack", ""),
        fb("nack", "pli"),
    ];
    let video = |mime: &str, fmtp: &str, pt: u8| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: video_fb.clone(),
        },
        payload_type: pt,
    };
    let rtx = |pt: u8, apt: u8| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "video/rtx".into(),
            clock_rate: 90_000,
            channels: 0,
            sdp_fmtp_line: format!("apt={apt}"),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    };
    let codecs = [
        (
            RTCRtpCodecParameters {
                rtp_codec: opus(),
                payload_type: 111,
            },
            RtpCodecKind::Audio,
        ),
        (video("video/H264", H264_FMTP, 102), RtpCodecKind::Video),
        (rtx(103, 102), RtpCodecKind::Video),
        (
            video(
                "video/H264",
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
                104,
            ),
            RtpCodecKind::Video,
        ),
        (rtx(105, 104), RtpCodecKind::Video),
        (video("video/VP8", "", 96), RtpCodecKind::Video),
        (rtx(97, 96), RtpCodecKind::Video),
    ];
    for (c, kind) in codecs {
        media.register_codec(c, kind).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Marks inbound keyframe requests (PLI, FIR) and sender reports for delivery to the
/// application: only it can answer a keyframe request (by encoding an IDR), and only it plays
/// a peer's tracks in sync (from the sender reports' clock mapping). Everything else inbound
/// stays with the interceptors. Placed last in the chain so the others have seen the whole
/// RTCP first.
#[derive(Default)]
pub(crate) struct KeyframeRequestForwarder {
    read: std::collections::VecDeque<TaggedPacket>,
    write: std::collections::VecDeque<TaggedPacket>,
}

fn is_keyframe_request(p: &dyn rtc::rtcp::Packet) -> bool {
    let any = p.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// A sender report as delivered to the application: its clock mapping only. Without its
/// reception report blocks (the interceptors before us used them), the packet is routed by
/// its own SSRC to the remote track it describes, not to one of our senders a block is about.
fn sender_report_alone(p: &dyn rtc::rtcp::Packet) -> Option<RtcpSenderReport> {
    let sr = p.as_any().downcast_ref::<RtcpSenderReport>()?;
    Some(RtcpSenderReport {
        ssrc: sr.ssrc,
        ntp_time: sr.ntp_time,
        rtp_time: sr.rtp_time,
        packet_count: sr.packet_count,
        octet_count: sr.octet_count,
        ..Default::default()
    })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestForwarder {
    interceptor_types!();

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let keep: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_keyframe_request(p.as_ref()))
                .cloned()
                .collect();
            // Each sender report travels alone: the endpoint routes a compound packet by the
            // first SSRC it names.
            for sr in packets
                .iter()
                .filter_map(|p| sender_report_alone(p.as_ref()))
            {
                self.read.push_back(TaggedPacket {
                    now: msg.now,
                    transport: msg.transport,
                    message: rtc::interceptor::AttributedPacket::new(Packet::Rtcp(vec![Box::new(
                        sr,
                    )]))
                    .with(Attribute::DeliverToApplication),
                });
            }
            if keep.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(keep);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// One of our tracks as sent to this peer.
struct SentTrack {
    msid: String,
    kind: MediaKind,
    feed: Arc<Feed>,
    sink: Arc<Sink>,
    sender: Arc<dyn RtpSender>,
    transceiver: Arc<dyn RtpTransceiver>,
}

/// A remote stream and what was dispatched for it.
struct Remote {
    stream: RemoteStream,
    /// Event name → args last dispatched (each is dispatched once unless the sender updates it).
    dispatched: HashMap<String, Vec<Value>>,
}

/// What attaching a stream did.
pub(crate) enum Attach {
    /// First time for this peer: m-lines were added if the stream has tracks.
    New { renegotiate: bool },
    /// Already attached: the metadata to push (none if the stream is untracked).
    Refresh(Option<Value>),
}

/// Media state of one peer.
pub(crate) struct PeerMedia {
    remote: String,
    self_tx: mpsc::UnboundedSender<PeerCmd>,
    sent: Vec<SentTrack>,
    sent_streams: SentStreams,
    attached: HashMap<String, LocalStream>,
    remote_sent: BTreeMap<String, Vec<SdpTrack>>,
    remotes: HashMap<String, Remote>,
    routes: HashMap<String, Arc<Route>>,
    remote_tracks: HashMap<String, Arc<dyn TrackRemote>>,
    /// Send-side bandwidth estimate of this peer connection (congestion control on).
    estimate: Option<Arc<crate::bwe::BandwidthEstimate>>,
    /// Capture instants of written frames, for this connection's sender reports.
    captures: Arc<crate::capture_sr::CaptureTimes>,
    /// The repair round trip this connection's NACK generator measures: how long a missing
    /// packet is waited for.
    repair: Arc<crate::nack_limit::SharedRtt>,
    /// Announcements for streams with no negotiated track yet.
    announcements: Announcements,
}

fn codec_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// Picks the payload type to stamp on a sender's packets from what was negotiated.
fn pick_pt(kind: MediaKind, codecs: &[RTCRtpCodecParameters]) -> Option<u8> {
    let mime = |c: &RTCRtpCodecParameters, m: &str| c.rtp_codec.mime_type.eq_ignore_ascii_case(m);
    match kind {
        MediaKind::Audio => codecs.iter().find(|c| mime(c, "audio/opus")),
        MediaKind::Video => codecs
            .iter()
            .find(|c| {
                mime(c, "video/h264") && c.rtp_codec.sdp_fmtp_line.contains("packetization-mode=1")
            })
            .or_else(|| codecs.iter().find(|c| mime(c, "video/h264"))),
    }
    .map(|c| c.payload_type)
}

fn ptr_of<T: ?Sized>(a: &Arc<T>) -> *const () {
    Arc::as_ptr(a) as *const ()
}

impl PeerMedia {
    pub(crate) fn new(
        remote: &str,
        self_tx: mpsc::UnboundedSender<PeerCmd>,
        estimate: Option<Arc<crate::bwe::BandwidthEstimate>>,
        captures: Arc<crate::capture_sr::CaptureTimes>,
        repair: Arc<crate::nack_limit::SharedRtt>,
    ) -> Self {
        PeerMedia {
            remote: remote.to_string(),
            self_tx,
            sent: Vec::new(),
            sent_streams: SentStreams::default(),
            attached: HashMap::new(),
            remote_sent: BTreeMap::new(),
            remotes: HashMap::new(),
            routes: HashMap::new(),
            remote_tracks: HashMap::new(),
            estimate,
            captures,
            repair,
            announcements: Announcements::default(),
        }
    }

    /// Attaches a local stream (first emit, or replay). A stream already attached gets a
    /// metadata refresh instead (the JS would add duplicate transceivers).
    pub(crate) async fn attach(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        shared: &Shared,
        stream: &LocalStream,
    ) -> Attach {
        let msid = stream.msid().to_string();
        if self.attached.contains_key(&msid) {
            let id = shared.id();
            let t = shared.streams();
            return Attach::Refresh(self.sent_streams.update(&msid, &t.registry, &id));
        }
        // Known before the SDP leaves: browsers ask for metadata as soon as they apply it.
        self.sent_streams.insert(&msid, stream.id());
        self.attached.insert(msid, stream.clone());
        Attach::New {
            renegotiate: self.sync(pc, stream).await,
        }
    }

    /// Brings this peer's senders of `stream` in line with its tracks. True if m-lines were
    /// added or made inactive (a renegotiation is needed).
    pub(crate) async fn sync(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        stream: &LocalStream,
    ) -> bool {
        let msid = stream.msid().to_string();
        if !self.attached.contains_key(&msid) {
            return false;
        }
        let tracks = stream.tracks();
        let mut changed = false;
        // Tracks that left the stream: inactive m-line, no more samples.
        let mut keep = Vec::new();
        for st in std::mem::take(&mut self.sent) {
            let live = st.msid != msid || tracks.iter().any(|t| Arc::ptr_eq(&t.feed(), &st.feed));
            if live {
                keep.push(st);
                continue;
            }
            st.feed.remove_sink(&st.sink);
            if let Err(e) = st
                .transceiver
                .set_direction(RTCRtpTransceiverDirection::Inactive)
                .await
            {
                warn!(peer = %self.remote, "cannot make a removed track's m-line inactive: {e}");
            }
            changed = true;
        }
        self.sent = keep;
        // New tracks: a sendonly transceiver each.
        for t in tracks {
            let feed = t.feed();
            if self
                .sent
                .iter()
                .any(|s| s.msid == msid && Arc::ptr_eq(&s.feed, &feed))
            {
                continue;
            }
            match self.add_sender(pc, &msid, t.id(), t.kind(), feed).await {
                Ok(st) => {
                    self.sent.push(st);
                    changed = true;
                }
                Err(e) => warn!(peer = %self.remote, "cannot send a {:?} track: {e}", t.kind()),
            }
        }
        changed
    }

    async fn add_sender(
        &self,
        pc: &Arc<dyn PeerConnection>,
        msid: &str,
        track_id: &str,
        kind: MediaKind,
        feed: Arc<Feed>,
    ) -> Result<SentTrack, String> {
        let ssrc: u32 = rand::random();
        let codec = match kind {
            MediaKind::Audio => opus(),
            MediaKind::Video => h264(),
        };
        let mst = MediaStreamTrack::new(
            msid.to_string(),
            track_id.to_string(),
            track_id.to_string(),
            codec_kind(kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec,
                ..Default::default()
            }],
        );
        let local =
            Arc::new(TrackLocalStaticSample::new(Instant::now(), mst).map_err(|e| e.to_string())?);
        let transceiver = pc
            .add_transceiver_from_track(
                local.clone() as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![msid.to_string()],
                    send_encodings: vec![],
                }),
            )
            .await
            .map_err(|e| e.to_string())?;
        let sender = transceiver
            .sender()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("transceiver without a sender")?;
        let sink = Arc::new(Sink {
            peer: self.remote.clone(),
            track: local.clone(),
            ssrc,
            pt: std::sync::atomic::AtomicU16::new(NO_PT),
            estimate: self.estimate.clone(),
            captures: self.captures.clone(),
        });
        feed.add_sink(sink.clone());
        // Keyframe requests from this peer go to whichever track feeds the sender now.
        let peer = self.remote.clone();
        let rtcp_feed = feed.clone();
        tokio::spawn(async move {
            while let Some(ev) = local.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = ev else {
                    continue;
                };
                for p in packets {
                    let any = p.as_any();
                    let fir = any.is::<FullIntraRequest>();
                    if fir || any.is::<PictureLossIndication>() {
                        rtcp_feed.keyframe_request(KeyframeRequest {
                            peer: peer.clone(),
                            fir,
                        });
                    }
                }
            }
        });
        Ok(SentTrack {
            msid: msid.to_string(),
            kind,
            feed,
            sink,
            sender,
            transceiver,
        })
    }

    /// After a negotiation completes: which payload type each sender stamps.
    pub(crate) async fn refresh_payload_types(&self) {
        for st in &self.sent {
            let params = match st.sender.get_parameters().await {
                Ok(p) => p,
                Err(e) => {
                    debug!(peer = %self.remote, "sender parameters: {e}");
                    continue;
                }
            };
            match pick_pt(st.kind, &params.rtp_parameters.codecs) {
                Some(pt) => {
                    let before = st.sink.pt.swap(u16::from(pt), Ordering::Relaxed);
                    if before != u16::from(pt) {
                        debug!(peer = %self.remote, kind = ?st.kind, pt, "sender payload type");
                    }
                }
                None if !params.rtp_parameters.codecs.is_empty() => {
                    warn!(peer = %self.remote, kind = ?st.kind, "the peer accepted none of our codecs for this track")
                }
                None => {}
            }
        }
    }

    /// `{mid}` from the peer: the reply's `data`, or `None` (unknown or untracked: no reply).
    pub(crate) fn answer(&mut self, shared: &Shared, mid: &str) -> Option<Value> {
        let id = shared.id();
        let t = shared.streams();
        let a = self.sent_streams.on_request(mid, &t.registry, &id);
        if a.is_none() {
            debug!(peer = %self.remote, %mid, "metadata request not answered (unknown or untracked)");
        }
        a
    }

    /// A remote description was applied: derive the peer's streams from it. Returns the msids
    /// whose metadata to request.
    pub(crate) fn on_remote_sdp(&mut self, shared: &Shared, sdp: &str) -> Vec<String> {
        let after = sdp_streams::sent_streams(sdp);
        let ch = sdp_streams::diff(&self.remote_sent, &after);
        self.remote_sent = after;
        for (msid, t) in ch.removed {
            let Some(r) = self.remotes.get(&msid) else {
                continue;
            };
            if let Some(route) = self.routes.get(&t.mid) {
                route.set(None);
            }
            if let Some(track) = r.stream.remove_track(&t.mid) {
                info!(peer = %self.remote, %msid, mid = %t.mid, "track-removed");
                dispatch_track(shared, "track-removed", &self.remote, &r.stream, &track);
            }
        }
        let mut requests = Vec::new();
        for msid in ch.new_streams {
            let stream = RemoteStream::new(&self.remote, &msid);
            for t in self.remote_sent.get(&msid).cloned().unwrap_or_default() {
                self.new_track(&stream, &t);
            }
            self.remotes.insert(
                msid.clone(),
                Remote {
                    stream,
                    dispatched: HashMap::new(),
                },
            );
            requests.push(msid);
        }
        for (msid, t) in ch.added {
            let Some(stream) = self.remotes.get(&msid).map(|r| r.stream.clone()) else {
                continue;
            };
            let track = self.new_track(&stream, &t);
            info!(peer = %self.remote, %msid, mid = %t.mid, "track-added");
            dispatch_track(shared, "track-added", &self.remote, &stream, &track);
        }
        let remotes = &self.remotes;
        let ready = self.announcements.release(|mid| has_track(remotes, mid));
        for (mid, events) in ready {
            self.dispatch_metadata(shared, &mid, events);
        }
        requests
    }

    fn new_track(&mut self, stream: &RemoteStream, t: &SdpTrack) -> RemoteTrack {
        let route = self
            .routes
            .entry(t.mid.clone())
            .or_insert_with(Route::new)
            .clone();
        let (track, tx) = RemoteTrack::new(
            t.kind,
            &t.mid,
            t.track_id.clone(),
            self.self_tx.clone(),
            route.clone(),
        );
        route.set(Some(tx));
        stream.add_track(track.clone());
        track
    }

    /// `{mid, events}` from the peer: dispatch each event with the stream to the global
    /// listeners (not per-peer ones, as in rtc.io), once per event unless its args change.
    /// Reserved names are dropped; a stream with no negotiated track waits a little for one.
    pub(crate) fn on_metadata(&mut self, shared: &Shared, mid: &str, events: Map<String, Value>) {
        let (events, dropped) = stream_meta::response_events(events);
        if !dropped.is_empty() {
            debug!(peer = %self.remote, %mid, ?dropped, "reserved names in stream metadata dropped");
        }
        let ready = has_track(&self.remotes, mid);
        if let Some(events) = self
            .announcements
            .on_response(mid, events, ready, Instant::now())
        {
            self.dispatch_metadata(shared, mid, events);
        } else {
            debug!(peer = %self.remote, %mid, "metadata for a stream without a track: held");
        }
    }

    /// When the next held announcement expires.
    pub(crate) fn announcement_deadline(&self) -> Option<Instant> {
        self.announcements.deadline()
    }

    /// Drops the held announcements whose wait is over.
    pub(crate) fn expire_announcements(&mut self) {
        for mid in self.announcements.expire(Instant::now()) {
            debug!(peer = %self.remote, %mid, "metadata for a stream that never got a track dropped");
        }
    }

    fn dispatch_metadata(&mut self, shared: &Shared, mid: &str, events: Announced) {
        let Some(r) = self.remotes.get_mut(mid) else {
            return;
        };
        for (name, args) in events {
            // ID-sync: the stream takes the sender's rtc.io id from its token.
            if let Some(id) = stream_meta::first_token(&args) {
                r.stream.set_id(&id);
            }
            if r.dispatched.get(&name) == Some(&args) {
                continue;
            }
            r.dispatched.insert(name.clone(), args.clone());
            info!(peer = %self.remote, event = %name, msid = %mid, "remote stream");
            let mut ev = Event::new(&name, args, Origin::Peer(self.remote.clone()));
            ev.stream = Some(r.stream.clone());
            shared.listeners.dispatch(&ev);
        }
    }

    /// webrtc-rs announced a remote track (first RTP packet): read it into the route of its
    /// m-line.
    pub(crate) async fn on_track(
        &mut self,
        pc: &Arc<dyn PeerConnection>,
        track: Arc<dyn TrackRemote>,
    ) {
        let mut mid = None;
        for tr in pc.get_transceivers().await {
            if let Ok(Some(r)) = tr.receiver().await
                && ptr_of(r.track()) == ptr_of(&track)
            {
                mid = tr.mid().await.ok().flatten();
                break;
            }
        }
        if mid.is_none() {
            // Fall back on msid: the track carries the stream and track ids of its m-line.
            let (sid, tid) = (track.stream_id().await, track.track_id().await);
            mid = self.remote_sent.get(&sid).and_then(|ts| {
                ts.iter()
                    .find(|t| t.track_id.as_deref() == Some(tid.as_str()))
                    .map(|t| t.mid.clone())
            });
        }
        let Some(mid) = mid else {
            warn!(peer = %self.remote, "a remote track with no m-line we know: ignored");
            return;
        };
        debug!(peer = %self.remote, %mid, "remote track started");
        self.remote_tracks.insert(mid.clone(), track.clone());
        let route = self.routes.entry(mid).or_insert_with(Route::new).clone();
        tokio::spawn(read_track(track, route, self.repair.clone()));
    }

    /// Sends a PLI for the track on `mid`.
    pub(crate) async fn request_keyframe(&self, mid: &str) {
        let Some(track) = self.remote_tracks.get(mid) else {
            debug!(peer = %self.remote, %mid, "keyframe request before any packet: nothing to do");
            return;
        };
        let Some(ssrc) = track.ssrcs().await.first().copied() else {
            return;
        };
        let pli = PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: ssrc,
        };
        if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
            debug!(peer = %self.remote, %mid, "PLI not sent: {e}");
        }
    }

    /// The peer is gone: remote tracks end, our senders stop being fed.
    pub(crate) fn close(&mut self) {
        self.announcements.clear();
        for r in self.routes.values() {
            r.set(None);
        }
        for st in self.sent.drain(..) {
            st.feed.remove_sink(&st.sink);
        }
    }
}

/// True when the applied SDP gives the remote stream `mid` at least one track.
fn has_track(remotes: &HashMap<String, Remote>, mid: &str) -> bool {
    remotes
        .get(mid)
        .is_some_and(|r| !r.stream.tracks().is_empty())
}

fn dispatch_track(
    shared: &Shared,
    name: &str,
    peer: &str,
    stream: &RemoteStream,
    track: &RemoteTrack,
) {
    let kind = match track.kind() {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    };
    let mut ev = Event::new(
        name,
        vec![json!({
            "peerId": peer,
            "stream": stream_meta::token(&stream.id()),
            "track": {"id": track.id(), "kind": kind, "mid": track.mid()},
        })],
        Origin::Local,
    );
    ev.stream = Some(stream.clone());
    shared.listeners.dispatch(&ev);
}

/// At most this many packets wait for webrtc-rs to know a track's codec (a keyframe's worth).
const EARLY_PACKETS: usize = 128;

/// Feeds one RTP packet to a track's assembler and hands the finished frames to its route.
fn assemble(
    a: &mut FrameAssembler,
    codec: &RtpCodec,
    route: &Route,
    repair: &crate::nack_limit::SharedRtt,
    p: &rtc::rtp::Packet,
) {
    let now = Instant::now();
    // An Opus assembler ignores it (its gaps cannot outwait the jitter buffer).
    a.set_gap_wait(crate::nack_pace::gap_wait(repair.get()));
    let frames = a.push_at(
        p.header.sequence_number,
        p.header.timestamp,
        p.header.marker,
        &p.payload,
        now,
    );
    for f in frames {
        route.deliver(MediaFrame {
            data: f.data,
            rtp_timestamp: f.rtp_timestamp,
            codec: codec.clone(),
            keyframe: f.keyframe,
            lost_before: f.lost_before,
            held_for_loss: f.held_for_loss,
            received: now,
        });
    }
}

/// Reads one remote track's RTP, assembles frames and hands them to its route. A video gap is
/// waited for as long as two repair round trips take (`repair`, see [`crate::nack_pace`]).
async fn read_track(
    track: Arc<dyn TrackRemote>,
    route: Arc<Route>,
    repair: Arc<crate::nack_limit::SharedRtt>,
) {
    let mut asm: Option<(FrameAssembler, RtpCodec)> = None;
    // Packets that came before webrtc-rs knew the track's codec, replayed once it does: the
    // first ones are a keyframe's start (its SPS/PPS), and dropping them cost a keyframe
    // request round trip at every join.
    let mut early: Vec<rtc::rtp::Packet> = Vec::new();
    // The media SSRC (RTX packets arrive resolved to it): reports about others are not ours.
    let mut ssrc = None;
    while let Some(ev) = track.poll().await {
        match ev {
            TrackRemoteEvent::OnRtcpPacket(packets) => {
                let now = Instant::now();
                for p in &packets {
                    if let Some(sr) = p.as_any().downcast_ref::<RtcpSenderReport>()
                        && ssrc.is_none_or(|s| s == sr.ssrc)
                    {
                        route.set_sender_report(SenderReport {
                            ntp_time: sr.ntp_time,
                            rtp_time: sr.rtp_time,
                            arrival: now,
                        });
                    }
                }
            }
            TrackRemoteEvent::OnRtpPacket(p) => {
                ssrc = Some(p.header.ssrc);
                let Some((a, codec)) = asm.as_mut() else {
                    // webrtc-rs fills in the track's codec around the first packet.
                    let mime = track
                        .codec(p.header.ssrc)
                        .await
                        .map(|c| c.mime_type)
                        .unwrap_or_default();
                    if mime.is_empty() && early.len() < EARLY_PACKETS {
                        early.push(p);
                        continue;
                    }
                    let codec = RtpCodec::from_mime(&mime);
                    let mut a = FrameAssembler::new(codec.clone());
                    if !early.is_empty() {
                        debug!(packets = early.len(), %mime, "packets before the codec was known: replayed");
                    }
                    for e in early.drain(..).chain(std::iter::once(p)) {
                        assemble(&mut a, &codec, &route, &repair, &e);
                    }
                    asm = Some((a, codec));
                    continue;
                };
                assemble(a, codec, &route, &repair, &p);
            }
            TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => break,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::reception_report::ReceptionReport;
    use rtc::shared::TransportContext;

    fn inbound(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn sender_reports_reach_the_application_alone_and_routed_by_their_own_ssrc() {
        let mut f = KeyframeRequestForwarder::default();
        let sr = RtcpSenderReport {
            ssrc: 7,
            ntp_time: 3_900_000_000 << 32,
            rtp_time: 123_456,
            packet_count: 10,
            octet_count: 1000,
            // A block about one of our senders: it would route the packet to that sender.
            reports: vec![ReceptionReport {
                ssrc: 99,
                ..Default::default()
            }],
            ..Default::default()
        };
        let pli = PictureLossIndication {
            sender_ssrc: 7,
            media_ssrc: 99,
        };
        f.handle_read(inbound(vec![Box::new(sr), Box::new(pli)]))
            .expect("read");
        let first = f.poll_read().expect("the sender report");
        assert!(first.message.has(&Attribute::DeliverToApplication));
        let Packet::Rtcp(p) = &first.message.packet else {
            panic!("not RTCP")
        };
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].destination_ssrc(), vec![7]);
        let got = p[0]
            .as_any()
            .downcast_ref::<RtcpSenderReport>()
            .expect("a sender report");
        assert_eq!((got.ntp_time, got.rtp_time), (3_900_000_000 << 32, 123_456));
        let second = f.poll_read().expect("the keyframe request");
        let Packet::Rtcp(p) = &second.message.packet else {
            panic!("not RTCP")
        };
        assert!(is_keyframe_request(p[0].as_ref()) && p.len() == 1);
        assert!(f.poll_read().is_none());
        // Receiver reports alone stay with the interceptors.
        let rr = rtc::rtcp::receiver_report::ReceiverReport::default();
        f.handle_read(inbound(vec![Box::new(rr)])).expect("read");
        assert!(f.poll_read().is_none());
    }
}
