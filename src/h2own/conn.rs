//! The connection: RFC 9113's connection and stream state machines, flow control in both
//! directions, SETTINGS, PING, GOAWAY, RST_STREAM, CONTINUATION, and the task that moves
//! the bytes (lua-http's `h2_connection`, written for this loop).
//!
//! Memory is the point of this module. A connection owns only what must outlive a turn of
//! the loop: its HPACK decoding table, the peer's settings and windows, its open streams,
//! the output the socket has not taken yet and the bytes of a frame not whole yet. Input is
//! read into one buffer per thread (`SCRATCH`), every complete frame in it handled at once,
//! so a connection with nothing to do holds no read buffer; its output buffer is freed when
//! it has been written and no stream is open.
//!
//! Stream lifetime: a stream's `Slot` is made with its request and lives exactly as long as
//! the handler's `OwnStream` (`stream.rs`); the protocol state (ended, reset) is flags on
//! it. Frames for a stream whose slot is gone are for a closed stream.
//!
//! Defences: at most `max_concurrent_streams` slots (a new stream beyond that is refused
//! with REFUSED_STREAM, and a client that goes on opening streams at the bound gets GOAWAY
//! ENHANCE_YOUR_CALM: rapid reset, CVE-2023-44487, since a reset stream keeps its slot
//! until its handler ends); a header block is bounded while it arrives (CONTINUATION
//! floods, CVE-2024-27316 class) and a frame count per block too; one turn reads at most
//! `READS_PER_TURN` times and reads nothing while the output is over `OUT_HIGH` (a client
//! sending PINGs without reading the answers).

use bytes::Bytes;
use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::{poll_fn, Future},
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};
use tokio::io::ReadBuf;

use super::{
    frame::{self, code, flag, kind, setting, Head, HEAD_LEN, MAX_FRAME},
    hpack,
    request::Block,
    stream::OwnStream,
};
use crate::{
    h2::H2Config,
    headers::Headers,
    rt::{sleep, sleep_until, Controller, Sleep},
    transport::{Io, Transport},
};

/// The shared read buffer's size: a whole frame of the largest size we accept, plus the
/// part of a frame left over from the last read, always fit.
const SCRATCH_LEN: usize = 2 * (MAX_FRAME + HEAD_LEN);

thread_local! {
    /// Input is read here, handled, and only an incomplete frame's bytes are copied out to
    /// the connection (`State::partial`): one buffer for every connection on the thread.
    /// Nothing that runs while it is borrowed reads from a socket.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Output held for the socket above which the connection reads nothing more and streams
/// wait to write: what a client that does not read can make the server keep.
const OUT_HIGH: usize = 64 * 1024;

/// Reads per turn of the task, so that one busy connection cannot hold the loop.
const READS_PER_TURN: usize = 16;

/// CONTINUATION frames one header block may take: a flood of empty ones is refused
/// long before the size bound would see it.
const MAX_BLOCK_FRAMES: usize = 64;

/// Streams refused at the concurrency bound in a row (no slot freed in between) before the
/// client is told to go away: a client that respects the bound is refused rarely.
const MAX_REFUSED_IN_A_ROW: usize = 64;

/// A connection error: GOAWAY with this code, then close (RFC 9113 §5.4.1).
#[derive(Debug, Clone, Copy)]
struct ConnError(u32);

/// One stream as the connection keeps it, while its handler runs.
pub(crate) struct Slot {
    pub(crate) id: u32,
    /// DATA received and not yet taken by the handler.
    pub(crate) recv: VecDeque<Bytes>,
    /// END_STREAM received: the request is complete (half-closed remote).
    pub(crate) recv_end: bool,
    pub(crate) trailers: Option<Headers>,
    /// Credit the client has left on this stream.
    recv_window: i64,
    /// `content-length` of the request, checked against the DATA (RFC 9113 §8.1.1).
    expected_len: Option<u64>,
    received: u64,
    /// Credit we have left for DATA on this stream.
    pub(crate) send_window: i64,
    /// END_STREAM sent (half-closed local).
    pub(crate) sent_end: bool,
    /// DATA of this stream possibly still in `State::out` (`max_send_buffer`): what it
    /// wrote since its last frame left, counted until the socket took the output up to
    /// `out_end`, the output position where its last frame ends (an over-count while
    /// other streams' frames sit before it, so the bound errs on the safe side).
    pub(crate) unflushed: usize,
    pub(crate) out_end: u64,
    /// The stream was reset, by either side: nothing more moves on it.
    pub(crate) reset: bool,
    /// By the client: a frame it sends after that is a stream error (§5.1, "closed"),
    /// where one after our reset may have crossed it in flight and is ignored.
    peer_reset: bool,
    /// The request went wrong after its head: the handler's read fails with this status
    /// (400 for a malformed body or trailers, 431 for trailers over the bound).
    pub(crate) request_error: Option<u16>,
    /// The handler is gone after a complete response while the client still sends the
    /// body: what comes is read and thrown away (so that the client can finish) until
    /// `max_discard` bytes, the end of the body, or this deadline (the next byte's).
    drain_by: Option<Instant>,
    discarded: u64,
    /// The handler's task waiting for body bytes, or for credit to send.
    pub(crate) reader: Option<Waker>,
    pub(crate) writer: Option<Waker>,
}

impl Slot {
    /// Open as the client counts streams (§5.1.2): not reset, not ended both ways, not
    /// drained after its response.
    fn is_open(&self) -> bool {
        let ended = self.recv_end && self.sent_end;
        !self.reset && !ended && self.drain_by.is_none()
    }

    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// A header block whose CONTINUATION frames are still coming.
struct PendingBlock {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
    n_frames: usize,
}

/// What the connection keeps between turns.
pub(crate) struct State {
    decoder: hpack::Decoder,
    /// Output not yet taken by the socket; freed when empty and no stream is open.
    pub(crate) out: Vec<u8>,
    /// Bytes of output the socket has taken since the connection began: with `out.len()`,
    /// where the end of the output is (`Slot::out_end`).
    pub(crate) flushed: u64,
    /// The start of a frame that has not arrived whole (empty between frames).
    partial: Vec<u8>,
    /// Whether the client's preface (and then its first SETTINGS) has been read.
    preface_done: bool,
    got_settings: bool,
    pub(crate) slots: Vec<Slot>,
    /// The highest stream the client opened (refused ones included).
    last_id: u32,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    peer_initial_window: i64,
    pub(crate) peer_max_frame: usize,
    /// Connection-level credit: ours to send, the client's to send.
    pub(crate) send_window: i64,
    recv_window: i64,
    pending_block: Option<PendingBlock>,
    n_refused_in_a_row: usize,
    /// Stream errors we sent (RST_STREAM for the client's faults): bounded by
    /// `max_local_error_reset_streams` ("MadeYouReset", 2025).
    n_local_resets: usize,
    /// The GOAWAY's debug data when we send one for a calm-down reason.
    goaway_debug: &'static str,
    goaway_sent: bool,
    /// A connection error was sent: close once the output is out.
    failed: bool,
    /// Streams waiting for connection credit or output room.
    pub(crate) send_waiters: Vec<Waker>,
    idle_since: Instant,
}

/// The connection, shared by its task and its streams.
pub(crate) struct Conn {
    pub(crate) peer_addr: Option<SocketAddr>,
    pub(crate) local_addr: Option<SocketAddr>,
    pub(crate) body_read_timeout: Duration,
    pub(crate) send_timeout: Duration,
    max_header_list: usize,
    /// The most regular fields in a request (`Options::max_headers`); more are answered 431.
    max_headers: usize,
    /// DATA one stream may have in the output before its writer waits
    /// (`Options::h2_max_send_buffer_size`, at least 1).
    pub(crate) max_send_buffer: usize,
    max_streams: usize,
    max_malformed: usize,
    /// Streams the client may have reset while their handlers have not ended: beyond it,
    /// rapid reset (CVE-2023-44487), GOAWAY ENHANCE_YOUR_CALM.
    max_reset_pending: usize,
    /// The per-stream window we announce.
    initial_window: u32,
    /// How much of a body its handler left unread is thrown away, and how long the client
    /// may pause while it sends it (`drain_by`).
    max_discard: u64,
    drain_gap: Duration,
    pub(crate) state: RefCell<State>,
    driver: Cell<Option<Waker>>,
    closing: Cell<bool>,
    aborted: Cell<bool>,
    /// The task ended: every stream operation fails.
    pub(crate) dead: Cell<bool>,
}

impl Conn {
    /// The largest encoded header block we keep while it arrives. A block that encodes a
    /// list within `max_header_list` is smaller than it (a literal's length prefixes take
    /// less than the 32 bytes per field the list counts); up to twice that, a block is
    /// still taken and decoded whole, so that a list somewhat over the bound gets its 431
    /// with the HPACK table in step; beyond it, the client is flooding (GOAWAY).
    fn max_block(&self) -> usize {
        self.max_header_list.saturating_mul(2)
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

    pub(crate) fn has_request_in_flight(&self) -> bool {
        !self.state.borrow().slots.is_empty()
    }

    /// Wakes the task: output to write, a slot freed, a window released.
    pub(crate) fn wake(&self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    /// The handler took `n` bytes of stream `id`'s body: the client may send as many again,
    /// on the stream (unless its body ended) and on the connection.
    pub(crate) fn release(&self, st: &mut State, id: u32, n: usize) {
        if n == 0 {
            return;
        }
        let inc = n as u32;
        if let Some(slot) = st.slots.iter_mut().find(|s| s.id == id) {
            if !slot.recv_end && !slot.reset {
                slot.recv_window += i64::from(inc);
                frame::write_window_update(&mut st.out, id, inc);
            }
        }
        st.recv_window += i64::from(inc);
        frame::write_window_update(&mut st.out, 0, inc);
        self.wake();
    }

    /// The handler's `OwnStream` is gone. The client's credit for what was never read
    /// comes back. After a complete response (`complete`) a body the client is still
    /// sending is drained (read and thrown away, `Slot::drain_by`); otherwise the slot
    /// goes, and a stream still open is reset: NO_ERROR after a complete response (RFC
    /// 9113 §8.1: the rest of the body is not wanted), else `code`.
    pub(crate) fn stream_dropped(&self, id: u32, code: u32, complete: bool) {
        let mut st = self.state.borrow_mut();
        let Some(at) = st.slots.iter().position(|s| s.id == id) else {
            return;
        };
        let slot = &mut st.slots[at];
        let unread: usize = slot.recv.iter().map(Bytes::len).sum();
        slot.recv = VecDeque::new();
        let drain = complete && slot.sent_end && !slot.recv_end && !slot.reset;
        if drain {
            slot.drain_by = Some(now() + self.drain_gap);
            slot.discarded = unread as u64;
            if unread > 0 {
                slot.recv_window += unread as i64;
                frame::write_window_update(&mut st.out, id, unread as u32);
            }
        } else {
            let closed = slot.sent_end && slot.recv_end;
            if !slot.reset && !closed {
                let code = if slot.sent_end { code::NO_ERROR } else { code };
                frame::write_rst(&mut st.out, id, code);
            }
            remove_slot(&mut st, at);
        }
        if unread > 0 {
            st.recv_window += unread as i64;
            frame::write_window_update(&mut st.out, 0, unread as u32);
        }
        drop(st);
        self.wake();
    }

    /// Resets stream `id` from our side with `code`.
    pub(crate) fn reset_stream(&self, id: u32, code: u32) {
        let mut st = self.state.borrow_mut();
        let State { slots, out, .. } = &mut *st;
        if let Some(slot) = slots.iter_mut().find(|s| s.id == id) {
            if !slot.reset {
                slot.reset = true;
                frame::write_rst(out, id, code);
                slot.wake();
            }
        }
        drop(st);
        self.wake();
    }
}

/// Runs an HTTP/2 connection on the own engine until it closes, handing each
/// request to `on_request`.
pub(crate) fn serve<'a>(
    transport: Transport,
    cfg: &'a H2Config,
    on_request: impl FnMut(OwnStream) + 'a,
    on_conn: impl FnOnce(&Rc<Conn>),
) -> impl Future<Output = ()> + 'a {
    let Transport {
        io,
        read_ahead,
        peer_addr,
        local_addr,
        ..
    } = transport;
    let now = Controller::current().now();
    let conn = Rc::new(Conn {
        peer_addr,
        local_addr,
        body_read_timeout: cfg.body_read_timeout,
        send_timeout: cfg.send_timeout,
        max_header_list: cfg.max_header_list_size as usize,
        max_headers: cfg.max_headers,
        max_send_buffer: cfg.max_send_buffer_size.max(1),
        max_streams: cfg.max_concurrent_streams as usize,
        max_malformed: cfg.max_local_error_reset_streams,
        max_reset_pending: cfg.max_pending_accept_reset_streams,
        max_discard: cfg.max_discard,
        drain_gap: cfg.body_read_timeout.min(cfg.intra_stream_timeout),
        initial_window: cfg.initial_window_size.min(frame::MAX_WINDOW as u32),
        state: RefCell::new(State {
            decoder: hpack::Decoder::new(),
            out: Vec::new(),
            flushed: 0,
            partial: read_ahead.to_vec(),
            preface_done: false,
            got_settings: false,
            slots: Vec::new(),
            last_id: 0,
            peer_initial_window: frame::DEFAULT_WINDOW,
            peer_max_frame: MAX_FRAME,
            send_window: frame::DEFAULT_WINDOW,
            recv_window: frame::DEFAULT_WINDOW,
            pending_block: None,
            n_refused_in_a_row: 0,
            n_local_resets: 0,
            goaway_debug: "",
            goaway_sent: false,
            failed: false,
            send_waiters: Vec::new(),
            idle_since: now,
        }),
        driver: Cell::new(None),
        closing: Cell::new(false),
        aborted: Cell::new(false),
        dead: Cell::new(false),
    });
    on_conn(&conn);
    {
        // The server's preface: our SETTINGS and the connection window (RFC 9113 §3.4).
        let mut st = conn.state.borrow_mut();
        frame::write_settings(
            &mut st.out,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams),
                (setting::INITIAL_WINDOW_SIZE, conn.initial_window),
                (setting::MAX_HEADER_LIST_SIZE, cfg.max_header_list_size),
                // Clients may open WebSockets (RFC 8441).
                (setting::ENABLE_CONNECT_PROTOCOL, 1),
            ],
        );
        let conn_window = i64::from(cfg.initial_connection_window_size).min(frame::MAX_WINDOW);
        if conn_window > frame::DEFAULT_WINDOW {
            frame::write_window_update(
                &mut st.out,
                0,
                (conn_window - frame::DEFAULT_WINDOW) as u32,
            );
            st.recv_window = conn_window;
        }
    }
    drive(io, conn, cfg, on_request)
}

async fn drive(
    mut io: Box<dyn Io>,
    conn: Rc<Conn>,
    cfg: &H2Config,
    mut on_request: impl FnMut(OwnStream),
) {
    let mut idle = sleep(cfg.connection_setup_timeout);
    let mut stall: Option<(usize, Sleep)> = None;
    let mut read_closed = false;
    let mut new_streams: Vec<OwnStream> = Vec::new();
    // Streams whose handlers wait for one of the `max_concurrent_streams` to end.
    let mut waiting: VecDeque<OwnStream> = VecDeque::new();
    poll_fn(|cx| {
        conn.driver.set(Some(cx.waker().clone()));
        if conn.aborted.get() {
            return Poll::Ready(());
        }
        {
            let mut st = conn.state.borrow_mut();
            if conn.closing.get() && !st.goaway_sent {
                go_away(&mut st, code::NO_ERROR);
            }
        }
        // Read and handle what came, unless the client leaves our output unread.
        let mut n_reads = 0;
        let mut held_back = false;
        while !read_closed && n_reads < READS_PER_TURN {
            {
                let st = conn.state.borrow();
                if st.failed {
                    break;
                }
                if st.out.len() >= OUT_HIGH {
                    held_back = true;
                    break;
                }
                if st.slots.len() >= 2 * conn.max_streams {
                    // A handler's end wakes the task (`stream_dropped`).
                    break;
                }
            }
            let read = read_and_handle(&conn, &mut io, cx, &mut new_streams);
            // Streams opened by what was handled go to their handlers whatever the read
            // returned (the read-ahead bytes are handled with no read at all), at most
            // `max_concurrent_streams` handlers (and drains) at once.
            waiting.extend(new_streams.drain(..));
            start_handlers(&conn, &mut waiting, &mut on_request);
            match read {
                Poll::Ready(Ok(0)) => read_closed = true,
                Poll::Ready(Ok(_)) => n_reads += 1,
                Poll::Ready(Err(e)) => {
                    tracing::debug!(peer = ?conn.peer_addr, "HTTP/2 read failed: {e}");
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        if n_reads == READS_PER_TURN {
            // More may be waiting: the next turn reads on, after the other tasks.
            cx.waker().wake_by_ref();
        }
        // A handler that ended makes room for a waiting one. The lists' room is not kept
        // by an idle connection's task.
        start_handlers(&conn, &mut waiting, &mut on_request);
        if waiting.is_empty() && waiting.capacity() > 0 {
            waiting = VecDeque::new();
        }
        if new_streams.capacity() > 0 {
            new_streams = Vec::new();
        }
        // Write what is pending.
        let mut st = conn.state.borrow_mut();
        let before = st.out.len();
        let flushed = flush(&mut io, &mut st.out, cx);
        st.flushed += (before - st.out.len()) as u64;
        match flushed {
            Poll::Ready(Err(e)) => {
                tracing::debug!(peer = ?conn.peer_addr, "HTTP/2 write failed: {e}");
                return Poll::Ready(());
            }
            Poll::Ready(Ok(())) => {
                stall = None;
                if st.slots.is_empty() {
                    // Nothing is being answered: the buffer is not kept (the point of this
                    // engine: an idle connection holds no buffer).
                    st.out = Vec::new();
                }
            }
            Poll::Pending => {
                // Stuck output: closed once the client takes nothing for send_timeout.
                let left = st.out.len();
                let timer = match &mut stall {
                    Some((at, timer)) if *at == left && left == before => timer,
                    slot => {
                        let deadline = Controller::current().now() + cfg.send_timeout;
                        &mut slot.insert((left, sleep_until(deadline))).1
                    }
                };
                if Pin::new(timer).poll(cx).is_ready() {
                    tracing::debug!(peer = ?conn.peer_addr, "HTTP/2 output not taken for send_timeout");
                    return Poll::Ready(());
                }
            }
        }
        if st.out.len() < OUT_HIGH {
            for w in st.send_waiters.drain(..) {
                w.wake();
            }
            if held_back {
                // Reading stopped for the output, which has room again: the socket is not
                // waited on (no read was tried), so the next turn reads.
                cx.waker().wake_by_ref();
            }
        }
        let out_empty = st.out.is_empty();
        if st.failed && out_empty {
            return Poll::Ready(());
        }
        if read_closed && out_empty {
            // The client closed its side: nothing it asked for can still reach it.
            return Poll::Ready(());
        }
        if st.goaway_sent && st.slots.is_empty() && out_empty {
            return Poll::Ready(());
        }
        if !st.slots.is_empty() {
            if let Some(next) = expire_drains(&mut st, Controller::current().now()) {
                idle.reset(next);
                if Pin::new(&mut idle).poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            } else if st.slots.is_empty() {
                // The last drain ended: the idle timer starts (next turn).
                cx.waker().wake_by_ref();
            }
        } else if !st.goaway_sent {
            // Before the preface the setup timeout applies, then intra_stream_timeout.
            let limit = if st.got_settings {
                cfg.intra_stream_timeout
            } else {
                cfg.connection_setup_timeout
            };
            idle.reset(st.idle_since + limit);
            if Pin::new(&mut idle).poll(cx).is_ready() {
                if !st.got_settings {
                    return Poll::Ready(());
                }
                go_away(&mut st, code::NO_ERROR);
                drop(st);
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    })
    .await;
    // Whatever still holds a stream learns that nothing more will move.
    conn.dead.set(true);
    // Handlers that never started are dropped here, with no borrow of the state held.
    drop(waiting);
    let mut st = conn.state.borrow_mut();
    for slot in &mut st.slots {
        slot.reset = true;
        slot.wake();
    }
    for w in st.send_waiters.drain(..) {
        w.wake();
    }
    st.out = Vec::new();
    st.partial = Vec::new();
}

fn now() -> Instant {
    Controller::try_current().map_or_else(Instant::now, |c| c.now())
}

/// The slot at `at` goes (its handler and any drain ended).
fn remove_slot(st: &mut State, at: usize) {
    st.slots.swap_remove(at);
    st.n_refused_in_a_row = 0;
    if st.slots.is_empty() {
        // The slots' room (a few hundred bytes) is not kept by an idle connection.
        st.slots = Vec::new();
        st.idle_since = now();
    }
}

/// Drains past their deadline end with RST_STREAM(NO_ERROR); the earliest deadline left.
fn expire_drains(st: &mut State, now: Instant) -> Option<Instant> {
    let mut next: Option<Instant> = None;
    let mut at = 0;
    while at < st.slots.len() {
        match st.slots[at].drain_by {
            Some(by) if by <= now => {
                frame::write_rst(&mut st.out, st.slots[at].id, code::NO_ERROR);
                remove_slot(st, at);
                continue;
            }
            Some(by) => next = Some(next.map_or(by, |n| n.min(by))),
            None => {}
        }
        at += 1;
    }
    next
}

/// Hands waiting streams to their handlers while fewer than `max_concurrent_streams` run.
fn start_handlers(
    conn: &Conn,
    waiting: &mut VecDeque<OwnStream>,
    on_request: &mut impl FnMut(OwnStream),
) {
    while !waiting.is_empty() {
        let n_running = conn.state.borrow().slots.len() - waiting.len();
        if n_running >= conn.max_streams {
            return;
        }
        if let Some(stream) = waiting.pop_front() {
            on_request(stream);
        }
    }
}

fn go_away(st: &mut State, code: u32) {
    if !st.goaway_sent {
        st.goaway_sent = true;
        frame::write_goaway(&mut st.out, st.last_id, code, st.goaway_debug.as_bytes());
    }
}

/// A connection error for a client that makes the server work for nothing.
fn calm_down(st: &mut State, why: &'static str) -> ConnError {
    st.goaway_debug = why;
    ConnError(code::ENHANCE_YOUR_CALM)
}

/// Writes `out` to the socket until it is empty or the socket is full.
fn flush(
    io: &mut Box<dyn Io>,
    out: &mut Vec<u8>,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    let mut written = 0;
    let result = loop {
        if written == out.len() {
            break Pin::new(&mut **io).poll_flush(cx);
        }
        match Pin::new(&mut **io).poll_write(cx, &out[written..]) {
            Poll::Ready(Ok(0)) => break Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => written += n,
            Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
            Poll::Pending => break Poll::Pending,
        }
    };
    out.drain(..written);
    result
}

/// One read into the shared buffer, and every complete frame in it handled. `Ok(0)`: EOF.
fn read_and_handle(
    conn: &Rc<Conn>,
    io: &mut Box<dyn Io>,
    cx: &mut Context<'_>,
    new_streams: &mut Vec<OwnStream>,
) -> Poll<std::io::Result<usize>> {
    SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        if buf.len() < SCRATCH_LEN {
            buf.resize(SCRATCH_LEN, 0);
        }
        let mut st = conn.state.borrow_mut();
        let kept = st.partial.len();
        buf[..kept].copy_from_slice(&st.partial);
        // Whole frames already here (the read-ahead, or frames left when the stream bound
        // stopped their handling) are handled before anything more is read.
        let waiting_frames = if st.preface_done {
            kept >= HEAD_LEN
                && kept
                    >= HEAD_LEN
                        + frame::parse_head(buf[..HEAD_LEN].try_into().expect("9 bytes")).len
        } else {
            kept >= frame::PREFACE.len()
        };
        let n = if waiting_frames {
            0
        } else {
            let mut rb = ReadBuf::new(&mut buf[kept..]);
            match Pin::new(&mut **io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(())) => rb.filled().len(),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        let input = &buf[..kept + n];
        let used = match handle_input(conn, &mut st, input, new_streams) {
            Ok(used) => used,
            Err(ConnError(code)) => {
                tracing::debug!(peer = ?conn.peer_addr, "HTTP/2 connection error {code:#x}");
                go_away(&mut st, code);
                st.failed = true;
                st.partial = Vec::new();
                return Poll::Ready(Ok(kept + n));
            }
        };
        let rest = &input[used..];
        if rest.is_empty() {
            st.partial = Vec::new();
        } else {
            st.partial.clear();
            st.partial.extend_from_slice(rest);
        }
        Poll::Ready(Ok(kept + n))
    })
}

/// Handles the preface and every whole frame at the start of `input`; returns how many
/// bytes were used.
fn handle_input(
    conn: &Rc<Conn>,
    st: &mut State,
    input: &[u8],
    new_streams: &mut Vec<OwnStream>,
) -> Result<usize, ConnError> {
    let mut at = 0;
    if !st.preface_done {
        if input.len() < frame::PREFACE.len() {
            if !frame::PREFACE.starts_with(input) {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            return Ok(0);
        }
        if &input[..frame::PREFACE.len()] != frame::PREFACE {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        st.preface_done = true;
        at = frame::PREFACE.len();
    }
    while input.len() - at >= HEAD_LEN {
        if st.slots.len() >= 2 * conn.max_streams {
            // As many streams as may be held: the rest waits (unread, in the kernel past
            // this buffer) until handlers end, as HTTP/1 stops at `max_pipelined`.
            break;
        }
        let head = frame::parse_head(input[at..at + HEAD_LEN].try_into().expect("9 bytes"));
        if head.len > MAX_FRAME {
            return Err(ConnError(code::FRAME_SIZE_ERROR));
        }
        if input.len() - at - HEAD_LEN < head.len {
            break;
        }
        let payload = &input[at + HEAD_LEN..at + HEAD_LEN + head.len];
        at += HEAD_LEN + head.len;
        on_frame(conn, st, head, payload, new_streams)?;
        if st.n_local_resets >= conn.max_malformed {
            return Err(calm_down(st, "too_many_internal_resets"));
        }
        if st.failed {
            break;
        }
    }
    Ok(at)
}

/// Handles one frame (RFC 9113 §6), by type.
fn on_frame(
    conn: &Rc<Conn>,
    st: &mut State,
    head: Head,
    payload: &[u8],
    new_streams: &mut Vec<OwnStream>,
) -> Result<(), ConnError> {
    if !st.got_settings {
        // §3.4: the preface's SETTINGS comes first.
        if head.kind != kind::SETTINGS || head.has(flag::ACK) {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        st.got_settings = true;
        st.idle_since = Controller::try_current().map_or_else(Instant::now, |c| c.now());
    }
    if let Some(pending) = &st.pending_block {
        // §6.10: nothing but the block's CONTINUATION until it ends.
        if head.kind != kind::CONTINUATION || head.stream != pending.stream {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
    }
    match head.kind {
        kind::DATA => on_data(conn, st, head, payload),
        kind::HEADERS => on_headers(conn, st, head, payload, new_streams),
        kind::CONTINUATION => on_continuation(conn, st, head, payload, new_streams),
        kind::PRIORITY => {
            // Priorities are ignored (RFC 9113 §5.3.2 deprecates them), their frame checked.
            if head.stream == 0 {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            // On an idle stream a stream error would be a RST_STREAM §6.4 forbids, and the
            // stream could still be opened after it (found by fuzz/ h2_frames): the
            // connection goes instead, as §5.4.1 allows.
            let idle = head.stream > st.last_id || head.stream % 2 == 0;
            let error = if head.len != 5 {
                code::FRAME_SIZE_ERROR
            } else if dependency(payload) == head.stream {
                code::PROTOCOL_ERROR
            } else {
                return Ok(());
            };
            if idle {
                return Err(ConnError(error));
            }
            stream_error(st, head.stream, error);
            Ok(())
        }
        kind::RST_STREAM => {
            if head.stream == 0 {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            if head.len != 4 {
                return Err(ConnError(code::FRAME_SIZE_ERROR));
            }
            if head.stream > st.last_id {
                // §5.1: RST_STREAM on an idle stream.
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            if let Some(at) = st.slots.iter().position(|s| s.id == head.stream) {
                let slot = &mut st.slots[at];
                if slot.drain_by.is_some() {
                    remove_slot(st, at);
                } else {
                    slot.reset = true;
                    slot.peer_reset = true;
                    slot.wake();
                }
            }
            // A reset stream keeps its slot until its handler ends: a client that resets
            // streams faster than their handlers end is flooding (rapid reset).
            let n_reset = st.slots.iter().filter(|s| s.peer_reset).count();
            if n_reset > conn.max_reset_pending {
                return Err(calm_down(st, "too_many_resets"));
            }
            Ok(())
        }
        kind::SETTINGS => on_settings(st, head, payload),
        kind::PUSH_PROMISE => Err(ConnError(code::PROTOCOL_ERROR)),
        kind::PING => {
            if head.stream != 0 {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            if head.len != 8 {
                return Err(ConnError(code::FRAME_SIZE_ERROR));
            }
            if !head.has(flag::ACK) {
                frame::write_ping_ack(&mut st.out, payload);
            }
            Ok(())
        }
        kind::GOAWAY => {
            if head.stream != 0 {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            // The client opens no more streams; those open finish, then we close.
            go_away(st, code::NO_ERROR);
            Ok(())
        }
        kind::WINDOW_UPDATE => on_window_update(st, head, payload),
        // §5.5: unknown frame types are ignored.
        _ => Ok(()),
    }
}

/// The stream a PRIORITY payload (or a HEADERS priority block) depends on.
fn dependency(p: &[u8]) -> u32 {
    u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff
}

/// A stream error (§5.4.2): RST_STREAM, and the stream's handler sees a reset.
fn stream_error(st: &mut State, id: u32, code: u32) {
    st.n_local_resets += 1;
    frame::write_rst(&mut st.out, id, code);
    if let Some(slot) = st.slots.iter_mut().find(|s| s.id == id) {
        slot.reset = true;
        slot.wake();
    }
}

/// The payload without its padding (§6.1, §6.2), or PROTOCOL_ERROR.
fn unpad(head: &Head, payload: &[u8]) -> Result<(usize, usize), ConnError> {
    if !head.has(flag::PADDED) {
        return Ok((0, payload.len()));
    }
    let Some(&pad) = payload.first() else {
        return Err(ConnError(code::FRAME_SIZE_ERROR));
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    Ok((1, payload.len() - pad))
}

fn on_data(conn: &Rc<Conn>, st: &mut State, head: Head, payload: &[u8]) -> Result<(), ConnError> {
    if head.stream == 0 {
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    if head.stream > st.last_id {
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    let (start, end) = unpad(&head, payload)?;
    // The whole frame counts against the windows, padding included (§6.9.1).
    let len = head.len as i64;
    if len > st.recv_window {
        return Err(ConnError(code::FLOW_CONTROL_ERROR));
    }
    st.recv_window -= len;
    let found = st.slots.iter().position(|s| s.id == head.stream);
    let Some(at) = found.filter(|&at| !st.slots[at].recv_end && !st.slots[at].reset) else {
        // A closed or half-closed (remote) stream (§5.1): STREAM_CLOSED, unless we reset
        // it ourselves and this crossed our RST_STREAM. The connection's credit comes
        // back at once, since nobody will read it.
        let ours = found.is_some_and(|at| st.slots[at].reset && !st.slots[at].peer_reset);
        if !ours {
            stream_error(st, head.stream, code::STREAM_CLOSED);
        }
        give_back(st, 0, len);
        return Ok(());
    };
    let end_stream = head.has(flag::END_STREAM);
    let slot = &mut st.slots[at];
    if len > slot.recv_window {
        give_back(st, 0, len);
        stream_error(st, head.stream, code::FLOW_CONTROL_ERROR);
        return Ok(());
    }
    if slot.drain_by.is_some() {
        // Drained: thrown away, the credit given back at once, up to max_discard.
        slot.discarded += len as u64;
        if end_stream {
            remove_slot(st, at);
        } else if slot.discarded > conn.max_discard {
            frame::write_rst(&mut st.out, head.stream, code::NO_ERROR);
            remove_slot(st, at);
        } else {
            // The stream's window is not charged for drained bytes: the update only says
            // so to the client.
            slot.drain_by = Some(now() + conn.drain_gap);
            if len > 0 {
                frame::write_window_update(&mut st.out, head.stream, len as u32);
            }
        }
        give_back(st, 0, len);
        return Ok(());
    }
    slot.recv_window -= len;
    let data = &payload[start..end];
    slot.received += data.len() as u64;
    let padding = head.len - data.len();
    if !data.is_empty() {
        slot.recv.push_back(Bytes::copy_from_slice(data));
    }
    if end_stream {
        slot.recv_end = true;
    }
    let bad_length = slot
        .expected_len
        .is_some_and(|n| slot.received > n || (end_stream && slot.received != n));
    if let Some(w) = slot.reader.take() {
        w.wake();
    }
    if bad_length {
        // §8.1.1: a body that does not match content-length is malformed.
        malformed(st, head.stream);
    }
    if padding > 0 {
        // Padding is never read by anyone: its credit comes back now.
        conn.release(st, head.stream, padding);
    }
    Ok(())
}

/// Credit for `len` bytes back to the client: on the connection (`id` 0) or a stream.
fn give_back(st: &mut State, id: u32, len: i64) {
    if len > 0 {
        if id == 0 {
            st.recv_window += len;
        } else if let Some(slot) = st.slots.iter_mut().find(|s| s.id == id) {
            slot.recv_window += len;
        }
        frame::write_window_update(&mut st.out, id, len as u32);
    }
}

/// A request malformed after its head: a stream error, and a 400 for its handler's read.
fn malformed(st: &mut State, id: u32) {
    if let Some(slot) = st.slots.iter_mut().find(|s| s.id == id) {
        slot.request_error = Some(400);
    }
    stream_error(st, id, code::PROTOCOL_ERROR);
}

fn on_headers(
    conn: &Rc<Conn>,
    st: &mut State,
    head: Head,
    payload: &[u8],
    new_streams: &mut Vec<OwnStream>,
) -> Result<(), ConnError> {
    if head.stream == 0 || head.stream % 2 == 0 {
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    let (mut start, end) = unpad(&head, payload)?;
    if head.has(flag::PRIORITY) {
        if end - start < 5 {
            return Err(ConnError(code::FRAME_SIZE_ERROR));
        }
        if dependency(&payload[start..]) == head.stream {
            // §5.3.1: a stream cannot depend on itself. A stream error would reset a
            // stream the block then opens (found by fuzz/ h2_frames); the connection goes
            // instead, as §5.4.1 allows.
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        start += 5;
    }
    if head.stream <= st.last_id && !st.slots.iter().any(|s| s.id == head.stream) {
        // §5.1: HEADERS on a closed stream.
        return Err(ConnError(code::STREAM_CLOSED));
    }
    let block = &payload[start..end];
    if block.len() > conn.max_block() {
        return Err(calm_down(st, "header block too large"));
    }
    if head.has(flag::END_HEADERS) {
        return on_block(
            conn,
            st,
            head.stream,
            head.has(flag::END_STREAM),
            block,
            new_streams,
        );
    }
    st.pending_block = Some(PendingBlock {
        stream: head.stream,
        end_stream: head.has(flag::END_STREAM),
        bytes: block.to_vec(),
        n_frames: 1,
    });
    Ok(())
}

fn on_continuation(
    conn: &Rc<Conn>,
    st: &mut State,
    head: Head,
    payload: &[u8],
    new_streams: &mut Vec<OwnStream>,
) -> Result<(), ConnError> {
    let Some(pending) = &mut st.pending_block else {
        // §6.10: a CONTINUATION without a HEADERS before it.
        return Err(ConnError(code::PROTOCOL_ERROR));
    };
    pending.n_frames += 1;
    pending.bytes.extend_from_slice(payload);
    // CONTINUATION floods: a block is bounded in bytes and in frames while it arrives.
    if pending.bytes.len() > conn.max_block() || pending.n_frames > MAX_BLOCK_FRAMES {
        return Err(calm_down(st, "header block too large"));
    }
    if !head.has(flag::END_HEADERS) {
        return Ok(());
    }
    let pending = st.pending_block.take().expect("checked above");
    on_block(
        conn,
        st,
        pending.stream,
        pending.end_stream,
        &pending.bytes,
        new_streams,
    )
}

/// A whole header block: a new request, or trailers.
fn on_block(
    conn: &Rc<Conn>,
    st: &mut State,
    id: u32,
    end_stream: bool,
    block: &[u8],
    new_streams: &mut Vec<OwnStream>,
) -> Result<(), ConnError> {
    let mut fields = Block::default();
    // The whole block is decoded even when the list is over the bound, so that the
    // dynamic table stays in step with the client's; fields past the bound are not kept.
    let decoded = st
        .decoder
        .decode(block, conn.max_header_list, |n, v| fields.push(n, v));
    let too_large = match decoded {
        Ok(()) => fields.n_regular() > conn.max_headers,
        Err(hpack::DecodeError::Compression) => return Err(ConnError(code::COMPRESSION_ERROR)),
        Err(hpack::DecodeError::TooLarge(size)) if size > 4 * conn.max_header_list => {
            // An HPACK bomb (a small block referencing a large entry many times): the
            // client is not sending requests, as the h2 crate judges at 4 × the bound.
            return Err(calm_down(st, "header list far too large"));
        }
        // Answered 431 below, as HTTP/1 and the h2 crate engine answer (RFC 9113 §8.2.3
        // lets the server refuse it; a status tells the client why).
        Err(hpack::DecodeError::TooLarge(_)) => true,
    };
    if let Some(slot) = st.slots.iter_mut().find(|s| s.id == id) {
        // Trailers: they must end the stream (§8.1).
        if slot.peer_reset {
            // §5.1: HEADERS after the client's own RST_STREAM.
            return Err(ConnError(code::STREAM_CLOSED));
        }
        if slot.drain_by.is_some() {
            // The drained body's trailers: the stream is done.
            if let Some(at) = st.slots.iter().position(|s| s.id == id) {
                remove_slot(st, at);
            }
            return Ok(());
        }
        if slot.reset {
            return Ok(());
        }
        if slot.recv_end {
            return Err(ConnError(code::STREAM_CLOSED));
        }
        if !end_stream {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        slot.recv_end = true;
        if too_large {
            // A trailer section over the bound: the body is whole, but the handler's read
            // fails with 431 (as HTTP/1's), answered if nothing went out yet.
            slot.request_error = Some(431);
            if let Some(w) = slot.reader.take() {
                w.wake();
            }
            return Ok(());
        }
        match fields.into_trailers() {
            Ok(trailers) => {
                let bad_length = slot.expected_len.is_some_and(|n| slot.received != n);
                slot.trailers = Some(trailers);
                if let Some(w) = slot.reader.take() {
                    w.wake();
                }
                if bad_length {
                    malformed(st, id);
                }
            }
            Err(why) => {
                tracing::debug!(peer = ?conn.peer_addr, "malformed HTTP/2 trailers: {why}");
                malformed(st, id);
            }
        }
        return Ok(());
    }
    // A new stream: identifiers only grow (§5.1.1).
    if id <= st.last_id {
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    st.last_id = id;
    if st.goaway_sent {
        // After GOAWAY new streams are ignored (§6.8); the client retries elsewhere.
        return Ok(());
    }
    // The client may have max_concurrent_streams open (§5.1.2); a stream it sees closed
    // may still hold its slot while its handler runs, so slots may reach twice that
    // (the handlers beyond the bound wait, `drive`'s queue).
    let n_open = st.slots.iter().filter(|s| s.is_open()).count();
    if n_open >= conn.max_streams || st.slots.len() >= 2 * conn.max_streams {
        st.n_refused_in_a_row += 1;
        if st.n_refused_in_a_row > MAX_REFUSED_IN_A_ROW {
            return Err(calm_down(st, "too_many_refused_streams"));
        }
        frame::write_rst(&mut st.out, id, code::REFUSED_STREAM);
        return Ok(());
    }
    if too_large {
        answer_431(conn, st, id, end_stream);
        return Ok(());
    }
    let headers = match fields.into_request() {
        Ok(headers) => headers,
        Err(why) => {
            tracing::debug!(peer = ?conn.peer_addr, "malformed HTTP/2 request: {why}");
            stream_error(st, id, code::PROTOCOL_ERROR);
            return Ok(());
        }
    };
    let expected_len = match headers.get_bytes("content-length") {
        None => None,
        Some(v) => match std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(n) => Some(n),
            None => {
                stream_error(st, id, code::PROTOCOL_ERROR);
                return Ok(());
            }
        },
    };
    if end_stream && expected_len.is_some_and(|n| n != 0) {
        stream_error(st, id, code::PROTOCOL_ERROR);
        return Ok(());
    }
    st.slots.push(Slot {
        id,
        recv: VecDeque::new(),
        recv_end: end_stream,
        trailers: None,
        recv_window: i64::from(conn.initial_window),
        expected_len,
        received: 0,
        send_window: st.peer_initial_window,
        sent_end: false,
        reset: false,
        peer_reset: false,
        request_error: None,
        unflushed: 0,
        out_end: 0,
        drain_by: None,
        discarded: 0,
        reader: None,
        writer: None,
    });
    new_streams.push(OwnStream::new(conn.clone(), id, headers, end_stream));
    Ok(())
}

/// A request whose header list is over the bound: `431` with END_STREAM and no handler.
/// A body the client goes on sending is drained as after any early response (`on_data`),
/// its credit given back. Counted with the stream errors (`max_local_error_reset_streams`):
/// a client sending such requests in a loop makes the server work for nothing.
fn answer_431(conn: &Conn, st: &mut State, id: u32, end_stream: bool) {
    st.n_local_resets += 1;
    let mut block = Vec::with_capacity(8);
    hpack::encode_status(&mut block, 431);
    frame::write_header_block(&mut st.out, id, &block, true, st.peer_max_frame);
    if end_stream {
        return;
    }
    st.slots.push(Slot {
        id,
        recv: VecDeque::new(),
        recv_end: false,
        trailers: None,
        recv_window: i64::from(conn.initial_window),
        expected_len: None,
        received: 0,
        send_window: st.peer_initial_window,
        sent_end: true,
        unflushed: 0,
        out_end: 0,
        reset: false,
        peer_reset: false,
        request_error: None,
        drain_by: Some(now() + conn.drain_gap),
        discarded: 0,
        reader: None,
        writer: None,
    });
}

fn on_settings(st: &mut State, head: Head, payload: &[u8]) -> Result<(), ConnError> {
    if head.stream != 0 {
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    if head.has(flag::ACK) {
        if head.len != 0 {
            return Err(ConnError(code::FRAME_SIZE_ERROR));
        }
        return Ok(());
    }
    if head.len % 6 != 0 {
        return Err(ConnError(code::FRAME_SIZE_ERROR));
    }
    for s in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([s[0], s[1]]);
        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
        match id {
            setting::ENABLE_PUSH if value > 1 => return Err(ConnError(code::PROTOCOL_ERROR)),
            setting::INITIAL_WINDOW_SIZE => {
                let value = i64::from(value);
                if value > frame::MAX_WINDOW {
                    return Err(ConnError(code::FLOW_CONTROL_ERROR));
                }
                // §6.9.2: every stream's window moves by the difference.
                let delta = value - st.peer_initial_window;
                st.peer_initial_window = value;
                for slot in &mut st.slots {
                    slot.send_window += delta;
                    if slot.send_window > frame::MAX_WINDOW {
                        return Err(ConnError(code::FLOW_CONTROL_ERROR));
                    }
                    if delta > 0 {
                        if let Some(w) = slot.writer.take() {
                            w.wake();
                        }
                    }
                }
            }
            setting::MAX_FRAME_SIZE => {
                if !(MAX_FRAME as u32..=(1 << 24) - 1).contains(&value) {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                }
                st.peer_max_frame = value as usize;
            }
            // The table size only bounds an encoder table we never use; the others
            // limit what a client sends, and we send no requests.
            setting::HEADER_TABLE_SIZE
            | setting::MAX_CONCURRENT_STREAMS
            | setting::MAX_HEADER_LIST_SIZE => {}
            _ => {}
        }
    }
    frame::write_settings_ack(&mut st.out);
    Ok(())
}

fn on_window_update(st: &mut State, head: Head, payload: &[u8]) -> Result<(), ConnError> {
    if head.len != 4 {
        return Err(ConnError(code::FRAME_SIZE_ERROR));
    }
    let inc = i64::from(
        u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
    );
    if head.stream == 0 {
        if inc == 0 {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        st.send_window += inc;
        if st.send_window > frame::MAX_WINDOW {
            return Err(ConnError(code::FLOW_CONTROL_ERROR));
        }
        for w in st.send_waiters.drain(..) {
            w.wake();
        }
        return Ok(());
    }
    if head.stream > st.last_id {
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    let Some(slot) = st.slots.iter_mut().find(|s| s.id == head.stream) else {
        // A closed stream: credit that arrived late is ignored (§6.9).
        return Ok(());
    };
    if slot.reset {
        return Ok(());
    }
    if inc == 0 {
        // §6.9: a stream error would do, but a client that sends it is broken or probing;
        // the connection goes, as on the h2 crate.
        return Err(ConnError(code::PROTOCOL_ERROR));
    }
    slot.send_window += inc;
    if slot.send_window > frame::MAX_WINDOW {
        stream_error(st, head.stream, code::FLOW_CONTROL_ERROR);
        return Ok(());
    }
    if let Some(w) = slot.writer.take() {
        w.wake();
    }
    Ok(())
}
