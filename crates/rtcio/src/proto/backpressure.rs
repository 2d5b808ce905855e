//! Send queues: the custom-channel write algorithm of PROTOCOL.md §4.6 and the ctrl pre-open
//! queue of §4.5, as plain data structures the channel drivers consult.
//!
//! One deliberate difference from the JS (§12.14): when the transport refuses a queued message
//! the JS drops it; here the driver puts it back at the head of the queue and retries it on the
//! next flush. A message refused twice in a row (too large for the peer, a transport going
//! away) is dropped with an `error` event that says so, rather than blocking the queue forever:
//! nothing the user sent is lost without a word.

use std::collections::VecDeque;

use bytes::Bytes;

/// Default high-water mark: direct sends only while the transport buffers less than this.
pub const DEFAULT_HIGH_WATERMARK: usize = 16 * 1024 * 1024;
/// Default low-water mark: the `drain` trigger.
pub const DEFAULT_LOW_WATERMARK: usize = 1024 * 1024;
/// Default cap on bytes held in our own queue.
pub const DEFAULT_QUEUE_BUDGET: usize = 1024 * 1024;
/// Ctrl messages kept while the ctrl channel is not open yet.
pub const CTRL_QUEUE_MAX: usize = 1024;

/// One outbound data-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A text message (event envelopes, or `send(string)`).
    Text(String),
    /// A binary message.
    Binary(Bytes),
}

impl Payload {
    /// Size as rtc.io accounts it: 2 bytes per UTF-16 unit for text, the length for binary.
    pub fn accounted_size(&self) -> usize {
        match self {
            Payload::Text(s) => 2 * s.encode_utf16().count(),
            Payload::Binary(b) => b.len(),
        }
    }
}

/// Result of a write attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Hand this to the transport now; `send()` reports `true` if the transport accepts it.
    SendNow(Payload),
    /// Held in our queue until the next flush; `send()` reports `false`.
    Queued,
    /// Over the queue budget: refused, `error` is raised, `send()` reports `false`.
    OverBudget,
}

/// Watermarks and budget of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    /// Direct sends only while buffered < high.
    pub high: usize,
    /// `drain` fires when buffered falls to this.
    pub low: usize,
    /// Cap on our own queue.
    pub budget: usize,
}

impl Default for Watermarks {
    fn default() -> Self {
        Watermarks {
            high: DEFAULT_HIGH_WATERMARK,
            low: DEFAULT_LOW_WATERMARK,
            budget: DEFAULT_QUEUE_BUDGET,
        }
    }
}

/// The custom-channel send queue.
#[derive(Debug, Default)]
pub struct SendQueue {
    marks: Watermarks,
    queue: VecDeque<Payload>,
    queued_bytes: usize,
    /// The head was refused by the transport once already.
    head_refused: bool,
}

impl SendQueue {
    /// An empty queue with these watermarks.
    pub fn new(marks: Watermarks) -> Self {
        SendQueue {
            marks,
            queue: VecDeque::new(),
            queued_bytes: 0,
            head_refused: false,
        }
    }

    /// The watermarks in force.
    pub fn marks(&self) -> Watermarks {
        self.marks
    }

    /// Bytes held in our queue (rtc.io accounting).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Messages held in our queue.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// A user write, given whether the channel is open and how much the transport buffers.
    pub fn write(&mut self, open: bool, buffered: usize, payload: Payload) -> Write {
        if open && buffered < self.marks.high && self.queue.is_empty() {
            return Write::SendNow(payload);
        }
        let size = payload.accounted_size();
        if self.queued_bytes + size > self.marks.budget {
            return Write::OverBudget;
        }
        self.queued_bytes += size;
        self.queue.push_back(payload);
        Write::Queued
    }

    /// Next message to flush, if the transport has room.
    pub fn next_to_flush(&mut self, open: bool, buffered: usize) -> Option<Payload> {
        if !open || buffered >= self.marks.high {
            return None;
        }
        let p = self.queue.pop_front()?;
        self.queued_bytes -= p.accounted_size();
        Some(p)
    }

    /// Puts a message the transport refused back at the head (it is retried, never dropped).
    pub fn requeue_front(&mut self, payload: Payload) {
        self.queued_bytes += payload.accounted_size();
        self.queue.push_front(payload);
    }

    /// The transport refused `payload` (the message [`SendQueue::next_to_flush`] gave): the
    /// first time it goes back to the head to be retried (`None`); refused again in a row, it
    /// is handed back to be dropped, and the caller must say so.
    pub fn refused(&mut self, payload: Payload) -> Option<Payload> {
        if std::mem::take(&mut self.head_refused) {
            return Some(payload);
        }
        self.head_refused = true;
        self.requeue_front(payload);
        None
    }

    /// The transport took the message [`SendQueue::next_to_flush`] gave.
    pub fn sent(&mut self) {
        self.head_refused = false;
    }

    /// Drops everything (the channel closed). Returns how many messages were dropped.
    pub fn clear(&mut self) -> usize {
        let n = self.queue.len();
        self.queue.clear();
        self.queued_bytes = 0;
        // The refused head (if any) is gone: the next message gets its own retry.
        self.head_refused = false;
        n
    }
}

/// The ctrl pre-open queue: at most [`CTRL_QUEUE_MAX`] envelopes, oldest dropped first.
#[derive(Debug, Default)]
pub struct CtrlQueue {
    queue: VecDeque<String>,
    dropped: u64,
}

impl CtrlQueue {
    /// Queues an envelope; returns true if an old one had to be dropped to make room.
    pub fn push(&mut self, envelope: String) -> bool {
        let full = self.queue.len() >= CTRL_QUEUE_MAX;
        if full {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(envelope);
        full
    }

    /// Takes the queue for flushing, in order.
    pub fn take(&mut self) -> VecDeque<String> {
        std::mem::take(&mut self.queue)
    }

    /// Puts unsent envelopes back at the head, keeping their order.
    pub fn restore_front(&mut self, mut rest: VecDeque<String>) {
        rest.extend(self.queue.drain(..));
        self.queue = rest;
    }

    /// Envelopes waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Envelopes dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Empties the queue (ctrl closed).
    pub fn clear(&mut self) {
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(n: usize) -> Payload {
        Payload::Binary(Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn direct_send_only_when_open_below_high_and_queue_empty() {
        let mut q = SendQueue::new(Watermarks {
            high: 100,
            low: 10,
            budget: 50,
        });
        assert_eq!(q.write(true, 0, bin(5)), Write::SendNow(bin(5)));
        assert_eq!(q.write(false, 0, bin(5)), Write::Queued);
        // Queue not empty: even an open channel queues, preserving order.
        assert_eq!(q.write(true, 0, bin(5)), Write::Queued);
        assert_eq!(q.queued_bytes(), 10);
        assert_eq!(q.write(true, 100, bin(41)), Write::OverBudget);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_refused_message_is_retried_once_then_handed_back() {
        let mut q = SendQueue::new(Watermarks {
            high: 100,
            low: 10,
            budget: 1000,
        });
        q.write(false, 0, Payload::Text("a".into()));
        q.write(false, 0, Payload::Text("b".into()));
        // Refused once: back at the head, still counted.
        let a = q.next_to_flush(true, 0).unwrap();
        assert_eq!(q.refused(a), None);
        assert_eq!(q.queued_bytes(), 4);
        // Refused again in a row: handed back (the driver drops it and says so).
        let a = q.next_to_flush(true, 0).unwrap();
        assert_eq!(q.refused(a), Some(Payload::Text("a".into())));
        assert_eq!(q.queued_bytes(), 2);
        // A success in between starts the count over.
        let b = q.next_to_flush(true, 0).unwrap();
        assert_eq!(q.refused(b), None);
        let b = q.next_to_flush(true, 0).unwrap();
        q.sent();
        q.write(false, 0, b);
        let b = q.next_to_flush(true, 0).unwrap();
        assert_eq!(q.refused(b), None);
        // Cleared (the channel closed) with a refused head: the next message starts over.
        q.clear();
        q.write(false, 0, Payload::Text("c".into()));
        let c = q.next_to_flush(true, 0).unwrap();
        assert_eq!(q.refused(c), None);
    }

    #[test]
    fn flush_respects_high_watermark_and_order() {
        let mut q = SendQueue::new(Watermarks {
            high: 100,
            low: 10,
            budget: 1000,
        });
        q.write(false, 0, Payload::Text("a".into()));
        q.write(false, 0, Payload::Text("b".into()));
        assert_eq!(q.queued_bytes(), 4);
        assert_eq!(q.next_to_flush(false, 0), None);
        assert_eq!(q.next_to_flush(true, 100), None);
        let first = q.next_to_flush(true, 0).unwrap();
        assert_eq!(first, Payload::Text("a".into()));
        q.requeue_front(first);
        assert_eq!(q.next_to_flush(true, 0), Some(Payload::Text("a".into())));
        assert_eq!(q.next_to_flush(true, 0), Some(Payload::Text("b".into())));
        assert!(q.is_empty());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn text_is_accounted_in_utf16_units() {
        assert_eq!(Payload::Text("é😀".into()).accounted_size(), 6);
    }

    #[test]
    fn ctrl_queue_drops_oldest() {
        let mut q = CtrlQueue::default();
        for i in 0..CTRL_QUEUE_MAX {
            assert!(!q.push(i.to_string()));
        }
        assert!(q.push("last".into()));
        assert_eq!(q.dropped(), 1);
        let items = q.take();
        assert_eq!(items.front().map(String::as_str), Some("1"));
        assert_eq!(items.back().map(String::as_str), Some("last"));
        let mut rest = items;
        rest.truncate(2);
        q.push("new".into());
        q.restore_front(rest);
        assert_eq!(
            q.take().into_iter().collect::<Vec<_>>(),
            vec!["1", "2", "new"]
        );
    }
}
