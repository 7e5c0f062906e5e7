//! Bodies to and from files: `save_body_to_file`, `write_body_from_file` (with and without
//! a length, with and without a handler-set `content-length`), and `shutdown` of a
//! response whose handler wrote only its head.

mod common;

use std::path::PathBuf;

use common::*;
use onstream::{Headers, ServerHandle, Stream};

/// `n` bytes of a deterministic pseudo-random pattern (an LCG), so a misplaced or repeated
/// piece shows up in a comparison.
fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// Writes `data` to a fresh temp file and returns its path.
fn temp_file_with(tag: &str, data: &[u8]) -> PathBuf {
    let path = temp_path(tag);
    std::fs::write(&path, data).unwrap();
    path
}

/// Asserts `body == expected` without printing megabytes when they differ.
fn assert_same_bytes(body: &[u8], expected: &[u8], what: &str) {
    assert_eq!(body.len(), expected.len(), "{what}: length differs");
    if let Some(at) = body.iter().zip(expected).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at offset {at}");
    }
}

/// A server whose handler sends `file` with `write_body_from_file(file, len)` after a
/// `200` head that carries `content-length` when `set_length` is given.
fn file_server(path: PathBuf, len: Option<u64>, set_length: Option<u64>) -> TestServer {
    TestServer::start(
        |o| o,
        move || {
            move |_srv: ServerHandle, stream: Stream| {
                let path = path.clone();
                async move {
                    stream.get_headers().await?;
                    let mut h = status_headers("200");
                    if let Some(n) = set_length {
                        h.append("content-length", n.to_string());
                    }
                    stream.write_headers(&h, false).await?;
                    let file = std::fs::File::open(&path)?;
                    stream.write_body_from_file(file, len).await
                }
            }
        },
    )
}

/// `save_body_to_file` stores a 3 MiB chunked upload (chunks of uneven sizes) byte for
/// byte, and returns the number of bytes it wrote.
#[test]
fn save_body_to_file_stores_a_chunked_upload_byte_exact() {
    const SIZE: usize = 3 * 1024 * 1024;
    let data = pattern(SIZE);
    let dest = temp_path("upload");
    let server = {
        let dest = dest.clone();
        TestServer::start(
            |o| o,
            move || {
                move |_srv: ServerHandle, stream: Stream| {
                    let dest = dest.clone();
                    async move {
                        stream.get_headers().await?;
                        let mut file = std::fs::File::create(&dest)?;
                        let n = stream.save_body_to_file(&mut file).await?;
                        file.sync_all()?;
                        respond(&stream, "200", n.to_string()).await
                    }
                }
            },
        )
    };

    let mut client = Client::connect(server.addr());
    client.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let sizes = [1usize, 4096, 65_535, 100_000, 7, 300_001, 1 << 20];
    let (mut at, mut i) = (0, 0);
    while at < SIZE {
        let n = sizes[i % sizes.len()].min(SIZE - at);
        let mut chunk = format!("{n:x}\r\n").into_bytes();
        chunk.extend_from_slice(&data[at..at + n]);
        chunk.extend_from_slice(b"\r\n");
        client.send(&chunk);
        at += n;
        i += 1;
    }
    client.send(b"0\r\n\r\n");
    let res = client.read_response();
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), SIZE.to_string(), "bytes saved");

    let saved = std::fs::read(&dest).expect("read the saved file");
    assert_same_bytes(&saved, &data, "saved file");
    let _ = std::fs::remove_file(&dest);
}

/// `write_body_from_file(file, Some(len))` for a `len` that fits one piece (64 KiB) sends
/// exactly the file's first `len` bytes, written whole: `content-length: len`, no chunks.
#[test]
fn write_body_from_file_with_a_short_length_sends_that_prefix_with_content_length() {
    let data = pattern(100_000);
    let path = temp_file_with("short-prefix", &data);
    let len = 10_000;
    let server = file_server(path.clone(), Some(len as u64), None);

    let mut client = Client::connect(server.addr());
    let res = client.get("/");
    assert_eq!(res.status, 200);
    assert!(!res.chunked, "a body written whole was chunked");
    assert_eq!(res.header("content-length"), Some("10000"));
    assert_same_bytes(&res.body, &data[..len], "body");
    // The framing was right: the connection carries a next request.
    assert_same_bytes(&client.get("/again").body, &data[..len], "second body");
    let _ = std::fs::remove_file(&path);
}

/// `write_body_from_file(file, Some(len))` over several 64 KiB pieces, after a head where
/// the handler set `content-length: len`, sends the first `len` bytes with that length and
/// no chunked framing.
#[test]
fn write_body_from_file_with_handler_content_length_sends_exactly_len_bytes() {
    let data = pattern(300_000);
    let path = temp_file_with("long-prefix-cl", &data);
    let len = 200_000;
    let server = file_server(path.clone(), Some(len as u64), Some(len as u64));

    let mut client = Client::connect(server.addr());
    let res = client.get("/");
    assert_eq!(res.status, 200);
    assert!(!res.chunked, "chunked despite the handler's content-length");
    assert_eq!(res.header("transfer-encoding"), None);
    assert_eq!(res.header("content-length"), Some("200000"));
    assert_same_bytes(&res.body, &data[..len], "body");
    assert_same_bytes(&client.get("/again").body, &data[..len], "second body");
    let _ = std::fs::remove_file(&path);
}

/// `write_body_from_file(file, Some(len))` of more than one 64 KiB piece without a
/// handler-set length: the length is known, so it goes out as the `content-length`
/// (by sendfile over cleartext HTTP/1.1) with exactly the first `len` bytes.
#[test]
fn write_body_from_file_with_a_long_length_and_no_header_declares_that_length() {
    let data = pattern(300_000);
    let path = temp_file_with("long-prefix-chunked", &data);
    let len = 200_000;
    let server = file_server(path.clone(), Some(len as u64), None);

    let mut client = Client::connect(server.addr());
    let res = client.get("/");
    assert_eq!(res.status, 200);
    assert!(!res.chunked);
    assert_eq!(res.header("content-length"), Some("200000"));
    assert_same_bytes(&res.body, &data[..len], "body");
    assert_same_bytes(&client.get("/again").body, &data[..len], "second body");
    let _ = std::fs::remove_file(&path);
}

/// `write_body_from_file(file, None)` sends the whole file, to its end.
#[test]
fn write_body_from_file_without_a_length_sends_the_whole_file() {
    let data = pattern(150_001);
    let path = temp_file_with("whole", &data);
    let server = file_server(path.clone(), None, None);

    let mut client = Client::connect(server.addr());
    let res = client.get("/");
    assert_eq!(res.status, 200);
    assert_same_bytes(&res.body, &data, "body");
    assert_same_bytes(&client.get("/again").body, &data, "second body");
    let _ = std::fs::remove_file(&path);
}

/// A handler that wrote only the response head, then called `shutdown()`, gives the
/// client a complete (empty-bodied) response, and the connection serves the next
/// keep-alive request.
#[test]
fn shutdown_after_headers_only_completes_the_response_and_keeps_the_connection() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv: ServerHandle, stream: Stream| async move {
                let req = stream.get_headers().await?;
                if req.get(":path") == Some("/next") {
                    return respond(&stream, "200", "next").await;
                }
                let mut h = Headers::new();
                h.append(":status", "200");
                h.append("x-only", "headers");
                stream.write_headers(&h, false).await?;
                stream.shutdown().await
            }
        },
    );
    let mut client = Client::connect(server.addr());
    let res = client.get("/headers-only");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-only"), Some("headers"));
    assert!(res.body.is_empty(), "body: {:?}", res.body);
    assert!(!res.closes(), "shutdown closed the connection");

    let next = client.get("/next");
    assert_eq!(next.status, 200);
    assert_eq!(next.body_str(), "next");
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// `shutdown()` after part of a body ends the body cleanly (a terminated chunked
/// response), and the connection serves the next keep-alive request.
#[test]
fn shutdown_mid_body_ends_the_body_and_keeps_the_connection() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv: ServerHandle, stream: Stream| async move {
                let req = stream.get_headers().await?;
                if req.get(":path") == Some("/next") {
                    return respond(&stream, "200", "next").await;
                }
                stream.write_headers(&status_headers("200"), false).await?;
                stream.write_chunk(b"part one, ", false).await?;
                stream.write_chunk(b"part two", false).await?;
                stream.shutdown().await
            }
        },
    );
    let mut client = Client::connect(server.addr());
    let res = client.get("/partial");
    assert_eq!(res.status, 200);
    assert!(res.chunked);
    assert_eq!(res.body_str(), "part one, part two");
    assert_eq!(client.get("/next").body_str(), "next");
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}

/// A large file goes out by sendfile(2) on a cleartext connection: a client that pauses
/// mid-body (so the socket fills and the server must wait for it) still gets every byte,
/// and the connection serves the next request.
#[test]
fn a_large_file_reaches_a_client_that_pauses_and_the_connection_goes_on() {
    let data = pattern(12 << 20);
    let path = temp_file_with("pausing-reader", &data);
    let server = file_server(path.clone(), None, None);
    let mut client = Client::connect(server.addr());
    client.send(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let res = client.read_response();
    assert_eq!(res.header("content-length"), Some("12582912"));
    assert_same_bytes(&res.body, &data, "paused body");
    assert_same_bytes(&client.get("/again").body, &data, "second body");
    let _ = std::fs::remove_file(&path);
}

/// sendfile(2) honours `send_timeout`: a client that never reads a large file is closed.
#[test]
fn a_client_that_never_reads_a_sent_file_is_closed_after_send_timeout() {
    let data = pattern(48 << 20);
    let path = temp_file_with("stalled-reader", &data);
    let server = {
        let path = path.clone();
        TestServer::start(
            |o| o.send_timeout(std::time::Duration::from_millis(300)),
            move || {
                move |_srv: ServerHandle, stream: Stream| {
                    let path = path.clone();
                    async move {
                        stream.get_headers().await?;
                        stream.write_headers(&status_headers("200"), false).await?;
                        let file = std::fs::File::open(&path)?;
                        stream.write_body_from_file(file, None).await
                    }
                }
            },
        )
    };
    let mut client = connect(server.addr());
    std::io::Write::write_all(&mut client, b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        server.wait_connections(0, std::time::Duration::from_secs(10)),
        "the stalled connection was not closed"
    );
    drop(client);
    let _ = std::fs::remove_file(&path);
}

/// A length longer than the file: sendfile(2) runs dry, and the connection closes after
/// the bytes the file had instead of leaving the client waiting for the rest; the server
/// goes on serving.
#[test]
fn a_file_shorter_than_its_length_closes_the_connection_after_what_it_had() {
    let data = pattern(200_000);
    let path = temp_file_with("shorter-than-said", &data);
    let server = file_server(path.clone(), Some(300_000), None);
    let mut client = connect(server.addr());
    std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let got = read_to_close(&mut client, std::time::Duration::from_secs(10))
        .expect("the connection was closed");
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.contains("content-length: 300000"), "{head}");
    assert_same_bytes(&got[head_end..], &data, "the bytes the file had");
    // The server still answers (the same short file, so the same early close).
    let mut again = connect(server.addr());
    std::io::Write::write_all(&mut again, b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let again = read_to_close(&mut again, std::time::Duration::from_secs(10)).unwrap();
    assert!(again.starts_with(b"HTTP/1.1 200"));
    let _ = std::fs::remove_file(&path);
}
