//! `Stream`: one request and its response, the object an `onstream` handler receives —
//! the same API whatever the HTTP version (lua-http's `stream_common.lua` over
//! `h1_stream`).
//!
//! The version-specific side (today `h1::H1Stream`) reads body chunks and writes heads and
//! chunks; this module adds what every version shares on top: the `unget` buffer and the
//! body helpers built on `get_next_chunk` (`get_body_until`, `get_body_chars`, files, a
//! `futures::Stream` of chunks).

use bytes::{Bytes, BytesMut};
use std::{
    cell::RefCell,
    collections::VecDeque,
    fmt,
    fs::File,
    future::poll_fn,
    io::{Read, Seek, Write},
    net::SocketAddr,
    rc::Rc,
};

use crate::{
    error::{Error, Result},
    h1::{H1Stream, Outcome},
    h2::H2Stream,
    headers::Headers,
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
    /// Bytes given back with [`Stream::unget`], read before the body's next chunk.
    ungot: RefCell<VecDeque<Bytes>>,
}

/// The version-specific exchange behind a `Stream`.
#[derive(Clone)]
pub(crate) enum Inner {
    H1(Rc<H1Stream>),
    H2(Rc<H2Stream>),
}

impl Inner {
    pub(crate) fn claim(&self) {
        match self {
            Inner::H1(s) => s.claim(),
            Inner::H2(s) => s.claim(),
        }
    }

    pub(crate) fn unclaim(&self) -> bool {
        match self {
            Inner::H1(s) => s.unclaim(),
            Inner::H2(s) => s.unclaim(),
        }
    }

    pub(crate) async fn finish(&self, outcome: Outcome) {
        match self {
            Inner::H1(s) => s.finish(outcome).await,
            Inner::H2(s) => s.finish(outcome).await,
        }
    }

    /// After each poll of the handler (HTTP/1 flushes here; the h2 task flushes itself).
    pub(crate) fn after_poll(&self, handler_done: bool) {
        if let Inner::H1(s) = self {
            s.after_poll(handler_done);
        }
    }
}

impl Stream {
    pub(crate) fn new(inner: Inner) -> Stream {
        Stream {
            inner,
            ungot: RefCell::new(VecDeque::new()),
        }
    }

    /// The request head: pseudo-headers (`:method`, `:scheme`, `:path`, `:authority`) then
    /// the fields in arrival order. Async and fallible to match lua-http (and HTTP/2,
    /// where the head may still be arriving); for HTTP/1 it is already here.
    pub async fn get_headers(&self) -> Result<Headers> {
        Ok(match &self.inner {
            Inner::H1(s) => s.headers().clone(),
            Inner::H2(s) => s.headers().clone(),
        })
    }

    /// The request's trailer fields, once the body has been read to its end.
    pub async fn get_trailers(&self) -> Result<Option<Headers>> {
        Ok(match &self.inner {
            Inner::H1(s) => s.trailers(),
            Inner::H2(s) => s.trailers(),
        })
    }

    /// The HTTP version of the request.
    pub fn version(&self) -> http::Version {
        match &self.inner {
            Inner::H1(s) => s.version(),
            Inner::H2(_) => http::Version::HTTP_2,
        }
    }

    /// The client's address (`None` on a unix socket).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::H1(s) => s.peer_addr(),
            Inner::H2(s) => s.peer_addr(),
        }
    }

    /// The server's address this request came in on (`None` on a unix socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.inner {
            Inner::H1(s) => s.local_addr(),
            Inner::H2(s) => s.local_addr(),
        }
    }

    // ===== reading the body =====

    /// The next piece of the request body, or `None` at its end. For a request that sent
    /// `Expect: 100-continue`, the first call sends `100 Continue`.
    pub async fn get_next_chunk(&self) -> Result<Option<Bytes>> {
        if let Some(b) = self.ungot.borrow_mut().pop_front() {
            return Ok(Some(b));
        }
        match &self.inner {
            Inner::H1(s) => poll_fn(|cx| s.poll_next_chunk(cx)).await,
            Inner::H2(s) => s.get_next_chunk().await,
        }
    }

    /// Puts bytes back in front of the body, to be read again.
    pub fn unget(&self, bytes: impl Into<Bytes>) {
        let bytes = bytes.into();
        if !bytes.is_empty() {
            self.ungot.borrow_mut().push_front(bytes);
        }
    }

    /// The whole request body.
    pub async fn get_body_as_bytes(&self) -> Result<Bytes> {
        let Some(first) = self.get_next_chunk().await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.get_next_chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::from(&first[..]);
        all.extend_from_slice(&second);
        while let Some(chunk) = self.get_next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }

    /// The whole request body as text; an error if it is not UTF-8.
    pub async fn get_body_as_string(&self) -> Result<String> {
        let bytes = self.get_body_as_bytes().await?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::protocol(400, "request body is not UTF-8").with_source(e))
    }

    /// The next `n` bytes of the body (fewer at its end), or `None` at the end.
    pub async fn get_body_chars(&self, n: usize) -> Result<Option<Bytes>> {
        let mut got = BytesMut::new();
        while got.len() < n {
            match self.get_next_chunk().await? {
                Some(mut chunk) => {
                    let want = n - got.len();
                    if chunk.len() > want {
                        self.unget(chunk.split_off(want));
                    }
                    got.extend_from_slice(&chunk);
                }
                None => break,
            }
        }
        Ok((!got.is_empty()).then(|| got.freeze()))
    }

    /// The body up to the next `pattern` (with it when `include`), or what is left if the
    /// body ends first; `None` at the end.
    pub async fn get_body_until(&self, pattern: &[u8], include: bool) -> Result<Option<Bytes>> {
        assert!(
            !pattern.is_empty(),
            "get_body_until needs a non-empty pattern"
        );
        let mut got = BytesMut::new();
        loop {
            let searched_from = got.len().saturating_sub(pattern.len() - 1);
            match self.get_next_chunk().await? {
                Some(chunk) => got.extend_from_slice(&chunk),
                None => return Ok((!got.is_empty()).then(|| got.freeze())),
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

    /// Writes the rest of the body to `file`; returns the number of bytes written.
    pub async fn save_body_to_file(&self, file: &mut File) -> Result<u64> {
        let mut n = 0;
        while let Some(chunk) = self.get_next_chunk().await? {
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
        }
    }

    /// Sends `100 Continue` now (it is otherwise sent when the body is first read).
    pub async fn write_continue(&self) -> Result<()> {
        match &self.inner {
            Inner::H1(s) => s.write_continue().await,
            Inner::H2(s) => s.write_continue().await,
        }
    }

    /// Writes a piece of the body; `end_stream` ends the response. Waits while the client
    /// is slower than the handler (backpressure).
    pub async fn write_chunk(&self, data: impl AsRef<[u8]>, end_stream: bool) -> Result<()> {
        match &self.inner {
            Inner::H1(s) => s.write_chunk(data.as_ref(), end_stream).await,
            Inner::H2(s) => s.write_chunk(data.as_ref(), end_stream).await,
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
