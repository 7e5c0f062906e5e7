//! One HTTP/1 request/response exchange (lua-http's `h1_stream`): reading the request body
//! from the connection when it is this stream's turn to read, and writing the response when
//! it is its turn to write.
//!
//! Response states, in order (no state is ever left backwards):
//!
//! ```text
//!  NotStarted ──write_headers(end=false)──▶ HeadPending ──first write_chunk / yield──▶ Body
//!      │                                        │                                     │
//!      └──────────write_headers(end=true)───────┴──write_chunk(end=true)──────────────┴──▶ Done
//!  NotStarted / HeadPending ──write_headers(101)──▶ Upgraded
//! ```
//!
//! A head is held back until the first body write so that a body written whole gets a
//! `content-length`; if the handler yields first, the head goes out with chunked framing.

use bytes::{BufMut, Bytes, BytesMut};
use std::{
    cell::RefCell,
    fs::File,
    future::poll_fn,
    net::SocketAddr,
    rc::Rc,
    task::{ready, Context, Poll},
};

use super::{
    body::{encode_chunk_header, encode_last_chunk, Decoded},
    conn::{ConnState, H1Conn},
    encode::{head_end, head_start, informational_head, Framing, HeadFacts},
    parse::RequestHead,
    pool,
};
use crate::{
    error::{Error, Result},
    headers::Headers,
    rt::timeout,
    stream_common::{Common, Finish, Outcome, Progress},
    upgrade::Upgraded,
};

/// The most one sendfile(2) call is asked for: large enough to fill any socket buffer,
/// small enough that the send timeout sees progress.
const SENDFILE_MAX: usize = 1 << 20;

/// Where the response is.
#[derive(Debug)]
enum Resp {
    NotStarted,
    /// `write_headers(.., false)` was called; the head is not on the wire yet. Its status
    /// line and fields are already encoded in `start` (a buffer from the thread's pool:
    /// no allocation, and no copy of the handler's `Headers` kept), waiting for the
    /// framing.
    HeadPending {
        start: BytesMut,
        facts: HeadFacts,
    },
    /// The head is written; the body goes out with `framing`. `remaining` counts down a
    /// declared `content-length`.
    Body {
        framing: Framing,
        remaining: Option<u64>,
    },
    Done,
    /// A `101` went out: the connection belongs to this stream's handler.
    Upgraded,
}

/// The HTTP/1 side of a [`Stream`](crate::Stream).
pub(crate) struct H1Stream {
    conn: Rc<H1Conn>,
    seq: u64,
    head: RequestHead,
    resp: RefCell<Resp>,
    common: Common,
}

impl H1Stream {
    pub(crate) fn new(conn: Rc<H1Conn>, seq: u64, head: RequestHead) -> H1Stream {
        H1Stream {
            conn,
            seq,
            head,
            resp: RefCell::new(Resp::NotStarted),
            common: Common::default(),
        }
    }

    pub(crate) fn headers(&self) -> &Headers {
        &self.head.headers
    }

    pub(crate) fn version(&self) -> http::Version {
        self.head.version
    }

    pub(crate) fn peer_addr(&self) -> Option<SocketAddr> {
        self.conn.peer_addr
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.conn.local_addr
    }

    pub(crate) fn common(&self) -> &Common {
        &self.common
    }

    pub(crate) fn body_read_timeout(&self) -> std::time::Duration {
        self.conn.body_read_timeout()
    }

    /// The client stopped sending this stream's body: it is answered 408 if unanswered,
    /// and the connection closes after the response rather than wait for the rest.
    pub(crate) fn body_timed_out(&self) {
        self.conn.st.borrow_mut().end_body(self.seq, false);
        self.common.set_peer_error(408);
    }

    fn is_head_request(&self) -> bool {
        self.head.is_head
    }

    // ===== reading =====

    /// The next piece of the request body, `None` at its end.
    pub(crate) fn poll_next_chunk(&self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>>> {
        if let Some(status) = self.common.peer_error() {
            // The body was given up (malformed, or it stopped arriving): a later read must
            // not look like its end, or a handler that went on would take a part for the
            // whole.
            return Poll::Ready(Err(Error::protocol(
                status,
                "the request body was not received whole",
            )));
        }
        let mut st = self.conn.st.borrow_mut();
        if !st.reads_body(self.seq) {
            return Poll::Ready(Ok(None));
        }
        if st.continue_pending(self.seq) {
            // RFC 9110 §10.1.1: the client waits for 100 (Continue) before sending the
            // body; send it once the handler shows it wants the body, in response order.
            if matches!(
                *self.resp.borrow(),
                Resp::NotStarted | Resp::HeadPending { .. }
            ) {
                ready!(st.poll_turn(self.seq, cx))?;
                st.out().put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                st.flush_now()?;
            }
            st.continue_sent(self.seq);
        }
        loop {
            let Some(decoded) = st.decode_body(self.seq) else {
                return Poll::Ready(Ok(None));
            };
            match decoded {
                Ok(Decoded::Data(data)) => return Poll::Ready(Ok(Some(data))),
                Ok(Decoded::Done { trailers }) => {
                    self.common.set_trailers(trailers);
                    st.end_body(self.seq, true);
                    return Poll::Ready(Ok(None));
                }
                Err(e) => {
                    st.end_body(self.seq, false);
                    self.common.set_peer_error(e.status());
                    return Poll::Ready(Err(Error::protocol(e.status(), e.message())));
                }
                Ok(Decoded::NeedMore) => match st.poll_fill(cx) {
                    Poll::Ready(Ok(0)) => {
                        st.end_body(self.seq, false);
                        return Poll::Ready(Err(Error::closed("peer closed in the request body")));
                    }
                    Poll::Ready(Ok(_)) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::peer(e))),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }

    // ===== writing =====

    /// Waits until every earlier response on the connection is written.
    async fn my_turn(&self) -> Result<()> {
        poll_fn(|cx| self.conn.st.borrow_mut().poll_turn(self.seq, cx)).await
    }

    /// Waits until the write buffer has room.
    async fn room(&self) -> Result<()> {
        let high = self.conn.limits().write_buffer;
        poll_fn(|cx| self.conn.st.borrow_mut().poll_room(high, cx)).await
    }

    pub(crate) async fn write_headers(&self, headers: &Headers, end_stream: bool) -> Result<()> {
        // One look-up of `:status` for both questions: its absence after the head makes
        // these trailers.
        let status = match headers.status() {
            Some(status) => status?,
            None if matches!(*self.resp.borrow(), Resp::Body { .. }) => {
                return self.write_trailers(headers, end_stream);
            }
            None => return Err(Error::usage("response headers need a :status")),
        };
        if !matches!(*self.resp.borrow(), Resp::NotStarted) {
            return Err(Error::usage("response headers were already written"));
        }
        if (100..200).contains(&status) {
            if self.head.version == http::Version::HTTP_10 {
                // RFC 9110 §15.2: a server MUST NOT send a 1xx response to an HTTP/1.0
                // client. Interim responses are advisory and left out; a protocol switch
                // cannot be.
                if status == 101 {
                    return Err(Error::usage("an HTTP/1.0 client cannot switch protocols"));
                }
                return Ok(());
            }
            self.my_turn().await?;
            let mut st = self.conn.st.borrow_mut();
            informational_head(st.out(), status, headers);
            if status == 101 {
                *self.resp.borrow_mut() = Resp::Upgraded;
            }
            return st.flush_now();
        }
        let mut start = pool::take();
        let facts = head_start(&mut start, status, headers, self.conn.limits().http10_only)
            .map_err(|_| Error::usage("invalid content-length in response headers"))?;
        *self.resp.borrow_mut() = Resp::HeadPending { start, facts };
        if end_stream {
            self.write_chunk(&[], true).await?;
        }
        Ok(())
    }

    /// Headers after the body are trailers (lua-http's `write_headers` semantics): they end
    /// a chunked body; other framings cannot carry them, so the body just ends.
    fn write_trailers(&self, trailers: &Headers, end_stream: bool) -> Result<()> {
        if !end_stream {
            return Err(Error::usage("trailers must end the stream"));
        }
        let resp = self.resp.borrow();
        let Resp::Body { framing, remaining } = &*resp else {
            return Ok(());
        };
        if *framing == Framing::Chunked {
            let mut st = self.conn.st.borrow_mut();
            encode_last_chunk(st.out(), Some(trailers));
            drop(resp);
            self.end_response(&mut st);
            return Ok(());
        }
        if remaining.is_some_and(|n| n > 0) {
            return Err(Error::usage(
                "trailers before the declared body length was written",
            ));
        }
        drop(resp);
        self.put_body(&[], true)
    }

    pub(crate) async fn write_continue(&self) -> Result<()> {
        if !matches!(
            *self.resp.borrow(),
            Resp::NotStarted | Resp::HeadPending { .. }
        ) {
            return Err(Error::usage("100 Continue after the final response head"));
        }
        if self.head.version == http::Version::HTTP_10 {
            // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client (it sends no `Expect` either).
            return Ok(());
        }
        self.my_turn().await?;
        let mut st = self.conn.st.borrow_mut();
        st.out().put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        st.continue_sent(self.seq);
        st.flush_now()
    }

    pub(crate) async fn write_chunk(&self, data: &[u8], end_stream: bool) -> Result<()> {
        self.check_writable()?;
        if matches!(*self.resp.borrow(), Resp::HeadPending { .. }) {
            self.my_turn().await?;
            let known = end_stream.then_some(data.len() as u64);
            self.send_head(known)?;
        } else if self.conn.st.borrow().is_closed() {
            return Err(Error::closed("connection closed"));
        }
        self.put_body(data, end_stream)?;
        if self.conn.st.borrow_mut().out().len() >= self.conn.limits().write_buffer {
            self.room().await?;
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset` as the rest of the body with sendfile(2),
    /// when the connection is a plain socket and the body is length- or close-delimited.
    /// `Ok(false)`: no byte of the file was sent (TLS, chunked framing) — the head may
    /// have been — and the caller writes the body by copying.
    pub(crate) async fn send_file(&self, file: &File, offset: u64, len: u64) -> Result<bool> {
        self.check_writable()?;
        if matches!(*self.resp.borrow(), Resp::HeadPending { .. }) {
            self.my_turn().await?;
            self.send_head(Some(len))?;
        }
        let no_body = match &*self.resp.borrow() {
            Resp::Body {
                framing: Framing::NoBody,
                ..
            } => true,
            Resp::Body {
                framing: Framing::Close,
                ..
            } => false,
            Resp::Body {
                framing: Framing::Length(_),
                remaining,
            } => {
                if remaining.unwrap_or(0) < len {
                    return Err(Error::usage("body longer than its content-length"));
                }
                false
            }
            // Chunked framing (the handler asked for it): copied by the caller.
            _ => return Ok(false),
        };
        if no_body {
            self.put_body(&[], true)?;
            return Ok(true);
        }
        // The head (and whatever precedes it) must be on the wire before the file.
        self.drained().await?;
        let (mut pos, end) = (offset, offset + len);
        while pos < end {
            let want = usize::try_from(end - pos)
                .unwrap_or(usize::MAX)
                .min(SENDFILE_MAX);
            let sent = timeout(
                self.conn.send_timeout(),
                poll_fn(|cx| {
                    self.conn
                        .st
                        .borrow_mut()
                        .poll_sendfile(cx, file, &mut pos, want)
                }),
            )
            .await;
            let n = match sent {
                Ok(Ok(Some(n))) => n as u64,
                Ok(Ok(None)) => return Ok(false),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.conn.st.borrow_mut().cut();
                    return Err(Error::timeout("the client stopped reading"));
                }
            };
            if n == 0 {
                // The file shrank: the client would wait for bytes that never come.
                let mut st = self.conn.st.borrow_mut();
                self.end_response(&mut st);
                st.cut();
                return Err(Error::usage("file shorter than the length given"));
            }
            if let Resp::Body {
                remaining: Some(left),
                ..
            } = &mut *self.resp.borrow_mut()
            {
                *left -= n;
            }
        }
        self.put_body(&[], true)?;
        Ok(true)
    }

    /// The errors of writing a body in the wrong state.
    fn check_writable(&self) -> Result<()> {
        match &*self.resp.borrow() {
            Resp::HeadPending { .. } | Resp::Body { .. } => Ok(()),
            Resp::NotStarted => Err(Error::usage("write_headers must come before the body")),
            Resp::Done => Err(Error::usage("the response already ended")),
            Resp::Upgraded => Err(Error::usage("the connection was upgraded")),
        }
    }

    /// Waits until every buffered byte is written.
    async fn drained(&self) -> Result<()> {
        poll_fn(|cx| self.conn.st.borrow_mut().poll_drained(cx)).await
    }

    /// Writes the pending head. `known_length` is the whole body's length when the handler
    /// is writing it in one piece.
    fn send_head(&self, known_length: Option<u64>) -> Result<()> {
        let Resp::HeadPending { start, facts } =
            std::mem::replace(&mut *self.resp.borrow_mut(), Resp::NotStarted)
        else {
            return Ok(());
        };
        let (status, declared, wants_chunked) = (facts.status, facts.declared, facts.wants_chunked);
        let http10 = self.head.version == http::Version::HTTP_10;
        let no_body = status == 204 || status == 304 || self.is_head_request();
        let framing = if no_body {
            Framing::NoBody
        } else if let (Some(n), false) = (declared.or(known_length), wants_chunked) {
            Framing::Length(n)
        } else if http10 {
            Framing::Close
        } else {
            Framing::Chunked
        };
        let mut st = self.conn.st.borrow_mut();
        if framing == Framing::Close {
            st.close_after_responses();
        }
        // A response without a body may announce the length a GET would have had
        // (RFC 9110 §8.6): the handler's own `content-length`, or for HEAD the length of a
        // body written whole. An empty end (`write_headers(h, true)`, lua-http's HEAD
        // idiom) says nothing about the GET's length, so no `content-length: 0`.
        let head_framing = match (framing, declared, known_length) {
            (Framing::NoBody, Some(n), _) => Framing::Length(n),
            (Framing::NoBody, None, Some(n)) if n > 0 && self.is_head_request() => {
                Framing::Length(n)
            }
            (f, _, _) => f,
        };
        let keep_alive = st.keep_alive();
        let out = st.head_out(start);
        head_end(out, &facts, head_framing, keep_alive, http10);
        let remaining = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        *self.resp.borrow_mut() = Resp::Body { framing, remaining };
        Ok(())
    }

    fn put_body(&self, data: &[u8], end_stream: bool) -> Result<()> {
        let mut resp = self.resp.borrow_mut();
        let Resp::Body { framing, remaining } = &mut *resp else {
            return Ok(());
        };
        let mut st = self.conn.st.borrow_mut();
        let out = st.out();
        match framing {
            Framing::NoBody => {}
            Framing::Close => out.put_slice(data),
            Framing::Chunked => {
                if !data.is_empty() {
                    encode_chunk_header(out, data.len());
                    out.put_slice(data);
                    out.put_slice(b"\r\n");
                }
                if end_stream {
                    encode_last_chunk(out, None);
                }
            }
            Framing::Length(_) => {
                let left = remaining.unwrap_or(0);
                if data.len() as u64 > left {
                    return Err(Error::usage("body longer than its content-length"));
                }
                out.put_slice(data);
                *remaining = Some(left - data.len() as u64);
                if end_stream && left != data.len() as u64 {
                    // The client would wait for bytes that never come: what was written
                    // goes out, then the connection closes.
                    drop(resp);
                    self.end_response(&mut st);
                    let _ = st.flush_now();
                    st.cut();
                    return Err(Error::usage("body shorter than its content-length"));
                }
            }
        }
        if end_stream {
            drop(resp);
            self.end_response(&mut st);
        }
        Ok(())
    }

    /// Marks the response complete and passes the write turn on.
    fn end_response(&self, st: &mut ConnState) {
        *self.resp.borrow_mut() = Resp::Done;
        st.pass_turn(self.seq);
    }

    pub(crate) fn take_socket(&self) -> Result<Upgraded> {
        let mut st = self.conn.st.borrow_mut();
        if !st.is_turn(self.seq) {
            return Err(Error::usage(
                "take_socket before earlier responses were written",
            ));
        }
        st.flush_now()?;
        if !st.out().is_empty() {
            return Err(Error::usage("take_socket while output is still buffered"));
        }
        // The new protocol starts after the request's body (RFC 9110 §7.8): its unread
        // bytes would reach the new protocol as if they were its own.
        if st.body_unread(self.seq) {
            return Err(Error::usage(
                "take_socket before the request body was read to its end",
            ));
        }
        let (io, buffered) = st
            .take_io()
            .ok_or_else(|| Error::closed("connection closed"))?;
        st.end_body(self.seq, false);
        *self.resp.borrow_mut() = Resp::Upgraded;
        Ok(Upgraded::new(io, buffered))
    }

    // ===== the handler's lifecycle (called by the server's handler task) =====

    /// After each poll of the handler: note that it has run, send a head it left pending
    /// (it is now waiting on something else, so its body is not coming in this poll), and
    /// flush. A handler about to wait always flushes, so no response waits on a later
    /// handler's slowness; one that has ended leaves the flush to the next handler of a
    /// pipelined batch when that is sure to run at once (`ConnState::flush_can_wait`), so
    /// that the batch is answered in one write.
    pub(crate) fn after_poll(&self, handler_done: bool) {
        let mut st = self.conn.st.borrow_mut();
        st.note_polled(self.seq);
        if !handler_done
            && st.is_turn(self.seq)
            && matches!(*self.resp.borrow(), Resp::HeadPending { .. })
        {
            drop(st);
            if self.send_head(None).is_err() {
                self.conn.abort();
                return;
            }
            st = self.conn.st.borrow_mut();
        }
        let released = self.common.is_finished();
        if !(handler_done && st.flush_can_wait(released, self.conn.limits().max_pipelined)) {
            if let Err(e) = st.flush_now() {
                tracing::debug!("write failed: {e}");
            }
        }
        if handler_done {
            st.release_buffers_if_idle();
        }
    }

    /// Ends the exchange after the handler returned, by the shared finish policy
    /// (`stream_common.rs`): an unanswered request answered, an open body ended (or the
    /// connection closed if the handler failed mid-body); then the connection goes on to
    /// the next request.
    pub(crate) async fn finish(&self, outcome: Outcome) {
        let upgraded = matches!(*self.resp.borrow(), Resp::Upgraded);
        let progress = match &*self.resp.borrow() {
            Resp::NotStarted => Progress::NotStarted,
            Resp::HeadPending { .. } => Progress::HeadPending,
            Resp::Body { .. } => Progress::BodyOpen,
            Resp::Done | Resp::Upgraded => Progress::Ended,
        };
        match self.common.finish_action(progress, outcome) {
            Finish::Answer(head, body) => {
                *self.resp.borrow_mut() = Resp::NotStarted;
                let _ = self.write_headers(&head, false).await;
                let _ = self.write_chunk(body.as_bytes(), true).await;
            }
            Finish::EndBody => {
                let _ = self.write_chunk(&[], true).await;
            }
            Finish::Abort => {
                // What the handler wrote before it failed goes out before the cut (its
                // flush waits for this, see `after_poll`), so the client sees a response
                // cut short rather than none.
                let _ = self.conn.st.borrow_mut().flush_now();
                self.conn.abort();
            }
            Finish::Nothing => {}
        }
        self.release(upgraded);
        self.after_poll(true);
    }

    /// Gives up the stream's claims on the connection.
    fn release(&self, upgraded: bool) {
        if self.common.mark_finished() {
            return;
        }
        let complete = matches!(*self.resp.borrow(), Resp::Done);
        self.conn.st.borrow_mut().release_stream(
            self.seq,
            complete,
            upgraded,
            self.head.upgrade || self.head.is_connect,
        );
    }
}

impl Drop for H1Stream {
    fn drop(&mut self) {
        if !self.common.is_finished() {
            // The handler task was dropped before it finished (controller dropped or
            // cancelled): the response is lost, so the connection cannot continue.
            self.conn.abort();
            self.release(false);
        }
    }
}
