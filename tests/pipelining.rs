//! HTTP/1.1 pipelining: requests sent back to back before any response are answered in
//! request order, whatever order their handlers finish in.

mod common;

use std::{
    io::{BufReader, Write},
    os::unix::net::UnixStream,
    sync::{Arc, Mutex},
    task::{Poll, Waker},
    time::Duration,
};

use common::*;

/// 16 requests in one write get 16 responses, in order, even though the handler of
/// request `i` sleeps `16 - i` ms so later requests would finish first.
#[test]
fn sixteen_pipelined_requests_are_answered_in_order() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                let path = req.get(":path").unwrap_or("").to_string();
                let i: u64 = path.trim_start_matches('/').parse().unwrap_or(0);
                onstream::sleep(Duration::from_millis(16 - i.min(16))).await;
                respond(&stream, "200", path).await
            }
        },
    );
    let mut batch = Vec::new();
    for i in 0..16 {
        let close = if i == 15 { "Connection: close\r\n" } else { "" };
        batch.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n{close}\r\n").as_bytes());
    }
    let responses = parse_responses(&raw_request(server.addr(), &batch));
    let bodies: Vec<String> = responses.iter().map(|r| r.body_str().to_string()).collect();
    let expected: Vec<String> = (0..16).map(|i| format!("/{i}")).collect();
    assert_eq!(bodies, expected);
    assert!(responses.iter().all(|r| r.status == 200));
}

/// Pipelined requests with bodies (Content-Length and chunked, mixed) are each given their
/// own body, in order.
#[test]
fn pipelined_requests_with_bodies_keep_their_bodies_apart() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                let body = stream.get_body_as_bytes().await?;
                respond(&stream, "200", body).await
            }
        },
    );
    let batch = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst\
POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsec\r\n3\r\nond\r\n0\r\n\r\n\
POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthird";
    let bodies: Vec<String> = parse_responses(&raw_request(server.addr(), batch))
        .iter()
        .map(|r| r.body_str().to_string())
        .collect();
    assert_eq!(bodies, ["first", "second", "", "third"]);
}

/// Pipelined requests split at awkward places across several writes are still parsed and
/// answered in order.
#[test]
fn pipelined_requests_split_across_writes_are_answered_in_order() {
    use std::io::Write;

    let server = TestServer::start(|o| o, path_echo);
    let mut batch = Vec::new();
    for i in 0..8 {
        batch.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    let mut c = Client::connect(server.addr());
    for piece in batch.chunks(7) {
        c.writer.write_all(piece).unwrap();
        c.writer.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    for i in 0..8 {
        assert_eq!(c.read_response().body_str(), format!("/{i}"));
    }
}

// ===== one write per batch =====
//
// The responses of a pipelined batch are written together, once the batch is answered
// (or the write buffer is full), not one by one; but a handler about to wait flushes what
// is before it, so an earlier response never waits for a later handler to finish.

/// A flag a test opens from its own thread, awaited by a handler on the server's loop.
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<(bool, Option<Waker>)>>);

impl Gate {
    fn open(&self) {
        let mut g = self.0.lock().unwrap();
        g.0 = true;
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }

    async fn wait(&self) {
        std::future::poll_fn(|cx| {
            let mut g = self.0.lock().unwrap();
            if g.0 {
                Poll::Ready(())
            } else {
                g.1 = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

/// How many bytes wait unread in `sock`'s receive queue, without reading them.
fn bytes_waiting(sock: &UnixStream) -> usize {
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64 * 1024];
    match socket2::SockRef::from(sock)
        .recv_with_flags(&mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("peeking at the client's socket failed: {e}"),
    }
}

fn gets(paths: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut batch = Vec::new();
    for p in paths {
        batch.extend_from_slice(format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    batch
}

/// 40 requests in one write (more than `max_pipelined`, 16, so the driver parses them in
/// three rounds) get their 40 responses in one write: when each later handler runs, the
/// client has received nothing yet. Each handler looks at the client's own socket (which
/// the client does not read until every handler has run), so the test fails if any
/// response of the batch went out before the last handler ran: with a flush per
/// response, or, as before, per round of 16.
///
/// Over a unix socket, whose write puts the bytes in the peer's receive queue before it
/// returns; on TCP loopback that is done by the network softirq, which a loaded machine
/// defers to `ksoftirqd`, and the probe would then miss early responses.
#[test]
fn a_pipelined_batch_is_answered_in_one_write() {
    let probe: Arc<Mutex<Option<UnixStream>>> = Arc::default();
    let seen: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let path = temp_path("one-write.sock");
    let server = {
        let (probe, seen, path) = (probe.clone(), seen.clone(), path.clone());
        TestServer::build(move || {
            let handler = move |_srv, stream: onstream::Stream| {
                let (probe, seen) = (probe.clone(), seen.clone());
                async move {
                    let req = stream.get_headers().await?;
                    let path = req.get(":path").unwrap_or("").to_string();
                    let i: u64 = path.trim_start_matches('/').parse().unwrap();
                    let waiting = bytes_waiting(probe.lock().unwrap().as_ref().unwrap());
                    seen.lock().unwrap().push((i, waiting));
                    respond(&stream, "200", path).await
                }
            };
            onstream::Server::listen(onstream::Options::new().path(path), handler)
        })
    };
    let mut sock = UnixStream::connect(&path).expect("connect to the unix socket");
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    *probe.lock().unwrap() = Some(sock.try_clone().unwrap());
    sock.write_all(&gets((0..40).map(|i| format!("/{i}"))))
        .unwrap();
    // Nothing is read before every handler has run: a reading client would take the
    // early responses out of its queue before a later handler could see them there.
    assert!(
        wait_until(IO_TIMEOUT, || seen.lock().unwrap().len() == 40),
        "the 40 handlers did not all run"
    );
    let mut reader = BufReader::new(sock);
    for i in 0..40 {
        assert_eq!(read_response(&mut reader).body_str(), format!("/{i}"));
    }
    drop(server);
    let _ = std::fs::remove_file(&path);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 40);
    eprintln!("SEEN {seen:?}");
    let early: Vec<_> = seen.iter().filter(|(_, n)| *n > 0).collect();
    assert!(
        early.is_empty(),
        "responses reached the client before later handlers of the batch ran \
         ((request, bytes already received)): {early:?}"
    );
}

/// A handler that waits in the middle of a batch does not hold back the responses before
/// it: the client reads all 17 of them while that handler is still blocked on a gate only
/// the client opens after reading them (a coalescing that waited for the batch's end
/// would deadlock here, and the read would fail at its timeout). The later ones follow,
/// in order, once it is opened; the ones after it had already run (their handlers ended
/// waiting for their turn to write).
#[test]
fn a_waiting_handler_does_not_hold_back_the_responses_before_it() {
    let gate = Gate::default();
    let server = {
        let gate = gate.clone();
        TestServer::start(
            |o| o,
            move || {
                let gate = gate.clone();
                move |_srv, stream: onstream::Stream| {
                    let gate = gate.clone();
                    async move {
                        let req = stream.get_headers().await?;
                        let path = req.get(":path").unwrap_or("").to_string();
                        if path == "/17" {
                            gate.wait().await;
                        }
                        respond(&stream, "200", path).await
                    }
                }
            },
        )
    };
    let mut c = Client::connect(server.addr());
    c.send(&gets((0..20).map(|i| format!("/{i}"))));
    for i in 0..17 {
        assert_eq!(c.read_response().body_str(), format!("/{i}"));
    }
    gate.open();
    for i in 17..20 {
        assert_eq!(c.read_response().body_str(), format!("/{i}"));
    }
}

/// The same when the waiting handler has begun its response: its head and first chunk
/// (and everything before them) reach the client while it waits to write the rest.
#[test]
fn a_handler_waiting_mid_response_does_not_hold_back_what_it_wrote() {
    let gate = Gate::default();
    let server = {
        let gate = gate.clone();
        TestServer::start(
            |o| o,
            move || {
                let gate = gate.clone();
                move |_srv, stream: onstream::Stream| {
                    let gate = gate.clone();
                    async move {
                        let req = stream.get_headers().await?;
                        let path = req.get(":path").unwrap_or("").to_string();
                        stream.write_headers(&status_headers("200"), false).await?;
                        if path == "/1" {
                            stream.write_chunk("first half,", false).await?;
                            gate.wait().await;
                            return stream.write_chunk(" second half", true).await;
                        }
                        stream.write_chunk(path, true).await
                    }
                }
            },
        )
    };
    let mut c = Client::connect(server.addr());
    c.send(&gets((0..3).map(|i| format!("/{i}"))));
    assert_eq!(c.read_response().body_str(), "/0");
    // The head of /1 and its first chunk: chunked framing, since the body did not come
    // whole. Read up to the end of the first chunk, no further (the rest is not sent).
    let mut got = Vec::new();
    while !got.ends_with(b"first half,\r\n") {
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut c.reader, &mut byte).expect("the first chunk arrives");
        got.push(byte[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    gate.open();
    let mut rest = Vec::new();
    while !rest.ends_with(b"0\r\n\r\n") {
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut c.reader, &mut byte).expect("the rest of /1 arrives");
        rest.push(byte[0]);
    }
    assert!(
        String::from_utf8_lossy(&rest).contains(" second half"),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(c.read_response().body_str(), "/2");
}

/// A batch of every kind of exchange, more than `max_pipelined` of them, is answered
/// whole and in order: GETs, a HEAD (no body, whatever the handler wrote), a POST whose
/// body the handler reads, one whose chunked body it leaves unread (the driver throws it
/// away before the next head), a handler that ends without answering (503), one that
/// answers with its head only (`end_stream` on the head), one whose head is left pending
/// when it ends, and `Connection: close` in the middle: nothing after it is answered.
#[test]
fn a_mixed_pipelined_batch_is_answered_whole_and_in_order() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                let path = req.get(":path").unwrap_or("").to_string();
                match path.as_str() {
                    "/echo" => {
                        let body = stream.get_body_as_bytes().await?;
                        respond(&stream, "200", body).await
                    }
                    "/unanswered" => Ok(()),
                    "/head-only" => stream.write_headers(&status_headers("204"), true).await,
                    "/pending-head" => stream.write_headers(&status_headers("200"), false).await,
                    _ => respond(&stream, "200", path).await,
                }
            }
        },
    );
    let mut batch = gets((0..10).map(|i| format!("/g{i}")));
    batch.extend_from_slice(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n");
    batch.extend_from_slice(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    batch.extend_from_slice(
        b"POST /skip HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nskip\r\n0\r\n\r\n",
    );
    batch.extend_from_slice(&gets(
        ["/unanswered", "/head-only", "/pending-head"].map(String::from),
    ));
    batch.extend_from_slice(&gets((10..14).map(|i| format!("/g{i}"))));
    batch.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    batch.extend_from_slice(&gets((0..20).map(|i| format!("/never{i}"))));

    let raw = raw_request(server.addr(), &batch);
    let mut rest = &raw[..];
    let mut got = Vec::new();
    for i in 0..10 {
        got.push(read_response(&mut rest));
        assert_eq!(got.last().unwrap().body_str(), format!("/g{i}"));
    }
    let head = read_head_response(&mut rest);
    assert_eq!(
        (head.status, head.header("content-length")),
        (200, Some("2"))
    );
    let echo = read_response(&mut rest);
    assert_eq!((echo.status, echo.body_str()), (200, "hello"));
    let skip = read_response(&mut rest);
    assert_eq!((skip.status, skip.body_str()), (200, "/skip"));
    assert_eq!(read_response(&mut rest).status, 503);
    assert_eq!(read_response(&mut rest).status, 204);
    let pending = read_response(&mut rest);
    assert_eq!((pending.status, pending.body_str()), (200, ""));
    for i in 10..14 {
        assert_eq!(read_response(&mut rest).body_str(), format!("/g{i}"));
    }
    let last = read_response(&mut rest);
    assert_eq!(last.body_str(), "/last");
    assert!(last.closes());
    assert!(
        rest.is_empty(),
        "answered after Connection: close: {:?}",
        String::from_utf8_lossy(rest)
    );
}

/// The same batch of GETs over TLS is answered whole and in order (the responses of a
/// batch go to rustls in one write as they do to a plain socket).
#[test]
fn a_pipelined_batch_over_tls_is_answered_in_order() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| o.tls(onstream::Tls::On).tls_config(config),
        path_echo,
    );
    let config = Arc::new(trusting(&cert, &[b"http/1.1"]));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(server.addr()));
    let mut batch = gets((0..40).map(|i| format!("/{i}")));
    batch.extend_from_slice(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tls.write_all(&batch).unwrap();
    let mut reader = BufReader::new(tls);
    for i in 0..40 {
        assert_eq!(read_response(&mut reader).body_str(), format!("/{i}"));
    }
    assert!(read_response(&mut reader).closes());
}

/// A handler that fails in the middle of its response cuts the connection, but the
/// responses before it, left in the write buffer for the batch's write, still go out, and
/// so does the part of its own that it wrote.
#[test]
fn a_handler_failing_mid_response_still_lets_the_earlier_responses_out() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                let path = req.get(":path").unwrap_or("").to_string();
                if path == "/fail" {
                    stream.write_headers(&status_headers("200"), false).await?;
                    stream.write_chunk("partial", false).await?;
                    return Err(onstream::Error::handler("failed mid-body"));
                }
                respond(&stream, "200", path).await
            }
        },
    );
    let mut batch = gets((0..3).map(|i| format!("/{i}")));
    batch.extend_from_slice(&gets(["/fail".to_string(), "/after".to_string()]));
    let raw = raw_request(server.addr(), &batch);
    let mut rest = &raw[..];
    for i in 0..3 {
        assert_eq!(read_response(&mut rest).body_str(), format!("/{i}"));
    }
    let cut = String::from_utf8_lossy(rest);
    assert!(cut.starts_with("HTTP/1.1 200"), "{cut:?}");
    assert!(cut.ends_with("partial\r\n"), "{cut:?}");
}
