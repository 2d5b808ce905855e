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
    /// Host or URL.
    pub server_mode: ServerMode,
    /// The URL last typed.
    pub last_url: String,
    /// Camera capture resolution: one of [`RESOLUTIONS`]' names (empty: [`DEFAULT_RESOLUTION`]).
    /// A string, not an enum, so an unknown value from a newer version only resets this field.
    pub resolution: String,
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
        if resolution_size(&self.resolution).is_none() {
            self.resolution = DEFAULT_RESOLUTION.to_string();
        }
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
    fn camel_case_on_the_wire() {
        let v = serde_json::to_value(Settings::default()).unwrap();
        assert!(v.get("lastServers").is_some());
        assert_eq!(v["serverMode"], "host");
    }
}
