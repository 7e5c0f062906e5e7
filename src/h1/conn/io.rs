//! Buffered I/O of an HTTP/1 connection: filling the read buffer (through a buffer on the
//! stack while the connection waits for its next request, so that waiting allocates
//! nothing), flushing the write buffer, and the send timeout on output a client does not
//! take.

use bytes::{Buf, BytesMut};
use std::{
    future::Future,
    io,
    mem::MaybeUninit,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::io::ReadBuf;

use super::ConnState;
use crate::{
    error::{Error, Result},
    rt::{sleep_until, Controller, Sleep},
    transport::{poll_read_buf, Io},
};

/// How much is read from the socket at a time.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// Bounds how long buffered output may wait for a client that does not read (nginx's
/// `send_timeout`): the clock restarts whenever any byte goes out.
///
/// The clock exists only while output is stuck: it is boxed then and dropped when the
/// buffer drains, so that the driver's future (every idle connection's task) carries one
/// pointer for it instead of a `Sleep` and its bookkeeping (80 bytes).
#[derive(Default)]
pub(super) struct SendGuard(Option<Box<Stuck>>);

struct Stuck {
    /// `n_written` when the clock was last started.
    at: u64,
    sleep: Sleep,
}

impl SendGuard {
    /// No output is stuck waiting for the client.
    pub(super) fn is_idle(&self) -> bool {
        self.0.is_none()
    }

    /// Flushes; `Ready(Err)` on a write error or when the client has taken no byte for
    /// the whole `send_timeout` (the connection is then closed).
    pub(super) fn poll_flush(
        &mut self,
        st: &mut ConnState,
        cx: &mut Context<'_>,
        ctl: &Controller,
        limit: Duration,
    ) -> Poll<Result<()>> {
        match st.poll_flush(cx) {
            Poll::Ready(r) => {
                // Tested first: this runs on every flush, and a clock is rarely there.
                if self.0.is_some() {
                    self.0 = None;
                }
                Poll::Ready(r.map_err(Error::from))
            }
            Poll::Pending => {
                let n = st.n_written;
                let deadline = ctl.now() + limit;
                let stuck = match &mut self.0 {
                    Some(stuck) => {
                        if stuck.at != n {
                            stuck.at = n;
                            stuck.sleep.reset(deadline);
                        }
                        stuck
                    }
                    none => none.insert(Box::new(Stuck {
                        at: n,
                        sleep: sleep_until(deadline),
                    })),
                };
                if Pin::new(&mut stuck.sleep).poll(cx).is_ready() {
                    st.io = None;
                    st.wake_writers();
                    return Poll::Ready(Err(Error::timeout("the client stopped reading")));
                }
                Poll::Pending
            }
        }
    }
}

impl ConnState {
    /// Writes the buffer out until it is empty or the socket is full. When it is full, the
    /// calling task is woken on writability: only the driver may call this with its own
    /// context (streams use [`ConnState::flush_now`]).
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let Some(io) = &mut self.io else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            match Pin::new(&mut **io).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    // `advance`, not `split_to`: no shared header is allocated for the
                    // part that went out. All of it out: `clear`, which keeps the
                    // buffer's start at the front of its allocation for the next use.
                    if n == self.wbuf.len() {
                        self.wbuf.clear();
                    } else {
                        self.wbuf.advance(n);
                    }
                    self.n_written += n as u64;
                    // Streams waiting for room check the server's write buffer size
                    // themselves; any progress may have made enough.
                    self.wake_writers();
                }
                Poll::Ready(Err(e)) => {
                    self.io = None;
                    self.wake_writers();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        let Some(io) = &mut self.io else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        // TLS keeps encrypted records it could not send yet; a plain socket has nothing.
        let flushed = Pin::new(&mut **io).poll_flush(cx);
        if let Poll::Ready(Err(_)) = &flushed {
            self.io = None;
            self.wake_writers();
        }
        flushed
    }

    /// Writes what it can without waiting; if the socket is full, the driver takes over.
    /// Returns an error (a disconnect: see `Error::peer`) if the connection is broken.
    pub(crate) fn flush_now(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match self.poll_flush(&mut cx) {
            Poll::Ready(r) => r.map_err(Error::peer),
            Poll::Pending => {
                // The write left a no-op waker in the socket's slot: the driver must poll
                // again to wait for writability with its own.
                self.wake_driver();
                Ok(())
            }
        }
    }

    /// Reads more into the read buffer. `Ok(0)` is EOF.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let r = poll_fill(&mut self.io, &mut self.rbuf, cx);
        if let Poll::Ready(Ok(0)) = r {
            self.read_eof = true;
        }
        r
    }

    /// Frees the read buffer, and gives the write buffer back if it is empty (to the
    /// thread's pool, `h1/pool.rs`), while the connection waits for its next request with
    /// nothing buffered: an idle keep-alive connection then holds no buffer (as nginx frees
    /// its buffers on idle keep-alive connections), and the next request allocates one of
    /// the size it needs. Not only when parking: thousands of connections holding their
    /// buffers for `park_after` at once would grow the heap to that peak, and freed memory
    /// inside the heap is not given back to the system.
    pub(super) fn release_idle_buffers(&mut self) {
        debug_assert!(self.rbuf.is_empty());
        // Tested first: the driver comes here twice per request, once with nothing left
        // to give.
        if self.rbuf.capacity() != 0 {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() != 0 {
            crate::h1::pool::give(std::mem::take(&mut self.wbuf));
        }
    }
}

/// Reads the start of the next request into an empty `rbuf` through a buffer on the
/// stack, so that waiting for it allocates nothing; what arrived is then copied into
/// `rbuf`, which takes exactly that much (a small request head costs a small allocation,
/// freed with the head; `h1/pool.rs` says why read buffers are not pooled) unless the
/// read filled the stack buffer and more is likely to follow. `Ok(0)` is EOF.
pub(super) fn poll_fill_idle(
    io: &mut Option<Box<dyn Io>>,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    match io {
        Some(io) => read_idle(&mut **io, rbuf, cx),
        None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
    }
}

pub(super) fn read_idle(
    io: &mut dyn Io,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read = ReadBuf::uninit(&mut stack);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    let filled = read.filled();
    if filled.len() == READ_CHUNK {
        rbuf.reserve(2 * READ_CHUNK);
    }
    rbuf.extend_from_slice(filled);
    Poll::Ready(Ok(filled.len()))
}

pub(super) fn poll_fill(
    io: &mut Option<Box<dyn Io>>,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    match io {
        Some(io) => {
            if rbuf.capacity() - rbuf.len() < READ_CHUNK / 2 {
                rbuf.reserve(READ_CHUNK);
            }
            poll_read_buf(io, rbuf, cx)
        }
        None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    impl Io for DuplexStream {}

    /// A client end and the server's `io`, over an in-memory pipe.
    fn pipe() -> (DuplexStream, Option<Box<dyn Io>>) {
        let (client, server) = tokio::io::duplex(4 * READ_CHUNK);
        (client, Some(Box::new(server)))
    }

    fn poll_idle(io: &mut Option<Box<dyn Io>>, rbuf: &mut BytesMut) -> Poll<io::Result<usize>> {
        let waker = futures_util::task::noop_waker();
        poll_fill_idle(io, rbuf, &mut Context::from_waker(&waker))
    }

    fn write(client: &mut DuplexStream, bytes: &[u8]) {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let write = std::pin::pin!(client.write_all(bytes)).poll(&mut cx);
        assert!(matches!(write, Poll::Ready(Ok(()))));
    }

    #[test]
    fn waiting_for_a_request_allocates_no_read_buffer() {
        let (_client, mut io) = pipe();
        let mut rbuf = BytesMut::new();
        assert!(poll_idle(&mut io, &mut rbuf).is_pending());
        assert_eq!(rbuf.capacity(), 0);
    }

    #[test]
    fn a_small_request_takes_a_small_buffer() {
        let (mut client, mut io) = pipe();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        write(&mut client, request);
        let mut rbuf = BytesMut::new();
        assert!(matches!(poll_idle(&mut io, &mut rbuf), Poll::Ready(Ok(n)) if n == request.len()));
        assert_eq!(&rbuf[..], request);
        assert!(rbuf.capacity() < READ_CHUNK / 2, "{}", rbuf.capacity());
    }

    #[test]
    fn a_full_read_leaves_room_to_read_on_directly() {
        let (mut client, mut io) = pipe();
        let input: Vec<u8> = (0..READ_CHUNK + 100).map(|i| i as u8).collect();
        write(&mut client, &input);
        let mut rbuf = BytesMut::new();
        assert!(matches!(
            poll_idle(&mut io, &mut rbuf),
            Poll::Ready(Ok(READ_CHUNK))
        ));
        assert!(rbuf.capacity() - rbuf.len() >= READ_CHUNK / 2);
        let waker = futures_util::task::noop_waker();
        let rest = poll_fill(&mut io, &mut rbuf, &mut Context::from_waker(&waker));
        assert!(matches!(rest, Poll::Ready(Ok(100))));
        assert_eq!(&rbuf[..], &input[..]);
    }

    #[test]
    fn eof_while_idle_reads_zero() {
        let (client, mut io) = pipe();
        drop(client);
        let mut rbuf = BytesMut::new();
        assert!(matches!(poll_idle(&mut io, &mut rbuf), Poll::Ready(Ok(0))));
        assert_eq!(rbuf.capacity(), 0);
    }
}
