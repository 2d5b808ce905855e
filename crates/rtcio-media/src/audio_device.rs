//! cpal device lookup shared by the microphone source and the speaker output.

use cpal::traits::{DeviceTrait, HostTrait};

use crate::error::{MediaError, Result};
use crate::source::{DeviceInfo, DeviceKind};

/// Maps a cpal error to ours.
pub(crate) fn cpal_err(kind: &'static str, id: &str, e: &cpal::Error) -> MediaError {
    match e.kind() {
        cpal::ErrorKind::DeviceBusy => MediaError::DeviceBusy {
            kind,
            id: id.to_owned(),
        },
        cpal::ErrorKind::DeviceNotAvailable => MediaError::DeviceNotFound {
            kind,
            id: id.to_owned(),
        },
        _ => MediaError::Device {
            kind,
            message: e.to_string(),
        },
    }
}

fn device_id(device: &cpal::Device) -> Option<String> {
    device.id().ok().map(|id| id.to_string())
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn list(kind: DeviceKind) -> Result<Vec<DeviceInfo>> {
    let label = kind_label(kind);
    let host = cpal::default_host();
    let default = match kind {
        DeviceKind::Microphone => host.default_input_device(),
        _ => host.default_output_device(),
    }
    .and_then(|d| device_id(&d));
    let devices: Vec<cpal::Device> = match kind {
        DeviceKind::Microphone => host
            .input_devices()
            .map_err(|e| cpal_err(label, "*", &e))?
            .collect(),
        _ => host
            .output_devices()
            .map_err(|e| cpal_err(label, "*", &e))?
            .collect(),
    };
    Ok(devices
        .iter()
        .filter_map(|d| {
            let id = device_id(d)?;
            Some(DeviceInfo {
                is_default: default.as_deref() == Some(id.as_str()),
                name: device_name(d),
                id,
                kind,
                size: None,
            })
        })
        .collect())
}

fn kind_label(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Microphone => "microphone",
        DeviceKind::Speaker => "speaker",
        DeviceKind::Camera => "camera",
        DeviceKind::Monitor => "monitor",
    }
}

/// Lists audio inputs. An empty list (not an error) when the machine has none.
pub fn list_microphones() -> Result<Vec<DeviceInfo>> {
    list(DeviceKind::Microphone)
}

/// Lists audio outputs. An empty list (not an error) when the machine has none.
pub fn list_speakers() -> Result<Vec<DeviceInfo>> {
    list(DeviceKind::Speaker)
}

/// Finds an input (`kind == Microphone`) or output device by id or name; `None` means the
/// default device. A missing device is [`MediaError::DeviceNotFound`].
pub(crate) fn find_device(kind: DeviceKind, id: Option<&str>) -> Result<cpal::Device> {
    let label = kind_label(kind);
    let host = cpal::default_host();
    let not_found = || MediaError::DeviceNotFound {
        kind: label,
        id: id.unwrap_or("default").to_owned(),
    };
    let Some(id) = id else {
        return match kind {
            DeviceKind::Microphone => host.default_input_device(),
            _ => host.default_output_device(),
        }
        .ok_or_else(not_found);
    };
    let mut devices: Vec<cpal::Device> = match kind {
        DeviceKind::Microphone => host
            .input_devices()
            .map_err(|e| cpal_err(label, id, &e))?
            .collect(),
        _ => host
            .output_devices()
            .map_err(|e| cpal_err(label, id, &e))?
            .collect(),
    };
    let pos = devices
        .iter()
        .position(|d| device_id(d).as_deref() == Some(id))
        .or_else(|| devices.iter().position(|d| device_name(d) == id))
        .ok_or_else(not_found)?;
    Ok(devices.swap_remove(pos))
}

/// Picks a stream config: 48 kHz f32 with the wanted channel count if offered, else the
/// device's default (the caller resamples and remixes).
pub(crate) fn pick_config(
    device: &cpal::Device,
    kind: DeviceKind,
    channels: u16,
) -> Result<(cpal::StreamConfig, cpal::SampleFormat)> {
    let label = kind_label(kind);
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match kind {
        DeviceKind::Microphone => device
            .supported_input_configs()
            .map_err(|e| cpal_err(label, "default", &e))?
            .collect(),
        _ => device
            .supported_output_configs()
            .map_err(|e| cpal_err(label, "default", &e))?
            .collect(),
    };
    let preferred = ranges.iter().find_map(|r| {
        (r.channels() == channels && r.sample_format() == cpal::SampleFormat::F32)
            .then(|| r.try_with_sample_rate(48_000))
            .flatten()
    });
    let supported = match preferred {
        Some(s) => s,
        None => match kind {
            DeviceKind::Microphone => device.default_input_config(),
            _ => device.default_output_config(),
        }
        .map_err(|e| cpal_err(label, "default", &e))?,
    };
    Ok((supported.config(), supported.sample_format()))
}
