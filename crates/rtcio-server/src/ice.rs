//! Short-lived TURN credentials (the "TURN REST API" scheme coturn implements as
//! `use-auth-secret` + `static-auth-secret`) and the `/ice-servers` answer.
//!
//! Plain functions of a secret and a clock reading, so the scheme is unit-tested apart from I/O:
//! username = `<unix expiry>[:<user>]`, password = base64(HMAC-SHA1(secret, username)).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

/// Longest user part we put into a username (it ends up in every TURN request).
const MAX_USER_CHARS: usize = 64;

/// The TURN password for `username` under `secret`.
pub fn password(secret: &str, username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    BASE64.encode(ring::hmac::sign(&key, username.as_bytes()).as_ref())
}

/// A username valid until `now_unix + ttl`, tagged with `user` (sanitised; may be empty).
pub fn username(now_unix: u64, ttl: Duration, user: &str) -> String {
    let expiry = now_unix.saturating_add(ttl.as_secs());
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(MAX_USER_CHARS)
        .collect();
    if user.is_empty() {
        expiry.to_string()
    } else {
        format!("{expiry}:{user}")
    }
}

/// Why a username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// It does not start with a unix time.
    #[error("not a time-limited username")]
    Malformed,
    /// Its time has passed.
    #[error("credentials expired {0} s ago")]
    Expired(u64),
}

/// Checks a username's expiry at `now_unix` (the password is checked by the TURN server's
/// message integrity, keyed with [`password`]).
pub fn check_username(username: &str, now_unix: u64) -> Result<(), CredentialError> {
    let expiry_part = username.split(':').next().unwrap_or("");
    let expiry: u64 = expiry_part
        .parse()
        .map_err(|_| CredentialError::Malformed)?;
    if expiry < now_unix {
        return Err(CredentialError::Expired(now_unix - expiry));
    }
    Ok(())
}

/// One entry of `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServerEntry {
    /// `stun:` / `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: String,
    /// TURN password.
    pub credential: String,
}

/// The body of `GET /ice-servers`: ready for `new RTCPeerConnection({iceServers})` and rtc.io's
/// `io(url, {iceServers})`, plus the draft's flat fields (`username`, `password`, `ttl`, `uris`)
/// for clients written against coturn-style services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServersResponse {
    /// What a browser passes as `iceServers`.
    #[serde(rename = "iceServers")]
    pub ice_servers: Vec<IceServerEntry>,
    /// TURN user name (`<expiry>[:<user>]`).
    pub username: String,
    /// TURN password.
    pub password: String,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
    /// The same URLs as `iceServers[0].urls`.
    pub uris: Vec<String>,
}

/// Builds the answer for `urls` at `now_unix`.
pub fn grant(
    secret: &str,
    urls: Vec<String>,
    ttl: Duration,
    now_unix: u64,
    user: &str,
) -> IceServersResponse {
    let username = username(now_unix, ttl, user);
    let password = password(secret, &username);
    IceServersResponse {
        ice_servers: vec![IceServerEntry {
            urls: urls.clone(),
            username: username.clone(),
            credential: password.clone(),
        }],
        username,
        password,
        ttl: ttl.as_secs(),
        uris: urls,
    }
}

/// The host part of an HTTP `Host` header (`[::1]:3001` → `[::1]`, `example.org:80` →
/// `example.org`), for URLs of a relay on the host the client reached us by.
pub fn host_of(host_header: &str) -> Option<&str> {
    let h = host_header.trim();
    if h.is_empty() || h.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        return Some(&h[..end + 2]);
    }
    Some(h.split(':').next().unwrap_or(h)).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_matches_the_coturn_scheme() {
        // base64(HMAC-SHA1("secret", "1700000000:alice")), computed independently with
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`.
        assert_eq!(
            password("secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }

    #[test]
    fn usernames_carry_expiry_and_a_clean_user() {
        assert_eq!(username(100, Duration::from_secs(50), ""), "150");
        assert_eq!(username(100, Duration::from_secs(50), "bob"), "150:bob");
        assert_eq!(username(100, Duration::from_secs(50), "b:o b\n"), "150:bob");
        let long = "x".repeat(500);
        assert_eq!(username(0, Duration::ZERO, &long).len(), 2 + MAX_USER_CHARS);
        assert_eq!(
            username(u64::MAX, Duration::from_secs(9), ""),
            u64::MAX.to_string()
        );
    }

    #[test]
    fn expiry_is_checked() {
        assert_eq!(check_username("150:bob", 149), Ok(()));
        assert_eq!(check_username("150", 150), Ok(()));
        assert_eq!(
            check_username("150:bob", 160),
            Err(CredentialError::Expired(10))
        );
        assert_eq!(check_username("bob", 1), Err(CredentialError::Malformed));
        assert_eq!(check_username("", 1), Err(CredentialError::Malformed));
        assert_eq!(check_username("-5:x", 1), Err(CredentialError::Malformed));
    }

    #[test]
    fn grant_is_consistent() {
        let g = grant(
            "s",
            vec!["turn:h:3478".into()],
            Duration::from_secs(60),
            1000,
            "u",
        );
        assert_eq!(g.username, "1060:u");
        assert_eq!(g.password, password("s", "1060:u"));
        assert_eq!(g.ice_servers[0].credential, g.password);
        assert_eq!(g.uris, vec!["turn:h:3478".to_string()]);
        let json = serde_json::to_value(&g).unwrap();
        assert_eq!(json["iceServers"][0]["username"], "1060:u");
        assert_eq!(json["ttl"], 60);
    }

    #[test]
    fn host_header_parsing() {
        assert_eq!(host_of("example.org:3001"), Some("example.org"));
        assert_eq!(host_of("example.org"), Some("example.org"));
        assert_eq!(host_of("[::1]:3001"), Some("[::1]"));
        assert_eq!(host_of("10.0.0.2"), Some("10.0.0.2"));
        assert_eq!(host_of(""), None);
        assert_eq!(host_of("a/b"), None);
        assert_eq!(host_of("[::1"), None);
    }
}
