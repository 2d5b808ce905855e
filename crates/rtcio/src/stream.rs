//! Media streams (rtc.io's `RTCIOStream`, PROTOCOL.md §5): local streams whose tracks carry encoded
//! samples the caller produces (this crate never encodes), and remote streams whose tracks yield
//! depacketized access units / Opus packets.
//!
//! A [`LocalStream`] is announced by emitting an event whose arguments hold its
//! [token](LocalStream::token); every peer (also later ones) then gets one sendonly transceiver per
//! track. One encoded sample written to a [`LocalTrack`] goes to every peer's sender, so a source
//! is encoded once however many peers there are.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tracing::trace;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;

pub use crate::proto::rtp_assembler::RtpCodec;
pub use crate::proto::sdp_streams::MediaKind;
use crate::proto::stream_meta;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An encoded sample for a local track: one H.264 access unit (Annex-B) or one Opus packet.
#[derive(Debug, Clone)]
pub struct MediaSample {
    /// The encoded bytes.
    pub data: Bytes,
    /// How long the sample lasts; advances the RTP clock (e.g. 33 ms at 30 fps, 20 ms for Opus).
    pub duration: Duration,
}

/// A received access unit (H.264, Annex-B), Opus packet or VP8 frame.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// The encoded bytes.
    pub data: Bytes,
    /// RTP timestamp (90 kHz video, 48 kHz Opus) — for pacing and A/V sync.
    pub rtp_timestamp: u32,
    /// The codec the sender used.
    pub codec: RtpCodec,
    /// Decodable on its own (IDR / key frame; always true for Opus).
    pub keyframe: bool,
    /// Packets or frames were lost just before this one: a video decoder may need a keyframe
    /// ([`RemoteTrack::request_keyframe`]).
    pub lost_before: bool,
    /// The frame waited for a missing packet (a retransmission filled the gap, or the gap was
    /// given up): `received` says how long the repair took, not how much the path jitters, so a
    /// playout keeps it out of its jitter estimate.
    pub held_for_loss: bool,
    /// When the last packet of the frame arrived.
    pub received: Instant,
}

/// The latest RTCP sender report of a remote track (RFC 3550 §6.4.1): the sender's wall clock
/// (NTP) at one RTP timestamp. Two tracks of one sender share that wall clock, so their RTP
/// timestamps can be put on one time line (lip sync) whatever paths and delays they took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport {
    /// The sender's NTP timestamp: 32.32 fixed point, seconds since 1900.
    pub ntp_time: u64,
    /// The RTP timestamp that corresponds to `ntp_time`.
    pub rtp_time: u32,
    /// When the report arrived here.
    pub arrival: Instant,
}

impl SenderReport {
    /// `ntp_time` in seconds since 1900 (f64 keeps about a microsecond there).
    pub fn ntp_secs(&self) -> f64 {
        ntp_to_secs(self.ntp_time)
    }

    /// The sender's wall clock (seconds since 1900) at RTP timestamp `rtp` of a `clock_rate` Hz
    /// clock. `rtp` is taken as the nearest of its 32-bit wraps to the report's timestamp, so
    /// timestamps within ±2^31 ticks of it (12 h at 48 kHz, 6 h at 90 kHz) map correctly.
    pub fn sender_time(&self, rtp: u32, clock_rate: u32) -> f64 {
        let ticks = rtp.wrapping_sub(self.rtp_time) as i32;
        self.ntp_secs() + f64::from(ticks) / f64::from(clock_rate.max(1))
    }
}

/// A 32.32 NTP timestamp in seconds.
pub(crate) fn ntp_to_secs(ntp: u64) -> f64 {
    (ntp >> 32) as f64 + (ntp & 0xffff_ffff) as f64 / 4_294_967_296.0
}

/// A keyframe request (RTCP PLI or FIR) from a peer that receives a local track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyframeRequest {
    /// The requesting peer's socket id.
    pub peer: String,
    /// FIR rather than PLI.
    pub fir: bool,
}

/// Payload type not negotiated yet.
pub(crate) const NO_PT: u16 = u16::MAX;

/// One peer's sender of a local track.
pub(crate) struct Sink {
    pub peer: String,
    pub track: Arc<TrackLocalStaticSample>,
    pub ssrc: u32,
    /// Negotiated payload type, [`NO_PT`] until the first negotiation with this peer completes.
    pub pt: AtomicU16,
    /// The peer connection's send-side bandwidth estimate (congestion control on).
    pub estimate: Option<Arc<crate::bwe::BandwidthEstimate>>,
    /// Capture instants for the peer connection's sender reports.
    pub captures: Arc<crate::capture_sr::CaptureTimes>,
}

/// What feeds the per-peer senders of one m-line: swapping a [`LocalTrack`] moves the feed, so
/// the senders keep running and nothing is renegotiated.
pub(crate) struct Feed {
    sinks: Mutex<Vec<Arc<Sink>>>,
    keyframes: broadcast::Sender<KeyframeRequest>,
}

impl Feed {
    fn new() -> Arc<Feed> {
        Arc::new(Feed {
            sinks: Mutex::new(Vec::new()),
            keyframes: broadcast::channel(16).0,
        })
    }

    pub(crate) fn add_sink(&self, sink: Arc<Sink>) {
        lock(&self.sinks).push(sink);
    }

    pub(crate) fn remove_sink(&self, sink: &Arc<Sink>) {
        lock(&self.sinks).retain(|s| !Arc::ptr_eq(s, sink));
    }

    pub(crate) fn keyframe_request(&self, req: KeyframeRequest) {
        // No subscriber is fine: nobody asked to hear about keyframe requests.
        let _ = self.keyframes.send(req);
    }
}

struct TrackInner {
    id: String,
    kind: MediaKind,
    feed: Mutex<Arc<Feed>>,
    written: AtomicU64,
}

/// A local audio or video track: write encoded samples, they go to every peer the stream is
/// attached to.
#[derive(Clone)]
pub struct LocalTrack {
    inner: Arc<TrackInner>,
}

impl std::fmt::Debug for LocalTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTrack")
            .field("id", &self.inner.id)
            .field("kind", &self.inner.kind)
            .finish()
    }
}

impl LocalTrack {
    /// A track not yet in any stream (see [`LocalStream::replace_track`]).
    pub fn new(kind: MediaKind) -> LocalTrack {
        LocalTrack {
            inner: Arc::new(TrackInner {
                id: uuid(),
                kind,
                feed: Mutex::new(Feed::new()),
                written: AtomicU64::new(0),
            }),
        }
    }

    /// Track id (the second part of `a=msid`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.inner.kind
    }

    pub(crate) fn feed(&self) -> Arc<Feed> {
        lock(&self.inner.feed).clone()
    }

    /// Sends one encoded sample to every peer whose sender is negotiated and connected; returns
    /// how many peers it went to. Samples are real-time: a peer that is not connected yet does
    /// not get old ones later.
    pub async fn write(&self, sample: &MediaSample) -> usize {
        self.write_inner(sample, None).await
    }

    /// [`LocalTrack::write`] for a sample whose content was captured at `captured`: the
    /// RTCP sender reports then map its RTP time to that instant rather than to when it was
    /// sent (as Chromium's do), so the receiver's lip sync does not count our encoding delay
    /// as a later capture.
    pub async fn write_captured(&self, sample: &MediaSample, captured: Instant) -> usize {
        self.write_inner(sample, Some(captured)).await
    }

    async fn write_inner(&self, sample: &MediaSample, captured: Option<Instant>) -> usize {
        let sinks = lock(&self.feed().sinks).clone();
        let s = rtc::media::Sample {
            data: sample.data.clone(),
            duration: sample.duration,
            ..rtc::media::Sample::new(Instant::now())
        };
        let mut n = 0;
        for sink in sinks {
            let pt = sink.pt.load(Ordering::Relaxed);
            if pt == NO_PT {
                continue;
            }
            let queued = captured.map(|c| sink.captures.push(sink.ssrc, c));
            match sink
                .track
                .sample_writer(sink.ssrc, pt as u8)
                .write_sample(&s)
                .await
            {
                Ok(()) => n += 1,
                // Not bound yet (DTLS still coming up) or the peer is closing.
                Err(e) => {
                    if let Some(id) = queued {
                        sink.captures.cancel(sink.ssrc, id);
                    }
                    trace!(peer = %sink.peer, "sample not sent: {e}");
                }
            }
        }
        self.inner.written.fetch_add(1, Ordering::Relaxed);
        n
    }

    /// Samples written so far.
    pub fn samples_written(&self) -> u64 {
        self.inner.written.load(Ordering::Relaxed)
    }

    /// Keyframe requests (PLI/FIR) from receiving peers, and one per peer when its connection
    /// first comes up (so a joiner's first frame is a keyframe without a PLI round trip):
    /// answer them by encoding an IDR frame. Subscribe after [`LocalStream::replace_track`], which moves the requests to the new track.
    pub fn keyframe_requests(&self) -> broadcast::Receiver<KeyframeRequest> {
        self.feed().keyframes.subscribe()
    }

    /// Peers currently fed by this track.
    pub fn peer_count(&self) -> usize {
        lock(&self.feed().sinks).len()
    }

    /// The send-side bandwidth estimate toward each peer this track feeds, bits/s (peers
    /// without congestion control are left out). One encoder feeds every peer, so the
    /// application usually follows the lowest (see [`LocalTrack::min_estimated_bitrate`]).
    pub fn estimated_bitrates(&self) -> Vec<(String, u64)> {
        lock(&self.feed().sinks)
            .iter()
            .filter_map(|s| Some((s.peer.clone(), s.estimate.as_ref()?.target_bps())))
            .collect()
    }

    /// The lowest send-side bandwidth estimate over the peers this track feeds, bits/s; `None`
    /// when it feeds no peer with congestion control.
    pub fn min_estimated_bitrate(&self) -> Option<u64> {
        // Read a few times a second per track: no per-peer allocation.
        lock(&self.feed().sinks)
            .iter()
            .filter_map(|s| Some(s.estimate.as_ref()?.target_bps()))
            .min()
    }

    /// The longest wait in the send pacers toward this track's peers right now (what the
    /// oldest queued packet has waited; `None` without congestion control).
    pub fn max_pacer_wait(&self) -> Option<std::time::Duration> {
        lock(&self.feed().sinks)
            .iter()
            .filter_map(|s| Some(s.estimate.as_ref()?.pacer_wait()))
            .max()
    }

    /// The highest loss fraction (0..=1) the peers this track feeds report for our packets;
    /// `None` before any report (or without congestion control).
    pub fn max_reported_loss(&self) -> Option<f64> {
        lock(&self.feed().sinks)
            .iter()
            .filter_map(|s| s.estimate.as_ref()?.loss())
            .reduce(f64::max)
    }
}

/// What a stream tells the socket loop when its tracks change.
pub(crate) type ChangeNotifier = mpsc::UnboundedSender<crate::socket::SocketCmd>;

struct StreamInner {
    id: String,
    msid: String,
    tracks: Mutex<Vec<LocalTrack>>,
    notify: ChangeNotifier,
}

/// A local media stream (`RTCIOStream`): made with [`Socket::create_stream`](crate::Socket::create_stream),
/// announced by emitting an event with its [token](Self::token) among the arguments.
#[derive(Clone)]
pub struct LocalStream {
    inner: Arc<StreamInner>,
}

impl std::fmt::Debug for LocalStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStream")
            .field("id", &self.inner.id)
            .field("msid", &self.inner.msid)
            .finish()
    }
}

impl PartialEq for LocalStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl LocalStream {
    pub(crate) fn new(id: String, notify: ChangeNotifier) -> LocalStream {
        LocalStream {
            inner: Arc::new(StreamInner {
                id,
                // The MediaStream id (msid) differs from the rtc.io id, as in the browser; a token
                // of letters and digits only (never `-`, ≤ 64 chars; PROTOCOL.md §5.7).
                msid: uuid().replace('-', ""),
                tracks: Mutex::new(Vec::new()),
                notify,
            }),
        }
    }

    /// The rtc.io stream id (what receivers see in the token).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The MediaStream id written in `a=msid` (what receivers ask metadata for).
    pub fn msid(&self) -> &str {
        &self.inner.msid
    }

    /// `"[RTCIOStream] <id>"`: put it in an event's arguments where the JS puts the stream.
    pub fn token(&self) -> Value {
        Value::String(stream_meta::token(&self.inner.id))
    }

    /// The tracks, in the order they were added.
    pub fn tracks(&self) -> Vec<LocalTrack> {
        lock(&self.inner.tracks).clone()
    }

    /// The first track of a kind.
    pub fn track(&self, kind: MediaKind) -> Option<LocalTrack> {
        lock(&self.inner.tracks)
            .iter()
            .find(|t| t.kind() == kind)
            .cloned()
    }

    fn changed(&self) {
        let _ = self
            .inner
            .notify
            .send(crate::socket::SocketCmd::StreamChanged(self.clone()));
    }

    /// Adds a track; peers that have the stream get a new m-line (a renegotiation; receivers
    /// see `track-added`).
    pub fn add_track(&self, kind: MediaKind) -> LocalTrack {
        let t = LocalTrack::new(kind);
        lock(&self.inner.tracks).push(t.clone());
        self.changed();
        t
    }

    /// Removes a track: its transceivers become inactive (a renegotiation; receivers see
    /// `track-removed`). False if the track is not in this stream.
    pub fn remove_track(&self, track: &LocalTrack) -> bool {
        let removed = {
            let mut tracks = lock(&self.inner.tracks);
            let before = tracks.len();
            tracks.retain(|t| !Arc::ptr_eq(&t.inner, &track.inner));
            before != tracks.len()
        };
        if removed {
            self.changed();
        }
        removed
    }

    /// Makes `new` feed the senders of the first track of its kind, without renegotiation (the
    /// peers keep the same m-line, SSRC and msid). Returns the displaced track, which feeds
    /// nothing any more. With no track of that kind, `new` is added (which renegotiates).
    pub fn replace_track(&self, new: &LocalTrack) -> Option<LocalTrack> {
        let old = {
            let mut tracks = lock(&self.inner.tracks);
            match tracks.iter().position(|t| t.kind() == new.kind()) {
                Some(i) => {
                    let old = std::mem::replace(&mut tracks[i], new.clone());
                    let feed = std::mem::replace(&mut *lock(&old.inner.feed), Feed::new());
                    *lock(&new.inner.feed) = feed;
                    Some(old)
                }
                None => {
                    tracks.push(new.clone());
                    None
                }
            }
        };
        if old.is_none() {
            self.changed();
        }
        old
    }
}

/// A random UUID v4 string.
pub(crate) fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let mut b = b;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Where a remote track's frames go; the reader task of an m-line looks it up per frame so a
/// recycled m-line feeds whichever track owns it now.
pub(crate) struct Route {
    tx: Mutex<Option<mpsc::Sender<MediaFrame>>>,
    pub(crate) dropped: AtomicU64,
    /// The m-line's latest sender report.
    sender_report: Mutex<Option<SenderReport>>,
}

impl Route {
    pub(crate) fn new() -> Arc<Route> {
        Arc::new(Route {
            tx: Mutex::new(None),
            dropped: AtomicU64::new(0),
            sender_report: Mutex::new(None),
        })
    }

    pub(crate) fn set(&self, tx: Option<mpsc::Sender<MediaFrame>>) {
        *lock(&self.tx) = tx;
    }

    pub(crate) fn set_sender_report(&self, sr: SenderReport) {
        *lock(&self.sender_report) = Some(sr);
    }

    pub(crate) fn deliver(&self, frame: MediaFrame) {
        let tx = lock(&self.tx).clone();
        if let Some(tx) = tx
            && tx.try_send(frame).is_err()
        {
            // The application is not reading (or fell far behind): real-time media is dropped.
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Frames buffered per remote track before the oldest unread ones are dropped.
pub(crate) const REMOTE_QUEUE: usize = 256;

struct RemoteTrackInner {
    kind: MediaKind,
    mid: String,
    id: Option<String>,
    rx: tokio::sync::Mutex<mpsc::Receiver<MediaFrame>>,
    keyframe: mpsc::UnboundedSender<crate::peer::PeerCmd>,
    route: Arc<Route>,
}

/// A track a peer sends us.
#[derive(Clone)]
pub struct RemoteTrack {
    inner: Arc<RemoteTrackInner>,
}

impl std::fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTrack")
            .field("kind", &self.inner.kind)
            .field("mid", &self.inner.mid)
            .finish()
    }
}

impl RemoteTrack {
    pub(crate) fn new(
        kind: MediaKind,
        mid: &str,
        id: Option<String>,
        keyframe: mpsc::UnboundedSender<crate::peer::PeerCmd>,
        route: Arc<Route>,
    ) -> (RemoteTrack, mpsc::Sender<MediaFrame>) {
        let (tx, rx) = mpsc::channel(REMOTE_QUEUE);
        (
            RemoteTrack {
                inner: Arc::new(RemoteTrackInner {
                    kind,
                    mid: mid.to_string(),
                    id,
                    rx: tokio::sync::Mutex::new(rx),
                    keyframe,
                    route,
                }),
            },
            tx,
        )
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.inner.kind
    }

    /// The m-line (transceiver mid) it arrives on.
    pub fn mid(&self) -> &str {
        &self.inner.mid
    }

    /// The sender's track id (from `a=msid`), if it wrote one.
    pub fn id(&self) -> Option<&str> {
        self.inner.id.as_deref()
    }

    /// The next frame; `None` once the track is removed or the peer is gone.
    pub async fn recv(&self) -> Option<MediaFrame> {
        self.inner.rx.lock().await.recv().await
    }

    /// The next frame, waiting at most `wait` on the calling thread (a receive thread's loop).
    /// Needs no async runtime: a thread still waiting while the runtime that fed the track
    /// shuts down gets [`TimedRecv::Ended`] once the peer is gone, where a tokio timer would
    /// panic ("A Tokio 1.x context was found, but it is being shutdown").
    pub fn recv_timeout(&self, wait: Duration) -> TimedRecv {
        match block_on_until(self.recv(), Instant::now() + wait) {
            Some(Some(f)) => TimedRecv::Frame(f),
            Some(None) => TimedRecv::Ended,
            None => TimedRecv::TimedOut,
        }
    }

    /// The latest RTCP sender report for this track's m-line, `None` before the first one
    /// (senders send one every second or so once media flows).
    pub fn sender_report(&self) -> Option<SenderReport> {
        *lock(&self.inner.route.sender_report)
    }

    /// Asks the sender for a keyframe (RTCP PLI). Does nothing before the first packet arrived.
    pub fn request_keyframe(&self) {
        let _ = self
            .inner
            .keyframe
            .send(crate::peer::PeerCmd::RequestKeyframe(
                self.inner.mid.clone(),
            ));
    }
}

/// What [`RemoteTrack::recv_timeout`] got.
#[derive(Debug)]
pub enum TimedRecv {
    /// The next frame.
    Frame(MediaFrame),
    /// Nothing arrived within the wait.
    TimedOut,
    /// The track is removed or the peer is gone.
    Ended,
}

/// Wakes the thread it was made on.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

thread_local! {
    /// This thread's waker, made once: a receive thread waits once per frame, and a new Arc
    /// each time was an allocation per frame.
    static UNPARK: std::task::Waker =
        std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
}

/// Polls `fut` on this thread until it is ready (`Some`) or `deadline` passes (`None`, the
/// future dropped); the waker unparks the thread. `recv` is cancel-safe, so dropping it loses
/// no frame.
fn block_on_until<F: std::future::Future>(fut: F, deadline: Instant) -> Option<F::Output> {
    let waker = UNPARK.with(std::task::Waker::clone);
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        // Wakes early on the waker (or spuriously): the loop polls again.
        std::thread::park_timeout(deadline - now);
    }
}

struct RemoteStreamInner {
    peer: String,
    msid: String,
    id: Mutex<String>,
    tracks: Mutex<Vec<RemoteTrack>>,
}

/// A stream a peer sends us. It reaches the application in [`Event::stream`](crate::Event::stream)
/// of the event the sender emitted it with (e.g. `camera`), and in `track-added` /
/// `track-removed` events.
#[derive(Clone)]
pub struct RemoteStream {
    inner: Arc<RemoteStreamInner>,
}

impl std::fmt::Debug for RemoteStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteStream")
            .field("peer", &self.inner.peer)
            .field("id", &self.id())
            .field("msid", &self.inner.msid)
            .finish()
    }
}

impl PartialEq for RemoteStream {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl RemoteStream {
    pub(crate) fn new(peer: &str, msid: &str) -> RemoteStream {
        RemoteStream {
            inner: Arc::new(RemoteStreamInner {
                peer: peer.to_string(),
                msid: msid.to_string(),
                id: Mutex::new(msid.to_string()),
                tracks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The sending peer's socket id.
    pub fn peer(&self) -> &str {
        &self.inner.peer
    }

    /// The rtc.io stream id: the id in the sender's token once metadata arrived (ID-sync),
    /// the msid before.
    pub fn id(&self) -> String {
        lock(&self.inner.id).clone()
    }

    pub(crate) fn set_id(&self, id: &str) {
        *lock(&self.inner.id) = id.to_string();
    }

    /// The MediaStream id from `a=msid`.
    pub fn msid(&self) -> &str {
        &self.inner.msid
    }

    /// The tracks currently sent.
    pub fn tracks(&self) -> Vec<RemoteTrack> {
        lock(&self.inner.tracks).clone()
    }

    /// The first current track of a kind.
    pub fn track(&self, kind: MediaKind) -> Option<RemoteTrack> {
        lock(&self.inner.tracks)
            .iter()
            .find(|t| t.kind() == kind)
            .cloned()
    }

    pub(crate) fn add_track(&self, t: RemoteTrack) {
        let mut tracks = lock(&self.inner.tracks);
        // A re-enabled m-line replaces the previous track of the same kind, as in rtc.io.
        tracks.retain(|x| x.mid() != t.mid() && x.kind() != t.kind());
        tracks.push(t);
    }

    pub(crate) fn remove_track(&self, mid: &str) -> Option<RemoteTrack> {
        let mut tracks = lock(&self.inner.tracks);
        let i = tracks.iter().position(|t| t.mid() == mid)?;
        Some(tracks.remove(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_report_maps_rtp_to_the_sender_clock_across_wraps() {
        // 3 900 000 000.5 s since 1900.
        let ntp = (3_900_000_000u64 << 32) | 0x8000_0000;
        let sr = SenderReport {
            ntp_time: ntp,
            rtp_time: u32::MAX - 479,
            arrival: Instant::now(),
        };
        assert!((sr.ntp_secs() - 3_900_000_000.5).abs() < 1e-6);
        // 960 ticks later at 48 kHz, past the wrap of the 32-bit counter: 20 ms later.
        let t = sr.sender_time(480, 48_000);
        assert!((t - sr.ntp_secs() - 0.020).abs() < 1e-6, "{t}");
        // And before the report.
        let t = sr.sender_time(u32::MAX - 479 - 9_000, 90_000);
        assert!((t - sr.ntp_secs() + 0.1).abs() < 1e-6, "{t}");
    }

    fn frame(ts: u32) -> MediaFrame {
        MediaFrame {
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            rtp_timestamp: ts,
            codec: RtpCodec::H264,
            keyframe: true,
            lost_before: false,
            held_for_loss: false,
            received: Instant::now(),
        }
    }

    /// A receive thread's timed wait works on a plain thread with no tokio runtime anywhere
    /// (so also after the runtime that fed the track shut down): it times out, is woken by a
    /// frame sent from another thread, and sees the end when the sender is gone.
    #[test]
    fn recv_timeout_needs_no_runtime() {
        let (keyframe, _requests) = mpsc::unbounded_channel();
        let (track, tx) = RemoteTrack::new(MediaKind::Video, "0", None, keyframe, Route::new());
        let t = Instant::now();
        assert!(matches!(
            track.recv_timeout(Duration::from_millis(30)),
            TimedRecv::TimedOut
        ));
        assert!(
            t.elapsed() >= Duration::from_millis(30),
            "{:?}",
            t.elapsed()
        );
        let sender = std::thread::spawn(move || {
            tx.blocking_send(frame(7)).expect("send");
            tx
        });
        match track.recv_timeout(Duration::from_secs(10)) {
            TimedRecv::Frame(f) => assert_eq!(f.rtp_timestamp, 7),
            other => panic!("expected the frame, got {other:?}"),
        }
        let tx = sender.join().expect("sender thread");
        tx.try_send(frame(8)).expect("queued");
        drop(tx);
        // What was queued before the end still comes first.
        assert!(matches!(
            track.recv_timeout(Duration::from_secs(10)),
            TimedRecv::Frame(f) if f.rtp_timestamp == 8
        ));
        assert!(matches!(
            track.recv_timeout(Duration::from_secs(10)),
            TimedRecv::Ended
        ));
    }

    #[test]
    fn uuid_shape() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.as_bytes()[14], b'4');
        assert_ne!(uuid(), u);
    }

    #[test]
    fn replace_moves_the_feed_without_renegotiating() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let s = LocalStream::new("s".into(), tx);
        let v = s.add_track(MediaKind::Video);
        assert!(rx.try_recv().is_ok(), "add_track renegotiates");
        let feed = v.feed();
        let v2 = LocalTrack::new(MediaKind::Video);
        let old = s.replace_track(&v2).expect("displaced");
        assert!(Arc::ptr_eq(&old.inner, &v.inner));
        assert!(
            Arc::ptr_eq(&v2.feed(), &feed),
            "new track feeds the senders"
        );
        assert!(!Arc::ptr_eq(&v.feed(), &feed), "old track feeds nothing");
        assert!(rx.try_recv().is_err(), "no renegotiation");
        assert_eq!(s.tracks().len(), 1);
        assert!(s.remove_track(&v2));
        assert!(!s.remove_track(&v2));
        assert!(rx.try_recv().is_ok());
    }
}
