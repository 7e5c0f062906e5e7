//! Request bodies as a handler reads them: chunked with trailers, the partial readers
//! (`get_body_chars`, `get_body_until`, `unget`), `Expect: 100-continue`, bodies the
//! handler never reads, and a client that goes away mid-body.

mod common;

use std::{io::Write, sync::mpsc, thread, time::Duration};

use bytes::Bytes;
use common::*;

/// A chunked request body arrives whole, and its trailer fields are given by
/// `get_trailers` after the body.
#[test]
fn chunked_request_body_and_trailers_reach_the_handler() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                let body = stream.get_body_as_string().await?;
                let trailers = stream.get_trailers().await?;
                let checksum = trailers
                    .as_ref()
                    .and_then(|t| t.get("x-checksum"))
                    .unwrap_or("<none>")
                    .to_string();
                respond(&stream, "200", format!("{body}|{checksum}")).await
            }
        },
    );
    let raw = raw_request(
        server.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\nConnection: close\r\n\r\n\
5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nX-Checksum: abc123\r\n\r\n",
    );
    assert_eq!(parse_one(&raw).body_str(), "hello world|abc123");
}

/// A chunked body without trailers gives `get_trailers() == None` (or an empty set).
#[test]
fn chunked_body_without_trailers_has_no_trailer_fields() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                let body = stream.get_body_as_string().await?;
                let n_trailers = stream.get_trailers().await?.map_or(0, |t| t.len());
                respond(&stream, "200", format!("{body}|{n_trailers}")).await
            }
        },
    );
    let raw = raw_request(
        server.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(parse_one(&raw).body_str(), "abc|0");
}

/// `get_body_until` (with and without the pattern), `get_body_chars` and `unget` cut the
/// body at the right places even when it arrives in pieces, and the readers return `None`
/// at the end of the body.
#[test]
fn partial_body_readers_and_unget_cut_the_body_correctly() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                let show = |b: Option<Bytes>| match b {
                    Some(b) => String::from_utf8_lossy(&b).into_owned(),
                    None => "<none>".to_string(),
                };
                let mut out = Vec::new();
                out.push(show(stream.get_body_until(b"\r\n", false).await?));
                out.push(show(stream.get_body_until(b"\r\n", true).await?));
                out.push(show(stream.get_body_chars(3).await?));
                stream.unget(Bytes::from_static(b"XY"));
                out.push(show(stream.get_body_chars(4).await?));
                out.push(show(stream.get_body_until(b"|", true).await?));
                out.push(String::from_utf8_lossy(&stream.get_body_as_bytes().await?).into_owned());
                out.push(show(stream.get_body_chars(1).await?));
                respond(&stream, "200", out.join(",")).await
            }
        },
    );
    let body = b"first line\r\nsecond line\r\nabcdefgh|tail";
    let mut c = Client::connect(server.addr());
    c.send(
        format!(
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // Split inside the first CRLF and inside the `|` search, so patterns straddle reads.
    for piece in [&body[..11], &body[11..30], &body[30..]] {
        thread::sleep(Duration::from_millis(20));
        c.send(piece);
    }
    let res = c.read_response();
    assert_eq!(res.status, 200);
    assert_eq!(
        res.body_str(),
        "first line,second line\r\n,abc,XYde,fgh|,tail,<none>"
    );
}

/// With `Expect: 100-continue`, the server sends `100 Continue` once the handler starts
/// reading the body, and the final response after it.
#[test]
fn expect_100_continue_gets_continue_before_the_body() {
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
    let mut c = Client::connect(server.addr());
    c.send(b"PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response();
    assert_eq!(
        interim.status, 100,
        "expected 100 Continue before sending the body"
    );
    assert_eq!(interim.version, "HTTP/1.1");
    c.send(b"payload");
    let res = c.read_response();
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "payload");
}

/// A handler that answers without reading a small request body does not break
/// keep-alive: the unread body is skipped and the next request is served.
#[test]
fn an_unread_small_body_does_not_block_the_next_keep_alive_request() {
    let server = TestServer::start(|o| o, path_echo);
    let mut c = Client::connect(server.addr());
    c.send(b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nnot read!!!");
    let res = c.read_response();
    assert_eq!(res.body_str(), "/ignored");
    c.send(b"POST /ignored-chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n");
    let res = c.read_response();
    assert_eq!(res.body_str(), "/ignored-chunked");
    let res = c.get("/next");
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "/next");
}

/// An unread body too large to throw away (over 1 MiB) is not read at all: the handler's
/// answer still arrives, then the connection closes instead of reading megabytes.
#[test]
fn an_unread_large_body_closes_the_connection_after_the_answer() {
    let server = TestServer::start(|o| o, path_echo);
    let mut c = Client::connect(server.addr());
    c.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\nonly a little");
    let res = c.read_response();
    assert_eq!(res.body_str(), "/big");
    assert!(
        c.read_to_close(Duration::from_secs(3)).is_ok(),
        "the connection stayed open to read a body nobody wants"
    );
    assert!(server.wait_connections(0, Duration::from_secs(2)));
}

/// `max_discard` sets how much of an unread body is thrown away to keep the connection:
/// at 8 bytes, an 11-byte body the handler ignores ends the connection after the answer.
#[test]
fn max_discard_is_an_option() {
    let server = TestServer::start(|o| o.max_discard(8), path_echo);
    let mut c = Client::connect(server.addr());
    c.send(b"POST /ignored HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nnot read!!!");
    let res = c.read_response();
    assert_eq!(res.body_str(), "/ignored");
    assert!(
        c.read_to_close(Duration::from_secs(3)).is_ok(),
        "the connection stayed open although the body was over max_discard"
    );
}

/// With a tiny `write_buffer_size` a handler's writes wait for the client after every
/// piece, and a large body still arrives whole and in order.
#[test]
fn a_small_write_buffer_delivers_a_large_body_whole() {
    const PIECES: usize = 64;
    const PIECE: usize = 16 * 1024;
    let server = TestServer::start(
        |o| o.write_buffer_size(1024),
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                let mut h = onstream::Headers::new();
                h.append(":status", "200");
                h.append("content-length", (PIECES * PIECE).to_string());
                stream.write_headers(&h, false).await?;
                for i in 0..PIECES {
                    let piece = Bytes::from(vec![b'a' + (i % 26) as u8; PIECE]);
                    stream.write_chunk(piece, i + 1 == PIECES).await?;
                }
                Ok(())
            }
        },
    );
    let mut c = Client::connect(server.addr());
    let res = c.get("/");
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), PIECES * PIECE);
    for (i, piece) in res.body.chunks(PIECE).enumerate() {
        assert!(
            piece.iter().all(|&b| b == b'a' + (i % 26) as u8),
            "piece {i}"
        );
    }
}

/// A client that disconnects in the middle of its body makes the handler's body read fail
/// (it does not hang).
#[test]
fn client_disconnect_mid_body_fails_the_handler_read() {
    let (tx, rx) = mpsc::channel::<Result<usize, String>>();
    let server = TestServer::start(
        |o| o,
        move || {
            move |_srv, stream: onstream::Stream| {
                let tx = tx.clone();
                async move {
                    stream.get_headers().await?;
                    let got = stream.get_body_as_bytes().await;
                    let _ = tx.send(
                        got.map(|b| b.len())
                            .map_err(|e| format!("{:?} {e:?}", e.kind())),
                    );
                    Ok(())
                }
            }
        },
    );
    let mut c = connect(server.addr());
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b")
        .unwrap();
    thread::sleep(Duration::from_millis(50));
    drop(c);
    let outcome = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("the handler's body read hung after the client went away");
    assert!(
        outcome.is_err(),
        "a truncated body read succeeded: {outcome:?}"
    );
    assert!(
        server.wait_connections(0, Duration::from_secs(2)),
        "the connection was not released"
    );
}
