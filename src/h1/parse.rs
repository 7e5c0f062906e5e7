//! HTTP/1.x request-head parsing: request-line and header section (RFC 9112 §2–§6) into a
//! [`RequestHead`], on top of `httparse`.
//!
//! This module owns: skipping stray empty lines before a request, the size limits on the
//! request-line and the head (414/431), the syntax checks `httparse` performs, the HTTP
//! version check (505), the `Host` rules, the message-framing decision (`Content-Length` /
//! `Transfer-Encoding`, including the request-smuggling defences of RFC 9112 §6.1 and §6.3),
//! and the `Connection` / `Expect` / `Upgrade` flags a server needs to drive a connection.
//! It also defines [`ParseError`], which the body decoder in `super::body` reuses.
//!
//! It does not own: any I/O or buffering policy (the caller fills the `BytesMut` and calls
//! again on `Ok(None)`), decoding the body (`super::body`), producing error responses (it
//! only says which status and message to send), interpreting the request-target, or
//! method semantics.
//!
//! Parsing is zero-copy: the head's bytes are split off the caller's buffer, header names
//! are lower-cased in place, and every name and value in the resulting [`Headers`] is in
//! that one allocation: the usual head is kept as that buffer and its fields' positions
//! (`Headers::packed`), fields made only when the list is iterated; a head with an
//! absolute-form target as a list of [`Bytes`] slices of it.

use std::fmt;
use std::mem::MaybeUninit;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::headers::{Field, Headers};

/// Default for [`Limits::max_request_line`].
pub(crate) const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;

/// Default for [`Limits::max_head`].
pub(crate) const DEFAULT_MAX_HEAD: usize = 64 * 1024;

/// Default for [`Limits::max_discard`] (1 MiB, as hyper).
pub(crate) const DEFAULT_MAX_DISCARD: u64 = 1024 * 1024;
/// Defaults for [`Limits::linger_time`] and [`Limits::linger_bytes`].
pub(crate) const DEFAULT_LINGER_TIME: Duration = Duration::from_secs(1);
pub(crate) const DEFAULT_LINGER_BYTES: usize = 256 * 1024;
/// Default for [`Limits::write_buffer`].
pub(crate) const DEFAULT_WRITE_BUFFER: usize = 64 * 1024;
/// Default for [`Limits::max_pipelined`].
pub(crate) const DEFAULT_MAX_PIPELINED: usize = 16;
/// Default for [`Limits::max_headers`].
pub(crate) const DEFAULT_MAX_HEADERS: usize = 100;

/// How many empty lines may precede a request-line. RFC 9112 §2.2 asks servers to ignore
/// "at least one"; a few more cover clients that send CRLF after a body, and a bound stops
/// a peer from keeping the connection busy with nothing but newlines.
const MAX_LEADING_EMPTY_LINES: usize = 4;

/// Header slots kept on the stack. When [`Limits::max_headers`] is at most this, parsing a
/// head allocates only the resulting [`Headers`] list; above it the slots go on the heap.
const STACK_HEADERS: usize = 128;

/// Size limits applied while parsing a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Longest request-line accepted, counting its line terminator; longer → 414
    /// (RFC 9112 §3: a server that receives a request-target longer than it wishes to parse
    /// MUST respond with 414).
    pub max_request_line: usize,
    /// Largest head accepted, from the request-line through the empty line that ends the
    /// header section (leading empty lines not counted); larger → 431 (RFC 6585 §5).
    pub max_head: usize,
    /// Most header fields accepted (pseudo-headers not counted); more → 431.
    pub max_headers: usize,
    /// Most bytes of a request body the handler did not read that are read and thrown
    /// away to keep the connection; past it the connection is closed instead (hyper and
    /// nginx bound this too).
    pub max_discard: u64,
    /// How long, and how many bytes, a closing connection keeps reading after its last
    /// response, so that unread input does not make the kernel send a reset that destroys
    /// that response in flight (nginx's lingering close).
    pub linger_time: Duration,
    pub linger_bytes: usize,
    /// Past this many buffered output bytes a writing stream waits for the socket.
    pub write_buffer: usize,
    /// Most requests in flight (parsed, response not finished) on one connection; at the
    /// bound the driver reads no further head until a response ends.
    pub max_pipelined: usize,
    /// Take every request as HTTP/1.0 and answer as `HTTP/1.0`, without keep-alive
    /// (`Version::Http10`).
    pub http10_only: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_head: DEFAULT_MAX_HEAD,
            max_headers: DEFAULT_MAX_HEADERS,
            max_discard: DEFAULT_MAX_DISCARD,
            linger_time: DEFAULT_LINGER_TIME,
            linger_bytes: DEFAULT_LINGER_BYTES,
            write_buffer: DEFAULT_WRITE_BUFFER,
            max_pipelined: DEFAULT_MAX_PIPELINED,
            http10_only: false,
        }
    }
}

/// Why a request (head or body) cannot be processed. Each variant maps to one response
/// status and one fixed message; after any of them the connection must be closed, because
/// the framing of what follows is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// More than [`MAX_LEADING_EMPTY_LINES`] empty lines, or a lone CR, before the
    /// request-line. 400.
    LeadingEmptyLines,
    /// The request-line is not `method SP request-target SP HTTP-version CRLF`. 400.
    InvalidRequestLine,
    /// A well-formed `HTTP-version` other than 1.0 or 1.1. 505.
    UnsupportedVersion,
    /// The request-line is longer than [`Limits::max_request_line`]. 414.
    RequestLineTooLong,
    /// A header field line is malformed (bad name or value character, whitespace before
    /// the colon, obs-fold, bare CR). 400.
    InvalidHeader,
    /// The head is larger than [`Limits::max_head`]. 431.
    HeadTooLarge,
    /// More than [`Limits::max_headers`] header fields. 431.
    TooManyHeaders,
    /// An HTTP/1.1 request without `Host`. 400.
    MissingHost,
    /// More than one `Host` field. 400.
    DuplicateHost,
    /// A `Host` value with characters no `uri-host [ ":" port ]` can hold. 400.
    InvalidHost,
    /// A `Content-Length` value that is not `1*DIGIT` or does not fit in a `u64`. 400.
    InvalidContentLength,
    /// Several `Content-Length` values that differ. 400.
    ConflictingContentLength,
    /// `Transfer-Encoding` whose last coding is not `chunked` (`gzip` alone included),
    /// `chunked` twice, or no coding at all. 400.
    InvalidTransferEncoding,
    /// Both `Transfer-Encoding` and `Content-Length`. 400.
    TransferEncodingWithContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 request. 400.
    TransferEncodingInHttp10,
    /// A transfer coding other than `chunked` before a final `chunked`. 501.
    UnsupportedTransferCoding,
    /// A chunk-size line that is not `1*HEXDIG [ chunk-ext ] CRLF`. 400.
    InvalidChunkSize,
    /// A chunk size of more than 16 hex digits (it would not fit in a `u64`). 400.
    ChunkSizeTooLarge,
    /// A chunk-size line longer than `super::body::MAX_CHUNK_SIZE_LINE`. 400.
    ChunkSizeLineTooLong,
    /// More chunk-extension bytes in one body than `super::body::MAX_CHUNK_EXTENSIONS`. 400.
    ChunkExtensionsTooLong,
    /// Chunk data not followed by CRLF. 400.
    InvalidChunkData,
    /// A malformed trailer field line. 400.
    InvalidTrailer,
    /// A trailer section larger than the decoder's limit. 431.
    TrailersTooLarge,
    /// More trailer fields than `super::body::MAX_TRAILER_FIELDS`. 431.
    TooManyTrailers,
}

impl ParseError {
    /// The response status to send.
    pub fn status(&self) -> u16 {
        use ParseError::*;
        match self {
            RequestLineTooLong => 414,
            HeadTooLarge | TooManyHeaders | TrailersTooLarge | TooManyTrailers => 431,
            UnsupportedTransferCoding => 501,
            UnsupportedVersion => 505,
            LeadingEmptyLines
            | InvalidRequestLine
            | InvalidHeader
            | MissingHost
            | DuplicateHost
            | InvalidHost
            | InvalidContentLength
            | ConflictingContentLength
            | InvalidTransferEncoding
            | TransferEncodingWithContentLength
            | TransferEncodingInHttp10
            | InvalidChunkSize
            | ChunkSizeTooLarge
            | ChunkSizeLineTooLong
            | ChunkExtensionsTooLong
            | InvalidChunkData
            | InvalidTrailer => 400,
        }
    }

    /// A short, fixed description, fit for a log line or an error response body.
    pub fn message(&self) -> &'static str {
        use ParseError::*;
        match self {
            LeadingEmptyLines => "too many empty lines before the request line",
            InvalidRequestLine => "invalid request line",
            UnsupportedVersion => "HTTP version not supported",
            RequestLineTooLong => "request line too long",
            InvalidHeader => "invalid header field",
            HeadTooLarge => "request header section too large",
            TooManyHeaders => "too many header fields",
            MissingHost => "missing Host header field",
            DuplicateHost => "more than one Host header field",
            InvalidHost => "invalid Host header field",
            InvalidContentLength => "invalid Content-Length",
            ConflictingContentLength => "conflicting Content-Length values",
            InvalidTransferEncoding => "invalid Transfer-Encoding",
            TransferEncodingWithContentLength => "both Transfer-Encoding and Content-Length",
            TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            UnsupportedTransferCoding => "unsupported transfer coding",
            InvalidChunkSize => "invalid chunk size line",
            ChunkSizeTooLarge => "chunk size too large",
            ChunkSizeLineTooLong => "chunk size line too long",
            ChunkExtensionsTooLong => "too many chunk extension bytes",
            InvalidChunkData => "chunk data not followed by CRLF",
            InvalidTrailer => "invalid trailer field",
            TrailersTooLarge => "trailer section too large",
            TooManyTrailers => "too many trailer fields",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for ParseError {}

/// How the request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body: neither `Content-Length` nor `Transfer-Encoding`, or `Content-Length: 0`.
    /// A request never has a close-delimited body (RFC 9112 §6.3 rule 7).
    Empty,
    /// Exactly this many bytes (never 0: that is [`BodyKind::Empty`]).
    Length(u64),
    /// The chunked transfer coding (RFC 9112 §7.1).
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// `:method`, `:scheme`, `:path` (the request-target as sent) and, when `Host` was
    /// present, `:authority` (its value; the `Host` field itself is not kept), then the other
    /// fields in arrival order with lower-case names.
    pub headers: Headers,
    /// `HTTP_10` or `HTTP_11`.
    pub version: http::Version,
    /// How the body is delimited.
    pub body: BodyKind,
    /// Whether the connection may serve another request after this one (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// HTTP/1.1 with `Expect: 100-continue` (RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// HTTP/1.1 with an `Upgrade` field and the `upgrade` connection option (RFC 9110 §7.8).
    pub upgrade: bool,
    /// The method is HEAD (the response has no body) or CONNECT (the connection becomes a
    /// tunnel): known here so that the per-request code need not look them up.
    pub is_head: bool,
    pub is_connect: bool,
}

/// Byte ranges of one header field's name and value, relative to the start of the buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    name: (usize, usize),
    value: (usize, usize),
}

/// Where each field's name and value are. On the stack for the usual number of fields
/// (its storage is not zeroed, unlike an array), on the heap beyond: a request's head
/// parse allocated a `Vec` for them before.
type Spans = SmallVec<[Span; INLINE_SPANS]>;

/// Fields whose positions fit on the stack: more than nearly any client sends (curl 3,
/// browsers about 15).
const INLINE_SPANS: usize = 32;

/// What [`scan`] learns from a complete head while it still borrows the buffer: plain
/// offsets and flags, so the buffer can then be split and frozen.
struct Scan {
    /// Bytes to take off the front of the buffer (leading empty lines included).
    len: usize,
    method: (usize, usize),
    /// The request-target, or for an absolute-form target its path and query.
    path: (usize, usize),
    /// An absolute-form target's authority, which takes the place of `Host`.
    target_authority: Option<(usize, usize)>,
    http11: bool,
    /// Index of the `Host` field among them.
    host: Option<usize>,
    body: BodyKind,
    keep_alive: bool,
    expect_continue: bool,
    upgrade: bool,
}

/// Parses one request head from the front of `buf`.
///
/// On `Ok(Some)` the head's bytes, and the empty lines skipped before it, are removed from
/// `buf`; whatever follows (body, pipelined requests) stays. On `Ok(None)` nothing is
/// consumed: call again once more bytes have arrived. `scheme` becomes `:scheme`.
pub(crate) fn parse_request(
    buf: &mut BytesMut,
    scheme: &'static str,
    limits: &Limits,
) -> Result<Option<RequestHead>, ParseError> {
    let start = match skip_empty_lines(buf)? {
        Some(start) => start,
        None => return Ok(None),
    };
    // Field positions are recorded while `httparse` borrows the buffer and turned into
    // slices once the head has been split off. `httparse`'s slots stay uninitialised on
    // the stack unless the configured limit is unusually high.
    let mut spans = Spans::new();
    let scanned = if limits.max_headers <= STACK_HEADERS {
        let mut slots = [MaybeUninit::uninit(); STACK_HEADERS];
        scan(
            buf,
            start,
            limits,
            &mut slots[..limits.max_headers],
            &mut spans,
        )?
    } else {
        let mut slots = vec![MaybeUninit::uninit(); limits.max_headers];
        scan(buf, start, limits, &mut slots, &mut spans)?
    };
    let Some(scan) = scanned else {
        return Ok(None);
    };

    let mut head = buf.split_to(scan.len);
    // Names are case-insensitive (RFC 9110 §5.1); `Headers` stores them lower-case.
    for span in &spans {
        head[span.name.0..span.name.1].make_ascii_lowercase();
    }
    let head = head.freeze();
    let method = &head[scan.method.0..scan.method.1];
    let (is_head, is_connect) = (method == b"HEAD", method == b"CONNECT");
    let path = &head[scan.path.0..scan.path.1];
    // The usual request: its head is kept as it is, with its fields' positions; the
    // fields are made only if the list is iterated. An absolute-form target (its path
    // may need a `/`) takes the general way below.
    let packable = scan.target_authority.is_none()
        && !matches!(path.first(), None | Some(b'?'))
        && u32::try_from(scan.len).is_ok();
    let headers = if packable {
        packed(head, scheme, &scan, &spans)
    } else {
        fields(head, scheme, &scan, &spans)
    };
    Ok(Some(RequestHead {
        headers,
        version: if scan.http11 && !limits.http10_only {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_10
        },
        body: scan.body,
        keep_alive: scan.keep_alive && !limits.http10_only,
        expect_continue: scan.expect_continue,
        upgrade: scan.upgrade,
        is_head,
        is_connect,
    }))
}

/// The head as one buffer and positions (`Headers::packed`). `scan.len` fits in `u32`.
fn packed(head: Bytes, scheme: &'static str, scan: &Scan, spans: &Spans) -> Headers {
    let at = |(from, to): (usize, usize)| [from as u32, to as u32];
    let regular = spans
        .iter()
        .enumerate()
        .filter(|&(i, _)| Some(i) != scan.host)
        .map(|(_, span)| [span.name.0, span.name.1, span.value.0, span.value.1].map(|n| n as u32));
    Headers::packed(
        head,
        scheme,
        [at(scan.method), at(scan.path)],
        scan.host.map(|host| at(spans[host].value)),
        regular,
    )
}

/// The head as a list of fields, each a slice of `head`.
fn fields(head: Bytes, scheme: &'static str, scan: &Scan, spans: &Spans) -> Headers {
    let slice = |(from, to): (usize, usize)| head.slice(from..to);

    let field = |name: &'static [u8], value| Field::parsed(Bytes::from_static(name), value, false);
    let pseudo = [
        Some(field(b":method", slice(scan.method))),
        Some(field(b":scheme", Bytes::from_static(scheme.as_bytes()))),
        Some(field(b":path", origin_form(slice(scan.path)))),
        match scan.target_authority {
            Some(authority) => Some(field(b":authority", slice(authority))),
            None => scan
                .host
                .map(|host| field(b":authority", slice(spans[host].value))),
        },
    ];
    let regular = spans
        .iter()
        .enumerate()
        .filter(|&(i, _)| Some(i) != scan.host)
        .map(|(_, span)| Field::parsed(slice(span.name), slice(span.value), false));
    // The Host field became :authority (or was replaced by the target's): with Host, the
    // count is the fields' plus three.
    let n = spans.len() + 3 + usize::from(scan.host.is_none() && scan.target_authority.is_some());
    Headers::shared_from(n, pseudo.into_iter().flatten().chain(regular))
}

/// An absolute-form request-target (RFC 9112 §3.2.2), `http://authority/path?query`.
#[derive(Clone, Copy)]
struct AbsoluteTarget<'a> {
    authority: &'a [u8],
    /// From the `/` or `?` after the authority; empty when the target ends there.
    path: &'a [u8],
}

/// Splits an absolute-form target. `None`: not absolute-form (origin-form, `*`, or a
/// CONNECT authority); `Some(None)`: an `http`/`https` URI without a valid host, which
/// RFC 9110 §4.2.1 says a recipient MUST reject. Other schemes are kept as sent: this
/// server serves neither proxy requests nor those schemes.
fn absolute_form(target: &[u8]) -> Option<Option<AbsoluteTarget<'_>>> {
    let colon = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..colon];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return None;
    }
    let rest = target[colon + 1..].strip_prefix(b"//")?;
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    // Userinfo (`@`) is deprecated in http(s) URIs (RFC 9110 §4.2.4) and an empty host is
    // invalid (§4.2.1); `valid_host` refuses the first.
    if authority.is_empty() || authority[0] == b':' || !valid_host(authority) {
        return Some(None);
    }
    Some(Some(AbsoluteTarget {
        authority,
        path: &rest[end..],
    }))
}

/// `:path` in origin form: an absolute-form target without a path (`http://a`,
/// `http://a?q`) has the path `/` (RFC 9112 §3.2.1).
fn origin_form(path: Bytes) -> Bytes {
    match path.first() {
        Some(b'/') | Some(b'*') => path,
        _ if path.is_empty() => Bytes::from_static(b"/"),
        // `?query` of an absolute-form target (an origin-form target always starts with
        // `/`; other forms never reach here without a leading letter).
        Some(b'?') => {
            let mut with_slash = Vec::with_capacity(path.len() + 1);
            with_slash.push(b'/');
            with_slash.extend_from_slice(&path);
            Bytes::from(with_slash)
        }
        _ => path,
    }
}

/// Skips the empty lines (CRLF or bare LF) before a request-line, RFC 9112 §2.2. Returns
/// where the request-line starts, or `None` when the buffer holds nothing else yet.
fn skip_empty_lines(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    let mut at = 0;
    let mut lines = 0;
    loop {
        match buf.get(at) {
            Some(b'\n') => at += 1,
            Some(b'\r') => match buf.get(at + 1) {
                Some(b'\n') => at += 2,
                Some(_) => return Err(ParseError::LeadingEmptyLines),
                None => return Ok(None),
            },
            Some(_) => return Ok(Some(at)),
            None => return Ok(None),
        }
        lines += 1;
        if lines > MAX_LEADING_EMPTY_LINES {
            return Err(ParseError::LeadingEmptyLines);
        }
    }
}

/// Runs `httparse` over the head starting at `start` and applies the semantic checks,
/// filling `spans` with the fields' positions.
///
/// Every decision is made on a window of the buffer no longer than the relevant limit, so
/// the outcome never depends on how the bytes were split across reads: a prefix of some
/// input yields either `Ok(None)` or the same result as the whole input.
fn scan<'b>(
    buf: &'b [u8],
    start: usize,
    limits: &Limits,
    slots: &mut [MaybeUninit<httparse::Header<'b>>],
    spans: &mut Spans,
) -> Result<Option<Scan>, ParseError> {
    let avail = buf.len() - start;
    // Fewer bytes than either limit (nearly every head): both windows below are the whole
    // input, and parsing the head at once answers the request-line's questions too (a
    // line without its LF parses as incomplete, or fails on the same byte). The search
    // for the LF is left out: it cost ~100 instructions of a small request.
    let within_limits = avail < limits.max_request_line && avail < limits.max_head;

    // The request-line first: until its LF has arrived, only its first `max_request_line`
    // bytes are looked at, so a long line gets 414 however it is split (RFC 9112 §3).
    let line_window = &buf[start..start + avail.min(limits.max_request_line)];
    if !within_limits && !line_window.contains(&b'\n') {
        let mut req = httparse::Request::new(&mut []);
        if let Err(e) = req.parse_with_uninit_headers(line_window, &mut []) {
            if let Some(e) = map_httparse_error(e, line_window) {
                return Err(e);
            }
        }
        return if avail >= limits.max_request_line {
            Err(ParseError::RequestLineTooLong)
        } else {
            Ok(None)
        };
    }

    let head_window = &buf[start..start + avail.min(limits.max_head)];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(head_window, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if avail >= limits.max_head {
                Err(ParseError::HeadTooLarge)
            } else {
                Ok(None)
            };
        }
        // The request-line's LF is in the window unless `max_head` cut it off, so an
        // incomplete version can only mean the head is too large; or, within the limits,
        // that the LF has not arrived yet.
        Err(e) => {
            return match map_httparse_error(e, head_window) {
                Some(e) => Err(e),
                None if within_limits => Ok(None),
                None => Err(ParseError::HeadTooLarge),
            }
        }
    };

    let base = buf.as_ptr() as usize;
    let range = |s: &[u8]| {
        let from = s.as_ptr() as usize - base;
        (from, from + s.len())
    };
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        // `httparse` sets all three before it reports a complete head.
        return Err(ParseError::InvalidRequestLine);
    };
    let http11 = minor == 1;
    let target = match absolute_form(path.as_bytes()) {
        Some(t) => Some(t.ok_or(ParseError::InvalidHost)?),
        None => None,
    };

    let mut host = None;
    let mut content_length: Option<u64> = None;
    let mut te_present = false;
    let mut te_codings = 0usize;
    let mut chunked = false;
    let mut te_unknown = false;
    let mut close = false;
    let mut keep_alive_option = false;
    let mut upgrade_option = false;
    let mut upgrade_field = false;
    let mut expect_continue = false;

    for (i, field) in req.headers.iter().enumerate() {
        spans.push(Span {
            name: range(field.name.as_bytes()),
            value: range(field.value),
        });
        let name = field.name.as_bytes();
        let value = field.value;
        // Dispatch on length first: most fields are none of these.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                // RFC 9112 §3.2: more than one Host field → 400.
                if host.is_some() {
                    return Err(ParseError::DuplicateHost);
                }
                host = Some(i);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // RFC 9110 §8.6: a list of identical values may be accepted as one value;
                // differing values are an unrecoverable framing error.
                for element in value.split(|&b| b == b',') {
                    let n = parse_content_length(trim_ows(element))?;
                    if content_length.replace(n).is_some_and(|old| old != n) {
                        return Err(ParseError::ConflictingContentLength);
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                te_present = true;
                for coding in list_elements(value) {
                    // RFC 9112 §6.3: chunked must be the final coding, and applying it twice
                    // is forbidden (§7); either way the framing is unreliable → 400.
                    if chunked {
                        return Err(ParseError::InvalidTransferEncoding);
                    }
                    te_codings += 1;
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        chunked = true;
                    } else {
                        te_unknown = true;
                    }
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                // RFC 9110 §7.6.1: connection options are case-insensitive tokens.
                for option in list_elements(value) {
                    if option.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if option.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive_option = true;
                    } else if option.eq_ignore_ascii_case(b"upgrade") {
                        upgrade_option = true;
                    }
                }
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => upgrade_field = true,
            6 if name.eq_ignore_ascii_case(b"expect") => {
                // RFC 9110 §10.1.1: the expectation is case-insensitive.
                expect_continue |=
                    list_elements(value).any(|e| e.eq_ignore_ascii_case(b"100-continue"));
            }
            _ => {}
        }
    }

    if te_present {
        // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
        if !http11 {
            return Err(ParseError::TransferEncodingInHttp10);
        }
        // RFC 9112 §6.1/§6.3: TE with CL is a smuggling vector; reject rather than pick one.
        if content_length.is_some() {
            return Err(ParseError::TransferEncodingWithContentLength);
        }
        if te_codings == 0 {
            return Err(ParseError::InvalidTransferEncoding);
        }
    }
    match host {
        // RFC 9112 §3.2.2: with an absolute-form target the Host field is ignored.
        _ if target.is_some() => {}
        // RFC 9112 §3.2: an HTTP/1.1 request without Host → 400.
        None if http11 => return Err(ParseError::MissingHost),
        // RFC 9112 §3.2: an invalid Host value → 400.
        Some(i) if !valid_host(&buf[spans[i].value.0..spans[i].value.1]) => {
            return Err(ParseError::InvalidHost)
        }
        _ => {}
    }
    // RFC 9112 §6.3: when chunked is not the final coding the body's length cannot be
    // determined reliably, and the server MUST answer 400 and close.
    if te_present && !chunked {
        return Err(ParseError::InvalidTransferEncoding);
    }
    // RFC 9112 §6.1: a server SHOULD answer 501 to a transfer coding it does not understand.
    // Checked after every 400 above: those are framing errors, this one is a missing feature.
    if te_unknown {
        return Err(ParseError::UnsupportedTransferCoding);
    }

    let body = if chunked {
        BodyKind::Chunked
    } else {
        match content_length {
            Some(n) if n > 0 => BodyKind::Length(n),
            _ => BodyKind::Empty,
        }
    };
    Ok(Some(Scan {
        len: start + len,
        method: range(method.as_bytes()),
        path: target.map_or_else(|| range(path.as_bytes()), |t| range(t.path)),
        target_authority: target.map(|t| range(t.authority)),
        http11,
        host,
        body,
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        keep_alive: !close && (http11 || keep_alive_option),
        // RFC 9110 §10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request.
        expect_continue: http11 && expect_continue,
        // RFC 9110 §7.8: a server MUST ignore Upgrade in an HTTP/1.0 request, and Upgrade is
        // only meaningful when listed in Connection.
        upgrade: http11 && upgrade_option && upgrade_field,
    }))
}

/// Maps an `httparse` error to ours. `window` is what was parsed (starting at the
/// request-line). Returns `None` when the error only means the HTTP-version is not complete
/// yet and could still turn out well-formed.
fn map_httparse_error(e: httparse::Error, window: &[u8]) -> Option<ParseError> {
    match e {
        // `httparse` only knows 1.0 and 1.1; tell a well-formed other version (505,
        // RFC 9110 §15.6.6) from garbage (400).
        httparse::Error::Version => classify_version(window),
        httparse::Error::TooManyHeaders => Some(ParseError::TooManyHeaders),
        httparse::Error::HeaderName | httparse::Error::HeaderValue => {
            Some(ParseError::InvalidHeader)
        }
        httparse::Error::NewLine => {
            // Either the request-line's terminator or a line of the header section is
            // broken: it is the header section's when the request-line, up to its LF,
            // parses on its own. Only that line is looked at, so the answer does not
            // depend on how much of the head has arrived (found by fuzzing).
            let line_ok = window.iter().position(|&b| b == b'\n').is_some_and(|lf| {
                let mut req = httparse::Request::new(&mut []);
                matches!(req.parse(&window[..=lf]), Ok(httparse::Status::Partial))
            });
            Some(if line_ok {
                ParseError::InvalidHeader
            } else {
                ParseError::InvalidRequestLine
            })
        }
        _ => Some(ParseError::InvalidRequestLine),
    }
}

/// Decides what an `httparse` version error means for the request-line at the start of
/// `window`: 505 for `method SP target SP HTTP/d.d` with a version other than 1.0/1.1,
/// `None` (need more) while the line is incomplete and could still be that, 400 otherwise.
fn classify_version(window: &[u8]) -> Option<ParseError> {
    /// `HTTP-version = HTTP-name "/" DIGIT "." DIGIT` (RFC 9112 §2.3); `d` is any digit.
    const PATTERN: &[u8] = b"HTTP/d.d";
    let (line, complete) = match window.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let line = &window[..lf];
            (line.strip_suffix(b"\r").unwrap_or(line), true)
        }
        None => (window.strip_suffix(b"\r").unwrap_or(window), false),
    };
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(ParseError::InvalidRequestLine);
    };
    let shape_ok = !method.is_empty()
        && !target.is_empty()
        && version.len() <= PATTERN.len()
        && version.iter().zip(PATTERN).all(|(&b, &p)| match p {
            b'd' => b.is_ascii_digit(),
            _ => b == p,
        });
    if !shape_ok {
        return Some(ParseError::InvalidRequestLine);
    }
    if !complete {
        return None;
    }
    if version.len() != PATTERN.len() || version == b"HTTP/1.0" || version == b"HTTP/1.1" {
        // Well-formed 1.0/1.1 versions only fail in `httparse` when the line around them is
        // malformed (e.g. two spaces before the version).
        return Some(ParseError::InvalidRequestLine);
    }
    Some(ParseError::UnsupportedVersion)
}

/// A `Content-Length` value a handler gave, by the same rule as a request's: `1*DIGIT`.
pub(crate) fn content_length_value(digits: &[u8]) -> Option<u64> {
    parse_content_length(digits).ok()
}

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6): no sign, no inner space, no overflow.
fn parse_content_length(digits: &[u8]) -> Result<u64, ParseError> {
    if digits.is_empty() {
        return Err(ParseError::InvalidContentLength);
    }
    digits.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(ParseError::InvalidContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(ParseError::InvalidContentLength)
    })
}

/// Whether `value` can be a `Host` value, `uri-host [ ":" port ]` (RFC 9112 §3.2,
/// RFC 3986 §3.2.2). This is a character-set check (reg-name, IP-literal brackets, port
/// colon), not a full grammar check; it keeps whitespace, `/`, `@` and the like out.
/// An empty value is allowed (RFC 9112 §3.2: sent when the target URI has no authority).
fn valid_host(value: &[u8]) -> bool {
    value.iter().all(|&b| HOST_CHARS[usize::from(b)])
}

/// The bytes [`valid_host`] allows, as a table: a lookup per byte instead of a chain of
/// comparisons (every request has a Host).
static HOST_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            );
        b += 1;
    }
    table
};

/// The non-empty elements of a comma-separated list value, with OWS trimmed
/// (RFC 9110 §5.6.1: recipients ignore empty elements).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Strips optional whitespace (SP / HTAB, RFC 9110 §5.6.3) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a successful parse must produce.
    #[derive(Debug, Clone)]
    struct Want {
        fields: Vec<(&'static str, &'static str)>,
        version: http::Version,
        body: BodyKind,
        keep_alive: bool,
        expect_continue: bool,
        upgrade: bool,
        /// What must be left in the buffer afterwards.
        rest: &'static [u8],
    }

    /// An HTTP/1.1 keep-alive request without a body and nothing after it.
    fn want(fields: &[(&'static str, &'static str)]) -> Want {
        Want {
            fields: fields.to_vec(),
            version: http::Version::HTTP_11,
            body: BodyKind::Empty,
            keep_alive: true,
            expect_continue: false,
            upgrade: false,
            rest: b"",
        }
    }

    /// `GET / HTTP/1.1` with `Host: a` followed by `extra` fields.
    fn get(extra: &[(&'static str, &'static str)]) -> Want {
        let mut fields = vec![
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "a"),
        ];
        fields.extend_from_slice(extra);
        want(&fields)
    }

    fn fields_of(head: &RequestHead) -> Vec<(String, String)> {
        head.headers
            .iter()
            .map(|f| {
                let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
                (f.name().to_owned(), value)
            })
            .collect()
    }

    fn assert_head(head: &RequestHead, want: &Want, input: &[u8]) {
        let fields: Vec<(String, String)> = want
            .fields
            .iter()
            .map(|&(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        let ctx = String::from_utf8_lossy(input);
        assert_eq!(fields_of(head), fields, "fields of {ctx:?}");
        assert_eq!(head.version, want.version, "version of {ctx:?}");
        assert_eq!(head.body, want.body, "body of {ctx:?}");
        assert_eq!(head.keep_alive, want.keep_alive, "keep_alive of {ctx:?}");
        assert_eq!(
            head.expect_continue, want.expect_continue,
            "expect_continue of {ctx:?}"
        );
        assert_eq!(head.upgrade, want.upgrade, "upgrade of {ctx:?}");
    }

    fn verify(
        got: Result<Option<RequestHead>, ParseError>,
        rest: &[u8],
        expected: &Result<Want, ParseError>,
        input: &[u8],
    ) {
        let ctx = String::from_utf8_lossy(input);
        match (got, expected) {
            (Ok(Some(head)), Ok(want)) => {
                assert_head(&head, want, input);
                assert_eq!(rest, want.rest, "rest of {ctx:?}");
            }
            (Err(e), Err(want)) => assert_eq!(e, *want, "error for {ctx:?}"),
            (got, _) => panic!("{ctx:?}: got {got:?}, expected {expected:?}"),
        }
    }

    fn check(input: &[u8], expected: Result<Want, ParseError>) {
        check_with(&Limits::default(), input, expected);
    }

    /// Parses `input` whole, then split at every offset (prefix first, then the rest
    /// appended): a prefix must give `Ok(None)` without consuming anything, or the same
    /// result as the whole input.
    fn check_with(limits: &Limits, input: &[u8], expected: Result<Want, ParseError>) {
        let mut buf = BytesMut::from(input);
        let got = parse_request(&mut buf, "http", limits);
        verify(got, &buf, &expected, input);

        for split in 0..input.len() {
            let mut buf = BytesMut::from(&input[..split]);
            match parse_request(&mut buf, "http", limits) {
                Ok(None) => {
                    assert_eq!(&buf[..], &input[..split], "Ok(None) consumed bytes");
                    buf.extend_from_slice(&input[split..]);
                    let got = parse_request(&mut buf, "http", limits);
                    verify(got, &buf, &expected, input);
                }
                Ok(Some(head)) => {
                    // The head was complete within the prefix (e.g. a body follows).
                    let Ok(want) = &expected else {
                        panic!("prefix {split} of {input:?} parsed, expected {expected:?}");
                    };
                    assert_head(&head, want, input);
                    assert!(want.rest.starts_with(&buf), "rest after prefix {split}");
                }
                Err(e) => assert_eq!(
                    Err::<(), _>(e),
                    expected.as_ref().map(|_| ()).map_err(|e| *e),
                    "prefix {split} of {:?}",
                    String::from_utf8_lossy(input)
                ),
            }
        }
    }

    fn err(e: ParseError) -> Result<Want, ParseError> {
        Err(e)
    }

    #[test]
    fn a_packed_head_answers_look_ups_as_its_fields_do() {
        let input = b"GET /p HTTP/1.1\r\nUser-Agent: t\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let head = parse_request(&mut BytesMut::from(&input[..]), "https", &Limits::default())
            .unwrap()
            .unwrap();
        let names = [
            ":method",
            ":METHOD",
            ":scheme",
            ":path",
            ":authority",
            ":status",
            "host",
            "user-agent",
            "USER-AGENT",
            "x-a",
            "X-a",
            "accept",
            "",
            ":",
        ];
        for name in names {
            let by_fields = head
                .headers
                .iter()
                .find(|f| f.name().eq_ignore_ascii_case(name))
                .map(|f| f.value_bytes());
            assert_eq!(head.headers.get_bytes(name), by_fields, "{name}");
            assert_eq!(head.headers.has(name), by_fields.is_some(), "{name}");
        }
        assert_eq!(head.headers.get(":scheme"), Some("https"));
        assert_eq!(head.headers.get("x-a"), Some("1"));
        assert_eq!(head.headers.len(), head.headers.iter().count());
        assert!(head.headers.get("host").is_none());
    }

    #[test]
    fn simple_get() {
        check(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(get(&[])));
    }

    #[test]
    fn names_are_lower_cased_and_order_is_kept() {
        check(
            b"GET /x?y=1 HTTP/1.1\r\nUser-Agent: t\r\nHOST: h:80\r\nAccept: */*\r\nX-A: 1\r\nx-a: 2\r\n\r\n",
            Ok(want(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/x?y=1"),
                (":authority", "h:80"),
                ("user-agent", "t"),
                ("accept", "*/*"),
                ("x-a", "1"),
                ("x-a", "2"),
            ])),
        );
    }

    #[test]
    fn values_lose_surrounding_whitespace_and_may_be_empty() {
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nX:  a b \t\r\nY:\r\nZ: \r\n\r\n",
            Ok(get(&[("x", "a b"), ("y", ""), ("z", "")])),
        );
    }

    #[test]
    fn bare_lf_line_endings_are_accepted() {
        // RFC 9112 §2.2: a recipient MAY recognise a single LF as a line terminator.
        check(b"GET / HTTP/1.1\nHost: a\n\n", Ok(get(&[])));
    }

    #[test]
    fn scheme_is_the_given_one() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
        let head = parse_request(&mut buf, "https", &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(head.headers.get(":scheme"), Some("https"));
    }

    #[test]
    fn fields_are_slices_of_the_received_bytes() {
        let mut buf = BytesMut::from(&b"GET /p HTTP/1.1\r\nHost: a\r\nX: v\r\n\r\n"[..]);
        let at = buf.as_ptr() as usize;
        let head = parse_request(&mut buf, "http", &Limits::default())
            .unwrap()
            .unwrap();
        let offset = |name: &str| {
            let f = head.headers.iter().find(|f| f.name() == name).unwrap();
            f.value_bytes().as_ptr() as usize - at
        };
        assert_eq!(offset(":path"), 4);
        assert_eq!(offset(":authority"), 23);
        assert_eq!(offset("x"), 29);
    }

    /// RFC 9112 §3.2.2: a server MUST accept the absolute form; its authority replaces
    /// Host, and `:path` is given in origin form so every handler serves it.
    #[test]
    fn absolute_form_target_gives_authority_and_origin_form_path() {
        let targets: [(&[u8], &str, &str); 5] = [
            (b"GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n", "a", "/b?c"),
            (
                b"GET HTTP://x.y:81/ HTTP/1.1\r\nHost: other\r\n\r\n",
                "x.y:81",
                "/",
            ),
            (
                b"GET https://[::1]:8443/p HTTP/1.1\r\nHost: a\r\n\r\n",
                "[::1]:8443",
                "/p",
            ),
            (b"GET http://a HTTP/1.1\r\nHost: a\r\n\r\n", "a", "/"),
            // Host may be missing: the target names the host.
            (b"GET http://a?q=1 HTTP/1.1\r\n\r\n", "a", "/?q=1"),
        ];
        for (input, authority, path) in targets {
            check(
                input,
                Ok(want(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", path),
                    (":authority", authority),
                ])),
            );
        }
    }

    #[test]
    fn absolute_form_without_a_valid_host_is_400() {
        for target in ["http:///x", "http://:80/", "http://u@a/", "https://a b/"] {
            let input = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
            let got = parse_request(
                &mut BytesMut::from(input.as_bytes()),
                "http",
                &Limits::default(),
            );
            assert!(got.is_err(), "{target}: {got:?}");
        }
    }

    /// Found by fuzzing (`fuzz/seeds/h1_head/regress-cr-after-version`): a CR after the
    /// version was a bad header or a bad request-line depending on how the bytes arrived.
    #[test]
    fn a_cr_after_the_version_is_a_bad_request_line_however_it_arrives() {
        for input in [
            &b"G / HTTP/1.1\r HTTP/1.1\n"[..],
            b"G / HTTP/1.1\xd0 HTTP/1.1\n",
        ] {
            check(input, err(ParseError::InvalidRequestLine));
        }
    }

    #[test]
    fn request_target_is_kept_as_sent() {
        let targets: [(&[u8], &str, &str); 4] = [
            (b"GET urn:a:b HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "urn:a:b"),
            (
                b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
                "CONNECT",
                "a:443",
            ),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "OPTIONS", "*"),
            (b"PURGE /%20x HTTP/1.1\r\nHost: a\r\n\r\n", "PURGE", "/%20x"),
        ];
        for (input, method, path) in targets {
            check(
                input,
                Ok(want(&[
                    (":method", method),
                    (":scheme", "http"),
                    (":path", path),
                    (":authority", "a"),
                ])),
            );
        }
    }

    #[test]
    fn http_1_0_needs_no_host_and_closes_by_default() {
        check(
            b"GET / HTTP/1.0\r\n\r\n",
            Ok(Want {
                version: http::Version::HTTP_10,
                keep_alive: false,
                ..want(&[(":method", "GET"), (":scheme", "http"), (":path", "/")])
            }),
        );
    }

    #[test]
    fn http_1_0_keep_alive_persists() {
        check(
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: a\r\n\r\n",
            Ok(Want {
                version: http::Version::HTTP_10,
                ..get(&[("connection", "Keep-Alive")])
            }),
        );
    }

    #[test]
    fn connection_close_ends_keep_alive() {
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n",
            Ok(Want {
                keep_alive: false,
                ..get(&[("connection", "keep-alive, CLOSE")])
            }),
        );
        check(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            Ok(Want {
                version: http::Version::HTTP_10,
                keep_alive: false,
                ..want(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    ("connection", "keep-alive"),
                    ("connection", "close"),
                ])
            }),
        );
    }

    #[test]
    fn expect_100_continue_is_case_insensitive_and_1_1_only() {
        check(
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
            Ok(Want {
                expect_continue: true,
                body: BodyKind::Length(3),
                ..want(&[
                    (":method", "PUT"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "a"),
                    ("expect", "100-Continue"),
                    ("content-length", "3"),
                ])
            }),
        );
        check(
            b"GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n",
            Ok(Want {
                version: http::Version::HTTP_10,
                keep_alive: false,
                ..want(&[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    ("expect", "100-continue"),
                ])
            }),
        );
    }

    #[test]
    fn upgrade_needs_the_field_and_the_connection_option() {
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            Ok(Want {
                upgrade: true,
                ..get(&[("connection", "Upgrade"), ("upgrade", "websocket")])
            }),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            Ok(get(&[("upgrade", "websocket")])),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\n\r\n",
            Ok(get(&[("connection", "upgrade")])),
        );
    }

    #[test]
    fn content_length_body_is_left_in_the_buffer() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
            Ok(Want {
                body: BodyKind::Length(5),
                rest: b"hello",
                ..want(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "a"),
                    ("content-length", "5"),
                ])
            }),
        );
    }

    #[test]
    fn content_length_zero_is_empty() {
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 000\r\n\r\n",
            Ok(get(&[("content-length", "000")])),
        );
    }

    #[test]
    fn largest_content_length_is_accepted() {
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n",
            Ok(Want {
                body: BodyKind::Length(u64::MAX),
                ..get(&[("content-length", "18446744073709551615")])
            }),
        );
    }

    #[test]
    fn chunked_is_case_insensitive_and_may_span_fields() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n",
            Ok(Want {
                body: BodyKind::Chunked,
                rest: b"0\r\n",
                ..want(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "a"),
                    ("transfer-encoding", "Chunked"),
                ])
            }),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\nTransfer-Encoding: chunked ,\r\n\r\n",
            Ok(Want {
                body: BodyKind::Chunked,
                ..get(&[("transfer-encoding", ","), ("transfer-encoding", "chunked ,")])
            }),
        );
    }

    #[test]
    fn stray_crlf_before_request_is_ignored() {
        check(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(get(&[])));
        check(b"\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Ok(get(&[])));
        // Only empty lines so far: wait for the request.
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(
            parse_request(&mut buf, "http", &Limits::default()),
            Ok(None)
        );
        assert_eq!(&buf[..], b"\r\n");
    }

    #[test]
    fn too_many_empty_lines_is_400() {
        check(
            b"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
            err(ParseError::LeadingEmptyLines),
        );
        check(
            b"\rGET / HTTP/1.1\r\n\r\n",
            err(ParseError::LeadingEmptyLines),
        );
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let mut buf = BytesMut::from(
            &b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\nhiGET /3 HTTP/1.0\r\n"[..],
        );
        let limits = Limits::default();
        let first = parse_request(&mut buf, "http", &limits).unwrap().unwrap();
        assert_eq!(first.headers.get(":path"), Some("/1"));
        assert!(buf.starts_with(b"POST /2"));
        let second = parse_request(&mut buf, "http", &limits).unwrap().unwrap();
        assert_eq!(second.headers.get(":path"), Some("/2"));
        assert_eq!(second.body, BodyKind::Length(2));
        assert_eq!(&buf[..], b"hiGET /3 HTTP/1.0\r\n");
        let _ = buf.split_to(2);
        assert_eq!(parse_request(&mut buf, "http", &limits), Ok(None));
        assert_eq!(&buf[..], b"GET /3 HTTP/1.0\r\n");
    }

    #[test]
    fn request_line_at_the_limit_is_accepted_and_one_more_byte_is_414() {
        let limits = Limits {
            max_request_line: 24,
            ..Limits::default()
        };
        // "GET /aaaaaaaa HTTP/1.1\r\n" is 24 bytes.
        check_with(
            &limits,
            b"GET /aaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n",
            Ok(Want {
                fields: vec![
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/aaaaaaaa"),
                    (":authority", "a"),
                ],
                ..get(&[])
            }),
        );
        check_with(
            &limits,
            b"GET /aaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n",
            err(ParseError::RequestLineTooLong),
        );
        // No line end in sight at all.
        check_with(&limits, &[b'a'; 40], err(ParseError::RequestLineTooLong));
    }

    #[test]
    fn long_request_line_with_default_limits_is_414() {
        let mut input = b"GET /".to_vec();
        input.resize(DEFAULT_MAX_REQUEST_LINE + 10, b'a');
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(
            parse_request(&mut buf, "http", &Limits::default()),
            Err(ParseError::RequestLineTooLong)
        );
        assert_eq!(ParseError::RequestLineTooLong.status(), 414);
    }

    #[test]
    fn garbage_in_a_long_request_line_is_400_before_the_limit() {
        let limits = Limits {
            max_request_line: 24,
            ..Limits::default()
        };
        check_with(
            &limits,
            b"GET /a\x01aaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n",
            err(ParseError::InvalidRequestLine),
        );
    }

    #[test]
    fn head_larger_than_max_head_is_431() {
        let fits = b"GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789a\r\n\r\n";
        let limits = Limits {
            max_head: fits.len(),
            ..Limits::default()
        };
        check_with(&limits, fits, Ok(get(&[("x", "0123456789a")])));
        // One more byte: rejected, complete or not.
        check_with(
            &limits,
            b"GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789ab\r\n\r\n",
            err(ParseError::HeadTooLarge),
        );
        check_with(
            &limits,
            b"GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789abcdefghijklmnopqrstuvwxyz",
            err(ParseError::HeadTooLarge),
        );
        // The limit does not count the empty lines skipped before the request.
        let mut leading = b"\r\n".to_vec();
        leading.extend_from_slice(fits);
        check_with(&limits, &leading, Ok(get(&[("x", "0123456789a")])));
    }

    #[test]
    fn max_head_below_the_request_line_is_431() {
        let limits = Limits {
            max_head: 10,
            ..Limits::default()
        };
        check_with(
            &limits,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            err(ParseError::HeadTooLarge),
        );
        check_with(
            &limits,
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            err(ParseError::HeadTooLarge),
        );
    }

    #[test]
    fn broken_end_of_head_is_400() {
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
            err(ParseError::InvalidHeader),
        );
    }

    fn request_with_fields(n: usize) -> Vec<u8> {
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..n {
            input.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        input
    }

    #[test]
    fn two_hundred_header_lines_is_431() {
        check(&request_with_fields(200), err(ParseError::TooManyHeaders));
    }

    #[test]
    fn max_headers_fields_are_accepted_and_one_more_is_431() {
        let mut buf = BytesMut::from(&request_with_fields(DEFAULT_MAX_HEADERS)[..]);
        let head = parse_request(&mut buf, "http", &Limits::default())
            .unwrap()
            .unwrap();
        // 100 fields, Host became :authority, plus :method, :scheme, :path.
        assert_eq!(head.headers.len(), DEFAULT_MAX_HEADERS + 3);
        let mut buf = BytesMut::from(&request_with_fields(DEFAULT_MAX_HEADERS + 1)[..]);
        assert_eq!(
            parse_request(&mut buf, "http", &Limits::default()),
            Err(ParseError::TooManyHeaders)
        );
    }

    #[test]
    fn limits_above_the_stack_slots_use_the_heap() {
        let limits = Limits {
            max_headers: 300,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&request_with_fields(300)[..]);
        let head = parse_request(&mut buf, "http", &limits).unwrap().unwrap();
        assert_eq!(head.headers.len(), 303);
        assert_eq!(head.headers.get("x-299"), Some("299"));
        let mut buf = BytesMut::from(&request_with_fields(301)[..]);
        assert_eq!(
            parse_request(&mut buf, "http", &limits),
            Err(ParseError::TooManyHeaders)
        );
    }

    #[test]
    fn invalid_request_line_is_400() {
        let cases: [&[u8]; 10] = [
            b"GARBAGE\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
            b"GE(T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\rHost: a\r\n\r\n",
            b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for input in cases {
            check(input, err(ParseError::InvalidRequestLine));
        }
    }

    #[test]
    fn http_2_0_request_line_is_505() {
        check(
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            err(ParseError::UnsupportedVersion),
        );
        check(
            b"GET / HTTP/1.2\r\n\r\n",
            err(ParseError::UnsupportedVersion),
        );
        check(b"GET / HTTP/0.9\n\n", err(ParseError::UnsupportedVersion));
        assert_eq!(ParseError::UnsupportedVersion.status(), 505);
    }

    #[test]
    fn malformed_versions_are_400() {
        let cases: [&[u8]; 5] = [
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/10.0\r\n\r\n",
            b"GET / HTTP/2.0x\r\n\r\n",
            b"GET  / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/2.0\rX\r\n\r\n",
        ];
        for input in cases {
            check(input, err(ParseError::InvalidRequestLine));
        }
    }

    #[test]
    fn whitespace_before_colon_is_400() {
        // RFC 9112 §5.1: no whitespace between field name and colon; MUST reject with 400.
        check(
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            err(ParseError::InvalidHeader),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nX\t: 1\r\n\r\n",
            err(ParseError::InvalidHeader),
        );
    }

    #[test]
    fn obs_fold_is_400() {
        // RFC 9112 §5.2: a server MUST reject obs-fold with 400 (or unfold; we reject).
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n",
            err(ParseError::InvalidHeader),
        );
        check(
            b"GET / HTTP/1.1\r\n\tHost: a\r\n\r\n",
            err(ParseError::InvalidHeader),
        );
    }

    #[test]
    fn bad_field_characters_are_400() {
        let cases: [&[u8]; 5] = [
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nX(: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n: 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        ];
        for input in cases {
            check(input, err(ParseError::InvalidHeader));
        }
    }

    #[test]
    fn http_1_1_without_host_is_400() {
        check(b"GET / HTTP/1.1\r\n\r\n", err(ParseError::MissingHost));
    }

    #[test]
    fn two_host_fields_is_400() {
        check(
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            err(ParseError::DuplicateHost),
        );
    }

    #[test]
    fn invalid_host_is_400_and_empty_host_is_kept() {
        check(
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            err(ParseError::InvalidHost),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: a/b@c\r\n\r\n",
            err(ParseError::InvalidHost),
        );
        check(
            b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            Ok(Want {
                fields: vec![
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "[::1]:8080"),
                ],
                ..get(&[])
            }),
        );
        check(
            b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
            Ok(Want {
                fields: vec![
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", ""),
                ],
                ..get(&[])
            }),
        );
    }

    #[test]
    fn content_length_abc_is_400() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
            err(ParseError::InvalidContentLength),
        );
    }

    #[test]
    fn negative_content_length_is_400() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            err(ParseError::InvalidContentLength),
        );
    }

    #[test]
    fn malformed_content_lengths_are_400() {
        let values: [&str; 7] = [
            "+5",
            "5 5",
            "",
            "0x10",
            "5,",
            "18446744073709551616",
            "99999999999999999999999",
        ];
        for v in values {
            let input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n");
            check(input.as_bytes(), err(ParseError::InvalidContentLength));
        }
    }

    #[test]
    fn differing_duplicate_content_length_is_400() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            err(ParseError::ConflictingContentLength),
        );
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
            err(ParseError::ConflictingContentLength),
        );
    }

    #[test]
    fn equal_duplicate_content_length_is_accepted() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5, 05\r\n\r\nhello",
            Ok(Want {
                body: BodyKind::Length(5),
                rest: b"hello",
                ..want(&[
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", "/"),
                    (":authority", "a"),
                    ("content-length", "5"),
                    ("content-length", "5, 05"),
                ])
            }),
        );
    }

    #[test]
    fn te_and_cl_together_is_400() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            err(ParseError::TransferEncodingWithContentLength),
        );
        check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            err(ParseError::TransferEncodingWithContentLength),
        );
    }

    #[test]
    fn unknown_transfer_encoding_is_501() {
        for te in ["gzip, chunked", "x-custom,chunked"] {
            let input = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            check(input.as_bytes(), err(ParseError::UnsupportedTransferCoding));
        }
        assert_eq!(ParseError::UnsupportedTransferCoding.status(), 501);
    }

    /// RFC 9112 §6.3: a request whose final coding is not chunked has no reliable length:
    /// 400, not 501 (the coding being unknown does not matter).
    #[test]
    fn transfer_encoding_gzip_without_chunked_is_400() {
        for te in ["gzip", "identity", "chunked;q=1", "x-custom"] {
            let input = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n");
            check(input.as_bytes(), err(ParseError::InvalidTransferEncoding));
        }
    }

    #[test]
    fn chunked_not_last_is_400() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            err(ParseError::InvalidTransferEncoding),
        );
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
            err(ParseError::InvalidTransferEncoding),
        );
    }

    #[test]
    fn chunked_twice_is_400() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            err(ParseError::InvalidTransferEncoding),
        );
    }

    #[test]
    fn transfer_encoding_without_codings_is_400() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , \r\n\r\n",
            err(ParseError::InvalidTransferEncoding),
        );
    }

    #[test]
    fn transfer_encoding_in_http_1_0_is_400() {
        check(
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            err(ParseError::TransferEncodingInHttp10),
        );
    }

    #[test]
    fn every_error_has_a_status_and_a_message() {
        use ParseError::*;
        let all = [
            LeadingEmptyLines,
            InvalidRequestLine,
            UnsupportedVersion,
            RequestLineTooLong,
            InvalidHeader,
            HeadTooLarge,
            TooManyHeaders,
            MissingHost,
            DuplicateHost,
            InvalidHost,
            InvalidContentLength,
            ConflictingContentLength,
            InvalidTransferEncoding,
            TransferEncodingWithContentLength,
            TransferEncodingInHttp10,
            UnsupportedTransferCoding,
            InvalidChunkSize,
            ChunkSizeTooLarge,
            ChunkSizeLineTooLong,
            ChunkExtensionsTooLong,
            InvalidChunkData,
            InvalidTrailer,
            TrailersTooLarge,
            TooManyTrailers,
        ];
        for e in all {
            assert!([400, 414, 431, 501, 505].contains(&e.status()));
            assert!(!e.message().is_empty());
            assert_eq!(e.to_string(), e.message());
        }
    }

    /// Bytes that make up request heads, so random inputs get past the request-line.
    fn head_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => prop::sample::select(b"GET /HTP1.0\r\n :,;HostContent-LngthTransfr-Encodig chunked 0123456789".to_vec()),
            1 => any::<u8>(),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            for limits in [Limits::default(), Limits { max_request_line: 7, max_head: 20, max_headers: 2, ..Limits::default() }] {
                let mut buf = BytesMut::from(&bytes[..]);
                let _ = parse_request(&mut buf, "http", &limits);
            }
        }

        #[test]
        fn arbitrary_heads_never_panic_and_split_consistently(
            tail in prop::collection::vec(head_byte(), 0..300),
            split in any::<prop::sample::Index>(),
        ) {
            let mut input = b"POST /x HTTP/1.1\r\nHost: a\r\n".to_vec();
            input.extend_from_slice(&tail);
            let limits = Limits { max_headers: 4, ..Limits::default() };
            let mut whole = BytesMut::from(&input[..]);
            let expected = parse_request(&mut whole, "http", &limits);
            let at = split.index(input.len() + 1);
            let mut buf = BytesMut::from(&input[..at]);
            match parse_request(&mut buf, "http", &limits) {
                Ok(None) => {
                    prop_assert_eq!(&buf[..], &input[..at]);
                    buf.extend_from_slice(&input[at..]);
                    let got = parse_request(&mut buf, "http", &limits);
                    prop_assert_eq!(got, expected);
                    prop_assert_eq!(buf, whole);
                }
                Ok(Some(head)) => prop_assert_eq!(Ok(Some(head)), expected),
                Err(e) => prop_assert_eq!(Err(e), expected),
            }
        }
    }
}
