//! `Server::set_onrejected`: every request the server answers by itself (a malformed,
//! oversized or too slow head) is reported once, with its status, the client's address
//! and its request-line when one arrived; requests that reach the handler are not.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{path_echo, raw_request, wait_until, TestServer, IO_TIMEOUT};
use onstream::{Options, Server};

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    status: u16,
    line: Option<String>,
    peer_is_loopback: bool,
}

fn server_reporting(
    opts: impl FnOnce(Options) -> Options + Send + 'static,
) -> (TestServer, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let server = TestServer::build(move || {
        let server = Server::listen(opts(Options::new()).host("127.0.0.1").port(0), path_echo())?;
        server.set_onrejected(move |_, r| {
            sink.lock().unwrap().push(Seen {
                status: r.status,
                line: r.request_line.map(str::to_owned),
                peer_is_loopback: r.peer.is_some_and(|p| p.ip().is_loopback()),
            });
        });
        Ok(server)
    });
    (server, seen)
}

fn status_of(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn malformed_oversized_and_slow_heads_are_reported_with_their_status() {
    let (server, seen) = server_reporting(|o| o.header_read_timeout(Duration::from_millis(300)));
    let addr = server.addr();

    let bad = raw_request(addr, b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(status_of(&bad).contains(" 400 "), "{}", status_of(&bad));
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
    assert!(status_of(&raw_request(addr, long.as_bytes())).contains(" 414 "));
    let many: String = (0..500).map(|i| format!("x-{i}: y\r\n")).collect();
    let many = format!("GET /many HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert!(status_of(&raw_request(addr, many.as_bytes())).contains(" 431 "));
    // A head that stops half-way is answered 408 when header_read_timeout passes.
    let slow = raw_request(addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n");
    assert!(status_of(&slow).contains(" 408 "), "{}", status_of(&slow));

    assert!(wait_until(IO_TIMEOUT, || seen.lock().unwrap().len() >= 4));
    let seen = seen.lock().unwrap().clone();
    let expect = |status, line: Option<&str>| Seen {
        status,
        line: line.map(str::to_owned),
        peer_is_loopback: true,
    };
    assert_eq!(
        seen,
        vec![
            expect(400, Some("GET /a b c HTTP/1.1")),
            expect(414, None),
            expect(431, Some("GET /many HTTP/1.1")),
            expect(408, Some("GET /slow HTTP/1.1")),
        ]
    );
}

#[test]
fn requests_that_reach_the_handler_are_not_reported_and_a_rejection_after_them_is_once() {
    let (server, seen) = server_reporting(|o| o);
    let answer = raw_request(
        server.addr(),
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\nBREW\x01 / HTTP/1.1\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&answer);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains("HTTP/1.1 400"), "{text}");
    assert!(wait_until(IO_TIMEOUT, || !seen.lock().unwrap().is_empty()));
    // The connection is closed by now, so nothing more can come.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].status, 400);
    assert_eq!(seen[0].line.as_deref(), Some("BREW\u{1} / HTTP/1.1"));
}

/// The hook may call back into the server: closing it from the hook (which reaches the
/// very connection being refused) neither panics nor loses the answer.
#[test]
fn the_hook_may_close_the_server() {
    let server = TestServer::build(|| {
        let server = Server::listen(Options::new().host("127.0.0.1").port(0), path_echo())?;
        server.set_onrejected(|handle, _| handle.close());
        Ok(server)
    });
    let answer = raw_request(server.addr(), b"GET /a b c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        status_of(&answer).contains(" 400 "),
        "{}",
        status_of(&answer)
    );
    assert!(
        server.step_errors().is_empty(),
        "{:?}",
        server.step_errors()
    );
}
