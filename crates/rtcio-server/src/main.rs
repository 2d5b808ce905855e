//! `rtcio-server`: the rtc.io-compatible signaling server as a command.

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use clap::Parser;
use rtcio_server::{CorsPolicy, Policy, ServerConfig};

/// rtc.io-compatible signaling and room server (socket.io v4).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one). `PORT` is honoured like rtc.io's example server.
    #[arg(long, env = "PORT", default_value_t = 3001)]
    port: u16,
    /// Allowed browser origin, repeatable (e.g. https://app.example). Default: any origin.
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Require clients to send `auth: {token}` with this value in the socket.io handshake.
    #[arg(long, env = "RTCIO_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Share rooms with other server processes through this Redis (redis://host:port/db).
    #[arg(long = "redis", env = "RTCIO_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// Prefix for Redis keys and channels.
    #[arg(long, default_value = "rtcio")]
    redis_prefix: String,
    /// Log level or tracing filter (e.g. `info`, `rtcio_server=debug`).
    #[arg(long, env = "RTCIO_LOG", default_value = "info")]
    log: String,

    /// Behave exactly like rtc.io-server + the example room server (turns every hardening off).
    #[arg(long)]
    anchor_compat: bool,
    /// Relay `#rtcio:message` to any target, as rtc.io-server does.
    #[arg(long)]
    relay_any: bool,
    /// Echo media-state / stopScreenShare / chat-message to rooms the sender has not joined.
    #[arg(long)]
    echo_any_room: bool,
    /// Repeat the whole join sequence (self backfill, init-offer) when a member re-joins its room.
    #[arg(long)]
    repeat_rejoin: bool,
    /// Allow room ids equal to a connected socket id.
    #[arg(long)]
    allow_socket_id_rooms: bool,
    /// Largest accepted event in bytes (0 = only the 1 MB Engine.IO limit).
    #[arg(long)]
    max_event_bytes: Option<usize>,
    /// Longest display name in join-room, in Unicode scalar values after trimming (0 = any string,
    /// passed on as given).
    #[arg(long)]
    max_name_chars: Option<usize>,
    /// Relayed messages per second per socket (0 = unlimited).
    #[arg(long)]
    relay_rate: Option<f64>,
    /// join-room/check-room requests per second per socket (0 = unlimited).
    #[arg(long)]
    join_rate: Option<f64>,
}

impl Cli {
    fn policy(&self) -> Policy {
        let mut p = if self.anchor_compat {
            Policy::anchor()
        } else {
            Policy::default()
        };
        if self.relay_any {
            p.relay_requires_shared_room = false;
        }
        if self.echo_any_room {
            p.echo_requires_membership = false;
        }
        if self.repeat_rejoin {
            p.dedupe_rejoin = false;
        }
        if self.allow_socket_id_rooms {
            p.reject_socket_id_rooms = false;
        }
        if let Some(n) = self.max_event_bytes {
            p.max_event_bytes = n;
        }
        if let Some(n) = self.max_name_chars {
            p.max_name_chars = n;
        }
        if let Some(r) = self.relay_rate {
            p.relay_per_second = r.max(0.0);
        }
        if let Some(r) = self.join_rate {
            p.joins_per_second = r.max(0.0);
        }
        p
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .with_context(|| format!("invalid --log filter {:?}", cli.log))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig {
        bind: SocketAddr::new(cli.host, cli.port),
        cors: if cli.cors_origins.is_empty() {
            CorsPolicy::Any
        } else {
            CorsPolicy::List(cli.cors_origins.clone())
        },
        auth_token: cli.auth_token.clone().filter(|t| !t.is_empty()),
        redis_url: cli.redis_url.clone(),
        redis_prefix: cli.redis_prefix.clone(),
        policy: cli.policy(),
        ..ServerConfig::default()
    };
    let server = rtcio_server::start(config)
        .await
        .context("cannot start the server")?;
    // One machine-readable line on stdout so scripts and tests can find the port.
    println!("rtcio-server listening on {}", server.url());
    server.run_until_signal().await?;
    Ok(())
}
