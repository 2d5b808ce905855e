//! Helpers shared by the integration tests.
#![allow(dead_code)]

// One browser driver for every package's tests.
#[path = "../../../crates/rtcio/tests/common/browser.rs"]
pub mod browser;

pub mod cli;
pub mod process;
pub mod session;
pub mod webdriver;
