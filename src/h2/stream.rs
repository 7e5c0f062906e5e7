//! One HTTP/2 exchange (lua-http's `h2_stream`) over the `h2` crate's `RecvStream` and
//! `SendResponse`/`SendStream`: the same operations as `h1::H1Stream`, so `Stream` can
//! offer one API.
//!
//! Flow control: received DATA is released back to the peer as the handler takes it,
//! so a handler that stops reading stops the client (per stream and, through the
//! connection window, per connection). Sent DATA waits for send capacity, so a handler
//! writing faster than the client reads waits too — for `send_timeout` at most: a
//! client that gives no credit for that long has its stream reset (CANCEL) and the
//! handler's write fails with a timeout, as over HTTP/1. A request body left unread when
//! the response is complete is read on and thrown away by `drain.rs`.

use bytes::{Bytes, BytesMut};
use std::{
    cell::{Cell, RefCell},
    future::poll_fn,
    net::SocketAddr,
    rc::Rc,
    task::Poll,
};

use h2::{server::SendResponse, RecvStream, SendStream};

use super::conn::H2Shared;
use crate::{
    error::{Error, Result},
    headers::{Field, Headers},
    rt::timeout,
    stream_common::{Common, Finish, Outcome, Progress},
    upgrade::Upgraded,
};

/// Where the response is.
enum Resp {
    NotStarted,
    /// Headers sent without END_STREAM: DATA and trailers may follow.
    Body(SendStream<Bytes>),
    Done,
    /// The server reset the stream (the client took nothing for `send_timeout`, or sent
    /// malformed trailers).
    Reset,
    /// The stream became a tunnel (extended CONNECT) owned by the handler.
    Tunnel,
}

/// The HTTP/2 side of a [`Stream`](crate::Stream).
pub(crate) struct H2Stream {
    conn: Rc<H2Shared>,
    headers: Headers,
    /// `None` once the stream became a tunnel.
    recv: RefCell<Option<RecvStream>>,
    respond: RefCell<Option<SendResponse<Bytes>>>,
    resp: RefCell<Resp>,
    /// The request body ended (END_STREAM seen, trailers taken), or was given up.
    body_done: Cell<bool>,
    /// The client sent `expect: 100-continue` and no response went out yet.
    continue_pending: Cell<bool>,
    common: Common,
    /// The HTTP/2 stream identifier (RFC 9113 §5.1.1).
    id: u32,
}

impl H2Stream {
    pub(crate) fn new(
        conn: Rc<H2Shared>,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
    ) -> H2Stream {
        let (parts, recv) = request.into_parts();
        let headers = request_headers(&parts, conn.scheme);
        conn.stream_opened();
        let expects_continue = headers
            .get("expect")
            .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
        H2Stream {
            id: respond.stream_id().into(),
            continue_pending: Cell::new(expects_continue && !recv.is_end_stream()),
            conn,
            headers,
            body_done: Cell::new(recv.is_end_stream()),
            recv: RefCell::new(Some(recv)),
            respond: RefCell::new(Some(respond)),
            resp: RefCell::new(Resp::NotStarted),
            common: Common::default(),
        }
    }

    /// The HTTP/2 stream identifier.
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

    pub(crate) fn body_read_timeout(&self) -> std::time::Duration {
        self.conn.body_read_timeout
    }

    pub(crate) fn common(&self) -> &Common {
        &self.common
    }

    // ===== reading =====

    /// The client sent no byte of the body for `body_read_timeout`: the body is given up
    /// (no drain after the response).
    pub(crate) fn body_timed_out(&self) {
        self.common.set_peer_error(408);
        self.body_done.set(true);
    }

    pub(crate) async fn get_next_chunk(&self) -> Result<Option<Bytes>> {
        if let Some(status) = self.common.peer_error() {
            // Given up: a later read must not look like the body's end.
            return Err(Error::protocol(
                status,
                "the request body was not received whole",
            ));
        }
        if self.body_done.get() {
            return Ok(None);
        }
        if self.continue_pending.replace(false) && matches!(*self.resp.borrow(), Resp::NotStarted) {
            // RFC 9110 §10.1.1, as over HTTP/1: the client may wait for 100 (Continue).
            self.write_continue().await?;
        }
        let data = poll_fn(|cx| match &mut *self.recv.borrow_mut() {
            Some(recv) => recv.poll_data(cx),
            None => Poll::Ready(None),
        })
        .await;
        match data {
            Some(Ok(bytes)) => {
                // The handler has the bytes: let the client send as many again.
                if let Some(recv) = &mut *self.recv.borrow_mut() {
                    let _ = recv.flow_control().release_capacity(bytes.len());
                }
                Ok(Some(bytes))
            }
            Some(Err(e)) => Err(h2_error(e, "reading the request body")),
            None => {
                let trailers = poll_fn(|cx| match &mut *self.recv.borrow_mut() {
                    Some(recv) => recv.poll_trailers(cx),
                    None => Poll::Ready(Ok(None)),
                })
                .await;
                self.body_done.set(true);
                match trailers {
                    Ok(Some(map)) => {
                        if let Some(why) = super::malformed::fields_fault(&map) {
                            // RFC 9113 §8.1.1: a stream error; the client's fault, so the
                            // error carries a status and never reaches `onerror`.
                            tracing::debug!(peer = ?self.conn.peer_addr, "malformed HTTP/2 trailers: {why}");
                            self.reset(h2::Reason::PROTOCOL_ERROR);
                            self.common.set_peer_error(400);
                            return Err(Error::protocol(400, why));
                        }
                        self.common
                            .set_trailers(Some(Headers::from_header_map(&map)))
                    }
                    Ok(None) => {}
                    Err(e) => return Err(h2_error(e, "reading the request trailers")),
                }
                Ok(None)
            }
        }
    }

    // ===== writing =====

    pub(crate) async fn write_headers(&self, headers: &Headers, end_stream: bool) -> Result<()> {
        let status = parse_status(headers)?;
        let is_trailers = matches!(*self.resp.borrow(), Resp::Body(_));
        if is_trailers {
            // Headers after the body are trailers (lua-http's write_headers semantics).
            if !end_stream {
                return Err(Error::usage("trailers must end the stream"));
            }
            let map = field_map(headers);
            let mut resp = self.resp.borrow_mut();
            if let Resp::Body(send) = &mut *resp {
                if let Err(e) = send.send_trailers(map) {
                    let reset = send.poll_reset(&mut noop_context()).is_ready();
                    return Err(send_error(e, reset, "sending trailers"));
                }
            }
            *resp = Resp::Done;
            return Ok(());
        }
        let Some(status) = status else {
            return Err(Error::usage("response headers need a :status"));
        };
        match *self.resp.borrow() {
            Resp::NotStarted => {}
            Resp::Reset => return Err(Error::closed("the stream was reset")),
            _ => return Err(Error::usage("the response already ended")),
        }
        let mut response = http::Response::new(());
        *response.status_mut() =
            http::StatusCode::from_u16(status).map_err(|_| Error::usage("invalid :status"))?;
        *response.headers_mut() = field_map(headers);
        if status >= 200 && !headers.has("date") {
            if let Some(date) = crate::date::header_value() {
                response.headers_mut().insert(http::header::DATE, date);
            }
        }
        let mut respond = self.respond.borrow_mut();
        let Some(responder) = respond.as_mut() else {
            return Err(Error::usage("the response already ended"));
        };
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(Error::usage("101 does not exist in HTTP/2"));
            }
            return responder.send_informational(response).map_err(|e| {
                let reset = responder.poll_reset(&mut noop_context()).is_ready();
                send_error(e, reset, "sending an informational response")
            });
        }
        let send = match responder.send_response(response, end_stream) {
            Ok(send) => send,
            Err(e) => {
                let reset = responder.poll_reset(&mut noop_context()).is_ready();
                return Err(send_error(e, reset, "sending the response head"));
            }
        };
        respond.take();
        *self.resp.borrow_mut() = if end_stream {
            Resp::Done
        } else {
            Resp::Body(send)
        };
        Ok(())
    }

    pub(crate) async fn write_continue(&self) -> Result<()> {
        let mut h = Headers::new();
        h.append(":status", "100");
        self.write_headers(&h, false).await
    }

    pub(crate) async fn write_chunk(&self, data: &[u8], end_stream: bool) -> Result<()> {
        if matches!(*self.resp.borrow(), Resp::NotStarted) {
            return Err(Error::usage("write_headers must come before the body"));
        }
        match *self.resp.borrow() {
            Resp::Done => return Err(Error::usage("the response already ended")),
            Resp::Reset => return Err(Error::closed("the stream was reset")),
            _ => {}
        }
        // A HEAD response carries no DATA; its END_STREAM still has to go out.
        let data = if self.headers.get(":method") == Some("HEAD") {
            &[][..]
        } else {
            data
        };
        let mut rest = Bytes::copy_from_slice(data);
        loop {
            if rest.is_empty() {
                if end_stream {
                    self.with_send(|send| send.send_data(Bytes::new(), true))?;
                    *self.resp.borrow_mut() = Resp::Done;
                }
                return Ok(());
            }
            self.with_send(|send| {
                send.reserve_capacity(rest.len());
                Ok(())
            })?;
            let capacity = poll_fn(|cx| match &mut *self.resp.borrow_mut() {
                Resp::Body(send) => send.poll_capacity(cx),
                _ => Poll::Ready(None),
            });
            let Ok(granted) = timeout(self.conn.send_timeout, capacity).await else {
                return Err(self.give_up_sending());
            };
            let n = match granted {
                Some(Ok(n)) if n > 0 => n.min(rest.len()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(self.body_send_error(e, "waiting to send")),
                None => return Err(Error::closed("the stream was reset")),
            };
            let piece = rest.split_to(n);
            let last = end_stream && rest.is_empty();
            self.with_send(|send| send.send_data(piece, last))?;
            if last {
                *self.resp.borrow_mut() = Resp::Done;
                return Ok(());
            }
        }
    }

    /// Resets a stream whose client gave no send capacity for `send_timeout`. CANCEL, not
    /// INTERNAL_ERROR: the server gives up on a stream the client does not take (RFC 9113
    /// §7: "the stream is no longer needed"); nothing failed on its side, and
    /// INTERNAL_ERROR stays the sign of a handler that failed mid-body.
    fn give_up_sending(&self) -> Error {
        self.reset(h2::Reason::CANCEL);
        tracing::debug!(peer = ?self.conn.peer_addr, "HTTP/2 stream took no data for send_timeout");
        Error::timeout("sending the body: the client took nothing for send_timeout")
    }

    /// Resets the stream from the server's side, whatever the state of the response;
    /// later writes fail as on a stream the client reset.
    fn reset(&self, reason: h2::Reason) {
        if let Some(mut respond) = self.respond.borrow_mut().take() {
            respond.send_reset(reason);
        } else if let Resp::Body(send) = &mut *self.resp.borrow_mut() {
            send.send_reset(reason);
        }
        *self.resp.borrow_mut() = Resp::Reset;
    }

    fn with_send(
        &self,
        f: impl FnOnce(&mut SendStream<Bytes>) -> std::result::Result<(), h2::Error>,
    ) -> Result<()> {
        match &mut *self.resp.borrow_mut() {
            Resp::Body(send) => f(send).map_err(|e| {
                let reset = send.poll_reset(&mut noop_context()).is_ready();
                send_error(e, reset, "sending the body")
            }),
            Resp::Reset => Err(Error::closed("the stream was reset")),
            _ => Err(Error::usage("the response already ended")),
        }
    }

    fn body_send_error(&self, e: h2::Error, what: &'static str) -> Error {
        let reset = match &mut *self.resp.borrow_mut() {
            Resp::Body(send) => send.poll_reset(&mut noop_context()).is_ready(),
            _ => false,
        };
        send_error(e, reset, what)
    }

    /// Turns the stream into a byte tunnel after a `2xx` answer to an extended CONNECT
    /// (RFC 8441): the HTTP/2 counterpart of HTTP/1's `take_socket`.
    pub(crate) fn take_tunnel(&self) -> Result<Upgraded> {
        if self.headers.get(":method") != Some("CONNECT") {
            return Err(Error::usage("only a CONNECT stream can become a tunnel"));
        }
        let Resp::Body(send) = std::mem::replace(&mut *self.resp.borrow_mut(), Resp::Tunnel) else {
            return Err(Error::usage(
                "answer the CONNECT with a 2xx head (not ended) first",
            ));
        };
        let recv = self
            .recv
            .borrow_mut()
            .take()
            .ok_or_else(|| Error::usage("the stream is already a tunnel"))?;
        self.body_done.set(true);
        let tunnel = super::tunnel::H2Tunnel::new(recv, send);
        Ok(Upgraded::new(Box::new(tunnel), Bytes::new()))
    }

    // ===== lifecycle =====

    /// Ends the exchange after the handler returned, by the shared finish policy
    /// (`stream_common.rs`): an unanswered request answered (503, or the client's error),
    /// an open body ended, or RST_STREAM(INTERNAL_ERROR) when the handler failed part-way.
    pub(crate) async fn finish(&self, outcome: Outcome) {
        if self.common.mark_finished() {
            return;
        }
        let progress = match &*self.resp.borrow() {
            Resp::NotStarted if self.respond.borrow().is_some() => Progress::NotStarted,
            Resp::Body(_) => Progress::BodyOpen,
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
            Finish::Abort => self.reset(h2::Reason::INTERNAL_ERROR),
            Finish::Nothing => {}
        }
        // A response that did not end normally ended with a reset (ours or the client's).
        let mut resp = self.resp.borrow_mut();
        if !matches!(*resp, Resp::Done | Resp::Tunnel) {
            *resp = Resp::Reset;
        }
    }

    /// The request body's unread rest, when the response is complete and the client may
    /// still be sending it: not after a reset, nor when the client waits for a
    /// `100 Continue` it never got (it is not to send the body, RFC 9110 §10.1.1).
    fn unread_body(&mut self) -> Option<RecvStream> {
        let complete = self.common.is_finished() && matches!(self.resp.get_mut(), Resp::Done);
        if !complete || self.body_done.get() || self.continue_pending.get() {
            return None;
        }
        self.recv.get_mut().take().filter(|r| !r.is_end_stream())
    }
}

impl Drop for H2Stream {
    fn drop(&mut self) {
        if !self.common.is_finished() {
            if let Some(respond) = self.respond.get_mut() {
                respond.send_reset(h2::Reason::INTERNAL_ERROR);
            } else if let Resp::Body(send) = self.resp.get_mut() {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
            }
        }
        match self.unread_body() {
            // The stream stays open on the connection until the drain ends.
            Some(recv) => super::drain::spawn(recv, self.conn.clone()),
            None => self.conn.stream_closed(),
        }
    }
}

/// The request's pseudo-headers and fields as a `Headers` list. The values are copied
/// into one buffer and shared from it, so the list costs two allocations however many
/// fields it has.
fn request_headers(parts: &http::request::Parts, scheme: &'static str) -> Headers {
    let uri = &parts.uri;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map(|a| a.as_str());
    let protocol = parts
        .extensions
        .get::<h2::ext::Protocol>()
        .map(|p| p.as_str());
    let method = parts.method.as_str();
    // Everything but common names (which stay static) goes into `buf`, in the order the
    // second pass below takes it out again.
    let mut buf = BytesMut::with_capacity(
        method.len()
            + path.len()
            + authority.map_or(0, str::len)
            + protocol.map_or(0, str::len)
            + parts
                .headers
                .iter()
                .map(|(n, v)| stored_name(n).len() + v.len())
                .sum::<usize>(),
    );
    buf.extend_from_slice(method.as_bytes());
    buf.extend_from_slice(path.as_bytes());
    buf.extend_from_slice(authority.unwrap_or("").as_bytes());
    buf.extend_from_slice(protocol.unwrap_or("").as_bytes());
    for (name, value) in &parts.headers {
        buf.extend_from_slice(stored_name(name).as_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
    let buf = buf.freeze();
    let mut at = 0;
    let mut take = |len: usize| {
        at += len;
        buf.slice(at - len..at)
    };

    let scheme = match uri.scheme_str().unwrap_or(scheme) {
        "https" => Bytes::from_static(b"https"),
        "http" => Bytes::from_static(b"http"),
        other => Bytes::copy_from_slice(other.as_bytes()),
    };
    let field = |name: &'static [u8], value| Field::parsed(Bytes::from_static(name), value, false);
    let method = field(b":method", take(method.len()));
    let path = field(b":path", take(path.len()));
    let authority = authority.map(|a| field(b":authority", take(a.len())));
    let protocol = protocol.map(|p| field(b":protocol", take(p.len())));
    let pseudo = [
        Some(method),
        Some(field(b":scheme", scheme)),
        authority,
        Some(path),
        protocol,
    ];
    let n = pseudo.iter().flatten().count() + parts.headers.len();
    let regular = parts.headers.iter().map(|(name, value)| {
        let name = match crate::headers::common_name(name.as_str()) {
            Some(known) => Bytes::from_static(known.as_bytes()),
            None => take(name.as_str().len()),
        };
        Field::parsed(name, take(value.len()), value.is_sensitive())
    });
    Headers::shared_from(n, pseudo.into_iter().flatten().chain(regular))
}

/// A request field's name as `request_headers` stores it: empty for a common name.
fn stored_name(name: &http::HeaderName) -> &str {
    match crate::headers::common_name(name.as_str()) {
        Some(_) => "",
        None => name.as_str(),
    }
}

/// Regular fields for the h2 encoder, in one pass: pseudo-headers and connection-specific
/// fields (RFC 9113 §8.2.2 forbids them) are left out.
fn field_map(headers: &Headers) -> http::HeaderMap {
    let mut map = http::HeaderMap::with_capacity(headers.len());
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
        let name = match http_name(name) {
            Some(known) => Ok(known),
            None => http::HeaderName::from_bytes(name),
        };
        if let (Ok(name), Ok(mut value)) = (
            name,
            http::HeaderValue::from_maybe_shared(field.value_shared()),
        ) {
            value.set_sensitive(field.never_index());
            map.append(name, value);
        }
    }
    map
}

/// The `http` crate's own constant for names responses nearly always carry: no parsing.
fn http_name(name: &[u8]) -> Option<http::HeaderName> {
    use http::header;
    Some(match name {
        b"content-type" => header::CONTENT_TYPE,
        b"content-length" => header::CONTENT_LENGTH,
        b"date" => header::DATE,
        b"server" => header::SERVER,
        b"location" => header::LOCATION,
        b"etag" => header::ETAG,
        b"last-modified" => header::LAST_MODIFIED,
        b"cache-control" => header::CACHE_CONTROL,
        b"vary" => header::VARY,
        b"content-encoding" => header::CONTENT_ENCODING,
        b"accept-ranges" => header::ACCEPT_RANGES,
        b"content-range" => header::CONTENT_RANGE,
        b"set-cookie" => header::SET_COOKIE,
        _ => return None,
    })
}

/// `Some(status)` for a head, `None` for a trailer block (no `:status`).
fn parse_status(headers: &Headers) -> Result<Option<u16>> {
    headers.status().transpose()
}

/// A send that failed because the client reset the stream (h2 then reports a misuse such
/// as `UnexpectedFrameType`) is a disconnect, not a handler fault: it must not reach
/// `onerror` (found by h2spec, where a reset before the response stopped the example).
fn send_error(e: h2::Error, peer_reset: bool, what: &'static str) -> Error {
    if peer_reset {
        return Error::closed(what).with_source(e);
    }
    h2_error(e, what)
}

/// A context whose waker does nothing, to ask h2 whether a stream was reset without
/// registering interest.
fn noop_context() -> std::task::Context<'static> {
    std::task::Context::from_waker(futures_util::task::noop_waker_ref())
}

fn h2_error(e: h2::Error, what: &'static str) -> Error {
    if e.is_io() {
        // The connection under h2 failed (a reset, a bad TLS record): the peer's doing.
        let io = e
            .into_io()
            .unwrap_or_else(|| std::io::ErrorKind::BrokenPipe.into());
        return Error::peer(io).with_context(what);
    }
    if e.is_reset() || e.is_go_away() {
        Error::closed(what).with_source(e)
    } else {
        Error::new(crate::error::ErrorKind::Io)
            .with_context(what)
            .with_source(e)
    }
}
