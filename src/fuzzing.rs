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
//! - [`h2_frames`]: `h2own`'s connection (`h2own::serve`) over an in-memory byte stream
//!   (a client's frames after the preface; no socket, no loop step). What the server
//!   writes is whole frames of the kinds a server with silent handlers sends, answering
//!   only what was asked, granting no window past 2^31-1, at most one GOAWAY, no more
//!   than a few times the input; the input in two reads gives the same output as in one.
//! - [`h2_hpack_request`]: `h2own::hpack::Decoder` on header blocks sharing one table,
//!   then `h2own::request`'s rules: an accepted request head or trailers obeys RFC 9113
//!   §8.2–8.3 and holds exactly the decoded fields, within the header list bound, and
//!   decoding allocates a bounded amount.
//! - [`h2_hpack_response`]: `h2own::hpack`'s encoder: valid response fields decode (by
//!   `loona-hpack`) to themselves, and the block splits into frames and back.
//!
//! Input layout: the first byte chooses where the input is split (scaled to its length);
//! `h1_head` and `chunked` take a second byte for their limits, `h2_frames` one for its
//! mode. The rest is the bytes from the peer. The HPACK targets have their own layouts
//! (in their functions' documentation).

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::h1::body::{Decoded, Decoder};
use crate::h1::parse::{parse_request, BodyKind, Limits, ParseError, RequestHead};
use crate::h2::H2Config;
use crate::h2own::{
    self,
    frame::{self as h2frame, flag, kind, HEAD_LEN, MAX_FRAME},
    hpack,
    request::Block,
};
use crate::headers::Headers;
use crate::options::Options;
use crate::rt::Controller;
use crate::sniff;
use crate::transport::{Io, Transport};
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

// ---- The HTTP/2 engine of our own (`h2own/`) ----

/// A connection's client side with no socket: reads hand out `pieces` in order (a read
/// never spans two, so each piece boundary is a read boundary), then EOF; every write is
/// taken at once into `out`.
struct Wire {
    pieces: VecDeque<Vec<u8>>,
    out: Rc<RefCell<Vec<u8>>>,
}

impl AsyncRead for Wire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(piece) = self.pieces.front_mut() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            piece.drain(..n);
            if piece.is_empty() {
                self.pieces.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.borrow_mut().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Io for Wire {}

/// A waker that only records that it was woken: the connection's task asks to run again
/// when it stopped reading with input left (`READS_PER_TURN`, output over its bound).
struct WokenFlag(AtomicBool);

impl Wake for WokenFlag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

thread_local! {
    /// The connection's timers need a loop; it is never stepped (no timer fires within
    /// one input), only entered.
    static LOOP: Controller = Controller::new().expect("a controller");
}

/// Polls of one connection before the target gives up on it: far more than any input of
/// libFuzzer's sizes needs (16 reads of up to 32 KiB each per poll).
const MAX_POLLS: usize = 10_000;

/// The engine's settings as `Server` makes them from `Options::default()`, or small ones
/// (`small`) so that the stream, reset, header-list and window bounds are reachable with
/// short inputs.
fn h2_config(small: bool) -> H2Config {
    let mut cfg = H2Config::from_options(&Options::default());
    if small {
        cfg.max_concurrent_streams = 2;
        cfg.max_header_list_size = 200;
        cfg.max_pending_accept_reset_streams = 2;
        cfg.max_local_error_reset_streams = 8;
        cfg.initial_window_size = 100;
        cfg.initial_connection_window_size = 0;
        cfg.max_discard = 50;
    }
    cfg
}

/// Runs `h2own::serve` over a connection whose client sends the preface (read ahead, as
/// the sniffer hands it over) and then `pieces`, one read each, then closes its side.
/// Handlers are kept to the end (`hold`) or dropped at once, unanswered. Returns what the
/// server wrote.
fn run_conn(cfg: &H2Config, pieces: &[&[u8]], hold: bool) -> Vec<u8> {
    LOOP.with(|ctl| {
        ctl.enter(|| {
            let out = Rc::new(RefCell::new(Vec::new()));
            let wire = Wire {
                pieces: pieces
                    .iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| p.to_vec())
                    .collect(),
                out: out.clone(),
            };
            let transport = Transport {
                io: Box::new(wire),
                read_ahead: BytesMut::from(h2frame::PREFACE),
                peer_addr: None,
                local_addr: None,
                scheme: "http",
                h2: true,
            };
            let held = RefCell::new(Vec::new());
            {
                let task = h2own::serve(
                    transport,
                    cfg,
                    |stream| {
                        if hold {
                            held.borrow_mut().push(stream);
                        }
                    },
                    |_| {},
                );
                let mut task = std::pin::pin!(task);
                let woken = Arc::new(WokenFlag(AtomicBool::new(false)));
                let waker = Waker::from(woken.clone());
                let mut cx = Context::from_waker(&waker);
                for _ in 0..MAX_POLLS {
                    woken.0.store(false, Ordering::Relaxed);
                    if task.as_mut().poll(&mut cx).is_ready() || !woken.0.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
            drop(held);
            out.take()
        })
    })
}

/// What the client's bytes hold, frame by frame as far as they are well formed, for
/// checking the server's answers against.
#[derive(Default)]
struct ClientFrames {
    /// The largest stream identifier of a HEADERS frame: streams above it are idle, and
    /// the server may send nothing on them (RFC 9113 §5.1, §6.4).
    max_opened: u32,
    /// Payloads of PINGs that want an answer.
    pings: Vec<[u8; 8]>,
    /// SETTINGS that want an acknowledgement.
    n_settings: usize,
    /// DATA frame lengths (padding included): on the connection, and per stream.
    data: u64,
    data_on: HashMap<u32, u64>,
}

fn scan_client(mut input: &[u8]) -> ClientFrames {
    let mut c = ClientFrames::default();
    while let Some((head, rest)) = input.split_first_chunk::<HEAD_LEN>() {
        let head = h2frame::parse_head(head);
        if head.len > MAX_FRAME || head.len > rest.len() {
            break;
        }
        let payload = &rest[..head.len];
        if head.kind == kind::HEADERS {
            c.max_opened = c.max_opened.max(head.stream);
        }
        match head.kind {
            kind::PING if !head.has(flag::ACK) => {
                if let Ok(p) = payload.try_into() {
                    c.pings.push(p);
                }
            }
            kind::SETTINGS if !head.has(flag::ACK) => c.n_settings += 1,
            kind::DATA => {
                c.data += head.len as u64;
                *c.data_on.entry(head.stream).or_default() += head.len as u64;
            }
            _ => {}
        }
        input = &rest[head.len..];
    }
    c
}

/// What must hold of everything the server wrote, `out`, to a client that sent `client`
/// (after the preface) and whose handlers never answered: all the server may send on a
/// stream by itself is a 431 for a header list over the bound.
fn check_output(out: &[u8], client: &[u8], cfg: &H2Config) {
    let c = scan_client(client);
    // Amplification: each client frame (9 bytes at least) earns a few short frames at
    // most (a padded DATA frame of 10 bytes: two WINDOW_UPDATEs of 13).
    assert!(
        out.len() <= 256 + 4 * client.len(),
        "{} bytes written for {} read",
        out.len(),
        client.len()
    );
    let initial_window = i64::from(cfg.initial_window_size).min(h2frame::MAX_WINDOW);
    let mut credit: HashMap<u32, i64> = HashMap::new();
    // The first RST_STREAM's code per stream.
    let mut resets: HashMap<u32, u32> = HashMap::new();
    let (mut n_goaway, mut n_settings_acks, mut n_ping_acks) = (0, 0, 0);
    let mut rest = out;
    let mut first = true;
    while !rest.is_empty() {
        let (head, after) = rest
            .split_first_chunk::<HEAD_LEN>()
            .expect("output ends inside a frame header");
        let head = h2frame::parse_head(head);
        assert!(head.len <= MAX_FRAME, "{head:?} over the frame size");
        assert!(head.len <= after.len(), "output ends inside {head:?}");
        let payload = &after[..head.len];
        rest = &after[head.len..];
        if first {
            assert!(
                head.kind == kind::SETTINGS && head.flags == 0 && head.stream == 0,
                "the server's preface is {head:?}"
            );
            assert_eq!(head.len % 6, 0, "{head:?}");
            first = false;
            continue;
        }
        match head.kind {
            kind::SETTINGS => {
                assert!(
                    head.has(flag::ACK) && head.len == 0 && head.stream == 0,
                    "{head:?}"
                );
                n_settings_acks += 1;
            }
            kind::PING => {
                assert!(
                    head.has(flag::ACK) && head.len == 8 && head.stream == 0,
                    "{head:?}"
                );
                assert!(
                    c.pings.iter().any(|p| p == payload),
                    "PING ACK {payload:?} for no PING"
                );
                n_ping_acks += 1;
            }
            kind::WINDOW_UPDATE => {
                assert_eq!(head.len, 4, "{head:?}");
                let inc = u32::from_be_bytes(payload.try_into().expect("4 bytes"));
                assert!(
                    inc > 0 && inc >> 31 == 0,
                    "WINDOW_UPDATE of {inc:#x} on {}",
                    head.stream
                );
                assert!(head.stream <= c.max_opened, "{head:?} on an idle stream");
                *credit.entry(head.stream).or_default() += i64::from(inc);
            }
            kind::RST_STREAM => {
                assert!(head.len == 4 && head.stream != 0, "{head:?}");
                assert!(head.stream <= c.max_opened, "{head:?} on an idle stream");
                let code = u32::from_be_bytes(payload.try_into().expect("4 bytes"));
                // INTERNAL_ERROR is the reset of a stream whose handler went without an
                // answer: the stream was open until then, so the server cannot have
                // reset it before (nor sent it a reset while it was idle, §6.4).
                if code == h2frame::code::INTERNAL_ERROR {
                    assert!(
                        !resets.contains_key(&head.stream),
                        "stream {} opened after the server reset it ({:#x})",
                        head.stream,
                        resets[&head.stream]
                    );
                }
                resets.entry(head.stream).or_insert(code);
            }
            kind::GOAWAY => {
                assert!(head.len >= 8 && head.stream == 0, "{head:?}");
                let last = u32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
                assert!(last <= c.max_opened, "GOAWAY naming stream {last}");
                n_goaway += 1;
                assert_eq!(n_goaway, 1, "a second GOAWAY");
            }
            // The one answer the server gives by itself: a request whose header list is
            // over the bound gets 431 (as over HTTP/1), never reaching a handler.
            kind::HEADERS => {
                assert!(
                    head.has(flag::END_STREAM)
                        && head.has(flag::END_HEADERS)
                        && head.stream != 0
                        && head.stream <= c.max_opened,
                    "{head:?} from a server whose handlers never answer"
                );
                assert!(
                    !resets.contains_key(&head.stream),
                    "431 on stream {} after the server reset it",
                    head.stream
                );
                // Responses are encoded without the dynamic table: a fresh decoder reads it.
                let mut status = None;
                loona_hpack::Decoder::new()
                    .decode_with_cb(payload, |name, value| {
                        if &name[..] == b":status" {
                            status = Some(value.into_owned());
                        }
                    })
                    .expect("the server's header block decodes");
                assert_eq!(status.as_deref(), Some(&b"431"[..]), "{head:?}");
            }
            _ => panic!("{head:?} from a server whose handlers never answer"),
        }
    }
    assert!(!first, "no server preface");
    assert!(
        n_settings_acks <= c.n_settings,
        "more SETTINGS ACKs than SETTINGS"
    );
    assert!(n_ping_acks <= c.pings.len(), "more PING ACKs than PINGs");
    // The client's windows never pass 2^31-1 (it would be a FLOW_CONTROL_ERROR, §6.9.1):
    // credit given back is at most what the DATA took, beyond the first window.
    for (&id, &given) in &credit {
        let (start, used) = if id == 0 {
            (h2frame::DEFAULT_WINDOW, c.data)
        } else {
            (initial_window, c.data_on.get(&id).copied().unwrap_or(0))
        };
        assert!(
            start + given - used as i64 <= h2frame::MAX_WINDOW,
            "stream {id}: window {start} + {given} given - {used} used"
        );
    }
}

/// Runs the engine's connection over `data[2..]` as the client's bytes after the preface:
/// frame headers, every frame type's payload checks, padding, HEADERS/CONTINUATION
/// assembly and its bounds, the HPACK decoding and the request rules, flow control and
/// the stream and reset bounds. `data[1]`'s bits: 1, an empty SETTINGS is sent first (so
/// that the input need not start with one); 2, handlers are kept to the end rather than
/// dropped at once; 4, small limits (`h2_config`). Checks what the server wrote
/// (`check_output`); with handlers kept, the input cut in two reads at the point chosen by
/// `data[0]` must give the same output as in one.
pub fn h2_frames(data: &[u8]) {
    let &[split, mode, ref input @ ..] = data else {
        return;
    };
    let cfg = h2_config(mode & 4 != 0);
    let hold = mode & 2 != 0;
    let mut client = Vec::with_capacity(input.len() + HEAD_LEN);
    if mode & 1 != 0 {
        h2frame::write_settings(&mut client, &[]);
    }
    client.extend_from_slice(input);
    let whole = run_conn(&cfg, &[&client], hold);
    check_output(&whole, &client, &cfg);
    if hold {
        let (a, b) = client.split_at(split_point(client.len(), split));
        let pieces = run_conn(&cfg, &[a, b], hold);
        assert!(
            pieces == whole,
            "reads of {} and {} bytes",
            a.len(),
            b.len()
        );
    }
}

/// Live heap bytes, counted by a global allocator the fuzz target installs (the library
/// installs none): `reset_peak` makes the peak the live count and returns it, `peak`
/// reads it.
#[derive(Debug, Clone, Copy)]
pub struct Heap {
    /// Makes the peak the live count, and returns it.
    pub reset_peak: fn() -> usize,
    /// The peak since the last `reset_peak`.
    pub peak: fn() -> usize,
}

/// Decodes `data` as HPACK header blocks on one decoder (so that the dynamic table and
/// its size updates carry from block to block), each made into a request head and into
/// trailers under the default limits. Each block is a length byte (255: the rest of the
/// input) and that many bytes. A compression error ends the input, as it ends the
/// connection. With `heap`, the decoding of a block must allocate at most a few times the
/// header list bound and the table size.
pub fn h2_hpack_request(data: &[u8], heap: Option<&Heap>) {
    let max_list = h2_config(false).max_header_list_size as usize;
    let mut decoder = hpack::Decoder::new();
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = if n == 255 {
            tail.len()
        } else {
            usize::from(n).min(tail.len())
        };
        let (block, after) = tail.split_at(n);
        rest = after;
        let mut fields = Block::default();
        let mut list: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let before = heap.map(|h| (h.reset_peak)());
        let decoded = decoder.decode(block, max_list, |n, v| fields.push(n, v));
        if let (Some(h), Some(before)) = (heap, before) {
            let grew = (h.peak)().saturating_sub(before);
            // The fields (one buffer that may double, and their lengths), the table's
            // entries and the decoder's own buffers.
            let bound = 4 * max_list + 4 * hpack::TABLE_SIZE + 4 * block.len() + 4096;
            assert!(
                grew <= bound,
                "decoding {} bytes allocated {grew}",
                block.len()
            );
        }
        // The same fields again, for the checks (outside the heap measurement).
        let mut again = Block::default();
        match decoded {
            Err(hpack::DecodeError::Compression) => return,
            Err(hpack::DecodeError::TooLarge(size)) => {
                assert!(size > max_list, "TooLarge({size}) within {max_list}");
                continue;
            }
            Ok(()) => {}
        }
        for (n, v) in fields.fields() {
            again.push(n, v);
            list.push((n.to_vec(), v.to_vec()));
        }
        let size: usize = list.iter().map(|(n, v)| n.len() + v.len() + 32).sum();
        assert!(size <= max_list, "{size} bytes of fields over {max_list}");
        if let Ok(head) = fields.into_request() {
            check_request(&head, &list);
        }
        if let Ok(trailers) = again.into_trailers() {
            check_fields(&trailers, &list);
            assert!(
                trailers.iter().all(|f| !f.name().starts_with(':')),
                "a pseudo-header in trailers"
            );
            for f in &trailers {
                check_regular(f.name().as_bytes(), f.value_bytes());
            }
        }
    }
}

/// The fields of `headers` are `list`, in order.
fn check_fields(headers: &Headers, list: &[(Vec<u8>, Vec<u8>)]) {
    assert_eq!(headers.len(), list.len(), "field count");
    for (f, (n, v)) in headers.iter().zip(list) {
        assert_eq!(f.name().as_bytes(), &n[..], "a field's name");
        assert_eq!(f.value_bytes(), &v[..], "a field's value");
    }
}

/// RFC 9113 §8.2: a lower-case token name, not connection-specific, `te` only as
/// `trailers`, and a value without NUL, CR, LF or whitespace at its ends.
fn check_regular(name: &[u8], value: &[u8]) {
    assert!(
        !name.is_empty()
            && name
                .iter()
                .all(|&b| crate::headers::is_tchar(b) && !b.is_ascii_uppercase()),
        "field name {name:?}"
    );
    assert!(
        !matches!(
            name,
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
        ),
        "connection-specific {name:?}"
    );
    assert!(name != b"te" || value == b"trailers", "te: {value:?}");
    assert!(
        !value.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')),
        "value {value:?}"
    );
    assert!(
        !value.first().is_some_and(|&b| b == b' ' || b == b'\t')
            && !value.last().is_some_and(|&b| b == b' ' || b == b'\t'),
        "value {value:?}"
    );
}

/// What an accepted request head must be (RFC 9113 §8.3, RFC 8441 §4).
fn check_request(head: &Headers, list: &[(Vec<u8>, Vec<u8>)]) {
    check_fields(head, list);
    let mut pseudo: Vec<&str> = Vec::new();
    let mut regular = false;
    for f in head {
        let name = f.name();
        if name.starts_with(':') {
            assert!(!regular, "{name} after a regular field");
            assert!(
                matches!(
                    name,
                    ":method" | ":scheme" | ":path" | ":authority" | ":protocol"
                ),
                "pseudo-header {name}"
            );
            assert!(!pseudo.contains(&name), "{name} twice");
            pseudo.push(name);
            let v = f.value_bytes();
            assert!(
                !v.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n')),
                "{name}: {v:?}"
            );
        } else {
            regular = true;
            check_regular(name.as_bytes(), f.value_bytes());
        }
    }
    let method = head
        .get_bytes(":method")
        .expect("a request without :method");
    let has = |n: &str| pseudo.contains(&n);
    if has(":protocol") {
        assert!(
            method == b"CONNECT" && has(":scheme") && has(":authority"),
            "extended CONNECT {pseudo:?}"
        );
        assert!(head.get_bytes(":path").is_some_and(|p| !p.is_empty()));
    } else if method == b"CONNECT" {
        assert!(
            has(":authority") && !has(":scheme") && !has(":path"),
            "CONNECT {pseudo:?}"
        );
    } else {
        assert!(has(":scheme"), "no :scheme");
        assert!(
            head.get_bytes(":path").is_some_and(|p| !p.is_empty()),
            "no :path"
        );
    }
}

/// Encodes a response head with the engine's HPACK encoder (`hpack::encode_status`, then
/// `hpack::encode` per field) and decodes it with `loona-hpack`: the same fields must come
/// back, and the decoder's table must stay empty (the encoder is stateless). The block is
/// also cut into HEADERS and CONTINUATION frames (`h2frame::write_header_block`) and put
/// back together.
///
/// Input: two bytes for the status (100 to 999), then lines (`\n`) of a flags byte (1:
/// sensitive) and `name:value`; lines whose name is not a token or whose value is not a
/// field value (RFC 9110 §5.1, §5.5) are left out.
pub fn h2_hpack_response(data: &[u8]) {
    let &[s0, s1, ref rest @ ..] = data else {
        return;
    };
    let status = 100 + u16::from_be_bytes([s0, s1]) % 900;
    let mut fields: Vec<(&[u8], &[u8], bool)> = Vec::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some((&flags, line)) = line.split_first() else {
            continue;
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let token = !name.is_empty() && name.iter().all(|&b| crate::headers::is_tchar(b));
        let field_value = value
            .iter()
            .all(|&b| b == b' ' || b == b'\t' || (b >= 0x21 && b != 0x7f))
            && !value.first().is_some_and(|&b| b == b' ' || b == b'\t')
            && !value.last().is_some_and(|&b| b == b' ' || b == b'\t');
        if token && field_value {
            fields.push((name, value, flags & 1 != 0));
        }
    }
    let mut block = Vec::new();
    hpack::encode_status(&mut block, status);
    for (name, value, sensitive) in &fields {
        hpack::encode(&mut block, name, value, *sensitive);
    }
    // Stateless and without Huffman coding: a field costs its bytes and a few more.
    let plain: usize = fields.iter().map(|(n, v, _)| n.len() + v.len() + 11).sum();
    assert!(
        block.len() <= plain + 5,
        "{} bytes for {plain}",
        block.len()
    );

    let mut want: Vec<(Vec<u8>, Vec<u8>)> =
        vec![(b":status".to_vec(), status.to_string().into_bytes())];
    want.extend(fields.iter().map(|(n, v, _)| (n.to_vec(), v.to_vec())));
    let mut decoder = loona_hpack::Decoder::new();
    for round in 0..2 {
        // Twice on one decoder: nothing the first block did may change the second's
        // meaning (no table insertions, no size update).
        let mut got = Vec::new();
        decoder
            .decode_with_cb(&block, |n, v| got.push((n.into_owned(), v.into_owned())))
            .unwrap_or_else(|e| panic!("round {round}: {e:?} decoding {block:?}"));
        assert!(got == want, "round {round}: {got:?} for {want:?}");
    }

    let max_frame = 1 + usize::from(s0 % 64);
    let mut frames = Vec::new();
    h2frame::write_header_block(&mut frames, 1, &block, true, max_frame);
    let mut joined = Vec::new();
    let mut rest: &[u8] = &frames;
    let mut n = 0;
    while let Some((head, after)) = rest.split_first_chunk::<HEAD_LEN>() {
        let head = h2frame::parse_head(head);
        let last = after.len() == head.len;
        assert_eq!(
            head.kind,
            if n == 0 {
                kind::HEADERS
            } else {
                kind::CONTINUATION
            }
        );
        assert!(head.len <= max_frame && head.stream == 1, "{head:?}");
        assert_eq!(head.has(flag::END_HEADERS), last, "{head:?}");
        assert_eq!(head.has(flag::END_STREAM), n == 0, "{head:?}");
        joined.extend_from_slice(&after[..head.len]);
        rest = &after[head.len..];
        n += 1;
    }
    assert!(rest.is_empty() && joined == block, "frames {frames:?}");
}
