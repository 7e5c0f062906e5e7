//! `--upload`: PUT creates and replaces files whole or not at all.

mod common;
use common::Onstream;
use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

fn uploads(extra: &[&str]) -> Onstream {
    let mut args = vec!["--upload"];
    args.extend_from_slice(extra);
    Onstream::start(&args, |dir| {
        std::fs::create_dir(dir.join("root/docs")).unwrap();
    })
}

fn put(s: &Onstream, path: &str, body: &[u8], headers: &[(&str, &str)]) -> common::Response {
    let mut req = format!(
        "PUT {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    s.raw(&req)
}

/// Names in `dir`, to check that no temporary file is left behind.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn put_creates_then_replaces_and_get_reads_it_back() {
    let s = uploads(&[]);
    let r = put(&s, "/docs/new%20file.txt", b"first", &[]);
    assert_eq!(r.status, 201);
    assert_eq!(s.get("/docs/new%20file.txt").text(), "first");
    let r = put(&s, "/docs/new%20file.txt", b"second version", &[]);
    assert_eq!(r.status, 204);
    assert_eq!(
        std::fs::read_to_string(s.root().join("docs/new file.txt")).unwrap(),
        "second version"
    );
    assert_eq!(names(&s.root().join("docs")), ["new file.txt"]);
    assert_eq!(s.get("/").status, 200);
    assert_eq!(
        s.request("POST", "/docs/x", &[("content-length", "0")])
            .header("allow"),
        Some("GET, HEAD, PUT")
    );
}

#[test]
fn put_preconditions_protect_against_lost_updates() {
    let s = uploads(&[]);
    assert_eq!(put(&s, "/docs/a", b"1", &[("if-match", "*")]).status, 412);
    assert_eq!(
        put(&s, "/docs/a", b"1", &[("if-none-match", "*")]).status,
        201
    );
    assert_eq!(
        put(&s, "/docs/a", b"2", &[("if-none-match", "*")]).status,
        412
    );
    let etag = s.get("/docs/a").header("etag").unwrap().to_owned();
    assert_eq!(
        put(&s, "/docs/a", b"3", &[("if-match", "\"stale\"")]).status,
        412
    );
    assert_eq!(put(&s, "/docs/a", b"3", &[("if-match", &etag)]).status, 204);
    assert_eq!(s.get("/docs/a").text(), "3");
}

#[test]
fn bodies_over_the_limit_get_413_and_leave_nothing() {
    let s = uploads(&["--max-upload-size", "1K"]);
    let r = put(&s, "/docs/big", &[b'x'; 2048], &[]);
    assert_eq!(r.status, 413);
    // Chunked, so the size is only known while reading.
    let mut req = b"PUT /docs/big2 HTTP/1.1\r\nhost: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend_from_slice(&[b'y'; 0x200]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(s.raw(&req).status, 413);
    assert!(names(&s.root().join("docs")).is_empty());
}

#[test]
fn a_connection_cut_mid_body_leaves_nothing_half_written() {
    let s = uploads(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.write_all(b"PUT /docs/cut HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n")
        .unwrap();
    c.write_all(&[b'z'; 5000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    // The server notices the cut and drops the temporary file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !names(&s.root().join("docs")).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(names(&s.root().join("docs")).is_empty());
    // And the server is still there.
    assert_eq!(s.get("/docs/").status, 200);
}

#[test]
fn puts_that_cannot_be_placed_are_refused() {
    let s = uploads(&[]);
    assert_eq!(put(&s, "/missing/dir/file", b"x", &[]).status, 409);
    assert_eq!(put(&s, "/docs", b"x", &[]).status, 409, "a directory");
    assert_eq!(put(&s, "/docs/", b"x", &[]).status, 409);
    let r = put(&s, "/../escape.txt", b"x", &[]);
    assert_eq!(r.status, 404);
    assert!(!s.dir.path().join("escape.txt").exists());
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let s = uploads(&[]);
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"PUT /docs/e HTTP/1.1\r\nhost: x\r\nconnection: close\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n").unwrap();
    let mut buf = [0; 25];
    c.read_exact(&mut buf).unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    c.write_all(b"abc").unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("201 Created"));
}

/// The hardening issue's defect 2 through the command: curl sends `Upgrade: h2c` with
/// `Connection: Upgrade, HTTP2-Settings` on every cleartext `--http2` request, so
/// `curl --http2 -T file` used to store an empty file (and replace an existing one with
/// nothing). The body of a request whose upgrade is ignored is an ordinary body.
#[test]
fn put_with_an_upgrade_header_stores_the_whole_body() {
    let s = uploads(&[]);
    let upgrade = [
        ("connection", "Upgrade, HTTP2-Settings"),
        ("upgrade", "h2c"),
        ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
    ];
    assert_eq!(put(&s, "/docs/up", b"first body", &upgrade).status, 201);
    assert_eq!(put(&s, "/docs/up", b"the whole body", &upgrade).status, 204);
    assert_eq!(
        std::fs::read_to_string(s.root().join("docs/up")).unwrap(),
        "the whole body"
    );
}

/// The hardening issue's defect 3 through the command: a PUT that announced 10 bytes and
/// sent one held its socket, a directory descriptor and a temporary file forever. With
/// `--body-read-timeout` it is answered 408 and nothing is left behind.
#[test]
fn a_stalled_upload_is_answered_408_and_leaves_nothing() {
    let s = uploads(&["--body-read-timeout", "0.3"]);
    let mut conn = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"PUT /docs/slow HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nx")
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    assert!(started.elapsed() < Duration::from_secs(5), "still open");
    assert_eq!(common::Response::parse(&out).status, 408);
    assert_eq!(names(&s.root().join("docs")), Vec::<String>::new());
}
