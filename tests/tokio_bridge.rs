//! The tokio bridge (feature `tokio`): a handler awaits reqwest, which needs a tokio
//! runtime, through `onstream::bridge::spawn`; the server itself runs on its step loop.
//! Run with `cargo test --features tokio --test tokio_bridge`.

#![cfg(feature = "tokio")]

mod common;

use std::time::Duration;

use common::*;
use onstream::bridge;

/// An upstream on the bridge's runtime: answers every connection with `body`.
fn upstream(body: &'static str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    bridge::handle().spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0; 4096];
                let _ = s.read(&mut buf).await;
                let res = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(res.as_bytes()).await;
            });
        }
    });
    addr
}

#[test]
fn a_handler_awaits_reqwest_through_the_bridge() {
    let up = upstream("from upstream");
    let server = TestServer::start(
        |o| o,
        move || {
            let client = reqwest::Client::new();
            move |_srv, stream: onstream::Stream| {
                let client = client.clone();
                async move {
                    stream.get_headers().await?;
                    let text = bridge::spawn(async move {
                        client
                            .get(format!("http://{up}/"))
                            .send()
                            .await?
                            .text()
                            .await
                    })
                    .await?
                    .map_err(onstream::Error::handler)?;
                    stream.write_headers(&status_headers("200"), false).await?;
                    stream.write_chunk(format!("proxied: {text}"), true).await
                }
            }
        },
    );
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/").body_str(), "proxied: from upstream");
    assert_eq!(client.get("/again").body_str(), "proxied: from upstream");
}

#[test]
fn other_requests_are_served_while_a_bridged_future_waits() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                if req.get(":path") == Some("/slow") {
                    // Made inside the block: tokio's timer exists only on its side.
                    bridge::spawn(async { tokio::time::sleep(Duration::from_millis(500)).await })
                        .await?;
                }
                stream.write_headers(&status_headers("200"), false).await?;
                stream
                    .write_chunk(req.get(":path").unwrap_or("").to_owned(), true)
                    .await
            }
        },
    );
    let mut slow = Client::connect(server.addr());
    slow.send(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n");
    // While /slow waits on tokio's timer, another connection is answered.
    let mut fast = Client::connect(server.addr());
    assert_eq!(fast.get("/fast").body_str(), "/fast");
    assert_eq!(slow.read_response().body_str(), "/slow");
}

#[test]
fn a_panic_on_the_tokio_side_is_an_error_not_a_crash() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                let r = bridge::spawn(async { panic!("boom on tokio") }).await;
                let text = match r {
                    Ok(()) => "no error".to_owned(),
                    Err(e) => format!("error: {e}"),
                };
                stream.write_headers(&status_headers("200"), false).await?;
                stream.write_chunk(text, true).await
            }
        },
    );
    let body = Client::connect(server.addr())
        .get("/")
        .body_str()
        .to_owned();
    assert!(body.starts_with("error:"), "{body}");
}
