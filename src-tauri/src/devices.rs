//! Camera and microphone lists for the start screen, from rtcio-media.

use rtcio_media::DeviceInfo;
use serde::Serialize;

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
}

fn convert(r: rtcio_media::Result<Vec<DeviceInfo>>) -> (Vec<Device>, Option<String>) {
    match r {
        Ok(list) => (
            list.into_iter()
                .map(|d| Device {
                    id: d.id,
                    name: d.name,
                    is_default: d.is_default,
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

/// Lists cameras and microphones. Blocking (V4L2 and ALSA probes): call off the async runtime.
pub fn list() -> DeviceList {
    let (cameras, camera_error) = convert(rtcio_media::list_cameras());
    let (microphones, microphone_error) = convert(rtcio_media::list_microphones());
    DeviceList {
        cameras,
        microphones,
        camera_error,
        microphone_error,
    }
}
