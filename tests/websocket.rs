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
use rustls::pki_types::{PrivateKeyDer, ServerName};
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
    let mut c = connect(server.addr());
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
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
    let config = onstream::tls::config_from_der(vec![cert.clone()], key).unwrap();
    let server = TestServer::start(
        move |o| o.tls(onstream::Tls::On).tls_config(config),
        || echo(websocket::Options::new),
    );
    let addr = server.addr();
    block_on(async move {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
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
