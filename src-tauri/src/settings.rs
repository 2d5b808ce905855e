//! Saved preferences (name, recent servers, chosen devices, camera resolution), kept with
//! tauri-plugin-store.

use serde::{Deserialize, Serialize};

use crate::inbound::MAX_NAME_CHARS;

/// How many recent server addresses are remembered.
pub const MAX_RECENT_SERVERS: usize = 5;

/// Which server the start screen offers first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerMode {
    /// Host on this computer.
    #[default]
    Host,
    /// An rtc.io server URL.
    Url,
}

/// Everything the app remembers between runs. Unknown or missing fields take their defaults,
/// so an older or hand-edited file never stops the app from starting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    /// Display name.
    pub name: String,
    /// Most recent first.
    pub last_servers: Vec<String>,
    /// Chosen camera id.
    pub camera: Option<String>,
    /// Chosen microphone id.
    pub microphone: Option<String>,
    /// Chosen speaker id.
    pub speaker: Option<String>,
    /// Host or URL.
    pub server_mode: ServerMode,
    /// The URL last typed.
    pub last_url: String,
    /// Camera capture resolution: one of [`RESOLUTIONS`]' names (empty: [`DEFAULT_RESOLUTION`]).
    /// A string, not an enum, so an unknown value from a newer version only resets this field.
    pub resolution: String,
    /// STUN/TURN and relay choices.
    pub network: NetworkSettings,
    /// Microphone processing switches.
    pub sound: SoundSettings,
}

/// Microphone processing: each switch on by default (what a laptop with speakers needs);
/// all off is "music mode" (the signal is sent untouched).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SoundSettings {
    /// Remove the others' voices the microphone picks up from the speakers.
    pub echo_cancellation: bool,
    /// Attenuate steady background noise.
    pub noise_suppression: bool,
    /// Keep the voice at a steady level.
    pub auto_gain: bool,
}

impl Default for SoundSettings {
    fn default() -> Self {
        SoundSettings {
            echo_cancellation: true,
            noise_suppression: true,
            auto_gain: true,
        }
    }
}

impl SoundSettings {
    /// The processor's switches (the high-pass filter runs with any of the others).
    pub fn apm(&self) -> rtcio_media::ApmConfig {
        rtcio_media::ApmConfig {
            echo_cancellation: self.echo_cancellation,
            noise_suppression: self.noise_suppression,
            auto_gain: self.auto_gain,
            high_pass: self.echo_cancellation || self.noise_suppression || self.auto_gain,
        }
    }
}

/// Most STUN/TURN URLs the settings keep.
pub const MAX_ICE_URLS: usize = 8;

/// The start screen's "Network" section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetworkSettings {
    /// `stun:` / `turn:` URLs (empty: rtc.io's default STUN servers).
    pub ice_servers: Vec<String>,
    /// TURN user name for the `turn:` URLs.
    pub ice_username: String,
    /// TURN password for the `turn:` URLs.
    pub ice_credential: String,
    /// Relayed candidates only: peers never see this computer's addresses (needs TURN).
    pub relay_only: bool,
    /// When hosting, also run a TURN relay; the room's members get its credentials from the
    /// server (`/ice-servers`).
    pub host_turn: bool,
}

impl NetworkSettings {
    /// Trimmed and bounded, blank URLs dropped.
    pub fn sanitized(mut self) -> Self {
        self.ice_servers = self
            .ice_servers
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty() && u.len() <= 512)
            .take(MAX_ICE_URLS)
            .collect();
        self.ice_username = self.ice_username.trim().chars().take(512).collect();
        self.ice_credential = self.ice_credential.chars().take(512).collect();
        self
    }

    /// Checks the URLs: a clear sentence for the first one that is not STUN or TURN.
    pub fn validate(&self) -> Result<(), String> {
        for u in &self.ice_servers {
            let scheme = u.split(':').next().unwrap_or("");
            if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") || u.len() <= scheme.len() + 1
            {
                return Err(format!(
                    "{u:?} is not a STUN or TURN address (they look like stun:host:3478 or turn:host:3478)."
                ));
            }
        }
        if self.ice_servers.iter().any(|u| u.starts_with("turn"))
            && (self.ice_username.is_empty() || self.ice_credential.is_empty())
        {
            return Err("A TURN server needs a user name and a password.".into());
        }
        Ok(())
    }

    /// Applies these choices to the library's options.
    pub fn apply(&self, o: &mut rtcio::Options) {
        if !self.ice_servers.is_empty() {
            o.ice_servers = rtcio::IceServers::Custom(
                self.ice_servers
                    .iter()
                    .map(|u| {
                        let turn = u.starts_with("turn");
                        rtcio::IceServer {
                            urls: vec![u.clone()],
                            username: turn.then(|| self.ice_username.clone()),
                            credential: turn.then(|| self.ice_credential.clone()),
                        }
                    })
                    .collect(),
            );
        }
        o.relay_only = self.relay_only;
    }
}

/// The camera resolutions the start screen offers: name → capture size.
pub const RESOLUTIONS: [(&str, (u32, u32)); 3] = [
    ("360p", (640, 360)),
    ("720p", (1280, 720)),
    ("1080p", (1920, 1080)),
];

/// What a camera captures at unless the user chose otherwise.
pub const DEFAULT_RESOLUTION: &str = "720p";

/// The capture size of a resolution name (`None` for an unknown one).
pub fn resolution_size(name: &str) -> Option<(u32, u32)> {
    RESOLUTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, size)| *size)
}

impl Settings {
    /// Trims and bounds what the UI sent, so the file stays small and valid.
    pub fn sanitized(mut self) -> Self {
        self.name = self.name.trim().chars().take(MAX_NAME_CHARS).collect();
        let mut seen = Vec::new();
        for s in self.last_servers {
            let s = s.trim().to_string();
            if !s.is_empty() && s.len() <= 2048 && !seen.contains(&s) {
                seen.push(s);
            }
        }
        seen.truncate(MAX_RECENT_SERVERS);
        self.last_servers = seen;
        self.last_url = self.last_url.trim().chars().take(2048).collect();
        self.camera = self.camera.filter(|c| !c.is_empty() && c.len() <= 512);
        self.microphone = self.microphone.filter(|c| !c.is_empty() && c.len() <= 512);
        self.speaker = self.speaker.filter(|c| !c.is_empty() && c.len() <= 512);
        if resolution_size(&self.resolution).is_none() {
            self.resolution = DEFAULT_RESOLUTION.to_string();
        }
        self.network = self.network.sanitized();
        self
    }

    /// Reads settings from a stored JSON value; anything unreadable gives the defaults.
    pub fn from_stored(value: Option<serde_json::Value>) -> Self {
        match value.map(serde_json::from_value::<Settings>) {
            Some(Ok(s)) => s.sanitized(),
            Some(Err(e)) => {
                tracing::warn!("ignoring unreadable saved settings: {e}");
                Settings::default()
            }
            None => Settings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolution_is_kept_when_known_and_reset_when_not() {
        let s = Settings::from_stored(Some(json!({"name": "Ann", "resolution": "1080p"})));
        assert_eq!(s.resolution, "1080p");
        assert_eq!(resolution_size(&s.resolution), Some((1920, 1080)));
        // An unknown value (a newer version's, a hand edit) resets only this field.
        let s = Settings::from_stored(Some(json!({"name": "Ann", "resolution": "8k"})));
        assert_eq!((s.name.as_str(), s.resolution.as_str()), ("Ann", "720p"));
        let s = Settings::from_stored(Some(json!({"name": "Ann", "resolution": 7})));
        assert_eq!(
            s,
            Settings::default(),
            "a wrong type makes the file unreadable as a whole"
        );
        assert_eq!(resolution_size(""), None);
    }

    #[test]
    fn defaults_for_missing_or_bad_values() {
        assert_eq!(Settings::from_stored(None), Settings::default());
        assert_eq!(Settings::from_stored(Some(json!(42))), Settings::default());
        let s = Settings::from_stored(Some(json!({"name": " Ann ", "unknown": 1})));
        assert_eq!(s.name, "Ann");
        assert_eq!(s.server_mode, ServerMode::Host);
    }

    #[test]
    fn recent_servers_deduplicated_and_bounded() {
        let s = Settings {
            last_servers: vec![
                "a".into(),
                " a ".into(),
                "".into(),
                "b".into(),
                "c".into(),
                "d".into(),
                "e".into(),
                "f".into(),
            ],
            ..Settings::default()
        }
        .sanitized();
        assert_eq!(s.last_servers, vec!["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn network_settings_are_checked_and_applied() {
        let n = NetworkSettings {
            ice_servers: vec![
                " turn:t.example:3478 ".into(),
                "".into(),
                "stun:s.example".into(),
            ],
            ice_username: " u ".into(),
            ice_credential: "p".into(),
            relay_only: true,
            host_turn: false,
        }
        .sanitized();
        assert_eq!(n.ice_servers, vec!["turn:t.example:3478", "stun:s.example"]);
        assert_eq!(n.validate(), Ok(()));
        let mut o = rtcio::Options::default();
        n.apply(&mut o);
        assert!(o.relay_only);
        let rtcio::IceServers::Custom(list) = &o.ice_servers else {
            panic!("custom servers expected");
        };
        assert_eq!(list[0].username.as_deref(), Some("u"));
        assert_eq!(list[1].username, None, "no credentials for STUN");

        let bad = NetworkSettings {
            ice_servers: vec!["http://x".into()],
            ..NetworkSettings::default()
        };
        assert!(bad.validate().unwrap_err().contains("not a STUN or TURN"));
        let no_creds = NetworkSettings {
            ice_servers: vec!["turn:x:3478".into()],
            ..NetworkSettings::default()
        };
        assert!(no_creds.validate().unwrap_err().contains("user name"));
        // Nothing set: the library's defaults stay.
        let mut o = rtcio::Options::default();
        NetworkSettings::default().apply(&mut o);
        assert_eq!(o.ice_servers, rtcio::IceServers::RtcioDefault);
        assert!(!o.relay_only);
        let many = NetworkSettings {
            ice_servers: (0..20).map(|i| format!("stun:h{i}")).collect(),
            ..NetworkSettings::default()
        }
        .sanitized();
        assert_eq!(many.ice_servers.len(), MAX_ICE_URLS);
    }

    #[test]
    fn sound_defaults_on_and_music_mode_is_a_bypass() {
        let s = Settings::from_stored(Some(json!({"name": "Ann"})));
        assert_eq!(s.sound, SoundSettings::default());
        assert_eq!(s.sound.apm(), rtcio_media::ApmConfig::VOICE);
        let s = Settings::from_stored(Some(json!({"sound": {"autoGain": false}})));
        assert!(s.sound.echo_cancellation && !s.sound.auto_gain);
        let off = SoundSettings {
            echo_cancellation: false,
            noise_suppression: false,
            auto_gain: false,
        };
        assert!(off.apm().is_bypass());
    }

    #[test]
    fn camel_case_on_the_wire() {
        let v = serde_json::to_value(Settings::default()).unwrap();
        assert!(v.get("lastServers").is_some());
        assert_eq!(v["serverMode"], "host");
    }
}
