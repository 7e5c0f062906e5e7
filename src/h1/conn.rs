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
//! What this module does not do: parse (`parse.rs`), frame bodies (`body.rs`), or know
//! about the server's connection set (the server passes a callback for each request).

use bytes::{Buf, Bytes, BytesMut};
use std::{
    cell::RefCell,
    future::{poll_fn, Future},
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll, Waker},
    time::{Duration, Instant},
};
use tokio::io::{AsyncWrite, ReadBuf};

use super::{
    body::{Decoded, Decoder},
    parse::{parse_request, BodyKind, Limits, ParseError, RequestHead},
    stream::H1Stream,
};
use crate::{
    error::{Error, Result},
    rt::{sleep, sleep_until, Controller, Sleep},
    transport::{poll_read_buf, Io, Transport},
};

/// How much is read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

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
        match read_idle(&mut *self.io, &mut read_ahead, cx) {
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

    /// Reads request heads and hands each to `on_request` until the connection ends, or
    /// until it has waited `park_after` for its next request with nothing in flight: it
    /// then returns its socket as a [`Parked`] connection. `resumed` is a parked
    /// connection's idle deadline, when this driver takes one up again.
    pub(crate) async fn drive(
        self: Rc<Self>,
        mut on_request: impl FnMut(H1Stream),
        mut resumed: Option<Instant>,
    ) -> Option<Parked> {
        let ctl = Controller::current();
        let mut timer = sleep(self.cfg.connection_setup_timeout);
        let mut send = SendGuard::default();
        let mut first = resumed.is_none();
        // The driver's future is most of every idle connection's task, and a value alive
        // across an `await` takes room in it: so the request just read is matched away
        // before the error answer is awaited, and the outcome lives in a block that ends
        // before closing is awaited.
        {
            let outcome: Result<Option<Instant>> = loop {
                let discard_by = ctl.now() + self.cfg.intra_stream_timeout;
                let between = poll_fn(|cx| {
                    self.poll_between_requests(cx, &ctl, &mut timer, discard_by, &mut send)
                });
                if let Err(e) = between.await {
                    break Err(e);
                }
                if !self.st.borrow().keep_alive {
                    break Ok(None);
                }
                let idle = if first {
                    self.cfg.connection_setup_timeout
                } else {
                    self.cfg.intra_stream_timeout
                };
                let now = ctl.now();
                let close_at = resumed.take().unwrap_or(now + idle);
                let idle = Idle {
                    park_at: now
                        .checked_add(self.cfg.park_after)
                        .map_or(close_at, |at| at.min(close_at)),
                    close_at,
                };
                // The timer first wakes the driver when it may park. Deadlines only move
                // later from one request to the next, so this costs no timer update on a
                // busy connection (see `Sleep::reset`).
                timer.reset(idle.park_at);
                let mut started = false;
                let read = poll_fn(|cx| {
                    self.poll_read_head(cx, &ctl, &mut timer, idle, &mut started, &mut send)
                });
                let (status, message) = match read.await {
                    Ok(NextHead::Head(head)) => {
                        first = false;
                        let stream = self.start_stream(head);
                        on_request(stream);
                        continue;
                    }
                    Ok(NextHead::End) => break Ok(None),
                    Ok(NextHead::Park) => break Ok(Some(idle.close_at)),
                    Err(HeadError::Parse(e)) => {
                        tracing::debug!(peer = ?self.peer_addr, status = e.status(), "bad request: {}", e.message());
                        (e.status(), e.message())
                    }
                    Err(HeadError::HeaderTimeout) => {
                        tracing::debug!(peer = ?self.peer_addr, "request head not received in time");
                        (408, "request head not received in time")
                    }
                    Err(HeadError::Io(e)) => break Err(e),
                };
                // Answered after every earlier response.
                self.st.borrow_mut().keep_alive = false;
                poll_fn(|cx| self.poll_streams_ended(cx)).await;
                let mut st = self.st.borrow_mut();
                super::encode::error_response(&mut st.wbuf, status, message);
                break Ok(None);
            };
            match outcome {
                Ok(Some(idle_by)) => {
                    let mut st = self.st.borrow_mut();
                    if let Some(io) = st.io.take() {
                        return Some(Parked {
                            io,
                            https: st.https,
                            idle_by,
                        });
                    }
                }
                Ok(None) => {}
                Err(e) if e.is_disconnect() => {}
                Err(e) => tracing::debug!(peer = ?self.peer_addr, "connection error: {e}"),
            }
        }
        // Boxed: closing (lingering included) is a large state the task would otherwise
        // carry for the connection's whole life.
        Box::pin(self.finish(&ctl, &mut send)).await;
        None
    }

    fn start_stream(self: &Rc<Self>, head: RequestHead) -> H1Stream {
        let mut st = self.st.borrow_mut();
        let seq = st.next_seq;
        st.next_seq += 1;
        st.n_open_streams += 1;
        // RFC 9110 §9.3.6: what follows a CONNECT head is the tunnel's, never another
        // request, whether or not the handler opens the tunnel.
        if !head.keep_alive || head.is_connect {
            st.keep_alive = false;
        }
        st.upgrade_pending = head.upgrade || head.is_connect;
        // An `Upgrade` request's body is an ordinary body, framed by its Content-Length or
        // Transfer-Encoding (RFC 9112 §6.3), read by the handler whether or not it
        // upgrades: the protocol switch happens after it. A CONNECT request has none.
        if (head.body != BodyKind::Empty && !head.is_connect) || head.expect_continue {
            st.body = Some(Box::new(BodyRead {
                seq,
                decoder: Decoder::new(head.body, self.cfg.limits.max_head),
                owner_alive: true,
                continue_pending: head.expect_continue && head.body != BodyKind::Empty,
                discarded: 0,
            }));
        }
        drop(st);
        H1Stream::new(self.clone(), seq, head)
    }

    /// Ready when the previous request's body is finished (reading and throwing away what
    /// its handler left unread), flushing output meanwhile. A poll function rather than an
    /// async one, whose future would keep its arguments twice in the driver's. Inlined into
    /// its one caller, as the async function's body was: a call of its own cost ~20
    /// instructions per request.
    #[inline(always)]
    fn poll_between_requests(
        &self,
        cx: &mut Context<'_>,
        ctl: &Controller,
        timer: &mut Sleep,
        discard_by: Instant,
        send: &mut SendGuard,
    ) -> Poll<Result<()>> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        if st.io.is_none() {
            return Poll::Ready(Err(Error::closed("connection closed")));
        }
        if let Poll::Ready(Err(e)) = send.poll_flush(st, cx, ctl, self.cfg.send_timeout) {
            return Poll::Ready(Err(e));
        }
        if st.body.is_some() {
            ready!(self.poll_discard(st, cx, timer, discard_by))?;
        }
        // Read no further head while an upgrade may still take the socket, or while
        // `max_pipelined` requests are in flight: a client that sends requests without
        // reading the answers holds that many handlers (and what they opened), not one
        // per request it sent, and its requests wait in the socket, not in memory.
        if st.keep_alive
            && (st.upgrade_pending || st.n_open_streams as usize >= self.cfg.limits.max_pipelined)
        {
            st.driver = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Ready when the previous request's body is gone: read to its end by its handler, or
    /// by this function, which throws away what the handler left (up to `max_discard`,
    /// before `discard_by`), or given up on (the connection then closes).
    fn poll_discard(
        &self,
        st: &mut ConnState,
        cx: &mut Context<'_>,
        timer: &mut Sleep,
        discard_by: Instant,
    ) -> Poll<Result<()>> {
        let Some(body) = &mut st.body else {
            return Poll::Ready(Ok(()));
        };
        if body.owner_alive {
            st.driver = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if body.continue_pending {
            // A client still waiting for `100 Continue` may never send the body, or may
            // send it: what follows cannot be told apart from a request.
            st.body = None;
            st.keep_alive = false;
            return Poll::Ready(Ok(()));
        }
        if body
            .decoder
            .remaining_hint()
            .is_some_and(|n| n > self.cfg.limits.max_discard)
        {
            // Known to be too long to throw away: close instead of reading it.
            st.keep_alive = false;
            st.body = None;
            return Poll::Ready(Ok(()));
        }
        loop {
            match body.decoder.decode(&mut st.rbuf) {
                Ok(Decoded::Data(d)) => {
                    body.discarded += d.len() as u64;
                    if body.discarded > self.cfg.limits.max_discard {
                        st.keep_alive = false;
                        st.body = None;
                        return Poll::Ready(Ok(()));
                    }
                }
                Ok(Decoded::Done { .. }) => {
                    st.body = None;
                    return Poll::Ready(Ok(()));
                }
                Err(e) => {
                    st.keep_alive = false;
                    st.body = None;
                    return Poll::Ready(Err(Error::protocol(e.status(), e.message())));
                }
                Ok(Decoded::NeedMore) => {
                    match poll_fill(&mut st.io, &mut st.rbuf, cx) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(Error::closed("peer closed in a request body")))
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                        Poll::Pending => {
                            // Set only here: most requests have no body to throw away,
                            // and moving the deadline earlier costs a timer update.
                            if timer.deadline() != discard_by {
                                timer.reset(discard_by);
                            }
                            if Pin::new(&mut *timer).poll(cx).is_ready() {
                                return Poll::Ready(Err(Error::timeout(
                                    "discarding a request body",
                                )));
                            }
                            // Earlier handlers may still write and need us to flush.
                            st.driver = Some(cx.waker().clone());
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }

    fn poll_read_head(
        &self,
        cx: &mut Context<'_>,
        ctl: &Controller,
        timer: &mut Sleep,
        idle: Idle,
        started: &mut bool,
        send: &mut SendGuard,
    ) -> Poll<std::result::Result<NextHead, HeadError>> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        let scheme = if st.https { "https" } else { "http" };
        loop {
            if st.io.is_none() {
                return Poll::Ready(Ok(NextHead::End));
            }
            if let Poll::Ready(Err(e)) = send.poll_flush(st, cx, ctl, self.cfg.send_timeout) {
                return Poll::Ready(Err(HeadError::Io(e)));
            }
            match parse_request(&mut st.rbuf, scheme, &self.cfg.limits) {
                Ok(Some(head)) => return Poll::Ready(Ok(NextHead::Head(head))),
                Err(e) => return Poll::Ready(Err(HeadError::Parse(e))),
                Ok(None) => {}
            }
            if st.closing && st.rbuf.is_empty() {
                return Poll::Ready(Ok(NextHead::End));
            }
            if !st.rbuf.is_empty() && !*started {
                // The first byte of a request starts the header clock (slowloris defence).
                *started = true;
                timer.reset(ctl.now() + self.cfg.header_read_timeout);
            }
            let filled = if st.rbuf.is_empty() {
                st.release_idle_buffers();
                poll_fill_idle(&mut st.io, &mut st.rbuf, cx)
            } else {
                poll_fill(&mut st.io, &mut st.rbuf, cx)
            };
            match filled {
                Poll::Ready(Ok(0)) => {
                    st.read_eof = true;
                    // EOF between requests, or after a partial head nobody will finish.
                    return Poll::Ready(Ok(NextHead::End));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(HeadError::Io(e.into()))),
                Poll::Pending => {
                    st.driver = Some(cx.waker().clone());
                    let fired = Pin::new(&mut *timer).poll(cx).is_ready();
                    if !st.rbuf.is_empty() {
                        if fired {
                            return Poll::Ready(Err(HeadError::HeaderTimeout));
                        }
                        return Poll::Pending;
                    }
                    let now = ctl.now();
                    if now >= idle.close_at {
                        return Poll::Ready(Ok(NextHead::End));
                    }
                    // Checked on every wake-up, not only when the timer fires: handlers of
                    // earlier requests may have been at work then, and their end wakes us.
                    if now >= idle.park_at && st.may_park() && send.is_idle() {
                        return Poll::Ready(Ok(NextHead::Park));
                    }
                    if fired {
                        timer.reset(idle.close_at);
                        return Pin::new(&mut *timer).poll(cx).map(|()| Ok(NextHead::End));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Ready when every stream has ended (or the socket is gone).
    fn poll_streams_ended(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.st.borrow_mut();
        if st.n_open_streams == 0 || st.io.is_none() {
            Poll::Ready(())
        } else {
            st.driver = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Waits for every stream to end, flushes, and closes the socket gracefully.
    async fn finish(&self, ctl: &Controller, send: &mut SendGuard) {
        {
            let mut st = self.st.borrow_mut();
            st.keep_alive = false;
        }
        let flushed = poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            if st.io.is_none() {
                return Poll::Ready(Err(()));
            }
            if st.n_open_streams > 0 {
                st.driver = Some(cx.waker().clone());
                // Streams that ended left output: keep it moving.
                if let Poll::Ready(Err(_)) = send.poll_flush(st, cx, ctl, self.cfg.send_timeout) {
                    return Poll::Ready(Err(()));
                }
                return Poll::Pending;
            }
            match send.poll_flush(st, cx, ctl, self.cfg.send_timeout) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(_)) => Poll::Ready(Err(())),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        if flushed.is_err() {
            return;
        }
        let Some(mut io) = self.st.borrow_mut().io.take() else {
            return;
        };
        let read_eof = self.st.borrow().read_eof;
        let _ = poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
        if read_eof {
            return;
        }
        // Lingering close: read until the peer's EOF, a byte budget or a deadline.
        let limits = &self.cfg.limits;
        let mut linger = sleep(limits.linger_time.min(self.cfg.intra_stream_timeout));
        let mut drained = 0usize;
        let mut scratch = BytesMut::new();
        poll_fn(|cx| loop {
            if Pin::new(&mut linger).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            scratch.clear();
            scratch.reserve(READ_CHUNK);
            match poll_read_buf(&mut io, &mut scratch, cx) {
                Poll::Ready(Ok(n)) if n > 0 && drained + n < limits.linger_bytes => drained += n,
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
    }
}

/// Bounds how long buffered output may wait for a client that does not read (nginx's
/// `send_timeout`): the clock restarts whenever any byte goes out.
///
/// The clock exists only while output is stuck: it is boxed then and dropped when the
/// buffer drains, so that the driver's future (every idle connection's task) carries one
/// pointer for it instead of a `Sleep` and its bookkeeping (80 bytes).
#[derive(Default)]
struct SendGuard(Option<Box<Stuck>>);

struct Stuck {
    /// `n_written` when the clock was last started.
    at: u64,
    sleep: Sleep,
}

impl SendGuard {
    /// No output is stuck waiting for the client.
    fn is_idle(&self) -> bool {
        self.0.is_none()
    }

    /// Flushes; `Ready(Err)` on a write error or when the client has taken no byte for
    /// the whole `send_timeout` (the connection is then closed).
    fn poll_flush(
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

/// When a connection waiting for its next request may park, and when it is closed.
#[derive(Clone, Copy)]
struct Idle {
    park_at: Instant,
    close_at: Instant,
}

/// What reading the next request head came to.
enum NextHead {
    Head(RequestHead),
    /// The connection ends: EOF, idle timeout, server closing, socket gone.
    End,
    /// Idle with nothing in flight for `park_after`: the connection parks.
    Park,
}

enum HeadError {
    Parse(ParseError),
    HeaderTimeout,
    Io(Error),
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
                    // part that went out.
                    self.wbuf.advance(n);
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

    /// Gives the read buffer back, and the write buffer if it is empty, while the
    /// connection waits for its next request with nothing buffered: an idle keep-alive
    /// connection then holds no buffer (as nginx frees its buffers on idle keep-alive
    /// connections), and the next request allocates one of the size it needs. Not only
    /// when parking: thousands of connections holding their buffers for `park_after` at
    /// once would grow the heap to that peak, and freed memory inside the heap is not
    /// given back to the system.
    fn release_idle_buffers(&mut self) {
        debug_assert!(self.rbuf.is_empty());
        self.rbuf = BytesMut::new();
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
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

    /// Counts bytes a stream sent past the buffer (sendfile) as progress.
    pub(crate) fn note_written(&mut self, n: usize) {
        self.n_written += n as u64;
    }

    pub(crate) fn take_io(&mut self) -> Option<(Box<dyn Io>, Bytes)> {
        let io = self.io.take()?;
        let buffered = self.rbuf.split().freeze();
        self.keep_alive = false;
        self.wake_driver();
        Some((io, buffered))
    }
}

/// Reads the start of the next request into an empty `rbuf` through a buffer on the
/// stack, so that waiting for it allocates nothing; what arrived is then copied into
/// `rbuf`, which takes exactly that much (a small request head costs a small allocation)
/// unless the read filled the stack buffer and more is likely to follow. `Ok(0)` is EOF.
fn poll_fill_idle(
    io: &mut Option<Box<dyn Io>>,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    match io {
        Some(io) => read_idle(&mut **io, rbuf, cx),
        None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
    }
}

fn read_idle(
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

fn poll_fill(
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
    fn a_small_request_takes_a_buffer_of_its_size() {
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
