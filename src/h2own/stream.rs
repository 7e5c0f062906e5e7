//! One exchange on the own engine: the same operations as `h2::H2Stream`, so
//! that `Stream` offers one API whichever engine runs the connection.
//!
//! The stream is a handle (connection, identifier): its protocol state is the
//! connection's `Slot`, which lives as long as this handle. Reading takes the DATA the
//! connection queued and gives the client that much credit back; writing encodes into
//! the connection's output and waits, for `send_timeout` at most, for credit (the
//! stream's and the connection's windows) and for room in the output.

use bytes::Bytes;
use std::{
    cell::Cell,
    future::poll_fn,
    io,
    net::SocketAddr,
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    conn::Conn,
    frame::{self, code},
    hpack,
};
use crate::{
    error::{Error, Result},
    headers::Headers,
    rt::timeout,
    stream_common::{Common, Finish, Outcome, Progress},
    upgrade::Upgraded,
};

/// Output held for the socket above which a writing stream waits (as the connection's
/// own bound, `conn::OUT_HIGH`); a stream's own share is bounded by
/// `Conn::max_send_buffer` too.
const OUT_ROOM: usize = 64 * 1024;

/// Where the response is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resp {
    NotStarted,
    /// The head went out without END_STREAM: DATA and trailers may follow.
    Body,
    Done,
    /// Reset by us.
    Reset,
    /// The stream became a tunnel (extended CONNECT) owned by the handler.
    Tunnel,
}

/// The own engine's side of a [`Stream`](crate::Stream).
pub(crate) struct OwnStream {
    conn: Rc<Conn>,
    id: u32,
    headers: Headers,
    resp: Cell<Resp>,
    is_head: bool,
    /// The client sent `expect: 100-continue` and no response went out yet.
    continue_pending: Cell<bool>,
    common: Common,
}

impl OwnStream {
    pub(crate) fn new(conn: Rc<Conn>, id: u32, headers: Headers, ended: bool) -> OwnStream {
        let expects_continue = headers
            .get("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
        OwnStream {
            is_head: headers.get(":method") == Some("HEAD"),
            continue_pending: Cell::new(expects_continue && !ended),
            conn,
            id,
            headers,
            resp: Cell::new(Resp::NotStarted),
            common: Common::default(),
        }
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn headers(&self) -> &Headers {
        &self.headers
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.peer_addr
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.conn.local_addr
    }

    pub(crate) fn body_read_timeout(&self) -> Duration {
        self.conn.body_read_timeout
    }

    pub(crate) fn common(&self) -> &Common {
        &self.common
    }

    // ===== reading =====

    pub(crate) fn body_timed_out(&self) {
        self.common.set_peer_error(408);
    }

    pub(crate) async fn get_next_chunk(&self) -> Result<Option<Bytes>> {
        if let Some(status) = self.common.peer_error() {
            return Err(Error::protocol(
                status,
                "the request body was not received whole",
            ));
        }
        if self.continue_pending.replace(false) && self.resp.get() == Resp::NotStarted {
            // RFC 9110 §10.1.1: the client may wait for 100 (Continue).
            self.write_continue().await?;
        }
        poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The next piece of the body, as the connection queued it.
    fn poll_chunk(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>>> {
        let mut st = self.conn.state.borrow_mut();
        let Some(slot) = st.slots.iter_mut().find(|s| s.id == self.id) else {
            return Poll::Ready(Err(Error::closed("the stream was reset")));
        };
        if let Some(data) = slot.recv.pop_front() {
            self.conn.release(&mut st, self.id, data.len());
            return Poll::Ready(Ok(Some(data)));
        }
        if let Some(status) = slot.request_error {
            // RFC 9113 §8.1.1: the client's fault, answered 400 (431 for trailers over the
            // bound) if nothing went out.
            self.common.set_peer_error(status);
            let why = if status == 431 {
                "a trailer section over the header list bound"
            } else {
                "a malformed request body (content-length or trailers)"
            };
            return Poll::Ready(Err(Error::protocol(status, why)));
        }
        if slot.reset || self.conn.dead.get() {
            return Poll::Ready(Err(Error::closed("the stream was reset")));
        }
        if slot.recv_end {
            let trailers = slot.trailers.take();
            if trailers.is_some() {
                self.common.set_trailers(trailers);
            }
            return Poll::Ready(Ok(None));
        }
        slot.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Writes what the windows and the output's room allow of `rest` as DATA (all of it
    /// with END_STREAM when `end_stream` and it fits), or END_STREAM alone for an empty
    /// `rest`; how many bytes went.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        rest: &[u8],
        end_stream: bool,
    ) -> Poll<Result<usize>> {
        let mut st = self.conn.state.borrow_mut();
        let st = &mut *st;
        let Some(slot) = st.slots.iter_mut().find(|s| s.id == self.id) else {
            return Poll::Ready(Err(Error::closed("the stream was reset")));
        };
        if slot.reset || self.conn.dead.get() {
            return Poll::Ready(Err(Error::closed("the stream was reset")));
        }
        if rest.is_empty() {
            // END_STREAM alone: no credit needed.
            frame::write_data(&mut st.out, self.id, &[], true);
            slot.sent_end = true;
            self.conn.wake();
            return Poll::Ready(Ok(0));
        }
        if st.flushed >= slot.out_end {
            // The socket took everything up to this stream's last frame.
            slot.unflushed = 0;
        }
        let max_buffer = self.conn.max_send_buffer;
        if st.out.len() >= OUT_ROOM || st.send_window <= 0 {
            st.send_waiters.push(cx.waker().clone());
            self.conn.wake();
            return Poll::Pending;
        }
        if slot.unflushed >= max_buffer {
            // Woken when the task has written output. The task needs no wake: the output
            // holds this stream's bytes, so it is waiting for the socket already.
            st.send_waiters.push(cx.waker().clone());
            return Poll::Pending;
        }
        if slot.send_window <= 0 {
            slot.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        // Within the windows and one frame, and within both output bounds: the
        // connection's (`OUT_ROOM`) and the stream's (`max_send_buffer`), so that a
        // client announcing a large frame size and window cannot make one write buffer
        // megabytes.
        let n = (rest.len() as i64)
            .min(slot.send_window)
            .min(st.send_window)
            .min(st.peer_max_frame as i64)
            .min((OUT_ROOM - st.out.len()) as i64)
            .min((max_buffer - slot.unflushed) as i64) as usize;
        let last = end_stream && n == rest.len();
        frame::write_data(&mut st.out, self.id, &rest[..n], last);
        slot.send_window -= n as i64;
        st.send_window -= n as i64;
        slot.unflushed += n;
        slot.out_end = st.flushed + st.out.len() as u64;
        slot.sent_end |= last;
        self.conn.wake();
        Poll::Ready(Ok(n))
    }

    // ===== writing =====

    pub(crate) async fn write_headers(&self, headers: &Headers, end_stream: bool) -> Result<()> {
        let status = headers.status().transpose()?;
        if self.resp.get() == Resp::Body {
            // Headers after the body are trailers (lua-http's write_headers semantics).
            if !end_stream {
                return Err(Error::usage("trailers must end the stream"));
            }
            let mut block = Vec::new();
            encode_fields(&mut block, headers);
            self.send_block(&block, true)?;
            self.resp.set(Resp::Done);
            return Ok(());
        }
        let Some(status) = status else {
            return Err(Error::usage("response headers need a :status"));
        };
        match self.resp.get() {
            Resp::NotStarted => {}
            Resp::Reset => return Err(Error::closed("the stream was reset")),
            _ => return Err(Error::usage("the response already ended")),
        }
        if !(100..1000).contains(&status) {
            return Err(Error::usage("invalid :status"));
        }
        if status == 101 {
            return Err(Error::usage("101 does not exist in HTTP/2"));
        }
        let informational = status < 200;
        let mut block = Vec::with_capacity(64);
        hpack::encode_status(&mut block, status);
        encode_fields(&mut block, headers);
        if !informational && !headers.has("date") {
            hpack::encode_date(&mut block);
        }
        let end_stream = end_stream && !informational;
        self.send_block(&block, end_stream)?;
        if !informational {
            self.continue_pending.set(false);
            self.resp
                .set(if end_stream { Resp::Done } else { Resp::Body });
        }
        Ok(())
    }

    /// A header block onto the connection's output.
    fn send_block(&self, block: &[u8], end_stream: bool) -> Result<()> {
        let mut st = self.conn.state.borrow_mut();
        let max_frame = st.peer_max_frame;
        let st = &mut *st;
        let Some(slot) = st.slots.iter_mut().find(|s| s.id == self.id) else {
            return Err(Error::closed("the stream was reset"));
        };
        if slot.reset || self.conn.dead.get() {
            return Err(Error::closed("the stream was reset"));
        }
        frame::write_header_block(&mut st.out, self.id, block, end_stream, max_frame);
        if end_stream {
            slot.sent_end = true;
        }
        self.conn.wake();
        Ok(())
    }

    pub(crate) async fn write_continue(&self) -> Result<()> {
        let mut h = Headers::new();
        h.append(":status", "100");
        self.write_headers(&h, false).await
    }

    pub(crate) async fn write_chunk(&self, data: &[u8], end_stream: bool) -> Result<()> {
        match self.resp.get() {
            Resp::NotStarted => {
                return Err(Error::usage("write_headers must come before the body"))
            }
            Resp::Done | Resp::Tunnel => return Err(Error::usage("the response already ended")),
            Resp::Reset => return Err(Error::closed("the stream was reset")),
            Resp::Body => {}
        }
        // A HEAD response carries no DATA; its END_STREAM still has to go out.
        let mut rest = if self.is_head { &[][..] } else { data };
        if rest.is_empty() && !end_stream {
            return Ok(());
        }
        loop {
            let sending = poll_fn(|cx| self.poll_send(cx, rest, end_stream));
            let Ok(sent) = timeout(self.conn.send_timeout, sending).await else {
                // CANCEL, as the h2 engine: the client took nothing for send_timeout.
                self.reset(code::CANCEL);
                return Err(Error::timeout(
                    "sending the body: the client took nothing for send_timeout",
                ));
            };
            rest = &rest[sent?..];
            if rest.is_empty() {
                if end_stream {
                    self.resp.set(Resp::Done);
                }
                return Ok(());
            }
        }
    }

    fn reset(&self, code: u32) {
        self.conn.reset_stream(self.id, code);
        self.resp.set(Resp::Reset);
    }

    /// Turns the stream into a byte tunnel after a `2xx` answer to an extended CONNECT
    /// (RFC 8441), as `h2::H2Stream::take_tunnel`. The tunnel holds the stream, so the
    /// slot lives until both the handler and the tunnel are done.
    pub(crate) fn take_tunnel(self: &Rc<Self>) -> Result<Upgraded> {
        if self.headers.get(":method") != Some("CONNECT") {
            return Err(Error::usage("only a CONNECT stream can become a tunnel"));
        }
        if self.resp.get() != Resp::Body {
            return Err(Error::usage(
                "answer the CONNECT with a 2xx head (not ended) first",
            ));
        }
        self.resp.set(Resp::Tunnel);
        let tunnel = OwnTunnel {
            stream: self.clone(),
            pending: Bytes::new(),
        };
        Ok(Upgraded::new(Box::new(tunnel), Bytes::new()))
    }

    // ===== lifecycle =====

    /// Ends the exchange after the handler returned, by the shared finish policy
    /// (`stream_common.rs`), as `h2::H2Stream::finish` does.
    pub(crate) async fn finish(&self, outcome: Outcome) {
        if self.common.mark_finished() {
            return;
        }
        let progress = match self.resp.get() {
            Resp::NotStarted => Progress::NotStarted,
            Resp::Body => Progress::BodyOpen,
            _ => Progress::Ended,
        };
        match self.common.finish_action(progress, outcome) {
            Finish::Answer(head, body) => {
                if self.write_headers(&head, false).await.is_ok() {
                    let _ = self.write_chunk(body.as_bytes(), true).await;
                }
            }
            Finish::EndBody => {
                let _ = self.write_chunk(&[], true).await;
            }
            Finish::Abort => self.reset(code::INTERNAL_ERROR),
            Finish::Nothing => {}
        }
    }
}

impl Drop for OwnStream {
    fn drop(&mut self) {
        let code = if self.common.is_finished() {
            code::CANCEL
        } else {
            code::INTERNAL_ERROR
        };
        // A client waiting for 100 (Continue) it never got is not sending the body: no
        // drain for it (RFC 9110 §10.1.1).
        let complete = self.common.is_finished()
            && self.resp.get() == Resp::Done
            && !self.continue_pending.get();
        self.conn.stream_dropped(self.id, code, complete);
    }
}

/// A response's regular fields, in order: pseudo-headers and connection-specific fields
/// (RFC 9113 §8.2.2 forbids them) left out.
fn encode_fields(block: &mut Vec<u8>, headers: &Headers) {
    for field in headers {
        let name = field.name_bytes();
        if name.first() == Some(&b':')
            || matches!(
                name,
                b"connection"
                    | b"keep-alive"
                    | b"proxy-connection"
                    | b"transfer-encoding"
                    | b"upgrade"
            )
        {
            continue;
        }
        hpack::encode(block, name, field.value_bytes(), field.never_index());
    }
}

/// One stream as a byte stream after an extended CONNECT: DATA in are reads (credit
/// given back as they are taken), writes go out as DATA within the windows, shutdown
/// ends the stream.
struct OwnTunnel {
    stream: Rc<OwnStream>,
    /// The rest of a DATA frame the reader's buffer could not take.
    pending: Bytes,
}

fn tunnel_error(e: Error) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, e)
}

impl AsyncRead for OwnTunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            match ready!(self.stream.poll_chunk(cx)) {
                Ok(Some(data)) => self.pending = data,
                Ok(None) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(tunnel_error(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for OwnTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.stream.poll_send(cx, buf, false).map_err(tunnel_error)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What was written is in the connection's output; its task writes it.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream
            .poll_send(cx, &[], true)
            .map(|r| r.map(|_| ()).map_err(tunnel_error))
    }
}

impl crate::transport::Io for OwnTunnel {}
