//! Idle keep-alive connections (issue 7, "Memory"): they give their read and write buffers
//! back between requests and read the next request through a buffer on the stack, and
//! after `park_after` they park (give up their task and connection state until input
//! comes; `parking.rs`). Every kind of request that follows an idle pause must still be
//! read whole, whatever its size and however it is split, parked or not; a parked
//! connection must still be closed at its idle deadline and by `close()`.

mod common;

use std::{
    thread::sleep,
    time::{Duration, Instant},
};

use common::*;

/// Long enough for the server to have answered, flushed and gone back to waiting.
const PAUSE: Duration = Duration::from_millis(50);

/// `park_after` values: park as soon as the connection waits, and never.
const PARKING: [Duration; 2] = [Duration::ZERO, Duration::from_secs(3600)];

/// A server that answers with the request's path and the size of its body, after 100 ms
/// when the path is `/slow`; with the connection's addresses when it is `/addrs`.
fn start(park_after: Duration) -> TestServer {
    start_with(move |o| o.park_after(park_after))
}

fn start_with(
    opts: impl FnOnce(onstream::Options) -> onstream::Options + Send + 'static,
) -> TestServer {
    TestServer::start(opts, || {
        |_srv, stream: onstream::Stream| async move {
            let req = stream.get_headers().await?;
            let path = req.get(":path").unwrap_or("").to_string();
            if path == "/slow" {
                onstream::sleep(Duration::from_millis(100)).await;
            }
            if path == "/addrs" {
                let addrs = format!("{:?} {:?}", stream.peer_addr(), stream.local_addr());
                return respond(&stream, "200", addrs).await;
            }
            let n = stream.get_body_as_bytes().await?.len();
            respond(&stream, "200", format!("{path} {n}")).await
        }
    })
}

#[test]
fn requests_after_idle_pauses_are_answered_on_the_same_connection() {
    for park_after in PARKING {
        requests_after_idle_pauses(park_after);
    }
}

fn requests_after_idle_pauses(park_after: Duration) {
    let server = start(park_after);
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
    for park_after in PARKING {
        a_split_head_after_an_idle_pause(park_after);
    }
}

fn a_split_head_after_an_idle_pause(park_after: Duration) {
    let server = start(park_after);
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
    for park_after in PARKING {
        a_large_request_after_an_idle_pause(park_after);
    }
}

fn a_large_request_after_an_idle_pause(park_after: Duration) {
    let server = start(park_after);
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
    for park_after in PARKING {
        pipelined_requests_after_an_idle_pause(park_after);
    }
}

fn pipelined_requests_after_an_idle_pause(park_after: Duration) {
    let server = start(park_after);
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

/// A connection waiting for its next request while a handler is still at work does not
/// park (the handler still writes through it); it parks once the handler ends, and the
/// request sent meanwhile is answered in order.
#[test]
fn a_connection_parks_only_after_its_handlers_end() {
    let server = start(Duration::ZERO);
    let mut client = Client::connect(server.addr());
    client.send(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n");
    sleep(PAUSE);
    client.send(b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(client.read_response().body_str(), "/slow 0");
    assert_eq!(client.read_response().body_str(), "/next 0");
    sleep(PAUSE);
    assert_eq!(client.get("/after").body_str(), "/after 0");
    assert_eq!(server.connections(), 1);
}

/// A parked connection is closed, cleanly and without an answer, at its idle deadline.
#[test]
fn a_parked_connection_is_closed_at_its_idle_deadline() {
    let server = start_with(|o| {
        o.park_after(Duration::ZERO)
            .intra_stream_timeout(Duration::from_millis(200))
    });
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/").status, 200);
    let idle_since = Instant::now();
    let rest = client
        .read_to_close(Duration::from_secs(2))
        .expect("the parked connection was not closed");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let idle = idle_since.elapsed();
    assert!(idle >= Duration::from_millis(150), "closed after {idle:?}");
    assert!(server.wait_connections(0, Duration::from_secs(1)));
}

/// A connection closed by its idle timeout is closed at once, without a lingering close:
/// no response is in flight to protect, and a client writing after that must learn that
/// the connection is gone (lua-http's client expects EPIPE, its spec tests it), not have
/// its request read and dropped. Without the fix the requests written after the server's
/// FIN were drained for the lingering time and every write succeeded.
#[test]
fn an_idle_timeout_closes_without_lingering() {
    for park_after in PARKING {
        let server = start_with(move |o| {
            o.park_after(park_after)
                .intra_stream_timeout(Duration::from_secs(1))
                .lingering_close(Duration::from_secs(5), 1 << 20)
        });
        let mut client = Client::connect(server.addr());
        assert_eq!(client.get("/").status, 200);
        let rest = client
            .read_to_close(Duration::from_secs(5))
            .expect("the idle connection was not closed");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        // The server's side is gone: what the client writes now is answered with a
        // reset, after which writing fails with EPIPE (a read still sees the FIN first).
        // Bounded by half the lingering time (which is at most the idle timeout, 1 s): a
        // lingering server drains the writes that long without a reset.
        use std::io::Write;
        let deadline = Instant::now() + Duration::from_millis(500);
        let written = loop {
            match client
                .writer
                .write_all(b"GET /late HTTP/1.1\r\nHost: test\r\n\r\n")
            {
                Ok(()) if Instant::now() < deadline => sleep(Duration::from_millis(5)),
                other => break other,
            }
        };
        assert!(
            matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe),
            "park_after {park_after:?}: {written:?}"
        );
    }
}

/// A connection that parked, was taken up by a request and parked again keeps its new
/// deadline: the first parking's deadline, still in the lot, must not close it.
#[test]
fn an_earlier_parking_deadline_does_not_close_the_connection() {
    let server = start_with(|o| {
        o.park_after(Duration::ZERO)
            .intra_stream_timeout(Duration::from_millis(300))
    });
    let mut client = Client::connect(server.addr());
    for i in 0..4 {
        assert_eq!(client.get(&format!("/{i}")).body_str(), format!("/{i} 0"));
        // Four requests 150 ms apart span 450 ms: past the first parking's deadline.
        sleep(Duration::from_millis(150));
    }
    assert_eq!(server.connections(), 1);
}

/// `close()` closes parked connections at once and cleanly, as it closes idle ones.
#[test]
fn closing_the_server_closes_parked_connections() {
    let server = start(Duration::ZERO);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(server.addr())).collect();
    for c in &mut clients {
        assert_eq!(c.get("/").status, 200);
    }
    sleep(PAUSE);
    server.exec(|s| s.close());
    for c in &mut clients {
        let rest = c
            .read_to_close(Duration::from_secs(2))
            .expect("a parked connection was not closed by close()");
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    assert!(server.wait_connections(0, Duration::from_secs(1)));
}

/// A connection taken up after parking reports the same addresses (the parked record
/// does not keep them; the socket is asked again).
#[test]
fn a_parked_connection_keeps_its_addresses() {
    let server = start(Duration::ZERO);
    let mut client = Client::connect(server.addr());
    let before = client.get("/addrs").body_str().to_string();
    sleep(PAUSE);
    let after = client.get("/addrs").body_str().to_string();
    assert!(before.starts_with("Some(127.0.0.1:"), "{before}");
    assert_eq!(before, after);
}

/// A client that closes, or resets, its parked connection: the server takes the
/// connection up, reads the EOF or the error, and closes its side at once, long before the
/// idle deadline; other connections are served meanwhile.
#[test]
fn a_parked_connection_whose_client_leaves_is_closed_at_once() {
    let server = start(Duration::ZERO);
    let mut closing = Client::connect(server.addr());
    let mut resetting = Client::connect(server.addr());
    let mut other = Client::connect(server.addr());
    for c in [&mut closing, &mut resetting, &mut other] {
        assert_eq!(c.get("/").status, 200);
    }
    sleep(PAUSE);
    closing.shutdown_write();
    socket2::SockRef::from(&resetting.writer)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(resetting); // RST
    let rest = closing
        .read_to_close(Duration::from_secs(2))
        .expect("the server did not close the parked connection after the client's EOF");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    drop(closing);
    // The default idle timeout is 10 s: only the two that left are gone.
    assert!(server.wait_connections(1, Duration::from_secs(2)));
    assert_eq!(other.get("/still").body_str(), "/still 0");
}

/// A parked connection taken up by the first bytes of a request that never ends is
/// answered `408` after `header_read_timeout`, counted from those bytes, as if it had
/// never parked (slowloris on a keep-alive connection).
#[test]
fn a_partial_head_on_a_parked_connection_gets_408() {
    let server = start_with(|o| {
        o.park_after(Duration::ZERO)
            .header_read_timeout(Duration::from_millis(200))
    });
    let mut client = Client::connect(server.addr());
    assert_eq!(client.get("/").status, 200);
    sleep(PAUSE);
    client.send(b"GET /never HTTP/1.1\r\nHost: te");
    let sent = Instant::now();
    let rest = client
        .read_to_close(Duration::from_secs(2))
        .expect("the partial head was not timed out");
    assert!(
        sent.elapsed() >= Duration::from_millis(150),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(parse_one(&rest).status, 408);
    assert!(server.wait_connections(0, Duration::from_secs(1)));
}
