//! Regression tests for malformed and hostile HTTP/1 input (DESIGN.md §4): each opens with
//! the lua-http 0.4 behaviour it guards against and the behaviour onstream must have.
//!
//! Common expectations: the bad request is answered with the right 4xx/5xx status and
//! `connection: close`, the connection is closed, the handler is not called, `step` never
//! returns an error, and the server keeps serving everyone else.

mod common;

use std::{
    io::Write,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use common::*;
use onstream::{Options, Server};

/// Sends `request` on its own connection and checks the answer is exactly one `status`
/// response with `connection: close`, followed by the server closing the connection.
fn check_rejected(server: &TestServer, request: &[u8], status: u16) {
    let raw = raw_request(server.addr(), request);
    assert!(
        !raw.is_empty(),
        "no response to a bad request (expected {status})"
    );
    let res = parse_one(&raw);
    assert_eq!(
        res.status,
        status,
        "wrong status for {:?}",
        String::from_utf8_lossy(&request[..request.len().min(80)])
    );
    assert!(
        res.closes(),
        "a {status} response must say connection: close; headers {:?}",
        res.headers
    );
}

/// Checks that the server is healthy afterwards: a normal request is served and `step`
/// never failed.
fn check_still_serving(server: &TestServer) {
    let res = hyper_get(server.addr(), "/still-here");
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "/still-here");
    assert!(
        server.step_errors().is_empty(),
        "step returned errors: {:?}",
        server.step_errors()
    );
}

/// A handler counting its calls, answering with the path.
fn counting_server(
    opts: impl FnOnce(Options) -> Options + Send + 'static,
) -> (TestServer, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = {
        let calls = calls.clone();
        TestServer::start(opts, move || {
            move |_srv, stream: onstream::Stream| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let req = stream.get_headers().await?;
                    let path = req.get(":path").unwrap_or("").to_string();
                    respond(&stream, "200", path).await
                }
            }
        })
    };
    (server, calls)
}

/// lua-http: `Content-Length: abc` made `tonumber` return nil and the body reader spin,
/// freezing the whole server. onstream: 400, close, and other clients keep being served —
/// including one already connected when the bad request arrives.
#[test]
fn content_length_abc_is_400_and_others_keep_being_served() {
    let (server, calls) = counting_server(|o| o);
    let mut bystander = Client::connect(server.addr());
    assert_eq!(bystander.get("/before").status, 200);
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nhello",
        400,
    );
    assert_eq!(bystander.get("/after").body_str(), "/after");
    check_still_serving(&server);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "the handler ran for the bad request"
    );
}

/// lua-http: a negative Content-Length raised an error outside the protected handler,
/// escaping onerror and leaking the connection slot forever. onstream: 400, and the
/// connection count goes back to 0.
#[test]
fn negative_content_length_is_400_and_the_slot_is_freed() {
    let (server, calls) = counting_server(|o| o);
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        400,
    );
    assert!(
        server.wait_connections(0, Duration::from_secs(2)),
        "connection slot leaked: connections() = {}",
        server.connections()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// lua-http: 97 or more header lines sent its header loop into a 100 % CPU spin.
/// onstream: more than `max_headers` (default 100) fields is 431 and close.
#[test]
fn two_hundred_header_lines_is_431() {
    let (server, calls) = counting_server(|o| o);
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..200 {
        req.extend_from_slice(format!("X-Header-{i}: value\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    check_rejected(&server, &req, 431);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// The header section as a whole is bounded too: a few fields totalling more than
/// `max_header_size` is 431.
#[test]
fn oversized_header_section_is_431() {
    let (server, _calls) = counting_server(|o| o.max_header_size(4096));
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..4 {
        req.extend_from_slice(format!("X-Big-{i}: {}\r\n", "v".repeat(2000)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    check_rejected(&server, &req, 431);
    check_still_serving(&server);
}

/// lua-http: a request followed by a stray CRLF and EOF made `get_next_incoming_stream`
/// return a new stream again and again, calling onstream forever. onstream: one CRLF
/// before a request line is ignored (RFC 9112 §2.2), EOF then closes the connection
/// cleanly, and the handler runs exactly once.
#[test]
fn request_then_stray_crlf_then_eof_calls_the_handler_once() {
    let (server, calls) = counting_server(|o| o);
    let mut c = Client::connect(server.addr());
    c.send(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n\r\n");
    c.shutdown_write();
    let res = c.read_response();
    assert_eq!(res.body_str(), "/once");
    let rest = c
        .read_to_close(Duration::from_secs(2))
        .expect("the connection was not closed after EOF");
    assert!(
        rest.is_empty(),
        "unexpected bytes after the response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    thread::sleep(Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(server.wait_connections(0, Duration::from_secs(2)));
    check_still_serving(&server);
}

/// A CRLF before the first request line is ignored (RFC 9112 §2.2), not a 400.
#[test]
fn leading_crlf_before_a_request_is_ignored() {
    let (server, calls) = counting_server(|o| o);
    let raw = raw_request(
        server.addr(),
        b"\r\nGET /after-crlf HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(parse_one(&raw).body_str(), "/after-crlf");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// lua-http: with several Content-Length fields the first one won, so a front end using
/// the last one saw a different body boundary (request smuggling). onstream: differing
/// values are 400.
#[test]
fn differing_duplicate_content_length_is_400() {
    let (server, calls) = counting_server(|o| o);
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 13\r\n\r\nabcGET / HTTP/1.1\r\n",
        400,
    );
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
        400,
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// Repeated Content-Length fields that all agree are accepted (RFC 9110 §8.6).
#[test]
fn equal_duplicate_content_length_is_accepted() {
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
    let raw = raw_request(
        server.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    let res = parse_one(&raw);
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "abc");
}

/// lua-http: Transfer-Encoding together with Content-Length was accepted, a classic
/// smuggling vector. onstream: 400 and close.
#[test]
fn transfer_encoding_with_content_length_is_400() {
    let (server, calls) = counting_server(|o| o);
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// lua-http: no timeout covered reading a request's headers, so a client trickling header
/// bytes (slowloris) held its connection slot forever. onstream: `header_read_timeout`
/// closes it (optionally after a 408) while other clients are answered meanwhile.
#[test]
fn slowloris_is_closed_after_header_read_timeout_while_others_are_served() {
    let (server, calls) = counting_server(|o| o.header_read_timeout(Duration::from_millis(300)));
    let slow = connect(server.addr());
    let start = Instant::now();
    let trickler = {
        let mut slow = slow.try_clone().unwrap();
        thread::spawn(move || {
            let _ = slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n");
            let deadline = Instant::now() + Duration::from_secs(3);
            // One header byte every 20 ms: always "active", never finishing the head.
            for byte in b"X-Slow: ".iter().cycle() {
                if Instant::now() > deadline || slow.write_all(&[*byte]).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };

    thread::sleep(Duration::from_millis(100));
    let res = hyper_get(server.addr(), "/meanwhile");
    assert_eq!(
        res.body, "/meanwhile",
        "a normal client was not served during the slowloris"
    );

    let mut slow = slow;
    let got = read_to_close(&mut slow, Duration::from_secs(2));
    let elapsed = start.elapsed();
    let got = got.unwrap_or_else(|b| {
        panic!(
            "the slowloris connection was still open after {elapsed:?} (got {:?})",
            String::from_utf8_lossy(&b)
        )
    });
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed too early, after {elapsed:?}"
    );
    if !got.is_empty() {
        let res = parse_one(&got);
        assert_eq!(res.status, 408, "only a 408 may precede the close");
    }
    trickler.join().unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the normal request reaches the handler"
    );
    check_still_serving(&server);
}

/// A request line that is not HTTP is 400.
#[test]
fn invalid_request_line_is_400() {
    let (server, calls) = counting_server(|o| o);
    check_rejected(&server, b"this is not http\r\n\r\n", 400);
    check_rejected(&server, b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
    check_rejected(
        &server,
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        400,
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// An HTTP/2.0 request line on the HTTP/1 parser is 505 HTTP Version Not Supported.
#[test]
fn http_2_0_request_line_is_505() {
    let (server, calls) = counting_server(|o| o);
    check_rejected(&server, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// A transfer coding the server does not implement is 501 (RFC 9112 §6.1).
#[test]
fn unknown_transfer_encoding_is_501() {
    let (server, calls) = counting_server(|o| o);
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: frobnicate, chunked\r\n\r\n0\r\n\r\n",
        501,
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// A handler for the chunked tests below: it reads the body and answers with the path
/// followed by the body; when the read fails it records the error's status and returns
/// `Ok` without answering, so the server's own answer is what the client sees.
fn body_reading_server() -> (TestServer, Arc<Mutex<Vec<Option<u16>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = {
        let seen = seen.clone();
        TestServer::start(
            |o| o,
            move || {
                move |_srv, stream: onstream::Stream| {
                    let seen = seen.clone();
                    async move {
                        let req = stream.get_headers().await?;
                        let path = req.get(":path").unwrap_or("").to_string();
                        match stream.get_body_as_bytes().await {
                            Ok(body) => {
                                let mut out = path.into_bytes();
                                out.extend_from_slice(&body);
                                respond(&stream, "200", out).await
                            }
                            Err(e) => {
                                seen.lock().unwrap().push(e.status());
                                Ok(())
                            }
                        }
                    }
                }
            },
        )
    };
    (server, seen)
}

/// A chunk-size line longer than the server's limit (a huge chunk extension) is 400: the
/// handler's body read fails with a 400 protocol error and the client gets a 400.
#[test]
fn oversized_chunk_size_line_is_400() {
    let (server, seen) = body_reading_server();
    let mut req =
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=".to_vec();
    req.extend(vec![b'a'; 100_000]);
    req.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    let mut c = connect(server.addr());
    // Written on another thread: the server may stop reading (and close) part-way.
    let writer = {
        let mut c = c.try_clone().unwrap();
        thread::spawn(move || {
            let _ = c.write_all(&req);
        })
    };
    let raw = read_to_close(&mut c, IO_TIMEOUT).expect("the connection was left open");
    writer.join().unwrap();
    let res = parse_one(&raw);
    assert_eq!(res.status, 400);
    assert!(res.closes());
    assert_eq!(*seen.lock().unwrap(), [Some(400)]);
    check_still_serving(&server);
}

/// A chunk size that overflows 64 bits is 400, not a wrapped small size.
#[test]
fn chunk_size_overflow_is_400() {
    let (server, seen) = body_reading_server();
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n",
        400,
    );
    assert_eq!(*seen.lock().unwrap(), [Some(400)]);
    check_still_serving(&server);
}

/// A request line longer than `max_request_line` (default 8 KiB) is 414 URI Too Long.
#[test]
fn oversized_request_line_is_414() {
    let (server, calls) = counting_server(|o| o);
    let req = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000));
    check_rejected(&server, req.as_bytes(), 414);
    // Also when the line is still incomplete: the limit applies before the CRLF arrives.
    let mut c = connect(server.addr());
    let _ = c.write_all(format!("GET /{}", "b".repeat(20_000)).as_bytes());
    let raw = read_to_close(&mut c, IO_TIMEOUT)
        .expect("an endless request line kept the connection open");
    assert_eq!(parse_one(&raw).status, 414);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    check_still_serving(&server);
}

/// lua-http: per-connection failures (a failed TLS handshake, a bad request) reached the
/// default onerror, which threw and stopped the server. onstream: protocol errors are
/// answered and logged only; neither `onerror` nor `step` ever sees them.
#[test]
fn protocol_errors_do_not_reach_onerror() {
    let recorded = Arc::new(Mutex::new(Vec::<String>::new()));
    let server = {
        let recorded = recorded.clone();
        TestServer::build(move || {
            let server = Server::listen(Options::new().host("127.0.0.1").port(0), path_echo())?;
            server.set_onerror(move |_srv, op, err| {
                recorded.lock().unwrap().push(format!("{op}: {err:?}"));
                Ok(())
            });
            Ok(server)
        })
    };
    let garbage: [&[u8]; 7] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage that looks like TLS",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"GET / HTTP/1.1\r\nHo",
    ];
    for bytes in garbage {
        let mut c = connect(server.addr());
        let _ = c.write_all(bytes);
        // Half of them hang up at once, mid-request; the rest wait for the answer.
        if bytes.ends_with(b"\r\n\r\n") {
            let _ = read_to_close(&mut c, IO_TIMEOUT);
        }
    }
    check_still_serving(&server);
    assert!(
        server.wait_connections(0, Duration::from_secs(2)),
        "connections leaked"
    );
    assert!(
        recorded.lock().unwrap().is_empty(),
        "onerror saw: {:?}",
        recorded.lock().unwrap()
    );
    assert!(
        server.step_errors().is_empty(),
        "step returned: {:?}",
        server.step_errors()
    );
}

/// A handler that simply propagates a body read error with `?` must not let a client
/// reach `onerror` (and, with the default onerror, stop `run()`) by sending a malformed
/// chunk: the error is the peer's, so the client gets 400 and `step` stays clean, as for
/// any other per-connection protocol error (DESIGN.md §4 item 5).
#[test]
fn a_bad_chunk_propagated_by_the_handler_is_400_and_not_a_step_error() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                let path = req.get(":path").unwrap_or("").to_string();
                let body = stream.get_body_as_bytes().await?;
                respond(&stream, "200", [path.as_bytes(), &body].concat()).await
            }
        },
    );
    check_rejected(
        &server,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    );
    check_still_serving(&server);
}
