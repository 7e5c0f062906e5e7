//! HTTP/1.0 and HTTP/1.1 request/response basics, against hyper's client and raw sockets:
//! methods, bodies, keep-alive, body framing of responses, and the request head a handler
//! sees.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use onstream::Headers;

/// A hyper GET is answered with the handler's status and body.
#[test]
fn hyper_get_is_answered() {
    let server = TestServer::start(|o| o, path_echo);
    let res = hyper_get(server.addr(), "/hello?x=1");
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "/hello?x=1");
    assert!(server.step_errors().is_empty());
}

/// A POST body reaches the handler whole and is echoed back.
#[test]
fn hyper_post_body_is_echoed() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                assert_eq!(req.get(":method"), Some("POST"));
                let body = stream.get_body_as_bytes().await?;
                respond(&stream, "200", body).await
            }
        },
    );
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let res = hyper_requests(
        server.addr(),
        vec![post_request(server.addr(), "/echo", body.clone())],
    );
    assert_eq!(res[0].status, 200);
    assert_eq!(res[0].body, body);
}

/// Several requests on one hyper connection are all answered over that connection.
#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start(|o| o, path_echo);
    let addr = server.addr();
    let reqs = vec![
        get_request(addr, "/a"),
        post_request(addr, "/b", "body"),
        get_request(addr, "/c"),
        get_request(addr, "/d"),
    ];
    let bodies: Vec<Bytes> = hyper_requests(addr, reqs)
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies, ["/a", "/b", "/c", "/d"]);

    // The same over a raw socket, checking no `connection: close` is sent.
    let mut c = Client::connect(addr);
    for path in ["/x", "/y", "/z"] {
        let res = c.get(path);
        assert_eq!(res.body_str(), path);
        assert!(!res.closes(), "keep-alive response says connection: close");
    }
    // Only the raw connection is left once the server has seen hyper's go.
    assert!(server.wait_connections(1, Duration::from_secs(2)));
}

/// An HTTP/1.0 request without keep-alive is answered (without chunked framing, which 1.0
/// does not know) and the connection is closed after the response.
#[test]
fn http_1_0_request_is_answered_and_the_connection_closes() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                let mut h = status_headers("200");
                h.append("x-version", format!("{:?}", stream.version()));
                stream.write_headers(&h, false).await?;
                stream
                    .write_chunk(Bytes::from_static(b"part one, "), false)
                    .await?;
                stream
                    .write_chunk(Bytes::from_static(b"part two"), true)
                    .await
            }
        },
    );
    let raw = raw_request(server.addr(), b"GET / HTTP/1.0\r\n\r\n");
    let res = parse_one(&raw);
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("x-version"),
        Some("HTTP/1.0"),
        "stream.version()"
    );
    assert!(!res.chunked, "HTTP/1.0 response must not be chunked");
    assert_eq!(res.body_str(), "part one, part two");
}

/// An HTTP/1.0 request with `Connection: keep-alive` gets a Content-Length response and the
/// connection stays open for the next request.
#[test]
fn http_1_0_keep_alive_is_honoured() {
    let server = TestServer::start(|o| o, path_echo);
    let mut c = Client::connect(server.addr());
    c.send(b"GET /first HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let res = c.read_response();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("6"));
    assert_eq!(res.body_str(), "/first");
    c.send(b"GET /second HTTP/1.0\r\n\r\n");
    let res = c.read_response();
    assert_eq!(res.body_str(), "/second");
    // The second request did not ask for keep-alive: the server closes.
    assert!(
        c.read_to_close(Duration::from_secs(2)).is_ok(),
        "HTTP/1.0 connection left open"
    );
}

/// A HEAD response carries the Content-Length the GET would have, and no body: the next
/// response on the connection follows immediately.
#[test]
fn head_response_has_content_length_and_no_body() {
    let server = TestServer::start(|o| o, path_echo);
    let mut c = Client::connect(server.addr());
    c.send(b"HEAD /12345 HTTP/1.1\r\nHost: x\r\n\r\n");
    let res = c.read_head_response();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("6"));
    // Were the body sent, this would parse "/12345" as a status line.
    let res = c.get("/next");
    assert_eq!(res.status, 200);
    assert_eq!(res.body_str(), "/next");
}

/// 204 and 304 responses have no body and no chunked framing, and keep-alive goes on.
#[test]
fn no_content_and_not_modified_have_no_body() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                let status = if req.get(":path") == Some("/204") {
                    "204"
                } else {
                    "304"
                };
                let mut h = Headers::new();
                h.append(":status", status);
                stream.write_headers(&h, true).await
            }
        },
    );
    let mut c = Client::connect(server.addr());
    for status in [204, 304, 204] {
        let res = c.get(&format!("/{status}"));
        assert_eq!(res.status, status);
        assert_eq!(
            res.header("transfer-encoding"),
            None,
            "{status} must not be chunked"
        );
        if status == 204 {
            // RFC 9110 §8.6: no Content-Length in a 204.
            assert_eq!(
                res.header("content-length"),
                None,
                "204 has a content-length"
            );
        }
    }
    // Nothing stray after the last bodiless response.
    assert!(c.silent_for(Duration::from_millis(100)));
}

/// A handler that writes its body in several chunks gets a chunked HTTP/1.1 response.
#[test]
fn several_body_writes_give_a_chunked_response() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                stream.write_headers(&status_headers("200"), false).await?;
                for part in ["one ", "two ", "three"] {
                    stream
                        .write_chunk(Bytes::from_static(part.as_bytes()), false)
                        .await?;
                }
                stream.write_chunk(Bytes::new(), true).await
            }
        },
    );
    let raw = raw_request(
        server.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let res = parse_one(&raw);
    assert_eq!(res.status, 200);
    assert_eq!(res.header("transfer-encoding"), Some("chunked"));
    assert_eq!(res.header("content-length"), None);
    assert_eq!(res.body_str(), "one two three");
}

/// A handler that writes its whole body in one final `write_chunk` gets a Content-Length
/// response.
#[test]
fn one_final_body_write_gives_content_length() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                stream.write_headers(&status_headers("200"), false).await?;
                stream
                    .write_chunk(Bytes::from_static(b"exactly this"), true)
                    .await
            }
        },
    );
    let raw = raw_request(
        server.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let res = parse_one(&raw);
    assert_eq!(res.header("content-length"), Some("12"));
    assert_eq!(res.header("transfer-encoding"), None);
    assert_eq!(res.body_str(), "exactly this");
}

/// Every response carries a `Date` header in IMF-fixdate form.
#[test]
fn responses_carry_a_date_header() {
    let server = TestServer::start(|o| o, path_echo);
    let res = hyper_get(server.addr(), "/");
    let date = res
        .headers
        .get("date")
        .expect("a Date header")
        .to_str()
        .unwrap();
    assert!(
        date.ends_with(" GMT") && date.len() == 29,
        "not an IMF-fixdate: {date:?}"
    );
}

/// The handler sees the pseudo-headers `:method`, `:path`, `:authority` (from Host, which
/// is then not repeated) and `:scheme`, plus the other fields in lower case.
#[test]
fn request_headers_include_pseudo_headers() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                let req = stream.get_headers().await?;
                let body = format!(
                    "{:?} {:?} {:?} {:?} {:?} {:?}",
                    req.get(":method"),
                    req.get(":path"),
                    req.get(":authority"),
                    req.get(":scheme"),
                    req.has("host"),
                    req.get("x-custom"),
                );
                respond(&stream, "200", body).await
            }
        },
    );
    let raw = raw_request(
        server.addr(),
        b"DELETE /items/7?force=1 HTTP/1.1\r\nHost: example.test:8080\r\nX-Custom: Yes\r\nConnection: close\r\n\r\n",
    );
    let res = parse_one(&raw);
    assert_eq!(
        res.body_str(),
        r#"Some("DELETE") Some("/items/7?force=1") Some("example.test:8080") Some("http") false Some("Yes")"#
    );
}

/// The same exchanges work over TCP and a unix socket, with HTTP/1.0 and HTTP/1.1
/// requests, for a one-write body (Content-Length) and a several-write body (chunked on
/// 1.1, close-delimited on 1.0) — lua-http's `simple_test` matrix, minus TLS.
#[test]
fn simple_exchanges_work_over_every_transport_and_version() {
    let handler = || {
        |_srv, stream: onstream::Stream| async move {
            let req = stream.get_headers().await?;
            stream.write_headers(&status_headers("200"), false).await?;
            if req.get(":path") == Some("/pieces") {
                stream
                    .write_chunk(Bytes::from_static(b"in "), false)
                    .await?;
                stream
                    .write_chunk(Bytes::from_static(b"pieces"), true)
                    .await
            } else {
                stream
                    .write_chunk(Bytes::from_static(b"in one"), true)
                    .await
            }
        }
    };
    let tcp = TestServer::start(|o| o, handler);
    let path = temp_path("matrix.sock");
    let unix = {
        let path = path.clone();
        TestServer::build(move || {
            onstream::Server::listen(onstream::Options::new().path(path), handler())
        })
    };

    for transport in ["tcp", "unix"] {
        for version in ["1.0", "1.1"] {
            for (target, body) in [("/one", "in one"), ("/pieces", "in pieces")] {
                let close = if version == "1.1" {
                    "Connection: close\r\n"
                } else {
                    ""
                };
                let req = format!("GET {target} HTTP/{version}\r\nHost: x\r\n{close}\r\n");
                let raw = match transport {
                    "tcp" => raw_request(tcp.addr(), req.as_bytes()),
                    _ => raw_request_unix(&path, req.as_bytes()),
                };
                let case = format!("{transport} HTTP/{version} {target}");
                let res = parse_one(&raw);
                assert_eq!(res.status, 200, "{case}");
                assert_eq!(res.body_str(), body, "{case}");
                let expect_chunked = version == "1.1" && target == "/pieces";
                assert_eq!(res.chunked, expect_chunked, "{case}: chunked framing");
                if target == "/one" {
                    assert_eq!(res.header("content-length"), Some("6"), "{case}");
                }
            }
        }
    }
    drop(unix);
    let _ = std::fs::remove_file(&path);
}

/// Headers written after the body has started are trailers (lua-http's `write_headers`
/// semantics): on HTTP/1.1 they end the chunked body.
#[test]
fn headers_after_the_body_are_sent_as_chunked_trailers() {
    let server = TestServer::start(
        |o| o,
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.write_headers(&status_headers("200"), false).await?;
                stream.write_chunk("part one, ", false).await?;
                onstream::sleep(std::time::Duration::from_millis(5)).await;
                stream.write_chunk("part two", false).await?;
                let mut trailers = onstream::Headers::new();
                trailers.append("x-checksum", "abc123");
                stream.write_headers(&trailers, true).await
            }
        },
    );
    let raw = raw_request(
        server.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
    assert!(text.ends_with("0\r\nx-checksum: abc123\r\n\r\n"), "{text}");
    assert_eq!(parse_one(&raw).body_str(), "part one, part two");
}

/// `Version::Http10` (lua-http's `version = 1.0`): an HTTP/1.1 request is answered as
/// HTTP/1.0 — the status line says so, a body of unknown length is not chunked but ends
/// with the connection, and the connection closes after the response.
#[test]
fn a_server_pinned_to_http10_answers_as_http10() {
    let server = TestServer::start(
        |o| o.version(onstream::Version::Http10),
        || {
            |_srv, stream: onstream::Stream| async move {
                stream.get_headers().await?;
                stream.write_headers(&status_headers("200"), false).await?;
                stream.write_chunk("part one, ", false).await?;
                stream.write_chunk("part two", true).await
            }
        },
    );
    let raw = raw_request(
        server.addr(),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(text.ends_with("\r\n\r\npart one, part two"), "{text}");
    assert_eq!(text.matches("HTTP/1.").count(), 1, "{text}");
}
