//! Engine.IO / Socket.IO text frames as a server (or anyone in the middle) sends them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::sio::packet::{EioPacket, SioPacket, decode_eio, decode_sio, encode_event};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = std::str::from_utf8(data) else {
        return;
    };
    let _ = decode_sio(frame);
    let Ok(EioPacket::Message(msg)) = decode_eio(frame) else {
        return;
    };
    // Anything the decoder accepts as an event must survive our own encoder unchanged.
    if let Ok(SioPacket::Event { nsp, name, args }) = decode_sio(&msg) {
        let again = encode_event(&nsp, &name, &args);
        let Ok(EioPacket::Message(msg2)) = decode_eio(&again) else {
            panic!("encode_event produced a non-message frame: {again:?}");
        };
        match decode_sio(&msg2) {
            Ok(SioPacket::Event {
                nsp: n2,
                name: e2,
                args: a2,
            }) => {
                assert_eq!(
                    (&n2, &e2, &a2),
                    (&nsp, &name, &args),
                    "round trip of {again:?}"
                );
            }
            other => panic!("re-encoded event {again:?} decoded as {other:?}"),
        }
    }
});
