//! WebSocket over real sockets with a tokio-tungstenite client: the upgrade handshake and
//! its refusals, echo of text and binary, subprotocols, ping/pong, the close handshake,
//! the message size limit lua-http lacks (DESIGN.md §4 item 11), bad frames, TLS, HTTP/2
//! and split halves; and with a permessage-deflate client of the test's own (tungstenite
//! has none): negotiation, compression both ways, a deflate bomb.

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

// ===== permessage-deflate (RFC 7692) =====

/// A small WebSocket client with permessage-deflate, on any byte stream: the test's own
/// frame code (tungstenite's client has no deflate), written from RFC 6455 and RFC 7692.
struct DeflateClient<S> {
    io: S,
    compress: flate2::Compress,
    decompress: flate2::Decompress,
}

const SYNC_TAIL: [u8; 4] = [0, 0, 0xFF, 0xFF];

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> DeflateClient<S> {
    fn new(io: S) -> Self {
        DeflateClient {
            io,
            compress: flate2::Compress::new(flate2::Compression::default(), false),
            decompress: flate2::Decompress::new(false),
        }
    }

    fn deflate(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let start = self.compress.total_in();
        loop {
            let done = (self.compress.total_in() - start) as usize;
            out.reserve(1024);
            self.compress
                .compress_vec(&data[done..], &mut out, flate2::FlushCompress::Sync)
                .unwrap();
            if (self.compress.total_in() - start) as usize == data.len()
                && out.len() < out.capacity()
            {
                break;
            }
        }
        assert!(out.ends_with(&SYNC_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    fn inflate(&mut self, data: &[u8]) -> Vec<u8> {
        let input = [data, &SYNC_TAIL[..]].concat();
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let mut pos = 0;
        loop {
            let before = self.decompress.total_in();
            out.reserve(4096);
            self.decompress
                .decompress_vec(&input[pos..], &mut out, flate2::FlushDecompress::Sync)
                .unwrap();
            pos += (self.decompress.total_in() - before) as usize;
            if pos == input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    /// Sends one masked frame as given.
    async fn frame(&mut self, b0: u8, payload: &[u8]) {
        use tokio::io::AsyncWriteExt;
        let mask = [0x37u8, 0xFA, 0x21, 0x3D];
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.io.write_all(&f).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Sends a whole message in one frame, compressed (RSV1) when `compressed`.
    async fn send(&mut self, opcode: u8, data: &[u8], compressed: bool) {
        if compressed {
            let payload = self.deflate(data);
            self.frame(0x80 | 0x40 | opcode, &payload).await;
        } else {
            self.frame(0x80 | opcode, data).await;
        }
    }

    /// The next frame: (first byte, payload as sent, payload decompressed if RSV1).
    async fn recv(&mut self) -> (u8, Vec<u8>, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 2];
        self.io.read_exact(&mut head).await.unwrap();
        assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
        let len = match head[1] & 0x7F {
            126 => self.io.read_u16().await.unwrap() as usize,
            127 => self.io.read_u64().await.unwrap() as usize,
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await.unwrap();
        let data = if head[0] & 0x40 != 0 {
            self.inflate(&payload)
        } else {
            payload.clone()
        };
        (head[0], payload, data)
    }
}

/// Opens a WebSocket over TCP offering `extensions`; the client and the 101's
/// `Sec-WebSocket-Extensions` (if any).
async fn connect_deflate(
    addr: std::net::SocketAddr,
    extensions: &str,
) -> (DeflateClient<tokio::net::TcpStream>, Option<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: {extensions}\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let ext = head
        .lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions: "))
        .map(str::to_owned);
    (DeflateClient::new(tcp), ext)
}

/// A client offering permessage-deflate gets it: its compressed messages (whole, and
/// fragmented with a ping in between) are understood, and the echoes of messages of 64
/// bytes or more come back compressed, with the context kept across messages both ways.
#[test]
fn permessage_deflate_is_negotiated_and_used_both_ways() {
    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    block_on(async {
        let (mut c, ext) =
            connect_deflate(server.addr(), "permessage-deflate; client_max_window_bits").await;
        assert_eq!(ext.as_deref(), Some("permessage-deflate"));
        let text = "Grüße aus dem Test, ".repeat(40);
        for _ in 0..3 {
            c.send(1, text.as_bytes(), true).await;
            let (b0, wire, data) = c.recv().await;
            assert_eq!(b0, 0x80 | 0x40 | 1, "a compressed text frame");
            assert!(
                wire.len() < text.len() / 4,
                "{} bytes on the wire",
                wire.len()
            );
            assert_eq!(data, text.as_bytes());
        }
        // Short messages come back uncompressed; uncompressed ones are fine too.
        c.send(2, b"tiny", false).await;
        assert_eq!(c.recv().await, (0x82, b"tiny".to_vec(), b"tiny".to_vec()));
        c.send(1, b"small but compressed", true).await;
        let (b0, _, data) = c.recv().await;
        assert_eq!((b0, &data[..]), (0x81, &b"small but compressed"[..]));

        // A fragmented compressed message: RSV1 on the first frame only, a ping between.
        let big: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let deflated = c.deflate(&big);
        let (a, b) = deflated.split_at(deflated.len() / 2);
        c.frame(0x40 | 2, a).await;
        c.frame(0x80 | 9, b"between").await;
        c.frame(0x80, b).await;
        assert_eq!(c.recv().await.0, 0x8A, "the pong comes first");
        let (b0, _, data) = c.recv().await;
        assert_eq!(b0, 0xC2);
        assert_eq!(data, big);
    });
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// Offers with unknown or invalid parameters are declined and the next acceptable one is
/// taken; no-context-takeover and window sizes are answered; a server with deflate off
/// answers no extension, and then a frame with RSV1 is a protocol error (1002).
#[test]
fn deflate_offers_are_negotiated_per_rfc_7692() {
    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    block_on(async {
        let cases = [
            (
                "permessage-deflate; foo=1, permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
                Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10"),
            ),
            (
                "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
                Some("permessage-deflate; client_no_context_takeover"),
            ),
            ("permessage-deflate; server_max_window_bits=7", None),
        ];
        for (offer, answer) in cases {
            let (mut c, ext) = connect_deflate(server.addr(), offer).await;
            assert_eq!(ext.as_deref(), answer, "for {offer:?}");
            if answer.is_some() {
                let text = "abcdefgh".repeat(64);
                for _ in 0..2 {
                    c.send(1, text.as_bytes(), true).await;
                    if offer.contains("client_no_context_takeover") {
                        // As promised: a fresh context for each message.
                        c.compress.reset();
                    }
                    let (_, _, data) = c.recv().await;
                    assert_eq!(data, text.as_bytes());
                    if offer.contains("server_no_context_takeover") {
                        // A fresh context for each message on our side too.
                        c.decompress.reset(false);
                    }
                }
            }
        }
    });
    let off = TestServer::start(|o| o, || echo(|| websocket::Options::new().deflate(false)));
    block_on(async {
        let (mut c, ext) = connect_deflate(off.addr(), "permessage-deflate").await;
        assert_eq!(ext, None);
        c.send(1, "x".repeat(100).as_bytes(), true).await;
        let (b0, payload, _) = c.recv().await;
        assert_eq!(b0, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
    });
}

/// A compressed message that inflates past `max_message_size` (a zip bomb: 16 MiB of
/// zeros in about 16 KiB) is refused with 1009 before it is inflated in memory.
#[test]
fn a_deflate_bomb_is_refused_with_1009() {
    let server = TestServer::start(
        |o| o,
        || echo(|| websocket::Options::new().max_message_size(1 << 20)),
    );
    block_on(async {
        let (mut c, ext) = connect_deflate(server.addr(), "permessage-deflate").await;
        assert!(ext.is_some());
        let bomb = c.deflate(&vec![0u8; 16 << 20]);
        assert!(bomb.len() < 1 << 20);
        c.send(2, &[], false).await;
        assert_eq!(c.recv().await.0, 0x82);
        c.frame(0x80 | 0x40 | 2, &bomb).await;
        let (b0, payload, _) = c.recv().await;
        assert_eq!(b0, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1009);
    });
    assert!(server.wait_connections(0, Duration::from_secs(2)));
}

/// Text is checked as it arrives: a message whose first fragment is already not UTF-8
/// is refused with 1007 without waiting for its end.
#[test]
fn invalid_utf8_fails_at_the_first_fragment() {
    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    block_on(async {
        let (mut c, _) = connect_deflate(server.addr(), "foo").await;
        c.frame(0x01, b"fine so far \xC0\xAF").await;
        let (b0, payload, _) = c.recv().await;
        assert_eq!(b0, 0x88);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1007);
    });
}

/// permessage-deflate over TLS and over HTTP/2 (the 200 to the extended CONNECT carries
/// the extension).
#[test]
fn permessage_deflate_over_tls_and_http2() {
    let (cert, config) = localhost_cert();
    let tls_server = TestServer::start(
        move |o| o.tls(onstream::Tls::On).tls_config(config),
        || echo(websocket::Options::new),
    );
    let addr = tls_server.addr();
    block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let client = trusting(&cert, &[b"http/1.1"]);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(
            b"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
        .await
        .unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(tls.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.contains("\r\nsec-websocket-extensions: permessage-deflate\r\n"),
            "{head}"
        );
        let mut c = DeflateClient::new(tls);
        let text = "over tls, compressed. ".repeat(20);
        c.send(1, text.as_bytes(), true).await;
        let (b0, _, data) = c.recv().await;
        assert_eq!((b0, data), (0xC1, text.into_bytes()));
    });

    let server = TestServer::start(|o| o, || echo(websocket::Options::new));
    let addr = server.addr();
    block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send_request, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut send_request = send_request.ready().await.unwrap();
        for _ in 0..200 {
            if send_request.is_extended_connect_protocol_enabled() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let req = http::Request::builder()
            .method("CONNECT")
            .uri(format!("http://{addr}/echo"))
            .header("sec-websocket-version", "13")
            .header("sec-websocket-extensions", "permessage-deflate")
            .extension(h2::ext::Protocol::from("websocket"))
            .body(())
            .unwrap();
        let (response, send) = send_request.send_request(req, false).unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("sec-websocket-extensions").unwrap(),
            "permessage-deflate"
        );
        let mut c = DeflateClient::new(ClientTunnel {
            recv: response.into_body(),
            send,
            pending: bytes::Bytes::new(),
        });
        let data = vec![42u8; 3000];
        c.send(2, &data, true).await;
        let (b0, wire, got) = c.recv().await;
        assert_eq!(b0, 0xC2);
        assert!(wire.len() < 100);
        assert_eq!(got, data);
    });
}

/// `split` gives halves that two tasks use at once: a writer task sends while the
/// handler reads, and pings are still answered.
#[test]
fn split_halves_work_in_two_tasks() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| async move {
                let ws = websocket::accept(&stream, websocket::Options::new()).await?;
                let (mut reader, mut writer) = ws.split();
                let writing = onstream::Controller::current().spawn(async move {
                    for i in 0..3 {
                        writer.send(Message::text(format!("tick {i}"))).await?;
                        onstream::sleep(Duration::from_millis(20)).await;
                    }
                    Ok::<_, onstream::Error>(writer)
                });
                let mut n_texts = 0;
                while let Some(msg) = reader.recv().await? {
                    if msg.is_text() {
                        n_texts += 1;
                    }
                }
                let mut writer = writing.await?;
                // The close handshake is over: nothing more may be sent.
                assert!(writer.send(Message::text("late")).await.is_err());
                assert_eq!(n_texts, 1);
                Ok(())
            }
        },
    );
    block_on(async {
        let mut ws = connect_ws(server.addr(), None).await;
        ws.send(M::Ping(b"p".to_vec().into())).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(ws.next().await.unwrap().unwrap());
        }
        assert!(got.contains(&M::Pong(b"p".to_vec().into())), "{got:?}");
        for i in 0..3 {
            assert!(got.contains(&M::text(format!("tick {i}"))), "{got:?}");
        }
        ws.send(M::text("one")).await.unwrap();
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    });
    assert!(server.wait_connections(0, Duration::from_secs(2)));
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}
