#[path = "../../../src-tauri/src/inbound.rs"]
pub mod inbound;
