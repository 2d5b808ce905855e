//! `rtcio latency`: join a room without sending, decode every remote video and read the
//! synthetic source's frame marks (capture time in the picture), so the latency is
//! glass to glass: capture → encode → RTP → depacketize → decode. Sender and receiver must share
//! a clock (same machine, or NTP-synchronised ones).

use crate::args::{AudioChoice, LatencyArgs, SessionArgs, VideoChoice, VideoSize};
use crate::exit::{CliError, code};
use crate::output::Output;
use crate::session::{self, SessionConfig};

pub async fn run(a: LatencyArgs, out: Output) -> Result<(), CliError> {
    let args = SessionArgs {
        name: a.name,
        password: a.password,
        video: VideoChoice::None,
        audio: AudioChoice::None,
        mic_processing: crate::args::MicProcessing::Off,
        play: None,
        stream_event: "camera".into(),
        video_size: VideoSize {
            width: 640,
            height: 360,
        },
        fps: 30.0,
        video_bitrate: 1000,
        record: None,
        no_receive: false,
        chat_stdin: false,
        control_stdin: false,
        duration: Some(a.duration),
        listen: Vec::new(),
        join_timeout: 10.0,
        net: a.net,
    };
    let outcome = session::run_with_outcome(
        SessionConfig {
            server: a.server,
            room: a.room.clone(),
            args,
            hosted: None,
        },
        out,
    )
    .await?;
    if outcome.latency.is_empty() {
        return Err(CliError::new(
            code::NOTHING_MEASURED,
            "no-marked-video",
            format!(
                "no remote video with frame marks in room {:?} within {} s — is a peer sending --video testsrc?",
                a.room, a.duration
            ),
        ));
    }
    for r in &outcome.latency {
        tracing::info!(
            peer = %r.peer,
            "glass-to-glass latency p50 {} ms, p95 {} ms, p99 {} ms over {} frames at {} fps",
            r.p50_ms, r.p95_ms, r.p99_ms, r.samples, r.fps
        );
        out.line("latency", r.to_json());
    }
    Ok(())
}
