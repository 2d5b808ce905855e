//! Prints the devices the media engine sees: `cargo run -p rtcio-media --example devices`.

fn main() {
    println!("cameras:     {:?}", rtcio_media::list_cameras());
    println!("microphones: {:?}", rtcio_media::list_microphones());
    println!("speakers:    {:?}", rtcio_media::list_speakers());
    println!("monitors:    {:?}", rtcio_media::list_monitors(None));
}
