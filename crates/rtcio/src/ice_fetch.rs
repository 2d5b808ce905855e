//! Fetching short-lived TURN credentials from the signaling server's `GET /ice-servers`
//! (rtcio-server hands them out when it has TURN configured; see its README).

use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::socket::IceServer;

/// Largest answer we read: a handful of URLs and a credential fit in a few hundred bytes.
const MAX_BODY: usize = 64 * 1024;

/// Why the ICE servers could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum IceFetchError {
    /// The server URL is not `http(s)://` / `ws(s)://` with a host.
    #[error("bad server URL {0:?}: {1}")]
    BadUrl(String, String),
    /// TCP or TLS did not connect.
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(String),
    /// The server answered with this status (401: the auth token was refused).
    #[error("the server answered {0} to /ice-servers")]
    Status(u16),
    /// The answer is not the expected JSON.
    #[error("unexpected /ice-servers answer: {0}")]
    Body(String),
    /// No answer in time.
    #[error("no answer from /ice-servers within {0:?}")]
    Timeout(Duration),
}

/// Reads `{"iceServers": [{"urls": string | [string], "username"?, "credential"?}]}`.
/// Entries without a usable URL are skipped; an answer without the array is an error.
pub fn parse_ice_servers(body: &[u8]) -> Result<Vec<IceServer>, IceFetchError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| IceFetchError::Body(e.to_string()))?;
    let list = v
        .get("iceServers")
        .and_then(Value::as_array)
        .ok_or_else(|| IceFetchError::Body("no iceServers array".into()))?;
    let text = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).map(str::to_owned);
    Ok(list
        .iter()
        .filter_map(|e| {
            let urls: Vec<String> = match e.get("urls") {
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            };
            let urls: Vec<String> = urls
                .into_iter()
                .filter(|u| {
                    ["stun:", "stuns:", "turn:", "turns:"]
                        .iter()
                        .any(|p| u.starts_with(p))
                })
                .collect();
            (!urls.is_empty()).then(|| IceServer {
                urls,
                username: text(e, "username"),
                credential: text(e, "credential"),
            })
        })
        .collect())
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Fetches the ICE servers the signaling server at `server_url` offers.
/// `Ok(None)` when it offers none (404: no TURN configured there).
pub async fn fetch_ice_servers(
    server_url: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<Option<Vec<IceServer>>, IceFetchError> {
    tokio::time::timeout(timeout, fetch(server_url, token))
        .await
        .map_err(|_| IceFetchError::Timeout(timeout))?
}

async fn fetch(
    server_url: &str,
    token: Option<&str>,
) -> Result<Option<Vec<IceServer>>, IceFetchError> {
    let bad = |why: &str| IceFetchError::BadUrl(server_url.into(), why.into());
    let url = url::Url::parse(server_url).map_err(|e| bad(&e.to_string()))?;
    let tls = match url.scheme() {
        "http" | "ws" => false,
        "https" | "wss" => true,
        _ => return Err(bad("not http(s) or ws(s)")),
    };
    let host = url.host_str().ok_or_else(|| bad("no host"))?.to_string();
    let port = url
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let authority = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let connect_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = TcpStream::connect((connect_host.as_str(), port))
        .await
        .map_err(|e| IceFetchError::Connect(authority.clone(), e.to_string()))?;
    let stream: Box<dyn Io> = if tls {
        let connector = native_tls::TlsConnector::new()
            .map_err(|e| IceFetchError::Connect(authority.clone(), e.to_string()))?;
        let connector = tokio_native_tls::TlsConnector::from(connector);
        Box::new(
            connector
                .connect(&connect_host, tcp)
                .await
                .map_err(|e| IceFetchError::Connect(authority.clone(), e.to_string()))?,
        )
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| IceFetchError::Http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::get("/ice-servers")
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| IceFetchError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| IceFetchError::Http(e.to_string()))?;
    let status = resp.status().as_u16();
    let result = match status {
        404 => Ok(None),
        200 => {
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| IceFetchError::Body(e.to_string()))?
                .to_bytes();
            parse_ice_servers(&body).map(Some)
        }
        s => Err(IceFetchError::Status(s)),
    };
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_server_answer() {
        let body = br#"{"iceServers":[{"urls":["stun:h:3478","turn:h:3478?transport=udp"],
            "username":"17:u","credential":"pw"}],"username":"17:u","password":"pw","ttl":60}"#;
        let list = parse_ice_servers(body).unwrap();
        assert_eq!(
            list,
            vec![IceServer {
                urls: vec!["stun:h:3478".into(), "turn:h:3478?transport=udp".into()],
                username: Some("17:u".into()),
                credential: Some("pw".into()),
            }]
        );
    }

    #[test]
    fn tolerates_odd_entries_and_refuses_junk() {
        let body = br#"{"iceServers":[{"urls":"stun:a"},{"urls":[1,"http://x"]},{"nope":1},7]}"#;
        let list = parse_ice_servers(body).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].urls, vec!["stun:a".to_string()]);
        assert_eq!(list[0].username, None);
        assert!(parse_ice_servers(b"{}").is_err());
        assert!(parse_ice_servers(b"not json").is_err());
        assert!(parse_ice_servers(br#"{"iceServers":{}}"#).is_err());
    }
}
