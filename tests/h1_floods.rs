//! HTTP/1 and TLS hostile clients of the hostile-client battery (the hardening issue) not
//! covered elsewhere, each at the size the battery names:
//!
//! - a 1 MB request line (414), 10,000 header lines (431), 1 MB of chunk extensions in
//!   one chunk-size line and spread over many chunks (400): a clear 4xx, then the
//!   connection is closed;
//! - 10,000 connections opened and closed as fast as four threads can (closed at once,
//!   after a partial request, after a whole request without reading, or reset);
//! - garbage after a ClientHello, and half a ClientHello then silence, on `Tls::On` and
//!   `Tls::Auto` servers: closed (within `connection_setup_timeout` for the silent ones).
//!
//! Smaller sizes of the first items are in `bad_input.rs` (a 10 KB request line, 200
//! header lines, a 100 KB chunk extension, chunk-size overflow); slowloris, descriptor
//! exhaustion and resets mid-response are in `load_and_faults.rs`; slow readers in
//! `slow_reader.rs`.
//!
//! Each test also asserts that the server stays whole: a well-behaved client probing
//! `GET /` on new connections every 100 ms is answered all along, `step` returns no error,
//! and every connection is gone after. Every loop and wait is bounded.

mod common;

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::*;
use onstream::{Options, Tls};

/// How often the well-behaved client asks `GET /`.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Connections the fast open-and-close test opens.
const FAST_CONNECTIONS: usize = 10_000;
/// Threads opening them.
const FAST_THREADS: usize = 4;
/// The open-and-close test stops opening after this long, however many it opened.
const FAST_DEADLINE: Duration = Duration::from_secs(30);

// ===== the well-behaved client =====

/// How the well-behaved client reaches the server.
#[derive(Clone)]
enum ProbeKind {
    Plain,
    Tls(Arc<rustls::ClientConfig>),
}

/// A well-behaved client asking `GET /probe` on a new connection every [`PROBE_INTERVAL`]
/// until stopped.
struct Probe {
    addr: SocketAddr,
    kind: ProbeKind,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<ProbeStats>,
}

#[derive(Debug, Default)]
struct ProbeStats {
    ok: usize,
    failures: Vec<String>,
    worst: Duration,
    answered_at: Vec<Instant>,
}

impl Probe {
    fn start(addr: SocketAddr, kind: ProbeKind) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let kind = kind.clone();
            thread::spawn(move || {
                let mut stats = ProbeStats::default();
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    match probe_once(addr, &kind) {
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
        Probe {
            addr,
            kind,
            stop,
            thread,
        }
    }

    /// Stops the probe and checks it was answered every time, and at least once within
    /// `during` when that is long enough for a probe to fit in.
    fn check(self, during: (Instant, Instant)) -> ProbeStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut stats = self.thread.join().unwrap();
        if stats.ok == 0 {
            // The attack was over before the first probe went out: the well-behaved client
            // asks once now, after it.
            let t = Instant::now();
            match probe_once(self.addr, &self.kind) {
                Ok(()) => {
                    stats.ok += 1;
                    stats.worst = t.elapsed();
                }
                Err(e) => stats.failures.push(e),
            }
        }
        assert!(
            stats.failures.is_empty(),
            "the well-behaved client failed: {:?} ({} answered)",
            stats.failures,
            stats.ok
        );
        assert!(stats.ok > 0, "the well-behaved client was never answered");
        let (from, to) = during;
        if to - from > 3 * PROBE_INTERVAL + IO_TIMEOUT / 5 {
            assert!(
                stats.answered_at.iter().any(|t| *t >= from && *t <= to),
                "the well-behaved client was not answered during the {:?} attack",
                to - from
            );
        }
        eprintln!(
            "well-behaved client: {} answers, worst latency {:?}",
            stats.ok, stats.worst
        );
        stats
    }
}

fn probe_once(addr: SocketAddr, kind: &ProbeKind) -> Result<(), String> {
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("{e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let req = b"GET /probe HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut out = Vec::new();
    match kind {
        ProbeKind::Plain => {
            let mut tcp = tcp;
            tcp.write_all(req).map_err(|e| format!("write: {e}"))?;
            tcp.read_to_end(&mut out)
                .map_err(|e| format!("read: {e}"))?;
        }
        ProbeKind::Tls(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let conn =
                rustls::ClientConnection::new(config.clone(), name).map_err(|e| format!("{e}"))?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(req).map_err(|e| format!("tls write: {e}"))?;
            // A peer closing without close_notify is an error for rustls; what was read
            // before it counts.
            match tls.read_to_end(&mut out) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(format!("tls read: {e}")),
            }
        }
    }
    if out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"/probe") {
        Ok(())
    } else {
        Err(format!("answer {:?}", String::from_utf8_lossy(&out)))
    }
}

/// The checks every test ends with, besides the probe's: `step` returned no error and
/// every connection is gone.
fn check_server(server: &TestServer) {
    assert!(
        server.step_errors().is_empty(),
        "step returned errors: {:?}",
        server.step_errors()
    );
    assert!(
        server.wait_connections(0, Duration::from_secs(5)),
        "connections left open: {}",
        server.connections()
    );
}

/// A server whose handler reads the whole body (as the hello example does) before
/// answering with the path, recording each body read's error status, if any.
fn body_reading_server(
    opts: impl FnOnce(Options) -> Options + Send + 'static,
) -> (TestServer, Arc<Mutex<Vec<Option<u16>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = {
        let seen = seen.clone();
        TestServer::start(opts, move || {
            move |_srv, stream: onstream::Stream| {
                let seen = seen.clone();
                async move {
                    let req = stream.get_headers().await?;
                    let path = req.get(":path").unwrap_or("").to_string();
                    if path != "/probe" {
                        let res = stream.get_body_as_bytes().await;
                        seen.lock()
                            .unwrap()
                            .push(res.as_ref().err().and_then(|e| e.status()));
                        res?;
                    }
                    respond(&stream, "200", path).await
                }
            }
        })
    };
    (server, seen)
}

/// Sends `request` on a new connection from another thread (the server may answer and
/// close part-way) while reading the answer here; returns the answer, which must end with
/// the server closing the connection within [`IO_TIMEOUT`], and how much was written.
fn send_while_reading(addr: SocketAddr, request: Vec<u8>) -> (Response, usize) {
    let mut c = connect(addr);
    let writer = {
        let mut c = c.try_clone().unwrap();
        thread::spawn(move || {
            let mut written = 0;
            for piece in request.chunks(16 * 1024) {
                if c.write_all(piece).is_err() {
                    break;
                }
                written += piece.len();
            }
            written
        })
    };
    let raw = read_to_close(&mut c, IO_TIMEOUT).unwrap_or_else(|partial| {
        panic!(
            "the connection was left open; read {:?}",
            String::from_utf8_lossy(&partial)
        )
    });
    let written = writer.join().unwrap();
    (parse_one(&raw), written)
}

// ===== oversized requests =====

/// A 1 MB request line: 414 and `connection: close` once it passes `max_request_line`
/// (8 KiB), then the connection is closed (what the client sent meanwhile is thrown away
/// unread, up to the lingering-close bound).
#[test]
fn a_one_megabyte_request_line_is_414_and_closed() {
    let (server, seen) = body_reading_server(|o| o);
    let probe = Probe::start(server.addr(), ProbeKind::Plain);
    let start = Instant::now();
    let mut req = b"GET /".to_vec();
    req.resize(1 << 20, b'a');
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    let (res, written) = send_while_reading(server.addr(), req);
    let end = Instant::now();
    assert_eq!(res.status, 414);
    assert!(res.closes(), "{:?}", res.headers);
    eprintln!("1 MB request line: {written} bytes written before the server closed");
    assert!(seen.lock().unwrap().is_empty(), "the handler ran");
    probe.check((start, end));
    check_server(&server);
}

/// 10,000 header lines (about 150 KB): 431 once past `max_headers` (100) or the 64 KiB
/// head, and closed.
#[test]
fn ten_thousand_header_lines_are_431_and_closed() {
    let (server, seen) = body_reading_server(|o| o);
    let probe = Probe::start(server.addr(), ProbeKind::Plain);
    let start = Instant::now();
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..10_000 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let (res, _) = send_while_reading(server.addr(), req);
    let end = Instant::now();
    assert_eq!(res.status, 431);
    assert!(res.closes(), "{:?}", res.headers);
    assert!(seen.lock().unwrap().is_empty(), "the handler ran");
    probe.check((start, end));
    check_server(&server);
}

/// 1 MB of chunk extensions in a single chunk-size line: 400 once the line passes its
/// 4 KiB bound; the handler's body read fails with 400, and the connection is closed.
#[test]
fn a_one_megabyte_chunk_extension_is_400_and_closed() {
    let (server, seen) = body_reading_server(|o| o);
    let probe = Probe::start(server.addr(), ProbeKind::Plain);
    let start = Instant::now();
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;e=".to_vec();
    req.resize(req.len() + (1 << 20), b'a');
    req.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    let (res, _) = send_while_reading(server.addr(), req);
    let end = Instant::now();
    assert_eq!(res.status, 400);
    assert!(res.closes(), "{:?}", res.headers);
    assert_eq!(*seen.lock().unwrap(), [Some(400)]);
    probe.check((start, end));
    check_server(&server);
}

/// 1 MB of chunk extensions spread over 1,000 one-byte chunks (1 KB of extension each,
/// every line under the per-line bound): 400 once the body's extensions pass their total
/// bound (16 KiB), not after scanning the whole megabyte.
#[test]
fn a_megabyte_of_chunk_extensions_over_many_chunks_is_400_and_closed() {
    let (server, seen) = body_reading_server(|o| o);
    let probe = Probe::start(server.addr(), ProbeKind::Plain);
    let start = Instant::now();
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let ext = "e".repeat(1024);
    for _ in 0..1000 {
        req.extend_from_slice(format!("1;{ext}\r\nx\r\n").as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (res, _) = send_while_reading(server.addr(), req);
    let end = Instant::now();
    assert_eq!(res.status, 400);
    assert!(res.closes(), "{:?}", res.headers);
    assert_eq!(*seen.lock().unwrap(), [Some(400)]);
    probe.check((start, end));
    check_server(&server);
}

/// The same megabyte of chunk extensions to a handler that answers without reading the
/// body: the answer goes out, and the server, reading the rest of the body to keep the
/// connection, meets the bound and closes the connection instead of serving the request
/// pipelined after the body.
#[test]
fn chunk_extensions_past_the_bound_close_the_connection_after_an_early_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = {
        let calls = calls.clone();
        TestServer::start(
            |o| o,
            move || {
                let mut handler = path_echo();
                move |srv, stream| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    handler(srv, stream)
                }
            },
        )
    };
    let mut req = b"POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let ext = "e".repeat(1024);
    for _ in 0..1000 {
        req.extend_from_slice(format!("1;{ext}\r\nx\r\n").as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut c = connect(server.addr());
    let writer = {
        let mut c = c.try_clone().unwrap();
        thread::spawn(move || {
            let _ = c.write_all(&req);
        })
    };
    let raw = read_to_close(&mut c, IO_TIMEOUT).expect("the connection was left open");
    writer.join().unwrap();
    let responses = parse_responses(&raw);
    assert!(
        !responses.is_empty() && responses[0].status == 200,
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(
        responses.iter().all(|r| r.body_str() != "/second"),
        "the request after the body was served: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    check_server(&server);
}

// ===== many short connections =====

/// The descriptors this process has open (the server runs in it too).
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// 10,000 connections opened and closed as fast as four threads can: a quarter closed at
/// once, a quarter after half a request, a quarter after a whole request without reading
/// the answer, a quarter reset (SO_LINGER 0) after a request. The well-behaved client is
/// served all along, and afterwards the server holds no connection and the process no
/// more descriptors than before.
#[test]
fn ten_thousand_connections_opened_and_closed_fast() {
    let server = TestServer::start(|o| o.backlog(4096), path_echo);
    let addr = server.addr();
    // Let the harness's own descriptors settle before counting.
    assert_eq!(Client::connect(addr).get("/warm").status, 200);
    assert!(server.wait_connections(0, Duration::from_secs(5)));
    let fds_before = open_descriptors();
    let probe = Probe::start(addr, ProbeKind::Plain);
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let threads: Vec<_> = (0..FAST_THREADS)
        .map(|_| {
            let (next, errors) = (next.clone(), errors.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= FAST_CONNECTIONS || start.elapsed() > FAST_DEADLINE {
                    return;
                }
                let mut c = match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.lock().unwrap().push(format!("connect {i}: {e}"));
                        continue;
                    }
                };
                let _ = match i % 4 {
                    0 => Ok(()),
                    1 => c.write_all(b"GET /half HTTP/1.1\r\nHo"),
                    2 => c.write_all(b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n"),
                    _ => {
                        let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
                        c.write_all(b"GET /reset HTTP/1.1\r\nHost: x\r\n\r\n")
                    }
                };
                drop(c);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let end = Instant::now();
    let opened = next.load(Ordering::SeqCst).min(FAST_CONNECTIONS);
    eprintln!(
        "{opened} connections opened and closed in {:?}",
        end - start
    );
    assert!(
        errors.lock().unwrap().is_empty(),
        "connects failed: {:?}",
        &errors.lock().unwrap()[..errors.lock().unwrap().len().min(10)]
    );
    probe.check((start, end));
    check_server(&server);
    let fds_after = open_descriptors();
    assert!(
        fds_after <= fds_before + 8,
        "descriptors grew from {fds_before} to {fds_after}"
    );
}

// ===== TLS =====

/// The first flight of a real TLS client (a ClientHello offering h2 and http/1.1).
fn client_hello(config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16, "not a handshake record");
    out
}

/// A TLS server (`tls`: On or Auto) with a localhost certificate, its probe, and a client
/// configuration that trusts it.
fn tls_server(
    tls: Tls,
    setup_timeout: Duration,
) -> (TestServer, ProbeKind, Arc<rustls::ClientConfig>) {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| {
            o.tls(tls)
                .tls_config(config)
                .connection_setup_timeout(setup_timeout)
        },
        path_echo,
    );
    let client = Arc::new(trusting(&cert, &[b"h2", b"http/1.1"]));
    let probe = ProbeKind::Tls(Arc::new(trusting(&cert, &[b"http/1.1"])));
    (server, probe, client)
}

/// Garbage after a ClientHello, three ways (random bytes, an application-data record of
/// garbage, a handshake record of garbage), 20 connections each, on `tls`: each
/// connection is closed, nothing reaches `step`, and the TLS probe is served meanwhile.
fn garbage_after_client_hello(tls: Tls) {
    let (server, probe_kind, client) = tls_server(tls, Duration::from_secs(10));
    let addr = server.addr();
    let probe = Probe::start(addr, probe_kind);
    let start = Instant::now();
    let hello = client_hello(&client);
    let record = |kind: u8| {
        let mut r = vec![kind, 0x03, 0x03, 0x40, 0x00];
        r.extend((0..0x4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        r
    };
    let garbage: [Vec<u8>; 3] = [
        (0..65_536u32)
            .map(|i| (i.wrapping_mul(40_503) >> 7) as u8)
            .collect(),
        record(0x17),
        record(0x16),
    ];
    let mut clients = Vec::new();
    for round in 0..20 {
        for g in &garbage {
            let mut c = connect(addr);
            let mut bytes = hello.clone();
            bytes.extend_from_slice(g);
            // The server may close before taking it all.
            let _ = c.write_all(&bytes);
            clients.push((round, c));
        }
    }
    for (round, c) in &mut clients {
        if let Err(partial) = read_to_close(c, Duration::from_secs(5)) {
            panic!(
                "round {round}: a connection that sent garbage after its ClientHello was \
                 left open ({} bytes read)",
                partial.len()
            );
        }
    }
    let end = Instant::now();
    probe.check((start, end));
    check_server(&server);
}

#[test]
fn garbage_after_a_client_hello_is_closed_on_tls_on() {
    garbage_after_client_hello(Tls::On);
}

#[test]
fn garbage_after_a_client_hello_is_closed_on_tls_auto() {
    garbage_after_client_hello(Tls::Auto);
}

/// Half a ClientHello, then silence, from 100 connections at once on `tls`: each is
/// closed once `connection_setup_timeout` (300 ms here) has passed, not long after, and
/// the TLS probe is served meanwhile.
fn half_client_hello_then_silence(tls: Tls) {
    let setup = Duration::from_millis(300);
    let (server, probe_kind, client) = tls_server(tls, setup);
    let addr = server.addr();
    let probe = Probe::start(addr, probe_kind);
    let start = Instant::now();
    let hello = client_hello(&client);
    let half = &hello[..hello.len() / 2];
    let mut clients: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut c = connect(addr);
            c.write_all(half).unwrap();
            c
        })
        .collect();
    let sent = Instant::now();
    for c in &mut clients {
        let got = read_to_close(c, Duration::from_secs(5))
            .expect("a connection silent after half a ClientHello was left open");
        assert!(got.is_empty(), "answered half a ClientHello: {got:?}");
    }
    let closed_in = sent.elapsed();
    eprintln!("100 half ClientHellos closed within {closed_in:?}");
    // Generous: the point is that the timeout applies, not its precision.
    assert!(
        closed_in < setup + Duration::from_secs(3),
        "closed only after {closed_in:?}"
    );
    let end = Instant::now();
    probe.check((start, end));
    check_server(&server);
}

#[test]
fn half_a_client_hello_then_silence_is_closed_on_tls_on() {
    half_client_hello_then_silence(Tls::On);
}

#[test]
fn half_a_client_hello_then_silence_is_closed_on_tls_auto() {
    half_client_hello_then_silence(Tls::Auto);
}
