//! HTTP/2 hostile clients (the hostile-client battery of the hardening issue), each sent by
//! a raw-frame client over a plain `TcpStream` so that it can break the protocol in ways a
//! real HTTP/2 library never would:
//!
//! - rapid reset (CVE-2023-44487): HEADERS + RST_STREAM pairs by the thousand;
//! - "made you reset" (CVE-2025-8671): thousands of streams the server itself must reset
//!   because the client broke them (a malformed header block, DATA past the stream's
//!   window, a header list over `max_header_list_size`), and WINDOW_UPDATE with a zero
//!   increment on a stream (which the h2 crate treats as a connection error at once);
//! - CONTINUATION floods (the 2024 CVE-2024-27316 class): a HEADERS frame without
//!   END_HEADERS followed by endless CONTINUATION frames, small or large;
//! - an HPACK bomb: a header block that puts one large entry in the dynamic table and then
//!   references it thousands of times (one byte on the wire, 4 KB decoded, each time);
//! - SETTINGS and PING floods, from a client that reads the acknowledgements and from one
//!   that never reads (that such a client is then closed after `send_timeout` is
//!   `h2_hardening.rs`'s).
//!
//! Each test asserts what bounds the attack: the attacking connection gets GOAWAY and is
//! closed within a few seconds, or (for the floods that HTTP/2 allows) the server stops
//! reading a client that does not read its answers. And each asserts that the server stays
//! whole: `step` returns no error, and a well-behaved HTTP/1 client probing `GET /` every
//! 100 ms on new connections is answered all along, and an HTTP/2 client after.
//!
//! The frame-level defences are the h2 crate's, configured in `src/h2/conn.rs` from
//! `Options` (defaults: max_concurrent_streams 100, max_header_list_size = the HTTP/1
//! head limit 64 KiB, max_pending_accept_reset_streams 20, max_local_error_reset_streams
//! 1024); these tests pin that those settings are in force and that nothing around them
//! (the accept loop, the handlers) undoes them. Every loop is bounded in count and time.

mod common;

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::{h2_frames::*, *};
use onstream::Options;

// ===== bounds =====

/// How long an attack may go on before the test stops it (and, where the server should
/// have cut it off, fails).
const ATTACK_TIME: Duration = Duration::from_secs(10);
/// How long after the attack the attacking connection must be closed by the server.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);
/// How often the well-behaved client asks `GET /`.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);

// ===== frames =====

const CANCEL: u32 = 0x8;
const PROTOCOL_ERROR: u32 = 0x1;
const COMPRESSION_ERROR: u32 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// The largest frame payload a peer may send before the server says otherwise.
const MAX_FRAME: usize = 16_384;

/// A literal field without indexing, with a new (literal) name.
fn literal(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x00);
    hpack_str(out, name.as_bytes());
    hpack_str(out, value);
}

/// A literal field with incremental indexing (it enters the dynamic table), new name.
fn literal_indexed(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.push(0x40);
    hpack_str(out, name.as_bytes());
    hpack_str(out, value);
}

/// `GET /` over http with authority `x`: static-table indices for the method, scheme and
/// path, `:authority` as a literal with an indexed name.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84];
    hpack_int(&mut b, 0x00, 4, 1);
    hpack_str(&mut b, b"x");
    b
}

/// `POST /` (a request with a body to come).
fn post_block() -> Vec<u8> {
    let mut b = vec![0x83, 0x86, 0x84];
    hpack_int(&mut b, 0x00, 4, 1);
    hpack_str(&mut b, b"x");
    b
}

/// The client's connection preface, an empty SETTINGS frame and the acknowledgement of
/// the server's SETTINGS (sent ahead: the server's limits apply at once either way).
fn client_preface() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    frame_into(&mut out, SETTINGS, 0, 0, &[]);
    frame_into(&mut out, SETTINGS, ACK, 0, &[]);
    out
}

/// A frame received.
#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Splits the first whole frame off `buf`, if there is one.
fn take_frame(buf: &mut Vec<u8>) -> Option<Frame> {
    if buf.len() < 9 {
        return None;
    }
    let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
    if buf.len() < 9 + len {
        return None;
    }
    let f = Frame {
        kind: buf[3],
        flags: buf[4],
        stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
        payload: buf[9..9 + len].to_vec(),
    };
    buf.drain(..9 + len);
    Some(f)
}

// ===== the attacker's connection =====

/// What the server sent on an attacking connection, tallied by a reader thread.
#[derive(Debug, Default, Clone)]
struct Seen {
    frames: usize,
    bytes: usize,
    headers: usize,
    rst_streams: usize,
    settings_acks: usize,
    pongs: usize,
    /// GOAWAY's error code and debug data.
    goaway: Option<(u32, String)>,
    /// When the server closed the connection (EOF or reset), from the connection's start.
    closed_after: Option<Duration>,
}

/// An attacking HTTP/2 connection: the socket to write on, and a reader thread that reads
/// everything the server sends (so the server is never stopped by a full socket unless a
/// test wants it) and tallies it in `seen`.
struct Attacker {
    sock: TcpStream,
    seen: Arc<Mutex<Seen>>,
    stop_reading: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Attacker {
    /// Connects, sends the preface, and starts the reader.
    fn connect(addr: SocketAddr) -> Attacker {
        let mut a = Attacker::connect_unread(addr);
        let seen = a.seen.clone();
        let stop = a.stop_reading.clone();
        let mut r = a.sock.try_clone().unwrap();
        let start = Instant::now();
        a.reader = Some(thread::spawn(move || {
            r.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 * 1024];
            loop {
                match r.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        let mut s = seen.lock().unwrap();
                        s.bytes += n;
                        while let Some(f) = take_frame(&mut buf) {
                            s.frames += 1;
                            match f.kind {
                                HEADERS => s.headers += 1,
                                RST_STREAM => s.rst_streams += 1,
                                SETTINGS if f.flags & ACK != 0 => s.settings_acks += 1,
                                PING if f.flags & ACK != 0 => s.pongs += 1,
                                GOAWAY if f.payload.len() >= 8 => {
                                    let code = u32::from_be_bytes([
                                        f.payload[4],
                                        f.payload[5],
                                        f.payload[6],
                                        f.payload[7],
                                    ]);
                                    let debug = String::from_utf8_lossy(&f.payload[8..]).into();
                                    s.goaway = Some((code, debug));
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // A reset: the server closed with input unread.
                    Err(_) => break,
                }
            }
            seen.lock().unwrap().closed_after = Some(start.elapsed());
        }));
        a
    }

    /// Connects and sends the preface, with no reader: nothing the server sends is read.
    fn connect_unread(addr: SocketAddr) -> Attacker {
        let mut sock = connect(addr);
        sock.set_nodelay(true).unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        sock.write_all(&client_preface()).unwrap();
        Attacker {
            sock,
            seen: Arc::default(),
            stop_reading: Arc::default(),
            reader: None,
        }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Whether the server has sent GOAWAY or closed.
    fn cut_off(&self) -> bool {
        let s = self.seen.lock().unwrap();
        s.goaway.is_some() || s.closed_after.is_some()
    }

    /// Writes batches made by `batch(i)` (i counts batches) until `max_batches` were
    /// written, [`ATTACK_TIME`] passed, the server cut the connection off, or a write
    /// failed (closed, reset, or blocked for 2 s because the server stopped reading).
    fn flood(&mut self, max_batches: usize, mut batch: impl FnMut(usize) -> Vec<u8>) -> Flood {
        let start = Instant::now();
        let mut out = Flood::default();
        while out.batches < max_batches && start.elapsed() < ATTACK_TIME && !self.cut_off() {
            let bytes = batch(out.batches);
            if let Err(e) = self.sock.write_all(&bytes) {
                out.write_error = Some(e.kind());
                break;
            }
            out.batches += 1;
            out.bytes += bytes.len();
        }
        out.elapsed = start.elapsed();
        out
    }

    /// Waits until the server has closed the connection (at most `max`) and returns what
    /// the reader saw; `closed_after` is `None` if it is still open.
    fn wait_closed(&mut self, max: Duration) -> Seen {
        wait_until(max, || self.seen.lock().unwrap().closed_after.is_some());
        self.stop_reading.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.seen()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop_reading.store(true, Ordering::SeqCst);
        let _ = self.sock.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// What a flood wrote.
#[derive(Debug, Default)]
struct Flood {
    batches: usize,
    bytes: usize,
    write_error: Option<io::ErrorKind>,
    elapsed: Duration,
}

// ===== the well-behaved clients =====

/// A well-behaved HTTP/1 client asking `GET /` on a new connection every
/// [`PROBE_INTERVAL`] until stopped, recording each answer's latency.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<ProbeStats>,
}

#[derive(Debug, Default)]
struct ProbeStats {
    ok: usize,
    failures: Vec<String>,
    worst: Duration,
    /// When each answer arrived.
    answered_at: Vec<Instant>,
}

impl ProbeStats {
    /// Answers that arrived in `[from, to]`.
    fn answered_between(&self, from: Instant, to: Instant) -> usize {
        self.answered_at
            .iter()
            .filter(|t| **t >= from && **t <= to)
            .count()
    }
}

impl Probe {
    fn start(addr: SocketAddr) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut stats = ProbeStats::default();
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    match probe_once(addr) {
                        Ok(()) => {
                            stats.ok += 1;
                            stats.worst = stats.worst.max(t.elapsed());
                            stats.answered_at.push(Instant::now());
                        }
                        Err(e) => stats.failures.push(e),
                    }
                    thread::sleep(PROBE_INTERVAL.saturating_sub(t.elapsed()));
                }
                stats
            })
        };
        Probe { stop, thread }
    }

    fn stop(self) -> ProbeStats {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

fn probe_once(addr: SocketAddr) -> Result<(), String> {
    let mut c = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("{e}"))?;
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    c.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    if out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"/probe") {
        Ok(())
    } else {
        Err(format!("answer {:?}", String::from_utf8_lossy(&out)))
    }
}

/// A well-behaved HTTP/2 exchange on a new connection: `GET /` on stream 1; returns the
/// body once the response ends. The response's header block must start with the static
/// index of `:status: 200` (h2's encoder always uses it).
fn h2_get(addr: SocketAddr) -> Result<Vec<u8>, String> {
    let mut c = connect(addr);
    let mut out = client_preface();
    frame_into(&mut out, HEADERS, END_HEADERS | END_STREAM, 1, &get_block());
    c.write_all(&out).map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut body = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        while let Some(f) = take_frame(&mut buf) {
            match (f.kind, f.stream) {
                (HEADERS, 1) if f.payload.first() != Some(&0x88) => {
                    return Err(format!("not a 200: header block {:?}", f.payload))
                }
                (DATA, 1) => body.extend_from_slice(&f.payload),
                (RST_STREAM | GOAWAY, _) => return Err(format!("got {f:?}")),
                _ => {}
            }
            if f.stream == 1 && f.flags & END_STREAM != 0 {
                return Ok(body);
            }
        }
        if Instant::now() >= deadline {
            return Err("no answer in time".into());
        }
        match c.read(&mut chunk) {
            Ok(0) => return Err("closed before the answer".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// A server answering every request with its path (the handler reads no body).
fn echo_server(opts: impl FnOnce(Options) -> Options + Send + 'static) -> TestServer {
    TestServer::start(opts, path_echo)
}

/// The checks every test ends with: the probe was answered every time (and during the
/// attack, when it lasted long enough for a probe to fit in), an HTTP/2 client is served
/// after, `step` returned no error, and every connection is gone.
fn check_whole(server: &TestServer, probe: Probe, attack: (Instant, Instant)) {
    let stats = probe.stop();
    assert!(
        stats.failures.is_empty(),
        "the well-behaved client failed during the attack: {:?} ({} answered)",
        stats.failures,
        stats.ok
    );
    assert!(stats.ok > 0, "the well-behaved client was never answered");
    let (from, to) = attack;
    if to - from > 3 * PROBE_INTERVAL + IO_TIMEOUT / 5 {
        assert!(
            stats.answered_between(from, to) > 0,
            "the well-behaved client was not answered during the {:?} attack",
            to - from
        );
    }
    assert_eq!(
        h2_get(server.addr()).expect("an HTTP/2 client after the attack"),
        b"/"
    );
    assert!(
        server.step_errors().is_empty(),
        "step returned errors: {:?}",
        server.step_errors()
    );
    assert!(
        server.wait_connections(0, CLOSE_WITHIN),
        "connections left open: {}",
        server.connections()
    );
    eprintln!(
        "well-behaved client: {} answers, worst latency {:?}",
        stats.ok, stats.worst
    );
}

/// Asserts the attacking connection got GOAWAY with `code` and was closed.
fn check_goaway(seen: &Seen, code: u32, what: &str) {
    let (got, debug) = seen
        .goaway
        .clone()
        .unwrap_or_else(|| panic!("{what}: no GOAWAY; seen {seen:?}"));
    assert_eq!(got, code, "{what}: GOAWAY code (debug data {debug:?})");
    assert!(
        seen.closed_after.is_some(),
        "{what}: the connection was left open after GOAWAY; seen {seen:?}"
    );
}

// ===== rapid reset =====

/// Rapid reset (CVE-2023-44487): HEADERS + RST_STREAM pairs, 100 per write, up to 100,000
/// pairs. Streams the client resets before the server accepted them are bounded by
/// `max_pending_accept_reset_streams` (20): the server answers GOAWAY ENHANCE_YOUR_CALM
/// and closes, long before the flood is out.
#[test]
fn rapid_reset_gets_goaway_enhance_your_calm() {
    let server = echo_server(|o| o);
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    let mut id = 1u32;
    let flood = a.flood(1000, |_| {
        let mut out = Vec::new();
        for _ in 0..100 {
            frame_into(
                &mut out,
                HEADERS,
                END_HEADERS | END_STREAM,
                id,
                &get_block(),
            );
            frame_into(&mut out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            id += 2;
        }
        out
    });
    let seen = a.wait_closed(CLOSE_WITHIN);
    let end = Instant::now();
    eprintln!("rapid reset: {flood:?}, {seen:?}");
    check_goaway(&seen, ENHANCE_YOUR_CALM, "rapid reset");
    assert_eq!(seen.goaway.as_ref().unwrap().1, "too_many_resets");
    assert!(
        flood.batches < 1000,
        "the whole flood of 100,000 resets went in before the server cut it off"
    );
    check_whole(&server, probe, (start, end));
}

/// Rapid reset paced so that the server mostly takes each stream before its reset arrives
/// (ten pairs per write, 10 ms apart, for 3 s): a stream reset after it was accepted does
/// not count against `max_pending_accept_reset_streams`, so the connection may live on,
/// and each reset stream costs one handler, which fails at once here (it reads the reset
/// body). The server must keep up: the attacking connection stays usable (a later request
/// on it is answered) unless the server cut it off, and the well-behaved client is served.
#[test]
fn paced_rapid_reset_costs_one_short_handler_per_stream() {
    let handled = Arc::new(AtomicUsize::new(0));
    let server = {
        let handled = handled.clone();
        TestServer::start(
            |o| o,
            move || {
                move |_srv, stream: onstream::Stream| {
                    handled.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let req = stream.get_headers().await?;
                        let path = req.get(":path").unwrap_or("").to_string();
                        // Reads the (reset) body: fails at once for a reset stream.
                        stream.get_body_as_bytes().await?;
                        respond(&stream, "200", path).await
                    }
                }
            },
        )
    };
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    let mut id = 1u32;
    let flood = a.flood(300, |_| {
        thread::sleep(Duration::from_millis(10));
        let mut out = Vec::new();
        for _ in 0..10 {
            // Without END_STREAM: the handler waits for the body, which the reset ends.
            frame_into(&mut out, HEADERS, END_HEADERS, id, &post_block());
            frame_into(&mut out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            id += 2;
        }
        out
    });
    let end = Instant::now();
    eprintln!("paced rapid reset: {flood:?}, {:?}", a.seen());
    assert_eq!(flood.write_error, None, "the attacking connection broke");
    // The server may still cut this off; what it must not do is stall on it.
    if !a.cut_off() {
        // One more (well-behaved) request on the attacking connection is answered.
        let mut out = Vec::new();
        frame_into(
            &mut out,
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &get_block(),
        );
        a.sock.write_all(&out).unwrap();
        assert!(
            wait_until(IO_TIMEOUT, || a.seen().headers >= 1),
            "a request after the paced resets was not answered: {:?}",
            a.seen()
        );
    }
    drop(a);
    assert!(
        handled.load(Ordering::SeqCst) > 0,
        "no stream reached a handler"
    );
    check_whole(&server, probe, (start, end));
}

// ===== made you reset =====

/// Streams opened as fast as the client can, each broken by the client right after its
/// HEADERS so that the *server* must reset it; `make(id)` writes one such stream. The h2
/// crate counts server-side resets and, past `max_local_error_reset_streams` (1024), sends
/// GOAWAY ENHANCE_YOUR_CALM (CVE-2025-8671).
fn made_you_reset(
    opts: impl FnOnce(Options) -> Options + Send + 'static,
    what: &str,
    mut make: impl FnMut(&mut Vec<u8>, u32),
) {
    let server = echo_server(opts);
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    let mut id = 1u32;
    // 100 streams per write, at most 20,000 streams.
    let flood = a.flood(200, |_| {
        let mut out = Vec::new();
        for _ in 0..100 {
            make(&mut out, id);
            id += 2;
        }
        out
    });
    let seen = a.wait_closed(CLOSE_WITHIN);
    let end = Instant::now();
    eprintln!("made you reset ({what}): {flood:?}, {seen:?}");
    check_goaway(&seen, ENHANCE_YOUR_CALM, what);
    assert_eq!(
        seen.goaway.unwrap().1,
        "too_many_internal_resets",
        "{what}: GOAWAY's debug data"
    );
    // The resets the server queued before GOAWAY are not all written (the connection
    // error drops them), but there are never more than the limit.
    assert!(
        seen.rst_streams <= 1024,
        "{what}: the server reset {} streams, more than max_local_error_reset_streams",
        seen.rst_streams
    );
    check_whole(&server, probe, (start, end));
}

/// Made you reset with a malformed header block: a connection-specific field
/// (`connection: x`) makes each request malformed, a stream error (RST_STREAM
/// PROTOCOL_ERROR) the server must send.
#[test]
fn made_you_reset_by_malformed_headers_gets_goaway() {
    made_you_reset(
        |o| o,
        "malformed headers",
        |out, id| {
            let mut b = get_block();
            literal(&mut b, "connection", b"x");
            frame_into(out, HEADERS, END_HEADERS | END_STREAM, id, &b);
        },
    );
}

/// Made you reset with DATA past the stream's flow-control window (16 bytes here): a
/// stream error (FLOW_CONTROL_ERROR) each time; the connection window is not exceeded.
#[test]
fn made_you_reset_by_data_past_the_stream_window_gets_goaway() {
    made_you_reset(
        |o| o.h2_window_size(16, 1 << 20),
        "DATA past the window",
        |out, id| {
            frame_into(out, HEADERS, END_HEADERS, id, &post_block());
            frame_into(out, DATA, END_STREAM, id, &[b'x'; 64]);
        },
    );
}

/// Made you reset with header lists over `max_header_list_size` (64 KiB): the first stream
/// puts a 4,000-byte field in the HPACK dynamic table, and every stream references it 20
/// times (80 KB decoded from 20 bytes). Each is refused (431 or RST_STREAM), a
/// server-side reset that counts toward the same limit.
#[test]
fn made_you_reset_by_oversized_header_lists_gets_goaway() {
    let big = vec![b'b'; 4000];
    made_you_reset(
        |o| o,
        "oversized header lists",
        move |out, id| {
            let mut b = get_block();
            if id == 1 {
                literal_indexed(&mut b, "x-big", &big);
            }
            // Index 62: the newest dynamic-table entry.
            b.extend(std::iter::repeat(0xbe).take(20));
            frame_into(out, HEADERS, END_HEADERS | END_STREAM, id, &b);
        },
    );
}

/// WINDOW_UPDATE with a zero increment on a stream is a stream error by RFC 9113 §6.9, so
/// a client could make the server reset stream after stream with it; the h2 crate treats it
/// as a connection error instead (GOAWAY PROTOCOL_ERROR) on the first one.
#[test]
fn zero_window_update_on_a_stream_gets_goaway_at_once() {
    let server = echo_server(|o| o);
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    let mut id = 1u32;
    let flood = a.flood(200, |_| {
        let mut out = Vec::new();
        for _ in 0..100 {
            frame_into(&mut out, HEADERS, END_HEADERS, id, &post_block());
            frame_into(&mut out, WINDOW_UPDATE, 0, id, &0u32.to_be_bytes());
            id += 2;
        }
        out
    });
    let seen = a.wait_closed(CLOSE_WITHIN);
    let end = Instant::now();
    eprintln!("zero WINDOW_UPDATE: {flood:?}, {seen:?}");
    check_goaway(&seen, PROTOCOL_ERROR, "zero WINDOW_UPDATE");
    assert!(
        seen.rst_streams <= 1,
        "streams were reset one by one ({}) instead of the connection closed",
        seen.rst_streams
    );
    check_whole(&server, probe, (start, end));
}

// ===== CONTINUATION floods =====

/// A HEADERS frame without END_HEADERS, then CONTINUATION frames made by `cont`, never
/// ending the header block. Returns what the server did.
fn continuation_flood(what: &str, cont: impl Fn(usize) -> Vec<u8>) -> (Flood, Seen) {
    let server = echo_server(|o| o);
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    a.sock
        .write_all(&frame(HEADERS, END_STREAM, 1, &get_block()))
        .unwrap();
    // Up to 100,000 CONTINUATION frames, 100 per write.
    let flood = a.flood(1000, |i| {
        let mut out = Vec::new();
        for j in 0..100 {
            frame_into(&mut out, CONTINUATION, 0, 1, &cont(i * 100 + j));
        }
        out
    });
    let seen = a.wait_closed(CLOSE_WITHIN);
    let end = Instant::now();
    eprintln!("CONTINUATION flood ({what}): {flood:?}, {seen:?}");
    assert!(
        seen.goaway.is_some() && seen.closed_after.is_some(),
        "{what}: the endless header block was not cut off: {seen:?} after {flood:?}"
    );
    assert!(
        flood.batches < 1000,
        "{what}: all 100,000 CONTINUATION frames went in"
    );
    check_whole(&server, probe, (start, end));
    (flood, seen)
}

/// Endless small CONTINUATION frames (each one literal field of a few bytes): the h2
/// crate bounds the number of CONTINUATION frames of one header block (by
/// max_header_list_size / max_frame_size, at least 5) and sends GOAWAY ENHANCE_YOUR_CALM.
#[test]
fn endless_small_continuation_frames_get_goaway() {
    let (_, seen) = continuation_flood("small frames", |i| {
        let mut b = Vec::new();
        literal(&mut b, "x-c", format!("{i}").as_bytes());
        b
    });
    assert_eq!(seen.goaway.unwrap().0, ENHANCE_YOUR_CALM);
}

/// Full-size CONTINUATION frames (16 KiB each) carrying one field value that claims
/// 1 MiB, so the decoder must keep the partial block: cut off by the frame-count bound
/// (ENHANCE_YOUR_CALM) or once the block passes max_header_list_size (COMPRESSION_ERROR),
/// at a few hundred KB, not 1.6 GB.
#[test]
fn endless_large_continuation_frames_get_goaway() {
    let (_, seen) = continuation_flood("16 KiB frames", |i| {
        if i == 0 {
            // A literal whose value claims 1 MiB, then its first bytes.
            let mut b = vec![0x00];
            hpack_str(&mut b, b"x-long");
            hpack_int(&mut b, 0, 7, 1 << 20);
            b.resize(MAX_FRAME, b'v');
            b
        } else {
            vec![b'v'; MAX_FRAME]
        }
    });
    let code = seen.goaway.unwrap().0;
    assert!(
        code == ENHANCE_YOUR_CALM || code == COMPRESSION_ERROR,
        "GOAWAY code {code:#x}"
    );
}

// ===== HPACK bomb =====

/// An HPACK bomb: one header block (HEADERS + CONTINUATIONs) that inserts a 4,000-byte
/// field in the dynamic table and then references it 16,000 times: 16 KB on the wire,
/// 64 MB decoded. The h2 crate stops decoding a header list at 4 × max_header_list_size
/// and sends GOAWAY ENHANCE_YOUR_CALM; the handler never sees the request.
#[test]
fn hpack_bomb_gets_goaway_without_reaching_a_handler() {
    let handled = Arc::new(AtomicUsize::new(0));
    let server = {
        let handled = handled.clone();
        TestServer::start(
            |o| o,
            move || {
                move |_srv, stream: onstream::Stream| {
                    handled.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let req = stream.get_headers().await?;
                        let path = req.get(":path").unwrap_or("").to_string();
                        respond(&stream, "200", path).await
                    }
                }
            },
        )
    };
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    let mut block = get_block();
    literal_indexed(&mut block, "x-bomb", &[b'b'; 4000]);
    block.extend(std::iter::repeat(0xbe).take(16_000));
    let mut out = Vec::new();
    let mut pieces = block.chunks(MAX_FRAME).peekable();
    let first = pieces.next().unwrap();
    let flags = if pieces.peek().is_none() {
        END_HEADERS
    } else {
        0
    };
    frame_into(&mut out, HEADERS, END_STREAM | flags, 1, first);
    while let Some(p) = pieces.next() {
        let flags = if pieces.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        frame_into(&mut out, CONTINUATION, flags, 1, p);
    }
    let _ = a.sock.write_all(&out);
    let seen = a.wait_closed(CLOSE_WITHIN);
    let end = Instant::now();
    eprintln!("HPACK bomb: {seen:?}");
    check_goaway(&seen, ENHANCE_YOUR_CALM, "HPACK bomb");
    check_whole(&server, probe, (start, end));
    // The probes and the HTTP/2 client are the only requests handled.
    let handled = handled.load(Ordering::SeqCst);
    assert!(handled >= 1, "nothing handled");
    assert_eq!(seen.headers, 0, "the bomb's request was answered");
}

// ===== SETTINGS and PING floods =====

/// 100,000 SETTINGS frames (each changing INITIAL_WINDOW_SIZE), from a client that reads:
/// HTTP/2 allows them, and the h2 crate acknowledges each one before reading the next
/// (it sets no count limit), so the flood costs the server as much as it costs the client
/// and no more. The flood must go through at the client's pace with every SETTINGS
/// acknowledged, while the well-behaved client is served.
#[test]
fn settings_flood_is_acknowledged_at_the_clients_pace() {
    let server = echo_server(|o| o);
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    let flood = a.flood(100, |i| {
        let mut out = Vec::new();
        for j in 0..1000u32 {
            // SETTINGS_INITIAL_WINDOW_SIZE, alternating values.
            let mut p = vec![0x00, 0x04];
            p.extend_from_slice(&(65_535 + (i as u32 * 1000 + j) % 2).to_be_bytes());
            frame_into(&mut out, SETTINGS, 0, 0, &p);
        }
        out
    });
    let end = Instant::now();
    eprintln!("SETTINGS flood: {flood:?}, {:?}", a.seen());
    assert_eq!(flood.write_error, None, "the flood was refused");
    assert_eq!(
        flood.batches, 100,
        "the flood did not go through in {ATTACK_TIME:?}"
    );
    // +1: the preface's own SETTINGS.
    assert!(
        wait_until(IO_TIMEOUT, || a.seen().settings_acks == 100_001),
        "not every SETTINGS was acknowledged: {:?}",
        a.seen()
    );
    drop(a);
    check_whole(&server, probe, (start, end));
}

/// 100,000 PINGs from a client that reads: each is answered (HTTP/2 requires it), one at
/// a time, at the client's pace.
#[test]
fn ping_flood_is_answered_at_the_clients_pace() {
    let server = echo_server(|o| o);
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect(server.addr());
    let start = Instant::now();
    let flood = a.flood(100, |i| {
        let mut out = Vec::new();
        for j in 0..1000u64 {
            frame_into(&mut out, PING, 0, 0, &(i as u64 * 1000 + j).to_be_bytes());
        }
        out
    });
    let end = Instant::now();
    eprintln!("PING flood: {flood:?}, {:?}", a.seen());
    assert_eq!(flood.write_error, None, "the flood was refused");
    assert_eq!(
        flood.batches, 100,
        "the flood did not go through in {ATTACK_TIME:?}"
    );
    assert!(
        wait_until(IO_TIMEOUT, || a.seen().pongs == 100_000),
        "not every PING was answered: {:?}",
        a.seen()
    );
    drop(a);
    check_whole(&server, probe, (start, end));
}

/// A SETTINGS or PING flood from a client that never reads: the answers fill the socket
/// buffers, and the server must then stop reading the client (the h2 crate writes each
/// answer before reading the next frame) rather than queue answers without bound. The
/// client's writes stall after at most a few socket buffers' worth of frames; meanwhile
/// everyone else is served.
fn unread_flood(what: &str, unit: impl Fn(u64) -> Vec<u8>) {
    let server = echo_server(|o| o);
    let probe = Probe::start(server.addr());
    thread::sleep(3 * PROBE_INTERVAL);
    let mut a = Attacker::connect_unread(server.addr());
    let start = Instant::now();
    // Up to 256 MB of frames; 64 KB per write.
    let mut n = 0u64;
    let flood = a.flood(4096, |_| {
        let mut out = Vec::with_capacity(64 * 1024);
        while out.len() < 64 * 1024 - 32 {
            out.extend(unit(n));
            n += 1;
        }
        out
    });
    let end = Instant::now();
    eprintln!("{what} flood, never read: {flood:?}");
    assert!(
        matches!(
            flood.write_error,
            Some(io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
        ),
        "{what}: the server kept reading a client that reads nothing: {flood:?}"
    );
    // Socket buffers on loopback hold a few MB each way; 64 MB is far more.
    assert!(
        flood.bytes < 64 << 20,
        "{what}: the server took {} bytes before stopping",
        flood.bytes
    );
    let stats = probe.stop();
    assert!(stats.failures.is_empty(), "{:?}", stats.failures);
    assert!(stats.answered_between(start, end) > 0);
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
    assert_eq!(h2_get(server.addr()).expect("an HTTP/2 client"), b"/");
}

#[test]
fn settings_flood_from_a_client_that_never_reads_is_stopped_by_backpressure() {
    unread_flood("SETTINGS", |_| frame(SETTINGS, 0, 0, &[]));
}

#[test]
fn ping_flood_from_a_client_that_never_reads_is_stopped_by_backpressure() {
    unread_flood("PING", |n| frame(PING, 0, 0, &n.to_be_bytes()));
}

/// Found by `bench/hostile`: the h2 crate reads frames until the socket would block, and
/// a PING (or SETTINGS) flood makes no request, so one connection's turn lasted as long
/// as its client kept the socket full (others waited up to 1.6 s; nginx 74 ms). One turn
/// of the connection now reads a bounded amount: with 1 MiB of PINGs waiting and the
/// answers read as they come, a single step answers well under all of them, and the
/// following steps answer the rest.
#[test]
fn a_ping_flood_is_read_a_bounded_amount_per_turn() {
    use onstream::Server;
    use std::{
        io::{Read, Write},
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
    };

    // Socket buffers big enough for the whole flood and its answers on both sides (the
    // accepted socket inherits the listener's), so that only the server's own reading
    // decides how much of it one turn takes.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener.set_recv_buffer_size(8 << 20).unwrap();
    listener.set_send_buffer_size(8 << 20).unwrap();
    listener
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(16).unwrap();
    let listener: std::net::TcpListener = listener.into();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(
        listener,
        Options::new().tls(onstream::Tls::Off),
        |_srv, stream: onstream::Stream| async move { respond(&stream, "200", "ok").await },
    )
    .unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_send_buffer_size(8 << 20).unwrap();
    sock.set_recv_buffer_size(8 << 20).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut client: std::net::TcpStream = sock.into();
    client.write_all(&client_preface()).unwrap();
    // Answers are read (and PING ACKs counted) as they come, so the server's output
    // never waits for the client.
    let acks = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (mut sock, acks) = (client.try_clone().unwrap(), acks.clone());
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        std::thread::spawn(move || {
            let (mut inbox, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
            while let Ok(n @ 1..) = sock.read(&mut buf) {
                inbox.extend_from_slice(&buf[..n]);
                while let Some(f) = take_frame(&mut inbox) {
                    if f.kind == PING && f.flags & ACK != 0 {
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let deadline = Instant::now() + CLOSE_WITHIN;
    while server.connections() == 0 && Instant::now() < deadline {
        server.step(Some(Duration::from_millis(10))).unwrap();
    }
    // The connection is set up (its SETTINGS answered) before the flood.
    for _ in 0..20 {
        server.step(Some(Duration::from_millis(5))).unwrap();
    }
    let pings = (1 << 20) / 17;
    let mut flood = Vec::with_capacity(pings * 17);
    for i in 0..pings {
        frame_into(&mut flood, PING, 0, 0, &(i as u64).to_be_bytes());
    }
    client.write_all(&flood).unwrap();
    // Let the kernel move it all to the server's side first.
    std::thread::sleep(Duration::from_millis(200));
    server.step(Some(Duration::ZERO)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let after_one_step = acks.load(Ordering::SeqCst);
    assert!(
        after_one_step < pings / 2,
        "one step answered {after_one_step} of {pings} PINGs"
    );
    let deadline = Instant::now() + CLOSE_WITHIN;
    while acks.load(Ordering::SeqCst) < pings && Instant::now() < deadline {
        server.step(Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(acks.load(Ordering::SeqCst), pings, "every PING is answered");
    let _ = client.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
}

/// Found by this battery: a stream the client resets is closed for h2 at once, but its
/// handler runs on, so a client that resets each stream right after it was accepted got a
/// handler per stream it ever opened (950 alive at once on a connection advertising 100)
/// while h2 saw nothing amiss. The connection now accepts no new stream while
/// `max_concurrent_streams` handlers run; the streams the client goes on resetting wait
/// in h2, which cuts the client off (GOAWAY ENHANCE_YOUR_CALM) past its pending-reset
/// bound.
#[test]
fn reset_streams_hold_no_more_handlers_than_max_concurrent_streams() {
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let server = {
        let (live, peak) = (live.clone(), peak.clone());
        TestServer::start(
            |o| o.max_concurrent_streams(20),
            move || {
                move |_srv, stream: onstream::Stream| {
                    let (live, peak) = (live.clone(), peak.clone());
                    async move {
                        let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        // Work that does not touch the stream (a database query, say).
                        onstream::sleep(Duration::from_millis(500)).await;
                        live.fetch_sub(1, Ordering::SeqCst);
                        respond(&stream, "200", "late").await
                    }
                }
            },
        )
    };
    let mut a = Attacker::connect(server.addr());
    let mut id = 1u32;
    let flood = a.flood(200, |_| {
        thread::sleep(Duration::from_millis(10));
        let mut out = Vec::new();
        for _ in 0..10 {
            frame_into(&mut out, HEADERS, END_HEADERS, id, &post_block());
            frame_into(&mut out, RST_STREAM, 0, id, &CANCEL.to_be_bytes());
            id += 2;
        }
        out
    });
    eprintln!(
        "paced rapid reset against slow handlers: {flood:?}, {:?}",
        a.seen()
    );
    let most = peak.load(Ordering::SeqCst);
    assert!(
        most <= 20,
        "{most} handlers alive at once with max_concurrent_streams 20"
    );
    drop(a);
    assert!(server.wait_connections(0, IO_TIMEOUT));
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}
