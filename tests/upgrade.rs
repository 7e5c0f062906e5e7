//! Connection upgrades: after a `101 Switching Protocols` the handler takes the socket
//! with `take_socket` and speaks raw bytes over it.

mod common;

use std::{io::Write, time::Duration};

use common::*;
use onstream::{Headers, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An upgrade handler: answers `upgrade: echo` requests with 101, takes the socket and
/// echoes every byte until EOF; other requests get their path back.
fn echo_upgrade() -> impl FnMut(
    onstream::ServerHandle,
    Stream,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = onstream::Result<()>>>,
> {
    |_srv, stream| {
        Box::pin(async move {
            let req = stream.get_headers().await?;
            if req.get("upgrade") != Some("echo") {
                let path = req.get(":path").unwrap_or("").to_string();
                return respond(&stream, "200", path).await;
            }
            let mut h = Headers::new();
            h.append(":status", "101");
            h.append("connection", "upgrade");
            h.append("upgrade", "echo");
            stream.write_headers(&h, false).await?;
            let mut socket = stream.take_socket()?;
            let mut buf = [0u8; 1024];
            loop {
                let n = socket.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                socket.write_all(&buf[..n]).await?;
                socket.flush().await?;
            }
            socket.shutdown().await?;
            Ok(())
        })
    }
}

const UPGRADE_REQUEST: &[u8] =
    b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";

/// After writing a 101, the handler's taken socket carries raw bytes both ways, and its
/// shutdown reaches the client as EOF.
#[test]
fn take_socket_after_101_echoes_raw_bytes() {
    let server = TestServer::start(|o| o, echo_upgrade);
    let mut c = Client::connect(server.addr());
    c.send(UPGRADE_REQUEST);
    let res = c.read_response();
    assert_eq!(res.status, 101);
    assert_eq!(res.header("upgrade"), Some("echo"));
    assert!(res.header("content-length").is_none() && res.header("transfer-encoding").is_none());

    for msg in [&b"ping"[..], b"not HTTP at all\r\n\r\n", b"\x00\xff binary"] {
        c.send(msg);
        let mut got = vec![0u8; msg.len()];
        std::io::Read::read_exact(&mut c.reader, &mut got).expect("echo");
        assert_eq!(got, msg);
    }
    c.shutdown_write();
    let rest = c
        .read_to_close(Duration::from_secs(2))
        .expect("the upgraded socket was not closed after EOF");
    assert!(
        rest.is_empty(),
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// Bytes the client sent right behind the upgrade request, before seeing the 101, are
/// not lost: they come first out of the taken socket.
#[test]
fn bytes_sent_right_after_the_upgrade_request_reach_the_taken_socket() {
    let server = TestServer::start(|o| o, echo_upgrade);
    let mut c = Client::connect(server.addr());
    let mut both = UPGRADE_REQUEST.to_vec();
    both.extend_from_slice(b"early bytes");
    c.writer.write_all(&both).unwrap();
    let res = c.read_response();
    assert_eq!(res.status, 101);
    let mut got = vec![0u8; b"early bytes".len()];
    std::io::Read::read_exact(&mut c.reader, &mut got).expect("echo of the early bytes");
    assert_eq!(got, b"early bytes");
}

/// A taken socket no longer counts against keep-alive: the server does not read a next
/// request from it, and other connections are served while the upgraded one stays open.
#[test]
fn an_open_upgraded_connection_does_not_block_others() {
    let server = TestServer::start(|o| o, echo_upgrade);
    let mut upgraded = Client::connect(server.addr());
    upgraded.send(UPGRADE_REQUEST);
    assert_eq!(upgraded.read_response().status, 101);
    // Looks like a request, but after the upgrade it is echo payload.
    upgraded.send(b"GET / HTTP/1.1\r\n\r\n");
    let mut got = vec![0u8; 18];
    std::io::Read::read_exact(&mut upgraded.reader, &mut got).unwrap();
    assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n");

    let other = parse_one(&raw_request(
        server.addr(),
        b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ));
    assert_eq!(other.body_str(), "/plain");
}

/// A plain connection's taken socket can leave the loop as the connection's own
/// descriptor (lua-http's `take_socket` gives a cqueues socket so), with the bytes read
/// past the request beside it: its peer is the client, and what is written to it arrives.
#[test]
fn a_plain_taken_socket_goes_over_as_its_own_descriptor() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: Stream| {
                Box::pin(async move {
                    let mut h = Headers::new();
                    h.append(":status", "101");
                    h.append("connection", "upgrade");
                    h.append("upgrade", "echo");
                    stream.write_headers(&h, false).await?;
                    let (fd, buffered) = stream
                        .take_socket()?
                        .into_socket()
                        .expect("a cleartext connection gives its socket");
                    let mut sock = std::net::TcpStream::from(fd);
                    let peer = sock.peer_addr()?;
                    // Small enough for the send buffer: the non-blocking socket takes it.
                    write!(sock, "{peer} ")?;
                    sock.write_all(&buffered)?;
                    Ok(())
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = onstream::Result<()>>>>
            }
        },
    );
    let mut c = Client::connect(server.addr());
    let local = c.reader.get_ref().local_addr().unwrap();
    let mut both = UPGRADE_REQUEST.to_vec();
    both.extend_from_slice(b"early");
    c.writer.write_all(&both).unwrap();
    let res = c.read_response();
    assert_eq!(res.status, 101);
    let rest = c
        .read_to_close(Duration::from_secs(5))
        .expect("the descriptor was not closed when dropped");
    let rest = String::from_utf8(rest).unwrap();
    let (peer, buffered) = rest.split_once(' ').expect("the peer's address");
    assert_eq!(peer, local.to_string());
    // Whatever part of "early" the server read with the head comes beside the socket.
    assert!("early".starts_with(buffered), "{buffered:?}");
}
