//! Devices that do not exist on a CI machine: enumeration works and opening a missing device is
//! a typed error, never a panic. The null sink plays without a sound card.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtcio_media::{
    AudioLevel, AudioMixer, AudioOutput, AudioSource, CameraConfig, CameraSource, MediaError,
    MicrophoneConfig, MicrophoneSource, OutputDevice, list_cameras, list_microphones,
    list_speakers,
};

#[test]
fn missing_camera_is_device_not_found() {
    // Enumeration itself must not fail on a machine without cameras.
    let cameras = list_cameras().unwrap_or_default();
    let result = CameraSource::open(CameraConfig {
        device: Some("no-such-camera-42".into()),
        ..CameraConfig::default()
    });
    assert!(
        matches!(
            result,
            Err(MediaError::DeviceNotFound { kind: "camera", .. })
        ),
        "{result:?}"
    );
    if cameras.is_empty() {
        let default = CameraSource::open(CameraConfig::default());
        assert!(
            matches!(default, Err(MediaError::DeviceNotFound { .. })),
            "{default:?}"
        );
    }
}

#[test]
fn missing_microphone_is_device_not_found() {
    let _ = list_microphones();
    let result = MicrophoneSource::open(MicrophoneConfig {
        device: Some("no-such-microphone-42".into()),
        channels: 1,
    });
    assert!(
        matches!(
            result,
            Err(MediaError::DeviceNotFound {
                kind: "microphone",
                ..
            } | MediaError::Device { .. })
        ),
        "{result:?}"
    );
    let bad = MicrophoneSource::open(MicrophoneConfig {
        device: None,
        channels: 7,
    });
    assert!(matches!(bad, Err(MediaError::InvalidInput(_))));
}

#[test]
fn missing_speaker_is_an_error_and_the_null_sink_plays() {
    let _ = list_speakers();
    let mixer = Arc::new(Mutex::new(AudioMixer::new(2)));
    let missing = AudioOutput::start(
        Arc::clone(&mixer),
        OutputDevice::Id("no-such-speaker-42".into()),
    );
    assert!(missing.is_err());
    let mut out = AudioOutput::start_or_null(
        Arc::clone(&mixer),
        OutputDevice::Id("no-such-speaker-42".into()),
    );
    assert!(out.is_null());
    assert!(
        out.wait_for_frames(2, Duration::from_secs(10)),
        "null sink pulled no audio"
    );
    // Feed a packet while the sink runs: the mixer is shared and lock-protected.
    mixer
        .lock()
        .unwrap()
        .push(
            "peer",
            0,
            bytes::Bytes::from_static(&[0xF8, 0xFF, 0xFE]),
            Instant::now(),
        )
        .unwrap();
    out.stop();
    assert_eq!(mixer.lock().unwrap().peers().count(), 1);
}

/// ALSA's "null" device exists wherever alsa-lib does (it is software): it exercises the real
/// cpal capture and playback paths without hardware. Skipped where it is not listed.
#[test]
fn microphone_and_speaker_run_on_the_alsa_null_device() {
    let null_id = "alsa:null";
    let listed = list_microphones()
        .map(|l| l.iter().any(|d| d.id == null_id))
        .unwrap_or(false);
    if !listed {
        eprintln!("skipped: no {null_id} device");
        return;
    }
    let mut mic = MicrophoneSource::open(MicrophoneConfig {
        device: Some(null_id.into()),
        channels: 1,
    })
    .unwrap();
    for _ in 0..3 {
        let frame = mic.next_frame().unwrap();
        assert_eq!(
            (frame.frames(), frame.sample_rate, frame.channels),
            (960, 48_000, 1)
        );
        assert_eq!(AudioLevel::measure(&frame).peak, 0.0);
    }
    mic.stop();
    assert!(matches!(mic.next_frame(), Err(MediaError::Stopped)));

    let mixer = Arc::new(Mutex::new(AudioMixer::new(2)));
    let out = AudioOutput::start(Arc::clone(&mixer), OutputDevice::Id(null_id.into())).unwrap();
    assert!(!out.is_null());
    assert!(
        out.wait_for_frames(5, Duration::from_secs(10)),
        "cpal output pulled no audio"
    );
}
