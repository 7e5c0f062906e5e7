//! The HTTP/2 connection task: the `h2` crate's server connection driven on the step
//! loop (lua-http's `h2_connection`), with onstream's limits and timeouts around it.
//!
//! The task polls `Connection::poll_accept`, which also moves every stream's frames, and
//! hands each new request to the server. Around it: the handshake must finish within
//! `connection_setup_timeout`; an idle connection (no open stream) gets GOAWAY after
//! `intra_stream_timeout` (lua-http never times one out); a closing server sends GOAWAY
//! and lets open streams finish; output that the client leaves undrained for
//! `send_timeout` (`send_watch.rs`) closes the connection. Frame-level defences —
//! concurrent streams, header list size, rapid reset (CVE-2023-44487), CONTINUATION
//! floods — are the h2 crate's, set here.

use bytes::Bytes;
use std::{
    cell::Cell,
    future::{poll_fn, Future},
    net::SocketAddr,
    pin::{pin, Pin},
    rc::Rc,
    task::{Poll, Waker},
    time::{Duration, Instant},
};

use super::{
    drain::DrainLimits,
    malformed,
    send_watch::{SendWatch, WatchedIo},
    stream::H2Stream,
};
use crate::{
    rt::{sleep, sleep_until, timeout, Controller, Sleep},
    transport::{Io, Transport},
    upgrade::Upgraded,
};

/// Per-server HTTP/2 settings.
#[derive(Debug, Clone)]
pub(crate) struct H2Config {
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    /// The most regular fields in a request's header list (`Options::max_headers`); only
    /// the own engine counts them.
    pub max_headers: usize,
    pub initial_window_size: u32,
    pub initial_connection_window_size: u32,
    pub max_send_buffer_size: usize,
    pub max_pending_accept_reset_streams: usize,
    pub max_local_error_reset_streams: usize,
    pub connection_setup_timeout: Duration,
    pub intra_stream_timeout: Duration,
    pub send_timeout: Duration,
    pub body_read_timeout: Duration,
    /// How much of a request body its handler left unread is read and thrown away so
    /// that the client can finish sending (`drain.rs`).
    pub max_discard: u64,
}

impl H2Config {
    /// The settings `Options` gives both engines (the server's, and the fuzz targets').
    pub(crate) fn from_options(options: &crate::Options) -> H2Config {
        H2Config {
            max_concurrent_streams: options.h2.max_concurrent_streams,
            max_header_list_size: u32::try_from(options.limits.max_head).unwrap_or(u32::MAX),
            max_headers: options.limits.max_headers,
            initial_window_size: options.h2.initial_window_size,
            initial_connection_window_size: options.h2.initial_connection_window_size,
            max_send_buffer_size: options.h2.max_send_buffer_size,
            max_pending_accept_reset_streams: options.h2.max_pending_accept_reset_streams,
            max_local_error_reset_streams: options.h2.max_local_error_reset_streams,
            connection_setup_timeout: options.connection_setup_timeout,
            intra_stream_timeout: options.intra_stream_timeout,
            send_timeout: options.send_timeout,
            body_read_timeout: options.body_read_timeout,
            max_discard: options.limits.max_discard,
        }
    }
}

/// What the connection's streams and the server share with the connection task.
pub(crate) struct H2Shared {
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) scheme: &'static str,
    /// The server's `body_read_timeout`, for the streams.
    pub(crate) body_read_timeout: Duration,
    /// How long a stream's write may wait for send capacity (flow-control credit and room
    /// in h2's send buffer) before the stream is reset.
    pub(crate) send_timeout: Duration,
    /// How much of an unread request body is read after the response ended.
    pub(crate) drain: DrainLimits,
    /// Streams whose handlers (or the reading of their unread bodies) have not ended:
    /// the connection is idle at zero.
    n_open: Cell<usize>,
    /// `max_concurrent_streams`: the most handlers one connection may keep running. A
    /// stream the client resets is closed for h2 at once, but its handler runs on; without
    /// this bound a client resetting each stream right after it was accepted gets a
    /// handler per stream it ever opened (950 at once with a bound of 100, found by
    /// `tests/h2_floods.rs`), the cost behind CVE-2023-44487.
    max_open: usize,
    /// When the last stream ended (or the connection began), for the idle timeout.
    idle_since: Cell<Instant>,
    closing: Cell<bool>,
    aborted: Cell<bool>,
    driver: Cell<Option<Waker>>,
}

impl H2Shared {
    pub(crate) fn stream_opened(&self) {
        self.n_open.set(self.n_open.get() + 1);
    }

    pub(crate) fn stream_closed(&self) {
        let was = self.n_open.get();
        self.n_open.set(was.saturating_sub(1));
        if was == 1 {
            self.idle_since
                .set(Controller::try_current().map_or_else(Instant::now, |c| c.now()));
            self.wake();
        } else if was == self.max_open {
            // The connection task stopped accepting at the bound: it may go on.
            self.wake();
        }
    }

    /// As many handlers (or drains of unread bodies) run as the connection may have
    /// streams: no new stream is accepted until one ends.
    fn at_limit(&self) -> bool {
        self.n_open.get() >= self.max_open
    }

    /// Sends GOAWAY; open streams finish, then the connection closes.
    pub(crate) fn close_gracefully(&self) {
        self.closing.set(true);
        self.wake();
    }

    /// Closes the connection now.
    pub(crate) fn abort(&self) {
        self.aborted.set(true);
        self.wake();
    }

    /// Whether a stream's handler (or the drain of its body) has not ended.
    pub(crate) fn has_request_in_flight(&self) -> bool {
        self.n_open.get() > 0
    }

    fn wake(&self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }
}

/// Requests accepted in one turn of the loop at most, so that one connection's flood of
/// streams cannot hold the loop.
const ACCEPT_BUDGET: usize = 64;

/// Why the connection ends.
enum End {
    Closed,
    Failed(h2::Error),
    /// Output waited for the socket for `send_timeout` with nothing taken.
    Stuck,
}

/// The send timer: armed while the connection's output waits for the socket, restarted
/// whenever the client takes a byte.
#[derive(Default)]
struct Stall {
    /// The byte count output was stuck at, and the timer for it.
    at: Option<(u64, Sleep)>,
}

impl Stall {
    /// Whether output has been stuck at the same byte for `send_timeout`; otherwise the
    /// task is woken when it would be.
    fn expired(
        &mut self,
        watch: &SendWatch,
        send_timeout: Duration,
        cx: &mut std::task::Context<'_>,
    ) -> bool {
        let Some(written) = watch.blocked_at() else {
            self.at = None;
            return false;
        };
        let timer = match &mut self.at {
            Some((at, timer)) if *at == written => timer,
            slot => {
                let deadline = Controller::current().now() + send_timeout;
                &mut slot.insert((written, sleep_until(deadline))).1
            }
        };
        Pin::new(timer).poll(cx).is_ready()
    }
}

/// Runs an HTTP/2 connection until it closes, handing each request to `on_request`.
///
/// A plain function around the task's future: an async fn's arguments keep their room in
/// its state for its whole life, and this future lives as long as the connection, so what
/// only setting up needs (the `Transport`, the `Builder`) stays out of it.
pub(crate) fn serve<'a>(
    transport: Transport,
    cfg: &'a H2Config,
    on_request: impl FnMut(H2Stream) + 'a,
    on_shared: impl FnOnce(&Rc<H2Shared>),
) -> impl Future<Output = ()> + 'a {
    let Transport {
        io,
        read_ahead,
        peer_addr,
        local_addr,
        scheme,
        h2: _,
    } = transport;
    let io: Box<dyn Io> = if read_ahead.is_empty() {
        io
    } else {
        Box::new(Upgraded::new(io, read_ahead.freeze()))
    };
    let (io, send_watch) = WatchedIo::new(io);
    let shared = Rc::new(H2Shared {
        peer_addr,
        local_addr,
        scheme,
        body_read_timeout: cfg.body_read_timeout,
        send_timeout: cfg.send_timeout,
        drain: DrainLimits {
            max_bytes: cfg.max_discard,
            gap: cfg.body_read_timeout,
            within: cfg.intra_stream_timeout,
        },
        n_open: Cell::new(0),
        max_open: cfg.max_concurrent_streams as usize,
        idle_since: Cell::new(Controller::current().now()),
        closing: Cell::new(false),
        aborted: Cell::new(false),
        driver: Cell::new(None),
    });
    on_shared(&shared);
    drive(io, send_watch, shared, cfg, on_request)
}

/// The h2 crate's server handshake with onstream's settings.
fn handshake(cfg: &H2Config, io: WatchedIo) -> h2::server::Handshake<WatchedIo, Bytes> {
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(cfg.max_header_list_size)
        .initial_window_size(cfg.initial_window_size)
        .initial_connection_window_size(cfg.initial_connection_window_size)
        .max_send_buffer_size(cfg.max_send_buffer_size)
        .max_pending_accept_reset_streams(cfg.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(Some(cfg.max_local_error_reset_streams))
        // SETTINGS_ENABLE_CONNECT_PROTOCOL: clients may open WebSockets (RFC 8441).
        .enable_connect_protocol();
    builder.handshake(io)
}

/// The connection task proper: the handshake, then requests until the connection closes.
async fn drive(
    io: WatchedIo,
    send_watch: Rc<SendWatch>,
    shared: Rc<H2Shared>,
    cfg: &H2Config,
    mut on_request: impl FnMut(H2Stream),
) {
    // The handshake (the client's preface) is raced against the server closing: a
    // connection with no request yet has nothing to finish, and `close()` must not wait
    // for its setup timeout.
    let mut handshake = pin!(handshake(cfg, io));
    let shaken = poll_fn(|cx| {
        if shared.closing.get() || shared.aborted.get() {
            return Poll::Ready(None);
        }
        shared.driver.set(Some(cx.waker().clone()));
        handshake.as_mut().poll(cx).map(Some)
    });
    let mut conn = match timeout(cfg.connection_setup_timeout, shaken).await {
        Ok(Some(Ok(conn))) => conn,
        Ok(None) => {
            tracing::debug!(peer = ?shared.peer_addr, "server closing before the HTTP/2 preface");
            return;
        }
        Ok(Some(Err(e))) => {
            tracing::debug!(peer = ?shared.peer_addr, "HTTP/2 handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = ?shared.peer_addr, "HTTP/2 preface not received in time");
            return;
        }
    };

    let mut idle = sleep(cfg.intra_stream_timeout);
    let mut stall = Stall::default();
    let mut n_malformed = 0;
    let mut going_away = false;
    let end = poll_fn(|cx| {
        let mut budget = ACCEPT_BUDGET;
        send_watch.new_turn();
        loop {
            if shared.aborted.get() {
                return Poll::Ready(End::Closed);
            }
            if shared.closing.get() && !going_away {
                going_away = true;
                conn.graceful_shutdown();
            }
            // At the bound the connection still moves (`poll_closed` drives every
            // stream's frames) but new streams wait in h2, where a client that resets them
            // runs into `max_pending_accept_reset_streams` (GOAWAY ENHANCE_YOUR_CALM).
            let next = if shared.at_limit() {
                conn.poll_closed(cx).map(|r| r.err().map(Err))
            } else {
                conn.poll_accept(cx)
            };
            match next {
                // Each request goes to its handler at once, and the next is accepted in the
                // same turn: no hand-off through the task's output.
                Poll::Ready(Some(Ok((req, mut respond)))) => {
                    match malformed::fields_fault(req.headers()) {
                        None => on_request(H2Stream::new(shared.clone(), req, respond)),
                        Some(why) => {
                            tracing::debug!(peer = ?shared.peer_addr, "malformed HTTP/2 request: {why}");
                            respond.send_reset(h2::Reason::PROTOCOL_ERROR);
                            // h2 bounds the resets it makes itself (then GOAWAY with
                            // ENHANCE_YOUR_CALM) but not ours: the same bound.
                            n_malformed += 1;
                            if n_malformed > cfg.max_local_error_reset_streams {
                                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                            }
                        }
                    }
                    budget -= 1;
                    if budget == 0 {
                        // Other connections get their turn; this task runs again next turn.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    continue;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(End::Failed(e)),
                Poll::Ready(None) => return Poll::Ready(End::Closed),
                Poll::Pending => {}
            }
            if stall.expired(&send_watch, cfg.send_timeout, cx) {
                return Poll::Ready(End::Stuck);
            }
            if shared.n_open.get() == 0 && !going_away {
                idle.reset(shared.idle_since.get() + cfg.intra_stream_timeout);
                if Pin::new(&mut idle).poll(cx).is_ready() {
                    // Idle too long: GOAWAY, then accept returns None once it is out.
                    going_away = true;
                    conn.graceful_shutdown();
                    continue;
                }
            }
            shared.driver.set(Some(cx.waker().clone()));
            return Poll::Pending;
        }
    })
    .await;
    match end {
        End::Failed(e) if !(e.is_io() || e.is_go_away()) => {
            tracing::debug!(peer = ?shared.peer_addr, "HTTP/2 connection error: {e}");
        }
        End::Stuck => {
            tracing::debug!(peer = ?shared.peer_addr, "HTTP/2 output not taken for send_timeout");
        }
        _ => {}
    }
}
