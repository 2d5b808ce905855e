//! `--control-stdin`: device commands read from stdin, one a line. The sources are the
//! `--video` / `--audio` ones and the devices the `--play` ones, so a switch is written the way
//! the call was started. Parsing only: [`crate::session`] carries them out (the track stays,
//! the source behind it changes: no renegotiation).

use std::path::Path;

use crate::args::{AudioChoice, VideoChoice};

/// One command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `camera SOURCE|off`: the video track's source (`None`: off, the track stays muted).
    Camera(VideoChoice),
    /// `mic SOURCE|off`: the audio track's source (`None`: off, the track stays muted).
    Mic(AudioChoice),
    /// `speaker DEVICE`: where the room's audio plays (`default`, `null` or a device id).
    Speaker(String),
    /// `chat TEXT`: a chat message, as a `--chat-stdin` line.
    Chat(String),
}

/// What the commands look like (for error messages).
pub const USAGE: &str = "commands: camera testsrc|testsrc-green|camera[:DEVICE]|screen[:MONITOR]|FILE.y4m|off, \
     mic tone|mic[:DEVICE]|FILE.wav|off, speaker default|null|DEVICE, chat TEXT";

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

impl Control {
    /// Parses one line (surrounding whitespace ignored). `Ok(None)` for a blank line; errors
    /// say what was wrong and list the commands. A file must exist and be one the encoder
    /// can take (an already-encoded file cannot replace a capture source).
    pub fn parse(line: &str) -> Result<Option<Control>, String> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(None);
        }
        let (cmd, rest) = line
            .split_once(char::is_whitespace)
            .map_or((line, ""), |(c, r)| (c, r.trim()));
        let need = |what: &str| -> Result<(), String> {
            if rest.is_empty() {
                Err(format!("`{cmd}` needs {what} ({USAGE})"))
            } else {
                Ok(())
            }
        };
        let file = |path: &Path, kind: &str, allowed: &[&str]| -> Result<(), String> {
            let ext = extension(path);
            if !allowed.contains(&ext.as_str()) {
                return Err(format!(
                    "unknown {kind} {:?}: not a source name nor a {} file ({USAGE})",
                    path.display(),
                    allowed.join("/")
                ));
            }
            if !path.is_file() {
                return Err(format!("{kind} file {:?} does not exist", path.display()));
            }
            Ok(())
        };
        Ok(Some(match cmd {
            "camera" | "video" => {
                need("a video source or off")?;
                let choice: VideoChoice = rest.parse()?;
                if let VideoChoice::File(p) = &choice {
                    file(p, "camera", &["y4m"])?;
                }
                Control::Camera(choice)
            }
            "mic" | "audio" => {
                need("an audio source or off")?;
                let choice: AudioChoice = rest.parse()?;
                if let AudioChoice::File(p) = &choice {
                    file(p, "microphone", &["wav"])?;
                }
                Control::Mic(choice)
            }
            "speaker" => {
                need("an output device")?;
                Control::Speaker(rest.to_string())
            }
            "chat" => {
                need("a message")?;
                Control::Chat(rest.to_string())
            }
            other => return Err(format!("unknown command {other:?} ({USAGE})")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_commands_parse_like_the_flags() {
        assert_eq!(
            Control::parse("camera testsrc-green"),
            Ok(Some(Control::Camera(VideoChoice::TestSrcGreen)))
        );
        assert_eq!(
            Control::parse("  camera   camera:/dev/video2 "),
            Ok(Some(Control::Camera(VideoChoice::Camera(Some(
                "/dev/video2".into()
            )))))
        );
        assert_eq!(
            Control::parse("camera off"),
            Ok(Some(Control::Camera(VideoChoice::None)))
        );
        assert_eq!(
            Control::parse("mic tone"),
            Ok(Some(Control::Mic(AudioChoice::Tone)))
        );
        assert_eq!(
            Control::parse("mic off"),
            Ok(Some(Control::Mic(AudioChoice::None)))
        );
        assert_eq!(
            Control::parse("speaker hw:1,0"),
            Ok(Some(Control::Speaker("hw:1,0".into())))
        );
        assert_eq!(
            Control::parse("chat hello there"),
            Ok(Some(Control::Chat("hello there".into())))
        );
        assert_eq!(Control::parse("   "), Ok(None));
    }

    #[test]
    fn unknown_ids_and_commands_are_clear_errors() {
        let e = Control::parse("camera nosuchcam").unwrap_err();
        assert!(e.contains("unknown camera \"nosuchcam\""), "{e}");
        assert!(e.contains("testsrc-green"), "{e}");
        let e = Control::parse("camera /nonexistent/a.y4m").unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        // An encoded file cannot replace a capture source.
        let e = Control::parse("camera clip.h264").unwrap_err();
        assert!(e.contains("not a source name"), "{e}");
        let e = Control::parse("mic clip.opus").unwrap_err();
        assert!(e.contains("unknown microphone"), "{e}");
        let e = Control::parse("camera").unwrap_err();
        assert!(e.contains("needs a video source"), "{e}");
        let e = Control::parse("speaker").unwrap_err();
        assert!(e.contains("needs an output device"), "{e}");
        let e = Control::parse("zoom 2").unwrap_err();
        assert!(e.contains("unknown command \"zoom\""), "{e}");
    }
}
