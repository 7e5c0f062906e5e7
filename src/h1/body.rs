//! HTTP/1.x message-body framing: decoding a request body delimited by `Content-Length` or
//! the chunked transfer coding (RFC 9112 §6, §7.1), and encoding chunked response framing.
//!
//! This module owns: the chunked grammar (chunk-size, chunk extensions, chunk data and its
//! CRLF, last-chunk, trailer section), the limits that keep a hostile peer from making the
//! decoder buffer or scan without bound, and the byte layout of chunk headers and of the
//! last-chunk with trailers.
//!
//! It does not own: deciding which framing a request uses (that is
//! `super::parse::BodyKind`, chosen by the head parser), reading from or writing to
//! sockets, end-of-stream handling (a connection that closes before the body is done
//! is an incomplete body, which the caller detects), flow control, content codings, or
//! deciding which fields may appear in trailers (RFC 9110 §6.5.1: the caller filters).
//!
//! Line endings: the chunked framing requires CRLF everywhere — after the chunk size, after
//! the data, after each trailer field and at the end. A bare LF is rejected with 400 even
//! though RFC 9112 §2.2 lets the head parser accept it: disagreement between parsers about
//! bare LF and bare CR in chunked framing is a known request-smuggling vector ("funky
//! chunks"), and every real client sends CRLF.

use bytes::{Buf, Bytes, BytesMut};

use super::parse::{BodyKind, ParseError};
use crate::headers::Headers;

/// Longest chunk-size line accepted, counting the size, any extensions and the CRLF.
/// Extensions are skipped, not stored; the bound keeps a peer from streaming an endless
/// line at us (RFC 9112 §7.1.1: a server ought to limit extensions it does not use).
pub(crate) const MAX_CHUNK_SIZE_LINE: usize = 4096;

/// Most chunk-extension bytes accepted over a whole body. Without it a peer could send
/// one-byte chunks each carrying a near-maximal extension, making us scan 4 KiB per
/// payload byte (the same defence as hyper's chunk extension limit).
pub(crate) const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;

/// Most fields accepted in a trailer section; more → 431.
pub(crate) const MAX_TRAILER_FIELDS: usize = 64;

/// A chunk size has at most this many hex digits: 16 fill a `u64`. Leading zeros count,
/// so the check is a plain digit count.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// Decodes a request body from the bytes that follow its head.
#[derive(Debug, Clone)]
pub(crate) enum Decoder {
    /// `Content-Length` framing (or no body): the bytes still to come.
    Length(u64),
    /// The chunked transfer coding.
    Chunked(Chunked),
}

/// State of a chunked body decoder; see [`Decoder::Chunked`].
#[derive(Debug, Clone)]
pub(crate) struct Chunked {
    state: State,
    /// Value of the chunk-size digits read so far, then the data bytes left in the chunk.
    size: u64,
    /// Hex digits read in the current chunk-size.
    digits: u8,
    /// Bytes of the current chunk-size line read so far.
    line_len: usize,
    /// Chunk-extension bytes read in the whole body.
    extension_bytes: usize,
    /// Most chunk-extension bytes allowed in the whole body: [`MAX_CHUNK_EXTENSIONS`]
    /// (a field only so tests can lower it).
    max_extension_bytes: usize,
    /// Largest trailer section accepted, not counting its final CRLF.
    max_trailer_size: usize,
}

/// Where a chunked decoder is in RFC 9112 §7.1's `chunked-body` grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In `chunk-size` (1*HEXDIG).
    Size,
    /// After the size, in optional whitespace (the BWS before `;`).
    SizeWhitespace,
    /// In a `chunk-ext`, outside a quoted string.
    Extension,
    /// In a `quoted-string` chunk-ext-val.
    ExtensionQuoted,
    /// Right after a backslash in a quoted string (`quoted-pair`).
    ExtensionQuotedPair,
    /// Read the CR ending the chunk-size line; expecting LF.
    SizeLf,
    /// In `chunk-data`; `size` bytes remain.
    Data,
    /// After the data; expecting CR.
    DataCr,
    /// After the data's CR; expecting LF.
    DataLf,
    /// After the last-chunk: the trailer section and the final CRLF.
    Trailers,
    /// The body is complete.
    Done,
}

/// What one [`Decoder::decode`] call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes (never empty), split off the input buffer without copying.
    Data(Bytes),
    /// The buffer holds nothing usable yet; call again after reading more.
    NeedMore,
    /// The body is complete. `trailers` is `Some` only for a chunked body whose trailer
    /// section had at least one field, and only on the first `Done`.
    Done { trailers: Option<Headers> },
}

impl Decoder {
    /// A decoder for a body of `kind`. `max_trailer_size` bounds a chunked body's trailer
    /// section (its field lines; the final CRLF is not counted); larger → 431.
    pub fn new(kind: BodyKind, max_trailer_size: usize) -> Decoder {
        match kind {
            BodyKind::Empty => Decoder::Length(0),
            BodyKind::Length(n) => Decoder::Length(n),
            BodyKind::Chunked => Decoder::Chunked(Chunked {
                state: State::Size,
                size: 0,
                digits: 0,
                line_len: 0,
                extension_bytes: 0,
                max_extension_bytes: MAX_CHUNK_EXTENSIONS,
                max_trailer_size,
            }),
        }
    }

    /// Takes what it can from the front of `buf`: returns body data as soon as any is
    /// available (without waiting for a whole chunk), `NeedMore` when `buf` holds only part
    /// of the framing (which it may consume), or `Done` once the body is complete — after
    /// which `buf` holds exactly the bytes that follow the body (e.g. a pipelined request).
    /// After an error the decoder must not be used again.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        match self {
            Decoder::Length(0) => Ok(Decoded::Done { trailers: None }),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
                *remaining -= n as u64;
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Decoder::Chunked(chunked) => chunked.decode(buf),
        }
    }

    /// Whether the whole body has been decoded (the connection asks `decode` instead,
    /// which also hands over the trailers; the tests check the state directly).
    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        match self {
            Decoder::Length(n) => *n == 0,
            Decoder::Chunked(chunked) => chunked.state == State::Done,
        }
    }

    /// Body bytes still expected, when known: the remaining length for `Content-Length`
    /// framing, `Some(0)` once any body is complete, `None` while a chunked body is going.
    pub fn remaining_hint(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Chunked(chunked) if chunked.state == State::Done => Some(0),
            Decoder::Chunked(_) => None,
        }
    }
}

impl Chunked {
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match self.state {
                State::Data => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(self.size).map_or(buf.len(), |s| s.min(buf.len()));
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                State::Trailers => return self.trailers(buf),
                State::Done => return Ok(Decoded::Done { trailers: None }),
                _ => {
                    let used = self.framing(buf)?;
                    buf.advance(used);
                    if matches!(self.state, State::Data | State::Trailers) {
                        continue;
                    }
                    // `framing` stops before Data/Trailers or at the end of the buffer.
                    return Ok(Decoded::NeedMore);
                }
            }
        }
    }

    /// Steps through the chunk-size line and the CRLF after chunk data, one byte at a
    /// time, until the state becomes `Data` or `Trailers` or `buf` runs out. Returns how
    /// many bytes it used.
    fn framing(&mut self, buf: &[u8]) -> Result<usize, ParseError> {
        for (used, &b) in buf.iter().enumerate() {
            if self.in_size_line() {
                self.line_len += 1;
                if self.line_len > MAX_CHUNK_SIZE_LINE {
                    return Err(ParseError::ChunkSizeLineTooLong);
                }
            }
            self.state = match self.state {
                // chunk-size = 1*HEXDIG (RFC 9112 §7.1); no sign, no "0x".
                State::Size => match hex_value(b) {
                    Some(v) => {
                        if self.digits == MAX_CHUNK_SIZE_DIGITS {
                            return Err(ParseError::ChunkSizeTooLarge);
                        }
                        self.digits += 1;
                        self.size = self.size << 4 | u64::from(v);
                        State::Size
                    }
                    None if self.digits == 0 => return Err(ParseError::InvalidChunkSize),
                    None => self.after_size(b)?,
                },
                State::SizeWhitespace => self.after_size(b)?,
                // chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
                // (RFC 9112 §7.1.1). Extensions are skipped; only their characters are
                // checked, so no CR, LF or other control can hide inside one.
                State::Extension => {
                    if b != b'\r' {
                        self.count_extension_byte()?;
                    }
                    match b {
                        b'"' => State::ExtensionQuoted,
                        b'\r' => State::SizeLf,
                        b';' | b'=' | b' ' | b'\t' => State::Extension,
                        _ if crate::headers::is_tchar(b) => State::Extension,
                        _ => return Err(ParseError::InvalidChunkSize),
                    }
                }
                // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 9110 §5.6.4)
                State::ExtensionQuoted => {
                    self.count_extension_byte()?;
                    match b {
                        b'"' => State::Extension,
                        b'\\' => State::ExtensionQuotedPair,
                        b'\t' | b' '..=b'~' | 0x80..=0xff => State::ExtensionQuoted,
                        _ => return Err(ParseError::InvalidChunkSize),
                    }
                }
                State::ExtensionQuotedPair => {
                    self.count_extension_byte()?;
                    match b {
                        b'\t' | b' '..=b'~' | 0x80..=0xff => State::ExtensionQuoted,
                        _ => return Err(ParseError::InvalidChunkSize),
                    }
                }
                State::SizeLf => match b {
                    b'\n' if self.size == 0 => State::Trailers,
                    b'\n' => State::Data,
                    _ => return Err(ParseError::InvalidChunkSize),
                },
                // chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(ParseError::InvalidChunkData),
                },
                State::DataLf => match b {
                    b'\n' => {
                        self.size = 0;
                        self.digits = 0;
                        self.line_len = 0;
                        State::Size
                    }
                    _ => return Err(ParseError::InvalidChunkData),
                },
                State::Data | State::Trailers | State::Done => return Ok(used),
            };
            if matches!(self.state, State::Data | State::Trailers) {
                return Ok(used + 1);
            }
        }
        Ok(buf.len())
    }

    fn in_size_line(&self) -> bool {
        matches!(
            self.state,
            State::Size
                | State::SizeWhitespace
                | State::Extension
                | State::ExtensionQuoted
                | State::ExtensionQuotedPair
                | State::SizeLf
        )
    }

    /// The byte after the chunk-size digits (or after whitespace following them).
    fn after_size(&mut self, b: u8) -> Result<State, ParseError> {
        match b {
            // BWS before ";" (RFC 9112 §7.1.1). Trailing whitespace before the CRLF is
            // also tolerated, as hyper does; it cannot change where the line ends.
            b' ' | b'\t' => Ok(State::SizeWhitespace),
            b';' => {
                self.count_extension_byte()?;
                Ok(State::Extension)
            }
            b'\r' => Ok(State::SizeLf),
            _ => Err(ParseError::InvalidChunkSize),
        }
    }

    fn count_extension_byte(&mut self) -> Result<(), ParseError> {
        self.extension_bytes += 1;
        if self.extension_bytes > self.max_extension_bytes {
            return Err(ParseError::ChunkExtensionsTooLong);
        }
        Ok(())
    }

    /// Parses `trailer-section CRLF` (RFC 9112 §7.1.2) once it is all in `buf`.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        let limit = self.max_trailer_size.saturating_add(2);
        let window = &buf[..buf.len().min(limit)];
        // CRLF only (see the module docs): a bare LF is refused where it stands. The
        // section is parsed up to the first one, so that neither a section that ends
        // before it (the bare LF belongs to what follows, e.g. a pipelined request) nor
        // an error found before it depends on how the bytes arrived.
        let bare_lf = window
            .iter()
            .enumerate()
            .position(|(i, &b)| b == b'\n' && (i == 0 || window[i - 1] != b'\r'));
        let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        let parsed =
            httparse::parse_headers(&window[..bare_lf.unwrap_or(window.len())], &mut slots);
        if bare_lf.is_some() && matches!(parsed, Ok(httparse::Status::Partial)) {
            return Err(ParseError::InvalidTrailer);
        }
        let (len, fields) = match parsed {
            Ok(httparse::Status::Complete(done)) => done,
            Ok(httparse::Status::Partial) if buf.len() >= limit => {
                return Err(ParseError::TrailersTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
            Err(httparse::Error::TooManyHeaders) => return Err(ParseError::TooManyTrailers),
            Err(_) => return Err(ParseError::InvalidTrailer),
        };
        // Record positions, then split the section off and slice it (as the head parser
        // does), so trailer fields share one allocation with no per-field copy.
        let base = window.as_ptr() as usize;
        let mut spans = [((0, 0), (0, 0)); MAX_TRAILER_FIELDS];
        let count = fields.len();
        for (span, field) in spans.iter_mut().zip(fields) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            *span = (
                (name, name + field.name.len()),
                (value, value + field.value.len()),
            );
        }
        self.state = State::Done;
        let mut section = buf.split_to(len);
        if count == 0 {
            return Ok(Decoded::Done { trailers: None });
        }
        for &((from, to), _) in &spans[..count] {
            section[from..to].make_ascii_lowercase();
        }
        let section = section.freeze();
        let mut trailers = Headers::with_capacity(count);
        for &(name, value) in &spans[..count] {
            trailers.push_unchecked(
                section.slice(name.0..name.1),
                section.slice(value.0..value.1),
            );
        }
        Ok(Decoded::Done {
            trailers: Some(trailers),
        })
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

// Encoding. The helpers append to a `BytesMut` because that is the connection's output
// buffer: framing is written next to the response head and then split off and frozen into
// `Bytes`, so large bodies can be queued as their own `Bytes` (vectored write) instead of
// being copied, and no intermediate `Vec` is needed.

/// Appends a chunk header: the size in hex and CRLF (RFC 9112 §7.1). The caller then
/// appends the `len` bytes of data (or queues them as their own `Bytes`) and CRLF.
///
/// `len` must not be 0: a zero size is the last-chunk, written by [`encode_last_chunk`].
/// For 0 nothing is written, so the caller must then skip the data's CRLF too.
pub(crate) fn encode_chunk_header(dst: &mut BytesMut, len: usize) {
    if len == 0 {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // 16 digits hold any usize up to 64 bits; 2 more for CRLF.
    let mut out = [0u8; 18];
    let mut at = 16;
    let mut n = len;
    while n > 0 {
        at -= 1;
        out[at] = HEX[n & 0xf];
        n >>= 4;
    }
    out[16] = b'\r';
    out[17] = b'\n';
    dst.extend_from_slice(&out[at..]);
}

/// Appends the last-chunk, the trailer fields (pseudo-headers skipped) and the final CRLF
/// (RFC 9112 §7.1). `Headers` guarantees names are tokens and values hold no CR, LF or
/// NUL, so fields cannot break the framing.
pub(crate) fn encode_last_chunk(dst: &mut BytesMut, trailers: Option<&Headers>) {
    dst.extend_from_slice(b"0\r\n");
    for field in trailers.into_iter().flatten() {
        let name = field.name();
        if name.starts_with(':') {
            continue;
        }
        dst.extend_from_slice(name.as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(field.value_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One whole chunk as the response writer produces it; empty data writes nothing (an
    /// empty chunk would end the body).
    fn encode_chunk(dst: &mut BytesMut, data: &[u8]) {
        if !data.is_empty() {
            encode_chunk_header(dst, data.len());
            dst.extend_from_slice(data);
            dst.extend_from_slice(b"\r\n");
        }
    }

    /// How decoding an input must end.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Want {
        /// The body is complete with this data and these trailers; `rest` is left over.
        Done {
            data: Vec<u8>,
            trailers: Option<Vec<(String, String)>>,
            rest: Vec<u8>,
        },
        /// The input ends inside the body, after this data.
        Incomplete {
            data: Vec<u8>,
        },
        Error(ParseError),
    }

    fn done(data: &[u8], rest: &[u8]) -> Want {
        Want::Done {
            data: data.to_vec(),
            trailers: None,
            rest: rest.to_vec(),
        }
    }

    fn done_with_trailers(data: &[u8], trailers: &[(&str, &str)], rest: &[u8]) -> Want {
        Want::Done {
            data: data.to_vec(),
            trailers: Some(
                trailers
                    .iter()
                    .map(|&(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
            ),
            rest: rest.to_vec(),
        }
    }

    fn incomplete(data: &[u8]) -> Want {
        Want::Incomplete {
            data: data.to_vec(),
        }
    }

    /// Feeds `pieces` one after another into a fresh decoder, decoding after each until it
    /// needs more, and reports how that ended.
    fn run(kind: BodyKind, max_trailer_size: usize, pieces: &[&[u8]]) -> Want {
        run_with(&Decoder::new(kind, max_trailer_size), pieces)
    }

    /// [`run`] with a copy of the given decoder.
    fn run_with(decoder: &Decoder, pieces: &[&[u8]]) -> Want {
        let mut decoder = decoder.clone();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        // No pieces at all still gets one decode call, on an empty buffer.
        let pieces = if pieces.is_empty() {
            &[&b""[..]][..]
        } else {
            pieces
        };
        for (i, piece) in pieces.iter().enumerate() {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Decoded::Data(d)) => {
                        assert!(!d.is_empty(), "empty Data");
                        data.extend_from_slice(&d);
                    }
                    Ok(Decoded::NeedMore) => break,
                    Ok(Decoded::Done { trailers }) => {
                        assert!(decoder.is_done());
                        assert_eq!(decoder.remaining_hint(), Some(0));
                        // Done again, without trailers, and nothing more is consumed.
                        let before = buf.clone();
                        assert_eq!(
                            decoder.decode(&mut buf),
                            Ok(Decoded::Done { trailers: None })
                        );
                        assert_eq!(buf, before);
                        let mut rest = buf.to_vec();
                        for p in &pieces[i + 1..] {
                            rest.extend_from_slice(p);
                        }
                        let trailers = trailers.map(|t| {
                            t.iter()
                                .map(|f| {
                                    let v = String::from_utf8_lossy(f.value_bytes()).into_owned();
                                    (f.name().to_owned(), v)
                                })
                                .collect()
                        });
                        return Want::Done {
                            data,
                            trailers,
                            rest,
                        };
                    }
                    Err(e) => return Want::Error(e),
                }
            }
        }
        assert!(!decoder.is_done());
        Want::Incomplete { data }
    }

    fn check(input: &[u8], expected: Want) {
        check_kind(BodyKind::Chunked, 1024, input, expected);
    }

    /// Decodes `input` whole, split at every offset, and byte by byte; all must agree.
    fn check_kind(kind: BodyKind, max_trailer_size: usize, input: &[u8], expected: Want) {
        check_decoder(&Decoder::new(kind, max_trailer_size), input, expected);
    }

    fn check_decoder(decoder: &Decoder, input: &[u8], expected: Want) {
        let ctx = String::from_utf8_lossy(&input[..input.len().min(200)]).into_owned();
        assert_eq!(run_with(decoder, &[input]), expected, "whole {ctx:?}");
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(
                run_with(decoder, &[a, b]),
                expected,
                "split at {split}: {ctx:?}"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run_with(decoder, &bytes), expected, "byte by byte: {ctx:?}");
    }

    #[test]
    fn length_body_stops_at_its_length() {
        check_kind(
            BodyKind::Length(5),
            0,
            b"helloGET / HTTP/1.1",
            done(b"hello", b"GET / HTTP/1.1"),
        );
        check_kind(BodyKind::Length(10), 0, b"hello", incomplete(b"hello"));
    }

    #[test]
    fn empty_body_is_done_at_once() {
        check_kind(BodyKind::Empty, 0, b"next", done(b"", b"next"));
        check_kind(BodyKind::Length(0), 0, b"", done(b"", b""));
    }

    #[test]
    fn hints_and_done() {
        let mut d = Decoder::new(BodyKind::Length(5), 0);
        assert_eq!(d.remaining_hint(), Some(5));
        assert!(!d.is_done());
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"abc")))
        );
        assert_eq!(d.remaining_hint(), Some(2));
        assert_eq!(d.decode(&mut buf), Ok(Decoded::NeedMore));
        let d = Decoder::new(BodyKind::Chunked, 0);
        assert_eq!(d.remaining_hint(), None);
        assert!(!d.is_done());
        assert!(Decoder::new(BodyKind::Empty, 0).is_done());
    }

    #[test]
    fn data_is_not_copied() {
        let mut d = Decoder::new(BodyKind::Chunked, 0);
        let mut buf = BytesMut::from(&b"5\r\nhello\r\n0\r\n\r\n"[..]);
        let at = buf.as_ptr() as usize;
        let Ok(Decoded::Data(data)) = d.decode(&mut buf) else {
            panic!("no data");
        };
        assert_eq!(data.as_ptr() as usize - at, 3);
    }

    #[test]
    fn data_comes_before_the_chunk_is_complete() {
        let mut d = Decoder::new(BodyKind::Chunked, 0);
        let mut buf = BytesMut::from(&b"a\r\nhel"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Ok(Decoded::Data(Bytes::from_static(b"hel")))
        );
        assert_eq!(d.decode(&mut buf), Ok(Decoded::NeedMore));
    }

    #[test]
    fn chunked_body() {
        check(
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT",
            done(b"hello world", b"NEXT"),
        );
        check(b"A\r\n0123456789\r\n0\r\n\r\n", done(b"0123456789", b""));
        check(b"0\r\n\r\n", done(b"", b""));
        check(b"005\r\nhello\r\n000\r\n\r\n", done(b"hello", b""));
        check(b"5\r\nhello\r\n", incomplete(b"hello"));
        check(b"5\r\nhel", incomplete(b"hel"));
    }

    #[test]
    fn whitespace_after_chunk_size_is_tolerated() {
        check(b"5 \t\r\nhello\r\n0 ;x\r\n\r\n", done(b"hello", b""));
    }

    #[test]
    fn chunk_extensions_are_skipped() {
        check(
            b"5;foo=bar;baz\r\nhello\r\n3 ; q=\"a\\\"b;\tc\" ;r\r\nabc\r\n0;last=\"\"\r\n\r\n",
            done(b"helloabc", b""),
        );
    }

    #[test]
    fn control_characters_in_extensions_are_400() {
        let cases: [&[u8]; 5] = [
            b"5;a\x01\r\nhello\r\n0\r\n\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n",
            b"5;a=\"x\\\ny\"\r\nhello\r\n0\r\n\r\n",
        ];
        for input in cases {
            check(input, Want::Error(ParseError::InvalidChunkSize));
        }
    }

    #[test]
    fn oversized_chunk_size_line_is_400() {
        let mut input = b"5;".to_vec();
        input.resize(MAX_CHUNK_SIZE_LINE + 10, b'a');
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        check(&input, Want::Error(ParseError::ChunkSizeLineTooLong));
        // At the limit it is fine.
        let mut input = b"5;".to_vec();
        input.resize(MAX_CHUNK_SIZE_LINE - 2, b'a');
        input.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        check(&input, done(b"hello", b""));
    }

    /// A body of `chunks` one-byte chunks, each with an `ext_len`-byte extension.
    fn chunks_with_extensions(chunks: usize, ext_len: usize) -> Vec<u8> {
        let mut input = Vec::new();
        for _ in 0..chunks {
            input.extend_from_slice(b"1;");
            input.resize(input.len() + ext_len - 1, b'e');
            input.extend_from_slice(b"\r\nx\r\n");
        }
        input.extend_from_slice(b"0\r\n\r\n");
        input
    }

    #[test]
    fn chunk_extensions_are_bounded_over_the_whole_body() {
        // With a lowered budget, so the every-offset split stays fast: 10 extensions of
        // 10 bytes fit in 100, an 11th does not.
        let mut decoder = Decoder::new(BodyKind::Chunked, 0);
        if let Decoder::Chunked(chunked) = &mut decoder {
            chunked.max_extension_bytes = 100;
        }
        check_decoder(
            &decoder,
            &chunks_with_extensions(10, 10),
            done(b"xxxxxxxxxx", b""),
        );
        check_decoder(
            &decoder,
            &chunks_with_extensions(11, 10),
            Want::Error(ParseError::ChunkExtensionsTooLong),
        );
        // The real budget, whole and byte by byte.
        let input = chunks_with_extensions(MAX_CHUNK_EXTENSIONS / 2000 + 1, 2000);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        for pieces in [vec![&input[..]], bytes] {
            assert_eq!(
                run(BodyKind::Chunked, 0, &pieces),
                Want::Error(ParseError::ChunkExtensionsTooLong)
            );
        }
    }

    #[test]
    fn chunk_size_overflow_is_400() {
        // 17 hex digits cannot fit in a u64, whatever their value.
        check(
            b"10000000000000000\r\n",
            Want::Error(ParseError::ChunkSizeTooLarge),
        );
        check(
            b"00000000000000001\r\nx\r\n0\r\n\r\n",
            Want::Error(ParseError::ChunkSizeTooLarge),
        );
        // 16 digits do.
        check(b"ffffffffffffffff\r\nabc", incomplete(b"abc"));
        check(b"0000000000000001\r\nx\r\n0\r\n\r\n", done(b"x", b""));
    }

    #[test]
    fn negative_or_non_hex_chunk_size_is_400() {
        let cases: [&[u8]; 7] = [
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"g\r\n",
            b"\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b";x\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
        ];
        for input in cases {
            check(input, Want::Error(ParseError::InvalidChunkSize));
        }
    }

    #[test]
    fn bare_lf_in_chunked_framing_is_400() {
        check(
            b"5\nhello\r\n0\r\n\r\n",
            Want::Error(ParseError::InvalidChunkSize),
        );
        check(
            b"5\r\nhello\n0\r\n\r\n",
            Want::Error(ParseError::InvalidChunkData),
        );
        check(b"0\r\n\n", Want::Error(ParseError::InvalidTrailer));
        check(b"0\r\nX: a\n\r\n", Want::Error(ParseError::InvalidTrailer));
    }

    /// Found by fuzzing (`fuzz/seeds/chunked/regress-bare-lf-after-body`): the bare-LF
    /// check read past the trailer section, so a valid body followed by pipelined bytes
    /// with a bare LF was 400 — or not, depending on how the bytes arrived.
    #[test]
    fn a_bare_lf_after_the_body_belongs_to_what_follows() {
        check(b"0\r\n\r\n\n", done(b"", b"\n"));
        // `fuzz/seeds/chunked/regress-too-many-trailers-then-bare-lf`: too many fields
        // are too many whether or not the bare LF after them has arrived.
        let mut many = b"0\r\n".to_vec();
        for _ in 0..=MAX_TRAILER_FIELDS {
            many.extend_from_slice(b"a:b\r\n");
        }
        many.push(b'\n');
        check(&many, Want::Error(ParseError::TooManyTrailers));
        check(
            b"1\r\na\r\n0\r\nX: y\r\n\r\nGET / HTTP/1.1\nHost: a\n\n",
            done_with_trailers(b"a", &[("x", "y")], b"GET / HTTP/1.1\nHost: a\n\n"),
        );
    }

    #[test]
    fn chunk_data_must_end_with_crlf() {
        check(
            b"5\r\nhelloX\r\n0\r\n\r\n",
            Want::Error(ParseError::InvalidChunkData),
        );
        check(
            b"5\r\nhello\rX0\r\n\r\n",
            Want::Error(ParseError::InvalidChunkData),
        );
    }

    #[test]
    fn trailers_are_parsed() {
        check(
            b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum:  ABC \r\nx-sum: d\r\n\r\nGET",
            done_with_trailers(
                b"abc",
                &[("expires", "never"), ("x-sum", "ABC"), ("x-sum", "d")],
                b"GET",
            ),
        );
    }

    #[test]
    fn malformed_trailers_are_400() {
        let cases: [&[u8]; 4] = [
            b"0\r\nX : a\r\n\r\n",
            b"0\r\nX: a\r\n b\r\n\r\n",
            b"0\r\n:path: /\r\n\r\n",
            b"0\r\nX: a\rb\r\n\r\n",
        ];
        for input in cases {
            check(input, Want::Error(ParseError::InvalidTrailer));
        }
    }

    #[test]
    fn trailer_section_is_bounded() {
        // "X: 0123456789a\r\n" is 16 bytes: exactly the limit.
        check_kind(
            BodyKind::Chunked,
            16,
            b"0\r\nX: 0123456789a\r\n\r\n",
            done_with_trailers(b"", &[("x", "0123456789a")], b""),
        );
        check_kind(
            BodyKind::Chunked,
            16,
            b"0\r\nX: 0123456789ab\r\n\r\n",
            Want::Error(ParseError::TrailersTooLarge),
        );
        // A zero limit still allows the empty trailer section.
        check_kind(BodyKind::Chunked, 0, b"0\r\n\r\nx", done(b"", b"x"));
        assert_eq!(ParseError::TrailersTooLarge.status(), 431);
    }

    #[test]
    fn too_many_trailer_fields_is_431() {
        let mut input = b"0\r\n".to_vec();
        for i in 0..=MAX_TRAILER_FIELDS {
            input.extend_from_slice(format!("t{i}: {i}\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        check(&input, Want::Error(ParseError::TooManyTrailers));
    }

    #[test]
    fn chunk_header_encoding() {
        let mut dst = BytesMut::new();
        encode_chunk_header(&mut dst, 0x1a);
        encode_chunk_header(&mut dst, 0);
        encode_chunk_header(&mut dst, 1);
        assert_eq!(&dst[..], b"1a\r\n1\r\n");
        let mut dst = BytesMut::new();
        encode_chunk_header(&mut dst, usize::MAX);
        assert_eq!(dst.len(), usize::BITS as usize / 4 + 2);
        assert!(dst.iter().take(dst.len() - 2).all(|&b| b == b'f'));
    }

    #[test]
    fn chunk_encoding() {
        let mut dst = BytesMut::new();
        encode_chunk(&mut dst, b"hello");
        encode_chunk(&mut dst, b"");
        encode_last_chunk(&mut dst, None);
        assert_eq!(&dst[..], b"5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn last_chunk_with_trailers_skips_pseudo_headers() {
        let mut trailers = Headers::new();
        trailers.append(":status", "200");
        trailers.append("X-Checksum", "abc");
        trailers.append("grpc-status", "0");
        let mut dst = BytesMut::new();
        encode_last_chunk(&mut dst, Some(&trailers));
        assert_eq!(&dst[..], b"0\r\nx-checksum: abc\r\ngrpc-status: 0\r\n\r\n");
    }

    fn chunk_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => prop::sample::select(b"0123456789abcdefABCDEF;=\" \t\r\n\\xX:-".to_vec()),
            1 => any::<u8>(),
        ]
    }

    fn trailer_name() -> impl Strategy<Value = String> {
        "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,10}"
    }

    fn trailer_value() -> impl Strategy<Value = String> {
        "([!-~]([ -~]{0,12}[!-~])?)?"
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_split_consistently(
            bytes in prop::collection::vec(chunk_byte(), 0..400),
            max_trailer_size in 0usize..64,
            piece_len in 1usize..64,
        ) {
            for kind in [BodyKind::Chunked, BodyKind::Length(100), BodyKind::Length(u64::MAX)] {
                let pieces: Vec<&[u8]> = bytes.chunks(piece_len).collect();
                prop_assert_eq!(
                    run(kind, max_trailer_size, &pieces),
                    run(kind, max_trailer_size, &[&bytes])
                );
            }
        }

        #[test]
        fn encoded_chunks_decode_to_the_same_data_and_trailers(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..8),
            fields in prop::collection::vec((trailer_name(), trailer_value()), 0..5),
            piece_len in 1usize..50,
        ) {
            let mut wire = BytesMut::new();
            for chunk in &chunks {
                encode_chunk(&mut wire, chunk);
            }
            let mut trailers = Headers::new();
            for (name, value) in &fields {
                trailers.append(name, value.clone());
            }
            encode_last_chunk(&mut wire, Some(&trailers));
            wire.extend_from_slice(b"NEXT");

            let pieces: Vec<&[u8]> = wire.chunks(piece_len).collect();
            let expected = Want::Done {
                data: chunks.concat(),
                trailers: (!fields.is_empty()).then(|| {
                    fields
                        .iter()
                        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                        .collect()
                }),
                rest: b"NEXT".to_vec(),
            };
            prop_assert_eq!(run(BodyKind::Chunked, 1024, &pieces), expected);
        }
    }
}
