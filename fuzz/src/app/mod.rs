#[path = "../../../src-tauri/src/inbound.rs"]
pub mod inbound;
#[path = "../../../src-tauri/src/transfer/wire.rs"]
pub mod transfer;
