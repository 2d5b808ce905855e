//! `rtcio-server`: the rtc.io-compatible signaling server as a command.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rtcio_server::{CorsPolicy, Policy, RelayConfig, ServerConfig, TurnConfig, WebRoot};

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
    /// Seconds the Redis keys of this process live unless its heartbeat (every third of it)
    /// refreshes them: how long a crashed process's sockets stay visible to the others.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    redis_key_ttl: u64,
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
    /// Ignore `#rtcio:previous-id` (no peer-left hint for a reconnected client's old id).
    #[arg(long)]
    no_previous_id_hint: bool,
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

    /// Serve the browser guest page from this directory instead of the built-in one.
    #[arg(long, value_name = "DIR", conflicts_with = "no_web")]
    web_dir: Option<PathBuf>,
    /// Serve no page at `/` (socket.io, /healthz and /ice-servers only).
    #[arg(long)]
    no_web: bool,

    /// Run a TURN relay (UDP) in this process; `/ice-servers` hands out credentials for it.
    #[arg(long)]
    turn: bool,
    /// UDP port of the TURN relay.
    #[arg(long, default_value_t = 3478)]
    turn_port: u16,
    /// Address written into relayed candidates (default: --host, or the default route's
    /// address when --host is 0.0.0.0). Set it to the public address behind a NAT.
    #[arg(long, value_name = "IP")]
    turn_relay_ip: Option<IpAddr>,
    /// Relayed ports, `MIN-MAX`.
    #[arg(long, value_name = "MIN-MAX", default_value = "49152-65535", value_parser = parse_port_range)]
    turn_ports: RangeInclusive<u16>,
    /// Shared secret of the short-lived credentials (coturn's static-auth-secret). Needed with
    /// --turn-url; with --turn alone a random one is made per process.
    #[arg(long, env = "RTCIO_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// A TURN/STUN URL to hand out at /ice-servers (repeatable), e.g. a coturn's
    /// `turn:turn.example:3478`.
    #[arg(long = "turn-url", value_name = "URL")]
    turn_urls: Vec<String>,
    /// Seconds handed-out credentials stay valid.
    #[arg(long, default_value_t = 86_400)]
    turn_ttl: u64,
    /// TURN realm.
    #[arg(long, default_value = "rtcio")]
    turn_realm: String,
    /// Live relay allocations at most.
    #[arg(long, default_value_t = 1000)]
    turn_max_allocations: usize,
    /// Live relay allocations per credential at most (each /ice-servers answer is one).
    #[arg(long, default_value_t = 32)]
    turn_max_allocations_per_user: usize,
    /// Relay to and from loopback addresses (same-machine tests).
    #[arg(long)]
    turn_allow_loopback: bool,
    /// Relay to and from private/LAN addresses (a relay for a LAN; off on a public server).
    #[arg(long)]
    turn_allow_private: bool,
    /// Tests and benchmarks only: impair what the relay sends, `[T:]key=value,…` (keys rate,
    /// queue, delay, jitter, loss, burst; see rtcio_server::impair), repeatable for a schedule.
    #[arg(long, value_name = "SPEC", hide = true)]
    turn_impair: Vec<String>,
}

fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not MIN-MAX"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{a:?} is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{b:?} is not a port"))?;
    if a == 0 || b < a {
        return Err(format!("{s:?} is not a port range (1-65535, MIN <= MAX)"));
    }
    Ok(a..=b)
}

impl Cli {
    fn web(&self) -> WebRoot {
        match (&self.web_dir, self.no_web) {
            (_, true) => WebRoot::Off,
            (Some(dir), false) => WebRoot::Dir(dir.clone()),
            (None, false) => WebRoot::Embedded,
        }
    }

    fn turn(&self) -> anyhow::Result<Option<TurnConfig>> {
        if !self.turn && self.turn_urls.is_empty() {
            return Ok(None);
        }
        let impairment = rtcio_server::impair::Schedule::parse(&self.turn_impair)
            .map_err(|e| anyhow::anyhow!("--turn-impair: {e}"))?;
        let relay = self.turn.then(|| RelayConfig {
            listen: SocketAddr::new(self.host, self.turn_port),
            relay_ip: self.turn_relay_ip,
            ports: self.turn_ports.clone(),
            realm: self.turn_realm.clone(),
            max_allocations: self.turn_max_allocations,
            max_allocations_per_user: self.turn_max_allocations_per_user,
            allow_loopback: self.turn_allow_loopback,
            allow_private: self.turn_allow_private,
            impairment,
        });
        Ok(Some(TurnConfig {
            secret: self.turn_secret.clone().filter(|s| !s.is_empty()),
            urls: self.turn_urls.clone(),
            ttl: Duration::from_secs(self.turn_ttl.max(1)),
            relay,
        }))
    }

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
        if self.no_previous_id_hint {
            p.previous_id_hint = false;
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
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::EnvFilter::try_new(&cli.log)
                    .with_context(|| format!("invalid --log filter {:?}", cli.log))?,
            )
            // Before the formatter: what it drops is never formatted.
            .with(rtcio_server::quiet::QuietClosedBroadcasts)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
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
        redis_key_ttl: Duration::from_secs(cli.redis_key_ttl),
        policy: cli.policy(),
        web: cli.web(),
        turn: cli.turn()?,
        ..ServerConfig::default()
    };
    let server = rtcio_server::start(config)
        .await
        .context("cannot start the server")?;
    tokio::spawn(rtcio_server::quiet::summarise());
    // One machine-readable line on stdout so scripts and tests can find the port.
    println!("rtcio-server listening on {}", server.url());
    if let Some(turn) = server.turn_addr() {
        println!("rtcio-server TURN relay on udp {turn}");
    }
    server.run_until_signal().await?;
    let closed = rtcio_server::quiet::closed_broadcasts();
    if closed > 0 {
        tracing::info!("{closed} broadcasts from other processes reached only closed sockets");
    }
    Ok(())
}
