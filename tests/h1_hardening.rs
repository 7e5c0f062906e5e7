//! Regression tests for the HTTP/1 defects found by attacking onstream as a stranger would
//! (the hardening issue; DESIGN.md §4, "Found in onstream itself"). Each test is named
//! after its defect and failed before the fix; each talks to a real server over loopback.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::*;
use onstream::{Headers, Stream};

/// Counts handlers alive at once and remembers the most there ever were.
#[derive(Clone, Default)]
struct Live {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl Live {
    fn enter(&self) -> LiveGuard {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        LiveGuard(self.now.clone())
    }
}

struct LiveGuard(Arc<AtomicUsize>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A server with `max_pipelined` whose handler counts itself in the returned `Live`
/// while it answers each request with `answer(path)`.
fn counted_server(max_pipelined: usize, answer: fn(&str) -> Vec<u8>) -> (TestServer, Live) {
    let live = Live::default();
    let seen = live.clone();
    let server = TestServer::start(
        move |o| o.max_pipelined(max_pipelined),
        move || {
            move |_srv, stream: Stream| {
                let live = live.clone();
                async move {
                    let _guard = live.enter();
                    let path = stream.get_headers().await?.get(":path").unwrap().to_owned();
                    onstream::sleep(Duration::from_millis(1)).await;
                    respond(&stream, "200", answer(&path)).await
                }
            }
        },
    );
    (server, seen)
}

fn pipelined_gets(n: usize) -> Vec<u8> {
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    batch
}

/// Defect 1: every pipelined head used to start a handler at once, so one connection that
/// sent 20,000 requests without reading held 20,000 handlers (and their open files). With
/// `max_pipelined(4)` at most 4 handlers run at once, and every request is still answered,
/// in order.
#[test]
fn unbounded_pipelining_holds_at_most_max_pipelined_handlers() {
    let (server, seen) = counted_server(4, |path| path.as_bytes().to_vec());
    let mut client = Client::connect(server.addr());
    client.send(&pipelined_gets(200));
    // Let the server work through the batch before anything is read.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..200 {
        let res = client.read_response();
        assert_eq!(res.body_str(), format!("/{i}"));
    }
    let max = seen.max.load(Ordering::SeqCst);
    assert!(max <= 4, "{max} handlers ran at once with max_pipelined(4)");
    assert!(
        max >= 2,
        "the handlers of a batch should still overlap ({max})"
    );
}

/// Defect 1, the memory side: a client that sends requests and never reads is not read
/// without end. The server stops reading at the bound, so at most `max_pipelined`
/// handlers (each holding a 64 KiB answer) exist, and the client's writes stop being
/// accepted long before 16 MiB of requests (about 400,000 of them) are in.
#[test]
fn unbounded_pipelining_stops_reading_a_client_that_never_reads() {
    let (server, seen) = counted_server(16, |_| vec![b'x'; 64 * 1024]);
    let batch = pipelined_gets(1);
    let total = 16 * 1024 * 1024;
    let mut all = Vec::with_capacity(total + batch.len());
    while all.len() < total {
        all.extend_from_slice(&batch);
    }
    let mut sock = connect(server.addr());
    // A fixed send buffer: the kernel's autotuning would otherwise take megabytes on the
    // client's side, whatever the server does.
    socket2::SockRef::from(&sock)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut written = 0;
    let mut stalled_since: Option<Instant> = None;
    let started = Instant::now();
    while written < all.len() && started.elapsed() < Duration::from_secs(60) {
        match sock.write(&all[written..]) {
            Ok(n) => {
                written += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    // What the socket buffers hold (the server's receive buffer does not grow while it
    // reads nothing), 16 requests and one read: well under 2 MiB. Without the bound the
    // server reads on, as fast as it can start handlers.
    assert!(
        written < 2 * 1024 * 1024,
        "the server read {written} bytes of requests from a client that reads nothing"
    );
    let max = seen.max.load(Ordering::SeqCst);
    assert!(max <= 16, "{max} handlers at once for one connection");
    // The server itself goes on serving others.
    assert_eq!(Client::connect(server.addr()).get("/").status, 200);
}

/// The same bound when the answers are small and come at once, so that the responses of
/// a pipelined batch are written together rather than each on its own: a handler that
/// ends leaves its response in the write buffer for the next one of the batch, but a
/// response that fills the buffer (`write_buffer_size`) waits for room, and so the server
/// stops starting handlers, and reading, once the socket's buffers and its own are full.
/// Without that bound every request the client sends (about 600,000 here) would be
/// answered into memory.
#[test]
fn small_answers_to_a_pipelining_client_that_never_reads_stay_bounded() {
    let answered = Arc::new(AtomicUsize::new(0));
    let server = {
        let answered = answered.clone();
        TestServer::start(
            |o| o,
            move || {
                move |_srv, stream: Stream| {
                    answered.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let path = stream.get_headers().await?.get(":path").unwrap().to_owned();
                        respond(&stream, "200", path).await
                    }
                }
            },
        )
    };
    let batch = pipelined_gets(1);
    let total = 16 * 1024 * 1024;
    let mut all = Vec::with_capacity(total + batch.len());
    while all.len() < total {
        all.extend_from_slice(&batch);
    }
    let mut sock = connect(server.addr());
    // Fixed buffers on the client's side: the kernel's autotuning would otherwise take
    // megabytes there, whatever the server does.
    let sref = socket2::SockRef::from(&sock);
    sref.set_send_buffer_size(64 * 1024).unwrap();
    sref.set_recv_buffer_size(64 * 1024).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut written = 0;
    let mut stalled_since: Option<Instant> = None;
    let started = Instant::now();
    while written < all.len() && started.elapsed() < Duration::from_secs(60) {
        match sock.write(&all[written..]) {
            Ok(n) => {
                written += n;
                stalled_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stalled_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    // The server's socket send buffer (at most 4 MiB: net.ipv4.tcp_wmem) holds about
    // 40,000 answers of 100 bytes, the client's receive buffer 64 KiB of them, the write
    // buffer 64 KiB more.
    let n = answered.load(Ordering::SeqCst);
    assert!(
        n < 100_000,
        "{n} requests answered (of {} sent) to a client that reads nothing",
        written / batch.len()
    );
    assert!(
        written < all.len(),
        "the server read all {written} bytes of requests from a client that reads nothing"
    );
    assert_eq!(Client::connect(server.addr()).get("/").status, 200);
}

/// Defect 2: a request with `Upgrade` + `Connection: upgrade` (curl sends `Upgrade: h2c`
/// on every cleartext request) lost its body when the handler did not upgrade: `curl
/// --http2 -T file` to an upload handler wrote an empty file. The body is an ordinary
/// body; the ignored upgrade leaves an ordinary keep-alive connection.
#[test]
fn upgrade_request_body_reaches_a_handler_that_does_not_upgrade() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                stream.get_headers().await?;
                let body = stream.get_body_as_bytes().await?;
                respond(&stream, "201", body).await
            }
        },
    );
    let mut client = Client::connect(server.addr());
    client.send(
        b"PUT /f HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 11\r\n\r\nhello world",
    );
    let res = client.read_response();
    assert_eq!((res.status, res.body_str()), (201, "hello world"));
    assert!(
        !res.closes(),
        "an ignored upgrade leaves the connection usable"
    );
    client.send(
        b"PUT /g HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\
Transfer-Encoding: chunked\r\n\r\n5\r\nchunk\r\n3\r\ned!\r\n0\r\n\r\n",
    );
    let res = client.read_response();
    assert_eq!((res.status, res.body_str()), (201, "chunked!"));
    assert_eq!(client.get("/after").status, 201);
}

/// Defect 2, the other side: a handler that does switch protocols gets the bytes that
/// follow the body, not the body; taking the socket before the body is read is refused.
#[test]
fn upgrade_takes_the_socket_only_after_the_body() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                stream.get_headers().await?;
                let early = stream.take_socket().err().map(|e| e.to_string());
                let body = stream.get_body_as_bytes().await?;
                let mut head = Headers::new();
                head.append(":status", "101");
                head.append("connection", "upgrade");
                head.append("upgrade", "echo");
                stream.write_headers(&head, false).await?;
                let mut sock = stream.take_socket()?;
                let mut rest = [0u8; 5];
                tokio::io::AsyncReadExt::read_exact(&mut sock, &mut rest).await?;
                let said = format!(
                    "body={} early={} next={}",
                    String::from_utf8_lossy(&body),
                    early.is_some(),
                    String::from_utf8_lossy(&rest)
                );
                tokio::io::AsyncWriteExt::write_all(&mut sock, said.as_bytes()).await?;
                tokio::io::AsyncWriteExt::shutdown(&mut sock).await?;
                Ok(())
            }
        },
    );
    let out = raw_request(
        server.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\
Content-Length: 4\r\n\r\nbodyAFTER",
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.ends_with("body=body early=true next=AFTER"), "{text}");
}

/// Defect 2: a CONNECT whose handler does not open a tunnel ends the connection (what
/// follows a CONNECT head is not a request), and its response says so.
#[test]
fn refused_connect_response_says_connection_close() {
    let server = TestServer::start(
        |o| o,
        || |_srv, stream: Stream| async move { respond(&stream, "405", "no tunnels").await },
    );
    let out = raw_request(
        server.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    );
    let responses = parse_responses(&out);
    assert_eq!(responses.len(), 1, "{}", String::from_utf8_lossy(&out));
    assert_eq!(responses[0].status, 405);
    assert!(responses[0].closes());
}

/// The handler of the slow-POST tests: reads the whole body, propagating errors.
fn body_reader() -> impl FnMut(
    onstream::ServerHandle,
    Stream,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = onstream::Result<()>>>,
> {
    |_srv, stream: Stream| {
        Box::pin(async move {
            let body = stream.get_body_as_bytes().await?;
            respond(&stream, "200", body).await
        })
    }
}

/// Defect 3: a `PUT` with `Content-Length: 10` and one byte sent held its handler, socket
/// and temporary file forever. With `body_read_timeout` the handler's read fails, the
/// client gets 408 and the connection closes; the error does not reach `onerror`.
#[test]
fn slow_post_body_read_times_out_with_408() {
    let server = TestServer::start(
        |o| o.body_read_timeout(Duration::from_millis(300)),
        body_reader,
    );
    let mut client = Client::connect(server.addr());
    client.send(b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nx");
    let out = client
        .read_to_close(Duration::from_secs(5))
        .expect("the connection is closed once the body stops coming");
    let res = parse_one(&out);
    assert_eq!(res.status, 408);
    assert!(res.closes());
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
    assert!(server.wait_connections(0, Duration::from_secs(5)));
}

/// Defect 3: the limit is between bytes (nginx's `client_body_timeout`), not on the whole
/// body: a client that keeps sending, slowly, is served.
#[test]
fn slow_post_body_read_timeout_counts_between_bytes() {
    let server = TestServer::start(
        |o| o.body_read_timeout(Duration::from_millis(400)),
        body_reader,
    );
    let mut client = Client::connect(server.addr());
    client.send(b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n");
    for b in b"abcdefgh" {
        std::thread::sleep(Duration::from_millis(100));
        client.send(&[*b]);
    }
    let res = client.read_response();
    assert_eq!((res.status, res.body_str()), (200, "abcdefgh"));
}

/// Defect 3, lua-http's per-call `timeout`: `stream.within(d)` bounds one call; when it
/// passes the call fails with a timeout, nothing read is lost, and the stream stays
/// usable (the server's own limit is far away here).
#[test]
fn slow_post_within_bounds_one_call_and_loses_nothing() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let first = stream
                    .within(Duration::from_millis(200))
                    .get_body_chars(6)
                    .await;
                let timed_out = first.as_ref().is_err_and(|e| e.is_timeout());
                let rest = stream.get_body_as_bytes().await?;
                let said = format!(
                    "timed_out={timed_out} body={}",
                    String::from_utf8_lossy(&rest)
                );
                respond(&stream, "200", said).await
            }
        },
    );
    let mut client = Client::connect(server.addr());
    client.send(b"PUT /f HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc");
    std::thread::sleep(Duration::from_millis(600));
    client.send(b"def");
    let res = client.read_response();
    assert_eq!(res.body_str(), "timed_out=true body=abcdef");
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// Defect 5: a HEAD answered with `write_headers(h, true)` (lua-http's HEAD idiom) or an
/// empty end announced `content-length: 0`, which a GET would not have had (RFC 9110
/// §8.6). A body written whole still gives its length; a handler's own length is kept.
#[test]
fn head_response_announces_no_content_length_it_does_not_know() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let path = stream.get_headers().await?.get(":path").unwrap().to_owned();
                let mut head = Headers::new();
                head.append(":status", "200");
                match path.as_str() {
                    "/ended-on-headers" => stream.write_headers(&head, true).await,
                    "/empty-end" => {
                        stream.write_headers(&head, false).await?;
                        stream.write_chunk(b"", true).await
                    }
                    "/declared" => {
                        head.append("content-length", "1234");
                        stream.write_headers(&head, true).await
                    }
                    _ => {
                        stream.write_headers(&head, false).await?;
                        stream.write_chunk(b"twelve bytes", true).await
                    }
                }
            }
        },
    );
    let mut client = Client::connect(server.addr());
    let mut head = |path: &str| {
        client.send(format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        client.read_head_response()
    };
    assert_eq!(head("/ended-on-headers").header("content-length"), None);
    assert_eq!(head("/empty-end").header("content-length"), None);
    assert_eq!(head("/declared").header("content-length"), Some("1234"));
    assert_eq!(head("/whole").header("content-length"), Some("12"));
}

/// Defect 9: `Transfer-Encoding: gzip` (chunked not the final coding) leaves the body's
/// length unknown: 400 (RFC 9112 §6.3), not 501.
#[test]
fn transfer_encoding_without_final_chunked_is_400() {
    let server = TestServer::start(|o| o, path_echo);
    let out = raw_request(
        server.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    );
    assert_eq!(parse_one(&out).status, 400);
}

/// Defect 9: a handler that set both `content-length` and `transfer-encoding: chunked`
/// had both sent (RFC 9112 §6.2 forbids it); a `content-length` of `+5` went out as sent.
#[test]
fn handler_framing_fields_give_one_valid_framing() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let path = stream.get_headers().await?.get(":path").unwrap().to_owned();
                let mut head = Headers::new();
                head.append(":status", "200");
                if path == "/both" {
                    head.append("content-length", "5");
                    head.append("transfer-encoding", "chunked");
                } else {
                    head.append("content-length", "+5");
                }
                stream.write_headers(&head, false).await?;
                stream.write_chunk(b"hello", true).await
            }
        },
    );
    let mut client = Client::connect(server.addr());
    let res = client.get("/both");
    assert!(res.chunked);
    assert_eq!(res.header("content-length"), None, "{:?}", res.headers);
    assert_eq!(res.body_str(), "hello");
    let out = raw_request(
        server.addr(),
        b"GET /plus HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&out);
    assert!(!text.contains("+5"), "{text}");
    assert_eq!(parse_one(&out).status, 503, "{text}");
}

/// Defect 9: the bytes of an unread body thrown away were counted per poll, so a body
/// trickled in small pieces was never cut at `max_discard`. Counted across polls, the
/// connection closes once more than the budget was thrown away: the request after it is
/// not served.
#[test]
fn max_discard_counts_across_reads() {
    let server = TestServer::start(
        |o| o.max_discard(1000),
        || |_srv, stream: Stream| async move { respond(&stream, "200", "early").await },
    );
    let mut client = Client::connect(server.addr());
    client.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(client.read_response().body_str(), "early");
    let chunk = format!("64\r\n{}\r\n", "y".repeat(100));
    let mut sent_all = true;
    for _ in 0..30 {
        if client.writer.write_all(chunk.as_bytes()).is_err() {
            sent_all = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if sent_all {
        let _ = client
            .writer
            .write_all(b"0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    }
    let rest = client
        .read_to_close(Duration::from_secs(5))
        .expect("the connection closes past max_discard");
    assert!(
        parse_responses(&rest).is_empty(),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

/// Defect 9: RFC 9110 §15.2, a server MUST NOT send a 1xx response to an HTTP/1.0 client.
/// Interim responses are left out; a protocol switch is refused to the handler.
#[test]
fn no_informational_response_to_an_http10_client() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                stream.write_continue().await?;
                let mut early = Headers::new();
                early.append(":status", "103");
                early.append("link", "</a.css>; rel=preload");
                stream.write_headers(&early, false).await?;
                let mut switch = Headers::new();
                switch.append(":status", "101");
                let refused = stream.write_headers(&switch, false).await.is_err();
                respond(&stream, "200", format!("switch refused: {refused}")).await
            }
        },
    );
    let out = raw_request(server.addr(), b"GET / HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(!text.contains(" 100 ") && !text.contains(" 103 "), "{text}");
    assert!(text.ends_with("switch refused: true"), "{text}");
}

/// Defect 9: RFC 9112 §3.2.2, a server MUST accept an absolute-form target; handlers
/// (and the command) get `:path` in origin form and `:authority` from the target.
#[test]
fn absolute_form_target_is_served_in_origin_form() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let req = stream.get_headers().await?;
                let said = format!(
                    "{} {}",
                    req.get(":authority").unwrap_or("-"),
                    req.get(":path").unwrap_or("-")
                );
                respond(&stream, "200", said).await
            }
        },
    );
    let mut client = Client::connect(server.addr());
    client.send(b"GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: other\r\n\r\n");
    assert_eq!(
        client.read_response().body_str(),
        "example.com:8080 /a/b?c=d"
    );
    client.send(b"GET HTTP://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(client.read_response().body_str(), "example.com /");
    let mut rest = Vec::new();
    client.shutdown_write();
    let _ = client.reader.read_to_end(&mut rest);
}
