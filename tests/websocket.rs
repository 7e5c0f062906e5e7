//! WebSocket over real sockets with a tokio-tungstenite client: the upgrade handshake and
//! its refusals, echo of text and binary, subprotocols, ping/pong, the close handshake,
//! the message size limit lua-http lacks (DESIGN.md §4 item 11), bad frames, and TLS.

mod common;

use std::{
    io::{Read, Write},
    sync::Arc,
    time::Duration,
};

use common::*;
use futures_util::{SinkExt, StreamExt};
use onstream::{
    websocket::{self, Message},
    Stream,
};
use rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite::{
    client::IntoClientRequest, protocol::frame::coding::CloseCode, Message as M,
};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
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

/// An echo handler with the given WebSocket options.
fn echo(
    make_options: fn() -> websocket::Options,
) -> impl FnMut(
    onstream::ServerHandle,
    Stream,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = onstream::Result<()>>>> {
    move |_srv, stream| {
        Box::pin(async move {
            let mut ws = websocket::accept(&stream, make_options()).await?;
            if let Some(p) = ws.protocol() {
                ws.send(Message::text(format!("protocol {p}"))).await?;
            }
            while let Some(msg) = ws.recv().await? {
                if msg.is_text() || msg.is_binary() {
                    ws.send(msg).await?;
                }
            }
            Ok(())
        })
    }
}

async fn connect_ws(
    addr: std::net::SocketAddr,
    protocols: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}/echo").into_client_request().unwrap();
    if let Some(p) = protocols {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, _response) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("WebSocket handshake");
    ws
}

/// Text and binary messages come back as sent; a ping gets its pong; a close from the
/// client ends the handler's receive loop.
#[test]
fn text_binary_and_ping_are_echoed_and_close_ends_cleanly() {
    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    block_on(async {
        let mut ws = connect_ws(server.addr(), None).await;
        ws.send(M::text("hello")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), M::text("hello"));
        ws.send(M::binary(vec![0u8, 1, 2, 255])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            M::binary(vec![0u8, 1, 2, 255])
        );
        ws.send(M::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            M::Pong(b"are you there".to_vec().into())
        );
        ws.close(None).await.unwrap();
        // The server answers the close; the stream then ends.
        while let Some(msg) = ws.next().await {
            if let Ok(M::Close(_)) | Err(_) = msg {
                break;
            }
        }
    });
    assert!(server.wait_connections(0, Duration::from_secs(2)));
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// The handler's chooser picks a subprotocol from the client's list and the 101 names it.
#[test]
fn the_handler_chooses_the_subprotocol() {
    let server = TestServer::start(
        |o| o,
        || {
            echo(|| {
                websocket::Options::new().protocols(|offered| {
                    offered
                        .iter()
                        .find(|p| **p == "chat")
                        .map(|p| p.to_string())
                })
            })
        },
    );
    block_on(async {
        let mut ws = connect_ws(server.addr(), Some("superchat, chat")).await;
        assert_eq!(ws.next().await.unwrap().unwrap(), M::text("protocol chat"));
    });
}

/// A message larger than `max_message_size` closes the connection with 1009 (message
/// too big) instead of being buffered without bound.
#[test]
fn a_message_over_the_limit_is_refused_with_1009() {
    let server = TestServer::start(
        |o| o,
        || echo(|| websocket::Options::new().max_message_size(1024)),
    );
    block_on(async {
        let mut ws = connect_ws(server.addr(), None).await;
        ws.send(M::binary(vec![7u8; 512])).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), M::binary(vec![7u8; 512]));
        let _ = ws.send(M::binary(vec![7u8; 4096])).await;
        let mut code = None;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(M::Close(frame)) => {
                    code = frame.map(|f| f.code);
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        assert_eq!(code, Some(CloseCode::Size));
    });
    assert!(server.wait_connections(0, Duration::from_secs(2)));
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// Upgrade requests that are not WebSocket version 13 GETs with a valid key are refused
/// with a clear status, and the handler's `accept` returns an error.
#[test]
fn bad_upgrades_are_refused_with_400_or_426() {
    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    let base = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    let cases: [(&str, u16); 5] = [
        ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n", 400),
        (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            426,
        ),
        ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 426),
        (
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n",
            400,
        ),
        (
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            400,
        ),
    ];
    for (extra, status) in cases {
        let raw = raw_request(server.addr(), format!("{base}{extra}\r\n").as_bytes());
        let res = parse_one(&raw);
        assert_eq!(res.status, status, "for {extra:?}");
        if status == 426 {
            assert_eq!(res.header("sec-websocket-version"), Some("13"));
        }
    }
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// A text frame that is not UTF-8 closes the connection with 1007 (invalid data); the
/// server goes on.
#[test]
fn invalid_utf8_text_is_closed_with_1007() {
    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    let (mut c, head) = raw_websocket(server.addr());
    assert!(
        head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
        "{head}"
    );
    // A masked text frame (FIN, opcode 1) holding 0xFF 0xFE, which is not UTF-8.
    let mask = [1u8, 2, 3, 4];
    let payload = [0xFFu8, 0xFE];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.write_all(&frame).unwrap();
    let rest = read_to_close(&mut c, Duration::from_secs(3)).expect("not closed");
    // The server's close frame: opcode 8, then the code 1007 big-endian.
    assert!(rest.len() >= 4 && rest[0] == 0x88, "{rest:?}");
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1007);
    // The server goes on; a plain GET to this WebSocket-only handler gets 426.
    assert_eq!(hyper_get(server.addr(), "/").status, 426);
}

/// WebSocket works over TLS (`wss://`) with the same handler.
#[test]
fn websocket_over_tls() {
    let (cert, config) = localhost_cert();
    let server = TestServer::start(
        move |o| o.tls(onstream::Tls::On).tls_config(config),
        || echo(websocket::Options::new),
    );
    let addr = server.addr();
    block_on(async move {
        let client = trusting(&cert, &[b"http/1.1"]);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let req = format!("wss://localhost:{}/echo", addr.port())
            .into_client_request()
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await.unwrap();
        ws.send(M::text("over tls")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), M::text("over tls"));
    });
}

/// A client side of an HTTP/2 stream as a byte stream, for tungstenite (the test's
/// mirror of the server's tunnel).
struct ClientTunnel {
    recv: h2::RecvStream,
    send: h2::SendStream<bytes::Bytes>,
    pending: bytes::Bytes,
}

impl tokio::io::AsyncRead for ClientTunnel {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use bytes::Buf;
        use std::task::Poll;
        if self.pending.is_empty() {
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Err(std::io::Error::other(e)));
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for ClientTunnel {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        // Small test messages fit the initial window; no capacity dance needed.
        let data = bytes::Bytes::copy_from_slice(buf);
        std::task::Poll::Ready(
            self.send
                .send_data(data, false)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let _ = self.send.send_data(bytes::Bytes::new(), true);
        std::task::Poll::Ready(Ok(()))
    }
}

/// WebSocket over HTTP/2 (RFC 8441): the server advertises SETTINGS_ENABLE_CONNECT_PROTOCOL,
/// an extended CONNECT with `:protocol websocket` gets a 200, and messages echo over that
/// one stream while the connection's other streams go on.
#[test]
fn websocket_over_http2_extended_connect() {
    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    let addr = server.addr();
    block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send_request, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut send_request = send_request.ready().await.unwrap();
        // The server's SETTINGS arrive just after the handshake: wait for them.
        for _ in 0..200 {
            if send_request.is_extended_connect_protocol_enabled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            send_request.is_extended_connect_protocol_enabled(),
            "the server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL"
        );
        let req = http::Request::builder()
            .method("CONNECT")
            .uri(format!("http://{addr}/echo"))
            .header("sec-websocket-version", "13")
            .extension(h2::ext::Protocol::from("websocket"))
            .body(())
            .unwrap();
        let (response, send) = send_request.send_request(req, false).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let tunnel = ClientTunnel {
            recv: response.into_body(),
            send,
            pending: bytes::Bytes::new(),
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            tunnel,
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        ws.send(M::text("over h2")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), M::text("over h2"));
        ws.send(M::binary(vec![9u8; 3000])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            M::binary(vec![9u8; 3000])
        );
        ws.close(None).await.unwrap();
    });
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// Completes a WebSocket handshake on a raw socket; returns it and the 101 head.
fn raw_websocket(addr: std::net::SocketAddr) -> (std::net::TcpStream, String) {
    let mut c = connect(addr);
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    (c, head)
}

/// With `ping_interval`, a silent client is pinged, and dropped when it stays silent for
/// another interval (a half-open connection would otherwise hold its handler forever).
#[test]
fn a_silent_client_is_pinged_then_dropped() {
    let server = TestServer::start(
        |o| o,
        || echo(|| websocket::Options::new().ping_interval(Duration::from_millis(150))),
    );
    let (mut c, _) = raw_websocket(server.addr());
    let start = std::time::Instant::now();
    let rest = read_to_close(&mut c, Duration::from_secs(3)).expect("never dropped");
    let waited = start.elapsed();
    // A ping frame (FIN + opcode 9) came first.
    assert_eq!(rest.first(), Some(&0x89), "{rest:?}");
    assert!(
        waited >= Duration::from_millis(250),
        "dropped after {waited:?}"
    );
    assert!(server.wait_connections(0, Duration::from_secs(1)));
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// `close()` waits for the client's close frame at most `close_timeout`; a client that
/// never answers is dropped then.
#[test]
fn close_gives_up_on_a_client_that_never_answers() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let options = websocket::Options::new().close_timeout(Duration::from_millis(200));
                let mut ws = websocket::accept(&stream, options).await?;
                ws.close(1001, "going away").await
            }
        },
    );
    let (mut c, _) = raw_websocket(server.addr());
    let start = std::time::Instant::now();
    let rest = read_to_close(&mut c, Duration::from_secs(3)).expect("never dropped");
    assert_eq!(
        rest.first(),
        Some(&0x88),
        "a close frame comes first: {rest:?}"
    );
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1001);
    assert!(start.elapsed() >= Duration::from_millis(150));
    assert!(server.wait_connections(0, Duration::from_secs(1)));
}
