//! `rtcio`: an rtc.io-compatible peer on the command line (see the crate README).

fn main() {
    rtcio_cli::main()
}
