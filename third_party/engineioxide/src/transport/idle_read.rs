//! A read buffer that exists only while data is arriving, and a write buffer only while data
//! waits for the next flush.
//!
//! tungstenite keeps its read buffer (`WebSocketConfig::read_buffer_size`) for the whole life of
//! a WebSocket, and every read syscall can take at most that much: a small buffer saves an idle
//! socket's memory but costs a syscall per few frames under load (512 bytes instead of 1 KiB
//! measured +6 % relay CPU in `rtcio-server`). [`IdleReadBuf`] sits between tungstenite and the
//! connection: it reads [`CHUNK`] bytes per syscall into a buffer it takes on demand, hands
//! them out in whatever pieces tungstenite asks for, and gives the buffer back as soon as the
//! connection has nothing more to read. An idle socket then holds only tungstenite's (small)
//! buffer, and a busy one makes fewer syscalls than with tungstenite's buffer alone. Buffers are
//! given back to a one-buffer cache per thread, so a wake-up of a socket costs no allocation
//! (allocating and freeing 8 KiB per wake-up made glibc consolidate its free lists each time).
//!
//! Writes work the same way the other direction. tungstenite, told to write every frame at once
//! (`write_buffer_size` 0, see `ws::init`), hands each frame to [`IdleReadBuf`], which collects
//! them in a buffer taken on the first write and sends them in one syscall on the next flush,
//! then gives the buffer back. With tungstenite's own write buffer the batching was the same,
//! but that buffer kept the capacity of the largest batch a socket had ever written for its
//! whole life; tungstenite now keeps only its largest frame.

use std::{
    cell::Cell,
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the connection per syscall.
pub(crate) const CHUNK: usize = 8 * 1024;

/// Unsent bytes at most before a write sends them first (and waits if the socket is full); a
/// write at least this large goes straight through when nothing is waiting.
pub(crate) const WRITE_LIMIT: usize = 64 * 1024;

thread_local! {
    /// A buffer given back by a socket that went idle on this thread, for the next one to read.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// The same for writes.
    static SPARE_WRITE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A buffer with room for [`CHUNK`] bytes: this thread's spare one, else a new one.
fn take_buffer() -> Vec<u8> {
    let mut buf = SPARE.with(Cell::take);
    buf.reserve_exact(CHUNK);
    buf
}

/// Gives an emptied buffer back to this thread's cache (or frees it if the cache is full).
fn give_back(buf: &mut Vec<u8>) {
    give_back_to(&SPARE, buf);
}

fn give_back_to(cache: &'static std::thread::LocalKey<Cell<Vec<u8>>>, buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        return;
    }
    let mut buf = std::mem::take(buf);
    buf.clear();
    let _ = cache.try_with(|spare| {
        let cached = spare.take();
        // Keep the larger one: a full cache frees the other.
        spare.set(if cached.capacity() >= buf.capacity() {
            cached
        } else {
            buf
        });
    });
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct IdleReadBuf<S> {
    io: S,
    /// Read but not yet handed out: `buf[pos..]`. Empty and unallocated while idle.
    buf: Vec<u8>,
    pos: usize,
    /// Written but not yet sent: `wbuf[wpos..]`. Empty and unallocated after a flush.
    wbuf: Vec<u8>,
    wpos: usize,
}

impl<S> IdleReadBuf<S> {
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
            pos: 0,
            wbuf: Vec::new(),
            wpos: 0,
        }
    }

    /// Whether the buffer is allocated (for the tests).
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Whether the write buffer is allocated (for the tests).
    #[cfg(test)]
    fn holds_write_buffer(&self) -> bool {
        self.wbuf.capacity() > 0
    }

    /// Copies what is buffered into `dst`.
    fn hand_out(&mut self, dst: &mut ReadBuf<'_>) {
        let n = (self.buf.len() - self.pos).min(dst.remaining());
        dst.put_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
    }
}

impl<S> Drop for IdleReadBuf<S> {
    fn drop(&mut self) {
        give_back(&mut self.buf);
        give_back_to(&SPARE_WRITE, &mut self.wbuf);
    }
}

impl<S: AsyncWrite + Unpin> IdleReadBuf<S> {
    /// Sends what was written since the last flush, then gives the write buffer back.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wpos < self.wbuf.len() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.wpos..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wpos += n;
        }
        self.wpos = 0;
        give_back_to(&SPARE_WRITE, &mut self.wbuf);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleReadBuf<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.buf.len() {
            this.hand_out(dst);
            return Poll::Ready(Ok(()));
        }
        // A reader that asks for a chunk or more (a large frame) reads directly: no copy.
        if dst.remaining() >= CHUNK {
            give_back(&mut this.buf);
            return Pin::new(&mut this.io).poll_read(cx, dst);
        }
        if this.buf.capacity() < CHUNK {
            this.buf = take_buffer();
        }
        this.buf.clear();
        this.pos = 0;
        let spare: &mut [MaybeUninit<u8>] = &mut this.buf.spare_capacity_mut()[..CHUNK];
        let mut chunk = ReadBuf::uninit(spare);
        match Pin::new(&mut this.io).poll_read(cx, &mut chunk) {
            Poll::Ready(Ok(())) => {
                let n = chunk.filled().len();
                // SAFETY: `ReadBuf` guarantees its first `n` bytes, which lie in the vector's
                // spare capacity, were initialised by the read.
                unsafe { this.buf.set_len(n) };
                this.hand_out(dst);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                give_back(&mut this.buf);
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                // Nothing to read: the socket is idle until the next wake-up.
                give_back(&mut this.buf);
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleReadBuf<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let unsent = this.wbuf.len() - this.wpos;
        if unsent > 0 && unsent + buf.len() > WRITE_LIMIT {
            match this.poll_send(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map_ok(|()| 0),
            }
        }
        if this.wbuf.is_empty() && buf.len() >= WRITE_LIMIT {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        if this.wbuf.capacity() == 0 {
            this.wbuf = SPARE_WRITE.with(Cell::take);
        }
        this.wbuf.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_send(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn hands_out_small_reads_and_frees_when_idle() {
        let (mut client, server) = duplex(64 * 1024);
        let mut io = IdleReadBuf::new(server);
        let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        client.write_all(&data).await.unwrap();

        // Small reads (tungstenite's small buffer) get everything in order, from one chunk.
        let mut got = Vec::new();
        let mut piece = [0u8; 100];
        while got.len() < data.len() {
            let n = io.read(&mut piece).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, data);
        assert!(
            io.holds_buffer(),
            "drained, but no read has found the socket idle yet"
        );

        // The next read finds nothing: the buffer goes while waiting.
        let pending = futures_util::FutureExt::now_or_never(io.read(&mut piece));
        assert!(pending.is_none());
        assert!(!io.holds_buffer(), "an idle socket holds no read buffer");

        // Large reads bypass the buffer; EOF is passed on.
        let big: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        client.write_all(&big).await.unwrap();
        drop(client);
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, big);
    }

    #[tokio::test]
    async fn writes_wait_for_the_flush_and_free_the_buffer() {
        let (mut client, server) = duplex(256 * 1024);
        let mut io = IdleReadBuf::new(server);
        io.write_all(b"hello ").await.unwrap();
        io.write_all(b"world").await.unwrap();
        assert!(io.holds_write_buffer());
        let mut got = [0u8; 11];
        assert!(
            futures_util::FutureExt::now_or_never(client.read_exact(&mut got)).is_none(),
            "nothing is sent before the flush"
        );
        io.flush().await.unwrap();
        assert!(
            !io.holds_write_buffer(),
            "a flushed socket holds no write buffer"
        );
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");

        // Large writes go straight through; beyond the limit, what waits is sent first; order
        // is kept either way.
        let big: Vec<u8> = (0..WRITE_LIMIT as u32 + 10)
            .map(|i| (i * 3) as u8)
            .collect();
        io.write_all(&big).await.unwrap();
        assert!(!io.holds_write_buffer());
        io.write_all(b"a").await.unwrap();
        io.write_all(&big[..WRITE_LIMIT]).await.unwrap();
        io.flush().await.unwrap();
        let mut want = big.clone();
        want.push(b'a');
        want.extend_from_slice(&big[..WRITE_LIMIT]);
        let mut got = vec![0u8; want.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
    }

    /// A flush into a full connection waits, keeps the bytes and sends them once there is room.
    #[tokio::test]
    async fn a_blocked_flush_keeps_its_bytes() {
        let (mut client, server) = duplex(16);
        let mut io = IdleReadBuf::new(server);
        let data: Vec<u8> = (0..100u8).collect();
        io.write_all(&data).await.unwrap();
        assert!(futures_util::FutureExt::now_or_never(io.flush()).is_none());
        assert!(io.holds_write_buffer());
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; 100];
            client.read_exact(&mut got).await.unwrap();
            got
        });
        io.flush().await.unwrap();
        assert!(!io.holds_write_buffer());
        assert_eq!(reader.await.unwrap(), data);
    }
}
