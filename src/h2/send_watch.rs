//! Whether an HTTP/2 connection's output is stuck: the socket the h2 crate writes to, with
//! a record of whether its last write or flush had to wait and of how many bytes have
//! gone out.
//!
//! The h2 crate buffers frames and writes them when it is polled; a client that stops
//! reading the socket leaves them there for ever, and since h2 stops reading frames while
//! its output is blocked, nothing else on the connection moves either (a PING or SETTINGS
//! flood followed by silence ends the same way). h2 has no send timeout of its own, so
//! the connection task watches this record and closes the connection when the output has
//! been blocked, with nothing taken by the client, for `send_timeout` (HTTP/1's rule).
//!
//! Reads are budgeted: the h2 crate reads frames until the socket would block, counting
//! on tokio's cooperative budget to make it yield, and onstream's loop has none. A client
//! flooding PINGs or SETTINGS (each answered, never a request) would keep the connection
//! task, and with it the whole loop, busy for as long as it sends. After
//! [`READ_BUDGET`] reads in one turn the socket says "not now" and has the task polled
//! again next turn, so other connections get theirs (found by `bench/hostile`: a
//! well-behaved client waited up to 1.6 s during a SETTINGS flood, nginx 74 ms).

use std::{
    cell::Cell,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::Io;

/// What the connection task reads of the socket's output.
#[derive(Debug, Default)]
pub(crate) struct SendWatch {
    /// The last write or flush returned `Pending`: output is waiting for the socket.
    blocked: Cell<bool>,
    /// Bytes taken by the socket so far; it moves whenever the client reads.
    written: Cell<u64>,
    /// Reads left in this turn of the connection task.
    reads_left: Cell<u32>,
}

/// Socket reads one turn of an HTTP/2 connection task may make (each up to h2's read
/// buffer, 8 KiB or more): enough for any request burst a well-behaved client sends,
/// small enough that a flood of frames that make no request cannot hold the loop.
pub(crate) const READ_BUDGET: u32 = 16;

impl SendWatch {
    /// A new turn of the connection task: the read budget is full again.
    pub(crate) fn new_turn(&self) {
        self.reads_left.set(READ_BUDGET);
    }

    /// `Some(bytes written so far)` while output waits for the socket, `None` otherwise.
    pub(crate) fn blocked_at(&self) -> Option<u64> {
        self.blocked.get().then(|| self.written.get())
    }

    /// A write or flush had to wait for the socket.
    fn waited(&self) {
        self.blocked.set(true);
    }

    /// The socket took `n` bytes (or failed, which ends the connection by itself).
    fn moved(&self, n: usize) {
        self.written.set(self.written.get() + n as u64);
        self.blocked.set(false);
    }

    fn record_write(&self, r: &Poll<io::Result<usize>>) {
        match r {
            Poll::Ready(Ok(n)) => self.moved(*n),
            Poll::Ready(Err(_)) => self.moved(0),
            Poll::Pending => self.waited(),
        }
    }
}

/// The connection's socket as h2 sees it: reads pass through, writes are recorded.
pub(crate) struct WatchedIo {
    io: Box<dyn Io>,
    watch: Rc<SendWatch>,
}

impl WatchedIo {
    pub(crate) fn new(io: Box<dyn Io>) -> (WatchedIo, Rc<SendWatch>) {
        let watch = Rc::new(SendWatch::default());
        watch.new_turn();
        (
            WatchedIo {
                io,
                watch: watch.clone(),
            },
            watch,
        )
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.watch.reads_left.get();
        if left == 0 {
            // Spent for this turn: come back next turn, as tokio's budget would.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if r.is_ready() {
            self.watch.reads_left.set(left - 1);
        }
        r
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch.record_write(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch.record_write(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        // A TLS stream takes plaintext into its own buffer and only its flush waits for
        // the socket, so a pending flush is blocked output too.
        match r {
            Poll::Ready(_) => self.watch.moved(0),
            Poll::Pending => self.watch.waited(),
        }
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
