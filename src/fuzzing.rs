//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off by default; not
//! public API, hidden from the documentation, and free to change with the parsers).
//!
//! Each function runs one of the crate-private parsers over arbitrary bytes the way the
//! server feeds it — whole, and in pieces, since bytes arrive in reads of any size — and
//! panics when an invariant beyond "no panic" breaks:
//!
//! - [`h1_head`]: `h1::parse::parse_request`. A head never takes more than the buffer
//!   holds nor more than the limit allows; `Ok(None)` consumes nothing; a prefix of the
//!   input parses to `Ok(None)` or to what the whole input parses to.
//! - [`chunked`]: `h1::body::Decoder` on a chunked body. Whole, in two pieces and byte by
//!   byte give the same data, trailers, end (done, error, or more needed) and leftover.
//! - [`sniff`]: the first-bytes classifiers of `sniff`. A decision once made never changes
//!   as more bytes arrive.
//! - [`ws_frame`]: `websocket::frame`. Frame headers parse the same from any prefix that
//!   holds them; a parsed header is well formed and survives re-encoding; masking in two
//!   pieces equals masking at once, and twice is the identity.
//!
//! Input layout: the first byte chooses where the input is split (scaled to its length);
//! `h1_head` and `chunked` take a second byte for their limits. The rest is the bytes
//! from the peer.

use bytes::BytesMut;

use crate::h1::body::{Decoded, Decoder};
use crate::h1::parse::{parse_request, BodyKind, Limits, ParseError, RequestHead};
use crate::sniff;
use crate::websocket::frame;

/// Where to split an input of `len` bytes, chosen by `byte`: 0 is the start, 255 the end.
fn split_point(len: usize, byte: u8) -> usize {
    len * byte as usize / 255
}

/// Empty lines `parse_request` skips before a request-line, at most two bytes each, which
/// `Limits::max_head` does not count (its `MAX_LEADING_EMPTY_LINES` is 4).
const MAX_SKIPPED: usize = 4 * 2;

/// Parses an HTTP/1 request head from `data[2..]`, whole and split at the point chosen by
/// `data[0]`; `data[1]` chooses the limits (0: the defaults; otherwise small ones, so the
/// 414 and 431 paths are reachable with short inputs).
pub fn h1_head(data: &[u8]) {
    let &[split, limit, ref input @ ..] = data else {
        return;
    };
    let at = split_point(input.len(), split);
    let limits = if limit == 0 {
        Limits::default()
    } else {
        let n = limit as usize;
        Limits {
            max_request_line: 4 * n,
            max_head: 8 * n,
            max_headers: n % 130,
            ..Limits::default()
        }
    };

    let mut whole = BytesMut::from(input);
    let expected = parse_request(&mut whole, "http", &limits);
    check_head(&expected, input, &whole, &limits);

    let mut buf = BytesMut::from(&input[..at]);
    match parse_request(&mut buf, "http", &limits) {
        Ok(None) => {
            assert_eq!(&buf[..], &input[..at], "Ok(None) consumed bytes");
            buf.extend_from_slice(&input[at..]);
            let got = parse_request(&mut buf, "http", &limits);
            assert_eq!(got, expected, "prefix of {at} bytes, then the rest");
            assert_eq!(
                buf, whole,
                "leftover after a prefix of {at} bytes, then the rest"
            );
        }
        Ok(Some(head)) => {
            // The head was complete within the prefix: the same head, and the same bytes
            // after it.
            assert_eq!(Ok(Some(head)), expected, "prefix of {at} bytes");
            let mut rest = buf.to_vec();
            rest.extend_from_slice(&input[at..]);
            assert_eq!(
                &rest[..],
                &whole[..],
                "leftover after a prefix of {at} bytes"
            );
        }
        Err(e) => assert_eq!(Err(e), expected, "prefix of {at} bytes"),
    }
}

/// What must hold of one `parse_request` result over `input`, `buf` being what is left.
fn check_head(
    result: &Result<Option<RequestHead>, ParseError>,
    input: &[u8],
    buf: &[u8],
    limits: &Limits,
) {
    assert!(buf.len() <= input.len());
    let consumed = input.len() - buf.len();
    // What is left is always the input's tail, untouched.
    assert_eq!(buf, &input[consumed..], "leftover is not the input's tail");
    let Ok(Some(head)) = result else {
        assert_eq!(consumed, 0, "no head, yet bytes were consumed");
        return;
    };
    assert!(consumed > 0, "a head of no bytes");
    assert!(
        consumed <= limits.max_head + MAX_SKIPPED,
        "a head of {consumed} bytes, over max_head {}",
        limits.max_head
    );
    let names: Vec<&str> = head.headers.iter().map(|f| f.name()).collect();
    assert!(
        names.starts_with(&[":method", ":scheme", ":path"]),
        "pseudo-headers {names:?}"
    );
    let regular = names.iter().filter(|n| !n.starts_with(':')).count();
    assert!(regular <= limits.max_headers, "{regular} fields accepted");
    assert!(
        head.version == http::Version::HTTP_10 || head.version == http::Version::HTTP_11,
        "version {:?}",
        head.version
    );
    assert_ne!(head.body, BodyKind::Length(0), "Length(0) instead of Empty");
    let method = head.headers.get_bytes(":method").expect(":method");
    assert!(!method.is_empty(), "empty method");
    assert_eq!(head.is_head, method == b"HEAD");
    assert_eq!(head.is_connect, method == b"CONNECT");
    if head.version == http::Version::HTTP_10 {
        assert!(
            !head.expect_continue && !head.upgrade,
            "1.1-only flags on 1.0"
        );
        assert_ne!(head.body, BodyKind::Chunked, "chunked HTTP/1.0 request");
    }
}

/// How one run of the chunked decoder ended.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done {
        data: Vec<u8>,
        trailers: Option<Vec<(String, Vec<u8>)>>,
        rest: Vec<u8>,
    },
    Incomplete {
        data: Vec<u8>,
    },
    Error {
        data: Vec<u8>,
        error: ParseError,
    },
}

/// Decodes `data[2..]` as a chunked body, whole, split at the point chosen by `data[0]`,
/// and one byte at a time: all three must agree. `data[1]` times 16 is the largest
/// trailer section allowed.
pub fn chunked(data: &[u8]) {
    let &[split, limit, ref input @ ..] = data else {
        return;
    };
    let at = split_point(input.len(), split);
    let max_trailer_size = limit as usize * 16;

    let whole = decode(max_trailer_size, &[input]);
    let (a, b) = input.split_at(at);
    assert_eq!(decode(max_trailer_size, &[a, b]), whole, "split at {at}");
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(decode(max_trailer_size, &bytes), whole, "byte by byte");
}

/// Feeds `pieces` one after another to a fresh chunked decoder, decoding after each until
/// it needs more, as the connection does.
fn decode(max_trailer_size: usize, pieces: &[&[u8]]) -> Outcome {
    let mut decoder = Decoder::new(BodyKind::Chunked, max_trailer_size);
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(d)) => {
                    assert!(!d.is_empty(), "empty Data");
                    assert!(buf.len() < before, "Data without consuming");
                    data.extend_from_slice(&d);
                }
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::Done { trailers }) => {
                    assert_eq!(decoder.remaining_hint(), Some(0), "Done, yet more expected");
                    // Done again, without trailers, and nothing more consumed.
                    let left = buf.clone();
                    assert_eq!(
                        decoder.decode(&mut buf),
                        Ok(Decoded::Done { trailers: None }),
                        "a second Done"
                    );
                    assert_eq!(buf, left, "a second Done consumed bytes");
                    let mut rest = buf.to_vec();
                    for p in &pieces[i + 1..] {
                        rest.extend_from_slice(p);
                    }
                    let trailers = trailers.map(|t| {
                        assert!(!t.is_empty(), "Some(trailers) with no field");
                        t.iter()
                            .map(|f| (f.name().to_owned(), f.value_bytes().to_vec()))
                            .collect()
                    });
                    return Outcome::Done {
                        data,
                        trailers,
                        rest,
                    };
                }
                Err(error) => return Outcome::Error { data, error },
            }
        }
    }
    assert_eq!(
        decoder.remaining_hint(),
        None,
        "not done, yet nothing expected"
    );
    Outcome::Incomplete { data }
}

/// Runs the connection sniffer (TLS ClientHello, then the HTTP/2 preface) over
/// `data[1..]` as it grows: up to the split point chosen by `data[0]`, then whole.
pub fn sniff(data: &[u8]) {
    let &[split, ref input @ ..] = data else {
        return;
    };
    let at = split_point(input.len(), split);
    let tls = sniff::is_tls(input);
    assert_eq!(tls, input.first().map(|&b| b == 0x16));
    let h2 = sniff::is_h2_preface(input);
    match h2 {
        Some(true) => assert!(input.starts_with(sniff::H2_PREFACE)),
        Some(false) => {}
        None => {
            assert!(sniff::H2_PREFACE.starts_with(input) && input.len() < sniff::H2_PREFACE.len())
        }
    }
    // What a prefix decided, the whole input decides too.
    let prefix = &input[..at];
    if let Some(decided) = sniff::is_tls(prefix) {
        assert_eq!(
            Some(decided),
            tls,
            "is_tls changed its mind after {at} bytes"
        );
    }
    if let Some(decided) = sniff::is_h2_preface(prefix) {
        assert_eq!(
            Some(decided),
            h2,
            "is_h2_preface changed its mind after {at} bytes"
        );
    }
}

/// Parses `data[1..]` as a client's stream of WebSocket frames, header after header and
/// payload after payload, until a header is refused or incomplete. Each header is also
/// parsed from the prefix of it chosen by `data[0]`, and each payload is unmasked whole
/// and in two pieces.
pub fn ws_frame(data: &[u8]) {
    let &[split, ref input @ ..] = data else {
        return;
    };
    let mut input: &[u8] = input;
    loop {
        let result = frame::parse_header(input);
        // A prefix is incomplete or refused for the same reason.
        let at = split_point(input.len().min(14), split);
        match frame::parse_header(&input[..at]) {
            Ok(None) => {}
            prefix => assert_eq!(prefix, result, "prefix of {at} bytes"),
        }
        let (header, len) = match result {
            Ok(Some(parsed)) => parsed,
            Ok(None) => {
                assert!(input.len() < 14, "{} bytes, no header", input.len());
                return;
            }
            Err(_) => return,
        };
        assert!(
            len <= input.len(),
            "header of {len} bytes in {}",
            input.len()
        );
        assert!(matches!(len, 6 | 8 | 14), "header of {len} bytes");
        assert!(header.len >> 63 == 0, "length {}", header.len);
        if header.opcode.is_control() {
            assert!(header.fin, "fragmented control frame");
            assert!(
                header.len <= frame::MAX_CONTROL_PAYLOAD as u64,
                "long control frame"
            );
        }
        // Re-encoded (with the mask bit and the mask put back), it parses the same.
        // `encode_header` reserves room for the payload too: lengths past 1 MiB, which
        // all take the 64-bit form, are left out.
        if header.len <= 1 << 20 {
            let mut encoded = BytesMut::new();
            frame::encode_header(
                &mut encoded,
                header.fin,
                header.rsv1,
                header.opcode,
                header.len as usize,
            );
            encoded[1] |= 0x80;
            encoded.extend_from_slice(&header.mask);
            assert_eq!(
                frame::parse_header(&encoded),
                Ok(Some((header, encoded.len()))),
                "re-encoded {header:?}"
            );
        }

        input = &input[len..];
        let n = usize::try_from(header.len).map_or(input.len(), |l| l.min(input.len()));
        let (payload, after) = input.split_at(n);
        let mut once = payload.to_vec();
        frame::apply_mask(&mut once, header.mask, 0);
        let mut pieces = payload.to_vec();
        let (a, b) = pieces.split_at_mut(split_point(n, split));
        frame::apply_mask(a, header.mask, 0);
        let offset = a.len() as u64;
        frame::apply_mask(b, header.mask, offset);
        assert_eq!(once, pieces, "masked in two pieces at {offset}");
        frame::apply_mask(&mut once, header.mask, 0);
        assert_eq!(once, payload, "masked twice");
        if (n as u64) < header.len {
            return;
        }
        input = after;
    }
}
