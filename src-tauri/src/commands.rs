//! Tauri commands: the UI's whole interface to Rust (`invoke(name, args)`).

use std::sync::Arc;

use rtcio::MediaKind;
use serde::Deserialize;
use serde_json::Value;
use tauri::{AppHandle, Emitter, Manager, Runtime, State};
use tauri_plugin_store::StoreExt;
use tokio::sync::Mutex;

use crate::devices::{self, DeviceList};
use crate::error::AppError;
use crate::inbound::ChatMessage;
use crate::media::{self, MediaConfig};
use crate::session::{JoinConfig, JoinInfo, ServerChoice, Session, UiSink};
use crate::settings::Settings;

/// File name of the settings store (in the app's data directory).
pub const STORE_FILE: &str = "settings.json";
const SETTINGS_KEY: &str = "settings";

/// The app's state: at most one call at a time.
#[derive(Default)]
pub struct AppState {
    /// The current call. A tokio mutex because join and leave await while holding it, which
    /// also serialises a double-clicked Join.
    pub session: Mutex<Option<Session>>,
    /// The start screen's preview (stopped on join: the call opens the devices itself).
    pub preview: std::sync::Mutex<Option<crate::preview::Preview>>,
    /// Flow control of frames to the page, which pulls them with [`next_frames`] or over the
    /// frame socket.
    gate: media::FrameGate,
    /// The loopback WebSocket the page pulls frames from (bound on the first [`frame_socket`];
    /// `None` inside: it could not be opened, or `RTCIO_FRAME_TRANSPORT=ipc`).
    socket: tokio::sync::OnceCell<Option<crate::frame_socket::FrameSocket>>,
}

impl AppState {
    /// Where every frame source of the app writes (`media::FrameGate::sink`) and the page's
    /// [`next_frames`] pulls from (`media::FrameFlow`: one batch held by the page, the newest
    /// frame per tile waiting).
    pub fn frame_gate(&self) -> &media::FrameGate {
        &self.gate
    }
}

/// Server choice as the UI sends it: `{kind: "host"}` or `{kind: "url", url}`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServerRequest {
    /// Host on this computer.
    Host,
    /// Use this server.
    Url {
        /// Address.
        url: String,
    },
}

/// The start screen's form.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinRequest {
    /// Display name.
    pub name: String,
    /// Room id.
    pub room_id: String,
    /// Server.
    pub server: ServerRequest,
    /// Optional room password.
    #[serde(default)]
    pub password: Option<String>,
    /// Chosen camera (none: camera starts off).
    #[serde(default)]
    pub camera: Option<String>,
    /// Chosen microphone (none: microphone starts muted).
    #[serde(default)]
    pub microphone: Option<String>,
    /// Camera resolution (`360p`, `720p`, `1080p`; none: 720p).
    #[serde(default)]
    pub resolution: Option<String>,
    /// STUN/TURN servers, relay-only, TURN relay when hosting (none: the defaults).
    #[serde(default)]
    pub network: Option<crate::settings::NetworkSettings>,
    /// Microphone processing switches (none: all on).
    #[serde(default)]
    pub sound: Option<crate::settings::SoundSettings>,
    /// Where the room's audio plays (a speaker id from `list_devices`; none: the default).
    #[serde(default)]
    pub speaker: Option<String>,
}

fn ui_sink<R: Runtime>(app: AppHandle<R>) -> UiSink {
    Arc::new(move |event: &str, payload: Value| {
        if let Err(e) = app.emit(event, payload) {
            tracing::warn!(event, "could not deliver an event to the UI: {e}");
        }
    })
}

/// Lists cameras and microphones.
#[tauri::command]
pub async fn list_devices() -> Result<DeviceList, AppError> {
    tokio::task::spawn_blocking(devices::list)
        .await
        .map_err(|e| AppError::Devices(format!("device enumeration stopped: {e}")))
}

/// Plays a short test sound on a speaker (`list_devices` id; none: the default) and says
/// where it played. The start screen's "Test" button.
#[tauri::command]
pub async fn test_speaker(speaker: Option<String>) -> Result<Value, AppError> {
    let device = media::output_device(speaker.as_deref(), media::fake_media_from_env());
    let played = tokio::task::spawn_blocking(move || {
        rtcio_media::play_test_sound(device, std::time::Duration::from_millis(800))
    })
    .await
    .map_err(|e| AppError::Media(format!("the test sound stopped: {e}")))?
    .map_err(|e| AppError::Media(format!("Cannot play on this speaker: {e}")))?;
    Ok(serde_json::json!({"device": played.device, "peakDbfs": played.peak_dbfs}))
}

/// Joins a room (leaving the current one first).
#[tauri::command]
pub async fn join<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    req: JoinRequest,
) -> Result<JoinInfo, AppError> {
    let mut current = state.session.lock().await;
    if let Some(old) = current.take() {
        old.leave().await;
    }
    stop_preview_now(&state).await;
    let server = match req.server {
        ServerRequest::Host => ServerChoice::Host,
        ServerRequest::Url { url } => ServerChoice::Url(url),
    };
    let mut cfg = JoinConfig::new(&req.name, &req.room_id, server);
    cfg.password = req.password;
    if let Some(network) = req.network.map(|n| n.sanitized()) {
        network.validate().map_err(AppError::Invalid)?;
        network.apply(&mut cfg.socket);
        cfg.host_turn = network.host_turn;
    }
    // Without a device the honest answer is "off"; a device that fails to open is turned off
    // by the session (and reported in `mediaErrors`).
    cfg.mic = req.microphone.is_some();
    cfg.cam = req.camera.is_some();
    let size = match req.resolution.as_deref() {
        None | Some("") => crate::settings::resolution_size(crate::settings::DEFAULT_RESOLUTION),
        Some(r) => Some(
            crate::settings::resolution_size(r)
                .ok_or_else(|| AppError::Invalid(format!("unknown camera resolution {r:?}")))?,
        ),
    };
    cfg.media = MediaConfig::from_choices(
        req.camera.as_deref(),
        req.microphone.as_deref(),
        media::fake_media_from_env(),
    );
    if let Some(size) = size {
        cfg.media = cfg.media.with_camera_size(size);
    }
    cfg.media.audio_processing = req.sound.unwrap_or_default().apm();
    if req.speaker.is_some() {
        cfg.media.speaker =
            media::output_device(req.speaker.as_deref(), media::fake_media_from_env());
    }
    let frames = state.frame_gate().sink();
    let (session, info) = Session::join_with_frames(cfg, ui_sink(app.clone()), frames).await?;
    for kind in [MediaKind::Video, MediaKind::Audio] {
        if let Some(rx) = session.with_camera(|s| s.source_failures(kind)).flatten() {
            spawn_device_watch(app.clone(), kind, rx);
        }
    }
    *current = Some(session);
    Ok(info)
}

/// `camera` / `microphone`, as the UI names a kind.
fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Video => "camera",
        MediaKind::Audio => "microphone",
    }
}

/// Switches the camera (video) or microphone (audio) of the running call to the device a
/// picker id names: same track and stream, peers keep decoding. Returns the new label.
async fn switch_source(
    state: &AppState,
    kind: MediaKind,
    device: String,
) -> Result<String, AppError> {
    // `&mut`: a session is not `Sync`, so a shared borrow cannot cross the awaits below.
    let mut guard = state.session.lock().await;
    let session = guard.as_mut().ok_or(AppError::NotJoined)?;
    if session.with_camera(|s| s.has(kind)) != Some(true) {
        let what = kind_name(kind);
        return Err(AppError::Invalid(format!(
            "The call started without a {what}; leave and join again with one to send it."
        )));
    }
    let id = device.clone();
    let fake = media::fake_media_from_env();
    let (source, label) =
        tokio::task::spawn_blocking(move || media::open_replacement(kind, &id, fake))
            .await
            .map_err(|e| AppError::Media(format!("opening the device stopped: {e}")))?
            .map_err(|e| {
                AppError::Media(format!("Cannot switch to this {}: {e}", kind_name(kind)))
            })?;
    session
        .with_camera(|s| s.replace_source(source, label, &device))
        .ok_or(AppError::NotJoined)?
        .map_err(|e| AppError::Media(format!("Cannot switch the {}: {e}", kind_name(kind))))?;
    Ok(label.to_string())
}

/// Sends video from another camera (a `list_devices` id) without leaving the call.
#[tauri::command]
pub async fn switch_camera(state: State<'_, AppState>, device: String) -> Result<Value, AppError> {
    let label = switch_source(&state, MediaKind::Video, device.clone()).await?;
    Ok(serde_json::json!({"device": device, "label": label}))
}

/// Sends audio from another microphone (a `list_devices` id) without leaving the call.
#[tauri::command]
pub async fn switch_microphone(
    state: State<'_, AppState>,
    device: String,
) -> Result<Value, AppError> {
    let label = switch_source(&state, MediaKind::Audio, device.clone()).await?;
    Ok(serde_json::json!({"device": device, "label": label}))
}

/// Plays the call's audio on another speaker (a `list_devices` id; none: the default).
#[tauri::command]
pub async fn switch_speaker(
    state: State<'_, AppState>,
    speaker: Option<String>,
) -> Result<Value, AppError> {
    let device = media::output_device(speaker.as_deref(), media::fake_media_from_env());
    let guard = state.session.lock().await;
    let session = guard.as_ref().ok_or(AppError::NotJoined)?;
    let name = session.set_speaker(device);
    Ok(serde_json::json!({"speaker": speaker, "device": name}))
}

/// Event sent when a camera or microphone stops working mid-call: `{kind, device, message,
/// fallback: {id, name} | null}` (null: that kind is now off; the UI turns its button off).
pub const DEVICE_LOST_EVENT: &str = "device-lost";

/// Watches one kind's capture source: when it fails, falls back to another device (the policy
/// in [`devices::fallback`]) or to nothing, and tells the UI either way. Ends with the stream.
fn spawn_device_watch<R: Runtime>(
    app: AppHandle<R>,
    kind: MediaKind,
    mut failures: tokio::sync::watch::Receiver<Option<rtcio_glue::SourceFailure>>,
) {
    tauri::async_runtime::spawn(async move {
        while failures.changed().await.is_ok() {
            let Some(failure) = failures.borrow_and_update().clone() else {
                continue;
            };
            on_device_lost(&app, kind, failure).await;
        }
    });
}

async fn on_device_lost<R: Runtime>(
    app: &AppHandle<R>,
    kind: MediaKind,
    failure: rtcio_glue::SourceFailure,
) {
    let state = app.state::<AppState>();
    let list = tokio::task::spawn_blocking(devices::list)
        .await
        .unwrap_or_default();
    let mut guard = state.session.lock().await;
    let Some(session) = guard.as_mut() else {
        return;
    };
    let lost = devices::recover(session, kind, &failure, &list).await;
    drop(guard);
    if let Err(e) = app.emit(DEVICE_LOST_EVENT, lost.payload()) {
        tracing::warn!("could not deliver device-lost to the UI: {e}");
    }
}

/// Leaves the current room (nothing to do when not in one).
#[tauri::command]
pub async fn leave(state: State<'_, AppState>) -> Result<(), AppError> {
    if let Some(session) = state.session.lock().await.take() {
        session.leave().await;
    }
    Ok(())
}

/// Sends a chat message; returns it for the local echo.
#[tauri::command]
pub async fn send_chat(state: State<'_, AppState>, text: String) -> Result<ChatMessage, AppError> {
    let guard = state.session.lock().await;
    guard.as_ref().ok_or(AppError::NotJoined)?.send_chat(&text)
}

/// Sets our microphone / camera state and tells the room.
#[tauri::command]
pub async fn set_media_state(
    state: State<'_, AppState>,
    mic: bool,
    cam: bool,
) -> Result<(), AppError> {
    let guard = state.session.lock().await;
    guard
        .as_ref()
        .ok_or(AppError::NotJoined)?
        .set_media_state(mic, cam)
}

/// The frame formats the page paints: `"i420"` with WebGL 2 there (RGBA always); remote tiles
/// come as I420 then (see `media::set_page_takes_i420`).
#[tauri::command]
pub fn video_formats(formats: Option<Vec<String>>) {
    media::set_page_takes_i420(formats.unwrap_or_default().iter().any(|f| f == "i420"));
}

/// The page's pull of video frames: it has painted (or dropped) batch `ack` (`None`: it holds
/// none, e.g. just loaded), and the reply is the next batch as raw bytes (`media::FrameFlow`:
/// the newest frame of every tile waiting; at once when some wait, else when the next comes,
/// or an empty batch after `media::PULL_WAIT`). One request and its reply per batch, the
/// acknowledgement riding on the request. Async, so the wait happens off the main thread.
#[tauri::command]
pub async fn next_frames(
    state: State<'_, AppState>,
    ack: Option<u32>,
) -> Result<tauri::ipc::Response, AppError> {
    let batch = state.frame_gate().pull(ack, media::PULL_WAIT).await;
    Ok(tauri::ipc::Response::new(batch))
}

/// Where the page pulls its frames from instead of [`next_frames`]: `{port, token}` of the
/// app's loopback WebSocket (`ws://127.0.0.1:PORT/?token=TOKEN`, see `frame_socket.rs`), bound
/// once per run on the first call; `null` when it could not be opened (said once in the log)
/// or `RTCIO_FRAME_TRANSPORT=ipc`: the page pulls with `next_frames` then.
#[tauri::command]
pub async fn frame_socket(
    state: State<'_, AppState>,
) -> Result<Option<crate::frame_socket::FrameSocketInfo>, AppError> {
    let gate = state.frame_gate().clone();
    let socket = state
        .socket
        .get_or_init(|| async move {
            if crate::frame_socket::disabled_by_env() {
                tracing::info!(
                    "video frames go to the page over the IPC (RTCIO_FRAME_TRANSPORT=ipc)"
                );
                return None;
            }
            match crate::frame_socket::FrameSocket::start(gate).await {
                Ok(socket) => Some(socket),
                Err(e) => {
                    tracing::warn!(
                        "no frame socket ({e}): video frames go to the page over the IPC"
                    );
                    None
                }
            }
        })
        .await;
    Ok(socket.as_ref().map(|s| s.info()))
}

/// The size a tile is shown at (CSS pixels × device pixel ratio): its frames are scaled to it.
#[tauri::command]
pub async fn set_tile_size(
    state: State<'_, AppState>,
    key: String,
    width: u32,
    height: u32,
) -> Result<(), AppError> {
    let guard = state.session.lock().await;
    guard
        .as_ref()
        .ok_or(AppError::NotJoined)?
        .set_tile_size(&key, width, height);
    Ok(())
}

/// Lists the monitors that can be shared.
#[tauri::command]
pub async fn list_monitors() -> Result<Vec<devices::Device>, AppError> {
    tokio::task::spawn_blocking(devices::monitors)
        .await
        .map_err(|e| AppError::Devices(format!("monitor enumeration stopped: {e}")))?
}

/// Starts sharing a monitor (`None`: the primary one).
#[tauri::command]
pub async fn start_screen_share(
    state: State<'_, AppState>,
    monitor: Option<String>,
) -> Result<(), AppError> {
    let mut guard = state.session.lock().await;
    guard
        .as_mut()
        .ok_or(AppError::NotJoined)?
        .start_screen_share(None, monitor)
        .await
}

/// Stops sharing; false when nothing was shared.
#[tauri::command]
pub async fn stop_screen_share(state: State<'_, AppState>) -> Result<bool, AppError> {
    let guard = state.session.lock().await;
    guard
        .as_ref()
        .ok_or(AppError::NotJoined)?
        .stop_screen_share()
}

/// Sends a file to one peer over its `file` channel; returns the transfer id (`file-progress`,
/// `file-done` and `file-error` follow as events).
#[tauri::command]
pub async fn send_file(
    state: State<'_, AppState>,
    peer_id: String,
    path: String,
) -> Result<String, AppError> {
    let mut guard = state.session.lock().await;
    guard
        .as_mut()
        .ok_or(AppError::NotJoined)?
        .send_file(&peer_id, std::path::Path::new(&path))
        .await
}

/// Cancels a running transfer (either direction).
#[tauri::command]
pub async fn cancel_transfer(state: State<'_, AppState>, tid: String) -> Result<(), AppError> {
    let guard = state.session.lock().await;
    guard
        .as_ref()
        .ok_or(AppError::NotJoined)?
        .cancel_transfer(&tid)
}

/// Reads the saved settings (defaults when there are none or they are unreadable).
#[tauri::command]
pub fn get_settings<R: Runtime>(app: AppHandle<R>) -> Result<Settings, AppError> {
    let store = app
        .store(STORE_FILE)
        .map_err(|e| AppError::Settings(format!("cannot open the settings store: {e}")))?;
    Ok(Settings::from_stored(store.get(SETTINGS_KEY)))
}

/// Saves settings.
#[tauri::command]
pub fn save_settings<R: Runtime>(app: AppHandle<R>, settings: Settings) -> Result<(), AppError> {
    let store = app
        .store(STORE_FILE)
        .map_err(|e| AppError::Settings(format!("cannot open the settings store: {e}")))?;
    let value = serde_json::to_value(settings.sanitized())
        .map_err(|e| AppError::Settings(e.to_string()))?;
    store.set(SETTINGS_KEY, value);
    store
        .save()
        .map_err(|e| AppError::Settings(format!("cannot write the settings file: {e}")))
}

/// Takes the running preview, if any, and waits until its devices are released.
async fn stop_preview_now(state: &AppState) {
    let old = state
        .preview
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(old) = old
        && let Err(e) = tokio::task::spawn_blocking(move || old.stop()).await
    {
        tracing::warn!("stopping the preview failed: {e}");
    }
}

/// Starts (or restarts, with other devices) the start screen's preview: frames keyed
/// `preview/camera` on the video channel, `mic-level {rms, peak}` events. A device that cannot
/// be opened is reported in `errors`, never as a failure.
#[tauri::command]
pub async fn start_preview<R: Runtime>(
    app: AppHandle<R>,
    state: State<'_, AppState>,
    camera: Option<String>,
    microphone: Option<String>,
) -> Result<crate::preview::PreviewInfo, AppError> {
    // The previous preview releases its devices before the new one opens them.
    stop_preview_now(&state).await;
    let frames = state.frame_gate().sink();
    let ui = ui_sink(app);
    let fake = media::fake_media_from_env();
    let (preview, info) = tokio::task::spawn_blocking(move || {
        crate::preview::Preview::start(camera.as_deref(), microphone.as_deref(), fake, frames, ui)
    })
    .await
    .map_err(|e| AppError::Media(format!("the preview did not start: {e}")))?;
    // A second start racing this one: the later preview wins, the other is stopped.
    let old = state
        .preview
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .replace(preview);
    if let Some(old) = old {
        let _ = tokio::task::spawn_blocking(move || old.stop()).await;
    }
    Ok(info)
}

/// Stops the preview (nothing to do when none runs).
#[tauri::command]
pub async fn stop_preview(state: State<'_, AppState>) -> Result<(), AppError> {
    stop_preview_now(&state).await;
    Ok(())
}
