//! The HTTP/1 connection: the socket, its read and write buffers, and the task that reads
//! request heads one after another (lua-http's `h1_connection` plus the
//! `get_next_incoming_stream` loop of `server.lua`).
//!
//! Ownership and turns. The connection state is shared (`Rc<H1Conn>`) between the driver
//! task and the handlers' streams; every borrow is short and never spans an `await`.
//! - *Reading* has one owner at a time: the driver while it reads a head or discards an
//!   unread body, otherwise the stream whose request body is being read. The driver does
//!   not read the next head until that body is finished, so a stream reads straight from
//!   the socket.
//! - *Writing* goes in request order: streams are numbered, and only the stream whose
//!   number is `write_seq` may add to the write buffer; it keeps the turn until its response
//!   ends. Pipelined responses are thus written in order while their handlers run at once.
//! - *Flushing* happens when a handler yields or ends (see `H1Stream::after_poll`), so a
//!   handler's writes within one poll, and the responses of a pipelined batch, go out in
//!   one `write`. Only the driver ever waits for writability; a stream that finds the buffer
//!   full parks in `writers` and the driver wakes it when the buffer drains.
//!
//! Split as hyper's `proto/h1` is: this file holds the connection's state and what the
//! streams may ask of it; `conn/io.rs` the buffered I/O (filling the read buffer,
//! flushing the write buffer, the send timeout); `conn/dispatch.rs` the driver task
//! (reading between requests, the pipelining bound, lingering close).
//!
//! What this module does not do: parse (`parse.rs`), frame bodies (`body.rs`), or know
//! about the server's connection set (the server passes a callback for each request).

mod dispatch;
mod io;

use bytes::{Bytes, BytesMut};
use std::{
    cell::RefCell,
    net::SocketAddr,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use super::{body::Decoder, parse::Limits};
use crate::transport::{Io, Transport};

/// Per-server settings every HTTP/1 connection reads.
#[derive(Debug, Clone)]
pub(crate) struct H1Config {
    pub limits: Limits,
    pub connection_setup_timeout: Duration,
    pub intra_stream_timeout: Duration,
    pub header_read_timeout: Duration,
    pub send_timeout: Duration,
    pub body_read_timeout: Duration,
    /// How long a connection waits for its next request with nothing in flight before
    /// it parks (see [`Parked`]).
    pub park_after: Duration,
}

/// One HTTP/1 connection, shared by its driver task and its streams.
pub(crate) struct H1Conn {
    pub(crate) st: RefCell<ConnState>,
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    cfg: Rc<H1Config>,
}

impl H1Conn {
    /// The server's HTTP/1 limits.
    pub(crate) fn limits(&self) -> &Limits {
        &self.cfg.limits
    }
}

/// The mutable part of a connection.
pub(crate) struct ConnState {
    /// `None` once the socket was taken by a handler or the connection was aborted.
    pub(crate) io: Option<Box<dyn Io>>,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    /// The body being read: present from a request head until its body is finished.
    /// Boxed: an idle connection has none, and should not pay its size.
    pub(crate) body: Option<Box<BodyRead>>,
    /// The number the next stream gets.
    pub(crate) next_seq: u64,
    /// The stream that may write now; responses go out in this order.
    pub(crate) write_seq: u64,
    /// The highest stream number whose handler has been polled at least once.
    pub(crate) polled_seq: u64,
    /// Streams started and not yet finished.
    pub(crate) n_open_streams: u32,
    /// Whether another request may follow; cleared by `Connection: close`, HTTP/1.0,
    /// close-delimited responses, errors and server shutdown.
    pub(crate) keep_alive: bool,
    /// The server is closing: answer what is in flight, read nothing new.
    closing: bool,
    /// The peer closed its side (read returned 0).
    read_eof: bool,
    /// An `Upgrade` request's stream is open: what follows its body may not be HTTP (its
    /// handler may answer `101` and take the socket), so no further head is read until
    /// the stream ends. Cleared when it ends; if it did not take the socket, the
    /// connection goes on as after any request (RFC 9110 §7.8: the upgrade was ignored).
    pub(crate) upgrade_pending: bool,
    /// TLS (`:scheme` is `https`). Fixed for the connection's life; kept here rather than
    /// as a `&'static str` beside the addresses because it fits in the padding after the
    /// flags above, which keeps every connection's allocation 16 bytes smaller.
    https: bool,
    /// Bytes written so far: the send timeout measures progress by it.
    n_written: u64,
    /// The driver task, to be woken when a body ends, a stream ends or output waits.
    driver: Option<Waker>,
    /// Streams waiting for their write turn or for buffer space.
    pub(crate) writers: Vec<Waker>,
}

/// An idle keep-alive connection without its task: the socket and what a driver needs to
/// take it up again, and nothing else (no buffers, no stream state). nginx's idle
/// keep-alive connections are as small; a parked connection costs a few hundred bytes
/// where a waiting driver costs a task and a connection state.
///
/// The server keeps it, with a waker on the socket's readability and a deadline,
/// and hands it to a new driver ([`H1Conn::new`], [`H1Conn::drive`]) when input arrives, the
/// idle deadline passes or the server closes; the new driver does what the old one would
/// have done (read the request, or close the idle connection gracefully).
pub(crate) struct Parked {
    /// The addresses are not kept (64 bytes, half of what is left): the socket is asked
    /// for them again when the connection is taken up.
    io: Box<dyn Io>,
    https: bool,
    idle_by: Instant,
}

impl Parked {
    /// When the connection has been idle too long and is to be closed.
    pub(crate) fn idle_by(&self) -> Instant {
        self.idle_by
    }

    /// Whether input (or EOF, or an error) is there; if not, `cx`'s waker is woken when it
    /// comes. What was read belongs to the next request.
    pub(crate) fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<BytesMut> {
        let mut read_ahead = BytesMut::new();
        match io::read_idle(&mut *self.io, &mut read_ahead, cx) {
            Poll::Pending => Poll::Pending,
            // The driver that takes the connection up reads EOF or the error again itself.
            Poll::Ready(_) => Poll::Ready(read_ahead),
        }
    }

    /// The connection as a transport for a new driver, with input already read.
    pub(crate) fn into_transport(self, read_ahead: BytesMut) -> Transport {
        let (peer_addr, local_addr) = self.io.socket_addrs();
        Transport {
            io: self.io,
            read_ahead,
            peer_addr,
            local_addr,
            scheme: if self.https { "https" } else { "http" },
            h2: false,
        }
    }
}

/// The request body being read and who reads it.
pub(crate) struct BodyRead {
    pub(crate) seq: u64,
    pub(crate) decoder: Decoder,
    /// The stream is alive and reads the body itself; when it ends, the driver discards the
    /// rest.
    pub(crate) owner_alive: bool,
    /// The client sent `Expect: 100-continue` and no `100 Continue` went out yet.
    pub(crate) continue_pending: bool,
    /// Bytes of it thrown away so far by the driver, against `max_discard`; counted across
    /// polls, so a body trickled in small pieces is bounded as one sent at once.
    pub(crate) discarded: u64,
}

impl H1Conn {
    pub(crate) fn new(transport: Transport, cfg: Rc<H1Config>) -> Rc<H1Conn> {
        let Transport {
            io,
            read_ahead,
            peer_addr,
            local_addr,
            scheme,
            h2: _,
        } = transport;
        Rc::new(H1Conn {
            st: RefCell::new(ConnState {
                io: Some(io),
                rbuf: read_ahead,
                wbuf: BytesMut::new(),
                body: None,
                next_seq: 0,
                write_seq: 0,
                polled_seq: 0,
                n_open_streams: 0,
                keep_alive: true,
                closing: false,
                read_eof: false,
                upgrade_pending: false,
                https: scheme == "https",
                n_written: 0,
                driver: None,
                writers: Vec::new(),
            }),
            peer_addr,
            local_addr,
            cfg,
        })
    }

    /// How long output may wait for a client that does not read.
    pub(crate) fn send_timeout(&self) -> Duration {
        self.cfg.send_timeout
    }

    /// How long a handler waits for the next byte of a request body.
    pub(crate) fn body_read_timeout(&self) -> Duration {
        self.cfg.body_read_timeout
    }

    /// Asks the connection to finish what is in flight and close (server shutdown).
    pub(crate) fn close_gracefully(&self) {
        let mut st = self.st.borrow_mut();
        st.closing = true;
        st.keep_alive = false;
        st.wake_driver();
    }

    /// Closes the socket now; every pending and later operation fails.
    pub(crate) fn abort(&self) {
        let mut st = self.st.borrow_mut();
        st.io = None;
        st.keep_alive = false;
        st.wake_driver();
        st.wake_writers();
    }
}

impl ConnState {
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    pub(crate) fn wake_writers(&mut self) {
        for w in self.writers.drain(..) {
            w.wake();
        }
    }

    /// Nothing is in flight, buffered or owed: the connection may give up its task and
    /// buffers until its next request.
    fn may_park(&self) -> bool {
        self.rbuf.is_empty()
            && self.wbuf.is_empty()
            && self.n_open_streams == 0
            && self.body.is_none()
            && !self.closing
            && self.keep_alive
            && self.io.is_some()
    }

    pub(crate) fn take_io(&mut self) -> Option<(Box<dyn Io>, Bytes)> {
        let io = self.io.take()?;
        let buffered = self.rbuf.split().freeze();
        self.keep_alive = false;
        self.wake_driver();
        Some((io, buffered))
    }
}
