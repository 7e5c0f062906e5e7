//! `take_socket` for Lua: the connection a handler takes over becomes a cqueues socket.
//!
//! A cleartext HTTP/1 connection goes over as its own socket (`Upgraded::into_socket`,
//! in `stream.rs`). One that is TLS (rustls state cannot move to OpenSSL) or an HTTP/2
//! tunnel cannot: the handler gets one end of a socket pair, and a task on the server's
//! loop copies bytes both ways between the other end and the taken connection, the bytes
//! onstream had already read first.
//!
//! The two directions are copied apart, so that one's failure does not lose the other's
//! bytes. A handler that answers and closes (a WebSocket close after a protocol error)
//! leaves its last bytes in the pair; if the client sends more meanwhile, writing that to
//! the handler's end fails (EPIPE), and the handler's output must still reach the client:
//! from then on the client's input is read and thrown away (at most [`DISCARD_BYTES`];
//! once the handler's output has all gone, for at most [`LINGER_TIME`], as a lingering
//! close) while the handler's output is copied on to its end, then the connection's
//! writing half is shut down. Either side closing its writing half is passed on; the task
//! ends when both directions have, and then closes both sockets.
//!
//! A client that never reads would otherwise hold the bridge (both sockets, two buffers)
//! forever, whatever the handler does: once the handler's output has waited on the client
//! for the server's `send_timeout` without a byte going out (a write, or the TLS
//! close_notify of the shutdown), the bridge ends, as a Rust handler's stream would.

use std::{
    future::{poll_fn, Future},
    io,
    os::fd::IntoRawFd,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use onstream::{
    rt::{Sleep, UnixStream},
    Controller, Upgraded,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::Shared;

/// Each direction's buffer: a bridge holds two, whatever the traffic (as
/// `tokio::io::copy_bidirectional`, which it replaces, did).
const BUF_SIZE: usize = 8 * 1024;

/// How much of the client's input a bridge throws away once the handler no longer reads:
/// enough for what a client sends before it sees the handler's close (a close frame, a
/// ping), bounded for one that sends forever. The library's lingering-close default.
const DISCARD_BYTES: usize = 256 * 1024;

/// How long a bridge reads on (and throws away) after the handler's output has all been
/// passed on and the connection's writing half shut down, so that unread input does not
/// make the kernel reset the connection and destroy that output in flight. The library's
/// lingering-close default.
const LINGER_TIME: Duration = Duration::from_secs(1);

/// Starts the bridge and returns the descriptor of the handler's end (the caller owns it).
pub(crate) fn bridge(up: Upgraded, shared: &Rc<Shared>) -> io::Result<i32> {
    let ctl = shared
        .ctl
        .borrow()
        .clone()
        .ok_or_else(|| io::Error::other("server gone"))?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let ours = UnixStream::from_std(&ctl, ours)?;
    shared.n_bridges.set(shared.n_bridges.get() + 1);
    let send_timeout = shared
        .bridge_send_timeout
        .get()
        .unwrap_or(onstream::DEFAULT_SEND_TIMEOUT);
    let count = shared.clone();
    ctl.spawn(async move {
        let mut bridge = Bridge {
            up,
            ours,
            inbound: Inbound::Copying(Pipe::new()),
            outbound: Outbound::Copying(Pipe::new()),
            linger: None,
            send_timeout,
            stall: None,
        };
        poll_fn(|cx| bridge.poll(cx)).await;
        drop(bridge); // Closes both sockets.
        count.n_bridges.set(count.n_bridges.get() - 1);
    })
    .detach();
    Ok(theirs.into_raw_fd())
}

/// One taken connection and the pair's end facing it.
struct Bridge {
    /// The connection: the client's side.
    up: Upgraded,
    /// The pair's end whose other end is the handler's cqueues socket.
    ours: UnixStream,
    inbound: Inbound,
    outbound: Outbound,
    /// Started when the client's input is being thrown away and the handler's output has
    /// all gone: when it fires, the bridge stops reading.
    linger: Option<Sleep>,
    /// How long the handler's output may wait on the client without progress.
    send_timeout: Duration,
    /// Armed while the handler's output waits on the client; its deadline moves on with
    /// each write that goes out.
    stall: Option<Sleep>,
}

/// Client → handler.
enum Inbound {
    Copying(Pipe),
    /// The handler's end no longer takes bytes (it closed): the client's are read and
    /// dropped, `n` so far.
    Discarding {
        n: usize,
        buf: Pipe,
    },
    /// The client's EOF was passed on, or reading stopped.
    Done,
}

/// Handler → client.
enum Outbound {
    Copying(Pipe),
    /// The handler's EOF came: the connection's writing half is being shut down.
    ShuttingDown,
    /// Shut down, or the client no longer takes bytes.
    Done,
}

impl Bridge {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.poll_stalled(cx) {
            // Its output cannot go out: the handler's end is closed with the rest, and a
            // handler still writing sees EPIPE.
            return Poll::Ready(());
        }
        // The handler's output first: it is what must not be lost.
        if let Outbound::Copying(pipe) = &mut self.outbound {
            let written = pipe.written;
            let copied = pipe.poll_copy(cx, &mut self.ours, &mut self.up);
            if pipe.written != written {
                self.moved_on();
            }
            match copied {
                Poll::Pending => {}
                // A read error on our end of a pair is the handler's end gone: its EOF.
                Poll::Ready(Stop::Eof | Stop::ReadFailed) => self.outbound = Outbound::ShuttingDown,
                // The client no longer takes bytes: it is gone (reset), and what it sent
                // is lost with it. The bridge ends.
                Poll::Ready(Stop::WriteFailed) => {
                    self.outbound = Outbound::Done;
                    self.inbound = Inbound::Done;
                }
            }
        }
        if let Outbound::ShuttingDown = self.outbound {
            if Pin::new(&mut self.up).poll_shutdown(cx).is_ready() {
                self.outbound = Outbound::Done;
            }
        }
        if let Inbound::Copying(pipe) = &mut self.inbound {
            match pipe.poll_copy(cx, &mut self.up, &mut self.ours) {
                Poll::Pending => {}
                Poll::Ready(Stop::Eof | Stop::ReadFailed) => {
                    // The handler reads EOF; an error shutting down means it is gone.
                    let _ = Pin::new(&mut self.ours).poll_shutdown(cx);
                    self.inbound = Inbound::Done;
                }
                Poll::Ready(Stop::WriteFailed) => {
                    // The handler closed: from now on the client's input is thrown away.
                    if let Inbound::Copying(buf) =
                        std::mem::replace(&mut self.inbound, Inbound::Done)
                    {
                        self.inbound = Inbound::Discarding { n: 0, buf };
                    }
                }
            }
        }
        if let Inbound::Discarding { n, buf } = &mut self.inbound {
            let outbound_done = matches!(self.outbound, Outbound::Done);
            let lingered = outbound_done
                && Pin::new(
                    self.linger
                        .get_or_insert_with(|| onstream::sleep(LINGER_TIME)),
                )
                .poll(cx)
                .is_ready();
            if lingered || buf.poll_discard(cx, &mut self.up, n).is_ready() {
                self.inbound = Inbound::Done;
            }
        }
        if matches!(self.inbound, Inbound::Done) && matches!(self.outbound, Outbound::Done) {
            return Poll::Ready(());
        }
        if self.waits_on_client() && self.stall.is_none() {
            let mut stall = onstream::sleep(self.send_timeout);
            // Registers the timer with this task's waker.
            if Pin::new(&mut stall).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            self.stall = Some(stall);
        }
        Poll::Pending
    }

    /// Whether the handler's output has bytes (or the shutdown) the client has not taken.
    fn waits_on_client(&self) -> bool {
        match &self.outbound {
            Outbound::Copying(pipe) => pipe.start < pipe.end,
            Outbound::ShuttingDown => true,
            Outbound::Done => false,
        }
    }

    /// Bytes went out: the stall deadline moves on (moving a `Sleep` later is free).
    fn moved_on(&mut self) {
        if let Some(stall) = &mut self.stall {
            let now = Controller::try_current().map_or_else(Instant::now, |c| c.now());
            stall.reset(now + self.send_timeout);
        }
    }

    /// True once the output has waited on the client for `send_timeout`. A stall timer
    /// left from an earlier wait that has since been resolved is dropped.
    fn poll_stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.waits_on_client() {
            self.stall = None;
            return false;
        }
        self.stall
            .as_mut()
            .is_some_and(|stall| Pin::new(stall).poll(cx).is_ready())
    }
}

/// Why a copy stopped.
enum Stop {
    Eof,
    ReadFailed,
    WriteFailed,
}

/// One direction's buffer: `buf[start..end]` is read and not yet written.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes written so far, to see progress.
    written: u64,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            written: 0,
        }
    }

    /// Copies from `r` to `w` until one of them has to wait, or the copy stops. A buffer
    /// not yet written is written before anything more is read.
    fn poll_copy<R, W>(&mut self, cx: &mut Context<'_>, r: &mut R, w: &mut W) -> Poll<Stop>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if self.start == self.end {
                let mut rb = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Stop::Eof),
                    Poll::Ready(Ok(())) => {
                        self.end = rb.filled().len();
                        self.start = 0;
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Poll::Ready(Err(_)) => return Poll::Ready(Stop::ReadFailed),
                }
            }
            match Pin::new(&mut *w).poll_write(cx, &self.buf[self.start..self.end]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Stop::WriteFailed),
                Poll::Ready(Ok(n)) => {
                    self.start += n;
                    self.written += n as u64;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Stop::WriteFailed),
            }
        }
    }

    /// Reads from `r` and drops what it reads, counting it in `n`, until `r` has to wait;
    /// ready once `r` ends or fails, or `n` passes [`DISCARD_BYTES`].
    fn poll_discard<R>(&mut self, cx: &mut Context<'_>, r: &mut R, n: &mut usize) -> Poll<()>
    where
        R: AsyncRead + Unpin,
    {
        loop {
            if *n > DISCARD_BYTES {
                return Poll::Ready(());
            }
            let mut rb = ReadBuf::new(&mut self.buf);
            match Pin::new(&mut *r).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => *n += rb.filled().len(),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
            }
        }
    }
}
