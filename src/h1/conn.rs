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
//! - *Flushing* happens when a handler yields (see `H1Stream::after_poll`), so a handler's
//!   writes within one poll go out in one `write`, and a response never waits on a later
//!   handler that waits. A handler that *ends* leaves the flush to the next handler of a
//!   pipelined batch when that one is sure to run at once: started and not yet polled, or
//!   its request already read and the driver free to parse it
//!   (`ConnState::flush_can_wait`); the driver flushes whenever it stops to wait. So the
//!   responses of a batch go out in one `write` however deep it is (up to the write
//!   buffer's bound, `write_buffer_size`), as actix-web's do. Only the driver ever waits
//!   for writability; a stream that finds the buffer full parks in `writers` and the
//!   driver wakes it when the buffer drains.
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

use super::{
    body::{Decoded, Decoder},
    parse::{Limits, ParseError},
    pool,
};
use crate::{
    error::{Error, Result},
    transport::{Io, Transport},
};

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
    io: Option<Box<dyn Io>>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// The body being read: present from a request head until its body is finished.
    /// Boxed: an idle connection has none, and should not pay its size.
    body: Option<Box<BodyRead>>,
    /// The number the next stream gets.
    next_seq: u64,
    /// The stream that may write now; responses go out in this order.
    write_seq: u64,
    /// One past the highest stream number whose handler has been polled at least once:
    /// streams from `n_polled` to `next_seq` have handlers that have not run yet, and
    /// each of them flushes when it first runs (see [`ConnState::flush_can_wait`]).
    n_polled: u64,
    /// Streams started and not yet finished.
    n_open_streams: u32,
    /// Whether another request may follow; cleared by `Connection: close`, HTTP/1.0,
    /// close-delimited responses, errors and server shutdown.
    keep_alive: bool,
    /// The server is closing: answer what is in flight, read nothing new.
    closing: bool,
    /// The peer closed its side (read returned 0).
    read_eof: bool,
    /// An `Upgrade` request's stream is open: what follows its body may not be HTTP (its
    /// handler may answer `101` and take the socket), so no further head is read until
    /// the stream ends. Cleared when it ends; if it did not take the socket, the
    /// connection goes on as after any request (RFC 9110 §7.8: the upgrade was ignored).
    upgrade_pending: bool,
    /// TLS (`:scheme` is `https`). Fixed for the connection's life; kept here rather than
    /// as a `&'static str` beside the addresses because it fits in the padding after the
    /// flags above, which keeps every connection's allocation 16 bytes smaller.
    https: bool,
    /// Bytes written so far: the send timeout measures progress by it.
    n_written: u64,
    /// The driver task, to be woken when a body ends, a stream ends or output waits.
    driver: Option<Waker>,
    /// The driver waits for the first bytes of the next request and for nothing a
    /// stream's end changes (no partial head to flush after, not yet time to park): a
    /// stream that ends then does not wake it. Waking it cost a wake, a schedule and a
    /// poll that found no input, on every keep-alive request. Only meaningful while
    /// `driver` is set; every other wait of the driver clears it.
    driver_input_only: bool,
    /// Streams waiting for their write turn or for buffer space.
    writers: Vec<Waker>,
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
    seq: u64,
    decoder: Decoder,
    /// The stream is alive and reads the body itself; when it ends, the driver discards the
    /// rest.
    owner_alive: bool,
    /// The client sent `Expect: 100-continue` and no `100 Continue` went out yet.
    continue_pending: bool,
    /// Bytes of it thrown away so far by the driver, against `max_discard`; counted across
    /// polls, so a body trickled in small pieces is bounded as one sent at once.
    discarded: u64,
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
                n_polled: 0,
                n_open_streams: 0,
                keep_alive: true,
                closing: false,
                read_eof: false,
                upgrade_pending: false,
                https: scheme == "https",
                n_written: 0,
                driver: None,
                driver_input_only: false,
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
        self.st.borrow_mut().cut();
    }

    /// Whether a request is in flight: a handler running, or an answer not all written
    /// yet. A connection only lingering after its last answer has none.
    pub(crate) fn has_request_in_flight(&self) -> bool {
        let st = self.st.borrow();
        st.n_open_streams > 0 || !st.wbuf.is_empty()
    }
}

impl ConnState {
    /// The driver waits (for anything a stream or the server may change): `cx`'s waker
    /// is woken by the next change.
    pub(crate) fn driver_waits(&mut self, cx: &Context<'_>) {
        self.driver = Some(cx.waker().clone());
        self.driver_input_only = false;
    }

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

    // ===== what a stream may ask of its connection =====
    //
    // A stream (`stream.rs`) reads its body, writes its response in its turn and ends
    // through these: the connection's fields stay the connection's, so an invariant
    // (turns in order, one reader at a time) is kept in this file.

    /// The socket is gone: taken, failed or closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.io.is_none()
    }

    /// Whether another request may follow the current ones.
    pub(crate) fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// No request follows the current ones: the connection closes after their responses.
    pub(crate) fn close_after_responses(&mut self) {
        self.keep_alive = false;
    }

    /// Closes the socket now (a response that cannot be completed, a write that failed):
    /// every pending and later operation fails.
    pub(crate) fn cut(&mut self) {
        self.io = None;
        self.keep_alive = false;
        self.wake_driver();
        self.wake_writers();
    }

    /// The write buffer, for the stream whose turn it is.
    /// The write buffer with `start` (a response head begun in a buffer of its own)
    /// appended: `start` becomes the write buffer when that is empty, with no copy.
    pub(crate) fn head_out(&mut self, start: BytesMut) -> &mut BytesMut {
        if self.wbuf.capacity() == 0 {
            // Given back while the connection waited (the usual case): nothing to keep.
            self.wbuf = start;
        } else if self.wbuf.is_empty() {
            pool::give(std::mem::replace(&mut self.wbuf, start));
        } else {
            self.wbuf.extend_from_slice(&start);
            pool::give(start);
        }
        &mut self.wbuf
    }

    pub(crate) fn out(&mut self) -> &mut BytesMut {
        if self.wbuf.capacity() == 0 {
            self.wbuf = pool::take();
        }
        &mut self.wbuf
    }

    /// Whether it is stream `seq`'s turn to write.
    pub(crate) fn is_turn(&self, seq: u64) -> bool {
        self.write_seq == seq
    }

    /// Ready when it is stream `seq`'s turn to write (every earlier response is in the
    /// buffer); an error once the socket is gone.
    pub(crate) fn poll_turn(&mut self, seq: u64, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.io.is_none() {
            Poll::Ready(Err(Error::closed("connection closed")))
        } else if self.write_seq == seq {
            Poll::Ready(Ok(()))
        } else {
            self.writers.push(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Ready when the write buffer holds fewer than `high` bytes (after writing what the
    /// socket takes); otherwise the driver is asked to wait for writability.
    pub(crate) fn poll_room(&mut self, high: usize, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.io.is_none() {
            return Poll::Ready(Err(Error::closed("connection closed")));
        }
        if self.wbuf.len() < high {
            return Poll::Ready(Ok(()));
        }
        self.flush_now()?;
        if self.wbuf.len() < high {
            return Poll::Ready(Ok(()));
        }
        self.writers.push(cx.waker().clone());
        self.wake_driver();
        Poll::Pending
    }

    /// Ready when every buffered byte is written.
    pub(crate) fn poll_drained(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_room(1, cx)
    }

    /// Stream `seq`'s response is complete: the next stream may write.
    pub(crate) fn pass_turn(&mut self, seq: u64) {
        self.write_seq = seq + 1;
        self.wake_writers();
    }

    /// The body being read, if it is stream `seq`'s.
    fn body_of(&mut self, seq: u64) -> Option<&mut BodyRead> {
        self.body.as_deref_mut().filter(|b| b.seq == seq)
    }

    /// Whether stream `seq`'s body is still being read (not ended, not given up).
    pub(crate) fn reads_body(&mut self, seq: u64) -> bool {
        self.body_of(seq).is_some()
    }

    /// Whether stream `seq`'s client waits for a `100 Continue` before its body.
    pub(crate) fn continue_pending(&mut self, seq: u64) -> bool {
        self.body_of(seq).is_some_and(|b| b.continue_pending)
    }

    /// Stream `seq`'s `100 Continue` went out (or will not be needed).
    pub(crate) fn continue_sent(&mut self, seq: u64) {
        if let Some(b) = self.body_of(seq) {
            b.continue_pending = false;
        }
    }

    /// Whether bytes of stream `seq`'s body have not been read yet.
    pub(crate) fn body_unread(&mut self, seq: u64) -> bool {
        self.body_of(seq)
            .is_some_and(|b| b.decoder.remaining_hint() != Some(0))
    }

    /// Decodes the next piece of stream `seq`'s body from the read buffer; `None` when
    /// the body being read is not `seq`'s (none, or already ended).
    pub(crate) fn decode_body(&mut self, seq: u64) -> Option<Result<Decoded, ParseError>> {
        let body = self.body.as_deref_mut().filter(|b| b.seq == seq)?;
        Some(body.decoder.decode(&mut self.rbuf))
    }

    /// Stream `seq`'s body is over: read whole (`whole`), or given up (malformed, cut,
    /// too slow), after which no request can follow on this connection. The driver may
    /// go on.
    pub(crate) fn end_body(&mut self, seq: u64, whole: bool) {
        if self.body.as_ref().is_some_and(|b| b.seq == seq) {
            self.body = None;
            if !whole {
                self.keep_alive = false;
            }
            self.wake_driver();
        }
    }

    /// Sends up to `want` bytes of `file` from `*pos` past the buffer (sendfile(2)).
    /// `Ok(None)`: the socket cannot (TLS); the caller copies instead.
    pub(crate) fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        file: &std::fs::File,
        pos: &mut u64,
        want: usize,
    ) -> Poll<Result<Option<usize>>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(Error::closed("connection closed")));
        };
        match io.poll_sendfile(cx, file, pos, want) {
            None => Poll::Ready(Ok(None)),
            Some(Poll::Ready(Ok(n))) => {
                // Progress for the send timeout, as a buffered write would be.
                self.n_written += n as u64;
                Poll::Ready(Ok(Some(n)))
            }
            Some(Poll::Ready(Err(e))) => {
                self.cut();
                Poll::Ready(Err(Error::peer(e)))
            }
            Some(Poll::Pending) => Poll::Pending,
        }
    }

    /// The handler of stream `seq` has run (at least once).
    pub(crate) fn note_polled(&mut self, seq: u64) {
        self.n_polled = self.n_polled.max(seq + 1);
    }

    /// A started stream's handler has not run yet: when it runs, it flushes (or leaves
    /// the flush to a task that will, by this same rule).
    pub(crate) fn unpolled_streams(&self) -> bool {
        self.next_seq > self.n_polled
    }

    /// Whether a stream whose handler has ended may leave its flush to a task that is
    /// sure to run without waiting for anything outside the server: this is how the
    /// responses of a pipelined batch go out in one write, as actix-web's do.
    ///
    /// - A started stream whose handler has not run yet: it runs in this step or the
    ///   next, and flushes after its poll (or leaves it, by this same rule, to a task
    ///   further on).
    /// - Once the stream is `released` (its release woke the driver): input already read
    ///   that the driver is free to parse. The driver parses the next head and starts its
    ///   handler; if the input is no whole head, or the driver has to stop (a body to
    ///   throw away, the pipelining bound), it flushes before it waits.
    ///
    /// So a response waits at most for the server to parse the next head and run its
    /// handler once, never for that handler to finish, nor for a body, nor for the client:
    /// whoever is about to wait flushes first. The write buffer's bound still holds: a
    /// response that fills it waits for room, flushing.
    pub(crate) fn flush_can_wait(&self, released: bool, max_pipelined: usize) -> bool {
        self.unpolled_streams()
            || (released
                && !self.rbuf.is_empty()
                && self.body.is_none()
                && self.keep_alive
                && !self.closing
                && !self.upgrade_pending
                && (self.n_open_streams as usize) < max_pipelined
                && self.io.is_some())
    }

    /// Stream `seq` is over (its handler ended, or it was dropped). `complete`: its
    /// response ended; `upgraded`: it answered 101 (and may have taken the socket);
    /// `was_upgrade`: its request asked for an upgrade (or was a CONNECT).
    pub(crate) fn release_stream(
        &mut self,
        seq: u64,
        complete: bool,
        upgraded: bool,
        was_upgrade: bool,
    ) {
        if let Some(b) = self.body_of(seq) {
            b.owner_alive = false;
        }
        if was_upgrade {
            self.upgrade_pending = false;
        }
        if !complete && self.write_seq == seq {
            // Upgraded without taking the socket, or never answered: nothing else can
            // follow on this connection.
            self.keep_alive = false;
            if !upgraded {
                self.io = None;
            }
            self.pass_turn(seq);
        }
        self.n_open_streams -= 1;
        if !(self.driver_input_only && self.keep_alive) {
            self.wake_driver();
        }
    }

    /// After a handler's last flush: when its stream's end did not wake the driver
    /// (`driver_input_only`), give the buffers back now, as the driver would have, not at
    /// the time to park. Thousands of connections holding them for `park_after` at once
    /// grew the heap by ~300 B per idle connection (`bench/idle-memory`).
    pub(crate) fn release_buffers_if_idle(&mut self) {
        if self.driver_input_only
            && self.driver.is_some()
            && self.n_open_streams == 0
            && self.rbuf.is_empty()
        {
            self.release_idle_buffers();
        }
    }

    pub(crate) fn take_io(&mut self) -> Option<(Box<dyn Io>, Bytes)> {
        let io = self.io.take()?;
        let buffered = self.rbuf.split().freeze();
        self.keep_alive = false;
        self.wake_driver();
        Some((io, buffered))
    }
}
