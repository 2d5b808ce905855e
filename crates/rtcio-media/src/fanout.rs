//! Single-encode fan-out: one encoder publishes each encoded frame once, every peer's track
//! subscribes. Keyframe requests from any subscriber (a join, a PLI, a drop) coalesce into one
//! forced IDR on the encoder's next frame.
//!
//! Each subscriber has a bounded queue. Publishing never blocks: when a subscriber's queue is
//! full the frame is dropped *for that subscriber only*, it skips delta frames until the next
//! keyframe (they would not decode), and a keyframe is requested on its behalf.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::mpsc;
use tracing::debug;

use crate::frame::EncodedFrame;

#[derive(Debug)]
struct Slot {
    id: u64,
    tx: mpsc::Sender<EncodedFrame>,
    waiting_for_keyframe: bool,
    dropped: u64,
}

#[derive(Debug, Default)]
struct Shared {
    slots: Mutex<Vec<Slot>>,
    keyframe_requested: AtomicBool,
    keyframe_requests: AtomicU64,
    next_id: AtomicU64,
    published: AtomicU64,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        // A panic while holding this lock cannot leave the Vec inconsistent: recover it.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn request_keyframe(&self) {
        self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        self.keyframe_requested.store(true, Ordering::Release);
    }
}

/// What one [`EncodedFanout::publish`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Subscribers that got the frame.
    pub delivered: usize,
    /// Subscribers whose queue was full (frame dropped for them, keyframe requested).
    pub dropped: usize,
    /// Subscribers skipped because they wait for a keyframe.
    pub skipped: usize,
    /// Subscribers found gone and removed.
    pub removed: usize,
}

/// The publishing side, owned by the encoder loop. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EncodedFanout {
    shared: Arc<Shared>,
    capacity: usize,
}

impl EncodedFanout {
    /// A fan-out whose subscribers each buffer up to `capacity` frames (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            shared: Arc::new(Shared::default()),
            capacity: capacity.max(1),
        }
    }

    /// Adds a subscriber (a peer's track). It receives nothing until the next keyframe, and a
    /// keyframe is requested for it.
    pub fn subscribe(&self) -> FanoutSubscriber {
        let (tx, rx) = mpsc::channel(self.capacity);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        self.shared.slots().push(Slot {
            id,
            tx,
            waiting_for_keyframe: true,
            dropped: 0,
        });
        self.shared.request_keyframe();
        debug!(id, "fan-out subscriber added");
        FanoutSubscriber {
            id,
            rx,
            requester: self.keyframe_requester(),
        }
    }

    /// Current number of subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.shared.slots().len()
    }

    /// A handle that asks for a keyframe (for RTCP PLI/FIR handlers).
    pub fn keyframe_requester(&self) -> KeyframeRequester {
        KeyframeRequester {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Encoder side: true (once) if a keyframe was requested since the last call.
    pub fn take_keyframe_request(&self) -> bool {
        self.shared.keyframe_requested.swap(false, Ordering::AcqRel)
    }

    /// Total keyframe requests received (before coalescing).
    pub fn keyframe_requests(&self) -> u64 {
        self.shared.keyframe_requests.load(Ordering::Relaxed)
    }

    /// Frames published so far.
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Hands one encoded frame to every subscriber without blocking.
    pub fn publish(&self, frame: &EncodedFrame) -> PublishReport {
        self.shared.published.fetch_add(1, Ordering::Relaxed);
        let mut report = PublishReport::default();
        let mut need_keyframe = false;
        let mut slots = self.shared.slots();
        slots.retain_mut(|slot| {
            if slot.waiting_for_keyframe && !frame.keyframe {
                report.skipped += 1;
                return !slot.tx.is_closed();
            }
            match slot.tx.try_send(frame.clone()) {
                Ok(()) => {
                    slot.waiting_for_keyframe = false;
                    report.delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    slot.dropped += 1;
                    slot.waiting_for_keyframe = true;
                    need_keyframe = true;
                    report.dropped += 1;
                    debug!(
                        id = slot.id,
                        dropped = slot.dropped,
                        "slow subscriber, frame dropped"
                    );
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    report.removed += 1;
                    false
                }
            }
        });
        drop(slots);
        // Audio frames are all "keyframes": a drop needs no request there.
        if need_keyframe {
            self.shared.request_keyframe();
        }
        report
    }
}

/// Asks the encoder behind a fan-out for a keyframe. Cheap to clone, usable from any thread;
/// does not keep the fan-out alive.
#[derive(Clone, Debug)]
pub struct KeyframeRequester {
    shared: Weak<Shared>,
}

impl KeyframeRequester {
    /// Requests a keyframe; all requests until the encoder's next frame become one IDR.
    /// Does nothing once the fan-out is gone.
    pub fn request_keyframe(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.request_keyframe();
        }
    }
}

/// The receiving side of one subscriber (one peer's track). Dropping it unsubscribes.
#[derive(Debug)]
pub struct FanoutSubscriber {
    id: u64,
    rx: mpsc::Receiver<EncodedFrame>,
    requester: KeyframeRequester,
}

impl FanoutSubscriber {
    /// Subscriber id (unique per fan-out).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the next frame; `None` when the fan-out is gone.
    pub async fn recv(&mut self) -> Option<EncodedFrame> {
        self.rx.recv().await
    }

    /// Takes a queued frame without waiting.
    pub fn try_recv(&mut self) -> Option<EncodedFrame> {
        self.rx.try_recv().ok()
    }

    /// Blocks the current (non-async) thread for the next frame.
    pub fn blocking_recv(&mut self) -> Option<EncodedFrame> {
        self.rx.blocking_recv()
    }

    /// Asks for a keyframe (the peer sent a PLI).
    pub fn request_keyframe(&self) {
        self.requester.request_keyframe();
    }

    /// A requester that outlives this subscriber's borrow.
    pub fn keyframe_requester(&self) -> KeyframeRequester {
        self.requester.clone()
    }
}
