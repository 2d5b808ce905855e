//! The `rtcio` command line as a library: argument parsing, the join session, `host`, output
//! lines and exit codes. `src/main.rs` only calls [`main`].
//!
//! Results go to stdout (one JSON object per line with `--json`), progress and logs to stderr.
//! Exit codes are listed in [`exit::code`] and the README.

pub mod args;
pub mod control;
pub mod exit;
pub mod host;
pub mod latency;
pub mod mesh;
pub mod output;
pub mod receive;
pub mod record;
pub mod send;
pub mod session;

use clap::Parser;
use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};
use crate::exit::{CliError, code};
use crate::output::Output;

/// Parses the command line, runs the command and exits with its code.
pub fn main() -> ! {
    let cli = Cli::parse();
    init_tracing(&cli.log);
    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtcio: cannot start the async runtime: {e}");
            std::process::exit(code::OTHER);
        }
    };
    let result = runtime.block_on(run(cli.command, out));
    let status = match result {
        Ok(()) => code::OK,
        Err(e) => {
            eprintln!("rtcio: {}", e.message);
            if out.is_json() {
                out.line(
                    "error",
                    json!({"code": e.code, "reason": e.reason, "message": e.message}),
                );
            }
            e.code
        }
    };
    // Leave without waiting for blocked readers (stdin) or lingering connection tasks.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(status);
}

async fn run(command: Command, out: Output) -> Result<(), CliError> {
    match command {
        Command::Join(a) => {
            session::run(
                session::SessionConfig {
                    server: a.server,
                    room: a.room,
                    args: a.session,
                    hosted: None,
                },
                out,
            )
            .await
        }
        Command::Host(a) => host::run(a, out).await,
        Command::Latency(a) => latency::run(a, out).await,
        Command::Mesh(a) => mesh::run(a, out).await,
    }
}

/// Progress of this program at info, the rtcio crates' warnings, and only errors from the
/// WebRTC stack (its warnings are routine ICE/SCTP chatter).
pub const DEFAULT_LOG: &str = "error,rtcio=warn,rtcio_server=warn,rtcio_media=warn,rtcio_cli=info";

fn init_tracing(filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
