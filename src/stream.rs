//! `Stream`: one request and its response, the object an `onstream` handler receives —
//! the same API whatever the HTTP version (lua-http's `stream_common.lua` over
//! `h1_stream`).
//!
//! The version-specific side (`h1::H1Stream`, `h2::H2Stream`) reads body chunks and writes
//! heads and chunks; this module adds what every version shares on top: the `unget` buffer,
//! the body helpers built on `get_next_chunk` (`get_body_until`, `get_body_chars`, files, a
//! `futures::Stream` of chunks), and the bounds on waiting for the body — the server's
//! `body_read_timeout` between bytes (a slow client's fault: answered 408) and a caller's
//! own limit for one call ([`Stream::within`], lua-http's `timeout` argument) — so that
//! both versions get them from one place.

use bytes::{Bytes, BytesMut};
use std::{
    cell::RefCell,
    fmt,
    fs::File,
    future::{poll_fn, Future},
    io::{Read, Seek, Write},
    net::SocketAddr,
    pin::{pin, Pin},
    rc::Rc,
    task::Poll,
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    h1::H1Stream,
    h2::H2Stream,
    h2own::OwnStream,
    headers::Headers,
    rt::{sleep_until, Controller, Sleep},
    stream_common::{Common, Outcome},
    upgrade::Upgraded,
};

/// How much of a file is read per write when sending a file.
const FILE_CHUNK: usize = 64 * 1024;

/// One request/response exchange. Handlers receive it by value; every method takes
/// `&self`, so a handler may read and write from two futures at once.
///
/// ```no_run
/// # async fn handler(stream: onstream::Stream) -> onstream::Result<()> {
/// let req = stream.get_headers().await?;
/// let body = stream.get_body_as_string().await?;
/// let mut res = onstream::Headers::new();
/// res.append(":status", "200");
/// stream.write_headers(&res, false).await?;
/// stream.write_chunk(format!("{} {} sent {} bytes\n",
///     req.get(":method").unwrap_or(""), req.get(":path").unwrap_or(""), body.len()), true).await
/// # }
/// ```
pub struct Stream {
    inner: Inner,
    /// Bytes given back with [`Stream::unget`], read before the body's next chunk: a
    /// stack, the last given back on top (a `Vec`, whose drop when empty costs a fraction
    /// of a `VecDeque`'s, on every request).
    ungot: RefCell<Vec<Bytes>>,
}

/// The version-specific exchange behind a `Stream`.
#[derive(Clone)]
pub(crate) enum Inner {
    H1(Rc<H1Stream>),
    H2(Rc<H2Stream>),
    /// The own engine (`h2own/`, `H2Engine::Own`).
    H2Own(Rc<OwnStream>),
}

impl Inner {
    /// What both versions keep alike (`stream_common.rs`).
    pub(crate) fn common(&self) -> &Common {
        match self {
            Inner::H1(s) => s.common(),
            Inner::H2(s) => s.common(),
            Inner::H2Own(s) => s.common(),
        }
    }

    pub(crate) async fn finish(&self, outcome: Outcome) {
        match self {
            Inner::H1(s) => s.finish(outcome).await,
            Inner::H2(s) => s.finish(outcome).await,
            Inner::H2Own(s) => s.finish(outcome).await,
        }
    }

    /// After each poll of the handler (HTTP/1 flushes here; the h2 task flushes itself).
    pub(crate) fn after_poll(&self, handler_done: bool) {
        if let Inner::H1(s) = self {
            s.after_poll(handler_done);
        }
    }

    /// The server's `body_read_timeout`.
    fn body_read_timeout(&self) -> Duration {
        match self {
            Inner::H1(s) => s.body_read_timeout(),
            Inner::H2(s) => s.body_read_timeout(),
            Inner::H2Own(s) => s.body_read_timeout(),
        }
    }

    /// The client sent no byte of the body for `body_read_timeout`: the rest is not waited
    /// for (HTTP/1 closes the connection after the response; HTTP/2 resets the stream
    /// when its handler ends, without draining), and later reads fail too.
    fn body_timed_out(&self) {
        match self {
            Inner::H1(s) => s.body_timed_out(),
            Inner::H2(s) => s.body_timed_out(),
            Inner::H2Own(s) => s.body_timed_out(),
        }
    }
}

/// The status a request whose body stopped coming is answered with (RFC 9110 §15.5.9).
const BODY_TIMEOUT_STATUS: u16 = 408;

impl Stream {
    pub(crate) fn new(inner: Inner) -> Stream {
        Stream {
            inner,
            ungot: RefCell::new(Vec::new()),
        }
    }

    /// The request head: pseudo-headers (`:method`, `:scheme`, `:path`, `:authority`) then
    /// the fields in arrival order. Async and fallible to match lua-http (and HTTP/2,
    /// where the head may still be arriving); for HTTP/1 it is already here.
    pub async fn get_headers(&self) -> Result<Headers> {
        Ok(match &self.inner {
            Inner::H1(s) => s.headers().clone(),
            Inner::H2(s) => s.headers().clone(),
            Inner::H2Own(s) => s.headers().clone(),
        })
    }

    /// The request's trailer fields, once the body has been read to its end.
    pub async fn get_trailers(&self) -> Result<Option<Headers>> {
        Ok(self.inner.common().trailers())
    }

    /// The HTTP version of the request.
    pub fn version(&self) -> http::Version {
        match &self.inner {
            Inner::H1(s) => s.version(),
            Inner::H2(_) => http::Version::HTTP_2,
            Inner::H2Own(_) => http::Version::HTTP_2,
        }
    }

    /// The HTTP/2 stream identifier (lua-http's `stream.id`); `None` over HTTP/1, where
    /// a request has none.
    pub fn id(&self) -> Option<u32> {
        match &self.inner {
            Inner::H1(_) => None,
            Inner::H2(s) => Some(s.id()),
            Inner::H2Own(s) => Some(s.id()),
        }
    }

    /// The client's address (`None` on a unix socket).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::H1(s) => s.peer_addr(),
            Inner::H2(s) => s.peer_addr(),
            Inner::H2Own(s) => s.peer_addr(),
        }
    }

    /// The server's address this request came in on (`None` on a unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::H1(s) => s.local_addr(),
            Inner::H2(s) => s.local_addr(),
            Inner::H2Own(s) => s.local_addr(),
        }
    }

    // ===== reading the body =====

    /// The next piece of the request body, or `None` at its end. For a request that sent
    /// `Expect: 100-continue`, the first call sends `100 Continue`.
    ///
    /// Waits at most the server's `body_read_timeout` for the client's next byte; then the
    /// call fails with a protocol error whose status is 408, which the server sends if the
    /// handler has not answered yet. [`Stream::within`] bounds a call more tightly.
    pub async fn get_next_chunk(&self) -> Result<Option<Bytes>> {
        self.next_chunk(None).await
    }

    /// The body-reading methods bounded as a whole by `limit` from now (lua-http's
    /// optional `timeout` argument): `stream.within(d).get_body_as_string()` is lua-http's
    /// `stream:get_body_as_string(d)`. When the limit passes, the call fails with a timeout
    /// error ([`Error::is_timeout`]) and the stream stays usable: what was read by then is
    /// kept for the next call where the method reads in pieces (`get_body_chars`,
    /// `get_body_until` give it back with [`Stream::unget`]).
    ///
    /// ```no_run
    /// # async fn handler(stream: onstream::Stream) -> onstream::Result<()> {
    /// use std::time::Duration;
    /// let line = stream.within(Duration::from_secs(5)).get_body_until(b"\n", false).await?;
    /// # Ok(()) }
    /// ```
    pub fn within(&self, limit: Duration) -> Within<'_> {
        let now = Controller::try_current().map_or_else(Instant::now, |c| c.now());
        Within {
            stream: self,
            deadline: now.checked_add(limit),
        }
    }

    /// Puts bytes back in front of the body, to be read again.
    pub fn unget(&self, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        if !bytes.is_empty() {
            self.ungot.borrow_mut().push(bytes);
        }
    }

    /// The whole request body.
    pub async fn get_body_as_bytes(&self) -> Result<Bytes> {
        self.body_as_bytes(None).await
    }

    /// The whole request body as text; an error if it is not UTF-8.
    pub async fn get_body_as_string(&self) -> Result<String> {
        self.body_as_string(None).await
    }

    /// The next `n` bytes of the body (fewer at its end), or `None` at the end.
    pub async fn get_body_chars(&self, n: usize) -> Result<Option<Bytes>> {
        self.body_chars(n, None).await
    }

    /// The body up to the next `pattern` (with it when `include`), or what is left if the
    /// body ends first; `None` at the end.
    pub async fn get_body_until(&self, pattern: &[u8], include: bool) -> Result<Option<Bytes>> {
        self.body_until(pattern, include, None).await
    }

    /// Writes the rest of the body to `file`; returns the number of bytes written.
    pub async fn save_body_to_file(&self, file: &mut File) -> Result<u64> {
        self.save_body(file, None).await
    }

    /// The next chunk, waiting at most `body_read_timeout` for it and never past
    /// `deadline`. Whichever passes first decides the error: the server's limit is the
    /// client's fault (408, and the body is given up), the caller's is a plain timeout.
    async fn next_chunk(&self, deadline: Option<Instant>) -> Result<Option<Bytes>> {
        if let Some(b) = self.ungot.borrow_mut().pop() {
            return Ok(Some(b));
        }
        match &self.inner {
            Inner::H1(s) => {
                self.bounded(poll_fn(|cx| s.poll_next_chunk(cx)), deadline)
                    .await
            }
            Inner::H2(s) => self.bounded(s.get_next_chunk(), deadline).await,
            Inner::H2Own(s) => self.bounded(s.get_next_chunk(), deadline).await,
        }
    }

    /// Runs one body read under the bounds of [`Stream::next_chunk`]. The timer is made only
    /// when the read has to wait: a body already buffered (or none at all) costs nothing.
    async fn bounded(
        &self,
        read: impl Future<Output = Result<Option<Bytes>>>,
        deadline: Option<Instant>,
    ) -> Result<Option<Bytes>> {
        let mut read = pin!(read);
        // Made at the first wait: the timer, and whether it is the caller's limit.
        let mut timer: Option<Option<(Sleep, bool)>> = None;
        let by_caller = poll_fn(|cx| {
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                return Poll::Ready(Ok(r));
            }
            let timer = timer.get_or_insert_with(|| {
                let now = Controller::try_current().map_or_else(Instant::now, |c| c.now());
                // A limit too far to represent is no limit.
                let server = now.checked_add(self.inner.body_read_timeout());
                match (server, deadline) {
                    (Some(server), Some(caller)) if caller <= server => {
                        Some((sleep_until(caller), true))
                    }
                    (Some(server), _) => Some((sleep_until(server), false)),
                    (None, Some(caller)) => Some((sleep_until(caller), true)),
                    (None, None) => None,
                }
            });
            match timer {
                Some((sleep, by_caller)) => Pin::new(sleep).poll(cx).map(|()| Err(*by_caller)),
                None => Poll::Pending,
            }
        })
        .await;
        match by_caller {
            Ok(r) => r,
            Err(true) => Err(Error::timeout(
                "reading the request body: the caller's limit passed",
            )),
            Err(false) => {
                self.inner.body_timed_out();
                Err(Error::protocol(
                    BODY_TIMEOUT_STATUS,
                    "the request body stopped arriving (body_read_timeout)",
                ))
            }
        }
    }

    async fn body_as_bytes(&self, deadline: Option<Instant>) -> Result<Bytes> {
        let Some(first) = self.next_chunk(deadline).await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.next_chunk(deadline).await? else {
            return Ok(first);
        };
        let mut all = BytesMut::from(&first[..]);
        all.extend_from_slice(&second);
        while let Some(chunk) = self.next_chunk(deadline).await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }

    async fn body_as_string(&self, deadline: Option<Instant>) -> Result<String> {
        let bytes = self.body_as_bytes(deadline).await?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::protocol(400, "request body is not UTF-8").with_source(e))
    }

    async fn body_chars(&self, n: usize, deadline: Option<Instant>) -> Result<Option<Bytes>> {
        let mut got = BytesMut::new();
        while got.len() < n {
            match self.next_chunk(deadline).await {
                Ok(Some(mut chunk)) => {
                    let want = n - got.len();
                    if chunk.len() > want {
                        self.unget(chunk.split_off(want));
                    }
                    got.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    // Nothing read is lost: the next call starts with it.
                    self.unget(got.freeze());
                    return Err(e);
                }
            }
        }
        Ok((!got.is_empty()).then(|| got.freeze()))
    }

    async fn body_until(
        &self,
        pattern: &[u8],
        include: bool,
        deadline: Option<Instant>,
    ) -> Result<Option<Bytes>> {
        assert!(
            !pattern.is_empty(),
            "get_body_until needs a non-empty pattern"
        );
        let mut got = BytesMut::new();
        loop {
            let searched_from = got.len().saturating_sub(pattern.len() - 1);
            match self.next_chunk(deadline).await {
                Ok(Some(chunk)) => got.extend_from_slice(&chunk),
                Ok(None) => return Ok((!got.is_empty()).then(|| got.freeze())),
                Err(e) => {
                    self.unget(got.freeze());
                    return Err(e);
                }
            }
            if let Some(at) = find(&got[searched_from..], pattern) {
                let end = searched_from + at + pattern.len();
                let rest = got.split_off(end);
                self.unget(rest.freeze());
                if !include {
                    got.truncate(got.len() - pattern.len());
                }
                return Ok(Some(got.freeze()));
            }
        }
    }

    async fn save_body(&self, file: &mut File, deadline: Option<Instant>) -> Result<u64> {
        let mut n = 0;
        while let Some(chunk) = self.next_chunk(deadline).await? {
            file.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }

    /// The body as a `futures::Stream` of chunks.
    pub fn body(&self) -> impl futures_core::Stream<Item = Result<Bytes>> + '_ {
        futures_util::stream::unfold(self, |s| async move {
            match s.get_next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), s)),
                Ok(None) => None,
                Err(e) => Some((Err(e), s)),
            }
        })
    }

    // ===== writing the response =====

    /// Writes the response head (it needs a `:status`). With `end_stream` the response
    /// has no body. 1xx heads go out at once; over HTTP/1 a final head is held until the
    /// first body write, so a body written whole gets a `content-length`. Called again
    /// after the body has started, with fields and no `:status`, it writes trailers and
    /// must end the stream (lua-http's semantics).
    pub async fn write_headers(&self, headers: &Headers, end_stream: bool) -> Result<()> {
        match &self.inner {
            Inner::H1(s) => s.write_headers(headers, end_stream).await,
            Inner::H2(s) => s.write_headers(headers, end_stream).await,
            Inner::H2Own(s) => s.write_headers(headers, end_stream).await,
        }
    }

    /// Sends `100 Continue` now (it is otherwise sent when the body is first read).
    pub async fn write_continue(&self) -> Result<()> {
        match &self.inner {
            Inner::H1(s) => s.write_continue().await,
            Inner::H2(s) => s.write_continue().await,
            Inner::H2Own(s) => s.write_continue().await,
        }
    }

    /// Writes a piece of the body; `end_stream` ends the response. Waits while the client
    /// is slower than the handler (backpressure).
    pub async fn write_chunk(&self, data: impl AsRef<[u8]>, end_stream: bool) -> Result<()> {
        match &self.inner {
            Inner::H1(s) => s.write_chunk(data.as_ref(), end_stream).await,
            Inner::H2(s) => s.write_chunk(data.as_ref(), end_stream).await,
            Inner::H2Own(s) => s.write_chunk(data.as_ref(), end_stream).await,
        }
    }

    /// Writes `data` as the whole remaining body and ends the response.
    pub async fn write_body_from_bytes(&self, data: impl AsRef<[u8]>) -> Result<()> {
        self.write_chunk(data, true).await
    }

    /// Writes `len` bytes of `file` from its current position (to its end when `None`) as
    /// the rest of the body and ends the response. Over cleartext HTTP/1.x the bytes go
    /// from the page cache to the socket with sendfile(2), never through user space; over
    /// TLS and HTTP/2 they are read and written in pieces.
    pub async fn write_body_from_file(&self, mut file: File, len: Option<u64>) -> Result<()> {
        // A body the caller knows to be small is copied whatever the file is: it leaves in
        // the same write as the head. Nothing to ask the file then (a statx and an lseek
        // saved on every small file a file server sends).
        if len.is_some_and(|n| n <= FILE_CHUNK as u64) {
            return self.copy_file(file, len).await;
        }
        if let Inner::H1(s) = &self.inner {
            let md = file.metadata()?;
            if md.is_file() {
                let start = file.stream_position()?;
                let len = len.unwrap_or_else(|| md.len().saturating_sub(start));
                // A small body is cheaper copied: it leaves in the same write as the head.
                if len > FILE_CHUNK as u64 && s.send_file(&file, start, len).await? {
                    return Ok(());
                }
                return self.copy_file(file, Some(len)).await;
            }
        }
        self.copy_file(file, len).await
    }

    async fn copy_file(&self, mut file: File, len: Option<u64>) -> Result<()> {
        let mut left = len.unwrap_or(u64::MAX);
        while left > 0 {
            let want = left.min(FILE_CHUNK as u64);
            // `read_to_end` reads into spare capacity without zeroing it first; `take`
            // stops it at `want` without a read past it.
            let mut buf = Vec::with_capacity(want as usize);
            (&mut file).take(want).read_to_end(&mut buf)?;
            if buf.is_empty() {
                if len.is_some() {
                    return Err(Error::usage("file shorter than the length given"));
                }
                break;
            }
            left -= buf.len() as u64;
            self.write_chunk(&buf, left == 0).await?;
        }
        if left > 0 {
            self.write_chunk([], true).await?;
        }
        Ok(())
    }

    /// Ends the exchange early from the handler's side (lua-http's `shutdown`): an unsent
    /// response becomes an empty one, an open body is ended.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.finish(Outcome::Ok).await;
        Ok(())
    }

    /// Takes the connection over after a `101` (lua-http's `take_socket`). The returned
    /// socket starts with any bytes the client sent after the request. Over HTTP/2 the
    /// stream of an extended CONNECT (RFC 8441) answered with a `2xx` head becomes the
    /// byte stream instead; the connection's other streams go on.
    pub fn take_socket(&self) -> Result<Upgraded> {
        match &self.inner {
            Inner::H1(s) => s.take_socket(),
            Inner::H2(s) => s.take_tunnel(),
            Inner::H2Own(s) => s.take_tunnel(),
        }
    }
}

impl Stream {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("version", &self.version())
            .field("peer_addr", &self.peer_addr())
            .finish()
    }
}

/// The body-reading methods of a [`Stream`] bounded by one deadline: see
/// [`Stream::within`].
#[derive(Debug, Clone, Copy)]
pub struct Within<'a> {
    stream: &'a Stream,
    /// `None`: the limit was too far in the future to represent (no limit).
    deadline: Option<Instant>,
}

impl Within<'_> {
    /// [`Stream::get_next_chunk`] within the limit.
    pub async fn get_next_chunk(&self) -> Result<Option<Bytes>> {
        self.stream.next_chunk(self.deadline).await
    }

    /// [`Stream::get_body_as_bytes`] within the limit.
    pub async fn get_body_as_bytes(&self) -> Result<Bytes> {
        self.stream.body_as_bytes(self.deadline).await
    }

    /// [`Stream::get_body_as_string`] within the limit.
    pub async fn get_body_as_string(&self) -> Result<String> {
        self.stream.body_as_string(self.deadline).await
    }

    /// [`Stream::get_body_chars`] within the limit.
    pub async fn get_body_chars(&self, n: usize) -> Result<Option<Bytes>> {
        self.stream.body_chars(n, self.deadline).await
    }

    /// [`Stream::get_body_until`] within the limit.
    pub async fn get_body_until(&self, pattern: &[u8], include: bool) -> Result<Option<Bytes>> {
        self.stream
            .body_until(pattern, include, self.deadline)
            .await
    }

    /// [`Stream::save_body_to_file`] within the limit.
    pub async fn save_body_to_file(&self, file: &mut File) -> Result<u64> {
        self.stream.save_body(file, self.deadline).await
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
