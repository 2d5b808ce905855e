//! `rtcio host`: the embedded rtcio-server plus one participant joined to it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde_json::json;
use tracing::{info, warn};

use crate::args::HostArgs;
use crate::exit::{CliError, code};
use crate::output::Output;
use crate::session::{self, SessionConfig};

/// Starts the server, prints where others can reach it, joins, and stops the server when the
/// participant leaves.
pub async fn run(args: HostArgs, out: Output) -> Result<(), CliError> {
    let bind = SocketAddr::new(args.addr, args.port);
    let turn = args.turn.then(|| rtcio_server::TurnConfig {
        relay: Some(rtcio_server::RelayConfig {
            listen: SocketAddr::new(args.addr, args.turn_port),
            // A room hosted on this computer serves its LAN (and this machine when it
            // listens on loopback only).
            allow_private: true,
            allow_loopback: args.addr.is_loopback(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let server = rtcio_server::start(rtcio_server::ServerConfig {
        bind,
        turn,
        ..Default::default()
    })
    .await
    .map_err(|e| {
        CliError::new(
            code::HOST,
            "host",
            format!("cannot start the room server: {e}"),
        )
    })?;
    let addr = server.local_addr();
    let urls = reachable_urls(addr);
    let own = local_url(addr);
    info!(
        "room server listening on {addr}; others join with: rtcio join --server {} --room {}",
        urls.first().unwrap_or(&own),
        args.room
    );
    out.line(
        "hosting",
        json!({
            "listen": addr.to_string(),
            "urls": urls,
            "room": args.room,
            "turn": server.turn_addr().map(|a| a.to_string()),
        }),
    );
    let result = session::run(
        SessionConfig {
            server: own,
            room: args.room,
            args: args.session,
            hosted: Some(server.disconnect_watch()),
        },
        out,
    )
    .await;
    if let Err(e) = server.shutdown().await {
        warn!("stopping the room server: {e}");
    }
    result
}

/// The URL this process uses to reach its own server.
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// URLs other machines can use: one per non-loopback interface address when listening on every
/// address, else the bound address. Loopback comes last (same machine only).
pub fn reachable_urls(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut ips: Vec<IpAddr> = Vec::new();
    if addr.ip().is_unspecified() {
        if let Ok(ifaces) = if_addrs::get_if_addrs() {
            for i in ifaces {
                let ip = i.ip();
                let family_ok = addr.is_ipv6() || ip.is_ipv4();
                if !i.is_loopback() && family_ok && !is_link_local(ip) && !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    } else {
        ips.push(addr.ip());
    }
    ips.into_iter()
        .map(|ip| format!("http://{}", SocketAddr::new(ip, port)))
        .collect()
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let any: SocketAddr = "0.0.0.0:3001".parse().expect("addr");
        let u = reachable_urls(any);
        assert_eq!(u.last().map(String::as_str), Some("http://127.0.0.1:3001"));
        assert_eq!(local_url(any), "http://127.0.0.1:3001");
        let one: SocketAddr = "10.1.2.3:4000".parse().expect("addr");
        assert_eq!(
            reachable_urls(one),
            vec!["http://10.1.2.3:4000".to_string()]
        );
        assert_eq!(local_url(one), "http://10.1.2.3:4000");
        let v6: SocketAddr = "[::1]:5".parse().expect("addr");
        assert_eq!(local_url(v6), "http://[::1]:5");
    }
}
