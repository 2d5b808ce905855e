//! Command-line arguments (clap derive) and their conversion into session settings.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// rtc.io-compatible peer on the command line: join rooms, host one, measure.
#[derive(Debug, Parser)]
#[command(name = "rtcio", version, about, propagate_version = true)]
pub struct Cli {
    /// Print one JSON object per stdout line (see the README for the schema).
    #[arg(long, global = true)]
    pub json: bool,
    /// Log filter for stderr (e.g. `info`, `rtcio=debug`); `RUST_LOG` works too.
    #[arg(long, global = true, env = "RTCIO_LOG", default_value = crate::DEFAULT_LOG)]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join a room on a signaling server, send media, print what happens.
    Join(JoinArgs),
    /// Start an embedded room server and join it.
    Host(HostArgs),
    /// Glass-to-glass latency of remote synthetic video (frame marks), p50/p95/p99 and fps.
    Latency(LatencyArgs),
    /// N headless peers in one room on loopback; CPU and encodes/s per peer.
    Mesh(MeshArgs),
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Signaling server URL (http(s)://host:port[/namespace]).
    #[arg(long, env = "RTCIO_SERVER", value_name = "URL")]
    pub server: String,
    /// Room to join.
    #[arg(long, value_name = "ROOM")]
    pub room: String,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// Address the embedded server listens on.
    #[arg(long, default_value = "0.0.0.0", value_name = "IP")]
    pub addr: IpAddr,
    /// Port the embedded server listens on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3001)]
    pub port: u16,
    /// Room to create and join.
    #[arg(long, default_value = "demo", value_name = "ROOM")]
    pub room: String,
    /// Also run a TURN relay (UDP) for the room's peers; the server hands out its credentials
    /// at /ice-servers (relays to LAN addresses; to loopback too when --addr is loopback).
    #[arg(long)]
    pub turn: bool,
    /// UDP port of the TURN relay (0 picks a free one).
    #[arg(long, default_value_t = 3478)]
    pub turn_port: u16,
    #[command(flatten)]
    pub session: SessionArgs,
}

#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Signaling server URL.
    #[arg(long, env = "RTCIO_SERVER", value_name = "URL")]
    pub server: String,
    /// Room with at least one peer sending `--video testsrc`.
    #[arg(long, value_name = "ROOM")]
    pub room: String,
    /// Display name.
    #[arg(long, default_value = "rtcio-latency")]
    pub name: String,
    /// Room password.
    #[arg(long, env = "RTCIO_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// How long to measure, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    #[command(flatten)]
    pub net: NetArgs,
}

#[derive(Debug, Args)]
pub struct MeshArgs {
    /// Number of peers (separate `rtcio join` processes).
    #[arg(long, default_value_t = 3)]
    pub peers: usize,
    /// How long to measure once every peer is connected to every other, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// What each peer sends (see `join --video`).
    #[arg(long, default_value = "testsrc", value_name = "SOURCE")]
    pub video: VideoChoice,
    /// What each peer sends (see `join --audio`).
    #[arg(long, default_value = "tone", value_name = "SOURCE")]
    pub audio: AudioChoice,
    /// Video size of each peer.
    #[arg(long, default_value = "640x360", value_name = "WxH")]
    pub video_size: VideoSize,
    /// Frame rate of each peer.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f32,
    /// H.264 target bitrate of each peer in kbit/s.
    #[arg(long, default_value_t = 1000, value_name = "KBPS")]
    pub video_bitrate: u32,
    /// Seconds to wait for the full mesh to connect.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub connect_timeout: f64,
}

/// Everything about one participant (shared by `join` and `host`).
#[derive(Debug, Args, Clone)]
pub struct SessionArgs {
    /// Display name sent with `join-room` and `camera`.
    #[arg(long, default_value = "rtcio-cli")]
    pub name: String,
    /// Room password (the first member of an empty room sets it).
    #[arg(long, env = "RTCIO_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Video to send: testsrc, testsrc-green, screen[:MONITOR], camera[:DEVICE], none, or a
    /// file (.y4m / .h264).
    #[arg(long, default_value = "none", value_name = "SOURCE")]
    pub video: VideoChoice,
    /// Audio to send: tone, mic[:DEVICE], none, or a file (.wav / .opus / .ogg).
    #[arg(long, default_value = "none", value_name = "SOURCE")]
    pub audio: AudioChoice,
    /// Processing of `--audio mic`: `voice` (noise suppression, automatic gain, high-pass;
    /// there is no echo to cancel, the CLI plays nothing) or `off` (sent untouched, e.g.
    /// music). Tones and files are never processed.
    #[arg(long, value_enum, default_value_t = MicProcessing::Voice)]
    pub mic_processing: MicProcessing,
    /// Play the room's audio on an output device: `--play` for the default one, `--play ID`
    /// for another (an ALSA/PipeWire device name, e.g. `hw:1,0`), `--play null` to mix
    /// without a device. With `--audio mic` the echo canceller hears what is played.
    #[arg(long, value_name = "DEVICE", num_args = 0..=1, default_missing_value = "default")]
    pub play: Option<String>,
    /// Event name the stream is announced with (the demo's `camera`).
    #[arg(long, default_value = "camera", value_name = "EVENT")]
    pub stream_event: String,
    /// Size of testsrc and the requested camera size.
    #[arg(long, default_value = "640x360", value_name = "WxH")]
    pub video_size: VideoSize,
    /// Frame rate of testsrc, camera, screen and .h264 files.
    #[arg(long, default_value_t = 30.0)]
    pub fps: f32,
    /// H.264 bitrate cap in kbit/s (below it the encoder follows the link's estimate).
    #[arg(long, default_value_t = 1000, value_name = "KBPS")]
    pub video_bitrate: u32,
    /// Write each remote stream into this directory (raw .h264 and Ogg Opus).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// Send only: remote streams are announced (`stream` lines) but never decoded, played or
    /// recorded; their packets are dropped unread. For load generators standing in for other
    /// machines (the app's IPC bench), whose CPU must not go to decoding each other.
    #[arg(long, conflicts_with_all = ["record", "play"])]
    pub no_receive: bool,
    /// Send each stdin line as a chat message (broadcast channel `chat`, event `msg`).
    #[arg(long)]
    pub chat_stdin: bool,
    /// Read commands from stdin, one a line, to switch devices mid-call without renegotiating:
    /// `camera SOURCE|off` (a `--video` source), `mic SOURCE|off` (an `--audio` source),
    /// `speaker DEVICE` (a `--play` device; needs `--play`), `chat TEXT`.
    #[arg(long, conflicts_with = "chat_stdin")]
    pub control_stdin: bool,
    /// Leave after this many seconds (default: run until Ctrl-C, or stdin EOF with --chat-stdin
    /// or --control-stdin).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Also print this event (server or ctrl) — repeatable; common app events are always printed.
    #[arg(long = "listen", value_name = "EVENT")]
    pub listen: Vec<String>,
    /// Seconds to wait for `join-ok` after `join-room`.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub join_timeout: f64,
    #[command(flatten)]
    pub net: NetArgs,
}

/// `--mic-processing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MicProcessing {
    /// Voice call processing.
    Voice,
    /// None.
    Off,
}

/// The output device a `--play` value names.
pub fn output_device(play: &str) -> rtcio_media::OutputDevice {
    match play {
        "" | "default" => rtcio_media::OutputDevice::Default,
        "null" => rtcio_media::OutputDevice::Null,
        id => rtcio_media::OutputDevice::Id(id.to_string()),
    }
}

impl MicProcessing {
    /// The processor's switches, `None` for off.
    pub fn apm(self) -> Option<rtcio_media::ApmConfig> {
        match self {
            MicProcessing::Voice => Some(rtcio_media::ApmConfig::VOICE),
            MicProcessing::Off => None,
        }
    }
}

/// How to reach the server and the peers.
#[derive(Debug, Args, Clone)]
pub struct NetArgs {
    /// Peers on this machine only: host candidates on 127.0.0.1, no STUN.
    #[arg(long)]
    pub loopback: bool,
    /// Local address for ICE host candidates (repeatable; default every non-loopback IPv4).
    #[arg(long = "bind", value_name = "IP")]
    pub bind: Vec<IpAddr>,
    /// STUN/TURN URL (repeatable; replaces rtc.io's default STUN servers).
    #[arg(long = "ice-server", value_name = "URL")]
    pub ice_servers: Vec<String>,
    /// No STUN/TURN at all (host candidates only).
    #[arg(long, conflicts_with = "ice_servers")]
    pub no_ice_servers: bool,
    /// TURN user name for the `turn:` URLs given with --ice-server.
    #[arg(long, value_name = "NAME", requires = "ice_servers")]
    pub ice_username: Option<String>,
    /// TURN password for the `turn:` URLs given with --ice-server.
    #[arg(
        long,
        env = "RTCIO_ICE_CREDENTIAL",
        hide_env_values = true,
        requires = "ice_servers"
    )]
    pub ice_credential: Option<String>,
    /// Relayed candidates only (`iceTransportPolicy: relay`): peers never see this machine's
    /// addresses; needs a TURN server.
    #[arg(long)]
    pub relay_only: bool,
    /// Do not ask the signaling server for TURN credentials (`GET /ice-servers`).
    #[arg(long)]
    pub no_server_ice: bool,
    /// Token for servers that require `auth: {token}` in the socket.io handshake.
    #[arg(long, env = "RTCIO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Seconds to wait for the signaling connection.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Send video at --video-bitrate whatever the link does (no GCC estimate, no pacer).
    #[arg(long)]
    pub no_congestion_control: bool,
    /// Where the bandwidth estimate starts, kbit/s (tests of how it reacts; default 300).
    #[arg(long, value_name = "KBPS", hide = true)]
    pub cc_start_kbps: Option<u32>,
    /// Use webrtc-rs's NACK generator (6 NACKs in 120 ms, a lost video packet waited for
    /// 250 ms) instead of NACKs paced by the repair round trip (rtcio's
    /// `CongestionConfig::paced_nacks`); to compare.
    #[arg(long)]
    pub stock_nacks: bool,
    /// Pace with webrtc-rs's single FIFO instead of the priority pacer (rtcio's
    /// `CongestionConfig::priority_pacer`); to compare.
    #[arg(long, hide = true)]
    pub fifo_pacer: bool,
}

impl NetArgs {
    /// The rtcio connection options these flags describe.
    pub fn options(&self) -> rtcio::Options {
        let mut o = if self.loopback {
            rtcio::Options::loopback()
        } else {
            rtcio::Options::default()
        };
        if !self.bind.is_empty() {
            o.bind_addrs = Some(self.bind.clone());
        }
        o.congestion.enabled = !self.no_congestion_control;
        o.congestion.paced_nacks = !self.stock_nacks;
        o.congestion.priority_pacer = !self.fifo_pacer;
        if let Some(k) = self.cc_start_kbps {
            o.congestion.start_bps = k
                .saturating_mul(1000)
                .clamp(o.congestion.min_bps, o.congestion.max_bps);
        }
        o.relay_only = self.relay_only;
        o.server_ice_servers = !self.no_server_ice;
        if self.no_ice_servers {
            o.ice_servers = rtcio::IceServers::None;
        } else if !self.ice_servers.is_empty() {
            o.ice_servers = rtcio::IceServers::Custom(
                self.ice_servers
                    .iter()
                    .map(|u| {
                        let turn = u.starts_with("turn:") || u.starts_with("turns:");
                        rtcio::IceServer {
                            urls: vec![u.clone()],
                            username: self.ice_username.clone().filter(|_| turn),
                            credential: self.ice_credential.clone().filter(|_| turn),
                        }
                    })
                    .collect(),
            );
        }
        if let Some(t) = &self.auth_token {
            o.auth = Some(serde_json::json!({ "token": t }));
        }
        o.connect_timeout = secs(self.connect_timeout);
        o
    }
}

/// Seconds from the command line as a duration (negative and NaN become zero).
pub fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s.min(1e9))
    } else {
        Duration::ZERO
    }
}

/// `--video-size WxH` (even, non-zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSize {
    pub width: u32,
    pub height: u32,
}

impl std::str::FromStr for VideoSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 640x360"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n >= 16 && *n <= 4096 && n % 2 == 0)
                .ok_or_else(|| format!("{s:?}: sizes must be even numbers from 16 to 4096"))
        };
        Ok(VideoSize {
            width: parse(w)?,
            height: parse(h)?,
        })
    }
}

impl std::fmt::Display for VideoSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// `--video`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoChoice {
    None,
    TestSrc,
    /// The test pattern on flat green (the app's "Test pattern (green)" camera).
    TestSrcGreen,
    Screen(Option<String>),
    Camera(Option<String>),
    File(PathBuf),
}

impl VideoChoice {
    /// The command-line form (what `--video` parses back into this).
    pub fn to_arg(&self) -> String {
        match self {
            VideoChoice::None => "none".into(),
            VideoChoice::TestSrc => "testsrc".into(),
            VideoChoice::TestSrcGreen => "testsrc-green".into(),
            VideoChoice::Screen(None) => "screen".into(),
            VideoChoice::Screen(Some(m)) => format!("screen:{m}"),
            VideoChoice::Camera(None) => "camera".into(),
            VideoChoice::Camera(Some(d)) => format!("camera:{d}"),
            VideoChoice::File(p) => p.display().to_string(),
        }
    }
}

impl std::str::FromStr for VideoChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty video source".into());
        }
        Ok(match s {
            "none" | "off" => VideoChoice::None,
            "testsrc" | "test" => VideoChoice::TestSrc,
            "testsrc-green" => VideoChoice::TestSrcGreen,
            "screen" => VideoChoice::Screen(None),
            "camera" => VideoChoice::Camera(None),
            _ => {
                if let Some(m) = s.strip_prefix("screen:") {
                    VideoChoice::Screen(Some(m.to_string()))
                } else if let Some(d) = s.strip_prefix("camera:") {
                    VideoChoice::Camera(Some(d.to_string()))
                } else {
                    VideoChoice::File(PathBuf::from(s))
                }
            }
        })
    }
}

/// `--audio`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioChoice {
    None,
    Tone,
    Mic(Option<String>),
    File(PathBuf),
}

impl AudioChoice {
    /// The command-line form (what `--audio` parses back into this).
    pub fn to_arg(&self) -> String {
        match self {
            AudioChoice::None => "none".into(),
            AudioChoice::Tone => "tone".into(),
            AudioChoice::Mic(None) => "mic".into(),
            AudioChoice::Mic(Some(d)) => format!("mic:{d}"),
            AudioChoice::File(p) => p.display().to_string(),
        }
    }
}

impl std::str::FromStr for AudioChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty audio source".into());
        }
        Ok(match s {
            "none" | "off" => AudioChoice::None,
            "tone" => AudioChoice::Tone,
            "mic" => AudioChoice::Mic(None),
            _ => match s.strip_prefix("mic:") {
                Some(d) => AudioChoice::Mic(Some(d.to_string())),
                None => AudioChoice::File(PathBuf::from(s)),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn join_parses_everything() {
        let cli = Cli::try_parse_from([
            "rtcio",
            "join",
            "--server",
            "http://127.0.0.1:3001",
            "--room",
            "r1",
            "--name",
            "bob",
            "--password",
            "pw",
            "--video",
            "camera:/dev/video2",
            "--audio",
            "clip.wav",
            "--chat-stdin",
            "--duration",
            "2.5",
            "--loopback",
            "--json",
        ])
        .expect("parses");
        assert!(cli.json);
        let Command::Join(j) = cli.command else {
            panic!("not join")
        };
        assert_eq!(j.room, "r1");
        assert_eq!(j.session.name, "bob");
        assert_eq!(j.session.password.as_deref(), Some("pw"));
        assert_eq!(
            j.session.video,
            VideoChoice::Camera(Some("/dev/video2".into()))
        );
        assert_eq!(j.session.audio, AudioChoice::File("clip.wav".into()));
        assert!(j.session.chat_stdin);
        assert_eq!(j.session.duration, Some(2.5));
        let o = j.session.net.options();
        assert_eq!(o.ice_servers, rtcio::IceServers::None);
        assert_eq!(
            o.bind_addrs,
            Some(vec![IpAddr::from([127, 0, 0, 1])]),
            "--loopback binds 127.0.0.1"
        );
    }

    #[test]
    fn no_receive_is_a_send_only_switch() {
        let parse = |extra: &[&str]| {
            let mut a = vec!["rtcio", "join", "--server", "http://x:1", "--room", "r"];
            a.extend_from_slice(extra);
            Cli::try_parse_from(a).map(|cli| match cli.command {
                Command::Join(j) => j.session.no_receive,
                _ => panic!("not join"),
            })
        };
        assert_eq!(parse(&[]).ok(), Some(false), "receives by default");
        assert_eq!(parse(&["--no-receive"]).ok(), Some(true));
        // Nothing received means nothing to record or play.
        assert!(parse(&["--no-receive", "--record", "d"]).is_err());
        assert!(parse(&["--no-receive", "--play"]).is_err());
    }

    #[test]
    fn join_requires_server_and_room() {
        // RTCIO_SERVER may be set in a developer's shell; clap reads it only when the flag is absent.
        if std::env::var_os("RTCIO_SERVER").is_none() {
            assert!(Cli::try_parse_from(["rtcio", "join", "--room", "r"]).is_err());
        }
        assert!(Cli::try_parse_from(["rtcio", "join", "--server", "http://x:1"]).is_err());
    }

    #[test]
    fn sources() {
        assert_eq!("testsrc".parse(), Ok(VideoChoice::TestSrc));
        assert_eq!("none".parse(), Ok(VideoChoice::None));
        assert_eq!("screen".parse(), Ok(VideoChoice::Screen(None)));
        assert_eq!(
            "clip.h264".parse(),
            Ok(VideoChoice::File("clip.h264".into()))
        );
        assert_eq!("tone".parse(), Ok(AudioChoice::Tone));
        assert_eq!(
            "mic:default".parse(),
            Ok(AudioChoice::Mic(Some("default".into())))
        );
        assert!("".parse::<AudioChoice>().is_err());
        assert_eq!(
            "320x180".parse(),
            Ok(VideoSize {
                width: 320,
                height: 180
            })
        );
        assert!("321x180".parse::<VideoSize>().is_err());
        for v in [
            "none",
            "testsrc",
            "testsrc-green",
            "screen",
            "screen:DP-1",
            "camera",
            "camera:/dev/video0",
            "a.y4m",
        ] {
            assert_eq!(
                v.parse::<VideoChoice>().map(|c| c.to_arg()),
                Ok(v.to_string())
            );
        }
        for a in ["none", "tone", "mic", "mic:hw:1", "a.wav"] {
            assert_eq!(
                a.parse::<AudioChoice>().map(|c| c.to_arg()),
                Ok(a.to_string())
            );
        }
        assert!("320".parse::<VideoSize>().is_err());
    }

    #[test]
    fn ice_server_flags() {
        let cli = Cli::try_parse_from([
            "rtcio",
            "host",
            "--port",
            "0",
            "--ice-server",
            "stun:stun.invalid:3478",
        ])
        .expect("parses");
        let Command::Host(h) = cli.command else {
            panic!("not host")
        };
        assert_eq!(h.room, "demo");
        assert!(matches!(
            h.session.net.options().ice_servers,
            rtcio::IceServers::Custom(ref v) if v.len() == 1
        ));
        assert!(
            Cli::try_parse_from([
                "rtcio",
                "host",
                "--ice-server",
                "stun:a",
                "--no-ice-servers"
            ])
            .is_err()
        );
    }
}
