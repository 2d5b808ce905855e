//! What our RTP/RTCP interceptors share: `Protocol`'s associated types, and forwarding the
//! methods a wrapper leaves alone to the stock interceptor it wraps (its `inner` field).

/// The associated types of every interceptor of ours (webrtc-rs's `Protocol` over RTP/RTCP).
macro_rules! interceptor_types {
    () => {
        type Rout = rtc::interceptor::TaggedPacket;
        type Wout = rtc::interceptor::TaggedPacket;
        type Eout = ();
        type Error = rtc::shared::error::Error;
        type Time = std::time::Instant;
    };
}

/// Forwards the named `Protocol` / `Interceptor` methods to `self.inner` unchanged.
macro_rules! forward_to_inner {
    (@ handle_read) => {
        fn handle_read(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
            self.inner.handle_read(msg)
        }
    };
    (@ poll_read) => {
        fn poll_read(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
            self.inner.poll_read()
        }
    };
    (@ handle_write) => {
        fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
            self.inner.handle_write(msg)
        }
    };
    (@ poll_write) => {
        fn poll_write(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
            self.inner.poll_write()
        }
    };
    (@ handle_timeout) => {
        fn handle_timeout(&mut self, now: std::time::Instant) -> Result<(), Self::Error> {
            self.inner.handle_timeout(now)
        }
    };
    (@ poll_timeout) => {
        fn poll_timeout(&mut self) -> Option<std::time::Instant> {
            self.inner.poll_timeout()
        }
    };
    (@ bind_local_stream) => {
        fn bind_local_stream(&mut self, info: &rtc::interceptor::StreamInfo) {
            self.inner.bind_local_stream(info);
        }
    };
    (@ unbind_local_stream) => {
        fn unbind_local_stream(&mut self, info: &rtc::interceptor::StreamInfo) {
            self.inner.unbind_local_stream(info);
        }
    };
    (@ bind_remote_stream) => {
        fn bind_remote_stream(&mut self, info: &rtc::interceptor::StreamInfo) {
            self.inner.bind_remote_stream(info);
        }
    };
    (@ unbind_remote_stream) => {
        fn unbind_remote_stream(&mut self, info: &rtc::interceptor::StreamInfo) {
            self.inner.unbind_remote_stream(info);
        }
    };
    ($($method:ident),+ $(,)?) => {
        $(forward_to_inner!(@ $method);)+
    };
}

pub(crate) use {forward_to_inner, interceptor_types};
