//! HTTP/2 over real loopback sockets with the `h2` crate's client: cleartext by prior
//! knowledge (h2c) and over TLS by ALPN, the `version` option, concurrent streams, flow
//! control both ways, trailers, resets from either side, SETTINGS, the idle timeout
//! (DESIGN.md §4 item 9: lua-http never timed idle h2 connections out) and graceful close.

mod common;

use std::{
    cell::Cell,
    future::{poll_fn, Future},
    rc::Rc,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use common::*;
use h2::{client::SendRequest, Reason, RecvStream, SendStream};
use onstream::{ErrorKind, Headers, Stream, Tls, Version};
use rustls::{pki_types::ServerName, ClientConfig};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    task::JoinHandle,
};

// ===== client side =====

/// The client half of one HTTP/2 connection: the request handle and the spawned
/// `Connection` task (it ends when the connection does).
struct Client {
    send: SendRequest<Bytes>,
    conn: JoinHandle<Result<(), h2::Error>>,
    /// The scheme and authority requests are sent to, e.g. `http://127.0.0.1:8080`.
    base: String,
}

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

/// Waits (at most `max`) until `cond` holds; returns whether it did.
async fn eventually(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + max;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// The HTTP/2 client handshake over `io`, with the connection spawned.
async fn handshake<T>(io: T, base: String) -> Client
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = within("HTTP/2 client handshake", h2::client::handshake(io))
        .await
        .expect("HTTP/2 client handshake failed");
    Client {
        send,
        conn: tokio::spawn(conn),
        base,
    }
}

/// An HTTP/2 connection by prior knowledge (h2c) to `addr`.
async fn h2c(addr: std::net::SocketAddr) -> Client {
    let tcp = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    handshake(tcp, format!("http://{addr}")).await
}

/// A TLS connection to `addr` (server name "localhost") with `config`; returns the
/// stream and the ALPN protocol the server chose.
async fn tls_connect(
    addr: std::net::SocketAddr,
    config: ClientConfig,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
) {
    let tcp = within("connect", tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = within("TLS handshake", connector.connect(name, tcp))
        .await
        .expect("TLS handshake failed");
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    (tls, alpn)
}

/// A request head for `path` on `client`'s server (any body is sent on the stream).
fn request(client: &Client, method: &str, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", client.base))
        .body(())
        .unwrap()
}

/// Waits until the connection may open one more stream; returns a handle for it.
async fn ready(client: &Client) -> SendRequest<Bytes> {
    within("connection ready", client.send.clone().ready())
        .await
        .expect("the connection is not ready for a new stream")
}

/// Reads `body` to its end, giving flow-control credit back as it goes.
async fn read_body(body: &mut RecvStream) -> Result<Bytes, h2::Error> {
    let mut out = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Sends `data` on `send` as flow control allows, then ends the stream if `end`.
async fn send_all(send: &mut SendStream<Bytes>, mut data: Bytes, end: bool) {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let granted = poll_fn(|cx| send.poll_capacity(cx))
            .await
            .expect("the stream closed while sending")
            .expect("waiting for send capacity failed");
        if granted == 0 {
            continue;
        }
        let piece = data.split_to(granted.min(data.len()));
        send.send_data(piece, false).expect("send_data");
    }
    if end {
        send.send_data(Bytes::new(), true)
            .expect("ending the stream");
    }
}

/// One response with its body read whole.
struct Reply {
    status: u16,
    body: Bytes,
}

/// Sends a body-less `method` request for `path` on a new stream and reads the reply.
async fn exchange(client: &Client, method: &str, path: &str) -> Reply {
    let mut send = ready(client).await;
    let (response, _) = send
        .send_request(request(client, method, path), true)
        .expect("send_request");
    read_reply(response).await
}

/// A GET of `path` on a new stream of `client`.
async fn get(client: &Client, path: &str) -> Reply {
    exchange(client, "GET", path).await
}

/// Awaits a response and its whole body.
async fn read_reply(response: h2::client::ResponseFuture) -> Reply {
    let response = within("response head", response)
        .await
        .expect("response head failed");
    let (parts, mut body) = response.into_parts();
    let body = within("response body", read_body(&mut body))
        .await
        .expect("response body failed");
    Reply {
        status: parts.status.as_u16(),
        body,
    }
}

impl Reply {
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }
}

// ===== TLS =====

// ===== handlers =====

/// Answers with what the handler saw of the request head and the stream's version.
async fn echo_head(stream: Stream) -> onstream::Result<()> {
    let req = stream.get_headers().await?;
    let body = format!(
        "method={} scheme={} path={} authority={} version={:?}",
        req.get(":method").unwrap_or("-"),
        req.get(":scheme").unwrap_or("-"),
        req.get(":path").unwrap_or("-"),
        req.get(":authority").unwrap_or("-"),
        stream.version(),
    );
    respond(&stream, "200", body).await
}

/// A deterministic, non-repeating byte pattern (xorshift64).
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// FNV-1a, 64 bits.
fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// ===== tests =====

/// A cleartext HTTP/2 client by prior knowledge is answered, and the handler sees the
/// request's `:method`, `:scheme` (http), `:path` and `:authority`, on an HTTP/2 stream.
#[test]
fn h2c_prior_knowledge_get_is_answered_with_the_request_pseudo_headers() {
    let server = TestServer::start(|o| o, || |_srv, stream| echo_head(stream));
    let addr = server.addr();
    let reply = block_on(async {
        let client = h2c(addr).await;
        get(&client, "/hello?x=1").await
    });
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        format!("method=GET scheme=http path=/hello?x=1 authority={addr} version=HTTP/2.0")
    );
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// A TLS client that offers only ALPN protocols the server does not speak is served
/// without ALPN rather than refused (rustls's default is a `no_application_protocol`
/// alert; lua-http serves it, and its spec tests it): HTTP/1.1 by default, HTTP/2 when
/// the client then sends the preface.
#[test]
fn a_client_offering_only_unknown_alpn_protocols_is_served_without_alpn() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| o.tls(Tls::On).tls_config(config),
        || |_srv, stream| echo_head(stream),
    );
    let addr = server.addr();
    let (alpn, h2_reply, h1_reply) = block_on(async {
        let (tls, alpn) = tls_connect(addr, trusting(&cert, &[b"foo"])).await;
        let client = handshake(tls, format!("https://{addr}")).await;
        let h2_reply = get(&client, "/two").await;
        let (mut tls, _) = tls_connect(addr, trusting(&cert, &[b"foo"])).await;
        tls.write_all(b"GET /one HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        let _ = within("HTTP/1.1 answer", tls.read_to_end(&mut raw)).await;
        (alpn, h2_reply, String::from_utf8_lossy(&raw).into_owned())
    });
    assert_eq!(alpn, None);
    assert_eq!(h2_reply.status, 200);
    assert!(
        h2_reply.text().ends_with("version=HTTP/2.0"),
        "{}",
        h2_reply.text()
    );
    assert!(h1_reply.starts_with("HTTP/1.1 200"), "{h1_reply}");
    assert!(h1_reply.ends_with("version=HTTP/1.1"), "{h1_reply}");
}

/// Each stream knows its HTTP/2 identifier (lua-http's `stream.id`): a client's first two
/// requests on one connection are streams 1 and 3. Over HTTP/1 there is none.
#[test]
fn streams_carry_their_http2_identifier() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let id = format!("{:?}", stream.id());
                respond(&stream, "200", id).await
            }
        },
    );
    let addr = server.addr();
    let (first, second) = block_on(async {
        let client = h2c(addr).await;
        let first = get(&client, "/").await;
        let second = get(&client, "/").await;
        (first.text().to_owned(), second.text().to_owned())
    });
    assert_eq!((first.as_str(), second.as_str()), ("Some(1)", "Some(3)"));
    let h1 = raw_request(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(String::from_utf8_lossy(&h1).ends_with("None"));
}

/// Over TLS, ALPN picks h2 even when the client lists http/1.1 first: the server's
/// preference wins (DESIGN.md §4 item 7: lua-http took the client's first choice), and
/// the handler sees `:scheme` https.
#[test]
fn alpn_picks_h2_even_when_the_client_lists_http1_first() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| o.tls_config(config),
        || |_srv, stream| echo_head(stream),
    );
    let addr = server.addr();
    let reply = block_on(async {
        let (tls, alpn) = tls_connect(addr, trusting(&cert, &[b"http/1.1", b"h2"])).await;
        assert_eq!(
            alpn.as_deref(),
            Some(&b"h2"[..]),
            "ALPN did not pick h2 (got {:?})",
            alpn.as_ref()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        );
        let client = handshake(tls, format!("https://localhost:{}", addr.port())).await;
        get(&client, "/secure").await
    });
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        format!(
            "method=GET scheme=https path=/secure authority=localhost:{} version=HTTP/2.0",
            addr.port()
        )
    );
}

/// With `Version::Http1`, ALPN negotiates http/1.1 for a client offering h2 and
/// http/1.1, and the request is served over HTTP/1.1.
#[test]
fn version_http1_negotiates_http1_by_alpn_for_a_client_offering_both() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| o.tls(Tls::On).tls_config(config).version(Version::Http1),
        || |_srv, stream| echo_head(stream),
    );
    let addr = server.addr();
    let (alpn, raw) = block_on(async {
        let (mut tls, alpn) = tls_connect(addr, trusting(&cert, &[b"h2", b"http/1.1"])).await;
        tls.write_all(b"GET /one HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = Vec::new();
        // A peer closing without close_notify is an error for rustls; what was read counts.
        let _ = within("HTTP/1.1 response", tls.read_to_end(&mut raw)).await;
        (alpn, raw)
    });
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let response = parse_one(&raw);
    assert_eq!(response.version, "HTTP/1.1");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body_str(),
        "method=GET scheme=https path=/one authority=localhost version=HTTP/1.1"
    );
}

/// With `Version::Http2`, a cleartext HTTP/1.1 request gets no HTTP/1 answer and its
/// connection is closed, while an h2c client is served.
#[test]
fn version_http2_closes_a_cleartext_http1_request_without_an_http1_answer() {
    let server = TestServer::start(
        |o| o.tls(Tls::Off).version(Version::Http2),
        || |_srv, stream| echo_head(stream),
    );
    let addr = server.addr();
    // raw_request panics if the connection stays open.
    let answer = raw_request(addr, b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        !answer.starts_with(b"HTTP/1"),
        "an HTTP/2-only server answered HTTP/1: {:?}",
        String::from_utf8_lossy(&answer)
    );
    let reply = block_on(async { get(&h2c(addr).await, "/new").await });
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("path=/new"), "{}", reply.text());
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// 50 streams open at once on one connection are all handled concurrently (every
/// handler waits until all 50 have started) and each is answered with its own path.
#[test]
fn fifty_concurrent_streams_on_one_connection_are_each_answered_with_their_path() {
    concurrent_streams_are_each_answered_with_their_path(50);
}

/// 100 streams (the default concurrency limit) sent at once: more than the connection
/// accepts in one turn of the loop (64), so it must come back for the rest by itself.
#[test]
fn more_streams_than_one_turn_accepts_are_all_answered() {
    concurrent_streams_are_each_answered_with_their_path(100);
}

fn concurrent_streams_are_each_answered_with_their_path(n: usize) {
    let server = TestServer::start(
        |o| o,
        move || {
            let started = Rc::new(Cell::new(0usize));
            move |_srv, stream: Stream| {
                let started = started.clone();
                async move {
                    let req = stream.get_headers().await?;
                    started.set(started.get() + 1);
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while started.get() < n && Instant::now() < deadline {
                        onstream::sleep(Duration::from_millis(5)).await;
                    }
                    let body = format!("{} with {}", req.get(":path").unwrap_or(""), started.get());
                    respond(&stream, "200", body).await
                }
            }
        },
    );
    let addr = server.addr();
    let replies = block_on(async {
        let client = h2c(addr).await;
        let mut pending = Vec::new();
        for i in 0..n {
            let mut send = ready(&client).await;
            let (response, _) = send
                .send_request(request(&client, "GET", &format!("/s/{i}")), true)
                .expect("send_request");
            pending.push(tokio::spawn(read_reply(response)));
        }
        let mut replies = Vec::new();
        for p in pending {
            replies.push(within("a concurrent stream", p).await.expect("stream task"));
        }
        replies
    });
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("/s/{i} with {n}"));
    }
}

/// Flow control works both ways: an 8 MiB upload reaches the handler byte-exact, and an
/// 8 MiB download written in 64 KiB chunks reaches the client byte-exact.
#[test]
fn eight_mib_upload_and_download_arrive_byte_exact() {
    const LEN: usize = 8 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let req = stream.get_headers().await?;
                if req.get(":path") == Some("/upload") {
                    let body = stream.get_body_as_bytes().await?;
                    let answer = format!("{} {:016x}", body.len(), checksum(&body));
                    return respond(&stream, "200", answer).await;
                }
                let data = pattern(LEN, 2);
                stream.write_headers(&status_headers("200"), false).await?;
                for (i, piece) in data.chunks(CHUNK).enumerate() {
                    stream.write_chunk(piece, (i + 1) * CHUNK >= LEN).await?;
                }
                Ok(())
            }
        },
    );
    let addr = server.addr();
    let upload = pattern(LEN, 1);
    let expected_upload = format!("{} {:016x}", LEN, checksum(&upload));
    let (up, down) = block_on(async {
        let client = h2c(addr).await;
        let mut send = ready(&client).await;
        let (response, mut body) = send
            .send_request(request(&client, "POST", "/upload"), false)
            .expect("send_request");
        within("8 MiB upload", send_all(&mut body, upload, true)).await;
        let up = read_reply(response).await;
        let down = get(&client, "/download").await;
        (up, down)
    });
    assert_eq!(up.status, 200);
    assert_eq!(up.text(), expected_upload);
    assert_eq!(down.status, 200);
    assert_eq!(down.body.len(), LEN);
    assert!(down.body == pattern(LEN, 2), "the download differs");
}

/// Trailers both ways: the handler's `get_trailers()` returns the client's trailers
/// after the body, and trailers written with `write_headers(h, true)` after the body
/// reach the client after the data.
#[test]
fn trailers_pass_both_ways() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let body = stream.get_body_as_bytes().await?;
                let trailers = stream.get_trailers().await?;
                let seen = trailers
                    .as_ref()
                    .and_then(|t| t.get("x-request-check"))
                    .unwrap_or("none")
                    .to_owned();
                stream.write_headers(&status_headers("200"), false).await?;
                stream
                    .write_chunk(
                        format!("body={} trailer={seen}", String::from_utf8_lossy(&body)),
                        false,
                    )
                    .await?;
                let mut out = Headers::new();
                out.append("x-response-check", "done");
                stream.write_headers(&out, true).await
            }
        },
    );
    let addr = server.addr();
    let (status, body, trailers) = block_on(async {
        let client = h2c(addr).await;
        let mut send = ready(&client).await;
        let (response, mut up) = send
            .send_request(request(&client, "POST", "/t"), false)
            .expect("send_request");
        send_all(&mut up, Bytes::from_static(b"payload"), false).await;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-request-check", "abc".parse().unwrap());
        up.send_trailers(trailers).expect("send_trailers");
        let response = within("response head", response).await.expect("response");
        let status = response.status().as_u16();
        let mut down = response.into_body();
        let body = within("body", read_body(&mut down)).await.expect("body");
        let trailers = within("trailers", down.trailers())
            .await
            .expect("reading trailers");
        (status, body, trailers)
    });
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"body=payload trailer=abc");
    let trailers = trailers.expect("the response had no trailers");
    assert_eq!(
        trailers.get("x-response-check").map(|v| v.as_bytes()),
        Some(&b"done"[..])
    );
}

/// A client that resets its stream mid-upload makes the handler's body read fail
/// instead of hang, and the connection keeps serving other streams.
#[test]
fn a_client_reset_mid_upload_fails_the_body_read_and_the_connection_lives_on() {
    let started = Arc::new(AtomicBool::new(false));
    let outcome: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let (started2, outcome2) = (started.clone(), outcome.clone());
    let server = TestServer::start(
        |o| o,
        move || {
            move |_srv, stream: Stream| {
                let (started, outcome) = (started2.clone(), outcome2.clone());
                async move {
                    let req = stream.get_headers().await?;
                    if req.get(":path") != Some("/upload") {
                        return respond(&stream, "200", "other").await;
                    }
                    let result = loop {
                        match stream.get_next_chunk().await {
                            Ok(Some(_)) => started.store(true, Ordering::SeqCst),
                            Ok(None) => break "the body ended normally".to_owned(),
                            Err(e) => break format!("error: {e}"),
                        }
                    };
                    *outcome.lock().unwrap() = Some(result);
                    Ok(())
                }
            }
        },
    );
    let addr = server.addr();
    let other = block_on(async {
        let client = h2c(addr).await;
        let mut send = ready(&client).await;
        let (_response, mut up) = send
            .send_request(request(&client, "POST", "/upload"), false)
            .expect("send_request");
        send_all(&mut up, Bytes::from(vec![b'x'; 1000]), false).await;
        assert!(
            eventually(IO_TIMEOUT, || started.load(Ordering::SeqCst)).await,
            "the handler never received the first bytes"
        );
        up.send_reset(Reason::CANCEL);
        assert!(
            eventually(Duration::from_secs(2), || outcome.lock().unwrap().is_some()).await,
            "the handler's body read hangs after the client reset the stream"
        );
        get(&client, "/other").await
    });
    let outcome = outcome.lock().unwrap().clone().unwrap();
    assert!(outcome.starts_with("error"), "{outcome}");
    assert_eq!(other.status, 200);
    assert_eq!(other.text(), "other");
    assert!(
        server.step_errors().is_empty(),
        "a client reset reached onerror: {:?}",
        server.step_errors()
    );
}

/// Found by h2spec (generic/3.4/1, http2/5.1/8): a client that resets a stream before
/// its handler answers made the handler's write fail with an h2 misuse error, which
/// reached the default onerror and stopped the example server. A reset is the client's
/// doing: the write fails as a disconnect, nothing reaches onerror, the server goes on.
#[test]
fn a_reset_before_the_answer_fails_the_write_as_a_disconnect_not_a_step_error() {
    let outcome: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let outcome2 = outcome.clone();
    let server = TestServer::start(
        |o| o,
        move || {
            move |_srv, stream: Stream| {
                let outcome = outcome2.clone();
                async move {
                    let req = stream.get_headers().await?;
                    if req.get(":path") != Some("/reset-me") {
                        return respond(&stream, "200", "other").await;
                    }
                    onstream::sleep(Duration::from_millis(100)).await;
                    let written = respond(&stream, "200", "too late").await;
                    *outcome.lock().unwrap() = Some(match &written {
                        Ok(()) => "written".to_owned(),
                        Err(e) => format!("disconnect={} {e}", e.is_disconnect()),
                    });
                    written
                }
            }
        },
    );
    let addr = server.addr();
    let other = block_on(async {
        let client = h2c(addr).await;
        let mut send = ready(&client).await;
        let (_response, mut up) = send
            .send_request(request(&client, "POST", "/reset-me"), false)
            .expect("send_request");
        up.send_reset(Reason::CANCEL);
        assert!(
            eventually(Duration::from_secs(2), || outcome.lock().unwrap().is_some()).await,
            "the handler never finished"
        );
        get(&client, "/other").await
    });
    let outcome = outcome.lock().unwrap().clone().unwrap();
    assert!(outcome.starts_with("disconnect=true"), "{outcome}");
    assert_eq!(other.text(), "other");
    assert!(
        server.step_errors().is_empty(),
        "a client reset reached onerror: {:?}",
        server.step_errors()
    );
}

/// A handler that fails before writing headers gets its client a 503, and its error
/// reaches onerror (the default one: out of `step`) once.
#[test]
fn a_handler_error_before_the_headers_is_a_503_and_reaches_onerror() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let req = stream.get_headers().await?;
                if req.get(":path") == Some("/fail") {
                    return Err(onstream::Error::handler("no database"));
                }
                respond(&stream, "200", "fine").await
            }
        },
    );
    let addr = server.addr();
    let (failed, fine) = block_on(async {
        let client = h2c(addr).await;
        let failed = get(&client, "/fail").await;
        let fine = get(&client, "/fine").await;
        (failed, fine)
    });
    assert_eq!(failed.status, 503);
    assert_eq!(fine.status, 200);
    assert_eq!(fine.text(), "fine");
    let errors = server.wait_step_errors(1, Duration::from_secs(2));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, ErrorKind::Handler, "{errors:?}");
}

/// A handler that fails after writing headers and part of the body has its stream reset
/// with INTERNAL_ERROR; other streams on the connection still work, and the error
/// reaches onerror once.
#[test]
fn a_handler_error_mid_body_resets_the_stream_with_internal_error() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let req = stream.get_headers().await?;
                if req.get(":path") == Some("/fail") {
                    stream.write_headers(&status_headers("200"), false).await?;
                    stream.write_chunk("partial", false).await?;
                    // Let the head and the first bytes leave before failing.
                    onstream::sleep(Duration::from_millis(100)).await;
                    return Err(onstream::Error::handler("lost the database mid-body"));
                }
                respond(&stream, "200", "fine").await
            }
        },
    );
    let addr = server.addr();
    let (status, partial, error, fine) = block_on(async {
        let client = h2c(addr).await;
        let mut send = ready(&client).await;
        let (response, _) = send
            .send_request(request(&client, "GET", "/fail"), true)
            .expect("send_request");
        let response = within("response head", response)
            .await
            .expect("the response head did not arrive");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut partial = BytesMut::new();
        let error = loop {
            match within("response body", body.data()).await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    partial.extend_from_slice(&chunk);
                }
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        let fine = get(&client, "/fine").await;
        (status, partial, error, fine)
    });
    assert_eq!(status, 200);
    assert_eq!(&partial[..], b"partial");
    let error = error.expect("the failed response ended normally instead of being reset");
    assert_eq!(error.reason(), Some(Reason::INTERNAL_ERROR), "{error:?}");
    assert_eq!(fine.status, 200);
    assert_eq!(fine.text(), "fine");
    let errors = server.wait_step_errors(1, Duration::from_secs(2));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, ErrorKind::Handler, "{errors:?}");
}

/// The server advertises SETTINGS_MAX_CONCURRENT_STREAMS = 100 by default.
#[test]
fn max_concurrent_streams_is_advertised_as_100_by_default() {
    let server = TestServer::start(|o| o, || |_srv, stream| echo_head(stream));
    let addr = server.addr();
    let max = block_on(async {
        let client = h2c(addr).await;
        assert_eq!(get(&client, "/").await.status, 200);
        client.send.current_max_send_streams()
    });
    assert_eq!(max, 100);
}

/// The `max_concurrent_streams` option changes the advertised SETTINGS value.
#[test]
fn the_max_concurrent_streams_option_changes_the_advertised_limit() {
    let server = TestServer::start(
        |o| o.max_concurrent_streams(7),
        || |_srv, stream| echo_head(stream),
    );
    let addr = server.addr();
    let max = block_on(async {
        let client = h2c(addr).await;
        assert_eq!(get(&client, "/").await.status, 200);
        client.send.current_max_send_streams()
    });
    assert_eq!(max, 7);
}

/// An HTTP/2 connection with no stream open gets GOAWAY after `intra_stream_timeout`
/// and is closed (lua-http never timed idle h2 connections out, DESIGN.md §4 item 9).
#[test]
fn an_idle_http2_connection_is_closed_after_the_intra_stream_timeout() {
    let server = TestServer::start(
        |o| o.intra_stream_timeout(Duration::from_millis(300)),
        || |_srv, stream| echo_head(stream),
    );
    let addr = server.addr();
    let (idle_for, ended) = block_on(async {
        let client = h2c(addr).await;
        assert_eq!(get(&client, "/").await.status, 200);
        let idle_from = Instant::now();
        // `client.send` stays alive: the client itself has no reason to close.
        let ended = tokio::time::timeout(Duration::from_secs(2), client.conn).await;
        let idle_for = idle_from.elapsed();
        drop(client.send);
        (idle_for, ended)
    });
    let ended = ended.expect("the idle connection was still open after 2 s");
    let ended = ended.expect("connection task panicked");
    assert!(ended.is_ok(), "the connection ended with {ended:?}");
    assert!(
        idle_for >= Duration::from_millis(250),
        "closed after only {idle_for:?} of idleness"
    );
    assert!(
        server.wait_connections(0, Duration::from_secs(1)),
        "connections() is {}",
        server.connections()
    );
}

/// The idle timeout counts only time with no stream open: a handler slower than
/// `intra_stream_timeout` still gets its response out.
#[test]
fn a_slow_stream_is_not_cut_by_the_intra_stream_timeout() {
    let server = TestServer::start(
        |o| o.intra_stream_timeout(Duration::from_millis(200)),
        || {
            |_srv, stream: Stream| async move {
                onstream::sleep(Duration::from_millis(500)).await;
                respond(&stream, "200", "late but whole").await
            }
        },
    );
    let addr = server.addr();
    let reply = block_on(async { get(&h2c(addr).await, "/slow").await });
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "late but whole");
}

/// `close()` while a slow response is in flight: the response still arrives whole,
/// then the connection ends, and new connections are refused.
#[test]
fn close_lets_an_in_flight_response_finish_then_ends_the_connection() {
    let server = Arc::new(TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                stream.write_headers(&status_headers("200"), false).await?;
                stream.write_chunk("first,", false).await?;
                onstream::sleep(Duration::from_millis(300)).await;
                stream.write_chunk("second", true).await
            }
        },
    ));
    let addr = server.addr();
    let closer = server.clone();
    let (body, ended, reconnect) = block_on(async move {
        let client = h2c(addr).await;
        let mut send = ready(&client).await;
        let (response, _) = send
            .send_request(request(&client, "GET", "/slow"), true)
            .expect("send_request");
        let response = within("response head", response)
            .await
            .expect("response head");
        // The handler is running: close the server under it.
        closer.exec(|s| s.close());
        let mut body = response.into_body();
        let body = within("the in-flight body", read_body(&mut body)).await;
        let ended = tokio::time::timeout(Duration::from_secs(2), client.conn).await;
        drop(client.send);
        let reconnect = tokio::net::TcpStream::connect(addr).await;
        (body, ended, reconnect)
    });
    let body = body.expect("the in-flight response failed after close()");
    assert_eq!(&body[..], b"first,second");
    let ended = ended.expect("the connection stayed open after its last response");
    let _ = ended.expect("connection task panicked");
    assert!(
        reconnect.is_err(),
        "a new connection was accepted after close()"
    );
    assert!(server.wait_connections(0, Duration::from_secs(1)));
}

/// The hardening issue's defect 3 over HTTP/2: a client that stops sending a request body
/// held its handler forever. `body_read_timeout` (one implementation in the shared
/// `Stream`, for both versions) fails the handler's read with a 408 that is answered, not
/// reported to `onerror`; the connection's other streams go on.
#[test]
fn slow_post_over_http2_is_answered_408_when_the_body_stops() {
    let server = TestServer::start(
        |o| o.body_read_timeout(Duration::from_millis(300)),
        || {
            |_srv, stream: Stream| async move {
                let body = stream.get_body_as_bytes().await?;
                respond(&stream, "200", body).await
            }
        },
    );
    block_on(async {
        let client = h2c(server.addr()).await;
        let (response, mut body) = ready(&client)
            .await
            .send_request(request(&client, "PUT", "/slow"), false)
            .expect("send_request");
        body.send_data(Bytes::from_static(b"x"), false)
            .expect("send_data");
        let reply = read_reply(response).await;
        assert_eq!(reply.status, 408);
        let (response, mut body) = ready(&client)
            .await
            .send_request(request(&client, "PUT", "/fine"), false)
            .expect("send_request");
        send_all(&mut body, Bytes::from_static(b"all of it"), true).await;
        let reply = read_reply(response).await;
        assert_eq!((reply.status, reply.text()), (200, "all of it"));
    });
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}
