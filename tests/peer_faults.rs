//! Faults of the peer must cost only their own connection (ARCHITECTURE.md: "Bad input
//! from a peer never reaches `onerror` and never stops the server").
//!
//! Guarded here, over real loopback sockets with a rustls client and the server's DEFAULT
//! `onerror` (which makes `step` return the error, and so stops a `run` loop): a bad TLS
//! record, or a fatal TLS alert, arriving after the handshake while a handler reads the
//! request body (HTTP/1 and HTTP/2), WebSocket messages or a socket taken after a `101`,
//! and passes the error on with `?`. `step` must return no error, and the server must go
//! on answering other clients.
//!
//! And a client that sends nothing, or half a ClientHello, must not keep a closing
//! server's `run()` going until `connection_setup_timeout`.

mod common;

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    pin::Pin,
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use onstream::{websocket, Options, Server, ServerHandle, Stream, Tls};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message as M};

type ClientTls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
type BoxFuture = Pin<Box<dyn Future<Output = onstream::Result<()>>>>;

/// What the handlers saw, in order: `"reading"` when one starts waiting for the body or
/// messages, then `"ok"` or `"error …"` with the error and whether it is a disconnect.
type Seen = Arc<Mutex<Vec<String>>>;

/// Bytes that are no TLS record at all (the content type byte `t` does not exist).
const GARBAGE: &[u8] = b"this is not a TLS record\r\n";

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(IO_TIMEOUT, f)
                .await
                .expect("test timed out")
        })
}

fn describe<T>(r: &onstream::Result<T>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => format!("error {e:?} disconnect={}", e.is_disconnect()),
    }
}

/// Reads the body of `POST /upload` (noting what it got) and passes a failure on with
/// `?`; any other request gets `200 still serving`.
fn body_reader(seen: Seen) -> impl FnMut(ServerHandle, Stream) -> BoxFuture {
    move |_srv, stream| {
        let seen = seen.clone();
        Box::pin(async move {
            let req = stream.get_headers().await?;
            if req.get(":path") != Some("/upload") {
                return respond(&stream, "200", "still serving").await;
            }
            seen.lock().unwrap().push("reading".to_owned());
            let body = stream.get_body_as_string().await;
            seen.lock().unwrap().push(describe(&body));
            body?;
            respond(&stream, "200", "the whole body").await
        })
    }
}

/// Accepts a WebSocket and echoes text until the client closes, passing a failure to
/// receive on with `?`.
fn websocket_echo(seen: Seen) -> impl FnMut(ServerHandle, Stream) -> BoxFuture {
    move |_srv, stream| {
        let seen = seen.clone();
        Box::pin(async move {
            let req = stream.get_headers().await?;
            if req.get(":path") != Some("/ws") {
                return respond(&stream, "200", "still serving").await;
            }
            let mut ws = websocket::accept(&stream, websocket::Options::new()).await?;
            seen.lock().unwrap().push("reading".to_owned());
            loop {
                let next = ws.recv().await;
                if next.is_err() {
                    seen.lock().unwrap().push(describe(&next));
                }
                match next? {
                    Some(msg) if msg.is_text() => ws.send(msg).await?,
                    Some(_) => {}
                    None => return Ok(()),
                }
            }
        })
    }
}

/// Answers `upgrade: echo` with `101`, takes the socket and echoes what comes until EOF,
/// passing a failure to read on with `?` (the `io::Error` converted by `From`).
fn raw_echo(seen: Seen) -> impl FnMut(ServerHandle, Stream) -> BoxFuture {
    move |_srv, stream| {
        let seen = seen.clone();
        Box::pin(async move {
            let req = stream.get_headers().await?;
            if req.get("upgrade") != Some("echo") {
                return respond(&stream, "200", "still serving").await;
            }
            let mut head = onstream::Headers::new();
            head.append(":status", "101");
            head.append("connection", "upgrade");
            head.append("upgrade", "echo");
            stream.write_headers(&head, false).await?;
            let mut socket = stream.take_socket()?;
            seen.lock().unwrap().push("reading".to_owned());
            let mut buf = [0u8; 1024];
            loop {
                let n = socket.read(&mut buf).await.map_err(onstream::Error::from);
                if n.is_err() {
                    seen.lock().unwrap().push(describe(&n));
                }
                match n? {
                    0 => return Ok(()),
                    n => socket.write_all(&buf[..n]).await?,
                }
            }
        })
    }
}

/// Waits (bounded) until the handlers have noted `n` events.
async fn seen_at_least(seen: &Seen, n: usize) -> Vec<String> {
    for _ in 0..500 {
        if seen.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen.lock().unwrap().clone()
}

/// A TLS connection to `addr` offering `alpn`, and a second handle on its TCP socket to
/// write raw bytes past TLS.
async fn tls_connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> (ClientTls, std::net::TcpStream) {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let raw = tcp.try_clone().unwrap();
    raw.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(tcp).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(trusting(cert, &[alpn])));
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    (tls, raw)
}

/// A fatal alert, encrypted as the session requires: the client's rustls is fed a
/// record that does not decrypt, fails, and writes the alert it owes the server.
fn fatal_alert(conn: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut bogus = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    bogus.extend_from_slice(&[0x5a; 0x20]);
    conn.read_tls(&mut &bogus[..]).unwrap();
    assert!(conn.process_new_packets().is_err());
    let mut alert = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut alert).unwrap();
    }
    assert!(!alert.is_empty(), "rustls wrote no alert");
    alert
}

/// Reads until the server closes `tls` (or fails it), bounded.
async fn until_closed(tls: &mut ClientTls) {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(IO_TIMEOUT, tls.read_to_end(&mut rest)).await;
}

/// A fresh TLS client's `GET /` and the body of its answer.
async fn get_over_tls(addr: SocketAddr, cert: &CertificateDer<'static>) -> String {
    let (mut tls, _raw) = tls_connect(addr, cert, b"http/1.1").await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    // A close without close_notify is an error for rustls; what was read still counts.
    let _ = tls.read_to_end(&mut raw).await;
    parse_one(&raw).body_str().to_owned()
}

/// The handler saw the fault as an error (so the fault reached it), and yet `step`
/// returned nothing and the server still answers.
fn assert_only_the_connection_was_lost(server: &TestServer, seen: &[String]) {
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].starts_with("error"), "{seen:?}");
    assert!(
        server.wait_connections(0, IO_TIMEOUT),
        "the faulty connection was not closed"
    );
    assert!(
        server.step_errors().is_empty(),
        "a peer's fault reached onerror and stopped step: {:?}",
        server.step_errors()
    );
}

/// Starts a `Tls::On` server with a self-signed certificate for "localhost".
fn tls_server<H, Fut>(
    make_handler: impl FnOnce() -> H + Send + 'static,
) -> (TestServer, CertificateDer<'static>)
where
    H: FnMut(ServerHandle, Stream) -> Fut + 'static,
    Fut: Future<Output = onstream::Result<()>> + 'static,
{
    let (cert, config) = localhost_cert();
    let server = TestServer::start(move |o| o.tls(Tls::On).tls_config(config), make_handler);
    (server, cert)
}

const UPLOAD_HEAD: &[u8] =
    b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\nthe first part";

/// Defect: a bad TLS record after the handshake came to the handler reading the body as
/// an I/O error (`InvalidData`) that was not a disconnect, so it reached the default
/// `onerror` and `step` returned it.
#[test]
fn a_bad_tls_record_in_an_http1_body_does_not_stop_the_server() {
    let seen = Seen::default();
    let (server, cert) = tls_server({
        let seen = seen.clone();
        move || body_reader(seen)
    });
    let addr = server.addr();
    let seen = block_on(async {
        let (mut tls, mut raw) = tls_connect(addr, &cert, b"http/1.1").await;
        tls.write_all(UPLOAD_HEAD).await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(seen_at_least(&seen, 1).await, ["reading"]);
        raw.write_all(GARBAGE).unwrap();
        until_closed(&mut tls).await;
        let seen = seen_at_least(&seen, 2).await;
        assert_eq!(get_over_tls(addr, &cert).await, "still serving");
        seen
    });
    assert_only_the_connection_was_lost(&server, &seen);
}

/// Defect: as above, with a fatal TLS alert from the client in the middle of the body.
#[test]
fn a_tls_alert_in_an_http1_body_does_not_stop_the_server() {
    let seen = Seen::default();
    let (server, cert) = tls_server({
        let seen = seen.clone();
        move || body_reader(seen)
    });
    let addr = server.addr();
    let seen = block_on(async {
        let (mut tls, mut raw) = tls_connect(addr, &cert, b"http/1.1").await;
        tls.write_all(UPLOAD_HEAD).await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(seen_at_least(&seen, 1).await, ["reading"]);
        let alert = fatal_alert(tls.get_mut().1);
        raw.write_all(&alert).unwrap();
        until_closed(&mut tls).await;
        let seen = seen_at_least(&seen, 2).await;
        assert_eq!(get_over_tls(addr, &cert).await, "still serving");
        seen
    });
    assert_only_the_connection_was_lost(&server, &seen);
}

/// Defect 6 over HTTP/2: a bad TLS record under an h2 connection while a handler reads
/// a request body.
#[test]
fn a_bad_tls_record_in_an_http2_body_does_not_stop_the_server() {
    let seen = Seen::default();
    let (server, cert) = tls_server({
        let seen = seen.clone();
        move || body_reader(seen)
    });
    let addr = server.addr();
    let seen = block_on(async {
        let (tls, mut raw) = tls_connect(addr, &cert, b"h2").await;
        let (send, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
        let conn = tokio::spawn(conn);
        let mut send = send.ready().await.unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri("https://localhost/upload")
            .body(())
            .unwrap();
        let (response, mut body) = send.send_request(req, false).unwrap();
        body.send_data(Bytes::from_static(b"the first part"), false)
            .unwrap();
        assert_eq!(seen_at_least(&seen, 1).await, ["reading"]);
        raw.write_all(GARBAGE).unwrap();
        let _ = response.await;
        let _ = conn.await;
        let seen = seen_at_least(&seen, 2).await;
        assert_eq!(get_over_tls(addr, &cert).await, "still serving");
        seen
    });
    assert_only_the_connection_was_lost(&server, &seen);
}

/// Defect 6 over WebSocket: a bad TLS record while the handler waits for messages.
#[test]
fn a_bad_tls_record_in_a_websocket_does_not_stop_the_server() {
    let seen = Seen::default();
    let (server, cert) = tls_server({
        let seen = seen.clone();
        move || websocket_echo(seen)
    });
    let addr = server.addr();
    let seen = block_on(async {
        let (tls, mut raw) = tls_connect(addr, &cert, b"http/1.1").await;
        let req = format!("wss://localhost:{}/ws", addr.port())
            .into_client_request()
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tls)
            .await
            .expect("WebSocket handshake");
        ws.send(M::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), M::text("hello"));
        assert_eq!(seen_at_least(&seen, 1).await, ["reading"]);
        raw.write_all(GARBAGE).unwrap();
        while let Some(Ok(_)) = ws.next().await {}
        let seen = seen_at_least(&seen, 2).await;
        assert_eq!(get_over_tls(addr, &cert).await, "still serving");
        seen
    });
    assert_only_the_connection_was_lost(&server, &seen);
}

/// Defect 6 on a socket taken after a `101`: a bad TLS record while the handler reads
/// it as an `AsyncRead`.
#[test]
fn a_bad_tls_record_on_a_taken_socket_does_not_stop_the_server() {
    let seen = Seen::default();
    let (server, cert) = tls_server({
        let seen = seen.clone();
        move || raw_echo(seen)
    });
    let addr = server.addr();
    let seen = block_on(async {
        let (mut tls, mut raw) = tls_connect(addr, &cert, b"http/1.1").await;
        tls.write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tls.read_u8().await.expect("the 101 head"));
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
        tls.write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        tls.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"hello");
        assert_eq!(seen_at_least(&seen, 1).await, ["reading"]);
        raw.write_all(GARBAGE).unwrap();
        until_closed(&mut tls).await;
        let seen = seen_at_least(&seen, 2).await;
        assert_eq!(get_over_tls(addr, &cert).await, "still serving");
        seen
    });
    assert_only_the_connection_was_lost(&server, &seen);
}

/// The first flight of a TLS client: its ClientHello record.
fn client_hello() -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

/// Defect: `close()` closed only connections past setup. One still in setup (waiting
/// for its first byte, or in the middle of a TLS handshake) kept `run()` going until
/// `connection_setup_timeout`, past `close_timeout`. They have no request in flight:
/// closing ends them at once.
#[test]
fn close_ends_connections_still_in_setup() {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<usize>();
    let server = thread::spawn(move || {
        let options = Options::new()
            .host("127.0.0.1")
            .port(0)
            .tls(Tls::Auto)
            .connection_setup_timeout(Duration::from_secs(30))
            .close_timeout(Duration::from_millis(500));
        let server = Server::listen(options, |_srv, _stream| async { Ok(()) }).unwrap();
        addr_tx
            .send(server.local_addr().unwrap().inet().unwrap())
            .unwrap();
        let clients = go_rx.recv_timeout(IO_TIMEOUT).unwrap();
        let deadline = Instant::now() + IO_TIMEOUT;
        while server.connections() < clients && Instant::now() < deadline {
            server.step(Some(Duration::from_millis(50))).unwrap();
        }
        assert_eq!(
            server.connections(),
            clients,
            "the clients were not accepted"
        );
        // A few more turns, for the connections to read what their clients sent.
        for _ in 0..5 {
            server.step(Some(Duration::from_millis(20))).unwrap();
        }
        server.close();
        let closing = Instant::now();
        let ran = server.run(Some(Duration::from_secs(15)));
        (
            closing.elapsed(),
            server.empty(),
            ran.map_err(|e| format!("{e:?}")),
        )
    });
    let addr = addr_rx.recv_timeout(IO_TIMEOUT).unwrap();
    let mut silent = connect(addr);
    let mut half_hello = connect(addr);
    let hello = client_hello();
    half_hello.write_all(&hello[..hello.len() / 2]).unwrap();
    go_tx.send(2).unwrap();
    let (took, empty, ran) = server.join().expect("the server thread panicked");
    assert_eq!(ran, Ok(()));
    assert!(empty, "run() returned with connections left");
    assert!(
        took < Duration::from_secs(10),
        "run() went on for {took:?} after close()"
    );
    for client in [&mut silent, &mut half_hello] {
        assert!(
            read_to_close(client, IO_TIMEOUT).is_ok(),
            "a client in setup was left open"
        );
    }
}

/// The same for a TLS connection that chose HTTP/2 by ALPN and never sent the preface:
/// the HTTP/2 handshake waited for it regardless of `close()`, until
/// `connection_setup_timeout`.
#[test]
fn close_ends_an_http2_connection_waiting_for_its_preface() {
    let (cert, config) = localhost_cert();
    let (addr_tx, addr_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let options = Options::new()
            .host("127.0.0.1")
            .port(0)
            .tls(Tls::On)
            .tls_config(config)
            .connection_setup_timeout(Duration::from_secs(30))
            .close_timeout(Duration::from_millis(500));
        let server = Server::listen(options, |_srv, _stream| async { Ok(()) }).unwrap();
        addr_tx
            .send(server.local_addr().unwrap().inet().unwrap())
            .unwrap();
        // Step while the client completes its handshake, until it says it has.
        let deadline = Instant::now() + IO_TIMEOUT;
        while go_rx.try_recv().is_err() && Instant::now() < deadline {
            server.step(Some(Duration::from_millis(20))).unwrap();
        }
        for _ in 0..5 {
            server.step(Some(Duration::from_millis(20))).unwrap();
        }
        server.close();
        let closing = Instant::now();
        let ran = server.run(Some(Duration::from_secs(15)));
        (
            closing.elapsed(),
            server.empty(),
            ran.map_err(|e| format!("{e:?}")),
        )
    });
    let addr = addr_rx.recv_timeout(IO_TIMEOUT).unwrap();
    let mut sock = connect(addr);
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(trusting(&cert, &[b"h2"])), name).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).expect("TLS handshake");
    }
    assert_eq!(tls.alpn_protocol(), Some(&b"h2"[..]));
    go_tx.send(()).unwrap();
    let (took, empty, ran) = server.join().expect("the server thread panicked");
    assert_eq!(ran, Ok(()));
    assert!(empty, "run() returned with connections left");
    assert!(
        took < Duration::from_secs(10),
        "run() went on for {took:?} after close()"
    );
}
