//! Perfect negotiation driven by remote descriptions in any order and any signaling state:
//! the decisions must follow the rules whatever a peer sends.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::proto::envelope::{Description, SdpKind};
use rtcio_fuzz::proto::negotiation::{BreakAction, Negotiator, RemoteAction, SignalingState};

fn state(b: u8) -> SignalingState {
    match b % 4 {
        0 => SignalingState::Stable,
        1 => SignalingState::HaveLocalOffer,
        2 => SignalingState::HaveRemoteOffer,
        _ => SignalingState::Other,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, ops)) = data.split_first() else {
        return;
    };
    let polite = first & 1 == 1;
    let break_after = Duration::from_millis(u64::from(first));
    let mut n = Negotiator::new(polite, break_after);
    let mut kept = false;
    for pair in ops.chunks(2) {
        let op = pair[0];
        let st = state(pair.get(1).copied().unwrap_or(0));
        match op % 6 {
            0 | 1 => {
                let kind = if op % 6 == 0 {
                    SdpKind::Offer
                } else {
                    SdpKind::Answer
                };
                let desc = Description {
                    kind,
                    sdp: format!("v=0 {op}"),
                };
                let action = n.on_remote_description(&desc, st);
                let collision = kind == SdpKind::Offer && st != SignalingState::Stable;
                match action {
                    RemoteAction::IgnoreAndArm(d) => {
                        assert!(collision && !polite);
                        assert_eq!(d, break_after);
                        assert!(n.ignoring_offer());
                        kept = true;
                    }
                    RemoteAction::DropStaleAnswer => {
                        assert!(kind == SdpKind::Answer && st != SignalingState::HaveLocalOffer)
                    }
                    RemoteAction::RollbackThenApply => {
                        assert!(collision && polite);
                        assert!(n.wants_offer(SignalingState::Stable));
                    }
                    RemoteAction::Apply => assert!(!collision),
                }
                if kind == SdpKind::Offer && !matches!(action, RemoteAction::IgnoreAndArm(_)) {
                    kept = false;
                }
                if !matches!(action, RemoteAction::IgnoreAndArm(_)) {
                    assert!(!n.ignoring_offer());
                }
            }
            2 => {
                let start = n.on_negotiation_needed(st);
                assert_eq!(start, st == SignalingState::Stable);
                assert_eq!(n.wants_offer(st), st == SignalingState::Stable);
            }
            3 => {
                n.on_offer_sent();
                assert!(!n.wants_offer(SignalingState::Stable));
            }
            4 => match n.on_break_timer(st) {
                BreakAction::RollbackAndApply(d) => {
                    assert!(kept && st == SignalingState::HaveLocalOffer);
                    assert_eq!(d.kind, SdpKind::Offer);
                    assert!(n.wants_offer(SignalingState::Stable));
                    kept = false;
                }
                BreakAction::Nothing => {
                    if st == SignalingState::HaveLocalOffer {
                        assert!(!kept);
                    }
                    kept = false;
                }
            },
            _ => assert_eq!(n.polite(), polite),
        }
    }
});
