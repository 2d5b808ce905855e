//! Perfect negotiation decisions (PROTOCOL.md §3, §12.6) as a plain state machine.
//!
//! The peer driver serialises everything per peer — inbound signals and our own offers — so an
//! offer of ours is always fully sent before the next inbound message is looked at. Glare is
//! therefore "a remote offer arrives while we are in `have-local-offer`". The polite side rolls
//! back and answers; the impolite side ignores the offer but keeps it, and if its own offer stays
//! unanswered for a while (the remote may be impolite too — JS newcomers always are), it breaks
//! the deadlock by rolling back and answering the kept offer, then renegotiating its own changes.

use std::time::Duration;

use super::envelope::{Description, SdpKind};

/// The signaling state the driver reads from the peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalingState {
    /// No offer/answer exchange in progress.
    Stable,
    /// We sent an offer and wait for the answer.
    HaveLocalOffer,
    /// We applied a remote offer and owe an answer.
    HaveRemoteOffer,
    /// Anything else (pranswer states, closed).
    Other,
}

/// What to do with an inbound description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAction {
    /// Apply it; if it is an offer, answer it.
    Apply,
    /// Glare on the polite side: roll back our offer, apply theirs, answer, then re-offer ours.
    RollbackThenApply,
    /// Glare on the impolite side: ignore it (kept for the deadlock breaker); arm the timer.
    IgnoreAndArm(Duration),
    /// An answer while stable: a stale answer to an offer we rolled back. Drop silently.
    DropStaleAnswer,
}

/// What to do when the deadlock timer fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakAction {
    /// Nothing to break (answered meanwhile).
    Nothing,
    /// Roll back our offer, apply the kept remote offer, answer it, then re-offer ours.
    RollbackAndApply(Description),
}

/// Per-peer negotiation state.
#[derive(Debug)]
pub struct Negotiator {
    polite: bool,
    /// The last remote offer we ignored, kept for the deadlock breaker.
    kept_offer: Option<Description>,
    /// Local changes are waiting for an offer.
    needed: bool,
    /// Errors after an ignored offer (its candidates) are expected and swallowed.
    ignoring: bool,
    break_after: Duration,
}

impl Negotiator {
    /// A negotiator for a polite (existing member) or impolite (newcomer) peer. `break_after` is how
    /// long an impolite side waits for its answer before yielding (callers add jitter).
    pub fn new(polite: bool, break_after: Duration) -> Self {
        Negotiator {
            polite,
            kept_offer: None,
            needed: false,
            ignoring: false,
            break_after,
        }
    }

    /// Whether this side yields on glare.
    pub fn polite(&self) -> bool {
        self.polite
    }

    /// Whether the last description was ignored (candidate errors are then expected).
    pub fn ignoring_offer(&self) -> bool {
        self.ignoring
    }

    /// Local changes want an offer. Returns true when the driver should make one now
    /// (only from `stable`; otherwise it happens after the current exchange settles).
    pub fn on_negotiation_needed(&mut self, state: SignalingState) -> bool {
        self.needed = true;
        state == SignalingState::Stable
    }

    /// Call once an offer of ours has been sent.
    pub fn on_offer_sent(&mut self) {
        self.needed = false;
    }

    /// After an exchange completes (back to stable): should we offer our pending changes?
    pub fn wants_offer(&self, state: SignalingState) -> bool {
        self.needed && state == SignalingState::Stable
    }

    /// Decides what to do with an inbound description.
    pub fn on_remote_description(
        &mut self,
        desc: &Description,
        state: SignalingState,
    ) -> RemoteAction {
        let collision = desc.kind == SdpKind::Offer && state != SignalingState::Stable;
        if collision && !self.polite {
            self.ignoring = true;
            self.kept_offer = Some(desc.clone());
            return RemoteAction::IgnoreAndArm(self.break_after);
        }
        self.ignoring = false;
        if desc.kind == SdpKind::Answer && state != SignalingState::HaveLocalOffer {
            return RemoteAction::DropStaleAnswer;
        }
        if desc.kind == SdpKind::Offer {
            self.kept_offer = None;
        }
        if collision {
            // Our offer is discarded; its changes must be offered again.
            self.needed = true;
            RemoteAction::RollbackThenApply
        } else {
            RemoteAction::Apply
        }
    }

    /// The deadlock timer fired.
    pub fn on_break_timer(&mut self, state: SignalingState) -> BreakAction {
        match (state, self.kept_offer.take()) {
            (SignalingState::HaveLocalOffer, Some(offer)) => {
                self.ignoring = false;
                self.needed = true;
                BreakAction::RollbackAndApply(offer)
            }
            _ => BreakAction::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer() -> Description {
        Description {
            kind: SdpKind::Offer,
            sdp: "v=0".into(),
        }
    }
    fn answer() -> Description {
        Description {
            kind: SdpKind::Answer,
            sdp: "v=0".into(),
        }
    }
    const T: Duration = Duration::from_secs(3);

    #[test]
    fn plain_exchange() {
        let mut n = Negotiator::new(false, T);
        assert_eq!(
            n.on_remote_description(&offer(), SignalingState::Stable),
            RemoteAction::Apply
        );
        assert!(n.on_negotiation_needed(SignalingState::Stable));
        n.on_offer_sent();
        assert_eq!(
            n.on_remote_description(&answer(), SignalingState::HaveLocalOffer),
            RemoteAction::Apply
        );
        assert!(!n.wants_offer(SignalingState::Stable));
    }

    #[test]
    fn polite_side_yields_on_glare_and_reoffers() {
        let mut n = Negotiator::new(true, T);
        assert!(n.on_negotiation_needed(SignalingState::Stable));
        n.on_offer_sent();
        assert_eq!(
            n.on_remote_description(&offer(), SignalingState::HaveLocalOffer),
            RemoteAction::RollbackThenApply
        );
        // After answering, our own changes go out again.
        assert!(n.wants_offer(SignalingState::Stable));
        // The other side's answer to our rolled-back offer arrives later: stale.
        n.on_offer_sent();
        assert_eq!(
            n.on_remote_description(&answer(), SignalingState::Stable),
            RemoteAction::DropStaleAnswer
        );
    }

    #[test]
    fn impolite_side_ignores_then_breaks_the_deadlock() {
        let mut n = Negotiator::new(false, T);
        n.on_negotiation_needed(SignalingState::Stable);
        n.on_offer_sent();
        assert_eq!(
            n.on_remote_description(&offer(), SignalingState::HaveLocalOffer),
            RemoteAction::IgnoreAndArm(T)
        );
        assert!(n.ignoring_offer());
        match n.on_break_timer(SignalingState::HaveLocalOffer) {
            BreakAction::RollbackAndApply(d) => assert_eq!(d, offer()),
            other => panic!("{other:?}"),
        }
        assert!(!n.ignoring_offer());
        assert!(n.wants_offer(SignalingState::Stable));
    }

    #[test]
    fn impolite_timer_after_answer_does_nothing() {
        let mut n = Negotiator::new(false, T);
        n.on_negotiation_needed(SignalingState::Stable);
        n.on_offer_sent();
        n.on_remote_description(&offer(), SignalingState::HaveLocalOffer);
        // Our answer arrives first (the remote was polite after all).
        assert_eq!(
            n.on_remote_description(&answer(), SignalingState::HaveLocalOffer),
            RemoteAction::Apply
        );
        // The remote, having rolled back, re-sends its offer: applied normally, kept offer cleared.
        assert_eq!(
            n.on_remote_description(&offer(), SignalingState::Stable),
            RemoteAction::Apply
        );
        assert_eq!(
            n.on_break_timer(SignalingState::Stable),
            BreakAction::Nothing
        );
    }

    #[test]
    fn negotiation_needed_outside_stable_is_deferred() {
        let mut n = Negotiator::new(true, T);
        assert!(!n.on_negotiation_needed(SignalingState::HaveRemoteOffer));
        assert!(n.wants_offer(SignalingState::Stable));
        assert!(!n.wants_offer(SignalingState::HaveLocalOffer));
    }
}
