//! Regression tests for HTTP/2 clients that hold the server's resources: each test is
//! named after the defect it guards against.
//!
//! - Send timeout: a client that opens no flow-control window (per stream or for the whole
//!   connection), or never reads the socket at all, or floods PINGs and then reads
//!   nothing, must not hold a handler, what it opened and the connection forever: the
//!   stuck stream is reset and its write fails with a timeout within `send_timeout`, and a
//!   connection whose output does not drain is closed.
//! - Malformed requests (RFC 9113 §8.1.1, §8.2.1): field values with leading or trailing
//!   whitespace, in the head or in trailers, are stream errors (RST_STREAM
//!   PROTOCOL_ERROR) that no handler sees; the connection goes on.
//! - Early responses: a response sent before the request body was read must not cut the
//!   client's upload short while what it sends stays within `max_discard`; a client that
//!   sends more, or stops sending, is reset with NO_ERROR (RFC 9113 §8.1).
//! - Priorities that name their own stream, or a PRIORITY frame of the wrong length on a
//!   stream not yet open (found by `fuzz/`'s `h2_frames` on the engine of our own): no
//!   stream the server reset is opened and answered afterwards; both engines are run.
//!
//! Clients are the `h2` crate's where it can express the case, and raw frames over a
//! `TcpStream` where the case is a client misbehaving below what a real client lets one do.

mod common;

use std::{
    future::{poll_fn, Future},
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{h2_frames::*, *};
use h2::Reason;
use onstream::{H2Engine, Options, Stream};

/// The `send_timeout` the tests run with: short, so that a stuck stream ends quickly.
const SEND_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a test waits for what `SEND_TIMEOUT` must bring about: generous, so that a
/// loaded machine does not fail the test, and far below "forever".
const GIVE_UP: Duration = Duration::from_secs(5);

/// Options for the send-timeout tests: `send_timeout` short, the idle timeout long, so
/// that closing an idle connection is never what ends a test's connection.
fn send_timeout_options(o: Options) -> Options {
    o.send_timeout(SEND_TIMEOUT)
        .intra_stream_timeout(Duration::from_secs(60))
}

// ===== the h2 crate's client =====

/// Runs `f` on a fresh tokio current-thread runtime.
fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Awaits `fut` for at most [`IO_TIMEOUT`]; panics naming `what` when it takes longer.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {IO_TIMEOUT:?}"))
}

/// An HTTP/2 connection by prior knowledge to `addr`, made by `builder`; the connection
/// task is spawned on the current runtime.
async fn h2c_with(
    addr: SocketAddr,
    builder: &h2::client::Builder,
) -> h2::client::SendRequest<Bytes> {
    let tcp = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let (send, conn) = within("HTTP/2 client handshake", builder.handshake(tcp))
        .await
        .expect("HTTP/2 client handshake failed");
    tokio::spawn(conn);
    within("connection ready", send.ready())
        .await
        .expect("connection not ready")
}

fn request(addr: SocketAddr, method: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(())
        .unwrap()
}

/// A GET of `path` on a new default connection; returns the status and the body.
fn h2_get(addr: SocketAddr, path: &str) -> (u16, Bytes) {
    block_on(async {
        let mut send = h2c_with(addr, &h2::client::Builder::new()).await;
        let (response, _) = send
            .send_request(request(addr, "GET", path), true)
            .expect("send_request");
        let response = within("response head", response)
            .await
            .expect("response head failed");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut all = Vec::new();
        while let Some(chunk) = within("response body", body.data()).await {
            let chunk = chunk.expect("response body failed");
            let _ = body.flow_control().release_capacity(chunk.len());
            all.extend_from_slice(&chunk);
        }
        (status, Bytes::from(all))
    })
}

/// Waits (at most `max`) until `cond` holds, without blocking the runtime.
async fn eventually(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + max;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

// ===== raw frames =====

const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in pairs {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

fn window_update(stream: u32, increment: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
}

/// A header block of "literal header field without indexing — new name" representations
/// (RFC 7541 §6.2.2), no Huffman coding: the bytes say exactly the fields given, and the
/// server's HPACK dynamic table is left alone.
fn header_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn headers(stream: u32, end_stream: bool, fields: &[(&str, &str)]) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &header_block(fields))
}

/// The pseudo-header fields of a request for `path`.
fn request_fields<'a>(method: &'a str, path: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", "test"),
        (":path", path),
    ]
}

/// A frame as read back from the server.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY frame.
    fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let code = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(code.try_into().unwrap()))
    }
}

/// Reads one frame; `Err` on EOF, a reset or [`IO_TIMEOUT`].
fn read_frame(tcp: &mut TcpStream) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    tcp.read_exact(&mut head)?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    tcp.read_exact(&mut payload)?;
    Ok(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// Opens a raw HTTP/2 connection: connects, sends the preface and `settings`, and acks
/// the server's SETTINGS once it comes (reading nothing else).
fn raw_h2(addr: SocketAddr, pairs: &[(u16, u32)]) -> TcpStream {
    let mut tcp = connect(addr);
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(pairs));
    tcp.write_all(&hello).expect("send the preface");
    let first = read_frame(&mut tcp).expect("the server's SETTINGS");
    let is_settings = first.kind == SETTINGS && first.stream == 0 && first.flags & 0x1 == 0;
    assert!(
        is_settings && first.payload.len() % 6 == 0,
        "not the server's SETTINGS: {first:?}"
    );
    tcp.write_all(&frame(SETTINGS, 0x1, 0, &[]))
        .expect("ack SETTINGS");
    tcp
}

/// Reads frames until one matches `want` (returned) or the connection ends (`None`);
/// DATA is answered with WINDOW_UPDATEs so that a response body keeps coming. At most
/// [`IO_TIMEOUT`] and 10,000 frames.
fn read_until(tcp: &mut TcpStream, mut want: impl FnMut(&Frame) -> bool) -> Option<Frame> {
    let deadline = Instant::now() + IO_TIMEOUT;
    for _ in 0..10_000 {
        if Instant::now() >= deadline {
            break;
        }
        let frame = read_frame(tcp).ok()?;
        if frame.kind == DATA && !frame.payload.is_empty() {
            let n = frame.payload.len() as u32;
            let _ = tcp.write_all(&[window_update(0, n), window_update(frame.stream, n)].concat());
        }
        if want(&frame) {
            return Some(frame);
        }
    }
    None
}

/// Counts the handlers alive: one more while each `HandlerAlive` exists.
#[derive(Clone, Default)]
struct Live(Arc<AtomicUsize>);

struct HandlerAlive(Arc<AtomicUsize>);

impl Live {
    fn enter(&self) -> HandlerAlive {
        self.0.fetch_add(1, Ordering::SeqCst);
        HandlerAlive(self.0.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Drop for HandlerAlive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What happened to a handler's writes, for the test to look at.
type Outcomes = Arc<Mutex<Vec<String>>>;

fn describe(result: &onstream::Result<()>) -> String {
    match result {
        Ok(()) => "written".to_owned(),
        Err(e) => format!(
            "timeout={} disconnect={} {e}",
            e.is_timeout(),
            e.is_disconnect()
        ),
    }
}

/// A handler for the send-timeout tests: `/big` answers 200 with a 1 MiB body written in
/// one call, `/endless` writes 64 KiB pieces until a write fails (at most 1 GiB), anything
/// else answers "ok". The outcome of each `/big` or `/endless` write goes to `outcomes`.
fn big_body_server(live: Live, outcomes: Outcomes) -> TestServer {
    TestServer::start(send_timeout_options, move || {
        move |_srv, stream: Stream| {
            let (live, outcomes) = (live.clone(), outcomes.clone());
            async move {
                let _alive = live.enter();
                let req = stream.get_headers().await?;
                let result = match req.get(":path") {
                    Some("/big") => {
                        stream.write_headers(&status_headers("200"), false).await?;
                        stream.write_chunk(vec![b'x'; 1024 * 1024], true).await
                    }
                    Some("/endless") => {
                        stream.write_headers(&status_headers("200"), false).await?;
                        let piece = vec![b'y'; 64 * 1024];
                        let mut result = Ok(());
                        for _ in 0..16 * 1024 {
                            result = stream.write_chunk(&piece, false).await;
                            if result.is_err() {
                                break;
                            }
                        }
                        result
                    }
                    _ => return respond(&stream, "200", "ok").await,
                };
                outcomes.lock().unwrap().push(describe(&result));
                result
            }
        }
    })
}

/// The server still answers a new connection, and nothing reached `onerror`.
fn check_still_serving(server: &TestServer) {
    let (status, body) = h2_get(server.addr(), "/after");
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"ok");
    assert!(
        server.step_errors().is_empty(),
        "a client's fault reached onerror: {:?}",
        server.step_errors()
    );
}

// ===== send timeout =====

/// Defect: a client that advertises a zero stream window held the handler (and whatever
/// it opened) and the stream forever — hyper's client with `initial_window_size(0)` and
/// a 1 MiB body was still blocked after 5 s with `send_timeout` 300 ms. The write must
/// fail with a timeout (a disconnect, not an `onerror` report) and the stream be reset.
#[test]
fn a_zero_stream_window_times_the_write_out_and_resets_the_stream() {
    let (live, outcomes) = (Live::default(), Outcomes::default());
    let server = big_body_server(live.clone(), outcomes.clone());
    let addr = server.addr();
    let reset = block_on(async {
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(0);
        let mut send = h2c_with(addr, &builder).await;
        let (response, _) = send
            .send_request(request(addr, "GET", "/big"), true)
            .expect("send_request");
        let response = within("response head", response)
            .await
            .expect("response head failed");
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        // The window stays shut: no DATA can come, only the end of the stream.
        let end = tokio::time::timeout(GIVE_UP, body.data()).await;
        let outcome_seen = eventually(GIVE_UP, || !outcomes.lock().unwrap().is_empty()).await;
        (end, outcome_seen)
    });
    let (end, outcome_seen) = reset;
    assert!(
        outcome_seen,
        "the handler's write was still blocked after {GIVE_UP:?} (send_timeout {SEND_TIMEOUT:?})"
    );
    let outcome = outcomes.lock().unwrap()[0].clone();
    assert!(
        outcome.starts_with("timeout=true disconnect=true"),
        "{outcome}"
    );
    let end = end.expect("the stream was neither reset nor ended");
    let error = match end {
        Some(Err(e)) => e,
        other => panic!("expected the stream to be reset, got {other:?}"),
    };
    assert_eq!(error.reason(), Some(Reason::CANCEL), "{error:?}");
    assert!(
        wait_until(GIVE_UP, || live.count() == 0),
        "a handler lives on"
    );
    check_still_serving(&server);
}

/// Defect: the connection window can only shrink by the client not giving credit back;
/// a client that lets it run out on a first stream held every later stream's handler
/// forever. Each stuck stream's write must time out and the stream be reset.
#[test]
fn an_exhausted_connection_window_times_the_writes_out_and_resets_the_streams() {
    let (live, outcomes) = (Live::default(), Outcomes::default());
    let server = big_body_server(live.clone(), outcomes.clone());
    let addr = server.addr();
    let ends = block_on(async {
        // Large stream windows, the connection window left at 65,535 and never
        // replenished: the first stream's first 64 KiB use it all up.
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(4 * 1024 * 1024);
        let mut send = h2c_with(addr, &builder).await;
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let (response, _) = send
                .send_request(request(addr, "GET", "/big"), true)
                .expect("send_request");
            let response = within("response head", response)
                .await
                .expect("response head failed");
            bodies.push(response.into_body());
        }
        let mut ends = Vec::new();
        for mut body in bodies {
            // Read without releasing capacity: no credit goes back to the server.
            let end = tokio::time::timeout(GIVE_UP, async {
                loop {
                    match body.data().await {
                        Some(Ok(_)) => continue,
                        other => return other.map(|r| r.map(|_| ())),
                    }
                }
            })
            .await;
            ends.push(end);
        }
        ends
    });
    assert!(
        wait_until(GIVE_UP, || outcomes.lock().unwrap().len() == 2),
        "writes still blocked after {GIVE_UP:?}"
    );
    for outcome in outcomes.lock().unwrap().clone() {
        assert!(
            outcome.starts_with("timeout=true disconnect=true"),
            "{outcome}"
        );
    }
    for end in ends {
        let end = end.expect("a stream was neither reset nor ended");
        match end {
            Some(Err(e)) => assert_eq!(e.reason(), Some(Reason::CANCEL), "{e:?}"),
            other => panic!("expected the stream to be reset, got {other:?}"),
        }
    }
    assert!(
        wait_until(GIVE_UP, || live.count() == 0),
        "a handler lives on"
    );
    check_still_serving(&server);
}

/// Defect: a client that requests a download and then never reads the socket (TCP-level:
/// the server's output cannot drain) held the handler and the connection forever. The
/// connection must be closed and the handler end, within bounded time.
#[test]
fn a_client_that_never_reads_the_socket_is_closed_and_its_handler_ends() {
    let (live, outcomes) = (Live::default(), Outcomes::default());
    let server = big_body_server(live.clone(), outcomes.clone());
    let addr = server.addr();
    // Windows as large as they go, so that only TCP holds the server back.
    let mut tcp = raw_h2(addr, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0x7fff_ffff)]);
    let mut req = window_update(0, 0x7fff_ffff - 65_535);
    req.extend(headers(1, true, &request_fields("GET", "/endless")));
    tcp.write_all(&req).expect("send the request");
    assert!(
        wait_until(GIVE_UP, || live.count() == 1),
        "the handler did not start"
    );
    // From here on the client reads nothing.
    assert!(
        wait_until(GIVE_UP, || live.count() == 0),
        "the handler still writes to a client that reads nothing"
    );
    assert!(
        server.wait_connections(0, GIVE_UP),
        "the connection of a client that reads nothing is still open"
    );
    let outcomes = outcomes.lock().unwrap().clone();
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert!(outcomes[0].contains("disconnect=true"), "{outcomes:?}");
    drop(tcp);
    check_still_serving(&server);
}

/// Floods `tcp` with `frames` until the server stops taking them (a write blocks for
/// 200 ms) or closes; bounded by 256 MiB and 20 s. Returns the bytes sent.
fn flood(tcp: &mut TcpStream, frames: &[u8]) -> usize {
    tcp.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sent = 0;
    while sent < 256 * 1024 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the server took {sent} bytes of flood without ever making the client wait"
        );
        match tcp.write(frames) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return sent,
        }
    }
    panic!("the server took 256 MiB of flood without ever making the client wait");
}

/// Defect: a client that floods PINGs (or SETTINGS) and then reads nothing kept its
/// connection open forever: the h2 crate queues the acknowledgements, the socket never
/// drains, and the server stops reading. The connection must be closed within bounded
/// time (nginx cuts it at its send_timeout).
#[test]
fn a_ping_flood_then_silence_is_closed() {
    check_flood_then_silence(&frame(PING, 0, 0, b"pingpong"));
}

/// As [`a_ping_flood_then_silence_is_closed`], with SETTINGS frames (each one to be
/// acknowledged) among the PINGs.
#[test]
fn a_settings_flood_then_silence_is_closed() {
    let mut frames = settings(&[(SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]);
    frames.extend(frame(PING, 0, 0, b"pingpong"));
    check_flood_then_silence(&frames);
}

fn check_flood_then_silence(one: &[u8]) {
    let server = big_body_server(Live::default(), Outcomes::default());
    let mut tcp = raw_h2(server.addr(), &[]);
    let batch: Vec<u8> = one.repeat(64 * 1024 / one.len());
    let sent = flood(&mut tcp, &batch);
    assert!(sent > 0, "no flood could be sent");
    // The client is silent now and reads nothing.
    assert!(
        server.wait_connections(0, GIVE_UP),
        "the connection is still open {GIVE_UP:?} after a flood of {sent} bytes"
    );
    drop(tcp);
    check_still_serving(&server);
}

// ===== early responses =====

/// Answers 405 at once, never reading the request body.
fn early_answer_server(opts: impl FnOnce(Options) -> Options + Send + 'static) -> TestServer {
    TestServer::start(
        // Small windows: the client can send more than 64 KiB only if the server reads
        // and gives credit back.
        move |o| opts(o.h2_window_size(65_536, 65_536)),
        || |_srv, stream: Stream| async move { respond(&stream, "405", "no uploads here").await },
    )
}

/// Sends `total` bytes of body on `up` in 16 KiB pieces as flow control allows, then
/// ends the stream; returns the bytes sent and, if the stream failed, its error.
async fn send_body(up: &mut h2::SendStream<Bytes>, total: usize) -> (usize, Result<(), h2::Error>) {
    let piece = Bytes::from(vec![b'u'; 16 * 1024]);
    let mut sent = 0;
    while sent < total {
        let want = piece.len().min(total - sent);
        up.reserve_capacity(want);
        let granted = match within("send capacity", poll_fn(|cx| up.poll_capacity(cx))).await {
            Some(Ok(n)) => n.min(want),
            Some(Err(e)) => return (sent, Err(e)),
            None => match within("the reset", poll_fn(|cx| up.poll_reset(cx))).await {
                Ok(reason) => return (sent, Err(h2::Error::from(reason))),
                Err(e) => return (sent, Err(e)),
            },
        };
        if granted == 0 {
            continue;
        }
        if let Err(e) = up.send_data(piece.slice(..granted), false) {
            return (sent, Err(e));
        }
        sent += granted;
    }
    (sent, up.send_data(Bytes::new(), true))
}

/// Awaits a response and reads its body whole; returns the status and the body.
async fn read_response(response: h2::client::ResponseFuture) -> (u16, Bytes) {
    let response = within("response head", response)
        .await
        .expect("response head failed");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = within("response body", body.data()).await {
        let chunk = chunk.expect("response body failed");
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    (status, Bytes::from(all))
}

/// Defect: a handler that answered (405, 413, any early error) before reading the body
/// ended its stream with RST_STREAM(NO_ERROR) while the client was still sending; curl
/// 7.88 then failed (exit 92) instead of showing the response. The client must get the
/// whole response and be able to send its whole body (1 MiB, within `max_discard`)
/// without a reset.
#[test]
fn an_early_response_lets_the_client_finish_sending_its_body() {
    let server = early_answer_server(|o| o);
    let addr = server.addr();
    let (status, body, sent, result) = block_on(async {
        let mut send = h2c_with(addr, &h2::client::Builder::new()).await;
        let (response, mut up) = send
            .send_request(request(addr, "POST", "/upload"), false)
            .expect("send_request");
        // The answer comes before any of the body was sent.
        let (status, body) = read_response(response).await;
        let (sent, result) = send_body(&mut up, 1024 * 1024).await;
        (status, body, sent, result)
    });
    assert_eq!(status, 405);
    assert_eq!(&body[..], b"no uploads here");
    assert!(
        result.is_ok(),
        "the upload was cut after {sent} bytes: {result:?}"
    );
    assert_eq!(sent, 1024 * 1024);
    check_still_serving_any(&server);
}

/// The other side of the same fix: a client that sends more than `max_discard` after the
/// response is reset with NO_ERROR — after the server read and threw away what
/// `max_discard` allows (more than the first 64 KiB window), not at once.
#[test]
fn an_early_response_resets_a_client_that_sends_more_than_max_discard() {
    let server = early_answer_server(|o| o.max_discard(128 * 1024));
    let addr = server.addr();
    let (status, body, sent, result) = block_on(async {
        let mut send = h2c_with(addr, &h2::client::Builder::new()).await;
        let (response, mut up) = send
            .send_request(request(addr, "POST", "/upload"), false)
            .expect("send_request");
        let (status, body) = read_response(response).await;
        let (sent, result) = send_body(&mut up, 4 * 1024 * 1024).await;
        (status, body, sent, result)
    });
    assert_eq!(status, 405);
    assert_eq!(&body[..], b"no uploads here");
    let error = result.expect_err("4 MiB went through with max_discard 128 KiB");
    assert_eq!(error.reason(), Some(Reason::NO_ERROR), "{error:?}");
    assert!(
        sent > 128 * 1024,
        "reset after only {sent} bytes: the server did not read on up to max_discard"
    );
    check_still_serving_any(&server);
}

/// Guards the bound of the same fix: a client that stops sending after the response is
/// reset with NO_ERROR once `body_read_timeout` passes without a byte, not waited for
/// forever. (The old code failed it only because the stream was gone before the client
/// sent its first byte.)
#[test]
fn an_early_response_resets_a_client_that_stops_sending() {
    let server = early_answer_server(|o| o.body_read_timeout(Duration::from_millis(300)));
    let addr = server.addr();
    let reset = block_on(async {
        let mut send = h2c_with(addr, &h2::client::Builder::new()).await;
        let (response, mut up) = send
            .send_request(request(addr, "POST", "/upload"), false)
            .expect("send_request");
        let (status, _) = read_response(response).await;
        assert_eq!(status, 405);
        up.send_data(Bytes::from(vec![b'u'; 1000]), false)
            .expect("send_data");
        tokio::time::timeout(GIVE_UP, poll_fn(|cx| up.poll_reset(cx))).await
    });
    let reason = reset
        .expect("the stream was still open after the client went quiet")
        .expect("poll_reset failed");
    assert_eq!(reason, Reason::NO_ERROR);
}

/// The server still answers a new connection (with any status), and nothing reached
/// `onerror`.
fn check_still_serving_any(server: &TestServer) {
    let (status, _) = h2_get(server.addr(), "/after");
    assert_eq!(status, 405);
    assert!(
        server.step_errors().is_empty(),
        "a client's fault reached onerror: {:?}",
        server.step_errors()
    );
}

// ===== malformed requests =====

/// RST_STREAM's error code for PROTOCOL_ERROR.
const PROTOCOL_ERROR: u32 = 0x1;

/// A handler that reads the whole body and answers "ok"; it counts its calls and records
/// how its body read ended.
fn reading_server(calls: Arc<AtomicUsize>, reads: Outcomes) -> TestServer {
    reading_server_with(|o| o, calls, reads)
}

/// `reading_server` with options.
fn reading_server_with(
    opts: impl FnOnce(Options) -> Options + Send + 'static,
    calls: Arc<AtomicUsize>,
    reads: Outcomes,
) -> TestServer {
    TestServer::start(opts, move || {
        move |_srv, stream: Stream| {
            let (calls, reads) = (calls.clone(), reads.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let body = stream.get_body_as_bytes().await;
                reads.lock().unwrap().push(match &body {
                    Ok(b) => format!("read {} bytes", b.len()),
                    Err(e) => format!("status={:?} {e}", e.status()),
                });
                body?;
                respond(&stream, "200", "ok").await
            }
        }
    })
}

/// How stream `id`'s answer ends: `Err(code)` for RST_STREAM, `Ok(body)` for a
/// response that ends normally.
fn stream_end(tcp: &mut TcpStream, id: u32) -> Result<Vec<u8>, u32> {
    let mut body = Vec::new();
    let end = read_until(tcp, |f| {
        if f.stream == id && f.kind == DATA {
            body.extend_from_slice(&f.payload);
        }
        f.stream == id && (f.kind == RST_STREAM || f.flags & END_STREAM != 0)
    });
    let end = end.unwrap_or_else(|| panic!("stream {id} never ended"));
    match end.kind {
        RST_STREAM => Err(end.error_code().unwrap()),
        _ => Ok(body),
    }
}

/// After a malformed request on stream 1: stream 3, well formed, is answered "ok" on the
/// same connection, and nothing reached `onerror`.
fn check_connection_serves(server: &TestServer, tcp: &mut TcpStream) {
    tcp.write_all(&headers(3, true, &request_fields("GET", "/fine")))
        .expect("send the next request");
    assert_eq!(stream_end(tcp, 3), Ok(b"ok".to_vec()));
    assert!(
        server.step_errors().is_empty(),
        "a malformed request reached onerror: {:?}",
        server.step_errors()
    );
}

/// Defect: a request whose field values begin or end with a space or a tab was handed
/// to the handler and answered (RFC 9113 §8.2.1 makes it malformed). It must be reset
/// with PROTOCOL_ERROR before any handler runs.
#[test]
fn a_field_value_with_edge_whitespace_is_a_stream_error_before_the_handler() {
    for value in [" leading", "trailing ", "\tleading-tab", "trailing-tab\t"] {
        let (calls, reads) = (Arc::new(AtomicUsize::new(0)), Outcomes::default());
        let server = reading_server(calls.clone(), reads);
        let mut tcp = raw_h2(server.addr(), &[]);
        let mut fields = request_fields("GET", "/");
        fields.push(("x-padded", value));
        tcp.write_all(&headers(1, true, &fields))
            .expect("send the request");
        assert_eq!(
            stream_end(&mut tcp, 1),
            Err(PROTOCOL_ERROR),
            "value {value:?}"
        );
        check_connection_serves(&server, &mut tcp);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a handler saw the malformed request (value {value:?})"
        );
    }
}

/// Sends POST with a body on stream 1 and then `trailers`; returns how stream 1 ended.
fn post_with_trailers(tcp: &mut TcpStream, trailers: &[(&str, &str)]) -> Result<Vec<u8>, u32> {
    let mut req = headers(1, false, &request_fields("POST", "/upload"));
    req.extend(frame(DATA, 0, 1, b"payload"));
    req.extend(headers(1, true, trailers));
    tcp.write_all(&req).expect("send the request");
    stream_end(tcp, 1)
}

/// Defect: trailers whose field values begin or end with whitespace reached the handler.
/// The stream must be reset with PROTOCOL_ERROR and the handler's body read fail with a
/// protocol error (the client's fault: not reported to `onerror`).
#[test]
fn a_trailer_value_with_edge_whitespace_is_a_stream_error() {
    let (calls, reads) = (Arc::new(AtomicUsize::new(0)), Outcomes::default());
    let server = reading_server(calls, reads.clone());
    let mut tcp = raw_h2(server.addr(), &[]);
    let end = post_with_trailers(&mut tcp, &[("x-checksum", "abc ")]);
    assert_eq!(end, Err(PROTOCOL_ERROR));
    check_connection_serves(&server, &mut tcp);
    let reads = reads.lock().unwrap().clone();
    assert!(
        reads[0].starts_with("status=Some(400)"),
        "the handler's read of a body with malformed trailers: {reads:?}"
    );
}

/// Defect: a trailer section with pseudo-header fields (`:method` with END_STREAM) was
/// answered 200; lua-http answers RST_STREAM PROTOCOL_ERROR (RFC 9113 §8.1).
///
/// Runs on the own engine (`H2Engine::Own`) whatever `ONSTREAM_TEST_H2_ENGINE` says: the
/// h2 crate engine cannot pass it, since the h2 crate (0.4.20, and 0.4.21) drops
/// pseudo-header fields from trailers while decoding them (`Recv::recv_trailers` keeps
/// `frame.into_fields()`), so onstream never sees them.
#[test]
fn a_pseudo_header_field_in_trailers_is_a_stream_error() {
    let (calls, reads) = (Arc::new(AtomicUsize::new(0)), Outcomes::default());
    let server = reading_server_with(|o| o.h2_engine(H2Engine::Own), calls, reads.clone());
    let mut tcp = raw_h2(server.addr(), &[]);
    let end = post_with_trailers(&mut tcp, &[(":method", "POST"), ("x-checksum", "abc")]);
    assert_eq!(end, Err(PROTOCOL_ERROR));
    check_connection_serves(&server, &mut tcp);
    let reads = reads.lock().unwrap().clone();
    assert!(
        reads[0].starts_with("status=Some(400)"),
        "the handler's read of a body with a pseudo-header in its trailers: {reads:?}"
    );
}

/// The resets made for malformed requests are bounded as the h2 crate bounds its own
/// (`h2_reset_limits`' second number): past it the connection ends with GOAWAY
/// ENHANCE_YOUR_CALM instead of resetting malformed streams for ever.
#[test]
fn malformed_requests_beyond_the_local_reset_limit_end_the_connection() {
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let server = TestServer::start(|o| o.h2_reset_limits(20, 3), path_echo);
    let mut tcp = raw_h2(server.addr(), &[]);
    let mut fields = request_fields("GET", "/");
    fields.push(("x-padded", "value "));
    for id in [1, 3, 5, 7] {
        tcp.write_all(&headers(id, true, &fields))
            .expect("send a malformed request");
    }
    let goaway = read_until(&mut tcp, |f| f.kind == GOAWAY)
        .expect("the connection went on after more malformed requests than the limit");
    assert_eq!(goaway.error_code(), Some(ENHANCE_YOUR_CALM), "{goaway:?}");
}

// ===== header lists over the bound =====

/// The `:status` of a response HEADERS frame that is the first response of its
/// connection (a fresh HPACK decoder reads it: no earlier response filled the table).
fn first_response_status(f: &Frame) -> String {
    assert_eq!(f.kind, HEADERS, "not a response head: {f:?}");
    let mut status = None;
    loona_hpack::Decoder::new()
        .decode_with_cb(&f.payload, |name, value| {
            if &name[..] == b":status" {
                status = Some(String::from_utf8_lossy(&value).into_owned());
            }
        })
        .expect("the response head decodes");
    status.expect("a :status")
}

/// A header block as `header_block`'s, but each field *with incremental indexing*
/// (RFC 7541 §6.2.1): the server's dynamic table must take it in.
fn indexed_block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x40);
        hpack_str(&mut out, name.as_bytes());
        hpack_str(&mut out, value.as_bytes());
    }
    out
}

/// A server that answers every request with the value of its `x-tab` field ("none" if
/// it has none), after reading the body; it counts its calls.
fn x_tab_server(
    opts: impl FnOnce(Options) -> Options + Send + 'static,
    calls: Arc<AtomicUsize>,
) -> TestServer {
    TestServer::start(opts, move || {
        move |_srv, stream: Stream| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let req = stream.get_headers().await?;
                let tab = req.get("x-tab").unwrap_or("none").to_owned();
                stream.get_body_as_bytes().await?;
                let body: &'static str = Box::leak(tab.into_boxed_str());
                respond(&stream, "200", body).await
            }
        }
    })
}

/// Defect: on the own engine a request whose header list was over the bound
/// (`max_header_size`, announced as SETTINGS_MAX_HEADER_LIST_SIZE) was refused with
/// RST_STREAM REFUSED_STREAM, where HTTP/1 and the h2 crate engine answer `431`. It must
/// be answered `431` with END_STREAM, no handler run, and the block still decoded whole:
/// the entry it adds to the HPACK dynamic table is there for the next request.
#[test]
fn a_header_list_over_the_bound_is_431_and_the_table_stays_in_step() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = x_tab_server(|o| o.max_header_size(4096), calls.clone());
    let mut tcp = raw_h2(server.addr(), &[]);
    let big = "b".repeat(5000);
    let mut block = header_block(&request_fields("GET", "/big"));
    block.extend(indexed_block(&[("x-tab", "kept")]));
    block.extend(header_block(&[("x-big", &big)]));
    tcp.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .expect("send the request");
    let head = read_until(&mut tcp, |f| f.stream == 1).expect("an answer on stream 1");
    assert_eq!(first_response_status(&head), "431");
    assert!(
        head.flags & END_STREAM != 0,
        "431 without END_STREAM: {head:?}"
    );
    // Stream 3 names `x-tab: kept` by its dynamic-table index (62, the newest entry).
    let mut block = header_block(&request_fields("GET", "/next"));
    block.push(0x80 | 62);
    tcp.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &block))
        .expect("send the next request");
    assert_eq!(stream_end(&mut tcp, 3), Ok(b"kept".to_vec()));
    only_the_next_request_was_handled(&server, &calls);
}

/// After a `431` and one more request: one handler ran (the second request's), and the
/// server reported nothing (a client's over-long header list is not the server's error).
fn only_the_next_request_was_handled(server: &TestServer, calls: &AtomicUsize) {
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a handler saw the 431 request"
    );
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// The same with a request body: after the `431` the body the client goes on sending is
/// read and thrown away with its flow-control credit given back, so that the next
/// request's body (together more than the connection's 64 KiB window) goes through.
#[test]
fn a_body_after_a_431_is_drained_and_its_credit_given_back() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = x_tab_server(
        |o| o.max_header_size(4096).h2_window_size(65_535, 65_535),
        calls.clone(),
    );
    let mut tcp = raw_h2(server.addr(), &[]);
    let big = "b".repeat(5000);
    let mut fields = request_fields("POST", "/big");
    fields.push(("x-big", &big));
    tcp.write_all(&headers(1, false, &fields))
        .expect("send the request");
    let head = read_until(&mut tcp, |f| f.stream == 1).expect("an answer on stream 1");
    assert_eq!(first_response_status(&head), "431");
    // 48 KiB of body for stream 1, then 48 KiB for stream 3: 96 KiB on a 64 KiB
    // connection window, possible only if stream 1's credit came back.
    let piece = vec![b'u'; 16 * 1024];
    let mut body = Vec::new();
    for i in 0..3 {
        frame_into(
            &mut body,
            DATA,
            if i == 2 { END_STREAM } else { 0 },
            1,
            &piece,
        );
    }
    tcp.write_all(&body).expect("send stream 1's body");
    let mut fields = request_fields("POST", "/next");
    fields.push(("x-tab", "second"));
    tcp.write_all(&headers(3, false, &fields))
        .expect("send the next request");
    // Stream 3's body as the connection window allows: the server's WINDOW_UPDATEs on
    // stream 0 say how much more may go (at most 100 waits).
    let mut window: i64 = 65_535 - 3 * 16 * 1024;
    let mut left = 3 * 16 * 1024;
    for _ in 0..100 {
        if left == 0 {
            break;
        }
        let n = left.min(16 * 1024).min(window.max(0) as usize);
        if n > 0 {
            let flags = if n == left { END_STREAM } else { 0 };
            tcp.write_all(&frame(DATA, flags, 3, &piece[..n]))
                .expect("send stream 3's body");
            left -= n;
            window -= n as i64;
            continue;
        }
        let update = read_until(&mut tcp, |f| f.kind == WINDOW_UPDATE && f.stream == 0)
            .expect("connection credit for stream 3's body");
        window += i64::from(u32::from_be_bytes(update.payload[..4].try_into().unwrap()));
    }
    assert_eq!(left, 0, "stream 3's body could not be sent whole");
    assert_eq!(stream_end(&mut tcp, 3), Ok(b"second".to_vec()));
    only_the_next_request_was_handled(&server, &calls);
}

/// On the own engine `max_headers` bounds an HTTP/2 request's regular fields as it bounds
/// an HTTP/1 request's: more are answered `431`. (The h2 crate engine counts no fields.)
#[test]
fn more_fields_than_max_headers_is_431_on_the_own_engine() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = x_tab_server(
        |o| o.h2_engine(H2Engine::Own).max_headers(10),
        calls.clone(),
    );
    let mut tcp = raw_h2(server.addr(), &[]);
    let names: Vec<String> = (0..11).map(|i| format!("x-f{i}")).collect();
    let mut fields = request_fields("GET", "/many");
    fields.extend(names.iter().map(|n| (n.as_str(), "v")));
    tcp.write_all(&headers(1, true, &fields))
        .expect("send the request");
    let head = read_until(&mut tcp, |f| f.stream == 1).expect("an answer on stream 1");
    assert_eq!(first_response_status(&head), "431");
    // Ten fields are fine.
    let mut fields = request_fields("GET", "/ten");
    fields.extend(names[..10].iter().map(|n| (n.as_str(), "v")));
    tcp.write_all(&headers(3, true, &fields))
        .expect("send the next request");
    assert_eq!(stream_end(&mut tcp, 3), Ok(b"none".to_vec()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// On the own engine a trailer section over the bound fails the handler's body read
/// with 431 (as HTTP/1's), which the handler's error answers.
#[test]
fn trailers_over_the_bound_fail_the_read_with_431_on_the_own_engine() {
    let (calls, reads) = (Arc::new(AtomicUsize::new(0)), Outcomes::default());
    let server = reading_server_with(
        |o| o.h2_engine(H2Engine::Own).max_header_size(4096),
        calls,
        reads.clone(),
    );
    let mut tcp = raw_h2(server.addr(), &[]);
    let big = "t".repeat(5000);
    let mut req = headers(1, false, &request_fields("POST", "/upload"));
    req.extend(frame(DATA, 0, 1, b"payload"));
    req.extend(headers(1, true, &[("x-big", &big)]));
    tcp.write_all(&req).expect("send the request");
    let head = read_until(&mut tcp, |f| f.stream == 1 && f.kind != WINDOW_UPDATE)
        .expect("an answer on stream 1");
    assert_eq!(first_response_status(&head), "431");
    let reads = reads.lock().unwrap().clone();
    assert!(reads[0].starts_with("status=Some(431)"), "{reads:?}");
    check_connection_serves(&server, &mut tcp);
}

// ===== the send buffer =====

/// `h2_max_send_buffer_size` bounds what one stream holds for a client that opens no
/// window: the handler writes 1 KiB pieces, and once the bound is reached its write does
/// not complete (it fails after `send_timeout`, the stream reset). On the own engine
/// nothing is held for window at all.
#[test]
fn a_zero_window_holds_at_most_the_send_buffer_bound() {
    const BOUND: usize = 16 * 1024;
    let accepted = Arc::new(AtomicUsize::new(0));
    let outcomes = Outcomes::default();
    let server = {
        let (accepted, outcomes) = (accepted.clone(), outcomes.clone());
        TestServer::start(
            |o| send_timeout_options(o).h2_max_send_buffer_size(BOUND),
            move || {
                move |_srv, stream: Stream| {
                    let (accepted, outcomes) = (accepted.clone(), outcomes.clone());
                    async move {
                        stream.get_headers().await?;
                        stream.write_headers(&status_headers("200"), false).await?;
                        let piece = vec![b'z'; 1024];
                        let mut result = Ok(());
                        // 1 MiB at most, far past the bound.
                        for _ in 0..1024 {
                            result = stream.write_chunk(&piece, false).await;
                            if result.is_err() {
                                break;
                            }
                            accepted.fetch_add(piece.len(), Ordering::SeqCst);
                        }
                        outcomes.lock().unwrap().push(describe(&result));
                        result
                    }
                }
            },
        )
    };
    let mut tcp = raw_h2(server.addr(), &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
    tcp.write_all(&headers(1, true, &request_fields("GET", "/")))
        .expect("send the request");
    let reset = read_until(&mut tcp, |f| f.stream == 1 && f.kind == RST_STREAM);
    assert!(reset.is_some(), "the stuck stream was not reset");
    assert!(
        wait_until(GIVE_UP, || !outcomes.lock().unwrap().is_empty()),
        "the handler's write never ended"
    );
    let outcomes = outcomes.lock().unwrap().clone();
    assert!(outcomes[0].starts_with("timeout=true"), "{outcomes:?}");
    let n = accepted.load(Ordering::SeqCst);
    assert!(
        n <= BOUND,
        "the handler got {n} bytes accepted with a zero window (bound {BOUND})"
    );
}

// ===== frames the fuzzer found mishandled (fuzz/ h2_frames, the engine of our own) =====

/// Sends the preface, then `frames`, then a well-formed GET on stream `next`, to a server
/// on the h2 crate's engine or on our own (`own`) whose handlers count their calls and
/// answer "ok". Returns every frame read until stream `next` ends or the connection
/// does, and how many handlers ran by then.
fn frames_then_get(own: bool, frames: &[u8], next: u32) -> (Vec<Frame>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let server = TestServer::start(
        move |o: Options| {
            o.h2_engine(if own {
                H2Engine::Own
            } else {
                H2Engine::H2Crate
            })
        },
        move || {
            move |_srv, stream: Stream| {
                let calls = counted.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    respond(&stream, "200", "ok").await
                }
            }
        },
    );
    let mut tcp = raw_h2(server.addr(), &[]);
    tcp.write_all(frames).expect("send the frames");
    // The connection may be gone already (a connection error): the GET then goes nowhere.
    let _ = tcp.write_all(&headers(next, true, &request_fields("GET", "/next")));
    let mut seen = Vec::new();
    read_until(&mut tcp, |f| {
        let end = f.stream == next && (f.kind == RST_STREAM || f.flags & END_STREAM != 0);
        seen.push(Frame {
            kind: f.kind,
            flags: f.flags,
            stream: f.stream,
            payload: f.payload.clone(),
        });
        end
    });
    (seen, calls.load(Ordering::SeqCst))
}

/// Whether the server answered stream `id` (HEADERS) after it had reset it.
fn answered_after_reset(frames: &[Frame], id: u32) -> bool {
    let reset = frames
        .iter()
        .position(|f| f.stream == id && f.kind == RST_STREAM);
    reset.is_some_and(|at| {
        frames[at..]
            .iter()
            .any(|f| f.stream == id && f.kind == HEADERS)
    })
}

/// Defect (own engine): a HEADERS frame whose priority names its own stream (RFC 9113
/// §5.3.1) was reset with PROTOCOL_ERROR, and then opened all the same: its handler ran
/// and answered on the stream the server had just reset. No handler may run for it.
#[test]
fn a_request_depending_on_itself_is_refused_and_never_handled() {
    const PRIORITY: u8 = 0x20;
    let mut payload = 1u32.to_be_bytes().to_vec();
    payload.push(15);
    payload.extend(header_block(&request_fields("GET", "/self")));
    let frames = frame(HEADERS, END_HEADERS | END_STREAM | PRIORITY, 1, &payload);
    for own in [false, true] {
        let (seen, calls) = frames_then_get(own, &frames, 3);
        assert!(
            !seen.iter().any(|f| f.stream == 1 && f.kind == HEADERS),
            "own engine {own}: stream 1 answered: {seen:?}"
        );
        let refused = seen
            .iter()
            .any(|f| f.kind == GOAWAY || (f.stream == 1 && f.kind == RST_STREAM));
        assert!(refused, "own engine {own}: stream 1 not refused: {seen:?}");
        // Stream 3's handler alone ran, if the connection went on to it.
        let answered_3 = seen.iter().any(|f| f.stream == 3 && f.kind == HEADERS);
        assert_eq!(calls, usize::from(answered_3), "own engine {own}: {seen:?}");
    }
}

/// Defect (own engine): a PRIORITY frame of the wrong length on an idle stream was a
/// stream error, a RST_STREAM on a stream the client had not opened (RFC 9113 §6.4
/// forbids it), after which the client's HEADERS opened that stream and it was answered.
#[test]
fn a_bad_priority_on_an_idle_stream_does_not_reset_a_stream_later_answered() {
    const PRIORITY_FRAME: u8 = 0x2;
    let mut frames = frame(PRIORITY_FRAME, 0, 3, &[0, 0, 0]);
    frames.extend(headers(3, true, &request_fields("GET", "/three")));
    for own in [false, true] {
        let (seen, _) = frames_then_get(own, &frames, 5);
        assert!(
            !answered_after_reset(&seen, 3),
            "own engine {own}: stream 3 reset, then answered: {seen:?}"
        );
    }
}
