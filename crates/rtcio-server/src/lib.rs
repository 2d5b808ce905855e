//! # rtcio-server
//!
//! A signaling server that a browser running the rtc.io client cannot tell from `rtc.io-server`
//! plus its example room server: the `#rtcio:message` relay, `#rtcio:peer-left`, rooms with
//! passwords, presence and the media-state cache — over socket.io v4 (long-polling and WebSocket).
//! It is safer by default (see [`Policy`]) and scales out through Redis.
//!
//! Embed it in any tokio program:
//! ```no_run
//! # async fn demo() -> Result<(), rtcio_server::ServerError> {
//! let config = rtcio_server::ServerConfig {
//!     bind: "127.0.0.1:0".parse().unwrap(),
//!     ..Default::default()
//! };
//! let server = rtcio_server::start(config).await?;
//! println!("signaling on {}", server.url());
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod config;
mod http;
pub mod ice;
pub mod impair;
pub mod previous_id;
pub mod protocol;
pub mod quiet;
pub mod ratelimit;
mod redis_driver;
mod server;
mod session;
pub mod store;
pub mod turn_relay;
mod web;

pub use config::{CorsPolicy, Policy, ServerConfig, TurnConfig};
pub use server::{DisconnectWatch, RunningServer, ServerError, start};
pub use turn_relay::{RelayConfig, RelayStats, TurnRelay};
pub use web::WebRoot;
