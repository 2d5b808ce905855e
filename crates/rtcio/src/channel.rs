//! Named data channels (`rtcio:ch:<name>`): the per-peer [`Channel`] with rtc.io's backpressure,
//! and the [`BroadcastChannel`] that fans one name out to every peer, late joiners included.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};

use crate::listeners::{Event, ListenerId, Origin, Registry};
use crate::proto::backpressure::{Payload, SendQueue, Watermarks, Write};
use crate::proto::channel_sync::EarlyEvents;
use crate::proto::envelope::{self, ChannelText};

/// Options of a named channel (rtc.io `createChannel` options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelOptions {
    /// In-order delivery (default true).
    pub ordered: Option<bool>,
    /// Retransmission limit (default unlimited).
    pub max_retransmits: Option<u16>,
    /// Lifetime limit in ms (default unlimited).
    pub max_packet_life_time: Option<u16>,
    /// Sub-protocol string.
    pub protocol: Option<String>,
    /// Direct sends only while the transport buffers less than this (16 MiB).
    pub high_watermark: Option<usize>,
    /// `drain` threshold (1 MiB).
    pub low_watermark: Option<usize>,
    /// Cap on bytes held in our own queue (1 MiB).
    pub queue_budget: Option<usize>,
}

impl ChannelOptions {
    /// Reliable and ordered (the default).
    pub fn reliable() -> Self {
        ChannelOptions::default()
    }

    /// Unordered and without retransmissions, for state that is stale once newer data exists.
    pub fn lossy() -> Self {
        ChannelOptions {
            ordered: Some(false),
            max_retransmits: Some(0),
            ..ChannelOptions::default()
        }
    }

    pub(crate) fn watermarks(&self) -> Watermarks {
        let d = Watermarks::default();
        Watermarks {
            high: self.high_watermark.unwrap_or(d.high),
            low: self.low_watermark.unwrap_or(d.low),
            budget: self.queue_budget.unwrap_or(d.budget),
        }
    }

    pub(crate) fn init(&self, id: u16) -> RTCDataChannelInit {
        RTCDataChannelInit {
            ordered: self.ordered.unwrap_or(true),
            max_packet_life_time: self.max_packet_life_time,
            max_retransmits: self.max_retransmits,
            protocol: self.protocol.clone().unwrap_or_default(),
            negotiated: Some(id),
        }
    }
}

/// Errors of channel operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The channel (or its peer) is closed.
    #[error("channel closed")]
    Closed,
    /// The transport refused the message.
    #[error("send failed: {0}")]
    Send(String),
    /// Two names on one peer hash to the same SCTP id.
    #[error("{0}")]
    Collision(String),
    /// The peer is unknown or gone.
    #[error("no such peer {0}")]
    NoPeer(String),
    /// The queue already holds its budget: wait for `drain` before sending more.
    #[error("queue budget exceeded: wait for 'drain' before sending more")]
    OverBudget,
}

/// What [`Channel::try_send`] did with a message it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Handed to the transport now.
    Sent,
    /// Queued behind the buffer's high-water mark (or until the channel opens): a `drain`
    /// event follows when the queue empties.
    Queued,
}

/// Data-channel state as rtc.io reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyState {
    /// No open data channel yet (also after a close, like the JS wrapper).
    Connecting,
    /// Open.
    Open,
    /// Closed for good by [`Channel::close`].
    Closed,
}

pub(crate) enum ChanCmd {
    Attach(Arc<dyn DataChannel>),
    /// webrtc-rs announced a second handle for our negotiated channel (it opened before our
    /// handle was registered); it may carry the `open` event and early messages.
    Twin(Arc<dyn DataChannel>),
    /// The remote has its end of this channel (or never says so: an rtc.io JS peer), so data
    /// sent now is not dropped there (see `proto::channel_sync`).
    RemoteReady,
    /// Someone started listening to this event name: deliver what was held for it.
    Listening(String),
    Write(
        Payload,
        Option<oneshot::Sender<Result<SendOutcome, ChannelError>>>,
    ),
    WriteWait(Payload, oneshot::Sender<Result<(), ChannelError>>),
    Close,
}

pub(crate) struct ChannelInner {
    name: String,
    peer: String,
    id: u16,
    opts: ChannelOptions,
    cmd: mpsc::UnboundedSender<ChanCmd>,
    listeners: Registry,
    parent: Option<Arc<BroadcastInner>>,
    state: Mutex<ReadyState>,
}

/// A named channel to one peer. Cheap to clone; all clones are the same channel.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<ChannelInner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.inner.name)
            .field("peer", &self.inner.peer)
            .field("id", &self.inner.id)
            .finish()
    }
}

impl Channel {
    /// Creates the channel object and its driver; the data channel is attached later.
    pub(crate) fn spawn(
        name: &str,
        peer: &str,
        id: u16,
        opts: ChannelOptions,
        parent: Option<Arc<BroadcastInner>>,
    ) -> Channel {
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(ChannelInner {
            name: name.to_string(),
            peer: peer.to_string(),
            id,
            opts: opts.clone(),
            cmd: tx,
            listeners: Registry::default(),
            parent,
            state: Mutex::new(ReadyState::Connecting),
        });
        let ch = Channel { inner };
        tokio::spawn(drive(ch.clone(), rx, SendQueue::new(opts.watermarks())));
        ch
    }

    pub(crate) fn attach(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.inner.cmd.send(ChanCmd::Attach(dc));
    }

    pub(crate) fn twin(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.inner.cmd.send(ChanCmd::Twin(dc));
    }

    pub(crate) fn remote_ready(&self) {
        let _ = self.inner.cmd.send(ChanCmd::RemoteReady);
    }

    /// Channel name (without the `rtcio:ch:` prefix).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The remote peer's socket id.
    pub fn peer_id(&self) -> &str {
        &self.inner.peer
    }

    /// Negotiated SCTP stream id.
    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// Options the channel was created with.
    pub fn options(&self) -> &ChannelOptions {
        &self.inner.opts
    }

    /// Current state.
    pub fn ready_state(&self) -> ReadyState {
        *lock(&self.inner.state)
    }

    /// Sends an event envelope `{e, d}`. Like rtc.io's `emit`, it reports nothing; use
    /// [`Channel::emit_wait`] to wait until the transport took it.
    pub fn emit(&self, event: &str, args: Vec<Value>) {
        let text = envelope::encode_event(event, &args);
        let _ = self
            .inner
            .cmd
            .send(ChanCmd::Write(Payload::Text(text), None));
    }

    /// Sends an event and waits until the transport accepted it (waiting for `drain` as needed).
    pub async fn emit_wait(&self, event: &str, args: Vec<Value>) -> Result<(), ChannelError> {
        self.send_wait(Payload::Text(envelope::encode_event(event, &args)))
            .await
    }

    /// rtc.io `send`: `true` if handed to the transport now, `false` if queued (wait for `drain`)
    /// or refused (an `error` event says why). [`Channel::try_send`] tells the two apart: a
    /// refused message is not queued, so no `drain` follows it.
    pub async fn send(&self, data: impl Into<Payload>) -> bool {
        matches!(self.try_send(data).await, Ok(SendOutcome::Sent))
    }

    /// [`Channel::send`] with the outcome spelled out: sent now, queued (a `drain` follows), or
    /// refused with the reason (the `error` event is emitted as well, as rtc.io does).
    pub async fn try_send(&self, data: impl Into<Payload>) -> Result<SendOutcome, ChannelError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(ChanCmd::Write(data.into(), Some(tx)))
            .map_err(|_| ChannelError::Closed)?;
        rx.await.unwrap_or(Err(ChannelError::Closed))
    }

    /// Sends and waits until the transport accepted the message, however long the queue is;
    /// never refused for the queue budget. The natural way to stream a file in Rust.
    pub async fn send_wait(&self, data: impl Into<Payload>) -> Result<(), ChannelError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .cmd
            .send(ChanCmd::WriteWait(data.into(), tx))
            .map_err(|_| ChannelError::Closed)?;
        rx.await.unwrap_or(Err(ChannelError::Closed))
    }

    /// Listens to an event (message events, or `open`, `close`, `error`, `drain`, `data`).
    /// Messages that arrived in the channel's first seconds, before anyone listened to their
    /// name, are delivered to the first listener.
    pub fn on(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        let id = self.inner.listeners.on(event, f);
        self.listening(event);
        id
    }

    /// Listens to the next `event` only.
    pub fn once(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        let id = self.inner.listeners.once(event, f);
        self.listening(event);
        id
    }

    /// Every `event`, as a stream (early messages as with [`Channel::on`]).
    pub fn subscribe(&self, event: &str) -> mpsc::UnboundedReceiver<Event> {
        let rx = self.inner.listeners.subscribe(event);
        self.listening(event);
        rx
    }

    pub(crate) fn listening(&self, event: &str) {
        let _ = self.inner.cmd.send(ChanCmd::Listening(event.to_string()));
    }

    fn has_listener(&self, event: &str) -> bool {
        !self.inner.listeners.is_empty_for(event)
            || self
                .inner
                .parent
                .as_ref()
                .is_some_and(|p| !p.listeners.is_empty_for(event))
    }

    /// Removes a listener.
    pub fn off(&self, id: ListenerId) {
        self.inner.listeners.off(id)
    }

    /// Closes the data channel; the remote gets `close`.
    pub fn close(&self) {
        let _ = self.inner.cmd.send(ChanCmd::Close);
    }

    fn local(&self, name: &str, args: Vec<Value>) {
        self.deliver(&Event::new(name, args, Origin::Local));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn buffered(dc: &Option<Arc<dyn DataChannel>>) -> usize {
    match dc {
        Some(dc) => dc.outstanding_bytes().await.unwrap_or(0),
        None => 0,
    }
}

async fn transmit(dc: &Arc<dyn DataChannel>, p: &Payload) -> Result<(), ChannelError> {
    match p {
        Payload::Text(t) => dc.send_text(t).await,
        Payload::Binary(b) => dc.send(BytesMut::from(b.as_ref())).await,
    }
    .map_err(|e| ChannelError::Send(e.to_string()))
}

async fn drive(ch: Channel, mut rx: mpsc::UnboundedReceiver<ChanCmd>, mut queue: SendQueue) {
    let mut dc: Option<Arc<dyn DataChannel>> = None;
    // Kept alive for the channel's lifetime: dropping a handle unregisters the id's events.
    let mut twins: Vec<Arc<dyn DataChannel>> = Vec::new();
    let mut twin_live = false;
    // `open` (what the user sees, and what may send) = our transport is open and the remote has
    // its end; toward rtc.io JS peers the second half is known at once.
    let mut dc_open = false;
    let mut remote_ready = false;
    let mut open = false;
    let mut waiters: VecDeque<(Payload, oneshot::Sender<Result<(), ChannelError>>)> =
        VecDeque::new();
    let mut closed_for_good = false;
    let mut early = EarlyEvents::new(std::time::Instant::now());
    let mut stall = StallWatch::default();
    loop {
        let event = async {
            match &dc {
                Some(d) => d.poll().await,
                None => std::future::pending().await,
            }
        };
        // webrtc-rs's low-threshold event tracks post-packetization bytes, which may never exceed
        // the low mark while acked-but-outstanding bytes sit above the high mark; while we hold a
        // backlog, re-check every few ms so the queue always drains.
        let backlogged = open && dc.is_some() && !(queue.is_empty() && waiters.is_empty());
        let recheck = async {
            if backlogged {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            } else {
                std::future::pending().await
            }
        };
        let twin_event = async {
            match (twin_live, twins.last()) {
                (true, Some(t)) => t.poll().await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    ChanCmd::Attach(d) => {
                        if let Err(e) = d.set_buffered_amount_low_threshold(queue.marks().low.min(u32::MAX as usize) as u32).await {
                            debug!("low threshold: {e}");
                        }
                        let already_open = matches!(d.ready_state().await, Ok(webrtc::data_channel::RTCDataChannelState::Open));
                        dc = Some(d);
                        closed_for_good = false;
                        early = EarlyEvents::new(std::time::Instant::now());
                        *lock(&ch.inner.state) = ReadyState::Connecting;
                        if already_open {
                            // Opened before our handle was registered: its `open` went elsewhere.
                            dc_open = true;
                        }
                        if dc_open && remote_ready && !open {
                            open = became_open(&ch, &dc, &mut queue, &mut waiters).await;
                        }
                    }
                    ChanCmd::Twin(t) => {
                        twins.push(t);
                        twin_live = true;
                    }
                    ChanCmd::Listening(name) => {
                        for ev in early.release(&name) {
                            ch.deliver(&ev);
                        }
                    }
                    ChanCmd::RemoteReady => {
                        remote_ready = true;
                        if dc_open && !open && dc.is_some() {
                            open = became_open(&ch, &dc, &mut queue, &mut waiters).await;
                        }
                    }
                    ChanCmd::Write(p, reply) => {
                        let outcome = if closed_for_good {
                            // Not queued: nothing would ever send it.
                            ch.local("error", vec![Value::String("RTCIOChannel: send on a closed channel".into())]);
                            Err(ChannelError::Closed)
                        } else {
                            write(&ch, &dc, open, &mut queue, p).await
                        };
                        if let Some(r) = reply { let _ = r.send(outcome); }
                    }
                    ChanCmd::WriteWait(p, reply) => {
                        if closed_for_good {
                            let _ = reply.send(Err(ChannelError::Closed));
                        } else if let (Some(d), true, true) = (&dc, open, queue.is_empty() && waiters.is_empty()) {
                            if buffered(&dc).await < queue.marks().high {
                                let _ = reply.send(transmit(d, &p).await);
                            } else {
                                waiters.push_back((p, reply));
                            }
                        } else {
                            waiters.push_back((p, reply));
                        }
                    }
                    ChanCmd::Close => {
                        if let Some(d) = &dc { let _ = d.close().await; }
                        closed_for_good = true;
                        *lock(&ch.inner.state) = ReadyState::Closed;
                    }
                }
            }
            _ = recheck => {
                let had = queue.len() + waiters.len();
                flush(&ch, &dc, open, &mut queue, &mut waiters).await;
                if had > 0 && queue.is_empty() {
                    ch.local("drain", vec![]);
                }
                if queue.is_empty() && waiters.is_empty() {
                    stall = StallWatch::default();
                } else {
                    stall.check(&ch, buffered(&dc).await, queue.len() + waiters.len());
                }
            }
            tev = twin_event => match tev {
                Some(DataChannelEvent::OnOpen) => {
                    dc_open = dc.is_some();
                    if dc_open && remote_ready && !open {
                        open = became_open(&ch, &dc, &mut queue, &mut waiters).await;
                    }
                }
                Some(DataChannelEvent::OnMessage(msg)) => ch.on_message(msg, &mut early),
                Some(_) => {}
                None => twin_live = false,
            },
            ev = event => match ev {
                Some(DataChannelEvent::OnOpen) => {
                    dc_open = true;
                    if remote_ready && !open {
                        open = became_open(&ch, &dc, &mut queue, &mut waiters).await;
                    }
                }
                Some(DataChannelEvent::OnBufferedAmountLow) => {
                    flush(&ch, &dc, open, &mut queue, &mut waiters).await;
                    ch.local("drain", vec![]);
                }
                Some(DataChannelEvent::OnMessage(msg)) => ch.on_message(msg, &mut early),
                Some(DataChannelEvent::OnError) => ch.local("error", vec![Value::String("data channel error".into())]),
                Some(DataChannelEvent::OnClose) | None => {
                    let was_attached = dc.take().is_some();
                    open = false;
                    dc_open = false;
                    let dropped = queue.clear();
                    if dropped > 0 {
                        warn!(channel = %ch.inner.name, peer = %ch.inner.peer, dropped, "channel closed with queued messages");
                    }
                    for (_, w) in waiters.drain(..) { let _ = w.send(Err(ChannelError::Closed)); }
                    if !closed_for_good {
                        *lock(&ch.inner.state) = ReadyState::Connecting;
                    }
                    if was_attached {
                        ch.local("close", vec![]);
                        if let Some(p) = &ch.inner.parent {
                            p.member_gone(&ch.inner.peer);
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
}

/// Says once (per stall) when a channel's backlog waits on a transport whose outstanding bytes
/// have not moved for [`StallWatch::AFTER`]: nothing acknowledged what we sent, so `drain` will
/// not come. (A stall showed in CI only as the application's own timeout.)
#[derive(Default)]
struct StallWatch {
    level: usize,
    since: Option<std::time::Instant>,
    told: bool,
}

impl StallWatch {
    const AFTER: std::time::Duration = std::time::Duration::from_secs(5);

    fn check(&mut self, ch: &Channel, level: usize, waiting: usize) {
        let now = std::time::Instant::now();
        match self.since {
            Some(since) if level == self.level => {
                if !self.told && now.duration_since(since) >= Self::AFTER {
                    self.told = true;
                    warn!(channel = %ch.inner.name, peer = %ch.inner.peer, outstanding = level,
                        waiting, "send backlog: the transport acknowledged nothing for 5 s");
                }
            }
            _ => {
                self.level = level;
                self.since = Some(now);
                self.told = false;
            }
        }
    }
}

/// The channel became usable: state, queued data out, then `open` (as the JS flushes before
/// dispatching it). Returns the new `open`.
async fn became_open(
    ch: &Channel,
    dc: &Option<Arc<dyn DataChannel>>,
    queue: &mut SendQueue,
    waiters: &mut VecDeque<(Payload, oneshot::Sender<Result<(), ChannelError>>)>,
) -> bool {
    *lock(&ch.inner.state) = ReadyState::Open;
    flush(ch, dc, true, queue, waiters).await;
    ch.local("open", vec![]);
    true
}

impl Channel {
    fn on_message(
        &self,
        msg: rtc::data_channel::RTCDataChannelMessage,
        early: &mut EarlyEvents<Event>,
    ) {
        let origin = Origin::Peer(self.inner.peer.clone());
        let ev = if msg.is_string {
            match std::str::from_utf8(&msg.data) {
                Ok(text) => match envelope::decode_channel_text(text) {
                    ChannelText::Event(name, args) => Event::new(&name, args, origin),
                    ChannelText::Invalid => {
                        return self.local(
                            "error",
                            vec![Value::String("RTCIOChannel: invalid JSON envelope".into())],
                        );
                    }
                    ChannelText::Ignore => return,
                    ChannelText::Reserved(name) => {
                        debug!(channel = %self.inner.name, peer = %self.inner.peer, %name, "reserved event from the peer dropped");
                        return;
                    }
                },
                Err(_) => {
                    return self.local(
                        "error",
                        vec![Value::String("RTCIOChannel: invalid JSON envelope".into())],
                    );
                }
            }
        } else {
            data_event(msg.data.freeze(), origin)
        };
        let has = self.has_listener(&ev.name);
        let name = ev.name.clone();
        if let Some(ev) = early.offer(&name, ev, has, std::time::Instant::now()) {
            self.deliver(&ev);
        }
    }

    /// A peer's message to this channel's listeners and its broadcast's.
    fn deliver(&self, ev: &Event) {
        self.inner.listeners.dispatch(ev);
        if let Some(p) = &self.inner.parent {
            p.listeners.dispatch(ev);
        }
    }
}

fn data_event(bytes: Bytes, origin: Origin) -> Event {
    Event {
        name: "data".into(),
        args: vec![],
        origin,
        data: Some(bytes),
        stream: None,
    }
}

async fn write(
    ch: &Channel,
    dc: &Option<Arc<dyn DataChannel>>,
    open: bool,
    queue: &mut SendQueue,
    p: Payload,
) -> Result<SendOutcome, ChannelError> {
    let level = if open { buffered(dc).await } else { 0 };
    match queue.write(open && dc.is_some(), level, p) {
        Write::SendNow(p) => match dc {
            Some(d) => match transmit(d, &p).await {
                Ok(()) => Ok(SendOutcome::Sent),
                Err(e) => {
                    // Loud, not silent: the caller gets the error and an error event.
                    ch.local("error", vec![Value::String(e.to_string())]);
                    Err(e)
                }
            },
            None => Err(ChannelError::Closed),
        },
        Write::Queued => Ok(SendOutcome::Queued),
        Write::OverBudget => {
            ch.local(
                "error",
                vec![Value::String(
                    "RTCIOChannel: queue budget exceeded — wait for 'drain' before sending more"
                        .into(),
                )],
            );
            Err(ChannelError::OverBudget)
        }
    }
}

async fn flush(
    ch: &Channel,
    dc: &Option<Arc<dyn DataChannel>>,
    open: bool,
    queue: &mut SendQueue,
    waiters: &mut VecDeque<(Payload, oneshot::Sender<Result<(), ChannelError>>)>,
) {
    let Some(d) = dc else { return };
    loop {
        let level = buffered(dc).await;
        if let Some(p) = queue.next_to_flush(open, level) {
            match transmit(d, &p).await {
                Ok(()) => queue.sent(),
                Err(e) => {
                    // Retried once on the next flush; refused again, dropped — and said so
                    // (the caller was told `false`: queued, not lost).
                    if let Some(dropped) = queue.refused(p) {
                        ch.local(
                            "error",
                            vec![Value::String(format!(
                                "RTCIOChannel: a queued {}-byte message was refused twice by \
                                 the transport and dropped: {e}",
                                match &dropped {
                                    Payload::Text(t) => t.len(),
                                    Payload::Binary(b) => b.len(),
                                }
                            ))],
                        );
                    }
                    break;
                }
            }
            continue;
        }
        if !queue.is_empty() || !open || level >= queue.marks().high {
            break;
        }
        let Some((p, reply)) = waiters.pop_front() else {
            break;
        };
        let r = transmit(d, &p).await;
        let failed = r.is_err();
        let _ = reply.send(r);
        if failed {
            break;
        }
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Payload::Text(s.to_string())
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Payload::Text(s)
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Payload::Binary(b)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(b: Vec<u8>) -> Self {
        Payload::Binary(Bytes::from(b))
    }
}

impl From<&[u8]> for Payload {
    fn from(b: &[u8]) -> Self {
        Payload::Binary(Bytes::copy_from_slice(b))
    }
}

pub(crate) struct BroadcastInner {
    name: String,
    opts: ChannelOptions,
    listeners: Registry,
    members: Mutex<HashMap<String, Channel>>,
    closed: Mutex<bool>,
}

impl BroadcastInner {
    fn member_gone(&self, peer: &str) {
        let now_empty = {
            let mut m = lock(&self.members);
            if m.remove(peer).is_none() {
                return;
            }
            m.is_empty()
        };
        let ev = |name: &str, args: Vec<Value>| Event::new(name, args, Origin::Local);
        self.listeners
            .dispatch(&ev("peer-left", vec![Value::String(peer.to_string())]));
        if now_empty {
            self.listeners.dispatch(&ev("close", vec![]));
        }
    }
}

/// One channel name to every peer, current and future (rtc.io `socket.createChannel`).
#[derive(Clone)]
pub struct BroadcastChannel {
    pub(crate) inner: Arc<BroadcastInner>,
}

impl std::fmt::Debug for BroadcastChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BroadcastChannel")
            .field("name", &self.inner.name)
            .finish()
    }
}

impl BroadcastChannel {
    pub(crate) fn new(name: &str, opts: ChannelOptions) -> Self {
        BroadcastChannel {
            inner: Arc::new(BroadcastInner {
                name: name.to_string(),
                opts,
                listeners: Registry::default(),
                members: Mutex::new(HashMap::new()),
                closed: Mutex::new(false),
            }),
        }
    }

    /// Channel name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Options given at creation (later calls' options are ignored, as in rtc.io).
    pub fn options(&self) -> &ChannelOptions {
        &self.inner.opts
    }

    pub(crate) fn is_closed(&self) -> bool {
        *lock(&self.inner.closed)
    }

    pub(crate) fn add_member(&self, ch: Channel) {
        lock(&self.inner.members).insert(ch.peer_id().to_string(), ch);
    }

    /// The remote gone or cleaned up: `peer-left`, and `close` when it was the last.
    pub(crate) fn peer_cleaned_up(&self, peer: &str) {
        self.inner.member_gone(peer);
    }

    /// The per-peer channel to `peer`, if attached.
    pub fn member(&self, peer: &str) -> Option<Channel> {
        lock(&self.inner.members).get(peer).cloned()
    }

    /// Socket ids of the peers this channel currently reaches.
    pub fn peers(&self) -> Vec<String> {
        lock(&self.inner.members).keys().cloned().collect()
    }

    fn members(&self) -> Vec<Channel> {
        lock(&self.inner.members).values().cloned().collect()
    }

    /// Sends an event to every peer.
    pub fn emit(&self, event: &str, args: Vec<Value>) {
        for m in self.members() {
            m.emit(event, args.clone());
        }
    }

    /// rtc.io `send` to every peer: true only if every per-peer send returned true.
    pub async fn send(&self, data: impl Into<Payload>) -> bool {
        let p: Payload = data.into();
        let mut all = true;
        for m in self.members() {
            all &= m.send(p.clone()).await;
        }
        all
    }

    /// Listens to an event from any peer (`Event::origin` tells which).
    pub fn on(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        let id = self.inner.listeners.on(event, f);
        for m in self.members() {
            m.listening(event);
        }
        id
    }

    /// Every `event` from any peer, as a stream.
    pub fn subscribe(&self, event: &str) -> mpsc::UnboundedReceiver<Event> {
        let rx = self.inner.listeners.subscribe(event);
        for m in self.members() {
            m.listening(event);
        }
        rx
    }

    /// Removes a listener.
    pub fn off(&self, id: ListenerId) {
        self.inner.listeners.off(id)
    }

    /// Closes every per-peer channel and stops attaching new peers.
    pub fn close(&self) {
        *lock(&self.inner.closed) = true;
        for m in self.members() {
            m.close();
        }
        self.inner
            .listeners
            .dispatch(&Event::new("close", vec![], Origin::Local));
    }
}
