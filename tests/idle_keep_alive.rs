//! Idle keep-alive connections give their read and write buffers back between requests
//! (issue 7, "Memory") and read the next request through a buffer on the stack: every kind
//! of request that follows an idle pause must still be read whole, whatever its size and
//! however it is split.

mod common;

use std::{thread::sleep, time::Duration};

use common::*;

/// Long enough for the server to have answered, flushed and gone back to waiting.
const PAUSE: Duration = Duration::from_millis(50);

/// A server that answers with the request's path and the size of its body.
fn start() -> TestServer {
    TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                let path = req.get(":path").unwrap_or("").to_string();
                let n = stream.get_body_as_bytes().await?.len();
                respond(&stream, "200", format!("{path} {n}")).await
            }
        },
    )
}

#[test]
fn requests_after_idle_pauses_are_answered_on_the_same_connection() {
    let server = start();
    let mut client = Client::connect(server.addr());
    for i in 0..5 {
        let res = client.get(&format!("/{i}"));
        assert_eq!(
            (res.status, res.body_str()),
            (200, format!("/{i} 0").as_str())
        );
        sleep(PAUSE);
    }
    assert_eq!(server.connections(), 1);
}

#[test]
fn a_request_head_split_across_writes_after_an_idle_pause_is_read_whole() {
    let server = start();
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/first").body_str(), "/first 0");
    sleep(PAUSE);
    // The first byte arrives alone, then the rest: the stack read hands over one byte
    // and the buffer must grow from there.
    let head = b"GET /second HTTP/1.1\r\nHost: test\r\nX-Pad: abcdefgh\r\n\r\n";
    for part in [&head[..1], &head[1..20], &head[20..]] {
        client.send(part);
        sleep(Duration::from_millis(10));
    }
    assert_eq!(client.read_response().body_str(), "/second 0");
}

#[test]
fn a_request_larger_than_one_read_after_an_idle_pause_is_read_whole() {
    let server = start();
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/first").body_str(), "/first 0");
    sleep(PAUSE);
    // A 40 KiB head (one read fills the 16 KiB stack buffer) and a 100 KiB body in one
    // write.
    let pad = "a".repeat(40 * 1024);
    let body = vec![b'b'; 100 * 1024];
    let mut request = format!(
        "POST /big HTTP/1.1\r\nHost: test\r\nX-Pad: {pad}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    client.send(&request);
    assert_eq!(
        client.read_response().body_str(),
        format!("/big {}", body.len())
    );
    sleep(PAUSE);
    assert_eq!(client.get("/after").body_str(), "/after 0");
}

#[test]
fn pipelined_requests_after_an_idle_pause_are_answered_in_order() {
    let server = start();
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/first").body_str(), "/first 0");
    sleep(PAUSE);
    let mut batch = Vec::new();
    for i in 0..8 {
        batch.extend_from_slice(
            format!(
                "POST /{i} HTTP/1.1\r\nHost: test\r\nContent-Length: {i}\r\n\r\n{}",
                "x".repeat(i)
            )
            .as_bytes(),
        );
    }
    client.send(&batch);
    for i in 0..8 {
        assert_eq!(client.read_response().body_str(), format!("/{i} {i}"));
    }
}
