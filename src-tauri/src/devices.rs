//! Camera, microphone and speaker lists for the start screen, from rtcio-media.

use rtcio::MediaKind;
use rtcio_media::DeviceInfo;
use serde::Serialize;

use crate::error::AppError;
use crate::media;

/// One device as the UI lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Id to pass back when opening it.
    pub id: String,
    /// Name to show.
    pub name: String,
    /// The system's default device.
    pub is_default: bool,
    /// A synthetic source (test pattern / tone), not hardware.
    pub synthetic: bool,
}

/// Both lists. An enumeration failure of one kind is reported beside an empty list rather
/// than failing the whole call: a broken audio stack should not hide the cameras.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DeviceList {
    /// Cameras.
    pub cameras: Vec<Device>,
    /// Microphones.
    pub microphones: Vec<Device>,
    /// Why cameras could not be listed.
    pub camera_error: Option<String>,
    /// Why microphones could not be listed.
    pub microphone_error: Option<String>,
    /// Speakers (outputs), ending with "Silent" (no output).
    pub speakers: Vec<Device>,
    /// Why speakers could not be listed.
    pub speaker_error: Option<String>,
}

fn convert(r: rtcio_media::Result<Vec<DeviceInfo>>) -> (Vec<Device>, Option<String>) {
    match r {
        Ok(list) => (
            list.into_iter()
                .map(|d| Device {
                    id: d.id,
                    name: d.name,
                    is_default: d.is_default,
                    synthetic: false,
                })
                .collect(),
            None,
        ),
        Err(e) => {
            tracing::warn!("device enumeration failed: {e}");
            (Vec::new(), Some(e.to_string()))
        }
    }
}

fn synthetic(id: &str, name: &str, fake: bool) -> Device {
    Device {
        id: id.to_string(),
        name: name.to_string(),
        is_default: fake,
        synthetic: true,
    }
}

/// Lists cameras and microphones, each list ending with its synthetic source ("Test pattern",
/// "Tone"), which is the default under `RTCIO_FAKE_MEDIA=1`. Blocking (V4L2 and ALSA probes):
/// call off the async runtime.
pub fn list() -> DeviceList {
    let fake = media::fake_media_from_env();
    let (mut cameras, camera_error) = convert(rtcio_media::list_cameras());
    let (mut microphones, microphone_error) = convert(rtcio_media::list_microphones());
    if fake {
        for d in cameras.iter_mut().chain(microphones.iter_mut()) {
            d.is_default = false;
        }
    }
    let (mut speakers, speaker_error) = convert(rtcio_media::list_speakers());
    if fake {
        for d in speakers.iter_mut() {
            d.is_default = false;
        }
    }
    cameras.push(synthetic(media::TEST_PATTERN_ID, "Test pattern", fake));
    cameras.push(synthetic(
        media::TEST_PATTERN_GREEN_ID,
        "Test pattern (green)",
        false,
    ));
    microphones.push(synthetic(media::TONE_ID, "Tone", fake));
    speakers.push(synthetic(media::SILENT_ID, "Silent (no output)", fake));
    DeviceList {
        cameras,
        microphones,
        camera_error,
        microphone_error,
        speakers,
        speaker_error,
    }
}

/// What to send from after the device `failed` stopped working mid-call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    /// Switch to this device.
    Device(Device),
    /// Nothing left to switch to: that kind is turned off (the call goes on).
    Off,
}

/// Picks the device to fall back to when `failed` (a picker id; `None`: the default device)
/// stopped working, from the current list of that kind: the system's default if it is another
/// device, else the first other one. A real device falls back to real devices only (nobody
/// wants to send a test pattern because their camera was unplugged); a synthetic one to
/// another synthetic one (tests and demos). The failed device is never picked, even if it is
/// still listed (it may be listed but broken).
pub fn fallback(failed: Option<&str>, available: &[Device]) -> Fallback {
    let failed_synthetic = failed.is_some_and(|id| id.starts_with("synthetic:"));
    let default_id = available
        .iter()
        .find(|d| d.is_default)
        .map(|d| d.id.as_str());
    // The default device failed when none was named.
    let failed = failed.or(default_id);
    let candidates: Vec<&Device> = available
        .iter()
        .filter(|d| Some(d.id.as_str()) != failed && d.synthetic == failed_synthetic)
        .collect();
    candidates
        .iter()
        .find(|d| d.is_default)
        .or(candidates.first())
        .map_or(Fallback::Off, |d| Fallback::Device((*d).clone()))
}

/// How many other devices a fallback tries before giving up (each may fail to open).
const FALLBACK_TRIES: usize = 3;

/// What [`recover`] did about a device that stopped working (the `device-lost` event).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLost {
    /// `camera` / `microphone`.
    pub kind: &'static str,
    /// The picker id of the device that failed (`None`: the default).
    pub device: Option<String>,
    /// What happened, for the user.
    pub message: String,
    /// The device now sent from; `None`: that kind is off.
    pub fallback: Option<Device>,
}

impl DeviceLost {
    /// `{kind, device, message, fallback: {id, name} | null}`.
    pub fn payload(&self) -> serde_json::Value {
        let fallback = self
            .fallback
            .as_ref()
            .map(|d| serde_json::json!({"id": d.id, "name": d.name}));
        serde_json::json!({
            "kind": self.kind, "device": self.device, "message": self.message, "fallback": fallback,
        })
    }
}

/// After `failure` of the session's camera (video) or microphone (audio): switches to the
/// device [`fallback`] picks from `list` (trying up to three when they fail to open) or leaves
/// that kind without a source ("off"; the track stays, the call goes on). Returns what to tell
/// the user.
pub async fn recover(
    session: &mut crate::session::Session,
    kind: MediaKind,
    failure: &rtcio_glue::SourceFailure,
    list: &DeviceList,
) -> DeviceLost {
    let what = match kind {
        MediaKind::Video => "camera",
        MediaKind::Audio => "microphone",
    };
    let available = match kind {
        MediaKind::Video => &list.cameras,
        MediaKind::Audio => &list.microphones,
    };
    let failed = session
        .with_camera(|s| s.device(kind).map(str::to_owned))
        .flatten();
    let failed_name = available
        .iter()
        .find(|d| Some(&d.id) == failed.as_ref())
        .map_or_else(|| failure.label.clone(), |d| d.name.clone());
    let mut tried: Vec<String> = Vec::new();
    let mut now = None;
    for _ in 0..FALLBACK_TRIES {
        let left: Vec<Device> = available
            .iter()
            .filter(|d| !tried.contains(&d.id))
            .cloned()
            .collect();
        let Fallback::Device(next) = fallback(failed.as_deref(), &left) else {
            break;
        };
        tried.push(next.id.clone());
        let (id, fake) = (next.id.clone(), media::fake_media_from_env());
        let opened =
            tokio::task::spawn_blocking(move || media::open_replacement(kind, &id, fake)).await;
        match opened {
            Ok(Ok((source, label))) => {
                match session.with_camera(|s| s.replace_source(source, label, &next.id)) {
                    Some(Ok(())) => {
                        now = Some(next);
                        break;
                    }
                    other => tracing::warn!(?kind, "fallback not applied: {other:?}"),
                }
            }
            Ok(Err(e)) => tracing::warn!(?kind, device = %next.id, "fallback failed: {e}"),
            Err(e) => tracing::warn!(?kind, "fallback stopped: {e}"),
        }
    }
    let message = match &now {
        Some(d) => format!(
            "Your {what} ({failed_name}) stopped working: {}. Switched to {}.",
            failure.error, d.name
        ),
        None => format!(
            "Your {what} ({failed_name}) stopped working: {}. No other {what} found, so it is \
             off; you are still in the call.",
            failure.error
        ),
    };
    tracing::info!(?kind, fallback = ?now.as_ref().map(|d| &d.id), "{message}");
    DeviceLost {
        kind: what,
        device: failed,
        message,
        fallback: now,
    }
}

/// Monitors of the X display that can be shared (`$DISPLAY`). Blocking: off the runtime.
pub fn monitors() -> Result<Vec<Device>, AppError> {
    match convert(rtcio_media::list_monitors(None)) {
        (list, None) => Ok(list),
        (_, Some(e)) => Err(AppError::Media(format!("Cannot list the screens: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(id: &str, default: bool) -> Device {
        Device {
            id: id.into(),
            name: format!("name of {id}"),
            is_default: default,
            synthetic: id.starts_with("synthetic:"),
        }
    }

    fn picked(f: Fallback) -> Option<String> {
        match f {
            Fallback::Device(d) => Some(d.id),
            Fallback::Off => None,
        }
    }

    #[test]
    fn a_real_device_falls_back_to_the_default_then_the_first_other_real_one() {
        let list = [
            dev("/dev/video0", false),
            dev("/dev/video2", true),
            dev("/dev/video4", false),
            dev(media::TEST_PATTERN_ID, false),
        ];
        assert_eq!(
            picked(fallback(Some("/dev/video0"), &list)).as_deref(),
            Some("/dev/video2")
        );
        assert_eq!(
            picked(fallback(Some("/dev/video2"), &list)).as_deref(),
            Some("/dev/video0")
        );
        // The default failed (none named): another real one, never itself.
        assert_eq!(
            picked(fallback(None, &list)).as_deref(),
            Some("/dev/video0")
        );
    }

    #[test]
    fn nothing_real_left_means_off_not_a_test_pattern() {
        let list = [dev("hw:1", false), dev(media::TONE_ID, false)];
        assert_eq!(fallback(Some("hw:1"), &list), Fallback::Off);
        // Unplugged: gone from the list as well.
        assert_eq!(
            fallback(Some("hw:1"), &[dev(media::TONE_ID, true)]),
            Fallback::Off
        );
        assert_eq!(fallback(None, &[]), Fallback::Off);
    }

    #[test]
    fn a_synthetic_device_falls_back_to_another_synthetic_one() {
        let list = [
            dev("/dev/video0", true),
            dev(media::TEST_PATTERN_ID, false),
            dev(media::TEST_PATTERN_GREEN_ID, false),
        ];
        assert_eq!(
            picked(fallback(Some(media::TEST_PATTERN_ID), &list)).as_deref(),
            Some(media::TEST_PATTERN_GREEN_ID)
        );
        assert_eq!(
            fallback(Some(media::TONE_ID), &[dev(media::TONE_ID, false)]),
            Fallback::Off
        );
    }
}
