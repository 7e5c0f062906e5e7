//! HTTP/1.1 pipelining: requests sent back to back before any response are answered in
//! request order, whatever order their handlers finish in.

mod common;

use std::time::Duration;

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
