//! Our extension for a reconnect with a new socket id: a client tells us the id it had before,
//! `#rtcio:previous-id {"id": OLD}`, once it has closed the peer connections that its peers know
//! under `OLD`, and we send `#rtcio:peer-left {"id": OLD}` to the rooms it is in now — the hint the
//! server would have sent on `OLD`'s disconnect had it not been restarted (or had it seen the
//! socket go). rtc.io browsers then clean the old connection up at once (PROTOCOL.md §6.3) instead
//! of showing a second tile for 12 s. The real rtc.io-server has no handler for the event and
//! drops it, so sending it is harmless there.
//!
//! The rules here are plain functions; the session applies them cheapest first (parse, own id,
//! rooms, rate) and asks the store whether `OLD` is live only then.

use serde_json::value::RawValue;

use crate::protocol::InboundError;

/// Client → server: `{"id": "<the client's socket id before this connection>"}`.
pub const EV_PREVIOUS_ID: &str = "#rtcio:previous-id";

/// The longest id accepted (socket.io ids are 20 characters, socketioxide's 16).
pub const MAX_ID_LEN: usize = 64;

/// Hints a socket may ask for at once (our client asks twice per batch of closed connections,
/// 1 s apart; a reconnect normally has one or two batches).
pub const BURST: f64 = 8.0;

/// Hints per second per socket after the burst.
pub const PER_SECOND: f64 = 1.0;

/// Why a previous-id claim is not answered with a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The claimed id is the sender's own (its peers must not drop it).
    #[error("the claimed id is the sender's own")]
    OwnId,
    /// The sender is in no room: nobody to tell.
    #[error("the sender is in no room")]
    NoRoom,
    /// Too many claims from this socket.
    #[error("previous-id rate limit")]
    RateLimited,
    /// The claimed id is a connected socket (on any process): its peers must not drop it.
    #[error("the claimed id is a live socket")]
    Live,
}

/// The claimed id of a `#rtcio:previous-id` payload: a non-empty string of at most
/// [`MAX_ID_LEN`] bytes without control characters.
pub fn parse(arg: Option<&RawValue>) -> Result<String, InboundError> {
    #[derive(serde::Deserialize)]
    struct Claim {
        id: serde_json::Value,
    }
    let arg = arg.ok_or_else(|| InboundError::MissingPayload(EV_PREVIOUS_ID.into()))?;
    let claim: Claim = serde_json::from_str(arg.get())
        .map_err(|_| InboundError::NotAnObject(EV_PREVIOUS_ID.into()))?;
    match claim.id {
        serde_json::Value::String(id)
            if !id.is_empty() && id.len() <= MAX_ID_LEN && !id.chars().any(char::is_control) =>
        {
            Ok(id)
        }
        _ => Err(InboundError::Malformed(
            "previous-id: id is not a short string".into(),
        )),
    }
}

/// The checks that need no store: the claim is not the sender's own id and the sender is in a
/// room (`rooms`: rooms joined through the room logic).
pub fn precheck(sender: &str, claimed: &str, rooms: usize) -> Result<(), Refusal> {
    if claimed == sender {
        return Err(Refusal::OwnId);
    }
    if rooms == 0 {
        return Err(Refusal::NoRoom);
    }
    Ok(())
}

/// The last check, with the store's answer: only an id that is no connected socket is hinted.
pub fn verdict(claimed_is_live: bool) -> Result<(), Refusal> {
    if claimed_is_live {
        Err(Refusal::Live)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::TokenBucket;
    use std::time::{Duration, Instant};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("valid JSON")
    }

    #[test]
    fn parse_takes_short_string_ids_only() {
        assert_eq!(parse(Some(&raw(r#"{"id":"abc"}"#))), Ok("abc".to_string()));
        assert_eq!(
            parse(Some(&raw(r#"{"id":"abc","x":[1]}"#))),
            Ok("abc".to_string())
        );
        for bad in [
            r#"{"id":""}"#,
            r#"{"id":5}"#,
            r#"{"id":null}"#,
            r#"{"id":{"a":1}}"#,
            r#"{"id":"a\nb"}"#,
            r#"{}"#,
            r#"[]"#,
            r#""abc""#,
            r#"null"#,
        ] {
            assert!(parse(Some(&raw(bad))).is_err(), "{bad}");
        }
        let long = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_ID_LEN + 1));
        assert!(parse(Some(&raw(&long))).is_err());
        let max = format!(r#"{{"id":"{}"}}"#, "x".repeat(MAX_ID_LEN));
        assert!(parse(Some(&raw(&max))).is_ok());
        assert_eq!(
            parse(None),
            Err(InboundError::MissingPayload(EV_PREVIOUS_ID.into()))
        );
    }

    #[test]
    fn only_a_dead_foreign_id_of_a_member_is_hinted() {
        assert_eq!(precheck("new", "new", 1), Err(Refusal::OwnId));
        assert_eq!(precheck("new", "old", 0), Err(Refusal::NoRoom));
        assert_eq!(precheck("new", "old", 2), Ok(()));
        assert_eq!(verdict(true), Err(Refusal::Live));
        assert_eq!(verdict(false), Ok(()));
    }

    #[test]
    fn the_rate_allows_a_reconnect_or_two_not_a_flood() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(PER_SECOND, BURST, t0);
        let burst = (0..100).filter(|_| b.try_take(t0)).count();
        assert_eq!(burst, BURST as usize);
        // Then one per 1 / PER_SECOND.
        let later = t0 + Duration::from_secs_f64(1.0 / PER_SECOND);
        assert!(b.try_take(later));
        assert!(!b.try_take(later));
    }
}
