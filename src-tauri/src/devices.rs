//! Camera, microphone and speaker lists for the start screen, from rtcio-media.

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

/// Monitors of the X display that can be shared (`$DISPLAY`). Blocking: off the runtime.
pub fn monitors() -> Result<Vec<Device>, AppError> {
    match convert(rtcio_media::list_monitors(None)) {
        (list, None) => Ok(list),
        (_, Some(e)) => Err(AppError::Media(format!("Cannot list the screens: {e}"))),
    }
}
