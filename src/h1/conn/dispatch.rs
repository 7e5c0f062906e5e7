//! The driver task of an HTTP/1 connection (the `get_next_incoming_stream` loop of
//! lua-http's `server.lua`): reads request heads one after another and starts a stream
//! for each; between requests it waits for the previous body to be read (or throws away
//! what its handler left, up to `max_discard`), holds back while `max_pipelined`
//! requests are in flight or an upgrade may take the socket, parks an idle connection,
//! answers a malformed head, and closes the connection gracefully (lingering close, unless
//! the client said it would close and has nothing more to send).

use bytes::BytesMut;
use std::{
    future::{poll_fn, Future},
    pin::Pin,
    rc::Rc,
    task::{ready, Context, Poll},
    time::Instant,
};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    io::{poll_fill, poll_fill_idle, SendGuard, READ_CHUNK},
    BodyRead, ConnState, H1Conn, Parked,
};
use crate::{
    error::{Error, Result},
    h1::{
        body::{Decoded, Decoder},
        parse::{parse_request, BodyKind, ParseError, RequestHead},
        stream::H1Stream,
    },
    rejected::Rejected,
    rt::{sleep, Controller, Sleep},
    transport::poll_read_buf,
};

impl H1Conn {
    /// Reads request heads and hands each to `on_request` until the connection ends, or
    /// until it has waited `park_after` for its next request with nothing in flight: it
    /// then returns its socket as a [`Parked`] connection. `resumed` is a parked
    /// connection's idle deadline, when this driver takes one up again.
    pub(crate) async fn drive(
        self: Rc<Self>,
        mut on_request: impl FnMut(H1Stream),
        mut on_rejected: impl FnMut(&Rejected<'_>),
        mut resumed: Option<Instant>,
    ) -> Option<Parked> {
        let ctl = Controller::current();
        let mut timer = sleep(self.cfg.connection_setup_timeout);
        let mut send = SendGuard::default();
        let mut first = resumed.is_none();
        // Whether closing reads on for a while (lingering close). Not after an idle
        // timeout: nothing was unread and no response was in flight, so there is no reset
        // to guard against, and a client writing after that time should learn at once
        // that the connection is gone (lua-http's clients get EPIPE).
        let mut closing = Closing::Linger;
        // The last request said the client closes (`Connection: close`, HTTP/1.0) and had
        // no body: once it is answered, the client has nothing more to send here.
        let mut client_done = false;
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
                    if client_done && self.st.borrow().rbuf.is_empty() {
                        closing = Closing::IfInputWaits;
                    }
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
                        // RFC 9112 §9.6: a client that sends `close` sends no further
                        // request on the connection.
                        client_done = !head.keep_alive
                            && head.body == BodyKind::Empty
                            && !(head.expect_continue || head.upgrade || head.is_connect);
                        let stream = self.start_stream(head);
                        on_request(stream);
                        continue;
                    }
                    Ok(NextHead::End) => break Ok(None),
                    Ok(NextHead::IdleTimeout) => {
                        closing = Closing::Now;
                        break Ok(None);
                    }
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
                let line = (status != 414)
                    .then(|| request_line(&self.st.borrow().rbuf, self.cfg.limits.max_request_line))
                    .flatten();
                // No borrow of the connection is held while the hook runs: it may call
                // back into the server (close it, say), which reaches this connection.
                on_rejected(&Rejected {
                    status,
                    reason: message,
                    peer: self.peer_addr,
                    request_line: line.as_deref(),
                });
                let mut st = self.st.borrow_mut();
                crate::h1::encode::error_response(&mut st.wbuf, status, message);
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
        Box::pin(self.finish(&ctl, &mut send, closing)).await;
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
        if st.body.is_some() {
            match self.poll_discard(st, cx, timer, discard_by) {
                Poll::Ready(r) => r?,
                Poll::Pending => return self.flush_before_waiting(st, cx, ctl, send),
            }
        }
        // Read no further head while an upgrade may still take the socket, or while
        // `max_pipelined` requests are in flight: a client that sends requests without
        // reading the answers holds that many handlers (and what they opened), not one
        // per request it sent, and its requests wait in the socket, not in memory.
        if st.keep_alive
            && (st.upgrade_pending || st.n_open_streams as usize >= self.cfg.limits.max_pipelined)
        {
            st.driver_waits(cx);
            return self.flush_before_waiting(st, cx, ctl, send);
        }
        Poll::Ready(Ok(()))
    }

    /// The driver is about to wait (its waker is set): what the handlers left in the
    /// write buffer goes out first, unless a handler that has not run yet will flush it.
    /// Not before: a handler that ended with the next request already read leaves its
    /// response for the driver to send with the next ones (`ConnState::flush_can_wait`),
    /// so the driver flushes only when it stops starting handlers.
    fn flush_before_waiting<T>(
        &self,
        st: &mut ConnState,
        cx: &mut Context<'_>,
        ctl: &Controller,
        send: &mut SendGuard,
    ) -> Poll<Result<T>> {
        if !st.unpolled_streams() {
            ready!(send.poll_flush(st, cx, ctl, self.cfg.send_timeout))?;
        }
        Poll::Pending
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
            st.driver_waits(cx);
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
                            st.driver_waits(cx);
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
                    st.driver_waits(cx);
                    if let Poll::Ready(Err(e)) = self.flush_before_waiting::<()>(st, cx, ctl, send)
                    {
                        return Poll::Ready(Err(HeadError::Io(e)));
                    }
                    let fired = Pin::new(&mut *timer).poll(cx).is_ready();
                    if !st.rbuf.is_empty() {
                        if fired {
                            return Poll::Ready(Err(HeadError::HeaderTimeout));
                        }
                        return Poll::Pending;
                    }
                    let now = ctl.now();
                    if now >= idle.close_at {
                        return Poll::Ready(Ok(NextHead::IdleTimeout));
                    }
                    // Waiting for the next request: a stream that ends before the time to
                    // park changes nothing here (its output it flushed itself, as the read
                    // buffer is empty: `ConnState::flush_can_wait`), and the timer wakes
                    // the driver to park. From then on an end may make parking possible.
                    st.driver_input_only = now < idle.park_at;
                    // Checked on every wake-up, not only when the timer fires: handlers of
                    // earlier requests may have been at work then, and their end wakes us.
                    if now >= idle.park_at && st.may_park() && send.is_idle() {
                        return Poll::Ready(Ok(NextHead::Park));
                    }
                    if fired {
                        timer.reset(idle.close_at);
                        return Pin::new(&mut *timer)
                            .poll(cx)
                            .map(|()| Ok(NextHead::IdleTimeout));
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
            st.driver_waits(cx);
            Poll::Pending
        }
    }

    /// Waits for every stream to end, flushes, and closes the socket gracefully.
    async fn finish(&self, ctl: &Controller, send: &mut SendGuard, closing: Closing) {
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
                st.driver_waits(cx);
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
        if read_eof || closing == Closing::Now {
            return;
        }
        let mut drained = 0usize;
        if closing == Closing::IfInputWaits {
            // One read of what has already come: EOF (a TLS client's close_notify sent
            // right after its request, say) or nothing means close now; bytes mean a
            // client sending on despite `close`, which gets the lingering close.
            let mut first = [0u8; 64];
            let mut buf = tokio::io::ReadBuf::new(&mut first);
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_read(cx, &mut buf))).await {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => drained = buf.filled().len(),
                _ => return,
            }
        }
        // Lingering close: read until the peer's EOF, a byte budget or a deadline.
        let limits = &self.cfg.limits;
        let mut linger = sleep(limits.linger_time.min(self.cfg.intra_stream_timeout));
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

/// How [`H1Conn::finish`] closes the socket once the last response is out (after
/// `shutdown`: TLS close_notify, then FIN).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    /// Read on until the client's EOF, a byte budget or a deadline (lingering close): a
    /// socket closed with input unread, or receiving input after it is closed, resets the
    /// connection, which can destroy the last response before the client has read it.
    Linger,
    /// The client said it closes and sent everything its request had: close at once,
    /// unless input is already waiting (then linger). As nginx and hyper do; waiting for
    /// the client's EOF cost ~9 % of the server CPU of a TLS connection carrying one
    /// request (an epoll wait, a read and a timer more, and each connection open a round
    /// trip longer; bench/tls-handshakes).
    IfInputWaits,
    /// Close at once: an idle timeout, with nothing unread and no response in flight.
    Now,
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
    /// The connection ends: EOF, server closing, socket gone.
    End,
    /// Nothing came for the idle timeout, with nothing in flight.
    IdleTimeout,
    /// Idle with nothing in flight for `park_after`: the connection parks.
    Park,
}

enum HeadError {
    Parse(ParseError),
    HeaderTimeout,
    Io(Error),
}

/// The request-line at the start of `buf` (after the empty lines RFC 9112 §2.2 lets a
/// server skip), without its line ending, if a whole one of at most `limit` bytes is
/// there: what a rejected request is reported by.
fn request_line(buf: &[u8], limit: usize) -> Option<String> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let rest = &buf[start..];
    let end = rest.iter().take(limit).position(|&b| b == b'\n')?;
    let line = rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]);
    Some(String::from_utf8_lossy(line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::request_line;

    #[test]
    fn a_rejected_request_is_reported_by_its_whole_request_line_only() {
        assert_eq!(
            request_line(b"\r\nGET /a HTTP/1.1\r\nHost: x\r\n", 100).as_deref(),
            Some("GET /a HTTP/1.1")
        );
        assert_eq!(
            request_line(b"GET /a HTTP/1.1\n", 100).as_deref(),
            Some("GET /a HTTP/1.1")
        );
        assert_eq!(request_line(b"GET /a HT", 100), None);
        assert_eq!(request_line(b"GET /abcdef HTTP/1.1\r\n", 8), None);
        assert_eq!(
            request_line(b"\xff / HTTP/1.1\r\n", 100).as_deref(),
            Some("\u{fffd} / HTTP/1.1")
        );
    }
}
